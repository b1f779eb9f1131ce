"""Bad input to the forward processes (``sdesolve.sde``) and the data laws (``sdesolve.targets``)."""

from __future__ import annotations

import math

import numpy as np
import torch

import sdesolve as sd
from sdesolve.sde import ddpm_betas

from . import Case

NAN, INF = math.nan, math.inf
X = torch.zeros(2, 3)


class _NotMonotone(sd.GammaSchedule):
    def forward(self, t):
        return -10.0 + 16.0 * t + 1.5 * torch.sin(12.0 * t)


def _positive_cases(prefix, make, name):
    """A positive finite number argument: wrong type, zero, negative, NaN, inf, bool."""
    pos = rf"{name} must be a positive finite number, got"
    typ = rf"{name} must be a real number, got"
    return [
        Case(f"{prefix}-{name}-string", lambda: make(**{name: "0.1"}), TypeError, typ),
        Case(f"{prefix}-{name}-bool", lambda: make(**{name: True}), TypeError, typ),
        Case(f"{prefix}-{name}-none", lambda: make(**{name: None}), TypeError, typ),
        Case(f"{prefix}-{name}-zero", lambda: make(**{name: 0.0}), ValueError, pos),
        Case(f"{prefix}-{name}-negative", lambda: make(**{name: -1.0}), ValueError, pos),
        Case(f"{prefix}-{name}-nan", lambda: make(**{name: NAN}), ValueError, pos),
        Case(f"{prefix}-{name}-inf", lambda: make(**{name: INF}), ValueError, pos),
    ]


def _t_min_cases(prefix, make, T="1"):
    rng = rf"t_min must lie in \[0, T={T}"
    return [
        Case(f"{prefix}-t_min-string", lambda: make(t_min="0"), TypeError, r"t_min must be a real number, got"),
        Case(f"{prefix}-t_min-bool", lambda: make(t_min=False), TypeError, r"t_min must be a real number, got"),
        Case(f"{prefix}-t_min-negative", lambda: make(t_min=-1e-3), ValueError, rng),
        Case(f"{prefix}-t_min-at-T", lambda: make(t_min=1.0), ValueError, rng),
        Case(f"{prefix}-t_min-nan", lambda: make(t_min=NAN), ValueError, rng),
    ]


CASES = []
for _prefix, _cls in (("sde-vp", sd.VPSDE), ("sde-subvp", sd.SubVPSDE)):
    CASES += _positive_cases(_prefix, _cls, "beta_min")
    CASES += _positive_cases(_prefix, _cls, "beta_max")
    CASES += _t_min_cases(_prefix, _cls)
    CASES.append(
        Case(
            f"{_prefix}-beta_min-above-beta_max",
            lambda c=_cls: c(beta_min=2.0, beta_max=1.0),
            ValueError,
            r"beta_min must be <= beta_max, got beta_min=2.0, beta_max=1.0",
        )
    )

CASES += _positive_cases("sde-ve", sd.VESDE, "sigma_min")
CASES += _positive_cases("sde-ve", sd.VESDE, "sigma_max")
CASES += _t_min_cases("sde-ve", sd.VESDE)
CASES += [
    Case(
        "sde-ve-sigma_min-equals-sigma_max",
        lambda: sd.VESDE(sigma_min=5.0, sigma_max=5.0),
        ValueError,
        r"sigma_min must be < sigma_max",
    ),
]

CASES += _positive_cases("sde-cosine", sd.CosineVPSDE, "s")
CASES += [
    Case("sde-cosine-t_min-at-1", lambda: sd.CosineVPSDE(t_min=1.0), ValueError, r"t_min must lie in \[0, T=1\)"),
    Case("sde-cosine-t_min-string", lambda: sd.CosineVPSDE(t_min="0"), TypeError, r"t_min must be a real number"),
    Case(
        "sde-cosine-log_snr_min-string",
        lambda: sd.CosineVPSDE(log_snr_min="-10"),
        TypeError,
        r"log_snr_min must be a real number",
    ),
    Case(
        "sde-cosine-log_snr_min-nan",
        lambda: sd.CosineVPSDE(log_snr_min=NAN),
        ValueError,
        r"log_snr_min must be a finite number",
    ),
    Case(
        "sde-cosine-log_snr_min-inf",
        lambda: sd.CosineVPSDE(log_snr_min=-INF),
        ValueError,
        r"log_snr_min must be a finite number",
    ),
    # issue 8.12: it used to blame t_min
    Case(
        "sde-cosine-log_snr_min-above-t_min",
        lambda: sd.CosineVPSDE(log_snr_min=50.0),
        ValueError,
        r"log_snr_min must be below the log-SNR at t_min=0\.001, which is 10\.09",
    ),
    Case(
        "sde-cosine-log_snr_min-numpy-above-t_min",
        lambda: sd.CosineVPSDE(t_min=0.5, log_snr_min=np.float32(0.0)),
        ValueError,
        r"log_snr_min must be below the log-SNR at t_min=0\.5",
    ),
]

