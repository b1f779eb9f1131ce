"""Forward processes: linear SDEs defined by their marginal coefficients."""

from .base import LinearSDE
from .discrete import DiscreteVPSDE, ddpm_betas
from .reverse import ProbabilityFlowODE, ReverseSDE
from .vdm import VDMSDE, FixedLinearGamma, GammaSchedule
from .ve import VESDE
from .vp import VPSDE, CosineVPSDE, SubVPSDE

__all__ = [
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "CosineVPSDE",
    "VESDE",
    "VDMSDE",
    "GammaSchedule",
    "FixedLinearGamma",
    "DiscreteVPSDE",
    "ddpm_betas",
    "ReverseSDE",
    "ProbabilityFlowODE",
]
