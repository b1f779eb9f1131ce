"""Accuracy against network calls: sdesolve's deterministic samplers against diffusers and k-diffusion (issue 12).

    python benchmarks/bench_accuracy.py --smoke --out /tmp/acc          # CPU, seconds (CI: tests/test_bench_accuracy.py)
    python benchmarks/bench_accuracy.py --device cuda --out bench_out   # the full run, one H200, a few minutes

Every sampler integrates the probability-flow ODE of the same process (diffusers' discrete
linear-beta VP schedule, 1000 steps, beta 1e-4..0.02) from the **same x_T** at timestep 999 down to
sigma = 0, within a budget of network calls (5, 8, 10, 20), counted by the network wrapper itself:
a solver that needs ``steps`` intervals gets the largest ``steps`` whose count fits, and
``final_x0`` (the model's x0 prediction after the last step, grid ending at the first training
timestep) is one of those calls. The optimized grid's pilot solve (:func:`sdesolve.grids.optimized`,
65 calls on a separate pilot batch, once per grid) is not counted per sample: it is a one-time cost.

Problems (all in float64, so the error is the method's):

* ``gaussian``: N(mu, diag(s^2)) in D = 1024 (``--smoke``: 16). Every sampler is an affine map of
  x_T on a Gaussian law (the exact eps is affine in x), so two probes, x_T = m_T and m_T + sd_T (the
  exact p_T's mean and one standard deviation up), give the output law N(m, v) exactly; the error
  is ``KL(N(m, v) || N(mu, s^2))`` in nats (0 for an exact solver, whatever the step count).
* ``mixture``: 4 well-separated diagonal Gaussians in D = 64 (weights 0.1..0.4); exact score
  (``sdesolve.GaussianMixture``). Error: RMS over samples and coordinates of the output minus a
  float64 reference solve (``ODE("dopri5", rtol=atol=1e-10)``); also the largest difference of
  the fraction of samples in each mode against the reference's.
* ``network``: an eps-MLP trained here with ``sdesolve.dsm_loss`` on scikit-learn's 8x8 digits
  (64 dims; a synthetic 10-mode law if scikit-learn is missing). Error: RMS against a reference
  solve at rtol = atol = 1e-7.

Peers run their real code: diffusers' schedulers through the pipeline loop (``set_timesteps``,
``scale_model_input``, ``step``) with the network called at the scheduler's timesteps, and
k-diffusion's samplers on its Karras sigmas between the schedule's sigma_min and sigma_max (exact
denoiser for the exact problems, its ``DiscreteEpsDDPMDenoiser`` around the network). The exact
eps a diffusers scheduler receives at a (possibly fractional) timestep is that of sigma interpolated
in log sigma between the training timesteps, the convention of diffusers' and k-diffusion's
``_sigma_to_t``.

Output in ``--out``: ``results.md`` (the summary and the full table: problem, NFE, sampler, grid,
error, ratio to the best peer), ``results.json`` and ``accuracy.png`` (error against NFE; skipped
with a message when matplotlib is missing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sdesolve as sd  # noqa: E402
from sdesolve import grids  # noqa: E402

N_TRAIN = 1000
NFES = (5, 8, 10, 20)
DTYPE = torch.float64


# ----------------------------------------------------------------------------- the process
def discrete_schedule():
    """diffusers' default linear betas: (alphas_cumprod float64, log k-diffusion sigmas at the integer timesteps)."""
    betas = torch.linspace(1e-4, 0.02, N_TRAIN, dtype=torch.float64)
    ac = torch.cumprod(1.0 - betas, 0)
    return ac, 0.5 * torch.log((1.0 - ac) / ac)


def sigma_of_timestep(k: Tensor, log_sigmas: Tensor) -> Tensor:
    """k-diffusion sigma = sigma/alpha at a (fractional) timestep: log sigma interpolated between knots."""
    k = k.to(torch.float64).clamp(0, N_TRAIN - 1)
    lo = k.floor().long().clamp(max=N_TRAIN - 2)
    w = k - lo
    ls = log_sigmas.to(k.device)
    return torch.exp((1 - w) * ls[lo] + w * ls[lo + 1])


