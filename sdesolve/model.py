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

Real networks. The network's output may be a tensor or an output object: diffusers'
``UNet2DOutput`` (any object with a tensor ``.sample``), a tuple or list whose first element is
the tensor, a dict with a ``"sample"`` key or a single tensor value (:func:`unwrap_output`).
Extra inputs (class labels, text embeddings) are bound with ``model_kwargs`` and handed to every
call as ``net(x, t_in, **model_kwargs)``; a tensor with a leading dimension is a per-sample input
(one row per sample, or 1 row shared by all) and is split with the batch (:meth:`ScoreModel.select`).
:class:`GuidedModel` is classifier-free guidance (Ho & Salimans 2022) as a view: the conditional
and unconditional inputs are concatenated into one network call of 2B samples, and the guided
prediction ``uncond + w (cond - uncond)`` is formed in the network's own parameterization (as
diffusers' pipelines do), then converted like any other output.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import torch
from torch import Tensor, nn

from ._utils import TimeLike, as_time64, batch_time, bcast, check_batch, check_time_range, time_tol
from ._validate import check_callable, check_choice, check_int, check_real, check_tensor, describe

if TYPE_CHECKING:
    from .sde.base import LinearSDE

__all__ = [
    "GuidedModel",
    "ScoreModel",
    "ScoreLike",
    "as_model",
    "bind_kwargs",
    "unwrap_output",
    "view_at",
    "view_coefficients",
    "PREDICTIONS",
]

PREDICTIONS = ("eps", "x0", "v", "score")
_M = TypeVar("_M")
#: a time vector, the batch size, and the network time input at each of its times (rows of (B, ...))
_TimeTable = tuple[Tensor, int, tuple[Tensor, ...]]


