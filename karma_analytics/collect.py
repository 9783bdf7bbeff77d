"""The collector: wires a dfuse stream -> the commit engine -> the Parquet store, and its CLI.

Run it as ``python -m karma_analytics.collect`` (or ``karma-collect``)::

    python -m karma_analytics.collect --demo
    python -m karma_analytics.collect --network eos --api-key KEY --out data/transfers
    python -m karma_analytics.collect --endpoint ws://127.0.0.1:8080/v1/stream --stop-block 5000

One asyncio task drives everything (DESIGN.md "The commit protocol"): each source event goes to
the pure :class:`~karma_analytics.engine.Engine` with ``now=time.monotonic()``; its actions are
executed here. ``WriteCommit`` runs :meth:`Store.commit` in a worker thread so the socket keeps
being read while Parquet and the sidecar are written and fsynced; its outcome goes back to the
engine as ``WriteSucceeded``/``WriteFailed`` (at most one commit in flight). ``Restart(S)`` tells
the source to resume at block ``S``; ``Stop`` ends the run. A periodic ``Tick`` drives the
age-based flush and the progress display; the source runs the stall watchdog (a silent stream
becomes ``ConnectionLost``).

Stopping: Ctrl-C or SIGTERM asks the engine to stop (``StopRequested``): the rows of complete
blocks are committed, the sidecar is written, and the process exits 0 within a few seconds. A
second Ctrl-C exits at once (code 130); that is still safe because every file is replaced
atomically and a restart trusts only the sidecar.

Exit codes:
    0    done: every block up to ``--stop-block`` is committed, or stopped on request
    1    fatal error: server refused the request or the credentials, protocol or storage fault
    2    usage error (bad flags)
    3    the dataset is locked by another collector
    4    the dataset needs attention: corrupt sidecar, parts without sidecar, or it was
         collected with another request (contract/action/endpoint kind/filters)
    130  interrupted by a second Ctrl-C (the dataset is still consistent)

Credentials: the API key comes from ``--api-key`` or the ``DFUSE_API_KEY`` environment
variable. It is never printed, logged, or written to the dataset (the sidecar records the
endpoint without credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from karma_analytics.exceptions import (
    CursorError,
    KarmaError,
    LockedError,
    ProtocolError,
    RequestMismatchError,
    UsageError,
    redact,
    register_secret,
)

__all__ = [
    "EXIT_DATASET",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CollectConfig",
    "CollectSummary",
    "Collector",
    "CollectorStatus",
    "DemoSession",
    "build_parser",
    "demo_session",
    "exit_code_for",
    "main",
    "run_collector",
    "tune_gc",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_DATASET = 4
EXIT_INTERRUPTED = 130

DEFAULT_OUT = "data/transfers"
DEFAULT_FLUSH_ROWS = 10_000  # rows per commit; see bench/RESULTS.md (memory and throughput)
# Source events handled between two turns given to the event loop (see _read_source).
_YIELD_EVERY = 128
DEMO_OUT = "data/demo/transfers"


def _networks() -> dict[str, str]:
    from karma_analytics.sources.dfuse import NETWORKS

    return NETWORKS


def _resolve_endpoint(endpoint: str) -> str:
    """The full stream URL for a URL, ``host[:port]`` or network name (no credentials)."""
    from karma_analytics.sources.dfuse import resolve_endpoint

    return resolve_endpoint(endpoint, environ={})


# --- configuration, live status, summary ---------------------------------------------------


@dataclass(frozen=True)
class CollectConfig:
    """What to collect and where.

    Attributes:
        endpoint: dfuse WebSocket URL (``wss://host/v1/stream``); ``None`` with ``demo``.
        out: dataset root folder.
        api_key: dfuse API key, or ``None`` for a server without authentication. Never
            stored or logged.
        auth_url: token issuer; ``None`` picks the dfuse default for the endpoint.
        contract: token contract account.
        action: action name.
        start_block: where a *fresh* dataset starts (0 = the head, negative = relative to
            the head, positive = absolute). Ignored, with a warning, when the dataset has a
            sidecar: the sidecar's ``next_block`` always wins (no gap, no duplicate).
        stop_block: stop once every block ``<= stop_block`` is committed; ``None`` = run
            until stopped.
        irreversible_only: collect irreversible blocks only (default, DESIGN.md). With
            ``False`` the collector follows the head and forked-out actions can be committed.
        flush_rows: commit once this many rows of complete blocks are buffered.
        flush_seconds: commit buffered rows at most this many seconds after they arrived.
        tick_seconds: period of the engine's ``Tick`` (flush age, progress display).
        stall_seconds: restart a stream that sent nothing (not even progress) this long.
        with_progress: dfuse ``with_progress`` modulo (progress marks complete blocks).
        compact: merge each finished UTC day's parts into one after a commit (the store's
            auto compaction). It holds the whole day in memory while merging; turn it off
            for very dense days and compact later (``python -m karma_analytics.store
            compact``).
        demo: a ``--demo`` run (its fixed ``start_block`` is not a user choice: no warning
            when the dataset resumes elsewhere).
    """

    endpoint: str | None = None
    out: str | Path = DEFAULT_OUT
    api_key: str | None = field(default=None, repr=False)
    auth_url: str | None = None
    contract: str = "therealkarma"
    action: str = "transfer"
    start_block: int = 0
    stop_block: int | None = None
    irreversible_only: bool = True
    # DEFAULT_FLUSH_ROWS: with one commit in flight plus one batch pending the collector
    # stays under 250 MB (bench/bench_memory.py).
    flush_rows: int = DEFAULT_FLUSH_ROWS
    flush_seconds: float = 5.0
    tick_seconds: float = 0.25
    stall_seconds: float = 60.0
    with_progress: int = 10
    compact: bool = True
    demo: bool = False

    def validate(self) -> None:
        """Raise :class:`UsageError` for inconsistent settings."""
        if not self.endpoint:
            raise UsageError("no endpoint: pass --endpoint URL, --network NAME or --demo")
        if self.stall_seconds <= 0:
            raise UsageError(f"stall_seconds must be > 0, got {self.stall_seconds}")
        if self.flush_rows < 1:
            raise UsageError(f"flush_rows must be >= 1, got {self.flush_rows}")
        if self.flush_seconds <= 0:
            raise UsageError(f"flush_seconds must be > 0, got {self.flush_seconds}")
        if self.stop_block is not None and self.stop_block < 1:
            raise UsageError(f"stop_block must be a positive block number, got {self.stop_block}")
        if (
            self.stop_block is not None
            and self.start_block > 0
            and self.stop_block < self.start_block
        ):
            raise UsageError(
                f"stop_block {self.stop_block} is below start_block {self.start_block}"
            )


@dataclass
class CollectorStatus:
    """Live figures of a running collector (read by displays and the notebook handle).

    Attributes:
        state: ``"starting"``, ``"streaming"``, ``"reconnecting"``, ``"stopping"``,
            ``"done"``, ``"stopped"`` or ``"failed"``.
        path: dataset root.
        start_block: the block this run started at (``None`` until known).
        next_block: first block not yet durably committed (``None`` until known).
        stop_block: the requested last block, or ``None``.
        rows: rows committed by this run.
        total_rows: rows in the dataset (sidecar count).
        rejects: rejected (unparsable) transfers kept by this run.
        commits: commits made by this run.
        reconnects: stream restarts (lost connection, stall, transient server error).
        last_block_time: ``block_time`` (ms, UTC) of the newest committed block, or ``None``.
        error: the error that ended the run (redacted text), or ``None``.
    """

    state: str = "starting"
    path: str = ""
    start_block: int | None = None
    next_block: int | None = None
    stop_block: int | None = None
    rows: int = 0
    total_rows: int = 0
    rejects: int = 0
    commits: int = 0
    reconnects: int = 0
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


@dataclass(frozen=True)
class AccountTotal:
    """An account's total amount in base units (``amount_units / 10**precision`` tokens)."""

    account: str
    amount_units: int
    precision: int
    symbol: str
    transfers: int

    def __str__(self) -> str:
        from karma_analytics.model import format_asset

        return (
            f"{self.account:<13} {format_asset(self.amount_units, self.precision, self.symbol):>24}"
            f"  in {self.transfers:,} transfers"
        )


