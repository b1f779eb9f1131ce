"""No host-device synchronization inside fixed-step sampling (run on a CUDA device).

Every fixed-step solver samples under ``torch.cuda.set_sync_debug_mode("error")``, which turns any
synchronizing CUDA call (``.item()``, ``bool(tensor)``, a blocking copy, ...) into an error. The
non-finite check reads its device-side record once, after the loop: that single read is the only
synchronization, checked separately under ``"warn"``. Self-contained: an analytic model on device.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import ALL_PROCESSES

import sdesolve as sd
from sdesolve import solvers as S

pytestmark = pytest.mark.gpu


class _GaussianEps(torch.nn.Module):
    """The exact eps-prediction of N(mean, diag(std^2)) under ``sde``, computed on the device."""

    def __init__(self, sde, mean, std):
        super().__init__()
        self.sde = sde
        self.register_buffer("mean", mean)
        self.register_buffer("var", std**2)

    def forward(self, x, t):
        t64 = t.to(torch.float64)
        a = torch.exp(self.sde._log_alpha(t64)).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        s = torch.exp(self.sde._log_sigma(t64)).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        m, v = self.mean.to(x.dtype), self.var.to(x.dtype)
        return s * (x - a * m) / (a * a * v + s * s)  # eps = -sigma * score


def _solvers():
    out = {
        "euler_maruyama": S.EulerMaruyama(),
        "pc_rd_langevin": S.PredictorCorrector(S.ReverseDiffusionPredictor(), S.LangevinCorrector(n_steps=2)),
        "pc_em_annealed": S.PredictorCorrector(S.EulerMaruyamaPredictor(), S.AnnealedLangevinCorrector(0.16, 1)),
        "pc_ancestral": S.PredictorCorrector(S.AncestralPredictor(), S.LangevinCorrector()),
        "pc_rd_pf": S.PredictorCorrector(S.ReverseDiffusionPredictor(probability_flow=True), None),
    }
    for m in S.ode.FIXED_METHODS:
        out[f"ode_{m}"] = S.ODE(m)
    for name in ("DDIM", "DDPM", "PLMS", "VDMAncestral"):
        cls = getattr(S, name, None)
        if cls is not None:
            try:
                out[name.lower()] = cls()
            except TypeError:
                pass
    return out


SOLVERS = _solvers()
PROCESSES = {k: ALL_PROCESSES[k] for k in ("vp", "ve", "vdm", "discrete")}  # the registry's factories


def _setup(proc, dtype=torch.float32):
    dev = torch.device("cuda")
    sde = PROCESSES[proc]().to(dev)
    event = (3, 8, 8)
    net = _GaussianEps(sde, torch.linspace(-1, 1, 192).reshape(event), torch.full(event, 0.5)).to(dev)
    return sde, sd.ScoreModel(net, sde, prediction="eps", time_input=lambda t: t), event


@pytest.mark.parametrize("proc", list(PROCESSES))
@pytest.mark.parametrize("name", list(SOLVERS))
def test_no_sync_in_fixed_step_sampling(name, proc):
    solver = SOLVERS[name]
    sde, model, event = _setup(proc)
    try:
        solver.check(sde)
    except ValueError:
        pytest.skip(f"{name} does not apply to {proc}")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x_T = sde.prior_sample((16, *event), generator=gen, device="cuda")
    seen = []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = sd.sample(
            sde, model, x_T=x_T, solver=solver, steps=12, generator=gen, check_finite=False, callback=seen.append
        )
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(seen) == 12 and x.shape == x_T.shape and x.is_cuda
    assert bool(torch.isfinite(x).all())


def test_non_finite_check_syncs_once_and_reports_the_step():
    sde, model, event = _setup("vp")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x_T = sde.prior_sample((8, *event), generator=gen, device="cuda")
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            sd.sample(sde, model, x_T=x_T, solver=S.EulerMaruyama(), steps=20, generator=gen)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [x for x in w if "synchroniz" in str(x.message)]
    assert len(syncs) == 1, [str(x.message) for x in syncs]

    def nan_late(x, t):
        return torch.where((t < 0.5).reshape(-1, 1, 1, 1), torch.full_like(x, float("nan")), -x)

    grid = sd.grids.uniform(sde, 20)
    first = int((grid[:-1] < 0.5).nonzero()[0])  # the first step evaluated at t < 0.5
    with pytest.raises(sd.NonFiniteError, match=f"step {first},"):
        sd.sample(sde, nan_late, x_T=x_T, solver=S.EulerMaruyama(), grid=grid, generator=gen)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_device(dtype):
    sde, model, event = _setup("vp")
    gen = torch.Generator(device="cuda").manual_seed(1)
    x_T = sde.prior_sample((64, *event), generator=gen, device="cuda", dtype=dtype)
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = sd.sample(sde, model, x_T=x_T, solver=S.ODE("heun"), steps=20, check_finite=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    ref = sd.sample(sde, model, x_T=x_T.float(), solver=S.ODE("heun"), steps=20)
    assert x.dtype == dtype
    rel = float((x.float() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
    assert rel < 10 * (2**-8 if dtype == torch.bfloat16 else 2**-11), rel


def test_same_seed_same_samples_on_device():
    sde, model, event = _setup("ve")
    solver = S.PredictorCorrector(S.ReverseDiffusionPredictor(), S.LangevinCorrector())
    a = sd.sample(sde, model, (8, *event), solver=solver, steps=10, generator=torch.Generator("cuda").manual_seed(3))
    b = sd.sample(sde, model, (8, *event), solver=solver, steps=10, generator=torch.Generator("cuda").manual_seed(3))
    c = sd.sample(sde, model, (8, *event), solver=solver, steps=10, generator=torch.Generator("cuda").manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_final_x0_on_device_without_sync_and_checked():
    """final_x0 adds one network call and no synchronization; its NaN is reported as the final x0 step."""
    sde, model, event = _setup("vp")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x_T = sde.prior_sample((8, *event), generator=gen, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x0 = sd.sample(sde, model, x_T=x_T, solver=S.DDIM(), steps=8, final_x0=True, check_finite=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert x0.is_cuda and bool(torch.isfinite(x0).all())

    def nan_at_t_min(x, t):
        return torch.where((t <= sde.t_min).reshape(-1, 1, 1, 1), torch.full_like(x, float("nan")), -x)

    with pytest.raises(sd.NonFiniteError, match="final x0 step"):
        sd.sample(sde, nan_at_t_min, x_T=x_T, solver=S.DDIM(), steps=8, final_x0=True)


def test_graph_sampler_from_several_threads_on_device():
    """Fill, replay and copy-out under one lock: each thread gets its own seed's samples."""
    import threading

    sde, model, event = _setup("vp")
    gs = sd.GraphSampler(sde, model, (8, *event), solver=S.DDPM(), steps=10, device="cuda")
    seeds = list(range(8))
    ref = {s: gs(generator=torch.Generator("cuda").manual_seed(s)) for s in seeds}
    got = {}

    def run(s):
        got[s] = gs(generator=torch.Generator("cuda").manual_seed(s))

    threads = [threading.Thread(target=run, args=(s,)) for s in seeds]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for s in seeds:
        torch.testing.assert_close(got[s], ref[s], rtol=0, atol=0)
