"""The integrator protocol: a small stateless object that precomputes per-grid
coefficients once (``init``) and advances a state by one grid interval (``step``).

Conventions (every solver follows them):

* ``init(sde, grid)`` receives the float64 CPU grid (T, ..., t_last) and returns a dict of
  float64 CPU tensors of shape (n_steps,) (or (n_steps, k)); :meth:`Solver.solve` moves
  them to the sample's device once, casting every entry to the sample's dtype except the
  time entries (keys starting with ``"t"``), which stay float64.
* ``step(model, state, i, coefs, *, generator, noise, need_x0)`` advances ``state["x"]``
  from ``grid[i]`` to ``grid[i + 1]``. ``noise=False`` asks a stochastic solver for the
  noiseless mean (the last step when ``denoise=True``). Multistep history lives in the
  state dict, never in the solver. No host-device synchronization inside ``step``.
* Per-step Python values in the coefficients (host lists: which steps end at sigma = 0, a
  multistep order per step) are read at ``[i]`` only: :class:`CompiledStep` hands each call that
  step's value, so a compiled step has a few graphs, not one per step.
* The step loop is written once, :func:`run_steps`, shared by :meth:`Solver.solve` and
  :class:`~sdesolve.GraphSampler`; the non-finite record (:func:`new_record`,
  :func:`record_step`, :func:`first_nonfinite`, :func:`raise_if_bad`) is read once per solve.
* Class attributes: ``order`` (deterministic convergence order, or weak order for SDE
  solvers), ``strong_order``, ``nfe_per_step``, ``stochastic``, ``default_grid``, and
  ``adaptive`` (True for solvers that choose their own steps and override :meth:`Solver.solve`,
  e.g. ``ODE("dopri5")``; ``sample()`` then needs no ``steps``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import Tensor

from .._validate import describe
from ..model import with_time_tables

if TYPE_CHECKING:
    from ..model import ScoreModel
    from ..sde.base import LinearSDE

__all__ = ["Solver", "NonFiniteError", "CompiledStep"]


class NonFiniteError(FloatingPointError):
    """Raised when a sampler produced NaN or inf; the message names the first bad step."""


class Solver:
    order: float = 1.0
    strong_order: float | None = None
    nfe_per_step: int = 1
    stochastic: bool = False
    default_grid: str = "uniform"
    adaptive: bool = False

    # ------------------------------------------------------------- interface
    def check(self, sde: LinearSDE) -> None:
        """Raise ValueError if this solver does not apply to ``sde``."""

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        """Per-step coefficients (float64, host). The base gives the step's two times."""
        return {"t": grid[:-1].clone(), "t_next": grid[1:].clone()}

    def init_state(self, x: Tensor, coefs: dict[str, Tensor]) -> dict[str, Any]:
        return {"x": x}

    def step(
        self,
        model: ScoreModel,
        state: dict,
        i: int,
        coefs: dict,
        *,
        generator: GeneratorLike = None,
        noise: bool = True,
        need_x0: bool = False,
    ) -> dict:
        raise NotImplementedError

    def nfe(self, n_steps: int) -> int:
        """Network evaluations for a solve of ``n_steps`` steps."""
        return self.nfe_per_step * n_steps

    # ------------------------------------------------------------- driving loop
    def solve(
        self,
        sde: LinearSDE,
        model: ScoreModel,
        x: Tensor,
        grid: Tensor,
        *,
        generator: GeneratorLike = None,
        denoise: bool = True,
        callback: Callable[[dict], None] | None = None,
        progress: bool = False,
        check_finite: bool = True,
    ) -> Tensor:
        """Integrate from ``grid[0]`` to ``grid[-1]`` starting at ``x`` (fixed steps).

        Args:
            sde, model: the process and its :class:`~sdesolve.ScoreModel`.
            x: the state at ``grid[0]``, shape (B, *event).
            grid: the validated float64 CPU grid (T ... t_last).
            generator, denoise, callback, progress, check_finite: as in :func:`sdesolve.sample`.

        Inside :func:`compiling` (``sample(..., compile=...)``) every step goes through
        :meth:`compiled_step`.

        Returns:
            the state at ``grid[-1]``. Raises :class:`NonFiniteError` naming the first step whose
            state held NaN or inf (one device-side record, read once after the loop).
        """
        self.check(sde)
        coefs = _to_device(self.init(sde, grid), x)
        n = grid.numel() - 1
        record = new_record(n, x.device, x.dtype) if check_finite else None
        indices = range(n)
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, total=n, desc=type(self).__name__)
        on_step = None
        if callback is not None:

            def on_step(i: int, state: dict) -> None:
                t, t_next = float(grid[i]), float(grid[i + 1])
                callback({"i": i, "t": t, "t_next": t_next, "x": state["x"], "x0": state.get("x0")})

        options = _COMPILE.get()
        step = None if options is None else self.compiled_step(**options)
        state = run_steps(
            self, model, self.init_state(x, coefs), coefs, n,
            generator=generator, denoise=denoise, record=record, on_step=on_step, indices=indices, step=step,
        )  # fmt: skip
        if record is not None:
            raise_if_bad(first_nonfinite(record), grid)
        return state["x"]

    def compiled_step(self, **options: Any) -> CompiledStep:
        """This solver's :meth:`step` under ``torch.compile(**options)``, built once per set of options.

        The returned :class:`CompiledStep` is called like :meth:`step` and gives its results
        (bitwise with ``backend="aot_eager"``; :func:`sdesolve.sample`'s ``compile=``).
        """
        cache = self.__dict__.setdefault("_compiled_steps", {})
        key = repr(sorted(options.items()))
        if key not in cache:
            cache[key] = CompiledStep(self, **options)
        return cache[key]

    def __getstate__(self) -> dict[str, Any]:
        # compiled steps are rebuilt on demand: a copy or a pickle of the solver leaves them behind
        return {k: v for k, v in self.__dict__.items() if k != "_compiled_steps"}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def steps_into_zero(sde: LinearSDE, grid: Tensor) -> list[bool]:
    """Which steps of ``grid`` end where sigma = 0, as a host list (a solver branches on it with no sync)."""
    return [bool(z) for z in torch.exp(sde._log_sigma(grid[1:])) == 0.0]


