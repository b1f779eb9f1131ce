"""Benchmark: per-sample adaptive solves against batch-shared ones (ours and torchdiffeq's dopri5).

Issue 10 item 3: an adaptive probability-flow solve in which each sample has its own step size
and accept/reject (``AdaptiveODE(per_sample=True)``, ``log_likelihood(per_sample=True)``) makes a
sample's result independent of its batch neighbours. This script measures what it costs, against
two batch-shared solves: ours (``per_sample=False``: the worst sample's step for everyone, error
norm the worst sample's RMS for sampling, the RMS of the whole batch for the likelihood) and
torchdiffeq's ``odeint(method="dopri5")`` on the same vector field (batch-shared, RMS of the whole
flattened state, steps past the end and interpolates back).

Problems (exact answers from a Gaussian data law with per-coordinate means and standard deviations):
  * sampling: x_T drawn exactly from p_T, integrated to t_min; error against ``Gaussian.flow``;
  * likelihood: x drawn exactly from p_{t_min}; exact divergence; the prior replaced by the exact
    log p_T (so only the integration error remains); error against ``marginal_log_prob`` in nats.

Columns: wall time (CUDA events on a GPU, after a warm-up, median of ``--repeats``), the batched
network calls (NFE: what the wall time pays for), the mean of each sample's own evaluations
(per-sample solves: the work a sample needed), and the maximum and median per-sample error.
Compare methods at equal error (the per-sample solve's error per sample is that of solving it
alone; the batch-shared one spends more steps on the easy samples, so it is more accurate at the
same tolerance): the table has several tolerances for that.

A second table interpolates each method's time and NFE (log-log, between its tolerances) to the
maximum errors the batch-shared sdesolve solve reached: the comparison at equal error.

Run:  python benchmarks/bench_adaptive.py --device cuda                 (H200: B=256, D=3072 sampling)
      python benchmarks/bench_adaptive.py --device cuda --dtype float64 --tols 1e-3 1e-4 1e-5 1e-6 1e-7
      python benchmarks/bench_adaptive.py --smoke                       (CPU check, seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import sdesolve as sd  # noqa: E402
from sdesolve.likelihood import _augmented_dynamics, _check_log_likelihood, _TimeMap  # noqa: E402

PROCESSES = {"VP": sd.VPSDE, "subVP": sd.SubVPSDE, "VE": sd.VESDE, "VDM": sd.VDMSDE}


def timed(fn, device: torch.device, repeats: int):
    """(last result, median seconds) of ``repeats`` runs after one warm-up; CUDA events on a GPU."""
    fn()
    times, out = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def _target(dim: int, device) -> sd.Gaussian:
    """Per-coordinate means N(0, 1) and standard deviations in [0.05, 1.05) (held on the host; the exact
    score copies them to the device once)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(dim, generator=g, dtype=torch.float64)
    std = 0.05 + torch.rand(dim, generator=g, dtype=torch.float64)
    return sd.Gaussian(mean, std)


# ----------------------------------------------------------------------------- sampling
def bench_sampling(proc: str, dim: int, batch: int, tol: float, device, dtype, repeats: int) -> list[dict]:
    sde = PROCESSES[proc]()
    target = _target(dim, device)
    model = target.model(sde)
    x_T = target.marginal_sample(batch, sde.T, sde, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    exact = target.flow(x_T, sde.T, sde.t_min, sde)
    rows = []
    for name, per_sample in (("sdesolve per-sample", True), ("sdesolve shared", False)):
        solver = sd.ODE("dopri5", rtol=tol, atol=tol, per_sample=per_sample)
        x, sec = timed(lambda s=solver: sd.sample(sde, model, x_T=x_T, solver=s), device, repeats)
        own = solver.last_nfe_per_sample
        rows.append(_row("sample", proc, name, tol, sec, solver.last_nfe, own, x, exact, batch))
    import torchdiffeq

    flow = sde.probability_flow(model)
    t = torch.tensor([float(sde.T), float(sde.t_min)], dtype=dtype, device=device)
    count = [0]

    def drift(tt, y):
        count[0] += 1
        return flow.drift(y, tt.to(torch.float64))

    def run():
        count[0] = 0
        with torch.no_grad():
            return torchdiffeq.odeint(drift, x_T, t, rtol=tol, atol=tol, method="dopri5")[-1]

    x, sec = timed(run, device, repeats)
    rows.append(_row("sample", proc, "torchdiffeq dopri5", tol, sec, count[0], None, x, exact, batch))
    return rows


def _row(task, proc, name, tol, sec, nfe, own, got, exact, batch) -> dict:
    err = (got.to(torch.float64) - exact.to(torch.float64)).abs().reshape(batch, -1).amax(dim=1)
    return {
        "task": task, "process": proc, "method": name, "tol": tol, "seconds": sec, "nfe": int(nfe),
        "nfe_per_sample": float(own.double().mean()) if own is not None else float(nfe),
        "max_error": float(err.max()), "median_error": float(err.median()),
    }  # fmt: skip


# ----------------------------------------------------------------------------- likelihood
def bench_likelihood(proc: str, dim: int, batch: int, tol: float, device, dtype, repeats: int) -> list[dict]:
    sde = PROCESSES[proc]()
    target = _target(dim, device)
    model = target.model(sde)
    x = target.marginal_sample(batch, float(sde.t_min), sde, generator=torch.Generator().manual_seed(2))
    x = x.to(device, dtype)
    exact = target.marginal_log_prob(x, float(sde.t_min), sde).to(torch.float64)

    def prior(z):
        return target.marginal_log_prob(z, float(sde.T), sde)

    kw = dict(divergence="exact", rtol=tol, atol=tol, prior_logp=prior)
    rows = []
    for name, per_sample in (("sdesolve per-sample", True), ("sdesolve shared", False)):
        res, sec = timed(lambda p=per_sample: sd.log_likelihood(sde, model, x, per_sample=p, **kw), device, repeats)
        rows.append(_row("likelihood", proc, name, tol, sec, res.nfe, None, res.logp[:, None], exact[:, None], batch))
    # torchdiffeq's dopri5 on the same augmented dynamics (the same divergence and coefficients)
    import torchdiffeq

    plan = _check_log_likelihood(
        sde, x, divergence="exact", probe="rademacher", n_probes=1, method="dopri5", rtol=tol, atol=tol,
        t_min=None, steps=None, generator=None, return_latent=False, time_variable="auto", prior_logp=prior,
        grad=False, chunk_size=None, solver_options=None, cuda_graph=False, max_nfe=10_000,
    )  # fmt: skip
    tmap = _TimeMap(sde, plan.time_variable, plan.t_min)
    xw = x.to(plan.dtype)
    func = _augmented_dynamics(sde, sd.model.as_model(model, sde), tmap, plan, xw, None)
    count = [0]

    def counted(u, y):
        count[0] += 1
        return func(u.to(torch.float64), y)

    y0 = torch.cat([xw.reshape(-1), torch.zeros(batch, dtype=plan.dtype, device=device)])
    u = torch.tensor([tmap.u0, tmap.u1], dtype=plan.dtype, device=device)

    def run():
        count[0] = 0
        with torch.no_grad():
            yT = torchdiffeq.odeint(counted, y0, u, rtol=tol, atol=tol, method="dopri5")[-1]
        z = yT[:-batch].view(x.shape)
        return prior(z).to(torch.float64) + yT[-batch:].to(torch.float64)

    logp, sec = timed(run, device, repeats)
    rows.append(
        _row("likelihood", proc, "torchdiffeq dopri5", tol, sec, count[0], None, logp[:, None], exact[:, None], batch)
    )
    return rows


# ----------------------------------------------------------------------------- main
def _table(rows: list[dict]) -> str:
    head = "| task | process | tol | method | time (s) | NFE | NFE/sample | max error | median error |"
    lines = [head, "|" + " --- |" * 9]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['process']} | {r['tol']:.0e} | {r['method']} | {r['seconds']:.4f} | {r['nfe']} | "
            f"{r['nfe_per_sample']:.1f} | {r['max_error']:.2e} | {r['median_error']:.2e} |"
        )
    return "\n".join(lines)


