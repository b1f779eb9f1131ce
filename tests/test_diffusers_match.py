"""Step-for-step agreement of DDIM / DDPM / PLMS with diffusers' schedulers on the same discrete process.

Set-up shared by every test:

* the process is ``DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0)``: the scheduler's own
  alphas_cumprod, and t_min = 0 so that a grid may end at t = 0, where alpha = 1 (diffusers'
  ``set_alpha_to_one=True`` / DDPM's last step to "timestep -1");
* the scheduler's integer timesteps k become our grid times t = (k + 1) / N
  (``sde.timestep_to_t``), followed by the scheduler's final time: t = 0 for alpha = 1, or nothing
  when the final alpha is ``alphas_cumprod[0]`` (then diffusers' last step is 0 -> 0, the identity,
  and our grid already ends at t = 1/N, the time of k = 0);
* the "network" is a fixed, deterministic, time-dependent nonlinear map ``tanh(x W + (k / N) b)``
  called with the integer timestep k (our ``ScoreModel`` passes ``network_time(t) = N t - 1 = k``),
  so any difference is the samplers', not the net's;
* noise: diffusers' ``step(..., generator=g)`` draws ``torch.randn(shape, generator=g)`` once per
  step, after the model call, and so does our step; the net draws nothing. Two generators with the
  same seed therefore produce the same noise in the same order, with nothing to inject;
* precision: the scheduler's float32 alphas_cumprod are cast to float64 (as our process holds
  them), so both sides form their step coefficients in float64; in float64 the only difference is
  the order of floating-point operations (agreement to ~1e-12), in float32 samples the rounding of
  the sample arithmetic (a few ulps per step). diffusers as shipped forms its coefficients in float32
  (``1 - abar_t / abar_s`` loses digits as beta -> 1e-4); sdesolve always computes them in float64:
  a deliberate difference, tested in ``test_float32_coefficients_deliberate_difference``.

``clip_sample=False`` (diffusers' DDIM/DDPM default clips x0_hat to [-1, 1]; sdesolve never clips).
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from sdesolve import DDIM, DDPM, PLMS, DiscreteVPSDE, ScoreModel, sample  # noqa: E402
from sdesolve.solvers.base import _to_device  # noqa: E402

N = 1000
D = 6
_gen = torch.Generator().manual_seed(1234)
W = torch.randn(D, D, generator=_gen, dtype=torch.float64) / D**0.5
B = torch.randn(D, generator=_gen, dtype=torch.float64)


def net(x, k):
    """A cheap deterministic eps 'network' of (x, integer timestep k)."""
    k = torch.as_tensor(k, dtype=x.dtype).expand(x.shape[0])
    return torch.tanh(x @ W.to(x.dtype) + (k / N)[:, None] * B.to(x.dtype))


def make_scheduler(kind, beta_schedule, dtype=None, *, coef64=True, **kw):
    if kind == "ddim":
        s = diffusers.DDIMScheduler(num_train_timesteps=N, beta_schedule=beta_schedule, clip_sample=False, **kw)
    elif kind == "ddpm":
        s = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule=beta_schedule, clip_sample=False, **kw)
    else:
        s = diffusers.PNDMScheduler(num_train_timesteps=N, beta_schedule=beta_schedule, **kw)
    if coef64:
        s.alphas_cumprod = s.alphas_cumprod.double()
        if hasattr(s, "final_alpha_cumprod"):
            s.final_alpha_cumprod = s.final_alpha_cumprod.double()
    return s


def run_diffusers(sched, x, steps, *, generator=None, forced=None, **step_kw):
    """diffusers' denoising loop; returns every intermediate sample (the output of each step).

    ``forced`` maps a call index to the sample fed to that call instead of the loop's own (teacher
    forcing: then each output is one diffusers step from our previous sample, and rounding
    differences do not accumulate over the steps).
    """
    sched.set_timesteps(steps)
    out = []
    for j, k in enumerate(sched.timesteps):
        if forced is not None and j in forced:
            x = forced[j]
        eps = net(x, k)
        kw = dict(step_kw)
        if generator is not None:
            kw["generator"] = generator
        x = sched.step(eps, k, x, **kw).prev_sample
        out.append(x)
    return out


def our_grid(sde, ks, final_alpha_one: bool):
    grid = sde.timestep_to_t(torch.tensor(ks, dtype=torch.float64))
    if final_alpha_one:
        grid = torch.cat([grid, torch.zeros(1, dtype=torch.float64)])
    return grid


def run_ours(sde, solver, x, grid, *, seed=0, denoise=True):
    model = ScoreModel(net, sde, prediction="eps")
    out = []
    sample(
        sde,
        model,
        x_T=x.clone(),
        solver=solver,
        grid=grid,
        generator=torch.Generator().manual_seed(seed),
        denoise=denoise,
        callback=lambda d: out.append(d["x"].clone()),
    )
    return out, model.nfe


def compare(ours, run_theirs, call_of_step, dtype):
    """float64: both loops run free, every intermediate sample agrees to ~1e-12 (relative).

    float32: diffusers is teacher-forced from our path (``call_of_step[i]`` is the diffusers call
    that ends our step i; the call after the one ending step i - 1 is fed ours[i - 1]), so each step
    is compared from the same input and rounding does not accumulate over the steps: a few float32
    ulps per step (tolerance 1e-6 relative).
    """
    if dtype == torch.float64:
        theirs = run_theirs(None)
    else:
        forced = {call_of_step[i - 1] + 1: ours[i - 1] for i in range(1, len(ours))}
        theirs = run_theirs(forced)
    assert_path_close(ours, [theirs[c] for c in call_of_step], dtype)
    return theirs


def assert_path_close(ours, theirs, dtype):
    assert len(ours) == len(theirs)
    tol = 1e-11 if dtype == torch.float64 else 1e-6
    for i, (a, b) in enumerate(zip(ours, theirs)):
        scale = max(1.0, float(b.abs().max()))
        err = float((a - b).abs().max()) / scale
        assert err < tol, f"step {i}: relative difference {err:.3g} > {tol:g}"


def x_init(dtype, n=5):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)


DTYPES = [torch.float64, torch.float32]
SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"]


# ----------------------------------------------------------------------------- DDIM
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta_schedule", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 0.6, 1.0])
def test_ddim_matches_ddim_scheduler(dtype, beta_schedule, eta):
    """set_alpha_to_one=True: diffusers' last step goes to alpha = 1, our grid ends at t = 0."""
    sched = make_scheduler("ddim", beta_schedule, dtype, set_alpha_to_one=True)
    sde = DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    steps, x = 20, x_init(dtype)
    sched.set_timesteps(steps)
    grid = our_grid(sde, sched.timesteps.tolist(), final_alpha_one=True)
    ours, nfe = run_ours(sde, DDIM(eta), x, grid, seed=3)

    def theirs(forced):
        g = torch.Generator().manual_seed(3)
        return run_diffusers(sched, x.clone(), steps, generator=g, forced=forced, eta=eta)

    compare(ours, theirs, list(range(steps)), dtype)
    assert nfe == steps == DDIM(eta).nfe(steps)
    assert float(grid[-1]) == 0.0  # the last step lands on alpha = 1, sigma = 0: x0_hat itself


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps_offset", [0, 1])
def test_ddim_final_alpha_cumprod_not_one(dtype, steps_offset):
    """set_alpha_to_one=False: the final alpha is alphas_cumprod[0], i.e. t = 1/N.

    steps_offset=0: the last timestep is k = 0, so diffusers' last step 0 -> 'final' is the identity
    and our grid (ending at t = 1/N) has one step fewer. steps_offset=1 (Stable Diffusion's
    config): timesteps 1 + 20 j, and the final time t = 1/N is a genuine last grid point.
    """
    sched = make_scheduler("ddim", "scaled_linear", dtype, set_alpha_to_one=False, steps_offset=steps_offset)
    sde = DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = x_init(dtype)
    sched.set_timesteps(25)
    ks = sched.timesteps.tolist()
    grid = sde.timestep_to_t(torch.tensor(ks if steps_offset == 0 else ks + [0], dtype=torch.float64))
    ours, _ = run_ours(sde, DDIM(), x, grid)
    theirs = compare(ours, lambda f: run_diffusers(sched, x.clone(), 25, forced=f), list(range(len(ours))), dtype)
    if steps_offset == 0:
        assert len(theirs) == len(ours) + 1
        assert torch.equal(theirs[-1], theirs[-2])  # diffusers' extra step is the identity


