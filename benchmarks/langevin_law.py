"""The output law of the predictor–corrector samplers, measured: Langevin step rules and predictors.

Two tables (``notes/langevin.md`` holds a run):

1. ``--part predictors``: the **exact** output law of every predictor on Gaussian targets (an affine
   chain: ``tests/helpers.py:chain_moments``) over a panel of per-coordinate targets (``PANEL``:
   variances 0.01 to 4, non-zero means), ours (the default and each ``discretization``) against
   score_sde's chain (``sampling.py`` / ``sde_lib.py`` of yang-song/score_sde_pytorch, re-written here
   as float64 affine maps: the grid ``linspace(T, eps, N)`` with ``eps`` from its ``run_lib.py``, 1e-3
   on VP and sub-VP, 1e-5 on VE; VP ``beta_i = discrete_betas[(t (N-1)).long()]``, VE
   ``discrete_sigmas`` with the last step into sigma = 0, sub-VP Euler with ``dt = 1/N``, EM with
   ``dt = -1/N``), at equal network calls (N), without or with the annealed corrector, N = 100 and
   1000. Each chain is judged against the law it targets: ours p_{t_min}, score_sde's the data
   (its EM steps add up to T, its VE chain ends at sigma = 0, its VP chain is DDPM's down to x_0).
   The re-written chain was checked against score_sde's own ``update_fn``s (``notes/langevin.md``).
2. ``--part langevin``: sampled output laws of the full sampler (reverse diffusion + Langevin
   corrector, snr 0.16, one step) for each step rule, on an isotropic Gaussian (excess variance,
   pooled over coordinates, with its standard error) and on a two-mode mixture (the weight of the
   heavier mode against 0.7, with its standard error), at D = 2, 4, 16, 64, 3072 on VP, sub-VP and VE.
   ``score_sde`` is their whole sampler (their reverse diffusion and batch-mean Langevin rule).

Run: ``python benchmarks/langevin_law.py --part predictors`` (CPU, a minute) and
``python benchmarks/langevin_law.py --part langevin --device cuda`` (a GPU: D = 3072 at N = 1000).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import sdesolve as sd  # noqa: E402
from sdesolve.solvers.predictor_corrector import (  # noqa: E402
    AncestralPredictor,
    AnnealedLangevinCorrector,
    EulerMaruyamaPredictor,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusionPredictor,
)

BETA_MIN, BETA_MAX, SIGMA_MIN, SIGMA_MAX = 0.1, 20.0, 0.01, 50.0
#: score_sde's sampling eps per process (run_lib.py: 1e-3 for vpsde and subvpsde, 1e-5 for vesde)
SCORE_SDE_EPS = {"vp": 1e-3, "subvp": 1e-3, "ve": 1e-5}
PROCESSES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}
#: the processes of ours alone (score_sde has no counterpart): part 1 reports ours only
OURS_ONLY = {
    "vdm": sd.VDMSDE,
    "cosine": sd.CosineVPSDE,
    "discrete": lambda: sd.DiscreteVPSDE.from_schedule("linear", 1000),
}
#: (mean, std) per coordinate: variances 0.01 to 4, non-zero means
PANEL = ((0.5, 0.1), (-1.0, 0.2), (1.0, 0.5), (-2.0, 1.0), (0.3, 1.5), (2.0, 2.0))


# ----------------------------------------------------------------------------- score_sde, re-written
def _score_sde_coefs(kind: str, N: int, t: float):
    """score_sde's per-step quantities at grid time t: the DDPM/SMLD index and its discrete values."""
    k = int(torch.tensor(t, dtype=torch.float32) * (N - 1))  # (t * (N - 1) / T).long()
    betas = torch.linspace(BETA_MIN / N, BETA_MAX / N, N, dtype=torch.float64)
    sigmas = torch.exp(torch.linspace(math.log(SIGMA_MIN), math.log(SIGMA_MAX), N, dtype=torch.float64))
    beta = float(betas[k])
    sig, adj = float(sigmas[k]), (float(sigmas[k - 1]) if k > 0 else 0.0)
    return k, beta, sig, adj


