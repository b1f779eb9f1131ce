"""DDIM and DDPM on every linear process, against exact answers.

* the step coefficients equal the papers' closed forms (Song et al. 2021 eq. 12 for VP; the
  forward posterior q(x_s | x_t, x_0) for VP and VE, written here independently);
* DDIM(eta=0) and the Euler step of the probability-flow ODE differ by O(h^2) per step (fitted slope);
* DDIM(eta=0) converges to the exact flow (``Gaussian.flow``) at order 1 (fitted slope);
* DDPM / DDIM(eta>0) sample the data law: Gaussian mean and covariance within 5 standard errors
  plus the sampler's exact discretization bias (moments propagated in closed form here), on VP, VE,
  VDM, cosine and discrete DDPM; a Gaussian mixture by an energy-distance permutation test;
* seeds, NFE counting, noise=False, bad input.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import FLOW_PROCESSES, TARGET_3D, fit_slope, tiny_unet

from sdesolve import (
    DDIM,
    DDPM,
    VESDE,
    VPSDE,
    CosineVPSDE,
    DiscreteVPSDE,
    GaussianMixture,
    ScoreModel,
    grids,
    sample,
)

SDES = FLOW_PROCESSES
TARGET = TARGET_3D
_fit_slope = fit_slope


def _coefs(sde, t):
    t = torch.as_tensor(t, dtype=torch.float64)
    return float(torch.exp(sde._log_alpha(t))), float(torch.exp(sde._log_sigma(t)))


class _FixedEps:
    """A stand-in model whose eps view returns a given tensor (to test one step's formula)."""

    def __init__(self, eps):
        self.e = eps

    def eps(self, x, t):
        return self.e


# ----------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("sde_name", ["VP", "discrete", "cosine"])
def test_ddim_step_is_song_et_al_eq12_on_vp(eta, sde_name):
    """x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - s_eta^2) eps + s_eta z,
    s_eta = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t / abar_s)."""
    sde = SDES[sde_name]()
    grid = grids.uniform(sde, 7)
    solver = DDIM(eta)
    c = solver.init(sde, grid)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    e = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for i in range(7):
        ab_t, ab_s = _coefs(sde, grid[i])[0] ** 2, _coefs(sde, grid[i + 1])[0] ** 2
        s_eta = eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_s)
        x0 = (x - math.sqrt(1 - ab_t) * e) / math.sqrt(ab_t)
        mean = math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s - s_eta**2) * e
        g1, g2 = torch.Generator().manual_seed(i), torch.Generator().manual_seed(i)
        out = solver.step(_FixedEps(e), {"x": x}, i, c, generator=g1, need_x0=True)
        z = torch.randn(x.shape, generator=g2, dtype=x.dtype)
        torch.testing.assert_close(out["x"], mean + s_eta * z, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out["x0"], x0, rtol=1e-12, atol=1e-12)
        mean_only = solver.step(_FixedEps(e), {"x": x}, i, c, generator=g1, noise=False)["x"]
        torch.testing.assert_close(mean_only, mean, rtol=1e-12, atol=1e-12)


def _posterior(sde, t, s):
    """q(x_s | x_t, x_0) = N(cx x_t + c0 x_0, var), from alpha, sigma (Kingma et al. 2021, app. A)."""
    a_t, s_t = _coefs(sde, t)
    a_s, s_s = _coefs(sde, s)
    a_ts = a_t / a_s
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    return a_ts * s_s**2 / s_t**2, a_s * s2_ts / s_t**2, s2_ts * s_s**2 / s_t**2, s2_ts


