"""Every Python code block in the README and the docs runs as written.

Each fenced ```python block is executed on its own, in a fresh namespace, in a temporary working
directory (blocks that write files write there). A block that needs a CUDA device (it mentions
``"cuda"``) is skipped without one. Blocks are small by design: they show the API at toy sizes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    out = []
    for path in FILES:
        text = path.read_text()
        for m in _BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            out.append(pytest.param(m.group(1), id=f"{path.relative_to(ROOT)}:{line}"))
    return out


BLOCKS = _blocks()


def test_there_are_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("code", BLOCKS)
def test_block_runs(code, tmp_path, monkeypatch):
    if "cuda" in code and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(code, "<doc block>", "exec"), {"__name__": "__doc_block__"})
