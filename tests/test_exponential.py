"""DPM-Solver++, UniPC and DPM-Solver (sdesolve.solvers.exponential) against peers and exact answers.

* step for step against diffusers' ``DPMSolverMultistepScheduler`` (dpmsolver++ orders 2 and 3,
  sde-dpmsolver++), ``UniPCMultistepScheduler`` (bh1, bh2; orders 1-3) and
  ``DPMSolverSinglestepScheduler`` (dpmsolver, order 2) on the same ``DiscreteVPSDE``, the same
  timesteps, x_T and noise: agreement to float64 round-off (1e-11 relative). diffusers holds its
  sigmas in float32 and upcasts samples to float32; the tests hand it float64 sigmas and a float64
  sample whose ``.to(float32)`` is a no-op (``_F64``), so the only difference is the order of
  floating-point operations;
* against k-diffusion's ``sample_dpmpp_2m`` on Karras sigmas (skipped where k-diffusion is absent);
* convergence orders against the exact probability-flow map of a Gaussian (``Gaussian.flow``) on
  VP, sub-VP and VE (fitted slopes), and the local order of the 2M/3M multistep formulas from exact
  history;
* the SDE variant's output law at D = 2, 4, 16, 64 (the exact law of its two-state affine chain,
  and the data law within its discretization bias);
* no model evaluation at sigma = 0; the GraphSampler computes the same map (captured on a GPU).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import PROCESSES, check_moments, check_x0_preview_only_when_asked, fit_slope
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sdesolve as sd
from sdesolve.solvers.base import _to_device

N = 1000
D = 6
_gen = torch.Generator().manual_seed(1234)
W = torch.randn(D, D, generator=_gen, dtype=torch.float64) / D**0.5
B = torch.randn(D, generator=_gen, dtype=torch.float64)
TARGET = sd.Gaussian(torch.tensor([1.0, -0.5, 0.3]), torch.tensor([0.5, 2.0, 0.1]))
ORDER_PROCESSES = {k: PROCESSES[k] for k in ("vp", "subvp", "ve")}  # the registry's factories


def net(x, k):
    """A cheap deterministic eps 'network' of (x, integer timestep k) (as in test_diffusers_match)."""
    k = torch.as_tensor(k, dtype=x.dtype).expand(x.shape[0])
    return torch.tanh(x @ W.to(x.dtype) + (k / N)[:, None] * B.to(x.dtype))


class _F64(torch.Tensor):
    """A float64 tensor whose ``.to(torch.float32)`` is a no-op (diffusers' multistep scheduler upcasts
    samples "to float32"; kept in float64 the comparison is at float64 round-off)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and (torch.float32 in args[1:] or kwargs.get("dtype") == torch.float32):
            return args[0]
        return super().__torch_function__(func, types, args, kwargs)


def _plain(x):
    return x.as_subclass(torch.Tensor) if isinstance(x, torch.Tensor) else x


def _sched(cls_name, **kw):
    diffusers = pytest.importorskip("diffusers")
    s = getattr(diffusers, cls_name)(num_train_timesteps=N, beta_schedule="linear", **kw)
    s.alphas_cumprod = s.alphas_cumprod.double()
    return s


def _sigmas64(sched, final: str):
    """diffusers' sigma_hat = sqrt((1 - abar)/abar) at its timesteps, in float64, then its final sigma."""
    ab = sched.alphas_cumprod
    s = torch.sqrt((1 - ab[sched.timesteps.long()]) / ab[sched.timesteps.long()])
    last = 0.0 if final == "zero" else float(torch.sqrt((1 - ab[0]) / ab[0]))
    return torch.cat([s, torch.tensor([last], dtype=torch.float64)])


def _grid(sde, ks, final: str):
    g = sde.timestep_to_t(torch.tensor(ks, dtype=torch.float64))
    return torch.cat([g, torch.tensor([0.0 if final == "zero" else 1.0 / N], dtype=torch.float64)])


def _run_diffusers(sched, x, steps, final, *, noises=None):
    sched.set_timesteps(steps)
    sched.sigmas = _sigmas64(sched, final)
    out, x = [], x.clone().as_subclass(_F64)
    for j, k in enumerate(sched.timesteps):
        kw = {} if noises is None else {"variance_noise": noises[j].as_subclass(_F64)}
        x = sched.step(net(x, k).as_subclass(_F64), k, x, **kw).prev_sample
        out.append(_plain(x).clone())
    return out


def _run_ours(sde, solver, x, grid, *, seed=0, denoise=True):
    model = sd.ScoreModel(net, sde, prediction="eps")
    out = []
    sd.sample(sde, model, x_T=x.clone(), solver=solver, grid=grid, generator=torch.Generator().manual_seed(seed),
              denoise=denoise, callback=lambda d: out.append(d["x"].clone()))  # fmt: skip
    return out, model.nfe


def _assert_path_close(ours, theirs, tol=1e-11):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        err = float((a - b).abs().max()) / max(1.0, float(b.abs().max()))
        assert err < tol, f"step {i}: relative difference {err:.3g} > {tol:g}"


def _x(n=5):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


# ----------------------------------------------------------------------------- diffusers, step for step
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
@pytest.mark.parametrize("steps", [10, 15, 25])
@pytest.mark.parametrize("order", [2, 3])
def test_dpmsolverpp_matches_diffusers_multistep(order, steps, final):
    """10 steps exercise diffusers' lower-order-final rule (n < 15), 15 its edge (full order to the end
    when the final sigma is sigma_min), 25 the full order; a final
    sigma of 0 the first-order step into sigma = 0 (no evaluation there). ``third_order="taylor"``
    (the Taylor-consistent second difference) departs from diffusers' 3M at its first third-order step."""
    sched = _sched("DPMSolverMultistepScheduler", solver_order=order, algorithm_type="dpmsolver++",
                   final_sigmas_type=final)  # fmt: skip
    sde = sd.DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = _x()
    theirs = _run_diffusers(sched, x, steps, final)
    grid = _grid(sde, sched.timesteps.tolist(), final)
    ours, nfe = _run_ours(sde, sd.DPMSolverPP(order), x, grid)
    _assert_path_close(ours, theirs)
    assert nfe == steps == sd.DPMSolverPP(order).nfe(steps)
    if order == 3 and steps == 25:
        own, _ = _run_ours(sde, sd.DPMSolverPP(3, third_order="taylor"), x, grid)
        _assert_path_close(own[:2], theirs[:2])  # warm-up (orders 1, 2): the same steps
        assert float((own[2] - theirs[2]).abs().max()) > 1e-6


