"""Bad input to sdesolve.sample and sdesolve.GraphSampler: every argument of sample(), of
GraphSampler(...) and of its __call__."""

from __future__ import annotations

import numpy as np
import torch

from sdesolve import DDIM, ODE, VPSDE, EulerMaruyama, Gaussian, GraphSampler, NonFiniteError, grids, sample

from . import Case

_SDE = VPSDE()
_TARGET = Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))
_MODEL = _TARGET.model(_SDE)
_GRID = grids.uniform(_SDE, 3)


def _s(**kw):
    kw.setdefault("solver", DDIM())
    if "x_T" not in kw:
        kw.setdefault("shape", (3, 2))
    if "grid" not in kw:
        kw.setdefault("steps", 3)
    sde = kw.pop("sde", _SDE)
    model = kw.pop("model", _MODEL)
    shape = kw.pop("shape", None)
    return lambda: sample(sde, model, shape, **kw)


def _g(**kw):
    kw.setdefault("solver", DDIM())
    if "grid" not in kw:
        kw.setdefault("steps", 3)
    kw.setdefault("device", "cpu")
    sde = kw.pop("sde", _SDE)
    model = kw.pop("model", _MODEL)
    shape = kw.pop("shape", (3, 2))
    return lambda: GraphSampler(sde, model, shape, **kw)


_GS = None


def _call(*args, **kw):
    def run():
        global _GS
        if _GS is None:
            _GS = GraphSampler(_SDE, _MODEL, (3, 2), solver=EulerMaruyama(), steps=3, device="cpu")
        return _GS(*args, **kw)

    return run


def _nan_at_t_min(x, t):
    return torch.where((t <= _SDE.t_min)[:, None], torch.full_like(x, float("nan")), -x)


def _nan(x, t):
    return torch.full_like(x, float("nan"))


def _gen(device="cpu"):
    return torch.Generator(device=device).manual_seed(0)


