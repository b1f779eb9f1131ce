r"""Predictor–corrector samplers (Song et al. 2021, Algorithms 1–3).

Each grid step ``t_i -> t_{i+1}`` (``t_{i+1} < t_i``) runs the **corrector first, then the
predictor**, as ``score_sde``'s ``pc_sampler`` does::

    for i in range(N):
        x = corrector(x, t_i)          # n_steps Langevin steps at the noise level of t_i
        x = predictor(x, t_i -> t_{i+1})

With ``denoise=True`` the last predictor step returns its mean (no noise), as Song et al. do.

Notation: ``alpha_i = alpha(t_i)``, ``sigma_i = sigma(t_i)``, ``a_i = alpha_i / alpha_{i+1}`` and
``G_i^2 = sigma_i^2 - a_i^2 sigma_{i+1}^2``: the exact forward transition
``x_{t_i} | x_{t_{i+1}} ~ N(a_i x_{t_{i+1}}, G_i^2 I)``, asked of the process
(``sde._transition``). For the discrete DDPM chain ``a_i = sqrt(1 - beta_i)``, ``G_i^2 = beta_i``;
for VE ``a_i = 1``, ``G_i^2 = sigma_i^2 - sigma_{i+1}^2``.

**Where the predictor evaluates the score.** ``discretization="midpoint"`` evaluates it at the
interval's midpoint ``t_m = (t_i + t_{i+1}) / 2``; ``discretization="song"`` at its start ``t_i``,
with Song et al.'s formulas exactly (the sampler of sdesolve <= 0.1); Euler–Maruyama also offers
``"sliding"``, the evaluation points of score_sde's sampler, and ``"score_sde"``, its whole
discretization (those points and its step lengths, to reproduce it). Each predictor defaults to the most
accurate choice, measured exactly on a panel of Gaussian targets (variances 0.01 to 4) against
score_sde's own chain at equal network calls (``benchmarks/langevin_law.py``, ``notes/langevin.md``):
reverse diffusion (the sampler's default predictor) the midpoint, ancestral sampling the midpoint on
variance-preserving processes and the start on variance-exploding ones, Euler–Maruyama the start on
variance-exploding processes and score_sde's points (``"sliding"``) elsewhere. Every formula below is first order; on
Gaussian targets the midpoint reverse diffusion cancels the leading O(h) bias (worst error at N = 100
steps 1.3 % on VP, 0.45 % on sub-VP, 0.13 % on VE against score_sde's 4.0 %, 2.7 % and 9.1 %; with the
start point 30 %, 18 % and 9.1 %).

Predictors (``probability_flow=True`` replaces the reverse SDE by the probability-flow ODE: half
the score term, no noise):

* :class:`ReverseDiffusionPredictor` (Song et al. eq. 45–47). ``"song"``:
  ``x' = (2 - a_i) x + w G_i^2 s(x, t_i) + G_i z``, the reverse of the forward discretization
  ``x_i = a_i x_{i+1} + G_i z``. ``"midpoint"``: the same recipe in the coordinates
  ``y = x / alpha``, ``u = sigma^2 / alpha^2`` in which every linear forward process is a Brownian
  motion (drift 0, ``G^2 = u_i - u_{i+1}`` exactly), with the score at ``t_m``; back in x:
  ``x' = x / a_i + w (G_i^2 / a_i^2) (alpha_m / alpha_{i+1}) s(r_i x, t_m) + (G_i / a_i) z``,
  ``r_i = alpha_m / alpha_i`` (the state at t_i rescaled to the mean scale of t_m). For VE
  (alpha = 1) both are Song's reverse diffusion; they differ in where the score is taken.
* :class:`AncestralPredictor` (Song et al. appendix F; Ho et al. 2020; Song & Ermon 2019):
  variance-preserving processes: ``x' = (x + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z`` with
  ``beta_i = G_i^2 = 1 - a_i^2``; variance-exploding (``alpha = 1``):
  ``x' = x + G_i^2 s + sqrt(sigma_{i+1}^2 (1 - SNR_i / SNR_{i+1})) z``; ``s = s(x, t_i)`` (``"song"``)
  or ``s(x, t_m)`` (``"midpoint"``).
* :class:`EulerMaruyamaPredictor`: ``x' = x + (f x - w g^2 s) h + g sqrt(-h) z`` (``h < 0``), with
  ``f``, ``g^2`` and ``s`` at ``t_i`` (``"song"``: Euler–Maruyama), at ``t_m``, or at
  ``t_i + (i / (N - 1)) h`` (``"sliding"``; ``"score_sde"`` also takes score_sde's step lengths); the
  default ``"auto"``: ``"song"`` on VE, else ``"sliding"``.

Correctors (``n_steps`` Langevin steps ``x <- x + eps s + sqrt(2 eps) z``, one score each, at t_i):

* :class:`LangevinCorrector` (Algorithms 2–3) with a choice of step rule, ``k_i = 2 a_i^2 snr^2``
  (``a_i^2`` is score_sde's ``alphas[i] = 1 - beta_i``; 1 for VE), Metropolis-adjusted by default:

  - ``metropolis=True`` (the default, with the sigma rule): each step is a proposal
    ``x' = x + eps s + sqrt(2 eps) z`` accepted with probability ``min(1, r)``, where the
    log-density difference comes from the scores at both ends by the trapezoid rule,
    ``log p(x') - log p(x) ~ (s + s') . (x' - x) / 2`` (exact when log p_t is quadratic: Gaussian
    data under any linear process; O(|x' - x|^3) otherwise). With the Gaussian proposal densities
    the Metropolis–Hastings ratio reduces exactly to ``log r = eps (|s|^2 - |s'|^2) / 4``. The test
    is per sample (a mask: no coupling, no host sync); the uniform comes from the sample's own noise
    draw. Cost: ``n_steps + 1`` scores (the first at the current state). The score at the accepted
    state is handed to a predictor that evaluates at ``(x, t_i)`` (``discretization="song"``; the
    Euler–Maruyama and ancestral defaults on VE), which then makes no call of its own: the sampler costs
    what it costs with ULA. The midpoint predictor (the default) evaluates elsewhere: one call more
    per step. Removes ULA's O(eps) bias (0.3-0.5 % of the variance at any N, measured in
    ``notes/langevin.md``); the acceptance rate is recorded per step (``state["acceptance"]``).
  - ``metropolis=False``: the unadjusted Langevin step (ULA, Song et al.).
  - ``step_rule="sigma"`` (the default): ``eps_i = k_i sigma_i^2``, a step that depends on t only.
    ``sigma_i^2 = E||z||^2 / E||s||^2`` under the noise-dominated law ``N(alpha_i x_0, sigma_i^2 I)``,
    so this is the paper's signal-to-noise rule with the norms replaced by their expectations.
  - ``step_rule="batch"``: score_sde's ``eps = k_i (mean_b ||z_b|| / mean_b ||s_b||)^2``, the norms
    averaged over the batch (couples the samples of a batch; for reproducing the paper).
  - ``step_rule="sample"``: ``eps_b = k_i (||z_b|| / ||s_b||)^2`` per sample (sdesolve <= 0.1).

  A step that depends on the sample's own state makes the chain target a different law (there
  is no Metropolis correction): the per-sample rule inflates the variance by 146 % at D = 4 and
  9 % at D = 64 (measured in ``notes/langevin.md``); the default rule's law is that of the
  annealed step below, exact for Gaussian targets (an affine chain) and within sampling error at
  every dimension measured. No rule divides by zero: a zero score gives a zero step.
* :class:`AnnealedLangevinCorrector` (Song & Ermon 2019; score_sde's ``AnnealedLangevinDynamics``):
  ``eps_i = k_i sigma_i^2``, the same step as the default rule without the Metropolis test:
  ``LangevinCorrector(snr, n_steps, metropolis=False)`` under its published name.

In float16 and bfloat16 the predictors and the corrector compute their updates in float32 (from
float64 coefficients: ``G_i^2`` reaches ``sigma_max^2 / N``, 3.8e5 on VE with sigma_max = 1348 at
N = 100, past float16's 65504) and cast the result back;
a state that still leaves the dtype's range raises :class:`~sdesolve.solvers.NonFiniteError`
naming the step, the corrector and the dtype (not the model).

References: Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-Based Generative Modeling
through Stochastic Differential Equations", ICLR 2021, Algorithms 1–3 and appendices E–G.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._utils import bcast
from .._validate import check_bool, check_choice, check_int, check_real
from ..model import ScoreModel, _check_sde, convert, predicts_eps, view_at, view_coefficients
from .base import GeneratorLike, NonFiniteError, Solver, randn_like

if TYPE_CHECKING:
    from ..sde.base import LinearSDE

__all__ = [
    "PredictorCorrector",
    "Predictor",
    "Corrector",
    "EulerMaruyamaPredictor",
    "ReverseDiffusionPredictor",
    "AncestralPredictor",
    "LangevinCorrector",
    "AnnealedLangevinCorrector",
]

DISCRETIZATIONS = ("midpoint", "song")
ANCESTRAL_DISCRETIZATIONS = ("auto", "midpoint", "song")
EM_DISCRETIZATIONS = ("auto", "midpoint", "song", "sliding", "score_sde")
STEP_RULES = ("sigma", "batch", "sample")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- shared helpers
def _eval_times(grid: Tensor, discretization: str) -> Tensor:
    """Where a predictor evaluates the score on each interval ``[t_{i+1}, t_i]``.

    ``"song"``: its start ``t_i``; ``"midpoint"``: ``(t_i + t_{i+1}) / 2``; ``"sliding"`` and
    ``"score_sde"``: ``t_i + theta_i (t_{i+1} - t_i)`` with ``theta_i = i / (N - 1)``, a point that moves
    from the start of the first interval to the end of the last. On a uniform grid these are the N points
    ``linspace(t_0, t_N, N)``: score_sde's ``pc_sampler`` evaluates at ``linspace(T, eps, N)`` while
    its states are ``T / N`` apart (``sampling.py``).
    """
    t, t_next = grid[:-1], grid[1:]
    if discretization == "song":
        return t.clone()
    if discretization in ("sliding", "score_sde"):
        n = t.numel()
        theta = torch.arange(n, dtype=grid.dtype) / max(n - 1, 1)
        return t + theta * (t_next - t)
    return 0.5 * (t + t_next)


def _view_coefs(sde: LinearSDE, t: Tensor, prefix: str) -> dict[str, Tensor]:
    """``alpha(t)``, ``sigma(t)`` for the model (``coefs=``, from :func:`~sdesolve.model.view_coefficients`)
    and the time itself (float64 key ``t...``)."""
    vc = view_coefficients(sde, t)
    return {f"t{prefix}eval": t.clone(), f"{prefix}alpha": vc["alpha"], f"{prefix}sigma": vc["sigma"]}


def _transition(sde: LinearSDE, grid: Tensor) -> tuple[Tensor, Tensor]:
    """``(a_i, G_i^2)`` of every interval: ``x_{t_i} | x_{t_{i+1}} ~ N(a_i x, G_i^2 I)`` (float64)."""
    log_a, G2 = sde._transition(grid[:-1], grid[1:])
    return torch.exp(log_a), G2


# --------------------------------------------------------------------------- predictors
class Predictor:
    """Base class of the predictors: one step of the reverse dynamics from ``t_i`` to ``t_{i+1}``.

    Subclass it and implement :meth:`init` and :meth:`__call__` (and :meth:`check` if the predictor
    applies only to some processes). The sampler calls ``init`` once per grid and ``__call__`` once
    per step, after the corrector.

    Attributes:
        probability_flow: True if the predictor discretizes the probability-flow ODE (deterministic).
    """

    probability_flow: bool = False

    def __init__(self, probability_flow: bool = False):
        self.probability_flow = check_bool(probability_flow, "probability_flow")

    def check(self, sde: LinearSDE) -> None:
        """Raise ValueError if the predictor does not apply to ``sde``."""

    def takes_score(self, sde: LinearSDE) -> bool:
        """True if the predictor evaluates the score at its own state and ``t_i`` on ``sde``.

        The sampler then hands it the corrector's score at the corrected state
        (``__call__(..., score=s)``) instead of letting it evaluate the network again. The base
        class says False (a subclass is then called without ``score``).
        """
        return False

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        """The per-step coefficients, computed once per grid.

        Args:
            sde: the forward process.
            grid: the float64 CPU grid ``(t_0 = T, ..., t_N)``, decreasing.

        Returns:
            a dict of float64 CPU tensors with N entries along their first dimension. Names start
            with ``"p_"``; times (kept in float64 on the device) start with ``"tp_"``. The sampler
            moves them to the sample's device (the others to its dtype) and hands them to
            :meth:`__call__` as ``c``, together with its own ``c["t"]`` (``t_i``), ``c["alpha"]``,
            ``c["sigma"]`` (``alpha(t_i)``, ``sigma(t_i)``) and the corrector's keys.
        """
        raise NotImplementedError

    def __call__(
        self,
        model: ScoreModel,
        x: Tensor,
        i: int,
        c: dict,
        *,
        generator: GeneratorLike = None,
        noise: bool = True,
        need_x0: bool = False,
        score: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """One step from ``t_i`` to ``t_{i+1}``.

        Args:
            model: the score model; evaluate it with ``view_at(model, x, t, "score", (alpha, sigma))``
                (``t`` a 0-d float64 device tensor, ``alpha``, ``sigma`` from ``c``).
            x: the state at ``t_i`` (after the corrector), shape (B, *event).
            i: the step index into the coefficients.
            c: the coefficient dict (see :meth:`init`).
            generator: pass it to :func:`~sdesolve.solvers.base.randn_like` for every draw.
            noise: False on the last step with ``denoise=True``: return the step's mean.
            need_x0: a callback wants the model's x0 estimate at the point the score was taken.
            score: the score at ``(x, t_i)`` already computed by the corrector, passed only when
                :meth:`takes_score` is True: use it instead of evaluating the model.

        Returns:
            ``(x_next, x0)``: the state at ``t_{i+1}``, and the denoised estimate ``model.x0`` at the
            (state, time) where this step evaluated the model, or None when ``need_x0`` is False.
            No host-device synchronization.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(probability_flow={self.probability_flow})"


