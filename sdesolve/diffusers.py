"""diffusers-compatible schedulers built on sdesolve's processes and solvers.

Two schedulers that subclass diffusers' ``SchedulerMixin`` and ``ConfigMixin``, so
``from_config``, ``save_pretrained`` / ``from_pretrained`` and pipelines (e.g.
``DDPMPipeline``) work with them:

* :class:`VDMScheduler`: the ancestral sampler of VDM (Kingma et al. 2021), one
  :class:`~sdesolve.solvers.VDMAncestral` step per call, with the signature and defaults of the
  ``VDMScheduler`` proposed to diffusers (huggingface/diffusers PR 7737), plus sdesolve's
  extras: continuous time, VDM's and learned schedules, v-prediction. A DDPM, DDIM or PNDM config
  (saved or in memory) loads into it with the same ``alphas_cumprod`` and timestep convention;
  what cannot be mapped is refused with a ValueError, never silently replaced.
* :class:`ScoreSdeVpScheduler`: Euler-Maruyama on the reverse VP SDE (Song et al. 2021), a
  drop-in replacement for diffusers' scheduler of that name whose step size follows the
  timesteps actually used.

Both hold a sdesolve process (``scheduler.sde``) and precompute the sdesolve solver's per-step
coefficients (float64, once per ``set_timesteps``); nothing is re-derived here.

Needs the ``diffusers`` extra: ``pip install sdesolve[diffusers]``.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

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
from ._validate import check_bool, check_choice, check_int, check_real, describe
from .model import convert
from .sde.base import LinearSDE
from .sde.discrete import DiscreteVPSDE, ddpm_betas
from .sde.vdm import VDMSDE, FixedLinearGamma
from .sde.vp import VPSDE, CosineVPSDE
from .solvers.base import _to_device
from .solvers.euler_maruyama import EulerMaruyama
from .solvers.vdm_ancestral import VDMAncestral, ancestral_mean, ancestral_mean_from_x0

__all__ = ["VDMScheduler", "VDMSchedulerOutput", "ScoreSdeVpScheduler"]

#: a timestep as diffusers passes one: a number (numpy scalars too) or a tensor (0-d, (1,) or one per sample)
TimestepLike: TypeAlias = "float | Tensor"

_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
#: beta schedules by name; discrete ones are diffusers' DDPM betas, "vdm" is VDM's linear gamma
_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace", "vdm")
_CONTINUOUS = ("linear", "squaredcos_cap_v2", "sigmoid", "vdm")
_SPACINGS = ("leading", "linspace", "trailing")
#: the diffusers schedulers whose configs VDMScheduler takes with the same schedule and timesteps
_STANDS_IN_FOR = ["DDPMScheduler", "DDIMScheduler", "PNDMScheduler"]
#: keys of other schedulers' configs that change the noise schedule or what the network outputs,
#: with the values VDMScheduler can honour; any other value is refused when such a config is loaded
_FOREIGN_KEYS = {
    "variance_type": ("fixed_small", "fixed_small_log"),
    "rescale_betas_zero_snr": (False,),
    "use_karras_sigmas": (False,),
    "use_exponential_sigmas": (False,),
    "use_beta_sigmas": (False,),
    "timestep_type": ("discrete",),
}
#: the continuous "sigmoid" schedule of the seed VDMScheduler: log SNR linear from 6 to -6
_SIGMOID_GAMMA = (-6.0, 6.0)


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


# ------------------------------------------------------------------ timesteps
def _timestep_value(timestep: Any, name: str = "timestep") -> float:
    """One timestep as a float: a number (numpy scalars too) or a tensor holding one value (or equal values)."""
    if isinstance(timestep, Tensor):
        if timestep.numel() < 1:
            raise ValueError(f"{name} must hold one value, got an empty tensor")
        if timestep.dtype == torch.bool or timestep.is_complex():
            raise TypeError(f"{name} must be a real number or tensor, got dtype {timestep.dtype}")
        flat = timestep.detach().flatten()
        if flat.device.type == "cpu" and flat.numel() > 1 and not bool((flat == flat[0]).all()):
            raise ValueError(f"{name} must hold a single value (a batch shares one step), got several")
        return float(flat[0])
    if isinstance(timestep, bool) or not isinstance(timestep, numbers.Real):
        if not (
            hasattr(timestep, "dtype") and getattr(timestep.dtype, "kind", "") in "iuf" and hasattr(timestep, "item")
        ):
            raise TypeError(
                f"{name} must be a number or a tensor, got {describe(timestep)} ({type(timestep).__name__})"
            )
    return float(timestep)


def _per_sample(timesteps: object, like: Tensor, name: str = "timesteps") -> Tensor:
    """Timesteps as float64 on like's device: a scalar (0-d) or one per sample ((B,)); shape (1,) broadcasts."""
    if isinstance(timesteps, Tensor):
        if timesteps.dtype == torch.bool or timesteps.is_complex():
            raise TypeError(f"{name} must be a real tensor or number, got dtype {timesteps.dtype}")
        ts = timesteps.detach()
    elif isinstance(timesteps, (list, tuple)) or (hasattr(timesteps, "shape") and hasattr(timesteps, "dtype")):
        ts = torch.as_tensor(timesteps)
    else:
        ts = torch.tensor(_timestep_value(timesteps, name))
    if ts.dim() > 1 or (ts.dim() == 1 and ts.shape[0] not in (1, like.shape[0])):
        raise ValueError(
            f"{name} must be a scalar or of shape (1,) or ({like.shape[0]},) for a batch of {like.shape[0]}, "
            f"got shape {tuple(ts.shape)}"
        )
    if ts.dim() == 1 and ts.shape[0] == 1:
        ts = ts[0]
    return ts.to(device=like.device, dtype=torch.float64)


