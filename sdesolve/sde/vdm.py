"""VDM's SNR-parameterized variance-preserving process (Kingma et al. 2021).

The process is defined by ``gamma(t) = -log SNR(t)``, strictly increasing on [0, 1]:
``sigma^2 = sigmoid(gamma)``, ``alpha^2 = sigmoid(-gamma)``. All coefficients are computed
through log-sigmoid forms, so they stay finite for |gamma| up to (and well past) 30.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import LinearSDE, _derivative

__all__ = ["GammaSchedule", "FixedLinearGamma", "VDMSDE"]


class GammaSchedule(nn.Module):
    """Base class of VDM noise schedules ``gamma(t) = -log SNR(t)``, strictly increasing in t.

    Subclasses implement ``forward(t)`` (elementwise, returning t's dtype). ``derivative``
    is exact by autograd unless overridden; ``inverse`` is optional.
    """

    def forward(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative(self, t: Tensor) -> Tensor:
        """gamma'(t), exact (autograd), differentiable w.r.t. the schedule's parameters."""
        return _derivative(self, t)

    def inverse(self, gamma: Tensor) -> Tensor:
        """The time t with gamma(t) = gamma; raise NotImplementedError where no closed form exists."""
        raise NotImplementedError


class FixedLinearGamma(GammaSchedule):
    """``gamma(t) = gamma_min + (gamma_max - gamma_min) t`` (VDM's fixed linear schedule)."""

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__()
        gamma_min, gamma_max = float(gamma_min), float(gamma_max)
        if not (math.isfinite(gamma_min) and math.isfinite(gamma_max)):
            raise ValueError(f"gamma_min and gamma_max must be finite, got {gamma_min}, {gamma_max}")
        if gamma_min >= gamma_max:
            raise ValueError(f"gamma_min must be < gamma_max, got gamma_min={gamma_min}, gamma_max={gamma_max}")
        self.gamma_min, self.gamma_max = gamma_min, gamma_max

    def forward(self, t: Tensor) -> Tensor:
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t

    def derivative(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.gamma_max - self.gamma_min)

    def inverse(self, gamma: Tensor) -> Tensor:
        return (gamma - self.gamma_min) / (self.gamma_max - self.gamma_min)

    def extra_repr(self) -> str:
        return f"gamma_min={self.gamma_min:g}, gamma_max={self.gamma_max:g}"


class VDMSDE(LinearSDE):
    """The variance-preserving process of VDM with schedule ``gamma(t) = -log SNR(t)``.

    ``sigma^2 = sigmoid(gamma)``, ``alpha^2 = sigmoid(-gamma)``,
    ``f(t) = -1/2 gamma'(t) sigmoid(gamma(t))``, ``g(t)^2 = gamma'(t) sigmoid(gamma(t))``.
    ``t_min`` defaults to 0 (VDM samples down to t = 0). Prior N(0, I).
    """

    variance_preserving = True

    def __init__(self, gamma: GammaSchedule | None = None, t_min: float = 0.0):
        super().__init__()
        if gamma is None:
            gamma = FixedLinearGamma()
        if not isinstance(gamma, nn.Module) or not callable(gamma):
            raise TypeError(f"gamma must be a GammaSchedule module, got {type(gamma).__name__}")
        if not (0.0 <= t_min < self.T):
            raise ValueError(f"t_min must lie in [0, T={self.T:g}), got {t_min}")
        self.gamma = gamma
        self.t_min = float(t_min)

    def _gamma(self, t: Tensor) -> Tensor:
        return self.gamma(t).to(torch.float64)

    def _gamma_prime(self, t: Tensor) -> Tensor:
        if isinstance(self.gamma, GammaSchedule):
            return self.gamma.derivative(t).to(torch.float64)
        return _derivative(self._gamma, t)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * F.logsigmoid(-self._gamma(t))

    def _log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * F.logsigmoid(self._gamma(t))

    def _log_snr(self, t: Tensor) -> Tensor:
        return -self._gamma(t)

    def _f(self, t: Tensor) -> Tensor:
        return -0.5 * self._gamma_prime(t) * torch.sigmoid(self._gamma(t))

    def _g2(self, t: Tensor) -> Tensor:
        return self._gamma_prime(t) * torch.sigmoid(self._gamma(t))

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        try:
            return self.gamma.inverse(-lam).to(torch.float64)
        except (NotImplementedError, AttributeError):
            return super()._t_of_log_snr(lam)
