"""Per-step wall time of sdesolve's samplers against diffusers' schedulers and k-diffusion's sample_euler.

    python benchmarks/bench_samplers.py              # GPU: batch 256 x 3x32x32, 50 steps, float32
    python benchmarks/bench_samplers.py --graph      # also a CUDA-graph-captured sdesolve loop
    python benchmarks/bench_samplers.py --graph --compile  # and sample(..., compile=True) (inductor)
    python benchmarks/bench_samplers.py --quick      # tiny sizes, runs on CPU in seconds
    python benchmarks/bench_samplers.py --grid-study # CPU: which default grid each of DDIM / PLMS / DDPM gets

Problem: the discrete DDPM process of diffusers' default linear betas (N = 1000), data law a
Gaussian N(mu, s^2) per pixel, and the *exact* eps of that law as the "network" — a plain
elementwise function, so the model costs little and the sampler's own overhead shows. Every
method integrates the same 50 timesteps (diffusers' "leading" spacing 980, 960, ..., 0, then
alpha = 1) from the same x_T; the sanity column checks that methods that should agree do:

* DDIM(eta=0) = DDIMScheduler = k-diffusion sample_euler on sigma = sigma/alpha (the same map),
* PLMS = PNDMScheduler(skip_prk_steps=True), DDPM = DDPMScheduler (same generator, same noise),
* all others: distance of the sample moments to the exact data law.

Timing: CUDA events around the whole loop after a warm-up run of every method (compilation and
capture happen there), median of repeats taken round-robin (each repeat runs every method once, so
drift hits all alike), divided by the number of steps; "ms/call" divides by the run's network
calls, and its ratio column compares it with diffusers' DDIM step (one call per step). If ``import k_diffusion`` fails and its sources cannot be loaded either (see
``benchmarks/_peers.py``), a re-creation of its ``sample_euler`` loop written here is timed
instead and labelled "(re-creation)".
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sdesolve  # noqa: E402
from sdesolve import solvers as S  # noqa: E402

N_TRAIN = 1000


# ----------------------------------------------------------------------------- the problem
class Problem:
    """Discrete VP process (diffusers' default betas) and a per-pixel Gaussian data law with its exact eps."""

    def __init__(self, shape, device, dtype, steps):
        self.shape, self.device, self.dtype, self.steps = shape, device, dtype, steps
        betas = torch.linspace(1e-4, 0.02, N_TRAIN, dtype=torch.float32)  # diffusers' "linear"
        self.ac = torch.cumprod(1.0 - betas, 0)
        self.ac_dev = self.ac.to(device=device, dtype=dtype)
        ev = shape[1:]
        gen = torch.Generator().manual_seed(0)
        self.mu = (0.5 * torch.randn(ev, generator=gen)).to(device, dtype)
        self.s = 0.5
        self.sde = sdesolve.DiscreteVPSDE(alphas_cumprod=self.ac, t_min=0.0)
        self.sde_tmin = sdesolve.DiscreteVPSDE(alphas_cumprod=self.ac)  # t_min = 1/N, for score solvers
        ratio = N_TRAIN // steps
        self.timesteps = list(range(0, steps * ratio, ratio))[::-1]  # diffusers' "leading" spacing
        t = self.sde.timestep_to_t(torch.tensor(self.timesteps))
        self.grid = torch.cat([t, torch.zeros(1, dtype=torch.float64)])  # ... then alpha = 1 at t = 0
        self.grid_score = sdesolve.grids.uniform(self.sde_tmin, steps)
        self.x_T = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)

    def eps_net(self, x, k):
        """Exact eps of N(mu, s^2) at integer timestep k: sigma (x - alpha mu) / (alpha^2 s^2 + sigma^2)."""
        if not torch.is_tensor(k) or k.dim() == 0:
            k = torch.as_tensor(k, device=x.device).expand(x.shape[0])
        ac = self.ac_dev[k.to(x.device).round().long()].view(-1, *([1] * (x.dim() - 1)))
        sig2 = 1.0 - ac
        return sig2.sqrt() * (x - ac.sqrt() * self.mu) / (ac * self.s**2 + sig2)

    def denoiser(self, x, sigma):
        """k-diffusion's D(x, sigma) in the scaled variable x / alpha: exact E[x0 | x] of N(mu, s^2)."""
        sg = sigma.view(-1, *([1] * (x.dim() - 1)))
        return x - sg * sg * (x - self.mu) / (self.s**2 + sg * sg)

    def karras_sigmas(self):
        """sigma / alpha at the DDIM grid (ends with 0): the same schedule for k-diffusion's Euler."""
        sb = torch.exp(-0.5 * self.sde._log_snr(self.grid[:-1]))
        return torch.cat([sb, torch.zeros(1, dtype=torch.float64)]).to(self.device, self.dtype)

    def exact_moments(self):
        return self.mu, self.s


