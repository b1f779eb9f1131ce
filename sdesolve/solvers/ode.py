"""The probability-flow ODE: fixed-step Runge–Kutta methods and torchdiffeq's adaptive ones.

The ODE (Song et al. 2021, eq. 13), in the forward time t, integrated from T down to t_min:

    dx/dt = v(x, t) = f(t) x - 1/2 g(t)^2 s_theta(x, t).

Its flow map carries p_T to p_t exactly (for the exact score), so a deterministic solver is a
fixed map of x_T. Fixed-step methods are explicit Runge–Kutta schemes given by their Butcher
tableau ``(c, A, b)`` with ``h = t_{i+1} - t_i < 0``:

    k_j = h v(x + sum_l A[j][l] k_l, t_i + c_j h),   x_{i+1} = x + sum_j b_j k_j.

Every stage's ``h f``, ``h g^2 / 2``, ``alpha`` and ``sigma`` (handed to the model, ``coefs=``, to
convert its prediction to a score) are precomputed per grid in float64 and cast to the sample
dtype; the loop has no host-device synchronization. An eps-predicting
:class:`~sdesolve.ScoreModel` skips the conversion ``s = -eps / sigma``: its stages are
``k_j = h f x_j + (h g^2 / (2 sigma)) eps`` (equal to the score form up to rounding).

============  =====  ==========  =============  ===================================
method        order  nfe / step  default grid   tableau
============  =====  ==========  =============  ===================================
``euler``     1      1           see below      explicit Euler
``midpoint``  2      2                          explicit midpoint
``heun``      2      2                          Heun's (trapezoidal) RK2, EDM's 2nd-order step
``rk3``       3      3                          Kutta's third-order method
``rk4``       4      4                          classical Runge–Kutta
============  =====  ==========  =============  ===================================

Adaptive methods (``dopri5``, ``dopri8``, ``bosh3``, ``adaptive_heun``, ``fehlberg2``) call
``torchdiffeq.odeint`` with ``rtol``/``atol`` (Chen et al. 2018); they synchronize (step-size
control reads the error), take the grid's two ends (and report the state at every grid time to
``callback``), and record the number of score evaluations of the last solve in ``last_nfe``.

Default grids: measured on Gaussian and Gaussian-mixture targets under VP and VE at 10–50
steps (notes/grids.md): ``uniform`` has the smallest worst-case error of the four grids for every
fixed-step method, so it is each one's default. Karras' grid is better on VE (1.2–5x), the
quadratic grid for heun/rk4 on VP (2–3x): pass ``grid=`` when the process is known.

References: Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021 (eq. 13);
Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS
2022 (Heun sampler); Hairer, Nørsett & Wanner, "Solving ODEs I" (tableaus); Dormand & Prince
1980 (dopri5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..model import predicts_eps, view_at
from .base import NonFiniteError, Solver

__all__ = ["ODE", "FIXED_METHODS", "ADAPTIVE_METHODS"]

# c, A (strictly lower triangular, row j holds the weights of stages 0..j-1), b, order
FIXED_METHODS: dict[str, tuple[list[float], list[list[float]], list[float], int]] = {
    "euler": ([0.0], [[]], [1.0], 1),
    "midpoint": ([0.0, 0.5], [[], [0.5]], [0.0, 1.0], 2),
    "heun": ([0.0, 1.0], [[], [1.0]], [0.5, 0.5], 2),
    "rk3": ([0.0, 0.5, 1.0], [[], [0.5], [-1.0, 2.0]], [1 / 6, 2 / 3, 1 / 6], 3),
    "rk4": ([0.0, 0.5, 0.5, 1.0], [[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6], 4),
}
# torchdiffeq's adaptive methods and their orders
ADAPTIVE_METHODS: dict[str, int] = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "adaptive_heun": 2, "fehlberg2": 2}

# The most accurate grid at 10-50 steps on the benchmark problems (notes/grids.md).
_DEFAULT_GRIDS = {"euler": "uniform", "midpoint": "uniform", "heun": "uniform", "rk3": "uniform", "rk4": "uniform"}


class ODE(Solver):
    """Probability-flow ODE sampler ``dx/dt = f x - 1/2 g^2 s(x, t)`` from T down to t_min.

    Args:
        method: a fixed-step method (``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk3"``,
            ``"rk4"``) or an adaptive torchdiffeq method (``"dopri5"``, ``"dopri8"``,
            ``"bosh3"``, ``"adaptive_heun"``, ``"fehlberg2"``).
        rtol, atol: tolerances of adaptive methods (ignored by fixed-step ones).
        options: extra options passed to ``torchdiffeq.odeint`` (adaptive methods only).

    Attributes: ``order``, ``nfe_per_step`` (stages), ``adaptive``, ``default_grid``, and
    ``last_nfe`` (score evaluations of the last adaptive solve).
    """

    stochastic = False

    def __init__(self, method: str = "heun", rtol: float = 1e-5, atol: float = 1e-5, options: dict | None = None):
        if method in FIXED_METHODS:
            c, _, _, order = FIXED_METHODS[method]
            self.adaptive = False
            self.order = float(order)
            self.nfe_per_step = len(c)
            self.default_grid = _DEFAULT_GRIDS[method]
        elif method in ADAPTIVE_METHODS:
            self.adaptive = True
            self.order = float(ADAPTIVE_METHODS[method])
            self.nfe_per_step = 0  # unknown in advance: see last_nfe
            self.default_grid = "uniform"
        else:
            raise ValueError(
                f"method must be one of {sorted(FIXED_METHODS)} (fixed step) or {sorted(ADAPTIVE_METHODS)} "
                f"(adaptive, torchdiffeq), got {method!r}"
            )
        for name, v in (("rtol", rtol), ("atol", atol)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
        self.method = method
        self.rtol, self.atol = float(rtol), float(atol)
        self.options = options
        self.last_nfe: int | None = None

    def nfe(self, n_steps: int) -> int:
        if self.adaptive:
            if self.last_nfe is None:
                raise ValueError("an adaptive ODE's number of evaluations is known only after a solve (last_nfe)")
            return self.last_nfe
        return self.nfe_per_step * n_steps

    # ------------------------------------------------------------- fixed step
    def init(self, sde, grid):
        coeffs = super().init(sde, grid)
        if self.adaptive:
            return coeffs
        c, _, _, _ = FIXED_METHODS[self.method]
        t, h = coeffs["t"], grid[1:] - grid[:-1]
        for j, cj in enumerate(c):
            tj = t + cj * h
            coeffs[f"t_stage{j}"] = tj
            coeffs[f"hf{j}"] = h * sde._f(tj)
            coeffs[f"hg2_half{j}"] = 0.5 * h * sde._g2(tj)
            coeffs[f"alpha{j}"] = torch.exp(sde._log_alpha(tj))
            coeffs[f"sigma{j}"] = torch.exp(sde._log_sigma(tj))
            coeffs[f"hg2_half_sigma{j}"] = coeffs[f"hg2_half{j}"] / coeffs[f"sigma{j}"]
        la, ls = sde._log_alpha(t), sde._log_sigma(t)
        coeffs["x0_a"], coeffs["x0_b"] = torch.exp(-la), torch.exp(2.0 * ls - la)
        coeffs["x0_e"] = -torch.exp(ls - la)  # x0 = x / alpha - (sigma / alpha) eps
        return coeffs

    def step(self, model, state, i, coeffs, *, generator=None, noise=True, need_x0=False):
        _, A, b, _ = FIXED_METHODS[self.method]
        x = state["x"]
        eps = predicts_eps(model)  # then s holds eps = -sigma score
        ks: list[Tensor] = []
        s0 = None
        for j, row in enumerate(A):
            xj = x
            for a_jl, k_l in zip(row, ks):
                if a_jl != 0.0:
                    xj = xj + a_jl * k_l
            tj = coeffs[f"t_stage{j}"][i]
            if eps:
                s = model.eps(xj, tj)
                ks.append(coeffs[f"hf{j}"][i] * xj + coeffs[f"hg2_half_sigma{j}"][i] * s)
            else:
                s = view_at(model, xj, tj, "score", (coeffs[f"alpha{j}"][i], coeffs[f"sigma{j}"][i]))
                ks.append(coeffs[f"hf{j}"][i] * xj - coeffs[f"hg2_half{j}"][i] * s)
            if j == 0:
                s0 = s
        x_next = x
        for b_j, k_j in zip(b, ks):
            if b_j != 0.0:
                x_next = x_next + b_j * k_j
        out = {"x": x_next}
        if need_x0:
            out["x0"] = coeffs["x0_a"][i] * x + coeffs["x0_e" if eps else "x0_b"][i] * s0
        return out

    # ------------------------------------------------------------- adaptive
    def solve(
        self,
        sde,
        model,
        x: Tensor,
        grid: Tensor,
        *,
        generator: torch.Generator | None = None,
        denoise: bool = True,
        callback: Callable[[dict], None] | None = None,
        progress: bool = False,
        check_finite: bool = True,
    ) -> Tensor:
        if not self.adaptive:
            return super().solve(
                sde,
                model,
                x,
                grid,
                generator=generator,
                denoise=denoise,
                callback=callback,
                progress=progress,
                check_finite=check_finite,
            )
        from torchdiffeq import odeint

        self.check(sde)
        lo, hi = float(grid.min()), float(grid.max())
        nfe = [0]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc=f"ODE({self.method}) nfe", unit="nfe")

        def velocity(t: Tensor, y: Tensor) -> Tensor:
            nfe[0] += 1
            if bar is not None:
                bar.update(1)
            t64 = t.detach().to(torch.float64).clamp(lo, hi)  # adaptive steps may probe past the ends
            f = sde._f(t64).to(y.dtype)
            g2 = sde._g2(t64).to(y.dtype)
            return f * y - 0.5 * g2 * model.score(y, t64)

        times = grid if callback is not None else grid[[0, -1]]
        times = times.to(device=x.device, dtype=torch.float64)
        try:
            ys = odeint(velocity, x, times, rtol=self.rtol, atol=self.atol, method=self.method, options=self.options)
        except AssertionError as e:  # torchdiffeq's "underflow in dt" when the state turns NaN
            if check_finite and "underflow" in str(e):
                raise NonFiniteError(
                    f"the adaptive solve ({self.method}) broke down (step size underflow) between t = {hi:g} and "
                    f"t = {lo:g}, usually because the model returned NaN or inf; pass check_finite=False to ignore"
                ) from e
            raise
        finally:
            if bar is not None:
                bar.close()
        self.last_nfe = nfe[0]
        if callback is not None:
            for i in range(grid.numel() - 1):
                callback({"i": i, "t": float(grid[i]), "t_next": float(grid[i + 1]), "x": ys[i + 1], "x0": None})
        out = ys[-1]
        if check_finite and not bool(torch.isfinite(out).all()):
            raise NonFiniteError(
                f"the adaptive solve ({self.method}) from t = {hi:g} to t = {lo:g} produced NaN or inf; "
                f"check the model's output, or pass check_finite=False"
            )
        return out

    def __repr__(self) -> str:
        if self.adaptive:
            return f"ODE(method={self.method!r}, rtol={self.rtol:g}, atol={self.atol:g})"
        return f"ODE(method={self.method!r})"
