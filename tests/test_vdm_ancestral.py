"""VDMAncestral: the ancestral (DDPM posterior) sampler of VDM, checked against exact answers.

* one step equals the posterior q(z_s | z_t, x0 = x_hat) written out independently here
  (DDPM's eq. 6-7 in alpha/sigma form), on every linear process;
* a full loop equals diffusers' DDPMScheduler (fixed_small variance) on a discrete DDPM schedule;
* for a Gaussian target the chain is affine: its exact law is propagated through the
  implementation's own steps, the empirical moments of samples match it within standard errors,
  and it converges to the data law at weak order 1 (log-log slope);
* samples of a Gaussian and of a Gaussian mixture match the data law (moments within 5
  standard errors; Kolmogorov-Smirnov distance below its critical value at the sample size).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import check_x0_preview_only_when_asked, fit_slope, processes
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import sdesolve as sd
from sdesolve.solvers.base import _to_device
from sdesolve.solvers.vdm_ancestral import ancestral_mean_from_x0

F64 = torch.float64


def _processes():
    vp_t0 = processes("vp", t_min=0.0)["vp"]
    return {**processes("vdm", "vp"), "vp_t0": vp_t0, **processes("cosine", "discrete", "subvp", "ve")}


def _posterior(sde, t: float, s: float, x: torch.Tensor, x0: torch.Tensor):
    """Mean and variance of q(z_s | z_t = x, x0), from the transition z_t | z_s ~ N(a_ts z_s, v_ts)."""
    a_t, s_t = float(sde.alpha(t)), float(sde.sigma(t))
    a_s, s_s = float(sde.alpha(s)), float(sde.sigma(s))
    a_ts = a_t / a_s
    v_ts = s_t**2 - a_ts**2 * s_s**2
    mean = a_ts * s_s**2 / s_t**2 * x + a_s * v_ts / s_t**2 * x0
    var = v_ts * s_s**2 / s_t**2
    return mean, var


@pytest.mark.parametrize("name", list(_processes()))
def test_step_is_the_ddpm_posterior(name):
    sde = _processes()[name]
    target = sd.Gaussian(torch.tensor([0.7, -1.2, 0.1]), torch.tensor([0.5, 1.5, 1.0]))
    model = target.model(sde)
    solver = sd.VDMAncestral()
    # a non-uniform grid from T down to t_min (0 for "vp_t0" and "vdm")
    u = torch.tensor([1.0, 0.93, 0.7, 0.41, 0.2, 0.05, 0.0], dtype=F64)
    grid = sde.t_min + (sde.T - sde.t_min) * u
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * 2.0
    coefs = _to_device(solver.init(sde, grid), x)
    for i in range(grid.numel() - 1):
        t, s = float(grid[i]), float(grid[i + 1])
        eps = model.eps(x, t)
        x0 = (x - float(sde.sigma(t)) * eps) / float(sde.alpha(t))
        mean, var = _posterior(sde, t, s, x, x0)
        gen = torch.Generator().manual_seed(10 + i)
        out = solver.step(model, {"x": x}, i, coefs, generator=gen, noise=True, need_x0=True)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + i), dtype=F64)
        torch.testing.assert_close(out["x"], mean + math.sqrt(var) * z, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out["x0"], x0, rtol=1e-10, atol=1e-10)
        mean_only = solver.step(model, {"x": x}, i, coefs, noise=False)["x"]
        torch.testing.assert_close(mean_only, mean, rtol=1e-10, atol=1e-10)
        clipped = x0.clamp(-1.0, 1.0)  # x_hat modified before the step (DDPM clips it): the mean's x0 form
        from_x0 = ancestral_mean_from_x0(x, clipped, i, coefs)
        torch.testing.assert_close(from_x0, _posterior(sde, t, s, x, clipped)[0], rtol=1e-10, atol=1e-10)
        x = out["x"]


def test_step_is_vdm_formula():
    """VDM's own form: z_s = a_s/a_t (z_t - c s_t eps) + sqrt((1 - a_s^2) c) z, c = -expm1(g_s - g_t)."""
    gamma = sd.FixedLinearGamma(-10.0, 6.0)
    sde = sd.VDMSDE(gamma)
    grid = torch.tensor([1.0, 0.5, 0.0], dtype=F64)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    model = sd.ScoreModel(lambda x, t: torch.sin(3 * x) + t[:, None], sde, prediction="eps")
    solver = sd.VDMAncestral()
    coefs = _to_device(solver.init(sde, grid), x)
    for i in range(2):
        t, s = float(grid[i]), float(grid[i + 1])
        g_t, g_s = -10.0 + 16.0 * t, -10.0 + 16.0 * s
        a = lambda g: math.sqrt(1.0 / (1.0 + math.exp(g)))  # noqa: E731  alpha^2 = sigmoid(-gamma)
        c = -math.expm1(g_s - g_t)
        eps = torch.sin(3 * x) + t
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=F64)
        want = a(g_s) / a(g_t) * (x - c * math.sqrt(1 - a(g_t) ** 2) * eps) + math.sqrt((1 - a(g_s) ** 2) * c) * z
        got = solver.step(model, {"x": x}, i, coefs, generator=torch.Generator().manual_seed(i))["x"]
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        x = got


