"""Losses: VDM's variational bound (Kingma et al. 2021) and denoising score matching (Song et al.).

Ground truth: a Gaussian data law ``N(mu, diag(s^2))``. For a denoiser that is the linear
(Gaussian-posterior) estimator of a Gaussian ``N(mu', s'^2)`` -- a function of (z, SNR) --
the per-dimension error at SNR v is, for data with second moment ``m2 = E(x - mu')^2``::

    e(v) = E (x - x_hat)^2 = (m2 + v s'^4) / (1 + v s'^2)^2,

and the expected continuous diffusion loss is ``1/2 int_{v_1}^{v_0} e(v) dv`` (v = SNR, VDM eq. 15)
``= 1/2 [ln w - (m2 - s'^2) / (s'^2 w)]`` between ``w = 1 + v s'^2`` at v_0 = SNR(0) and v_1 = SNR(1):
it depends on the schedule only through its endpoints. The T-step loss has the exact expectation
``1/2 sum_i (v_{i-1} - v_i) e(v_i)``, a Riemann sum of the same integral.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from helpers import fit_slope
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import log_softmax
from scipy.stats import kstest, norm

import sdesolve
from sdesolve import VDMSDE, VESDE, VPSDE, FixedLinearGamma, Gaussian, LearnedMonotoneGamma, ScoreModel
from sdesolve.losses import (
    discrete_to_continuous,
    dsm_loss,
    sample_times,
    schedule_variance_loss,
    vdm_bits_per_dim,
    vdm_diffusion_loss,
    vdm_prior_loss,
    vdm_reconstruction_loss,
)
from sdesolve.sde.base import LinearSDE
from sdesolve.sde.vdm import LearnedScalarGamma

F64 = torch.float64
Z = 5.0  # z-score of the Monte-Carlo tolerances


# ----------------------------------------------------------------------- fixtures
def gaussian_denoiser(mu, s):
    """eps_hat(z, gamma) of the Gaussian N(mu, diag s^2): a function of (z, SNR) only."""
    mu = torch.as_tensor(mu, dtype=F64)
    s2 = torch.as_tensor(s, dtype=F64) ** 2

    def net(z, gamma):
        a2 = torch.sigmoid(-gamma)[:, None]
        v2 = torch.sigmoid(gamma)[:, None]
        a, sig = a2.sqrt(), v2.sqrt()
        x0_hat = mu + a * s2 / (a2 * s2 + v2) * (z - a * mu)
        return (z - a * x0_hat) / sig

    return net


def gamma_model(sde, mu, s):
    """A ScoreModel of sde whose network sees gamma(t) = -log SNR(t)."""
    return ScoreModel(gaussian_denoiser(mu, s), sde, prediction="eps", time_input=lambda t: -sde._log_snr(t))


def expected_continuous(m2, s_model, g0, g1):
    """1/2 int_{SNR(1)}^{SNR(0)} e(v) dv, summed over dimensions (closed form)."""
    m2, sp2 = np.asarray(m2, float), np.asarray(s_model, float) ** 2

    def prim(v):
        w = 1 + v * sp2
        return np.log(w) - (m2 - sp2) / (sp2 * w)

    return float(0.5 * (prim(math.exp(-g0)) - prim(math.exp(-g1))).sum())


def expected_discrete(m2, s_model, gammas):
    """1/2 sum_i (v_{i-1} - v_i) e(v_i) on the grid gammas[0..T], summed over dimensions."""
    m2, sp2 = np.asarray(m2, float)[None], np.asarray(s_model, float)[None] ** 2
    v = np.exp(-np.asarray(gammas, float))[:, None]
    e = (m2 + v * sp2**2) / (1 + v * sp2) ** 2
    return float(0.5 * ((v[:-1] - v[1:]) * e[1:]).sum())


def random_monotone(seed, scale, g0, g1, n_features=8):
    gen = torch.Generator().manual_seed(seed)
    sched = LearnedMonotoneGamma(g0, g1, n_features=n_features, learn_endpoints=False, dtype=F64)
    with torch.no_grad():
        for p in sched.shape_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * scale)
    return sched


def mc_check(values, expect, z=Z):
    mean = float(values.mean())
    se = float(values.std()) / math.sqrt(values.numel())
    assert abs(mean - expect) <= z * se + 1e-12, f"mean {mean:.6g} vs exact {expect:.6g} (se {se:.3g})"
    return mean, se


MU = torch.tensor([0.3, -0.5, 0.0], dtype=F64)
S = torch.tensor([0.5, 1.0, 0.2], dtype=F64)
DATA = Gaussian(MU, S)


# ------------------------------------------------- schedule invariance (VDM eq. 15)
@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from([0.0, 0.5, 2.0, 5.0]),
    st.floats(-12.0, -4.0),
    st.floats(1.0, 6.0),
    st.booleans(),
)
def test_continuous_loss_is_invariant_to_the_schedule_between_endpoints(seed, scale, g0, g1, optimal):
    """Random monotone schedules with the same endpoints give the same expected loss (exact value)."""
    gen = torch.Generator().manual_seed(seed)
    sched = random_monotone(seed, scale, g0, g1) if scale > 0 else FixedLinearGamma(g0, g1)
    sde = VDMSDE(sched)
    s_model = S if optimal else 1.7 * S + 0.05  # a suboptimal denoiser is invariant too
    model = gamma_model(sde, MU, s_model)
    x0 = DATA.sample(2000, generator=gen)
    with torch.no_grad():
        loss = vdm_diffusion_loss(model, x0, generator=gen, antithetic=False)
    exact = expected_continuous(S.numpy() ** 2, s_model.numpy(), g0, g1)
    mc_check(loss, exact)


def test_two_schedules_agree_and_differ_in_variance():
    """Fixed-linear and a bent monotone schedule: equal means (to MC precision), different variances."""
    gen = torch.Generator().manual_seed(0)
    x0 = DATA.sample(40000, generator=gen)
    out = {}
    bent = LearnedMonotoneGamma(-10.0, 5.0, n_features=4, learn_endpoints=False, dtype=F64)
    with torch.no_grad():  # most of the change of gamma in a steep step near t = 1/2
        bent.l1.weight.fill_(0.05)
        bent.l2.weight.fill_(20.0)
        bent.l2.bias.zero_()
        bent.l3.weight.fill_(1.0)
    for name, sched in [("linear", FixedLinearGamma(-10.0, 5.0)), ("bent", bent)]:
        sde = VDMSDE(sched)
        with torch.no_grad():
            out[name] = vdm_diffusion_loss(gamma_model(sde, MU, S), x0, generator=gen, antithetic=False)
    a, b = out["linear"], out["bent"]
    se = math.sqrt(float(a.var()) / a.numel() + float(b.var()) / b.numel())
    assert abs(float(a.mean() - b.mean())) <= Z * se
    exact = expected_continuous(S.numpy() ** 2, S.numpy(), -10.0, 5.0)
    mc_check(a, exact)
    mc_check(b, exact)
    assert float(b.var()) > 2 * float(a.var())  # the schedule changes the variance, not the mean


def test_antithetic_times_are_unbiased_and_reduce_variance():
    sde = VDMSDE(FixedLinearGamma(-10.0, 5.0))
    model = gamma_model(sde, MU, S)
    exact = expected_continuous(S.numpy() ** 2, S.numpy(), -10.0, 5.0)
    gen = torch.Generator().manual_seed(1)
    t = sample_times(8, antithetic=True, generator=gen)
    spacing = torch.sort(t).values.diff()
    torch.testing.assert_close(spacing, torch.full_like(spacing, 1 / 8))  # one uniform shift of a lattice
    means = {}
    for anti in (True, False):
        reps = []
        for _ in range(300):
            x0 = DATA.sample(32, generator=gen)
            with torch.no_grad():
                reps.append(vdm_diffusion_loss(model, x0, generator=gen, antithetic=anti).mean())
        means[anti] = torch.stack(reps)
        mc_check(means[anti], exact)  # batch means are iid across replications
    assert float(means[True].var()) < float(means[False].var())


# ------------------------------------------------------------- discrete time
@pytest.mark.parametrize("T", [1, 4, 32])
def test_discrete_loss_expectation_is_exact(T):
    sched = random_monotone(3, 2.0, -9.0, 4.0)
    sde = VDMSDE(sched)
    model = gamma_model(sde, MU, S)
    gen = torch.Generator().manual_seed(T)
    x0 = DATA.sample(20000, generator=gen)
    with torch.no_grad():
        loss = vdm_diffusion_loss(model, x0, n_steps=T, generator=gen, antithetic=False)
        gammas = sched(torch.linspace(0, 1, T + 1, dtype=F64)).numpy()
    exact = expected_discrete(S.numpy() ** 2, S.numpy(), gammas)
    mc_check(loss, exact)
    assert exact > expected_continuous(S.numpy() ** 2, S.numpy(), -9.0, 4.0)  # fewer steps, larger loss


def test_discrete_loss_converges_to_continuous_at_rate_one_over_T():
    """Common random numbers: each (x0, eps) pair is summed over the whole grid; the continuous
    loss of the same pairs is integrated over t by Gauss-Legendre. The gap is O(1/T)."""
    sched = random_monotone(5, 1.0, -9.0, 4.0)
    sde = VDMSDE(sched)
    model = gamma_model(sde, MU, S)
    gen = torch.Generator().manual_seed(2)
    n = 100
    x0 = DATA.sample(n, generator=gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)

    def per_pair(t, w, T=None):
        m = t.numel()
        xs, es = x0.repeat_interleave(m, 0), eps.repeat_interleave(m, 0)
        with torch.no_grad():
            loss = vdm_diffusion_loss(model, xs, n_steps=T, t=t.repeat(n), noise=es)
        return (loss.reshape(n, m) * w).sum(1)

    # continuous: composite 8-point Gauss-Legendre on 64 panels of [0, 1]
    nodes, weights = np.polynomial.legendre.leggauss(8)
    edges = np.linspace(0, 1, 65)
    tq = ((edges[:-1, None] + edges[1:, None]) / 2 + (edges[1:, None] - edges[:-1, None]) / 2 * nodes).ravel()
    wq = ((edges[1:, None] - edges[:-1, None]) / 2 * weights).ravel()
    cont = per_pair(torch.tensor(tq), torch.tensor(wq))
    Ts = [32, 64, 128, 256, 512]  # (T = 8, 16 are pre-asymptotic: gap ratios 2.7, 2.3)
    gaps = []
    for T in Ts:
        grid = torch.arange(1, T + 1, dtype=F64) / T
        gaps.append(float((per_pair(grid, torch.full((T,), 1.0 / T, dtype=F64), T=T) - cont).mean()))
    gaps = np.array(gaps)
    assert (gaps > 0).all()
    slope = fit_slope(Ts, gaps)  # d log(gap) / d log(T)
    assert -1.1 < slope < -0.9, (slope, gaps)
    # the continuous quadrature of the common numbers is an unbiased draw of the exact expectation
    mc_check(cont, expected_continuous(S.numpy() ** 2, S.numpy(), -9.0, 4.0))


# ------------------------------------------------------- prior and reconstruction
def test_prior_loss_equals_gaussian_kl():
    for sde in (VDMSDE(FixedLinearGamma(-13.3, 5.0)), VDMSDE(LearnedScalarGamma(-5.0, 1.0, dtype=F64)), VESDE()):
        x0 = DATA.sample(16, generator=torch.Generator().manual_seed(0))
        got = vdm_prior_loss(sde, x0)
        m, s = sde.marginal_prob(x0, 1.0)
        q = torch.distributions.Normal(m, s)
        p = torch.distributions.Normal(torch.zeros_like(m), torch.full_like(m, sde.prior_std))
        expect = torch.distributions.kl_divergence(q, p).sum(1)
        torch.testing.assert_close(got, expect.detach(), rtol=1e-10, atol=1e-12)


def _exact_reconstruction(k, vocab, g0):
    """E_eps[-log p(x = k | z_0)] per value k, by Gauss-Hermite quadrature (scipy, independent code)."""
    x, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    c = 2 * (np.arange(vocab) + 0.5) / vocab - 1
    tau = math.exp(g0 / 2)
    y = c[k] + tau * x
    lp = log_softmax(-0.5 * ((y[:, None] - c[None]) / tau) ** 2, axis=1)[:, k]
    return float(-(w * lp).sum())


@pytest.mark.parametrize("g0", [-13.3, -6.0, -3.0])
def test_reconstruction_loss_matches_quadrature(g0):
    vocab = 17
    sde = VDMSDE(FixedLinearGamma(g0, 5.0))
    gen = torch.Generator().manual_seed(0)
    k = torch.randint(0, vocab, (20000, 2), generator=gen)
    got = vdm_reconstruction_loss(sde, k, vocab, generator=gen, dtype=F64)
    per_value = np.array([_exact_reconstruction(j, vocab, g0) for j in range(vocab)])
    exact = per_value[k.numpy()].sum(1)
    if g0 < -10:  # noise far below the bin width: nothing is lost
        assert float(got.max()) < 1e-12
    else:
        resid = got - torch.tensor(exact)
        mc_check(resid, 0.0)
    # a given eps reproduces the decoder's formula exactly
    eps = torch.randn(k.shape, generator=gen, dtype=F64)
    one = vdm_reconstruction_loss(sde, k, vocab, noise=eps, dtype=F64)
    c = 2 * (np.arange(vocab) + 0.5) / vocab - 1
    tau = math.exp(g0 / 2)
    y = c[k.numpy()] + tau * eps.numpy()
    lp = log_softmax(-0.5 * ((y[..., None] - c) / tau) ** 2, axis=-1)
    ref = -np.take_along_axis(lp, k.numpy()[..., None], -1)[..., 0].sum(1)
    np.testing.assert_allclose(one.numpy(), ref, rtol=1e-10, atol=1e-12)


# -------------------------------------------- the bound on discretized Gaussian data
V = 17
MU_D, S_D = 0.1, 0.3  # the underlying Gaussian, in the (-1, 1) data space


def discretized_gaussian():
    """P(k) = mass of N(MU_D, S_D^2) on bin k of (-1, 1) (outer bins extended to +-inf)."""
    edges = -1 + 2 * np.arange(V + 1) / V
    edges[0], edges[-1] = -np.inf, np.inf
    p = np.diff(norm.cdf((edges - MU_D) / S_D))
    return p, 2 * (np.arange(V) + 0.5) / V - 1


def exact_bound(g0, g1, dims):
    """The bound's expectation in nats: diffusion (closed form), prior (closed form), recon (quadrature)."""
    p, c = discretized_gaussian()
    m2 = float((p * (c - MU_D) ** 2).sum())
    diffusion = dims * expected_continuous([m2], [S_D], g0, g1)
    var1 = 1 / (1 + math.exp(-g1))
    prior = dims * 0.5 * (var1 + (1 - var1) * float((p * c**2).sum()) - math.log(var1) - 1)
    recon = dims * sum(p[k] * _exact_reconstruction(k, V, g0) for k in range(V))
    return diffusion, prior, recon


