"""GraphSampler: the captured loop computes the same map as sample(), and samples the law."""

import math

import pytest
import torch
from helpers import chain_moments, check_moments

import sdesolve as sd
from sdesolve.graph import CounterNoise, counter_normal, draw_keys, philox4x32
from sdesolve.solvers.base import _to_device

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


STOCHASTIC = [sd.EulerMaruyama(), sd.DDPM(), sd.DDIM(eta=0.5), sd.VDMAncestral(), sd.PredictorCorrector()]


@pytest.mark.parametrize("solver", STOCHASTIC, ids=repr)
def test_one_generator_gives_the_samples_of_sample(solver):
    """With one generator (or the default one) the sampler draws what sample() draws: same samples,
    and the generator is left where sample() leaves it."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    gs = sd.GraphSampler(sde, model, (32, 3), solver=solver, steps=10, device="cpu", dtype=torch.float64)
    assert gs.n_noise == solver.nfe(10) - 1 if isinstance(solver, sd.PredictorCorrector) else gs.n_noise == 9
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(2):  # the second call continues the generator, as a second sample() call would
        ref = sd.sample(sde, model, (32, 3), solver=solver, steps=10, generator=g2, dtype=torch.float64)
        assert torch.equal(gs(generator=g1), ref)
    assert torch.equal(g1.get_state(), g2.get_state())
    torch.manual_seed(11)
    a = gs()
    torch.manual_seed(11)
    assert torch.equal(a, sd.sample(sde, model, (32, 3), solver=solver, steps=10, dtype=torch.float64))


@pytest.mark.parametrize("solver", STOCHASTIC, ids=repr)
def test_a_generator_list_draws_the_counter_noise_in_order(solver):
    """With a list, the sampler = the solver's own steps from the prior draw of the keys, its k-th
    noise draw counter_normal(keys, k): the keys are the only state a call fills."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    steps, shape = 10, (6, 3)
    gs = sd.GraphSampler(sde, model, shape, solver=solver, steps=steps, device="cpu", dtype=torch.float64)
    out = gs(generator=[torch.Generator().manual_seed(s) for s in range(6)])

    keys = draw_keys([torch.Generator().manual_seed(s) for s in range(6)], shape[0], "cpu")
    x = counter_normal(keys, shape[1:], 0, stream=1, dtype=torch.float64) * sde.prior_std
    grid = sd.grids.make_grid(solver.default_grid, sde, steps)
    coefs = _to_device(solver.init(sde, grid), x)
    src = CounterNoise(keys)
    state = solver.init_state(x, coefs)
    for i in range(steps):
        state = solver.step(model, state, i, coefs, generator=src, noise=i < steps - 1)
    assert torch.equal(out, state["x"]) and src.count == gs.n_noise
    # other keys give other samples, the same keys the same
    assert not torch.allclose(out, gs(generator=[torch.Generator().manual_seed(s) for s in range(1, 7)]))
    assert torch.equal(out, gs(generator=[torch.Generator().manual_seed(s) for s in range(6)]))


# ------------------------------------------------------------------ the counter-based generator
def test_philox_reproduces_random123_known_answers():
    """Random123 tests/kat_vectors, the three philox4x32 10 lines (ctr[4] key[2] -> out[4]), for
    Python ints and for int64 tensors (the in-graph path)."""
    kat = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for ctr, key, want in kat:
        got = philox4x32(ctr, key)
        assert got == want and all(type(w) is int for w in got)  # ints for ints
        t = [torch.tensor([v, 0], dtype=torch.int64) for v in ctr]  # a batch of two counters
        k = [torch.tensor(v, dtype=torch.int64) for v in key]
        got = philox4x32(t, k)
        assert tuple(int(w[0]) for w in got) == want
        assert all(0 <= int(w.min()) and int(w.max()) < 2**32 for w in got)
    # 7 rounds: the kat_vectors line "philox4x32 7 0 ... 0 -> 5f6fb709 0d893f64 4f121f81 4f730a48"
    assert philox4x32((0, 0, 0, 0), (0, 0), rounds=7) == (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)


def _normals(n_samples=100, event=250, draws=4, seed=0):
    keys = draw_keys(torch.Generator().manual_seed(seed), n_samples, "cpu")
    return torch.stack([counter_normal(keys, (event,), k, dtype=torch.float64) for k in range(draws)])


