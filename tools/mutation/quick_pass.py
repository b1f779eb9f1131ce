"""A first pass over a mutmut tree with each function's fastest covering tests (``python tools/mutation/quick_pass.py``).

Why: mutmut hands each mutant every test that covers its function. For a function nearly every test calls
(``ScoreModel.__init__``, ``AdaptiveODE.solve``) that is the whole suite, and pytest collects all of it for every
mutant: on 2 cores about one mutant in 20 s, killed or not. Most mutants fail one of the few fastest tests of
their function. This pass runs, per mutant, only the fastest covering tests whose recorded durations add up to
``--budget`` seconds (from ``mutmut-stats.json``), in a child forked from one interpreter that has imported
torch and sdesolve once. A failure is a kill: the test passed unmutated (mutmut's stats run). A mutant the
subset does not kill is left unchecked for ``mutmut run`` to take with all its tests.

Run from the tree's ``mutants`` folder's parent, with the Python that generated the tree::

    cd /tmp/tree && OMP_NUM_THREADS=1 PYTHONPATH=<unmutated copy> python tools/mutation/quick_pass.py \
        --jobs 2 --budget 10 --out quick.tsv [--write]

``--write`` (or, afterwards, ``--apply quick.tsv``) records each kill in the tree's ``.meta`` files (exit code 1, as mutmut writes a kill), so that
``mutmut results`` counts it and the next ``mutmut run`` skips it. Stop ``mutmut run`` first: both write the
``.meta`` files. The ledger should say which kills came from this pass (``--out`` lists them).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time

# a collection error is a kill when the mutated function raised it: every test of the file errors
KILLS = ("killed", "collection-error")
LEFT_OUT = ("tests/test_notebooks.py", "tests/test_compile.py", "tests/test_distributed.py")


NO_TESTS = 33  # mutmut's exit code for a mutant whose function no selected test calls


def _unchecked(mutants: str, no_tests: bool = False) -> dict[str, str]:
    """Mutant name -> its .meta file, for every mutant without a result (and, with ``no_tests``, "no tests")."""
    out = {}
    for meta in sorted(glob.glob(os.path.join(mutants, "**", "*.py.meta"), recursive=True)):
        for name, code in json.load(open(meta))["exit_code_by_key"].items():
            if code is None or (no_tests and code == NO_TESTS):
                out[name] = meta
    return out


def _tests_for(name: str, stats: dict, budget: float, max_files: int) -> list[str]:
    """The fastest tests covering ``name``'s function, from at most ``max_files`` files, within ``budget`` seconds."""
    func = re.sub(r"__mutmut_\d+$", "", name)
    tests = [t for t in stats["tests_by_mangled_function_name"].get(func, ()) if not t.startswith(LEFT_OUT)]
    tests.sort(key=lambda t: stats["duration_by_test"].get(t, 1e9))
    chosen, files, total = [], set(), 0.0
    for t in tests:
        d, file = stats["duration_by_test"].get(t, 1e9), t.split("::")[0]
        if file not in files and len(files) == max_files:
            continue
        if chosen and total + d > budget:
            break
        files.add(file)
        chosen.append(t)
        total += d
    return chosen


def _raised_in_mutant(name: str, log: str) -> bool:
    """Whether pytest stopped at collection (rc 2 or 4) on an exception raised in the mutated function itself."""
    text = open(log, errors="replace").read()
    return f"in {name.rpartition('.')[2]}\n" in text  # a traceback line: "sdesolve/model.py:257: in <mutant>"


