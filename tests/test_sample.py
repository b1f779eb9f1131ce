"""``sample()``: every argument, reproducibility, half precision and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import check_moments

import sdesolve as sd
from sdesolve.solvers.ode import ODE
from sdesolve.solvers.predictor_corrector import (
    AncestralPredictor,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusionPredictor,
)

TARGET = sd.Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_x_T_replaces_the_prior_and_a_deterministic_solver_is_a_fixed_map():
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x_T = TARGET.marginal_sample(16, sde.T, sde, generator=_gen(0))
    a = sd.sample(sde, model, x_T=x_T, solver=ODE("heun"), steps=20, generator=_gen(1))
    b = sd.sample(sde, model, x_T=x_T.clone(), solver=ODE("heun"), steps=20, generator=_gen(2))
    assert torch.equal(a, b)
    # the map is the solver's: compare with the exact flow of x_T (heun, 200 steps: error < 1e-3)
    c = sd.sample(sde, model, x_T=x_T, solver=ODE("heun"), steps=200)
    assert torch.allclose(c, TARGET.flow(x_T, sde.T, sde.t_min, sde), atol=1e-3)
    d = sd.sample(sde, model, x_T=x_T + 1.0, solver=ODE("heun"), steps=20)
    assert not torch.allclose(a, d)
    # shape may be given and must agree; the prior is not drawn (the generator is untouched)
    g = _gen(3)
    state = g.get_state()
    sd.sample(sde, model, tuple(x_T.shape), x_T=x_T, solver=ODE("euler"), steps=3, generator=g)
    assert torch.equal(g.get_state(), state)


def test_x_T_at_a_later_start_time():
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    grid = torch.linspace(0.6, sde.t_min, 30, dtype=torch.float64)
    with pytest.raises(ValueError, match="pass x_T"):
        sd.sample(sde, model, (4, 2), solver=ODE("rk4"), grid=grid)
    x = TARGET.marginal_sample(8, 0.6, sde, generator=_gen(0))
    out = sd.sample(sde, model, x_T=x, solver=ODE("rk4"), grid=grid)
    assert torch.allclose(out, TARGET.flow(x, 0.6, sde.t_min, sde), atol=1e-5)


def test_generator_reproducibility():
    sde = sd.VESDE()
    model = TARGET.model(sde)
    for solver in (sd.EulerMaruyama(), PredictorCorrector(ReverseDiffusionPredictor(), LangevinCorrector())):
        a = sd.sample(sde, model, (64, 2), solver=solver, steps=10, generator=_gen(5))
        b = sd.sample(sde, model, (64, 2), solver=solver, steps=10, generator=_gen(5))
        c = sd.sample(sde, model, (64, 2), solver=solver, steps=10, generator=_gen(6))
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)


def test_denoise_drops_the_last_noise_only():
    """EM with denoise=False adds g(t_{N-1}) sqrt(-h) z at the last step: the difference has that std."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    steps, n = 10, 20000
    x_T = TARGET.marginal_sample(n, sde.T, sde, generator=_gen(0))
    a = sd.sample(sde, model, x_T=x_T, solver=sd.EulerMaruyama(), steps=steps, generator=_gen(1))
    b = sd.sample(sde, model, x_T=x_T, solver=sd.EulerMaruyama(), steps=steps, generator=_gen(1), denoise=False)
    g = sd.grids.uniform(sde, steps)
    std = math.sqrt(float(sde.g2(g[-2])) * float(g[-2] - g[-1]))
    d = (b - a).reshape(-1)
    assert abs(float(d.mean())) < 5 * std / math.sqrt(d.numel())
    assert abs(float(d.std()) / std - 1) < 5 / math.sqrt(2 * d.numel())


def test_final_x0_is_the_denoiser_at_the_last_time():
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x_T = TARGET.marginal_sample(8, sde.T, sde, generator=_gen(0))
    x = sd.sample(sde, model, x_T=x_T, solver=ODE("euler"), steps=5)
    nfe = model.nfe
    x0 = sd.sample(sde, model, x_T=x_T, solver=ODE("euler"), steps=5, final_x0=True)
    assert model.nfe == 2 * nfe + 1
    t = torch.tensor(sde.t_min, dtype=torch.float64)
    a, s = sde.alpha(t), sde.sigma(t)
    v0 = TARGET.std**2
    post = TARGET.mean + v0 * a / (a * a * v0 + s * s) * (x - a * TARGET.mean)
    assert torch.allclose(x0, post, atol=1e-12)


