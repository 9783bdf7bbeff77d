"""The commit engine: a pure, sans-I/O state machine that decides what to commit and when.

The engine turns stream events into storage and connection actions. It owns no socket, file,
clock or thread: the runner feeds each event with the current time through
:meth:`Engine.handle` and executes the actions it returns, in order. The same events in the
same order always give the same actions, so any failing run can be replayed.

Terms (DESIGN.md "The commit protocol"): ``next_block`` is the first block not yet durably
committed (dfuse start blocks are inclusive, protocol §4.1); the **safe point** S is a block
number such that every matching action of every block < S has been received on the current
stream. The rules, with the hole of the reference pattern each one closes:

* an action of block b > the open block makes S = b: the stream is ordered by block (§4.3);
* ``progress(P)`` makes S = P + 1: progress follows all of P's actions (§4.2; hole 1);
* the first ``listening`` of a fresh dataset is committed with zero rows before any data, so a
  drop before the first data commit never resumes at a new head (hole 2);
* rows of complete blocks wait in memory until the flush policy fires (``flush_rows`` items,
  ``flush_seconds`` age of the oldest, or a stop); a flush writes them and moves the durable
  ``next_block`` to S. With nothing to write, a zero-row commit only advances the cursor, at
  most once per ``min_commit_interval``;
* a lost connection drops the open block's rows *before* :class:`Restart` is returned (hole
  6); rows of complete blocks stay for the next flush. Frames that arrive before the new
  stream's ``listening`` belong to the old stream and are ignored (``listening`` is always the
  first frame of a stream, §3.1);
* safety net: an action whose ``global_sequence`` is not above every committed or pending one
  is dropped and counted (with ``irreversible_only`` it only increases along the stream);
* at most one commit is in flight; the durable cursor moves only on :class:`WriteSucceeded`,
  so a crash at any point resumes from the store's sidecar without loss or duplicates (hole 4).

Protocol violations (an action below the safe point, the same block number with another block
id, progress going backwards, a second ``listening`` without a restart) are faults: the open
block is dropped and the stream restarts at S, which the server re-sends from scratch. A second
fault at the same safe point means the server repeats itself: the engine then stops with
``StopReason.PROTOCOL_ERROR`` after flushing the complete blocks. A ``listening`` whose
``next_block`` is not the requested restart point stops the same way (blocks would be skipped
or repeated).

States and transitions (S = safe point; "flush" = the flush policy, which runs after every
event in every state but STOPPED; in STOPPING it writes what is complete, then emits Stop)::

    state      event                            next state  actions
    ---------  -------------------------------  ----------  ----------------------------------
    AWAITING   Listening(n), fresh dataset      STREAMING   WriteCommit(no rows, next_block=n)
    AWAITING   Listening(n), n == S             STREAMING   flush
    AWAITING   Listening(n), n != S             STOPPING    Stop(PROTOCOL_ERROR) after flush
    AWAITING   ActionReceived, Progress         AWAITING    none: a frame of the old stream
    STREAMING  ActionReceived, Progress         STREAMING   flush
    STREAMING  ... moving S above stop_block    STOPPING    Stop(STOP_BLOCK) after flush
    STREAMING  a violation (Listening is one)   AWAITING    drop open block, Restart(S)
    STREAMING  a repeat violation at the same S STOPPING    Stop(PROTOCOL_ERROR) after flush
    live       ConnectionLost                   AWAITING    drop open block, Restart(S)
    live       StopRequested                    STOPPING    Stop(REQUESTED) after flush
    STOPPING   stream events, StopRequested     STOPPING    none
    running    Tick, WriteSucceeded             unchanged   flush
    running    WriteFailed                      STOPPED     Stop(WRITE_FAILED, error)
    STOPPED    anything                         STOPPED     none

AWAITING is AWAITING_LISTENING; live is AWAITING or STREAMING; running is any state but
STOPPED. ``WriteSucceeded`` or ``WriteFailed`` for a commit that is not in flight is local
misuse: it raises :class:`~karma_analytics.exceptions.UsageError` in every state.

Driving the engine (the runner's duties)::

    engine = Engine(next_block=cursor.next_block if cursor else None, ...)
    execute(engine.handle(Tick(), now))     # Stop at once if the stop block is already done
    open the stream at start_block = engine.safe_point (None: the configured start)
    then for each source event, and a Tick() about every second:
        execute(engine.handle(event, now))
        (or, for the events of one socket read: execute(engine.handle_batch(events, now)))
    where execute() runs the actions in order:
        WriteCommit -> store.commit(...) (in a worker is fine; keep feeding stream events),
                       then feed WriteSucceeded(commit_id) or WriteFailed(commit_id, message)
        Restart(b)  -> stop reading the current stream and open a new one at start_block=b
                       (None: the configured start); frames already queued may still be fed
        Stop(r, e)  -> close the stream and finish (e is None for a clean stop)

The source maps frames to events: ``listening`` -> :class:`Listening`, a matching
``action_trace`` -> :class:`ActionReceived` (with a :class:`Reject` when it does not parse),
``progress`` -> :class:`Progress`; a closed socket, a stall or a transient server error ->
:class:`ConnectionLost`. A user interrupt is :class:`StopRequested`; keep feeding ``Tick`` and
write results until ``Stop``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .exceptions import UsageError
from .model import Transfer

__all__ = [
    "ActionReceived",
    "ConnectionLost",
    "Engine",
    "Event",
    "Listening",
    "Progress",
    "Reject",
    "Restart",
    "State",
    "Stop",
    "StopReason",
    "StopRequested",
    "Tick",
    "WriteCommit",
    "WriteFailed",
    "WriteSucceeded",
]

logger = logging.getLogger(__name__)


class State(enum.Enum):
    """Where the engine is; see the transition table in the module docstring."""

    AWAITING_LISTENING = "awaiting_listening"
    STREAMING = "streaming"
    STOPPING = "stopping"
    STOPPED = "stopped"


class StopReason(enum.StrEnum):
    """Why the engine emitted :class:`Stop` (values are the human text)."""

    STOP_BLOCK = "stop block reached"
    REQUESTED = "stop requested"
    WRITE_FAILED = "write failed"
    PROTOCOL_ERROR = "protocol error"


# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reject:
    """A matching action trace that failed to parse; committed with its block, never dropped.

    Attributes:
        block_num: the block of the trace.
        block_id: its block id (``""`` if it did not parse either).
        trx_id: the transaction id (``""`` if unknown).
        action_idx: ``action_ordinal - 1`` as in the record (``-1`` if unknown).
        global_sequence: ``None`` when it did not parse; then the duplicate net cannot apply.
        reason: why it was refused (a :class:`~karma_analytics.exceptions.ParseError` message).
        raw: the ``action_trace`` ``data`` object as JSON text.
    """

    block_num: int
    block_id: str
    trx_id: str
    action_idx: int
    global_sequence: int | None
    reason: str
    raw: str


# --- events (in) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listening:
    """The server's ``listening`` message: the stream starts at ``next_block`` (inclusive)."""

    next_block: int


