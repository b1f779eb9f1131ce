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
from helpers import bitwise_changes, outputs_at_commit, processes
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
    (g^2 h / sigma) eps instead of -g^2 h (-eps / sigma); PC: -k sigma, and k / 4 in the Metropolis
    ratio) re-rounds a few coefficients, so the tolerance there is 1e-12 over 12 steps (a wrong fold
    would be off by O(1)). The x0 estimates handed
    to a callback agree too, and each model call is one network evaluation."""
    sde, solver = _processes()[name], _solvers()[solver_name]
    try:
        solver.check(sde)
    except ValueError:
        pytest.skip(f"{solver_name} does not apply to {name}")
    model = _exact_model(_target(), sde, pred)
    folded = pred == "eps" and not solver_name.startswith(_EPS_SOLVERS)  # PC folds too (5a84038)
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
    if pred == "eps":  # every solver folds an eps network's conversion (PC too, since 5a84038)
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


# ----------------------------------------------------------------------------- results unchanged
# The eager-speed work (issue 12 item 5: the network's time input precomputed per grid, a one-kernel
# non-finite record, the Runge-Kutta eps stages through view_at) must not change one bit of any
# result. PINNED is main before it; _reference_outputs runs there (from `git archive`) and here.
PINNED = "f7b9ac92e21410540f4ee3fc3f43a60bdc1cfe56"
#: re-pinned: the multistep exponential integrators' step became a ring of precomputed weights (issue 12
#: item 5, 7e3b4a1: the eps view folded into the weights, UniPC's corrector composed with its predictor).
#: The same maps, but the precomputed weights round differently: last-bit changes (float32: a few ulps of the
#: output; float64: 2.5e-15 relative). These solvers are pinned bitwise to faeeb11 (7e3b4a1's step; UniPC's
#: small rho systems solved in Python there: one float64 ulp in one case; its DPMSolver bitwise PINNED's),
#: and test_repinned_solvers_agree_with_pinned_in_float64 ties them to PINNED to 1e-12 relative.
#: Re-pinned again with EulerMaruyama (every term one addcmul), EulerAncestral (an eps network's D folded into
#: the coefficients) and VDMAncestral (mean and noise one addcmul each): fewer kernels per step (issue 12 item 5,
#: 19f322a, 00c7c7c), rounding moved, pinned to 00c7c7c, where the exponential solvers are bitwise faeeb11's.
REPINNED = (
    "00c7c7cba4a3b0c3fd36fa9393bed16886bda1cc",
    ("dpmpp1", "dpmpp2", "dpmpp3", "dpmpp2-sde", "unipc", "unipc3-bh1", "em", "euler-a", "vdm"),
)


def _reference_outputs(only=None, float64=False):
    """Fixed-seed outputs, callback x0 previews and NFE of every fixed-step solver (the
    predictor-corrector's numerics are another change's: not here) on four processes, with eps
    (float32), x0 (float64) and score (float32) networks. Self-contained: it also runs on PINNED.
    ``only``: these solvers' names alone; ``float64``: every network in float64."""
    import torch

    import sdesolve as sd

    solvers = {
        "ddim": lambda: sd.DDIM(), "ddim-eta": lambda: sd.DDIM(0.5), "ddpm": lambda: sd.DDPM(),
        "ddpm-large": lambda: sd.DDPM("large"), "plms": lambda: sd.PLMS(), "plms-prk": lambda: sd.PLMS("prk"),
        "em": lambda: sd.EulerMaruyama(), "euler": lambda: sd.ODE("euler"), "midpoint": lambda: sd.ODE("midpoint"),
        "heun": lambda: sd.ODE("heun"), "rk3": lambda: sd.ODE("rk3"), "rk4": lambda: sd.ODE("rk4"),
        "dpmpp1": lambda: sd.DPMSolverPP(1), "dpmpp2": lambda: sd.DPMSolverPP(2), "dpmpp3": lambda: sd.DPMSolverPP(3),
        "dpmpp2-sde": lambda: sd.DPMSolverPP(2, stochastic=True), "unipc": lambda: sd.UniPC(),
        "unipc3-bh1": lambda: sd.UniPC(3, "bh1"), "dpm1": lambda: sd.DPMSolver(1), "dpm2": lambda: sd.DPMSolver(2),
        "dpm3": lambda: sd.DPMSolver(3), "edm-heun": lambda: sd.EDMHeun(), "edm-churn": lambda: sd.EDMHeun(s_churn=10.0),
        "euler-a": lambda: sd.EulerAncestral(), "vdm": lambda: sd.VDMAncestral(),
    }  # fmt: skip
    solvers = {k: v for k, v in solvers.items() if only is None or k in only}
    processes = {
        "vp": lambda: sd.VPSDE(), "ve": lambda: sd.VESDE(), "vdm": lambda: sd.VDMSDE(t_min=1e-3),
        "discrete0": lambda: sd.DiscreteVPSDE.from_schedule("linear", 1000, t_min=0.0),  # steps into sigma = 0
    }  # fmt: skip
    mu = torch.tensor([0.7, -0.4, 0.2, 1.1])

    def net(x, t):  # smooth and bounded, time-dependent (t: the network's time input, 999-scale on discrete0)
        s = t.reshape((-1,) + (1,) * (x.dim() - 1)).to(x.dtype)
        return (0.6 + 0.1 * torch.cos(s)) * torch.tanh(x) - 0.3 * torch.sin(s) * mu.to(x.dtype)

    out = {}
    for pname, make_sde in processes.items():
        for sname, make_solver in solvers.items():
            low = torch.float64 if float64 else torch.float32
            for pred, dtype in (("eps", low), ("x0", torch.float64), ("score", low)):
                sde, solver = make_sde(), make_solver()
                try:
                    solver.check(sde)
                except ValueError:
                    continue
                model, x0s, key = sd.ScoreModel(net, sde, prediction=pred), [], f"{pname}/{sname}/{pred}"
                x = sd.sample(
                    sde, model, (6, 4), solver=solver, steps=7, dtype=dtype, generator=torch.Generator().manual_seed(11),
                    callback=None if pred == "score" else (lambda d, acc=x0s: acc.append(d["x0"])),
                )  # fmt: skip
                out[key], out[key + "/nfe"] = x, model.nfe
                if x0s:
                    out[key + "/x0"] = torch.stack(x0s)
    return out


