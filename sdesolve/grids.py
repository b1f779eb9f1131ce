"""Time grids: decreasing float64 tensors from T down to t_min.

A grid of ``steps + 1`` times defines ``steps`` integration intervals. Grids are built on
the host in float64, once per sampling call.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["uniform", "quadratic", "log_snr", "karras", "make_grid", "validate_grid", "GRIDS"]


def _ends(sde, t_min: float | None, t_max: float | None):
    lo = float(sde.t_min if t_min is None else t_min)
    hi = float(sde.T if t_max is None else t_max)
    if not (0.0 <= lo < hi <= float(sde.T) + 1e-12):
        raise ValueError(f"the grid needs 0 <= t_min < t_max <= T = {sde.T:g}, got t_min={lo}, t_max={hi}")
    return lo, hi


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return int(steps)


def uniform(sde, steps: int, *, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Evenly spaced in t (Song et al.'s default for stochastic samplers)."""
    steps = _check_steps(steps)
    lo, hi = _ends(sde, t_min, t_max)
    return torch.linspace(hi, lo, steps + 1, dtype=torch.float64)


def quadratic(sde, steps: int, *, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """``t_i = t_min + (T - t_min) u_i^2`` with u evenly spaced: denser near the data (DDIM's quadratic)."""
    steps = _check_steps(steps)
    lo, hi = _ends(sde, t_min, t_max)
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return lo + (hi - lo) * u * u


def log_snr(sde, steps: int, *, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Evenly spaced in log-SNR (the natural variable of exponential integrators)."""
    steps = _check_steps(steps)
    lo, hi = _ends(sde, t_min, t_max)
    ends = torch.tensor([hi, lo], dtype=torch.float64)
    lam = sde._log_snr(ends)
    grid = sde._t_of_log_snr(torch.linspace(float(lam[0]), float(lam[1]), steps + 1, dtype=torch.float64))
    grid[0], grid[-1] = hi, lo
    return grid


def karras(sde, steps: int, *, rho: float = 7.0, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Karras et al. (2022): evenly spaced in ``sigma_hat^(1/rho)``, ``sigma_hat = sigma / alpha``."""
    steps = _check_steps(steps)
    if not (rho > 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be a positive number, got {rho}")
    lo, hi = _ends(sde, t_min, t_max)
    ends = torch.tensor([hi, lo], dtype=torch.float64)
    s_hat = torch.exp(-0.5 * sde._log_snr(ends))
    a, b = float(s_hat[0]) ** (1 / rho), float(s_hat[1]) ** (1 / rho)
    ramp = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    s = (a + ramp * (b - a)) ** rho
    grid = sde._t_of_log_snr(-2.0 * torch.log(s))
    grid[0], grid[-1] = hi, lo
    return grid


GRIDS = {"uniform": uniform, "quadratic": quadratic, "log_snr": log_snr, "karras": karras}


def make_grid(kind, sde, steps: int, **kwargs) -> Tensor:
    """A grid by name (``uniform``, ``quadratic``, ``log_snr``, ``karras``) or a callable ``kind(sde, steps)``."""
    if callable(kind):
        return validate_grid(kind(sde, steps, **kwargs), sde)
    if kind not in GRIDS:
        raise ValueError(f"grid must be one of {sorted(GRIDS)} or a tensor, got {kind!r}")
    return GRIDS[kind](sde, steps, **kwargs)


def validate_grid(grid, sde) -> Tensor:
    """Check a user grid: 1-d, at least two times, finite, strictly decreasing, inside [t_min, T].

    Returns it as a float64 CPU tensor.
    """
    if not isinstance(grid, Tensor):
        grid = torch.as_tensor(grid, dtype=torch.float64)
    if not grid.is_floating_point():
        raise TypeError(f"grid must be a floating-point tensor, got dtype {grid.dtype}")
    g = grid.detach().to(device="cpu", dtype=torch.float64)
    if g.dim() != 1 or g.numel() < 2:
        raise ValueError(f"grid must be a 1-d tensor of at least 2 times (T ... t_min), got shape {tuple(g.shape)}")
    if not bool(torch.isfinite(g).all()):
        raise ValueError("grid must be finite")
    if bool((g[1:] >= g[:-1]).any()):
        raise ValueError("grid must be strictly decreasing (from T down to t_min)")
    tol = 1e-9
    lo = min(float(sde.t_min), float(sde.T))
    if float(g[0]) > sde.T + tol or float(g[-1]) < lo - tol:
        raise ValueError(
            f"grid must lie inside [t_min, T] = [{sde.t_min:g}, {sde.T:g}], got [{float(g[-1]):g}, {float(g[0]):g}]"
        )
    return g
