r"""Fixed-step explicit Runge–Kutta methods for the probability-flow ODE; the tableaux are data.

The ODE (Song et al. 2021, eq. 13), in the forward time t, integrated from T down to t_min:

    dx/dt = v(x, t) = f(t) x - 1/2 g(t)^2 s_theta(x, t),

with f and g^2 asked of the process (``sde._f``, ``sde._g2``, as ``sde.probability_flow`` does).
A method is its Butcher tableau ``(c, A, b)``; with ``h = t_{i+1} - t_i < 0``

    k_j = h v(x + sum_l A[j][l] k_l, t_i + c_j h),   x_{i+1} = x + sum_j b_j k_j.

Every stage's ``h f``, ``h g^2 / 2``, ``alpha`` and ``sigma`` (handed to the model, ``coefs=``, to
convert its prediction to a score) are precomputed per grid in float64 and cast to the sample
dtype; the loop has no host-device synchronization. An eps-predicting
:class:`~sdesolve.ScoreModel` skips the conversion ``s = -eps / sigma``: its stages are
``k_j = h f x_j + (h g^2 / (2 sigma)) eps`` (equal to the score form up to rounding).

**Steps into sigma = 0.** A grid may end where sigma(t_min) = 0 (``VPSDE(t_min=0)``, a DDPM
schedule with ``t_min=0``); a stage with ``c_j > 0`` would then evaluate the model where the
score is infinite (``s = -eps / sigma``). Such an interval is taken by the exact step for a
constant eps (DDIM with eta = 0, ``ddim_coefficients``): ``x_s = alpha_s x0_hat`` with
``x0_hat = (x_t - sigma_t eps_hat) / alpha_t``, the one evaluation at t_i where sigma > 0. It is
the probability-flow ODE's Euler step in the variables (x / alpha, sigma / alpha) (Song et al.
2021, sec. 4.3; EDM takes this last step with Euler in sigma, Karras et al. 2022, Alg. 1), and
measured 10-100x more accurate there than an Euler step in t (whose velocity at sigma -> 0
varies like 1 / sigma).

============  =====  ==========  ===================================
method        order  nfe / step  tableau
============  =====  ==========  ===================================
``euler``     1      1           explicit Euler
``midpoint``  2      2           explicit midpoint
``heun``      2      2           Heun's (trapezoidal) RK2, EDM's 2nd-order step
``rk3``       3      3           Kutta's third-order method
``rk4``       4      4           classical Runge–Kutta
============  =====  ==========  ===================================

Default grids: measured on Gaussian and Gaussian-mixture targets under VP and VE at 10–50
steps (notes/grids.md): ``uniform`` has the smallest worst-case error of the four grids for every
method, so it is each one's default. Karras' grid is better on VE (1.2–5x), the quadratic grid
for heun/rk4 on VP (2–3x): pass ``grid=`` when the process is known.

References: Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021 (eq. 13);
Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS
2022 (Heun sampler); Hairer, Nørsett & Wanner, "Solving ODEs I", II.1 (tableaux); Song, Meng &
Ermon, "Denoising Diffusion Implicit Models", ICLR 2021 (eq. 12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..model import ScoreModel, predicts_eps, view_at, view_coefficients
from .base import GeneratorLike
from .methods import ADAPTIVE, ALIASES, FIXED
from .ode import ODE

if TYPE_CHECKING:
    from ..sde.base import LinearSDE

__all__ = ["ButcherTableau", "RungeKuttaODE", "TABLEAUX", "flow_coefficients"]


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method: nodes ``c``, strictly lower-triangular ``A`` (row j holds the
    weights of stages 0..j-1), weights ``b`` and the classical ``order``."""

    c: tuple[float, ...]
    A: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int


def _tableau(c: list[float], A: list[list[float]], b: list[float], order: int) -> ButcherTableau:
    return ButcherTableau(tuple(c), tuple(tuple(r) for r in A), tuple(b), order)