# Not frozen: one is built per frame, and a frozen init costs ~1 us (bench_pipeline.py).
# Treat it as immutable all the same.
@dataclass(slots=True)
class ActionReceived:
    """One matching ``action_trace``.

    Exactly one of ``transfer`` and ``reject`` is normally set; with neither the action is a
    match that is not a row (e.g. a notification when ``receivers`` was widened): it still moves
    the safe point. Use :meth:`of_transfer` / :meth:`of_reject` to build one.

    Attributes:
        block_num: block number of the action.
        block_id: 64-hex block id.
        block_time: milliseconds since the Unix epoch (UTC), or ``None`` if unknown.
        global_sequence: the action's global sequence, or ``None`` if unknown.
        transfer: the parsed row.
        reject: the refused trace.
    """

    block_num: int
    block_id: str
    block_time: int | None
    global_sequence: int | None
    transfer: Transfer | None = None
    reject: Reject | None = None

    @classmethod
    def of_transfer(cls, transfer: Transfer) -> ActionReceived:
        """Wrap a parsed row."""
        return cls(
            transfer.block_num,
            transfer.block_id,
            transfer.block_time,
            transfer.global_sequence,
            transfer=transfer,
        )

    @classmethod
    def of_reject(cls, reject: Reject, block_time: int | None = None) -> ActionReceived:
        """Wrap a refused trace."""
        return cls(
            reject.block_num, reject.block_id, block_time, reject.global_sequence, reject=reject
        )


