"""Build the cases of the GPU-only mutant pass: ``trees.tgz`` and ``cases.txt`` for ``gpu_run.py``.

Every GPU-only row of the ledgers in ``notes/mutation.md`` is listed below (``ROWS``) with the mutant tree its
numbers were given in. Each mutant is renumbered into the mutant tree of HEAD (``--tree``, a ``mutmut``
``mutants/`` directory generated from HEAD's source) by its edit: the lines the mutant removes and adds in its
function (``tools/mutation``'s remap idea: mutmut numbers the mutants of a function in order, so an unchanged
function keeps its numbers, a changed one does not). ``graph.py`` is not a mutmut module: its mutants come from
``--graph-tree`` (a tree generated with graph.py in ``[tool.mutmut]``), usable only while each function's
source there equals HEAD's (checked; a changed function's rows are written ``stale:`` and not run).

Run from the repository root::

    python tools/mutation/gpu_build.py --tree /path/to/head/mutants \\
        --graph-tree /path/to/graph/mutants --from gmL=/path/to/gmL/mutants --from mmt=... \\
        --from t85=/path/to/previous/head/mutants --last-head t85 \\
        --last /path/to/older/gpu_mut.tsv --last /path/to/last/gpu_mut.tsv --out .whl/gpu_mut

``--last`` (the tables of the previous passes, oldest first; their tree ``head`` is ``--last-head``'s) drops the
mutants any of them killed (matched by their edit, so a kill counts whatever the tree it was numbered in) and
sorts the rest: mutants never checked on a device first, then re-checks (survivors, now with other tests), then
repeats (survivors, with the tests they survived), the slow inductor cases last. Outputs in ``--out``: ``trees.tgz`` (``base/`` =
HEAD's sdesolve, tests, pyproject.toml; ``overlay/head/`` = the mutated modules), ``cases.txt`` (read by
``gpu_run.py``), ``ledger.tsv`` (mutant, group, status, tests, ledger, source number) and the estimated
job-seconds of the pass (from ``--last``'s seconds column, by test set).
"""

from __future__ import annotations

import argparse
import ast
import csv
import difflib
import io
import os
import re
import subprocess
import sys
import tarfile