def _check_step_inputs(x: object, out: object, generator: object, x_name: str, out_name: str) -> None:
    """A scheduler step's inputs: the state a floating tensor, the network's output a tensor of its shape."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{x_name} must be a floating-point tensor, got {describe(x)}")
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{out_name} must be a tensor of {x_name}'s shape {tuple(x.shape)}, got {got}")
    _check_generator(generator)


def _check_add_noise(original_samples: object, noise: object) -> None:
    """``add_noise``'s inputs: two floating tensors of one shape."""
    for name, v in (("original_samples", original_samples), ("noise", noise)):
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {describe(v)}")
    assert isinstance(original_samples, Tensor) and isinstance(noise, Tensor)  # checked above
    if noise.shape != original_samples.shape:
        raise ValueError(
            f"noise must have the shape of original_samples {tuple(original_samples.shape)}, got {tuple(noise.shape)}"
        )


def _alpha_sigma(sde: LinearSDE, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """The process' alpha(t) and sigma(t) in ``like``'s compute dtype (float32 at least), broadcast against it."""
    cd = _compute_dtype(like.dtype)
    a = bcast(torch.exp(sde._log_alpha(t)).to(cd), like)
    s = bcast(torch.exp(sde._log_sigma(t)).to(cd), like)
    return a, s


def _check_generator(generator: object) -> None:
    ok = generator is None or isinstance(generator, torch.Generator)
    ok = ok or (isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator))
    if not ok:
        raise TypeError(
            f"generator must be a torch.Generator, a list of them (one per sample) or None, got {describe(generator)}"
        )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Step arithmetic in float32 at least (diffusers keeps its coefficients in float32 for half states)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


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

    def _lookup(self, timestep: TimestepLike) -> int:
        t = _timestep_value(timestep)
        diff = (self._timesteps64 - t).abs()
        j = int(torch.argmin(diff))
        if not float(diff[j]) <= 1e-6 * max(1.0, abs(t)):
            shown = self._timesteps64[:6].tolist()
            raise ValueError(
                f"timestep {t:g} is not one of the scheduler's timesteps {shown}{' ...' if len(diff) > 6 else ''}; "
                "pass the values of scheduler.timesteps, in order"
            )
        return j

    def _index_for(self, timestep: TimestepLike) -> int:
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

    def scale_model_input(self, sample: Tensor, timestep: TimestepLike | None = None) -> Tensor:
        """The identity: the model takes the sample as is."""
        return sample


# ------------------------------------------------------------------ configs
def _from_foreign_config(cls, config: dict) -> dict:
    """A config written by another diffusers scheduler, made to load with *its* values.

    diffusers drops from a config the keys its writer left at their defaults
    (``_use_default_values``), so the loading class's defaults would replace the writer's: a
    ``DDPMScheduler()`` config would load as VDMScheduler's continuous schedule. A config is
    foreign when ``_class_name`` names another class or when it holds keys that VDMScheduler does
    not take (an in-memory config has no ``_class_name``); its recorded values are then kept. Keys of
    the writer that change the schedule or the network's output (``variance_type="learned"``,
    ``rescale_betas_zero_snr=True`` ...) are checked: a value VDMScheduler cannot honour raises a
    ValueError, and so does a scheduler whose config holds no DDPM beta schedule.
    """
    config = dict(config)
    ours = set(inspect.signature(cls.__init__).parameters) - {"self"}
    public = {k for k in config if not k.startswith("_")}
    origin = config.get("_class_name")
    if isinstance(origin, str) and origin != cls.__name__:
        import diffusers

        try:
            origin_cls = getattr(diffusers, origin, None)
        except Exception:  # noqa: BLE001 - a deprecated or optional class that fails to import
            origin_cls = None
        if isinstance(origin_cls, type):
            params = inspect.signature(cast(Any, origin_cls).__init__).parameters
            if "beta_schedule" not in params and "trained_betas" not in params:
                raise ValueError(
                    f"a {origin} config cannot be loaded into {cls.__name__}: it holds no DDPM beta schedule "
                    f"(beta_schedule / trained_betas); {cls.__name__} stands in for {', '.join(_STANDS_IN_FOR)}"
                )
    elif public <= ours:
        return config  # our own config: diffusers' handling of defaults applies
    for key, allowed in _FOREIGN_KEYS.items():
        if key in config and key not in ours and config[key] not in allowed:
            raise ValueError(
                f"{key}={config[key]!r} of the {origin or 'loaded'} config cannot be mapped onto {cls.__name__} "
                f"(it honours {key} in {allowed}); refusing rather than sampling a different model"
            )
    # keep the writer's recorded value where it differs from ours (where it is the same, diffusers'
    # own handling of defaults gives the same value and keeps the config's bookkeeping unchanged)
    params = inspect.signature(cls.__init__).parameters
    config["_use_default_values"] = [
        k
        for k in config.get("_use_default_values", [])
        if not (k in config and k in ours and config[k] != params[k].default)
    ]
    return config


