"""VDM's SNR-parameterized variance-preserving process (Kingma et al. 2021).

The process is defined by ``gamma(t) = -log SNR(t)``, strictly increasing on [0, 1]:
``sigma^2 = sigmoid(gamma)``, ``alpha^2 = sigmoid(-gamma)``. All coefficients are computed
through log-sigmoid forms, so they stay finite for |gamma| up to (and well past) 30.
"""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn

from .._validate import check_bool, check_int, check_real
from .base import LinearSDE, VariancePreservingSDE, _derivative, check_t_min, log_sigmoid

__all__ = ["GammaSchedule", "FixedLinearGamma", "LearnedScalarGamma", "LearnedMonotoneGamma", "VDMSDE"]


class GammaSchedule(nn.Module):
    """Base class of VDM noise schedules ``gamma(t) = -log SNR(t)``, strictly increasing in t.

    Subclasses implement ``forward(t)`` (elementwise, returning t's dtype). ``derivative``
    is exact by autograd unless overridden; ``inverse`` is optional.
    """

    _grad_scale: _GradScale | None  # set only inside _scaled_shape_gradient

    def forward(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative(self, t: Tensor) -> Tensor:
        """gamma'(t), exact (autograd), differentiable w.r.t. the schedule's parameters."""
        return _derivative(self, t)

    def inverse(self, gamma: Tensor) -> Tensor:
        """The time t with gamma(t) = gamma; raise NotImplementedError where no closed form exists."""
        raise NotImplementedError

    # ------------------------------------------------ variance-reduction support
    def shape_parameters(self) -> list[nn.Parameter]:
        """The parameters that shape gamma *between* its endpoints, leaving gamma(0), gamma(1) fixed.

        These are the parameters :func:`sdesolve.losses.schedule_variance_loss` trains to
        minimize the variance of the diffusion-loss estimator. Empty by default (a schedule
        whose every parameter moves an endpoint, such as ``b + |w| t``, has none).
        A subclass that returns some must pass its normalized profile through
        :meth:`_shape_gradient` in ``forward`` and ``derivative``.
        """
        return []

    @contextmanager
    def _scaled_shape_gradient(self, holder: _GradScale):
        """While active, gradients reaching the shape parameters are scaled per example by ``holder``."""
        previous = getattr(self, "_grad_scale", None)
        self._grad_scale = holder
        try:
            yield holder
        finally:
            self._grad_scale = previous

    def _shape_gradient(self, profile: Tensor) -> Tensor:
        """Identity in the forward pass; inside :meth:`_scaled_shape_gradient`, scales the backward."""
        holder = getattr(self, "_grad_scale", None)
        if holder is None:
            return profile
        return _ScaleGradient.apply(profile, holder)


class _GradScale:
    """A per-example gradient factor filled in after the forward pass (see ``schedule_variance_loss``)."""

    def __init__(self):
        self.scale: Tensor | None = None


class _ScaleGradient(torch.autograd.Function):
    """y = x; dL/dx = holder.scale * dL/dy, with ``holder.scale`` read at backward time."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, holder: _GradScale) -> Tensor:
        ctx.holder = holder
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        scale = ctx.holder.scale
        if scale is None:
            raise RuntimeError("the per-example gradient scale was never set (backward ran before the loss finished)")
        if scale.shape != grad.shape:
            raise RuntimeError(
                f"a schedule evaluation of shape {tuple(grad.shape)} was recorded under a per-example "
                f"gradient scale of shape {tuple(scale.shape)}; evaluate the schedule at the (B,) loss times only"
            )
        return grad * scale.to(grad.dtype), None


def _schedule_time(t: float | Tensor, ref: Tensor, name: str = "t") -> tuple[Tensor, dict]:
    """t cast to the schedule's parameter dtype and device, and the ``.to`` arguments of the result.

    Results are returned in t's dtype on t's device (float64 for Python numbers), so a
    float32 schedule living on an accelerator serves float64 host-side coefficient code.
    """
    if isinstance(t, Tensor):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        return t.to(device=ref.device, dtype=ref.dtype), {"device": t.device, "dtype": t.dtype}
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"{name} must be a float or a floating-point tensor, got {type(t).__name__}")
    return torch.full((), float(t), dtype=ref.dtype, device=ref.device), {"dtype": torch.float64}


_log_sigmoid = log_sigmoid  # the old private name (losses may import it)


def _check_endpoints(gamma_min: float, gamma_max: float) -> tuple[float, float]:
    gamma_min, gamma_max = check_real(gamma_min, "gamma_min"), check_real(gamma_max, "gamma_max")
    if gamma_min >= gamma_max:
        raise ValueError(f"gamma_min must be < gamma_max, got gamma_min={gamma_min}, gamma_max={gamma_max}")
    return gamma_min, gamma_max


def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


class FixedLinearGamma(GammaSchedule):
    """``gamma(t) = gamma_min + (gamma_max - gamma_min) t`` (VDM's fixed linear schedule)."""

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__()
        self.gamma_min, self.gamma_max = _check_endpoints(gamma_min, gamma_max)

    def forward(self, t: Tensor) -> Tensor:
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t

    def derivative(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.gamma_max - self.gamma_min)

    def inverse(self, gamma: Tensor) -> Tensor:
        return (gamma - self.gamma_min) / (self.gamma_max - self.gamma_min)

    def extra_repr(self) -> str:
        return f"gamma_min={self.gamma_min:g}, gamma_max={self.gamma_max:g}"


class LearnedScalarGamma(GammaSchedule):
    """VDM's learnable linear schedule ``gamma(t) = b + |w| t`` (Kingma et al. 2021, Sec. 3.4).

    Initialized to match :class:`FixedLinearGamma` ``(gamma_min, gamma_max)``: ``b = gamma_min``,
    ``w = gamma_max - gamma_min``. Both parameters move the endpoints ``gamma(0) = b`` and
    ``gamma(1) = b + |w|``, so they are trained by the variational bound itself.
    ``gamma'(t) = |w|`` (exact, closed form); the schedule is strictly increasing while w != 0.

    Args:
        gamma_min, gamma_max: the initial endpoints (finite, gamma_min < gamma_max).
        dtype: dtype of the parameters; inputs are cast to it and results cast back to t's dtype.
    """

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        gamma_min, gamma_max = _check_endpoints(gamma_min, gamma_max)
        dtype = _check_dtype(dtype)
        self.b = nn.Parameter(torch.tensor(gamma_min, dtype=dtype))
        self.w = nn.Parameter(torch.tensor(gamma_max - gamma_min, dtype=dtype))

    def forward(self, t: Tensor) -> Tensor:
        tt, out = _schedule_time(t, self.b)
        return (self.b + self.w.abs() * tt).to(**out)

    def derivative(self, t: Tensor) -> Tensor:
        tt, out = _schedule_time(t, self.b)
        return (self.w.abs() * torch.ones_like(tt)).to(**out)

    def inverse(self, gamma: Tensor) -> Tensor:
        gg, out = _schedule_time(gamma, self.b, name="gamma")
        return ((gg - self.b) / self.w.abs()).to(**out)

    def extra_repr(self) -> str:
        b, w = float(self.b.detach()), float(self.w.detach().abs())
        return f"gamma(0)={b:.4g}, gamma(1)={b + w:.4g}"


class LearnedMonotoneGamma(GammaSchedule):
    """VDM's learnable monotone schedule network (Kingma et al. 2021, App. H; google-research/vdm).

    A profile network with non-negative weights (the absolute value of each raw weight)::

        h(t) = |w1| t + (1/n) sum_k |w3_k| (2 sigmoid(|w2_k| (2t - 1) + b2_k) - 1)

    is strictly increasing in t (|w1| > 0 or any |w2_k w3_k| > 0), and is normalized to [0, 1]
    and rescaled to the endpoints::

        gamma(t) = gamma_0 + (gamma_1 - gamma_0) (h(t) - h(0)) / (h(1) - h(0)),

    so ``gamma(0) = gamma_0`` and ``gamma(1) = gamma_1`` exactly, whatever the network weights.
    Its exact derivative is closed form:
    ``gamma'(t) = (gamma_1 - gamma_0) h'(t) / (h(1) - h(0))`` with
    ``h'(t) = |w1| + (1/n) sum_k |w3_k| 4 sigmoid(u_k) (1 - sigmoid(u_k)) |w2_k|``, u_k the
    pre-activation.

    The endpoints are learnable scalars (``learn_endpoints=True``: ``gamma_0`` and
    ``gamma_1 = gamma_0 + |width|``) or pinned buffers equal to ``gamma_min``, ``gamma_max``.
    The network weights are the :meth:`shape_parameters`: they change gamma only between the
    endpoints, where the expected continuous-time diffusion loss does not depend on them
    (VDM eq. 13), so :func:`sdesolve.losses.schedule_variance_loss` can train them to minimize
    the estimator's variance. VDM's initialization: ``w1 = gamma_max - gamma_min``, ``w2, w3``
    normal with standard deviation ``init_std`` (0.01), ``b2 = 0``: gamma starts as
    :class:`FixedLinearGamma` ``(gamma_min, gamma_max)`` up to O(init_std^2).

    Args:
        gamma_min, gamma_max: gamma(0) and gamma(1) (initial values when learnable).
        n_features: width of the hidden layer (VDM uses 1024).
        learn_endpoints: learn gamma(0) and gamma(1) (True) or pin them (False).
        init_std: standard deviation of the initial hidden-layer weights.
        dtype: dtype of the parameters; t is cast to it and results are cast back to t's dtype.
        generator: a ``torch.Generator`` for the initial weights.
    """

    _unit: Tensor  # a buffer

    def __init__(
        self,
        gamma_min: float = -13.3,
        gamma_max: float = 5.0,
        *,
        n_features: int = 1024,
        learn_endpoints: bool = True,
        init_std: float = 0.01,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        gamma_min, gamma_max = _check_endpoints(gamma_min, gamma_max)
        dtype = _check_dtype(dtype)
        self.n_features = check_int(n_features, "n_features", minimum=1)
        init_std = check_real(init_std, "init_std", nonnegative=True)
        self.learn_endpoints = check_bool(learn_endpoints, "learn_endpoints")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.l1 = nn.Linear(1, 1, bias=False, dtype=dtype)
        self.l2 = nn.Linear(1, self.n_features, dtype=dtype)
        self.l3 = nn.Linear(self.n_features, 1, bias=False, dtype=dtype)
        with torch.no_grad():
            self.l1.weight.fill_(gamma_max - gamma_min)
            self.l2.weight.copy_(torch.randn(self.l2.weight.shape, generator=generator, dtype=dtype) * init_std)
            self.l2.bias.zero_()
            self.l3.weight.copy_(torch.randn(self.l3.weight.shape, generator=generator, dtype=dtype) * init_std)
        start = torch.tensor(gamma_min, dtype=dtype)
        width = torch.tensor(gamma_max - gamma_min, dtype=dtype)
        self.register_buffer("_unit", torch.tensor([0.0, 1.0], dtype=dtype), persistent=False)
        if self.learn_endpoints:
            self.gamma_start = nn.Parameter(start)
            self.gamma_width = nn.Parameter(width)
        else:
            self.register_buffer("gamma_start", start)
            self.register_buffer("gamma_width", width)

    @property
    def gamma_0(self) -> Tensor:
        """gamma(0), in the parameter dtype."""
        return self.gamma_start

    @property
    def gamma_1(self) -> Tensor:
        """gamma(1), in the parameter dtype."""
        return self.gamma_start + self.gamma_width.abs()

    def shape_parameters(self) -> list[nn.Parameter]:
        # nn.Linear's stub types weight/bias as Tensor; they are Parameters
        return cast("list[nn.Parameter]", [self.l1.weight, self.l2.weight, self.l2.bias, self.l3.weight])

    def _profile(self, tt: Tensor) -> tuple[Tensor, Tensor]:
        """h(t) and h'(t) elementwise (any shape), in the parameter dtype."""
        w1 = self.l1.weight.abs().reshape(())
        w2 = self.l2.weight.abs().reshape(-1)
        b2 = self.l2.bias
        w3 = self.l3.weight.abs().reshape(-1) / self.n_features
        s = torch.sigmoid((2.0 * tt - 1.0).unsqueeze(-1) * w2 + b2)
        h = w1 * tt + (2.0 * s - 1.0) @ w3
        dh = w1 + (4.0 * s * (1.0 - s) * w2) @ w3
        return h, dh

    def _normalized(self, tt: Tensor) -> tuple[Tensor, Tensor]:
        """(h(t) - h(0)) / (h(1) - h(0)) and its t-derivative."""
        h, dh = self._profile(tt)
        ends, _ = self._profile(self._unit.to(tt.dtype))  # h(0), h(1); a buffer: no host-to-device copy
        span = ends[1] - ends[0]
        return self._shape_gradient((h - ends[0]) / span), self._shape_gradient(dh / span)

    def forward(self, t: Tensor) -> Tensor:
        tt, out = _schedule_time(t, self.l1.weight)
        frac, _ = self._normalized(tt)
        return (self.gamma_0 + self.gamma_width.abs() * frac).to(**out)

    def derivative(self, t: Tensor) -> Tensor:
        tt, out = _schedule_time(t, self.l1.weight)
        _, dfrac = self._normalized(tt)
        return (self.gamma_width.abs() * dfrac).to(**out)

    def extra_repr(self) -> str:
        return (
            f"n_features={self.n_features}, learn_endpoints={self.learn_endpoints}, "
            f"gamma(0)={float(self.gamma_0.detach()):.4g}, gamma(1)={float(self.gamma_1.detach()):.4g}"
        )


class VDMSDE(VariancePreservingSDE):
    """The variance-preserving process of VDM with schedule ``gamma(t) = -log SNR(t)``.

    ``sigma^2 = sigmoid(gamma)``, ``alpha^2 = sigmoid(-gamma)``,
    ``f(t) = -1/2 gamma'(t) sigmoid(gamma(t))``, ``g(t)^2 = gamma'(t) sigmoid(gamma(t))``.
    ``t_min`` defaults to 0 (VDM samples down to t = 0). Prior N(0, I).

    ``t_of_log_snr`` is the schedule's closed-form ``inverse`` where it has one, else a bisection
    that first checks that gamma increases (on 257 times of [0, 1]): a learned schedule that has
    stopped increasing gives NaN from ``_t_of_log_snr`` and a ValueError from the public
    ``t_of_log_snr`` rather than one of several crossings; :func:`sdesolve.testing.check_sde`
    reports it as ``'log-SNR decreasing'``.
    """

    def __init__(self, gamma: GammaSchedule | None = None, t_min: float = 0.0):
        super().__init__()
        if gamma is None:
            gamma = FixedLinearGamma()
        if not isinstance(gamma, nn.Module) or not callable(gamma):
            raise TypeError(f"gamma must be a GammaSchedule module, got {type(gamma).__name__}")
        self.t_min = check_t_min(t_min, self.T)
        self.gamma = gamma

    def _gamma(self, t: Tensor) -> Tensor:
        return self.gamma(t).to(torch.float64)

    def _gamma_prime(self, t: Tensor) -> Tensor:
        if isinstance(self.gamma, GammaSchedule):
            return self.gamma.derivative(t).to(torch.float64)
        return _derivative(self._gamma, t)

    @staticmethod
    def log_alpha_sigma_of_gamma(gamma: Tensor) -> tuple[Tensor, Tensor]:
        """(log alpha, log sigma) = (1/2 log sigmoid(-gamma), 1/2 log sigmoid(gamma)), for a gamma already computed."""
        return 0.5 * _log_sigmoid(-gamma), 0.5 * _log_sigmoid(gamma)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return self.log_alpha_sigma_of_gamma(self._gamma(t))[0]

    def _log_sigma(self, t: Tensor) -> Tensor:
        return self.log_alpha_sigma_of_gamma(self._gamma(t))[1]

    def _log_snr(self, t: Tensor) -> Tensor:
        return -self._gamma(t)

    def _f(self, t: Tensor) -> Tensor:
        return -0.5 * self._gamma_prime(t) * torch.sigmoid(self._gamma(t))

    def _g2(self, t: Tensor) -> Tensor:
        return self._gamma_prime(t) * torch.sigmoid(self._gamma(t))

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        try:
            return self.gamma.inverse(-lam).to(torch.float64)
        except (NotImplementedError, AttributeError):
            return LinearSDE._t_of_log_snr(self, lam)  # bisection, NaN where gamma is not increasing
