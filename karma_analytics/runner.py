"""The runner: wires sources -> the commit engine -> the Parquet store, in one event loop.

One asyncio task drives everything (DESIGN.md "The commit protocol"): each batch of source
events goes to the pure :class:`~karma_analytics.engine.Engine` with ``now=time.monotonic()``;
its actions are executed here. ``WriteCommit`` runs :meth:`Store.commit` in a worker thread so the
source keeps being read while Parquet and the sidecar are written and fsynced; its outcome goes
back to the engine as ``WriteSucceeded``/``WriteFailed`` (at most one commit in flight).
``Restart(S)`` tells the sources to resume at block ``S``; ``Stop`` ends the run. A periodic
``Tick`` drives the age-based flush and the progress display.

Sources implement one connection each (:mod:`karma_analytics.sources.base`); reconnects,
backoff, the stall watchdog, failover between ``--endpoint``s and giving up are
:class:`~karma_analytics.sources.retry.Failover`'s. A dataset belongs to a chain: the first
chain id learned is recorded, and a dataset of another chain is refused
(:class:`~karma_analytics.exceptions.ChainMismatchError`).

Stopping: :meth:`Collector.request_stop` asks the engine to stop (``StopRequested``): the rows
of complete blocks are committed, the sidecar is written, and :meth:`Collector.run` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from karma_analytics.exceptions import (
    KarmaError,
    ProtocolError,
    UsageError,
    redact,
    register_secret,
)
from karma_analytics.status import CollectorStatus, RunState

__all__ = [
    "DEFAULT_FLUSH_ROWS",
    "DEFAULT_OUT",
    "DEMO_OUT",
    "AccountTotal",
    "CollectConfig",
    "CollectSummary",
    "Collector",
    "CollectorStatus",
    "DemoSession",
    "RunState",
    "dataset_facts",
    "demo_session",
    "run_collector",
]

logger = logging.getLogger(__name__)

DEFAULT_OUT = "data/transfers"
DEFAULT_FLUSH_ROWS = 10_000  # rows per commit; see bench/RESULTS.md (memory and throughput)
# Source events handled between two turns given to the event loop (see _read_source).
_YIELD_EVERY = 128
DEMO_OUT = "data/demo/transfers"


# --- configuration, live status, summary ---------------------------------------------------


@dataclass(frozen=True)
class CollectConfig:
    """What to collect and where.

    Attributes:
        source: the protocol: ``"dfuse"``, ``"hyperion"`` or ``"ship"``.
        endpoint: one endpoint URL (the same as ``endpoints=(endpoint,)``).
        endpoints: endpoints of one chain to fail over between, in order.
        out: dataset root folder.
        chain_id: the chain the dataset belongs to, for a provider that cannot tell it
            (64 hex digits); checked against the dataset and every endpoint.
        give_up_after: seconds without one successful subscription after which the run
            stops (exit 1) naming each endpoint and its last error; ``None`` = never. Once
            a run has streamed, outages are retried indefinitely.
        api_key: API key, or ``None`` for a server without authentication (dfuse). Never
            stored or logged.
        auth_url: token issuer; ``None`` picks the dfuse default for the endpoint.
        workers: concurrent windows of a parallel backfill (Hyperion).
        source_options: protocol options passed to the source (see each source's docs).
        since: where a *fresh* dataset starts, as a UTC date, datetime or duration back from
            now (``"2026-11-01"``, ``"30d"``); resolved to a block through the chain API.
        until: where the run stops (exclusive), in the same forms; resolved to the stop
            block. Both need a source with a chain API (Hyperion).
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
    endpoints: tuple[str, ...] = ()
    source: str = "dfuse"
    since: str | None = None
    until: str | None = None
    out: str | Path = DEFAULT_OUT
    chain_id: str | None = None
    give_up_after: float | None = 300.0
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
    workers: int = 4
    source_options: dict[str, Any] = field(default_factory=dict)

    @property
    def all_endpoints(self) -> tuple[str, ...]:
        """``endpoint`` then ``endpoints``, without repeats."""
        given = ((self.endpoint,) if self.endpoint else ()) + tuple(self.endpoints)
        return tuple(dict.fromkeys(e.strip() for e in given if e and e.strip()))

    def validate(self) -> None:
        """Raise :class:`UsageError` for inconsistent settings."""
        from karma_analytics import model
        from karma_analytics.sources.base import SOURCE_KINDS, parse_chain_id

        if self.source not in SOURCE_KINDS:
            raise UsageError(
                f"unknown source {self.source!r}; choose one of {', '.join(SOURCE_KINDS)}"
            )
        if not self.all_endpoints:
            raise UsageError("no endpoint: pass --endpoint URL, --network NAME or --demo")
        for what, name in (("contract", self.contract), ("action", self.action)):
            if not model.is_valid_name(name):
                raise UsageError(
                    f"invalid {what} name {name!r}: an Antelope name is 1 to 12 characters of "
                    "a-z, 1-5 and '.' (13 with a last one in a-j), not ending in '.'"
                )
        if self.chain_id is not None:
            parse_chain_id(self.chain_id, what="--chain-id")
        if self.give_up_after is not None and self.give_up_after <= 0:
            raise UsageError(f"give_up_after must be > 0, got {self.give_up_after}")
        if self.workers < 1:
            raise UsageError(f"workers must be >= 1, got {self.workers}")
        if self.since and self.start_block:
            raise UsageError("give --since or --start-block, not both")
        if self.until and self.stop_block is not None:
            raise UsageError("give --until or --stop-block, not both")
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
        sources: the :class:`~karma_analytics.sources.base.Source` objects to fail over
            between, instead of building them from ``config`` (tests, benchmarks that feed
            frames from memory, a protocol option the config does not carry).
        backoff: reconnect delay schedule (see
            :func:`~karma_analytics.sources.retry.exponential_backoff`).
    """

    def __init__(
        self,
        config: CollectConfig,
        *,
        display: Any = None,
        summary_top: int = 0,
        sources: Sequence[Any] | None = None,
        backoff: Any = None,
    ) -> None:
        config.validate()
        register_secret(config.api_key)
        self.config = config
        self.display = display
        self.summary_top = summary_top
        self._backoff = backoff
        self.sources = list(sources) if sources is not None else self._build_sources()
        if not self.sources:
            raise UsageError("no sources given")
        self.status = CollectorStatus(
            path=str(config.out),
            stop_block=config.stop_block,
            source=self.sources[0].kind,
            endpoint=self.sources[0].endpoint,
        )
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
        if self.status.state not in (RunState.DONE, RunState.STOPPED, RunState.FAILED):
            self.status.state = RunState.STOPPING
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
            # The endpoint streaming now delivered (at least) the newest of these blocks.
            "via": (self.status.source, self.status.endpoint),
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
        st = self.status
        st.reconnects += 1
        st.state = RunState.RECONNECTING
        source = self._source
        st.attempt = source.attempt
        st.last_error = source.last_error
        st.endpoint = source.endpoint
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
            if cfg.chain_id is not None:
                self._store.bind_chain(cfg.chain_id.lower())  # ChainMismatchError: exit 4
        except BaseException as error:
            self._fail(error)
            raise
        reader: asyncio.Task[None] | None = None
        ticker: asyncio.Task[None] | None = None
        try:
            cursor = self._store.cursor
            if cfg.since or cfg.until:
                cfg = await self._resolve_dates(fresh=cursor is None)
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
            self._source = self._make_failover(start)
            st.chain_id = self._store.chain_id
            st.state = RunState.STREAMING
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

    async def _resolve_dates(self, *, fresh: bool) -> CollectConfig:
        """``since``/``until`` -> exact start and stop blocks through the chain API, printed and
        recorded in the sidecar (``extra``); ``since`` only counts for a fresh dataset."""
        import dataclasses

        from karma_analytics import dates
        from karma_analytics.exceptions import ConnectError, SourceError

        cfg = self.config
        since = cfg.since if fresh else None
        if cfg.since and not fresh:
            logger.warning("ignoring --since %s: the dataset resumes from its sidecar", cfg.since)
        if not (since or cfg.until):
            return cfg
        errors = []
        for source in self.sources:
            try:
                head = await source.head_block_num()
                start, stop = await dates.resolve_range(
                    since,
                    cfg.until,
                    now_ms=int(time.time() * 1000),
                    get_block_time=source.block_time_ms,
                    head_block=head,
                )
                break
            except SourceError as exc:
                if exc.fatal:
                    raise
                errors.append(f"{source.endpoint}: {redact(str(exc))}")
        else:
            raise ConnectError(
                "could not turn --since/--until into block numbers: " + "; ".join(errors),
                fatal=True,
            )
        notes: dict[str, Any] = {}
        if start is not None:
            logger.info("--since %s: starting at block %d", since, start)
            notes["since"] = {"given": since, "start_block": start}
        if stop is not None:
            logger.info("--until %s: stopping after block %d", cfg.until, stop)
            notes["until"] = {"given": cfg.until, "stop_block": stop}
        self._store.note(notes)
        for source in self.sources:
            source.stop_block = stop if stop is not None else source.stop_block
        self.config = dataclasses.replace(
            cfg,
            start_block=start if start is not None else cfg.start_block,
            stop_block=stop if stop is not None else cfg.stop_block,
        )
        self.status.stop_block = self.config.stop_block
        return self.config

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
            st.state = RunState.STOPPED
            return
        st.state = RunState.FAILED
        st.error = redact(str(error)) or type(error).__name__

    async def _finish(self, reason: str) -> CollectSummary:
        st = self.status
        st.ended = time.monotonic()
        st.state = RunState.DONE if reason in ("complete", "already_complete") else RunState.STOPPED
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
        first = self.sources[0]
        return Request.for_token(
            cfg.contract,
            cfg.action,
            source=first.kind,
            endpoint=first.endpoint,  # sources keep credentials out of their endpoint
            irreversible_only=cfg.irreversible_only,
        )

    def _build_sources(self) -> list[Any]:
        """One source per endpoint of the config, all of its protocol."""
        from karma_analytics.sources.base import Selection, SourceSettings, source_class

        cfg = self.config
        cls = source_class(cfg.source)
        selection = Selection(cfg.contract, cfg.action, cfg.irreversible_only)
        settings = SourceSettings(
            api_key=cfg.api_key,
            auth_url=cfg.auth_url,
            workers=cfg.workers,
            extra=dict(cfg.source_options),
        )
        endpoints = cfg.all_endpoints
        if cfg.source != "hyperion" or len(endpoints) == 1:
            return [
                cls.create(endpoint, selection, stop_block=cfg.stop_block, settings=settings)
                for endpoint in endpoints
            ]
        # Hyperion spreads a backfill's windows across every host (issue 9): each source leads
        # with one endpoint and borrows the others as mirrors; the failover rotates the lead.
        import dataclasses

        sources = []
        for i, endpoint in enumerate(endpoints):
            others = endpoints[i + 1 :] + endpoints[:i]
            extra = {**settings.extra, "mirrors": others}
            sources.append(
                cls.create(
                    endpoint,
                    selection,
                    stop_block=cfg.stop_block,
                    settings=dataclasses.replace(settings, extra=extra),
                )
            )
        return sources

    def _make_failover(self, start_block: int) -> Any:
        from karma_analytics.sources.retry import Failover

        store = self._store
        recorded = store.chain_id
        st = self.status

        def learned(chain_id: str) -> None:
            store.bind_chain(chain_id)
            st.chain_id = chain_id

        return Failover(
            self.sources,
            # 0 (and negative) mean "relative to the head": the sources resolve them.
            start_block=start_block if start_block > 0 else (start_block or None),
            stall_seconds=self.config.stall_seconds,
            give_up_after=self.config.give_up_after,
            backoff=self._backoff,
            chain_id=recorded,
            chain_id_source="the dataset" if recorded is not None else "--chain-id",
            on_chain_id=learned,
        )

    async def _read_source(self) -> None:
        from karma_analytics.engine import ConnectionLost, Listening, StopRequested

        engine = self._engine
        st = self.status
        source = self._source
        # A batch is one source read (a socket read, a page); the engine takes it at once.
        batches = source.batches()
        # Memory bound: while a commit is in flight the engine buffers new rows; past this many
        # the reader waits for the commit (TCP backpressure) instead of growing without limit.
        limit = max(1_000, self.config.flush_rows)
        countdown = _YIELD_EVERY
        try:
            async for batch in batches:
                first = batch[0]
                if type(first) is ConnectionLost:
                    st.state = RunState.RECONNECTING
                    restarts = st.reconnects
                    self._feed(first)
                    if st.reconnects == restarts:
                        # No Restart: the engine is stopping (only the commit in flight is
                        # left). The source must not be resumed without one; stop reading.
                        return
                    continue
                if st.state is not RunState.STREAMING or st.start_block is None:
                    for event in batch:
                        if type(event) is Listening:
                            if st.start_block is None:
                                st.start_block = st.next_block = event.next_block
                            if st.state is not RunState.STOPPING:
                                st.state = RunState.STREAMING
                            st.attempt, st.endpoint = 0, source.endpoint
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
            return
        except Exception as error:  # a bug: stop cleanly, keep what is complete
            self._fatal = error
            logger.exception("collector source failed")
            self._feed(StopRequested())
            return
        # The sources returned: every block up to the stop block has been delivered, and the
        # engine is stopping; if it is not, the stream ended early and that is a fault.
        if engine.stop_reason is None and engine.state.name != "STOPPING":
            self._fatal = ProtocolError(
                f"{source.endpoint} ended the stream before the stop block", fatal=True
            )
            self._feed(StopRequested())


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
            "source": "dfuse",
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
