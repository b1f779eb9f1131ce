"""Model views: one network, every parameterization (epsilon, x0, v, score).

For a linear forward process ``x_t = alpha x_0 + sigma eps`` the parameterizations are
exchangeable in closed form:

=========  =====================  ==============================  =============================
predicts   eps                    x0                              score
=========  =====================  ==============================  =============================
eps        out                    (x - sigma out) / alpha         -out / sigma
x0         (x - alpha out)/sigma  out                             -(x - alpha out) / sigma^2
v          (alpha v + sigma x)/n  (alpha x - sigma v) / n         -eps / sigma
score      -sigma out             (x + sigma^2 out) / alpha       out
=========  =====================  ==============================  =============================

with ``v = alpha eps - sigma x0`` (Salimans & Ho 2022) and ``n = alpha^2 + sigma^2``
(1 for variance-preserving processes). Each view costs exactly one network call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._utils import TimeLike, as_time64, batch_time, bcast, check_batch, check_x

__all__ = ["ScoreModel", "as_model", "view_at", "PREDICTIONS"]

PREDICTIONS = ("eps", "x0", "v", "score")


class ScoreModel(nn.Module):
    """A network seen through a linear forward process.

    Args:
        net: callable ``net(x, t_in)`` returning a tensor of x's shape; ``t_in`` is a (B,)
            tensor in x's dtype, ``time_input(t)``.
        sde: the forward process the network was trained on (a :class:`~sdesolve.sde.LinearSDE`).
        prediction: what the network predicts: ``"eps"``, ``"x0"``, ``"v"`` or ``"score"``.
        time_input: maps the continuous time t (float64, shape (B,)) to what the network was
            trained on (``999 t``, ``sigma(t)``, the log-SNR, ...). Defaults to
            ``sde.network_time`` (the identity, or the integer timestep for
            :class:`~sdesolve.sde.DiscreteVPSDE`).

    ``nfe`` counts network evaluations (a Python int: reading it costs no synchronization).

    Every view takes an optional ``coefs=(alpha, sigma)``: the process' coefficients at ``t``
    as 0-d tensors already in x's dtype and on x's device (solvers precompute them per grid in
    float64 on the host). Given, the view skips recomputing ``alpha(t)``, ``sigma(t)`` from the
    process on the device; the result is the same (up to the last unit of the float64
    ``exp``).
    """

    def __init__(
        self,
        net: Callable[[Tensor, Tensor], Tensor],
        sde,
        prediction: str = "eps",
        time_input: Callable[[Tensor], Tensor] | None = None,
    ):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be callable as net(x, t), got {type(net).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if time_input is not None and not callable(time_input):
            raise TypeError(f"time_input must be callable or None, got {type(time_input).__name__}")
        self.net = net
        self.sde = sde
        self.prediction = prediction
        self.time_input = time_input
        self.nfe = 0

    def _prepare(self, x: Tensor, t: TimeLike):
        check_x(x)
        T = float(self.sde.T)
        if isinstance(t, Tensor) and t.dim() == 0 and t.dtype == torch.float64 and t.device == x.device:
            # The solvers' form (a 0-d float64 time on x's device): no conversion, one clamp (which
            # also gives the network a contiguous (B,) tensor, not a stride-0 view).
            return t.expand(x.shape[0]).clamp(0.0, T)
        t64 = as_time64(t)
        check_batch(t64, x)
        return batch_time(t64, x, dtype=torch.float64).clamp(0.0, T)

    def _coefs(self, t64: Tensor, x: Tensor):
        alpha = bcast(torch.exp(self.sde._log_alpha(t64)).to(x.dtype), x)
        sigma = bcast(torch.exp(self.sde._log_sigma(t64)).to(x.dtype), x)
        return alpha, sigma

    def _net(self, x: Tensor, t64: Tensor) -> Tensor:
        fn = self.time_input if self.time_input is not None else self.sde.network_time
        t_in = fn(t64).to(x.dtype)
        out = self.net(x, t_in)
        self.nfe += 1
        if not isinstance(out, Tensor):
            raise TypeError(f"the network must return a tensor, got {type(out).__name__}")
        if out.shape != x.shape:
            raise ValueError(f"the network returned shape {tuple(out.shape)}, expected the shape of x {tuple(x.shape)}")
        return out.to(x.dtype)

    def forward(self, x: Tensor, t: TimeLike) -> Tensor:
        """The raw network output (in the model's own parameterization)."""
        return self._net(x, self._prepare(x, t))

    def predict(self, x: Tensor, t: TimeLike, view: str, *, coefs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The ``view`` ("eps", "x0", "v" or "score") at (x, t), from one network call.

        ``coefs``: optional precomputed ``(alpha(t), sigma(t))``, 0-d tensors in x's dtype on
        x's device (see the class docstring); None computes them from the process.
        """
        if view not in PREDICTIONS:
            raise ValueError(f"view must be one of {PREDICTIONS}, got {view!r}")
        if coefs is not None and not (
            isinstance(coefs, (tuple, list)) and len(coefs) == 2 and all(isinstance(c, Tensor) for c in coefs)
        ):
            raise TypeError(f"coefs must be None or a pair (alpha, sigma) of tensors, got {type(coefs).__name__}")
        t64 = self._prepare(x, t)
        out = self._net(x, t64)
        if view == self.prediction:
            return out
        alpha, sigma = self._coefs(t64, x) if coefs is None else coefs
        return convert(out, x, alpha, sigma, self.prediction, view)

    def score(self, x: Tensor, t: TimeLike, *, coefs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """grad_x log p_t(x)."""
        return self.predict(x, t, "score", coefs=coefs)

    def eps(self, x: Tensor, t: TimeLike, *, coefs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The noise eps with x = alpha x0 + sigma eps."""
        return self.predict(x, t, "eps", coefs=coefs)

    def x0(self, x: Tensor, t: TimeLike, *, coefs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The denoised estimate E[x0 | x_t = x]."""
        return self.predict(x, t, "x0", coefs=coefs)

    def v(self, x: Tensor, t: TimeLike, *, coefs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The velocity v = alpha eps - sigma x0."""
        return self.predict(x, t, "v", coefs=coefs)

    def extra_repr(self) -> str:
        return f"prediction={self.prediction!r}"


def convert(out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, src: str, dst: str) -> Tensor:
    """Convert a prediction ``out`` at x from parameterization ``src`` to ``dst``."""
    if src == dst:
        return out
    # First to eps, then from eps to the target.
    if src == "eps":
        eps = out
    elif src == "x0":
        eps = (x - alpha * out) / sigma
    elif src == "v":
        eps = (alpha * out + sigma * x) / (alpha * alpha + sigma * sigma)
    elif src == "score":
        eps = -sigma * out
    else:
        raise ValueError(f"unknown parameterization {src!r}")
    if dst == "eps":
        return eps
    if dst == "score":
        if src == "x0":
            return -(x - alpha * out) / (sigma * sigma)
        return -eps / sigma
    if dst == "x0":
        if src == "x0":
            return out
        if src == "score":
            return (x + sigma * sigma * out) / alpha
        if src == "v":
            return (alpha * x - sigma * out) / (alpha * alpha + sigma * sigma)
        return (x - sigma * eps) / alpha
    if dst == "v":
        x0 = convert(out, x, alpha, sigma, src, "x0")
        return alpha * eps - sigma * x0
    raise ValueError(f"unknown parameterization {dst!r}")


def view_at(model, x: Tensor, t: Tensor, view: str, coefs: tuple[Tensor, Tensor]) -> Tensor:
    """``model``'s ``view`` at (x, t) with precomputed ``coefs = (alpha, sigma)`` (the solvers' call).

    A :class:`ScoreModel` gets the coefficients; any other object with the view as a method
    (e.g. a wrapper returning a known score) is called as ``getattr(model, view)(x, t)``.
    """
    if isinstance(model, ScoreModel):
        return model.predict(x, t, view, coefs=coefs)
    return getattr(model, view)(x, t)


def predicts_eps(model) -> bool:
    """True for a :class:`ScoreModel` whose network predicts eps (solvers then fold the
    eps-to-score conversion ``s = -eps / sigma`` into their precomputed coefficients)."""
    return isinstance(model, ScoreModel) and model.prediction == "eps"


def as_model(model, sde) -> ScoreModel:
    """A :class:`ScoreModel` for ``model``: a ScoreModel of ``sde`` as is, a plain callable as a score.

    A plain callable ``s(x, t)`` receives t as a (B,) tensor of continuous times.
    """
    if isinstance(model, ScoreModel):
        if model.sde is not sde:
            raise ValueError("model is a ScoreModel of a different process than sde; build it with the same sde object")
        return model
    if callable(model):
        return ScoreModel(model, sde, prediction="score", time_input=_identity)
    raise TypeError(f"model must be a ScoreModel or a callable score s(x, t), got {type(model).__name__}")


def _identity(t: Tensor) -> Tensor:
    return t
