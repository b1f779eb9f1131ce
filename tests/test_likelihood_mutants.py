"""Tests that close mutation-testing gaps of sdesolve.likelihood (issue 14).

A mutation run found code of the likelihood no default test reached or distinguished: the
torchdiffeq path (``grad="adjoint"`` and the deprecated torchdiffeq fixed-step methods, before
only in slow tests) and ``_on_grid`` (which data-range hint a bits-per-dim error gives). Each test
compares with an exact answer: the marginal log-density and score of a Gaussian under VP, or the
exact levels of a data grid.
"""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
from helpers import UserVP

import sdesolve as sd
from sdesolve import VPSDE, Gaussian, bits_per_dim, log_likelihood
from sdesolve.likelihood import _on_grid, _range_hint, _TimeMap

F64 = torch.float64
GAUSS = Gaussian(torch.tensor([0.5, -0.3, 0.8], dtype=F64), torch.tensor([0.3, 0.6, 0.2], dtype=F64))


def _data(sde, n=2, seed=1):
    return GAUSS.marginal_sample(n, sde.t_min, sde, generator=torch.Generator().manual_seed(seed)).to(F64)


def _exact_prior(sde):
    return lambda z: GAUSS.marginal_log_prob(z, sde.T, sde)


class _TimedScore:
    """The exact score of GAUSS, recording every time it is evaluated at."""

    def __init__(self, sde):
        self.sde, self.times = sde, []

    def __call__(self, x, t):
        self.times.append(t.detach().clone())
        return GAUSS.marginal_score(x, t, self.sde)


# ------------------------------------------------------------------ grad="adjoint" (torchdiffeq)
class _GaussianScoreNet(torch.nn.Module):
    """The exact score of GAUSS under ``sde`` with a learnable mean ``m`` (and a frozen parameter that
    the adjoint must leave out), recording every time it is evaluated at."""

    def __init__(self, sde):
        super().__init__()
        self.sde, self.times = sde, []
        self.m = torch.nn.Parameter(GAUSS.mean.clone())
        self.register_buffer("var", GAUSS.std**2)
        self.frozen = torch.nn.Parameter(torch.ones((), dtype=F64), requires_grad=False)

    def forward(self, x, t):
        self.times.append(t.detach().clone())
        a = torch.exp(self.sde._log_alpha(t)).unsqueeze(-1)
        s2 = torch.exp(2 * self.sde._log_sigma(t)).unsqueeze(-1)
        return -(x - a * self.m) / (a * a * self.var + s2) * self.frozen


def test_adjoint_value_and_gradients_are_the_exact_ones():
    """grad="adjoint" (torchdiffeq's odeint_adjoint): log p equals the exact log p_{t_min}(x) and
    d log p / dx its exact score, to the tolerance (rtol = atol = 1e-6; measured 1.2e-6 and 5.8e-6);
    d log p / dm (a model parameter) equals grad=True's; the forward solve never evaluates the model outside
    [t_min, T] (torchdiffeq is told to land on T, not to step past it and interpolate back) and its first
    evaluation is at t_min exactly (the end times are handed to torchdiffeq in the state's float64, not
    rounded to float32)."""
    sde = sd.VPSDE()
    x = _data(sde)
    net = _GaussianScoreNet(sde)
    model = sd.ScoreModel(net, sde, prediction="score")
    grads = {}
    for grad in ("adjoint", True):
        xr = x.clone().requires_grad_(True)
        net.times.clear()
        res = log_likelihood(
            sde, model, xr, divergence="exact", rtol=1e-6, atol=1e-6, grad=grad, prior_logp=_exact_prior(sde)
        )
        ts = torch.cat([t.reshape(-1) for t in net.times])  # the forward solve's evaluations
        t_lo, t_hi = float(ts.min()), float(ts.max())
        assert float(ts[0]) == t_lo == sde.t_min and t_hi <= sde.T, (grad, t_lo, t_hi)
        n_forward = len(net.times)
        grads[grad] = torch.autograd.grad(res.logp.sum(), (xr, net.m))
        n_backward = len(net.times) - n_forward
        if grad == "adjoint":  # the adjoint solves backward in time with torchdiffeq's seminorm (Kidger et al.
            # 2021): 326 evaluations measured, 458 with the full norm; grad=True backpropagates: no evaluation
            assert 0 < n_backward < 400, n_backward
        else:
            assert n_backward == 0, n_backward
        torch.testing.assert_close(res.logp, GAUSS.marginal_log_prob(x, sde.t_min, sde), rtol=0, atol=2e-5)
        torch.testing.assert_close(grads[grad][0], GAUSS.marginal_score(x, sde.t_min, sde), rtol=0, atol=1e-4)
    torch.testing.assert_close(grads["adjoint"][1], grads[True][1], rtol=0, atol=1e-4)
    assert float(grads[True][1].abs().max()) > 0.1  # a gradient that can be told from zero


@pytest.mark.parametrize(("rtol", "atol"), [(1e-3, 1e-12), (1e-12, 1e-3)])
def test_adjoint_solve_takes_the_callers_tolerances(rtol, atol):
    """torchdiffeq gets both tolerances: its forward solve (the same Dormand-Prince pair and controller as
    our integrator, grad=False) needs as many evaluations (measured equal: 80 and 32), where torchdiffeq's
    own defaults (rtol 1e-7, atol 1e-9) would need several times more."""
    sde = sd.VPSDE()
    x = _data(sde)
    nfe = {}
    for grad in ("adjoint", False):
        xr = x.clone().requires_grad_(grad == "adjoint")
        nfe[grad] = log_likelihood(sde, GAUSS.model(sde), xr, divergence="exact", rtol=rtol, atol=atol, grad=grad).nfe
    assert nfe["adjoint"] <= 1.25 * nfe[False], nfe