def _check_trained_betas(trained_betas: object, n: int) -> Tensor:
    try:
        b = torch.as_tensor(trained_betas, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"trained_betas must be a 1-d sequence of numbers in (0, 1), got {describe(trained_betas)}"
        ) from None
    if b.dim() != 1 or b.numel() != n:
        raise ValueError(
            f"trained_betas must hold num_train_timesteps={n} values (one per training step), got shape {tuple(b.shape)}"
        )
    if not bool((torch.isfinite(b) & (b > 0) & (b < 1)).all()):
        raise ValueError("trained_betas must lie in (0, 1), got values outside")
    return b


def _discrete_betas(schedule: str, n: int, beta_start: float, beta_end: float) -> Tensor:
    """diffusers' DDPM betas of a named schedule, float64."""
    if schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        return ddpm_betas(schedule, n, beta_start, beta_end)
    # "sigmoid" and "laplace" have no home in sdesolve.sde yet: take diffusers' own (float32) betas
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler(num_train_timesteps=n, beta_start=beta_start, beta_end=beta_end, beta_schedule=schedule)
    # DDPMScheduler sets betas in its __init__, which diffusers leaves unannotated (mypy does not see it)
    return ddpm.betas.to(torch.float64)  # type: ignore[attr-defined]


def _refuse_unused(c: dict, names: tuple, reason: str) -> None:
    defaults = inspect.signature(VDMScheduler.__init__).parameters
    for name in names:
        value = c[name]
        if value != defaults[name].default and value is not None:
            raise ValueError(f"{name}={value!r} is not used {reason}; refusing rather than ignoring it")


def _vdm_process(c: dict) -> LinearSDE:
    """The process of a checked VDMScheduler config (float64, t_min = 0)."""
    n, schedule = c["num_train_timesteps"], c["beta_schedule"]
    if schedule != "vdm":
        _refuse_unused(c, ("gamma_min", "gamma_max"), f"by beta_schedule={schedule!r} (only by 'vdm')")
    if n is None:
        where = "in continuous time (num_train_timesteps=None)"
        if c["trained_betas"] is not None or schedule not in _CONTINUOUS:
            what = "trained_betas" if c["trained_betas"] is not None else f"beta_schedule={schedule!r}"
            raise ValueError(
                f"{what} is a discrete DDPM schedule: set num_train_timesteps (continuous time takes "
                f"beta_schedule in {_CONTINUOUS})"
            )
        _refuse_unused(
            c, ("beta_start", "beta_end"), where + "; the continuous linear schedule takes beta_min/beta_max"
        )
        _refuse_unused(c, ("timestep_spacing", "steps_offset"), where + ": the timesteps are u_i = 1 - i/n")
        if schedule != "linear":
            _refuse_unused(c, ("beta_min", "beta_max"), f"by beta_schedule={schedule!r}")
        if schedule != "squaredcos_cap_v2":
            _refuse_unused(c, ("cosine_s",), f"by beta_schedule={schedule!r}")
        if schedule == "linear":
            return VPSDE(c["beta_min"], c["beta_max"], t_min=0.0)
        if schedule == "squaredcos_cap_v2":
            return CosineVPSDE(s=c["cosine_s"], t_min=0.0)
        gamma = _SIGMOID_GAMMA if schedule == "sigmoid" else (c["gamma_min"], c["gamma_max"])
        return VDMSDE(FixedLinearGamma(*gamma), t_min=0.0)
    where = f"with num_train_timesteps={n} (discrete DDPM betas)"
    _refuse_unused(c, ("beta_min", "beta_max"), where + "; the discrete linear schedule takes beta_start/beta_end")
    _refuse_unused(c, ("cosine_s",), where + "; diffusers' discrete cosine schedule has s = 0.008")
    if c["trained_betas"] is not None:
        return DiscreteVPSDE(betas=_check_trained_betas(c["trained_betas"], n), t_min=0.0)
    if schedule == "vdm":
        return VDMSDE(FixedLinearGamma(c["gamma_min"], c["gamma_max"]), t_min=0.0)
    return DiscreteVPSDE(betas=_discrete_betas(schedule, n, c["beta_start"], c["beta_end"]), t_min=0.0)


