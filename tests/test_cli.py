"""The command line (sdesolve.cli): a user's model end to end, its files, its one-line errors.

The user's model is a small module written to tmp_path; the exact Gaussian target of
``sdesolve.Gaussian`` stands in for a trained network, so the sampled law and the bits/dim have
exact answers (``helpers.chain_moments``: the exact output law of the DDIM chain).
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import chain_moments, check_moments

import sdesolve as sd
from sdesolve import cli

MODULE = textwrap.dedent(
    """
    import torch
    import sdesolve as sd

    D = {dim}
    sde = sd.VPSDE()
    target = sd.Gaussian(torch.linspace(-1.0, 1.0, D, dtype=torch.float64), torch.linspace(0.3, 0.8, D, dtype=torch.float64))
    exact = target.model(sde)                 # a ScoreModel with the exact score

    class Net(torch.nn.Module):               # a tiny random eps network on 3x4x4 images
        event_shape = (3, 4, 4)
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        def forward(self, x, t):
            return 0.1 * self.conv(x) * t.view(-1, 1, 1, 1)

    def make():                               # a factory with no required argument
        return Net()

    def eps_fn(x, t):                         # a plain function net(x, t)
        return 0.5 * x

    def one_arg(x):
        return x

    def broken(x, t):
        raise RuntimeError("the network is broken")

    def wrong_shape(x, t):
        return x[:, :1]

    def returns_str(x, t):
        return "eps"

    not_callable = 3
    """
)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """tmp_path holding ``usernet.py`` (D = 2), as the working directory."""
    (tmp_path / "usernet.py").write_text(MODULE.format(dim=2))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("usernet", None)
    yield tmp_path
    sys.modules.pop("usernet", None)


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _read_png(path):
    """(width, height, colour type, decoded rows) of a PNG written by cli.write_png; checks the CRCs."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        chunks[kind] = body
        pos += 12 + n
    w, h, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and b"IEND" in chunks
    raw = zlib.decompress(chunks[b"IDAT"])
    return w, h, color, raw


# ---------------------------------------------------------------------------- sample
@pytest.mark.parametrize("dim", [2, 16])
def test_sample_law_is_the_exact_ddim_chain_law(tmp_path, monkeypatch, capsys, dim):
    """`sdesolve sample` of an exact Gaussian score: the same samples as sd.sample for the seed, and
    their mean/variance are those of the DDIM chain's exact output law (5 standard errors)."""
    (tmp_path / "gaussnet.py").write_text(MODULE.format(dim=dim))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("gaussnet", None)
    n, steps = 4000, 20
    code, out, err = _run(
        [
            "sample",
            "--model",
            "gaussnet:exact",
            "--solver",
            "ddim",
            "--steps",
            str(steps),
            "-n",
            str(n),
            "--shape",
            str(dim),
            "--dtype",
            "float64",
            "--seed",
            "3",
            "--quiet",
            "--out",
            "x.pt",
        ],
        capsys,
    )
    assert code == 0, err
    assert "wrote 4000 samples" in out and not (tmp_path / "x.png").exists()  # not image-shaped: no PNG
    x = torch.load(tmp_path / "x.pt", weights_only=True)
    assert x.shape == (n, dim) and x.dtype == torch.float64
    user = sys.modules["gaussnet"]
    ref = sd.sample(
        user.sde,
        user.exact,
        (n, dim),
        solver=sd.DDIM(),
        steps=steps,
        generator=torch.Generator().manual_seed(3),
        dtype=torch.float64,
    )
    torch.testing.assert_close(x, ref, rtol=0, atol=0)
    grid = sd.grids.log_snr(user.sde, steps)
    mean, var = chain_moments(sd.DDIM(), user.sde, user.exact, grid, torch.zeros(dim), torch.ones(dim))
    check_moments(x, mean, var, what=f"CLI DDIM D={dim}")
    # the chain law is itself close to the target (20 DDIM steps): the test reads the right law
    assert float((mean - user.target.mean).abs().max()) < 0.05
    sys.modules.pop("gaussnet", None)