@pytest.mark.gpu
def test_adjoint_on_the_gpu_gives_the_cpu_answer():
    """grad="adjoint" with the data and the model on the GPU: torchdiffeq gets its times on the data's
    device (host times would make it warn "t is not on the same device as y0" and copy them), and the value
    and both gradients equal the CPU ones (same float64 solve)."""
    out = {}
    for dev in ("cpu", "cuda"):
        sde = sd.VPSDE()
        net = _GaussianScoreNet(sde).to(dev)
        xr = _data(sde).to(dev).requires_grad_(True)
        model = sd.ScoreModel(net, sde, prediction="score")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = log_likelihood(sde, model, xr, divergence="exact", rtol=1e-6, atol=1e-6, grad="adjoint")
            out[dev] = (res.logp, *torch.autograd.grad(res.logp.sum(), (xr, net.m)))
        assert not [w for w in caught if "device" in str(w.message)], [str(w.message) for w in caught]
    for cpu, gpu in zip(out["cpu"], out["cuda"]):
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ torchdiffeq's fixed-step methods
@pytest.mark.parametrize("grad", [False, True])
def test_torchdiffeq_fixed_step_method_takes_exactly_the_asked_steps(grad):
    """method="heun3" (deprecated, through torchdiffeq): ``steps`` intervals of 3 evaluations each,
    third-order accurate (the error falls ~8x from 25 to 50 steps); grad=True differentiates it
    (d log p / dx is the exact score to the same accuracy), grad=False builds no graph."""
    sde = sd.VPSDE()
    x = _data(sde)
    exact = GAUSS.marginal_log_prob(x, sde.t_min, sde)
    errs = []
    for steps in (25, 50):
        xr = x.clone().requires_grad_(grad)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            res = log_likelihood(
                sde, GAUSS.model(sde), xr, method="heun3", steps=steps, divergence="exact", grad=grad,
                prior_logp=_exact_prior(sde),
            )  # fmt: skip
        assert res.nfe == 3 * steps
        errs.append(float((res.logp - exact).abs().max().detach()))
        if steps == 25 and not grad:  # float32 data: the grid is handed over in the state's dtype
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                res32 = log_likelihood(
                    sde, GAUSS.model(sde), x.float(), method="heun3", steps=steps, divergence="exact",
                    prior_logp=_exact_prior(sde),
                )  # fmt: skip
            assert res32.logp.dtype == torch.float32 and res32.nfe == res.nfe
            torch.testing.assert_close(res32.logp.double(), res.logp, rtol=0, atol=1e-4)
        assert res.logp.requires_grad == grad
        if grad:
            (g,) = torch.autograd.grad(res.logp.sum(), xr)
            torch.testing.assert_close(g, GAUSS.marginal_score(x, sde.t_min, sde), rtol=0, atol=1e-3)
    assert errs[1] < 1e-4 and errs[0] / errs[1] > 4.0, errs


def _log_p_on(dev, **kwargs):
    """log p of GAUSS under VP with the network's parameters and the data on ``dev`` (``kwargs``: the solve's
    method and options); the (state, time) devices the network saw, and the answer."""
    sde = sd.VPSDE()
    net = _GaussianScoreNet(sde).to(dev)
    seen = set()

    def score(x, t):
        seen.add((x.device.type, t.device.type))
        return net(x, t)

    res = log_likelihood(
        sde, sd.ScoreModel(score, sde, prediction="score"), _data(sde).to(dev), divergence="exact",
        prior_logp=lambda z: GAUSS.marginal_log_prob(z.cpu(), sde.T, sde).to(z.device), **kwargs,
    )  # fmt: skip
    return seen, res


