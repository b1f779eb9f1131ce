"""Exact targets: scores against autograd of the log-density, log-densities against scipy on the
closed-form marginal, sample moments within standard errors, the exact probability-flow map."""

import math

import numpy as np
import pytest
import torch
from helpers import processes
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from scipy.special import logsumexp

import sdesolve as sd
from sdesolve.testing import sdes, times

F64 = torch.float64


def gaussian():
    return sd.Gaussian(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 1.0, 2.5]))


def mixture():
    return sd.GaussianMixture(
        [0.2, 0.5, 0.3],
        torch.tensor([[1.0, -1.0], [-2.0, 0.5], [0.0, 3.0]]),
        torch.tensor([[0.3, 0.5], [1.0, 1.0], [0.2, 2.0]]),
    )


def image_mixture():
    gen = torch.Generator().manual_seed(5)
    means = torch.randn(2, 3, 4, 4, generator=gen, dtype=F64)
    return sd.GaussianMixture([0.4, 0.6], means, torch.tensor([0.5, 1.2]))


TARGETS = {"gaussian": gaussian, "mixture": mixture, "image-mixture": image_mixture}


def sde_and_time():
    return sdes().flatmap(lambda s: st.tuples(st.just(s), times(s)))


@given(sde_and_time(), st.sampled_from(sorted(TARGETS)))
def test_score_is_gradient_of_marginal_log_prob(case, name):
    sde, t = case
    target = TARGETS[name]()
    gen = torch.Generator().manual_seed(0)
    x = target.marginal_sample(4, t, sde, generator=gen) + 0.3 * torch.randn(
        (4,) + target.event_shape, generator=gen, dtype=F64
    )
    xr = x.clone().requires_grad_(True)
    lp = target.marginal_log_prob(xr, t, sde)
    (grad,) = torch.autograd.grad(lp.sum(), xr)
    s = target.marginal_score(x, t, sde)
    assert s.shape == x.shape
    assert torch.allclose(s, grad, rtol=1e-9, atol=1e-9 * float(grad.abs().max()))
    # per-sample times, too
    tb = torch.linspace(sde.t_min, t, 4, dtype=F64)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.marginal_log_prob(xr, tb, sde).sum(), xr)
    assert torch.allclose(target.marginal_score(x, tb, sde), grad, rtol=1e-9, atol=1e-9 * float(grad.abs().max()))
    # the exact model's score view is the same
    assert torch.allclose(target.model(sde).score(x, tb), target.marginal_score(x, tb, sde), rtol=0, atol=0)


