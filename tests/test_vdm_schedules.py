"""VDM noise schedules: LearnedScalarGamma and LearnedMonotoneGamma (Kingma et al. 2021).

Proofs: the monotone network stays strictly increasing with gamma' > 0 under random weights
(hypothesis), its endpoints are pinned exactly when asked, its closed-form gamma' equals
autograd's, the initializations reproduce FixedLinearGamma, and gradients of every VDMSDE
coefficient reach the schedule's parameters with the right values (checked against central
differences in the parameters, in float64).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sdesolve.sde.base import _derivative
from sdesolve.sde.vdm import VDMSDE, FixedLinearGamma, GammaSchedule, LearnedMonotoneGamma, LearnedScalarGamma

F64 = torch.float64


def _random_monotone(seed, scale, n_features, g0, g1, learn_endpoints=False, dtype=F64):
    """A monotone schedule with random (not VDM-initialized) weights of the given scale."""
    gen = torch.Generator().manual_seed(seed)
    sched = LearnedMonotoneGamma(g0, g1, n_features=n_features, learn_endpoints=learn_endpoints, dtype=dtype)
    with torch.no_grad():
        for p in sched.shape_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) * scale)
    return sched


monotone_cases = st.tuples(
    st.integers(0, 2**31 - 1),  # seed
    st.sampled_from([0.01, 0.3, 1.0, 3.0, 10.0]),  # weight scale
    st.sampled_from([1, 4, 64, 1024]),  # width
    st.floats(-15.0, 0.0),  # gamma(0)
    st.floats(0.5, 20.0),  # gamma(1) - gamma(0)
)


@given(monotone_cases)
def test_monotone_gamma_strictly_increasing_with_pinned_endpoints(case):
    seed, scale, width, g0, span = case
    g1 = g0 + span
    sched = _random_monotone(seed, scale, width, g0, g1)
    t = torch.linspace(0.0, 1.0, 1001, dtype=F64)
    with torch.no_grad():
        gam = sched(t)
        dgam = sched.derivative(t)
    # endpoints pinned exactly (up to rounding of the normalization)
    assert abs(float(gam[0]) - g0) <= 1e-12 * max(1.0, abs(g0))
    assert abs(float(gam[-1]) - g1) <= 1e-12 * max(1.0, abs(g1))
    # strictly increasing on a fine grid and gamma' > 0 everywhere on it
    assert bool((gam[1:] > gam[:-1]).all())
    assert bool((dgam > 0).all())
    # gamma' integrates to gamma(1) - gamma(0) (trapezoid, smooth integrand)
    integral = torch.trapezoid(dgam, t)
    assert abs(float(integral) - span) <= 1e-3 * span


@given(monotone_cases)
def test_monotone_gamma_derivative_is_exact(case):
    seed, scale, width, g0, span = case
    sched = _random_monotone(seed, scale, width, g0, g0 + span, learn_endpoints=True)
    t = torch.rand(64, generator=torch.Generator().manual_seed(seed), dtype=F64)
    closed = sched.derivative(t)
    by_autograd = _derivative(sched, t)
    torch.testing.assert_close(closed, by_autograd, rtol=1e-11, atol=1e-11)


def test_learned_endpoints_are_parameters_and_pinned_ones_are_buffers():
    learn = LearnedMonotoneGamma(-10.0, 4.0, n_features=8, learn_endpoints=True, dtype=F64)
    pinned = LearnedMonotoneGamma(-10.0, 4.0, n_features=8, learn_endpoints=False, dtype=F64)
    names = {n for n, _ in learn.named_parameters()}
    assert {"gamma_start", "gamma_width"} <= names
    assert not ({"gamma_start", "gamma_width"} & {n for n, _ in pinned.named_parameters()})
    assert {"gamma_start", "gamma_width"} <= {n for n, _ in pinned.named_buffers()}
    with torch.no_grad():
        learn.gamma_start.fill_(-7.0)
        learn.gamma_width.fill_(-9.0)  # |width| is used: gamma(1) = -7 + 9
    with torch.no_grad():
        assert float(learn(torch.tensor(0.0, dtype=F64))) == pytest.approx(-7.0, abs=1e-12)
        assert float(learn(torch.tensor(1.0, dtype=F64))) == pytest.approx(2.0, abs=1e-12)
    # the shape parameters never move the endpoints: gradient of gamma(0), gamma(1) w.r.t. them is 0
    ends = learn(torch.tensor([0.0, 1.0], dtype=F64)).sum()
    grads = torch.autograd.grad(ends, learn.shape_parameters(), allow_unused=True)
    for g in grads:
        assert g is None or float(g.abs().max()) < 1e-12


def test_initializations_match_fixed_linear():
    t = torch.linspace(0, 1, 101, dtype=F64)
    fixed = FixedLinearGamma(-13.3, 5.0)
    scalar = LearnedScalarGamma(-13.3, 5.0)
    torch.testing.assert_close(scalar(t), fixed(t), rtol=0, atol=1e-5)  # float32 parameters
    torch.testing.assert_close(scalar.derivative(t), fixed.derivative(t), rtol=0, atol=1e-5)
    torch.testing.assert_close(scalar.inverse(fixed(t)), t, rtol=0, atol=1e-6)
    mono = LearnedMonotoneGamma(-13.3, 5.0, generator=torch.Generator().manual_seed(0))
    # VDM's init: hidden weights ~ N(0, 0.01^2) against a linear weight of 18.3
    with torch.no_grad():
        assert float((mono(t) - fixed(t)).abs().max()) < 1e-3
        assert float((mono.derivative(t) / 18.3 - 1).abs().max()) < 1e-3


def test_dtype_and_device_contract():
    sched = LearnedMonotoneGamma(n_features=16)  # float32 parameters
    t64 = torch.linspace(0, 1, 5, dtype=F64)
    assert sched(t64).dtype == F64 and sched.derivative(t64).dtype == F64
    t32 = t64.float()
    assert sched(t32).dtype == torch.float32
    out = sched(0.5)  # Python numbers give float64
    assert out.dtype == F64 and out.dim() == 0
    sde = VDMSDE(sched)
    a = sde.alpha(t64)
    assert a.dtype == F64
    torch.testing.assert_close(a**2 + sde.sigma(t64) ** 2, torch.ones_like(t64), rtol=0, atol=1e-12)
    # t_of_log_snr inverts through bisection (no closed-form inverse)
    with torch.no_grad():
        lam = sde.log_snr(t64)
    torch.testing.assert_close(sde.t_of_log_snr(lam), t64, rtol=0, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="gamma_min must be < gamma_max"):
        LearnedMonotoneGamma(5.0, -13.3)
    with pytest.raises(ValueError, match="finite"):
        LearnedScalarGamma(-math.inf, 5.0)
    with pytest.raises(ValueError, match="n_features"):
        LearnedMonotoneGamma(n_features=0)
    with pytest.raises(TypeError, match="dtype"):
        LearnedScalarGamma(dtype=torch.int64)
    with pytest.raises(TypeError, match="floating-point"):
        LearnedMonotoneGamma(n_features=2)(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="float"):
        LearnedScalarGamma()("0.5")


def _coefficients(sde, t):
    return {"alpha": sde.alpha(t), "sigma": sde.sigma(t), "f": sde.f(t), "g2": sde.g2(t)}


@pytest.mark.parametrize("kind", ["scalar", "monotone"])
def test_gradients_of_sde_coefficients_reach_schedule_parameters(kind):
    """d coefficient / d parameter by autograd equals a central difference in the parameter."""
    if kind == "scalar":
        sched = LearnedScalarGamma(-11.0, 6.0, dtype=F64)
    else:
        sched = _random_monotone(3, 1.0, 8, -11.0, 6.0, learn_endpoints=True)
    sde = VDMSDE(sched)
    t = torch.tensor([0.0, 0.13, 0.5, 0.77, 1.0], dtype=F64)
    params = dict(sched.named_parameters())
    weights = torch.linspace(0.5, 1.5, t.numel(), dtype=F64)
    for cname in ("alpha", "sigma", "f", "g2"):
        value = (_coefficients(sde, t)[cname] * weights).sum()
        grads = torch.autograd.grad(value, list(params.values()))
        for (pname, p), g in zip(params.items(), grads):
            assert g is not None
            flat = p.detach().reshape(-1)
            for j in range(min(flat.numel(), 3)):
                h = 1e-6 * max(1.0, abs(float(flat[j])))
                vals = []
                for sign in (1.0, -1.0):
                    with torch.no_grad():
                        p.view(-1)[j] += sign * h
                        vals.append(float((_coefficients(sde, t)[cname] * weights).sum()))
                        p.view(-1)[j] -= sign * h
                fd = (vals[0] - vals[1]) / (2 * h)
                got = float(g.reshape(-1)[j])
                assert got == pytest.approx(fd, rel=1e-5, abs=1e-8), (cname, pname, j)
        # the endpoints always matter: alpha(0) depends on gamma(0)
    g = torch.autograd.grad(sde.alpha(0.0), next(iter(params.values())))[0]
    assert float(g.abs().sum()) > 0


def test_alpha_gradient_in_closed_form():
    """d alpha(t) / d gamma(0) = -1/2 alpha sigmoid(gamma) * d gamma(t)/d gamma(0) = -1/2 alpha sigma^2."""
    sched = _random_monotone(1, 2.0, 16, -9.0, 7.0, learn_endpoints=True)
    sde = VDMSDE(sched)
    t = torch.tensor([0.0, 0.3, 0.9], dtype=F64)
    alpha = sde.alpha(t)
    (g,) = torch.autograd.grad(alpha.sum(), sched.gamma_start)
    with torch.no_grad():
        expect = (-0.5 * sde.alpha(t) * sde.sigma(t) ** 2).sum()
    assert float(g) == pytest.approx(float(expect), rel=1e-12)


# ------------------------------------------------------------------ the process's gamma, gamma' and inverse
@given(monotone_cases.filter(lambda c: c[2] <= 64))  # the bisection inverse: narrow networks keep it fast
def test_vdm_process_gamma_and_gamma_prime_are_the_schedules(case):
    """sde._gamma / sde._gamma_prime (what losses ask for) are the schedule's own gamma and exact gamma',
    which is -d log SNR/dt by autograd; the bisection inverse returns the time of each log-SNR."""
    seed, scale, width, g0, dg = case
    sched = _random_monotone(seed, scale, width, g0, g0 + dg)
    sde = VDMSDE(sched)
    t = torch.linspace(0.0, 1.0, 17, dtype=F64)
    torch.testing.assert_close(sde._gamma(t), sched(t), rtol=0, atol=0)
    torch.testing.assert_close(sde._gamma_prime(t), sched.derivative(t), rtol=0, atol=0)
    torch.testing.assert_close(sde._gamma_prime(t), -_derivative(sde._log_snr, t), rtol=1e-10, atol=1e-10)
    back = sde.t_of_log_snr(sde.log_snr(t))
    # the bisection resolves t to float64; where gamma' is huge, a time error eps / gamma' is all one can ask
    torch.testing.assert_close(sde.log_snr(back), sde.log_snr(t), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize(
    "sched,closed",
    [
        (FixedLinearGamma(-13.3, 5.0), lambda t: (-13.3 + 18.3 * t, torch.full_like(t, 18.3))),
        (LearnedScalarGamma(-10.0, 6.0, dtype=F64), lambda t: (-10.0 + 16.0 * t, torch.full_like(t, 16.0))),
    ],
    ids=["fixed", "scalar"],
)
def test_vdm_process_gamma_closed_forms(sched, closed):
    sde = VDMSDE(sched)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
    g, dg = closed(t)
    torch.testing.assert_close(sde._gamma(t), g, rtol=1e-15, atol=1e-14)
    torch.testing.assert_close(sde._gamma_prime(t), dg, rtol=1e-15, atol=0)
    # sigma^2 = sigmoid(gamma), alpha^2 = sigmoid(-gamma); and the closed-form inverse
    torch.testing.assert_close(sde.sigma(t) ** 2, torch.sigmoid(g), rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.alpha(t) ** 2, torch.sigmoid(-g), rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.t_of_log_snr(-g), t, rtol=0, atol=1e-15)


def test_a_users_schedule_inherits_an_exact_derivative():
    """``GammaSchedule.derivative`` (the default of a schedule without a closed form) is d gamma/dt by
    autograd: for gamma(t) = g0 + c t^2 it is 2 c t, and VDMSDE takes gamma' from it."""
    from sdesolve.sde.vdm import GammaSchedule

    class Quadratic(GammaSchedule):
        def forward(self, t):
            return -10.0 + 15.0 * t * t

    sched = Quadratic()
    t = torch.linspace(0.05, 1.0, 20, dtype=F64)
    torch.testing.assert_close(sched.derivative(t), 30.0 * t, rtol=1e-14, atol=0)
    torch.testing.assert_close(VDMSDE(sched)._gamma_prime(t), 30.0 * t, rtol=1e-14, atol=0)