class ScoreModel(nn.Module):
    """A network seen through a linear forward process.

    Args:
        net: callable ``net(x, t_in, **model_kwargs)`` returning a tensor of x's shape, or an
            output object holding it (diffusers' ``UNet2DOutput``, a tuple, a dict: see
            :func:`unwrap_output`); ``t_in`` is the (B,) tensor ``time_input(t)``, computed in
            float64 and handed over in ``time_dtype``.
        sde: the forward process the network was trained on (a :class:`~sdesolve.sde.LinearSDE`).
        prediction: what the network predicts: ``"eps"``, ``"x0"``, ``"v"`` or ``"score"``.
        time_input: maps the continuous time t (float64, shape (B,)) to what the network was
            trained on (``999 t``, ``sigma(t)``, the log-SNR, ...). Defaults to
            ``sde.network_time`` (the identity, or the integer timestep for
            :class:`~sdesolve.sde.DiscreteVPSDE`).
        time_dtype: the floating dtype the network takes its time input in. ``None`` (default):
            x's dtype, but at least float32 — a float16 or bfloat16 state still hands the network
            float32 times (bfloat16 would round DDPM's timestep 999 to 1000 and 898.3 to 900).
        model_kwargs: extra keyword inputs of the network (``class_labels``,
            ``encoder_hidden_states``, ...), a dict with str keys, or None. A tensor with a
            leading dimension (at any depth of nested dicts) is a per-sample input: its leading
            size must be the batch size B of x or 1 (one row shared by every sample; handed over
            as given). Other values (numbers, flags, 0-d tensors) are passed through unchanged.
            :meth:`with_kwargs` binds more, :meth:`select` splits them with the batch. They are
            read-only once bound (``model.model_kwargs``), and ``model.to(device)`` does not move
            them: put them on the samples' device.

    ``nfe`` counts network evaluations (a Python int: reading it costs no synchronization; the
    count is kept under a lock, so calls from several threads are all counted). The copies made
    by :meth:`with_kwargs`, :meth:`select` and :meth:`guided` share the count of the model they
    come from (``copy.deepcopy`` starts a new one).

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
        net: Callable[..., Any],
        sde: LinearSDE,
        prediction: str = "eps",
        time_input: Callable[[Tensor], Tensor] | None = None,
        time_dtype: torch.dtype | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = check_callable(net, "net", "callable as net(x, t)")
        self.sde = _check_sde(sde)
        self.prediction = str(check_choice(prediction, "prediction", PREDICTIONS))
        if time_input is not None:
            check_callable(time_input, "time_input", "callable (t -> the network's time input) or None")
        self.time_input = time_input
        self.time_dtype = _check_time_dtype(time_dtype)
        self._model_kwargs: dict[str, Any] = _check_model_kwargs(model_kwargs, "model_kwargs")
        self._counter = _Counter()
        self._batch_checked: int | None = None  # the batch size model_kwargs were last checked against
        self._time_tables: dict[int, _TimeTable] = {}  # per-grid network times (:func:`with_time_tables`)

    @property
    def nfe(self) -> int:
        """Network evaluations so far (shared with the bound copies of this model)."""
        return self._counter.n

    @nfe.setter
    def nfe(self, value: int) -> None:
        self._counter.set(value)

    @property
    def model_kwargs(self) -> Mapping[str, Any]:
        """The bound extra inputs, read-only (bind others with :meth:`with_kwargs`: a copy)."""
        return MappingProxyType(self._model_kwargs)

    # ------------------------------------------------------------------ extra inputs
    def with_kwargs(self, **model_kwargs: Any) -> ScoreModel:
        """A copy of this model with ``model_kwargs`` bound on top of its own (same network, same count).

        ``model.with_kwargs(class_labels=y)`` evaluates ``net(x, t_in, class_labels=y)``; a key
        already bound is replaced. See the class docstring for per-sample inputs.
        """
        merged = {**self.model_kwargs, **_check_model_kwargs(model_kwargs, "model_kwargs")}
        return self._replace(_model_kwargs=merged)

    def select(self, index: int | slice | Sequence[int] | Tensor) -> ScoreModel:
        """The model for the samples ``x[index]``: every per-sample input indexed the same way.

        ``index``: an int, a slice, a list of ints, or a 1-d integer or boolean tensor (as used to
        index the batch of x). Per-sample inputs of one shared row, and non-tensor inputs, are
        kept as they are. This is how a caller that splits a batch (chunks, shards over ranks)
        keeps each sample with its own class label or embedding. Same network, same count.
        """
        index = _check_index(index)
        return self._replace(_model_kwargs=_select_tree(self._model_kwargs, index))

    def guided(self, guidance_scale: float, uncond_kwargs: Mapping[str, Any]) -> GuidedModel:
        """Classifier-free guidance of this model: a :class:`GuidedModel` (one network call of 2B per view)."""
        return GuidedModel(self, guidance_scale, uncond_kwargs)

    def _replace(self, **attrs: Any) -> ScoreModel:
        """A shallow copy (same net, process and counter) with ``attrs`` replaced."""
        new = copy.copy(self)
        for name in ("_modules", "_parameters", "_buffers"):  # own registries: setting a module on the copy
            new.__dict__[name] = type(self.__dict__[name])(self.__dict__[name])  # leaves this model alone
        new._time_tables = {}  # the tables of a solve stay with the copy made for it (with_time_tables)
        for name, value in attrs.items():
            setattr(new, name, value)
        new._batch_checked = None
        return new

    def _kwargs_for(self, batch: int) -> dict[str, Any]:
        """model_kwargs for a call on ``batch`` samples, checked once per batch size (shapes only: no sync)."""
        if self._model_kwargs and self._batch_checked != batch:
            _check_rows(self._model_kwargs, batch, "model_kwargs")
            self._batch_checked = batch
        return self._model_kwargs

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

    def _time_in(self, t64: Tensor, x: Tensor) -> Tensor:
        """The network's time input at the float64 times ``t64``, in :meth:`network_time_dtype`."""
        fn = self.time_input if self.time_input is not None else self.sde.network_time
        t_in = fn(t64)  # float64 in, float64 out: rounded once, below
        if not isinstance(t_in, Tensor):
            raise TypeError(f"time_input must return a tensor, got {type(t_in).__name__}")
        return t_in.to(self.network_time_dtype(x))

    def _net(self, x: Tensor, t64: Tensor) -> Tensor:
        return self._net_in(x, self._time_in(t64, x))

    def _net_in(self, x: Tensor, t_in: Tensor) -> Tensor:
        """One network call at a prepared time input: the output checked for shape, in x's dtype."""
        out = self._evaluate(x, t_in)
        if out.shape != x.shape:
            raise ValueError(f"the network returned shape {tuple(out.shape)}, expected the shape of x {tuple(x.shape)}")
        return out if out.dtype == x.dtype else out.to(x.dtype)

    def _table_row(self, x: Tensor, t: Tensor) -> Tensor | None:
        """The precomputed network time input of a solver's time ``t`` (a 0-d view into a time vector
        bound by :func:`with_time_tables`), or None when ``t`` is not one of them."""
        tables = self.__dict__.get("_time_tables")  # (absent from a model pickled by an older version)
        if not tables or torch.compiler.is_compiling():
            return None
        base = t._base
        entry = None if base is None else tables.get(id(base))
        if entry is None or entry[0] is not base or t.dim() != 0 or entry[1] != x.shape[0]:
            return None
        return entry[2][t.storage_offset()]

    def _evaluate(self, x: Tensor, t_in: Tensor) -> Tensor:
        """One network call on (x, t_in) with the bound inputs, counted; its output tensor."""
        out = self.net(x, t_in, **self._kwargs_for(x.shape[0]))
        self._counter.add(1)
        return unwrap_output(out, self.net)

    def _predict(self, x: Tensor, t64: Tensor, view: str, coefs: tuple[Tensor, Tensor] | None) -> Tensor:
        """The view at a prepared (B,) float64 time: one network call, then the exact conversion."""
        out = self._net(x, t64)
        if view == self.prediction:
            return out
        alpha, sigma = self._coefs(t64, x) if coefs is None else coefs
        return convert(out, x, alpha, sigma, self.prediction, view)

    def _predict_in(self, x: Tensor, t_in: Tensor, view: str, coefs: tuple[Tensor, Tensor]) -> Tensor:
        """The view from a prepared network time input and the coefficients at that time."""
        out = self._net_in(x, t_in)
        if view == self.prediction:
            return out
        return convert(out, x, coefs[0], coefs[1], self.prediction, view)

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
        if self.model_kwargs:
            extra += f", model_kwargs={sorted(self.model_kwargs)}"
        return f"prediction={self.prediction!r}{extra}"


