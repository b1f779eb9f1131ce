r"""DDIM and DDPM (ancestral) steps on any linear forward process, in the eps view.

Every linear forward process has Gaussian marginals ``x_t = alpha_t x_0 + sigma_t eps``.
Write ``lambda_t = log(alpha_t^2 / sigma_t^2)`` (the log-SNR, decreasing in t) and, for
``s < t``, the transition ``x_t | x_s ~ N(alpha_{t|s} x_s, sigma_{t|s}^2 I)`` with

    alpha_{t|s} = alpha_t / alpha_s,
    sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2 = sigma_t^2 (1 - exp(lambda_t - lambda_s)).

**DDIM** (Song, Meng & Ermon 2021, eq. 12, written for general alpha, sigma). Given the
network's noise estimate ``eps_hat = eps(x_t, t)`` and ``x0_hat = (x_t - sigma_t eps_hat) / alpha_t``,

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,     z ~ N(0, I),
    c   = eta * sigma_s * sqrt(1 - exp(lambda_t - lambda_s))
        = eta * (sigma_s / sigma_t) * sigma_{t|s}.

Derivation: DDIM's non-Markovian family keeps every marginal ``q(x_s | x_0) =
N(alpha_s x_0, sigma_s^2)`` for any c in [0, sigma_s], since ``eps_hat`` is (for the true
x_0) a unit Gaussian. ``c^2 = eta^2 sigma~^2`` with ``sigma~^2 = sigma_{t|s}^2 sigma_s^2 /
sigma_t^2`` the variance of the forward posterior ``q(x_s | x_t, x_0)`` (below): eta = 1
is that posterior, eta = 0 is deterministic. For a variance-preserving process
(``alpha^2 = abar``) this is the paper's ``sigma_t(eta) = eta sqrt((1 - abar_s)/(1 - abar_t))
sqrt(1 - abar_t / abar_s)``. (Note the factor is sigma_s, not sigma_s / sigma_t: c is a
standard deviation of x, so it must scale like sigma.)

With eta = 0 the step is ``x_s / alpha_s = x_t / alpha_t + (sigma_s/alpha_s - sigma_t/alpha_t)
eps_hat``: one Euler step of the probability-flow ODE written as ``d(x / alpha) =
eps d(sigma / alpha)`` (Song et al. 2021, section 4.3), exact whenever eps is constant along
the path. For the variance-exploding process (alpha = 1) it is Euler in sigma:
``x_s = x_t + (sigma_s - sigma_t) eps_hat``, which is also k-diffusion's ``sample_euler``.
First order; it agrees with the Euler step of the probability-flow ODE in t up to O(h^2).

**DDPM** (Ho, Jain & Abbeel 2020, eq. 6-7; general-process form of Kingma et al. 2021,
appendix A). The ancestral step samples the forward posterior with x_0 replaced by x0_hat:

    q(x_s | x_t, x_0) = N(mu~, sigma~^2 I),
    mu~      = alpha_{t|s} sigma_s^2 / sigma_t^2 * x_t  +  alpha_s sigma_{t|s}^2 / sigma_t^2 * x_0,
    sigma~^2 = sigma_{t|s}^2 sigma_s^2 / sigma_t^2          ("small", Ho et al.'s sigma^2 = beta~),

which is exactly DDIM with eta = 1. ``variance="large"`` uses ``sigma_{t|s}^2`` instead (Ho et
al.'s sigma^2 = beta, the upper bound; diffusers' ``fixed_large``), with the same mean.

Both solvers precompute, per grid interval i (from t = grid[i] to s = grid[i+1]), float64
coefficients ``x_s = a_i x_t + b_i eps_hat + c_i z`` once on the host, with
``q = 1 - exp(lambda_t - lambda_s)`` from the process (``sde._one_minus_snr_ratio``); one eps
evaluation per step, through :func:`~sdesolve.model.view_at` with the precomputed ``alpha(t)``,
``sigma(t)`` (:func:`~sdesolve.model.view_coefficients`), so an x0-, v- or score-network costs no
evaluation of the process on the device. ``noise=False`` (the last step when ``denoise=True``)
drops ``c_i z`` and returns the mean. Grids may end at t = 0 on processes where sigma(0) = 0
(``lambda_s = +inf``: ``q = 1``, ``c = 0``, ``b = -alpha_s sigma_t / alpha_t``), and the last
step returns ``alpha_s x0_hat`` exactly, as diffusers' ``set_alpha_to_one`` does, without
evaluating the model at sigma = 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._validate import check_choice, check_real
from ..model import ScoreModel, view_at, view_coefficients
from .base import GeneratorLike, Solver, randn_like

if TYPE_CHECKING:
    from ..sde.base import LinearSDE

__all__ = ["DDIM", "DDPM"]


def ddim_coefficients(sde: LinearSDE, grid: Tensor, eta: float) -> dict[str, Tensor]:
    """Per-step float64 coefficients of ``x_s = a x_t + b eps_hat + c z``.

    ``q = 1 - exp(lambda_t - lambda_s)`` in (0, 1] (the process' ``_one_minus_snr_ratio``);
    ``c = eta sigma_s sqrt(q)``; ``a = alpha_s / alpha_t``;
    ``b = sigma_s sqrt(1 - eta^2 q) - alpha_s sigma_t / alpha_t``, with
    ``1 - eta^2 q = (1 - eta^2) + eta^2 exp(lambda_t - lambda_s)`` (no cancellation).
    """
    t, s = grid[:-1], grid[1:]
    log_a_t, log_a_s = sde._log_alpha(t), sde._log_alpha(s)
    sigma_t, sigma_s = torch.exp(sde._log_sigma(t)), torch.exp(sde._log_sigma(s))
    q = sde._one_minus_snr_ratio(t, s)
    keep = (1.0 - eta * eta) + eta * eta * torch.exp(sde._log_snr(t) - sde._log_snr(s))  # exp(-inf) = 0
    a = torch.exp(log_a_s - log_a_t)
    return {"a": a, "b": sigma_s * torch.sqrt(keep) - a * sigma_t, "c": eta * sigma_s * torch.sqrt(q)}


class _EpsStep(Solver):
    """Shared step ``x_s = a x + b eps(x, t) + c z`` of DDIM and DDPM."""

    nfe_per_step = 1

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        c = super().init(sde, grid)
        c.update(view_coefficients(sde, grid[:-1]))
        return c

    def step(self, model: ScoreModel, state: dict, i: int, coefs: dict, *, generator: GeneratorLike = None,
             noise: bool = True, need_x0: bool = False) -> dict:  # fmt: skip
        x = state["x"]
        eps = view_at(model, x, coefs["t"][i], "eps", (coefs["alpha"][i], coefs["sigma"][i]))
        x_next = torch.addcmul(coefs["a"][i] * x, coefs["b"][i], eps)  # a x + b eps (one kernel fewer)
        if noise and self.stochastic:
            x_next = torch.addcmul(x_next, coefs["c"][i], randn_like(x, generator))
        out = {"x": x_next}
        if need_x0:
            out["x0"] = torch.addcmul(coefs["x0_x"][i] * x, coefs["x0_eps"][i], eps)
        return out


class DDIM(_EpsStep):
    r"""Denoising diffusion implicit models (Song, Meng & Ermon 2021) on any linear forward process.

    ``x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z`` with
    ``c = eta sigma_s sqrt(1 - exp(lambda_t - lambda_s))`` (derivation in the module docstring).

    Args:
        eta: noise level in [0, 1]. ``0`` (default): the deterministic DDIM map, the
            probability-flow ODE's Euler step in (x / alpha, sigma / alpha) — first order.
            ``1``: the forward posterior's variance (the DDPM ancestral sampler).

    One eps evaluation per step. With eta > 0, ``noise=False`` (the last step under
    ``denoise=True``) skips the noise. Default grid: ``"log_snr"`` — the most accurate of
    uniform / quadratic / log-SNR / Karras at 10–50 steps on the benchmark problems, tied with
    quadratic (``notes/bench_samplers.md``).
    """

    order = 1.0
    default_grid = "log_snr"

    def __init__(self, eta: float = 0.0):
        self.eta = check_real(eta, "eta", lo=0.0, hi=1.0)

    # Solver declares these as plain class attributes; DDIM derives them from eta (read-only here)
    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0.0

    @property
    def strong_order(self) -> float | None:  # type: ignore[override]
        return None if self.eta > 0.0 else 1.0

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        c = super().init(sde, grid)
        c.update(ddim_coefficients(sde, grid, self.eta))
        return c


class DDPM(_EpsStep):
    r"""The DDPM ancestral sampler (Ho, Jain & Abbeel 2020) on any linear forward process.

    Samples ``q(x_s | x_t, x_0 = x0_hat) = N(mu~, sigma~^2 I)`` with
    ``mu~ = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0_hat``
    (module docstring). Equal to ``DDIM(eta=1)`` for ``variance="small"``.

    Args:
        variance: ``"small"`` (default): the posterior variance
            ``sigma~^2 = sigma_{t|s}^2 sigma_s^2 / sigma_t^2`` (Ho et al.'s beta~, diffusers'
            ``fixed_small``); ``"large"``: ``sigma_{t|s}^2`` (Ho et al.'s beta, diffusers'
            ``fixed_large``).

    One eps evaluation per step; weak order 1. ``noise=False`` returns the posterior mean.
    Default grid: ``"quadratic"`` (measured best for the ancestral sampler at 10–50 steps,
    ``notes/bench_samplers.md``).
    """

    order = 1.0
    stochastic = True
    default_grid = "quadratic"

    def __init__(self, variance: str = "small"):
        self.variance = str(check_choice(variance, "variance", ("small", "large")))

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        c = super().init(sde, grid)
        c.update(ddim_coefficients(sde, grid, 1.0))
        if self.variance == "large":  # sigma_{t|s}, the transition's standard deviation
            c["c"] = torch.sqrt(sde._transition(grid[:-1], grid[1:])[1])
        return c
