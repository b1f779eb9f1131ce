"""Bad input to ScoreModel, its views and as_model."""

from __future__ import annotations

import torch

import sdesolve as sd
from sdesolve.model import GuidedModel, ScoreModel, as_model, unwrap_output

from . import Case

F64 = torch.float64


def _net(x, t):
    return 0.5 * x


def _m(**kw):
    return ScoreModel(_net, sd.VPSDE(), **kw)


def _x():
    return torch.zeros(3, 2, dtype=F64)


def _net_kw(x, t, **kwargs):
    return 0.5 * x


def _mk(**model_kwargs):
    """A model of a network taking extra inputs, with ``model_kwargs`` bound."""
    return ScoreModel(_net_kw, sd.VPSDE(), model_kwargs=model_kwargs)


def _null():
    return {"class_labels": torch.tensor([0])}


def _sample(**kw):
    sde = sd.VPSDE()
    return sd.sample(sde, ScoreModel(_net_kw, sde), (3, 2), solver=sd.DDIM(), steps=2, **kw)


class _StrNet(torch.nn.Module):
    def forward(self, x, t):
        return "eps"


class _CallNet:
    """A callable object that is not an nn.Module and has no ``__name__``."""

    def __call__(self, x, t, **kwargs):
        return "eps"


class _NoEq:
    """A value that cannot be compared (its ``==`` raises), like a numpy array of several elements."""

    def __eq__(self, other):
        raise RuntimeError("no comparison")

    __hash__ = object.__hash__


