"""Fixed-step Runge–Kutta: what the mutation runs found untested (issue 14).

A step's elementwise work is its tableau: per stage ``k_j = (h f) x_j + (h g^2 / 2) s_j`` (two products and
one sum), and per nonzero weight ``a`` of A and b one update ``y + a k``, which is a single kernel
(``add`` with ``alpha=a``) when ``a`` is a power of two, times a sign (``a k`` is then exact, so the fused
kernel gives the bits of the product followed by the sum: heun's and midpoint's 1/2, rk3's -1 and 2), and
a product then a sum otherwise (rk3's and rk4's 1/6, 1/3, 2/3, whose fused form would round once instead
of twice and change the bits that `test_overhead.py` pins).

A step into sigma = 0 ends at ``x = alpha(0) y``: alpha(0) is 1 on every built-in process, but a user's
process may start from scaled data (``check_sde`` asks only alpha(0) > 0), and its alpha(0) must reach the
float64 state unrounded.
"""

import math
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sdesolve as sd
from sdesolve.model import ScoreModel, convert
from sdesolve.solvers.base import _to_device
from sdesolve.solvers.runge_kutta import TABLEAUX

F64 = torch.float64


class _Ops(TorchDispatchMode):
    """Records each aten op with the value of its ``alpha`` keyword (None without one)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops.append((func.__name__.split(".")[0], kwargs.get("alpha")))
        return func(*args, **kwargs)


def _power_of_two(a: float) -> bool:
    """|a| = 2^m for an integer m, written from the definition (not from frexp)."""
    m = round(math.log2(abs(a)))
    return abs(a) == 2.0**m


@pytest.mark.parametrize("method", list(TABLEAUX))
@pytest.mark.parametrize("pred", ["eps", "score"])
def test_a_step_adds_power_of_two_multiples_in_one_kernel(method, pred):
    """One step of each method on VP (a step away from sigma = 0), with a network whose only op is sin:
    2 products and 1 sum per stage; per nonzero tableau entry a, one fused ``add(alpha=a)`` when
    a = +-2^m other than 1 (1: a plain sum), else one product and one sum; no other product or sum. Called
    as the Solver interface's default (need_x0=False), the step returns the state alone: no x0 preview is
    formed (it would cost two products and a sum)."""
    sde, tab = sd.VPSDE(), TABLEAUX[method]
    solver = sd.ODE(method)
    model = ScoreModel(lambda x, t: torch.sin(x), sde, prediction=pred)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    coefs = _to_device(solver.init(sde, sd.grids.uniform(sde, 8)), x)
    state = solver.init_state(x, coefs)
    with _Ops() as rec:
        out = solver.step(model, state, 1, coefs)
    entries = [a for row in tab.A for a in row if a != 0.0] + [b for b in tab.b if b != 0.0]
    fused = sorted(a for a in entries if a != 1.0 and _power_of_two(a))
    unfused = [a for a in entries if not _power_of_two(a)]
    stages = len(tab.c)
    names = Counter(name for name, _ in rec.ops)
    assert names["sin"] == stages
    assert sorted(alpha for name, alpha in rec.ops if name == "add" and alpha is not None) == fused
    assert names["mul"] == 2 * stages + len(unfused), (method, names)
    assert names["add"] + names["sub"] == stages + len(entries), (method, names)
    assert set(out) == {"x"} and torch.isfinite(out["x"]).all()


class ScaledVP(sd.LinearSDE):
    """A user's process from scaled data: ``x_t = k (alpha_VP(t) x0 + sigma_VP(t) eps)`` with k = 0.9, so
    alpha(0) = 0.9, sigma(0) = 0 (t_min = 0) and sigma / alpha is VP's; f, g^2 and the inverse of the
    log-SNR come from the base class."""

    t_min = 0.0
    prior_std = 0.9

    def _log_alpha(self, t):
        return math.log(0.9) - 0.25 * t * t * 19.9 - 0.05 * t

    def _log_sigma(self, t):
        return math.log(0.9) + 0.5 * torch.log(-torch.expm1(-0.5 * t * t * 19.9 - 0.1 * t))


#: the steps into sigma = 0 written out (c, A, b): Ralston's second order (heun), Heun's third order (rk3, rk4)
_RALSTON = ([0.0, 2 / 3], [[], [2 / 3]], [1 / 4, 3 / 4])
_HEUN3 = ([0.0, 1 / 3, 2 / 3], [[], [1 / 3], [0.0, 2 / 3]], [1 / 4, 0.0, 3 / 4])


@pytest.mark.parametrize("method", ["heun", "rk3", "rk4"])
def test_a_step_into_sigma_zero_ends_at_alpha_zero_times_y_in_float64(method):
    """One float64 step from t_i to t = 0 on ScaledVP against the tableau written out in (r, y) =
    (sigma / alpha, x / alpha): for a Gaussian target N(m, v) the exact eps is ``r (y - m) / (v + r^2)``,
    ``y_next = y - r_i sum_j b_j eps_j`` and ``x_next = alpha(0) y_next = 0.9 y_next`` to 1e-12 (0.9 in
    float32 is 2.6e-8 off), for eps, score, x0 and v networks. (euler and midpoint have no stage at c = 1:
    their last step is an ordinary one.)"""
    from sdesolve.solvers.base import _to_device

    sde = ScaledVP()
    target = sd.Gaussian(torch.tensor([0.7, -0.4, 0.2, 1.5], dtype=F64), torch.tensor([0.5, 1.2, 0.8, 0.05], dtype=F64))
    m, v = target.mean, target.std**2
    c, A, b = {"heun": _RALSTON, "rk3": _HEUN3, "rk4": _HEUN3}[method]
    assert float(sde.alpha(torch.zeros(1, dtype=F64))[0]) == 0.9 and float(sde.sigma(torch.zeros(1, dtype=F64))[0]) == 0
    for t_i in (0.02, 0.3, 1.0):
        grid = torch.tensor([t_i, 0.0], dtype=F64)
        a_i, s_i = torch.exp(sde._log_alpha(grid[:1])), torch.exp(sde._log_sigma(grid[:1]))
        x = target.marginal_sample(8, t_i, sde, generator=torch.Generator().manual_seed(1)).to(F64)
        y, r = x / a_i, s_i / a_i
        es: list[torch.Tensor] = []
        for j in range(len(c)):
            r_j, y_j = (1.0 - c[j]) * r, y - r * sum(a * e for a, e in zip(A[j], es))
            es.append(r_j * (y_j - m) / (v + r_j**2))
        want = 0.9 * (y - r * sum(b_j * e for b_j, e in zip(b, es)))
        for pred in ("eps", "score", "x0", "v"):

            def net(x, t, pred=pred):
                a, s = torch.exp(sde._log_alpha(t.to(F64)))[:, None], torch.exp(sde._log_sigma(t.to(F64)))[:, None]
                return convert(target.marginal_score(x, t.to(F64), sde), x, a, s, "score", pred)

            solver = sd.ODE(method)
            coefs = _to_device(solver.init(sde, grid), x)
            assert coefs["into_zero"] == [True]
            out = solver.step(ScoreModel(net, sde, prediction=pred, time_input=lambda t: t), {"x": x}, 0, coefs)
            torch.testing.assert_close(out["x"], want, rtol=1e-12, atol=1e-12, msg=f"{pred} at t_i={t_i}")


@pytest.mark.parametrize("method", list(TABLEAUX))
@pytest.mark.parametrize("t_min", [1e-3, 0.0])
def test_per_grid_coefficients_are_host_float64_with_one_entry_per_step(method, t_min):
    """``Solver.init``'s contract (per-step coefficients, float64, on the host) for every key of every method,
    on a grid that ends at sigma > 0 and one that steps into sigma = 0: a 1-d float64 CPU tensor of n
    entries for n steps (the flag ``into_zero``: a host list of n booleans, True only for the last step
    when sigma(t_min) = 0 and the method has a stage at c = 1)."""
    sde = sd.VPSDE(t_min=t_min)
    n = 6
    coefs = sd.ODE(method).init(sde, sd.grids.uniform(sde, n))
    into_zero = coefs.pop("into_zero")
    meets_zero = t_min == 0.0 and TABLEAUX[method].c[-1] == 1.0
    assert into_zero == [False] * (n - 1) + [meets_zero]
    for key, value in coefs.items():
        assert (value.dim(), value.numel(), value.dtype, value.device.type) == (1, n, F64, "cpu"), key
