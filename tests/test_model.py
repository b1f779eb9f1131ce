"""ScoreModel: exact conversions between eps / x0 / v / score, one network call per view,
time inputs, plain callables, process mismatch, bad network output."""

import pytest
import torch

import sdesolve as sd
from sdesolve.model import PREDICTIONS, ScoreModel, as_model

F64 = torch.float64


def processes():
    return {
        "vp": sd.VPSDE(),
        "ve": sd.VESDE(),
        "vdm": sd.VDMSDE(sd.FixedLinearGamma()),
        "subvp": sd.SubVPSDE(),
    }


def net(x, t):
    """An arbitrary smooth 'network' that depends on x and t."""
    return torch.sin(x) * (1 + t.reshape((-1,) + (1,) * (x.dim() - 1))) + 0.1 * x**2


def data(sde, event=(3, 2)):
    gen = torch.Generator().manual_seed(0)
    x = 2 * torch.randn((4,) + event, generator=gen, dtype=F64)
    t = torch.tensor([sde.t_min, 0.2, 0.6, 0.95 * sde.T], dtype=F64).clamp(min=1e-3)
    return x, t


def views_by_hand(out, x, a, s, pred):
    """eps, x0, v, score from a prediction, written from x = a x0 + s eps, v = a eps - s x0, score = -eps/s."""
    if pred == "eps":
        eps = out
        x0 = (x - s * eps) / a
    elif pred == "x0":
        x0 = out
        eps = (x - a * x0) / s
    elif pred == "score":
        eps = -s * out
        x0 = (x - s * eps) / a
    else:  # v: solve [a s; -s a] [x0; eps]... i.e. x = a x0 + s eps, v = a eps - s x0
        n = a * a + s * s
        x0 = (a * x - s * out) / n
        eps = (s * x + a * out) / n
    return {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s}


@pytest.mark.parametrize("name", ["vp", "ve", "vdm", "subvp"])
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_views_match_hand_formulas_and_round_trip(name, pred):
    sde = processes()[name]
    x, t = data(sde)
    a = sde.alpha(t)[:, None, None]
    s = sde.sigma(t)[:, None, None]
    m = ScoreModel(net, sde, prediction=pred, time_input=lambda t: t)
    raw = net(x, t)
    expected = views_by_hand(raw, x, a, s, pred)
    # Converting through x0 cancels x - alpha x0 = sigma eps: rounding of order eps_64 |x| / sigma^2
    # relative to the score. Tolerance 1e-10 while sigma^2 >= 1e-6 (VP, VE, VDM at t >= 1e-3);
    # sub-VP has sigma^2 ~ 1e-8 at t = 1e-3, so its tolerance grows with 1 / sigma^2.
    rt = 1e-10 * max(1.0, 1e-6 / float(s.min() ** 2))
    for view in PREDICTIONS:
        got = m.predict(x, t, view)
        assert torch.allclose(got, expected[view], rtol=1e-10, atol=1e-12), view
        # round trip: a network that predicts `view` (returning `got`) seen back as `pred`
        back = ScoreModel(lambda x_, t_, got=got: got, sde, prediction=view).predict(x, t, pred)
        assert torch.allclose(back, raw, rtol=rt, atol=rt * float(raw.abs().max())), (view, pred)
    # named views
    assert torch.allclose(m.score(x, t), expected["score"], rtol=1e-10)
    assert torch.allclose(m.eps(x, t), expected["eps"], rtol=1e-10)
    assert torch.allclose(m.x0(x, t), expected["x0"], rtol=1e-10)
    assert torch.allclose(m.v(x, t), expected["v"], rtol=1e-10)
    assert torch.equal(m(x, t), raw)


@pytest.mark.parametrize("view", PREDICTIONS)
def test_each_view_costs_one_network_call(view):
    sde = sd.VPSDE()
    calls = []

    def counting(x, t):
        calls.append(1)
        return net(x, t)

    for pred in PREDICTIONS:
        m = ScoreModel(counting, sde, prediction=pred)
        x, t = data(sde)
        before = len(calls)
        m.predict(x, t, view)
        getattr(m, view)(x, 0.5)
        assert m.nfe == 2 and len(calls) - before == 2


