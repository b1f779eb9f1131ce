"""Bridges to other libraries' integrators: :func:`to_torchsde` (torchsde)."""

from .torchsde import TorchSDE, to_torchsde

__all__ = ["to_torchsde", "TorchSDE"]
