"""Integrators: one file per family, each a small stateless object (``init`` / ``step``)."""

from .base import NonFiniteError, Solver
from .euler_maruyama import EulerMaruyama
from .vdm_ancestral import VDMAncestral

__all__ = ["Solver", "NonFiniteError", "EulerMaruyama", "VDMAncestral"]
