r"""Adaptive embedded Runge–Kutta integration whose last step lands exactly on the end time.

An embedded pair is a Butcher tableau ``(c, A, b)`` of order p with a second weight vector
``b_hat`` of order p - 1 sharing the stages (the tableau carries ``b_err = b - b_hat``). One step
of size h from (t, y) computes

    k_j = fn(t + c_j h, y + h sum_l A[j][l] k_l),   y_new = y + h sum_j b_j k_j,
    e   = h sum_j b_err_j k_j                        (the local error estimate of the lower method),

and is accepted when the scaled error norm ``||e / (atol + rtol max(|y|, |y_new|))|| <= 1``
(Hairer, Nørsett & Wanner, "Solving ODEs I", II.4, eq. 4.11). Either way the next step is
``h * clamp(0.9 norm^(-1/p), 0.2, 10)`` (the elementary controller, exponent 1/(q+1) with
q = p - 1 the order of the error estimator), and the propagated value is the higher-order one
(local extrapolation). The first step follows Hairer et al.'s starting-step algorithm (II.4,
p. 169), costing one evaluation. FSAL tableaux (dopri5, bosh3) reuse their last stage as the
next step's first.

Unlike an integrator that steps past the end and interpolates back (torchdiffeq's), a step that
would pass t1 is shortened to land on it, and every stage time ``t + c_j h`` lies in [t, t + h]
(all tableaux here have ``0 <= c_j <= 1``), so ``fn`` is never evaluated outside [t1, t0] (or
[t0, t1]). Each solve has a budget of evaluations, ``max_nfe``; passing it, a step-size
underflow, or NaN/inf from ``fn`` ends the solve with an error naming t and the NFE.

The state is one tensor; the default error norm is the RMS over all of it (Hairer's),
:func:`per_sample_rms_norm` (the worst sample's RMS, so every sample of a batch meets the
tolerance) is what the probability-flow sampler uses.

References: Dormand & Prince, "A family of embedded Runge-Kutta formulae", J. Comp. Appl. Math.
6 (1980) (dopri5); Prince & Dormand, "High order embedded Runge-Kutta formulae", J. Comp. Appl.
Math. 7 (1981) (dopri8: the 13-stage 8(7) pair, coefficients read from torchdiffeq's table);
Bogacki & Shampine, Appl. Math. Lett. 2 (1989) (bosh3); Fehlberg, NASA TR R-315 (1969)
(fehlberg2, the RKF1(2) pair).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import check_callable, check_choice, check_int, check_real, check_tensor, check_tolerance
from .base import NonFiniteError
from .ddim import ddim_coefficients
from .methods import ADAPTIVE, ALIASES, resolve_method
from .ode import ODE
from .runge_kutta import ButcherTableau

__all__ = [
    "AdaptiveODE",
    "AdaptiveSolveError",
    "EmbeddedTableau",
    "TABLEAUX",
    "integrate",
    "per_sample_rms_norm",
    "rms_norm",
    "DEFAULT_MAX_NFE",
]

#: the adaptive sampler's time variables (as ``log_likelihood``'s): the process time, u = log(sigma/alpha)
TIME_VARIABLES = ("auto", "t", "log_snr")

#: the default budget of evaluations of one adaptive solve
DEFAULT_MAX_NFE = 10_000

_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


class AdaptiveSolveError(RuntimeError):
    """An adaptive solve could not finish: too many evaluations or a step-size underflow.

    Attributes ``t`` (where it stopped) and ``nfe`` (evaluations so far).
    """

    def __init__(self, message: str, t: float, nfe: int):
        super().__init__(message)
        self.t, self.nfe = t, nfe


@dataclass(frozen=True)
class EmbeddedTableau(ButcherTableau):
    """A Butcher tableau with an embedded error estimator ``b_err = b - b_hat`` (order p - 1)."""

    b_err: tuple[float, ...] = ()

    @property
    def fsal(self) -> bool:
        """First same as last: the last stage is evaluated at (t + h, y_new)."""
        return self.c[-1] == 1.0 and tuple(self.A[-1]) == tuple(self.b[:-1]) and self.b[-1] == 0.0


def _embedded(c, A, b, b_hat, order) -> EmbeddedTableau:
    return EmbeddedTableau(
        c=tuple(c), A=tuple(tuple(r) for r in A), b=tuple(b), order=order,
        b_err=tuple(x - y for x, y in zip(b, b_hat)),
    )  # fmt: skip


def _dopri8() -> EmbeddedTableau:
    """Prince & Dormand's 13-stage 8(7) pair, its coefficients read from torchdiffeq's table."""
    from torchdiffeq._impl.dopri8 import _DOPRI8_TABLEAU as tab

    n = 13  # torchdiffeq appends a 14th (interpolation) stage of weight 0
    c = [0.0] + tab.alpha[: n - 1].tolist()
    A = [[]] + [row.tolist() for row in tab.beta[: n - 1]]
    b = tab.c_sol[:n].tolist()
    return EmbeddedTableau(
        c=tuple(c), A=tuple(tuple(r) for r in A), b=tuple(b), order=8, b_err=tuple(tab.c_error[:n].tolist())
    )


#: the embedded pairs, by method name (orders as in :data:`sdesolve.solvers.methods.ADAPTIVE`)
TABLEAUX: dict[str, EmbeddedTableau] = {
    "dopri5": _embedded(
        [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0],
        [
            [],
            [1 / 5],
            [3 / 40, 9 / 40],
            [44 / 45, -56 / 15, 32 / 9],
            [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
            [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
            [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
        ],
        [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0],
        [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40],
        5,
    ),
    "bosh3": _embedded(
        [0.0, 1 / 2, 3 / 4, 1.0],
        [[], [1 / 2], [0.0, 3 / 4], [2 / 9, 1 / 3, 4 / 9]],
        [2 / 9, 1 / 3, 4 / 9, 0.0],
        [7 / 24, 1 / 4, 1 / 3, 1 / 8],
        3,
    ),
    "fehlberg2": _embedded(
        [0.0, 1 / 2, 1.0],
        [[], [1 / 2], [1 / 256, 255 / 256]],
        [1 / 512, 255 / 256, 1 / 512],
        [1 / 256, 255 / 256, 0.0],
        2,
    ),
    "adaptive_heun": _embedded([0.0, 1.0], [[], [1.0]], [1 / 2, 1 / 2], [1.0, 0.0], 2),
    "dopri8": _dopri8(),
}
assert {k: v.order for k, v in TABLEAUX.items()} == ADAPTIVE, "methods.ADAPTIVE and the tableaux disagree"


def rms_norm(e: Tensor) -> Tensor:
    """The root mean square of all entries (Hairer et al. II.4, eq. 4.11)."""
    return e.pow(2).mean().sqrt()


def per_sample_rms_norm(e: Tensor) -> Tensor:
    """The largest per-sample RMS over the batch dimension 0: every sample meets the tolerance."""
    return e.reshape(e.shape[0], -1).pow(2).mean(dim=1).sqrt().max()


def check_integrate_args(method, rtol, atol, max_nfe, dtype) -> tuple[str, float, float, int]:
    """Validate an adaptive solve's method, tolerances (in ``dtype``) and evaluation budget."""
    method = resolve_method(method)
    if method not in ADAPTIVE:
        raise ValueError(f"method must be an adaptive method, one of {tuple(ADAPTIVE)}, got {method!r}")
    rtol = check_tolerance(rtol, "rtol", dtype)
    atol = check_tolerance(atol, "atol", dtype)
    max_nfe = check_int(max_nfe, "max_nfe", minimum=1)
    return method, rtol, atol, max_nfe


