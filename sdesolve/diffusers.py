"""diffusers-compatible schedulers built on sdesolve's processes and solvers.

Two schedulers that subclass diffusers' ``SchedulerMixin`` and ``ConfigMixin``, so
``from_config``, ``save_pretrained`` / ``from_pretrained`` and pipelines (e.g.
``DDPMPipeline``) work with them:

* :class:`VDMScheduler`: the ancestral sampler of VDM (Kingma et al. 2021), one
  :class:`~sdesolve.solvers.VDMAncestral` step per call, on a VDM, VP or cosine process, in
  continuous or discrete time, for epsilon / sample / v predictions, with clipping and dynamic
  thresholding.
* :class:`ScoreSdeVpScheduler`: Euler-Maruyama on the reverse VP SDE (Song et al. 2021), a
  drop-in replacement for diffusers' scheduler of that name whose step size follows the
  timesteps actually used.

Both hold a sdesolve process (``scheduler.sde``) and precompute the sdesolve solver's per-step
coefficients (float64, once per ``set_timesteps``); nothing is re-derived here.

Needs the ``diffusers`` extra: ``pip install sdesolve[diffusers]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as e:  # pragma: no cover - exercised only without diffusers
    raise ImportError(
        "sdesolve.diffusers needs the diffusers package; install it with `pip install sdesolve[diffusers]` "
        f"(import failed with: {e})"
    ) from e

from ._utils import bcast
from .model import convert
from .sde.base import LinearSDE
from .sde.vdm import VDMSDE, FixedLinearGamma
from .sde.vp import VPSDE, CosineVPSDE
from .solvers.base import _to_device
from .solvers.euler_maruyama import EulerMaruyama
from .solvers.vdm_ancestral import VDMAncestral, ancestral_mean, ancestral_mean_from_x0

__all__ = ["VDMScheduler", "VDMSchedulerOutput", "ScoreSdeVpScheduler"]

_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
_SCHEDULES = ("vdm", "linear", "squaredcos_cap_v2")


@dataclass
class VDMSchedulerOutput(BaseOutput):
    """Output of :meth:`VDMScheduler.step`.

    Args:
        prev_sample: the sample at the next (earlier) timestep; feed it to the next step.
        pred_original_sample: the model's estimate of x0 at this step (after clipping or
            thresholding, when enabled).
    """

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None


def _check_positive_int(name: str, v, allow_none: bool = False):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {v!r}")
    return v


class _StepIndex:
    """Find the step index of a timestep, without host-device synchronization on accelerators.

    A timestep given as a Python number or a CPU tensor is looked up in the timesteps (free,
    and checked). A timestep on an accelerator is looked up once (one synchronization) at the
    first step after ``set_timesteps``; later steps advance a counter, as diffusers' schedulers
    do, so steps must then be taken in order.
    """

    timesteps: Tensor | None
    _timesteps64: Tensor
    _step_index: int | None

    def _lookup(self, timestep) -> int:
        if isinstance(timestep, Tensor):
            if timestep.numel() < 1:
                raise ValueError("timestep is an empty tensor")
            flat = timestep.detach().flatten()
            if flat.device.type == "cpu" and flat.numel() > 1 and not bool((flat == flat[0]).all()):
                raise ValueError("timestep must hold a single value (a batch shares one step), got several")
            t = float(flat[0])
        elif isinstance(timestep, (int, float)) and not isinstance(timestep, bool):
            t = float(timestep)
        else:
            raise TypeError(f"timestep must be a number or a tensor, got {type(timestep).__name__}")
        diff = (self._timesteps64 - t).abs()
        j = int(torch.argmin(diff))
        if not float(diff[j]) <= 1e-6 * max(1.0, abs(t)):
            shown = self._timesteps64[:6].tolist()
            raise ValueError(
                f"timestep {t:g} is not one of the scheduler's timesteps {shown}{' ...' if len(diff) > 6 else ''}; "
                "pass the values of scheduler.timesteps, in order"
            )
        return j

    def _index_for(self, timestep) -> int:
        if self.timesteps is None:
            raise ValueError(f"call {type(self).__name__}.set_timesteps(num_inference_steps) before stepping")
        on_accelerator = isinstance(timestep, Tensor) and timestep.device.type != "cpu"
        if on_accelerator and self._step_index is not None:
            return self._step_index
        return self._lookup(timestep)

    def _advance(self, i: int) -> None:
        n = int(self._timesteps64.numel())
        self._step_index = i + 1 if i + 1 < n else None

    @property
    def step_index(self) -> int | None:
        """The index of the next step when stepping on an accelerator (None before the first)."""
        return self._step_index


class VDMScheduler(SchedulerMixin, ConfigMixin, _StepIndex):
    r"""VDM's ancestral sampler as a diffusers scheduler.

    Each :meth:`step` at ``timesteps[i]`` is one :class:`~sdesolve.solvers.VDMAncestral` step of
    the process ``self.sde`` from ``t_i`` to ``t_{i+1}`` (the last one to ``t = 0``):

    .. math::

        z_s = \frac{\alpha_s}{\alpha_t}(z_t - c\,\sigma_t\hat\epsilon) + \sigma_s\sqrt{c}\,\xi,
        \qquad c = -\mathrm{expm1}(\gamma_s - \gamma_t),

    where ``gamma = -log SNR``. The last step returns the posterior mean (no noise), as DDPM does.
    ``sample = scheduler.step(...)`` in a loop over ``scheduler.timesteps`` draws the same samples
    as ``sdesolve.sample(scheduler.sde, model, solver=VDMAncestral(), grid=...)`` with the
    same generator (the grid being ``scheduler.grid``).

    Time. Continuous mode (``num_train_timesteps=None``): the timesteps are floats
    ``u_i = 1 - i/n`` in (0, 1] (float32, the network's time input). Discrete mode: integers
    ``k_i = round(N (1 - i/n))`` in {1, ..., N} with ``u = k / N`` (VDM's discrete-time convention
    ``t_i = i / T``; note that DDPM's integer timestep k is the time ``(k + 1)/N``). The process
    time is ``t = u * sde.T``: ``sde.T = 1`` for the "vdm" and "linear" schedules; the cosine
    process ends at ``T < 1`` where its log-SNR reaches -10 (see :class:`~sdesolve.CosineVPSDE`),
    so u is rescaled onto it.

    Args:
        num_train_timesteps: None for continuous time, or N for integer timesteps k = N u.
        beta_schedule: ``"vdm"``: :class:`~sdesolve.VDMSDE` with
            ``FixedLinearGamma(gamma_min, gamma_max)``; ``"linear"``: the VP process with beta linear
            in continuous time, :class:`~sdesolve.VPSDE` ``(beta_min, beta_max)``;
            ``"squaredcos_cap_v2"``: :class:`~sdesolve.CosineVPSDE` ``(s=cosine_s)``.
        gamma_min, gamma_max: the VDM schedule's ``gamma(0)`` and ``gamma(1)`` (``-log SNR``).
        beta_min, beta_max: the linear VP schedule's ``beta(0)`` and ``beta(1)``.
        cosine_s: the cosine schedule's offset s.
        prediction_type: what the model predicts: ``"epsilon"`` (the noise), ``"sample"`` (x0) or
            ``"v_prediction"`` (``v = alpha eps - sigma x0``, Salimans & Ho 2022).
        clip_sample: clip the x0 estimate to ``[-clip_sample_range, clip_sample_range]`` before the
            step (the step then uses the x0 form of the posterior mean).
        clip_sample_range: the clipping bound.
        thresholding: dynamic thresholding of the x0 estimate (Saharia et al. 2022, Imagen): per
            sample, ``s = clamp(quantile(|x0|, dynamic_thresholding_ratio), 1, sample_max_value)``
            and ``x0 <- clamp(x0, -s, s) / s``. Takes precedence over ``clip_sample``.
        dynamic_thresholding_ratio: the quantile of ``|x0|`` used for s.
        sample_max_value: the largest s.

    To sample with another process (e.g. a learned VDM schedule), call :meth:`set_process`
    before :meth:`set_timesteps`; the process itself is not part of the saved config.

    References: Kingma et al. (2021), *Variational Diffusion Models*; Ho et al. (2020), *DDPM*.
    """

    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int | None = None,
        beta_schedule: str = "vdm",
        gamma_min: float = -13.3,
        gamma_max: float = 5.0,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        cosine_s: float = 0.008,
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
    ):
        _check_positive_int("num_train_timesteps", num_train_timesteps, allow_none=True)
        if prediction_type not in _PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {sorted(_PREDICTIONS)}, got {prediction_type!r}")
        if not clip_sample_range > 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        if not 0.0 < dynamic_thresholding_ratio <= 1.0:
            raise ValueError(f"dynamic_thresholding_ratio must lie in (0, 1], got {dynamic_thresholding_ratio}")
        if not sample_max_value >= 1.0:
            raise ValueError(
                f"sample_max_value must be >= 1 (s is clamped to [1, sample_max_value]), got {sample_max_value}"
            )
        if beta_schedule == "vdm":
            sde = VDMSDE(FixedLinearGamma(gamma_min, gamma_max), t_min=0.0)
        elif beta_schedule == "linear":
            sde = VPSDE(beta_min, beta_max, t_min=0.0)
        elif beta_schedule == "squaredcos_cap_v2":
            sde = CosineVPSDE(s=cosine_s, t_min=0.0)
        else:
            raise ValueError(f"beta_schedule must be one of {_SCHEDULES}, got {beta_schedule!r}")
        self.sde: LinearSDE = sde
        self.solver = VDMAncestral()
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps: Tensor | None = None
        self.grid: Tensor | None = None
        self._coeffs: dict[str, Tensor] | None = None
        self._cache: dict = {}
        self._step_index = None

    # ------------------------------------------------------------------ setup
    def set_process(self, sde: LinearSDE) -> None:
        """Sample with the process ``sde`` (e.g. ``VDMSDE(learned_gamma, t_min=0)``) instead of the config's.

        Call :meth:`set_timesteps` afterwards. The process is not saved with the config.
        """
        if not isinstance(sde, LinearSDE):
            raise TypeError(f"sde must be a sdesolve LinearSDE, got {type(sde).__name__}")
        self.solver.check(sde)
        self.sde = sde
        self.timesteps = self.grid = self._coeffs = None
        self._cache = {}

    def _process_time(self, u64: Tensor) -> Tensor:
        """Process time t = u * T from the scheduler's unit time u (float64)."""
        return u64 * float(self.sde.T)

    def _unit_time(self, timesteps: Tensor) -> Tensor:
        n = self.config.num_train_timesteps
        ts = timesteps.to(torch.float64)
        return ts / n if n is not None else ts

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Set ``n = num_inference_steps`` timesteps and precompute the steps' coefficients.

        Continuous mode: ``u_i = 1 - i/n`` (float32); discrete mode: ``k_i = round(N (1 - i/n))``
        (int64, needs ``n <= N``). The grid of process times is ``t_i = u_i T`` followed by 0.
        """
        n = _check_positive_int("num_inference_steps", num_inference_steps)
        N = self.config.num_train_timesteps
        frac = 1.0 - torch.arange(n, dtype=torch.float64) / n
        if N is None:
            timesteps = frac.to(torch.float32)
        else:
            if n > N:
                raise ValueError(f"num_inference_steps={n} must be <= num_train_timesteps={N} in discrete mode")
            timesteps = torch.round(N * frac).to(torch.int64)
        # The process grid uses the timesteps' own values (float32 in continuous mode), so the
        # network's time input and the step's time are the same number.
        u = self._unit_time(timesteps)
        self.grid = torch.cat([self._process_time(u), torch.zeros(1, dtype=torch.float64)])
        with torch.no_grad():  # a learned schedule's parameters need no graph while sampling
            self._coeffs = self.solver.init(self.sde, self.grid)
        self._timesteps64 = timesteps.to(torch.float64)
        self._cache = {}
        self.num_inference_steps = n
        self.timesteps = timesteps.to(device) if device is not None else timesteps
        self._step_index = None

    def _coeffs_for(self, sample: Tensor) -> dict[str, Tensor]:
        key = (sample.device, sample.dtype)
        if key not in self._cache:
            self._cache[key] = _to_device(self._coeffs, sample)
        return self._cache[key]

    # ------------------------------------------------------------------ stepping
    def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
        """The identity: the model takes z_t as is."""
        return sample

    def _threshold(self, x0: Tensor) -> Tensor:
        dtype = x0.dtype
        flat = x0.reshape(x0.shape[0], -1)
        if dtype not in (torch.float32, torch.float64):
            flat = flat.float()  # quantile needs float32/64
        s = torch.quantile(flat.abs(), float(self.config.dynamic_thresholding_ratio), dim=1)
        s = s.clamp(min=1.0, max=float(self.config.sample_max_value)).unsqueeze(1)
        return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(dtype)

    def step(
        self,
        model_output: Tensor,
        timestep,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> VDMSchedulerOutput | tuple:
        """One ancestral step from ``timestep = timesteps[i]`` to ``timesteps[i+1]`` (the last to t = 0).

        Args:
            model_output: the network's output at (sample, timestep), of ``prediction_type``.
            timestep: ``timesteps[i]`` (a number, a 0-d tensor, or a (B,) tensor of equal values).
            sample: z at ``timesteps[i]``, shape (B, *event).
            generator: a ``torch.Generator`` (or a list, one per sample) for the step's noise.
            return_dict: return a :class:`VDMSchedulerOutput` (else a tuple
                ``(prev_sample, pred_original_sample)``).
        """
        if not isinstance(sample, Tensor) or not sample.is_floating_point():
            raise TypeError("sample must be a floating-point tensor")
        if not isinstance(model_output, Tensor) or model_output.shape != sample.shape:
            got = tuple(model_output.shape) if isinstance(model_output, Tensor) else type(model_output).__name__
            raise ValueError(f"model_output must be a tensor of sample's shape {tuple(sample.shape)}, got {got}")
        i = self._index_for(timestep)
        c = self._coeffs_for(sample)
        out = model_output.to(sample.dtype)
        src = _PREDICTIONS[self.config.prediction_type]
        alpha_t, sigma_t = c["alpha_t"][i], c["sigma_t"][i]
        x0 = convert(out, sample, alpha_t, sigma_t, src, "x0")
        if self.config.thresholding or self.config.clip_sample:
            if self.config.thresholding:
                x0 = self._threshold(x0)
            else:
                r = float(self.config.clip_sample_range)
                x0 = x0.clamp(-r, r)
            mean = ancestral_mean_from_x0(sample, x0, i, c)
        else:
            eps = convert(out, sample, alpha_t, sigma_t, src, "eps")
            mean = ancestral_mean(sample, eps, i, c)
        last = i == self.num_inference_steps - 1
        if last:
            prev = mean  # the last step returns the posterior mean
        else:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            prev = mean + c["std"][i] * noise
        self._advance(i)
        if not return_dict:
            return prev, x0
        return VDMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    # ------------------------------------------------------------------ training helpers
    def _coefs_at(self, timesteps, like: Tensor) -> tuple[Tensor, Tensor]:
        ts = torch.as_tensor(timesteps, device=like.device)
        if ts.dim() > 1:
            raise ValueError(f"timesteps must be a scalar or of shape (B,), got shape {tuple(ts.shape)}")
        t = self._process_time(self._unit_time(ts))
        self.sde._time(t, name="timesteps")  # range check (free on CPU; skipped on accelerators)
        if t.dim() == 1 and t.shape[0] != like.shape[0]:
            raise ValueError(f"timesteps has {t.shape[0]} entries but the batch has {like.shape[0]}")
        a = bcast(torch.exp(self.sde._log_alpha(t)), like).to(like.dtype)
        s = bcast(torch.exp(self.sde._log_sigma(t)), like).to(like.dtype)
        return a, s

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps) -> Tensor:
        """``z_t = alpha(t) x0 + sigma(t) noise`` at the timesteps (``sde.perturb`` at t = u T)."""
        if noise.shape != original_samples.shape:
            raise ValueError(
                f"noise must have the shape of original_samples {tuple(original_samples.shape)}, got {tuple(noise.shape)}"
            )
        a, s = self._coefs_at(timesteps, original_samples)
        return a * original_samples + s * noise

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps) -> Tensor:
        """The v-prediction target ``v = alpha(t) noise - sigma(t) x0`` (``sample`` is x0)."""
        a, s = self._coefs_at(timesteps, sample)
        return a * noise - s * sample


class ScoreSdeVpScheduler(SchedulerMixin, ConfigMixin, _StepIndex):
    r"""Euler-Maruyama on the reverse VP SDE (Song et al. 2021), a drop-in for diffusers' scheduler.

    The process is :class:`~sdesolve.VPSDE` ``(beta_min, beta_max)``; each :meth:`step_pred` is one
    :class:`~sdesolve.EulerMaruyama` step on the uniform grid ``t_i = 1 - i (1 - eps)/n``,
    ``i = 0..n`` (``eps = sampling_eps``): at ``timesteps[i] = t_i`` (i < n), with
    ``dt = t_{i+1} - t_i = -(1 - eps)/n``,

    .. math::

        \bar x = x + [-\tfrac12\beta(t) x - \beta(t)\, s]\,dt, \qquad
        x \leftarrow \bar x + \sqrt{\beta(t)\,|dt|}\; z,

    and returns ``(x, x_mean)``. The last step ends exactly at ``sampling_eps``; use its
    ``x_mean`` as the sample (Song et al.'s "noise removal").

    Differences from diffusers' ``ScoreSdeVpScheduler`` (deliberate): diffusers' timesteps are
    ``linspace(1, eps, n)`` (spacing ``(1 - eps)/(n - 1)``, the last evaluation at eps itself)
    while its step uses ``dt = -1/n`` regardless, so its chain does not end at eps (it overshoots
    to ``eps - 1/n``) and its steps disagree with its time grid. Here ``dt`` is the difference of
    consecutive times actually used. With ``sampling_eps = 0`` and the same t, the two steps are
    identical; otherwise the drift increment differs by the factor ``1 - eps`` and the noise by
    ``sqrt(1 - eps)``.

    Args:
        num_train_timesteps: kept for compatibility with diffusers' config (``len(scheduler)``).
        beta_min, beta_max: the VP schedule's ``beta(0)``, ``beta(1)``.
        sampling_eps: the final time of sampling (default 1e-3), in [0, 1).
        prediction_type: what ``step_pred``'s first argument is. ``"epsilon"`` (default, as in
            diffusers and score_sde's VP models, whose output is divided by ``-sigma(t)``): the
            network's noise prediction, converted to the score ``-eps / sigma(t)``. ``"score"``:
            the score itself.

    Reference: Song et al. (2021), *Score-Based Generative Modeling through SDEs*, Alg. 1 predictor.
    """

    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 2000,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        sampling_eps: float = 1e-3,
        prediction_type: str = "epsilon",
    ):
        _check_positive_int("num_train_timesteps", num_train_timesteps)
        if prediction_type not in ("epsilon", "score"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'score', got {prediction_type!r}")
        self._check_eps(sampling_eps)
        self.sde = VPSDE(beta_min, beta_max, t_min=float(sampling_eps))
        self.solver = EulerMaruyama()
        self.timesteps: Tensor | None = None
        self.grid: Tensor | None = None
        self.num_inference_steps: int | None = None
        self._coeffs = None
        self._cache: dict = {}
        self._step_index = None

    @staticmethod
    def _check_eps(sampling_eps) -> float:
        if (
            isinstance(sampling_eps, bool)
            or not isinstance(sampling_eps, (int, float))
            or not 0.0 <= sampling_eps < 1.0
        ):
            raise ValueError(f"sampling_eps must be a number in [0, 1), got {sampling_eps!r}")
        return float(sampling_eps)

    def set_timesteps(
        self, num_inference_steps: int, sampling_eps: float | None = None, device: str | torch.device | None = None
    ) -> None:
        """Timesteps ``t_i = 1 - i (1 - eps)/n`` for i < n (float32); the grid adds ``t_n = eps``.

        ``sampling_eps`` defaults to the config's.
        """
        n = _check_positive_int("num_inference_steps", num_inference_steps)
        eps = self._check_eps(self.config.sampling_eps if sampling_eps is None else sampling_eps)
        timesteps = torch.linspace(1.0, eps, n + 1, dtype=torch.float64)[:-1].to(torch.float32)
        # The grid is the timesteps' own (float32) values, so the network's time and the step's agree.
        self.grid = torch.cat([timesteps.to(torch.float64), torch.tensor([eps], dtype=torch.float64)])
        with torch.no_grad():
            c = self.solver.init(self.sde, self.grid)
            c["sigma_t"] = torch.exp(self.sde._log_sigma(c["t"]))
        self._coeffs = c
        self._timesteps64 = timesteps.to(torch.float64)
        self._cache = {}
        self.num_inference_steps = n
        self.timesteps = timesteps.to(device) if device is not None else timesteps
        self._step_index = None

    def step_pred(self, score: Tensor, x: Tensor, t, generator: torch.Generator | None = None):
        """One Euler-Maruyama step of the reverse VP SDE from ``t = timesteps[i]`` to the next time.

        Args:
            score: the model output at (x, t): the noise prediction (``prediction_type="epsilon"``)
                or the score.
            x: the current sample (B, *event).
            t: ``timesteps[i]``, a number, a 0-d tensor or a (B,) tensor of equal values.
            generator: a ``torch.Generator`` (or a list, one per sample) for the noise.

        Returns:
            ``(x, x_mean)``: the next sample and its noiseless mean.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating-point tensor")
        if not isinstance(score, Tensor) or score.shape != x.shape:
            got = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
            raise ValueError(f"score must be a tensor of x's shape {tuple(x.shape)}, got {got}")
        i = self._index_for(t)
        if self._coeffs is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step_pred")
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = _to_device(self._coeffs, x)
        c = self._cache[key]
        s = score.to(x.dtype)
        if self.config.prediction_type == "epsilon":
            s = -s / c["sigma_t"][i]
        # sdesolve's Euler-Maruyama step without noise is the mean; its noise term is added here
        # so that the mean is returned too (same draw order as EulerMaruyama.step).
        x_mean = self.solver.step(_GivenScore(s), {"x": x}, i, c, noise=False)["x"]
        z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_next = x_mean + c["g_sqrt_h"][i] * z
        self._advance(i)
        return x_next, x_mean

    def __len__(self) -> int:
        return self.config.num_train_timesteps


class _GivenScore:
    """A model whose score at the current step is already known (the scheduler's input)."""

    def __init__(self, s: Tensor):
        self._s = s

    def score(self, x: Tensor, t, *, coefs=None) -> Tensor:
        return self._s
