"""Numerical proofs for sdesolve.likelihood: log_likelihood and bits_per_dim.

Ground truth: for Gaussian and Gaussian-mixture data laws under a linear forward process the
marginal log-density log p_t is exact (``target.marginal_log_prob``), and so is log p_T at the
latent. The probability-flow likelihood with the prior replaced by the exact log p_T must
equal log p_{t_min}(x) up to the integration error.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import loglog_slope

import sdesolve
from sdesolve import VDMSDE, VESDE, VPSDE, Gaussian, GaussianMixture, SubVPSDE, bits_per_dim, log_likelihood
from sdesolve.likelihood import exact_trace, hutchinson_trace

LN2 = math.log(2.0)

GAUSS = Gaussian(torch.tensor([0.5, -0.3, 0.8]), torch.tensor([0.3, 0.6, 0.2]))
MIX = GaussianMixture([0.3, 0.7], torch.tensor([[0.5, -0.5, 0.2], [-0.6, 0.4, 0.0]]), torch.tensor([0.3, 0.5]))
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "vdm": VDMSDE}
TARGETS = {"gaussian": GAUSS, "mixture": MIX}


def _exact_pT(target, sde):
    return lambda z: target.marginal_log_prob(z.double(), sde.T, sde).to(z.dtype)


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("target_name", list(TARGETS))
def test_exact_divergence_matches_marginal_log_prob_float64(sde_name, target_name):
    """float64, exact divergence, rtol = atol = 1e-6: within 1e-4 nats per dimension."""
    sde, target = SDES[sde_name](), TARGETS[target_name]
    D = target.dim
    x = target.marginal_sample(4, sde.t_min, sde, generator=torch.Generator().manual_seed(1))
    exact = target.marginal_log_prob(x, sde.t_min, sde)
    res = log_likelihood(sde, target.model(sde), x, divergence="exact", rtol=1e-6, atol=1e-6, return_latent=True)
    assert res.logp.shape == (4,) and res.logp.dtype == torch.float64 and res.z.shape == x.shape
    assert res.nfe > 0
    pT = target.marginal_log_prob(res.z, sde.T, sde)
    corrected = res.delta_logp + pT
    assert (corrected - exact).abs().max() / D < 1e-4
    # logp = prior_logp + delta_logp, and the uncorrected value is off by no more than the
    # mismatch between the prior and p_T at the latent (plus the integration error)
    torch.testing.assert_close(res.logp, res.prior_logp + res.delta_logp)
    torch.testing.assert_close(res.prior_logp, sde.prior_logp(res.z))
    mismatch = (res.prior_logp - pT).abs()
    assert bool(((res.logp - exact).abs() <= mismatch + 1e-4 * D).all())
    # the latent is the exact probability-flow map (Gaussian: closed form)
    if target is GAUSS:
        torch.testing.assert_close(res.z, target.flow(x, sde.t_min, sde.T, sde), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("target_name", list(TARGETS))
def test_default_tolerances_float32_within_1e3_bits_per_dim(sde_name, target_name):
    """float32 at the default tolerances: within 1e-3 bits/dim. Hutchinson (the default) for
    the Gaussian, whose score Jacobian is diagonal, so one Rademacher probe is exact; the
    exact divergence for the mixture."""
    sde, target = SDES[sde_name](), TARGETS[target_name]
    D = target.dim
    x = target.marginal_sample(4, sde.t_min, sde, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    exact = target.marginal_log_prob(x.double(), sde.t_min, sde)
    div = "hutchinson" if target is GAUSS else "exact"
    gen = torch.Generator().manual_seed(0)
    res = log_likelihood(sde, target.model(sde), x, divergence=div, generator=gen, prior_logp=_exact_pT(target, sde))
    assert res.logp.dtype == torch.float32
    bpd_err = (res.logp.double() - exact).abs() / (D * LN2)
    assert bpd_err.max() < 1e-3


# ------------------------------------------------------------------ backends and time variables
def test_scipy_backend_and_time_variables_agree():
    sde, target = VPSDE(), MIX
    x = target.marginal_sample(3, sde.t_min, sde, generator=torch.Generator().manual_seed(3))
    exact = target.marginal_log_prob(x, sde.t_min, sde)
    kw = dict(divergence="exact", rtol=1e-6, atol=1e-6, prior_logp=_exact_pT(target, sde))
    a = log_likelihood(sde, target.model(sde), x, **kw).logp
    b = log_likelihood(sde, target.model(sde), x, method="scipy-RK45", **kw).logp
    c = log_likelihood(sde, target.model(sde), x, time_variable="log_snr", **kw).logp
    d = log_likelihood(sde, target.model(sde), x, method="scipy-RK45", time_variable="log_snr", **kw).logp
    for v in (a, b, c, d):
        assert (v - exact).abs().max() < 1e-4 * target.dim
    torch.testing.assert_close(a, b, atol=2e-4, rtol=0)
    torch.testing.assert_close(a, c, atol=2e-4, rtol=0)
    torch.testing.assert_close(b, d, atol=2e-4, rtol=0)


def test_discrete_schedule_integrates_in_log_snr_by_default():
    """DiscreteVPSDE's drift jumps at each of its 1000 knots; in u = -lambda/2 the VP flow
    dx/du = -sigma^2 (x + s) does not depend on the schedule. "auto" picks u: accurate, and
    cheap (measured: 158 NFE at 1e-7 in u against 2228 in t)."""
    from sdesolve.sde import DiscreteVPSDE, ddpm_betas

    sde, target = DiscreteVPSDE(ddpm_betas("linear")), MIX
    x = target.marginal_sample(3, sde.t_min, sde, generator=torch.Generator().manual_seed(21))
    exact = target.marginal_log_prob(x, sde.t_min, sde)
    kw = dict(divergence="exact", rtol=1e-6, atol=1e-6, prior_logp=_exact_pT(target, sde))
    res = log_likelihood(sde, target.model(sde), x, **kw)
    assert (res.logp - exact).abs().max() / target.dim < 1e-4
    assert res.nfe < 400
    same = log_likelihood(sde, target.model(sde), x, time_variable="log_snr", **kw)
    torch.testing.assert_close(res.logp, same.logp, atol=0, rtol=0)


def test_fixed_step_rk4_converges_at_fourth_order_and_counts_nfe():
    """Uniform steps in u = -lambda/2: the error of rk4 falls like steps^-4 (log-log slope)."""
    sde, target = VESDE(), GAUSS
    x = target.marginal_sample(2, sde.t_min, sde, generator=torch.Generator().manual_seed(4))
    exact = target.marginal_log_prob(x, sde.t_min, sde)
    errs, ns = [], [16, 32, 64]
    for n in ns:
        res = log_likelihood(
            sde,
            target.model(sde),
            x,
            divergence="exact",
            method="rk4",
            steps=n,
            time_variable="log_snr",
            prior_logp=_exact_pT(target, sde),
        )
        assert res.nfe == 4 * n
        errs.append(float((res.logp - exact).abs().max()))
    slope = (math.log(errs[-1]) - math.log(errs[0])) / (math.log(ns[-1]) - math.log(ns[0]))
    assert -4.6 < slope < -3.4, (errs, slope)
    euler = log_likelihood(sde, target.model(sde), x, divergence="exact", method="euler", steps=10)
    assert euler.nfe == 10


def test_any_event_rank_gives_the_same_answer():
    """A 2x2x1 event and the same 4 numbers as a flat event give the same log-likelihood."""
    sde = VPSDE()
    mean = torch.tensor([0.2, -0.4, 0.5, 0.1])
    std = torch.tensor([0.3, 0.5, 0.4, 0.6])
    flat, img = Gaussian(mean, std), Gaussian(mean.reshape(2, 2, 1), std.reshape(2, 2, 1))
    x = flat.marginal_sample(3, sde.t_min, sde, generator=torch.Generator().manual_seed(5))
    kw = dict(divergence="exact", rtol=1e-7, atol=1e-7)
    a = log_likelihood(sde, flat.model(sde), x, **kw)
    b = log_likelihood(sde, img.model(sde), x.reshape(3, 2, 2, 1), **kw)
    torch.testing.assert_close(a.logp, b.logp, atol=1e-9, rtol=1e-9)
    h = log_likelihood(sde, img.model(sde), x.reshape(3, 2, 2, 1), rtol=1e-7, atol=1e-7)  # Rademacher, diagonal: exact
    torch.testing.assert_close(h.logp, b.logp, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ Hutchinson
def _jacobian_of_score(target, sde, x1, t):
    fn = lambda v: target.marginal_score(v.unsqueeze(0), t, sde).squeeze(0)  # noqa: E731
    return torch.autograd.functional.jacobian(fn, x1)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_predicted_variance(probe):
    """At a fixed (x, t): N independent one-probe estimates of tr(ds/dx) (one per copy of x)
    have mean tr(A) within 5 standard errors and sample variance equal, within 5 of its
    standard errors (from the sample fourth moment), to the theory for a symmetric A:
    2 ||A||_F^2 (Gaussian probes) and 2 sum_{i != j} A_ij^2 (Rademacher). Four probes per
    estimate divide the variance by 4."""
    sde, target, t = VPSDE(), MIX, 0.3
    x1 = target.marginal_sample(1, t, sde, generator=torch.Generator().manual_seed(6))[0]
    A = _jacobian_of_score(target, sde, x1, t)
    torch.testing.assert_close(A, A.T)  # a Hessian
    tr = torch.diagonal(A).sum()
    var_theory = 2 * (A**2).sum() if probe == "gaussian" else 2 * ((A**2).sum() - (torch.diagonal(A) ** 2).sum())
    N = 20000
    xs = x1.expand(N, -1).clone()
    score_fn = lambda v: target.marginal_score(v, t, sde)  # noqa: E731
    s_ex, tr_ex = exact_trace(score_fn, x1.unsqueeze(0))
    torch.testing.assert_close(tr_ex[0], tr)

    def draws(n_probes, seed):
        probes = sdesolve.likelihood._draw_probes(probe, n_probes, xs, torch.Generator().manual_seed(seed))
        s, est = hutchinson_trace(score_fn, xs, probes)
        torch.testing.assert_close(s, s_ex.expand(N, -1))
        return est

    def var_and_se(e):
        c = e - e.mean()
        m2, m4 = (c**2).mean(), (c**4).mean()
        return m2, torch.sqrt((m4 - m2**2) / N)

    e1 = draws(1, 7)
    assert abs(e1.mean() - tr) < 5 * e1.std() / math.sqrt(N)
    v1, se1 = var_and_se(e1)
    assert abs(v1 - var_theory) < 5 * se1
    e4 = draws(4, 8)
    assert abs(e4.mean() - tr) < 5 * e4.std() / math.sqrt(N)
    v4, se4 = var_and_se(e4)
    assert v4 < v1
    assert abs(4 * v4 - var_theory) < 5 * 4 * se4


@pytest.mark.slow
def test_hutchinson_log_likelihood_is_unbiased_and_more_probes_shrink_the_spread():
    """N copies of one x in a batch: each gets its own probes, so one solve gives N
    independent Hutchinson estimates of log p. Their mean matches the exact-divergence value
    within 5 standard errors; with 4 probes the variance drops by ~4."""
    sde, target = VPSDE(), MIX
    x1 = target.marginal_sample(1, sde.t_min, sde, generator=torch.Generator().manual_seed(9))
    kw = dict(rtol=1e-7, atol=1e-7, prior_logp=_exact_pT(target, sde))
    ref = log_likelihood(sde, target.model(sde), x1, divergence="exact", **kw).logp[0]
    exact = target.marginal_log_prob(x1, sde.t_min, sde)[0]
    assert abs(ref - exact) < 1e-4
    N = 400
    xs = x1.expand(N, -1).clone()
    out = {}
    for n_probes in (1, 4):
        gen = torch.Generator().manual_seed(10 + n_probes)
        lp = log_likelihood(sde, target.model(sde), xs, n_probes=n_probes, generator=gen, **kw).logp
        assert abs(lp.mean() - ref) < 5 * lp.std() / math.sqrt(N) + 1e-5
        out[n_probes] = lp

    def var_and_rel_se(e):
        c = e - e.mean()
        m2, m4 = (c**2).mean(), (c**4).mean()
        return m2, torch.sqrt((m4 - m2**2) / N) / m2  # relative standard error from the 4th moment

    (v1, r1), (v4, r4) = var_and_rel_se(out[1]), var_and_rel_se(out[4])
    assert v1 > 0 and v4 < v1
    # 4 v4 / v1 = 1 up to the relative standard errors of the two independent sample variances
    assert abs(4 * v4 / v1 - 1.0) < 5 * math.sqrt(r1**2 + r4**2)


def test_same_generator_same_answer_and_gaussian_probe():
    sde, target = VPSDE(), MIX
    x = target.marginal_sample(3, sde.t_min, sde, generator=torch.Generator().manual_seed(12))
    a = log_likelihood(sde, target.model(sde), x, probe="gaussian", generator=torch.Generator().manual_seed(1))
    b = log_likelihood(sde, target.model(sde), x, probe="gaussian", generator=torch.Generator().manual_seed(1))
    c = log_likelihood(sde, target.model(sde), x, probe="gaussian", generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.logp, b.logp, atol=0, rtol=0)
    assert not torch.equal(a.logp, c.logp)


def _half_log_ratio(target, sde, t_min):
    """Per coordinate 1/2 log(v_i(T) / v_i(t_min)), v_i(t) = alpha^2 std_i^2 + sigma^2: the integral
    of f + g^2 / (2 v_i) from t_min to T, since d log v_i / dt = 2 f + g^2 / v_i."""

    def var(t):
        a, s = float(sde.alpha(t)), float(sde.sigma(t))
        return a * a * target.std**2 + s * s

    return 0.5 * torch.log(var(float(sde.T)) / var(t_min))


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_gaussian_probes_estimate_the_whole_drift_where_it_contracts(sde_name):
    """Gaussian target (diagonal score Jacobian -1/v_i): with probes eps fixed over the solve the
    Hutchinson delta_logp is a closed form. Probing the whole drift v = f x - g^2/2 s (score_sde;
    chosen when int f dt < 0) gives sum_i eps_i^2 M_i with M_i = int (f + g^2/(2 v_i)) dt =
    1/2 log(v_i(T)/v_i(t_min)); probing the score alone would give c D + sum_i eps_i^2 (M_i - c),
    c = int f dt. VP and sub-VP (c < 0) must match the first, VE (c = 0) both. Exact to the
    solver tolerance; the two differ by (|eps|^2 - D) c, tens of nats here."""
    sde, target = SDES[sde_name](), GAUSS
    x = target.marginal_sample(1, sde.t_min, sde, generator=torch.Generator().manual_seed(30)).expand(6, -1).clone()
    res = log_likelihood(
        sde, target.model(sde), x, probe="gaussian", generator=torch.Generator().manual_seed(31), rtol=1e-7, atol=1e-7
    )
    eps = sdesolve.likelihood._draw_probes("gaussian", 1, x, torch.Generator().manual_seed(31))[0]
    M = _half_log_ratio(target, sde, sde.t_min)
    whole = (eps**2 * M).sum(1)
    c = float(sde.log_alpha(float(sde.T)) - sde.log_alpha(sde.t_min))
    score_only = c * target.dim + (eps**2 * (M - c)).sum(1)
    torch.testing.assert_close(res.delta_logp, whole, atol=1e-5, rtol=0)
    if c < 0:
        assert float((whole - score_only).abs().max()) > 1.0
    else:
        torch.testing.assert_close(whole, score_only, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n_probes", [2, 3, 5])
def test_n_probes_average_the_single_probe_estimates(n_probes):
    """Several probes: exactly the mean of the single-probe estimates with the same probes."""
    sde, target, t = VPSDE(), MIX, 0.3
    x = target.marginal_sample(4, t, sde, generator=torch.Generator().manual_seed(32))
    probes = sdesolve.likelihood._draw_probes("gaussian", n_probes, x, torch.Generator().manual_seed(33))
    score_fn = lambda v: target.marginal_score(v, t, sde)  # noqa: E731
    _, est = hutchinson_trace(score_fn, x, probes)
    singles = torch.stack([hutchinson_trace(score_fn, x, probes[k : k + 1])[1] for k in range(n_probes)])
    torch.testing.assert_close(est, singles.mean(0), atol=1e-12, rtol=1e-12)


def _mixing_score(W):
    """A score with a dense, non-symmetric Jacobian: s(x) = -tanh(x W^T) - x^3."""
    return lambda v: -torch.tanh(v @ W.T) - v**3


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, None])
def test_exact_trace_for_every_chunk_size_matches_jacrev(chunk_size):
    g = torch.Generator().manual_seed(34)
    D = 7
    W = torch.randn(D, D, generator=g, dtype=torch.float64)
    x = torch.randn(3, D, generator=g, dtype=torch.float64)
    fn = _mixing_score(W)
    ref = torch.stack([torch.trace(torch.func.jacrev(lambda v: fn(v.unsqueeze(0))[0])(xi)) for xi in x])
    s, tr = exact_trace(fn, x, chunk_size=chunk_size)
    torch.testing.assert_close(tr, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(s, fn(x))


def test_exact_trace_with_a_default_chunk_smaller_than_d():
    """D = 5000 with B = 1: the default chunk, 2^24 // D = 3355, is below D, so the basis of
    the second chunk starts at e_3355. Jacobian = diag(-w (1 - tanh^2 x)) + 0.5 P (P a cyclic
    shift, zero diagonal): trace -sum w (1 - tanh^2 x)."""
    D = 5000
    g = torch.Generator().manual_seed(35)
    w = torch.rand(D, generator=g) + 0.5
    x = torch.randn(1, D, generator=g)
    fn = lambda v: -w * torch.tanh(v) + 0.5 * torch.roll(v, 1, dims=1)  # noqa: E731
    _, tr = exact_trace(fn, x)
    # float32: the sum of 5000 terms of size ~1 carries a rounding error of a few 1e-4 at most
    torch.testing.assert_close(tr, -(w * (1 - torch.tanh(x) ** 2)).sum(1), atol=1e-3, rtol=0)


def test_non_differentiable_score_raises_instead_of_a_zero_trace():
    """Issue 8 item 5: exact divergence of lambda x, t: x.detach() gave delta_logp -10.05 (the f D
    part only) instead of raising. Both divergences now refuse it."""
    sde = VPSDE()
    x = GAUSS.marginal_sample(2, sde.t_min, sde, generator=torch.Generator().manual_seed(36))
    for divergence in ("exact", "hutchinson"):
        with pytest.raises(TypeError, match="not differentiable"):
            log_likelihood(sde, lambda v, t: v.detach(), x, divergence=divergence)


# ------------------------------------------------------------------ budgets, counts, names, dtypes
def test_max_nfe_ends_the_solve_with_t_and_nfe():
    from sdesolve.solvers.adaptive import AdaptiveSolveError

    sde = VPSDE()
    x = GAUSS.marginal_sample(2, sde.t_min, sde, generator=torch.Generator().manual_seed(37))
    with pytest.raises(AdaptiveSolveError, match=r"after 7 network evaluations \(max_nfe=7\)") as info:
        log_likelihood(sde, GAUSS.model(sde), x, max_nfe=7, time_variable="log_snr")
    assert info.value.nfe == 7 and sde.t_min <= info.value.t <= sde.T  # the process time, not u
    full = log_likelihood(sde, GAUSS.model(sde), x)
    assert log_likelihood(sde, GAUSS.model(sde), x, max_nfe=full.nfe).nfe == full.nfe


def test_nfe_counts_this_call_only():
    """Issue 8 item 11: the count is the call's own, not a difference of the model's shared counter
    (here another user bumps the same model's counter at every evaluation, as a second thread would)."""
    sde, target = VPSDE(), GAUSS
    x = target.marginal_sample(2, sde.t_min, sde, generator=torch.Generator().manual_seed(38))
    solo = log_likelihood(sde, target.model(sde), x, divergence="exact")

    def net(v, t):
        model.nfe += 3
        return target.marginal_score(v, t, sde)

    model = sdesolve.ScoreModel(net, sde, prediction="score", time_input=lambda t: t)
    shared = log_likelihood(sde, model, x, divergence="exact")
    assert shared.nfe == solo.nfe and model.nfe == 4 * solo.nfe
    torch.testing.assert_close(shared.logp, solo.logp, atol=0, rtol=0)
    fixed = log_likelihood(sde, model, x, divergence="exact", method="rk3", steps=5)
    assert fixed.nfe == 15


def test_method_names_are_those_of_ode():
    """One vocabulary with ODE(...): "heun" (Heun's RK2) and "rk3" (Kutta's) are the ODE solver's
    tableaux, converging at their orders (log-log slope of the error against the exact log p, steps
    in u); "heun2" is the deprecated alias of "heun"."""
    sde, target = VESDE(), GAUSS
    x = target.marginal_sample(2, sde.t_min, sde, generator=torch.Generator().manual_seed(39))
    exact = target.marginal_log_prob(x, sde.t_min, sde)
    # Rademacher probes are exact for the diagonal Jacobian of this target's score
    kw = dict(time_variable="log_snr", prior_logp=_exact_pT(target, sde))
    for method, order, ns in (("heun", 2, (32, 64, 128)), ("rk3", 3, (16, 32, 64))):
        errs = []
        for n in ns:
            res = log_likelihood(sde, target.model(sde), x, method=method, steps=n, **kw)
            assert res.nfe == order * n
            errs.append(float((res.logp - exact).abs().max()))
        slope = loglog_slope(ns, errs)
        assert abs(slope - order) < 0.4, (method, errs, slope)
    a = log_likelihood(sde, target.model(sde), x, method="heun", steps=8, **kw)
    with pytest.warns(DeprecationWarning, match="'heun2' is deprecated; use 'heun'"):
        b = log_likelihood(sde, target.model(sde), x, method="heun2", steps=8, **kw)
    torch.testing.assert_close(a.logp, b.logp, atol=0, rtol=0)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_data_integrate_in_float32(half):
    """Issue 8 item 8: float16 failed inside torchdiffeq ("underflow in dt") and bfloat16 was 0.092
    nats off in 392 NFE. Half data are integrated in float32 (results float32): with the exact,
    parameter-free score (called in float32) the answer and the NFE are those of the float32 run on
    the same (rounded) data."""
    sde, target = VPSDE(), GAUSS
    xh = target.marginal_sample(4, sde.t_min, sde, generator=torch.Generator().manual_seed(40)).to(half)
    kw = dict(generator=torch.Generator().manual_seed(0), prior_logp=_exact_pT(target, sde))
    res = log_likelihood(sde, target.model(sde), xh, **kw)
    ref = log_likelihood(sde, target.model(sde), xh.float(), **{**kw, "generator": torch.Generator().manual_seed(0)})
    assert res.logp.dtype == torch.float32
    torch.testing.assert_close(res.logp, ref.logp, atol=0, rtol=0)
    assert res.nfe == ref.nfe
    exact = target.marginal_log_prob(xh.double(), sde.t_min, sde)
    assert float(((res.logp.double() - exact).abs() / (target.dim * LN2)).max()) < 1e-3


def test_half_network_is_called_in_its_dtype():
    """A bfloat16 network gets bfloat16 inputs (its own dtype) while the state stays float32. The
    answer is off by the network's own rounding: its score carries a relative error of ~2^-8, and
    the log-density moves by about that fraction of the divergence integral (a few nats here)."""
    sde, target = VPSDE(), GAUSS

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.bfloat16))
            self.seen = set()

        def forward(self, v, t):
            self.seen.add(v.dtype)
            return self.scale * target.marginal_score(v.float(), t.double(), sde).to(v.dtype)

    net = Net()
    x = target.marginal_sample(4, sde.t_min, sde, generator=torch.Generator().manual_seed(41))
    res = log_likelihood(
        sde, sdesolve.ScoreModel(net, sde, prediction="score"), x.to(torch.bfloat16), divergence="exact"
    )
    assert net.seen == {torch.bfloat16} and res.logp.dtype == torch.float32
    ref = log_likelihood(sde, target.model(sde), x.float(), divergence="exact")
    assert float((res.delta_logp - ref.delta_logp).abs().max()) < 2.0**-8 * float(ref.delta_logp.abs().max()) * 4