def test_vlb_upper_bounds_the_exact_nll_of_discretized_gaussian_data():
    """With the exact denoiser of the underlying Gaussian, E[VLB] >= H(P) (the exact NLL), and with
    gamma(0) at its best value the gap is 0.0147 nats/dim (0.6% of H); the bound's terms computed by
    vdm_bits_per_dim agree with their exact expectations."""
    p, _ = discretized_gaussian()
    entropy = float(-(p * np.log(p)).sum())  # nats per dimension
    g1 = 5.0
    gap = {g0: sum(exact_bound(g0, g1, 1)) - entropy for g0 in (-13.3, -10.0, -8.0, -7.0, -6.0, -5.0, -4.0)}
    assert all(v > 0 for v in gap.values())  # an upper bound for every schedule
    assert 0.0 < gap[-6.0] < 0.02  # and close at the best gamma(0)
    assert gap[-13.3] > 3.0  # VDM's default gamma(0) is far too small for 17 levels with this denoiser

    dims, n = 4, 20000
    sde = VDMSDE(FixedLinearGamma(-6.0, g1))
    model = gamma_model(sde, torch.full((dims,), MU_D, dtype=F64), torch.full((dims,), S_D, dtype=F64))
    gen = torch.Generator().manual_seed(0)
    k = torch.multinomial(torch.tensor(p), n * dims, replacement=True, generator=gen).reshape(n, dims)
    with torch.no_grad():
        out = vdm_bits_per_dim(model, k, V, generator=gen, antithetic=False, dtype=F64)
    diffusion, prior, recon = exact_bound(-6.0, g1, dims)
    # the data here are sampled, so each term's exact expectation is checked to MC precision
    mc_check(out.diffusion, diffusion)
    mc_check(out.reconstruction, recon)
    mc_check(out.prior, prior)
    mc_check(out.bits_per_dim, (diffusion + prior + recon) / (dims * math.log(2)))
    torch.testing.assert_close(out.bits_per_dim, out.nats / (dims * math.log(2)))
    assert float(out.bits_per_dim.mean()) > entropy / math.log(2)


