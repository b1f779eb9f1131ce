"""Bad input to sdesolve.grids: every argument of uniform, quadratic, log_snr, karras, optimized,
make_grid, validate_grid and resolve_grid."""

from __future__ import annotations

import numpy as np
import torch

from sdesolve import VDMSDE, VPSDE, GammaSchedule, Gaussian, NonFiniteError, grids

from . import Case

_SDE = VPSDE()
_MODEL = Gaussian(torch.zeros(2)).model(_SDE)
_X = torch.randn(4, 2)


class _Bump(GammaSchedule):
    """Not monotone: a 'learned' gamma gone wrong."""

    def forward(self, t):
        return -6.0 + 40.0 * t * (1.0 - t)


def _fn(name, *args, **kw):
    return lambda: getattr(grids, name)(*args, **kw)


def _per_kind():
    cases = []
    for kind in grids.GRIDS:
        cases += [
            Case(
                f"grids-{kind}-sde-string", _fn(kind, "vp", 5), TypeError, r"sde must be a sdesolve LinearSDE.*got str"
            ),
            Case(f"grids-{kind}-steps-float", _fn(kind, _SDE, 2.5), TypeError, r"steps must be an int, got 2.5"),
            Case(f"grids-{kind}-steps-bool", _fn(kind, _SDE, True), TypeError, r"steps must be an int, got True"),
            Case(f"grids-{kind}-steps-zero", _fn(kind, _SDE, 0), ValueError, r"steps must be an int >= 1, got 0"),
            Case(
                f"grids-{kind}-steps-numpy-negative",
                _fn(kind, _SDE, np.int64(-1)),
                ValueError,
                r"steps must be an int >= 1, got -1",
            ),
            Case(
                f"grids-{kind}-t_min-string", _fn(kind, _SDE, 5, t_min="0"), TypeError, r"t_min must be a real number"
            ),
            Case(
                f"grids-{kind}-t_min-below",
                _fn(kind, _SDE, 5, t_min=0.0),
                ValueError,
                r"t_min must be a finite number in \[0.001, 1\), got 0.0",
            ),
            Case(
                f"grids-{kind}-t_min-nan",
                _fn(kind, _SDE, 5, t_min=float("nan")),
                ValueError,
                r"t_min must be a finite number",
            ),
            Case(
                f"grids-{kind}-t_max-above",
                _fn(kind, _SDE, 5, t_max=1.5),
                ValueError,
                r"t_max must be a finite number in \(0.001, 1\], got 1.5",
            ),
            Case(f"grids-{kind}-t_max-bool", _fn(kind, _SDE, 5, t_max=True), TypeError, r"t_max must be a real number"),
            Case(
                f"grids-{kind}-t_min-above-t_max",
                _fn(kind, _SDE, 5, t_min=0.5, t_max=0.4),
                ValueError,
                r"t_min must be < t_max.*t_min=0.5, t_max=0.4",
            ),
        ]
    return cases


