"""The diffusers scheduler contract, for VDMScheduler and ScoreSdeVpScheduler (issue 9).

What a diffusers user relies on when swapping a scheduler into a pipeline: configs that load with
the same noise schedule and timestep convention (``from_config``, ``from_pretrained``, across
DDPM / DDIM / PNDM, both ways), refusal of what cannot be mapped, step shapes and ``return_dict``,
``add_noise`` broadcasting, timestep dtypes (numpy scalars too), per-sample generators, float16,
``len``, ``order``, ``init_noise_sigma``, timesteps at construction. ScoreSdeVpScheduler, like
diffusers' own, has ``step_pred`` and no ``step`` (the documented difference).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers import DDIMScheduler, DDPMScheduler, PNDMScheduler  # noqa: E402
from helpers import tiny_unet  # noqa: E402

from sdesolve.diffusers import ScoreSdeVpScheduler, VDMScheduler, VDMSchedulerOutput  # noqa: E402

F32_ROUNDOFF = 1e-6  # diffusers forms alphas_cumprod in float32 (cumprod of 1000 factors), sdesolve in float64
CONFIGS = [
    {},
    {"beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1},
    {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "trailing"},
    {"beta_schedule": "sigmoid", "timestep_spacing": "linspace"},
    {"trained_betas": np.linspace(1e-4, 0.03, 1000).tolist(), "prediction_type": "v_prediction"},
]
IDS = ["default", "betas", "scaled_linear+offset", "cosine+trailing", "sigmoid+linspace", "trained_betas"]


def _public(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def _exact_eps(sched, x, k, s=0.5):
    """The exact eps of N(0, s^2) data at DDPM timestep k (float64 inside)."""
    a2 = sched.alphas_cumprod.double()[int(k)]
    return ((1 - a2).sqrt() * x.double() / (a2 * s**2 + 1 - a2)).to(x.dtype)


# ------------------------------------------------------------------ configs across schedulers
@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler, PNDMScheduler])
def test_a_diffusers_config_loads_with_its_schedule_and_timesteps(cls, kw, tmp_path):
    if cls is not DDPMScheduler and kw.get("beta_schedule") == "sigmoid":
        pytest.skip("DDIM and PNDM have no sigmoid schedule")
    theirs = cls(**kw)
    theirs.save_pretrained(tmp_path)
    for ours in (VDMScheduler.from_config(theirs.config), VDMScheduler.from_pretrained(tmp_path)):
        assert ours.config.num_train_timesteps == 1000
        torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=0, atol=F32_ROUNDOFF)
        for key in ("beta_start", "beta_end", "beta_schedule", "prediction_type", "timestep_spacing", "steps_offset"):
            assert ours.config[key] == theirs.config[key], key
        ddpm = DDPMScheduler.from_config(theirs.config)  # PNDM's own timesteps repeat (its PRK steps)
        for n in (50, 7):
            ours.set_timesteps(n)
            ddpm.set_timesteps(n)
            assert torch.equal(ours.timesteps, ddpm.timesteps), n
    # the other way: the diffusers scheduler built from VDMScheduler's config has the same schedule
    back = cls.from_config(VDMScheduler.from_config(theirs.config).config)
    torch.testing.assert_close(back.alphas_cumprod, theirs.alphas_cumprod, rtol=0, atol=0)


def test_compatibles_name_the_schedulers_it_stands_in_for_both_ways():
    assert set(VDMScheduler._compatibles) == {"DDPMScheduler", "DDIMScheduler", "PNDMScheduler"}
    s = VDMScheduler(num_train_timesteps=1000, beta_start=0.001)
    assert {c.__name__ for c in s.compatibles} >= {"DDPMScheduler", "DDIMScheduler", "PNDMScheduler"}
    for cls in s.compatibles:
        other = cls.from_config(s.config)
        torch.testing.assert_close(other.alphas_cumprod, s.alphas_cumprod, rtol=0, atol=F32_ROUNDOFF)
        again = VDMScheduler.from_config(other.config)
        assert {k: again.config[k] for k in _public(s.config)} == _public(s.config)


def test_issue_9_item_2_numbers():
    """A saved DDPM(beta 0.00085-0.012) config: alpha_bar at the middle step 0.162 (it was 0.079)."""
    d = DDPMScheduler(beta_start=0.00085, beta_end=0.012)
    v = VDMScheduler.from_config(d.config)
    assert abs(float(v.alphas_cumprod[499]) - 0.1618) < 5e-4
    assert abs(float(v.alphas_cumprod[499]) - float(d.alphas_cumprod[499])) < F32_ROUNDOFF
    assert type(VDMScheduler.from_config(DDPMScheduler().config).sde).__name__ == "DiscreteVPSDE"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DDPMScheduler(variance_type="learned_range").config, r"variance_type='learned_range'"),
        (lambda: DDPMScheduler(variance_type="fixed_large").config, r"variance_type='fixed_large'"),
        (lambda: DDIMScheduler(rescale_betas_zero_snr=True).config, r"rescale_betas_zero_snr=True"),
        (lambda: diffusers.EulerDiscreteScheduler(use_karras_sigmas=True).config, r"use_karras_sigmas=True"),
        (
            lambda: {**DDPMScheduler().config, "trained_betas": [0.1, 0.3]},
            r"trained_betas must hold num_train_timesteps=1000",
        ),
        (lambda: {"beta_start": 0.00085}, r"beta_start=0.00085 is not used in continuous time"),
        (lambda: {**DDPMScheduler().config, "beta_schedule": "cubic"}, r"beta_schedule must be one of"),
    ],
    ids=["learned-variance", "fixed-large", "zero-snr", "karras", "betas-length", "beta_start-continuous", "unknown"],
)
def test_what_cannot_be_mapped_is_refused(make, match):
    with pytest.raises(ValueError, match=match):
        VDMScheduler.from_config(make())


def test_unused_arguments_are_refused_not_ignored():
    for kw, match in [
        ({"num_train_timesteps": 1000, "beta_max": 10.0}, "beta_max=10.0 is not used"),
        ({"beta_schedule": "vdm", "beta_end": 0.01}, "beta_end=0.01 is not used"),
        ({"gamma_min": -10.0}, "gamma_min=-10.0 is not used by beta_schedule='linear'"),
        ({"steps_offset": 1}, "steps_offset=1 is not used in continuous time"),
        ({"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "cosine_s": 0.01}, "cosine_s=0.01"),
    ]:
        with pytest.raises(ValueError, match=match):
            VDMScheduler(**kw)


def test_signature_and_defaults_follow_the_vdm_scheduler_page():
    """The seed VDMScheduler (diffusers PR 7737): these arguments, in this order, with these defaults."""
    import inspect

    params = list(inspect.signature(VDMScheduler.__init__).parameters.values())[1:11]
    seed = [
        ("num_train_timesteps", None),
        ("beta_schedule", "linear"),
        ("clip_sample", True),
        ("prediction_type", "epsilon"),
        ("thresholding", False),
        ("dynamic_thresholding_ratio", 0.995),
        ("clip_sample_range", 1.0),
        ("sample_max_value", 1.0),
        ("timestep_spacing", "leading"),
        ("steps_offset", 0),
    ]
    assert [(p.name, p.default) for p in params] == seed
    for schedule in ("linear", "squaredcos_cap_v2", "sigmoid", "vdm"):
        VDMScheduler(beta_schedule=schedule).step(torch.zeros(2, 3), 1.0, torch.zeros(2, 3))


# ------------------------------------------------------------------ the timestep convention (item 3)
def test_timestep_k_is_alphas_cumprod_k():
    d = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    v = VDMScheduler.from_config(d.config)
    assert v.timesteps.tolist() == list(range(999, -1, -1)) == d.timesteps.tolist()
    v.set_timesteps(1000)
    assert v.timesteps[0] == 999 and v.timesteps[-1] == 0
    x0, noise = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    ks = torch.tensor([0, 500, 999])
    want = (
        d.alphas_cumprod.double()[ks].sqrt()[:, None] * x0 + (1 - d.alphas_cumprod.double()[ks]).sqrt()[:, None] * noise
    )
    torch.testing.assert_close(v.add_noise(x0, noise, ks), want, rtol=1e-6, atol=1e-6)
    assert (v.add_noise(x0, noise, 0) - x0).abs().max() > 1e-3  # k = 0 adds the first step's noise


# ------------------------------------------------------------------ step, add_noise, timesteps
def test_step_shapes_and_return_dict():
    s = VDMScheduler(num_train_timesteps=1000)
    s.set_timesteps(10)
    for shape in [(4, 3, 8, 8), (2, 5)]:
        x = torch.randn(shape)
        out = s.step(0.1 * x, s.timesteps[3], x, generator=torch.Generator().manual_seed(0))
        tup = s.step(0.1 * x, s.timesteps[3], x, generator=torch.Generator().manual_seed(0), return_dict=False)
        assert isinstance(out, VDMSchedulerOutput) and isinstance(tup, tuple) and len(tup) == 2
        assert out.prev_sample.shape == shape and out.pred_original_sample.shape == shape
        assert torch.equal(tup[0], out.prev_sample) and torch.equal(tup[1], out.pred_original_sample)
    assert not hasattr(ScoreSdeVpScheduler(), "step")  # as diffusers' ScoreSdeVpScheduler: step_pred only
    p = ScoreSdeVpScheduler()
    p.set_timesteps(5)
    x = torch.randn(2, 3, 4, 4)
    x_next, x_mean = p.step_pred(torch.randn(2, 3, 4, 4), x, p.timesteps[0], generator=torch.Generator())
    assert x_next.shape == x_mean.shape == x.shape


@pytest.mark.parametrize("sched", ["discrete", "continuous", "score_sde_vp"])
def test_add_noise_broadcasts_timesteps(sched):
    s = {
        "discrete": lambda: VDMScheduler(num_train_timesteps=1000),
        "continuous": lambda: VDMScheduler(),
        "score_sde_vp": lambda: ScoreSdeVpScheduler(),
    }[sched]()
    s.set_timesteps(50)
    x0, noise = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    t = s.timesteps[5]
    want = s.add_noise(x0, noise, t.repeat(4))
    number = int(t) if sched == "discrete" else float(t)
    numpy = np.int64(t) if sched == "discrete" else np.float32(t)
    for ts in (t, t[None], t.repeat(4), number, numpy, t.to(torch.int32) if sched == "discrete" else t.double()):
        torch.testing.assert_close(s.add_noise(x0, noise, ts), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"timesteps must be a scalar or of shape \(1,\) or \(4,\)"):
        s.add_noise(x0, noise, t.repeat(3))
    if sched != "score_sde_vp":
        v = s.get_velocity(x0, noise, t[None])
        torch.testing.assert_close(v, s.get_velocity(x0, noise, t.repeat(4)))


@pytest.mark.parametrize("discrete", [True, False], ids=["discrete", "continuous"])
def test_timestep_dtypes_give_the_same_step(discrete):
    s = VDMScheduler(num_train_timesteps=1000 if discrete else None)
    s.set_timesteps(20)
    x = torch.randn(3, 4)
    t = s.timesteps[4]
    kinds = [t, t[None], t.repeat(3), t.item()]
    kinds += [np.int64(t), np.int32(t), t.to(torch.int32), float(t)] if discrete else [np.float32(t), t.double()]
    outs = [s.step(0.1 * x, k, x, generator=torch.Generator().manual_seed(0)).prev_sample for k in kinds]
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


def test_timesteps_len_order_and_init_noise_sigma():
    for s, n in [(VDMScheduler(), 1000), (VDMScheduler(num_train_timesteps=100), 100), (ScoreSdeVpScheduler(), 2000)]:
        assert len(s) == n and s.order == 1 and s.init_noise_sigma == 1.0
        assert s.timesteps is not None and len(s.timesteps) == n  # at construction, as DDPMScheduler
        x = torch.randn(2, 3)
        assert s.scale_model_input(x, s.timesteps[0]) is x
    s = VDMScheduler(num_train_timesteps=100)
    s.set_timesteps(10, device="cpu")
    assert s.timesteps.device.type == "cpu" and s.num_inference_steps == 10
    s.set_timesteps(timesteps=[90, 50, 10])
    assert s.timesteps.tolist() == [90, 50, 10] and s.custom_timesteps
    with pytest.raises(ValueError, match="strictly decreasing"):
        s.set_timesteps(timesteps=[10, 50])


def test_score_sde_vp_set_timesteps_takes_diffusers_argument_order():
    s = ScoreSdeVpScheduler(sampling_eps=1e-3)
    s.set_timesteps(10, "cpu")
    assert s.timesteps.device.type == "cpu" and float(s.grid[-1]) == pytest.approx(1e-3)
    s.set_timesteps(10, torch.device("cpu"), sampling_eps=1e-2)
    assert float(s.grid[-1]) == pytest.approx(1e-2)
    with pytest.warns(DeprecationWarning, match="sampling_eps"):
        s.set_timesteps(10, 1e-4)  # the old positional order still works for a release
    assert float(s.grid[-1]) == pytest.approx(1e-4)


# ------------------------------------------------------------------ batch independence, precision
def test_a_list_of_generators_makes_each_sample_its_own():
    s = VDMScheduler.from_config(DDPMScheduler().config)
    d = DDPMScheduler()
    s.set_timesteps(20)
    d.set_timesteps(20)
    x = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    gens = lambda: [torch.Generator().manual_seed(100 + b) for b in range(4)]  # noqa: E731
    t = s.timesteps[3]
    full = s.step(0.2 * x, t, x, generator=gens()).prev_sample
    for b in range(4):  # sample b from its own generator, whatever the batch around it
        alone = s.step(0.2 * x[b : b + 1], t, x[b : b + 1], generator=[gens()[b]]).prev_sample
        torch.testing.assert_close(alone, full[b : b + 1], rtol=0, atol=0)
    theirs = d.step(0.2 * x, t, x, generator=gens()).prev_sample
    torch.testing.assert_close(full, theirs, rtol=1e-5, atol=1e-5)


def test_float16_keeps_float32_coefficients():
    """A 1000-step float16 loop stays at the float32 loop's statistics (the noise drawn in float32)."""
    stats = {}
    for dtype in (torch.float16, torch.float32):
        s = VDMScheduler.from_config(DDPMScheduler(clip_sample=False).config)
        assert s._coefs_for(torch.zeros(1, dtype=dtype))["mean_x"].dtype == torch.float32
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2048, 8, generator=g).to(dtype)
        for k in s.timesteps:
            eps = _exact_eps(s, x.float(), k)  # a float32 network output: the same noise in both runs
            x = s.step(eps, k, x, generator=g).prev_sample
            assert x.dtype == dtype
        stats[dtype] = x.double().std().item()
    assert abs(stats[torch.float16] - stats[torch.float32]) < 5e-4, stats