# ------------------------------------------------------ variance-reduction trick
def test_schedule_variance_loss_routes_gradients():
    """Value = diffusion loss; network and endpoints get dL, shape parameters get d(L^2)."""
    torch.manual_seed(0)
    sched = LearnedMonotoneGamma(-8.0, 4.0, n_features=16, learn_endpoints=True, init_std=1.0, dtype=F64)
    sde = VDMSDE(sched)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()

    def eps_net(z, g):
        return net(torch.cat([z, g[:, None] / 10], 1))

    model = ScoreModel(eps_net, sde, prediction="eps", time_input=sde.gamma)
    gen = torch.Generator().manual_seed(1)
    x0 = DATA.sample(8, generator=gen)
    t = torch.rand(8, generator=gen, dtype=F64)
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)
    shape = sched.shape_parameters()
    rest = [sched.gamma_start, sched.gamma_width] + list(net.parameters())

    surrogate = schedule_variance_loss(model, x0, t=t, noise=eps)
    g_sur = torch.autograd.grad(surrogate.sum(), shape + rest)
    plain = vdm_diffusion_loss(model, x0, t=t, noise=eps)
    torch.testing.assert_close(surrogate.detach(), plain.detach(), rtol=0, atol=0)
    g_sq = torch.autograd.grad((plain**2).sum(), shape, retain_graph=True)
    g_lin = torch.autograd.grad(plain.sum(), rest)
    for a, b in zip(g_sur[: len(shape)], g_sq):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert float(a.abs().sum()) > 0
    for a, b in zip(g_sur[len(shape) :], g_lin):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # outside the call the schedule is back to plain gradients
    assert getattr(sched, "_grad_scale", None) is None
    with pytest.raises(ValueError, match="no shape parameters"):
        schedule_variance_loss(gamma_model(VDMSDE(FixedLinearGamma()), MU, S), x0)


@pytest.mark.slow
def test_variance_training_reduces_variance_and_keeps_the_mean():
    """Train only the schedule's shape by schedule_variance_loss with the exact denoiser fixed:
    the estimator's variance falls while its mean stays the exact, schedule-free value."""
    torch.manual_seed(0)
    g0, g1 = -10.0, 5.0
    sched = LearnedMonotoneGamma(g0, g1, n_features=64, learn_endpoints=False, dtype=F64)
    sde = VDMSDE(sched)
    model = gamma_model(sde, MU, S)
    exact = expected_continuous(S.numpy() ** 2, S.numpy(), g0, g1)
    gen = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(sched.shape_parameters(), lr=3e-2)

    def variance(n=40000):
        with torch.no_grad():
            loss = vdm_diffusion_loss(model, DATA.sample(n, generator=gen), generator=gen, antithetic=False)
        mc_check(loss, exact)
        return float(loss.var())

    before = variance()
    for _ in range(300):
        opt.zero_grad()
        schedule_variance_loss(model, DATA.sample(256, generator=gen), generator=gen).mean().backward()
        opt.step()
    after = variance()
    assert after < 0.7 * before, (before, after)


# ------------------------------------------------------ denoising score matching
def _dsm_exact(sde, lam, s_true, s_model, eps_t):
    """E_t of the DSM loss for N(mu, s_true^2) data and the Gaussian score of N(mu, s_model^2)."""

    def integrand(t):
        t64 = torch.tensor(t, dtype=F64)
        a2 = float(torch.exp(2 * sde._log_alpha(t64)))
        s2 = float(torch.exp(2 * sde._log_sigma(t64)))
        weight = s2 if lam == "sigma2" else float(sde._g2(t64))
        v = a2 * s_true**2 + s2  # variance of p_t
        vm = a2 * s_model**2 + s2  # variance the model believes in
        irreducible = (1 / s2 - 1 / v).sum()
        excess = ((1 / vm - 1 / v) ** 2 * v).sum()
        return 0.5 * weight * (irreducible + excess)

    T = float(sde.T)
    val, _ = integrate.quad(integrand, eps_t, T, limit=200, epsabs=1e-11, epsrel=1e-10)
    return val / (T - eps_t)


