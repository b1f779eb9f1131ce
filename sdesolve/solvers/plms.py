r"""PLMS: pseudo linear multistep in eps-space (Liu, Ren, Lin & Zhao 2022, "PNDM").

The *transfer* map of PNDM is the deterministic DDIM step from t to s with a given noise
estimate e (see :mod:`sdesolve.solvers.ddim`):

    phi(x, e, t -> s) = (alpha_s / alpha_t) x + (sigma_s - alpha_s sigma_t / alpha_t) e,

i.e. ``x_s / alpha_s = x_t / alpha_t + (sigma_s/alpha_s - sigma_t/alpha_t) e``: exact when eps is
constant along the path. PLMS keeps this map and replaces e by a linear-multistep combination of
the eps evaluated at the previous grid points (Liu et al. 2022, eq. 12; the 4-step
Adams–Bashforth weights):

    e' = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24,   x_{i+1} = phi(x_i, e', t_i -> t_{i+1}).

The weights are those of a uniform mesh in the grid index. They give order 4 when the grid is
uniform in ``sigma / alpha`` (the variable in which the transfer is an Euler step); on any other
grid the mismatch between ``sigma / alpha``'s increments and the index costs a local O(h^3) term,
so the method is second order (measured in ``tests/test_plms.py``).

Warm start (the first steps, before three past eps exist):

* ``"lower_order"`` (default; diffusers' ``PNDMScheduler(skip_prk_steps=True)`` variant):
  step 0 is Heun's method through the transfer map — ``e_0 = eps(x_0, t_0)``,
  ``x~ = phi(x_0, e_0)``, ``e' = (e_0 + eps(x~, t_1)) / 2`` — with **one extra evaluation**
  (the eps at x~ is not kept in the history); step 1 uses the 2-step Adams–Bashforth weights
  ``(3, -1)/2``, step 2 the 3-step weights ``(23, -16, 5)/12``, then the 4-step weights.
  ``nfe(n) = n + 1``.
* ``"prk"`` (the original PNDM pseudo Runge–Kutta): the first three steps are classical RK4
  through the transfer map, with stages at the step's start, twice at the midpoint
  ``t_mid = (t_i + t_{i+1}) / 2`` and at the end:
  ``e_1 = eps(x, t_i)``, ``e_2 = eps(phi(x, e_1, t_i -> t_mid), t_mid)``,
  ``e_3 = eps(phi(x, e_2, t_i -> t_mid), t_mid)``, ``e_4 = eps(phi(x, e_3, t_i -> t_{i+1}), t_{i+1})``,
  ``e' = (e_1 + 2 e_2 + 2 e_3 + e_4) / 6``; the history keeps e_1. Four evaluations per warm-up
  step, **9 extra** in all: ``nfe(n) = 4 n`` for n <= 3, else ``n + 9``.

A step into sigma = 0 (a grid ending at t = 0 on a process with sigma(0) = 0, diffusers'
``set_alpha_to_one``) never evaluates the model there: were it a warm-up step, the lower-order
warm start takes the plain transfer step (Euler, ``e' = e_0``: one evaluation fewer) and PRK
the midpoint rule ``e' = e_2`` (two fewer). Every model call goes through
:func:`~sdesolve.model.view_at` with ``alpha``, ``sigma`` precomputed at each time it evaluates.

The history of past eps lives in the state dict (``state["eps"]``, oldest first), never in the
solver. Which formula a step uses depends only on the history's length (a Python int), so the
loop has no host-device synchronization.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._validate import check_choice
from ..model import ScoreModel, view_at, view_coefficients
from .base import GeneratorLike, Solver, steps_into_zero
from .ddim import ddim_coefficients

if TYPE_CHECKING:
    from ..sde.base import LinearSDE

__all__ = ["PLMS"]

_AB = {
    1: (1.0,),
    2: (3.0 / 2.0, -1.0 / 2.0),
    3: (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0),
    4: (55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0),
}
"""Adams–Bashforth weights, newest eps first."""


class PLMS(Solver):
    r"""Pseudo linear multistep (PLMS, Liu et al. 2022) on the probability-flow ODE of any linear process.

    ``x_{i+1} = phi(x_i, (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24)`` with phi the DDIM
    (eta = 0) transfer map; module docstring for the warm starts.

    Args:
        warm_start: ``"lower_order"`` (default; Heun, then 2- and 3-step Adams–Bashforth —
            diffusers' ``skip_prk_steps=True``; 1 extra evaluation) or ``"prk"`` (three pseudo
            Runge–Kutta steps of 4 evaluations each, the original PNDM; 9 extra evaluations).

    ``order = 2``: the order on a general grid (tending to 4 on a grid uniform in sigma / alpha).
    Default grid: ``"log_snr"`` (measured best at 10–50 steps, ``notes/bench_samplers.md``).
    """

    order = 2.0
    strong_order = 2.0
    nfe_per_step = 1
    stochastic = False
    default_grid = "log_snr"

    def __init__(self, warm_start: str = "lower_order"):
        self.warm_start = str(check_choice(warm_start, "warm_start", ("lower_order", "prk")))

    def nfe(self, n_steps: int) -> int:
        """Exact network evaluations of an ``n_steps`` solve, warm start included.

        (A warm-up step into sigma = 0 saves one evaluation, two with ``"prk"``: module docstring.)
        """
        if self.warm_start == "prk":
            return 4 * n_steps if n_steps <= 3 else n_steps + 9
        return n_steps + 1 if n_steps >= 1 else 0

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Any]:
        c: dict[str, Any] = super().init(sde, grid)
        c.update(view_coefficients(sde, grid[:-1]))
        full = ddim_coefficients(sde, grid, 0.0)
        c["a"], c["b"] = full["a"], full["b"]
        nxt = view_coefficients(sde, grid[1:])
        c["alpha_next"], c["sigma_next"] = nxt["alpha"], nxt["sigma"]
        c["into_zero"] = steps_into_zero(sde, grid)
        if self.warm_start == "prk":
            k = min(3, grid.numel() - 1)  # only the warm-up steps need midpoints
            t_mid = 0.5 * (grid[:k] + grid[1 : k + 1])
            pairs = torch.stack([grid[:k], t_mid], dim=1).reshape(-1)  # t_0, m_0, t_1, m_1, ...
            half = ddim_coefficients(sde, pairs, 0.0)
            mid = view_coefficients(sde, t_mid)
            c["t_mid"], c["alpha_mid"], c["sigma_mid"] = t_mid, mid["alpha"], mid["sigma"]
            c["a_mid"], c["b_mid"] = half["a"][0::2], half["b"][0::2]
        return c

    def init_state(self, x: Tensor, coefs: dict[str, Any]) -> dict[str, Any]:
        return {"x": x, "eps": ()}

    def step(self, model: ScoreModel, state: dict, i: int, coefs: dict, *, generator: GeneratorLike = None,
             noise: bool = True, need_x0: bool = False) -> dict:  # fmt: skip
        x, hist = state["x"], state["eps"]
        a, b = coefs["a"][i], coefs["b"][i]
        e = _eps(model, x, coefs, i, "")
        warm = len(hist) < (3 if self.warm_start == "prk" else 1)
        if warm and self.warm_start == "prk":
            am, bm = coefs["a_mid"][i], coefs["b_mid"][i]
            e2 = _eps(model, am * x + bm * e, coefs, i, "_mid")
            if coefs["into_zero"][i]:  # the midpoint rule: no stage at sigma = 0
                e_comb = e2
            else:
                e3 = _eps(model, am * x + bm * e2, coefs, i, "_mid")
                e4 = _eps(model, a * x + b * e3, coefs, i, "_next")
                e_comb = (e + 2.0 * e2 + 2.0 * e3 + e4) * (1.0 / 6.0)
        elif warm:  # lower-order warm start: Heun through the transfer map (Euler into sigma = 0)
            e_comb = e if coefs["into_zero"][i] else 0.5 * (e + _eps(model, a * x + b * e, coefs, i, "_next"))
        else:
            w = _AB[len(hist) + 1]
            e_comb = e * w[0]
            for wj, ej in zip(w[1:], reversed(hist)):
                e_comb.add_(ej, alpha=wj)  # e_comb is a fresh tensor: fused multiply-add in place
        out = {"x": torch.addcmul(a * x, b, e_comb), "eps": (hist + (e,))[-3:]}
        if need_x0:
            out["x0"] = torch.addcmul(coefs["x0_x"][i] * x, coefs["x0_eps"][i], e)
        return out


def _eps(model: ScoreModel, x: Tensor, coefs: dict[str, Any], i: int, at: str) -> Tensor:
    """eps at the step's start (``at=""``), midpoint (``"_mid"``) or end (``"_next"``), through view_at."""
    return view_at(model, x, coefs["t" + at][i], "eps", (coefs["alpha" + at][i], coefs["sigma" + at][i]))
