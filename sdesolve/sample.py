"""``sample``: the one entry point that combines a process, a model, a grid and a solver.

As torchsde's ``sdeint``, it is three calls: check the arguments (:func:`_check_args`), resolve
the grid and the initial state (:func:`~sdesolve.grids.resolve_grid`, :func:`_initial_state`),
integrate (:func:`_integrate`). The argument checks here are shared with
:class:`~sdesolve.GraphSampler`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._utils import batch_time
from ._validate import check_bool, check_callable, check_int, check_tensor, describe
from .grids import _check_sde, resolve_grid
from .model import as_model, bind_kwargs
from .solvers.base import GeneratorLike, NonFiniteError, Solver, check_generator, compiling, generator_device

if TYPE_CHECKING:
    from .model import ScoreLike, ScoreModel
    from .sde.base import LinearSDE

__all__ = ["sample"]


def sample(
    sde: LinearSDE,
    model: ScoreLike,
    shape: Sequence[int] | None = None,
    *,
    solver: Solver,
    steps: int | None = None,
    grid: str | Callable[..., Tensor] | Tensor | Sequence[float] | None = None,
    x_T: Tensor | None = None,
    generator: GeneratorLike = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    denoise: bool = True,
    final_x0: bool = False,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    check_finite: bool = True,
    model_kwargs: dict | None = None,
    compile: bool | dict = False,
) -> Tensor:
    """Draw samples by integrating the reverse dynamics of ``sde`` under ``model``.

    Integration runs from ``grid[0]`` (T by default) down to the grid's last time
    (``sde.t_min`` by default); there is no extra jump to t = 0.

    Args:
        sde: the forward process (:class:`~sdesolve.sde.LinearSDE`).
        model: a :class:`~sdesolve.ScoreModel` of ``sde``, or a callable score ``s(x, t)``.
        shape: (B, *event); may be omitted when ``x_T`` is given.
        solver: the integrator, e.g. ``EulerMaruyama()``, ``DDIM()``, ``ODE("heun")``.
        steps: number of steps (an int >= 1) on the solver's default grid or on ``grid``
            (adaptive solvers need none).
        grid: a grid name (``"uniform"``, ``"quadratic"``, ``"log_snr"``, ``"karras"``, with
            ``steps``), a callable ``grid(sde, steps)`` returning ``steps + 1`` times, or a
            strictly decreasing tensor of times inside [t_min, T] (``steps``, if given, must be its
            number of intervals). Every grid is validated (:func:`~sdesolve.grids.validate_grid`).
        x_T: the state at ``grid[0]``, replacing the prior draw (a deterministic solver is
            then a fixed map of x_T). Required when the grid does not start at T.
        generator: a ``torch.Generator`` for every random draw (same seed, same samples), or a
            list of B generators, one per sample (diffusers' convention): sample i's prior draw
            and every noise draw of the solver come from ``generator[i]`` alone, so any split of
            a batch gives bitwise the same samples (except ``PredictorCorrector`` with the
            ``step_rule="batch"`` corrector, whose Langevin step size is a batch mean by design).
        device, dtype: of the samples (default: x_T's, else the generator's device and float32).
        denoise: stochastic solvers take their last step without noise (return the mean), as score_sde
            does; the output's variance then lacks that step's noise (about g^2 dt: 0.8 % of a 0.25
            variance after 100 VP steps). ``denoise=False`` returns the law at the grid's last time.
        final_x0: after the last step, return the model's x0 prediction there (Tweedie's
            denoising jump; one extra network evaluation, none where sigma = 0 at the last
            time: x0 = x / alpha there). Checked for NaN or inf as the steps are. Off by default.
        callback: called after each step with a dict (i, t, t_next, x, x0): x is the state at
            t_next, x0 the model's denoised estimate at (x entering the step, t) (None for
            adaptive ODE solvers, which report the state at every grid time). The callback sees
            the states as they come: a non-finite state is announced by NonFiniteError after
            the loop (the record is read once), not before the callback receives it.
        progress: show a tqdm progress bar.
        check_finite: raise :class:`~sdesolve.solvers.NonFiniteError` naming the first step
            whose state held NaN or inf (recorded on the device, read once at the end), or the
            final x0 step.
        model_kwargs: extra keyword inputs of the network (class labels, encoder hidden states,
            ...), bound on top of the model's own (:meth:`~sdesolve.ScoreModel.with_kwargs`): a
            tensor with a leading dimension has one row per sample (or 1, shared); other values
            are passed unchanged. A :class:`~sdesolve.GuidedModel` takes them as its conditional inputs.
        compile: take every step through ``torch.compile`` (fixed-step solvers): True for
            ``torch.compile``'s defaults (inductor), or a dict of its options (e.g.
            ``{"backend": "aot_eager"}``, ``{"mode": "max-autotune"}``). The step, not the loop, is
            compiled, once per solver and options (:class:`~sdesolve.solvers.base.CompiledStep`);
            ``generator`` must be one ``torch.Generator`` or None. With ``backend="aot_eager"`` the
            samples are bitwise those of eager steps.

    Raises TypeError for an argument of the wrong type and ValueError for a bad value, each
    naming the argument.
    """
    _check_args(sde, solver, shape, x_T, generator, device, dtype, callback)
    denoise, final_x0 = check_bool(denoise, "denoise"), check_bool(final_x0, "final_x0")
    progress, check_finite = check_bool(progress, "progress"), check_bool(check_finite, "check_finite")
    score_model = bind_kwargs(as_model(model, sde), model_kwargs)
    compile = _check_compile(compile, solver, generator)
    solver.check(sde)
    grid = resolve_grid(grid, sde, steps, default=solver.default_grid, adaptive=solver.adaptive)
    x = _initial_state(sde, grid, shape, x_T, generator, device, dtype)
    with compiling(compile):
        return _integrate(
            sde, score_model, solver, x, grid, generator=generator, denoise=denoise, final_x0=final_x0,
            callback=callback, progress=progress, check_finite=check_finite,
        )  # fmt: skip


# ---------------------------------------------------------------- argument checks
def _check_args(
    sde: Any, solver: Any, shape: Any, x_T: Any, generator: Any, device: Any, dtype: Any, callback: Any
) -> None:
    """Types and values of sample()'s arguments that need no grid (TypeError / ValueError)."""
    _check_sde(sde)
    _check_solver(solver)
    if shape is not None:
        _check_shape(shape)
    if x_T is not None:
        check_tensor(x_T, "x_T", min_dim=1)
    if dtype is not None:
        _check_dtype(dtype)
    if device is not None:
        _check_device(device)
    if callback is not None:
        check_callable(callback, "callback", "a callable taking one dict, or None")
    batch = x_T.shape[0] if x_T is not None else (_check_shape(shape)[0] if shape is not None else None)
    _check_generator(generator, None, batch=batch)