@pytest.mark.parametrize("variance", ["small", "large"])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_ddpm_step_is_the_forward_posterior(variance, sde_name):
    """DDPM samples q(x_s | x_t, x0_hat): mean cx x_t + c0 x0_hat, variance sigma~^2 (small) or
    sigma_{t|s}^2 (large); on VP this is Ho et al.'s (7); on VE, mean x0 + s^2/t^2 (x_t - x0)."""
    sde = SDES[sde_name]()
    grid = grids.log_snr(sde, 6)
    solver = DDPM(variance)
    c = solver.init(sde, grid)
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    e = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for i in range(6):
        cx, c0, var_small, var_large = _posterior(sde, grid[i], grid[i + 1])
        a_t, s_t = _coefs(sde, grid[i])
        x0 = (x - s_t * e) / a_t
        mean = cx * x + c0 * x0
        std = math.sqrt(var_small if variance == "small" else var_large)
        g1, g2 = torch.Generator().manual_seed(i), torch.Generator().manual_seed(i)
        out = solver.step(_FixedEps(e), {"x": x}, i, c, generator=g1)["x"]
        z = torch.randn(x.shape, generator=g2, dtype=x.dtype)
        torch.testing.assert_close(out, mean + std * z, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(solver.step(_FixedEps(e), {"x": x}, i, c, noise=False)["x"], mean)
        if sde_name == "VE":  # the textbook form for alpha = 1
            s2t, s2s = s_t**2, _coefs(sde, grid[i + 1])[1] ** 2
            torch.testing.assert_close(mean, x0 + s2s / s2t * (x - x0))


def test_ddim_eta0_on_ve_is_euler_in_sigma():
    """alpha = 1: x_s = x_t + (sigma_s - sigma_t) eps_hat (k-diffusion's sample_euler step)."""
    sde = VESDE()
    grid = grids.karras(sde, 5)
    c = DDIM().init(sde, grid)
    x = torch.randn(4, 2, dtype=torch.float64)
    e = torch.randn(4, 2, dtype=torch.float64)
    for i in range(5):
        ds = _coefs(sde, grid[i + 1])[1] - _coefs(sde, grid[i])[1]
        torch.testing.assert_close(DDIM().step(_FixedEps(e), {"x": x}, i, c)["x"], x + ds * e)


def test_ddpm_equals_ddim_eta1():
    sde = VPSDE()
    grid = grids.quadratic(sde, 9)
    a, b = DDPM().init(sde, grid), DDIM(1.0).init(sde, grid)
    for k in ("a", "b", "c"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-13, atol=1e-15)


def test_grid_ending_at_t0_returns_x0_hat():
    """On a process with sigma(0) = 0 (DiscreteVPSDE with t_min = 0) the step to t = 0 returns x0_hat."""
    sde = DiscreteVPSDE.from_schedule(t_min=0.0)
    grid = torch.tensor([0.5, 0.2, 0.0], dtype=torch.float64)
    model = TARGET.model(sde)
    x = TARGET.marginal_sample(8, 0.5, sde, generator=torch.Generator().manual_seed(0))
    # even with noise on the last step: the posterior variance vanishes at sigma_s = 0 (but not
    # DDPM("large")'s sigma_{t|s}^2, so that one takes its last step without noise, denoise=True)
    for solver in (DDIM(), DDIM(0.5), DDPM(), DDPM("large")):
        seen = []
        denoise = isinstance(solver, DDPM) and solver.variance == "large"
        out = sample(sde, model, x_T=x, solver=solver, grid=grid, callback=seen.append, denoise=denoise)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, seen[-1]["x0"])


# ----------------------------------------------------------------------------- orders
@pytest.mark.parametrize("sde_name", list(SDES))
def test_ddim_and_euler_probability_flow_agree_to_first_order(sde_name):
    """One step of size h from the same x: |DDIM(eta=0) - Euler on dx = (f x - g^2/2 s) dt| = O(h^2)."""
    sde = SDES[sde_name]()
    t0 = 0.5 * float(sde.T)
    x = TARGET.marginal_sample(64, t0, sde, generator=torch.Generator().manual_seed(0))
    model = TARGET.model(sde)
    hs, diffs = [0.04, 0.02, 0.01, 0.005, 0.0025], []
    for h in hs:
        grid = torch.tensor([t0, t0 - h], dtype=torch.float64)
        ddim = DDIM().solve(sde, model, x, grid)
        t = torch.tensor(t0, dtype=torch.float64)
        f, g2 = float(sde._f(t)), float(sde._g2(t))
        euler = x - h * (f * x - 0.5 * g2 * TARGET.marginal_score(x, t0, sde))
        diffs.append(float((ddim - euler).abs().max()))
    slope = _fit_slope(hs, diffs)
    assert 1.8 < slope < 2.25, (slope, diffs)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ddim_converges_to_exact_flow_at_order_1(sde_name):
    """Deterministic DDIM from x_T to t_min against ``Gaussian.flow`` (the exact probability-flow map)."""
    sde = SDES[sde_name]()
    model = TARGET.model(sde)
    T, t_min = float(sde.T), float(sde.t_min)
    x = TARGET.marginal_sample(64, T, sde, generator=torch.Generator().manual_seed(1))
    exact = TARGET.flow(x, T, t_min, sde)
    ns, errs = [25, 50, 100, 200, 400], []
    for n in ns:
        out = sample(sde, model, x_T=x, solver=DDIM(), steps=n)  # default (log-SNR) grid
        errs.append(float((out - exact).pow(2).mean().sqrt()))
    slope = _fit_slope([1.0 / n for n in ns], errs)
    assert 0.9 < slope < 1.1, (slope, errs)
    assert errs[-1] < 0.01 * float(x.std())