@pytest.mark.parametrize("final", ["zero", "sigma_min"])
@pytest.mark.parametrize("steps", [10, 25])
def test_sde_dpmsolverpp_matches_diffusers(steps, final):
    """DPM-Solver++(2M) SDE with the same noise (diffusers takes it as ``variance_noise``); the last step
    into sigma = 0 adds none on either side. Ending at sigma_min diffusers adds noise on its last step too:
    ours with ``denoise=False`` (the last step's own noise, sigma_s sqrt(1 - e^{-2h}) z, with the next
    draw of the generator)."""
    sched = _sched("DPMSolverMultistepScheduler", solver_order=2, algorithm_type="sde-dpmsolver++",
                   final_sigmas_type=final)  # fmt: skip
    sde = sd.DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = _x()
    g = torch.Generator().manual_seed(7)
    noises = [torch.randn(x.shape, generator=g, dtype=torch.float64) for _ in range(steps)]
    theirs = _run_diffusers(sched, x, steps, final, noises=noises)
    grid = _grid(sde, sched.timesteps.tolist(), final)
    ours, _ = _run_ours(sde, sd.DPMSolverPP(2, stochastic=True), x, grid, seed=7, denoise=final == "zero")
    _assert_path_close(ours, theirs)


@pytest.mark.parametrize("steps", [6, 25])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_matches_diffusers(order, variant, steps):
    """UniPC's predictor-corrector (the corrector re-takes each interval with the newest evaluation).
    bh1 ends at sigma_min: into sigma = 0 diffusers' bh1 step computes B(h) * 0 = -inf * 0 = NaN
    (ours returns x0_hat there, as bh2 does)."""
    final = "zero" if variant == "bh2" else "sigma_min"
    sched = _sched("UniPCMultistepScheduler", solver_order=order, solver_type=variant, final_sigmas_type=final)
    sde = sd.DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = _x()
    theirs = _run_diffusers(sched, x, steps, final)
    solver = sd.UniPC(order, variant=variant)
    ours, nfe = _run_ours(sde, solver, x, _grid(sde, sched.timesteps.tolist(), final))
    _assert_path_close(ours, theirs)
    assert nfe == steps


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_without_lower_order_final_matches_diffusers(order):
    """``lower_order_final=False``: the full predictor order up to the last step, as diffusers'
    ``lower_order_final=False`` (6 steps ending at sigma_min)."""
    sched = _sched("UniPCMultistepScheduler", solver_order=order, final_sigmas_type="sigma_min",
                   lower_order_final=False)  # fmt: skip
    sde = sd.DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = _x()
    theirs = _run_diffusers(sched, x, 6, "sigma_min")
    grid = _grid(sde, sched.timesteps.tolist(), "sigma_min")
    ours, _ = _run_ours(sde, sd.UniPC(order, lower_order_final=False), x, grid)
    _assert_path_close(ours, theirs)
    lowered, _ = _run_ours(sde, sd.UniPC(order), x, grid)  # the default lowers the last steps: another path
    assert float((lowered[-1] - ours[-1]).abs().max()) > 1e-6


class _DiffusersNodes(sd.DPMSolver):
    """DPM-Solver-2 with diffusers' intermediate nodes (its odd timesteps) instead of log-SNR midpoints."""

    def __init__(self, mids):
        super().__init__(2)
        self.mids = mids

    def stage_times(self, sde, grid):
        return self.mids[:, None]


@pytest.mark.parametrize("steps", [9, 21])
def test_dpmsolver2_matches_diffusers_singlestep(steps):
    """diffusers' singlestep order 2 takes blocks (first order to the odd timestep, then second order from
    the block's start): with the same intermediate nodes it is our DPM-Solver-2 step. Compared at the
    end of each block (diffusers' call 2j + 1); its last call is a lone first-order step."""
    sched = _sched("DPMSolverSinglestepScheduler", solver_order=2, algorithm_type="dpmsolver",
                   final_sigmas_type="sigma_min")  # fmt: skip
    sde = sd.DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    x = _x()
    theirs = _run_diffusers(sched, x, steps, "sigma_min")
    ks = sched.timesteps.tolist()
    grid = sde.timestep_to_t(torch.tensor(ks[0::2], dtype=torch.float64))
    mids = sde.timestep_to_t(torch.tensor(ks[1::2], dtype=torch.float64))
    ours, nfe = _run_ours(sde, _DiffusersNodes(mids), x, grid)
    _assert_path_close(ours, theirs[1:-1:2])
    assert nfe == steps - 1


def test_dpmsolver_order1_is_ddim():
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x = TARGET.marginal_sample(16, 1.0, sde, generator=torch.Generator().manual_seed(0))
    for solver in (sd.DPMSolver(1), sd.DPMSolverPP(1), sd.UniPC(1, corrector=False)):
        a = sd.sample(sde, model, x_T=x, solver=solver, steps=12)
        b = sd.sample(sde, model, x_T=x, solver=sd.DDIM(), steps=12)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- k-diffusion