# ----------------------------------------------------------------------------- methods
def sdesolve_runner(P, solver, *, score_grid=False, generator=True, check_finite=True, compile=False):
    sde = P.sde_tmin if score_grid else P.sde
    grid = P.grid_score if score_grid else P.grid
    model = sdesolve.ScoreModel(P.eps_net, sde, prediction="eps")
    kw = {"compile": compile} if compile else {}

    def run():
        g = torch.Generator(device=P.device).manual_seed(7) if generator else None
        return sdesolve.sample(
            sde, model, x_T=P.x_T.clone(), solver=solver, grid=grid, generator=g, check_finite=check_finite, **kw
        )

    return run, model


def graph_runner(P, solver, *, score_grid=False):
    """sdesolve.GraphSampler: the loop captured once, replayed per call (x_T and noise in static buffers)."""
    sde = P.sde_tmin if score_grid else P.sde
    grid = P.grid_score if score_grid else P.grid
    model = sdesolve.ScoreModel(P.eps_net, sde, prediction="eps")
    sampler = sdesolve.GraphSampler(sde, model, P.shape, solver=solver, grid=grid, device=P.device, dtype=P.dtype)

    def run():
        g = torch.Generator(device=P.device).manual_seed(7)
        return sampler(P.x_T, generator=g)

    return run, sampler.nfe


def sdesolve_graph_runner(P, solver):
    """Capture the fixed-step loop (coefficients precomputed outside) in one CUDA graph."""
    from sdesolve.solvers.base import _to_device

    model = sdesolve.ScoreModel(P.eps_net, P.sde, prediction="eps")
    static_x = P.x_T.clone()
    coefs = _to_device(solver.init(P.sde, P.grid), static_x)
    n = P.grid.numel() - 1

    def loop():
        state = solver.init_state(static_x, coefs)
        for i in range(n):
            state = solver.step(model, state, i, coefs, generator=None, noise=i < n - 1)
        return state["x"]

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            loop()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = loop()

    def run():
        static_x.copy_(P.x_T)
        graph.replay()
        return out

    return run


def diffusers_runner(P, kind):
    import diffusers

    if kind == "ddim":
        sched = diffusers.DDIMScheduler(num_train_timesteps=N_TRAIN, clip_sample=False, set_alpha_to_one=True)
    elif kind == "pndm":
        sched = diffusers.PNDMScheduler(num_train_timesteps=N_TRAIN, skip_prk_steps=True, set_alpha_to_one=True)
    else:
        sched = diffusers.DDPMScheduler(num_train_timesteps=N_TRAIN, clip_sample=False)

    def run():
        sched.set_timesteps(P.steps)
        g = torch.Generator(device=P.device).manual_seed(7)
        x = P.x_T.clone()
        for t in sched.timesteps:
            eps = P.eps_net(x, t)
            if kind == "pndm":
                x = sched.step(eps, t, x).prev_sample
            else:
                x = sched.step(eps, t, x, generator=g).prev_sample
        return x

    return run


def sample_euler_recreation(model, x, sigmas):
    """A re-creation (written here) of k-diffusion's ``sample_euler`` with s_churn = 0:
    ``d = (x - D(x, sigma)) / sigma; x = x + d (sigma_next - sigma)``, one model call per step."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def kdiffusion_runner(P):
    try:
        from _peers import load_k_diffusion_sampling

        kd = load_k_diffusion_sampling()
    except Exception:
        kd = None
    sigmas = P.karras_sigmas()
    a_T = math.exp(float(P.sde._log_alpha(P.grid[:1])))

    if kd is not None:

        def run():
            return kd.sample_euler(P.denoiser, P.x_T / a_T, sigmas, disable=True)

        return run, "k-diffusion sample_euler"

    def run():
        return sample_euler_recreation(P.denoiser, P.x_T / a_T, sigmas)

    return run, "k-diffusion sample_euler (re-creation)"


# ----------------------------------------------------------------------------- timing
def time_once(run, device):
    """Wall time of one run in ms (CUDA events around it on a GPU), and its output."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = run()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end), out
    t0 = time.perf_counter()
    out = run()
    return 1e3 * (time.perf_counter() - t0), out