def at_equal_error(rows: list[dict]) -> str:
    """Each method's time and NFE interpolated (log-log, between its tolerances) to the max errors the
    batch-shared sdesolve solve reached: which method is faster at equal error."""
    lines = ["| task | process | max error | method | time (s) | NFE |", "|" + " --- |" * 6]
    keys = sorted({(r["task"], r["process"]) for r in rows})
    for task, proc in keys:
        mine = [r for r in rows if r["task"] == task and r["process"] == proc]
        refs = sorted((r["max_error"] for r in mine if r["method"] == "sdesolve shared"), reverse=True)
        for err in refs:
            for method in ("sdesolve per-sample", "sdesolve shared", "torchdiffeq dopri5"):
                pts = sorted(
                    ((r["max_error"], r["seconds"], r["nfe"]) for r in mine if r["method"] == method), reverse=True
                )
                got = _interp(pts, err)
                cell = f"{got[0]:.4f} | {got[1]:.0f}" if got else "outside its tolerances | -"
                lines.append(f"| {task} | {proc} | {err:.2e} | {method} | {cell} |")
    return "\n".join(lines)


def _interp(pts: list[tuple[float, float, int]], err: float):
    """(time, NFE) at ``err`` by log-log interpolation between two measured points bracketing it."""
    for (e0, s0, n0), (e1, s1, n1) in zip(pts, pts[1:]):
        if e1 <= err <= e0 and e0 > 0 and e1 > 0:
            w = 0.0 if e0 == e1 else (math.log(err) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp((1 - w) * math.log(s0) + w * math.log(s1)), math.exp(
                (1 - w) * math.log(n0) + w * math.log(n1)
            )
    for e, sec, nfe in pts:
        if e == err:
            return sec, nfe
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (seconds): checks the script works")
    p.add_argument("--processes", nargs="+", default=list(PROCESSES), choices=list(PROCESSES))
    p.add_argument("--tols", nargs="+", type=float, default=[1e-3, 1e-4, 1e-5], help="rtol = atol values")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=3072, help="sampling dimension (3x32x32)")
    p.add_argument("--lik-batch", type=int, default=256)
    p.add_argument("--lik-dim", type=int, default=64, help="likelihood dimension (exact divergence: D products)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.processes, args.tols = "cpu", ["VP"], [1e-4]
        args.batch, args.dim, args.lik_batch, args.lik_dim, args.repeats = 4, 8, 4, 4, 1
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"# bench_adaptive on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"torch {torch.__version__}; sampling B={args.batch} D={args.dim}, likelihood B={args.lik_batch} "
          f"D={args.lik_dim}, {dtype}, median of {args.repeats}")  # fmt: skip
    rows: list[dict] = []
    for proc in args.processes:
        for tol in args.tols:
            rows += bench_sampling(proc, args.dim, args.batch, tol, device, dtype, args.repeats)
            rows += bench_likelihood(proc, args.lik_dim, args.lik_batch, tol, device, dtype, args.repeats)
    print(_table(rows))
    if len(args.tols) > 1:
        print(
            "\n## At equal error (interpolated between tolerances; errors those of the batch-shared sdesolve solve)\n"
        )
        print(at_equal_error(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r for r in rows if not math.isfinite(r["max_error"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