def test_counter_noise_is_standard_normal():
    """100 000 numbers: moments within 5 standard errors, Kolmogorov-Smirnov at level 1e-6,
    tail frequencies within 5 binomial standard errors."""
    from scipy import stats

    z = _normals().reshape(-1)
    n = z.numel()
    assert abs(float(z.mean())) <= 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) <= 5 * math.sqrt(2 / n)
    assert abs(float((z**3).mean())) <= 5 * math.sqrt(15 / n)  # E z^3 = 0, Var z^3 = 15
    assert abs(float((z**4).mean()) - 3) <= 5 * math.sqrt(96 / n)  # E z^4 = 3, Var z^4 = 105 - 9
    ks = stats.kstest(z.numpy(), "norm")
    assert ks.pvalue > 1e-6, ks
    for c in (1.0, 2.0, 3.0, 4.0):
        p = 2 * stats.norm.sf(c)
        freq = float((z.abs() > c).double().mean())
        assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n), (c, freq, p)


def test_counter_noise_is_independent_across_draws_samples_and_elements():
    """Correlations (of the values and of their squares) between neighbouring draws, samples,
    elements and Box-Muller partners are within 5 / sqrt(n) of 0 (n pairs each)."""
    z = _normals()  # (draws, samples, elements)

    def corr(a, b):
        a, b = a.reshape(-1), b.reshape(-1)
        bound = 5 / math.sqrt(a.numel())
        for f in (lambda v: v, lambda v: v * v):
            r = torch.corrcoef(torch.stack([f(a), f(b)]))[0, 1]
            assert abs(float(r)) <= bound, (float(r), bound)

    corr(z[:-1], z[1:])  # draw k and k + 1, same sample and element
    corr(z[:, :-1], z[:, 1:])  # sample i and i + 1
    corr(z[:, :, 0:-1:2], z[:, :, 1::2])  # the two outputs of one Box-Muller pair
    corr(z[:, :, 1:-1:2], z[:, :, 2::2])  # neighbouring pairs
    # keys drawn by the same generator for a batch, or by one generator per sample, are all distinct
    keys = draw_keys(torch.Generator().manual_seed(0), 10_000, "cpu")
    assert torch.unique(keys[:, 0] * 2**32 + keys[:, 1]).numel() == 10_000


def test_counter_noise_of_a_sample_depends_on_its_key_alone():
    keys = draw_keys([torch.Generator().manual_seed(s) for s in range(5)], 5, "cpu")
    full = counter_normal(keys, (2, 3), 7, dtype=torch.float64)
    assert torch.equal(full[2:4], counter_normal(keys[2:4], (2, 3), 7, dtype=torch.float64))
    alone = draw_keys(torch.Generator().manual_seed(3), 1, "cpu")  # a batch of one from generator 3
    assert torch.equal(alone, keys[3:4])
    # float32 noise is the float64 noise rounded; another draw index or stream is other noise
    assert torch.equal(counter_normal(keys, (2, 3), 7, dtype=torch.float32), full.float())
    assert not torch.equal(full, counter_normal(keys, (2, 3), 8, dtype=torch.float64))
    assert not torch.equal(full, counter_normal(keys, (2, 3), 7, stream=1, dtype=torch.float64))
    # an odd element count uses the first of the last pair
    assert torch.equal(counter_normal(keys, (5,), 7, dtype=torch.float64), full.reshape(5, 6)[:, :5])


def _box_muller_of_philox(keys, n, draw, stream):
    """counter_normal's documented definition, computed another way: the four Philox4x32-10 words of
    counter (j, draw, stream, 0) under key (k0, k1) by philox4x32 on Python ints (the function the
    Random123 vectors pin), the two 53-bit integers exactly in Python, u1 = (m1 + 1) 2^-53 in (0, 1],
    u2 = m2 2^-53 in [0, 1) (exact in float64), then elements 2j, 2j + 1 = sqrt(-2 log u1)
    (cos, sin)(2 pi u2)."""
    P = (n + 1) // 2
    m1 = torch.empty(len(keys), P, dtype=torch.float64)
    m2 = torch.empty(len(keys), P, dtype=torch.float64)
    for i, (k0, k1) in enumerate(keys.tolist()):
        for j in range(P):
            w0, w1, w2, w3 = philox4x32((j, draw, stream, 0), (k0, k1))
            m1[i, j] = float(((w0 >> 5) << 26) + (w1 >> 6) + 1)
            m2[i, j] = float(((w2 >> 5) << 26) + (w3 >> 6))
    u1, u2 = m1 * 2.0**-53, m2 * 2.0**-53
    assert (u1 > 0).all() and (u1 <= 1).all() and (u2 >= 0).all() and (u2 < 1).all()
    r, theta = torch.sqrt(-2.0 * torch.log(u1)), (2.0 * math.pi) * u2
    z = torch.empty(len(keys), 2 * P, dtype=torch.float64)
    z[:, 0::2], z[:, 1::2] = r * torch.cos(theta), r * torch.sin(theta)
    return z[:, :n]