def time_round_robin(methods, repeats, device):
    """Median ms of each method's run over ``repeats`` rounds; every round runs every method once, in
    order, so a drift of the machine (clocks, other load) hits every method alike. A warm-up run of
    each method (compilation, capture, caches) comes first and is not timed."""
    outs = {}
    for m in methods:
        outs[m["name"]] = m["run"]()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = {m["name"]: [] for m in methods}
    for _ in range(repeats):
        for m in methods:
            ms, outs[m["name"]] = time_once(m["run"], device)
            times[m["name"]].append(ms)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def moment_error(x, P):
    """RMS over pixels of (mean - mu) / (s / sqrt(B)) (about 1 when right) and the mean std ratio to s."""
    xf = x.double()
    m = xf.mean(0)
    se = P.s / math.sqrt(x.shape[0])
    return float(((m - P.mu.double()) / se).pow(2).mean().sqrt()), float(xf.std(0).mean() / P.s)


def _count_nfe(run, model):
    """Network calls of one run (the run is made once more for it)."""
    model.nfe = 0
    run()
    return model.nfe


def main_timing(args):
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    if args.quick:
        shape, steps, repeats = (8, 3, 8, 8), 10, 2
    else:
        shape, steps, repeats = (args.batch, 3, 32, 32), args.steps, args.repeats
    P = Problem(shape, device, torch.float32, steps)
    print(
        f"# device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}"
    )
    print(f"# batch {shape}, {steps} steps, float32, median of {repeats} round-robin repeats after a warm-up\n")

    methods = []  # dicts: name, run, nfe, sanity (a key of the reference output or "moments")

    def add(name, run, nfe, sanity="moments"):
        methods.append({"name": name, "run": run, "nfe": nfe, "sanity": sanity})

    ODE, PC = getattr(S, "ODE", None), getattr(S, "PredictorCorrector", None)
    # sdesolve on the DDIM grid (ends at t = 0, alpha = 1): the eps / x0 space solvers
    eps_solvers = [
        ("DDIM(eta=0)", S.DDIM),
        ("PLMS", S.PLMS),
        ("DDPM", S.DDPM),
        ("DPMSolverPP(2)", lambda: S.DPMSolverPP(2)),
        ("DPMSolverPP(3)", lambda: S.DPMSolverPP(3)),
        ("UniPC", S.UniPC),
        ("DPMSolver(2)", lambda: S.DPMSolver(2)),
        ("EDMHeun", S.EDMHeun),
        ("EulerAncestral", S.EulerAncestral),
    ]
    # score-based solvers on a uniform grid to t_min = 1/N
    score_solvers = [("EulerMaruyama", S.EulerMaruyama)]
    if ODE is not None:
        score_solvers += [("ODE('euler')", lambda: ODE("euler")), ("ODE('heun')", lambda: ODE("heun"))]
    if PC is not None:
        score_solvers.append(("PredictorCorrector", PC))
    same_map = {"DDIM(eta=0)": "sdesolve DDIM(eta=0)", "PLMS": "sdesolve PLMS"}

    for label, make in eps_solvers + score_solvers:
        score_grid = (label, make) in score_solvers
        suffix = " [uniform t to 1/N]" if score_grid else ""
        try:
            run, model = sdesolve_runner(P, make(), score_grid=score_grid)
            add(f"sdesolve {label}{suffix}", run, _count_nfe(run, model))
        except Exception as e:
            print(f"# sdesolve {label} failed: {e!r}")
    run, model = sdesolve_runner(P, S.DDIM(), check_finite=False)
    add("sdesolve DDIM(eta=0), check_finite=False", run, _count_nfe(run, model), "sdesolve DDIM(eta=0)")

    peers = []
    try:
        import diffusers  # noqa: F401

        for name, kind, key in [
            ("diffusers DDIMScheduler", "ddim", "sdesolve DDIM(eta=0)"),
            ("diffusers PNDMScheduler(skip_prk)", "pndm", "sdesolve PLMS"),
            ("diffusers DDPMScheduler", "ddpm", "sdesolve DDPM"),
        ]:
            add(name, diffusers_runner(P, kind), steps + (1 if kind == "pndm" else 0), key)
            peers.append(name)
    except ImportError as e:
        print(f"# diffusers not importable ({e}); its rows are skipped")
    krun, kname = kdiffusion_runner(P)
    add(kname, krun, steps, "sdesolve DDIM(eta=0)")
    peers.append(kname)

    if args.graph and device.type == "cuda":
        # sdesolve.GraphSampler: the library's captured sampler (one graph launch per solve)
        for label, make in eps_solvers + score_solvers:
            score_grid = (label, make) in score_solvers
            suffix = " [uniform t to 1/N]" if score_grid else ""
            try:
                run, nfe = graph_runner(P, make(), score_grid=score_grid)
                add(f"sdesolve {label} GraphSampler{suffix}", run, nfe, same_map.get(label, "moments"))
            except Exception as e:
                print(f"# GraphSampler {label} failed: {e!r}")
    if args.compile and device.type == "cuda":
        # sample(..., compile=True): every step through torch.compile (inductor); compiled in the warm-up
        compiled = [("DDIM(eta=0)", S.DDIM, False), ("DDPM", S.DDPM, False), ("PLMS", S.PLMS, False)]
        compiled += [("EulerMaruyama", S.EulerMaruyama, True)]
        if PC is not None:
            compiled.append(("PredictorCorrector", PC, True))
        for label, make, score_grid in compiled:
            suffix = " [uniform t to 1/N]" if score_grid else ""
            try:
                run, model = sdesolve_runner(P, make(), score_grid=score_grid, compile=True)
                add(
                    f"sdesolve {label} compiled step{suffix}",
                    run,
                    _count_nfe(run, model),
                    same_map.get(label, "moments"),
                )
            except Exception as e:
                print(f"# compiled {label} failed: {e!r}")

    ms, outs = time_round_robin(methods, repeats, device)

    def sanity(m):
        out = outs[m["name"]]
        key = m["sanity"]
        if key == "moments":
            z, r = moment_error(out, P)
            return f"rms mean err {z:.2f} SE, std ratio {r:.3f}"
        if key not in outs:
            return "n/a"
        return f"max|x - {key}| = {float((out - outs[key]).abs().max()):.1e}"

    ddim_peer = "diffusers DDIMScheduler" if "diffusers DDIMScheduler" in ms else None
    per_call_ref = ms[ddim_peer] / steps if ddim_peer else None  # diffusers' DDIM: one call per step
    head = "| method | NFE | ms/step | ms/call |"
    if per_call_ref:
        head += " per call vs diffusers DDIMScheduler |"
    head += "".join(f" per step vs {p} |" for p in peers) + " sanity |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for m in methods:
        per_step, per_call = ms[m["name"]] / steps, ms[m["name"]] / m["nfe"]
        row = f"| {m['name']} | {m['nfe']} | {per_step:.3f} | {per_call:.3f} |"
        if per_call_ref:
            row += f" {per_call / per_call_ref:.2f} |"
        row += "".join(f" {ms[m['name']] / ms[p]:.2f} |" for p in peers)
        print(row + f" {sanity(m)} |")
    print("\nratio < 1: faster than the peer. Per call: the run's time over its network calls, against diffusers'")
    print("DDIMScheduler step (one call per step). Sanity: deterministic peers against the matching sdesolve sampler;")
    print("stochastic samplers and score solvers: sample mean error in standard errors and std ratio to the data law.")


