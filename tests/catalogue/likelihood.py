"""Bad input to sdesolve.likelihood: every argument of log_likelihood, bits_per_dim,
hutchinson_trace and exact_trace."""

from __future__ import annotations

import numpy as np
import torch

from sdesolve import VPSDE, Gaussian, bits_per_dim, log_likelihood
from sdesolve.likelihood import exact_trace, hutchinson_trace
from sdesolve.solvers.adaptive import AdaptiveSolveError
from sdesolve.solvers.base import NonFiniteError

from . import Case

F64 = torch.float64
_SDE = VPSDE()
_TARGET = Gaussian(torch.tensor([0.5, -0.3, 0.8]), torch.tensor([0.3, 0.6, 0.2]))
_MODEL = _TARGET.model(_SDE)


def _x(b=2, dtype=F64):
    return torch.tensor([[0.1, -0.2, 0.3], [0.4, 0.0, -0.5]], dtype=dtype)[:b]


def _ll(**kw):
    x = kw.pop("x", _x())
    sde = kw.pop("sde", _SDE)
    model = kw.pop("model", _MODEL)
    return lambda: log_likelihood(sde, model, x, **kw)


def _bpd(x=None, **kw):
    x = torch.tensor([[0, 255, 3], [7, 8, 9]]) if x is None else x
    return lambda: bits_per_dim(_SDE, _MODEL, x, **kw)


def _score(v):
    return -v


def _grid01():  # ToTensor()-style 8-bit images k / 255 on [0, 1]
    return torch.tensor([[0.0, 128 / 255, 1.0], [3 / 255, 1.0, 0.0]])


_NAN = _x().clone()
_NAN[0, 0] = float("nan")