def _heun3_on(dev, steps=10):
    """log p of GAUSS by torchdiffeq's deprecated heun3 on ``dev`` (:func:`_log_p_on`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _log_p_on(dev, method="heun3", steps=steps)


@pytest.mark.gpu
def test_torchdiffeq_fixed_steps_on_the_gpu_give_the_cpu_answer():
    """torchdiffeq's fixed-step path with the data and the network on the GPU: the step grid is handed to
    torchdiffeq on the data's device; every evaluation sees device states and times, the NFE is 3 a step,
    and the answer, on the GPU, equals the CPU solve (the same float64 steps; 1e-12)."""
    seen_cpu, cpu = _heun3_on("cpu")
    seen, gpu = _heun3_on("cuda")
    assert seen_cpu == {("cpu", "cpu")} and seen == {("cuda", "cuda")}, seen
    assert gpu.logp.device.type == "cuda" and gpu.nfe == cpu.nfe == 30
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ _on_grid: is float data on a level grid?
@pytest.mark.parametrize(("lo", "hi", "levels"), [(0.0, 1.0, 256), (-1.0, 1.0, 256), (0.0, 255.0, 256), (0.0, 1.0, 5)])
def test_on_grid_accepts_every_level_and_refuses_points_between(lo, hi, levels):
    """All levels ``lo + (hi - lo) k / (levels - 1)`` (both ends included) are on the grid; a point
    0.01 of a level step away, or one step beyond either end, is not."""
    k = torch.arange(levels, dtype=F64)
    on = lo + (hi - lo) * k / (levels - 1)
    step = (hi - lo) / (levels - 1)
    assert _on_grid(on, lo, hi, levels)
    assert _on_grid(on.float(), lo, hi, levels)  # float32 data of the grid round within the tolerance
    if hi == levels - 1:  # integer levels are exact in half precision; the test computes in float64
        assert _on_grid(on.half(), lo, hi, levels) and _on_grid(on.bfloat16(), lo, hi, levels)
    assert not _on_grid(on + 0.01 * step, lo, hi, levels)
    assert not _on_grid(on[levels // 2 :] - 0.01 * step, lo, hi, levels)
    assert not _on_grid(torch.tensor([lo - step]), lo, hi, levels)
    assert not _on_grid(torch.tensor([hi + step]), lo, hi, levels)
    # a grid of other bounds is another grid
    assert not _on_grid(on, lo + 0.5 * step, hi + 0.5 * step, levels)


def test_on_grid_tolerance_is_one_thousandth_of_a_level_inclusive():
    """With lo = 0, hi = 1, 2 levels the grid coordinate g equals x exactly, so the tolerance's edges
    are exact: |g - round(g)| <= 1e-3 is on the grid, and g must lie in (-1e-3, levels - 1 + 1e-3)."""
    assert _on_grid(torch.tensor([1e-3], dtype=F64), 0.0, 1.0, 2)
    assert _on_grid(torch.tensor([0.0, 0.9991, 1.0], dtype=F64), 0.0, 1.0, 2)
    assert not _on_grid(torch.tensor([0.0011], dtype=F64), 0.0, 1.0, 2)
    assert not _on_grid(torch.tensor([-1e-3], dtype=F64), 0.0, 1.0, 2)  # g > -1e-3 is strict
    assert _on_grid(torch.tensor([-0.0009], dtype=F64), 0.0, 1.0, 2)
    assert not _on_grid(torch.tensor([1.0 + 1e-3], dtype=F64), 0.0, 1.0, 2)  # g < 1 + 1e-3 is strict
    assert _on_grid(torch.tensor([1.0009], dtype=F64), 0.0, 1.0, 2)


@pytest.mark.parametrize(
    ("data", "call_range", "want"),
    [
        (torch.arange(256, dtype=F64) / 255, (-1.0, 1.0), "256-level grid of [0, 1]: pass data_range=(0, 1)"),
        (torch.arange(256, dtype=F64) / 127.5 - 1, (0.0, 1.0), "256-level grid of [-1, 1]: pass data_range=(-1, 1)"),
        (torch.arange(256, dtype=F64), (-1.0, 1.0), "256-level grid of [0, 255]: pass them as integers"),
    ],
)
def test_range_hint_names_the_grid_the_data_lie_on(data, call_range, want):
    """Data on another grid than the call's data_range: the hint names that grid; data 0.3 of a level
    off every grid get no hint."""
    assert want in _range_hint(data, *call_range, 256)
    assert _range_hint(data + 0.3 * (data[1] - data[0]), *call_range, 256) == ""


def test_hutchinson_trace_keeps_no_graph_unless_asked():
    """By default the estimate is a plain number per sample (no graph through the network's parameters:
    nothing held for a backward that an evaluation never runs); create_graph=True keeps one."""
    from sdesolve.likelihood import hutchinson_trace

    net = torch.nn.Linear(3, 3).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    probes = torch.randn(2, 4, 3, dtype=torch.float64)
    s, tr = hutchinson_trace(net, x, probes)
    assert not s.requires_grad and not tr.requires_grad
    want = torch.einsum("pbi,ij,pbj->b", probes, net.weight.detach(), probes) / 2
    torch.testing.assert_close(tr, want, rtol=1e-12, atol=1e-12)
    _, tr_g = hutchinson_trace(net, x, probes, create_graph=True)
    assert tr_g.requires_grad
    torch.testing.assert_close(tr_g.detach(), want, rtol=1e-12, atol=1e-12)


def test_exact_trace_keeps_a_graph_only_when_asked_and_takes_scalar_events():
    """exact_trace's default keeps no graph, create_graph=True keeps one (its value unchanged); x of shape
    (B,) is a batch of scalar events: the trace of s(x) = -3 x is -3 for each."""
    from sdesolve.likelihood import exact_trace

    net = torch.nn.Linear(3, 3).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    s, tr = exact_trace(net, x)
    assert not s.requires_grad and not tr.requires_grad
    torch.testing.assert_close(tr, torch.full((4,), float(net.weight.detach().trace()), dtype=torch.float64))
    _, tr_g = exact_trace(net, x, create_graph=True)
    assert tr_g.requires_grad
    torch.testing.assert_close(tr_g.detach(), tr, rtol=1e-14, atol=1e-14)
    _, tr1 = exact_trace(lambda v: -3.0 * v, torch.ones(5, dtype=torch.float64))
    assert torch.equal(tr1, torch.full((5,), -3.0, dtype=torch.float64))


def _gaussian_3d():
    sde = sd.VPSDE()
    tg = Gaussian(
        torch.tensor([0.3, -0.5, 1.0], dtype=torch.float64), torch.tensor([0.6, 1.3, 0.2], dtype=torch.float64)
    )
    x = tg.marginal_sample(3, sde.t_min, sde, generator=torch.Generator().manual_seed(3)).to(torch.float64)
    return sde, tg, x


def test_scipy_backend_takes_the_method_and_both_tolerances():
    """``method="scipy-DOP853"`` reaches solve_ivp: its NFE is 2 + 12 per step (the 12-stage FSAL pair)
    and, at rtol = atol = 1e-10, below RK45's (order 8 against 5); with both tolerances at 1e-10 the
    log-density of a Gaussian is within 1e-8 of its closed form (measured 2e-10 and 4e-10; with
    solve_ivp's default atol = 1e-6 it is not)."""
    sde, tg, x = _gaussian_3d()
    exact = tg.marginal_log_prob(x, sde.t_min, sde)

    def prior(z):
        return tg.marginal_log_prob(z, sde.T, sde)

    kw = dict(divergence="exact", rtol=1e-10, atol=1e-10, prior_logp=prior)
    rk45 = log_likelihood(sde, tg.model(sde), x, method="scipy-RK45", **kw)
    dop = log_likelihood(sde, tg.model(sde), x, method="scipy-DOP853", **kw)
    assert (rk45.nfe - 2) % 6 == 0 and (dop.nfe - 2) % 12 == 0 and dop.nfe < rk45.nfe, (rk45.nfe, dop.nfe)
    for r in (rk45, dop):
        assert float((r.logp - exact).abs().max()) < 1e-8


def test_scipy_backend_keeps_the_callers_float32():
    """float32 data through the scipy backend (which integrates in float64 on the host): the network is
    called with float32 states and the answer is float32, within float32 accuracy of the closed form."""
    sde, tg, x = _gaussian_3d()
    seen = set()

    def net(z, t):
        seen.add(z.dtype)
        return tg.marginal_score(z.double(), t, sde).to(z.dtype)

    r = log_likelihood(
        sde,
        sd.ScoreModel(net, sde, prediction="score"),
        x.float(),
        method="scipy-RK45",
        divergence="exact",
        rtol=1e-5,
        atol=1e-5,
        prior_logp=lambda z: tg.marginal_log_prob(z.double(), sde.T, sde).to(z.dtype),
    )
    assert seen == {torch.float32} and r.logp.dtype == torch.float32
    assert float((r.logp.double() - tg.marginal_log_prob(x, sde.t_min, sde)).abs().max()) < 1e-3


@pytest.mark.parametrize("method", ["RK45", "DOP853"])
def test_a_failed_scipy_solve_raises_with_solve_ivps_reason(method):
    """A score that turns NaN past t = 0.5 makes solve_ivp reject every step until the step is below the
    spacing of the numbers (measured: 494 evaluations for RK45, 986 for DOP853, far below max_nfe): the
    error names the method and carries solve_ivp's own message, not a bare value."""
    sde, tg, x = _gaussian_3d()

    def net(z, t):
        s = tg.marginal_score(z, t, sde)
        return torch.where(t.reshape(-1, 1) > 0.5, torch.full_like(s, math.nan), s)

    model = sd.ScoreModel(net, sde, prediction="score")
    with pytest.raises(RuntimeError, match=rf"^scipy solve_ivp \({method}\) failed: \S.*step size") as err:
        log_likelihood(sde, model, x, method=f"scipy-{method}", divergence="exact", rtol=1e-6, atol=1e-6)
    assert "None" not in str(err.value)


class _CountedSquare(torch.autograd.Function):
    """s(x) = x^2 (elementwise), counting its backward passes: under ``vmap`` one pass serves a whole
    chunk of basis vectors."""

    generate_vmap_rule = True
    backward_passes = 0

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        _CountedSquare.backward_passes += 1
        (x,) = ctx.saved_tensors
        return 2.0 * x * grad


@pytest.mark.parametrize(("chunk_size", "passes"), [(1, 7), (2, 4), (3, 3), (7, 1), (50, 1), (None, 1)])
def test_exact_trace_takes_the_callers_chunk_size(chunk_size, passes):
    """``chunk_size`` basis vectors per backward pass: D = 7 coordinates take ceil(7 / chunk_size) passes
    (the default, for this small a batch, all 7 in one), and the trace is 2 sum x for every chunking."""
    x = torch.randn(2, 7, dtype=F64, generator=torch.Generator().manual_seed(0))
    _CountedSquare.backward_passes = 0
    s, tr = sd.likelihood.exact_trace(_CountedSquare.apply, x, chunk_size=chunk_size)
    assert _CountedSquare.backward_passes == passes
    torch.testing.assert_close(s, x * x, rtol=0, atol=0)
    torch.testing.assert_close(tr, 2.0 * x.sum(1), rtol=1e-15, atol=1e-15)


def _scipy_on(dev):
    """log p of GAUSS through the scipy backend on ``dev`` (:func:`_log_p_on`)."""
    return _log_p_on(dev, method="scipy-RK45", rtol=1e-8, atol=1e-8)


@pytest.mark.gpu
def test_scipy_backend_on_the_gpu_evaluates_the_network_on_the_gpu():
    """The scipy backend integrates on the host, but each evaluation hands the network its state and time
    on the data's device (a network whose parameters live there), and the answer comes back there, equal to
    the CPU solve (the same float64 steps; 1e-10) and to the exact log p (1e-6)."""
    seen_cpu, cpu = _scipy_on("cpu")
    seen, gpu = _scipy_on("cuda")
    assert seen_cpu == {("cpu", "cpu")} and seen == {("cuda", "cuda")}, seen
    assert gpu.logp.device.type == "cuda" and gpu.nfe == cpu.nfe
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=0, atol=1e-10)
    exact = GAUSS.marginal_log_prob(_data(sd.VPSDE()), sd.VPSDE().t_min, sd.VPSDE())
    torch.testing.assert_close(cpu.logp, exact, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ Hutchinson's estimator, its corner cases
def test_hutchinson_trace_of_a_score_that_does_not_read_x_is_zero():
    """A score that depends on a parameter but not on x (autograd reports x unused) has trace 0: a (B,)
    tensor of zeros in x's dtype, for one probe and for several, not an error."""
    from sdesolve.likelihood import hutchinson_trace

    w = torch.nn.Parameter(torch.randn(5, dtype=F64))
    x = torch.randn(3, 5, dtype=F64)
    for n in (1, 2):
        s, tr = hutchinson_trace(lambda v: w.expand(v.shape[0], -1) * 1.0, x, torch.randn(n, 3, 5, dtype=F64))
        assert tr.dtype == F64 and torch.equal(tr, torch.zeros(3, dtype=F64))
        assert torch.equal(s, w.detach().expand(3, -1))


def test_hutchinson_trace_with_create_graph_keeps_the_path_to_x():
    """create_graph=True on an x that carries a graph (x = a * base, a a parameter): the estimate and the
    score stay differentiable through x itself. For s(x) = -x^3 Rademacher probes give the exact trace
    -3 sum x^2, whose derivative in a is -6 sum x base; the score's, -3 sum x^2 base."""
    from sdesolve.likelihood import hutchinson_trace

    a = torch.nn.Parameter(torch.tensor(0.7, dtype=F64))
    base = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    probes = (2 * torch.randint(0, 2, (3, 4, 3), generator=torch.Generator().manual_seed(1)) - 1).to(F64)
    x = a * base
    s, tr = hutchinson_trace(lambda v: -(v**3), x, probes, create_graph=True)
    xd = x.detach()
    torch.testing.assert_close(tr, -3.0 * (xd**2).sum(-1), rtol=1e-14, atol=0)
    (d_tr,) = torch.autograd.grad(tr.sum(), a, retain_graph=True)
    assert float(d_tr) == pytest.approx(float(-6.0 * (xd * base).sum()), rel=1e-13)
    (d_s,) = torch.autograd.grad(s.sum(), a)
    assert float(d_s) == pytest.approx(float(-3.0 * (xd**2 * base).sum()), rel=1e-13)


def test_a_list_of_generators_draws_each_samples_probes_from_its_own():
    """With ``generator=[g_0, ..., g_{B-1}]`` sample i's Hutchinson probes come from g_i alone: its
    log-density in a batch equals its log-density alone with a generator seeded as g_i (Gaussian probes,
    whose value the estimate depends on; fixed steps, so the solve does not couple the samples)."""
    sde = sd.VPSDE()
    x = _data(sde, n=3, seed=4)
    kw = dict(divergence="hutchinson", probe="gaussian", n_probes=2, method="rk4", steps=3)
    model = GAUSS.model(sde)
    batch = log_likelihood(sde, model, x, generator=[torch.Generator().manual_seed(10 + i) for i in range(3)], **kw)
    for i in range(3):
        alone = log_likelihood(sde, model, x[i : i + 1], generator=[torch.Generator().manual_seed(10 + i)], **kw)
        torch.testing.assert_close(batch.logp[i : i + 1], alone.logp, rtol=1e-13, atol=1e-13)
    one = log_likelihood(sde, model, x, generator=torch.Generator().manual_seed(10), **kw)
    assert float((one.logp - batch.logp).abs().max()) > 1e-6  # the probes matter


# ------------------------------------------------------------------ fixed steps (_solve_fixed)
def test_fixed_steps_evaluate_the_network_at_the_float64_grid_times():
    """``method=`` euler / heun / rk4 with ``steps=n`` and time_variable="t": the network is evaluated at the
    float64 grid ``linspace(t_min, T, n + 1)`` itself (a c = 1 stage at the next grid time, not at
    t_i + h), at the tableau's nodes, as float64 times."""
    sde = sd.VPSDE(t_min=1e-3)
    x = _data(sde, n=1)
    n = 7
    grid = torch.linspace(1e-3, 1.0, n + 1, dtype=F64)
    h = grid[1:] - grid[:-1]
    nodes = {"euler": (0.0,), "heun": (0.0, 1.0), "rk4": (0.0, 0.5, 0.5, 1.0)}
    for method, c in nodes.items():
        net = _TimedScore(sde)
        log_likelihood(sde, net, x, divergence="exact", method=method, steps=n, time_variable="t")
        times = torch.cat([t.reshape(-1)[:1] for t in net.times])
        assert all(t.dtype == F64 for t in net.times)
        want = torch.stack([grid[i] if cj == 0.0 else grid[i + 1] if cj == 1.0 else grid[i] + cj * h[i]
                            for i in range(n) for cj in c])  # fmt: skip
        assert torch.equal(times, want), method


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2)])
def test_fixed_step_euler_and_midpoint_converge_at_their_orders(method, order):
    """Euler's and the midpoint rule's tableaux (weights 1, and 0 then 1): the error against the exact
    log-density falls like steps^-order (log-log slope; measured 0.98 and 2.05), steps uniform in t."""
    sde = sd.VPSDE()
    x = _data(sde, n=2, seed=4)
    exact = GAUSS.marginal_log_prob(x, sde.t_min, sde)
    ns, errs = ((32, 64, 128) if order == 1 else (16, 32, 64)), []
    for n in ns:
        res = log_likelihood(sde, GAUSS.model(sde), x, divergence="exact", method=method, steps=n,
                             time_variable="t", prior_logp=_exact_prior(sde))  # fmt: skip
        assert res.nfe == order * n
        errs.append(float((res.logp - exact).abs().max()))
    slope = -(math.log(errs[-1]) - math.log(errs[0])) / (math.log(ns[-1]) - math.log(ns[0]))
    assert abs(slope - order) < 0.2, (errs, slope)