# ----------------------------------------------------------------------------- grid study
def _study_problems():
    from sdesolve import VDMSDE, VESDE, VPSDE, CosineVPSDE, DiscreteVPSDE

    sdes = {
        "VP": VPSDE(),
        "VE": VESDE(),
        "cosine": CosineVPSDE(),
        "VDM": VDMSDE(t_min=1e-3),
        "DDPM-discrete": DiscreteVPSDE.from_schedule(),
    }
    gauss = sdesolve.Gaussian(torch.tensor([1.0, -0.5, 0.3]), torch.tensor([0.5, 2.0, 0.1]))
    mix = sdesolve.GaussianMixture([0.3, 0.7], torch.tensor([[-2.0], [1.5]]), torch.tensor([0.3, 0.5]))
    return sdes, gauss, mix


def _gauss_error(solver, sde, target, grid):
    """Exact KL(output law || true marginal at t_min), summed over coordinates.

    With the exact eps of a Gaussian law every step is affine in x plus independent noise,
    ``x' = a x + b eps(x) + c z``, so the output law is Gaussian; its mean and variance follow
    by pushing moments (stochastic solvers) or by pushing two points through the map.
    """
    model = target.model(sde)
    T, t_end = float(grid[0]), float(grid[-1])
    m_T = torch.zeros((1,) + target.event_shape, dtype=torch.float64)
    v_T = torch.full(target.event_shape, float(sde.prior_std) ** 2, dtype=torch.float64)
    if not solver.stochastic:
        y0 = solver.solve(sde, model, m_T, grid)
        y1 = solver.solve(sde, model, m_T + 1.0, grid)
        mean, var = y0[0], (y1 - y0)[0] ** 2 * v_T
    else:
        c = solver.init(sde, grid)
        mean, var = m_T[0], v_T
        for i in range(grid.numel() - 1):
            t = c["t"][i : i + 1]
            a_t, s_t = torch.exp(sde._log_alpha(t)), torch.exp(sde._log_sigma(t))
            vt = a_t**2 * target.std**2 + s_t**2
            k = c["a"][i] + c["b"][i] * s_t / vt  # d x' / d x
            mean = k * mean - c["b"][i] * s_t * a_t * target.mean / vt
            noise = c["c"][i] ** 2 if i < grid.numel() - 2 else 0.0
            var = k * k * var + noise
    m_true, v_true = target.marginal_moments(t_end, sde)
    kl = 0.5 * (var / v_true + (mean - m_true) ** 2 / v_true - 1.0 - torch.log(var / v_true))
    del T
    return float(kl.sum())


