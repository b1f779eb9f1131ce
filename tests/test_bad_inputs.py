"""Bad input gets a clear error: the catalogue of ``tests/catalogue/`` run as one parametrized test.

Each case asserts the error type (TypeError for a wrong type, ValueError for a wrong value,
or a documented subclass) and that the message names the argument and what was expected.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import catalogue  # noqa: E402


def _all_cases():
    cases = []
    for mod in sorted(pkgutil.iter_modules(catalogue.__path__), key=lambda m: m.name):
        cases.extend(importlib.import_module(f"catalogue.{mod.name}").CASES)
    return cases


CASES = _all_cases()


def test_catalogue_ids_are_unique_and_large():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case):
    # nothing may hang: a case that runs for more than 60 s fails
    if hasattr(signal, "SIGALRM"):

        def _timeout(signum, frame):
            raise TimeoutError(f"{case.id} ran for more than 60 s")

        old = signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(60)
    try:
        with pytest.raises(case.error) as info:
            case.call()
    finally:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    msg = str(info.value)
    assert re.search(case.match, msg), f"{case.id}: message {msg!r} does not match {case.match!r}"