# ------------------------------------------------------------------ per-sample adaptive solves
def test_per_sample_likelihood_takes_the_first_step_and_names_the_process_time():
    """``per_sample=True`` takes ``solver_options["first_step"]`` (one sample: the same NFE and value as the
    batch-shared solve with that first step, not the default's), and its max_nfe error names the method and
    the process time t in [t_min, T] (integrating in u = -lambda/2, not u itself)."""
    sde = sd.VPSDE()
    x = _data(sde, n=2)
    model = GAUSS.model(sde)
    kw = dict(divergence="exact", time_variable="log_snr")
    default = log_likelihood(sde, model, x[:1], per_sample=True, **kw)
    own = log_likelihood(sde, model, x[:1], per_sample=True, solver_options={"first_step": 1e-6}, **kw)
    shared = log_likelihood(sde, model, x[:1], solver_options={"first_step": 1e-6}, **kw)
    assert own.nfe == shared.nfe != default.nfe
    torch.testing.assert_close(own.logp, shared.logp, rtol=1e-12, atol=1e-12)
    with pytest.raises(sd.solvers.adaptive.AdaptiveSolveError) as err:
        log_likelihood(sde, model, x, per_sample=True, max_nfe=20, method="bosh3", **kw)
    m = re.match(
        r"^the adaptive solve \(bosh3, per sample, rtol=1e-05, atol=1e-05\) stopped at t = (\S+) after 20 "
        r"evaluations \(max_nfe=20\) \(sample \d\), integrating to t = 1;",
        str(err.value),
    )
    assert m is not None, str(err.value)
    assert sde.t_min <= float(m.group(1)) <= 1.0


