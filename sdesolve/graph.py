"""``GraphSampler``: a fixed-step sampler captured once in a CUDA graph, replayed per call.

A diffusion sampler at small batch or with a cheap network spends most of its time launching
small kernels from Python. Every fixed-step solver here is free of host-device
synchronization, so its whole loop (all steps, all network calls) can be recorded once in a
CUDA graph and replayed with a single launch. No noise is stored: every draw is made inside
the graph, so the memory of a solve does not grow with its number of steps (the earlier design
held steps x B x event pre-drawn numbers: 3.1 GB for 1000 DDPM steps at batch 256 x 3x32x32).
Each call fills the static start state, replays, and reads the non-finite record once (one
synchronization) unless disabled. Two kinds of noise, chosen per call by ``generator``:

* **one generator** (or None: the default one) -- the draws of :func:`sdesolve.sample`: the
  prior draw, then one ``torch.randn`` per noise draw of the solver. In the graph they come from
  a generator registered with it (PyTorch's graph-safe RNG), which takes the caller's generator
  state before the replay and hands the advanced state back after it, so a replay draws exactly
  what the eager loop would: ``GraphSampler(...)(generator=g)`` equals ``sample(...,
  generator=g)`` for every solver, captured or not.
* **a list of B generators** -- per-sample keys: ``generator[i]`` draws one 64-bit key for sample
  i, and the k-th normal draw of the solve is a function of (key_i, k, element index) through the
  counter-based generator Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random
  numbers: as easy as 1, 2, 3", SC'11, the generator of cuRAND and of PyTorch's CUDA kernels),
  written in int64 torch operations, then Box-Muller on two 53-bit uniforms. The keys are a
  static buffer and k a constant of the captured graph (captured at the first such call), so a
  sample's noise does not depend on its batch: any split of a batch gives the same samples. On a
  CPU the same function runs eagerly: the integer hash is bitwise the same on every device and
  the transcendentals round alike to within an ulp. These are other draws than ``sample()``
  with the same list (same law, other samples); deterministic solvers give the same map of x_T.
  (A PyTorch before 2.4 has no graph-safe generators: a captured sampler then draws per-sample
  keys from one generator too.)

One sampler may be called from several threads: a lock makes fill, replay and copy-out one
unit, and every call returns a new tensor (never the static output buffer).

The network must be capturable: no host synchronization, no data-dependent Python control
flow, no allocation of new CUDA memory pools during replay (standard CUDA-graph rules).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._cuda_graph import capture_cuda_graph
from ._validate import check_bool, check_int, check_tensor
from .grids import _check_sde, resolve_grid
from .model import as_model, bind_kwargs
from .sample import _check_device, _check_dtype, _check_shape, _check_solver
from .solvers.base import (
    GeneratorLike,
    Solver,
    _to_device,
    check_generator,
    first_nonfinite,
    new_record,
    raise_if_bad,
    run_steps,
)

if TYPE_CHECKING:
    from .model import ScoreLike
    from .sde.base import LinearSDE

__all__ = ["GraphSampler"]

# ---------------------------------------------------------------- counter-based normal noise
# Philox4x32-10 (Salmon et al. 2011): a 4 x 32-bit counter (c0, c1, c2, c3) and a 2 x 32-bit key
# (k0, k1) go through 10 rounds of
#     (c0, c1, c2, c3) <- (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
# the key bumped by the Weyl constants W between rounds. Written with int64 torch tensors holding
# values in [0, 2^32), the two multiplied words stacked as one tensor (a = (c0, c2), b = (c1, c3):
# 13 elementwise operations a round). Every product is split into 16-bit halves, so no
# intermediate exceeds 2^50 (no signed overflow anywhere), and the constants enter as Python
# scalars or device fills (no host-to-device copy: capturable).
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_MASK32 = 0xFFFFFFFF
_STREAM_NOISE, _STREAM_PRIOR = 0, 1  # third counter word: the solver's draws, the prior draw


def _lanes(a: Tensor, values: tuple[int, int]) -> Tensor:
    """A (2, 1, ..., 1) int64 tensor of ``values`` on a's device (fills, no host copy)."""
    out = a.new_full((2,) + (1,) * (a.dim() - 1), values[1])
    out[0] = values[0]
    return out


def _round_keys(k: Tensor, rounds: int = 10) -> list[Tensor]:
    """The key of every round: k = (k0, k1) stacked along dim 0, then bumped by W (mod 2^32)."""
    w = _lanes(k, _PHILOX_W)
    keys = [k]
    for _ in range(rounds - 1):
        keys.append((keys[-1] + w) & _MASK32)
    return keys


