"""The base class of linear forward SDEs, defined by their marginal coefficients.

A linear forward SDE ``dx = f(t) x dt + g(t) dW`` has Gaussian transition marginals
``x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I)``. The marginal coefficients determine the
SDE: ``f(t) = d log alpha / dt`` and ``g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2``.
A subclass therefore only has to provide ``_log_alpha`` and ``_log_sigma`` (float64
tensors in, float64 tensors out); closed forms of ``_f``, ``_g2`` and ``_t_of_log_snr``
are optional and otherwise derived by automatic differentiation and bisection.

Every public coefficient method takes ``t`` as a Python number, a 0-d tensor or a
per-sample tensor of shape ``(B,)``; it computes in float64 and returns the caller's
dtype (float64 for Python numbers) on ``t``'s device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._utils import (
    TimeLike,
    as_time64,
    bcast,
    check_batch,
    check_time_range,
    check_x,
    out_dtype,
    sum_event,
    time_tol,
)
from .._validate import check_real

if TYPE_CHECKING:
    from ..model import ScoreLike
    from .reverse import ProbabilityFlowODE, ReverseSDE

__all__ = ["LinearSDE", "VariancePreservingSDE"]


# ------------------------------------------------------------ argument checks shared by the processes
def check_t_min(t_min: object, T: float) -> float:
    """``t_min`` as a float in ``[0, T)`` (TypeError for a non-number, ValueError naming the range)."""
    try:
        return check_real(t_min, "t_min", lo=0.0, hi=T, hi_open=True)
    except ValueError:
        raise ValueError(f"t_min must lie in [0, T={T:g}), got {t_min!r}") from None


def check_positive_finite(value: object, name: str) -> float:
    """``value`` as a positive finite float (TypeError for a non-number)."""
    try:
        return check_real(value, name, positive=True)
    except ValueError:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None


def log_sigmoid(x: Tensor) -> Tensor:
    """log sigmoid(x) = -softplus(-x), exact to rounding for every x, -inf at x = -inf and 0 at +inf.

    (Used instead of ``F.logsigmoid``, which on CPU parallelizes even tiny tensors and costs
    milliseconds per call on a busy machine.)
    """
    return -F.softplus(-x, threshold=50.0)


def _derivative(fn: Callable[[Tensor], Tensor], t64: Tensor, owner: object = None) -> Tensor:
    """d fn(t) / dt for an elementwise function of t, by autograd (exact, float64).

    A function that does not depend on t (a constant ``_log_alpha``, say) has derivative 0.
    The derivative keeps its autograd graph where someone can use it: when grad mode is on
    and either ``t64`` requires grad or the owner of ``fn`` may hold parameters that require
    grad (learned schedules). The owner is ``owner``, or by default ``fn`` itself or the object
    of a bound method; a module owner counts only if it has such parameters, any other owner
    (a closure) always counts. So coefficients of a fixed process carry no graph into a sampler.
    """
    owner = getattr(fn, "__self__", fn) if owner is None else owner
    # an owner that is not a module (a closure) may capture anything: keep the graph then
    has_params = not isinstance(owner, nn.Module) or any(p.requires_grad for p in owner.parameters())
    create = torch.is_grad_enabled() and (t64.requires_grad or has_params)
    with torch.enable_grad():
        tt = t64 if t64.requires_grad else t64.detach().requires_grad_(True)
        y = fn(tt)
        if not y.requires_grad:
            return torch.zeros_like(t64)
        (d,) = torch.autograd.grad(y.sum(), tt, create_graph=create, allow_unused=True)
    if d is None:
        return torch.zeros_like(t64)
    return d if create else d.detach()


class LinearSDE(nn.Module):
    """A linear forward SDE ``dx = f(t) x dt + g(t) dW`` on ``[0, T]``.

    Subclass and implement ``_log_alpha(t)`` and ``_log_sigma(t)``; override ``_f``,
    ``_g2`` and ``_t_of_log_snr`` where closed forms exist. Run
    :func:`sdesolve.testing.check_sde` on the subclass to check its consistency.

    Attributes:
        T: the final time of the forward process (where the prior is used).
        t_min: the smallest time a sampler reaches by default.
        prior_std: standard deviation of the Gaussian prior ``N(0, prior_std^2 I)``.
        variance_preserving: whether the process claims ``alpha^2 + sigma^2 = 1``.
    """

    T: float = 1.0
    t_min: float = 1e-3
    prior_std: float = 1.0
    variance_preserving: bool = False

    # ----------------------------------------------------------------- hooks
    def _log_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _log_alpha(t)")

    def _log_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _log_sigma(t)")

    def _f(self, t: Tensor) -> Tensor:
        return _derivative(self._log_alpha, t)

    def _g2(self, t: Tensor) -> Tensor:
        def var(s: Tensor) -> Tensor:
            return torch.exp(2.0 * self._log_sigma(s))

        return _derivative(var, t, owner=self) - 2.0 * self._f(t) * var(t)

    def _log_snr(self, t: Tensor) -> Tensor:
        return 2.0 * (self._log_alpha(t) - self._log_sigma(t))

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        """Invert the (strictly decreasing) log-SNR by bisection on [0, T].

        An inverse exists only while the log-SNR decreases. The bisection therefore first looks
        at the log-SNR on :attr:`_MONOTONE_CHECK` evenly spaced times of [0, T] (one batched
        evaluation); where it rises anywhere there (a learned schedule gone wrong), every answer
        is NaN rather than one of several crossings picked silently, and NaN lam gives NaN.
        Outside [log_snr(T), log_snr(0)] the answer is the nearer end (the public
        :meth:`t_of_log_snr` refuses such lam).
        """
        T = float(self.T)
        lo = torch.zeros_like(lam)
        hi = torch.full_like(lam, T)
        # A fixed number of halvings (no data-dependent exit: that would synchronize an
        # accelerator every iteration): 64 halvings shrink [0, T] below float64 resolution.
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self._log_snr(mid) > lam  # log-SNR too high: the time is later
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        t = 0.5 * (lo + hi)
        probe = torch.linspace(0.0, T, self._MONOTONE_CHECK, dtype=lam.dtype, device=lam.device)
        lam_probe = self._log_snr(probe)
        rises = (lam_probe[1:] > lam_probe[:-1]).any()
        bad = torch.isnan(lam) | rises | torch.isnan(lam_probe).any()
        return torch.where(bad, torch.full_like(t, math.nan), t)

    _MONOTONE_CHECK: int = 257  #: times at which the bisection checks that the log-SNR decreases

    # ---------------------------------------- derived formulas (float64 in and out, no validation)
    # Every solver, loss and grid asks the process for these; none re-derives them.
    def _gamma(self, t: Tensor) -> Tensor:
        """gamma(t) = -log SNR(t) (VDM's notation)."""
        return -self._log_snr(t)

    def _gamma_prime(self, t: Tensor) -> Tensor:
        """d gamma / dt = -d lambda / dt, by autograd through ``_log_snr`` (subclasses may give it in closed form)."""
        return -_derivative(self._log_snr, t, owner=self)

    def _one_minus_snr_ratio(self, t: Tensor, s: Tensor) -> Tensor:
        """``1 - SNR(t)/SNR(s) = -expm1(lambda_t - lambda_s)`` for t >= s, computed stably, in [0, 1].

        Equals 1 where ``lambda_s = +inf`` (sigma_s = 0) and 0 where t = s.
        """
        dlam = self._log_snr(t) - self._log_snr(s)
        dlam = torch.where(torch.isnan(dlam), torch.zeros_like(dlam), dlam)  # t = s with lambda = +inf
        return (-torch.expm1(dlam.clamp(max=0.0))).clamp(0.0, 1.0)

    def _transition(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """The forward transition ``x_t | x_s ~ N(alpha_{t|s} x_s, sigma^2_{t|s} I)`` for t >= s.

        Returns ``(log alpha_{t|s}, sigma^2_{t|s})`` with ``alpha_{t|s} = alpha_t / alpha_s`` and
        ``sigma^2_{t|s} = sigma_t^2 - alpha_{t|s}^2 sigma_s^2 = sigma_t^2 (1 - exp(lambda_t - lambda_s))``
        (the second form, by ``expm1``, has no cancellation when t and s are close).
        """
        log_a = self._log_alpha(t) - self._log_alpha(s)
        var = torch.exp(2.0 * self._log_sigma(t)) * self._one_minus_snr_ratio(t, s)
        return log_a, var

    def _sigma_over_alpha(self, t: Tensor) -> Tensor:
        """``sigma(t) / alpha(t) = exp(-lambda / 2)``: EDM's sigma, the noise level of x / alpha."""
        return torch.exp(self._log_sigma(t) - self._log_alpha(t))

    def _t_of_sigma_over_alpha(self, r: Tensor) -> Tensor:
        """The time at which ``sigma / alpha = r`` (r > 0): the inverse of :meth:`_sigma_over_alpha`."""
        return self._t_of_log_snr(-2.0 * torch.log(r))

    # -------------------------------------------------------- public interface
    def _time(self, t: TimeLike, name: str = "t") -> Tensor:
        """Validate a user's time (CPU only: no host sync) and return it in float64, clamped to [0, T].

        Times a few units in the last place of the caller's dtype outside [0, T] (``sde.T``
        rounded to float32, say) are accepted and clamped.
        """
        t64 = as_time64(t, name=name)
        T = float(self.T)
        check_time_range(t64, 0.0, T, name=name, tol=time_tol(t, T))
        return t64.clamp(0.0, T)

    def _out(self, v: Tensor, t: TimeLike) -> Tensor:
        return v.to(out_dtype(t))

    def log_alpha(self, t: TimeLike) -> Tensor:
        """log alpha(t), the log of the mean coefficient."""
        return self._out(self._log_alpha(self._time(t)), t)

    def alpha(self, t: TimeLike) -> Tensor:
        """alpha(t): x_t | x_0 has mean alpha(t) x_0."""
        return self._out(torch.exp(self._log_alpha(self._time(t))), t)

    def log_sigma(self, t: TimeLike) -> Tensor:
        return self._out(self._log_sigma(self._time(t)), t)

    def sigma(self, t: TimeLike) -> Tensor:
        """sigma(t): x_t | x_0 has standard deviation sigma(t)."""
        return self._out(torch.exp(self._log_sigma(self._time(t))), t)

    def log_snr(self, t: TimeLike) -> Tensor:
        """lambda(t) = log(alpha^2 / sigma^2), strictly decreasing in t."""
        return self._out(self._log_snr(self._time(t)), t)

    def _log_snr_range(self) -> tuple[float, float]:
        """``(log_snr(T), log_snr(0))`` as Python floats (host, float64; +inf where sigma(0) = 0)."""
        with torch.no_grad():
            ends = self._log_snr(torch.tensor([float(self.T), 0.0], dtype=torch.float64)).detach()
        return float(ends[0]), float(ends[1])

    def _check_lam(self, lam64: Tensor, dtype: torch.dtype, name: str = "lam") -> None:
        """Refuse NaN and log-SNRs outside ``[log_snr(T), log_snr(0)]`` (host tensors only: no sync).

        Values a few units in the last place of the caller's ``dtype`` outside the range are
        accepted (``log_snr(T)`` rounded to float32, say). ``+inf`` is in range where ``sigma(0) = 0``.
        ``name="r"`` words the error for :meth:`t_of_sigma_over_alpha` (``lam = -2 log r``).
        """
        if lam64.device.type != "cpu":
            return
        lo, hi = self._log_snr_range()
        rel = max(1e-9, 4.0 * torch.finfo(dtype).eps)
        tol_lo = rel * max(1.0, abs(lo)) if math.isfinite(lo) else 0.0
        tol_hi = rel * max(1.0, abs(hi)) if math.isfinite(hi) else 0.0
        ok = (lam64 >= lo - tol_lo) & (lam64 <= hi + tol_hi)  # False for NaN
        if bool(ok.all()):
            return
        vals = lam64[~ok].flatten()[:4]
        if name == "r":
            r_lo, r_hi = math.exp(-0.5 * hi), math.exp(-0.5 * lo)
            raise ValueError(
                f"r must be a ratio sigma / alpha of the process, in [sigma_over_alpha(0), sigma_over_alpha(T)] "
                f"= [{r_lo:.6g}, {r_hi:.6g}], got values {torch.exp(-0.5 * vals).tolist()}"
            )
        raise ValueError(
            f"lam must be a log-SNR of the process, in [log_snr(T), log_snr(0)] = [{lo:.6g}, {hi:.6g}], "
            f"got values {vals.tolist()}"
        )

    def _inverse_of_log_snr(self, lam64: Tensor) -> Tensor:
        """``_t_of_log_snr`` clamped to [0, T], raising where it answers NaN (host tensors)."""
        t = self._t_of_log_snr(lam64)
        if t.device.type == "cpu" and bool(torch.isnan(t).any()):
            raise ValueError(
                f"{type(self).__name__} has no inverse of its log-SNR: the log-SNR is not strictly "
                "decreasing on [0, T] (check the schedule with sdesolve.testing.check_sde)"
            )
        return t.clamp(0.0, float(self.T))

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        """The time t in [0, T] at which log_snr(t) = lam (closed form where one exists, else bisection).

        Raises ValueError for lam outside ``[log_snr(T), log_snr(0)]`` or NaN, and where the
        process's log-SNR is not decreasing (no inverse: the bisection answers NaN).
        """
        lam64 = as_time64(lam, name="lam")
        self._check_lam(lam64, out_dtype(lam))
        return self._out(self._inverse_of_log_snr(lam64), lam)

    def transition(self, t: TimeLike, s: TimeLike) -> tuple[Tensor, Tensor]:
        """``(alpha_{t|s}, sigma^2_{t|s})`` of ``x_t | x_s`` for ``s <= t`` (see :meth:`_transition`)."""
        t64, s64 = self._time(t), self._time(s, name="s")
        if t64.device.type == "cpu" and s64.device.type == "cpu" and bool((s64 > t64).any()):
            raise ValueError(f"s must not exceed t (the transition runs forward from s to t), got s={s!r}, t={t!r}")
        log_a, var = self._transition(t64, s64)
        return self._out(torch.exp(log_a), t), self._out(var, t)

    def sigma_over_alpha(self, t: TimeLike) -> Tensor:
        """``sigma(t) / alpha(t)``: the noise level of ``x / alpha`` (EDM's and k-diffusion's sigma)."""
        return self._out(self._sigma_over_alpha(self._time(t)), t)

    def t_of_sigma_over_alpha(self, r: TimeLike) -> Tensor:
        """The time at which ``sigma / alpha = r``; the inverse of :meth:`sigma_over_alpha`.

        ``r`` must lie in ``[sigma_over_alpha(0), sigma_over_alpha(T)]`` (0 is allowed where sigma(0) = 0).
        """
        r64 = as_time64(r, name="r")
        if r64.device.type == "cpu" and not bool((r64 >= 0).all()):
            raise ValueError(f"r must be a non-negative ratio sigma / alpha, got {r!r}")
        lam64 = -2.0 * torch.log(r64)
        self._check_lam(lam64, out_dtype(r), name="r")
        return self._out(self._inverse_of_log_snr(lam64), r)

    def f(self, t: TimeLike) -> Tensor:
        """The drift coefficient f(t) = d log alpha / dt."""
        return self._out(self._f(self._time(t)), t)

    def g2(self, t: TimeLike) -> Tensor:
        """The squared diffusion coefficient g(t)^2 = d sigma^2/dt - 2 f sigma^2."""
        return self._out(self._g2(self._time(t)), t)

    def diffusion(self, t: TimeLike) -> Tensor:
        """The diffusion coefficient g(t)."""
        return self._out(torch.sqrt(torch.clamp(self._g2(self._time(t)), min=0.0)), t)

    def drift(self, x: Tensor, t: TimeLike) -> Tensor:
        """The forward drift f(t) x, broadcast over x of shape (B, *event)."""
        check_x(x)
        t64 = self._time(t)
        check_batch(t64, x)
        return bcast(self._f(t64).to(device=x.device, dtype=x.dtype), x) * x

    def marginal_prob(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """Mean alpha(t) x0 and standard deviation sigma(t) of x_t | x_0 (broadcast to x0)."""
        check_x(x0, name="x0")
        t64 = self._time(t)
        check_batch(t64, x0)
        a = bcast(torch.exp(self._log_alpha(t64)).to(device=x0.device, dtype=x0.dtype), x0)
        s = bcast(torch.exp(self._log_sigma(t64)).to(device=x0.device, dtype=x0.dtype), x0)
        return a * x0, s

    def perturb(self, x0: Tensor, t: TimeLike, noise: Tensor) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) noise."""
        check_x(x0, name="x0")
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        t64 = self._time(t)
        check_batch(t64, x0)
        a = bcast(torch.exp(self._log_alpha(t64)).to(device=x0.device, dtype=x0.dtype), x0)
        s = bcast(torch.exp(self._log_sigma(t64)).to(device=x0.device, dtype=x0.dtype), x0)
        return a * x0 + s * noise

    def prior_sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """A draw from the prior N(0, prior_std^2 I) of the given shape (B, *event)."""
        if isinstance(shape, int) or not hasattr(shape, "__iter__"):
            raise TypeError(f"shape must be a tuple (B, *event), got {shape!r}")
        shape = tuple(int(s) for s in shape)
        if len(shape) < 1 or any(s < 1 for s in shape):
            raise ValueError(f"shape must be (B, *event) with positive sizes, got {shape}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        if device is None and generator is not None:
            device = generator.device
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        """Log-density of the prior at z, summed over event dims: shape (B,)."""
        check_x(z, name="z")
        s = float(self.prior_std)
        d = z[0].numel()
        zz = z.to(torch.float64)
        lp = -0.5 * sum_event(zz * zz) / (s * s) - 0.5 * d * math.log(2 * math.pi * s * s)
        return lp.to(z.dtype)

    def network_time(self, t: Tensor) -> Tensor:
        """What a network trained on this process receives as its time input (identity by default).

        :class:`~sdesolve.ScoreModel` uses it unless given its own ``time_input``.
        """
        return t

    # ----------------------------------------------------------- reverse time
    def reverse(self, model: ScoreLike, probability_flow: bool = False) -> ReverseSDE | ProbabilityFlowODE:
        """The reverse-time SDE: drift f x - g^2 s(x, t), diffusion g (probability_flow=False)."""
        from .reverse import ProbabilityFlowODE, ReverseSDE

        if probability_flow:
            return ProbabilityFlowODE(self, model)
        return ReverseSDE(self, model)

    def probability_flow(self, model: ScoreLike) -> ProbabilityFlowODE:
        """The probability-flow ODE: drift f x - 1/2 g^2 s(x, t), no diffusion."""
        from .reverse import ProbabilityFlowODE

        return ProbabilityFlowODE(self, model)

    def extra_repr(self) -> str:
        return f"T={self.T:g}, t_min={self.t_min:g}"


class VariancePreservingSDE(LinearSDE):
    """A linear SDE with ``alpha(t)^2 + sigma(t)^2 = 1`` (VP, cosine, DDPM's discrete schedules, VDM).

    Subclass and implement ``_log_alpha(t)`` (``<= 0``, 0 at t = 0 where the data are clean);
    override ``_f`` where a closed form exists and ``_t_of_log_alpha`` where ``log alpha``
    has a closed-form inverse. Everything else follows from ``sigma^2 = 1 - alpha^2``:

    * ``log sigma = 1/2 log(-expm1(2 log alpha))`` (no cancellation where alpha is near 1),
    * ``lambda = log(alpha^2 / sigma^2) = 2 log alpha - log(-expm1(2 log alpha))``,
    * ``g^2 = d sigma^2/dt - 2 f sigma^2 = -2 f alpha^2 - 2 f sigma^2 = -2 f``,
    * ``gamma' = -d lambda/dt = d log sigma^2/dt - 2 f = -2 f / sigma^2``,
    * ``t_of_log_snr(lambda) = t_of_log_alpha(1/2 log sigmoid(lambda))`` (``alpha^2 = sigmoid(lambda)``).

    Where ``sigma = 0`` (t = 0 of every process but VDM's) ``lambda = +inf``, ``gamma' = +inf``
    and ``t_of_log_snr(+inf) = 0``: every hook is defined there, none is NaN.
    """

    variance_preserving = True

    def _log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(-torch.expm1(2.0 * self._log_alpha(t)))

    def _log_snr(self, t: Tensor) -> Tensor:
        la2 = 2.0 * self._log_alpha(t)
        return la2 - torch.log(-torch.expm1(la2))

    def _g2(self, t: Tensor) -> Tensor:
        return -2.0 * self._f(t)

    def _gamma_prime(self, t: Tensor) -> Tensor:
        # sigma^2 through exp(2 log sigma): +0 (not -0) where sigma = 0, so gamma' = +inf there
        return -2.0 * self._f(t) / torch.exp(2.0 * self._log_sigma(t))

    def _t_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        """The time at which ``log alpha(t) = log_alpha``; bisection on the log-SNR unless overridden."""
        la2 = 2.0 * log_alpha
        return LinearSDE._t_of_log_snr(self, la2 - torch.log(-torch.expm1(la2)))

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        if type(self)._t_of_log_alpha is VariancePreservingSDE._t_of_log_alpha:
            return LinearSDE._t_of_log_snr(self, lam)  # no closed form: bisection on lambda itself
        return self._t_of_log_alpha(0.5 * log_sigmoid(lam))
