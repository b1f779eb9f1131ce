"""diffusers ``UNet2DModel`` networks sampled through sdesolve: unconditional, class-conditional, guided.

1. A ``UNet2DModel`` is a :class:`sdesolve.ScoreModel` network as it is: its ``UNet2DOutput`` is
   unwrapped, and the integer DDPM timestep it was trained on comes from ``DiscreteVPSDE``.
2. A small class-conditional ``UNet2DModel`` (``num_class_embeds`` = classes + 1, the last one the
   "null" class) is trained for a few hundred steps on toy 8x8 images: class c is a bright bar on
   rows 2c and 2c + 1. Labels are dropped to the null class 10 % of the time, so one network is
   both the conditional and the unconditional model (Ho & Salimans 2022).
3. It is sampled with per-sample labels (``sample(..., model_kwargs={"class_labels": labels})``)
   and classifier-free guidance (``model.guided(w, {"class_labels": null})``: one network call of
   2B samples per step), and each sample is scored by the class whose bar image is nearest.
4. ``select`` splits the bound labels with the batch: half the batch sampled alone gives the same
   samples (what a caller that chunks or shards a batch relies on).

Run (CPU, a few minutes with the defaults; needs the diffusers extra, ``pip install "sdesolve[diffusers]"``)::

    python examples/conditional_unet.py [--train-steps 600] [--steps 20] [-n 64] [--guidance 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import UNet2DModel

import sdesolve as sd

N_CLASSES = 4
NULL = N_CLASSES  # the extra class embedding: "no label"


def make_unet(num_class_embeds: int | None = None, seed: int = 0) -> UNet2DModel:
    """A small UNet2DModel for 8x8 one-channel images (class-conditional if ``num_class_embeds``)."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    )


def templates() -> torch.Tensor:
    """The class images, (N_CLASSES, 1, 8, 8) in [-1, 1]: class c is a bar on rows 2c, 2c + 1."""
    out = -torch.ones(N_CLASSES, 1, 8, 8)
    for c in range(N_CLASSES):
        out[c, 0, 2 * c : 2 * c + 2] = 1.0
    return out


def data(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Toy images of the given labels: the class bar with a random brightness and a little pixel noise."""
    bright = 0.5 + 0.5 * torch.rand(labels.shape[0], 1, 1, 1, generator=generator)
    x = templates()[labels]
    x = torch.where(x > 0, bright, x)
    return (x + 0.05 * torch.randn(x.shape, generator=generator)).clamp(-1, 1)


def nearest_class(x: torch.Tensor) -> torch.Tensor:
    """The class whose bar image is nearest to each sample (mean squared distance)."""
    return torch.cdist(x.reshape(x.shape[0], -1), templates().reshape(N_CLASSES, -1)).argmin(1)


def train(model: sd.ScoreModel, sde: sd.DiscreteVPSDE, steps: int, batch: int = 64, seed: int = 0) -> float:
    """The eps-prediction loss of DDPM, ``|eps - net(alpha x0 + sigma eps, k, c)|^2``, with 10 % null labels.

    The network is called through ``model``: ``model.with_kwargs(class_labels=c)(x_t, t)`` is the raw
    network output at continuous times t (the ScoreModel hands the UNet its integer timestep).
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.net.parameters(), lr=2e-3)
    loss = torch.tensor(float("nan"))
    model.net.train()
    for _ in range(steps):
        labels = torch.randint(0, N_CLASSES, (batch,), generator=g)
        x0 = data(labels, g)
        drop = torch.rand(batch, generator=g) < 0.1
        labels = torch.where(drop, torch.full_like(labels, NULL), labels)
        k = torch.randint(0, sde.num_train_timesteps, (batch,), generator=g)
        t = sde.timestep_to_t(k.double())
        alpha, sigma = sde.alpha(t).float()[:, None, None, None], sde.sigma(t).float()[:, None, None, None]
        eps = torch.randn(x0.shape, generator=g)
        pred = model.with_kwargs(class_labels=labels)(alpha * x0 + sigma * eps, t)
        loss = torch.mean((pred - eps) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.net.eval()
    return float(loss.detach())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-steps", type=int, default=600, help="training steps of the conditional UNet")
    p.add_argument("--steps", type=int, default=20, help="sampling steps (DDIM)")
    p.add_argument("-n", type=int, default=64, help="samples per run")
    p.add_argument("--guidance", type=float, default=3.0, help="the classifier-free guidance scale w")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sde = sd.DiscreteVPSDE.from_schedule("linear", 1000)
    shape = (args.n, 1, 8, 8)
    results: dict = {}

    # 1. a UNet2DModel as it is (random weights: this shows the plumbing, not pictures)
    model = sd.ScoreModel(make_unet().eval(), sde, prediction="eps")
    with torch.no_grad():
        x = sd.sample(sde, model, shape, solver=sd.DDIM(), steps=args.steps, generator=torch.Generator().manual_seed(1))
    print(f"unconditional UNet2DModel: samples {tuple(x.shape)}, {model.nfe} network calls")

    # 2. a class-conditional UNet2DModel, trained on the toy bars
    model = sd.ScoreModel(make_unet(num_class_embeds=N_CLASSES + 1), sde, prediction="eps")
    start = time.perf_counter()
    loss = train(model, sde, args.train_steps, seed=args.seed)
    print(f"trained {args.train_steps} steps in {time.perf_counter() - start:.0f} s (last batch loss {loss:.3f})")

    # 3. per-sample labels and classifier-free guidance
    labels = torch.arange(args.n) % N_CLASSES
    x_T = sde.prior_sample(shape, generator=torch.Generator().manual_seed(args.seed + 2))
    for w in (0.0, 1.0, args.guidance):
        guided = model.guided(w, {"class_labels": torch.tensor([NULL])})
        nfe0 = guided.nfe
        with torch.no_grad():
            x = sd.sample(
                sde, guided, x_T=x_T, solver=sd.DDIM(), steps=args.steps, model_kwargs={"class_labels": labels}
            )
        hit = float((nearest_class(x) == labels).float().mean())
        results[w] = hit
        print(
            f"guidance w = {w:g}: {hit:.0%} of the samples are nearest their own class's bar "
            f"({guided.nfe - nfe0} network calls of {2 * args.n} samples for {args.steps} steps)"
        )

    # 4. select(): the first half of the batch sampled alone gives the same samples
    bound = model.with_kwargs(class_labels=labels).guided(args.guidance, {"class_labels": torch.tensor([NULL])})
    half = slice(0, args.n // 2)
    with torch.no_grad():
        alone = sd.sample(sde, bound.select(half), x_T=x_T[half], solver=sd.DDIM(), steps=args.steps)
    diff = float((alone - x[half]).abs().max())
    print(f"first half sampled alone with select(): largest difference from the whole batch {diff:.2g}")
    results["split_difference"] = diff
    return results


if __name__ == "__main__":
    main()
