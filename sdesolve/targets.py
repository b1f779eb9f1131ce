"""Data laws with exact answers under every linear forward process.

Under ``x_t = alpha(t) x_0 + sigma(t) eps``, a Gaussian ``N(mu, diag(s^2))`` stays Gaussian,
``N(alpha mu, diag(alpha^2 s^2 + sigma^2))``, and a mixture of diagonal Gaussians stays a
mixture with the same weights. So scores, marginal log-densities and samples are exact at
every t: the ground truth of the tests, the benchmarks and the demo.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from torch import Tensor

from ._utils import TimeLike, as_time64, batch_time, bcast, check_batch, check_x
from ._validate import check_int, describe
from .model import ScoreModel, _identity

if TYPE_CHECKING:
    from .sde.base import LinearSDE

__all__ = ["Gaussian", "GaussianMixture"]

#: a number, a (nested) sequence of numbers or a tensor of real numbers (the laws' parameters)
RealArray: TypeAlias = "Tensor | float | Sequence[Any]"

_LOG2PI = math.log(2 * math.pi)


def _coefs64(sde: LinearSDE, t: TimeLike, x: Tensor):
    t64 = as_time64(t)
    check_batch(t64, x)
    if t64.device.type == "cpu":
        sde._time(t)  # validate the range (with t's dtype tolerance) where it costs no synchronization
    t64 = batch_time(t64, x, dtype=torch.float64).clamp(0.0, float(sde.T))
    a = torch.exp(sde._log_alpha(t64))
    s = torch.exp(sde._log_sigma(t64))
    return a, s


def _positive(name: str, v: Tensor) -> Tensor:
    if not bool(torch.isfinite(v).all()) or bool((v <= 0).any()):
        raise ValueError(
            f"{name} must be positive and finite, got values {v[~(torch.isfinite(v) & (v > 0))][:4].tolist()}"
        )
    return v


def _real_tensor(value: object, name: str, what: str) -> Tensor:
    """``value`` (a number, sequence or tensor of real numbers) as a float64 tensor; TypeError otherwise."""
    if isinstance(value, (str, bytes)) or (
        isinstance(value, Tensor) and (value.dtype == torch.bool or value.is_complex())
    ):
        raise TypeError(f"{name} must be {what}, got {describe(value)}")
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be {what}, got {describe(value)}") from e


def _count(n: object) -> int:
    """A number of draws: an int >= 1."""
    try:
        return check_int(n, "n", minimum=1)
    except ValueError:
        raise ValueError(f"n must be >= 1 (a number of draws), got {n!r}") from None


class _CallableMean(Tensor):
    """The mean of a law, as a tensor that can still be called like the old ``GaussianMixture.mean()``.

    Calling it warns (DeprecationWarning) and returns the plain tensor; every operation on it
    returns a plain tensor (as for ``nn.Parameter``).
    """

    # torch's stub types _disabled_torch_function_impl unlike Tensor.__torch_function__ (same runtime protocol)
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    def __call__(self) -> Tensor:
        warnings.warn(
            "GaussianMixture.mean is an attribute now (as Gaussian.mean): write mixture.mean, not mixture.mean()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.as_subclass(Tensor)

    # torch's stub types Tensor.__repr__ with a keyword-only ``tensor_contents`` argument
    def __repr__(self) -> str:  # type: ignore[override]
        return repr(self.as_subclass(Tensor))


class _Target:
    event_shape: tuple

    if TYPE_CHECKING:  # what each law defines (declared for the type checker only)

        def _draw(self, n: int, generator: torch.Generator | None, device: torch.device | str | None) -> Tensor: ...

        def _log_prob(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor: ...

        def _score(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor: ...

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``n`` exact draws from the law, shape ``(n, *event_shape)``, computed in float64 and returned in
        ``dtype`` on ``device`` (default: the generator's device)."""
        n = _count(n)
        if device is None and generator is not None:
            device = generator.device
        return self._draw(n, generator, device).to(dtype)

    def _on(self, name: str, device: torch.device | str | None) -> Tensor:
        """Parameter ``name`` on ``device``, copied once and cached.

        A host-to-device copy synchronizes, so the exact score used inside a GPU sampling
        loop must not copy the law's parameters at every call.
        """
        src = getattr(self, name)
        device = torch.device(device) if device is not None else src.device
        if src.device == device:
            return src
        cache = self.__dict__.setdefault("_device_cache", {})
        hit = cache.get((name, device))
        if hit is None or hit[0] is not src:
            hit = (src, src.to(device))
            cache[(name, device)] = hit
        return hit[1]

    def _check(self, x: Tensor) -> None:
        check_x(x)
        if tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")

    @property
    def dim(self) -> int:
        return int(math.prod(self.event_shape))

    def model(self, sde: LinearSDE) -> ScoreModel:
        """A :class:`~sdesolve.ScoreModel` with the exact score of p_t under ``sde``."""

        def net(x: Tensor, t: Tensor) -> Tensor:
            return self.marginal_score(x, t, sde)

        return ScoreModel(net, sde, prediction="score", time_input=_identity)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_0(x) of the data law, per sample: shape (B,)."""
        self._check(x)
        xx = x.to(torch.float64)
        one = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        return self._log_prob(xx, one, 0.0 * one).to(x.dtype)

    def marginal_log_prob(self, x: Tensor, t: TimeLike, sde: LinearSDE) -> Tensor:
        """Exact log p_t(x) under the forward process ``sde``, per sample: shape (B,)."""
        self._check(x)
        a, s = _coefs64(sde, t, x)
        return self._log_prob(x.to(torch.float64), a, s).to(x.dtype)

    def marginal_score(self, x: Tensor, t: TimeLike, sde: LinearSDE) -> Tensor:
        """Exact grad_x log p_t(x) under ``sde``."""
        self._check(x)
        a, s = _coefs64(sde, t, x)
        return self._score(x.to(torch.float64), a, s).to(x.dtype)

    def marginal_sample(
        self,
        n: int,
        t: TimeLike,
        sde: LinearSDE,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """n exact draws from p_t: alpha(t) x_0 + sigma(t) eps."""
        x0 = self.sample(n, generator=generator, dtype=torch.float64)
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
        return sde.perturb(x0, float(t) if not isinstance(t, Tensor) else t, eps).to(dtype)


class Gaussian(_Target):
    """A Gaussian data law ``N(mean, diag(std^2))`` over events of ``mean``'s shape.

    Args:
        mean: tensor of the event shape (e.g. (D,) or (C, H, W)).
        std: a positive number or a tensor broadcastable to the event shape.
    """

    def __init__(self, mean: RealArray, std: RealArray = 1.0):
        mean = _real_tensor(mean, "mean", "a tensor (or sequence) of real numbers of the event shape")
        if mean.dim() == 0:
            mean = mean.reshape(1)
        if not bool(torch.isfinite(mean).all()):
            raise ValueError("mean must be finite")
        std = _real_tensor(std, "std", "a positive number or a tensor broadcastable to the event shape")
        try:
            std = torch.broadcast_to(std, mean.shape).clone()
        except RuntimeError as e:
            raise ValueError(
                f"std of shape {tuple(std.shape)} does not broadcast to mean's shape {tuple(mean.shape)}"
            ) from e
        self.mean = mean
        self.std = _positive("std", std)
        self.event_shape = tuple(mean.shape)

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
        eps = torch.randn((n,) + self.event_shape, generator=generator, dtype=torch.float64, device=device)
        return self._on("mean", eps.device) + self._on("std", eps.device) * eps

    def marginal_moments(self, t: TimeLike, sde: LinearSDE) -> tuple[Tensor, Tensor]:
        """Mean and per-coordinate variance of p_t (float64, event shape)."""
        t64 = sde._time(t)
        if t64.dim() != 0:
            raise ValueError("marginal_moments takes a scalar time")
        a = torch.exp(sde._log_alpha(t64))
        s = torch.exp(sde._log_sigma(t64))
        return a * self.mean, a * a * self.std**2 + s * s

    def _var(self, a: Tensor, s: Tensor, x: Tensor):
        mu = bcast(a, x) * self._on("mean", x.device)
        var = bcast(a * a, x) * (self._on("std", x.device) ** 2) + bcast(s * s, x)
        return mu, var

    def _log_prob(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        mu, var = self._var(a, s, x)
        lp = -0.5 * ((x - mu) ** 2 / var + torch.log(var) + _LOG2PI)
        return lp.reshape(x.shape[0], -1).sum(1)

    def _score(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        mu, var = self._var(a, s, x)
        return -(x - mu) / var

    def flow(self, x: Tensor, t_from: float, t_to: float, sde: LinearSDE) -> Tensor:
        """The exact probability-flow ODE map from time t_from to t_to.

        The standardized coordinate (x - mean_t) / std_t is constant along the flow of a
        Gaussian law, so ``x_{t_to} = mean_{t_to} + std_{t_to} / std_{t_from} (x - mean_{t_from})``.
        """
        self._check(x)
        m0, v0 = self.marginal_moments(t_from, sde)
        m1, v1 = self.marginal_moments(t_to, sde)
        dev = x.device
        y = m1.to(dev) + torch.sqrt(v1 / v0).to(dev) * (x.to(torch.float64) - m0.to(dev))
        return y.to(x.dtype)


class GaussianMixture(_Target):
    """A mixture of diagonal Gaussians: ``sum_k w_k N(means[k], diag(stds[k]^2))``.

    Args:
        weights: (K,) non-negative, summing to 1.
        means: (K, *event).
        stds: positive; shape (K,), or (K, *event), or a number.
    """

    def __init__(self, weights: RealArray, means: RealArray, stds: RealArray = 1.0):
        w = _real_tensor(weights, "weights", "a 1-d tensor (or sequence) of K real numbers")
        means = _real_tensor(means, "means", "a tensor of shape (K, *event)")
        if w.dim() != 1 or w.numel() < 1:
            raise ValueError(f"weights must be a non-empty 1-d tensor, got shape {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("weights must be non-negative and finite")
        if abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, got sum {float(w.sum()):.6g}")
        if means.dim() < 2 or means.shape[0] != w.shape[0]:
            raise ValueError(
                f"means must have shape (K, *event) with K = {w.shape[0]} components, got {tuple(means.shape)}"
            )
        if not bool(torch.isfinite(means).all()):
            raise ValueError("means must be finite")
        stds = _real_tensor(stds, "stds", "a positive number or a tensor of shape (K,) or (K, *event)")
        if stds.dim() == 1 and means.dim() > 1 and stds.shape[0] == means.shape[0]:
            stds = stds.reshape((-1,) + (1,) * (means.dim() - 1))
        try:
            stds = torch.broadcast_to(stds, means.shape).clone()
        except RuntimeError as e:
            raise ValueError(f"stds of shape {tuple(stds.shape)} do not broadcast to means {tuple(means.shape)}") from e
        self.weights = w
        self.means = means
        self.stds = _positive("stds", stds)
        self.event_shape = tuple(means.shape[1:])

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
        k = torch.multinomial(self._on("weights", device), n, replacement=True, generator=generator)
        eps = torch.randn((n,) + self.event_shape, generator=generator, dtype=torch.float64, device=device)
        return self._on("means", device)[k] + self._on("stds", device)[k] * eps

    def _comp(self, x: Tensor, a: Tensor, s: Tensor):
        # x: (B, *event) -> per-component means and variances of shape (B, K, *event)
        ev = (1,) * len(self.event_shape)
        a_ = a.reshape((-1, 1) + ev)
        s_ = s.reshape((-1, 1) + ev)
        mu = a_ * self._on("means", x.device).unsqueeze(0)
        var = a_ * a_ * self._on("stds", x.device).unsqueeze(0) ** 2 + s_ * s_
        return mu, var

    def _component_logp(self, x: Tensor, a: Tensor, s: Tensor):
        mu, var = self._comp(x, a, s)
        diff = x.unsqueeze(1) - mu
        lp = -0.5 * (diff**2 / var + torch.log(var) + _LOG2PI)
        lp = lp.reshape(x.shape[0], self.n_components, -1).sum(-1) + torch.log(self._on("weights", x.device))
        return lp, diff, var

    def _log_prob(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        lp, _, _ = self._component_logp(x, a, s)
        return torch.logsumexp(lp, dim=1)

    def _score(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        lp, diff, var = self._component_logp(x, a, s)
        r = torch.softmax(lp, dim=1).reshape((x.shape[0], self.n_components) + (1,) * len(self.event_shape))
        return (r * (-diff / var)).sum(1)

    @property
    def mean(self) -> Tensor:
        """The mixture's mean ``sum_k w_k means[k]`` (event shape), an attribute as ``Gaussian.mean`` is.

        (``mixture.mean()``, the old spelling, still works and warns.)
        """
        w = self.weights.reshape((-1,) + (1,) * len(self.event_shape))
        return (w * self.means).sum(0).as_subclass(_CallableMean)
