"""The probability-flow ODE samplers: one factory, ``ODE(method, ...)``, over two classes.

The ODE (Song et al. 2021, eq. 13), integrated in the forward time t from T down to t_min,

    dx/dt = f(t) x - 1/2 g(t)^2 s_theta(x, t),

carries p_T to p_t exactly for the exact score, so a deterministic solver is a fixed map of x_T.

* fixed-step methods (``euler``, ``midpoint``, ``heun``, ``rk3``, ``rk4``): explicit Runge–Kutta
  tableaux as data, :class:`~sdesolve.solvers.runge_kutta.RungeKuttaODE`;
* adaptive methods (``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``): embedded
  pairs under ``rtol``/``atol`` whose last step lands on t_min,
  :class:`~sdesolve.solvers.adaptive.AdaptiveODE`.

The method names are those of :mod:`sdesolve.solvers.methods`, shared with ``log_likelihood``.
``ODE(...)`` returns an instance of the class its method belongs to; both are ``ODE`` subclasses.
"""

from __future__ import annotations

from typing import Any

from .base import Solver
from .methods import ADAPTIVE, FIXED, resolve_method

__all__ = ["ODE", "FIXED_METHODS", "ADAPTIVE_METHODS"]

#: method names and orders (the shared table of :mod:`sdesolve.solvers.methods`)
FIXED_METHODS = FIXED
ADAPTIVE_METHODS = ADAPTIVE


class ODE(Solver):
    """Probability-flow ODE sampler ``dx/dt = f x - 1/2 g^2 s(x, t)`` from T down to t_min.

    Args:
        method: a fixed-step method (``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk3"``,
            ``"rk4"``) or an adaptive one (``"dopri5"``, ``"dopri8"``, ``"bosh3"``,
            ``"adaptive_heun"``, ``"fehlberg2"``); ``"heun2"`` is a deprecated alias of ``"heun"``.
        rtol, atol: tolerances of adaptive methods (default 1e-5 each; at solve time they must be
            meetable in the sample's dtype: at least 10 machine epsilons).
        options: adaptive methods only: ``{"first_step": h}`` (default: chosen automatically).
        max_nfe: adaptive methods only: the evaluation budget of one solve (default 10000);
            passing it raises :class:`~sdesolve.solvers.adaptive.AdaptiveSolveError` naming t.
        time_variable: adaptive methods only: ``"t"`` (the process time), ``"log_snr"`` (u =
            log(sigma/alpha), where the flow does not depend on the schedule) or ``"auto"``
            (default: ``"log_snr"`` for ``DiscreteVPSDE``, whose drift jumps at every knot in t).

    Fixed-step methods take none of ``rtol``, ``atol``, ``options``, ``max_nfe``, ``time_variable``.
    """

    stochastic = False

    def __new__(cls, method: str = "heun", *args: Any, **kwargs: Any) -> ODE:
        if cls is ODE:
            name = resolve_method(method)
            if name in FIXED:
                from .runge_kutta import RungeKuttaODE as cls
            elif name in ADAPTIVE:
                from .adaptive import AdaptiveODE as cls
            else:
                raise ValueError(f"method must be one of {tuple(FIXED) + tuple(ADAPTIVE)}, got {method!r}")
        return super().__new__(cls)