class GuidedModel(ScoreModel):
    r"""Classifier-free guidance of a conditional :class:`ScoreModel`, as a model view.

    Each view makes one network call on the batch of 2B samples ``cat([x, x])``, the
    unconditional inputs in the first half and the conditional ones in the second (the order of
    diffusers' pipelines), and forms the guided output in the network's own parameterization

        out = out_uncond + w (out_cond - out_uncond),

    exactly as diffusers' pipelines write ``noise_pred_uncond + guidance_scale * (noise_pred_text
    - noise_pred_uncond)``; the views then convert it like any network output. Every conversion
    of the table above is affine in the output at a fixed (x, t) and the guided output is an
    affine combination ((1 - w) uncond + w cond), so guiding eps, x0, v or the score gives the same
    guided model: in score form, grad log p_t(x | c)^w p_t(x)^(1 - w) (Ho & Salimans 2022, eq. 6).

    Args:
        model: the conditional model; its ``model_kwargs`` are the conditional inputs.
        guidance_scale: w, a real number (1: the conditional model, 0: the unconditional one;
            diffusers' text-to-image pipelines default to 7.5).
        uncond_kwargs: the unconditional inputs, a non-empty dict laid over the conditional ones,
            e.g. ``{"class_labels": null_class}`` or ``{"encoder_hidden_states": empty_prompt}``.
            Each input is either a per-sample tensor in both halves (leading size B or 1, the same
            trailing shape) or the same value in both (one call cannot take two).

    The concatenated inputs are built at the first evaluation for a batch size and reused (bound
    inputs are not re-read: bind new ones with :meth:`with_kwargs`). ``nfe`` counts one per view.

    Reference: Ho & Salimans, "Classifier-Free Diffusion Guidance" (2022), eq. 6.
    """

    def __init__(self, model: ScoreModel, guidance_scale: float, uncond_kwargs: Mapping[str, Any]):
        if not isinstance(model, ScoreModel):
            raise TypeError(f"model must be a ScoreModel, got {describe(model)} ({type(model).__name__})")
        if isinstance(model, GuidedModel):
            raise ValueError("model is already a GuidedModel: guide the conditional ScoreModel once")
        super().__init__(model.net, model.sde, model.prediction, model.time_input, model.time_dtype, model.model_kwargs)
        self._counter = model._counter
        self.guidance_scale = check_real(guidance_scale, "guidance_scale")
        self._uncond_kwargs = _check_model_kwargs(uncond_kwargs, "uncond_kwargs")
        if not self._uncond_kwargs:
            raise ValueError(
                "uncond_kwargs must be a non-empty dict of the network's unconditional inputs "
                f"(e.g. {{'class_labels': null_class}}), got {describe(uncond_kwargs)}"
            )
        self._paired: tuple[int, dict[str, Any]] | None = None

    @property
    def uncond_kwargs(self) -> Mapping[str, Any]:
        """The unconditional inputs laid over the conditional ones, read-only."""
        return MappingProxyType(self._uncond_kwargs)

    def select(self, index: int | slice | Sequence[int] | Tensor) -> GuidedModel:
        """As :meth:`ScoreModel.select`, for the conditional and the unconditional inputs."""
        index = _check_index(index)
        return self._replace(
            _model_kwargs=_select_tree(self._model_kwargs, index),
            _uncond_kwargs=_select_tree(self._uncond_kwargs, index),
        )

    def _replace(self, **attrs: Any) -> GuidedModel:
        new = super()._replace(**attrs)
        assert isinstance(new, GuidedModel)
        new._paired = None
        return new

    def _paired_kwargs(self, batch: int) -> dict[str, Any]:
        """The inputs of the 2B call (unconditional rows, then conditional), built once per batch size."""
        paired = self._paired
        if paired is None or paired[0] != batch:
            paired = (batch, _pair_tree(self._uncond_kwargs, self._model_kwargs, batch, ""))
            self._paired = paired
        return paired[1]

    def _evaluate(self, x: Tensor, t_in: Tensor) -> Tensor:
        """One network call on the 2B batch, counted once; the guided output of shape x.shape."""
        B = x.shape[0]
        t2 = torch.cat([t_in, t_in]) if t_in.dim() else t_in
        out = unwrap_output(self.net(torch.cat([x, x]), t2, **self._paired_kwargs(B)), self.net)
        self._counter.add(1)
        if out.shape[:1] != (2 * B,):
            raise ValueError(
                f"the network returned shape {tuple(out.shape)} for the guided batch of 2B = {2 * B} samples "
                f"(unconditional, then conditional), expected {(2 * B,) + tuple(x.shape[1:])}"
            )
        uncond, cond = out.chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, guidance_scale={self.guidance_scale:g}, uncond_kwargs={sorted(self.uncond_kwargs)}"