def _check_compile(compile: Any, solver: Solver, generator: Any) -> bool | dict:
    """False, True or a dict of ``torch.compile`` options (str keys), for a fixed-step solver and one generator."""
    if not isinstance(compile, dict) and not check_bool(compile, "compile"):
        return False
    for key in compile if isinstance(compile, dict) else ():
        if not isinstance(key, str):
            raise TypeError(
                f"compile must be True, False or a dict of torch.compile options (str keys), got key {key!r}"
            )
    if solver.adaptive:
        raise ValueError(f"compile applies to fixed-step solvers; {type(solver).__name__} is adaptive")
    if isinstance(generator, (list, tuple)):
        raise ValueError("compile takes one torch.Generator or None, not a list of per-sample generators")
    return dict(compile) if isinstance(compile, dict) else True


def _check_solver(solver: Any) -> Solver:
    if not isinstance(solver, Solver):
        raise TypeError(
            f"solver must be a sdesolve Solver instance (e.g. EulerMaruyama()), got {describe(solver)} "
            f"({type(solver).__name__})"
        )
    return solver


def _check_shape(shape: Any) -> tuple[int, ...]:
    """(B, *event) with every size an int >= 1 (B = 0, an empty batch, is refused)."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__") or isinstance(shape, torch.Tensor):
        raise TypeError(f"shape must be a tuple of ints (B, *event), got {describe(shape)} ({type(shape).__name__})")
    dims = tuple(check_int(s, f"shape[{k}]") for k, s in enumerate(shape))
    if len(dims) < 1:
        raise ValueError("shape must be (B, *event) with at least the batch size B, got ()")
    if dims[0] < 1:
        raise ValueError(
            f"shape must be (B, *event) with batch size B >= 1 (an empty batch has nothing to sample), got {dims}"
        )
    if any(d < 1 for d in dims):
        raise ValueError(f"shape must be (B, *event) with every size >= 1, got {dims}")
    return dims


def _check_dtype(dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {describe(dtype)}")
    return dtype


def _check_device(device: Any) -> torch.device:
    if not isinstance(device, (str, torch.device, int)) or isinstance(device, bool):
        raise TypeError(f"device must be a torch.device, a string or an int, got {describe(device)}")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device must name a torch device (e.g. 'cpu', 'cuda:0'), got {device!r}") from e


def _check_generator(generator: Any, device: torch.device | str | None, *, batch: int | None = None) -> None:
    """None, a torch.Generator or a list of ``batch`` of them; on ``device``'s type when ``device`` is given."""
    check_generator(generator, batch=batch, device=device)