def integrate(
    fn: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_nfe: int = DEFAULT_MAX_NFE,
    norm: Callable[[Tensor], Tensor] | None = None,
    first_step: float | None = None,
) -> tuple[Tensor, int]:
    """Solve ``dy/dt = fn(t, y)`` from ``t0`` to ``t1`` (either direction) adaptively; return ``(y1, nfe)``.

    Args:
        fn: the vector field; called as ``fn(t, y)`` with t a 0-d float64 tensor on y's device,
            always inside [min(t0, t1), max(t0, t1)]; returns a tensor of y's shape.
        y0: the initial state (a floating tensor, any shape).
        t0, t1: start and end times (Python numbers); the last step lands exactly on t1.
        method: an embedded pair of :data:`TABLEAUX` (``"dopri5"``, ``"dopri8"``, ``"bosh3"``,
            ``"fehlberg2"``, ``"adaptive_heun"``).
        rtol, atol: relative and absolute tolerances, in (10 eps of y0's dtype, 1).
        max_nfe: the evaluation budget; passing it raises :class:`AdaptiveSolveError`.
        norm: the error norm (default :func:`rms_norm`).
        first_step: the first step size (> 0; default: Hairer et al.'s choice, one extra evaluation).

    Raises:
        AdaptiveSolveError: past ``max_nfe`` evaluations, or a step-size underflow (naming t and nfe).
        NonFiniteError: ``fn`` returned NaN or inf at an accepted point (naming t and nfe).
    """
    check_callable(fn, "fn")
    check_tensor(y0, "y0")
    t0, t1 = check_real(t0, "t0"), check_real(t1, "t1")
    method, rtol, atol, max_nfe = check_integrate_args(method, rtol, atol, max_nfe, y0.dtype)
    if norm is not None:
        check_callable(norm, "norm")
    if first_step is not None:
        first_step = check_real(first_step, "first_step", positive=True)
    y1, nfe, _ = _integrate(fn, y0, t0, t1, TABLEAUX[method], rtol, atol, max_nfe, norm or rms_norm, first_step, method)
    return y1, nfe


