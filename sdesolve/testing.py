"""Property-testing tools for linear forward SDEs: hypothesis strategies and :func:`check_sde`.

A linear forward SDE ``dx = f(t) x dt + g(t) dW`` is fully determined by its marginal
coefficients ``alpha(t)`` and ``sigma(t)`` (``x_t | x_0 ~ N(alpha x_0, sigma^2 I)``):

* ``f(t) = d log alpha / dt``,
* ``g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2`` (the moment ODE of the variance),
* ``log_snr(t) = log(alpha^2 / sigma^2)``, strictly decreasing,

(Song et al. 2021, "Score-based generative modeling through stochastic differential
equations", App. B, which takes the mean and variance ODEs of a linear SDE from Särkkä &
Solin 2019, "Applied stochastic differential equations"). :func:`check_sde` checks these identities on the
*public* methods of a process, so a subclass whose override breaks one of them is caught::

    from sdesolve.testing import check_sde
    report = check_sde(MySDE())          # raises SDECheckError naming the invariant
    print(report.kl_worst)               # KL(q_T || prior) per dimension, |x0| = 1

The strategies (:func:`sdes`, :func:`vp_sdes`, ..., :func:`times`) draw built-in processes
with random valid parameters for users' own hypothesis tests::

    from hypothesis import given
    from sdesolve.testing import sdes, times

    @given(sdes().flatmap(lambda s: times(s).map(lambda t: (s, t))))
    def test_my_solver(st):
        sde, t = st
        ...

hypothesis is only needed for the strategies; :func:`check_sde` works without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._validate import check_int, check_real
from .sde.base import LinearSDE
from .sde.discrete import DiscreteVPSDE, ddpm_betas

if TYPE_CHECKING:  # hypothesis is optional at run time
    from hypothesis.strategies import SearchStrategy
from .sde.vdm import VDMSDE, FixedLinearGamma
from .sde.ve import VESDE
from .sde.vp import VPSDE, CosineVPSDE, SubVPSDE

__all__ = [
    "SDECheckError",
    "SDECheckReport",
    "CHECKS",
    "check_sde",
    "sdes",
    "vp_sdes",
    "subvp_sdes",
    "cosine_vp_sdes",
    "ve_sdes",
    "vdm_sdes",
    "discrete_vp_sdes",
    "times",
]


# ============================================================================ check_sde
class SDECheckError(AssertionError):
    """A linear SDE violates one of the invariants checked by :func:`check_sde`.

    Attributes:
        invariant: the short name of the violated invariant, one of ``"time range"``,
            ``"positivity"``, ``"log-SNR definition"``, ``"log-SNR decreasing"``,
            ``"drift coefficient"``, ``"moment ODE"``, ``"dtype and shape"``, ``"diffusion"``,
            ``"drift"``, ``"perturb"``, ``"t_of_log_snr inverse"``, ``"prior"``, ``"prior logp"``,
            ``"prior sample"``, ``"variance preserving"``, ``"prior close to marginal"``.

    The message reads ``invariant '<name>' violated: <what>: at t=<time>: <values> (error > tol)``.
    """

    def __init__(self, invariant: str, message: str):
        super().__init__(f"invariant '{invariant}' violated: {message}")
        self.invariant = invariant


@dataclass
class SDECheckReport:
    """What :func:`check_sde` measured (all errors are maxima over the checked times).

    Attributes:
        sde: ``repr`` of the checked process.
        n_times: number of times checked in ``[t_min, T]``.
        derivative: how d alpha/dt and d sigma^2/dt were taken (``autograd`` or ``finite-difference``
            each; a coefficient with no autograd graph, e.g. a constant alpha, uses finite differences).
        f_err: max relative error of ``f`` against ``d log alpha / dt``.
        moment_err: max relative residual of ``d sigma^2/dt = 2 f sigma^2 + g^2``.
        log_snr_err: max ``|log_snr - log(alpha^2/sigma^2)| / max(1, |log_snr|)``.
        inverse_err: max ``|t_of_log_snr(log_snr(t)) - t| / T``.
        drift_err: max relative error of ``drift(x, t)`` against ``f(t) x``.
        diffusion_err: max relative error of ``diffusion(t)^2`` against ``g2(t)``.
        prior_logp_err: max relative error of ``prior_logp`` against the Gaussian log-density.
        vp_err: max ``|alpha^2 + sigma^2 - 1|`` (None unless the process claims variance preservation).
        kl_gaussian: ``KL(q_T || prior)`` per dimension for data ``x0 ~ N(0, 1)``.
        kl_worst: ``KL(q_T(. | x0) || prior)`` per dimension for a data point with ``|x0| = 1``;
            by joint convexity of KL it bounds ``KL(q_T || prior)`` per dimension for *every* data
            law supported in ``[-1, 1]^d``. This is the number compared with ``kl_bound``.
        kl_bound: the bound it was checked against.
    """

    sde: str
    n_times: int
    derivative: str
    f_err: float
    moment_err: float
    log_snr_err: float
    inverse_err: float
    drift_err: float
    diffusion_err: float
    prior_logp_err: float
    vp_err: float | None
    kl_gaussian: float
    kl_worst: float
    kl_bound: float
    alpha_T: float = field(default=float("nan"))
    sigma_T: float = field(default=float("nan"))


def _rel_err(a: Tensor, b: Tensor, floor: float = 0.0) -> Tensor:
    """|a - b| / max(|a|, |b|, floor), elementwise (0 where a == b)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    diff = (a - b).abs()
    scale = torch.maximum(torch.maximum(a.abs(), b.abs()), torch.full_like(diff, floor))
    return torch.where(diff == 0, torch.zeros_like(diff), diff / scale.clamp_min(1e-300))