# ---------------------------------------------------------------- test node ids
T_GRAPH = "tests/test_graph.py"
G_REPLAY = f"{T_GRAPH}::test_cuda_graph_replay_equals_the_plain_loop_without_sync"
G_SPLITS = f"{T_GRAPH}::test_generator_lists_make_splits_bitwise_equal_in_the_cuda_graph"
G_DEVRES = f"{T_GRAPH}::test_device_resolution_on_a_cuda_machine"
G_NOSAFE = f"{T_GRAPH}::test_without_graph_safe_generators_one_generator_draws_per_sample_keys"
G_MEM = f"{T_GRAPH}::test_memory_does_not_grow_with_steps"
G_ONCE = f"{T_GRAPH}::test_each_loop_is_captured_once_and_replayed_by_every_later_call"  # hN's T1
C_INDUCTOR = "tests/test_compile.py::test_inductor_step_on_cuda"
SDE_HOST = "tests/test_sde.py::test_a_ddpm_process_left_on_the_host_answers_device_times_on_the_device"
SDE_MOVE = "tests/test_sde.py::test_marginal_prob_and_reverse_drift_move_host_times_to_the_device_of_x"
SDE_CUDA = "tests/test_sde.py::test_cuda_coefficients_and_targets"
SDE_CAST = "tests/test_sde_mutants.py::test_a_ddpm_process_cast_with_its_model_answers_device_times_from_float64_knots"
L_NOSYNC = "tests/test_losses.py::test_losses_on_cuda_without_host_device_synchronization"
L_HOSTGEN = "tests/test_losses.py::test_a_host_generator_for_integers_on_the_gpu_is_refused_by_name"
ODE_PS = "tests/test_ode.py::test_per_sample_step_into_sigma_zero_on_cuda_is_the_cpu_solve"
AD_COPIES = "tests/test_adaptive.py::test_per_sample_log_snr_solve_on_cuda_copies_nothing_to_the_device_per_evaluation"
AD_ROUND = (  # hN's T4
    "tests/test_adaptive.py::test_per_sample_step_into_sigma_zero_copies_each_host_vector_to_the_device_once_a_round"
)
LM_FIXED = "tests/test_likelihood_mutants.py::test_fixed_steps_and_a_trace_that_ignores_x_on_the_gpu"
LM_ADJ = "tests/test_likelihood_mutants.py::test_adjoint_on_the_gpu_gives_the_cpu_answer"
LM_TDQ = "tests/test_likelihood_mutants.py::test_torchdiffeq_fixed_steps_on_the_gpu_give_the_cpu_answer"
LM_SCIPY = "tests/test_likelihood_mutants.py::test_scipy_backend_on_the_gpu_evaluates_the_network_on_the_gpu"
LK_CUDA = "tests/test_likelihood.py::test_cuda_agrees_with_cpu"
LK_SYNC = "tests/test_likelihood.py::test_fixed_step_solve_synchronizes_per_solve_not_per_evaluation"  # hN's T2
LK_NFE = "tests/test_likelihood.py::test_cuda_graph_counts_the_evaluations_and_is_captured_again_once"  # hN's T3
LK_GRAPH = [
    "tests/test_likelihood.py::test_cuda_graph_gives_the_eager_answer",
    "tests/test_likelihood.py::test_cuda_graph_refuses_the_hutchinson_divergence",
    LK_NFE,
]
PC_REC = (
    "tests/test_predictor_corrector.py::test_pc_records_on_cuda_stay_on_the_device_without_a_synchronization_per_step"
)
# the fifth session's GPU tests (ledgers hR, hP; not run on a device before the sixth session)
T_LG = "tests/test_likelihood_graph.py"
G1A = f"{T_LG}::test_a_network_that_outputs_zero_is_captured_and_its_flow_stands_still"
G1B = f"{T_LG}::test_the_capture_is_checked_at_the_data_and_at_half_of_it"
G1C = f"{T_LG}::test_a_replay_is_accepted_to_a_ten_thousandth_of_its_largest_entry"
G1D = f"{T_LG}::test_torchdiffeq_gets_its_times_on_the_data_device_and_copies_nothing_per_step"
G2_COUNT = f"{T_GRAPH}::test_the_model_counts_the_solves_alone_and_each_capture_warms_up_as_asked"
G2_NAN = f"{T_GRAPH}::test_non_finite_values_are_reported_with_their_step_from_every_loop"
G3 = "tests/test_adaptive.py::test_a_log_snr_piece_copies_its_ends_to_the_device_once_and_reads_nothing_back"
LK_ZEROS = "tests/test_likelihood.py::test_cuda_graph_takes_a_flow_that_stands_exactly_still_on_data_with_zeros"
LK_1PCT = "tests/test_likelihood.py::test_cuda_graph_refuses_a_replay_one_percent_off"

GRAPHED = "xǁ_GraphedDynamicsǁ*"  # every mutant of the class's methods

