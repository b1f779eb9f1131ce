"""Probability-flow ODE solvers against the exact flow map of a Gaussian target.

For a Gaussian data law the probability-flow ODE has a closed-form flow (``Gaussian.flow``), so a
deterministic solver's output from a fixed x_T is compared with the exact x(t_min): errors fall at
the method's order (log-log slope), adaptive solvers meet their tolerance.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from helpers import MIXTURE_2D, TARGET_2D, loglog_slope
from helpers import PROCESSES as _PROCESSES

import sdesolve as sd
from sdesolve.solvers.ode import ADAPTIVE_METHODS, FIXED_METHODS, ODE

TARGET = TARGET_2D
MIXTURE = MIXTURE_2D
PROCESSES = dict(_PROCESSES)
ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk3": 3, "rk4": 4}


def _x_T(sde, n=64, seed=0, target=TARGET):
    return target.marginal_sample(n, sde.T, sde, generator=torch.Generator().manual_seed(seed))


def _err(sde, method, steps, x_T, grid="uniform"):
    exact = TARGET.flow(x_T, sde.T, sde.t_min, sde)
    x = sd.sample(sde, TARGET.model(sde), x_T=x_T, solver=ODE(method), steps=steps, grid=grid)
    return float((x - exact).abs().max())


@pytest.mark.parametrize("method", list(FIXED_METHODS))
def test_convergence_order_vp(method):
    sde = sd.VPSDE()
    x_T = _x_T(sde)
    steps = (16, 32, 64)
    errs = [_err(sde, method, n, x_T) for n in steps]
    slope = loglog_slope(steps, errs)
    assert abs(slope - ORDERS[method]) < 0.3, f"{method}: errors {errs}, slope {slope:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("method", list(FIXED_METHODS))
@pytest.mark.parametrize("proc", ["subvp", "ve", "vdm", "cosine"])
def test_convergence_order_smooth_processes(proc, method):
    sde = PROCESSES[proc]()
    x_T = _x_T(sde)
    steps = (64, 128, 256) if proc == "ve" else (32, 64, 128)
    errs = [_err(sde, method, n, x_T, grid="karras" if proc == "ve" else "uniform") for n in steps]
    slope = loglog_slope(steps, errs)
    assert abs(slope - ORDERS[method]) < 0.35, f"{proc}/{method}: errors {errs}, slope {slope:.2f}"


@pytest.mark.parametrize("proc", list(PROCESSES))
def test_rk4_matches_exact_flow_on_every_process(proc):
    """The discrete-DDPM process has piecewise-constant f, g^2 (order drops), but still converges."""
    sde = PROCESSES[proc]()
    x_T = _x_T(sde)
    scale = float(TARGET.marginal_moments(sde.t_min, sde)[1].sqrt().max())
    steps = (250, 1234) if proc == "discrete" else (50, 100)  # kinks of f at every knot: O(h) per kink
    errs = [_err(sde, "rk4", n, x_T, grid="karras" if proc == "ve" else "uniform") for n in steps]
    assert errs[1] < 2e-3 * scale and errs[1] < errs[0], errs


def test_midpoint_and_heun_are_not_euler():
    """Same order, different methods: their errors differ (guards a tableau mix-up)."""
    sde = sd.VPSDE()
    x_T = _x_T(sde)
    e = {m: _err(sde, m, 20, x_T) for m in ("euler", "midpoint", "heun")}
    assert e["midpoint"] < e["euler"] / 5 and e["heun"] < e["euler"] / 5 and e["midpoint"] != e["heun"]


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_adaptive_reaches_tolerance(method):
    sde = sd.VPSDE()
    x_T = _x_T(sde, n=32)
    exact = TARGET.flow(x_T, sde.T, sde.t_min, sde)
    errs, nfes = [], []
    for tol in (1e-4, 1e-7):
        solver = ODE(method, rtol=tol, atol=tol)
        model = TARGET.model(sde)
        x = sd.sample(sde, model, x_T=x_T, solver=solver)  # no steps needed: the two ends
        errs.append(float((x - exact).abs().max()))
        nfes.append(solver.last_nfe)
        assert model.nfe == solver.last_nfe == solver.nfe(1) > 0
        assert errs[-1] < 100 * tol * (1 + float(exact.abs().max())), (tol, errs)
    assert errs[1] < errs[0] / 30 and nfes[1] > nfes[0]


def test_adaptive_callback_reports_grid_states():
    sde = sd.VESDE()
    x_T = _x_T(sde, n=8)
    grid = sd.grids.karras(sde, 5)
    seen = []
    sd.sample(
        sde, TARGET.model(sde), x_T=x_T, solver=ODE("dopri5", rtol=1e-8, atol=1e-8), grid=grid, callback=seen.append
    )
    assert [d["i"] for d in seen] == list(range(5))
    for d in seen:
        exact = TARGET.flow(x_T, sde.T, d["t_next"], sde)
        assert torch.allclose(d["x"], exact, atol=1e-4, rtol=1e-5)


def test_fixed_step_nfe_and_callback_x0():
    """nfe = stages x steps; the callback's x0 is the exact posterior mean E[x0 | x_t] for the exact score."""
    sde = sd.VPSDE()
    x_T = _x_T(sde, n=16)
    model = TARGET.model(sde)
    seen = []
    solver = ODE("rk4")
    sd.sample(sde, model, x_T=x_T, solver=solver, steps=6, callback=seen.append)
    assert model.nfe == 4 * 6 == solver.nfe(6)
    m0, v0 = TARGET.mean, TARGET.std**2
    # recompute the x0 reported at step 2 from the state entering it (the state after step 1)
    t2 = torch.tensor(seen[2]["t"], dtype=torch.float64)
    a, s = sde.alpha(t2), sde.sigma(t2)
    x = seen[1]["x"]
    post = m0 + v0 * a / (a * a * v0 + s * s) * (x - a * m0)
    assert torch.allclose(seen[2]["x0"], post, rtol=1e-10, atol=1e-10)