def _integrate(fn, y0, t0, t1, tab, rtol, atol, max_nfe, norm, first_step, name, nfe=0, time_of=None):
    """The loop of :func:`integrate` (arguments already checked); returns ``(y1, nfe, next_step)``.

    ``nfe`` is the count so far (a solve in several pieces shares one budget); ``time_of`` maps the
    integration variable to the time that error messages name (the identity by default).
    """
    when = time_of or float
    if t0 == t1:
        return y0, nfe, first_step
    lo, hi = min(t0, t1), max(t0, t1)
    direction = 1.0 if t1 > t0 else -1.0
    count = [nfe]

    def call(t: float, y: Tensor) -> Tensor:
        if count[0] >= max_nfe:
            raise AdaptiveSolveError(
                f"the adaptive solve ({name}, rtol={rtol:g}, atol={atol:g}) stopped at t = {when(t):.6g} after "
                f"{count[0]} evaluations (max_nfe={max_nfe}), integrating from t = {when(t0):g} to t = {when(t1):g}; "
                f"raise max_nfe or the tolerances, or check that the vector field is smooth there",
                when(t),
                count[0],
            )
        count[0] += 1
        return fn(torch.tensor(min(max(t, lo), hi), dtype=torch.float64, device=y.device), y)

    t, y = t0, y0
    k0 = call(t, y)
    _check_finite(k0, when(t), count[0], name)
    span = hi - lo
    if first_step is None:
        first_step = _initial_step(call, t, y, k0, direction, tab.order, rtol, atol, norm, span)
    h = first_step
    h = min(h, span)
    failed_non_finite, rejected_before = False, False
    while direction * (t1 - t) > 0:
        last = h >= abs(t1 - t) * (1.0 - 4.0 * torch.finfo(torch.float64).eps)
        if last:
            h = abs(t1 - t)
        t_new = t1 if last else t + direction * h
        if h <= 8.0 * torch.finfo(torch.float64).eps * max(abs(t), 1.0):
            _underflow(name, when(t), count[0], failed_non_finite)
        y_new, err, k_last = _rk_step(call, t, t_new, y, k0, tab)
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        ratio = float(norm(err / scale))  # the one host synchronization per step
        failed_non_finite = not math.isfinite(ratio)
        accepted = ratio <= 1.0
        if accepted:
            t, y = t_new, y_new
            k0 = k_last if tab.fsal else call(t, y)
            _check_finite(k0, when(t), count[0], name)
        h = h * _step_factor(ratio, tab.order, accepted, rejected_before)
        rejected_before = not accepted
    return y, count[0], h


def _step_factor(ratio: float, order: int, accepted: bool, rejected_before: bool) -> float:
    """The elementary controller's step-size factor ``0.9 ratio^(-1/order)`` in [0.2, 10] (Hairer et al.
    II.4, eq. 4.13): no growth on a rejection nor on the step after one, 0.2 for NaN/inf."""
    if not math.isfinite(ratio):
        return _MIN_FACTOR
    factor = _MAX_FACTOR if ratio == 0.0 else min(_MAX_FACTOR, max(_MIN_FACTOR, _SAFETY * ratio ** (-1.0 / order)))
    if not accepted or rejected_before:
        factor = min(factor, 1.0)
    return factor