def test_learned_scalar_gamma_repr_gives_both_endpoints():
    """``gamma(0) = b``, ``gamma(1) = b + |w|``, whatever the sign w was trained to."""
    sched = LearnedScalarGamma(-13.3, 5.0)
    assert repr(sched) == "LearnedScalarGamma(gamma(0)=-13.3, gamma(1)=5)"
    with torch.no_grad():
        sched.w.neg_()
    assert repr(sched) == "LearnedScalarGamma(gamma(0)=-13.3, gamma(1)=5)"


def test_learned_scalar_gamma_defaults_to_vdms_fixed_schedule():
    """``LearnedScalarGamma()`` starts as ``FixedLinearGamma()``: gamma(0) = -13.3, gamma(1) = 5 (Kingma et
    al. 2021's defaults)."""
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    learned, fixed = LearnedScalarGamma(dtype=torch.float64), FixedLinearGamma()
    torch.testing.assert_close(learned(t), fixed(t), rtol=1e-15, atol=1e-14)
    assert float(learned(torch.tensor(1.0, dtype=torch.float64)).detach()) == pytest.approx(5.0, abs=1e-14)


def test_the_per_example_gradient_scale_must_be_set_before_backward():
    """The identity behind schedule_variance_loss multiplies the gradient by the scale set after the
    forward pass; a backward before it is set is refused with a message that says so."""
    from sdesolve.sde.vdm import _GradScale, _ScaleGradient

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    holder = _GradScale()
    y = _ScaleGradient.apply(x, holder)
    with pytest.raises(RuntimeError, match=r"^the per-example gradient scale was never set \(backward ran before"):
        y.sum().backward(retain_graph=True)
    holder.scale = torch.tensor([3.0, 0.5], dtype=torch.float64)
    y.sum().backward()
    assert x.grad.dtype == torch.float32 and torch.equal(x.grad, torch.tensor([3.0, 0.5]))


