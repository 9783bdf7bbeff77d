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
them concurrently and the generator yields them strictly in number order, each window's last
batch ending with ``Progress(hi)``, so the engine sees one ordered stream (its single cursor
and commit protocol are unchanged). The head window (the lowest not yet emitted) streams:
its complete blocks are yielded page by page as they arrive. The :class:`ReorderBuffer`
bounds what the other windows hold, in events, however far the head lags: past the bound a
window stops after its current page and waits in the queue (its cursor kept); the head and
the window right after it go on, and so does every window once nothing is left to plan.
Window sizes adapt to the observed density (:class:`WindowPlanner`) so that one window is a
few pages: the last, empty page of each window is the price of completeness. A window much
longer than planned (a burst after a quiet stretch) is split above its last document's block
(:meth:`ReorderBuffer.split`) so that idle workers share its rest: the head during the run,
any window at the end of the range.

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
import bisect
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

#: Pages of events the reorder buffer may hold per worker (its default bound). Measured in
#: bench/RESULTS.md: 8 per worker left 8 workers waiting on the bound at 100 ms latency (0.40
#: of the ideal against 0.54 at 16); a 4-worker collector of 5 M transfers peaks at 242 MB.
BOUND_PAGES_PER_WORKER = 16

#: Pages a window is planned to hold: its closing empty page costs one request per window,
#: and splits (ReorderBuffer.split) keep long windows from holding the others up.
WINDOW_PAGES = 16.0


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
    """The windows started and not yet wholly emitted, by first block (pure).

    The head (the lowest window not emitted) is emitted as it is fetched: the events of its
    complete blocks leave at once (:meth:`take`), so a long head window holds little. The other
    windows wait, and two bounds keep what they hold small however far the head lags:

    - ``capacity``: windows held (started, parked, finished) at most;
    - ``max_events``: events held at most, give or take one page per worker and the window
      right after the head. A window may start or fetch its next page only below it, except
      the head and the window right after it (the stream never stalls on the bound), and
      every window once :attr:`ending` is set (nothing is left to plan).

    Windows are bounded by events, not by their number, because one window can hold many
    times the pages planned for it (a burst of activity after a quiet stretch); such a head
    is split (:meth:`split`) so that other workers share its rest. Windows are keyed by their
    first block, so a split's second half sorts between the head and the next window.
    """

    def __init__(self, capacity: int, max_events: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.max_events = max_events
        self.next_block: int | None = None  # first block of the head
        # No window is left to plan: every held window may go on (what they will hold is
        # bounded by their ranges, and the end of the range is no place to wait).
        self.ending = False
        self._held: dict[int, WindowProgress] = {}
        self.peak = 0  # windows held at most
        self.peak_events = 0

    def __len__(self) -> int:
        return len(self._held)

    def events(self) -> int:
        """Events held (fetched and not yet emitted)."""
        return sum(len(p.events) for p in self._held.values())

    def _room(self) -> bool:
        return self.max_events is None or self.events() < self.max_events

    def is_head(self, lo: int) -> bool:
        return self.next_block is None or lo == self.next_block

    def _next_to_head(self, lo: int) -> bool:
        """The head, or the window right after it (a split's second half, usually): both
        go on past the bound, as the head is what frees everything else."""
        if self.is_head(lo):
            return True
        head = self._held.get(self.next_block)  # type: ignore[arg-type]
        return head is not None and lo == head.window.hi + 1

    def may_start(self, lo: int) -> bool:
        """Whether the window beginning at block ``lo`` may be started now."""
        return self._next_to_head(lo) or (len(self._held) < self.capacity and self._room())

    def may_continue(self, lo: int) -> bool:
        """Whether the held window beginning at block ``lo`` may fetch another page now."""
        return self._next_to_head(lo) or self.ending or self._room()

    def hold(self, progress: WindowProgress) -> None:
        """Start holding ``progress.window`` (``progress`` fills as it is fetched)."""
        lo = progress.window.lo
        if (self.next_block is not None and lo < self.next_block) or lo in self._held:
            raise ValueError(f"window at block {lo} held twice")
        if self.next_block is None:
            self.next_block = lo
        self._held[lo] = progress
        self.peak = max(self.peak, len(self._held))

    def progress(self, lo: int) -> WindowProgress:
        return self._held[lo]

    def observe(self) -> None:
        """Record the events held now (call after a page was added)."""
        self.peak_events = max(self.peak_events, self.events())

    def split(self, page_size: int, min_pages: float, *, any_window: bool = False) -> Window | None:
        """Cut the rest of an unfinished window in two when it looks like ``min_pages`` pages
        or more; the second half becomes a window of its own (returned, and held).

        The window is the head, or with ``any_window`` (no new window is left to start: the
        end of the range) the one with the longest rest. A rest is estimated from the window's
        own density so far. The cut is above the window's last document's block, so nothing
        fetched moves; the window stops at the cut (:func:`fetch_window` reads its window at
        every page).
        """
        if self.next_block is None or len(self._held) >= self.capacity:
            return None
        if any_window:
            candidates = list(self._held.values())
        else:
            head = self._held.get(self.next_block)
            candidates = [head] if head is not None else []
        best: tuple[float, WindowProgress, int, int] | None = None
        for progress in candidates:
            if progress.done or progress.docs_seen == 0:
                continue
            window = progress.window
            done_to = max(window.lo - 1, progress.tail_block)
            rest = window.hi - done_to
            pages = progress.docs_seen / max(1, done_to - window.lo + 1) * rest / page_size
            if rest >= 2 and pages >= min_pages and (best is None or pages > best[0]):
                best = (pages, progress, done_to, rest)
        if best is None:
            return None
        _, progress, done_to, rest = best
        window = progress.window
        cut = done_to + 1 + rest // 2
        progress.window = Window(window.seq, window.lo, cut - 1)
        second = WindowProgress(Window(window.seq, cut, window.hi))
        self.hold(second)
        return second.window

    def take(self) -> list[Any] | None:
        """What the head can emit now, in order, or ``None``.

        A finished head gives its remaining events and ``Progress(hi)``, and the next window
        becomes the head; an unfinished one gives the events of the blocks below its last
        document's block (those blocks are complete: sequences rise with block numbers).
        """
        if self.next_block is None:
            return None
        head = self._held.get(self.next_block)
        if head is None:
            return None
        if head.done:
            hi = head.window.hi
            batch: list[Any] = head.take(None)
            batch.append(Progress(hi, head.tail_id if head.tail_block == hi else ""))
            del self._held[self.next_block]
            self.next_block = hi + 1
            return batch
        events = head.take(head.tail_block)
        return events or None


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
    parked: int = 0  # times a window stopped at the event bound and went back to the queue
    splits: int = 0  # head windows cut in two to share their rest
    docs: DocStats = field(default_factory=DocStats)
    peak_buffered: int = 0  # windows held at most
    peak_events: int = 0  # events held at most


@dataclass
class WindowProgress:
    """How far a window got. Its pages so far survive a failed request, so a retry (on any
    host of the chain: the cursor is the chain's own global_sequence) asks for the *same
    cursor* again instead of the whole window (issue 9: retry the same cursor); a window
    parked at the reorder buffer's bound resumes from here too.

    ``events`` holds the events fetched and not yet taken; a page's events join it only once
    the whole page is decoded and checked, so a page that fails half way leaves nothing.
    """

    window: Window
    cursor: int = 0
    events: list[ActionReceived] = field(default_factory=list)
    docs_seen: int = 0
    short: bool = False
    ordered: bool = True  # ``events`` is in (block, sequence) order
    last_key: tuple[int, int] = (0, -1)
    tail_block: int = 0  # block of the last document seen: every block below it is complete
    tail_id: str = ""  # that block's id (Hyperion names ids only in documents)
    done: bool = False  # the closing empty page was seen

    def take(self, below: int | None) -> list[ActionReceived]:
        """Remove and return the events of blocks below ``below`` (all: ``None``), in order."""
        events = self.events
        if not self.ordered:
            # Collapsed ≤4.0.3 documents sort by their first receipt (docs.decode_docs).
            events.sort(key=_order)
            self.ordered = True
        if below is None:
            cut = len(events)
        else:
            cut = bisect.bisect_left(events, below, key=_block)
            if cut == 0:
                return []
        if cut == len(events):
            self.events = []
            return events
        taken, self.events = events[:cut], events[cut:]
        return taken


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
    may_continue: Callable[[], bool] | None = None,
    on_page: Callable[[], None] | None = None,
) -> WindowProgress:
    """The documents of ``window``, paged by global_sequence until an empty page.

    Pages are decoded as typed structs (``decoder``, one per stream: it remembers validated
    names and ids); a document the typed path does not accept is decoded from its dict form
    by :func:`~.docs.decode_doc`, which decides.

    Each whole page's events are added to ``progress.events`` and ``on_page`` is called (the
    backfill then takes the complete blocks of the head window). Before asking for another
    page, ``may_continue`` is asked: when it says no, the window stops after the current page
    with ``progress.done`` false, to be resumed from ``progress`` later.

    Returns:
        ``progress`` (a new one if none was given): ``take(None)`` gives the events not taken
        yet, in (block, receipt sequence) order.

    Raises:
        ProtocolError: a page broke the query's contract (block outside the window, sequences
            not increasing above the cursor).
        SourceError: the host failed (see rest.py).
    """
    # ``progress.window`` is the window: a split (ReorderBuffer.split) may lower its ``hi``
    # between pages, so it is read at every request and every page.
    state = progress if progress is not None else WindowProgress(window)
    cursor = state.cursor
    short = state.short  # the previous page was short: if more follows, it was not the end
    doc_stats = stats.docs if stats is not None else None
    decode_fast = (decoder or FastDecoder(contract, action)).decode
    lo = state.window.lo
    ordered = state.ordered  # (block, sequence) order unless a doc held several transfers
    last_key = state.last_key

    async def request(after: int, hi: int) -> Page:
        if pace is not None:
            await pace()
        return await host.get_actions(
            contract, action, lo, hi, after, ignore_cache=ignore_cache, typed=True
        )

    # Pipelined: the next page is asked for as soon as this one's body is in (its cursor is
    # the last document's sequence), and this page is decoded while that request is in
    # flight. Still one request per window at a time, but the decoding is off the critical
    # path of the window's chain of requests.
    asked = state.window.hi
    pending: asyncio.Future[Page] | None = asyncio.ensure_future(request(cursor, asked))
    try:
        while pending is not None:
            page = await pending
            pending = None
            hi = state.window.hi  # documents in hi+1..asked belong to a split's second half
            page_hi = asked
            if stats is not None:
                stats.pages += 1
            docs = page.docs
            if not docs:
                state.done = True
                break
            if short and stats is not None:
                stats.short_pages += 1
            short = bool(host.page_size) and len(docs) < (host.page_size or 0)
            last = docs[-1]
            after = last.global_sequence if page.typed else doc_sequence(last)
            # else the checks below raise before another request
            if after > cursor and (may_continue is None or may_continue()):
                asked = state.window.hi
                pending = asyncio.ensure_future(request(after, asked))
            elif stats is not None and after > cursor:
                stats.parked += 1
            events: list[ActionReceived] = []
            dicts: list[Any] | None = None if page.typed else docs
            block = tail = state.tail_block
            kept = len(docs)
            fast_events = 0
            last_block, last_seq = last_key
            for index, doc in enumerate(docs):
                if dicts is None:
                    # The fast path: a typed document holding one execution (almost all).
                    block = doc.block_num
                    seq = doc.global_sequence
                    if hi < block <= page_hi:
                        kept = index
                        break
                    if lo <= block <= hi and seq > cursor:
                        event = decode_fast(doc)
                        if event is not None:
                            gs = event.global_sequence
                            if block < last_block or (block == last_block and gs < last_seq):
                                ordered = False
                            last_block, last_seq = block, gs
                            events.append(event)
                            fast_events += 1
                            cursor, tail = seq, block
                            continue
                    dicts = page.dicts()
                # The reference path decides the rest (and raises on a broken page).
                raw = dicts[index]
                block = doc_block(raw)
                seq = doc_sequence(raw)
                if hi < block <= page_hi:
                    kept = index
                    break
                if not lo <= block <= hi:
                    raise ProtocolError(
                        f"{host.base_url}: get_actions for blocks {lo}..{hi} returned block {block}"
                    )
                if seq <= cursor:
                    raise ProtocolError(
                        f"{host.base_url}: get_actions sequences not increasing "
                        f"({seq} after {cursor}) in blocks {lo}..{hi}"
                    )
                decoded = decode_doc(raw, contract, action, doc_stats)
                if len(decoded) > 1:
                    ordered = False
                cursor, tail = seq, block
                if decoded:
                    first = decoded[0]
                    gs = -1 if first.global_sequence is None else first.global_sequence
                    if first.block_num < last_block or (
                        first.block_num == last_block and gs < last_seq
                    ):
                        ordered = False
                    last_block, last_seq = first.block_num, gs
                    events.extend(decoded)
            if doc_stats is not None:
                doc_stats.docs += fast_events
                doc_stats.transfers += fast_events
            last_key = (last_block, last_seq)
            # The page is whole: keep it (a failure of the next request resumes here).
            if events and events[-1].block_num == tail:
                state.tail_id = events[-1].block_id
            elif tail != state.tail_block:
                state.tail_id = ""
            state.tail_block = tail
            state.events.extend(events)
            state.cursor, state.short, state.ordered = cursor, short, ordered
            state.last_key = last_key
            state.docs_seen += kept
            if on_page is not None:
                on_page()
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
    if state.done and on_page is not None:
        on_page()
    return state