class _GridPredictor(Predictor):
    """The built-in predictors: ``x' = mul x + score s(scale x, t_eval) [+ noise z]``, all precomputed."""

    def __init__(self, probability_flow: bool = False, discretization: str = "midpoint"):
        super().__init__(probability_flow)
        self.discretization = check_choice(discretization, "discretization", DISCRETIZATIONS)

    def _coefficients(self, sde: LinearSDE, grid: Tensor, t_eval: Tensor) -> dict[str, Tensor]:
        """``mul``, ``score``, ``noise`` (and optionally ``scale``) of each step."""
        raise NotImplementedError

    def _discretization_for(self, sde: LinearSDE) -> str:
        """The discretization used on ``sde`` ("midpoint" or "song")."""
        return self.discretization

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        self.check(sde)
        t_eval = _eval_times(grid, self._discretization_for(sde))
        c = self._coefficients(sde, grid, t_eval)
        out = {"p_" + k: v for k, v in c.items()}
        out.update(_view_coefs(sde, t_eval, "p_"))
        # x0 = (y + sigma_e^2 s(y, t_e)) / alpha_e at the evaluation point y = scale x
        alpha_e, sigma_e = out["p_alpha"], out["p_sigma"]
        out["p_x0_x"] = c.get("scale", torch.ones_like(alpha_e)) / alpha_e
        out["p_x0_score"] = sigma_e * sigma_e / alpha_e
        # the same step on an eps network's own output (s = -eps / sigma_e folded in; float32 / float64 states)
        out["p_score_eps"] = -out["p_score"] / sigma_e
        out["p_x0_eps"] = -sigma_e / alpha_e
        # float64 copies (keys "tp_...", which stay float64 on the device) for float16 / bfloat16 states: G^2
        # reaches sigma_max^2 / N (VE with sigma_max = 1348: 3.8e5 at N = 100), past float16's 65504
        for k in ("mul", "score", "noise", "scale", "x0_x", "x0_score"):
            if "p_" + k in out:
                out["tp_" + k] = out["p_" + k].clone()
        return out

    def takes_score(self, sde: LinearSDE) -> bool:
        return self._discretization_for(sde) == "song"  # the score at (x, t_i), no rescaling

    def __call__(
        self,
        model: ScoreModel,
        x: Tensor,
        i: int,
        c: dict,
        *,
        generator: GeneratorLike = None,
        noise: bool = True,
        need_x0: bool = False,
        score: Tensor | None = None,
        eps: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """As :meth:`Predictor.__call__`; ``eps``: an eps network's output at ``(x, t_i)`` (the corrector's,
        float32 / float64 states), taken instead of ``score``."""
        # float16 / bfloat16: the arithmetic in float32 from the float64 coefficients ("tp_" keys), cast back at
        # the end (the model sees x's dtype); otherwise in x's dtype from the "p_" keys (cast once per grid).
        # An eps network's output enters through coefficients with s = -eps / sigma folded in (float32 / float64)
        low = x.dtype in _LOW_PRECISION
        if low:
            k = lambda name: c["tp_" + name][i].float()  # noqa: E731
            xf = x.float()
        else:
            k = lambda name: c["p_" + name][i]  # noqa: E731
            xf = x
        fold = eps is not None or (score is None and not low and predicts_eps(model) and "p_score_eps" in c)
        y = (k("scale") * xf).to(x.dtype) if "p_scale" in c else x
        net = eps if eps is not None else score
        if net is None:
            t, at = c["tp_eval"][i], (c["p_alpha"][i], c["p_sigma"][i])
            net = view_at(model, y, t, "eps" if fold else "score", at)
        sf = net.float() if low else net
        w_score, w_x0 = ("score_eps", "x0_eps") if fold else ("score", "x0_score")
        if low:
            x_next = k("mul") * xf + k(w_score) * sf
        else:
            x_next = torch.addcmul(k("mul") * xf, k(w_score), sf)
        if noise and not self.probability_flow:
            z = randn_like(x, generator)
            x_next = x_next + k("noise") * z.float() if low else torch.addcmul(x_next, k("noise"), z)
        x0 = None
        if need_x0:
            x0 = (k("x0_x") * xf + k(w_x0) * sf if low else torch.addcmul(k("x0_x") * xf, k(w_x0), sf)).to(x.dtype)
        return x_next.to(x.dtype), x0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(probability_flow={self.probability_flow}, discretization={self.discretization!r})"
        )


