"""Argument checks, written once for the whole package.

Conventions (every public entry point follows them):

* a wrong **type** raises ``TypeError``, a wrong **value** raises ``ValueError``;
* the message names the argument, says what was expected and shows what came:
  ``"rtol must be a positive finite number, got -1.0"``;
* numpy scalars and 0-d tensors count as numbers (``np.float32(0.16)`` is a float), bools do not;
* each check returns the normalized value (a Python ``float``/``int``/``bool``), so callers write
  ``self.snr = check_real(snr, "snr", positive=True)``.

Checks that read tensor values (finiteness, ranges) are for arguments, never for tensors inside a
sampling loop: on an accelerator they would synchronize the host.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_bool",
    "check_callable",
    "check_choice",
    "check_int",
    "check_real",
    "check_tensor",
    "check_tolerance",
    "describe",
]


def describe(value: Any) -> str:
    """A short description of ``value`` for an error message (its repr, or its type and shape)."""
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return f"tensor({value.item()!r}, dtype={value.dtype})"
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else f"a {type(value).__name__}"


def _as_number(value: Any) -> float | int | None:
    """``value`` as a Python int or float if it is a real number (numpy or 0-d tensor included), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Tensor):
        if value.dim() != 0 or value.dtype == torch.bool or value.is_complex():
            return None
        return value.item()
    if hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "shape", None) == ():
        # numpy scalar or 0-d array
        kind = getattr(value.dtype, "kind", "")
        if kind in "iuf":
            return value.item()
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def check_real(
    value: Any,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a float, checked: a real number (not a bool), finite, and in the given range.

    ``positive`` means > 0, ``nonnegative`` >= 0; ``lo``/``hi`` bound it (closed unless
    ``lo_open``/``hi_open``). Raises TypeError for a non-number, ValueError for a bad value.
    """
    x = _as_number(value)
    if x is None:
        raise TypeError(f"{name} must be a real number, got {describe(value)} ({type(value).__name__})")
    x = float(x)
    conds = []
    if finite:
        conds.append("finite")
    if positive:
        conds.append("positive")
    elif nonnegative:
        conds.append("non-negative")
    rng = ""
    if lo is not None or hi is not None:
        left = ("(" if lo_open else "[") + (f"{lo:g}" if lo is not None else "-inf")
        right = (f"{hi:g}" if hi is not None else "inf") + (")" if hi_open else "]")
        rng = f" in {left}, {right}"
    ok = not (math.isnan(x) or (finite and math.isinf(x)))
    ok = ok and not (positive and not x > 0) and not (nonnegative and not x >= 0)
    if lo is not None:
        ok = ok and (x > lo if lo_open else x >= lo)
    if hi is not None:
        ok = ok and (x < hi if hi_open else x <= hi)
    if not ok:
        what = " ".join(conds) + " number" if conds else "number"
        raise ValueError(f"{name} must be a {what}{rng}, got {value!r}")
    return x


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int (numpy integers and integral 0-d tensors included; not bool, not 2.0)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{name} must be an int, got {describe(value)} ({type(value).__name__})")
    x = _as_number(value)
    if x is None or not isinstance(x, int):
        raise TypeError(f"{name} must be an int, got {describe(value)} ({type(value).__name__})")
    if (minimum is not None and x < minimum) or (maximum is not None and x > maximum):
        if maximum is None:
            bound = f">= {minimum}"
        elif minimum is None:
            bound = f"<= {maximum}"
        else:
            bound = f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bound}, got {x}")
    return x


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool (Python or numpy bool)."""
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {describe(value)} ({type(value).__name__})")


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """``value`` as one of the strings ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {describe(value)} ({type(value).__name__})")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_callable(value: Any, name: str, expected: str = "a callable") -> Callable:
    """``value`` if it is callable."""
    if not callable(value):
        raise TypeError(f"{name} must be {expected}, got {describe(value)} ({type(value).__name__})")
    return value


def check_tensor(
    value: Any, name: str, *, floating: bool = True, min_dim: int = 0, nonempty: bool = True, finite: bool = False
) -> Tensor:
    """``value`` if it is a tensor (floating-point unless ``floating=False``) of at least ``min_dim`` dims.

    ``nonempty`` refuses a tensor with no elements (an empty batch); ``finite`` refuses NaN or inf
    (this reads values: for arguments only).
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.dim() < min_dim:
        what = "a batch dimension: shape (B, *event)" if min_dim == 1 else f"at least {min_dim} dimensions"
        raise ValueError(f"{name} must have {what}, got shape {tuple(value.shape)}")
    if nonempty and value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf values")
    return value


def check_tolerance(value: Any, name: str, dtype: torch.dtype) -> float:
    """An adaptive solver's ``rtol``/``atol``: positive, finite, below 1 and meetable in ``dtype``.

    A tolerance below about 10 units in the last place of ``dtype`` cannot be met: the error
    estimate is then round-off, the step size collapses and the solve runs for hours.
    """
    tol = check_real(value, name, positive=True)
    if tol >= 1.0:
        raise ValueError(f"{name} must be < 1 (a relative or absolute error), got {value!r}")
    floor = 10.0 * torch.finfo(dtype).eps
    if tol < floor:
        raise ValueError(
            f"{name}={tol:g} cannot be met in {dtype} (machine epsilon {torch.finfo(dtype).eps:.3g}); "
            f"pass {name} >= {floor:.3g} or integrate in a wider dtype"
        )
    return tol
