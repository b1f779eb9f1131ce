"""Draw docs/img/accuracy.png: the error of each deterministic sampler against its network evaluations.

Problem: the exact probability-flow map of a Gaussian data law (16 coordinates, means in [-1, 1],
standard deviations from 0.05 to 1) under ``VPSDE()``; 512 draws x_T of the exact p_T are mapped from T to
t_min by each solver on its default grid, and compared with the exact flow ``Gaussian.flow`` (float64).
Error: RMS over draws and coordinates. Run on a CPU in about a minute:

    python docs/img/accuracy.py            # writes docs/img/accuracy.png and prints the table

``benchmarks/bench_accuracy.py`` measures the same kind of curve on more problems; this script draws the
picture of the documentation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import sdesolve as sd

STEPS = [5, 8, 10, 15, 20, 30, 50, 100]


def solvers():
    out = [
        ("ODE('euler')", lambda: sd.ODE("euler")),
        ("ODE('heun')", lambda: sd.ODE("heun")),
        ("ODE('rk4')", lambda: sd.ODE("rk4")),
        ("DDIM", sd.DDIM),
        ("PLMS", sd.PLMS),
    ]
    for name, make in [
        ("DPMSolverPP(2)", lambda: sd.DPMSolverPP(2)),
        ("UniPC(2)", lambda: sd.UniPC(2)),
        ("DPMSolver(3)", lambda: sd.DPMSolver(3)),
        ("EDMHeun", lambda: sd.EDMHeun()),
    ]:
        if hasattr(sd, name.split("(")[0]):
            out.append((name, make))
    return out


def measure(n: int = 512, dim: int = 16, seed: int = 0):
    sde = sd.VPSDE()
    mean = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)
    std = torch.logspace(-1.3, 0.0, dim, dtype=torch.float64)
    target = sd.Gaussian(mean, std)
    model = target.model(sde)
    x_T = target.marginal_sample(n, sde.T, sde, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    results = {}
    for name, make in solvers():
        rows = []
        for steps in STEPS:
            model.nfe = 0
            x = sd.sample(sde, model, solver=make(), steps=steps, x_T=x_T.clone())
            grid_end = sde.t_min
            exact = target.flow(x_T, sde.T, grid_end, sde)
            err = float((x - exact).pow(2).mean().sqrt())
            rows.append((model.nfe, err))
        results[name] = rows
    return results


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, rows in results.items():
        nfe, err = zip(*rows)
        ax.loglog(nfe, err, marker="o", ms=3, label=name)
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("RMS error of x at t_min (exact flow)")
    ax.set_title("Deterministic samplers, Gaussian data (D = 16), VPSDE", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    results = measure()
    print(f"{'solver':<16}" + "".join(f"{s:>12}" for s in STEPS) + "   (steps; NFE, error)")
    for name, rows in results.items():
        print(f"{name:<16}" + "".join(f"{n}:{e:.1e}".rjust(12) for n, e in rows))
    out = Path(__file__).with_name("accuracy.png") if not argv else Path(argv[0])
    plot(results, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