# VDM and its gamma schedules
CASES += _t_min_cases("sde-vdm", sd.VDMSDE)
CASES += [
    Case(
        "sde-vdm-gamma-lambda",
        lambda: sd.VDMSDE(gamma=lambda t: t),
        TypeError,
        r"gamma must be a GammaSchedule module, got function",
    ),
    Case("sde-vdm-gamma-number", lambda: sd.VDMSDE(gamma=5.0), TypeError, r"gamma must be a GammaSchedule module"),
    Case(
        "sde-vdm-t_of_log_snr-not-monotone",
        lambda: sd.VDMSDE(_NotMonotone()).t_of_log_snr(-5.0),
        ValueError,
        r"log-SNR is not strictly decreasing on \[0, T\]",
    ),
]
for _cls in (sd.FixedLinearGamma, sd.LearnedScalarGamma, sd.LearnedMonotoneGamma):
    _p = f"sde-{_cls.__name__}"
    CASES += [
        Case(
            f"{_p}-gamma_min-string", lambda c=_cls: c(gamma_min="-13"), TypeError, r"gamma_min must be a real number"
        ),
        Case(f"{_p}-gamma_max-none", lambda c=_cls: c(gamma_max=None), TypeError, r"gamma_max must be a real number"),
        Case(f"{_p}-gamma_min-nan", lambda c=_cls: c(gamma_min=NAN), ValueError, r"gamma_min must be a finite number"),
        Case(f"{_p}-gamma_max-inf", lambda c=_cls: c(gamma_max=INF), ValueError, r"gamma_max must be a finite number"),
        Case(
            f"{_p}-gamma_min-above-gamma_max",
            lambda c=_cls: c(5.0, -13.3),
            ValueError,
            r"gamma_min must be < gamma_max, got gamma_min=5.0, gamma_max=-13.3",
        ),
    ]
for _cls in (sd.LearnedScalarGamma, sd.LearnedMonotoneGamma):
    CASES.append(
        Case(
            f"sde-{_cls.__name__}-dtype-int",
            lambda c=_cls: c(dtype=torch.int64),
            TypeError,
            r"dtype must be a floating torch\.dtype",
        )
    )
CASES += [
    # LearnedScalarGamma.inverse names its argument gamma (not t)
    Case(
        "sde-LearnedScalarGamma-inverse-int",
        lambda: sd.LearnedScalarGamma().inverse(torch.tensor([1])),
        TypeError,
        r"^gamma must be a floating-point tensor, got dtype torch\.int64$",
    ),
    Case(
        "sde-LearnedScalarGamma-inverse-string",
        lambda: sd.LearnedScalarGamma().inverse("x"),
        TypeError,
        r"^gamma must be a float or a floating-point tensor, got str$",
    ),
    Case(
        "sde-LearnedMonotoneGamma-n_features-zero",
        lambda: sd.LearnedMonotoneGamma(n_features=0),
        ValueError,
        r"n_features must be an int >= 1, got 0",
    ),
    Case(
        "sde-LearnedMonotoneGamma-n_features-float",
        lambda: sd.LearnedMonotoneGamma(n_features=8.0),
        TypeError,
        r"n_features must be an int",
    ),
    Case(
        "sde-LearnedMonotoneGamma-init_std-negative",
        lambda: sd.LearnedMonotoneGamma(init_std=-0.1),
        ValueError,
        r"init_std must be a finite non-negative number",
    ),
    Case(
        "sde-LearnedMonotoneGamma-learn_endpoints-string",
        lambda: sd.LearnedMonotoneGamma(learn_endpoints="yes"),
        TypeError,
        r"learn_endpoints must be True or False",
    ),
    Case(
        "sde-LearnedMonotoneGamma-generator-int",
        lambda: sd.LearnedMonotoneGamma(generator=0),
        TypeError,
        r"^generator must be a torch\.Generator or None, got int$",
    ),
    # a schedule called at a bad time names its argument t (whole message)
    Case(
        "sde-LearnedMonotoneGamma-t-int",
        lambda: sd.LearnedMonotoneGamma(n_features=2)(torch.tensor([1, 2])),
        TypeError,
        r"^t must be a floating-point tensor, got dtype torch\.int64$",
    ),
    Case(
        "sde-LearnedScalarGamma-derivative-t-string",
        lambda: sd.LearnedScalarGamma().derivative("0.5"),
        TypeError,
        r"^t must be a float or a floating-point tensor, got str$",
    ),
]

