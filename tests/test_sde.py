"""Forward processes: invariants (property tests), exact values from the papers, dtypes, shapes,
reverse-time drifts.

Every expected value here is written from the papers' formulas, independently of sdesolve's code.
"""

import math

import pytest
import torch
from helpers import UserVE, UserVP, processes
from hypothesis import assume, given
from hypothesis import strategies as st

import sdesolve as sd
from sdesolve.sde import ddpm_betas
from sdesolve.testing import sdes, times

F64 = torch.float64


def sde_and_time(kinds=None):
    return sdes(kinds).flatmap(lambda s: st.tuples(st.just(s), times(s)))


def sde_and_times(n=2, kinds=None):
    return sdes(kinds).flatmap(lambda s: st.tuples(st.just(s), st.lists(times(s), min_size=n, max_size=n)))


def d_dt(fn, t: torch.Tensor) -> torch.Tensor:
    """Derivative of an elementwise function of t by autograd (written here, independently of the core)."""
    with torch.enable_grad():
        tt = t.clone().requires_grad_(True)
        y = fn(tt)
        if not y.requires_grad:  # constant in t
            return torch.zeros_like(t)
        (d,) = torch.autograd.grad(y.sum(), tt)
    return d


#: every built-in process (the first five continuous) and diffusers' three DDPM schedules, from the registry
BUILTIN_IDS = ["vp", "subvp", "cosine", "ve", "vdm", "discrete", "ddpm-scaled", "ddpm-cos"]


def builtin_sdes():
    return list(processes(*BUILTIN_IDS).values())


# ------------------------------------------------------------------ property tests (hypothesis)
@given(sde_and_time())
def test_alpha_sigma_positive_finite_and_variance_preserving(case):
    sde, t = case
    a, s = sde.alpha(t), sde.sigma(t)
    assert torch.isfinite(a) and torch.isfinite(s) and a > 0 and s > 0
    if sde.variance_preserving:
        assert abs(float(a * a + s * s) - 1.0) < 1e-12


@given(sde_and_time())
def test_log_snr_is_log_alpha2_over_sigma2(case):
    sde, t = case
    lam = float(sde.log_snr(t))
    expected = math.log(float(sde.alpha(t)) ** 2 / float(sde.sigma(t)) ** 2)
    assert lam == pytest.approx(expected, rel=1e-12, abs=1e-12)


@given(sde_and_times(2))
def test_log_snr_strictly_decreasing(case):
    sde, (t1, t2) = case
    # strictly decreasing at resolvable separations (times one ulp apart may round to one log-SNR)
    assume(abs(t1 - t2) >= 1e-9)
    lo, hi = min(t1, t2), max(t1, t2)
    assert float(sde.log_snr(lo)) > float(sde.log_snr(hi))


@given(sde_and_time())
def test_f_is_dlogalpha_dt_and_moment_ode(case):
    sde, t = case
    t64 = torch.tensor([t], dtype=F64)
    dlog_alpha = d_dt(lambda s: torch.log(sde.alpha(s)), t64)
    dvar = d_dt(lambda s: sde.sigma(s) ** 2, t64)
    f, g2, var = sde.f(t64), sde.g2(t64), sde.sigma(t64) ** 2
    assert torch.allclose(f, dlog_alpha, rtol=1e-10, atol=1e-12 * (1 + float(dlog_alpha.abs())))
    rhs = 2 * f * var + g2
    scale = float(dvar.abs() + (2 * f * var).abs() + g2.abs())
    assert abs(float(dvar - rhs)) <= 1e-10 * scale
    assert float(g2) >= 0


@given(sde_and_time())
def test_t_of_log_snr_inverts_log_snr(case):
    sde, t = case
    t_back = float(sde.t_of_log_snr(sde.log_snr(t)))
    assert t_back == pytest.approx(t, abs=1e-9)


@given(sde_and_time(), st.sampled_from([(), (3,), (2, 3, 4), (2, 2, 3, 2)]))
def test_drift_and_diffusion_agree_with_f_and_g2(case, event):
    sde, t = case
    gen = torch.Generator().manual_seed(0)
    B = 3
    x = torch.randn((B,) + event, generator=gen, dtype=F64)
    # per-sample times: t and two others in [t_min, T]
    tb = torch.tensor([t, sde.t_min, 0.5 * (t + sde.T)], dtype=F64)
    f = sde.f(tb)
    expected = f.reshape((B,) + (1,) * len(event)) * x
    assert torch.allclose(sde.drift(x, tb), expected, rtol=1e-13, atol=0)
    assert torch.allclose(sde.drift(x, t), float(sde.f(t)) * x, rtol=1e-13, atol=0)
    assert torch.allclose(sde.diffusion(tb) ** 2, sde.g2(tb), rtol=1e-12, atol=0)


# ------------------------------------------------------------------ exact values from the papers
def _vp_log_mean(t, bmin, bmax):
    # Song et al. 2021, eq. (29): log mean coefficient of the VP SDE
    return -0.25 * t**2 * (bmax - bmin) - 0.5 * t * bmin


TS = torch.tensor([1e-3, 0.01, 0.1, 0.37, 0.5, 0.9, 1.0], dtype=F64)


@pytest.mark.parametrize("bmin,bmax", [(0.1, 20.0), (0.5, 5.0), (1.0, 1.0)])
def test_vp_exact(bmin, bmax):
    sde = sd.VPSDE(bmin, bmax)
    lm = _vp_log_mean(TS, bmin, bmax)
    beta = bmin + TS * (bmax - bmin)
    assert torch.allclose(sde.alpha(TS), torch.exp(lm), rtol=1e-14)
    assert torch.allclose(sde.sigma(TS), torch.sqrt(1 - torch.exp(2 * lm)), rtol=1e-12)
    assert torch.allclose(sde.f(TS), -0.5 * beta, rtol=1e-14)
    assert torch.allclose(sde.g2(TS), beta, rtol=1e-14)
    assert torch.allclose(sde.diffusion(TS), torch.sqrt(beta), rtol=1e-14)


@pytest.mark.parametrize("bmin,bmax", [(0.1, 20.0), (0.5, 5.0)])
def test_subvp_exact(bmin, bmax):
    sde = sd.SubVPSDE(bmin, bmax)
    lm = _vp_log_mean(TS, bmin, bmax)
    int_beta = bmin * TS + 0.5 * (bmax - bmin) * TS**2
    beta = bmin + TS * (bmax - bmin)
    # Song et al. 2021, eq. (31): std = 1 - exp(2 log_mean_coeff) -- no square root
    assert torch.allclose(sde.sigma(TS), 1 - torch.exp(2 * lm), rtol=1e-12)
    assert torch.allclose(sde.alpha(TS), torch.exp(lm), rtol=1e-14)
    # g^2 = beta (1 - exp(-2 int_0^t beta))
    assert torch.allclose(sde.g2(TS), beta * (1 - torch.exp(-2 * int_beta)), rtol=1e-12)
    assert torch.allclose(sde.f(TS), -0.5 * beta, rtol=1e-14)


@pytest.mark.parametrize("smin,smax", [(0.01, 50.0), (0.002, 378.0)])
def test_ve_exact(smin, smax):
    sde = sd.VESDE(smin, smax)
    sigma = smin * (smax / smin) ** TS
    assert torch.allclose(sde.sigma(TS), sigma, rtol=1e-13)
    assert torch.allclose(sde.diffusion(TS), sigma * math.sqrt(2 * math.log(smax / smin)), rtol=1e-13)
    assert torch.equal(sde.alpha(TS), torch.ones_like(TS))
    assert torch.equal(sde.f(TS), torch.zeros_like(TS))
    assert sde.prior_std == smax
    assert float(sde.sigma(1.0)) == pytest.approx(smax, rel=1e-14)


