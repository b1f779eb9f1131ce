"""Bad input to the DDIM, DDPM, PLMS, VDMAncestral and EulerMaruyama constructors (and their checks)."""

from __future__ import annotations

import torch

import sdesolve as sd

from . import Case

CASES = [
    # DDIM(eta)
    Case("ddim-eta-string", lambda: sd.DDIM("0.5"), TypeError, r"eta must be a real number, got '0.5'"),
    Case("ddim-eta-bool", lambda: sd.DDIM(True), TypeError, r"eta must be a real number, got True"),
    Case("ddim-eta-none", lambda: sd.DDIM(None), TypeError, r"eta must be a real number, got None"),
    Case("ddim-eta-negative", lambda: sd.DDIM(-0.1), ValueError, r"eta must be a finite number in \[0, 1\], got -0.1"),
    Case("ddim-eta-above-one", lambda: sd.DDIM(1.5), ValueError, r"eta must be a finite number in \[0, 1\], got 1.5"),
    Case(
        "ddim-eta-nan", lambda: sd.DDIM(float("nan")), ValueError, r"eta must be a finite number in \[0, 1\], got nan"
    ),
    Case("ddim-eta-tensor-1d", lambda: sd.DDIM(torch.tensor([0.5])), TypeError, r"eta must be a real number"),
    # DDPM(variance)
    Case(
        "ddpm-variance-unknown",
        lambda: sd.DDPM("fixed_small"),
        ValueError,
        r"variance must be one of \('small', 'large'\), got 'fixed_small'",
    ),
    Case("ddpm-variance-not-str", lambda: sd.DDPM(1.0), TypeError, r"variance must be one of \('small', 'large'\)"),
    # PLMS(warm_start)
    Case(
        "plms-warm_start-unknown",
        lambda: sd.PLMS("rk4"),
        ValueError,
        r"warm_start must be one of \('lower_order', 'prk'\), got 'rk4'",
    ),
    Case(
        "plms-warm_start-not-str", lambda: sd.PLMS(4), TypeError, r"warm_start must be one of \('lower_order', 'prk'\)"
    ),
    # VDMAncestral() and EulerMaruyama() take no arguments; what they refuse is a process that is not one
    Case(
        "vdm_ancestral-process-not-linear",
        lambda: sd.VDMAncestral().check(object()),
        TypeError,
        r"VDMAncestral needs a linear forward process",
    ),
]