# ------------------------------------------------------------------ network outputs and extra inputs
def unwrap_output(out: Any, net: Any = None) -> Tensor:
    """The tensor in a network's output.

    Accepted: a tensor; an object with a tensor ``.sample`` (diffusers' ``UNet2DOutput`` and every
    ``BaseOutput`` of a denoiser); a dict with a tensor under ``"sample"`` or with a single tensor
    value; a tuple or list whose first element is a tensor (``return_dict=False``, namedtuples).
    Anything else raises TypeError naming the network (``net``) and the type it returned.
    """
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        if isinstance(out.get("sample"), Tensor):
            return out["sample"]
        if len(out) == 1 and isinstance(next(iter(out.values())), Tensor):
            return next(iter(out.values()))
    elif isinstance(getattr(out, "sample", None), Tensor):
        return out.sample
    elif isinstance(out, (tuple, list)) and len(out) > 0 and isinstance(out[0], Tensor):
        return out[0]
    got = type(out).__name__
    if isinstance(out, Mapping):
        got += f" with keys {list(out)[:8]}"
    elif isinstance(out, (tuple, list)):
        got += f" of {len(out)} elements" + (f", the first a {type(out[0]).__name__}" if len(out) else "")
    raise TypeError(
        f"the network {_net_name(net)} must return a tensor or an output holding one (an object with a "
        f"tensor .sample such as diffusers' UNet2DOutput, a tuple or list whose first element is a tensor, "
        f"a dict with a 'sample' key or a single tensor value), got {got}"
    )