#: the fixed-step methods, by name (orders as in :data:`sdesolve.solvers.methods.FIXED`)
TABLEAUX: dict[str, ButcherTableau] = {
    "euler": _tableau([0.0], [[]], [1.0], 1),
    "midpoint": _tableau([0.0, 0.5], [[], [0.5]], [0.0, 1.0], 2),
    "heun": _tableau([0.0, 1.0], [[], [1.0]], [0.5, 0.5], 2),
    "rk3": _tableau([0.0, 0.5, 1.0], [[], [0.5], [-1.0, 2.0]], [1 / 6, 2 / 3, 1 / 6], 3),
    "rk4": _tableau([0.0, 0.5, 0.5, 1.0], [[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6], 4),
}
assert {k: v.order for k, v in TABLEAUX.items()} == FIXED, "methods.FIXED and the tableaux disagree"

#: the step into sigma = 0, in (r = sigma / alpha, y = x / alpha): each method's nearest tableau whose
#: nodes avoid c = 1 (r = 0); an explicit 4-stage order-4 method needs c_4 = 1, so rk4 takes Heun's
#: third-order method there (one stage fewer: one local step of order 3 keeps the global order 4).
ZERO_TABLEAUX: dict[str, ButcherTableau] = {
    "euler": TABLEAUX["euler"],
    "midpoint": TABLEAUX["midpoint"],
    "heun": _tableau([0.0, 2 / 3], [[], [2 / 3]], [1 / 4, 3 / 4], 2),  # Ralston's
    "rk3": _tableau([0.0, 1 / 3, 2 / 3], [[], [1 / 3], [0.0, 2 / 3]], [1 / 4, 0.0, 3 / 4], 3),  # Heun's
    "rk4": _tableau([0.0, 1 / 3, 2 / 3], [[], [1 / 3], [0.0, 2 / 3]], [1 / 4, 0.0, 3 / 4], 3),
}

# The most accurate grid at 10-50 steps on the benchmark problems (notes/grids.md).
_DEFAULT_GRIDS = {"euler": "uniform", "midpoint": "uniform", "heun": "uniform", "rk3": "uniform", "rk4": "uniform"}


def flow_coefficients(sde: LinearSDE, t: Tensor, h: Tensor | float = 1.0) -> dict[str, Tensor]:
    """The probability-flow ODE's per-time coefficients (float64): ``v = f x - (g^2/2) s``, times h.

    Returns ``hf = h f(t)``, ``hg2_half = h g(t)^2 / 2`` (both asked of the process), ``alpha``,
    ``sigma`` and ``hg2_half_sigma = h g^2 / (2 sigma)`` (the eps form ``v = f x + g^2/(2 sigma) eps``).
    """
    hf = h * sde._f(t)
    hg2_half = 0.5 * h * sde._g2(t)
    alpha, sigma = torch.exp(sde._log_alpha(t)), torch.exp(sde._log_sigma(t))
    return {"hf": hf, "hg2_half": hg2_half, "alpha": alpha, "sigma": sigma, "hg2_half_sigma": hg2_half / sigma}


def _axpy(y: Tensor, a: float, x: Tensor) -> Tensor:
    """``y + a x``, in one kernel when ``a`` is a power of two (``a x`` is then exact: the same bits as two)."""
    if a == 1.0:
        return y + x
    if abs(math.frexp(a)[0]) == 0.5:
        return torch.add(y, x, alpha=a)
    return y + a * x


class RungeKuttaODE(ODE):
    """Probability-flow ODE with a fixed-step explicit Runge–Kutta method (see the module docstring).

    Args:
        method: ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk3"`` or ``"rk4"``.

    Attributes: ``order``, ``nfe_per_step`` (stages), ``default_grid``, ``tableau``.
    """

    stochastic = False
    adaptive = False

    def __init__(
        self,
        method: str = "heun",
        rtol: float | None = None,
        atol: float | None = None,
        options: dict[str, Any] | None = None,
        max_nfe: int | None = None,
        time_variable: str | None = None,
    ):
        method = ALIASES.get(method, method) if isinstance(method, str) else method
        if not isinstance(method, str):
            raise TypeError(f"method must be one of {tuple(TABLEAUX)}, got {type(method).__name__}")
        if method not in TABLEAUX:
            raise ValueError(f"method must be one of {tuple(TABLEAUX)} (fixed step), got {method!r}")
        adaptive_only = {
            "rtol": rtol,
            "atol": atol,
            "options": options,
            "max_nfe": max_nfe,
            "time_variable": time_variable,
        }
        for name, v in adaptive_only.items():
            if v is not None:
                raise ValueError(f"{name} applies to adaptive methods only {tuple(ADAPTIVE)}, not method={method!r}")
        self.method = method
        self.tableau = TABLEAUX[method]
        self.order = float(self.tableau.order)
        self.nfe_per_step = len(self.tableau.c)
        self.default_grid = _DEFAULT_GRIDS[method]

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Any]:
        coefs: dict[str, Any] = super().init(sde, grid)
        t, h = coefs["t"], grid[1:] - grid[:-1]
        into_zero = torch.zeros_like(t, dtype=torch.bool)
        for j, cj in enumerate(self.tableau.c):
            tj = t + cj * h if cj != 1.0 else coefs["t_next"]
            coefs[f"t_stage{j}"] = tj
            for k, v in flow_coefficients(sde, tj, h).items():
                coefs[f"{k}{j}"] = v
            into_zero |= coefs[f"sigma{j}"] == 0.0
        # intervals where a stage would meet sigma = 0 take ZERO_TABLEAUX in (r, y) instead
        coefs["into_zero"] = [bool(z) for z in into_zero]  # a host list: branching on it needs no sync
        coefs.update(self._zero_coefficients(sde, grid, into_zero))
        view = view_coefficients(sde, t)  # the x0 preview: x0 = x0_x x + x0_eps eps = x0_x x + x0_score s
        coefs.update({k: view[k] for k in ("x0_x", "x0_eps", "x0_score")})
        return coefs

    def _zero_coefficients(self, sde: LinearSDE, grid: Tensor, into_zero: Tensor) -> dict[str, Tensor]:
        """Stage times, alpha, sigma of the step into sigma = 0 in r = sigma / alpha (ones elsewhere).

        With y = x / alpha the flow is ``dy/dr = eps(alpha y, t(r))`` (Song et al. 2021, sec. 4.3);
        stage j sits at ``r_j = (1 - c_j) r_i > 0``, ``t_j = t(r_j)`` (asked of the process).
        """
        tab = ZERO_TABLEAUX[self.method]
        n = grid.numel() - 1
        out = {"zr": torch.ones(n, dtype=torch.float64), "zinv_alpha": torch.ones(n, dtype=torch.float64)}
        out["zalpha_next"] = torch.ones(n, dtype=torch.float64)
        for j in range(len(tab.c)):
            out[f"tz{j}"] = grid[:-1].clone()
            out[f"zalpha{j}"], out[f"zsigma{j}"] = (
                torch.ones(n, dtype=torch.float64),
                torch.ones(n, dtype=torch.float64),
            )
        for i in torch.nonzero(into_zero).flatten().tolist():
            t_i = grid[i : i + 1]
            r_i = sde._sigma_over_alpha(t_i)
            out["zr"][i], out["zinv_alpha"][i] = r_i[0], torch.exp(-sde._log_alpha(t_i))[0]
            out["zalpha_next"][i] = torch.exp(sde._log_alpha(grid[i + 1 : i + 2]))[0]
            for j, cj in enumerate(tab.c):
                tj = (
                    t_i
                    if cj == 0.0
                    else sde._t_of_sigma_over_alpha((1.0 - cj) * r_i).clamp(float(grid[i + 1]), float(t_i[0]))
                )
                out[f"tz{j}"][i] = tj[0]
                out[f"zalpha{j}"][i], out[f"zsigma{j}"][i] = (
                    torch.exp(sde._log_alpha(tj))[0],
                    torch.exp(sde._log_sigma(tj))[0],
                )
        return out

    def _step_into_zero(self, model: ScoreModel, x: Tensor, i: int, coefs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """``y_next = y - r_i sum_j b_j eps_j`` (stages ``y_j = y - r_i sum_l A[j][l] eps_l``); returns (x_next, eps_0)."""
        tab = ZERO_TABLEAUX[self.method]
        y, r = coefs["zinv_alpha"][i] * x, coefs["zr"][i]
        es: list[Tensor] = []
        for j, row in enumerate(tab.A):
            yj = y
            for a_jl, e_l in zip(row, es):
                if a_jl != 0.0:
                    yj = yj - (a_jl * r) * e_l
            coefs_j = (coefs[f"zalpha{j}"][i], coefs[f"zsigma{j}"][i])
            es.append(view_at(model, coefs_j[0] * yj, coefs[f"tz{j}"][i], "eps", coefs_j))
        for b_j, e_j in zip(tab.b, es):
            if b_j != 0.0:
                y = y - (b_j * r) * e_j
        return coefs["zalpha_next"][i] * y, es[0]

    def step(self, model: ScoreModel, state: dict, i: int, coefs: dict, *, generator: GeneratorLike = None,
             noise: bool = True, need_x0: bool = False) -> dict:  # fmt: skip
        x = state["x"]
        eps = predicts_eps(model)  # then s holds eps = -sigma score
        if coefs["into_zero"][i]:
            x_next, e0 = self._step_into_zero(model, x, i, coefs)
            out = {"x": x_next}
            if need_x0:
                out["x0"] = coefs["x0_x"][i] * x + coefs["x0_eps"][i] * e0
            return out
        ks: list[Tensor] = []
        s0 = None
        for j, row in enumerate(self.tableau.A):
            xj = x
            for a_jl, k_l in zip(row, ks):
                if a_jl != 0.0:
                    xj = _axpy(xj, a_jl, k_l)
            tj, at_j = coefs[f"t_stage{j}"][i], (coefs[f"alpha{j}"][i], coefs[f"sigma{j}"][i])
            if eps:
                s = view_at(model, xj, tj, "eps", at_j)
                ks.append(coefs[f"hf{j}"][i] * xj + coefs[f"hg2_half_sigma{j}"][i] * s)
            else:
                s = view_at(model, xj, tj, "score", at_j)
                ks.append(coefs[f"hf{j}"][i] * xj - coefs[f"hg2_half{j}"][i] * s)
            if j == 0:
                s0 = s
        x_next = x
        for b_j, k_j in zip(self.tableau.b, ks):
            if b_j != 0.0:
                x_next = _axpy(x_next, b_j, k_j)
        out = {"x": x_next}
        if need_x0:
            out["x0"] = coefs["x0_x"][i] * x + coefs["x0_eps" if eps else "x0_score"][i] * s0
        return out

    def __repr__(self) -> str:
        return f"ODE(method={self.method!r})"