def run_steps(
    solver: Solver,
    model: ScoreModel,
    state: dict,
    coefs: dict,
    n: int,
    *,
    generator: GeneratorLike | Any = None,
    denoise: bool = True,
    record: Tensor | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    indices: Iterable[int] | None = None,
    step: Callable[..., dict] | None = None,
) -> dict:
    """The one fixed-step loop, shared by :meth:`Solver.solve` and :class:`~sdesolve.GraphSampler`.

    Takes ``n`` steps of ``solver`` from ``state`` (``indices``, default ``range(n)``, may wrap the
    step indices in a progress bar). The last step is noiseless when ``denoise``. After each step
    the state's largest magnitude goes into ``record[i]`` (:func:`record_step`) and
    ``on_step(i, state)`` is called (the solver then also returns its x0 estimate in
    ``state["x0"]``). The network's time input at every time of the grid is computed once, before
    the first step (:func:`~sdesolve.model.with_time_tables`). ``step`` replaces ``solver.step``
    (a :class:`CompiledStep`). No host-device synchronization: the loop can be captured in a CUDA
    graph.
    """
    need_x0 = on_step is not None
    if step is None:
        step = solver.step
        times = [v for k, v in coefs.items() if k.startswith("t") and isinstance(v, Tensor)]
        model = with_time_tables(model, times, state["x"])  # the network's time input, once per grid
    rows = record.unbind(0) if record is not None else ()  # record[i], selected once per solve
    for i in range(n) if indices is None else indices:
        noise = not (denoise and i == n - 1)
        state = step(model, state, i, coefs, generator=generator, noise=noise, need_x0=need_x0)
        if record is not None:
            _record_into(rows[i], state["x"])
        if on_step is not None:
            on_step(i, state)
    return state


