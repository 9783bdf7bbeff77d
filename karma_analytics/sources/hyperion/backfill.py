"""The parallel REST backfill: block windows fetched concurrently, emitted in block order.

Paging inside a window (hyperion.md §4.2)::

    GET /v2/history/get_actions?filter=<contract>:<action>&sort=asc&after=<lo>&before=<hi>
        &global_sequence=<cursor+1>-<2^53-1>&limit=<L>

The cursor is the last document's ``global_sequence``, independent of block boundaries, so a
block holding more matching actions than a page is paged through exactly once (never
``skip``, never ``after=<last block>``, §0.1). A short page is not the end (Elasticsearch may
return partial hits on its timeout, §1.4): a window is complete only after an **empty** page.
Every page is checked: documents inside ``[lo, hi]`` and sequences strictly increasing above
the cursor, else the window is fetched again.

Parallelism: the range is cut into windows numbered 0, 1, 2, ...; ``workers`` tasks fetch
them concurrently and the generator yields them strictly in number order, each followed by
``Progress(hi)``, so the engine sees one ordered stream (its single cursor and commit
protocol are unchanged). The :class:`ReorderBuffer` bounds memory however far one slow
window lags: a worker may start window ``k`` only while ``k < next_to_emit + capacity``, so
at most ``capacity`` windows are fetched or waiting at any time. Window sizes adapt to the
observed density (:class:`WindowPlanner`) so that one window is a few pages: the last,
empty page of each window is the price of completeness.

Hosts: windows are spread over several hosts (:class:`HostPool`), each paced to its
``rate_limit_rpm`` and paused for its ``retry-after``. A failed window goes back to the queue
and is fetched again from the cursor it reached (its pages so far are kept), by the least busy
usable host: the cursor is the chain's own receipt sequence, the same on every host of the chain
(§4.3). This is load balancing across windows, not a stream
retry: when no request has succeeded for ``max_failures`` attempts in a row, the last error
is raised to the runner (transient: it backs off and restarts the stream at its safe
point); a host answering a fatal error (another chain, a 4xx) is dropped, and when none is
left the error is raised as fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from karma_analytics.engine import ActionReceived, Progress
from karma_analytics.exceptions import ProtocolError, SourceError

from .docs import DocStats, FastDecoder, decode_doc, doc_block, doc_sequence
from .rest import HyperionHost, Page

__all__ = [
    "BackfillStats",
    "HostPool",
    "ReorderBuffer",
    "Window",
    "WindowPlanner",
    "backfill",
    "fetch_window",
]

logger = logging.getLogger(__name__)


# --- pure planning ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Blocks ``lo..hi`` (inclusive), the ``seq``-th window of the range."""

    seq: int
    lo: int
    hi: int


class WindowPlanner:
    """Cuts ``first..last`` into consecutive windows whose size follows the density (pure).

    Args:
        first, last: the block range (inclusive).
        page_size: documents per page.
        target_pages: pages one window should hold (the empty page that closes a window costs
            one request per window: more pages per window, less overhead, more memory).
        initial_blocks: size of the windows planned before any density is known.
        min_blocks, max_blocks: bounds of a window's size.
    """

    def __init__(
        self,
        first: int,
        last: int,
        *,
        page_size: int,
        target_pages: float = 8.0,
        initial_blocks: int = 100,
        min_blocks: int = 1,
        max_blocks: int = 200_000,
    ) -> None:
        self.next_block = first
        self.last = last
        self.page_size = max(1, page_size)
        self.target_pages = target_pages
        self.blocks = max(min_blocks, min(initial_blocks, max_blocks))
        self.min_blocks = min_blocks
        self.max_blocks = max_blocks
        self.next_seq = 0
        self._seen_blocks = 0
        self._seen_docs = 0

    def done(self) -> bool:
        """Whether every block of the range is in a planned window."""
        return self.next_block > self.last

    def next(self) -> Window:
        """The next window (call only when not :meth:`done`)."""
        lo = self.next_block
        hi = min(self.last, lo + self.blocks - 1)
        window = Window(self.next_seq, lo, hi)
        self.next_seq += 1
        self.next_block = hi + 1
        return window

    def observe(self, blocks: int, docs: int) -> None:
        """Learn from a fetched window: ``docs`` documents over ``blocks`` blocks."""
        self._seen_blocks += blocks
        self._seen_docs += docs
        density = self._seen_docs / max(1, self._seen_blocks)
        want = self.target_pages * self.page_size / density if density > 0 else self.max_blocks
        # Grow at most 4x per observation: a dense stretch after a sparse one must not find
        # one huge window in flight.
        self.blocks = int(max(self.min_blocks, min(self.max_blocks, want, self.blocks * 4)))


