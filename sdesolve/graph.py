"""``GraphSampler``: a fixed-step sampler captured once in a CUDA graph, replayed per call.

A diffusion sampler at small batch or with a cheap network spends most of its time launching
small kernels from Python. Every fixed-step solver here is free of host-device
synchronization, so its whole loop (all steps, all network calls) can be recorded once in a
CUDA graph and replayed with a single launch. The graph reads the start state and the noise
from static buffers, which each call fills:

1. ``x_T`` (given, or drawn from the prior with ``generator``: one kernel);
2. every noise draw of the solve, pre-drawn as one block with ``generator`` (one kernel);
3. replay; the non-finite record is read once (one synchronization) unless disabled.

One sampler may be called from several threads: a lock makes fill, replay and copy-out one
unit, and every call returns a new tensor (never the static output buffer).

On a CPU (or with ``use_graph=False``) the same buffers drive the plain loop, so results are
the same function of (x_T, noise block) on every device. Stochastic samplers therefore draw
their noise in a different order from :func:`sdesolve.sample` with the same seed (one block
instead of step by step): the law is the same, the individual samples are not; deterministic
solvers give the same map of x_T.

The network must be capturable: no host synchronization, no data-dependent Python control
flow, no allocation of new CUDA memory pools during replay (standard CUDA-graph rules).
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from ._cuda_graph import capture_cuda_graph
from ._validate import check_bool, check_int, check_tensor
from .grids import _check_sde, resolve_grid
from .model import as_model, bind_kwargs
from .sample import _check_device, _check_dtype, _check_generator, _check_shape, _check_solver
from .solvers.base import NoiseSource, Solver, _to_device, first_nonfinite, new_record, raise_if_bad, run_steps

__all__ = ["GraphSampler"]


class GraphSampler:
    """Capture ``solver``'s fixed-step loop for ``shape`` once; each call replays it.

    Args:
        sde, model, solver, steps, grid, denoise, check_finite, model_kwargs: as in
            :func:`sdesolve.sample` (the same grid resolver: a name or callable with ``steps``,
            or a tensor of times; per-sample inputs have one row per sample of ``shape``).
        shape: (B, *event) of every call.
        device, dtype: of the samples (default CUDA if available, float32).
        use_graph: capture a CUDA graph (default: on CUDA devices). With False, or on a CPU, the
            plain loop runs on the same static buffers.
        warmup: loop runs before capture (on a side stream), so lazy initializations happen
            outside the graph (at least 1).

    Call as ``sampler(generator=g)`` (prior draw) or ``sampler(x_T=x)``; returns a new tensor.
    Calls from several threads are serialized (one replay at a time).
    Attributes: ``grid``, ``n_noise`` (noise draws per solve), ``nfe`` (network calls per solve).
    """

    def __init__(
        self,
        sde,
        model,
        shape,
        *,
        solver: Solver,
        steps: int | None = None,
        grid=None,
        device=None,
        dtype: torch.dtype = torch.float32,
        denoise: bool = True,
        check_finite: bool = True,
        use_graph: bool | None = None,
        warmup: int = 2,
        model_kwargs: dict | None = None,
    ):
        _check_sde(sde)
        _check_solver(solver)
        if solver.adaptive:
            raise ValueError(
                f"solver {type(solver).__name__} is adaptive: its step count is not fixed, so it cannot be captured; "
                f"pass a fixed-step solver"
            )
        self.shape = _check_shape(shape)
        self.dtype = _check_dtype(dtype)
        self.denoise, self.check_finite = check_bool(denoise, "denoise"), check_bool(check_finite, "check_finite")
        warmup = check_int(warmup, "warmup", minimum=1)
        device = _check_device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.use_graph = (device.type == "cuda") if use_graph is None else check_bool(use_graph, "use_graph")
        if self.use_graph and device.type != "cuda":
            raise ValueError(f"use_graph=True needs a CUDA device, got device={device}")
        self.sde, self.solver = sde, solver
        self.model = bind_kwargs(as_model(model, sde), model_kwargs)
        solver.check(sde)
        self.grid = resolve_grid(grid, sde, steps, default=solver.default_grid)
        self._starts_at_T = float(self.grid[0]) == float(sde.T)
        self._n = self.grid.numel() - 1
        self._lock = threading.Lock()
        self._build(warmup)

    # ------------------------------------------------------------------ internals
    def _build(self, warmup: int) -> None:
        """Static buffers, a dry run counting the noise draws and evaluations, then the capture."""
        self._x = torch.zeros(self.shape, device=self.device, dtype=self.dtype)
        with torch.no_grad():
            self._coefs = _to_device(self.solver.init(self.sde, self.grid), self._x)
            self.n_noise, self.nfe = self._count()
            self._noise = torch.zeros((max(self.n_noise, 1),) + self.shape, device=self.device, dtype=self.dtype)
            self._source = NoiseSource(self._noise)
            self._record = new_record(self._n, self.device) if self.check_finite else None
            self._graph = None
            if self.use_graph:
                self._graph, self._out, _ = capture_cuda_graph(
                    lambda: self._loop(self._source, self._record), device=self.device, warmup=warmup, model=self.model
                )

    def _count(self) -> tuple[int, int]:
        """Noise draws and network calls of one solve, by a dry run (not counted on the model).

        The counts do not depend on the batch size, so the dry run takes one sample; a model that
        cannot run on a batch of one (fixed-size extra inputs, batch statistics) gets the full batch.
        """
        nfe0 = self.model.nfe
        try:
            for x in (self._x[:1], self._x) if self.shape[0] > 1 else (self._x,):
                counter, self.model.nfe = NoiseSource(None), nfe0
                try:
                    self._loop(counter, record=None, x=x)
                    break
                except Exception:
                    if x is self._x:
                        raise
            return counter.count, self.model.nfe - nfe0
        finally:
            self.model.nfe = nfe0  # building it evaluates nothing on the caller's count

    def _loop(self, source: NoiseSource, record: Tensor | None, x: Tensor | None = None) -> Tensor:
        source.reset()
        state = self.solver.init_state(self._x if x is None else x, self._coefs)
        state = run_steps(
            self.solver, self.model, state, self._coefs, self._n, generator=source, denoise=self.denoise, record=record
        )
        return state["x"]

    def _fill(self, x_T: Tensor | None, generator) -> None:
        """Write the start state and the noise block into the static buffers."""
        if x_T is None:
            if not self._starts_at_T:
                raise ValueError(
                    f"x_T is required: the grid starts at t = {float(self.grid[0]):g} < T = {float(self.sde.T):g}; "
                    f"pass x_T, the state at grid[0]"
                )
            self._x.normal_(0.0, float(self.sde.prior_std), generator=generator)
        else:
            self._x.copy_(x_T)
        if self.n_noise:
            self._noise.normal_(generator=generator)

    # ------------------------------------------------------------------ call
    def __call__(self, x_T: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """One solve: from ``x_T`` (or a prior draw with ``generator``), noise drawn with ``generator``."""
        _check_generator(generator, self.device)
        if x_T is not None:
            check_tensor(x_T, "x_T", min_dim=1)
            if tuple(x_T.shape) != self.shape or x_T.dtype != self.dtype or x_T.device != self.device:
                raise ValueError(
                    f"x_T must be a tensor of shape {self.shape}, dtype {self.dtype} on {self.device} (the sampler's), "
                    f"got shape {tuple(x_T.shape)}, dtype {x_T.dtype} on {x_T.device}"
                )
        with self._lock, torch.no_grad():
            self._fill(x_T, generator)
            if self._graph is not None:
                self._graph.replay()
                out = self._out.clone()
                self.model.nfe += self.nfe
            else:
                out = self._loop(self._source, self._record).clone()
            if self._record is not None:
                raise_if_bad(first_nonfinite(self._record), self.grid)
        return out

    def __repr__(self) -> str:
        return (
            f"GraphSampler(solver={self.solver!r}, shape={self.shape}, steps={self._n}, device={self.device}, "
            f"graph={self._graph is not None}, nfe={self.nfe}, n_noise={self.n_noise})"
        )