@pytest.mark.parametrize(
    "sde,lam",
    [(VPSDE(), "sigma2"), (VPSDE(), "g2"), (VESDE(), "sigma2"), (VDMSDE(FixedLinearGamma(-10.0, 5.0)), "g2")],
)
def test_dsm_loss_minimum_at_the_true_score(sde, lam):
    eps_t = 1e-2
    s_true = S.numpy()
    gen = torch.Generator().manual_seed(0)
    x0 = DATA.sample(20000, generator=gen)
    t = eps_t + (1 - eps_t) * torch.rand(x0.shape[0], generator=gen, dtype=F64)
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)
    wrong = Gaussian(MU, 1.5 * S)
    kw = dict(likelihood_weighting=lam == "g2", t_min=eps_t, t=t, noise=eps)
    with torch.no_grad():
        best = dsm_loss(DATA.model(sde), x0, **kw)
        worse = dsm_loss(wrong.model(sde), x0, **kw)
    mc_check(best, _dsm_exact(sde, lam, s_true, s_true, eps_t))
    mc_check(
        worse - best, _dsm_exact(sde, lam, s_true, 1.5 * s_true, eps_t) - _dsm_exact(sde, lam, s_true, s_true, eps_t)
    )
    assert float(worse.mean()) > float(best.mean())
    # reduce="mean" and the default time sampling
    with torch.no_grad():
        m = dsm_loss(DATA.model(sde), x0, likelihood_weighting=lam == "g2", t_min=eps_t, generator=gen, reduce="mean")
    assert m.dim() == 0
    assert abs(float(m) - _dsm_exact(sde, lam, s_true, s_true, eps_t)) <= Z * float(best.std()) / math.sqrt(x0.shape[0])