@dataclass(frozen=True)
class CollectSummary:
    """How a collection run ended.

    Attributes:
        path: dataset root.
        reason: ``"complete"`` (stop block reached), ``"already_complete"`` (nothing to do),
            or ``"stopped"`` (stop requested).
        rows: rows committed by this run.
        total_rows: committed rows in the dataset.
        start_block: block this run started at.
        next_block: first block not yet committed (the dataset covers blocks below it).
        blocks: blocks committed by this run.
        days: UTC days (partitions) in the committed dataset.
        seconds: wall time of this run.
        reconnects: stream restarts during this run.
        rejects: rejected transfers kept by this run.
        top_senders: accounts that sent the most (only filled on request).
        top_receivers: accounts that received the most (only filled on request).
    """

    path: str
    reason: str
    rows: int
    total_rows: int
    start_block: int | None
    next_block: int | None
    blocks: int
    days: int
    seconds: float
    reconnects: int
    rejects: int
    top_senders: tuple[AccountTotal, ...] = ()
    top_receivers: tuple[AccountTotal, ...] = ()

    def __str__(self) -> str:
        headline = {
            "complete": "collection complete",
            "already_complete": "already complete: nothing to collect",
            "stopped": "stopped on request",
        }.get(self.reason, self.reason)
        last = f"{self.next_block - 1:,}" if self.next_block else "-"
        lines = [
            f"{headline}: {self.path}",
            f"  this run:  {self.rows:,} rows, {self.blocks:,} blocks in {self.seconds:.1f} s"
            f" ({self.rows / self.seconds if self.seconds > 0 else 0:,.0f} rows/s),"
            f" {self.reconnects} reconnects, {self.rejects} rejects",
            f"  dataset:   {self.total_rows:,} rows over {self.days} UTC day(s),"
            f" blocks up to {last} committed (resume at {self.next_block or '-'})",
        ]
        if self.top_senders:
            lines.append("  top senders by amount:")
            lines.extend(f"    {t}" for t in self.top_senders)
        if self.top_receivers:
            lines.append("  top receivers by amount:")
            lines.extend(f"    {t}" for t in self.top_receivers)
        return "\n".join(lines)