@given(
    gamma_min=st.floats(-15.0, -2.0),
    width=st.floats(1.0, 20.0),
    t=st.floats(0.01, 1.0),
    frac=st.floats(0.0, 0.99),
)
def test_step_is_the_posterior_for_any_vdm_schedule(gamma_min, width, t, frac):
    sde = sd.VDMSDE(sd.FixedLinearGamma(gamma_min, gamma_min + width))
    s = t * frac  # any s in [0, t)
    grid = torch.tensor([t, s], dtype=F64)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    model = sd.ScoreModel(lambda x, tt: torch.tanh(x) - tt[:, None], sde, prediction="eps")
    solver = sd.VDMAncestral()
    coefs = _to_device(solver.init(sde, grid), x)
    eps = torch.tanh(x) - t
    x0 = (x - float(sde.sigma(t)) * eps) / float(sde.alpha(t))
    mean, var = _posterior(sde, t, s, x, x0)
    got = solver.step(model, {"x": x}, 0, coefs, generator=torch.Generator().manual_seed(1))["x"]
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    # the posterior's alpha/sigma form loses digits when alpha_t is tiny; relative to |x0| scale
    torch.testing.assert_close(got, mean + math.sqrt(var) * z, rtol=1e-8, atol=1e-8 * (1 + float(x0.abs().max())))


def test_full_loop_equals_diffusers_ddpm():
    """On DDPM's own discrete schedule, VDMAncestral is DDPMScheduler (fixed_small variance, no clipping)."""
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    ddpm.set_timesteps(25)
    sde = sd.DiscreteVPSDE(alphas_cumprod=ddpm.alphas_cumprod.to(F64), t_min=0.0)
    target = sd.Gaussian(torch.tensor([0.3, -0.4, 0.8, 0.0]), torch.tensor([0.5, 0.8, 0.3, 1.0]))
    model = sd.ScoreModel(
        lambda x, k: target.model(sde).eps(x, (k.to(F64) + 1) / 1000), sde, prediction="eps"
    )  # the network receives the integer timestep k = 1000 t - 1
    grid = torch.cat([(ddpm.timesteps.to(F64) + 1) / 1000, torch.zeros(1, dtype=F64)])

    gen = torch.Generator().manual_seed(3)
    x_T = torch.randn(32, 4, generator=gen, dtype=F64)
    x = x_T
    for k in ddpm.timesteps:
        eps = target.model(sde).eps(x, (float(k) + 1) / 1000)
        x = ddpm.step(eps, k, x, generator=gen).prev_sample

    gen = torch.Generator().manual_seed(3)
    x_T2 = torch.randn(32, 4, generator=gen, dtype=F64)
    y = sd.sample(sde, model, solver=sd.VDMAncestral(), grid=grid, x_T=x_T2, generator=gen)
    # diffusers keeps alphas_cumprod in float32: agreement to float32 rounding
    torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)


