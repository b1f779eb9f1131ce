"""Euler–Maruyama on the reverse-time SDE."""

from __future__ import annotations

import torch

from ..model import predicts_eps, view_at
from .base import Solver, randn_like

__all__ = ["EulerMaruyama"]


class EulerMaruyama(Solver):
    """Euler–Maruyama on ``dx = [f x - g^2 s(x, t)] dt + g dW_bar`` from T down to t_min.

    With ``h = t_{i+1} - t_i < 0``:
    ``x_mean = x + (f x - g^2 s) h`` and ``x_{i+1} = x_mean + g sqrt(-h) z``, z ~ N(0, I);
    coefficients are taken at the left end t_i (Song et al. 2021, ``EulerMaruyamaPredictor``).
    Weak order 1, strong order 1/2 (additive noise: strong order 1). One score evaluation per step.

    ``alpha(t_i)``, ``sigma(t_i)`` are precomputed per grid and handed to the model
    (``coefs=``), so converting the network's prediction to a score costs no device-side
    evaluation of the process. An eps-predicting :class:`~sdesolve.ScoreModel` skips the
    conversion: with ``s = -eps / sigma`` the step is ``x_mean = (1 + f h) x + (g^2 h / sigma) eps``
    and ``x0 = x / alpha - (sigma / alpha) eps``, the coefficients precomputed in float64
    (equal to the score form up to rounding).
    """

    order = 1.0
    strong_order = 0.5
    nfe_per_step = 1
    stochastic = True
    default_grid = "uniform"

    def init(self, sde, grid):
        c = super().init(sde, grid)
        t, h = c["t"], grid[1:] - grid[:-1]
        f, g2 = sde._f(t), sde._g2(t)
        c["one_fh"] = 1.0 + f * h
        c["g2h"] = g2 * h
        c["g_sqrt_h"] = torch.sqrt(torch.clamp(g2, min=0.0) * (-h))
        alpha, sigma = torch.exp(sde._log_alpha(t)), torch.exp(sde._log_sigma(t))
        c["alpha"], c["sigma"] = alpha, sigma
        c["x0_a"], c["x0_b"] = 1.0 / alpha, sigma * sigma / alpha
        # the same step in terms of eps = -sigma s (an eps network's own output)
        c["g2h_sigma"], c["x0_e"] = g2 * h / sigma, -sigma / alpha
        return c

    def step(self, model, state, i, coeffs, *, generator=None, noise=True, need_x0=False):
        x = state["x"]
        if predicts_eps(model):
            e = model.eps(x, coeffs["t"][i])
            x_mean = coeffs["one_fh"][i] * x + coeffs["g2h_sigma"][i] * e
        else:
            s = view_at(model, x, coeffs["t"][i], "score", (coeffs["alpha"][i], coeffs["sigma"][i]))
            x_mean = coeffs["one_fh"][i] * x - coeffs["g2h"][i] * s
        out = {"x": x_mean + coeffs["g_sqrt_h"][i] * randn_like(x, generator) if noise else x_mean}
        if need_x0:
            if predicts_eps(model):
                out["x0"] = coeffs["x0_a"][i] * x + coeffs["x0_e"][i] * e
            else:
                out["x0"] = coeffs["x0_a"][i] * x + coeffs["x0_b"][i] * s
        return out
