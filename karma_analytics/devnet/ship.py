"""A local SHiP (state_history_plugin) server over the deterministic devnet chain.

It follows ship.md §4 (the conformance checklist), with Spring's session behaviour (§1.4):

* any path; the first message is the ABI **text** (the MIT abieos copy of Spring's ABI, ship.md
  §1.1), sent without waiting for the client; then binary only;
* each client message is one ``request`` variant; an unknown index or a truncated body closes
  the connection without a reply, as nodeos does;
* status requests (v0 -> result index 0 with ``chain_id``; v1 -> index 3) are answered before the
  next block result and use no credit; ``*_end_block`` is one past the last block;
* a blocks request (v0 -> results index 1; v1 -> index 2) **replaces** the cursor and the
  credits; ``have_positions`` below the start whose id differs lower the start (§1.4); an ack
  adds credits;
* the writer sends while ``credits > 0 and cursor <= (LIB if irreversible_only else head) and
  cursor < end``; ``this_block`` always (the chain knows every block >= 1), ``prev_block`` when
  the number is > 1, ``block`` and ``traces`` when asked, traces only from
  ``trace_begin_block`` on (below it: ``this_block`` present, ``traces`` absent — a gap);
  nothing to send is silence (no heartbeat);
* forks (``fork_every``) in reversible mode only: the blocks of a fork window are first served
  as their forked-out variant; when the head passes the fork point the canonical blocks are
  "applied" and the cursor of every session is moved back to the window's first block
  (``block_applied``, §1.4); ``irreversible_only`` never sees a fork;
* optionally every result as several continuation frames (variant index, fixed part, payload
  chunks, an empty final frame, as Spring's ``write_some`` does, §1.4).

Faults (seeded by ``fault_seed``), as the dfuse devnet server's where they apply:
``refuse_handshakes`` (HTTP 503), ``accept_then_drop`` (TCP reset before the ABI),
``drop_every``/``drop_rate`` (TCP reset after that many block results on a connection),
``stall_after`` (silence after that many block results, the connection kept open),
``malformed_rate`` (a block result replaced by a truncated copy or a garbage frame, then the
connection goes on: a client must reconnect from its safe point).

The head/LIB clock is the dfuse server's: the head starts at ``head`` and moves one block every
``block_interval`` seconds (``<= 0`` freezes it); LIB = head - ``lib_lag``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..exceptions import UsageError
from ..sources.ship import codec
from .chain import DEFAULT_GENESIS_MS, DEFAULT_TRANSFERS_PER_BLOCK, Chain

# The same chain id as the other devnet servers': a dataset may move between protocols.
from .server import DEFAULT_HEAD, DEVNET_CHAIN_ID
from .ship_encode import SHIP_ABI_TEXT, block_body, block_header, block_traces, timestamp_slot
from .testing import ServerThread

__all__ = [
    "ShipOptions",
    "ShipServer",
    "ShipStats",
    "ShipThread",
    "add_arguments",
    "load_abi_text",
    "server_from_args",
    "ship_server",
]

logger = logging.getLogger(__name__)
_ws_logger = logging.getLogger(__name__ + ".websockets")

_NO_END = 0xFFFFFFFF


def load_abi_text() -> str:
    """The SHiP ABI text the server sends (abieos ``src/ship.abi.cpp``, MIT; ship.md §1.1)."""
    return SHIP_ABI_TEXT


@dataclasses.dataclass
class ShipOptions:
    """Every knob of the SHiP devnet server (CLI flags in :func:`add_arguments`).

    Chain and clock as :class:`~karma_analytics.devnet.server.DevnetOptions` (``seed``,
    ``transfers_per_block``, ``genesis_ms``, ``accounts``, ``cache_blocks``, ``fork_every``,
    ``fork_depth``, ``missed_slot_rate``, ``twin_rate``, ``head``, ``block_interval``,
    ``lib_lag``).

    Protocol: ``trace_begin_block`` (first block in the trace log; below it results carry no
    traces), ``trace_gaps`` (blocks inside the trace range whose results carry no traces: a
    pruned or damaged trace log that the status does not show), ``action_trace_v0`` (EOSIO 2.0-era traces with console text), ``split_frames``
    (each result as continuation frames of at most ``frame_chunk`` payload bytes),
    ``chain_id`` (64 hex), ``result_cache_mb`` (LRU of encoded block results).

    Faults (seeded by ``fault_seed``): ``drop_every`` N block results per connection,
    ``drop_rate`` per result, ``refuse_handshakes`` N first (HTTP 503), ``accept_then_drop`` N
    first connections, ``stall_after`` N results per connection, ``malformed_rate`` per result
    (``malformed_kind``: "mixed", "truncated" or "garbage").
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
    fork_every: int = 0
    fork_depth: int = 2
    missed_slot_rate: float = 0.0
    twin_rate: float = 0.0
    trace_begin_block: int = 1
    trace_gaps: tuple[int, ...] = ()
    action_trace_v0: bool = False
    split_frames: bool = False
    frame_chunk: int = 1 << 20
    chain_id: str = DEVNET_CHAIN_ID
    result_cache_mb: float = 64.0
    drop_every: int = 0
    drop_rate: float = 0.0
    refuse_handshakes: int = 0
    accept_then_drop: int = 0
    stall_after: int = 0
    malformed_rate: float = 0.0
    malformed_kind: str = "mixed"
    fault_seed: int = 0

    def validate(self) -> None:
        """Raise :class:`UsageError` on inconsistent options."""
        if self.head < 1 or self.lib_lag < 0 or self.trace_begin_block < 1:
            raise UsageError("head and trace_begin_block must be >= 1, lib_lag >= 0")
        if not 0.0 <= self.drop_rate <= 1.0 or not 0.0 <= self.malformed_rate <= 1.0:
            raise UsageError("drop_rate and malformed_rate are probabilities in 0..1")
        if self.malformed_kind not in ("mixed", "truncated", "garbage"):
            raise UsageError(
                f"malformed_kind must be mixed, truncated or garbage, got {self.malformed_kind!r}"
            )
        if self.frame_chunk < 1:
            raise UsageError(f"frame_chunk must be >= 1 byte, got {self.frame_chunk}")
        try:
            if len(bytes.fromhex(self.chain_id)) != 32:
                raise ValueError
        except ValueError:
            raise UsageError(f"chain_id must be 64 hex digits, got {self.chain_id!r}") from None
        timestamp_slot(self.genesis_ms)