def test_callback_receives_every_step():
    sde = sd.SubVPSDE()
    model = TARGET.model(sde)
    steps = 7
    seen = []
    out = sd.sample(sde, model, (5, 2), solver=sd.EulerMaruyama(), steps=steps, generator=_gen(0), callback=seen.append)
    g = sd.grids.uniform(sde, steps)
    assert [d["i"] for d in seen] == list(range(steps))
    assert [d["t"] for d in seen] == g[:-1].tolist() and [d["t_next"] for d in seen] == g[1:].tolist()
    assert all(set(d) >= {"i", "t", "t_next", "x", "x0"} for d in seen)
    assert torch.equal(seen[-1]["x"], out)
    # x0 at step i is the denoiser at (x entering step i, t_i): the exact posterior mean here
    t = torch.tensor(seen[3]["t"], dtype=torch.float64)
    a, s = sde.alpha(t), sde.sigma(t)
    v0 = TARGET.std**2
    x_in = seen[2]["x"]
    post = TARGET.mean + v0 * a / (a * a * v0 + s * s) * (x_in.double() - a * TARGET.mean)
    assert torch.allclose(seen[3]["x0"].double(), post, rtol=1e-5, atol=1e-5)


def test_progress_bar(capsys):
    pytest.importorskip("tqdm")
    sde = sd.VPSDE()
    sd.sample(sde, TARGET.model(sde), (2, 2), solver=sd.EulerMaruyama(), steps=4, progress=True, generator=_gen(0))
    err = capsys.readouterr().err
    assert "EulerMaruyama" in err and "4/4" in err


class _HalfNet(torch.nn.Module):
    """A half-precision 'network': a linear layer (identity weights, bf16/fp16 matmul) then the exact
    Gaussian score formula, all in the input's dtype."""

    def __init__(self, sde, dtype):
        super().__init__()
        self.sde = sde
        self.lin = torch.nn.Linear(2, 2, bias=False, dtype=dtype)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(2))

    def forward(self, x, t):
        # DESIGN: the network's time input is handed over in at least float32, whatever the state's dtype
        assert x.dtype == self.lin.weight.dtype and t.dtype == torch.float32
        t64 = t.to(torch.float64)
        a = torch.exp(self.sde._log_alpha(t64)).to(x.dtype)[:, None]
        s2 = torch.exp(2 * self.sde._log_sigma(t64)).to(x.dtype)[:, None]
        m, v = TARGET.mean.to(x.dtype), (TARGET.std**2).to(x.dtype)
        return -(self.lin(x) - a * m) / (a * a * v + s2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("solver", [sd.EulerMaruyama(), ODE("heun")], ids=["em", "heun"])
def test_half_precision(dtype, solver):
    sde = sd.VPSDE()
    model = sd.ScoreModel(_HalfNet(sde, dtype), sde, prediction="score")
    n = 1500
    x = sd.sample(sde, model, (n, 2), solver=solver, steps=50, generator=_gen(0), dtype=dtype)
    assert x.dtype == dtype and bool(torch.isfinite(x).all())
    m, v = TARGET.marginal_moments(sde.t_min, sde)
    # 5 standard errors plus the rounding of a 50-step half-precision chain (eps_bf16 = 2^-8 per step,
    # a random walk: sqrt(100 evaluations) * 2^-8 ~ 0.04, doubled: 0.1 relative; fp16 is 8x finer)
    # and EM's O(h) bias at 50 steps (0.015 relative, computed exactly in test_predictor_corrector)
    rnd = (0.1 if dtype == torch.bfloat16 else 0.0125) + 0.02
    check_moments(x.float(), m, v, mean_bias=rnd * v.sqrt(), var_bias=2 * rnd * v, check_cov=False)
    # and close to the float32 run from the same x_T
    x_T = TARGET.marginal_sample(128, sde.T, sde, generator=_gen(1))
    det = ODE("heun")
    hi = sd.sample(sde, TARGET.model(sde), x_T=x_T.float(), solver=det, steps=50)
    lo = sd.sample(sde, model, x_T=x_T.to(dtype), solver=det, steps=50)
    rel_rms = float(((lo.float() - hi) ** 2).mean().sqrt()) / float(hi.pow(2).mean().sqrt())
    # 100 score evaluations (heun, 50 steps) with rounding eps (2^-8 bf16, 2^-11 fp16) each: a random walk of ~10 eps
    assert rel_rms < 10 * (2**-8 if dtype == torch.bfloat16 else 2**-11), rel_rms


def test_shape_and_type_errors():
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x_T = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="x_T has shape"):
        sd.sample(sde, model, (5, 2), x_T=x_T, solver=ODE("euler"), steps=2)
    with pytest.raises(ValueError, match="x_T has dtype"):
        sd.sample(sde, model, x_T=x_T, solver=ODE("euler"), steps=2, dtype=torch.float64)
    with pytest.raises(TypeError, match="x_T must be a floating-point tensor"):
        sd.sample(sde, model, x_T=torch.zeros(4, 2, dtype=torch.long), solver=ODE("euler"), steps=2)
    with pytest.raises(ValueError, match="x must have shape"):  # the target's event is (2,)
        sd.sample(sde, model, (4, 3), solver=ODE("euler"), steps=2)
    with pytest.raises(ValueError, match="pass shape"):
        sd.sample(sde, model, solver=ODE("euler"), steps=2)
    with pytest.raises(ValueError, match="pass steps"):
        sd.sample(sde, model, (4, 2), solver=ODE("euler"))
    with pytest.raises(TypeError, match="solver must be"):
        sd.sample(sde, model, (4, 2), solver="euler", steps=2)
    with pytest.raises(ValueError, match="different process"):
        sd.sample(sd.VESDE(), model, (4, 2), solver=ODE("euler"), steps=2)


