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

:func:`optimized` fits a grid to the user's model instead: a pilot solve measures how fast the
model's x0 prediction changes along the path, and the steps are placed so that each makes the
same local error (issue 12; measured in ``notes/bench_accuracy.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._validate import check_callable, check_int, check_real, check_tensor, describe
from .sde.base import LinearSDE

if TYPE_CHECKING:
    from .model import ScoreLike, ScoreModel

__all__ = [
    "uniform",
    "quadratic",
    "log_snr",
    "karras",
    "optimized",
    "make_grid",
    "validate_grid",
    "resolve_grid",
    "GRIDS",
]


# ------------------------------------------------------------------ argument checks
def _check_sde(sde: Any) -> LinearSDE:
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a sdesolve LinearSDE (e.g. VPSDE()), got {type(sde).__name__}")
    return sde


def _ends(sde: LinearSDE, t_min: float | None, t_max: float | None) -> tuple[float, float]:
    """The grid's two ends, checked: ``sde.t_min <= t_min < t_max <= sde.T``."""
    _check_sde(sde)
    T, t0 = float(sde.T), float(sde.t_min)
    lo = t0 if t_min is None else check_real(t_min, "t_min", lo=t0, hi=T, hi_open=True)
    hi = T if t_max is None else check_real(t_max, "t_max", lo=t0, hi=T, lo_open=True)
    if not lo < hi:
        raise ValueError(f"t_min must be < t_max (the grid runs from t_max down to t_min), got t_min={lo}, t_max={hi}")
    return lo, hi


def _check_steps(steps: Any) -> int:
    return check_int(steps, "steps", minimum=1)


def _checked(grid: Tensor, sde: LinearSDE, kind: str) -> Tensor:
    """A built-in grid, validated: a process whose log-SNR is not monotone gives a bad grid."""
    hint = "; the process's log-SNR must be strictly decreasing in t" if kind in ("log_snr", "karras") else ""
    return validate_grid(grid, sde, source=f"grid {kind!r}", hint=hint)


# ------------------------------------------------------------------ the grids
def uniform(sde: LinearSDE, steps: int, *, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Evenly spaced in t (Song et al.'s default for stochastic samplers)."""
    steps = _check_steps(steps)
    lo, hi = _ends(sde, t_min, t_max)
    return _checked(torch.linspace(hi, lo, steps + 1, dtype=torch.float64), sde, "uniform")


def quadratic(sde: LinearSDE, steps: int, *, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """``t_i = t_min + (T - t_min) u_i^2`` with u evenly spaced: denser near the data (DDIM's quadratic)."""
    steps = _check_steps(steps)
    lo, hi = _ends(sde, t_min, t_max)
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return _checked(lo + (hi - lo) * u * u, sde, "quadratic")


def _first_positive_time(sde: LinearSDE, lo: float, hi: float, steps: int) -> float:
    """Where the interior of a log-SNR or Karras grid ends when sigma(t_min) = 0 (module docstring)."""
    if hasattr(sde, "timestep_to_t"):  # a discrete process: its first training timestep
        t1 = float(sde.timestep_to_t(0))  # type: ignore[operator]  # a discrete process's method (hasattr above)
        if lo < t1 < hi:
            return t1
    return lo + (hi - lo) / steps


def _spaced(sde: LinearSDE, steps: int, lo: float, hi: float, to_u: Callable, from_u: Callable) -> Tensor:
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


def log_snr(sde: LinearSDE, steps: int, *, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Evenly spaced in log-SNR (the natural variable of exponential integrators).

    Where sigma(t_min) = 0 (log-SNR = +inf) the last point is t_min, after ``steps`` times evenly
    spaced in log-SNR down to the first positive time (module docstring).
    """
    steps = _check_steps(steps)
    lo, hi = _ends(sde, t_min, t_max)
    return _checked(_spaced(sde, steps, lo, hi, sde._log_snr, sde._t_of_log_snr), sde, "log_snr")


def karras(
    sde: LinearSDE, steps: int, *, rho: float = 7.0, t_min: float | None = None, t_max: float | None = None
) -> Tensor:
    """Karras et al. (2022, eq. 5): evenly spaced in ``sigma_hat^(1/rho)``, ``sigma_hat = sigma / alpha``.

    Where sigma(t_min) = 0 the last point is t_min (k-diffusion's ``append_zero``), after ``steps``
    times of the Karras ramp down to the first positive time (module docstring).
    """
    steps = _check_steps(steps)
    rho = check_real(rho, "rho", positive=True)
    lo, hi = _ends(sde, t_min, t_max)

    def to_u(t: Tensor) -> Tensor:
        u = sde._sigma_over_alpha(t) ** (1.0 / rho)
        return torch.where(u > 0, u, torch.full_like(u, math.inf))  # sigma = 0: no finite ramp reaches it

    def from_u(u: Tensor) -> Tensor:
        return sde._t_of_sigma_over_alpha(u**rho)

    return _checked(_spaced(sde, steps, lo, hi, to_u, from_u), sde, "karras")


# ------------------------------------------------------------------ a grid fitted to the model
def optimized(
    sde: LinearSDE,
    model: ScoreLike,
    steps: int,
    *,
    x_T: Tensor | None = None,
    shape: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    order: int = 1,
    pilot_steps: int = 64,
    t_min: float | None = None,
    t_max: float | None = None,
) -> Tensor:
    r"""A grid of ``steps`` intervals fitted to ``model``: the local error of an order-``order`` step equidistributed in log-SNR.

    Exponential integrators (DDIM = DPM-Solver-1, DPM-Solver++, UniPC) step the probability-flow
    ODE in the half log-SNR ``l = lambda / 2 = log(alpha / sigma)`` with the data prediction
    ``D(l) = x0_hat(x_l, l)`` along the path. A step of order k and length h in l makes, in the
    data variable ``x / alpha``, the local error ``e ~ c_k h^(k+1) |d^k D / dl^k|`` (Lu et al. 2022b,
    DPM-Solver++, Thm. 3.1; for k = 1, ``x_s / alpha_s - x_t / alpha_t - (sigma_s/alpha_s - sigma_t/alpha_t) eps_hat``
    is ``h^2 / 2 dD/dl`` to leading order). The sum of the local errors ``sum_i m(l_i) h_i^(k+1)``,
    ``m = |d^k D / dl^k|``, is smallest for a fixed number of steps when the step density is
    ``rho(l) ~ m(l)^(1 / (k + 1))``, i.e. when every step makes the same local error (de Boor's
    equidistribution). An error made at ``r = sigma / alpha = exp(-l)`` reaches the output through
    the flow's Jacobian, which for data of scale s contracts it by ``s / sqrt(s^2 + r^2)`` (exact
    for a Gaussian N(mu, s^2 I), where ``x / alpha - mu = sqrt(s^2 + r^2) z`` along the flow); so m
    is weighted by that factor, with s the RMS over coordinates of the pilot batch's spread of its
    last x0 predictions. The algorithm, deterministic for a given x_T:

    1. a pilot solve: DDIM on ``pilot_steps`` intervals evenly spaced in log-SNR, from x_T (or a
       prior draw of ``shape`` with ``generator``), recording the model's x0 prediction at every
       pilot time (``pilot_steps + 1`` network calls on the pilot batch);
    2. ``m`` at the pilot times: the root mean square over the batch and the coordinates of the
       k-th divided difference of those predictions in l;
    3. the weighted rate ``w = m s / sqrt(s^2 + r^2)`` and the density
       ``rho = (w + 1e-3 max w)^(1 / (k + 1))`` (the floor keeps steps where D is flat), piecewise
       constant between pilot times; the ``steps + 1`` times split its integral in equal parts,
       mapped back to t through the process' inverse log-SNR.

    Where sigma(t_min) = 0 (log-SNR = +inf) the ``steps`` intervals are fitted down to a time t_1
    with sigma > 0 (a discrete process' first training timestep; sigma / alpha = 0.002, EDM's
    sigma_min, otherwise), and the last time t_1 is then replaced by t_min: the last step goes
    into sigma = 0 from wherever the fit put the step before it (where the x0 prediction has
    stopped changing, a step to t_1 would gain nothing). Against fitting ``steps - 1`` intervals
    and stepping t_1 -> t_min, measured on Gaussians and 4-mode mixtures in D = 16 and 64 with
    DDIM, DPM-Solver++ 2M/3M and UniPC at 5, 10, 20 steps (before the contraction weight): lower
    error in 46 of 48 cases (by 1.01-4.2x), higher in 2 (2M at 5 steps on the Gaussians, 1.6-1.8x).
    On the same 48 cases the grid beats the best of uniform / quadratic / log-SNR / Karras chosen
    per case in 38 (geometric mean over all 48: 1.48x lower error; ``notes/bench_accuracy.md``).

    Args:
        sde: the forward process (:class:`~sdesolve.sde.LinearSDE`) the model was trained on.
        model: a :class:`~sdesolve.ScoreModel` of ``sde`` or a callable score ``s(x, t)``.
        steps: the number of intervals (an int >= 1); the grid has ``steps + 1`` times.
        x_T: the pilot batch, states at ``t_max`` (B, *event) with B >= 2; or give ``shape`` (then
            the pilot batch is drawn from the prior at T with ``generator``). A few dozen samples
            suffice.
        shape: (B, *event) of a prior draw, when ``x_T`` is not given.
        generator: a ``torch.Generator`` for that prior draw.
        order: the order k of the solver the grid is for (1: DDIM, DPM-Solver++ 1; 2: 2M, UniPC,
            Heun; 3: 3M).
        pilot_steps: intervals of the pilot solve (an int >= order + 2; default 64).
        t_min, t_max: the grid's ends (default the process' t_min and T).

    Returns:
        a strictly decreasing float64 CPU tensor of ``steps + 1`` times from t_max to t_min,
        usable wherever a grid is (``sample(..., grid=...)``, ``GraphSampler``).
    """
    steps = _check_steps(steps)
    order = check_int(order, "order", minimum=1, maximum=3)
    pilot_steps = check_int(pilot_steps, "pilot_steps", minimum=order + 2)
    lo, hi = _ends(sde, t_min, t_max)
    x = _pilot_state(sde, hi, x_T, shape, generator)
    from .model import as_model  # here: model imports nothing of grids, but sample does

    score_model = as_model(model, sde)
    end = lo
    if not math.isfinite(float(sde._log_snr(torch.tensor([lo], dtype=torch.float64)))):
        if steps == 1:
            return _checked(torch.tensor([hi, lo], dtype=torch.float64), sde, "optimized")
        end = _last_fitted_time(sde, lo, hi, steps)
    pilot = _spaced(sde, pilot_steps, end, hi, sde._log_snr, sde._t_of_log_snr)
    ell = 0.5 * sde._log_snr(pilot)  # increasing along the solve
    x0 = _pilot_x0(sde, score_model, x, pilot)
    m = _divided_difference_rms(x0, ell, order)
    # m[j] sits at the mean of ell[j .. j + order]; spread it onto the pilot intervals
    centres = torch.stack([ell[j : j + order + 1].mean() for j in range(m.numel())])
    mids = 0.5 * (ell[1:] + ell[:-1])
    # an error made at r = sigma/alpha reaches the output shrunk by s / sqrt(s^2 + r^2) (s: the data's scale)
    s = max(float(x0[-1].std(0).pow(2).mean().sqrt()), 1e-12)
    w = _interp(mids, centres, m) * s / torch.sqrt(s * s + torch.exp(-2.0 * mids))
    rho = (w + 1e-3 * float(w.max())).clamp_min(1e-300) ** (1.0 / (order + 1))
    mass = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(rho * (ell[1:] - ell[:-1]), 0)])
    target = torch.linspace(0.0, float(mass[-1]), steps + 1, dtype=torch.float64)
    grid = sde._t_of_log_snr(2.0 * _interp(target, mass, ell))
    grid[0], grid[-1] = hi, lo  # where sigma(lo) = 0, the last step jumps from grid[-2] > end into sigma = 0
    return _checked(grid, sde, "optimized")


def _last_fitted_time(sde: LinearSDE, lo: float, hi: float, steps: int) -> float:
    """Where the fitted part of an optimized grid ends when sigma(lo) = 0: the first training
    timestep of a discrete process, else where sigma / alpha = 0.002 (EDM's sigma_min), else
    the first point of the uniform grid above lo."""
    if hasattr(sde, "timestep_to_t"):
        t1 = float(sde.timestep_to_t(0))  # type: ignore[operator]  # a discrete process's method (hasattr above)
        if lo < t1 < hi:
            return t1
    r = sde._sigma_over_alpha(torch.tensor([lo, hi], dtype=torch.float64))
    if float(r[0]) < 0.002 < float(r[1]):
        return float(sde._t_of_sigma_over_alpha(torch.tensor([0.002], dtype=torch.float64)))
    return lo + (hi - lo) / steps


def _pilot_state(
    sde: LinearSDE, hi: float, x_T: Tensor | None, shape: Sequence[int] | None, generator: torch.Generator | None
) -> Tensor:
    """The pilot batch: x_T as given, or a prior draw of ``shape`` (which needs t_max = T)."""
    if (x_T is None) == (shape is None):
        raise ValueError("pass exactly one of x_T (the pilot batch, (B, *event)) or shape (of a prior draw)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")
    if x_T is not None:
        x = check_tensor(x_T, "x_T", min_dim=1, finite=True)
        if x.shape[0] < 2:
            raise ValueError(f"x_T must hold a pilot batch of at least 2 samples, got shape {tuple(x.shape)}")
        return x
    from .sample import _check_shape

    shape = _check_shape(shape)
    if shape[0] < 2:
        raise ValueError(f"shape must give a pilot batch of at least 2 samples, got {shape}")
    if hi != float(sde.T):
        raise ValueError(f"x_T is required: the grid starts at t_max = {hi:g} < T = {float(sde.T):g}")
    device = generator.device if generator is not None else None
    return sde.prior_sample(shape, generator=generator, device=device, dtype=torch.float32)


def _pilot_x0(sde: LinearSDE, model: ScoreModel, x: Tensor, pilot: Tensor) -> Tensor:
    """The model's x0 prediction at every pilot time along a DDIM solve from x (float64, (M + 1, B, -1))."""
    from .sample import sample
    from .solvers.base import NonFiniteError
    from .solvers.ddim import DDIM

    x0s: list[Tensor] = []

    def keep(info: dict) -> None:
        x0s.append(info["x0"].detach().reshape(x.shape[0], -1).to(torch.float64).cpu())

    with torch.no_grad():
        try:
            last = sample(sde, model, x_T=x, solver=DDIM(), grid=pilot, callback=keep)
        except NonFiniteError as e:
            raise NonFiniteError(f"the pilot solve of grids.optimized (DDIM on {pilot.numel() - 1} steps): {e}") from e
        x0s.append(model.x0(last, float(pilot[-1])).reshape(x.shape[0], -1).to(torch.float64).cpu())
    out = torch.stack(x0s)
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteError(
            "the pilot solve of grids.optimized: the model's x0 prediction is not finite (NaN or inf); check the model"
        )
    return out


def _divided_difference_rms(x0: Tensor, ell: Tensor, order: int) -> Tensor:
    """RMS over samples and coordinates of the ``order``-th divided difference of x0 in ell (M + 1 - order values)."""
    d = x0
    for k in range(1, order + 1):
        h = (ell[k:] - ell[:-k]).reshape(-1, 1, 1)
        d = (d[1:] - d[:-1]) / h
    return d.pow(2).mean(dim=(1, 2)).sqrt() * math.factorial(order)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x (xp increasing), constant beyond the ends."""
    x = x.clamp(float(xp[0]), float(xp[-1]))
    j = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1)
    w = (x - xp[j - 1]) / (xp[j] - xp[j - 1])
    return fp[j - 1] + w * (fp[j] - fp[j - 1])


GRIDS = {"uniform": uniform, "quadratic": quadratic, "log_snr": log_snr, "karras": karras}


def make_grid(kind: str | Callable[..., Tensor], sde: LinearSDE, steps: int, **kwargs: Any) -> Tensor:
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
def _as_grid_tensor(grid: Any, source: str) -> Tensor:
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


def validate_grid(grid: Tensor | Sequence[float], sde: LinearSDE, *, source: str = "grid", hint: str = "") -> Tensor:
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


def resolve_grid(
    grid: str | Callable[..., Tensor] | Tensor | Sequence[float] | None,
    sde: LinearSDE,
    steps: int | None = None,
    *,
    default: str = "uniform",
    adaptive: bool = False,
) -> Tensor:
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