@pytest.mark.parametrize("n,draw,stream", [(7, 0, 0), (6, 5, 1), (3, 2**32 - 1, 0)])
def test_counter_normal_is_box_muller_of_the_documented_philox_words(n, draw, stream):
    """Element e of sample i is the Box-Muller output of pair e // 2 of Philox4x32-10 at counter
    (e // 2, draw, stream, 0) under sample i's key, bit for bit, in every dtype asked (the float64
    value rounded once); the extreme keys 0 and 2^32 - 1 included."""
    keys = torch.cat(
        [
            draw_keys(torch.Generator().manual_seed(n), 6, "cpu"),
            torch.tensor([[0, 0], [2**32 - 1, 2**32 - 1], [0, 2**32 - 1]], dtype=torch.int64),
        ]
    )
    want = _box_muller_of_philox(keys, n, draw, stream)
    got = counter_normal(keys, (n,), draw, stream, dtype=torch.float64)
    assert got.dtype == torch.float64 and torch.equal(got, want)
    got = counter_normal(keys, (1, n), draw, stream)  # float32 by default
    assert got.dtype == torch.float32 and torch.equal(got, want.float().reshape(-1, 1, n))
    got = counter_normal(keys, (n,), draw, stream, dtype=torch.float16)
    assert got.dtype == torch.float16 and torch.equal(got, want.half())
    # round keys given (as a solve computes them once) or not: the same numbers
    from sdesolve.graph import _round_keys

    rk = _round_keys(keys.T.unsqueeze(-1))
    assert torch.equal(counter_normal(keys, (n,), draw, stream, torch.float64, round_keys=rk), want)


def test_counter_noise_source_draws_counter_normal_in_order():
    """CounterNoise's k-th draw since its last reset is counter_normal(keys, event, k) of the first
    B keys (B the batch of the state it is given), in the state's dtype; count is the number of draws."""
    keys = draw_keys([torch.Generator().manual_seed(s) for s in range(5)], 5, "cpu")
    x64, x32 = torch.zeros(5, 2, 3, dtype=torch.float64), torch.zeros(5, 2, 3)
    src = CounterNoise(keys)
    assert src.count == 0
    for k in range(3):
        z = src.draw(x64)
        assert z.dtype == torch.float64 and torch.equal(z, counter_normal(keys, (2, 3), k, dtype=torch.float64))
        assert src.count == k + 1
    z = src.draw(x32)
    assert z.dtype == torch.float32 and torch.equal(z, counter_normal(keys, (2, 3), 3, dtype=torch.float32))
    # a smaller batch takes the first keys, and back to the whole batch (the round keys follow)
    assert torch.equal(src.draw(x64[:2]), counter_normal(keys[:2], (2, 3), 4, dtype=torch.float64))
    assert torch.equal(src.draw(x64), counter_normal(keys, (2, 3), 5, dtype=torch.float64))
    assert torch.equal(src.draw(x64[:3]), counter_normal(keys[:3], (2, 3), 6, dtype=torch.float64))
    src.reset()
    assert src.count == 0
    assert torch.equal(src.draw(x64[:1]), counter_normal(keys[:1], (2, 3), 0, dtype=torch.float64))
    assert src.count == 1


SPLIT_SOLVERS = {
    "em": lambda: sd.EulerMaruyama(),
    "ddpm": lambda: sd.DDPM(),
    "ddim-eta": lambda: sd.DDIM(eta=0.7),
    "vdm-ancestral": lambda: sd.VDMAncestral(),
    "pc": lambda: sd.PredictorCorrector(sd.ReverseDiffusionPredictor(), sd.LangevinCorrector(n_steps=2)),
    "pc-ancestral-annealed": lambda: sd.PredictorCorrector(
        sd.AncestralPredictor(), sd.AnnealedLangevinCorrector(0.1, 1)
    ),
}


@pytest.mark.parametrize("name", list(SPLIT_SOLVERS))
@pytest.mark.parametrize("process", ["vp", "ve"])
def test_generator_lists_make_splits_bitwise_equal(name, process):
    """GraphSampler(8) with generators g0..g7 equals GraphSampler(3) with g0..g2 then (5) with g3..g7."""
    sde = sd.VPSDE() if process == "vp" else sd.VESDE()
    model = TARGET.model(sde)

    def run(seeds):
        gs = sd.GraphSampler(
            sde, model, (len(seeds), 3), solver=SPLIT_SOLVERS[name](), steps=6, device="cpu", dtype=torch.float64
        )
        return gs(generator=[torch.Generator().manual_seed(s) for s in seeds])

    whole = run(range(8))
    assert torch.equal(whole, torch.cat([run(range(3)), run(range(3, 8))]))
    assert len({tuple(r.tolist()) for r in whole}) == 8


