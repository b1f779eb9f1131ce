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

The state is one tensor; the default error norm of :func:`integrate` is the RMS over all of it
(Hairer's; the likelihood's). The probability-flow sampler uses :func:`max_abs_norm` (every entry of
every sample meets the tolerance): with the RMS its error did not follow the tolerance (below).

Per-sample solves (``per_sample=True``). The state is a batch (B, *event) and every sample has
its own time, step size, error norm (its own RMS; its own maximum in the sampler) and accept/reject decision: the controller
above runs elementwise over the batch, as B independent solves that share each network call
(``fn`` receives a (B,) tensor of per-sample times; a sample whose solve is finished, or whose
step was rejected, is evaluated but its result discarded through a mask). Every quantity of
sample i is computed from sample i alone, so its result does not depend on its batch neighbours
(bitwise, for a network that computes each sample independently of the others). One host
synchronization per step reads three flags (some sample still running, a step-size underflow,
NaN/inf at an accepted point). The batch-shared solve instead takes the step size of its worst
sample at every step, and a sample's result changes with its neighbours.

References: Dormand & Prince, "A family of embedded Runge-Kutta formulae", J. Comp. Appl. Math.
6 (1980) (dopri5); Prince & Dormand, "High order embedded Runge-Kutta formulae", J. Comp. Appl.
Math. 7 (1981) (dopri8: the 13-stage 8(7) pair, coefficients read from torchdiffeq's table);
Bogacki & Shampine, Appl. Math. Lett. 2 (1989) (bosh3); Fehlberg, NASA TR R-315 (1969)
(fehlberg2, the RKF1(2) pair).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._progress import progress_bar
from .._utils import bcast
from .._validate import check_bool, check_callable, check_choice, check_int, check_real, check_tensor, check_tolerance
from .base import GeneratorLike, NonFiniteError
from .ddim import ddim_coefficients
from .methods import ADAPTIVE, ALIASES, resolve_method
from .ode import ODE
from .runge_kutta import ButcherTableau

if TYPE_CHECKING:
    from ..model import ScoreModel
    from ..sde.base import LinearSDE

__all__ = [
    "AdaptiveODE",
    "AdaptiveSolveError",
    "EmbeddedTableau",
    "TABLEAUX",
    "integrate",
    "max_abs_norm",
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


def _embedded(
    c: Sequence[float], A: Sequence[Sequence[float]], b: Sequence[float], b_hat: Sequence[float], order: int
) -> EmbeddedTableau:
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


def max_abs_norm(e: Tensor) -> Tensor:
    """The largest entry in absolute value (the maximum norm, MATLAB's ``ode45``): every entry of every
    sample meets the tolerance. The probability-flow sampler's norm."""
    return e.abs().max()


def check_integrate_args(
    method: str, rtol: float, atol: float, max_nfe: int, dtype: torch.dtype
) -> tuple[str, float, float, int]:
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
    per_sample: bool = False,
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
        per_sample: y0 is a batch (B, *event) of independent problems, each with its own steps
            (module docstring): ``fn`` is called with a (B,) float64 tensor of per-sample times,
            the error norm is each sample's RMS (``norm`` must be None), and ``nfe`` counts the
            batched calls of ``fn`` (the largest number of evaluations any one sample needed).

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
    if check_bool(per_sample, "per_sample"):
        check_tensor(y0, "y0", min_dim=1, nonempty=True)
        if norm is not None:
            raise ValueError("norm must be None with per_sample=True (each sample's error is its own RMS)")
        tab = TABLEAUX[method]
        y1, nfe, _, _ = _integrate_per_sample(fn, y0, t0, t1, tab, rtol, atol, max_nfe, first_step, method)
        return y1, nfe
    y1, nfe, _ = _integrate(fn, y0, t0, t1, TABLEAUX[method], rtol, atol, max_nfe, norm or rms_norm, first_step, method)
    return y1, nfe


def _integrate(
    fn: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t0: float,
    t1: float,
    tab: EmbeddedTableau,
    rtol: float,
    atol: float,
    max_nfe: int,
    norm: Callable[[Tensor], Tensor],
    first_step: float | None,
    name: str,
    nfe: int = 0,
    time_of: Callable[[float], float] | None = None,
) -> tuple[Tensor, int, float | None]:
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
        ratio = float(norm((err / scale).detach()))  # the one host synchronization per step
        failed_non_finite = not math.isfinite(ratio)
        accepted = ratio <= 1.0
        if accepted:
            t, y = t_new, y_new
            k0 = k_last if tab.fsal else call(t, y)
            _check_finite(k0, when(t), count[0], name)
        h = h * _step_factor(ratio, tab.order, accepted, rejected_before)
        rejected_before = not accepted
    return y, count[0], h


def _sample_rms(e: Tensor) -> Tensor:
    """Each sample's RMS over its event, shape (B,)."""
    return e.reshape(e.shape[0], -1).pow(2).mean(dim=1).sqrt()


def _sample_max(e: Tensor) -> Tensor:
    """Each sample's largest entry in absolute value over its event, shape (B,): :func:`max_abs_norm` per sample."""
    return e.reshape(e.shape[0], -1).abs().amax(dim=1)


def _per_sample_norm(norm: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The per-sample form of a batch norm: :func:`max_abs_norm` -> each sample's max, else each sample's RMS."""
    return _sample_max if norm is max_abs_norm else _sample_rms


def _per_sample_times(t: float | Tensor, B: int, device: torch.device) -> Tensor:
    """A time given as a number or a (B,) tensor, as a (B,) float64 tensor on ``device``."""
    return torch.as_tensor(t, dtype=torch.float64, device=device).expand(B).clone()


def _integrate_per_sample(
    fn: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t0: float | Tensor,
    t1: float | Tensor,
    tab: EmbeddedTableau,
    rtol: float,
    atol: float,
    max_nfe: int,
    first_step: float | Tensor | None,
    name: str,
    nfe: int = 0,
    time_of: Callable[[float], float] | None = None,
    sample_norm: Callable[[Tensor], Tensor] = _sample_rms,
) -> tuple[Tensor, int, Tensor | None, Tensor]:
    """B independent adaptive solves sharing each batched call of ``fn`` (module docstring).

    ``t0``, ``t1`` and ``first_step`` are numbers or (B,) tensors (per-sample starts, ends and
    first steps; a sample with t0 == t1 is finished from the start). ``fn(t, y)`` gets t of shape
    (B,) in float64, each entry inside its sample's [t0, t1]. Returns ``(y1, nfe, h, nfe_per_sample)``:
    the batched calls so far (``nfe`` included), each sample's next step size and its own
    evaluations (those of calls while it was running; a finished or rejected sample's are not spent).
    Controller quantities are detached: gradients flow through the accepted states only.
    """
    when = time_of or float
    B, dev = y0.shape[0], y0.device
    eps64 = torch.finfo(torch.float64).eps
    t, t1 = _per_sample_times(t0, B, dev), _per_sample_times(t1, B, dev)
    lo, hi = torch.minimum(t, t1), torch.maximum(t, t1)
    direction = torch.sign(t1 - t)
    active = direction != 0
    per = torch.zeros(B, dtype=torch.int64, device=dev)
    count = [nfe]

    def call(tt: Tensor, y: Tensor, spent: Tensor) -> Tensor:
        if count[0] >= max_nfe:
            i = int(torch.nonzero(active)[0]) if bool(active.any()) else 0
            raise AdaptiveSolveError(
                f"the adaptive solve ({name}, per sample, rtol={rtol:g}, atol={atol:g}) stopped at t = "
                f"{when(float(t[i])):.6g} after {count[0]} evaluations (max_nfe={max_nfe}) (sample {i}), integrating "
                f"to t = {when(float(t1[i])):g}; raise max_nfe or the tolerances, or check that the vector field is "
                f"smooth there",
                when(float(t[i])),
                count[0],
            )
        count[0] += 1
        per.add_(spent.to(torch.int64))
        return fn(torch.minimum(torch.maximum(tt, lo), hi), y)

    h = None if first_step is None else _per_sample_times(first_step, B, dev)
    if not bool(active.any()):
        return y0, nfe, h, per
    y = y0
    k0 = call(t, y, active)
    _check_finite_per_sample(k0, active, t, count[0], name, when)
    span = hi - lo
    if h is None:
        h = _initial_step_per_sample(call, t, y, k0, direction, tab.order, rtol, atol, span, active, sample_norm)
    h = torch.minimum(h, span)
    rejected_before = torch.zeros(B, dtype=torch.bool, device=dev)
    non_finite = torch.zeros(B, dtype=torch.bool, device=dev)
    while True:
        remaining = (t1 - t).abs()
        last = h >= remaining * (1.0 - 4.0 * eps64)
        h = torch.where(active & last, remaining, h)  # a finished sample keeps its next step size
        t_new = torch.where(last, t1, t + direction * h)
        underflow = active & (h <= 8.0 * eps64 * t.abs().clamp(min=1.0))
        underflow_non_finite = underflow & non_finite
        y_new, err, k_last = _rk_step_per_sample(call, t, t_new, y, k0, tab, active)
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        ratio = sample_norm((err / scale).detach())
        accepted = active & (ratio <= 1.0)
        t = torch.where(accepted, t_new, t)
        y = torch.where(bcast(accepted, y), y_new, y)
        k_next = k_last if tab.fsal else call(t, y, accepted)
        k0 = torch.where(bcast(accepted, y), k_next, k0)
        bad = accepted & ~torch.isfinite(k0.detach()).reshape(B, -1).all(dim=1)
        factor = _step_factors(ratio, tab.order, accepted, rejected_before)
        h = torch.where(active, h * factor, h)
        rejected_before = torch.where(active, ~accepted, rejected_before)
        non_finite = torch.where(active, ~torch.isfinite(ratio), non_finite)
        active = active & ~(accepted & last)
        running, under, broken = torch.stack((active.any(), underflow.any(), bad.any())).tolist()  # the one sync
        if under:
            i = int(torch.nonzero(underflow)[0])
            _underflow(f"{name}, per sample: sample {i}", when(float(t[i])), count[0], bool(underflow_non_finite[i]))
        if broken:
            _check_finite_per_sample(k0, bad, t, count[0], name, when)
        if not running:
            return y, count[0], h, per


def _rk_step_per_sample(
    call: Callable[[Tensor, Tensor, Tensor], Tensor],
    t: Tensor,
    t_new: Tensor,
    y: Tensor,
    k0: Tensor,
    tab: EmbeddedTableau,
    active: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_rk_step` with per-sample times and step sizes (B,): ``(y_new, error, last stage)``."""
    h = t_new - t
    ks = [k0]
    yj = y
    for j in range(1, len(tab.c)):
        yj = y
        for a, k in zip(tab.A[j], ks):
            if a != 0.0:
                yj = yj + bcast((h * a).to(y.dtype), y) * k
        tj = t_new if tab.c[j] == 1.0 else t + tab.c[j] * h
        ks.append(call(tj, yj, active))
    y_new, err = y, torch.zeros_like(y)
    for bj, ej, k in zip(tab.b, tab.b_err, ks):
        if bj != 0.0:
            y_new = y_new + bcast((h * bj).to(y.dtype), y) * k
        if ej != 0.0:
            err = err + bcast((h * ej).to(y.dtype), y) * k
    if tab.fsal:
        y_new = yj
    return y_new, err, ks[-1]


def _initial_step_per_sample(
    call: Callable[[Tensor, Tensor, Tensor], Tensor],
    t: Tensor,
    y: Tensor,
    k0: Tensor,
    direction: Tensor,
    order: int,
    rtol: float,
    atol: float,
    span: Tensor,
    active: Tensor,
    sample_norm: Callable[[Tensor], Tensor] = _sample_rms,
) -> Tensor:
    """:func:`_initial_step` for each sample (one batched evaluation), shape (B,)."""
    scale = atol + rtol * y.detach().abs()
    d0, d1 = sample_norm(y.detach() / scale), sample_norm(k0.detach() / scale)
    big = (d0 >= 1e-5) & (d1 >= 1e-5)
    h0 = torch.where(big, 0.01 * d0 / torch.where(big, d1, 1.0), 1e-6).to(torch.float64)
    h0 = torch.minimum(h0, span)
    k1 = call(t + direction * h0, y + bcast((direction * h0).to(y.dtype), y) * k0, active)
    d2 = (sample_norm((k1.detach() - k0.detach()) / scale) / h0).to(torch.float64)
    dmax = torch.maximum(d1.to(torch.float64), d2)
    tiny = dmax <= 1e-15
    h1 = torch.where(
        tiny, torch.clamp(h0 * 1e-3, min=1e-6), torch.exp(torch.log(0.01 / torch.where(tiny, 1.0, dmax)) / order)
    )
    return torch.where(torch.isfinite(d2), torch.minimum(100.0 * h0, h1), h0)


def _step_factors(ratio: Tensor, order: int, accepted: Tensor, rejected_before: Tensor) -> Tensor:
    """:func:`_step_factor` elementwise over the samples, float64 (B,)."""
    ratio = ratio.to(torch.float64)
    # ratio^(-1/order) through exp and log: torch's vectorized pow and its scalar tail loop differ in
    # the last bit (measured on CPU), which would make a sample's steps depend on its place in the batch
    factor = (_SAFETY * torch.exp(torch.log(ratio) * (-1.0 / order))).clamp(_MIN_FACTOR, _MAX_FACTOR)  # 0: 10
    factor = torch.where(accepted & ~rejected_before, factor, factor.clamp(max=1.0))
    return torch.where(torch.isfinite(ratio), factor, _MIN_FACTOR)


def _check_finite_per_sample(
    k: Tensor, among: Tensor, t: Tensor, nfe: int, name: str, when: Callable[[float], float]
) -> None:
    """NonFiniteError naming the first sample of ``among`` whose k holds NaN or inf (reads values: a sync)."""
    bad = among & ~torch.isfinite(k.detach()).reshape(k.shape[0], -1).all(dim=1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise NonFiniteError(
            f"the adaptive solve ({name}, per sample) got NaN or inf from the vector field at t = "
            f"{when(float(t[i])):.6g} for sample {i} (evaluation {nfe}); check the model's output there"
        )


def _step_factor(ratio: float, order: int, accepted: bool, rejected_before: bool) -> float:
    """The elementary controller's step-size factor ``0.9 ratio^(-1/order)`` in [0.2, 10] (Hairer et al.
    II.4, eq. 4.13): no growth on a rejection nor on the step after one, 0.2 for NaN/inf."""
    if not math.isfinite(ratio):
        return _MIN_FACTOR
    factor = _MAX_FACTOR if ratio == 0.0 else min(_MAX_FACTOR, max(_MIN_FACTOR, _SAFETY * ratio ** (-1.0 / order)))
    if not accepted or rejected_before:
        factor = min(factor, 1.0)
    return factor


def _rk_step(
    call: Callable[[float, Tensor], Tensor], t: float, t_new: float, y: Tensor, k0: Tensor, tab: EmbeddedTableau
) -> tuple[Tensor, Tensor, Tensor]:
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


def _initial_step(
    call: Callable[[float, Tensor], Tensor],
    t: float,
    y: Tensor,
    k0: Tensor,
    direction: float,
    order: int,
    rtol: float,
    atol: float,
    norm: Callable[[Tensor], Tensor],
    span: float,
) -> float:
    """Hairer, Nørsett & Wanner's starting step size (II.4, p. 169): one evaluation inside the span."""
    scale = atol + rtol * y.detach().abs()  # the step size needs no graph (grad=True solves carry one)
    d0, d1 = float(norm(y.detach() / scale)), float(norm(k0.detach() / scale))
    h0 = 0.01 * d0 / d1 if d0 >= 1e-5 and d1 >= 1e-5 else 1e-6
    h0 = min(h0, span)
    k1 = call(t + direction * h0, y + (direction * h0) * k0)
    d2 = float(norm((k1 - k0).detach() / scale)) / h0
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
    the error norm is :func:`max_abs_norm`, so every entry of every sample meets ``rtol``/``atol``. With ``per_sample=False`` the step sizes are shared by the batch (a
    sample's result then depends on its neighbours); with ``per_sample=True`` each sample has its
    own steps, accept/reject and last step (module docstring), one batched network call per stage,
    and its result is that of solving it alone. Without a callback the solve
    takes the grid's two ends; with one it lands on every grid time and reports the state there.
    If sigma(t_min) = 0 the model is not evaluated there: the solve stops at a time t_b with
    sigma > 0 and takes the exact constant-eps step (DDIM, eta = 0) into t_min, with t_b chosen
    under the same tolerance (:meth:`_step_into_zero`).

    ``time_variable="log_snr"`` integrates ``dy/du = (sigma/alpha) eps`` with y = x / alpha in
    u = log(sigma/alpha) (the ODE whose Euler step is DDIM), which holds no schedule; ``"t"`` the
    process's drift in t. "auto" (the default) takes u on every process. On ``DiscreteVPSDE`` the drift
    in t jumps at each of its knots (measured at tol 1e-7: error 3.4e-7 in 296 NFE in u, against 1.7e-3
    after 3776 NFE in t). On the smooth processes sigma ~ sqrt(t) near t = 0 and the embedded error
    estimate of the last steps in t fails (VP, tol 1e-4: estimate 0.97, actual 3.2, error 35x the
    tolerance), so in t the error did not follow the tolerance; in u with the maximum norm it is below
    4.9x the tolerance and below score_sde's RK45 at each of 13 tolerances from 1e-3 to 1e-6 on VP,
    sub-VP, VE and VDM (``tests/test_adaptive_tolerance.py``), for 1.2-2.2x its NFE.

    ``check_finite`` only governs the final check of the output: a solve whose vector field turns
    NaN or inf cannot choose steps and always raises (naming t and the NFE).

    Attributes: ``method``, ``order``, ``rtol``, ``atol``, ``max_nfe``, ``options``,
    ``time_variable``, ``per_sample``, ``last_nfe`` (batched evaluations of the last solve) and
    ``last_nfe_per_sample`` (with ``per_sample=True``: each sample's own evaluations, a (B,) tensor).
    """

    adaptive = True
    nfe_per_step = 0  # unknown in advance: see last_nfe
    default_grid = "uniform"

    def __init__(
        self,
        method: str = "dopri5",
        rtol: float | None = None,
        atol: float | None = None,
        options: dict[str, Any] | None = None,
        max_nfe: int | None = None,
        time_variable: str | None = None,
        per_sample: bool = False,
    ) -> None:
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
        self.per_sample = check_bool(per_sample, "per_sample")
        self.method = method
        self.order = float(TABLEAUX[method].order)
        self.last_nfe: int | None = None
        self.last_nfe_per_sample: Tensor | None = None

    def nfe(self, n_steps: int) -> int:
        if self.last_nfe is None:
            raise ValueError("an adaptive ODE's number of evaluations is known only after a solve (last_nfe)")
        return self.last_nfe

    def solve(
        self,
        sde: LinearSDE,
        model: ScoreModel,
        x: Tensor,
        grid: Tensor,
        *,
        generator: GeneratorLike = None,
        denoise: bool = True,
        callback: Callable[[dict], None] | None = None,
        progress: bool = False,
        check_finite: bool = True,
    ) -> Tensor:
        """Integrate from ``grid[0]`` to ``grid[-1]`` (adaptive steps; see the class docstring)."""
        self.check(sde)
        rtol = check_tolerance(self.rtol, "rtol", x.dtype)
        atol = check_tolerance(self.atol, "atol", x.dtype)
        flow = sde.probability_flow(model)
        bar = progress_bar(None, desc=f"ODE({self.method}) nfe", unit="nfe", enabled=progress)
        calls = [0]  # every network evaluation of this solve
        per = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device) if self.per_sample else None

        def velocity(t: Tensor, y: Tensor) -> Tensor:
            calls[0] += 1
            bar.update(1)
            return flow.drift(y, t)

        def eps_at(y: Tensor, t: float | Tensor) -> Tensor:
            calls[0] += 1
            bar.update(1)
            t = torch.as_tensor(t, dtype=torch.float64, device=y.device)
            return flow.model.eps(y, t.expand(y.shape[0]) if t.dim() == 0 else t)

        times = [float(v) for v in grid] if callback is not None else [float(grid[0]), float(grid[-1])]
        into_zero = float(sde._log_sigma(torch.tensor(times[-1], dtype=torch.float64))) == -math.inf
        args = (TABLEAUX[self.method], rtol, atol, self.max_nfe, max_abs_norm)
        advance = _advance_in_log_snr if self._time_variable(sde) == "log_snr" else _advance_in_t
        h, y = self.options.get("first_step"), x
        fns = _Fns(sde, velocity, eps_at, args, self.method, per)
        try:
            for i in range(len(times) - 1):
                t0, t1 = times[i], times[i + 1]
                if into_zero and i == len(times) - 2:
                    step_into_zero = _step_into_zero_per_sample if self.per_sample else _step_into_zero
                    y = step_into_zero(fns, advance, y, t0, t1, h, calls)
                else:
                    y, h = advance(fns, y, t0, t1, h, calls)
                if callback is not None:
                    callback({"i": i, "t": t0, "t_next": t1, "x": y, "x0": None})
        finally:
            bar.close()
            self.last_nfe = calls[0]
            self.last_nfe_per_sample = per
        if check_finite and not bool(torch.isfinite(y).all()):
            raise NonFiniteError(
                f"the adaptive solve ({self.method}) from t = {times[0]:g} to t = {times[-1]:g} produced NaN or inf "
                f"after {calls[0]} evaluations; check the model's output, or pass check_finite=False"
            )
        return y

    def _time_variable(self, sde: LinearSDE) -> str:
        """``"auto"``: u = log(sigma/alpha) on every process (class docstring: the flow in u holds no
        schedule, and its error follows the tolerance where the flow in t does not)."""
        return "log_snr" if self.time_variable == "auto" else self.time_variable


@dataclass
class _Fns:
    """What the pieces of one :meth:`AdaptiveODE.solve` share: the process, the vector fields, the
    integrator's arguments ``(tableau, rtol, atol, max_nfe, norm)``, the method name and (per-sample
    solves) the running per-sample evaluation count."""

    sde: Any
    velocity: Callable
    eps_at: Callable
    args: tuple
    name: str
    per: Tensor | None

    def integrate(
        self,
        fn: Callable[[Tensor, Tensor], Tensor],
        y: Tensor,
        t0: Any,
        t1: Any,
        h: Any,
        calls: list[int],
        time_of: Callable[[float], float] | None = None,
    ) -> tuple[Tensor, Any]:
        """Adaptive steps of ``fn`` from t0 to t1 (numbers, or (B,) tensors per sample); ``calls[0]``
        is the solve's running count of batched evaluations. Returns ``(y1, next step size)``."""
        tab, rtol, atol, max_nfe, norm = self.args
        if self.per is None:
            y, calls[0], h = _integrate(fn, y, t0, t1, tab, rtol, atol, max_nfe, norm, h, self.name, calls[0], time_of)
            return y, h
        y, calls[0], h, per = _integrate_per_sample(
            fn, y, t0, t1, tab, rtol, atol, max_nfe, h, self.name, calls[0], time_of, _per_sample_norm(norm)
        )
        self.per += per
        return y, h


def _advance_in_t(
    fns: _Fns, x: Tensor, t0: float | Tensor, t1: float | Tensor, h: float | Tensor | None, calls: list[int]
) -> tuple[Tensor, Any]:
    """Adaptive steps of ``dx/dt = f x - g^2/2 s`` (the process's probability-flow drift) from t0 to t1."""
    return fns.integrate(fns.velocity, x, t0, t1, h, calls)


def _advance_in_log_snr(
    fns: _Fns, x: Tensor, t0: float | Tensor, t1: float | Tensor, h: float | Tensor | None, calls: list[int]
) -> tuple[Tensor, Any]:
    """Adaptive steps in u = log(sigma/alpha) = -lambda/2 of ``dy/du = (sigma/alpha) eps`` with
    y = x / alpha (Song et al. 2021, sec. 4.3; the ODE DDIM's step is exact for): no schedule in it.
    t0, t1: numbers, or (B,) float64 tensors (per-sample solves)."""
    sde, eps_at = fns.sde, fns.eps_at
    dev = None if fns.per is None else x.device  # the shared solve's ends are host numbers
    t0_, t1_ = (torch.as_tensor(v, dtype=torch.float64, device=dev) for v in (t0, t1))
    lo, hi = torch.minimum(t0_, t1_), torch.maximum(t0_, t1_)

    u0, u1 = torch.log(sde._sigma_over_alpha(t0_)), torch.log(sde._sigma_over_alpha(t1_))
    # on the state's device, copied once per piece (not per call)
    lo_d, hi_d, t0_d, t1_d, u0_d, u1_d = torch.stack((lo, hi, t0_, t1_, u0, u1)).to(x.device).unbind(0)

    def t_of(u: Tensor) -> Tensor:  # clamp: rounding of the round trip; the ends map to t0 and t1 exactly
        t = torch.minimum(torch.maximum(sde._t_of_sigma_over_alpha(torch.exp(u)), lo_d), hi_d)
        return torch.where(u == u0_d, t0_d, torch.where(u == u1_d, t1_d, t))

    def velocity(u: Tensor, y: Tensor) -> Tensor:
        t = t_of(u)
        return bcast(torch.exp(u).to(y.dtype), y) * eps_at(bcast(torch.exp(sde._log_alpha(t)).to(y.dtype), y) * y, t)

    a0, a1 = torch.exp(-sde._log_alpha(t0_)), torch.exp(sde._log_alpha(t1_))
    if fns.per is None:  # numbers: the batch-shared solve
        u0, u1, a0, a1 = float(u0), float(u1), float(a0), float(a1)  # type: ignore[assignment]
        y = a0 * x
    else:
        y = bcast(a0.to(x.dtype), x) * x

    def time_of(u: float) -> float:
        return float(sde._t_of_sigma_over_alpha(torch.exp(torch.tensor(u, dtype=torch.float64))))

    y, h = fns.integrate(velocity, y, u0, u1, h, calls, time_of=time_of)
    return (a1 * y if fns.per is None else bcast(a1.to(y.dtype), y) * y), h


def _step_into_zero(
    fns: _Fns,
    advance: Callable[..., tuple[Tensor, Any]],
    x: Tensor,
    t0: float,
    t1: float,
    h: float | Tensor | None,
    calls: list[int],
) -> Tensor:
    """From t0 into t1 where sigma(t1) = 0, evaluating the model only where sigma > 0.

    With r = sigma / alpha, the DDIM step ``x_s = alpha_s (x_t - sigma_t eps_hat) / alpha_t``
    from r_b to 0 has local error ``C r_b^2``; the same step taken in two halves (through
    r_b / 2) has about half of it, so their difference estimates the two-half result's error.
    Integrate adaptively to t_b, try the two-half step, accept it when the difference meets the
    tolerance, else integrate further to a smaller r_b (shrunk by the square root of the
    error ratio, as for a first-order method) and try again.
    """
    sde, eps_at, (_, rtol, atol, max_nfe, norm), name = fns.sde, fns.eps_at, fns.args, fns.name

    def r_of(t: float) -> float:
        return float(sde._sigma_over_alpha(torch.tensor(t, dtype=torch.float64)))

    def t_of(r: float) -> float:
        return float(sde._t_of_sigma_over_alpha(torch.tensor(r, dtype=torch.float64)))

    r_b = min(r_of(t0), math.sqrt(max(rtol, atol)))
    t_b = t0 if r_b == r_of(t0) else t_of(r_b)
    while True:
        x, h = advance(fns, x, t0, t_b, h, calls)
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


def _step_into_zero_per_sample(
    fns: _Fns,
    advance: Callable[..., tuple[Tensor, Any]],
    x: Tensor,
    t0: float,
    t1: float,
    h: float | Tensor | None,
    calls: list[int],
) -> Tensor:
    """:func:`_step_into_zero` for each sample: its own r_b, two-half check and acceptance.

    All samples start from the same r_b; a sample whose check fails integrates on to its own
    smaller r_b while the accepted ones stay put (evaluated, their results discarded). The times
    r_b, t_b and the DDIM coefficients are computed on the host (B numbers per round, as the
    batch-shared step does for one), the states on x's device; one host read of the B ratios per round.
    """
    sde, eps_at, (_, rtol, atol, max_nfe, _), name = fns.sde, fns.eps_at, fns.args, fns.name
    assert fns.per is not None
    B, dev = x.shape[0], x.device
    r0 = float(sde._sigma_over_alpha(torch.tensor(t0, dtype=torch.float64)))
    r_b0 = min(r0, math.sqrt(max(rtol, atol)))
    t_b0 = t0 if r_b0 == r0 else float(sde._t_of_sigma_over_alpha(torch.tensor(r_b0, dtype=torch.float64)))
    r_b = torch.full((B,), r_b0, dtype=torch.float64)  # host
    t_b = torch.full((B,), t_b0, dtype=torch.float64)
    t_s = torch.full((B,), t1, dtype=torch.float64)
    start, out = torch.full((B,), t0, dtype=torch.float64), x
    pending = torch.ones(B, dtype=torch.bool)
    while True:
        t_b_dev = t_b.to(dev)
        x, h = advance(fns, x, start.to(dev), t_b_dev, h, calls)
        t_m = sde._t_of_sigma_over_alpha(r_b / 2.0)
        if calls[0] + 2 > max_nfe:
            i = int(torch.nonzero(pending)[0])
            raise AdaptiveSolveError(
                f"the adaptive solve ({name}, per sample) stopped at t = {float(t_b[i]):.6g} after {calls[0]} "
                f"evaluations (max_nfe={max_nfe}) (sample {i})",
                float(t_b[i]),
                calls[0],
            )
        eps_b = eps_at(x, t_b_dev)
        one, x_m = _ddim_step(sde, x, eps_b, t_b, t_s), _ddim_step(sde, x, eps_b, t_b, t_m)
        two = _ddim_step(sde, x_m, eps_at(x_m, t_m.to(dev)), t_m, t_s)
        fns.per += 2 * pending.to(device=dev, dtype=torch.int64)
        err = (two - one) / (atol + rtol * torch.maximum(x.abs(), two.abs()))
        ratio = _per_sample_norm(fns.args[4])(err).to(torch.float64)
        ratio = ratio.cpu()  # the one read per round
        done = pending & (ratio <= 1.0)
        out = torch.where(bcast(done.to(dev), x), two, out)
        pending = pending & ~done
        if not bool(pending.any()):
            return out
        broken = pending & ~torch.isfinite(ratio)
        if bool(broken.any()):
            _check_finite_per_sample(eps_b, broken.to(dev), t_b_dev, calls[0], name, float)
        shrink = (0.9 / ratio.sqrt()).clamp(0.1, 0.5)
        start = t_b
        r_b = torch.where(pending, r_b * shrink, r_b)
        t_b = torch.where(pending, sde._t_of_sigma_over_alpha(r_b), t_b)


def _ddim_step(sde: LinearSDE, y: Tensor, eps: Tensor, t: float | Tensor, s: float | Tensor) -> Tensor:
    """The constant-eps step from t to s (``ddim_coefficients`` with eta = 0): ``a y + b eps``.

    t, s: numbers, or (B,) float64 host tensors (one step per sample: the grid interleaves the
    pairs, ``[t_0, s_0, t_1, s_1, ...]``, and every other interval is taken)."""
    if not isinstance(t, Tensor):
        c = ddim_coefficients(sde, torch.tensor([t, s], dtype=torch.float64), 0.0)
        return float(c["a"][0]) * y + float(c["b"][0]) * eps
    c = ddim_coefficients(sde, torch.stack((t, s), dim=1).reshape(-1), 0.0)  # type: ignore[arg-type]
    a, b = (c[k][0::2].to(device=y.device, dtype=y.dtype) for k in ("a", "b"))
    return bcast(a, y) * y + bcast(b, y) * eps


def _check_options(options: Any) -> dict:
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