CASES = [
    # ---------------------------------------------------------------- log_likelihood
    Case("likelihood-sde-not-a-process", _ll(sde="vp"), TypeError, r"sde must be a LinearSDE"),
    Case("likelihood-model-not-callable", _ll(model=3), TypeError, r"model must be a ScoreModel or a callable"),
    Case("likelihood-x-not-a-tensor", _ll(x=[[0.1, 0.2, 0.3]]), TypeError, r"x must be a torch.Tensor"),
    Case("likelihood-x-integer", _ll(x=torch.zeros(2, 3, dtype=torch.int64)), TypeError, r"x must be a floating"),
    Case("likelihood-x-no-batch-dim", _ll(x=torch.zeros((), dtype=F64)), ValueError, r"x must have a batch dimension"),
    Case("likelihood-x-empty-batch", _ll(x=torch.zeros(0, 3, dtype=F64)), ValueError, r"x must not be empty"),
    Case("likelihood-x-nan", _ll(x=_NAN), ValueError, r"x must be finite"),
    Case("likelihood-divergence-unknown", _ll(divergence="skilling"), ValueError, r"divergence must be one of"),
    Case("likelihood-divergence-type", _ll(divergence=1), TypeError, r"divergence must be one of"),
    Case("likelihood-progress-string", _ll(progress="yes"), TypeError, r"progress must be True or False, got 'yes'"),
    Case("likelihood-probe-unknown", _ll(probe="uniform"), ValueError, r"probe must be one of .*rademacher"),
    Case("likelihood-n-probes-zero", _ll(n_probes=0), ValueError, r"n_probes must be an int >= 1"),
    Case("likelihood-n-probes-float", _ll(n_probes=2.0), TypeError, r"n_probes must be an int"),
    Case("likelihood-method-unknown", _ll(method="rk45"), ValueError, r"method must be one of .*dopri5.*scipy-RK45"),
    Case("likelihood-method-type", _ll(method=None), TypeError, r"method must be one of"),
    Case("likelihood-rtol-zero", _ll(rtol=0.0), ValueError, r"rtol must be a finite positive number, got 0.0"),
    Case("likelihood-rtol-inf", _ll(rtol=float("inf")), ValueError, r"rtol must be a finite positive number"),
    Case("likelihood-rtol-string", _ll(rtol="1e-5"), TypeError, r"rtol must be a real number"),
    Case(
        "likelihood-rtol-below-float32",
        _ll(x=_x(dtype=torch.float32), rtol=1e-7),
        ValueError,
        r"rtol=1e-07 cannot be met in torch.float32",
    ),
    Case("likelihood-rtol-below-float64", _ll(rtol=1e-16), ValueError, r"rtol=1e-16 cannot be met in torch.float64"),
    Case(
        "likelihood-rtol-half-checked-in-float32",
        _ll(x=_x(dtype=torch.bfloat16), rtol=1e-7),
        ValueError,
        r"rtol=1e-07 cannot be met in torch.float32",
    ),
    Case("likelihood-atol-negative", _ll(atol=-1e-5), ValueError, r"atol must be a finite positive number, got -1e-05"),
    Case("likelihood-atol-nan", _ll(atol=float("nan")), ValueError, r"atol must be a finite positive number"),
    Case("likelihood-t-min-negative", _ll(t_min=-0.1), ValueError, r"t_min must be a finite number in \[0, 1\)"),
    Case("likelihood-t-min-at-T", _ll(t_min=1.0), ValueError, r"t_min must be a finite number in \[0, 1\)"),
    Case("likelihood-t-min-string", _ll(t_min="0.001"), TypeError, r"t_min must be a real number"),
    Case("likelihood-steps-missing", _ll(method="euler"), ValueError, r"method='euler' is fixed-step: pass steps"),
    Case("likelihood-steps-zero", _ll(method="rk4", steps=0), ValueError, r"steps must be an int >= 1"),
    Case("likelihood-steps-float", _ll(method="rk4", steps=4.0), TypeError, r"steps must be an int"),
    Case("likelihood-steps-with-adaptive", _ll(steps=10), ValueError, r"steps only applies to fixed-step methods"),
    Case(
        "likelihood-steps-over-max-nfe",
        _ll(method="rk4", steps=100, max_nfe=50),
        ValueError,
        r"steps=100 takes 400 network evaluations, more than max_nfe=50",
    ),
    Case("likelihood-generator-type", _ll(generator=0), TypeError, r"generator must be a torch.Generator"),
    Case(
        "likelihood-generator-list-short",
        _ll(generator=[torch.Generator()]),
        ValueError,
        r"generator must be a list of one torch.Generator per sample \(2 for a batch of 2\), got a list of 1",
    ),
    Case(
        "likelihood-generator-list-element",
        _ll(generator=[torch.Generator(), "seed"]),
        TypeError,
        r"generator must be a torch.Generator, a list of torch.Generators .*got 'seed' at generator\[1\]",
    ),
    Case("likelihood-return-latent-type", _ll(return_latent="yes"), TypeError, r"return_latent must be True or False"),
    Case("likelihood-time-variable-unknown", _ll(time_variable="sigma"), ValueError, r"time_variable must be one of"),
    Case(
        "likelihood-time-variable-log-snr-at-zero",
        _ll(t_min=0.0, time_variable="log_snr"),
        ValueError,
        r"time_variable='log_snr' needs a finite log-SNR at t_min",
    ),
    Case("likelihood-prior-logp-not-callable", _ll(prior_logp=1.0), TypeError, r"prior_logp must be a callable"),
    Case(
        "likelihood-prior-logp-wrong-shape",
        _ll(prior_logp=lambda z: z, method="euler", steps=1),
        ValueError,
        r"prior_logp must return a tensor of shape \(2,\), got \(2, 3\)",
    ),
    Case("likelihood-grad-string", _ll(grad="yes"), ValueError, r"grad must be False, True or 'adjoint'"),
    Case("likelihood-grad-int", _ll(grad=1), TypeError, r"grad must be False, True or 'adjoint'"),
    Case("likelihood-grad-scipy", _ll(grad=True, method="scipy-RK45"), ValueError, r"scipy backend .* use grad=False"),
    Case(
        "likelihood-grad-adjoint-fixed",
        _ll(grad="adjoint", method="euler", steps=2),
        ValueError,
        r"grad='adjoint' needs an adaptive method",
    ),
    Case(
        "likelihood-chunk-size-zero",
        _ll(divergence="exact", chunk_size=0),
        ValueError,
        r"chunk_size must be an int >= 1",
    ),
    Case(
        "likelihood-chunk-size-float", _ll(divergence="exact", chunk_size=1.5), TypeError, r"chunk_size must be an int"
    ),
    Case(
        "likelihood-solver-options-type",
        _ll(solver_options=[("first_step", 1e-3)]),
        TypeError,
        r"solver_options must be a dict or None",
    ),
    Case(
        "likelihood-solver-options-unknown-key",
        _ll(solver_options={"max_num_steps": 10}),
        ValueError,
        r"solver_options of method='dopri5' may hold 'first_step' and 'norm'",
    ),
    Case(
        "likelihood-solver-options-first-step-negative",
        _ll(solver_options={"first_step": -1e-3}),
        ValueError,
        r"solver_options\['first_step'\] must be a finite positive number",
    ),
    Case(
        "likelihood-solver-options-norm-not-callable",
        _ll(solver_options={"norm": "rms"}),
        TypeError,
        r"solver_options\['norm'\] must be a callable",
    ),
    Case(
        "likelihood-model-returns-nan",
        _ll(model=lambda v, t: v * float("nan"), time_variable="log_snr"),
        NonFiniteError,
        r"NaN or inf from the vector field at t = 0.001 ",  # the process time t_min, not u = log(sigma/alpha)
    ),
    Case("likelihood-cuda-graph-type", _ll(cuda_graph=1), TypeError, r"cuda_graph must be True or False"),
    Case("likelihood-cuda-graph-on-cpu", _ll(cuda_graph=True), ValueError, r"cuda_graph=True needs x on a CUDA device"),
    Case("likelihood-max-nfe-zero", _ll(max_nfe=0), ValueError, r"max_nfe must be an int >= 1"),
    Case("likelihood-max-nfe-float", _ll(max_nfe=1e4), TypeError, r"max_nfe must be an int"),
    Case(
        "likelihood-max-nfe-reached",
        _ll(max_nfe=5),
        AdaptiveSolveError,
        r"stopped at t = [0-9.e-]+ after 5 network evaluations \(max_nfe=5\)",
    ),
    Case(
        "likelihood-exact-score-not-differentiable",
        _ll(divergence="exact", model=lambda v, t: v.detach()),
        TypeError,
        r"score is not differentiable with respect to x",
    ),
    Case(
        "likelihood-hutchinson-score-not-differentiable",
        _ll(model=lambda v, t: v.detach()),
        TypeError,
        r"score is not differentiable with respect to x",
    ),
    # ---------------------------------------------------------------- bits_per_dim
    Case("likelihood-bpd-x-not-a-tensor", _bpd(x=[[0, 1, 2]]), TypeError, r"x must be a torch.Tensor"),
    Case(
        "likelihood-bpd-x-bool",
        _bpd(x=torch.ones(2, 3, dtype=torch.bool)),
        TypeError,
        r"x must be an integer or floating",
    ),
    Case("likelihood-bpd-x-empty", _bpd(x=torch.zeros(0, 3, dtype=torch.uint8)), ValueError, r"x must not be empty"),
    Case("likelihood-bpd-x-no-batch-dim", _bpd(x=torch.tensor(3)), ValueError, r"x must have a batch dimension"),
    Case("likelihood-bpd-x-nan", _bpd(x=_NAN, dequantize=None), ValueError, r"x must be finite"),
    Case(  # inf is refused as not finite, not as data outside data_range
        "likelihood-bpd-x-inf",
        _bpd(x=torch.tensor([[0.0, float("inf"), 0.5]], dtype=F64), dequantize=None),
        ValueError,
        r"^x must be finite, got NaN or inf values$",
    ),
    Case(
        "likelihood-bpd-x-inf-on-grid",
        _bpd(x=torch.tensor([[0.0, -float("inf"), 1.0]], dtype=F64)),
        ValueError,
        r"^x must be finite, got NaN or inf values$",
    ),
    Case(
        "likelihood-bpd-integers-above-range",
        _bpd(x=torch.tensor([[0, 256, 3]])),
        ValueError,
        r"integer data must lie in \[0, 255\] \(256 levels\)",
    ),
    Case(
        "likelihood-bpd-integers-negative",
        _bpd(x=torch.tensor([[-1, 2, 3]])),
        ValueError,
        r"integer data must lie in \[0, 255\]",
    ),
    Case(
        "likelihood-bpd-integers-17-levels",
        _bpd(levels=17),
        ValueError,
        r"integer data must lie in \[0, 16\] \(17 levels\)",
    ),
    Case("likelihood-bpd-n-bits-zero", _bpd(n_bits=0), ValueError, r"n_bits must be an int in \[1, 16\]"),
    Case("likelihood-bpd-n-bits-17", _bpd(n_bits=17), ValueError, r"n_bits must be an int in \[1, 16\]"),
    Case("likelihood-bpd-n-bits-float", _bpd(n_bits=2.5), TypeError, r"n_bits must be an int"),
    Case("likelihood-bpd-n-bits-bool", _bpd(n_bits=True), TypeError, r"n_bits must be an int"),
    Case("likelihood-bpd-levels-one", _bpd(levels=1), ValueError, r"levels must be an int >= 2"),
    Case("likelihood-bpd-levels-float", _bpd(levels=17.0), TypeError, r"levels must be an int"),
    Case(
        "likelihood-bpd-data-range-reversed",
        _bpd(data_range=(1.0, -1.0)),
        ValueError,
        r"data_range must be \(lo, hi\) with lo < hi",
    ),
    Case(
        "likelihood-bpd-data-range-not-pair",
        _bpd(data_range=1.0),
        TypeError,
        r"^data_range must be a pair of numbers \(lo, hi\), got 1\.0$",
    ),
    Case(
        "likelihood-bpd-data-range-empty",
        _bpd(data_range=(1.0, 1.0)),
        ValueError,
        r"^data_range must be \(lo, hi\) with lo < hi, got \(1\.0, 1\.0\)$",
    ),
    Case(
        "likelihood-bpd-data-range-inf",
        _bpd(data_range=(-1.0, float("inf"))),
        ValueError,
        r"data_range\[1\] must be a finite",
    ),
    Case(
        "likelihood-bpd-data-range-string",
        _bpd(data_range=("-1", "1")),
        TypeError,
        r"data_range\[0\] must be a real number",
    ),
    Case(
        "likelihood-bpd-float-outside-range",
        _bpd(x=_x() * 10, dequantize=None),
        ValueError,
        r"float data must lie in data_range \[-1, 1\]",
    ),
    Case(
        "likelihood-bpd-float-off-grid",
        _bpd(x=_x() * 0.999),
        ValueError,
        r"needs float data on the 256-level grid .*pass dequantize=None",
    ),
    Case(
        "likelihood-bpd-float-on-0-1-grid",
        _bpd(x=_grid01()),
        ValueError,
        r"256-level grid of \[0, 1\]: pass data_range=\(0, 1\) if the model was trained on \[0, 1\]",
    ),
    Case(
        "likelihood-bpd-float-on-0-255-grid",
        _bpd(x=torch.tensor([[0.0, 128.0, 255.0]])),
        ValueError,
        r"float data must lie in data_range .*256-level grid of \[0, 255\]: pass them as integers",
    ),
    Case(
        "likelihood-bpd-float-on-m1-1-grid-with-0-1-range",
        _bpd(x=_grid01() * 2 - 1, data_range=(0.0, 1.0)),
        ValueError,
        r"grid of \[-1, 1\]: pass data_range=\(-1, 1\)",
    ),
    Case("likelihood-bpd-dequantize-unknown", _bpd(dequantize="gaussian"), ValueError, r"dequantize must be one of"),
    Case("likelihood-bpd-dequantize-type", _bpd(dequantize=True), TypeError, r"dequantize must be one of"),
    Case("likelihood-bpd-n-repeats-zero", _bpd(n_repeats=0), ValueError, r"n_repeats must be an int >= 1"),
    Case("likelihood-bpd-n-repeats-float", _bpd(n_repeats=np.float64(2.0)), TypeError, r"n_repeats must be an int"),
    Case("likelihood-bpd-generator-type", _bpd(generator="seed"), TypeError, r"generator must be a torch.Generator"),
    Case(
        "likelihood-bpd-generator-list-long",
        _bpd(generator=[torch.Generator()] * 3),
        ValueError,
        r"generator must be a list of one torch.Generator per sample \(2 for a batch of 2\), got a list of 3",
    ),
    Case(
        "likelihood-bpd-generator-tuple-element",
        _bpd(generator=(torch.Generator(), 1.5)),
        TypeError,
        r"generator must be a torch.Generator, a list of torch.Generators .*got 1.5 at generator\[1\]",
    ),
    Case("likelihood-bpd-dtype-integer", _bpd(dtype=torch.int32), TypeError, r"dtype must be a floating torch.dtype"),
    Case(
        "likelihood-bpd-dtype-string",
        _bpd(dtype="float32"),
        TypeError,
        r"^dtype must be a floating torch\.dtype or None, got 'float32'$",
    ),
    Case(
        "likelihood-bpd-likelihood-kwarg", _bpd(rtol=0.0), ValueError, r"rtol must be a finite positive number, got 0.0"
    ),
    Case("likelihood-bpd-unknown-kwarg", _bpd(rtoll=1e-5), TypeError, r"unexpected keyword argument 'rtoll'"),
    # ---------------------------------------------------------------- hutchinson_trace, exact_trace
    Case(
        "likelihood-exact-score-fn-int-message",
        lambda: exact_trace(3, _x()),
        TypeError,
        r"^score_fn must be a callable score_fn\(x\), got 3 \(int\)$",
    ),
    Case(
        "likelihood-exact-x-0d",
        lambda: exact_trace(_score, torch.tensor(1.0, dtype=F64)),
        ValueError,
        r"^x must have a batch dimension: shape \(B, \*event\), got shape \(\)$",
    ),
    Case(
        "likelihood-hutchinson-score-fn-type",
        lambda: hutchinson_trace(3, _x(), torch.ones(1, 2, 3, dtype=F64)),
        TypeError,
        r"score_fn must be a callable",
    ),
    Case(
        "likelihood-hutchinson-x-type",
        lambda: hutchinson_trace(_score, [1.0], torch.ones(1, 2, 3, dtype=F64)),
        TypeError,
        r"x must be a torch.Tensor",
    ),
    Case(
        "likelihood-hutchinson-probes-type",
        lambda: hutchinson_trace(_score, _x(), None),
        TypeError,
        r"probes must be a torch.Tensor",
    ),
    Case(
        "likelihood-hutchinson-probes-shape",
        lambda: hutchinson_trace(_score, _x(), torch.ones(2, 3, dtype=F64)),
        ValueError,
        r"probes must have shape \(n_probes, \*x.shape\)",
    ),
    Case(
        "likelihood-hutchinson-probes-1d",
        lambda: hutchinson_trace(_score, _x(), torch.ones(3, dtype=F64)),
        ValueError,
        r"^probes must have at least 2 dimensions, got shape \(3,\)$",
    ),
    Case(
        "likelihood-hutchinson-create-graph-type",
        lambda: hutchinson_trace(_score, _x(), torch.ones(1, 2, 3, dtype=F64), create_graph=None),
        TypeError,
        r"create_graph must be True or False",
    ),
    Case(
        "likelihood-hutchinson-detached",
        lambda: hutchinson_trace(lambda v: v.detach(), _x(), torch.ones(1, 2, 3, dtype=F64)),
        TypeError,
        r"score is not differentiable",
    ),
    Case("likelihood-exact-score-fn-type", lambda: exact_trace(None, _x()), TypeError, r"score_fn must be a callable"),
    Case(
        "likelihood-exact-x-integer",
        lambda: exact_trace(_score, torch.ones(2, 3, dtype=torch.int64)),
        TypeError,
        r"x must be a floating-point tensor",
    ),
    Case("likelihood-exact-x-empty", lambda: exact_trace(_score, torch.ones(0, 3)), ValueError, r"x must not be empty"),
    Case(
        "likelihood-exact-chunk-size-zero",
        lambda: exact_trace(_score, _x(), chunk_size=0),
        ValueError,
        r"chunk_size must be an int >= 1",
    ),
    Case(
        "likelihood-exact-create-graph-type",
        lambda: exact_trace(_score, _x(), create_graph="no"),
        TypeError,
        r"create_graph must be True or False",
    ),
    Case(
        "likelihood-exact-detached",
        lambda: exact_trace(lambda v: v.detach(), _x()),
        TypeError,
        r"score is not differentiable",
    ),
]