def test_ddim_noise_on_last_step_is_a_deliberate_difference():
    """With the final alpha = alphas_cumprod[0] diffusers' DDIM(eta > 0) adds noise on the step to
    t = 1/N; sdesolve's denoise=True takes that last step without noise. denoise=False reproduces
    diffusers exactly; denoise=True equals diffusers' last step with zero variance noise."""
    dtype, eta = torch.float64, 0.8
    sched = make_scheduler("ddim", "linear", dtype, set_alpha_to_one=False, steps_offset=1)
    sde = DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = x_init(dtype)
    theirs = run_diffusers(sched, x.clone(), 10, generator=torch.Generator().manual_seed(9), eta=eta)
    grid = sde.timestep_to_t(torch.tensor(sched.timesteps.tolist() + [0], dtype=torch.float64))
    ours_noisy, _ = run_ours(sde, DDIM(eta), x, grid, seed=9, denoise=False)
    assert_path_close(ours_noisy, theirs, dtype)
    ours, _ = run_ours(sde, DDIM(eta), x, grid, seed=9, denoise=True)
    assert_path_close(ours[:-1], theirs[:-1], dtype)
    k_last = int(sched.timesteps[-1])
    mean_last = sched.step(
        net(theirs[-2], k_last), k_last, theirs[-2], eta=eta, variance_noise=torch.zeros_like(x)
    ).prev_sample
    assert_path_close(ours[-1:], [mean_last], dtype)
    assert float((ours[-1] - theirs[-1]).abs().max()) > 1e-3  # the noise really was dropped