def _rk_step(call, t: float, t_new: float, y: Tensor, k0: Tensor, tab: EmbeddedTableau):
    """One embedded step from (t, y) to t_new (k0 = fn(t, y)): ``(y_new, error, last stage)``."""
    h = t_new - t
    ks = [k0]
    for j in range(1, len(tab.c)):
        yj = y
        for a, k in zip(tab.A[j], ks):
            if a != 0.0:
                yj = yj + (h * a) * k
        tj = t_new if tab.c[j] == 1.0 else t + tab.c[j] * h
        ks.append(call(tj, yj))
    y_new, err = y, torch.zeros_like(y)
    for bj, ej, k in zip(tab.b, tab.b_err, ks):
        if bj != 0.0:
            y_new = y_new + (h * bj) * k
        if ej != 0.0:
            err = err + (h * ej) * k
    if tab.fsal:  # the last stage's state is y_new itself; use it so that k_last = fn(t_new, y_new) exactly
        y_new = yj
    return y_new, err, ks[-1]


def _initial_step(call, t, y, k0, direction, order, rtol, atol, norm, span) -> float:
    """Hairer, Nørsett & Wanner's starting step size (II.4, p. 169): one evaluation inside the span."""
    scale = atol + rtol * y.abs()
    d0, d1 = float(norm(y / scale)), float(norm(k0 / scale))
    h0 = 0.01 * d0 / d1 if d0 >= 1e-5 and d1 >= 1e-5 else 1e-6
    h0 = min(h0, span)
    k1 = call(t + direction * h0, y + (direction * h0) * k0)
    d2 = float(norm((k1 - k0) / scale)) / h0
    if not math.isfinite(d2):
        return h0  # the trial point was bad; let the step control shrink from h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / order)
    return min(100.0 * h0, h1)


def _underflow(name: str, t: float, nfe: int, non_finite: bool):
    """The step size collapsed at t: NonFiniteError if the trial steps met NaN/inf, else AdaptiveSolveError."""
    if non_finite:
        raise NonFiniteError(
            f"the adaptive solve ({name}) broke down at t = {t:.6g} after {nfe} evaluations: every step past t "
            f"met NaN or inf in the vector field (the step size underflowed); check the model's output there"
        )
    raise AdaptiveSolveError(
        f"the adaptive solve ({name}) broke down at t = {t:.6g} after {nfe} evaluations: the step size "
        f"underflowed (the error estimate would not shrink); check the vector field near there",
        t,
        nfe,
    )


def _check_finite(k: Tensor, t: float, nfe: int, name: str) -> None:
    if not bool(torch.isfinite(k).all()):
        raise NonFiniteError(
            f"the adaptive solve ({name}) got NaN or inf from the vector field at t = {t:.6g} "
            f"(evaluation {nfe}); check the model's output there"
        )


