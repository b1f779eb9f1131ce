"""The accuracy benchmark's CPU smoke run (benchmarks/bench_accuracy.py --smoke): it runs, every
sampler keeps its network-call budget, and the table it writes holds sane numbers."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    pytest.importorskip("diffusers")
    sys.path.insert(0, BENCH)
    try:
        import bench_accuracy
    finally:
        sys.path.remove(BENCH)
    out = tmp_path_factory.mktemp("acc")
    assert bench_accuracy.main(["--smoke", "--out", str(out)]) == 0
    with open(out / "results.json") as f:
        return out, json.load(f), bench_accuracy


def test_smoke_run_writes_the_tables(smoke):
    out, rows, _ = smoke
    text = (out / "results.md").read_text()
    assert "| problem | NFE | sdesolve best |" in text and "## All runs" in text
    for problem in ("gaussian", "mixture", "network"):
        assert problem in text
        ours = [r for r in rows if r["problem"] == problem and r["library"] == "sdesolve"]
        assert {r["grid"].split()[0] for r in ours} >= {"log_snr", "optimized"}
        assert any(r["library"] == "diffusers" for r in rows if r["problem"] == problem)
    ve = [r for r in rows if r["problem"] == "mixture_ve"]  # EDM's process: ours end with final_x0
    assert ve and all(r["grid"].endswith("+final_x0") for r in ve if r["library"] == "sdesolve")
    assert not any(r["library"] == "diffusers" for r in ve)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "accuracy.png").stat().st_size > 0


def test_every_sampler_keeps_its_budget_and_gives_a_finite_error(smoke):
    """The call count is the network wrapper's own, final_x0 included; the error is finite and >= 0."""
    _, rows, _ = smoke
    assert rows
    for r in rows:
        assert 1 <= r["nfe"] <= r["nfe_budget"], r
        assert math.isfinite(r["error"]) and r["error"] >= 0.0, r


def test_gaussian_kl_is_zero_for_the_exact_map(smoke):
    """The KL of the Gaussian problem is exact: pushing the two probes through the exact flow
    (``Gaussian.flow``) gives KL = 0 to round-off, and a 1 % scale error gives the closed form."""
    _, _, bench = smoke
    import torch

    p = bench.gaussian_problem(8, "cpu")
    exact = p.target.flow(p.x_T, p.sde.T, 0.0, p.sde)
    assert p.error(exact)["error"] < 1e-12
    scaled = torch.stack([exact[0], exact[0] + 1.01 * (exact[1] - exact[0])])
    kl = 8 * 0.5 * (1.01**2 - 1.0 - math.log(1.01**2))
    assert p.error(scaled)["error"] == pytest.approx(kl, rel=1e-9)