@pytest.mark.parametrize("with_zero", [False, True])
def test_dpmpp_2m_matches_k_diffusion(with_zero):
    """k-diffusion's sample_dpmpp_2m on Karras sigmas (EDM's 0.002-80) of a VE process with the exact
    denoiser of a Gaussian: second order from the second step on, first order into sigma = 0 (ours with
    ``lower_order_final=False``, which is k-diffusion's rule)."""
    from test_edm import k_sampling

    ks = k_sampling()
    sde = sd.VESDE(sigma_min=0.002, sigma_max=80.0)
    target = sd.Gaussian(torch.linspace(-1.0, 1.0, 8), torch.linspace(0.2, 1.5, 8))
    model = target.model(sde)
    grid = sd.grids.karras(sde, 12)
    sigmas = sde._sigma_over_alpha(grid)
    if with_zero:  # the process' sigma > 0 at t = 0; k-diffusion's appended zero is our x0 at the last point
        sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    x = 80.0 * torch.randn(7, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def denoiser(xx, s):
        return model.x0(xx, sde.t_of_sigma_over_alpha(s))

    theirs = ks.sample_dpmpp_2m(denoiser, x.clone(), sigmas, disable=True)
    ours = sd.sample(sde, model, x_T=x, solver=sd.DPMSolverPP(2, lower_order_final=False), grid=grid)
    if with_zero:  # k-diffusion's extra step from sigma_min to 0 is x0_hat at sigma_min
        ours = model.x0(ours, float(grid[-1]))
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- orders
def _flow_errors(sde_name, solver, ns):
    sde = ORDER_PROCESSES[sde_name]()
    model = TARGET.model(sde)
    T, t_min = float(sde.T), float(sde.t_min)
    x = TARGET.marginal_sample(64, T, sde, generator=torch.Generator().manual_seed(1))
    exact = TARGET.flow(x, T, t_min, sde)
    return [float((sd.sample(sde, model, x_T=x, solver=solver, steps=n) - exact).pow(2).mean().sqrt()) for n in ns]


_ORDER_CASES = [
    (sd.DPMSolverPP(2), [20, 40, 80, 160], 2.0),
    (sd.UniPC(2), [20, 40, 80, 160], 3.0),
    (sd.UniPC(1), [20, 40, 80, 160], 2.0),
    (sd.DPMSolver(1), [10, 20, 40, 80], 1.0),
    (sd.DPMSolver(2), [10, 20, 40, 80], 2.0),
    (sd.DPMSolver(3), [10, 20, 40, 80], 3.0),
]


@pytest.mark.parametrize("sde_name", list(ORDER_PROCESSES))
@pytest.mark.parametrize("solver, ns, order", _ORDER_CASES, ids=[repr(c[0]) for c in _ORDER_CASES])
def test_convergence_order_against_the_exact_flow(solver, ns, order, sde_name):
    """RMS error against ``Gaussian.flow`` on the default (log-SNR) grid; the fitted slope is the order
    (DPM-Solver-3 tends to 3 from above at these step counts: 3.2-3.3)."""
    errs = _flow_errors(sde_name, solver, ns)
    slope = fit_slope([1.0 / n for n in ns], errs)
    assert order - 0.2 < slope < order + 0.4, (slope, errs)


@pytest.mark.parametrize("sde_name", list(ORDER_PROCESSES))
def test_taylor_3m_converges_at_order_3_and_beats_the_dpm_3m_there(sde_name):
    """``third_order="taylor"`` against the exact flow: fitted slope >= 3 over 20-80 steps (log-SNR grid),
    and at most 0.6 times the error of the default ``"dpm"`` 3M (diffusers': slope about 2) there. (Its
    first step has no history and is first order: far beyond these step counts that O(h^2) term takes
    over, at errors ~1e-6. At 5-30 calls the "dpm" form is the more accurate on most problems:
    docs/exponential.md.)"""
    ns = [20, 40, 80]
    taylor = _flow_errors(sde_name, sd.DPMSolverPP(3, third_order="taylor"), ns)
    dpm = _flow_errors(sde_name, sd.DPMSolverPP(3), ns)
    slope, dpm_slope = fit_slope([1.0 / n for n in ns], taylor), fit_slope([1.0 / n for n in ns], dpm)
    assert slope > 3.0, (slope, taylor)
    assert 1.9 < dpm_slope < 2.7, (dpm_slope, dpm)
    assert all(a < 0.6 * b for a, b in zip(taylor, dpm)), (taylor, dpm)


@pytest.mark.parametrize("sde_name", list(ORDER_PROCESSES))
@pytest.mark.parametrize("order, third, local", [(2, "dpm", 3), (3, "taylor", 4), (3, "dpm", 3)])
def test_multistep_local_order(order, third, local, sde_name):
    """One step of the order-p multistep formula from the exact state and exact history (x0_hat at the
    previous grid points on the exact flow), on a grid uniform in log-SNR with spacing h: the local
    error is O(h^{p+1}). The "dpm" 3M (diffusers') differs from the "taylor" one by
    ``alpha_s c3 (D1_0 - D1_1)/(r0 + r1)``, half the second-difference term: that difference is O(h^3)
    (measured on it directly: its own error mixes this term with O(h^4) ones at these h)."""
    sde = ORDER_PROCESSES[sde_name]()
    model = TARGET.model(sde)
    solver = sd.DPMSolverPP(order, lower_order_final=False, third_order=third)
    lam0 = float(sde._log_snr(torch.tensor(0.5, dtype=torch.float64)))
    x_start = TARGET.marginal_sample(64, 0.5, sde, generator=torch.Generator().manual_seed(2))
    hs, errs = [0.1, 0.05, 0.025, 0.0125], []
    for h in hs:
        lams = lam0 + 2.0 * h * torch.arange(order + 1, dtype=torch.float64)  # log-SNR = 2 l: l-steps of h
        grid = sde._t_of_log_snr(lams)
        xs = [TARGET.flow(x_start, 0.5, float(t), sde) for t in grid]
        coefs = _to_device(solver.init(sde, grid), x_start)
        assert coefs["orders"][order - 1] == order
        hist = tuple(model.x0(xs[j], float(grid[j])) for j in range(order - 1))
        out = solver.step(model, {"x": xs[order - 1], "hist": hist}, order - 1, coefs)["x"]
        if order == 3 and third == "dpm":
            taylor = sd.DPMSolverPP(3, lower_order_final=False, third_order="taylor")
            c_t = _to_device(taylor.init(sde, grid), x_start)
            ref = taylor.step(model, {"x": xs[order - 1], "hist": hist}, order - 1, c_t)["x"]
        else:
            ref = xs[order]
        errs.append(float((out - ref).abs().max()))
    slope = fit_slope(hs, errs)
    assert local - 0.25 < slope < local + 0.35, (slope, errs)


_EXACT_SOLVERS = [
    sd.DPMSolverPP(1),
    sd.DPMSolverPP(2),
    sd.DPMSolverPP(3),
    sd.DPMSolverPP(3, third_order="taylor"),
    sd.UniPC(1),
    sd.UniPC(2),
    sd.UniPC(3, variant="bh1"),
    sd.DPMSolver(2),
    sd.DPMSolver(3),
]


def random_grid(sde, us):
    """A grid from T to t_min through the points t_min + (T - t_min) u for the distinct u in (0, 1)."""
    T, t_min = float(sde.T), float(sde.t_min)
    inner = sorted({t_min + (T - t_min) * u for u in us}, reverse=True)
    return torch.tensor([T, *inner, t_min], dtype=torch.float64)


@settings(max_examples=25, deadline=None)
@given(
    process=st.sampled_from(sorted(PROCESSES)),
    solver=st.sampled_from(_EXACT_SOLVERS),
    us=st.lists(st.floats(0.01, 0.99), min_size=0, max_size=10, unique=True),
)
@example(process="discrete", solver=sd.DPMSolver(2), us=[0.010000000000000002, 0.01])  # h = 4e-16, node r = 0
@example(process="vp", solver=sd.UniPC(2), us=[0.9, 0.5, 0.010000000000000002, 0.01, 0.005, 0.002])  # h = 0
def test_exact_for_point_mass_data_on_any_grid(process, solver, us):
    """Point-mass data (a Gaussian of std 1e-12): x0_hat and eps_hat are constant along the flow, which every
    exponential integrator integrates exactly, whatever the grid and the process (order, warm-up, final
    steps and step ratios included; grid times a few ulps apart, where h = 0 in float64, too)."""
    sde = PROCESSES[process]()
    target = sd.Gaussian(torch.tensor([1.5, -0.5]), 1e-12)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(len(us)), dtype=torch.float64)
    grid = random_grid(sde, us)
    exact = target.flow(x, float(grid[0]), float(grid[-1]), sde)
    out = sd.sample(sde, target.model(sde), x_T=x, solver=solver, grid=grid)
    # round-off: a step's terms can exceed their sum by up to sigma_hat(T) / sigma_hat(t_min) (2e8 on sub-VP:
    # its alpha(T) is 5e-5), e.g. DPM-Solver's (alpha_s / alpha_t) x and its eps terms in one step from T
    r = sde._sigma_over_alpha(grid[[0, -1]])
    tol = 1e-9 + 8 * torch.finfo(torch.float64).eps * float(r[0] / r[1])
    assert float((out - exact).abs().max()) < tol * max(1.0, float(exact.abs().max()))