class EulerMaruyamaPredictor(_GridPredictor):
    """``x' = x + (f x - w g^2 s) h + g sqrt(-h) z`` with ``h = t_{i+1} - t_i < 0``.

    ``w = 1`` (reverse SDE) or ``1/2`` with no noise (``probability_flow=True``). ``f``, ``g^2`` and
    the score are taken at one point of each interval, set by ``discretization``:

    * ``"song"``: the start ``t_i`` (Euler–Maruyama proper: the scheme of :class:`~sdesolve.EulerMaruyama`);
    * ``"midpoint"``: ``(t_i + t_{i+1}) / 2``;
    * ``"sliding"``: score_sde's evaluation points, ``t_i + (i / (N - 1)) (t_{i+1} - t_i)``:
      on a uniform grid the N points ``linspace(t_0, t_N, N)`` of score_sde's ``pc_sampler``
      (``sampling.py``; its state advances by ``T / N`` per step, so its score is taken up to one step
      later than the state's time, most at the end of the chain), with this grid's steps ``h``;
    * ``"score_sde"``: score_sde's discretization whole, to reproduce its sampler: the ``"sliding"``
      points and its step lengths, ``h t_0 / (t_0 - t_N)`` (they add up to ``t_0``: its ``dt = -1 / N``
      with T = 1, which integrates down to t = 0 while the score is taken down to ``t_N``). On
      ``grids.uniform`` of a process with ``t_min`` = score_sde's ``eps`` (1e-3 on VP and sub-VP, 1e-5 on
      VE in its ``run_lib.py``) the chain is score_sde's ``EulerMaruyamaPredictor``'s, step for step;
    * ``"auto"`` (the default): ``"song"`` on variance-exploding processes (alpha = 1), ``"sliding"``
      on every other.

    Every choice is first order; where the O(h) bias of the output law lands depends on the point and
    no data-free point cancels it (``notes/langevin.md``, section 2). The default is the most accurate
    choice overall, measured exactly on a panel of Gaussian targets (variances 0.01 to 4,
    ``notes/langevin.md``): worst error of the output law at N = 100 / 1000 steps 1.70 % / 0.42 % on VP
    (``"song"``: 10.6 % / 0.67 %; ``"score_sde"``: 1.68 % / 0.57 %), 2.70 % / 0.27 % on sub-VP
    (``"score_sde"``: 2.74 % / 0.32 %), 0.33 % / 0.011 % on VE (``"score_sde"``: 2.11 % / 1.09 %): ahead
    of score_sde's discretization in 5 of these 6 cells, behind by 0.02 points (1.2 % of the error) on
    VP at N = 100. Only ``"song"`` evaluates at ``(x, t_i)`` and so reuses a Metropolis-adjusted
    corrector's score (no call of its own); the others cost one call per step more behind that
    corrector. One score per step.
    """

    def __init__(self, probability_flow: bool = False, discretization: str = "auto"):
        Predictor.__init__(self, probability_flow)
        self.discretization = check_choice(discretization, "discretization", EM_DISCRETIZATIONS)

    def _discretization_for(self, sde: LinearSDE) -> str:
        if self.discretization == "auto":  # measured on the Gaussian panel, notes/langevin.md section 2
            return "song" if _process_kind(sde) == "ve" else "sliding"
        return self.discretization

    def _coefficients(self, sde: LinearSDE, grid: Tensor, t_eval: Tensor) -> dict[str, Tensor]:
        h = grid[1:] - grid[:-1]
        if self._discretization_for(sde) == "score_sde":  # score_sde's dt: the steps add up to t_0
            h = h * (grid[0] / (grid[0] - grid[-1]))
        f, g2 = sde._f(t_eval), torch.clamp(sde._g2(t_eval), min=0.0)
        w = 0.5 if self.probability_flow else 1.0
        return {"mul": 1.0 + f * h, "score": -w * g2 * h, "noise": torch.sqrt(g2 * (-h))}


