"""Fixed-step Runge–Kutta: what the mutation runs found untested (issue 14).

A step's elementwise work is its tableau: per stage ``k_j = (h f) x_j + (h g^2 / 2) s_j`` (two products and
one sum), and per nonzero weight ``a`` of A and b one update ``y + a k``, which is a single kernel
(``add`` with ``alpha=a``) when ``a`` is a power of two, times a sign (``a k`` is then exact, so the fused
kernel gives the bits of the product followed by the sum: heun's and midpoint's 1/2, rk3's -1 and 2), and
a product then a sum otherwise (rk3's and rk4's 1/6, 1/3, 2/3, whose fused form would round once instead
of twice and change the bits that `test_overhead.py` pins).
"""

import math
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sdesolve as sd
from sdesolve.model import ScoreModel
from sdesolve.solvers.base import _to_device
from sdesolve.solvers.runge_kutta import TABLEAUX


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
