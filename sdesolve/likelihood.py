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
solve (Hutchinson 1989; Grathwohl et al. 2019, FFJORD). The linear part ``f(t) D`` of the
divergence is added in closed form, so only the score's trace is estimated.

Time variable. The ODE can be integrated in t (default) or in u = -lambda/2 = log(sigma/alpha),
minus half the log-SNR (``time_variable="log_snr"``). The change of variables is exact: with
lambda'(t) = -g(t)^2 / sigma(t)^2,

    dt/du = 2 sigma(t)^2 / g(t)^2,    dx/du = v(x, t(u)) dt/du,    d delta/du = div v dt/du,

and the integral is the same. For VE and VDM's linear schedule u is an affine function of t
(the two differ only through the adaptive controller's first step); for VP and sub-VP the
measured work-precision favours t. For a variance-preserving process dx/du = -sigma^2 (x + s)
with sigma^2 = sigmoid(2u): in u the ODE does not depend on the schedule, which makes u the
right variable for piecewise schedules (DiscreteVPSDE: 158 NFE in u against 2228 in t, to a
1e-7 tolerance). ``notes/bench_likelihood.md`` has the measurements.

References:
    Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole (2021). Score-based generative modeling
    through stochastic differential equations. ICLR. Sec. 4.3, App. D.2.
    Chen, Rubanova, Bettencourt, Duvenaud (2018). Neural ordinary differential equations.
    Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud (2019). FFJORD. ICLR.
    Kingma, Salimans, Poole, Ho (2021). Variational diffusion models (the log-SNR variable).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._utils import check_x, sum_event
from .model import as_model
from .sde.discrete import DiscreteVPSDE

__all__ = ["LikelihoodResult", "log_likelihood", "bits_per_dim"]

DIVERGENCES = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")
TIME_VARIABLES = ("auto", "t", "log_snr")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
_METHODS = ADAPTIVE_METHODS + FIXED_METHODS + tuple(f"scipy-{m}" for m in SCIPY_METHODS)


@dataclass
class LikelihoodResult:
    """What :func:`log_likelihood` returns.

    Attributes:
        logp: log p_{t_min}(x) in nats, shape (B,): ``prior_logp + delta_logp``.
        prior_logp: the prior log-density at the latent, log p_T(z), shape (B,).
        delta_logp: the integral of the divergence from t_min to T, shape (B,).
        nfe: network evaluations of the call (each is one forward pass of the model).
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

    ``"t"``: u = t. ``"log_snr"``: u = -lambda(t)/2 = log(sigma/alpha), increasing in t,
    t(u) = t_of_log_snr(-2u) and dt/du = 2 sigma^2 / g^2 = -2 / lambda'(t).
    """

    def __init__(self, sde, kind: str, t_min: float):
        self.sde, self.kind = sde, kind
        T = float(sde.T)
        if kind == "t":
            self.u0, self.u1 = float(t_min), T
            return
        lam = sde._log_snr(torch.tensor([t_min, T], dtype=torch.float64))
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(
                f"time_variable='log_snr' needs a finite log-SNR at t_min and T, got {lam.tolist()} "
                f"for t_min={t_min:g}; raise t_min or pass time_variable='t'"
            )
        self.u0, self.u1 = float(-0.5 * lam[0]), float(-0.5 * lam[1])
        self.t_lo, self.t_hi = float(t_min), T

    def __call__(self, u: Tensor) -> tuple[Tensor, Tensor | None]:
        """(t, dt/du) as float64 tensors for the integration variable u (dt/du = None for u = t)."""
        u = u.to(torch.float64)
        if self.kind == "t":
            return u, None
        t = self.sde._t_of_log_snr(-2.0 * u).clamp(self.t_lo, self.t_hi)
        sigma2 = torch.exp(2.0 * self.sde._log_sigma(t))
        return t, 2.0 * sigma2 / self.sde._g2(t)


# ------------------------------------------------------------------ divergence
def _draw_probes(kind: str, n: int, x: Tensor, generator) -> Tensor:
    shape = (n,) + tuple(x.shape)
    if kind == "rademacher":
        r = torch.randint(0, 2, shape, generator=generator, device=x.device)
        return (2 * r - 1).to(x.dtype)
    return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)


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