# ---------------------------------------------------------------- torch.compile
class CompiledStep:
    """``solver.step`` compiled with ``torch.compile(solver.step, **options)``, called like the step.

    Two things of the eager step do not go into a graph, and are handled here, around each call:

    * the random draws: ``torch.randn(..., generator=g)`` cannot be traced, but a draw from the
      default generator can. The compiled step draws from the default generator of the state's
      device, which takes ``generator``'s state before the call and hands the advanced state back
      after it (the default generator's own state is restored): the draws of the eager step with
      ``generator``, bitwise with ``backend="aot_eager"`` (inductor draws with its own random
      kernels, seeded from it: the same law, reproducible per seed, other numbers unless
      ``torch._inductor.config.fallback_random = True``; the draws are then made in the eager
      step's order whatever the backend's scheduler does: :class:`_OrderedDraws`). One ``torch.Generator`` or None; a
      list of per-sample generators draws sample by sample, outside any graph: ValueError. The
      network must then not draw from the default generator itself.
    * per-step host values (the Python lists of a solver's coefficients, e.g. which steps end at
      sigma = 0 or a multistep method's order per step): indexed by a traced step index they
      would make one graph per step; each call hands the step this step's value under the same
      key instead (read at ``[i]``, as every solver reads them), so the graphs are one per
      distinct set of values (two or three per solve).

    The step index ``i`` becomes a dynamic integer after the first recompilation, so a solve
    compiles a few graphs (the first step, the others, a noiseless last step), not one per step.
    """

    def __init__(self, solver: Solver, **options: Any) -> None:
        self.solver = solver
        self.options = dict(options)
        self._step = torch.compile(solver.step, **options)

    def __call__(
        self,
        model: ScoreModel,
        state: dict,
        i: int,
        coefs: dict,
        *,
        generator: GeneratorLike = None,
        noise: bool = True,
        need_x0: bool = False,
    ) -> dict:
        at_i = {k: _AtStep(v[i]) if isinstance(v, list) else v for k, v in coefs.items()}
        device = state["x"].device
        with _drawing_from(generator, device):
            draws: Any = self._draws(device)  # a noise source: randn_like calls its draw(x)
            return self._step(model, state, i, at_i, generator=draws, noise=noise, need_x0=need_x0)

    def _draws(self, device: torch.device) -> _OrderedDraws | None:
        """The step's noise source: draws in program order (:class:`_OrderedDraws`), or None (plain draws
        from the default generator) where the backend generates its own random numbers (inductor without
        ``fallback_random``: its own kernels, seeded from the default generator; the order is immaterial)."""
        from torch._inductor import config as inductor_config

        backend = self.options.get("backend", "inductor")
        fallback = (self.options.get("options") or {}).get(
            "fallback_random",
            getattr(inductor_config, "fallback_random", False),  # an entry can be hidden
        )
        if backend == "inductor" and not fallback:
            return None
        tokens = self.__dict__.setdefault("_tokens", {})
        if device not in tokens:
            tokens[device] = _OrderedDraws(torch.zeros((), device=device))
        return tokens[device]

    def __repr__(self) -> str:
        return f"CompiledStep({self.solver!r}, {self.options})"


