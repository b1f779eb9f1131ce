"""Variance-preserving processes: VP (Song et al. 2021), sub-VP and the cosine schedule.

VP and cosine derive from :class:`~sdesolve.sde.base.VariancePreservingSDE`, which holds the
shared ``sigma^2 = 1 - alpha^2`` formulas; each gives only ``log alpha``, ``f`` and the inverse
of ``log alpha``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validate import check_real
from .base import LinearSDE, VariancePreservingSDE, check_positive_finite, check_t_min

__all__ = ["VPSDE", "SubVPSDE", "CosineVPSDE"]


class _LinearBeta(LinearSDE):
    """Shared by VP and sub-VP: beta(t) = beta_min + t (beta_max - beta_min)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        super().__init__()
        beta_min = check_positive_finite(beta_min, "beta_min")
        beta_max = check_positive_finite(beta_max, "beta_max")
        if beta_min > beta_max:
            raise ValueError(f"beta_min must be <= beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min, self.beta_max, self.t_min = beta_min, beta_max, check_t_min(t_min, self.T)

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

    def _t_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        return self._t_of_half_int_beta(-log_alpha)

    def extra_repr(self) -> str:
        return f"beta_min={self.beta_min:g}, beta_max={self.beta_max:g}, t_min={self.t_min:g}"


class VPSDE(_LinearBeta, VariancePreservingSDE):
    """The variance-preserving SDE of Song et al. (2021), the continuous limit of DDPM.

    ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW`` with ``beta(t) = beta_min + t (beta_max - beta_min)``,
    so ``log alpha(t) = -t^2 (beta_max - beta_min)/4 - t beta_min / 2``,
    ``sigma(t)^2 = 1 - alpha(t)^2`` and ``g(t)^2 = -2 f(t) = beta(t)``. Prior N(0, I).
    """


class SubVPSDE(_LinearBeta):
    """The sub-VP SDE of Song et al. (2021).

    Same mean as VP; ``sigma(t) = 1 - alpha(t)^2`` (the variance is the square of VP's,
    no square root), ``g(t)^2 = beta(t) (1 - alpha(t)^4)``. Prior N(0, I).
    """

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(-torch.expm1(2.0 * self._log_alpha(t)))

    def _g2(self, t: Tensor) -> Tensor:
        return self.beta(t) * (-torch.expm1(4.0 * self._log_alpha(t)))

    def _gamma_prime(self, t: Tensor) -> Tensor:
        # gamma = 2 log sigma - 2 log alpha with sigma = 1 - alpha^2, sigma' = -2 alpha^2 f:
        # gamma' = -2 f (1 + 2 alpha^2 / sigma) = -2 f (1 + alpha^2) / (1 - alpha^2); +inf at t = 0
        a2 = torch.exp(2.0 * self._log_alpha(t))
        return -2.0 * self._f(t) * (1.0 + a2) / torch.exp(self._log_sigma(t))

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        # a = alpha^2 solves e^lam (1 - a)^2 = a; the root in (0, 1) is
        # a = 2 e^lam / (2 e^lam + 1 + sqrt(4 e^lam + 1)).
        # Evaluated without overflow: for lam < 0 with e = e^lam <= 1 as written; for lam >= 0
        # divided through by e^lam, with u = e^-lam <= 1: a = 2 / (2 + u + sqrt(4u + u^2)), so
        # log a = -log1p((u + sqrt(4u + u^2)) / 2), exact to round-off as t -> 0 (log(2 + w) - log 2 lost
        # up to 7 digits of t there: 2e-9 relative at t = 1e-6).
        e = torch.exp(torch.clamp(lam, max=0.0))
        u = torch.exp(torch.clamp(-lam, max=0.0))
        log_a_neg = math.log(2.0) + lam - torch.log(2.0 * e + 1.0 + torch.sqrt(4.0 * e + 1.0))
        log_a_pos = -torch.log1p(0.5 * (u + torch.sqrt(4.0 * u + u * u)))
        log_a = torch.where(lam < 0, log_a_neg, log_a_pos)
        return self._t_of_half_int_beta(-0.5 * log_a)


class CosineVPSDE(VariancePreservingSDE):
    """The cosine schedule of Nichol & Dhariwal (2021) as a continuous VP process.

    ``alpha(t) = cos(pi/2 (t + s)/(1 + s)) / cos(pi/2 s/(1 + s))``, ``sigma^2 = 1 - alpha^2``,
    ``f(t) = d log alpha/dt = -pi/2 tan(pi/2 (t + s)/(1 + s)) / (1 + s)``, ``g(t)^2 = -2 f(t)``.

    alpha reaches 0 at t = 1, where the drift blows up. The process is therefore capped:
    ``T`` is the time at which the log-SNR reaches ``log_snr_min`` (default -10, about the
    log-SNR of the default VP process at t = 1), and ``t > T`` is outside the process.
    ``log_snr_min`` must lie below the log-SNR at ``t_min`` (so that ``t_min < T``).
    """

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, log_snr_min: float = -10.0):
        super().__init__()
        self.s = check_positive_finite(s, "s")
        self.log_snr_min = check_real(log_snr_min, "log_snr_min")
        theta0 = 0.5 * math.pi * self.s / (1.0 + self.s)
        self._cos0, self._sin0, self._tan0 = math.cos(theta0), math.sin(theta0), math.tan(theta0)
        self.t_min = check_t_min(t_min, 1.0)  # alpha(1) = 0: every T lies below 1
        lam_t_min = float(self._log_snr(torch.tensor(self.t_min, dtype=torch.float64)))
        self.T = float(self._t_of_log_snr(torch.tensor(self.log_snr_min, dtype=torch.float64)))
        # a log_snr_min within round-off of lam_t_min can still give T = t_min (t_min = 0.5: up to 16 ulps below)
        if not (self.log_snr_min < lam_t_min and self.t_min < self.T):
            raise ValueError(
                f"log_snr_min must be below the log-SNR at t_min={self.t_min:g}, which is {lam_t_min:.6g} "
                f"(s={self.s:g}), got {log_snr_min!r}"
            )

    def _theta(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * (t + self.s) / (1.0 + self.s)

    def _log_alpha(self, t: Tensor) -> Tensor:
        # alpha = cos(theta_0 + d) / cos(theta_0) = 1 - 2 sin^2(d/2) - tan(theta_0) sin(d), d = pi/2 t/(1 + s):
        # through log1p, log alpha keeps its relative precision near t = 0 (log cos(theta) - log cos(theta_0)
        # cancels there: the log-SNR lost 1e-12). Clamped at 0: sigma(0) must be 0, never NaN.
        d = (0.5 * math.pi / (1.0 + self.s)) * t
        half = torch.sin(0.5 * d)
        return torch.clamp(torch.log1p(-2.0 * half * half - self._tan0 * torch.sin(d)), max=0.0)

    def _f(self, t: Tensor) -> Tensor:
        return -torch.tan(self._theta(t)) * (0.5 * math.pi / (1.0 + self.s))

    def _t_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # cos(theta) = alpha cos(theta_0) and sin(theta)^2 = sin(theta_0)^2 + cos(theta_0)^2 (1 - alpha^2):
        # atan2 of the two is accurate at every alpha (arccos is ill-conditioned near theta_0).
        sin2 = self._sin0**2 + self._cos0**2 * (-torch.expm1(2.0 * log_alpha))
        theta = torch.atan2(torch.sqrt(sin2), torch.exp(log_alpha) * self._cos0)
        return torch.clamp(theta * (2.0 * (1.0 + self.s) / math.pi) - self.s, min=0.0)

    def extra_repr(self) -> str:
        return f"s={self.s:g}, T={self.T:.6g}, t_min={self.t_min:g}"