def test_exact_target_views_are_consistent_under_every_view():
    # Target's exact score model, seen as eps / x0, agrees with the Tweedie formula computed by hand.
    sde = sd.VPSDE()
    target = sd.Gaussian(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0]))
    m = target.model(sde)
    x = torch.tensor([[0.3, 1.0], [-2.0, 0.5]], dtype=F64)
    t = 0.4
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    # E[x0 | xt] for a Gaussian prior: mu + a std^2 / (a^2 std^2 + s^2) (x - a mu)
    var0 = target.std**2
    x0 = target.mean + a * var0 / (a * a * var0 + s * s) * (x - a * target.mean)
    assert torch.allclose(m.x0(x, t), x0, rtol=1e-12)
    assert m.nfe == 1


def test_time_input_and_network_time_are_applied():
    seen = []

    def rec(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    sde = sd.VPSDE()
    x = torch.zeros(3, 2, dtype=torch.float32)
    t = torch.tensor([0.1, 0.5, 1.0], dtype=F64)
    ScoreModel(rec, sde, time_input=lambda t: 999 * t).eps(x, t)
    assert seen[-1].shape == (3,) and seen[-1].dtype == torch.float32
    assert torch.allclose(seen[-1].double(), 999 * t, rtol=1e-6)
    # default: sde.network_time (identity for continuous processes); a scalar t is expanded to (B,)
    ScoreModel(rec, sde).eps(x, 0.25)
    assert torch.equal(seen[-1], torch.full((3,), 0.25))
    # DiscreteVPSDE: the integer timestep k at t = (k + 1) / N
    dsde = sd.DiscreteVPSDE.from_schedule("linear", 1000)
    ScoreModel(rec, dsde).eps(x.double(), torch.tensor([0.001, 0.5, 1.0], dtype=F64))
    assert torch.allclose(seen[-1], torch.tensor([0.0, 499.0, 999.0], dtype=F64), atol=1e-9)


def test_plain_callable_means_a_score():
    sde = sd.VESDE()

    def score(x, t):
        return -x / (1 + t[:, None] ** 2)

    m = as_model(score, sde)
    x, t = torch.randn(3, 2, dtype=F64), torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    assert torch.equal(m.score(x, t), score(x, t))
    assert torch.allclose(m.eps(x, t), -sde.sigma(t)[:, None] * score(x, t), rtol=1e-14)
    # the callable receives the continuous time even for a discrete process (no network_time)
    dsde = sd.DiscreteVPSDE.from_schedule("linear", 1000)
    seen = []
    as_model(lambda x, t: seen.append(t) or torch.zeros_like(x), dsde).score(x, 0.5)
    assert torch.equal(seen[0], torch.full((3,), 0.5, dtype=F64))
    sm = ScoreModel(score, sde, prediction="score")
    assert as_model(sm, sde) is sm


def test_model_of_a_different_process_is_rejected():
    a, b = sd.VPSDE(), sd.VPSDE()
    m = ScoreModel(net, a)
    with pytest.raises(ValueError, match="different process"):
        b.reverse(m)
    with pytest.raises(ValueError, match="different process"):
        as_model(m, b)
    with pytest.raises(TypeError, match="model must be a ScoreModel or a callable"):
        as_model(3.0, a)


def test_network_wrong_shape_or_type_is_a_clear_error():
    sde = sd.VPSDE()
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"network returned shape \(2, 1\), expected the shape of x \(2, 3\)"):
        ScoreModel(lambda x, t: x[:, :1], sde).eps(x, 0.5)
    with pytest.raises(
        TypeError, match=r"the network <lambda> must return a tensor or an output holding one.*got float"
    ):
        ScoreModel(lambda x, t: 1.0, sde).eps(x, 0.5)
    with pytest.raises(ValueError, match="prediction must be one of"):
        ScoreModel(net, sde, prediction="noise")
    with pytest.raises(TypeError, match="net must be callable"):
        ScoreModel(3, sde)
    with pytest.raises(TypeError, match="time_input must be callable"):
        ScoreModel(net, sde, time_input=2.0)
    with pytest.raises(ValueError, match="view must be one of"):
        ScoreModel(net, sde).predict(x, 0.5, "velocity")


