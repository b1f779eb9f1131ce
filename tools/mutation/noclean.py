"""``mutmut`` without its clean-test pass (``python tools/mutation/noclean.py run ...``).

Before the mutants, ``mutmut run`` runs every selected test once, unmutated, in one process: five minutes of
the GPU host's time for the whole default suite. Skip it only where a baseline of the same selection on the
same machine has passed (``MM_BASELINE=1 bash tools/mutation/device_run.sh``): a test that fails unmutated
would otherwise count as a kill for every mutant it covers.
"""

import sys

import mutmut.workers.isolation as isolation
from mutmut.__main__ import cli

for _name in dir(isolation):
    _cls = getattr(isolation, _name)
    if isinstance(_cls, type) and "run_clean_tests" in vars(_cls):
        _cls.run_clean_tests = lambda self, tests: 0  # type: ignore[method-assign]
sys.argv[0] = "mutmut"
cli()