@dataclasses.dataclass
class ShipStats:
    """Counters for tests and benchmarks (read them, don't write them)."""

    handshakes: int = 0
    refused_handshakes: int = 0
    connections: int = 0
    open_connections: int = 0
    dropped_connections: int = 0
    bad_requests: int = 0
    status_requests: int = 0
    blocks_requests: int = 0
    acks: int = 0
    acked_messages: int = 0
    results_sent: int = 0
    bytes_sent: int = 0
    malformed_sent: int = 0
    stalled_connections: int = 0
    rewinds: int = 0
    #: The latest blocks request received (a ``codec.GetBlocksRequestV0``/``V1``).
    last_blocks_request: Any = None


class _Gone(Exception):
    """The connection is gone (closed or dropped by a fault)."""


class _Session:
    """Spring's per-connection state: the current request is the cursor and the credits."""

    def __init__(self, server: ShipServer, ws: ServerConnection, index: int) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        self.wake = asyncio.Event()
        self.status_queue: list[bool] = []  # True = v1
        self.request: Any = None
        self.v1 = False
        self.cursor = 0
        self.credits = 0
        self.end = _NO_END
        self.seen_head = server.head
        self.results = 0
        seed = server.options.fault_seed
        self.drop_rng = random.Random(f"ship-drop:{seed}:{index}")
        self.malformed_rng = random.Random(f"ship-malformed:{seed}:{index}")
        self.until_drop = self._next_drop()

    def _next_drop(self) -> float:
        options = self.server.options
        gaps = []
        if options.drop_every > 0:
            gaps.append(options.drop_every)
        if options.drop_rate > 0:
            if options.drop_rate >= 1.0:
                gaps.append(1)
            else:
                u = self.drop_rng.random()
                gaps.append(1 + int(math.log(1.0 - u) / math.log(1.0 - options.drop_rate)))
        return float(min(gaps)) if gaps else math.inf