# ----------------------------------------------------------------------------- the sampler
class AdaptiveODE(ODE):
    """Probability-flow ODE from T to t_min with an adaptive embedded pair (module docstring).

    The vector field is the process's own probability-flow drift (``sde.probability_flow(model)``);
    the error norm is :func:`per_sample_rms_norm`, so every sample of the batch meets
    ``rtol``/``atol`` (the step sizes are shared by the batch). Without a callback the solve
    takes the grid's two ends; with one it lands on every grid time and reports the state there.
    If sigma(t_min) = 0 the model is not evaluated there: the solve stops at a time t_b with
    sigma > 0 and takes the exact constant-eps step (DDIM, eta = 0) into t_min, with t_b chosen
    under the same tolerance (:meth:`_step_into_zero`).

    ``time_variable="log_snr"`` integrates ``dy/du = (sigma/alpha) eps`` with y = x / alpha in
    u = log(sigma/alpha) (the ODE whose Euler step is DDIM), which holds no schedule: "auto" takes it
    for ``DiscreteVPSDE``, whose drift in t jumps at each of its knots (measured at tol 1e-7:
    error 3.4e-7 in 296 NFE, against 1.7e-3 after 3776 NFE in t).

    ``check_finite`` only governs the final check of the output: a solve whose vector field turns
    NaN or inf cannot choose steps and always raises (naming t and the NFE).

    Attributes: ``method``, ``order``, ``rtol``, ``atol``, ``max_nfe``, ``options``,
    ``time_variable`` and ``last_nfe`` (evaluations of the last solve).
    """

    adaptive = True
    nfe_per_step = 0  # unknown in advance: see last_nfe
    default_grid = "uniform"

    def __init__(self, method="dopri5", rtol=None, atol=None, options=None, max_nfe=None, time_variable=None):
        method = ALIASES.get(method, method) if isinstance(method, str) else method
        if not isinstance(method, str):
            raise TypeError(f"method must be one of {tuple(ADAPTIVE)}, got {type(method).__name__}")
        if method not in TABLEAUX:
            raise ValueError(f"method must be one of {tuple(ADAPTIVE)} (adaptive), got {method!r}")
        # the dtype-dependent floor is checked at solve time, against the sample's dtype
        self.rtol = check_tolerance(1e-5 if rtol is None else rtol, "rtol", torch.float64)
        self.atol = check_tolerance(1e-5 if atol is None else atol, "atol", torch.float64)
        self.max_nfe = check_int(DEFAULT_MAX_NFE if max_nfe is None else max_nfe, "max_nfe", minimum=1)
        self.options = _check_options(options)
        self.time_variable = check_choice(
            "auto" if time_variable is None else time_variable, "time_variable", TIME_VARIABLES
        )
        self.method = method
        self.order = float(TABLEAUX[method].order)
        self.last_nfe: int | None = None

    def nfe(self, n_steps: int) -> int:
        if self.last_nfe is None:
            raise ValueError("an adaptive ODE's number of evaluations is known only after a solve (last_nfe)")
        return self.last_nfe

    def solve(
        self, sde, model, x, grid, *, generator=None, denoise=True, callback=None, progress=False, check_finite=True
    ):
        """Integrate from ``grid[0]`` to ``grid[-1]`` (adaptive steps; see the class docstring)."""
        self.check(sde)
        rtol = check_tolerance(self.rtol, "rtol", x.dtype)
        atol = check_tolerance(self.atol, "atol", x.dtype)
        flow = sde.probability_flow(model)
        bar = _progress_bar(progress, self.method)
        calls = [0]  # every network evaluation of this solve

        def velocity(t: Tensor, y: Tensor) -> Tensor:
            calls[0] += 1
            if bar is not None:
                bar.update(1)
            return flow.drift(y, t)

        def eps_at(y: Tensor, t) -> Tensor:
            calls[0] += 1
            if bar is not None:
                bar.update(1)
            t = torch.as_tensor(t, dtype=torch.float64, device=y.device)
            return flow.model.eps(y, t.expand(y.shape[0]))

        times = [float(v) for v in grid] if callback is not None else [float(grid[0]), float(grid[-1])]
        into_zero = float(sde._log_sigma(torch.tensor(times[-1], dtype=torch.float64))) == -math.inf
        args = (TABLEAUX[self.method], rtol, atol, self.max_nfe, per_sample_rms_norm)
        advance = _advance_in_log_snr if self._time_variable(sde) == "log_snr" else _advance_in_t
        h, y = self.options.get("first_step"), x
        try:
            for i in range(len(times) - 1):
                t0, t1 = times[i], times[i + 1]
                fns = (sde, velocity, eps_at, args, self.method)
                if into_zero and i == len(times) - 2:
                    y = _step_into_zero(fns, advance, y, t0, t1, h, calls)
                else:
                    y, h = advance(fns, y, t0, t1, h, calls[0])
                if callback is not None:
                    callback({"i": i, "t": t0, "t_next": t1, "x": y, "x0": None})
        finally:
            if bar is not None:
                bar.close()
            self.last_nfe = calls[0]
        if check_finite and not bool(torch.isfinite(y).all()):
            raise NonFiniteError(
                f"the adaptive solve ({self.method}) from t = {times[0]:g} to t = {times[-1]:g} produced NaN or inf "
                f"after {calls[0]} evaluations; check the model's output, or pass check_finite=False"
            )
        return y

    def _time_variable(self, sde) -> str:
        """``"auto"``: log-SNR for a discrete (DDPM) schedule, whose drift jumps at every knot in t
        but whose flow in u = log(sigma/alpha) does not depend on the schedule; t otherwise."""
        if self.time_variable != "auto":
            return self.time_variable
        from ..sde.discrete import DiscreteVPSDE

        return "log_snr" if isinstance(sde, DiscreteVPSDE) else "t"


def _advance_in_t(fns, x: Tensor, t0: float, t1: float, h, nfe: int):
    """Adaptive steps of ``dx/dt = f x - g^2/2 s`` (the process's probability-flow drift) from t0 to t1."""
    sde, velocity, _, (tab, rtol, atol, max_nfe, norm), name = fns
    x, _, h = _integrate(velocity, x, t0, t1, tab, rtol, atol, max_nfe, norm, h, name, nfe=nfe)
    return x, h