# ----------------------------------------------------------------------------- the data law
def _exact_law_after_sampler(sde, grid, eta_or_variance, target):
    """Mean and variance (per coordinate) of the sampler's output, in closed form.

    With the exact eps of a Gaussian law, eps(x) = sigma_t (x - alpha_t mu) / v_t with
    v_t = alpha_t^2 s^2 + sigma_t^2, every step is affine in x plus independent Gaussian noise;
    written here from the posterior / DDIM formulas in alpha and sigma, independently of the solver.
    Starts from the exact marginal at grid[0] and takes the last step without noise.
    """
    mu, s2 = target.mean, target.std**2
    a0, s0 = _coefs(sde, grid[0])
    m, v = a0 * mu, a0**2 * s2 + s0**2
    n = grid.numel() - 1
    for i in range(n):
        a_t, s_t = _coefs(sde, grid[i])
        a_s, s_s = _coefs(sde, grid[i + 1])
        vt = a_t**2 * s2 + s_t**2
        # x0_hat = p x + q
        p = (1 - s_t * s_t / vt) / a_t
        q = s_t * s_t * a_t * mu / vt / a_t
        cx, c0, var_small, var_large = _posterior(sde, grid[i], grid[i + 1])
        if isinstance(eta_or_variance, str):  # DDPM
            kx, k0 = cx, c0
            var = var_small if eta_or_variance == "small" else var_large
        else:  # DDIM(eta): alpha_s x0 + sqrt(s_s^2 - c^2) (x - a_t x0)/s_t + c z
            var = eta_or_variance**2 * var_small
            d = math.sqrt(max(s_s**2 - var, 0.0)) / s_t
            kx, k0 = d, a_s - d * a_t
        m = kx * m + k0 * (p * m + q)
        v = (kx + k0 * p) ** 2 * v + (var if i < n - 1 else 0.0)
    return m, v


def _check_gaussian_law(out, m, v, m_true, v_true):
    """Sample mean within 5 SE + |bias|, sample covariance within 5 SE + |bias| (diagonal) and 5 SE
    (off-diagonal, where the exact covariance is 0). That the bias vanishes as the steps grow is
    ``test_bias_vanishes_at_order_1``."""
    n = out.shape[0]
    x = out.to(torch.float64)
    mean, cov = x.mean(0), torch.cov(x.T)
    se_m = torch.sqrt(v / n)
    assert ((mean - m_true).abs() <= 5 * se_m + (m - m_true).abs()).all(), (mean, m, m_true)
    se_v = v * math.sqrt(2.0 / (n - 1))
    assert ((cov.diagonal() - v_true).abs() <= 5 * se_v + (v - v_true).abs()).all(), (cov.diagonal(), v, v_true)
    off = cov - torch.diag(cov.diagonal())
    se_off = torch.sqrt(v[:, None] * v[None, :] / n)
    assert (off.abs() <= 5 * se_off).all()


@pytest.mark.parametrize(
    "solver",
    [
        DDPM(),
        DDIM(1.0),
        pytest.param(DDPM("large"), marks=pytest.mark.slow),
        pytest.param(DDIM(0.5), marks=pytest.mark.slow),
    ],
    ids=repr,
)
@pytest.mark.parametrize("sde_name", list(SDES))
def test_stochastic_samplers_sample_the_gaussian_law(solver, sde_name):
    sde = SDES[sde_name]()
    model = TARGET.model(sde)
    steps, n = 100, 10000
    grid = grids.make_grid(solver.default_grid, sde, steps)
    x = TARGET.marginal_sample(n, float(grid[0]), sde, generator=torch.Generator().manual_seed(2))
    out = sample(sde, model, x_T=x, solver=solver, grid=grid, generator=torch.Generator().manual_seed(3))
    key = solver.variance if isinstance(solver, DDPM) else solver.eta
    m, v = _exact_law_after_sampler(sde, grid, key, TARGET)
    m_true, v_true = TARGET.marginal_moments(float(grid[-1]), sde)
    _check_gaussian_law(out, m, v, m_true, v_true)