# ----------------------------------------------------------------------------- DDPM
_DDPM_CASES = [(dt, bs, var, 25) for dt in DTYPES for bs in SCHEDULES for var in ("small", "large")]
_DDPM_CASES += [
    pytest.param(torch.float64, bs, var, 1000, marks=pytest.mark.slow) for bs in SCHEDULES for var in ("small", "large")
]
_DDPM_CASES += [pytest.param(torch.float32, "linear", "small", 1000, marks=pytest.mark.slow)]


@pytest.mark.parametrize("dtype, beta_schedule, variance, steps", _DDPM_CASES)
def test_ddpm_matches_ddpm_scheduler(dtype, beta_schedule, variance, steps):
    """All N = 1000 steps (the original ancestral sampler) and a 25-step skip; the last step goes to
    t = 0 (diffusers' 'timestep -1', alpha = 1) without noise, as our denoise=True does."""
    vt = {"small": "fixed_small", "large": "fixed_large"}[variance]
    sched = make_scheduler("ddpm", beta_schedule, dtype, variance_type=vt)
    sde = DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = x_init(dtype)
    sched.set_timesteps(steps)
    grid = our_grid(sde, sched.timesteps.tolist(), final_alpha_one=True)
    ours, nfe = run_ours(sde, DDPM(variance), x, grid, seed=11)

    def theirs(forced):
        g = torch.Generator().manual_seed(11)
        return run_diffusers(sched, x.clone(), steps, generator=g, forced=forced)

    compare(ours, theirs, list(range(steps)), dtype)
    assert nfe == steps