# ---------------------------------------------------------------- the ledgers' GPU-only rows
# (area, source tree, module, mangled function, numbers in the source tree, tests, ledger)
# source trees (paths given with --from): gmL = 9dbda3e (graph.py in [tool.mutmut]), mm9 = 9dbda3e,
# mmt = 21c5fca (run 2), mmH / mmH12 = 5b204f1, mmK = 75e6f27, t85 = 8533364 (ledger hR, the fifth session's
# pass); "head" = --tree itself. A mutant takes the tests of the first row that names it: the rows with a test
# written for a few mutants come before a row that takes a whole function or class. Tests in the order to run
# (pytest -x stops at the first failure): the one expected to kill first.
ROWS: list[tuple[str, str, str, str, str, list[str], str]] = [
    # graph.py (ledger hF; hN: the 6 survivors, T1 added to the sets whose baseline failed)
    (
        "graph",
        "gmL",
        "sdesolve/graph.py",
        "x_draw_keys",
        "24, 30",
        [f"{T_GRAPH}::test_draw_keys_from_cuda_generators_are_on_the_device"],
        "hF",
    ),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_fill", "10, 15", [G_NOSAFE], "hF"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_fill", "11", [G_REPLAY], "hF"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_fill", "37, 41", [G_DEVRES, G_ONCE], "hF/hN"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_run", "10, 19-23, 25-28", [G_REPLAY], "hF"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_run", "11-13", [G_ONCE], "hF/hN"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_run", "24, 29, 30", [G_DEVRES, G_ONCE], "hF/hN"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ__call__", "4, 7, 20", [G_DEVRES, G_ONCE], "hF/hN"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_mode", "3", [G_REPLAY], "hF"),
    (
        "graph",
        "gmL",
        "sdesolve/graph.py",
        "xǁGraphSamplerǁ_build",
        "3, 6, 10, 13, 17, 37, 39-46, 48-51, 53, 54",
        [G_REPLAY, G_SPLITS],
        "hF",
    ),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_build", "52", [G_ONCE, G_NOSAFE], "hF/hN"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_build", "34", [G_MEM, G_DEVRES], "hF/hN"),
    # hR's G2: the survivors of the fifth session's pass (with the whole file), each with the test written for it
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_capture", "19, 23, 24", [G2_COUNT], "hR"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_capture", "28", [G2_NAN], "hR"),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ_capture", "1-31", [T_GRAPH], "hF/hN"),
    (
        "graph",
        "gmL",
        "sdesolve/graph.py",
        "xǁGraphSamplerǁ__init__",
        "35, 38, 40, 41, 46-51, 53-55",
        [G_DEVRES, G_ONCE],
        "hF/hN",
    ),
    ("graph", "gmL", "sdesolve/graph.py", "xǁGraphSamplerǁ__init__", "61, 62, 72, 73, 104", [G_REPLAY], "hF"),
    # likelihood._GraphedDynamics: the survivors of the fifth session's pass with hR's G1 and hP's tests, the
    # ones it did not reach with hN's T3 (12: equivalent, hN), then every other mutant (61) with the CUDA-graph tests
    (
        "graphed_dynamics",
        "t85",
        "sdesolve/likelihood.py",
        "xǁ_GraphedDynamicsǁ_reproduces",
        "14",
        [G1A, G1C, LK_ZEROS],
        "hR/hP",
    ),
    ("graphed_dynamics", "t85", "sdesolve/likelihood.py", "xǁ_GraphedDynamicsǁ_reproduces", "19, 20", [G1C], "hR"),
    (
        "graphed_dynamics",
        "t85",
        "sdesolve/likelihood.py",
        "xǁ_GraphedDynamicsǁ_reproduces",
        "21",
        [G1C, LK_1PCT],
        "hR/hP",
    ),
    (
        "graphed_dynamics",
        "t85",
        "sdesolve/likelihood.py",
        "xǁ_GraphedDynamicsǁ__init__",
        "33",
        [G1B, LK_ZEROS],
        "hR/hP",
    ),
    ("graphed_dynamics", "t85", "sdesolve/likelihood.py", "xǁ_GraphedDynamicsǁ__init__", "34", [G1B], "hR"),
    ("graphed_dynamics", "gmL", "sdesolve/likelihood.py", "xǁ_GraphedDynamicsǁ__init__", "4, 9, 13", [LK_NFE], "hN"),
    ("graphed_dynamics", "head", "sdesolve/likelihood.py", GRAPHED, "*", LK_GRAPH, "hL/hN"),
    ("graphed_dynamics", "mmK", "sdesolve/likelihood.py", "x__log_likelihood", "37-48", LK_GRAPH, "hO"),
    # likelihood.py, outside the CUDA graph
    ("likelihood", "mmK", "sdesolve/likelihood.py", "x__solve_fixed", "53, 57", [LK_SYNC], "hO/lead"),
    ("likelihood", "mmK", "sdesolve/likelihood.py", "x__exact_trace", "42, 45, 63, 67", [LK_CUDA], "hO"),
    ("likelihood", "mmK", "sdesolve/likelihood.py", "x__log_likelihood", "33, 36", [LK_CUDA], "hO"),
    ("likelihood", "mmK", "sdesolve/likelihood.py", "x__augmented_dynamics", "62", [LK_CUDA], "hO"),
    ("likelihood", "mmt", "sdesolve/likelihood.py", "x__hutchinson_trace", "44, 47", [LM_FIXED], "hC/lead"),
    ("likelihood", "mmt", "sdesolve/likelihood.py", "x__draw_probes", "12", [LK_CUDA], "hC/lead"),
    ("likelihood", "mmt", "sdesolve/likelihood.py", "x_bits_per_dim", "42", [LK_CUDA], "hC/lead"),
    (
        "likelihood",
        "mmt",
        "sdesolve/likelihood.py",
        "x__solve_torchdiffeq",
        "4, 7",
        [G1D, LM_ADJ],
        "run2/hL/hR/hP",
    ),
    # 22, 24: hP sorts them equivalent on the GPU (the same values), hR kills them by the copies per step (G1d)
    ("likelihood", "mmt", "sdesolve/likelihood.py", "x__solve_torchdiffeq", "22, 24", [G1D], "run2/hL/hR"),
    ("likelihood", "mmH12", "sdesolve/likelihood.py", "x__solve_scipy", "3, 5, 38, 40", [LM_SCIPY], "run2/hL"),
    # solvers
    (
        "solvers",
        "mmH",
        "sdesolve/solvers/adaptive.py",
        "x__advance_in_log_snr",
        "2, 4, 5, 9, 12",
        [G3],
        "hB/hN/hR",
    ),
    ("solvers", "t85", "sdesolve/solvers/adaptive.py", "x__advance_in_log_snr", "3", [G3], "hR"),
    # 29: hR sorts it equivalent (host 0-d ends taken as scalars); to survive both
    ("solvers", "t85", "sdesolve/solvers/adaptive.py", "x__advance_in_log_snr", "29", [G3, AD_COPIES], "hR"),
    (
        "solvers",
        "mmH",
        "sdesolve/solvers/adaptive.py",
        "x__step_into_zero_per_sample",
        "67",
        [AD_ROUND, ODE_PS],
        "run2/hN/hO",
    ),
    # 81, 141: hN sorts them equivalent (the one copy moves into the callee); run to see them survive T4
    (
        "solvers",
        "mmH",
        "sdesolve/solvers/adaptive.py",
        "x__step_into_zero_per_sample",
        "81, 141",
        [AD_ROUND],
        "run2/hN",
    ),
    (
        "solvers",
        "mmH",
        "sdesolve/solvers/adaptive.py",
        "x__step_into_zero_per_sample",
        "146, 148, 180, 203",
        [ODE_PS],
        "run2/hN/hO",
    ),
    ("solvers", "mmt", "sdesolve/solvers/adaptive.py", "x__ddim_step", "42, 44", [ODE_PS], "hB/hO"),
    (
        "solvers",
        "mmK",
        "sdesolve/solvers/predictor_corrector.py",
        "xǁPredictorCorrectorǁinit_state",
        "29, 32, 41, 44",
        [PC_REC],
        "hO",
    ),
    (
        "solvers",
        "mm9",
        "sdesolve/solvers/base.py",
        "x_draw",
        "15, 27, 31, 38, 42, 49, 54",
        ["tests/test_sample.py::test_draws_are_made_on_the_device_asked_for"],
        "hD",
    ),
    (
        "solvers",
        "mm9",
        "sdesolve/solvers/base.py",
        "x_randn_like",
        "6",
        ["tests/test_sample.py::test_draws_are_made_on_the_device_asked_for"],
        "hD",
    ),
    # processes
    ("sde", "mm9", "sdesolve/sde/discrete.py", "xǁDiscreteVPSDEǁ_knots", "1, 4-10", [SDE_HOST, SDE_CAST], "hG/hN"),
    ("sde", "mmH", "sdesolve/sde/discrete.py", "xǁDiscreteVPSDEǁ_knots", "5, 6, 7", [SDE_HOST, SDE_CAST], "hK"),
    (
        "sde",
        "mm9",
        "sdesolve/sde/discrete.py",
        "xǁDiscreteVPSDEǁ__init__",
        "77, 82, 83, 86",
        [SDE_CUDA, SDE_HOST],
        "sorted one by one",
    ),
    ("sde", "mm9", "sdesolve/sde/reverse.py", "xǁ_Reverseǁ_coefs", "13", [SDE_MOVE], "hG/lead"),
    ("sde", "mmt", "sdesolve/sde/base.py", "xǁLinearSDEǁdrift", "13, 15", [SDE_MOVE], "run2/hL"),
    ("sde", "mmt", "sdesolve/sde/base.py", "xǁLinearSDEǁmarginal_prob", "18, 20, 29, 31", [SDE_MOVE], "run2/hL"),
    (
        "sde",
        "mmt",
        "sdesolve/sde/base.py",
        "xǁLinearSDEǁ_t_of_log_snr",
        "42, 47",
        ["tests/test_sde.py::test_the_bisection_inverse_of_a_process_on_the_gpu_runs_on_the_gpu"],
        "hC/hL",
    ),
    ("sde", "mmt", "sdesolve/sde/base.py", "xǁLinearSDEǁprior_sample", "23, 25, 29, 33", [SDE_CUDA], "hC"),
    (
        "sde",
        "mmt",
        "sdesolve/sde/vdm.py",
        "x__schedule_time",
        "5, 7, 20, 24",
        ["tests/test_vdm_schedules.py::test_a_schedule_on_the_gpu_serves_host_times_on_the_host"],
        "hC/hL",
    ),
    # losses
    (
        "losses",
        "mmt",
        "sdesolve/losses.py",
        "x_sample_times",
        "47, 48",
        ["tests/test_losses.py::test_sample_times_follow_a_cuda_generator_to_its_device"],
        "hA/hL",
    ),
    (
        "losses",
        "mmt",
        "sdesolve/losses.py",
        "x_sample_times",
        "53",
        ["tests/test_losses.py::test_sample_times_follow_a_cuda_generator_to_its_device", L_NOSYNC],
        "hA/hL",
    ),
    ("losses", "mmt", "sdesolve/losses.py", "x_vdm_prior_loss", "8, 12", [L_NOSYNC], "run2/hL"),
    ("losses", "mmt", "sdesolve/losses.py", "x_vdm_reconstruction_loss", "13, 16", [L_HOSTGEN, L_NOSYNC], "run2/hL"),
    ("losses", "mmt", "sdesolve/losses.py", "x_vdm_reconstruction_loss", "40, 43, 61, 63", [L_NOSYNC], "run2/hL"),
    ("losses", "mmt", "sdesolve/losses.py", "x_dsm_loss", "90, 104", [L_NOSYNC], "run2"),
    # slow: inductor compiles (hD expects them equivalent: a CPU token never read); run last
    ("inductor", "mm9", "sdesolve/solvers/base.py", "xǁCompiledStepǁ_draws", "41, 43", [C_INDUCTOR], "hD/lead"),
    ("inductor", "mm9", "sdesolve/solvers/base.py", "xǁCompiledStepǁ__call__", "15", [C_INDUCTOR], "hD/lead"),
]
# GPU tests run once unmutated although no case of this pass uses them (hN's list of the tests its sorting
# relies on); cases that do use a test run it unmutated as their baseline anyway
UNMUTATED = [[G_NOSAFE], [LM_FIXED], [AD_COPIES], [LK_SYNC], [PC_REC]]
# not run: model._select_tree 13, 15 (equivalent on the CPU; the device kill's test was never identified)