def test_sample_images_writes_tensor_and_png_grid(user_dir, capsys):
    code, out, err = _run(
        [
            "sample",
            "--model",
            "usernet:make",
            "--solver",
            "plms",
            "--steps",
            "5",
            "-n",
            "6",
            "--quiet",
            "--out",
            "imgs.pt",
        ],
        capsys,
    )
    assert code == 0, err
    x = torch.load(user_dir / "imgs.pt", weights_only=True)
    assert x.shape == (6, 3, 4, 4) and torch.isfinite(x).all()  # the shape from Net.event_shape
    w, h, color, raw = _read_png(user_dir / "imgs.png")
    # 6 samples on a 3x2 grid, each 4x4 scaled by 64 // 4 = 16, with 2-pixel gaps
    assert (w, h, color) == (3 * (64 + 2) + 2, 2 * (64 + 2) + 2, 2)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()  # filter byte "none" on every row
    img = torch.from_numpy(rows[:, 1:].reshape(h, w, 3).copy())
    expected = cli.image_grid(x, (-1.0, 1.0), scale=16)
    assert torch.equal(img, expected)
    # the first sample's top-left pixel is that sample's value mapped from [-1, 1] to [0, 255]
    px = ((x[0, :, 0, 0].clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    assert torch.equal(img[2, 2], px)


@pytest.mark.parametrize("solver", list(cli.SOLVER_HELP))
def test_every_solver_choice_samples(user_dir, capsys, solver):
    code, _, err = _run(
        [
            "sample",
            "--model",
            "usernet:eps_fn",
            "--shape",
            "2",
            "--solver",
            solver,
            "--steps",
            "4",
            "-n",
            "3",
            "--quiet",
            "--out",
            f"{solver}.pt",
        ],
        capsys,
    )
    assert code == 0, err
    assert torch.load(user_dir / f"{solver}.pt", weights_only=True).shape == (3, 2)


@pytest.mark.parametrize("name", sorted(cli.SDE_HELP))
def test_every_sde_choice_builds(name):
    sde = cli._sdes()[name]()
    assert isinstance(sde, sd.LinearSDE)


def test_a_py_path_and_a_module_class(user_dir, capsys):
    code, _, err = _run(
        [
            "sample",
            "--model",
            str(user_dir / "usernet.py") + ":Net",
            "-n",
            "2",
            "--steps",
            "2",
            "--quiet",
            "--no-png",
            "--out",
            "a.pt",
        ],
        capsys,
    )
    assert code == 0, err
    assert torch.load(user_dir / "a.pt", weights_only=True).shape == (2, 3, 4, 4)
    assert not (user_dir / "a.png").exists()


# ---------------------------------------------------------------------------- likelihood
def test_likelihood_matches_bits_per_dim_and_reports_the_standard_error(user_dir, capsys):
    """Per-sample values equal sd.bits_per_dim's with the same generator and batches; the printed
    mean and standard error are those of the values; for the exact model they are near the exact
    bits/dim of the Gaussian (the ODE's tolerance and the dequantization's spread)."""
    user = __import__("usernet")
    g = torch.Generator().manual_seed(0)
    k = ((user.target.sample(40, generator=g).clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    torch.save(k, user_dir / "data.pt")
    code, out, err = _run(
        [
            "likelihood",
            "--model",
            "usernet:exact",
            "--data",
            "data.pt",
            "--batch-size",
            "16",
            "--divergence",
            "exact",
            "--dtype",
            "float64",
            "--seed",
            "5",
            "--out",
            "bpd.pt",
        ],
        capsys,
    )
    assert code == 0, err
    values = torch.load(user_dir / "bpd.pt", weights_only=True)
    gen = torch.Generator().manual_seed(5)
    ref = torch.cat(
        [
            sd.bits_per_dim(user.sde, user.exact, k[i : i + 16], generator=gen, dtype=torch.float64, divergence="exact")
            for i in range(0, 40, 16)
        ]
    )
    torch.testing.assert_close(values, ref.double(), rtol=1e-10, atol=1e-10)
    mean, se = float(values.mean()), float(values.std() / 40**0.5)
    assert f"{mean:.5f} +- {se:.5f}" in out
    assert "bits/dim" in err  # the progress bar (tqdm writes to stderr)


def test_likelihood_reads_npy_and_a_dict_of_one_tensor(user_dir, capsys):
    k = np.random.default_rng(0).integers(0, 256, size=(4, 2), dtype=np.uint8)
    np.save(user_dir / "d.npy", k)
    torch.save({"images": torch.from_numpy(k)}, user_dir / "d.pt")
    outs = []
    for f in ("d.npy", "d.pt"):
        code, out, err = _run(["likelihood", "--model", "usernet:exact", "--data", f, "--quiet"], capsys)
        assert code == 0, err
        outs.append(out.split(":", 1)[1])
    assert outs[0] == outs[1]  # same data, same seed: the same numbers


# ---------------------------------------------------------------------------- errors: one line, exit code 2
BAD = [
    (["sample", "--model", "no_such_module:net", "--shape", "2"], r"no module named 'no_such_module'"),
    (["sample", "--model", "usernet", "--shape", "2"], r"--model must be MODULE:NAME"),
    (["sample", "--model", "usernet:nothing", "--shape", "2"], r"has no attribute 'nothing'"),
    (["sample", "--model", "usernet:one_arg", "--shape", "2"], r"does not take \(x, t\)"),
    (["sample", "--model", "usernet:not_callable", "--shape", "2"], r"is a int, not a network"),
    (["sample", "--model", "usernet:broken", "--shape", "2"], r"failed when called as net\(x, t\).*broken"),
    (["sample", "--model", "usernet:wrong_shape", "--shape", "2"], r"returned shape \(64, 1\)"),
    (["sample", "--model", "usernet:returns_str", "--shape", "2"], r"must return a tensor or an output holding one"),
    (["sample", "--model", "usernet:eps_fn"], r"--shape is needed"),
    (["sample", "--model", "usernet:exact", "--sde", "ve"], r"--sde: .* ScoreModel with its own process"),
    (["sample", "--model", "missing.py:net", "--shape", "2"], r"no file 'missing.py'"),
    (["likelihood", "--model", "usernet:exact", "--data", "text.pt"], r"'text.pt' is not a tensor file"),
    (["likelihood", "--model", "usernet:exact", "--data", "two.pt"], r"holds a dict, expected one tensor"),
    (["likelihood", "--model", "usernet:exact", "--data", "obj.npy"], r"'obj.npy' is not a tensor file"),
    (["likelihood", "--model", "usernet:exact", "--data", "x.csv"], r"must be a .pt, .pth or .npy file"),
    (["likelihood", "--model", "usernet:exact", "--data", "nofile.pt"], r"no file 'nofile.pt'"),
    (["likelihood", "--model", "usernet:exact", "--data", "flat.pt"], r"expected a \(N, \*event\) tensor"),
    (["likelihood", "--model", "usernet:exact", "--data", "off.pt"], r"x .*grid|data_range|levels"),
]


@pytest.mark.parametrize("argv,match", BAD, ids=[" ".join(a[2:5:2]) for a, _ in BAD])
def test_user_errors_are_one_line(user_dir, capsys, argv, match):
    import re

    (user_dir / "text.pt").write_text("not a tensor\n")
    torch.save({"a": torch.zeros(2, 2), "b": torch.zeros(2, 2)}, user_dir / "two.pt")
    np.save(user_dir / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (user_dir / "x.csv").write_text("1,2\n")
    torch.save(torch.zeros(5), user_dir / "flat.pt")
    torch.save(torch.full((3, 2), 0.123), user_dir / "off.pt")  # floats off the 8-bit grid
    code, out, err = _run([*argv, "--quiet"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sdesolve {argv[0]}: error:"), err
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in err


def test_traceback_flag_raises(user_dir):
    with pytest.raises(cli.CLIError, match="does not take"):
        cli.main(["--traceback", "sample", "--model", "usernet:one_arg", "--shape", "2"])


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "--model", "m:n", "-n", "0"],
        ["sample", "--model", "m:n", "--steps", "0"],
        ["likelihood", "--model", "m:n", "--data", "f", "--batch-size", "0"],
    ],
)
def test_counts_below_one_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_subprocess_bad_import_has_no_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "sdesolve", "sample", "--model", "does_not_exist:f"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "sdesolve sample: error: --model: no module named 'does_not_exist' "
        "(run from the folder that holds it, or give a path to the .py file)"
    ]


# ---------------------------------------------------------------------------- help, version, demo
def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"sdesolve {sd.__version__}"


def test_every_option_has_help():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == {"demo", "sample", "likelihood"}
    for name, p in [("sdesolve", parser), *subs.choices.items()]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{name} {action.option_strings} has no help text"
            if action.choices and action.dest in ("sde", "solver"):
                for choice in action.choices:
                    assert choice in action.help, f"{name} --{action.dest} help does not explain {choice!r}"


@pytest.mark.slow
def test_demo_runs_and_writes_its_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, out, _ = _run(["demo", "--n", "300", "--steps", "10", "--out", str(tmp_path / "demo.png")], capsys)
    assert code == 0
    assert "sliced W2" in out and "integration error" in out
    assert _png_size(tmp_path / "demo.png")[0] > 800


def test_demo_figure(tmp_path, capsys):
    """The demo's figure: one panel per solver (exact samples here) over the exact density."""
    pytest.importorskip("matplotlib")
    target = sd.GaussianMixture(weights=[0.5, 0.5], means=[[-2.0, 0.0], [2.0, 0.0]], stds=[0.4, 0.4])
    drawn = {name: target.sample(200, generator=torch.Generator().manual_seed(i)) for i, name in enumerate("ABC")}
    cli._demo_figure(str(tmp_path / "f.png"), target, sd.VPSDE(), drawn, 10)
    w, h = _png_size(tmp_path / "f.png")
    assert 2.0 < w / h < 4.0  # three panels side by side
    assert "wrote" in capsys.readouterr().out


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_version_is_single_sourced():
    """pyproject reads the version from sdesolve.__version__; the installed metadata agrees."""
    import importlib.metadata
    import re
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = { attr = "sdesolve.__version__" }' in pyproject
    assert not re.search(r'^version = "', pyproject, re.M)
    assert re.fullmatch(r"\d+\.\d+\.\d+([a-z]+\d+)?", sd.__version__)
    try:
        installed = importlib.metadata.version("sdesolve")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        pytest.skip("sdesolve is not installed")
    assert installed == sd.__version__


def test_sample_a_diffusers_unet(tmp_path, monkeypatch, capsys):
    """A diffusers UNet2DModel end to end: its UNet2DOutput is unwrapped, its shape read from its config
    (in_channels, sample_size), its integer timesteps given by --sde ddpm-linear; a PNG grid is written."""
    pytest.importorskip("diffusers")
    (tmp_path / "unetmod.py").write_text(
        textwrap.dedent(
            """
            import sys
            sys.path.insert(0, {tests!r})
            from helpers import tiny_unet

            def unet():
                return tiny_unet(channels=3)
            """
        ).format(tests=str(Path(__file__).resolve().parent))
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("unetmod", None)
    code, out, err = _run(
        ["sample", "--model", "unetmod:unet", "--sde", "ddpm-linear", "--solver", "ddim", "--steps", "3", "-n", "4"]
        + ["--quiet", "--out", "u.pt"],
        capsys,
    )
    assert code == 0, err
    x = torch.load(tmp_path / "u.pt", weights_only=True)
    assert x.shape == (4, 3, 8, 8) and torch.isfinite(x).all()
    w, h, color, _ = _read_png(tmp_path / "u.png")
    assert (w, h, color) == (2 * (64 + 2) + 2, 2 * (64 + 2) + 2, 2)
    sys.modules.pop("unetmod", None)