def _check_vdm_config(c: dict) -> dict:
    """VDMScheduler's constructor arguments, checked and normalized (Python numbers, lists)."""
    if c["num_train_timesteps"] is not None:
        c["num_train_timesteps"] = check_int(c["num_train_timesteps"], "num_train_timesteps", minimum=1)
    c["beta_schedule"] = check_choice(c["beta_schedule"], "beta_schedule", _SCHEDULES)
    for name in ("clip_sample", "thresholding"):
        c[name] = check_bool(c[name], name)
    c["prediction_type"] = check_choice(c["prediction_type"], "prediction_type", tuple(_PREDICTIONS))
    c["dynamic_thresholding_ratio"] = check_real(
        c["dynamic_thresholding_ratio"], "dynamic_thresholding_ratio", lo=0.0, hi=1.0, lo_open=True
    )
    c["clip_sample_range"] = check_real(c["clip_sample_range"], "clip_sample_range", positive=True)
    c["sample_max_value"] = check_real(c["sample_max_value"], "sample_max_value", positive=True)
    c["timestep_spacing"] = check_choice(c["timestep_spacing"], "timestep_spacing", _SPACINGS)
    c["steps_offset"] = check_int(c["steps_offset"], "steps_offset", minimum=0)
    for name in ("beta_start", "beta_end"):
        c[name] = check_real(c[name], name, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    for name in ("gamma_min", "gamma_max", "beta_min", "beta_max"):
        c[name] = check_real(c[name], name)
    c["cosine_s"] = check_real(c["cosine_s"], "cosine_s", positive=True)
    if c["trained_betas"] is not None and c["num_train_timesteps"] is not None:
        c["trained_betas"] = _check_trained_betas(c["trained_betas"], c["num_train_timesteps"]).tolist()
    return c


# diffusers' SchedulerMixin and ConfigMixin disagree on config_name's type (str vs None): their conflict
class VDMScheduler(_StepIndex, SchedulerMixin, ConfigMixin):  # type: ignore[misc]
    r"""VDM's ancestral sampler as a diffusers scheduler.

    Each :meth:`step` at ``timesteps[i]`` is one :class:`~sdesolve.solvers.VDMAncestral` step of
    the process ``self.sde`` from ``t_i`` to ``t_{i+1}`` (the last one to ``t = 0``, alpha = 1):

    .. math::

        z_s = \frac{\alpha_s}{\alpha_t}(z_t - c\,\sigma_t\hat\epsilon) + \sigma_s\sqrt{c}\,\xi,
        \qquad c = -\mathrm{expm1}(\gamma_s - \gamma_t),

    where ``gamma = -log SNR``: DDPM's posterior step (``variance_type="fixed_small"``). The last
    step returns the posterior mean (no noise), as DDPM does. With ``clip_sample`` or
    ``thresholding`` the step is taken from the clipped x0 estimate, as DDPM does.

    **Discrete time** (``num_train_timesteps=N``): diffusers' convention. Timestep k in
    {0, ..., N-1} is the noise level ``alphas_cumprod[k]``, i.e. process time ``t = (k + 1)/N``
    (:class:`~sdesolve.DiscreteVPSDE`); the named schedules are diffusers' DDPM betas
    (``beta_start``, ``beta_end``, or ``trained_betas``), and ``"vdm"`` is VDM's T-step model
    ``alpha^2 = sigmoid(-gamma((k + 1)/N))``. :meth:`set_timesteps` follows DDPM's
    ``timestep_spacing`` ("leading" + ``steps_offset``, "linspace", "trailing"); at construction
    the timesteps are ``N-1, ..., 0``. A DDPM, DDIM or PNDM config loads with the same
    ``alphas_cumprod`` and timesteps (``set_alpha_to_one``, ``skip_prk_steps`` are other samplers'
    choices: like ``DDPMScheduler``, this one always ends at alpha = 1).

    **Continuous time** (``num_train_timesteps=None``, the default): timesteps are floats
    ``u_i = 1 - i/n`` in (0, 1] (float32, the network's time input), the process time is
    ``t = u * sde.T`` (the cosine process ends at ``T < 1``), and the last step goes to t = 0.
    ``"linear"`` is :class:`~sdesolve.VPSDE` ``(beta_min, beta_max)`` (the continuous limit of
    DDPM's linear betas), ``"squaredcos_cap_v2"`` :class:`~sdesolve.CosineVPSDE` ``(s=cosine_s)``,
    ``"sigmoid"`` the linear log-SNR 6 -> -6, ``"vdm"`` :class:`~sdesolve.VDMSDE` with
    ``FixedLinearGamma(gamma_min, gamma_max)``. The spacing names integer timesteps, so only the
    default spacing and offset are accepted here.

    Arguments that the chosen configuration does not use (``beta_min`` in discrete time,
    ``beta_start`` in continuous time, ``gamma_min`` with a DDPM schedule ...) must keep their
    defaults: a non-default value raises a ValueError rather than being ignored.

    Args:
        num_train_timesteps: None for continuous time, or N for integer timesteps 0..N-1.
        beta_schedule: ``"linear"`` (default), ``"scaled_linear"``, ``"squaredcos_cap_v2"``,
            ``"sigmoid"``, ``"laplace"`` (discrete: diffusers' DDPM betas) or ``"vdm"``.
        clip_sample: clip the x0 estimate to ``[-clip_sample_range, clip_sample_range]`` (default
            True, as DDPM).
        prediction_type: ``"epsilon"``, ``"sample"`` (x0) or ``"v_prediction"``
            (``v = alpha eps - sigma x0``, Salimans & Ho 2022).
        thresholding, dynamic_thresholding_ratio, sample_max_value: dynamic thresholding of the x0
            estimate (Saharia et al. 2022), exactly DDPMScheduler's: per sample
            ``s = clamp(quantile(|x0|, ratio), min=1, max=sample_max_value)``,
            ``x0 <- clamp(x0, -s, s) / s``. Takes precedence over ``clip_sample``.
        clip_sample_range: the clipping bound.
        timestep_spacing: ``"leading"`` (default), ``"linspace"`` or ``"trailing"`` (discrete time).
        steps_offset: added to the "leading" timesteps (discrete time).
        beta_start, beta_end: the discrete DDPM schedule's first and last beta.
        trained_betas: the N betas themselves (discrete time; overrides ``beta_schedule``).
        gamma_min, gamma_max: the "vdm" schedule's ``gamma(0)``, ``gamma(1)`` (``-log SNR``).
        beta_min, beta_max: the continuous "linear" schedule's ``beta(0)``, ``beta(1)``.
        cosine_s: the continuous cosine schedule's offset s.

    To sample with another process (e.g. a learned VDM schedule), call :meth:`set_process`;
    the process itself is not part of the saved config.

    References: Kingma et al. (2021), *Variational Diffusion Models*; Ho et al. (2020), *DDPM*.
    """

    timesteps: Tensor  # set in __init__ (by _set_grid), never None here

    if TYPE_CHECKING:
        # diffusers types ConfigMixin.config as dict[str, Any]; it is a FrozenDict with attribute access
        @property
        def config(self) -> Any: ...

    _compatibles = list(_STANDS_IN_FOR)
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int | None = None,
        beta_schedule: str = "linear",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        trained_betas: list[float] | None = None,
        gamma_min: float = -13.3,
        gamma_max: float = 5.0,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        cosine_s: float = 0.008,
    ):
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        c = _check_vdm_config(args)
        self.sde: LinearSDE = _vdm_process(c)
        self.register_to_config(
            **{k: v for k, v in c.items() if k not in ("beta_schedule", "prediction_type", "timestep_spacing")}
        )
        self.solver = VDMAncestral()
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.custom_timesteps = False
        self._set_schedule_tensors()
        n = c["num_train_timesteps"]
        self._set_grid(torch.arange(n - 1, -1, -1) if n is not None else self._uniform(len(self)), None)

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """diffusers' config reading, with another scheduler's defaults kept (see :func:`_from_foreign_config`)."""
        return super().extract_init_dict(_from_foreign_config(cls, config_dict), **kwargs)

    def __len__(self) -> int:
        """``num_train_timesteps`` (1000 in continuous time, as the seed VDMScheduler)."""
        n = self.config.num_train_timesteps
        return n if n is not None else 1000

    # ------------------------------------------------------------------ setup
    def _set_schedule_tensors(self) -> None:
        """``alphas_cumprod``, ``alphas``, ``betas`` (float32, as DDPM's) of the discrete steps; None in continuous time."""
        n = self.config.num_train_timesteps
        if n is None:
            self.alphas_cumprod = self.alphas = self.betas = None
            return
        with torch.no_grad():
            log_ac = 2.0 * self.sde._log_alpha(self._process_time(torch.arange(n, dtype=torch.float64)))
        ac = torch.exp(log_ac)
        alphas = torch.exp(torch.diff(log_ac, prepend=torch.zeros(1, dtype=torch.float64)))
        self.alphas_cumprod, self.alphas = ac.float(), alphas.float()
        self.betas = (1.0 - alphas).float()

    def set_process(self, sde: LinearSDE) -> None:
        """Sample with the process ``sde`` (e.g. ``VDMSDE(learned_gamma, t_min=0)``) instead of the config's.

        Call :meth:`set_timesteps` afterwards. The process is not saved with the config.
        """
        if not isinstance(sde, LinearSDE):
            raise TypeError(f"sde must be a sdesolve LinearSDE, got {type(sde).__name__}")
        self.solver.check(sde)
        self.sde = sde
        self._set_schedule_tensors()
        self._set_grid(self.timesteps.detach().cpu(), None)

    def _process_time(self, timesteps64: Tensor) -> Tensor:
        """Process time of timesteps (float64): ``(k + 1)/N * T`` (discrete) or ``u * T`` (continuous)."""
        n = self.config.num_train_timesteps
        u = (timesteps64 + 1.0) / n if n is not None else timesteps64
        return u * float(self.sde.T)

    @staticmethod
    def _uniform(n: int) -> Tensor:
        return (1.0 - torch.arange(n, dtype=torch.float64) / n).to(torch.float32)

    def _spaced(self, n: int) -> Tensor:
        """DDPM's integer timesteps for n inference steps (``timestep_spacing``, ``steps_offset``)."""
        N, spacing = self.config.num_train_timesteps, self.config.timestep_spacing
        if spacing == "leading":
            return torch.arange(n - 1, -1, -1, dtype=torch.int64) * (N // n) + int(self.config.steps_offset)
        if spacing == "linspace":
            return torch.linspace(0, N - 1, n, dtype=torch.float64).round().flip(0).to(torch.int64)
        ratio = N / n  # trailing
        return torch.round(torch.arange(N, 0, -ratio, dtype=torch.float64)).to(torch.int64) - 1

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list | None = None,
    ) -> None:
        """Set the timesteps and precompute the steps' coefficients (float64, once).

        Discrete time: DDPM's timesteps for ``timestep_spacing`` (int64, needs ``n <= N``); continuous
        time: ``u_i = 1 - i/n`` (float32). Or pass ``timesteps``, decreasing (integers in [0, N-1], or
        floats in (0, 1] in continuous time). The last step goes to t = 0.
        """
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        N = self.config.num_train_timesteps
        if timesteps is not None:
            ts = torch.as_tensor(timesteps).detach().cpu()
            ts = ts.to(torch.int64) if N is not None and not ts.is_floating_point() else ts
            n, self.custom_timesteps = int(ts.numel()), True
        else:
            n = check_int(num_inference_steps, "num_inference_steps", minimum=1)
            if N is not None and n > N:
                raise ValueError(f"num_inference_steps={n} must be <= num_train_timesteps={N}")
            ts, self.custom_timesteps = (self._spaced(n) if N is not None else self._uniform(n)), False
        self._set_grid(ts, device)
        self.num_inference_steps = n

    def _set_grid(self, timesteps: Tensor, device: torch.device | str | None) -> None:
        N = self.config.num_train_timesteps
        ts64 = timesteps.to(torch.float64)
        lo, hi = (0.0, N - 1.0) if N is not None else (0.0, 1.0)
        if N is not None and timesteps.is_floating_point():
            raise TypeError(
                f"timesteps must be integers in discrete time (num_train_timesteps={N}), got {timesteps.dtype}"
            )
        if ts64.dim() != 1 or ts64.numel() < 1:
            raise ValueError(f"timesteps must be a non-empty 1-d sequence, got shape {tuple(ts64.shape)}")
        if (
            not bool(torch.isfinite(ts64).all())
            or bool(((ts64 < lo) | (ts64 > hi)).any())
            or (N is None and bool((ts64 <= 0).any()))
        ):
            what = f"in [0, {N - 1}]" if N is not None else "in (0, 1]"
            raise ValueError(f"timesteps must lie {what}, got {ts64[:6].tolist()}{' ...' if ts64.numel() > 6 else ''}")
        if bool((ts64[1:] >= ts64[:-1]).any()):
            raise ValueError(f"timesteps must be strictly decreasing, got {ts64[:6].tolist()}")
        grid = torch.cat([self._process_time(ts64), torch.zeros(1, dtype=torch.float64)])
        with torch.no_grad():  # a learned schedule's parameters need no graph while sampling
            self._coefs = self.solver.init(self.sde, grid)
        self.grid = grid
        self._timesteps64 = ts64
        self._cache: dict = {}
        self.timesteps = timesteps.to(device) if device is not None else timesteps
        self._step_index = None

    def _coefs_for(self, like: Tensor) -> dict[str, Tensor]:
        key = (like.device, _compute_dtype(like.dtype))
        if key not in self._cache:
            self._cache[key] = _to_device(self._coefs, torch.empty(0, device=key[0], dtype=key[1]))
        return self._cache[key]

    # ------------------------------------------------------------------ stepping
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
        timestep: TimestepLike,
        sample: Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> VDMSchedulerOutput | tuple:
        """One ancestral step from ``timestep = timesteps[i]`` to ``timesteps[i+1]`` (the last to t = 0).

        The arithmetic runs in float32 at least (float16/bfloat16 samples are upcast for the step
        and the result cast back), so half-precision loops keep float32 coefficients, as diffusers'.

        Args:
            model_output: the network's output at (sample, timestep), of ``prediction_type``.
            timestep: ``timesteps[i]``: a number (numpy scalars too), a 0-d tensor, or a tensor of
                equal values.
            sample: z at ``timesteps[i]``, shape (B, *event).
            generator: a ``torch.Generator``, or a list of B generators (sample b's noise from its
                own generator: any split of the batch gives the same samples).
            return_dict: return a :class:`VDMSchedulerOutput` (else a tuple
                ``(prev_sample, pred_original_sample)``).
        """
        _check_step_inputs(sample, model_output, generator, "sample", "model_output")
        i = self._index_for(timestep)
        c = self._coefs_for(sample)
        cd = _compute_dtype(sample.dtype)
        x, out = sample.to(cd), model_output.to(cd)
        src = _PREDICTIONS[self.config.prediction_type]
        alpha_t, sigma_t = c["alpha_t"][i], c["sigma_t"][i]
        x0 = convert(out, x, alpha_t, sigma_t, src, "x0")
        if self.config.thresholding or self.config.clip_sample:
            if self.config.thresholding:
                x0 = self._threshold(x0)
            else:
                r = float(self.config.clip_sample_range)
                x0 = x0.clamp(-r, r)
            prev = ancestral_mean_from_x0(x, x0, i, c)
        else:
            prev = ancestral_mean(x, convert(out, x, alpha_t, sigma_t, src, "eps"), i, c)
        if i < self._timesteps64.numel() - 1:  # the last step returns the posterior mean, as DDPM does
            noise = randn_tensor(
                model_output.shape, generator=generator, device=sample.device, dtype=model_output.dtype
            )
            prev = prev + c["std"][i] * noise.to(cd)
        self._advance(i)
        prev, x0 = prev.to(sample.dtype), x0.to(sample.dtype)
        if not return_dict:
            return prev, x0
        return VDMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    # ------------------------------------------------------------------ training helpers
    def _coefs_at(self, timesteps: TimestepLike, like: Tensor) -> tuple[Tensor, Tensor]:
        """alpha and sigma at the timesteps (a scalar, shape (1,) or (B,)), broadcast against ``like``."""
        ts = _per_sample(timesteps, like)
        N = self.config.num_train_timesteps
        hi = N - 1.0 if N is not None else 1.0
        if ts.device.type == "cpu" and bool(((ts < 0) | (ts > hi) | ~torch.isfinite(ts)).any()):
            what = f"timesteps in [0, {N - 1}] (num_train_timesteps={N})" if N is not None else "times in [0, 1]"
            raise ValueError(f"timesteps must be {what}, got values outside")
        return _alpha_sigma(self.sde, self._process_time(ts), like)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: TimestepLike) -> Tensor:
        """``z_t = alpha(t) x0 + sigma(t) noise`` at the timesteps (DDPM's ``sqrt(alphas_cumprod[k])``
        in discrete time: k = 0 adds the first step's noise). ``timesteps``: a number, a 0-d tensor,
        shape (1,) (broadcast over the batch) or (B,); on any device."""
        _check_add_noise(original_samples, noise)
        a, s = self._coefs_at(timesteps, original_samples)
        cd = a.dtype
        return (a * original_samples.to(cd) + s * noise.to(original_samples.device, cd)).to(original_samples.dtype)

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: TimestepLike) -> Tensor:
        """The v-prediction target ``v = alpha(t) noise - sigma(t) x0`` (``sample`` is x0)."""
        for name, v in (("sample", sample), ("noise", noise)):
            if not isinstance(v, Tensor) or not v.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got {describe(v)}")
        if noise.shape != sample.shape:
            raise ValueError(f"noise must have the shape of sample {tuple(sample.shape)}, got {tuple(noise.shape)}")
        a, s = self._coefs_at(timesteps, sample)
        cd = a.dtype
        return (a * noise.to(sample.device, cd) - s * sample.to(cd)).to(sample.dtype)