# ----------------------------------------------------------------------------- the SDE variant's law
def _memory_chain_law(solver, sde, model, grid, mean_T, var_T):
    """Exact per-coordinate mean and variance of DPM-Solver++(2M) SDE on a diagonal Gaussian target.

    With the exact (affine) x0_hat each step is ``x_{i+1} = A x_i + P x_{i-1} + b + C z`` per coordinate
    (the history term is x0_hat at x_{i-1}); A, P, b, C are read off the solver's own step with scripted
    noise, and the 2x2 covariance of (x_i, x_{i-1}) is propagated exactly. The last step takes no noise.
    """

    class Scripted:
        def __init__(self, value):
            self.value = value

        def draw(self, x):
            return torch.full_like(x, self.value)

    coefs = _to_device(solver.init(sde, grid), mean_T.reshape(1, -1))
    m, v = mean_T.reshape(-1).clone(), var_T.reshape(-1).clone()
    mp, vp, cv = torch.zeros_like(m), torch.zeros_like(v), torch.zeros_like(v)
    n = grid.numel() - 1
    for i in range(n):

        def f(x, xp, z, i=i):
            hist = (model.x0(xp[None], float(grid[i - 1])),) if i > 0 else ()
            st = {"x": x[None], "hist": hist}
            return solver.step(model, st, i, coefs, generator=Scripted(z), noise=i < n - 1)["x"][0]

        zero = torch.zeros_like(m)
        base = f(zero, zero, 0.0)
        A, P, C = f(zero + 1, zero, 0.0) - base, f(zero, zero + 1, 0.0) - base, f(zero, zero, 1.0) - base
        m_new = base + A * m + P * mp
        v_new = A * A * v + P * P * vp + 2 * A * P * cv + C * C
        cv_new = A * v + P * cv
        mp, vp, cv, m, v = m, v, cv_new, m_new, v_new
    return m, v


@pytest.mark.parametrize("dim", [2, 4, 16, pytest.param(64, marks=pytest.mark.slow)])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_sde_variant_samples_its_exact_chain_law_and_the_data_law(sde_name, dim):
    """4000 samples: mean and variance within 5 standard errors of the chain's exact law, which is within
    a few percent of the data law at 30 steps (its discretization bias, asserted separately)."""
    sde = ORDER_PROCESSES[sde_name]()
    g = torch.Generator().manual_seed(dim)
    target = sd.Gaussian(
        torch.randn(dim, generator=g, dtype=torch.float64), 0.3 + torch.rand(dim, generator=g, dtype=torch.float64)
    )
    model = target.model(sde)
    solver, n = sd.DPMSolverPP(2, stochastic=True), 30
    grid = sd.grids.make_grid(solver.default_grid, sde, n)
    m_T, v_T = target.marginal_moments(float(grid[0]), sde)
    mean, var = _memory_chain_law(solver, sde, model, grid, m_T, v_T)
    x_T = m_T + v_T.sqrt() * torch.randn(4000, dim, generator=g, dtype=torch.float64)
    out = sd.sample(sde, model, x_T=x_T, solver=solver, grid=grid, generator=g)
    check_moments(out, mean, var, what=f"{sde_name} D={dim}")
    m0, v0 = target.marginal_moments(float(grid[-1]), sde)
    assert float(((mean - m0).abs() / v0.sqrt()).max()) < 0.05
    assert float((var / v0 - 1).abs().max()) < 0.1