@pytest.mark.parametrize("event", [(5,), (3, 4, 4), (2, 3, 4, 2)])
def test_views_broadcast_over_any_rank(event):
    sde = sd.VDMSDE()
    m = ScoreModel(net, sde, prediction="v")
    x = torch.randn((3,) + event, dtype=torch.float32)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float32)
    for view in PREDICTIONS:
        y = m.predict(x, t, view)
        assert y.shape == x.shape and y.dtype == torch.float32
    # per-sample time: sample b uses t[b]
    y = m.eps(x, t)
    y1 = m.eps(x[1:2], float(t[1]))
    assert torch.allclose(y[1:2], y1, rtol=1e-6)


# --------------------------------------------------------------------------- precomputed coefs=
def _coef_processes():
    return {"vp": sd.VPSDE(), "ve": sd.VESDE(), "discrete": sd.DiscreteVPSDE.from_schedule("linear")}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["vp", "ve", "discrete"])
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_precomputed_coefs_give_the_same_views(name, pred, dtype):
    """coefs=(alpha(t), sigma(t)) (0-d, x's dtype, as the solvers hand them) reproduces every view of
    the plain path, for a time given as a float, a 0-d float64 tensor (the solvers' form) or a (B,) tensor.
    float32: bit-identical; float64: to 1e-15 relative (the float64 exp may round differently in the
    last place when evaluated on a 0-d vs a (B,) tensor). A wrong coefficient (alpha and sigma swapped)
    is detected."""
    sde = _coef_processes()[name]
    m = ScoreModel(net, sde, prediction=pred)
    x = data(sde)[0].to(dtype)
    for t in (0.37, sde.T, sde.t_min + 1e-3):
        t64 = torch.tensor(t, dtype=F64)
        a64, s64 = torch.exp(sde._log_alpha(t64)), torch.exp(sde._log_sigma(t64))
        coefs = (a64.to(dtype), s64.to(dtype))
        for view in PREDICTIONS:
            ref = m.predict(x, t, view)
            for tt in (t, t64, t64.expand(x.shape[0])):
                got = m.predict(x, tt, view, coefs=coefs)
                assert got.dtype == dtype and got.shape == x.shape
                if dtype == torch.float32:
                    assert torch.equal(got, ref), (view, tt)
                else:
                    torch.testing.assert_close(got, ref, rtol=1e-15, atol=0)
            assert torch.equal(getattr(m, view)(x, t64, coefs=coefs), m.predict(x, t64, view, coefs=coefs))
            if view != pred:
                # the coefficients are really used: swapped ones change the conversion
                bad = m.predict(x, t64, view, coefs=(coefs[1], coefs[0]))
                assert not torch.allclose(bad, ref, rtol=1e-3, atol=0), (view, t)


def test_coefs_path_counts_network_calls_and_validates():
    sde = sd.VPSDE()
    m = ScoreModel(net, sde, prediction="x0")
    x = torch.randn(4, 3, dtype=F64)
    c = (torch.tensor(0.5, dtype=F64), torch.tensor(0.8, dtype=F64))
    for view in PREDICTIONS:
        n = m.nfe
        getattr(m, view)(x, torch.tensor(0.3, dtype=F64), coefs=c)
        assert m.nfe == n + 1
    for bad in (0.5, (0.5, 0.8), (c[0],), (c[0], c[1], c[1])):
        with pytest.raises(TypeError, match="coefs"):
            m.score(x, 0.3, coefs=bad)
    with pytest.raises(ValueError, match="view"):
        m.predict(x, 0.3, "noise", coefs=c)


