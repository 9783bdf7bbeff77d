"""A local Hyperion History API over the deterministic devnet chain (aiohttp + Socket.IO).

Faithful to the conformance checklist of hyperion.md §7 for the versions 3.3 (3.3.9-8), 3.5
(3.5.0-3), 4.0.5 and 4.0.7, so that ``chain.truth`` decides what a correct client collects.

Interface (kept stable for the Hyperion client and its tests)::

    server = HyperionServer(hyperion_version="4.0.7", head=300_000, block_interval=0)
    await server.start()
    server.url        # "http://127.0.0.1:PORT": REST at /v2/..., /v1/chain/...; Socket.IO at
                      # the same host with socketio_path "stream" (websocket transport only)
    server.head, server.lib, server.chain, server.stats
    await server.stop()

    with HyperionThread(hyperion_version="3.3", error_rate=0.1) as hyperion:   # sync code
        hyperion.url, hyperion.chain.truth(a, b), hyperion.wait_for(lambda: ...)

Options (:class:`HyperionOptions`, also as keyword overrides): the chain and clock options of
the dfuse devnet (``seed``, ``head``, ``block_interval``, ``lib_lag``, ``transfers_per_block``,
``genesis_ms``, ``accounts``, ``cache_blocks``) plus ``missed_slot_rate``, ``chain_id``,
``hyperion_version``, ``max_limit`` and the faults (seeded by ``fault_seed``): ``latency_ms``,
``rate_limit`` (requests per ``rate_window`` s per client IP), ``error_rate`` (5xx JSON and HTML
bodies), ``short_page_rate`` (a page cut short although more docs exist, never to zero),
``index_lag`` (the last N blocks below the index tip are only partly searchable, out of block
order), ``data_bug`` ("none", "collapse-identical", "fragment-notifications"),
``stream_never_ack``, ``stream_relay_down_after`` (see ``hyperion_stream``).

Routes: ``GET /v2/history/get_actions``, ``GET /v2/history/get_transaction``, ``GET
/v2/health``, ``GET|POST /v1/chain/get_info``, ``GET|POST /v1/chain/get_block``, ``GET /``
(4.x only), Fastify-style 404 JSON for anything else; Socket.IO at ``/stream/``.

The devnet's clock: the head advances one block every ``block_interval`` s (frozen when <= 0),
LIB = head - ``lib_lag``; the index tip (``last_indexed_block``) is the head, as Hyperion's live
reader indexes reversible blocks too (§1.6). "Now" for dates is the head block's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import random
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from ..exceptions import UsageError
from .chain import DEFAULT_GENESIS_MS, DEFAULT_TRANSFERS_PER_BLOCK, Chain
from .hyperion_docs import (
    DATA_BUGS,
    Doc,
    block_docs,
    dumps,
    format_time,
    js_number,
    merged_doc,
    rest_text,
    simple_doc,
)
from .hyperion_query import (
    VERSIONS,
    ApiError,
    Query,
    Version,
    match_key,
    matches,
    parse_query,
    select,
)
from .server import DEVNET_CHAIN_ID
from .testing import ServerThread

__all__ = [
    "HyperionOptions",
    "HyperionServer",
    "HyperionStats",
    "HyperionThread",
    "add_arguments",
    "server_from_args",
]

from .hyperion_cli import add_arguments, server_from_args

logger = logging.getLogger(__name__)

DEFAULT_HEAD = 250_000
_JSON = "application/json; charset=utf-8"
_PARTITION = 10_000_000  # settings.index_partition_size (hot_only searches the newest one)


@dataclasses.dataclass
class HyperionOptions:
    """Every knob of the devnet Hyperion; CLI flags map one to one (``--error-rate`` ...).

    Chain/clock: as :class:`~karma_analytics.devnet.server.DevnetOptions`, plus
    ``missed_slot_rate``, ``twin_rate`` (:class:`~karma_analytics.devnet.chain.Chain`; twins are
    what ``data_bug="collapse-identical"`` folds) and ``chain_id`` (default:
    the dfuse devnet's ``DEVNET_CHAIN_ID``, so a dataset can move between the two servers).

    Server: ``hyperion_version`` ("3.3", "3.5", "4.0.5", "4.0.7"), ``max_limit``
    (``api.limits.get_actions``), ``cache_life`` seconds of the response cache (0 = off;
    reference config 1 s), ``chain_cache_ms`` of the ``/v1/chain/get_info`` proxy cache
    (reference 500 ms), ``report_last_indexed`` (``last_indexed_block*`` keys present),
    ``first_indexed_block`` (older docs are pruned), ``count_total`` (ES-like ``total`` up to
    ``track``; False = cheap, for benchmarks), ``gzip`` (compress when the client accepts it).

    Memory: ``docs_cache_blocks`` / ``docs_cache_docs`` bound the memo of generated documents
    (whichever is reached first: a dense chain holds hundreds of docs per block);
    ``render_cache_docs`` bounds the per-block index of rendered ``get_actions`` JSON (the
    sequences and text of the docs matching a filter, ~1.2 KB per doc), from which a page is
    cut by bisection on ``global_sequence``.

    Faults (seeded by ``fault_seed``): ``latency_ms`` per HTTP request, ``rate_limit`` RPM per
    client IP (None = off; real Hyperion always exempts 127.0.0.1, the devnet does not) over a
    fixed ``rate_window`` s, ``error_rate`` per request, ``short_page_rate`` per page,
    ``index_lag`` blocks, ``data_bug``.

    Stream: ``stream_never_ack``, ``stream_relay_down_after`` live blocks (None = never) for
    ``stream_relay_down_blocks`` blocks, ``stream_batch`` docs per history batch,
    ``stream_batch_pause`` seconds between batches, ``stream_seam`` blocks of overlap (> 0) or
    gap (< 0) between history and live, ``stream_ack_timeout`` seconds (4.x: 120).
    """

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 7
    head: int = DEFAULT_HEAD
    block_interval: float = 0.5
    lib_lag: int = 2
    transfers_per_block: float = DEFAULT_TRANSFERS_PER_BLOCK
    genesis_ms: int = DEFAULT_GENESIS_MS
    accounts: int = 3000
    cache_blocks: int = 4096
    missed_slot_rate: float = 0.0
    twin_rate: float = 0.0
    chain_id: str = DEVNET_CHAIN_ID
    chain_name: str = "devnet"
    hyperion_version: str = "4.0.7"
    max_limit: int = 1000
    cache_life: float = 1.0
    chain_cache_ms: float = 500.0
    report_last_indexed: bool = True
    first_indexed_block: int = 1
    count_total: bool = True
    gzip: bool = True
    docs_cache_blocks: int = 32768
    docs_cache_docs: int = 50_000
    render_cache_docs: int = 1_000_000
    latency_ms: float = 0.0
    rate_limit: int | None = None
    rate_window: float = 60.0
    error_rate: float = 0.0
    short_page_rate: float = 0.0
    index_lag: int = 0
    data_bug: str = "none"
    stream_never_ack: bool = False
    stream_relay_down_after: int | None = None
    stream_relay_down_blocks: int = 4
    stream_batch: int = 500
    stream_batch_pause: float = 0.2
    stream_seam: int = 0
    stream_ack_timeout: float = 120.0
    fault_seed: int = 0

    def validate(self) -> None:
        """Raise :class:`UsageError` on inconsistent options."""
        if self.hyperion_version not in VERSIONS:
            raise UsageError(
                f"hyperion_version must be one of {', '.join(VERSIONS)}, "
                f"got {self.hyperion_version!r}"
            )
        if self.data_bug not in DATA_BUGS:
            raise UsageError(
                f"data_bug must be one of {', '.join(DATA_BUGS)}, got {self.data_bug!r}"
            )
        if self.head < 1 or self.lib_lag < 0 or self.index_lag < 0:
            raise UsageError("head must be >= 1, lib_lag and index_lag >= 0")
        for name in ("error_rate", "short_page_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"{name} is a probability in 0..1, got {getattr(self, name)}")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise UsageError(f"rate_limit must be >= 1 request per window, got {self.rate_limit}")
        if self.max_limit < 0 or self.stream_batch < 1 or self.latency_ms < 0:
            raise UsageError("max_limit and latency_ms must be >= 0, stream_batch >= 1")
        if len(self.chain_id) != 64 or any(c not in "0123456789abcdef" for c in self.chain_id):
            raise UsageError(f"chain_id must be 64 lowercase hex digits, got {self.chain_id!r}")


@dataclasses.dataclass
class HyperionStats:
    """Counters for tests and benchmarks (read them, don't write them)."""

    requests: dict[str, int] = dataclasses.field(default_factory=dict)  # by route
    responses: dict[int, int] = dataclasses.field(default_factory=dict)  # by status
    rate_limited: int = 0
    errors_injected: int = 0
    short_pages: int = 0
    cache_hits: int = 0
    docs_served: int = 0
    stream_connections: int = 0
    stream_open: int = 0
    stream_requests: int = 0
    stream_acks_ok: int = 0
    stream_acks_refused: int = 0
    stream_history_batches: int = 0
    stream_history_stopped: int = 0
    stream_live_sent: int = 0
    stream_lib_updates: int = 0
    stream_relay_downs: int = 0


def _ms_long(ms: float) -> str:
    """``@lukeed/ms`` long format, as in the rate limiter's message (§1.7)."""
    ms = abs(ms)
    for unit, size in (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000),
                       ("second", 1000)):  # fmt: skip
        if ms >= size:
            n = round(ms / size)
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return f"{round(ms)} ms"


class _RateLimiter:
    """``@fastify/rate-limit``: a fixed window per key, TTL set on the first hit (§1.7)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_ms = window_s * 1000.0
        self._hits: dict[str, tuple[int, float]] = {}

    def hit(self, key: str, now: float) -> tuple[bool, dict[str, str], float]:
        """Count one request: (allowed, headers, ms left in the window)."""
        count, start = self._hits.get(key, (0, now))
        if (now - start) * 1000.0 >= self.window_ms:
            count, start = 0, now
        count += 1
        self._hits[key] = (count, start)
        left_ms = max(0.0, self.window_ms - (now - start) * 1000.0)
        reset = str(math.ceil(left_ms / 1000.0))
        headers = {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(max(0, self.limit - count)),
            "x-ratelimit-reset": reset,
        }
        if count > self.limit:
            headers["retry-after"] = reset
            return False, headers, left_ms
        return True, headers, left_ms


class HyperionServer:
    """The devnet Hyperion server; see the module docstring.

    Attributes:
        options: the :class:`HyperionOptions` in force; ``version``: its
            :class:`~karma_analytics.devnet.hyperion_query.Version`.
        chain: the chain served; ``chain_id``: its id.
        stats: live :class:`HyperionStats` counters.
        url: ``http://HOST:PORT`` once started.
    """

    def __init__(self, options: HyperionOptions | None = None, **overrides: Any) -> None:
        options = dataclasses.replace(options or HyperionOptions(), **overrides)
        options.validate()
        self.options = options
        self.version: Version = VERSIONS[options.hyperion_version]
        self.chain = Chain(
            seed=options.seed,
            transfers_per_block=options.transfers_per_block,
            genesis_ms=options.genesis_ms,
            accounts=options.accounts,
            cache_blocks=options.cache_blocks,
            missed_slot_rate=options.missed_slot_rate,
            twin_rate=options.twin_rate,
        )
        self.chain_id = options.chain_id
        self.stats = HyperionStats()
        self.url = ""
        self.port = 0
        self._t0 = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._docs: OrderedDict[int, list[Doc]] = OrderedDict()
        self._docs_held = 0
        self._matches: OrderedDict[tuple[Any, ...], _Matched] = OrderedDict()
        self._matches_held = 0
        self._trx_blocks: OrderedDict[str, int] = OrderedDict()
        # Insertion order is time order (a refreshed key is deleted first): expired entries are
        # popped from the front, so the cache holds at most cache_life seconds of answers.
        self._cache: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
        self._info_cache: tuple[float, str] | None = None
        self._health_cache: tuple[float, dict[str, Any]] | None = None
        self._fault_rng = random.Random(f"hyperion-errors:{options.fault_seed}")
        self._short_rng = random.Random(f"hyperion-short:{options.fault_seed}")
        self._limiter = (
            _RateLimiter(options.rate_limit, options.rate_window) if options.rate_limit else None
        )
        self._clock: asyncio.Task[None] | None = None
        self._head_changed: asyncio.Event | None = None
        self.stream: Any = None  # hyperion_stream.StreamServer once started
        self.version_hash = hashlib.sha256(self.version.full.encode()).hexdigest()[:40]

    # --- clock ----------------------------------------------------------------------------

    @property
    def head(self) -> int:
        """The current head block number."""
        interval = self.options.block_interval
        if interval <= 0:
            return self.options.head
        return self.options.head + int((time.monotonic() - self._t0) / interval + 1e-9)

    @property
    def lib(self) -> int:
        """The last irreversible block number (``head - lib_lag``, at least 1)."""
        return max(1, self.head - self.options.lib_lag)

    async def wait_head(self, target: int) -> None:
        """Sleep until the head reaches ``target`` (forever when the head is frozen)."""
        interval = self.options.block_interval
        while self.head < target:
            if interval <= 0:
                await asyncio.Event().wait()
            due = self._t0 + (target - self.options.head) * interval
            await asyncio.sleep(max(0.0, due - time.monotonic()) + 1e-4)

    def block_at(self, ms: int, first: bool) -> int:
        """The first block with time >= ``ms`` (``first``) or the last with time <= ``ms``
        (block times only grow, so a bisection over 1..2^32-1)."""
        chain = self.chain
        lo, hi = 1, 0xFFFFFFFF
        if first:
            while lo < hi:
                mid = (lo + hi) // 2
                if chain.block_time_ms(mid) >= ms:
                    hi = mid
                else:
                    lo = mid + 1
            return lo
        lo = 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if chain.block_time_ms(mid) <= ms:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket and start serving HTTP and Socket.IO."""
        from .hyperion_stream import StreamServer

        options = self.options
        self._t0 = time.monotonic()
        app = web.Application(client_max_size=1 << 20)
        self.stream = StreamServer(self)
        self.stream.attach(app)  # before the catch-all route (aiohttp matches in order)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, options.host, options.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = next(iter(server.sockets)).getsockname()[1]  # type: ignore[union-attr]
        host = options.host if ":" not in options.host else f"[{options.host}]"
        self.url = f"http://{host}:{self.port}"
        self._clock = asyncio.create_task(self._run_clock())
        logger.info("devnet hyperion %s serving %s", self.version.full, self.url)

    async def stop(self) -> None:
        """Close the stream sockets, the HTTP server and the clock."""
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
            self._clock = None
        if self.stream is not None:
            await self.stream.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate`` until it is true.

        Raises:
            TimeoutError: if it is still false after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.002)

    async def _run_clock(self) -> None:
        """Tell the stream about every new head block and every LIB advance, in order:
        a block's live docs go out before the ``lib_update`` that covers it (§3.5)."""
        head = self.head
        lib = self.lib
        while True:
            await self.wait_head(head + 1)
            new_head = self.head
            for num in range(head + 1, new_head + 1):
                await self.stream.on_block(num)
                new_lib = max(1, num - self.options.lib_lag)
                if new_lib > lib:
                    lib = new_lib
                    await self.stream.on_lib(lib)
            head = new_head

    # --- documents ------------------------------------------------------------------------

    def docs(self, num: int, data_bug: str | None = None) -> list[Doc]:
        """The indexed docs of canonical block ``num`` (memoised; ``data_bug`` default: the
        server's)."""
        bug = self.options.data_bug if data_bug is None else data_bug
        if bug != self.options.data_bug:
            return block_docs(self.chain.block(num), bug)
        docs = self._docs.get(num)
        if docs is None:
            docs = block_docs(self.chain.block(num), bug)
            self._docs[num] = docs
            self._docs_held += len(docs)
            while len(self._docs) > 1 and (
                len(self._docs) > self.options.docs_cache_blocks
                or self._docs_held > self.options.docs_cache_docs
            ):
                self._docs_held -= len(self._docs.popitem(last=False)[1])
            if docs:
                trx = self._trx_blocks
                for doc in docs:
                    trx[doc.trx.trx_id] = num
                while len(trx) > 200_000:
                    trx.popitem(last=False)
        else:
            self._docs.move_to_end(num)
        return docs

    def searchable(self, doc: Doc, head: int) -> bool:
        """Whether ``doc`` is visible to searches at ``head`` (§1.6 index lag: docs of the last
        ``index_lag`` blocks appear after a per-doc delay, so out of block order)."""
        lag = self.options.index_lag
        num = doc.block.num
        if num > head:
            return False
        if num <= head - lag:
            return True
        delay = (
            1
            + hashlib.blake2b(
                f"{self.options.fault_seed}:{doc.global_sequence}".encode(), digest_size=4
            ).digest()[0]
            % lag
        )
        return head >= num + delay

    def blocks_in(
        self, q: Query, lo: int, hi: int, asc: bool, head: int, *, render: bool = False
    ) -> Iterator[tuple[list[int], Any]]:
        """Per block of ``lo..hi`` (in query order), ``(sequences, handle)`` of the searchable
        docs matching ``q`` (for :func:`~.hyperion_query.select`; items via :meth:`take`).

        ``render``: the items are the docs' REST JSON texts (else the docs). Blocks fully
        indexed (below the index-lag zone) come from the per-block index (:class:`_Matched`),
        ascending; the rest is filtered doc by doc, as searchability is per doc there.
        """
        chain = self.chain
        step = 4096
        lag_from = head - self.options.index_lag
        key = match_key(q)
        if asc:
            start = lo
            while start <= hi:
                end = min(hi, start + step - 1)
                for num in chain.nonempty_between(start, end):
                    if num <= lag_from and render:
                        entry = self._matched(num, q, key)
                        yield entry.seqs, entry
                    else:
                        docs = self._matching_docs(num, q, key, head, lag_from)
                        yield [d.global_sequence for d in docs], docs
                start = end + 1
        else:
            end = hi
            while end >= lo:
                start = max(lo, end - step + 1)
                for num in reversed(chain.nonempty_between(start, end)):
                    docs = self._matching_docs(num, q, key, head, lag_from)[::-1]
                    yield [d.global_sequence for d in docs], docs
                end = start - 1

    @staticmethod
    def take(block: Any, i: int, j: int, render: bool) -> list[Any]:
        """Items ``i..j-1`` of a :meth:`blocks_in` handle (texts when ``render``)."""
        if isinstance(block, _Matched):
            return block.texts[i:j]
        docs = block[i:j]
        return [rest_text(d) for d in docs] if render else docs

    def _matching_docs(
        self, num: int, q: Query, key: tuple[Any, ...], head: int, lag_from: int
    ) -> list[Doc]:
        docs = [d for d in self.docs(num) if matches(q, d)]
        if num > lag_from:
            docs = [d for d in docs if self.searchable(d, head)]
        return docs

    def _matched(self, num: int, q: Query, key: tuple[Any, ...]) -> _Matched:
        """The per-block index of the docs matching ``q``, rendered (LRU, bounded by docs)."""
        memo_key = (num, key)
        entry = self._matches.get(memo_key)
        if entry is not None:
            self._matches.move_to_end(memo_key)
            return entry
        docs = [d for d in self.docs(num) if matches(q, d)]
        entry = _Matched([d.global_sequence for d in docs], [rest_text(d) for d in docs])
        for d in docs:
            d.rest = None  # the text lives in the index now; the doc may be dropped any time
        self._matches[memo_key] = entry
        self._matches_held += len(docs)
        limit = self.options.render_cache_docs
        while self._matches_held > limit and len(self._matches) > 1:
            self._matches_held -= len(self._matches.popitem(last=False)[1].seqs)
        return entry

    # --- HTTP -----------------------------------------------------------------------------

    def _respond(
        self, status: int, body: Any, headers: dict[str, str] | None = None, *, text: bool = False
    ) -> web.Response:
        payload = body if isinstance(body, str) else dumps(body)
        response = web.Response(
            status=status,
            text=payload,
            content_type="text/html" if text else None,
            headers={} if text else {"Content-Type": _JSON},
        )
        if text:
            response.charset = "utf-8"
        for key, value in (headers or {}).items():
            response.headers[key] = value
        self.stats.responses[status] = self.stats.responses.get(status, 0) + 1
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        options = self.options
        stats = self.stats
        path = request.path
        route = _route_name(request.method, path)
        stats.requests[route] = stats.requests.get(route, 0) + 1
        extra: dict[str, str] = {}
        if self._limiter is not None:
            # onRequest hook: counted before validation, every route (§1.7).
            forwarded = request.headers.get("X-Forwarded-For", "")
            key = forwarded.split(",")[0].strip() or request.remote or "?"
            allowed, extra, left_ms = self._limiter.hit(key, time.monotonic())
            if not allowed:
                stats.rate_limited += 1
                return self._respond(
                    429,
                    {"statusCode": 429, "error": "Too Many Requests",
                     "message": f"Rate limit exceeded, retry in {_ms_long(left_ms)}"},
                    extra,
                )  # fmt: skip
        if options.latency_ms > 0:
            await asyncio.sleep(options.latency_ms / 1000.0)
        if options.error_rate > 0 and self._fault_rng.random() < options.error_rate:
            stats.errors_injected += 1
            return self._injected_error(extra)
        started = time.perf_counter()
        try:
            response = await self._route(request, route, started)
        except ApiError as exc:
            response = self._respond(exc.status, exc.body())
        for key, value in extra.items():
            response.headers[key] = value
        if options.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    def _injected_error(self, headers: dict[str, str]) -> web.Response:
        """A seeded 5xx: Hyperion's own JSON 500, or a proxy's HTML 502/503/504 (§7 chaos)."""
        kind = self._fault_rng.randrange(4)
        if kind == 0:
            return self._respond(
                500,
                {"statusCode": 500, "error": "Internal Server Error",
                 "message": "ResponseError: search_phase_execution_exception (devnet fault)"},
                headers,
            )  # fmt: skip
        status = (502, 503, 504)[kind - 1]
        reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable",
                  504: "Gateway Time-out"}[status]  # fmt: skip
        html = (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return self._respond(status, html, headers, text=True)

    async def _route(self, request: web.Request, route: str, started: float) -> web.Response:
        method, path = request.method, request.path
        if route == "get_actions":
            return self._get_actions(_params(request), started)
        if route == "get_transaction":
            return self._get_transaction(_params(request), started)
        if route == "health":
            return self._health(started)
        if route == "get_info":
            return self._get_info()
        if route == "get_block":
            return await self._get_block(request)
        if route == "home" and self.version.v4:
            return self._respond(
                200, {"version": self.version.full, "version_hash": self.version_hash,
                      "chain": self.options.chain_name, "chain_id": self.chain_id},
            )  # fmt: skip
        # Fastify's default 404 handler (§1.4; exact text UNCONFIRMED).
        return self._respond(
            404, {"message": f"Route {method}:{path} not found", "error": "Not Found",
                  "statusCode": 404},
        )  # fmt: skip

    def _index_tip(self, head: int) -> tuple[int, int]:
        """(last_indexed_block, its time): the live reader's last block, i.e. the head."""
        return head, self.chain.block_time_ms(head)

    def _top(
        self, started: float, *, cached: bool, hot_only: bool, lib: int, head: int
    ) -> list[str]:
        """The keys before ``total`` in §1.2 order, as JSON text pieces."""
        elapsed = dumps(js_number(round((time.perf_counter() - started) * 1000.0, 3)))
        parts = [f'{{"query_time_ms":{elapsed},"cached":{"true" if cached else "false"}']
        if hot_only:
            parts.append(',"hot_only":true')
        parts.append(f',"lib":{lib}')
        if self.options.report_last_indexed:
            tip, tip_ms = self._index_tip(head)
            parts.append(
                f',"last_indexed_block":{tip},"last_indexed_block_time":"{format_time(tip_ms)}"'
            )
        return parts

    def _get_actions(self, params: dict[str, str], started: float) -> web.Response:
        head = self.head
        query = parse_query(
            params,
            self.version,
            max_limit=self.options.max_limit,
            now_ms=self.chain.block_time_ms(head),
            block_at=self.block_at,
        )
        cache_key = ("get_actions", *params.items())
        life = self.options.cache_life
        now = time.monotonic()
        cache = self._cache
        while cache:
            oldest = next(iter(cache))
            if now - cache[oldest][0] < life:
                break
            del cache[oldest]
        if life > 0 and not query.ignore_cache:
            hit = self._cache.get(cache_key)
            if hit is not None and now - hit[0] < life:
                self.stats.cache_hits += 1
                stored = hit[1]
                parts = self._top(started, cached=True, hot_only=query.hot_only,
                                  lib=stored["lib"], head=head)  # fmt: skip
                parts.append(stored["rest"])
                return self._respond(200, "".join(parts))
        lib = self.lib if query.check_lib else 0
        rest = self._select_text(query, head, lib)
        if life > 0:
            cache.pop(cache_key, None)
            cache[cache_key] = (now, {"lib": lib, "rest": rest})
        parts = self._top(started, cached=False, hot_only=query.hot_only, lib=lib, head=head)
        parts.append(rest)
        return self._respond(200, "".join(parts))

    def _select_text(self, query: Query, head: int, lib: int) -> str:
        """``,"total":...,"actions":[...]}``: the part of the body a cache hit reuses."""
        lo_block = self.options.first_indexed_block
        if query.hot_only:
            lo_block = max(lo_block, head // _PARTITION * _PARTITION)
        render = not query.simple
        selection = select(
            query,
            lambda lo, hi, asc: self.blocks_in(query, lo, hi, asc, head, render=render),
            hi_block=head,
            lo_block=lo_block,
            count_total=self.options.count_total,
            take=lambda block, i, j: self.take(block, i, j, render),
        )
        docs = selection.docs
        rate = self.options.short_page_rate
        if rate > 0 and len(docs) >= 2 and self._short_rng.random() < rate:
            # ES partial results (timeout): some hits missing from a page that is not the last
            # one, never all of them; the next cursor query returns the rest (§1.4).
            docs = docs[: self._short_rng.randint(1, len(docs) - 1)]
            self.stats.short_pages += 1
        self.stats.docs_served += len(docs)
        total = f',"total":{{"value":{selection.total},"relation":"{selection.relation}"}}'
        if query.simple:
            items = dumps([simple_doc(d, lib if query.check_lib else None) for d in docs])
            return f'{total},"simple_actions":{items}}}'
        return f'{total},"actions":[{",".join(docs)}]}}'

    def _get_transaction(self, params: dict[str, str], started: float) -> web.Response:
        trx_id = params.get("id")
        if not trx_id:
            raise ApiError(
                400, "querystring must have required property 'id'", "FST_ERR_VALIDATION"
            )
        head = self.head
        num = self._trx_blocks.get(trx_id)
        hint = params.get("block_hint", "")
        if num is None and hint.isdigit() and 1 <= int(hint) <= head:
            self.docs(int(hint))
            num = self._trx_blocks.get(trx_id)
        # 4.0.5+ re-groups v4.0.4 fragments on read (§4.3); get_actions does not.
        bug = self.options.data_bug
        if bug == "fragment-notifications" and self.version.v4:
            bug = "none"
        actions = []
        if num is not None and num <= head:
            actions = [
                merged_doc(d, act_digest=self.version.v4, notified=self.version.v4)
                for d in self.docs(num, bug)
                if d.trx.trx_id == trx_id and self.searchable(d, head)
            ]
        elapsed = js_number(round((time.perf_counter() - started) * 1000.0, 3))
        body: dict[str, Any] = {
            "query_time_ms": elapsed,
            "executed": bool(actions),
            "trx_id": trx_id,
            "lib": self.lib,
            "cached_lib": False,
            "actions": actions,
        }
        if self.version.v4 and self.options.report_last_indexed:
            tip, tip_ms = self._index_tip(head)
            body["last_indexed_block"] = tip
            body["last_indexed_block_time"] = format_time(tip_ms)
        # Not found is HTTP 200 with executed:false (indistinguishable from a stale index).
        return self._respond(200, body)

    def _health(self, started: float) -> web.Response:
        now = time.monotonic()
        cached = self._health_cache
        if self.options.cache_life > 0 and cached is not None and now - cached[0] < 10.0:
            body = dict(cached[1])
            if self.version.v4:
                body["health"] = [dict(item, cached=True) for item in body["health"]]
        else:
            body = self._health_body()
            self._health_cache = (now, body)
        body["query_time_ms"] = js_number(round((time.perf_counter() - started) * 1000.0, 3))
        if self.version.v4 and self.options.report_last_indexed:
            tip, tip_ms = self._index_tip(self.head)
            body["last_indexed_block"] = tip
            body["last_indexed_block_time"] = format_time(tip_ms)
        return self._respond(200, body)

    def _health_body(self) -> dict[str, Any]:
        """``/v2/health`` in the 3.x or 4.x shape (§2.1, FACTS §2)."""
        v = self.version
        head, lib = self.head, self.lib
        chain = self.chain
        first = self.options.first_indexed_block
        wall = int(time.time() * 1000)
        nodeos = {
            "head_block_num": head,
            "head_block_time": format_time(chain.block_time_ms(head)),
            "time_offset": 384,
            "last_irreversible_block": lib,
            "chain_id": self.chain_id,
        }
        es = {
            "active_shards": "100.0%",
            "head_offset": 1,
            "first_indexed_block": first,
            "last_indexed_block": head - 1,
            "total_indexed_blocks": head - first,
            "missing_blocks": 0,
            "missing_pct": "0.00%",
        }
        features = {
            "streaming": {"enable": True, "traces": True, "deltas": False},
            "tables": {"proposals": True, "accounts": True, "voters": True},
            "index_deltas": True,
            "index_transfer_memo": True,
            "index_all_deltas": True,
            "deferred_trx": False,
            "failed_trx": False,
            "resource_limits": False,
            "resource_usage": False,
        }
        limits = {
            "get_actions": self.options.max_limit,
            "get_voters": 100,
            "get_links": 1000,
            "get_deltas": 1000,
            "get_trx_actions": 200,
        }
        body: dict[str, Any] = {"version": v.full, "version_hash": self.version_hash,
                                "host": "127.0.0.1"}  # fmt: skip
        if v.v4:

            def item(service: str, data: dict[str, Any] | None) -> dict[str, Any]:
                out: dict[str, Any] = {"service": service, "status": "OK", "cached": False,
                                       "query_time_ms": 0.5}  # fmt: skip
                if data is not None:
                    out["service_data"] = data
                return out

            es4 = {"active_shards": "100.0%", "disk_status": "OK", **es, "times": []}
            ship = {"nodes": [{"label": "primary", "active": True,
                               "range": {"from": first, "to": head}}]}  # fmt: skip
            body["health"] = [
                item("StateHistory", ship),
                item("RabbitMq", None),
                item("NodeosRPC", nodeos),
                item("Elasticsearch", es4),
            ]
            body["limits"] = limits
            body["features"] = features
            body["pruning"] = {"auto_pruning_enabled": first > 1, "max_retained_blocks": 0}
            return body
        body["health"] = [
            {"service": "RabbitMq", "status": "OK", "time": wall},
            {"service": "NodeosRPC", "status": "OK", "service_data": nodeos, "time": wall},
            {"service": "Elasticsearch", "status": "OK", "service_data": es, "time": wall},
        ]
        if v.health_limits:
            body["limits"] = limits
        body["features"] = features
        return body

    def _get_info(self) -> web.Response:
        """nodeos ``get_info`` through Hyperion's proxy, cached ``chain_cache_ms`` (§2.2)."""
        now = time.monotonic()
        cached = self._info_cache
        if cached is not None and (now - cached[0]) * 1000.0 < self.options.chain_cache_ms:
            return self._respond(200, cached[1], {"hyperion-cached": "true"})
        head, lib = self.head, self.lib
        chain = self.chain
        body = {
            "server_version": "d1a9f3b2",
            "chain_id": self.chain_id,
            "head_block_num": head,
            "last_irreversible_block_num": lib,
            "last_irreversible_block_id": chain.block_id(lib),
            "head_block_id": chain.block_id(head),
            "head_block_time": format_time(chain.block_time_ms(head)),
            "head_block_producer": chain.producer(head),
            "virtual_block_cpu_limit": 200_000_000,
            "virtual_block_net_limit": 1_048_576_000,
            "block_cpu_limit": 200_000,
            "block_net_limit": 1_048_576,
            "server_version_string": "v5.0.3",
            "fork_db_head_block_num": head,
            "fork_db_head_block_id": chain.block_id(head),
            "server_full_version_string": "v5.0.3-karma-devnet",
            "earliest_available_block_num": 1,
            "last_irreversible_block_time": format_time(chain.block_time_ms(lib)),
        }
        text = dumps(body)
        self._info_cache = (now, text)
        return self._respond(200, text)

    async def _get_block(self, request: web.Request) -> web.Response:
        """nodeos ``get_block`` through the proxy: upstream errors come back as HTTP 200
        (Hyperion never copies the upstream status, §2.2)."""
        ref: Any = request.query.get("block_num_or_id")
        if request.can_read_body:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                payload = await request.json(loads=__import__("json").loads)
                if isinstance(payload, dict):
                    ref = payload.get("block_num_or_id", ref)
        head = self.head
        chain = self.chain
        num: int | None = None
        if isinstance(ref, int) and not isinstance(ref, bool):
            num = ref
        elif isinstance(ref, str) and ref.strip().isdigit():
            num = int(ref.strip())
        elif isinstance(ref, str) and len(ref) == 64:
            with contextlib.suppress(ValueError):
                candidate = int(ref[:8], 16)
                if 1 <= candidate <= head and chain.block_id(candidate) == ref.lower():
                    num = candidate
        if num is None or not 1 <= num <= head:
            return self._respond(200, _nodeos_unknown_block(ref))
        block = chain.block(num)
        transactions = [
            {"status": "executed" if t.status == "executed" else t.status,
             "cpu_usage_us": 150, "net_usage_words": 16, "trx": t.trx_id}
            for t in block.transactions
        ]  # fmt: skip
        body = {
            "timestamp": format_time(block.time_ms),
            "producer": block.producer,
            "confirmed": 0,
            "previous": chain.block_id(num - 1) if num > 1 else "0" * 64,
            "transaction_mroot": "0" * 64,
            "action_mroot": hashlib.sha256(block.id.encode()).hexdigest(),
            "schedule_version": 1,
            "new_producers": None,
            "producer_signature": "SIG_K1_" + hashlib.sha256(block.id.encode()).hexdigest(),
            "transactions": transactions,
            "id": block.id,
            "block_num": num,
            "ref_block_prefix": int.from_bytes(bytes.fromhex(block.id[16:24]), "little"),
        }
        return self._respond(200, body)


class _Matched:
    """The docs of one block matching one filter: ascending sequences and REST texts."""

    __slots__ = ("seqs", "texts")

    def __init__(self, seqs: list[int], texts: list[str]) -> None:
        self.seqs = seqs
        self.texts = texts


def _nodeos_unknown_block(ref: Any) -> dict[str, Any]:
    # nodeos' error body for an unknown block (exact text UNCONFIRMED), served with HTTP 200.
    return {
        "code": 500,
        "message": "Internal Service Error",
        "error": {
            "code": 3100002,
            "name": "unknown_block_exception",
            "what": "Unknown block",
            "details": [
                {"message": f"Could not find block: {ref}", "file": "chain_plugin.cpp",
                 "line_number": 1980, "method": "get_block"}
            ],
        },
    }  # fmt: skip


def _params(request: web.Request) -> dict[str, str]:
    """The query string, one value per name (the last wins), in arrival order."""
    out: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(request.query_string, keep_blank_values=True):
        out[key] = value
    return out


_ROUTES = {
    ("GET", "/v2/history/get_actions"): "get_actions",
    ("GET", "/v2/history/get_transaction"): "get_transaction",
    ("GET", "/v2/health"): "health",
    ("GET", "/v1/chain/get_info"): "get_info",
    ("POST", "/v1/chain/get_info"): "get_info",
    ("GET", "/v1/chain/get_block"): "get_block",
    ("POST", "/v1/chain/get_block"): "get_block",
    ("GET", "/"): "home",
}


def _route_name(method: str, path: str) -> str:
    return _ROUTES.get((method, path.rstrip("/") or "/"), "other")


# --- a thread runner for synchronous code -----------------------------------------------------


class HyperionThread(ServerThread):
    """A :class:`HyperionServer` in a background thread (see
    :class:`~karma_analytics.devnet.testing.ServerThread`).

    Args:
        **options: fields of :class:`HyperionOptions`.
    """

    label = "devnet hyperion"
    server: HyperionServer

    def __init__(self, **options: Any) -> None:
        super().__init__(HyperionServer(**options))

    @property
    def chain_id(self) -> str:
        return self.server.chain_id

    @property
    def stats(self) -> HyperionStats:
        return self.server.stats