class ReverseDiffusionPredictor(_GridPredictor):
    """Reverse diffusion (Song et al. 2021, eq. 45–47): reverse the forward step ``x_i = a_i x_{i+1} + G_i z``.

    * ``discretization="song"``: ``x' = (2 - a_i) x + w G_i^2 s(x, t_i) + G_i z``.
    * ``discretization="midpoint"`` (the default): the recipe applied where the forward process is a
      Brownian motion, ``y = x / alpha`` in ``u = sigma^2 / alpha^2`` (drift 0, variance ``u_i - u_{i+1}``),
      with the score at ``t_m = (t_i + t_{i+1}) / 2``:
      ``x' = x / a_i + w (G_i^2 / a_i^2) (alpha_m / alpha_{i+1}) s(r_i x, t_m) + (G_i / a_i) z`` with
      ``r_i = alpha_m / alpha_i``. For Gaussian targets the leading O(h) bias of the output law cancels.

    ``w = 1``, or ``1/2`` without noise for ``probability_flow=True``. One score per step.
    """

    def _coefficients(self, sde: LinearSDE, grid: Tensor, t_eval: Tensor) -> dict[str, Tensor]:
        a, G2 = _transition(sde, grid)
        w = 0.5 if self.probability_flow else 1.0
        if self.discretization == "song":
            return {"mul": 2.0 - a, "score": w * G2, "noise": torch.sqrt(G2)}
        la_i, la_n, la_m = sde._log_alpha(grid[:-1]), sde._log_alpha(grid[1:]), sde._log_alpha(t_eval)
        return {
            "mul": 1.0 / a,
            "score": w * G2 / (a * a) * torch.exp(la_m - la_n),
            "noise": torch.sqrt(G2) / a,
            "scale": torch.exp(la_m - la_i),
        }


def _process_kind(sde: LinearSDE) -> str | None:
    """``"vp"`` (alpha^2 + sigma^2 = 1), ``"ve"`` (alpha = 1) or None, checked numerically in float64."""
    t = torch.linspace(float(sde.t_min), float(sde.T), 65, dtype=torch.float64)
    la, ls = sde._log_alpha(t), sde._log_sigma(t)
    if bool((la.abs() < 1e-12).all()):
        return "ve"
    if getattr(sde, "variance_preserving", False) and bool(
        ((torch.exp(2 * la) + torch.exp(2 * ls) - 1.0).abs() < 1e-9).all()
    ):
        return "vp"
    return None


class AncestralPredictor(_GridPredictor):
    """Ancestral sampling (Song et al. 2021, appendix F; Ho et al. 2020; Song & Ermon 2019).

    * variance-preserving (alpha^2 + sigma^2 = 1: VP, cosine, VDM, discrete DDPM):
      ``x' = (x + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z``, ``beta_i = G_i^2 = 1 - a_i^2``
      (DDPM's ``beta_t`` on the discrete grid);
    * variance-exploding (alpha = 1): ``x' = x + (sigma_i^2 - sigma_{i+1}^2) s + std_i z`` with
      ``std_i^2 = sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2`` (SMLD's posterior).

    The score is taken at the interval's midpoint (``discretization="midpoint"``) or at ``t_i``
    (``"song"``, as DDPM, SMLD and score_sde); ``"auto"`` (the default) takes the midpoint on
    variance-preserving processes and the start on variance-exploding ones, the more accurate of the
    two on each (measured exactly on Gaussian targets in ``notes/langevin.md``: DDPM's noise ``beta_i``
    is the large choice, whose O(h) bias the midpoint cancels; SMLD's posterior noise is exact for a
    point mass with the score at ``t_i``). Other processes (sub-VP, user processes with
    neither property) raise a ValueError, as ``score_sde`` does. There is no probability-flow form.
    """

    def __init__(self, discretization: str = "auto"):
        Predictor.__init__(self, probability_flow=False)
        self.discretization = check_choice(discretization, "discretization", ANCESTRAL_DISCRETIZATIONS)

    def _discretization_for(self, sde: LinearSDE) -> str:
        if self.discretization == "auto":  # measured: DDPM's beta noise gains from the midpoint, SMLD's loses
            return "midpoint" if _process_kind(sde) == "vp" else "song"
        return self.discretization

    def check(self, sde: LinearSDE) -> None:
        if _process_kind(sde) is None:
            raise ValueError(
                f"AncestralPredictor applies to variance-preserving processes (alpha^2 + sigma^2 = 1) and "
                f"variance-exploding ones (alpha = 1); {type(sde).__name__} is neither. Use "
                f"ReverseDiffusionPredictor or EulerMaruyamaPredictor instead."
            )

    def _coefficients(self, sde: LinearSDE, grid: Tensor, t_eval: Tensor) -> dict[str, Tensor]:
        a, G2 = _transition(sde, grid)
        if _process_kind(sde) == "vp":  # beta_i = G_i^2 = 1 - a_i^2
            return {"mul": 1.0 / a, "score": G2 / a, "noise": torch.sqrt(G2)}
        # VE: std^2 = sigma_{i+1}^2 (1 - SNR_i / SNR_{i+1})
        var_next = torch.exp(2.0 * sde._log_sigma(grid[1:]))
        std2 = var_next * sde._one_minus_snr_ratio(grid[:-1], grid[1:])
        return {"mul": torch.ones_like(G2), "score": G2, "noise": torch.sqrt(std2)}

    def __repr__(self) -> str:
        return f"AncestralPredictor(discretization={self.discretization!r})"