def exit_code_for(error: BaseException) -> int:
    """The CLI exit code for an error that ended a run (see the module docstring)."""
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, LockedError):
        return EXIT_LOCKED
    if isinstance(error, CursorError | RequestMismatchError):
        return EXIT_DATASET
    return EXIT_ERROR


# --- reading back what was committed (pyarrow only: collect never imports pandas) ----------


def dataset_facts(root: str | Path, *, top: int = 0) -> dict[str, Any]:
    """Days, rows and (optionally) top accounts of the committed view of a dataset.

    Applies the reader rule (DESIGN.md) through :mod:`karma_analytics.layout`, reading only the
    columns it needs with pyarrow.

    Args:
        root: dataset root.
        top: how many top senders/receivers to compute (0 = none; this reads the amounts).

    Returns:
        ``{"days": int, "rows": int, "top_senders": tuple, "top_receivers": tuple}``.
    """
    import pyarrow.fs as pafs

    from karma_analytics import layout

    fs = pafs.LocalFileSystem()
    root = str(Path(root).absolute())
    cursor = layout.read_cursor(fs, root)
    if cursor is None:
        return {"days": 0, "rows": 0, "top_senders": (), "top_receivers": ()}
    parts = layout.committed_parts(layout.list_parts(fs, root), cursor.next_block)
    days = len({p.day for p in parts})
    facts: dict[str, Any] = {
        "days": days,
        "rows": cursor.rows,
        "top_senders": (),
        "top_receivers": (),
    }
    if top and parts:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = ["from_account", "to_account", "amount_units", "precision", "symbol"]
        table = pa.concat_tables(
            [pq.read_table(f"{root}/{p.path}", columns=columns) for p in parts]
        )
        facts["top_senders"] = _top_accounts(table, "from_account", top)
        facts["top_receivers"] = _top_accounts(table, "to_account", top)
    return facts


def _top_accounts(table: Any, column: str, top: int) -> tuple[AccountTotal, ...]:
    import pyarrow.compute as pc

    grouped = table.group_by([column, "symbol", "precision"]).aggregate(
        [("amount_units", "sum"), ("amount_units", "count")]
    )
    order = pc.sort_indices(grouped, sort_keys=[("amount_units_sum", "descending")])
    best = grouped.take(order[:top]).to_pylist()
    return tuple(
        AccountTotal(
            account=r[column],
            amount_units=r["amount_units_sum"],
            precision=r["precision"],
            symbol=r["symbol"],
            transfers=r["amount_units_count"],
        )
        for r in best
    )


# --- the runner ----------------------------------------------------------------------------