class ReorderBuffer:
    """Finished windows waiting for their turn; bounded by ``capacity`` windows (pure).

    ``may_start(seq)`` is the admission rule: a window may be fetched only while
    ``seq < next_seq + capacity``; together with in-order emission it bounds the windows held
    (in flight or finished) to ``capacity``.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.next_seq = 0
        self._done: dict[int, Any] = {}
        self.peak = 0

    def may_start(self, seq: int) -> bool:
        return seq < self.next_seq + self.capacity

    def put(self, seq: int, item: Any) -> None:
        if seq < self.next_seq or seq in self._done:
            raise ValueError(f"window {seq} finished twice")
        self._done[seq] = item
        self.peak = max(self.peak, len(self._done))

    def ready(self) -> bool:
        return self.next_seq in self._done

    def pop(self) -> Any:
        """The next window's item, in sequence order (call only when :meth:`ready`)."""
        item = self._done.pop(self.next_seq)
        self.next_seq += 1
        return item

    def __len__(self) -> int:
        return len(self._done)


# --- hosts --------------------------------------------------------------------------------------


@dataclass
class _HostState:
    host: HyperionHost
    interval: float  # seconds between request starts (0 = unpaced)
    next_start: float = 0.0
    cooling_until: float = 0.0
    busy: int = 0
    failures: int = 0
    dropped: SourceError | None = None


class HostPool:
    """Several hosts with per-host pacing, pauses and drops.

    Args:
        hosts: the hosts; the first is the primary (order breaks ties).
        rate_limit_rpm: requests per minute allowed per host, ``None`` = unpaced (then the
            server's 429 answers pace it).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        hosts: Sequence[HyperionHost],
        *,
        rate_limit_rpm: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        interval = 60.0 / rate_limit_rpm if rate_limit_rpm else 0.0
        self._states = [_HostState(h, interval) for h in hosts]
        self._clock = clock

    @property
    def hosts(self) -> list[HyperionHost]:
        return [s.host for s in self._states if s.dropped is None]

    def usable(self) -> bool:
        return any(s.dropped is None for s in self._states)

    def last_fatal(self) -> SourceError | None:
        errors = [s.dropped for s in self._states if s.dropped is not None]
        return errors[-1] if errors else None

    def pick(self) -> _HostState:
        """The usable host that can start soonest, the least busy first."""
        now = self._clock()
        states = [s for s in self._states if s.dropped is None]
        if not states:
            raise self.last_fatal() or SourceError("no Hyperion host left", fatal=True)
        return min(states, key=lambda s: (max(s.cooling_until, now), s.busy, s.failures))

    async def pace(self, state: _HostState) -> None:
        """Wait until ``state``'s host may start a request (cool-down, then rate pacing)."""
        while True:
            now = self._clock()
            start = max(now, state.cooling_until, state.next_start)
            if start <= now:
                state.next_start = now + state.interval
                return
            await asyncio.sleep(start - now)

    def succeeded(self, state: _HostState) -> None:
        state.failures = 0

    def failed(self, state: _HostState, error: SourceError) -> None:
        """Record a failure: drop the host on a fatal error, else cool it down."""
        if error.fatal:
            state.dropped = error
            logger.warning("dropping Hyperion host %s: %s", state.host.base_url, error)
            return
        state.failures += 1
        wait = getattr(error, "retry_after", None)
        if wait is None:
            wait = min(30.0, 0.2 * 2 ** min(state.failures - 1, 8))
        state.cooling_until = max(state.cooling_until, self._clock() + wait)
        logger.info(
            "Hyperion host %s failed (%s); resting %.1f s", state.host.base_url, error, wait
        )


# --- fetching -----------------------------------------------------------------------------------


@dataclass
class BackfillStats:
    """What a backfill did (for logs, tests and the benchmark)."""

    windows: int = 0
    pages: int = 0
    short_pages: int = 0  # short pages followed by more documents (not the end, §1.4)
    window_retries: int = 0
    docs: DocStats = field(default_factory=DocStats)
    peak_buffered: int = 0


