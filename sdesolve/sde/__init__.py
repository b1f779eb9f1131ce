"""Forward processes: linear SDEs defined by their marginal coefficients."""

from .base import LinearSDE, VariancePreservingSDE
from .discrete import DiscreteVPSDE, ddpm_betas
from .reverse import ProbabilityFlowODE, ReverseSDE
from .vdm import VDMSDE, FixedLinearGamma, GammaSchedule, LearnedMonotoneGamma, LearnedScalarGamma
from .ve import VESDE
from .vp import VPSDE, CosineVPSDE, SubVPSDE

__all__ = [
    "LinearSDE",
    "VariancePreservingSDE",
    "VPSDE",
    "SubVPSDE",
    "CosineVPSDE",
    "VESDE",
    "VDMSDE",
    "GammaSchedule",
    "FixedLinearGamma",
    "LearnedScalarGamma",
    "LearnedMonotoneGamma",
    "DiscreteVPSDE",
    "ddpm_betas",
    "ReverseSDE",
    "ProbabilityFlowODE",
]
