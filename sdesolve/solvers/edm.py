r"""EDM's samplers (Karras et al. 2022): Heun with churn (Algorithm 2) and the Euler-ancestral step.

Karras et al. write every diffusion as ``x_hat = x / alpha`` with noise level ``sigma_hat = sigma / alpha``
(EDM's sigma; the process' ``sigma_over_alpha``): ``x_hat_t = x_0 + sigma_hat_t eps``. The
probability-flow ODE is then ``dx_hat / dsigma_hat = (x_hat - D(x_hat, sigma_hat)) / sigma_hat`` with the
denoiser ``D = x0_hat``, on any linear process. Both samplers step in (x_hat, sigma_hat) and map back
with ``x = alpha x_hat``; the network is called on ``x = alpha(t) x_hat`` at the time
``t = t_of_sigma_over_alpha(sigma_hat)``, through :func:`~sdesolve.model.view_at` with precomputed
coefficients.

**EDMHeun** (Karras et al. 2022, Algorithm 2). On the step from sigma_i to sigma_{i+1}:

    gamma_i   = min(S_churn / N, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0,
    sigma~    = sigma_i (1 + gamma_i),        x~ = x_hat_i + sqrt(sigma~^2 - sigma_i^2) S_noise z,
    d         = (x~ - D(x~, sigma~)) / sigma~,   x_e = x~ + (sigma_{i+1} - sigma~) d              (Euler),
    d'        = (x_e - D(x_e, sigma_{i+1})) / sigma_{i+1},
    x_hat_{i+1} = x~ + (sigma_{i+1} - sigma~) (d + d') / 2                                      (Heun),

with N the number of steps. A step into sigma_{i+1} = 0 stops at the Euler point ``x_e = D(x~, sigma~)``
(k-diffusion's ``sample_heun``; EDM's Algorithm 2 line 8): the model is never evaluated at sigma = 0.
``sigma~`` is capped at the process' largest noise level ``sigma_over_alpha(T)`` (the model is never
evaluated outside [t_min, T]); EDM's own grids never reach the cap. With ``S_churn = 0`` the sampler is
deterministic Heun on the probability-flow ODE in sigma_hat, second order, 2 evaluations per step.
Every gamma_i depends on the grid only, so all coefficients are computed once in ``init``; whether a
step draws noise (gamma_i > 0) is a host list.

**EulerAncestral** (k-diffusion's ``sample_euler_ancestral``; diffusers' ``EulerAncestralDiscreteScheduler``):

    sigma_up   = min(sigma_{i+1}, eta sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2)),
    sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2),
    x_hat_{i+1} = x_hat_i + (sigma_down - sigma_i) (x_hat_i - D) / sigma_i + S_noise sigma_up z.

For eta in [0, 1] this is DDIM(eta) (:class:`~sdesolve.DDIM`) written in (x_hat, sigma_hat): sigma_up is
DDIM's c / alpha_s and sigma_down its ``sqrt(sigma_s^2 - c^2) / alpha_s``; eta = 1 samples the forward
posterior (DDPM), eta = 0 is Euler. eta > 1 adds more noise than the posterior (capped at sigma_{i+1}).

Reference: T. Karras, M. Aittala, T. Aila, S. Laine, "Elucidating the Design Space of Diffusion-Based
Generative Models", NeurIPS 2022 (Algorithm 2, eq. 5 for the grid).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._validate import check_real
from ..model import ScoreModel, predicts_eps, view_at, view_coefficients
from .base import GeneratorLike, Solver, randn_like, steps_into_zero

if TYPE_CHECKING:
    from ..sde.base import LinearSDE

__all__ = ["EDMHeun", "EulerAncestral"]


def _hat(sde: LinearSDE, grid: Tensor) -> list[float]:
    """EDM's sigma = sigma / alpha at each grid time (host floats; 0 where sigma = 0)."""
    return sde._sigma_over_alpha(grid).tolist()