# ----------------------------------------------------------------------------- sigma = 0, NFE, GraphSampler
SOLVERS = [sd.DPMSolverPP(2), sd.DPMSolverPP(3), sd.DPMSolverPP(3, third_order="taylor"), sd.DPMSolverPP(2, stochastic=True), sd.UniPC(2), sd.UniPC(3),
           sd.DPMSolver(2), sd.DPMSolver(3)]  # fmt: skip


@pytest.mark.parametrize("grid_kind", ["log_snr", "karras"])
@pytest.mark.parametrize("solver", SOLVERS, ids=repr)
def test_step_into_sigma_zero_never_evaluates_there(solver, grid_kind):
    """A grid ending at t = 0 with sigma(0) = 0: no model call there, finite coefficients, and the last
    step returns alpha(0) x0_hat = x0_hat at its start exactly."""
    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)

    def eps_net(x, t):
        if bool((t <= 0).any()):
            raise AssertionError("the model was evaluated at sigma = 0")
        return torch.tanh(x + t[:, None])

    grid = sd.grids.make_grid(grid_kind, sde, 8)
    assert float(grid[-1]) == 0.0
    coefs = solver.init(sde, grid)
    assert all(bool(torch.isfinite(v).all()) for v in coefs.values() if isinstance(v, torch.Tensor))
    steps = []
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = sd.ScoreModel(eps_net, sde, time_input=lambda t: t)
    out = sd.sample(sde, model, x_T=x, solver=solver, grid=grid, generator=torch.Generator().manual_seed(1),
                    callback=steps.append)  # fmt: skip
    torch.testing.assert_close(out, steps[-1]["x0"], rtol=1e-13, atol=1e-13)
    nfe_last_step_saved = solver.nfe_per_step - 1
    assert model.nfe == solver.nfe(8) - nfe_last_step_saved


@pytest.mark.parametrize("solver", [s for s in SOLVERS if not s.stochastic], ids=repr)
def test_float32_agrees_with_float64(solver):
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x = TARGET.marginal_sample(32, 1.0, sde, generator=torch.Generator().manual_seed(0))
    a = sd.sample(sde, model, x_T=x, solver=solver, steps=15, generator=torch.Generator().manual_seed(1))
    b = sd.sample(sde, model, x_T=x.float(), solver=solver, steps=15, generator=torch.Generator().manual_seed(1))
    assert b.dtype == torch.float32
    torch.testing.assert_close(b.double(), a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("solver", SOLVERS, ids=repr)
def test_graph_sampler_plain_loop_is_sample(solver):
    """The GraphSampler's loop (pre-drawn noise block on a CPU) is the solver's own solve."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    gs = sd.GraphSampler(sde, model, (16, 3), solver=solver, steps=12, device="cpu", dtype=torch.float64)
    assert gs.n_noise == (11 if solver.stochastic else 0)
    x_T = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if not solver.stochastic:
        torch.testing.assert_close(gs(x_T), sd.sample(sde, model, solver=solver, steps=12, x_T=x_T), rtol=0, atol=1e-12)
    else:
        out = gs(generator=torch.Generator().manual_seed(3))
        assert bool(torch.isfinite(out).all())
        torch.testing.assert_close(out, gs(generator=torch.Generator().manual_seed(3)), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("solver", SOLVERS, ids=repr)
def test_cuda_graph_capture_equals_the_plain_loop_without_sync(solver):
    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    target = sd.Gaussian(torch.zeros(3, 8, 8), 0.5)
    model = target.model(sde)
    kw = dict(solver=solver, steps=20, grid="karras", device="cuda", check_finite=False)
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


def test_attributes_and_repr():
    assert sd.DPMSolverPP(3).order == 3 and sd.DPMSolverPP(3).strong_order == 2.0
    assert sd.DPMSolverPP(3, third_order="taylor").strong_order == 3.0 and sd.DPMSolverPP(2).strong_order == 2.0
    assert sd.DPMSolverPP(2, stochastic=True).stochastic and sd.DPMSolverPP(2, stochastic=True).strong_order is None
    assert sd.UniPC(2).order == 3.0 and sd.UniPC(2, corrector=False).order == 2.0
    assert sd.DPMSolver(3).nfe_per_step == 3 and sd.DPMSolver(3).nfe(10) == 30
    assert not any(s.stochastic for s in (sd.DPMSolverPP(), sd.UniPC(), sd.DPMSolver()))
    assert repr(sd.DPMSolverPP(3)).startswith("DPMSolverPP(") and "order=3" in repr(sd.DPMSolverPP(3))
    assert math.isclose(sd.DPMSolverPP(2).nfe(7), 7)


# ----------------------------------------------------------------------------- the ring form (issue 12 item 5)
_RING_SOLVERS = [
    sd.DPMSolverPP(1), sd.DPMSolverPP(2), sd.DPMSolverPP(3), sd.DPMSolverPP(3, third_order="taylor"),
    sd.DPMSolverPP(2, stochastic=True), sd.UniPC(1), sd.UniPC(2), sd.UniPC(3, "bh1"), sd.UniPC(2, corrector=False),
]  # fmt: skip


def _exact_model(sde, pred):
    """TARGET's exact view ``pred`` as a float64 ScoreModel (the same map whatever the parameterization)."""
    from sdesolve.model import convert

    def net(x, t):
        shape = (-1,) + (1,) * (x.dim() - 1)
        a, s = torch.exp(sde._log_alpha(t)).reshape(shape), torch.exp(sde._log_sigma(t)).reshape(shape)
        return convert(TARGET.marginal_score(x, t, sde), x, a, s, "score", pred)

    return sd.ScoreModel(net, sde, prediction=pred, time_input=lambda t: t)


@pytest.mark.parametrize("sde_name", ["vp", "ve", "discrete0"])
@pytest.mark.parametrize("solver", _RING_SOLVERS + [sd.DPMSolver(2), sd.DPMSolver(3)], ids=repr)
def test_every_network_parameterization_gives_the_same_samples(solver, sde_name):
    """The step folds the network's own view into its precomputed weights (eps for eps, v and score
    networks, x0 for x0 networks; DPM-Solver asks for eps at each stage, with the stage's alpha and sigma):
    the same exact denoiser in the four parameterizations gives the same
    samples and x0 previews (float64, 10 steps, same noise; into sigma = 0 on discrete0), to 1e-12 of
    their largest magnitude (measured 1.2e-13: the x0 preview from eps carries 1/alpha ~ 150 times the
    round-off at high noise; a wrong fold is off by O(1))."""
    sde = {"vp": sd.VPSDE(), "ve": sd.VESDE(), "discrete0": sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)}[
        sde_name
    ]
    outs = {}
    for pred in ("x0", "eps", "v", "score"):
        x0s = []
        x = sd.sample(
            sde, _exact_model(sde, pred), (5, 3), solver=solver, steps=10, dtype=torch.float64,
            generator=torch.Generator().manual_seed(1), callback=lambda d, acc=x0s: acc.append(d["x0"]),
        )  # fmt: skip
        outs[pred] = (x, torch.stack(x0s))
    ref, ref_x0 = outs["x0"]
    for pred, (x, x0) in outs.items():
        assert float((x - ref).abs().max()) <= 1e-12 * float(ref.abs().max()), pred
        assert float((x0 - ref_x0).abs().max()) <= 1e-12 * float(ref_x0.abs().max()), pred