def _fail_at(invariant: str, name: str, err: Tensor, tol: float, t: Tensor, **values: Tensor) -> None:
    """Raise SDECheckError at the worst time if ``err`` exceeds ``tol`` anywhere (or is NaN)."""
    bad = ~(err <= tol)
    if not bool(bad.any()):
        return
    errs = torch.where(torch.isnan(err), torch.full_like(err, math.inf), err)
    i = int(torch.argmax(errs))
    vals = ", ".join(f"{k}={float(v.reshape(-1)[i]):.10g}" for k, v in values.items())
    raise SDECheckError(
        invariant,
        f"{name}: at t={float(t.reshape(-1)[i]):.10g}: {vals} (error {float(err.reshape(-1)[i]):.3g} > tol {tol:.3g})",
    )


def _fd(fn: Callable[[Tensor], Tensor], t: Tensor, h: float) -> Tensor:
    """Five-point central difference of an elementwise function (error O(h^4))."""
    pts = torch.cat([t - 2 * h, t - h, t + h, t + 2 * h])
    y = fn(pts).detach().to(torch.float64).reshape(4, -1)
    return (y[0] - 8 * y[1] + 8 * y[2] - y[3]) / (12 * h)


def _autograd(fn: Callable[[Tensor], Any], t: Tensor) -> Tensor | None:
    """d fn / dt by autograd through ``fn``, or None when fn is not differentiable in t."""
    try:
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            y = fn(tt)
            if not isinstance(y, Tensor) or not y.requires_grad:
                return None
            (d,) = torch.autograd.grad(y.to(torch.float64).sum(), tt, allow_unused=True)
    except RuntimeError:
        return None
    return None if d is None else d.detach()


