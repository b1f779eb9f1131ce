"""sdesolve.distributed: sharding over torchrun ranks (gloo on CPU), against the single-process run.

Claims tested: ``torchrun --nproc_per_node=2`` gives bitwise the samples (float64) and the per-sample
bits/dim of the single-process run with the same seed, for other batch sizes too; the summary is the
exact (fsum) reduction of the per-sample values; a rank that raises ends every rank with its error,
the others stopping at their next batch; ranks given different arguments refuse with a line naming
the argument; data as a tensor, a Dataset or a .pt/.npy file give the same values.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import sdesolve as sd
from sdesolve import distributed as dd

ROOT = Path(__file__).resolve().parents[1]
TARGET = sd.Gaussian(torch.linspace(-1.0, 1.0, 4), torch.linspace(0.2, 0.9, 4))
SDE = sd.VPSDE()
MODEL = TARGET.model(SDE)
DATA = torch.randint(0, 256, (10, 4), generator=torch.Generator().manual_seed(0))
BPD = dict(divergence="hutchinson", rtol=1e-5, atol=1e-5)

# the script each rank runs: the sampler and bits/dim of the single-process tests below
_COMMON = """
import os, sys, time, torch
import sdesolve as sd
from sdesolve import distributed as dd
TARGET = sd.Gaussian(torch.linspace(-1.0, 1.0, 4), torch.linspace(0.2, 0.9, 4))
SDE = sd.VPSDE()
MODEL = TARGET.model(SDE)
DATA = torch.randint(0, 256, (10, 4), generator=torch.Generator().manual_seed(0))
RANK = int(os.environ["RANK"])
OUT = sys.argv[1]
"""

_MATCH = """
x = dd.sample(SDE, MODEL, 10, (4,), solver=sd.EulerMaruyama(), steps=20, seed=7, batch_size=3, dtype=torch.float64,
              progress=False)
xo = dd.sample(SDE, MODEL, 10, (4,), solver=sd.ODE("dopri5", per_sample=True), seed=7, batch_size=2,
               dtype=torch.float64, progress=False)
r = dd.bits_per_dim(SDE, MODEL, DATA, seed=7, batch_size=4, progress=False, divergence="hutchinson",
                    rtol=1e-5, atol=1e-5)
torch.save({"x": x, "xo": xo, "bpd": r.bpd, "mean": r.mean, "se": r.standard_error, "nfe": r.nfe},
           f"{OUT}.{RANK}")
"""

_FAIL = """
try:  # ranks given different arguments refuse, each with a line naming the argument
    dd.sample(SDE, MODEL, 10 + RANK, (4,), solver=sd.DDIM(), steps=5, progress=False)
except ValueError as e:
    open(f"{OUT}.mismatch.{RANK}", "w").write(str(e))

def score(x, t):  # rank 1 raises at once; rank 0 is slow (20 batches of 0.3 s) and must stop early
    if RANK == 1:
        raise RuntimeError("boom on rank 1")
    time.sleep(0.3)
    open(f"{OUT}.batches.{RANK}", "a").write("x")
    return MODEL.score(x, t)