@pytest.mark.gpu
def test_fixed_steps_and_a_trace_that_ignores_x_on_the_gpu():
    """On the GPU: a fixed-step solve (its times built on x's device) equals the CPU solve, and the trace of
    a score that does not read x is a zero (B,) tensor on x's device."""
    from sdesolve.likelihood import hutchinson_trace

    dev = torch.device("cuda")
    sde = sd.VPSDE()
    x = _data(sde, n=3)
    kw = dict(divergence="exact", method="rk4", steps=4, prior_logp=_exact_prior(sde))
    cpu = log_likelihood(sde, GAUSS.model(sde), x, **kw)
    gpu = log_likelihood(sde, GAUSS.model(sde), x.to(dev), **kw)
    assert gpu.logp.device.type == "cuda"
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=1e-12, atol=1e-12)
    w = torch.nn.Parameter(torch.randn(3, dtype=F64, device=dev))
    xd = x.to(dev)
    _, tr = hutchinson_trace(lambda v: w.expand(v.shape[0], -1) * 1.0, xd, torch.randn(2, 3, 3, dtype=F64, device=dev))
    assert tr.device == xd.device and torch.equal(tr.cpu(), torch.zeros(3, dtype=F64))


# ------------------------------------------------------------------ bits per dimension, by hand
def _unit_score(x, t):
    """A linear field -2 x, for any event shape: the flow of N(0, I / 2) data under VP's diffusion at t = 0.
    Its divergence is exact for Rademacher probes but not for Gaussian ones (f |eps|^2 + g^2 |eps|^2 with
    f + g^2 = beta / 2 != 0), so a Gaussian-probe estimate depends on the probes drawn."""
    return -2.0 * x


_BPD_KW = dict(divergence="hutchinson", probe="gaussian", method="rk4", steps=2)


def test_bits_per_dim_is_the_log_likelihood_at_the_dequantized_points():
    """bits_per_dim of 8-bit integers k on [-1, 1] is -log p(x) / (D ln 2) + 7 at x = -1 + 2 (k + u) / 256,
    u ~ U[0, 1) drawn from the generator in the asked dtype before the likelihood's probes (which come from
    the same generator): written out here, bitwise, for a batch of two and of one. With dequantize=None and
    no dtype the points are the bin centres (k + 1/2) / 256 in the default dtype."""
    sde = VPSDE()
    k = torch.randint(0, 256, (2, 3), generator=torch.Generator().manual_seed(0))
    for kk in (k, k[:1]):
        got = bits_per_dim(sde, _unit_score, kk, dtype=F64, generator=torch.Generator().manual_seed(5), **_BPD_KW)
        g = torch.Generator().manual_seed(5)
        u = torch.rand(kk.shape, generator=g, dtype=F64)
        xs = -1.0 + 2.0 * (kk + u) / 256
        want = -log_likelihood(sde, _unit_score, xs, generator=g, **_BPD_KW).logp / (3 * math.log(2.0)) + 7.0
        assert got.dtype == F64 and got.shape == (kk.shape[0],)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    got = bits_per_dim(sde, _unit_score, k, dequantize=None, generator=torch.Generator().manual_seed(6), **_BPD_KW)
    centres = -1.0 + 2.0 * (k.to(torch.float32) + 0.5) / 256
    lp = log_likelihood(sde, _unit_score, centres, generator=torch.Generator().manual_seed(6), **_BPD_KW).logp
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, -lp / (3 * math.log(2.0)) + 7.0, rtol=0, atol=0)


def test_bits_per_dim_of_float_data_is_that_of_the_integers_it_rounds_to():
    """Float data on the grid of data_range give bitwise the bits/dim of the integers they round to, in
    the float data's dtype (or the asked one), computed from the float64 grid position: ToTensor()-style
    float32 k / 255; float16 integers on a 100-level grid of (0, 99) (float16 arithmetic would put ten of
    them off the grid); a batch of scalar events; a point 1/1000 of a level off (the tolerance, inclusive)."""
    sde = VPSDE()

    def bpd(x, **kw):
        return bits_per_dim(sde, _unit_score, x, generator=torch.Generator().manual_seed(7), **_BPD_KW, **kw)

    k = torch.randint(0, 256, (2, 3), generator=torch.Generator().manual_seed(1))
    xf = (k / 255.0).to(torch.float32)
    a, b = bpd(xf, data_range=(0.0, 1.0)), bpd(k, data_range=(0.0, 1.0), dtype=torch.float32)
    assert a.dtype == torch.float32 and torch.equal(a, b)
    a, b = bpd(xf, data_range=(0.0, 1.0), dtype=F64), bpd(k, data_range=(0.0, 1.0), dtype=F64)
    assert a.dtype == F64 and torch.equal(a, b)
    kh = torch.arange(100).reshape(4, 25)
    a = bpd(kh.to(torch.float16), data_range=(0.0, 99.0), levels=100)
    b = bpd(kh, data_range=(0.0, 99.0), levels=100, dtype=torch.float16)
    assert torch.equal(a, b)
    a = bpd(torch.tensor([0.0, 0.5, 1.0]), data_range=(0.0, 1.0), levels=3)
    assert a.shape == (3,) and torch.equal(a, bpd(torch.tensor([0, 1, 2]), data_range=(0.0, 1.0), levels=3))
    a = bpd(torch.tensor([[1e-3, 1.0, 0.0]], dtype=F64), data_range=(0.0, 1.0), levels=2)
    assert torch.equal(a, bpd(torch.tensor([[0, 1, 0]]), data_range=(0.0, 1.0), levels=2, dtype=F64))