def _check_times(sde: LinearSDE, n_times: int) -> Tensor:
    T, t_min = float(sde.T), float(sde.t_min)
    if not (math.isfinite(T) and math.isfinite(t_min) and 0.0 <= t_min < T):
        raise SDECheckError("time range", f"need 0 <= t_min < T, got t_min={t_min}, T={T}")
    lin = torch.linspace(t_min, T, n_times, dtype=torch.float64)
    # also log-spaced times near t_min, where many schedules are stiff
    geo = t_min + (T - t_min) * torch.logspace(-4, 0, max(n_times // 4, 2), dtype=torch.float64)
    return torch.unique(torch.cat([lin, geo]).clamp(t_min, T))


def _kl_gauss(m: float, v: float, s2: float) -> float:
    """KL(N(m, v) || N(0, s2)), one dimension."""
    return 0.5 * (v / s2 + m * m / s2 - 1.0 - math.log(v / s2))


@dataclass
class _Run:
    """What the numbered checks share: the process, the times, and values computed by earlier checks."""

    sde: LinearSDE
    t: Tensor
    rtol: float
    kl_bound: float
    gen: torch.Generator
    report: dict = field(default_factory=dict)
    alpha: Tensor | None = None
    sigma: Tensor | None = None
    lam: Tensor | None = None
    td: Tensor | None = None  # the times of the derivative checks (all of t under autograd)
    dalpha: Tensor | None = None
    dvar: Tensor | None = None

    @property
    def T(self) -> float:
        return float(self.sde.T)


def _check_clean_start(run: _Run) -> None:
    """Where t_min = 0 and sigma(0) = 0 (the process reaches the clean data, diffusers' ``set_alpha_to_one``):
    alpha(0) is positive and finite, log_snr(0) = +inf, f(0) and g2(0) are finite and
    t_of_log_snr(+inf) = 0. Time 0 then leaves the other checks, which divide by sigma."""
    f64, sde, t = torch.float64, run.sde, run.t
    zero = t[:1]
    if float(t[0]) != 0.0 or float(sde.sigma(zero)[0]) != 0.0:
        return
    values = {name: getattr(sde, name)(zero).to(f64) for name in ("alpha", "log_snr", "f", "g2")}
    t_back = sde.t_of_log_snr(torch.full((1,), math.inf, dtype=f64)).to(f64)
    ok = (
        bool(torch.isfinite(values["alpha"]).all() and (values["alpha"] > 0).all())
        and bool((values["log_snr"] == math.inf).all())
        and bool(torch.isfinite(values["f"]).all() and torch.isfinite(values["g2"]).all())
        and bool((t_back.abs() <= run.rtol * run.T).all())
    )
    if not ok:
        vals = ", ".join(f"{k}={float(v[0]):.10g}" for k, v in values.items())
        raise SDECheckError(
            "positivity",
            f"sigma(0) = 0 needs alpha(0) > 0, log_snr(0) = +inf, finite f(0) and g2(0), and "
            f"t_of_log_snr(+inf) = 0: at t=0: {vals}, t_of_log_snr(inf)={float(t_back[0]):.10g}",
        )
    run.t = t[1:]


def _check_positivity(run: _Run) -> None:
    """1. alpha and sigma positive and finite, log_snr finite (sigma(0) = 0 allowed where t_min = 0)."""
    _check_clean_start(run)
    f64, sde, t = torch.float64, run.sde, run.t
    run.alpha, run.sigma, run.lam = sde.alpha(t).to(f64), sde.sigma(t).to(f64), sde.log_snr(t).to(f64)
    for name, v in (("alpha", run.alpha), ("sigma", run.sigma)):
        ok = torch.isfinite(v) & (v > 0)
        _fail_at("positivity", f"{name}(t) must be positive and finite", (~ok).to(f64), 0.0, t, **{name: v})
    _fail_at("positivity", "log_snr(t) must be finite", (~torch.isfinite(run.lam)).to(f64), 0.0, t, log_snr=run.lam)


def _check_log_snr_definition(run: _Run) -> None:
    """2. log_snr = log(alpha^2 / sigma^2)."""
    assert run.alpha is not None and run.sigma is not None and run.lam is not None  # set by check 1
    lam_ref = 2.0 * (torch.log(run.alpha) - torch.log(run.sigma))
    lam_err = (run.lam - lam_ref).abs() / torch.clamp(lam_ref.abs(), min=1.0)
    _fail_at(
        "log-SNR definition",
        "log_snr(t) != log(alpha^2/sigma^2)",
        lam_err,
        run.rtol,
        run.t,
        log_snr=run.lam,
        expected=lam_ref,
    )
    run.report["log_snr_err"] = float(lam_err.max())


def _check_log_snr_decreasing(run: _Run) -> None:
    """3. log_snr strictly decreasing from each time to the next."""
    lam, t = run.lam, run.t
    assert lam is not None  # set by check 1
    _fail_at(
        "log-SNR decreasing",
        "log_snr must be strictly decreasing; log_snr(t_next) - log_snr(t) >= 0",
        (~(lam[1:] - lam[:-1] < 0)).to(torch.float64),
        0.0,
        t[:-1],
        log_snr=lam[:-1],
        log_snr_next=lam[1:],
        t_next=t[1:],
    )


def _derivatives(run: _Run) -> None:
    """d alpha/dt and d sigma^2/dt by autograd through the public methods, else by finite differences."""
    f64, sde, t = torch.float64, run.sde, run.t

    def var(s: Tensor) -> Tensor:
        return sde.sigma(s).to(f64) ** 2

    def alpha_fn(s: Tensor) -> Tensor:
        return sde.alpha(s).to(f64)

    da, dvar = _autograd(alpha_fn, t), _autograd(var, t)
    da_auto, dvar_auto = da is not None, dvar is not None
    td = t
    if da is None or dvar is None:
        h = 1e-4 * run.T
        keep = (t >= 2 * h) & (t <= run.T - 2 * h)
        td = t[keep]
        da = _fd(alpha_fn, td, h) if da is None else da[keep]
        dvar = _fd(var, td, h) if dvar is None else dvar[keep]
    run.td, run.dalpha, run.dvar = td, da, dvar
    run.report["derivative"] = ", ".join(
        f"{name}: {'autograd' if auto else 'finite-difference'}"
        for name, auto in (("alpha", da_auto), ("sigma^2", dvar_auto))
    )


def _check_drift_coefficient(run: _Run) -> None:
    """4. f = d log alpha / dt."""
    _derivatives(run)
    td = run.td
    assert td is not None and run.dalpha is not None  # set by _derivatives
    f_pub = run.sde.f(td).to(torch.float64)
    f_ref = run.dalpha / run.sde.alpha(td).to(torch.float64)
    f_err = _rel_err(f_pub, f_ref, floor=1e-9 * float(f_ref.abs().max()))
    _fail_at("drift coefficient", "f(t) != d log alpha/dt", f_err, run.rtol, td, f=f_pub, dlogalpha_dt=f_ref)
    run.report["f_err"] = float(f_err.max())


def _check_moment_ode(run: _Run) -> None:
    """5. d sigma^2/dt = 2 f sigma^2 + g^2, and g^2 >= 0."""
    f64, sde, td, dvar = torch.float64, run.sde, run.td, run.dvar
    assert td is not None and dvar is not None  # set by _derivatives (check 4)
    v_d = sde.sigma(td).to(f64) ** 2
    f_pub, g2_pub = sde.f(td).to(f64), sde.g2(td).to(f64)
    rhs = 2.0 * f_pub * v_d + g2_pub
    scale = dvar.abs() + (2.0 * f_pub * v_d).abs() + g2_pub.abs()
    # NaN where scale is NaN: torch.where(scale > 0, ...) would turn a NaN g2 into an error of 0
    moment_err = torch.where(scale == 0, torch.zeros_like(scale), (dvar - rhs).abs() / scale.clamp_min(1e-300))
    _fail_at(
        "moment ODE",
        "d sigma^2/dt != 2 f sigma^2 + g^2",
        moment_err,
        run.rtol,
        td,
        dsigma2_dt=dvar,
        two_f_sigma2_plus_g2=rhs,
        f=f_pub,
        g2=g2_pub,
    )
    _fail_at("moment ODE", "g2(t) must be non-negative", (g2_pub < 0).to(f64), 0.0, td, g2=g2_pub)
    run.report["moment_err"] = float(moment_err.max())


def _check_drift_and_diffusion(run: _Run) -> None:
    """6. coefficient dtypes and shapes; diffusion^2 = g2; drift(x, t) = f(t) x; perturb."""
    _check_coefficient_types(run.sde, run.t)
    run.report["diffusion_err"] = _check_diffusion(run.sde, run.t, run.rtol)
    run.report["drift_err"] = _check_drift(run.sde, run.t, run.rtol, run.gen)
    _check_perturb(run.sde, run.t, run.rtol, run.gen)


def _check_inverse(run: _Run) -> None:
    """7. t_of_log_snr(log_snr(t)) = t."""
    assert run.lam is not None  # set by check 1
    t_back = run.sde.t_of_log_snr(run.lam).to(torch.float64)
    inv_err = (t_back - run.t).abs() / run.T
    _fail_at(
        "t_of_log_snr inverse",
        "t_of_log_snr(log_snr(t)) != t",
        inv_err,
        run.rtol,
        run.t,
        log_snr=run.lam,
        t_of_log_snr=t_back,
    )
    run.report["inverse_err"] = float(inv_err.max())


def _check_prior_law(run: _Run) -> None:
    """8. prior_logp is the N(0, prior_std^2 I) log-density; prior_sample draws from it."""
    run.report["prior_logp_err"] = _check_prior(run.sde, run.rtol, run.gen)


def _check_variance_preserving(run: _Run) -> None:
    """9. alpha^2 + sigma^2 = 1 where the process claims it."""
    run.report["vp_err"] = None
    if not getattr(run.sde, "variance_preserving", False):
        return
    assert run.alpha is not None and run.sigma is not None  # set by check 1
    resid = (run.alpha * run.alpha + run.sigma * run.sigma - 1.0).abs()
    run.report["vp_err"] = float(resid.max())
    _fail_at(
        "variance preserving",
        "sde.variance_preserving is True but alpha^2 + sigma^2 != 1",
        resid,
        run.rtol,
        run.t,
        alpha=run.alpha,
        sigma=run.sigma,
    )


def _check_prior_close_to_marginal(run: _Run) -> None:
    """10. KL(q_T(. | x0) || prior) per dimension, |x0| = 1, at most kl_bound."""
    T, sde = run.T, run.sde
    a_T, s_T = float(sde.alpha(T)), float(sde.sigma(T))
    p2 = float(sde.prior_std) ** 2
    kl_worst = _kl_gauss(a_T, s_T * s_T, p2)
    kl_gaussian = _kl_gauss(0.0, a_T * a_T + s_T * s_T, p2)
    if not (kl_worst <= run.kl_bound):
        raise SDECheckError(
            "prior close to marginal",
            f"at t=T={T:.10g}: KL(q_T(.|x0) || N(0, prior_std^2)) = {kl_worst:.4g} nats per dimension for "
            f"|x0| = 1 exceeds kl_bound={run.kl_bound:g} (alpha_T={a_T:.6g}, sigma_T={s_T:.6g}, "
            f"prior_std={math.sqrt(p2):.6g}; for x0 ~ N(0, 1) the KL is {kl_gaussian:.4g})",
        )
    run.report.update(kl_worst=kl_worst, kl_gaussian=kl_gaussian, alpha_T=a_T, sigma_T=s_T)


#: check_sde's numbered checks, run in this order (each may rely on values an earlier one stored).
CHECKS = (
    ("positivity", _check_positivity),
    ("log-SNR definition", _check_log_snr_definition),
    ("log-SNR decreasing", _check_log_snr_decreasing),
    ("drift coefficient", _check_drift_coefficient),
    ("moment ODE", _check_moment_ode),
    ("drift and diffusion", _check_drift_and_diffusion),
    ("t_of_log_snr inverse", _check_inverse),
    ("prior", _check_prior_law),
    ("variance preserving", _check_variance_preserving),
    ("prior close to marginal", _check_prior_close_to_marginal),
)


def _check_arguments(kl_bound: object, n_times: object, rtol: object, seed: object) -> tuple[float, int, float, int]:
    kl_bound = check_real(kl_bound, "kl_bound", finite=False)
    if not (kl_bound > 0 and math.isfinite(kl_bound)):
        raise ValueError(f"kl_bound must be a positive number, got {kl_bound}")
    n_times = check_int(n_times, "n_times")
    if n_times < 3:
        raise ValueError(f"n_times must be >= 3, got {n_times}")
    rtol = check_real(rtol, "rtol", finite=False)
    if not (0 < rtol < 1):
        raise ValueError(f"rtol must lie in (0, 1), got {rtol}")
    return kl_bound, n_times, rtol, check_int(seed, "seed")


def check_sde(
    sde: LinearSDE,
    *,
    kl_bound: float = 1e-2,
    n_times: int = 129,
    rtol: float = 1e-6,
    seed: int = 0,
) -> SDECheckReport:
    """Check that a linear forward SDE's public methods are mutually consistent.

    Run it on your own :class:`~sdesolve.sde.LinearSDE` subclass. It evaluates the *public*
    methods (``alpha``, ``sigma``, ``log_snr``, ``t_of_log_snr``, ``f``, ``g2``, ``drift``,
    ``diffusion``, ``prior_logp``, ``prior_sample``) on ``n_times`` evenly spaced times of
    ``[t_min, T]`` plus log-spaced times near ``t_min``, and checks, in this order:

    1. **positivity**: ``alpha`` and ``sigma`` are positive and finite, ``log_snr`` finite; where
       ``t_min = 0`` and ``sigma(0) = 0`` (a process that reaches the clean data), t = 0 is checked
       apart: ``alpha(0) > 0``, ``log_snr(0) = +inf``, finite ``f(0)``, ``g2(0)``, and
       ``t_of_log_snr(+inf) = 0``; the later checks then start after 0;
    2. **log-SNR definition**: ``log_snr = log(alpha^2 / sigma^2)``;
    3. **log-SNR decreasing**: strictly, from each time to the next;
    4. **drift coefficient**: ``f = d log alpha / dt``;
    5. **moment ODE**: ``d sigma^2 / dt = 2 f sigma^2 + g^2`` (with ``g2``);
    6. **drift** ``(x, t) = f(t) x`` and **diffusion** ``(t)^2 = g2(t)``, for x of ranks 1, 2, 4, 5
       with a scalar time and a per-sample time of shape (B,), and output shapes and dtypes;
       **perturb** ``(x0, t, noise) = alpha(t) x0 + sigma(t) noise``;
    7. **t_of_log_snr inverts log_snr**: ``|t_of_log_snr(log_snr(t)) - t| <= rtol * T``;
    8. **prior_logp** is the log-density of ``N(0, prior_std^2 I)`` summed over event dims, and
       **prior_sample** draws have that mean and std (within 6 standard errors of 2^16 draws);
    9. **variance preserving** (where ``sde.variance_preserving``): ``alpha^2 + sigma^2 = 1``;
    10. **prior close to the marginal at T**: with ``q_T(. | x0) = N(alpha_T x0, sigma_T^2)``
        and the prior ``p = N(0, s^2)`` per dimension (``s = prior_std``),
        ``KL(q_T(. | x0) || p) = 1/2 [(sigma_T^2 + alpha_T^2 x0^2)/s^2 - 1 - log(sigma_T^2/s^2)]``.
        ``kl_worst`` takes ``|x0| = 1``. It increases with ``x0^2``, so by joint convexity of KL,
        ``KL(q_T || prior) <= d * kl_worst`` for the marginal ``q_T`` of *every* data law on
        ``[-1, 1]^d`` (unit-scale data, e.g. images); it must not exceed ``kl_bound``. ``kl_gaussian`` (data ``x0 ~ N(0, 1)``, marginal
        ``N(0, alpha_T^2 + sigma_T^2)``) is reported as well; it is never larger.

    The derivatives in 4 and 5 are taken by autograd through the public ``alpha`` and
    ``sigma`` (exact); where these are not differentiable in t (no graph, e.g. numpy inside),
    by a five-point central difference (on times at least 2h from the ends, h = 1e-4 T).

    Args:
        sde: the process (an instance of :class:`~sdesolve.sde.LinearSDE` or a duck-typed one).
        kl_bound: the largest acceptable ``kl_worst`` (nats per dimension).
        n_times: number of evenly spaced times checked.
        rtol: relative tolerance of every identity (they are exact in float64, so the
            default 1e-6 leaves room for rounding only; loosen it for float32 schedules).
        seed: seed of the random test points and prior draws.

    Returns:
        an :class:`SDECheckReport` with the measured maxima and the KL.

    Raises:
        SDECheckError: (an ``AssertionError``) whose message names the invariant, the time
            and the offending values.
    """
    kl_bound, n_times, rtol, seed = _check_arguments(kl_bound, n_times, rtol, seed)
    if isinstance(sde, type) or not callable(getattr(sde, "alpha", None)) or not hasattr(sde, "T"):
        got = f"the class {sde.__name__} (instantiate it)" if isinstance(sde, type) else type(sde).__name__
        raise TypeError(f"sde must be a LinearSDE instance (or have its methods), got {got}")
    t = _check_times(sde, n_times)
    run = _Run(sde=sde, t=t, rtol=rtol, kl_bound=kl_bound, gen=torch.Generator().manual_seed(seed))
    for _, check in CHECKS:
        check(run)
    return SDECheckReport(sde=repr(sde), n_times=int(t.numel()), kl_bound=float(kl_bound), **run.report)


_COEFS = ("alpha", "sigma", "log_snr", "f", "g2", "diffusion")


def _check_coefficient_types(sde: LinearSDE, t: Tensor) -> None:
    """The coefficient methods return t's dtype (float64 for a float) and t's shape."""
    f64 = torch.float64
    for name in _COEFS:
        fn = getattr(sde, name)
        for arg, dtype, shape in (
            (float(t[1]), f64, ()),
            (t[1].to(torch.float32), torch.float32, ()),
            (t[:5].to(torch.float32), torch.float32, (min(5, t.numel()),)),
        ):
            out = fn(arg)
            if not isinstance(out, Tensor) or out.dtype != dtype or tuple(out.shape) != shape:
                got = (
                    f"{type(out).__name__} of dtype {out.dtype}, shape {tuple(out.shape)}"
                    if isinstance(out, Tensor)
                    else type(out).__name__
                )
                raise SDECheckError(
                    "dtype and shape",
                    f"{name}(t) for t={arg!r} must return a tensor of dtype {dtype} and shape {shape}, got {got}",
                )


def _check_diffusion(sde: LinearSDE, t: Tensor, rtol: float) -> float:
    """diffusion(t)^2 == g2(t)."""
    f64 = torch.float64
    g2, g = sde.g2(t).to(f64), sde.diffusion(t).to(f64)
    diffusion_err = _rel_err(g * g, g2, floor=1e-9 * float(g2.abs().max()))
    _fail_at("diffusion", "diffusion(t)^2 != g2(t)", diffusion_err, rtol, t, diffusion_squared=g * g, g2=g2)
    return float(diffusion_err.max())


def _check_drift(sde: LinearSDE, t: Tensor, rtol: float, gen: torch.Generator) -> float:
    """drift(x, t) == f(t) x, for scalar and per-sample t and x of ranks 1, 2, 4, 5."""
    f64 = torch.float64
    f_all = sde.f(t).to(f64)
    fscale = 1e-9 * float(f_all.abs().max())
    B = min(8, t.numel())
    idx = torch.randperm(t.numel(), generator=gen)[:B]
    tb, fb = t[idx], f_all[idx]
    worst = torch.zeros((), dtype=f64)
    for event in ((), (3,), (2, 3, 2), (2, 2, 2, 3)):
        x = torch.randn((B,) + event, generator=gen, dtype=f64)
        bc = (B,) + (1,) * len(event)
        cases: list[tuple[Tensor | float, Tensor, str]] = [(tb, fb.reshape(bc), "per-sample t of shape (B,)")]
        cases.append((float(tb[0]), fb[0], "a Python float t"))
        cases.append((tb[0].clone(), fb[0], "a 0-d tensor t"))
        for targ, fcoef, what in cases:
            d = sde.drift(x, targ)
            if not isinstance(d, Tensor) or d.shape != x.shape:
                shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
                raise SDECheckError(
                    "drift", f"drift(x, t) for x of shape {tuple(x.shape)} and {what} returned shape {shape}"
                )
            ref = fcoef * x
            err = _rel_err(d.to(f64), ref, floor=fscale * float(x.abs().max())).reshape(B, -1).amax(1)
            worst = torch.maximum(worst, err.max())
            tt = tb if what.startswith("per-sample") else torch.full((B,), float(tb[0]), dtype=f64)
            _fail_at(
                "drift",
                f"drift(x, t) != f(t) x for x of shape {tuple(x.shape)} and {what}",
                err,
                rtol,
                tt,
                f=fcoef.reshape(-1).expand(B),
                drift_over_x=(d.to(f64) / x).reshape(B, -1)[:, 0],
            )
    return float(worst)


def _check_perturb(sde: LinearSDE, t: Tensor, rtol: float, gen: torch.Generator) -> None:
    """perturb(x0, t, noise) == alpha(t) x0 + sigma(t) noise (the forward marginal every loss uses)."""
    f64 = torch.float64
    B = min(8, t.numel())
    tb = t[torch.randperm(t.numel(), generator=gen)[:B]]
    x0 = torch.randn((B, 3, 2), generator=gen, dtype=f64)
    noise = torch.randn((B, 3, 2), generator=gen, dtype=f64)
    a, s = sde.alpha(tb).to(f64).reshape(B, 1, 1), sde.sigma(tb).to(f64).reshape(B, 1, 1)
    ref = a * x0 + s * noise
    xt = sde.perturb(x0, tb, noise)
    if not isinstance(xt, Tensor) or xt.shape != x0.shape:
        raise SDECheckError(
            "perturb", f"perturb(x0, t, noise) for x0 of shape {tuple(x0.shape)} returned a wrong shape"
        )
    scale = (a * x0).abs() + (s * noise).abs()
    err = ((xt.to(f64) - ref).abs() / scale.clamp_min(1e-300)).reshape(B, -1).amax(1)
    _fail_at(
        "perturb",
        "perturb(x0, t, noise) != alpha(t) x0 + sigma(t) noise",
        err,
        rtol,
        tb,
        perturbed=xt.to(f64).reshape(B, -1)[:, 0],
        expected=ref.reshape(B, -1)[:, 0],
    )


def _check_prior(sde: LinearSDE, rtol: float, gen: torch.Generator) -> float:
    f64 = torch.float64
    s = float(sde.prior_std)
    if not (math.isfinite(s) and s > 0):  # NaN fails
        raise SDECheckError("prior", f"prior_std must be positive and finite, got {s}")
    z = s * torch.randn((6, 3, 2), generator=gen, dtype=f64) * 1.5
    lp = sde.prior_logp(z)
    if not isinstance(lp, Tensor) or tuple(lp.shape) != (6,):
        shape = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
        raise SDECheckError("prior", f"prior_logp(z) for z of shape (6, 3, 2) must have shape (6,), got {shape}")
    ref = (
        torch.distributions.Normal(torch.tensor(0.0, dtype=f64), torch.tensor(s, dtype=f64))
        .log_prob(z)
        .reshape(6, -1)
        .sum(1)
    )
    err = _rel_err(lp.to(f64), ref)
    _fail_at(
        "prior logp",
        f"prior_logp(z) != log N(z; 0, prior_std^2 I) with prior_std={s:g}",
        err,
        rtol,
        torch.full((6,), float(sde.T), dtype=f64),
        prior_logp=lp,
        expected=ref,
    )
    # prior_sample: shape, dtype, and mean / std within 6 standard errors of n = 2^16 draws
    x = sde.prior_sample((4096, 4, 4), generator=gen, dtype=f64)
    if not isinstance(x, Tensor) or tuple(x.shape) != (4096, 4, 4) or x.dtype != f64:
        raise SDECheckError("prior sample", "prior_sample((4096, 4, 4), dtype=float64) returned the wrong shape/dtype")
    n = x.numel()
    m, sd = float(x.mean()), float(x.std())
    if not (abs(m) <= 6 * s / math.sqrt(n) and abs(sd / s - 1) <= 6 / math.sqrt(2 * n)):  # NaN fails
        raise SDECheckError(
            "prior sample",
            f"prior_sample draws have mean {m:.4g} and std {sd:.4g}, expected 0 and prior_std={s:g} "
            f"(6 standard errors of {n} draws: {6 * s / math.sqrt(n):.2g}, {6 * s / math.sqrt(2 * n):.2g})",
        )
    return float(err.max())


# ============================================================================ strategies
def _st():
    try:
        from hypothesis import strategies as st
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the sdesolve.testing strategies need hypothesis: pip install hypothesis") from e
    return st


def _log_uniform(lo: float, hi: float):
    st = _st()
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


def _t_mins(lo: float, hi: float):
    return _log_uniform(lo, hi)


def vp_sdes(t_min: float | None = None) -> SearchStrategy[LinearSDE]:
    """VPSDE with beta_min in [0.01, 1], beta_max in [10, 30] (so the prior is reached: KL < 1e-4)."""
    st = _st()
    tm = st.just(t_min) if t_min is not None else _t_mins(1e-5, 1e-2)
    return st.builds(lambda a, b, m: VPSDE(a, b, t_min=m), _log_uniform(0.01, 1.0), st.floats(10.0, 30.0), tm)


def subvp_sdes(t_min: float | None = None) -> SearchStrategy[LinearSDE]:
    """SubVPSDE with beta_min in [0.01, 1], beta_max in [10, 30]."""
    st = _st()
    tm = st.just(t_min) if t_min is not None else _t_mins(1e-5, 1e-2)
    return st.builds(lambda a, b, m: SubVPSDE(a, b, t_min=m), _log_uniform(0.01, 1.0), st.floats(10.0, 30.0), tm)


def cosine_vp_sdes(t_min: float | None = None) -> SearchStrategy[LinearSDE]:
    """CosineVPSDE with s in [1e-4, 0.05] and log_snr_min in [-15, -6]."""
    st = _st()
    tm = st.just(t_min) if t_min is not None else _t_mins(1e-5, 1e-2)
    return st.builds(
        lambda s, lo, m: CosineVPSDE(s, t_min=m, log_snr_min=lo), _log_uniform(1e-4, 0.05), st.floats(-15.0, -6.0), tm
    )


def ve_sdes(t_min: float | None = None) -> SearchStrategy[LinearSDE]:
    """VESDE with sigma_min in [1e-3, 0.1] and sigma_max in [10, 400] (log-uniform)."""
    st = _st()
    tm = st.just(t_min) if t_min is not None else _t_mins(1e-6, 1e-3)
    return st.builds(lambda a, b, m: VESDE(a, b, t_min=m), _log_uniform(1e-3, 0.1), _log_uniform(10.0, 400.0), tm)


def vdm_sdes(t_min: float | None = None) -> SearchStrategy[LinearSDE]:
    """VDMSDE(FixedLinearGamma(gamma_min, gamma_max)) with gamma_min in [-30, -5], gamma_max in [5, 30]."""
    st = _st()
    tm = st.just(t_min) if t_min is not None else st.sampled_from([0.0, 1e-5, 1e-3])
    return st.builds(
        lambda a, b, m: VDMSDE(FixedLinearGamma(a, b), t_min=m), st.floats(-30.0, -5.0), st.floats(5.0, 30.0), tm
    )


def _random_schedule(n: int, total: float, seed: int) -> Tensor:
    """alphas_cumprod of n steps with -log alphas_cumprod[-1] = total, random smooth increments."""
    g = torch.Generator().manual_seed(seed)
    walk = torch.cumsum(0.3 * torch.randn(n, generator=g, dtype=torch.float64), 0)
    d = torch.exp(walk)
    d = d * (total / d.sum())
    return torch.exp(-torch.cumsum(d, 0))


def discrete_vp_sdes() -> SearchStrategy[LinearSDE]:
    """DiscreteVPSDE from random schedules that reach the prior.

    Either diffusers' named schedules (``linear``, ``scaled_linear``, ``squaredcos_cap_v2``)
    with N in [50, 2000] steps (linear and scaled_linear betas scaled by 1000/N, as
    improved-DDPM does, so the total noise does not depend on N), or random smooth
    ``alphas_cumprod`` of N in [2, 1000] steps with ``-log alphas_cumprod[-1]`` in [8, 16].
    """
    st = _st()

    def named(args: tuple[str, int, float, float]) -> DiscreteVPSDE:
        name, n, b0, b1 = args
        scale = 1000.0 / n if name != "squaredcos_cap_v2" else 1.0
        return DiscreteVPSDE(ddpm_betas(name, n, b0 * scale, b1 * scale))

    named_st = st.tuples(
        st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]),
        st.integers(50, 2000),
        _log_uniform(1e-5, 1e-3),
        st.floats(0.015, 0.03),
    ).map(named)
    random_st = st.builds(
        lambda n, total, seed: DiscreteVPSDE(alphas_cumprod=_random_schedule(n, total, seed)),
        st.integers(2, 1000),
        st.floats(8.0, 16.0),
        st.integers(0, 2**31 - 1),
    )
    return st.one_of(named_st, random_st)