def test_solver_fast_path_matches_the_public_views():
    """view_at with a 0-d float64 time on x's device (the solvers' form) gives the network the same
    contiguous (B,) times as the public view with a Python float; it clamps (the solvers' grids may
    hold T rounded) where the public views refuse a time outside [0, T] beyond the dtype tolerance."""
    from sdesolve.model import view_at

    seen = []

    def spy(x, t):
        seen.append(t)
        return x

    sde = sd.DiscreteVPSDE.from_schedule("linear")
    m = ScoreModel(spy, sde, prediction="eps")
    x = torch.randn(5, 2, dtype=F64)
    coefs = (torch.tensor(0.5, dtype=F64), torch.tensor(0.8, dtype=F64))
    for t in (0.3, sde.T, 0.0):
        m(x, t)
        view_at(m, x, torch.tensor(t, dtype=F64), "eps", coefs)
        a, b = seen[-2:]
        assert b.shape == (5,) and b.is_contiguous() and torch.equal(a, b)
        assert torch.equal(b, sde.network_time(torch.full((5,), t, dtype=F64)))
    view_at(m, x, torch.tensor(sde.T + 1e-3, dtype=F64), "eps", coefs)
    assert torch.equal(seen[-1], sde.network_time(torch.full((5,), sde.T, dtype=F64)))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        m(x, sde.T + 1e-3)
    with pytest.raises(ValueError, match="batch size"):
        m(x, torch.full((4,), 0.3, dtype=F64))


# --------------------------------------------------------------------------- public views check t
def _views(m):
    return {
        "forward": lambda x, t: m(x, t),
        "predict": lambda x, t: m.predict(x, t, "x0"),
        **{v: (lambda x, t, v=v: getattr(m, v)(x, t)) for v in PREDICTIONS},
    }


@pytest.mark.parametrize("view", ["forward", "predict", *PREDICTIONS])
def test_public_views_refuse_times_outside_0_T_and_non_finite(view):
    """Issue 8.6: m.eps(x, 5.0) used to equal m.eps(x, 1.0) (silently clamped) and NaN reached the
    network. Every public view now raises a ValueError naming t, before any network call."""
    sde = sd.VPSDE()
    m = ScoreModel(net, sde, prediction="v")
    call = _views(m)[view]
    x = torch.randn(3, 2, dtype=F64)
    bad = [
        5.0,
        -0.25,
        1.0 + 1e-6,
        float("nan"),
        float("inf"),
        torch.tensor([0.5, float("nan"), 0.2]),
        torch.tensor([0.5, 1.5, 0.2], dtype=F64),
        torch.tensor(-1e-3),
    ]
    for t in bad:
        with pytest.raises(ValueError, match=r"t must (lie in \[0, 1\]|be (a )?finite)"):
            call(x, t)
    assert m.nfe == 0
    with pytest.raises(ValueError, match=r"t has 2 times but x has batch size 3"):
        call(x, torch.tensor([0.1, 0.2]))
    with pytest.raises(TypeError, match=r"t must be"):
        call(x, "0.5")
    with pytest.raises(TypeError, match=r"x must be a (torch.Tensor|floating)"):
        call(torch.zeros(3, 2, dtype=torch.long), 0.5)
    assert m.nfe == 0


def test_public_views_accept_numpy_scalars_and_ulp_tolerance():
    """numpy scalars count as numbers; a time a few float32 ulps above T (sde.T rounded to float32,
    here the cosine process's T = 0.99567...) is accepted and clamped to T, as in the process API."""
    np = pytest.importorskip("numpy")
    sde = sd.CosineVPSDE()
    m = ScoreModel(net, sde, prediction="eps")
    x = torch.randn(2, 3, dtype=F64)
    ref = m.x0(x, 0.5)
    for t in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5, dtype=F64), torch.full((2,), 0.5, dtype=F64)):
        torch.testing.assert_close(m.x0(x, t), ref, rtol=1e-15, atol=0)
    t32 = torch.tensor(sde.T, dtype=torch.float32)
    assert float(t32) > sde.T  # the float32 rounding lies above T ...
    torch.testing.assert_close(m.x0(x, t32), m.x0(x, sde.T), rtol=1e-15, atol=0)  # ... and is clamped
    with pytest.raises(ValueError, match="t must lie in"):
        m.x0(x, torch.tensor(sde.T + 1e-5, dtype=F64))


