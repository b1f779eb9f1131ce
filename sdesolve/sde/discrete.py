"""The VP process through a discrete DDPM schedule, so integer-timestep networks work with every solver."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._validate import check_choice, check_int, check_real, describe
from .base import VariancePreservingSDE, check_t_min

__all__ = ["DiscreteVPSDE", "ddpm_betas"]


def ddpm_betas(
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    max_beta: float = 0.999,
) -> Tensor:
    """DDPM betas (float64) by diffusers' schedule names.

    ``"linear"``: evenly spaced from beta_start to beta_end (Ho et al. 2020);
    ``"scaled_linear"``: evenly spaced in sqrt(beta) (latent diffusion);
    ``"squaredcos_cap_v2"``: the cosine schedule (Nichol & Dhariwal 2021), betas capped at max_beta.
    """
    check_choice(beta_schedule, "beta_schedule", ("linear", "scaled_linear", "squaredcos_cap_v2"))
    try:
        n = check_int(num_train_timesteps, "num_train_timesteps", minimum=1)
    except ValueError:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps!r}") from None
    beta_start = check_real(beta_start, "beta_start", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    beta_end = check_real(beta_end, "beta_end", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    max_beta = check_real(max_beta, "max_beta", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":

        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        b = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
        return torch.tensor(b, dtype=torch.float64)
    raise AssertionError("unreachable")  # pragma: no cover - check_choice above


def _schedule_tensor(value: object, name: str) -> Tensor:
    """A user's betas or alphas_cumprod as a float64 host tensor, each entry checked to lie in (0, 1)."""
    expected = f"{name} must be a 1-d tensor or sequence of real numbers"
    if isinstance(value, (str, bytes)) or (
        isinstance(value, Tensor) and (value.dtype == torch.bool or value.is_complex())
    ):
        raise TypeError(f"{expected}, got {describe(value)}")
    try:
        v = torch.as_tensor(value, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{expected}, got {describe(value)}") from e
    if v.dim() != 1 or v.numel() < 1:
        raise ValueError(f"{name} must be a non-empty 1-d tensor, got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()) or bool(((v <= 0) | (v >= 1)).any()):
        bad = v[~(torch.isfinite(v) & (v > 0) & (v < 1))][:4].tolist()
        raise ValueError(f"{name} must lie in (0, 1), got values {bad}")
    return v


class DiscreteVPSDE(VariancePreservingSDE):
    """The VP process through a discrete DDPM schedule of N steps.

    Discrete step k = 0, ..., N-1 (with ``alphas_cumprod[k]``) sits at time ``t_k = (k + 1) / N``;
    ``log alpha`` is interpolated piecewise-linearly in t between these knots and
    ``(0, 0)`` (as DPM-Solver does), and ``sigma^2 = 1 - alpha^2``. So ``f`` and
    ``g^2 = -2 f`` are piecewise constant. ``t_min`` defaults to ``1 / N`` (step 0).
    ``t_min = 0`` reaches the clean data (diffusers' ``set_alpha_to_one``): there
    ``sigma = 0`` and ``log_snr = +inf``, and every coefficient stays defined (no NaN).
    A single step (N = 1) needs an explicit ``t_min < 1``: its only knot is t = 1 = T.

    A network trained on integer timesteps receives ``network_time(t) = N t - 1``, which
    is exactly k at ``t_k``.

    Pass exactly one of ``betas`` or ``alphas_cumprod`` (1-d, length N); or use
    :meth:`from_schedule` with diffusers' schedule names.
    """

    _log_alpha_knots: Tensor  # a buffer

    def __init__(
        self, betas: Tensor | None = None, *, alphas_cumprod: Tensor | None = None, t_min: float | None = None
    ):
        super().__init__()
        if (betas is None) == (alphas_cumprod is None):
            raise ValueError("pass exactly one of betas or alphas_cumprod")
        name = "betas" if betas is not None else "alphas_cumprod"
        if betas is not None:
            log_ac = torch.cumsum(torch.log1p(-_schedule_tensor(betas, "betas")), dim=0)
        else:
            ac = _schedule_tensor(alphas_cumprod, "alphas_cumprod")
            if ac.numel() > 1 and bool((ac[1:] >= ac[:-1]).any()):
                raise ValueError("alphas_cumprod must be strictly decreasing")
            log_ac = torch.log(ac)
        n = int(log_ac.numel())
        if t_min is None and n == 1:
            raise ValueError(
                f"{name} must have at least 2 entries unless t_min is given: a single step (N = 1) puts "
                "its only knot, and the default t_min = 1/N, at T = 1"
            )
        self.t_min = check_t_min(1.0 / n if t_min is None else t_min, self.T)
        self.num_train_timesteps = n
        knots = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * log_ac])
        self.register_buffer("_log_alpha_knots", knots, persistent=False)
        self._knots_host = knots  # a plain attribute: stays on the host when the module moves
        self._knots_on: dict = {}
        self.register_buffer("alphas_cumprod", log_ac.exp(), persistent=False)

    @classmethod
    def from_schedule(
        cls,
        beta_schedule: str = "linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        **kwargs: Any,
    ) -> DiscreteVPSDE:
        """Build from diffusers' schedule names (``linear``, ``scaled_linear``, ``squaredcos_cap_v2``)."""
        return cls(ddpm_betas(beta_schedule, num_train_timesteps, beta_start, beta_end), **kwargs)

    def _knots(self, t: Tensor) -> Tensor:
        # Host times (grids, per-grid coefficients) use the host copy, device times the buffer:
        # never a device-to-host copy, which would synchronize.
        if t.device.type == "cpu":
            return self._knots_host
        L = self._log_alpha_knots
        if L.device == t.device and L.dtype == torch.float64:
            return L
        # The module was not moved to t's device, or was cast with the model it belongs to (``.half()``,
        # ``.to(torch.float32)``: the buffer lost the knots' digits): copy the float64 knots there once and
        # keep them (a copy per call would be a transfer inside every sampling step, and CUDA-graph capture
        # forbids it).
        cached = self._knots_on.get(t.device)
        if cached is None:
            cached = self._knots_on[t.device] = self._knots_host.to(t.device)
        return cached

    def _segment(self, t: Tensor):
        n = self.num_train_timesteps
        u = t * n
        k = torch.clamp(torch.floor(u.detach()), 0, n - 1).long()
        return k, u - k.to(t.dtype)

    def _log_alpha(self, t: Tensor) -> Tensor:
        L = self._knots(t)
        k, w = self._segment(t)
        # take, not L[k]: indexing with a 0-d device tensor reads it on the host (a synchronization)
        lo = L.take(k)
        return lo + w * (L.take(k + 1) - lo)

    def _f(self, t: Tensor) -> Tensor:
        L = self._knots(t)
        k, _ = self._segment(t)
        return (L.take(k + 1) - L.take(k)) * self.num_train_timesteps

    def _t_of_log_alpha(self, target: Tensor) -> Tensor:
        L = self._knots(target)
        neg = -L  # increasing
        j = torch.searchsorted(neg, -target).clamp(1, L.numel() - 1)
        lo = L.take(j - 1)
        w = (target - lo) / (L.take(j) - lo)
        return (j - 1 + w) / self.num_train_timesteps

    def network_time(self, t: Tensor) -> Tensor:
        """The integer-timestep convention: t = (k + 1) / N maps to k."""
        return t * self.num_train_timesteps - 1.0

    def timestep_to_t(self, k: int | Tensor) -> Tensor:
        """The continuous time of discrete timestep k: (k + 1) / N (float64)."""
        return (torch.as_tensor(k, dtype=torch.float64) + 1.0) / self.num_train_timesteps

    def extra_repr(self) -> str:
        return f"num_train_timesteps={self.num_train_timesteps}, t_min={self.t_min:g}"
