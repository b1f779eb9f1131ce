"""Carry mutmut kills from earlier mutant trees into a new one (``python tools/mutation/merge_meta.py NEW OLD:COMMIT ...``).

NEW is the ``mutants`` folder of a tree just generated at HEAD (``mutmut run 'no.such.mutant*'`` stops after
generating and collecting stats). Each OLD is the ``mutants`` folder of an earlier run and COMMIT the commit it was
generated from. A mutant's result carries over only when its function's source is the same at COMMIT and at HEAD
(compared here, by a hash of the function's AST, both computed with this Python: the hashes stored in the meta files
depend on the Python that wrote them). Only kills carry over; survivors, timeouts and "no tests" stay unchecked, so
the next run checks them with today's tests. ``--write`` writes the merged ``.meta`` files; without it, a dry run.
Run it from the project root (it reads the sources with ``git show``).
"""

from __future__ import annotations

import collections
import glob
import json
import os
import subprocess
import sys

from mutmut.mutation.file_mutation import compute_function_hashes


def _hashes(commit: str, path: str) -> dict[str, str]:
    src = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=False).stdout
    return compute_function_hashes(src)


def main(argv: list[str]) -> None:
    write = "--write" in argv
    args = [a for a in argv if a != "--write"]
    new, olds = args[0], [tuple(a.rsplit(":", 1)) for a in args[1:]]
    total: collections.Counter[str] = collections.Counter()
    for meta in sorted(glob.glob(os.path.join(new, "sdesolve", "**", "*.py.meta"), recursive=True)):
        rel = os.path.relpath(meta, new)
        path = rel[: -len(".meta")]
        data = json.load(open(meta))
        head = _hashes("HEAD", path)
        earlier = [
            (json.load(open(os.path.join(old, rel))), _hashes(commit, path))
            for old, commit in olds
            if os.path.exists(os.path.join(old, rel))
        ]
        carried = 0
        for key in data["exit_code_by_key"]:
            func = key.rpartition(".")[2].rpartition("__mutmut_")[0]
            for old_data, old_hashes in earlier:
                same = old_hashes.get(func) is not None and old_hashes.get(func) == head.get(func)
                if same and old_data["exit_code_by_key"].get(key) == 1:
                    data["exit_code_by_key"][key] = 1
                    carried += 1
                    break
        left = sum(v is None for v in data["exit_code_by_key"].values())
        total.update(all=len(data["exit_code_by_key"]), carried=carried, left=left)
        print(f"{path:45s} {len(data['exit_code_by_key']):5d} mutants, {carried:5d} kills carried, {left:5d} to run")
        if write:
            with open(meta, "w") as f:
                json.dump(data, f)
    print(dict(total))


if __name__ == "__main__":
    main(sys.argv[1:])
