"""sdesolve: numerical SDE/ODE solvers for score-based diffusion models."""

from . import grids, interop, losses, targets, testing
from .graph import GraphSampler
from .likelihood import LikelihoodResult, bits_per_dim, log_likelihood
from .losses import dsm_loss, vdm_bits_per_dim, vdm_diffusion_loss
from .model import ScoreModel
from .sample import sample
from .sde import (
    VDMSDE,
    VESDE,
    VPSDE,
    CosineVPSDE,
    DiscreteVPSDE,
    FixedLinearGamma,
    GammaSchedule,
    LearnedMonotoneGamma,
    LearnedScalarGamma,
    LinearSDE,
    ProbabilityFlowODE,
    ReverseSDE,
    SubVPSDE,
)
from .solvers import (
    DDIM,
    DDPM,
    ODE,
    PLMS,
    AncestralPredictor,
    AnnealedLangevinCorrector,
    EulerMaruyama,
    EulerMaruyamaPredictor,
    LangevinCorrector,
    NonFiniteError,
    PredictorCorrector,
    ReverseDiffusionPredictor,
    Solver,
    VDMAncestral,
)
from .targets import Gaussian, GaussianMixture

__version__ = "0.1.0"

__all__ = [
    "testing",
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
    "GraphSampler",
    "log_likelihood",
    "bits_per_dim",
    "LikelihoodResult",
    "Solver",
    "NonFiniteError",
    "EulerMaruyama",
    "VDMAncestral",
]
