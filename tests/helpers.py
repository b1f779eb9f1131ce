"""Shared statistical helpers for the solver tests (importable by every test file).

* :func:`check_moments`: sample mean, variances and covariances against exact ones, within
  ``z`` standard errors plus a stated deterministic allowance (e.g. a known discretization bias).
* :func:`mmd_two_sample`: the biased Gaussian-kernel MMD between two samples and its
  distribution-free acceptance threshold from the sample size (Gretton et al. 2012, Thm. 7).
* :func:`loglog_slope`: the least-squares slope of log(error) against log(steps).
* :func:`chain_moments`: the exact mean and variance of the Markov chain a one-state
  affine-Gaussian solver (Euler–Maruyama, predictor–corrector without the norm-based
  Langevin rule, DDPM, ...) generates on a diagonal Gaussian target — the law the samples must
  follow at that step count, so its distance to the target is the solver's weak error.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import sdesolve as sd

# ----------------------------------------------------------------------------- shared problems
#: The 2-D problems of the SDE-sampler tests (Euler–Maruyama, predictor–corrector, ODE).
TARGET_2D = sd.Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))
MIXTURE_2D = sd.GaussianMixture(
    torch.tensor([0.3, 0.7]), torch.tensor([[-2.0, 0.0], [1.5, 1.0]]), torch.tensor([0.4, 0.6])
)
#: Every built-in process, as factories (each test gets a fresh one; keyword arguments such as
#: ``t_min=0.0`` go to the constructor). The one registry of test processes: pick from it with
#: :func:`processes`.
PROCESSES = {
    "vp": lambda **kw: sd.VPSDE(**kw),
    "subvp": lambda **kw: sd.SubVPSDE(**kw),
    "ve": lambda **kw: sd.VESDE(**kw),
    "vdm": lambda **kw: sd.VDMSDE(**kw),
    "cosine": lambda **kw: sd.CosineVPSDE(**kw),
    "discrete": lambda **kw: sd.DiscreteVPSDE.from_schedule("linear", 1000, **kw),
}
#: PROCESSES and the variants the process tests add: diffusers' other two DDPM schedules and a wide
#: VDM schedule (log-SNR from 30 down to -30).
ALL_PROCESSES = {
    **PROCESSES,
    "ddpm-scaled": lambda **kw: sd.DiscreteVPSDE.from_schedule("scaled_linear", 1000, **kw),
    "ddpm-cos": lambda **kw: sd.DiscreteVPSDE.from_schedule("squaredcos_cap_v2", 1000, **kw),
    "vdm-30": lambda **kw: sd.VDMSDE(sd.FixedLinearGamma(-30.0, 30.0), **kw),
}


def processes(*names: str, **kwargs) -> dict[str, sd.LinearSDE]:
    """Fresh processes of the registry (:data:`ALL_PROCESSES`) by name, in the order given (default:
    those of :data:`PROCESSES`), each built with ``kwargs`` (e.g. ``t_min=0.0``)."""
    unknown = [n for n in names if n not in ALL_PROCESSES]
    assert not unknown, f"unknown test processes {unknown}; the registry has {list(ALL_PROCESSES)}"
    return {n: ALL_PROCESSES[n](**kwargs) for n in (names or tuple(PROCESSES))}


#: The 3-D problem and processes of the deterministic-flow tests (DDIM, PLMS).
TARGET_3D = sd.Gaussian(torch.tensor([1.0, -0.5, 0.3]), torch.tensor([0.5, 2.0, 0.1]))
FLOW_PROCESSES = {
    "VP": PROCESSES["vp"],
    "VE": PROCESSES["ve"],
    "VDM": lambda: PROCESSES["vdm"](t_min=1e-3),
    "cosine": PROCESSES["cosine"],
    "discrete": PROCESSES["discrete"],
}


class UserVP(sd.LinearSDE):
    """A user's process that gives only its marginal coefficients: the default VP (beta from 0.1 to 20),
    ``log alpha = -t^2 (20 - 0.1) / 4 - 0.1 t / 2``; f, g^2 and the inverse log-SNR come from the base class."""

    variance_preserving = True

    def _log_alpha(self, t):
        return -0.25 * t * t * 19.9 - 0.05 * t

    def _log_sigma(self, t):
        return 0.5 * torch.log(-torch.expm1(2 * self._log_alpha(t)))


class UserVE(sd.LinearSDE):
    """A user's process that gives only its marginal coefficients: the default VE (sigma from 0.01 to 50);
    constant alpha = 1, so d log alpha / dt is 0 although ``_log_alpha`` has no graph to t."""

    t_min = 1e-5
    prior_std = 50.0

    def _log_alpha(self, t):
        return torch.zeros_like(t)

    def _log_sigma(self, t):
        return math.log(0.01) + t * math.log(5000.0)


def check_moments(
    x: Tensor,
    mean: Tensor,
    var: Tensor,
    *,
    z: float = 5.0,
    mean_bias: Tensor | float = 0.0,
    var_bias: Tensor | float = 0.0,
    check_cov: bool = True,
    what: str = "",
) -> None:
    """Assert that samples x (n, D) have mean ``mean`` and diagonal covariance ``diag(var)``.

    Tolerances: ``z`` standard errors of the estimators (``sqrt(var / n)`` for the mean,
    ``var sqrt(2 / (n - 1))`` for a variance, ``sqrt(var_i var_j / n)`` for a covariance, all
    exact for Gaussian samples) plus the stated allowances ``mean_bias`` / ``var_bias``.
    With D coordinates, z = 5 keeps the family-wise false-alarm rate below ~1e-5.
    """
    x = x.to(torch.float64).reshape(x.shape[0], -1)
    n = x.shape[0]
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    var = torch.as_tensor(var, dtype=torch.float64).reshape(-1)
    m_hat, v_hat = x.mean(0), x.var(0)
    tol_m = z * torch.sqrt(var / n) + torch.as_tensor(mean_bias, dtype=torch.float64).abs()
    tol_v = z * var * math.sqrt(2.0 / (n - 1)) + torch.as_tensor(var_bias, dtype=torch.float64).abs()
    err_m, err_v = (m_hat - mean).abs(), (v_hat - var).abs()
    assert bool((err_m <= tol_m).all()), f"{what} mean {m_hat.tolist()} vs {mean.tolist()} (tol {tol_m.tolist()})"
    assert bool((err_v <= tol_v).all()), f"{what} var {v_hat.tolist()} vs {var.tolist()} (tol {tol_v.tolist()})"
    if check_cov and x.shape[1] > 1:
        c = torch.cov(x.T)
        off = ~torch.eye(x.shape[1], dtype=torch.bool)
        tol_c = z * torch.sqrt(torch.outer(var, var) / n)
        assert bool((c[off].abs() <= tol_c[off]).all()), f"{what} off-diagonal covariance {c.tolist()}"


def mmd_two_sample(x: Tensor, y: Tensor, *, bandwidth: float | None = None, alpha: float = 1e-4):
    """Biased MMD (Gaussian kernel) between samples x (m, D) and y (m, D) and its H0 threshold.

    Under H0 (same law) and a kernel bounded by K = 1, Gretton et al. (2012, Theorem 7) give
    ``P(MMD_b > sqrt(2 / m) (1 + sqrt(2 log(1 / alpha)))) < alpha`` for two samples of size m.
    The bandwidth defaults to the median pairwise distance of y (the reference sample), fixed
    before looking at x. Returns ``(mmd, threshold)``.
    """
    x, y = x.to(torch.float64).reshape(x.shape[0], -1), y.to(torch.float64).reshape(y.shape[0], -1)
    m = min(x.shape[0], y.shape[0])
    x, y = x[:m], y[:m]
    if bandwidth is None:
        bandwidth = float(torch.cdist(y[:1000], y[:1000]).median())

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))

    mmd2 = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    mmd = float(torch.sqrt(torch.clamp(mmd2, min=0.0)))
    threshold = math.sqrt(2.0 / m) * (1.0 + math.sqrt(2.0 * math.log(1.0 / alpha)))
    return mmd, threshold


def fit_slope(hs, errs) -> float:
    """Least-squares slope of log(error) against log(h): the observed order in the step size h."""
    lh = torch.log(torch.as_tensor(hs, dtype=torch.float64))
    le = torch.log(torch.as_tensor(errs, dtype=torch.float64))
    lh = lh - lh.mean()
    return float((lh * (le - le.mean())).sum() / (lh * lh).sum())


def loglog_slope(steps, errors) -> float:
    """Least-squares slope of log(error) against log(1 / steps): the observed order."""
    return fit_slope(1.0 / torch.as_tensor(steps, dtype=torch.float64), errors)


# ----------------------------------------------------------------------------- exact chain laws
@contextmanager
def _scripted_noise(script):
    """Make every solver module's ``randn_like`` return scripted draws: ``script(k, x)`` for the k-th draw."""
    mods = [m for name, m in sys.modules.items() if name.startswith("sdesolve.solvers") and hasattr(m, "randn_like")]
    saved = [m.randn_like for m in mods]
    count = [0]

    def fake(x, generator=None):
        k = count[0]
        count[0] += 1
        return script(k, x)

    try:
        for m in mods:
            m.randn_like = fake
        yield count
    finally:
        for m, f in zip(mods, saved):
            m.randn_like = f