def _mixture_w1(solver, sde, target, grid, n=100_000):
    """W1 between the sampler's output and the exact 1-d marginal at the grid's end (exact CDF)."""
    from scipy.stats import norm

    model = target.model(sde)
    gen = torch.Generator().manual_seed(0)
    x = sde.prior_sample((n, 1), generator=gen, dtype=torch.float64)
    out = solver.solve(sde, model, x, grid, generator=gen)[:, 0].sort().values.numpy()
    t_end = torch.tensor(float(grid[-1]), dtype=torch.float64)
    a, s = float(torch.exp(sde._log_alpha(t_end))), float(torch.exp(sde._log_sigma(t_end)))
    import numpy as np

    xs = np.linspace(out[0] - 1, out[-1] + 1, 20001)
    F = np.zeros_like(xs)
    for w, m, sd in zip(target.weights.tolist(), target.means[:, 0].tolist(), target.stds[:, 0].tolist()):
        F += w * norm.cdf(xs, loc=a * m, scale=math.sqrt(a * a * sd * sd + s * s))
    F_emp = np.searchsorted(out, xs, side="right") / n
    return float(np.trapezoid(np.abs(F_emp - F), xs))


def main_grid_study(args):
    torch.set_num_threads(1)
    sdes, gauss, mix = _study_problems()
    grid_names = ["uniform", "quadratic", "log_snr", "karras"]
    solvers = [("DDIM(eta=0)", S.DDIM()), ("PLMS", S.PLMS()), ("DDPM", S.DDPM()), ("DDIM(eta=1)", S.DDIM(1.0))]
    steps_list = [10, 20, 50]
    print("Errors at the grid's end (t_min): Gaussian = exact KL (nats, 3 dims); mixture = W1 to the exact law")
    print("(1-d, 1e5 samples, noise floor ~ 3e-3). Score = geometric mean over problems and steps of error / best.\n")
    for sname, solver in solvers:
        ratios = {g: [] for g in grid_names}
        lines = []
        for pname, sde in sdes.items():
            for steps in steps_list:
                for tname, target, fn in [("gauss", gauss, _gauss_error), ("mix", mix, _mixture_w1)]:
                    errs = {}
                    for g in grid_names:
                        grid = sdesolve.grids.make_grid(g, sde, steps)
                        errs[g] = fn(solver, sde, target, grid)
                    best = min(errs.values())
                    for g in grid_names:
                        ratios[g].append(errs[g] / best if best > 0 else 1.0)
                    lines.append(
                        f"| {pname} | {tname} | {steps} | " + " | ".join(f"{errs[g]:.2e}" for g in grid_names) + " |"
                    )
        score = {g: math.exp(statistics.fmean(math.log(r) for r in ratios[g])) for g in grid_names}
        print(f"### {sname}\n")
        print("| process | target | steps | " + " | ".join(grid_names) + " |")
        print("|---|---|---|" + "---|" * len(grid_names))
        print("\n".join(lines))
        print("| **score** | | | " + " | ".join(f"**{score[g]:.2f}**" for g in grid_names) + " |")
        print(f"\nbest grid for {sname}: {min(score, key=score.get)}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU check of the script)")
    p.add_argument("--cpu", action="store_true", help="run on CPU even if CUDA is available")
    p.add_argument("--graph", action="store_true", help="also time a CUDA-graph-captured sdesolve loop")
    p.add_argument("--compile", action="store_true", help="also time sample(..., compile=True) (CUDA)")
    p.add_argument("--grid-study", action="store_true", help="measure the default grids (CPU)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    if args.grid_study:
        main_grid_study(args)
    else:
        main_timing(args)


if __name__ == "__main__":
    main()
