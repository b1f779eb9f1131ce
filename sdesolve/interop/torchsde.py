"""Run torchsde's integrators (euler, milstein, srk, reversible_heun; Brownian trees) on our processes.

Our reverse SDE runs in the forward time t from T down to t_min,

    dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dW_bar,

while torchsde integrates forward in its time. With ``s = T - t`` (increasing) it becomes the Itô
SDE with diagonal (in fact additive) noise

    dx = [g(T - s)^2 s_theta(x, T - s) - f(T - s) x] ds + g(T - s) dW_s,

on states flattened to ``(B, D)``, ``D = prod(event_shape)`` (torchsde's layout). Example::

    rsde = sdesolve.interop.to_torchsde(sde.reverse(model), event_shape=(3, 32, 32))
    ts = rsde.time_grid(sdesolve.grids.uniform(sde, 100))       # increasing, from 0
    ys = torchsde.sdeint(rsde, rsde.flatten(x_T), ts, method="euler", dt=float(ts[1] - ts[0]))
    x = rsde.unflatten(ys[-1])                                   # (B, 3, 32, 32), at t_min
    xs = rsde.sdeint_grid(x_T, sdesolve.grids.karras(sde, 50))  # one step per interval of any grid

Reference: Li, Wong, Chen, Duvenaud, "Scalable Gradients for Stochastic Differential Equations",
AISTATS 2020 (torchsde); Anderson 1982 (reverse-time SDEs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..sde.reverse import ProbabilityFlowODE, ReverseSDE

__all__ = ["TorchSDE", "to_torchsde"]


class TorchSDE(nn.Module):
    """A reverse-time SDE in torchsde's form: ``f(s, y)``, ``g(s, y)`` on flattened states.

    ``noise_type = "diagonal"``, ``sde_type = "ito"``. ``s = T - t`` is torchsde's (increasing)
    time; ``time_grid`` converts our decreasing grids, ``flatten``/``unflatten`` the states.
    A :class:`~sdesolve.sde.ProbabilityFlowODE` gives g = 0 (an ODE; use method ``"euler"``).
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, reverse_sde: ReverseSDE | ProbabilityFlowODE, event_shape: int | Sequence[int]):
        super().__init__()
        if not isinstance(reverse_sde, (ReverseSDE, ProbabilityFlowODE)):
            raise TypeError(
                f"reverse_sde must be sde.reverse(model) (a ReverseSDE or ProbabilityFlowODE), "
                f"got {type(reverse_sde).__name__}"
            )
        if isinstance(event_shape, int):
            event_shape = (event_shape,)
        try:
            event_shape = tuple(int(d) for d in event_shape)
        except TypeError as e:
            raise TypeError(f"event_shape must be a tuple of ints, got {event_shape!r}") from e
        if len(event_shape) == 0 or any(d < 1 for d in event_shape):
            raise ValueError(f"event_shape must be a non-empty tuple of positive ints, got {event_shape}")
        self.reverse_sde = reverse_sde
        self.sde = reverse_sde.sde
        self.model = reverse_sde.model
        self.event_shape = event_shape
        self.dim = math.prod(event_shape)
        self.T = float(self.sde.T)
        self._stochastic = isinstance(reverse_sde, ReverseSDE)

    # ------------------------------------------------------------- layout helpers
    def flatten(self, x: Tensor) -> Tensor:
        """(B, *event_shape) -> (B, D)."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (B, *{self.event_shape}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim)

    def unflatten(self, y: Tensor) -> Tensor:
        """(..., B, D) -> (..., B, *event_shape): works on one state or on sdeint's (len(ts), B, D)."""
        if y.shape[-1] != self.dim:
            raise ValueError(f"y must end in the flattened event size {self.dim}, got shape {tuple(y.shape)}")
        return y.reshape(*y.shape[:-1], *self.event_shape)

    def time_grid(self, grid: Tensor) -> Tensor:
        """Our decreasing grid (T ... t_min) as torchsde's increasing times ``s = T - t``."""
        from ..grids import validate_grid

        g = validate_grid(grid, self.sde)
        return self.T - g

    def t_of_s(self, s: Tensor) -> Tensor:
        """Forward time of torchsde's time: ``t = T - s``, clamped to [0, T]."""
        return (self.T - torch.as_tensor(s, dtype=torch.float64)).clamp(0.0, self.T)

    def sdeint_grid(self, x_T: Tensor, grid: Tensor, *, method: str = "euler", bm: Any = None, **kwargs: Any) -> Tensor:
        """Integrate with torchsde taking exactly one step per interval of our (any) grid.

        ``torchsde.sdeint`` steps with a fixed ``dt`` and interpolates linearly at the output
        times, so a non-uniform grid is not stepped on. This calls it once per interval with
        ``dt`` just above the interval's length (torchsde clips the step to the interval's end).
        Returns the states at every grid time, shape ``(len(grid), B, *event_shape)``.
        ``bm`` (a torchsde Brownian object over ``[0, T - grid[-1]]``) is shared by all intervals.
        """
        import torchsde

        ts = self.time_grid(grid).to(device=x_T.device)
        y = self.flatten(x_T)
        if bm is None:
            bm = torchsde.BrownianInterval(
                t0=float(ts[0]), t1=float(ts[-1]), size=tuple(y.shape), dtype=y.dtype, device=y.device
            )
        ys = [y]
        for i in range(ts.numel() - 1):
            pair = ts[i : i + 2]
            dt = float(pair[1] - pair[0]) * (1.0 + 1e-9)
            y = torchsde.sdeint(self, y, pair, bm=bm, method=method, dt=dt, **kwargs)[-1]
            ys.append(y)
        return self.unflatten(torch.stack(ys))

    # ------------------------------------------------------------- torchsde interface
    def f(self, s: Tensor, y: Tensor) -> Tensor:
        """Drift in torchsde's time: ``-(f(t) x - w g(t)^2 s_theta(x, t))`` at ``t = T - s``."""
        t = self.t_of_s(s).to(y.device)
        x = self.unflatten(y)
        return -self.reverse_sde.drift(x, t).reshape(y.shape)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        """Diagonal diffusion ``g(T - s)``, broadcast to y's shape (zero for the probability flow)."""
        if not self._stochastic:
            return torch.zeros_like(y)
        t = self.t_of_s(s).to(y.device)
        return self.reverse_sde.diffusion(t).to(y.dtype).expand_as(y)


def to_torchsde(reverse_sde: ReverseSDE | ProbabilityFlowODE, event_shape: int | Sequence[int]) -> TorchSDE:
    """Wrap ``sde.reverse(model)`` so that ``torchsde.sdeint`` integrates it (see :class:`TorchSDE`).

    Args:
        reverse_sde: ``sde.reverse(model)`` (or ``sde.probability_flow(model)``, for an ODE).
        event_shape: the shape of one sample, e.g. ``(2,)`` or ``(3, 32, 32)``.
    """
    return TorchSDE(reverse_sde, event_shape)