@dataclass
class WindowProgress:
    """How far a window got: its pages so far survive a failed request, so a retry (on any
    host of the chain: the cursor is the chain's own global_sequence) asks for the *same
    cursor* again instead of the whole window (issue 9: retry the same cursor)."""

    cursor: int = 0
    events: list[ActionReceived] = field(default_factory=list)
    docs_seen: int = 0
    short: bool = False
    ordered: bool = True
    last_key: tuple[int, int] = (0, -1)


async def fetch_window(
    host: HyperionHost,
    window: Window,
    contract: str,
    action: str,
    *,
    pace: Callable[[], Any] | None = None,
    stats: BackfillStats | None = None,
    ignore_cache: bool = False,
    decoder: FastDecoder | None = None,
    progress: WindowProgress | None = None,
) -> tuple[list[ActionReceived], int]:
    """Every matching document of ``window``, paged by global_sequence until an empty page.

    Pages are decoded as typed structs (``decoder``, one per stream: it remembers validated
    names and ids); a document the typed path does not accept is decoded from its dict form
    by :func:`~.docs.decode_doc`, which decides.

    Returns:
        The window's events ordered by (block, receipt sequence) and the number of documents.

    Raises:
        ProtocolError: a page broke the query's contract (block outside the window, sequences
            not increasing above the cursor).
        SourceError: the host failed (see rest.py).
    """
    state = progress if progress is not None else WindowProgress()
    cursor = state.cursor
    events = state.events
    short = state.short  # the previous page was short: if more follows, it was not the end
    doc_stats = stats.docs if stats is not None else None
    fast = decoder or FastDecoder(contract, action)
    lo, hi = window.lo, window.hi
    ordered = state.ordered  # (block, sequence) order unless a doc held several transfers
    last_key = state.last_key

    async def request(after: int) -> Page:
        if pace is not None:
            await pace()
        return await host.get_actions(
            contract, action, lo, hi, after, ignore_cache=ignore_cache, typed=True
        )

    # Pipelined: the next page is asked for as soon as this one's body is in (its cursor is
    # the last document's sequence), and this page is decoded while that request is in
    # flight. Still one request per window at a time, but the decoding is off the critical
    # path of the window's chain of requests.
    pending = asyncio.ensure_future(request(cursor))
    try:
        while True:
            page = await pending
            if stats is not None:
                stats.pages += 1
            docs = page.docs
            if not docs:
                break
            if short and stats is not None:
                stats.short_pages += 1
            short = bool(host.page_size) and len(docs) < (host.page_size or 0)
            last = docs[-1]
            after = last.global_sequence if page.typed else doc_sequence(last)
            if after > cursor:  # else the checks below raise before another request
                pending = asyncio.ensure_future(request(after))
            dicts: list[Any] | None = None if page.typed else docs
            for index, doc in enumerate(docs):
                decoded: Sequence[ActionReceived] | None = None
                if dicts is None:
                    block = doc.block_num
                    seq = doc.global_sequence
                    if lo <= block <= hi and seq > cursor:
                        event = fast.decode(doc, doc_stats)
                        if event is not None:
                            decoded = (event,)
                    if decoded is None:
                        dicts = page.dicts()
                if decoded is None:
                    raw = dicts[index]
                    block = doc_block(raw)
                    seq = doc_sequence(raw)
                    if not lo <= block <= hi:
                        raise ProtocolError(
                            f"{host.base_url}: get_actions for blocks {lo}..{hi} returned "
                            f"block {block}"
                        )
                    if seq <= cursor:
                        raise ProtocolError(
                            f"{host.base_url}: get_actions sequences not increasing "
                            f"({seq} after {cursor}) in blocks {lo}..{hi}"
                        )
                    decoded = decode_doc(raw, contract, action, doc_stats)
                    if len(decoded) > 1:
                        ordered = False
                cursor = seq
                if decoded:
                    first = decoded[0]
                    gs = first.global_sequence
                    key = (first.block_num, -1 if gs is None else gs)
                    if key < last_key:
                        ordered = False
                    last_key = key
                    events.extend(decoded)
            # The page is whole: remember it (a failure of the next request resumes here).
            state.cursor, state.short, state.ordered = cursor, short, ordered
            state.last_key = last_key
            state.docs_seen += len(docs)
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
    # Collapsed ≤4.0.3 documents sort by their first receipt (docs.decode_docs).
    if not ordered:
        events.sort(key=_order)
    return events, state.docs_seen


def _order(event: ActionReceived) -> tuple[int, int]:
    seq = event.global_sequence
    return event.block_num, -1 if seq is None else seq