@pytest.mark.parametrize("gmin,gmax", [(-13.3, 5.0), (-30.0, 30.0), (-2.0, 1.0)])
def test_vdm_exact(gmin, gmax):
    sde = sd.VDMSDE(sd.FixedLinearGamma(gmin, gmax))
    gamma = gmin + (gmax - gmin) * TS
    sig2 = 1 / (1 + torch.exp(-gamma))  # sigmoid, written out
    alpha2 = 1 / (1 + torch.exp(gamma))
    assert torch.allclose(sde.sigma(TS) ** 2, sig2, rtol=1e-13)
    assert torch.allclose(sde.alpha(TS) ** 2, alpha2, rtol=1e-13)
    assert torch.allclose(sde.log_snr(TS), -gamma, rtol=1e-14)
    # Kingma et al. 2021, appendix: f = -1/2 gamma' sigma^2, g^2 = gamma' sigma^2
    assert torch.allclose(sde.f(TS), -0.5 * (gmax - gmin) * sig2, rtol=1e-13)
    assert torch.allclose(sde.g2(TS), (gmax - gmin) * sig2, rtol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vdm_extreme_gamma_stays_finite(dtype):
    sde = sd.VDMSDE(sd.FixedLinearGamma(-30.0, 30.0))
    t = torch.linspace(0, 1, 101, dtype=dtype)
    gamma = -30.0 + 60.0 * t.double()
    for name in ("alpha", "sigma", "log_snr", "f", "g2", "diffusion", "log_alpha", "log_sigma"):
        v = getattr(sde, name)(t)
        assert v.dtype == dtype and bool(torch.isfinite(v).all()), name
    assert bool((sde.alpha(t) > 0).all()) and bool((sde.sigma(t) > 0).all())
    # relative accuracy at the extremes, in the caller's dtype (sigmoid(-30) ~ 9.4e-14 is a normal float32)
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.allclose(sde.sigma(t).double() ** 2, torch.sigmoid(gamma), rtol=rtol, atol=0)
    assert torch.allclose(sde.alpha(t).double() ** 2, torch.sigmoid(-gamma), rtol=rtol, atol=0)
    assert torch.allclose(sde.g2(t).double(), 60.0 * torch.sigmoid(gamma), rtol=rtol, atol=0)
    tb = sde.t_of_log_snr(sde.log_snr(t))
    assert torch.allclose(tb.double(), t.double(), atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_cosine_matches_nichol_dhariwal_alpha_bar():
    s = 0.008
    sde = sd.CosineVPSDE(s=s)

    def alpha_bar(t):  # Nichol & Dhariwal 2021, eq. (17)
        return (torch.cos((t + s) / (1 + s) * math.pi / 2) / math.cos(s / (1 + s) * math.pi / 2)) ** 2

    t = torch.linspace(0.001, sde.T, 50, dtype=F64)
    assert torch.allclose(sde.alpha(t) ** 2, alpha_bar(t), rtol=1e-12)
    assert torch.allclose(sde.sigma(t) ** 2, 1 - alpha_bar(t), rtol=1e-11)
    # the cap: T is where the log-SNR reaches log_snr_min (default -10), before alpha reaches 0 at t = 1
    assert 0.99 < sde.T < 1.0
    assert float(sde.log_snr(sde.T)) == pytest.approx(-10.0, abs=1e-10)
    ab_T = float(alpha_bar(torch.tensor(sde.T, dtype=F64)))
    assert math.log(ab_T / (1 - ab_T)) == pytest.approx(-10.0, abs=1e-9)
    with pytest.raises(ValueError, match="t must lie in"):
        sde.alpha(1.0)
    assert float(sd.CosineVPSDE(log_snr_min=-5.0).T) < sde.T


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_discrete_matches_alphas_cumprod_and_network_time(name):
    sde = sd.DiscreteVPSDE.from_schedule(name, 1000)
    betas = ddpm_betas(name, 1000)
    ac = torch.cumprod(1 - betas, 0)  # Ho et al. 2020: alpha_bar_k = prod_{i<=k} (1 - beta_i)
    k = torch.tensor([0, 1, 10, 499, 998, 999])
    t = (k.double() + 1) / 1000
    assert torch.allclose(sde.alpha(t) ** 2, ac[k], rtol=1e-12)
    assert torch.allclose(sde.network_time(t), k.double(), atol=1e-10)
    assert torch.allclose(sde.timestep_to_t(k), t, rtol=0, atol=0)
    # log alpha is linear in t between the knots (t_k, 1/2 log alpha_bar_k), and (0, 0)
    mid = (k.double() + 0.5) / 1000
    la_prev = torch.where(k > 0, 0.5 * torch.log(ac[(k - 1).clamp(min=0)]), torch.zeros(k.shape, dtype=F64))
    expected = 0.5 * (la_prev + 0.5 * torch.log(ac[k]))
    assert torch.allclose(torch.log(sde.alpha(mid)), expected, rtol=1e-12)
    # piecewise-constant f and g^2 = -2 f on each segment
    assert torch.allclose(sde.f(mid), (0.5 * torch.log(ac[k]) - la_prev) * 1000, rtol=1e-10)
    assert torch.allclose(sde.g2(mid), -2 * sde.f(mid), rtol=1e-14)


def test_discrete_from_alphas_cumprod_equals_from_betas():
    betas = ddpm_betas("linear", 100, 1e-3, 0.2)
    a = sd.DiscreteVPSDE(betas)
    b = sd.DiscreteVPSDE(alphas_cumprod=torch.cumprod(1 - betas, 0))
    t = torch.linspace(0.01, 1, 77, dtype=F64)
    assert torch.allclose(a.alpha(t), b.alpha(t), rtol=1e-13)
    assert a.t_min == 0.01
    # from_schedule passes every schedule argument on (none falls back to a default)
    c = sd.DiscreteVPSDE.from_schedule("linear", 100, 1e-3, 0.2)
    assert torch.equal(c.alpha(t), a.alpha(t))


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_ddpm_betas_match_diffusers(name):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, beta_start=1e-4, beta_end=0.02)
    ours = ddpm_betas(name, 1000, 1e-4, 0.02)
    # diffusers builds betas in float32 (linspace, then squared for scaled_linear): a few float32
    # roundings apart; u = 2^-24. linspace: <= 3u; squaring doubles it and rounds once more: <= 7u.
    u = 2.0**-24
    rtol = 7 * u if name == "scaled_linear" else 3 * u
    assert torch.allclose(sched.betas.double(), ours, rtol=rtol, atol=0)
    sde = sd.DiscreteVPSDE.from_schedule(name, 1000)
    t = (torch.arange(1000, dtype=F64) + 1) / 1000
    ac_diffusers = torch.cumprod(1 - sched.betas.double(), 0)
    assert torch.allclose(sde.alpha(t) ** 2, ac_diffusers, rtol=1e-5)


def test_ddpm_betas_and_from_schedule_default_to_diffusers_ddpm_defaults():
    """``ddpm_betas()`` and ``DiscreteVPSDE.from_schedule()`` without arguments are diffusers'
    ``DDPMScheduler()``: linear betas from 1e-4 to 0.02 over 1000 steps (Ho et al. 2020)."""
    from diffusers import DDPMScheduler

    ref = DDPMScheduler().betas.double()  # float32 linspace: within 3 float32 units of the exact one
    assert ref.shape == ddpm_betas().shape == (1000,)
    assert torch.allclose(ddpm_betas(), ref, rtol=3 * 2.0**-24, atol=0)
    exact = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    assert torch.equal(ddpm_betas(), exact)
    sde = sd.DiscreteVPSDE.from_schedule()
    assert sde.num_train_timesteps == 1000 and sde.t_min == 1e-3
    assert torch.allclose(sde.alphas_cumprod, torch.cumprod(1 - exact, 0), rtol=1e-13, atol=0)


def test_prior_sample_takes_any_batch_of_any_event_shape():
    """(B,) is a batch of scalars, sizes of 1 are sizes; the draw is N(0, prior_std^2) of exactly that shape,
    on the generator's device by default."""
    sde = sd.VESDE()
    for shape in ((1,), (3,), (1, 1), (2, 1, 3)):
        z = sde.prior_sample(shape, generator=torch.Generator().manual_seed(0), dtype=F64)
        assert z.shape == shape
        ref = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=F64) * sde.prior_std
        assert torch.equal(z, ref)


