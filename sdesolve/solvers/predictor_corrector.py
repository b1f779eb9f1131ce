"""Predictor–corrector samplers (Song et al. 2021, Algorithms 1–3).

Each grid step ``t_i -> t_{i+1}`` (``t_{i+1} < t_i``) runs the **corrector first, then the
predictor**, both at ``t_i``, as ``score_sde``'s ``pc_sampler`` does::

    for i in range(N):
        x = corrector(x, t_i)          # n_steps Langevin steps at the noise level of t_i
        x = predictor(x, t_i -> t_{i+1})

With ``denoise=True`` the last predictor step returns its mean (no noise), as Song et al. do.

Notation: ``alpha_i = alpha(t_i)``, ``sigma_i = sigma(t_i)``, ``a_i = alpha_i / alpha_{i+1}``
(the forward process' mean coefficient over the interval, < 1 for VP processes, 1 for VE),
``lambda = log(alpha^2 / sigma^2)`` and ``s = s_theta(x, t_i)``. Everything is derived from the
exact transition ``x_{t_i} | x_{t_{i+1}} ~ N(a_i x_{t_{i+1}}, G_i^2 I)`` of the forward process,
``G_i^2 = sigma_i^2 - a_i^2 sigma_{i+1}^2 = sigma_i^2 (1 - exp(lambda_i - lambda_{i+1}))``,
which for the discrete DDPM chain gives ``a_i = sqrt(1 - beta_i)``, ``G_i^2 = beta_i`` and for VE
``a_i = 1``, ``G_i^2 = sigma_i^2 - sigma_{i+1}^2`` — the discretizations of ``score_sde``.
(``score_sde`` uses ``beta_i = beta(t_i) / N`` for the continuous VP process; the exact transition
is the same to first order and works on any grid and any linear process.)

Predictors (``probability_flow=True`` replaces the reverse SDE by the probability-flow ODE:
half the score term, no noise):

* :class:`EulerMaruyamaPredictor`: ``x' = x + (f x - w g^2 s) h + g sqrt(-h) z`` (``h < 0``, w = 1 or 1/2).
* :class:`ReverseDiffusionPredictor`: ``x' = (2 - a_i) x + w G_i^2 s + G_i z`` (Song et al. eq. 47).
* :class:`AncestralPredictor` (Song et al. eq. 46/47, DDPM/SMLD ancestral sampling):
  variance-preserving processes: ``x' = (x + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z`` with
  ``beta_i = 1 - a_i^2``; variance-exploding (``alpha = 1``):
  ``x' = x + (sigma_i^2 - sigma_{i+1}^2) s + sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2) z``.

Correctors (``n_steps`` Langevin steps ``x <- x + eps s + sqrt(2 eps) z``, one score each):

* :class:`LangevinCorrector` (Algorithms 2–3): ``eps = 2 a_i^2 (snr ||z|| / ||s||)^2``, the norms
  taken **per sample** over the event dimensions (the paper's rule; ``score_sde`` averages the two
  norms over the batch, which couples the samples of a batch). ``a_i^2`` is ``score_sde``'s
  ``alphas[i] = 1 - beta_i`` for VP/sub-VP and 1 for VE.
* :class:`AnnealedLangevinCorrector` (Song & Ermon 2019): ``eps = 2 a_i^2 (snr sigma_i)^2``.

References: Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-Based Generative Modeling
through Stochastic Differential Equations", ICLR 2021, Algorithms 1–3 and appendices E, G.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._utils import bcast
from ..model import view_at
from .base import Solver, randn_like

__all__ = [
    "PredictorCorrector",
    "Predictor",
    "Corrector",
    "EulerMaruyamaPredictor",
    "ReverseDiffusionPredictor",
    "AncestralPredictor",
    "LangevinCorrector",
    "AnnealedLangevinCorrector",
]


def _interval(sde, grid: Tensor):
    """Float64 host coefficients of each interval: t_i, h_i, log alpha, log sigma, lambda at both ends."""
    t, t_next = grid[:-1], grid[1:]
    la, la_n = sde._log_alpha(t), sde._log_alpha(t_next)
    ls, ls_n = sde._log_sigma(t), sde._log_sigma(t_next)
    return t, t_next - t, la, la_n, ls, ls_n


def _ratio_and_G2(sde, grid: Tensor):
    """``a_i = alpha_i / alpha_{i+1}`` and ``G_i^2 = sigma_i^2 (1 - exp(lambda_i - lambda_{i+1}))``."""
    _, _, la, la_n, ls, ls_n = _interval(sde, grid)
    a = torch.exp(la - la_n)
    dlam = 2.0 * (la - ls) - 2.0 * (la_n - ls_n)  # lambda_i - lambda_{i+1} <= 0
    G2 = torch.exp(2.0 * ls) * (-torch.expm1(torch.clamp(dlam, max=0.0)))
    return a, G2


def _score(model, x: Tensor, i: int, c: dict) -> Tensor:
    """The score at ``(x, t_i)``, with the sampler's precomputed ``alpha(t_i)``, ``sigma(t_i)``.

    A coefficient dict without them (a predictor or corrector driven by hand with only ``"t"``
    and its own keys) falls back to the model computing them.
    """
    if "alpha" in c:
        return view_at(model, x, c["t"][i], "score", (c["alpha"][i], c["sigma"][i]))
    return model.score(x, c["t"][i])


# --------------------------------------------------------------------------- predictors
class Predictor:
    """One step of a discretized reverse SDE (or probability-flow ODE) from ``t_i`` to ``t_{i+1}``.

    ``init(sde, grid)`` returns float64 host coefficients (keys are prefixed ``p_`` by the
    sampler); ``__call__(model, x, i, c, generator, noise)`` returns ``(x_next, score)`` where
    ``score`` is the one evaluation at ``(x, t_i)`` (reused for the x0 prediction).
    """

    probability_flow: bool = False

    def __init__(self, probability_flow: bool = False):
        if not isinstance(probability_flow, bool):
            raise TypeError(f"probability_flow must be a bool, got {type(probability_flow).__name__}")
        self.probability_flow = probability_flow

    def check(self, sde) -> None:
        """Raise ValueError if the predictor does not apply to ``sde``."""

    def init(self, sde, grid: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def __call__(self, model, x: Tensor, i: int, c: dict, *, generator=None, noise: bool = True):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(probability_flow={self.probability_flow})"


class EulerMaruyamaPredictor(Predictor):
    """``x' = x + (f x - w g^2 s) h + g sqrt(-h) z`` with ``h = t_{i+1} - t_i < 0``.

    ``w = 1`` (reverse SDE) or ``1/2`` with no noise (``probability_flow=True``).
    Song et al. 2021, ``EulerMaruyamaPredictor``.
    """

    def init(self, sde, grid):
        t, h, *_ = _interval(sde, grid)
        f, g2 = sde._f(t), torch.clamp(sde._g2(t), min=0.0)
        w = 0.5 if self.probability_flow else 1.0
        return {"one_fh": 1.0 + f * h, "wg2h": w * g2 * h, "noise": torch.sqrt(g2 * (-h))}

    def __call__(self, model, x, i, c, *, generator=None, noise=True):
        s = _score(model, x, i, c)
        x_mean = c["p_one_fh"][i] * x - c["p_wg2h"][i] * s
        if noise and not self.probability_flow:
            return x_mean + c["p_noise"][i] * randn_like(x, generator), s
        return x_mean, s


class ReverseDiffusionPredictor(Predictor):
    """Reverse diffusion (Song et al. 2021, eq. 47): ``x' = (2 - a_i) x + w G_i^2 s + G_i z``.

    The forward step ``x_{t_i} = a_i x_{t_{i+1}} + G_i z`` reversed with the same discretization;
    ``w = 1``, or ``1/2`` without noise for ``probability_flow=True``.
    """

    def init(self, sde, grid):
        a, G2 = _ratio_and_G2(sde, grid)
        w = 0.5 if self.probability_flow else 1.0
        return {"two_a": 2.0 - a, "wG2": w * G2, "noise": torch.sqrt(G2)}

    def __call__(self, model, x, i, c, *, generator=None, noise=True):
        s = _score(model, x, i, c)
        x_mean = c["p_two_a"][i] * x + c["p_wG2"][i] * s
        if noise and not self.probability_flow:
            return x_mean + c["p_noise"][i] * randn_like(x, generator), s
        return x_mean, s


def _process_kind(sde) -> str | None:
    """``"vp"`` (alpha^2 + sigma^2 = 1), ``"ve"`` (alpha = 1) or None, checked numerically in float64."""
    t = torch.linspace(float(sde.t_min), float(sde.T), 65, dtype=torch.float64)
    la, ls = sde._log_alpha(t), sde._log_sigma(t)
    if bool((la.abs() < 1e-12).all()):
        return "ve"
    if getattr(sde, "variance_preserving", False) and bool(
        ((torch.exp(2 * la) + torch.exp(2 * ls) - 1.0).abs() < 1e-9).all()
    ):
        return "vp"
    return None


class AncestralPredictor(Predictor):
    """Ancestral sampling (Song et al. 2021, appendix F; Ho et al. 2020; Song & Ermon 2019).

    * variance-preserving (alpha^2 + sigma^2 = 1: VP, cosine, VDM, discrete DDPM):
      ``x' = (x + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z``, ``beta_i = 1 - (alpha_i/alpha_{i+1})^2``
      (DDPM's ``beta_t`` on the discrete grid);
    * variance-exploding (alpha = 1): ``x' = x + (sigma_i^2 - sigma_{i+1}^2) s + std_i z`` with
      ``std_i^2 = sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2``.

    Other processes (sub-VP, user processes with neither property) raise a ValueError, as
    ``score_sde`` does. There is no probability-flow form.
    """

    def __init__(self):
        super().__init__(probability_flow=False)

    def check(self, sde):
        if _process_kind(sde) is None:
            raise ValueError(
                f"AncestralPredictor applies to variance-preserving processes (alpha^2 + sigma^2 = 1) and "
                f"variance-exploding ones (alpha = 1); {type(sde).__name__} is neither. Use "
                f"ReverseDiffusionPredictor or EulerMaruyamaPredictor instead."
            )

    def init(self, sde, grid):
        self.check(sde)
        _, _, la, la_n, ls, ls_n = _interval(sde, grid)
        if _process_kind(sde) == "vp":
            a = torch.exp(la - la_n)  # sqrt(1 - beta_i)
            beta = -torch.expm1(2.0 * (la - la_n))
            return {"mul": 1.0 / a, "score": beta / a, "noise": torch.sqrt(beta)}
        var, var_n = torch.exp(2.0 * ls), torch.exp(2.0 * ls_n)
        dv = var - var_n
        return {"mul": torch.ones_like(var), "score": dv, "noise": torch.sqrt(var_n * dv / var)}

    def __call__(self, model, x, i, c, *, generator=None, noise=True):
        s = _score(model, x, i, c)
        x_mean = c["p_mul"][i] * x + c["p_score"][i] * s
        if noise:
            return x_mean + c["p_noise"][i] * randn_like(x, generator), s
        return x_mean, s

    def __repr__(self) -> str:
        return "AncestralPredictor()"


# --------------------------------------------------------------------------- correctors
class Corrector:
    """``n_steps`` Langevin MCMC steps at the noise level of ``t_i`` (keys prefixed ``c_``)."""

    def __init__(self, snr: float, n_steps: int):
        if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not (math.isfinite(snr) and snr > 0):
            raise ValueError(f"snr must be a positive finite number, got {snr!r}")
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
        self.snr, self.n_steps = float(snr), n_steps

    def init(self, sde, grid: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def __call__(self, model, x: Tensor, i: int, c: dict, *, generator=None) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(snr={self.snr:g}, n_steps={self.n_steps})"


def _alpha_sq_ratio(sde, grid):
    """``score_sde``'s ``alphas[i] = 1 - beta_i``: ``(alpha_i / alpha_{i+1})^2`` (1 for VE)."""
    _, _, la, la_n, _, _ = _interval(sde, grid)
    return torch.exp(2.0 * (la - la_n))


class LangevinCorrector(Corrector):
    """Langevin corrector (Song et al. 2021, Algorithms 2–3) with the signal-to-noise step rule.

    Each of ``n_steps`` steps draws ``z ~ N(0, I)``, evaluates ``s = s_theta(x, t_i)`` and sets,
    per sample, ``eps = 2 a_i^2 (snr ||z|| / ||s||)^2`` (norms over the event dims), then
    ``x <- x + eps s + sqrt(2 eps) z``. No host synchronization: the norms stay on the device.
    """

    def __init__(self, snr: float = 0.16, n_steps: int = 1):
        super().__init__(snr, n_steps)

    def init(self, sde, grid):
        return {"two_alpha_snr2": 2.0 * _alpha_sq_ratio(sde, grid) * self.snr**2}

    def __call__(self, model, x, i, c, *, generator=None):
        k = c["c_two_alpha_snr2"][i]
        tiny = torch.finfo(x.dtype).tiny
        for _ in range(self.n_steps):
            s = _score(model, x, i, c)
            z = randn_like(x, generator)
            z_norm = torch.linalg.vector_norm(z.reshape(z.shape[0], -1), dim=1)
            s_norm = torch.linalg.vector_norm(s.reshape(s.shape[0], -1), dim=1).clamp_min(tiny)
            eps = bcast(k * (z_norm / s_norm) ** 2, x)
            x = x + eps * s + torch.sqrt(2.0 * eps) * z
        return x


class AnnealedLangevinCorrector(Corrector):
    """Annealed Langevin dynamics (Song & Ermon 2019; ``score_sde``'s ``AnnealedLangevinDynamics``).

    ``eps_i = 2 a_i^2 (snr sigma_i)^2`` (a deterministic step, precomputed per grid), then
    ``n_steps`` times ``x <- x + eps_i s + sqrt(2 eps_i) z``.
    """

    def init(self, sde, grid):
        t = grid[:-1]
        eps = 2.0 * _alpha_sq_ratio(sde, grid) * (self.snr**2) * torch.exp(2.0 * sde._log_sigma(t))
        return {"eps": eps, "sqrt_2eps": torch.sqrt(2.0 * eps)}

    def __call__(self, model, x, i, c, *, generator=None):
        eps, noise = c["c_eps"][i], c["c_sqrt_2eps"][i]
        for _ in range(self.n_steps):
            s = _score(model, x, i, c)
            x = x + eps * s + noise * randn_like(x, generator)
        return x


# --------------------------------------------------------------------------- the sampler
class PredictorCorrector(Solver):
    """Predictor–corrector sampling (Song et al. 2021, Algorithm 1): corrector, then predictor.

    Args:
        predictor: a :class:`Predictor`: ``ReverseDiffusionPredictor()`` (the default, as in
            ``score_sde``), ``EulerMaruyamaPredictor()`` or ``AncestralPredictor()``, with
            ``probability_flow=True`` where it exists.
        corrector: ``LangevinCorrector(snr=0.16, n_steps=1)`` (the default),
            ``AnnealedLangevinCorrector(snr, n_steps)``, or None (predictor only).

    ``nfe_per_step = 1 + corrector.n_steps`` (one score for the predictor, one per Langevin step).
    Weak order 1 (the predictor's); the grid defaults to uniform in t, as Song et al.
    """

    order = 1.0
    strong_order = 0.5
    default_grid = "uniform"

    def __init__(self, predictor: Predictor | None = None, corrector: Corrector | None | str = "default"):
        if predictor is None:
            predictor = ReverseDiffusionPredictor()
        if isinstance(corrector, str) and corrector == "default":
            corrector = LangevinCorrector()
        if not isinstance(predictor, Predictor):
            raise TypeError(
                f"predictor must be a Predictor (e.g. ReverseDiffusionPredictor()), got {type(predictor).__name__}"
            )
        if corrector is not None and not isinstance(corrector, Corrector):
            raise TypeError(
                f"corrector must be a Corrector (e.g. LangevinCorrector()) or None, got {type(corrector).__name__}"
            )
        self.predictor = predictor
        self.corrector = corrector
        self.nfe_per_step = 1 + (corrector.n_steps if corrector is not None else 0)
        self.stochastic = not predictor.probability_flow or corrector is not None

    def check(self, sde):
        self.predictor.check(sde)

    def init(self, sde, grid):
        c = super().init(sde, grid)
        c.update({"p_" + k: v for k, v in self.predictor.init(sde, grid).items()})
        if self.corrector is not None:
            c.update({"c_" + k: v for k, v in self.corrector.init(sde, grid).items()})
        la, ls = sde._log_alpha(c["t"]), sde._log_sigma(c["t"])
        c["alpha"], c["sigma"] = torch.exp(la), torch.exp(ls)  # handed to the model (coefs=)
        c["x0_a"], c["x0_b"] = torch.exp(-la), torch.exp(2.0 * ls - la)
        return c

    def step(self, model, state, i, coeffs, *, generator=None, noise=True, need_x0=False):
        x = state["x"]
        if self.corrector is not None:
            x = self.corrector(model, x, i, coeffs, generator=generator)
        x_next, s = self.predictor(model, x, i, coeffs, generator=generator, noise=noise)
        out = {"x": x_next}
        if need_x0:
            out["x0"] = coeffs["x0_a"][i] * x + coeffs["x0_b"][i] * s
        return out

    def __repr__(self) -> str:
        return f"PredictorCorrector(predictor={self.predictor!r}, corrector={self.corrector!r})"
