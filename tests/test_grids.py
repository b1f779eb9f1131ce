"""Time grids: endpoints, monotonicity, the defining formulas, and validation errors."""

from __future__ import annotations

import pytest
import torch

import sdesolve as sd
from sdesolve import grids

PROCESSES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(), sd.VDMSDE(), sd.CosineVPSDE(), sd.DiscreteVPSDE.from_schedule()]


@pytest.mark.parametrize("kind", list(grids.GRIDS))
@pytest.mark.parametrize("sde", PROCESSES, ids=lambda s: type(s).__name__)
def test_endpoints_and_monotone(sde, kind):
    for steps in (1, 2, 17):
        g = grids.make_grid(kind, sde, steps)
        assert g.dtype == torch.float64 and g.shape == (steps + 1,)
        assert float(g[0]) == sde.T and float(g[-1]) == sde.t_min
        assert bool((g[1:] < g[:-1]).all())
        grids.validate_grid(g, sde)  # every built-in grid passes validation


def test_uniform_and_quadratic_formulas():
    sde = sd.VPSDE()
    u = torch.linspace(1.0, 0.0, 11, dtype=torch.float64)
    assert torch.allclose(grids.uniform(sde, 10), sde.t_min + (1.0 - sde.t_min) * u, atol=1e-15)
    assert torch.allclose(grids.quadratic(sde, 10), sde.t_min + (1.0 - sde.t_min) * u**2, atol=1e-15)
    g = grids.uniform(sde, 4, t_min=0.2, t_max=0.6)
    assert torch.allclose(g, torch.tensor([0.6, 0.5, 0.4, 0.3, 0.2], dtype=torch.float64))


@pytest.mark.parametrize("sde", PROCESSES, ids=lambda s: type(s).__name__)
def test_log_snr_grid_is_uniform_in_log_snr(sde):
    g = grids.log_snr(sde, 12)
    lam = sde.log_snr(g)
    d = lam[1:] - lam[:-1]
    assert bool((d > 0).all())
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-6, atol=1e-9), d


@pytest.mark.parametrize("rho", [7.0, 3.0])
@pytest.mark.parametrize("sde", PROCESSES, ids=lambda s: type(s).__name__)
def test_karras_formula(sde, rho):
    """sigma_hat_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho, sigma_hat = sigma/alpha."""
    N = 9
    g = grids.karras(sde, N, rho=rho)
    s_hat = sde.sigma(g) / sde.alpha(g)
    smax, smin = float(s_hat[0]), float(s_hat[-1])
    i = torch.arange(N + 1, dtype=torch.float64)
    expected = (smax ** (1 / rho) + i / N * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    assert torch.allclose(s_hat, expected, rtol=1e-7), (s_hat, expected)


def test_validation_errors():
    """Each check names the grid and the first bad index; a wrong type is a TypeError."""
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=r"strictly decreasing.*grid\[2\] = 0.7 >= grid\[1\] = 0.5"):
        grids.validate_grid(torch.tensor([1.0, 0.5, 0.7], dtype=torch.float64), sde)
    with pytest.raises(ValueError, match=r"strictly decreasing.*grid\[1\]"):
        grids.validate_grid(torch.tensor([0.1, 0.5, 1.0]), sde)
    with pytest.raises(ValueError, match=r"strictly decreasing.*grid\[3\]"):
        grids.validate_grid(torch.tensor([1.0, 0.5, 0.2, 0.2, 0.1]), sde)
    with pytest.raises(ValueError, match=r"inside \[t_min, T\].*grid\[0\] = 1.5"):
        grids.validate_grid(torch.tensor([1.5, 0.5]), sde)
    with pytest.raises(ValueError, match=r"inside \[t_min, T\].*grid\[1\] = 1e-05"):
        grids.validate_grid(torch.tensor([1.0, 1e-5], dtype=torch.float64), sde)
    with pytest.raises(ValueError, match="at least 2 times"):
        grids.validate_grid(torch.tensor([1.0]), sde)
    with pytest.raises(ValueError, match="at least 2 times"):
        grids.validate_grid(torch.ones(2, 2), sde)
    with pytest.raises(ValueError, match=r"finite, got grid\[1\] = nan"):
        grids.validate_grid(torch.tensor([1.0, float("nan"), 0.1]), sde)
    with pytest.raises(ValueError, match=r"finite, got grid\[0\] = inf"):
        grids.validate_grid([float("inf"), 0.1], sde)
    with pytest.raises(TypeError, match="floating-point"):
        grids.validate_grid(torch.tensor([1, 0]), sde)
    with pytest.raises(TypeError, match="grid must be a 1-d tensor"):
        grids.validate_grid("uniform", sde)
    with pytest.raises(TypeError, match="sde must be a sdesolve LinearSDE"):
        grids.validate_grid([1.0, 0.5], "vp")
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        grids.uniform(sde, 0)
    with pytest.raises(TypeError, match="steps must be an int"):
        grids.uniform(sde, 10.0)
    with pytest.raises(TypeError, match="steps must be an int"):
        grids.karras(sde, True)
    with pytest.raises(ValueError, match="rho must be a finite positive number"):
        grids.karras(sde, 5, rho=0.0)
    with pytest.raises(ValueError, match="grid must be one of"):
        grids.make_grid("cosine", sde, 5)
    with pytest.raises(ValueError, match="t_min must be < t_max"):
        grids.uniform(sde, 5, t_min=0.5, t_max=0.4)
    with pytest.raises(ValueError, match=r"t_min must be a finite number in \[0.001, 1\)"):
        grids.uniform(sde, 5, t_min=1e-4)  # below the process's t_min
    # a list is accepted and returned as a float64 tensor
    assert grids.validate_grid([1.0, 0.5, 0.001], sde).dtype == torch.float64