# Not frozen: one is built per frame, and a frozen init costs ~1 us (bench_pipeline.py).
# Treat it as immutable all the same.
@dataclass(slots=True)
class Progress:
    """The server's ``progress``: every matching action of blocks <= ``block_num`` was sent."""

    block_num: int
    block_id: str


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The stream ended (socket closed, stalled, server error); ``reason`` is for logs."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed (the time itself is the ``now`` argument of :meth:`Engine.handle`)."""


@dataclass(frozen=True, slots=True)
class WriteSucceeded:
    """The commit ``commit_id`` is durable (parts and sidecar written)."""

    commit_id: int


@dataclass(frozen=True, slots=True)
class WriteFailed:
    """The commit ``commit_id`` failed; the store's durable cursor did not move."""

    commit_id: int
    error: str


@dataclass(frozen=True, slots=True)
class StopRequested:
    """The user asked to stop: commit what is complete, then stop."""


Event = (
    Listening
    | ActionReceived
    | Progress
    | ConnectionLost
    | Tick
    | WriteSucceeded
    | WriteFailed
    | StopRequested
)


# --- actions (out) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteCommit:
    """Write ``rows`` and ``rejects`` and move the durable cursor to ``next_block``, atomically.

    Every row and reject lies in ``[first_block, next_block)``; ``first_block`` is the durable
    ``next_block`` before this commit (for the zero-row commit that records a fresh dataset's
    start, ``first_block == next_block``). Answer with :class:`WriteSucceeded` or
    :class:`WriteFailed` carrying ``commit_id``.

    Attributes:
        commit_id: 1, 2, ... per engine.
        rows: transfers in stream order (``global_sequence`` increasing).
        rejects: refused traces of the same blocks.
        first_block: first block covered by the commit.
        next_block: the new durable ``next_block`` (exclusive end of the range).
        last_block_num: the latest block below ``next_block`` whose id the engine saw (from an
            action or a progress); ``None`` if it saw none, then the store keeps its old value.
        last_block_id: that block's id, or ``None``.
        last_block_time: that block's time in ms, or ``None`` if only a progress named it.
        last_global_sequence: the highest global sequence committed so far (rows and rejects),
            or ``None`` if none is known.
    """

    commit_id: int
    rows: tuple[Transfer, ...]
    rejects: tuple[Reject, ...]
    first_block: int
    next_block: int
    last_block_num: int | None
    last_block_id: str | None
    last_block_time: int | None
    last_global_sequence: int | None


@dataclass(frozen=True, slots=True)
class Restart:
    """Discard the current stream and request a new one at ``start_block`` (inclusive).

    ``None`` means no start point is recorded yet (a fresh dataset before its first
    ``listening``): request the configured start again.
    """

    start_block: int | None


@dataclass(frozen=True, slots=True)
class Stop:
    """The run is over; no commit is in flight. ``error`` is ``None`` for a clean stop."""

    reason: StopReason
    error: str | None = None


Action = WriteCommit | Restart | Stop


# --- the engine ---------------------------------------------------------------------------------