def test_bits_per_dim_takes_continuous_data_up_to_a_millionth_of_the_range_outside_it():
    """dequantize=None: float data within 1e-6 (hi - lo) of data_range, both edges included, are taken as
    they are (the bits/dim of their log-likelihood), in the asked dtype; one float64 step beyond is refused."""
    sde = VPSDE()
    edge_lo, edge_hi = -1.0 - 2e-6, 1.0 + 2e-6
    x = torch.tensor([[edge_lo, edge_hi, 1.0], [-1.0, 0.0, 0.5]], dtype=F64)
    got = bits_per_dim(sde, _unit_score, x, dequantize=None, generator=torch.Generator().manual_seed(8), **_BPD_KW)
    lp = log_likelihood(sde, _unit_score, x, generator=torch.Generator().manual_seed(8), **_BPD_KW).logp
    torch.testing.assert_close(got, -lp / (3 * math.log(2.0)) + 7.0, rtol=0, atol=0)
    for bad in (math.nextafter(edge_lo, -math.inf), math.nextafter(edge_hi, math.inf)):
        with pytest.raises(ValueError, match=r"^float data must lie in data_range \[-1, 1\]"):
            bits_per_dim(sde, _unit_score, torch.tensor([[bad, 0.0, 0.0]], dtype=F64), dequantize=None)
    x32 = torch.tensor([[-0.3, 0.9, 1.0], [-1.0, 0.0, 0.1]])  # float32, inside the range
    got = bits_per_dim(sde, _unit_score, x32, dequantize=None, dtype=F64, generator=torch.Generator().manual_seed(8),
                       **_BPD_KW)  # fmt: skip
    lp = log_likelihood(sde, _unit_score, x32.double(), generator=torch.Generator().manual_seed(8), **_BPD_KW).logp
    assert got.dtype == F64
    torch.testing.assert_close(got, -lp / (3 * math.log(2.0)) + 7.0, rtol=0, atol=0)


def test_fixed_steps_in_log_snr_evaluate_at_the_grid_points_themselves():
    """A fixed-step solve in u = log-SNR time takes each step's last stage (c = 1) at the next grid point
    itself, not at ``u_i + 1.0 h``: on a log-SNR grid ``u_0 + (u_1 - u_0)`` is not ``u_1`` in float64 (it is
    on the linspace grids in t that earlier checks tried). Every evaluation time of Heun's method, 1 to 7
    steps, equals the time map of the grid's own points, bitwise (kills ``_solve_fixed`` 37, 42)."""
    sde = sd.VPSDE(t_min=1e-3)
    x = _data(sde, n=1)
    tmap = _TimeMap(sde, "log_snr", float(sde.t_min))
    for n in (1, 2, 3, 5, 7):
        grid = torch.linspace(tmap.u0, tmap.u1, n + 1, dtype=F64)
        net = _TimedScore(sde)
        log_likelihood(sde, net, x, divergence="exact", method="heun", steps=n, time_variable="log_snr")
        times = torch.cat([t.reshape(-1)[:1] for t in net.times])
        want = torch.stack([tmap(grid[i + c].reshape(1))[0][0] for i in range(n) for c in (0, 1)])
        assert torch.equal(times, want), (n, float((times - want).abs().max()))


# ------------------------------------------------------------------ dtypes: the answer does not depend on torch's default
_TRACE_DTYPES = [torch.float16, torch.bfloat16, torch.float32, F64]


