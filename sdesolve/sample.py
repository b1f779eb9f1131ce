"""``sample``: the one entry point that combines a process, a model, a grid and a solver."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._utils import batch_time
from .grids import make_grid, validate_grid
from .model import as_model
from .solvers.base import Solver

__all__ = ["sample"]


def sample(
    sde,
    model,
    shape=None,
    *,
    solver: Solver,
    steps: int | None = None,
    grid=None,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype | None = None,
    denoise: bool = True,
    final_x0: bool = False,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """Draw samples by integrating the reverse dynamics of ``sde`` under ``model``.

    Integration runs from ``grid[0]`` (T by default) down to the grid's last time
    (``sde.t_min`` by default); there is no extra jump to t = 0.

    Args:
        sde: the forward process (:class:`~sdesolve.sde.LinearSDE`).
        model: a :class:`~sdesolve.ScoreModel` of ``sde``, or a callable score ``s(x, t)``.
        shape: (B, *event); may be omitted when ``x_T`` is given.
        solver: the integrator, e.g. ``EulerMaruyama()``, ``DDIM()``, ``ODE("heun")``.
        steps: number of steps on the solver's default grid (adaptive solvers need none).
        grid: a grid name (``"uniform"``, ``"quadratic"``, ``"log_snr"``, ``"karras"``, with
            ``steps``) or a strictly decreasing tensor of times inside [t_min, T].
        x_T: the state at ``grid[0]``, replacing the prior draw (a deterministic solver is
            then a fixed map of x_T). Required when the grid does not start at T.
        generator: a ``torch.Generator`` for every random draw; same seed, same samples.
        device, dtype: of the samples (default: x_T's, else the generator's device and float32).
        denoise: stochastic solvers take their last step without noise (return the mean).
        final_x0: after the last step, return the model's x0 prediction there (Tweedie's
            denoising jump; one extra network evaluation). Off by default.
        callback: called after each step with a dict (i, t, t_next, x, x0): x is the state at
            t_next, x0 the model's denoised estimate at (x entering the step, t) (None for
            adaptive ODE solvers, which report the state at every grid time).
        progress: show a tqdm progress bar.
        check_finite: raise :class:`~sdesolve.solvers.NonFiniteError` naming the first step
            whose state held NaN or inf (recorded on the device, read once at the end).
    """
    if not isinstance(solver, Solver):
        raise TypeError(
            f"solver must be a sdesolve Solver instance (e.g. EulerMaruyama()), got {type(solver).__name__}"
        )
    score_model = as_model(model, sde)
    solver.check(sde)

    # --- grid
    if grid is None or isinstance(grid, str) or callable(grid) and not isinstance(grid, Tensor):
        if steps is None and getattr(solver, "adaptive", False):
            steps = 1  # an adaptive solver needs only the two ends
        if steps is None:
            raise ValueError("pass steps (the number of steps) or an explicit grid tensor")
        g = make_grid(grid if grid is not None else solver.default_grid, sde, steps)
    else:
        g = validate_grid(grid, sde)
        if steps is not None and steps != g.numel() - 1:
            raise ValueError(f"steps={steps} disagrees with the grid's {g.numel() - 1} intervals; pass one of them")

    # --- initial state
    if x_T is not None:
        if not isinstance(x_T, Tensor) or not x_T.is_floating_point():
            raise TypeError("x_T must be a floating-point tensor")
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}")
        if device is not None and torch.device(device) != x_T.device:
            raise ValueError(f"x_T is on {x_T.device} but device={device}")
        if dtype is not None and dtype != x_T.dtype:
            raise ValueError(f"x_T has dtype {x_T.dtype} but dtype={dtype}")
        x = x_T
    else:
        if shape is None:
            raise ValueError("pass shape=(B, *event) or x_T")
        if abs(float(g[0]) - float(sde.T)) > 1e-9:
            raise ValueError(f"the grid starts at t = {float(g[0]):g} < T; pass x_T, the state at that time")
        if device is None and generator is not None:
            device = generator.device
        x = sde.prior_sample(shape, generator=generator, device=device, dtype=dtype or torch.float32)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"shape must be (B, *event) with B >= 1, got {tuple(x.shape)}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device} but the samples are on {x.device}")

    with torch.no_grad():  # sampling builds no autograd graph (call solver.solve to differentiate)
        out = solver.solve(
            sde,
            score_model,
            x,
            g,
            generator=generator,
            denoise=denoise,
            callback=callback,
            progress=progress,
            check_finite=check_finite,
        )
    if final_x0:
        with torch.no_grad():
            out = score_model.x0(out, batch_time(float(g[-1]), out, dtype=torch.float64))
    return out
