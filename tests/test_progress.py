"""Progress bars (sdesolve._progress): the same numbers with and without a bar, a bar that ends at
100 % with the solve's NFE, the stderr fallback without tqdm, and monotone progress of a solve."""

from __future__ import annotations

import io
import sys

import pytest
import torch

import sdesolve as sd
from sdesolve import _progress
from sdesolve._progress import SolveProgress, progress_bar

SDE = sd.VPSDE()
TARGET = sd.Gaussian(torch.tensor([0.5, -0.3, 0.8]), torch.tensor([0.3, 0.6, 0.2]))
MODEL = TARGET.model(SDE)


@pytest.mark.parametrize(
    "kw",
    [
        dict(divergence="exact", method="dopri5"),
        dict(divergence="hutchinson", method="rk4", steps=8),
        dict(divergence="exact", method="scipy-RK45"),
    ],
    ids=["dopri5", "rk4", "scipy"],
)
def test_log_likelihood_progress_changes_nothing_and_ends_at_100(kw, capsys):
    x = TARGET.marginal_sample(4, SDE.t_min, SDE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    quiet = sd.log_likelihood(SDE, MODEL, x, generator=torch.Generator().manual_seed(1), **kw)
    capsys.readouterr()
    shown = sd.log_likelihood(SDE, MODEL, x, generator=torch.Generator().manual_seed(1), progress=True, **kw)
    err = capsys.readouterr().err
    assert torch.equal(quiet.logp, shown.logp) and quiet.nfe == shown.nfe
    assert "log_likelihood: 100%" in err and f"nfe={shown.nfe}" in err


def test_bits_per_dim_passes_progress_on(capsys):
    k = torch.tensor([[0, 128, 255], [10, 20, 30]])
    a = sd.bits_per_dim(SDE, MODEL, k, generator=torch.Generator().manual_seed(0), n_repeats=2)
    capsys.readouterr()
    b = sd.bits_per_dim(SDE, MODEL, k, generator=torch.Generator().manual_seed(0), n_repeats=2, progress=True)
    assert torch.equal(a, b)
    assert capsys.readouterr().err.count("log_likelihood: 100%") == 2  # one bar per solve


def test_progress_must_be_a_bool():
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"progress must be True or False, got 'yes'"):
        sd.log_likelihood(SDE, MODEL, x, progress="yes")


def test_fallback_bar_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import tqdm.auto raises ImportError
    buf = io.StringIO()
    bar = progress_bar(8, desc="bits/dim", unit="sample")
    assert isinstance(bar, _progress._StderrBar)
    bar.file = buf
    with bar:
        bar.update(2)
        bar.set_postfix_str("mean=1.5")
        bar.update(6)
    assert buf.getvalue().rstrip().splitlines()[-1].endswith("bits/dim: 100% (8/8 sample), mean=1.5")
    assert buf.getvalue().endswith("\n")


def test_disabled_bar_does_nothing(capsys):
    with progress_bar(5, desc="x", enabled=False) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""


def test_solve_progress_is_monotone_and_detaches():
    """Rejected trial steps (a smaller u after a larger one) never move the bar back; after the
    ``with`` block the tracked function still computes and no longer counts."""
    calls = []

    def func(u, y):
        calls.append(u)
        return y

    updates = []

    class Recorder:
        def update(self, n=1):
            updates.append(n)

        def set_postfix_str(self, text, refresh=True):
            pass

        def close(self):
            pass

    sp = SolveProgress(True, "solve")
    sp._bar = Recorder()  # as __enter__ would, with a recording bar
    f = sp.track(func, 0.0, 2.0)
    for u in [0.0, 0.5, 1.5, 1.0, torch.tensor(1.2, dtype=torch.float64), 2.0]:
        f(u, 0)
    assert sum(updates) == 1000 and all(n > 0 for n in updates)
    assert updates == [250, 500, 250]  # 0 -> 250 -> 750 -> (1.0, 1.2: no move) -> 1000
    assert sp.nfe == 6
    sp.__exit__(None, None, None)
    f(0.3, 0)
    assert sp.nfe == 6 and len(calls) == 7


