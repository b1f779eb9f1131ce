"""The output law of every stochastic sampler (PredictorCorrector aside: test_predictor_corrector.py)
at D = 2, 4, 16, 64, on every process it applies to, for a Gaussian and a two-mode mixture target.

Samplers: EulerMaruyama, DDPM("small"), DDPM("large"), DDIM(eta=1), VDMAncestral; processes: VP,
sub-VP, VE and the linear discrete DDPM schedule. Every run starts from the prior (``sd.sample`` with a
shape), float64, ``STEPS`` steps on the solver's default grid.

* Gaussian target ``N(mu, diag(s^2))`` (means in [-2, 2], stds spread 0.3..2): at a finite step count
  the chain's law is not the target (discretization bias: up to 18 % of the variance at 100 steps), but
  for these affine-Gaussian chains it is computed exactly from the solver's own steps
  (``helpers.chain_moments``, started at the prior N(0, prior_std^2)). The samples must follow it:
  per coordinate (``helpers.check_moments``, 5 standard errors) and pooled over the D independent
  coordinates with exact chi-square laws (a coordinate-wise test misses a small shift common to all
  64 coordinates; the pooled one does not). Separately, a deterministic check that this law is close
  to the target and converges at roughly first order (doubling the steps shrinks the variance error
  by >= 35 %, i.e. observed order >= 0.62).
* Mixture ``0.3 N(-2u, 0.5^2 I) + 0.7 N(2u, 0.5^2 I)``, u = (1, ..., 1)/sqrt(D): the modes are 8 component stds
  apart, so assigning a sample to the nearer mode (sign of x.u) misclassifies with probability
  Phi(-4) = 3e-5. The heavier mode's weight must be 0.7 within 5 binomial standard errors plus
  ``WEIGHT_ALLOWANCE``, and each mode's mean (per coordinate and along u) the component's mean at
  t_min within 5 standard errors plus ``MEAN_ALLOWANCE`` component stds. No closed form gives the
  chain's law here, so the allowances are the samplers' discretization bias on this mixture at
  ``MIX_STEPS`` = 200 steps, measured once with n = 200 000 (see the constants), not fitted to the
  test's own draws. The bias is first order (DDPM-large on VE: weight error -0.021, -0.010, -0.007 at
  100, 200, 400 steps; DDIM(eta=1) on sub-VP: +0.012, +0.004, +0.002), hence 200 steps rather than 100.
  Projected on u the chain is the same 1-D chain at every D (isotropic components), so the D = 2
  measurement holds for every D.

The default run covers VP at D = 2 and 16 for every sampler and both targets (and the deterministic
chain-law check on VP); every other process and D is marked slow.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import PROCESSES as REGISTRY
from helpers import chain_moments, check_moments
from scipy import stats

import sdesolve as sd
from sdesolve.grids import resolve_grid

F64 = torch.float64
STEPS = 100
N_SAMPLES = 4000
Z = 5.0
#: per-test false-alarm level of the pooled chi-square tests (two-sided), comparable to 5 SE
POOLED_ALPHA = 1e-6

SAMPLERS = {
    "em": lambda: sd.EulerMaruyama(),
    "ddpm_small": lambda: sd.DDPM(variance="small"),
    "ddpm_large": lambda: sd.DDPM(variance="large"),
    "ddim_eta1": lambda: sd.DDIM(eta=1.0),
    "vdm_ancestral": lambda: sd.VDMAncestral(),
}
PROCESSES = {k: REGISTRY[k] for k in ("vp", "subvp", "ve", "discrete")}  # the registry's factories
DIMS = (2, 4, 16, 64)
FAST_DIMS = (2, 16)
FAST_PROCESS = "vp"

#: Deterministic bounds on the exact chain law's distance to the target at STEPS (relative variance
#: error; mean error in target stds) — "close" for a first-order method at 100 steps: measured worst
#: cases (D = 16 target) are EM 3.7 % (mean, sub-VP), DDPM / DDIM(eta=1) 4.4-15.4 % of the variance
#: (DDPM-large on VE the worst), VDMAncestral 17.8 % (its uniform grid, VP); the means of the ancestral
#: samplers are exact up to the prior mismatch. 0.2 is a ceiling; the convergence factor below (measured
#: ratios 0.25-0.58) does the real work.
VAR_BIAS_BOUND = 0.2
MEAN_BIAS_BOUND = 0.1
#: doubling the steps must shrink the variance error to <= this fraction (weak order >= 0.62) ...
HALVING_FACTOR = 0.65
#: ... up to the start-from-prior mismatch, which does not vanish with the steps (<= 2e-3 measured, VE)
PRIOR_FLOOR = 2e-3

#: Mixture: steps, and allowances (module docstring). Measured at MIX_STEPS with n = 200 000, every sampler
#: and process at D = 2: |w - 0.7| <= 0.0113 (DDPM-large on VE; <= 0.0056 for the others), per-mode
#: mean errors along u <= 0.021 = 0.042 component stds (DDIM(eta=1), sub-VP, the light mode). Each
#: allowance is that worst case plus 3 standard errors of its measurement (0.001 and 0.004 stds), rounded up.
MIX_STEPS = 200
WEIGHT_ALLOWANCE = 0.015
MEAN_ALLOWANCE = 0.06


# ----------------------------------------------------------------------------- problems
def _gaussian(D: int) -> sd.Gaussian:
    k = torch.arange(D, dtype=F64)
    mean = 2.0 * torch.sin(1.3 * k + 0.4)  # in [-2, 2], not monotone in k
    std = 0.3 + 1.7 * k / max(D - 1, 1)  # 0.3 .. 2.0
    return sd.Gaussian(mean, std)


def _mixture(D: int):
    u = torch.ones(D, dtype=F64) / math.sqrt(D)
    return sd.GaussianMixture(torch.tensor([0.3, 0.7], dtype=F64), torch.stack([-2.0 * u, 2.0 * u]), 0.5), u


def _setup(sampler: str, proc: str):
    sde, solver = PROCESSES[proc](), SAMPLERS[sampler]()
    try:
        solver.check(sde)
    except ValueError as e:  # the documented refusal of a solver for a process
        pytest.skip(f"{sampler} does not apply to {proc}: {e}")
    return sde, solver


def _draw(sde, solver, target, n, D, seed, steps=STEPS):
    return sd.sample(
        sde,
        target.model(sde),
        (n, D),
        solver=solver,
        steps=steps,
        generator=torch.Generator().manual_seed(seed),
        dtype=F64,
    )


def _chain_law(sde, solver, target, D, steps):
    """Exact mean and variance of the chain sd.sample runs (same default grid, prior start, denoise)."""
    grid = resolve_grid(None, sde, steps, default=solver.default_grid)
    prior_var = torch.full((D,), float(sde.prior_std) ** 2, dtype=F64)
    return chain_moments(solver, sde, target.model(sde), grid, torch.zeros(D, dtype=F64), prior_var)


def _seed(*keys) -> int:
    """A fixed seed per case (independent draws across cases, reproducible across runs)."""
    return sum((i + 1) * sum(map(ord, str(k))) for i, k in enumerate(keys)) % (2**31)


# ----------------------------------------------------------------------------- Gaussian target
def _pooled_checks(x, m, v, what):
    """Exact pooled laws over the D independent coordinates of n Gaussian samples of N(m, diag(v)):
    sum_i n (mean_i - m_i)^2 / v_i ~ chi2(D) and sum_i (n - 1) var_i / v_i ~ chi2(D (n - 1))."""
    n, D = x.shape
    q_mean = float((n * (x.mean(0) - m) ** 2 / v).sum())
    hi = stats.chi2.isf(POOLED_ALPHA, D)
    assert q_mean < hi, f"{what}: pooled mean statistic {q_mean:.1f} >= chi2({D}) quantile {hi:.1f}"
    dof = D * (n - 1)
    q_var = float(((n - 1) * x.var(0) / v).sum())
    lo, hi = stats.chi2.ppf(POOLED_ALPHA / 2, dof), stats.chi2.isf(POOLED_ALPHA / 2, dof)
    ratio, band = q_var / dof, (lo / dof, hi / dof)
    assert lo < q_var < hi, f"{what}: pooled variance ratio {ratio:.4f} outside {band}"


def _gaussian_case(sampler, proc, D, n=N_SAMPLES):
    sde, solver = _setup(sampler, proc)
    target = _gaussian(D)
    what = f"{sampler}/{proc}/D={D}"
    x = _draw(sde, solver, target, n, D, _seed("gauss", sampler, proc, D))
    m, v = _chain_law(sde, solver, target, D, STEPS)
    check_moments(x, m, v, z=Z, check_cov=D <= 16, what=what)
    _pooled_checks(x, m, v, what)


def _bias(sde, solver, target, D, steps):
    m, v = _chain_law(sde, solver, target, D, steps)
    m0, v0 = target.marginal_moments(sde.t_min, sde)
    return float(((m - m0).abs() / v0.sqrt()).max()), float(((v - v0) / v0).abs().max())


@pytest.mark.parametrize("D", FAST_DIMS)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_gaussian_law(sampler, D):
    _gaussian_case(sampler, FAST_PROCESS, D)


#: every (sampler, process, D) not in the default run
SLOW_CASES = [
    (s, p, D) for s in SAMPLERS for p in PROCESSES for D in DIMS if not (p == FAST_PROCESS and D in FAST_DIMS)
]


@pytest.mark.slow
@pytest.mark.parametrize("sampler, proc, D", SLOW_CASES)
def test_gaussian_law_all(sampler, proc, D):
    _gaussian_case(sampler, proc, D)


@pytest.mark.parametrize(
    "proc", [FAST_PROCESS] + [pytest.param(p, marks=pytest.mark.slow) for p in PROCESSES if p != FAST_PROCESS]
)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_chain_law_is_close_to_the_target(sampler, proc):
    """Deterministic: the exact chain law at STEPS is within the stated bounds of the target's marginal at
    t_min, and doubling the steps shrinks its variance error at (at least roughly) first order. D = 16
    spans the same per-coordinate stds as every D here; coordinates do not interact."""
    sde, solver = _setup(sampler, proc)
    target = _gaussian(16)
    em, ev = _bias(sde, solver, target, 16, STEPS)
    em2, ev2 = _bias(sde, solver, target, 16, 2 * STEPS)
    assert em < MEAN_BIAS_BOUND and ev < VAR_BIAS_BOUND, (em, ev)
    assert ev2 <= HALVING_FACTOR * ev + PRIOR_FLOOR, (ev, ev2)
    assert em2 <= max(HALVING_FACTOR * em, PRIOR_FLOOR), (em, em2)


# ----------------------------------------------------------------------------- mixture target
def _mixture_case(sampler, proc, D, n=N_SAMPLES):
    sde, solver = _setup(sampler, proc)
    mix, u = _mixture(D)
    what = f"{sampler}/{proc}/D={D}"
    x = _draw(sde, solver, mix, n, D, _seed("mix", sampler, proc, D), steps=MIX_STEPS)
    hi = (x @ u) > 0  # the nearer of the modes -2u, +2u
    w = float(hi.double().mean())
    tol_w = Z * math.sqrt(0.7 * 0.3 / n) + WEIGHT_ALLOWANCE
    assert abs(w - 0.7) < tol_w, f"{what}: weight of the +2u mode {w:.4f} vs 0.7 (tol {tol_w:.4f})"
    t = torch.tensor(sde.t_min, dtype=F64)
    a, s = float(torch.exp(sde._log_alpha(t))), float(torch.exp(sde._log_sigma(t)))
    std_k = math.sqrt(a * a * 0.25 + s * s)  # each component's std at t_min
    for sign, sel in ((1.0, hi), (-1.0, ~hi)):
        xs = x[sel]
        nk = xs.shape[0]
        mu_k = sign * 2.0 * a * u
        tol = Z * std_k / math.sqrt(nk) + MEAN_ALLOWANCE * std_k
        err = (xs.mean(0) - mu_k).abs()
        assert bool((err < tol).all()), f"{what}: mode {sign:+.0f} mean error {float(err.max()):.4f} (tol {tol:.4f})"
        err_u = abs(float(xs.mean(0) @ u) - sign * 2.0 * a)
        assert err_u < tol, f"{what}: mode {sign:+.0f} mean along u off by {err_u:.4f} (tol {tol:.4f})"


@pytest.mark.parametrize("D", FAST_DIMS)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_mixture_law(sampler, D):
    _mixture_case(sampler, FAST_PROCESS, D)


@pytest.mark.slow
@pytest.mark.parametrize("sampler, proc, D", SLOW_CASES)
def test_mixture_law_all(sampler, proc, D):
    _mixture_case(sampler, proc, D)


# ----------------------------------------------------------------------------- the default predictor-corrector
# PredictorCorrector() (midpoint reverse diffusion + the Metropolis-adjusted Langevin corrector) is not an
# affine chain (accept/reject), so no closed form gives its law. Its corrector leaves every p_{t_i} of a
# Gaussian target exactly invariant (the Metropolis ratio is exact for quadratic log-densities: tested in
# test_predictor_corrector.py), so it adds no bias: the output law (denoise=False) is compared with the
# target's marginal at t_min within 5 standard errors plus the exact bias of the same predictor without a
# corrector (helpers.chain_moments; 0.07-0.13 % of the variance at 100 steps). The unadjusted corrector
# (ULA) with a large step fails the same check (negative control).
PC_STEPS = 100
PC_SAMPLES = 2000  # three network calls per step: a smaller sample than the others' to keep the suite fast


def _pc_case(proc, D, solver, n=PC_SAMPLES, seed_key="pc"):
    sde = PROCESSES[proc]()
    target = _gaussian(D)
    x = sd.sample(
        sde, target.model(sde), (n, D), solver=solver, steps=PC_STEPS, denoise=False,
        generator=torch.Generator().manual_seed(_seed(seed_key, proc, D)), dtype=F64,
    )  # fmt: skip
    grid = resolve_grid(None, sde, PC_STEPS, default="uniform")
    prior_var = torch.full((D,), float(sde.prior_std) ** 2, dtype=F64)
    alone = sd.PredictorCorrector(solver.predictor, None)
    m_p, v_p = chain_moments(alone, sde, target.model(sde), grid, torch.zeros(D, dtype=F64), prior_var, denoise=False)
    m0, v0 = target.marginal_moments(sde.t_min, sde)
    what = f"PredictorCorrector/{proc}/D={D}"
    check_moments(x, m0, v0, var_bias=(v_p - v0).abs(), mean_bias=(m_p - m0).abs(), check_cov=D <= 16, what=what)
    # pooled over the D coordinates: the variance ratio within 5 pooled standard errors plus the predictor's bias
    ratio = float((x.var(0) / v0).mean())
    allow = float(((v_p - v0).abs() / v0).max())
    tol = Z * math.sqrt(2.0 / (n * D)) + allow
    return ratio, tol, what


PC_CASES = [
    pytest.param(p, D, marks=() if (p == FAST_PROCESS and D in FAST_DIMS) else pytest.mark.slow)
    for p in ("vp", "subvp", "ve")
    for D in DIMS
]


@pytest.mark.parametrize("proc, D", PC_CASES)
def test_default_pc_gaussian_law(proc, D):
    ratio, tol, what = _pc_case(proc, D, sd.PredictorCorrector())
    assert abs(ratio - 1) < tol, f"{what}: pooled variance ratio {ratio:.4f} (tol {tol:.4f})"


@pytest.mark.parametrize("proc", ["vp", pytest.param("ve", marks=pytest.mark.slow)])
def test_pc_large_step_metropolis_law_and_ula_control(proc):
    """snr 0.8 (eps = 1.28 a^2 sigma^2, 25x the default step): the Metropolis-adjusted corrector keeps the
    law; the unadjusted one (metropolis=False) is rejected by the same pooled statistic (measured +4.4 % at
    snr 0.5 on VP; the excess grows like eps)."""
    mala = sd.PredictorCorrector(corrector=sd.LangevinCorrector(snr=0.8))
    ratio, tol, what = _pc_case(proc, 16, mala, seed_key="pc-large")
    assert abs(ratio - 1) < tol, f"{what}: pooled variance ratio {ratio:.4f} (tol {tol:.4f})"
    ula = sd.PredictorCorrector(corrector=sd.LangevinCorrector(snr=0.8, metropolis=False))
    ratio, tol, what = _pc_case(proc, 16, ula, seed_key="pc-large")
    assert ratio - 1 > tol, f"{what} (ULA): pooled variance ratio {ratio:.4f} not rejected (tol {tol:.4f})"


PC_MIX_CASES = [
    pytest.param(p, D, marks=() if (p == FAST_PROCESS and D == 2) else pytest.mark.slow)
    for p in ("vp", "subvp", "ve")
    for D in DIMS
]


@pytest.mark.parametrize("proc, D", PC_MIX_CASES)
def test_default_pc_mixture_law(proc, D):
    """The heavier mode's weight within 5 binomial SE plus WEIGHT_ALLOWANCE (the other samplers' measured
    bias at MIX_STEPS; the default sampler's measured weight errors are below 0.7 points at 100 steps,
    notes/langevin.md)."""
    sde = PROCESSES[proc]()
    mix, u = _mixture(D)
    n = PC_SAMPLES
    x = _draw(sde, sd.PredictorCorrector(), mix, n, D, _seed("pc-mix", proc, D), steps=PC_STEPS)
    w = float(((x @ u) > 0).double().mean())
    tol_w = Z * math.sqrt(0.7 * 0.3 / n) + WEIGHT_ALLOWANCE
    assert abs(w - 0.7) < tol_w, f"PredictorCorrector/{proc}/D={D}: weight {w:.4f} vs 0.7 (tol {tol_w:.4f})"
