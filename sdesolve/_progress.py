"""Progress bars for long calls: tqdm where it is installed, else a minimal bar on stderr.

Two helpers, one per kind of work:

* :func:`progress_bar` counts items (batches, samples, repeats) towards a known total;
* :class:`SolveProgress` follows one ODE solve from ``u0`` to ``u1``: it wraps the solve's
  right-hand side ``func(u, y)`` and shows the fraction of the interval reached (in per mille)
  and the number of evaluations so far.

Reading the time of an evaluation is a host operation: the bar reads it only from Python
numbers and CPU tensors, and otherwise counts evaluations alone, so a progress bar never
synchronizes a GPU.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from torch import Tensor

__all__ = ["SolveProgress", "progress_bar"]


class _StderrBar:
    """The fallback bar without tqdm: one line on stderr, rewritten at most every 0.2 s."""

    def __init__(self, total: int | None, desc: str, unit: str, file: TextIO | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.postfix = 0, ""
        self.file = sys.stderr if file is None else file
        self._last = 0.0
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            self._draw()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def _draw(self, end: str = "\r") -> None:
        if self.total:
            count = f"{100.0 * self.n / self.total:3.0f}% ({self.n}/{self.total} {self.unit})"
        else:
            count = f"{self.n} {self.unit}"
        extra = f", {self.postfix}" if self.postfix else ""
        self.file.write(f"{self.desc}: {count}{extra}{end}")
        self.file.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._draw(end="\n")

    def __enter__(self) -> _StderrBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoBar:
    """A disabled bar: every method does nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(
    total: int | None = None, *, desc: str, unit: str = "it", enabled: bool = True, bar_format: str | None = None
) -> Any:
    """A progress bar with ``update(n)``, ``set_postfix_str(text)``, ``close()`` (and ``with``).

    Args:
        total: the number of units of the whole work (None: unknown, the bar only counts).
        desc: the label in front of the bar.
        unit: what one unit is ("batch", "sample", "nfe", ...).
        enabled: False gives a bar that does nothing (so callers need no ``if``).
        bar_format: tqdm's ``bar_format`` (the fallback bar ignores it).

    Returns:
        ``tqdm.auto.tqdm`` where tqdm is installed, else a one-line bar on stderr.
    """
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional for this module
        return _StderrBar(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, bar_format=bar_format)


_SOLVE_FORMAT = "{desc}: {percentage:3.0f}% of the time interval|{bar}| {elapsed}<{remaining}{postfix}"


class SolveProgress:
    """Follows an ODE solve from ``u0`` to ``u1`` through its right-hand side.

    Usage::

        with SolveProgress(enabled, "log_likelihood") as bar:
            func = bar.track(func, u0, u1)
            ...solve with func...

    The bar counts per mille of ``[u0, u1]`` reached (the largest time evaluated so far; an
    adaptive solver's rejected trial steps never move it back; with per-sample times, the
    slowest sample's) and shows the evaluations so far.
    After the ``with`` block the wrapped function still works and no longer touches the bar (an
    adjoint backward pass evaluates it again).
    """

    RESOLUTION = 1000

    def __init__(self, enabled: bool, desc: str):
        self.enabled = bool(enabled)
        self.desc = desc
        self.nfe = 0
        self._bar: Any = None
        self._done = 0

    def __enter__(self) -> SolveProgress:
        if self.enabled:
            self._bar = progress_bar(self.RESOLUTION, desc=self.desc, unit="\u2030", bar_format=_SOLVE_FORMAT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            if exc[0] is None and self._done < self.RESOLUTION:
                self._bar.update(self.RESOLUTION - self._done)
                self._done = self.RESOLUTION
            self._bar.close()
            self._bar = None

    def _advance(self, u: Any, u0: float, u1: float) -> None:
        self.nfe += 1
        bar = self._bar
        if bar is None:
            return
        if isinstance(u, Tensor):
            if u.device.type != "cpu" or u.numel() == 0:  # reading it would synchronize a device
                bar.set_postfix_str(f"nfe={self.nfe}", refresh=False)
                return
            # per-sample times (one solve per sample): the slowest sample's progress
            u = (u.min() if u1 >= u0 else u.max()).item()
        frac = (float(u) - u0) / (u1 - u0) if u1 != u0 else 1.0
        done = min(self.RESOLUTION, max(0, int(frac * self.RESOLUTION + 1e-9)))
        if done > self._done:
            bar.update(done - self._done)
            self._done = done
        bar.set_postfix_str(f"nfe={self.nfe}", refresh=False)

    def track(self, func: Callable[[Any, Any], Any], u0: float, u1: float) -> Callable[[Any, Any], Any]:
        """``func(u, y)`` that also moves the bar (a no-op once the ``with`` block is left)."""
        u0, u1 = float(u0), float(u1)

        def tracked(u: Any, y: Any) -> Any:
            if self._bar is not None:
                self._advance(u, u0, u1)
            return func(u, y)

        return tracked