@pytest.mark.parametrize(
    "solver,D",
    [(sd.EulerMaruyama(), 2), (sd.EulerMaruyama(), 4), (sd.EulerMaruyama(), 16), (sd.EulerMaruyama(), 64)]
    + [(sd.DDIM(eta=1.0), 16), (sd.VDMAncestral(), 4)],
    ids=repr,
)
def test_graph_sampler_follows_the_exact_chain_law(solver, D):
    """Driven by the counter noise, the chain's output law is the exact one of its affine-Gaussian
    steps (helpers.chain_moments, from the prior): per coordinate within 5 standard errors."""
    sde = sd.VPSDE()
    target = sd.Gaussian(
        torch.linspace(-2.0, 2.0, D, dtype=torch.float64), torch.linspace(0.3, 2.0, D, dtype=torch.float64)
    )
    model = target.model(sde)
    steps, n = 10, 2000
    gs = sd.GraphSampler(sde, model, (n, D), solver=solver, steps=steps, device="cpu", dtype=torch.float64)
    x = gs(generator=torch.Generator().manual_seed(D))
    prior_var = torch.full((D,), float(sde.prior_std) ** 2, dtype=torch.float64)
    mean, var = chain_moments(solver, sde, model, gs.grid, torch.zeros(D, dtype=torch.float64), prior_var)
    check_moments(x, mean, var, what=f"{solver!r} D={D}")


@pytest.mark.gpu
def test_counter_noise_is_the_same_on_cuda_and_cpu():
    """The integer hash is bitwise the same on both devices; the float64 Box-Muller to round-off."""
    keys = draw_keys(torch.Generator().manual_seed(0), 64, "cpu")
    cpu = counter_normal(keys, (3, 8, 8), 5, dtype=torch.float64)
    gpu = counter_normal(keys.cuda(), (3, 8, 8), 5, dtype=torch.float64).cpu()
    words = philox4x32((torch.arange(1000), 5, 0, 0), (keys[:1, :1], keys[:1, 1:]))
    words_gpu = philox4x32((torch.arange(1000, device="cuda"), 5, 0, 0), (keys[:1, :1].cuda(), keys[:1, 1:].cuda()))
    assert all(torch.equal(a, b.cpu()) for a, b in zip(words, words_gpu))
    torch.testing.assert_close(gpu, cpu, rtol=1e-13, atol=1e-13)


@pytest.mark.gpu
def test_draw_keys_from_cuda_generators_are_on_the_device():
    """Keys drawn from CUDA generators (one for the batch, or one per sample) are int64 32-bit words on
    the device, and a batch of one from generator s is the key a list draws from generator s."""
    one = draw_keys(torch.Generator("cuda").manual_seed(3), 4, "cuda")
    listed = draw_keys([torch.Generator("cuda").manual_seed(s) for s in range(4)], 4, "cuda")
    for keys in (one, listed):
        assert keys.device.type == "cuda" and keys.dtype == torch.int64 and keys.shape == (4, 2)
        assert int(keys.min()) >= 0 and int(keys.max()) < 2**32
    alone = draw_keys(torch.Generator("cuda").manual_seed(3), 1, "cuda")
    assert torch.equal(alone, listed[3:4])


@pytest.mark.gpu
@pytest.mark.parametrize("per_sample", [False, True], ids=["one-generator", "generator-list"])
def test_memory_does_not_grow_with_steps(per_sample):
    """The captured solve holds no steps x B x event block: 1000 DDPM steps at batch 64 x 3x32x32
    peak within 8 states of 10 steps (a pre-drawn block would be 1000 states: 786 MB)."""
    sde = sd.VPSDE()
    model = sd.Gaussian(torch.zeros(3, 32, 32), 0.5).model(sde)
    shape = (64, 3, 32, 32)
    state_bytes = 4 * math.prod(shape)
    peaks = {}
    for steps in (10, 1000):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        gs = sd.GraphSampler(sde, model, shape, solver=sd.DDPM(), steps=steps, device="cuda")
        if per_sample:
            gs(generator=[torch.Generator("cuda").manual_seed(i) for i in range(shape[0])])
        else:
            gs(generator=torch.Generator("cuda").manual_seed(0))
        torch.cuda.synchronize()
        peaks[steps] = torch.cuda.max_memory_allocated() - base
        del gs
    assert peaks[1000] - peaks[10] <= 8 * state_bytes, (peaks, state_bytes)


@pytest.mark.slow  # 199 draws of 60 000 counter-based normals; the chain-law test below covers D = 2..64 fast
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


