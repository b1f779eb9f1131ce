"""Command line: ``sdesolve demo``, ``sdesolve sample``, ``sdesolve likelihood``.

``sdesolve sample --model MODULE:NAME`` and ``sdesolve likelihood --model MODULE:NAME --data FILE``
run a user's network. ``MODULE`` is a Python module on ``sys.path`` (the current directory is
put first) or a path to a ``.py`` file; ``NAME`` is, in ``MODULE``:

* a network ``net(x, t)`` (a function or an ``nn.Module`` instance) that returns a tensor of x's
  shape, in the parameterization given by ``--prediction``;
* a :class:`~sdesolve.ScoreModel` (its own process is used; ``--sde`` must then be left out);
* an ``nn.Module`` class, or a function with no required argument, that returns one of these.

The sample shape is ``--shape C H W`` (the event shape, without the batch), else the object's
``event_shape`` attribute, else ``(in_channels, sample_size, sample_size)`` of a diffusers model's
config.

Errors of the user's input (a bad import path, a model that does not take ``(x, t)``, a file that
is not a tensor) are one line on stderr and exit code 2; ``--traceback`` shows the whole trace.

The commands' cores (:func:`run_sample`, :func:`run_likelihood`, :func:`run_demo`) take the
parsed arguments, so another front end (``torchrun -m sdesolve ...``) can reuse them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import math
import os
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .model import unwrap_output

if TYPE_CHECKING:
    from .model import ScoreModel
    from .sde.base import LinearSDE
    from .targets import GaussianMixture

__all__ = ["CLIError", "build_parser", "main", "run_demo", "run_likelihood", "run_sample"]


class CLIError(Exception):
    """A user error the command line reports in one line (exit code 2)."""


# ---------------------------------------------------------------------------- choices
def _sdes() -> dict[str, Callable[[], Any]]:
    import sdesolve as sd

    return {
        "vp": sd.VPSDE,
        "subvp": sd.SubVPSDE,
        "cosine": sd.CosineVPSDE,
        "ve": sd.VESDE,
        "vdm": lambda: sd.VDMSDE(sd.FixedLinearGamma(-13.3, 5.0)),
        "ddpm-linear": lambda: sd.DiscreteVPSDE.from_schedule("linear"),
        "ddpm-scaled-linear": lambda: sd.DiscreteVPSDE.from_schedule("scaled_linear"),
        "ddpm-cosine": lambda: sd.DiscreteVPSDE.from_schedule("squaredcos_cap_v2"),
    }


SDE_HELP = {
    "vp": "VPSDE(beta_min=0.1, beta_max=20), Song et al. 2021",
    "subvp": "SubVPSDE()",
    "cosine": "CosineVPSDE(s=0.008)",
    "ve": "VESDE(sigma_min=0.01, sigma_max=50)",
    "vdm": "VDMSDE(FixedLinearGamma(-13.3, 5))",
    "ddpm-linear": "DiscreteVPSDE.from_schedule('linear'): 1000 DDPM steps, integer timesteps",
    "ddpm-scaled-linear": "DiscreteVPSDE.from_schedule('scaled_linear')",
    "ddpm-cosine": "DiscreteVPSDE.from_schedule('squaredcos_cap_v2')",
}


def _solvers() -> dict[str, Callable[[], Any]]:
    import sdesolve as sd

    return {
        "ddim": sd.DDIM,
        "ddpm": sd.DDPM,
        "plms": sd.PLMS,
        "euler-maruyama": sd.EulerMaruyama,
        "pc": lambda: sd.PredictorCorrector(sd.ReverseDiffusionPredictor(), sd.LangevinCorrector(snr=0.16)),
        "heun": lambda: sd.ODE("heun"),
        "rk4": lambda: sd.ODE("rk4"),
        "dopri5": lambda: sd.ODE("dopri5", rtol=1e-4, atol=1e-4),
        "vdm-ancestral": sd.VDMAncestral,
        "dpm-solver++": lambda: sd.DPMSolverPP(2),
        "unipc": lambda: sd.UniPC(2),
        "edm-heun": sd.EDMHeun,
        "euler-ancestral": sd.EulerAncestral,
    }


SOLVER_HELP = {
    "ddim": "DDIM() (deterministic)",
    "ddpm": "DDPM() (ancestral)",
    "plms": "PLMS() (pseudo linear multistep)",
    "euler-maruyama": "EulerMaruyama() on the reverse SDE",
    "pc": "PredictorCorrector(ReverseDiffusionPredictor(), LangevinCorrector(snr=0.16))",
    "heun": "ODE('heun') on the probability-flow ODE (2 NFE / step)",
    "rk4": "ODE('rk4') (4 NFE / step)",
    "dopri5": "ODE('dopri5', rtol=1e-4, atol=1e-4) (adaptive: --steps is ignored)",
    "vdm-ancestral": "VDMAncestral()",
    "dpm-solver++": "DPMSolverPP(2) (multistep, DPM-Solver++(2M))",
    "unipc": "UniPC(2) (multistep predictor-corrector)",
    "edm-heun": "EDMHeun() (Karras et al. 2022, 2 NFE / step)",
    "euler-ancestral": "EulerAncestral()",
}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ---------------------------------------------------------------------------- loading the model
def _import_module(spec: str):
    """The module of ``MODULE`` (a dotted name, the current directory first on sys.path, or a .py path)."""
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = Path(spec)
        if not path.is_file():
            raise CLIError(f"--model: no file {spec!r}")
        name = "_sdesolve_user_" + path.stem.replace("-", "_")
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise CLIError(f"--model: cannot import {spec!r} as a Python file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            raise CLIError(f"--model: importing {spec!r} failed: {type(exc).__name__}: {exc}") from exc
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and spec.startswith(exc.name) or exc.name == spec:
            raise CLIError(
                f"--model: no module named {spec!r} (run from the folder that holds it, or give a path to the .py file)"
            ) from exc
        raise CLIError(f"--model: importing {spec!r} failed: {exc}") from exc
    except Exception as exc:
        raise CLIError(f"--model: importing {spec!r} failed: {type(exc).__name__}: {exc}") from exc


def _needs_no_argument(fn: Callable) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in sig.parameters.values()
    )


def _takes_x_t(fn: Callable) -> bool:
    """Whether ``fn(x, t)`` binds (True when the signature cannot be read)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        sig.bind(object(), object())
    except TypeError:
        return False
    return True


