"""A local dfuse-style WebSocket Stream API server over the deterministic devnet chain.

It implements the checklist of dfuse-protocol.md §7: ``/v1/stream`` with optional token auth
(``Authorization: Bearer`` or ``?token=``; 401 JSON ``auth_invalid_token_error`` at the upgrade),
a separate ``POST /v1/auth/issue`` endpoint, JSON ``ping`` frames, per-connection listener maps,
the exact validation and error messages, ``get_action_traces`` with every option,
``with_progress``, ``irreversible_only``, a reversible mode with injected forks, ``unlisten``,
a minimal ``get_head_info``, and seeded fault injection.

Throughput: the frame text of each action trace is rendered once per block and request shape
(in one piece: envelope, data, closing brace) and kept in a byte-bounded LRU
(``frame_cache_mb``); empty blocks are skipped without being generated (the chain draws them
in vectorised chunks). A stream sends batches of ``batch_frames`` pre-built frames: all but
the last are framed and written to the transport in one piece without awaiting (what websockets'
``broadcast`` does per frame), the last goes through ``await send()``, which waits on the
transport's flow control. A slow client therefore holds at most one batch plus the transport's
high-water mark in memory (no unbounded buffering). Measured numbers: bench/RESULTS.md.

Fault injection (``--malformed-rate``), two kinds, seeded: a frame cut in half (not JSON: a
protocol fault) is an *extra* frame sent just before a real ``action_trace``, so a client that
reconnects from its safe point loses nothing; a valid-JSON ``action_trace`` with one broken field
(``global_sequence``, ``quantity`` or ``from``) *replaces* the real frame, as a transfer whose
data really is malformed would arrive: a collector must keep it as a reject (nothing silently
dropped) and move on. A real server never sends a good and a bad copy of one action.

The auth endpoint runs on its own port: the ``websockets`` HTTP parser rejects requests with a
body, and dfuse's issuer was a separate host (``auth.dfuse.io``) anyway (§1.2).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import random
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..exceptions import UsageError, redacting_logger
from . import wire
from .chain import DEFAULT_GENESIS_MS, DEFAULT_TRANSFERS_PER_BLOCK, Block, Chain

__all__ = [
    "DEFAULT_HEAD",
    "DEVNET_CHAIN_ID",
    "DevnetOptions",
    "DevnetServer",
    "DevnetStats",
    "devnet_server",
]

#: The devnet's chain id: fixed, and no real chain's (those are in hyperion.md §5).
DEVNET_CHAIN_ID = hashlib.sha256(b"karma_analytics devnet").hexdigest()

logger = logging.getLogger(__name__)


# The websockets server logs through this logger (never configured here, only filtered).
_ws_logger = redacting_logger(__name__ + ".websockets")

# Head at start-up: far beyond the demo range 1..200,000 so that a history replay of the demo
# range never waits for blocks.
DEFAULT_HEAD = 250_000
UINT32_MASK = 0xFFFFFFFF

_CONTACT_SUPPORT = (
    "Contact support@dfuse.io or reach us via our dfuse Telegram channels to request an API key "
    "able to retrieve more historical data."
)
_UNAVAILABLE_TYPES = frozenset(
    {"get_table_rows", "get_transaction_lifecycle", "get_transaction", "get_account",
     "get_price", "get_vote_tally"}
)  # fmt: skip


@dataclasses.dataclass
class DevnetOptions:
    """Every knob of the devnet server; CLI flags map one to one (``--drop-every`` ...).

    Chain: ``missed_slot_rate`` (block times not exactly 0.5 s apart, see ``Chain``),
    ``twin_rate`` (transactions sending the same transfer twice, see ``Chain``),
    ``chain_id`` (served by ``GET /v1/chain/get_info`` beside the stream, as dfuse hosts
    served the native chain API), ``seed``, ``transfers_per_block``, ``genesis_ms``, ``accounts``, ``cache_blocks``
    (LRU of generated blocks), ``frame_cache_mb`` (LRU of rendered frame texts, in MB),
    ``fork_every``/``fork_depth`` (reversible streams only).

    Clock: the head starts at ``head`` and advances one block every ``block_interval`` seconds
    (``<= 0`` freezes it); LIB is ``head - lib_lag``.

    Protocol: ``api_key`` (None = no auth), ``token_ttl`` seconds, ``ping_interval`` seconds,
    ``progress_throttle`` seconds (250 ms in dfuse), ``max_streams`` per connection (dfuse
    default 12, effectively 13 accepted), ``compression`` ("deflate" or None), ``batch_frames``.

    Faults (all seeded by ``fault_seed``): ``drop_every`` N frames per connection,
    ``drop_rate`` per frame, ``close_code`` (close with 1000/1009 instead of dropping),
    ``refuse_handshakes`` N first handshakes (HTTP 503), ``accept_then_drop`` N first
    connections, ``stall_after`` N data frames per stream, ``malformed_rate`` per action_trace
    (``malformed_kind``: "mixed", "json" or "field"), ``history_limit`` blocks behind head.
    """

    host: str = "127.0.0.1"
    port: int = 0
    chain_id: str = DEVNET_CHAIN_ID
    seed: int = 7
    head: int = DEFAULT_HEAD
    block_interval: float = 0.5
    lib_lag: int = 2
    transfers_per_block: float = DEFAULT_TRANSFERS_PER_BLOCK
    genesis_ms: int = DEFAULT_GENESIS_MS
    missed_slot_rate: float = 0.0
    twin_rate: float = 0.0
    accounts: int = 3000
    cache_blocks: int = 4096
    frame_cache_mb: float = 128.0
    fork_every: int = 0
    fork_depth: int = 2
    api_key: str | None = None
    token_ttl: float = 86_400.0
    ping_interval: float = 10.0
    progress_throttle: float = 0.25
    max_streams: int = 12
    compression: str | None = "deflate"
    batch_frames: int = 32
    drop_every: int = 0
    drop_rate: float = 0.0
    close_code: int | None = None
    refuse_handshakes: int = 0
    accept_then_drop: int = 0
    stall_after: int = 0
    malformed_rate: float = 0.0
    malformed_kind: str = "mixed"
    history_limit: int | None = None
    fault_seed: int = 0

    def validate(self) -> None:
        """Raise :class:`UsageError` on inconsistent options."""
        if self.head < 1:
            raise UsageError(f"head must be >= 1, got {self.head}")
        if self.lib_lag < 0:
            raise UsageError(f"lib_lag must be >= 0, got {self.lib_lag}")
        if not 0.0 <= self.drop_rate <= 1.0 or not 0.0 <= self.malformed_rate <= 1.0:
            raise UsageError("drop_rate and malformed_rate are probabilities in 0..1")
        if self.close_code is not None and self.close_code not in (1000, 1001, 1008, 1009, 1011):
            raise UsageError(
                f"close_code must be 1000 or 1009 (or 1001/1008/1011), got {self.close_code}"
            )
        if self.malformed_kind not in ("mixed", "json", "field"):
            raise UsageError(
                f"malformed_kind must be mixed, json or field, got {self.malformed_kind!r}"
            )
        if self.compression not in (None, "deflate"):
            raise UsageError(f"compression must be 'deflate' or None, got {self.compression!r}")
        if self.ping_interval <= 0 or self.batch_frames < 1 or self.max_streams < 0:
            raise UsageError("ping_interval must be > 0, batch_frames >= 1, max_streams >= 0")


@dataclasses.dataclass
class DevnetStats:
    """Counters for tests and benchmarks (read them, don't write them)."""

    handshakes: int = 0
    refused_handshakes: int = 0
    rejected_auth: int = 0
    connections: int = 0
    open_connections: int = 0
    dropped_connections: int = 0
    closed_by_fault: int = 0
    frames_sent: int = 0
    action_traces_sent: int = 0
    progress_sent: int = 0
    pings_sent: int = 0
    errors_sent: int = 0
    malformed_sent: int = 0
    streams_started: int = 0
    stalled_streams: int = 0
    tokens_issued: int = 0


class _Gone(Exception):
    """The connection is gone (closed, dropped by a fault); the sender stops quietly."""


class _DecodeError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _RequestError(Exception):
    """A dfuse error to send back for one request."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


# --- Go encoding/json-like decoding of requests (dfuse §2.1) ---------------------------------


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _field(obj: dict[str, Any], name: str) -> Any:
    """Go matches JSON keys to struct fields exactly first, then case-insensitively."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if key.lower() == lowered:
            return value
    return None


def _typed(value: Any, go_type: str, where: str) -> Any:
    """Check one decoded value like Go's json.Unmarshal into a typed field; None = zero."""
    if value is None:
        return None
    ok = False
    if go_type == "bool":
        ok = isinstance(value, bool)
    elif go_type == "string":
        ok = isinstance(value, str)
    elif go_type == "int64":
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    elif go_type == "object":
        ok = isinstance(value, dict)
    if ok:
        return value
    kind = _json_kind(value)
    if kind == "number":
        kind = f"number {value}"
    raise _DecodeError(
        f"json: cannot unmarshal {kind} into Go struct field {where} of type {go_type}"
    )


def _json_syntax_reason(text: str, exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(text.rstrip()):
        return "unexpected end of JSON input"
    return f"invalid character {text[exc.pos]!r} looking for beginning of value"


def _split_pipes(text: str) -> frozenset[str]:
    """dfuse ``mapString``: split on ``|``, trim items, drop empty ones."""
    return frozenset(item.strip() for item in text.split("|") if item.strip())


class _Stream:
    """One registered listener (``get_action_traces`` or ``get_head_info``)."""

    __slots__ = (
        "accounts", "cache_key", "frames", "irreversible", "kind", "last_progress", "names",
        "prefix", "progress_prefix", "receivers", "req_id", "shape", "start", "task",
        "with_progress",
    )  # fmt: skip

    def __init__(self, kind: str, req_id: str) -> None:
        self.kind = kind
        self.req_id = req_id
        self.task: asyncio.Task[None] | None = None
        self.frames = 0  # data frames (action_trace + progress) sent on this stream


class _Conn:
    """Per-connection state: listeners, frame counters and the seeded fault schedule."""

    def __init__(self, server: DevnetServer, ws: ServerConnection, index: int) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        self.streams: dict[str, _Stream] = {}
        self.frames_sent = 0
        self.gone = False
        options = server.options
        seed = options.fault_seed
        self.drop_rng = random.Random(f"drop:{seed}:{index}")
        self.malformed_rng = random.Random(f"malformed:{seed}:{index}")
        self.until_fault = self._next_fault_gap()

    def _next_fault_gap(self) -> float:
        """Frames to send before the next drop/close fault (inf when none is configured)."""
        options = self.server.options
        gaps = []
        if options.drop_every > 0:
            gaps.append(options.drop_every - self.frames_sent)
        if options.drop_rate > 0:
            # Geometric draw: the same schedule as a per-frame coin with probability drop_rate.
            u = self.drop_rng.random()
            if options.drop_rate >= 1.0:
                gaps.append(1)
            else:
                gaps.append(1 + int(math.log(1.0 - u) / math.log(1.0 - options.drop_rate)))
        return float(min(gaps)) if gaps else math.inf

    async def send(self, frames: list[str]) -> None:
        """Send frames in order, with flow control and the connection-level faults.

        Raises:
            _Gone: if the connection is closed or was dropped by a fault.
        """
        if self.gone:
            raise _Gone
        ws = self.ws
        stats = self.server.stats
        i = 0
        total = len(frames)
        while i < total:
            k = total - i
            if k > self.until_fault:
                k = int(self.until_fault)
            if k > 0:
                # Count before the first suspension point so that concurrent senders on this
                # connection see a consistent fault schedule.
                self.until_fault -= k
                self.frames_sent += k
                stats.frames_sent += k
                end = i + k - 1
                if end > i:
                    # All but the last frame: framed by the protocol and written to the
                    # transport in one piece, without awaiting (as websockets' broadcast does,
                    # minus one write per frame). The last goes through send() below, which
                    # awaits the transport's flow control.
                    protocol = ws.protocol
                    if protocol.state is not State.OPEN:
                        self.gone = True
                        raise _Gone
                    if protocol.extensions:
                        # permessage-deflate negotiated: let the protocol compress.
                        send_text = protocol.send_text
                        for j in range(i, end):
                            send_text(frames[j].encode())
                        ws.transport.write(b"".join(protocol.data_to_send()))
                    else:
                        ws.transport.write(_text_frames(frames, i, end))
                i = end + 1
                try:
                    await ws.send(frames[end])
                except ConnectionClosed:
                    self.gone = True
                    raise _Gone from None
            if self.until_fault <= 0:
                await self._fault()
                raise _Gone

    async def _fault(self) -> None:
        self.gone = True
        options = self.server.options
        ws = self.ws
        if options.close_code is not None:
            self.server.stats.closed_by_fault += 1
            with contextlib.suppress(Exception):
                await ws.close(options.close_code, "devnet fault injection")
            return
        # Let the frames already written reach the socket, then drop the TCP connection with
        # no close frame: the client sees 1006 after exactly the frames counted so far.
        self.server.stats.dropped_connections += 1
        transport = ws.transport
        deadline = time.monotonic() + 2.0
        while transport.get_write_buffer_size() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        transport.abort()


class DevnetServer:
    """The devnet dfuse server. Use :func:`devnet_server` (async) or
    :class:`~karma_analytics.devnet.testing.DevnetThread` (sync) to run one.

    Attributes:
        options: the :class:`DevnetOptions` in force.
        chain: the :class:`~karma_analytics.devnet.chain.Chain` served.
        stats: live :class:`DevnetStats` counters.
        url: ``ws://HOST:PORT/v1/stream`` once started.
        auth_url: ``http://HOST:AUTHPORT`` when ``api_key`` is set, else None.
    """

    def __init__(self, options: DevnetOptions | None = None, **overrides: Any) -> None:
        options = dataclasses.replace(options or DevnetOptions(), **overrides)
        options.validate()
        self.options = options
        self.chain = Chain(
            seed=options.seed,
            transfers_per_block=options.transfers_per_block,
            genesis_ms=options.genesis_ms,
            missed_slot_rate=options.missed_slot_rate,
            twin_rate=options.twin_rate,
            accounts=options.accounts,
            cache_blocks=options.cache_blocks,
            fork_every=options.fork_every,
            fork_depth=options.fork_depth,
        )
        self.stats = DevnetStats()
        self.url = ""
        self.auth_url: str | None = None
        self.port = 0
        self._server: Server | None = None
        self._auth_server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = time.monotonic()
        self._conn_index = 0
        self._accepted = 0
        self._error_counter = 0
        self._secret = secrets.token_bytes(32)
        self._conns: set[_Conn] = set()
        self._frames: OrderedDict[tuple[Any, ...], tuple[str, tuple[str, ...]]] = OrderedDict()
        self._frames_bytes = 0

    # --- clock --------------------------------------------------------------------------------

    @property
    def head(self) -> int:
        """The current head block number."""
        interval = self.options.block_interval
        if interval <= 0:
            return self.options.head
        elapsed = time.monotonic() - self._t0
        return self.options.head + int(elapsed / interval + 1e-9)

    @property
    def lib(self) -> int:
        """The last irreversible block number (``head - lib_lag``, at least 1)."""
        return max(1, self.head - self.options.lib_lag)

    async def _wait_head(self, target: int) -> None:
        """Sleep until the head reaches ``target`` (forever when the head is frozen)."""
        interval = self.options.block_interval
        while self.head < target:
            if interval <= 0:
                await asyncio.Event().wait()
            due = self._t0 + (target - self.options.head) * interval
            await asyncio.sleep(max(0.0, due - time.monotonic()) + 1e-4)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the sockets and start accepting connections."""
        options = self.options
        self._loop = asyncio.get_running_loop()
        self._t0 = time.monotonic()
        self._server = await serve(
            self._handle,
            options.host,
            options.port,
            process_request=self._process_request,
            compression=options.compression,
            ping_interval=None,  # dfuse keep-alive is the JSON ping frame (§1.3)
            close_timeout=2,
            max_queue=64,
            logger=_ws_logger,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        host = options.host if ":" not in options.host else f"[{options.host}]"
        self.url = f"ws://{host}:{self.port}/v1/stream"
        if options.api_key is not None:
            self._auth_server = await asyncio.start_server(self._handle_auth, options.host, 0)
            auth_port = next(iter(self._auth_server.sockets)).getsockname()[1]
            self.auth_url = f"http://{host}:{auth_port}"
        logger.info("devnet serving %s (head %d, seed %d)", self.url, self.head, options.seed)

    async def stop(self) -> None:
        """Close every connection and the listening sockets."""
        if self._auth_server is not None:
            self._auth_server.close()
            with contextlib.suppress(Exception):
                await self._auth_server.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

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

    # --- auth -----------------------------------------------------------------------------------

    def issue_token(self, ttl: float | None = None) -> tuple[str, int]:
        """Issue a token as ``/v1/auth/issue`` does: ``(jwt, expires_at)`` (Unix seconds)."""
        now = time.time()
        exp = round(now + (self.options.token_ttl if ttl is None else ttl), 3)
        claims: dict[str, Any] = {
            "iss": "karma-devnet",
            "sub": "uid:devnet",
            "iat": int(now),
            "exp": exp,
            "jti": secrets.token_hex(8),
            "v": 1,
        }
        if self.options.history_limit is not None:
            claims["stblk"] = -self.options.history_limit
        header = _b64(b'{"alg":"HS256","typ":"JWT"}')
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(
            hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        )
        self.stats.tokens_issued += 1
        return f"{header}.{payload}.{signature}", int(exp)

    def _check_token(self, token: str) -> str | None:
        """None if ``token`` is valid now, else the reason."""
        if not token:
            return "rpc error: code = Unauthenticated desc = required authorization token not found"
        parts = token.split(".")
        if len(parts) != 3:
            return "rpc error: code = Unauthenticated desc = token contains an invalid number of segments"
        expected = _b64(
            hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        )
        if not hmac.compare_digest(expected, parts[2]):
            return "rpc error: code = Unauthenticated desc = signature is invalid"
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            exp = float(claims["exp"])
        except (ValueError, KeyError, TypeError):
            return "rpc error: code = Unauthenticated desc = token claims are malformed"
        if time.time() >= exp:
            return "rpc error: code = Unauthenticated desc = token is expired"
        return None

    def _next_trace_id(self) -> str:
        self._error_counter += 1
        return wire.trace_id(self.options.seed, self._error_counter)

    def _json_response(self, status: int, reason: str, body: dict[str, Any] | str) -> Response:
        text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        raw = text.encode()
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(raw))),
                ("Connection", "close"),
            ]
        )
        return Response(status, reason, headers, raw)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """HTTP side of the upgrade: faults, routing, and the token check (§1.1, §1.2)."""
        stats = self.stats
        options = self.options
        parsed = urllib.parse.urlsplit(request.path)
        if parsed.path == "/v1/chain/get_info":
            return self._json_response(200, "OK", self._chain_info())
        stats.handshakes += 1
        if stats.refused_handshakes < options.refuse_handshakes:
            stats.refused_handshakes += 1
            return self._json_response(
                503, "Service Unavailable",
                {"code": "service_unavailable_error", "trace_id": self._next_trace_id(),
                 "message": "The service is temporarily unavailable (devnet fault injection)."},
            )  # fmt: skip
        if parsed.path != "/v1/stream":
            return connection.respond(404, "Not Found\n")
        if options.api_key is None:
            return None
        token = ""
        header = request.headers.get("Authorization")
        if header:
            fields = header.split()
            # A malformed Authorization header counts as absent (dauth middleware).
            if len(fields) == 2 and fields[0].lower() == "bearer":
                token = fields[1]
        if not token:
            query = urllib.parse.parse_qs(parsed.query)
            token = (query.get("token") or [""])[0]
        reason = self._check_token(token)
        if reason is None:
            return None
        stats.rejected_auth += 1
        return self._json_response(
            401, "Unauthorized",
            {"code": "auth_invalid_token_error", "trace_id": self._next_trace_id(),
             "message": "Unable to correctly decode provided token.",
             "details": {"token": token, "reason": reason}},
        )  # fmt: skip

    async def _handle_auth(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A minimal HTTP/1.1 handler for ``POST /v1/auth/issue`` (one request per connection)."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if length > 65536:
                raise ValueError("body too large")
            body = await asyncio.wait_for(reader.readexactly(length), timeout=10) if length else b""
            status, reason, payload = self._auth_route(method, target, body)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, reason, payload = 400, "Bad Request", {
                "code": "bad_request_error", "trace_id": self._next_trace_id(),
                "message": "The request could not be read.",
            }  # fmt: skip
        raw = json.dumps(payload, separators=(",", ":")).encode()
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode()
            + raw
        )
        with contextlib.suppress(Exception):
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    def _auth_route(self, method: str, target: str, body: bytes) -> tuple[int, str, dict[str, Any]]:
        path = urllib.parse.urlsplit(target).path
        if path != "/v1/auth/issue":
            return 404, "Not Found", {
                "code": "not_found_error", "trace_id": self._next_trace_id(),
                "message": "Not found.",
            }  # fmt: skip
        if method != "POST":
            return 405, "Method Not Allowed", {
                "code": "method_not_allowed_error", "trace_id": self._next_trace_id(),
                "message": "Use POST.",
            }  # fmt: skip
        # client-js sends the JSON body without any Content-Type (§1.2): never look at it.
        try:
            request = json.loads(body)
            api_key = request["api_key"] if isinstance(request, dict) else None
        except (ValueError, KeyError):
            return 400, "Bad Request", {
                "code": "invalid_json_error", "trace_id": self._next_trace_id(),
                "message": "The request is not a valid json.",
            }  # fmt: skip
        if not isinstance(api_key, str) or not hmac.compare_digest(
            api_key.encode(), (self.options.api_key or "").encode()
        ):
            return 401, "Unauthorized", {
                "code": "auth_invalid_api_key_error", "trace_id": self._next_trace_id(),
                "message": "The provided API key is not valid.",
            }  # fmt: skip
        token, expires_at = self.issue_token()
        return 200, "OK", {"token": token, "expires_at": expires_at}

    # --- connections ----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        stats = self.stats
        self._accepted += 1
        stats.connections += 1
        if self._accepted <= self.options.accept_then_drop:
            stats.dropped_connections += 1
            ws.transport.abort()
            return
        conn = _Conn(self, ws, self._conn_index)
        self._conn_index += 1
        self._conns.add(conn)
        stats.open_connections += 1
        pinger = asyncio.create_task(self._ping_loop(conn))
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    await self._send_error(
                        conn, "", "ws_binary_message_unsupported_error",
                        "Binary messages are not supported.",
                    )  # fmt: skip
                else:
                    await self._on_text(conn, message)
        except (ConnectionClosed, _Gone):
            pass
        finally:
            conn.gone = True
            pinger.cancel()
            for stream in list(conn.streams.values()):
                if stream.task is not None:
                    stream.task.cancel()
            conn.streams.clear()
            self._conns.discard(conn)
            stats.open_connections -= 1

    async def _ping_loop(self, conn: _Conn) -> None:
        interval = self.options.ping_interval
        with contextlib.suppress(_Gone, asyncio.CancelledError):
            while True:
                await asyncio.sleep(interval)
                await conn.send([wire.ping_frame(time.time_ns())])
                self.stats.pings_sent += 1

    async def _send_error(
        self, conn: _Conn, req_id: str, code: str, message: str,
        details: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.stats.errors_sent += 1
        frame = wire.error_frame(req_id, code, message, details, self._next_trace_id())
        await conn.send([frame])

    async def _on_text(self, conn: _Conn, text: str) -> None:
        """Route one inbound text frame (dfuse wsconn ``handleMessage``, §2)."""
        try:
            msg = json.loads(text)
        except json.JSONDecodeError as exc:
            await self._send_error(
                conn, "", "ws_invalid_json_message_error",
                "The received message is not a valid JSON.",
                {"reason": _json_syntax_reason(text, exc)},
            )  # fmt: skip
            return
        try:
            if not isinstance(msg, dict):
                raise _DecodeError(
                    f"json: cannot unmarshal {_json_kind(msg)} into Go value of type struct"
                )
            msg_type = _typed(_field(msg, "type"), "string", ".type") or ""
            req_id = _typed(_field(msg, "req_id"), "string", ".req_id") or ""
            _typed(_field(msg, "listen"), "bool", ".listen")
        except _DecodeError as exc:
            await self._send_error(
                conn, "", "ws_invalid_json_message_error",
                "The received message is not a valid JSON.", {"reason": exc.reason},
            )  # fmt: skip
            return
        if msg_type == "pong":
            return  # keep-alive from client-js; dropped before any validation (§1.3)
        try:
            if msg_type in ("get_action_traces", "get_actions"):
                await self._on_get_action_traces(conn, msg, req_id)
            elif msg_type == "unlisten":
                await self._on_unlisten(conn, msg, req_id)
            elif msg_type == "get_head_info":
                await self._on_get_head_info(conn, msg, req_id)
            elif msg_type in _UNAVAILABLE_TYPES:
                raise _RequestError(
                    "ws_unavailable_message_error",
                    "The received message type is no more available.",
                    {"type": msg_type},
                )
            else:
                raise _RequestError(
                    "ws_unknown_message_error",
                    "The received message type is unknown.",
                    {"type": msg_type},
                )
        except _RequestError as exc:
            await self._send_error(conn, req_id, exc.code, exc.message, exc.details)

    @staticmethod
    def _common(msg: dict[str, Any], struct: str) -> dict[str, Any]:
        """Decode the common envelope fields with Go's typing (§2.1)."""
        try:
            data = _typed(_field(msg, "data"), "object", f"{struct}.data") or {}
            return {
                "fetch": bool(_typed(_field(msg, "fetch"), "bool", f"{struct}.fetch")),
                "listen": bool(_typed(_field(msg, "listen"), "bool", f"{struct}.listen")),
                "start_block": _typed(_field(msg, "start_block"), "int64", f"{struct}.start_block")
                or 0,
                "irreversible_only": bool(
                    _typed(_field(msg, "irreversible_only"), "bool", f"{struct}.irreversible_only")
                ),
                "with_progress": _typed(
                    _field(msg, "with_progress"), "int64", f"{struct}.with_progress"
                )
                or 0,
                "data": data,
            }
        except _DecodeError as exc:
            raise _RequestError(
                "ws_invalid_json_message_data_error",
                "The received message data is not a valid JSON.",
                {"reason": exc.reason},
            ) from None

    def _resolve_start(self, start_block: int) -> int:
        """dfuse ``authorizeRequest`` (§4.1): 0 = head, negative = relative (uint32 wrap),
        positive = absolute; then the history limit."""
        head = self.head
        if start_block == 0:
            return head
        if -4_000_000_000 < start_block < 0:
            start = (head - (-start_block)) & UINT32_MASK
        elif start_block > 0:
            start = start_block & UINT32_MASK
        else:
            start = 0
        limit = self.options.history_limit
        if limit is not None:
            allowed = max(0, head - limit)
            if start < allowed:
                raise _RequestError(
                    "auth_invalid_streaming_start_block_error",
                    f"Your credentials allow you to go back as far as block #{allowed}, but you "
                    f"requested block #{start}. {_CONTACT_SUPPORT}",
                )
        return start

    def _register(self, conn: _Conn, stream: _Stream) -> None:
        """dfuse ``RegisterListener``: the count check runs before adding, so max+1 fit."""
        count = len(conn.streams)
        if count > self.options.max_streams:
            raise _RequestError(
                "ws_too_much_stream_error",
                "No more request listener could be created within this connection.",
                {
                    "actual_listener_count": count,
                    "maximum_listener_count": self.options.max_streams,
                },
            )
        if stream.req_id in conn.streams:
            raise _RequestError(
                "ws_stream_already_exist_error",
                "A request listener with this id already exists.",
                {"request_id": stream.req_id},
            )
        conn.streams[stream.req_id] = stream

    async def _on_get_action_traces(self, conn: _Conn, msg: dict[str, Any], req_id: str) -> None:
        common = self._common(msg, "GetActionTraces")
        raw = common["data"]
        try:
            fields = {
                name: _typed(_field(raw, name), "string", f"GetActionTraces.data.{name}") or ""
                for name in (
                    "accounts", "receivers", "action_names", "account", "receiver", "action_name",
                )
            }  # fmt: skip
            flags = {
                name: bool(_typed(_field(raw, name), "bool", f"GetActionTraces.data.{name}"))
                for name in (
                    "with_inline_traces", "with_dbops", "with_ramops", "with_dtrxops",
                    "with_tableops",
                )
            }  # fmt: skip
        except _DecodeError as exc:
            raise _RequestError(
                "ws_invalid_json_message_data_error",
                "The received message data is not a valid JSON.",
                {"reason": exc.reason},
            ) from None
        # Validate (wsmsg/actions.go): exact reasons.
        reason = None
        if not fields["account"] and not fields["accounts"]:
            reason = "'data.accounts' required"
        elif not common["listen"]:
            reason = "'listen' required"
        elif common["fetch"]:
            reason = "'fetch' not supported"
        if reason is not None:
            raise _RequestError(
                "ws_message_data_validation_error",
                "The received message data is not valid.",
                {"reason": reason},
            )
        start = self._resolve_start(common["start_block"])
        # Deprecated singular fields replace the plural ones when non-empty.
        for singular, plural in (
            ("account", "accounts"),
            ("receiver", "receivers"),
            ("action_name", "action_names"),
        ):
            if fields[singular]:
                fields[plural] = fields[singular]
        if start == 0:
            raise _RequestError(
                "request_validation_error",
                "The request is invalid.",
                {"errors": {"block_num": ["The block_num field must be greater than 0"]}},
            )
        stream = _Stream("actions", req_id)
        stream.accounts = _split_pipes(fields["accounts"])
        stream.receivers = (
            _split_pipes(fields["receivers"]) if fields["receivers"] else stream.accounts
        )
        stream.names = _split_pipes(fields["action_names"]) if fields["action_names"] else None
        stream.shape = wire.Shape(
            flags["with_inline_traces"], flags["with_dbops"], flags["with_ramops"],
            flags["with_dtrxops"], flags["with_tableops"],
        )  # fmt: skip
        stream.cache_key = ("traces", stream.accounts, stream.receivers, stream.names, stream.shape)
        stream.irreversible = common["irreversible_only"]
        stream.with_progress = common["with_progress"]
        stream.start = start
        stream.prefix = wire.prefix("action_trace", req_id)
        stream.progress_prefix = wire.prefix("progress", req_id)
        # The throttle clock starts at request time (§4.2).
        stream.last_progress = time.monotonic()
        self._register(conn, stream)
        self.stats.streams_started += 1
        await conn.send([wire.envelope("listening", req_id, f'{{"next_block":{start}}}')])
        stream.task = asyncio.create_task(self._run_actions(conn, stream))

    async def _on_unlisten(self, conn: _Conn, msg: dict[str, Any], req_id: str) -> None:
        common = self._common(msg, "Unlisten")
        try:
            target = (
                _typed(_field(common["data"], "req_id"), "string", "Unlisten.data.req_id") or ""
            )
        except _DecodeError as exc:
            raise _RequestError(
                "ws_invalid_json_message_data_error",
                "The received message data is not a valid JSON.",
                {"reason": exc.reason},
            ) from None
        if not target:
            raise _RequestError(
                "ws_message_data_validation_error",
                "The received message data is not valid.",
                {"reason": "'req_id' is required"},
            )
        stream = conn.streams.pop(target, None)
        if stream is None:
            raise _RequestError(
                "ws_stream_not_found_error",
                "A request listener with this id does not exist.",
                {"request_id": target},
            )
        if stream.task is not None:
            stream.task.cancel()
        await conn.send([wire.envelope("unlistened", req_id, '{"success":true}')])

    async def _on_get_head_info(self, conn: _Conn, msg: dict[str, Any], req_id: str) -> None:
        # The server's validator for this type never runs: nothing is validated (§2.5).
        common = self._common(msg, "GetHeadInfo")
        if common["fetch"]:
            await conn.send([wire.envelope("head_info", req_id, self._head_info())])
        if common["listen"]:
            stream = _Stream("head_info", req_id)
            self._register(conn, stream)
            self.stats.streams_started += 1
            stream.task = asyncio.create_task(self._run_head_info(conn, stream))

    def _chain_info(self) -> dict[str, Any]:
        """The ``get_info`` fields a collector reads (nodeos names)."""
        head = self.head
        lib = self.lib
        return {
            "server_version_string": "karma-devnet",
            "chain_id": self.options.chain_id,
            "head_block_num": head,
            "head_block_id": self.chain.block_id(head),
            "last_irreversible_block_num": lib,
            "last_irreversible_block_id": self.chain.block_id(lib),
        }

    def _head_info(self) -> str:
        head = self.head
        return wire.head_info_data(
            self.chain.block(head), self.chain.block(max(1, head - self.options.lib_lag))
        )

    async def _run_head_info(self, conn: _Conn, stream: _Stream) -> None:
        with contextlib.suppress(_Gone, asyncio.CancelledError):
            head = self.head
            while True:
                await conn.send([wire.envelope("head_info", stream.req_id, self._head_info())])
                head += 1
                await self._wait_head(head)

    # --- action trace streams -------------------------------------------------------------------

    def _block_frames(
        self, num: int, fork: int, stream: _Stream
    ) -> tuple[Block | None, Sequence[str]]:
        """The action_trace frames of the block's matching traces, rendered once per block and
        request shape (with this stream's ``req_id``) and kept in a byte-bounded LRU
        (``frame_cache_mb``) as ``(prefix, frames)``: a stream with another ``req_id`` swaps
        the prefix."""
        key = (num, fork, stream.cache_key)
        cache = self._frames
        prefix = stream.prefix
        entry = cache.get(key)
        if entry is not None:
            cache.move_to_end(key)
            if entry[0] == prefix:
                return None, entry[1]
            cut = len(entry[0])
            return None, tuple([prefix + frame[cut:] for frame in entry[1]])
        # Not the chain's block memo: the frames are what is kept (below); a block built just
        # for rendering dies young, which keeps the garbage collector's work small.
        block = self.chain.generate(num, fork)
        frames: list[str] = []
        if not block.transactions:
            return block, frames
        receivers, accounts, names = stream.receivers, stream.accounts, stream.names
        shape = stream.shape
        render = wire.action_trace_data
        for trx in block.transactions:
            # Only executed transactions are streamed (action.go).
            if trx.status != "executed":
                continue
            for idx, trace in enumerate(trx.traces):
                act = trace.act
                if (
                    trace.receiver in receivers
                    and act.account in accounts
                    and (names is None or act.name in names)
                ):
                    # The whole frame in one piece: envelope prefix, data, closing brace.
                    frames.append(render(trace, idx, trx, block, shape, prefix, "}"))
        size = 100 + sum(map(len, frames))
        # Tuples of strings: once the garbage collector has seen them it stops tracking them,
        # so a large frame cache does not slow down every collection.
        cache[key] = (prefix, tuple(frames))
        self._frames_bytes += size
        limit = self.options.frame_cache_mb * 1_000_000
        while self._frames_bytes > limit and cache:
            _, (_, old) = cache.popitem(last=False)
            self._frames_bytes -= 100 + sum(map(len, old))
        return block, frames

    def _render(self, conn: _Conn, stream: _Stream, num: int, fork: int, out: list[str]) -> bool:
        """Append the frames of block ``num`` for ``stream`` to ``out``; False once it stalls.

        Order per block (§4.3): its action traces, then the optional progress (§4.2). An
        empty block is a cheap object and never cached (the linear stream skips most of them
        with ``Chain.nonempty_between``).
        """
        options = self.options
        stall = options.stall_after
        chain = self.chain
        # Callers mostly pass blocks with transactions (Chain.nonempty_between); an empty one
        # costs a cheap generate and is not cached.
        block, frames = self._block_frames(num, fork, stream)
        if frames:
            if stall and len(frames) > stall - stream.frames:
                frames = frames[: max(0, stall - stream.frames)]
            if frames:
                if options.malformed_rate > 0:
                    for frame in frames:
                        if conn.malformed_rng.random() < options.malformed_rate:
                            bad, replaces = self._malformed(conn, frame)
                            out.append(bad)
                            self.stats.malformed_sent += 1
                            if replaces:
                                continue
                        out.append(frame)
                else:
                    out.extend(frames)
                stream.frames += len(frames)
                self.stats.action_traces_sent += len(frames)
        every = stream.with_progress
        if every and num % every == 0 and not (stall and stream.frames >= stall):
            now = time.monotonic()
            if now - stream.last_progress > options.progress_throttle:
                stream.last_progress = now
                block_id = block.id if block is not None else chain.block_id(num, fork)
                out.append(
                    f'{stream.progress_prefix}{{"block_num":{num},"block_id":"{block_id}"}}}}'
                )
                stream.frames += 1
                self.stats.progress_sent += 1
        return not (stall and stream.frames >= stall)

    def _malformed(self, conn: _Conn, frame: str) -> tuple[str, bool]:
        """A broken version of ``frame`` (``--malformed-rate``) and whether it replaces it.

        "json": the frame cut in half, sent before the real one (a protocol fault for the
        client, which reconnects). "field": valid JSON whose trace has one broken field (bad
        global_sequence, asset or name), sent instead of the real one: the client must keep it
        as a reject.
        """
        rng = conn.malformed_rng
        kind = self.options.malformed_kind
        if kind == "mixed":
            kind = "json" if rng.random() < 0.5 else "field"
        if kind == "json":
            return frame[: len(frame) // 2], False
        choice = rng.randrange(3)
        if choice == 1 and '"quantity":"' in frame:
            return frame.replace('"quantity":"', '"quantity":"1.2.3', 1), True
        if choice == 2 and '"from":"' in frame:
            return frame.replace('"from":"', '"from":"Not.A.Name!', 1), True
        return frame.replace('"global_sequence":', '"global_sequence":"not-a-number","x":', 1), True

    async def _run_actions(self, conn: _Conn, stream: _Stream) -> None:
        try:
            if not stream.irreversible and self.chain.fork_every:
                await self._stream_reversible(conn, stream)
            else:
                await self._stream_linear(conn, stream)
        except (_Gone, asyncio.CancelledError):
            pass
        except Exception:  # pragma: no cover - a bug: log it, drop the stream
            logger.exception("devnet stream %r failed", stream.req_id)

    async def _park(self) -> None:
        """A stalled stream: silent forever while the connection (and pings) go on."""
        self.stats.stalled_streams += 1
        await asyncio.Event().wait()

    async def _stream_linear(self, conn: _Conn, stream: _Stream) -> None:
        """Canonical blocks from ``start``: up to LIB (irreversible_only) or up to head."""
        batch_frames = self.options.batch_frames
        lag = self.options.lib_lag if stream.irreversible else 0
        num = stream.start
        while True:
            limit = self.head - lag
            if num > limit:
                await self._wait_head(num + lag)
                continue
            frames: list[str] = []
            stop = min(limit, num + 16 * batch_frames)
            alive = True
            # Only blocks with transactions or a progress candidate need any work.
            every = stream.with_progress
            for candidate in self.chain.nonempty_between(num, stop, every):
                alive = self._render(conn, stream, candidate, 0, frames)
                num = candidate + 1
                if not alive or len(frames) >= batch_frames:
                    break
            else:
                num = stop + 1
            if frames:
                await conn.send(frames)
            if not alive:
                await self._park()
            # Let the reader, pings and other streams run between batches.
            await asyncio.sleep(0)

    async def _stream_reversible(self, conn: _Conn, stream: _Stream) -> None:
        """Up to head, with forked-out blocks and their replacements (§3.8)."""
        chain = self.chain
        batch_frames = self.options.batch_frames
        events = chain.reversible_events(stream.start)
        pending = next(events)
        while True:
            frames: list[str] = []
            alive = True
            count = 0
            head = self.head
            while pending[2] <= head and len(frames) < batch_frames and count < 4 * batch_frames:
                num, fork, _ = pending
                alive = self._render(conn, stream, num, fork, frames)
                pending = next(events)
                count += 1
                if not alive:
                    break
            if frames:
                await conn.send(frames)
            if not alive:
                await self._park()
            if pending[2] > self.head:
                await self._wait_head(pending[2])
            else:
                await asyncio.sleep(0)


def _text_frames(frames: list[str], start: int, stop: int) -> bytes:
    """RFC 6455 unmasked, unfragmented text frames (server side, no extensions) for
    ``frames[start:stop]``, as one buffer: what ``protocol.send_text`` would produce."""
    parts: list[bytes] = []
    append = parts.append
    heads = _FRAME_HEADS
    for j in range(start, stop):
        payload = frames[j].encode()
        size = len(payload)
        head = heads.get(size)
        if head is None:
            if size < 126:
                head = bytes((0x81, size))
            elif size < 65536:
                head = b"\x81\x7e" + size.to_bytes(2, "big")
            else:
                head = b"\x81\x7f" + size.to_bytes(8, "big")
            if len(heads) < 65536:
                heads[size] = head
        append(head)
        append(payload)
    return b"".join(parts)


_FRAME_HEADS: dict[int, bytes] = {}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@contextlib.asynccontextmanager
async def devnet_server(**options: Any) -> AsyncIterator[DevnetServer]:
    """Run a devnet server for the duration of the block.

    Args:
        **options: fields of :class:`DevnetOptions` (``seed``, ``head``, ``drop_every``, ...).

    Yields:
        The started :class:`DevnetServer` (``.url``, ``.auth_url``, ``.chain``, ``.head``,
        ``.lib``, ``.stats``).
    """
    server = DevnetServer(**options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