def test_model_returning_a_different_shape():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=r"network returned shape \(4, 1\)"):
        sd.sample(sde, lambda x, t: x[:, :1], (4, 2), solver=sd.EulerMaruyama(), steps=3, generator=_gen(0))
    with pytest.raises(TypeError, match="must return a tensor"):
        sd.sample(sde, lambda x, t: 0.0, (4, 2), solver=sd.EulerMaruyama(), steps=3, generator=_gen(0))


def _nan_after(t_bad):
    def score(x, t):
        return torch.where((t < t_bad)[:, None], torch.full_like(x, float("nan")), -x)

    return score


@pytest.mark.parametrize(
    "solver",
    [sd.EulerMaruyama(), ODE("heun"), PredictorCorrector(ReverseDiffusionPredictor(), LangevinCorrector())],
    ids=["em", "heun", "pc"],
)
def test_non_finite_detection_names_the_step(solver):
    sde = sd.VPSDE()
    steps = 10
    g = sd.grids.uniform(sde, steps)
    with pytest.raises(sd.NonFiniteError) as info:
        sd.sample(sde, _nan_after(0.45), (4, 2), solver=solver, steps=steps, generator=_gen(0))
    # the first step whose evaluations see t < 0.45: Heun's second stage looks at t_{i+1}
    first = int((g[:-1] < 0.45).nonzero()[0]) if solver is not None else None
    if isinstance(solver, ODE):
        first = int((g[1:] < 0.45).nonzero()[0])
    msg = str(info.value)
    assert f"step {first}," in msg and f"t = {float(g[first]):.6g}" in msg, msg
    out = sd.sample(sde, _nan_after(0.45), (4, 2), solver=solver, steps=steps, generator=_gen(0), check_finite=False)
    assert bool(torch.isnan(out).all())


def test_solver_process_combinations():
    """The ancestral predictor needs alpha^2 + sigma^2 = 1 or alpha = 1: sub-VP is rejected with a clear
    error, every variance-preserving (VP, cosine, VDM, discrete) and the VE process are accepted."""
    pc = PredictorCorrector(AncestralPredictor(), None)
    sde = sd.SubVPSDE()
    with pytest.raises(ValueError, match="AncestralPredictor applies to variance-preserving.*SubVPSDE is neither"):
        sd.sample(sde, TARGET.model(sde), (4, 2), solver=pc, steps=3)
    for sde in (sd.VPSDE(), sd.CosineVPSDE(), sd.VDMSDE(), sd.DiscreteVPSDE.from_schedule(), sd.VESDE()):
        x = sd.sample(sde, TARGET.model(sde), (4, 2), solver=pc, steps=3, generator=_gen(0))
        assert bool(torch.isfinite(x).all())