def test_bits_per_dim_of_0_1_data_with_their_range():
    """Float data k/255 on [0, 1] with data_range=(0, 1) are the same integers k for a model on [0, 1]."""
    sde, target = VPSDE(), GAUSS
    k = torch.tensor([[200, 90, 230], [128, 100, 250]], dtype=torch.uint8)
    kw = dict(divergence="exact", data_range=(0.0, 1.0))
    a = bits_per_dim(sde, target.model(sde), k, generator=torch.Generator().manual_seed(42), dtype=torch.float64, **kw)
    b = bits_per_dim(sde, target.model(sde), k.double() / 255, generator=torch.Generator().manual_seed(42), **kw)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


# ------------------------------------------------------------------ gradients and memory
def _grad_of_logp(grad_mode, rtol):
    sde, target = VPSDE(), MIX
    x = target.marginal_sample(2, sde.t_min, sde, generator=torch.Generator().manual_seed(13))
    xr = x.clone().requires_grad_(True)
    res = log_likelihood(
        sde,
        target.model(sde),
        xr,
        divergence="exact",
        rtol=rtol,
        atol=rtol,
        grad=grad_mode,
        prior_logp=lambda z: target.marginal_log_prob(z, sde.T, sde),
    )
    (g,) = torch.autograd.grad(res.logp.sum(), xr)
    return g, target.marginal_score(x, sde.t_min, sde), xr