# ----------------------------------------------------------------------------- problems
@dataclass
class Problem:
    """One benchmark problem: the process, our model, the peers' network views, x_T and the error."""

    name: str
    sde: sd.LinearSDE  # DiscreteVPSDE(t_min=0) (sigma = 0 at the end), or EDM's VE
    model: sd.ScoreModel  # what sdesolve's samplers call
    eps_net: Callable[[Tensor, Tensor], Tensor] | None  # diffusers' view eps(x, timestep); None: not a discrete problem
    denoiser: nn.Module | None  # k-diffusion's view D(x / alpha, sigma); None: k-diffusion missing
    x_T: Tensor
    x_pilot: Tensor
    error: Callable[[Tensor], dict]
    metric: str
    calls: list = field(default_factory=lambda: [0])  # peer network calls
    target: object = None  # the exact law, where there is one
    ends: tuple = ("zero", "x0")  # our grids end at sigma = 0, or at x0_t_min followed by final_x0
    x0_t_min: float = 1.0 / N_TRAIN  # the first training timestep
    k_sigmas: tuple = ()  # k-diffusion's Karras range (sigma_min, sigma_max); () = the discrete schedule's
    k_scale: float = 0.0  # x_T times this is k-diffusion's x (1 / alpha_T); 0 = the discrete schedule's


class _Counted(nn.Module):
    """A k-diffusion denoiser D(x, sigma) that counts its calls into ``counter``."""

    def __init__(self, fn, counter):
        super().__init__()
        self.fn, self.counter = fn, counter

    def forward(self, x, sigma, **kw):
        self.counter[0] += 1
        return self.fn(x, sigma)


def _exact_views(target, log_sigmas, counter):
    """diffusers' eps(x, timestep) and k-diffusion's D(x, sigma) of an exact law (float64)."""

    def eps_at_sigma(x, sig):  # sig: k-diffusion sigma per sample; x on the VP scale
        a = 1.0 / torch.sqrt(1.0 + sig * sig)
        return -(sig * a).view(-1, *[1] * (x.dim() - 1)) * target._score(x, a, sig * a)

    def eps_net(x, k):
        counter[0] += 1
        k = torch.as_tensor(k, device=x.device).reshape(-1).expand(x.shape[0])
        return eps_at_sigma(x, sigma_of_timestep(k, log_sigmas))

    def denoise(x_kd, sigma):
        sig = sigma.to(torch.float64).reshape(-1).expand(x_kd.shape[0])
        a = (1.0 / torch.sqrt(1.0 + sig * sig)).view(-1, *[1] * (x_kd.dim() - 1))
        eps = eps_at_sigma(a * x_kd, sig)
        return x_kd - sig.view(-1, *[1] * (x_kd.dim() - 1)) * eps

    return eps_net, _Counted(denoise, counter)


def gaussian_problem(dim: int, device) -> Problem:
    g = torch.Generator().manual_seed(0)
    mu, s = 0.5 * torch.randn(dim, generator=g, dtype=DTYPE), 0.1 + 0.9 * torch.rand(dim, generator=g, dtype=DTYPE)
    target = sd.Gaussian(mu.to(device), s.to(device))
    ac, log_sigmas = discrete_schedule()
    sde = sd.DiscreteVPSDE(alphas_cumprod=ac, t_min=0.0)
    m_T, v_T = (u.to(device) for u in target.marginal_moments(1.0, sde))
    x_T = torch.stack([m_T, m_T + v_T.sqrt()])  # the two probes of the affine map

    def error(x):
        m, sd_out = x[0], x[1] - x[0]
        v, v0 = sd_out * sd_out, s.to(device) ** 2
        kl = 0.5 * (v / v0 + (m - mu.to(device)) ** 2 / v0 - 1.0 - torch.log(v / v0)).sum()
        return {"error": float(kl)}

    counter = [0]
    eps_net, denoiser = _exact_views(target, log_sigmas, counter)
    pilot = target.marginal_sample(32, 1.0, sde, generator=torch.Generator().manual_seed(3)).to(device)
    return Problem("gaussian", sde, target.model(sde), eps_net, denoiser, x_T, pilot, error, "KL", counter, target)