CASES = _per_kind() + [
    Case(
        "grids-karras-rho-zero",
        _fn("karras", _SDE, 5, rho=0.0),
        ValueError,
        r"rho must be a finite positive number, got 0.0",
    ),
    Case(
        "grids-karras-rho-inf",
        _fn("karras", _SDE, 5, rho=float("inf")),
        ValueError,
        r"rho must be a finite positive number",
    ),
    Case("grids-karras-rho-string", _fn("karras", _SDE, 5, rho="7"), TypeError, r"rho must be a real number"),
    Case(
        "grids-log_snr-non-monotone",
        _fn("log_snr", VDMSDE(_Bump()), 6),
        ValueError,
        r"grid 'log_snr' must be .*grid\[\d+\].*log-SNR must be strictly decreasing",
    ),
    Case(
        "grids-karras-non-monotone",
        _fn("karras", VDMSDE(_Bump()), 6),
        ValueError,
        r"grid 'karras' must be .*grid\[\d+\].*log-SNR must be strictly decreasing",
    ),
    # make_grid
    Case(
        "grids-make_grid-kind-unknown",
        _fn("make_grid", "cosine", _SDE, 5),
        ValueError,
        r"grid must be one of \['karras', 'log_snr', 'quadratic', 'uniform'\], a callable or a tensor, got 'cosine'",
    ),
    Case(
        "grids-make_grid-kind-int",
        _fn("make_grid", 5, _SDE, 5),
        TypeError,
        r"grid must be one of .*a callable grid\(sde, steps\) or a tensor of times, got 5",
    ),
    Case(
        "grids-make_grid-steps-float",
        _fn("make_grid", "uniform", _SDE, 5.0),
        TypeError,
        r"steps must be an int, got 5.0",
    ),
    Case("grids-make_grid-steps-zero", _fn("make_grid", "karras", _SDE, 0), ValueError, r"steps must be an int >= 1"),
    Case(
        "grids-make_grid-sde-none", _fn("make_grid", "uniform", None, 5), TypeError, r"sde must be a sdesolve LinearSDE"
    ),
    Case(
        "grids-make_grid-callable-count",
        _fn("make_grid", lambda sde, n: grids.uniform(sde, 2), _SDE, 5),
        ValueError,
        r"returned 3 times; a grid callable must return steps \+ 1 = 6 times",
    ),
    Case(
        "grids-make_grid-callable-increasing",
        _fn("make_grid", lambda sde, n: torch.linspace(0.1, 1.0, n + 1), _SDE, 3),
        ValueError,
        r"grid <lambda>\(sde, steps=3\) must be strictly decreasing.*grid\[1\]",
    ),
    Case(
        "grids-make_grid-callable-outside",
        _fn("make_grid", lambda sde, n: torch.linspace(1.0, 0.0, n + 1), _SDE, 3),
        ValueError,
        r"must lie inside \[t_min, T\].*grid\[3\] = 0",
    ),
    Case(
        "grids-make_grid-callable-string",
        _fn("make_grid", lambda sde, n: "1,0", _SDE, 3),
        TypeError,
        r"grid <lambda>\(sde, steps=3\) must be a 1-d tensor of times",
    ),
    # validate_grid
    Case(
        "grids-validate_grid-none",
        _fn("validate_grid", None, _SDE),
        TypeError,
        r"grid must be a 1-d tensor of times .*got None",
    ),
    Case(
        "grids-validate_grid-string",
        _fn("validate_grid", "1 0", _SDE),
        TypeError,
        r"grid must be a 1-d tensor of times",
    ),
    Case(
        "grids-validate_grid-int-tensor",
        _fn("validate_grid", torch.tensor([1, 0]), _SDE),
        TypeError,
        r"grid must be a floating-point tensor of times, got dtype torch.int64",
    ),
    Case(
        "grids-validate_grid-ragged",
        _fn("validate_grid", [[1.0], [0.5, 0.1]], _SDE),
        TypeError,
        r"grid must be a 1-d tensor of times",
    ),
    Case(
        "grids-validate_grid-scalar",
        _fn("validate_grid", torch.tensor(1.0), _SDE),
        ValueError,
        r"grid must be a 1-d tensor of at least 2 times.*got shape \(\)",
    ),
    Case(
        "grids-validate_grid-one", _fn("validate_grid", [1.0], _SDE), ValueError, r"at least 2 times.*got shape \(1,\)"
    ),
    Case(
        "grids-validate_grid-empty",
        _fn("validate_grid", torch.zeros(0), _SDE),
        ValueError,
        r"at least 2 times.*got shape \(0,\)",
    ),
    Case(
        "grids-validate_grid-2d",
        _fn("validate_grid", torch.ones(3, 2), _SDE),
        ValueError,
        r"grid must be a 1-d tensor.*got shape \(3, 2\)",
    ),
    Case(
        "grids-validate_grid-nan",
        _fn("validate_grid", [1.0, 0.5, float("nan")], _SDE),
        ValueError,
        r"grid must be finite, got grid\[2\] = nan",
    ),
    Case(
        "grids-validate_grid-inf",
        _fn("validate_grid", [float("inf"), 0.5], _SDE),
        ValueError,
        r"grid must be finite, got grid\[0\] = inf",
    ),
    Case(
        "grids-validate_grid-flat",
        _fn("validate_grid", [1.0, 0.5, 0.5, 0.1], _SDE),
        ValueError,
        r"grid must be strictly decreasing.*grid\[2\] = 0.5 >= grid\[1\] = 0.5",
    ),
    Case(
        "grids-validate_grid-above-T",
        _fn("validate_grid", [1.01, 0.5], _SDE),
        ValueError,
        r"grid must lie inside \[t_min, T\] = \[0.001, 1\], got grid\[0\] = 1.01",
    ),
    Case(
        "grids-validate_grid-below-t_min",
        _fn("validate_grid", [1.0, 0.0], _SDE),
        ValueError,
        r"grid must lie inside \[t_min, T\].*grid\[1\] = 0",
    ),
    Case(
        "grids-validate_grid-sde-string",
        _fn("validate_grid", [1.0, 0.5], "vp"),
        TypeError,
        r"sde must be a sdesolve LinearSDE",
    ),
    # resolve_grid
    Case(
        "grids-resolve_grid-steps-conflict",
        _fn("resolve_grid", grids.uniform(_SDE, 3), _SDE, 5),
        ValueError,
        r"steps=5 disagrees with grid, a tensor of 4 times \(3 intervals\)",
    ),
    Case(
        "grids-resolve_grid-steps-missing",
        _fn("resolve_grid", "karras", _SDE, None),
        ValueError,
        r"steps is required with grid='karras'",
    ),
    Case(
        "grids-resolve_grid-steps-missing-callable",
        _fn("resolve_grid", lambda s, n: None, _SDE, None),
        ValueError,
        r"steps is required with grid='a callable'",
    ),
    Case(
        "grids-resolve_grid-steps-float",
        _fn("resolve_grid", grids.uniform(_SDE, 3), _SDE, 3.0),
        TypeError,
        r"steps must be an int, got 3.0",
    ),
    Case(
        "grids-resolve_grid-grid-int", _fn("resolve_grid", 3, _SDE, 3), TypeError, r"grid must be a 1-d tensor of times"
    ),
    # optimized
    Case(
        "grids-optimized-sde-string",
        _fn("optimized", "vp", _MODEL, 5, x_T=_X),
        TypeError,
        r"sde must be a sdesolve LinearSDE",
    ),
    Case(
        "grids-optimized-model-int",
        _fn("optimized", _SDE, 3, 5, x_T=_X),
        TypeError,
        r"model must be a ScoreModel or a callable score s\(x, t\), got 3",
    ),
    Case(
        "grids-optimized-steps-float",
        _fn("optimized", _SDE, _MODEL, 2.5, x_T=_X),
        TypeError,
        r"steps must be an int, got 2.5",
    ),
    Case(
        "grids-optimized-steps-zero",
        _fn("optimized", _SDE, _MODEL, 0, x_T=_X),
        ValueError,
        r"steps must be an int >= 1, got 0",
    ),
    Case(
        "grids-optimized-order-zero",
        _fn("optimized", _SDE, _MODEL, 5, x_T=_X, order=0),
        ValueError,
        r"order must be an int in \[1, 3\], got 0",
    ),
    Case(
        "grids-optimized-order-four",
        _fn("optimized", _SDE, _MODEL, 5, x_T=_X, order=4),
        ValueError,
        r"order must be an int in \[1, 3\], got 4",
    ),
    Case(
        "grids-optimized-order-float",
        _fn("optimized", _SDE, _MODEL, 5, x_T=_X, order=1.0),
        TypeError,
        r"order must be an int, got 1.0",
    ),
    Case(
        "grids-optimized-pilot_steps-small",
        _fn("optimized", _SDE, _MODEL, 5, x_T=_X, order=2, pilot_steps=3),
        ValueError,
        r"pilot_steps must be an int >= 4, got 3",
    ),
    Case(
        "grids-optimized-pilot_steps-string",
        _fn("optimized", _SDE, _MODEL, 5, x_T=_X, pilot_steps="64"),
        TypeError,
        r"pilot_steps must be an int",
    ),
    Case(
        "grids-optimized-neither-x_T-nor-shape",
        _fn("optimized", _SDE, _MODEL, 5),
        ValueError,
        r"pass exactly one of x_T \(the pilot batch, \(B, \*event\)\) or shape",
    ),
    Case(
        "grids-optimized-both-x_T-and-shape",
        _fn("optimized", _SDE, _MODEL, 5, x_T=_X, shape=(4, 2)),
        ValueError,
        r"pass exactly one of x_T .* or shape",
    ),
    Case(
        "grids-optimized-x_T-list",
        _fn("optimized", _SDE, _MODEL, 5, x_T=[[0.0, 1.0]]),
        TypeError,
        r"x_T must be a torch.Tensor",
    ),
    Case(
        "grids-optimized-x_T-int",
        _fn("optimized", _SDE, _MODEL, 5, x_T=torch.zeros(4, 2, dtype=torch.long)),
        TypeError,
        r"x_T must be a floating-point tensor",
    ),
    Case(
        "grids-optimized-x_T-scalar",
        _fn("optimized", _SDE, _MODEL, 5, x_T=torch.tensor(1.0)),
        ValueError,
        r"x_T must have a batch dimension",
    ),
    Case(
        "grids-optimized-x_T-nan",
        _fn("optimized", _SDE, _MODEL, 5, x_T=torch.full((4, 2), float("nan"))),
        ValueError,
        r"x_T must be finite",
    ),
    Case(
        "grids-optimized-x_T-shape",
        _fn("optimized", _SDE, _MODEL, 5, x_T=torch.zeros(4, 3)),
        ValueError,
        r"x must have shape \(B, 2\)",
    ),
    Case(
        "grids-optimized-x_T-one-sample",
        _fn("optimized", _SDE, _MODEL, 5, x_T=torch.zeros(1, 2)),
        ValueError,
        r"x_T must hold a pilot batch of at least 2 samples, got shape \(1, 2\)",
    ),
    Case(
        "grids-optimized-shape-one-sample",
        _fn("optimized", _SDE, _MODEL, 5, shape=(1, 2)),
        ValueError,
        r"shape must give a pilot batch of at least 2 samples, got \(1, 2\)",
    ),
    Case(
        "grids-optimized-shape-string",
        _fn("optimized", _SDE, _MODEL, 5, shape="4,2"),
        TypeError,
        r"shape must be a tuple of ints",
    ),
    Case(
        "grids-optimized-shape-empty-batch",
        _fn("optimized", _SDE, _MODEL, 5, shape=(0, 2)),
        ValueError,
        r"shape must be \(B, \*event\) with batch size B >= 1",
    ),
    Case(
        "grids-optimized-generator-int",
        _fn("optimized", _SDE, _MODEL, 5, shape=(4, 2), generator=0),
        TypeError,
        r"generator must be a torch.Generator or None, got 0",
    ),
    Case(
        "grids-optimized-shape-with-t_max",
        _fn("optimized", _SDE, _MODEL, 5, shape=(4, 2), t_max=0.5),
        ValueError,
        r"x_T is required: the grid starts at t_max = 0.5 < T = 1",
    ),
    Case(
        "grids-optimized-t_min-below",
        _fn("optimized", _SDE, _MODEL, 5, x_T=_X, t_min=0.0),
        ValueError,
        r"t_min must be a finite number in \[0.001, 1\), got 0.0",
    ),
    Case(
        "grids-optimized-t_max-above",
        _fn("optimized", _SDE, _MODEL, 5, x_T=_X, t_max=2.0),
        ValueError,
        r"t_max must be a finite number in \(0.001, 1\], got 2.0",
    ),
    Case(
        "grids-optimized-model-nan",
        _fn("optimized", _SDE, lambda x, t: torch.full_like(x, float("nan")), 5, x_T=_X),
        NonFiniteError,
        r"the pilot solve of grids.optimized \(DDIM on 64 steps\): non-finite values",
    ),
]
