"""torchsde on our processes: ``to_torchsde(sde.reverse(model), event_shape)``.

* With the same Brownian increments, torchsde's Euler scheme on the wrapper reproduces our
  Euler–Maruyama step for step (both are left-point Euler in s = T - t).
* torchsde's sdeint (euler, milstein, srk with Brownian trees/intervals) samples the data law of a
  Gaussian target: mean and variance within 5 standard errors plus EM's exact bias at that step count.
"""

from __future__ import annotations

import pytest
import torch
from helpers import chain_moments, check_moments, processes

import sdesolve as sd
from sdesolve.interop import TorchSDE, to_torchsde

torchsde = pytest.importorskip("torchsde")

TARGET = sd.Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))


class _GridBrownian(torchsde.BrownianInterval.__mro__[1]):  # torchsde.BaseBrownian
    """A Brownian path known on a grid of torchsde times: W(s_{i+1}) - W(s_i) = sqrt(s_{i+1} - s_i) z_i."""

    def __init__(self, ts, z):
        self.ts = ts
        self.W = torch.cat([torch.zeros_like(z[:1]), torch.cumsum((ts[1:] - ts[:-1]).sqrt()[:, None, None] * z, 0)])

    def _index(self, s):
        i = int(torch.argmin((self.ts - float(s)).abs()))
        assert abs(float(self.ts[i]) - float(s)) < 1e-9, "torchsde asked for a time off the grid"
        return i

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        return self.W[self._index(tb)] - self.W[self._index(ta)]

    def __repr__(self):
        return "_GridBrownian()"

    dtype = property(lambda self: self.W.dtype)
    device = property(lambda self: self.W.device)
    shape = property(lambda self: tuple(self.W.shape[1:]))
    levy_area_approximation = property(lambda self: "none")


@pytest.mark.parametrize("proc", ["vp", "ve", "vdm"])
def test_euler_matches_our_euler_maruyama_with_the_same_increments(proc):
    sde = processes(proc)[proc]
    model = TARGET.model(sde)
    n, steps = 16, 25
    grid = sd.grids.quadratic(sde, steps)  # non-uniform on purpose
    x_T = TARGET.marginal_sample(n, sde.T, sde, generator=torch.Generator().manual_seed(0))
    ours = sd.sample(
        sde,
        model,
        x_T=x_T,
        solver=sd.EulerMaruyama(),
        grid=grid,
        denoise=False,
        generator=torch.Generator().manual_seed(1),
    )
    # the standard normals our EM drew, in order, one (n, 2) draw per step
    g = torch.Generator().manual_seed(1)
    z = torch.stack([torch.randn((n, 2), generator=g, dtype=torch.float64) for _ in range(steps)])
    rsde = to_torchsde(sde.reverse(model), event_shape=(2,))
    bm = _GridBrownian(rsde.time_grid(grid), z)
    xs = rsde.sdeint_grid(x_T, grid, bm=bm, method="euler")  # one torchsde step per grid interval
    theirs = xs[-1]
    assert xs.shape == (steps + 1, n, 2)
    scale = float(x_T.abs().max())
    assert torch.allclose(theirs, ours, rtol=1e-9, atol=1e-9 * scale), (theirs - ours).abs().max()


@pytest.mark.parametrize(
    "method,levy",
    [("euler", "none"), ("milstein", "none"), pytest.param("srk", "space-time", marks=pytest.mark.slow)],
)
def test_sdeint_samples_the_data_law(method, levy):
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    n, steps = 4000, 100
    gen = torch.Generator().manual_seed(2)
    x_T = TARGET.marginal_sample(n, sde.T, sde, generator=gen)
    rsde = to_torchsde(sde.reverse(model), (2,))
    grid = sd.grids.uniform(sde, steps)
    ts = rsde.time_grid(grid)
    y0 = rsde.flatten(x_T)
    bm = torchsde.BrownianInterval(
        t0=float(ts[0]), t1=float(ts[-1]), size=y0.shape, dtype=y0.dtype, levy_area_approximation=levy, entropy=3
    )
    ys = torchsde.sdeint(rsde, y0, ts[[0, -1]], bm=bm, method=method, dt=float(ts[1] - ts[0]))
    x = rsde.unflatten(ys[-1])
    m_T, v_T = TARGET.marginal_moments(sde.T, sde)
    m0, v0 = TARGET.marginal_moments(sde.t_min, sde)
    # allowance: the exact weak error of Euler at this step count (milstein = euler for additive noise;
    # srk is weak order >= 1, so the same allowance bounds it)
    m_c, v_c = chain_moments(sd.EulerMaruyama(), sde, model, grid, m_T, v_T, denoise=False)
    check_moments(x, m0, v0, mean_bias=(m_c - m0).abs(), var_bias=(v_c - v0).abs(), what=method)


def test_brownian_tree_and_image_shapes():
    """Event dims are flattened for torchsde and restored by unflatten; a BrownianTree works too."""
    sde = sd.VESDE()
    target = sd.Gaussian(torch.zeros(2, 3, 3), 0.5)
    model = target.model(sde)
    rsde = to_torchsde(sde.reverse(model), (2, 3, 3))
    x_T = target.marginal_sample(4, sde.T, sde, generator=torch.Generator().manual_seed(0))
    y0 = rsde.flatten(x_T)
    assert y0.shape == (4, 18)
    ts = rsde.time_grid(sd.grids.uniform(sde, 10))
    assert float(ts[0]) == 0.0 and bool((ts[1:] > ts[:-1]).all())
    bm = torchsde.BrownianTree(t0=float(ts[0]), t1=float(ts[-1]), w0=torch.zeros_like(y0), entropy=0)
    ys = torchsde.sdeint(rsde, y0, ts, bm=bm, method="euler", dt=float(ts[1] - ts[0]))
    assert rsde.unflatten(ys).shape == (11, 4, 2, 3, 3) and bool(torch.isfinite(ys).all())


def test_probability_flow_is_an_ode():
    """sde.probability_flow(model) wraps to g = 0: torchsde's Euler is our ODE('euler'), exactly."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x_T = TARGET.marginal_sample(8, sde.T, sde, generator=torch.Generator().manual_seed(0))
    grid = sd.grids.uniform(sde, 20)
    rsde = to_torchsde(sde.probability_flow(model), 2)
    xs = rsde.sdeint_grid(x_T, grid, method="euler")
    ours = sd.sample(sde, model, x_T=x_T, solver=sd.ODE("euler"), grid=grid)
    assert torch.allclose(xs[-1], ours, rtol=1e-10, atol=1e-10)


def test_bad_arguments():
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    with pytest.raises(TypeError, match="reverse_sde must be"):
        to_torchsde(model, (2,))
    with pytest.raises(ValueError, match="event_shape"):
        to_torchsde(sde.reverse(model), (0,))
    rsde = to_torchsde(sde.reverse(model), (2,))
    assert isinstance(rsde, TorchSDE) and rsde.noise_type == "diagonal" and rsde.sde_type == "ito"
    with pytest.raises(ValueError, match="x must have shape"):
        rsde.flatten(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="strictly decreasing"):
        rsde.time_grid(torch.tensor([0.1, 0.5]))
