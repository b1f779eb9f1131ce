"""The notebooks in notebooks/ run top to bottom on a CPU at toy sizes, and are stored without outputs.

Each notebook reads ``SDESOLVE_SMALL=1`` (set here) and shrinks its sample sizes, steps and training to
seconds; the asserts inside the notebooks check the numbers (finite samples, likelihood errors against the
exact density). Outputs, execution counts and widget state are stripped from the committed files so that a
diff shows code changes only.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NEEDS = {"vdm.ipynb": ["sklearn"]}

nbformat = pytest.importorskip("nbformat")


def test_the_four_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "likelihood.ipynb", "vdm.ipynb", "custom_sde.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_outputs_are_stripped(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs (strip them before committing)"
            assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"
    assert "widgets" not in book.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    for module in NEEDS.get(path.name, []):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{path.name} needs {module}")
    from nbclient import NotebookClient

    monkeypatch.setenv("SDESOLVE_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell and the exception
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