def test_grid_in_a_narrower_dtype_is_snapped_to_the_ends():
    """A float32 grid of the cosine process's T (0.99567657...) lies a few ulp off T: accepted as T."""
    sde = sd.CosineVPSDE()
    g32 = torch.linspace(sde.T, sde.t_min, 11, dtype=torch.float32)
    assert float(g32[0]) != sde.T  # the rounding this test is about
    g = grids.validate_grid(g32, sde)
    assert float(g[0]) == sde.T and float(g[-1]) == sde.t_min
    assert torch.equal(g[1:-1], g32[1:-1].double())
    with pytest.raises(ValueError, match=r"inside \[t_min, T\].*grid\[0\]"):
        grids.validate_grid(torch.tensor([sde.T + 1e-6, 0.5], dtype=torch.float64), sde)


def test_numpy_int_steps_accepted():
    np = pytest.importorskip("numpy")
    assert grids.uniform(sd.VPSDE(), np.int64(4)).shape == (5,)
    assert grids.karras(sd.VPSDE(), np.int32(4), rho=np.float32(5.0)).shape == (5,)
    assert grids.validate_grid(np.array([1.0, 0.5, 0.1]), sd.VPSDE()).dtype == torch.float64


# ----------------------------------------------------------------- processes with sigma(t_min) = 0
SIGMA_ZERO = [sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0), sd.VPSDE(t_min=0.0), sd.SubVPSDE(t_min=0.0)]


@pytest.mark.parametrize("kind", list(grids.GRIDS))
@pytest.mark.parametrize("sde", SIGMA_ZERO, ids=lambda s: type(s).__name__)
def test_grids_end_at_a_t_min_where_sigma_is_zero(sde, kind):
    """log-SNR is +inf at t_min = 0: every grid is still finite, strictly decreasing, from T to exactly 0."""
    assert float(sde._log_snr(torch.zeros(1, dtype=torch.float64))) == float("inf")
    for steps in (1, 2, 3, 10, 50):
        g = grids.make_grid(kind, sde, steps)
        assert g.shape == (steps + 1,) and bool(torch.isfinite(g).all())
        assert float(g[0]) == sde.T and float(g[-1]) == 0.0
        assert bool((g[1:] < g[:-1]).all()), g


