"""Predictor–corrector samplers (Song et al. 2021, Alg. 1–3) against exact answers.

For a Gaussian target the score is linear, so every predictor (and the annealed corrector) makes
the sampler an affine-Gaussian Markov chain whose law at any step count is computed exactly by
``helpers.chain_moments`` from the solver's own step. Two facts are then tested separately:
(1) the samples follow that exact chain law (mean, variance, covariance within 5 standard
errors), (2) the chain law converges to the target marginal at t_min at weak order 1.
The Langevin corrector's norm-based step is not affine; its stationary law is derived below.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import MIXTURE_2D, TARGET_2D, chain_moments, check_moments, loglog_slope, mmd_two_sample
from helpers import PROCESSES as _PROCESSES

import sdesolve as sd
from sdesolve.solvers.predictor_corrector import (
    AncestralPredictor,
    AnnealedLangevinCorrector,
    EulerMaruyamaPredictor,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusionPredictor,
)

TARGET = TARGET_2D

PROCESSES = dict(_PROCESSES)
PREDICTORS = {
    "rd": lambda: ReverseDiffusionPredictor(),
    "em": lambda: EulerMaruyamaPredictor(),
    "ancestral": lambda: AncestralPredictor(),
    "rd_pf": lambda: ReverseDiffusionPredictor(probability_flow=True),
    "em_pf": lambda: EulerMaruyamaPredictor(probability_flow=True),
}
CORRECTORS = {"none": lambda: None, "annealed": lambda: AnnealedLangevinCorrector(snr=0.16, n_steps=1)}


def _applies(pred, sde):
    try:
        pred.check(sde)
    except ValueError:
        return False
    return True


def _sample_vs_chain(proc, pred, corr, steps, n, seed):
    sde = PROCESSES[proc]()
    solver = PredictorCorrector(PREDICTORS[pred](), CORRECTORS[corr]())
    if not _applies(solver.predictor, sde):
        pytest.skip("AncestralPredictor does not apply to this process (tested in test_ancestral_rejects)")
    model = TARGET.model(sde)
    gen = torch.Generator().manual_seed(seed)
    x_T = TARGET.marginal_sample(n, sde.T, sde, generator=gen)  # exact p_T: no prior mismatch
    x = sd.sample(sde, model, x_T=x_T, solver=solver, steps=steps, generator=gen)
    m_T, v_T = TARGET.marginal_moments(sde.T, sde)
    m, v = chain_moments(solver, sde, model, sd.grids.uniform(sde, steps), m_T, v_T)
    check_moments(x, m, v, what=f"{proc}/{pred}/{corr}")


# a fast cover of every process and every predictor; the full matrix is slow
FAST = [
    ("vp", "rd", "annealed"),
    ("subvp", "em", "none"),
    ("ve", "ancestral", "annealed"),
    ("vdm", "rd_pf", "annealed"),
    ("cosine", "ancestral", "none"),
    ("discrete", "em_pf", "annealed"),
]


@pytest.mark.parametrize("proc,pred,corr", FAST)
def test_samples_follow_exact_chain_law(proc, pred, corr):
    _sample_vs_chain(proc, pred, corr, steps=30, n=3000, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("corr", list(CORRECTORS))
@pytest.mark.parametrize("pred", list(PREDICTORS))
@pytest.mark.parametrize("proc", list(PROCESSES))
def test_samples_follow_exact_chain_law_all(proc, pred, corr):
    _sample_vs_chain(proc, pred, corr, steps=100, n=20000, seed=2)


def _chain_error(proc, pred, corr, steps):
    sde = PROCESSES[proc]()
    solver = PredictorCorrector(PREDICTORS[pred](), CORRECTORS[corr]())
    model = TARGET.model(sde)
    m_T, v_T = TARGET.marginal_moments(sde.T, sde)
    m, v = chain_moments(solver, sde, model, sd.grids.uniform(sde, steps), m_T, v_T)
    m0, v0 = TARGET.marginal_moments(sde.t_min, sde)
    # weak error of E[x] (in units of the target std) and of Var[x] (relative)
    return float(torch.maximum((m - m0).abs() / v0.sqrt(), (v - v0).abs() / v0).max())


# Measured exceptions to weak order 1: Euler-Maruyama on VE (f = 0) with a Gaussian target keeps the
# mean exact and its O(h) variance term cancels, so the order is 2 (see test_euler_maruyama.py).
_ORDER = {("ve", "em"): 2.0}


def _check_weak_order(proc, pred, corr, steps=(60, 120, 240), bound_at_last=0.25):
    sde = PROCESSES[proc]()
    if not _applies(PREDICTORS[pred](), sde):
        pytest.skip("AncestralPredictor does not apply to this process")
    errs = [_chain_error(proc, pred, corr, n) for n in steps]
    slope = loglog_slope(steps, errs)
    order = _ORDER.get((proc, pred), 1.0)
    assert errs[-1] < bound_at_last, (errs, slope)
    assert order - 0.2 < slope < order + 0.3, f"{proc}/{pred}/{corr}: errors {errs}, slope {slope:.3f} (order {order})"


@pytest.mark.parametrize("pred", ["rd", "ancestral"])
def test_exact_chain_law_converges_at_order_one_vp(pred):
    _check_weak_order("vp", pred, "none")


@pytest.mark.slow
@pytest.mark.parametrize("pred", list(PREDICTORS))
@pytest.mark.parametrize("proc", list(PROCESSES))
def test_exact_chain_law_converges_at_order_one_all(proc, pred):
    # reverse diffusion's probability flow on the cosine process is far from asymptotic below 400
    # steps (errors 1.6, 1.0, 0.55 at 100, 200, 400; 0.55, 0.29, 0.15 at 400, 800, 1600)
    steps = (400, 800, 1600) if (proc, pred) == ("cosine", "rd_pf") else (100, 200, 400)
    _check_weak_order(proc, pred, "none", steps=steps, bound_at_last=0.25)


@pytest.mark.slow
@pytest.mark.parametrize("proc", list(PROCESSES))
def test_annealed_corrector_chain_converges(proc):
    """With the annealed corrector the chain law still converges to the target (bias shrinks with N)."""
    errs = [_chain_error(proc, "rd", "annealed", n) for n in (100, 200, 400)]
    assert errs[2] < errs[1] < errs[0] and errs[2] < 0.05, errs


# --------------------------------------------------------------------------- Langevin correctors
def _isotropic(D, mean=0.7, std=0.8):
    return sd.Gaussian(torch.full((D,), mean), torch.full((D,), std))


def _run_corrector(corrector, sde, target, t, n, k_steps, seed, t_next=None):
    """Apply the corrector k_steps times at the fixed time t (a 1-step grid from t), from exact p_t."""
    grid = torch.tensor([t, t / 2 if t_next is None else t_next], dtype=torch.float64)
    coeffs = corrector.init(sde, grid)
    c = {"t": grid[:1]} | {"c_" + k: v for k, v in coeffs.items()}
    gen = torch.Generator().manual_seed(seed)
    x = target.marginal_sample(n, t, sde, generator=gen)
    model = target.model(sde)
    for _ in range(k_steps):
        x = corrector(model, x, 0, c, generator=gen)
    return x, coeffs


@pytest.mark.parametrize("proc", ["vp", "ve"])
def test_langevin_snr_rule_stationary_variance(proc):
    """ULA with the per-sample rule eps = k ||z||^2 / ||s||^2, k = 2 a^2 r^2, on N(mu, v I) in D dims.

    With s = -(x - mu)/v, u = ||x - mu||^2: u' = u (1 - eps/v)^2 + 2 eps ||z||^2 + (zero-mean cross term),
    eps u / v = k v ||z||^2. At stationarity E[u'] = E[u] gives 2 k v D = (2k + k^2) v^2 (D^2 + 2D) E[1/u],
    with u ~ V chi^2_D, E[1/u] = 1 / (V (D - 2)), so V = v (1 + a^2 r^2) (D + 2) / (D - 2).
    A rule with a doubled step (v (1 + 2 a^2 r^2)) or no correction (v) is rejected."""
    sde = PROCESSES[proc]()
    D, n, r, t = 128, 200, 0.5, 0.5
    target = _isotropic(D)
    x, coeffs = _run_corrector(LangevinCorrector(snr=r, n_steps=1), sde, target, t, n, 40, seed=0, t_next=0.49)
    a2r2 = float(coeffs["two_alpha_snr2"][0]) / 2
    m_t, v_t = target.marginal_moments(t, sde)
    v = float(v_t[0])
    ratio = float(x.var(0).mean()) / v
    expected = (1.0 + a2r2) * (D + 2) / (D - 2)
    tol = 5 * math.sqrt(2.0 / (n * D)) * expected + 1.0 / D
    assert abs(ratio - expected) < tol, (ratio, expected)
    assert abs(ratio - 1.0) > 2 * tol and abs(ratio - (1 + 2 * a2r2)) > 2 * tol
    assert float((x.mean() - m_t.mean()).abs()) < 5 * math.sqrt(v * expected / (n * D))


def test_annealed_langevin_stationary_variance():
    """Annealed step eps = 2 a^2 (r sigma_t)^2 is fixed: ULA's stationary variance is v / (1 - eps / (2 v))."""
    sde = sd.VESDE()
    D, n, r, t = 32, 500, 0.5, 0.3
    target = _isotropic(D)
    x, coeffs = _run_corrector(AnnealedLangevinCorrector(snr=r, n_steps=1), sde, target, t, n, 60, seed=1)
    eps = float(coeffs["eps"][0])
    assert eps == pytest.approx(2 * (r * float(sde.sigma(t))) ** 2, rel=1e-12)  # a = 1 for VE
    v = float(target.marginal_moments(t, sde)[1][0])
    expected = 1.0 / (1.0 - eps / (2 * v))
    ratio = float(x.var(0).mean()) / v
    assert abs(ratio - expected) < 5 * math.sqrt(2.0 / (n * D)), (ratio, expected)


def test_langevin_norms_are_per_sample():
    """Scaling one sample's score must not change another sample's step (score_sde's batch mean would)."""
    sde = sd.VPSDE()
    corr = LangevinCorrector(snr=0.16, n_steps=1)
    grid = torch.tensor([0.5, 0.4], dtype=torch.float64)
    c = {"t": grid[:1]} | {"c_" + k: v for k, v in corr.init(sde, grid).items()}
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def score(scale):
        return lambda y, t: -y * torch.tensor([[1.0], [scale]], dtype=y.dtype)

    y1 = corr(sd.model.as_model(score(1.0), sde), x, 0, c, generator=torch.Generator().manual_seed(5))
    y2 = corr(sd.model.as_model(score(100.0), sde), x, 0, c, generator=torch.Generator().manual_seed(5))
    assert torch.equal(y1[0], y2[0]) and not torch.allclose(y1[1], y2[1])


@pytest.mark.slow
@pytest.mark.parametrize("pred", ["rd", "em", "ancestral"])
@pytest.mark.parametrize("proc", ["vp", "ve", "discrete"])
def test_langevin_pc_samples_isotropic_gaussian(proc, pred):
    """Full PC with the default LangevinCorrector (snr 0.16) on a 32-dim Gaussian: mean within 5 SE plus
    the predictor chain's exact bias; variance additionally within the corrector's stationary
    inflation derived in test_langevin_snr_rule_stationary_variance, (1 + a^2 r^2)(D + 2)/(D - 2) - 1
    with a^2 <= 1 (16 % at D = 32: the snr rule's norms fluctuate in few dimensions)."""
    sde = PROCESSES[proc]()
    D, n, steps, r = 32, 2000, 200, 0.16
    target = _isotropic(D)
    solver = PredictorCorrector(PREDICTORS[pred](), LangevinCorrector(snr=r, n_steps=1))
    gen = torch.Generator().manual_seed(3)
    x = sd.sample(
        sde,
        target.model(sde),
        x_T=target.marginal_sample(n, sde.T, sde, generator=gen),
        solver=solver,
        steps=steps,
        generator=gen,
    )
    m_T, v_T = target.marginal_moments(sde.T, sde)
    pred_only = PredictorCorrector(PREDICTORS[pred](), None)
    m_c, v_c = chain_moments(pred_only, sde, target.model(sde), sd.grids.uniform(sde, steps), m_T, v_T)
    m0, v0 = target.marginal_moments(sde.t_min, sde)
    check_moments(
        x,
        m0,
        v0,
        mean_bias=(m_c - m0),
        var_bias=(v_c - v0).abs() + ((1 + r * r) * (D + 2) / (D - 2) - 1) * v0,
        check_cov=False,
        what=proc,
    )


def test_default_and_nfe_per_step():
    pc = PredictorCorrector()
    assert isinstance(pc.predictor, ReverseDiffusionPredictor) and isinstance(pc.corrector, LangevinCorrector)
    assert pc.nfe_per_step == 2 and pc.stochastic
    sde = sd.VPSDE()
    solver = PredictorCorrector(EulerMaruyamaPredictor(), LangevinCorrector(n_steps=3))
    model = TARGET.model(sde)
    sd.sample(sde, model, (5, 2), solver=solver, steps=7, generator=torch.Generator().manual_seed(0))
    assert solver.nfe_per_step == 4 and model.nfe == 4 * 7 == solver.nfe(7)
    assert not PredictorCorrector(ReverseDiffusionPredictor(probability_flow=True), None).stochastic


def test_probability_flow_predictor_is_deterministic_and_first_order():
    """pf predictors without a corrector are fixed maps of x_T; they approach the exact flow at order 1."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x_T = TARGET.marginal_sample(50, sde.T, sde, generator=torch.Generator().manual_seed(0))
    exact = TARGET.flow(x_T, sde.T, sde.t_min, sde)
    for pred in (EulerMaruyamaPredictor(probability_flow=True), ReverseDiffusionPredictor(probability_flow=True)):
        solver = PredictorCorrector(pred, None)
        a = sd.sample(sde, model, x_T=x_T, solver=solver, steps=40, generator=torch.Generator().manual_seed(1))
        b = sd.sample(sde, model, x_T=x_T, solver=solver, steps=40, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, b)
        errs = [
            float((sd.sample(sde, model, x_T=x_T, solver=solver, steps=n) - exact).abs().max()) for n in (50, 100, 200)
        ]
        assert 0.85 < loglog_slope((50, 100, 200), errs) < 1.2, errs


def test_denoise_returns_the_predictor_mean():
    """denoise=True drops exactly the last predictor noise: the difference is G_last z, z ~ N(0, I)."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    solver = PredictorCorrector(ReverseDiffusionPredictor(), None)
    x_T = TARGET.marginal_sample(4000, sde.T, sde, generator=torch.Generator().manual_seed(0))
    steps = 20
    a = sd.sample(sde, model, x_T=x_T, solver=solver, steps=steps, generator=torch.Generator().manual_seed(1))
    b = sd.sample(
        sde, model, x_T=x_T, solver=solver, steps=steps, generator=torch.Generator().manual_seed(1), denoise=False
    )
    G_last = float(solver.predictor.init(sde, sd.grids.uniform(sde, steps))["noise"][-1])
    d = (b - a).reshape(-1)
    assert abs(float(d.mean())) < 5 * G_last / math.sqrt(d.numel())
    assert abs(float(d.std()) / G_last - 1) < 5 * math.sqrt(1 / (2 * d.numel()))


@pytest.mark.parametrize("proc", ["subvp"])
def test_ancestral_rejects(proc):
    sde = PROCESSES[proc]()
    with pytest.raises(ValueError, match="AncestralPredictor applies to variance-preserving"):
        sd.sample(sde, TARGET.model(sde), (4, 2), solver=PredictorCorrector(AncestralPredictor(), None), steps=5)


def test_ancestral_formulas_match_ddpm_and_smld():
    """On the discrete DDPM grid, beta_i is the schedule's beta; on VE the noise is the SMLD posterior std."""
    sde = sd.DiscreteVPSDE.from_schedule("linear", 1000)
    k = torch.arange(999, -1, -1)
    grid = torch.cat([sde.timestep_to_t(k), torch.zeros(1, dtype=torch.float64)])
    grid = grid[:-1]  # 1000 knots (t = 1 ... 1/N): 999 intervals
    c = AncestralPredictor().init(sde, grid)
    betas = 1 - sde.alphas_cumprod[1:] / sde.alphas_cumprod[:-1]
    assert torch.allclose(c["noise"] ** 2, betas.flip(0), rtol=1e-10)
    ve = sd.VESDE()
    g = sd.grids.uniform(ve, 10)
    c = AncestralPredictor().init(ve, g)
    s, sn = ve.sigma(g[:-1]), ve.sigma(g[1:])
    assert torch.allclose(c["noise"], torch.sqrt(sn**2 * (s**2 - sn**2) / s**2), rtol=1e-12)
    assert torch.allclose(c["score"], s**2 - sn**2, rtol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="snr"):
        LangevinCorrector(snr=-1.0)
    with pytest.raises(ValueError, match="n_steps"):
        LangevinCorrector(n_steps=0)
    with pytest.raises(ValueError, match="n_steps"):
        AnnealedLangevinCorrector(0.1, 1.5)
    with pytest.raises(TypeError, match="predictor"):
        PredictorCorrector("reverse_diffusion")
    with pytest.raises(TypeError, match="corrector"):
        PredictorCorrector(ReverseDiffusionPredictor(), "langevin")
    with pytest.raises(TypeError, match="probability_flow"):
        EulerMaruyamaPredictor(probability_flow="yes")


# --------------------------------------------------------------------------- a mixture target
MIXTURE = MIXTURE_2D


@pytest.mark.parametrize(
    "proc,pred,corr",
    [
        ("vp", "rd", "annealed"),
        pytest.param("ve", "ancestral", "none", marks=pytest.mark.slow),
        pytest.param("subvp", "em", "none", marks=pytest.mark.slow),
        pytest.param("cosine", "ancestral", "annealed", marks=pytest.mark.slow),
        pytest.param("vdm", "rd", "none", marks=pytest.mark.slow),
        pytest.param("discrete", "em", "annealed", marks=pytest.mark.slow),
    ],
)
def test_mixture_two_sample(proc, pred, corr):
    sde = PROCESSES[proc]()
    n = 1500
    solver = PredictorCorrector(PREDICTORS[pred](), CORRECTORS[corr]())
    gen = torch.Generator().manual_seed(7)
    x_T = MIXTURE.marginal_sample(n, sde.T, sde, generator=gen)
    x = sd.sample(sde, MIXTURE.model(sde), x_T=x_T, solver=solver, steps=200, generator=gen)
    ref = MIXTURE.marginal_sample(n, sde.t_min, sde, generator=gen)
    mmd, thr = mmd_two_sample(x, ref)
    assert mmd < thr, (mmd, thr)


def test_mixture_statistic_detects_a_wrong_law():
    """Negative control: the same statistic and threshold reject a sampler with too few steps."""
    sde = sd.VPSDE()
    n = 1500
    gen = torch.Generator().manual_seed(8)
    x_T = MIXTURE.marginal_sample(n, sde.T, sde, generator=gen)
    solver = PredictorCorrector(ReverseDiffusionPredictor(probability_flow=True), None)
    x = sd.sample(sde, MIXTURE.model(sde), x_T=x_T, solver=solver, steps=5, generator=gen)
    mmd, thr = mmd_two_sample(x, MIXTURE.marginal_sample(n, sde.t_min, sde, generator=gen))
    assert mmd > thr, (mmd, thr)