class EDMHeun(Solver):
    r"""EDM's stochastic Heun sampler (Karras et al. 2022, Algorithm 2) on any linear process.

    Args:
        s_churn: total churn S_churn >= 0 (default 0: deterministic Heun); step i adds noise up to
            ``sigma~ = sigma_i (1 + min(S_churn / N, sqrt(2) - 1))`` where S_tmin <= sigma_i <= S_tmax.
        s_tmin, s_tmax: the range of EDM sigmas (sigma / alpha) where churn applies (0 <= s_tmin <= s_tmax;
            s_tmax may be inf).
        s_noise: scale S_noise > 0 of the added noise (default 1).

    Two network evaluations per step (one on a step into sigma = 0); deterministic order 2.
    ``noise=False`` (the last step under ``denoise=True``) takes that step without churn. Default grid
    ``"karras"`` (EDM's eq. 5, rho = 7).
    """

    order = 2.0
    nfe_per_step = 2
    default_grid = "karras"

    def __init__(self, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0):
        self.s_churn = check_real(s_churn, "s_churn", nonnegative=True)
        self.s_tmin = check_real(s_tmin, "s_tmin", nonnegative=True)
        self.s_tmax = check_real(s_tmax, "s_tmax", lo=self.s_tmin, finite=False)  # [s_tmin, inf]
        self.s_noise = check_real(s_noise, "s_noise", positive=True)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.s_churn > 0.0

    @property
    def strong_order(self) -> float | None:  # type: ignore[override]
        return None if self.s_churn > 0.0 else 2.0

    def nfe(self, n_steps: int) -> int:
        """``2 n_steps`` (a step into sigma = 0 costs one evaluation)."""
        return 2 * n_steps

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Any]:
        c: dict[str, Any] = super().init(sde, grid)
        n = grid.numel() - 1
        r = _hat(sde, grid)
        r_max = float(sde._sigma_over_alpha(torch.tensor(float(sde.T), dtype=torch.float64)))
        gamma = min(self.s_churn / n, math.sqrt(2.0) - 1.0)
        r_hat, churn = [], []
        for i in range(n):
            g = gamma if self.s_tmin <= r[i] <= self.s_tmax else 0.0
            rh = min(r[i] * (1.0 + g), max(r_max, r[i]))
            r_hat.append(rh)
            churn.append(self.s_noise * math.sqrt(max(rh * rh - r[i] * r[i], 0.0)))
        c["churn"] = torch.tensor(churn, dtype=torch.float64)
        c["draws"] = [x > 0.0 for x in churn]  # a host list: which steps draw noise
        c["into_zero"] = steps_into_zero(sde, grid)
        hat = torch.tensor(r_hat, dtype=torch.float64)
        c["t_hat"] = torch.where(
            hat > torch.tensor(r[:-1], dtype=torch.float64), sde._t_of_sigma_over_alpha(hat), grid[:-1]
        )
        base = view_coefficients(sde, grid[:-1])
        churned = view_coefficients(sde, c["t_hat"])
        nxt = view_coefficients(sde, grid[1:])
        c["inv_alpha"] = base["x0_x"]  # x_hat_i = x / alpha_i
        for suffix, vc, rr in (("", base, r[:-1]), ("_hat", churned, r_hat)):
            rr_t = torch.tensor(rr, dtype=torch.float64)
            c["alpha" + suffix], c["sigma" + suffix] = vc["alpha"], vc["sigma"]
            # the Euler point x_e = (s/rr) x~ + (1 - s/rr) D, with s = sigma_{i+1}, rr the sigma it starts from
            c["e_x" + suffix] = torch.tensor(r[1:], dtype=torch.float64) / rr_t
            c["e_d" + suffix] = 1.0 - c["e_x" + suffix]
            c["half_h" + suffix] = 0.5 * (torch.tensor(r[1:], dtype=torch.float64) - rr_t)
            c["inv_r" + suffix] = 1.0 / rr_t
        c["alpha_next"], c["sigma_next"] = nxt["alpha"], nxt["sigma"]
        r_next = torch.tensor(r[1:], dtype=torch.float64)
        c["inv_r_next"] = torch.where(r_next > 0, 1.0 / r_next, torch.zeros_like(r_next))
        return c

    def step(
        self,
        model: ScoreModel,
        state: dict,
        i: int,
        coefs: dict,
        *,
        generator: GeneratorLike = None,
        noise: bool = True,
        need_x0: bool = False,
    ) -> dict:
        x = state["x"]
        churn = noise and coefs["draws"][i]
        k = "_hat" if churn else ""
        xh = coefs["inv_alpha"][i] * x  # x_hat_i
        if churn:
            xh = torch.addcmul(xh, coefs["churn"][i], randn_like(x, generator))
        a_k = coefs["alpha" + k][i]
        d1 = view_at(model, a_k * xh, coefs["t" + k][i], "x0", (a_k, coefs["sigma" + k][i]))
        x_e = torch.addcmul(coefs["e_x" + k][i] * xh, coefs["e_d" + k][i], d1)  # Euler point (x_hat scale)
        if coefs["into_zero"][i]:
            xh_next = x_e
        else:
            a_n = coefs["alpha_next"][i]
            d2 = view_at(model, a_n * x_e, coefs["t_next"][i], "x0", (a_n, coefs["sigma_next"][i]))
            slope = (xh - d1) * coefs["inv_r" + k][i] + (x_e - d2) * coefs["inv_r_next"][i]
            xh_next = torch.addcmul(xh, coefs["half_h" + k][i], slope)
        out = {"x": coefs["alpha_next"][i] * xh_next}
        if need_x0:
            out["x0"] = d1
        return out