# --------------------------------------------------------------------------- correctors
class Corrector:
    """Base class of the correctors: ``n_steps`` MCMC steps at the noise level of ``t_i``.

    Subclass it and implement :meth:`init` and :meth:`__call__`. ``n_steps`` is the number of score
    evaluations per grid step (the sampler's ``nfe_per_step`` is ``1 + n_steps``).

    Args:
        snr: the signal-to-noise ratio that sets the step size (positive; numpy scalars accepted).
        n_steps: Langevin steps per grid step (an int >= 1).
    """

    def __init__(self, snr: float, n_steps: int):
        self.snr = check_real(snr, "snr", positive=True)
        self.n_steps = check_int(n_steps, "n_steps", minimum=1)

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        """The per-step coefficients, computed once per grid.

        Args:
            sde, grid: as for :meth:`Predictor.init`.

        Returns:
            a dict of float64 CPU tensors of N entries, names starting with ``"c_"`` (times with
            ``"tc_"``); the sampler moves them to the device as it does the predictor's.
        """
        raise NotImplementedError

    def __call__(self, model: ScoreModel, x: Tensor, i: int, c: dict, *, generator: GeneratorLike = None) -> Tensor:
        """``n_steps`` steps at ``t_i`` from the state ``x``; returns the corrected state.

        Args:
            model, i, c, generator: as for :meth:`Predictor.__call__`; the time is ``c["t"][i]`` and
                the model's coefficients ``c["alpha"][i]``, ``c["sigma"][i]``.
            x: the state at ``t_i``, shape (B, *event).

        Returns:
            the state after the corrector, of x's shape and dtype. No host-device synchronization.
        """
        raise NotImplementedError

    #: network evaluations per grid step beyond ``n_steps`` (a Metropolis corrector's first score)
    extra_nfe: int = 0

    def correct(
        self, model: ScoreModel, x: Tensor, i: int, c: dict, *, generator: GeneratorLike = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """:meth:`__call__`, also returning what the sampler can reuse.

        Returns:
            ``(x, score, accepted)``: the corrected state; the score at ``(x, t_i)`` if the corrector
            computed it (a predictor evaluating there then reuses it), else None; the per-sample
            boolean acceptance of the last Metropolis test (shape (B,)), or None. The base class
            returns ``(self(...), None, None)``.
        """
        return self(model, x, i, c, generator=generator), None, None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(snr={self.snr:g}, n_steps={self.n_steps})"


def _langevin_update(x: Tensor, s: Tensor, z: Tensor, eps: Tensor, noise: Tensor) -> Tensor:
    """``x + eps s + noise z``, computed in float32 for float16/bfloat16 states (cast back at the end)."""
    if x.dtype in _LOW_PRECISION:
        return (x.float() + eps * s.float() + noise * z.float()).to(x.dtype)
    return torch.addcmul(torch.addcmul(x, eps, s), noise, z)


def _step_coefficients(sde: LinearSDE, grid: Tensor, snr: float) -> dict[str, Tensor]:
    """``k_i = 2 a_i^2 snr^2`` and the sigma rule's ``sqrt(eps_i) = sqrt(k_i) sigma_i`` (float64).

    ``sqrt(eps)`` rather than ``eps`` is stored: it stays inside the float16 range where eps does
    not (VE with sigma_max = 1348: eps = 9.3e4 > 65504); the step squares it in float32.
    """
    log_a, _ = sde._transition(grid[:-1], grid[1:])
    k = 2.0 * torch.exp(2.0 * log_a) * snr**2
    sigma = torch.exp(sde._log_sigma(grid[:-1]))
    # the sigma rule's step on an eps network's output (s = -eps / sigma folded in): x + (-k sigma) eps + ..., and
    # the Metropolis ratio's eps / 4 on |eps|^2 differences, eps / (4 sigma^2) = k / 4 (float32 / float64 states)
    return {"c_k": k, "c_sqrt_eps": torch.sqrt(k) * sigma, "c_eps_step": -k * sigma, "c_eps_ratio": 0.25 * k}


def _sigma_step(x: Tensor, sqrt_eps: Tensor) -> tuple[Tensor, Tensor]:
    """``(eps, sqrt(2 eps))`` of the sigma rule, in float32 for low-precision states (elementwise: of one
    step, or of every step at once)."""
    r = sqrt_eps.float() if x.dtype in _LOW_PRECISION else sqrt_eps
    return r * r, r * 2.0**0.5


def _sigma_steps_per_solve(x: Tensor, c: dict) -> dict[str, Tensor]:
    """The sigma rule's per-step ``eps``, ``sqrt(2 eps)`` and the Metropolis ratio's ``eps / 4`` of every step,
    for states like x, from the device coefficients ``c``: the same elementwise float operations the step
    would make on each ``c["c_sqrt_eps"][i]``, made once per solve (bitwise the same values; no device
    arithmetic on 0-d tensors per step). Keys ``"_lc_..."``, added by :meth:`PredictorCorrector.init_state`."""
    eps, noise = _sigma_step(x, c["c_sqrt_eps"])
    quarter = 0.25 * eps.to(torch.promote_types(x.dtype, torch.float32))
    return {"_lc_eps": eps, "_lc_noise": noise, "_lc_quarter_eps": quarter}


def _sigma_at(x: Tensor, c: dict, i: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(eps, sqrt(2 eps), eps / 4)`` of step i: precomputed per solve when present, else computed here."""
    eps = c.get("_lc_eps")
    if eps is not None:
        return eps[i], c["_lc_noise"][i], c["_lc_quarter_eps"][i]
    e, n = _sigma_step(x, c["c_sqrt_eps"][i])
    return e, n, 0.25 * e.to(torch.promote_types(x.dtype, torch.float32))


def _norm_step(x: Tensor, s: Tensor, z: Tensor, k: Tensor, rule: str) -> tuple[Tensor, Tensor]:
    """``(eps, sqrt(2 eps))`` of the norm rules, broadcast to x: ``k (|z| / |s|)^2`` per sample or with
    batch-mean norms (score_sde). Norms in at least float32; a zero score norm gives a zero step."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    zn = torch.linalg.vector_norm(z.reshape(z.shape[0], -1), dim=1, dtype=dtype)
    sn = torch.linalg.vector_norm(s.reshape(s.shape[0], -1), dim=1, dtype=dtype)
    if rule == "batch":
        zn, sn = zn.mean(), sn.mean()
    zero = sn == 0
    ratio = torch.where(zero, torch.zeros_like(zn), zn / torch.where(zero, torch.ones_like(sn), sn))
    eps = k.to(dtype) * ratio * ratio
    eps, noise = bcast(eps, x), bcast(torch.sqrt(2.0 * eps), x)
    if x.dtype not in _LOW_PRECISION:
        eps, noise = eps.to(x.dtype), noise.to(x.dtype)
    return eps, noise


def _log_uniform_like(x: Tensor, generator: GeneratorLike) -> Tensor:
    """``log u`` of one U(0, 1) draw per sample (shape (B,), float64 on x's device), through :func:`randn_like`.

    ``u = Phi(z)`` (``log u = log_ndtr(z)``, exact in the tails) for the first coordinate ``z`` of
    a standard normal draw of x's shape: the same
    draw discipline as every other noise draw of the sampler, so whatever ``randn_like`` supports
    holds for the uniform too (a ``torch.Generator``, None, a per-sample list of generators: sample
    b's uniform then comes from generator b; GraphSampler's in-graph counter noise).
    """
    z = randn_like(x, generator).reshape(x.shape[0], -1)[:, 0].to(torch.float64)
    return torch.special.log_ndtr(z)


def _mala_step(
    model: ScoreModel,
    x: Tensor,
    s: Tensor,
    t: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    steps: tuple[Tensor, Tensor, Tensor],
    generator: GeneratorLike,
    view: str = "score",
    need_score: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """One Metropolis-adjusted Langevin step at t: ``(x, s, accepted)`` after the accept/reject test.

    Proposal ``x' = x + eps s + sqrt(2 eps) z``; the log-density difference by the trapezoid rule
    ``log p(x') - log p(x) ~ (s + s') . (x' - x) / 2`` (exact for a quadratic log p). With the
    Gaussian proposal densities the Metropolis–Hastings log ratio then reduces, exactly, to
    ``log r = eps (|s|^2 - |s'|^2) / 4`` (summed per sample, in at least float32). Accept where
    ``log u < log r`` (a NaN ratio is accepted, so a NaN from the model is not hidden). ``steps``:
    ``(eps, sqrt(2 eps), eps / 4)`` of this step (:func:`_sigma_at`). ``view="eps"``: ``s`` is an eps network's
    output and ``steps`` are ``(-eps / sigma, sqrt(2 eps), eps / (4 sigma^2))`` (the same step, ``s = -eps / sigma``
    folded into the coefficients). ``need_score=False``: the score at the accepted state is not selected (None).
    """
    eps, noise, quarter_eps = steps
    x_new = _langevin_update(x, s, randn_like(x, generator), eps, noise)
    s_new = view_at(model, x_new, t, view, (alpha, sigma))
    dtype = torch.promote_types(x.dtype, torch.float32)
    diff = ((s.to(dtype) - s_new.to(dtype)) * (s.to(dtype) + s_new.to(dtype))).reshape(x.shape[0], -1).sum(1)
    log_r = quarter_eps * diff
    accept = ~(_log_uniform_like(x, generator) >= log_r)  # float64 log u against log r (exactly promoted)
    mask = accept.reshape((-1,) + (1,) * (x.dim() - 1))
    return torch.where(mask, x_new, x), torch.where(mask, s_new, s) if need_score else None, accept


class LangevinCorrector(Corrector):
    """Langevin corrector (Song et al. 2021, Algorithms 2–3).

    Each of ``n_steps`` steps draws ``z ~ N(0, I)``, evaluates ``s = s_theta(x, t_i)`` and sets
    ``x <- x + eps s + sqrt(2 eps) z``, with ``k_i = 2 a_i^2 snr^2`` and the step ``eps`` from
    ``step_rule``:

    * ``"sigma"`` (the default): ``eps_i = k_i sigma_i^2``, a function of t alone: the expected
      ``||z||^2 / ||s||^2`` under the noise-dominated law. Samples stay independent and the chain's
      law is right (exact for Gaussian targets, and measured at D = 2 ... 3072 in ``notes/langevin.md``).
    * ``"batch"``: ``eps = k_i (mean_b ||z_b|| / mean_b ||s_b||)^2``, score_sde's rule (the batch means
      couple the samples: a sample's result depends on the others). For reproducing the paper.
    * ``"sample"``: ``eps_b = k_i (||z_b|| / ||s_b||)^2`` per sample (sdesolve <= 0.1). Its step
      depends on the sample's own state, so the chain targets the wrong law below a few thousand
      dimensions (variance +146 % at D = 4, +9 % at D = 64).

    A zero score (e.g. an untrained network) gives a zero step under the norm rules, never 0/0.

    ``metropolis`` (default: True with the sigma rule, False with the norm rules, which it does not
    support) accepts or rejects each step per sample with the Metropolis–Hastings ratio
    ``log r = eps (|s(x)|^2 - |s(x')|^2) / 4`` (the trapezoid rule for the log-density difference;
    exact for Gaussian targets), so the chain leaves p_t invariant instead of ULA's biased law:
    ``n_steps + 1`` scores per grid step, the last handed to a predictor that evaluates at t_i.

    Args:
        snr: the signal-to-noise ratio r (0.16 in Song et al. for CIFAR-10 VE); numpy scalars accepted.
        n_steps: Langevin steps per grid step.
        step_rule: ``"sigma"``, ``"batch"`` or ``"sample"``.
        metropolis: Metropolis-adjust each step (MALA); None: True for ``"sigma"``, else False.
    """

    def __init__(self, snr: float = 0.16, n_steps: int = 1, step_rule: str = "sigma", metropolis: bool | None = None):
        super().__init__(snr, n_steps)
        self.step_rule = check_choice(step_rule, "step_rule", STEP_RULES)
        if metropolis is None:
            metropolis = self.step_rule == "sigma"
        self.metropolis = check_bool(metropolis, "metropolis")
        if self.metropolis and self.step_rule != "sigma":
            raise ValueError(
                f"metropolis=True needs step_rule='sigma' (a step that depends on t alone); got "
                f"step_rule={self.step_rule!r}, whose step depends on the state and the noise draw"
            )
        self.extra_nfe = 1 if self.metropolis else 0

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Tensor]:
        return _step_coefficients(sde, grid, self.snr)

    def correct(
        self, model: ScoreModel, x: Tensor, i: int, c: dict, *, generator: GeneratorLike = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        if not self.metropolis:
            return self(model, x, i, c, generator=generator), None, None
        return self._correct(model, x, i, c, generator, fold=False)

    def _folds(self, model: ScoreModel, x: Tensor, c: dict) -> bool:
        """Whether the steps take an eps network's own output (``s = -eps / sigma`` folded into the step's
        coefficients: no conversion per call): the sigma rule, float32 / float64 states."""
        return self.step_rule == "sigma" and x.dtype not in _LOW_PRECISION and predicts_eps(model) and "c_eps_step" in c

    def _correct(
        self,
        model: ScoreModel,
        x: Tensor,
        i: int,
        c: dict,
        generator: GeneratorLike,
        fold: bool,
        need_score: bool = True,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """:meth:`correct`; with ``fold``, the score-like output is the eps network's output at the corrected state;
        without ``need_score``, None (the last Metropolis step selects no score: nobody reuses it)."""
        t, alpha, sigma = c["t"][i], c["alpha"][i], c["sigma"][i]
        view = "eps" if fold else "score"
        if fold:  # the sigma rule on the eps network's output
            noise = c["_lc_noise"][i] if "_lc_noise" in c else _sigma_at(x, c, i)[1]
            eps, quarter = c["c_eps_step"][i], c["c_eps_ratio"][i]
        elif self.step_rule == "sigma":
            eps, noise, quarter = _sigma_at(x, c, i)
        if self.metropolis:
            s: Tensor | None = view_at(model, x, t, view, (alpha, sigma))
            accept = None
            for j in range(self.n_steps):
                keep = need_score or j < self.n_steps - 1
                x, s, accept = _mala_step(model, x, s, t, alpha, sigma, (eps, noise, quarter), generator, view, keep)  # type: ignore[arg-type]
            return x, s, accept
        for _ in range(self.n_steps):
            s = view_at(model, x, t, view, (alpha, sigma))
            z = randn_like(x, generator)
            if self.step_rule != "sigma":
                eps, noise = _norm_step(x, s, z, c["c_k"][i], self.step_rule)
            x = _langevin_update(x, s, z, eps, noise)
        return x, None, None

    def __call__(self, model: ScoreModel, x: Tensor, i: int, c: dict, *, generator: GeneratorLike = None) -> Tensor:
        return self._correct(model, x, i, c, generator, self._folds(model, x, c), need_score=False)[0]

    def __repr__(self) -> str:
        return (
            f"LangevinCorrector(snr={self.snr:g}, n_steps={self.n_steps}, step_rule={self.step_rule!r}, "
            f"metropolis={self.metropolis})"
        )


class AnnealedLangevinCorrector(LangevinCorrector):
    """Annealed Langevin dynamics (Song & Ermon 2019; ``score_sde``'s ``AnnealedLangevinDynamics``).

    ``eps_i = 2 a_i^2 (snr sigma_i)^2`` (a deterministic step, precomputed per grid), then
    ``n_steps`` times ``x <- x + eps_i s + sqrt(2 eps_i) z``: exactly
    ``LangevinCorrector(snr, n_steps, step_rule="sigma", metropolis=False)`` (the unadjusted step), kept
    under its published name.
    """

    def __init__(self, snr: float, n_steps: int):
        super().__init__(snr, n_steps, step_rule="sigma", metropolis=False)

    def __repr__(self) -> str:
        return Corrector.__repr__(self)


# --------------------------------------------------------------------------- the sampler
# The low-precision overflow record of the solve in progress (one per context: thread-safe).
_OVERFLOW_RECORD: contextvars.ContextVar[dict | None] = contextvars.ContextVar("pc_overflow_record", default=None)


class PredictorCorrector(Solver):
    """Predictor–corrector sampling (Song et al. 2021, Algorithm 1): corrector, then predictor.

    Args:
        predictor: a :class:`Predictor`: ``ReverseDiffusionPredictor()`` (the default, as in
            ``score_sde``), ``EulerMaruyamaPredictor()``, ``AncestralPredictor()``, or a subclass.
        corrector: ``LangevinCorrector()`` (the default: snr 0.16, one Metropolis-adjusted step with the
            sigma step rule),
            ``AnnealedLangevinCorrector(snr, n_steps)``, a :class:`Corrector` subclass, or None
            (predictor only).

    ``nfe_per_step = 1 + corrector.n_steps`` (one score for the predictor, one per Langevin step), plus
    one for a Metropolis-adjusted corrector (its score at the current state), less that one on a process
    where the predictor evaluates at ``(x, t_i)`` and reuses the corrector's score (:meth:`nfe_on`;
    :meth:`nfe` for a solve). The default (midpoint reverse diffusion + Metropolis-adjusted Langevin)
    makes 3 calls per step.
    Weak order 1 (the predictor's); the grid defaults to uniform in t, as Song et al. The callback's
    ``x0`` is the model's denoised estimate where the predictor evaluated it (the corrected state).
    """

    order = 1.0
    strong_order = 0.5
    default_grid = "uniform"

    def __init__(self, predictor: Predictor | None = None, corrector: Corrector | None | str = "default"):
        if predictor is None:
            predictor = ReverseDiffusionPredictor()
        if isinstance(corrector, str) and corrector == "default":
            corrector = LangevinCorrector()
        if not isinstance(predictor, Predictor):
            raise TypeError(
                f"predictor must be a Predictor (e.g. ReverseDiffusionPredictor()), got {type(predictor).__name__}"
            )
        if corrector is not None and not isinstance(corrector, Corrector):
            raise TypeError(
                f"corrector must be a Corrector (e.g. LangevinCorrector()) or None, got {type(corrector).__name__}"
            )
        self.predictor = predictor
        self.corrector = corrector
        self.nfe_per_step = 1 + (corrector.n_steps + corrector.extra_nfe if corrector is not None else 0)
        self.stochastic = not predictor.probability_flow or corrector is not None

    def check(self, sde: LinearSDE) -> None:
        self.predictor.check(sde)

    def _reuses_score(self, sde: LinearSDE) -> bool:
        """The corrector hands its score at the corrected state to a predictor evaluating there."""
        return self.corrector is not None and self.corrector.extra_nfe > 0 and self.predictor.takes_score(sde)

    def nfe_on(self, sde: LinearSDE) -> int:
        """Network evaluations per grid step on ``sde``: ``nfe_per_step``, less one where the predictor
        reuses a Metropolis corrector's score (its score at ``(x, t_i)``)."""
        return self.nfe_per_step - int(self._reuses_score(sde))

    def _reuse_on_every_process(self) -> bool | None:
        """Whether the predictor reuses the corrector's score, when that does not depend on the process; else None."""
        if self.corrector is None or self.corrector.extra_nfe == 0:
            return False
        p = self.predictor
        if isinstance(p, _GridPredictor) and type(p).takes_score is _GridPredictor.takes_score:
            return None if p.discretization == "auto" else p.discretization == "song"
        if type(p).takes_score is Predictor.takes_score:
            return False
        return None

    def nfe(self, n_steps: int, sde: LinearSDE | None = None) -> int:
        """Network evaluations for a solve of ``n_steps`` steps: ``nfe_on(sde) * n_steps``.

        Args:
            n_steps: grid steps.
            sde: the process; it may be left out where the count does not depend on it (no Metropolis
                corrector, or a predictor that takes the corrector's score on every process or on none).

        Raises:
            ValueError: ``sde`` left out where the predictor reuses the corrector's score on some processes
                only (an ``"auto"`` discretization, a user predictor's ``takes_score``).
        """
        n_steps = check_int(n_steps, "n_steps", minimum=0)
        if sde is not None:
            return self.nfe_on(_check_sde(sde)) * n_steps
        reuse = self._reuse_on_every_process()
        if reuse is None:
            raise ValueError(
                f"sde is needed: whether {self.predictor!r} reuses the Metropolis corrector's score (one network call "
                f"less per step) depends on the process; call nfe(n_steps, sde) or nfe_on(sde)"
            )
        return (self.nfe_per_step - int(reuse)) * n_steps

    def init(self, sde: LinearSDE, grid: Tensor) -> dict[str, Any]:
        c: dict[str, Any] = super().init(sde, grid)
        t = c["t"]
        c["alpha"], c["sigma"] = torch.exp(sde._log_alpha(t)), torch.exp(sde._log_sigma(t))
        parts: list[tuple[str, str, Predictor | Corrector]] = [("predictor", "p_", self.predictor)]
        if self.corrector is not None:
            parts.append(("corrector", "c_", self.corrector))
        for name, prefix, part in parts:
            for k, v in part.init(sde, grid).items():
                if not (k.startswith(prefix) or k.startswith("t" + prefix)) or k in c:
                    raise ValueError(
                        f"the {name}'s coefficient names must start with {prefix!r} (times with "
                        f"{'t' + prefix!r}) and be new; {type(part).__name__}.init returned {k!r}"
                    )
                c[k] = v
        c["reuse_score"] = self._reuses_score(sde)  # a plain bool: the same every step
        return c

    def init_state(self, x: Tensor, coefs: dict) -> dict[str, Any]:
        state = super().init_state(x, coefs)
        corr = self.corrector
        if isinstance(corr, LangevinCorrector) and corr.step_rule == "sigma" and "c_sqrt_eps" in coefs:
            # the sigma rule's steps in x's arithmetic dtype, once per solve (keys "_lc_...": see _sigma_steps_per_solve)
            coefs.update(_sigma_steps_per_solve(x, coefs))
        if self.corrector is not None and self.corrector.extra_nfe > 0:
            # per step: the fraction of the batch whose last Metropolis proposal was accepted
            state["acceptance"] = torch.zeros(coefs["t"].numel(), dtype=torch.float64, device=x.device)
        if self.corrector is not None and x.dtype in _LOW_PRECISION:
            # per step: did the corrector turn a finite state into +-inf (an overflow, no NaN)?
            record = torch.zeros(coefs["t"].numel(), dtype=torch.bool, device=x.device)
            state["corrector_overflow"] = record
            holder = _OVERFLOW_RECORD.get()
            if holder is not None:
                holder["record"] = record
        return state

    def step(
        self,
        model: ScoreModel,
        state: dict,
        i: int,
        coefs: dict,
        *,
        generator: GeneratorLike = None,
        noise: bool = True,
        need_x0: bool = False,
    ) -> dict:
        x = state["x"]
        out = {}
        s = None
        folded = False
        if self.corrector is not None:
            x_in = x
            corr = self.corrector
            if (
                isinstance(corr, LangevinCorrector)
                and type(corr).correct is LangevinCorrector.correct
                and type(corr).__call__ is LangevinCorrector.__call__
            ):
                folded = corr._folds(model, x, coefs)  # s below is then the eps network's output
                reuse = bool(coefs.get("reuse_score", False))
                x, s, accepted = corr._correct(model, x, i, coefs, generator, folded, need_score=reuse)
            else:
                x, s, accepted = corr.correct(model, x, i, coefs, generator=generator)
            record = state.get("corrector_overflow")
            if record is not None:
                record[i] = torch.isfinite(x_in).all() & torch.isinf(x).any() & ~torch.isnan(x).any()
                out["corrector_overflow"] = record
            acceptance = state.get("acceptance")
            if acceptance is not None:
                if accepted is not None:
                    torch.mean(accepted, dim=0, dtype=torch.float64, out=acceptance[i])  # one kernel, in place
                out["acceptance"] = acceptance
        kw: dict[str, Tensor] = {}
        if coefs.get("reuse_score", False) and s is not None:
            if not folded:
                kw["score"] = s
            elif isinstance(self.predictor, _GridPredictor):
                kw["eps"] = s
            else:  # a user predictor takes the score
                kw["score"] = convert(s, x, coefs["alpha"][i], coefs["sigma"][i], "eps", "score")
        out["x"], x0 = self.predictor(model, x, i, coefs, generator=generator, noise=noise, need_x0=need_x0, **kw)
        if need_x0:
            out["x0"] = x0
        return out

    def solve(self, sde: LinearSDE, model: ScoreModel, x: Tensor, grid: Tensor, **kwargs: Any) -> Tensor:
        holder: dict = {}
        token = _OVERFLOW_RECORD.set(holder)
        try:
            return super().solve(sde, model, x, grid, **kwargs)
        except NonFiniteError as err:
            record = holder.get("record")
            if record is None or not bool(record.any()):
                raise
            b = int(torch.nonzero(record)[0])
            raise NonFiniteError(
                f"the corrector {self.corrector!r} overflowed {x.dtype} (largest finite value "
                f"{torch.finfo(x.dtype).max:g}) at step {b}, t = {float(grid[b]):.6g}: from a finite state its "
                f"Langevin update x + eps s + sqrt(2 eps) z left the dtype's range (the model's output was not "
                f"NaN). Sample in float32, or use a smaller snr or the default step_rule='sigma'"
            ) from err
        finally:
            _OVERFLOW_RECORD.reset(token)

    def __repr__(self) -> str:
        return f"PredictorCorrector(predictor={self.predictor!r}, corrector={self.corrector!r})"
