"""mkdocs hook: drop nav entries whose page does not exist (yet), so the nav can name pages that
other work adds later and ``mkdocs build --strict`` still passes."""

from __future__ import annotations

from pathlib import Path


def _prune(items, docs: Path):
    out = []
    for item in items:
        if isinstance(item, str):
            if item.startswith(("http://", "https://")) or (docs / item).is_file():
                out.append(item)
            continue
        ((title, value),) = item.items()
        if isinstance(value, list):
            value = _prune(value, docs)
            if value:
                out.append({title: value})
        elif value.startswith(("http://", "https://")) or (docs / value).is_file():
            out.append({title: value})
    return out


def on_config(config, **kwargs):
    if config.get("nav"):
        config["nav"] = _prune(config["nav"], Path(config["docs_dir"]))
    return config