@pytest.mark.filterwarnings("error")  # the step-size control reads no tensor that carries the graph
def test_gradients_flow_with_grad_true_and_none_without():
    """grad=True: d log p_{t_min}(x) / dx is the score of p_{t_min} (exact for the target)."""
    g, score, xr = _grad_of_logp(True, 1e-6)
    torch.testing.assert_close(g, score, atol=5e-3, rtol=5e-3)
    # default: no graph at all, even when x requires grad
    sde = VPSDE()
    res0 = log_likelihood(sde, MIX.model(sde), xr, divergence="exact")
    assert not res0.logp.requires_grad and not res0.delta_logp.requires_grad


@pytest.mark.slow
def test_adjoint_gradients_match():
    g, score, _ = _grad_of_logp("adjoint", 1e-7)
    torch.testing.assert_close(g, score, atol=2e-3, rtol=2e-3)


def test_gradients_reach_model_parameters():
    """A learnable score s(x) = -(x - m)/v: d logp / dm from grad=True matches a finite difference."""
    sde = VPSDE()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))

        def forward(self, x, t):
            a = torch.exp(sde._log_alpha(t)).unsqueeze(-1)
            s2 = torch.exp(2 * sde._log_sigma(t)).unsqueeze(-1)
            return -(x - a * self.m) / (a * a * 0.25 + s2)

    net = Net()
    model = sdesolve.ScoreModel(net, sde, prediction="score")
    x = torch.tensor([[0.1, 0.4], [-0.3, 0.2]], dtype=torch.float64)
    res = log_likelihood(sde, model, x, divergence="exact", rtol=1e-9, atol=1e-9, grad=True)
    (g,) = torch.autograd.grad(res.logp.sum(), net.m)
    h = 1e-3
    fd = []
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = h
        with torch.no_grad():
            net.m.add_(e)
            up = log_likelihood(sde, model, x, divergence="exact", rtol=1e-9, atol=1e-9).logp.sum()
            net.m.sub_(2 * e)
            dn = log_likelihood(sde, model, x, divergence="exact", rtol=1e-9, atol=1e-9).logp.sum()
            net.m.add_(e)
        fd.append((up - dn) / (2 * h))
    torch.testing.assert_close(g, torch.stack(fd), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ bits per dimension
def test_bits_per_dim_formula_on_continuous_data():
    """dequantize=None on float data: bpd = -log p(x)/(D ln 2) - log2(hi - lo) + n_bits, with
    log p the probability-flow value; with the exact p_T it is the exact marginal's."""
    sde, target = VPSDE(), GAUSS
    D = target.dim
    x = target.marginal_sample(3, sde.t_min, sde, generator=torch.Generator().manual_seed(14)).clamp(-1, 1)
    kw = dict(divergence="exact", rtol=1e-7, atol=1e-7, prior_logp=_exact_pT(target, sde))
    lp = log_likelihood(sde, target.model(sde), x, **kw).logp
    for (lo, hi), n in (((-1.0, 1.0), 8), ((0.0, 1.0), 8), ((-1.0, 1.0), 5), ((-1.0, 3.0), 8)):
        if (x < lo).any():
            continue
        bpd = bits_per_dim(sde, target.model(sde), x, data_range=(lo, hi), n_bits=n, dequantize=None, **kw)
        torch.testing.assert_close(bpd, -lp / (D * LN2) - math.log2(hi - lo) + n, atol=1e-9, rtol=0)
    # a level count that is not a power of two (17 grey levels): offset log2(17) - log2(hi - lo)
    bpd = bits_per_dim(sde, target.model(sde), x, levels=17, dequantize=None, **kw)
    torch.testing.assert_close(bpd, -lp / (D * LN2) - 1.0 + math.log2(17), atol=1e-9, rtol=0)
    bpd = bits_per_dim(sde, target.model(sde), x, dequantize=None, **kw)
    exact = target.marginal_log_prob(x, sde.t_min, sde)
    # score_sde's convention for 8-bit data in [-1, 1]: offset 7
    torch.testing.assert_close(bpd, -exact / (D * LN2) + 7.0, atol=1e-4, rtol=0)


def _std_normal_cdf(z):
    return 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))