@pytest.mark.gpu
def test_generator_device_mismatch():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="generator is on"):
        sd.sample(
            sde,
            TARGET.model(sde),
            x_T=torch.zeros(2, 2),
            solver=sd.EulerMaruyama(),
            steps=2,
            generator=torch.Generator(device="cuda"),
        )


# ----------------------------------------------------------------- no NaN leaves a sampler unannounced
def _x0_nan(sde):
    """A score that is exact at every time but the last (t_min), where it is NaN: only the final x0 sees it."""
    model = TARGET.model(sde)

    def score(x, t):
        s = model.score(x, t)
        return torch.where((t <= sde.t_min)[:, None], torch.full_like(s, float("nan")), s)

    return score


def test_final_x0_is_checked_for_non_finite_values():
    sde = sd.VPSDE()
    with pytest.raises(sd.NonFiniteError, match=r"final x0 step .* at t = 0.001, after 5 finite steps"):
        sd.sample(sde, _x0_nan(sde), (4, 2), solver=sd.DDIM(), steps=5, final_x0=True)
    x = sd.sample(sde, _x0_nan(sde), (4, 2), solver=sd.DDIM(), steps=5, final_x0=True, check_finite=False)
    assert bool(torch.isnan(x).all())
    # the steps themselves were finite: without final_x0 nothing is reported
    assert bool(torch.isfinite(sd.sample(sde, _x0_nan(sde), (4, 2), solver=sd.DDIM(), steps=5)).all())


def test_final_x0_where_sigma_is_zero_needs_no_evaluation():
    """At a last time with sigma = 0 the state is alpha x0: x0 = x / alpha, no network call there."""
    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    model = TARGET.model(sde)
    x_T = TARGET.marginal_sample(8, sde.T, sde, generator=_gen(0))
    x = sd.sample(sde, model, x_T=x_T, solver=sd.DDIM(), steps=6)
    nfe = model.nfe
    x0 = sd.sample(sde, model, x_T=x_T, solver=sd.DDIM(), steps=6, final_x0=True)
    assert model.nfe == 2 * nfe  # no extra evaluation
    assert torch.equal(x0, x)  # alpha(0) = 1


def test_non_finite_at_the_denoising_last_step_is_named():
    sde = sd.VPSDE()
    steps = 6
    g = sd.grids.uniform(sde, steps)
    t_last = float(g[-2])  # the last step's evaluation time

    def score(x, t):
        return torch.where((t <= t_last + 1e-12)[:, None], torch.full_like(x, float("inf")), -x)

    for denoise in (True, False):
        with pytest.raises(sd.NonFiniteError, match=f"step {steps - 1}, from t = {t_last:.6g}"):
            sd.sample(sde, score, (3, 2), solver=sd.EulerMaruyama(), steps=steps, generator=_gen(0), denoise=denoise)


def test_callback_sees_states_and_the_non_finite_step_is_still_announced():
    sde = sd.VPSDE()
    seen = []
    with pytest.raises(sd.NonFiniteError, match="step 6,"):
        sd.sample(sde, _nan_after(0.45), (4, 2), solver=sd.EulerMaruyama(), steps=10, generator=_gen(0),
                  callback=lambda d: seen.append(bool(torch.isfinite(d["x"]).all())))  # fmt: skip
    assert seen == [True] * 6 + [False] * 4  # every step reached the callback; the error came after


# ----------------------------------------------------------------- arguments
def test_empty_batch_and_numpy_scalars():
    np = pytest.importorskip("numpy")
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    with pytest.raises(ValueError, match=r"shape must be \(B, \*event\) with batch size B >= 1.*got \(0, 2\)"):
        sd.sample(sde, model, (0, 2), solver=sd.DDIM(), steps=3)
    with pytest.raises(ValueError, match=r"x_T must not be empty"):
        sd.sample(sde, model, x_T=torch.zeros(0, 2), solver=sd.DDIM(), steps=3)
    a = sd.sample(sde, model, (np.int64(3), np.int32(2)), solver=sd.DDIM(), steps=np.int64(4), generator=_gen(1))
    b = sd.sample(sde, model, (3, 2), solver=sd.DDIM(), steps=4, generator=_gen(1))
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="steps must be an int, got 2.5"):
        sd.sample(sde, model, (3, 2), solver=sd.DDIM(), steps=2.5)
    with pytest.raises(TypeError, match="steps must be an int"):
        sd.sample(sde, model, (3, 2), solver=sd.DDIM(), grid=sd.grids.uniform(sde, 3), steps=3.0)
    with pytest.raises(TypeError, match="denoise must be True or False"):
        sd.sample(sde, model, (3, 2), solver=sd.DDIM(), steps=3, denoise="no")


