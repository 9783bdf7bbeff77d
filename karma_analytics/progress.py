"""Progress displays for a running collector: a tqdm bar, periodic log lines, or a notebook line.

The collector never draws anything itself; it keeps a :class:`~karma_analytics.status.CollectorStatus`
up to date and a display reads it a few times per second. Three displays:

* :class:`BarDisplay` — a ``tqdm`` bar on a terminal: blocks toward the stop block (or, without a
  stop block, the lag of the last committed block behind the wall clock), rows committed, rows/s
  and reconnects.
* :class:`LogDisplay` — one ``INFO`` log line every ``interval`` seconds (not a terminal, or
  ``--quiet``): machine logs stay readable.
* :class:`NotebookDisplay` — one text line in a Jupyter cell output, replaced in place through an
  IPython display handle (no ipywidgets needed).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Protocol

from karma_analytics.status import CollectorStatus, RunState

__all__ = ["BarDisplay", "Display", "LogDisplay", "NotebookDisplay", "describe", "format_lag"]

logger = logging.getLogger(__name__)


class Display(Protocol):
    """What the collector's progress loop calls."""

    def update(self, status: CollectorStatus) -> None: ...

    def close(self, status: CollectorStatus) -> None: ...


def format_lag(seconds: float) -> str:
    """Render a lag in seconds as ``"4s"``, ``"3m12s"`` or ``"2h05m"``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400 * 2:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def _lag_seconds(status: CollectorStatus) -> float | None:
    # dfuse's action stream carries no head number; the age of the newest committed block
    # is the honest "how far behind live" figure (blocks are ~0.5 s apart on EOS).
    if status.last_block_time is None:
        return None
    return time.time() - status.last_block_time / 1000.0


def describe(status: CollectorStatus) -> str:
    """One human line: state, block position, rows, rate, reconnects (no credentials in it)."""
    parts = [status.headline]
    if status.next_block is not None:
        if status.stop_block is not None:
            parts.append(f"block {status.next_block:,}/{status.stop_block + 1:,}")
        else:
            parts.append(f"block {status.next_block:,}")
    lag = _lag_seconds(status)
    if lag is not None and status.stop_block is None:
        parts.append(f"lag {format_lag(lag)}")
    parts.append(f"rows {status.rows:,}")
    parts.append(f"{status.rows_per_second():,.0f} rows/s")
    parts.append(f"reconnects {status.reconnects}")
    if status.rejects:
        parts.append(f"rejects {status.rejects}")
    if status.error:
        parts.append(f"error: {status.error}")
    return " | ".join(parts)


class LogDisplay:
    """Log one INFO line every ``interval`` seconds (and a last one on close)."""

    def __init__(self, interval: float = 10.0, *, log: logging.Logger | None = None) -> None:
        self.interval = interval
        self._log = log or logger
        self._last = time.monotonic()

    def update(self, status: CollectorStatus) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._log.info("%s", describe(status))

    def close(self, status: CollectorStatus) -> None:
        if status.state != RunState.FAILED:  # a failure is reported once, by whoever catches it
            self._log.info("%s", describe(status))


class BarDisplay:
    """A tqdm bar: blocks toward the stop block, or block position and lag without one."""

    def __init__(self, *, file: Any = None) -> None:
        self._file = file
        self._bar: Any = None
        self._base: int | None = None

    def _open(self, status: CollectorStatus) -> None:
        from tqdm import tqdm

        # Count from where this run started, even when the first draw comes late.
        self._base = status.start_block if status.start_block is not None else status.next_block
        self._base = self._base or 0
        total = None
        if status.stop_block is not None:
            total = max(0, status.stop_block + 1 - self._base)
        # A pseudo-terminal may report a 0x0 size (script, CI runners); tqdm then hides the
        # bar (it counts as "below the screen"), so fall back to 100x24.
        try:
            size = os.get_terminal_size((self._file or sys.stderr).fileno())
        except (OSError, ValueError, AttributeError):
            size = os.terminal_size((0, 0))
        sized = size.columns > 0 and size.lines > 0
        self._bar = tqdm(
            total=total,
            initial=0,
            unit="blk",
            unit_scale=True,
            dynamic_ncols=sized,
            ncols=None if sized else 100,
            nrows=None if sized else 24,
            file=self._file,
            desc="collect",
            leave=True,
        )

    def update(self, status: CollectorStatus) -> None:
        if status.next_block is None:
            return
        if self._bar is None:
            self._open(status)
        done = max(0, status.next_block - (self._base or 0))
        if self._bar.total is not None:
            done = min(done, self._bar.total)
        self._bar.n = done
        postfix = {
            **({} if status.state == RunState.STREAMING else {"state": status.headline}),
            "rows": f"{status.rows:,}",
            "rows/s": f"{status.rows_per_second():,.0f}",
            "reconnects": status.reconnects,
        }
        lag = _lag_seconds(status)
        if lag is not None and status.stop_block is None:
            postfix["lag"] = format_lag(lag)
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()

    def close(self, status: CollectorStatus) -> None:
        self.update(status)  # the final state, even for a run shorter than one tick
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class NotebookDisplay:
    """One text line in the current Jupyter cell output, replaced in place.

    Uses ``IPython.display.display(..., display_id=True)`` so it needs no ipywidgets; outside
    IPython it prints nothing (the handle's ``status`` still works).
    """

    def __init__(self, *, interval: float = 1.0) -> None:
        self.interval = interval
        self._handle: Any = None
        self._last = 0.0
        self._text = ""

    def _show(self, text: str) -> None:
        try:
            from IPython.display import Pretty, display
        except ImportError:  # not in IPython: nothing to draw into
            return
        if self._handle is None:
            self._handle = display(Pretty(text), display_id=True)
        elif self._handle is not None:
            self._handle.update(Pretty(text))

    def update(self, status: CollectorStatus) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        text = "karma collector: " + describe(status)
        if text != self._text:
            self._text = text
            self._show(text)

    def close(self, status: CollectorStatus) -> None:
        self._last = 0.0
        self._text = ""
        self.update(status)
