"""GraphSampler: the captured loop computes the same map as sample(), and samples the law."""

import math

import pytest
import torch

import sdesolve as sd
from sdesolve.solvers.base import NoiseSource

TARGET = sd.Gaussian(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 2.0, 1.0]))


@pytest.mark.parametrize("solver", [sd.DDIM(), sd.PLMS(), sd.ODE("heun")], ids=repr)
def test_deterministic_solvers_give_the_same_map_as_sample(solver):
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x_T = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gs = sd.GraphSampler(sde, model, (64, 3), solver=solver, steps=20, device="cpu", dtype=torch.float64)
    ref = sd.sample(sde, model, solver=solver, steps=20, x_T=x_T)
    assert gs.n_noise == 0
    torch.testing.assert_close(gs(x_T), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("solver", [sd.EulerMaruyama(), sd.DDPM(), sd.DDIM(eta=0.5), sd.VDMAncestral()], ids=repr)
def test_stochastic_solvers_consume_the_predrawn_block_in_order(solver):
    """The sampler = the solver's own steps fed x_T then the noise block, drawn from one generator."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    steps, shape = 10, (32, 3)
    gs = sd.GraphSampler(sde, model, shape, solver=solver, steps=steps, device="cpu", dtype=torch.float64)
    assert gs.n_noise == steps - 1  # denoise: no noise at the last step
    out = gs(generator=torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)
    x = torch.empty(shape, dtype=torch.float64).normal_(0.0, 1.0, generator=g)
    block = torch.empty((gs.n_noise,) + shape, dtype=torch.float64).normal_(generator=g)
    grid = sd.grids.make_grid(solver.default_grid, sde, steps)
    coefs = solver.init(sde, grid)
    src = NoiseSource(block)
    state = solver.init_state(x, coefs)
    for i in range(steps):
        state = solver.step(model, state, i, coefs, generator=src, noise=i < steps - 1)
    torch.testing.assert_close(out, state["x"], rtol=0, atol=1e-12)
    # a different seed gives different samples, the same seed the same
    assert not torch.allclose(out, gs(generator=torch.Generator().manual_seed(4)))
    torch.testing.assert_close(out, gs(generator=torch.Generator().manual_seed(3)), rtol=0, atol=0)


def test_graph_sampler_samples_the_gaussian_law():
    sde = sd.VPSDE()
    n = 20000
    gs = sd.GraphSampler(sde, TARGET.model(sde), (n, 3), solver=sd.DDPM(), steps=200, device="cpu", dtype=torch.float64)
    x = gs(generator=torch.Generator().manual_seed(0))
    se_mean = TARGET.std / math.sqrt(n)
    # 5 standard errors plus the sampler's O(1/steps) bias (a few 1e-2 relative at 200 steps)
    assert ((x.mean(0) - TARGET.mean).abs() <= 5 * se_mean + 0.02 * TARGET.std).all()
    rel_std = (x.std(0) / TARGET.std - 1).abs()
    assert (rel_std <= 5 / math.sqrt(2 * n) + 0.02).all()


def test_nfe_counts_and_bad_input():
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    gs = sd.GraphSampler(sde, model, (4, 3), solver=sd.PLMS(), steps=10, device="cpu")
    assert gs.nfe == sd.PLMS().nfe(10)
    assert model.nfe == 0  # building it evaluated nothing on the caller's count
    gs(generator=torch.Generator().manual_seed(0))
    assert model.nfe == gs.nfe
    with pytest.raises(ValueError, match="x_T must be a tensor of shape"):
        gs(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="adaptive"):
        sd.GraphSampler(sde, model, (4, 3), solver=sd.ODE("dopri5"), steps=10, device="cpu")
    with pytest.raises(ValueError, match="steps"):
        sd.GraphSampler(sde, model, (4, 3), solver=sd.DDIM(), device="cpu")
    with pytest.raises(ValueError, match="use_graph=True needs a CUDA device"):
        sd.GraphSampler(sde, model, (4, 3), solver=sd.DDIM(), steps=3, device="cpu", use_graph=True)


def test_non_finite_values_are_reported_with_their_step():
    sde = sd.VPSDE()

    def score(x, t):
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    # uniform grid t_i = 1 - 0.0999 i: t_5 = 0.5005, t_6 = 0.4006 is the first time below 0.5
    gs = sd.GraphSampler(sde, score, (4, 3), solver=sd.EulerMaruyama(), steps=10, device="cpu")
    with pytest.raises(sd.NonFiniteError, match="first appeared at step 6, from t = 0.4006"):
        gs(generator=torch.Generator().manual_seed(0))


@pytest.mark.gpu
@pytest.mark.parametrize("solver", [sd.DDIM(), sd.PLMS(), sd.DDPM(), sd.EulerMaruyama(), sd.ODE("heun")], ids=repr)
def test_cuda_graph_replay_equals_the_plain_loop_without_sync(solver):
    sde = sd.VPSDE()
    target = sd.Gaussian(torch.zeros(3, 8, 8), 0.5)
    model = target.model(sde)
    kw = dict(solver=solver, steps=25, device="cuda", check_finite=False)
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


def test_one_sampler_called_from_several_threads_returns_each_threads_samples():
    """Issue 8 item 11: fill, replay and copy-out are one unit (a lock); each call gets its own tensor."""
    import threading
    import time

    sde = sd.VPSDE()
    model = TARGET.model(sde)

    def slow_score(x, t):  # releases the GIL mid-solve, so unsynchronized threads would interleave
        time.sleep(0.002)
        return model.score(x, t)

    gs = sd.GraphSampler(sde, slow_score, (8, 3), solver=sd.EulerMaruyama(), steps=5, device="cpu")
    seeds = list(range(6))
    ref = {s: gs(generator=torch.Generator().manual_seed(s)) for s in seeds}
    for _ in range(3):
        got, errors = {}, []

        def run(s, got=got, errors=errors):
            try:
                got[s] = gs(generator=torch.Generator().manual_seed(s))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(s,)) for s in seeds]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        for s in seeds:
            assert torch.equal(got[s], ref[s]), f"seed {s} got another thread's samples"
    # every call returns a new tensor, never a static buffer
    a = gs(generator=torch.Generator().manual_seed(0))
    gs(generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, ref[0]) and a.data_ptr() not in (gs._x.data_ptr(), gs._noise.data_ptr())


def test_grid_and_steps_arguments():
    """Issue 8 item 12: a tensor grid with a conflicting steps is an error naming both; numpy scalars work."""
    np = pytest.importorskip("numpy")
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    grid = sd.grids.uniform(sde, 3)
    with pytest.raises(ValueError, match=r"steps=5 disagrees with grid, a tensor of 4 times \(3 intervals\)"):
        sd.GraphSampler(sde, model, (4, 3), solver=sd.DDIM(), steps=5, grid=grid, device="cpu")
    gs = sd.GraphSampler(sde, model, (4, 3), solver=sd.DDIM(), steps=3, grid=grid, device="cpu")
    assert torch.equal(gs.grid, grid)
    gs = sd.GraphSampler(sde, model, (np.int64(4), 3), solver=sd.DDIM(), steps=np.int64(3), device="cpu")
    assert gs.shape == (4, 3) and gs.grid.numel() == 4
    with pytest.raises(TypeError, match="steps must be an int, got 2.5"):
        sd.GraphSampler(sde, model, (4, 3), solver=sd.DDIM(), steps=2.5, device="cpu")
    with pytest.raises(ValueError, match=r"batch size B >= 1"):
        sd.GraphSampler(sde, model, (0, 3), solver=sd.DDIM(), steps=3, device="cpu")


@pytest.mark.gpu
def test_capture_cuda_graph_helper():
    from sdesolve._cuda_graph import capture_cuda_graph

    sde = sd.VPSDE()
    model = sd.ScoreModel(lambda x, t: -x, sde, prediction="score")
    x = torch.randn(16, 3, device="cuda")
    t = torch.tensor(0.5, dtype=torch.float64, device="cuda")  # a Python float would be a host copy inside capture
    graph, out, nfe = capture_cuda_graph(lambda: model.score(x, t) * 2.0, device=x.device, warmup=3, model=model)
    assert nfe == 1 and model.nfe == 0
    x.copy_(torch.randn(16, 3, device="cuda"))
    graph.replay()
    torch.testing.assert_close(out, -2.0 * x)


def test_dry_run_on_one_sample_or_the_full_batch():
    """The noise/NFE count runs on one sample; a model bound to its batch size gets the full batch."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    seen = []

    def fixed_batch(x, t):  # e.g. a network with per-sample extra inputs of batch 4
        seen.append(x.shape[0])
        if x.shape[0] != 4:
            raise RuntimeError("this network only takes a batch of 4")
        return model.score(x, t)

    for net in (model.score, fixed_batch):
        seen.clear()
        gs = sd.GraphSampler(sde, net, (4, 3), solver=sd.PLMS(), steps=6, device="cpu")
        assert (gs.nfe, gs.n_noise) == (sd.PLMS().nfe(6), 0)
        gs = sd.GraphSampler(sde, net, (4, 3), solver=sd.DDPM(), steps=6, device="cpu")
        assert (gs.nfe, gs.n_noise) == (6, 5)
    assert seen.count(1) == 2 and set(seen) == {1, 4}  # per sampler: one try on one sample, then the full batch
    with pytest.raises(RuntimeError, match="only takes a batch of 4"):  # a real error still comes through
        sd.GraphSampler(sde, fixed_batch, (5, 3), solver=sd.DDPM(), steps=6, device="cpu")
