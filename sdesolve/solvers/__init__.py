"""Integrators: one file per family, each a small stateless object (``init`` / ``step``)."""

from .adaptive import AdaptiveODE, AdaptiveSolveError, integrate
from .base import NonFiniteError, Solver
from .ddim import DDIM, DDPM
from .edm import EDMHeun, EulerAncestral
from .euler_maruyama import EulerMaruyama
from .exponential import DPMSolver, DPMSolverPP, UniPC
from .methods import resolve_method
from .ode import ODE
from .plms import PLMS
from .predictor_corrector import (
    AncestralPredictor,
    AnnealedLangevinCorrector,
    Corrector,
    EulerMaruyamaPredictor,
    LangevinCorrector,
    Predictor,
    PredictorCorrector,
    ReverseDiffusionPredictor,
)
from .runge_kutta import RungeKuttaODE
from .vdm_ancestral import VDMAncestral

__all__ = [
    "DDIM",
    "DDPM",
    "ODE",
    "PLMS",
    "AdaptiveODE",
    "AdaptiveSolveError",
    "AncestralPredictor",
    "AnnealedLangevinCorrector",
    "Corrector",
    "DPMSolver",
    "DPMSolverPP",
    "EDMHeun",
    "EulerAncestral",
    "EulerMaruyama",
    "EulerMaruyamaPredictor",
    "LangevinCorrector",
    "NonFiniteError",
    "Predictor",
    "PredictorCorrector",
    "ReverseDiffusionPredictor",
    "RungeKuttaODE",
    "Solver",
    "UniPC",
    "VDMAncestral",
    "integrate",
    "resolve_method",
]
