"""The variance-exploding SDE of Song et al. (2021) (NCSN / SMLD)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import LinearSDE, check_positive_finite, check_t_min

__all__ = ["VESDE"]


class VESDE(LinearSDE):
    """The variance-exploding SDE: ``dx = sqrt(d sigma^2/dt) dW``.

    ``alpha(t) = 1``, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``,
    ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))``. Prior N(0, sigma_max^2 I).
    As in Song et al., sigma(0) = sigma_min: the data are taken as already perturbed
    by the smallest noise level.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5):
        super().__init__()
        sigma_min = check_positive_finite(sigma_min, "sigma_min")
        sigma_max = check_positive_finite(sigma_max, "sigma_max")
        if sigma_min >= sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max, self.t_min = sigma_min, sigma_max, check_t_min(t_min, self.T)
        self._log_ratio = math.log(sigma_max / sigma_min)
        self.prior_std = sigma_max

    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return math.log(self.sigma_min) + t * self._log_ratio

    def _f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: Tensor) -> Tensor:
        return torch.exp(2.0 * self._log_sigma(t)) * (2.0 * self._log_ratio)

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        return (-0.5 * lam - math.log(self.sigma_min)) / self._log_ratio

    def _gamma_prime(self, t: Tensor) -> Tensor:
        # gamma = -lambda = 2 log sigma = 2 log sigma_min + 2 t log(sigma_max / sigma_min)
        return torch.full_like(t, 2.0 * self._log_ratio)

    def extra_repr(self) -> str:
        return f"sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, t_min={self.t_min:g}"