dd.sample(SDE, score, 40, (4,), solver=sd.DDIM(), steps=1, batch_size=1, progress=False, timeout=60)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(body: str, tmp_path: Path, timeout: float = 150.0) -> tuple[subprocess.CompletedProcess, float]:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(_COMMON) + textwrap.dedent(body))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    t0 = time.monotonic()
    done = subprocess.run(
        [*cmd, str(script), str(tmp_path / "out")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    return done, time.monotonic() - t0


def test_torchrun_two_ranks_equal_the_single_process_run(tmp_path):
    done, _ = _torchrun(_MATCH, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"out.{r}") for r in (0, 1)]
    # one process, other batch sizes: the same samples bitwise and the same per-sample bits/dim
    x = dd.sample(SDE, MODEL, 10, (4,), solver=sd.EulerMaruyama(), steps=20, seed=7, batch_size=10,
                  dtype=torch.float64, progress=False)  # fmt: skip
    xo = dd.sample(SDE, MODEL, 10, (4,), solver=sd.ODE("dopri5", per_sample=True), seed=7, batch_size=7,
                   dtype=torch.float64, progress=False)  # fmt: skip
    r = dd.bits_per_dim(SDE, MODEL, DATA, seed=7, batch_size=3, progress=False, **BPD)
    for got in ranks:  # every rank holds everything
        assert torch.equal(got["x"], x) and torch.equal(got["xo"], xo)
        torch.testing.assert_close(got["bpd"], r.bpd, rtol=1e-6, atol=0)  # float32 likelihoods
        assert got["mean"] == pytest.approx(r.mean, rel=1e-6) and got["se"] == pytest.approx(r.standard_error, rel=1e-5)
        assert got["mean"] == math.fsum(got["bpd"].tolist()) / 10  # the exact reduction
    assert ranks[0]["nfe"] == ranks[1]["nfe"] > 0


def test_a_failing_rank_ends_every_rank_with_its_error(tmp_path):
    done, seconds = _torchrun(_FAIL, tmp_path)
    assert done.returncode != 0
    for r in (0, 1):
        text = (tmp_path / f"out.mismatch.{r}").read_text()
        assert "the ranks disagree on n: rank" in text and "every rank must get the same arguments" in text
    assert "RuntimeError: boom on rank 1" in done.stderr  # rank 1's own error
    assert "DistributedError: rank 0 stopped: rank 1 failed: RuntimeError: boom on rank 1" in done.stderr
    ran = tmp_path / "out.batches.0"  # absent when rank 0 saw the failure before its first batch
    batches = ran.read_text() if ran.exists() else ""
    assert len(batches) < 20, len(batches)  # rank 0 stopped at its next batch, not after its 20
    assert seconds < 150


# ----------------------------------------------------------------------------- one process
def test_index_seeds_and_shards():
    seeds = {dd.index_seed(7, i) for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**64 for s in seeds)
    assert dd.index_seed(7, 3) != dd.index_seed(8, 3)
    g = dd.index_generators(7, [3])[0]
    assert torch.equal(
        torch.randn(5, generator=g), torch.randn(5, generator=torch.Generator().manual_seed(dd.index_seed(7, 3)))
    )
    for n in (1, 7, 10, 64):
        for w in (1, 2, 3, 8):
            blocks = [dd.shard(n, r, w) for r in range(w)]
            assert [i for b in blocks for i in b] == list(range(n))  # contiguous, in order, complete
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.parametrize(
    "solver", [sd.EulerMaruyama(), sd.DDPM(), sd.ODE("bosh3", per_sample=True)], ids=["EM", "DDPM", "bosh3"]
)
def test_samples_do_not_depend_on_the_batch_size(solver):
    kw = dict(solver=solver, seed=3, dtype=torch.float64, progress=False)
    steps = {} if getattr(solver, "adaptive", False) else {"steps": 10}
    a = dd.sample(SDE, MODEL, 9, (4,), batch_size=9, **kw, **steps)
    b = dd.sample(SDE, MODEL, 9, (4,), batch_size=2, **kw, **steps)
    assert torch.equal(a, b)
    one = sd.sample(SDE, MODEL, (1, 4), generator=dd.index_generators(3, [5]), dtype=torch.float64, solver=solver,
                    **steps)  # fmt: skip
    assert torch.equal(one[0], a[5])  # sample 5 is the single-process sample of its own generator


class _Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return DATA.shape[0]

    def __getitem__(self, i):
        return DATA[i], int(i % 3)  # (image, label), torchvision's convention


def test_bits_per_dim_over_a_tensor_a_dataset_and_files(tmp_path):
    ref = dd.bits_per_dim(SDE, MODEL, DATA, seed=1, batch_size=10, progress=False, **BPD)
    torch.save(DATA, tmp_path / "d.pt")
    np.save(tmp_path / "d.npy", DATA.numpy())
    for data in (_Pairs(), tmp_path / "d.pt", str(tmp_path / "d.npy")):
        got = dd.bits_per_dim(SDE, MODEL, data, seed=1, batch_size=3, progress=False, **BPD)
        torch.testing.assert_close(got.bpd, ref.bpd, rtol=1e-6, atol=0)
    v = ref.bpd.tolist()
    mean = math.fsum(v) / len(v)
    assert ref.mean == mean
    assert ref.standard_error == pytest.approx(float(ref.bpd.std()) / math.sqrt(len(v)), rel=1e-12)
    assert ref.bpd.dtype == torch.float64 and ref.nfe > 0
    # against the exact bits/dim of the dequantized data (Hutchinson, one probe: unbiased, noisy)
    assert 5 < ref.mean < 20


def test_torchrun_environment_is_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="WORLD_SIZE=2 but RANK is not set: start the job with torchrun"):
        dd.sample(SDE, MODEL, 4, (4,), solver=sd.DDIM(), steps=2, progress=False)
    assert dd.launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not dd.launched()