def test_bits_per_dim_of_a_discretized_gaussian():
    """n-bit integers of a discretized Gaussian law. The model is the exact score of the
    continuous law, so the dequantized bpd is the uniform-dequantization bound, which is
    known in closed form for a fixed integer vector k:

        E_u[-log p(x)] = sum_i 1/2 log(2 pi v_i) + E[(x_i - m_i)^2] / (2 v_i),
        E[(x - m)^2] = ((b - m)^3 - (a - m)^3) / (3 (b - a))   for x ~ U[a, b],

    with p = p_{t_min} = N(m, v) and [a, b] the bin of k in data space. N copies of k get N
    independent dequantizations: their mean bpd must match the closed form within 5
    standard errors (+ the ODE tolerance). The bound must lie above the discrete law's exact
    -log2 P(k) / D (Jensen), by at most the fine-bin gap w^2 / (24 v ln 2) per dimension (to
    second order, checked with a 10% margin): this pins the n-bit offset."""
    sde, target = VPSDE(), GAUSS
    D, n_bits, lo, hi = target.dim, 5, -1.0, 1.0
    levels = 2**n_bits
    w = (hi - lo) / levels
    k = torch.tensor([[24, 13, 27]], dtype=torch.int64)  # bins near the mean of each coordinate
    N = 256
    ks = k.expand(N, -1).clone()
    gen = torch.Generator().manual_seed(15)
    kw = dict(divergence="exact", rtol=1e-7, atol=1e-7, prior_logp=_exact_pT(target, sde))
    bpd = bits_per_dim(
        sde, target.model(sde), ks, data_range=(lo, hi), n_bits=n_bits, generator=gen, dtype=torch.float64, **kw
    )
    assert bpd.shape == (N,) and bpd.dtype == torch.float64
    a = lo + w * k[0].double()
    b = a + w
    alpha, sigma = float(sde.alpha(sde.t_min)), float(sde.sigma(sde.t_min))
    m = alpha * target.mean
    v = alpha**2 * target.std**2 + sigma**2
    e2 = ((b - m) ** 3 - (a - m) ** 3) / (3 * (b - a))
    nll = (0.5 * torch.log(2 * math.pi * v) + e2 / (2 * v)).sum()
    expected = nll / (D * LN2) - math.log2(hi - lo) + n_bits
    se = bpd.std() / math.sqrt(N)
    assert abs(bpd.mean() - expected) < 5 * se + 1e-5
    # the discrete law: P(k) = prod_i [Phi((b - m)/sqrt v) - Phi((a - m)/sqrt v)]
    sd = torch.sqrt(v)
    P = _std_normal_cdf((b - m) / sd) - _std_normal_cdf((a - m) / sd)
    discrete = -torch.log2(P).sum() / D
    gap = expected - discrete
    assert gap > 0
    assert gap < 1.1 * (w**2 / (24 * v * LN2)).sum() / D
    assert abs(bpd.mean() - discrete) < 5 * se + 1.1 * (w**2 / (24 * v * LN2)).sum() / D


