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

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

import torch
from torch import Tensor, nn

from ._utils import TimeLike, as_time64, batch_time, bcast, check_batch, check_time_range, time_tol
from ._validate import check_callable, check_choice, check_real, check_tensor, describe

if TYPE_CHECKING:
    from .sde.base import LinearSDE

__all__ = ["ScoreModel", "ScoreLike", "as_model", "view_at", "view_coefficients", "PREDICTIONS"]

PREDICTIONS = ("eps", "x0", "v", "score")


class ScoreModel(nn.Module):
    """A network seen through a linear forward process.

    Args:
        net: callable ``net(x, t_in)`` returning a tensor of x's shape; ``t_in`` is the (B,)
            tensor ``time_input(t)``, computed in float64 and handed over in ``time_dtype``.
        sde: the forward process the network was trained on (a :class:`~sdesolve.sde.LinearSDE`).
        prediction: what the network predicts: ``"eps"``, ``"x0"``, ``"v"`` or ``"score"``.
        time_input: maps the continuous time t (float64, shape (B,)) to what the network was
            trained on (``999 t``, ``sigma(t)``, the log-SNR, ...). Defaults to
            ``sde.network_time`` (the identity, or the integer timestep for
            :class:`~sdesolve.sde.DiscreteVPSDE`).
        time_dtype: the floating dtype the network takes its time input in. ``None`` (default):
            x's dtype, but at least float32 — a float16 or bfloat16 state still hands the network
            float32 times (bfloat16 would round DDPM's timestep 999 to 1000 and 898.3 to 900).

    ``nfe`` counts network evaluations (a Python int: reading it costs no synchronization; the
    count is kept under a lock, so calls from several threads are all counted).

    The public views (``forward``, ``predict``, ``eps``, ``x0``, ``v``, ``score``) check their
    input: x a floating (B, *event) tensor, t a number, a 0-d or a (B,) floating tensor in
    ``[0, T]`` (a few units in the last place of t's dtype of tolerance, then clamped), finite.
    The range and finiteness checks read values, so they are done for numbers and CPU tensors
    only (never a host-device synchronization). Solvers call :func:`view_at`, which skips them.

    Every view takes an optional ``coefs=(alpha, sigma)``: the process' coefficients at ``t``
    as 0-d tensors already in x's dtype and on x's device (solvers precompute them per grid in
    float64 on the host, :func:`view_coefficients`). Given, the view skips recomputing
    ``alpha(t)``, ``sigma(t)`` from the process on the device; the result is the same (up to the
    last unit of the float64 ``exp``).
    """

    def __init__(
        self,
        net: Callable[[Tensor, Tensor], Tensor],
        sde,
        prediction: str = "eps",
        time_input: Callable[[Tensor], Tensor] | None = None,
        time_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.net = check_callable(net, "net", "callable as net(x, t)")
        self.sde = _check_sde(sde)
        self.prediction = str(check_choice(prediction, "prediction", PREDICTIONS))
        if time_input is not None:
            check_callable(time_input, "time_input", "callable (t -> the network's time input) or None")
        self.time_input = time_input
        self.time_dtype = _check_time_dtype(time_dtype)
        self.nfe = 0
        self._nfe_lock = threading.Lock()

    # A lock cannot be pickled or deep-copied (copy.deepcopy(model) for an EMA copy): rebuild it.
    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_nfe_lock", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._nfe_lock = threading.Lock()

    # ------------------------------------------------------------------ time handling
    def _check_time(self, x: Tensor, t: TimeLike) -> Tensor:
        """A user's (x, t), validated (CPU values only): t as a (B,) float64 tensor on x's device in [0, T]."""
        check_tensor(x, "x", min_dim=1, nonempty=False)
        T = float(self.sde.T)
        if not isinstance(t, Tensor):
            t = check_real(t, "t")
        t64 = as_time64(t)
        check_batch(t64, x)
        check_time_range(t64, 0.0, T, name="t", tol=time_tol(t, T))
        return batch_time(t64, x, dtype=torch.float64).clamp(0.0, T)

    def _solver_time(self, x: Tensor, t: TimeLike) -> Tensor:
        """The solvers' time: a 0-d float64 tensor on x's device is expanded with no check; other forms are checked."""
        if isinstance(t, Tensor) and t.dim() == 0 and t.dtype == torch.float64 and t.device == x.device:
            # one clamp (which also gives the network a contiguous (B,) tensor, not a stride-0 view)
            return t.expand(x.shape[0]).clamp(0.0, float(self.sde.T))
        return self._check_time(x, t)

    def network_time_dtype(self, x: Tensor) -> torch.dtype:
        """The dtype the network receives its time input in, for a state x."""
        if self.time_dtype is not None:
            return self.time_dtype
        return x.dtype if torch.finfo(x.dtype).bits >= 32 else torch.float32

    # ------------------------------------------------------------------ evaluation
    def _coefs(self, t64: Tensor, x: Tensor):
        alpha = bcast(torch.exp(self.sde._log_alpha(t64)).to(x.dtype), x)
        sigma = bcast(torch.exp(self.sde._log_sigma(t64)).to(x.dtype), x)
        return alpha, sigma

    def _net(self, x: Tensor, t64: Tensor) -> Tensor:
        fn = self.time_input if self.time_input is not None else self.sde.network_time
        t_in = fn(t64)  # float64 in, float64 out: rounded once, below
        if not isinstance(t_in, Tensor):
            raise TypeError(f"time_input must return a tensor, got {type(t_in).__name__}")
        out = self.net(x, t_in.to(self.network_time_dtype(x)))
        with self._nfe_lock:
            self.nfe += 1
        if not isinstance(out, Tensor):
            raise TypeError(f"the network must return a tensor, got {type(out).__name__}")
        if out.shape != x.shape:
            raise ValueError(f"the network returned shape {tuple(out.shape)}, expected the shape of x {tuple(x.shape)}")
        return out.to(x.dtype)

    def _predict(self, x: Tensor, t64: Tensor, view: str, coefs) -> Tensor:
        """The view at a prepared (B,) float64 time: one network call, then the exact conversion."""
        out = self._net(x, t64)
        if view == self.prediction:
            return out
        alpha, sigma = self._coefs(t64, x) if coefs is None else coefs
        return convert(out, x, alpha, sigma, self.prediction, view)

    # ------------------------------------------------------------------ public views
    def forward(self, x: Tensor, t: TimeLike) -> Tensor:
        """The raw network output (in the model's own parameterization)."""
        return self._net(x, self._check_time(x, t))

    def predict(self, x: Tensor, t: TimeLike, view: str, *, coefs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The ``view`` ("eps", "x0", "v" or "score") at (x, t), from one network call.

        ``coefs``: optional precomputed ``(alpha(t), sigma(t))``, 0-d tensors in x's dtype on
        x's device (see the class docstring); None computes them from the process.
        """
        check_choice(view, "view", PREDICTIONS)
        _check_coefs(coefs)
        return self._predict(x, self._check_time(x, t), view, coefs)

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
        extra = "" if self.time_dtype is None else f", time_dtype={self.time_dtype}"
        return f"prediction={self.prediction!r}{extra}"


def _check_sde(sde):
    if not all(callable(getattr(sde, hook, None)) for hook in ("_log_alpha", "_log_sigma", "network_time")) or not (
        hasattr(sde, "T")
    ):
        raise TypeError(
            f"sde must be a linear forward process (a sdesolve LinearSDE such as VPSDE()), got {describe(sde)} "
            f"({type(sde).__name__})"
        )
    return sde


def _check_time_dtype(time_dtype):
    if time_dtype is None:
        return None
    if not isinstance(time_dtype, torch.dtype):
        raise TypeError(f"time_dtype must be a torch.dtype (e.g. torch.float32) or None, got {describe(time_dtype)}")
    if not time_dtype.is_floating_point:
        raise ValueError(f"time_dtype must be a floating dtype (e.g. torch.float32), got {time_dtype}")
    return time_dtype


def _check_coefs(coefs) -> None:
    if coefs is not None and not (
        isinstance(coefs, (tuple, list)) and len(coefs) == 2 and all(isinstance(c, Tensor) for c in coefs)
    ):
        raise TypeError(f"coefs must be None or a pair (alpha, sigma) of tensors, got {describe(coefs)}")


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
    """``model``'s ``view`` at (x, t) with precomputed ``coefs = (alpha, sigma)``: the one way solvers call a model.

    ``t`` is the solver's time (a 0-d float64 tensor on x's device, taken as it is: no checks, no
    synchronization) and ``coefs`` the process' ``alpha(t)``, ``sigma(t)`` as 0-d tensors in x's
    dtype, from the keys ``"alpha"``, ``"sigma"`` of :func:`view_coefficients` precomputed per grid:
    converting the network's output to ``view`` then evaluates nothing of the process on the device.
    A :class:`ScoreModel` gets the coefficients; any other object with the view as a method (e.g. a
    wrapper returning a known score) is called as ``getattr(model, view)(x, t)``.
    """
    if isinstance(model, ScoreModel):
        return model._predict(x, model._solver_time(x, t), view, coefs)
    return getattr(model, view)(x, t)


def view_coefficients(sde, t: Tensor) -> dict[str, Tensor]:
    """The float64 coefficients at times ``t`` that every solver precomputes per grid (one key convention).

    * ``"alpha"``, ``"sigma"``: handed to :func:`view_at` as ``coefs``;
    * ``"x0_x"``, ``"x0_eps"``, ``"x0_score"``: the denoised estimate from the state and the
      network's eps or score, ``x0 = x0_x x + x0_eps eps = x0_x x + x0_score s`` with
      ``x0_x = 1 / alpha``, ``x0_eps = -sigma / alpha`` and ``x0_score = sigma^2 / alpha``
      (from ``x = alpha x0 + sigma eps`` and ``s = -eps / sigma``).

    A solver evaluating at several times per step stores each set under a suffix
    (``"alpha_next"``, ``"sigma_next"``, ...).
    """
    alpha, sigma = torch.exp(sde._log_alpha(t)), torch.exp(sde._log_sigma(t))
    ratio = sde._sigma_over_alpha(t)
    return {"alpha": alpha, "sigma": sigma, "x0_x": 1.0 / alpha, "x0_eps": -ratio, "x0_score": sigma * ratio}


def predicts_eps(model) -> bool:
    """True for a :class:`ScoreModel` whose network predicts eps (solvers then fold the
    eps-to-score conversion ``s = -eps / sigma`` into their precomputed coefficients)."""
    return isinstance(model, ScoreModel) and model.prediction == "eps"


def as_model(model: ScoreLike, sde: LinearSDE) -> ScoreModel:
    """A :class:`ScoreModel` for ``model``: a ScoreModel of ``sde`` as is, a plain callable as a score.

    A plain callable ``s(x, t)`` receives t as a (B,) tensor of continuous times.
    """
    _check_sde(sde)
    if isinstance(model, ScoreModel):
        if model.sde is not sde:
            raise ValueError("model is a ScoreModel of a different process than sde; build it with the same sde object")
        return model
    if callable(model):
        return ScoreModel(model, sde, prediction="score", time_input=_identity)
    raise TypeError(
        f"model must be a ScoreModel or a callable score s(x, t), got {describe(model)} ({type(model).__name__})"
    )


ScoreLike: TypeAlias = ScoreModel | Callable[[Tensor, Tensor], Tensor]
"""What the samplers accept as a model: a :class:`ScoreModel`, or a plain score callable ``s(x, t)``."""


def _identity(t: Tensor) -> Tensor:
    return t
