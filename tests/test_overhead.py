"""Every fixed-step solver calls the model through ``view_at`` with precomputed coefficients (coefs=,
and the eps fold), gives the results of the plain path, and evaluates nothing of the process on the
device inside a step, for eps, x0, v and score networks.

Reference ("plain path"): the same solver driven with a wrapper that only exposes ``.score(x, t)``,
so the model computes alpha(t), sigma(t) itself and the solver uses its score-form coefficients,
exactly the computation before the change. Independent reference: Euler–Maruyama and the Euler ODE
step written out by hand from the public ``sde.f``, ``sde.g2`` and the target's exact score.
"""

import pytest
import torch
from helpers import processes
from torch.utils._python_dispatch import TorchDispatchMode

import sdesolve as sd
from sdesolve.model import PREDICTIONS, ScoreModel, convert

F64 = torch.float64


def _processes():
    return processes("vp", "ve", "discrete")


def _solvers():
    return {
        "em": sd.EulerMaruyama(),
        **{f"ode-{m}": sd.ODE(m) for m in ("euler", "midpoint", "heun", "rk3", "rk4")},
        "pc": sd.PredictorCorrector(),
        "pc-em-annealed": sd.PredictorCorrector(sd.EulerMaruyamaPredictor(), sd.AnnealedLangevinCorrector(0.1, 2)),
        "pc-ancestral-none": sd.PredictorCorrector(sd.AncestralPredictor(), None),
        "pc-rd-flow": sd.PredictorCorrector(sd.ReverseDiffusionPredictor(probability_flow=True), None),
        "ddim": sd.DDIM(),
        "ddim-eta": sd.DDIM(eta=0.5),
        "ddpm": sd.DDPM(),
        "ddpm-large": sd.DDPM("large"),
        "plms": sd.PLMS(),
        "plms-prk": sd.PLMS("prk"),
        "vdm": sd.VDMAncestral(),
    }


_EPS_SOLVERS = ("ddim", "ddpm", "plms", "vdm")  # ask for eps: no conversion at all from an eps network


class _ScoreOnly:
    """Exposes the views without coefs (the plain path): ``model.eps(x, t)`` etc. compute alpha(t),
    sigma(t) from the process. Score solvers see only ``.score`` (so they use their score form)."""

    def __init__(self, model):
        self.model = model

    def score(self, x, t):
        return self.model.score(x, t)

    def eps(self, x, t):
        return self.model.eps(x, t)


def _exact_model(target, sde, pred):
    """A ScoreModel predicting ``pred`` whose network is the target's exact view (float64 inside)."""

    def net(x, t):
        s = target.marginal_score(x.to(F64), t, sde)
        shape = (-1,) + (1,) * (x.dim() - 1)
        a = torch.exp(sde._log_alpha(t.to(F64))).reshape(shape)
        sg = torch.exp(sde._log_sigma(t.to(F64))).reshape(shape)
        return convert(s, x.to(F64), a, sg, "score", pred).to(x.dtype)

    return ScoreModel(net, sde, prediction=pred, time_input=lambda t: t)


def _target():
    return sd.Gaussian(torch.tensor([0.7, -0.4, 0.2]), torch.tensor([0.5, 1.2, 0.8]))