# ------------------------------------------------------------------ sample_max_value, trained_betas
def test_thresholding_below_one_and_trained_betas_as_ddpm(tmp_path):
    kw = dict(num_train_timesteps=1000, thresholding=True, sample_max_value=0.5, prediction_type="sample")
    x0 = 3 * torch.randn(3, 2, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(VDMScheduler(**kw)._threshold(x0), DDPMScheduler(**kw)._threshold_sample(x0))
    betas = np.linspace(2e-4, 0.03, 100)
    v = VDMScheduler(num_train_timesteps=100, trained_betas=betas)
    d = DDPMScheduler(num_train_timesteps=100, trained_betas=betas)
    torch.testing.assert_close(v.betas, d.betas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(v.alphas_cumprod, d.alphas_cumprod, rtol=0, atol=F32_ROUNDOFF)
    v.save_pretrained(tmp_path)
    assert VDMScheduler.from_pretrained(tmp_path).betas.tolist() == v.betas.tolist()


# ------------------------------------------------------------------ inside DDPMPipeline
def _images(scheduler, unet, steps):
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(
            batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=steps, output_type="pt"
        )
    return out.images


@pytest.mark.parametrize("steps", [10, pytest.param(1000, marks=pytest.mark.slow)])
def test_ddpm_pipeline_gives_the_same_images_as_ddpm_scheduler(steps):
    unet = tiny_unet()
    ddpm = DDPMScheduler()
    theirs = _images(ddpm, unet, steps)
    ours = _images(VDMScheduler.from_config(ddpm.config), unet, steps)
    tol = 1e-5  # float32 round-off of images in [0, 1] (measured: 1.1e-6 at 10 steps, 2.6e-6 at 50)
    if steps > 100:
        # round-off grows with the steps; the floor is DDPMScheduler against itself with its
        # alphas_cumprod formed in float64 (rounded once): 1.8e-5 at 1000 steps (ours: 1.5e-5)
        same = DDPMScheduler()
        same.alphas_cumprod = torch.cumprod(1 - same.betas.double(), 0).float()
        tol = max(tol, 2 * float((_images(same, unet, steps) - theirs).abs().max()))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=tol)
