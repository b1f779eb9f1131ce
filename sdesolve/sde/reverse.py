"""Reverse-time dynamics of a linear forward SDE given a score model.

Both objects are written in the forward time variable t, integrated from T down to t_min:

* :class:`ReverseSDE`: ``dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dW_bar`` (Anderson 1982),
* :class:`ProbabilityFlowODE`: ``dx/dt = f(t) x - 1/2 g(t)^2 s(x, t)`` (Song et al. 2021),

whose marginals match those of the forward process. Times are clamped to ``[0, T]``
(adaptive solvers probe slightly outside the interval), never validated here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._utils import TimeLike, as_time64, bcast, check_batch, check_x, out_dtype
from ..model import as_model

if TYPE_CHECKING:
    from ..model import ScoreLike
    from .base import LinearSDE

__all__ = ["ReverseSDE", "ProbabilityFlowODE"]


class _Reverse:
    drift_weight: float = 1.0

    def __init__(self, sde: LinearSDE, model: ScoreLike) -> None:
        self.sde = sde
        self.model = as_model(model, sde)

    def _coefs(self, t: TimeLike, x: Tensor):
        check_x(x)
        t64 = as_time64(t)
        check_batch(t64, x)
        t64 = t64.to(x.device).clamp(0.0, float(self.sde.T))
        f = bcast(self.sde._f(t64).to(x.dtype), x)
        g2 = bcast(self.sde._g2(t64).to(x.dtype), x)
        return t64, f, g2

    def drift(self, x: Tensor, t: TimeLike) -> Tensor:
        t64, f, g2 = self._coefs(t, x)
        return f * x - (self.drift_weight * g2) * self.model.score(x, t64)

    def diffusion(self, t: TimeLike) -> Tensor:
        """g(t), in t's dtype (float64 for Python numbers)."""
        t64 = as_time64(t).clamp(0.0, float(self.sde.T))
        return torch.sqrt(torch.clamp(self.sde._g2(t64), min=0.0)).to(out_dtype(t))


class ReverseSDE(_Reverse):
    """The reverse-time SDE ``dx = [f x - g^2 s(x, t)] dt + g dW_bar`` of ``sde`` under ``model``."""

    drift_weight = 1.0


class ProbabilityFlowODE(_Reverse):
    """The probability-flow ODE ``dx/dt = f x - 1/2 g^2 s(x, t)`` of ``sde`` under ``model``."""

    drift_weight = 0.5

    def diffusion(self, t: TimeLike) -> Tensor:
        """Zero: the probability flow is deterministic."""
        return torch.zeros_like(as_time64(t), dtype=out_dtype(t))