def bind_kwargs(model: ScoreModel, model_kwargs: Mapping[str, Any] | None) -> ScoreModel:
    """``model`` with ``model_kwargs`` bound (:meth:`ScoreModel.with_kwargs`); None or {}: ``model`` itself.

    The one place the ``model_kwargs=`` argument of :func:`~sdesolve.sample`,
    :func:`~sdesolve.log_likelihood` and :class:`~sdesolve.GraphSampler` is applied.
    """
    kwargs = _check_model_kwargs(model_kwargs, "model_kwargs")
    return model.with_kwargs(**kwargs) if kwargs else model


class _Counter:
    """Network evaluations, counted under a lock; shared by a model and its bound copies.

    Inside code traced by ``torch.compile`` no lock can be entered and a Python int would be a
    constant of the graph (one recompilation per value): there the count goes to a 0-d CPU tensor
    the graph adds to in place (``traced``), folded into ``n`` when read (no device is involved).
    """

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()
        self.traced = torch.zeros((), dtype=torch.int64)

    @property
    def n(self) -> int:
        return self._n + int(self.traced)

    def add(self, k: int) -> None:
        if torch.compiler.is_compiling():
            self.traced.add_(k)
            return
        with self._lock:
            self._n += k

    def set(self, n: int) -> None:
        with self._lock:
            self._n = n - int(self.traced)  # no in-place op (it may run inside a torch.func transform)

    # A lock cannot be pickled or deep-copied (copy.deepcopy(model) for an EMA copy): rebuild it.
    def __getstate__(self) -> dict:
        return {"n": self.n}

    def __setstate__(self, state: dict) -> None:
        self._n = state["n"]
        self._lock = threading.Lock()
        self.traced = torch.zeros((), dtype=torch.int64)


def _net_name(net: Any) -> str:
    if net is None:
        return "(network)"
    if isinstance(net, nn.Module):
        return type(net).__name__
    return str(getattr(net, "__name__", None) or type(net).__name__)


