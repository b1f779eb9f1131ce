"""sdesolve: numerical SDE/ODE solvers for score-based diffusion models."""

from . import grids, targets
from .model import ScoreModel
from .likelihood import LikelihoodResult, bits_per_dim, log_likelihood
from .sample import sample
from .sde import (
    VDMSDE,
    VESDE,
    VPSDE,
    CosineVPSDE,
    DiscreteVPSDE,
    FixedLinearGamma,
    LearnedMonotoneGamma,
    LearnedScalarGamma,
    GammaSchedule,
    LinearSDE,
    ProbabilityFlowODE,
    ReverseSDE,
    SubVPSDE,
)
from .solvers import EulerMaruyama, NonFiniteError, Solver
from .solvers import (
    ODE,
    AncestralPredictor,
    AnnealedLangevinCorrector,
    EulerMaruyamaPredictor,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusionPredictor,
)
from . import interop
from .solvers import DDIM, DDPM, PLMS
from .solvers import VDMAncestral
from .targets import Gaussian, GaussianMixture
from . import losses
from .losses import dsm_loss, vdm_bits_per_dim, vdm_diffusion_loss

__version__ = "0.1.0"

__all__ = [
    "ODE",
    "PredictorCorrector",
    "ReverseDiffusionPredictor",
    "EulerMaruyamaPredictor",
    "AncestralPredictor",
    "LangevinCorrector",
    "AnnealedLangevinCorrector",
    "interop",
    "DDIM",
    "DDPM",
    "PLMS",
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "CosineVPSDE",
    "VESDE",
    "VDMSDE",
    "GammaSchedule",
    "FixedLinearGamma",
    "LearnedScalarGamma",
    "LearnedMonotoneGamma",
    "losses",
    "vdm_diffusion_loss",
    "vdm_bits_per_dim",
    "dsm_loss",
    "DiscreteVPSDE",
    "ReverseSDE",
    "ProbabilityFlowODE",
    "ScoreModel",
    "Gaussian",
    "GaussianMixture",
    "targets",
    "grids",
    "sample",
    "log_likelihood",
    "bits_per_dim",
    "LikelihoodResult",
    "Solver",
    "NonFiniteError",
    "EulerMaruyama",
    "VDMAncestral",
]