def score_sde_step(kind: str, pred: str, N: int, t: float, S, c):
    """score_sde's predictor at t for a linear score ``s = S x + c``: ``x' = A x + b + sqrt(C2) z`` (or None)."""
    _, beta, sig, adj = _score_sde_coefs(kind, N, t)
    bt = BETA_MIN + t * (BETA_MAX - BETA_MIN)
    if pred == "rd":
        if kind == "vp":
            fm, G2 = math.sqrt(1 - beta) - 1, beta
        elif kind == "ve":
            fm, G2 = 0.0, sig**2 - adj**2
        else:  # sub-VP has no discretize(): SDE.discretize is Euler with dt = 1/N
            fm, G2 = -0.5 * bt / N, bt * (1 - math.exp(-2 * BETA_MIN * t - (BETA_MAX - BETA_MIN) * t * t)) / N
        return 1 - fm + G2 * S, G2 * c, G2
    if pred == "em":
        if kind == "ve":
            f, g2 = 0.0, (SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t) ** 2 * 2 * math.log(SIGMA_MAX / SIGMA_MIN)
        else:
            f = -0.5 * bt
            g2 = bt if kind == "vp" else bt * (1 - math.exp(-2 * BETA_MIN * t - (BETA_MAX - BETA_MIN) * t * t))
        return 1 - f / N + g2 * S / N, g2 * c / N, g2 / N
    if kind == "vp":
        r = math.sqrt(1 - beta)
        return (1 + beta * S) / r, beta * c / r, beta
    if kind == "ve":
        d = sig**2 - adj**2
        return 1 + d * S, d * c, adj**2 * d / sig**2
    return None  # ancestral sampling: VP and VE only


def score_sde_alpha(kind: str, N: int, t: float) -> float:
    """score_sde's Langevin factor ``alphas[timestep]`` (VP's for sub-VP, which lacks it and would crash)."""
    _, beta, _, _ = _score_sde_coefs(kind, N, t)
    return 1.0 if kind == "ve" else 1.0 - beta


def score_sde_moments(kind, pred, N, mean, std, *, corrector=False, snr=0.16, denoise=False, eps=None):
    """Exact per-coordinate mean and variance of score_sde's PC chain on N(mean, std^2) from exact p_T.

    ``eps``: the end of its grid ``linspace(T, eps, N)``; None: score_sde's own (``SCORE_SDE_EPS``).
    """
    sde = PROCESSES[kind]()
    eps = SCORE_SDE_EPS[kind] if eps is None else eps

    def ac(t):
        t = torch.tensor(t, dtype=torch.float64)
        return float(torch.exp(sde._log_alpha(t))), float(torch.exp(sde._log_sigma(t)))

    a, s = ac(1.0)
    m, v = a * mean, a * a * std**2 + s * s
    ts = torch.linspace(1.0, eps, N, dtype=torch.float64).tolist()
    for i, t in enumerate(ts):
        a, s = ac(t)
        var = a * a * std**2 + s * s
        S, c = -1.0 / var, a * mean / var
        if corrector:  # AnnealedLangevinDynamics: eps = 2 alpha (snr std)^2
            e = 2 * score_sde_alpha(kind, N, t) * (snr * s) ** 2
            m, v = (1 + e * S) * m + e * c, (1 + e * S) ** 2 * v + 2 * e
        step = score_sde_step(kind, pred, N, t, S, c)
        if step is None:
            return None
        A, b, C2 = step
        m, v = A * m + b, A * A * v + (0.0 if (denoise and i == N - 1) else C2)
    return m, v  # the law of x_0 (data: N(mean, std^2))


# ----------------------------------------------------------------------------- part 1: predictors
PREDICTORS = {
    "rd": lambda d: ReverseDiffusionPredictor() if d is None else ReverseDiffusionPredictor(discretization=d),
    "anc": lambda d: AncestralPredictor() if d is None else AncestralPredictor(discretization=d),
    "em": lambda d: EulerMaruyamaPredictor() if d is None else EulerMaruyamaPredictor(discretization=d),
}
#: the discretizations each predictor offers (besides its default)
DISCRETIZATIONS = {"rd": ("midpoint", "song"), "anc": ("midpoint", "song"), "em": ("midpoint", "song", "sliding")}
NAMES = {"rd": "reverse diffusion", "anc": "ancestral", "em": "Euler-Maruyama"}
TARGET_2D = ((1.0, 0.5), (-2.0, 2.0))  # tests/helpers.py:TARGET_2D: (mean, std) per coordinate


def _process(kind):
    return (PROCESSES | OURS_ONLY)[kind]()


def ours_error(kind, pred, d, N, *, corrector, denoise, target=PANEL):
    """The worst over the target's coordinates of |relative variance error| and |mean error| / std of our
    chain's exact output law against p_{t_min}; ``d`` None: the predictor's default. None if it does not apply."""
    from helpers import chain_moments

    sde = _process(kind)
    solver = PredictorCorrector(PREDICTORS[pred](d), AnnealedLangevinCorrector(0.16, 1) if corrector else None)
    try:
        solver.check(sde)
    except ValueError:
        return None
    g = sd.Gaussian(torch.tensor([m for m, _ in target]), torch.tensor([s for _, s in target]))
    m, v = chain_moments(
        solver, sde, g.model(sde), sd.grids.uniform(sde, N), *g.marginal_moments(sde.T, sde), denoise=denoise
    )
    m0, v0 = g.marginal_moments(sde.t_min, sde)
    return float(torch.maximum((v - v0).abs() / v0, (m - m0).abs() / v0.sqrt()).max())