def window_batch(window: Window, events: list[ActionReceived]) -> list[Any]:
    """The events of a finished window followed by ``Progress(hi)``.

    The progress carries the id of ``hi`` when a document of ``hi`` named it, else ``""``
    (Hyperion names a block's id only in its documents; the engine checks ids only against
    an open block of the same number).
    """
    block_id = events[-1].block_id if events and events[-1].block_num == window.hi else ""
    batch: list[Any] = list(events)
    batch.append(Progress(window.hi, block_id))
    return batch


async def backfill(
    pool: HostPool,
    contract: str,
    action: str,
    first: int,
    last: int,
    *,
    workers: int = 4,
    capacity: int | None = None,
    target_pages: float = 8.0,
    initial_blocks: int = 100,
    max_failures: int = 8,
    stats: BackfillStats | None = None,
    ignore_cache: bool = False,
) -> AsyncIterator[list[Any]]:
    """Yield the events of blocks ``first..last`` window by window, in block order.

    Each batch is one window's events followed by ``Progress(window.hi)``.

    Args:
        pool: the hosts.
        contract, action: the selection.
        first, last: the range (inclusive); nothing is yielded when ``first > last``.
        workers: concurrent window fetches.
        capacity: windows held at most (in flight or finished); default ``workers + 2``.
        target_pages, initial_blocks: window sizing (:class:`WindowPlanner`).
        max_failures: failed requests in a row (no success between) before the last error
            goes to the runner.
        stats: counters to fill, optional.
        ignore_cache: bypass Hyperion's response cache (near the tip a cached answer can be
            an old one with a fresh ``last_indexed_block``, §4.4).

    Raises:
        SourceError: see the module docstring.
    """
    if first > last:
        return
    stats = stats if stats is not None else BackfillStats()
    page_size = max(1, min((h.page_size or 10) for h in pool.hosts) if pool.hosts else 10)
    planner = WindowPlanner(
        first, last, page_size=page_size, target_pages=target_pages, initial_blocks=initial_blocks
    )
    buffer = ReorderBuffer(capacity or workers + 2)
    decoder = FastDecoder(contract, action)
    retry: list[tuple[int, Window]] = []  # failed windows, lowest seq first
    progress: dict[int, WindowProgress] = {}  # by window seq, until the window is done
    changed = asyncio.Condition()
    failure: list[BaseException] = []
    streak = 0
    active = 0  # windows taken and neither finished nor queued again

    def next_window() -> Window | None:
        if retry:
            return heapq.heappop(retry)[1]
        if not planner.done() and buffer.may_start(planner.next_seq):
            return planner.next()
        return None

    def finished() -> bool:
        return planner.done() and not retry and active == 0

    async def fetch(window: Window) -> None:
        nonlocal streak, active
        state = pool.pick()
        state.busy += 1
        try:
            events, docs = await fetch_window(
                state.host,
                window,
                contract,
                action,
                pace=lambda: pool.pace(state),
                stats=stats,
                ignore_cache=ignore_cache,
                decoder=decoder,
                progress=progress.setdefault(window.seq, WindowProgress()),
            )
        except SourceError as exc:
            pool.failed(state, exc)
            stats.window_retries += 1
            streak += 1
            async with changed:
                active -= 1
                if not pool.usable() or streak >= max_failures:
                    failure.append(exc)
                else:
                    heapq.heappush(retry, (window.seq, window))
                changed.notify_all()
            return
        finally:
            state.busy -= 1
        pool.succeeded(state)
        streak = 0
        progress.pop(window.seq, None)
        async with changed:
            active -= 1
            planner.observe(window.hi - window.lo + 1, docs)
            buffer.put(window.seq, window_batch(window, events))
            stats.windows += 1
            stats.peak_buffered = max(stats.peak_buffered, len(buffer))
            changed.notify_all()

    async def worker() -> None:
        nonlocal active
        try:
            while True:
                async with changed:
                    while True:
                        if failure or finished():
                            return
                        window = next_window()
                        if window is not None:
                            active += 1
                            break
                        await changed.wait()
                await fetch(window)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: end the stream with it
            async with changed:
                failure.append(exc)
                changed.notify_all()

    tasks = [asyncio.create_task(worker(), name=f"hyperion-window-{i}") for i in range(workers)]
    try:
        while True:
            async with changed:
                await changed.wait_for(lambda: buffer.ready() or bool(failure) or finished())
                if buffer.ready():
                    batch = buffer.pop()
                    changed.notify_all()
                elif failure:
                    raise failure[0]
                else:
                    return
            yield batch
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
