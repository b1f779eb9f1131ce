"""Exact log-likelihoods through the probability-flow ODE, and bits/dim.

The probability-flow ODE of a linear forward process (Song et al. 2021, Sec. 4.3),

    dx/dt = v(x, t) = f(t) x - 1/2 g(t)^2 s(x, t),

moves samples of p_{t_min} onto samples of p_T along deterministic paths. Along a path the
log-density obeys the instantaneous change of variables (Chen et al. 2018),
d log p_t(x_t) / dt = -div v(x_t, t), so

    log p_{t_min}(x) = log p_T(z) + int_{t_min}^{T} div v(x_t, t) dt,       z = x_T,

with div v = f(t) D - 1/2 g(t)^2 tr(ds/dx) for x of D = prod(event) coordinates. The state
(x_t, delta_t) with delta' = div v is integrated from t_min to T and the prior log-density
is added at z. The trace is either exact (the diagonal of the score's Jacobian, through
``torch.func.vjp`` and ``vmap`` over chunks of basis vectors) or Hutchinson's unbiased
estimate ``E[eps^T (ds/dx) eps]`` with Rademacher or Gaussian probes ``eps`` drawn once per
solve (Hutchinson 1989; Grathwohl et al. 2019, FFJORD).

Hutchinson's estimate of div v. With probes fixed over a solve the path x_t does not depend
on them, and the estimate of delta_T is ``eps^T M eps`` with M the integral of a Jacobian along
the path. Two unbiased forms differ only in the linear part: probing the score alone (``f D``
added exactly, M = N = -1/2 int g^2 ds/dx dt) or probing the whole drift as score_sde does
(``f |eps|^2``, M = c I + N with c = int f dt = log(alpha(T) / alpha(t_min))). Rademacher probes
have ``|eps|^2 = D``: the forms are identical. For Gaussian probes the variances are
2 ||N||_F^2 and 2 ||c I + N||_F^2 = 2 (||N||_F^2 + 2 c tr N + c^2 D), so with c < 0 (the drift
contracts: VP, sub-VP, VDM) the whole drift has the smaller variance iff tr N / D > |c| / 2. For
data of per-coordinate variance v0 this holds while v0 < alpha(t_min)/alpha(T) (about 150 for the
default VP and sub-VP, since N_ii = 1/2 log(v_i(T) / v_i(t_min)) - c): always for normalized data.
Measured 27-30x smaller on VP and sub-VP (``notes/hutchinson.md``). So the whole drift is probed
when c < 0; when c = 0 (VE) the forms coincide, and when c > 0 the score alone is probed.

Time variable. The ODE can be integrated in t (default) or in u = -lambda/2 = gamma/2 =
log(sigma/alpha) (``time_variable="log_snr"``). The change of variables is exact: with
gamma'(t) = -lambda'(t) = g(t)^2 / sigma(t)^2,

    dt/du = 2 / gamma'(t),    dx/du = v(x, t(u)) dt/du,    d delta/du = div v dt/du,

and the integral is the same. For VE and VDM's linear schedule u is an affine function of t
(the two differ only through the adaptive controller's first step); for VP and sub-VP the
measured work-precision favours t. For a variance-preserving process dx/du = -sigma^2 (x + s)
with sigma^2 = sigmoid(2u): in u the ODE does not depend on the schedule, which makes u the
right variable for piecewise schedules (DiscreteVPSDE: 158 NFE in u against 2228 in t, to a
1e-7 tolerance). ``notes/bench_likelihood.md`` has the measurements.

Precision. The augmented state is integrated in at least float32 (the promotion of x's dtype
with float32): a float16/bfloat16 state cannot hold the step sizes (float16: "underflow in dt")
nor a log-density of thousands of nats (bfloat16 resolves 8 bits). The network is called in its
own dtype (that of its first floating parameter; a network without parameters, an exact score,
in the integration dtype), and results come back in the integration dtype. A half-precision
network's rounding (2^-8 relative for bfloat16) is noise to the step-size control: at rtol = atol
= 1e-5 it took 338 NFE where 1e-4 gave the same error (6e-3 nats) in 74.

References:
    Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole (2021). Score-based generative modeling
    through stochastic differential equations. ICLR. Sec. 4.3, App. D.2.
    Chen, Rubanova, Bettencourt, Duvenaud (2018). Neural ordinary differential equations.
    Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud (2019). FFJORD. ICLR.
    Kingma, Salimans, Poole, Ho (2021). Variational diffusion models (the log-SNR variable).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._cuda_graph import capture_cuda_graph
from ._progress import SolveProgress
from ._utils import bcast, sum_event
from ._validate import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_real,
    check_tensor,
    check_tolerance,
    describe,
)
from .model import ScoreLike, ScoreModel, as_model, bind_kwargs
from .sde.base import LinearSDE
from .sde.discrete import DiscreteVPSDE
from .solvers.adaptive import DEFAULT_MAX_NFE, AdaptiveSolveError, rms_norm
from .solvers.adaptive import TABLEAUX as EMBEDDED_TABLEAUX
from .solvers.adaptive import _integrate as _adaptive_integrate
from .solvers.adaptive import _integrate_per_sample as _adaptive_integrate_per_sample
from .solvers.base import GeneratorLike, check_generator, draw
from .solvers.methods import ADAPTIVE, FIXED, resolve_method
from .solvers.runge_kutta import TABLEAUX

__all__ = ["LikelihoodResult", "log_likelihood", "bits_per_dim", "hutchinson_trace", "exact_trace"]

DIVERGENCES = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")
TIME_VARIABLES = ("auto", "t", "log_snr")
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
_SCIPY = tuple(f"scipy-{m}" for m in SCIPY_METHODS)
#: torchdiffeq's own fixed-step names outside the shared vocabulary (deprecated: a release left)
_TORCHDIFFEQ_FIXED = ("heun3", "explicit_adams", "implicit_adams")


@dataclass
class LikelihoodResult:
    """What :func:`log_likelihood` returns (tensors in the integration dtype, at least float32).

    Attributes:
        logp: log p_{t_min}(x) in nats, shape (B,): ``prior_logp + delta_logp``.
        prior_logp: the prior log-density at the latent, log p_T(z), shape (B,).
        delta_logp: the integral of the divergence from t_min to T, shape (B,).
        nfe: network evaluations of this call (each one forward pass of the model), counted
            by the call itself (other users of the same model do not change it).
        z: the latent x_T, shape of x (only with ``return_latent=True``).
    """

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    nfe: int
    z: Tensor | None = None


# ------------------------------------------------------------------ time variable
class _TimeMap:
    """The integration variable u and its map to the process time t.

    ``"t"``: u = t. ``"log_snr"``: u = gamma(t)/2 = -lambda(t)/2 = log(sigma/alpha), increasing
    in t, t(u) = t_of_log_snr(-2u) and dt/du = 2 / gamma'(t).
    """

    def __init__(self, sde: LinearSDE, kind: str, t_min: float) -> None:
        self.sde, self.kind = sde, kind
        self.t_lo, self.t_hi = float(t_min), float(sde.T)
        if kind == "t":
            self.u0, self.u1 = self.t_lo, self.t_hi
            return
        gamma = sde._gamma(torch.tensor([self.t_lo, self.t_hi], dtype=torch.float64))
        if not bool(torch.isfinite(gamma).all()):
            raise ValueError(
                f"time_variable='log_snr' needs a finite log-SNR at t_min and T, got {(-gamma).tolist()} "
                f"for t_min={t_min:g}; raise t_min or pass time_variable='t'"
            )
        self.u0, self.u1 = float(0.5 * gamma[0]), float(0.5 * gamma[1])

    def __call__(self, u: Tensor) -> tuple[Tensor, Tensor | None]:
        """(t, dt/du) as float64 tensors for the integration variable u (dt/du = None for u = t)."""
        u = u.to(torch.float64)
        if self.kind == "t":
            return u.clamp(self.t_lo, self.t_hi), None
        t = self.sde._t_of_log_snr(-2.0 * u).clamp(self.t_lo, self.t_hi)
        return t, 2.0 / self.sde._gamma_prime(t)


# ------------------------------------------------------------------ divergence
def _draw_probes(kind: str, n: int, x: Tensor, generator: GeneratorLike) -> Tensor:
    """``n`` probes per sample, shape (n, *x.shape); with a list of generators sample i's from generator i."""
    kind = "normal" if kind == "gaussian" else kind
    return draw(kind, (n,) + tuple(x.shape), generator, device=x.device, dtype=x.dtype, batch_dim=1)