@pytest.mark.parametrize("sde", SIGMA_ZERO, ids=lambda s: type(s).__name__)
def test_log_snr_and_karras_with_sigma_zero_append_t_min(sde):
    """diffusers' lu-lambdas and k-diffusion's append_zero: ``steps`` times spaced from T to the first
    positive time t_1 (the first knot 1/N of a discrete process, t_min + (T - t_min)/steps otherwise),
    then t_min."""
    steps = 8
    t1 = 1.0 / 1000 if isinstance(sde, sd.DiscreteVPSDE) else 1.0 / steps
    g = grids.log_snr(sde, steps)
    assert float(g[-2]) == pytest.approx(t1, rel=1e-12)
    lam = sde._log_snr(g[:-1])
    d = lam[1:] - lam[:-1]
    assert bool((d > 0).all()) and torch.allclose(d, d.mean().expand_as(d), rtol=1e-6), d
    rho = 7.0
    g = grids.karras(sde, steps, rho=rho)
    assert float(g[-2]) == pytest.approx(t1, rel=1e-12)
    s = sde._sigma_over_alpha(g[:-1])
    i = torch.arange(steps, dtype=torch.float64)
    a, b = float(s[0]) ** (1 / rho), float(s[-1]) ** (1 / rho)
    assert torch.allclose(s, (a + i / (steps - 1) * (b - a)) ** rho, rtol=1e-7)


@pytest.mark.parametrize("kind", list(grids.GRIDS))
def test_sampling_a_discrete_process_down_to_t0_on_every_grid(kind):
    """The report of issue 14: DiscreteVPSDE(t_min=0) on the log-SNR grid raised IndexError."""
    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    model = sd.Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])).model(sde)
    for solver in (sd.DDIM(), sd.EulerMaruyama()):
        x = sd.sample(
            sde, model, (4, 2), solver=solver, steps=10, grid=kind, generator=torch.Generator().manual_seed(0)
        )
        assert bool(torch.isfinite(x).all())


class _BumpGamma(sd.GammaSchedule):
    """A 'learned' gamma that is not monotone: it rises, then falls (no inverse: bisection)."""

    def forward(self, t):
        return -6.0 + 40.0 * t * (1.0 - t)


def test_non_monotone_log_snr_gives_an_error_naming_the_grid():
    """Issue 8 item 9: a non-monotone gamma gave the log-SNR grid [1, 0, 0, ...] and sampling ran."""
    sde = sd.VDMSDE(_BumpGamma())
    for kind in ("log_snr", "karras"):
        with pytest.raises(ValueError, match=rf"grid '{kind}' must be .*\[\d+\].*log-SNR must be strictly decreasing"):
            grids.make_grid(kind, sde, 6)
    model = sd.Gaussian(torch.zeros(2)).model(sde)
    with pytest.raises(ValueError, match=r"grid 'log_snr'"):
        sd.sample(sde, model, (3, 2), solver=sd.DDIM(), steps=6, grid="log_snr")


def test_callable_grids_are_validated_and_give_steps_plus_one_times():
    sde = sd.VPSDE()

    def half(sde, steps):
        return torch.linspace(1.0, 0.5, steps + 1, dtype=torch.float64)

    assert torch.equal(grids.make_grid(half, sde, 4), half(sde, 4))
    with pytest.raises(ValueError, match=r"grid short\(sde, steps=5\) returned 4 times.*steps \+ 1 = 6"):

        def short(sde, steps):
            return half(sde, steps - 2)

        grids.make_grid(short, sde, 5)
    with pytest.raises(ValueError, match=r"grid up\(sde, steps=3\) must be strictly decreasing.*\[1\]"):

        def up(sde, steps):
            return torch.linspace(0.5, 1.0, steps + 1)

        grids.make_grid(up, sde, 3)
    with pytest.raises(TypeError, match="grid must be one of .* a callable"):
        grids.make_grid(3, sde, 3)