# ---------------------------------------------------------------------------- vdm_bits_per_dim(n_repeats, progress)
def _vdm_model():
    sde = sd.VDMSDE(sd.FixedLinearGamma(-7.0, 5.0))
    return sd.Gaussian(torch.zeros(6, dtype=torch.float64), 0.5).model(sde)


def test_vdm_bits_per_dim_repeats_average_the_passes(capsys):
    """n_repeats = k is the mean of k one-pass estimates drawn from the same generator stream, and
    progress=True changes no number; the prior term is deterministic and not averaged."""
    model = _vdm_model()
    x_int = torch.randint(0, 17, (32, 6), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    passes = [sd.losses.vdm_bits_per_dim(model, x_int, 17, generator=g, dtype=torch.float64) for _ in range(4)]
    avg = sd.losses.vdm_bits_per_dim(
        model, x_int, 17, generator=torch.Generator().manual_seed(1), dtype=torch.float64, n_repeats=4, progress=True
    )
    err = capsys.readouterr().err
    assert "vdm_bits_per_dim: 100%" in err
    for field in ("bits_per_dim", "diffusion", "reconstruction"):
        mean = torch.stack([getattr(p, field) for p in passes]).mean(0)
        torch.testing.assert_close(getattr(avg, field), mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(avg.prior, passes[0].prior, rtol=0, atol=0)
    # one pass with n_repeats=1 is the old single-pass estimate, bit for bit
    one = sd.losses.vdm_bits_per_dim(model, x_int, 17, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(one.bits_per_dim, passes[0].bits_per_dim)


def test_vdm_bits_per_dim_repeats_shrink_the_spread():
    """Independent passes (antithetic=False: the examples' times are iid) average down the spread: over
    1000 copies of one example, the standard deviation with n_repeats=8 is 1/sqrt(8) of one pass's
    (each standard deviation is estimated to a few per cent from 1000 iid values: a factor 1.3 is
    more than 5 of their standard errors)."""
    model = _vdm_model()
    x_int = torch.randint(0, 17, (1, 6), generator=torch.Generator().manual_seed(0)).expand(1000, 6)

    def spread(n, seed):
        g = torch.Generator().manual_seed(seed)
        out = sd.losses.vdm_bits_per_dim(
            model, x_int, 17, generator=g, antithetic=False, dtype=torch.float64, n_repeats=n
        )
        return float(out.bits_per_dim.std())

    ratio = spread(8, 1) / spread(1, 2)
    assert 1 / 8**0.5 / 1.3 < ratio < 1.3 / 8**0.5, ratio


def test_solve_progress_follows_the_slowest_sample():
    """Per-sample times (a (B,) CPU tensor): the bar shows the slowest sample's progress."""
    updates = []

    class Recorder:
        def update(self, n=1):
            updates.append(n)

        def set_postfix_str(self, text, refresh=True):
            pass

        def close(self):
            pass

    sp = SolveProgress(True, "solve")
    sp._bar = Recorder()
    f = sp.track(lambda u, y: y, 1.0, 0.0)  # a solve that runs down in u
    f(torch.tensor([0.9, 0.5], dtype=torch.float64), 0)  # slowest sample at 0.9: 10 %
    f(torch.tensor([0.2, 0.4], dtype=torch.float64), 0)  # slowest at 0.4: 60 %
    assert updates == [100, 500]


def test_log_likelihood_per_sample_progress(capsys):
    x = TARGET.marginal_sample(3, SDE.t_min, SDE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = sd.log_likelihood(SDE, MODEL, x, divergence="exact", per_sample=True)
    capsys.readouterr()
    b = sd.log_likelihood(SDE, MODEL, x, divergence="exact", per_sample=True, progress=True)
    assert torch.equal(a.logp, b.logp) and "log_likelihood: 100%" in capsys.readouterr().err