def test_callable_grid_same_in_sample_and_graph_sampler():
    """One resolver: a callable grid(sde, steps) means the same to sample() and GraphSampler."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)

    def early(sde, steps):
        return sd.grids.uniform(sde, steps, t_min=0.2)

    x_T = TARGET.marginal_sample(4, sde.T, sde, generator=_gen(0)).double()
    a = sd.sample(sde, model, x_T=x_T, solver=sd.DDIM(), steps=5, grid=early)
    gs = sd.GraphSampler(sde, model, (4, 2), solver=sd.DDIM(), steps=5, grid=early, device="cpu", dtype=torch.float64)
    assert torch.equal(gs.grid, early(sde, 5))
    torch.testing.assert_close(gs(x_T), a, rtol=0, atol=1e-12)
    assert torch.equal(a, sd.sample(sde, model, x_T=x_T, solver=sd.DDIM(), grid=early(sde, 5)))  # = its tensor


# --------------------------------------------------------------------------- the draws every solver makes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_draw_gives_each_law_in_the_asked_dtype(dtype):
    """``solvers.base.draw``: "normal" and "uniform" are torch.randn / torch.rand of the generator, bitwise,
    in the asked dtype; "rademacher" is exactly +-1 in the asked dtype, each sign with probability 1/2
    (n = 20000: the share of +1 lies within 5 standard deviations, 0.018, of 1/2); a list of generators
    gives slice i along ``batch_dim`` from generator i alone, as drawn for a batch of one."""
    from sdesolve.solvers.base import draw

    for kind, ref in (("normal", torch.randn), ("uniform", torch.rand)):
        got = draw(kind, (3, 4), _gen(5), device="cpu", dtype=dtype)
        assert got.dtype == dtype and torch.equal(got, ref((3, 4), generator=_gen(5), dtype=dtype)), kind
    r = draw("rademacher", (20000,), _gen(6), device="cpu", dtype=dtype)
    assert r.dtype == dtype and bool(((r == 1) | (r == -1)).all())
    assert abs(float((r == 1).double().mean()) - 0.5) < 5 * 0.5 / math.sqrt(20000)
    for kind in ("normal", "uniform", "rademacher"):
        got = draw(kind, (5, 2, 3), [_gen(7), _gen(8)], device="cpu", dtype=dtype, batch_dim=1)
        for i, seed in enumerate((7, 8)):
            assert torch.equal(got[:, i], draw(kind, (5, 3), _gen(seed), device="cpu", dtype=dtype)), kind


@pytest.mark.gpu
def test_draws_are_made_on_the_device_asked_for():
    """Every kind of draw, from the default generator, a CUDA generator or a list of them, is made on
    the GPU when asked (the numbers are those of the same draw made there directly), and a solver's
    ``randn_like`` draws on its state's device."""
    from sdesolve.solvers.base import draw, randn_like

    dev = torch.device("cuda")

    def g(seed):
        return torch.Generator(device=dev).manual_seed(seed)

    for kind in ("normal", "uniform", "rademacher"):
        for gen in (None, g(1), [g(1), g(2)]):
            got = draw(kind, (2, 4), gen, device=dev, dtype=torch.float32)
            assert got.device.type == "cuda" and got.dtype == torch.float32, (kind, gen)
        one = draw(kind, (2, 4), g(1), device=dev, dtype=torch.float32)
        if kind == "normal":
            assert torch.equal(one, torch.randn(2, 4, generator=g(1), device=dev))
        elif kind == "uniform":
            assert torch.equal(one, torch.rand(2, 4, generator=g(1), device=dev))
        else:
            assert torch.equal(one, 2.0 * torch.randint(0, 2, (2, 4), generator=g(1), device=dev) - 1.0)
    x = torch.zeros(3, 2, device=dev, dtype=torch.float64)
    for gen in (None, g(4), [g(4), g(5), g(6)]):
        e = randn_like(x, gen)
        assert e.device.type == "cuda" and e.dtype == torch.float64 and e.shape == x.shape