# diffusers' SchedulerMixin and ConfigMixin disagree on config_name's type (str vs None): their conflict
class ScoreSdeVpScheduler(_StepIndex, SchedulerMixin, ConfigMixin):  # type: ignore[misc]
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

    As diffusers' ``ScoreSdeVpScheduler``, it has ``step_pred`` and no ``step`` (a predictor
    returning two tensors); it adds what the scheduler contract asks of every scheduler:
    ``init_noise_sigma``, ``scale_model_input`` (the identity), ``add_noise`` (the VP
    perturbation at continuous times in [0, 1]), ``len`` and timesteps set at construction
    (``num_train_timesteps`` steps).

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

    if TYPE_CHECKING:
        # diffusers types ConfigMixin.config as dict[str, Any]; it is a FrozenDict with attribute access
        @property
        def config(self) -> Any: ...

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
        n = check_int(num_train_timesteps, "num_train_timesteps", minimum=1)
        prediction_type = check_choice(prediction_type, "prediction_type", ("epsilon", "score"))
        beta_min, beta_max = check_real(beta_min, "beta_min"), check_real(beta_max, "beta_max")
        sampling_eps = self._check_eps(sampling_eps)
        self.sde = VPSDE(beta_min, beta_max, t_min=sampling_eps)
        self.register_to_config(num_train_timesteps=n, beta_min=beta_min, beta_max=beta_max, sampling_eps=sampling_eps)
        self.solver = EulerMaruyama()
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self._set_grid(n, sampling_eps, None)
        self.num_inference_steps = None

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    @staticmethod
    def _check_eps(sampling_eps: object) -> float:
        return check_real(sampling_eps, "sampling_eps", lo=0.0, hi=1.0, hi_open=True)

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: str | torch.device | None = None,
        sampling_eps: float | None = None,
    ) -> None:
        """Timesteps ``t_i = 1 - i (1 - eps)/n`` for i < n (float32); the grid adds ``t_n = eps``.

        diffusers' argument order ``(num_inference_steps, device)``; ``sampling_eps`` defaults to
        the config's. (A number in the second place is taken as ``sampling_eps``, the order of
        earlier sdesolve releases, with a DeprecationWarning.)
        """
        if isinstance(device, numbers.Real) and not isinstance(device, bool):
            warnings.warn(
                "ScoreSdeVpScheduler.set_timesteps(n, sampling_eps) is deprecated: the second argument is the "
                "device, as in diffusers; pass sampling_eps=... by keyword",
                DeprecationWarning,
                stacklevel=2,
            )
            device, sampling_eps = None, device
        n = check_int(num_inference_steps, "num_inference_steps", minimum=1)
        eps = self._check_eps(self.config.sampling_eps if sampling_eps is None else sampling_eps)
        self._set_grid(n, eps, device)

    def _set_grid(self, n: int, eps: float, device: torch.device | str | None) -> None:
        timesteps = torch.linspace(1.0, eps, n + 1, dtype=torch.float64)[:-1].to(torch.float32)
        # The grid is the timesteps' own (float32) values, so the network's time and the step's agree.
        self.grid = torch.cat([timesteps.to(torch.float64), torch.tensor([eps], dtype=torch.float64)])
        with torch.no_grad():
            c = self.solver.init(self.sde, self.grid)
            c["sigma_t"] = torch.exp(self.sde._log_sigma(c["t"]))
        self._coefs = c
        self._timesteps64 = timesteps.to(torch.float64)
        self._cache: dict = {}
        self.num_inference_steps = n
        self.timesteps = timesteps.to(device) if device is not None else timesteps
        self._step_index = None

    def step_pred(
        self, score: Tensor, x: Tensor, t: TimestepLike, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """One Euler-Maruyama step of the reverse VP SDE from ``t = timesteps[i]`` to the next time.

        Args:
            score: the model output at (x, t): the noise prediction (``prediction_type="epsilon"``)
                or the score.
            x: the current sample (B, *event).
            t: ``timesteps[i]``, a number (numpy scalars too), a 0-d tensor or a (B,) tensor of
                equal values.
            generator: a ``torch.Generator`` (or a list, one per sample) for the noise.

        Returns:
            ``(x, x_mean)``: the next sample and its noiseless mean.
        """
        _check_step_inputs(x, score, generator, "x", "score")
        i = self._index_for(t)
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = _to_device(self._coefs, x)
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

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: TimestepLike) -> Tensor:
        """``x_t = alpha(t) x0 + sigma(t) noise`` on the VP process, t in [0, 1] (a number, shape (1,) or (B,))."""
        _check_add_noise(original_samples, noise)
        t = _per_sample(timesteps, original_samples)
        if t.device.type == "cpu" and bool(((t < 0) | (t > 1) | ~torch.isfinite(t)).any()):
            raise ValueError("timesteps must be times in [0, 1], got values outside")
        a, s = _alpha_sigma(self.sde, t, original_samples)
        cd = a.dtype
        return (a * original_samples.to(cd) + s * noise.to(original_samples.device, cd)).to(original_samples.dtype)


class _GivenScore:
    """A model whose score at the current step is already known (the scheduler's input)."""

    def __init__(self, s: Tensor):
        self._s = s

    def score(self, x: Tensor, t: Tensor, *, coefs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        return self._s