def _check_model_kwargs(value: Any, name: str) -> dict[str, Any]:
    """A dict of the network's keyword inputs (str keys), or None (no inputs); a new dict."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a dict of the network's keyword inputs (str keys) or None, got {describe(value)} "
            f"({type(value).__name__})"
        )
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str (the network's keyword names), got {key!r}")
    return dict(value)


def _is_per_sample(value: Any) -> bool:
    return isinstance(value, Tensor) and value.dim() >= 1


def _check_rows(tree: Mapping[str, Any], batch: int, name: str) -> None:
    """Every per-sample tensor of ``tree`` (nested dicts included) has ``batch`` rows or 1."""
    for key, value in tree.items():
        where = f"{name}[{key!r}]"
        if isinstance(value, Mapping):
            _check_rows(value, batch, where)
        elif _is_per_sample(value) and value.shape[0] not in (batch, 1):
            raise ValueError(
                f"{where} has {value.shape[0]} rows (its leading dimension) but x has batch size {batch}: a "
                f"per-sample input needs one row per sample, or 1 row shared by every sample"
            )


def _check_index(index: Any) -> slice | Tensor:
    """A batch index as a slice or a 1-d integer/boolean tensor (an int i becomes i:i+1, keeping the batch dim)."""
    if isinstance(index, slice):
        return index
    if isinstance(index, (list, tuple, range)):
        index = torch.as_tensor([check_int(i, "index[k]") for i in index], dtype=torch.long)
    if isinstance(index, Tensor):
        if index.dtype.is_floating_point or index.is_complex() or index.dim() > 1:
            raise TypeError(
                f"index must be an int, a slice, a list of ints or a 1-d integer or boolean tensor, got "
                f"{describe(index)}"
            )
        if index.dim() == 1:
            return index
    i = check_int(index, "index")  # a Python/numpy int or a 0-d integer tensor
    return slice(i, i + 1 if i != -1 else None)


def _select_tree(tree: Mapping[str, Any], index: slice | Tensor) -> dict[str, Any]:
    """``tree`` with every per-sample tensor of more than one row indexed by ``index`` along its rows."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out[key] = _select_tree(value, index)
        elif _is_per_sample(value) and value.shape[0] != 1:
            out[key] = value[index.to(value.device) if isinstance(index, Tensor) else index]
        else:
            out[key] = value
    return out


def _same(u: Any, c: Any) -> bool:
    if u is c:
        return True
    if isinstance(u, Tensor) or isinstance(c, Tensor):
        return False  # comparing tensor values would read them (a synchronization): only the same object
    try:
        return bool(u == c)
    except Exception:
        return False


def _pair_tree(uncond: Mapping[str, Any], cond: Mapping[str, Any], batch: int, path: str) -> dict[str, Any]:
    """The inputs of a guided call of 2B samples: per-sample tensors as cat([uncond, cond]) (each
    expanded from 1 row to B), other values the same in both halves. Errors name the input."""
    extra = [k for k in uncond if k not in cond]
    if extra:
        raise ValueError(
            f"uncond_kwargs{path}[{extra[0]!r}] has no conditional counterpart in model_kwargs{path}: one batched "
            f"network call needs every input in both halves; bind the conditional one (model_kwargs=, with_kwargs)"
        )
    out: dict[str, Any] = {}
    for key, c in cond.items():
        u = uncond.get(key, c)
        where = f"{path}[{key!r}]"
        if isinstance(u, Mapping) and isinstance(c, Mapping):
            out[key] = _pair_tree(u, c, batch, where)
        elif _is_per_sample(u) and _is_per_sample(c):
            for name, v in (("uncond_kwargs", u), ("model_kwargs", c)):
                _check_rows({key: v}, batch, name + path)
            if u.shape[1:] != c.shape[1:]:
                raise ValueError(
                    f"uncond_kwargs{where} has per-sample shape {tuple(u.shape[1:])} but model_kwargs{where} has "
                    f"{tuple(c.shape[1:])}: the two halves of one batched call need the same shape"
                )
            out[key] = torch.cat([u.expand((batch,) + u.shape[1:]), c.expand((batch,) + c.shape[1:])])
        elif _same(u, c):
            out[key] = c
        else:
            raise ValueError(
                f"uncond_kwargs{where} ({describe(u)}) and model_kwargs{where} ({describe(c)}) differ but are not "
                f"both per-sample tensors: one batched network call takes one value for both halves"
            )
    return out


def _check_sde(sde: Any) -> LinearSDE:
    if not all(callable(getattr(sde, hook, None)) for hook in ("_log_alpha", "_log_sigma", "network_time")) or not (
        hasattr(sde, "T")
    ):
        raise TypeError(
            f"sde must be a linear forward process (a sdesolve LinearSDE such as VPSDE()), got {describe(sde)} "
            f"({type(sde).__name__})"
        )
    return sde


