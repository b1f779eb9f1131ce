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


def _nav_pages() -> list[str]:
    """The pages named in mkdocs.yml's nav (one ``- Title: page.md`` per line)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r"^\s+- [^:\n]+: (\S+\.md)\s*$", nav, re.M)


def test_every_docs_page_is_in_the_site_nav():
    pages = _nav_pages()
    assert "index.md" in pages and "api.md" in pages
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in pages]
    assert not missing, f"docs pages not in mkdocs.yml's nav: {missing}"


def test_nav_hook_drops_only_missing_pages(tmp_path):
    """The hook keeps the nav entries whose page exists and drops the others (pages other work adds later)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_nav_hook", ROOT / "docs" / "_nav_hook.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    (tmp_path / "a.md").write_text("# a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# b")
    config = {
        "docs_dir": str(tmp_path),
        "nav": [{"A": "a.md"}, {"Gone": "gone.md"}, {"Group": [{"B": "sub/b.md"}, {"C": "c.md"}]}, {"Empty": ["x.md"]}],
    }
    assert hook.on_config(config)["nav"] == [{"A": "a.md"}, {"Group": [{"B": "sub/b.md"}]}]
