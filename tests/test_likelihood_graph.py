"""The CUDA-graph and torchdiffeq paths of the likelihood on a GPU (issue 14: GPU-only mutants).

``log_likelihood(..., cuda_graph=True)`` captures the augmented dynamics once and checks the capture
before use: replays at (u0, y0) and (u1, y0 / 2) must equal eager evaluations there to 1e-4 of their
largest entry (``_GraphedDynamics``). Each test runs twice: on a GPU with the real capture (``-m gpu``),
and on the CPU with a stand-in capture whose replay calls the captured function again, inside the same
"capturing" flag, without counting its evaluations on the model (so the check's logic, which is the
same code on both, is exercised in the default suite). Exact answers: the marginal log-density of a
Gaussian under VP, the prior log-density of a flow that stands still under VE.
"""

from __future__ import annotations

import types
import warnings

import pytest
import torch
from helpers import DeviceTransfers

import sdesolve as sd
import sdesolve.likelihood as lik
from sdesolve import Gaussian, log_likelihood

F64 = torch.float64
GAUSS = Gaussian(torch.tensor([0.5, -0.3, 0.8], dtype=F64), torch.tensor([0.3, 0.6, 0.2], dtype=F64))
WIDE = Gaussian(torch.zeros(3, dtype=F64), 2.0)  # std > 1: under VP the flow from t_min to T contracts it
_CAPTURING = [False]  # the stand-in capture's flag (a CUDA capture is seen through torch)


def _capturing() -> bool:
    """Whether the caller runs inside a capture (or a replay of the stand-in capture)."""
    return _CAPTURING[0] or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


class _Replayed:
    """A stand-in for a CUDA graph on the CPU: ``replay`` runs the captured function again, as captured
    (inside the capturing flag), into the static output, and leaves the model's count as it was."""

    def __init__(self, fn, out, model):
        self.fn, self.out, self.model = fn, out, model

    def replay(self):
        nfe = getattr(self.model, "nfe", 0)
        _CAPTURING[0] = True
        try:
            self.out.copy_(self.fn())
        finally:
            _CAPTURING[0] = False
        if self.model is not None:
            self.model.nfe = nfe


def _stand_in_capture(fn, *, device, warmup=2, model=None, generators=()):
    """``capture_cuda_graph``'s contract on the CPU: warm-up calls, the evaluations per call, one capture
    call, the model's count restored."""
    nfe0 = getattr(model, "nfe", 0)
    for _ in range(warmup):
        fn()
    per = (getattr(model, "nfe", 0) - nfe0) // warmup
    _CAPTURING[0] = True
    try:
        out = fn()
    finally:
        _CAPTURING[0] = False
    if model is not None:
        model.nfe = nfe0
    return _Replayed(fn, out, model), out, per


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def dev(request, monkeypatch):
    """The device of a test, and its captures counted in ``dev.captures`` (on the CPU: the stand-in)."""
    captures: list[int] = []  # one entry per capture
    capture = _stand_in_capture if request.param == "cpu" else lik.capture_cuda_graph

    def counted(fn, **kwargs):
        captures.append(1)
        return capture(fn, **kwargs)

    monkeypatch.setattr(lik, "capture_cuda_graph", counted)
    if request.param == "cpu":
        check = lik._check_cuda_graph
        cuda_x = types.SimpleNamespace(device=torch.device("cuda"))  # only its device is read
        monkeypatch.setattr(lik, "_check_cuda_graph", lambda cg, x, *args: check(cg, cuda_x, *args))
    return types.SimpleNamespace(type=request.param, captures=captures)


# ------------------------------------------------------------------ the check of the capture
def test_a_network_that_outputs_zero_is_captured_and_its_flow_stands_still(dev):
    """A network whose last layer is zero-initialized (as score_sde's NCSN++ is) outputs exactly 0: under
    VE (f = 0) the augmented velocity is exactly 0, so the check compares a replay of zeros with zeros and
    must accept it (its scale, the largest entry plus the dtype's tiny, is then tiny, not 0 or below). The
    flow stands still: log p = the prior's log-density at x, exactly, with one capture."""
    sde = sd.VESDE()
    x = 5.0 * torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    model = sd.ScoreModel(lambda xx, t: 0.0 * xx, sde, prediction="score")
    res = log_likelihood(
        sde, model, x.to(dev.type), method="rk4", steps=4, divergence="exact", cuda_graph=True, return_latent=True
    )
    assert len(dev.captures) == 1 and res.nfe == 16 and model.nfe == 16
    torch.testing.assert_close(res.z.cpu(), x, rtol=0, atol=0)
    torch.testing.assert_close(res.logp.cpu(), sde.prior_logp(x), rtol=0, atol=1e-12)