def _advance_in_log_snr(fns, x: Tensor, t0: float, t1: float, h, nfe: int):
    """Adaptive steps in u = log(sigma/alpha) = -lambda/2 of ``dy/du = (sigma/alpha) eps`` with
    y = x / alpha (Song et al. 2021, sec. 4.3; the ODE DDIM's step is exact for): no schedule in it."""
    sde, _, eps_at, (tab, rtol, atol, max_nfe, norm), name = fns
    lo, hi = min(t0, t1), max(t0, t1)

    def t_of(u: Tensor) -> Tensor:
        return sde._t_of_sigma_over_alpha(torch.exp(u)).clamp(lo, hi)  # clamp: rounding of the round trip

    def velocity(u: Tensor, y: Tensor) -> Tensor:
        t = t_of(u)
        return torch.exp(u).to(y.dtype) * eps_at(torch.exp(sde._log_alpha(t)).to(y.dtype) * y, t)

    t0_, t1_ = (torch.tensor(v, dtype=torch.float64) for v in (t0, t1))
    u0, u1 = float(torch.log(sde._sigma_over_alpha(t0_))), float(torch.log(sde._sigma_over_alpha(t1_)))
    y = torch.exp(-sde._log_alpha(t0_)).item() * x

    def time_of(u: float) -> float:
        return float(t_of(torch.tensor(u, dtype=torch.float64)))

    y, _, h = _integrate(velocity, y, u0, u1, tab, rtol, atol, max_nfe, norm, h, name, nfe=nfe, time_of=time_of)
    return torch.exp(sde._log_alpha(t1_)).item() * y, h


def _step_into_zero(fns, advance, x: Tensor, t0: float, t1: float, h, calls):
    """From t0 into t1 where sigma(t1) = 0, evaluating the model only where sigma > 0.

    With r = sigma / alpha, the DDIM step ``x_s = alpha_s (x_t - sigma_t eps_hat) / alpha_t``
    from r_b to 0 has local error ``C r_b^2``; the same step taken in two halves (through
    r_b / 2) has about half of it, so their difference estimates the two-half result's error.
    Integrate adaptively to t_b, try the two-half step, accept it when the difference meets the
    tolerance, else integrate further to a smaller r_b (shrunk by the square root of the
    error ratio, as for a first-order method) and try again.
    """
    sde, _, eps_at, (_, rtol, atol, max_nfe, norm), name = fns

    def r_of(t: float) -> float:
        return float(sde._sigma_over_alpha(torch.tensor(t, dtype=torch.float64)))

    def t_of(r: float) -> float:
        return float(sde._t_of_sigma_over_alpha(torch.tensor(r, dtype=torch.float64)))

    r_b = min(r_of(t0), math.sqrt(max(rtol, atol)))
    t_b = t0 if r_b == r_of(t0) else t_of(r_b)
    while True:
        x, h = advance(fns, x, t0, t_b, h, calls[0])
        t_m = t_of(r_b / 2.0)
        if calls[0] + 2 > max_nfe:
            raise AdaptiveSolveError(
                f"the adaptive solve ({name}) stopped at t = {t_b:.6g} after {calls[0]} evaluations "
                f"(max_nfe={max_nfe})",
                t_b,
                calls[0],
            )
        eps_b = eps_at(x, t_b)
        one, x_m = _ddim_step(sde, x, eps_b, t_b, t1), _ddim_step(sde, x, eps_b, t_b, t_m)
        two = _ddim_step(sde, x_m, eps_at(x_m, t_m), t_m, t1)
        ratio = float(norm((two - one) / (atol + rtol * torch.maximum(x.abs(), two.abs()))))
        if ratio <= 1.0:
            return two
        if not math.isfinite(ratio):
            _check_finite(eps_b, t_b, calls[0], name)
        t0, r_b = t_b, r_b * max(0.1, min(0.5, 0.9 / math.sqrt(ratio)))
        t_b = t_of(r_b)


def _ddim_step(sde, y: Tensor, eps: Tensor, t: float, s: float) -> Tensor:
    """The constant-eps step from t to s (``ddim_coefficients`` with eta = 0): ``a y + b eps``."""
    c = ddim_coefficients(sde, torch.tensor([t, s], dtype=torch.float64), 0.0)
    return float(c["a"][0]) * y + float(c["b"][0]) * eps


def _check_options(options) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
    unknown = set(options) - {"first_step"}
    if unknown:
        raise ValueError(
            f"options accepts only the key 'first_step' (the first step size), got {sorted(map(str, unknown))}"
        )
    out = dict(options)
    if "first_step" in out and out["first_step"] is not None:
        out["first_step"] = check_real(out["first_step"], "options['first_step']", positive=True)
    return out


def _progress_bar(progress: bool, method: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=f"ODE({method}) nfe", unit="nfe")