def _child(name: str, tests: list[str], log: str) -> None:
    import pytest

    os.environ["MUTANT_UNDER_TEST"] = name
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    rc = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow and not gpu", *tests])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(rc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mutants", default="mutants")
    ap.add_argument("--budget", type=float, default=10.0, help="seconds of recorded test time per mutant")
    ap.add_argument("--files", type=int, default=3, help="test files per mutant at most (collection is the cost)")
    ap.add_argument("--timeout", type=float, default=120.0, help="wall seconds per mutant")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=float, default=1e9, help="stop launching after this many seconds")
    ap.add_argument("--out", default="quick.tsv")
    ap.add_argument("--logs", default="/tmp/quick_logs")
    ap.add_argument("--write", action="store_true", help="record the kills in the .meta files")
    ap.add_argument("--only", default="", help="a regular expression the mutant names must match")
    ap.add_argument(
        "--names",
        default="",
        help="a file whose lines start with the mutant names to run, in its order (an earlier --out)",
    )
    ap.add_argument(
        "--apply", default="", help="record the kills of an earlier --out file in the .meta files, run nothing"
    )
    ap.add_argument(
        "--tests",
        nargs="+",
        default=None,
        help="run these tests for every mutant instead of its covering ones (tests mutmut's selection leaves out, "
        "e.g. tests/test_compile.py), over the unchecked mutants and those mutmut found no test for",
    )
    args = ap.parse_args()
    if args.apply:
        todo = _unchecked(args.mutants, no_tests=True)
        kills = [line.split("\t")[0] for line in open(args.apply) if line.split("\t")[1] in KILLS]
        _record(todo, [n for n in kills if n in todo])
        print(f"{sum(n in todo for n in kills)} kills recorded ({len(kills)} in {args.apply})")
        return

    stats = json.load(open(os.path.join(args.mutants, "mutmut-stats.json")))
    todo = {n: os.path.abspath(m) for n, m in _unchecked(args.mutants, no_tests=args.tests is not None).items()}
    args.out, args.logs = os.path.abspath(args.out), os.path.abspath(args.logs)
    seen = set()
    if os.path.exists(args.out):  # resume: what an earlier pass into the same --out already ran
        seen = {line.split("\t")[0] for line in open(args.out)}
    names = [n for n in todo if re.search(args.only, n) and n not in seen]
    if args.names:  # e.g. a second pass, with more tests, over what the first did not kill; in the file's order
        wanted = [line.split()[0] for line in open(args.names) if line.strip()]
        have = set(names)
        names = [n for n in dict.fromkeys(wanted) if n in have]
    os.makedirs(args.logs, exist_ok=True)
    os.chdir(args.mutants)
    sys.path.insert(0, os.getcwd())
    try:  # library imports only: test modules are imported in each child, under its mutant
        import diffusers  # noqa: F401
    except ImportError:
        pass
    import hypothesis  # noqa: F401  (imported once, before the forks)
    import pytest  # noqa: F401
    import scipy.stats  # noqa: F401
    import torch  # noqa: F401

    import sdesolve  # noqa: F401

    start, running, done = time.time(), {}, []
    with open(args.out, "a") as out:
        while names or running:
            while names and len(running) < args.jobs and time.time() - start < args.limit:
                name = names.pop(0)
                tests = args.tests or _tests_for(name, stats, args.budget, args.files)
                if not tests:
                    continue
                pid = os.fork()
                if pid == 0:
                    _child(name, tests, os.path.join(args.logs, name + ".log"))
                running[pid] = (name, time.time(), len(tests))
            if not running:
                break
            for pid, (_name, t0, _) in list(running.items()):
                if time.time() - t0 > args.timeout:
                    os.kill(pid, 9)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.05)
                continue
            name, t0, n = running.pop(pid)
            rc = os.waitstatus_to_exitcode(status)
            verdict = "killed" if rc == 1 else "passed-subset" if rc == 0 else f"other rc={rc}"
            if rc in (2, 4) and _raised_in_mutant(name, os.path.join(args.logs, name + ".log")):
                verdict = "collection-error"
            out.write(f"{name}\t{verdict}\t{time.time() - t0:.1f}\t{n}\n")
            out.flush()
            done.append((name, verdict))
    kills = {n for n, v in done if v in KILLS}
    print(f"{len(done)} run, {len(kills)} killed, {len(done) - len(kills)} left for mutmut")
    if args.write:
        _record(todo, sorted(kills))


def _record(todo: dict[str, str], kills: list[str]) -> None:
    """Write exit code 1 (mutmut's kill) for each of ``kills`` into its .meta file."""
    by_meta: dict[str, list[str]] = {}
    for n in kills:
        by_meta.setdefault(todo[n], []).append(n)
    for meta, ns in by_meta.items():
        data = json.load(open(meta))
        for n in ns:
            data["exit_code_by_key"][n] = 1
        with open(meta, "w") as f:
            json.dump(data, f)


if __name__ == "__main__":
    main()