def test_bits_per_dim_input_forms_and_repeats_agree():
    sde, target = VPSDE(), GAUSS
    kw = dict(divergence="exact", rtol=1e-6, atol=1e-6)
    k = torch.tensor([[200, 90, 230], [128, 100, 250]], dtype=torch.uint8)
    model = target.model(sde)

    def gen():
        return torch.Generator().manual_seed(16)

    a = bits_per_dim(sde, model, k, generator=gen(), dtype=torch.float64, **kw)
    # the same levels as ToTensor-style floats k/255 scaled to [-1, 1]
    xf = (k.double() / 255) * 2 - 1
    b = bits_per_dim(sde, model, xf, generator=gen(), **kw)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # n_repeats averages successive draws of the same generator
    r2 = bits_per_dim(sde, model, k, n_repeats=2, generator=gen(), dtype=torch.float64, **kw)
    g = gen()
    one = bits_per_dim(sde, model, k, generator=g, dtype=torch.float64, **kw)
    two = bits_per_dim(sde, model, k, generator=g, dtype=torch.float64, **kw)
    torch.testing.assert_close(r2, (one + two) / 2, atol=1e-10, rtol=0)
    assert not torch.equal(one, two)
    # integers without dequantization sit at the bin centres
    c = bits_per_dim(sde, model, k, dequantize=None, dtype=torch.float64, **kw)
    xc = -1 + 2 * (k.double() + 0.5) / 256
    torch.testing.assert_close(c, bits_per_dim(sde, model, xc, dequantize=None, **kw), atol=1e-10, rtol=0)