def test_default_device_and_warmup():
    """Without ``device`` the sampler runs on the current CUDA device when there is one (captured),
    else on the CPU (the plain loop); warmup=1, the documented least, is accepted."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    gs = sd.GraphSampler(sde, model, (4, 3), solver=sd.DDIM(), steps=3, warmup=1)
    cuda = torch.cuda.is_available()
    assert gs.device == (torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu"))
    assert gs.use_graph is cuda and (gs._graph is not None) is cuda
    x_T = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)).to(gs.device)
    torch.testing.assert_close(gs(x_T), sd.sample(sde, model, solver=sd.DDIM(), steps=3, x_T=x_T))


@pytest.mark.parametrize("generator", ["one", "list"])
def test_a_grid_below_T_takes_x_T_as_sample_does(generator):
    """A grid starting at t < T solves from the given x_T (the state at grid[0]), as sample() does
    for a deterministic solver and as its own plain loop does for a stochastic one; without x_T it is
    an error, whatever the generator."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    grid = torch.linspace(0.5, sde.t_min, 6, dtype=torch.float64)
    x_T = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    gens = (
        (lambda: torch.Generator().manual_seed(0))
        if generator == "one"
        else (lambda: [torch.Generator().manual_seed(s) for s in range(4)])
    )
    kw = dict(grid=grid, device="cpu", dtype=torch.float64)
    gs = sd.GraphSampler(sde, model, (4, 3), solver=sd.DDIM(), **kw)
    torch.testing.assert_close(gs(x_T, generator=gens()), sd.sample(sde, model, solver=sd.DDIM(), grid=grid, x_T=x_T))
    with pytest.raises(ValueError, match=r"^x_T is required: the grid starts at t = 0.5 < T = 1; pass x_T"):
        gs(generator=gens())
    gs = sd.GraphSampler(sde, model, (4, 3), solver=sd.DDPM(), **kw)
    if generator == "one":
        ref = sd.sample(sde, model, solver=sd.DDPM(), grid=grid, x_T=x_T, generator=gens())
        assert torch.equal(gs(x_T, generator=gens()), ref)
    else:  # the start state is x_T, not the keys' prior draw: the solver's steps from x_T
        keys = draw_keys(gens(), 4, "cpu")
        coefs = _to_device(sd.DDPM().init(sde, gs.grid), x_T)
        src, state = CounterNoise(keys), sd.DDPM().init_state(x_T, coefs)
        for i in range(5):
            state = sd.DDPM().step(model, state, i, coefs, generator=src, noise=i < 4)
        assert torch.equal(gs(x_T, generator=gens()), state["x"])


@pytest.mark.gpu
def test_without_graph_safe_generators_one_generator_draws_per_sample_keys(monkeypatch):
    """A PyTorch without CUDAGraph.register_generator_state (before 2.4; emulated by hiding the
    method from graph.py's probe): the captured sampler draws B keys from the one generator
    (draw_keys' batch path) and runs on the counter noise: the prior draw of the keys, then the
    solver's steps with CounterNoise, as the eager reference computes them."""
    import builtins

    import sdesolve.graph as graph_module

    def probe(obj, name):
        return False if name == "register_generator_state" else builtins.hasattr(obj, name)

    monkeypatch.setattr(graph_module, "hasattr", probe, raising=False)
    sde = sd.VPSDE()
    model = sd.Gaussian(torch.zeros(3, dtype=torch.float64), 0.5).model(sde)
    steps, shape, solver = 5, (6, 3), sd.DDPM()
    gs = sd.GraphSampler(sde, model, shape, solver=solver, steps=steps, device="cuda", dtype=torch.float64)
    assert gs._graph is not None and not gs._graph_safe_rng
    out = gs(generator=torch.Generator("cuda").manual_seed(4))

    keys = draw_keys(torch.Generator("cuda").manual_seed(4), shape[0], "cuda")
    x = counter_normal(keys, shape[1:], 0, stream=1, dtype=torch.float64) * sde.prior_std
    coefs = _to_device(solver.init(sde, gs.grid), x)
    src, state = CounterNoise(keys), solver.init_state(x, coefs)
    for i in range(steps):
        state = solver.step(model, state, i, coefs, generator=src, noise=i < steps - 1)
    torch.testing.assert_close(out, state["x"], rtol=1e-12, atol=1e-12)
    assert src.count == gs.n_noise == steps - 1