def _scipy_logp(target, x, a, s):
    """log p_t(x) on the closed-form marginal, with scipy (independent of sdesolve)."""
    x = x.numpy().reshape(x.shape[0], -1)
    if isinstance(target, sd.Gaussian):
        mu = a * target.mean.numpy().ravel()
        sd_ = np.sqrt(a * a * target.std.numpy().ravel() ** 2 + s * s)
        return stats.norm(mu, sd_).logpdf(x).sum(1)
    comps = []
    for w, m, c in zip(target.weights.numpy(), target.means.numpy(), target.stds.numpy()):
        cov = np.diag(a * a * c.ravel() ** 2 + s * s)
        comps.append(np.log(w) + stats.multivariate_normal(a * m.ravel(), cov).logpdf(x).reshape(-1))
    return logsumexp(np.stack(comps, 1), axis=1)


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize(
    "sde",
    list(processes("vp", "subvp", "cosine", "ve", "vdm", "discrete").values()),
    ids=["vp", "subvp", "cosine", "ve", "vdm", "discrete"],
)
def test_marginal_log_prob_matches_scipy(sde, name):
    target = TARGETS[name]()
    gen = torch.Generator().manual_seed(1)
    for t in (sde.t_min, 0.3, 0.7, sde.T):
        x = target.marginal_sample(5, t, sde, generator=gen)
        a, s = float(sde.alpha(t)), float(sde.sigma(t))
        ours = target.marginal_log_prob(x, t, sde)
        assert ours.shape == (5,)
        assert np.allclose(ours.numpy(), _scipy_logp(target, x, a, s), rtol=1e-10, atol=1e-10)
    x = target.sample(5, generator=gen)
    assert np.allclose(target.log_prob(x).numpy(), _scipy_logp(target, x, 1.0, 0.0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["gaussian", "mixture"])
@pytest.mark.parametrize("sde", list(processes("vp", "ve", "vdm").values()), ids=["vp", "ve", "vdm"])
def test_marginal_sample_moments(sde, name):
    target = TARGETS[name]()
    n, t = 20000, 0.4
    x = target.marginal_sample(n, t, sde, generator=torch.Generator().manual_seed(2))
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    if isinstance(target, sd.Gaussian):
        mean, var = a * target.mean, a * a * target.std**2 + s * s
    else:
        w = target.weights[:, None]
        m0 = (w * target.means).sum(0)
        v0 = (w * (target.stds**2 + target.means**2)).sum(0) - m0**2
        mean, var = a * m0, a * a * v0 + s * s
    # 5 standard errors; the variance's standard error from the sample's fourth central moment
    m4 = ((x - x.mean(0)) ** 4).mean(0)
    assert bool(((x.mean(0) - mean).abs() <= 5 * torch.sqrt(var / n)).all())
    assert bool(((x.var(0) - var).abs() <= 5 * torch.sqrt((m4 - var**2) / n)).all())
    assert x.dtype == F64 and x.shape == (n,) + target.event_shape


def test_sample_dtype_generator_and_event_shape():
    target = image_mixture()
    a = target.sample(6, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    b = target.sample(6, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    assert a.shape == (6, 3, 4, 4) and a.dtype == torch.float32 and torch.equal(a, b)
    assert target.dim == 48 and target.n_components == 2
    assert torch.allclose(target.mean(), 0.4 * target.means[0] + 0.6 * target.means[1])


@pytest.mark.parametrize("sde", list(processes("vp", "ve", "cosine").values()), ids=["vp", "ve", "cosine"])
def test_gaussian_flow_pushes_marginals_forward(sde):
    # The flow map is affine per coordinate; it must send N(m_from, v_from) to N(m_to, v_to)
    # exactly, and compose: flow(t1 -> t2) o flow(t0 -> t1) = flow(t0 -> t2).
    target = gaussian()
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    t0, t1, t2 = sde.t_min, 0.35, 0.9
    y = target.flow(x, t0, t2, sde)
    assert torch.allclose(target.flow(target.flow(x, t0, t1, sde), t1, t2, sde), y, rtol=1e-12)
    assert torch.allclose(target.flow(y, t2, t0, sde), x, rtol=1e-12)
    m0, v0 = target.marginal_moments(t0, sde)
    m2, v2 = target.marginal_moments(t2, sde)
    a2, s2 = float(sde.alpha(t2)), float(sde.sigma(t2))
    assert torch.allclose(m2, a2 * target.mean, rtol=1e-14)
    assert torch.allclose(v2, a2 * a2 * target.std**2 + s2 * s2, rtol=1e-14)
    # standardized coordinates are preserved
    assert torch.allclose((y - m2) / v2.sqrt(), (x - m0) / v0.sqrt(), rtol=1e-12)


def test_mixture_score_is_finite_far_from_the_modes():
    # responsibilities through a softmax of log-weights: no 0/0 far in the tails
    target = mixture()
    sde = sd.VPSDE()
    x = torch.tensor([[1e3, -1e3], [-50.0, 80.0]], dtype=F64)
    s = target.marginal_score(x, sde.t_min, sde)
    assert bool(torch.isfinite(s).all())
    lp = target.marginal_log_prob(x, sde.t_min, sde)
    assert bool(torch.isfinite(lp).all()) and float(lp[0]) < -1e5
    assert math.isfinite(float(target.log_prob(x.float())[1]))


def test_mean_is_an_attribute_of_both_laws():
    g, m = gaussian(), mixture()
    assert torch.equal(g.mean, torch.tensor([0.5, -1.0, 2.0], dtype=F64))
    expected = 0.2 * m.means[0] + 0.5 * m.means[1] + 0.3 * m.means[2]  # sum_k w_k mu_k
    torch.testing.assert_close(m.mean, expected, rtol=1e-15, atol=0)
    # an ordinary tensor in arithmetic: results are plain tensors
    assert type(m.mean * 2) is torch.Tensor and type(m.mean - g.mean[:2]) is torch.Tensor
    # the exact sample mean of each law agrees with it (6 standard errors of 20000 draws)
    x = m.sample(20000, generator=torch.Generator().manual_seed(1))
    se = x.std(0) / math.sqrt(x.shape[0])
    assert bool(((x.mean(0) - m.mean).abs() < 6 * se).all())


def test_the_old_mixture_mean_call_still_works_and_warns():
    m = mixture()
    with pytest.warns(DeprecationWarning, match=r"GaussianMixture\.mean is an attribute now"):
        old = m.mean()
    assert type(old) is torch.Tensor and torch.equal(old, m.mean)


def test_numpy_parameters_and_sizes_are_accepted():
    g = sd.Gaussian(np.array([0.0, 1.0]), np.float32(2.0))
    assert torch.equal(g.std, torch.full((2,), 2.0, dtype=F64))
    assert g.sample(np.int64(3)).shape == (3, 2)
    m = sd.GaussianMixture(np.array([0.25, 0.75]), np.zeros((2, 2)), np.float64(0.5))
    assert m.sample(np.int32(4)).shape == (4, 2)