def _reference(sde, model, x_T, tol):
    """The float64 reference: our adaptive Dormand-Prince solve to sigma = 0 at rtol = atol = tol."""
    ode = sd.ODE("dopri5", rtol=tol, atol=tol, max_nfe=100_000)
    t0, n0 = time.perf_counter(), model.nfe
    ref = sd.sample(sde, model, x_T=x_T, solver=ode)
    print(f"# reference at tol {tol:g}: {model.nfe - n0} calls, {time.perf_counter() - t0:.1f} s", flush=True)
    return ref


def mixture_problem(dim: int, n: int, device, tol: float) -> Problem:
    g = torch.Generator().manual_seed(1)
    means = torch.randn(4, dim, generator=g, dtype=DTYPE)
    stds = torch.tensor([0.3, 0.4, 0.5, 0.6], dtype=DTYPE)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=DTYPE)
    target = sd.GaussianMixture(weights.to(device), means.to(device), stds.to(device))
    ac, log_sigmas = discrete_schedule()
    sde = sd.DiscreteVPSDE(alphas_cumprod=ac, t_min=0.0)
    x_T = sde.prior_sample((n, dim), generator=torch.Generator().manual_seed(2), dtype=DTYPE).to(device)
    model = target.model(sde)
    ref = _reference(sde, model, x_T, tol)
    one = torch.ones(n, dtype=DTYPE, device=device)

    def modes(x):
        lp, _, _ = target._component_logp(x, one, 0.0 * one)
        return torch.bincount(lp.argmax(1), minlength=4).to(DTYPE) / n

    ref_modes = modes(ref)

    def error(x):
        rms = float((x - ref).pow(2).mean().sqrt())
        return {"error": rms, "mode_weight_diff": float((modes(x) - ref_modes).abs().max())}

    counter = [0]
    eps_net, denoiser = _exact_views(target, log_sigmas, counter)
    pilot = sde.prior_sample((32, dim), generator=torch.Generator().manual_seed(3), dtype=DTYPE).to(device)
    p = Problem("mixture", sde, model, eps_net, denoiser, x_T, pilot, error, "RMS", counter, target)
    p.ref_modes, p.true_weights = ref_modes, weights  # type: ignore[attr-defined]
    return p


def mixture_ve_problem(dim: int, n: int, device, tol: float) -> Problem:
    """The mixture on EDM's process (VE, sigma 0.002..80), k-diffusion's own setting: our grids end
    at sigma_min = 0.002 and take final_x0 (one call); k-diffusion's Karras sigmas end with a step
    from 0.002 to 0, which returns its denoiser there (one call). Reference: the 1e-10 solve to
    sigma_min, then the exact x0. diffusers' schedulers (discrete VP) do not run on it."""
    g = torch.Generator().manual_seed(1)
    means = torch.randn(4, dim, generator=g, dtype=DTYPE)
    stds = torch.tensor([0.3, 0.4, 0.5, 0.6], dtype=DTYPE)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=DTYPE)
    target = sd.GaussianMixture(weights.to(device), means.to(device), stds.to(device))
    sde = sd.VESDE(sigma_min=0.002, sigma_max=80.0, t_min=0.0)
    x_T = sde.prior_sample((n, dim), generator=torch.Generator().manual_seed(2), dtype=DTYPE).to(device)
    model = target.model(sde)
    ode = sd.ODE("dopri5", rtol=tol, atol=tol, max_nfe=100_000)
    t0 = time.perf_counter()
    ref = sd.sample(sde, model, x_T=x_T, solver=ode, final_x0=True)
    print(f"# reference at tol {tol:g}: {model.nfe} calls, {time.perf_counter() - t0:.1f} s", flush=True)
    one = torch.ones(n, dtype=DTYPE, device=device)

    def modes(x):
        lp, _, _ = target._component_logp(x, one, 0.0 * one)
        return torch.bincount(lp.argmax(1), minlength=4).to(DTYPE) / n

    ref_modes = modes(ref)

    def error(x):
        rms = float((x - ref).pow(2).mean().sqrt())
        return {"error": rms, "mode_weight_diff": float((modes(x) - ref_modes).abs().max())}

    counter = [0]

    def denoise(x, sigma):  # exact E[x0 | x] at noise level sigma (alpha = 1)
        sig = sigma.to(DTYPE).reshape(-1).expand(x.shape[0])
        return x + (sig * sig).view(-1, *[1] * (x.dim() - 1)) * target._score(x, torch.ones_like(sig), sig)

    pilot = sde.prior_sample((32, dim), generator=torch.Generator().manual_seed(3), dtype=DTYPE).to(device)
    return Problem(
        "mixture_ve", sde, model, None, _Counted(denoise, counter), x_T, pilot, error, "RMS", counter, target,
        ends=("x0",), x0_t_min=0.0, k_sigmas=(0.002, 80.0), k_scale=1.0,
    )  # fmt: skip