class Engine:
    """The commit state machine (see the module docstring for the rules and the table).

    Args:
        next_block: the durable ``next_block`` from the store's sidecar, or ``None`` for a fresh
            dataset (the first ``listening`` is then recorded before any data).
        last_global_sequence: the sidecar's last committed global sequence, or ``None``.
        flush_rows: flush once this many rows and rejects of complete blocks are pending.
        flush_seconds: flush once the oldest pending row or reject is this old (seconds of the
            ``now`` clock, counted from its arrival).
        stop_block: last block to commit (inclusive), or ``None`` to run until stopped.
        min_commit_interval: minimum seconds between a commit and a following zero-row commit.

    Raises:
        UsageError: on a negative or zero size/interval or block number.
    """

    def __init__(
        self,
        *,
        next_block: int | None,
        last_global_sequence: int | None = None,
        flush_rows: int = 10_000,
        flush_seconds: float = 5.0,
        stop_block: int | None = None,
        min_commit_interval: float = 5.0,
    ) -> None:
        if flush_rows < 1:
            raise UsageError(f"flush_rows must be at least 1, got {flush_rows}")
        if flush_seconds < 0 or min_commit_interval < 0:
            raise UsageError("flush_seconds and min_commit_interval must be >= 0 seconds")
        if next_block is not None and next_block < 1:
            raise UsageError(f"next_block must be a positive block number, got {next_block}")
        if stop_block is not None and stop_block < 1:
            raise UsageError(f"stop_block must be a positive block number, got {stop_block}")
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._stop_block = stop_block
        self._min_commit_interval = min_commit_interval

        self._state = State.AWAITING_LISTENING
        self._durable = next_block
        self._safe = next_block
        self._stop_reason = StopReason.REQUESTED
        self._stop_error: str | None = None
        self._fault_at: int | None = None  # S at the last fault; a repeat there stops

        # The open block: its rows wait for proof that the block is complete.
        self._open_block: int | None = None
        self._open_id = ""
        self._open_time: int | None = None
        self._open_rows: list[Transfer] = []
        self._open_rejects: list[Reject] = []
        self._open_since: float | None = None
        self._open_gs: int | None = None

        # Complete blocks (< S) not yet handed to a commit.
        self._rows: list[Transfer] = []
        self._rejects: list[Reject] = []
        self._pending_since: float | None = None
        # Highest global sequence committed, in flight or complete-pending (never the open
        # block's: that one is dropped on a restart and must be accepted again).
        self._gs_complete = last_global_sequence
        self._last_complete: tuple[int, str, int | None] | None = None

        self._in_flight: WriteCommit | None = None
        self._next_commit_id = 1
        self._last_commit_at: float | None = None  # None until the first event

        self._committed_rows = 0
        self._committed_rejects = 0
        self._dropped_duplicates = 0
        self._ignored_events = 0
        self._faults = 0
        self._last_block_num: int | None = None

        if stop_block is not None and next_block is not None and next_block > stop_block:
            # Already done: the first handle() call (a Tick will do) returns Stop.
            self._begin_stop(StopReason.STOP_BLOCK)

    # --- read-only status -----------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current :class:`State`."""
        return self._state

    @property
    def safe_point(self) -> int | None:
        """S: every matching action of blocks < S was received (``None`` before a start)."""
        return self._safe

    @property
    def durable_next_block(self) -> int | None:
        """The ``next_block`` confirmed by the last :class:`WriteSucceeded` (or the initial)."""
        return self._durable

    @property
    def pending_rows(self) -> int:
        """Rows received but not yet handed to a commit (open block included)."""
        return len(self._rows) + len(self._open_rows)

    @property
    def pending_rejects(self) -> int:
        """Rejects received but not yet handed to a commit (open block included)."""
        return len(self._rejects) + len(self._open_rejects)

    @property
    def committed_rows(self) -> int:
        """Rows made durable by this engine (this run only; the sidecar keeps the total)."""
        return self._committed_rows

    @property
    def committed_rejects(self) -> int:
        """Rejects made durable by this engine (this run only)."""
        return self._committed_rejects

    @property
    def dropped_duplicates(self) -> int:
        """Actions dropped by the global-sequence safety net."""
        return self._dropped_duplicates

    @property
    def ignored_events(self) -> int:
        """Stream events ignored because they belonged to a stream already given up."""
        return self._ignored_events

    @property
    def faults(self) -> int:
        """Protocol violations seen (each one restarted or stopped the stream)."""
        return self._faults

    @property
    def last_block_num(self) -> int | None:
        """The newest block number seen on the stream (action or progress), or ``None``."""
        return self._last_block_num

    @property
    def in_flight(self) -> WriteCommit | None:
        """The commit awaiting :class:`WriteSucceeded`/:class:`WriteFailed`, if any."""
        return self._in_flight

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the engine is stopping or stopped; ``None`` while it runs."""
        return self._stop_reason if self._state in (State.STOPPING, State.STOPPED) else None

    # --- the one entry point --------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; return the actions to execute, in order.

        Args:
            event: what happened.
            now: the current time in seconds on any monotonic clock (only differences matter).

        Returns:
            Zero or more of :class:`WriteCommit`, :class:`Restart`, :class:`Stop`.

        Raises:
            UsageError: an unknown event, or a write result for a commit not in flight.
        """
        if isinstance(event, (WriteSucceeded, WriteFailed)):
            if self._in_flight is None or event.commit_id != self._in_flight.commit_id:
                expected = None if self._in_flight is None else self._in_flight.commit_id
                raise UsageError(
                    f"write result for commit {event.commit_id}, but the commit in flight is "
                    f"{expected}: feed back exactly one result per WriteCommit"
                )
        elif type(event) not in _EVENT_TYPES:
            raise UsageError(f"not an engine event: {event!r}")
        elif (
            isinstance(event, ActionReceived)
            and event.transfer is not None
            and event.reject is not None
        ):
            raise UsageError("ActionReceived carries both a transfer and a reject")
        if self._last_commit_at is None:
            self._last_commit_at = now  # zero-row commits are throttled from the first event
        out: list[Action] = []
        handler = _HANDLERS.get((self._state, type(event)))
        if handler is not None:
            handler(self, event, now, out)
        elif isinstance(event, (ActionReceived, Progress, Listening)):
            self._ignored_events += 1
        if self._state is not State.STOPPED:
            self._flush(now, out)
        return out

    def handle_batch(self, events: Sequence[Event], now: float) -> list[Action]:
        """Feed several events at one ``now``; the same as :meth:`handle` for each in turn.

        The actions of all the events come back concatenated, in order. A source that reads
        frames in batches (one socket read holds dozens) uses this: the common case, another
        row of the open block, skips the general dispatch.

        Raises:
            UsageError: as :meth:`handle`; events before the bad one have been applied.
        """
        out: list[Action] = []
        handle = self.handle
        streaming = State.STREAMING
        # The shortcut below skips the flush policy. That is exact only after the policy has
        # run once at this ``now``: a row of the open block changes nothing the policy reads
        # (complete rows, S, the commit in flight), so running it again would decide the same.
        flushed = False
        for event in events:
            if (
                flushed
                and type(event) is ActionReceived
                and self._state is streaming
                and event.block_num == self._open_block
                and event.block_id == self._open_id
                and event.reject is None
                and event.transfer is not None
                and event.global_sequence is not None
                and self._open_gs is not None
                and event.global_sequence > self._open_gs
            ):
                self._open_gs = event.global_sequence
                self._open_rows.append(event.transfer)
                if self._open_since is None:
                    self._open_since = now
                continue
            actions = handle(event, now)
            if actions:
                out += actions
            flushed = True
        return out

    # --- handlers (one per table row group) -----------------------------------------------

    def _on_listening_awaited(self, event: Listening, now: float, out: list[Action]) -> None:
        n = event.next_block
        if self._safe is None:
            if self._stop_block is not None and n > self._stop_block:
                logger.warning("stream starts at %d, after stop block %d", n, self._stop_block)
                self._begin_stop(StopReason.STOP_BLOCK)
                return
            self._safe = n
            self._state = State.STREAMING
            if self._durable is None:
                # Hole 2: record where the data starts before any of it can be committed.
                out.append(self._make_commit(now, first_block=n, next_block=n))
            return
        if n != self._safe:
            self._begin_stop(
                StopReason.PROTOCOL_ERROR,
                f"the server started the stream at block {n}, but block {self._safe} was "
                "requested; blocks would be skipped or repeated. Check the endpoint and run "
                "again (the dataset resumes at its cursor)",
            )
            return
        self._state = State.STREAMING

    def _on_listening_streaming(self, event: Listening, now: float, out: list[Action]) -> None:
        self._fault(f"listening (next_block {event.next_block}) without a restart", out)

    def _on_action(self, event: ActionReceived, now: float, out: list[Action]) -> None:
        b = event.block_num
        assert self._safe is not None  # STREAMING implies a listening was seen
        self._last_block_num = b
        if b < self._safe:
            self._fault(f"action of block {b} below the safe point {self._safe}", out)
            return
        if b == self._open_block and event.block_id != self._open_id:
            self._fault(f"block {b} arrived with two block ids", out)
            return
        if b != self._open_block:  # b > open block: every earlier block is complete (§4.3)
            self._close_open_block()
            self._safe = b
            if self._stop_block is not None and b > self._stop_block:
                self._begin_stop(StopReason.STOP_BLOCK)
                return
            self._open_block, self._open_id, self._open_time = b, event.block_id, event.block_time
        gs = event.global_sequence
        if gs is not None:
            high = self._open_gs if self._open_gs is not None else self._gs_complete
            if high is not None and gs <= high:
                self._dropped_duplicates += 1
                logger.warning("dropped action of block %d: global_sequence %d <= %d", b, gs, high)
                return
            self._open_gs = gs
        if event.transfer is not None:
            self._open_rows.append(event.transfer)
        elif event.reject is not None:
            self._open_rejects.append(event.reject)
        else:
            return
        if self._open_since is None:
            self._open_since = now

    def _on_progress(self, event: Progress, now: float, out: list[Action]) -> None:
        p = event.block_num
        assert self._safe is not None
        self._last_block_num = p
        if p + 1 < self._safe or (self._open_block is not None and p < self._open_block):
            self._fault(f"progress for block {p} behind the safe point {self._safe}", out)
            return
        if p == self._open_block and event.block_id != self._open_id:
            self._fault(f"progress for block {p} names another block id", out)
            return
        time = self._open_time if p == self._open_block else None
        self._close_open_block()
        if self._stop_block is None or p <= self._stop_block:
            self._last_complete = (p, event.block_id, time)
        # Hole 1: progress follows all of P's actions, so P itself is complete.
        self._safe = max(self._safe, p + 1)
        if self._stop_block is not None and self._safe > self._stop_block:
            self._begin_stop(StopReason.STOP_BLOCK)

    def _on_connection_lost(self, event: ConnectionLost, now: float, out: list[Action]) -> None:
        # DEBUG: the retry policy already logged this attempt's fault, once (issue 8).
        logger.debug(
            "connection lost (%s); restarting at %s",
            event.reason,
            "the configured start" if self._safe is None else f"block {self._safe}",
        )
        # Hole 6: the open block is dropped before the Restart leaves the engine.
        self._drop_open_block()
        self._state = State.AWAITING_LISTENING
        out.append(Restart(self._safe))

    def _on_stop_requested(self, event: StopRequested, now: float, out: list[Action]) -> None:
        self._begin_stop(StopReason.REQUESTED)

    def _on_tick(self, event: Tick, now: float, out: list[Action]) -> None:
        pass  # the flush policy runs after every event

    def _on_write_succeeded(self, event: WriteSucceeded, now: float, out: list[Action]) -> None:
        commit = self._in_flight
        assert commit is not None  # checked in handle()
        self._in_flight = None
        self._durable = commit.next_block
        self._committed_rows += len(commit.rows)
        self._committed_rejects += len(commit.rejects)

    def _on_write_failed(self, event: WriteFailed, now: float, out: list[Action]) -> None:
        self._in_flight = None
        self._state = State.STOPPED
        self._stop_reason = StopReason.WRITE_FAILED
        self._stop_error = event.error
        out.append(Stop(StopReason.WRITE_FAILED, event.error))

    # --- helpers --------------------------------------------------------------------------

    def _fault(self, what: str, out: list[Action]) -> None:
        self._faults += 1
        self._drop_open_block()
        if self._fault_at == self._safe:
            self._begin_stop(
                StopReason.PROTOCOL_ERROR,
                f"protocol violation repeated at block {self._safe}: {what}. The stream breaks "
                "the block-order rules of every source (a fork in reversible mode, or a "
                "faulty server); check the endpoint, or collect irreversible blocks only",
            )
            return
        logger.warning("protocol violation: %s; restarting at block %s", what, self._safe)
        self._fault_at = self._safe
        self._state = State.AWAITING_LISTENING
        out.append(Restart(self._safe))

    def _begin_stop(self, reason: StopReason, error: str | None = None) -> None:
        self._drop_open_block()  # an incomplete block cannot be committed
        self._state = State.STOPPING
        self._stop_reason, self._stop_error = reason, error

    def _close_open_block(self) -> None:
        if self._open_block is None:
            return
        self._last_complete = (self._open_block, self._open_id, self._open_time)
        if self._open_rows or self._open_rejects:
            self._rows.extend(self._open_rows)
            self._rejects.extend(self._open_rejects)
            if self._pending_since is None:
                self._pending_since = self._open_since
        if self._open_gs is not None:
            self._gs_complete = self._open_gs  # above _gs_complete by the safety net
        self._drop_open_block()

    def _drop_open_block(self) -> None:
        self._open_block, self._open_id, self._open_time = None, "", None
        self._open_rows, self._open_rejects = [], []
        self._open_since = self._open_gs = None

    def _target(self) -> int | None:
        """The next_block a commit made now would record: S, capped at stop_block + 1."""
        if self._safe is None or self._stop_block is None:
            return self._safe
        return min(self._safe, self._stop_block + 1)

    def _flush(self, now: float, out: list[Action]) -> None:
        """The flush policy; runs after every event. At most one commit is in flight."""
        if self._in_flight is not None:
            return
        target = self._target()
        items = len(self._rows) + len(self._rejects)
        can_commit = self._durable is not None and target is not None
        if self._state is State.STOPPING:
            if can_commit and (items or target > self._durable):
                out.append(self._make_commit(now, first_block=self._durable, next_block=target))
            else:
                self._state = State.STOPPED
                logger.info("stopping: %s", self._stop_reason)
                out.append(Stop(self._stop_reason, self._stop_error))
            return
        if not can_commit:
            return
        if items:
            assert self._pending_since is not None
            if items >= self._flush_rows or now - self._pending_since >= self._flush_seconds:
                out.append(self._make_commit(now, first_block=self._durable, next_block=target))
        elif target > self._durable and now - self._last_commit_at >= self._min_commit_interval:
            out.append(self._make_commit(now, first_block=self._durable, next_block=target))

    def _make_commit(self, now: float, *, first_block: int, next_block: int) -> WriteCommit:
        last = self._last_complete or (None, None, None)
        commit = WriteCommit(
            commit_id=self._next_commit_id,
            rows=tuple(self._rows),
            rejects=tuple(self._rejects),
            first_block=first_block,
            next_block=next_block,
            last_block_num=last[0],
            last_block_id=last[1],
            last_block_time=last[2],
            last_global_sequence=self._gs_complete,
        )
        self._next_commit_id += 1
        self._rows, self._rejects, self._pending_since = [], [], None
        self._in_flight = commit
        self._last_commit_at = now
        return commit


