"""One verdict for every mutant of a mutmut tree that the tool did not kill (``python tools/mutation/verdicts.py``).

The tool's own result of each mutant is read from the tree's ``.meta`` files (``exit_code_by_key``: 1 killed, by
``mutmut run``, by ``quick_pass.py --write``/``--apply`` or carried by ``merge_meta.py``; 0 survived; 33 no tests;
-24 timeout; None not run yet). Every mutant without a 1 gets a row: its tool status, a verdict and the evidence.

Run from the repository root (the project's venv)::

    python tools/mutation/verdicts.py --tree /tmp/tree/mutants \\
        --from t85=/tmp/tree_8533364/mutants --from mmK=/tmp/mmK/mutants ... \\
        --last notes/mutation_verdicts_8533364.tsv=t85 \\
        --ledger hP=/tmp/notes/p5/ledger_hP.md=t85 --ledger hR=/tmp/notes/p5/ledger_hR.md=t85 \\
        --gpu /tmp/mm_new/gpu_mut.tsv --gpu /tmp/mm_new/gpu_mut_HEAD.tsv=t85 --gpu <this session's gpu_mut.tsv>=tree \\
        [--quick quick.tsv ...] --out notes/mutation_verdicts_<commit>.tsv --md notes/mutation_verdicts_<commit>.md

Inputs (all read, none written but ``--out`` and ``--md``):

- ``--tree``: the mutant tree (its ``mutants`` folder); called ``tree`` below and in ``ROWS``.
- ``--from NAME=PATH`` (repeatable): the older trees the ledgers numbered their mutants in (``ROWS``' first column).
- ``ROWS`` below: the verdicts of ``notes/mutation.md``'s ledgers, typed in, by (tree, module, function, numbers).
- ``--ledger TAG=PATH=HEAD`` (repeatable): a helper's ledger file, parsed from its ``| mutants | status | test |``
  tables; its "HEAD"/8533364 sections numbered in tree ``HEAD``, its 75e6f27 sections in ``mmK``.
- ``--last TABLE=NAME`` (repeatable): an earlier verdict table (this script's ``--out``) of tree ``NAME``.
- ``--gpu TABLE[=NAME]`` (repeatable, oldest first): ``gpu_run.py``'s ``gpu_mut.tsv``; its ``tree`` column names the
  tree of each number, ``head`` meaning the tree ``NAME``.
- ``--quick TABLE`` (repeatable): ``quick_pass.py --out`` tables, only to say which of the tool's kills were the
  quick pass's and what the quick pass did with a mutant not run yet.

A verdict given in another tree carries to this tree's mutant only where the function's ``__mutmut_orig`` is the
same in both trees and the mutant makes the same edit (both unparsed with ``ast``, as ``gpu_build.py`` does: an
unchanged function keeps its numbers, a changed one carries nothing); a row that does not carry is reported.
Precedence, later over earlier: ``ROWS`` up to the fifth session, the ``--ledger`` files, ``ROWS`` of the sixth
session (``LATE``); then an earlier table fills what those leave unsorted; then a GPU kill overrides "GPU-only" and
"unsorted" (never "equivalent": a conflict is reported).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import sys
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_build import edit, functions, rng  # noqa: E402

TARGET = "tree"  # the name of --tree
TREES: dict[str, str] = {}  # name -> mutants folder (--tree and --from)

KN = "killed (new test)"
KX = "killed (existing test outside the selection)"
KG = "killed (GPU pass)"
KI = "killed (import time, fresh process)"
KT = "killed (timeout)"  # an endless loop: mutmut's own timeout is the detection (not a survivor)
EQ = "equivalent"
GPU = "GPU-only (not yet killed on a GPU)"
UN = "unsorted"
AW = "not run yet (the tool has no result)"
VERDICTS = [KN, KX, KG, KI, KT, EQ, GPU, UN, AW]
KILLS = {KN, KX, KG, KI, KT}

# ------------------------------------------------------------------ the ledgers of notes/mutation.md
# (tree, module, mangled function, numbers, verdict, evidence); numbers in that tree. Oldest ledger first.
ROWS: list[tuple[str, str, str, str, str, str]] = []


def row(tree, module, mangled, spec, verdict, evidence):
    ROWS.append((tree, module, mangled, spec, verdict, evidence))


# fmt: off

LC = "sdesolve.losses"
LK = "sdesolve.likelihood"
SB = "sdesolve.sde.base"
SV = "sdesolve.sde.vdm"
AD = "sdesolve.solvers.adaptive"
EX = "sdesolve.solvers.exponential"
PC = "sdesolve.solvers.predictor_corrector"
RK = "sdesolve.solvers.runge_kutta"
BA = "sdesolve.solvers.base"

# --- ledger hH (predictor_corrector at 52472bb, tree mmpc)
row("mmpc", PC, "xǁPredictorCorrectorǁstep", "29, 31, 34, 97, 99, 102", EQ,
    "ledger hH: PredictorCorrector.init always sets coefs['reuse_score'], so the .get default is never used")
row("mmpc", PC, "xǁPredictorCorrectorǁstep", "7", EQ,
    "ledger hH: with a corrector s is overwritten; without one reuse_score is False and `and` short-circuits")
row("mmpc", PC, "xǁPredictorCorrectorǁstep", "8", EQ, "ledger hH: `folded` only tested for truth (None is falsy)")
row("mmpc", PC, "xǁPredictorCorrectorǁstep", "83, 87", EQ,
    "ledger hH: `accepted` is 1-d (B,), so the mean over dim 0 is the mean over all")
row("mmpc", PC, "xǁPredictorCorrectorǁstep", "1, 67, 73, 74, 75, 115, 116", UN, "ledger hH: listed unsorted")
row("mmpc", PC, "xǁ_GridPredictorǁ__call__", "111, 130, 131", EQ,
    "ledger hH: equivalent up to rounding: addcmul vs mul+add of the same float32/64 values (one float32 ulp at most, "
    "below float16 resolution)")
row("mmpc", PC, "xǁLangevinCorrectorǁ_correct", "17, 21, 22", EQ,
    "ledger hH (carried by hO): the key test is always false -> _sigma_at(x, c, i)[1], bitwise the per-solve "
    "_lc_noise[i]")
row("mmpc", PC, "xǁLangevinCorrectorǁ_correct", "57", EQ,
    "ledger hH (carried by hO): n_steps >= 1 (check_int minimum=1), the loop always overwrites accept")
row("mmpc", PC, "x__mala_step", "3", EQ, "ledger hH (carried by hO): the only caller (_correct) passes need_score")
row("mmpc", PC, "x__mala_step", "44, 45, 47, 48", EQ,
    "ledger hH (carried by hO): one .to(None): the other operand is float32/64, promotion gives it; the "
    "float16->float32 cast is exact")
row("mmpc", PC, "x__mala_step", "61", EQ,
    "ledger hH (carried by hO): log u (float64) equals log r with probability zero")
row("mmpc", PC, "x__norm_step", "62", UN, "ledger hH: unsorted (rounding only on the 'batch' rule in float16)")

# --- "Sorted one by one" / hG (runge_kutta, tree mm_run; carried by hM/hO)
row("mm_run", RK, "xǁRungeKuttaODEǁ_step_into_zero", "16", EQ,
    "ledger 'Sorted one by one' (carried by hM): no entry of A in ZERO_TABLEAUX is 1.0; the zero entries now "
    "applied add 0 * r * eps = 0")
row("mm_run", RK, "xǁRungeKuttaODEǁ_step_into_zero", "42", EQ,
    "ledger 'Sorted one by one' (carried by hM): no weight of the tableaux that step into zero is 1.0; a zero "
    "weight adds 0")
row("mm_run", RK, "xǁRungeKuttaODEǁ_zero_coefficients", "41, 62", EQ,
    "ledger 'Sorted one by one' (carried by hG/hO): a second element computed alongside and dropped by every [0]")
row("mm_run", RK, "xǁRungeKuttaODEǁ_zero_coefficients", "70, 71, 73", EQ,
    "ledger 'Sorted one by one' (carried by hG/hO): the clamp of t(r_j) never binds (c = 1/3, 2/3: t(r_j) strictly "
    "inside (t_{i+1}, t_i))")
row("mm_run", RK, "xǁRungeKuttaODEǁinit", "2", EQ,
    "ledger 'Sorted one by one' (carried by hO): the base init does not read the process")
row("mm_run", RK, "xǁRungeKuttaODEǁinit", "36", EQ,
    "ledger 'Sorted one by one' (carried by hO): only a c = 1 stage can meet sigma = 0, and c = 1 is the last node")
row("mm9", RK, "xǁRungeKuttaODEǁstep", "1", EQ, "ledger 'Sorted one by one' / hG (carried by hO): the ODE step "
    "never reads noise")
row("mm9", RK, "xǁRungeKuttaODEǁstep", "33, 55", EQ, "ledger hG (carried by hO and the lead): equivalent, bodies "
    "identical in mm9/mmH12")

# --- ledger hL (tree mmH12, 5b204f1): losses, likelihood, sde.base, sde.vdm
row("mmH12", LC, "x__check_x0", "6", EQ, "ledger hL: check_tensor reads nonempty only as `if nonempty and ...`; None is "
    "falsy (the empty batch is refused by _check_x0's own check)")
row("mmH12", LC, "x__check_steps", "2, 5, 10, 11", EQ,
    "ledger hL (from hA): check_int refuses bool/float itself with the same re-raised message; the name never "
    "reaches the user")
row("mmH12", LC, "x__sigma_zero", "2, 3, 5, 6", EQ,
    "ledger hL (run 2): the VDM answer is all False whatever its dtype/device, read only as bool()/.any() on host "
    "times")
row("mmH12", LC, "x_sample_times", "47, 48, 53", GPU,
    "ledger hL (from hA): test_losses.py::test_sample_times_follow_a_cuda_generator_to_its_device (-m gpu)")
row("mmH12", LC, "x_sample_times", "92", EQ,
    "ledger hL (from hA): equivalent in practice: ceil(t N) = 0 only for t = 0 exactly (probability ~2^-53 a call)")
row("mmH12", LC, "x_sample_times", "93, 95", EQ, "ledger hL (from hA): t < 1 always, so ceil(t N) <= N")
row("mmH12", LC, "x_vdm_diffusion_loss", "34, 38", EQ,
    "ledger hL (from hA): sample_times checks the same generator list with the same flag first")
row("mmH12", LC, "x_vdm_diffusion_loss", "93", EQ,
    "ledger hL (from hA): k - round(k) is exact and never equals 1e-6")
row("mmH12", LC, "x_vdm_prior_loss", "8, 12", GPU,
    "ledger hL (run 2): test_losses.py::test_losses_on_cuda_without_host_device_synchronization (-m gpu)")
row("mmH12", LC, "x_vdm_prior_loss", "30, 43", EQ,
    "ledger hL (run 2): a 0-d float64 tensor does not promote x0's dtype")
row("mmH12", LC, "x_discrete_to_continuous", "8, 10", EQ,
    "ledger hL (run 2): integer + 0.5 is computed in torch's default dtype, as the cast asks")
row("mmH12", LC, "x__check_discrete", "35, 36, 38", EQ,
    "ledger hL (run 2): float x_int holds exact integers (checked just above); 36 differs only above 2^53")
row("mmH12", LC, "x_vdm_reconstruction_loss", "13, 16", GPU,
    "ledger hL: test_losses.py::test_a_host_generator_for_integers_on_the_gpu_is_refused_by_name (-m gpu)")
row("mmH12", LC, "x_vdm_reconstruction_loss", "40, 43", GPU,
    "ledger hL: test_losses.py::test_losses_on_cuda_without_host_device_synchronization (-m gpu)")
row("mmH12", LC, "x_vdm_reconstruction_loss", "39, 42", EQ,
    "ledger hL (run 2): t = 0 is exact in float32 and the process hooks take t in float64")
row("mmH12", LC, "x_vdm_reconstruction_loss", "45", EQ,
    "ledger hL (run 2): a 0-d float64 tensor does not promote a float32 one")
row("mmH12", LC, "x_vdm_reconstruction_loss", "92, 93", EQ,
    "ledger hL (run 2): squeeze of a size-1 axis; sum_event sums every non-batch axis")
row("mmH12", LC, "x_vdm_bits_per_dim", "40, 41, 42, 46", EQ,
    "ledger hL (run 2): the inner losses check the same generator list with the same errors")
row("mmH12", LC, "x_vdm_bits_per_dim", "125, 128", EQ,
    "ledger hL (run 2): after one pass both sums are set; dividing by n_repeats = 1 is exact")
row("mmH12", LK, "x__solve_scipy", "15, 18", EQ,
    "ledger hL: the dynamics move u to the state's device first thing; same value, the same one host-to-device copy")
row("mmH12", LK, "x__solve_scipy", "3, 5, 38, 40", GPU,
    "ledger hL: test_likelihood_mutants.py::test_scipy_backend_on_the_gpu_evaluates_the_network_on_the_gpu (-m gpu)")
row("mmH12", LK, "x__solve_scipy", "4, 6", EQ,
    "ledger hL (run 2): the dynamics cast the state to the integration dtype themselves")
row("mmH12", LK, "x__solve_scipy", "14, 17", EQ,
    "ledger hL (run 2): solve_ivp hands fun a numpy float64 scalar, whose dtype torch.tensor keeps")
row("mmH12", LK, "x__solve_scipy", "19, 21", EQ,
    "ledger hL (run 2): solve_ivp converts y0 and every fun value to float64 (exact for float32)")
row("mmH12", LK, "x__solve_torchdiffeq", "4, 7", GPU,
    "ledger hL (run 1): test_likelihood_mutants.py::test_adjoint_on_the_gpu_gives_the_cpu_answer (-m gpu)")
row("mmH12", LK, "x__solve_torchdiffeq", "22, 24", GPU,
    "ledger hL: test_likelihood_mutants.py::test_torchdiffeq_fixed_steps_on_the_gpu_give_the_cpu_answer (-m gpu); "
    "may be value-equivalent on a GPU")
row("mmH12", LK, "x__solve_torchdiffeq", "57, 81, 90", EQ,
    "ledger hL (run 1): torchdiffeq's output has two times, index 1 is index -1")
row("mmH12", SB, "x__derivative", "42", EQ,
    "ledger hL (hC): autograd.grad(create_graph=False) returns no graph; detach is a no-op")
row("mmH12", SB, "xǁLinearSDEǁ_t_of_log_snr", "11, 18", EQ,
    "ledger hL (hC): equivalent to T 2^-66 (65 halvings) / to round-off")
row("mmH12", SB, "xǁLinearSDEǁ_t_of_log_snr", "42, 47", GPU,
    "ledger hL (hC): test_sde.py::test_the_bisection_inverse_of_a_process_on_the_gpu_runs_on_the_gpu (-m gpu)")
row("mmH12", SB, "xǁLinearSDEǁ_gamma_prime", "4, 7", EQ,
    "ledger hL (run 1/2): _derivative takes the bound method's __self__, which is self")
row("mmH12", SB, "xǁLinearSDEǁdrift", "13, 15", GPU,
    "ledger hL (run 2): test_sde.py::test_marginal_prob_and_reverse_drift_move_host_times_to_the_device_of_x (-m gpu)")
row("mmH12", SB, "xǁLinearSDEǁmarginal_prob", "18, 20, 29, 31", GPU,
    "ledger hL (run 1/2): test_sde.py::test_marginal_prob_and_reverse_drift_move_host_times_to_the_device_of_x (-m gpu)")
row("mmH12", SV, "xǁ_ScaleGradientǁbackward", "8", EQ,
    "ledger hL (run 2): autograd casts the gradient to the input's dtype: at most one rounding fewer")
row("mmH12", SV, "x__schedule_time", "5, 7, 20, 24", GPU,
    "ledger hL (hC): test_vdm_schedules.py::test_a_schedule_on_the_gpu_serves_host_times_on_the_host (-m gpu)")
row("mmH12", SV, "xǁLearnedScalarGammaǁderivative", "6", EQ, "ledger hL (run 2): w / 1 = w * 1 exactly")
row("mmH12", SV, "xǁLearnedMonotoneGammaǁ__init__", "47, 67, 106", EQ,
    "ledger hL (hC): bias=None / persistent=None are falsy like False")
row("mmH12", SV, "xǁLearnedMonotoneGammaǁ__init__", "113, 115", EQ,
    "ledger hL (hC): _unit = [0, 1] is exact in every dtype and cast before use; not in the checkpoint")
row("mmH12", SV, "xǁLearnedMonotoneGammaǁshape_parameters", "1, 5, 6, 7", EQ,
    "ledger hL (hC): typing.cast returns its value unchanged")
row("mmH12", SV, "xǁLearnedMonotoneGammaǁ_profile", "27, 30", EQ,
    "ledger hL (hC): a constant added to h(t) cancels in h(t) - h(0) and h(1) - h(0)")
row("mmH12", SV, "xǁLearnedMonotoneGammaǁ_normalized", "5", EQ,
    "ledger hL (hC): _unit shares the parameter dtype, which tt is in")

# --- ledger hM (tree mmH12): exponential, predictor_corrector, runge_kutta, small modules
row("mmH12", EX, "xǁ_Exponentialǁ_ring_from_history", "27", EQ,
    "ledger hM (from hE): j < R = depth + 1 <= w.shape[1]: both tests always true")
row("mmH12", EX, "x__unipc_rhos", "51, 63", EQ,
    "ledger hM (from hE): _solve reads n = len(y) rows; p = 1 solves the 0 x 0 system, _solve([], []) = []")
row("mmH12", EX, "x__solve", "32, 41, 61", EQ,
    "ledger hM (from hE): entries left of the pivot are never read again; back substitution writes out[r] before "
    "reading it; the extra terms multiply exact zeros")
row("mmH12", EX, "xǁUniPCǁinit", "34, 35", EQ, "ledger hM (from hE): _multistep_orders compares final with "
    "'dpmpp', 'unipc' only")
row("mmH12", EX, "xǁUniPCǁinit", "37", EQ, "ledger hM (from hE): wc[0] is never read")
row("mmH12", EX, "xǁUniPCǁinit", "75", EQ, "ledger hM (from hE): read as `if full:`")
row("mmH12", EX, "xǁUniPCǁinit", "108, 110", EQ, "ledger hM (from hE): an entry of wc for x_n, never read")
row("mmH12", EX, "xǁUniPCǁinit", "137, 168, 199, 200", EQ,
    "ledger hM (from hE): trailing zero weights, or a width below the rows' own: the ring reads k < R = depth + 1")
row("mmH12", EX, "xǁUniPCǁinit", "170", EQ, "ledger hM (from hE): wi starts at zeros and each j is written once")
row("mmH12", EX, "xǁUniPCǁstep", "1, 7, 8", EQ,
    "ledger hM (from hE): deterministic solver: draw = self.stochastic and noise is False")
row("mmH12", EX, "xǁDPMSolverǁstep", "1", EQ, "ledger hM (from hE): DPM-Solver never reads noise or generator")
row("mmH12", EX, "xǁDPMSolverǁstep", "65, 66", EQ,
    "ledger hM (from hE): the start is unchanged, only at[0], at[1] are read")
row("mmH12", EX, "xǁDPMSolverǁinit", "2", EQ, "ledger hM (from hE): the base init does not read the process")
row("mmH12", EX, "xǁDPMSolverǁinit", "51", EQ, "ledger hM (from hE): an order-1 step reads only A[i][k-1]")
row("mmH12", EX, "xǁDPMSolverǁinit", "175", EQ, "ledger hM (hE's 174): E[+1] is taken only for k = 2, where E has "
    "2 entries")
row("mmH12", EX, "xǁDPMSolverǁinit", "220", EQ, "ledger hM (hE's 219): an empty (n, 0) 't_stage' is read by nobody")
row("mmH12", PC, "xǁLangevinCorrectorǁcorrect", "17", EQ,
    "ledger hM: _correct reads fold only for truth: None is False")
row("mmH12", PC, "xǁLangevinCorrectorǁ__call__", "7", EQ, "ledger hM: read as `need_score or ...`: None is False")
row("mmH12", PC, "xǁLangevinCorrectorǁ__call__", "14, 21", EQ,
    "ledger hM: only the Metropolis branch reads need_score; __call__ drops the extra score ([0]); same state")
row("mmH12", PC, "x__norm_step", "62", EQ,
    "ledger hM: equivalent up to rounding: in the sampler k is already in the state's dtype and 0-d; with float64 "
    "coefficients by hand the 'batch' rule computes the same step more precisely before the final rounding")
row("mmH12", PC, "x__norm_step", "77, 78", EQ,
    "ledger hM: dtype = promote(x.dtype, float32) = x.dtype there: the cast is a no-op")
row("mmH12", PC, "xǁPredictorǁ__call__", "1, 2", EQ,
    "ledger hM (run 1): the base predictor's __call__ only raises NotImplementedError")
row("mmH12", RK, "x__tableau", "1-12", KI,
    "ledger hM (run 1, hG; re-run by hM): fresh process: test_ode.py::test_butcher_order_conditions (1-3) or the "
    "import itself (4-12) fails")
row("mmH12", "sdesolve.solvers.euler_maruyama", "xǁEulerMaruyamaǁinit", "2", EQ,
    "ledger hM (from hE): the base init does not read the process")
row("mmH12", "sdesolve.solvers.plms", "xǁPLMSǁnfe", "8", EQ, "ledger hM (from hE): at n = 3 both branches give 12")
row("mmH12", "sdesolve.solvers.edm", "xǁEDMHeunǁ__init__", "28", EQ,
    "ledger hM: check_real reads finite only for truth: None is False, as the False given")
row("mmH12", "sdesolve.model", "xǁ_Counterǁ__setstate__", "7, 9", EQ,
    "ledger hM (from hD): equivalent in practice: a copied model's in-graph counter in float32, exact up to 2^24 calls")
row("mmH12", BA, "xǁSolverǁstep", "1, 2", EQ, "ledger hM (run 1, hD): defaults of the abstract method, whose body "
    "only raises")
row("mmH12", BA, "xǁSolverǁ__getstate__", "1, 2, 3", KX,
    "ledger hM (from hD, re-run): test_compile.py::test_compiled_step_is_built_once_per_options_and_left_out_of_copies "
    "(test_compile.py is --ignore'd by mutmut)")
row("mmH12", BA, "xǁ_AtStepǁ__init__", "1", KX,
    "ledger hM (from hD, re-run): test_compile.py::test_compiled_step_is_bitwise_the_eager_step[edm-heun]")

# --- ledger hL: likelihood._GraphedDynamics, every mutant GPU-only (CUDA-graph capture; its CPU tests deselected)
row("t85", LK, "xǁ_GraphedDynamicsǁ__init__", "1-35", GPU, "ledger hL/hN: CUDA-graph capture, GPU only")
row("t85", LK, "xǁ_GraphedDynamicsǁ_reproduces", "1-21", GPU, "ledger hL/hN: CUDA-graph capture, GPU only")
row("t85", LK, "xǁ_GraphedDynamicsǁ__call__", "1-5", GPU, "ledger hL/hN: CUDA-graph capture, GPU only")

# --- ledger hN (GPU pass survivors; trees gmL / mmH = HEAD's adaptive)
row("gmL", LK, "xǁ_GraphedDynamicsǁ__init__", "4, 9, 13", GPU,
    "ledger hN: killed (new) by T3 test_likelihood.py::test_cuda_graph_counts_the_evaluations_and_is_captured_again_once "
    "(-m gpu), checked on the CPU with a fake capture; not yet run on a GPU")
row("gmL", LK, "xǁ_GraphedDynamicsǁ__init__", "12", EQ,
    "ledger hN: capture_cuda_graph's default is warmup=2: the same call")
row("mmH", AD, "x__step_into_zero_per_sample", "81", EQ,
    "ledger hN: advance moves start to the state's device itself: the one copy moves into the callee")
row("mmH", AD, "x__step_into_zero_per_sample", "141", EQ,
    "ledger hN: eps_at copies the host t_m itself: the same one copy, the same values")
row("mmH", AD, "x__step_into_zero_per_sample", "67", GPU,
    "ledger hN: killed (new) by test_adaptive.py::"
    "test_per_sample_step_into_sigma_zero_copies_each_host_vector_to_the_device_once_a_round (-m gpu), not yet run")
row("mmH", AD, "x__step_into_zero_per_sample", "146, 148, 180, 203", GPU,
    "ledger hN: test_ode.py::test_per_sample_step_into_sigma_zero_on_cuda_is_the_cpu_solve (-m gpu)")
row("mmH", AD, "x__advance_in_log_snr", "2, 4, 5, 9, 12", GPU,
    "ledger hN: test_adaptive.py::test_per_sample_log_snr_solve_on_cuda_copies_nothing_to_the_device_per_evaluation, "
    "test_ode.py::test_per_sample_step_into_sigma_zero_on_cuda_is_the_cpu_solve (-m gpu)")

# --- ledger hO (tree mmK, 75e6f27)
row("mmK", AD, "x_integrate", "69, 73, 77", EQ,
    "ledger hO: integrate first calls check_tensor(y0, 'y0'), whose default nonempty=True refuses an empty y0 with the "
    "same message")
row("mmK", AD, "x__step_into_zero_per_sample", "49, 52", EQ,
    "ledger hO: t_s holds t1 where sigma = 0, t = 0, exact in float32; stacked with float64 t_b (promoted)")
row("mmK", AD, "x__step_into_zero_per_sample", "147, 149", EQ,
    "ledger hO: 2 * bool_tensor is the same int64 tensor of 0 and 2")
row("mmK", AD, "x__step_into_zero_per_sample", "167", EQ,
    "ledger hO: equivalent in practice: differs only when the float64 ratio is exactly 1.0")
row("mmK", AD, "x__step_into_zero_per_sample", "187", EQ,
    "ledger hO: equivalent in values: a pending sample with a finite ratio has a finite eps_b; on a GPU one more mask "
    "copy per retry round")
row("mmK", AD, "x__step_into_zero_per_sample", "160", UN,
    "ledger hO: not killed (rounding only: the shrink 0.9/sqrt(ratio) in float32); no exact reference found")
row("mmK", AD, "x__step_into_zero", "110", EQ,
    "ledger hO (run 2): equivalent in practice: differs only when the float64 ratio is exactly 1.0")
row("mmK", AD, "x__ddim_step", "42, 44", GPU,
    "ledger hO (run 2): test_ode.py::test_per_sample_step_into_sigma_zero_on_cuda_is_the_cpu_solve (-m gpu)")
row("mmK", AD, "x__embedded", "1-20", KI,
    "ledger hO (re-run, all 48): fresh process with the mutant set before the import: test_ode.py::"
    "test_butcher_order_conditions or the import itself fails")
row("mmK", AD, "x__dopri8", "1-28", KI,
    "ledger hO (re-run, all 48): fresh process with the mutant set before the import: test_ode.py::"
    "test_butcher_order_conditions or the import itself fails")
row("mmK", "sdesolve.solvers.edm", "xǁEDMHeunǁinit", "97, 105", EQ,
    "ledger hO: t_hat and the _hat coefficients are read only on steps that draw, i.e. sigma~ > sigma_i")
row("mmK", "sdesolve.solvers.edm", "xǁEDMHeunǁinit", "2", EQ,
    "ledger hO (from hM/hE): the base Solver.init does not read the process")
row("mmK", "sdesolve.solvers.edm", "xǁEulerAncestralǁinit", "2", EQ,
    "ledger hO: Solver.init returns {t, t_next} without reading the process")
row("mmK", "sdesolve.solvers.edm", "xǁEulerAncestralǁstep", "17", EQ,
    "ledger hO: the branch runs only for an eps ScoreModel asked for eps: the network's output is returned before the "
    "coefficients are read")
row("mmK", EX, "xǁDPMSolverPPǁinit", "44, 45", EQ,
    "ledger hO (from hE): _multistep_orders compares final with 'dpmpp'/'unipc' only")
row("mmK", EX, "xǁDPMSolverPPǁinit", "177", EQ, "ledger hO (from hE): an extra zero column of 'w' is never read")
row("mmK", EX, "x__multistep_orders", "21", EQ, "ledger hO (from hE): p = max(1, min(p, k)) caps the extra count")
row("mmK", EX, "x__multistep_orders", "23", KT,
    "ledger hO (from hE): an endless loop on every multistep solve of order >= 2: mutmut's timeout")
row("mmK", EX, "xǁ_Exponentialǁ_base", "2", EQ, "ledger hO (from hE): Solver.init does not read the process")
row("mmK", EX, "xǁ_Exponentialǁ_ring_step", "77, 80, 104", EQ,
    "ledger hO (from hE): axis 1 holds two identical copies of the ring coefficients")
row("mmK", "sdesolve.solvers.plms", "xǁPLMSǁinit", "2, 60", EQ,
    "ledger hO (from hE): Solver.init does not read the process; only warm-up steps 0-2 read the midpoints")
row("mmK", "sdesolve.solvers.plms", "xǁPLMSǁstep", "1", EQ, "ledger hO (from hE): PLMS never reads noise")
row("mmK", PC, "xǁAncestralPredictorǁ_discretization_for", "6, 7", EQ,
    "ledger hO: the answer is only compared with 'song' and matched in _eval_times, whose fall-through is the midpoint")
row("mmK", LK, "x__hutchinson_trace", "27, 28, 49", EQ, "ledger hO (run 2): memory only; dividing by n = 1 is exact")
row("mmK", LK, "x__hutchinson_trace", "44, 47", GPU,
    "ledger hO (run 2): test_likelihood_mutants.py::test_fixed_steps_and_a_trace_that_ignores_x_on_the_gpu (-m gpu)")
row("mmK", LK, "x__draw_probes", "12", GPU, "ledger hO (run 2): test_likelihood.py::test_cuda_agrees_with_cpu (-m gpu)")
row("mmK", LK, "x_bits_per_dim", "42", GPU, "ledger hO (run 2): test_likelihood.py::test_cuda_agrees_with_cpu (-m gpu)")
row("mmK", LK, "x__solve_fixed", "53, 57", GPU,
    "ledger hO/lead: test_likelihood.py::test_fixed_step_solve_synchronizes_per_solve_not_per_evaluation[cuda|cuda-graph]")
row("mmK", SB, "xǁLinearSDEǁ_check_lam", "1, 2, 18", EQ,
    "ledger hO (run 2, hC): name only compared with 'r'; -inf - x = -inf")
row("mmK", SB, "xǁLinearSDEǁ_check_lam", "27, 30, 39", EQ,
    "ledger hO: for an infinite end the bound is +-inf whatever is added")
row("mmK", "sdesolve.sde.reverse", "xǁ_Reverseǁ_coefs", "13", GPU,
    "ledger hO (hG): test_sde.py::test_marginal_prob_and_reverse_drift_move_host_times_to_the_device_of_x (-m gpu)")
row("mmK", "sdesolve.sde.vp", "xǁCosineVPSDEǁ_log_alpha", "24", EQ,
    "ledger hO (hG): the clamp's argument is <= 0 on [0, T]: neither clamp binds")
row("mmK", BA, "xǁSolverǁcompiled_step", "2, 6, 7, 8, 9, 12, 15", KX,
    "ledger hO (from hD, re-run): test_compile.py::test_compiled_step_is_built_once_per_options_and_left_out_of_copies")
row("mmK", BA, "xǁCompiledStepǁ_draws", "41, 43", GPU, "ledger hO (hD): test_compile.py::test_inductor_step_on_cuda")
row("mmK", BA, "xǁCompiledStepǁ__call__", "15", GPU, "ledger hO (hD): test_compile.py::test_inductor_step_on_cuda")
row("mmK", PC, "x__process_kind", "12, 17, 41", EQ,
    "ledger hO (re-read by hP): equivalent in practice: a process VE/VP to 1e-12/1e-9 at 65 times and not at 66, or "
    "exactly at the threshold")
row("mmK", PC, "x__process_kind", "24, 27, 30", EQ,
    "ledger hO (re-read by hP): LinearSDE declares variance_preserving = False: the getattr default is never used")
row("mmK", PC, "xǁAncestralPredictorǁ__init__", "6", EQ, "ledger hO: probability_flow defaults to False")
row("mmK", PC, "xǁAnnealedLangevinCorrectorǁ__init__", "7", EQ,
    "ledger hO: LangevinCorrector.__init__'s default step_rule is 'sigma', the value passed")
row("mmK", PC, "x__sigma_at", "19", EQ,
    "ledger hO (re-read by hP): eps is float32 for low-precision states and otherwise in x's dtype: the cast is a no-op")
row("mmK", PC, "x__sigma_steps_per_solve", "11", EQ,
    "ledger hO (re-read by hP): eps is float32 for low-precision states and otherwise in x's dtype: the cast is a no-op")
row("mmK", "sdesolve.solvers.euler_maruyama", "xǁEulerMaruyamaǁstep", "79", EQ,
    "ledger hO (checked by hP): addcmul promotes the float16 draw to float32 exactly; 20-step solves bitwise the same")
row("mmK", "sdesolve.solvers.vdm_ancestral", "xǁVDMAncestralǁinit", "2", EQ,
    "ledger hO (from hE): Solver.init does not read the process")
row("mmK", PC, "xǁPredictorCorrectorǁinit_state", "3", EQ,
    "ledger hO: Solver.init_state returns {'x': x} without reading the coefficients")
row("mmK", PC, "xǁPredictorCorrectorǁinit_state", "29, 32, 41, 44", GPU,
    "ledger hO: test_predictor_corrector.py::"
    "test_pc_records_on_cuda_stay_on_the_device_without_a_synchronization_per_step (-m gpu, 59f6251; e6d9a6c)")

# --- ledger hP's first list (tree mmK), written here too in case its file changes shape; its parsed rows override
row("mmK", LK, "x__exact_trace", "11, 18, 19, 25", KN,
    "ledger hP: test_likelihood_mutants.py::test_exact_trace_default_chunk_keeps_the_basis_block_under_2_to_the_24_"
    "entries (ce6d050)")
row("mmK", LK, "x__exact_trace", "24", EQ, "ledger hP: differs only at B D = 1, where the chunk is 1 either way")
row("mmK", LK, "x__exact_trace", "41, 44", KN,
    "ledger hP: test_likelihood_mutants.py::test_exact_trace_answers_in_the_dtype_of_x_whatever_the_default_dtype "
    "(e3c82a0)")
row("mmK", LK, "x__exact_trace", "62, 66", EQ,
    "ledger hP: the basis holds 0 and 1, exact in every dtype; the vjp casts the cotangent to the output's dtype")
row("mmK", LK, "x__exact_trace", "58", EQ,
    "ledger hO: the extra basis rows stay zero and the block slice stops at D: only wasted products")
row("mmK", LK, "x__exact_trace", "101, 105", EQ,
    "ledger hO: dim1 defaults to 0, the value given; axis 1 of the (B, c) diagonal is axis -1")
row("mmK", LK, "x__exact_trace", "42, 45, 63, 67", GPU, "ledger hO: test_likelihood.py::test_cuda_agrees_with_cpu")
row("mmK", PC, "x__process_kind", "18, 21", KN,
    "ledger hP / lead: test_predictor_corrector.py::"
    "test_ancestral_needs_the_vp_flag_and_takes_a_vp_process_with_small_log_alpha_as_vp (d7b7478)")
row("mmK", PC, "x__process_kind", "42", KN,
    "ledger hP: test_predictor_corrector.py::test_ancestral_needs_the_numbers_as_well_as_the_vp_flag (0cfab9f)")
row("mmK", PC, "x__sigma_at", "1, 2, 3, 4", KN,
    "ledger hP: test_predictor_corrector.py::test_pc_step_kernel_count_unfolded (0cfab9f)")
row("mmK", PC, "xǁPredictorCorrectorǁinit_state", "7", EQ,
    "ledger hP: the _lc_ keys are read only by the sigma rule and are bitwise the per-step values; cost once per solve")
row("mmK", PC, "xǁPredictorCorrectorǁinit_state", "22, 40, 43", KN,
    "ledger hP: test_predictor_corrector.py::test_records_only_where_they_mean_something (0cfab9f)")
# the lead's commit 0b85833 (after 8533364)
row("t85", SV, "xǁVDMSDEǁ_gamma", "1", KN,
    "commit 0b85833: test_vdm_schedules.py::test_a_float32_schedule_feeds_the_float64_formulas_its_value_widened")



# ------------------------------------------------------------------ the sixth session (67188b2)
N_EARLY = len(ROWS)  # rows below override the --ledger files

# --- ledger hD (tree mm9, 9dbda3e; solvers/base.py unchanged since): the CompiledStep family, now "no tests" in
#     mutmut (the docs block that compiles a step is deselected, and test_compile.py is --ignore'd)
TC = "test_compile.py::"
row("mm9", BA, "xǁSolverǁcompiled_step", "1-15", KX,
    f"ledger hD: {TC}test_compiled_step_is_built_once_per_options_and_left_out_of_copies (compiles nothing)")
row("mm9", BA, "xǁSolverǁ__getstate__", "1-3", KX,
    f"ledger hD: {TC}test_compiled_step_is_built_once_per_options_and_left_out_of_copies (copies leave the steps behind)")
row("mm9", BA, "xǁCompiledStepǁ__init__", "1-3", KX,
    f"ledger hD: {TC}test_compiled_step_is_built_once_per_options_and_left_out_of_copies")
row("mm9", BA, "xǁCompiledStepǁ__init__", "4-7", KX,
    f"ledger hD: {TC}test_compiled_step_called_like_the_step_takes_the_steps_defaults")
row("mm9", BA, "xǁCompiledStepǁ__call__", "1-3, 7-9, 11-13, 16-19, 23-26", KX,
    f"ledger hD: {TC}test_compiled_step_called_like_the_step_takes_the_steps_defaults (a compiled DDPM step called "
    "without noise=/need_x0= is bitwise the eager step's noisy state)")
row("mm9", BA, "xǁCompiledStepǁ__call__", "10, 21, 28", KX,
    f"ledger hD: {TC}test_compiled_step_is_bitwise_the_eager_step[ddpm]")
row("mm9", BA, "xǁCompiledStepǁ__call__", "22, 29", KX, f"ledger hD: {TC}test_compiled_step_is_bitwise_the_eager_step[plms]")
row("mm9", BA, "xǁCompiledStepǁ__call__", "4", KX,
    f"ledger hD: {TC}test_no_graph_per_step (host lists read at a traced index: Dynamo's recompile limit)")
row("mm9", BA, "xǁCompiledStepǁ__call__", "5", KX, f"ledger hD: {TC}test_compiled_step_is_bitwise_the_eager_step[pc]")
row("mm9", BA, "xǁCompiledStepǁ__call__", "6", KX, f"ledger hD: {TC}test_compiled_step_is_bitwise_the_eager_step[edm-heun]")
row("mm9", BA, "xǁ_AtStepǁ__init__", "1", KX, f"ledger hD: {TC}test_compiled_step_is_bitwise_the_eager_step[edm-heun]")
row("mm9", BA, "xǁCompiledStepǁ_draws", "12", KX, f"ledger hD: {TC}test_compiled_step_is_bitwise_the_eager_step[ddpm]")
row("mm9", BA, "xǁ_OrderedDrawsǁdraw", "2-9", KX, f"ledger hD: {TC}test_ordered_draws_are_randn")
row("mm9", BA, "xǁCompiledStepǁ_draws", "17, 19, 20, 30, 32, 33, 34, 37, 40, 42", KX,
    f"ledger hD: {TC}test_compiled_step_called_like_the_step_takes_the_steps_defaults")
row("mm9", BA, "xǁCompiledStepǁ__call__", "14, 20, 27", EQ,
    "ledger hD: equivalent on torch 2.13: plain draws instead of the ordering token; aot_eager and inductor with "
    "fallback_random keep program order on torch >= 2.12 (pytorch issue 181136); a None token is only a lost dependency. "
    f"On torch < 2.12 with CUDA, {TC}test_inductor_step_on_cuda[pc] (-m gpu) would kill it")
row("mm9", BA, "xǁCompiledStepǁ_draws", "2, 6, 7, 10, 11, 13-16, 22, 23, 25, 26, 29, 38, 39", EQ,
    "ledger hD: equivalent on torch 2.13: plain draws where the backend is aot_eager or inductor with fallback_random "
    "(the option read from the wrong place, a wrong name or default, the test inverted, the token None): both keep "
    "program order on torch >= 2.12")
row("mm9", BA, "xǁ_OrderedDrawsǁ__init__", "1", EQ, "ledger hD: equivalent on torch 2.13: the ordering token None")
row("mm9", BA, "xǁ_OrderedDrawsǁdraw", "1", EQ, "ledger hD: equivalent on torch 2.13: the ordering token None")
row("mm9", BA, "xǁCompiledStepǁ_draws", "1, 3, 4, 5, 8, 9, 27, 28", EQ,
    "ledger hD: equivalent in law: ordered (eager) draws where inductor would make its own; both N(0, 1), "
    "reproducible from the caller's seed, as the docstring promises for inductor without fallback_random")
row("mm9", BA, "xǁCompiledStepǁ_draws", "18, 21, 24, 31, 35, 36", EQ,
    "ledger hD: the inductor config entry always exists on torch 2.13 (the getattr default is never used); a token "
    "cache under another private key of the object's own __dict__ behaves the same")
row("mm9", BA, "xǁCompiledStepǁ_draws", "41, 43", EQ,
    "ledger hR (re-read of hD's GPU-only): the token is never read, only declared mutated: a host token's clone and "
    f"write-back are host ops; the GPU passes (8533364 and 67188b2 trees) survive {TC}test_inductor_step_on_cuda")
row("mm9", BA, "xǁCompiledStepǁ__call__", "15", EQ,
    "ledger hR (re-read of hD's GPU-only): the token made on the host is never read, only declared mutated; the GPU "
    f"passes survive {TC}test_inductor_step_on_cuda")
row("mm9", BA, "x_draw", "50", EQ, "ledger hD: torch.randint(high, size) has low = 0: the same call as randint(0, 2, ...)")
row("mm9", "sdesolve.model", "xǁ_Counterǁset", "2", KX, f"ledger hD: {TC}test_nfe_set_after_a_compiled_solve_is_the_value_set")

# --- helper hU (this tree, 67188b2): the rounding-only mutants left unsorted in the 8533364 table
row("tree", AD, "x__check_options", "12", KN,
    "hU (4a5601c): test_adaptive.py::test_options_without_a_first_step_choose_the_first_step_as_none_does[empty, "
    "first_step-None] (`in ... or`: options={} raises KeyError, {'first_step': None} a TypeError for None as a step)")
row("tree", AD, "x__step_into_zero_per_sample", "160", KN,
    "hU (4a5601c): test_adaptive.py::test_float32_per_sample_retries_into_sigma_zero_shrink_r_b_by_the_float64_rule "
    "(the float32 ratio's shrink 0.9 / sqrt(ratio) rounded to float32: the retry's t(r_b) 1.9e-7 off the batch-shared "
    "step's float64 rule; 0 unmutated)")
row("tree", PC, "xǁ_GridPredictorǁ__call__", "111, 130", EQ,
    "hU: equivalent up to rounding (float16/bfloat16 states only): both forms compute x + k z (111: the noise term; "
    "130: the x0 preview k1 x + k2 s) in float32 from the same float32 operands; `addcmul` skips the float32 rounding "
    "of the product, a difference of at most half a float32 ulp of k z, far below the float16 result's ulp (2^-11 "
    "relative). The float16 outputs differ only where the float32 value sits that close to a float16 rounding "
    "midpoint: 2 (111) and 11 (130) of 1e6 random entries; mean error against float64 5.144e-8 for both. Neither "
    "order of rounding is the method's; a test could only pin one")
row("tree", AD, "x__check_options", "20, 21", KN,
    "hU (48193e2): test_adaptive.py::test_options_hold_the_checked_first_step_as_a_python_float[int, numpy-float32, "
    "tensor-0d] "
    "(the checked float stored under another key: the raw value kept and an extra key)")
row("tree", AD, "x__initial_step", "13, 17-22, 50-59", KN,
    "hU (87ca105): test_adaptive.py::test_the_starting_step_is_hairers_in_each_of_its_branches (the trial evaluation at "
    "h0 and the first step's second stage at h / 5 against Hairer II.4 to 1e-12, for a zero field, a zero state, a "
    "state and a field below atol, d0, d1 exactly at 1e-5 and d1 exactly at 1e-15; each mutant fails 1 to 3 cases)")
row("tree", AD, "x__integrate", "18", EQ,
    "hU: `t1 >= t0`: `_integrate` returns before this line when t0 == t1, and for t0 != t1 `>=` and `>` agree")
row("tree", AD, "x__integrate", "106, 123, 172", EQ,
    "hU: equivalent in practice: `>` for `>=` / `<` for `<=`: they differ only when h equals |t1 - t| (1 - 4 eps), "
    "resp. 8 eps max(|t|, 1), or the float64 error ratio is exactly 1.0")
row("tree", AD, "x__integrate", "113", EQ,
    "hU: equivalent in practice: `1 - 5 eps` for `1 - 4 eps` in the last-step test: they differ only when the "
    "proposed step falls in [1 - 5 eps, 1 - 4 eps) times the remaining span, a window one float64 ulp wide")
row("tree", AD, "x__rk_step", "41, 47", EQ,
    "hU: `bj != 1.0` / `ej != 1.0`: no weight b_j or error weight e_j of the adaptive tableaux (dopri5, bosh3, "
    "fehlberg2, adaptive_heun, dopri8) is 1.0, so every term is added, the zero ones as (h * 0) * k = 0 (a stage "
    "with a zero weight that is not finite feeds the later stages through A anyway)")
row("tree", AD, "x__rk_step", "49", EQ,
    "hU: `err - (h e_j) k_j`: the error estimate comes out negated; its only reader, `_integrate`, takes "
    "norm(err / scale), and the norms (rms, max abs, a user's) are even")
row("tree", SB, "x_log_sigmoid", "7", EQ,
    "hU: softplus threshold 51 for 50: they differ only for -x in (50, 51], where log1p(exp(-x)) = -x + e^x "
    "(e^x < 2e-22) rounds to -x in every dtype; checked bitwise on 100001 points of [-51, -50] in float64, float32, "
    "float16, bfloat16")
MO = "sdesolve.model"
row("tree", MO, "xǁScoreModelǁ__init__", "49", EQ,
    "hU: `_batch_checked = ''`: read only in `_kwargs_for` as `!= batch` (an int), true for '' as for None; "
    "`_replace` resets it to None")
row("tree", MO, "xǁScoreModelǁ__init__", "50", EQ,
    "hU: `_time_tables = None`: read only by `_table_row` as `if not tables: return None`, None as falsy as {}; "
    "`_replace` (every copy, with_time_tables' included) sets {} or the tables")
row("tree", MO, "xǁScoreModelǁ_kwargs_for", "1", EQ,
    "hU: `or`: without model_kwargs the check runs over an empty dict once per batch size (no rows, nothing raised, "
    "the same {} returned): host cost only")
row("tree", MO, "xǁScoreModelǁ_kwargs_for", "11", EQ,
    "hU: `_batch_checked = None`: the shape check of the bound inputs runs every call instead of once per batch size; "
    "it reads shapes only (no device value, no synchronization) and raises for the same inputs: host cost only")
row("tree", MO, "xǁScoreModelǁnetwork_time_dtype", "5, 6", EQ,
    "hU: `bits > 32` / `>= 33`: they differ from `>= 32` only at 32 bits, float32, where x.dtype is torch.float32, "
    "the other branch's answer (16 and 64 bits unchanged)")
row("tree", MO, "xǁScoreModelǁ_net_in", "10", EQ,
    "hU: always `out.to(x.dtype)`: `.to` of a tensor already in that dtype returns the tensor itself (no copy)")
row("tree", MO, "xǁScoreModelǁ_table_row", "9", EQ,
    "hU: `tables.get(id(None))` for a time that is no view: the tables are keyed by ids of live float64 time "
    "vectors, never None's id: None, as the original's")
row("tree", MO, "xǁ_Counterǁ__init__", "6, 8", EQ,
    "hU (as hD's `_Counter.__setstate__` 7, 9): equivalent in practice: the in-graph count `traced` in float32 "
    "counts network calls inside compiled graphs exactly up to 2^24 of them; eager calls never touch it")
# fmt: on


# ------------------------------------------------------------------ trees
def split(name: str) -> tuple[str, str, int]:
    mod, _, fn = name.rpartition(".")
    mangled, _, n = fn.rpartition("__mutmut_")
    return mod, mangled, int(n)


def fns(tree: str, mod: str) -> dict:
    p = os.path.join(TREES[tree], mod.replace(".", "/") + ".py")
    return functions(p) if os.path.exists(p) else {}


_edits: dict[tuple[str, str, str], dict] = {}


def edits(tree: str, mod: str, mangled: str) -> dict:
    """{edit: [numbers]} of one function of a tree (cached)."""
    key = (tree, mod, mangled)
    if key not in _edits:
        f = fns(tree, mod).get(mangled, {})
        out: dict = {}
        for k, v in f.items():
            if k != "orig":
                out.setdefault(edit(f["orig"], v), []).append(int(k))
        _edits[key] = out
    return _edits[key]


def carry(tree: str, mod: str, mangled: str, n: int) -> list[int]:
    """This tree's numbers of ``tree``'s mutant n: the same ``__mutmut_orig`` in both trees and the same edit."""
    if tree == TARGET:
        return [n] if str(n) in fns(TARGET, mod).get(mangled, {}) else []
    a, h = fns(tree, mod).get(mangled), fns(TARGET, mod).get(mangled)
    if not (a and h and a.get("orig") == h.get("orig") and str(n) in a):
        return []
    return sorted(edits(TARGET, mod, mangled).get(edit(a["orig"], a[str(n)]), []))


def read_meta(root: str) -> dict[str, int | None]:
    """{mutant: exit code} of every ``.meta`` file of a mutmut tree."""
    out: dict[str, int | None] = {}
    for meta in sorted(glob.glob(os.path.join(root, "**", "*.py.meta"), recursive=True)):
        out.update(json.load(open(meta, encoding="utf-8"))["exit_code_by_key"])
    return out


STATUS = {1: "killed", 0: "survived", 33: "no tests", -24: "timeout", None: "not checked"}

MOD_HINT = {
    "likelihood": LK,
    "losses": LC,
    "model": "sdesolve.model",
    "adaptive": AD,
    "edm": "sdesolve.solvers.edm",
    "vdm_ancestral": "sdesolve.solvers.vdm_ancestral",
    "predictor_corrector": PC,
    "exponential": EX,
    "runge_kutta": RK,
    "euler_maruyama": "sdesolve.solvers.euler_maruyama",
    "plms": "sdesolve.solvers.plms",
    "graph": "sdesolve.graph",
    "base": None,
    "vdm": SV,
    "vp": "sdesolve.sde.vp",
    "ve": "sdesolve.sde.ve",
    "reverse": "sdesolve.sde.reverse",
    "discrete": "sdesolve.sde.discrete",
    "ddim": "sdesolve.solvers.ddim",
}
_index: dict[str, list[str]] = {}


def module_index() -> dict[str, list[str]]:
    if not _index:
        root = TREES[TARGET]
        for dp, _, fs in os.walk(os.path.join(root, "sdesolve")):
            for f in fs:
                if f.endswith(".py"):
                    mod = os.path.relpath(os.path.join(dp, f[:-3]), root).replace("/", ".")
                    for m in fns(TARGET, mod):
                        _index.setdefault(m, []).append(mod)
    return _index


def resolve(ref: str, section_mod: str | None) -> tuple[str, str] | None:
    """`A.B.func` / `Class.method` / `func` -> (module, mangled) in the target tree."""
    parts = ref.strip("`").split(".")
    parts = [p for p in parts if p and p != "sdesolve" and p != "solvers" and p != "sde"]
    if not parts:
        return None
    cls = None
    if len(parts) >= 2 and re.match(r"_?[A-Z]", parts[-2]):
        cls, meth = parts[-2], parts[-1]
        hints = parts[:-2]
        mangled = f"xǁ{cls}ǁ{meth}"
    else:
        meth = parts[-1]
        hints = parts[:-1]
        mangled = f"x_{meth}"
    mods = module_index().get(mangled, [])
    if not mods:
        return None
    if len(mods) == 1:
        return mods[0], mangled
    want = [MOD_HINT.get(h) for h in hints if MOD_HINT.get(h)] + ([section_mod] if section_mod else [])
    for w in want:
        if w in mods:
            return w, mangled
    return None


def canon(status: str) -> str | None:
    s = status.lower()
    if s.startswith("killed") and "gpu" in s and ("not run" in s or "not yet run" in s):
        return GPU  # a GPU test written for it, not yet run on a GPU
    if "import" in s and "killed" in s:
        return KI
    if s.startswith("killed") or "killed (new" in s:
        if "existing" in s:
            return KX
        return KN
    if "killable" in s:
        return UN
    if "equivalent" in s:
        return EQ
    if "gpu-only" in s or "gpu only" in s:
        return GPU
    if "not killed" in s or "unsorted" in s or "inconclusive" in s:
        return UN
    return None


def strip_parens(s: str) -> str:
    prev = None
    while prev != s:
        prev = s
        s = re.sub(r"\([^()]*\)", " ", s)
    return s


def parse_ledger(tag: str, path: str, head: str) -> list[tuple]:
    """The rows of a helper's ledger file (`| mutants | status | test |` tables); ``head`` names the tree its
    "HEAD" / 8533364 sections numbered in (mmK sections are recognised by their heading)."""
    out: list[tuple] = []
    if not os.path.exists(path):
        return out
    tree, section_mod = head, None
    col = 1
    last: tuple[str, str] | None = None  # the last resolved (module, mangled): a bare `method` continues its class
    for line in open(path, encoding="utf-8"):
        if line.startswith("#"):
            low = line.lower()
            if "mmk" in low or "75e6f27" in low:
                tree = "mmK"
            elif "head" in low or "/tmp/tree" in low or "8533364" in low:
                tree = head
            m = re.search(r"`([\w/]+)\.py`", line)
            section_mod = None
            if m:
                section_mod = "sdesolve." + m.group(1).replace("/", ".")
                if section_mod not in MOD_HINT.values():
                    for k, v in MOD_HINT.items():
                        if m.group(1).endswith(k) and v:
                            section_mod = v
            continue
        if not line.startswith("|") or line.startswith("| ---") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) < 2:
            continue
        if cells[0].lower() in ("mutants", "mutant"):  # a header: which column holds the status
            col = next((i for i, c in enumerate(cells) if c.lower().startswith("status")), 1)
            continue
        if col >= len(cells):
            continue
        verdict = canon(cells[col])
        if verdict is None:
            continue
        rest = [c for i, c in enumerate(cells[1:], 1) if i != col]
        evidence = f"ledger {tag}: {cells[col]}; " + "; ".join(rest)
        evidence = re.sub(r"\s+", " ", evidence.replace("\t", " "))[:400]
        first = strip_parens(cells[0].replace("**", "`"))
        for part in re.split(r";", first):
            for m in re.finditer(r"`([^`]+)`((?:[\s,]*(?:and\s+)?\d+(?:\s*[-–]\s*\d+)?)*)", part):
                ref, nums = m.group(1), m.group(2)
                spec = ",".join(re.findall(r"\d+(?:\s*[-–]\s*\d+)?", nums)).replace("–", "-").replace(" ", "")
                if not spec:
                    continue
                if ref.split(".")[0] == "graph" or "GraphSampler" in ref:
                    continue  # graph.py is not a mutmut module: not in the tree
                r = resolve(ref, section_mod)
                if "." not in ref and last is not None and last[1].startswith("xǁ"):
                    cls = last[1].split("ǁ")[1]
                    if f"xǁ{cls}ǁ{ref}" in fns(TARGET, last[0]):
                        r = (last[0], f"xǁ{cls}ǁ{ref}")  # `Class.a` 1, `b` 2: b of the same class
                if r is None:
                    print(f"  {tag}: cannot resolve `{ref}` ({cells[0][:60]})", file=sys.stderr)
                    continue
                last = r
                out.append((tree, r[0], r[1], spec, verdict, evidence))
    return out


# ------------------------------------------------------------------ GPU passes
def gpu_results(specs: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """{mutant of this tree: evidence} of GPU kills, and {mutant: evidence} of other GPU outcomes (tables in order)."""
    kills: dict[str, str] = {}
    other: dict[str, str] = {}
    for spec in specs:
        path, _, head = spec.partition("=")
        if not os.path.exists(path):
            print(f"  no GPU table {path}", file=sys.stderr)
            continue
        for r in csv.DictReader(open(path, encoding="utf-8"), delimiter="\t"):
            tree = head if r["tree"] == "head" and head else r["tree"]
            if tree not in TREES:
                continue  # stale rows, graph.py (not a mutmut module), trees not given
            mod, mangled, n = split(r["mutant"])
            for k in carry(tree, mod, mangled, n):
                name = f"{mod}.{mangled}__mutmut_{k}"
                tests = r["tests"].replace("tests/", "")
                where = f"{path} ({tree}:{n})"
                if r["verdict"] == "killed":
                    kills[name] = f"GPU pass {where}: killed by {tests} ({r['summary']})"
                    other.pop(name, None)
                elif name not in kills:
                    other[name] = f"GPU pass {where}: {r['verdict']} with {tests}"
    return kills, other


# ------------------------------------------------------------------ main
def main() -> int:
    global TREES
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", required=True, help="the mutmut tree's `mutants` folder (its .meta files are read)")
    ap.add_argument(
        "--from",
        dest="trees",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an older mutant tree ROWS or a table numbers in (repeatable)",
    )
    ap.add_argument(
        "--last",
        action="append",
        default=[],
        metavar="TABLE=NAME",
        help="an earlier verdict table (this script's --out) and the tree it was of (repeatable)",
    )
    ap.add_argument(
        "--ledger",
        action="append",
        default=[],
        metavar="TAG=PATH=HEAD",
        help="a helper's ledger file to parse, and the tree its HEAD sections number in (repeatable)",
    )
    ap.add_argument(
        "--gpu",
        action="append",
        default=[],
        metavar="TABLE[=NAME]",
        help="gpu_run.py's gpu_mut.tsv, oldest first; NAME is the tree its `head` rows mean",
    )
    ap.add_argument("--quick", action="append", default=[], help="quick_pass.py --out tables (repeatable)")
    ap.add_argument("--commit", default="", help="the commit the tree was generated from (for the text)")
    ap.add_argument("--out", required=True, help="the verdict table (tsv) to write")
    ap.add_argument("--md", default=None, help="write the counts between the markers of this markdown file")
    args = ap.parse_args()

    TREES = {TARGET: args.tree}
    for spec in args.trees:
        k, _, v = spec.partition("=")
        TREES[k] = v
    missing = [k for k in {r[0] for r in ROWS} if k not in TREES]
    if missing:
        print(f"  trees not given (their ROWS cannot carry): {', '.join(sorted(missing))}", file=sys.stderr)

    status = read_meta(args.tree)
    quick: dict[str, tuple[str, str]] = {}
    for qf in args.quick:
        if not os.path.exists(qf):
            print(f"  no quick-pass table {qf}", file=sys.stderr)
            continue
        for r in csv.reader(open(qf, encoding="utf-8"), delimiter="\t"):
            if len(r) > 1:
                quick[r[0]] = (r[1], r[3] if len(r) > 3 else "?")

    # ---- the ledgers: mutant -> (verdict, evidence); later rows override earlier ones
    verdict: dict[str, tuple[str, str]] = {}
    source: dict[str, str] = {}
    problems: list[str] = []
    helper_rows: list[tuple] = []
    for spec in args.ledger:
        tag, path, head = spec.split("=")
        rows = parse_ledger(tag, path, head)
        helper_rows += rows
        print(f"{tag}: {len(rows)} parsed row groups from {path}", file=sys.stderr)
    ordered = ROWS[:N_EARLY] + helper_rows + ROWS[N_EARLY:]
    n_helper = len(helper_rows)
    for i, (tree, mod, mangled, spec, v, ev) in enumerate(ordered):
        tag = ev.split(":")[0] if N_EARLY <= i < N_EARLY + n_helper else "rows"
        if tree not in TREES:
            continue
        for n in rng(spec):
            targets = carry(tree, mod, mangled, n)
            if not targets:
                problems.append(f"does not carry: {tree} {mangled} {n} ({v}; {ev[:60]})")
                continue
            for k in targets:
                name = f"{mod}.{mangled}__mutmut_{k}"
                evn = ev + ("" if tree == TARGET else f" [{tree}:{n}, same orig and edit]")
                before = verdict.get(name)
                if before and before[0] == v and before[1].split(":")[0] == evn.split(":")[0]:
                    continue  # the same ledger saying it again: keep its first words
                if before and before[0] != v and tag != "rows" and source.get(name, "rows") not in ("rows", tag):
                    # two helper ledgers disagree: the verdict that claims a detectable change wins
                    rank = {KN: 0, KX: 0, KI: 0, KT: 0, KG: 0, GPU: 1, EQ: 2, UN: 3}
                    keep, drop = (before, (v, evn)) if rank[before[0]] <= rank[v] else ((v, evn), before)
                    problems.append(
                        f"ledgers disagree on {name.removeprefix('sdesolve.')}: {keep[0]} kept over {drop[0]}"
                    )
                    verdict[name] = (keep[0], f"{keep[1]} || disagrees: {drop[1][:200]}")
                    source[name] = tag
                    continue
                verdict[name] = (v, evn)
                source[name] = tag

    # ---- earlier tables fill what the ledgers leave unsorted (carried by edit); their trees' tool results noted
    killed_before: dict[str, str] = {}
    for spec in args.last:
        path, _, tree = spec.partition("=")
        old_meta = read_meta(TREES[tree]) if tree in TREES else {}
        for name, code in old_meta.items():
            if code == 1:
                mod, mangled, n = split(name)
                for k in carry(tree, mod, mangled, n):
                    killed_before[f"{mod}.{mangled}__mutmut_{k}"] = f"killed by the tool in tree {tree} ({tree}:{n})"
        for r in csv.DictReader(open(path, encoding="utf-8"), delimiter="\t"):
            if r["verdict"] in (UN, AW):
                continue
            mod, mangled, n = split(r["name"])
            targets = carry(tree, mod, mangled, n)
            if not targets and status.get(r["name"], 1) != 1:
                problems.append(
                    f"table row does not carry: {tree} {r['name'].removeprefix('sdesolve.')} ({r['verdict']})"
                )
            for k in targets:
                name = f"{mod}.{mangled}__mutmut_{k}"
                ev = f"{os.path.basename(path)}: {r['evidence']}" + ("" if k == n else f" [{tree}:{n}]")
                before = verdict.get(name)
                if before is None or before[0] == UN:
                    verdict[name] = (r["verdict"], ev)
                elif before[0] != r["verdict"] and r["verdict"] != KG:  # GPU kills are re-read from --gpu below
                    problems.append(
                        f"{name.removeprefix('sdesolve.')}: the ledgers say {before[0]}, "
                        f"{os.path.basename(path)} said {r['verdict']} (the ledgers kept)"
                    )

    kills, gpu_other = gpu_results(args.gpu)
    odd = sorted(n for n, (v, _) in verdict.items() if v in (EQ, GPU) and status.get(n) == 1)
    for n in odd:
        problems.append(f"tool killed what a ledger calls {verdict[n][0]}: {n.removeprefix('sdesolve.')}")

    rows = []
    for name, code in status.items():
        if code == 1:
            continue
        tool = STATUS.get(code, f"exit code {code}")
        q = quick.get(name)
        if code is None and q:
            tool += f"; quick pass: {q[0]} ({q[1]} tests)"
        v, ev = verdict.get(name, (UN, ""))
        if name in kills:
            if v == EQ:
                problems.append(f"conflict: {name} equivalent in a ledger, killed on the GPU: {kills[name]}")
            elif v in (GPU, UN):
                v, ev = KG, kills[name] + (f"; {ev}" if ev else "")
        elif v == GPU and name in gpu_other:
            ev = f"{ev}; {gpu_other[name]}"
        if v == UN and code is None:
            v = AW
        if v in (UN, AW) and not ev:
            ev = "no ledger row"
            if code == 33:
                ev += "; no test of mutmut's selection calls the function"
        if v in (UN, AW) and name in killed_before:
            ev += f"; {killed_before[name]}"
        rows.append((name, tool, v, ev))

    rows.sort()
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("name\ttool status\tverdict\tevidence\n")
        for r in rows:
            f.write("\t".join(x.replace("\t", " ").replace("\n", " ") for x in r) + "\n")

    # ---- counts over every mutant of the tree, by module
    by = {r[0]: r[2] for r in rows}
    cols = ["mutants", "mutmut", "quick", KN, KX, KI, KG, KT, EQ, GPU, UN, AW]
    table: dict[str, Counter] = defaultdict(Counter)
    tool_status: Counter = Counter()
    for name, code in status.items():
        c = table[name.rpartition(".x")[0]]
        c["mutants"] += 1
        tool_status[STATUS.get(code, str(code))] += 1
        if code == 1:
            c["quick" if quick.get(name, ("",))[0] in ("killed", "collection-error") else "mutmut"] += 1
        else:
            c[by[name]] += 1
    total: Counter = Counter()
    for c in table.values():
        total.update(c)
    heads = [
        "module",
        "mutants",
        "killed: mutmut",
        "killed: quick pass",
        "killed: new test",
        "killed: existing test outside the selection",
        "killed: import time",
        "killed: GPU pass",
        "killed: timeout",
        "equivalent",
        "GPU-only, not yet killed",
        "unsorted",
        "not run yet",
    ]
    lines = ["| " + " | ".join(heads) + " |", "| --- |" + " ---: |" * (len(heads) - 1)]
    for mod in sorted(table) + ["all"]:
        c = total if mod == "all" else table[mod]
        cells = [str(c[k]) for k in cols]
        if mod == "all":
            lines.append("| **all** | " + " | ".join(f"**{x}**" for x in cells) + " |")
        else:
            lines.append(f"| `{mod.removeprefix('sdesolve.')}` | " + " | ".join(cells) + " |")
    n_all, n_eq, n_aw = total["mutants"], total[EQ], total[AW]
    tool_k = total["mutmut"] + total["quick"]
    killed = tool_k + sum(total[k] for k in (KN, KX, KI, KG, KT))
    rate = (
        f"The tool's own (mutmut and the quick pass in this tree, kills carried by `merge_meta.py` included): "
        f"**{tool_k} of {n_all} killed ({100 * tool_k / n_all:.1f} %)**; its statuses: "
        + ", ".join(f"{k} {v}" for k, v in tool_status.most_common())
        + ".\n\n"
        f"With the verdicts: killed **{killed} of {n_all} ({100 * killed / n_all:.1f} %)**; of the "
        f"{n_all - n_eq} not equivalent: **{100 * killed / (n_all - n_eq):.1f} %**. Leaving out the {n_aw} not "
        f"run yet: {100 * killed / (n_all - n_aw):.1f} %, {100 * killed / (n_all - n_aw - n_eq):.1f} % of those "
        "not equivalent."
    )
    counts = "\n".join(lines) + "\n\n" + rate + "\n"
    counts += (
        f"\nTable rows: {len(rows)} ("
        + ", ".join(f"{k}: {v}" for k, v in Counter(r[2] for r in rows).most_common())
        + ").\n"
    )
    un = [r for r in rows if r[2] == UN]
    if un:
        counts += (
            "\nUnsorted:\n\n"
            + "\n".join(f"- `{r[0].removeprefix('sdesolve.')}` ({r[1]}): {r[3][:160]}" for r in un)
            + "\n"
        )
    n_gpu_tool = sum(1 for p in problems if p.startswith(f"tool killed what a ledger calls {GPU}"))
    if n_gpu_tool:
        counts += (
            f"\nThe tool killed {n_gpu_tool} mutants that a ledger calls GPU-only (a CPU test of this tree's "
            "selection reaches them now, e.g. the stand-in capture of `tests/test_likelihood_graph.py`).\n"
        )
    groups = [
        ("ledgers disagree on ", "Helper ledgers that disagree (the verdict kept first)"),
        (f"tool killed what a ledger calls {EQ}: ", "The tool killed these, which a ledger calls equivalent"),
        ("conflict: ", "GPU kills of mutants a ledger calls equivalent"),
    ]
    in_table = {r[0].removeprefix("sdesolve.") for r in rows}
    for prefix, title in groups:
        ps = [p[len(prefix) :] for p in problems if p.startswith(prefix)]
        if prefix == "ledgers disagree on ":  # only the table's mutants (not those the tool has killed since)
            ps = [p for p in ps if p.split(":")[0] in in_table]
        if ps:
            counts += f"\n{title}:\n\n" + "\n".join(f"- {p}" for p in ps) + "\n"
    print(counts)
    for p in problems:
        print("  note:", p, file=sys.stderr)
    if args.md:
        text = open(args.md, encoding="utf-8").read() if os.path.exists(args.md) else ""
        a, b = "<!-- counts: verdicts.py -->", "<!-- end counts -->"
        block = f"{a}\n{counts}{b}"
        text = (
            re.sub(re.escape(a) + ".*?" + re.escape(b), lambda _: block, text, flags=re.S)
            if a in text
            else (text + "\n" + block + "\n")
        )
        with open(args.md, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
