"""Sampling and bits/dim sharded over the ranks of ``torchrun`` (PyTorch's own ``torch.distributed``).

Launch the same script (or ``python -m sdesolve``) once per device with ``torchrun``::

    torchrun --nproc_per_node=4 my_eval.py        # calls sdesolve.distributed.bits_per_dim(...)
    torchrun --nproc_per_node=4 -m sdesolve likelihood --model my_pkg.nets:score --data test.npy

Each rank takes one contiguous block of the indices 0..n-1 (rank r of W takes
``[r n // W, (r + 1) n // W)``) and runs the ordinary single-process code (:func:`sdesolve.sample`,
:func:`sdesolve.bits_per_dim`) on it in batches, with no collective inside a solve: ranks whose
solves take different numbers of network evaluations never wait on each other until the end.
Then the results are gathered in index order onto **every** rank (as CPU tensors), and the
summary of bits/dim (mean, standard error, total NFE) is reduced exactly: the per-sample values
are gathered, and the mean and variance are ``math.fsum`` of them in index order.

Reproducibility. Sample i's randomness comes from its own generator,
``torch.Generator(device).manual_seed(index_seed(seed, i))``, with ``index_seed`` the SplitMix64
finalizer (Steele, Lea & Flood 2014) applied to ``splitmix64(seed) XOR i``; the list of a batch's
generators is passed to the single-process code (diffusers' convention: sample i's draws come
from generator i alone). So the set of samples and per-sample likelihoods is the same for any
number of ranks and any batch size, given a solver whose result for a sample does not depend on
its batch: every fixed-step solver, and adaptive ones with ``per_sample=True`` (which
:func:`bits_per_dim` selects by default; pass ``AdaptiveODE(..., per_sample=True)`` to
:func:`sample`).

Failure. A rank whose local work raises writes its error to the process group's store; the other
ranks look for it between batches and stop there, and every rank then raises
:class:`DistributedError` naming the failing rank and its error (the failing rank re-raises its own
exception). Ranks exchange an ok/error status through the store with ``timeout`` seconds to wait,
so a rank that dies or hangs ends the others within that time.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment, or 1) the functions run in the calling
process with world size 1 and need no process group. A process group the caller has already
initialized is used as it is; one started here (gloo, or NCCL for CUDA devices) stays for later calls
and is destroyed when the process exits.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._validate import check_bool, check_int, check_real, describe

if TYPE_CHECKING:
    from .model import ScoreLike
    from .sde.base import LinearSDE
    from .solvers.base import Solver

__all__ = [
    "BitsPerDim",
    "DistributedError",
    "bits_per_dim",
    "index_generators",
    "index_seed",
    "launched",
    "load_data",
    "sample",
    "shard",
]

_MASK64 = (1 << 64) - 1
#: the prefix of this module's keys in the process group's store
_KEY = "sdesolve.distributed"


class DistributedError(RuntimeError):
    """Another rank failed (or did not report in time); ``rank`` names it (None: several or unknown)."""

    def __init__(self, message: str, rank: int | None = None):
        super().__init__(message)
        self.rank = rank


# ----------------------------------------------------------------------------- per-index seeds
def _splitmix64(z: int) -> int:
    """The SplitMix64 step and finalizer (Steele, Lea & Flood 2014), on 64-bit unsigned integers."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def index_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``'s generator: ``splitmix64(splitmix64(seed) XOR index)`` in [0, 2^64).

    Distinct indices of one seed give distinct seeds (splitmix64 is a bijection of 64-bit integers).
    """
    seed = check_int(seed, "seed", minimum=0, maximum=_MASK64)
    index = check_int(index, "index", minimum=0, maximum=_MASK64)
    return _splitmix64(_splitmix64(seed) ^ index)


def index_generators(seed: int, indices: Sequence[int], device: Any = "cpu") -> list[torch.Generator]:
    """One generator per index, ``torch.Generator(device).manual_seed(index_seed(seed, i))``."""
    dev = torch.device(device)
    return [torch.Generator(dev).manual_seed(index_seed(seed, int(i))) for i in indices]


def shard(n: int, rank: int, world_size: int) -> range:
    """The indices of rank ``rank`` of ``world_size``: the contiguous block ``[rank n // W, (rank + 1) n // W)``."""
    n = check_int(n, "n", minimum=0)
    world_size = check_int(world_size, "world_size", minimum=1)
    rank = check_int(rank, "rank", minimum=0, maximum=world_size - 1)
    return range(rank * n // world_size, (rank + 1) * n // world_size)


# ----------------------------------------------------------------------------- data
def load_data(data: Any, name: str = "data") -> Any:
    """``data`` as something indexable with ``len``: a tensor (N, *event), a ``torch.utils.data.Dataset``
    (items tensors, or tuples whose first element is one, as torchvision's (image, label)), or a path
    to a ``.pt``/``.pth`` file (``torch.load(weights_only=True)``: one tensor, or a dict of one) or a
    ``.npy`` file (``numpy.load(allow_pickle=False)``). No code from a file runs."""
    if isinstance(data, (str, os.PathLike)):
        return _load_file(Path(data), name)
    if isinstance(data, Tensor):
        if data.dim() < 2 or data.shape[0] == 0:
            raise ValueError(f"{name} must be a tensor (N, *event) with N >= 1, got shape {tuple(data.shape)}")
        return data
    if isinstance(data, torch.utils.data.Dataset):
        if not hasattr(data, "__len__"):
            raise TypeError(f"{name} must be a Dataset with __len__ (a map-style dataset), got {type(data).__name__}")
        if len(data) == 0:  # type: ignore[arg-type]
            raise ValueError(f"{name} is an empty dataset")
        return data
    raise TypeError(
        f"{name} must be a tensor (N, *event), a torch.utils.data.Dataset or a path to a .pt/.npy file, "
        f"got {describe(data)} ({type(data).__name__})"
    )


def _load_file(path: Path, name: str) -> Tensor:
    import numpy as np

    if not path.is_file():
        raise ValueError(f"{name}: no file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".pth", ".npy"):
        raise ValueError(f"{name}: {str(path)!r} must be a .pt, .pth or .npy file")
    try:
        if suffix == ".npy":
            value: Any = torch.from_numpy(np.ascontiguousarray(np.load(path, allow_pickle=False)))
        else:
            value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{name}: {str(path)!r} is not a tensor file ({type(exc).__name__}: {first})") from exc
    if isinstance(value, dict) and len(value) == 1:
        (value,) = value.values()
    if not isinstance(value, Tensor):
        raise ValueError(
            f"{name}: {str(path)!r} holds a {type(value).__name__}, expected one tensor (or a dict of one)"
        )
    return load_data(value, name)


def _batch(data: Any, indices: range, name: str) -> Tensor:
    """The items ``indices`` of ``data`` stacked into one tensor."""
    if isinstance(data, Tensor):
        return data[indices.start : indices.stop]
    items = []
    for i in indices:
        item = data[i]
        if isinstance(item, (tuple, list)) and item and isinstance(item[0], Tensor):
            item = item[0]
        if not isinstance(item, Tensor):
            raise TypeError(
                f"{name}[{i}] must be a tensor (or a tuple whose first element is one), got {type(item).__name__}"
            )
        items.append(item)
    try:
        return torch.stack(items)
    except RuntimeError as exc:
        shapes = sorted({tuple(t.shape) for t in items})
        raise ValueError(f"{name}: items {indices.start}..{indices.stop - 1} have different shapes {shapes}") from exc


# ----------------------------------------------------------------------------- the process group
def launched() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1") or "1") > 1


class _World:
    """This process's rank and world size, the device it works on, and (W > 1) the store and group."""

    calls = 0  # calls of this module in this process: every rank makes them in the same order

    def __init__(self, device: Any, timeout: float):
        import torch.distributed as dist

        self.dist, self.timeout = dist, timeout
        env_world = os.environ.get("WORLD_SIZE")
        if dist.is_available() and dist.is_initialized():
            self.rank, self.size = dist.get_rank(), dist.get_world_size()
            if env_world is not None and int(env_world) != self.size:
                raise ValueError(
                    f"WORLD_SIZE={env_world} in the environment but the initialized process group has "
                    f"{self.size} ranks: start every rank with the same torchrun --nproc_per_node"
                )
        elif env_world is not None and int(env_world) > 1:
            if not dist.is_available():
                raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
            for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
                if not os.environ.get(var):
                    raise ValueError(f"WORLD_SIZE={env_world} but {var} is not set: start the job with torchrun")
            self.rank, self.size = int(os.environ["RANK"]), int(env_world)
        else:
            self.rank, self.size = 0, 1
        self.device = self._device(device)
        if self.size > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            # started once and kept for later calls (a default group re-created on the same store
            # fails to connect); destroyed when the process exits
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
            atexit.register(_destroy)
        self.store = dist.distributed_c10d._get_default_store() if self.size > 1 else None
        _World.calls += 1
        self.prefix = f"{_KEY}/{_World.calls}"

    def _device(self, device: Any) -> torch.device:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must name a torch device (e.g. 'cpu', 'cuda'), got {device!r}") from exc
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return dev

    # -- the store: statuses and the early stop
    def agree(self, **args: Any) -> None:
        """Every rank must have been called with the same ``args`` (ValueError naming the first that differs)."""
        if self.size == 1:
            return
        values = self._exchange("args", repr(sorted(args.items())))
        mine = sorted(args.items())
        for r, text in enumerate(values):
            if text != repr(mine):
                theirs = dict(eval_safe(text))
                for key, value in mine:
                    if key in theirs and repr(theirs[key]) != repr(value):
                        raise ValueError(
                            f"the ranks disagree on {key}: rank {self.rank} has {value!r}, rank {r} has "
                            f"{theirs[key]!r}; every rank must get the same arguments"
                        )
                raise ValueError(f"the ranks disagree on their arguments: rank {r} has {text}")

    def failed(self) -> str | None:
        """The first error another rank reported (checked between batches; no wait)."""
        if self.store is None or not self.store.check([f"{self.prefix}/failed"]):
            return None
        return self.store.get(f"{self.prefix}/failed").decode()

    def fail(self, message: str) -> None:
        if self.store is not None:
            self.store.compare_set(f"{self.prefix}/failed", "", message)  # the first failure is kept

    def statuses(self, status: str) -> list[str]:
        """Every rank's status ("ok" or its error) once all have reported; DistributedError after timeout."""
        return self._exchange("status", status)

    def _exchange(self, what: str, value: str) -> list[str]:
        assert self.store is not None
        keys = [f"{self.prefix}/{what}/{r}" for r in range(self.size)]
        self.store.set(keys[self.rank], value)
        try:
            self.store.wait(keys, timedelta(seconds=self.timeout))
        except Exception as exc:  # the store's timeout: some rank never reported
            missing = [r for r, k in enumerate(keys) if not self.store.check([k])]
            raise DistributedError(
                f"rank {self.rank}: ranks {missing} did not report within timeout={self.timeout:g} s "
                f"(they died or hang); the job stops",
                missing[0] if len(missing) == 1 else None,
            ) from exc
        return [self.store.get(k).decode() for k in keys]

    # -- the gather
    def gather(self, local: Tensor, n: int, event: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """Every rank's block, concatenated in index order, as a CPU tensor (n, *event)."""
        if self.size == 1:
            return local.cpu()
        dev = self.device if self.dist.get_backend() == "nccl" else torch.device("cpu")
        width = -(-n // self.size)
        padded = torch.zeros((width, *event), dtype=dtype, device=dev)
        padded[: local.shape[0]] = local.to(device=dev, dtype=dtype)
        blocks = [torch.empty_like(padded) for _ in range(self.size)]
        self.dist.all_gather(blocks, padded)
        parts = [blocks[r][: len(shard(n, r, self.size))] for r in range(self.size)]
        return torch.cat(parts).cpu()

    def close(self, ok: bool) -> None:
        """The end of one call: a barrier when every rank finished well (the group stays for later calls)."""
        if self.size > 1 and ok:
            self.dist.barrier()


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def eval_safe(text: str) -> Any:
    """Parse the repr of a list of (name, value) pairs of plain values (no code runs: ast.literal_eval)."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []


def _run(world: _World, n: int, work: Any, progress: bool, desc: str) -> list[Tensor]:
    """Rank ``world.rank``'s blocks: ``work(range)`` per batch; errors reported to every rank."""
    from ._progress import progress_bar

    mine, outs, error = shard(n, world.rank, world.size), [], None
    batch_size = work.batch_size
    try:
        with progress_bar(
            len(mine), desc=f"{desc} (rank 0 of {world.size})", unit="sample", enabled=progress and world.rank == 0
        ) as bar:
            for start in range(mine.start, mine.stop, batch_size):
                other = world.failed()
                if other is not None:
                    raise DistributedError(f"rank {world.rank} stopped: {other}", _rank_of(other))
                idx = range(start, min(start + batch_size, mine.stop))
                outs.append(work(idx))
                bar.update(len(idx))
    except BaseException as exc:  # noqa: BLE001 - every error is reported to the other ranks, then re-raised
        error = exc
        if not isinstance(exc, DistributedError):
            world.fail(f"rank {world.rank} failed: {type(exc).__name__}: {exc}")
    if world.size > 1:
        statuses = world.statuses("ok" if error is None else f"{type(error).__name__}: {error}")
        bad = [(r, s) for r, s in enumerate(statuses) if s != "ok"]
        if error is not None:
            raise error
        if bad:
            first = world.failed() or f"rank {bad[0][0]} failed: {bad[0][1]}"
            raise DistributedError(f"rank {world.rank} stopped: {first}", _rank_of(first))
    elif error is not None:
        raise error
    return outs


def _rank_of(message: str) -> int | None:
    head = message.split(" ", 2)
    return int(head[1]) if len(head) > 1 and head[0] == "rank" and head[1].isdigit() else None


def _check_common(seed: Any, batch_size: Any, progress: Any, timeout: Any) -> tuple[int, int, bool, float]:
    return (
        check_int(seed, "seed", minimum=0, maximum=_MASK64),
        check_int(batch_size, "batch_size", minimum=1),
        check_bool(progress, "progress"),
        check_real(timeout, "timeout", positive=True),
    )


# ----------------------------------------------------------------------------- sampling
def sample(
    sde: LinearSDE,
    model: ScoreLike,
    n: int,
    event_shape: Sequence[int],
    *,
    solver: Solver,
    seed: int = 0,
    batch_size: int = 256,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    timeout: float = 1800.0,
    **sample_kwargs: Any,
) -> Tensor:
    """``n`` samples of shape ``event_shape``, sharded over the torchrun ranks; (n, *event) on every rank (CPU).

    Sample i is :func:`sdesolve.sample` of a batch whose i-th generator is
    ``index_generators(seed, [i], device)[0]``: the result is the same for any number of ranks and
    any ``batch_size`` (given a solver whose samples do not depend on their batch: every fixed-step
    solver; ``AdaptiveODE(..., per_sample=True)`` among the adaptive ones).

    Args:
        sde, model, solver: as in :func:`sdesolve.sample`.
        n: the number of samples (an int >= 1).
        event_shape: the shape of one sample, e.g. ``(3, 32, 32)``.
        seed: the seed all per-index generators derive from (an int in [0, 2^64)).
        batch_size: samples per call of :func:`sdesolve.sample` on a rank.
        device: this rank's device (default ``cuda:LOCAL_RANK`` where CUDA is available, else CPU;
            ``"cuda"`` means ``cuda:LOCAL_RANK``); NCCL is used between CUDA devices, gloo otherwise.
        dtype: of the samples.
        progress: a progress bar on rank 0 (over its own block).
        timeout: seconds a rank waits for the others' reports (and the process group's timeout).
        **sample_kwargs: passed to :func:`sdesolve.sample` (``steps``, ``grid``, ``denoise``, ...;
            not ``generator``, ``shape``, ``x_T``, ``device`` or ``dtype``).

    Raises:
        DistributedError: on every rank when another rank failed (naming it and its error).
    """
    from .model import as_model, bind_kwargs
    from .sample import _check_dtype
    from .sample import sample as _sample

    n = check_int(n, "n", minimum=1)
    if isinstance(event_shape, (str, bytes, Tensor)) or not isinstance(event_shape, Sequence):
        raise TypeError(f"event_shape must be a tuple of ints, e.g. (3, 32, 32), got {describe(event_shape)}")
    event = tuple(check_int(s, f"event_shape[{k}]", minimum=1) for k, s in enumerate(event_shape))
    _check_dtype(dtype)
    seed, batch_size, progress, timeout = _check_common(seed, batch_size, progress, timeout)
    for key in ("generator", "shape", "x_T", "device", "dtype"):
        if key in sample_kwargs:
            raise TypeError(f"{key} is set by sdesolve.distributed.sample; do not pass it in sample_kwargs")
    # per-sample model inputs (n rows: class labels, embeddings) go with their samples' shard and batch
    score_model = bind_kwargs(as_model(model, sde), sample_kwargs.pop("model_kwargs", None))
    world, ok = _World(device, timeout), False
    try:
        world.agree(n=n, event_shape=event, seed=seed, batch_size=batch_size, dtype=str(dtype))

        def work(idx: range) -> Tensor:
            gens = index_generators(seed, idx, world.device)
            return _sample(
                sde, score_model.select(slice(idx.start, idx.stop)), (len(idx), *event), solver=solver,
                generator=gens, device=world.device, dtype=dtype, **sample_kwargs,
            )  # fmt: skip

        work.batch_size = batch_size  # type: ignore[attr-defined]
        outs = _run(world, n, work, progress, "sample")
        mine = shard(n, world.rank, world.size)
        local = torch.cat(outs) if outs else torch.empty((len(mine), *event), dtype=dtype, device=world.device)
        out = world.gather(local, n, event, dtype)
        ok = True
        return out
    finally:
        world.close(ok)


# ----------------------------------------------------------------------------- bits per dimension
@dataclass
class BitsPerDim:
    """What :func:`bits_per_dim` returns (the same on every rank).

    Attributes:
        bpd: each sample's bits/dim in index order, float64 CPU tensor (n,).
        mean: their mean (``math.fsum`` in index order, divided by n).
        standard_error: ``sqrt(sum (b_i - mean)^2 / (n - 1)) / sqrt(n)`` (NaN for n = 1).
        nfe: network evaluations of all ranks together (each a batched forward pass).
    """

    bpd: Tensor
    mean: float
    standard_error: float
    nfe: int


def bits_per_dim(
    sde: LinearSDE,
    model: ScoreLike,
    data: Any,
    *,
    seed: int = 0,
    batch_size: int = 64,
    device: Any = None,
    progress: bool = True,
    timeout: float = 1800.0,
    **bpd_kwargs: Any,
) -> BitsPerDim:
    """Bits/dim of every item of ``data``, sharded over the torchrun ranks; a :class:`BitsPerDim` on every rank.

    Item i's dequantization noise and Hutchinson probes come from its own generator (module
    docstring), and adaptive solves are per sample (``per_sample=True`` unless ``bpd_kwargs`` say
    otherwise), so each item's value is the same for any number of ranks and any ``batch_size``.

    Args:
        sde, model: as in :func:`sdesolve.bits_per_dim`.
        data: a tensor (N, *event), a ``torch.utils.data.Dataset`` (items tensors, or tuples whose first
            element is one) or a path to a ``.pt``/``.npy`` file (:func:`load_data`).
        seed, batch_size, device, progress, timeout: as in :func:`sample`.
        **bpd_kwargs: passed to :func:`sdesolve.bits_per_dim` (``data_range``, ``n_bits``,
            ``dequantize``, ``divergence``, ``method``, ``rtol``, ...; not ``generator``).

    Raises:
        DistributedError: on every rank when another rank failed (naming it and its error).
    """
    from .likelihood import bits_per_dim as _bits_per_dim
    from .model import as_model, bind_kwargs

    data = load_data(data)
    seed, batch_size, progress, timeout = _check_common(seed, batch_size, progress, timeout)
    if "generator" in bpd_kwargs:
        raise TypeError("generator is set by sdesolve.distributed.bits_per_dim; do not pass it in bpd_kwargs")
    if bpd_kwargs.get("method", "dopri5") in _adaptive_methods() and "steps" not in bpd_kwargs:
        bpd_kwargs.setdefault("per_sample", True)
    score_model = bind_kwargs(as_model(model, sde), bpd_kwargs.pop("model_kwargs", None))  # rows go with items
    n = len(data)
    world, ok = _World(device, timeout), False
    try:
        world.agree(n=n, seed=seed, batch_size=batch_size)
        nfe0 = score_model.nfe

        def work(idx: range) -> Tensor:
            x = _batch(data, idx, "data").to(world.device)
            gens = index_generators(seed, idx, world.device)
            m = score_model.select(slice(idx.start, idx.stop))
            return _bits_per_dim(sde, m, x, generator=gens, **bpd_kwargs).detach().to(torch.float64)

        work.batch_size = batch_size  # type: ignore[attr-defined]
        outs = _run(world, n, work, progress, "bits/dim")
        mine = shard(n, world.rank, world.size)
        local = torch.cat(outs) if outs else torch.empty(len(mine), dtype=torch.float64)
        values = world.gather(local, n, (), torch.float64)
        nfe = score_model.nfe - nfe0
        if world.size > 1:
            nfe = sum(int(v) for v in world._exchange("nfe", str(nfe)))
        ok = True
    finally:
        world.close(ok)
    return _summary(values, nfe)


def _adaptive_methods() -> tuple[str, ...]:
    from .solvers.methods import ADAPTIVE

    return tuple(ADAPTIVE)


def _summary(values: Tensor, nfe: int) -> BitsPerDim:
    """Mean and standard error reduced exactly (``math.fsum`` in index order)."""
    v = values.tolist()
    n = len(v)
    mean = math.fsum(v) / n
    se = math.sqrt(math.fsum((b - mean) ** 2 for b in v) / (n - 1)) / math.sqrt(n) if n > 1 else math.nan
    return BitsPerDim(bpd=values, mean=mean, standard_error=se, nfe=nfe)
