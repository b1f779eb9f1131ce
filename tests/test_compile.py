"""``torch.compile`` of a solver's step (issue 12 item 5).

Every fixed-step solver's step compiles with ``fullgraph=True`` (no graph break) through
:meth:`Solver.compiled_step` and, with the ``aot_eager`` backend (no C compiler needed: it runs the
traced ATen graph eagerly), gives bitwise the states of the eager step over a whole solve, noise
included (the compiled step draws from the default generator, which takes the caller's generator
state around each call). A solve compiles a few graphs, not one per step. On CUDA the default
inductor backend (fused kernels: other roundings) agrees to a float32 tolerance derived below.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import sdesolve as sd
from sdesolve.solvers.base import _to_device, run_steps

SOLVERS = {
    "ddim": lambda: sd.DDIM(),
    "ddpm": lambda: sd.DDPM(),
    "plms": lambda: sd.PLMS(),
    "em": lambda: sd.EulerMaruyama(),
    "ode-euler": lambda: sd.ODE("euler"),
    "ode-heun": lambda: sd.ODE("heun"),
    "ode-rk4": lambda: sd.ODE("rk4"),
    "dpmpp2": lambda: sd.DPMSolverPP(2),
    "dpmpp3": lambda: sd.DPMSolverPP(3),
    "dpmpp2-sde": lambda: sd.DPMSolverPP(2, stochastic=True),
    "unipc": lambda: sd.UniPC(),
    "dpm": lambda: sd.DPMSolver(),
    "edm-heun": lambda: sd.EDMHeun(s_churn=10.0),
    "euler-a": lambda: sd.EulerAncestral(),
    "pc": lambda: sd.PredictorCorrector(),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from an empty cache (the graph counts below are per test)."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _net(x, t):
    """A traceable stand-in network (smooth, bounded, time-dependent; its time input is the network time)."""
    s = t.reshape((-1,) + (1,) * (x.dim() - 1)).to(x.dtype)
    return (0.6 + 0.1 * torch.cos(s)) * torch.tanh(x) - 0.2 * torch.sin(s)


def _problem(name, dtype=torch.float32, device="cpu"):
    """A process each solver applies to; the discrete DDPM process with t_min = 0 for the eps-space
    solvers (their last step goes into sigma = 0: the steps' host-side branches are exercised)."""
    sde = sd.DiscreteVPSDE.from_schedule("linear", 1000, t_min=0.0) if name in ("ddim", "ddpm", "plms") else sd.VPSDE()
    solver = SOLVERS[name]()
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    return sde, solver, sd.ScoreModel(_net, sde, prediction="eps"), x


def _solve(solver, sde, model, x, steps, step=None, seed=1, need_x0=False):
    """run_steps over a grid of ``steps`` steps with ``step`` (default: the eager one); the final x
    and the x0 previews of every step (callback) when ``need_x0``."""
    grid = sd.grids.make_grid(solver.default_grid, sde, steps)
    coefs = _to_device(solver.init(sde, grid), x)
    x0s = []
    on_step = (lambda i, state: x0s.append(state["x0"])) if need_x0 else None
    gen = torch.Generator(device=x.device).manual_seed(seed)
    state = run_steps(
        solver, model, solver.init_state(x, coefs), coefs, steps, generator=gen, on_step=on_step, step=step
    )
    return state["x"], x0s, gen


@pytest.mark.parametrize("name", list(SOLVERS))
def test_compiled_step_is_bitwise_the_eager_step(name):
    """aot_eager, fullgraph=True, 10 steps from the same x_T with the same seed: the same final
    state bit for bit, the same x0 previews, the caller's generator advanced exactly as by the
    eager solve, and at most 5 graphs (the first step, the others, the last noiseless step, a
    multistep method's warm-up orders): no recompilation per step."""
    sde, solver, model, x = _problem(name)
    step = solver.compiled_step(backend="aot_eager", fullgraph=True)
    got, got_x0, g1 = _solve(solver, sde, model, x, 10, step=step, need_x0=True)
    ref, ref_x0, g2 = _solve(solver, sde, model, x, 10, need_x0=True)
    assert torch.equal(got, ref), float((got - ref).abs().max())
    assert all(torch.equal(a, b) for a, b in zip(got_x0, ref_x0, strict=True))
    assert torch.equal(g1.get_state(), g2.get_state())
    assert 1 <= counters["stats"]["unique_graphs"] <= 5, dict(counters["stats"])


def test_no_graph_per_step():
    """A 24-step solve compiles no more graphs than a 6-step one (the step index is a dynamic
    integer; per-step host values are constants of a few graphs: DPM-Solver++(3) at 6 steps takes
    orders 1, 2, 3, 3, 2, 1 with lower_order_final, at 24 steps 1, 2, 3, ..., 3), a second solve
    none, and the compiled step is built once per solver and options."""
    graphs = []
    for steps in (6, 24):
        torch._dynamo.reset()
        counters.clear()
        sde, solver, model, x = _problem("dpmpp3")
        step = solver.compiled_step(backend="aot_eager", fullgraph=True)
        _solve(solver, sde, model, x, steps, step=step)
        graphs.append(counters["stats"]["unique_graphs"])
    _solve(solver, sde, model, x, 24, step=step, seed=2)
    assert graphs[1] == counters["stats"]["unique_graphs"] <= graphs[0] <= 5, graphs
    assert solver.compiled_step(backend="aot_eager", fullgraph=True) is step
    assert solver.compiled_step(backend="aot_eager") is not step


def test_plain_torch_compile_of_a_deterministic_step():
    """The bare recipe, torch.compile(solver.step, fullgraph=True), for a deterministic step without
    per-step host values (DDIM on a grid that stays off sigma = 0): bitwise the eager solve."""
    sde, solver = sd.VPSDE(), sd.DDIM()
    model = sd.ScoreModel(_net, sde, prediction="eps")
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    step = torch.compile(solver.step, backend="aot_eager", fullgraph=True)
    got, _, _ = _solve(
        solver, sde, model, x, 8, step=lambda m, s, i, c, **kw: step(m, s, i, c, **{**kw, "generator": None})
    )
    ref, _, _ = _solve(solver, sde, model, x, 8)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("name", ["ddpm", "ode-heun", "pc"])
def test_sample_compile_is_bitwise_and_counts_network_calls(name):
    """sample(..., compile={"backend": "aot_eager"}) equals sample(...) bitwise, prior draw and
    noise from the same generator, and counts the same network evaluations (the count inside the
    graph goes to a tensor the model folds in)."""
    sde, solver, model, _ = _problem(name)
    kw = dict(solver=solver, steps=8, dtype=torch.float32)
    got = sd.sample(
        sde, model, (5, 3), generator=torch.Generator().manual_seed(3), compile={"backend": "aot_eager"}, **kw
    )
    nfe = model.nfe
    ref = sd.sample(sde, model, (5, 3), generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(got, ref)
    assert nfe == model.nfe - nfe == solver.nfe(8)


def test_sample_compile_keeps_the_non_finite_report():
    """A NaN from the network inside a compiled solve is still announced with its first step: the
    network turns NaN where t < 0.5, first at step 6 (t_6 = 1 - 6 * 0.0999 = 0.4006; t_5 = 0.5005)."""
    sde = sd.VPSDE()
    model = sd.ScoreModel(lambda x, t: torch.where(t[:, None] < 0.5, x * float("nan"), x), sde, prediction="eps")
    grid = sd.grids.uniform(sde, 10)
    with pytest.raises(sd.NonFiniteError, match=r"first appeared at step 6, from t = 0.4006 "):
        sd.sample(sde, model, (3, 2), solver=sd.DDIM(), grid=grid, compile={"backend": "aot_eager"})


@pytest.fixture
def fallback_random():
    """Inductor draws with ATen's kernels (the eager numbers) for the test, then its setting is restored.
    Torch's own ``config.patch`` is used because monkeypatch's undo leaves the entry hidden for the rest of
    the process: ``torch._inductor.config.fallback_random`` then raises AttributeError."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        yield


def test_inductor_pc_step_on_cpu(fallback_random):
    """The default backend (inductor, C++ on CPU) on the predictor-corrector step, the one step with
    three draws (Metropolis proposal, its uniform, the predictor's noise): float32, 10 steps, the
    eager states to rounding (the tolerance of the CUDA test below), the acceptance record exactly,
    the caller's generator advanced as by the eager solve. The draws go through one op that mutates
    a token (``_OrderedDraws``), so no scheduler can permute them (torch 2.11's inductor did on CUDA:
    all 48 elements off by up to 58)."""
    sde, solver, model, x = _problem("pc")
    grid = sd.grids.make_grid(solver.default_grid, sde, 10)
    coefs = _to_device(solver.init(sde, grid), x)
    states, gens = [], []
    for step in (solver.compiled_step(fullgraph=True), None):
        gen = torch.Generator().manual_seed(1)
        states.append(run_steps(solver, model, solver.init_state(x, coefs), coefs, 10, generator=gen, step=step))
        gens.append(gen.get_state())
    (got, ref), scale = states, float(states[1]["x"].abs().max())
    torch.testing.assert_close(got["x"], ref["x"], rtol=0.0, atol=1e-4 * max(scale, 1.0))
    assert torch.equal(got["acceptance"], ref["acceptance"])
    assert torch.equal(gens[0], gens[1])


def test_ordered_draws_are_randn():
    """The compiled step's noise source draws what ``torch.randn`` draws from the default generator, and
    advances it alike (bitwise; eager call)."""
    from sdesolve.solvers.base import _OrderedDraws

    x = torch.empty(3, 5, dtype=torch.float64)
    draws = _OrderedDraws(torch.zeros(()))
    torch.manual_seed(7)
    got = [draws.draw(x), draws.draw(x[:2])]
    torch.manual_seed(7)
    ref = [torch.randn(3, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)]
    assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["ddim", "plms", "em", "ode-heun", "dpmpp2-sde", "edm-heun", "pc"])
def test_inductor_step_on_cuda(name, fallback_random):
    """The default backend (inductor) on CUDA, float32, 10 steps: inductor fuses each step's
    arithmetic (FMA contractions, reordered sums) so states differ from eager by rounding only,
    a few float32 ulps per operation and step: at most 1e-4 relative to the state's scale over the
    solve (a wrong step is off by O(1)). fallback_random makes inductor draw with ATen's kernels,
    so the noise is the eager noise. Seven solvers that cover the step kinds (noise, multistep
    history and warm-up, stages, churn, corrector), so that Triton's compile time stays near a minute."""
    sde, solver, model, x = _problem(name, device="cuda")
    got, _, _ = _solve(solver, sde, model, x, 10, step=solver.compiled_step(fullgraph=True))
    ref, _, _ = _solve(solver, sde, model, x, 10)
    scale = float(ref.abs().max())
    torch.testing.assert_close(got, ref, rtol=0.0, atol=1e-4 * max(scale, 1.0))


def test_nfe_set_after_a_compiled_solve_is_the_value_set():
    """Inside a compiled step the count goes to a tensor the model folds into ``nfe``; setting ``nfe``
    afterwards (``model.nfe = 0`` between runs) gives exactly the value set, and later calls, compiled
    or eager, count on from it."""
    sde, solver, model, _ = _problem("ddim")
    kw = dict(solver=solver, steps=4, dtype=torch.float32)
    sd.sample(sde, model, (2, 3), compile={"backend": "aot_eager"}, **kw)
    assert model.nfe == solver.nfe(4) == 4
    model.nfe = 0
    assert model.nfe == 0
    sd.sample(sde, model, (2, 3), **kw)
    assert model.nfe == 4
    model.nfe = 7
    sd.sample(sde, model, (2, 3), compile={"backend": "aot_eager"}, **kw)
    assert model.nfe == 11


def test_compiled_step_is_built_once_per_options_and_left_out_of_copies():
    """``compiled_step`` builds one :class:`CompiledStep` per set of options (in any order) for this
    solver, holding the solver and its options; a copy or a pickle of the solver leaves them behind
    (a compiled function cannot be pickled): the copy equals the solver field by field, builds its own,
    and the solver's repr is unchanged. Nothing is compiled here (torch.compile is lazy)."""
    import copy
    import pickle

    solver = sd.DDPM()
    step = solver.compiled_step(backend="aot_eager", fullgraph=True)
    assert solver.compiled_step(fullgraph=True, backend="aot_eager") is step
    other = solver.compiled_step(backend="aot_eager")
    assert other is not step and other.options == {"backend": "aot_eager"}
    assert step.solver is solver and step.options == {"backend": "aot_eager", "fullgraph": True}
    assert repr(step) == "CompiledStep(DDPM(variance='small'), {'backend': 'aot_eager', 'fullgraph': True})"
    assert repr(solver) == "DDPM(variance='small')"
    for c in (copy.deepcopy(solver), pickle.loads(pickle.dumps(solver))):
        assert vars(c) == {"variance": "small"} and repr(c) == repr(solver)
        assert c.compiled_step(backend="aot_eager") is not other


def test_compiled_step_called_like_the_step_takes_the_steps_defaults():
    """A :class:`CompiledStep` is called like ``solver.step``: without ``noise=`` or ``need_x0=`` it takes
    the step's defaults (a noisy step, no x0 preview), bitwise the eager step's state (aot_eager)."""
    sde, solver, model, x = _problem("ddpm")
    grid = sd.grids.make_grid(solver.default_grid, sde, 4)
    coefs = _to_device(solver.init(sde, grid), x)
    step = solver.compiled_step(backend="aot_eager", fullgraph=True)
    got = step(model, solver.init_state(x, coefs), 0, coefs, generator=torch.Generator().manual_seed(2))
    ref = solver.step(model, solver.init_state(x, coefs), 0, coefs, generator=torch.Generator().manual_seed(2))
    assert got.keys() == ref.keys() and "x0" not in got
    assert torch.equal(got["x"], ref["x"])
    mean = solver.step(model, solver.init_state(x, coefs), 0, coefs, noise=False)["x"]
    assert not torch.allclose(got["x"], mean, rtol=0.0, atol=1e-3)