#: per solver, (sum, sum of |.|) in float64 over its outputs (every process and network) at PINNED:
#: a check that needs no git history (machines may differ in the last bits of float32 kernels)
_CHECKSUMS = {
    # every output, the x0 network's samples ("p/s/x0") included: until 2026-11-29 the filter below also dropped
    # those with the x0 previews ("p/s/pred/x0"), so no x0-network output was checked here. REPINNED's solvers
    # (dpmpp*, unipc*) at REPINNED (their ring weights round differently in the last bits from PINNED's)
    "ddim": (2598.0441006173437, 41332.5671808041),
    "ddim-eta": (2158.6284384511796, 42773.64992803086),
    "ddpm": (2327.5888966525654, 50078.04151900345),
    "ddpm-large": (1796.732893898307, 50429.65351297773),
    "plms": (2231.0037672529306, 29894.32341528096),
    "plms-prk": (2236.3386583719457, 29650.34656504891),
    "em": (-11381.99152954511, 128413.62012749148),
    "euler": (1699.5602900890801, 56299.31987449658),
    "midpoint": (2012.9938162157873, 24922.053582808145),
    "heun": (1812.2121351185724, 36272.035715536884),
    "rk3": (2079.2345688289947, 29200.72349248646),
    "rk4": (2451.0055372345005, 31414.956081789463),
    "dpmpp1": (2598.0440530975407, 41332.56711969444),
    "dpmpp2": (2463.6302244560193, 36746.66568609213),
    "dpmpp3": (2530.4881351805934, 40064.029266037716),
    "dpmpp2-sde": (918.1754961434565, 51625.6431459638),
    "unipc": (2449.684187517714, 36320.694669106015),
    "unipc3-bh1": (2443.357333432089, 36578.749374348175),
    "dpm1": (2598.0441006173437, 41332.5671808041),
    "dpm2": (2541.2818034248353, 28974.96536936614),
    "dpm3": (2264.7955059636715, 32054.28120553507),
    "edm-heun": (2385.362243921816, 31343.715058271508),
    "edm-churn": (605.9913268684033, 38182.87801118191),
    "euler-a": (984.2506582043793, 51715.701566880016),
    "vdm": (1551.2407141430153, 50680.2555776398),
}


@pytest.fixture(scope="module")
def reference_outputs():
    return _reference_outputs()


def test_outputs_match_the_stored_checksums(reference_outputs):
    """Every solver's outputs sum to PINNED's checksums: to 1e-5 relative of the sum of |.| (float32
    kernels of other machines may round differently in the last bit; a changed formula moves the sums
    by far more: DDIM and DPM-Solver++(1) are the same map and differ here only in the 7th digit)."""
    sums: dict[str, list[float]] = {k: [0.0, 0.0] for k in _CHECKSUMS}
    for key, value in reference_outputs.items():
        if key.endswith("/nfe") or key.count("/") == 3:  # NFE and the x0 previews ("p/s/pred/x0")
            continue
        acc = sums[key.split("/")[1]]
        acc[0] += float(value.double().sum())
        acc[1] += float(value.double().abs().sum())
    for name, (total, total_abs) in _CHECKSUMS.items():
        assert sums[name][1] == pytest.approx(total_abs, rel=1e-6), name
        assert abs(sums[name][0] - total) <= 1e-5 * total_abs, (name, sums[name][0], total)


def _outputs_at(commit, tmp_path, args=""):
    """``_reference_outputs(args)`` computed by ``commit``'s sdesolve (tests/helpers.outputs_at_commit)."""
    return outputs_at_commit(commit, _reference_outputs, tmp_path, args)


