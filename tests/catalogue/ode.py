"""Bad input to the probability-flow ODE solvers: every argument of ``ODE(...)`` (fixed-step and
adaptive), of its solve, and of the functional ``sdesolve.solvers.adaptive.integrate``."""

from __future__ import annotations

import torch

from sdesolve import ODE, VPSDE, Gaussian, NonFiniteError, sample
from sdesolve.solvers.adaptive import AdaptiveSolveError, integrate

from . import Case

_SDE = VPSDE()
_TARGET = Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))
_MODEL = _TARGET.model(_SDE)
_Y0 = torch.ones(3, dtype=torch.float64)


def _x_T(dtype=torch.float32):
    return _TARGET.marginal_sample(3, _SDE.T, _SDE, generator=torch.Generator().manual_seed(0)).to(dtype)


def _solve(solver, dtype=torch.float32, model=_MODEL):
    return lambda: sample(_SDE, model, x_T=_x_T(dtype), solver=solver)


def _int(**kw):
    fn = kw.pop("fn", lambda t, y: -y)
    y0 = kw.pop("y0", _Y0)
    t0, t1 = kw.pop("t0", 0.0), kw.pop("t1", 1.0)
    return lambda: integrate(fn, y0, t0, t1, **kw)


def _nan_below_half(x, t):
    return torch.where((t < 0.5)[:, None], torch.full_like(x, float("nan")), -x)


