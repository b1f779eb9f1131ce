"""sdesolve.testing: check_sde passes on every built-in process and names the invariant that a
deliberately broken subclass violates; the strategies draw valid processes."""

import math

import numpy as np
import pytest
import torch
from helpers import ALL_PROCESSES, UserVE, UserVP
from hypothesis import given, settings

import sdesolve as sd
from sdesolve.testing import (
    SDECheckError,
    SDECheckReport,
    check_sde,
    cosine_vp_sdes,
    discrete_vp_sdes,
    sdes,
    subvp_sdes,
    times,
    vdm_sdes,
    ve_sdes,
    vp_sdes,
)

F64 = torch.float64

BUILTIN = {  # every process of the registry (helpers.ALL_PROCESSES), as factories
    k: ALL_PROCESSES[k] for k in ("vp", "subvp", "cosine", "ve", "vdm", "vdm-30", "discrete", "ddpm-scaled", "ddpm-cos")
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_check_sde_passes_on_builtins(name):
    sde = BUILTIN[name]()
    r = check_sde(sde)
    assert isinstance(r, SDECheckReport)
    # closed forms agree with autograd of alpha, sigma to rounding
    for err in (r.f_err, r.moment_err, r.log_snr_err, r.inverse_err, r.drift_err, r.diffusion_err, r.prior_logp_err):
        assert 0 <= err < 1e-11
    assert (r.vp_err is not None) == sde.variance_preserving
    # KL per dimension from alpha_T, sigma_T and prior_std, written out here
    a, s, p = float(sde.alpha(sde.T)), float(sde.sigma(sde.T)), float(sde.prior_std)
    kl_worst = 0.5 * ((s * s + a * a) / p**2 - 1 - math.log(s * s / p**2))
    kl_gauss = 0.5 * ((s * s + a * a) / p**2 - 1 - math.log((s * s + a * a) / p**2))
    assert r.kl_worst == pytest.approx(kl_worst, rel=1e-9, abs=1e-15)
    assert r.kl_gaussian == pytest.approx(kl_gauss, rel=1e-6, abs=1e-15)
    assert 0 <= r.kl_gaussian <= r.kl_worst <= 1e-2


def test_kl_values_of_the_defaults():
    # VP: alpha_T^2 = exp(-(beta_min + beta_max)/2), sigma_T^2 = 1 - alpha_T^2, prior N(0, 1):
    # worst case |x0| = 1: KL = -1/2 log(1 - alpha_T^2); data N(0, 1): KL = 0.
    r = check_sde(sd.VPSDE())
    a2 = math.exp(-(0.1 + 20.0) / 2)
    assert r.kl_worst == pytest.approx(-0.5 * math.log1p(-a2), rel=1e-10)
    assert r.kl_gaussian == pytest.approx(0.0, abs=1e-15)
    # VE: alpha = 1, sigma_T = sigma_max = prior_std: KL = 1/(2 sigma_max^2) for |x0| = 1
    r = check_sde(sd.VESDE(0.01, 50.0))
    assert r.kl_worst == pytest.approx(0.5 / 50.0**2, rel=1e-10)


def test_kl_bound_fails_when_the_prior_is_not_reached():
    sde = sd.VPSDE(beta_min=0.1, beta_max=2.0)  # alpha_T^2 = exp(-1.05): far from N(0, 1)
    with pytest.raises(SDECheckError, match=r"invariant 'prior close to marginal' violated: at t=T=1: KL") as e:
        check_sde(sde)
    assert e.value.invariant == "prior close to marginal"
    assert isinstance(e.value, AssertionError)
    # the caller sets the bound
    a2 = math.exp(-1.05)
    r = check_sde(sde, kl_bound=1.0)
    assert r.kl_worst == pytest.approx(-0.5 * math.log1p(-a2), rel=1e-10)
    with pytest.raises(SDECheckError, match="prior close to marginal"):
        check_sde(sd.VDMSDE(), kl_bound=1e-3)  # gamma_max = 5: KL ~ 3.4e-3


# ------------------------------------------------------------------ deliberately broken subclasses
class WrongDriftOverride(sd.VPSDE):
    def drift(self, x, t):
        return 1.01 * super().drift(x, t)


class WrongDiffusionOverride(sd.VPSDE):
    def diffusion(self, t):
        return super().diffusion(t) * 1.001


class WrongG2(sd.VPSDE):
    def _g2(self, t):
        return 1.001 * self.beta(t)


class WrongF(sd.VESDE):
    def _f(self, t):
        return torch.full_like(t, 1e-3)


class WrongF2(sd.VPSDE):
    def f(self, t):
        return super().f(t) * 0.999


class NonMonotoneLogSNR(sd.LinearSDE):
    """VE-like with a wiggle: log sigma decreases near t = 0."""

    def _log_alpha(self, t):
        return torch.zeros_like(t)

    def _log_sigma(self, t):
        return math.log(0.01) + 8.5 * t - torch.sin(10.0 * t)


class WrongInverse(sd.VPSDE):
    def _t_of_log_snr(self, lam):
        return 1.0001 * super()._t_of_log_snr(lam)


class WrongPublicAlpha(sd.VPSDE):
    def alpha(self, t):
        return 1.01 * super().alpha(t)


class BadPriorStd(sd.VESDE):
    prior_std_override = 1.0

    def __init__(self):
        super().__init__()
        self.prior_std = 1.0  # sigma_T = 50: the prior is far too narrow


class BadPriorLogp(sd.VPSDE):
    def prior_logp(self, z):
        return -0.5 * (z.reshape(z.shape[0], -1) ** 2).sum(1)  # drops the normalizing constant


class BadPriorSample(sd.VESDE):
    def prior_sample(self, shape, *, generator=None, device=None, dtype=torch.float32):
        return torch.randn(shape, generator=generator, dtype=dtype)  # forgets prior_std


class FalseVarianceClaim(sd.SubVPSDE):
    variance_preserving = True  # sub-VP has alpha^2 + sigma^2 < 1


class WrongPerturb(sd.VESDE):
    def perturb(self, x0, t, noise):
        return x0 + self.sigma_max * noise  # ignores t


class WrongDtype(sd.VPSDE):
    def sigma(self, t):
        return super().sigma(t).double()


class NegativeSigma(sd.VPSDE):
    def sigma(self, t):
        return -super().sigma(t)


BROKEN = [
    (WrongDriftOverride, "drift", r"drift\(x, t\) != f\(t\) x"),
    (WrongDiffusionOverride, "diffusion", r"diffusion\(t\)\^2 != g2\(t\)"),
    (WrongG2, "moment ODE", r"d sigma\^2/dt != 2 f sigma\^2 \+ g\^2: at t="),
    (WrongF, "drift coefficient", r"f\(t\) != d log alpha/dt: at t=.*f=0.001, dlogalpha_dt=0"),
    (WrongF2, "drift coefficient", r"f\(t\) != d log alpha/dt"),
    (NonMonotoneLogSNR, "log-SNR decreasing", r"strictly decreasing.*at t=0"),
    (WrongInverse, "t_of_log_snr inverse", r"t_of_log_snr\(log_snr\(t\)\) != t"),
    (WrongPublicAlpha, "log-SNR definition", r"log_snr\(t\) != log\(alpha\^2/sigma\^2\)"),
    (BadPriorStd, "prior close to marginal", r"KL.*exceeds kl_bound=0.01"),
    (BadPriorLogp, "prior logp", r"prior_logp\(z\) != log N\(z; 0, prior_std\^2 I\)"),
    (BadPriorSample, "prior sample", r"prior_sample draws have mean .* and std .*expected 0 and prior_std=50"),
    (FalseVarianceClaim, "variance preserving", r"alpha\^2 \+ sigma\^2 != 1"),
    (WrongPerturb, "perturb", r"perturb\(x0, t, noise\) != alpha\(t\) x0 \+ sigma\(t\) noise"),
    (WrongDtype, "dtype and shape", r"sigma\(t\) for t=.* must return a tensor of dtype torch.float32"),
    (NegativeSigma, "positivity", r"sigma\(t\) must be positive and finite: at t="),
]


@pytest.mark.parametrize("cls,invariant,detail", BROKEN, ids=[c.__name__ for c, _, _ in BROKEN])
def test_check_sde_fails_on_broken_subclass(cls, invariant, detail):
    with pytest.raises(SDECheckError, match=rf"invariant '{invariant}' violated: .*{detail}") as e:
        check_sde(cls())
    assert e.value.invariant == invariant


def test_failure_message_names_time_and_values():
    with pytest.raises(SDECheckError) as e:
        check_sde(WrongG2())
    msg = str(e.value)
    # the moment-ODE residual is 0.001 beta(t) (1 - sigma^2)... worst relative where sigma^2 is small
    assert "dsigma2_dt=" in msg and "two_f_sigma2_plus_g2=" in msg and "g2=" in msg and "tol 1e-06" in msg


# ------------------------------------------------------------------ non-differentiable processes
class NumpyVP(sd.VPSDE):
    """A VP process whose public alpha and sigma go through numpy: no autograd graph."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def _np(self, v, t):
        return torch.as_tensor(np.asarray(v), dtype=t.dtype if isinstance(t, torch.Tensor) else F64)

    def alpha(self, t):
        t64 = self._time(t).detach().numpy()
        return self._np(np.exp(self.scale * (-0.25 * t64**2 * 19.9 - 0.05 * t64)), t)

    def sigma(self, t):
        a = self.alpha(t)
        return torch.sqrt(1 - a.double() ** 2).to(a.dtype)

    def log_snr(self, t):
        a = self.alpha(t)
        return torch.log(a.double() ** 2 / (1 - a.double() ** 2)).to(a.dtype)


def test_finite_difference_fallback_passes_a_correct_non_differentiable_process():
    r = check_sde(NumpyVP())
    assert r.derivative == "alpha: finite-difference, sigma^2: finite-difference"
    # five-point differences with h = 1e-4: truncation O(h^4), rounding O(eps / h)
    assert r.f_err < 1e-8 and r.moment_err < 1e-8


def test_finite_difference_fallback_catches_a_wrong_non_differentiable_alpha():
    with pytest.raises(SDECheckError, match="invariant 'drift coefficient' violated"):
        check_sde(NumpyVP(scale=1.001))


# ------------------------------------------------------------------ strategies
@settings(max_examples=20)
@given(sdes())
def test_random_builtins_pass_check_sde(sde):
    r = check_sde(sde, n_times=33)
    assert r.kl_worst <= 1e-2


@given(vp_sdes())
def test_vp_strategy_ranges(sde):
    assert isinstance(sde, sd.VPSDE) and 0.01 <= sde.beta_min <= 1.0 and 10.0 <= sde.beta_max <= 30.0


@given(subvp_sdes())
def test_subvp_strategy(sde):
    assert isinstance(sde, sd.SubVPSDE) and sde.beta_min <= sde.beta_max


@given(cosine_vp_sdes())
def test_cosine_strategy(sde):
    assert isinstance(sde, sd.CosineVPSDE) and -15.0 <= sde.log_snr_min <= -6.0 and sde.t_min < sde.T < 1.0


@given(ve_sdes())
def test_ve_strategy(sde):
    assert isinstance(sde, sd.VESDE) and sde.sigma_min < 0.11 and sde.sigma_max > 9.9


@given(vdm_sdes())
def test_vdm_strategy(sde):
    g = sde.gamma
    assert isinstance(g, sd.FixedLinearGamma) and -30 <= g.gamma_min <= -5 and 5 <= g.gamma_max <= 30


@given(discrete_vp_sdes())
def test_discrete_strategy(sde):
    assert isinstance(sde, sd.DiscreteVPSDE) and 2 <= sde.num_train_timesteps <= 2000
    ac = sde.alphas_cumprod
    assert bool((ac[1:] < ac[:-1]).all()) and float(ac[-1]) < 0.03


@given(sdes().flatmap(lambda s: times(s).map(lambda t: (s, t))))
def test_times_lie_in_range(case):
    sde, t = case
    assert isinstance(t, float) and sde.t_min <= t <= sde.T


def test_sdes_kinds_argument():
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        sdes(["vp", "heat"])
    with pytest.raises(ValueError, match="t_min must lie in"):
        times(sd.VPSDE(), t_min=2.0)


@pytest.mark.parametrize("cls", [UserVE, UserVP])
def test_check_sde_passes_on_minimal_user_subclasses(cls):
    r = check_sde(cls())
    assert r.f_err < 1e-11 and r.moment_err < 1e-11 and r.inverse_err < 1e-12


# ------------------------------------------------------------------ NaN and inf are failures, never passes
class Spoiled(sd.VPSDE):
    """A correct VP process whose public ``method`` returns ``value`` (NaN or inf) wherever t > 0.5.

    Every comparison with NaN is False, so a check written ``err > tol`` passes a NaN; each
    invariant must instead fail, naming itself.
    """

    def __init__(self, method, value):
        super().__init__()
        self.method, self.value = method, value

    def _spoil(self, name, out, t):
        if name != self.method:
            return out
        tt = torch.as_tensor(t, dtype=F64)
        mask = (tt > 0.5).reshape(tt.shape + (1,) * (out.dim() - tt.dim()))
        return torch.where(mask, torch.full_like(out, self.value), out)

    def alpha(self, t):
        return self._spoil("alpha", super().alpha(t), t)

    def sigma(self, t):
        return self._spoil("sigma", super().sigma(t), t)

    def log_snr(self, t):
        return self._spoil("log_snr", super().log_snr(t), t)

    def f(self, t):
        return self._spoil("f", super().f(t), t)

    def g2(self, t):
        return self._spoil("g2", super().g2(t), t)

    def diffusion(self, t):
        return self._spoil("diffusion", super().diffusion(t), t)

    def drift(self, x, t):
        return self._spoil("drift", super().drift(x, t), t)

    def perturb(self, x0, t, noise):
        return self._spoil("perturb", super().perturb(x0, t, noise), t)

    def t_of_log_snr(self, lam):
        out = super().t_of_log_snr(lam)
        return self._spoil("t_of_log_snr", out, out)

    def prior_logp(self, z):
        out = super().prior_logp(z)
        return torch.full_like(out, self.value) if self.method == "prior_logp" else out

    def prior_sample(self, shape, **kw):
        out = super().prior_sample(shape, **kw)
        if self.method == "prior_sample":
            out.reshape(-1)[0] = self.value  # one bad draw among 2^16
        return out


SPOILED = [
    ("alpha", "positivity"),
    ("sigma", "positivity"),
    ("log_snr", "positivity"),
    ("f", "drift coefficient"),
    ("g2", "moment ODE"),
    ("diffusion", "diffusion"),
    ("drift", "drift"),
    ("perturb", "perturb"),
    ("t_of_log_snr", "t_of_log_snr inverse"),
    ("prior_logp", "prior logp"),
    ("prior_sample", "prior sample"),
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("method,invariant", SPOILED, ids=[m for m, _ in SPOILED])
def test_check_sde_rejects_nan_or_inf_in_each_invariant(method, invariant, value):
    with pytest.raises(SDECheckError, match=rf"invariant '{invariant}' violated") as e:
        check_sde(Spoiled(method, value))
    assert e.value.invariant == invariant


def test_check_sde_rejects_a_nan_prior_std():
    class NaNPrior(sd.VPSDE):
        prior_std = math.nan

    with pytest.raises(SDECheckError, match="invariant 'prior' violated: prior_std must be positive and finite"):
        check_sde(NaNPrior())


def test_check_sde_is_a_table_of_ten_numbered_checks():
    from sdesolve.testing import CHECKS

    assert len(CHECKS) == 10
    assert [name for name, _ in CHECKS][:3] == ["positivity", "log-SNR definition", "log-SNR decreasing"]
    assert all(callable(fn) and fn.__doc__.startswith(f"{i}.") for i, (_, fn) in enumerate(CHECKS, 1))


class WigglyGamma(sd.GammaSchedule):
    """A learned schedule gone wrong: gamma(t) = -10 + 16 t + 1.5 sin(12 t) dips near t = 0.3 (gamma' < 0)."""

    def forward(self, t):
        return -10.0 + 16.0 * t + 1.5 * torch.sin(12.0 * t)


def test_check_sde_reports_a_non_monotone_vdm_schedule():
    sde = sd.VDMSDE(WigglyGamma())
    # gamma' = 16 + 18 cos(12 t) < 0 on (0.202, 0.322): the log-SNR rises there
    with pytest.raises(SDECheckError, match=r"invariant 'log-SNR decreasing' violated: .*at t=0\.(2|3)"):
        check_sde(sde, kl_bound=1.0)
    # and the inverse refuses to pick one of the crossings silently
    assert torch.isnan(sde._t_of_log_snr(torch.tensor([0.0, -5.0], dtype=F64))).all()
    with pytest.raises(ValueError, match="log-SNR is not strictly decreasing"):
        sde.t_of_log_snr(-5.0)


def test_check_sde_argument_types():
    with pytest.raises(TypeError, match="n_times must be an int"):
        check_sde(sd.VPSDE(), n_times=10.5)
    with pytest.raises(TypeError, match="rtol must be a real number"):
        check_sde(sd.VPSDE(), rtol="1e-6")
    # numpy scalars are numbers
    assert check_sde(sd.VPSDE(), rtol=np.float32(1e-6), n_times=np.int64(17)).n_times >= 17
