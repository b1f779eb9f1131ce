"""Per-step wall time of sdesolve's samplers against diffusers' schedulers and k-diffusion's sample_euler.

    python benchmarks/bench_samplers.py              # GPU: batch 256 x 3x32x32, 50 steps, float32
    python benchmarks/bench_samplers.py --graph      # also a CUDA-graph-captured sdesolve loop
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

Timing: CUDA events around the whole loop after a warm-up run, median of repeats, divided by the
number of steps. If ``import k_diffusion`` fails and its sources cannot be loaded either (see
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
def sdesolve_runner(P, solver, *, score_grid=False, generator=True, check_finite=True):
    sde = P.sde_tmin if score_grid else P.sde
    grid = P.grid_score if score_grid else P.grid
    model = sdesolve.ScoreModel(P.eps_net, sde, prediction="eps")

    def run():
        g = torch.Generator(device=P.device).manual_seed(7) if generator else None
        return sdesolve.sample(
            sde, model, x_T=P.x_T.clone(), solver=solver, grid=grid, generator=g, check_finite=check_finite
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
def time_it(run, steps, repeats, device):
    run()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            out = run()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times) / steps, out


def moment_error(x, P):
    """RMS over pixels of (mean - mu) / (s / sqrt(B)) (about 1 when right) and the mean std ratio to s."""
    xf = x.double()
    m = xf.mean(0)
    se = P.s / math.sqrt(x.shape[0])
    return float(((m - P.mu.double()) / se).pow(2).mean().sqrt()), float(xf.std(0).mean() / P.s)


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
    print(f"# batch {shape}, {steps} steps, float32, median of {repeats} repeats after a warm-up\n")

    rows = []  # (name, nfe, ms/step, sanity)

    def add(name, run, nfe, sanity_fn):
        ms, out = time_it(run, steps, repeats, device)
        rows.append((name, nfe, ms, sanity_fn(out)))
        return out

    ref = {}

    def vs(key):
        return lambda out: f"max|x - {key}| = {float((out - ref[key]).abs().max()):.1e}" if key in ref else "n/a"

    def moments(out):
        z, r = moment_error(out, P)
        return f"rms mean err {z:.2f} SE, std ratio {r:.3f}"

    # sdesolve on the DDIM grid (ends at t = 0, alpha = 1)
    for name, solver in [("sdesolve DDIM(eta=0)", S.DDIM()), ("sdesolve PLMS", S.PLMS()), ("sdesolve DDPM", S.DDPM())]:
        run, model = sdesolve_runner(P, solver)
        run()
        model.nfe = 0
        run()
        nfe = model.nfe
        out = add(name, run, nfe, moments)
        ref[name] = out

    run, _ = sdesolve_runner(P, S.DDIM(), check_finite=False)
    add("sdesolve DDIM(eta=0), check_finite=False", run, steps, vs("sdesolve DDIM(eta=0)"))

    peers = {}
    try:
        import diffusers  # noqa: F401

        for name, kind, key in [
            ("diffusers DDIMScheduler", "ddim", "sdesolve DDIM(eta=0)"),
            ("diffusers PNDMScheduler(skip_prk)", "pndm", "sdesolve PLMS"),
            ("diffusers DDPMScheduler", "ddpm", "sdesolve DDPM"),
        ]:
            ms_before = len(rows)
            add(name, diffusers_runner(P, kind), steps + (1 if kind == "pndm" else 0), vs(key))
            peers[name] = rows[ms_before][2]
    except ImportError as e:
        print(f"# diffusers not importable ({e}); its rows are skipped")
    krun, kname = kdiffusion_runner(P)
    idx = len(rows)
    add(kname, krun, steps, vs("sdesolve DDIM(eta=0)"))
    peers[kname] = rows[idx][2]

    # score-based sdesolve solvers on a uniform grid to t_min = 1/N
    others = [("sdesolve EulerMaruyama", S.EulerMaruyama())]
    ODE = getattr(S, "ODE", None)
    if ODE is not None:
        others += [("sdesolve ODE('euler')", ODE("euler")), ("sdesolve ODE('heun')", ODE("heun"))]
    PC = getattr(S, "PredictorCorrector", None)
    if PC is not None:
        try:
            others.append(("sdesolve PredictorCorrector", PC()))
        except Exception as e:  # pragma: no cover - depends on the peer's signature
            print(f"# PredictorCorrector() could not be built: {e!r}")
    for name, solver in others:
        run, model = sdesolve_runner(P, solver, score_grid=True)
        try:
            run()
        except Exception as e:
            print(f"# {name} failed: {e!r}")
            continue
        model.nfe = 0
        run()
        add(name + " [uniform t to 1/N]", run, model.nfe, moments)

    if args.graph and device.type == "cuda":
        # sdesolve.GraphSampler: the library's captured sampler (one graph launch per solve).
        graph_solvers = [
            ("sdesolve DDIM(eta=0) GraphSampler", S.DDIM(), False, vs("sdesolve DDIM(eta=0)")),
            ("sdesolve PLMS GraphSampler", S.PLMS(), False, vs("sdesolve PLMS")),
            ("sdesolve DDPM GraphSampler", S.DDPM(), False, moments),
            ("sdesolve EulerMaruyama GraphSampler [uniform t to 1/N]", S.EulerMaruyama(), True, moments),
        ]
        if ODE is not None:
            graph_solvers.append(("sdesolve ODE('heun') GraphSampler [uniform t to 1/N]", ODE("heun"), True, moments))
        if PC is not None:
            graph_solvers.append(("sdesolve PredictorCorrector GraphSampler [uniform t to 1/N]", PC(), True, moments))
        for name, solver, score_grid, sanity in graph_solvers:
            run, nfe = graph_runner(P, solver, score_grid=score_grid)
            add(name, run, nfe, sanity)

    peer_names = list(peers)
    head = "| method | NFE | ms/step | " + " | ".join(f"ratio vs {p}" for p in peer_names) + " | sanity |"
    print(head)
    print("|" + "---|" * (4 + len(peer_names)))
    for name, nfe, ms, sanity in rows:
        ratios = " | ".join(f"{ms / peers[p]:.2f}" for p in peer_names)
        print(f"| {name} | {nfe} | {ms:.3f} | {ratios} | {sanity} |")
    print("\nratio < 1: faster than the peer. Sanity: deterministic peers against the matching sdesolve sampler;")
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