def test_same_seed_same_samples_and_sampling_to_zero():
    sde = sd.VDMSDE()  # t_min = 0: gamma(0) = gamma_min is finite, the last step lands on t = 0
    target = sd.Gaussian(torch.zeros(3), 1.0)
    kw = dict(solver=sd.VDMAncestral(), steps=20, dtype=F64)
    a = sd.sample(sde, target.model(sde), (8, 3), generator=torch.Generator().manual_seed(5), **kw)
    b = sd.sample(sde, target.model(sde), (8, 3), generator=torch.Generator().manual_seed(5), **kw)
    c = sd.sample(sde, target.model(sde), (8, 3), generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.isfinite(a).all()
    seen = []
    sd.sample(sde, target.model(sde), (8, 3), generator=torch.Generator().manual_seed(5), callback=seen.append, **kw)
    assert seen[-1]["t_next"] == 0.0 and seen[-1]["x0"] is not None


def test_rejects_non_process():
    with pytest.raises(TypeError, match="linear forward process"):
        sd.VDMAncestral().check(object())


# ----------------------------------------------------------------- the law of the chain
def _chain_law(sde, target: sd.Gaussian, grid: torch.Tensor):
    """Exact mean and variance of the ancestral chain's output for a diagonal Gaussian target.

    Started from the exact marginal p_T, each step is affine, z_s = L z_t + b + std xi; L and b are
    read off the implementation's noiseless step (exact for an affine map) and std from its
    coefficients, so this is the law of the code's chain, not of a re-derivation.
    """
    solver = sd.VDMAncestral()
    model = target.model(sde)
    m, v = target.marginal_moments(float(grid[0]), sde)
    m, v = m.reshape(1, -1), v.reshape(1, -1)
    coefs = _to_device(solver.init(sde, grid), m)
    for i in range(grid.numel() - 1):
        zero, one = torch.zeros_like(m), torch.ones_like(m)
        b = solver.step(model, {"x": zero}, i, coefs, noise=False)["x"]
        L = solver.step(model, {"x": one}, i, coefs, noise=False)["x"] - b
        m, v = L * m + b, L * L * v + coefs["std"][i] ** 2
    return m.reshape(-1), v.reshape(-1)


TARGET = sd.Gaussian(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 1.5]))


@pytest.mark.parametrize("sde", [sd.VDMSDE(), sd.VPSDE()], ids=["vdm", "vp"])
def test_chain_law_converges_at_weak_order_one(sde):
    errs, ns = [], [25, 50, 100, 200, 400]
    for n in ns:
        grid = sd.grids.uniform(sde, n)
        m, v = _chain_law(sde, TARGET, grid)
        m_ref, v_ref = TARGET.marginal_moments(float(grid[-1]), sde)
        # the mean is exact (the denoiser is exact and affine); the variance carries the bias
        torch.testing.assert_close(m, m_ref, rtol=1e-10, atol=1e-10)
        errs.append(float((v - v_ref).abs().max()))
    slope = fit_slope(ns, errs)  # d log(err) / d log(n)
    assert -1.15 < slope < -0.85, (slope, errs)