@pytest.mark.parametrize("key", ["small", "large", 1.0, 0.5])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_bias_vanishes_at_order_1(sde_name, key):
    """The exact output law of DDPM / DDIM(eta) (closed-form moments, the same recursion the sampling
    tests use) tends to the data law at order 1 in 1/steps, on each solver's default grid."""
    sde = SDES[sde_name]()
    solver = DDPM(key) if isinstance(key, str) else DDIM(key)
    ns, errs = [40, 80, 160, 320], []
    for n in ns:
        grid = grids.make_grid(solver.default_grid, sde, n)
        m, v = _exact_law_after_sampler(sde, grid, key, TARGET)
        m_true, v_true = TARGET.marginal_moments(float(grid[-1]), sde)
        errs.append(float(torch.cat([(m - m_true).abs() / v_true.sqrt(), (v / v_true - 1).abs()]).max()))
    slope = _fit_slope([1.0 / n for n in ns], errs)
    assert 0.85 < slope < 1.15, (slope, errs)
    assert all(a > b for a, b in zip(errs, errs[1:]))  # (at 320 steps: <= 0.048 on every process)


def _energy_z(x, y, n_perm=400, seed=0):
    """Energy distance of two equal-size samples (Szekely & Rizzo 2004) as a z-score under its
    permutation null: (E - mean of permuted E) / std of permuted E. The null is the sample-size
    dependent spread of the statistic when both samples come from one law."""
    z = torch.cat([x, y]).to(torch.float64)
    d = torch.cdist(z, z)
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.arange(2 * n)] + [torch.randperm(2 * n, generator=g) for _ in range(n_perm)])
    lab = torch.zeros(perms.shape[0], 2 * n, dtype=torch.float64)
    lab.scatter_(1, perms[:, :n], 1.0)  # 1 = "first sample" under each labelling
    dl, dr = lab @ d, (1 - lab) @ d
    xy = (dl * (1 - lab)).sum(1) / n**2
    xx = (dl * lab).sum(1) / n**2
    yy = (dr * (1 - lab)).sum(1) / n**2
    e = 2 * xy - xx - yy
    return float((e[0] - e[1:].mean()) / e[1:].std())


MIX = GaussianMixture([0.3, 0.7], torch.tensor([[-1.5, 0.5], [1.0, -0.5]]), torch.tensor([0.3, 0.5]))


def _mixture_case(sde_name, solver, n=1000, steps=200):
    sde = SDES[sde_name]()
    grid = grids.make_grid(solver.default_grid, sde, steps)
    x = MIX.marginal_sample(n, float(grid[0]), sde, generator=torch.Generator().manual_seed(4))
    out = sample(sde, MIX.model(sde), x_T=x, solver=solver, grid=grid, generator=torch.Generator().manual_seed(5))
    ref = MIX.marginal_sample(n, float(grid[-1]), sde, generator=torch.Generator().manual_seed(6))
    return out, ref


def test_energy_test_has_power():
    """Negative controls at the sample size used: the test rejects the mixture with weights 0.4 / 0.6
    instead of 0.3 / 0.7, and DDPM with only 5 steps."""
    sde = VPSDE()
    wrong = GaussianMixture([0.4, 0.6], MIX.means, MIX.stds[:, 0])
    x = wrong.marginal_sample(1000, float(sde.t_min), sde, generator=torch.Generator().manual_seed(7))
    ref = MIX.marginal_sample(1000, float(sde.t_min), sde, generator=torch.Generator().manual_seed(6))
    assert _energy_z(x, ref) > 5.0
    out, ref = _mixture_case("VP", DDPM(), steps=5)
    assert _energy_z(out, ref) > 5.0


def test_ddpm_samples_the_mixture_vp():
    out, ref = _mixture_case("VP", DDPM())
    assert _energy_z(out, ref) < 5.0