# ------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_cuda_agrees_with_cpu():
    sde, target = VPSDE(), MIX
    x = target.marginal_sample(4, sde.t_min, sde, generator=torch.Generator().manual_seed(18))
    kw = dict(divergence="exact", rtol=1e-7, atol=1e-7, return_latent=True)
    cpu = log_likelihood(sde, target.model(sde), x, **kw)
    gpu = log_likelihood(sde, target.model(sde), x.cuda(), **kw)
    assert gpu.logp.device.type == "cuda" and gpu.z.device.type == "cuda"
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, atol=1e-6, rtol=0)
    # the default path (Hutchinson, float32) on CUDA, Gaussian target (Rademacher is exact)
    xg = GAUSS.marginal_sample(8, sde.t_min, sde, generator=torch.Generator().manual_seed(19), dtype=torch.float32)
    gen = torch.Generator(device="cuda").manual_seed(0)
    r = log_likelihood(sde, GAUSS.model(sde), xg.cuda(), generator=gen, prior_logp=_exact_pT(GAUSS, sde))
    exact = GAUSS.marginal_log_prob(xg.double(), sde.t_min, sde)
    assert ((r.logp.double().cpu() - exact).abs() / (GAUSS.dim * LN2)).max() < 1e-3
    k = torch.randint(0, 256, (4, 3), generator=torch.Generator().manual_seed(20)).cuda()
    bpd = bits_per_dim(sde, GAUSS.model(sde), k, generator=gen)
    assert bpd.device.type == "cuda" and bool(torch.isfinite(bpd).all())