class Collector:
    """One collection run: source -> engine -> store, in the current event loop.

    Create it, then ``await collector.run()``; call :meth:`request_stop` (from the loop's
    thread, or :meth:`request_stop_threadsafe` from another) to stop cleanly. ``status`` is
    updated live.

    Args:
        config: what to collect and where.
        display: progress display (see :mod:`karma_analytics.progress`), or ``None``.
        summary_top: number of top senders/receivers to put in the summary (reads the
            dataset's amounts at the end; 0 = skip).
        source: build the event source instead of a
            :class:`~karma_analytics.sources.dfuse.DfuseSource`: called with the start block,
            it returns an object with the same driving contract (``events()`` or
            ``batches()``, ``restart(start_block)``, ``aclose()``). For other upstream
            protocols and for benchmarks that feed frames from memory.
    """

    def __init__(
        self,
        config: CollectConfig,
        *,
        display: Any = None,
        summary_top: int = 0,
        source: Callable[[int], Any] | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.url = _resolve_endpoint(config.endpoint or "")
        self.display = display
        self.summary_top = summary_top
        self._source_factory = source
        self.status = CollectorStatus(path=str(config.out), stop_block=config.stop_block)
        register_secret(config.api_key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: Any = None
        self._store: Any = None
        self._source: Any = None
        self._done: asyncio.Event | None = None
        self._commit_task: asyncio.Future[Any] | None = None
        self._commit_error: BaseException | None = None
        self._fatal: BaseException | None = None
        self._stop_requested = False
        self._start = 0

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask for a clean stop: commit complete blocks, write the sidecar, return.

        Safe to call several times and before :meth:`run` has started streaming.
        """
        if self._stop_requested:
            return
        self._stop_requested = True
        if self.status.state not in ("done", "stopped", "failed"):
            self.status.state = "stopping"
        if self._engine is not None:
            from karma_analytics.engine import StopRequested

            self._feed(StopRequested())

    def request_stop_threadsafe(self) -> None:
        """:meth:`request_stop` from another thread (e.g. a signal or GUI thread)."""
        if self._loop is None:
            self._stop_requested = True
            return
        self._loop.call_soon_threadsafe(self.request_stop)

    # -- engine plumbing -------------------------------------------------------------------

    def _feed(self, event: Any) -> None:
        """Give one event to the engine and execute its actions (synchronous, loop thread)."""
        engine = self._engine
        actions = engine.handle(event, time.monotonic())
        if actions:
            self._execute(actions)

    def _execute(self, actions: Sequence[Any]) -> None:
        from karma_analytics.engine import Restart, Stop, WriteCommit

        for action in actions:
            if isinstance(action, WriteCommit):
                self._start_commit(action)
            elif isinstance(action, Restart):
                self._restart(action.start_block)
            elif isinstance(action, Stop):
                if action.error and self._fatal is None and self._commit_error is None:
                    # A write failure keeps its own exception (_commit_error); anything else
                    # with an error text is the engine refusing the stream's order.
                    self._fatal = ProtocolError(action.error, fatal=True)
                assert self._done is not None
                self._done.set()
            else:  # pragma: no cover - the engine's contract has no other action
                raise AssertionError(f"unknown engine action {action!r}")

    def _start_commit(self, action: Any) -> None:
        assert self._commit_task is None or self._commit_task.done(), "two commits in flight"
        store = self._store
        kwargs = {
            "rows": action.rows,
            "rejects": action.rejects,
            "first_block": action.first_block,
            "next_block": action.next_block,
            "last_block_num": action.last_block_num,
            "last_block_id": action.last_block_id,
            "last_block_time": action.last_block_time,
            "last_global_sequence": action.last_global_sequence,
        }
        # The write and its fsyncs run in a worker thread so that the socket keeps being read
        # (a blocked loop would stall pings and, with dfuse's write deadline, lose the socket).
        task = asyncio.ensure_future(asyncio.to_thread(store.commit, **kwargs))
        self._commit_task = task
        commit_id = action.commit_id
        n_rows = len(action.rows)
        n_rejects = len(action.rejects)

        def done(t: asyncio.Future[Any]) -> None:
            from karma_analytics.engine import WriteFailed, WriteSucceeded

            if t.cancelled():
                return
            error = t.exception()
            if error is None:
                cursor = t.result()
                st = self.status
                st.rows += n_rows
                st.rejects += n_rejects
                st.commits += 1
                st.next_block = cursor.next_block
                st.total_rows = cursor.rows
                if cursor.last_block_time is not None:
                    st.last_block_time = cursor.last_block_time
                self._feed(WriteSucceeded(commit_id))
            else:
                self._commit_error = error
                # Reported once, by whoever catches the error run() raises (CLI: "error: ...").
                logger.debug("commit failed: %s", redact(str(error)))
                self._feed(WriteFailed(commit_id, redact(str(error))))

        task.add_done_callback(done)

    def _restart(self, start_block: int | None) -> None:
        self.status.reconnects += 1
        self.status.state = "reconnecting"
        # None: no start point recorded yet (fresh dataset before its first listening), so
        # the configured start is requested again.
        self._source.restart(self._start if start_block is None else start_block)

    # -- main ------------------------------------------------------------------------------

    async def run(self) -> CollectSummary:
        """Collect until the stop block is committed, a stop is requested, or a fatal error.

        Returns:
            The summary of the run.

        Raises:
            KarmaError: a fatal error (after committing every complete block): ``ServerError``
                / ``ConnectError`` with ``fatal``, ``StoreError`` and its subclasses,
                ``UsageError``.
            asyncio.CancelledError: the task was cancelled; the commit in flight (if any) is
                awaited first, so the dataset stays consistent.
        """
        try:
            return await self._run()
        finally:
            if self.display is not None:
                with contextlib.suppress(Exception):
                    self.display.close(self.status)

    async def _run(self) -> CollectSummary:
        from karma_analytics.engine import Engine, Tick
        from karma_analytics.store import Store

        cfg = self.config
        st = self.status
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        st.started = time.monotonic()
        request = self._request()
        root = Path(cfg.out)
        st.path = str(root)
        try:
            self._store = await asyncio.to_thread(
                Store.open, root, request, create=True, auto_compact=cfg.compact
            )
        except BaseException as error:
            self._fail(error)
            raise
        reader: asyncio.Task[None] | None = None
        ticker: asyncio.Task[None] | None = None
        try:
            cursor = self._store.cursor
            if cursor is not None:
                start = cursor.next_block
                st.total_rows = cursor.rows
                st.last_block_time = cursor.last_block_time
                if cfg.start_block and cfg.start_block != start and not cfg.demo:
                    logger.warning(
                        "ignoring --start-block %d: the dataset's sidecar says to resume at"
                        " block %d (starting elsewhere would leave a gap or duplicate rows)",
                        cfg.start_block,
                        start,
                    )
                if cfg.stop_block is not None and start > cfg.stop_block:
                    logger.info(
                        "already complete: every block up to %d is committed in %s",
                        cfg.stop_block,
                        root,
                    )
                    st.start_block = st.next_block = start
                    return await self._finish("already_complete")
                logger.info("resuming at block %d (from %s)", start, root)
            else:
                start = cfg.start_block
                if start > 0:
                    logger.info("fresh dataset: starting at block %d", start)
                elif start == 0:
                    logger.info("fresh dataset: starting at the head block")
                else:
                    logger.info("fresh dataset: starting %d blocks before the head", -start)
            st.start_block = start if start > 0 else None
            st.next_block = start if start > 0 else None
            self._engine = Engine(
                next_block=cursor.next_block if cursor is not None else None,
                last_global_sequence=cursor.last_global_sequence if cursor is not None else None,
                flush_rows=cfg.flush_rows,
                flush_seconds=cfg.flush_seconds,
                stop_block=cfg.stop_block,
                min_commit_interval=min(1.0, cfg.flush_seconds),
            )
            self._start = start
            self._source = self._make_source(start)
            st.state = "streaming"
            if self._stop_requested:
                self._stop_requested = False
                self.request_stop()
            reader = asyncio.create_task(self._read_source(), name="karma-collect-reader")
            ticker = asyncio.create_task(self._tick(Tick), name="karma-collect-ticker")
            await self._done.wait()
        except BaseException as error:
            await self._shutdown(reader, ticker)
            self._fail(error)
            raise
        await self._shutdown(reader, ticker)
        error = self._commit_error or self._fatal
        if error is not None:
            self._fail(error)
            raise error
        return await self._finish("complete" if self._reached_stop_block() else "stopped")

    def _reached_stop_block(self) -> bool:
        stop = self.config.stop_block
        return (
            stop is not None
            and self.status.next_block is not None
            and (self.status.next_block > stop)
        )

    async def _shutdown(self, *tasks: asyncio.Task[None] | None) -> None:
        """Stop reading, let the commit in flight finish, release the socket and the lock."""
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task
        if self._commit_task is not None and not self._commit_task.done():
            # A thread cannot be cancelled: wait for it, even when we are being cancelled,
            # so that the lock is never released under a half-written commit.
            logger.info("waiting for the commit in flight to finish")
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._commit_task)
        if self._source is not None:
            with contextlib.suppress(BaseException):
                await self._source.aclose()
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.to_thread(store.close)

    def _fail(self, error: BaseException) -> None:
        st = self.status
        st.ended = time.monotonic()
        if isinstance(error, asyncio.CancelledError):
            st.state = "stopped"
            return
        st.state = "failed"
        st.error = redact(str(error)) or type(error).__name__

    async def _finish(self, reason: str) -> CollectSummary:
        st = self.status
        st.ended = time.monotonic()
        st.state = "done" if reason in ("complete", "already_complete") else "stopped"
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.to_thread(store.close)
        facts = await asyncio.to_thread(dataset_facts, self.config.out, top=self.summary_top)
        return CollectSummary(
            path=str(self.config.out),
            reason=reason,
            rows=st.rows,
            total_rows=max(st.total_rows, facts["rows"]),
            start_block=st.start_block,
            next_block=st.next_block,
            blocks=st.blocks,
            days=facts["days"],
            seconds=st.seconds,
            reconnects=st.reconnects,
            rejects=st.rejects,
            top_senders=facts["top_senders"],
            top_receivers=facts["top_receivers"],
        )

    async def _tick(self, tick_type: type) -> None:
        tick = tick_type()
        while True:
            await asyncio.sleep(self.config.tick_seconds)
            self._feed(tick)
            if self.display is not None:
                self.display.update(self.status)

    # -- source adapter --------------------------------------------------------------------

    def _request(self) -> Any:
        from karma_analytics.layout import Request

        cfg = self.config
        return Request.for_token(
            cfg.contract,
            cfg.action,
            endpoint=self.url,  # resolve_endpoint refuses URLs with credentials
            irreversible_only=cfg.irreversible_only,
        )

    def _make_source(self, start_block: int) -> Any:
        if self._source_factory is not None:
            return self._source_factory(start_block)
        from karma_analytics.sources.dfuse import DfuseSource

        cfg = self.config
        return DfuseSource(
            self.url,
            contract=cfg.contract,
            action=cfg.action,
            api_key=cfg.api_key,
            auth_url=cfg.auth_url,
            irreversible_only=cfg.irreversible_only,
            start_block=start_block,
            with_progress=cfg.with_progress,
            stall_seconds=cfg.stall_seconds,
        )

    async def _read_source(self) -> None:
        from karma_analytics.engine import ConnectionLost, Listening, StopRequested

        engine = self._engine
        st = self.status
        source = self._source
        # Sources that read frames in batches (DfuseSource) hand them over a socket read at a
        # time; the engine takes a whole batch at once. Others yield single events.
        batches = source.batches() if hasattr(source, "batches") else _singles(source.events())
        # Memory bound: while a commit is in flight the engine buffers new rows; past this many
        # the reader waits for the commit (TCP backpressure) instead of growing without limit.
        limit = max(1_000, self.config.flush_rows)
        countdown = _YIELD_EVERY
        try:
            async for batch in batches:
                first = batch[0]
                if type(first) is ConnectionLost:
                    st.state = "reconnecting"
                    restarts = st.reconnects
                    self._feed(first)
                    if st.reconnects == restarts:
                        # No Restart: the engine is stopping (only the commit in flight is
                        # left). The source must not be resumed without one; stop reading.
                        return
                    continue
                if st.state != "streaming" or st.start_block is None:
                    for event in batch:
                        if type(event) is Listening:
                            if st.start_block is None:
                                st.start_block = st.next_block = event.next_block
                            st.state = "streaming"
                            break
                actions = engine.handle_batch(batch, time.monotonic())
                if actions:
                    self._execute(actions)
                countdown -= len(batch)
                if countdown > 0:
                    continue
                countdown = _YIELD_EVERY
                # A socket with frames already buffered never suspends the source, so give the
                # loop a turn: commit completions (WriteSucceeded) and ticks must not starve.
                await asyncio.sleep(0)
                commit = self._commit_task
                if commit is not None and not commit.done() and engine.pending_rows >= limit:
                    await asyncio.wait([commit])
        except asyncio.CancelledError:
            raise
        except KarmaError as error:
            self._fatal = error
            logger.debug("source failed: %s", redact(str(error)))
            self._feed(StopRequested())
        except Exception as error:  # a bug: stop cleanly, keep what is complete
            self._fatal = error
            logger.exception("collector source failed")
            self._feed(StopRequested())


async def _singles(events: Any) -> Any:
    """Batches of one event, for sources without ``batches()``."""
    async for event in events:
        yield [event]


async def run_collector(
    config: CollectConfig, *, display: Any = None, summary_top: int = 0
) -> CollectSummary:
    """Run one collection to its end in the current event loop (see :class:`Collector`)."""
    return await Collector(config, display=display, summary_top=summary_top).run()


# --- demo ----------------------------------------------------------------------------------


class DemoSession:
    """An in-process devnet (a background thread on loopback) serving the demo range.

    Attributes:
        url: the devnet's stream URL.
        out: the dataset folder for the demo.
        start_block, stop_block: the fixed demo range (two UTC days, >= 50,000 transfers).
    """

    def __init__(self, *, out: str | Path | None = None, stop_block: int | None = None) -> None:
        from karma_analytics.devnet.testing import DEMO_OPTIONS, DEMO_RANGE, DevnetThread

        self.start_block, last = DEMO_RANGE
        self.stop_block = last if stop_block is None else stop_block
        if not self.start_block <= self.stop_block <= last:
            raise UsageError(
                f"the demo range is blocks {self.start_block}..{last}; "
                f"got stop_block {self.stop_block}"
            )
        self.out = Path(out) if out is not None else Path(DEMO_OUT)
        self._devnet = DevnetThread(**DEMO_OPTIONS).start()
        self.url = self._devnet.url
        logger.info(
            "demo: devnet serving a local chain at %s; collecting blocks %d..%d into %s",
            self.url,
            self.start_block,
            self.stop_block,
            self.out,
        )

    def config(self, **overrides: Any) -> CollectConfig:
        """The collection settings of the demo (``overrides``: other CollectConfig fields)."""
        settings: dict[str, Any] = {
            "endpoint": self.url,
            "out": self.out,
            "start_block": self.start_block,
            "stop_block": self.stop_block,
            # The devnet has no key; a DFUSE_API_KEY of the environment must not be sent.
            "api_key": None,
            "demo": True,
            **overrides,
        }
        return CollectConfig(**settings)

    def close(self) -> None:
        """Stop the devnet thread."""
        self._devnet.stop()

    def __enter__(self) -> DemoSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def demo_session(*, out: str | Path | None = None, stop_block: int | None = None) -> DemoSession:
    """Start the demo devnet; close the returned session when done (or use ``with``)."""
    return DemoSession(out=out, stop_block=stop_block)


# --- CLI -----------------------------------------------------------------------------------

_EPILOG = """\
exit codes:
  0    done: every block up to --stop-block is committed, or stopped by Ctrl-C/SIGTERM
  1    fatal error (server refused the request or the API key, protocol or storage fault)
  2    usage error
  3    the dataset is locked by another collector
  4    the dataset needs attention (corrupt sidecar, parts without sidecar, or collected
       with another contract/action/filters): see the message for the repair command
  130  interrupted by a second Ctrl-C (the dataset stays consistent; rerun to resume)

The API key can also be given in the DFUSE_API_KEY environment variable; it is never
printed or stored. A rerun on the same --out resumes exactly where the last commit ended.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m karma_analytics.collect`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m karma_analytics.collect",
        description=(
            "Collect token transfer actions from a dfuse WebSocket endpoint into a Parquet "
            "dataset, exactly once, resuming from the dataset's cursor sidecar."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--endpoint", metavar="URL", help="dfuse stream URL (wss://host/v1/stream)")
    where.add_argument(
        "--network",
        metavar="NAME",
        choices=sorted(_networks()),
        help="a known public endpoint: "
        + ", ".join(f"{k} ({v})" for k, v in sorted(_networks().items())),
    )
    where.add_argument(
        "--demo",
        action="store_true",
        help=f"run a local devnet in-process and collect a fixed two-day range into {DEMO_OUT}",
    )
    p.add_argument("--api-key", metavar="KEY", help="dfuse API key (default: $DFUSE_API_KEY)")
    p.add_argument("--auth-url", metavar="URL", help="token issuer (default: by endpoint)")
    p.add_argument("--out", metavar="DIR", help=f"dataset folder (default: {DEFAULT_OUT})")
    p.add_argument(
        "--contract", default="therealkarma", help="token contract (default: %(default)s)"
    )
    p.add_argument("--action", default="transfer", help="action name (default: %(default)s)")
    p.add_argument(
        "--start-block",
        type=int,
        default=0,
        metavar="N",
        help="first block of a fresh dataset (0 = head, negative = before head); an existing "
        "dataset always resumes from its sidecar",
    )
    p.add_argument(
        "--stop-block",
        type=int,
        metavar="N",
        help="exit 0 once every block <= N is committed (default: run until stopped)",
    )
    p.add_argument(
        "--include-reversible",
        action="store_true",
        help="follow the head instead of irreversible blocks: lower latency, but actions of "
        "blocks later forked out can be committed and are never taken back, and a fork that "
        "replaces blocks the stream already passed stops the collector (exit 1, protocol "
        "error) once it repeats at the same restart point",
    )
    p.add_argument(
        "--flush-rows",
        type=int,
        default=DEFAULT_FLUSH_ROWS,
        metavar="N",
        help="commit once N rows of complete blocks are buffered (default: %(default)s)",
    )
    p.add_argument(
        "--flush-seconds",
        type=float,
        default=5.0,
        metavar="S",
        help="commit buffered rows at most S seconds after they arrived (default: %(default)s)",
    )
    p.add_argument(
        "--no-compact",
        action="store_true",
        help="do not merge finished days' parts while collecting (saves memory on very dense "
        "days; run `python -m karma_analytics.store compact DIR` later)",
    )
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="restart a stream that sent no data (pings aside) for S seconds (default: %(default)s)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar: a log line every 10 seconds"
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: %(default)s)",
    )
    return p


class _RedactFilter(logging.Filter):
    """Remove credentials from every record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.msg = redact(message)
        record.args = None
        return True


class _TqdmHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Write log lines above a live tqdm bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def _configure_logging(level: str, *, bar: bool) -> None:
    handler: logging.Handler = _TqdmHandler(sys.stderr) if bar else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # websockets logs frames at DEBUG (the request URL holds the token; the redacting filter
    # covers it, but frame dumps are noise) and every connection at INFO.
    logging.getLogger("websockets").setLevel(logging.WARNING)


def config_from_args(
    args: argparse.Namespace, *, environ: dict[str, str] | None = None
) -> CollectConfig:
    """Build a :class:`CollectConfig` from parsed CLI arguments (``--demo`` excluded)."""
    environ = dict(os.environ) if environ is None else environ
    if not (args.network or args.endpoint):
        raise UsageError("no endpoint: pass --endpoint URL, --network NAME or --demo")
    endpoint = _resolve_endpoint(args.endpoint or args.network)
    api_key = args.api_key or environ.get("DFUSE_API_KEY") or None
    auth_url = args.auth_url  # None: the source derives it from the endpoint (§1.2)
    return CollectConfig(
        endpoint=endpoint,
        out=args.out or DEFAULT_OUT,
        api_key=api_key,
        auth_url=auth_url,
        contract=args.contract,
        action=args.action,
        start_block=args.start_block,
        stop_block=args.stop_block,
        irreversible_only=not args.include_reversible,
        flush_rows=args.flush_rows,
        flush_seconds=args.flush_seconds,
        stall_seconds=args.stall_seconds,
        compact=not args.no_compact,
    )


def _make_display(quiet: bool) -> Any:
    from karma_analytics.progress import BarDisplay, LogDisplay

    if quiet or not sys.stderr.isatty():
        return LogDisplay(10.0)
    return BarDisplay(file=sys.stderr)


async def _main_async(config: CollectConfig, *, display: Any, summary_top: int) -> CollectSummary:
    collector = Collector(config, display=display, summary_top=summary_top)
    loop = asyncio.get_running_loop()
    hits = 0

    def on_signal(signum: int) -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            logger.warning(
                "%s: committing complete blocks and stopping (press Ctrl-C again to exit at"
                " once; the dataset stays consistent)",
                signal.Signals(signum).name,
            )
            collector.request_stop()
        else:
            sys.stderr.write("interrupted: exiting now (rerun to resume)\n")
            sys.stderr.flush()
            # The sidecar and the parts are only ever replaced atomically, and the OS drops
            # the flock with the process, so leaving without cleanup is safe (DESIGN.md).
            os._exit(EXIT_INTERRUPTED)

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    try:
        return await collector.run()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a streaming process.

    The hot path allocates hundreds of thousands of short-lived, acyclic objects per second
    (decoded frames, events, rows); with the default threshold (700) a collection runs every
    few frames and each older-generation pass walks every buffered row. Refcounting frees
    them anyway, so collections are made rarer and the objects alive after start-up (modules,
    classes) are frozen out of them. Called by the CLI only: a library call never changes
    process-wide settings.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def tune_memory() -> None:
    """Use the system allocator for Arrow buffers in a long-running collector process.

    pyarrow's default pool (mimalloc) keeps freed pages for reuse, so the footprint of a
    collector that commits and compacts for days grows towards its worst moment; the system
    allocator hands large buffers back at once. bench/bench_memory.py measures the effect.
    Called by the CLI only, like :func:`tune_gc`, before anything imports pyarrow: Arrow's C++
    code (the Parquet reader and writer among it) allocates from the pool chosen when libarrow
    loads, from ``ARROW_DEFAULT_MEMORY_POOL``; ``pa.set_memory_pool`` alone only moves
    pyarrow's own calls (measured: merging a day of 61 parts then peaked 60 MB higher, in
    mimalloc). An explicit ``ARROW_DEFAULT_MEMORY_POOL`` in the environment is respected.
    """
    _fix_malloc_mmap_threshold()
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    if "pyarrow" in sys.modules:  # too late for libarrow's default: move pyarrow's at least
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())


def _fix_malloc_mmap_threshold(threshold: int = 128 * 1024) -> bool:
    """Keep glibc's malloc serving blocks of ``threshold`` bytes and more with mmap.

    glibc raises its mmap threshold each time a mapped block is freed (up to 32 MB), after
    which Arrow's buffers come from the heap and stay there, fragmented, when freed: merging
    a day of parts then peaked ~20 MB higher and kept ~30 MB (bench/RESULTS.md). A fixed
    threshold (what ``MALLOC_MMAP_THRESHOLD_`` does) gives large blocks back at once. Returns
    whether it was applied (only on glibc; the environment variable, if set, wins).
    """
    if sys.platform != "linux" or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    m_mmap_threshold = -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, threshold))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    bar = not args.quiet and sys.stderr.isatty()
    _configure_logging(args.log_level, bar=bar)
    tune_gc()
    tune_memory()
    try:
        if args.demo:
            with demo_session(out=args.out, stop_block=args.stop_block) as demo:
                config = demo.config(
                    flush_rows=args.flush_rows,
                    flush_seconds=args.flush_seconds,
                    stall_seconds=args.stall_seconds,
                    compact=not args.no_compact,
                )
                summary = asyncio.run(
                    _main_async(config, display=_make_display(args.quiet), summary_top=5)
                )
        else:
            config = config_from_args(args)
            register_secret(config.api_key)
            summary = asyncio.run(
                _main_async(config, display=_make_display(args.quiet), summary_top=0)
            )
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KarmaError as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt:
        print("interrupted (rerun to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary)
    return EXIT_OK


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: one set of classes and the
    # logger named karma_analytics.collect, whichever way the CLI was started.
    from karma_analytics.collect import main as _main

    sys.exit(_main())