_KINDS = {
    "vp": vp_sdes,
    "subvp": subvp_sdes,
    "cosine": cosine_vp_sdes,
    "ve": ve_sdes,
    "vdm": vdm_sdes,
    "discrete": discrete_vp_sdes,
}


def sdes(kinds: Iterable[str] | None = None) -> SearchStrategy[LinearSDE]:
    """Any built-in process with random valid parameters that reach the prior (``check_sde`` passes).

    Args:
        kinds: an iterable of names among ``"vp", "subvp", "cosine", "ve", "vdm", "discrete"``
            (default: all).
    """
    st = _st()
    kinds = list(_KINDS) if kinds is None else list(kinds)
    unknown = [k for k in kinds if k not in _KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {sorted(_KINDS)}, got {kinds}")
    return st.one_of([_KINDS[k]() for k in kinds])


def times(sde: LinearSDE, *, t_min: float | None = None) -> SearchStrategy[float]:
    """Times (Python floats) in ``[t_min, T]`` of ``sde`` (``t_min`` defaults to ``sde.t_min``)."""
    st = _st()
    hi = float(sde.T)
    lo = check_real(sde.t_min if t_min is None else t_min, "t_min")
    if not (0.0 <= lo <= hi):
        raise ValueError(f"t_min must lie in [0, T={hi:g}], got {lo}")
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)
