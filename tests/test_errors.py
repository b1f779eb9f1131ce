"""Bad input gets a clear error (ValueError / TypeError) naming the argument."""

import math

import pytest
import torch
from helpers import processes

import sdesolve as sd
from sdesolve.sde import ddpm_betas
from sdesolve.testing import check_sde

IDS = ["vp", "subvp", "cosine", "ve", "vdm", "discrete"]
ALL = list(processes(*IDS).values())


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_time_outside_0_T(sde):
    x = torch.zeros(2, 3)
    for bad in (-0.1, sde.T + 0.01, torch.tensor([0.5, 1.5]), float("nan")):
        for call in (
            lambda t: sde.alpha(t),
            lambda t: sde.sigma(t),
            lambda t: sde.log_snr(t),
            lambda t: sde.f(t),
            lambda t: sde.g2(t),
            lambda t: sde.diffusion(t),
            lambda t: sde.drift(x, t),
            lambda t: sde.perturb(x, t, x),
            lambda t: sd.Gaussian(torch.zeros(3)).marginal_log_prob(x, t, sde),
            lambda t: sd.Gaussian(torch.zeros(3)).marginal_score(x, t, sde),
        ):
            with pytest.raises(ValueError, match=r"^t must (lie in \[0, |be finite)"):
                call(bad)
    # the ends themselves are fine
    assert torch.isfinite(sde.alpha(torch.tensor([0.0, sde.T], dtype=torch.float64))).all()


def test_mismatched_batch_of_t_and_x():
    sde = sd.VPSDE()
    x = torch.zeros(4, 2)
    t = torch.full((3,), 0.5)
    target = sd.Gaussian(torch.zeros(2))
    calls = [
        lambda: sde.drift(x, t),
        lambda: sde.perturb(x, t, x),
        lambda: sde.marginal_prob(x, t),
        lambda: target.marginal_score(x, t, sde),
        lambda: target.marginal_log_prob(x, t, sde),
        lambda: target.model(sde).eps(x, t),
        lambda: sd.ScoreModel(lambda x, t: x, sde).score(x, t),
        lambda: sde.reverse(target.model(sde)).drift(x, t),
        lambda: sde.probability_flow(lambda x, t: x).drift(x, t),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"t has 3 times but x has batch size 4"):
            call()


