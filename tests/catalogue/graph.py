"""Bad input to sdesolve.GraphSampler's call beyond sampling.py's cases: a solve whose grid starts
below T needs its start state."""

from __future__ import annotations

import torch

from sdesolve import DDPM, VPSDE, Gaussian, GraphSampler

from . import Case

_SDE = VPSDE()
_MODEL = Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])).model(_SDE)


def _below_T(**kw):
    """Call a sampler whose grid starts at t = 0.5 < T = 1 with ``kw`` (no x_T)."""

    def run():
        grid = torch.linspace(0.5, _SDE.t_min, 4, dtype=torch.float64)
        return GraphSampler(_SDE, _MODEL, (3, 2), solver=DDPM(), grid=grid, device="cpu")(**kw)

    return run


def _call_1d(*args, **kw):
    """Call a sampler of shape (3,) (no event dimensions) with ``args``, ``kw``."""

    def run():
        return GraphSampler(_SDE, lambda x, t: -x, (3,), solver=DDPM(), steps=3, device="cpu")(*args, **kw)

    return run


def _ancestral_on_subvp():
    from sdesolve import AncestralPredictor, PredictorCorrector, SubVPSDE

    sde = SubVPSDE()
    GraphSampler(sde, lambda x, t: -x, (3, 2), solver=PredictorCorrector(AncestralPredictor()), steps=3, device="cpu")


CASES = [
    Case(
        "graph-solver-not-for-the-process",
        _ancestral_on_subvp,
        ValueError,
        r"^AncestralPredictor applies to variance-preserving processes .*; SubVPSDE is neither\.",
    ),
    Case(
        "graph-call-x_T-0d",
        _call_1d(torch.tensor(1.0)),
        ValueError,
        r"^x_T must have a batch dimension: shape \(B, \*event\), got shape \(\)$",
    ),
    Case(
        "graph-call-x_T-missing-below-T",
        _below_T(generator=torch.Generator().manual_seed(0)),
        ValueError,
        r"^x_T is required: the grid starts at t = 0.5 < T = 1; pass x_T, the state at grid\[0\]$",
    ),
    Case(
        "graph-call-x_T-missing-below-T-generator-list",
        _below_T(generator=[torch.Generator().manual_seed(s) for s in range(3)]),
        ValueError,
        r"^x_T is required: the grid starts at t = 0.5 < T = 1; pass x_T, the state at grid\[0\]$",
    ),
]
