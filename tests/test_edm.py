"""EDMHeun and EulerAncestral (sdesolve.solvers.edm) against peers and exact answers.

* step for step against diffusers' ``EulerAncestralDiscreteScheduler`` and ``HeunDiscreteScheduler``
  on the same ``DiscreteVPSDE``, timesteps, x_T and noise (their samples live in x / alpha, ours in x):
  float64 round-off;
* against k-diffusion's ``sample_heun`` (with churn) and ``sample_euler_ancestral`` on Karras sigmas,
  the same noise (both draw from the global generator), on VE and on the discrete VP process ending at
  sigma = 0 (skipped where k-diffusion is absent);
* EulerAncestral(eta) is DDIM(eta) for eta in [0, 1] (module docstring of edm.py);
* deterministic EDMHeun converges at order 2 to the exact flow of a Gaussian on VP, sub-VP, VE;
* the stochastic samplers' output laws at D = 2, 4, 16, 64 (the exact chain law, and the data law
  within the discretization bias);
* no model evaluation at sigma = 0; the GraphSampler computes the same map (captured on a GPU).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import PROCESSES as ALL_PROCESSES
from helpers import chain_moments, check_moments, fit_slope
from hypothesis import given, settings
from hypothesis import strategies as st
from test_exponential import random_grid

import sdesolve as sd

TARGET = sd.Gaussian(torch.tensor([1.0, -0.5, 0.3]), torch.tensor([0.5, 2.0, 0.1]))
PROCESSES = {k: ALL_PROCESSES[k] for k in ("vp", "subvp", "ve")}  # the registry's factories


def k_sampling():
    """k-diffusion's ``sampling`` module, or skip the test.

    The package's ``__init__`` imports its training dependencies (scikit-image, torchvision); its
    sampling module needs only ``utils.append_dims``. Where the package import fails, the module file
    is loaded alone under a stub parent package that provides that one helper.
    """
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.origin is None:
        pytest.skip("k-diffusion is not installed")
    try:
        import k_diffusion.sampling as ks

        return ks
    except ImportError:
        pass
    name = "_k_diffusion_sampling_only"
    if name + ".sampling" in sys.modules:
        return sys.modules[name + ".sampling"]
    pkg = types.ModuleType(name)
    pkg.__path__ = []
    utils = types.ModuleType(name + ".utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules[name], sys.modules[name + ".utils"] = pkg, utils
    path = Path(spec.origin).parent / "sampling.py"
    mspec = importlib.util.spec_from_file_location(name + ".sampling", path)
    mod = importlib.util.module_from_spec(mspec)
    sys.modules[name + ".sampling"] = mod
    mspec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- diffusers, step for step
def _discrete(sched):
    return sd.DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)


def _sched(cls_name, **kw):
    diffusers = pytest.importorskip("diffusers")
    s = getattr(diffusers, cls_name)(num_train_timesteps=1000, beta_schedule="linear", timestep_spacing="leading", **kw)
    s.alphas_cumprod = s.alphas_cumprod.double()
    return s


def _sigma_hat(sched, ks):
    ab = sched.alphas_cumprod[torch.as_tensor(ks).long()]
    return torch.sqrt((1 - ab) / ab)


@pytest.mark.parametrize("steps", [8, 25])
def test_euler_ancestral_matches_diffusers(steps):
    """diffusers' sample is x / alpha; with the same noise (drawn after each model call from one
    generator on both sides) every step agrees to float64 round-off."""
    from test_exponential import _F64, _plain, net

    sched = _sched("EulerAncestralDiscreteScheduler")
    sde = _discrete(sched)
    sched.set_timesteps(steps)
    ks = sched.timesteps.long()
    sched.sigmas = torch.cat([_sigma_hat(sched, ks), torch.zeros(1, dtype=torch.float64)])
    grid = torch.cat([sde.timestep_to_t(ks.double()), torch.zeros(1, dtype=torch.float64)])
    alphas = torch.exp(sde._log_alpha(grid))
    x_T = torch.randn(5, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    theirs, xh = [], (x_T / alphas[0]).as_subclass(_F64)
    for k in sched.timesteps:
        eps = net(sched.scale_model_input(xh, k), k).as_subclass(_F64)
        xh = sched.step(eps, k, xh, generator=g).prev_sample
        theirs.append(_plain(xh).clone())
    ours = []
    model = sd.ScoreModel(net, sde, prediction="eps")
    sd.sample(sde, model, x_T=x_T, solver=sd.EulerAncestral(), grid=grid, generator=torch.Generator().manual_seed(3),
              callback=lambda d: ours.append(d["x"].clone()))  # fmt: skip
    for i, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a, alphas[i + 1] * b, rtol=1e-11, atol=1e-11, msg=f"step {i}")


@pytest.mark.parametrize("steps", [8, 25])
def test_heun_matches_diffusers(steps):
    """diffusers' HeunDiscreteScheduler (no churn): 2n - 1 calls, its call 2i + 1 ends our step i and its
    last call is the Euler step into sigma = 0."""
    from test_exponential import net

    sched = _sched("HeunDiscreteScheduler")
    sde = _discrete(sched)
    sched.set_timesteps(steps)
    ks = sched.timesteps[0::2].long()
    s = _sigma_hat(sched, ks)
    sched.sigmas = torch.cat([s[:1], s[1:].repeat_interleave(2), torch.zeros(1, dtype=torch.float64)])
    grid = torch.cat([sde.timestep_to_t(ks.double()), torch.zeros(1, dtype=torch.float64)])
    alphas = torch.exp(sde._log_alpha(grid))
    x_T = torch.randn(5, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    theirs, xh = [], x_T / alphas[0]
    for k in sched.timesteps:
        xh = sched.step(net(sched.scale_model_input(xh, k), k), k, xh).prev_sample
        theirs.append(xh.clone())
    ours = []
    model = sd.ScoreModel(net, sde, prediction="eps")
    sd.sample(sde, model, x_T=x_T, solver=sd.EDMHeun(), grid=grid, callback=lambda d: ours.append(d["x"].clone()))
    ends = list(range(1, 2 * steps - 2, 2)) + [2 * steps - 2]
    assert len(ours) == len(ends) == steps and model.nfe == 2 * steps - 1 == len(sched.timesteps)
    for i, c in enumerate(ends):
        torch.testing.assert_close(ours[i], alphas[i + 1] * theirs[c], rtol=1e-11, atol=1e-11, msg=f"step {i}")


# ----------------------------------------------------------------------------- k-diffusion
def _k_problem(process):
    """A process, its Karras grid and EDM sigmas (k-diffusion's, with the appended 0 where sigma(t_min) = 0),
    and the exact denoiser D(x_hat, sigma_hat) of a Gaussian."""
    if process == "ve":
        sde = sd.VESDE(sigma_min=0.002, sigma_max=80.0)
    else:
        sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    target = sd.Gaussian(torch.linspace(-1.0, 1.0, 8), torch.linspace(0.2, 1.5, 8))
    model = target.model(sde)
    grid = sd.grids.karras(sde, 12)
    sigmas = sde._sigma_over_alpha(grid)

    def denoiser(xh, s):
        t = sde.t_of_sigma_over_alpha(s)
        return model.x0(torch.exp(sde._log_alpha(t))[:, None] * xh, t)

    return sde, model, grid, sigmas, denoiser


@pytest.mark.parametrize("process", ["ve", "discrete"])
@pytest.mark.parametrize("churn", [0.0, 10.0])
def test_edm_heun_matches_k_diffusion(churn, process):
    """k-diffusion's sample_heun (Karras et al. Alg. 2) with S_churn, S_tmin = 0.05, S_tmax = 50 (below the
    largest sigma: no cap); Euler into sigma = 0. k-diffusion draws noise on every step (from the global
    generator) and uses it where gamma > 0; ours draws only there: it is handed the same draws."""
    ks = k_sampling()
    sde, model, grid, sigmas, denoiser = _k_problem(process)
    alpha_T = float(torch.exp(sde._log_alpha(grid[:1])))
    x_T = (
        float(sigmas[0]) * alpha_T * torch.randn(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    )
    kw = dict(s_churn=churn, s_tmin=0.05, s_tmax=50.0)
    torch.manual_seed(11)
    theirs = ks.sample_heun(denoiser, x_T / alpha_T, sigmas, disable=True, **kw)
    torch.manual_seed(11)
    draws = [torch.randn_like(x_T) for _ in range(grid.numel() - 1)]
    solver = sd.EDMHeun(**kw)
    used = [z for z, d in zip(draws, solver.init(sde, grid)["draws"]) if d]
    assert len(used) == (0 if churn == 0 else sum(0.05 <= float(r) <= 50.0 for r in sigmas[:-1]))

    class Same:
        def draw(self, x):
            return used.pop(0)

    ours = sd.solvers.base.run_steps(solver, model, {"x": x_T}, sd.solvers.base._to_device(solver.init(sde, grid), x_T),
                                     grid.numel() - 1, generator=Same(), denoise=False)["x"]  # fmt: skip
    alpha_end = float(torch.exp(sde._log_alpha(grid[-1:])))
    torch.testing.assert_close(ours, alpha_end * theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("process", ["ve", "discrete"])
@pytest.mark.parametrize("eta,s_noise", [(1.0, 1.0), (0.5, 1.0), (1.5, 1.0), (1.0, 0.6)])
def test_euler_ancestral_matches_k_diffusion(eta, s_noise, process):
    """Same samples as k-diffusion's sample_euler_ancestral(eta, s_noise) from the same global generator, and
    the same number of draws from it: no draw on the step into sigma = 0 (the next draw after sampling is the
    same)."""
    ks = k_sampling()
    sde, model, grid, sigmas, denoiser = _k_problem(process)
    alpha_T = float(torch.exp(sde._log_alpha(grid[:1])))
    x_T = (
        float(sigmas[0]) * alpha_T * torch.randn(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    )
    torch.manual_seed(12)
    theirs = ks.sample_euler_ancestral(denoiser, x_T / alpha_T, sigmas, disable=True, eta=eta, s_noise=s_noise)
    their_next = torch.randn(4)
    torch.manual_seed(12)
    solver = sd.EulerAncestral(eta, s_noise=s_noise)
    ours = sd.sample(sde, model, x_T=x_T, solver=solver, grid=grid, denoise=False)
    assert torch.equal(torch.randn(4), their_next)
    alpha_end = float(torch.exp(sde._log_alpha(grid[-1:])))
    torch.testing.assert_close(ours, alpha_end * theirs, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- exact answers
@pytest.mark.parametrize("sde_name", ["vp", "ve", "cosine", "discrete"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_euler_ancestral_is_ddim(eta, sde_name):
    from helpers import PROCESSES as ALL

    sde = ALL[sde_name]()
    model = TARGET.model(sde)
    x = TARGET.marginal_sample(32, float(sde.T), sde, generator=torch.Generator().manual_seed(0))
    for grid in ("karras", "log_snr"):
        kw = dict(x_T=x, grid=grid, steps=10)
        a = sd.sample(sde, model, solver=sd.EulerAncestral(eta), generator=torch.Generator().manual_seed(1), **kw)
        b = sd.sample(sde, model, solver=sd.DDIM(eta), generator=torch.Generator().manual_seed(1), **kw)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde_name", list(PROCESSES))
def test_edm_heun_converges_at_order_2(sde_name):
    sde = PROCESSES[sde_name]()
    model = TARGET.model(sde)
    T, t_min = float(sde.T), float(sde.t_min)
    x = TARGET.marginal_sample(64, T, sde, generator=torch.Generator().manual_seed(1))
    exact = TARGET.flow(x, T, t_min, sde)
    ns, errs = [20, 40, 80, 160], []
    for n in ns:
        errs.append(float((sd.sample(sde, model, x_T=x, solver=sd.EDMHeun(), steps=n) - exact).pow(2).mean().sqrt()))
    slope = fit_slope([1.0 / n for n in ns], errs)
    assert 1.85 < slope < 2.2, (slope, errs)


@settings(max_examples=20, deadline=None)
@given(
    process=st.sampled_from(sorted(ALL_PROCESSES)),
    solver=st.sampled_from([sd.EDMHeun(), sd.EulerAncestral(0.0)]),
    us=st.lists(st.floats(0.01, 0.99), min_size=0, max_size=10, unique=True),
)
def test_exact_for_point_mass_data_on_any_grid(process, solver, us):
    """Point-mass data: the denoiser is constant, the flow is linear in sigma / alpha, and Euler and Heun
    in (x / alpha, sigma / alpha) are exact on any grid and process, up to round-off: Heun's second slope
    divides a difference known to eps |x_T / alpha_T| (the Euler predictor cancels the state, whose scale
    is sigma_hat(T), down to the data) by sigma_hat(t_min) and multiplies it by a step up to sigma_hat(T):
    tolerance 8 eps |x_T / alpha_T| sigma_hat(T) / sigma_hat(t_min) (one step from T to t_min on sub-VP:
    eps 300 1.4e6 ~ 1e-7 x 8; measured 2.3e-8)."""
    sde = ALL_PROCESSES[process]()
    target = sd.Gaussian(torch.tensor([1.5, -0.5]), 1e-12)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(len(us)), dtype=torch.float64)
    grid = random_grid(sde, us)
    exact = target.flow(x, float(grid[0]), float(grid[-1]), sde)
    out = sd.sample(sde, target.model(sde), x_T=x, solver=solver, grid=grid)
    r = sde._sigma_over_alpha(grid[[0, -1]])
    scale = max(1.0, float((x / torch.exp(sde._log_alpha(grid[:1]))).abs().max()), float(exact.abs().max()))
    tol = 1e-9 + 8 * torch.finfo(torch.float64).eps * float(r[0] / r[1]) * scale
    assert float((out - exact).abs().max()) < tol


_LAW_SOLVERS = [sd.EulerAncestral(), sd.EDMHeun(s_churn=20.0)]
_LAW_CASES = [
    pytest.param(s, p, d, marks=[pytest.mark.slow] if d == 64 else [], id=f"{s!r}-{p}-{d}")
    for s in _LAW_SOLVERS
    for p in ("vp", "ve")
    for d in (2, 4, 16, 64)
]
_LAW_CASES += [
    pytest.param(sd.EDMHeun(s_churn=40.0, s_tmin=0.05, s_tmax=10.0), p, 4, id=f"tmin-tmax-{p}") for p in ("vp", "ve")
]


@pytest.mark.parametrize("solver, sde_name, dim", _LAW_CASES)
def test_stochastic_samplers_sample_their_chain_law_and_the_data_law(solver, sde_name, dim):
    """4000 samples within 5 standard errors of the chain's exact law (helpers.chain_moments) at 30 steps.
    That law's distance to the data law (the weak error, at most 34 % of the variance for EulerAncestral and
    13 % for EDMHeun at 30 steps on these problems, measured) shrinks at least 3-fold at 120 steps (weak
    order >= 1; 4x the steps)."""
    sde = PROCESSES[sde_name]()
    g = torch.Generator().manual_seed(dim)
    target = sd.Gaussian(
        torch.randn(dim, generator=g, dtype=torch.float64), 0.3 + torch.rand(dim, generator=g, dtype=torch.float64)
    )
    model = target.model(sde)
    grid = sd.grids.make_grid(solver.default_grid, sde, 30)
    m_T, v_T = target.marginal_moments(float(grid[0]), sde)
    mean, var = chain_moments(solver, sde, model, grid, m_T, v_T)
    x_T = m_T + v_T.sqrt() * torch.randn(4000, dim, generator=g, dtype=torch.float64)
    out = sd.sample(sde, model, x_T=x_T, solver=solver, grid=grid, generator=g)
    check_moments(out, mean, var, what=f"{solver} {sde_name} D={dim}")
    m0, v0 = target.marginal_moments(float(grid[-1]), sde)

    def weak_error(mean, var):
        return max(float(((mean - m0).abs() / v0.sqrt()).max()), float((var / v0 - 1).abs().max()))

    e30 = weak_error(mean, var)
    grid120 = sd.grids.make_grid(solver.default_grid, sde, 120)
    e120 = weak_error(*chain_moments(solver, sde, model, grid120, *target.marginal_moments(float(grid120[0]), sde)))
    assert e30 < (0.35 if isinstance(solver, sd.EulerAncestral) else 0.14)
    assert e120 < e30 / 3.0, (e30, e120)


# ----------------------------------------------------------------------------- sigma = 0, NFE, churn, GraphSampler
SOLVERS = [sd.EDMHeun(), sd.EDMHeun(s_churn=10.0), sd.EulerAncestral(), sd.EulerAncestral(0.0)]


@pytest.mark.parametrize("grid_kind", ["karras", "log_snr"])
@pytest.mark.parametrize("solver", SOLVERS, ids=repr)
def test_step_into_sigma_zero_never_evaluates_there(solver, grid_kind):
    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)

    def eps_net(x, t):
        if bool((t <= 0).any()):
            raise AssertionError("the model was evaluated at sigma = 0")
        return torch.tanh(x + t[:, None])

    grid = sd.grids.make_grid(grid_kind, sde, 8)
    coefs = solver.init(sde, grid)
    assert all(bool(torch.isfinite(v).all()) for v in coefs.values() if isinstance(v, torch.Tensor))
    steps = []
    model = sd.ScoreModel(eps_net, sde, time_input=lambda t: t)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sd.sample(sde, model, x_T=x, solver=solver, grid=grid, generator=torch.Generator().manual_seed(1),
                    callback=steps.append)  # fmt: skip
    torch.testing.assert_close(out, steps[-1]["x0"], rtol=1e-13, atol=1e-13)
    assert model.nfe == solver.nfe(8) - (solver.nfe_per_step - 1)


def test_churn_schedule_and_cap():
    """gamma = min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax], 0 outside; sigma~ never above sigma/alpha(T)."""
    sde = sd.VESDE(sigma_min=0.002, sigma_max=80.0)
    grid = sd.grids.karras(sde, 10)
    r = sde._sigma_over_alpha(grid)
    c = sd.EDMHeun(s_churn=3.0, s_tmin=0.1, s_tmax=20.0).init(sde, grid)  # gamma = 3 / 10
    inside = (r[:-1] >= 0.1) & (r[:-1] <= 20.0)
    expect = torch.where(inside, r[:-1] * math.sqrt((1.3**2) - 1.0), torch.zeros_like(r[:-1]))
    torch.testing.assert_close(c["churn"], expect, rtol=1e-12, atol=0)
    assert c["draws"] == inside.tolist()
    big = sd.EDMHeun(s_churn=100.0).init(sde, grid)  # gamma capped at sqrt(2) - 1; the first step at sigma(T)
    assert float(big["churn"][0]) == 0.0 and not big["draws"][0]
    torch.testing.assert_close(big["churn"][1:], r[1:-1] * math.sqrt(2.0 - 1.0), rtol=1e-12, atol=0)
    t_hat = big["t_hat"]
    assert bool((t_hat <= float(sde.T)).all()) and bool((t_hat >= grid[:-1]).all())


def test_denoise_takes_the_last_step_without_churn():
    sde = sd.VESDE()
    model = TARGET.model(sde)
    x = TARGET.marginal_sample(8, 1.0, sde, generator=torch.Generator().manual_seed(0))
    solver = sd.EDMHeun(s_churn=30.0)
    assert solver.stochastic and solver.strong_order is None
    grid = sd.grids.karras(sde, 6)
    a = sd.sample(sde, model, x_T=x, solver=solver, grid=grid, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    coefs = solver.init(sde, grid)
    state = {"x": x}
    for i in range(6):
        state = solver.step(model, state, i, coefs, generator=g, noise=i < 5)
    torch.testing.assert_close(a, state["x"], rtol=0, atol=0)
    churned = solver.step(model, {"x": x}, 5, coefs, generator=torch.Generator().manual_seed(2))["x"]
    plain = solver.step(model, {"x": x}, 5, coefs, noise=False)["x"]
    assert float((churned - plain).abs().max()) > 1e-3


def test_a_churned_heun_step_without_noise_is_the_deterministic_heun_step():
    """EDMHeun's step with noise=False (the last step under denoise=True, or a caller's own loop) where churn
    would apply takes the deterministic Heun step from sigma_i, bitwise that of EDMHeun without churn."""
    sde = sd.VESDE(sigma_min=0.002, sigma_max=80.0)
    model = TARGET.model(sde)
    grid = sd.grids.karras(sde, 6)
    churned, plain = sd.EDMHeun(s_churn=30.0), sd.EDMHeun()
    cc, cp = churned.init(sde, grid), plain.init(sde, grid)
    x = TARGET.marginal_sample(5, float(grid[2]), sde, generator=torch.Generator().manual_seed(3))
    for i in range(5):
        assert cc["draws"][i] or i == 0  # churn applies on every step below sigma(T)
        a = churned.step(model, {"x": x}, i, cc, noise=False)["x"]
        b = plain.step(model, {"x": x}, i, cp, noise=False)["x"]
        assert torch.equal(a, b), i


@pytest.mark.parametrize("sde_name", ["vp0", "discrete"])
def test_euler_ancestral_steps_with_the_default_arguments_are_sample(sde_name):
    """A caller's own loop of ``step(model, state, i, coefs, generator=g)`` (the base class's defaults: noise
    drawn) is ``sample(..., denoise=False)`` with the same generator, bitwise; the step into sigma = 0 (the
    last step on a process with sigma(0) = 0) draws nothing from the generator."""
    sde = sd.VPSDE(t_min=0.0) if sde_name == "vp0" else sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    model = TARGET.model(sde)
    solver = sd.EulerAncestral()
    grid = sd.grids.karras(sde, 6)
    assert float(sde._sigma_over_alpha(grid[-1:])) == 0.0
    x = TARGET.marginal_sample(5, float(sde.T), sde, generator=torch.Generator().manual_seed(0))
    a = sd.sample(
        sde, model, x_T=x, solver=solver, grid=grid, denoise=False, generator=torch.Generator().manual_seed(1)
    )
    g = torch.Generator().manual_seed(1)
    coefs, state = solver.init(sde, grid), {"x": x}
    for i in range(5):
        state = solver.step(model, state, i, coefs, generator=g)
    before = g.get_state()
    state = solver.step(model, state, 5, coefs, generator=g)
    assert torch.equal(g.get_state(), before)
    torch.testing.assert_close(state["x"], a, rtol=0, atol=0)


@pytest.mark.parametrize("solver", SOLVERS, ids=repr)
def test_graph_sampler_plain_loop_is_sample(solver):
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    gs = sd.GraphSampler(sde, model, (16, 3), solver=solver, steps=12, device="cpu", dtype=torch.float64)
    x_T = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if not solver.stochastic:
        assert gs.n_noise == 0
        torch.testing.assert_close(gs(x_T), sd.sample(sde, model, solver=solver, steps=12, x_T=x_T), rtol=0, atol=1e-12)
    else:
        assert gs.n_noise > 0
        out = gs(generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(out, gs(generator=torch.Generator().manual_seed(3)), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("solver", SOLVERS, ids=repr)
def test_cuda_graph_capture_equals_the_plain_loop_without_sync(solver):
    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    model = sd.Gaussian(torch.zeros(3, 8, 8), 0.5).model(sde)
    kw = dict(solver=solver, steps=20, device="cuda", check_finite=False)
    graph = sd.GraphSampler(sde, model, (16, 3, 8, 8), **kw)
    plain = sd.GraphSampler(sde, model, (16, 3, 8, 8), use_graph=False, **kw)
    assert graph._graph is not None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        a = graph(generator=torch.Generator("cuda").manual_seed(0))
        b = plain(generator=torch.Generator("cuda").manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_attributes():
    assert sd.EDMHeun().order == 2.0 and not sd.EDMHeun().stochastic and sd.EDMHeun().strong_order == 2.0
    assert sd.EDMHeun(s_churn=1.0).stochastic and sd.EDMHeun().nfe(5) == 10
    assert sd.EulerAncestral().stochastic and not sd.EulerAncestral(0.0).stochastic
    assert sd.EDMHeun().default_grid == sd.EulerAncestral().default_grid == "karras"
    assert repr(sd.EDMHeun(s_churn=2.0)).startswith("EDMHeun(s_churn=2.0")


# ----------------------------------------------------------------------------- the churn range, steps' outputs, kernels
def test_churn_applies_on_both_ends_of_its_range_and_at_the_churned_noise_level():
    """gamma_i > 0 where S_tmin <= sigma_i <= S_tmax, both ends included (Karras et al. Alg. 2, k-diffusion's
    sample_heun): S_tmin and S_tmax set to grid sigmas exactly churn steps 2 to 4 and no other. Every churned
    step evaluates the network first at sigma~ = sigma_i (1 + gamma), i.e. at t_of_sigma_over_alpha(sigma~),
    even for a churn far below float32's resolution (gamma = 1e-8: that time is 1e-9 above t_i on VE), and
    the step's x0 is the exact denoiser there (the Gaussian's posterior mean at the churned point)."""
    sde = sd.VESDE(sigma_min=0.002, sigma_max=80.0)
    grid = sd.grids.karras(sde, 6)
    r = sde._sigma_over_alpha(grid)
    inclusive = sd.EDMHeun(s_churn=1.2, s_tmin=float(r[4]), s_tmax=float(r[2])).init(sde, grid)
    assert inclusive["draws"] == [False, False, True, True, True, False]
    torch.testing.assert_close(
        inclusive["churn"][2:5], r[2:5] * math.sqrt((1.0 + 0.2) ** 2 - 1.0), rtol=1e-13, atol=0
    )  # gamma = 1.2 / 6
    target = sd.Gaussian(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.3, 1.0, 0.7]).double())
    model = target.model(sde)
    x = target.marginal_sample(3, float(grid[1]), sde, generator=torch.Generator().manual_seed(4))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)

    class Given:  # a noise source handing the step z
        def draw(self, like):
            return z

    for gamma in (1e-8, 0.25):
        solver = sd.EDMHeun(s_churn=6 * gamma)
        coefs = solver.init(sde, grid)
        assert coefs["draws"] == [False] + [True] * 5  # the first step starts at sigma(T): capped, no churn
        seen = []

        def score(x, t, seen=seen):
            seen.append(t[0].item())
            return model.score(x, t)

        for i in range(1, 5):
            seen.clear()
            out = solver.step(
                sd.ScoreModel(score, sde, prediction="score"), {"x": x}, i, coefs, generator=Given(), need_x0=True
            )
            want = float(sde.t_of_sigma_over_alpha(r[i] * (1.0 + gamma)))
            assert want > float(grid[i]) and seen[0] == pytest.approx(want, rel=1e-14, abs=0), (gamma, i, seen[0])
            x_churned = x + float(r[i]) * math.sqrt((1.0 + gamma) ** 2 - 1.0) * z  # alpha = 1 on VE
            torch.testing.assert_close(
                out["x0"], model.x0(x_churned, torch.full((3,), want, dtype=torch.float64)), rtol=1e-12, atol=1e-12
            )


@pytest.mark.parametrize("pred", ["eps", "x0"])
@pytest.mark.parametrize("solver", [sd.EDMHeun(), sd.EDMHeun(s_churn=10.0), sd.EulerAncestral()], ids=repr)
def test_a_step_returns_the_x0_preview_only_when_asked(solver, pred):
    """``step`` with the Solver interface's default (need_x0=False) returns the state alone, whatever the
    network predicts; asked, also x0 = the exact denoiser at the step's first evaluation (the Gaussian's
    posterior mean at (x, t_i); the step taken with noise=False), and the same x bitwise."""
    sde = sd.VPSDE()
    target = sd.Gaussian(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.3, 1.0, 0.7]).double())
    exact = target.model(sde)
    model = sd.ScoreModel(lambda x, t: exact.predict(x, t, pred), sde, prediction=pred, time_input=lambda t: t)
    grid = sd.grids.karras(sde, 5)
    coefs = solver.init(sde, grid)
    x = target.marginal_sample(4, float(grid[2]), sde, generator=torch.Generator().manual_seed(0))
    plain = solver.step(model, {"x": x}, 2, coefs, noise=False)
    asked = solver.step(model, {"x": x}, 2, coefs, noise=False, need_x0=True)
    assert sorted(plain) == ["x"] and sorted(asked) == ["x", "x0"] and torch.equal(plain["x"], asked["x"])
    t = grid[2].expand(4)
    torch.testing.assert_close(asked["x0"], exact.x0(x, t), rtol=1e-12, atol=1e-12)
    drawn = solver.step(model, {"x": x}, 2, coefs, generator=torch.Generator().manual_seed(1))
    assert sorted(drawn) == ["x"]


@pytest.mark.parametrize("need_x0", [False, True])
def test_an_euler_ancestral_step_of_an_eps_network_is_two_kernels_outside_the_network(need_x0):
    """EulerAncestral takes an eps network's output straight into its folded coefficients: one multiply and
    one multiply-add outside the network (two more for the x0 preview, only when asked; a draw and one more
    multiply-add with noise); no conversion to x0 (which would be two more). The count a GPU pays per step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from sdesolve.model import view_at
    from sdesolve.solvers.base import _to_device

    views = {"select", "view", "slice", "expand", "unbind", "alias", "as_strided", "unsqueeze", "squeeze"}

    class Kernels(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.split(".")[0] not in views:
                self.names.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    model = sd.ScoreModel(lambda x, t: 0.5 * torch.tanh(x), sde, prediction="eps")
    solver, x = sd.EulerAncestral(), torch.randn(4, 3, 2, 2)
    coefs = _to_device(solver.init(sde, sd.grids.karras(sde, 6)), x)
    with Kernels() as net:
        view_at(model, x, coefs["t"][1], "eps", (coefs["alpha"][1], coefs["sigma"][1]))
    with Kernels() as ops:
        solver.step(model, {"x": x}, 1, coefs, noise=False, need_x0=need_x0)
    assert ops.names[: len(net.names)] == net.names
    assert ops.names[len(net.names) :] == ["mul", "addcmul"] * (2 if need_x0 else 1), ops.names
    with Kernels() as ops:
        solver.step(model, {"x": x}, 1, coefs, generator=torch.Generator().manual_seed(0), need_x0=need_x0)
    extra = ops.names[len(net.names) :]
    assert extra[: 2 + 2 * need_x0] == ["mul", "addcmul"] * (1 + need_x0) and extra[-1] == "addcmul", extra
    assert len(extra) <= 2 + 2 * need_x0 + 3, extra  # the draw (one or two kernels) and its multiply-add
