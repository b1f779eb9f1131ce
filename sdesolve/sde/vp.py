"""Variance-preserving processes: VP (Song et al. 2021), sub-VP and the cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from .base import LinearSDE

__all__ = ["VPSDE", "SubVPSDE", "CosineVPSDE"]


def _check_betas(beta_min: float, beta_max: float) -> None:
    for name, v in (("beta_min", beta_min), ("beta_max", beta_max)):
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {v}")
    if beta_min > beta_max:
        raise ValueError(f"beta_min must be <= beta_max, got beta_min={beta_min}, beta_max={beta_max}")


def _check_tmin(t_min: float, T: float) -> None:
    if not (0.0 <= t_min < T):
        raise ValueError(f"t_min must lie in [0, T={T:g}), got {t_min}")


class _LinearBeta(LinearSDE):
    """Shared by VP and sub-VP: beta(t) = beta_min + t (beta_max - beta_min)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        super().__init__()
        beta_min, beta_max = float(beta_min), float(beta_max)
        _check_betas(beta_min, beta_max)
        _check_tmin(float(t_min), self.T)
        self.beta_min, self.beta_max, self.t_min = beta_min, beta_max, float(t_min)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_alpha(self, t: Tensor) -> Tensor:
        # log alpha = -1/2 int_0^t beta = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def _t_of_half_int_beta(self, c: Tensor) -> Tensor:
        """Solve 1/2 int_0^t beta = c for t >= 0 (c >= 0)."""
        d = self.beta_max - self.beta_min
        if d == 0:
            return 2.0 * c / self.beta_min
        # d/4 t^2 + beta_min/2 t - c = 0  ->  t = 2c / (b/2 + sqrt(b^2/4 + d c)) (stable root)
        b = self.beta_min
        return 2.0 * c / (0.5 * b + torch.sqrt(0.25 * b * b + d * c))

    def extra_repr(self) -> str:
        return f"beta_min={self.beta_min:g}, beta_max={self.beta_max:g}, t_min={self.t_min:g}"


class VPSDE(_LinearBeta):
    """The variance-preserving SDE of Song et al. (2021), the continuous limit of DDPM.

    ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW`` with ``beta(t) = beta_min + t (beta_max - beta_min)``,
    so ``log alpha(t) = -t^2 (beta_max - beta_min)/4 - t beta_min / 2`` and
    ``sigma(t)^2 = 1 - alpha(t)^2``. Prior N(0, I).
    """

    variance_preserving = True

    def _log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(-torch.expm1(2.0 * self._log_alpha(t)))

    def _g2(self, t: Tensor) -> Tensor:
        return self.beta(t)

    def _log_snr(self, t: Tensor) -> Tensor:
        la2 = 2.0 * self._log_alpha(t)
        return la2 - torch.log(-torch.expm1(la2))

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        # alpha^2 = sigmoid(lam)  ->  -2 log alpha = softplus(-lam)
        return self._t_of_half_int_beta(0.5 * F.softplus(-lam))


class SubVPSDE(_LinearBeta):
    """The sub-VP SDE of Song et al. (2021).

    Same mean as VP; ``sigma(t) = 1 - alpha(t)^2`` (the variance is the square of VP's,
    no square root), ``g(t)^2 = beta(t) (1 - alpha(t)^4)``. Prior N(0, I).
    """

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(-torch.expm1(2.0 * self._log_alpha(t)))

    def _g2(self, t: Tensor) -> Tensor:
        return self.beta(t) * (-torch.expm1(4.0 * self._log_alpha(t)))

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        # a = alpha^2 solves e^lam (1 - a)^2 = a; the root in (0, 1) is
        # a = 2 e^lam / (2 e^lam + 1 + sqrt(4 e^lam + 1)).
        # Evaluated without overflow: for lam < 0 with e = e^lam <= 1 as written; for lam >= 0
        # divided through by e^lam, with u = e^-lam <= 1: a = 2 / (2 + u + sqrt(4u + u^2)).
        e = torch.exp(torch.clamp(lam, max=0.0))
        u = torch.exp(torch.clamp(-lam, max=0.0))
        log_a_neg = math.log(2.0) + lam - torch.log(2.0 * e + 1.0 + torch.sqrt(4.0 * e + 1.0))
        log_a_pos = math.log(2.0) - torch.log(2.0 + u + torch.sqrt(4.0 * u + u * u))
        log_a = torch.where(lam < 0, log_a_neg, log_a_pos)
        return self._t_of_half_int_beta(-0.5 * log_a)


class CosineVPSDE(LinearSDE):
    """The cosine schedule of Nichol & Dhariwal (2021) as a continuous VP process.

    ``alpha(t) = cos(pi/2 (t + s)/(1 + s)) / cos(pi/2 s/(1 + s))``, ``sigma^2 = 1 - alpha^2``,
    ``f(t) = d log alpha/dt``, ``g(t)^2 = -2 f(t)``.

    alpha reaches 0 at t = 1, where the drift blows up. The process is therefore capped:
    ``T`` is the time at which the log-SNR reaches ``log_snr_min`` (default -10, about the
    log-SNR of the default VP process at t = 1), and ``t > T`` is outside the process.
    """

    variance_preserving = True

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, log_snr_min: float = -10.0):
        super().__init__()
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"s must be a positive finite number, got {s}")
        if not math.isfinite(log_snr_min):
            raise ValueError(f"log_snr_min must be a finite number, got {log_snr_min}")
        self.s = float(s)
        self.log_snr_min = float(log_snr_min)
        self._log_cos0 = math.log(math.cos(0.5 * math.pi * self.s / (1.0 + self.s)))
        if self.log_snr_min >= float(self._log_snr(torch.tensor(0.0, dtype=torch.float64))):
            raise ValueError(f"log_snr_min must be below the log-SNR at t = 0, got {log_snr_min}")
        self.T = float(self._t_of_log_snr(torch.tensor(self.log_snr_min, dtype=torch.float64)))
        _check_tmin(float(t_min), self.T)
        self.t_min = float(t_min)

    def _theta(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * (t + self.s) / (1.0 + self.s)

    def _log_alpha(self, t: Tensor) -> Tensor:
        # Clamped at 0: at t = 0 rounding can give log alpha = +1e-20, and sigma(0) must be 0, not NaN.
        return torch.clamp(torch.log(torch.cos(self._theta(t))) - self._log_cos0, max=0.0)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(-torch.expm1(2.0 * self._log_alpha(t)))

    def _log_snr(self, t: Tensor) -> Tensor:
        la2 = 2.0 * self._log_alpha(t)
        return la2 - torch.log(-torch.expm1(la2))

    def _f(self, t: Tensor) -> Tensor:
        return -torch.tan(self._theta(t)) * (0.5 * math.pi / (1.0 + self.s))

    def _g2(self, t: Tensor) -> Tensor:
        return -2.0 * self._f(t)

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        # alpha^2 = sigmoid(lam)  ->  log cos(theta) = 1/2 logsigmoid(lam) + log cos(theta_0)
        log_cos = -0.5 * F.softplus(-lam, threshold=50.0) + self._log_cos0
        theta = torch.arccos(torch.exp(log_cos))
        return theta * (2.0 * (1.0 + self.s) / math.pi) - self.s

    def extra_repr(self) -> str:
        return f"s={self.s:g}, T={self.T:.6g}, t_min={self.t_min:g}"
