"""Forward processes: cases the mutation runs found untested (issue 14).

- VP and sub-VP with a constant beta (beta_min = beta_max, where the quadratic for t(log alpha) has no
  t^2 term) and with beta_max - beta_min = 1: the inverse of the log-SNR and of sigma / alpha is the
  time itself, and for a constant beta it is the closed form t = -2 log alpha / beta.
- The cosine process refuses a ``log_snr_min`` equal to the log-SNR at ``t_min``, or so near it that T
  rounds to t_min, and accepts one just below it with t_min < T, the float64 log-SNR deciding.

Every expected value is written from the papers' formulas (Song et al. 2021, eq. 29-33; Nichol &
Dhariwal 2021, eq. 17), independently of sdesolve's code.
"""

import math
import re

import pytest
import torch

import sdesolve as sd

F64 = torch.float64

#: (beta_min, beta_max): constant beta (three values, so a factor beta_min is not hidden by beta = 1),
#: beta_max - beta_min = 1 exactly, and the default schedule
_BETAS = [(1.0, 1.0), (0.5, 0.5), (7.0, 7.0), (1.0, 2.0), (0.25, 1.25), (0.1, 20.0)]


@pytest.mark.parametrize("cls", [sd.VPSDE, sd.SubVPSDE])
@pytest.mark.parametrize(("beta_min", "beta_max"), _BETAS)
def test_linear_beta_inverses_are_the_time_for_constant_and_unit_slope_beta(cls, beta_min, beta_max):
    """log alpha(t) = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2; the log-SNR is
    log(alpha^2 / (1 - alpha^2)) on VP and log(alpha^2 / (1 - alpha^2)^2) on sub-VP. Their inverses
    (t_of_log_snr, t_of_sigma_over_alpha) give t back to 1e-12 relative on [1e-6, 1] (the log-SNR is
    well conditioned there: |d lambda / d log t| >= 1e-1; sub-VP's closed form lost 2e-9 at t = 1e-6
    before it took log1p); for a constant beta the time is also -2 log alpha / beta, with alpha^2
    recovered from the log-SNR in closed form."""
    sde = cls(beta_min, beta_max, t_min=1e-6)
    t = torch.cat([torch.logspace(-6, 0, 25, dtype=F64), torch.linspace(0.03, 0.97, 33, dtype=F64)])
    log_alpha = -0.25 * (beta_max - beta_min) * t * t - 0.5 * beta_min * t
    a2, one_minus_a2 = torch.exp(2.0 * log_alpha), -torch.expm1(2.0 * log_alpha)  # no cancellation near t = 0
    var = one_minus_a2 if cls is sd.VPSDE else one_minus_a2**2
    lam = torch.log(a2 / var)
    torch.testing.assert_close(sde.log_snr(t), lam, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(sde.t_of_log_snr(lam), t, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(sde.t_of_sigma_over_alpha(torch.exp(-0.5 * lam)), t, rtol=1e-12, atol=0.0)
    if beta_min == beta_max:
        # -log alpha^2 from lambda, e = e^lambda: VP alpha^2 = e / (1 + e); sub-VP alpha^2 is the root in
        # (0, 1) of e (1 - a)^2 = a, 2e / (2e + 1 + sqrt(4e + 1)); through log1p (alpha^2 -> 1 as t -> 0)
        e = torch.exp(lam)
        w = 1.0 / e if cls is sd.VPSDE else (1.0 + torch.sqrt(4.0 * e + 1.0)) / (2.0 * e)
        torch.testing.assert_close(sde.t_of_log_snr(lam), torch.log1p(w) / beta_min, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("t_min", [1e-3, 1e-2, 0.3, 0.5])
def test_cosine_log_snr_min_must_lie_strictly_below_the_log_snr_at_t_min(t_min):
    """log_snr_min = lambda(t_min) (float64) is refused (T would be t_min). Below it, every accepted
    log_snr_min (0 to 60 float64 ulps below) gives t_min < T and lambda(T) = log_snr_min; one ulp below is
    accepted at t_min = 1e-3, 1e-2, 0.3, refused at 0.5, where lambda(t_min) = -0.025 has ulps of 3.5e-18
    and T rounds to t_min for the first 45 of them (the process would have no length). The float32 lambda(t_min) differs from the float64 one by 1e-8
    to 4e-7 at these t_min (above it at 1e-3 and 1e-2, below at 0.3), so deciding in float32 either
    accepts lambda(t_min) itself or refuses one ulp below it."""
    theta = lambda t: 0.5 * math.pi * (t + 0.008) / 1.008  # noqa: E731
    alpha2 = math.cos(theta(t_min)) ** 2 / math.cos(theta(0.0)) ** 2
    lam = float(sd.CosineVPSDE(t_min=t_min).log_snr(torch.tensor(t_min, dtype=F64)))
    assert lam == pytest.approx(math.log(alpha2 / (1.0 - alpha2)), rel=1e-12)
    message = rf"^log_snr_min must be below the log-SNR at t_min={t_min:g}, which is {lam:.6g} \(s=0\.008\), got "
    accepted, log_snr_min = [], lam
    for k in range(61):
        try:
            sde = sd.CosineVPSDE(t_min=t_min, log_snr_min=log_snr_min)
        except ValueError as e:
            assert re.match(message + re.escape(repr(log_snr_min)) + "$", str(e)), str(e)
        else:
            accepted.append(k)
            assert t_min < sde.T, (k, sde.T)
            assert float(sde.log_snr(torch.tensor(sde.T, dtype=F64))) == pytest.approx(log_snr_min, rel=1e-12)
        log_snr_min = math.nextafter(log_snr_min, -math.inf)
    assert 0 not in accepted
    assert (1 in accepted) == (t_min != 0.5), accepted
    assert accepted == list(range(accepted[0], 61)), accepted  # refused only within round-off of lambda(t_min)


@pytest.mark.gpu
def test_a_ddpm_process_cast_with_its_model_answers_device_times_from_float64_knots():
    """``ScoreModel(net, sde).to("cuda", torch.float16)`` casts the process's buffers too; alpha and f at
    device times must still come from the float64 knots: equal to the host answers and to the schedule's
    closed form, alpha_k^2 = prod_{i <= k} (1 - beta_i), to 1e-14 (float16 knots: 1e-3 off at t = 1).
    Also for a process cast to float32 without moving (its device times then use a cached float64 copy)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    log_alpha_knots = 0.5 * torch.cumsum(torch.log1p(-betas), 0)
    k = torch.tensor([0, 1, 17, 500, 998, 999])
    t = (k + 1.0).to(F64) / 1000  # the knots t_k = (k + 1) / N
    for cast in (lambda m: m.to("cuda", torch.float16), lambda m: m.to(torch.float32)):
        sde = sd.DiscreteVPSDE.from_schedule("linear", 1000)
        cast(sd.ScoreModel(torch.nn.Linear(2, 2), sde))
        assert sde.alphas_cumprod.dtype != F64  # the cast reached the process
        for tt in (t, t.cuda()):
            torch.testing.assert_close(sde.alpha(tt).cpu(), torch.exp(log_alpha_knots[k]), rtol=1e-14, atol=0.0)
            torch.testing.assert_close(sde.f(tt).cpu(), sde.f(t), rtol=1e-14, atol=0.0)