def rng(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.replace(" ", "").split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout


# ---------------------------------------------------------------- mutants of a tree, by edit
_cache: dict[str, dict[str, dict[str, list[str]]]] = {}


def functions(path: str) -> dict[str, dict[str, list[str]]]:
    """{mangled: {"orig" | "<n>": unparsed source lines}} of one mutated module (cached)."""
    if path not in _cache:
        out: dict[str, dict[str, list[str]]] = {}
        pat = re.compile(r"^(x\w*?)__mutmut_(orig|\d+)$")
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                m = pat.match(node.name)
                if m:
                    node.name = "f"
                    node.decorator_list = []
                    out.setdefault(m.group(1), {})[m.group(2)] = ast.unparse(node).splitlines()
        _cache[path] = out
    return _cache[path]


def edit(orig: list[str], mut: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    rem, add = [], []
    for ln in difflib.ndiff(orig, mut):
        if ln.startswith("- "):
            rem.append(ln[2:].strip())
        elif ln.startswith("+ "):
            add.append(ln[2:].strip())
    return tuple(rem), tuple(add)


def signature(path: str, mangled: str, n: int) -> tuple:
    f = functions(path)[mangled]
    return (mangled, edit(f["orig"], f[str(n)]))


def head_function(src: str, mangled: str) -> list[str] | None:
    """HEAD's function, unparsed as ``functions`` does (its ``__mutmut_orig`` form)."""
    tree = ast.parse(src)
    body = tree.body
    name = mangled[2:]
    if mangled.startswith("xǁ"):
        _, cls, name = mangled.split("ǁ")
        body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), [])
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            node.name = "f"
            node.decorator_list = []
            return ast.unparse(node).splitlines()
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=".", help="the repository (HEAD is what the pass checks)")
    ap.add_argument("--tree", required=True, help="mutmut mutants/ directory generated from HEAD's source")
    ap.add_argument("--graph-tree", required=True, help="mutants/ directory whose graph.py is mutated")
    ap.add_argument(
        "--from",
        dest="trees",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a tree the ledgers numbered mutants in (gmL, mm9, mmt, mmH, mmH12, mmK)",
    )
    ap.add_argument(
        "--last",
        action="append",
        default=[],
        help="a previous pass's gpu_mut.tsv, oldest first (repeat): the kills of any are left out, the verdict of "
        "the latest that ran a mutant sorts it",
    )
    ap.add_argument(
        "--last-head",
        default="head",
        metavar="NAME",
        help="the --from tree that the tables' tree 'head' means (the tree of HEAD when that pass was built; "
        "default: --tree); graph.py's 'head' rows are --graph-tree's",
    )
    ap.add_argument("--out", default=".whl/gpu_mut")
    ap.add_argument("--default-seconds", type=float, default=18.0, help="a case's estimate with no history")
    ap.add_argument(
        "--baselines",
        action="append",
        default=[],
        help="a previous pass's baselines.tsv (repeat): each test set's unmutated seconds, for the schedule estimate",
    )
    ap.add_argument("--jobs", type=int, default=14, help="gpu_run.py's --jobs, for the schedule estimate")
    ap.add_argument("--limit", type=float, default=420.0, help="gpu_run.py's --limit, for the schedule estimate")
    args = ap.parse_args()
    repo = os.path.abspath(args.repo)
    trees = dict(t.split("=", 1) for t in args.trees)
    trees["head"] = args.tree
    trees["graph"] = args.graph_tree
    head_src = {}

    def hsrc(module: str) -> str:
        if module not in head_src:
            head_src[module] = git(repo, "show", f"HEAD:{module}")
        return head_src[module]

    # the HEAD tree must be HEAD's source: its mutated modules' originals equal HEAD's functions
    problems: list[str] = []

    # kills of the last pass, as signatures (the tree column names the tree of the number)
    killed: set[tuple] = set()
    last_rows: dict[tuple, str] = {}
    last_tests: dict[tuple, str] = {}
    seconds: dict[str, list[float]] = {}
    for last in args.last:
        for r in csv.DictReader(open(last, encoding="utf-8"), delimiter="\t"):
            t = r["tree"].removeprefix("stale:").split("-")[0]
            mod, _, name = r["mutant"].rpartition(".")
            mangled, _, n = name.rpartition("__mutmut_")
            module = mod.replace(".", "/") + ".py"
            if t == "head":  # graph.py is mutated only in the graph tree
                t = "graph" if module == "sdesolve/graph.py" else args.last_head
            if float(r["seconds"] or 0) > 0 and r["verdict"] in ("killed", "survived"):
                seconds.setdefault(r["tests"], []).append(float(r["seconds"]))
            if t not in trees or not os.path.exists(os.path.join(trees[t], module)):
                problems.append(f"{last}: {r['mutant']} in tree {t!r}: no such tree or module (not matched)")
                continue
            try:
                sig = (module, *signature(os.path.join(trees[t], module), mangled, int(n)))
            except KeyError:
                problems.append(f"{last}: {r['mutant']} not in tree {t!r} (not matched)")
                continue
            if r["verdict"] in ("not-reached", "baseline-failed", "stale") and sig in last_rows:
                continue  # an earlier pass's verdict stands
            last_rows[sig] = r["verdict"]
            last_tests[sig] = r["tests"]
            if r["verdict"] == "killed" and not r["tree"].startswith("stale:"):
                killed.add(sig)

    def estimate(tests: list[str]) -> float:
        key = " ".join(tests)
        if key in seconds:
            return sum(seconds[key]) / len(seconds[key])
        parts = [sum(v) / len(v) for k, v in seconds.items() if k in tests]  # a set of one known test
        return max(parts) + 3.0 * (len(tests) - 1) if parts else args.default_seconds

    cases: list[dict] = []
    seen: set[str] = set()
    overlay: set[tuple[str, str]] = set()
    for area, src, module, mangled, spec, tests, ledger in ROWS:
        is_graph = module == "sdesolve/graph.py"
        dst = "graph" if is_graph else "head"
        dpath = os.path.join(trees[dst], module)
        spath = os.path.join(trees["graph" if is_graph and src == "gmL" else src], module)
        fns = functions(spath)
        if mangled == GRAPHED:
            pairs = [
                (m, int(n)) for m, v in fns.items() if m.startswith("xǁ_GraphedDynamicsǁ") for n in v if n != "orig"
            ]
        else:
            pairs = [(mangled, n) for n in rng(spec)]
        for m, n in pairs:
            sig = (module, *signature(spath, m, n))
            dfns = functions(dpath)
            if m not in dfns:
                problems.append(f"{module} {m}: not in {dst}'s tree")
                continue
            hf = head_function(hsrc(module), m)
            stale = hf is None or hf != dfns[m]["orig"]
            matches = [int(k) for k, v in dfns[m].items() if k != "orig" and edit(dfns[m]["orig"], v) == sig[2]]
            if not matches:
                problems.append(f"{src} {m} {n}: no mutant of the same edit in {dst}'s tree: {sig[2]}")
                continue
            if len(matches) > 1:
                problems.append(f"{src} {m} {n}: the same edit at {matches} in {dst}'s tree: all taken")
            for k in matches:
                name = f"{module[:-3].replace('/', '.')}.{m}__mutmut_{k}"
                if name in seen:
                    continue
                seen.add(name)
                dsig = (module, *signature(dpath, m, k))
                if dsig in killed:
                    continue
                before = last_rows.get(dsig)
                status = "new"
                if before == "survived":  # again with the same tests: a repeat (a test's body may have changed)
                    same = last_tests.get(dsig) == " ".join(tests)
                    status = "repeat" if same else "recheck"
                if area == "inductor":
                    status = "slow"
                cases.append(
                    dict(
                        name=name,
                        area=area,
                        status=status,
                        tests=tests,
                        ledger=ledger,
                        src=f"{src}:{n}" + (f" ({before})" if before else ""),
                        tree="stale:head" if stale else "head",
                        seconds=estimate(tests),
                    )
                )
                if not stale:
                    overlay.add((dst, module))
    # the order of the pass (every baseline runs before any case): never checked on a device first (by area, as
    # listed), then the re-checks (survivors, now with another test), the repeats (survivors, with the tests they
    # survived: only a changed test body can kill them), the slow ones (inductor compiles, ~95 s each) last
    order = {"new": 0, "recheck": 1, "repeat": 2, "slow": 3}
    cases.sort(key=lambda c: order[c["status"]])

    # every test node exists at HEAD
    for tests in [c["tests"] for c in cases] + UNMUTATED:
        for t in tests:
            f, _, fn = t.partition("::")
            if fn and not re.search(rf"^def {re.escape(fn)}\(", hsrc(f), re.M):
                problems.append(f"test {t} does not exist at HEAD")
    # the modules laid over HEAD must be HEAD's (their other functions too)
    for dst, module in sorted(overlay):
        tree_root = os.path.dirname(os.path.abspath(trees[dst]))
        plain = os.path.join(tree_root, module)
        if dst == "head" and os.path.exists(plain) and open(plain, encoding="utf-8").read() != hsrc(module):
            problems.append(f"{module}: the HEAD tree's source differs from HEAD's")
        if dst == "graph":
            for m, v in functions(os.path.join(trees[dst], module)).items():
                if head_function(hsrc(module), m) != v["orig"]:
                    problems.append(f"{module} {m}: changed since the graph tree (its mutants there are stale)")

    os.makedirs(args.out, exist_ok=True)
    arch = subprocess.run(
        ["git", "-C", repo, "archive", "--format=tar", "--prefix=base/", "HEAD", "sdesolve", "tests", "pyproject.toml"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(os.path.join(args.out, "trees.tgz"), "w:gz", compresslevel=9) as out:
        with tarfile.open(fileobj=io.BytesIO(arch)) as src_tar:
            for mem in src_tar.getmembers():
                out.addfile(mem, src_tar.extractfile(mem) if mem.isfile() else None)
        for dst, module in sorted(overlay):
            out.add(os.path.join(trees[dst], module), arcname=f"overlay/head/{module}")
    head = git(repo, "rev-parse", "--short", "HEAD").strip()
    with open(os.path.join(args.out, "cases.txt"), "w", encoding="utf-8") as f:
        f.write(
            f"# built by tools/mutation/gpu_build.py at {head}; read by tools/mutation/gpu_run.py\n"
            "# tree  mutant  tests...   (tree head: HEAD's sdesolve and tests with the mutated modules over them;\n"
            "#   'stale:head': the function differs from HEAD's, not run; mutant '-': the tests run once unmutated)\n"
        )
        group = None
        for c in cases:
            g = f"{c['status']}-{c['area']}"
            if g != group:
                f.write(f"## group {g}\n")
                group = g
            f.write(f"{c['tree']}  {c['name']}  {' '.join(c['tests'])}\n")
        f.write("## group unmutated\n")
        for tests in UNMUTATED:
            f.write(f"head  -  {' '.join(tests)}\n")
    with open(os.path.join(args.out, "ledger.tsv"), "w", encoding="utf-8") as f:
        f.write("mutant\tgroup\tstatus\test_seconds\ttests\tledger\tsource\n")
        for c in cases:
            f.write(
                f"{c['name']}\t{c['area']}\t{c['status']}\t{c['seconds']:.0f}\t{' '.join(c['tests'])}\t{c['ledger']}\t{c['src']}\n"
            )
    sets = {(c["tree"], " ".join(c["tests"])): c["seconds"] for c in cases} | {
        ("head", " ".join(t)): estimate(t) for t in UNMUTATED
    }
    by: dict[str, list[int]] = {}
    for c in cases:
        by.setdefault(c["area"], [0] * len(order))[order[c["status"]]] += 1
    print(f"cases: {len(cases)} ({' / '.join(order)} by area: {by})")
    print(
        f"estimated job-seconds: cases {sum(c['seconds'] for c in cases):.0f}, baselines {sum(sets.values()):.0f} "
        f"({len(sets)} sets); gpu_run.py's probes say nothing here (--no-probe): adaptive.py calls a trampolined "
        "function at import, so every probe fails collecting"
    )
    print(f"trees.tgz {os.path.getsize(os.path.join(args.out, 'trees.tgz'))} bytes; overlay {sorted(overlay)}")
    # gpu_run.py's schedule with these estimates: every baseline first (order of first use), each case once its
    # own baseline is done, --jobs at a time, nothing launched in the last 5 s of --limit. A baseline's seconds are
    # the earlier passes' where the set ran unmutated before (they start together: slower than a case), otherwise
    # 1.3 times the set's case estimate, at least 25 s
    known: dict[str, float] = {}
    for b in args.baselines:
        for r in csv.DictReader(open(b, encoding="utf-8"), delimiter="\t"):
            if r["kind"] == "baseline" and float(r["seconds"] or 0) > 0:
                known[r["tests"]] = float(r["seconds"])
    runnable = [c for c in cases if not c["tree"].startswith("stale:")]
    jobs_q: list[tuple[str, str, float, str]] = []  # (kind, name, seconds, set)
    for key in dict.fromkeys([" ".join(c["tests"]) for c in runnable] + [" ".join(t) for t in UNMUTATED]):
        guess = max(25.0, 1.3 * next((c["seconds"] for c in runnable if " ".join(c["tests"]) == key), 18.0))
        jobs_q.append(("baseline", key, known.get(key, guess), key))
    jobs_q += [("case", c["name"], c["seconds"], " ".join(c["tests"])) for c in runnable]
    now, running, ready, ends = 0.0, [], set(), {}
    while jobs_q or running:
        while len(running) < args.jobs and now < args.limit - 5:
            pick = next((j for j in jobs_q if j[0] == "baseline" or j[3] in ready), None)
            if pick is None:
                break
            jobs_q.remove(pick)
            running.append((now + pick[2], pick))
        if not running:
            break
        running.sort()
        now, done = running.pop(0)
        if done[0] == "baseline":
            ready.add(done[3])
        ends[done[1]] = now
    cut = [c["name"] for c in runnable if ends.get(c["name"], float("inf")) > args.limit]
    last = max((ends[c["name"]] for c in runnable if c["name"] in ends), default=0.0)
    print(
        f"schedule estimate, --jobs {args.jobs} --limit {args.limit:.0f}: the last case ends at {last:.0f} s; "
        f"{len(runnable) - len(cut)} of {len(runnable)} runnable cases within the limit"
        + (f"; cut: {' '.join(cut)}" if cut else "")
    )
    for p in problems:
        print("  note:", p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
