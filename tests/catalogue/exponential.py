"""Bad input to the exponential integrators (DPMSolverPP, UniPC, DPMSolver) and EDM's samplers (EDMHeun,
EulerAncestral)."""

from __future__ import annotations

import numpy as np
import torch

import sdesolve as sd

from . import Case

CASES = [
    # DPMSolverPP(order, stochastic, lower_order_final)
    Case("dpmpp-order-zero", lambda: sd.DPMSolverPP(0), ValueError, r"order must be an int in \[1, 3\], got 0"),
    Case("dpmpp-order-four", lambda: sd.DPMSolverPP(4), ValueError, r"order must be an int in \[1, 3\], got 4"),
    Case("dpmpp-order-float", lambda: sd.DPMSolverPP(2.0), TypeError, r"order must be an int, got 2.0"),
    Case("dpmpp-order-string", lambda: sd.DPMSolverPP("2"), TypeError, r"order must be an int, got '2'"),
    Case("dpmpp-order-bool", lambda: sd.DPMSolverPP(True), TypeError, r"order must be an int, got True"),
    Case(
        "dpmpp-order-3-stochastic",
        lambda: sd.DPMSolverPP(3, stochastic=True),
        ValueError,
        r"order \(with stochastic=True\) must be an int in \[1, 2\], got 3",
    ),
    Case("dpmpp-stochastic-int", lambda: sd.DPMSolverPP(stochastic=1), TypeError, r"stochastic must be True or False"),
    Case(
        "dpmpp-stochastic-string",
        lambda: sd.DPMSolverPP(stochastic="sde"),
        TypeError,
        r"stochastic must be True or False, got 'sde'",
    ),
    Case(
        "dpmpp-lower_order_final-none",
        lambda: sd.DPMSolverPP(lower_order_final=None),
        TypeError,
        r"lower_order_final must be True or False, got None",
    ),
    Case(
        "dpmpp-third_order-unknown",
        lambda: sd.DPMSolverPP(3, third_order="heun"),
        ValueError,
        r"third_order must be one of \('dpm', 'taylor'\), got 'heun'",
    ),
    Case(
        "dpmpp-third_order-not-str",
        lambda: sd.DPMSolverPP(3, third_order=2),
        TypeError,
        r"third_order must be one of \('dpm', 'taylor'\)",
    ),
    # UniPC(order, variant, corrector, lower_order_final)
    Case("unipc-order-zero", lambda: sd.UniPC(0), ValueError, r"order must be an int in \[1, 3\], got 0"),
    Case("unipc-order-tensor-1d", lambda: sd.UniPC(torch.tensor([2])), TypeError, r"order must be an int"),
    Case(
        "unipc-variant-unknown",
        lambda: sd.UniPC(variant="bh3"),
        ValueError,
        r"variant must be one of \('bh1', 'bh2'\), got 'bh3'",
    ),
    Case("unipc-variant-not-str", lambda: sd.UniPC(variant=2), TypeError, r"variant must be one of \('bh1', 'bh2'\)"),
    Case("unipc-corrector-string", lambda: sd.UniPC(corrector="yes"), TypeError, r"corrector must be True or False"),
    Case(
        "unipc-lower_order_final-int",
        lambda: sd.UniPC(lower_order_final=0),
        TypeError,
        r"lower_order_final must be True or False",
    ),
    # DPMSolver(order)
    Case("dpmsolver-order-zero", lambda: sd.DPMSolver(0), ValueError, r"order must be an int in \[1, 3\], got 0"),
    Case("dpmsolver-order-four", lambda: sd.DPMSolver(4), ValueError, r"order must be an int in \[1, 3\], got 4"),
    Case("dpmsolver-order-float", lambda: sd.DPMSolver(3.0), TypeError, r"order must be an int, got 3.0"),
    Case("dpmsolver-order-none", lambda: sd.DPMSolver(None), TypeError, r"order must be an int, got None"),
    # EDMHeun(s_churn, s_tmin, s_tmax, s_noise)
    Case(
        "edmheun-s_churn-negative",
        lambda: sd.EDMHeun(s_churn=-1.0),
        ValueError,
        r"s_churn must be a finite non-negative number, got -1.0",
    ),
    Case(
        "edmheun-s_churn-inf",
        lambda: sd.EDMHeun(s_churn=float("inf")),
        ValueError,
        r"s_churn must be a finite non-negative number, got inf",
    ),
    Case("edmheun-s_churn-string", lambda: sd.EDMHeun(s_churn="40"), TypeError, r"s_churn must be a real number"),
    Case(
        "edmheun-s_tmin-negative",
        lambda: sd.EDMHeun(s_tmin=-0.1),
        ValueError,
        r"s_tmin must be a finite non-negative number, got -0.1",
    ),
    Case(
        "edmheun-s_tmax-below-s_tmin",
        lambda: sd.EDMHeun(s_tmin=2.0, s_tmax=1.0),
        ValueError,
        r"s_tmax must be a number in \[2, inf\], got 1.0",
    ),
    Case(
        "edmheun-s_tmax-nan",
        lambda: sd.EDMHeun(s_tmax=float("nan")),
        ValueError,
        r"s_tmax must be a number in \[0, inf\], got nan",
    ),
    Case("edmheun-s_tmax-none", lambda: sd.EDMHeun(s_tmax=None), TypeError, r"s_tmax must be a real number, got None"),
    Case(
        "edmheun-s_noise-zero",
        lambda: sd.EDMHeun(s_noise=0.0),
        ValueError,
        r"s_noise must be a finite positive number, got 0.0",
    ),
    Case(
        "edmheun-s_noise-string", lambda: sd.EDMHeun(s_noise="1"), TypeError, r"s_noise must be a real number, got '1'"
    ),
    Case(
        "edmheun-s_noise-array",
        lambda: sd.EDMHeun(s_noise=np.ones(2)),
        TypeError,
        r"s_noise must be a real number",
    ),
    # EulerAncestral(eta, s_noise)
    Case(
        "euler_ancestral-eta-negative",
        lambda: sd.EulerAncestral(-0.5),
        ValueError,
        r"eta must be a finite non-negative number, got -0.5",
    ),
    Case(
        "euler_ancestral-eta-bool", lambda: sd.EulerAncestral(True), TypeError, r"eta must be a real number, got True"
    ),
    Case(
        "euler_ancestral-s_noise-negative",
        lambda: sd.EulerAncestral(s_noise=-1.0),
        ValueError,
        r"s_noise must be a finite positive number, got -1.0",
    ),
]