# DiscreteVPSDE, from_schedule and ddpm_betas
_D = sd.DiscreteVPSDE
CASES += _t_min_cases("sde-discrete", lambda t_min: _D.from_schedule("linear", t_min=t_min))
CASES += [
    Case("sde-discrete-neither", lambda: _D(), ValueError, r"^pass exactly one of betas or alphas_cumprod$"),
    Case(
        "sde-discrete-both",
        lambda: _D([0.1], alphas_cumprod=[0.9]),
        ValueError,
        r"pass exactly one of betas or alphas_cumprod",
    ),
    Case(
        "sde-discrete-betas-string",
        lambda: _D("0.1"),
        TypeError,
        r"^betas must be a 1-d tensor or sequence of real numbers, got '0\.1'$",
    ),
    Case(
        "sde-discrete-betas-object",
        lambda: _D([object()]),
        TypeError,
        r"^betas must be a 1-d tensor or sequence of real numbers, got \[<object object at",
    ),
    Case("sde-discrete-betas-bool", lambda: _D(torch.tensor([True])), TypeError, r"betas must be a 1-d tensor"),
    Case(
        "sde-discrete-betas-2d",
        lambda: _D(torch.full((2, 2), 0.1)),
        ValueError,
        r"betas must be a non-empty 1-d tensor, got shape \(2, 2\)",
    ),
    Case("sde-discrete-betas-empty", lambda: _D([]), ValueError, r"betas must be a non-empty 1-d tensor"),
    Case(
        "sde-discrete-betas-zero",
        lambda: _D([0.1, 0.0]),
        ValueError,
        r"betas must lie in \(0, 1\), got values \[0\.0\]",
    ),
    Case("sde-discrete-betas-one", lambda: _D([0.1, 1.0]), ValueError, r"betas must lie in \(0, 1\)"),
    # the message lists the first four values outside (0, 1), in order
    Case(
        "sde-discrete-betas-bad-values",
        lambda: _D([0.5, 0.0, 1.0, NAN, 2.0, -1.0, 0.3]),
        ValueError,
        r"^betas must lie in \(0, 1\), got values \[0\.0, 1\.0, nan, 2\.0\]$",
    ),
    Case("sde-discrete-betas-nan", lambda: _D([0.1, NAN]), ValueError, r"betas must lie in \(0, 1\)"),
    # issue 8.12: it used to blame t_min
    Case(
        "sde-discrete-betas-single",
        lambda: _D(betas=[0.5]),
        ValueError,
        r"betas must have at least 2 entries unless t_min is given",
    ),
    Case(
        "sde-discrete-alphas_cumprod-single",
        lambda: _D(alphas_cumprod=[0.5]),
        ValueError,
        r"alphas_cumprod must have at least 2 entries unless t_min is given",
    ),
    Case(
        "sde-discrete-alphas_cumprod-increasing",
        lambda: _D(alphas_cumprod=[0.9, 0.95]),
        ValueError,
        r"^alphas_cumprod must be strictly decreasing$",
    ),
    # a repeat is not a decrease, and later entries are checked against their neighbour, not the first
    Case(
        "sde-discrete-alphas_cumprod-repeated",
        lambda: _D(alphas_cumprod=[0.9, 0.5, 0.5]),
        ValueError,
        r"^alphas_cumprod must be strictly decreasing$",
    ),
    Case(
        "sde-discrete-alphas_cumprod-above-one",
        lambda: _D(alphas_cumprod=[1.5, 0.5]),
        ValueError,
        r"alphas_cumprod must lie in \(0, 1\)",
    ),
    Case(
        "sde-discrete-alphas_cumprod-string",
        lambda: _D(alphas_cumprod="x"),
        TypeError,
        r"alphas_cumprod must be a 1-d tensor or sequence of real numbers",
    ),
    Case(
        "sde-from_schedule-name",
        lambda: _D.from_schedule("cosine"),
        ValueError,
        r"beta_schedule must be one of \('linear', 'scaled_linear', 'squaredcos_cap_v2'\)",
    ),
    Case("sde-from_schedule-unknown-kwarg", lambda: _D.from_schedule("linear", tmin=0.0), TypeError, r"tmin"),
    Case("sde-ddpm_betas-name-int", lambda: ddpm_betas(1), TypeError, r"beta_schedule must be one of"),
    Case(
        "sde-ddpm_betas-num_train_timesteps-zero",
        lambda: ddpm_betas("linear", 0),
        ValueError,
        r"num_train_timesteps must be >= 1",
    ),
    Case(
        "sde-ddpm_betas-num_train_timesteps-float",
        lambda: ddpm_betas("linear", 10.5),
        TypeError,
        r"num_train_timesteps must be an int",
    ),
    Case(
        "sde-ddpm_betas-beta_start-negative",
        lambda: ddpm_betas("linear", 10, -1e-4),
        ValueError,
        r"beta_start must be a finite number in \(0, 1\)",
    ),
    Case(
        "sde-ddpm_betas-beta_end-one",
        lambda: ddpm_betas("linear", 10, 1e-4, 1.0),
        ValueError,
        r"beta_end must be a finite number in \(0, 1\)",
    ),
    Case(
        "sde-ddpm_betas-beta_end-string",
        lambda: ddpm_betas("linear", 10, 1e-4, "0.02"),
        TypeError,
        r"beta_end must be a real number",
    ),
    Case(
        "sde-ddpm_betas-max_beta-zero",
        lambda: ddpm_betas("squaredcos_cap_v2", 10, max_beta=0.0),
        ValueError,
        r"max_beta must be a finite number in \(0, 1\)",
    ),
]