def chain_moments(solver, sde, model, grid: Tensor, mean_T: Tensor, var_T: Tensor, *, denoise: bool = True):
    """Exact per-coordinate mean and variance of the chain ``solver`` runs on ``grid`` (float64).

    Valid for solvers whose state is x alone and whose step is, for the (diagonal, linear) score of
    a Gaussian target, an elementwise affine map of x plus independent Gaussian draws:
    ``x' = A x + b + sum_k C_k z_k``. A, b and each C_k are read off the solver's own ``step`` with
    scripted noise (all zero, or ones at one draw), so ``mean' = A mean + b`` and
    ``var' = A^2 var + sum_k C_k^2``, exactly.
    """
    from sdesolve.solvers.base import _to_device

    proto = mean_T.to(torch.float64).reshape(1, -1)
    coefs = _to_device(solver.init(sde, grid), proto)
    m, v = proto.clone(), var_T.to(torch.float64).reshape(1, -1).clone()
    n = grid.numel() - 1
    for i in range(n):
        noise = not (denoise and i == n - 1)
        xs = torch.cat([m, m + 1.0])

        def run(script, xs=xs, i=i, noise=noise):
            with _scripted_noise(script) as count:
                out = solver.step(model, {"x": xs}, i, coefs, generator=None, noise=noise)["x"]
            return out, count[0]

        base, n_draws = run(lambda k, x: torch.zeros_like(x))
        A = base[1] - base[0]
        b = base[0] - A * m[0]
        c2 = torch.zeros_like(A)
        for j in range(n_draws):
            out, _ = run(lambda k, x, j=j: torch.ones_like(x) if k == j else torch.zeros_like(x))
            c2 = c2 + (out[0] - base[0]) ** 2
        m, v = (A * m[0] + b).reshape(1, -1), (A * A * v[0] + c2).reshape(1, -1)
    return m[0], v[0]


