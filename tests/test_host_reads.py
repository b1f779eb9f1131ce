"""The process hooks that samplers call inside their loops read no tensor on the host.

On a GPU a host read of a device tensor (``.item()``, ``float(t)``, ``bool(t)``, or indexing with a 0-d
tensor) synchronizes the host with the device. The adaptive solves call these hooks with 0-d device times
at every evaluation, so one read there is one synchronization per evaluation. The reads are counted here on
the CPU, where they are the same dispatcher ops (``aten::_local_scalar_dense``, ``aten::is_nonzero``) that
synchronize on CUDA: this runs in CI, where the `-m gpu` tests cannot. (``DiscreteVPSDE`` indexed its
knots with a 0-d tensor: 2-3 reads per call, 23 extra synchronizations in a 40-step per-sample solve on
the H200.)
"""

from __future__ import annotations

import pytest
import torch
from helpers import ALL_PROCESSES
from torch.utils._python_dispatch import TorchDispatchMode

_READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)
_HOOKS = ("_log_alpha", "_log_sigma", "_log_snr", "_f", "_g2", "_sigma_over_alpha", "_t_of_log_snr")


class HostReads(TorchDispatchMode):
    """Counts the ops that read a tensor's value on the host."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _READS:
            self.n += 1
        return func(*args, **(kwargs or {}))


def test_the_counter_sees_a_host_read():
    """The counter itself: indexing with a 0-d tensor, float() and bool() each count; tensor arithmetic does not."""
    knots, k = torch.linspace(0.0, 1.0, 5, dtype=torch.float64), torch.tensor(2)
    with HostReads() as reads:
        _ = knots * 2.0 + knots.take(k)
    assert reads.n == 0
    with HostReads() as reads:
        _ = knots[k]
        _ = float(knots[1])
        _ = bool(knots.sum() > 0)
    assert reads.n == 3


@pytest.mark.parametrize("shape", [(), (3,)], ids=["0-d", "batch"])
@pytest.mark.parametrize("proc", list(ALL_PROCESSES))
def test_process_hooks_read_nothing_on_the_host(proc, shape):
    """Every built-in process, at 0-d and batch times (t_min = 0 too): each hook's value with no host read."""
    for sde in (ALL_PROCESSES[proc](), ALL_PROCESSES[proc](t_min=0.0)):
        t = torch.full(shape, 0.37, dtype=torch.float64)
        lam = sde._log_snr(t)
        for hook in _HOOKS:
            arg = lam if hook == "_t_of_log_snr" else t
            with HostReads() as reads:
                out = getattr(sde, hook)(arg)
            assert reads.n == 0, (proc, hook, shape, reads.n)
            assert out.shape == t.shape and bool(torch.isfinite(out).all()), (proc, hook, out)