class EpsMLP(nn.Module):
    """eps(x, k): an MLP on [x, Fourier features of the timestep k / 1000], with a residual on x."""

    def __init__(self, dim: int, hidden: int, n_freq: int = 16):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(200.0), n_freq)))
        self.net = nn.Sequential(
            nn.Linear(dim + 2 * n_freq, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim),
        )  # fmt: skip

    def forward(self, x, k):
        k = torch.as_tensor(k, device=x.device, dtype=x.dtype).reshape(-1).expand(x.shape[0])
        ang = (k / N_TRAIN).unsqueeze(1) * self.freqs.to(x.dtype)
        return self.net(torch.cat([x, torch.sin(ang), torch.cos(ang)], 1))


def _digits(device, synthetic: bool = False) -> tuple[Tensor, str]:
    try:
        if synthetic:
            raise ImportError
        from sklearn.datasets import load_digits

        x = torch.as_tensor(load_digits().data, dtype=torch.float32)
        return (x / 8.0 - 1.0).to(device), "sklearn digits (1797 x 64, scaled to [-1, 1])"
    except ImportError:
        g = torch.Generator().manual_seed(4)
        mix = sd.GaussianMixture(torch.full((10,), 0.1), 0.8 * torch.randn(10, 64, generator=g), 0.3)
        return mix.sample(2000, generator=g, dtype=torch.float32).to(device), "synthetic 10-mode mixture in 64-d"


def _adam(params, lr: float, steps: int, betas=(0.9, 0.999), eps=1e-8):
    """Adam (Kingma & Ba 2015) with a cosine learning-rate decay, written out: ``torch.optim``
    imports torch._dynamo on first use (seconds), which the CPU smoke run cannot afford."""
    params = list(params)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]

    def step(i: int) -> None:
        rate = lr * 0.5 * (1.0 + math.cos(math.pi * i / max(steps, 1)))
        with torch.no_grad():
            for p, m_, v_ in zip(params, m, v, strict=True):
                m_.mul_(betas[0]).add_(p.grad, alpha=1 - betas[0])
                v_.mul_(betas[1]).addcmul_(p.grad, p.grad, value=1 - betas[1])
                m_hat, v_hat = m_ / (1 - betas[0] ** (i + 1)), v_ / (1 - betas[1] ** (i + 1))
                p.sub_(rate * m_hat / (v_hat.sqrt() + eps))
                p.grad = None

    return step