class ShipServer:
    """The devnet SHiP server. Use :func:`ship_server` (async) or ``start()``/``stop()``.

    Args:
        options: a :class:`ShipOptions`; ``**overrides`` replace its fields.

    Attributes:
        options, chain, stats: the options in force, the chain served, live counters.
        url: ``ws://HOST:PORT`` once started.
    """

    def __init__(self, options: ShipOptions | None = None, **overrides: Any) -> None:
        options = dataclasses.replace(options or ShipOptions(), **overrides)
        options.validate()
        self.options = options
        self.chain = Chain(
            seed=options.seed,
            transfers_per_block=options.transfers_per_block,
            genesis_ms=options.genesis_ms,
            accounts=options.accounts,
            cache_blocks=options.cache_blocks,
            fork_every=options.fork_every,
            fork_depth=options.fork_depth,
            missed_slot_rate=options.missed_slot_rate,
            twin_rate=options.twin_rate,
        )
        self.stats = ShipStats()
        self.abi_text = load_abi_text()
        self.url = ""
        self.port = 0
        self._server: Server | None = None
        self._t0 = time.monotonic()
        self._accepted = 0
        self._sessions: set[_Session] = set()
        self._cache: OrderedDict[tuple[int, int], tuple[bytes, bytes]] = OrderedDict()
        self._cache_bytes = 0
        self._frames: OrderedDict[tuple[Any, ...], tuple[bytes, int]] = OrderedDict()
        self._frames_bytes = 0
        self._chain_id = bytes.fromhex(options.chain_id)
        self._headers: dict[tuple[int, int], bytes] = {}

    # --- clock (as DevnetServer) -------------------------------------------------------------

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

    def _seconds_to_next_block(self) -> float | None:
        interval = self.options.block_interval
        if interval <= 0:
            return None
        due = self._t0 + (self.head - self.options.head + 1) * interval
        return max(0.0, due - time.monotonic()) + 1e-4

    # --- forks -------------------------------------------------------------------------------

    def fork_of(self, num: int, head: int) -> int:
        """Which variant of block ``num`` a reversible reader sees at ``head``: the fork point
        while the fork is the head's branch (``head <= fork point``), else 0 (canonical)."""
        every, depth = self.chain.fork_every, self.chain.fork_depth
        if not every:
            return 0
        point = -(-num // every) * every
        if point - depth + 1 <= num <= point and head <= point:
            return point
        return 0

    def block_id(self, num: int, fork: int = 0) -> bytes:
        """The 32-byte id of block ``num`` (``fork``: of its forked-out variant)."""
        return bytes.fromhex(self.chain.block_id(num, fork))

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket and start accepting connections."""
        options = self.options
        self._t0 = time.monotonic()
        self._server = await serve(
            self._handle,
            options.host,
            options.port,
            process_request=self._process_request,
            compression=None,  # nodeos' beast stream negotiates none
            ping_interval=None,
            max_size=None,
            close_timeout=1,
            logger=_ws_logger,
            server_header="state_history/devnet",
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        host = options.host if ":" not in options.host else f"[{options.host}]"
        self.url = f"ws://{host}:{self.port}"
        logger.info("SHiP devnet serving %s (head %d, seed %d)", self.url, self.head, options.seed)

    async def stop(self) -> None:
        """Close every connection and the listening socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate`` until it is true (``TimeoutError`` after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.002)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        stats = self.stats
        stats.handshakes += 1
        if stats.refused_handshakes < self.options.refuse_handshakes:
            stats.refused_handshakes += 1
            body = b"state history unavailable (devnet fault injection)\n"
            headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return Response(503, "Service Unavailable", headers, body)
        return None  # any path (ship.md §1.2: the upgrade path is not checked)

    # --- a connection ------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        stats = self.stats
        self._accepted += 1
        stats.connections += 1
        if self._accepted <= self.options.accept_then_drop:
            stats.dropped_connections += 1
            ws.transport.abort()
            return
        session = _Session(self, ws, self._accepted - 1)
        self._sessions.add(session)
        stats.open_connections += 1
        writer = asyncio.create_task(self._writer(session))
        try:
            # Spring writes the ABI first, without waiting for the client (ship.md §1.2).
            await ws.send(self.abi_text)
            async for message in ws:
                if isinstance(message, str) or not self._on_request(session, message):
                    stats.bad_requests += 1
                    # nodeos logs the unpack error and closes the connection (§1.2).
                    ws.transport.abort()
                    break
                session.wake.set()
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self._sessions.discard(session)
            stats.open_connections -= 1

    def _on_request(self, session: _Session, message: bytes) -> bool:
        """Apply one request (ship.md §1.4); False if it does not decode."""
        try:
            request = codec.decode_request(message)
        except codec.DecodeError:
            return False
        stats = self.stats
        if isinstance(request, codec.GetStatusRequestV0 | codec.GetStatusRequestV1):
            stats.status_requests += 1
            session.status_queue.append(isinstance(request, codec.GetStatusRequestV1))
        elif isinstance(request, codec.GetBlocksAckRequestV0):
            stats.acks += 1
            stats.acked_messages += request.num_messages
            session.credits = min(0xFFFFFFFF, session.credits + request.num_messages)
        else:
            stats.blocks_requests += 1
            stats.last_blocks_request = request
            # The request replaces the cursor and the credits (they alias its fields, §1.4).
            start = request.start_block_num
            head = self.head
            for position in request.have_positions:
                num = position.block_num
                if num < start:
                    fork = 0 if request.irreversible_only else self.fork_of(num, head)
                    if num < 1 or position.block_id != self.block_id(num, fork):
                        start = min(start, num)
            session.request = request
            session.v1 = isinstance(request, codec.GetBlocksRequestV1)
            session.cursor = max(start, 0)
            session.credits = request.max_messages_in_flight
            session.end = request.end_block_num
            session.seen_head = head
        return True

    async def _writer(self, session: _Session) -> None:
        options = self.options
        try:
            while True:
                while session.status_queue:
                    await self._send(session, self._status(session.status_queue.pop(0)))
                request = session.request
                head = self.head
                if request is not None and not request.irreversible_only and options.fork_every:
                    self._apply_forks(session, head)
                latest = self.lib if request is not None and request.irreversible_only else head
                if (
                    request is not None
                    and session.credits > 0
                    and session.cursor <= latest
                    and session.cursor < session.end
                ):
                    if options.stall_after and session.results >= options.stall_after:
                        self.stats.stalled_connections += 1
                        await asyncio.Event().wait()  # silent, the connection stays open
                    await self._send_block(session, session.cursor, head)
                    session.cursor += 1
                    session.credits -= 1
                    continue
                session.wake.clear()
                timeout = self._seconds_to_next_block()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await session.wake.wait()
        except (_Gone, ConnectionClosed):
            pass
        except Exception:  # pragma: no cover - a bug: log it, drop the connection
            logger.exception("SHiP devnet writer failed at block %d", session.cursor)
            session.ws.transport.abort()

    def _apply_forks(self, session: _Session, head: int) -> None:
        """``block_applied`` for the canonical blocks that replaced a fork window (§1.4)."""
        every, depth = self.chain.fork_every, self.chain.fork_depth
        seen = session.seen_head
        if head <= seen:
            return
        # Fork points f with seen <= f < head: the canonical f-depth+1..f were applied.
        point = -(-seen // every) * every
        while point < head:
            first = point - depth + 1
            if session.cursor > first:
                session.cursor = first
                self.stats.rewinds += 1
            point += every
        session.seen_head = head

    def _status(self, v1: bool) -> bytes:
        head, lib = self.head, self.lib
        options = self.options
        head_pos = codec.BlockPosition(head, self.block_id(head, self.fork_of(head, head)))
        lib_pos = codec.BlockPosition(lib, self.block_id(lib))
        ranges = (options.trace_begin_block, head + 1, 1, head + 1)  # *_end one past the last
        if v1:
            result: Any = codec.GetStatusResultV1(head_pos, lib_pos, *ranges, self._chain_id, 0, 0)
        else:
            result = codec.GetStatusResultV0(head_pos, lib_pos, *ranges, self._chain_id)
        return codec.encode_result(result)

    def _payloads(self, num: int, fork: int) -> tuple[bytes, bytes]:
        """``(block, traces)`` of block ``num`` (variant ``fork``), memoised."""
        key = (num, fork)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        chain = self.chain
        block = chain.generate(num, fork)
        prev_fork = fork if fork and num - 1 >= fork - chain.fork_depth + 1 else 0
        header = self._header(num, fork, prev_fork)
        prev_header = (
            self._header(num - 1, prev_fork, self._prev_fork(num - 1, prev_fork))
            if num > 1
            else b""
        )
        traces = block_traces(chain, block, prev_header, legacy=self.options.action_trace_v0)
        value = (block_body(header, block), traces)
        self._cache[key] = value
        self._cache_bytes += len(value[0]) + len(value[1])
        limit = self.options.result_cache_mb * 1_000_000
        while self._cache_bytes > limit and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= len(old[0]) + len(old[1])
        return value

    def _header(self, num: int, fork: int, prev_fork: int) -> bytes:
        """Block headers are needed twice (the block's body, the next block's onblock)."""
        key = (num, fork)
        header = self._headers.get(key)
        if header is None:
            header = block_header(self.chain, num, fork, prev_fork)
            if len(self._headers) > 4096:
                self._headers.clear()
            self._headers[key] = header
        return header

    def _prev_fork(self, num: int, fork: int) -> int:
        return fork if fork and num - 1 >= fork - self.chain.fork_depth + 1 else 0

    def _result(self, session: _Session, num: int, head: int) -> list[bytes]:
        """The block result for ``num`` as message parts (index, fixed part, payloads)."""
        request = session.request
        fork = 0 if request.irreversible_only else self.fork_of(num, head)
        lib = self.lib
        w = codec.Writer()
        w.varuint(2 if session.v1 else 1)
        w.u32(head).raw(self.block_id(head, self.fork_of(head, head)))
        w.u32(lib).raw(self.block_id(lib))
        if num < 1:
            w.u8(0).u8(0)  # no id known for that number: this_block absent (§1.4)
            return [w.getvalue(), b"\x00\x00\x00" + (b"\x00" if session.v1 else b"")]
        w.u8(1).u32(num).raw(self.block_id(num, fork))
        if num > 1:
            w.u8(1).u32(num - 1).raw(self.block_id(num - 1, self._prev_fork(num, fork)))
        else:
            w.u8(0)
        block, traces = self._payloads(num, fork)
        parts = [w.getvalue()]
        tail = codec.Writer()
        if request.fetch_block:
            tail.u8(1).varuint(len(block)).raw(block)
        else:
            tail.u8(0)
        options = self.options
        if (
            request.fetch_traces
            and num >= options.trace_begin_block
            and num not in options.trace_gaps
        ):
            tail.u8(1).varuint(len(traces))
            parts.append(tail.getvalue())
            parts.append(traces)
            tail = codec.Writer()
        else:
            tail.u8(0)
        tail.u8(0)  # deltas: the devnet keeps no chain-state log
        if session.v1:
            tail.u8(0)  # finality_data
        parts.append(tail.getvalue())
        return parts

    def _frame(self, session: _Session, num: int, head: int) -> tuple[bytes, int]:
        """The result as one ready WebSocket frame and its payload size, memoised while head and
        LIB stay (a frozen clock: history replays and benchmarks send cached bytes, so the
        server is not what a client's measurement measures)."""
        request = session.request
        fork = 0 if request.irreversible_only else self.fork_of(num, head)
        key = (num, fork, session.v1, request.fetch_block, request.fetch_traces, head, self.lib)
        cache = self._frames
        cached = cache.get(key)
        if cached is not None:
            return cached
        message = b"".join(self._result(session, num, head))
        size = len(message)
        # A server frame is unmasked: FIN + binary opcode, the length, the payload (RFC 6455).
        if size < 126:
            header = bytes((0x82, size))
        elif size < 1 << 16:
            header = bytes((0x82, 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((0x82, 127)) + size.to_bytes(8, "big")
        cached = cache[key] = (header + message, size)
        self._frames_bytes += size
        limit = self.options.result_cache_mb * 1_000_000
        while self._frames_bytes > limit and cache:
            _, old = cache.popitem(last=False)
            self._frames_bytes -= old[1]
        return cached

    async def _send_block(self, session: _Session, num: int, head: int) -> None:
        options = self.options
        if options.block_interval <= 0 and not options.split_frames and not options.malformed_rate:
            # The fast path: the cached frame straight onto the socket. websockets writes each
            # frame of its own sends whole and at once, so the order on the wire stays; the
            # credits bound what can be buffered (at most max_messages_in_flight results).
            transport = session.ws.transport
            if transport.is_closing():
                raise _Gone
            frame, size = self._frame(session, num, head)
            transport.write(frame)
            session.results += 1
            self.stats.results_sent += 1
            self.stats.bytes_sent += size
            session.until_drop -= 1
            if session.until_drop <= 0:
                await self._drop(session)
            return
        parts = self._result(session, num, head)
        session.results += 1
        self.stats.results_sent += 1
        if options.malformed_rate > 0 and session.malformed_rng.random() < options.malformed_rate:
            message = b"".join(parts)
            kind = options.malformed_kind
            if kind == "mixed":
                kind = "truncated" if session.malformed_rng.random() < 0.5 else "garbage"
            if kind == "truncated":
                bad = message[: max(1, len(message) // 2)]
            else:
                # An index no ABI lists, then noise: undecodable by construction.
                bad = b"\x7f" + session.malformed_rng.randbytes(max(8, len(message) // 4))
            self.stats.malformed_sent += 1
            await self._send(session, bad)
        elif options.split_frames:
            await self._send(session, parts, split=True)
        else:
            await self._send(session, b"".join(parts))
        session.until_drop -= 1
        if session.until_drop <= 0:
            await self._drop(session)

    async def _send(
        self, session: _Session, message: bytes | list[bytes], split: bool = False
    ) -> None:
        ws = session.ws
        try:
            if split:
                assert isinstance(message, list)
                chunk = self.options.frame_chunk
                frames: list[bytes] = []
                for part in message:
                    frames.extend(part[i : i + chunk] for i in range(0, len(part), chunk))
                self.stats.bytes_sent += sum(map(len, frames))
                # websockets sends an iterable as one fragmented message and ends it with an
                # empty final frame, as Spring's session does (§1.4).
                await ws.send(frames)
            else:
                assert isinstance(message, bytes)
                self.stats.bytes_sent += len(message)
                await ws.send(message)
        except ConnectionClosed:
            raise _Gone from None

    async def _drop(self, session: _Session) -> None:
        """Reset the TCP connection once what was written has left (the client sees 1006)."""
        self.stats.dropped_connections += 1
        transport = session.ws.transport
        deadline = time.monotonic() + 2.0
        while transport.get_write_buffer_size() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        transport.abort()
        raise _Gone


@contextlib.asynccontextmanager
async def ship_server(**options: Any) -> AsyncIterator[ShipServer]:
    """Run a SHiP devnet server for the duration of the block (``**options``: ShipOptions)."""
    server = ShipServer(**options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class ShipThread(ServerThread):
    """A :class:`ShipServer` in a background thread (tests, benchmarks; see
    :class:`~karma_analytics.devnet.testing.ServerThread`)::

        with ShipThread(head=5_000, block_interval=0) as node:
            run_the_cli("--source", "ship", "--endpoint", node.url, ...)
            assert node.stats.dropped_connections > 0

    Args:
        **options: fields of :class:`ShipOptions`.
    """

    label = "SHiP devnet"
    server: ShipServer

    def __init__(self, **options: Any) -> None:
        super().__init__(ShipServer(**options))

    @property
    def stats(self) -> ShipStats:
        return self.server.stats


# --- command line (wired by devnet/__main__.py: ``serve --protocol ship``) ---------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the SHiP-only flags to the ``serve`` parser (the common ones are the dfuse
    server's: host, port, chain, clock, forks, drop/stall/refuse/accept/malformed faults;
    ``--chain-id`` is the Hyperion server's)."""
    group = parser.add_argument_group("SHiP (--protocol ship)")
    group.add_argument(
        "--trace-begin-block", type=int, default=1,
        help="first block in the trace log; results below it carry no traces (default 1)",
    )  # fmt: skip
    group.add_argument(
        "--trace-gap", dest="trace_gaps", type=int, action="append", default=[], metavar="N",
        help="a block inside the trace range whose result carries no traces (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--result-cache-mb", type=float, default=64.0,
        help="LRU of encoded block results, MB (default 64)",
    )  # fmt: skip
    group.add_argument(
        "--action-trace-v0", action="store_true",
        help="send action_trace_v0 with console text (EOSIO 2.0-era logs) instead of v1",
    )  # fmt: skip
    group.add_argument(
        "--split-frames", action="store_true",
        help="send each result as continuation frames (as Spring's session does)",
    )  # fmt: skip


def server_from_args(args: argparse.Namespace) -> ShipServer:
    """Build the SHiP server from parsed ``serve`` arguments (unknown attributes keep their
    defaults, so a parser without some dfuse flags still works)."""
    fields = {f.name for f in dataclasses.fields(ShipOptions)}
    values: dict[str, Any] = {}
    for name in fields:
        if hasattr(args, name):
            values[name] = getattr(args, name)
    if values.get("chain_id") is None:  # --chain-id (shared flag) not given
        values.pop("chain_id", None)
    values["trace_gaps"] = tuple(values.get("trace_gaps") or ())
    kind = values.get("malformed_kind")
    if kind not in (None, "mixed", "truncated", "garbage"):
        # The dfuse flag's "json"/"field" kinds map to SHiP's broken frames.
        values["malformed_kind"] = "mixed"
    return ShipServer(ShipOptions(**values))