def _philox_lanes(a: Tensor, b: Tensor, round_keys: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Philox4x32 rounds on stacked words: a = (c0, c2), b = (c1, c3) along dim 0, one round per key
    of ``round_keys`` (:func:`_round_keys`). Returns the final (a, b), i.e. the output words
    (a[0], b[0], a[1], b[1])."""
    m_lo = _lanes(a, (_PHILOX_M[0] & 0xFFFF, _PHILOX_M[1] & 0xFFFF))
    m_hi = _lanes(a, (_PHILOX_M[0] >> 16, _PHILOX_M[1] >> 16))
    for k in round_keys:
        p_lo, p_hi = a * m_lo, a * m_hi  # < 2^48 each; M a = p_lo + p_hi 2^16
        mid = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49; M a = mid + (p_hi >> 16) 2^32
        hi, lo = (p_hi >> 16) + (mid >> 32), mid & _MASK32
        a, b = hi.flip(0) ^ b ^ k, lo.flip(0)
    return a, b


def philox4x32(counter: Sequence[int | Tensor], key: Sequence[int | Tensor], rounds: int = 10) -> tuple:
    """Philox4x32-``rounds`` of ``counter`` (4 words) under ``key`` (2 words): 4 words in [0, 2^32).

    Words are Python ints or int64 tensors (broadcast together, on one device) holding 32-bit
    values; the result has ints for ints. With 10 rounds it reproduces Random123's known-answer
    vectors (``tests/kat_vectors``); :func:`counter_normal` runs the same rounds.
    """
    words = list(counter) + list(key)
    scalar = all(isinstance(v, int) for v in words)
    dev = next((v.device for v in words if isinstance(v, Tensor)), torch.device("cpu"))
    t = [torch.as_tensor(v, dtype=torch.int64, device=dev) for v in words]
    t = list(torch.broadcast_tensors(*t))
    a, b = _philox_lanes(torch.stack((t[0], t[2])), torch.stack((t[1], t[3])), _round_keys(torch.stack(t[4:]), rounds))
    out = (a[0], b[0], a[1], b[1])
    return tuple(int(v) for v in out) if scalar else out


def counter_normal(
    keys: Tensor,
    event_shape: Sequence[int],
    draw: int,
    stream: int = _STREAM_NOISE,
    dtype: torch.dtype = torch.float32,
    round_keys: list[Tensor] | None = None,
) -> Tensor:
    """Standard normal numbers of shape (B, *event_shape), a pure function of (keys[i], draw, element).

    Args:
        keys: (B, 2) int64 tensor of 32-bit words, one 64-bit key per sample.
        event_shape: the shape of one sample.
        draw: the draw's index in the solve (the second counter word), an int in [0, 2^32).
        stream: the third counter word (0 for the solver's draws, 1 for the prior draw).
        dtype: of the result (computed in float64, then rounded).
        round_keys: the keys' :func:`_round_keys` (computed here when None; a solve computes
            them once for all its draws).

    Counter (pair index j, draw, stream, 0) under sample i's key gives 4 words; two 53-bit
    uniforms u1 in (0, 1] and u2 in [0, 1) then give the elements 2j and 2j + 1 by Box-Muller,
    sqrt(-2 log u1) (cos, sin)(2 pi u2). Element j of sample i is therefore independent of the
    batch size and of the other samples' keys.
    """
    B = keys.shape[0]
    n = math.prod(event_shape)
    P = (n + 1) // 2
    a = torch.empty((2, B, P), device=keys.device, dtype=torch.int64)
    a[0] = torch.arange(P, device=keys.device, dtype=torch.int64)  # c0: the pair index
    a[1] = stream  # c2
    b = _lanes(a, (draw, 0))  # (c1, c3)
    if round_keys is None:
        round_keys = _round_keys(keys.T.unsqueeze(-1))
    a, b = _philox_lanes(a, b, round_keys)
    a, b, c, d = a[0], b[0], a[1], b[1]
    u1 = ((a >> 5) * 67108864 + (b >> 6) + 1).to(torch.float64) * 2.0**-53  # (0, 1]
    u2 = ((c >> 5) * 67108864 + (d >> 6)).to(torch.float64) * 2.0**-53  # [0, 1)
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = (2.0 * math.pi) * u2
    z = torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=-1).reshape(B, -1)
    return z[:, :n].reshape((B,) + tuple(event_shape)).to(dtype)


def draw_keys(
    generator: torch.Generator | list[torch.Generator] | None, batch: int, device: torch.device | str | None
) -> Tensor:
    """(B, 2) int64 Philox keys: one draw of B keys from ``generator``, or key i from ``generator[i]``."""
    if isinstance(generator, list):
        keys = [torch.randint(0, 2**32, (2,), generator=g, device=device, dtype=torch.int64) for g in generator]
        return torch.stack(keys)
    return torch.randint(0, 2**32, (batch, 2), generator=generator, device=device, dtype=torch.int64)


class CounterNoise:
    """The noise source of a :class:`GraphSampler` solve: the k-th draw is
    :func:`counter_normal` of the static ``keys`` buffer at draw index k.

    :func:`~sdesolve.solvers.base.randn_like` calls :meth:`draw`; the draw index is a Python
    counter (reset per solve), so in a captured graph it is a constant and only the keys change.
    """

    def __init__(self, keys: Tensor):
        self.keys = keys
        self.reset()

    def reset(self) -> None:
        """Start a solve: draw index 0, round keys computed again (from the keys of this call)."""
        self.count = 0
        self._round_keys: list[Tensor] | None = None

    def draw(self, x: Tensor) -> Tensor:
        k = self.count
        self.count += 1
        keys = self.keys[: x.shape[0]]
        if self._round_keys is None or self._round_keys[0].shape[1] != keys.shape[0]:
            self._round_keys = _round_keys(keys.T.unsqueeze(-1))
        return counter_normal(keys, x.shape[1:], k, _STREAM_NOISE, x.dtype, round_keys=self._round_keys)


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
    With one generator the samples are those of :func:`sdesolve.sample` with that generator; with
    a list of B generators, sample i's key (its prior draw and all its noise) comes from
    ``generator[i]`` alone (module docstring). The noise is drawn inside the graph: memory does
    not grow with ``steps``. Calls from several threads are serialized (one replay at a time).
    Attributes: ``grid``, ``n_noise`` (noise draws per solve), ``nfe`` (network calls per solve).
    """

    def __init__(
        self,
        sde: LinearSDE,
        model: ScoreLike,
        shape: Sequence[int],
        *,
        solver: Solver,
        steps: int | None = None,
        grid: str | Callable[..., Tensor] | Tensor | Sequence[float] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        denoise: bool = True,
        check_finite: bool = True,
        use_graph: bool | None = None,
        warmup: int = 2,
        model_kwargs: dict | None = None,
    ) -> None:
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
        """Static buffers, a dry run counting the noise draws and evaluations, then the capture of the
        one-generator loop (the per-sample loop is captured at its first call)."""
        self._x = torch.zeros(self.shape, device=self.device, dtype=self.dtype)
        self._keys = torch.zeros((self.shape[0], 2), device=self.device, dtype=torch.int64)
        self._warmup = warmup
        with torch.no_grad():
            self._coefs = _to_device(self.solver.init(self.sde, self.grid), self._x)
            self.n_noise, self.nfe = self._count()
            self._source = CounterNoise(self._keys)
            self._record = new_record(self._n, self.device) if self.check_finite else None
            # noise of the one-generator graph: a generator registered with it, mirroring the caller's
            # (PyTorch >= 2.4; before, one generator draws per-sample keys as a list does)
            self._graph_safe_rng = self.use_graph and hasattr(torch.cuda.CUDAGraph, "register_generator_state")
            self._gen = torch.Generator(device=self.device) if self._graph_safe_rng else None
            self._graphs: dict[str, tuple] = {}
            if self.use_graph:
                self._capture("generator" if self._graph_safe_rng else "counter")

    def _capture(self, mode: str) -> tuple:
        """Capture the loop of ``mode`` ("generator": torch's Philox through the registered ``_gen``;
        "counter": :class:`CounterNoise` from the keys buffer) once; returns (graph, output)."""
        if mode not in self._graphs:
            source = self._gen if mode == "generator" else self._source
            gens = (self._gen,) if mode == "generator" and self.n_noise else ()
            graph, out, _ = capture_cuda_graph(
                lambda: self._loop(source, self._record),
                device=self.device,
                warmup=self._warmup,
                model=self.model,
                generators=gens,
            )
            self._graphs[mode] = (graph, out)
        return self._graphs[mode]

    @property
    def _graph(self):
        """The graph captured at construction (None without a graph)."""
        return next(iter(self._graphs.values()))[0] if self._graphs else None

    def _mode(self, generator: torch.Generator | list[torch.Generator] | None) -> str:
        """ "generator" (sample()'s draws) for one generator or None, "counter" (per-sample keys) for a list."""
        if isinstance(generator, list) or (self.use_graph and not self._graph_safe_rng):
            return "counter"
        return "generator"

    def _count(self) -> tuple[int, int]:
        """Noise draws and network calls of one solve, by a dry run (not counted on the model).

        The counts do not depend on the batch size, so the dry run takes one sample; a model that
        cannot run on a batch of one (fixed-size extra inputs, batch statistics) gets the full batch.
        """
        nfe0 = self.model.nfe
        try:
            for x in (self._x[:1], self._x) if self.shape[0] > 1 else (self._x,):
                counter, self.model.nfe = CounterNoise(self._keys), nfe0
                try:
                    self._loop(counter, record=None, x=x)
                    break
                except Exception:
                    if x is self._x:
                        raise
            return counter.count, self.model.nfe - nfe0
        finally:
            self.model.nfe = nfe0  # building it evaluates nothing on the caller's count

    def _loop(
        self,
        source: torch.Generator | list[torch.Generator] | CounterNoise | None,
        record: Tensor | None,
        x: Tensor | None = None,
    ) -> Tensor:
        """The solve from the static start state; ``source``: a generator (or None) or a CounterNoise."""
        if isinstance(source, CounterNoise):
            source.reset()
        state = self.solver.init_state(self._x if x is None else x, self._coefs)
        state = run_steps(
            self.solver, self.model, state, self._coefs, self._n, generator=source, denoise=self.denoise, record=record
        )
        return state["x"]

    def _fill(self, x_T: Tensor | None, generator: torch.Generator | list[torch.Generator] | None) -> None:
        """Write the start state (given, or the prior draw) and, for a list of generators, the keys."""
        if x_T is None and not self._starts_at_T:
            raise ValueError(
                f"x_T is required: the grid starts at t = {float(self.grid[0]):g} < T = {float(self.sde.T):g}; "
                f"pass x_T, the state at grid[0]"
            )
        if self._mode(generator) == "counter":
            self._keys.copy_(draw_keys(generator, self.shape[0], self.device))
            if x_T is None:
                z = counter_normal(self._keys, self.shape[1:], 0, _STREAM_PRIOR, torch.float64)
                self._x.copy_(z * float(self.sde.prior_std))  # the prior N(0, prior_std^2 I)
        elif x_T is None:  # the prior draw of sample(): same generator, same x_T
            self._x.copy_(self.sde.prior_sample(self.shape, generator=generator, device=self.device, dtype=self.dtype))  # type: ignore[arg-type]
        if x_T is not None:
            self._x.copy_(x_T)

    def _run(self, generator: torch.Generator | list[torch.Generator] | None) -> Tensor:
        """One solve from the filled buffers; returns a new tensor."""
        if self._mode(generator) == "counter":
            if not self.use_graph:
                return self._loop(self._source, self._record).clone()
            graph, out = self._capture("counter")
            graph.replay()
        elif not self.use_graph:
            return self._loop(generator, self._record).clone()
        else:
            graph, out = self._graphs["generator"]
            # the registered generator takes the caller's state, the replay advances it as the eager
            # draws would, and the caller's generator gets the advanced state back
            caller = generator if generator is not None else torch.cuda.default_generators[self.device.index]
            assert self._gen is not None  # created with the graph
            self._gen.set_state(caller.get_state())  # type: ignore[union-attr]  # a list took the counter branch
            graph.replay()
            caller.set_state(self._gen.get_state())  # type: ignore[union-attr]
        self.model.nfe += self.nfe
        return out.clone()

    # ------------------------------------------------------------------ call
    def __call__(self, x_T: Tensor | None = None, *, generator: GeneratorLike = None) -> Tensor:
        """One solve: from ``x_T`` (or a prior draw), with the noise of ``generator`` (a
        ``torch.Generator``, None for the default one, or a list of B generators: per-sample keys)."""
        generator = check_generator(generator, batch=self.shape[0], device=self.device)
        if x_T is not None:
            check_tensor(x_T, "x_T", min_dim=1)
            if tuple(x_T.shape) != self.shape or x_T.dtype != self.dtype or x_T.device != self.device:
                raise ValueError(
                    f"x_T must be a tensor of shape {self.shape}, dtype {self.dtype} on {self.device} (the sampler's), "
                    f"got shape {tuple(x_T.shape)}, dtype {x_T.dtype} on {x_T.device}"
                )
        with self._lock, torch.no_grad():
            self._fill(x_T, generator)
            out = self._run(generator)
            if self._record is not None:
                raise_if_bad(first_nonfinite(self._record), self.grid)
        return out

    def __repr__(self) -> str:
        return (
            f"GraphSampler(solver={self.solver!r}, shape={self.shape}, steps={self._n}, device={self.device}, "
            f"graph={self._graph is not None}, nfe={self.nfe}, n_noise={self.n_noise})"
        )