# ---------------------------------------------------------------- initial state
def _initial_state(
    sde: LinearSDE,
    grid: Tensor,
    shape: Sequence[int] | None,
    x_T: Tensor | None,
    generator: GeneratorLike,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    """x_T as given (checked against shape, device, dtype), or a prior draw when the grid starts at T."""
    if x_T is not None:
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}; pass one of them")
        if device is not None and torch.device(device) != x_T.device:
            raise ValueError(f"x_T is on {x_T.device} but device={device}; pass one of them")
        if dtype is not None and dtype != x_T.dtype:
            raise ValueError(f"x_T has dtype {x_T.dtype} but dtype={dtype}; pass one of them")
        x = x_T
    else:
        if shape is None:
            raise ValueError("shape is required without x_T: pass shape=(B, *event) or x_T")
        if float(grid[0]) != float(sde.T):
            raise ValueError(
                f"x_T is required: the grid starts at t = {float(grid[0]):g} < T = {float(sde.T):g}; "
                f"pass x_T, the state at grid[0]"
            )
        if device is None:
            device = generator_device(generator)
        _check_generator(generator, device, batch=shape[0])
        x = _prior_sample(sde, tuple(shape), generator, device, dtype or torch.float32)
    _check_generator(generator, x.device, batch=x.shape[0])
    return x


def _prior_sample(
    sde: LinearSDE, shape: tuple, generator: GeneratorLike, device: torch.device | str | None, dtype: torch.dtype
) -> Tensor:
    """``sde.prior_sample``; with a list of generators, sample i drawn by ``generator[i]`` as a batch of one."""
    if isinstance(generator, list):
        one = (1,) + shape[1:]
        return torch.cat([sde.prior_sample(one, generator=g, device=device, dtype=dtype) for g in generator])
    return sde.prior_sample(shape, generator=generator, device=device, dtype=dtype)  # type: ignore[arg-type]  # a list returned above


# ---------------------------------------------------------------- integration
def _integrate(
    sde: LinearSDE, model: ScoreModel, solver: Solver, x: Tensor, grid: Tensor, *, final_x0: bool, **kw: Any
) -> Tensor:
    """The solver's solve, then (``final_x0``) the model's x0 at the last time, both checked."""
    with torch.no_grad():  # sampling builds no autograd graph (call solver.solve to differentiate)
        out = solver.solve(sde, model, x, grid, **kw)
        if final_x0:
            out = _final_x0(sde, model, out, grid, check_finite=kw["check_finite"])
    return out


def _final_x0(sde: LinearSDE, model: ScoreModel, x: Tensor, grid: Tensor, *, check_finite: bool) -> Tensor:
    """The model's x0 prediction at the grid's last time (x / alpha without evaluation where sigma = 0)."""
    t = grid[-1:]
    if float(sde._log_sigma(t)) == float("-inf"):  # sigma = 0: the state is alpha x0; no evaluation there
        x0 = x / torch.exp(sde._log_alpha(t)).to(device=x.device, dtype=x.dtype)
    else:
        x0 = model.x0(x, batch_time(float(t), x, dtype=torch.float64))
    if check_finite and not bool(torch.isfinite(x0).all()):
        raise NonFiniteError(
            f"non-finite values (NaN or inf) in the final x0 step (the model's x0 prediction at t = "
            f"{float(t):.6g}, after {grid.numel() - 1} finite steps); check the model's output there, "
            f"or pass check_finite=False"
        )
    return x0