def _leaf(x: Tensor, create_graph: bool) -> Tensor:
    """x as an input to differentiate against; keeps x's graph when gradients must flow."""
    if create_graph and x.requires_grad:
        return x
    return x.detach().requires_grad_(True)


def _not_differentiable() -> TypeError:
    return TypeError(
        "the score is not differentiable with respect to x (the model returned a tensor without a "
        "grad_fn); log_likelihood needs a model that autograd can differentiate: do not run it under "
        "torch.no_grad()/inference_mode or detach its output"
    )


def _check_trace_args(score_fn: Any, x: Any, create_graph: Any) -> None:
    check_callable(score_fn, "score_fn", "a callable score_fn(x)")
    check_tensor(x, "x", min_dim=1)
    check_bool(create_graph, "create_graph")


def hutchinson_trace(
    score_fn: Callable[[Tensor], Tensor], x: Tensor, probes: Tensor, *, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """The score s(x) and Hutchinson's estimate of tr(ds/dx), shape (B,).

    ``tr(A) = E[eps^T A eps]`` for probes with E[eps eps^T] = I; the estimate averages
    ``eps^T A eps`` over ``probes`` (shape (n_probes, *x.shape)), each from one
    vector-Jacobian product. The Jacobian is taken per sample (block-diagonal over the batch).
    """
    _check_trace_args(score_fn, x, create_graph)
    check_tensor(probes, "probes", min_dim=2)
    if tuple(probes.shape[1:]) != tuple(x.shape):
        raise ValueError(
            f"probes must have shape (n_probes, *x.shape) = (n_probes, {', '.join(map(str, x.shape))}), "
            f"got {tuple(probes.shape)}"
        )
    return _hutchinson_trace(score_fn, x, probes, create_graph)


def _hutchinson_trace(
    score_fn: Callable[[Tensor], Tensor], x: Tensor, probes: Tensor, create_graph: bool
) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        xr = _leaf(x, create_graph)
        s = score_fn(xr)
        if not s.requires_grad:
            raise _not_differentiable()
        n = probes.shape[0]
        tr = None
        for k in range(n):
            (vj,) = torch.autograd.grad(
                s, xr, probes[k], retain_graph=create_graph or k < n - 1, create_graph=create_graph, allow_unused=True
            )
            if vj is not None:
                q = sum_event(vj * probes[k])
                tr = q if tr is None else tr + q
        if tr is None:  # the score does not depend on x
            tr = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        elif n > 1:
            tr = tr / n
    if not create_graph:
        s, tr = s.detach(), tr.detach()
    return s, tr


def exact_trace(
    score_fn: Callable[[Tensor], Tensor], x: Tensor, *, chunk_size: int | None = None, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """The score s(x) and the exact tr(ds/dx) per sample, shape (B,).

    One forward pass, then reverse-mode products with the basis vectors e_j (the same e_j
    for every sample), ``chunk_size`` of them at a time through ``torch.func.vmap``; the
    trace sums the j-th coordinate of the j-th product. Memory is bounded by the chunk
    (default: as many as keep a chunk's products under 2^24 numbers, at most D).
    A score that autograd cannot differentiate (a detached output) raises TypeError: its
    products would be zero and the trace silently 0.
    """
    _check_trace_args(score_fn, x, create_graph)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    return _exact_trace(score_fn, x, chunk_size, create_graph)


def _exact_trace(
    score_fn: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int | None, create_graph: bool
) -> tuple[Tensor, Tensor]:
    B = x.shape[0]
    D = x[0].numel()
    if chunk_size is None:
        chunk_size = max(1, min(D, 2**24 // max(1, B * D)))

    def checked(xx: Tensor) -> Tensor:
        out = score_fn(xx)
        if not out.requires_grad:  # inside vjp: False when the output does not depend on xx through autograd
            raise _not_differentiable()
        return out

    with torch.enable_grad():
        xr = _leaf(x, create_graph)
        s, vjp_fn = torch.func.vjp(checked, xr)  # type: ignore[misc]  # torch's stub gives the has_aux 3-tuple
        tr = torch.zeros(B, dtype=x.dtype, device=x.device)
        for j0 in range(0, D, chunk_size):
            c = min(chunk_size, D - j0)
            basis = torch.zeros(c, D, dtype=x.dtype, device=x.device)
            basis.diagonal(offset=j0).fill_(1.0)  # rows e_{j0}, ..., e_{j0+c-1} (no host scalar copy)
            basis = basis.unsqueeze(1).expand(c, B, D).reshape((c,) + tuple(x.shape))
            (rows,) = torch.func.vmap(vjp_fn)(basis)
            block = rows.reshape(c, B, D)[:, :, j0 : j0 + c]  # (c, B, c)
            tr = tr + torch.diagonal(block, dim1=0, dim2=2).sum(-1)
    if not create_graph:
        s, tr = s.detach(), tr.detach()
    return s, tr


# ------------------------------------------------------------------ argument checks
@dataclass(frozen=True)
class _Plan:
    """The checked and resolved arguments of one :func:`log_likelihood` call."""

    divergence: str
    probe: str
    n_probes: int
    method: str
    rtol: float
    atol: float
    t_min: float
    steps: int | None
    time_variable: str
    prior_logp: Callable | None
    grad: bool | str
    chunk_size: int | None
    solver_options: dict | None
    cuda_graph: bool
    max_nfe: int
    dtype: torch.dtype  # of the integration: at least float32
    return_latent: bool
    per_sample: bool = False  # each sample its own adaptive steps (set by _check_per_sample)


def _integration_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the augmented ODE is integrated in for data of ``dtype``: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def _check_grad(grad: Any) -> bool | str:
    if isinstance(grad, bool):
        return grad
    if isinstance(grad, str):
        if grad != "adjoint":
            raise ValueError(f"grad must be False, True or 'adjoint', got {grad!r}")
        return grad
    raise TypeError(f"grad must be False, True or 'adjoint', got {describe(grad)} ({type(grad).__name__})")


def _check_generator(generator: Any, x: Tensor, name: str = "generator") -> None:
    """None, a torch.Generator or a list of one per sample of x, on x's device type."""
    check_generator(generator, batch=x.shape[0], device=x.device, name=name)


def _check_method(method: Any, steps: Any, grad: bool | str) -> tuple[str, int | None]:
    if method in _TORCHDIFFEQ_FIXED:
        import warnings

        warnings.warn(
            f"method={method!r} (a torchdiffeq fixed-step method) is deprecated in log_likelihood; use one of "
            f"{tuple(FIXED)}",
            DeprecationWarning,
            stacklevel=4,
        )
    else:
        method = resolve_method(method, extra=_SCIPY)
    fixed = method in FIXED or method in _TORCHDIFFEQ_FIXED
    if fixed:
        if steps is None:
            raise ValueError(f"method={method!r} is fixed-step: pass steps, an int >= 1, got None")
        steps = check_int(steps, "steps", minimum=1)
        if grad == "adjoint":
            raise ValueError(f"grad='adjoint' needs an adaptive method {tuple(ADAPTIVE)}, got method={method!r}")
    elif steps is not None:
        raise ValueError(
            f"steps only applies to fixed-step methods {tuple(FIXED)}, not method={method!r}; got steps={steps!r}"
        )
    if method in _SCIPY and grad is not False:
        raise ValueError(f"the scipy backend runs on the host without autograd: use grad=False, got grad={grad!r}")
    return method, steps


def _check_log_likelihood(
    sde: Any,
    x: Any,
    *,
    divergence: Any,
    probe: Any,
    n_probes: Any,
    method: Any,
    rtol: Any,
    atol: Any,
    t_min: Any,
    steps: Any,
    generator: Any,
    return_latent: Any,
    time_variable: Any,
    prior_logp: Any,
    grad: Any,
    chunk_size: Any,
    solver_options: Any,
    cuda_graph: Any,
    max_nfe: Any,
) -> _Plan:
    """Check every argument of :func:`log_likelihood` (the model is checked by ``as_model``)."""
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a LinearSDE (VPSDE(), VESDE(), ...), got {type(sde).__name__}")
    check_tensor(x, "x", min_dim=1, nonempty=True, finite=True)
    dtype = _integration_dtype(x.dtype)
    divergence = check_choice(divergence, "divergence", DIVERGENCES)
    probe = check_choice(probe, "probe", PROBES)
    n_probes = check_int(n_probes, "n_probes", minimum=1)
    grad = _check_grad(grad)
    method, steps = _check_method(method, steps, grad)
    rtol = check_tolerance(rtol, "rtol", dtype)
    atol = check_tolerance(atol, "atol", dtype)
    T = float(sde.T)
    t_min = float(sde.t_min) if t_min is None else check_real(t_min, "t_min", lo=0.0, hi=T, hi_open=True)
    _check_generator(generator, x)
    return_latent = check_bool(return_latent, "return_latent")
    time_variable = check_choice(time_variable, "time_variable", TIME_VARIABLES)
    if prior_logp is not None:
        check_callable(prior_logp, "prior_logp", "a callable prior_logp(z) or None")
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    _check_solver_options(solver_options, method, grad)
    cuda_graph = _check_cuda_graph(cuda_graph, x, grad, method, divergence)
    max_nfe = check_int(max_nfe, "max_nfe", minimum=1)
    if method in FIXED and steps * len(TABLEAUX[method].c) > max_nfe:
        raise ValueError(
            f"method={method!r} with steps={steps} takes {steps * len(TABLEAUX[method].c)} network evaluations, "
            f"more than max_nfe={max_nfe}: raise max_nfe or lower steps"
        )
    if time_variable == "auto":
        time_variable = "t"
        if isinstance(sde, DiscreteVPSDE):
            gamma = sde._gamma(torch.tensor([t_min, T], dtype=torch.float64))
            time_variable = "log_snr" if bool(torch.isfinite(gamma).all()) else "t"
    return _Plan(
        divergence, probe, n_probes, method, rtol, atol, t_min, steps, time_variable, prior_logp, grad, chunk_size,
        solver_options, cuda_graph, max_nfe, dtype, return_latent,
    )  # fmt: skip


def _check_solver_options(solver_options: Any, method: str, grad: bool | str) -> None:
    """None, or a dict of the adaptive integrator's options (any of torchdiffeq's with the adjoint)."""
    if solver_options is None:
        return
    if not isinstance(solver_options, dict):
        raise TypeError(f"solver_options must be a dict or None, got {type(solver_options).__name__}")
    if method in ADAPTIVE and grad != "adjoint" and not set(solver_options) <= {"first_step", "norm"}:
        raise ValueError(
            f"solver_options of method={method!r} may hold 'first_step' and 'norm' (arguments of "
            f"sdesolve.solvers.adaptive.integrate), got keys {sorted(solver_options)}"
        )
    if solver_options.get("first_step") is not None and grad != "adjoint":
        check_real(solver_options["first_step"], "solver_options['first_step']", positive=True)
    if solver_options.get("norm") is not None:
        check_callable(solver_options["norm"], "solver_options['norm']", "a callable norm(e) -> 0-d tensor")


def _check_cuda_graph(cuda_graph: Any, x: Tensor, grad: bool | str, method: str, divergence: str) -> bool:
    """cuda_graph=True needs x on CUDA, grad=False, a torch method and the exact divergence."""
    cuda_graph = check_bool(cuda_graph, "cuda_graph")
    if cuda_graph:
        if x.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs x on a CUDA device, got {x.device}")
        if grad is not False or method in _SCIPY:
            raise ValueError(
                f"cuda_graph=True needs grad=False and a torch method, got grad={grad!r}, method={method!r}"
            )
        if divergence != "exact":
            # Measured on an H200 (2026-11-28): a captured Hutchinson evaluation replayed values that
            # differ from the eager ones after a few steps (218 nats off), although replays at the
            # capture point agreed; until the cause is found, only the exact divergence is captured.
            raise ValueError(
                f"cuda_graph=True needs divergence='exact' (captured Hutchinson evaluations were measured "
                f"to replay wrong values), got divergence={divergence!r}"
            )
    return cuda_graph


# ------------------------------------------------------------------ log-likelihood
def log_likelihood(
    sde: LinearSDE,
    model: ScoreLike,
    x: Tensor,
    *,
    divergence: str = "hutchinson",
    probe: str = "rademacher",
    n_probes: int = 1,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    steps: int | None = None,
    generator: GeneratorLike = None,
    return_latent: bool = False,
    time_variable: str = "auto",
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    grad: bool | str = False,
    chunk_size: int | None = None,
    solver_options: dict | None = None,
    cuda_graph: bool = False,
    max_nfe: int = DEFAULT_MAX_NFE,
    model_kwargs: dict | None = None,
    progress: bool = False,
    per_sample: bool = False,
) -> LikelihoodResult:
    r"""log p_{t_min}(x) through the probability-flow ODE, in nats.

    Integrates the augmented ODE ``(x_t, delta_t)`` with ``dx/dt = f x - 1/2 g^2 s(x, t)``
    and ``d delta/dt = f D - 1/2 g^2 tr(ds/dx)`` from ``t_min`` to ``T`` and returns

        log p_{t_min}(x) = log p_T(z) + delta_T,     z = x_T.

    Args:
        sde: the forward process (a :class:`~sdesolve.sde.LinearSDE`).
        model: a :class:`~sdesolve.ScoreModel` of ``sde`` or a callable score ``s(x, t)``.
        x: data of shape (B, *event), B >= 1, any event rank, floating point, finite.
        divergence: ``"hutchinson"`` (one vector-Jacobian product per probe; unbiased) or
            ``"exact"`` (the full trace, D reverse-mode products in chunks: small D only).
        probe: Hutchinson probe law, ``"rademacher"`` (lower variance) or ``"gaussian"``
            (which probes the whole drift where the drift contracts, as score_sde does: see
            the module docstring).
        n_probes: probes per sample, drawn once per solve and averaged.
        method: a name of ``ODE(...)``'s vocabulary (:mod:`sdesolve.solvers.methods`): adaptive
            (``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``, ``"adaptive_heun"``:
            :func:`sdesolve.solvers.adaptive.integrate`, RMS norm over (x, delta), last step on T;
            torchdiffeq with ``grad="adjoint"``), fixed-step with ``steps`` (``"euler"``,
            ``"midpoint"``, ``"heun"``, ``"rk3"``, ``"rk4"``), or ``"scipy-<name>"`` (``solve_ivp``
            on the host in float64: score_sde's approach, a cross-check). Deprecated: ``"heun2"``
            (= ``"heun"``), torchdiffeq's ``"heun3"``, ``"explicit_adams"``, ``"implicit_adams"``.
        rtol, atol: tolerances of adaptive methods, in [10 eps, 1) of the integration dtype.
        t_min: the time whose density is computed (default ``sde.t_min``), in [0, T).
        steps: number of uniform steps (in the time variable) of fixed-step methods.
        generator: draws the Hutchinson probes (on x's device); a list of B generators draws
            sample i's from generator i alone (an estimate then does not depend on its batch).
        return_latent: also return z = x_T.
        time_variable: ``"t"`` (process time) or ``"log_snr"`` (u = log(sigma/alpha), an exact
            change of variables; needs a finite log-SNR at t_min and T). ``"auto"``: ``"log_snr"``
            for :class:`~sdesolve.sde.DiscreteVPSDE` (whose drift jumps at every knot in t, not in
            u), else ``"t"`` (measured faster for the smooth schedules; module docstring).
        prior_logp: log-density at z instead of ``sde.prior_logp`` (e.g. a known law's exact log p_T).
        grad: ``False`` (default): no autograd graph (memory independent of the NFE), results
            detached. ``True``: differentiable through the solver (to x and the parameters).
            ``"adjoint"``: through torchdiffeq's ``odeint_adjoint`` (adaptive; memory flat in NFE).
        chunk_size: basis vectors per batched product of the exact divergence.
        solver_options: options of the adaptive integrator, ``{"first_step": 1e-3}`` or an error
            ``"norm"`` (:func:`sdesolve.solvers.adaptive.integrate`); with ``grad="adjoint"``,
            torchdiffeq's ``options``.
        cuda_graph: replay one captured evaluation of the augmented dynamics at every evaluation
            (same numbers, no launch overhead; checked against eager evaluations before use).
            Needs CUDA, ``grad=False``, a torch method, ``divergence="exact"``, a capturable network.
        max_nfe: the most network evaluations of the solve (default 10 000); past it the solve
            ends with :class:`~sdesolve.solvers.adaptive.AdaptiveSolveError` naming t and the NFE.
        model_kwargs: extra keyword inputs of the network (class labels, encoder hidden states,
            ...), bound on the model as in :func:`~sdesolve.sample`: a tensor with a leading
            dimension has one row per sample of x (or 1, shared).
        progress: show a progress bar of the solve (the fraction of [t_min, T] reached and
            the NFE so far; tqdm where installed, else a line on stderr).
        per_sample: adaptive methods only: each sample's (x, delta) is its own adaptive solve
            (its own steps, accept/reject and error norm, with one batched network call per
            stage: :func:`sdesolve.solvers.adaptive.integrate` with ``per_sample=True``), so a
            sample's log-likelihood does not depend on its batch neighbours; ``nfe`` counts the
            batched calls. Not with ``grad="adjoint"``, ``cuda_graph`` or a ``solver_options`` norm.

    Precision: the ODE is integrated in at least float32 (half data are promoted), the network is
    called in its own dtype, and the results are in the integration dtype (module docstring).

    Returns a :class:`LikelihoodResult` (``logp``, ``prior_logp``, ``delta_logp``, ``nfe``, ``z``).
    Reference: Song et al. (2021), Sec. 4.3 and App. D.2; Grathwohl et al. (2019).
    """
    plan = _check_log_likelihood(
        sde, x, divergence=divergence, probe=probe, n_probes=n_probes, method=method, rtol=rtol, atol=atol,
        t_min=t_min, steps=steps, generator=generator, return_latent=return_latent, time_variable=time_variable,
        prior_logp=prior_logp, grad=grad, chunk_size=chunk_size, solver_options=solver_options,
        cuda_graph=cuda_graph, max_nfe=max_nfe,
    )  # fmt: skip
    plan = _check_per_sample(plan, per_sample)
    with SolveProgress(check_bool(progress, "progress"), "log_likelihood") as bar:
        return _log_likelihood(sde, bind_kwargs(as_model(model, sde), model_kwargs), x, plan, generator, bar)


def _network_dtype(model: object, default: torch.dtype) -> torch.dtype:
    """The dtype a :class:`ScoreModel`'s network computes in: that of its first floating
    parameter or buffer, else ``default`` (a parameter-free callable, e.g. an exact score)."""
    net = model.net if isinstance(model, ScoreModel) else model
    if isinstance(net, torch.nn.Module):
        for p in list(net.parameters()) + list(net.buffers()):
            if p.is_floating_point():
                return p.dtype
    return default


class _Counter:
    """Counts one call's evaluations of the augmented dynamics and stops the solve at ``max_nfe``."""

    def __init__(self, func: Callable[[Tensor, Tensor], Tensor], max_nfe: int, tmap: _TimeMap, method: str) -> None:
        self.func, self.max_nfe, self.tmap, self.method = func, max_nfe, tmap, method
        self.nfe, self.active = 0, True

    def __call__(self, u: Tensor, y: Tensor) -> Tensor:
        if self.active:
            if self.nfe >= self.max_nfe:
                t = float(self.tmap(torch.as_tensor(u).detach().reshape(()))[0])
                raise AdaptiveSolveError(
                    f"log_likelihood ({self.method}) stopped at t = {t:.6g} after {self.nfe} network evaluations "
                    f"(max_nfe={self.max_nfe}); raise max_nfe or the tolerances, or check the model there",
                    t,
                    self.nfe,
                )
            self.nfe += 1
        return self.func(u, y)


def _log_likelihood(
    sde: LinearSDE,
    model: ScoreModel,
    x: Tensor,
    plan: _Plan,
    generator: GeneratorLike,
    bar: SolveProgress | None = None,
) -> LikelihoodResult:
    """The numerics of :func:`log_likelihood` (arguments checked)."""
    dtype = plan.dtype
    xw = x.to(dtype)
    B, shape = x.shape[0], x.shape
    tmap = _TimeMap(sde, plan.time_variable, plan.t_min)
    func = _augmented_dynamics(sde, model, tmap, plan, xw, generator)
    y0 = torch.cat([xw.reshape(-1), torch.zeros(B, dtype=dtype, device=x.device)])
    if plan.cuda_graph:
        u0, u1 = (torch.tensor(u, dtype=torch.float64, device=y0.device) for u in (tmap.u0, tmap.u1))
        func = _GraphedDynamics(func, u0, y0, model, u1)
    if bar is not None:
        func = bar.track(func, tmap.u0, tmap.u1)
    counted = _Counter(func, plan.max_nfe, tmap, plan.method)
    if plan.method in _SCIPY:
        yT = _solve_scipy(counted, y0, tmap.u0, tmap.u1, plan)
    elif plan.method in FIXED:
        with torch.set_grad_enabled(plan.grad is not False):
            yT = _solve_fixed(counted, y0, tmap.u0, tmap.u1, plan)
    elif plan.method in ADAPTIVE and plan.grad != "adjoint":
        with torch.set_grad_enabled(plan.grad is not False):
            yT = _solve_adaptive(counted, y0, tmap, plan, B)
    else:  # the adjoint, and torchdiffeq's deprecated fixed-step methods
        yT = _solve_torchdiffeq(counted, y0, tmap, plan, model)
    counted.active = False  # an adjoint backward pass evaluates again: not this call's budget
    z = yT[:-B].view(shape)
    delta = yT[-B:]
    with torch.set_grad_enabled(plan.grad is not False):
        plp = sde.prior_logp(z) if plan.prior_logp is None else plan.prior_logp(z)
    if not isinstance(plp, Tensor) or plp.shape != (B,):
        got = tuple(plp.shape) if isinstance(plp, Tensor) else type(plp).__name__
        raise ValueError(f"prior_logp must return a tensor of shape ({B},), got {got}")
    plp = plp.to(device=x.device, dtype=dtype)
    return LikelihoodResult(
        logp=plp + delta, prior_logp=plp, delta_logp=delta, nfe=counted.nfe, z=z if plan.return_latent else None
    )


def _augmented_dynamics(
    sde: LinearSDE, model: ScoreModel, tmap: _TimeMap, plan: _Plan, xw: Tensor, generator: GeneratorLike
) -> Callable[[Tensor, Tensor], Tensor]:
    """``func(u, y)``: (dx/du, d delta/du) of the flattened state y = (x, delta) in the integration dtype."""
    B, D, shape = xw.shape[0], xw[0].numel(), xw.shape
    create_graph = plan.grad is not False
    net_dtype = _network_dtype(model, plan.dtype)
    probes = None
    # the linear part's factor: D, or mean_k |eps_k|^2 where the whole drift is probed (Gaussian
    # probes and a contracting drift, c = int f dt < 0: the lower-variance form; module docstring)
    lin: float | Tensor = float(D)
    if plan.divergence == "hutchinson":
        probes = _draw_probes(plan.probe, plan.n_probes, xw, generator)
        ends = torch.tensor([plan.t_min, float(sde.T)], dtype=torch.float64)
        c = float(sde._log_alpha(ends[1:]) - sde._log_alpha(ends[:1]))
        if plan.probe == "gaussian" and c < 0:
            lin = probes.pow(2).reshape(plan.n_probes, B, D).sum(-1).mean(0)

    def velocity(u: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        t, dtdu = tmap(u.to(device=xt.device))

        def score_fn(xx: Tensor) -> Tensor:
            return model.score(xx.to(net_dtype), t).to(xx.dtype)

        if plan.divergence == "exact":
            s, tr = _exact_trace(score_fn, xt, plan.chunk_size, create_graph)
        else:
            assert probes is not None  # drawn above for plan.divergence == "hutchinson"
            s, tr = _hutchinson_trace(score_fn, xt, probes, create_graph)
        # dx/du = a x - b s and d delta/du = a lin - b tr, with a = f dt/du, b = g^2/2 dt/du
        coef = torch.stack((sde._f(t), 0.5 * sde._g2(t)))
        if dtdu is not None:
            coef = coef * dtdu
        a, b = coef.to(xt.dtype).unbind()  # 0-d, or (B,) for per-sample times (per_sample=True)
        dx = torch.addcmul(bcast(a, xt) * xt, bcast(b, xt), s, value=-1.0)
        return dx, torch.addcmul(a * lin, b, tr, value=-1.0)

    def func(u: Tensor, y: Tensor) -> Tensor:
        dx, dd = velocity(u, y[:-B].view(shape))
        return torch.cat([dx.reshape(-1), dd.reshape(-1)])

    return func


def _solve_fixed(func: Callable[[Tensor, Tensor], Tensor], y0: Tensor, u0: float, u1: float, plan: _Plan) -> Tensor:
    """``steps`` uniform steps of the explicit Runge-Kutta tableau of ``ODE(method)``."""
    tab = TABLEAUX[plan.method]
    assert plan.steps is not None  # fixed-step methods require steps (checked in the plan)
    grid = torch.linspace(u0, u1, plan.steps + 1, dtype=torch.float64).tolist()
    y = y0
    for i in range(plan.steps):
        u, h = grid[i], grid[i + 1] - grid[i]
        ks: list[Tensor] = []
        for cj, aj in zip(tab.c, tab.A):
            yj = y
            for a, k in zip(aj, ks):
                if a != 0.0:
                    yj = yj + (h * a) * k
            uj = grid[i + 1] if cj == 1.0 else u + cj * h
            # filled on the device: torch.tensor(uj, device=...) copies a host scalar, one
            # host-device synchronization per evaluation on a GPU
            ks.append(func(torch.full((), uj, dtype=torch.float64, device=y.device), yj))
        for bj, k in zip(tab.b, ks):
            if bj != 0.0:
                y = y + (h * bj) * k
    return y


def _solve_adaptive(
    func: Callable[[Tensor, Tensor], Tensor], y0: Tensor, tmap: _TimeMap, plan: _Plan, B: int
) -> Tensor:
    """The embedded pair of :mod:`sdesolve.solvers.adaptive` from u0 to u1, its last step landing on u1.

    Its errors (step-size underflow, NaN from the model) name the process time t. The evaluation
    budget is the caller's counter (``func``), so the integrator's own is set one above it.
    """
    opts = plan.solver_options or {}

    def time_of(u: float) -> float:
        return float(tmap(torch.tensor(u, dtype=torch.float64))[0])

    if plan.per_sample:
        return _solve_adaptive_per_sample(func, y0, tmap, plan, B, time_of)

    y, _, _ = _adaptive_integrate(
        func, y0, tmap.u0, tmap.u1, EMBEDDED_TABLEAUX[plan.method], plan.rtol, plan.atol, plan.max_nfe + 1,
        opts.get("norm") or rms_norm, opts.get("first_step"), plan.method, time_of=time_of,
    )  # fmt: skip
    return y


def _solve_adaptive_per_sample(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    tmap: _TimeMap,
    plan: _Plan,
    B: int,
    time_of: Callable[[float], float],
) -> Tensor:
    """Each sample's own adaptive solve (``per_sample=True``): the flattened state (x, delta) is
    viewed as B rows (x_i, delta_i), and ``func`` is called with per-sample times u of shape (B,).
    The integrator's budget is ``max_nfe`` itself (it raises first, naming a sample's t)."""
    n = y0.numel() - B

    def rows(y: Tensor) -> Tensor:
        return torch.cat([y[:n].view(B, -1), y[n:, None]], dim=1)

    def flat(rows_: Tensor) -> Tensor:
        return torch.cat([rows_[:, :-1].reshape(-1), rows_[:, -1]])

    y, _, _, _ = _adaptive_integrate_per_sample(
        lambda u, r: rows(func(u, flat(r))), rows(y0), tmap.u0, tmap.u1, EMBEDDED_TABLEAUX[plan.method],
        plan.rtol, plan.atol, plan.max_nfe, (plan.solver_options or {}).get("first_step"), plan.method,
        time_of=time_of,
    )  # fmt: skip
    return flat(y)


def _check_per_sample(plan: _Plan, per_sample: Any) -> _Plan:
    """The plan with ``per_sample`` checked against the method, grad, cuda_graph and solver_options."""
    if not check_bool(per_sample, "per_sample"):
        return plan
    if plan.method not in ADAPTIVE or plan.grad == "adjoint":
        raise ValueError(
            f"per_sample=True needs an adaptive method {tuple(ADAPTIVE)} without grad='adjoint', got "
            f"method={plan.method!r}, grad={plan.grad!r}"
        )
    if plan.cuda_graph:
        raise ValueError("per_sample=True cannot be combined with cuda_graph=True (the capture takes one time)")
    if (plan.solver_options or {}).get("norm") is not None:
        raise ValueError(
            "solver_options['norm'] cannot be combined with per_sample=True (each sample's error is its RMS)"
        )
    import dataclasses

    return dataclasses.replace(plan, per_sample=True)


def _solve_torchdiffeq(
    func: Callable[[Tensor, Tensor], Tensor], y0: Tensor, tmap: _TimeMap, plan: _Plan, model: ScoreModel
) -> Tensor:
    import torchdiffeq

    u = torch.tensor([tmap.u0, tmap.u1], dtype=y0.dtype, device=y0.device)
    options: dict[str, Any] = {}
    if plan.method in _TORCHDIFFEQ_FIXED:
        assert plan.steps is not None  # fixed-step methods require steps (checked in the plan)
        grid = torch.linspace(tmap.u0, tmap.u1, plan.steps + 1, dtype=torch.float64)

        def grid_constructor(f: Any, y: Tensor, t: Tensor, grid: Tensor = grid) -> Tensor:
            return grid.to(device=t.device, dtype=t.dtype)

        options["grid_constructor"] = grid_constructor
    else:
        # land exactly on the end point: never evaluate the model beyond T (torchdiffeq would
        # otherwise step past it and interpolate back)
        options["step_t"] = u[1:]
    options.update(plan.solver_options or {})
    kw = dict(rtol=plan.rtol, atol=plan.atol, method=plan.method, options=options)
    if plan.grad is False:
        with torch.no_grad():
            return torchdiffeq.odeint(func, y0, u, **kw)[-1]
    if plan.grad == "adjoint":
        params = tuple(p for p in model.parameters() if p.requires_grad)
        kw["adjoint_options"] = {"norm": "seminorm"}
        return torchdiffeq.odeint_adjoint(_FuncModule(func), y0, u, adjoint_params=params, **kw)[-1]
    return torchdiffeq.odeint(func, y0, u, **kw)[-1]


class _GraphedDynamics:
    """``func(u, y)`` captured once in a CUDA graph; each call copies (u, y) into the static
    inputs, replays, and returns a copy of the static output (solvers keep their stages).

    The capture is verified before use: replays at (u0, y0) and (u1, y0 / 2) must reproduce
    eager evaluations there (a replay runs the same kernels, so they agree to round-off). On an H200 a
    Hutchinson capture taken right after an exact-divergence solve in the same process replayed
    wrong values (218 nats off, found by ``test_cuda_graph_gives_the_eager_answer``; cause not yet
    found). A failed check re-captures; a second failure raises instead of integrating wrong dynamics.
    """

    _graph: torch.cuda.CUDAGraph | None

    def __init__(
        self, func: Callable[[Tensor, Tensor], Tensor], u: Tensor, y: Tensor, model: ScoreModel, u_end: Tensor
    ) -> None:
        self._u, self._y = u.clone(), y.clone()
        self._model = model
        for _attempt in range(2):
            self._graph, self._out, self._nfe_per_call = capture_cuda_graph(
                lambda: func(self._u, self._y), device=y.device, warmup=2, model=model
            )
            if self._reproduces(func, u, y) and self._reproduces(func, u_end, 0.5 * y):
                return
            self._graph = None
        raise RuntimeError(
            "cuda_graph=True: the captured dynamics do not reproduce an eager evaluation (after a re-capture); "
            "pass cuda_graph=False"
        )

    def _reproduces(self, func: Callable[[Tensor, Tensor], Tensor], u: Tensor, y: Tensor) -> bool:
        """Whether a replay at (u, y) equals an eager evaluation there (to 1e-4 of its largest entry)."""
        nfe0 = self._model.nfe
        ref = func(u, y)
        got = self(u, y)
        self._model.nfe = nfe0  # the check is not an evaluation of the solve
        scale = float(ref.abs().max()) + torch.finfo(ref.dtype).tiny
        return float((got - ref).abs().max()) <= 1e-4 * scale

    def __call__(self, u: Tensor, y: Tensor) -> Tensor:
        self._u.copy_(u)
        self._y.copy_(y)
        assert self._graph is not None  # __init__ returns only with a verified capture
        self._graph.replay()
        self._model.nfe += self._nfe_per_call  # the model's own running count (LikelihoodResult.nfe counts calls)
        return self._out.clone()


class _FuncModule(torch.nn.Module):
    def __init__(self, func: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.func = func

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.func(t, y)


def _solve_scipy(func: Callable[[Tensor, Tensor], Tensor], y0: Tensor, u0: float, u1: float, plan: _Plan) -> Tensor:
    """solve_ivp on the host in float64 with the flattened state (score_sde's approach)."""
    from scipy.integrate import solve_ivp

    dev, dt = y0.device, y0.dtype

    def fun(u: float, y: np.ndarray) -> np.ndarray:
        yt = torch.from_numpy(y).to(device=dev, dtype=dt)
        with torch.no_grad():
            out = func(torch.tensor(u, dtype=torch.float64, device=dev), yt)
        return out.detach().to(torch.float64).cpu().numpy()

    init = y0.detach().to(torch.float64).cpu().numpy()
    name = plan.method[len("scipy-") :]
    sol = solve_ivp(fun, (u0, u1), init, method=name, rtol=plan.rtol, atol=plan.atol)
    if not sol.success:
        raise RuntimeError(f"scipy solve_ivp ({name}) failed: {sol.message}")
    return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).to(device=dev, dtype=dt)


# ------------------------------------------------------------------ bits per dimension
def bits_per_dim(
    sde: LinearSDE,
    model: ScoreLike,
    x: Tensor,
    *,
    data_range: tuple[float, float] = (-1.0, 1.0),
    n_bits: int = 8,
    levels: int | None = None,
    dequantize: str | None = "uniform",
    n_repeats: int = 1,
    generator: GeneratorLike = None,
    dtype: torch.dtype | None = None,
    **likelihood_kwargs: Any,
) -> Tensor:
    r"""Bits per dimension of n-bit data under the probability-flow likelihood, shape (B,).

    Data are integers k in {0, ..., 2^n - 1} per coordinate. Uniform dequantization draws
    y = (k + u) / 2^n on [0, 1] with u ~ U[0, 1) and maps it to the model's range,
    x = lo + (hi - lo) y. The density of the dequantized integers k + u (bins of width 1)
    is p(x) |dx/d(k+u)|^D = p(x) ((hi - lo) / 2^n)^D, so

        bpd = -(log p(x) + D log((hi - lo) / 2^n)) / (D ln 2)
            = -log p(x) / (D ln 2) - log2(hi - lo) + n,

    an upper bound (in expectation over u, by Jensen) on the discrete model's
    -log2 P(k) / D. For 8-bit data in [-1, 1] the offset is 8 - 1 = 7: the convention of
    score_sde's likelihood.py (``offset = 7 - inverse_scaler(-1)``, i.e. 7 for data scaled
    to [-1, 1], 8 for [0, 1]) and of Song et al. (2021), Table 2.

    Args:
        sde, model: as in :func:`log_likelihood`.
        x: integer data (uint8/int tensors with values in [0, 2^n - 1]) or float data in
            ``data_range``. With ``dequantize="uniform"`` float data must lie on the n-bit
            grid ``lo + (hi - lo) k / (2^n - 1)`` (e.g. ``ToTensor()`` images, k / 255,
            scaled), which is rounded back to k. With ``dequantize=None`` float data are
            taken as continuous data already in ``data_range`` (e.g. already dequantized),
            and integer data are placed at the bin centres (k + 1/2) / 2^n.
        data_range: (lo, hi), the range the model was trained on (float data must be in it).
        n_bits: bits per coordinate of the data (1 to 16).
        levels: the number of values per coordinate when it is not a power of two (e.g. 17
            grey levels of scikit-learn's digits); overrides ``n_bits``, and the offset becomes
            ``log2(levels) - log2(hi - lo)``.
        dequantize: ``"uniform"`` or ``None``.
        n_repeats: dequantization draws averaged per sample (each one likelihood solve).
        generator: draws the dequantization noise and the Hutchinson probes; a list of B
            generators draws sample i's from generator i alone.
        dtype: floating dtype of the model input for integer data (default: the default dtype).
        **likelihood_kwargs: passed to :func:`log_likelihood` (divergence, method, rtol, ...,
            ``progress=True`` for a progress bar of each solve).

    Returns the bits/dim in the integration dtype of :func:`log_likelihood` (at least float32).

    Reference: Song et al. (2021), App. D.2 and Table 2; Theis, van den Oord, Bethge (2016)
    for uniform dequantization as a bound on the discrete log-likelihood.
    """
    lo, hi, levels, k, dtype = _check_bits_per_dim(
        x, data_range, n_bits, levels, dequantize, n_repeats, generator, dtype
    )
    D = x[0].numel()
    offset = -math.log2(hi - lo) + math.log2(levels)
    total: Tensor | None = None
    for _ in range(n_repeats):
        if k is None:
            xs = x.to(dtype)
        else:
            if dequantize == "uniform":
                u = draw("uniform", k.shape, generator, device=k.device, dtype=dtype)
            else:
                u = torch.full_like(k, 0.5)
            xs = lo + (hi - lo) * (k + u) / levels
        res = log_likelihood(sde, model, xs, generator=generator, **likelihood_kwargs)
        bpd = -res.logp / (D * math.log(2.0)) + offset
        total = bpd if total is None else total + bpd
    assert total is not None  # n_repeats >= 1
    return total / n_repeats


def _check_bits_per_dim(
    x: Any, data_range: Any, n_bits: Any, levels: Any, dequantize: Any, n_repeats: Any, generator: Any, dtype: Any
):
    """Check the arguments of :func:`bits_per_dim`; return ``(lo, hi, levels, k, dtype)``, with k
    the integer levels (in ``dtype``) of discrete data or None for continuous data."""
    check_tensor(x, "x", floating=False, min_dim=1, nonempty=True)
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"x must be an integer or floating tensor, got dtype {x.dtype}")
    n_bits = check_int(n_bits, "n_bits", minimum=1, maximum=16)
    if not isinstance(data_range, (tuple, list)) or len(data_range) != 2:
        raise TypeError(f"data_range must be a pair of numbers (lo, hi), got {describe(data_range)}")
    lo = check_real(data_range[0], "data_range[0]")
    hi = check_real(data_range[1], "data_range[1]")
    if not lo < hi:
        raise ValueError(f"data_range must be (lo, hi) with lo < hi, got {data_range!r}")
    levels = 2**n_bits if levels is None else check_int(levels, "levels", minimum=2)
    if dequantize is not None:
        check_choice(dequantize, "dequantize", ("uniform",))
    n_repeats = check_int(n_repeats, "n_repeats", minimum=1)
    _check_generator(generator, x)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {describe(dtype)}")
    if not x.is_floating_point():
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if bool((x < 0).any()) or bool((x > levels - 1).any()):
            raise ValueError(
                f"integer data must lie in [0, {levels - 1}] ({levels} levels), got values in "
                f"[{int(x.min())}, {int(x.max())}]; pass n_bits= or levels= for data of another depth"
            )
        return lo, hi, levels, x.to(dtype), dtype
    check_tensor(x, "x", min_dim=1, finite=True)
    dtype = x.dtype if dtype is None else dtype
    xmin, xmax = float(x.min()), float(x.max())
    tol = 1e-6 * (hi - lo)
    if xmin < lo - tol or xmax > hi + tol:
        raise ValueError(
            f"float data must lie in data_range [{lo:g}, {hi:g}], got values in [{xmin:g}, {xmax:g}]"
            + _range_hint(x, lo, hi, levels)
        )
    if dequantize is None:
        return lo, hi, levels, None, dtype
    grid = (x.to(torch.float64) - lo) / (hi - lo) * (levels - 1)
    kk = torch.round(grid)
    if bool(((grid - kk).abs() > 1e-3).any()):
        raise ValueError(
            f"dequantize='uniform' needs float data on the {levels}-level grid of data_range=({lo:g}, {hi:g}), "
            f"lo + (hi - lo) k / {levels - 1} for k = 0..{levels - 1}"
            + (_range_hint(x, lo, hi, levels) or "; for continuous (already dequantized) data pass dequantize=None")
        )
    return lo, hi, levels, kk.to(dtype), dtype


def _on_grid(x: Tensor, lo: float, hi: float, levels: int) -> bool:
    g = (x.to(torch.float64) - lo) / (hi - lo) * (levels - 1)
    return bool(((g - torch.round(g)).abs() <= 1e-3).all()) and bool(
        (g > -1e-3).all() and (g < levels - 1 + 1e-3).all()
    )


def _range_hint(x: Tensor, lo: float, hi: float, levels: int) -> str:
    """Which argument fixes float data on the wrong scale: [0, levels - 1], [0, 1] or [-1, 1]."""
    top = levels - 1
    for a, b, what in ((0.0, float(top), f"[0, {top}]"), (0.0, 1.0, "[0, 1]"), (-1.0, 1.0, "[-1, 1]")):
        if (a, b) != (lo, hi) and _on_grid(x, a, b, levels):
            if b == top:
                fix = f"pass them as integers (x.round().long()) for a model on data_range=({lo:g}, {hi:g})"
            else:
                fix = (
                    f"pass data_range=({a:g}, {b:g}) if the model was trained on {what}, else rescale them to "
                    f"[{lo:g}, {hi:g}] or pass integers k = round({'x' if a == 0 else '(x + 1) / 2'} * {top})"
                )
            return f"; the data lie on the {levels}-level grid of {what}: {fix}"
    return ""
