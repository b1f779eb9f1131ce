"""EDM samplers (placeholder, being written)."""

from .base import Solver

__all__ = ["EDMHeun", "EulerAncestral"]


class EDMHeun(Solver):
    pass


class EulerAncestral(Solver):
    pass