def test_deterministic_map_ignores_generator():
    sde = sd.SubVPSDE()
    x_T = _x_T(sde, n=8)
    a = sd.sample(
        sde, TARGET.model(sde), x_T=x_T, solver=ODE("heun"), steps=10, generator=torch.Generator().manual_seed(1)
    )
    b = sd.sample(
        sde, TARGET.model(sde), x_T=x_T, solver=ODE("heun"), steps=10, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(a, b)
    assert not ODE("heun").stochastic and ODE("heun").order == 2 and ODE("rk4").nfe_per_step == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="method must be one of"):
        ODE("rk45")
    with pytest.raises(ValueError, match="rtol"):
        ODE("dopri5", rtol=0.0)
    with pytest.raises(ValueError, match="atol"):
        ODE("dopri5", atol=-1.0)
    with pytest.raises(ValueError, match=r"^an adaptive ODE's number of evaluations is known only after a solve"):
        ODE("dopri5").nfe(10)
    assert set(ADAPTIVE_METHODS) >= {"dopri5", "bosh3", "adaptive_heun", "dopri8"}


def test_adaptive_non_finite_raises():
    sde = sd.VPSDE()

    def bad_score(x, t):
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    with pytest.raises(sd.NonFiniteError, match="dopri5"):
        sd.sample(sde, bad_score, (4, 2), solver=ODE("dopri5"), generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- default grids
def grid_ratios(methods=tuple(FIXED_METHODS), steps=(10, 20, 50), n=200):
    """For each method and grid: error ratios to the best grid over 12 problems (notes/grids.md)."""
    ratios = {m: {g: [] for g in sd.grids.GRIDS} for m in methods}
    for sde in (sd.VPSDE(), sd.VESDE()):
        for target in (TARGET, MIXTURE):
            x_T = _x_T(sde, n=n, target=target)
            if target is TARGET:
                ref = TARGET.flow(x_T, sde.T, sde.t_min, sde)
            else:
                ref = sd.sample(sde, target.model(sde), x_T=x_T, solver=ODE("dopri5", rtol=1e-10, atol=1e-10))
            for m in methods:
                for N in steps:
                    errs = {}
                    for g in sd.grids.GRIDS:
                        x = sd.sample(sde, target.model(sde), x_T=x_T, solver=ODE(m), steps=N, grid=g)
                        errs[g] = float(((x - ref) ** 2).mean().sqrt())
                    best = min(errs.values())
                    for g, e in errs.items():
                        ratios[m][g].append(e / best)
    return ratios


@pytest.mark.slow
def test_default_grid_has_smallest_worst_case_error():
    ratios = grid_ratios()
    for m, per_grid in ratios.items():
        worst = {g: max(r) for g, r in per_grid.items()}
        gm = {g: math.exp(sum(map(math.log, r)) / len(r)) for g, r in per_grid.items()}
        print(m, {g: f"gm {gm[g]:.2f} worst {worst[g]:.1f}" for g in worst})
        assert ODE(m).default_grid == min(worst, key=worst.get), (m, worst)


# --------------------------------------------------------------------------- steps into sigma = 0
def _eps_model_refusing_sigma_zero(sde, target=TARGET):
    """The exact eps = -sigma score as an eps-predicting network that raises where sigma = 0."""

    def net(x, t):
        sigma = torch.exp(sde._log_sigma(t.to(torch.float64)))
        if float(sigma.min()) == 0.0:
            raise AssertionError(f"the model was evaluated where sigma = 0 (t = {float(t.min())})")
        return -sigma[:, None].to(x.dtype) * target.marginal_score(x, t, sde)

    return sd.ScoreModel(net, sde, prediction="eps", time_input=lambda t: t)


ZERO_PROCESSES = {"VP": lambda: sd.VPSDE(t_min=0.0), "subVP": lambda: sd.SubVPSDE(t_min=0.0)}


@pytest.mark.parametrize("method", list(FIXED_METHODS))
@pytest.mark.parametrize("proc", list(ZERO_PROCESSES))
def test_steps_into_sigma_zero_converge_without_evaluating_there(proc, method):
    """A grid ending where sigma = 0: the last interval is taken in r = sigma/alpha by a tableau with
    no stage at r = 0 (order min(p, 3) locally, so the global order stays p up to 3; the velocity's
    1/sigma singularity near t = 0 on the other intervals costs about 0.7 for rk4, measured 3.3-4.1)."""
    sde = ZERO_PROCESSES[proc]()
    x_T = _x_T(sde)
    exact = TARGET.flow(x_T, sde.T, 0.0, sde)
    steps = (16, 32, 64)
    errs = []
    for n in steps:
        x = sd.sample(sde, _eps_model_refusing_sigma_zero(sde), x_T=x_T, solver=ODE(method), steps=n, grid="karras")
        errs.append(float((x - exact).abs().max()))
    slope = loglog_slope(steps, errs)
    assert slope > min(ORDERS[method], 3) - 0.35, (errs, slope)


def test_heun_into_sigma_zero_on_a_ddpm_schedule_issue_15():
    """Issue 15: heun on DiscreteVPSDE(t_min=0) with the Karras grid had KL 6.26 nats/dim at 10 NFE.
    The solver map is affine for a Gaussian target, so the output law is exact (chain_moments)."""
    from helpers import chain_moments

    sde = sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)
    m_T, v_T = TARGET.marginal_moments(sde.T, sde)
    m0, v0 = TARGET.mean.double(), TARGET.std.double() ** 2
    kls = []
    for nfe in (10, 20, 40):
        m, v = chain_moments(
            ODE("heun"), sde, _eps_model_refusing_sigma_zero(sde), sd.grids.karras(sde, nfe // 2), m_T, v_T
        )
        kls.append(float((0.5 * (v / v0 + (m - m0) ** 2 / v0 - 1 - torch.log(v / v0))).mean()))
    # measured 0.065, 0.0040, 0.00023: KL ~ error^2 falls like h^4 for a second-order method
    assert kls[0] < 0.1 and kls[2] < kls[1] / 8, kls


def test_step_into_sigma_zero_beats_edms_euler_step(monkeypatch):
    """EDM takes the last step into sigma = 0 with Euler in sigma (in r = sigma/alpha: DDIM); the
    second-order Ralston step there gives a 10x smaller KL (exact, chain_moments) on VP(t_min=0)
    with the Karras grid at 20 NFE (measured 1.4e-3 vs 1.6e-2)."""
    from helpers import chain_moments

    from sdesolve.solvers import runge_kutta as rk

    sde = sd.VPSDE(t_min=0.0)
    m_T, v_T = TARGET.marginal_moments(sde.T, sde)
    m0, v0 = TARGET.mean.double(), TARGET.std.double() ** 2

    def kl():
        grid = sd.grids.karras(sde, 10)
        m, v = chain_moments(ODE("heun"), sde, _eps_model_refusing_sigma_zero(sde), grid, m_T, v_T)
        return float((0.5 * (v / v0 + (m - m0) ** 2 / v0 - 1 - torch.log(v / v0))).mean())

    ours = kl()
    monkeypatch.setitem(rk.ZERO_TABLEAUX, "heun", rk.TABLEAUX["euler"])
    edm = kl()
    assert ours < edm / 5, (ours, edm)


def test_one_method_table_with_the_likelihood():
    """``ODE`` and ``log_likelihood`` share ``solvers.methods``: "heun2" is a deprecated alias of "heun"."""
    from sdesolve.solvers.adaptive import AdaptiveODE
    from sdesolve.solvers.methods import ADAPTIVE, FIXED
    from sdesolve.solvers.runge_kutta import RungeKuttaODE

    with pytest.warns(DeprecationWarning, match="'heun2' is deprecated; use 'heun'"):
        solver = ODE("heun2")
    assert isinstance(solver, RungeKuttaODE) and isinstance(solver, ODE) and solver.method == "heun"
    assert all(isinstance(ODE(m), RungeKuttaODE) and ODE(m).order == FIXED[m] for m in FIXED)
    assert all(isinstance(ODE(m), AdaptiveODE) and ODE(m).order == ADAPTIVE[m] for m in ADAPTIVE)


# ----------------------------------------------------------------------------- Butcher order conditions
# Every tableau is checked algebraically, without integrating: a wrong constant (a mutated A, b, c or
# embedded weight) breaks a row sum or an order condition by far more than float64 round-off.
def _rooted_trees(order: int) -> list[tuple]:
    """The rooted trees with ``order`` nodes, each a sorted tuple of its subtrees (Butcher's trees)."""
    trees: set[tuple] = {()}
    for _ in range(order - 1):
        trees = {grown for tree in trees for grown in _grow(tree)}
    return sorted(trees)


def _grow(tree: tuple):
    """Every tree with one node added to ``tree``: a new leaf under the root, or inside a subtree."""
    yield tuple(sorted((*tree, ())))
    for k, child in enumerate(tree):
        for grown in _grow(child):
            yield tuple(sorted((*tree[:k], grown, *tree[k + 1 :])))


def _size(tree: tuple) -> int:
    return 1 + sum(_size(child) for child in tree)


def _density(tree: tuple) -> int:
    """gamma(tree): the tree's order times the densities of its subtrees (Hairer et al., II.2)."""
    return _size(tree) * math.prod(_density(child) for child in tree)


def _stage_weights(tree: tuple, A: torch.Tensor) -> torch.Tensor:
    """Per stage, the elementary weight of ``tree`` below the root: prod over subtrees of (A Phi(sub))."""
    out = torch.ones(A.shape[0], dtype=torch.float64)
    for child in tree:
        out = out * (A @ _stage_weights(child, A))
    return out


def _order_residual(A: torch.Tensor, b: torch.Tensor, order: int) -> float:
    """The largest |b . Phi(tree) - 1 / gamma(tree)| over the trees of exactly ``order`` nodes."""
    return max(abs(float(b @ _stage_weights(t, A)) - 1.0 / _density(t)) for t in _rooted_trees(order))


def _tableau_arrays(tab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = len(tab.c)
    assert len(tab.A) == s and len(tab.b) == s and all(len(row) == j for j, row in enumerate(tab.A)), tab
    A = torch.zeros(s, s, dtype=torch.float64)
    for j, row in enumerate(tab.A):
        A[j, :j] = torch.tensor(row, dtype=torch.float64)
    return torch.tensor(tab.c, dtype=torch.float64), A, torch.tensor(tab.b, dtype=torch.float64)


def _all_tableaux():
    from sdesolve.solvers import adaptive, runge_kutta

    out = {f"fixed/{k}": v for k, v in runge_kutta.TABLEAUX.items()}
    out.update({f"into_zero/{k}": v for k, v in runge_kutta.ZERO_TABLEAUX.items()})
    out.update({f"adaptive/{k}": v for k, v in adaptive.TABLEAUX.items()})
    return out


def test_rooted_tree_counts():
    """1, 1, 2, 4, 9, 20, 48, 115, 286 trees of orders 1..9 (OEIS A000081), gamma of the tall and bushy trees."""
    assert [len(_rooted_trees(n)) for n in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]
    tall, bushy = ((((),),),), ((), (), ())  # 4 nodes: a chain; a root with three leaves
    assert _density(tall) == 24 and _density(bushy) == 4


@pytest.mark.parametrize("name", list(_all_tableaux()))
def test_butcher_order_conditions(name):
    """Row sums c = A 1; ``b`` meets every order condition up to the method's order and fails one of
    the next order (the stated order is the exact one); an embedded pair's ``b_hat = b - b_err`` meets
    them up to order p - 1 and fails one of order p (else its error estimate would vanish). Every stage
    is used (a weight in b or b_err, or in a later stage's row of A): a dead stage costs an evaluation.

    The tolerance is float64 round-off of sums of at most 13 products of coefficients below 20.
    """
    tab = _all_tableaux()[name]
    c, A, b = _tableau_arrays(tab)
    tol = 1e-13
    assert float((A.sum(1) - c).abs().max()) < tol, f"{name}: row sums {A.sum(1).tolist()} != c {c.tolist()}"
    weights = [("b", b, tab.order)]
    if hasattr(tab, "b_err"):
        assert len(tab.b_err) == len(tab.c), name
        weights.append(("b_hat", b - torch.tensor(tab.b_err, dtype=torch.float64), tab.order - 1))
    err = torch.tensor(getattr(tab, "b_err", [0.0] * len(tab.c)), dtype=torch.float64)
    used = (b != 0) | (err != 0) | (A != 0).any(dim=0)
    assert bool(used.all()), f"{name}: stages {torch.nonzero(~used).flatten().tolist()} are never used"
    for label, w, p in weights:
        for q in range(1, p + 1):
            assert _order_residual(A, w, q) < tol, f"{name}: {label} fails an order-{q} condition"
        assert _order_residual(A, w, p + 1) > 1e-6, f"{name}: {label} is of order above {p}"


def test_step_size_underflow_errors_carry_t_and_nfe():
    """An underflowed adaptive solve raises AdaptiveSolveError with ``t`` and ``nfe`` as attributes (and in
    the message), or NonFiniteError where the trial steps met NaN or inf."""
    from sdesolve.solvers.adaptive import AdaptiveSolveError, _underflow

    with pytest.raises(AdaptiveSolveError, match=r"\(dopri5\) broke down at t = 0.25 after 37 evaluations") as err:
        _underflow("dopri5", 0.25, 37, non_finite=False)
    assert (err.value.t, err.value.nfe) == (0.25, 37)
    with pytest.raises(sd.NonFiniteError, match=r"at t = 0.25 after 37 evaluations: every step past t met NaN"):
        _underflow("dopri5", 0.25, 37, non_finite=True)


def test_runge_kutta_defaults_and_its_own_argument_checks():
    """``ODE()`` is Heun's method; ``RungeKuttaODE`` built directly checks its method's type itself (the
    factory's check does not run then); ``flow_coefficients`` without ``h`` is per unit time."""
    from sdesolve.solvers.runge_kutta import TABLEAUX, RungeKuttaODE, flow_coefficients

    assert ODE().method == RungeKuttaODE().method == "heun"
    for bad, kind in ((5, "int"), (["heun"], "list")):
        with pytest.raises(TypeError, match=rf"^method must be one of {re.escape(str(tuple(TABLEAUX)))}, got {kind}$"):
            RungeKuttaODE(bad)
    fixed = re.escape(f"method must be one of {tuple(TABLEAUX)} (fixed step), got 'dopri5'")
    with pytest.raises(ValueError, match=rf"^{fixed}$"):
        RungeKuttaODE("dopri5")
    with pytest.raises(ValueError, match=r"^rtol applies to adaptive methods only \('dopri5'"):
        ODE("heun", rtol=1e-3)
    sde = sd.VPSDE()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    c = flow_coefficients(sde, t)
    torch.testing.assert_close(c["hf"], sde._f(t), rtol=1e-15, atol=0)
    torch.testing.assert_close(c["hg2_half"], 0.5 * sde._g2(t), rtol=1e-15, atol=0)
    torch.testing.assert_close(c["hg2_half_sigma"], 0.5 * sde._g2(t) / sde.sigma(t), rtol=1e-15, atol=0)
    torch.testing.assert_close(flow_coefficients(sde, t, 0.25)["hf"], 0.25 * sde._f(t), rtol=1e-15, atol=0)


# --------------------------------------------------------------------------- the step into sigma = 0, exactly
F64 = torch.float64
TARGET_4D = sd.Gaussian(torch.tensor([0.7, -0.4, 0.2, 1.5], dtype=F64), torch.tensor([0.5, 1.2, 0.8, 0.05], dtype=F64))
ZERO_END = {**ZERO_PROCESSES, "discrete": lambda: sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)}
# each method's step into sigma = 0 (runge_kutta.ZERO_TABLEAUX), written out: (c, A, b)
_RALSTON = ((0.0, 2 / 3), ((), (2 / 3,)), (1 / 4, 3 / 4))
_HEUN3 = ((0.0, 1 / 3, 2 / 3), ((), (1 / 3,), (0.0, 2 / 3)), (1 / 4, 0.0, 3 / 4))
_INTO_ZERO = {"heun": _RALSTON, "rk3": _HEUN3, "rk4": _HEUN3}


def _exact_view_model(sde, target, pred, times=None):
    """A ScoreModel predicting ``pred`` whose network is the target's exact view, in float64 from the
    process at the time it is given (not the solver's coefficients); it records those times."""
    from sdesolve.model import convert

    def net(x, t):
        if times is not None:
            times.append(t.detach().clone())
        t64 = t.to(F64)
        a, s = torch.exp(sde._log_alpha(t64))[:, None], torch.exp(sde._log_sigma(t64))[:, None]
        score = target.marginal_score(x.to(F64), t64, sde)
        return convert(score, x.to(F64), a, s, "score", pred).to(x.dtype)

    return sd.ScoreModel(net, sde, prediction=pred, time_input=lambda t: t)


@pytest.mark.parametrize("method", list(_INTO_ZERO))
@pytest.mark.parametrize("proc", list(ZERO_END))
def test_step_into_sigma_zero_is_its_tableau_in_r_exactly(proc, method):
    """One step from t_i to sigma = 0 in float64 against the tableau written out in (r, y) = (sigma/alpha,
    x/alpha): for a Gaussian target N(m, v) the exact eps is ``r (y - m) / (v + r^2)`` whatever the time,
    so the reference needs only r_i = sigma(t_i)/alpha(t_i) and alpha(t_i); ``y_next = y - r_i sum_j b_j
    eps_j``, ``x_next = alpha(0) y_next = y_next``; the first stage sees t_i. Every coefficient is float64 (1e-12, where a float32
    coefficient would be off by 1e-8) and any network parameterization gives it; the step's x0 preview is
    the exact posterior mean E[x0 | x_{t_i}]."""
    from sdesolve.solvers.base import _to_device

    sde = ZERO_END[proc]()
    m, v = TARGET_4D.mean, TARGET_4D.std**2
    c, A, b = _INTO_ZERO[method]
    for t_i in (0.02, 0.3, 1.0):
        grid = torch.tensor([t_i, 0.0], dtype=F64)
        a_i, s_i = sde.alpha(grid[:1]), sde.sigma(grid[:1])
        x = TARGET_4D.marginal_sample(8, t_i, sde, generator=torch.Generator().manual_seed(1)).to(F64)
        y, r = x / a_i, s_i / a_i
        es = []
        for j in range(len(c)):
            r_j, y_j = (1.0 - c[j]) * r, y - r * sum(a * e for a, e in zip(A[j], es))
            es.append(r_j * (y_j - m) / (v + r_j**2))
        want = y - r * sum(b_j * e for b_j, e in zip(b, es))
        post = m + v * a_i / (a_i**2 * v + s_i**2) * (x - a_i * m)
        solver = ODE(method)
        for pred in ("eps", "score", "x0", "v"):
            times: list[torch.Tensor] = []
            model = _exact_view_model(sde, TARGET_4D, pred, times)
            coefs = _to_device(solver.init(sde, grid), x)
            assert coefs["into_zero"] == [True]
            out = solver.step(model, {"x": x}, 0, coefs, need_x0=True)
            # the first stage at t_i itself, not t(r(t_i)) (1 ulp below it on VP and subVP at t_i = 1)
            assert bool((times[0] == t_i).all()), (times[0][0].item(), t_i)
            torch.testing.assert_close(out["x"], want, rtol=1e-12, atol=1e-12, msg=f"{pred} at t_i={t_i}")
            torch.testing.assert_close(out["x0"], post, rtol=1e-12, atol=1e-12, msg=f"{pred} at t_i={t_i}")
            assert model.nfe == len(c)


@pytest.mark.parametrize("method", ["heun", "rk3", "rk4"])
@pytest.mark.parametrize("proc", ["vp", "ve", "discrete", "vp0"])
def test_stages_at_the_ends_of_a_step_evaluate_the_network_at_the_grid_times_themselves(proc, method):
    """A stage with c = 0 is evaluated at t_i and one with c = 1 at t_{i+1}, the grid's own numbers (not
    t_i + 1.0 h, which differs in the last place on these grids): a network trained on a schedule's
    timesteps sees exactly them, as in k-diffusion's and diffusers' Heun. A step into sigma = 0 also
    starts at t_i itself (not t(r(t_i)), another last-place difference)."""
    sde = {"vp": sd.VPSDE, "ve": sd.VESDE, "discrete": sd.DiscreteVPSDE.from_schedule, "vp0": ZERO_PROCESSES["VP"]}[
        proc
    ]()
    grid = sd.grids.karras(sde, 10)
    assert bool(((grid[:-1] + 1.0 * (grid[1:] - grid[:-1])) != grid[1:]).any()) or proc == "vp0"
    times: list[torch.Tensor] = []
    x = TARGET_4D.marginal_sample(2, sde.T, sde, generator=torch.Generator().manual_seed(0)).to(F64)
    ODE(method).solve(sde, _exact_view_model(sde, TARGET_4D, "eps", times), x, grid)
    c = ODE(method).tableau.c
    seen = torch.stack([t[0] for t in times]).reshape(-1)
    steps = 9 if proc == "vp0" else 10  # the step into sigma = 0 uses its own tableau (tested above)
    seen_steps = seen[: steps * len(c)].reshape(steps, len(c))
    assert torch.equal(seen_steps[:, 0], grid[:steps])
    assert torch.equal(seen_steps[:, len(c) - 1], grid[1 : steps + 1])
    if proc == "vp0":
        assert float(seen[steps * len(c)]) == float(grid[-2])


@pytest.mark.parametrize("pred", ["score", "x0", "v"])
def test_the_step_into_sigma_zero_evaluates_nothing_of_the_process(pred):
    """Like every other step (test_overhead.py), the step into sigma = 0 hands the model its precomputed
    alpha and sigma at each stage time: no exp, log, gather or search of DiscreteVPSDE's knots runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from sdesolve.solvers.base import _to_device

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            names.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    sde = ZERO_END["discrete"]()
    model = sd.ScoreModel(lambda x, t: 0.1 * x, sde, prediction=pred)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    process_ops = {"exp", "log", "expm1", "log1p", "index", "searchsorted", "gather", "bucketize", "floor"}
    for method in _INTO_ZERO:
        solver = ODE(method)
        coefs = _to_device(solver.init(sde, torch.tensor([0.5, 0.0], dtype=F64)), x)
        names: set[str] = set()
        with Ops():
            out = solver.step(model, {"x": x}, 0, coefs, need_x0=True)
        assert coefs["into_zero"] == [True] and torch.isfinite(out["x"]).all()
        assert not process_ops & names, (method, names)


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_callback_x0_is_the_posterior_mean_for_every_parameterization(method):
    """The x0 handed to a callback at step i is E[x0 | x_{t_i}] = m + v alpha / (alpha^2 v + sigma^2)
    (x - alpha m) at the state entering the step, exactly (float64, 1e-12), whatever the network
    predicts (an eps network's x0 comes from its eps, the others' from the score), including the
    step into sigma = 0 at the end of a VP(t_min=0) grid."""
    m, v = TARGET_4D.mean, TARGET_4D.std**2
    for sde in (sd.VPSDE(), sd.VPSDE(t_min=0.0)):
        grid = sd.grids.uniform(sde, 6)
        x_T = TARGET_4D.marginal_sample(8, sde.T, sde, generator=torch.Generator().manual_seed(2)).to(F64)
        for pred in ("eps", "score", "x0", "v"):
            seen: list[dict] = []
            ODE(method).solve(sde, _exact_view_model(sde, TARGET_4D, pred), x_T, grid, callback=seen.append)
            assert len(seen) == 6
            x = x_T
            for d in seen:
                t = torch.tensor(d["t"], dtype=F64)
                a, s = sde.alpha(t), sde.sigma(t)
                post = m + v * a / (a * a * v + s * s) * (x - a * m)
                torch.testing.assert_close(d["x0"], post, rtol=1e-12, atol=1e-12, msg=f"{pred} at t={d['t']}")
                x = d["x"]


@pytest.mark.parametrize("proc", list(ZERO_END))
def test_per_sample_adaptive_solve_into_sigma_zero_meets_its_tolerance(proc):
    """``per_sample=True`` on a process whose grid ends at sigma = 0: every sample takes its own last step
    (the two-half check of the constant-eps step in r = sigma/alpha, shrinking its own r_b), so the error
    against the exact flow falls with the tolerance as for the batch-shared solve (slope 1 in 1/tol, below
    20 tol), no sample is evaluated at sigma = 0, each sample's own NFE is counted (the batch's is their
    maximum), and a sample solved alone gives the same answer."""
    sde = ZERO_END[proc]()
    x_T = TARGET_4D.marginal_sample(12, sde.T, sde, generator=torch.Generator().manual_seed(3)).to(F64)
    x_T[:4] *= 3.0  # samples far apart take different last steps
    exact = TARGET_4D.flow(x_T, sde.T, 0.0, sde)
    tols, errs = (1e-3, 1e-5, 1e-7), []
    for tol in tols:
        solver = ODE("dopri5", rtol=tol, atol=tol, per_sample=True)
        x = sd.sample(sde, _eps_model_refusing_sigma_zero(sde, TARGET_4D), x_T=x_T, solver=solver)
        errs.append(float((x - exact).abs().max()))
        own = solver.last_nfe_per_sample
        assert own.shape == (12,) and int(own.max()) == solver.last_nfe and int(own.min()) > 0
    assert 0.75 < loglog_slope([1 / t for t in tols], errs) < 1.25 and errs[-1] < 20 * tols[-1], errs
    x3 = sd.sample(sde, _eps_model_refusing_sigma_zero(sde, TARGET_4D), x_T=x_T[3:4], solver=solver)
    torch.testing.assert_close(x3[0], x[3], rtol=1e-13, atol=1e-13)
    # one sample alone: the per-sample solve is the batch-shared one (same steps, same last step, same
    # evaluations), to round-off (measured 1e-15)
    for i in (0, 3, 7):
        for tol in (1e-3, 1e-6):
            per, shared = ODE("dopri5", rtol=tol, atol=tol, per_sample=True), ODE("dopri5", rtol=tol, atol=tol)
            a, b = (
                sd.sample(sde, _eps_model_refusing_sigma_zero(sde, TARGET_4D), x_T=x_T[i : i + 1], solver=s)
                for s in (per, shared)
            )
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
            assert per.last_nfe == shared.last_nfe == int(per.last_nfe_per_sample[0])


def _start_at_r(sde, r):
    """The time where sigma/alpha = r (float64 host number)."""
    return float(sde.t_of_sigma_over_alpha(torch.tensor(r, dtype=F64)))


def _retry_problem(proc):
    """Six samples at r(t0) = 0.045, just above sqrt(tol) for tol = 1e-3, two of them pushed out by 3x so
    that the two-half check into sigma = 0 fails for some samples only; the exact eps refusing sigma = 0."""
    sde = ZERO_END[proc]()
    t0 = _start_at_r(sde, 0.045)
    x_T = TARGET_4D.marginal_sample(6, t0, sde, generator=torch.Generator().manual_seed(3)).to(F64)
    x_T[:2] *= 3.0
    return sde, t0, x_T, _eps_model_refusing_sigma_zero(sde, TARGET_4D)


@pytest.mark.parametrize("proc", list(ZERO_END))
def test_per_sample_step_into_sigma_zero_retries_each_sample_as_the_batch_shared_step_does(proc):
    """A grid [t0, 0] starting just above r = sqrt(tol) (r(t0) = 0.045, tol = 1e-3): the two-half check
    fails for some samples, which shrink their own r_b (by sqrt(0.81 / ratio), within [0.1, 0.5]) and try
    again, up to three rounds. Each sample of the batch equals that sample solved alone by the batch-shared
    step (same r_b's, same t_m = t(r_b / 2), same acceptance at ratio <= 1; measured 1e-16), with its own
    NFE; the answers are within 6 tol of the exact flow."""
    sde, t0, x_T, model = _retry_problem(proc)
    per = ODE("dopri5", rtol=1e-3, atol=1e-3, per_sample=True)
    x = sd.sample(sde, model, x_T=x_T, solver=per, grid=[t0, 0.0])
    own = per.last_nfe_per_sample.tolist()
    assert len(set(own)) >= 2 and max(own) - min(own) >= 9, own  # retries taken, not by every sample
    _check_each_sample_is_its_shared_solve(sde, model, x_T, t0, x, own, rtol=1e-3, atol=1e-3)
    assert float((x - TARGET_4D.flow(x_T, t0, 0.0, sde)).abs().max()) < 6e-3


def _check_each_sample_is_its_shared_solve(sde, model, x_T, t0, x, own, **tol):
    """Each sample of a per-sample solve from t0 to 0 (``x``, NFE ``own``) equals that sample solved alone by
    the batch-shared step with the same tolerances (1e-13), with the same NFE."""
    for i in range(x_T.shape[0]):
        shared = ODE("dopri5", **tol)
        xi = sd.sample(sde, model, x_T=x_T[i : i + 1], solver=shared, grid=[t0, 0.0])
        torch.testing.assert_close(x[i], xi[0], rtol=1e-13, atol=1e-13, msg=f"sample {i}")
        assert own[i] == shared.last_nfe, (i, own)


#: a target narrower than r = sqrt(tol): the constant-eps step's error there is a fixed fraction of x - m
NARROW_2D = sd.Gaussian(torch.tensor([0.0, 0.5], dtype=F64), torch.tensor([0.02, 0.03], dtype=F64))


@pytest.mark.parametrize("proc", list(ZERO_END))
def test_per_sample_step_into_sigma_zero_shrinks_at_most_tenfold_as_the_shared_step_does(proc):
    """A target of std 0.02-0.03 (below r_b = sqrt(tol) = 0.032) and a sample 100-200 std off: its first
    two-half check fails by a ratio near 250 (measured 248-290 under the RMS and the max norm; atol = 1e-3,
    rtol = 1e-4), where the shrink 0.9 / sqrt(ratio) = 0.06 is clamped to 0.1. Each sample of the batch
    equals that sample solved alone by the batch-shared step, which clamps the same way (1e-13), with its
    own NFE; the answers are within 6 atol of the exact flow."""
    sde = ZERO_END[proc]()
    t0 = _start_at_r(sde, 0.045)
    x_T = NARROW_2D.marginal_sample(4, t0, sde, generator=torch.Generator().manual_seed(3)).to(F64)
    x_T[0] = torch.tensor([3.0, -4.0], dtype=F64)
    x_T[1] = torch.tensor([0.5, 1.0], dtype=F64)
    model = _eps_model_refusing_sigma_zero(sde, NARROW_2D)
    per = ODE("dopri5", rtol=1e-4, atol=1e-3, per_sample=True)
    x = sd.sample(sde, model, x_T=x_T, solver=per, grid=[t0, 0.0])
    _check_each_sample_is_its_shared_solve(
        sde, model, x_T, t0, x, per.last_nfe_per_sample.tolist(), rtol=1e-4, atol=1e-3
    )
    assert float((x - NARROW_2D.flow(x_T, t0, 0.0, sde)).abs().max()) < 6e-3


@pytest.mark.parametrize("proc", list(ZERO_END))
def test_per_sample_step_into_sigma_zero_stops_at_max_nfe_as_the_shared_step_does(proc):
    """max_nfe equal to the batch's NFE is enough; one less stops before the last two-half try, at the
    first sample still pending, with the t and NFE of that sample's batch-shared solve under the same limit
    and its index in the message."""
    sde, t0, x_T, model = _retry_problem(proc)
    per = ODE("dopri5", rtol=1e-3, atol=1e-3, per_sample=True)
    x = sd.sample(sde, model, x_T=x_T, solver=per, grid=[t0, 0.0])
    n = per.last_nfe
    i = per.last_nfe_per_sample.tolist().index(n)  # the first sample in the last round
    at_n = ODE("dopri5", rtol=1e-3, atol=1e-3, per_sample=True, max_nfe=n)
    assert torch.equal(sd.sample(sde, model, x_T=x_T, solver=at_n, grid=[t0, 0.0]), x) and at_n.last_nfe == n
    with pytest.raises(sd.AdaptiveSolveError) as shared:
        sd.sample(
            sde, model, x_T=x_T[i : i + 1], solver=ODE("dopri5", rtol=1e-3, atol=1e-3, max_nfe=n - 1), grid=[t0, 0.0]
        )
    with pytest.raises(sd.AdaptiveSolveError) as err:
        sd.sample(
            sde,
            model,
            x_T=x_T,
            solver=ODE("dopri5", rtol=1e-3, atol=1e-3, per_sample=True, max_nfe=n - 1),
            grid=[t0, 0.0],
        )
    assert err.value.nfe == shared.value.nfe == n - 2 and err.value.t == pytest.approx(shared.value.t, rel=1e-13)
    assert 0.0 < err.value.t < t0
    assert str(err.value) == (
        f"the adaptive solve (dopri5, per sample) stopped at t = {err.value.t:.6g} after {n - 2} evaluations "
        f"(max_nfe={n - 1}) (sample {i})"
    )


@pytest.mark.parametrize("proc", list(ZERO_END))
def test_per_sample_step_into_sigma_zero_names_the_sample_whose_first_evaluation_is_nan(proc):
    """A grid [t0, 0] with r(t0) = 0.024 < sqrt(tol): the step into zero starts at t0 itself (no
    integration first), so its eps at t0 is the first evaluation; NaN there for sample 2 only is named
    with t0 and the evaluation count, and the other samples' values are not returned."""
    sde = ZERO_END[proc]()
    t0 = _start_at_r(sde, 0.024)
    x_T = TARGET_4D.marginal_sample(6, t0, sde, generator=torch.Generator().manual_seed(3)).to(F64)
    model = _eps_model_refusing_sigma_zero(sde, TARGET_4D)
    per = ODE("dopri5", rtol=1e-3, atol=1e-3, per_sample=True)
    x = sd.sample(sde, model, x_T=x_T, solver=per, grid=[t0, 0.0])
    # no integration before the two-half step: 2 evaluations for a sample accepted at once
    assert min(per.last_nfe_per_sample.tolist()) == 2
    torch.testing.assert_close(x, TARGET_4D.flow(x_T, t0, 0.0, sde), rtol=0, atol=6e-3)
    for i in range(6):  # r_b = r(t0) in float64 as the shared step takes it (t_m = t(r(t0) / 2))
        xi = sd.sample(sde, model, x_T=x_T[i : i + 1], solver=ODE("dopri5", rtol=1e-3, atol=1e-3), grid=[t0, 0.0])
        torch.testing.assert_close(x[i], xi[0], rtol=1e-13, atol=1e-13, msg=f"sample {i}")

    def score(x, t):
        return torch.where((torch.arange(6) == 2)[:, None], torch.nan, model.score(x, t))

    msg = (
        f"the adaptive solve (dopri5, per sample) got NaN or inf from the vector field at t = {t0:.6g} "
        "for sample 2 (evaluation 2); check the model's output there"
    )
    with pytest.raises(sd.NonFiniteError, match=f"^{re.escape(msg)}$"):
        sd.sample(sde, score, x_T=x_T, solver=ODE("dopri5", rtol=1e-3, atol=1e-3, per_sample=True), grid=[t0, 0.0])


@pytest.mark.parametrize("proc", list(ZERO_END))
def test_step_into_sigma_zero_below_sqrt_tol_is_the_two_half_step_from_t0_itself(proc):
    """A grid [t0, 0] with r(t0) < sqrt(tol) (t0 = 0.0007: r = 0.0087 on VP, 0.0084 on DDPM, 7.5e-5 on
    subVP; tol = 1e-3): the step into sigma = 0, batch-shared or per sample, starts at t0 itself, not at
    t(r(t0)), which differs from t0 in the last place here: no integration, two evaluations (each sample's
    too; in u = log r and in t, where a start at t(r(t0)) would cost steps), and the answer is the two-half
    constant-eps step in (r, y) = (sigma/alpha, x/alpha) written out with the exact eps of the Gaussian,
    ``r (y - m) / (v + r^2)``: y_m = y - (r/2) eps(y, r), y_0 = y_m - (r/2) eps(y_m, r/2) (1e-13). The
    shared solve's budget: max_nfe = 2 suffices, 1 stops before the step (t0, 0 evaluations); NaN at its
    first evaluation is named with t0 and its count (whole messages)."""
    sde = ZERO_END[proc]()
    t0 = 0.0007
    r = float(sde.sigma_over_alpha(torch.tensor(t0, dtype=F64)))
    assert r < math.sqrt(1e-3) and float(sde.t_of_sigma_over_alpha(torch.tensor(r, dtype=F64))) != t0
    x_T = TARGET_4D.marginal_sample(6, t0, sde, generator=torch.Generator().manual_seed(5)).to(F64)
    model = _eps_model_refusing_sigma_zero(sde, TARGET_4D)
    m, v = TARGET_4D.mean.to(F64), TARGET_4D.std.to(F64) ** 2

    def eps(y, rr):
        return rr * (y - m) / (v + rr * rr)

    y = x_T / float(sde.alpha(torch.tensor(t0, dtype=F64)))
    y_m = y - (r / 2) * eps(y, r)
    want = y_m - (r / 2) * eps(y_m, r / 2)  # alpha(0) = 1
    for per_sample in (False, True):
        for max_nfe, tv in ((10_000, "auto"), (2, "auto"), (2, "t")):
            solver = ODE("dopri5", rtol=1e-3, atol=1e-3, max_nfe=max_nfe, per_sample=per_sample, time_variable=tv)
            x = sd.sample(sde, model, x_T=x_T, solver=solver, grid=[t0, 0.0])
            torch.testing.assert_close(x, want, rtol=1e-13, atol=1e-13)
            assert solver.last_nfe == 2 and (not per_sample or solver.last_nfe_per_sample.tolist() == [2] * 6)
    with pytest.raises(sd.AdaptiveSolveError) as err:
        sd.sample(sde, model, x_T=x_T, solver=ODE("dopri5", rtol=1e-3, atol=1e-3, max_nfe=1), grid=[t0, 0.0])
    assert (err.value.t, err.value.nfe) == (t0, 0)
    assert str(err.value) == f"the adaptive solve (dopri5) stopped at t = {t0:.6g} after 0 evaluations (max_nfe=1)"

    def score(x, t):
        return torch.where((torch.arange(6) == 2)[:, None], torch.nan, model.score(x, t))

    msg = (
        f"the adaptive solve (dopri5) got NaN or inf from the vector field at t = {t0:.6g} (evaluation 2); "
        "check the model's output there"
    )
    with pytest.raises(sd.NonFiniteError, match=f"^{re.escape(msg)}$"):
        sd.sample(sde, score, x_T=x_T, solver=ODE("dopri5", rtol=1e-3, atol=1e-3), grid=[t0, 0.0])


@pytest.mark.gpu
def test_per_sample_step_into_sigma_zero_on_cuda_is_the_cpu_solve():
    """On a GPU, the per-sample step into sigma = 0 with retries (grid [t0, 0], r(t0) = 0.045) keeps its
    host times and flags on the host and the states on the device: the answer and each sample's NFE equal
    the CPU solve's (to round-off), and NaN for one sample at the first evaluation (r(t0) = 0.024) is named."""
    sde = ZERO_END["VP"]()
    model = _eps_model_refusing_sigma_zero(sde, TARGET_4D)
    for r0 in (0.045, 0.024):
        t0 = _start_at_r(sde, r0)
        x_T = TARGET_4D.marginal_sample(6, t0, sde, generator=torch.Generator().manual_seed(3)).to(F64)
        x_T[:2] *= 3.0
        runs = {}
        for dev in ("cpu", "cuda"):
            solver = ODE("dopri5", rtol=1e-3, atol=1e-3, per_sample=True)
            runs[dev] = sd.sample(sde, model, x_T=x_T.to(dev), solver=solver, grid=[t0, 0.0]), solver
        torch.testing.assert_close(runs["cuda"][0].cpu(), runs["cpu"][0], rtol=1e-12, atol=1e-12)
        assert runs["cuda"][1].last_nfe_per_sample.tolist() == runs["cpu"][1].last_nfe_per_sample.tolist()

    def score(x, t):
        return torch.where((torch.arange(6, device=x.device) == 2)[:, None], torch.nan, model.score(x, t))

    with pytest.raises(sd.NonFiniteError, match=r"for sample 2 \(evaluation 2\)"):
        sd.sample(
            sde, score, x_T=x_T.cuda(), solver=ODE("dopri5", rtol=1e-3, atol=1e-3, per_sample=True), grid=[t0, 0.0]
        )