_NCCL = """
x = dd.sample(SDE, MODEL, 10, (4,), solver=sd.EulerMaruyama(), steps=20, seed=7, batch_size=3, dtype=torch.float64,
              device="cuda", progress=False)
r = dd.bits_per_dim(SDE, MODEL, DATA, seed=7, batch_size=4, device="cuda", progress=False,
                    divergence="hutchinson", rtol=1e-5, atol=1e-5)
torch.save({"x": x, "bpd": r.bpd, "backend": torch.distributed.get_backend()}, f"{OUT}.{RANK}")
"""


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_nccl_two_gpus_equal_one_gpu(tmp_path):
    """torchrun over two GPUs (NCCL) gives the samples and bits/dim of one GPU (per-index CUDA generators)."""
    done, _ = _torchrun(_NCCL, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    x = dd.sample(SDE, MODEL, 10, (4,), solver=sd.EulerMaruyama(), steps=20, seed=7, batch_size=10,
                  dtype=torch.float64, device="cuda", progress=False)  # fmt: skip
    r = dd.bits_per_dim(SDE, MODEL, DATA, seed=7, batch_size=10, device="cuda", progress=False, **BPD)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"out.{rank}")
        assert got["backend"] == "nccl"
        assert torch.equal(got["x"], x)
        torch.testing.assert_close(got["bpd"], r.bpd, rtol=1e-5, atol=0)


