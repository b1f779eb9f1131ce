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
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="strictly decreasing"):
        grids.validate_grid(torch.tensor([1.0, 0.5, 0.7]), sde)
    with pytest.raises(ValueError, match="strictly decreasing"):
        grids.validate_grid(torch.tensor([0.1, 0.5, 1.0]), sde)
    with pytest.raises(ValueError, match="inside \\[t_min, T\\]"):
        grids.validate_grid(torch.tensor([1.5, 0.5]), sde)
    with pytest.raises(ValueError, match="inside \\[t_min, T\\]"):
        grids.validate_grid(torch.tensor([1.0, 1e-5]), sde)
    with pytest.raises(ValueError, match="at least 2 times"):
        grids.validate_grid(torch.tensor([1.0]), sde)
    with pytest.raises(ValueError, match="at least 2 times"):
        grids.validate_grid(torch.ones(2, 2), sde)
    with pytest.raises(ValueError, match="finite"):
        grids.validate_grid(torch.tensor([1.0, float("nan"), 0.1]), sde)
    with pytest.raises(TypeError, match="floating-point"):
        grids.validate_grid(torch.tensor([1, 0]), sde)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        grids.uniform(sde, 0)
    with pytest.raises(TypeError, match="steps must be an int"):
        grids.uniform(sde, 10.0)
    with pytest.raises(TypeError, match="steps must be an int"):
        grids.karras(sde, True)
    with pytest.raises(ValueError, match="rho"):
        grids.karras(sde, 5, rho=0.0)
    with pytest.raises(ValueError, match="grid must be one of"):
        grids.make_grid("cosine", sde, 5)
    with pytest.raises(ValueError, match="t_min < t_max"):
        grids.uniform(sde, 5, t_min=0.5, t_max=0.4)
    # a list is accepted and returned as a float64 tensor
    assert grids.validate_grid([1.0, 0.5, 0.001], sde).dtype == torch.float64


def test_numpy_int_steps_accepted():
    np = pytest.importorskip("numpy")
    assert grids.uniform(sd.VPSDE(), np.int64(4)).shape == (5,)


def test_sample_uses_grid_errors():
    sde = sd.VPSDE()
    t = sd.Gaussian(torch.zeros(2))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sd.sample(sde, t.model(sde), (3, 2), solver=sd.EulerMaruyama(), steps=0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sd.sample(sde, t.model(sde), (3, 2), solver=sd.EulerMaruyama(), grid=torch.tensor([1.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="disagrees"):
        sd.sample(sde, t.model(sde), (3, 2), solver=sd.EulerMaruyama(), grid=grids.uniform(sde, 5), steps=4)