def load_object(spec: str) -> Any:
    """The object ``NAME`` of ``MODULE:NAME``, a factory called (one level)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise CLIError(f"--model must be MODULE:NAME (e.g. mynet:model or path/to/mynet.py:model), got {spec!r}")
    mod_name, attr = spec.split(":")
    module = _import_module(mod_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"--model: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    # an nn.Module class, or a factory function with no required argument: call it once
    is_class = isinstance(obj, type)
    if is_class and not issubclass(obj, torch.nn.Module):
        raise CLIError(f"--model: {spec} is a class that is not a torch.nn.Module")
    if (is_class or (inspect.isfunction(obj) and not _takes_x_t(obj))) and _needs_no_argument(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise CLIError(f"--model: calling {spec}() failed: {type(exc).__name__}: {exc}") from exc
    elif is_class:
        raise CLIError(f"--model: the class {spec} needs constructor arguments; name a factory function instead")
    return obj


class _CheckedNet(torch.nn.Module):
    """The user's network, its failures reported as one :class:`CLIError` line."""

    def __init__(self, net: Callable, spec: str):
        super().__init__()
        self.inner = net
        self.spec = spec

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        try:
            out = self.inner(x, t)
        except Exception as exc:
            raise CLIError(
                f"--model: {self.spec} failed when called as net(x, t) with x of shape {tuple(x.shape)} "
                f"and t of shape {tuple(t.shape)}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            out = unwrap_output(out, self.inner)
        except TypeError as exc:
            raise CLIError(f"--model: {exc}") from exc
        if out.shape != x.shape:
            raise CLIError(
                f"--model: {self.spec} returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}; "
                "the network must return a tensor of x's shape (check --shape)"
            )
        return out


def build_model(args: argparse.Namespace) -> tuple[LinearSDE, ScoreModel, tuple[int, ...] | None]:
    """``(sde, model, event_shape or None)`` for the parsed ``--model``, ``--sde``, ``--prediction``."""
    import sdesolve as sd

    obj = load_object(args.model)
    if isinstance(obj, sd.ScoreModel):
        if args.sde is not None:
            raise CLIError(f"--sde: {args.model} is a ScoreModel with its own process; leave --sde out")
        sde, net, model = obj.sde, obj.net, obj
    else:
        if not callable(obj):
            raise CLIError(f"--model: {args.model} is a {type(obj).__name__}, not a network net(x, t)")
        target = obj.forward if isinstance(obj, torch.nn.Module) else obj
        if not _takes_x_t(target):
            raise CLIError(f"--model: {args.model} does not take (x, t): its signature is {inspect.signature(target)}")
        sde = _sdes()[args.sde or "vp"]()
        net = obj
        model = sd.ScoreModel(_CheckedNet(obj, args.model), sde, prediction=args.prediction)
    if isinstance(net, torch.nn.Module):
        net.to(device=args.device, dtype=_DTYPES[args.dtype]).eval()
    return sde, model, _event_shape(net)


def _event_shape(net: Any) -> tuple[int, ...] | None:
    shape = getattr(net, "event_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    config = getattr(net, "config", None)
    channels, size = getattr(config, "in_channels", None), getattr(config, "sample_size", None)
    if isinstance(channels, int) and size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        return (channels, *hw)
    return None


# ---------------------------------------------------------------------------- files
def load_tensor(path: str) -> Tensor:
    """A tensor from a .pt/.pth file (``torch.load(weights_only=True)``) or a .npy file
    (``numpy.load(allow_pickle=False)``): no code from the file runs."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--data: no file {path!r}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
            value: Any = torch.from_numpy(np.ascontiguousarray(arr))
        elif suffix in (".pt", ".pth"):
            value = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise CLIError(f"--data: {path!r} must be a .pt, .pth or .npy file")
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError(
            f"--data: {path!r} is not a tensor file: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    if isinstance(value, dict) and len(value) == 1:
        (value,) = value.values()
    if not isinstance(value, Tensor):
        raise CLIError(f"--data: {path!r} holds a {type(value).__name__}, expected one tensor (or a dict of one)")
    if value.dim() < 2 or value.shape[0] == 0:
        raise CLIError(f"--data: expected a (N, *event) tensor with N >= 1, got shape {tuple(value.shape)}")
    if value.dtype == torch.bool or value.is_complex():
        raise CLIError(f"--data: expected integer or floating data, got dtype {value.dtype}")
    return value


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: str | Path, image: Tensor) -> None:
    """Write an (H, W) or (H, W, 3) uint8 tensor as a PNG (no imaging library needed)."""
    img = image.detach().to("cpu", torch.uint8).contiguous()
    if img.dim() == 2:
        color, rows = 0, img
    elif img.dim() == 3 and img.shape[2] == 3:
        color, rows = 2, img.reshape(img.shape[0], -1)
    else:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {tuple(img.shape)}")
    h, w = img.shape[0], img.shape[1]
    raw = b"".join(b"\x00" + bytes(rows[i].numpy().tobytes()) for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(_png_chunk(b"IEND", b""))


def image_grid(x: Tensor, data_range: tuple[float, float] = (-1.0, 1.0), pad: int = 2, scale: int = 1) -> Tensor | None:
    """Samples (N, C, H, W) with C in {1, 3} (or (N, H, W)) as one uint8 grid image, else None."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        return None
    lo, hi = data_range
    y = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    y = torch.nan_to_num(y, nan=0.0)
    if scale > 1:
        y = y.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    n, c, h, w = y.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = y[i]
    img = (grid * 255).round().to(torch.uint8)
    return img[0] if c == 1 else img.permute(1, 2, 0)


# ---------------------------------------------------------------------------- commands
def run_sample(args: argparse.Namespace) -> int:
    """``sdesolve sample``: samples of the user's model, written to ``--out`` (and a PNG grid)."""
    import sdesolve as sd

    sde, model, found = build_model(args)
    shape = tuple(args.shape) if args.shape else found
    if shape is None:
        raise CLIError(f"--shape is needed: {args.model} has no event_shape attribute (e.g. --shape 3 32 32)")
    if any(s < 1 for s in shape):
        raise CLIError(f"--shape must be positive sizes, got {shape}")
    solver = _solvers()[args.solver]()
    if sd.distributed.launched():  # torchrun: each rank samples its block (sdesolve.distributed)
        x = sd.distributed.sample(
            sde, model, args.n, shape, solver=solver, steps=args.steps, seed=args.seed, device=args.device,
            dtype=_DTYPES[args.dtype], progress=not args.quiet,
        )  # fmt: skip
        if int(os.environ.get("RANK", "0")) != 0:
            return 0  # every rank holds all the samples; rank 0 writes them
        return _write_samples(args, x, shape, model)
    gen = torch.Generator(args.device).manual_seed(args.seed)
    with torch.inference_mode():
        x = sd.sample(
            sde,
            model,
            (args.n, *shape),
            solver=solver,
            steps=args.steps,
            generator=gen,
            device=args.device,
            dtype=_DTYPES[args.dtype],
            progress=not args.quiet,
        )
    return _write_samples(args, x, shape, model)


def _write_samples(args: argparse.Namespace, x: Tensor, shape: tuple[int, ...], model: Any) -> int:
    out = Path(args.out)
    torch.save(x.cpu(), out)
    print(f"wrote {args.n} samples of shape {tuple(shape)} to {out} ({model.nfe} network evaluations)")
    grid = image_grid(x, tuple(args.data_range), scale=max(1, 64 // max(shape[-1], 1)))
    if grid is not None and not args.no_png:
        png = out.with_suffix(".png")
        write_png(png, grid)
        print(f"wrote an image grid to {png}")
    return 0


def run_likelihood(args: argparse.Namespace) -> int:
    """``sdesolve likelihood``: bits/dim of ``--data`` under the user's model (mean and standard error)."""
    import sdesolve as sd

    data = load_tensor(args.data)
    if args.limit is not None:
        data = data[: args.limit]
    sde, model, _ = build_model(args)
    dtype = _DTYPES[args.dtype]
    if sd.distributed.launched():  # torchrun: each rank takes its block (sdesolve.distributed)
        res = sd.distributed.bits_per_dim(
            sde, model, data, seed=args.seed, batch_size=args.batch_size, device=args.device,
            progress=not args.quiet, data_range=tuple(args.data_range), n_bits=args.n_bits,
            dequantize=None if args.dequantize == "none" else args.dequantize, dtype=dtype,
            divergence=args.divergence, method=args.method, rtol=args.rtol, atol=args.atol,
        )  # fmt: skip
        if int(os.environ.get("RANK", "0")) == 0:
            print(
                f"bits/dim of {data.shape[0]} samples of {args.data}: {res.mean:.5f} +- {res.standard_error:.5f} "
                f"(standard error; {os.environ['WORLD_SIZE']} ranks, {res.nfe} network evaluations)"
            )
            if args.out:
                torch.save(res.bpd, args.out)
                print(f"wrote the {data.shape[0]} per-sample values to {args.out}")
        return 0
    gen = torch.Generator(args.device).manual_seed(args.seed)
    n = data.shape[0]
    values: list[Tensor] = []
    from ._progress import progress_bar

    with progress_bar(n, desc="bits/dim", unit="sample", enabled=not args.quiet) as bar:
        for start in range(0, n, args.batch_size):
            batch = data[start : start + args.batch_size].to(args.device)
            if batch.is_floating_point():
                batch = batch.to(dtype)
            bpd = sd.bits_per_dim(
                sde,
                model,
                batch,
                data_range=tuple(args.data_range),
                n_bits=args.n_bits,
                dequantize=None if args.dequantize == "none" else args.dequantize,
                generator=gen,
                dtype=dtype,
                divergence=args.divergence,
                method=args.method,
                rtol=args.rtol,
                atol=args.atol,
            )
            values.append(bpd.detach().double().cpu())
            bar.update(batch.shape[0])
            bar.set_postfix_str(f"mean={float(torch.cat(values).mean()):.4f}")
    allv = torch.cat(values)
    mean = float(allv.mean())
    se = float(allv.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    print(f"bits/dim of {n} samples of {args.data}: {mean:.5f} +- {se:.5f} (standard error)")
    if args.out:
        torch.save(allv, args.out)
        print(f"wrote the {n} per-sample values to {args.out}")
    return 0


def _sliced_wasserstein(a: Tensor, b: Tensor, n_proj: int = 256, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n_proj, a.shape[1], generator=g, dtype=a.dtype)
    d = d / d.norm(dim=1, keepdim=True)
    pa, _ = torch.sort(a @ d.T, dim=0)
    pb, _ = torch.sort(b @ d.T, dim=0)
    return float(((pa - pb) ** 2).mean().sqrt())


def demo(n: int = 4000, steps: int = 200, seed: int = 0, png: str | None = "sdesolve_demo.png") -> int:
    """Sample a 2-D Gaussian mixture with every solver family; compare with the exact law and density."""
    import sdesolve as sd

    target = sd.GaussianMixture(
        weights=[0.3, 0.3, 0.4],
        means=[[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]],
        stds=[0.4, 0.4, 0.6],
    )
    sde = sd.VPSDE()
    model = target.model(sde)
    truth = target.sample(n, generator=torch.Generator().manual_seed(seed + 1))
    ref = target.sample(n, generator=torch.Generator().manual_seed(seed + 2))
    floor = _sliced_wasserstein(truth, ref)
    print(f"target: 2-D mixture of 3 Gaussians; process: {sde!r}; {n} samples, {steps} steps")
    print(f"{'solver':<28}{'sliced W2 to truth':>20}{'mean error':>14}")
    solvers: list[tuple[str, sd.Solver]] = [
        ("EulerMaruyama", sd.EulerMaruyama()),
        ("DDIM", sd.DDIM()),
        ("PLMS", sd.PLMS()),
        ("ODE('heun')", sd.ODE("heun")),
    ]
    drawn: dict[str, Tensor] = {}
    for name, solver in solvers:
        gen = torch.Generator().manual_seed(seed)
        x = sd.sample(sde, model, (n, 2), solver=solver, steps=steps, generator=gen, dtype=torch.float64)
        drawn[name] = x
        sw = _sliced_wasserstein(x, truth)
        merr = float((x.mean(0) - target.mean).norm())
        print(f"{name:<28}{sw:>20.4f}{merr:>14.4f}")
    print(f"{'(two exact samples)':<28}{floor:>20.4f}")

    # Exact likelihood through the probability-flow ODE against the closed-form log-density.
    x = truth[: min(256, n)]
    exact = target.marginal_log_prob(x, sde.t_min, sde)
    res = sd.log_likelihood(sde, model, x, divergence="exact", rtol=1e-6, atol=1e-6)
    # With the exact log p_T at the latent instead of the N(0, I) prior, only the ODE error remains.
    ode = sd.log_likelihood(
        sde,
        model,
        x,
        divergence="exact",
        rtol=1e-6,
        atol=1e-6,
        prior_logp=lambda z: target.marginal_log_prob(z, sde.T, sde),
    )
    print(f"\nlog-likelihood of {x.shape[0]} points, probability-flow ODE, exact divergence ({res.nfe} NFE):")
    print(f"  exact mean log p(x)      {float(exact.mean()):.5f} nats")
    print(
        f"  sdesolve, N(0, I) prior  {float(res.logp.mean()):.5f}  (max |error| {float((res.logp - exact).abs().max()):.1e}: prior vs p_T mismatch)"
    )
    print(
        f"  sdesolve, exact p_T      {float(ode.logp.mean()):.5f}  (max |error| {float((ode.logp - exact).abs().max()):.1e}: integration error)"
    )
    if png:
        _demo_figure(png, target, sde, drawn, steps)
    return 0


def _demo_figure(png: str, target: GaussianMixture, sde: LinearSDE, drawn: dict[str, Tensor], steps: int) -> None:
    """Each solver's samples over the contours of the exact density, one panel per solver."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\n(no figure: matplotlib is not installed; pip install matplotlib to get {png})")
        return
    xlim, ylim = (-4.0, 4.0), (-2.5, 5.0)
    gx = torch.linspace(xlim[0], xlim[1], 200, dtype=torch.float64)
    gy = torch.linspace(ylim[0], ylim[1], 200, dtype=torch.float64)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    dens = target.marginal_log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), sde.t_min, sde).exp()
    dens = dens.reshape(xx.shape).numpy()  # type: ignore[assignment]
    fig, axes = plt.subplots(1, len(drawn), figsize=(3.0 * len(drawn), 3.3), sharex=True, sharey=True, squeeze=False)
    for ax, (name, x) in zip(axes[0], drawn.items()):
        ax.contourf(xx.numpy(), yy.numpy(), dens, levels=12, cmap="Blues")
        pts = x[:1500].numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, c="tab:red", alpha=0.6, linewidths=0)
        ax.set_title(f"{name}, {steps} steps", fontsize=10)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
    fig.suptitle("samples (red) over the exact density (blue contours), VPSDE", fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"\nwrote {png}: each solver's samples over the exact density")


def run_demo(args: argparse.Namespace) -> int:
    """``sdesolve demo``."""
    return demo(args.n, args.steps, args.seed, None if args.no_png else args.out)


# ---------------------------------------------------------------------------- parser
def _version() -> str:
    from . import __version__

    return __version__


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="MODULE:NAME",
        help="the network: NAME in MODULE (a module on sys.path, the current directory first, or a "
        "path/to/file.py): a net(x, t), an nn.Module, a ScoreModel, or a function/class with no "
        "required argument that returns one",
    )
    p.add_argument(
        "--sde",
        choices=sorted(SDE_HELP),
        default=None,
        help="the forward process the network was trained on (default vp): "
        + "; ".join(f"{k}: {v}" for k, v in SDE_HELP.items()),
    )
    p.add_argument(
        "--prediction",
        choices=["eps", "x0", "v", "score"],
        default="eps",
        help="what the network predicts (default eps)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random generator (default 0)")
    p.add_argument(
        "--dtype", choices=sorted(_DTYPES), default="float32", help="dtype of the samples and model (default float32)"
    )
    p.add_argument(
        "--data-range",
        type=float,
        nargs=2,
        default=(-1.0, 1.0),
        metavar=("LO", "HI"),
        help="the data range the network was trained on (default -1 1)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sdesolve`` (sub-commands demo, sample, likelihood)."""
    p = argparse.ArgumentParser(
        prog="sdesolve",
        description="Numerical SDE/ODE solvers for score-based diffusion models: sample a network, "
        "compute its bits/dim, or run the demo.",
    )
    p.add_argument("--version", action="version", version=f"sdesolve {_version()}", help="print the version")
    p.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{demo,sample,likelihood}")

    d = sub.add_parser(
        "demo",
        help="sample a 2-D Gaussian mixture with every solver family and compare with the exact law",
        description="Sample a 2-D Gaussian mixture with every solver family, compare with the exact law "
        "and density, and write a PNG of the samples over the exact density.",
    )
    d.add_argument("--n", type=int, default=4000, help="samples per solver (default 4000)")
    d.add_argument("--steps", type=int, default=200, help="steps per solve (default 200)")
    d.add_argument("--seed", type=int, default=0, help="seed of the random generator (default 0)")
    d.add_argument("--out", default="sdesolve_demo.png", help="the PNG to write (default sdesolve_demo.png)")
    d.add_argument("--no-png", action="store_true", help="write no PNG")
    d.set_defaults(run=run_demo)

    s = sub.add_parser(
        "sample",
        help="sample a user's network",
        description="Sample a user's network with one of sdesolve's solvers; write the samples (torch.save) "
        "and, for image-shaped samples, a PNG grid next to them.",
    )
    _add_common(s)
    s.add_argument(
        "--solver",
        choices=list(SOLVER_HELP),
        default="plms",
        help="the integrator (default plms): " + "; ".join(f"{k}: {v}" for k, v in SOLVER_HELP.items()),
    )
    s.add_argument("--steps", type=int, default=50, help="number of steps (default 50)")
    s.add_argument("-n", "--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument(
        "--shape",
        type=int,
        nargs="+",
        default=None,
        metavar="SIZE",
        help="the shape of one sample, e.g. 3 32 32 (default: the model's event_shape attribute)",
    )
    s.add_argument("--out", default="samples.pt", help="the file of the samples (default samples.pt)")
    s.add_argument("--no-png", action="store_true", help="write no PNG grid")
    s.set_defaults(run=run_sample)

    lk = sub.add_parser(
        "likelihood",
        help="bits/dim of a data file under a user's network",
        description="Bits/dim of the samples of a .pt or .npy file under a user's network, through the "
        "probability-flow ODE (sdesolve.bits_per_dim), with the mean and its standard error.",
    )
    _add_common(lk)
    lk.add_argument(
        "--data",
        required=True,
        help="a .pt/.pth (torch.save of one tensor) or .npy file of shape (N, *event): integer levels or "
        "floats on the n-bit grid of --data-range",
    )
    lk.add_argument("--batch-size", type=int, default=64, help="samples per likelihood solve (default 64)")
    lk.add_argument("--limit", type=int, default=None, help="use the first LIMIT samples only")
    lk.add_argument("--n-bits", type=int, default=8, help="bits per coordinate of the data (default 8)")
    lk.add_argument(
        "--dequantize",
        choices=["uniform", "none"],
        default="uniform",
        help="uniform dequantization (default) or none (continuous data)",
    )
    lk.add_argument("--divergence", choices=["hutchinson", "exact"], default="hutchinson", help="divergence estimator")
    lk.add_argument("--method", default="dopri5", help="ODE method of log_likelihood (default dopri5)")
    lk.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    lk.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    lk.add_argument("--out", default=None, help="also write the per-sample bits/dim here (torch.save)")
    lk.set_defaults(run=run_likelihood)
    return p


def _check_counts(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    for name in ("n", "steps", "batch_size", "limit", "n_bits"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, or 2 for a user error)."""
    p = build_parser()
    args = p.parse_args(argv)
    _check_counts(args, p)
    try:
        return int(args.run(args))
    except CLIError as exc:
        if args.traceback:
            raise
        print(f"sdesolve {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as exc:  # sdesolve's argument checks name the argument
        if args.traceback:
            raise
        cause = exc.__cause__ if isinstance(exc.__cause__, CLIError) else exc
        print(f"sdesolve {args.cmd}: error: {cause}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