# ----------------------------------------------------------------- bad input
def test_bad_arguments():
    sde = VDMSDE()
    model = gamma_model(sde, MU, S)
    x0 = DATA.sample(4)
    with pytest.raises(TypeError, match="ScoreModel"):
        vdm_diffusion_loss(lambda x, t: x, x0)
    with pytest.raises(ValueError, match="n_steps must be None"):
        vdm_diffusion_loss(model, x0, n_steps=0)
    with pytest.raises(ValueError, match="grid"):
        vdm_diffusion_loss(model, x0, n_steps=4, t=torch.full((4,), 0.3, dtype=F64))
    with pytest.raises(ValueError, match="noise"):
        vdm_diffusion_loss(model, x0, noise=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="vocab_size"):
        vdm_reconstruction_loss(sde, torch.zeros(2, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="integers in"):
        vdm_reconstruction_loss(sde, torch.full((2, 3), 17), 17)
    with pytest.raises(ValueError, match="integers in"):
        vdm_bits_per_dim(model, torch.full((2, 3), 0.5), 17)
    with pytest.raises(ValueError, match="reduce"):
        dsm_loss(model, x0, reduce="sum")
    with pytest.raises(ValueError, match="t_min"):
        dsm_loss(model, x0, t_min=1.0)
    with pytest.raises(TypeError, match="LinearSDE"):
        vdm_prior_loss(object(), x0)
    torch.testing.assert_close(
        discrete_to_continuous(torch.tensor([0, 16]), 17), torch.tensor([-1 + 1 / 17, 1 - 1 / 17])
    )


def test_renamed_keywords_keep_their_old_names_for_a_release():
    """n_steps= (was T=) and t_min= (was eps_t=): both spellings give the same loss; the old warns."""
    sde = VDMSDE()
    model = gamma_model(sde, MU, S)
    x0 = DATA.sample(4)
    t = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=F64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=x0.dtype)
    new = vdm_diffusion_loss(model, x0, n_steps=4, t=t, noise=noise)
    with pytest.warns(DeprecationWarning, match=r"T=.*n_steps="):
        old = vdm_diffusion_loss(model, x0, T=4, t=t, noise=noise)
    torch.testing.assert_close(new, old, rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match=r"T=.*n_steps="):
        old_times = sample_times(8, T=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample_times(8, n_steps=4, generator=torch.Generator().manual_seed(0)), old_times)
    x_int = torch.randint(0, 17, (4, 3), generator=torch.Generator().manual_seed(2))
    b_new = vdm_bits_per_dim(model, x_int, 17, n_steps=4, generator=torch.Generator().manual_seed(3))
    with pytest.warns(DeprecationWarning, match=r"T=.*n_steps="):
        b_old = vdm_bits_per_dim(model, x_int, 17, T=4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(b_new.bits_per_dim, b_old.bits_per_dim, rtol=0, atol=0)
    vp = VPSDE()
    vpm = DATA.model(vp)
    t = torch.full((4,), 0.5, dtype=F64)
    d_new = dsm_loss(vpm, x0, t_min=0.01, generator=torch.Generator().manual_seed(4))
    with pytest.warns(DeprecationWarning, match=r"eps_t=.*t_min="):
        d_old = dsm_loss(vpm, x0, eps_t=0.01, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(d_new, d_old, rtol=0, atol=0)
    with pytest.raises(TypeError, match="both n_steps= and its deprecated alias T="):
        vdm_diffusion_loss(model, x0, n_steps=4, T=4)
    with pytest.raises(TypeError, match="both t_min= and its deprecated alias eps_t="):
        dsm_loss(vpm, x0, t_min=0.1, eps_t=0.1)


def test_gamma_and_its_derivative_come_from_the_process():
    """The loss's weight is the process's own gamma' (sde._gamma_prime), for VDM and for VP alike."""
    x0 = DATA.sample(3)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=x0.dtype)
    for sde in (VDMSDE(), VPSDE()):
        model = DATA.model(sde)
        loss = vdm_diffusion_loss(model, x0, t=t, noise=noise)
        a = torch.exp(sde._log_alpha(t)).unsqueeze(-1)
        s = torch.exp(sde._log_sigma(t)).unsqueeze(-1)
        z = a * x0 + s * noise
        want = 0.5 * sde._gamma_prime(t) * ((noise - model.eps(z, t)) ** 2).sum(-1)
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
        if isinstance(sde, VDMSDE):  # sigma(0) > 0: the discrete loss is defined
            loss10 = vdm_diffusion_loss(model, x0, n_steps=10, t=t, noise=noise)
            w = 0.5 * 10 * torch.expm1(sde._gamma(t) - sde._gamma(t - 0.1))
            torch.testing.assert_close(loss10, w * ((noise - model.eps(z, t)) ** 2).sum(-1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_times_where_sigma_is_zero_are_refused_not_nan(sde):
    """t = 0 on VP (sigma = 0): the score target and gamma' are infinite there; a clear error, no NaN.

    score_sde samples t in [eps, T]; times above 0 keep finite losses, and VDM (sigma(0) > 0) keeps t = 0.
    """
    x0 = DATA.sample(3)
    model = DATA.model(sde)
    t0 = torch.tensor([0.0, 0.5, 0.9], dtype=F64)
    if isinstance(sde, VPSDE):
        with pytest.raises(ValueError, match=r"t must be > 0 where sigma\(t\) = 0"):
            dsm_loss(model, x0, t=t0)
        with pytest.raises(ValueError, match=r"t_min must be > 0 where sigma\(t_min\) = 0"):
            dsm_loss(model, x0, t_min=0.0)
        with pytest.raises(ValueError, match=r"t must be > 0 where sigma\(t\) = 0"):
            vdm_diffusion_loss(model, x0, t=t0)
        with pytest.raises(ValueError, match=r"n_steps=4: .*sigma\(0\) = 0"):
            vdm_diffusion_loss(model, x0, n_steps=4)
    t_small = torch.tensor([1e-6, 0.5, 0.9], dtype=F64)
    assert torch.isfinite(dsm_loss(model, x0, t=t_small)).all()
    assert torch.isfinite(dsm_loss(model, x0, t=t_small, likelihood_weighting=True)).all()
    if isinstance(sde, VPSDE):
        assert torch.isfinite(vdm_diffusion_loss(model, x0, t=t_small)).all()
    vdm = VDMSDE()
    out = vdm_diffusion_loss(DATA.model(vdm), x0, t=t0)
    assert torch.isfinite(out).all()
    assert torch.isfinite(dsm_loss(DATA.model(vdm), x0, t=t0)).all()


def test_empty_batch_and_numpy_scalars():
    sde = VDMSDE()
    model = gamma_model(sde, MU, S)
    empty = torch.zeros(0, 2, dtype=F64)
    for call in (
        lambda: vdm_diffusion_loss(model, empty),
        lambda: dsm_loss(model, empty),
        lambda: vdm_prior_loss(sde, empty),
        lambda: schedule_variance_loss(gamma_model(VDMSDE(LearnedMonotoneGamma()), MU, S), empty),
    ):
        with pytest.raises(ValueError, match=r"x0 must hold at least one example"):
            call()
    with pytest.raises(ValueError, match=r"x_int must hold at least one example"):
        vdm_bits_per_dim(model, torch.zeros(0, 3, dtype=torch.long), 17)
    x0 = DATA.sample(4)
    t = torch.full((4,), 0.5, dtype=F64)
    noise = torch.zeros_like(x0)
    torch.testing.assert_close(
        vdm_diffusion_loss(model, x0, n_steps=np.int64(4), t=t, noise=noise),
        vdm_diffusion_loss(model, x0, n_steps=4, t=t, noise=noise),
    )
    vp = DATA.model(VPSDE())
    g = torch.Generator().manual_seed(0)
    a = dsm_loss(vp, x0, t_min=np.float32(0.25), generator=g)
    b = dsm_loss(vp, x0, t_min=float(np.float32(0.25)), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    x_int = torch.randint(0, 17, (2, 3))
    vdm_reconstruction_loss(sde, x_int, np.int64(17), generator=torch.Generator().manual_seed(0))


@pytest.mark.gpu
def test_losses_on_cuda_without_host_device_synchronization():
    """The bound, the variance-trick loss and their backward run on the GPU with no synchronization."""
    dev = torch.device("cuda")
    sched = LearnedMonotoneGamma(-8.0, 4.0, n_features=64, learn_endpoints=True).to(dev)
    sde = VDMSDE(sched)
    net = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.SiLU(), torch.nn.Linear(32, 4)).to(dev)
    model = ScoreModel(lambda z, g: net(torch.cat([z, g[:, None]], 1)), sde, prediction="eps", time_input=sched)
    gen = torch.Generator(device=dev).manual_seed(0)
    k = torch.randint(0, 17, (64, 4), generator=gen, device=dev)
    x = discrete_to_continuous(k, 17)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = vdm_bits_per_dim(model, k, 17, generator=gen)
        for T in (None, 16):
            out = vdm_diffusion_loss(model, x, n_steps=T, generator=gen)
        loss = (
            schedule_variance_loss(model, x, generator=gen)
            + vdm_prior_loss(sde, x)
            + vdm_reconstruction_loss(sde, k, 17, generator=gen)
        ).mean()
        loss.backward()
        d = dsm_loss(model, x, likelihood_weighting=True, generator=gen, reduce="mean")
    finally:
        torch.cuda.set_sync_debug_mode(0)
    # times given on the host are moved to the data's device
    d_host_t = dsm_loss(model, x, t=torch.rand(64, dtype=torch.float64) * 0.9 + 0.05, generator=gen)
    assert d_host_t.device == x.device and torch.isfinite(d_host_t).all()
    assert torch.isfinite(out).all() and torch.isfinite(d)
    assert all(p.grad is not None for p in sched.parameters())


# ------------------------------------------------------ defaults and pass-through (mutation testing, issue 14)
def test_schedule_variance_loss_is_the_diffusion_loss_with_the_same_draws():
    """Its value is vdm_diffusion_loss's for the same generator (times and noise drawn alike), antithetic
    (the default, as for vdm_diffusion_loss) or not; the gradient trick changes only the backward."""
    sde = VDMSDE(LearnedMonotoneGamma(-8.0, 4.0, n_features=8, init_std=1.0, dtype=F64))
    model = gamma_model(sde, MU, S)
    x0 = DATA.sample(6, generator=torch.Generator().manual_seed(0))

    def g():
        return torch.Generator().manual_seed(3)

    ref = {a: vdm_diffusion_loss(model, x0, generator=g(), antithetic=a).detach() for a in (True, False)}
    assert not torch.equal(ref[True], ref[False])
    for a in (True, False):
        assert torch.equal(schedule_variance_loss(model, x0, generator=g(), antithetic=a).detach(), ref[a])
    assert torch.equal(schedule_variance_loss(model, x0, generator=g()).detach(), ref[True])


def test_vdm_bits_per_dim_defaults_one_silent_pass_and_names_itself_in_the_deprecation(capfd):
    """By default one Monte-Carlo pass (n_repeats=1) and no progress output; the deprecated T= warns
    with the function's own name."""
    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    model = gamma_model(sde, torch.full((4,), MU_D, dtype=F64), torch.full((4,), S_D, dtype=F64))
    k = torch.randint(0, V, (5, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        capfd.readouterr()
        default = vdm_bits_per_dim(model, k, V, generator=torch.Generator().manual_seed(1), dtype=F64)
        out, err = capfd.readouterr()
        one = vdm_bits_per_dim(model, k, V, generator=torch.Generator().manual_seed(1), dtype=F64, n_repeats=1)
        with pytest.warns(DeprecationWarning, match=r"^vdm_bits_per_dim\(T=\.\.\.\) is deprecated .* use n_steps="):
            vdm_bits_per_dim(model, k, V, T=10, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert (out, err) == ("", "")
    assert torch.equal(default.bits_per_dim, one.bits_per_dim)


def test_vdm_bits_per_dim_averages_its_passes_and_passes_its_options_on():
    """``n_repeats`` passes, each a reconstruction draw then a diffusion draw from the one generator (the
    order the docstring gives), averaged; ``n_steps``, ``antithetic`` and ``dtype`` reach every term; the
    prior is exact. Reference: the terms called one by one with the same generator (float64, 1e-12)."""
    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    model = gamma_model(sde, torch.full((4,), MU_D, dtype=F64), torch.full((4,), S_D, dtype=F64))
    k = torch.randint(0, V, (5, 4), generator=torch.Generator().manual_seed(0))
    x = discrete_to_continuous(k, V, F64)
    for n_steps, anti, reps in ((None, True, 2), (10, False, 3)):
        got = vdm_bits_per_dim(
            model, k, V, n_steps=n_steps, antithetic=anti, dtype=F64, n_repeats=reps,
            generator=torch.Generator().manual_seed(5),
        )  # fmt: skip
        gen = torch.Generator().manual_seed(5)
        rs, ds = [], []
        for _ in range(reps):
            rs.append(vdm_reconstruction_loss(sde, k, V, generator=gen, dtype=F64))
            ds.append(vdm_diffusion_loss(model, x, n_steps=n_steps, generator=gen, antithetic=anti))
        recon, diff, prior = sum(rs) / reps, sum(ds) / reps, vdm_prior_loss(sde, x)
        for a, b in ((got.reconstruction, recon), (got.diffusion, diff), (got.prior, prior)):
            assert a.dtype == F64
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got.bits_per_dim, (diff + prior + recon) / (4 * math.log(2)), rtol=1e-12, atol=0)
    # the default dtype: x_int's when it is floating, else torch's default; one example is a batch
    assert vdm_bits_per_dim(model, k.double(), V).bits_per_dim.dtype == F64
    assert vdm_bits_per_dim(model, k, V).bits_per_dim.dtype == torch.get_default_dtype()
    assert vdm_bits_per_dim(model, k[:1], V, dtype=F64).bits_per_dim.shape == (1,)


def test_vdm_bits_per_dim_progress_bar_counts_its_passes(capfd):
    pytest.importorskip("tqdm")
    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    model = ScoreModel(lambda z, t: 0.1 * z, sde, prediction="eps")
    k = torch.randint(0, V, (3, 4), generator=torch.Generator().manual_seed(0))
    capfd.readouterr()
    vdm_bits_per_dim(model, k, V, n_repeats=2, progress=True)
    err = capfd.readouterr().err
    assert "vdm_bits_per_dim: 100%" in err and " 2/2 " in err and "pass/s" in err, err


def test_vdm_prior_loss_per_example_in_x0s_dtype():
    """KL(q(z_1 | x) || N(0, I)) = 1/2 sum_d (alpha_1^2 x_d^2 + sigma_1^2 - 1 - log sigma_1^2), for a batch
    of one as of several, returned in x0's dtype."""
    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    a2 = float(torch.sigmoid(torch.tensor(-5.0, dtype=F64)))  # alpha_1^2 = sigmoid(-gamma(1))
    s2 = 1 - a2
    for dtype in (torch.float32, F64):
        x0 = torch.tensor([[0.5, -1.0, 0.25]], dtype=dtype)
        got = vdm_prior_loss(sde, x0)
        assert got.dtype == dtype and got.shape == (1,)
        want = 0.5 * (a2 * float((x0.double() ** 2).sum()) + 3 * (s2 - 1 - math.log(s2)))
        assert float(got) == pytest.approx(want, rel=1e-6 if dtype == torch.float32 else 1e-13)


def test_dsm_loss_defaults_times_and_deprecation():
    """Default unweighted (lambda = sigma^2); its own draws of t reach the network in float64; any t_min > 0
    is accepted, however small (sigma(t_min) > 0 is decided in float64); eps_t= warns under its own name."""
    sde = VPSDE(t_min=0.0)
    seen = []

    def score(x, t):
        seen.append(t.dtype)
        return -x

    model = ScoreModel(score, sde)
    x0 = DATA.sample(6, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.1, 0.9, 6, dtype=F64)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    plain = dsm_loss(model, x0, t=t, noise=eps)
    assert torch.equal(plain, dsm_loss(model, x0, t=t, noise=eps, likelihood_weighting=False))
    assert not torch.equal(plain, dsm_loss(model, x0, t=t, noise=eps, likelihood_weighting=True))
    seen.clear()
    assert torch.isfinite(dsm_loss(model, x0, t_min=1e-300, generator=torch.Generator().manual_seed(2))).all()
    assert seen == [F64]
    with pytest.warns(DeprecationWarning, match=r"^dsm_loss\(eps_t=\.\.\.\) is deprecated .* use t_min="):
        dsm_loss(model, x0, eps_t=1e-3, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("weighting", [False, True])
def test_dsm_loss_answers_in_x0s_dtype(weighting):
    """float32 data give a float32 loss (the float64 coefficients are rounded to x0's dtype), equal to the
    float64 loss to float32 precision."""
    sde = VPSDE()
    model = ScoreModel(lambda x, t: -x, sde)
    x0 = DATA.sample(6, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.1, 0.9, 6, dtype=F64)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    lo = dsm_loss(model, x0.float(), t=t, noise=eps.float(), likelihood_weighting=weighting)
    hi = dsm_loss(model, x0, t=t, noise=eps, likelihood_weighting=weighting)
    assert lo.dtype == torch.float32 and hi.dtype == F64
    torch.testing.assert_close(lo.double(), hi, rtol=1e-5, atol=1e-6)


def test_discrete_data_in_x_ints_floating_dtype_and_scalar_events():
    """``discrete_to_continuous`` (x = 2 (k + 1/2) / V - 1) and ``vdm_reconstruction_loss`` answer in x_int's
    floating dtype, torch's default for integers; a (B,) x_int is a batch of scalar events."""
    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    k = torch.tensor([[0, 5, 16], [3, 3, 3]])
    exact = 2 * (k.double() + 0.5) / V - 1
    for x, want in ((k, torch.get_default_dtype()), (k.double(), F64), (k.float(), torch.float32)):
        c = discrete_to_continuous(x, V)
        assert c.dtype == want
        torch.testing.assert_close(c.double(), exact, rtol=0, atol=0 if want == F64 else 1e-7)
        r = vdm_reconstruction_loss(sde, x, V, generator=torch.Generator().manual_seed(0))
        assert r.dtype == want and r.shape == (2,)
    r1 = vdm_reconstruction_loss(sde, k[:, 0], V, generator=torch.Generator().manual_seed(0))
    assert r1.shape == (2,) and torch.isfinite(r1).all()
    model = ScoreModel(lambda z, t: 0.1 * z, sde, prediction="eps")
    assert vdm_bits_per_dim(model, k[:, 0], V).bits_per_dim.shape == (2,)


def test_vdm_reconstruction_loss_in_float64_is_its_closed_form_to_round_off():
    """VDM's decoder term in float64: with tau = sigma_0 / alpha_0 = exp(gamma(0) / 2) and y = x + tau eps,
    -log p(k | z_0) = -sum_d log softmax_j(-(y_d - c_j)^2 / (2 tau^2))[k_d] (c_j the bin centres), written
    here with scipy in float64; gamma(0) = -13.3 is not a float32 number, so the time 0 and gamma(0) must
    be taken in float64 (a float32 gamma(0) moves the answer by about 1e-6 relative)."""
    sde = VDMSDE(FixedLinearGamma(-13.3, 5.0))
    k = torch.tensor([[0, 5, 16, 8], [3, 3, 3, 12]])
    eps = torch.randn(2, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    got = vdm_reconstruction_loss(sde, k.double(), V, noise=eps)
    tau = math.exp(-13.3 / 2)
    c = 2 * (np.arange(V) + 0.5) / V - 1
    y = (2 * (k.numpy() + 0.5) / V - 1) + tau * eps.numpy()
    logp = log_softmax(-0.5 * ((y[..., None] - c) / tau) ** 2, axis=-1)
    want = -np.take_along_axis(logp, k.numpy()[..., None], axis=-1)[..., 0].sum(-1)
    assert got.dtype == F64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-13)


def test_discrete_data_in_half_precision_is_checked_in_float64():
    """x_int in float16 holding 2052 with vocab_size = 2052: the bound vocab_size - 1 = 2051 is not a float16
    number (it rounds to 2052), so the range check must be made in float64 to refuse it."""
    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    for x_int in (torch.tensor([[2052.0]], dtype=torch.float16), torch.tensor([[2052]])):
        with pytest.raises(ValueError, match=r"^x_int must hold integers in \[0, 2051\] \(vocab_size=2052\)$"):
            vdm_reconstruction_loss(sde, x_int, 2052, generator=torch.Generator().manual_seed(0))
    ok = vdm_reconstruction_loss(sde, torch.tensor([[2050.0]], dtype=torch.float16), 2052, noise=torch.zeros(1, 1))
    assert ok.shape == (1,) and bool(torch.isfinite(ok).all())


def test_dsm_loss_takes_given_float32_times_as_float64():
    """Times given in float32 are cast to float64 before use (exactly): the loss for float32 t equals the
    loss for the same times given in float64, bitwise, for float64 data."""
    sde = VPSDE()
    model = ScoreModel(lambda x, t: -x * (1.0 + t[:, None]), sde, prediction="score")
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    eps = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    t32 = torch.tensor([0.1, 0.37, 0.9], dtype=torch.float32)
    a = dsm_loss(model, x0, t=t32, noise=eps)
    b = dsm_loss(model, x0, t=t32.double(), noise=eps)
    assert torch.equal(a, b)


# ----------------------------------------- times, draws, devices and dtypes (mutation run 2, issue 14)
@pytest.mark.parametrize("batch", [3, 7, 10])
def test_antithetic_times_are_one_uniform_offset_on_the_lattice_of_i_over_b(batch):
    """VDM's scheme t_i = (u + i/B) mod 1: each call's times are the lattice {i/B} (taken in float64) shifted
    by one u, example i at i/B past example 0, to float64 round-off; across calls u = t_0 is U(0, 1)
    (Kolmogorov-Smirnov over 400 calls); the times are float64 in [0, 1)."""
    gen = torch.Generator().manual_seed(batch)
    i_over_b = torch.arange(batch, dtype=F64) / batch
    offsets = []
    for _ in range(400):
        t = sample_times(batch, generator=gen)
        assert t.dtype == F64 and t.shape == (batch,) and bool(((t >= 0) & (t < 1)).all())
        wrapped = torch.remainder(t - t[0] - i_over_b + 0.5, 1.0) - 0.5  # (t_i - t_0 - i/B), wrapped into [-1/2, 1/2)
        assert float(wrapped.abs().max()) <= 1e-15
        offsets.append(float(t[0]))
    assert kstest(offsets, "uniform").pvalue > 1e-3


def test_drawn_times_are_float64_uniforms_not_float32_ones():
    """The times a loss draws are float64 uniforms, not float32 draws widened: a float32 uniform is a
    multiple of 2^-24, and a time built from it alone (VDM's antithetic t_0 = u; DSM's
    t_min + (T - t_min) u) is a float32 number, which a float64 draw is with probability about 2^-29.
    Every one of 8 antithetic offsets and 16 DSM times drawn here is off float32's grid."""

    def off_float32(t):
        return bool((t.float().double() != t).all())

    gen = torch.Generator().manual_seed(3)
    t0 = torch.stack([sample_times(5, generator=gen)[0] for _ in range(8)])
    assert t0.dtype == F64 and off_float32(t0)
    seen = []

    def score(x, t):
        seen.append(t)
        return -x

    sde = VPSDE()
    dsm_loss(ScoreModel(score, sde), DATA.sample(16, generator=gen), generator=gen)
    (t,) = seen
    assert t.dtype == F64 and t.shape == (16,) and bool(((t >= sde.t_min) & (t <= sde.T)).all())
    assert off_float32(t)


def test_iid_and_discrete_times_come_from_the_generator_and_lie_on_the_grid():
    """antithetic=False: B uniforms drawn from the generator (the same seed gives the same times, another
    seed others; a list of B generators gives example i the time generator i gives alone), U(0, 1) by
    Kolmogorov-Smirnov; n_steps = N rounds up onto {1/N, ..., 1}, every point reached, and N = 1 is t = 1."""

    def gens(seed, n=6):
        return [torch.Generator().manual_seed(seed + k) for k in range(n)]

    a = sample_times(2000, antithetic=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, sample_times(2000, antithetic=False, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(a, sample_times(2000, antithetic=False, generator=torch.Generator().manual_seed(1)))
    assert a.dtype == F64 and kstest(a.numpy(), "uniform").pvalue > 1e-3
    per = sample_times(6, antithetic=False, generator=gens(10))
    alone = torch.cat([sample_times(1, antithetic=False, generator=[g]) for g in gens(10)])
    assert torch.equal(per, alone) and len(set(per.tolist())) == 6
    for n_steps, anti in ((5, True), (5, False), (1, True), (1, False)):
        t = sample_times(2000, n_steps=n_steps, antithetic=anti, generator=torch.Generator().manual_seed(2))
        k = t * n_steps
        assert torch.equal(k, torch.round(k)) and set(k.long().tolist()) == set(range(1, n_steps + 1))
    assert torch.equal(sample_times(4, n_steps=1), torch.ones(4, dtype=F64))


def test_times_noise_and_losses_are_made_on_the_datas_device():
    """Times and noise are drawn on the asked device (x0's for the losses), and given times are moved there.
    The meta device stands in for an accelerator here: a draw or a constant left on the host meets a meta
    tensor and fails, or leaves a host answer."""
    meta = torch.device("meta")
    for anti in (True, False):
        for n_steps in (None, 5):
            t = sample_times(4, n_steps=n_steps, antithetic=anti, device=meta)
            assert t.device == meta and t.dtype == F64 and t.shape == (4,)
    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    model = ScoreModel(lambda z, t: 0.1 * z, sde, prediction="eps")
    x0 = torch.zeros(4, 3, dtype=F64, device=meta)
    host_t = torch.full((4,), 0.6, dtype=F64)
    for kw in ({}, {"antithetic": False}, {"n_steps": 5}, {"t": host_t}, {"t": host_t, "noise": x0}):
        out = vdm_diffusion_loss(model, x0, **kw)
        assert out.device == meta and out.shape == (4,), kw
    vp = ScoreModel(lambda z, t: -z, VPSDE())
    for kw in ({}, {"t": host_t}, {"likelihood_weighting": True}):
        out = dsm_loss(vp, x0, **kw)
        assert out.device == meta and out.shape == (4,), kw
    assert vdm_reconstruction_loss(sde, torch.zeros(4, 3, dtype=torch.long, device=meta), V).device == meta


def test_a_list_of_generators_gives_each_example_its_own_draws():
    """With a list of B generators, example i's time and noise come from generator i alone: each example's
    loss equals its loss computed alone with (a fresh copy of) its generator, for the diffusion loss with
    iid times and with given times (antithetic left at its default: nothing antithetic is drawn then), the
    reconstruction loss and the DSM loss (float64, 1e-12)."""

    def gens(n=5):
        return [torch.Generator().manual_seed(20 + k) for k in range(n)]

    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    model = gamma_model(sde, MU, S)
    vp = DATA.model(VPSDE())
    x0 = DATA.sample(5, generator=torch.Generator().manual_seed(0))
    k = torch.randint(0, V, (5, 3), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=F64)
    calls = (
        lambda x, kk, tt, g: vdm_diffusion_loss(model, x, generator=g, antithetic=False),
        lambda x, kk, tt, g: vdm_diffusion_loss(model, x, generator=g, t=tt),
        lambda x, kk, tt, g: vdm_reconstruction_loss(sde, kk, V, generator=g, dtype=F64),
        lambda x, kk, tt, g: dsm_loss(vp, x, generator=g),
        lambda x, kk, tt, g: dsm_loss(vp, x, generator=g, t=tt, likelihood_weighting=True),
    )
    for call in calls:
        batch = call(x0, k, t, gens())
        alone = torch.cat([call(x0[i : i + 1], k[i : i + 1], t[i : i + 1], [g]) for i, g in enumerate(gens())])
        assert batch.shape == (5,) and len(set(batch.tolist())) == 5
        torch.testing.assert_close(batch, alone, rtol=1e-12, atol=0)


def test_deprecated_keywords_warn_at_the_callers_line_under_the_functions_own_name():
    """T= (now n_steps=) and eps_t= (now t_min=) warn with the function's own name, attributed to the
    caller's code, not to a file of the package (``stacklevel``): Python shows a DeprecationWarning by
    default only where it is attributed to ``__main__``. Checked as "not inside sdesolve/" rather than "this
    file", because mutmut's trampolines add frames between the caller and the library."""
    package = os.path.dirname(os.path.abspath(sdesolve.__file__)) + os.sep
    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    model = gamma_model(sde, MU, S)
    x0 = DATA.sample(4, generator=torch.Generator().manual_seed(0))
    k = torch.randint(0, V, (2, 3), generator=torch.Generator().manual_seed(1))
    calls = (
        ("sample_times", "T", "n_steps", lambda: sample_times(4, T=4)),
        ("vdm_diffusion_loss", "T", "n_steps", lambda: vdm_diffusion_loss(model, x0, T=4)),
        ("vdm_bits_per_dim", "T", "n_steps", lambda: vdm_bits_per_dim(model, k, V, T=4)),
        ("dsm_loss", "eps_t", "t_min", lambda: dsm_loss(DATA.model(VPSDE()), x0, eps_t=1e-3)),
    )
    for fn, old, new, call in calls:
        with pytest.warns(DeprecationWarning) as record:
            call()
        (w,) = record.list
        assert str(w.message) == f"{fn}({old}=...) is deprecated and will be removed in the next release; use {new}=..."
        assert not os.path.abspath(w.filename).startswith(package), (fn, w.filename)


def test_vdm_diffusion_loss_answers_in_x0s_dtype():
    """float32 data give a float32 loss, the network sees float32 states (the float64 coefficients are
    rounded to x0's dtype), and the value is the float64 loss to float32 precision; noise given in another
    dtype is taken in x0's (bitwise the loss for the noise cast first), for the DSM loss too."""
    sde = VDMSDE(FixedLinearGamma(-6.0, 5.0))
    seen = []

    def net(z, t):
        seen.append(z.dtype)
        return 0.3 * z

    model = ScoreModel(net, sde, prediction="eps")
    x0 = DATA.sample(6, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.linspace(0.1, 0.9, 6, dtype=F64)
    for n_steps in (None, 10):
        tt = t if n_steps is None else torch.ceil(t * n_steps) / n_steps
        seen.clear()
        lo = vdm_diffusion_loss(model, x0.float(), n_steps=n_steps, t=tt, noise=eps.float())
        hi = vdm_diffusion_loss(model, x0, n_steps=n_steps, t=tt, noise=eps)
        assert lo.dtype == torch.float32 and hi.dtype == F64 and seen == [torch.float32, F64]
        torch.testing.assert_close(lo.double(), hi, rtol=1e-5, atol=1e-6)
        mixed = vdm_diffusion_loss(model, x0.float(), n_steps=n_steps, t=tt, noise=eps)
        assert mixed.dtype == torch.float32 and torch.equal(mixed, lo)
    vp = ScoreModel(lambda x, t: -x, VPSDE())
    d = dsm_loss(vp, x0.float(), t=t, noise=eps)
    assert d.dtype == torch.float32 and torch.equal(d, dsm_loss(vp, x0.float(), t=t, noise=eps.float()))


def test_the_discrete_loss_decides_sigma_at_zero_in_float64():
    """``n_steps`` is refused only where sigma(0) = 0, and that is asked of the process at t = 0 in float64:
    a user's process with sigma(t)^2 = 1e-60 + t and alpha = 1, whose hook computes the variance in t's dtype
    (1e-60 is 0 in float32), has sigma(0) = 1e-30 > 0 and a finite discrete loss, N/2 expm1(gamma(t) -
    gamma(t - 1/N)) ||eps - eps_hat(z_t, t)||^2 with gamma = log(1e-60 + t), written out here."""

    class TinyNoiseAtZero(LinearSDE):
        def _log_alpha(self, t):
            return torch.zeros_like(t)

        def _log_sigma(self, t):
            return 0.5 * torch.log(1e-60 + t)

    model = ScoreModel(lambda z, t: 0.5 * z, TinyNoiseAtZero(), prediction="eps")
    x0 = DATA.sample(3, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.tensor([0.5, 1.0, 0.5], dtype=F64)
    got = vdm_diffusion_loss(model, x0, n_steps=2, t=t, noise=eps)
    z = x0 + torch.sqrt(1e-60 + t)[:, None] * eps
    want = 0.5 * 2 * torch.expm1(torch.log(1e-60 + t) - torch.log(1e-60 + (t - 0.5))) * ((eps - 0.5 * z) ** 2).sum(-1)
    assert bool(torch.isfinite(got).all()) and float(got[0]) > 1e59
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.gpu
def test_a_host_generator_for_integers_on_the_gpu_is_refused_by_name():
    """vdm_reconstruction_loss checks its generator against the data's device before drawing: a CPU
    generator (alone or in a list) with integers on the GPU is a ValueError naming both devices, even where
    the noise is given and the generator would never draw; a CUDA generator draws on the GPU."""
    sde = VDMSDE()
    k = torch.randint(0, 17, (4, 3), device="cuda")
    msg = r"^generator(\[0\])? is on cpu but the samples are on cuda(:0)?; pass a generator on cuda"
    for gen in (torch.Generator().manual_seed(0), [torch.Generator().manual_seed(i) for i in range(4)]):
        for noise in (None, torch.zeros(4, 3, device="cuda")):
            with pytest.raises(ValueError, match=msg):
                vdm_reconstruction_loss(sde, k, 17, generator=gen, noise=noise)
    out = vdm_reconstruction_loss(sde, k, 17, generator=torch.Generator("cuda").manual_seed(0))
    assert out.device.type == "cuda" and out.shape == (4,) and bool(torch.isfinite(out).all())


@pytest.mark.gpu
def test_sample_times_follow_a_cuda_generator_to_its_device():
    """Without ``device=``, times are drawn on the generator's device (a list's first): a CUDA generator gives
    CUDA times, the same ones as when device="cuda" is also given."""
    dev = torch.device("cuda")
    for anti, n_steps in ((True, None), (False, None), (True, 4)):
        a = sample_times(8, n_steps=n_steps, antithetic=anti, generator=torch.Generator(device=dev).manual_seed(0))
        b = sample_times(
            8, n_steps=n_steps, antithetic=anti, generator=torch.Generator(device=dev).manual_seed(0), device=dev
        )
        assert a.device.type == "cuda" and torch.equal(a, b)
    gens = [torch.Generator(device=dev).manual_seed(k) for k in range(3)]
    assert sample_times(3, antithetic=False, generator=gens).device.type == "cuda"