def _order(event: ActionReceived) -> tuple[int, int]:
    seq = event.global_sequence
    return event.block_num, -1 if seq is None else seq


def _block(event: ActionReceived) -> int:
    return event.block_num


class _Changed:
    """A broadcast wake-up: every waiter re-checks its condition after each :meth:`notify`.
    (One event loop, so checking a condition and starting to wait cannot be interleaved.)"""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


async def backfill(
    pool: HostPool,
    contract: str,
    action: str,
    first: int,
    last: int,
    *,
    workers: int = 4,
    capacity: int | None = None,
    max_events: int | None = None,
    target_pages: float = WINDOW_PAGES,
    initial_blocks: int = 100,
    max_failures: int = 8,
    stats: BackfillStats | None = None,
    ignore_cache: bool = False,
) -> AsyncIterator[list[Any]]:
    """Yield the events of blocks ``first..last`` in block order.

    Each batch holds events of complete blocks; the last batch of each window ends with
    ``Progress(window.hi)``.

    Args:
        pool: the hosts.
        contract, action: the selection.
        first, last: the range (inclusive); nothing is yielded when ``first > last``.
        workers: concurrent window fetches.
        capacity: windows held at most (started and not wholly emitted); default
            ``4 * workers + 2`` (splits add windows; events are the real bound).
        max_events: events held at most past the head window (:class:`ReorderBuffer`);
            default ``workers * BOUND_PAGES_PER_WORKER * page size``.
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
    if max_events is None:
        max_events = workers * BOUND_PAGES_PER_WORKER * page_size
    buffer = ReorderBuffer(capacity or 4 * workers + 2, max(page_size, max_events))
    decoder = FastDecoder(contract, action)
    queue: list[int] = []  # failed and parked windows by first block, lowest first
    changed = _Changed()
    failure: list[BaseException] = []
    streak = 0

    def next_window() -> int | None:
        """The first block of the window to fetch next, or ``None`` (wait)."""
        # A queued window first, the lowest (it may be the head, which never waits); then a
        # share of a head much longer than planned; then a new window.
        if queue and buffer.may_continue(queue[0]):
            return heapq.heappop(queue)
        # At the end of the range, any window with a few pages left is shared: the last
        # windows would otherwise finish one by one on a worker each.
        ending = buffer.ending
        second = buffer.split(page_size, 2.0 if ending else target_pages, any_window=ending)
        if second is not None:
            stats.splits += 1
        elif not ending and buffer.may_start(planner.next_block):
            second = planner.next()
            buffer.hold(WindowProgress(second))
            buffer.ending = planner.done()
        if second is None:
            return None
        stats.peak_buffered = max(stats.peak_buffered, len(buffer))
        return second.lo

    def finished() -> bool:
        return planner.done() and len(buffer) == 0

    def on_page() -> None:
        buffer.observe()
        changed.notify()

    async def fetch(lo: int) -> None:
        nonlocal streak
        state = pool.pick()
        state.busy += 1
        progress = buffer.progress(lo)
        try:
            await fetch_window(
                state.host,
                progress.window,
                contract,
                action,
                pace=lambda: pool.pace(state),
                stats=stats,
                ignore_cache=ignore_cache,
                decoder=decoder,
                progress=progress,
                may_continue=lambda: buffer.may_continue(lo),
                on_page=on_page,
            )
        except SourceError as exc:
            pool.failed(state, exc)
            stats.window_retries += 1
            streak += 1
            if not pool.usable() or streak >= max_failures:
                failure.append(exc)
            else:
                heapq.heappush(queue, lo)
            changed.notify()
            return
        finally:
            state.busy -= 1
        pool.succeeded(state)
        streak = 0
        if progress.done:
            window = progress.window
            planner.observe(window.hi - window.lo + 1, progress.docs_seen)
            stats.windows += 1
        else:  # parked at the bound: resumes from its cursor when there is room
            heapq.heappush(queue, lo)
        changed.notify()

    async def worker() -> None:
        try:
            while True:
                while True:
                    if failure or finished():
                        return
                    lo = next_window()
                    if lo is not None:
                        break
                    await changed.wait()
                await fetch(lo)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: end the stream with it
            failure.append(exc)
            changed.notify()

    tasks = [asyncio.create_task(worker(), name=f"hyperion-window-{i}") for i in range(workers)]
    try:
        while True:
            batch = buffer.take()
            if batch is not None:
                stats.peak_events = buffer.peak_events
                changed.notify()  # room for the windows waiting on the bound
                yield batch
                continue
            if failure:
                raise failure[0]
            if finished():
                return
            await changed.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
