"""The bad-input catalogue: every public entry point, fed bad or edge input.

Each area of the package has a module here with a list ``CASES`` of :class:`Case`; the test
``tests/test_bad_inputs.py`` runs them all. A case calls one entry point with one bad argument
and states the error type and a regular expression the message must match; the expression must
name the argument and what was expected (not only that something failed).

Add cases with every new entry point or argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str  #: unique, "area-entry-what", e.g. "ode-rtol-string"
    call: Callable[[], object]  #: calls the entry point with the bad input
    error: type[BaseException]  #: the expected error type (TypeError for a wrong type, ValueError for a value)
    match: str  #: a regular expression (re.search) the message must match: the argument and what was expected