@pytest.mark.slow
@pytest.mark.parametrize("solver", [DDPM(), DDIM(1.0)], ids=repr)
@pytest.mark.parametrize("sde_name", list(SDES))
def test_stochastic_samplers_sample_the_mixture(solver, sde_name):
    out, ref = _mixture_case(sde_name, solver, n=1500)
    assert _energy_z(out, ref) < 5.0


# ----------------------------------------------------------------------------- plumbing
@pytest.mark.parametrize("solver", [DDIM(), DDIM(0.7), DDPM()], ids=repr)
def test_same_seed_same_samples(solver):
    sde = VPSDE()
    model = TARGET.model(sde)

    def draw(seed):
        return sample(sde, model, (16, 3), solver=solver, steps=10, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


@pytest.mark.parametrize("solver", [DDIM(), DDIM(0.3), DDPM(), DDPM("large")], ids=repr)
@pytest.mark.parametrize("steps", [1, 2, 7, 30])
def test_nfe_count(solver, steps):
    sde = DiscreteVPSDE.from_schedule()
    model = ScoreModel(lambda x, k: 0.1 * x, sde, prediction="eps")
    sample(sde, model, (4, 2), solver=solver, steps=steps, generator=torch.Generator().manual_seed(0))
    assert model.nfe == solver.nfe(steps) == steps


def test_denoise_last_step_has_no_noise():
    """denoise=True: the last step returns the mean, so a 1-step solve is deterministic given x_T."""
    sde = VPSDE()
    model = TARGET.model(sde)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    for solver in (DDPM(), DDIM(1.0)):
        a = sample(sde, model, x_T=x, solver=solver, steps=1, generator=torch.Generator().manual_seed(1))
        b = sample(sde, model, x_T=x, solver=solver, steps=1, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, b)
        c = sample(sde, model, x_T=x, solver=solver, steps=1, denoise=False, generator=torch.Generator().manual_seed(2))
        assert not torch.equal(a, c)


def test_float32_and_float64_agree():
    sde = CosineVPSDE()
    model = TARGET.model(sde)
    x = TARGET.marginal_sample(32, float(sde.T), sde, generator=torch.Generator().manual_seed(0))
    out64 = sample(sde, model, x_T=x, solver=DDIM(), steps=20)
    out32 = sample(sde, model, x_T=x.float(), solver=DDIM(), steps=20)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="eta"):
        DDIM(-0.1)
    with pytest.raises(ValueError, match="eta"):
        DDIM(1.5)
    with pytest.raises(ValueError, match="eta"):
        DDIM(float("nan"))
    with pytest.raises(TypeError, match="eta"):
        DDIM("0.5")
    with pytest.raises(TypeError, match="eta"):
        DDIM(True)
    with pytest.raises(ValueError, match="variance"):
        DDPM("fixed_small")
    assert DDIM().stochastic is False and DDIM(0.2).stochastic is True and DDPM().stochastic is True


def test_numpy_scalars_and_strings_are_accepted():
    """Issue 12: numpy scalars count as numbers; the stored values are plain Python ones."""
    np = pytest.importorskip("numpy")
    assert DDIM(eta=np.float32(0.5)).eta == 0.5 and type(DDIM(eta=np.float32(0.5)).eta) is float
    assert DDIM(np.int64(1)).eta == 1.0 and DDIM(torch.tensor(0.25)).eta == 0.25
    assert type(DDPM(variance=np.str_("large")).variance) is str


# ----------------------------------------------------------------------------- sigma = 0 at the end
@pytest.mark.parametrize("solver", [DDIM(), DDIM(0.5), DDPM()], ids=repr)
def test_step_into_sigma_zero_never_evaluates_there(solver):
    """Issue 14: a grid ending at t = 0 where sigma = 0 (DiscreteVPSDE(t_min=0), diffusers'
    set_alpha_to_one) with the default grid: finite coefficients, no model call at sigma = 0, and the
    last step returns alpha(0) x0_hat = x0_hat exactly (c = 0 there, even with eta > 0)."""
    sde = DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    seen = []

    def eps_net(x, t):
        seen.append(t.clone())
        return torch.tanh(x + t[:, None])

    coefs = solver.init(sde, grids.uniform(sde, 10))
    assert all(bool(torch.isfinite(v).all()) for k, v in coefs.items() if isinstance(v, torch.Tensor))
    assert float(coefs["c"][-1]) == 0.0
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = []
    out = sample(
        sde,
        ScoreModel(eps_net, sde, time_input=lambda t: t),
        x_T=x,
        solver=solver,
        steps=10,
        generator=torch.Generator().manual_seed(1),
        callback=steps.append,
    )
    assert steps[-1]["t_next"] == 0.0 and float(sde.sigma(0.0)) == 0.0
    assert min(float(t.min()) for t in seen) > 0.0
    torch.testing.assert_close(out, steps[-1]["x0"], rtol=1e-14, atol=1e-14)