def network_problem(
    n: int, train_steps: int, hidden: int, device, tol: float, batch: int = 512, synthetic: bool = False
) -> Problem:
    data, source = _digits(device, synthetic)
    ac, log_sigmas = discrete_schedule()
    sde_train = sd.DiscreteVPSDE(alphas_cumprod=ac)  # t_min = 1/N: sigma > 0 where the loss is evaluated
    torch.manual_seed(0)
    net = EpsMLP(data.shape[1], hidden).to(device)
    train_model = sd.ScoreModel(net, sde_train, prediction="eps")
    step = _adam(net.parameters(), 2e-3, train_steps)
    g = torch.Generator(device=device).manual_seed(5)
    t0 = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for i in range(train_steps):
        idx = torch.randint(0, data.shape[0], (batch,), generator=g, device=device)
        loss = sd.dsm_loss(train_model, data[idx], generator=g, reduce="mean")
        loss.backward()
        step(i)
    net = net.double().eval()
    for p_ in net.parameters():
        p_.requires_grad_(False)
    print(
        f"# network: {source}; {train_steps} training steps in {time.perf_counter() - t0:.1f} s, last loss {float(loss.detach()):.4f}"
    )
    sde = sd.DiscreteVPSDE(alphas_cumprod=ac, t_min=0.0)
    model = sd.ScoreModel(net, sde, prediction="eps")
    x_T = sde.prior_sample((n, data.shape[1]), generator=torch.Generator().manual_seed(2), dtype=DTYPE).to(device)
    ref = _reference(sde, model, x_T, tol)
    counter = [0]

    def eps_net(x, k):
        counter[0] += 1
        return net(x, k)

    from _peers import load_k_diffusion_external

    ext = load_k_diffusion_external()
    denoiser = None
    if ext is not None:

        class _Inner(nn.Module):
            def forward(self, x, t):
                counter[0] += 1
                return net(x, t)

        denoiser = ext.DiscreteEpsDDPMDenoiser(_Inner(), ac.to(device), quantize=False)

    def error(x):
        return {"error": float((x - ref).pow(2).mean().sqrt())}

    pilot = sde.prior_sample((32, data.shape[1]), generator=torch.Generator().manual_seed(3), dtype=DTYPE).to(device)
    return Problem("network", sde, model, eps_net, denoiser, x_T, pilot, error, "RMS", counter)


# ----------------------------------------------------------------------------- sdesolve
def our_solvers(smoke: bool) -> dict[str, Callable[[], sd.Solver]]:
    """Deterministic samplers by label; the exponential and EDM ones only where this sdesolve has them."""
    out: dict[str, Callable[[], sd.Solver]] = {"DDIM": sd.DDIM, "PLMS": sd.PLMS}
    for m in ("euler", "heun") if smoke else ("euler", "midpoint", "heun", "rk3", "rk4"):
        out[f"ODE({m})"] = lambda m=m: sd.ODE(m)
    optional = {
        "DPMSolverPP(2)": ("DPMSolverPP", {"order": 2}),
        "DPMSolverPP(3)": ("DPMSolverPP", {"order": 3}),
        "UniPC(bh2)": ("UniPC", {}),
        "DPMSolver(2)": ("DPMSolver", {"order": 2}),
        "DPMSolver(3)": ("DPMSolver", {"order": 3}),
        "EDMHeun": ("EDMHeun", {}),
    }
    for label, (name, kw) in optional.items():
        cls = getattr(sd, name, None)
        if cls is None:
            print(f"# sdesolve has no {name}: skipped", flush=True)
            continue
        out[label] = lambda cls=cls, kw=kw: cls(**kw)
    if smoke:
        out = {k: v for k, v in out.items() if k in ("DDIM", "ODE(heun)", "DPMSolverPP(2)")}
    return out


GRID_KINDS = ("uniform", "quadratic", "log_snr", "karras", "optimized")


class _GridCache:
    """Grids by (problem, kind, steps, end, order); the optimized one costs one pilot solve per key."""

    def __init__(self, pilot_steps: int = 64):
        self.cache: dict = {}
        self.pilot_calls = 0
        self.pilot_steps = pilot_steps

    def get(self, p: Problem, kind: str, steps: int, end: str, order: int) -> Tensor:
        t_min = 0.0 if end == "zero" else p.x0_t_min
        key = (p.name, kind, steps, end, order if kind == "optimized" else 0)
        if key not in self.cache:
            if kind == "optimized":
                n0 = p.model.nfe
                self.cache[key] = grids.optimized(
                    p.sde, p.model, steps, x_T=p.x_pilot, order=order, t_min=t_min, pilot_steps=self.pilot_steps
                )
                self.pilot_calls += p.model.nfe - n0
            else:
                self.cache[key] = grids.make_grid(kind, p.sde, steps, t_min=t_min)
        return self.cache[key]


def run_ours(p: Problem, make_solver, kind: str, end: str, budget: int, cache: _GridCache):
    """Our sampler with the largest step count whose network calls (counted) fit the budget."""
    solver = make_solver()
    final = end == "x0"
    steps = 1
    while solver.nfe(steps + 1) + final <= budget:
        steps += 1
    while steps >= 1:
        grid = cache.get(p, kind, steps, end, min(int(math.ceil(solver.order)), 3))
        n0 = p.model.nfe
        x = sd.sample(p.sde, p.model, x_T=p.x_T, solver=solver, grid=grid, final_x0=final)
        used = p.model.nfe - n0
        if used <= budget:
            return x, used, steps
        steps -= 1
    return None, 0, 0