# ----------------------------------------------------------------------------- a real network
def tiny_unet(channels: int = 1, widths: tuple[int, int] = (8, 16)):
    """A tiny random diffusers ``UNet2DModel`` (8x8 images, seed 0, eval mode) for pipeline tests."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=widths,
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


# ----------------------------------------------------------------------------- outputs of a pinned commit
def outputs_at_commit(commit: str, outputs, tmp_path, args: str = ""):
    """``outputs(args)`` computed by ``commit``'s sdesolve: the package exported with `git archive` into
    ``tmp_path/<commit>`` and run there in a subprocess (one thread). ``outputs`` must be a self-contained
    module-level function (its source is what runs). Skips without the git history holding the commit
    (the stored checksums of the calling test cover such machines)."""
    import inspect
    import io
    import shutil
    import subprocess
    import tarfile
    from pathlib import Path

    import pytest

    root = Path(__file__).resolve().parents[1]
    git = shutil.which("git")
    if (
        not commit
        or git is None
        or subprocess.run([git, "-C", root, "cat-file", "-e", commit + "^{commit}"], capture_output=True).returncode
    ):
        pytest.skip(f"needs the git history holding {commit[:7]!r} (the checksum test covers this machine)")
    where = tmp_path / commit[:7]
    where.mkdir(exist_ok=True)
    archive = subprocess.run([git, "-C", root, "archive", commit, "sdesolve"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    script = inspect.getsource(outputs) + (
        "\nimport sdesolve, torch\n"
        f"assert sdesolve.__file__.startswith({str(where)!r}), sdesolve.__file__\n"
        "torch.set_num_threads(1)\n"
        f"torch.save({outputs.__name__}({args}), {str(where / 'ref.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=where, check=True, capture_output=True)
    return torch.load(where / "ref.pt")


def bitwise_changes(ref: dict, now: dict) -> list:
    """The entries of ``now`` that are not bitwise ``ref``'s (tensors: dtype, shape and every bit; other
    values: equality), each with its largest difference; [] when none."""
    changed = []
    for key, value in ref.items():
        got = now[key]
        if isinstance(value, Tensor):
            if not (got.dtype == value.dtype and got.shape == value.shape and torch.equal(got, value)):
                changed.append((key, float((got.double() - value.double()).abs().max())))
        elif got != value:
            changed.append((key, got, value))
    return changed


def check_x0_preview_only_when_asked(solver, sde, model, x: Tensor, grid: Tensor, *, keys=("x",), chain=False):
    """``solver.step``'s default is the Solver interface's ``need_x0=False``: at every step of ``grid`` a call
    without it returns the state alone (``keys``); with ``need_x0=True`` also the model's denoised estimate at
    (x, t_i) (1e-12 of ``model.x0``), with the same next state bitwise for the same generator. Each step starts
    from ``solver.init_state(x)``, or with ``chain`` from the previous step's state (multistep history)."""
    from sdesolve.solvers.base import _to_device

    coefs = _to_device(solver.init(sde, grid), x)
    state = solver.init_state(x, coefs)
    for i in range(grid.numel() - 1):
        plain = solver.step(model, state, i, coefs, generator=torch.Generator().manual_seed(i))
        asked = solver.step(model, state, i, coefs, generator=torch.Generator().manual_seed(i), need_x0=True)
        assert set(plain) == set(keys) and set(asked) == set(keys) | {"x0"}, (i, sorted(plain), sorted(asked))
        assert torch.equal(plain["x"], asked["x"]), i
        torch.testing.assert_close(asked["x0"], model.x0(state["x"], grid[i]), rtol=1e-12, atol=1e-12)
        if chain:
            state = plain


class DeviceTransfers(TorchDispatchMode):
    """While ``on``: each host tensor copied to a CUDA device (``_to_copy`` / ``copy_``) as ``(tag(), source)``,
    the source kept alive so that no storage is reused, and each CUDA value the host reads (``item`` /
    ``_local_scalar_dense``, or a copy to the host) by op name. ``tag`` labels a copy (a solver's round, say)."""

    def __init__(self, tag=lambda: None, on: bool = True):
        super().__init__()
        self.tag, self.on, self.copies, self.reads = tag, on, [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.on:
            return out
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
            if args[0].device.type == "cuda":
                self.reads.append(str(func))
            return out
        if func is torch.ops.aten._to_copy.default:
            src, dst = args[0], out
        elif func is torch.ops.aten.copy_.default:
            src, dst = args[1], args[0]
        else:
            return out
        if isinstance(src, Tensor) and src.device.type != dst.device.type:
            if dst.device.type == "cuda":
                self.copies.append((self.tag(), src))
            elif src.device.type == "cuda":
                self.reads.append(str(func))
        return out
