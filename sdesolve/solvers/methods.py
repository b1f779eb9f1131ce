"""One vocabulary of integration-method names, shared by ``ODE(...)`` and ``log_likelihood(method=...)``.

Fixed-step methods are explicit Runge–Kutta schemes (tableaux in ``runge_kutta.py``); adaptive
methods are embedded pairs (``adaptive.py``) choosing their own steps under ``rtol``/``atol``.
Old spellings are accepted as deprecated aliases for one release (``"heun2"`` was the
likelihood's name for ``"heun"``).
"""

from __future__ import annotations

import warnings

__all__ = ["ADAPTIVE", "ALIASES", "FIXED", "resolve_method"]

#: fixed-step explicit Runge–Kutta methods and their orders
FIXED: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk3": 3, "rk4": 4}
#: adaptive embedded Runge–Kutta methods and their orders
ADAPTIVE: dict[str, int] = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "adaptive_heun": 2, "fehlberg2": 2}
#: deprecated spellings -> canonical names
ALIASES: dict[str, str] = {"heun2": "heun"}


def resolve_method(method: object, *, name: str = "method", extra: tuple[str, ...] = ()) -> str:
    """The canonical name of ``method`` (an alias warns), or a clear error naming every accepted name.

    ``extra`` lists names a caller accepts beyond the shared table (e.g. the likelihood's scipy methods).
    """
    known = tuple(FIXED) + tuple(ADAPTIVE) + tuple(extra)
    if not isinstance(method, str):
        raise TypeError(f"{name} must be one of {known}, got {type(method).__name__}")
    if method in ALIASES:
        new = ALIASES[method]
        warnings.warn(f"{name}={method!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=3)
        return new
    if method not in known:
        raise ValueError(f"{name} must be one of {known}, got {method!r}")
    return method