CASES = [
    # ------------------------------------------------------------------ sample()
    Case("sample-sde-string", _s(sde="vp"), TypeError, r"sde must be a sdesolve LinearSDE.*got str"),
    Case("sample-model-int", _s(model=3), TypeError, r"model must be a ScoreModel or a callable"),
    Case("sample-model-other-process", _s(sde=VPSDE()), ValueError, r"model is a ScoreModel of a different process"),
    Case("sample-shape-int", _s(shape=3), TypeError, r"shape must be a tuple of ints \(B, \*event\), got 3"),
    Case("sample-shape-string", _s(shape="3,2"), TypeError, r"shape must be a tuple of ints"),
    Case("sample-shape-float", _s(shape=(3.0, 2)), TypeError, r"shape\[0\] must be an int, got 3.0"),
    Case("sample-shape-empty-batch", _s(shape=(0, 2)), ValueError, r"shape must be .*batch size B >= 1.*got \(0, 2\)"),
    Case("sample-shape-empty-tuple", _s(shape=()), ValueError, r"shape must be \(B, \*event\).*got \(\)"),
    Case("sample-shape-zero-event", _s(shape=(3, 0)), ValueError, r"shape must be .*every size >= 1, got \(3, 0\)"),
    Case("sample-shape-missing", _s(shape=None), ValueError, r"shape is required without x_T"),
    Case(
        "sample-shape-vs-x_T",
        _s(shape=(4, 2), x_T=torch.zeros(3, 2)),
        ValueError,
        r"x_T has shape \(3, 2\) but shape=\(4, 2\)",
    ),
    Case(
        "sample-solver-string", _s(solver="ddim"), TypeError, r"solver must be a sdesolve Solver instance.*got 'ddim'"
    ),
    Case("sample-solver-class", _s(solver=DDIM), TypeError, r"solver must be a sdesolve Solver instance"),
    Case("sample-steps-float", _s(steps=2.5), TypeError, r"steps must be an int, got 2.5"),
    Case("sample-steps-bool", _s(steps=True), TypeError, r"steps must be an int, got True"),
    Case("sample-steps-zero", _s(steps=0), ValueError, r"steps must be an int >= 1, got 0"),
    Case("sample-steps-numpy-negative", _s(steps=np.int64(-2)), ValueError, r"steps must be an int >= 1, got -2"),
    Case("sample-steps-missing", _s(steps=None), ValueError, r"steps is required with grid='log_snr'"),
    Case("sample-steps-vs-grid", _s(grid=_GRID, steps=5), ValueError, r"steps=5 disagrees with grid.*3 intervals"),
    Case(
        "sample-grid-name",
        _s(grid="cosine", steps=3),
        ValueError,
        r"grid must be one of \['karras', 'log_snr', 'quadratic', 'uniform'\]",
    ),
    Case("sample-grid-int", _s(grid=7), TypeError, r"grid must be a 1-d tensor of times"),
    Case("sample-grid-int-tensor", _s(grid=torch.tensor([1, 0])), TypeError, r"grid must be a floating-point tensor"),
    Case(
        "sample-grid-increasing",
        _s(grid=torch.tensor([0.1, 0.5, 1.0])),
        ValueError,
        r"grid must be strictly decreasing.*grid\[1\]",
    ),
    Case(
        "sample-grid-nan",
        _s(grid=torch.tensor([1.0, float("nan"), 0.1])),
        ValueError,
        r"grid must be finite, got grid\[1\] = nan",
    ),
    Case(
        "sample-grid-outside",
        _s(grid=torch.tensor([2.0, 0.5])),
        ValueError,
        r"grid must lie inside \[t_min, T\].*grid\[0\] = 2",
    ),
    Case(
        "sample-grid-one-time",
        _s(grid=torch.tensor([1.0])),
        ValueError,
        r"grid must be a 1-d tensor of at least 2 times",
    ),
    Case("sample-grid-2d", _s(grid=torch.ones(2, 2)), ValueError, r"grid must be a 1-d tensor of at least 2 times"),
    Case(
        "sample-grid-callable-short",
        _s(grid=lambda sde, n: grids.uniform(sde, n + 1), steps=3),
        ValueError,
        r"returned 5 times; a grid callable must return steps \+ 1 = 4",
    ),
    Case(
        "sample-grid-late-start",
        _s(grid=torch.tensor([0.5, 0.1])),
        ValueError,
        r"x_T is required: the grid starts at t = 0.5 < T",
    ),
    Case("sample-x_T-list", _s(x_T=[[0.0, 1.0]]), TypeError, r"x_T must be a torch.Tensor, got list"),
    Case(
        "sample-x_T-int", _s(x_T=torch.zeros(3, 2, dtype=torch.long)), TypeError, r"x_T must be a floating-point tensor"
    ),
    Case("sample-x_T-0d", _s(x_T=torch.tensor(1.0)), ValueError, r"x_T must have a batch dimension"),
    Case("sample-x_T-empty-batch", _s(x_T=torch.zeros(0, 2)), ValueError, r"x_T must not be empty, got shape \(0, 2\)"),
    Case("sample-x_T-event-shape", _s(x_T=torch.zeros(3, 5)), ValueError, r"x must have shape"),
    Case(
        "sample-generator-int",
        _s(generator=0),
        TypeError,
        r"generator must be a torch.Generator, a list of torch.Generators \(one per sample\) or None, got 0",
    ),
    Case(
        "sample-generator-list-short",
        _s(generator=[_gen()]),
        ValueError,
        r"generator must be a list of one torch.Generator per sample \(3 for a batch of 3\), got a list of 1",
    ),
    Case(
        "sample-generator-list-x_T-batch",
        _s(x_T=torch.zeros(3, 2), generator=[_gen(), _gen()]),
        ValueError,
        r"generator must be a list of one torch.Generator per sample \(3 for a batch of 3\), got a list of 2",
    ),
    Case(
        "sample-generator-list-element",
        _s(generator=[_gen(), 1, _gen()]),
        TypeError,
        r"generator must be a torch.Generator, a list of torch.Generators .* got 1 at generator\[1\]",
    ),
    Case(
        "sample-generator-list-device",
        _s(generator=[_gen()] * 3, device="meta"),
        ValueError,
        r"generator\[0\] is on cpu but the samples are on meta",
    ),
    Case(
        "sample-generator-device",
        _s(generator=_gen(), device="meta"),
        ValueError,
        r"generator is on cpu but the samples are on meta",
    ),
    Case("sample-generator-dict", _s(generator={}), TypeError, r"generator must be a torch.Generator, a list"),
    Case("sample-device-int-list", _s(device=[0]), TypeError, r"device must be a torch.device, a string or an int"),
    Case("sample-device-bad-name", _s(device="gpu7"), ValueError, r"device must name a torch device.*'gpu7'"),
    Case(
        "sample-device-vs-x_T", _s(x_T=torch.zeros(3, 2), device="meta"), ValueError, r"x_T is on cpu but device=meta"
    ),
    Case("sample-dtype-string", _s(dtype="float32"), TypeError, r"dtype must be a floating torch.dtype.*'float32'"),
    Case("sample-dtype-int", _s(dtype=torch.int64), TypeError, r"dtype must be a floating torch.dtype"),
    Case(
        "sample-dtype-vs-x_T",
        _s(x_T=torch.zeros(3, 2), dtype=torch.float64),
        ValueError,
        r"x_T has dtype torch.float32 but dtype=torch.float64",
    ),
    Case("sample-denoise-string", _s(denoise="yes"), TypeError, r"denoise must be True or False, got 'yes'"),
    Case("sample-denoise-int", _s(denoise=1), TypeError, r"denoise must be True or False, got 1"),
    Case("sample-final_x0-none", _s(final_x0=None), TypeError, r"final_x0 must be True or False, got None"),
    Case("sample-final_x0-nan", _s(model=_nan_at_t_min, final_x0=True), NonFiniteError, r"final x0 step .*t = 0.001"),
    Case(
        "sample-callback-int", _s(callback=3), TypeError, r"callback must be a callable taking one dict, or None, got 3"
    ),
    Case("sample-progress-string", _s(progress="tqdm"), TypeError, r"progress must be True or False, got 'tqdm'"),
    Case("sample-check_finite-int", _s(check_finite=0), TypeError, r"check_finite must be True or False, got 0"),
    Case("sample-compile-string", _s(compile="inductor"), TypeError, r"compile must be True or False, got 'inductor'"),
    Case("sample-compile-key", _s(compile={1: "x"}), TypeError, r"compile must be .* \(str keys\), got key 1"),
    Case(
        "sample-compile-adaptive",
        _s(solver=ODE("dopri5"), steps=None, compile=True),
        ValueError,
        r"compile applies to fixed-step solvers; AdaptiveODE is adaptive",
    ),
    Case(
        "sample-compile-generator-list",
        _s(compile=True, generator=[torch.Generator() for _ in range(3)]),
        ValueError,
        r"compile takes one torch.Generator or None, not a list",
    ),
    Case(
        "sample-nan-model", _s(model=_nan), NonFiniteError, r"non-finite values .* first appeared at step 0, from t = 1"
    ),
    Case(
        "sample-adaptive-steps-float", _s(solver=ODE("dopri5"), steps=1.5), TypeError, r"steps must be an int, got 1.5"
    ),
    # ------------------------------------------------------------------ GraphSampler(...)
    Case("graph-sde-none", _g(sde=None), TypeError, r"sde must be a sdesolve LinearSDE.*got NoneType"),
    Case("graph-model-string", _g(model="unet"), TypeError, r"model must be a ScoreModel or a callable"),
    Case("graph-shape-int", _g(shape=4), TypeError, r"shape must be a tuple of ints \(B, \*event\), got 4"),
    Case("graph-shape-empty-batch", _g(shape=(0, 2)), ValueError, r"shape must be .*batch size B >= 1"),
    Case("graph-shape-float", _g(shape=(3, 2.0)), TypeError, r"shape\[1\] must be an int, got 2.0"),
    Case("graph-solver-string", _g(solver="ddim"), TypeError, r"solver must be a sdesolve Solver instance"),
    Case(
        "graph-solver-adaptive",
        _g(solver=ODE("dopri5")),
        ValueError,
        r"solver \w+ is adaptive.*pass a fixed-step solver",
    ),
    Case("graph-steps-float", _g(steps=2.5), TypeError, r"steps must be an int, got 2.5"),
    Case("graph-steps-zero", _g(steps=0), ValueError, r"steps must be an int >= 1, got 0"),
    Case("graph-steps-missing", _g(steps=None), ValueError, r"steps is required with grid='log_snr'"),
    Case(
        "graph-steps-vs-grid",
        _g(grid=_GRID, steps=5),
        ValueError,
        r"steps=5 disagrees with grid, a tensor of 4 times \(3 intervals\)",
    ),
    Case(
        "graph-grid-name",
        _g(grid="linear", steps=3),
        ValueError,
        r"grid must be one of \['karras', 'log_snr', 'quadratic', 'uniform'\]",
    ),
    Case(
        "graph-grid-increasing",
        _g(grid=torch.tensor([0.2, 0.9])),
        ValueError,
        r"grid must be strictly decreasing.*grid\[1\]",
    ),
    Case("graph-grid-set", _g(grid={1.0, 0.5}), TypeError, r"grid must be a 1-d tensor of times"),
    Case("graph-device-float", _g(device=1.5), TypeError, r"device must be a torch.device, a string or an int"),
    Case("graph-device-bad-name", _g(device="tpu:x"), ValueError, r"device must name a torch device"),
    Case("graph-dtype-int", _g(dtype=torch.int32), TypeError, r"dtype must be a floating torch.dtype"),
    Case("graph-dtype-none", _g(dtype=None), TypeError, r"dtype must be a floating torch.dtype .*got None"),
    Case("graph-denoise-string", _g(denoise="no"), TypeError, r"denoise must be True or False"),
    Case("graph-check_finite-int", _g(check_finite=1), TypeError, r"check_finite must be True or False, got 1"),
    Case("graph-use_graph-string", _g(use_graph="yes"), TypeError, r"use_graph must be True or False"),
    Case(
        "graph-use_graph-on-cpu", _g(use_graph=True), ValueError, r"use_graph=True needs a CUDA device, got device=cpu"
    ),
    Case("graph-warmup-float", _g(warmup=2.0), TypeError, r"warmup must be an int, got 2.0"),
    Case("graph-warmup-zero", _g(warmup=0), ValueError, r"warmup must be an int >= 1, got 0"),
    # ------------------------------------------------------------------ GraphSampler.__call__
    Case("graph-call-x_T-list", _call([[0.0, 0.0]] * 3), TypeError, r"x_T must be a torch.Tensor, got list"),
    Case(
        "graph-call-x_T-shape",
        _call(torch.zeros(4, 2)),
        ValueError,
        r"x_T must be a tensor of shape \(3, 2\).*got shape \(4, 2\)",
    ),
    Case(
        "graph-call-x_T-dtype",
        _call(torch.zeros(3, 2, dtype=torch.float64)),
        ValueError,
        r"x_T must be .*dtype torch.float32.*got .*torch.float64",
    ),
    Case(
        "graph-call-x_T-int",
        _call(torch.zeros(3, 2, dtype=torch.int64)),
        TypeError,
        r"x_T must be a floating-point tensor",
    ),
    Case("graph-call-x_T-empty", _call(torch.zeros(0, 2)), ValueError, r"x_T must not be empty"),
    Case(
        "graph-call-generator-seed",
        _call(generator=7),
        TypeError,
        r"generator must be a torch.Generator, a list of torch.Generators \(one per sample\) or None, got 7",
    ),
    Case(
        "graph-call-generator-list-long",
        _call(generator=[_gen()] * 4),
        ValueError,
        r"generator must be a list of one torch.Generator per sample \(3 for a batch of 3\), got a list of 4",
    ),
    Case(
        "graph-call-generator-list-element",
        _call(generator=[_gen(), _gen(), "g"]),
        TypeError,
        r"generator must be a torch.Generator, a list of torch.Generators .*got 'g' at generator\[2\]",
    ),
]
