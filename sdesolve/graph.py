"""``GraphSampler``: a fixed-step sampler captured once in a CUDA graph, replayed per call.

A diffusion sampler at small batch or with a cheap network spends most of its time launching
small kernels from Python. Every fixed-step solver here is free of host-device
synchronization, so its whole loop (all steps, all network calls) can be recorded once in a
CUDA graph and replayed with a single launch. The graph reads the start state and the noise
from static buffers, which each call fills:

1. ``x_T`` (given, or drawn from the prior with ``generator``: one kernel);
2. every noise draw of the solve, pre-drawn as one block with ``generator`` (one kernel);
3. replay; the non-finite record is read once (one synchronization) unless disabled.

On a CPU (or with ``use_graph=False``) the same buffers drive the plain loop, so results are
the same function of (x_T, noise block) on every device. Stochastic samplers therefore draw
their noise in a different order from :func:`sdesolve.sample` with the same seed (one block
instead of step by step): the law is the same, the individual samples are not; deterministic
solvers give the same map of x_T.

The network must be capturable: no host synchronization, no data-dependent Python control
flow, no allocation of new CUDA memory pools during replay (standard CUDA-graph rules).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .grids import make_grid, validate_grid
from .model import as_model
from .solvers.base import NoiseSource, Solver, _to_device, first_nonfinite, raise_if_bad

__all__ = ["GraphSampler"]


class GraphSampler:
    """Capture ``solver``'s fixed-step loop for ``shape`` once; each call replays it.

    Args:
        sde, model, solver, steps, grid, denoise, check_finite: as in :func:`sdesolve.sample`.
        shape: (B, *event) of every call.
        device, dtype: of the samples (default CUDA if available, float32).
        use_graph: capture a CUDA graph (default: on CUDA devices). With False, or on a CPU, the
            plain loop runs on the same static buffers.
        warmup: loop runs before capture (on a side stream), so lazy initializations happen
            outside the graph.

    Call as ``sampler(generator=g)`` (prior draw) or ``sampler(x_T=x)``; returns a new tensor.
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
    ):
        if not isinstance(solver, Solver):
            raise TypeError(f"solver must be a sdesolve Solver instance, got {type(solver).__name__}")
        if getattr(solver, "adaptive", False):
            raise ValueError(
                f"{type(solver).__name__} is adaptive: its step count is not fixed, so it cannot be captured"
            )
        self.sde, self.solver = sde, solver
        self.model = as_model(model, sde)
        solver.check(sde)
        if grid is None or isinstance(grid, str):
            if steps is None:
                raise ValueError("pass steps (the number of steps) or an explicit grid tensor")
            g = make_grid(grid if grid is not None else solver.default_grid, sde, steps)
        else:
            g = validate_grid(grid, sde)
        if abs(float(g[0]) - float(sde.T)) > 1e-9:
            self._starts_at_T = False
        else:
            self._starts_at_T = True
        self.grid = g
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) < 1 or any(s < 1 for s in self.shape):
            raise ValueError(f"shape must be (B, *event) with positive sizes, got {self.shape}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device, self.dtype = device, dtype
        self.denoise, self.check_finite = denoise, check_finite
        self.use_graph = (self.device.type == "cuda") if use_graph is None else bool(use_graph)
        if self.use_graph and self.device.type != "cuda":
            raise ValueError("use_graph=True needs a CUDA device")

        self._x = torch.zeros(self.shape, device=self.device, dtype=dtype)
        n = g.numel() - 1
        self._n = n
        with torch.no_grad():
            self._coeffs = _to_device(solver.init(sde, g), self._x)
            # Dry run on the CPU-free path: count the noise draws of one solve.
            counter = NoiseSource(None)
            nfe0 = self.model.nfe
            self._loop(counter, record=None)
            self.n_noise = counter.count
            self.nfe = self.model.nfe - nfe0
            self.model.nfe = nfe0
            self._noise = torch.zeros((max(self.n_noise, 1),) + self.shape, device=self.device, dtype=dtype)
            self._source = NoiseSource(self._noise)
            self._record = torch.zeros(n, dtype=torch.float64, device=self.device) if check_finite else None
            self._graph = None
            if self.use_graph:
                self._capture(warmup)

    # ------------------------------------------------------------------ internals
    def _loop(self, source: NoiseSource, record: Tensor | None) -> Tensor:
        source.reset()
        state = self.solver.init_state(self._x, self._coeffs)
        for i in range(self._n):
            noise = not (self.denoise and i == self._n - 1)
            state = self.solver.step(self.model, state, i, self._coeffs, generator=source, noise=noise, need_x0=False)
            if record is not None:
                torch.sum(state["x"].reshape(-1), dim=0, dtype=torch.float64, out=record[i])
        return state["x"]

    def _capture(self, warmup: int) -> None:
        nfe0 = self.model.nfe
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(max(int(warmup), 1)):
                self._loop(self._source, self._record)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._out = self._loop(self._source, self._record)
        self.model.nfe = nfe0  # warm-up and capture are not counted as evaluations

    # ------------------------------------------------------------------ call
    def __call__(self, x_T: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(f"generator is on {generator.device} but the sampler runs on {self.device}")
        with torch.no_grad():
            if x_T is None:
                if not self._starts_at_T:
                    raise ValueError("the grid does not start at T: pass x_T, the state at grid[0]")
                self._x.normal_(0.0, float(self.sde.prior_std), generator=generator)
            else:
                if not isinstance(x_T, Tensor) or tuple(x_T.shape) != self.shape:
                    raise ValueError(f"x_T must be a tensor of shape {self.shape}")
                if x_T.dtype != self.dtype or x_T.device != self.device:
                    raise ValueError(f"x_T must be {self.dtype} on {self.device}, got {x_T.dtype} on {x_T.device}")
                self._x.copy_(x_T)
            if self.n_noise:
                self._noise.normal_(generator=generator)
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