def hutchinson_trace(score_fn, x: Tensor, probes: Tensor, *, create_graph: bool = False):
    """The score s(x) and Hutchinson's estimate of tr(ds/dx), shape (B,).

    ``tr(A) = E[eps^T A eps]`` for probes with E[eps eps^T] = I; the estimate averages
    ``eps^T A eps`` over ``probes`` (shape (n_probes, *x.shape)), each from one
    vector-Jacobian product. The Jacobian is taken per sample (block-diagonal over the batch).
    """
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


def exact_trace(score_fn, x: Tensor, *, chunk_size: int | None = None, create_graph: bool = False):
    """The score s(x) and the exact tr(ds/dx) per sample, shape (B,).

    One forward pass, then reverse-mode products with the basis vectors e_j (the same e_j
    for every sample), ``chunk_size`` of them at a time through ``torch.func.vmap``; the
    trace sums the j-th coordinate of the j-th product. Memory is bounded by the chunk.
    """
    B = x.shape[0]
    D = x[0].numel()
    if chunk_size is None:
        chunk_size = max(1, min(D, 2**24 // max(1, B * D)))
    with torch.enable_grad():
        xr = _leaf(x, create_graph)
        s, vjp_fn = torch.func.vjp(score_fn, xr)
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


# ------------------------------------------------------------------ validation
def _check_positive(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(v).__name__}")
    v = float(v)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {v}")
    return v


def _check_choice(name: str, v, choices) -> str:
    if v not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {v!r}")
    return v


def _check_finite(x: Tensor, name: str = "x") -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite: it contains NaN or inf")


# ------------------------------------------------------------------ log-likelihood
def log_likelihood(
    sde,
    model,
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
    generator: torch.Generator | None = None,
    return_latent: bool = False,
    time_variable: str = "auto",
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    grad: bool | str = False,
    chunk_size: int | None = None,
    solver_options: dict | None = None,
    cuda_graph: bool = False,
) -> LikelihoodResult:
    r"""log p_{t_min}(x) through the probability-flow ODE, in nats.

    Integrates the augmented ODE ``(x_t, delta_t)`` with ``dx/dt = f x - 1/2 g^2 s(x, t)``
    and ``d delta/dt = f D - 1/2 g^2 tr(ds/dx)`` from ``t_min`` to ``T`` and returns

        log p_{t_min}(x) = log p_T(z) + delta_T,     z = x_T.

    Args:
        sde: the forward process (a :class:`~sdesolve.sde.LinearSDE`).
        model: a :class:`~sdesolve.ScoreModel` of ``sde`` or a callable score ``s(x, t)``.
        x: data of shape (B, *event), any event rank, floating point, finite.
        divergence: ``"hutchinson"`` (one vector-Jacobian product per probe; unbiased) or
            ``"exact"`` (the full trace, D reverse-mode products in chunks: small D only).
        probe: Hutchinson probe law, ``"rademacher"`` (lower variance) or ``"gaussian"``.
        n_probes: probes per sample, drawn once per solve and averaged.
        method: a torchdiffeq method, adaptive (``"dopri5"``, ``"dopri8"``, ``"bosh3"``,
            ``"fehlberg2"``, ``"adaptive_heun"``) or fixed-step (``"euler"``, ``"midpoint"``,
            ``"heun2"``, ``"heun3"``, ``"rk4"``, ``"explicit_adams"``, ``"implicit_adams"``,
            with ``steps``), or ``"scipy-<name>"`` for ``scipy.integrate.solve_ivp`` (RK45,
            RK23, DOP853, Radau, BDF, LSODA) on the host in float64 with a flattened state:
            the approach of score_sde's likelihood.py, used as an independent cross-check.
        rtol, atol: tolerances of adaptive methods (> 0).
        t_min: the time whose density is computed (default ``sde.t_min``), in [0, T).
        steps: number of uniform steps (in the time variable) of fixed-step methods.
        generator: draws the Hutchinson probes.
        return_latent: also return z = x_T.
        time_variable: ``"t"`` integrates in the process time, ``"log_snr"`` in
            u = -lambda/2 = log(sigma/alpha) (exact change of variables; needs a finite
            log-SNR at t_min and T, so t_min > 0 for VP). ``"auto"`` (default): ``"log_snr"``
            for :class:`~sdesolve.sde.DiscreteVPSDE` (its drift jumps at every knot of the
            discrete schedule, while in u the ODE does not depend on the schedule at all), else
            ``"t"`` (measured faster for the smooth built-in schedules).
        prior_logp: log-density used at z instead of ``sde.prior_logp`` (e.g. the exact
            log p_T of a known data law).
        grad: ``False`` (default): no autograd graph across steps (memory independent of
            the NFE), results detached. ``True``: differentiable through the solver
            (gradients reach x and the model's parameters). ``"adjoint"``: differentiable
            through torchdiffeq's ``odeint_adjoint`` (memory independent of NFE).
        chunk_size: basis vectors per batched product of the exact divergence.
        solver_options: extra ``options`` for torchdiffeq (e.g. ``{"first_step": 1e-3}``).
        cuda_graph: capture one evaluation of the augmented dynamics (network, divergence and
            coefficients) in a CUDA graph and replay it at every evaluation: the same numbers,
            without the per-evaluation launch overhead. Needs a CUDA device, ``grad=False``, a
            torchdiffeq method and a capturable network (no host synchronization inside).

    Returns:
        a :class:`LikelihoodResult` (``logp``, ``prior_logp``, ``delta_logp``, ``nfe``, ``z``).

    Reference: Song et al. (2021), Sec. 4.3 and App. D.2; Grathwohl et al. (2019).
    """
    check_x(x)
    _check_finite(x)
    _check_choice("divergence", divergence, DIVERGENCES)
    _check_choice("probe", probe, PROBES)
    _check_choice("method", method, _METHODS)
    _check_choice("time_variable", time_variable, TIME_VARIABLES)
    _check_choice("grad", grad, (False, True, "adjoint"))
    if isinstance(n_probes, bool) or not isinstance(n_probes, numbers.Integral) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer, got {n_probes!r}")
    rtol = _check_positive("rtol", rtol)
    atol = _check_positive("atol", atol)
    T = float(sde.T)
    t_min = float(sde.t_min) if t_min is None else t_min
    if isinstance(t_min, bool) or not isinstance(t_min, numbers.Real) or not (0.0 <= float(t_min) < T):
        raise ValueError(f"t_min must be a number in [0, T={T:g}), got {t_min!r}")
    t_min = float(t_min)
    if method in FIXED_METHODS:
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(f"method={method!r} is fixed-step: pass steps, a positive integer, got {steps!r}")
    elif steps is not None:
        raise ValueError(f"steps only applies to fixed-step methods {FIXED_METHODS}, not method={method!r}")
    if method.startswith("scipy-") and grad is not False:
        raise ValueError("the scipy backend runs on the host without autograd: use grad=False")
    if prior_logp is not None and not callable(prior_logp):
        raise TypeError(f"prior_logp must be callable or None, got {type(prior_logp).__name__}")
    if chunk_size is not None and (not isinstance(chunk_size, numbers.Integral) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device} but x is on {x.device}")
    if time_variable == "auto":
        time_variable = "t"
        if isinstance(sde, DiscreteVPSDE):
            lam = sde._log_snr(torch.tensor([t_min, T], dtype=torch.float64))
            time_variable = "log_snr" if bool(torch.isfinite(lam).all()) else "t"
    tmap = _TimeMap(sde, time_variable, t_min)

    model = as_model(model, sde)
    nfe0 = model.nfe
    B, D = x.shape[0], x[0].numel()
    create_graph = grad is not False
    probes = _draw_probes(probe, n_probes, x, generator) if divergence == "hutchinson" else None

    def velocity(u: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        """(dx/du, d delta/du) at integration variable u."""
        t, dtdu = tmap(u.to(device=xt.device))

        def score_fn(xx):
            return model.score(xx, t)

        if divergence == "exact":
            s, tr = exact_trace(score_fn, xt, chunk_size=chunk_size, create_graph=create_graph)
        else:
            s, tr = hutchinson_trace(score_fn, xt, probes, create_graph=create_graph)
        # dx/du = a x - b s and d delta/du = a D - b tr(ds/dx), with a = f dt/du, b = g^2/2 dt/du
        coef = torch.stack((sde._f(t), 0.5 * sde._g2(t)))
        if dtdu is not None:
            coef = coef * dtdu
        a, b = coef.to(xt.dtype).unbind()
        return torch.addcmul(a * xt, b, s, value=-1.0), torch.addcmul(a * D, b, tr, value=-1.0)

    shape = x.shape

    def func(u: Tensor, y: Tensor) -> Tensor:
        dx, dd = velocity(u, y[:-B].view(shape))
        return torch.cat([dx.reshape(-1), dd.reshape(-1)])

    y0 = torch.cat([x.reshape(-1), torch.zeros(B, dtype=x.dtype, device=x.device)])
    if cuda_graph:
        if x.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs x on a CUDA device, got {x.device}")
        if grad is not False or method.startswith("scipy-"):
            raise ValueError("cuda_graph=True needs grad=False and a torchdiffeq method")
        func = _GraphedDynamics(func, torch.tensor(tmap.u0, dtype=y0.dtype, device=y0.device), y0, model)
    if method.startswith("scipy-"):
        yT = _solve_scipy(func, y0, tmap.u0, tmap.u1, method[len("scipy-") :], rtol, atol)
    else:
        yT = _solve_torchdiffeq(func, y0, B, tmap, method, rtol, atol, steps, grad, model, solver_options)
    z = yT[:-B].view(shape)
    delta = yT[-B:]
    with torch.set_grad_enabled(create_graph):
        plp = sde.prior_logp(z) if prior_logp is None else prior_logp(z)
        plp = plp.to(device=x.device, dtype=x.dtype)
    if plp.shape != (B,):
        raise ValueError(f"prior_logp must return shape ({B},), got {tuple(plp.shape)}")
    return LikelihoodResult(
        logp=plp + delta,
        prior_logp=plp,
        delta_logp=delta,
        nfe=model.nfe - nfe0,
        z=z if return_latent else None,
    )


def _solve_torchdiffeq(func, y0, B, tmap, method, rtol, atol, steps, grad, model, solver_options=None):
    import torchdiffeq

    u = torch.tensor([tmap.u0, tmap.u1], dtype=y0.dtype, device=y0.device)
    options = {}
    if method in FIXED_METHODS:
        grid = torch.linspace(tmap.u0, tmap.u1, int(steps) + 1, dtype=torch.float64)

        def grid_constructor(f, y, t, grid=grid):
            return grid.to(device=t.device, dtype=t.dtype)

        options["grid_constructor"] = grid_constructor
    else:
        # land exactly on the end point: never evaluate the model beyond T (torchdiffeq would
        # otherwise step past it and interpolate back)
        options["step_t"] = u[1:]
    options.update(solver_options or {})
    kw = dict(rtol=rtol, atol=atol, method=method, options=options)
    if grad is False:
        with torch.no_grad():
            return torchdiffeq.odeint(func, y0, u, **kw)[-1]
    if grad == "adjoint":
        params = tuple(p for p in getattr(model, "parameters", lambda: ())() if p.requires_grad)
        module = _FuncModule(func)
        kw["adjoint_options"] = {"norm": "seminorm"} if method not in FIXED_METHODS else {}
        return torchdiffeq.odeint_adjoint(module, y0, u, adjoint_params=params, **kw)[-1]
    return torchdiffeq.odeint(func, y0, u, **kw)[-1]


class _GraphedDynamics:
    """``func(u, y)`` captured once in a CUDA graph; each call copies (u, y) into the static
    inputs, replays, and returns a copy of the static output (solvers keep their stages)."""

    def __init__(self, func, u: Tensor, y: Tensor, model):
        self._u, self._y = u.clone(), y.clone()
        nfe0 = model.nfe
        stream = torch.cuda.Stream(device=y.device)
        stream.wait_stream(torch.cuda.current_stream(y.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (lazy initializations, autograd state)
                func(self._u, self._y)
        torch.cuda.current_stream(y.device).wait_stream(stream)
        self._nfe_per_call = (model.nfe - nfe0) // 2
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._out = func(self._u, self._y)
        model.nfe = nfe0  # warm-up and capture are not evaluations of the solve
        self._model = model

    def __call__(self, u: Tensor, y: Tensor) -> Tensor:
        self._u.copy_(u)
        self._y.copy_(y)
        self._graph.replay()
        self._model.nfe += self._nfe_per_call
        return self._out.clone()


class _FuncModule(torch.nn.Module):
    def __init__(self, func):
        super().__init__()
        self.func = func

    def forward(self, t, y):
        return self.func(t, y)


def _solve_scipy(func, y0: Tensor, u0: float, u1: float, name: str, rtol: float, atol: float) -> Tensor:
    """solve_ivp on the host in float64 with the flattened state (score_sde's approach)."""
    from scipy.integrate import solve_ivp

    dev, dt = y0.device, y0.dtype

    def fun(u, y):
        yt = torch.from_numpy(y).to(device=dev, dtype=dt)
        with torch.no_grad():
            out = func(torch.tensor(u, dtype=torch.float64, device=dev), yt)
        return out.detach().to(torch.float64).cpu().numpy()

    init = y0.detach().to(torch.float64).cpu().numpy()
    sol = solve_ivp(fun, (u0, u1), init, method=name, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"scipy solve_ivp ({name}) failed: {sol.message}")
    return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).to(device=dev, dtype=dt)


# ------------------------------------------------------------------ bits per dimension
def bits_per_dim(
    sde,
    model,
    x: Tensor,
    *,
    data_range: tuple[float, float] = (-1.0, 1.0),
    n_bits: int = 8,
    levels: int | None = None,
    dequantize: str | None = "uniform",
    n_repeats: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    **likelihood_kwargs,
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
        data_range: (lo, hi), the range the model was trained on.
        n_bits: bits per coordinate of the data (1 to 16).
        levels: the number of values per coordinate when it is not a power of two (e.g. 17
            grey levels of scikit-learn's digits); overrides ``n_bits``, and the offset becomes
            ``log2(levels) - log2(hi - lo)``.
        dequantize: ``"uniform"`` or ``None``.
        n_repeats: dequantization draws averaged per sample (each one likelihood solve).
        generator: draws the dequantization noise and the Hutchinson probes.
        dtype: floating dtype of the model input for integer data (default: the default dtype).
        **likelihood_kwargs: passed to :func:`log_likelihood` (divergence, method, rtol, ...).

    Reference: Song et al. (2021), App. D.2 and Table 2; Theis, van den Oord, Bethge (2016)
    for uniform dequantization as a bound on the discrete log-likelihood.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(n_bits, bool) or not isinstance(n_bits, numbers.Integral) or not (1 <= n_bits <= 16):
        raise ValueError(f"n_bits must be an integer in [1, 16], got {n_bits!r}")
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError) as e:
        raise TypeError(f"data_range must be a pair of numbers (lo, hi), got {data_range!r}") from e
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be finite with lo < hi, got {data_range!r}")
    _check_choice("dequantize", dequantize, ("uniform", None))
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, numbers.Integral) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer, got {n_repeats!r}")
    if x.dim() < 1:
        raise ValueError(f"x must have a batch dimension: shape (B, *event), got shape {tuple(x.shape)}")
    if levels is None:
        levels = 2**n_bits
    elif isinstance(levels, bool) or not isinstance(levels, numbers.Integral) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    levels = int(levels)
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"x must be an integer or floating tensor, got dtype {x.dtype}")

    k = None  # integer levels, when the data are discrete
    if not x.is_floating_point():
        if dtype is None:
            dtype = torch.get_default_dtype()
        if bool((x < 0).any()) or bool((x > levels - 1).any()):
            raise ValueError(
                f"integer data must lie in [0, {levels - 1}] ({levels} levels), got values in "
                f"[{int(x.min())}, {int(x.max())}]"
            )
        k = x.to(dtype)
    else:
        _check_finite(x)
        dtype = x.dtype if dtype is None else dtype
        tol = 1e-6 * (hi - lo)
        if bool((x < lo - tol).any()) or bool((x > hi + tol).any()):
            raise ValueError(
                f"float data must lie in data_range [{lo:g}, {hi:g}], got values in [{float(x.min()):g}, {float(x.max()):g}]"
            )
        if dequantize == "uniform":
            grid = (x.to(torch.float64) - lo) / (hi - lo) * (levels - 1)
            kk = torch.round(grid)
            if bool(((grid - kk).abs() > 1e-3).any()):
                raise ValueError(
                    f"dequantize='uniform' needs float data on the {levels}-level grid lo + (hi - lo) k / {levels - 1}; "
                    "for continuous (already dequantized) data pass dequantize=None"
                )
            k = kk.to(dtype)

    D = x[0].numel()
    offset = -math.log2(hi - lo) + math.log2(levels)
    total = None
    for _ in range(int(n_repeats)):
        if k is None:
            xs = x.to(dtype)
        else:
            if dequantize == "uniform":
                u = torch.rand(k.shape, generator=generator, device=k.device, dtype=dtype)
            else:
                u = torch.full_like(k, 0.5)
            xs = lo + (hi - lo) * (k + u) / levels
        res = log_likelihood(sde, model, xs, generator=generator, **likelihood_kwargs)
        bpd = -res.logp / (D * math.log(2.0)) + offset
        total = bpd if total is None else total + bpd
    return total / n_repeats