# --------------------------------------------------------------------------- time dtype
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_states_hand_the_network_float32_times(dtype):
    """Issue 8.4: with a bfloat16 state on DiscreteVPSDE the network received 1000, 900, 784 instead of
    999, 898.3, 784.8 (float16: off by up to 0.24). Now the time input is computed in float64 and
    rounded once, to float32: it equals the float64 reference to float32 rounding (relative 2^-24),
    for DDIM's own 50-step grid."""
    seen = []

    def spy(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    sde = sd.DiscreteVPSDE.from_schedule("linear")
    grid = sd.DDIM().init(sde, sd.grids.uniform(sde, 50))["t"]
    m = ScoreModel(spy, sde)
    x = torch.zeros(1, 2, dtype=dtype)
    for t in grid:
        m.eps(x, t)
    got = torch.cat(seen)
    ref = sde.network_time(grid)  # float64
    assert got.dtype == torch.float32
    assert torch.equal(got, ref.to(torch.float32))
    assert float((got.double() - ref).abs().max()) <= 2.0**-24 * 1000
    assert float(got[0]) == 999.0
    # before: the state's dtype (what the network received)
    old = ref.to(dtype).double()
    assert float((old - ref).abs().max()) >= (0.2 if dtype == torch.float16 else 1.0)


def test_time_dtype_argument():
    """time_dtype declares the network's time dtype; default: x's dtype, at least float32."""
    seen = []

    def spy(x, t):
        seen.append(t.dtype)
        return torch.zeros_like(x)

    sde = sd.VPSDE()
    cases = [
        (None, torch.float64, torch.float64),
        (None, torch.float32, torch.float32),
        (None, torch.bfloat16, torch.float32),
        (torch.float64, torch.bfloat16, torch.float64),
        (torch.float64, torch.float32, torch.float64),
        (torch.float16, torch.float32, torch.float16),  # declared by the network: honoured
    ]
    for time_dtype, x_dtype, expected in cases:
        m = ScoreModel(spy, sde, time_dtype=time_dtype)
        m.eps(torch.zeros(2, 2, dtype=x_dtype), 0.5)
        assert seen[-1] == expected and m.network_time_dtype(torch.zeros(1, dtype=x_dtype)) == expected
    assert "time_dtype=torch.float64" in repr(ScoreModel(spy, sde, time_dtype=torch.float64))
    with pytest.raises(TypeError, match="time_dtype must be a torch.dtype"):
        ScoreModel(spy, sde, time_dtype="float32")
    with pytest.raises(ValueError, match="time_dtype must be a floating dtype"):
        ScoreModel(spy, sde, time_dtype=torch.int64)


# --------------------------------------------------------------------------- nfe
def test_nfe_counts_every_call_from_several_threads():
    """Issue 11: ``self.nfe += 1`` lost counts when two threads called the model (102674 of 160000
    counted with 8 threads, before the lock). Hammer it with a tiny switch interval."""
    import sys
    import threading

    m = ScoreModel(lambda x, t: x, sd.VPSDE())
    x = torch.zeros(1, 1)
    t = torch.tensor(0.5, dtype=F64)
    n_threads, n_calls = 8, 3000
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=lambda: [m._net(x, t) for _ in range(n_calls)]) for _ in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old)
    assert m.nfe == n_threads * n_calls


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x, t):
        return self.lin(x) * t[:, None]


def test_score_model_copies_and_pickles():
    """The lock guarding nfe is rebuilt on copy.deepcopy and pickle (an EMA copy of the model)."""
    import copy
    import pickle

    m = ScoreModel(_Net(), sd.VPSDE(), prediction="x0")
    m.eps(torch.zeros(3, 2), 0.5)
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert c.nfe == 1 and c._counter._lock is not m._counter._lock
        c.eps(torch.zeros(3, 2), 0.5)
        assert c.nfe == 2 and m.nfe == 1


# --------------------------------------------------------------------------- times: view_at and the public views
def _spy_model(sde, **kw):
    """A model whose network returns x and records each time input it receives."""
    seen = []

    def spy(x, t):
        seen.append(t)
        return x

    return ScoreModel(spy, sde, prediction="eps", **kw), seen