def _check_time_dtype(time_dtype: Any) -> torch.dtype | None:
    if time_dtype is None:
        return None
    if not isinstance(time_dtype, torch.dtype):
        raise TypeError(f"time_dtype must be a torch.dtype (e.g. torch.float32) or None, got {describe(time_dtype)}")
    if not time_dtype.is_floating_point:
        raise ValueError(f"time_dtype must be a floating dtype (e.g. torch.float32), got {time_dtype}")
    return time_dtype


def _check_coefs(coefs: Any) -> None:
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


def view_at(model: object, x: Tensor, t: Tensor, view: str, coefs: tuple[Tensor, Tensor]) -> Tensor:
    """``model``'s ``view`` at (x, t) with precomputed ``coefs = (alpha, sigma)``: the one way solvers call a model.

    ``t`` is the solver's time (a 0-d float64 tensor on x's device, taken as it is: no checks, no
    synchronization) and ``coefs`` the process' ``alpha(t)``, ``sigma(t)`` as 0-d tensors in x's
    dtype, from the keys ``"alpha"``, ``"sigma"`` of :func:`view_coefficients` precomputed per grid:
    converting the network's output to ``view`` then evaluates nothing of the process on the device.
    A :class:`ScoreModel` gets the coefficients; any other object with the view as a method (e.g. a
    wrapper returning a known score) is called as ``getattr(model, view)(x, t)``.
    """
    if isinstance(model, ScoreModel):
        t_in = model._table_row(x, t)
        if t_in is not None:  # the network time input precomputed per grid (with_time_tables)
            return model._predict_in(x, t_in, view, coefs)
        return model._predict(x, model._solver_time(x, t), view, coefs)
    return getattr(model, view)(x, t)


def with_time_tables(model: _M, times: Iterable[Tensor], x: Tensor) -> _M:
    """``model`` with the network's time input precomputed at every time of ``times`` for states like ``x``.

    ``times`` are a solver's per-grid time vectors (the float64 ``"t..."`` keys of its coefficients on
    x's device, each a tensor of its own: no view). The returned copy of a :class:`ScoreModel` (same
    network, same count) holds, for each vector of n times, the (n, B, ...) table of
    ``time_input(clamp(t, 0, T))`` in :meth:`ScoreModel.network_time_dtype`, computed in one call per
    vector; :func:`view_at` then hands the network row k of the table when a solver passes element k
    of that vector (a 0-d view of it), with no time arithmetic on the device per call. The rows are
    those the per-call path computes (``time_input`` acts on each sample's time alone, as the networks'
    time embeddings do). Any other model, or a time input that does not return one row per time, is
    left to the per-call path. Under ``torch.compile`` the per-call path is traced instead.
    """
    if not isinstance(model, ScoreModel) or torch.compiler.is_compiling():
        return model
    tables: dict[int, _TimeTable] = {}
    B = x.shape[0]
    for t in times:
        if id(t) in tables or t._base is not None or not t.is_contiguous() or t.numel() == 0:
            continue
        if t.dtype != torch.float64 or t.device != x.device:
            continue
        flat = t.reshape(-1, 1).expand(-1, B).reshape(-1).clamp(0.0, float(model.sde.T))
        try:
            t_in = model._time_in(flat, x)
        except Exception:  # noqa: BLE001 - the per-call path raises the error where it belongs
            continue
        if t_in.dim() == 0 or t_in.shape[0] != flat.shape[0]:
            continue
        rows = t_in.reshape((t.numel(), B) + tuple(t_in.shape[1:])).unbind(0)  # row k: time k, (B, ...)
        tables[id(t)] = (t, B, rows)
    return model._replace(_time_tables=tables) if tables else model  # type: ignore[return-value]  # a ScoreModel's copy


def view_coefficients(sde: LinearSDE, t: Tensor) -> dict[str, Tensor]:
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


def predicts_eps(model: object) -> bool:
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