def theirs_error(kind, pred, N, *, corrector, denoise, target=PANEL):
    """The same measure for score_sde's chain, against the data law it targets; None where it has no chain."""
    if kind not in PROCESSES:
        return None
    errs = []
    for mean, std in target:
        r = score_sde_moments(kind, pred, N, mean, std, corrector=corrector, denoise=denoise)
        if r is None:
            return None
        m, v = r
        errs.append(max(abs(v / std**2 - 1), abs(m - mean) / std))
    return max(errs)


def part_predictors(denoise=False, kinds=("vp", "subvp", "ve", "vdm", "cosine", "discrete"), steps=(100, 1000)):
    pct = lambda e: "   -   " if e is None else f"{100 * e:7.3f}"  # noqa: E731
    for corr in (False, True):
        print(
            f"\n### {'annealed corrector' if corr else 'predictor alone'}, denoise={denoise}: worst |relative "
            "variance error| or |mean error| / std over PANEL's six coordinates, %\n"
        )
        print(
            "| process | N | predictor | ours (default) | midpoint | song | sliding (score_sde's points) | score_sde's chain |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for kind in kinds:
            for N in steps:
                for pred in PREDICTORS:
                    kw = dict(corrector=corr, denoise=denoise)
                    default = ours_error(kind, pred, None, N, **kw)
                    if default is None:
                        continue
                    o = {d: ours_error(kind, pred, d, N, **kw) for d in DISCRETIZATIONS[pred]}
                    t = theirs_error(kind, pred, N, **kw)
                    print(
                        f"| {kind} | {N} | {NAMES[pred]} | {pct(default)} | {pct(o['midpoint'])} | {pct(o['song'])} "
                        f"| {pct(o.get('sliding'))} | {pct(t)} |",
                        flush=True,
                    )


# ----------------------------------------------------------------------------- part 2: Langevin rules
def _targets(D: int):
    gauss = sd.Gaussian(torch.full((D,), 0.7), torch.full((D,), 0.5))
    u = torch.ones(D) / math.sqrt(D)
    mix = sd.GaussianMixture(torch.tensor([0.3, 0.7]), torch.stack([-1.5 * u, 1.5 * u]), torch.tensor([0.5, 0.5]))
    return gauss, mix, u


def score_sde_sample(kind, N, model, x, snr=0.16, generator=None, denoise=True):
    """score_sde's pc_sampler (reverse diffusion + batch-mean Langevin), driven by our exact model."""
    ts = torch.linspace(1.0, SCORE_SDE_EPS[kind], N, dtype=torch.float64).tolist()
    for t in ts:
        tt = torch.tensor(t, dtype=torch.float64, device=x.device)
        al = score_sde_alpha(kind, N, t)
        s = model.score(x, tt)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        gn = torch.linalg.vector_norm(s.reshape(s.shape[0], -1), dim=-1).mean()
        nn = torch.linalg.vector_norm(z.reshape(z.shape[0], -1), dim=-1).mean()
        e = (snr * nn / gn) ** 2 * 2 * al
        x = x + e * s + torch.sqrt(2 * e) * z
        s = model.score(x, tt)
        _, beta, sig, adj = _score_sde_coefs(kind, N, t)
        bt = BETA_MIN + t * (BETA_MAX - BETA_MIN)
        if kind == "vp":
            fm, G2 = math.sqrt(1 - beta) - 1, beta
        elif kind == "ve":
            fm, G2 = 0.0, sig**2 - adj**2
        else:
            fm, G2 = -0.5 * bt / N, bt * (1 - math.exp(-2 * BETA_MIN * t - (BETA_MAX - BETA_MIN) * t * t)) / N
        x_mean = x - fm * x + G2 * s
        x = x_mean + math.sqrt(G2) * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x_mean if denoise else x


def _pc_solver(rule):
    """The sampler of a rule: reverse diffusion (midpoint) + the Langevin corrector with that rule.

    ``mala``: the default corrector (Metropolis-adjusted, the sigma step); ``mala_song``: the same with
    the predictor at t_i (``discretization="song"``), which reuses the corrector's score (no extra
    network call); ``sigma``: the sigma step without Metropolis (ULA, the default before);
    ``batch`` / ``sample``: the norm rules; ``none``: the predictor alone.
    """
    if rule == "none":
        return PredictorCorrector(ReverseDiffusionPredictor(), None)
    if rule in ("mala", "mala_song"):
        disc = "song" if rule == "mala_song" else "midpoint"
        return PredictorCorrector(ReverseDiffusionPredictor(discretization=disc), LangevinCorrector(snr=0.16))
    return PredictorCorrector(
        ReverseDiffusionPredictor(), LangevinCorrector(snr=0.16, n_steps=1, step_rule=rule, metropolis=False)
    )


def _run(kind, rule, N, target, n, device, seed, denoise=True):
    """Samples, the time their law is compared at, the mean acceptance rate (NaN without Metropolis), NFE/step."""
    from sdesolve.solvers.base import _to_device, run_steps

    sde = PROCESSES[kind]()
    gen = torch.Generator(device).manual_seed(seed)
    x_T = target.marginal_sample(n, sde.T, sde, generator=gen, dtype=torch.float32).to(device)
    model = target.model(sde)
    if rule == "score_sde":
        return score_sde_sample(kind, N, model, x_T, generator=gen, denoise=denoise), 0.0, math.nan, 2
    solver = _pc_solver(rule)
    grid = sd.grids.uniform(sde, N)
    coefs = _to_device(solver.init(sde, grid), x_T)
    state = run_steps(solver, model, solver.init_state(x_T, coefs), coefs, N, generator=gen, denoise=denoise)
    acc = state.get("acceptance")
    return state["x"], sde.t_min, (float(acc.mean()) if acc is not None else math.nan), solver.nfe_on(sde)


def part_langevin(device, dims, steps, kinds, rules, seed=0, denoise=True):
    print(f"\ndenoise={denoise}, device {device}\n")
    print(
        "| process | D | N | n | step rule | NFE/step | acceptance | excess variance % (SE) | mean error / SE "
        "| weight error (pts) (SE) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        sde = PROCESSES[kind]()
        for D in dims:
            gauss, mix, u = _targets(D)
            n = int(min(20000, max(1000, 4e6 // D)))
            for N in steps:
                for rule in rules:
                    t0 = time.time()
                    x, t_end, acc, nfe = _run(kind, rule, N, gauss, n, device, seed, denoise)
                    m0, v0 = gauss.marginal_moments(t_end, sde)
                    x = x.double().cpu()
                    ok = torch.isfinite(x).all(dim=1)
                    xv = x[ok]
                    ratio = float((xv.var(0) / v0).mean()) - 1.0
                    se_v = math.sqrt(2.0 / (xv.shape[0] * D))
                    mean_z = float(((xv.mean(0) - m0) / v0.sqrt()).mean()) * math.sqrt(xv.shape[0] * D)
                    xm, _, _, _ = _run(kind, rule, N, mix, n, device, seed + 1, denoise)
                    xm = xm.double().cpu()
                    okm = torch.isfinite(xm).all(dim=1)
                    w = float(((xm[okm] @ u.double()) > 0).double().mean())
                    se_w = math.sqrt(0.21 / max(int(okm.sum()), 1))
                    bad = n - int(ok.sum()) + n - int(okm.sum())
                    print(
                        f"| {kind} | {D} | {N} | {n} | {rule} | {nfe} | {acc:.4f} | {100 * ratio:+7.2f} ({100 * se_v:.2f}) "
                        f"| {mean_z:+6.1f} | "
                        f"{100 * (w - 0.7):+6.2f} ({100 * se_w:.2f}) |" + (f" {bad} non-finite" if bad else ""),
                        flush=True,
                    )
                    print(f"<!-- {time.time() - t0:.1f}s -->", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["predictors", "langevin"], required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dims", default="2,4,16,64,3072")
    ap.add_argument("--steps", default=None, help="default: 1000,100 (langevin), 100,1000 (predictors)")
    ap.add_argument("--processes", default=None, help="default: vp,subvp,ve (langevin), and vdm,cosine,discrete")
    ap.add_argument("--rules", default="mala,mala_song,sigma,batch,sample,none,score_sde")
    ap.add_argument("--no-denoise", action="store_true", help="keep the last step's noise (compare with p_{t_min})")
    ap.add_argument("--denoise", action="store_true", help="part predictors: drop the last step's noise")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.steps is None:
        args.steps = "100,1000" if args.part == "predictors" else "1000,100"
    if args.processes is None:
        args.processes = "vp,subvp,ve,vdm,cosine,discrete" if args.part == "predictors" else "vp,subvp,ve"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "predictors":
        part_predictors(
            denoise=args.denoise, kinds=args.processes.split(","), steps=[int(n) for n in args.steps.split(",")]
        )
    else:
        part_langevin(
            args.device,
            [int(d) for d in args.dims.split(",")],
            [int(s) for s in args.steps.split(",")],
            args.processes.split(","),
            args.rules.split(","),
            denoise=not args.no_denoise,
        )


if __name__ == "__main__":
    main()
