"""Training losses: VDM's variational bound (Kingma et al. 2021) and denoising score matching.

All losses are per example, in nats (shape (B,)), for a forward process
``z_t = alpha(t) x + sigma(t) eps`` and a :class:`~sdesolve.ScoreModel` of it.

**The variational bound of VDM.** With ``gamma(t) = -log SNR(t)`` (strictly increasing), the
negative log-likelihood of discrete data x is bounded by (VDM eqs. 10-12)::

    -log p(x) <= L_prior + L_recon + L_diffusion
    L_prior     = KL(q(z_1 | x) || N(0, I))
    L_recon     = E_{q(z_0 | x)} [-log p(x | z_0)]
    L_diffusion = 1/2 E_{eps, t ~ U(0,1)} [gamma'(t) ||eps - eps_hat(z_t, t)||^2]      (T = infinity)
                = T/2 E_{eps, t ~ U{1/T, ..., 1}} [expm1(gamma(t) - gamma(t - 1/T)) ||eps - eps_hat||^2]  (T steps)

Two facts drive the design (VDM Sec. 5): the continuous loss equals
``1/2 int_{SNR(1)}^{SNR(0)} E||x - x_hat(z_v, v)||^2 dv`` (substitute ``v = SNR(t)``), so for a
denoiser that is a function of (z, SNR) it depends on the schedule only through its endpoints;
and the discrete loss is a Riemann sum of that integral, larger for fewer steps and converging to
the continuous loss as O(1/T). Time is sampled with VDM's low-discrepancy ("antithetic") scheme
``t_i = (u + i/B) mod 1`` by default.

**Denoising score matching** (Song et al. 2021, eq. 7): ``1/2 lambda(t) ||s(x_t, t) -
grad log p(x_t | x_0)||^2`` with ``lambda = sigma^2`` or ``lambda = g^2`` (likelihood weighting;
Song, Durkan, Murray & Ermon 2021).

References:
    Kingma, Salimans, Poole & Ho 2021, "Variational Diffusion Models", NeurIPS (VDM).
    Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole 2021, "Score-Based Generative Modeling
    through Stochastic Differential Equations", ICLR.
    Song, Durkan, Murray & Ermon 2021, "Maximum Likelihood Training of Score-Based Diffusion
    Models", NeurIPS.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._progress import progress_bar
from ._utils import bcast, sum_event
from ._validate import check_bool, check_choice, check_int, check_real, check_tensor, describe
from .model import ScoreModel
from .sde.base import LinearSDE
from .sde.vdm import VDMSDE, _GradScale
from .solvers.base import GeneratorLike, check_generator, draw, generator_device

__all__ = [
    "vdm_diffusion_loss",
    "vdm_prior_loss",
    "vdm_reconstruction_loss",
    "vdm_bits_per_dim",
    "VDMBound",
    "schedule_variance_loss",
    "dsm_loss",
    "discrete_to_continuous",
    "sample_times",
]

_LN2 = math.log(2.0)


# ---------------------------------------------------------------------------- helpers
def _check_model(model: Any) -> ScoreModel:
    if not isinstance(model, ScoreModel):
        raise TypeError(
            f"model must be a sdesolve.ScoreModel (e.g. ScoreModel(net, sde, prediction='eps')), "
            f"got {type(model).__name__}"
        )
    if not isinstance(model.sde, LinearSDE):
        raise TypeError(f"model.sde must be a LinearSDE, got {type(model.sde).__name__}")
    return model


def _check_sde(sde: Any) -> LinearSDE:
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a sdesolve LinearSDE (e.g. VDMSDE), got {type(sde).__name__}")
    return sde


def _check_x0(x0: Any, name: str = "x0") -> Tensor:
    """Data: a floating tensor (B, *event) with at least one example (an empty batch has no loss)."""
    check_tensor(x0, name, min_dim=1, nonempty=False)
    if x0.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example (batch size >= 1), got shape {tuple(x0.shape)}")
    return x0


def _check_generator(
    generator: Any, batch: int | None = None, device: torch.device | str | None = None, antithetic: bool = False
) -> torch.Generator | list[torch.Generator] | None:
    """None, a torch.Generator, or a list of ``batch`` of them (one per example, on ``device``'s type).

    A list asks for per-example draws (example i's times and noise from generator i alone, so any
    split of a batch gives the same losses), which VDM's antithetic times cannot give: they are
    one draw for the whole batch.
    """
    generator = check_generator(generator, batch=batch, device=device)
    if antithetic and isinstance(generator, list):
        raise ValueError(
            "antithetic=True draws one time offset for the whole batch (t_i = (u + i/B) mod 1), which a list of "
            "per-example generators cannot give; pass antithetic=False with a list of generators"
        )
    return generator


def _renamed(new_value: Any, old_value: Any, new: str, old: str, fn: str) -> Any:
    """The value of a renamed keyword: the new name, or the old one with a DeprecationWarning."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{fn}() got both {new}= and its deprecated alias {old}=; pass {new}= only")
    warnings.warn(
        f"{fn}({old}=...) is deprecated and will be removed in the next release; use {new}=...",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def _check_steps(n_steps: Any) -> int | None:
    if n_steps is None:
        return None
    if isinstance(n_steps, bool) or isinstance(n_steps, float):
        raise TypeError(f"n_steps must be None (continuous time) or a positive int number of steps, got {n_steps!r}")
    try:
        return check_int(n_steps, "n_steps", minimum=1)
    except TypeError:
        raise TypeError(
            f"n_steps must be None (continuous time) or a positive int number of steps, got {describe(n_steps)}"
        ) from None
    except ValueError:
        raise ValueError(
            f"n_steps must be None (continuous time) or a positive int number of steps, got {n_steps!r}"
        ) from None


def _sigma_zero(sde: LinearSDE, t64: Tensor) -> Tensor:
    """Where sigma(t) = 0 (the clean end of every process but VDM's): a bool tensor of t's shape.

    A VDM process has sigma^2 = sigmoid(gamma) > 0 for its finite gamma: answered on the host,
    without evaluating a schedule that may live on an accelerator (that would synchronize).
    """
    if isinstance(sde, VDMSDE):
        return torch.zeros(t64.shape, dtype=torch.bool, device=t64.device)
    return torch.isneginf(sde._log_sigma(t64.detach()))


def _noise(x0: Tensor, noise: Tensor | None, generator: GeneratorLike, name: str = "noise") -> Tensor:
    if noise is None:
        return draw("normal", x0.shape, generator, device=x0.device, dtype=x0.dtype)
    if not isinstance(noise, Tensor):
        raise TypeError(f"{name} must be a tensor of x0's shape {tuple(x0.shape)}, got {type(noise).__name__}")
    if noise.shape != x0.shape:
        raise ValueError(f"{name} must be a tensor of x0's shape {tuple(x0.shape)}, got shape {tuple(noise.shape)}")
    return noise.to(dtype=x0.dtype)


def _given_times(t: Any, batch: int, lo: float, hi: float) -> Tensor:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        got = f"a {t.dtype} tensor" if isinstance(t, Tensor) else type(t).__name__
        raise TypeError(f"t must be a floating-point tensor of shape ({batch},), got {got}")
    if t.shape != (batch,):
        raise ValueError(f"t must be a floating-point tensor of shape ({batch},), got shape {tuple(t.shape)}")
    t64 = t.to(torch.float64)
    if t64.device.type == "cpu" and bool(((t64 < lo) | (t64 > hi) | ~torch.isfinite(t64)).any()):
        raise ValueError(f"t must lie in [{lo:g}, {hi:g}], got values outside")
    return t64


def sample_times(
    batch: int,
    *,
    n_steps: int | None = None,
    antithetic: bool = True,
    generator: GeneratorLike = None,
    device: torch.device | str | None = None,
    T: int | None = None,
) -> Tensor:
    """Diffusion times for a batch, float64 of shape (B,), in [0, 1].

    ``antithetic=True`` uses VDM's low-discrepancy scheme ``t_i = (u + i/B) mod 1`` with one
    uniform u per batch (every t_i is still marginally U(0, 1), so the loss stays unbiased);
    otherwise B independent uniforms. With ``n_steps`` steps, t is rounded up to the grid
    ``{1/n_steps, ..., 1}`` (uniform over the grid). ``T=`` is the deprecated name of ``n_steps=``.
    ``generator`` may be a list of B generators (t_i from generator i alone; needs
    ``antithetic=False``).
    """
    n_steps = _check_steps(_renamed(n_steps, T, "n_steps", "T", "sample_times"))
    batch = check_int(batch, "batch", minimum=1)
    antithetic = check_bool(antithetic, "antithetic")
    generator = _check_generator(generator, batch, device, antithetic)
    if device is None:
        device = generator_device(generator)
    if antithetic:
        u = draw("uniform", (), generator, device=device, dtype=torch.float64)  # one generator here
        t = torch.remainder(u + torch.arange(batch, device=device, dtype=torch.float64) / batch, 1.0)
    else:
        t = draw("uniform", (batch,), generator, device=device, dtype=torch.float64)
    if n_steps is not None:
        t = torch.ceil(t * n_steps).clamp(1.0, float(n_steps)) / n_steps
    return t


# ------------------------------------------------------------------------- VDM bound
def vdm_diffusion_loss(
    model: ScoreModel,
    x0: Tensor,
    *,
    n_steps: int | None = None,
    generator: GeneratorLike = None,
    antithetic: bool = True,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    T: int | None = None,
) -> Tensor:
    """VDM's diffusion loss per example, in nats (Kingma et al. 2021, eqs. 14 and 17).

    Continuous time (``n_steps=None``)::

        L = 1/2 gamma'(t) ||eps - eps_hat(z_t, t)||^2,   t ~ U(0, 1)

    ``n_steps = N`` steps (t on the grid {1/N, ..., 1}, s = t - 1/N)::

        L = N/2 expm1(gamma(t) - gamma(s)) ||eps - eps_hat(z_t, t)||^2

    with ``z_t = alpha(t) x0 + sigma(t) eps`` and ``gamma = -log SNR`` (``sde._gamma`` and its
    exact derivative ``sde._gamma_prime``: the schedule's closed form or autograd); ``eps_hat`` is
    the model's eps view (one network call, whatever it predicts). Gradients reach the network
    and the schedule's parameters.

    Where ``sigma(t) = 0`` (t = 0 of a VP, cosine or discrete process; never on VDM's, whose
    ``gamma(0)`` is finite) the bound has no finite term: ``gamma' = +inf`` in continuous time,
    and ``SNR(s) = inf`` in the first discrete step. Such times are refused with a ValueError:
    given times ``t`` with ``sigma(t) = 0`` (checked for CPU tensors), and any ``n_steps`` on a
    process with ``sigma(0) = 0``. (Sampled continuous times hit t = 0 with probability 2^-53.)

    Args:
        model: a :class:`~sdesolve.ScoreModel` of a :class:`~sdesolve.VDMSDE` (any
            :class:`~sdesolve.sde.LinearSDE` works: gamma is then ``-sde.log_snr``). Condition
            the network on gamma(t) (``time_input``) for the schedule invariance to hold.
        x0: data, (B, *event) with B >= 1, in the model's data space (e.g. [-1, 1]).
        n_steps: None for continuous time, or the number of discrete steps.
        generator: for the times and the noise: a ``torch.Generator``, or a list of B of them
            (example i's time and noise from generator i alone, so splits of a batch give the
            same losses; needs ``antithetic=False`` or given times ``t``).
        antithetic: VDM's low-discrepancy times ``(u + i/B) mod 1`` (default) or iid ones.
        t: optional given times, (B,) (on the grid {1/N, ..., 1} when n_steps = N is set).
        noise: optional given eps, x0's shape.
        T: deprecated name of ``n_steps`` (a DeprecationWarning; removed in the next release).

    Returns:
        (B,) tensor in x0's dtype.
    """
    n_steps = _check_steps(_renamed(n_steps, T, "n_steps", "T", "vdm_diffusion_loss"))
    model = _check_model(model)
    _check_x0(x0)
    antithetic = check_bool(antithetic, "antithetic")
    generator = _check_generator(generator, x0.shape[0], x0.device, antithetic and t is None)
    sde = model.sde
    if n_steps is not None and bool(_sigma_zero(sde, torch.zeros((), dtype=torch.float64))):
        raise ValueError(
            f"n_steps={n_steps}: the discrete VDM loss needs a finite SNR at t = 0, but sigma(0) = 0 for "
            f"{type(sde).__name__} (the first step's weight is infinite); use n_steps=None or a VDMSDE"
        )
    batch = x0.shape[0]
    if t is None:
        t64 = sample_times(batch, n_steps=n_steps, antithetic=antithetic, generator=generator, device=x0.device)
    else:
        t64 = _given_times(t, batch, 1.0 / n_steps if n_steps else 0.0, 1.0).to(x0.device)
        if t64.device.type == "cpu":
            if n_steps is not None:
                k = t64 * n_steps
                if bool(((k - torch.round(k)).abs() > 1e-6).any()):
                    raise ValueError(f"t must lie on the grid {{1/n_steps, ..., 1}} for n_steps={n_steps}")
            elif bool(_sigma_zero(sde, t64).any()):
                raise ValueError(
                    f"t must be > 0 where sigma(t) = 0: the continuous VDM loss has weight gamma'(t) = +inf "
                    f"there ({type(sde).__name__} at t = {float(t64[_sigma_zero(sde, t64)][0]):g})"
                )
    eps = _noise(x0, noise, generator)
    gamma_t = sde._gamma(t64)
    alpha = bcast(torch.exp(sde._log_alpha(t64)).to(x0.dtype), x0)
    sigma = bcast(torch.exp(sde._log_sigma(t64)).to(x0.dtype), x0)
    z = alpha * x0 + sigma * eps
    sq_err = sum_event((eps - model.eps(z, t64)) ** 2)
    if n_steps is None:
        weight = 0.5 * sde._gamma_prime(t64)
    else:
        weight = 0.5 * n_steps * torch.expm1(gamma_t - sde._gamma(t64 - 1.0 / n_steps))
    return weight.to(x0.dtype) * sq_err


def vdm_prior_loss(sde: LinearSDE, x0: Tensor) -> Tensor:
    """KL(q(z_1 | x0) || N(0, p^2 I)) summed over dimensions, per example, in nats.

    ``q(z_1 | x0) = N(alpha_1 x0, sigma_1^2 I)`` and p = ``sde.prior_std``::

        KL = 1/2 sum_d [ (sigma_1^2 + alpha_1^2 x0_d^2) / p^2 - 1 - log(sigma_1^2 / p^2) ]

    (VDM eq. 11), with log sigma_1 from the process's log-space hook (stable for gamma_1 >> 1).
    Gradients reach the schedule's parameters.
    """
    sde = _check_sde(sde)
    _check_x0(x0)
    t1 = torch.full((), float(sde.T), dtype=torch.float64, device=x0.device)
    log_var = 2.0 * sde._log_sigma(t1)
    alpha2 = torch.exp(2.0 * sde._log_alpha(t1))
    p2 = float(sde.prior_std) ** 2
    d = x0[0].numel()
    per_dim_const = (torch.exp(log_var) / p2 - 1.0 - log_var + math.log(p2)).to(x0.dtype)
    return 0.5 * (alpha2.to(x0.dtype) / p2 * sum_event(x0 * x0) + d * per_dim_const)


def discrete_to_continuous(x_int: Tensor, vocab_size: int, dtype: torch.dtype | None = None) -> Tensor:
    """Map integers k in {0, ..., V-1} to bin centres ``2 (k + 1/2) / V - 1`` in (-1, 1) (VDM's encoder)."""
    if not isinstance(x_int, Tensor):
        raise TypeError(f"x_int must be a tensor of integers in [0, vocab_size), got {type(x_int).__name__}")
    vocab_size = _check_vocab(vocab_size)
    _check_dtype(dtype)
    if dtype is None:
        dtype = x_int.dtype if x_int.is_floating_point() else torch.get_default_dtype()
    return 2.0 * (x_int.to(dtype) + 0.5) / vocab_size - 1.0


def _check_vocab(vocab_size: Any) -> int:
    return check_int(vocab_size, "vocab_size", minimum=2)


def _check_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype or None, got {describe(dtype)}")
    return dtype


def _check_discrete(x_int: Tensor, vocab_size: int) -> Tensor:
    if not isinstance(x_int, Tensor):
        raise TypeError(f"x_int must be a tensor of integers in [0, vocab_size), got {type(x_int).__name__}")
    if x_int.dim() < 1:
        raise ValueError(f"x_int must have a batch dimension: shape (B, *event), got shape {tuple(x_int.shape)}")
    if x_int.shape[0] == 0:
        raise ValueError(f"x_int must hold at least one example (batch size >= 1), got shape {tuple(x_int.shape)}")
    if x_int.dtype == torch.bool or x_int.is_complex():
        raise TypeError(f"x_int must be a tensor of integers in [0, vocab_size), got dtype {x_int.dtype}")
    if x_int.device.type == "cpu":
        xf = x_int.to(torch.float64)
        if bool((xf != torch.round(xf)).any()) or bool(((xf < 0) | (xf > vocab_size - 1)).any()):
            raise ValueError(f"x_int must hold integers in [0, {vocab_size - 1}] (vocab_size={vocab_size})")
    return torch.round(x_int.to(torch.float64)).long() if x_int.is_floating_point() else x_int.long()


def vdm_reconstruction_loss(
    sde: LinearSDE,
    x_int: Tensor,
    vocab_size: int,
    *,
    generator: GeneratorLike = None,
    noise: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """-log p(x | z_0) for discrete data, one draw of z_0 ~ q(z_0 | x), per example, in nats.

    The integers k in {0, ..., V-1} are encoded as bin centres ``c_k = 2 (k + 1/2) / V - 1``,
    ``z_0 = alpha_0 c_x + sigma_0 eps``. The decoder factorizes over dimensions and, in each,
    puts on the V values the posterior of a uniform prior under the forward likelihood
    ``q(z_0 | c_k)`` (VDM's decoder, App. C)::

        p(x_d = k | z_0) = softmax_k( -1/2 ((z_0d / alpha_0 - c_k) / tau)^2 ),   tau = sigma_0 / alpha_0 = exp(gamma_0 / 2)

    since ``z_0 / alpha_0 ~ N(c_x, tau^2)``. With tau well below the bin width 2/V the loss is
    close to 0 (the noisy value stays in its own bin); the network does not enter it.

    Args:
        sde: the forward process (its values at t = 0 are used).
        x_int: integers in [0, vocab_size), (B, *event) (an integer tensor, or a float one
            holding integers).
        vocab_size: V, the number of values each dimension takes.
        generator, noise: for eps (a list of B generators: example i's eps from generator i).
        dtype: of the computation (default: x_int's floating dtype, else the default dtype).

    Returns:
        (B,) tensor.
    """
    sde = _check_sde(sde)
    vocab_size = _check_vocab(vocab_size)
    k = _check_discrete(x_int, vocab_size)
    generator = _check_generator(generator, k.shape[0], k.device)
    if _check_dtype(dtype) is None:
        dtype = x_int.dtype if x_int.is_floating_point() else torch.get_default_dtype()
    x = discrete_to_continuous(k, vocab_size, dtype)
    eps = _noise(x, noise, generator)
    t0 = torch.zeros((), dtype=torch.float64, device=x.device)
    # z_0 / alpha_0 = c_x + tau eps, with log tau = log sigma_0 - log alpha_0 = -lambda_0 / 2
    inv_tau = torch.exp(0.5 * sde._log_snr(t0)).to(dtype)
    y = x + eps / inv_tau
    centres = discrete_to_continuous(torch.arange(vocab_size, device=x.device), vocab_size, dtype)
    logits = -0.5 * ((y.unsqueeze(-1) - centres) * inv_tau) ** 2
    logp = torch.log_softmax(logits, dim=-1).gather(-1, k.unsqueeze(-1)).squeeze(-1)
    return -sum_event(logp)


class VDMBound(NamedTuple):
    """The terms of VDM's variational bound, per example.

    Attributes:
        bits_per_dim: ``(diffusion + prior + reconstruction) / (D ln 2)``.
        diffusion, prior, reconstruction: the three terms in nats.
    """

    bits_per_dim: Tensor
    diffusion: Tensor
    prior: Tensor
    reconstruction: Tensor

    @property
    def nats(self) -> Tensor:
        """The whole bound in nats, per example."""
        return self.diffusion + self.prior + self.reconstruction


def vdm_bits_per_dim(
    model: ScoreModel,
    x_int: Tensor,
    vocab_size: int,
    *,
    n_steps: int | None = None,
    generator: GeneratorLike = None,
    antithetic: bool = True,
    dtype: torch.dtype | None = None,
    T: int | None = None,
    n_repeats: int = 1,
    progress: bool = False,
) -> VDMBound:
    """VDM's variational bound on -log2 p(x) / D for discrete data, per example (VDM eq. 10).

    ``(L_diffusion + L_prior + L_recon) / (D ln 2)`` with x encoded by
    :func:`discrete_to_continuous`; each term is a one-sample Monte-Carlo estimate (average
    several calls, or a large batch, to report a number). Being a bound, its expectation is
    at least the data's entropy in bits/dim, whatever the network.

    Args:
        model: a :class:`~sdesolve.ScoreModel` of a :class:`~sdesolve.VDMSDE` on data in (-1, 1).
        x_int: integers in [0, vocab_size), (B, *event).
        vocab_size: the number of values per dimension (256 for 8-bit images, 17 for the 8x8
            digits of scikit-learn).
        n_steps: None (continuous time) or the number of steps of the diffusion loss.
        generator, antithetic: as in :func:`vdm_diffusion_loss` (with a list of B generators,
            example i's reconstruction noise, time and diffusion noise come from generator i).
        dtype: of the computation (default: x_int's floating dtype, else the default dtype).
        T: deprecated name of ``n_steps`` (a DeprecationWarning; removed in the next release).
        n_repeats: independent Monte-Carlo passes (times and noises) averaged per example; the
            estimate's variance falls as 1 / n_repeats (1: one pass, as before).
        progress: show a progress bar over the passes.

    Returns:
        :class:`VDMBound` (bits_per_dim, diffusion, prior, reconstruction), each (B,).
    """
    n_steps = _check_steps(_renamed(n_steps, T, "n_steps", "T", "vdm_bits_per_dim"))
    model = _check_model(model)
    vocab_size = _check_vocab(vocab_size)
    k = _check_discrete(x_int, vocab_size)
    antithetic = check_bool(antithetic, "antithetic")
    generator = _check_generator(generator, k.shape[0], k.device, antithetic)
    if _check_dtype(dtype) is None:
        dtype = x_int.dtype if x_int.is_floating_point() else torch.get_default_dtype()
    n_repeats = check_int(n_repeats, "n_repeats", minimum=1)
    x = discrete_to_continuous(k, vocab_size, dtype)
    recon: Tensor | None = None
    diffusion: Tensor | None = None
    with progress_bar(n_repeats, desc="vdm_bits_per_dim", unit="pass", enabled=check_bool(progress, "progress")) as bar:
        for _ in range(n_repeats):
            r = vdm_reconstruction_loss(model.sde, k, vocab_size, generator=generator, dtype=dtype)
            dl = vdm_diffusion_loss(model, x, n_steps=n_steps, generator=generator, antithetic=antithetic)
            recon = r if recon is None else recon + r
            diffusion = dl if diffusion is None else diffusion + dl
            bar.update(1)
    assert recon is not None and diffusion is not None  # n_repeats >= 1
    if n_repeats > 1:
        recon, diffusion = recon / n_repeats, diffusion / n_repeats
    prior = vdm_prior_loss(model.sde, x)
    d = x[0].numel()
    bpd = (diffusion + prior + recon) / (d * _LN2)
    return VDMBound(bpd, diffusion, prior, recon)


def schedule_variance_loss(
    model: ScoreModel,
    x0: Tensor,
    *,
    generator: GeneratorLike = None,
    antithetic: bool = True,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """The continuous diffusion loss, with gradients that train the schedule's shape to reduce variance.

    VDM App. I.2: between fixed endpoints, the expected continuous-time diffusion loss does
    not depend on the schedule (for a denoiser of (z, SNR)), so the gradient of the loss's
    second moment with respect to the schedule's *shape* parameters is the gradient of its
    variance: ``d Var[L] = d E[L^2] = E[2 L dL]``. This function returns the per-example
    diffusion loss L (same value as :func:`vdm_diffusion_loss`, continuous time) whose
    backward pass gives

    * ``dL`` to the network and to the schedule's endpoint parameters (the bound's gradient),
    * ``2 L dL = d(L^2)`` to the schedule's :meth:`~sdesolve.sde.vdm.GammaSchedule.shape_parameters`,

    at the cost of one loss evaluation: the schedule's per-example normalized profile passes
    through an identity whose backward multiplies by ``2 L`` (filled in once L is known).

    Use it in place of the diffusion loss in a training step::

        loss = (schedule_variance_loss(model, x, generator=g)
                + vdm_prior_loss(sde, x) + vdm_reconstruction_loss(sde, x_int, V, generator=g)).mean()
        loss.backward()    # network, endpoints: grad of the bound; shape: grad of mean(L_diff^2)
        opt.step()

    ``loss`` still has the bound's value. Only evaluations of the schedule at the batch's
    times, inside this call, are rescaled; call it once per backward pass.

    Args:
        model: a :class:`~sdesolve.ScoreModel` of a :class:`~sdesolve.VDMSDE` whose schedule
            has shape parameters (:class:`~sdesolve.LearnedMonotoneGamma`).
        x0, generator, antithetic, t, noise: as in :func:`vdm_diffusion_loss`.

    Returns:
        (B,) tensor in x0's dtype.
    """
    model = _check_model(model)
    sde = model.sde
    if not isinstance(sde, VDMSDE):
        raise TypeError(f"schedule_variance_loss needs a ScoreModel of a VDMSDE, got one of {type(sde).__name__}")
    if not sde.gamma.shape_parameters():
        raise ValueError(
            f"the schedule {type(sde.gamma).__name__} has no shape parameters (every parameter moves an "
            "endpoint); use LearnedMonotoneGamma, or train the schedule with vdm_diffusion_loss"
        )
    holder = _GradScale()
    with sde.gamma._scaled_shape_gradient(holder):
        loss = vdm_diffusion_loss(model, x0, generator=generator, antithetic=antithetic, t=t, noise=noise)
    holder.scale = 2.0 * loss.detach()
    return loss


# --------------------------------------------------------------- score matching
def dsm_loss(
    model: ScoreModel,
    x0: Tensor,
    *,
    likelihood_weighting: bool = False,
    t_min: float | None = None,
    generator: GeneratorLike = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    reduce: str = "none",
    eps_t: float | None = None,
) -> Tensor:
    """Denoising score matching (Song et al. 2021, eq. 7) for any linear forward process.

    ::

        L = 1/2 lambda(t) sum_d (s(x_t, t) + eps / sigma(t))_d^2,   x_t = alpha(t) x0 + sigma(t) eps,

    t ~ U(t_min, T), since ``grad log p(x_t | x0) = -eps / sigma``. The weighting is
    ``lambda = sigma^2`` (``||sigma s + eps||^2``, i.e. the eps-prediction error) or, with
    ``likelihood_weighting``, ``lambda = g(t)^2``, for which ``(T - t_min) E[L]`` equals, up to an
    additive constant independent of the model, the score-matching part of the bound
    ``-E log p_0 <= ...`` of Song, Durkan, Murray & Ermon (2021, Thm. 1).

    Its minimum over models is at the true score of p_t, where it equals the irreducible
    ``1/2 E[lambda (||eps / sigma||^2 - ||grad log p_t||^2)]``.

    Times where ``sigma(t) = 0`` (t = 0 on VP, sub-VP, cosine and discrete processes) are
    refused, as score_sde samples t in [eps, T]: the target ``-eps / sigma`` is infinite there
    and the model is never evaluated where sigma = 0. ``t_min`` must have ``sigma(t_min) > 0``,
    and given times ``t`` with ``sigma(t) = 0`` raise a ValueError (checked for CPU tensors).

    Args:
        model: a :class:`~sdesolve.ScoreModel` (its score view is used: one network call).
        x0: data, (B, *event) with B >= 1.
        likelihood_weighting: lambda = g^2 instead of sigma^2.
        t_min: the smallest training time (default ``sde.t_min``), in [0, T) with sigma(t_min) > 0.
        generator: for the times and the noise: a ``torch.Generator``, or a list of B of them
            (example i's time and noise from generator i alone: splits of a batch give the same losses).
        t, noise: optional given times (B,) in [0, T] and eps (x0's shape).
        reduce: ``"none"`` (per example, (B,)) or ``"mean"`` (over the batch).
        eps_t: deprecated name of ``t_min`` (a DeprecationWarning; removed in the next release).
    """
    t_min = _renamed(t_min, eps_t, "t_min", "eps_t", "dsm_loss")
    model = _check_model(model)
    _check_x0(x0)
    likelihood_weighting = check_bool(likelihood_weighting, "likelihood_weighting")
    reduce = check_choice(reduce, "reduce", ("none", "mean"))
    generator = _check_generator(generator, x0.shape[0], x0.device)
    sde = model.sde
    T_end = float(sde.T)
    t_min = float(sde.t_min) if t_min is None else check_real(t_min, "t_min", lo=0.0, hi=T_end, hi_open=True)
    batch = x0.shape[0]
    if t is None:
        if bool(_sigma_zero(sde, torch.tensor(t_min, dtype=torch.float64))):
            raise ValueError(
                f"t_min must be > 0 where sigma(t_min) = 0: the score target -eps/sigma is infinite there "
                f"({type(sde).__name__}, t_min={t_min:g}); sample t in [t_min, T] with t_min > 0, as score_sde does"
            )
        u = draw("uniform", (batch,), generator, device=x0.device, dtype=torch.float64)
        t64 = t_min + (T_end - t_min) * u
    else:
        t64 = _given_times(t, batch, 0.0, T_end).to(x0.device)
        if t64.device.type == "cpu" and bool(_sigma_zero(sde, t64).any()):
            raise ValueError(
                f"t must be > 0 where sigma(t) = 0: the score target -eps/sigma is infinite there "
                f"({type(sde).__name__} at t = {float(t64[_sigma_zero(sde, t64)][0]):g})"
            )
    eps = _noise(x0, noise, generator)
    alpha64, sigma64 = torch.exp(sde._log_alpha(t64)), torch.exp(sde._log_sigma(t64))
    alpha, sigma = bcast(alpha64.to(x0.dtype), x0), bcast(sigma64.to(x0.dtype), x0)
    score = model.score(alpha * x0 + sigma * eps, t64)
    if likelihood_weighting:
        loss = 0.5 * sde._g2(t64).to(x0.dtype) * sum_event((score + eps / sigma) ** 2)
    else:
        loss = 0.5 * sum_event((sigma * score + eps) ** 2)
    return loss.mean() if reduce == "mean" else loss