_Handler = Callable[[Engine, "Event", float, list[Action]], None]
_LIVE = (State.AWAITING_LISTENING, State.STREAMING)
_RUNNING = (State.AWAITING_LISTENING, State.STREAMING, State.STOPPING)
_EVENT_TYPES = frozenset(
    {
        Listening,
        ActionReceived,
        Progress,
        ConnectionLost,
        Tick,
        WriteSucceeded,
        WriteFailed,
        StopRequested,
    }
)

# (state, event type) -> handler: the code form of the table in the module docstring. A pair
# that is missing is ignored (stale stream frames, anything after STOPPED).
_HANDLERS: dict[tuple[State, type], _Handler] = {
    (State.AWAITING_LISTENING, Listening): Engine._on_listening_awaited,
    (State.STREAMING, Listening): Engine._on_listening_streaming,
    (State.STREAMING, ActionReceived): Engine._on_action,
    (State.STREAMING, Progress): Engine._on_progress,
    **{(s, ConnectionLost): Engine._on_connection_lost for s in _LIVE},
    **{(s, StopRequested): Engine._on_stop_requested for s in _LIVE},
    **{(s, Tick): Engine._on_tick for s in _RUNNING},
    **{(s, WriteSucceeded): Engine._on_write_succeeded for s in _RUNNING},
    **{(s, WriteFailed): Engine._on_write_failed for s in _RUNNING},
}