def test_outputs_are_bitwise_those_of_the_pinned_commit(reference_outputs, tmp_path):
    """The same outputs, computed by PINNED's sdesolve (REPINNED's for its solvers) and by this one:
    bitwise equal, same dtypes, same NFE, same x0 previews."""
    ref = _outputs_at(PINNED, tmp_path)
    ref.update(_outputs_at(REPINNED[0], tmp_path, f"only={REPINNED[1]!r}"))
    assert sorted(ref) == sorted(reference_outputs)
    changed = bitwise_changes(ref, reference_outputs)
    assert not changed, changed


def test_repinned_solvers_agree_with_pinned_in_float64(tmp_path):
    """REPINNED's solvers, every network in float64: this sdesolve and PINNED's agree to 1e-12 relative
    to each output's largest magnitude (measured: 2.5e-15; a changed formula would be off by O(h) or
    more), with the same NFE: the re-pin moved rounding only."""
    now = _reference_outputs(only=REPINNED[1], float64=True)
    ref = _outputs_at(PINNED, tmp_path, f"only={REPINNED[1]!r}, float64=True")
    assert sorted(ref) == sorted(now) and len(now) > 100
    for key, value in ref.items():
        if key.endswith("/nfe"):
            assert now[key] == value, key
            continue
        assert value.dtype == now[key].dtype == torch.float64, key
        scale = float(value.abs().max())
        assert float((now[key] - value).abs().max()) <= 1e-12 * scale, (key, float((now[key] - value).abs().max()))


# ----------------------------------------------------------------------------- the non-finite record
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_record_is_non_finite_exactly_when_the_state_is(device, dtype):
    """record_step writes max |x| (one reduction, in the state's dtype): NaN, +inf or -inf anywhere
    (first, middle or last element) make the entry non-finite; the largest finite numbers of the
    dtype, many of them (whose sum would overflow), do not; first_nonfinite finds the first bad step."""
    from sdesolve.solvers.base import first_nonfinite, new_record, record_step

    big = torch.finfo(dtype).max
    record = new_record(8, device, dtype)
    x = torch.full((5, 3, 7), big, dtype=dtype, device=device)
    x[::2] = -big
    record_step(record, 0, x)
    assert bool(torch.isfinite(record[0]))
    for step, (where, bad) in enumerate(
        [((0, 0, 0), float("nan")), ((2, 1, 3), float("inf")), ((4, 2, 6), -float("inf"))], start=3
    ):
        y = torch.zeros(5, 3, 7, dtype=dtype, device=device)
        y[where] = bad
        record_step(record, step, y)
        assert not bool(torch.isfinite(record[step])), (where, bad)
    assert int(first_nonfinite(record)) == 3
    record64 = new_record(2, device)  # GraphSampler's float64 record takes states of any dtype
    record_step(record64, 1, x)
    assert bool(torch.isfinite(record64[1])) and float(record64[1]) == float(big)


# ----------------------------------------------------------------------------- folded network views
@pytest.mark.parametrize("proc", ["vp", "ve", "discrete0"])
@pytest.mark.parametrize("solver", [sd.EulerAncestral(), sd.EulerAncestral(eta=0.0), sd.EulerMaruyama()], ids=repr)
def test_the_folded_eps_step_is_the_step_of_every_other_view(solver, proc):
    """EulerAncestral takes an eps network's output straight into precomputed coefficients (D folded in),
    EulerMaruyama g^2/sigma: the same exact Gaussian seen as an eps, x0, v and score network gives the same
    samples and x0 previews in float64, to 1e-12 of their scale (a wrong folded coefficient moves them by O(1))."""
    sde = {"vp": sd.VPSDE(), "ve": sd.VESDE(), "discrete0": sd.DiscreteVPSDE.from_schedule("linear", t_min=0.0)}[proc]
    if isinstance(solver, sd.EulerMaruyama) and float(sde.t_min) == 0.0:
        sde = sd.DiscreteVPSDE.from_schedule("linear")  # a score solver stops at t_min > 0
    target = sd.Gaussian(
        torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.3, 1.0, 0.7], dtype=torch.float64)
    )
    score = target.model(sde)

    def view(pred):
        def net(x, t):
            return score.predict(x, t, pred) if pred != "score" else score(x, t)

        return sd.ScoreModel(net, sde, prediction=pred, time_input=lambda t: t)

    outs = {}
    for pred in ("eps", "x0", "v", "score"):
        previews = []
        x = sd.sample(sde, view(pred), (6, 3), solver=solver, steps=6, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(3), callback=lambda d, acc=previews: acc.append(d["x0"]))  # fmt: skip
        outs[pred] = (x, torch.stack(previews))
    ref_x, ref_p = outs["x0" if not isinstance(solver, sd.EulerMaruyama) else "score"]
    for pred, (x, p) in outs.items():
        torch.testing.assert_close(x, ref_x, rtol=0, atol=1e-12 * float(ref_x.abs().max()), msg=pred)
        torch.testing.assert_close(p, ref_p, rtol=0, atol=1e-12 * float(ref_p.abs().max()), msg=pred)