@pytest.mark.parametrize("default", [torch.float32, F64])
@pytest.mark.parametrize("dtype", _TRACE_DTYPES, ids=str)
def test_exact_trace_answers_in_the_dtype_of_x_whatever_the_default_dtype(dtype, default):
    """``exact_trace`` of x in float16, bfloat16, float32 or float64, under torch's default dtype float32 or
    float64: the score and the trace come back in x's dtype, the trace of s(x) = -3 x is -3 D exactly (D = 5,
    chunks of 2: three backward passes whose partial sums are exact in every dtype)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype)
        for chunk in (2, None):
            s, tr = sd.likelihood.exact_trace(lambda v: -3.0 * v, x, chunk_size=chunk)
            assert s.dtype == tr.dtype == dtype, (s.dtype, tr.dtype)
            assert torch.equal(tr, torch.full((3,), -15.0, dtype=dtype))
    finally:
        torch.set_default_dtype(before)


def _ll(sde, model, x, **kw):
    return log_likelihood(
        sde, model, x, method="rk4", steps=16, time_variable="log_snr", generator=torch.Generator().manual_seed(5), **kw
    )


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_float32_log_likelihood_is_the_same_under_a_float64_default_dtype(divergence):
    """Users often set ``torch.set_default_dtype(torch.float64)``: float32 data must still integrate in
    float32 and give the bitwise answer of the float32 default, in float32 (the log-density, its two parts
    and the latent); with the exact divergence within 2e-3 of the exact log p (16 RK4 steps in log-SNR time:
    measured 8e-4)."""
    sde = sd.VPSDE()
    x = _data(sde, n=3).float()
    kw = dict(divergence=divergence, return_latent=True, prior_logp=_exact_prior(sde))
    ref = _ll(sde, GAUSS.model(sde), x, **kw)
    before = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        got = _ll(sde, GAUSS.model(sde), x, **kw)
    finally:
        torch.set_default_dtype(before)
    for name in ("logp", "prior_logp", "delta_logp", "z"):
        a, b = getattr(got, name), getattr(ref, name)
        assert a.dtype == torch.float32 and torch.equal(a, b), name
    if divergence == "exact":
        exact = GAUSS.marginal_log_prob(x.double(), sde.t_min, sde)
        assert float((ref.logp.double() - exact).abs().max()) < 2e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_half_precision_data_integrate_as_their_float32_values(dtype, divergence):
    """float16 / bfloat16 data integrate in float32 (at least float32): the answer is bitwise that of the
    same values given in float32, with the same generator — Gaussian Hutchinson probes too are drawn in
    float32 (drawn in the data's dtype they would be other numbers; Rademacher signs are the same in both)."""
    sde = sd.VPSDE()
    x = _data(sde, n=3).to(dtype)
    kw = dict(divergence=divergence, return_latent=True)
    if divergence == "hutchinson":
        kw["probe"] = "gaussian"
    got, ref = _ll(sde, GAUSS.model(sde), x, **kw), _ll(sde, GAUSS.model(sde), x.float(), **kw)
    for name in ("logp", "delta_logp", "z"):
        a, b = getattr(got, name), getattr(ref, name)
        assert a.dtype == torch.float32 and torch.equal(a, b), name


class _Float64OnlyVP(UserVP):
    """A user's VP process (only its marginal coefficients, ``tests/helpers.py``) that records the dtype of
    every time its formulas are asked at: the base class promises them float64 tensors."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def _log_alpha(self, t):
        self.seen.add(t.dtype)
        return super()._log_alpha(t)

    def _log_sigma(self, t):
        self.seen.add(t.dtype)
        return super()._log_sigma(t)


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="heun", steps=3, time_variable="t"),
        dict(method="heun", steps=3, time_variable="log_snr"),
        dict(method="heun", steps=3, time_variable="log_snr", divergence="hutchinson", probe="gaussian"),
        dict(method="bosh3", time_variable="log_snr", rtol=1e-3, atol=1e-3),
        dict(method="heun3", steps=3, time_variable="t"),
        dict(method="heun3", steps=3, time_variable="log_snr"),
        dict(method="scipy-RK23", time_variable="log_snr", rtol=1e-3, atol=1e-3),
    ],
    ids=lambda kw: "-".join(str(v) for v in kw.values()),
)
def test_float32_data_ask_a_user_process_for_float64_times_only(kw):
    """float32 data through every backend (fixed steps, the embedded pair, torchdiffeq's fixed grid in float32
    time, scipy), in t and in log-SNR time, exact and Hutchinson divergence: the process' own formulas
    (``_log_alpha``, ``_log_sigma``: "float64 tensors in") are only ever asked at float64 times — the ends of
    the log-SNR range, the time map of torchdiffeq's float32 u, the drift's integral for the probes' form —
    and the answer is float32, that of the built-in VPSDE (the same process in closed form) to 1e-4."""
    sde = _Float64OnlyVP()
    x = GAUSS.marginal_sample(3, sde.t_min, sd.VPSDE(), generator=torch.Generator().manual_seed(2)).float()
    kw = {"divergence": "exact", **kw}
    out = []
    for proc in (sde, sd.VPSDE()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchdiffeq's fixed-step methods are deprecated
            out.append(log_likelihood(proc, GAUSS.model(proc), x, prior_logp=_exact_prior(proc),
                                      generator=torch.Generator().manual_seed(0), **kw))  # fmt: skip
    assert sde.seen == {F64}, sde.seen
    assert out[0].logp.dtype == torch.float32
    torch.testing.assert_close(out[0].logp, out[1].logp, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ the time map keeps the network inside [t_min, T]
def _times_of(sde, x, **kw):
    """Every process time the network of GAUSS is evaluated at (float64, as the solve hands it over)."""
    seen = []

    class Net(torch.nn.Module):  # one parameter, for the adjoint
        def __init__(self):
            super().__init__()
            self.one = torch.nn.Parameter(torch.ones((), dtype=x.dtype))

        def forward(self, z, t):
            seen.append(t.detach().reshape(-1).clone())
            return GAUSS.marginal_score(z, t, sde).to(z.dtype) * self.one

    model = sd.ScoreModel(Net(), sde, prediction="score", time_input=lambda t: t, time_dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchdiffeq's fixed-step methods are deprecated
        log_likelihood(sde, model, x, divergence="exact", time_variable="log_snr", **kw)
    return torch.cat(seen)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
def test_log_snr_solves_evaluate_the_network_inside_t_min_T(dtype):
    """In log-SNR time the integration variable u runs between u(t_min) and u(T), and t(u) is the inverse
    log-SNR, which gives back t_min only to round-off — below it about half the time (VP at t_min = 1e-3 by
    2e-19), and above T where torchdiffeq's float32 u(T) rounds up. The network is evaluated only inside
    [t_min, T], first at t_min (and last at T where the method has a stage there; to float32 rounding of u),
    with fixed steps, the embedded pair, torchdiffeq's fixed grid and its adjoint (whose float32 u(T) is
    above the float64 one for VP: t(u) is 2.3e-8 beyond T there)."""
    for sde in (sd.VPSDE(), sd.SubVPSDE(), sd.CosineVPSDE()):
        x = GAUSS.marginal_sample(2, sde.t_min, sde, generator=torch.Generator().manual_seed(1)).to(dtype)
        for kw in (dict(method="heun", steps=3), dict(method="bosh3", rtol=1e-3, atol=1e-3),
                   dict(method="heun3", steps=3), dict(method="bosh3", grad="adjoint", rtol=1e-3, atol=1e-3)):  # fmt: skip
            t = _times_of(sde, x, **kw)
            assert float(t.min()) >= sde.t_min and float(t.max()) <= sde.T, (type(sde).__name__, kw)
            assert abs(float(t[0]) - sde.t_min) <= 1e-6 * sde.t_min
            if kw["method"] != "heun3":  # torchdiffeq's Heun3 has no stage at the step's end
                assert abs(float(t[-1]) - sde.T) <= 1e-6


@pytest.mark.parametrize(("B", "D", "passes"), [(2**22 + 1, 2, 2), (1, 4097, 2), (1, 4095, 1), (3, 5, 1)])
def test_exact_trace_default_chunk_keeps_the_basis_block_under_2_to_the_24_entries(B, D, passes):
    """Without ``chunk_size`` the basis block (chunk x B x D) is kept to at most 2^24 entries: chunk =
    max(1, min(D, 2^24 // (B D))). B D = 2^23 + 2 takes one basis vector a pass (2 passes for D = 2);
    B = 1, D = 4097 takes chunks of 4095 (2 passes), D = 4095 one pass; a small batch one pass. The trace
    of s = x^2 is 2 sum x (float32 sums in another order: 1e-6 of the sum of |x|)."""
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(0))
    _CountedSquare.backward_passes = 0
    _, tr = sd.likelihood.exact_trace(_CountedSquare.apply, x)
    assert _CountedSquare.backward_passes == passes
    assert float((tr - 2.0 * x.sum(1)).abs().max()) <= 1e-6 * float(x.abs().sum(1).max())


def test_log_likelihood_takes_the_callers_chunk_size():
    """``log_likelihood(..., chunk_size=c)`` reaches the exact divergence: with D = 7 each evaluation takes
    ceil(7 / c) backward passes (7, 4, 1 for c = 1, 2, None), and the answer is the same for every c."""
    sde = sd.VPSDE()
    x = torch.randn(2, 7, dtype=F64, generator=torch.Generator().manual_seed(1))

    def score(z, t):
        return -_CountedSquare.apply(z) / 7.0

    out = []
    for chunk, passes in ((1, 7), (2, 4), (None, 1)):
        _CountedSquare.backward_passes = 0
        res = log_likelihood(sde, score, x, divergence="exact", method="heun", steps=2, chunk_size=chunk)
        assert _CountedSquare.backward_passes == passes * res.nfe, chunk
        out.append(res.logp)
    torch.testing.assert_close(out[0], out[2], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(out[1], out[2], rtol=1e-14, atol=1e-14)


# ------------------------------------------------------------------ the dtype the network sees, and the dtype it answers in
def test_a_parameter_free_score_sees_the_integration_dtype_even_on_a_process_with_float64_buffers():
    """A plain callable score of float32 data on DDPM's process (``DiscreteVPSDE`` holds float64 buffers, its
    knots): the network is not a module of the process, so it sees float32 states (the integration dtype),
    not the dtype of the process' buffers; the answer is within 2e-3 of the float64 solve (16 RK4 steps)."""
    sde = sd.DiscreteVPSDE(betas=torch.linspace(1e-4, 0.02, 1000, dtype=F64))
    target = Gaussian(torch.tensor([0.5, -0.3], dtype=F64), torch.tensor([0.3, 0.6], dtype=F64))
    x = target.marginal_sample(3, sde.t_min, sde, generator=torch.Generator().manual_seed(2))
    seen = set()

    def score(z, t):
        seen.add(z.dtype)
        return target.marginal_score(z.double(), t, sde).to(z.dtype)

    got = _ll(sde, score, x.float(), divergence="exact")
    ref = _ll(sde, score, x.double(), divergence="exact")
    assert seen == {torch.float32, F64} and got.logp.dtype == torch.float32
    seen.clear()
    _ll(sde, score, x.float(), divergence="exact")
    assert seen == {torch.float32}
    torch.testing.assert_close(got.logp.double(), ref.logp, rtol=0, atol=2e-3)


@pytest.mark.parametrize("per_sample", [False, True])
def test_a_float64_network_on_float32_data_answers_in_float32(per_sample):
    """A network with float64 parameters and float32 data: the network computes in its own float64 (it is
    handed float64 states and times), its score is brought back to the integration dtype, so the whole solve, its
    latent and its log-density stay float32 — with batch-shared steps and with each sample's own adaptive
    steps (per-sample coefficients (B,) in float64 must not promote the state either); the answer is the
    float64 solve's within 1e-4 (a float32 solve at rtol = atol = 1e-5)."""
    sde = sd.VPSDE()
    x = _data(sde, n=3)
    net = _GaussianScoreNet(sde)
    kw = dict(divergence="exact", method="dopri5", per_sample=per_sample, return_latent=True, rtol=1e-5, atol=1e-5)
    got = log_likelihood(sde, net, x.float(), **kw)
    ref = log_likelihood(sde, net, x, **kw)
    assert {t.dtype for t in net.times} == {F64}
    assert got.logp.dtype == got.delta_logp.dtype == got.z.dtype == torch.float32
    torch.testing.assert_close(got.logp.double(), ref.logp, rtol=0, atol=1e-4)


# ------------------------------------------------------------------ the adaptive solve's errors and options
@pytest.mark.parametrize("time_variable", ["t", "log_snr"])
def test_a_per_sample_solve_stopped_at_max_nfe_names_a_time_the_network_was_evaluated_at(time_variable):
    """``per_sample=True`` stopped by ``max_nfe``: the error's t is the process time of the stopped sample's
    last state, bitwise one of the times its network evaluations were at (the time map of the float64 u,
    not of a float32 rounding of it), in [t_min, T]."""
    sde = sd.VPSDE()
    x = _data(sde, n=2)
    seen = []

    def net(z, t):
        seen.append(t.detach().reshape(-1).clone())
        return GAUSS.marginal_score(z, t, sde)

    model = sd.ScoreModel(net, sde, prediction="score", time_input=lambda t: t, time_dtype=F64)
    with pytest.raises(sd.solvers.adaptive.AdaptiveSolveError) as err:
        log_likelihood(sde, model, x, per_sample=True, max_nfe=20, method="bosh3", divergence="exact",
                       time_variable=time_variable)  # fmt: skip
    assert err.value.t in set(torch.cat(seen).tolist()), err.value.t
    assert sde.t_min < err.value.t < sde.T


@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
def test_nan_from_the_model_in_a_shared_adaptive_solve_names_the_method_and_t_min(method):
    """A model that answers NaN: the batch-shared adaptive solve stops at its first evaluation, at t_min,
    naming its method (the whole message)."""
    sde = sd.VPSDE()
    x = _data(sde, n=2)
    model = sd.ScoreModel(lambda z, t: z * math.nan, sde, prediction="score")
    want = (
        rf"^the adaptive solve \({method}\) got NaN or inf from the vector field at t = 0\.001 \(evaluation 1\); "
        r"check the model's output there$"
    )
    for tv in ("t", "log_snr"):
        with pytest.raises(sd.solvers.adaptive.NonFiniteError, match=want):
            log_likelihood(sde, model, x, method=method, divergence="exact", time_variable=tv)


def test_the_callers_error_norm_reaches_the_adaptive_solve():
    """``solver_options={"norm": ...}`` is the norm of the adaptive solve's error test: a norm recording its
    calls is called at each step (and gives the default's answer and NFE when it is the default RMS norm);
    the max norm, stricter than the RMS over the 3 x 3 entries here, takes more evaluations."""
    from sdesolve.solvers.adaptive import max_abs_norm, rms_norm

    sde = sd.VPSDE()
    x = _data(sde, n=3)
    calls = []

    def recorded(e):
        calls.append(e.shape)
        return rms_norm(e)

    kw = dict(divergence="exact", method="bosh3", rtol=1e-4, atol=1e-4)
    default = log_likelihood(sde, GAUSS.model(sde), x, **kw)
    own = log_likelihood(sde, GAUSS.model(sde), x, solver_options={"norm": recorded}, **kw)
    assert len(calls) >= own.nfe // 3 and torch.equal(own.logp, default.logp) and own.nfe == default.nfe
    strict = log_likelihood(sde, GAUSS.model(sde), x, solver_options={"norm": max_abs_norm}, **kw)
    assert strict.nfe > default.nfe, (strict.nfe, default.nfe)


# ------------------------------------------------------------------ Hutchinson's linear part: probed only for a contracting drift
class _Expanding(sd.LinearSDE):
    """alpha = exp(0.05 t) grows (f = 0.05 > 0), sigma^2 = t (g^2 = 1 - 0.1 t > 0): c = int f dt > 0."""

    def _log_alpha(self, t):
        return 0.05 * t

    def _log_sigma(self, t):
        return 0.5 * torch.log(t)


class _DipAndReturn(sd.LinearSDE):
    """log alpha = -0.4 t (1 - t): alpha dips below 1 and is back at 1 at T = 1 (f = -0.4 (1 - 2t)), sigma^2 =
    4t (g^2 = 4 + 3.2 t (1 - 2t) >= 0.8): c = log alpha(T) - log alpha(t_min) > 0 although log alpha(t_min) +
    log alpha(T) < 0."""

    def _log_alpha(self, t):
        return -0.4 * t * (1.0 - t)

    def _log_sigma(self, t):
        return 0.5 * torch.log(4.0 * t)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
@pytest.mark.parametrize("proc", [UserVP, sd.VESDE, _Expanding, _DipAndReturn], ids=lambda p: p.__name__)
def test_hutchinson_probes_the_linear_part_only_where_the_drift_contracts(proc, probe):
    """The divergence of the drift f x - g^2/2 s is f D - g^2/2 tr(ds/dx); with Gaussian probes the f D part
    is probed too (f |eps|^2: the lower-variance form) exactly where the drift contracts over the solve,
    c = log alpha(T) - log alpha(t_min) < 0 (module docstring), else it is f D. With a score that is 0 (its
    probed trace is 0) the log-density change is that part alone: c mean_k |eps_k|^2 for Gaussian probes on
    a contracting process (VP), c D otherwise (VE: c = 0; an expanding process; one whose alpha dips and
    returns, c > 0 with log alpha(t_min) < 0), the probes being the generator's first draw; Heun's steps in t
    integrate the linear f of these processes exactly (1e-12)."""
    sde = proc()
    B, D, n = 3, 4, 2
    x = torch.randn(B, D, dtype=F64, generator=torch.Generator().manual_seed(1))
    res = log_likelihood(sde, lambda z, t: 0.0 * z, x, divergence="hutchinson", probe=probe, n_probes=n,
                         method="heun", steps=4, time_variable="t", generator=torch.Generator().manual_seed(7),
                         prior_logp=lambda z: torch.zeros(z.shape[0], dtype=z.dtype))  # fmt: skip
    ends = torch.tensor([sde.t_min, sde.T], dtype=F64)
    c = float(torch.log(sde.alpha(ends[1]) / sde.alpha(ends[0])))
    if probe == "gaussian" and c < 0:
        eps = torch.randn(n, B, D, dtype=F64, generator=torch.Generator().manual_seed(7))
        lin = eps.pow(2).sum(-1).mean(0)
    else:
        lin = torch.full((B,), float(D), dtype=F64)
    torch.testing.assert_close(res.delta_logp, c * lin, rtol=1e-12, atol=1e-12)