class EulerAncestral(Solver):
    r"""The Euler-ancestral sampler (k-diffusion, diffusers) in EDM's variables on any linear process.

    Args:
        eta: the ancestral noise level, >= 0 (default 1: the forward posterior, DDPM; 0: Euler, DDIM).
        s_noise: scale of the added noise, > 0 (default 1).

    One network evaluation per step, weak order 1. ``noise=False`` (the last step under ``denoise=True``)
    takes the step ``x_hat + (sigma_down - sigma_i) d`` without the noise. A step into sigma = 0 returns
    ``alpha x0_hat`` (sigma_up = sigma_down = 0). Default grid ``"karras"``.
    """

    order = 1.0
    nfe_per_step = 1
    default_grid = "karras"

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0):
        self.eta = check_real(eta, "eta", nonnegative=True)
        self.s_noise = check_real(s_noise, "s_noise", positive=True)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0.0

    @property
    def strong_order(self) -> float | None:  # type: ignore[override]
        return None if self.eta > 0.0 else 1.0

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Any]:
        c: dict[str, Any] = super().init(sde, grid)
        c.update(view_coefficients(sde, grid[:-1]))
        r = sde._sigma_over_alpha(grid)
        r_t, r_s = r[:-1], r[1:]
        # k-diffusion's sigma_up: eta r_s sqrt(1 - r_s^2 / r_t^2), the SNR ratio from the process
        up = torch.minimum(r_s, self.eta * r_s * torch.sqrt(sde._one_minus_snr_ratio(grid[:-1], grid[1:])))
        down = torch.sqrt(torch.clamp(r_s * r_s - up * up, min=0.0))
        alpha_next = torch.exp(sde._log_alpha(grid[1:]))
        # x_s = alpha_s [(down / r_t) x_hat + (1 - down / r_t) D + s_noise up z], x_hat = x / alpha_t
        c["a"] = alpha_next * (down / r_t) / c["alpha"]
        c["b"] = alpha_next * (1.0 - down / r_t)
        c["c"] = alpha_next * self.s_noise * up
        # the same step from an eps network's output, D = (x - sigma eps) / alpha folded in (no conversion)
        c["a_eps"] = c["a"] + c["b"] * c["x0_x"]
        c["b_eps"] = c["b"] * c["x0_eps"]
        c["draws"] = [bool(v) for v in r_s > 0]
        return c

    def step(
        self,
        model: ScoreModel,
        state: dict,
        i: int,
        coefs: dict,
        *,
        generator: GeneratorLike = None,
        noise: bool = True,
        need_x0: bool = False,
    ) -> dict:
        x = state["x"]
        at_t = (coefs["alpha"][i], coefs["sigma"][i])
        d: Tensor | None
        if predicts_eps(model):  # the eps form: one multiply and one multiply-add, as DDIM
            e = view_at(model, x, coefs["t"][i], "eps", at_t)
            x_next = torch.addcmul(coefs["a_eps"][i] * x, coefs["b_eps"][i], e)
            d = torch.addcmul(coefs["x0_x"][i] * x, coefs["x0_eps"][i], e) if need_x0 else None
        else:
            d = view_at(model, x, coefs["t"][i], "x0", at_t)
            x_next = torch.addcmul(coefs["a"][i] * x, coefs["b"][i], d)
        if noise and self.stochastic and coefs["draws"][i]:
            x_next = torch.addcmul(x_next, coefs["c"][i], randn_like(x, generator))
        out = {"x": x_next}
        if need_x0 and d is not None:
            out["x0"] = d
        return out