def test_view_at_checks_every_time_but_the_solvers_own_form():
    """view_at takes the solvers' form (a 0-d float64 tensor on x's device) as it is, clamped into
    [0, T] (a grid computed with round-off may end a hair below 0); every other form goes through the
    public views' checks: a Python float or a (B,) tensor gives the network what ``m(x, t)`` gives it,
    a float32 0-d time outside [0, T] is refused like the public views refuse it."""
    from sdesolve.model import view_at

    sde = sd.DiscreteVPSDE.from_schedule("linear")
    m, seen = _spy_model(sde)
    x = torch.randn(3, 2, dtype=F64)
    coefs = (torch.tensor(0.5, dtype=F64), torch.tensor(0.8, dtype=F64))
    view_at(m, x, torch.tensor(-1e-9, dtype=F64), "eps", coefs)
    assert torch.equal(seen[-1], sde.network_time(torch.zeros(3, dtype=F64)))
    for t in (0.3, torch.tensor([0.1, 0.5, 0.9], dtype=F64), torch.tensor([0.1, 0.5, 0.9]), torch.tensor(0.7)):
        m(x, t)
        view_at(m, x, t, "eps", coefs)
        assert torch.equal(seen[-1], seen[-2]), t
    for t in (torch.tensor(1.5), torch.tensor([0.2, 1.5, 0.3])):
        with pytest.raises(ValueError, match=r"^t must lie in \[0, 1\], got values \[1.5\]"):
            view_at(m, x, t, "eps", coefs)


def test_public_views_clamp_a_time_a_hair_below_0_and_take_an_empty_batch():
    """A time within the dtype tolerance below 0 reaches the network as exactly 0 (clamped, as at T);
    an empty batch (B = 0) is a valid input: an empty output, and the network sees an empty time."""
    sde = sd.VPSDE()
    m, seen = _spy_model(sde)
    for x, t in ((torch.randn(3, 2, dtype=F64), -1e-17), (torch.randn(3, 2), torch.tensor(-1e-8))):
        m.eps(x, t)
        assert torch.equal(seen[-1], torch.zeros(3, dtype=x.dtype)), t
    for view in ("forward", *PREDICTIONS):
        out = m(torch.zeros(0, 2, dtype=F64), 0.5) if view == "forward" else getattr(m, view)(torch.zeros(0, 2), 0.5)
        assert out.shape == (0, 2)
    assert seen[-1].shape == (0,)


@pytest.mark.parametrize("pred", ["score", "x0"])
def test_each_view_uses_the_coefficients_it_is_given(pred):
    """``coefs=(alpha, sigma)`` given to ``eps``, ``x0``, ``v`` or ``score`` are the coefficients of the
    conversion, whatever the process says at t: with made-up ones (alpha = 0.3, sigma = 2, far from
    VP's at t = 0.5) each view is the hand formula at those values, not at the process' own."""
    sde = sd.VPSDE()
    m = ScoreModel(net, sde, prediction=pred)
    x, _ = data(sde)
    t = 0.5
    a, s = torch.tensor(0.3, dtype=F64), torch.tensor(2.0, dtype=F64)
    out = m(x, t)
    want = views_by_hand(out, x, a, s, pred)
    for view in PREDICTIONS:
        got = getattr(m, view)(x, t, coefs=(a, s))
        torch.testing.assert_close(got, want[view], rtol=1e-14, atol=1e-14)
        if view != pred:
            assert not torch.allclose(getattr(m, view)(x, t), got, rtol=1e-2, atol=0), view


# --------------------------------------------------------------------------- guidance
def _labelled(**kw):
    """A model of a network ``x * y`` (y: a per-sample float label) that records its inputs."""
    seen = []

    def lab(x, t, y):
        seen.append((t, y))
        return x * y.reshape((-1,) + (1,) * (x.dim() - 1)).to(x.dtype)

    return ScoreModel(lab, sd.VPSDE(), **kw), seen


def test_guided_model_hands_the_network_the_conditional_models_times():
    """The guided call of 2B samples gets the conditional model's time input (its ``time_input``, in its
    ``time_dtype``), once per half; a time input that is one number for the batch (0-d) is handed as it is."""
    x = torch.randn(3, 2)
    yc, yu = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5])
    m, seen = _labelled(time_input=lambda t: 999.0 * t, time_dtype=F64, model_kwargs={"y": yc})
    g = m.guided(4.0, {"y": yu})
    out = g.eps(x, torch.tensor([0.1, 0.2, 0.3], dtype=F64))
    t_in = seen[-1][0]
    assert t_in.dtype == F64 and torch.equal(t_in, 999.0 * torch.tensor([0.1, 0.2, 0.3, 0.1, 0.2, 0.3], dtype=F64))
    torch.testing.assert_close(out, x * (yu + 4.0 * (yc - yu))[:, None], rtol=1e-6, atol=0)
    m0, seen0 = _labelled(time_input=lambda t: t[0], model_kwargs={"y": yc})
    out = m0.guided(4.0, {"y": yu}).eps(x, 0.5)
    assert seen0[-1][0].shape == () and float(seen0[-1][0]) == 0.5
    torch.testing.assert_close(out, x * (yu + 4.0 * (yc - yu))[:, None], rtol=1e-6, atol=0)


