"""Bad input to ``sdesolve.distributed``: the data (type, items, files), the counts, the seed, the
arguments the functions set themselves, and the torchrun environment (one process, world size 1)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from sdesolve import DDIM, VPSDE, Gaussian
from sdesolve import distributed as dd

from . import Case

_SDE = VPSDE()
_MODEL = Gaussian(torch.zeros(2), torch.ones(2)).model(_SDE)
_DATA = torch.randint(0, 256, (3, 2))
_TMP = tempfile.mkdtemp(prefix="sdesolve-catalogue-")


def _bpd(data, **kw):
    return lambda: dd.bits_per_dim(_SDE, _MODEL, data, progress=False, **kw)


def _sample(n=3, event_shape=(2,), **kw):
    kw.setdefault("solver", DDIM())
    kw.setdefault("steps", 2)
    return lambda: dd.sample(_SDE, _MODEL, n, event_shape, progress=False, **kw)


class _Strings(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return "not a tensor"


class _Ragged(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return torch.zeros(2 + i, dtype=torch.long)


class _Empty(torch.utils.data.Dataset):
    def __len__(self):
        return 0

    def __getitem__(self, i):
        raise IndexError(i)


def _file(name, write):
    path = os.path.join(_TMP, name)
    write(path)
    return path


def _objects_npy(path):
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


def _in_env(fn, **env):
    def call():
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return fn()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return call


CASES = [
    # --- data: a tensor (N, *event), a Dataset of tensors, or a .pt/.npy file
    Case(
        "dist-data-list", _bpd([[1, 2]]), TypeError, r"data must be a tensor \(N, \*event\), a torch.utils.data.Dataset"
    ),
    Case(
        "dist-data-1d",
        _bpd(torch.zeros(3, dtype=torch.long)),
        ValueError,
        r"data must be a tensor \(N, \*event\) with N >= 1",
    ),
    Case(
        "dist-data-empty",
        _bpd(torch.zeros(0, 2, dtype=torch.long)),
        ValueError,
        r"data must be a tensor .*N >= 1, got shape \(0, 2\)",
    ),
    Case(
        "dist-data-items-not-tensors",
        _bpd(_Strings()),
        TypeError,
        r"data\[0\] must be a tensor \(or a tuple whose first element is one\), got str",
    ),
    Case("dist-data-items-ragged", _bpd(_Ragged()), ValueError, r"data: items 0..1 have different shapes"),
    Case("dist-data-dataset-empty", _bpd(_Empty()), ValueError, r"data is an empty dataset"),
    Case("dist-data-no-file", _bpd(os.path.join(_TMP, "missing.pt")), ValueError, r"data: no file '.*missing.pt'"),
    Case(
        "dist-data-suffix",
        _bpd(_file("d.txt", lambda p: open(p, "w").write("1 2"))),
        ValueError,
        r"data: '.*d.txt' must be a .pt, .pth or .npy file",
    ),
    Case(
        "dist-data-npy-objects",
        _bpd(_file("o.npy", _objects_npy)),
        ValueError,
        r"data: '.*o.npy' is not a tensor file \(ValueError",
    ),
    Case(
        "dist-data-pt-not-tensor",
        _bpd(_file("l.pt", lambda p: torch.save([1, 2], p))),
        ValueError,
        r"data: '.*l.pt' holds a list, expected one tensor",
    ),
    Case(
        "dist-data-pt-garbage",
        _bpd(_file("g.pt", lambda p: open(p, "wb").write(b"not a zip"))),
        ValueError,
        r"data: '.*g.pt' is not a tensor file",
    ),
    # --- counts, seed, options
    Case("dist-sample-n-zero", _sample(n=0), ValueError, r"n must be an int >= 1, got 0"),
    Case("dist-sample-n-float", _sample(n=3.0), TypeError, r"n must be an int, got 3.0"),
    Case("dist-sample-event-int", _sample(event_shape=2), TypeError, r"event_shape must be a tuple of ints"),
    Case(
        "dist-sample-event-zero",
        _sample(event_shape=(2, 0)),
        ValueError,
        r"event_shape\[1\] must be an int >= 1, got 0",
    ),
    Case("dist-sample-dtype", _sample(dtype=torch.long), TypeError, r"dtype must be a floating torch.dtype"),
    Case(
        "dist-sample-seed-negative",
        _sample(seed=-1),
        ValueError,
        r"seed must be an int in \[0, 18446744073709551615\], got -1",
    ),
    Case("dist-sample-batch-zero", _sample(batch_size=0), ValueError, r"batch_size must be an int >= 1, got 0"),
    Case("dist-sample-timeout", _sample(timeout=0), ValueError, r"timeout must be a finite positive number"),
    Case("dist-sample-progress", _sample(progress_bar=1), TypeError, r"progress_bar"),
    Case(
        "dist-sample-generator",
        _sample(generator=torch.Generator()),
        TypeError,
        r"generator is set by sdesolve.distributed.sample",
    ),
    Case("dist-sample-device", _sample(device="gpu0"), ValueError, r"device must name a torch device"),
    Case(
        "dist-bpd-generator",
        _bpd(_DATA, generator=torch.Generator()),
        TypeError,
        r"generator is set by sdesolve.distributed.bits_per_dim",
    ),
    Case("dist-bpd-seed-string", _bpd(_DATA, seed="1"), TypeError, r"seed must be an int, got '1'"),
    Case("dist-bpd-batch-bool", _bpd(_DATA, batch_size=True), TypeError, r"batch_size must be an int, got True"),
    Case(
        "dist-index-seed-negative",
        lambda: dd.index_seed(0, -1),
        ValueError,
        r"index must be an int in \[0, 18446744073709551615\], got -1",
    ),
    Case("dist-shard-rank", lambda: dd.shard(10, 2, 2), ValueError, r"rank must be an int in \[0, 1\], got 2"),
    # --- the torchrun environment
    Case(
        "dist-env-no-rank",
        _in_env(_sample(), WORLD_SIZE="2", RANK=""),
        ValueError,
        r"WORLD_SIZE=2 but RANK is not set: start the job with torchrun",
    ),
]