# the public methods: t, lam, r, x, x0, noise, z, shape
_VP = sd.VPSDE()
CASES += [
    Case("sde-alpha-t-above-T", lambda: _VP.alpha(1.5), ValueError, r"t must lie in \[0, 1\], got values \[1\.5\]"),
    Case(
        "sde-t_of_sigma_over_alpha-r-string",
        lambda: _VP.t_of_sigma_over_alpha("x"),
        TypeError,
        r"^r must be a float or a floating-point tensor, got str$",
    ),
    Case("sde-sigma-t-negative", lambda: _VP.sigma(torch.tensor([0.5, -0.1])), ValueError, r"t must lie in \[0, 1\]"),
    Case("sde-log_snr-t-nan", lambda: _VP.log_snr(NAN), ValueError, r"t must be finite"),
    Case("sde-f-t-string", lambda: _VP.f("0.5"), TypeError, r"t must be a float or a floating-point tensor"),
    Case("sde-g2-t-int-tensor", lambda: _VP.g2(torch.tensor([1])), TypeError, r"t must be a floating-point tensor"),
    Case(
        "sde-alpha-t-2d",
        lambda: _VP.alpha(torch.zeros(2, 2)),
        ValueError,
        r"t must be a Python float, a 0-d tensor or a per-sample tensor of shape \(B,\)",
    ),
    Case("sde-cosine-alpha-t-above-T", lambda: sd.CosineVPSDE().alpha(0.999), ValueError, r"t must lie in \[0, 0\.99"),
    # issue 8.9: it used to return 3.17 > T
    Case(
        "sde-t_of_log_snr-lam-below-range",
        lambda: _VP.t_of_log_snr(-100.0),
        ValueError,
        r"lam must be a log-SNR of the process, in \[log_snr\(T\), log_snr\(0\)\] = \[-10\.05, inf\], got values \[-100\.0\]",
    ),
    Case(
        "sde-t_of_log_snr-lam-nan",
        lambda: _VP.t_of_log_snr(torch.tensor([0.0, NAN])),
        ValueError,
        r"lam must be a log-SNR of the process, in \[log_snr\(T\), log_snr\(0\)\]",
    ),
    Case(
        "sde-t_of_log_snr-lam-above-range-ve",
        lambda: sd.VESDE().t_of_log_snr(20.0),
        ValueError,
        r"lam must be a log-SNR of the process, in \[log_snr\(T\), log_snr\(0\)\] = \[-7\.824\d*, 9\.210\d*\]",
    ),
    Case("sde-t_of_log_snr-lam-string", lambda: _VP.t_of_log_snr("1"), TypeError, r"lam must be a float or a"),
    Case(  # the first four values outside, in order
        "sde-t_of_log_snr-lam-five-below-range",
        lambda: _VP.t_of_log_snr(torch.tensor([-100.0, -101.0, -102.0, -103.0, -104.0], dtype=torch.float64)),
        ValueError,
        r"^lam must be a log-SNR of the process, in \[log_snr\(T\), log_snr\(0\)\] = \[-10\.05, inf\], "
        r"got values \[-100\.0, -101\.0, -102\.0, -103\.0\]$",
    ),
    Case(  # both ends of the ratio's range where sigma(0) > 0
        "sde-t_of_sigma_over_alpha-r-below-range-ve",
        lambda: sd.VESDE().t_of_sigma_over_alpha(1e-3),
        ValueError,
        r"^r must be a ratio sigma / alpha of the process, in \[sigma_over_alpha\(0\), sigma_over_alpha\(T\)\] "
        r"= \[0\.01, 50\], got values \[0\.001\d*\]$",
    ),
    Case(
        "sde-t_of_log_snr-bisection-lam-below-range",
        lambda: sd.VDMSDE(sd.LearnedMonotoneGamma(n_features=4)).t_of_log_snr(-6.0),
        ValueError,
        r"lam must be a log-SNR of the process, in \[log_snr\(T\), log_snr\(0\)\] = \[-5, 13\.3\]",
    ),
    Case(
        "sde-t_of_sigma_over_alpha-r-negative",
        lambda: _VP.t_of_sigma_over_alpha(-1.0),
        ValueError,
        r"r must be a non-negative ratio sigma / alpha",
    ),
    Case(
        "sde-t_of_sigma_over_alpha-r-above-range",
        lambda: _VP.t_of_sigma_over_alpha(1e3),
        ValueError,
        r"r must be a ratio sigma / alpha of the process, in \[sigma_over_alpha\(0\), sigma_over_alpha\(T\)\] = \[0, 152\.167\]",
    ),
    Case("sde-transition-s-after-t", lambda: _VP.transition(0.2, 0.5), ValueError, r"s must not exceed t"),
    Case("sde-transition-s-above-T", lambda: _VP.transition(0.2, 2.0), ValueError, r"s must lie in \[0, 1\]"),
    Case("sde-drift-x-list", lambda: _VP.drift([1.0], 0.5), TypeError, r"x must be a torch\.Tensor"),
    Case("sde-drift-x-0d", lambda: _VP.drift(torch.tensor(1.0), 0.5), ValueError, r"x must have a batch dimension"),
    Case(
        "sde-drift-t-batch",
        lambda: _VP.drift(X, torch.full((3,), 0.5)),
        ValueError,
        r"t has 3 times but x has batch size 2",
    ),
    Case(
        "sde-marginal_prob-x0-int",
        lambda: _VP.marginal_prob(torch.zeros(2, 3, dtype=torch.long), 0.5),
        TypeError,
        r"x0 must be a floating-point tensor",
    ),
    Case(
        "sde-perturb-noise-shape",
        lambda: _VP.perturb(X, 0.5, torch.zeros(2, 4)),
        ValueError,
        r"noise must have the shape of x0 \(2, 3\)",
    ),
    Case(
        "sde-prior_logp-z-int",
        lambda: _VP.prior_logp(torch.zeros(2, dtype=torch.long)),
        TypeError,
        r"z must be a floating-point tensor",
    ),
    Case("sde-prior_sample-shape-int", lambda: _VP.prior_sample(3), TypeError, r"shape must be a tuple \(B, \*event\)"),
    Case(
        "sde-prior_sample-shape-float",
        lambda: _VP.prior_sample(3.0),
        TypeError,
        r"^shape must be a tuple \(B, \*event\), got 3\.0$",
    ),
    Case(
        "sde-prior_sample-shape-zero",
        lambda: _VP.prior_sample((0, 3)),
        ValueError,
        r"shape must be \(B, \*event\) with positive sizes",
    ),
    Case(
        "sde-prior_sample-dtype-int",
        lambda: _VP.prior_sample((2, 3), dtype=torch.int64),
        TypeError,
        r"dtype must be a floating dtype",
    ),
]