@torch.library.custom_op("sdesolve::randn_in_order", mutates_args=("order",))
def _randn_in_order(order: Tensor, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.randn(shape)`` from the default generator; declared to mutate ``order`` (it does not touch it)."""
    return torch.randn(shape, dtype=dtype, device=device)


@_randn_in_order.register_fake
def _(order: Tensor, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


class _OrderedDraws:
    """The noise source of a compiled step (``randn_like`` calls :meth:`draw`): the eager step's draws, in its order.

    A draw from the default generator reads and advances hidden state, which a graph does not see: a
    backend may run two draws of one step in either order (inductor's scheduler with
    ``fallback_random=True`` orders them by data dependencies alone before torch 2.12, pytorch issue
    181136: the likely cause of the predictor-corrector step, three draws per step, off by O(1) from
    eager under torch 2.11 on CUDA). Each draw here
    is one op declared to mutate the same token tensor, so every draw depends on the one before it and
    any backend keeps the program order; the numbers are ``torch.randn``'s, bitwise.
    """

    __slots__ = ("order",)

    def __init__(self, order: Tensor) -> None:
        self.order = order

    def draw(self, x: Tensor) -> Tensor:
        return _randn_in_order(self.order, list(x.shape), x.dtype, x.device)


class _AtStep:
    """A per-step host list seen at one step: ``[i]`` gives that step's value (a graph constant)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __getitem__(self, index: Any) -> Any:
        return self.value


_COMPILE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("sdesolve_compile", default=None)


@contextlib.contextmanager
def compiling(options: bool | Mapping[str, Any]) -> Iterator[None]:
    """Fixed-step solves inside take their steps through :meth:`Solver.compiled_step` (``sample``'s ``compile=``).

    ``options``: True (``torch.compile``'s defaults), a dict of ``torch.compile`` options (e.g.
    ``{"backend": "aot_eager"}``), or False (eager steps).
    """
    token = _COMPILE.set(None if options is False else ({} if options is True else dict(options)))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _COMPILE.reset(token)


@contextlib.contextmanager
def _drawing_from(generator: GeneratorLike, device: torch.device) -> Iterator[None]:
    """The default generator of ``device`` draws with ``generator``'s state inside (restored after)."""
    if generator is None:
        yield
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            "a compiled step takes one torch.Generator or None: per-sample generators (a list) draw sample by "
            "sample outside any graph; pass compile=False for them"
        )
    default = torch.default_generator if device.type == "cpu" else torch.cuda.default_generators[device.index or 0]
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the samples are on {device}")
    saved = default.get_state()
    default.set_state(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(default.get_state())
        default.set_state(saved)


# ---------------------------------------------------------------- non-finite record
# One reduction per step into a preallocated record, read once after the loop: no per-step
# synchronization. The entry is max |x| (one kernel, written in place): NaN if x holds a NaN
# (the max propagates NaN), inf if it holds an inf, finite otherwise (the largest magnitude of
# finite numbers is one of them: it cannot overflow, in any dtype).
def new_record(n: int, device: torch.device | str | None, dtype: torch.dtype = torch.float64) -> Tensor:
    """A per-step non-finite record of ``n`` entries on ``device`` (``dtype``: the states', to save a cast)."""
    return torch.zeros(n, dtype=dtype, device=device)


def record_step(record: Tensor, i: int, x: Tensor) -> None:
    """Write max |x| (non-finite iff x holds NaN or inf) into ``record[i]``, in the record's dtype."""
    _record_into(record[i], x)


def _record_into(entry: Tensor, x: Tensor) -> None:
    """Write max |x| into the 0-d ``entry`` (one reduction kernel when the dtypes agree)."""
    if entry.dtype == x.dtype:
        torch.linalg.vector_norm(x, math.inf, out=entry)
    else:
        torch.linalg.vector_norm(x, math.inf, dtype=entry.dtype, out=entry)


def first_nonfinite(record: Tensor) -> Tensor:
    """Index of the first non-finite entry of a per-step record, or -1 (a 0-d device tensor)."""
    bad = ~torch.isfinite(record)
    n = record.numel()
    first = torch.where(bad, torch.arange(n, device=record.device), n).min()
    return torch.where(first < n, first, -1)


def raise_if_bad(bad: Tensor, grid: Tensor) -> None:
    """Read the device-side record of the first non-finite step (one sync, after the loop)."""
    b = int(bad)
    if b >= 0:
        raise NonFiniteError(
            f"non-finite values (NaN or inf) first appeared at step {b}, from t = {float(grid[b]):.6g} "
            f"to t = {float(grid[b + 1]):.6g}; check the model's output there, or pass check_finite=False"
        )


def _to_device(coefs: dict[str, Tensor], x: Tensor) -> dict[str, Tensor]:
    """Move host coefficients to x's device: float64 for time keys (``"t..."``), x's dtype otherwise.

    On CUDA the copies go through pinned memory with ``non_blocking=True``, so even the one-off
    upload per grid does not synchronize the host with the device.
    """
    cuda = x.device.type == "cuda"
    out: dict[str, Tensor] = {}
    for k, v in coefs.items():
        if isinstance(v, Tensor):
            dtype = torch.float64 if k.startswith("t") else x.dtype
            if cuda and v.device.type == "cpu":
                out[k] = v.to(dtype=dtype).pin_memory().to(device=x.device, non_blocking=True)
            else:
                out[k] = v.to(device=x.device, dtype=dtype)
            if k.startswith("t") and (out[k] is v or out[k]._base is not None or not out[k].is_contiguous()):
                out[k] = out[k].contiguous().clone()  # a time vector of its own (with_time_tables' key)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------- random draws
#: what every ``generator=`` argument takes: one generator for the whole batch, a list of B
#: generators (sample i's draws from generator i alone: diffusers' convention), or None
GeneratorLike = Union[torch.Generator, Sequence[torch.Generator], None]


def check_generator(
    generator: GeneratorLike,
    *,
    batch: int | None = None,
    device: torch.device | str | None = None,
    name: str = "generator",
) -> torch.Generator | list[torch.Generator] | None:
    """Check a ``generator=`` argument; return None, the generator, or the list of per-sample ones.

    A list (or tuple) must hold ``batch`` torch.Generators (when ``batch`` is given); every
    generator must be on the type of ``device`` (when given). TypeError for a wrong type,
    ValueError for a wrong length or device, each naming ``name``.
    """
    if generator is None:
        return None
    expected = "a torch.Generator, a list of torch.Generators (one per sample) or None"
    if isinstance(generator, torch.Generator):
        gens = [generator]
    elif isinstance(generator, (list, tuple)):
        gens = list(generator)
        for k, g in enumerate(gens):
            if not isinstance(g, torch.Generator):
                raise TypeError(f"{name} must be {expected}, got {describe(g)} at {name}[{k}]")
        if batch is not None and len(gens) != batch:
            raise ValueError(
                f"{name} must be a list of one torch.Generator per sample ({batch} for a batch of {batch}), "
                f"got a list of {len(gens)}"
            )
    else:
        raise TypeError(f"{name} must be {expected}, got {describe(generator)}")
    if device is not None:
        dev = torch.device(device)
        for k, g in enumerate(gens):
            if g.device.type != dev.type:
                at = f"[{k}]" if isinstance(generator, (list, tuple)) else ""
                raise ValueError(
                    f"{name}{at} is on {g.device} but the samples are on {dev}; pass a generator on {dev.type}"
                )
    return generator if isinstance(generator, torch.Generator) else gens


def generator_device(generator: GeneratorLike) -> torch.device | None:
    """The device of a generator, or of the first of a list (None for None)."""
    if generator is None:
        return None
    return generator.device if isinstance(generator, torch.Generator) else generator[0].device


def draw(
    kind: str,
    shape: Sequence[int] | torch.Size,
    generator: GeneratorLike,
    *,
    device: torch.device | str | None,
    dtype: torch.dtype,
    batch_dim: int = 0,
) -> Tensor:
    """Random numbers of ``shape``: ``"normal"`` N(0, 1), ``"uniform"`` U[0, 1) or ``"rademacher"`` (+-1).

    With a list of generators, the slice ``i`` along ``batch_dim`` comes from ``generator[i]``
    alone, drawn as that generator would draw it for a batch of one (so the draws of a sample do
    not depend on its batch: diffusers' ``randn_tensor`` convention); with one generator (or
    None) the whole tensor is one draw.
    """
    shape = tuple(shape)
    if isinstance(generator, (list, tuple)):
        one = shape[:batch_dim] + shape[batch_dim + 1 :]
        return torch.stack([draw(kind, one, g, device=device, dtype=dtype) for g in generator], dim=batch_dim)
    if kind == "normal":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)  # type: ignore[arg-type]  # a list returned above
    if kind == "uniform":
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)  # type: ignore[arg-type]  # a list returned above
    r = torch.randint(0, 2, shape, generator=generator, device=device)  # type: ignore[arg-type]
    return (2 * r - 1).to(dtype)


def randn_like(x: Tensor, generator: Any) -> Tensor:
    """Standard normal noise of x's shape, dtype and device from ``generator``: every solver's draw.

    ``generator`` is a ``torch.Generator`` (or None), a list of B generators (sample i's noise from
    generator i: :func:`draw`), or a noise source with a ``draw(x)`` method (:class:`~sdesolve.GraphSampler`'s
    counter-based noise for a list of generators, generated inside its captured graph).
    """
    if generator is None or isinstance(generator, (torch.Generator, list, tuple)):
        return draw("normal", x.shape, generator, device=x.device, dtype=x.dtype)
    return generator.draw(x)