def test_cuda_graph_needs_cuda():
    sde = VPSDE()
    x = GAUSS.sample(2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="cuda_graph=True needs x on a CUDA device"):
        log_likelihood(sde, GAUSS.model(sde), x, cuda_graph=True)


@pytest.mark.gpu
def test_cuda_graph_refuses_the_hutchinson_divergence():
    """A captured Hutchinson evaluation replayed wrong values on an H200 (218 nats off): refused, loudly."""
    sde = VPSDE()
    target = Gaussian(torch.zeros(3, 4, 4), 0.5)
    x = target.sample(2, generator=torch.Generator().manual_seed(1), dtype=torch.float32).cuda()
    with pytest.raises(ValueError, match="cuda_graph=True needs divergence='exact'"):
        log_likelihood(sde, target.model(sde), x, divergence="hutchinson", cuda_graph=True)


@pytest.mark.gpu
@pytest.mark.parametrize("divergence", ["exact"])
def test_cuda_graph_gives_the_eager_answer(divergence):
    sde = VPSDE()
    target = Gaussian(torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(0)), 0.5)
    x = target.sample(8, generator=torch.Generator().manual_seed(1), dtype=torch.float32).cuda()
    model = target.model(sde)
    kw = dict(divergence=divergence, rtol=1e-5, atol=1e-5)
    eager = log_likelihood(sde, model, x, generator=torch.Generator("cuda").manual_seed(2), **kw)
    graph = log_likelihood(
        sde, model, x, generator=torch.Generator("cuda").manual_seed(2), cuda_graph=True, return_latent=True, **kw
    )
    assert graph.nfe == eager.nfe
    torch.testing.assert_close(graph.logp, eager.logp, rtol=1e-5, atol=1e-4)
    if divergence == "exact":
        # With the exact log p_T at the latent (this target's mean offset makes N(0, I) a few 1e-3
        # bits/dim off), only the integration error remains: within 1e-3 bits/dim in float32 at
        # the default tolerances. (One Hutchinson probe has its own spread: not held to this.)
        exact = target.marginal_log_prob(x.double(), sde.t_min, sde)
        ode = graph.delta_logp.double() + target.marginal_log_prob(graph.z.double(), sde.T, sde)
        d = target.dim
        assert float(((ode - exact).abs() / (d * math.log(2))).max()) < 1e-3


def _standing_still(x, t):
    """The score of N(0, I) under VP at every t: the probability flow f x - g^2/2 s = 0 (to round-off)."""
    return -x


@pytest.mark.parametrize(
    "device,cuda_graph",
    [
        ("cpu", False),
        pytest.param("cuda", False, marks=pytest.mark.gpu),
        pytest.param("cuda", True, marks=pytest.mark.gpu),
    ],
    ids=["cpu", "cuda", "cuda-graph"],
)
def test_fixed_step_solve_synchronizes_per_solve_not_per_evaluation(device, cuda_graph):
    """The fixed-step solve's stage times are filled on x's device: building each from a host scalar
    (``torch.tensor(u, device=...)``, or a host tensor moved by the dynamics) is one host-device
    synchronization per evaluation on a GPU. On CUDA the synchronizations of a solve do not grow with
    its steps (rk4: 8 and 32 evaluations), eager or captured; the answer is the exact one everywhere
    (a flow that stands still: log p(x) = log N(x; 0, I), no change in the latent)."""
    import warnings

    sde = VPSDE()
    model = sdesolve.ScoreModel(_standing_still, sde, prediction="score")
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(device)
    exact = -0.5 * x.cpu().pow(2).sum(1) - 1.5 * math.log(2 * math.pi)
    kw = dict(divergence="exact", method="rk4", cuda_graph=cuda_graph, return_latent=True)
    syncs = {}
    for steps in (2, 2, 8):  # the first solve warms up
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("warn")
            try:
                r = log_likelihood(sde, model, x, steps=steps, **kw)
            finally:
                if device == "cuda":
                    torch.cuda.set_sync_debug_mode(0)
        syncs[steps] = sum("synchroniz" in str(w.message) for w in caught)
        assert r.nfe == 4 * steps and r.logp.device == x.device
        torch.testing.assert_close(r.logp.cpu(), exact, rtol=0, atol=1e-12)
        torch.testing.assert_close(r.z, x, rtol=0, atol=1e-14)  # zero up to the round-off of f and g^2 / 2
        torch.testing.assert_close(r.delta_logp.cpu(), torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-13)
    assert syncs[8] == syncs[2], syncs