@pytest.mark.slow
def test_cli_under_torchrun_equals_the_library_run(tmp_path):
    """``torchrun -m sdesolve likelihood`` / ``sample``: rank 0 writes what sdesolve.distributed gives in one process."""
    (tmp_path / "netmod.py").write_text(
        "import torch, sdesolve as sd\n"
        "T = sd.Gaussian(torch.linspace(-1.0, 1.0, 4), torch.linspace(0.2, 0.9, 4))\n"
        "def score():\n    return T.model(sd.VPSDE())\n"
    )
    np.save(tmp_path / "d.npy", DATA.numpy())
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    model = ["--model", f"{tmp_path / 'netmod.py'}:score", "--prediction", "score", "--quiet"]
    for cmd in (
        ["likelihood", *model, "--data", str(tmp_path / "d.npy"), "--batch-size", "3", "--out", str(tmp_path / "b.pt")],
        ["sample", *model, "--solver", "ddim", "--steps", "10", "-n", "5", "--shape", "4", "--no-png",
         "--out", str(tmp_path / "s.pt")],
    ):  # fmt: skip
        done = subprocess.run(
            [*run, f"--master_port={_free_port()}", "-m", "sdesolve", *cmd],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    sde = MODEL.sde
    ref = dd.bits_per_dim(sde, MODEL, DATA, seed=0, batch_size=10, progress=False, **BPD)
    torch.testing.assert_close(torch.load(tmp_path / "b.pt"), ref.bpd, rtol=1e-6, atol=0)
    x = dd.sample(sde, MODEL, 5, (4,), solver=sd.DDIM(), steps=10, seed=0, progress=False)
    assert torch.equal(torch.load(tmp_path / "s.pt"), x)


_HANG = """
def score(x, t):  # rank 1 hangs (never raises); rank 0 gives up after timeout=5 s
    if RANK == 1:
        time.sleep(600)
    return MODEL.score(x, t)

dd.sample(SDE, score, 4, (4,), solver=sd.DDIM(), steps=1, batch_size=1, progress=False, timeout=5)
"""


@pytest.mark.slow
def test_a_hanging_rank_ends_the_job_after_the_timeout(tmp_path):
    done, seconds = _torchrun(_HANG, tmp_path)
    assert done.returncode != 0
    assert "ranks [1] did not report within timeout=5 s" in done.stderr, done.stderr[-3000:]
    assert seconds < 120  # not the 600 s of the hanging rank


def test_an_initialized_group_is_used_and_a_mismatched_world_size_refused(monkeypatch):
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        monkeypatch.setenv("WORLD_SIZE", "2")
        with pytest.raises(ValueError, match="WORLD_SIZE=2 in the environment but the initialized process group has 1"):
            dd.sample(SDE, MODEL, 4, (4,), solver=sd.DDIM(), steps=2, progress=False)
        monkeypatch.delenv("WORLD_SIZE")
        x = dd.sample(SDE, MODEL, 4, (4,), solver=sd.DDIM(), steps=2, seed=1, progress=False)
        assert dist.is_initialized()  # the caller's group is left as it was
    finally:
        dist.destroy_process_group()
    assert torch.equal(x, dd.sample(SDE, MODEL, 4, (4,), solver=sd.DDIM(), steps=2, seed=1, progress=False))


def _labelled_score(x, t, class_labels):
    """A score network whose class c moves the mean by c (a per-sample input of n rows)."""
    shift = class_labels.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
    return MODEL.score(x - SDE.alpha(t).reshape(-1, *([1] * (x.dim() - 1))) * shift, t)


def test_per_sample_model_kwargs_go_with_their_samples():
    labels = torch.arange(9) % 3
    model = sd.ScoreModel(_labelled_score, SDE, "score")
    kw = dict(solver=sd.DDIM(), steps=8, seed=5, dtype=torch.float64, progress=False)
    a = dd.sample(SDE, model, 9, (4,), batch_size=9, model_kwargs={"class_labels": labels}, **kw)
    b = dd.sample(SDE, model, 9, (4,), batch_size=2, model_kwargs={"class_labels": labels}, **kw)
    assert torch.equal(a, b)  # labels sliced with each batch, not the first rows every time
    for i in (0, 4, 8):  # sample i is the single-process sample of its own label and generator
        one = sd.sample(SDE, model, (1, 4), solver=sd.DDIM(), steps=8, generator=dd.index_generators(5, [i]),
                        dtype=torch.float64, model_kwargs={"class_labels": labels[i : i + 1]})  # fmt: skip
        assert torch.equal(one[0], a[i])
    assert not torch.equal(a[0], a[1])  # the labels matter
    data = torch.randint(0, 256, (6, 4), generator=torch.Generator().manual_seed(1))
    lab = torch.arange(6) % 2
    r2 = dd.bits_per_dim(SDE, model, data, seed=2, batch_size=2, progress=False, model_kwargs={"class_labels": lab},
                         divergence="exact", method="rk4", steps=8)  # fmt: skip
    r6 = dd.bits_per_dim(SDE, model, data, seed=2, batch_size=6, progress=False, model_kwargs={"class_labels": lab},
                         divergence="exact", method="rk4", steps=8)  # fmt: skip
    torch.testing.assert_close(r2.bpd, r6.bpd, rtol=1e-6, atol=0)
