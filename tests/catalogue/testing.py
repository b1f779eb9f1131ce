"""Bad input to ``sdesolve.testing``: check_sde's arguments and the strategies'."""

from __future__ import annotations

import math

import sdesolve as sd
from sdesolve.testing import check_sde, sdes, times

from . import Case

_VP = sd.VPSDE()

CASES = [
    Case("check_sde-sde-none", lambda: check_sde(None), TypeError, r"sde must be a LinearSDE"),
    Case("check_sde-sde-class", lambda: check_sde(sd.VPSDE), TypeError, r"sde must be a LinearSDE"),
    Case(
        "check_sde-kl_bound-zero",
        lambda: check_sde(_VP, kl_bound=0.0),
        ValueError,
        r"kl_bound must be a positive number",
    ),
    Case("check_sde-kl_bound-nan", lambda: check_sde(_VP, kl_bound=math.nan), ValueError, r"kl_bound must be a"),
    Case(
        "check_sde-kl_bound-inf",
        lambda: check_sde(_VP, kl_bound=math.inf),
        ValueError,
        r"kl_bound must be a positive number",
    ),
    Case(
        "check_sde-kl_bound-string",
        lambda: check_sde(_VP, kl_bound="0.01"),
        TypeError,
        r"kl_bound must be a real number",
    ),
    Case("check_sde-n_times-two", lambda: check_sde(_VP, n_times=2), ValueError, r"n_times must be >= 3"),
    Case("check_sde-n_times-float", lambda: check_sde(_VP, n_times=10.0), TypeError, r"n_times must be an int"),
    Case("check_sde-rtol-zero", lambda: check_sde(_VP, rtol=0.0), ValueError, r"rtol must lie in \(0, 1\)"),
    Case("check_sde-rtol-one", lambda: check_sde(_VP, rtol=1.0), ValueError, r"rtol must lie in \(0, 1\)"),
    Case("check_sde-rtol-nan", lambda: check_sde(_VP, rtol=math.nan), ValueError, r"rtol must"),
    Case("check_sde-rtol-bool", lambda: check_sde(_VP, rtol=True), TypeError, r"rtol must be a real number"),
    Case("check_sde-seed-float", lambda: check_sde(_VP, seed=0.5), TypeError, r"seed must be an int"),
    Case(
        "check_sde-sdes-kinds-unknown", lambda: sdes(["vp", "edm"]), ValueError, r"kinds must be a non-empty subset of"
    ),
    Case("check_sde-sdes-kinds-empty", lambda: sdes([]), ValueError, r"kinds must be a non-empty subset of"),
    Case("check_sde-times-t_min-string", lambda: times(_VP, t_min="0"), TypeError, r"t_min must be a real number"),
    Case("check_sde-times-t_min-above-T", lambda: times(_VP, t_min=2.0), ValueError, r"t_min must lie in \[0, T=1\]"),
]