@pytest.mark.parametrize("sde", [sd.VDMSDE(), sd.VPSDE()], ids=["vdm", "vp"])
def test_samples_follow_the_chain_law(sde):
    """With few steps the chain's law is far from the data's (many standard errors); samples follow the chain's."""
    n, steps = 10000, 20
    grid = sd.grids.uniform(sde, steps)
    gen = torch.Generator().manual_seed(11)
    x_T = TARGET.marginal_sample(n, sde.T, sde, generator=gen)
    x = sd.sample(sde, TARGET.model(sde), solver=sd.VDMAncestral(), grid=grid, x_T=x_T, generator=gen)
    m, v = _chain_law(sde, TARGET, grid)
    _, v_data = TARGET.marginal_moments(float(grid[-1]), sde)
    se_m, se_v = torch.sqrt(v / n), v * math.sqrt(2.0 / (n - 1))
    assert ((x.mean(0) - m).abs() < 5 * se_m).all()
    assert ((x.var(0) - v).abs() < 5 * se_v).all()
    assert ((v - v_data).abs() > 8 * se_v).any()  # the test can tell the chain's law from the data's


# ----------------------------------------------------------------- the data law
@pytest.mark.slow
@pytest.mark.parametrize("sde", [sd.VDMSDE(), sd.VPSDE()], ids=["vdm", "vp"])
def test_samples_gaussian_data_law(sde):
    """Many steps: mean and covariance of the samples match N(mean_t, cov_t) at t_min within 5 standard errors.

    Starts from the exact p_T (VDM's gamma_max = 5 leaves alpha_1^2 = 0.0067, a prior mismatch
    that is the prior loss, not the sampler's error). The sampler's variance bias at 1000 steps
    (from the exact chain law) is below one standard error and is added to the tolerance.
    """
    n, steps = 6000, 1000
    target = sd.Gaussian(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 1.5]))
    grid = sd.grids.uniform(sde, steps)
    gen = torch.Generator().manual_seed(21)
    x_T = target.marginal_sample(n, sde.T, sde, generator=gen)
    x = sd.sample(sde, target.model(sde), solver=sd.VDMAncestral(), grid=grid, x_T=x_T, generator=gen)
    m_ref, v_ref = target.marginal_moments(float(grid[-1]), sde)
    _, v_chain = _chain_law(sde, target, grid)
    bias = (v_chain - v_ref).abs()
    se_v = v_ref * math.sqrt(2.0 / (n - 1))
    assert (bias < se_v).all()
    assert ((x.mean(0) - m_ref).abs() < 5 * torch.sqrt(v_ref / n)).all()
    assert ((x.var(0) - v_ref).abs() < 5 * se_v + bias).all()
    # off-diagonal covariance: zero, standard error sqrt(v1 v2 / n)
    cov = torch.cov(x.T)[0, 1]
    assert abs(float(cov)) < 5 * math.sqrt(float(v_ref[0] * v_ref[1]) / n)


def _ks_critical(n: int, m: int, alpha: float) -> float:
    """Asymptotic two-sample Kolmogorov-Smirnov critical value c(alpha) sqrt((n + m) / (n m))."""
    return math.sqrt(-0.5 * math.log(alpha / 2.0)) * math.sqrt((n + m) / (n * m))


@pytest.mark.parametrize("sde", [sd.VDMSDE(), sd.VPSDE()], ids=["vdm", "vp"])
def test_samples_gaussian_mixture(sde):
    """Two-sample KS distance between sampler output and exact draws of p_{t_min}, on three projections.

    The critical value is the asymptotic KS quantile at level 1e-4 per projection (Bonferroni
    over three), from the two sample sizes (0.043 at n = 6000); measured distances are 0.010-0.021,
    while mixture weights off by 0.05 give 0.057 (checked below, so the test has power).
    """
    n, steps = 6000, 300
    mix = sd.GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [1.5, 1.0]], [0.4, 0.6])
    gen = torch.Generator().manual_seed(31)
    x_T = mix.marginal_sample(n, sde.T, sde, generator=gen)
    x = sd.sample(sde, mix.model(sde), solver=sd.VDMAncestral(), steps=steps, x_T=x_T, generator=gen)
    ref = mix.marginal_sample(n, sde.t_min, sde, generator=torch.Generator().manual_seed(32))
    crit = _ks_critical(n, n, 1e-4 / 3)
    for u in (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.6, 0.8])):
        d = stats.ks_2samp((x @ u.to(F64)).numpy(), (ref @ u.to(F64)).numpy()).statistic
        assert d < crit, (u, d, crit)
    # the statistic has power: the same reference against a mixture with weights 0.35/0.65
    wrong = sd.GaussianMixture([0.35, 0.65], [[-2.0, 0.0], [1.5, 1.0]], [0.4, 0.6])
    w = wrong.marginal_sample(n, sde.t_min, sde, generator=torch.Generator().manual_seed(33))
    assert stats.ks_2samp(w[:, 0].numpy(), ref[:, 0].numpy()).statistic > crit