@pytest.mark.parametrize("pred", ["eps", "x0"])
@pytest.mark.parametrize("solver", _RING_SOLVERS, ids=repr)
def test_a_multistep_step_is_two_kernels_outside_the_network(solver, pred):
    """Every step of DPM-Solver++ and UniPC (any order, warm-up and steady state) dispatches the network
    and two fused multiply-adds (stochastic: a draw and one more), whatever its history: no x0
    conversion, no per-step history list; views apart (no kernel). The count a GPU pays per step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from sdesolve.model import view_at, with_time_tables

    views = {"select", "view", "slice", "expand", "unbind", "alias", "as_strided", "unsqueeze", "squeeze"}

    class Kernels(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func.__name__.split(".")[0] not in views
            return func(*args, **(kwargs or {}))

    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    model = sd.ScoreModel(lambda x, t: 0.5 * torch.tanh(x), sde, prediction=pred)
    x = torch.randn(4, 3, 2, 2)
    coefs = _to_device(solver.init(sde, sd.grids.log_snr(sde, 8)), x)
    model = with_time_tables(model, [v for k, v in coefs.items() if k.startswith("t")], x)
    with Kernels() as net:
        view_at(model, x, coefs["t"][0], pred, (coefs["alpha"][0], coefs["sigma"][0]))
    state, gen = solver.init_state(x, coefs), torch.Generator().manual_seed(0)
    for i in range(8):  # the last step (into sigma = 0) included
        with Kernels() as ops:
            state = solver.step(model, state, i, coefs, generator=gen, noise=i < 7)
        assert ops.n - net.n == (4 if solver.stochastic and i < 7 else 2), (i, ops.n, net.n)


def test_multistep_defaults_are_the_diffusers_schedulers_defaults():
    """``UniPC()`` and ``DPMSolverPP()`` default to what diffusers' schedulers default to: order 2 (UniPC's
    predictor, bh2; DPM-Solver++(2M)), lower order at the last steps (issue 14: an order-3 default survived)."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    uni, dpm = UniPCMultistepScheduler().config, DPMSolverMultistepScheduler().config
    u, d = sd.UniPC(), sd.DPMSolverPP()
    want = (uni.solver_order, uni.solver_type, uni.lower_order_final)
    assert (u.predictor_order, u.variant, u.lower_order_final) == want
    assert (d.order, d.stochastic, d.lower_order_final) == (dpm.solver_order, False, dpm.lower_order_final)
    assert uni.solver_order == dpm.solver_order == 2 and uni.solver_type == "bh2"


# ----------------------------------------------------------------------------- degenerate grids, orders, the state
def _grid_with_a_zero_width_step(sde):
    """13 steps on VP with grid times 0.38 and the next float64 below it: equal log-SNR (h = 0 in float64)."""
    t0 = 0.38
    ts = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, t0, math.nextafter(t0, 0.0), 0.3, 0.2, 0.1, 0.05, 0.02, 0.001]
    grid = torch.tensor(ts, dtype=torch.float64)
    lam = sde._log_snr(grid)
    assert float(lam[7]) == float(lam[6]) and bool((lam[1:7] > lam[:6]).all()) and bool((lam[8:] > lam[7:-1]).all())
    return grid


_ZERO_WIDTH_SOLVERS = [
    sd.DPMSolverPP(2), sd.DPMSolverPP(3), sd.DPMSolverPP(3, third_order="taylor"), sd.DPMSolverPP(2, stochastic=True),
    sd.UniPC(1), sd.UniPC(2), sd.UniPC(3, "bh1"), sd.UniPC(3, corrector=False),
]  # fmt: skip


