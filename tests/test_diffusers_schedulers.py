"""diffusers-compatible schedulers: VDMScheduler and ScoreSdeVpScheduler.

* a VDMScheduler loop equals ``sdesolve.sample(..., solver=VDMAncestral())`` with the same
  generator, for every schedule, both time modes and every prediction type (exact Gaussian model);
* its config survives save_pretrained / from_pretrained / from_config, and it runs inside
  diffusers' DDPMPipeline with a tiny random UNet2DModel (the pipeline equals a manual loop);
* add_noise is sde.perturb, get_velocity is v, clipping and dynamic thresholding act on x0 as
  documented (thresholding equals diffusers' DDPMScheduler's);
* ScoreSdeVpScheduler is sdesolve's Euler-Maruyama on VPSDE step for step, and equals diffusers'
  ScoreSdeVpScheduler where their step sizes agree; where they differ, by exactly the
  documented factor.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_unet

import sdesolve as sd
from sdesolve.diffusers import ScoreSdeVpScheduler, VDMScheduler, VDMSchedulerOutput

F64 = torch.float64
TARGET = sd.Gaussian(torch.tensor([0.4, -0.3, 0.9]), torch.tensor([0.5, 0.9, 0.3]))
VIEW = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


def _process_time(sched: VDMScheduler, timestep) -> torch.Tensor:
    """The process time of a timestep: (k + 1)/N * T (discrete, diffusers' convention) or u * T."""
    n = sched.config.num_train_timesteps
    k = torch.as_tensor(timestep).to(F64)
    return ((k + 1.0) / n if n is not None else k) * sched.sde.T


def _public(config) -> dict:
    """A config without diffusers' bookkeeping keys (``_class_name``, ``_use_default_values`` ...)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def _loop(sched: VDMScheduler, net, x: torch.Tensor, generator) -> torch.Tensor:
    for t in sched.timesteps:
        x = sched.step(net(x, t), t, x, generator=generator).prev_sample
    return x


# ------------------------------------------------------------------ VDMScheduler = sample(VDMAncestral)
@pytest.mark.parametrize("schedule", ["vdm", "linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("num_train_timesteps", [None, 1000], ids=["continuous", "discrete"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_vdm_scheduler_loop_equals_sample(schedule, num_train_timesteps, prediction_type):
    sched = VDMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=schedule,
        prediction_type=prediction_type,
        clip_sample=False,
    )
    sched.set_timesteps(12)
    sde = sched.sde
    exact = TARGET.model(sde)
    view = VIEW[prediction_type]

    def net(x, timestep):  # the network sees the scheduler's timestep (u or the integer k)
        return exact.predict(x, _process_time(sched, timestep), view)

    gen = torch.Generator().manual_seed(7)
    x_T = torch.randn(16, 3, generator=gen, dtype=F64) * sched.init_noise_sigma
    x = _loop(sched, net, x_T, gen)

    model = sd.ScoreModel(lambda x, t: exact.predict(x, t, view), sde, prediction=view, time_input=lambda t: t)
    gen = torch.Generator().manual_seed(7)
    x_T = torch.randn(16, 3, generator=gen, dtype=F64)  # the same prior draw (the grid may start below T)
    y = sd.sample(sde, model, x_T=x_T, solver=sd.VDMAncestral(), grid=sched.grid, generator=gen)
    torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)
    assert sched.grid[-1] == 0.0
    top = sde.T if num_train_timesteps is None else (sched.timesteps[0] + 1) / 1000  # leading: k_0 = 990
    assert abs(float(sched.grid[0]) - top) < 1e-12


def test_vdm_scheduler_timesteps():
    s = VDMScheduler()
    s.set_timesteps(4)
    assert s.timesteps.dtype == torch.float32
    torch.testing.assert_close(s.timesteps, torch.tensor([1.0, 0.75, 0.5, 0.25]))
    torch.testing.assert_close(s.grid, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=F64))
    d = VDMScheduler(num_train_timesteps=1000)
    d.set_timesteps(3)  # DDPM's "leading" spacing; timestep k is the time (k + 1)/N
    assert d.timesteps.dtype == torch.int64 and d.timesteps.tolist() == [666, 333, 0]
    torch.testing.assert_close(d.grid, torch.tensor([0.667, 0.334, 0.001, 0.0], dtype=F64))
    c = VDMScheduler(beta_schedule="squaredcos_cap_v2")
    c.set_timesteps(2)
    torch.testing.assert_close(c.grid, torch.tensor([1.0, 0.5, 0.0], dtype=F64) * c.sde.T)
    assert s.order == 1 and s.init_noise_sigma == 1.0
    x = torch.randn(2, 3)
    assert s.scale_model_input(x, s.timesteps[0]) is x


def test_vdm_scheduler_step_output_and_last_step_is_the_mean():
    s = VDMScheduler(num_train_timesteps=100, beta_schedule="vdm", clip_sample=False)
    s.set_timesteps(5)
    assert s.timesteps.tolist() == [80, 60, 40, 20, 0]
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    eps = TARGET.model(s.sde).eps(x, 0.01)
    out = s.step(eps, s.timesteps[-1], x, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, VDMSchedulerOutput)
    again = s.step(eps, s.timesteps[-1], x, generator=torch.Generator().manual_seed(2), return_dict=False)
    torch.testing.assert_close(again[0], out.prev_sample)  # no noise on the last step
    torch.testing.assert_close(again[1], out.pred_original_sample)
    # to t = 0 for the VDM process: mean alpha_0/alpha_t (x - c sigma_t eps), c = -expm1(gamma_0 - gamma_t)
    a = lambda g: 1.0 / math.sqrt(1.0 + math.exp(g))  # noqa: E731
    g_t, g_0 = -13.3 + 18.3 * 0.01, -13.3  # k = 0 is t = 1/N
    c = -math.expm1(g_0 - g_t)
    want = a(g_0) / a(g_t) * (x - c * math.sqrt(1 - a(g_t) ** 2) * eps)
    torch.testing.assert_close(out.prev_sample, want, rtol=1e-12, atol=1e-12)


def test_vdm_scheduler_wrong_timestep_is_an_error():
    """A timestep given as a Python number is looked up; a wrong one is an error naming the timesteps."""
    s = VDMScheduler()
    s.set_timesteps(4)
    x = torch.zeros(2, 3)
    s.step(torch.zeros(2, 3), 0.75, x)
    with pytest.raises(ValueError, match="not one of the scheduler's timesteps"):
        s.step(torch.zeros(2, 3), 0.8, x)
    with pytest.raises(ValueError, match="single value"):
        s.step(torch.zeros(2, 3), torch.tensor([0.5, 0.25]), x)
    out = s.step(torch.zeros(2, 3), torch.tensor([0.5, 0.5]), x)  # a (B,) tensor of one value is fine
    assert out.prev_sample.shape == (2, 3)


# ------------------------------------------------------------------ config round trips
def test_vdm_scheduler_save_load_and_from_config(tmp_path):
    s = VDMScheduler(
        num_train_timesteps=500, beta_schedule="vdm", gamma_min=-10.0, gamma_max=6.0, prediction_type="v_prediction"
    )
    s.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").exists()
    loaded = VDMScheduler.from_pretrained(tmp_path)
    assert _public(loaded.config) == _public(s.config)
    assert loaded.sde.gamma.gamma_min == -10.0 and loaded.sde.gamma.gamma_max == 6.0
    other = VDMScheduler.from_config(s.config, prediction_type="epsilon", clip_sample=True)
    assert other.config.prediction_type == "epsilon" and other.config.clip_sample
    assert other.config.gamma_min == -10.0 and other.config.num_train_timesteps == 500
    # same config, same samples
    for sch in (s, loaded):
        sch.set_timesteps(6)
    net = lambda x, k: TARGET.model(s.sde).v(x, _process_time(s, k))  # noqa: E731
    x_T = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = _loop(s, net, x_T, torch.Generator().manual_seed(1))
    b = _loop(loaded, net, x_T, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_score_sde_vp_scheduler_save_load(tmp_path):
    s = ScoreSdeVpScheduler(beta_min=0.2, beta_max=15.0, sampling_eps=1e-4, prediction_type="score")
    s.save_pretrained(tmp_path)
    loaded = ScoreSdeVpScheduler.from_pretrained(tmp_path)
    assert _public(loaded.config) == _public(s.config)
    assert loaded.sde.beta_min == 0.2 and loaded.sde.beta_max == 15.0
    assert len(loaded) == 2000


# ------------------------------------------------------------------ inside a diffusers pipeline
@pytest.mark.parametrize("num_train_timesteps", [None, 1000], ids=["continuous", "discrete"])
def test_runs_in_ddpm_pipeline(num_train_timesteps, tmp_path):
    from diffusers import DDPMPipeline

    unet = tiny_unet()
    sched = VDMScheduler(num_train_timesteps=num_train_timesteps, clip_sample=True)
    pipe = DDPMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="pt")
    img = out.images
    assert img.shape == (2, 1, 8, 8) and torch.isfinite(img).all()

    # the pipeline is the manual loop: prior draw, then one scheduler step per timestep
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 1, 8, 8), generator=gen)
    sched.set_timesteps(4)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x, generator=gen).prev_sample
    torch.testing.assert_close(img, (x / 2 + 0.5).clamp(0, 1))

    # the pipeline saves and reloads with the sdesolve scheduler
    pipe.save_pretrained(tmp_path)
    again = DDPMPipeline.from_pretrained(tmp_path)
    assert isinstance(again.scheduler, VDMScheduler)
    assert _public(again.scheduler.config) == _public(sched.config)


# ------------------------------------------------------------------ training helpers
@pytest.mark.parametrize("schedule", ["vdm", "linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("num_train_timesteps", [None, 1000], ids=["continuous", "discrete"])
def test_add_noise_is_perturb(schedule, num_train_timesteps):
    s = VDMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=schedule)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 2, 3, dtype=F64, generator=gen)
    noise = torch.randn(5, 2, 3, dtype=F64, generator=gen)
    if num_train_timesteps is None:
        ts = torch.tensor([1.0, 0.7, 0.31, 0.05, 0.0], dtype=F64)
        u = ts
    else:
        ts = torch.tensor([999, 700, 310, 50, 0])  # diffusers' convention: k is the time (k + 1)/N
        u = (ts.to(F64) + 1) / 1000
    t = u * s.sde.T
    torch.testing.assert_close(s.add_noise(x0, noise, ts), s.sde.perturb(x0, t, noise), rtol=1e-14, atol=1e-14)
    # scalar timestep broadcasts
    torch.testing.assert_close(s.add_noise(x0, noise, ts[1]), s.sde.perturb(x0, float(t[1]), noise))
    if schedule == "vdm":  # independently: alpha^2 = sigmoid(-gamma), sigma^2 = sigmoid(gamma)
        g = -13.3 + 18.3 * u
        a, sg = torch.sigmoid(-g).sqrt(), torch.sigmoid(g).sqrt()
        want = a[:, None, None] * x0 + sg[:, None, None] * noise
        torch.testing.assert_close(s.add_noise(x0, noise, ts), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_training_targets_are_recovered_by_step(prediction_type):
    """A model that outputs the exact target (noise, x0 or get_velocity) at add_noise(x0, noise) gives x0 back."""
    s = VDMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type, clip_sample=False
    )
    s.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 4, dtype=F64, generator=gen)
    noise = torch.randn(6, 4, dtype=F64, generator=gen)
    for k in s.timesteps:
        z = s.add_noise(x0, noise, k)
        target = {"epsilon": noise, "sample": x0, "v_prediction": s.get_velocity(x0, noise, k)}[prediction_type]
        out = s.step(target, k, z, generator=gen)
        torch.testing.assert_close(out.pred_original_sample, x0, rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------ clipping and thresholding
def _posterior_mean_std(sde, t: float, s: float, z, x0):
    a_t, s_t, a_s, s_s = (float(v) for v in (sde.alpha(t), sde.sigma(t), sde.alpha(s), sde.sigma(s)))
    v_ts = s_t**2 - (a_t / a_s) ** 2 * s_s**2
    mean = (a_t / a_s) * s_s**2 / s_t**2 * z + a_s * v_ts / s_t**2 * x0
    return mean, math.sqrt(v_ts * s_s**2 / s_t**2)


def test_clip_sample_clips_x0_and_steps_from_it():
    s = VDMScheduler(clip_sample=True, clip_sample_range=0.5, prediction_type="epsilon")
    s.set_timesteps(5)
    ref = VDMScheduler(prediction_type="epsilon", clip_sample=False)
    ref.set_timesteps(5)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(8, 3, dtype=F64, generator=gen)
    eps = torch.randn(8, 3, dtype=F64, generator=gen)
    i, t = 1, s.timesteps[1]
    raw = ref.step(eps, t, z, generator=torch.Generator().manual_seed(5)).pred_original_sample
    assert raw.abs().max() > 0.5  # clipping has something to do
    out = s.step(eps, t, z, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out.pred_original_sample, raw.clamp(-0.5, 0.5))
    mean, std = _posterior_mean_std(s.sde, float(s.grid[i]), float(s.grid[i + 1]), z, raw.clamp(-0.5, 0.5))
    xi = torch.randn(z.shape, dtype=F64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out.prev_sample, mean + std * xi, rtol=1e-10, atol=1e-10)


def test_dynamic_thresholding_matches_definition_and_diffusers():
    from diffusers import DDPMScheduler

    kw = dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.5)
    s = VDMScheduler(prediction_type="sample", **kw)
    s.set_timesteps(5)
    gen = torch.Generator().manual_seed(0)
    # per-sample scales: below 1 (s clamps to 1), between, and above sample_max_value
    x0 = (
        torch.randn(3, 2, 4, 4, dtype=F64, generator=gen)
        * torch.tensor([0.3, 1.5, 6.0], dtype=F64)[:, None, None, None]
    )
    z = torch.randn(3, 2, 4, 4, dtype=F64, generator=gen)
    out = s.step(x0, s.timesteps[2], z, generator=torch.Generator().manual_seed(1))
    q = torch.quantile(x0.reshape(3, -1).abs(), 0.9, dim=1).clamp(1.0, 2.5)
    want = torch.stack([x0[b].clamp(-q[b], q[b]) / q[b] for b in range(3)])
    torch.testing.assert_close(out.pred_original_sample, want)
    ddpm = DDPMScheduler(**kw)
    torch.testing.assert_close(out.pred_original_sample, ddpm._threshold_sample(x0))
    assert float(q[0]) == 1.0 and float(q[2]) == 2.5  # the three regimes are exercised
    mean, std = _posterior_mean_std(s.sde, float(s.grid[2]), float(s.grid[3]), z, want)
    xi = torch.randn(z.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.prev_sample, mean + std * xi, rtol=1e-10, atol=1e-10)


def test_vdm_scheduler_bad_input():
    with pytest.raises(ValueError, match="prediction_type"):
        VDMScheduler(prediction_type="score")
    with pytest.raises(ValueError, match="beta_schedule"):
        VDMScheduler(beta_schedule="scaled_linear")  # a discrete DDPM schedule, in continuous time
    with pytest.raises(ValueError, match="num_train_timesteps"):
        VDMScheduler(num_train_timesteps=0)
    with pytest.raises(ValueError, match="sample_max_value"):
        VDMScheduler(sample_max_value=0.0)
    s = VDMScheduler(num_train_timesteps=10)
    with pytest.raises(ValueError, match="not one of the scheduler's timesteps"):
        s.step(torch.zeros(2, 3), 10, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(11)
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(0)
    s.set_timesteps(5)
    with pytest.raises(ValueError, match="shape"):
        s.step(torch.zeros(2, 4), 8, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="noise"):
        s.add_noise(torch.zeros(2, 3), torch.zeros(2, 4), 5)
    with pytest.raises(ValueError, match="timesteps"):
        s.add_noise(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([5, 6, 7]))
    with pytest.raises(ValueError, match="timesteps"):
        s.add_noise(torch.zeros(2, 3), torch.zeros(2, 3), 10)  # k = 10 > N - 1 = 9
    with pytest.raises(TypeError, match="LinearSDE"):
        s.set_process(object())


def test_set_process_uses_a_custom_schedule():
    s = VDMScheduler(clip_sample=False)
    sde = sd.VDMSDE(sd.FixedLinearGamma(-8.0, 7.0), t_min=0.0)
    s.set_process(sde)
    s.set_timesteps(6)
    exact = TARGET.model(sde)
    gen = torch.Generator().manual_seed(2)
    x = _loop(s, lambda x, t: exact.eps(x, float(t)), torch.randn(4, 3, dtype=F64, generator=gen), gen)
    gen = torch.Generator().manual_seed(2)
    y = sd.sample(sde, exact, (4, 3), solver=sd.VDMAncestral(), grid=s.grid, generator=gen, dtype=F64)
    torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


class _ScalarGamma(sd.GammaSchedule):
    """gamma(t) = b + softplus(w) t with learnable b, w (a stand-in for a learned schedule)."""

    def __init__(self):
        super().__init__()
        self.b = torch.nn.Parameter(torch.tensor(-9.0, dtype=F64))
        self.w = torch.nn.Parameter(torch.tensor(14.0, dtype=F64))

    def forward(self, t):
        return self.b + torch.nn.functional.softplus(self.w) * t


def test_set_process_with_a_learnable_schedule_samples_without_a_graph():
    sde = sd.VDMSDE(_ScalarGamma(), t_min=0.0)
    s = VDMScheduler(clip_sample=False)
    s.set_process(sde)
    s.set_timesteps(5)
    exact = TARGET.model(sde)
    gen = torch.Generator().manual_seed(3)
    net = lambda x, t: exact.eps(x, float(t)).detach()  # noqa: E731
    x = _loop(s, net, torch.randn(4, 3, dtype=F64, generator=gen), gen)
    assert not x.requires_grad  # the scheduler's coefficients carry no graph of the schedule's parameters
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        y = sd.sample(sde, exact, (4, 3), solver=sd.VDMAncestral(), grid=s.grid, generator=gen, dtype=F64)
    torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ ScoreSdeVpScheduler
@pytest.mark.parametrize("prediction_type", ["epsilon", "score"])
def test_score_sde_vp_is_euler_maruyama_step_for_step(prediction_type):
    s = ScoreSdeVpScheduler(prediction_type=prediction_type)
    s.set_timesteps(15)
    sde = sd.VPSDE(t_min=1e-3)
    exact = TARGET.model(sde)
    em = sd.EulerMaruyama()
    grid = s.grid
    torch.testing.assert_close(grid[-1], torch.tensor(1e-3, dtype=F64))
    torch.testing.assert_close(grid[1:] - grid[:-1], torch.full((15,), -(1 - 1e-3) / 15, dtype=F64), rtol=1e-6, atol=0)
    coefs = em.init(sde, grid)
    coefs = {k: v.to(F64) for k, v in coefs.items()}
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    x = torch.randn(10, 3, generator=g1, dtype=F64)
    y = torch.randn(10, 3, generator=g2, dtype=F64)
    for i, t in enumerate(s.timesteps):
        out = exact.eps(x, float(t)) if prediction_type == "epsilon" else exact.score(x, float(t))
        x, x_mean = s.step_pred(out, x, t, generator=g1)
        y_mean = em.step(exact, {"x": y}, i, coefs, noise=False)["x"]
        y = em.step(exact, {"x": y}, i, coefs, generator=g2)["x"]
        torch.testing.assert_close(x_mean, y_mean, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)
    # and the whole loop is sdesolve.sample on the same grid (noise on every step)
    z = sd.sample(
        sde, exact, (10, 3), solver=em, grid=grid, generator=torch.Generator().manual_seed(4), dtype=F64, denoise=False
    )
    torch.testing.assert_close(x, z, rtol=1e-10, atol=1e-10)


def test_score_sde_vp_versus_diffusers():
    """Same t, same model output, same noise: identical where the step sizes agree (sampling_eps = 0);
    with sampling_eps > 0, diffusers' dt = -1/n differs from the grid's -(1 - eps)/n, and the drift
    increment and the noise scale by exactly (1 - eps) and sqrt(1 - eps)."""
    from diffusers.schedulers.deprecated.scheduling_sde_vp import ScoreSdeVpScheduler as Theirs

    n = 10
    exact = TARGET.model(sd.VPSDE())
    for eps in (0.0, 1e-2):
        ours = ScoreSdeVpScheduler(sampling_eps=eps)
        ours.set_timesteps(n)
        theirs = Theirs(sampling_eps=eps)
        theirs.set_timesteps(n)
        x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
        for t in ours.timesteps:
            out = exact.eps(x, float(t))
            tt = torch.full((6,), float(t), dtype=F64)
            a, a_mean = ours.step_pred(out, x, t, generator=torch.Generator().manual_seed(1))
            b, b_mean = theirs.step_pred(out, x, tt, generator=torch.Generator().manual_seed(1))
            torch.testing.assert_close(a_mean - x, (1 - eps) * (b_mean - x), rtol=1e-6, atol=1e-9)
            torch.testing.assert_close(a - a_mean, math.sqrt(1 - eps) * (b - b_mean), rtol=1e-6, atol=1e-9)
            x = a
        if eps > 0:
            assert not torch.allclose(a_mean, b_mean, rtol=1e-4, atol=0)  # the difference is real


def test_score_sde_vp_bad_input():
    with pytest.raises(ValueError, match="sampling_eps"):
        ScoreSdeVpScheduler(sampling_eps=1.0)
    with pytest.raises(ValueError, match="prediction_type"):
        ScoreSdeVpScheduler(prediction_type="v_prediction")
    s = ScoreSdeVpScheduler()
    assert len(s.timesteps) == 2000  # set at construction (num_train_timesteps steps), as DDPM does
    s.step_pred(torch.zeros(2, 3), torch.zeros(2, 3), 1.0)
    s.set_timesteps(4)
    with pytest.raises(ValueError, match="timesteps"):
        s.step_pred(torch.zeros(2, 3), torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match="shape"):
        s.step_pred(torch.zeros(2, 4), torch.zeros(2, 3), 1.0)


# ------------------------------------------------------------------ optional dependency
def test_missing_diffusers_names_the_extra(monkeypatch):
    import importlib
    import sys

    for name in [m for m in sys.modules if m == "diffusers" or m.startswith("diffusers.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if diffusers were not installed
    monkeypatch.delitem(sys.modules, "sdesolve.diffusers")
    with pytest.raises(ImportError, match=r"pip install sdesolve\[diffusers\]"):
        importlib.import_module("sdesolve.diffusers")


# ------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_gpu_schedulers_step_without_host_sync():
    """After the first step (one timestep lookup), steps on CUDA make no host-device synchronization."""
    dev = torch.device("cuda")
    s = VDMScheduler(num_train_timesteps=1000, prediction_type="v_prediction", clip_sample=True)
    s.set_timesteps(20, device=dev)
    net = lambda x, k: 0.1 * x + k.float() / 1000  # noqa: E731
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(4, 3, 8, 8, device=dev, generator=gen)
    ts = list(s.timesteps)
    x = s.step(net(x, ts[0]), ts[0], x, generator=gen).prev_sample
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in ts[1:]:
            x = s.step(net(x, t), t, x, generator=gen).prev_sample
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert x.device.type == "cuda" and torch.isfinite(x).all()
    # the same loop on CPU coefficients, with the same CUDA noise stream, in float64
    s2 = VDMScheduler(num_train_timesteps=1000, prediction_type="v_prediction", clip_sample=True)
    s2.set_timesteps(20)
    gen = torch.Generator(device=dev).manual_seed(0)
    y = torch.randn(4, 3, 8, 8, device=dev, generator=gen)
    for t in s2.timesteps:
        y = s2.step(net(y, t.to(dev)), t.to(dev), y, generator=gen).prev_sample
    torch.testing.assert_close(x, y)

    v = ScoreSdeVpScheduler()
    v.set_timesteps(10, device=dev)
    z = torch.randn(4, 3, 8, 8, device=dev, generator=gen)
    ts = list(v.timesteps)
    z, _ = v.step_pred(-z, z, ts[0], generator=gen)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in ts[1:]:
            z, z_mean = v.step_pred(-z, z, t, generator=gen)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(z_mean).all()