def test_resolve_grid_is_the_one_resolver():
    sde = sd.VPSDE()
    g = grids.uniform(sde, 5)
    assert torch.equal(grids.resolve_grid(None, sde, 5, default="uniform"), g)
    assert torch.equal(grids.resolve_grid("uniform", sde, 5), g)
    assert torch.equal(grids.resolve_grid(g, sde), g)
    assert torch.equal(grids.resolve_grid(g, sde, 5), g)
    assert torch.equal(grids.resolve_grid(grids.uniform, sde, 5), g)
    assert grids.resolve_grid(None, sde, None, adaptive=True).numel() == 2  # an adaptive solver: the two ends
    with pytest.raises(ValueError, match=r"steps=4 disagrees with grid, a tensor of 6 times \(5 intervals\)"):
        grids.resolve_grid(g, sde, 4)
    with pytest.raises(ValueError, match="steps is required"):
        grids.resolve_grid("karras", sde, None)
    with pytest.raises(TypeError, match="steps must be an int"):
        grids.resolve_grid(g, sde, 2.5)
    with pytest.raises(TypeError, match="steps must be an int"):
        grids.resolve_grid("uniform", sde, 2.5)


def test_sample_uses_grid_errors():
    sde = sd.VPSDE()
    t = sd.Gaussian(torch.zeros(2))
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        sd.sample(sde, t.model(sde), (3, 2), solver=sd.EulerMaruyama(), steps=0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sd.sample(sde, t.model(sde), (3, 2), solver=sd.EulerMaruyama(), grid=torch.tensor([1.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="disagrees"):
        sd.sample(sde, t.model(sde), (3, 2), solver=sd.EulerMaruyama(), grid=grids.uniform(sde, 5), steps=4)


# ----------------------------------------------------------------- the optimized grid (issue 12 item 3)
_OPT_PROCESSES = {
    "vp": sd.VPSDE,
    "ve": sd.VESDE,
    "discrete": lambda: sd.DiscreteVPSDE.from_schedule("linear"),
    "discrete_t0": lambda: sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0),
}


def _gauss(d: int, seed: int = 0) -> sd.Gaussian:
    g = torch.Generator().manual_seed(seed)
    return sd.Gaussian(0.5 * torch.randn(d, generator=g, dtype=torch.float64), 0.2 + torch.rand(d, generator=g))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("name", ["vp", "ve", "discrete", "discrete_t0"])
def test_optimized_grid_is_a_grid(name, order):
    """Decreasing, steps + 1 times, from T exactly to t_min exactly, for every order and process."""
    sde = _OPT_PROCESSES[name]()
    model = _gauss(4).model(sde)
    for steps in (1, 2, 5, 12):
        g = grids.optimized(sde, model, steps, shape=(8, 4), generator=torch.Generator().manual_seed(0), order=order)
        assert g.dtype == torch.float64 and g.shape == (steps + 1,)
        assert float(g[0]) == sde.T and float(g[-1]) == sde.t_min
        assert bool((g[1:] < g[:-1]).all()), g
        assert torch.equal(grids.validate_grid(g, sde), g)


def test_optimized_grid_respects_t_min_t_max_and_x_T():
    sde = sd.VPSDE()
    model = _gauss(3).model(sde)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    g = grids.optimized(sde, model, 7, x_T=x, t_min=0.01, t_max=0.8)
    assert g.shape == (8,) and float(g[0]) == 0.8 and float(g[-1]) == 0.01
    assert bool((g[1:] < g[:-1]).all())


def test_optimized_grid_is_deterministic_for_a_seed():
    """Same seed (or same x_T): bitwise the same grid; another pilot batch: another grid."""
    sde = sd.VPSDE()
    model = _gauss(4).model(sde)

    def grid(seed):
        return grids.optimized(sde, model, 8, shape=(16, 4), generator=torch.Generator().manual_seed(seed))

    assert torch.equal(grid(0), grid(0))
    assert not torch.equal(grid(0), grid(1))
    x = sde.prior_sample((16, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(grids.optimized(sde, model, 8, x_T=x), grid(0))


def test_optimized_grid_costs_the_pilot_solve_only():
    """pilot_steps DDIM steps plus one x0 prediction at the pilot's last time: pilot_steps + 1 calls."""
    sde = sd.VPSDE()
    model = _gauss(4).model(sde)
    grids.optimized(sde, model, 10, shape=(4, 4), pilot_steps=20)
    assert model.nfe == 21


def test_optimized_grid_follows_the_change_of_x0():
    """The steps gather where the model's x0 prediction changes: on a Gaussian of data std s,
    ``D = s^2 / (s^2 + r^2) x`` changes fastest where r = sigma / alpha ~ s, so the grid's median
    r follows s (0.065 for s = 0.05, 4.5 for s = 5 on VE, 20 steps) — a grid that ignored the model
    could not."""
    sde = sd.VESDE()

    def median_sigma(s):
        model = sd.Gaussian(torch.zeros(8), s).model(sde)
        g = grids.optimized(sde, model, 20, shape=(16, 8), generator=torch.Generator().manual_seed(0))
        r = sde._sigma_over_alpha(g)
        return float(r.median())

    small, large = median_sigma(0.05), median_sigma(5.0)
    assert 0.01 < small < 0.5, small
    assert 1.0 < large < 50.0, large


@pytest.mark.parametrize("d", [2, 4, 16, 64])
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_optimized_grid_beats_uniform_and_log_snr_for_ddim_on_a_gaussian(name, d):
    """The property the grid is for: at equal NFE (10 DDIM steps) the error of the deterministic
    map against the exact flow (``Gaussian.flow``) is smaller on the optimized grid than on the
    uniform grid and on DDIM's default log-SNR grid; the pilot batch is independent of the test batch."""
    sde = _OPT_PROCESSES[name]()
    target = _gauss(d, seed=d)
    model = target.model(sde)
    pilot = sde.prior_sample((32, d), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_T = sde.prior_sample((256, d), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = target.flow(x_T, sde.T, sde.t_min, sde)

    def err(grid):
        x = sd.sample(sde, model, x_T=x_T, solver=sd.DDIM(), grid=grid)
        return float((x - exact).pow(2).mean().sqrt())

    e_opt = err(grids.optimized(sde, model, 10, x_T=pilot))
    # measured: the optimized grid's error is 0.59-0.65x uniform's and 0.54-0.62x log-SNR's
    e_uni, e_lsnr = err(grids.uniform(sde, 10)), err(grids.log_snr(sde, 10))
    e_karras = err(grids.karras(sde, 10))
    assert e_opt < min(e_uni, e_lsnr, e_karras), (e_opt, e_uni, e_lsnr, e_karras)


@pytest.mark.parametrize("name", ["discrete_t0", "vp_t0"])
def test_optimized_grid_into_sigma_zero_jumps_from_above_t1(name):
    """Where sigma(t_min) = 0 the steps are fitted down to t_1 (the first training timestep, or
    sigma/alpha = 0.002) and t_1 is replaced by t_min: the step before the last lies at or above t_1,
    and the last step goes into sigma = 0 from a chosen pilot time at or above t_1."""
    sde = sd.VPSDE(t_min=0.0) if name == "vp_t0" else _OPT_PROCESSES[name]()
    t1 = 1.0 / 1000 if name == "discrete_t0" else float(sde.t_of_sigma_over_alpha(0.002))
    model = _gauss(4).model(sde)
    for steps in (2, 5, 10):
        g = grids.optimized(sde, model, steps, shape=(8, 4), generator=torch.Generator().manual_seed(0))
        assert g.shape == (steps + 1,) and float(g[-1]) == 0.0 and float(g[-2]) >= t1
        assert float(sde._log_sigma(g[-1:])) == float("-inf")
