"""Check mutmut mutants against GPU tests on the device, N cases at a time, within a wall limit.

Run from the repository root (after ``. .whl/setup.sh``; the cases built by ``gpu_build.py``)::

    python tools/mutation/gpu_run.py --cases .whl/gpu_mut/cases.txt --limit 420 --jobs 14

What it does:

1. Unpacks ``--trees`` (default: ``trees.tgz`` next to ``--cases``) into ``--work``: ``base/`` is HEAD's
   ``sdesolve``, ``tests`` and ``pyproject.toml``; each tree named in the cases is a copy of base with
   that tree's mutated modules (``overlay/<tree>/...``, mutmut 3.8.1 trampolines) laid over it.
2. Runs each distinct (tree, tests) set once unmutated (``MUTANT_UNDER_TEST`` set to ``""``: the
   trampoline calls the original function), every set before any case. A case whose baseline fails,
   or passes nothing (all skipped or deselected), is not run: ``baseline-failed``. A line whose mutant
   is ``-`` only adds such an unmutated run. After all cases, each set is run once more with
   ``MUTANT_UNDER_TEST=fail`` (every trampolined call raises): a set that still passes never reaches a
   mutated module, and its survivors say nothing (``probe`` column; cut first by ``--limit``).
3. Runs every case as ``MUTANT_UNDER_TEST=<name> python -m pytest -x -q -p no:cacheprovider -m <marker>
   <tests>`` in its tree, ``--jobs`` at a time, each with ``--timeout`` seconds, in the order of the
   cases file. Stops launching before ``--limit`` seconds of wall time, kills what still runs at the
   limit, and reports what it did not reach.

Verdicts: killed (pytest rc 1, or a collection/internal error rc 2/3, or a crash by a signal),
survived (rc 0 and at least one test passed), timeout, baseline-failed, stale (the function changed
since the tree was generated: numbers invalid, not run), not-reached, no-tests (rc 5 or nothing
passed: should not happen after a passing baseline). Writes ``$OUT/gpu_mut.tsv`` (or
``--out``/gpu_mut.tsv), ``baselines.tsv`` and the tail of each run's output under ``logs/``.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field


@dataclass
class Job:
    kind: str  # "baseline", "probe" or "case"
    tree: str
    tests: tuple[str, ...]
    mutant: str = ""
    group: str = ""
    index: int = 0
    deps: tuple[str, ...] = ()
    rc: int | None = None
    seconds: float = 0.0
    verdict: str = ""
    note: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)
    start: float = 0.0
    log: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.tree}:{' '.join(self.tests)}" if self.kind != "case" else f"case:{self.index}"


def read_cases(path: str, only: str | None) -> list[Job]:
    jobs, group = [], ""
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line.startswith("## group"):
            group = line.split()[-1]
            continue
        if not line or line.startswith("#"):
            continue
        tree, mutant, *tests = line.split()
        if mutant == "-":  # an unmutated run only
            jobs.append(Job("baseline", tree, tuple(tests), group=group))
            continue
        if only and not (re.search(only, group) or re.search(only, mutant)):
            continue
        jobs.append(Job("case", tree, tuple(tests), mutant=mutant, group=group, index=len(jobs)))
    return jobs


def build_trees(work: str, trees: set[str], tgz: str) -> None:
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    with tarfile.open(tgz) as tf:
        tf.extractall(work, filter="data") if sys.version_info >= (3, 12) else tf.extractall(work)
    for t in sorted(trees):
        dst = os.path.join(work, t)
        shutil.copytree(os.path.join(work, "base"), dst)
        ov = os.path.join(work, "overlay", t)
        if not os.path.isdir(ov):
            raise SystemExit(f"no overlay for tree {t} in trees.tgz")
        for root, _, files in os.walk(ov):
            for f in files:
                src = os.path.join(root, f)
                rel = os.path.relpath(src, ov)
                shutil.copyfile(src, os.path.join(dst, rel))


def summary_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.search(r"\b(passed|failed|error|errors|skipped|deselected|no tests ran)\b", ln):
            return ln.strip("= ").strip()
    return lines[-1][:200] if lines else ""


def n_passed(text: str) -> int:
    m = re.search(r"(\d+) passed", summary_line(text))
    return int(m.group(1)) if m else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=float, default=330.0, help="total wall seconds (default 330)")
    ap.add_argument("--jobs", type=int, default=8, help="cases at a time (default 8)")
    ap.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per case (default 120; twice that per baseline)"
    )
    ap.add_argument("--marker", default="gpu", help='pytest -m expression (default "gpu")')
    ap.add_argument("--cases", default=".whl/gpu_mut/cases.txt", help="built by gpu_build.py")
    ap.add_argument("--trees", default=None, help="default: trees.tgz next to --cases")
    ap.add_argument("--only", default=None, help="regex on the group or mutant name")
    ap.add_argument("--work", default="/tmp/gpu_mut_work", help="where the trees are unpacked")
    ap.add_argument("--out", default=os.environ.get("OUT") or "/tmp/gpu_mut_out", help="default $OUT")
    ap.add_argument("--no-probe", action="store_true", help="skip the MUTANT_UNDER_TEST=fail probe")
    ap.add_argument(
        "--collect-only", action="store_true", help="only collect each test set in its tree (no CUDA needed)"
    )
    args = ap.parse_args()
    t0 = time.monotonic()
    deadline = t0 + args.limit
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)

    jobs = read_cases(args.cases, args.only)
    cases = [j for j in jobs if j.kind == "case"]
    plain = [j for j in jobs if j.kind == "baseline"]
    runnable = [c for c in cases if not c.tree.startswith("stale:")]
    if args.collect_only:
        args.no_probe = True
    for c in cases:
        if c.tree.startswith("stale:"):
            c.verdict, c.note = "stale", "function changed since the tree's commit"
    tgz = args.trees or os.path.join(os.path.dirname(os.path.abspath(args.cases)), "trees.tgz")
    build_trees(args.work, {c.tree for c in runnable + plain}, tgz)
    print(
        f"trees built in {time.monotonic() - t0:.1f} s under {args.work}: {sorted({c.tree for c in runnable})}",
        flush=True,
    )

    # the child environment: this tree first (cwd), never the repository's own sdesolve in the test
    # process; subprocesses of tests get the unmutated package of the repository root if it is on PYTHONPATH
    env = dict(os.environ)
    env["MUTANT_UNDER_TEST"] = ""  # the original functions (mutmut >= 3.8 also reads a process-local copy)
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # compiles side by side: no worker pool each
    env["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // max(1, args.jobs))))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    first = sorted({c.tree for c in runnable + plain})[:1]
    if first:  # the test process must import the tree's sdesolve, not one on PYTHONPATH
        r = subprocess.run(
            [sys.executable, "-c", "import sdesolve; print(sdesolve.__file__)"],
            cwd=os.path.join(args.work, first[0]),
            env=env,
            capture_output=True,
            text=True,
        )
        where = r.stdout.strip()
        print(f"sdesolve in tree {first[0]} imports from {where or r.stderr[-300:]}", flush=True)
        if not where.startswith(os.path.realpath(args.work)) and not where.startswith(args.work):
            raise SystemExit("the trees' sdesolve is not the one imported: check PYTHONPATH")

    # baselines per distinct (tree, tests), in the order of first use, all before the cases (a case
    # waits for its own baseline only); the probes after every case (diagnostics, cut first by --limit)
    pre: dict[str, Job] = {}
    queue: list[Job] = []
    cases_q: list[Job] = []
    probes: list[Job] = []
    for c in runnable + plain:
        b = Job("baseline", c.tree, c.tests)
        if b.key not in pre:
            pre[b.key] = b
            queue.append(b)
            if not args.no_probe and c.kind == "case":
                p = Job("probe", c.tree, c.tests, deps=(b.key,))
                pre[p.key] = p
                probes.append(p)
        if c.kind == "case":
            c.deps = (b.key,)
            if not args.collect_only:
                cases_q.append(c)
    queue += cases_q + probes
    print(
        f"{len(cases)} cases ({len(cases) - len(runnable)} stale), {len(pre)} baseline/probe runs, "
        f"{args.jobs} at a time, {args.timeout:.0f} s each, limit {args.limit:.0f} s",
        flush=True,
    )

    def start(j: Job) -> None:
        e = dict(env)
        if j.kind == "case":
            e["MUTANT_UNDER_TEST"] = j.mutant
        elif j.kind == "probe":
            e["MUTANT_UNDER_TEST"] = "fail"
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", args.marker, *j.tests]
        if args.collect_only:
            cmd.append("--collect-only")
        serial[0] += 1
        j.log = os.path.join(args.out, "logs", f"{j.kind}_{j.index if j.kind == 'case' else serial[0]}.txt")
        j.start = time.monotonic()
        j.proc = subprocess.Popen(
            cmd,
            cwd=os.path.join(args.work, j.tree),
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        j.fh = open(j.log + ".full", "wb")  # type: ignore[attr-defined]

    def kill(j: Job) -> None:
        try:
            os.killpg(j.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    running: list[Job] = []
    done: dict[str, Job] = {}
    serial = [0]

    sel = selectors.DefaultSelector()

    def finish(j: Job, verdict_override: str | None = None) -> None:
        fd = j.proc.stdout.fileno()
        os.set_blocking(fd, False)
        while True:  # what is left in the pipe, without waiting on a grandchild that still holds it
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            j.fh.write(chunk)
        j.fh.close()
        sel.unregister(j.proc.stdout)
        j.proc.stdout.close()
        j.seconds = time.monotonic() - j.start
        text = open(j.log + ".full", "rb").read().decode("utf-8", "replace")
        os.remove(j.log + ".full")
        with open(j.log, "w", encoding="utf-8") as f:
            f.write(f"{j.kind} tree={j.tree} mutant={j.mutant} rc={j.rc} {j.seconds:.1f}s\n{' '.join(j.tests)}\n")
            f.write(text[-4000:])
        j.note = summary_line(text)
        if verdict_override:
            j.verdict = verdict_override
        elif j.kind == "case":
            if j.rc == 0:
                j.verdict = "survived" if n_passed(text) > 0 else "no-tests"
            elif j.rc == 5:
                j.verdict = "no-tests"
            elif j.rc in (1, 2, 3) or (j.rc is not None and j.rc < 0):
                j.verdict = "killed"
            else:
                j.verdict = "killed"
                j.note = f"rc={j.rc}: " + j.note
        else:
            j.verdict = "ok" if j.rc == 0 and n_passed(text) > 0 else "failed"
            if args.collect_only:
                m = re.search(r"(\d+)(?:/\d+)? tests? collected", text)
                j.verdict = "ok" if j.rc == 0 and m and int(m.group(1)) > 0 else "failed"
            if j.kind == "probe":  # a probe must fail: the tests reach a mutated module
                j.verdict = {0: "NOT-REACHED", 1: "reaches", 5: "n/a"}.get(j.rc, f"reaches(rc={j.rc})")
        done[j.key] = j
        running.remove(j)
        tag = j.mutant if j.kind == "case" else f"{j.kind} {j.tree} {' '.join(t.split('::')[-1] for t in j.tests)[:90]}"
        print(
            f"[{time.monotonic() - t0:6.1f}s] {j.verdict:>15}  rc={j.rc}  {j.seconds:5.1f}s  {tag}  | {j.note[:100]}",
            flush=True,
        )

    stopped = False
    while queue or running:
        now = time.monotonic()
        # launch
        while not stopped and len(running) < args.jobs and queue:
            if deadline - now < 5:
                stopped = True
                break
            pick = None
            for j in queue:
                if all(d in done for d in j.deps):
                    pick = j
                    break
            if pick is None:
                break
            queue.remove(pick)
            if pick.deps and done[pick.deps[0]].verdict != "ok":
                b = done[pick.deps[0]]
                pick.verdict, pick.note, pick.rc = (
                    ("baseline-failed" if pick.kind == "case" else "n/a"),
                    f"baseline rc={b.rc}: {b.note}",
                    None,
                )
                done[pick.key] = pick
                continue
            start(pick)
            sel.register(pick.proc.stdout, selectors.EVENT_READ, pick)
            running.append(pick)
        if stopped and not running:
            break
        if not running and queue and not stopped:
            # nothing launchable (should not happen: every dep is queued before its cases)
            raise SystemExit("scheduler stuck")
        # wait for output or exits
        for key, _ in sel.select(timeout=0.5):
            j = key.data
            chunk = os.read(key.fileobj.fileno(), 65536)
            if chunk:
                j.fh.write(chunk)
        now = time.monotonic()
        for j in list(running):
            rc = j.proc.poll()
            if rc is not None:
                j.rc = rc
                finish(j)
            elif now >= deadline - 1:
                kill(j)
                j.rc = j.proc.wait()
                finish(j, "not-reached")
                j.note = "cut by --limit: " + j.note
            elif now - j.start > (args.timeout if j.kind == "case" else 2 * args.timeout):
                kill(j)
                j.rc = j.proc.wait()
                finish(j, "timeout" if j.kind == "case" else "failed")

    for j in queue:
        if j.kind == "case":
            j.verdict, j.note = "not-reached", "--limit reached before it started"
            done[j.key] = j

    # baseline/probe table
    with open(os.path.join(args.out, "baselines.tsv"), "w", encoding="utf-8") as f:
        f.write("kind\ttree\trc\tseconds\tverdict\ttests\tsummary\n")
        for j in pre.values():
            d = done.get(j.key, j)
            f.write(
                f"{d.kind}\t{d.tree}\t{d.rc}\t{d.seconds:.1f}\t{d.verdict or 'not-reached'}\t{' '.join(d.tests)}\t{d.note}\n"
            )
    probe_of = {
        (j.tree, j.tests): done.get(j.key, j).verdict or "not-reached" for j in pre.values() if j.kind == "probe"
    }
    # the case table
    with open(os.path.join(args.out, "gpu_mut.tsv"), "w", encoding="utf-8") as f:
        f.write("mutant\trc\tseconds\tverdict\tgroup\ttree\tprobe\ttests\tsummary\n")
        for c in cases:
            d = done.get(c.key, c)
            rc = "" if d.rc is None else d.rc
            probe = probe_of.get((d.tree, d.tests), "")
            f.write(
                f"{d.mutant}\t{rc}\t{d.seconds:.1f}\t{d.verdict}\t{d.group}\t{d.tree}\t{probe}\t{' '.join(d.tests)}\t{d.note}\n"
            )

    # summary
    wall = time.monotonic() - t0
    print(f"\n=== summary after {wall:.0f} s (limit {args.limit:.0f} s), marker {args.marker!r}")
    if args.collect_only:
        ok = sum(done.get(j.key, j).verdict == "ok" for j in pre.values())
        print(f"  collect-only: {ok} of {len(pre)} test sets collect at least one test")
    for j in pre.values():
        d = done.get(j.key, j)
        if not (d.verdict == "ok" or d.verdict.startswith("reaches")):
            print(f"  {d.kind} {d.verdict or 'not-reached'}: {d.tree} {' '.join(d.tests)} | {d.note[:150]}")
    verdicts = ["killed", "survived", "timeout", "baseline-failed", "stale", "not-reached", "no-tests"]
    groups = list(dict.fromkeys(c.group for c in cases))
    print(f"  {'group':<18}" + "".join(f"{v:>16}" for v in verdicts) + f"{'total':>8}")
    for g in groups + ["all"]:
        cs = [done.get(c.key, c) for c in cases if g in ("all", c.group)]
        print(f"  {g:<18}" + "".join(f"{sum(d.verdict == v for d in cs):>16}" for v in verdicts) + f"{len(cs):>8}")
    for v in ("survived", "timeout", "no-tests"):
        names = [c.mutant for c in cases if done.get(c.key, c).verdict == v]
        if names:
            print(f"  {v} ({len(names)}): " + " ".join(names))
    left = [c.mutant for c in cases if done.get(c.key, c).verdict == "not-reached"]
    if left:
        print(f"  not reached ({len(left)}): " + " ".join(left))
    print(f"  table: {os.path.join(args.out, 'gpu_mut.tsv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