def test_integer_and_wrong_rank_inputs():
    sde = sd.VPSDE()
    with pytest.raises(TypeError, match="t must be a floating-point tensor, got dtype torch.int64"):
        sde.alpha(torch.tensor([1]))
    with pytest.raises(TypeError, match="t must be a float or a floating-point tensor, got bool"):
        sde.alpha(True)
    with pytest.raises(TypeError, match="t must be a float or a floating-point tensor, got str"):
        sde.sigma("0.5")
    with pytest.raises(
        ValueError, match=r"t must be a Python float, a 0-d tensor or a per-sample tensor of shape \(B,\)"
    ):
        sde.alpha(torch.full((2, 2), 0.5))
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got dtype torch.int64"):
        sde.drift(torch.zeros(2, 3, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        sde.perturb(torch.zeros(2, 3, dtype=torch.int32), 0.5, torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"x must have a batch dimension"):
        sde.drift(torch.tensor(1.0), 0.5)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        sd.Gaussian(torch.zeros(3)).marginal_score(torch.zeros(2, 3, dtype=torch.long), 0.5, sde)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        sd.ScoreModel(lambda x, t: x, sde).eps(torch.zeros(2, 3, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match="t must be a floating-point tensor"):
        sd.ScoreModel(lambda x, t: x, sde).eps(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="z must be a floating-point tensor"):
        sde.prior_logp(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        sde.prior_sample((2, 3), dtype=torch.long)
    with pytest.raises(ValueError, match="shape must be"):
        sde.prior_sample((0, 3))
    with pytest.raises(ValueError, match="noise must have the shape of x0"):
        sde.perturb(torch.zeros(2, 3), 0.5, torch.zeros(2, 4))


def test_bad_process_parameters():
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        sd.VESDE(sigma_min=50.0, sigma_max=50.0)
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        sd.VESDE(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="sigma_min must be a positive finite number"):
        sd.VESDE(sigma_min=0.0)
    with pytest.raises(ValueError, match="beta_min must be <= beta_max"):
        sd.VPSDE(beta_min=20.0, beta_max=0.1)
    with pytest.raises(ValueError, match="beta_min must be <= beta_max"):
        sd.SubVPSDE(beta_min=2.0, beta_max=1.0)
    for cls in (sd.VPSDE, sd.SubVPSDE):
        with pytest.raises(ValueError, match="beta_min must be a positive finite number"):
            cls(beta_min=0.0)
        with pytest.raises(ValueError, match="beta_max must be a positive finite number"):
            cls(beta_min=0.1, beta_max=-1.0)
        with pytest.raises(ValueError, match="t_min must lie in"):
            cls(t_min=1.0)
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        sd.DiscreteVPSDE(torch.tensor([0.1, 0.0, 0.2]))
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        sd.DiscreteVPSDE(torch.tensor([0.1, -0.2]))
    with pytest.raises(ValueError, match="alphas_cumprod must be strictly decreasing"):
        sd.DiscreteVPSDE(alphas_cumprod=torch.tensor([0.9, 0.95, 0.5]))
    with pytest.raises(ValueError, match="exactly one of betas or alphas_cumprod"):
        sd.DiscreteVPSDE()
    with pytest.raises(ValueError, match="beta_schedule must be"):
        ddpm_betas("cosine")
    with pytest.raises(ValueError, match="num_train_timesteps must be >= 1"):
        ddpm_betas("linear", 0)
    with pytest.raises(ValueError, match="gamma_min must be < gamma_max"):
        sd.FixedLinearGamma(5.0, -13.3)
    with pytest.raises(TypeError, match="gamma must be a GammaSchedule module"):
        sd.VDMSDE(gamma=lambda t: t)
    with pytest.raises(ValueError, match="s must be a positive finite number"):
        sd.CosineVPSDE(s=0.0)
    with pytest.raises(ValueError, match="log_snr_min must be a finite number"):
        sd.CosineVPSDE(log_snr_min=math.nan)


def test_bad_target_parameters():
    with pytest.raises(ValueError, match="weights must sum to 1"):
        sd.GaussianMixture([0.5, 0.6], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        sd.GaussianMixture([1.5, -0.5], torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"means must have shape \(K, \*event\) with K = 2"):
        sd.GaussianMixture([0.5, 0.5], torch.zeros(3, 2))
    with pytest.raises(ValueError, match="stds must be positive"):
        sd.GaussianMixture([0.5, 0.5], torch.zeros(2, 2), [1.0, 0.0])
    with pytest.raises(ValueError, match="stds must be positive"):
        sd.GaussianMixture([0.5, 0.5], torch.zeros(2, 2), -1.0)
    with pytest.raises(ValueError, match="std must be positive"):
        sd.Gaussian(torch.zeros(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="std must be positive"):
        sd.Gaussian(torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        sd.Gaussian(torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        sd.Gaussian(torch.zeros(2)).log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="n must be >= 1"):
        sd.Gaussian(torch.zeros(2)).sample(0)


def test_network_returning_the_wrong_shape():
    sde = sd.VESDE()
    m = sd.ScoreModel(lambda x, t: x.sum(1), sde, prediction="eps")
    with pytest.raises(ValueError, match=r"network returned shape \(3,\), expected the shape of x \(3, 2\)"):
        m.score(torch.zeros(3, 2), 0.5)


def test_check_sde_arguments():
    with pytest.raises(ValueError, match="kl_bound must be a positive number"):
        check_sde(sd.VPSDE(), kl_bound=0.0)
    with pytest.raises(ValueError, match="n_times must be >= 3"):
        check_sde(sd.VPSDE(), n_times=2)
    with pytest.raises(ValueError, match="rtol must lie in"):
        check_sde(sd.VPSDE(), rtol=0.0)