@pytest.mark.parametrize("solver", _ZERO_WIDTH_SOLVERS, ids=repr)
def test_a_step_of_zero_log_snr_width_restarts_the_multistep_history(solver):
    """A step whose log-SNR does not increase (two grid times 1 ulp apart: h = 0 in float64) is order 1 and
    the steps after it start a new history (the ratios h_prev / h need h > 0): the solve through it is the
    solve up to and through that step (``lower_order_final=False``: it is not the end), then a new solve of
    the rest from there, with the same draws. A 14-point VP grid, float64, to 1e-13."""
    sde = sd.VPSDE()
    grid, j = _grid_with_a_zero_width_step(sd.VPSDE()), 6
    model = TARGET.model(sde)
    x = TARGET.marginal_sample(16, 1.0, sde, generator=torch.Generator().manual_seed(0))
    head = type(solver)(**{**_init_args(solver), "lower_order_final": False})
    full = sd.sample(sde, model, x_T=x, solver=solver, grid=grid, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    mid = sd.sample(sde, model, x_T=x, solver=head, grid=grid[: j + 2], generator=g, denoise=False)
    rest = sd.sample(sde, model, x_T=mid, solver=solver, grid=grid[j + 1 :], generator=g)
    assert bool(torch.isfinite(full).all())
    torch.testing.assert_close(full, rest, rtol=1e-13, atol=1e-13)


def _init_args(solver):
    if isinstance(solver, sd.UniPC):
        return dict(order=solver.predictor_order, variant=solver.variant, corrector=solver.corrector)
    return dict(order=int(solver.order), stochastic=solver.stochastic, third_order=solver.third_order)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize(
    "process, us",
    [("vp", [0.010000000000000002, 0.01]), ("cosine", [0.5000000000000001, 0.5]), ("discrete", [0.5000000000000001, 0.5])],
    ids=["vp-h0", "cosine-node-past-the-end", "discrete-node-on-the-end"],
)  # fmt: skip
def test_dpm_solver_takes_a_step_narrower_than_round_off_at_order_one(process, us, k):
    """Grid times 1 ulp apart: h = 0 in float64 (vp), or h = 4.4e-16 with DPM-Solver's intermediate log-SNR
    rounding onto the step's end (discrete: r = 1) or past it (cosine: r = 1.5 for order 2, (1/8, 3/2) for
    order 3). That step is DDIM's (one evaluation, at its start), the others of order k: k * 3 - (k - 1)
    evaluations, and the solve stays exact for point-mass data."""
    sde = PROCESSES[process]()
    grid = random_grid(sde, us)
    target = sd.Gaussian(torch.tensor([1.5, -0.5]), 1e-12)
    model = target.model(sde)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sd.sample(sde, model, x_T=x, solver=sd.DPMSolver(k), grid=grid)
    assert model.nfe == 3 * k - (k - 1)
    exact = target.flow(x, float(grid[0]), float(grid[-1]), sde)
    assert float((out - exact).abs().max()) < 1e-10 * max(1.0, float(exact.abs().max()))


@pytest.mark.parametrize("n", [1, 2, 3, 14, 15, 16])
def test_multistep_orders_are_the_peers_rules(n):
    """The per-step orders (``init``'s ``"orders"``): warm-up min(order, i + 1); DPM-Solver++'s
    lower-order-final rule (diffusers': order 1 on the last step and at most 2 on the one before when
    n < 15), UniPC's (at most n - i on step i); neither with ``lower_order_final=False``; order 1 into
    sigma = 0 whatever the rule."""
    for sde, into_zero in ((sd.VPSDE(), False), (sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0), True)):
        grid = sd.grids.log_snr(sde, n)
        for order in (1, 2, 3):
            warm = [min(order, i + 1) for i in range(n)]
            dpmpp = [min(p, 1 if i == n - 1 else 2 if i == n - 2 else p) if n < 15 else p for i, p in enumerate(warm)]
            unipc = [min(p, n - i) for i, p in enumerate(warm)]
            cases = [
                (sd.DPMSolverPP(order), dpmpp), (sd.DPMSolverPP(order, lower_order_final=False), warm),
                (sd.UniPC(order), unipc), (sd.UniPC(order, lower_order_final=False), warm),
            ]  # fmt: skip
            for solver, want in cases:
                want = want[:-1] + [1] if into_zero else want
                assert solver.init(sde, grid)["orders"] == want, (solver, n, into_zero)


def _storage_bytes(state):
    return sum({id(v.untyped_storage()): v.untyped_storage().nbytes() for v in state.values()
                if isinstance(v, torch.Tensor)}.values())  # fmt: skip