# ------------------------------------------------------------------ the monotone network, term by term
def _documented_gamma(sched, t):
    """gamma(t) and gamma'(t) of LearnedMonotoneGamma from its docstring, written out with a loop over the
    hidden units in float64: h(t) = |w1| t + (1/n) sum_k |w3_k| (2 sigmoid(|w2_k| (2t - 1) + b2_k) - 1)."""
    w1, w2, b2, w3 = (p.detach().to(F64).reshape(-1) for p in sched.shape_parameters())
    n = w2.numel()

    def h(tt):
        val = w1.abs()[0] * tt
        der = w1.abs()[0] * torch.ones_like(tt)
        for k in range(n):
            s = torch.sigmoid(w2[k].abs() * (2.0 * tt - 1.0) + b2[k])
            val = val + w3[k].abs() * (2.0 * s - 1.0) / n
            der = der + w3[k].abs() * 4.0 * s * (1.0 - s) * w2[k].abs() / n
        return val, der

    (hv, hd), (h0, _), (h1, _) = h(t), h(torch.zeros((), dtype=F64)), h(torch.ones((), dtype=F64))
    g0 = float(sched.gamma_0.detach())
    span = float(sched.gamma_1.detach()) - g0
    return g0 + span * (hv - h0) / (h1 - h0), span * hd / (h1 - h0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_monotone_gamma_is_its_documented_formula(seed):
    """gamma and gamma' of a monotone schedule with random weights (biases included, a few units so every
    hidden unit counts) are the docstring's formula computed unit by unit, to float64 round-off."""
    sched = _random_monotone(seed, 1.5, 5, -11.0, 7.0, learn_endpoints=True)
    with torch.no_grad():
        sched.gamma_width.fill_(-18.0)  # |width| is used
    t = torch.linspace(0.0, 1.0, 33, dtype=F64)
    g, dg = _documented_gamma(sched, t)
    with torch.no_grad():
        torch.testing.assert_close(sched(t), g, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(sched.derivative(t), dg, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_monotone_gamma_initialization_is_vdms(dtype):
    """VDM's initialization (class docstring): w1 = gamma_max - gamma_min, b2 = 0, w2 then w3 drawn from the
    generator as standard normals in the parameter dtype times init_std; 1024 hidden units and learnable
    endpoints by default; the checkpoint holds the parameters only (no helper buffers)."""
    n, std = 16, 0.5
    sched = LearnedMonotoneGamma(-13.3, 5.0, n_features=n, init_std=std, dtype=dtype,
                                 generator=torch.Generator().manual_seed(3))  # fmt: skip
    g = torch.Generator().manual_seed(3)
    w2 = torch.randn((n, 1), generator=g, dtype=dtype) * std
    w3 = torch.randn((1, n), generator=g, dtype=dtype) * std
    l1, l2, b2, l3 = sched.shape_parameters()
    assert all(p.dtype == dtype for p in (l1, l2, b2, l3))
    assert torch.equal(l1.detach(), torch.full((1, 1), 18.3, dtype=dtype))
    assert torch.equal(l2.detach(), w2) and torch.equal(l3.detach(), w3)
    assert torch.equal(b2.detach(), torch.zeros(n, dtype=dtype))
    # the same generator seed gives the same schedule; the generator, not the global RNG, draws
    torch.manual_seed(0)
    again = LearnedMonotoneGamma(-13.3, 5.0, n_features=n, init_std=std, dtype=dtype,
                                 generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(again.shape_parameters(), sched.shape_parameters()))
    default = LearnedMonotoneGamma()
    assert default.n_features == 1024 and default.l2.weight.shape == (1024, 1)
    assert isinstance(default.gamma_start, torch.nn.Parameter) and isinstance(default.gamma_width, torch.nn.Parameter)
    assert set(sched.state_dict()) == {"l1.weight", "l2.weight", "l2.bias", "l3.weight", "gamma_start", "gamma_width"}
    pinned = LearnedMonotoneGamma(n_features=n, learn_endpoints=False)
    assert set(pinned.state_dict()) == {"l1.weight", "l2.weight", "l2.bias", "l3.weight", "gamma_start", "gamma_width"}


@pytest.mark.parametrize(
    "make",
    [
        lambda: LearnedMonotoneGamma(-12.0, 4.0, n_features=8, dtype=F64, generator=torch.Generator().manual_seed(1)),
        lambda: LearnedScalarGamma(-12.0, 4.0, dtype=F64),
    ],
    ids=["monotone", "scalar"],
)
def test_a_float64_schedule_takes_python_numbers_at_full_precision(make):
    """A Python number t is a float64 time: a float64 schedule answers it exactly as it answers the float64
    tensor (not t rounded to float32 first); results are float64."""
    sched = make()
    for t in (0.1, 1.0 / 3.0, 0.7):
        t64 = torch.tensor(t, dtype=F64)
        with torch.no_grad():
            assert torch.equal(sched(t), sched(t64)) and sched(t).dtype == F64
            assert torch.equal(sched.derivative(t), sched.derivative(t64))


def test_a_users_float32_inverse_reaches_the_process_as_float64_times():
    """The process's derived formulas are float64 in and out: a user's schedule whose closed-form inverse
    answers in float32 (it computes with float32 parameters) gives ``VDMSDE._t_of_log_snr`` (what the
    likelihood's log-SNR time map and the grids read) float64 times, equal to that inverse's values."""
    from sdesolve.sde.vdm import GammaSchedule

    class Linear32(GammaSchedule):
        def forward(self, t):
            return (-10.0 + 16.0 * t.float()).to(t.dtype)

        def inverse(self, gamma):
            return (gamma.float() + 10.0) / 16.0

    sde = VDMSDE(Linear32())
    lam = torch.tensor([9.0, 0.5, -5.9], dtype=F64)
    t = sde._t_of_log_snr(lam)
    assert t.dtype == F64
    torch.testing.assert_close(t, ((-lam).float() + 10.0).double() / 16.0, rtol=1e-7, atol=0)


@pytest.mark.gpu
def test_a_schedule_on_the_gpu_serves_host_times_on_the_host():
    """A float32 schedule moved to the GPU answers a host float64 tensor on the host and a Python number on
    its own device, both in float64 and equal to the same schedule's answers on the host."""
    dev = torch.device("cuda")
    makes = (
        lambda: LearnedMonotoneGamma(-12.0, 4.0, n_features=8, generator=torch.Generator().manual_seed(1)),
        lambda: LearnedScalarGamma(-12.0, 4.0),
    )
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    for make in makes:
        host, gpu = make(), make().to(dev)
        with torch.no_grad():
            for ask in (t, 0.3):
                for name in ("forward", "derivative"):
                    got, want = getattr(gpu, name)(ask), getattr(host, name)(ask)
                    assert got.device.type == ("cpu" if isinstance(ask, torch.Tensor) else dev.type)
                    assert got.dtype == F64
                    torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-6)


class _PlainGamma(torch.nn.Module):
    """A gamma(t) written as a plain module, not a GammaSchedule: gamma'(t) = 16.1 + t."""

    def forward(self, t):
        return -10.0 + 16.1 * t + 0.5 * t * t


class _Float32Derivative(GammaSchedule):
    """A schedule whose own ``derivative`` answers in float32."""

    def forward(self, t):
        return -10.0 + 16.1 * t

    def derivative(self, t):
        return torch.full(t.shape, 16.1, dtype=torch.float32)


def test_gamma_prime_of_a_plain_module_and_of_a_schedules_own_derivative():
    """VDMSDE's gamma'(t): a plain module's is its autograd derivative (to 1e-14 of the closed form); a
    GammaSchedule's is its own ``derivative``, handed on in float64 (a float32 answer widened exactly)."""
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(VDMSDE(_PlainGamma())._gamma_prime(t), 16.1 + t, rtol=1e-14, atol=0)
    g = VDMSDE(_Float32Derivative())._gamma_prime(t)
    assert g.dtype == torch.float64 and torch.equal(
        g, torch.full_like(t, float(torch.tensor(16.1, dtype=torch.float32)))
    )


class _Float32Gamma(GammaSchedule):
    """A schedule that answers in float32 (as a float32 learned schedule does), its derivative too."""

    def forward(self, t):
        return (-10.0 + 16.1 * t).float()

    def derivative(self, t):
        return torch.full(t.shape, 16.1, dtype=torch.float32)


def test_a_float32_schedule_feeds_the_float64_formulas_its_value_widened():
    """VDMSDE's alpha and sigma come from gamma in float64: a schedule answering in float32 gives
    alpha^2 = sigmoid(-g), sigma^2 = sigmoid(g) of its float32 value g widened exactly (to 1e-15), not
    formulas evaluated in float32 (off by ~1e-8)."""
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    sde = VDMSDE(_Float32Gamma())
    g = (-10.0 + 16.1 * t).float().double()
    torch.testing.assert_close(sde.alpha(t), torch.sqrt(torch.sigmoid(-g)), rtol=1e-15, atol=0)
    torch.testing.assert_close(sde.sigma(t), torch.sqrt(torch.sigmoid(g)), rtol=1e-15, atol=0)
    torch.testing.assert_close(sde.log_snr(t), -g, rtol=0, atol=0)


def test_equal_gamma_endpoints_are_refused():
    """gamma_min = gamma_max is no schedule (the log-SNR would not decrease): refused by name, as gamma_min > gamma_max is."""
    for lo, hi in ((5.0, 5.0), (6.0, 5.0)):
        with pytest.raises(ValueError, match=rf"^gamma_min must be < gamma_max, got gamma_min={lo}, gamma_max={hi}$"):
            FixedLinearGamma(lo, hi)