# ----------------------------------------------------------------------------- PLMS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta_schedule", SCHEDULES)
@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize("steps", [20, 3])
def test_plms_matches_pndm_skip_prk(dtype, beta_schedule, set_alpha_to_one, steps):
    """PNDMScheduler(skip_prk_steps=True) calls step() n + 1 times: call 0 is the Euler predictor
    of the first (Heun) step — an intermediate that is not a sample — and call j >= 1 ends grid
    interval j - 1. With set_alpha_to_one=False its final call (k = 0 -> alphas_cumprod[0]) is the
    identity, and our grid ends at t = 1/N one interval earlier. Network evaluations agree."""
    sched = make_scheduler("pndm", beta_schedule, dtype, skip_prk_steps=True, set_alpha_to_one=set_alpha_to_one)
    sde = DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = x_init(dtype)
    sched.set_timesteps(steps)
    ks = sorted(set(sched.timesteps.tolist()), reverse=True)
    grid = our_grid(sde, ks, final_alpha_one=set_alpha_to_one)
    ours, nfe = run_ours(sde, PLMS("lower_order"), x, grid)
    calls = [i + 1 for i in range(len(ours))]
    theirs = compare(ours, lambda f: run_diffusers(sched, x.clone(), steps, forced=f), calls, dtype)
    if not set_alpha_to_one:
        assert len(theirs) == len(ours) + 2
        assert float((theirs[-1] - theirs[-2]).abs().max()) <= 1e-6 * float(theirs[-2].abs().max())
        assert nfe == len(sched.timesteps) - 1  # diffusers' wasted evaluation at the identity step
    else:
        assert nfe == len(sched.timesteps)
    assert nfe == PLMS().nfe(grid.numel() - 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps", [20, 50])
def test_plms_prk_matches_pndm_with_prk(dtype, steps):
    """The original PNDM (pseudo Runge–Kutta warm start): diffusers puts the RK midpoint at timestep
    k - (N // n) // 2, the time midpoint when N // n is even (20, 50 steps: 50 and 20). Its 12 PRK calls
    are 3 steps x 4 stages; the 4th call of each ends a grid interval."""
    sched = make_scheduler("pndm", "linear", dtype, skip_prk_steps=False, set_alpha_to_one=True)
    sde = DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = x_init(dtype)
    sched.set_timesteps(steps)
    ks = sched._timesteps[::-1].tolist()  # the grid points; timesteps also lists the midpoints
    grid = our_grid(sde, ks, final_alpha_one=True)
    ours, nfe = run_ours(sde, PLMS("prk"), x, grid)
    calls = [3, 7, 11] + list(range(12, 12 + len(ours) - 3))
    compare(ours, lambda f: run_diffusers(sched, x.clone(), steps, forced=f), calls, dtype)
    assert nfe == len(sched.timesteps) == steps + 9 == PLMS("prk").nfe(steps)


@pytest.mark.slow
def test_float32_coefficients_deliberate_difference():
    """diffusers as shipped (float32 alphas_cumprod) forms DDPM's coefficients in float32, sdesolve in
    float64 (cast once). One float32 step of each, from the same float64-path input and with the same
    float32 noise, against the same step evaluated in float64: sdesolve stays within a few ulps at
    every one of the 1000 steps, while diffusers-as-shipped loses digits as beta -> 1e-4, where
    ``1 - abar_t / abar_s`` cancels in float32: over the last 100 steps sdesolve is at least 10 times
    closer on average."""
    ref_sched = make_scheduler("ddpm", "linear")
    sde = DiscreteVPSDE(alphas_cumprod=ref_sched.alphas_cumprod, t_min=0.0)
    x = x_init(torch.float64, n=16)
    ref_sched.set_timesteps(N)
    grid = our_grid(sde, ref_sched.timesteps.tolist(), final_alpha_one=True)
    path, _ = run_ours(sde, DDPM(), x, grid, seed=2)
    inputs = [x] + path[:-1]
    forced32 = {i: inputs[i].float() for i in range(1, N)}
    ship = make_scheduler("ddpm", "linear", coef64=False)
    theirs32 = run_diffusers(ship, x.float(), N, generator=torch.Generator().manual_seed(4), forced=forced32)
    model = ScoreModel(net, sde, prediction="eps")
    solver = DDPM()
    c64, c32 = solver.init(sde, grid), _to_device(solver.init(sde, grid), x.float())
    g_ours, g_ref = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    err_ours, err_theirs = [], []
    for i in range(N):
        last = i == N - 1
        x32 = inputs[i].float()
        ours = solver.step(model, {"x": x32}, i, c32, generator=g_ours, noise=not last)["x"]
        z = torch.zeros_like(x32) if last else torch.randn(x32.shape, generator=g_ref, dtype=torch.float32)
        x64 = x32.double()  # the same input, evaluated in float64
        ref = c64["a"][i] * x64 + c64["b"][i] * net(x64, sde.network_time(c64["t"][i : i + 1]))
        ref = ref + c64["c"][i] * z.double()
        scale = float(ref.abs().max())
        err_ours.append(float((ours.double() - ref).abs().max()) / scale)
        err_theirs.append(float((theirs32[i].double() - ref).abs().max()) / scale)
    err_ours, err_theirs = torch.tensor(err_ours), torch.tensor(err_theirs)
    assert float(err_ours.max()) < 1e-6
    print(
        f"float32 step error: sdesolve max {float(err_ours.max()):.2e}, last-100 mean {float(err_ours[-100:].mean()):.2e}; diffusers {float(err_theirs[-100:].mean()):.2e}"
    )
    assert float(err_ours[-100:].mean()) * 10 < float(err_theirs[-100:].mean())


# ----------------------------------------------------------------------------- VDMScheduler = DDPMScheduler
_VDM_CASES = [
    ("epsilon", {}, "leading", 25),
    ("epsilon", {"clip_sample": True}, "trailing", 25),
    ("sample", {"clip_sample": True, "clip_sample_range": 0.5}, "linspace", 25),
    ("v_prediction", {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}, "leading", 25),
    ("epsilon", {"thresholding": True, "sample_max_value": 0.5}, "leading", 7),
]


@pytest.mark.parametrize("prediction_type, extra, spacing, steps", _VDM_CASES)
@pytest.mark.parametrize("beta_schedule", SCHEDULES + ["sigmoid"])
def test_vdm_scheduler_from_ddpm_config_is_ddpm_scheduler(prediction_type, extra, spacing, steps, beta_schedule):
    """VDMScheduler.from_config(ddpm.config) steps as DDPMScheduler does, step for step (float64, same noise).

    Both sides get DDPM's float32 betas (``trained_betas``) with float64 alphas_cumprod, so the
    schedules are identical and the only difference is the order of floating-point operations.
    """
    from sdesolve.diffusers import VDMScheduler

    kw = dict(num_train_timesteps=N, beta_schedule=beta_schedule, prediction_type=prediction_type)
    kw.update({"clip_sample": False, "timestep_spacing": spacing, **extra})
    ddpm = diffusers.DDPMScheduler(**kw)
    ddpm = diffusers.DDPMScheduler.from_config(ddpm.config, trained_betas=ddpm.betas.double().numpy())
    ddpm.alphas_cumprod = torch.cumprod(1.0 - ddpm.betas.double(), 0)
    ours = VDMScheduler.from_config(ddpm.config)
    torch.testing.assert_close(ours.alphas_cumprod.double(), ddpm.alphas_cumprod, rtol=1e-7, atol=0)
    ddpm.set_timesteps(steps)
    ours.set_timesteps(steps)
    assert torch.equal(ours.timesteps, ddpm.timesteps)
    x = 2.0 * x_init(torch.float64)[:, None, :]  # (B, C, D): DDPM's thresholding needs a channel axis
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for k in ddpm.timesteps:
        out = 0.7 * net(x[:, 0], k)[:, None]
        a, b = ddpm.step(out, k, x, generator=g1), ours.step(out, k, x, generator=g2)
        assert_path_close([b.pred_original_sample], [a.pred_original_sample], torch.float64)
        if k == ddpm.timesteps[-1] and k > 0:
            # DDPM's last step (to alpha = 1) from k > 0 adds sqrt(1e-20) * noise: its variance 0 is
            # clamped to 1e-20. Ours adds none. Only that 1e-10 * xi separates the two.
            assert float((a.prev_sample - b.prev_sample).abs().max()) < 1e-9
        else:
            assert_path_close([b.prev_sample], [a.prev_sample], torch.float64)
        x = a.prev_sample  # teacher-forced: each step from the same input
