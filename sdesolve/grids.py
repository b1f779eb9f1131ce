"""Time grids: decreasing float64 tensors from T down to t_min.

A grid of ``steps + 1`` times defines ``steps`` integration intervals. Grids are built on
the host in float64, once per sampling call, and every grid — built-in, returned by a
callable, or passed as a tensor — is checked by :func:`validate_grid` before a solver sees it:
1-d, at least two times, finite, strictly decreasing, inside [t_min, T] of the process.

**A process with sigma(t_min) = 0** (e.g. ``DiscreteVPSDE(..., t_min=0)``, ``VPSDE(t_min=0)``)
has log-SNR = +inf at t_min, so a grid uniform in log-SNR or in (sigma/alpha)^(1/rho) cannot
end there. As diffusers' DPM-Solver (``use_lu_lambdas``, ``final_sigmas_type="zero"``) and
k-diffusion (``append_zero``) do, :func:`log_snr` and :func:`karras` then space their first
``steps`` times between T and the *first positive time* t_1, and append t_min as the last
point: the last interval is the denoising step into sigma = 0. t_1 is the first knot of a
discrete process (``sde.timestep_to_t(0)``, diffusers' first training timestep), and for a
continuous process the first point of the uniform grid above t_min, ``t_min + (T - t_min) / steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._validate import check_callable, check_int, check_real, describe
from .sde.base import LinearSDE

__all__ = ["uniform", "quadratic", "log_snr", "karras", "make_grid", "validate_grid", "resolve_grid", "GRIDS"]


# ------------------------------------------------------------------ argument checks
def _check_sde(sde) -> LinearSDE:
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a sdesolve LinearSDE (e.g. VPSDE()), got {type(sde).__name__}")
    return sde


def _ends(sde, t_min, t_max) -> tuple[float, float]:
    """The grid's two ends, checked: ``sde.t_min <= t_min < t_max <= sde.T``."""
    _check_sde(sde)
    T, t0 = float(sde.T), float(sde.t_min)
    lo = t0 if t_min is None else check_real(t_min, "t_min", lo=t0, hi=T, hi_open=True)
    hi = T if t_max is None else check_real(t_max, "t_max", lo=t0, hi=T, lo_open=True)
    if not lo < hi:
        raise ValueError(f"t_min must be < t_max (the grid runs from t_max down to t_min), got t_min={lo}, t_max={hi}")
    return lo, hi


def _check_steps(steps) -> int:
    return check_int(steps, "steps", minimum=1)


def _checked(grid: Tensor, sde, kind: str) -> Tensor:
    """A built-in grid, validated: a process whose log-SNR is not monotone gives a bad grid."""
    hint = "; the process's log-SNR must be strictly decreasing in t" if kind in ("log_snr", "karras") else ""
    return validate_grid(grid, sde, source=f"grid {kind!r}", hint=hint)