@pytest.mark.parametrize("name", ["vp", "ve", "discrete"])
@pytest.mark.parametrize("solver_name", list(_solvers()))
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_solvers_match_the_plain_path(name, solver_name, pred):
    """float64, 12 steps, same noise: the coefs path equals the plain path to 1e-15 relative per step
    (only the last place of the float64 exp may differ); the eps fold (EM and ODE with an eps model:
    (g^2 h / sigma) eps instead of -g^2 h (-eps / sigma)) re-rounds a few coefficients, so the
    tolerance there is 1e-12 over 12 steps (a wrong fold would be off by O(1)). The x0 estimates handed
    to a callback agree too, and each model call is one network evaluation."""
    sde, solver = _processes()[name], _solvers()[solver_name]
    try:
        solver.check(sde)
    except ValueError:
        pytest.skip(f"{solver_name} does not apply to {name}")
    model = _exact_model(_target(), sde, pred)
    folded = pred == "eps" and not solver_name.startswith(("pc", *_EPS_SOLVERS))
    tol = 1e-12 if folded else 1e-14

    grid = sd.grids.uniform(sde, 12)
    x_T = sde.prior_sample((6, 3), generator=torch.Generator().manual_seed(4), dtype=F64)

    def run(m):
        x0s = []
        gen = torch.Generator().manual_seed(3)
        out = solver.solve(sde, m, x_T, grid, generator=gen, callback=lambda d: x0s.append(d["x0"]))
        return out, torch.stack(x0s)

    n0 = model.nfe
    got, got_x0 = run(model)
    assert model.nfe - n0 == solver.nfe(12)
    ref, ref_x0 = run(_ScoreOnly(model))
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(got_x0, ref_x0, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["vp", "ve", "discrete"])
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_em_and_euler_ode_match_hand_written_steps(name, pred):
    """Independent reference: x_{i+1} = x + (f x - w g^2 s) h (+ g sqrt(-h) z for EM, w = 1; w = 1/2
    for the ODE) with f, g^2 from the public process API and s the target's exact score, in float64."""
    sde, target = _processes()[name], _target()
    model = _exact_model(target, sde, pred)
    grid = sd.grids.uniform(sde, 10)
    for solver, w in ((sd.EulerMaruyama(), 1.0), (sd.ODE("euler"), 0.5)):
        x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
        gen = torch.Generator().manual_seed(2)
        got = solver.solve(sde, model, x, grid, generator=torch.Generator().manual_seed(2), denoise=False)
        y = x.clone()
        for i in range(10):
            t, h = float(grid[i]), float(grid[i + 1] - grid[i])
            f, g2 = float(sde.f(t)), float(sde.g2(t))
            y = y + (f * y - w * g2 * target.marginal_score(y, t, sde)) * h
            if w == 1.0:
                y = y + (g2 * -h) ** 0.5 * torch.randn(y.shape, generator=gen, dtype=F64)
        torch.testing.assert_close(got, y, rtol=1e-12, atol=1e-12)


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("solver_name", list(_solvers()))
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_a_step_does_not_evaluate_the_process(solver_name, pred):
    """Inside every step (the first four, so multistep warm-ups and histories are covered) on
    DiscreteVPSDE (whose alpha(t) is a gather and interpolation of knots) no
    exp/log/expm1/index/searchsorted op runs: alpha and sigma come precomputed. With an eps model the
    EM, ODE, DDIM/DDPM, PLMS and VDM steps do not convert at all (no div / neg)."""
    from sdesolve.solvers.base import _to_device

    sde, solver = _processes()["discrete"], _solvers()[solver_name]
    model = ScoreModel(lambda x, t: 0.1 * x, sde, prediction=pred)
    x = torch.randn(4, 3, 2, 2)
    coefs = _to_device(solver.init(sde, sd.grids.uniform(sde, 8)), x)
    process_ops = {"exp", "log", "expm1", "log1p", "index", "searchsorted", "gather", "bucketize", "floor"}

    def op_names(m):
        names, state = [], solver.init_state(x, coefs)
        for i in range(4):
            with _Ops() as ops:
                state = solver.step(m, state, i, coefs, generator=torch.Generator().manual_seed(i), need_x0=True)
            names += [n.split(".")[0] for n in ops.names]
        return set(names)

    names = op_names(model)
    assert not process_ops & names, (solver_name, names)
    if pred == "eps" and not solver_name.startswith("pc"):
        assert not {"div", "neg"} & names, (solver_name, names)
    if pred in ("score", "eps"):
        return  # no conversion on the plain path either (score solvers, eps solvers)
    # the plain path does evaluate the process: the check above can fail
    assert process_ops & op_names(_ScoreOnly(model))


@pytest.mark.parametrize("pred", PREDICTIONS)
def test_float32_fold_agrees_with_the_plain_path(pred):
    """float32 (the GPU case), 50 EM steps on VP from the same x_T and noise: within a few float32
    ulps per step of the plain path (rtol 1e-4 after 50 steps; an unfolded wrong sign is O(1))."""
    sde = sd.VPSDE()
    model = _exact_model(_target(), sde, pred)
    grid = sd.grids.uniform(sde, 50)
    x_T = sde.prior_sample((64, 3), generator=torch.Generator().manual_seed(4), dtype=torch.float32)
    for solver in (sd.EulerMaruyama(), sd.ODE("heun")):
        got = solver.solve(sde, model, x_T, grid, generator=torch.Generator().manual_seed(0))
        ref = solver.solve(sde, _ScoreOnly(model), x_T, grid, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
