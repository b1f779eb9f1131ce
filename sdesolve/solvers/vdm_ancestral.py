"""VDM's ancestral sampler: exact Gaussian posterior steps q(z_s | z_t, x = x_hat)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..model import ScoreModel, view_at, view_coefficients
from .base import GeneratorLike, Solver, randn_like
from .ddim import ddim_coefficients

if TYPE_CHECKING:
    from ..sde.base import LinearSDE

__all__ = ["VDMAncestral", "ancestral_mean", "ancestral_mean_from_x0"]


class VDMAncestral(Solver):
    r"""The ancestral sampler of VDM (Kingma et al. 2021, eq. 32-34), i.e. DDPM's posterior step.

    For any linear forward process, ``z_t | x ~ N(alpha_t x, sigma_t^2 I)`` and the process is
    Markov with Gaussian transitions, so for ``s < t`` the posterior ``q(z_s | z_t, x)`` is
    Gaussian. Writing the log-SNR ``lambda = log(alpha^2 / sigma^2)`` (``gamma = -lambda`` in VDM)
    and

    .. math::

        c = 1 - \mathrm{SNR}_t / \mathrm{SNR}_s = -\mathrm{expm1}(\lambda_t - \lambda_s)
          = -\mathrm{expm1}(\gamma_s - \gamma_t) \in (0, 1],

    the transition variance is ``sigma_{t|s}^2 = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2 = sigma_t^2 c``
    and the posterior, with ``x`` replaced by the model's estimate
    ``x_hat = (z_t - sigma_t eps_hat) / alpha_t``, is

    .. math::

        z_s = \frac{\alpha_s}{\alpha_t}\,(z_t - c\,\sigma_t\,\hat\epsilon) + \sigma_s \sqrt{c}\; \xi
            = \frac{\alpha_s}{\alpha_t}(1 - c)\, z_t + \alpha_s c\, \hat x + \sigma_s \sqrt{c}\; \xi,
        \qquad \xi \sim N(0, I).

    For a variance-preserving process ``sigma_s^2 = 1 - alpha_s^2``, which is VDM's
    ``sqrt((1 - alpha_s^2) c)``. The derivation above never uses ``alpha^2 + sigma^2 = 1``, so the
    sampler is written through ``alpha`` and ``sigma`` and applies to every linear process
    (VP, cosine, discrete DDPM, VDM, and also sub-VP and VE, where it is the ancestral sampler of
    Song et al. / k-diffusion with ``sigma_up = sigma_s sqrt(c)``).

    The eps form of the step is DDPM's posterior step, ``DDIM(eta=1)``: its coefficients come from
    :func:`~sdesolve.solvers.ddim.ddim_coefficients`. All are computed once per grid in float64
    (``c`` by ``expm1`` of the log-SNR difference), so a final time with ``sigma_s = 0``
    (VP at t = 0: ``lambda_s = +inf``, ``c = 1``, no noise, ``z_s = x_hat``) and VDM's ``t = 0``
    (``gamma(0) = gamma_min`` finite) both work. ``noise=False`` returns the posterior mean.

    One ``eps`` evaluation per step. Weak order 1 (the step is exact for the posterior given
    ``x``; the error comes from ignoring the spread of ``x | z_t``).

    Reference: Kingma, Salimans, Poole & Ho (2021), *Variational Diffusion Models*, App. A.4;
    Ho, Jain & Abbeel (2020), *DDPM*, eq. 6-7.
    """

    order = 1.0
    strong_order = 0.5
    nfe_per_step = 1
    stochastic = True
    default_grid = "uniform"

    def check(self, sde: LinearSDE) -> None:
        for hook in ("_log_alpha", "_log_sigma", "_log_snr", "_one_minus_snr_ratio"):
            if not callable(getattr(sde, hook, None)):
                raise TypeError(
                    f"VDMAncestral needs a linear forward process (a sdesolve LinearSDE) with {hook}(t); "
                    f"got {type(sde).__name__}"
                )

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        """Per-step coefficients for the grid ``t_0 > t_1 > ... > t_n`` (float64, host).

        Keys: ``alpha``, ``sigma`` (at the step's start, handed to the model) and ``x0_x``,
        ``x0_eps`` (``x_hat = x0_x z_t + x0_eps eps_hat``; :func:`~sdesolve.model.view_coefficients`),
        ``mean_x = alpha_s/alpha_t``, ``mean_eps = -alpha_s/alpha_t c sigma_t`` (the eps form of the
        posterior mean), ``mean_x_x0form = alpha_s/alpha_t (1 - c)`` and ``mean_x0 = alpha_s c`` (its
        x0 form), ``std = sigma_s sqrt(c)``; ``alpha_t``, ``sigma_t``: the same as ``alpha``, ``sigma``
        (the names :class:`sdesolve.diffusers.VDMScheduler` reads).
        """
        c = super().init(sde, grid)
        t, s = grid[:-1], grid[1:]
        c.update(view_coefficients(sde, t))
        # The eps form is DDPM's posterior step, i.e. DDIM with eta = 1: one formula for both.
        post = ddim_coefficients(sde, grid, 1.0)
        cc = sde._one_minus_snr_ratio(t, s)  # 1 - SNR_t / SNR_s; equals 1 where sigma_s = 0
        c["alpha_t"], c["sigma_t"] = c["alpha"], c["sigma"]
        c["mean_x"], c["mean_eps"], c["std"] = post["a"], post["b"], post["c"]
        # alpha_s/alpha_t (1 - c) = alpha_s/alpha_t SNR_t/SNR_s: no cancellation as c -> 1
        c["mean_x_x0form"] = post["a"] * torch.exp(sde._log_snr(t) - sde._log_snr(s))
        c["mean_x0"] = torch.exp(sde._log_alpha(s)) * cc
        return c

    def step(self, model: ScoreModel, state: dict, i: int, coefs: dict, *, generator: GeneratorLike = None,
             noise: bool = True, need_x0: bool = False) -> dict:  # fmt: skip
        x = state["x"]
        eps = view_at(model, x, coefs["t"][i], "eps", (coefs["alpha"][i], coefs["sigma"][i]))
        x_next = ancestral_mean(x, eps, i, coefs)
        if noise:  # one fused multiply-add (addcmul), as DDPM: kernels are what an eager step costs
            x_next = torch.addcmul(x_next, coefs["std"][i], randn_like(x, generator))
        out = {"x": x_next}
        if need_x0:
            out["x0"] = coefs["x0_x"][i] * x + coefs["x0_eps"][i] * eps
        return out


def ancestral_mean(x: Tensor, eps: Tensor, i: int, coefs: dict[str, Tensor]) -> Tensor:
    """The posterior mean ``alpha_s/alpha_t (z_t - c sigma_t eps_hat)`` of step i (eps form)."""
    return torch.addcmul(coefs["mean_x"][i] * x, coefs["mean_eps"][i], eps)


def ancestral_mean_from_x0(x: Tensor, x0: Tensor, i: int, coefs: dict[str, Tensor]) -> Tensor:
    """The posterior mean ``alpha_s/alpha_t (1 - c) z_t + alpha_s c x_hat`` of step i (x0 form).

    Equal to :func:`ancestral_mean` when ``x0 = (x - sigma_t eps) / alpha_t``; used when x_hat
    is modified (clipped or thresholded) before the step, as DDPM does.
    """
    return coefs["mean_x_x0form"][i] * x + coefs["mean_x0"][i] * x0
