"""Issue 8 item 2: the adaptive probability-flow sampler's error follows its tolerance and is no worse than
score_sde's ``ode_sampler`` (scipy's RK45 at the same rtol = atol) at every tolerance, not only at a few.

The exact flow of a Gaussian target is known in closed form (``Gaussian.flow``), so the error of both solvers
is exact. The tolerances are a log-spaced scan (the default suite takes three of them; the slow test all 13
from 1e-3 to 1e-6): the old default (the flow in t, RMS error norm) met the bar at 1e-3 and 1e-5 but was
3.3x worse than score_sde at 1e-4 on VP (error 3.5e-3, 35x the tolerance) and 12.7x on sub-VP at 3.2e-4,
because the error estimate of the last steps fails where sigma ~ sqrt(t) (notes in docs/design.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_adaptive import PROCESSES, TARGET_16, _score_sde_rk45, _x_T

import sdesolve as sd
from sdesolve import ODE


def _errors(proc: str, tols) -> tuple[list[float], list[float]]:
    sde = PROCESSES[proc]()
    x_T = _x_T(TARGET_16, sde)
    exact = TARGET_16.flow(x_T, sde.T, sde.t_min, sde)
    ours, theirs = [], []
    for tol in tols:
        ref, _ = _score_sde_rk45(sde, TARGET_16, x_T, tol)
        x = sd.sample(sde, TARGET_16.model(sde), x_T=x_T, solver=ODE("dopri5", rtol=tol, atol=tol))
        ours.append(float((x - exact).abs().max()))
        theirs.append(float((ref - exact).abs().max()))
    return ours, theirs


def _check(proc: str, tols) -> None:
    ours, theirs = _errors(proc, tols)
    for tol, a, b in zip(tols, ours, theirs):
        # the bar, without slack: at equal tolerance our error is at most score_sde's
        assert a <= b, (proc, tol, a, b)
        # the error follows the tolerance: within 10x of it (measured at most 4.9x over the 52 cases of the scan)
        assert a <= 10 * tol, (proc, tol, a)
    # ... and falls with it: a tighter tolerance never gives a larger error (the old default broke this on VP)
    assert all(later <= earlier for earlier, later in zip(ours, ours[1:])), (proc, ours)
    slope = np.polyfit(np.log(tols), np.log(ours), 1)[0]
    assert 0.8 < slope < 1.25, (proc, slope, ours)


@pytest.mark.parametrize("proc", list(PROCESSES))
def test_error_follows_the_tolerance_and_beats_score_sde(proc):
    _check(proc, [1e-3, 1e-4, 1e-5])


@pytest.mark.slow
@pytest.mark.parametrize("proc", list(PROCESSES))
def test_error_follows_the_tolerance_and_beats_score_sde_on_a_dense_scan(proc):
    _check(proc, list(np.logspace(-3, -6, 13)))


def test_auto_time_variable_is_log_snr_and_the_norm_is_the_maximum():
    """The sampler's defaults: u = log(sigma/alpha) on every process, and the maximum norm (every entry of
    every sample meets the tolerance): with one entry far off the others, the step is judged by that entry."""
    from sdesolve.solvers.adaptive import max_abs_norm

    for proc, make in PROCESSES.items():
        assert ODE("dopri5")._time_variable(make()) == "log_snr", proc
    e = torch.zeros(4, 16, dtype=torch.float64)
    e[2, 5] = 3.0
    assert float(max_abs_norm(e)) == 3.0
    assert math.isclose(float(sd.solvers.adaptive.per_sample_rms_norm(e)), 3.0 / 4.0)