def _bounded_score(target, sde, radius):
    """The exact score of ``target`` where every |x_j| <= radius, NaN beyond (a network defined on a box)."""

    def score(x, t):
        inside = x.abs().amax(dim=-1, keepdim=True) <= radius
        return torch.where(inside, target.marginal_score(x, t, sde), torch.full_like(x, float("nan")))

    return score


@pytest.mark.parametrize("case", ["origin", "box"])
def test_the_capture_is_checked_at_the_data_and_at_half_of_it(dev, case):
    """The check evaluates at (u0, y0) and (u1, y0 / 2), where the flow is defined: with a sample at the
    origin (a zero coordinate; y0 / 2 keeps it finite) and with a network defined only on a box 1.25 times
    the data's (under VP the flow of a Gaussian of std 2 contracts, so the solve stays inside; y0 / 2 is
    inside too). One capture, the eager solve's evaluations and log p (1e-12), and the exact marginal's
    (dopri5 at 1e-8: within 2e-6; measured 3.0e-7 and 2.6e-9)."""
    sde = sd.VPSDE()
    if case == "origin":
        target = GAUSS
        x = target.marginal_sample(3, sde.t_min, sde, generator=torch.Generator().manual_seed(1)).to(F64)
        x[1] = 0.0
        score = lambda xx, t: target.marginal_score(xx, t, sde)  # noqa: E731
    else:
        target = WIDE
        x = target.marginal_sample(3, sde.t_min, sde, generator=torch.Generator().manual_seed(2)).to(F64)
        score = _bounded_score(target, sde, 1.25 * float(x.abs().max()))
    kw = dict(rtol=1e-8, atol=1e-8, divergence="exact", prior_logp=lambda z: target.marginal_log_prob(z, sde.T, sde))
    model = sd.ScoreModel(score, sde, prediction="score")
    eager = log_likelihood(sde, model, x.to(dev.type), **kw)
    res = log_likelihood(sde, model, x.to(dev.type), cuda_graph=True, **kw)
    assert len(dev.captures) == 1 and res.nfe == eager.nfe
    torch.testing.assert_close(res.logp, eager.logp, rtol=0, atol=1e-12)
    exact = target.marginal_log_prob(x, sde.t_min, sde)
    assert float((res.logp.cpu() - exact).abs().max()) < 2e-6


def _shifted_while_captured(rel, at):
    """``func(u, y) = y``, plus ``rel`` times |y|'s largest entry on entry ``at`` while captured: a replay
    that differs from the eager call by exactly that much (1e-4 times a float64 is the same product in
    torch and in Python, so the check's bound can be met exactly)."""

    def func(u, y):
        if not _capturing():
            return 1.0 * y
        e = (torch.arange(y.shape[0], device=y.device) == at).to(y.dtype)  # no host value copied while captured
        return y + e * (rel * y.abs().amax())

    return func