@pytest.mark.gpu
@pytest.mark.parametrize("graph_safe", [True, False], ids=["graph-safe-generators", "before-torch-2.4"])
@pytest.mark.parametrize("solver", [sd.DDIM(), sd.DDPM()], ids=repr)
def test_each_loop_is_captured_once_and_replayed_by_every_later_call(monkeypatch, graph_safe, solver):
    """A capture costs warm-up solves, a graph's memory pool and a synchronization: the sampler captures
    the one-generator loop at construction and the per-sample (counter) loop at the first call with a
    generator list, each once. Without graph-safe generators (PyTorch < 2.4, emulated as above) the
    capture at construction is the counter loop, and it serves every call: one capture in all. Every
    replay of the counter loop gives the plain loop's samples for the same keys."""
    import builtins

    import sdesolve.graph as graph_module

    if not graph_safe:

        def probe(obj, name):
            return False if name == "register_generator_state" else builtins.hasattr(obj, name)

        monkeypatch.setattr(graph_module, "hasattr", probe, raising=False)
    captures = []
    capture = graph_module.capture_cuda_graph

    def counted(fn, **kwargs):
        captures.append(len(kwargs.get("generators", ())))
        return capture(fn, **kwargs)

    monkeypatch.setattr(graph_module, "capture_cuda_graph", counted)
    sde = sd.VPSDE()
    model = sd.Gaussian(torch.zeros(3, dtype=torch.float64), 0.5).model(sde)
    kw = dict(solver=solver, steps=5, device="cuda", dtype=torch.float64)
    gs = sd.GraphSampler(sde, model, (4, 3), **kw)
    plain = sd.GraphSampler(sde, model, (4, 3), use_graph=False, **kw)
    assert gs._graph_safe_rng is graph_safe and captures == [1 if graph_safe and gs.n_noise else 0]

    def gens(seed):
        return [torch.Generator("cuda").manual_seed(seed + i) for i in range(4)]

    x_T = torch.randn(4, 3, dtype=torch.float64, device="cuda", generator=torch.Generator("cuda").manual_seed(9))
    for call in range(3):
        gs(generator=torch.Generator("cuda").manual_seed(call))
        torch.cuda.manual_seed(call)
        a = gs()
        if graph_safe:  # the default CUDA generator draws the prior and the noise, as in sample()
            torch.cuda.manual_seed(call)
            torch.testing.assert_close(a, sd.sample(sde, model, (4, 3), **kw), rtol=0, atol=1e-12)
        torch.testing.assert_close(gs(generator=gens(10 * call)), plain(generator=gens(10 * call)), rtol=0, atol=1e-12)
        torch.testing.assert_close(gs(x_T, generator=gens(call)), plain(x_T, generator=gens(call)), rtol=0, atol=1e-12)
    assert len(captures) == (2 if graph_safe else 1), captures