# the data laws
_G = sd.Gaussian(torch.zeros(2))
_M = sd.GaussianMixture([0.5, 0.5], torch.zeros(2, 2))
CASES += [
    Case(
        "targets-Gaussian-mean-string",
        lambda: sd.Gaussian("0"),
        TypeError,
        r"mean must be a tensor \(or sequence\) of real",
    ),
    Case("sde-targets-Gaussian-mean-nan", lambda: sd.Gaussian([0.0, NAN]), ValueError, r"mean must be finite"),
    Case(
        "targets-Gaussian-std-zero",
        lambda: sd.Gaussian(torch.zeros(2), 0.0),
        ValueError,
        r"std must be positive and finite",
    ),
    Case(
        "targets-Gaussian-std-string",
        lambda: sd.Gaussian(torch.zeros(2), "1"),
        TypeError,
        r"std must be a positive number or a tensor broadcastable",
    ),
    Case(
        "targets-Gaussian-std-shape",
        lambda: sd.Gaussian(torch.zeros(2), torch.ones(3)),
        ValueError,
        r"std of shape \(3,\) does not broadcast to mean's shape \(2,\)",
    ),
    Case("sde-targets-Gaussian-sample-n-zero", lambda: _G.sample(0), ValueError, r"n must be >= 1"),
    Case("sde-targets-Gaussian-sample-n-float", lambda: _G.sample(2.5), TypeError, r"n must be an int"),
    Case(
        "targets-Gaussian-log_prob-x-shape",
        lambda: _G.log_prob(torch.zeros(4, 3)),
        ValueError,
        r"x must have shape \(B, 2\)",
    ),
    Case(
        "targets-Gaussian-marginal_score-t-above-T",
        lambda: _G.marginal_score(torch.zeros(4, 2), 2.0, _VP),
        ValueError,
        r"t must lie in \[0, 1\]",
    ),
    Case(
        "targets-GaussianMixture-weights-sum",
        lambda: sd.GaussianMixture([0.5, 0.6], torch.zeros(2, 2)),
        ValueError,
        r"weights must sum to 1",
    ),
    Case(
        "targets-GaussianMixture-weights-negative",
        lambda: sd.GaussianMixture([1.5, -0.5], torch.zeros(2, 2)),
        ValueError,
        r"weights must be non-negative",
    ),
    Case(
        "targets-GaussianMixture-weights-string",
        lambda: sd.GaussianMixture("w", torch.zeros(2, 2)),
        TypeError,
        r"weights must be a 1-d tensor \(or sequence\) of K real numbers",
    ),
    Case(
        "targets-GaussianMixture-weights-2d",
        lambda: sd.GaussianMixture([[1.0]], torch.zeros(1, 2)),
        ValueError,
        r"weights must be a non-empty 1-d tensor",
    ),
    Case(
        "targets-GaussianMixture-means-K",
        lambda: sd.GaussianMixture([0.5, 0.5], torch.zeros(3, 2)),
        ValueError,
        r"means must have shape \(K, \*event\) with K = 2",
    ),
    Case(
        "targets-GaussianMixture-means-none",
        lambda: sd.GaussianMixture([0.5, 0.5], None),
        TypeError,
        r"means must be a tensor of shape \(K, \*event\)",
    ),
    Case(
        "targets-GaussianMixture-means-nan",
        lambda: sd.GaussianMixture([1.0], [[NAN]]),
        ValueError,
        r"means must be finite",
    ),
    Case(
        "targets-GaussianMixture-stds-zero",
        lambda: sd.GaussianMixture([0.5, 0.5], torch.zeros(2, 2), [1.0, 0.0]),
        ValueError,
        r"stds must be positive and finite",
    ),
    Case(
        "targets-GaussianMixture-stds-shape",
        lambda: sd.GaussianMixture([0.5, 0.5], torch.zeros(2, 2), torch.ones(3, 3)),
        ValueError,
        r"stds of shape \(3, 3\) do not broadcast to means \(2, 2\)",
    ),
    Case(
        "targets-GaussianMixture-stds-string",
        lambda: sd.GaussianMixture([1.0], torch.zeros(1, 2), "1"),
        TypeError,
        r"stds must be a positive number or a tensor",
    ),
    Case("sde-targets-GaussianMixture-sample-n-negative", lambda: _M.sample(-1), ValueError, r"n must be >= 1"),
]