@pytest.mark.gpu
def test_cuda_graph_counts_the_evaluations_and_is_captured_again_once(monkeypatch):
    """The captured dynamics count on the model what the eager solve counts (warm-up, capture and the
    checks are not evaluations of the solve). A capture whose check fails is taken again, once: the
    second is used (the eager answer); a second failure raises instead of integrating wrong dynamics,
    after two captures, not three."""
    import sdesolve.likelihood as lik

    sde = VPSDE()
    x = GAUSS.marginal_sample(4, sde.t_min, sde, generator=torch.Generator().manual_seed(3)).double().cuda()
    model = GAUSS.model(sde)
    kw = dict(divergence="exact", method="rk4", steps=4, prior_logp=_exact_pT(GAUSS, sde))
    n0 = model.nfe
    eager = log_likelihood(sde, model, x, **kw)
    n_eager = model.nfe - n0
    assert n_eager == eager.nfe == 16
    captures = []
    capture = lik.capture_cuda_graph

    def counted(fn, **kwargs):
        captures.append(kwargs.get("warmup"))
        return capture(fn, **kwargs)

    monkeypatch.setattr(lik, "capture_cuda_graph", counted)
    n0 = model.nfe
    graph = log_likelihood(sde, model, x, cuda_graph=True, **kw)
    assert len(captures) == 1 and graph.nfe == eager.nfe and model.nfe - n0 == n_eager
    torch.testing.assert_close(graph.logp, eager.logp, rtol=0, atol=1e-10)

    reproduces, checks = lik._GraphedDynamics._reproduces, []

    def fails_first(self, func, u, y):
        checks.append(u)
        return len(checks) > 1 and reproduces(self, func, u, y)

    monkeypatch.setattr(lik._GraphedDynamics, "_reproduces", fails_first)
    captures.clear()
    n0 = model.nfe
    again = log_likelihood(sde, model, x, cuda_graph=True, **kw)
    assert len(captures) == 2 and len(checks) == 3 and model.nfe - n0 == n_eager
    torch.testing.assert_close(again.logp, eager.logp, rtol=0, atol=1e-10)

    monkeypatch.setattr(lik._GraphedDynamics, "_reproduces", lambda self, func, u, y: False)
    captures.clear()
    with pytest.raises(
        RuntimeError,
        match=r"^cuda_graph=True: the captured dynamics do not reproduce an eager evaluation \(after a "
        r"re-capture\); pass cuda_graph=False$",
    ):
        log_likelihood(sde, model, x, cuda_graph=True, **kw)
    assert len(captures) == 2


def _still_flow_log_p(dev, cuda_graph):
    """VE with a score that is 0 everywhere, on data with exact zeros: the augmented dynamics vanish
    identically (f = 0, s = 0, tr = 0), so the latent is x, delta log p is 0 and log p the prior's at x."""
    sde = VESDE()
    x = torch.tensor([[0.0, 1.0, -2.0], [0.5, 0.0, 0.0]], dtype=torch.float64, device=dev)
    res = log_likelihood(sde, lambda z, t: 0.0 * z, x, divergence="exact", method="rk4", steps=4,
                         cuda_graph=cuda_graph, return_latent=True)  # fmt: skip
    assert torch.equal(res.z, x) and torch.equal(res.delta_logp, torch.zeros(2, dtype=torch.float64, device=dev))
    torch.testing.assert_close(res.logp, sde.prior_logp(x), rtol=0, atol=0)
    return res


@pytest.mark.gpu
def test_cuda_graph_takes_a_flow_that_stands_exactly_still_on_data_with_zeros():
    """The CUDA-graph capture is checked by replaying at (u0, y0) and (u1, y0 / 2) against eager evaluations.
    For a flow whose dynamics are exactly 0 (VE, score 0) the check must accept a replay that reproduces 0
    (its tolerance is relative to max |ref| = 0, plus the dtype's tiny), and its second state must stay finite
    for data with exact zeros; the answer is then the eager one, exactly: log p = the prior's log p at x."""
    eager = _still_flow_log_p("cuda", False)
    graph = _still_flow_log_p("cuda", True)
    assert torch.equal(graph.logp, eager.logp)


@pytest.mark.gpu
def test_cuda_graph_refuses_a_replay_one_percent_off(monkeypatch):
    """A capture whose replays come out 1 % off the eager dynamics (the failure the check exists for: a
    Hutchinson capture once replayed 218 nats off) fails the check, 1e-4 of the largest entry, twice: the
    RuntimeError, not a solve of wrong dynamics."""
    import sdesolve.likelihood as lik

    capture = lik.capture_cuda_graph

    def off_by_one_percent(fn, **kwargs):
        graph, out, per_call = capture(fn, **kwargs)

        class Off:
            def replay(self):
                graph.replay()
                out.mul_(1.01)

        return Off(), out, per_call

    monkeypatch.setattr(lik, "capture_cuda_graph", off_by_one_percent)
    sde = VPSDE()
    x = GAUSS.marginal_sample(4, sde.t_min, sde, generator=torch.Generator().manual_seed(3)).double().cuda()
    with pytest.raises(RuntimeError, match=r"^cuda_graph=True: the captured dynamics do not reproduce"):
        log_likelihood(sde, GAUSS.model(sde), x, divergence="exact", method="rk4", steps=4, cuda_graph=True)
