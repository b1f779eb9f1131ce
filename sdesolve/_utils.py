"""Private helpers shared by the package: time handling, broadcasting, validation."""

from __future__ import annotations

import numbers
from typing import Union

import torch
from torch import Tensor

TimeLike = Union[float, int, Tensor]


def as_time64(t: TimeLike, *, name: str = "t") -> Tensor:
    """Return ``t`` as a float64 tensor (on ``t``'s device when it is a tensor).

    Accepts a Python number, a 0-d tensor or a 1-d tensor of per-sample times.
    Raises a ``TypeError`` for non-floating tensors and a ``ValueError`` for
    tensors of higher rank.
    """
    if isinstance(t, Tensor):
        if not (t.is_floating_point()):
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() > 1:
            raise ValueError(
                f"{name} must be a Python float, a 0-d tensor or a per-sample tensor of shape (B,), "
                f"got shape {tuple(t.shape)}"
            )
        return t.to(torch.float64)
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"{name} must be a float or a floating-point tensor, got {type(t).__name__}")
    return torch.tensor(float(t), dtype=torch.float64)


def out_dtype(t: TimeLike) -> torch.dtype:
    """The dtype a coefficient is returned in: the caller's floating dtype, float64 for numbers."""
    if isinstance(t, Tensor):
        return t.dtype
    return torch.float64


def time_tol(t: TimeLike, hi: float) -> float:
    """How far a time may lie outside ``[0, hi]`` and still be accepted (then clamped).

    A few units in the last place of the caller's dtype: ``sde.T`` rounded to float32 or
    float16 may land just above T (e.g. the cosine process's T = 0.99567657...). 1e-9 for
    Python numbers and float64 tensors.
    """
    scale = max(1.0, abs(hi))
    tol = 1e-9 * scale
    if isinstance(t, Tensor) and t.is_floating_point():
        tol = max(tol, 4.0 * torch.finfo(t.dtype).eps * scale)
    return tol


def check_time_range(t64: Tensor, lo: float, hi: float, *, name: str = "t", tol: float | None = None) -> None:
    """Raise if any time lies outside ``[lo - tol, hi + tol]`` (``tol`` defaults to 1e-9 max(1, |hi|)).

    The check reads values, so it is only done for CPU tensors (and numbers): on an
    accelerator it would force a host-device synchronization. Internal callers clamp
    instead of calling this.
    """
    if t64.device.type != "cpu":
        return
    if t64.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(t64).all()):
        raise ValueError(f"{name} must be finite, got {t64.tolist()}")
    if tol is None:
        tol = 1e-9 * max(1.0, abs(hi))
    bad = (t64 < lo - tol) | (t64 > hi + tol)
    if bool(bad.any()):
        vals = t64[bad].flatten()[:4].tolist()
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}], got values {vals}")


def bcast(coef: Tensor, x: Tensor) -> Tensor:
    """Reshape a coefficient of shape () or (B,) to broadcast against x of shape (B, *event)."""
    if coef.dim() == 0:
        return coef
    return coef.reshape(coef.shape + (1,) * (x.dim() - coef.dim()))


def check_x(x: Tensor, *, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension: shape (B, *event), got shape {tuple(x.shape)}")


def check_batch(t64: Tensor, x: Tensor, *, name: str = "t") -> None:
    if t64.dim() == 1 and t64.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} has {t64.shape[0]} times but x has batch size {x.shape[0]}; "
            f"pass a scalar time or a tensor of shape ({x.shape[0]},)"
        )


def batch_time(t: TimeLike, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Times as a (B,) tensor on x's device (the form networks receive)."""
    dtype = dtype or x.dtype
    if isinstance(t, Tensor):
        t = t.to(device=x.device, dtype=dtype)
        if t.dim() == 0:
            return t.expand(x.shape[0])
        return t
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=dtype)


def sum_event(v: Tensor) -> Tensor:
    """Sum over every dimension but the first (the batch)."""
    return v.reshape(v.shape[0], -1).sum(dim=1)
