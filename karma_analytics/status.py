"""The live state of a collection run, shared by the runner and every progress display.

The runner (:mod:`karma_analytics.runner`) is the only writer of :class:`CollectorStatus`;
displays (:mod:`karma_analytics.progress`) and the notebook handle read it. Keeping it here, below
both, is what lets them import it without importing each other.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

__all__ = ["CollectorStatus", "RunState"]


class RunState(enum.StrEnum):
    """Where a run is. A ``StrEnum``: ``status.state == "streaming"`` reads naturally.

    Transitions: STARTING -> STREAMING <-> RECONNECTING -> STOPPING -> DONE | STOPPED; any live
    state -> FAILED (a fatal error) or STOPPED (cancelled).
    """

    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    STOPPING = "stopping"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        """Whether the run is over."""
        return self in (RunState.DONE, RunState.STOPPED, RunState.FAILED)


@dataclass
class CollectorStatus:
    """Live figures of a running collector (read by displays and the notebook handle).

    Attributes:
        state: where the run is (:class:`RunState`).
        path: dataset root.
        source: the protocol (``"dfuse"``, ``"hyperion"``, ``"ship"``).
        endpoint: the endpoint of the current (or last) connection, without credentials.
        chain_id: the chain being collected, once known.
        start_block: the block this run started at (``None`` until known).
        next_block: first block not yet durably committed (``None`` until known).
        stop_block: the requested last block, or ``None``.
        rows: rows committed by this run.
        total_rows: rows in the dataset (sidecar count).
        rejects: rejected (unparsable) transfers kept by this run.
        commits: commits made by this run.
        reconnects: stream restarts (lost connection, stall, transient server error).
        attempt: failed connection attempts in a row (0 while streaming).
        last_error: the last transient fault (redacted), or ``None``.
        last_block_time: ``block_time`` (ms, UTC) of the newest committed block, or ``None``.
        error: the error that ended the run (redacted text), or ``None``.
    """

    state: RunState = RunState.STARTING
    path: str = ""
    source: str = ""
    endpoint: str = ""
    chain_id: str | None = None
    start_block: int | None = None
    next_block: int | None = None
    stop_block: int | None = None
    rows: int = 0
    total_rows: int = 0
    rejects: int = 0
    commits: int = 0
    reconnects: int = 0
    attempt: int = 0
    last_error: str | None = None
    last_block_time: int | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def blocks(self) -> int:
        """Blocks committed by this run."""
        if self.start_block is None or self.next_block is None:
            return 0
        return max(0, self.next_block - self.start_block)

    @property
    def seconds(self) -> float:
        """Seconds since the run started (until it ended)."""
        return (self.ended or time.monotonic()) - self.started

    def rows_per_second(self) -> float:
        """Average committed rows per second over this run."""
        seconds = self.seconds
        return self.rows / seconds if seconds > 0 else 0.0

    @property
    def headline(self) -> str:
        """The state as people read it: ``"reconnecting (attempt 3): connection refused"``."""
        if self.state == RunState.RECONNECTING and self.attempt:
            text = f"reconnecting (attempt {self.attempt})"
            return f"{text}: {self.last_error}" if self.last_error else text
        return str(self.state)