def _guided_str():
    """A guided model whose network (an nn.Module taking a label) returns a string."""

    class _StrNetKw(torch.nn.Module):
        def forward(self, x, t, y):
            return "eps"

    return ScoreModel(_StrNetKw(), sd.VPSDE(), model_kwargs={"y": torch.zeros(3)}).guided(3.0, {"y": torch.ones(1)})


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
        r"^coefs must be None or a pair \(alpha, sigma\) of tensors, got 0.5$",
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
    # what the network returns: output objects that hold no tensor
    Case(
        "model-net-returns-none",
        lambda: ScoreModel(lambda x, t: None, sd.VPSDE()).eps(_x(), 0.5),
        TypeError,
        r"the network <lambda> must return a tensor or an output holding one .*got NoneType",
    ),
    Case(
        "model-net-returns-empty-tuple",
        lambda: ScoreModel(lambda x, t: (), sd.VPSDE()).eps(_x(), 0.5),
        TypeError,
        r"the network <lambda> must return a tensor .*tuple or list whose first element is a tensor.*got tuple of 0",
    ),
    Case(
        "model-net-returns-dict-of-two",
        lambda: ScoreModel(lambda x, t: {"a": x, "b": x}, sd.VPSDE()).eps(_x(), 0.5),
        TypeError,
        r"the network <lambda> must return .*a dict with a 'sample' key or a single tensor value\), got dict with keys",
    ),
    Case(
        "model-net-module-returns-string",
        lambda: ScoreModel(_StrNet(), sd.VPSDE()).eps(_x(), 0.5),
        TypeError,
        r"the network _StrNet must return a tensor .*got str",
    ),
    Case(
        "model-net-callable-object-returns-string",
        lambda: ScoreModel(_CallNet(), sd.VPSDE()).eps(_x(), 0.5),
        TypeError,
        r"^the network _CallNet must return a tensor or an output holding one .*, got str$",
    ),
    Case(
        "model-unwrap_output-float-no-network",
        lambda: unwrap_output(1.0),
        TypeError,
        r"^the network \(network\) must return a tensor or an output holding one .*, got float$",
    ),
    # model_kwargs: ScoreModel(model_kwargs=), with_kwargs, sample/log_likelihood/GraphSampler(model_kwargs=)
    Case(
        "model-model_kwargs-list",
        lambda: ScoreModel(_net_kw, sd.VPSDE(), model_kwargs=[("y", 1)]),
        TypeError,
        r"model_kwargs must be a dict of the network's keyword inputs \(str keys\) or None, got \[\('y', 1\)\]",
    ),
    Case(
        "model-model_kwargs-key-not-str",
        lambda: ScoreModel(_net_kw, sd.VPSDE(), model_kwargs={0: torch.zeros(3)}),
        TypeError,
        r"model_kwargs keys must be str \(the network's keyword names\), got 0",
    ),
    Case(
        "model-model_kwargs-rows",
        lambda: _mk(class_labels=torch.zeros(2)).eps(_x(), 0.5),
        ValueError,
        r"model_kwargs\['class_labels'\] has 2 rows \(its leading dimension\) but x has batch size 3: a per-sample "
        r"input needs one row per sample, or 1 row shared",
    ),
    Case(
        "model-model_kwargs-nested-rows",
        lambda: _mk(added_cond_kwargs={"text_embeds": torch.zeros(4, 5)}).eps(_x(), 0.5),
        ValueError,
        r"model_kwargs\['added_cond_kwargs'\]\['text_embeds'\] has 4 rows .* but x has batch size 3",
    ),
    Case(
        "sample-model_kwargs-string",
        lambda: _sample(model_kwargs="class_labels"),
        TypeError,
        r"model_kwargs must be a dict of the network's keyword inputs",
    ),
    Case(
        "sample-model_kwargs-rows",
        lambda: _sample(model_kwargs={"class_labels": torch.zeros(5, dtype=torch.long)}),
        ValueError,
        r"model_kwargs\['class_labels'\] has 5 rows .* but x has batch size 3",
    ),
    Case(
        "log_likelihood-model_kwargs-tuple",
        lambda: sd.log_likelihood(sd.VPSDE(), _net_kw, _x(), model_kwargs=(1, 2)),
        TypeError,
        r"model_kwargs must be a dict of the network's keyword inputs",
    ),
    Case(
        "graph_sampler-model_kwargs-int",
        lambda: sd.GraphSampler(sd.VPSDE(), _net_kw, (3, 2), solver=sd.DDIM(), steps=2, device="cpu", model_kwargs=3),
        TypeError,
        r"model_kwargs must be a dict of the network's keyword inputs .* got 3",
    ),
    # select(index)
    Case("model-select-float", lambda: _mk().select(1.5), TypeError, r"index must be an int, got 1.5"),
    Case("model-select-bool", lambda: _mk().select(True), TypeError, r"index must be an int, got True"),
    Case("model-select-string", lambda: _mk().select("0:2"), TypeError, r"index must be an int, got '0:2'"),
    Case(
        "model-select-float-tensor",
        lambda: _mk().select(torch.tensor([0.0, 1.0])),
        TypeError,
        r"index must be an int, a slice, a list of ints or a 1-d integer or boolean tensor, got a tensor of shape",
    ),
    Case(
        "model-select-2d-tensor",
        lambda: _mk().select(torch.zeros(2, 2, dtype=torch.long)),
        TypeError,
        r"index must be an int, a slice, a list of ints or a 1-d integer or boolean tensor",
    ),
    Case("model-select-list-of-floats", lambda: _mk().select([0, 1.0]), TypeError, r"index\[k\] must be an int"),
    # guided(guidance_scale, uncond_kwargs) / GuidedModel
    Case(
        "guided-guidance_scale-string",
        lambda: _mk().guided("7.5", _null()),
        TypeError,
        r"guidance_scale must be a real number, got '7.5'",
    ),
    Case(
        "guided-guidance_scale-nan",
        lambda: _mk().guided(float("nan"), _null()),
        ValueError,
        r"guidance_scale must be a finite number",
    ),
    Case(
        "guided-guidance_scale-tensor",
        lambda: _mk().guided(torch.ones(2), _null()),
        TypeError,
        r"guidance_scale must be a real number",
    ),
    Case(
        "guided-uncond_kwargs-none",
        lambda: _mk().guided(3.0, None),
        ValueError,
        r"uncond_kwargs must be a non-empty dict of the network's unconditional inputs",
    ),
    Case(
        "guided-uncond_kwargs-empty",
        lambda: _mk().guided(3.0, {}),
        ValueError,
        r"uncond_kwargs must be a non-empty dict of the network's unconditional inputs .*got \{\}",
    ),
    Case(
        "guided-uncond_kwargs-list",
        lambda: _mk().guided(3.0, [0]),
        TypeError,
        r"uncond_kwargs must be a dict of the network's keyword inputs",
    ),
    Case(
        "guided-of-guided",
        lambda: _mk().guided(3.0, _null()).guided(2.0, _null()),
        ValueError,
        r"^model is already a GuidedModel: guide the conditional ScoreModel once$",
    ),
    Case(
        "guided-model-not-a-score-model",
        lambda: GuidedModel(_net_kw, 3.0, _null()),
        TypeError,
        r"^model must be a ScoreModel, got <function _net_kw at 0x[0-9a-f]+> \(function\)$",
    ),
    Case(
        "guided-uncond-without-cond",
        lambda: _mk().guided(3.0, _null()).eps(_x(), 0.5),
        ValueError,
        r"uncond_kwargs\['class_labels'\] has no conditional counterpart in model_kwargs",
    ),
    Case(
        "guided-per-sample-shapes-differ",
        lambda: _mk(emb=torch.zeros(3, 4)).guided(3.0, {"emb": torch.zeros(1, 5)}).eps(_x(), 0.5),
        ValueError,
        r"uncond_kwargs\['emb'\] has per-sample shape \(5,\) but model_kwargs\['emb'\] has \(4,\)",
    ),
    Case(
        "guided-uncond-rows",
        lambda: _mk(class_labels=torch.zeros(3)).guided(3.0, {"class_labels": torch.zeros(2)}).eps(_x(), 0.5),
        ValueError,
        r"uncond_kwargs\['class_labels'\] has 2 rows .* but x has batch size 3",
    ),
    Case(
        "guided-non-tensor-inputs-differ",
        lambda: _mk(class_labels=torch.zeros(3), mode="cond").guided(3.0, {"mode": "uncond"}).eps(_x(), 0.5),
        ValueError,
        r"uncond_kwargs\['mode'\] \('uncond'\) and model_kwargs\['mode'\] \('cond'\) differ but are not both "
        r"per-sample tensors",
    ),
    Case(
        "guided-per-sample-against-number",
        lambda: _mk(class_labels=torch.zeros(3)).guided(3.0, {"class_labels": 0}).eps(_x(), 0.5),
        ValueError,
        r"uncond_kwargs\['class_labels'\] \(0\) and model_kwargs\['class_labels'\] .* differ but are not both",
    ),
    Case(
        "guided-net-returns-one-half",
        lambda: (
            ScoreModel(lambda x, t, y: x[:3], sd.VPSDE(), model_kwargs={"y": torch.zeros(3)})
            .guided(3.0, {"y": torch.ones(1)})
            .eps(_x(), 0.5)
        ),
        ValueError,
        r"the network returned shape \(3, 2\) for the guided batch of 2B = 6 samples \(unconditional, then "
        r"conditional\), expected \(6, 2\)",
    ),
    Case(
        "guided-net-returns-string",
        lambda: _guided_str().eps(_x(), 0.5),
        TypeError,
        r"^the network _StrNetKw must return a tensor or an output holding one .*, got str$",
    ),
    Case(
        "guided-cond-rows",
        lambda: _mk(class_labels=torch.zeros(2)).guided(3.0, {"class_labels": torch.zeros(1)}).eps(_x(), 0.5),
        ValueError,
        r"^model_kwargs\['class_labels'\] has 2 rows \(its leading dimension\) but x has batch size 3",
    ),
    Case(
        "guided-nested-uncond-rows",
        lambda: (
            _mk(added={"text_embeds": torch.zeros(3, 4)})
            .guided(3.0, {"added": {"text_embeds": torch.zeros(2, 4)}})
            .eps(_x(), 0.5)
        ),
        ValueError,
        r"^uncond_kwargs\['added'\]\['text_embeds'\] has 2 rows \(its leading dimension\) but x has batch size 3",
    ),
    Case(
        "guided-nested-against-number",
        lambda: _mk(added={"text_embeds": torch.zeros(3, 4)}).guided(3.0, {"added": 0}).eps(_x(), 0.5),
        ValueError,
        r"^uncond_kwargs\['added'\] \(0\) and model_kwargs\['added'\] \(.*\) differ but are not both per-sample",
    ),
    Case(
        "guided-number-against-nested",
        lambda: _mk(added=0).guided(3.0, {"added": {"text_embeds": torch.zeros(3, 4)}}).eps(_x(), 0.5),
        ValueError,
        r"^uncond_kwargs\['added'\] \(.*\) and model_kwargs\['added'\] \(0\) differ but are not both per-sample",
    ),
    Case(
        "guided-0d-tensor-against-number",
        lambda: _mk(scale=1.0).guided(3.0, {"scale": torch.tensor(1.0)}).eps(_x(), 0.5),
        ValueError,
        r"^uncond_kwargs\['scale'\] \(.*\) and model_kwargs\['scale'\] \(1.0\) differ but are not both per-sample",
    ),
    Case(
        "guided-values-not-comparable",
        lambda: _mk(opt=_NoEq()).guided(3.0, {"opt": _NoEq()}).eps(_x(), 0.5),
        ValueError,
        r"^uncond_kwargs\['opt'\] \(.*\) and model_kwargs\['opt'\] \(.*\) differ but are not both per-sample",
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