@pytest.mark.parametrize("solver", _RING_SOLVERS, ids=repr)
def test_the_state_holds_2_k_plus_1_arrays_and_the_output_is_its_own(solver):
    """The memory price of the ring form (module docstring): the state holds 2 (K + 1) arrays of x's size,
    K = order - 1 for DPM-Solver++, UniPC's predictor order (one less without the corrector), at every
    step; the last step returns a tensor of its own (the sample does not keep the ring alive)."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    if isinstance(solver, sd.UniPC):
        k = solver.predictor_order - (0 if solver.corrector else 1)
    else:
        k = int(solver.order) - 1
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    coefs = _to_device(solver.init(sde, sd.grids.log_snr(sde, 6)), x)
    state = solver.init_state(x, coefs)
    for i in range(6):
        assert _storage_bytes(state) == 2 * (k + 1) * x.nbytes, i
        state = solver.step(model, state, i, coefs, generator=torch.Generator().manual_seed(i), noise=i < 5)
    assert state["x"].untyped_storage().nbytes() == x.nbytes
    out = sd.sample(sde, model, x_T=x, solver=solver, steps=6, generator=torch.Generator().manual_seed(1))
    assert out.untyped_storage().nbytes() == x.nbytes


class _Fixed:
    """A noise source (``draw(x)``) handing out given tensors in turn."""

    def __init__(self, zs):
        self.zs = list(zs)

    def draw(self, x):
        return self.zs.pop(0)


@pytest.mark.parametrize("solver", _RING_SOLVERS, ids=repr)
def test_a_state_of_x_and_its_history_steps_as_the_ring_state(solver):
    """A state written as ``{"x": x_i, "hist": (x0_hat at the previous points, newest last)}`` (or ``{"x"}``
    alone at step 0) steps to the same x_{i+1} as the solver's own ring state, at every step of an 8-step
    solve into sigma = 0 (warm-up, lower-order final steps, the step into zero), float64, to 1e-13 of
    the largest magnitude (the partial sums are only summed in another order)."""
    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    model = _exact_model(sde, "x0")
    grid = sd.grids.log_snr(sde, 8)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    zs = torch.randn(8, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    coefs = _to_device(solver.init(sde, grid), x)
    state, xs, ms = solver.init_state(x, coefs), [x], []
    for i in range(8):
        ms.append(model.x0(state["x"], float(grid[i])))
        state = solver.step(model, state, i, coefs, generator=_Fixed([zs[i]]), noise=i < 7)
        xs.append(state["x"])
    for i in range(8):
        given = {"x": xs[i], "hist": tuple(ms[:i])} if i else {"x": xs[0]}
        out = solver.step(model, given, i, coefs, generator=_Fixed([zs[i]]), noise=i < 7)["x"]
        scale = float(xs[i + 1].abs().max())
        assert float((out - xs[i + 1]).abs().max()) <= 1e-13 * scale, i


def test_the_stochastic_step_draws_noise_by_default():
    """``step``'s documented default is ``noise=True`` (``noise=False`` asks for the noiseless mean): the SDE
    variant called without it draws, as with ``noise=True`` and the same generator."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    solver = sd.DPMSolverPP(2, stochastic=True)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    coefs = _to_device(solver.init(sde, sd.grids.log_snr(sde, 4)), x)
    for i in range(4):  # the last step too
        state = solver.init_state(x, coefs) if i == 0 else {"x": x, "hist": (model.x0(x, 0.5),) * i}
        default = solver.step(model, state, i, coefs, generator=torch.Generator().manual_seed(5))["x"]
        drawn = solver.step(model, state, i, coefs, generator=torch.Generator().manual_seed(5), noise=True)["x"]
        mean = solver.step(model, state, i, coefs, noise=False)["x"]
        assert torch.equal(default, drawn) and float((default - mean).abs().max()) > 1e-3, i


def test_dpm_solver_stage_times_are_log_snr_fractions_of_each_step():
    """``DPMSolver.stage_times`` (the hook a subclass overrides): shape (n, order - 1), float64, the log-SNR
    at fractions 1/2, or 1/3 and 2/3, of each step (to 1e-12); order 1 has none."""
    sde = sd.VPSDE()
    grid = sd.grids.log_snr(sde, 7)
    lam = sde._log_snr(grid)
    for k, fr in ((1, []), (2, [0.5]), (3, [1 / 3, 2 / 3])):
        st = sd.DPMSolver(k).stage_times(sde, grid)
        assert st.shape == (7, k - 1) and st.dtype == torch.float64, k
        for j, r in enumerate(fr):
            want = lam[:-1] + r * (lam[1:] - lam[:-1])
            torch.testing.assert_close(sde._log_snr(st[:, j]), want, rtol=1e-12, atol=1e-12)


def _system(n):
    entry = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False)
    rows = st.lists(st.tuples(st.lists(entry, min_size=n, max_size=n), st.sampled_from([1e-12, 1e-6, 1.0, 1e6])),
                    min_size=n, max_size=n)  # fmt: skip
    return st.tuples(rows, st.lists(entry, min_size=n, max_size=n))


@settings(max_examples=30, deadline=None)
@given(system=st.integers(1, 3).flatmap(_system))
@example(system=([([1.0, 1.0], 1.0), ([1e-17, 1.0], 1.0)], [2.0, 1.0]))
@example(system=([([1.0, 1.0, 1.0], 1.0), ([-1e-5, -2.0, 1.0], 1.0), ([1e-10, 4.0, 1.0], 1.0)], [0.5, 0.2, 0.1]))
def test_unipc_small_systems_are_solved_with_partial_pivoting(system):
    """``_solve`` (UniPC's order conditions, at most 3 x 3) is Gaussian elimination with partial pivoting:
    backward stable whatever the row order and scaling, residual within 16 n eps (|M| |x| + |y|) in the
    max norm; e.g. [[1, 1], [1e-17, 1]] x = (2, 1) (solution ~(1, 1)), where taking the last row as the pivot
    returns (0, 1), and UniPC's corrector system for a step 2e5 times longer than the one before it
    (points r = -1e-5, -2, 1)."""
    import numpy as np

    from sdesolve.solvers.exponential import _solve

    rows, y = system
    M = [[v * scale for v in row] for row, scale in rows]
    A, b = np.array(M), np.array(y)
    if abs(np.linalg.det(A)) <= 1e-6 * np.prod(np.abs(A).max(axis=1)):
        return  # (near-)singular: not a system UniPC poses
    x = np.array(_solve(M, y))
    res = np.abs(A @ x - b).max()
    n = len(y)
    assert res <= 16 * n * np.finfo(float).eps * (np.abs(A).sum(axis=1).max() * np.abs(x).max() + np.abs(b).max()), (
        M, y, x.tolist(), res)  # fmt: skip


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_step_forms_the_x0_preview_only_when_asked(order):
    """``DPMSolver.step``'s documented default is ``need_x0=False`` (the Solver interface's): called without it
    the step returns the state alone; with ``need_x0=True`` it also returns the model's denoised estimate at
    (x, t_i), the Gaussian's posterior mean E[x0 | x_t] (1e-12), and the same next state bitwise."""
    sde = sd.VPSDE()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    check_x0_preview_only_when_asked(sd.DPMSolver(order), sde, TARGET.model(sde), x, sd.grids.log_snr(sde, 4))