# ------------------------------------------------------------------ the grids
def uniform(sde, steps: int, *, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Evenly spaced in t (Song et al.'s default for stochastic samplers)."""
    steps = _check_steps(steps)
    lo, hi = _ends(sde, t_min, t_max)
    return _checked(torch.linspace(hi, lo, steps + 1, dtype=torch.float64), sde, "uniform")


def quadratic(sde, steps: int, *, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """``t_i = t_min + (T - t_min) u_i^2`` with u evenly spaced: denser near the data (DDIM's quadratic)."""
    steps = _check_steps(steps)
    lo, hi = _ends(sde, t_min, t_max)
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return _checked(lo + (hi - lo) * u * u, sde, "quadratic")


def _first_positive_time(sde, lo: float, hi: float, steps: int) -> float:
    """Where the interior of a log-SNR or Karras grid ends when sigma(t_min) = 0 (module docstring)."""
    if hasattr(sde, "timestep_to_t"):  # a discrete process: its first training timestep
        t1 = float(sde.timestep_to_t(0))
        if lo < t1 < hi:
            return t1
    return lo + (hi - lo) / steps


def _spaced(sde, steps: int, lo: float, hi: float, to_u: Callable, from_u: Callable) -> Tensor:
    """``steps + 1`` times from hi to lo, evenly spaced in ``u = to_u(t)`` (u finite at both ends).

    Where u(lo) is not finite (sigma(lo) = 0), the first ``steps`` times span [t_1, hi] and lo is appended.
    """
    u_lo = to_u(torch.tensor([lo], dtype=torch.float64))
    if steps > 1 and not bool(torch.isfinite(u_lo).all()):
        t1 = _first_positive_time(sde, lo, hi, steps)
        return torch.cat([_spaced(sde, steps - 1, t1, hi, to_u, from_u), torch.tensor([lo], dtype=torch.float64)])
    u = to_u(torch.tensor([hi, lo], dtype=torch.float64))
    if not math.isfinite(float(u[0])):
        raise ValueError(
            f"t_max = {hi:g}: the log-SNR there is {float(sde._log_snr(torch.tensor([hi], dtype=torch.float64))):g} "
            f"(alpha = 0, a zero terminal SNR), so no grid spaced in log-SNR or sigma/alpha starts there; "
            f"pass t_max < {hi:g} with x_T, or grid='uniform'"
        )
    grid = from_u(torch.linspace(float(u[0]), float(u[1]), steps + 1, dtype=torch.float64))
    grid[0], grid[-1] = hi, lo
    return grid


def log_snr(sde, steps: int, *, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Evenly spaced in log-SNR (the natural variable of exponential integrators).

    Where sigma(t_min) = 0 (log-SNR = +inf) the last point is t_min, after ``steps`` times evenly
    spaced in log-SNR down to the first positive time (module docstring).
    """
    steps = _check_steps(steps)
    lo, hi = _ends(sde, t_min, t_max)
    return _checked(_spaced(sde, steps, lo, hi, sde._log_snr, sde._t_of_log_snr), sde, "log_snr")


def karras(sde, steps: int, *, rho: float = 7.0, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Karras et al. (2022, eq. 5): evenly spaced in ``sigma_hat^(1/rho)``, ``sigma_hat = sigma / alpha``.

    Where sigma(t_min) = 0 the last point is t_min (k-diffusion's ``append_zero``), after ``steps``
    times of the Karras ramp down to the first positive time (module docstring).
    """
    steps = _check_steps(steps)
    rho = check_real(rho, "rho", positive=True)
    lo, hi = _ends(sde, t_min, t_max)

    def to_u(t):
        u = sde._sigma_over_alpha(t) ** (1.0 / rho)
        return torch.where(u > 0, u, torch.full_like(u, math.inf))  # sigma = 0: no finite ramp reaches it

    def from_u(u):
        return sde._t_of_sigma_over_alpha(u**rho)

    return _checked(_spaced(sde, steps, lo, hi, to_u, from_u), sde, "karras")


GRIDS = {"uniform": uniform, "quadratic": quadratic, "log_snr": log_snr, "karras": karras}


def make_grid(kind, sde, steps: int, **kwargs) -> Tensor:
    """A grid by name (``uniform``, ``quadratic``, ``log_snr``, ``karras``) or a callable ``kind(sde, steps)``.

    The result is validated (:func:`validate_grid`); a callable must return ``steps + 1`` times.
    """
    steps = _check_steps(steps)
    if isinstance(kind, str):
        if kind not in GRIDS:
            raise ValueError(f"grid must be one of {sorted(GRIDS)}, a callable or a tensor, got {kind!r}")
        return GRIDS[kind](sde, steps, **kwargs)  # validated by the grid function
    check_callable(kind, "grid", f"one of {sorted(GRIDS)}, a callable grid(sde, steps) or a tensor of times")
    name = getattr(kind, "__name__", type(kind).__name__)
    g = validate_grid(kind(sde, steps, **kwargs), sde, source=f"grid {name}(sde, steps={steps})")
    if g.numel() != steps + 1:
        raise ValueError(
            f"grid {name}(sde, steps={steps}) returned {g.numel()} times; a grid callable must return steps + 1 = "
            f"{steps + 1} times (steps intervals)"
        )
    return g


# ------------------------------------------------------------------ validation
def _as_grid_tensor(grid, source: str) -> Tensor:
    if isinstance(grid, Tensor):
        if not grid.is_floating_point():
            raise TypeError(f"{source} must be a floating-point tensor of times, got dtype {grid.dtype}")
        return grid
    if isinstance(grid, (str, bytes)) or not hasattr(grid, "__len__"):
        raise TypeError(f"{source} must be a 1-d tensor of times (T ... t_min), got {describe(grid)}")
    try:
        return torch.as_tensor(grid, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{source} must be a 1-d tensor of times (T ... t_min), got {describe(grid)}") from e


def validate_grid(grid, sde, *, source: str = "grid", hint: str = "") -> Tensor:
    """Check a grid: 1-d, at least two times, finite, strictly decreasing, inside [t_min, T].

    A first time within a few units in the last place of the grid's dtype of T (a float32 grid
    of ``sde.T``, say) is taken as T, and a last time as close to t_min as t_min. Returns the grid as a float64 CPU tensor.
    Raises ValueError naming ``source`` and the first bad index, TypeError for a non-float tensor.
    """
    _check_sde(sde)
    grid = _as_grid_tensor(grid, source)
    g = grid.detach().to(device="cpu", dtype=torch.float64).clone()
    if g.dim() != 1 or g.numel() < 2:
        raise ValueError(f"{source} must be a 1-d tensor of at least 2 times (T ... t_min), got shape {tuple(g.shape)}")
    bad = (~torch.isfinite(g)).nonzero()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"{source} must be finite, got grid[{i}] = {float(g[i])}{hint}")
    T, t0 = float(sde.T), float(sde.t_min)
    tol = 8.0 * torch.finfo(grid.dtype).eps * max(1.0, abs(T))
    if abs(float(g[0]) - T) <= tol:
        g[0] = T
    if abs(float(g[-1]) - t0) <= tol:
        g[-1] = t0
    out = ((g > T) | (g < t0)).nonzero()
    if out.numel():
        i = int(out[0])
        raise ValueError(f"{source} must lie inside [t_min, T] = [{t0:g}, {T:g}], got grid[{i}] = {float(g[i]):.9g}")
    bad = (g[1:] >= g[:-1]).nonzero()
    if bad.numel():
        i = int(bad[0]) + 1
        raise ValueError(
            f"{source} must be strictly decreasing (from T down to t_min), got grid[{i}] = {float(g[i]):.9g} "
            f">= grid[{i - 1}] = {float(g[i - 1]):.9g}" + hint
        )
    return g


def resolve_grid(grid, sde, steps=None, *, default: str = "uniform", adaptive: bool = False) -> Tensor:
    """The one grid resolver of :func:`sdesolve.sample` and :class:`sdesolve.GraphSampler`.

    ``grid`` is None (``default``), a name or a callable (then ``steps`` is required, except for an
    adaptive solver, which needs only the two ends), or a tensor of times (then ``steps``, if
    given, must equal its number of intervals). Returns a validated float64 CPU grid.
    """
    if steps is not None:
        steps = _check_steps(steps)
    if grid is None:
        grid = default
    if isinstance(grid, str) or (callable(grid) and not isinstance(grid, Tensor)):
        if steps is None:
            if not adaptive:
                raise ValueError(
                    f"steps is required with grid={grid if isinstance(grid, str) else 'a callable'!r}: pass steps "
                    f"(the number of steps, an int >= 1) or an explicit grid tensor"
                )
            steps = 1  # an adaptive solver needs only the two ends
        return make_grid(grid, sde, steps)
    g = validate_grid(grid, sde)
    if steps is not None and steps != g.numel() - 1:
        raise ValueError(
            f"steps={steps} disagrees with grid, a tensor of {g.numel()} times ({g.numel() - 1} intervals); "
            f"pass one of them"
        )
    return g
