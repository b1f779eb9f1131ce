"""Train a small VDM with a learned noise schedule on scikit-learn's 8x8 digits; report bits/dim.

The data: ``sklearn.datasets.load_digits``, 1797 images of 8x8 = 64 pixels with 17 grey levels
(0..16), so ``vocab_size = 17``; a fixed split keeps 300 images for evaluation. Each level k is
encoded as the bin centre ``2 (k + 1/2) / 17 - 1`` in (-1, 1).

The model (Kingma et al. 2021, "Variational Diffusion Models"):

* the process ``VDMSDE(LearnedMonotoneGamma(...))``: VDM's monotone schedule network with
  learnable endpoints gamma(0), gamma(1) (``--schedule scalar`` or ``fixed`` for the others);
* an eps-network: a residual MLP on the 64 pixels, conditioned on gamma(t) through Fourier
  features (a function of (z, SNR), as VDM's invariance result asks), ``eps_hat = z + net``;
* the loss: the continuous-time variational bound ``vdm_bits_per_dim`` (diffusion + prior +
  reconstruction); with the variance trick (default) the schedule's shape is trained by
  ``schedule_variance_loss`` to minimize the variance of the diffusion-loss estimator, and its
  endpoints (and the network) by the bound itself.

Reported on the held-out images, in bits per dimension:

* the variational bound (averaged over ``--eval-passes`` draws of t and the noise);
* the probability-flow ODE likelihood (``sdesolve.log_likelihood``, exact divergence) in two
  ways that are both upper bounds on the discrete -log2 p(x) / D of a model built on the ODE
  density p_0: (a) uniform dequantization ``y = 2 (k + u) / 17 - 1``, u ~ U[0, 1), as in Song et
  al. 2021: ``-(log p_0(y) + D log(2/17)) / (D ln 2)``; (b) VDM's Gaussian dequantization through
  its own decoder: ``E_{q(z_0|x)}[-log p_0(z_0) - log p(x|z_0) + log q(z_0|x)] / (D ln 2)``.

Usage::

    python examples/vdm_digits.py --quick                 # CPU, under a minute
    python examples/vdm_digits.py                         # CPU, a few minutes
    python examples/vdm_digits.py --device cuda --steps 20000 --batch-size 512 --hidden 1024
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

try:
    import sdesolve
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import sdesolve
from sdesolve import VDMSDE, FixedLinearGamma, LearnedMonotoneGamma, LearnedScalarGamma, ScoreModel
from sdesolve.losses import (
    discrete_to_continuous,
    schedule_variance_loss,
    vdm_bits_per_dim,
    vdm_prior_loss,
    vdm_reconstruction_loss,
)

VOCAB = 17
LN2 = math.log(2.0)


# ------------------------------------------------------------------------------ data
def load_data(n_test: int = 300, n_val: int = 150, seed: int = 0):
    """Integer digits (N, 64) in {0..16}, split into train / validation / test by a fixed permutation."""
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data, dtype=torch.long)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return x[perm[n_test + n_val :]], x[perm[n_test : n_test + n_val]], x[perm[:n_test]]


# --------------------------------------------------------------------------- network
class EpsMLP(nn.Module):
    """eps_hat(z, g) = z + MLP([z, fourier(z), fourier(g)]) with residual blocks.

    g is gamma(t) scaled to about [0, 1]. The Fourier features of z, ``sin, cos(pi m V z)`` for
    m = 1, 2, have the bin width 2/V as period (every bin centre is a zero of the sines), the
    analogue for V levels of VDM's features ``2^6..2^8 * 2 pi z`` for 256 levels: they let the
    network see where z lies inside its bin, which is what the denoiser needs at high SNR.
    """

    def __init__(
        self,
        dim: int = 64,
        hidden: int = 512,
        blocks: int = 3,
        n_freq: int = 16,
        z_fourier: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freq) * math.pi / 4)
        self.register_buffer("z_freqs", math.pi * VOCAB * torch.tensor([1.0, 2.0]) if z_fourier else torch.zeros(0))
        self.inp = nn.Linear(dim * (1 + 2 * self.z_freqs.numel()) + 2 * n_freq, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(hidden),
                nn.Linear(hidden, hidden),
                nn.SiLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden),
            )
            for _ in range(blocks)
        )
        self.cond = nn.ModuleList(nn.Linear(2 * n_freq, hidden) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        ang = g[:, None] * self.freqs
        emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
        zf = (z[:, :, None] * self.z_freqs).flatten(1)
        h = self.inp(torch.cat([z, torch.sin(zf), torch.cos(zf), emb], dim=1))
        for block, cond in zip(self.blocks, self.cond):
            h = h + block(h + cond(emb))
        return z + self.out(h)


class EpsConv(nn.Module):
    """eps_hat(z, g) = z + a small residual conv net on the 8x8 image (plus Fourier features of z).

    No down-sampling: 3x3 convolutions at 8x8, each residual block conditioned on the Fourier
    features of g through a per-channel shift (as VDM's ResnetBlock).
    """

    def __init__(self, channels: int = 64, blocks: int = 4, n_freq: int = 16, z_fourier: bool = True, dropout=0.0):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freq) * math.pi / 4)
        self.register_buffer("z_freqs", math.pi * VOCAB * torch.tensor([1.0, 2.0]) if z_fourier else torch.zeros(0))
        self.inp = nn.Conv2d(1 + 2 * self.z_freqs.numel(), channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "conv1": nn.Sequential(
                        nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)
                    ),
                    "cond": nn.Linear(2 * n_freq, channels),
                    "conv2": nn.Sequential(
                        nn.GroupNorm(8, channels),
                        nn.SiLU(),
                        nn.Dropout(dropout),
                        nn.Conv2d(channels, channels, 3, padding=1),
                    ),
                }
            )
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, 1, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        ang = g[:, None] * self.freqs
        emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
        img = z.reshape(-1, 1, 8, 8)
        zf = img * self.z_freqs.reshape(1, -1, 1, 1)
        h = self.inp(torch.cat([img, torch.sin(zf), torch.cos(zf)], dim=1))
        for block in self.blocks:
            r = block["conv1"](h) + block["cond"](emb)[:, :, None, None]
            h = h + block["conv2"](r)
        return z + self.out(h).reshape(z.shape)


def build(args, device):
    if args.schedule == "monotone":
        gamma = LearnedMonotoneGamma(args.gamma_min, args.gamma_max, learn_endpoints=True)
    elif args.schedule == "scalar":
        gamma = LearnedScalarGamma(args.gamma_min, args.gamma_max)
    else:
        gamma = FixedLinearGamma(args.gamma_min, args.gamma_max)
    sde = VDMSDE(gamma).to(device)
    if args.arch == "mlp":
        net = EpsMLP(hidden=args.hidden, blocks=args.blocks, z_fourier=args.z_fourier, dropout=args.dropout)
    else:
        net = EpsConv(channels=args.hidden, blocks=args.blocks, z_fourier=args.z_fourier, dropout=args.dropout)
    net = net.to(device)
    lo, hi = args.gamma_min, args.gamma_max

    def time_input(t):  # the network sees gamma(t), affinely scaled by the initial endpoints
        return (sde.gamma(t) - lo) / (hi - lo)

    model = ScoreModel(net, sde, prediction="eps", time_input=time_input)
    return sde, net, model


# -------------------------------------------------------------------------- training
def train(args, sde, net, model, x_train, x_val, device):
    """Adam on the bound; returns the moving-average weights with the best validation bound."""
    gen = torch.Generator(device=device).manual_seed(args.seed)
    sched_params = list(sde.gamma.parameters())
    groups = [{"params": list(net.parameters()), "lr": args.lr, "base_lr": args.lr, "weight_decay": args.weight_decay}]
    if sched_params:  # no weight decay on the schedule: it would pull gamma(1) - gamma(0) towards 0
        groups.append(
            {"params": sched_params, "lr": args.schedule_lr, "base_lr": args.schedule_lr, "weight_decay": 0.0}
        )
    opt = torch.optim.AdamW(groups)
    ema = [q.detach().clone() for q in net.parameters()]  # moving average of the weights, for evaluation
    use_trick = args.variance_trick and bool(getattr(sde.gamma, "shape_parameters", list)())
    n = x_train.shape[0]
    x_train = x_train.to(device)
    t0 = time.time()
    history, best = [], (math.inf, None)
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n, (args.batch_size,), generator=gen, device=device)
        k = x_train[idx]
        x = discrete_to_continuous(k, VOCAB)
        recon = vdm_reconstruction_loss(sde, k, VOCAB, generator=gen)
        prior = vdm_prior_loss(sde, x)
        if use_trick:
            diffusion = schedule_variance_loss(model, x, generator=gen)
        else:
            diffusion = sdesolve.vdm_diffusion_loss(model, x, generator=gen)
        loss = (diffusion + prior + recon).mean() / (x[0].numel() * LN2)  # bits/dim
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():  # the decay warms up as (1 + n) / (10 + n) towards args.ema
            decay = min(args.ema, (1.0 + step) / (10.0 + step))
            for q_ema, q in zip(ema, net.parameters()):
                q_ema.lerp_(q.detach(), 1.0 - decay)
        warm = min(1.0, step / max(1, args.steps // 20))  # linear warm-up, then cosine decay
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * warm * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            live = [q.detach().clone() for q in net.parameters()]
            _load(net, ema)
            net.eval()
            val = evaluate_bound(model, x_val, 2, args.seed, device)["bpd"]
            net.train()
            if val < best[0]:
                best = (val, ([q.clone() for q in ema], {k_: v.clone() for k_, v in sde.gamma.state_dict().items()}))
            _load(net, live)
            with torch.no_grad():
                g0 = float(sde.gamma(torch.zeros((), device=device)))
                g1 = float(sde.gamma(torch.ones((), device=device)))
            history.append(
                {"step": step, "train_bpd": float(loss.detach()), "val_bpd": val, "gamma0": g0, "gamma1": g1}
            )
            print(
                f"step {step:6d}  bound: train batch {float(loss.detach()):.4f}, validation {val:.4f} bits/dim  "
                f"gamma(0)={g0:+.3f} gamma(1)={g1:+.3f}  [{time.time() - t0:.1f}s]",
                flush=True,
            )
    weights, schedule_state = best[1]
    _load(net, weights)
    sde.gamma.load_state_dict(schedule_state)
    net.eval()
    return history, time.time() - t0


def _load(net, tensors):
    with torch.no_grad():
        for q, v in zip(net.parameters(), tensors):
            q.copy_(v)


# ------------------------------------------------------------------------ evaluation
def evaluate_bound(model, x_int, passes: int, seed: int, device):
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    parts = []
    with torch.no_grad():
        for _ in range(passes):
            out = vdm_bits_per_dim(model, x_int.to(device), VOCAB, generator=gen)
            parts.append(torch.stack([out.bits_per_dim, out.diffusion, out.prior, out.reconstruction]))
    parts = torch.stack(parts)  # (passes, 4, B)
    d = x_int[0].numel() * LN2
    per_image = parts[:, 0].mean(0)  # the bound per image, averaged over passes
    return {
        "bpd": float(per_image.mean()),
        "bpd_se": float(per_image.std() / math.sqrt(per_image.numel())),
        "diffusion_bpd": float(parts[:, 1].mean()) / d,
        "prior_bpd": float(parts[:, 2].mean()) / d,
        "reconstruction_bpd": float(parts[:, 3].mean()) / d,
    }


def evaluate_ode(sde, model, x_int, args, device):
    """Probability-flow ODE bits/dim with uniform and with VDM's Gaussian dequantization.

    With ``divergence="hutchinson"`` (one Rademacher probe per image) log p_0 is an unbiased
    estimate, and so are the bits/dim averaged over images.
    """
    if not hasattr(sdesolve, "log_likelihood"):
        print("sdesolve.log_likelihood is not available: skipping the ODE likelihood")
        return None
    gen = torch.Generator(device=device).manual_seed(args.seed + 2)
    k = x_int.to(device)
    d = k[0].numel()
    kw = dict(divergence=args.divergence, method="dopri5", rtol=args.ode_tol, atol=args.ode_tol, t_min=0.0)
    t_start = time.time()
    # (a) uniform dequantization within each of the 17 bins of width 2/17
    u = torch.rand(k.shape, generator=gen, device=device)
    y = 2.0 * (k + u) / VOCAB - 1.0
    res = sdesolve.log_likelihood(sde, model, y, generator=gen, **kw)
    uniform = -(res.logp + d * math.log(2.0 / VOCAB)) / (d * LN2)
    # (b) Gaussian dequantization by q(z_0 | x) and VDM's decoder p(x | z_0)
    with torch.no_grad():
        t0 = torch.zeros((), dtype=torch.float64, device=device)
        alpha0 = float(torch.exp(sde._log_alpha(t0)))
        sigma0 = float(torch.exp(sde._log_sigma(t0)))
    eps = torch.randn(k.shape, generator=gen, device=device)
    z0 = alpha0 * discrete_to_continuous(k, VOCAB) + sigma0 * eps
    res0 = sdesolve.log_likelihood(sde, model, z0, generator=gen, **kw)
    with torch.no_grad():
        recon = vdm_reconstruction_loss(sde, k, VOCAB, noise=eps)
    log_q = (-0.5 * eps**2 - math.log(sigma0) - 0.5 * math.log(2 * math.pi)).sum(1)
    gaussian = (-res0.logp + recon + log_q) / (d * LN2)
    n = k.shape[0]
    return {
        "uniform_dequant_bpd": float(uniform.mean()),
        "uniform_dequant_se": float(uniform.std() / math.sqrt(n)),
        "gaussian_dequant_bpd": float(gaussian.mean()),
        "gaussian_dequant_se": float(gaussian.std() / math.sqrt(n)),
        "nfe": int(res.nfe + res0.nfe),
        "images": n,
        "seconds": time.time() - t_start,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny CPU settings (under a minute)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None, help="MLP width, or conv channels")
    p.add_argument("--arch", choices=["conv", "mlp"], default="conv", help="eps-network")
    p.add_argument("--blocks", type=int, default=None, help="residual blocks")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.999, help="decay of the weights' moving average used for evaluation")
    p.add_argument("--schedule", choices=["monotone", "scalar", "fixed"], default="monotone")
    p.add_argument("--schedule-lr", type=float, default=2e-2, help="Adam lr of the schedule's parameters")
    p.add_argument("--no-variance-trick", dest="variance_trick", action="store_false")
    p.add_argument(
        "--gamma-min",
        type=float,
        default=2 * math.log(2 / (6 * VOCAB)),
        help="initial gamma(0); default -7.86: noise sigma_0/alpha_0 = bin width / 6, the ratio of "
        "VDM's -13.3 for 256 levels",
    )
    p.add_argument("--no-z-fourier", dest="z_fourier", action="store_false", help="no Fourier features of z")
    p.add_argument("--gamma-max", type=float, default=5.0, help="initial gamma(1)")
    p.add_argument("--eval-passes", type=int, default=None)
    p.add_argument("--ode-images", type=int, default=None, help="test images for the ODE likelihood (0: skip)")
    p.add_argument("--ode-tol", type=float, default=1e-4, help="rtol = atol of the dopri5 likelihood solve")
    p.add_argument(
        "--divergence",
        choices=["exact", "hutchinson"],
        default=None,
        help="trace of the ODE likelihood (default: exact on the GPU, Hutchinson on the CPU)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="write the results to this file")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    defaults = {
        # (steps, batch, width, blocks, eval passes, ODE images)
        "quick": (400, 64, 32, 2, 4, 4),
        "cpu": (1500, 128, 32, 3, 10, 32),
        "gpu": (4000, 256, 64, 4, 20, 300),
    }["quick" if args.quick else ("gpu" if gpu else "cpu")]
    for name, value in zip(("steps", "batch_size", "hidden", "blocks", "eval_passes", "ode_images"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.divergence is None:
        args.divergence = "exact" if gpu else "hutchinson"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    x_train, x_val, x_test = load_data(seed=args.seed)
    print(
        f"digits: {x_train.shape[0]} train / {x_val.shape[0]} validation / {x_test.shape[0]} test images, "
        f"64 dims, {VOCAB} levels"
    )
    sde, net, model = build(args, device)
    n_params = sum(q.numel() for q in net.parameters())
    print(f"eps-network: {n_params / 1e6:.2f}M parameters; schedule: {sde.gamma.__class__.__name__}")
    history, train_seconds = train(args, sde, net, model, x_train, x_val, device)
    bound = evaluate_bound(model, x_test, args.eval_passes, args.seed, device)
    train_bound = evaluate_bound(model, x_train[: x_test.shape[0]], args.eval_passes, args.seed, device)
    print(
        f"test variational bound: {bound['bpd']:.4f} +- {bound['bpd_se']:.4f} bits/dim "
        f"(diffusion {bound['diffusion_bpd']:.4f}, prior {bound['prior_bpd']:.5f}, "
        f"reconstruction {bound['reconstruction_bpd']:.4f}); train images: {train_bound['bpd']:.4f}"
    )
    ode = None
    if args.ode_images > 0:
        ode = evaluate_ode(sde, model, x_test[: args.ode_images], args, device)
        if ode is not None:
            print(
                f"test probability-flow ODE ({ode['images']} images, {args.divergence} divergence, {ode['nfe']} NFE, "
                f"{ode['seconds']:.1f}s): "
                f"uniform dequantization {ode['uniform_dequant_bpd']:.4f} +- {ode['uniform_dequant_se']:.4f}, "
                f"Gaussian dequantization + decoder {ode['gaussian_dequant_bpd']:.4f} +- "
                f"{ode['gaussian_dequant_se']:.4f} bits/dim"
            )
    with torch.no_grad():
        g0 = float(sde.gamma(torch.zeros((), device=device)))
        g1 = float(sde.gamma(torch.ones((), device=device)))
    result = {
        "args": vars(args),
        "train_seconds": train_seconds,
        "gamma0": g0,
        "gamma1": g1,
        "test_bound": bound,
        "train_bound": train_bound,
        "ode": ode,
        "history": history,
        "device": str(torch.cuda.get_device_name(device)) if gpu else "cpu",
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
