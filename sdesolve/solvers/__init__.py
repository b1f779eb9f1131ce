"""Integrators: one file per family, each a small stateless object (``init`` / ``step``)."""

from .base import NonFiniteError, Solver
from .ddim import DDIM, DDPM
from .euler_maruyama import EulerMaruyama
from .ode import ODE
from .plms import PLMS
from .predictor_corrector import (
    AncestralPredictor,
    AnnealedLangevinCorrector,
    EulerMaruyamaPredictor,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusionPredictor,
)
from .vdm_ancestral import VDMAncestral

__all__ = ["DDIM", "DDPM", "PLMS", "Solver", "NonFiniteError", "EulerMaruyama", "VDMAncestral"]
__all__ += [
    "ODE",
    "PredictorCorrector",
    "ReverseDiffusionPredictor",
    "EulerMaruyamaPredictor",
    "AncestralPredictor",
    "LangevinCorrector",
    "AnnealedLangevinCorrector",
]
