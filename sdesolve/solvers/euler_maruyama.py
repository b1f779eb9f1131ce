"""Euler–Maruyama on the reverse-time SDE."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..model import ScoreModel, predicts_eps, view_at, view_coefficients
from .base import GeneratorLike, Solver, randn_like

if TYPE_CHECKING:
    from ..sde.base import LinearSDE

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

    float16 / bfloat16 states: the step's arithmetic runs in float32 from float64 copies of the
    coefficients (``g^2 h`` reaches ``sigma_max^2 2 log(sigma_max / sigma_min) / N``: 4.3e5 for VE with
    sigma_max = 1348 at N = 100, past float16's 65504), cast back to the state's dtype.
    """

    order = 1.0
    strong_order = 0.5
    nfe_per_step = 1
    stochastic = True
    default_grid = "uniform"

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        c = super().init(sde, grid)
        t, h = c["t"], grid[1:] - grid[:-1]
        f, g2 = sde._f(t), sde._g2(t)
        c["one_fh"] = 1.0 + f * h
        c["g2h"] = g2 * h
        c["g_sqrt_h"] = torch.sqrt(torch.clamp(g2, min=0.0) * (-h))
        c.update(view_coefficients(sde, t))
        c["g2h_sigma"] = g2 * h / c["sigma"]  # the same step in terms of eps = -sigma s (an eps network's own output)
        for k in _LOW_KEYS:  # float64 copies ("t..." keys stay float64 on the device) for low-precision states
            c["tlow_" + k] = c[k].clone()
        return c

    def step(
        self,
        model: ScoreModel | object,
        state: dict,
        i: int,
        coefs: dict,
        *,
        generator: GeneratorLike = None,
        noise: bool = True,
        need_x0: bool = False,
    ) -> dict:
        x = state["x"]
        eps = predicts_eps(model)
        at_t = (coefs["alpha"][i], coefs["sigma"][i])
        out_net = view_at(model, x, coefs["t"][i], "eps" if eps else "score", at_t)
        low = x.dtype in (torch.float16, torch.bfloat16)
        keys = _STEP_KEYS[eps, noise, need_x0]  # only the coefficients this step uses (a select each)
        if low:
            c = {k: coefs["tlow_" + k][i].float() for k in keys}
            xs, net = x.float(), out_net.float()
        else:
            c = {k: coefs[k][i] for k in keys}
            xs, net = x, out_net
        # one multiply and one fused multiply-add per term (addcmul): kernels are what an eager step costs
        if eps:  # x + (f x - g^2 (-e / sigma)) h
            x_mean = torch.addcmul(c["one_fh"] * xs, c["g2h_sigma"], net)
        else:
            x_mean = torch.addcmul(c["one_fh"] * xs, c["g2h"], net, value=-1.0)
        if noise:
            x_mean = torch.addcmul(x_mean, c["g_sqrt_h"], randn_like(x, generator).to(xs.dtype))
        out = {"x": x_mean.to(x.dtype)}
        if need_x0:
            out["x0"] = (c["x0_x"] * xs + c["x0_eps" if eps else "x0_score"] * net).to(x.dtype)
        return out


_LOW_KEYS = ("one_fh", "g2h", "g_sqrt_h", "g2h_sigma", "x0_x", "x0_eps", "x0_score")
_STEP_KEYS = {
    (eps, noise, need_x0): ("one_fh", "g2h_sigma" if eps else "g2h")
    + (("g_sqrt_h",) if noise else ())
    + (("x0_x", "x0_eps" if eps else "x0_score") if need_x0 else ())
    for eps in (False, True)
    for noise in (False, True)
    for need_x0 in (False, True)
}
