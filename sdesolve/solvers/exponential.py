r"""Exponential integrators in log-SNR time: DPM-Solver++ (2M, 3M, 2M SDE), UniPC and DPM-Solver.

Every linear forward process has marginals ``x_t = alpha_t x_0 + sigma_t eps``. Write
``l_t = log(alpha_t / sigma_t)`` (half the process' log-SNR ``lambda = log(alpha^2 / sigma^2)``;
the "lambda" of Lu et al.), increasing as t decreases. On a step from t to s < t with
``h = l_s - l_t > 0`` the probability-flow ODE has the exact variation-of-constants solutions
(Lu et al. 2022a eq. 3.4; 2022b eq. 9)

    x_s = (alpha_s / alpha_t) x_t - alpha_s  int_{l_t}^{l_s} e^{-l} eps_hat(x_l, l) dl    (noise prediction)
    x_s = (sigma_s / sigma_t) x_t + sigma_s  int_{l_t}^{l_s} e^{l}  x0_hat(x_l, l) dl     (data prediction),

in which the linear part is integrated exactly and only the network's prediction is
approximated, by a polynomial in l. With ``phi_1(h) = -expm1(-h) = 1 - e^{-h}`` in [0, 1]:

* **order 1** (both forms are DDIM): ``x_s = (sigma_s / sigma_t) x_t + alpha_s phi_1(h) x0_hat_t``.
* **DPM-Solver++(2M)** (Lu et al. 2022b, Alg. 2; diffusers' ``solver_type="midpoint"``, k-diffusion's
  ``sample_dpmpp_2m``): with the previous step's ``x0_hat`` and ``r = h_prev / h``,
  ``D = (1 + 1/(2r)) x0_hat_t - 1/(2r) x0_hat_prev`` replaces x0_hat_t in the order-1 step.
* **DPM-Solver++(3M)** (the third-order multistep of Lu et al. 2022b): with
  ``r0 = h_prev / h``, ``r1 = h_prevprev / h``, ``D1_0 = (m0 - m1)/r0``, ``D1_1 = (m1 - m2)/r1``,
  ``D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1)`` (= h x0' + O(h^3)) and ``D2 = k (D1_0 - D1_1)/(r0 + r1)``,
  ``x_s = (sigma_s/sigma_t) x_t + alpha_s [phi_1 m0 + (1 - phi_1/h) D1 + (1/2 - (h - phi_1)/h^2) D2]``.
  The Taylor expansion ``x0(l) = m0 + u x0' + u^2/2 x0''`` integrated exactly against ``e^{-(h-u)}``
  (``int u^2/2 e^{-(h-u)} du = h^2/2 - h + phi_1``) needs ``D2 = h^2 x0''``, i.e. k = 2
  (``third_order="taylor"``: local error O(h^4), third order). DPM-Solver's reference code, diffusers'
  ``DPMSolverMultistepScheduler`` and k-diffusion's ``sample_dpmpp_3m_sde`` use k = 1
  (``third_order="dpm"``, the default): half the second difference, local error O(h^3), second order
  as h -> 0 (both measured in ``tests/test_exponential.py``). At 5-30 network calls the k = 1 form is
  the more accurate on most measured problems (up to 13x on Karras grids; the k = 2 form wins on
  log-SNR grids of Gaussian data from 15 calls and everywhere from ~50: ``docs/exponential.md``),
  so it is the default and matches diffusers to round-off.
* **DPM-Solver++(2M) SDE** (Lu et al. 2022b, eq. 18; diffusers' ``sde-dpmsolver++``):
  ``x_s = (sigma_s/sigma_t) e^{-h} x_t + alpha_s q D + sigma_s sqrt(q) z`` with
  ``q = 1 - e^{-2h} = -expm1(lambda_t - lambda_s)`` (the process' ``_one_minus_snr_ratio``) and D as
  in 2M (order 1: D = x0_hat_t). It samples the reverse SDE, not the flow.
* **UniPC** (Zhao et al. 2023, UniP-p / UniC-p with ``B(h) = expm1(-h)``, "bh2", or ``-h``, "bh1"):
  the predictor adds ``-alpha_s B(h) sum_k rho_k (m_k - m_0)/r_k`` to the order-1 step
  (``r_k = (l_{t_k} - l_t)/h`` for the previous points, rho from the order conditions
  ``R rho = b``, ``b_j = j! h phi_{j+1}(h) / B(h)``); after the next network evaluation m_s the
  corrector re-takes the same interval with m_s added as the newest point (rho_c solves the full
  system), and that m_s serves the next predictor unchanged: no extra evaluation.
* **DPM-Solver** (Lu et al. 2022a, Alg. 1-2; singlestep, noise prediction), ``E = alpha_s sigma_t/alpha_t
  = sigma_s e^h``: order 1 ``x_s = (alpha_s/alpha_t) x_t - E phi_1(h) eps_t`` (DDIM); order 2 an
  intermediate point at ``l_t + r_1 h`` (r_1 = 1/2) reached by order 1, then
  ``x_s = (alpha_s/alpha_t) x_t - E phi_1(h) eps_t - E phi_1(h)/(2 r_1) (eps_1 - eps_t)``; order 3
  points at r_1 = 1/3 and r_2 = 2/3, the second reached with
  ``- E_2 (r_2/r_1) (phi_1(r_2 h)/(r_2 h) - e^{-r_2 h}) (eps_1 - eps_t)`` and the end with
  ``- (E / r_2) (phi_1(h)/h - e^{-h}) (eps_2 - eps_t)`` (``sigma_s (e^h - 1) = E phi_1(h)`` and
  ``sigma_s ((e^h - 1)/h - 1) = E (phi_1(h)/h - e^{-h})``, finite for every h).

Written this way every step is ``x_s = a x_t + sum_j w_j m_j (+ c z)``: ``init`` computes a, w, c in
float64 on the host from the process' ``_log_snr``, ``_log_alpha``, ``_log_sigma``,
``_sigma_over_alpha``, ``_one_minus_snr_ratio`` and ``_t_of_log_snr`` (no process formula here). The multistep solvers
(DPM-Solver++, UniPC) fold the network's view (eps for eps, v and score networks: no conversion;
x0 for x0 networks) and the whole history into precomputed weights on a ring of partial sums
(``_Exponential._ring_coefficients``): a step is one network call and two fused multiply-adds
(three with noise), as many kernels as DDIM's, whatever the order. The price is memory: the state
holds 2 (K + 1) arrays of x's size (K = order - 1 for DPM-Solver++, UniPC's predictor order, one less
without its corrector). Which terms a step uses (its order) is a host list fixed at
``init``: no host-device synchronization and no data-dependent branching, so the loop can be
captured by :class:`~sdesolve.GraphSampler`. Multistep history lives in the state dict.

**Warm-up and the last steps.** Multistep orders grow as history accumulates (step i uses at most
order i + 1). ``lower_order_final`` lowers the order of the last steps as the peers do: DPM-Solver++
uses order 1 on the last step and at most 2 on the one before when the solve has fewer than 15
steps (diffusers' rule); UniPC uses at most order ``n - i`` on step i (diffusers' rule).
**A step into sigma = 0** (a grid ending at t = 0 on a process with sigma(0) = 0, e.g.
``DiscreteVPSDE.from_schedule("linear", t_min=0.0)``, or a Karras grid there: h = +inf) is always
taken at order 1, which returns ``alpha_s x0_hat`` (``phi_1 = 1``) without evaluating the model at
sigma = 0, as diffusers' ``final_sigmas_type="zero"`` and k-diffusion do.

References: C. Lu, Y. Zhou, F. Bao, J. Chen, C. Li, J. Zhu, "DPM-Solver: A Fast ODE Solver for
Diffusion Probabilistic Model Sampling in Around 10 Steps", NeurIPS 2022 (2022a); "DPM-Solver++:
Fast Solver for Guided Sampling of Diffusion Probabilistic Models", arXiv:2211.01095 (2022b);
W. Zhao, L. Bai, Y. Rao, J. Zhou, J. Lu, "UniPC: A Unified Predictor-Corrector Framework for Fast
Sampling of Diffusion Models", NeurIPS 2023.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._validate import check_bool, check_choice, check_int
from ..model import ScoreModel, view_at, view_coefficients
from .base import GeneratorLike, Solver, randn_like, steps_into_zero

if TYPE_CHECKING:
    from ..sde.base import LinearSDE

__all__ = ["DPMSolver", "DPMSolverPP", "UniPC"]


def _half_log_snr(sde: LinearSDE, grid: Tensor) -> list:
    """``l = lambda / 2 = log(alpha / sigma)`` at each time of ``grid`` (any shape), as nested host floats
    (+inf where sigma = 0)."""
    return (0.5 * sde._log_snr(grid)).tolist()


def _phi1(h: float) -> float:
    """``phi_1(h) = 1 - e^{-h}`` without cancellation (1 at h = +inf)."""
    return -math.expm1(-h)


def _multistep_orders(order: int, lam: list[float], into_zero: list[bool], final: str) -> list[int]:
    """The order of each multistep step: warm-up, the peers' lower-order-final rule, order 1 into sigma = 0.

    ``lam``: the half log-SNR at the n + 1 grid times. ``final``: ``"dpmpp"`` (order 1 on the last
    step, <= 2 on the one before, when n < 15), ``"unipc"`` (<= n - i on step i) or ``"none"``. A
    step whose log-SNR does not increase (two grid times a few ulps apart: h = 0 in float64) is
    order 1, and so is every step whose history would span it (the ratios h_prev / h need h > 0).
    """
    n = len(lam) - 1
    up = [lam[i + 1] > lam[i] for i in range(n)]
    orders = []
    for i in range(n):
        p = min(order, i + 1)
        k = 0  # previous intervals with h > 0, back from step i (step i itself included)
        while k < p and up[i - k]:
            k += 1
        p = max(1, min(p, k))
        if final == "dpmpp" and n < 15:
            p = min(p, 1 if i == n - 1 else (2 if i == n - 2 else p))
        elif final == "unipc":
            p = min(p, n - i)
        if into_zero[i]:
            p = 1
        orders.append(p)
    return orders


class _Exponential(Solver):
    """Shared parts: the x0/eps evaluation through precomputed coefficients, into-zero bookkeeping."""

    nfe_per_step = 1
    stochastic = False
    default_grid = "log_snr"

    def _base(self, sde: LinearSDE, grid: Tensor) -> dict:
        c: dict = super().init(sde, grid)
        c.update(view_coefficients(sde, grid[:-1]))
        c["into_zero"] = steps_into_zero(sde, grid)
        return c

    def init_state(self, x: Tensor, coefs: dict) -> dict[str, Any]:
        """The state at grid[0]: x and its ring (:meth:`_ring_coefficients`), empty history rows."""
        rows = coefs["ring"].shape[-1]
        z = x.new_zeros((2 * rows,) + tuple(x.shape))
        z[0] = z[rows] = x  # the two copies of row 0 (x); history rows start at zero
        _broadcastable(coefs, x)
        return {"x": z[0], "z": z}

    def _ring_coefficients(
        self, c: dict, a: list[float], w: list[list[float]], noise: list[float] | None, depth: int
    ) -> None:
        """Precompute the ring form of ``x_{i+1} = a_i x_i + sum_j w[i][j] m_{i-j} (+ noise_i z)``.

        ``m_k = x0_hat(x_k)`` is ``c_k x_k + d_k v_k`` for the view v the step asks the network for:
        ``(1/alpha, -sigma/alpha)`` for eps, ``(0, 1)`` for x0 itself. The state holds the R = depth + 1
        rows ``[x_i, P^1_i, ..., P^K_i]`` with the partial sums ``P^k_i = sum_{j >= k} w[i+k-1][j]
        m_{i+k-1-j}`` (what the steps to come take from the outputs already computed), so that

            x_{i+1}   = P^1_i     + (a_i + w[i][0] c_i) x_i + w[i][0] d_i v_i,
            P^k_{i+1} = P^{k+1}_i + w[i+k][k] (c_i x_i + d_i v_i),            P^{K+1} = 0:

        every new row is the old rows shifted by one plus a multiple of x_i and of v_i. The last new
        row takes x_i's place with x_i's coefficient reduced by one (x_i + (w c - 1) x_i). The rows
        are stored twice, ``z`` of shape (2R, *x.shape), so that the shifted rows are one view
        (rows 1..R) and a step is two fused multiply-adds over z (with
        the coefficients given twice, broadcasting writes both copies), plus one for the noise: no
        history list, no per-step dtype cast, no per-step branching. Keys: ``"ring"`` (eps view)
        and ``"ring_x0"`` (x0 view), each (n, J, 2, R) for J = 2 (x, v) or 3 (x, v, noise).
        """
        n, R = len(a), depth + 1
        x0_x, x0_eps = c["x0_x"].tolist(), c["x0_eps"].tolist()
        J = 2 if noise is None else 3
        ring, ring_x0 = [], []  # (n, J, R) as lists (one tensor each at the end: init is on the timed path)
        for i in range(n):
            wm = [w[i + k][k] if i + k < n and k < len(w[i + k]) else 0.0 for k in range(R)]  # m_i in row k
            base = [(a[i] if k == 0 else 0.0) - (1.0 if k == depth else 0.0) for k in range(R)]
            rows = [[b + u * x0_x[i] for b, u in zip(base, wm)], [u * x0_eps[i] for u in wm]]
            rows_x0 = [base, wm]
            if noise is not None:
                rows.append([noise[i]] + [0.0] * depth)
                rows_x0.append([noise[i]] + [0.0] * depth)
            ring.append(rows)
            ring_x0.append(rows_x0)
        c["ring"] = torch.tensor(ring, dtype=torch.float64)[:, :, None].expand(n, J, 2, R).contiguous()
        c["ring_x0"] = torch.tensor(ring_x0, dtype=torch.float64)[:, :, None].expand(n, J, 2, R).contiguous()
        c["final"] = [i == n - 1 for i in range(n)]  # read at [i]: the last step returns a tensor of its own

    def _ring_step(
        self, model: ScoreModel, state: dict, i: int, coefs: dict, generator: GeneratorLike, noise: bool, need_x0: bool
    ) -> dict:
        """One step of the ring form (:meth:`_ring_coefficients`): one network call, two or three kernels."""
        if "z" not in state:  # a state written as {"x", "hist"} (x0_hat at the previous points): its ring
            state = self._ring_from_history(state["x"], state.get("hist", ()), i, coefs)
        x, z = state["x"], state["z"]  # z: the flat (2R, *x.shape) rows, x = z[0]
        x0_view = not isinstance(model, ScoreModel) or model.prediction == "x0"  # else eps: no conversion
        v = view_at(model, x, coefs["t"][i], "x0" if x0_view else "eps", (coefs["alpha"][i], coefs["sigma"][i]))
        R = z.shape[0] // 2
        shifted = z[1 : R + 1]  # [P^1, ..., P^K, x]
        key = "ring_x0" if x0_view else "ring"
        draw = self.stochastic and noise
        if coefs["final"][i]:  # only x_n: a tensor of its own
            cf = coefs[key][i]
            cx, cv = cf[0, 0, 0], cf[1, 0, 0]
            x_next = torch.addcmul(torch.addcmul(shifted[0], cx, x), cv, v)
            if draw:
                x_next = torch.addcmul(x_next, cf[2, 0, 0], randn_like(x, generator))
            out: dict = {"x": x_next}
        else:
            c = coefs[key + "_b"][i]  # (J, 2, R, 1, ...): c[j] holds both copies' coefficients
            z_next = torch.addcmul(torch.addcmul(shifted, c[0], x), c[1], v)
            if draw:
                z_next = torch.addcmul(z_next, c[2], randn_like(x, generator))
            z_next = z_next.view((2 * R,) + tuple(x.shape))
            out = {"x": z_next[0], "z": z_next}
        if need_x0:
            out["x0"] = v if x0_view else torch.addcmul(coefs["x0_x"][i] * x, coefs["x0_eps"][i], v)
        return out

    def _ring_from_history(self, x: Tensor, hist: tuple, i: int, coefs: dict) -> dict:
        """The ring state at step i from x_i and ``hist`` (x0_hat at the previous points, newest last)."""
        w, R = coefs["w"], coefs["ring"].shape[-1]
        rows = [x]
        for k in range(1, R):  # P^k_i = sum_{j >= k} w[i+k-1][j] m_{i+k-1-j}, m_{i-l} = hist[-l]
            p = torch.zeros_like(x)
            for j in range(k, R):
                if i + k - 1 < w.shape[0] and j < w.shape[1] and j - k + 1 <= len(hist):
                    p = p + w[i + k - 1, j] * hist[-(j - k + 1)]
            rows.append(p)
        z = torch.stack(rows + rows)
        _broadcastable(coefs, x)
        return {"x": z[0], "z": z}


def _broadcastable(coefs: dict, x: Tensor) -> None:
    """Add ``"ring_b"``, ``"ring_x0_b"``: the ring coefficients viewed to broadcast against rows of x's shape
    (once per solve, by ``init_state``: a step then only selects its row)."""
    for key in ("ring", "ring_x0"):
        coefs[key + "_b"] = coefs[key].view(tuple(coefs[key].shape) + (1,) * x.dim())


def _weights_tensor(rows: list[list[float]], width: int) -> Tensor:
    return torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=torch.float64)


class DPMSolverPP(_Exponential):
    r"""DPM-Solver++ multistep (Lu et al. 2022b) in data prediction on any linear process.

    Order 2 (``2M``) or 3 (``3M``) on the probability-flow ODE, or (``stochastic=True``) the
    second-order SDE variant ``DPM-Solver++(2M) SDE``; formulas in the module docstring. One network
    evaluation per step (the x0 view); the previous ones are kept in the state.

    Args:
        order: 1, 2 (default) or 3 (``stochastic=True`` allows 1 or 2).
        stochastic: False (default): the deterministic multistep solver. True: the SDE variant,
            ``x_s = (sigma_s/sigma_t) e^{-h} x_t + alpha_s q D + sigma_s sqrt(q) z`` (diffusers'
            ``algorithm_type="sde-dpmsolver++"``, k-diffusion's ``sample_dpmpp_2m_sde`` with eta = 1).
        lower_order_final: True (default): order 1 on the last step and at most 2 on the one before
            when the solve has fewer than 15 steps (diffusers' rule). A step into sigma = 0 is order 1
            whatever this says.
        third_order: the 3M formula (module docstring): ``"dpm"`` (default; DPM-Solver's, diffusers',
            k-diffusion's: second order as h -> 0, the more accurate at 5-30 calls on most measured
            problems) or ``"taylor"`` (the Taylor-consistent second difference: third order).

    Orders: deterministic ``order`` (3M with ``third_order="dpm"``: 2 as h -> 0, its ``strong_order``);
    stochastic weak order 1. Default grid ``"log_snr"`` (uniform in h, the variable of the method).
    """

    def __init__(
        self, order: int = 2, stochastic: bool = False, lower_order_final: bool = True, third_order: str = "dpm"
    ):
        self.stochastic = check_bool(stochastic, "stochastic")  # type: ignore[misc]
        self.order = check_int(order, "order", minimum=1, maximum=3)  # type: ignore[assignment]
        if self.stochastic:  # the SDE variant is written for orders 1 and 2
            check_int(order, "order (with stochastic=True)", minimum=1, maximum=2)
        self.lower_order_final = check_bool(lower_order_final, "lower_order_final")
        self.third_order = str(check_choice(third_order, "third_order", ("dpm", "taylor")))

    @property
    def strong_order(self) -> float | None:  # type: ignore[override]
        if self.stochastic:
            return None
        return 2.0 if self.order == 3 and self.third_order == "dpm" else float(self.order)

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Any]:
        c = self._base(sde, grid)
        n = grid.numel() - 1
        lam = _half_log_snr(sde, grid)
        log_sig = sde._log_sigma(grid).tolist()
        alpha_next = torch.exp(sde._log_alpha(grid[1:])).tolist()
        q = sde._one_minus_snr_ratio(grid[:-1], grid[1:]).tolist()
        orders = _multistep_orders(int(self.order), lam, c["into_zero"], "dpmpp" if self.lower_order_final else "none")
        k2 = 2.0 if self.third_order == "taylor" else 1.0  # 3M's D2 = k2 (D1_0 - D1_1) / (r0 + r1)
        a, w, noise = [], [], []
        for i in range(n):
            h = lam[i + 1] - lam[i]
            ratio = math.exp(log_sig[i + 1] - log_sig[i])  # 0 into sigma = 0
            if self.stochastic:
                a.append(ratio * math.exp(-h))
                c1 = q[i]
                noise.append(math.exp(log_sig[i + 1]) * math.sqrt(q[i]))
            else:
                a.append(ratio)
                c1 = _phi1(h)
            p = orders[i]
            if p == 1:
                d = [1.0]
            elif p == 2:
                r0 = (lam[i] - lam[i - 1]) / h
                d = [1.0 + 0.5 / r0, -0.5 / r0]
            else:
                r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
                d10 = [1.0 / r0, -1.0 / r0, 0.0]  # (m0 - m1) / r0 on (m0, m1, m2)
                d11 = [0.0, 1.0 / r1, -1.0 / r1]  # (m1 - m2) / r1
                diff = [u - v for u, v in zip(d10, d11)]
                d1 = [u + r0 / (r0 + r1) * v for u, v in zip(d10, diff)]
                d2 = [k2 * v / (r0 + r1) for v in diff]
                c2 = 1.0 - c1 / h  # (e^{-h} - 1)/h + 1
                c3 = 0.5 - (h - c1) / (h * h)  # -((e^{-h} - 1 + h)/h^2 - 1/2)
                d = [float(j == 0) + (c2 * u + c3 * v) / c1 for j, (u, v) in enumerate(zip(d1, d2))]
            w.append([alpha_next[i] * c1 * dj for dj in d])
        c["w"] = _weights_tensor(w, 3)  # (the step reads "ring"; "w" builds a ring from a history list)
        c["orders"] = orders
        self._ring_coefficients(c, a, w, noise if self.stochastic else None, int(self.order) - 1)
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
        return self._ring_step(model, state, i, coefs, generator, noise, need_x0)


def _unipc_rhos(h: float, rks: list[float], variant: str, full: bool) -> tuple[list[float], float]:
    """UniPC's rho for points ``rks`` (previous points' (l_k - l_t)/h) and ``B(h)``.

    ``full=False``: the predictor (order p = len(rks) + 1 solves the (p-1)-system; p = 2 uses 1/2).
    ``full=True``: the corrector (rks plus the new point r = 1; order 1 uses 1/2).
    """
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    p = len(rks) + 1
    pts = rks + [1.0]
    h_phi_k, fact, b = h_phi_1 / hh - 1.0, 1, []
    for j in range(1, p + 1):
        b.append(h_phi_k * fact / b_h)
        fact *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    R = [[r ** (j - 1) for r in pts] for j in range(1, p + 1)]
    if full:
        rho = [0.5] if p == 1 else _solve(R, b)
    else:
        rho = [] if p == 1 else ([0.5] if p == 2 else _solve([row[:-1] for row in R[:-1]], b[:-1]))
    return rho, b_h


def _solve(M: list[list[float]], y: list[float]) -> list[float]:
    """The solution of the small system ``M rho = y`` (at most 3 x 3): Gaussian elimination with partial
    pivoting on host floats (no tensor per step: ``init`` runs once per solve, on the timed path)."""
    n = len(y)
    A = [list(row) + [v] for row, v in zip(M, y)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(A[r][col]))
        A[col], A[piv] = A[piv], A[col]
        for r in range(col + 1, n):
            f = A[r][col] / A[col][col]
            for k in range(col, n + 1):
                A[r][k] -= f * A[col][k]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (A[r][n] - sum(A[r][k] * out[k] for k in range(r + 1, n))) / A[r][r]
    return out


class UniPC(_Exponential):
    r"""UniPC (Zhao et al. 2023): multistep predictor UniP-p and corrector UniC-p, data prediction.

    Step i evaluates ``m_i = x0_hat(x_i, t_i)`` once; if i > 0 the corrector re-takes the previous
    interval with m_i as its newest point (``x_i <- UniC``), then the predictor steps from the
    corrected ``x_i`` with the same m_i (module docstring). One network evaluation per step. Both are
    linear in x_i and the m's, so ``init`` composes them into one multistep formula from the predicted
    x_i (the same map; only the rounding of the precomputed weights differs).

    Args:
        order: the predictor order, 1, 2 (default) or 3; the corrector raises it by one.
        variant: ``"bh2"`` (default, ``B(h) = expm1(-h)``) or ``"bh1"`` (``B(h) = -h``).
        corrector: True (default): UniPC; False: the predictor alone (UniP).
        lower_order_final: True (default): at most order ``n - i`` on step i of n (diffusers' rule).
            A step into sigma = 0 is order 1 whatever this says.

    ``order`` attribute: the predictor order plus one with the corrector, at most 3: measured against the
    exact flow, UniPC(1) converges at order 2 and UniPC(2) at 3; UniPC(3) at about 3 (its warm-up steps,
    of orders 1 and 2, cap it), UniP-3 (``corrector=False``) at 3 and faster (~4) at 20-80 steps.
    """

    def __init__(self, order: int = 2, variant: str = "bh2", corrector: bool = True, lower_order_final: bool = True):
        self.predictor_order = check_int(order, "order", minimum=1, maximum=3)
        self.variant = str(check_choice(variant, "variant", ("bh1", "bh2")))
        self.corrector = check_bool(corrector, "corrector")
        self.lower_order_final = check_bool(lower_order_final, "lower_order_final")

    @property
    def order(self) -> float:  # type: ignore[override]
        # the corrector adds one; UniPC(3)'s first-order warm-up steps cap the global order at 3 (measured)
        return float(min(self.predictor_order + (1 if self.corrector else 0), 3))

    @property
    def strong_order(self) -> float:  # type: ignore[override]
        return self.order

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Any]:
        c = self._base(sde, grid)
        n = grid.numel() - 1
        lam = _half_log_snr(sde, grid)
        log_sig = sde._log_sigma(grid).tolist()
        alpha = torch.exp(sde._log_alpha(grid)).tolist()
        orders = _multistep_orders(
            self.predictor_order, lam, c["into_zero"], "unipc" if self.lower_order_final else "none"
        )
        a, wp, wc = [], [], [[0.0]]
        for i in range(n):
            h = lam[i + 1] - lam[i]
            a.append(math.exp(log_sig[i + 1] - log_sig[i]))
            p, an = orders[i], alpha[i + 1]
            if not h > 0:  # a step of h = 0 (times a few ulps apart): order 1, and its corrector is the same step
                wp.append([an * _phi1(h)])
                wc.append([0.0, an * _phi1(h)])
                continue
            rks = [(lam[i - k] - lam[i]) / h for k in range(1, p)]
            rho, b_h = _unipc_rhos(h, rks, self.variant, full=False)
            w = [an * _phi1(h)] + [0.0] * (p - 1)
            for k, (rk, rho_k) in enumerate(zip(rks, rho)):  # - alpha B(h) rho_k (m_k - m_0) / r_k
                w[k + 1] -= an * b_h * rho_k / rk
                w[0] += an * b_h * rho_k / rk
            wp.append(w)
            if i + 1 < n:  # the corrector of x_{i+1}: the same interval, order p, with m_{i+1} as the newest point
                rho_c, _ = _unipc_rhos(h, rks, self.variant, full=True)
                wcor = [-an * b_h * rho_c[-1], an * _phi1(h) + an * b_h * rho_c[-1]] + [0.0] * (p - 1)
                for k, rk in enumerate(rks):
                    wcor[k + 2] -= an * b_h * rho_c[k] / rk
                    wcor[1] += an * b_h * rho_c[k] / rk
                wc.append(wcor)
        c["orders"] = orders
        # The corrected x_i = x_i + wc_i[0] m_i + sum_{j >= 1} (wc_i[j] - wp_{i-1}[j-1]) m_{i-j} (x_i the
        # predicted point, itself a_{i-1} xc_{i-1} + sum_j wp_{i-1}[j] m_{i-1-j}), so the step from the
        # predicted x_i is x_{i+1} = a_i x_i + sum_j w[i][j] m_{i-j}: one linear multistep formula.
        depth = self.predictor_order if self.corrector else self.predictor_order - 1
        w = []
        for i in range(n):
            wi = [0.0] * (depth + 1)
            for j, wj in enumerate(wp[i]):
                wi[j] += wj
            if self.corrector and i > 0:
                for j in range(orders[i - 1] + 1):
                    wi[j] += a[i] * wc[i][j]
                for j, wj in enumerate(wp[i - 1]):
                    wi[j + 1] -= a[i] * wj
            w.append(wi)
        c["w"] = _weights_tensor(w, depth + 1)
        self._ring_coefficients(c, a, w, None, depth)
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
        return self._ring_step(model, state, i, coefs, generator, noise, need_x0)


class DPMSolver(Solver):
    r"""DPM-Solver (Lu et al. 2022a), singlestep, noise prediction, order 1, 2 or 3 on any linear process.

    Each step of order k evaluates eps at the step's start and at k - 1 intermediate points at
    log-SNR fractions r (1/2 for order 2; 1/3 and 2/3 for order 3, the paper's DPM-Solver-2 and -3);
    formulas in the module docstring. Order 1 is DDIM. ``nfe_per_step = order``; a step into
    sigma = 0 is taken at order 1 (one evaluation, at its start).

    Args:
        order: 1, 2 or 3 (default).
    """

    stochastic = False
    default_grid = "log_snr"

    def __init__(self, order: int = 3):
        self.order = check_int(order, "order", minimum=1, maximum=3)  # type: ignore[assignment]

    @property
    def strong_order(self) -> float:  # type: ignore[override]
        return float(self.order)

    @property
    def nfe_per_step(self) -> int:  # type: ignore[override]
        return int(self.order)

    def stage_times(self, sde: LinearSDE, grid: Tensor) -> Tensor:
        """Intermediate times, shape (n_steps, order - 1): log-SNR fractions 1/2, or 1/3 and 2/3, of each step.

        (Steps into sigma = 0 get placeholder times; they are taken at order 1.)
        """
        fr = {1: [], 2: [0.5], 3: [1.0 / 3.0, 2.0 / 3.0]}[int(self.order)]
        lam_t, lam_s = sde._log_snr(grid[:-1]), sde._log_snr(grid[1:])
        lam_s = torch.where(torch.isfinite(lam_s), lam_s, lam_t)
        cols = [sde._t_of_log_snr(lam_t + r * (lam_s - lam_t)) for r in fr]
        return torch.stack(cols, dim=1) if cols else grid[:-1, None][:, :0]

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Any]:
        c: dict[str, Any] = super().init(sde, grid)
        c.update(view_coefficients(sde, grid[:-1]))
        n, k = grid.numel() - 1, int(self.order)
        into_zero = steps_into_zero(sde, grid)
        stages = self.stage_times(sde, grid)
        l_t, l_s = _half_log_snr(sde, grid[:-1]), _half_log_snr(sde, grid[1:])
        la_t, la_s = sde._log_alpha(grid[:-1]).tolist(), sde._log_alpha(grid[1:]).tolist()
        so_t = sde._sigma_over_alpha(grid[:-1]).tolist()
        # node j (j < k - 1: intermediate; k - 1: the end) = A x + sum B e, as host lists
        A = [[0.0] * k for _ in range(n)]
        B = [[[0.0] * k for _ in range(k)] for _ in range(n)]
        # order 1 into sigma = 0, and where the step's log-SNR does not increase or its intermediate points
        # round onto its ends (times a few ulps apart)
        orders = [1 if (z or not l_s[i] > l_t[i]) else k for i, z in enumerate(into_zero)]
        la_stage = sde._log_alpha(stages).tolist()  # (n, k - 1), all steps at once
        l_stage: list[list[float]] = _half_log_snr(sde, stages)
        for i in range(n):
            h = l_s[i] - l_t[i]
            if orders[i] > 1:
                la_u, l_u = la_stage[i], l_stage[i]
                r = [(lu - l_t[i]) / h for lu in l_u]
                if not all(0.0 < a < b for a, b in zip(r, r[1:] + [1.0])):  # nodes rounded onto the ends
                    orders[i] = 1
            if orders[i] == 1:
                A[i][-1] = math.exp(la_s[i] - la_t[i])
                B[i][-1][0] = -math.exp(la_s[i]) * so_t[i] * _phi1(h)
                continue
            E = [math.exp(lu) * so_t[i] for lu in la_u] + [math.exp(la_s[i]) * so_t[i]]
            for j in range(k - 1):  # intermediate node j at fraction r[j]
                A[i][j] = math.exp(la_u[j] - la_t[i])
                B[i][j][0] = -E[j] * _phi1(r[j] * h)
                if j == 1:  # DPM-Solver-3's second point: a second-order step from eps_t and eps_1
                    rh = r[1] * h
                    g = E[1] * (r[1] / r[0]) * (_phi1(rh) / rh - math.exp(-rh))
                    B[i][1][0] += g
                    B[i][1][1] = -g
            A[i][-1] = math.exp(la_s[i] - la_t[i])
            B[i][-1][0] = -E[-1] * _phi1(h)
            if k == 2:
                g = E[-1] * _phi1(h) / (2.0 * r[0])
            else:
                g = (E[-1] / r[1]) * (_phi1(h) / h - math.exp(-h))
            B[i][-1][0] += g
            B[i][-1][k - 1] = -g
        c["orders"] = orders
        # every per-step scalar of a step in one row (selected once, unbound once): A, then B row by row,
        # then alpha and sigma at each intermediate time
        packed = [torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64).reshape(n, k * k)]
        if k > 1:
            c["t_stage"] = stages
            for j in range(k - 1):
                vc = view_coefficients(sde, stages[:, j])
                packed += [vc["alpha"][:, None], vc["sigma"][:, None]]
        c["packed"] = torch.cat(packed, dim=1)
        return c

    def nfe(self, n_steps: int) -> int:
        """``order * n_steps`` (a step into sigma = 0 costs one evaluation instead)."""
        return int(self.order) * n_steps

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
        x, k = state["x"], int(self.order)
        row = coefs["packed"][i].unbind(0)  # A (k), B (k x k, row-major), then (alpha, sigma) per stage
        A, B = row[:k], row[k : k + k * k]
        e0 = view_at(model, x, coefs["t"][i], "eps", (coefs["alpha"][i], coefs["sigma"][i]))
        eps = [e0]
        if coefs["orders"][i] > 1:
            for j in range(k - 1):
                u = A[j] * x
                for m, e in enumerate(eps):
                    u = torch.addcmul(u, B[j * k + m], e)
                at = row[k + k * k + 2 * j : k + k * k + 2 * j + 2]
                eps.append(view_at(model, u, coefs["t_stage"][i][j], "eps", (at[0], at[1])))  # [i][j]: compile
        x_next = A[k - 1] * x
        for m, e in enumerate(eps):
            x_next = torch.addcmul(x_next, B[(k - 1) * k + m], e)
        out = {"x": x_next}
        if need_x0:
            out["x0"] = torch.addcmul(coefs["x0_x"][i] * x, coefs["x0_eps"][i], e0)
        return out
