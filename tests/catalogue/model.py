"""Bad input to ScoreModel, its views and as_model."""

from __future__ import annotations

import torch

import sdesolve as sd
from sdesolve.model import ScoreModel, as_model

from . import Case

F64 = torch.float64


def _net(x, t):
    return 0.5 * x


def _m(**kw):
    return ScoreModel(_net, sd.VPSDE(), **kw)


def _x():
    return torch.zeros(3, 2, dtype=F64)


CASES = [
    # ScoreModel(net, sde, prediction, time_input, time_dtype)
    Case(
        "model-net-not-callable", lambda: ScoreModel(3, sd.VPSDE()), TypeError, r"net must be callable as net\(x, t\)"
    ),
    Case("model-sde-not-a-process", lambda: ScoreModel(_net, "vp"), TypeError, r"sde must be a linear forward process"),
    Case("model-sde-none", lambda: ScoreModel(_net, None), TypeError, r"sde must be a linear forward process"),
    Case("model-prediction-unknown", lambda: _m(prediction="noise"), ValueError, r"prediction must be one of \('eps'"),
    Case("model-prediction-not-str", lambda: _m(prediction=0), TypeError, r"prediction must be one of .*got 0 \(int\)"),
    Case(
        "model-time_input-not-callable",
        lambda: _m(time_input=2.0),
        TypeError,
        r"time_input must be callable .* or None",
    ),
    Case("model-time_dtype-string", lambda: _m(time_dtype="float32"), TypeError, r"time_dtype must be a torch.dtype"),
    Case(
        "model-time_dtype-int", lambda: _m(time_dtype=torch.int32), ValueError, r"time_dtype must be a floating dtype"
    ),
    # the views: x
    Case("model-eps-x-not-tensor", lambda: _m().eps([[0.0, 0.0]], 0.5), TypeError, r"x must be a torch.Tensor"),
    Case(
        "model-score-x-int",
        lambda: _m().score(torch.zeros(3, 2, dtype=torch.long), 0.5),
        TypeError,
        r"x must be a floating-point tensor",
    ),
    Case("model-x0-x-0d", lambda: _m().x0(torch.tensor(1.0), 0.5), ValueError, r"x must have a batch dimension"),
    # the views: t
    Case("model-eps-t-above-T", lambda: _m().eps(_x(), 5.0), ValueError, r"t must lie in \[0, 1\], got values \[5.0\]"),
    Case("model-score-t-negative", lambda: _m().score(_x(), -0.1), ValueError, r"t must lie in \[0, 1\]"),
    Case("model-x0-t-nan", lambda: _m().x0(_x(), float("nan")), ValueError, r"t must be a finite number"),
    Case("model-v-t-inf", lambda: _m().v(_x(), float("inf")), ValueError, r"t must be a finite number"),
    Case(
        "model-forward-t-tensor-nan",
        lambda: _m()(_x(), torch.tensor([0.1, float("nan"), 0.2])),
        ValueError,
        r"t must be finite",
    ),
    Case(
        "model-predict-t-tensor-above-T",
        lambda: _m().predict(_x(), torch.tensor([0.1, 1.5, 0.2], dtype=F64), "eps"),
        ValueError,
        r"t must lie in \[0, 1\], got values \[1.5\]",
    ),
    Case(
        "model-eps-t-batch",
        lambda: _m().eps(_x(), torch.tensor([0.1, 0.2])),
        ValueError,
        r"t has 2 times but x has batch size 3",
    ),
    Case(
        "model-eps-t-2d",
        lambda: _m().eps(_x(), torch.full((3, 1), 0.5)),
        ValueError,
        r"t must be a Python float, a 0-d tensor or a per-sample tensor of shape \(B,\)",
    ),
    Case("model-eps-t-string", lambda: _m().eps(_x(), "0.5"), TypeError, r"t must be a real number"),
    Case(
        "model-eps-t-int-tensor",
        lambda: _m().eps(_x(), torch.tensor([0, 1, 0])),
        TypeError,
        r"t must be a floating-point tensor",
    ),
    Case("model-eps-t-bool", lambda: _m().eps(_x(), True), TypeError, r"t must be a real number"),
    # the views: view and coefs
    Case(
        "model-predict-view-unknown",
        lambda: _m().predict(_x(), 0.5, "velocity"),
        ValueError,
        r"view must be one of \('eps', 'x0', 'v', 'score'\)",
    ),
    Case("model-predict-view-not-str", lambda: _m().predict(_x(), 0.5, None), TypeError, r"view must be one of"),
    Case(
        "model-score-coefs-float",
        lambda: _m().score(_x(), 0.5, coefs=0.5),
        TypeError,
        r"coefs must be None or a pair \(alpha, sigma\) of tensors",
    ),
    Case(
        "model-score-coefs-triple",
        lambda: _m().score(_x(), 0.5, coefs=(torch.tensor(1.0),) * 3),
        TypeError,
        r"coefs must be None or a pair \(alpha, sigma\)",
    ),
    # what the network returns
    Case(
        "model-net-returns-wrong-shape",
        lambda: ScoreModel(lambda x, t: x[:, :1], sd.VPSDE()).eps(_x(), 0.5),
        ValueError,
        r"network returned shape \(3, 1\), expected the shape of x \(3, 2\)",
    ),
    Case(
        "model-net-returns-float",
        lambda: ScoreModel(lambda x, t: 1.0, sd.VPSDE()).eps(_x(), 0.5),
        TypeError,
        r"the network <lambda> must return a tensor or an output holding one .*, got float",
    ),
    Case(
        "model-time_input-returns-float",
        lambda: _m(time_input=lambda t: 0.5).eps(_x(), 0.5),
        TypeError,
        r"time_input must return a tensor, got float",
    ),
    # as_model(model, sde)
    Case(
        "as_model-model-number",
        lambda: as_model(3.0, sd.VPSDE()),
        TypeError,
        r"model must be a ScoreModel or a callable score s\(x, t\), got 3.0",
    ),
    Case(
        "as_model-model-other-process",
        lambda: as_model(_m(), sd.VPSDE()),
        ValueError,
        r"model is a ScoreModel of a different process than sde",
    ),
    Case(
        "as_model-sde-not-a-process",
        lambda: as_model(_net, object()),
        TypeError,
        r"sde must be a linear forward process",
    ),
]