def test_a_ddpm_schedule_adds_nothing_to_a_checkpoint():
    """The schedule's tensors (knots, ``alphas_cumprod``) are rebuilt from the constructor, so they are not
    state: a ``ScoreModel``'s state_dict is the network's alone, and the network's own checkpoint loads into
    it strictly (``alphas_cumprod`` is still an attribute that moves with the module)."""
    net = torch.nn.Linear(3, 3)
    sde = sd.DiscreteVPSDE.from_schedule("linear", 50)
    assert sde.state_dict() == {}
    model = sd.ScoreModel(net, sde, prediction="eps")
    assert set(model.state_dict()) == {"net.weight", "net.bias"}
    model.load_state_dict({f"net.{k}": v for k, v in torch.nn.Linear(3, 3).state_dict().items()}, strict=True)
    assert sde.alphas_cumprod.shape == (50,) and sde.alphas_cumprod.dtype == F64


@pytest.mark.gpu
def test_a_ddpm_process_left_on_the_host_answers_device_times_on_the_device():
    """A DiscreteVPSDE that was not moved to the GPU gives device answers for device times, equal to its
    host answers (and to a moved copy's); the knots are copied to the device once and kept, so a step that
    asks for alpha(t) and f(t) can be captured in a CUDA graph (a host-to-device copy inside is refused)."""
    dev = torch.device("cuda")
    sde = sd.DiscreteVPSDE.from_schedule("linear", 100)
    moved = sd.DiscreteVPSDE.from_schedule("linear", 100).to(dev)
    t_host = torch.linspace(0.01, 1.0, 7, dtype=F64)
    t = t_host.to(dev)
    for s in (sde, moved):
        for name in ("alpha", "sigma", "f", "log_snr"):
            got = getattr(s, name)(t)
            assert got.device == t.device, name
            torch.testing.assert_close(got.cpu(), getattr(sde, name)(t_host), rtol=1e-14, atol=0)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture
        sde._log_alpha(t), sde._f(t)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        la, f = sde._log_alpha(t), sde._f(t)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(la.cpu(), sde._log_alpha(t_host), rtol=1e-14, atol=0)
    torch.testing.assert_close(f.cpu(), sde._f(t_host), rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_a_one_step_ddpm_schedule_is_diffusers_one_step_schedule(name):
    """N = 1 is a valid schedule (diffusers builds it): beta_start for the linear ones, max_beta for the
    cosine one (1 - alpha_bar(1) / alpha_bar(0) = 1 - cos(pi/2)^2 / cos(0.008 pi / 2.016)^2 = 1, capped);
    with an explicit t_min it is a process whose alpha(T)^2 = 1 - beta."""
    from diffusers import DDPMScheduler

    want = {"linear": 1e-4, "scaled_linear": 1e-4, "squaredcos_cap_v2": 0.999}[name]
    betas = ddpm_betas(name, 1)
    assert betas.shape == (1,) and float(betas[0]) == pytest.approx(want, rel=1e-15)
    ref = DDPMScheduler(num_train_timesteps=1, beta_schedule=name).betas.double()
    assert torch.allclose(betas, ref, rtol=7 * 2.0**-24, atol=0)
    sde = sd.DiscreteVPSDE(betas, t_min=0.0)
    assert float(sde.alpha(1.0)) ** 2 == pytest.approx(1 - want, rel=1e-12)


# ------------------------------------------------------------------ dtypes and shapes
@pytest.mark.parametrize("sde", builtin_sdes(), ids=BUILTIN_IDS)
def test_coefficients_dtype_and_shape(sde):
    t = 0.5 * (sde.t_min + sde.T)
    names = ("alpha", "sigma", "log_snr", "f", "g2", "diffusion")
    for name in names:
        fn = getattr(sde, name)
        ref = fn(t)
        assert ref.dtype == F64 and ref.shape == (), name
        for dtype, rtol in ((torch.float64, 0), (torch.float32, 1e-6), (torch.float16, 1e-3)):
            v0 = fn(torch.tensor(t, dtype=dtype))
            assert v0.dtype == dtype and v0.shape == ()
            # the float64 result of the rounded time, rounded once to the caller's dtype
            t_rounded = float(torch.tensor(t, dtype=dtype))
            assert float(v0) == pytest.approx(float(fn(t_rounded)), rel=max(rtol, 1e-15))
            vb = fn(torch.full((5,), t, dtype=dtype))
            assert vb.dtype == dtype and vb.shape == (5,)
    assert sde.t_of_log_snr(0.0).dtype == F64
    assert sde.t_of_log_snr(torch.tensor([0.0, 1.0], dtype=torch.float32)).dtype == torch.float32


@pytest.mark.parametrize("sde", builtin_sdes(), ids=BUILTIN_IDS)
def test_marginal_prob_values(sde):
    """marginal_prob(x0, t) = (alpha(t) x0, sigma(t)) for per-sample and scalar times, in x0's dtype."""
    gen = torch.Generator().manual_seed(3)
    x0 = 2.0 + 3.0 * torch.randn(4, 3, 2, generator=gen, dtype=F64)
    t = torch.tensor([float(sde.t_min), 0.25, 0.5, 0.9 * float(sde.T)], dtype=F64)
    mean, std = sde.marginal_prob(x0, t)
    a, s = sde.alpha(t).reshape(4, 1, 1), sde.sigma(t).reshape(4, 1, 1)
    torch.testing.assert_close(mean, a * x0, rtol=1e-14, atol=0)
    torch.testing.assert_close(std.expand_as(x0), s.expand_as(x0), rtol=1e-14, atol=0)
    mean32, std32 = sde.marginal_prob(x0.float(), 0.5)
    assert mean32.dtype == torch.float32 and std32.dtype == torch.float32
    torch.testing.assert_close(mean32.double(), float(sde.alpha(0.5)) * x0.float().double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(float(std32), float(sde.sigma(0.5)), rtol=1e-6, atol=0)


@pytest.mark.parametrize("sde", builtin_sdes()[:5], ids=BUILTIN_IDS[:5])
@pytest.mark.parametrize("event", [(2,), (3, 4, 4), (2, 3, 2, 2)])
def test_perturb_marginal_prob_prior_shapes(sde, event):
    gen = torch.Generator().manual_seed(1)
    B = 4
    x0 = torch.randn((B,) + event, generator=gen, dtype=torch.float32)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32)
    t = torch.tensor([sde.t_min, 0.3, 0.6, 0.9], dtype=torch.float32)
    xt = sde.perturb(x0, t, noise)
    bc = (B,) + (1,) * len(event)
    a, s = sde.alpha(t.double()).reshape(bc), sde.sigma(t.double()).reshape(bc)
    assert xt.dtype == torch.float32 and xt.shape == x0.shape
    assert torch.allclose(xt.double(), a * x0.double() + s * noise.double(), rtol=1e-5, atol=1e-6)
    mean, std = sde.marginal_prob(x0, 0.3)
    assert mean.shape == x0.shape and std.shape == ()
    z = sde.prior_sample((B,) + event, generator=gen, dtype=torch.float64)
    assert z.shape == (B,) + event and z.dtype == torch.float64
    lp = sde.prior_logp(z)
    ref = torch.distributions.Normal(0.0, torch.tensor(float(sde.prior_std), dtype=F64)).log_prob(z)
    assert lp.shape == (B,) and torch.allclose(lp, ref.reshape(B, -1).sum(1), rtol=1e-13)


def test_prior_sample_moments_and_generator():
    sde = sd.VESDE(0.01, 50.0)
    z = sde.prior_sample((20000, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    n = z.numel()
    assert abs(float(z.mean())) < 5 * 50 / math.sqrt(n)
    assert abs(float(z.std()) / 50 - 1) < 5 / math.sqrt(2 * n)
    z2 = sde.prior_sample((20000, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    assert torch.equal(z, z2)


# ------------------------------------------------------------------ reverse time
@pytest.mark.parametrize("sde", builtin_sdes(), ids=BUILTIN_IDS)
def test_reverse_and_probability_flow_drifts(sde):
    target = sd.GaussianMixture([0.3, 0.7], torch.tensor([[1.0, -1.0], [-0.5, 2.0]]), [0.5, 1.5])
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 2, generator=gen, dtype=F64)
    t = torch.linspace(sde.t_min, sde.T, 5, dtype=F64)
    f, g2 = sde.f(t)[:, None], sde.g2(t)[:, None]
    s = target.marginal_score(x, t, sde)
    model = target.model(sde)
    rev, pf = sde.reverse(model), sde.probability_flow(model)
    assert torch.allclose(rev.drift(x, t), f * x - g2 * s, rtol=1e-12, atol=1e-12)
    assert torch.allclose(pf.drift(x, t), f * x - 0.5 * g2 * s, rtol=1e-12, atol=1e-12)
    assert torch.allclose(rev.diffusion(t), torch.sqrt(g2[:, 0]), rtol=1e-14)
    assert torch.equal(pf.diffusion(t), torch.zeros_like(t))
    assert isinstance(sde.reverse(model, probability_flow=True), sd.ProbabilityFlowODE)
    # a plain callable is a score
    rev2 = sde.reverse(lambda x, t: target.marginal_score(x, t, sde))
    assert torch.allclose(rev2.drift(x, t), f * x - g2 * s, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", BUILTIN_IDS[:5])
def test_reverse_time_terms_clamp_times_into_the_process_and_keep_the_callers_dtype(name):
    """Adaptive solvers probe times just outside [0, T]: drift and diffusion there are those at the nearer
    end (the model is evaluated at the clamped time); a float32 state gets a float32 drift for per-sample
    float64 times, and a float32 time a float32 diffusion."""
    sde = BUILTINS[name]
    target = sd.Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([0.5, 1.5]))
    x = torch.tensor([[0.3, -1.2], [2.0, 0.1], [-0.7, 0.4]], dtype=torch.float32)
    T = float(sde.T)
    for term in (sde.reverse(target.model(sde)), sde.probability_flow(target.model(sde))):
        for outside, end in ((T + 1e-3, T), (-1e-3, 0.0)):
            probe, at_end = (torch.full((3,), v, dtype=F64) for v in (outside, end))
            torch.testing.assert_close(term.drift(x, probe), term.drift(x, at_end), rtol=0, atol=0)
            torch.testing.assert_close(term.diffusion(outside), term.diffusion(end), rtol=0, atol=0)
        assert term.drift(x, torch.tensor([0.2, 0.5, 0.9], dtype=F64)).dtype == torch.float32
        assert term.diffusion(torch.tensor(0.5, dtype=torch.float32)).dtype == torch.float32
        assert term.diffusion(0.5).dtype == F64


@pytest.mark.parametrize("sde", builtin_sdes()[:5], ids=BUILTIN_IDS[:5])
def test_probability_flow_drift_is_velocity_of_exact_gaussian_flow(sde):
    # The exact probability-flow map of a Gaussian law (targets.Gaussian.flow) has velocity
    # f x - 1/2 g^2 s: checks the sign and the 1/2 end to end.
    target = sd.Gaussian(torch.tensor([0.7, -1.2]), torch.tensor([0.3, 2.0]))
    x0 = torch.tensor([[0.1, 0.5], [1.0, -3.0]], dtype=F64)
    t0, t = sde.t_min, 0.5 * sde.T
    h = 1e-4 * sde.T
    xs = [target.flow(x0, t0, t + k * h, sde) for k in (-2, -1, 1, 2)]
    velocity = (xs[0] - 8 * xs[1] + 8 * xs[2] - xs[3]) / (12 * h)
    drift = sde.probability_flow(target.model(sde)).drift(target.flow(x0, t0, t, sde), t)
    assert torch.allclose(velocity, drift, rtol=1e-7, atol=1e-9)


@pytest.mark.gpu
def test_cuda_coefficients_and_targets():
    dev = torch.device("cuda")
    target = sd.GaussianMixture([0.5, 0.5], torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 0.5)
    for sde in builtin_sdes():
        sde = sde.to(dev)
        t = torch.linspace(sde.t_min, sde.T, 4, device=dev)
        for name in ("alpha", "sigma", "log_snr", "f", "g2", "diffusion"):
            v = getattr(sde, name)(t)
            assert v.device.type == "cuda" and v.dtype == torch.float32
            assert torch.allclose(v.cpu(), getattr(sde, name)(t.cpu()), rtol=1e-6)
        x = torch.randn(4, 2, device=dev, dtype=torch.float64)
        assert sde.drift(x, t).device.type == "cuda"
        s = target.marginal_score(x, t, sde)
        assert s.device.type == "cuda"
        assert torch.allclose(s.cpu(), target.marginal_score(x.cpu(), t.cpu(), sde.cpu()), rtol=1e-10)
        sde.to(dev)
        lp = target.marginal_log_prob(x, t, sde)
        assert lp.device.type == "cuda" and lp.shape == (4,)
        m = target.model(sde)
        assert torch.allclose(m.eps(x, t), -sde.sigma(t.double())[:, None] * s, rtol=1e-10)
        z = sde.prior_sample((4, 2), generator=torch.Generator(dev).manual_seed(0))
        assert z.device.type == "cuda" and sde.prior_logp(z).shape == (4,)
        # none of this synchronizes with the host when t and x live on the device
        rev = sde.reverse(m)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for name in ("alpha", "sigma", "log_snr", "f", "g2", "diffusion"):
                getattr(sde, name)(t)
            sde.drift(x, t)
            sde.perturb(x, t, x)
            target.marginal_score(x, t, sde)
            target.marginal_log_prob(x, t, sde)
            m.eps(x, t)
            m.x0(x, t)
            rev.drift(x, t)
        finally:
            torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------ user subclasses (base-class defaults)
class LearnedScale(sd.LinearSDE):
    """A process with a learnable parameter: derived coefficients must stay differentiable in it."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(3.0, dtype=F64))

    def _log_alpha(self, t):
        return -self.k * t * t

    def _log_sigma(self, t):
        return 0.5 * torch.log(-torch.expm1(2 * self._log_alpha(t)))


def test_base_class_defaults_match_closed_forms():
    t = torch.linspace(1e-3, 1, 41, dtype=F64)
    user, ref = UserVP(), sd.VPSDE()
    assert torch.allclose(user.f(t), ref.f(t), rtol=1e-13)
    assert torch.allclose(user.g2(t), ref.g2(t), rtol=1e-10)
    assert torch.allclose(user.t_of_log_snr(ref.log_snr(t)), t, rtol=0, atol=1e-13)
    # coefficients of a fixed process carry no autograd graph (they would leak into samplers)
    assert not user.f(0.5).requires_grad and not user.g2(t).requires_grad
    ve, ve_ref = UserVE(), sd.VESDE()
    assert torch.equal(ve.f(t), torch.zeros_like(t))
    assert torch.allclose(ve.g2(t), ve_ref.g2(t), rtol=1e-12)
    assert torch.allclose(ve.t_of_log_snr(ve_ref.log_snr(t)), t, rtol=0, atol=1e-13)
    assert not ve.g2(t).requires_grad


def test_base_class_derivatives_stay_differentiable_in_learned_parameters():
    sde = LearnedScale()
    t = torch.tensor([0.2, 0.7], dtype=F64)
    f = sde.f(t)  # f = -2 k t
    assert torch.allclose(f, -2 * 3.0 * t, rtol=1e-14)
    (dk,) = torch.autograd.grad(f.sum(), sde.k)
    assert float(dk) == pytest.approx(float(-2 * t.sum()), rel=1e-14)
    g2 = sde.g2(t)  # g^2 = -2 f for a VP process = 4 k t
    assert torch.allclose(g2, 4 * 3.0 * t, rtol=1e-12)
    (dk,) = torch.autograd.grad(g2.sum(), sde.k)
    assert float(dk) == pytest.approx(float(4 * t.sum()), rel=1e-12)
    with torch.no_grad():
        assert not sde.f(t).requires_grad
    # a closure over a learned process (as losses use): the graph to the parameters is kept
    from sdesolve.sde.base import _derivative

    d = _derivative(lambda s: -sde._log_snr(s), t)
    (dk,) = torch.autograd.grad(d.sum(), sde.k)
    assert torch.isfinite(dk) and float(dk) != 0.0
    # a time that requires grad: d f/dt = -2 k
    tt = t.clone().requires_grad_(True)
    (dt,) = torch.autograd.grad(sde.f(tt).sum(), tt)
    assert torch.allclose(dt, torch.full_like(t, -6.0), rtol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_T_rounded_to_the_callers_dtype_is_accepted(dtype):
    # CosineVPSDE's T = 0.99567657...: float32(T) and float16(T) round to either side of T
    sde = sd.CosineVPSDE()
    t = torch.tensor([sde.t_min, sde.T], dtype=dtype)
    assert float(t[1]) != sde.T
    a = sde.alpha(t)
    assert a.dtype == dtype and bool(torch.isfinite(a).all())
    assert float(sde.log_snr(t[1:]).float()) == pytest.approx(-10.0, abs=0.05 if dtype == torch.float16 else 1e-4)
    target = sd.Gaussian(torch.zeros(2))
    assert torch.isfinite(target.marginal_log_prob(torch.zeros(2, 2, dtype=dtype), t, sde)).all()
    # but not a whole step past T
    with pytest.raises(ValueError, match="t must lie in"):
        sde.alpha(torch.tensor([sde.T + 0.01], dtype=dtype))


# ------------------------------------------------------------------ closed forms in 40-digit arithmetic
# Each built-in process's alpha(t) and sigma(t) written from its paper with mpmath, independently of
# the code; the transition, sigma/alpha, gamma and gamma' are checked against them.
import mpmath as mp  # noqa: E402
import numpy as np  # noqa: E402


def _mp_vp(bmin, bmax, sub=False):
    def coefs(t):
        a = mp.exp(-t * t * (bmax - bmin) / 4 - t * bmin / 2)
        return a, (1 - a * a) if sub else mp.sqrt(1 - a * a)

    return coefs


def _mp_cosine(s):
    def coefs(t):
        a = mp.cos(mp.pi / 2 * (t + s) / (1 + s)) / mp.cos(mp.pi / 2 * s / (1 + s))
        return a, mp.sqrt(1 - a * a)

    return coefs


def _mp_ve(smin, smax):
    return lambda t: (mp.mpf(1), smin * (mp.mpf(smax) / smin) ** t)


def _mp_vdm(gmin, gmax):
    def coefs(t):
        g = gmin + (gmax - gmin) * t
        return mp.sqrt(1 / (1 + mp.exp(g))), mp.sqrt(1 / (1 + mp.exp(-g)))

    return coefs


def _mp_betas(name, n=1000):
    """DDPM's betas by diffusers' schedule names (Ho et al. 2020; latent diffusion; Nichol & Dhariwal 2021)."""
    if name == "linear":
        return [mp.mpf("1e-4") + (mp.mpf("0.02") - mp.mpf("1e-4")) * i / (n - 1) for i in range(n)]
    if name == "scaled_linear":
        a, b = mp.sqrt(mp.mpf("1e-4")), mp.sqrt(mp.mpf("0.02"))
        return [(a + (b - a) * i / (n - 1)) ** 2 for i in range(n)]

    def abar(u):
        return mp.cos((u + mp.mpf("0.008")) / mp.mpf("1.008") * mp.pi / 2) ** 2

    return [min(1 - abar(mp.mpf(i + 1) / n) / abar(mp.mpf(i) / n), mp.mpf("0.999")) for i in range(n)]


def _mp_discrete(name):
    """log alpha interpolated linearly in t between (0, 0) and the knots (k/N, 1/2 log alphas_cumprod[k-1])."""
    mp.mp.dps = 40
    knots = [mp.mpf(0)]
    for b in _mp_betas(name):
        knots.append(knots[-1] + mp.log(1 - b) / 2)

    def coefs(t):
        u = mp.mpf(t) * 1000
        k = min(int(mp.floor(u)), 999)
        la = knots[k] + (u - k) * (knots[k + 1] - knots[k])
        a = mp.exp(la)
        return a, mp.sqrt(1 - a * a)

    return coefs


MP_COEFS = {
    "vp": _mp_vp(0.1, 20.0),
    "subvp": _mp_vp(0.1, 20.0, sub=True),
    "cosine": _mp_cosine(mp.mpf("0.008")),
    "ve": _mp_ve(mp.mpf("0.01"), mp.mpf(50)),
    "vdm": _mp_vdm(mp.mpf("-13.3"), mp.mpf(5)),
    "discrete": _mp_discrete("linear"),
    "ddpm-scaled": _mp_discrete("scaled_linear"),
    "ddpm-cos": _mp_discrete("squaredcos_cap_v2"),
}
BUILTINS = dict(zip(BUILTIN_IDS, builtin_sdes()))


def _two_times(sde):
    """(s, t) with t_min <= s <= t <= T, some pairs very close (where the transition variance cancels)."""
    T, lo = float(sde.T), float(sde.t_min)
    close = st.tuples(st.floats(lo, T), st.floats(1e-12, 1e-4)).map(lambda p: (p[0], min(T, p[0] + p[1])))
    far = st.tuples(st.floats(lo, T), st.floats(lo, T)).map(sorted)
    return st.one_of(close, far)


@pytest.mark.parametrize("name", BUILTIN_IDS)
@given(data=st.data())
def test_transition_matches_the_closed_form(name, data):
    sde, coefs = BUILTINS[name], MP_COEFS[name]
    s, t = data.draw(_two_times(sde))
    mp.mp.dps = 40
    (a_t, s_t), (a_s, s_s) = coefs(mp.mpf(t)), coefs(mp.mpf(s))
    ratio = a_t / a_s
    var_ref = s_t**2 - ratio**2 * s_s**2  # exact in 40 digits: no cancellation left at float64 precision
    alpha_ts, var = sde.transition(t, s)
    assert float(alpha_ts) == pytest.approx(float(ratio), rel=1e-12)
    # sigma^2_{t|s} = sigma_t^2 (1 - e^{lambda_t - lambda_s}): its error is sigma_t^2 times the error of
    # lambda_t - lambda_s, which float64 knows to eps (|lambda| + |u lambda'(u)|) at each of u = s, t
    # (the second term: t itself is rounded; it dominates on DDPM's capped last steps, lambda' ~ 7e3)
    cond = sum(
        abs(float(2 * mp.log(a / sg))) + abs(u * float(sde._gamma_prime(torch.tensor([u], dtype=F64))))
        for u, (a, sg) in ((t, (a_t, s_t)), (s, (a_s, s_s)))
        if sg > 0
    )
    tol = 8 * 2.0**-52 * (1.0 + cond)
    assert abs(float(var) - float(var_ref)) <= 1e-9 * float(var_ref) + tol * float(s_t**2)
    assert float(var) >= 0.0


@pytest.mark.parametrize("name", BUILTIN_IDS)
@given(data=st.data())
def test_sigma_over_alpha_gamma_and_gamma_prime_match_closed_forms(name, data):
    sde, coefs = BUILTINS[name], MP_COEFS[name]
    t = data.draw(times(sde))
    mp.mp.dps = 40
    a, s = coefs(mp.mpf(t))
    assert float(sde.sigma_over_alpha(t)) == pytest.approx(float(s / a), rel=1e-12)
    assert float(sde.t_of_sigma_over_alpha(float(s / a))) == pytest.approx(t, abs=1e-10)
    t64 = torch.tensor([t], dtype=F64)
    gamma_ref = 2 * mp.log(s / a)  # gamma = -log SNR
    assert float(sde._gamma(t64)) == pytest.approx(float(gamma_ref), rel=1e-12, abs=1e-12)
    if isinstance(sde, sd.DiscreteVPSDE):
        # piecewise: on the segment of t, gamma' = -2 (log alpha)' / sigma^2 with (log alpha)' the knot slope
        k = min(int(t * 1000), 999)
        la = [mp.log(coefs(mp.mpf(j) / 1000)[0]) for j in (k, k + 1)]
        dref = -2 * (la[1] - la[0]) * 1000 / s**2
    else:
        dref = mp.diff(lambda u: 2 * mp.log(coefs(u)[1] / coefs(u)[0]), mp.mpf(t))
    assert float(sde._gamma_prime(t64)) == pytest.approx(float(dref), rel=1e-9)


# ------------------------------------------------------------------ the data end: t = 0
def _alpha0_sigma0(name):
    """alpha(0), sigma(0) from the papers: the data are clean except for VE (sigma_min) and VDM (gamma(0))."""
    if name == "ve":
        return 1.0, 0.01
    if name == "vdm":
        return math.sqrt(1 / (1 + math.exp(-13.3))), math.sqrt(1 / (1 + math.exp(13.3)))
    return 1.0, 0.0


@pytest.mark.parametrize("name", BUILTIN_IDS)
def test_finite_sigma_and_alpha_at_t_0_for_every_builtin(name):
    sde = BUILTINS[name]
    a_ref, s_ref = _alpha0_sigma0(name)
    for t in (0.0, torch.zeros(3, dtype=F64), torch.zeros((), dtype=torch.float32)):
        a, s = sde.alpha(t), sde.sigma(t)
        assert bool(torch.isfinite(a).all() and torch.isfinite(s).all()), (a, s)
        rtol = 1e-12 if a.dtype == F64 else 1e-6  # the caller's dtype rounds the result
        assert torch.allclose(a.double(), torch.full_like(a.double(), a_ref), rtol=rtol, atol=0)
        assert torch.allclose(s.double(), torch.full_like(s.double(), s_ref), rtol=rtol, atol=0)
        if s_ref == 0.0:
            assert bool((s == 0).all() and (a == 1).all())  # exactly: the clean data
        assert not bool(torch.isnan(sde.log_snr(t)).any())


CLEAN_START_IDS = ["vp", "subvp", "cosine", "discrete", "ddpm-scaled", "ddpm-cos"]


@pytest.mark.parametrize("sde", list(processes(*CLEAN_START_IDS, t_min=0.0).values()), ids=CLEAN_START_IDS)
def test_every_hook_is_defined_where_sigma_is_zero(sde):
    """t_min = 0 (diffusers' set_alpha_to_one): sigma(0) = 0, log-SNR +inf, no NaN in any hook."""
    zero = torch.zeros(1, dtype=F64)
    t = torch.tensor([0.0, 1e-3, 0.5], dtype=F64)
    assert float(sde._log_alpha(zero)) == 0.0 and float(sde._log_sigma(zero)) == -math.inf
    assert float(sde._log_snr(zero)) == math.inf and float(sde._gamma(zero)) == -math.inf
    assert float(sde._gamma_prime(zero)) == math.inf  # lambda ~ -log t near 0
    assert float(sde._sigma_over_alpha(zero)) == 0.0
    for hook in (sde._f, sde._g2):
        assert bool(torch.isfinite(hook(zero)).all())
    # the transition from the clean data is the marginal; from 0 to 0 it is the identity
    log_a, var = sde._transition(t, torch.zeros_like(t))
    torch.testing.assert_close(log_a, sde._log_alpha(t), rtol=0, atol=0)
    torch.testing.assert_close(var, torch.exp(2 * sde._log_sigma(t)), rtol=1e-15, atol=0)
    assert float(var[0]) == 0.0
    # the inverses give back t = 0
    assert float(sde._t_of_log_snr(torch.tensor([math.inf], dtype=F64))) == 0.0
    assert float(sde.t_of_log_snr(math.inf)) == 0.0 and float(sde.t_of_sigma_over_alpha(0.0)) == 0.0
    lam = sde.log_snr(t)
    torch.testing.assert_close(sde.t_of_log_snr(lam), t, rtol=0, atol=1e-12)
    # and check_sde passes on the process (t = 0 checked apart)
    from sdesolve.testing import check_sde

    check_sde(sde)


# ------------------------------------------------------------------ t_of_log_snr refuses what it cannot invert
@pytest.mark.parametrize("name", BUILTIN_IDS)
def test_t_of_log_snr_refuses_lam_outside_the_process(name):
    sde = BUILTINS[name]
    lo, hi = float(sde.log_snr(sde.T)), float(sde.log_snr(0.0))
    # the ends, also rounded to float32, map into [0, T]
    for dtype in (F64, torch.float32):
        t = sde.t_of_log_snr(torch.tensor([lo, min(hi, 1e30)], dtype=dtype))
        assert 0.0 <= float(t.min()) and float(t.max()) <= float(torch.tensor(sde.T, dtype=dtype))  # T in t's dtype
        t = t.double()
        assert float(t[0]) == pytest.approx(sde.T, abs=1e-5 if dtype == torch.float32 else 1e-9)
    outside = [lo - 1e-3 * max(1.0, abs(lo)), math.nan] + ([hi + 1e-3 * max(1.0, abs(hi))] if math.isfinite(hi) else [])
    for lam in outside:
        with pytest.raises(
            ValueError, match=r"lam must be a log-SNR of the process, in \[log_snr\(T\), log_snr\(0\)\]"
        ):
            sde.t_of_log_snr(lam)
    with pytest.raises(ValueError, match=r"r must be a ratio sigma / alpha of the process"):
        sde.t_of_sigma_over_alpha(2.0 * math.exp(-0.5 * lo))


def test_t_of_log_snr_of_minus_100_is_refused_not_3_17():
    with pytest.raises(
        ValueError, match=r"in \[log_snr\(T\), log_snr\(0\)\] = \[-10\.05, inf\], got values \[-100\.0\]"
    ):
        sd.VPSDE().t_of_log_snr(-100)


def test_the_bisection_inverse_refuses_lam_outside_and_nan():
    gamma = sd.LearnedMonotoneGamma(n_features=8, dtype=F64, generator=torch.Generator().manual_seed(0))
    sde = sd.VDMSDE(gamma)
    lam = torch.tensor([-4.0, 0.0, 13.0], dtype=F64)
    t = sde.t_of_log_snr(lam)
    torch.testing.assert_close(sde.log_snr(t), lam, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"= \[-5, 13\.3\], got values \[-6\.0\]"):
        sde.t_of_log_snr(-6.0)
    assert torch.isnan(sde._t_of_log_snr(torch.tensor([math.nan], dtype=F64))).all()


# ------------------------------------------------------------------ arguments
def test_numpy_scalars_are_numbers_for_every_constructor():
    vp = sd.VPSDE(np.float32(0.1), np.float64(20.0), t_min=np.float32(1e-3))
    assert vp.beta_min == pytest.approx(0.1) and isinstance(vp.beta_min, float)
    assert sd.SubVPSDE(beta_max=np.int64(20)).beta_max == 20.0
    assert sd.VESDE(np.float32(0.01), np.float64(50.0), t_min=np.float64(1e-5)).sigma_max == 50.0
    assert sd.CosineVPSDE(np.float64(0.008), t_min=np.float32(1e-3), log_snr_min=np.int64(-10)).T == pytest.approx(
        sd.CosineVPSDE().T, rel=1e-12
    )
    assert sd.VDMSDE(sd.FixedLinearGamma(np.float32(-13.0), np.int64(5)), t_min=np.float64(0.0)).t_min == 0.0
    assert sd.LearnedMonotoneGamma(n_features=np.int64(4), init_std=np.float32(0.01)).n_features == 4
    assert sd.DiscreteVPSDE(np.full(10, 0.1), t_min=np.float32(0.0)).t_min == 0.0
    torch.testing.assert_close(
        ddpm_betas("linear", np.int64(10), np.float32(1e-4), np.float64(0.02)),
        ddpm_betas("linear", 10, float(np.float32(1e-4)), 0.02),
    )


def test_errors_name_the_argument_that_is_wrong():
    # issue 8.12: these used to blame t_min
    with pytest.raises(ValueError, match=r"^log_snr_min must be below the log-SNR at t_min"):
        sd.CosineVPSDE(log_snr_min=50)
    with pytest.raises(ValueError, match=r"^betas must have at least 2 entries unless t_min is given"):
        sd.DiscreteVPSDE(betas=[0.5])
    # a single step with an explicit t_min is a valid process
    one = sd.DiscreteVPSDE(betas=[0.5], t_min=0.0)
    assert float(one.alpha(1.0)) == pytest.approx(math.sqrt(0.5), rel=1e-15)


# ------------------------------------------------------------------ the variance-preserving base
class QuadraticVP(sd.sde.VariancePreservingSDE):
    """log alpha = -k t^2: only _log_alpha given; sigma, log-SNR, g2, gamma' and the inverse follow."""

    k = 6.0

    def _log_alpha(self, t):
        return -self.k * t * t


def test_variance_preserving_base_derives_everything_from_log_alpha():
    sde, k = QuadraticVP(), QuadraticVP.k
    t = torch.linspace(1e-3, 1.0, 33, dtype=F64)
    a2, s2 = torch.exp(-2 * k * t * t), -torch.expm1(-2 * k * t * t)  # sigma^2 = 1 - alpha^2
    torch.testing.assert_close(sde.sigma(t), torch.sqrt(s2), rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.log_snr(t), torch.log(a2 / s2), rtol=1e-13, atol=0)
    torch.testing.assert_close(sde.g2(t), 4 * k * t, rtol=1e-14, atol=0)  # g^2 = -2 f = 4 k t
    # gamma = log(sigma^2 / alpha^2) = log(e^{2 k t^2} - 1): gamma' = 4 k t e^{2kt^2} / (e^{2kt^2} - 1)
    torch.testing.assert_close(sde._gamma_prime(t), 4 * k * t / s2, rtol=1e-13, atol=0)
    torch.testing.assert_close(sde.t_of_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-13)
    assert sde.variance_preserving
    from sdesolve.testing import check_sde

    check_sde(sde)


def test_which_builtins_are_variance_preserving():
    vp = sd.sde.VariancePreservingSDE
    for name, sde in BUILTINS.items():
        assert isinstance(sde, vp) == (name not in ("subvp", "ve")), name
        assert sde.variance_preserving == isinstance(sde, vp)


def test_default_inverse_of_log_alpha_and_the_base_gamma_prime():
    """The defaults a user's process inherits: ``VariancePreservingSDE._t_of_log_alpha`` (bisection on
    the log-SNR, for a subclass without a closed-form inverse) gives back t from log alpha(t), on a user's
    process and on the built-ins (whose own inverse is a closed form); ``LinearSDE._gamma_prime``
    (autograd through the log-SNR) equals every built-in's closed form."""
    base_inverse = sd.sde.VariancePreservingSDE._t_of_log_alpha
    sde, k = QuadraticVP(), QuadraticVP.k
    t = torch.linspace(1e-3, 1.0, 33, dtype=F64)
    torch.testing.assert_close(sde._t_of_log_alpha(-k * t * t), t, rtol=0, atol=1e-13)  # t = sqrt(-log alpha / k)
    for name, proc in BUILTINS.items():
        # times off the knots of the discrete schedules (where a one-sided slope is taken)
        tt = torch.linspace(float(proc.t_min), float(proc.T), 17, dtype=F64)[:-1] + 0.37e-3
        if isinstance(proc, sd.sde.VariancePreservingSDE):
            torch.testing.assert_close(base_inverse(proc, proc._log_alpha(tt)), tt, rtol=0, atol=1e-12)
        base = sd.LinearSDE._gamma_prime(proc, tt)
        torch.testing.assert_close(base, proc._gamma_prime(tt), rtol=1e-10, atol=0, msg=name)


def test_a_process_without_its_hooks_says_which_to_implement():
    """``LinearSDE`` alone has no marginals: its hooks raise NotImplementedError naming the subclass."""

    class Bare(sd.LinearSDE):
        pass

    t = torch.tensor([0.5], dtype=F64)
    with pytest.raises(NotImplementedError, match=r"^Bare must implement _log_alpha\(t\)$"):
        Bare()._log_alpha(t)
    with pytest.raises(NotImplementedError, match=r"^Bare must implement _log_sigma\(t\)$"):
        Bare()._log_sigma(t)


@pytest.mark.parametrize("name", BUILTIN_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_marginal_prob_and_sigma_over_alpha_answer_in_the_callers_dtype(name, dtype):
    """``marginal_prob`` and ``drift`` return x0's dtype for every form of t (float, 0-d, per-sample float64 times);
    ``sigma_over_alpha`` returns t's dtype (float64 for a Python float), with the float64 value rounded once."""
    sde = BUILTINS[name]
    x0 = torch.tensor([[0.5, -1.0], [2.0, 0.25], [1.0, 1.0]], dtype=dtype)
    t64 = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    for t in (0.5, torch.tensor(0.5, dtype=F64), t64):
        mean, std = sde.marginal_prob(x0, t)
        assert mean.dtype == std.dtype == dtype, (t, mean.dtype, std.dtype)
        drift = sde.drift(x0, t)  # the forward drift f(t) x, f rounded once to x's dtype
        assert drift.dtype == dtype, (t, drift.dtype)
        f = sde._f(torch.as_tensor(t, dtype=F64).expand(3)).to(dtype)
        assert torch.equal(drift, f[:, None] * x0)
    a, v = sde.transition(torch.tensor([0.5, 0.7], dtype=dtype), 0.1)  # x_t | x_s: t's dtype
    assert a.dtype == v.dtype == dtype, (a.dtype, v.dtype)
    ref = torch.exp(sde._log_sigma(t64) - sde._log_alpha(t64))
    for t, want in ((t64.to(dtype), dtype), (0.5, F64), (torch.tensor(0.5, dtype=dtype), dtype)):
        r = sde.sigma_over_alpha(t)
        assert r.dtype == want, (t, r.dtype)
    torch.testing.assert_close(sde.sigma_over_alpha(t64), ref, rtol=1e-15, atol=0)


@pytest.mark.gpu
def test_marginal_prob_and_reverse_drift_move_host_times_to_the_device_of_x():
    """x on the GPU with times on the host (a float, a per-sample CPU tensor): the mean and the standard
    deviation of ``marginal_prob``, the forward and the reverse-time drift live on x's device, equal to the CPU
    answer."""
    dev = torch.device("cuda")
    target = sd.Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([0.5, 1.5]))
    for sde in builtin_sdes():
        x0 = torch.randn(3, 2, dtype=F64)
        for t in (0.5, torch.tensor([0.2, 0.5, 0.9], dtype=F64)):
            mean, std = sde.marginal_prob(x0.to(dev), t)
            assert mean.device.type == std.device.type == "cuda"
            ref_mean, ref_std = sde.marginal_prob(x0, t)
            torch.testing.assert_close(mean.cpu(), ref_mean, rtol=1e-14, atol=0)
            torch.testing.assert_close(std.cpu().expand_as(ref_std), ref_std, rtol=1e-14, atol=0)
            fwd = sde.drift(x0.to(dev), t)
            assert fwd.device.type == "cuda"
            torch.testing.assert_close(fwd.cpu(), sde.drift(x0, t), rtol=1e-14, atol=0)
            rev = sde.reverse(target.model(sde))
            drift = rev.drift(x0.to(dev), t)
            assert drift.device.type == "cuda"
            torch.testing.assert_close(drift.cpu(), rev.drift(x0, t), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the log-SNR range's tolerance, edge by edge
def _first_float32_beyond(value, bound):
    """(the last float32 at or inside ``bound``, the first one beyond it), walking from ``value`` away from it."""
    step = np.float32(-np.inf) if bound < value else np.float32(np.inf)
    v = inside = np.float32(value)
    while (value - float(v)) * (1 if bound < value else -1) <= abs(value - bound):
        inside, v = v, np.nextafter(v, step)
    return float(inside), float(v)


@pytest.mark.parametrize(
    "make",
    # the VDM processes: |log_snr(T)| < 1, then |log_snr(0)| < 2 too (the tolerance is relative to max(1, |end|))
    [
        sd.VPSDE,
        sd.VESDE,
        lambda: sd.VDMSDE(sd.FixedLinearGamma(-3.0, 0.75)),
        lambda: sd.VDMSDE(sd.FixedLinearGamma(-1.5, 0.75)),
    ],
    ids=["vp", "ve", "vdm-log-snr-below-1", "vdm-log-snr-of-0-below-2"],
)
def test_log_snr_outside_the_process_by_four_ulps_of_the_callers_dtype_is_its_end(make):
    """``t_of_log_snr`` accepts a log-SNR up to 4 units of the caller's dtype's epsilon (relative to
    max(1, |end|); 1e-9 for float64 and numbers) outside [log_snr(T), log_snr(0)], and answers the end
    itself, T or 0, exactly in the caller's dtype; one representable step further is refused. Checked at
    the float64 edge itself, at the float32 values on both sides of it (a process with |log_snr(T)| < 1
    included), and through ``t_of_sigma_over_alpha`` for a float32 ratio just above sigma_over_alpha(T)."""
    sde = make()
    T = float(sde.T)
    lo, hi = float(sde.log_snr(T)), float(sde.log_snr(0.0))
    msg = r"^lam must be a log-SNR of the process"
    ends = [(lo, T)] + ([(hi, 0.0)] if math.isfinite(hi) else [])
    for end, t_end in ends:
        out = -1.0 if end == lo else 1.0  # the side outside the range
        edge = end + out * 1e-9 * max(1.0, abs(end))
        assert float(sde.t_of_log_snr(edge)) == t_end
        assert float(sde.t_of_log_snr(torch.tensor([edge], dtype=F64))[0]) == t_end
        with pytest.raises(ValueError, match=msg):
            sde.t_of_log_snr(math.nextafter(edge, out * math.inf))
        eps32 = float(torch.finfo(torch.float32).eps)
        inside, beyond = _first_float32_beyond(end, end + out * 4.0 * eps32 * max(1.0, abs(end)))
        got = sde.t_of_log_snr(torch.tensor([inside], dtype=torch.float32))
        assert got.dtype == torch.float32 and float(got[0]) == float(torch.tensor(t_end, dtype=torch.float32))
        with pytest.raises(ValueError, match=msg):
            sde.t_of_log_snr(torch.tensor([beyond], dtype=torch.float32))
    # the ratio sigma / alpha = exp(-lam / 2): the float32 just above sigma_over_alpha(T) is T in float32
    r_T = float(sde.sigma_over_alpha(T))
    r32 = torch.tensor([np.nextafter(np.float32(r_T), np.float32(np.inf))], dtype=torch.float32)
    assert float(r32[0]) > r_T
    got = sde.t_of_sigma_over_alpha(r32)
    assert got.dtype == torch.float32 and float(got[0]) == float(torch.tensor(T, dtype=torch.float32))


class _ParameterScale(sd.LinearSDE):
    """A user's process whose log alpha = c is constant in t through a learnable parameter, sigma^2 = t: f = 0,
    g^2 = d sigma^2 / dt = 1."""

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(-0.2, dtype=F64))

    def _log_alpha(self, t):
        return self.c * torch.ones_like(t)

    def _log_sigma(self, t):
        return 0.5 * torch.log(t)


def test_a_log_alpha_constant_in_t_through_a_parameter_has_zero_drift():
    """The base class's f = d log alpha/dt by autograd is 0 where log alpha depends on a parameter but not on t
    (autograd reports t unused; that is a zero derivative, not an error), with or without grad mode."""
    sde = _ParameterScale()
    t = torch.tensor([0.1, 0.5, 1.0], dtype=F64)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            assert torch.equal(sde.f(t), torch.zeros_like(t))
            torch.testing.assert_close(sde.g2(t), torch.ones_like(t), rtol=1e-14, atol=0)
            torch.testing.assert_close(sde.drift(torch.ones(3, 2, dtype=F64), t), torch.zeros(3, 2, dtype=F64))


def test_a_user_schedule_without_parameters_gives_coefficients_without_a_graph():
    """A user's GammaSchedule module (its derivative by autograd through the module itself) carries no
    autograd graph into a sampler when it has no learnable parameters, and keeps it when it has one."""
    from sdesolve.sde.vdm import GammaSchedule

    class Quadratic(GammaSchedule):
        def forward(self, t):
            return -10.0 + 15.0 * t * t

    class Learned(Quadratic):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor(15.0, dtype=F64))

        def forward(self, t):
            return -10.0 + self.k * t * t

    t = torch.tensor([0.2, 0.6], dtype=F64)
    fixed, learned = Quadratic(), Learned()
    torch.testing.assert_close(fixed.derivative(t), 30.0 * t, rtol=1e-15, atol=0)
    assert not fixed.derivative(t).requires_grad
    assert not sd.VDMSDE(fixed).f(t).requires_grad and not sd.VDMSDE(fixed).g2(t).requires_grad
    (dk,) = torch.autograd.grad(learned.derivative(t).sum(), learned.k)  # d(2 k t)/dk = 2 t
    assert float(dk) == pytest.approx(2.0 * float(t.sum()), rel=1e-14)


@pytest.mark.gpu
def test_the_bisection_inverse_of_a_process_on_the_gpu_runs_on_the_gpu():
    """The bisection ``_t_of_log_snr`` (VDM with a monotone network: no closed-form inverse) of a process
    moved to the GPU, asked for device log-SNRs, checks monotonicity on device times and never synchronizes
    with the host; its answers equal the host process's."""
    dev = torch.device("cuda")
    host, moved = (
        sd.VDMSDE(sd.LearnedMonotoneGamma(n_features=8, dtype=F64, generator=torch.Generator().manual_seed(0)))
        for _ in range(2)
    )
    moved = moved.to(dev)
    lam = torch.tensor([-4.0, 0.0, 13.0], dtype=F64)
    want = host._t_of_log_snr(lam)
    lam_dev = lam.to(dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            got = moved._t_of_log_snr(lam_dev)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-12)


def test_the_bisection_inverts_a_strictly_increasing_schedule_that_is_flat_in_float32():
    """A monotone VDM network with a sharp step (|w1| = 1e-6, one unit with |w2| = 200) is strictly increasing
    (LearnedMonotoneGamma's docstring), but its float32 gamma takes equal values at most of the 257 check times
    away from the step. Equal neighbours are not a rise: the bisection still inverts the log-SNR across the
    step, where it is resolved (to float32's resolution of gamma)."""
    sched = sd.LearnedMonotoneGamma(-10.0, 8.0, n_features=1)
    with torch.no_grad():
        sched.l1.weight.fill_(1e-6)
        sched.l2.weight.fill_(200.0)
        sched.l2.bias.zero_()
        sched.l3.weight.fill_(1.0)
    sde = sd.VDMSDE(sched)
    with torch.no_grad():
        check = sde._log_snr(torch.linspace(0.0, 1.0, 257, dtype=F64))
        assert int((check[1:] == check[:-1]).sum()) > 100 and not bool((check[1:] > check[:-1]).any())
        t = torch.tensor([0.49, 0.5, 0.51], dtype=F64)
        lam = sde.log_snr(t)
        back = sde.t_of_log_snr(lam)
    torch.testing.assert_close(back, t, rtol=0, atol=1e-6)


def test_the_bisections_monotonicity_check_sees_a_dip_below_float32_resolution():
    """The bisection checks at its 257 times that the log-SNR never rises, in float64: a user's schedule
    gamma = -10 + 15 t^4 that dips by 1e-7 around t = 2/256 (where it rises about 5e-8 per check interval,
    and float32 sees -10 at every check time near there) has no inverse and is refused; without the dip it
    is inverted."""
    from sdesolve.sde.vdm import GammaSchedule

    class Quartic(GammaSchedule):
        def __init__(self, dip):
            super().__init__()
            self.dip = dip

        def forward(self, t):
            return -10.0 + 15.0 * t**4 - self.dip * torch.exp(-(((t - 2.0 / 256) * 512.0) ** 2))

    with pytest.raises(ValueError, match=r"has no inverse of its log-SNR: the log-SNR is not strictly decreasing"):
        sd.VDMSDE(Quartic(1e-7)).t_of_log_snr(0.0)
    sde = sd.VDMSDE(Quartic(0.0))
    t = torch.tensor([0.3, 0.7, 0.95], dtype=F64)
    torch.testing.assert_close(sde.t_of_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-12)


def test_prior_logp_of_float32_samples_is_the_float64_value_rounded_once():
    """``prior_logp`` sums in float64 and hands back the caller's dtype: for 16 float32 draws of a large event
    (3 x 64 x 64) it is bitwise the float64 log-density rounded to float32 (a float32 sum drifts by many
    ulps there), and float32 itself."""
    for sde in (sd.VPSDE(), sd.VESDE()):
        s = float(sde.prior_std)
        z = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * s
        got = sde.prior_logp(z)
        zz = z.double()
        want = -0.5 * (zz * zz).sum(dim=(1, 2, 3)) / (s * s) - 0.5 * zz[0].numel() * math.log(2 * math.pi * s * s)
        assert got.dtype == torch.float32 and torch.equal(got, want.float()), got - want.float()
