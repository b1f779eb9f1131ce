"""Integrators: one file per family, each a small stateless object (``init`` / ``step``)."""

from .adaptive import AdaptiveODE, AdaptiveSolveError, integrate
from .base import NonFiniteError, Solver
from .ddim import DDIM, DDPM
from .euler_maruyama import EulerMaruyama
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
    "EulerMaruyama",
    "EulerMaruyamaPredictor",
    "LangevinCorrector",
    "NonFiniteError",
    "Predictor",
    "PredictorCorrector",
    "ReverseDiffusionPredictor",
    "RungeKuttaODE",
    "Solver",
    "VDMAncestral",
    "integrate",
    "resolve_method",
]