# ----------------------------------------------------------------------------- a real network, half precision
@pytest.fixture(scope="module")
def unet3():
    pytest.importorskip("diffusers")
    return tiny_unet(channels=3, widths=(16, 32))


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_half_precision_ddim_matches_diffusers_with_a_unet(unet3, dtype):
    """Issues 8.4 and 14. A tiny random diffusers UNet2DModel in bf16 / fp16 / fp32, 10 DDIM steps on
    diffusers' own schedule (trailing spacing: timesteps 999, 899, ..., 99, then alpha = 1 by
    set_alpha_to_one) against DDIMScheduler, teacher-forced: from each of our states, one diffusers step.

    * the network receives its time in float32 and exactly diffusers' integer timestep (bf16 used to
      round 999 to 1000 and 899 to 900, moving the UNet's output by about 4 %), so from the same
      state the two network outputs are bit-identical;
    * one step agrees within 4 units of the dtype's epsilon times the step's largest term: both sides
      form x_s from x and eps in the dtype with coefficients rounded to it (at most about 2 ulps
      each; measured: 2.0);
    * the last step, into sigma = 0, needs no network call at t = 0.
    The free-running chains are not compared in bf16: rounding the state to 2^-8 every step walks
    them apart by about 3 % whatever the implementation (diffusers itself is 2 % from its float64 run)."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(
        beta_schedule="linear", clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing"
    )
    sched.set_timesteps(10)
    sde = DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod.double(), t_min=0.0)
    grid = torch.cat([sde.timestep_to_t(sched.timesteps.double()), torch.zeros(1, dtype=torch.float64)])
    unet = unet3.to(dtype)
    calls = []

    def net(x, t):
        calls.append((x, t))
        return unet(x, t).sample

    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    ours = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: two threads only contend (20x slower on a busy machine)
    try:
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):  # oneDNN's CPU bf16 path: 100x slower
            _compare_with_diffusers(sde, sched, grid, unet, net, calls, x_T, ours, dtype)
    finally:
        torch.set_num_threads(threads)


def _compare_with_diffusers(sde, sched, grid, unet, net, calls, x_T, ours, dtype):
    sample(sde, ScoreModel(net, sde), x_T=x_T, solver=DDIM(), grid=grid, callback=lambda d: ours.append(d["x"]))
    assert len(calls) == 10 and [float(t[0]) for _, t in calls] == [float(k) for k in sched.timesteps]
    assert all(t.dtype == torch.float32 for _, t in calls)
    eps_dtype = torch.finfo(dtype).eps
    for i, k in enumerate(sched.timesteps):
        x, t = calls[i]
        eps = unet(x, k).sample  # diffusers' call: the integer timestep
        assert torch.equal(eps, unet(x, t).sample)
        theirs = sched.step(eps, k, x).prev_sample
        scale = max(float(x.abs().max()), float(eps.abs().max()), float(theirs.abs().max()))
        err = float((theirs.double() - ours[i].double()).abs().max())
        assert err <= 4 * eps_dtype * scale, (i, err / (eps_dtype * scale))


def test_solver_repr_names_the_public_fields_in_order():
    """``Solver.__repr__`` (inherited by DDIM, DDPM, PLMS, ...): the class name and its public
    attributes as ``name=repr(value)`` in assignment order, private ones (``_...``) left out."""
    from sdesolve.solvers.base import Solver

    class Probe(Solver):
        def __init__(self):
            self.eta, self.variance, self._cache = 0.5, "large", {"hidden": 1}

    assert repr(Probe()) == "Probe(eta=0.5, variance='large')"
    assert repr(Solver()) == "Solver()"
    assert repr(DDIM(eta=0.25)) == "DDIM(eta=0.25)" and repr(DDPM("large")) == "DDPM(variance='large')"