def test_guided_select_and_with_kwargs_carry_both_halves():
    """``select`` indexes the conditional and the unconditional per-sample inputs alike (the guided model
    of x[index] is the guided model's rows at index); ``with_kwargs`` after an evaluation binds the new
    conditional inputs (the 2B inputs are built again, not taken from the first evaluation)."""
    x = torch.randn(4, 2, dtype=F64)
    yc, yu = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([-1.0, 0.5, 0.25, 2.0])
    m, seen = _labelled(model_kwargs={"y": yc})
    g = m.guided(3.0, {"y": yu})
    full = g.eps(x, 0.4)
    torch.testing.assert_close(full, x * (yu + 3.0 * (yc - yu)).to(F64)[:, None], rtol=1e-15, atol=0)
    for index in ([2, 0], slice(1, 3), torch.tensor([False, True, False, True]), 3):
        rows = torch.arange(4)[index].reshape(-1)
        torch.testing.assert_close(g.select(index).eps(x[rows], 0.4), full[rows], rtol=1e-15, atol=0)
    new = torch.tensor([5.0, 6.0, 7.0, 8.0])
    g2 = g.with_kwargs(y=new)
    torch.testing.assert_close(g2.eps(x, 0.4), x * (yu + 3.0 * (new - yu)).to(F64)[:, None], rtol=1e-15, atol=0)
    torch.testing.assert_close(g.eps(x, 0.4), full, rtol=0, atol=0)


def test_guided_inputs_are_built_once_per_batch_size():
    """The concatenated (uncond, cond) inputs are built at the first evaluation for a batch size and reused
    (the same tensor reaches the network again: no concatenation per call); another batch size gets its own."""
    yc, yu = torch.tensor([2.0]), torch.tensor([1.0])
    m, seen = _labelled(model_kwargs={"y": yc})
    g = m.guided(2.0, {"y": yu})
    for B in (3, 3, 5, 3):
        x = torch.randn(B, 2, dtype=F64)
        torch.testing.assert_close(g.eps(x, 0.5), 3.0 * x, rtol=1e-15, atol=0)
        assert seen[-1][1].shape == (2 * B,)
    ys = [y for _, y in seen]
    assert ys[1] is ys[0] and ys[2] is not ys[0] and ys[3] is not ys[2]


def test_guided_nested_and_multi_dimensional_inputs_are_the_two_models_combined():
    """diffusers-style nested inputs (``added_cond_kwargs``) and per-sample inputs of more than one dimension,
    given as 1 row or B rows in either half, and a shared value bound only on the conditional side: the
    guided output equals ``u + w (c - u)`` of the unconditional and the conditional models called alone."""
    B, w = 3, 2.5

    def emb_net(x, t, emb, added, scale):
        s = emb.sum(1) + added["text_embeds"].sum(1) + added["time_ids"].sum(1)
        return x * scale * s.to(x.dtype)[:, None]

    cond = {
        "emb": torch.arange(B * 4.0).reshape(B, 4),
        "added": {"text_embeds": torch.ones(1, 5), "time_ids": torch.tensor([[1.0, 2.0, 3.0]] * B)},
        "scale": 0.5,
    }
    uncond = {"emb": torch.full((1, 4), -1.0), "added": {"text_embeds": torch.zeros(B, 5)}}
    m = ScoreModel(emb_net, sd.VPSDE(), model_kwargs=cond)
    x = torch.randn(B, 2, dtype=F64)
    c = m.eps(x, 0.3)
    u = m.with_kwargs(emb=uncond["emb"], added={**cond["added"], **uncond["added"]}).eps(x, 0.3)
    torch.testing.assert_close(m.guided(w, uncond).eps(x, 0.3), u + w * (c - u), rtol=1e-13, atol=0)