@pytest.mark.gpu
def test_device_resolution_on_a_cuda_machine():
    """device="cuda" names the current device with its index (the default generator of that device
    drives generator=None); device="cpu" stays on the CPU without a graph even where CUDA exists."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    index = torch.cuda.current_device()
    for device in (None, "cuda"):
        gs = sd.GraphSampler(sde, model, (8, 3), solver=sd.DDPM(), steps=5, device=device)
        assert gs.device == torch.device("cuda", index) and gs.use_graph and gs._graph is not None
        torch.cuda.manual_seed(5)
        nfe0 = model.nfe
        a = gs()  # the default CUDA generator, continued as sample() continues it
        b = gs()
        assert model.nfe == nfe0 + 2 * gs.nfe  # each replay counts its evaluations on the model
        torch.cuda.manual_seed(5)
        ref = [sd.sample(sde, model, (8, 3), solver=sd.DDPM(), steps=5, device=gs.device) for _ in range(2)]
        torch.testing.assert_close(a, ref[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b, ref[1], rtol=1e-5, atol=1e-5)
    gs = sd.GraphSampler(sde, model, (8, 3), solver=sd.DDPM(), steps=5, device="cpu")
    assert gs.device == torch.device("cpu") and not gs.use_graph and gs._graph is None
    assert gs(generator=torch.Generator().manual_seed(0)).device.type == "cpu"
    # a generator of the other device is refused, by name, before anything runs
    gs_cuda = sd.GraphSampler(sde, model, (8, 3), solver=sd.DDPM(), steps=5, device="cuda")
    with pytest.raises(
        ValueError, match=r"^generator is on cpu but the samples are on cuda:\d+; pass a generator on cuda"
    ):
        gs_cuda(generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^generator\[1\] is on cpu but the samples are on cuda:\d+"):
        gs_cuda(generator=[torch.Generator("cuda"), torch.Generator()] + [torch.Generator("cuda")] * 6)
    with pytest.raises(ValueError, match=r"^x_T must be a tensor of shape \(8, 3\), dtype torch.float32 on cuda:\d+"):
        gs_cuda(torch.zeros(8, 3))  # right shape and dtype, other device
    with pytest.raises(
        ValueError, match=r"^generator is on cuda(:\d+)? but the samples are on cpu; pass a generator on cpu"
    ):  # torch.Generator("cuda").device names no index (seen on the H200, torch 2.11)
        gs(generator=torch.Generator("cuda").manual_seed(0))


def test_samples_without_event_dimensions():
    """shape (B,): a batch of scalars, with x_T of shape (B,) or the prior draw, as sample() does."""
    sde = sd.VPSDE()
    model = sd.ScoreModel(lambda x, t: -x, sde, prediction="score")  # N(0, 1) stays N(0, 1) under VP
    kw = dict(solver=sd.DDIM(), steps=5, dtype=torch.float64)
    gs = sd.GraphSampler(sde, model, (6,), device="cpu", **kw)
    x_T = torch.linspace(-2.0, 2.0, 6, dtype=torch.float64)
    torch.testing.assert_close(gs(x_T), sd.sample(sde, model, x_T=x_T, **kw), rtol=0, atol=1e-12)
    ref = sd.sample(sde, model, (6,), generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(gs(generator=torch.Generator().manual_seed(0)), ref)


@pytest.mark.parametrize("solver", [sd.DDPM(), sd.EulerMaruyama(), sd.PredictorCorrector()], ids=repr)
def test_denoise_false_is_samples_denoise_false(solver):
    """denoise=False: the last step keeps its noise-free update only as sample(denoise=False) does
    (one generator: the same samples), and differs from the default denoised output."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    kw = dict(solver=solver, steps=6, device="cpu", dtype=torch.float64)
    gs = sd.GraphSampler(sde, model, (5, 3), denoise=False, **kw)
    got = gs(generator=torch.Generator().manual_seed(1))
    ref = sd.sample(sde, model, (5, 3), generator=torch.Generator().manual_seed(1), denoise=False, **kw)
    assert torch.equal(got, ref)
    on = sd.GraphSampler(sde, model, (5, 3), **kw)(generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(got, on)


def test_nfe_counts_and_bad_input():
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    gs = sd.GraphSampler(sde, model, (4, 3), solver=sd.PLMS(), steps=10, device="cpu")
    assert gs.nfe == sd.PLMS().nfe(10)
    assert model.nfe == 0  # building it evaluated nothing on the caller's count
    gs(generator=torch.Generator().manual_seed(0))
    assert model.nfe == gs.nfe
    # a model that has already been called: the count is the solve's alone, and the caller's is kept
    gs2 = sd.GraphSampler(sde, model, (4, 3), solver=sd.PLMS(), steps=10, device="cpu")
    assert gs2.nfe == sd.PLMS().nfe(10) and model.nfe == gs.nfe
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
    # per-sample keys on a fresh sampler (its record written by this solve alone): the same report
    gs = sd.GraphSampler(sde, score, (4, 3), solver=sd.EulerMaruyama(), steps=10, device="cpu")
    with pytest.raises(sd.NonFiniteError, match="first appeared at step 6, from t = 0.4006"):
        gs(generator=[torch.Generator().manual_seed(s) for s in range(4)])
    # check_finite=False: the NaN comes back unannounced, as asked
    gs = sd.GraphSampler(sde, score, (4, 3), solver=sd.EulerMaruyama(), steps=10, device="cpu", check_finite=False)
    assert gs(generator=[torch.Generator().manual_seed(s) for s in range(4)]).isnan().all()


def test_a_generator_list_draws_the_prior_at_the_prior_std():
    """With a list of generators the start state is counter_normal(keys, stream 1) x prior_std: on VE
    (prior_std = sigma_max = 50) the deterministic map of that x_T is sample()'s."""
    sde = sd.VESDE(sigma_max=50.0)
    model = TARGET.model(sde)
    gens = [torch.Generator().manual_seed(s) for s in range(5)]
    gs = sd.GraphSampler(sde, model, (5, 3), solver=sd.DDIM(), steps=8, device="cpu", dtype=torch.float64)
    out = gs(generator=gens)
    keys = draw_keys([torch.Generator().manual_seed(s) for s in range(5)], 5, "cpu")
    x_T = counter_normal(keys, (3,), 0, stream=1, dtype=torch.float64) * 50.0
    torch.testing.assert_close(out, sd.sample(sde, model, solver=sd.DDIM(), steps=8, x_T=x_T), rtol=0, atol=1e-12)


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

    def gens(seed):
        return [torch.Generator("cuda").manual_seed(seed + i) for i in range(16)]

    g_graph, g_plain = torch.Generator("cuda").manual_seed(0), torch.Generator("cuda").manual_seed(0)
    graph(generator=gens(0))  # captures the per-sample graph (capture synchronizes), outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        a = [graph(generator=g_graph) for _ in range(2)]  # the second call continues the generator
        b = [plain(generator=g_plain) for _ in range(2)]
        a_list, b_list = graph(generator=gens(5)), plain(generator=gens(5))  # per-sample keys
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for x, y in zip(a + [a_list], b + [b_list]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    assert torch.equal(g_graph.get_state(), g_plain.get_state())
    ref = sd.sample(
        sde, model, (16, 3, 8, 8), solver=solver, steps=25, generator=torch.Generator("cuda").manual_seed(0)
    )
    torch.testing.assert_close(a[0], ref, rtol=1e-5, atol=1e-5)  # one generator: the samples of sample()


@pytest.mark.gpu
def test_generator_lists_make_splits_bitwise_equal_in_the_cuda_graph():
    sde = sd.VPSDE()
    model = sd.Gaussian(torch.zeros(3, 4, 4, dtype=torch.float64), 0.5).model(sde)

    def run(seeds):
        kw = dict(solver=sd.DDPM(), steps=20, device="cuda", dtype=torch.float64)
        gs = sd.GraphSampler(sde, model, (len(seeds), 3, 4, 4), **kw)
        assert gs._graph is not None
        return gs(generator=[torch.Generator("cuda").manual_seed(s) for s in seeds])

    whole = run(range(8))
    assert torch.equal(whole, torch.cat([run(range(3)), run(range(3, 8))]))


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
    assert torch.equal(a, ref[0]) and a.data_ptr() not in (gs._x.data_ptr(), gs._keys.data_ptr())


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


def _counted_gaussian_score(sde, device, calls):
    """TARGET's exact score under ``sde`` from tensors on ``device`` (capturable: no host tensor), counting
    its Python calls in ``calls[0]``."""
    m, v = TARGET.mean.to(device), (TARGET.std**2).to(device)

    def score(x, t):
        calls[0] += 1
        t64 = t.to(torch.float64)
        a = torch.exp(sde._log_alpha(t64)).to(x.dtype).unsqueeze(-1)
        s2 = torch.exp(2.0 * sde._log_sigma(t64)).to(x.dtype).unsqueeze(-1)
        return -(x - a * m) / (a * a * v + s2)

    return score


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("warmup", [1, 3])
@pytest.mark.parametrize("solver", [sd.DDIM(), sd.DDPM()], ids=repr)
def test_the_model_counts_the_solves_alone_and_each_capture_warms_up_as_asked(device, warmup, solver):
    """The model's ``nfe`` sees the solves' evaluations alone: nothing for building the sampler (its dry
    run, warm-up solves and capture), ``gs.nfe`` per call, the first call with a generator list (which
    captures the per-sample loop) included. The network itself runs the dry run (one solve); with a graph
    (CUDA) each capture runs ``warmup`` warm-up solves and the captured one, and a replay calls no Python;
    without one every call runs the loop."""
    sde, calls = sd.VPSDE(), [0]
    model = sd.ScoreModel(_counted_gaussian_score(sde, device, calls), sde, prediction="score")
    gs = sd.GraphSampler(sde, model, (4, 3), solver=solver, steps=5, device=device, warmup=warmup)
    n, graph = gs.nfe, gs.use_graph
    assert n == 5 and graph is (device == "cuda")
    capture = (warmup + 1) * n if graph else 0
    assert (calls[0], model.nfe) == (n + capture, 0)
    gs(generator=torch.Generator(device).manual_seed(0))
    assert (calls[0], model.nfe) == (n + capture + (0 if graph else n), n)
    before = calls[0]
    per_sample_capture = graph and gs._graph_safe_rng  # else the construction captured the per-sample loop
    gs(generator=[torch.Generator(device).manual_seed(s) for s in range(4)])
    assert (calls[0] - before, model.nfe) == (capture if per_sample_capture else (0 if graph else n), 2 * n)
    before = calls[0]
    gs(generator=[torch.Generator(device).manual_seed(s) for s in range(4)])
    assert (calls[0] - before, model.nfe) == (0 if graph else n, 3 * n)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_non_finite_values_are_reported_with_their_step_from_every_loop(device):
    """The check of every call reads the record written by the loop it ran: in a CUDA graph too (the
    captured loops write it), with one generator and with per-sample keys; a call with finite values after
    one with NaN reports nothing (the record is rewritten by each solve)."""
    sde = sd.VPSDE()

    def score(x, t):  # NaN below t = 0.5 where x != 0 (a solve from x_T = 0 stays at 0: finite)
        return torch.where((t[:, None] < 0.5) & (x != 0.0), torch.full_like(x, float("nan")), -x)

    # DDIM's default grid: t_4 = 0.49344 is the first time below 0.5
    gs = sd.GraphSampler(sde, score, (4, 3), solver=sd.DDIM(), steps=10, device=device)
    zeros = torch.zeros(4, 3, device=device)
    one = torch.Generator(device).manual_seed(0)
    for generator in (one, [torch.Generator(device).manual_seed(s) for s in range(4)]):
        with pytest.raises(sd.NonFiniteError, match=r"first appeared at step 4, from t = 0\.49344 to t = 0\.304631;"):
            gs(generator=generator)
        assert gs(zeros, generator=generator).eq(0.0).all()