# ----------------------------------------------------------------------------- peers
def diffusers_samplers() -> dict[str, tuple]:
    try:
        import diffusers
    except ImportError:
        print("# diffusers is not installed: its schedulers are skipped")
        return {}
    specs = {
        "DPM++2M": ("DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "dpmsolver++"}),
        "DPM++3M": ("DPMSolverMultistepScheduler", {"solver_order": 3, "algorithm_type": "dpmsolver++"}),
        "UniPC": ("UniPCMultistepScheduler", {}),
        "DEIS": ("DEISMultistepScheduler", {}),
        "Euler": ("EulerDiscreteScheduler", {}),
        "Heun": ("HeunDiscreteScheduler", {}),
    }
    out = {}
    for label, (cls, kw) in specs.items():
        for karras in (False, True):
            out[f"{label}{' karras' if karras else ''}"] = (
                getattr(diffusers, cls),
                {**kw, "use_karras_sigmas": karras},
            )
    return out


def run_diffusers(p: Problem, cls, kw: dict, budget: int):
    if p.eps_net is None:  # not a discrete-schedule problem
        return None, 0, 0
    n = (budget + 1) // 2 if "Heun" in cls.__name__ else budget
    while n >= 1:
        sched = cls(num_train_timesteps=N_TRAIN, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", **kw)
        sched.set_timesteps(n, device=p.x_T.device)
        x = p.x_T * sched.init_noise_sigma
        p.calls[0] = 0
        for t in sched.timesteps:
            eps = p.eps_net(sched.scale_model_input(x, t), t)
            x = sched.step(eps, t, x).prev_sample
        if p.calls[0] <= budget:
            return x, p.calls[0], n
        n -= 1
    return None, 0, 0


K_SAMPLERS = {
    "dpmpp_2m": ("sample_dpmpp_2m", {}),
    "dpmpp_3m_sde(eta=0)": ("sample_dpmpp_3m_sde", {"eta": 0.0}),
    "dpmpp_2m_sde(eta=0)": ("sample_dpmpp_2m_sde", {"eta": 0.0}),
    "heun": ("sample_heun", {}),
    "lms": ("sample_lms", {}),
    "euler": ("sample_euler", {}),
    "dpm_2": ("sample_dpm_2", {}),
}


def run_k_diffusion(p: Problem, K, fn_name: str, kw: dict, budget: int):
    if p.denoiser is None:
        return None, 0, 0
    ac, log_sigmas = discrete_schedule()
    sigma_min, sigma_max = p.k_sigmas or (float(log_sigmas[0].exp()), float(log_sigmas[-1].exp()))
    scale = p.k_scale or math.sqrt(1.0 + sigma_max**2)  # 1 / alpha_T: the same x_T in k-diffusion's variable
    two = fn_name in ("sample_heun", "sample_dpm_2")
    n = (budget + 1) // 2 if two else budget
    while n >= 1:
        sigmas = K.get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0, device=p.x_T.device)
        x = p.x_T * scale
        p.calls[0] = 0
        out = getattr(K, fn_name)(p.denoiser, x, sigmas, disable=True, **kw)
        if p.calls[0] <= budget:
            return out, p.calls[0], n
        n -= 1
    return None, 0, 0


# ----------------------------------------------------------------------------- driver
def run(args) -> list[dict]:
    device = torch.device(args.device)
    smoke = args.smoke
    nfes = (5,) if smoke else tuple(args.nfe)
    t0 = time.perf_counter()
    if smoke:  # tiny sizes and loose references: the code paths, not the numbers
        problems = [
            gaussian_problem(8, device),
            mixture_problem(8, 8, device, 1e-6),
            mixture_ve_problem(8, 8, device, 1e-6),
            network_problem(8, 3, 16, device, 1e-5, batch=64, synthetic=True),
        ]
    else:
        problems = [
            gaussian_problem(1024, device),
            mixture_problem(64, args.samples, device, 1e-10),
            mixture_ve_problem(64, args.samples, device, 1e-10),
            network_problem(args.samples, args.train_steps, 512, device, 1e-7),
        ]
    print(f"# problems built in {time.perf_counter() - t0:.1f} s", flush=True)
    ours = our_solvers(smoke)
    kinds = ("log_snr", "optimized") if smoke else GRID_KINDS
    ends = ("zero",) if smoke else ("zero", "x0")
    peers_d = diffusers_samplers()
    if smoke:
        peers_d = {k: v for k, v in peers_d.items() if k in ("DPM++2M", "Heun karras")}
    from _peers import load_k_diffusion_sampling

    K = load_k_diffusion_sampling()
    if K is None:
        print("# k-diffusion is not available: its samplers are skipped")
    k_samplers = {} if K is None else ({"dpmpp_2m": K_SAMPLERS["dpmpp_2m"]} if smoke else K_SAMPLERS)
    cache = _GridCache(16 if smoke else 64)
    rows: list[dict] = []

    def add(p, budget, lib, sampler, grid, x, used, steps):
        if x is None:
            return
        x = x.to(DTYPE)
        res = p.error(x) if bool(torch.isfinite(x).all()) else {"error": math.inf}
        rows.append({"problem": p.name, "metric": p.metric, "nfe_budget": budget, "nfe": used, "steps": steps,
                     "library": lib, "sampler": sampler, "grid": grid, **res})  # fmt: skip

    for p in problems:
        tp = time.perf_counter()
        for budget in nfes:
            for label, make in ours.items():
                for kind in kinds:
                    for end in [e for e in ends if e in p.ends] or p.ends:
                        x, used, steps = run_ours(p, make, kind, end, budget, cache)
                        default = kind == make().default_grid
                        grid = kind + (" (default)" if default else "") + (" +final_x0" if end == "x0" else "")
                        add(p, budget, "sdesolve", label, grid, x, used, steps)
            with torch.no_grad():
                for label, (cls, kw) in peers_d.items():
                    x, used, steps = run_diffusers(p, cls, kw, budget)
                    add(
                        p,
                        budget,
                        "diffusers",
                        label,
                        "karras" if kw["use_karras_sigmas"] else "default",
                        x,
                        used,
                        steps,
                    )
                for label, (fn, kw) in k_samplers.items():
                    x, used, steps = run_k_diffusion(p, K, fn, kw, budget)
                    add(p, budget, "k-diffusion", label, "karras", x, used, steps)
        print(f"# {p.name}: {time.perf_counter() - tp:.1f} s", flush=True)
    print(f"# optimized grids: {cache.pilot_calls} pilot network calls in all (on 32-sample pilot batches)", flush=True)
    print(f"# total {time.perf_counter() - t0:.1f} s on {device}", flush=True)
    return rows


def default_label() -> tuple[str, str]:
    """What a user gets without choosing: DPMSolverPP() on its default grid where it exists, else DDIM."""
    if getattr(sd, "DPMSolverPP", None) is not None:
        return "DPMSolverPP(2)", sd.DPMSolverPP().default_grid + " (default)"
    return "DDIM", "log_snr (default)"


def default_rows(rows: list[dict]) -> list[dict]:
    """The default's rows among ``rows``: its default grid to sigma = 0, or with final_x0 where the
    process cannot reach sigma = 0 (EDM's VE)."""
    d_sampler, d_grid = default_label()
    mine = [r for r in rows if r["library"] == "sdesolve" and r["sampler"] == d_sampler]
    return [r for r in mine if r["grid"] == d_grid] or [r for r in mine if r["grid"] == d_grid + " +final_x0"]


def summarize(rows: list[dict]) -> str:
    lines = ["| problem | NFE | sdesolve best | error | best peer | error | ratio (ours / peer) | default | error | default / best |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    d_sampler, d_grid = default_label()
    for prob in dict.fromkeys(r["problem"] for r in rows):
        for budget in sorted({r["nfe_budget"] for r in rows if r["problem"] == prob}):
            rs = [r for r in rows if r["problem"] == prob and r["nfe_budget"] == budget]
            ours = [r for r in rs if r["library"] == "sdesolve"]
            peers = [r for r in rs if r["library"] != "sdesolve"]
            if not ours:
                continue
            bo = min(ours, key=lambda r: r["error"])
            bp = min(peers, key=lambda r: r["error"]) if peers else None
            dflt = default_rows(rs)
            cells = [prob, str(budget), f"{bo['sampler']} / {bo['grid']}", f"{bo['error']:.3g}"]
            cells += [f"{bp['library']} {bp['sampler']} / {bp['grid']}", f"{bp['error']:.3g}", f"{bo['error'] / bp['error']:.3g}"] if bp else ["-"] * 3  # fmt: skip
            cells += [f"{d_sampler} / {d_grid}", f"{dflt[0]['error']:.3g}", f"{dflt[0]['error'] / bo['error']:.3g}"] if dflt else ["-"] * 3  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def full_table(rows: list[dict]) -> str:
    lines = ["| problem | NFE | library | sampler | grid | calls | steps | error | ratio to best peer | extra |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    best_peer: dict = {}
    for r in rows:
        if r["library"] != "sdesolve":
            key = (r["problem"], r["nfe_budget"])
            best_peer[key] = min(best_peer.get(key, math.inf), r["error"])
    for r in sorted(rows, key=lambda r: (r["problem"], r["nfe_budget"], r["error"])):
        bp = best_peer.get((r["problem"], r["nfe_budget"]))
        ratio = f"{r['error'] / bp:.3g}" if bp else "-"
        extra = f"mode weights off by {r['mode_weight_diff']:.3f}" if "mode_weight_diff" in r else ""
        lines.append(f"| {r['problem']} ({r['metric']}) | {r['nfe_budget']} | {r['library']} | {r['sampler']} | "
                     f"{r['grid']} | {r['nfe']} | {r['steps']} | {r['error']:.3e} | {ratio} | {extra} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    probs = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(1, len(probs), figsize=(5 * len(probs), 4), squeeze=False)
    d_sampler, d_grid = default_label()
    for ax, prob in zip(axes[0], probs, strict=True):
        rs = [r for r in rows if r["problem"] == prob]
        nfes = sorted({r["nfe_budget"] for r in rs})

        def envelope(sel, rs=rs, nfes=nfes):
            return [min((r["error"] for r in rs if r["nfe_budget"] == n and sel(r)), default=math.nan) for n in nfes]

        ax.loglog(nfes, envelope(lambda r: r["library"] == "sdesolve"), "o-", label="sdesolve, best")
        dflt = {id(r) for r in default_rows(rs)}
        ax.loglog(
            nfes,
            envelope(lambda r, dflt=dflt: id(r) in dflt),
            "s--",
            label=f"sdesolve {d_sampler}, default grid",
        )
        ax.loglog(nfes, envelope(lambda r: r["library"] == "diffusers"), "^-", label="diffusers, best")
        ax.loglog(nfes, envelope(lambda r: r["library"] == "k-diffusion"), "v-", label="k-diffusion, best")
        ax.set_title(f"{prob} ({rs[0]['metric']})")
        ax.set_xlabel("network calls")
        ax.set_ylabel(rs[0]["metric"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run (seconds): a few samplers, NFE 5")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="bench_accuracy_out")
    ap.add_argument("--train-steps", type=int, default=4000, help="training steps of the network problem")
    ap.add_argument("--nfe", type=int, nargs="+", default=list(NFES), help="network-call budgets (full mode)")
    ap.add_argument("--samples", type=int, default=2048, help="x_T draws of the mixture and network problems")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device = "cpu"
    os.makedirs(args.out, exist_ok=True)
    threads = torch.get_num_threads()
    if args.smoke:  # tiny tensors: one thread (on a shared CPU, a thread pool costs 100x per call)
        torch.set_num_threads(1)
    try:
        rows = run(args)
    finally:
        torch.set_num_threads(threads)
    summary = summarize(rows)
    print(summary)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"# Accuracy against network calls ({'smoke, CPU' if args.smoke else args.device})\n\n")
        f.write(summary + "\n\n## All runs\n\n" + full_table(rows) + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    plot(rows, os.path.join(args.out, "accuracy.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