@pytest.mark.parametrize(
    ("y", "rel", "accepted"),
    [
        ([0.0, 0.0, 0.0, 0.0], 0.0, True),  # all zeros: 0 <= 1e-4 tiny
        ([1.0, -0.5, 0.25, 0.0], 1e-4, True),  # the bound itself, inclusive
        ([100.0, -50.0, 25.0, 0.0], 1e-5, True),  # 1e-3 off where the largest entry is 100
        ([0.01, -0.005, 0.0025, 0.0], 1e-3, False),  # 1e-5 off where it is 0.01
        ([1.0, -0.5, 0.25, 0.0], 2e-4, False),
    ],
    ids=["zeros", "at-the-bound", "large", "small", "above-the-bound"],
)
def test_a_replay_is_accepted_to_a_ten_thousandth_of_its_largest_entry(dev, y, rel, accepted):
    """The check accepts a replay within 1e-4 of the eager evaluation's largest entry (inclusive; relative,
    so a replay 1e-3 off an entry of 100 passes and 1e-5 off one of 0.01 does not), at both check points
    ((u0, y) and (u1, y / 2): the shift scales with y). Accepted: one capture, calls give the replay. Else
    one re-capture, then the RuntimeError naming cuda_graph=False."""
    y0 = torch.tensor(y, dtype=F64, device=dev.type)
    u0, u1 = (torch.full((), v, dtype=F64, device=dev.type) for v in (0.25, 1.5))
    counter = types.SimpleNamespace(nfe=0)
    func = _shifted_while_captured(rel, at=3)
    if not accepted:
        with pytest.raises(RuntimeError, match=r"^cuda_graph=True: the captured dynamics do not reproduce"):
            lik._GraphedDynamics(func, u0, y0, counter, u1)
        assert len(dev.captures) == 2
        return
    g = lik._GraphedDynamics(func, u0, y0, counter, u1)
    assert len(dev.captures) == 1 and counter.nfe == 0
    y1 = 3.0 * y0
    out = g(u1, y1)
    shifted = y1.clone()
    shifted[3] += rel * float(y1.abs().max())
    torch.testing.assert_close(out, shifted, rtol=0, atol=0)


# ------------------------------------------------------------------ torchdiffeq on the GPU
def _torchdiffeq_log_p(device, **kwargs):
    """log p of GAUSS under VP through torchdiffeq on ``device`` (data, network and prior there), with the
    warnings raised and the host tensors copied to the device during the solve."""
    sde = sd.VPSDE()
    x = GAUSS.marginal_sample(2, sde.t_min, sde, generator=torch.Generator().manual_seed(1)).to(F64).to(device)
    mean, std = GAUSS.mean.to(device), GAUSS.std.to(device)
    target = Gaussian(mean, std)
    model = sd.ScoreModel(lambda xx, t: target.marginal_score(xx, t, sde), sde, prediction="score")
    if kwargs.get("grad") == "adjoint":
        x = x.requires_grad_(True)
    with warnings.catch_warnings(record=True) as caught, DeviceTransfers() as h2d:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", DeprecationWarning)  # heun3 is deprecated (by name)
        res = log_likelihood(
            sde, model, x, divergence="exact", prior_logp=lambda z: target.marginal_log_prob(z, sde.T, sde), **kwargs
        )
    exact = GAUSS.marginal_log_prob(x.detach().cpu(), sde.t_min, sde)
    return res, exact, [str(w.message) for w in caught], [tuple(src.shape) for _, src in h2d.copies]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_torchdiffeq_gets_its_times_on_the_data_device_and_copies_nothing_per_step(device):
    """torchdiffeq's paths (grad="adjoint"; the deprecated fixed-step heun3) are handed their times on the
    data's device: torchdiffeq warns when it has to move them ("t is not on the same device as y0"), and
    a fixed-step grid left on the host hands each evaluation a host time that the dynamics copy to the
    device (a blocking copy per evaluation). No warning about devices; 40 heun3 steps copy no more host tensors than 20;
    log p within the methods' error of the exact marginal (adjoint at 1e-6: 1.2e-6 measured; heun3 at 20
    and 40 steps: 2.3e-3 and 1.9e-4)."""
    res, exact, warned, _ = _torchdiffeq_log_p(device, grad="adjoint", rtol=1e-6, atol=1e-6)
    assert [w for w in warned if "device" in w] == [] and res.logp.device.type == device
    assert float((res.logp.detach().cpu() - exact).abs().max()) < 2e-5
    copies = {}
    for steps in (20, 40):
        res, exact, warned, copies[steps] = _torchdiffeq_log_p(device, method="heun3", steps=steps)
        assert [w for w in warned if "device" in w] == [] and res.nfe == 3 * steps
        assert float((res.logp.cpu() - exact).abs().max()) < 5e-3
    assert len(copies[40]) == len(copies[20]), copies