CASES = [
    # --- method (one table with log_likelihood: sdesolve.solvers.methods)
    Case("ode-method-unknown", lambda: ODE("rk45"), ValueError, r"method must be one of .*'dopri5'.*got 'rk45'"),
    Case("ode-method-type", lambda: ODE(4), TypeError, r"method must be one of .*got int"),
    Case("ode-method-none", lambda: ODE(None), TypeError, r"method must be one of .*got NoneType"),
    # --- rtol / atol at construction: a number, finite, in (0, 1)
    Case("ode-rtol-string", lambda: ODE("dopri5", rtol="1e-5"), TypeError, r"rtol must be a real number, got '1e-5'"),
    Case("ode-atol-string", lambda: ODE("dopri5", atol="1e-5"), TypeError, r"atol must be a real number, got '1e-5'"),
    Case("ode-rtol-bool", lambda: ODE("dopri5", rtol=True), TypeError, r"rtol must be a real number, got True"),
    Case("ode-rtol-inf", lambda: ODE("dopri5", rtol=float("inf")), ValueError, r"rtol must be a finite positive"),
    Case("ode-atol-inf", lambda: ODE("dopri5", atol=float("inf")), ValueError, r"atol must be a finite positive"),
    Case("ode-rtol-nan", lambda: ODE("dopri5", rtol=float("nan")), ValueError, r"rtol must be a finite positive"),
    Case("ode-rtol-negative", lambda: ODE("dopri5", rtol=-1e-5), ValueError, r"rtol must be a finite positive.*-1e-05"),
    Case("ode-atol-zero", lambda: ODE("dopri5", atol=0.0), ValueError, r"atol must be a finite positive.*got 0\.0"),
    Case("ode-rtol-one", lambda: ODE("bosh3", rtol=1.0), ValueError, r"rtol must be < 1 .*got 1\.0"),
    Case(
        "ode-rtol-below-float64",
        lambda: ODE("dopri5", rtol=1e-17),
        ValueError,
        r"rtol=1e-17 cannot be met in torch.float64",
    ),
    # --- rtol / atol at solve time: meetable in the sample's dtype (10 machine epsilons)
    Case(
        "ode-rtol-below-float32-at-solve",
        _solve(ODE("dopri5", rtol=1e-13, atol=1e-5)),
        ValueError,
        r"rtol=1e-13 cannot be met in torch.float32 .*pass rtol >= 1.19e-06",
    ),
    Case(
        "ode-atol-below-float32-at-solve",
        _solve(ODE("dopri5", rtol=1e-5, atol=1e-9)),
        ValueError,
        r"atol=1e-09 cannot be met in torch.float32",
    ),
    # --- max_nfe: an int >= 1; passing it ends the solve naming t and the NFE
    Case("ode-max-nfe-zero", lambda: ODE("dopri5", max_nfe=0), ValueError, r"max_nfe must be an int >= 1, got 0"),
    Case("ode-max-nfe-float", lambda: ODE("dopri5", max_nfe=100.0), TypeError, r"max_nfe must be an int, got 100\.0"),
    Case("ode-max-nfe-bool", lambda: ODE("dopri5", max_nfe=True), TypeError, r"max_nfe must be an int, got True"),
    Case(
        "ode-max-nfe-exceeded",
        _solve(ODE("dopri5", rtol=1e-10, atol=1e-10, max_nfe=12), dtype=torch.float64),
        AdaptiveSolveError,
        r"stopped at t = [\d.]+ after 12 evaluations \(max_nfe=12\)",
    ),
    # --- options: a dict with the key first_step only
    Case(
        "ode-options-type",
        lambda: ODE("dopri5", options=[1e-3]),
        TypeError,
        r"options must be a dict or None, got list",
    ),
    Case(
        "ode-options-unknown-key",
        lambda: ODE("dopri5", options={"step_t": [0.5]}),
        ValueError,
        r"options accepts only the key 'first_step'.*step_t",
    ),
    Case(
        "ode-options-first-step-negative",
        lambda: ODE("dopri5", options={"first_step": -0.1}),
        ValueError,
        r"options\['first_step'\] must be a finite positive number, got -0\.1",
    ),
    Case(
        "ode-options-first-step-string",
        lambda: ODE("dopri5", options={"first_step": "0.1"}),
        TypeError,
        r"options\['first_step'\] must be a real number",
    ),
    # --- time_variable: one of the likelihood's names
    Case(
        "ode-time-variable-unknown",
        lambda: ODE("dopri5", time_variable="u"),
        ValueError,
        r"time_variable must be one of \('auto', 't', 'log_snr'\), got 'u'",
    ),
    Case("ode-time-variable-type", lambda: ODE("dopri5", time_variable=1), TypeError, r"time_variable must be one of"),
    Case(
        "ode-fixed-time-variable",
        lambda: ODE("heun", time_variable="t"),
        ValueError,
        r"time_variable applies to adaptive methods only",
    ),
    # --- adaptive-only arguments given to a fixed-step method are refused, not ignored
    Case(
        "ode-fixed-rtol", lambda: ODE("heun", rtol=1e-3), ValueError, r"rtol applies to adaptive methods only .*'heun'"
    ),
    Case("ode-fixed-max-nfe", lambda: ODE("rk4", max_nfe=10), ValueError, r"max_nfe applies to adaptive methods only"),
    Case(
        "ode-fixed-options", lambda: ODE("euler", options={}), ValueError, r"options applies to adaptive methods only"
    ),
    # --- the NFE of an adaptive solve is known only afterwards; NaN names t and the NFE
    Case("ode-nfe-before-solve", lambda: ODE("dopri5").nfe(10), ValueError, r"known only after a solve \(last_nfe\)"),
    Case(
        "ode-adaptive-nan-model",
        _solve(ODE("dopri5"), model=_nan_below_half),
        NonFiniteError,
        r"adaptive solve \(dopri5\) broke down at t = 0\.5\d* after \d+ evaluations",
    ),
    # --- the functional integrator
    Case("ode-integrate-fn", _int(fn=3), TypeError, r"fn must be a callable, got 3"),
    Case("ode-integrate-y0-list", _int(y0=[1.0]), TypeError, r"y0 must be a torch.Tensor, got list"),
    Case("ode-integrate-y0-int", _int(y0=torch.ones(3, dtype=torch.long)), TypeError, r"y0 must be a floating-point"),
    Case("ode-integrate-t0-string", _int(t0="0"), TypeError, r"t0 must be a real number, got '0'"),
    Case("ode-integrate-t1-nan", _int(t1=float("nan")), ValueError, r"t1 must be a finite number, got nan"),
    Case("ode-integrate-method-fixed", _int(method="rk4"), ValueError, r"method must be an adaptive method.*got 'rk4'"),
    Case("ode-integrate-method-unknown", _int(method="RK45"), ValueError, r"method must be one of .*got 'RK45'"),
    Case("ode-integrate-rtol-inf", _int(rtol=float("inf")), ValueError, r"rtol must be a finite positive number"),
    Case(
        "ode-integrate-rtol-float32",
        _int(y0=torch.ones(3), rtol=1e-13),
        ValueError,
        r"rtol=1e-13 cannot be met in torch.float32",
    ),
    Case("ode-integrate-max-nfe-negative", _int(max_nfe=-1), ValueError, r"max_nfe must be an int >= 1, got -1"),
    Case("ode-integrate-norm", _int(norm="rms"), TypeError, r"norm must be a callable, got 'rms'"),
    Case("ode-integrate-first-step-zero", _int(first_step=0.0), ValueError, r"first_step must be a finite positive"),
    Case(
        "ode-integrate-max-nfe-exceeded",
        _int(t1=50.0, rtol=1e-10, atol=1e-10, max_nfe=7),
        AdaptiveSolveError,
        r"^the adaptive solve \(dopri5, rtol=1e-10, atol=1e-10\) stopped at t = [\d.]+ after 7 evaluations "
        r"\(max_nfe=7\), integrating from t = 0 to t = 50; raise max_nfe",
    ),
    Case(
        "ode-integrate-atol-inf",
        _int(atol=float("inf")),
        ValueError,
        r"^atol must be a finite positive number, got inf$",
    ),
    # --- per-sample solves (each sample its own steps)
    Case(
        "ode-per-sample-string",
        lambda: ODE("dopri5", per_sample="yes"),
        TypeError,
        r"per_sample must be True or False, got .yes.",
    ),
    Case("ode-per-sample-fixed", lambda: ODE("heun", per_sample=True), TypeError, r"per_sample"),
    Case("ode-integrate-per-sample-int", _int(per_sample=1), TypeError, r"per_sample must be True or False, got 1"),
    Case(
        "ode-integrate-per-sample-norm",
        _int(per_sample=True, norm=lambda e: e.abs().max()),
        ValueError,
        r"^norm must be None with per_sample=True \(each sample's error is its own RMS\)$",
    ),
    Case(
        "ode-integrate-per-sample-0d",
        _int(per_sample=True, y0=torch.tensor(1.0, dtype=torch.float64)),
        ValueError,
        r"y0 must .*(1-d|dimension|dim)",
    ),
    Case(
        "ode-integrate-per-sample-max-nfe",
        _int(per_sample=True, t1=50.0, rtol=1e-10, atol=1e-10, max_nfe=7),
        AdaptiveSolveError,
        r"^the adaptive solve \(dopri5, per sample, rtol=1e-10, atol=1e-10\) stopped at t = [\d.]+ after 7 "
        r"evaluations \(max_nfe=7\) \(sample 0\), integrating to t = 50; raise max_nfe",
    ),
    Case(
        "ode-integrate-per-sample-nan",
        _int(
            per_sample=True,
            fn=lambda t, y: torch.where((t < 0.5)[:, None], -y, torch.nan),
            y0=torch.ones(2, 3, dtype=torch.float64),
        ),
        NonFiniteError,
        r"per sample.*NaN or inf",
    ),
    Case(
        "ode-per-sample-solve-max-nfe",
        _solve(ODE("dopri5", rtol=1e-9, atol=1e-9, max_nfe=20, per_sample=True), torch.float64),
        AdaptiveSolveError,
        r"stopped at t = [\d.]+ after 20 evaluations \(max_nfe=20\)",
    ),
]
