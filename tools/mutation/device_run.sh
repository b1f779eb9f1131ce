# A mutation run on the GPU host (16 cores) over a tree made here (see README.md). From the project root, with
# the tree's source as .whl/tree_src.tar.gz (a folder "tree/" holding the project at HEAD, its pyproject.toml
# as the run needs it) and its meta + stats as .whl/tree_meta.tgz (mutants/**/*.meta, mutants/mutmut-stats.json):
#   MM_LIMIT=500 bash tools/mutation/device_run.sh 'sdesolve.model.*' ...
# MM_BASELINE=1 also runs the selected tests once on the unmutated code, beside the mutants (baseline.txt); with
# MM_BASELINE_TESTS="tests/a.py tests/b.py" only those (the files changed since a full baseline passed there).
# MM_QUICK=NAMES runs quick_pass.py over the mutants listed in the file NAMES first (MM_QUICK_LIMIT seconds, every
# core but one), records its kills, and leaves the rest to mutmut (quick.tsv). A tree_src.tar.gz that holds
# tree/mutants (made here, newer than the sources) spares the device mutmut's generation.
# Brings back $OUT/results.txt, $OUT/mm.log and $OUT/resume.tgz (the meta files: untar them over the tree here).
. .whl/setup.sh || exit 1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
R=$PWD
tar -xzf .whl/tree_src.tar.gz -C /tmp && cd /tmp/tree || exit 1
tar -xzf "$R/.whl/tree_meta.tgz"
mkdir -p /tmp/tree_orig && cp -r /tmp/tree/sdesolve /tmp/tree_orig/  # what the tests' subprocesses import
if [ -n "$MM_BASELINE" ]; then
  mkdir -p /tmp/base && tar -xzf "$R/.whl/tree_src.tar.gz" -C /tmp/base
  (cd /tmp/base/tree && PYTHONPATH=/tmp/site:/tmp/base/tree timeout "${MM_LIMIT:-500}" python -m pytest -q -p no:cacheprovider -rf \
     -m "not slow and not gpu" --ignore=tests/test_notebooks.py --ignore=tests/test_compile.py \
     --ignore=tests/test_distributed.py "--deselect=tests/test_docs.py::test_block_runs[docs/benchmarks.md:59]" \
     ${MM_BASELINE_TESTS:-tests/} > "$OUT/baseline.txt" 2>&1) &
fi
export PYTHONPATH=/tmp/site:/tmp/tree_orig
if [ -n "$MM_QUICK" ]; then
  timeout $(( ${MM_QUICK_LIMIT:-200} + 150 )) python "$R/tools/mutation/quick_pass.py" --jobs $(( ${MM_CHILDREN:-16} - 1 )) --budget 2 \
    --files 3 --limit "${MM_QUICK_LIMIT:-200}" --names "$R/$MM_QUICK" --out "$OUT/quick.tsv" --write > "$OUT/quick.log" 2>&1
  tail -1 "$OUT/quick.log"
fi
START=$(date +%s)
timeout "${MM_LIMIT:-500}" python "$R/tools/mutation/noclean.py" run --max-children "${MM_CHILDREN:-16}" "$@" > "$OUT/mm.log" 2>&1
echo "mutmut rc=$? after $(( $(date +%s) - START )) s" >> "$OUT/mm.log"
timeout 60 mutmut results --all true > "$OUT/results.txt" 2>&1
tar -czf "$OUT/resume.tgz" $(find mutants -name "*.meta") 2>/dev/null
awk -F': ' '{print $2}' "$OUT/results.txt" | sort | uniq -c
wait