# ----------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_gpu_steps_without_host_sync_and_same_as_sample():
    """On CUDA, the fixed-step loop makes no host-device synchronization and equals sample()."""
    dev = torch.device("cuda")
    sde = sd.VDMSDE()
    model = sd.ScoreModel(lambda x, t: 0.3 * x - t[:, None], sde, prediction="eps")
    solver = sd.VDMAncestral()
    grid = sd.grids.uniform(sde, 25)
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(512, 4, device=dev, generator=gen)
    coefs = _to_device(solver.init(sde, grid), x)
    state = {"x": x}
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(25):
            state = solver.step(model, state, i, coefs, generator=gen, noise=i < 24)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    y = sd.sample(sde, model, (512, 4), solver=solver, grid=grid, generator=torch.Generator(device=dev).manual_seed(0))
    assert y.device.type == "cuda"
    torch.testing.assert_close(state["x"], y)
    half = sd.sample(
        sde,
        model,
        (512, 4),
        solver=solver,
        steps=25,
        dtype=torch.float16,
        generator=torch.Generator(device=dev).manual_seed(0),
    )
    assert half.dtype == torch.float16 and torch.isfinite(half).all()


def test_step_into_sigma_zero_on_discrete_ddpm():
    """Issue 14: DiscreteVPSDE(t_min=0) (sigma(0) = 0, lambda = +inf, diffusers' set_alpha_to_one):
    finite coefficients from the process' 1 - SNR_t/SNR_s (= 1 at the last step: std = 0), no model
    call at sigma = 0, and the last step returns x_hat exactly, with or without its noise term."""
    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    seen = []

    def eps_net(x, t):
        seen.append(float(t.min()))
        return torch.tanh(x) + 0.3 * t[:, None]

    model = sd.ScoreModel(eps_net, sde, time_input=lambda t: t)
    grid = sd.grids.uniform(sde, 8)
    coefs = sd.VDMAncestral().init(sde, grid)
    assert all(bool(torch.isfinite(v).all()) for v in coefs.values() if isinstance(v, torch.Tensor))
    assert float(coefs["std"][-1]) == 0.0 and float(coefs["mean_x_x0form"][-1]) == 0.0
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    for denoise in (True, False):
        steps = []
        out = sd.sample(
            sde,
            model,
            x_T=x,
            solver=sd.VDMAncestral(),
            grid=grid,
            denoise=denoise,
            generator=torch.Generator().manual_seed(1),
            callback=steps.append,
        )
        assert min(seen) > 0.0
        torch.testing.assert_close(out, steps[-1]["x0"], rtol=1e-14, atol=1e-14)


def test_step_forms_the_x0_preview_only_when_asked():
    """``step``'s default is the Solver interface's ``need_x0=False``: called without it a VDMAncestral step
    returns the state alone; with ``need_x0=True`` also the denoised estimate at (x, t_i), the Gaussian's
    posterior mean (1e-12), with the same next state bitwise for the same generator."""
    sde = sd.VDMSDE()
    target = sd.Gaussian(torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, 1.0], dtype=torch.float64))
    x = target.marginal_sample(8, 1.0, sde, generator=torch.Generator().manual_seed(0)).double()
    check_x0_preview_only_when_asked(sd.VDMAncestral(), sde, target.model(sde), x, sd.grids.uniform(sde, 6))
