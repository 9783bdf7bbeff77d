"""dfuse WebSocket Stream API source: turns a ``get_action_traces`` stream into engine events.

The source owns the socket and everything about it: endpoint and token (:mod:`.auth`), the
request, reconnects with backoff, the ``pong`` keep-alive, the stall watchdog and the frame
decoder. It owns no commit state: *where* a new stream starts is decided by the engine.

Driving contract (the runner's duties)
--------------------------------------
::

    source = DfuseSource(endpoint, contract="therealkarma", action="transfer",
                         api_key=key, start_block=start)
    try:
        async for event in source.events():
            for action in engine.handle(event, now()):
                if isinstance(action, Restart):
                    source.restart(action.start_block)     # before the next __anext__
                ...
    finally:
        await source.aclose()

* :meth:`DfuseSource.events` yields :class:`~karma_analytics.engine.Listening`,
  :class:`~karma_analytics.engine.ActionReceived`, :class:`~karma_analytics.engine.Progress`
  and :class:`~karma_analytics.engine.ConnectionLost`, in stream order.
  :meth:`DfuseSource.batches` yields the same events as lists, one per socket read (with
  :meth:`~karma_analytics.engine.Engine.handle_batch`, the collector's way: a read holds
  dozens of frames, and per-event overhead was a third of the collector's time).
* After yielding ``ConnectionLost`` the source is **suspended** (it is an async generator: no
  socket is opened and no request is sent until the runner asks for the next event). The
  runner feeds ``ConnectionLost`` to the engine, which drops the open block and answers
  ``Restart(S)``; the runner calls :meth:`DfuseSource.restart` with ``S``; only then does the
  next ``__anext__`` wait for the backoff delay, reconnect and send the request with
  ``start_block = S``. So the open block is always dropped before the new request leaves
  (DESIGN.md hole 6). Resuming the iterator after ``ConnectionLost`` without calling
  :meth:`~DfuseSource.restart` raises :class:`~karma_analytics.exceptions.UsageError`.
* ``restart(S)`` may also be called while a stream is healthy (the engine restarts on a
  protocol violation): the next ``__anext__`` closes the socket and reconnects at ``S``
  without yielding ``ConnectionLost`` (the engine already knows).
* ``restart(None)`` (the engine has no start point yet: a fresh dataset before its first
  ``listening``) requests the configured ``start_block`` again.
* Every transient fault yields ``ConnectionLost(reason)``: a dropped socket (any close code,
  including 1000 and 1009), a refused or failed handshake (HTTP 5xx/429, connection refused,
  timeout), a transient server ``error`` message, a malformed frame
  (:class:`~karma_analytics.exceptions.ProtocolError`), a stall. The source never gives up on
  these by itself, except that a malformed frame or an unknown server error code repeated
  at the same start block ``max_repeated_faults`` times in a row becomes fatal.
* Fatal faults are **raised** from the iterator (after closing the socket):
  :class:`~karma_analytics.exceptions.ConnectError` with ``fatal=True`` (HTTP 401 for a token
  issued for this very attempt — a cached token refused with 401 is first renewed once —, or
  401 without an API key; 403/404 and other 4xx; the auth service refusing the key; a
  certificate error) and :class:`~karma_analytics.exceptions.ServerError` with ``fatal=True``
  (a request the server will never accept, see :data:`FATAL_CODES`). The engine has already
  seen every complete block; the runner should feed ``StopRequested`` so they get committed.
* Only ``action_trace``, ``progress`` and ``listening`` count as stream activity for the
  watchdog (``ping`` frames do not); time the generator spends suspended in the runner does not
  count either.

Events
------
Each ``action_trace`` becomes one ``ActionReceived``: with ``transfer`` set when it parses,
with ``reject`` set when it does not (the trace is kept with the reason, never dropped), and
with neither when it is not a row (a notification, or another action the server sent anyway):
that one still tells the engine that earlier blocks are complete. A trace whose ``block_num``
or ``block_id`` is unusable cannot be placed in the stream: that is a ``ProtocolError``.

Decoding
--------
The hot path decodes frames with ``msgspec`` into typed structs holding only the fields a
transfer needs (unused fields such as ``hex_data``, ``act_digest`` or ``auth_sequence`` are
skipped without building Python objects) and validates them with the same rules as
:func:`karma_analytics.model.transfer_from_action_trace`. Anything it does not accept goes to the
reference path (``json.loads`` + the model function), which decides; so both paths give the
same result. Without ``msgspec`` installed the reference path handles every frame.
Measured on 52,000 devnet frames (1.4 KB each): ``json.loads`` alone 11.4 us/frame; the
reference path 25 us (json.loads + model); ``orjson`` + model 14 us; the fast path 7.1 us,
frame to event (0.62x the cost of ``json.loads`` alone). Later, on a quieter machine:
``json.loads`` 8.2 us, the fast path 3.7 us (msgspec 1.4 us + checks 2.2 us).

Receiving
---------
Frames are not read with websockets' ``recv()`` (a future, a queue hop and a join per
message, ~5 us, and the per-read timeout another ~5 us) but taken a socket read at a time
from :class:`BatchConnection`, a websockets ``ClientConnection`` subclass that keeps its own
message list; websockets still does the handshake, framing, control frames, limits and the
close handshake. The stall timers are armed only when no frame is waiting.

Choices (and why)
-----------------
* ``with_progress=10``: progress is throttled to one per 250 ms by the server (§4.2), so the
  modulo only matters live, where 10 blocks = 5 s: replays after a reconnect stay short, zero-row
  cursor commits stay cheap, and billed services (each message is a document) send 10x fewer
  than with 1.
* ``max_size`` 16 MiB: a transfer trace is about 1.5 KB (no inline traces or ops are
  requested). If a frame still exceeds it, websockets closes with 1009; the source then doubles
  the limit for the next connection, up to 256 MiB (a bigger frame is a protocol fault that
  becomes fatal when it repeats).
* Close codes 1000 and 1009 reconnect too (client-js stops on them, §1.4; a collector must not
  stop silently). The code is logged.
* ``compression=None`` by default: on loopback against the devnet (which offers deflate),
  200,000 blocks / 51,500 events took 1.09 s of client CPU without and 1.29 s with
  permessage-deflate; pass ``compression="deflate"`` for slow remote links.
* No WebSocket-level pings (the dfuse server pings every 10 s at the application level, §1.3);
  a dead socket is caught by ``read_timeout`` (no frame at all, pings included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode, Frame, Opcode

from karma_analytics import model
from karma_analytics.engine import ActionReceived, ConnectionLost, Listening, Progress, Reject
from karma_analytics.exceptions import (
    ConnectError,
    KarmaError,
    ParseError,
    ProtocolError,
    ServerError,
    StalledError,
    UsageError,
    redact,
)
from karma_analytics.sources.auth import TokenManager, derive_auth_url

try:  # optional speed-up; the reference path needs only the standard library
    import msgspec
except ImportError:  # pragma: no cover - msgspec is installed in the project's environment
    msgspec = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FATAL_CODES",
    "NETWORKS",
    "TRANSIENT_CODES",
    "DfuseSource",
    "FrameDecoder",
    "exponential_backoff",
    "resolve_endpoint",
    "server_error_from",
]

logger = logging.getLogger(__name__)

STREAM_PATH = "/v1/stream"
#: Hosted dfuse endpoints by network name (dfuse-protocol.md §1.1).
NETWORKS: dict[str, str] = {
    "mainnet": "mainnet.eos.dfuse.io",
    "kylin": "kylin.eos.dfuse.io",
    "eosnation": "eos.dfuse.eosnation.io",
    "community": "eos.dfuse.eosnation.io",
    "eos": "eos.dfuse.eosnation.io",  # the community edition is the EOS endpoint still served
}
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

DEFAULT_MAX_SIZE = 16 * 2**20
MAX_SIZE_CAP = 256 * 2**20
PONG_FRAME = '{"type":"pong"}'

#: dfuse error codes that retrying the same request cannot fix (§3.4), with what to do.
FATAL_CODES: dict[str, str] = {
    "auth_invalid_token_error": "the token was refused; check DFUSE_API_KEY and the auth URL",
    "auth_invalid_streaming_start_block_error": (
        "the API key may not go back that far; start at a later block (a fresh dataset with "
        "--start-block) or use a key with more history"
    ),
    "ws_message_data_validation_error": "the server refused the request; check contract/action",
    "ws_invalid_json_message_data_error": "the server could not decode the request fields",
    "ws_invalid_json_message_error": "the server could not parse the request as JSON",
    "request_validation_error": "the server refused the request (e.g. start block 0 resolved)",
    "ws_unknown_message_error": "this server does not know get_action_traces",
    "ws_unavailable_message_error": "get_action_traces is disabled on this server",
    "ws_binary_message_unsupported_error": "the server refused a binary frame",
}
#: dfuse error codes after which a new connection may succeed (§3.4, §5.5).
TRANSIENT_CODES = frozenset(
    {
        "unexpected_error",
        "data_unable_to_get_irreversible_block_id_error",
        "ws_stream_already_exist_error",
        "ws_too_much_stream_error",
        "ws_stream_not_found_error",
        "app_head_info_not_ready_error",
    }
)

BackoffSchedule = Callable[[], Iterator[float]]


# --- endpoint --------------------------------------------------------------------------------


def resolve_endpoint(
    endpoint: str | None = None,
    *,
    network: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The stream URL for an endpoint or a network name (dfuse-protocol.md §1.1).

    Accepted forms: ``ws[s]://host[:port][/path]`` (``/v1/stream`` is appended when there is
    no path), a network name from :data:`NETWORKS`, or a bare ``host[:port]`` (``wss://``, or
    ``ws://`` for a loopback host). Without ``endpoint`` the ``network`` argument, then the
    ``DFUSE_API_NETWORK`` environment variable is used.

    Raises:
        UsageError: nothing given, another scheme, or credentials in the URL.
    """
    environ = environ if environ is not None else _os_environ()
    given = endpoint or network or environ.get("DFUSE_API_NETWORK") or ""
    given = given.strip()
    if not given:
        raise UsageError(
            "no dfuse endpoint: pass an endpoint URL (ws[s]://host/v1/stream), a network name "
            f"({', '.join(sorted(NETWORKS))}) or set DFUSE_API_NETWORK"
        )
    given = NETWORKS.get(given.lower(), given)
    if "://" not in given:
        host = urllib.parse.urlsplit("//" + given).hostname or ""
        scheme = "ws" if host in _LOOPBACK_HOSTS else "wss"
        given = f"{scheme}://{given}"
    parts = urllib.parse.urlsplit(given)
    if parts.scheme not in ("ws", "wss"):
        raise UsageError(f"the dfuse endpoint must be a ws:// or wss:// URL, got {parts.scheme}://")
    if not parts.hostname:
        raise UsageError(f"the dfuse endpoint has no host: {redact(given)!r}")
    query = urllib.parse.parse_qs(parts.query)
    if "token" in query or parts.username or parts.password:
        raise UsageError(
            "do not put credentials in the endpoint URL; pass the API key (api_key= or "
            "DFUSE_API_KEY): the source fetches and renews the token itself"
        )
    path = parts.path if parts.path not in ("", "/") else STREAM_PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _os_environ() -> Mapping[str, str]:
    import os

    return os.environ


# --- backoff ---------------------------------------------------------------------------------


def exponential_backoff(
    *,
    initial: float = 0.5,
    factor: float = 2.0,
    maximum: float = 30.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> BackoffSchedule:
    """A capped exponential backoff schedule with jitter.

    The n-th delay (from 0) is ``min(maximum, initial * factor**n)`` scaled by a random factor
    in ``[1 - jitter, 1]``, so that many collectors do not reconnect in lockstep.

    Args:
        initial: first delay in seconds.
        factor: growth per attempt.
        maximum: cap in seconds (before jitter).
        jitter: fraction of the delay that is random (0 = none, 1 = full jitter).
        rng: random generator (seed it in tests); default a fresh ``random.Random()``.

    Returns:
        A factory; each call starts a new sequence of delays (the source starts a new one
        after a connection that delivered data).
    """
    if initial < 0 or factor < 1 or maximum < 0 or not 0 <= jitter <= 1:
        raise UsageError("backoff needs initial >= 0, factor >= 1, maximum >= 0, 0 <= jitter <= 1")
    generator = rng if rng is not None else random.Random()

    def schedule() -> Iterator[float]:
        delay = initial
        while True:
            yield min(delay, maximum) * (1.0 - jitter * generator.random())
            delay = min(maximum, delay * factor)

    return schedule


# --- server errors ---------------------------------------------------------------------------


def server_error_from(data: object) -> ServerError:
    """Build the :class:`ServerError` for the ``data`` of an ``error`` message (§3.4).

    Known fatal codes get ``fatal=True`` and a hint; known transient codes and unknown codes
    are transient (the source reconnects).
    """
    if not isinstance(data, dict):
        data = {}
    code = data.get("code")
    code = code if isinstance(code, str) and code else "unknown_error"
    message = data.get("message")
    message = message if isinstance(message, str) else ""
    details = data.get("details")
    trace_id = data.get("trace_id")
    fatal = code in FATAL_CODES
    if fatal:
        hint = FATAL_CODES[code]
    elif code in TRANSIENT_CODES:
        hint = "reconnecting"
    else:
        hint = "unknown error code; reconnecting"
    if isinstance(details, dict) and details.get("reason"):
        message = f"{message} ({details['reason']})"
    return ServerError(
        code,
        message,
        details=details if isinstance(details, dict) else None,
        trace_id=trace_id if isinstance(trace_id, str) else "",
        fatal=fatal,
        hint=hint,
    )


# --- frames ----------------------------------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-f]{64}")
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1

IGNORED = None  # what FrameDecoder.decode returns for frames that are not stream events


if msgspec is not None:
    # Typed views of the hot messages: only the fields a transfer needs are decoded; any
    # mismatch raises and sends the frame to the reference path. gc=False: they hold no
    # cycles, and untracked structs are cheaper to create and free.

    class _Fields(msgspec.Struct, gc=False):
        from_: str = msgspec.field(name="from")
        to: str
        quantity: str
        memo: str

    class _Act(msgspec.Struct, gc=False):
        account: str
        name: str
        data: _Fields | None = None

    class _Receipt(msgspec.Struct, gc=False):
        global_sequence: int | str

    class _Trace(msgspec.Struct, gc=False):
        act: _Act
        receiver: str | None = None
        receipt: _Receipt | None = None

    class _TraceData(msgspec.Struct, gc=False):
        block_num: int
        block_id: str
        block_time: str
        trx_id: str
        idx: int
        trace: _Trace

    class _ActionTraceMsg(msgspec.Struct, tag_field="type", tag="action_trace", gc=False):
        data: _TraceData
        req_id: str = ""

    class _ProgressData(msgspec.Struct, gc=False):
        block_num: int
        block_id: str

    class _ProgressMsg(msgspec.Struct, tag_field="type", tag="progress", gc=False):
        data: _ProgressData
        req_id: str = ""

    class _PingMsg(msgspec.Struct, tag_field="type", tag="ping", gc=False):
        pass

    _FAST_DECODER: Any = msgspec.json.Decoder(_ActionTraceMsg | _ProgressMsg | _PingMsg)
    _FAST_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, msgspec.ValidationError)
else:  # pragma: no cover
    _FAST_DECODER = None
    _FAST_ERRORS = ()


_PLAIN_ASSET = re.compile(r"([0-9]+)(?:\.([0-9]{1,18}))? ([A-Z]{1,7})")


def _fast_asset(text: str) -> tuple[int, int, str] | None:
    """``parse_asset`` for the plain form ``digits[.digits] SYMBOL``; ``None`` = ask the model.

    Accepts a subset of what :func:`model.parse_asset` accepts, with the same result: the
    language of ``_PLAIN_ASSET``, checked with string methods (a third cheaper than the regex).
    """
    number, _, symbol = text.partition(" ")
    whole, dot, fraction = number.partition(".")
    if not (
        0 < len(symbol) <= 7
        and symbol.isascii()
        and symbol.isalpha()
        and symbol.isupper()
        and whole.isascii()
        and whole.isdigit()
    ):
        return None
    if dot:
        if not (len(fraction) <= 18 and fraction.isascii() and fraction.isdigit()):
            return None
        amount, precision = int(whole + fraction), len(fraction)
    else:
        amount, precision = int(whole), 0
    if amount > model.ASSET_MAX_AMOUNT:
        return None
    return amount, precision, symbol


_NAME_CACHE_LIMIT = 65_536  # accounts; a token with more active ones only re-validates some
_minute_cache: dict[str, int] = {}
_MINUTE_CACHE_LIMIT = 4096


def _fast_time(text: str) -> int | None:
    """``parse_block_time`` for the top-level form ``YYYY-MM-DDTHH:MM:SS[.f]Z``; ``None`` = ask
    the model.

    Blocks are 0.5 s apart, so nearly every transfer has a new time string; parsing it fully
    (regex + datetime) was the largest cost of a frame. The minute prefix is parsed once by the
    model and cached; seconds and fraction are checked here.
    """
    if len(text) < 20 or text[16] != ":" or text[-1] != "Z":
        return None
    prefix = text[:16]
    base = _minute_cache.get(prefix)
    if base is None:
        try:
            base = model.parse_block_time(prefix + ":00Z")
        except ParseError:
            return None
        if len(_minute_cache) >= _MINUTE_CACHE_LIMIT:
            _minute_cache.clear()
        _minute_cache[prefix] = base
    seconds = text[17:19]
    if not (seconds.isascii() and seconds.isdigit()) or seconds > "59":
        return None
    fraction = text[19:-1]
    if not fraction:
        return base + int(seconds) * 1000
    digits = fraction[1:]
    if fraction[0] != "." or not (0 < len(digits) <= 9 and digits.isascii() and digits.isdigit()):
        return None
    return base + int(seconds) * 1000 + int(digits[:3].ljust(3, "0"))


class FrameDecoder:
    """Turns one text frame of a ``get_action_traces`` stream into an engine event.

    Args:
        req_id: the stream's request id; frames of other streams are ignored.
        contract: the token contract (``act.account`` of a row).
        action: the action name of a row.
        fast: use the msgspec path when available (the reference path decides everything
            the fast path does not accept).
    """

    def __init__(self, req_id: str, contract: str, action: str, *, fast: bool = True) -> None:
        self.req_id = req_id
        self.contract = contract
        self.action = action
        self.fast = fast and _FAST_DECODER is not None
        self._block_id = ""  # last block id the fast path validated
        self._trx_id = ""  # last transaction id the fast path validated
        self._time_text = ""  # last block time the fast path parsed, and its value
        self._time_ms = 0
        self._names: set[str] = set()  # account names already found valid

    def _learn_name(self, name: str) -> bool:
        if not model.is_valid_name(name):
            return False
        if len(self._names) >= _NAME_CACHE_LIMIT:
            self._names.clear()
        self._names.add(name)
        return True

    def decode(self, frame: bytes | str) -> Listening | ActionReceived | Progress | None:
        """Decode one frame.

        Returns:
            The event, or ``None`` for frames that are not stream events (``ping``, frames
            of other streams, ``unlistened``, errors without a request id).

        Raises:
            ProtocolError: not JSON, not an object, an unknown ``type`` for this stream, or
                missing/mistyped envelope fields.
            ServerError: an ``error`` message for this stream.
        """
        events: list[Any] = []
        self.decode_into((frame,), events)
        return events[0] if events else None

    def decode_into(self, frames: Iterable[bytes | str], out: list[Any]) -> None:
        """Decode frames in order, appending their events (``None`` results skipped) to ``out``.

        Raises:
            ProtocolError, ServerError: as :meth:`decode`; ``out`` then holds the events of the
                frames before the bad one, which are valid stream data.
        """
        append = out.append
        if not self.fast:
            for frame in frames:
                event = self.decode_reference(frame)
                if event is not None:
                    append(event)
            return
        # The hot loop: it runs once per frame of the stream.
        fast_decode = _FAST_DECODER.decode
        fast = self._fast
        for frame in frames:
            try:
                event = fast(fast_decode(frame))
            except _FAST_ERRORS:
                event = _SLOW
            if event is _SLOW:
                event = self.decode_reference(frame)
            if event is not None:
                append(event)

    def _fast(self, message: Any) -> Any:
        cls = type(message)
        if cls is _PingMsg:
            return IGNORED
        if message.req_id != self.req_id:
            return _SLOW
        data = message.data
        if cls is _ProgressMsg:
            if 0 <= data.block_num <= _UINT32_MAX and _HEX64.fullmatch(data.block_id):
                return Progress(data.block_num, data.block_id)
            return _SLOW
        trace = data.trace
        act = trace.act
        fields = act.data
        receipt = trace.receipt
        block_id = data.block_id
        if (
            fields is None
            or receipt is None
            or trace.receiver != act.account
            or act.account != self.contract
            or act.name != self.action
            or not 0 <= data.block_num <= _UINT32_MAX
            or not 0 <= data.idx <= _UINT32_MAX
            or not (fields.from_ in self._names or self._learn_name(fields.from_))
            or not (fields.to in self._names or self._learn_name(fields.to))
        ):
            return _SLOW
        # Rows of one block (and, with airdrops, hundreds of rows of one transaction) share
        # these ids: each is validated once, and the rows share one string object (less
        # memory while rows wait for their commit).
        trx_id = data.trx_id
        if trx_id == self._trx_id:
            trx_id = self._trx_id
        elif _HEX64.fullmatch(trx_id):
            self._trx_id = trx_id
        else:
            return _SLOW
        if block_id == self._block_id:
            block_id = self._block_id
        elif _HEX64.fullmatch(block_id):
            self._block_id = block_id
        else:
            return _SLOW
        gs = receipt.global_sequence
        if type(gs) is str:
            if not (gs.isdigit() and gs.isascii()):
                return _SLOW
            gs = int(gs)
        if not 0 <= gs <= _UINT64_MAX:
            return _SLOW
        asset = _fast_asset(fields.quantity)
        if asset is None:
            return _SLOW
        text = data.block_time
        if text == self._time_text:  # actions of one block share its time
            block_time = self._time_ms
        else:
            block_time = _fast_time(text)
            if block_time is None:
                return _SLOW
            self._time_text, self._time_ms = text, block_time
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (same object, ~0.3 us less).
        transfer = _new_tuple(
            model.Transfer,
            (
                data.block_num,
                block_id,
                block_time,
                trx_id,
                data.idx,
                gs,
                self.contract,  # equal to the frame's (checked above); one shared object
                self.action,
                fields.from_,
                fields.to,
                asset[0],
                asset[1],
                asset[2],
                fields.memo,
            ),
        )
        return ActionReceived(data.block_num, block_id, block_time, gs, transfer)

    def decode_reference(self, frame: bytes | str) -> Listening | ActionReceived | Progress | None:
        """The reference path: ``json.loads`` and :func:`model.transfer_from_action_trace`."""
        try:
            message = json.loads(frame)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(
                f"the server sent a frame that is not JSON ({exc})", frame=_text(frame)
            ) from None
        if not isinstance(message, dict):
            raise ProtocolError(
                "the server sent a JSON frame that is not an object", frame=_text(frame)
            )
        kind = message.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("the server sent a frame without a 'type'", frame=_text(frame))
        if kind == "ping":
            return IGNORED
        req_id = message.get("req_id")
        data = message.get("data")
        if kind == "error":
            if req_id == self.req_id:
                raise server_error_from(data)
            if not req_id:
                # Not about a request (e.g. an unparsable frame); client-js drops these (§5.3).
                error = server_error_from(data)
                logger.warning("server error without a request id (ignored): %s", error)
            return IGNORED
        if req_id != self.req_id:
            logger.debug("ignoring a %r frame for request %r", kind, req_id)
            return IGNORED
        if kind == "action_trace":
            return self._action(data, frame)
        if kind == "progress":
            block_num, block_id = _envelope(data, kind, frame)
            return Progress(block_num, block_id)
        if kind == "listening":
            next_block = data.get("next_block") if isinstance(data, dict) else None
            if not _is_uint(next_block, _UINT32_MAX):
                raise ProtocolError(
                    "the server sent 'listening' without a valid next_block", frame=_text(frame)
                )
            return Listening(next_block)
        if kind == "unlistened":
            return IGNORED
        raise ProtocolError(
            f"the server sent an unknown message type {kind!r} for this stream", frame=_text(frame)
        )

    def _action(self, data: Any, frame: bytes | str) -> ActionReceived:
        block_num, block_id = _envelope(data, "action_trace", frame)
        try:
            transfer = model.transfer_from_action_trace(data)
        except ParseError as exc:
            return self._reject(data, block_num, block_id, exc.message)
        gs = _uint_or_none(_dig(data, "trace", "receipt", "global_sequence"))
        block_time = _time_or_none(data.get("block_time"))
        if transfer is None or transfer.contract != self.contract or transfer.action != self.action:
            # A notification or another action: not a row, but the stream is ordered by block,
            # so it still proves that earlier blocks are complete.
            return ActionReceived(block_num, block_id, block_time, gs)
        return ActionReceived(
            block_num, block_id, transfer.block_time, transfer.global_sequence, transfer
        )

    def _reject(
        self, data: dict[str, Any], block_num: int, block_id: str, reason: str
    ) -> ActionReceived:
        trx_id = data.get("trx_id")
        idx = data.get("idx")
        gs = _uint_or_none(_dig(data, "trace", "receipt", "global_sequence"))
        reject = Reject(
            block_num=block_num,
            block_id=block_id,
            trx_id=trx_id if isinstance(trx_id, str) else "",
            action_idx=idx if _is_uint(idx, _UINT32_MAX) else -1,
            global_sequence=gs,
            reason=reason,
            raw=json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        )
        logger.warning(
            "kept a transfer that does not parse (block %d, trx %s): %s",
            block_num,
            reject.trx_id or "?",
            reason,
        )
        return ActionReceived(
            block_num, block_id, _time_or_none(data.get("block_time")), gs, reject=reject
        )


_SLOW = object()
_new_tuple = tuple.__new__


def _text(frame: bytes | str) -> str:
    return frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame


def _is_uint(value: object, maximum: int) -> bool:
    return type(value) is int and 0 <= value <= maximum


def _uint_or_none(value: object) -> int | None:
    try:
        return model.parse_uint64(value, field="global_sequence")
    except ParseError:
        return None


def _time_or_none(value: object) -> int | None:
    try:
        return model.parse_block_time(value)
    except ParseError:
        return None


def _dig(data: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _envelope(data: object, kind: str, frame: bytes | str) -> tuple[int, str]:
    """``block_num`` and ``block_id``: without them a message cannot be placed in the stream."""
    if not isinstance(data, dict):
        raise ProtocolError(f"the server sent {kind!r} without a data object", frame=_text(frame))
    block_num = data.get("block_num")
    block_id = data.get("block_id")
    if not _is_uint(block_num, _UINT32_MAX):
        raise ProtocolError(
            f"the server sent {kind!r} without a valid block_num", frame=_text(frame)
        )
    if not (isinstance(block_id, str) and _HEX64.fullmatch(block_id)):
        raise ProtocolError(
            f"the server sent {kind!r} without a valid block_id", frame=_text(frame)
        )
    return block_num, block_id


# --- the source ------------------------------------------------------------------------------


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Hands websockets a logger whose lines never carry the token (its DEBUG log prints the
    request line ``GET /v1/stream?token=...``)."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            kwargs.setdefault("stacklevel", 2)
            self.logger.log(level, "%s", redact(text), **kwargs)


class _Lost(Exception):
    """Internal: the current connection ended for a transient reason (already logged)."""

    def __init__(self, reason: str, *, cause: KarmaError | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


_UNSET: Any = object()


class BatchConnection(ClientConnection):
    """A websockets client connection that hands over received messages a socket read at a time.

    ``recv()`` costs a future, a queue hop and a join per message: about as much as decoding
    one of our 1.5 KB frames (bench/bench_ingest.py). A stream of many small messages is
    cheaper taken in batches: :meth:`take` returns every message received so far. The
    handshake, control frames (pings are answered by websockets), the close handshake, the
    ``max_size`` limit and compression stay with websockets: only the message queue is ours,
    through ``process_event``, the hook websockets provides for subclasses.

    Pass it as ``connect(..., create_connection=BatchConnection)`` and do not call ``recv()``.
    """

    #: Messages buffered before reading from the socket pauses (TCP backpressure): ~3 MB here.
    high_water = 2048
    #: Fragments of one message above which it is refused (close 1009), as websockets does.
    max_fragments = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[bytes] = []
        self._fragments: list[bytes] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False

    def process_event(self, event: Any) -> None:
        if type(event) is not Frame or self.response is None:
            super().process_event(event)  # the handshake response
            return
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            data = event.data
            message = data if type(data) is bytes else bytes(data)
            if not event.fin:
                self._fragments = [message]
                return
        elif opcode is Opcode.CONT:
            # websockets' parser already refused a continuation without a first fragment.
            fragments = self._fragments
            assert fragments is not None
            fragments.append(bytes(event.data))
            if len(fragments) > self.max_fragments:
                self._fragments = None
                self.protocol.fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
                self.send_data()
                return
            if not event.fin:
                return
            self._fragments = None
            message = b"".join(fragments)
        else:
            super().process_event(event)  # ping, pong, close
            return
        self.messages.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(self.messages) >= self.high_water and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_nowait(self) -> list[bytes]:
        """Every message received so far, oldest first (possibly none)."""
        messages = self.messages
        if messages:
            self.messages = []
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
        return messages

    async def take(self) -> list[bytes]:
        """Wait for at least one message; return every message received so far.

        Messages that arrived before the connection closed are returned first.

        Raises:
            ConnectionClosed: the connection is closed and every message was taken.
        """
        if not self.messages:
            if not self.connection_lost_waiter.done():
                waiter = self._waiter = self.loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
            if not self.messages:
                await asyncio.shield(self.connection_lost_waiter)
                raise self.close_exc
        return self.take_nowait()


class DfuseSource:
    """A ``get_action_traces`` stream with reconnects, as an async iterator of engine events.

    See the module docstring for the driving contract.

    Args:
        endpoint: stream URL, ``host[:port]`` or network name (see :func:`resolve_endpoint`).
        contract: token contract; sent as ``accounts`` and ``receivers`` (the contract's own
            executions only, §2.2).
        action: action name; sent as ``action_names``.
        api_key: dfuse API key, or ``None`` for a server without authentication.
        auth_url: token issuer; ``None`` derives it from the endpoint (§1.2).
        irreversible_only: stream irreversible blocks only (DESIGN.md default).
        start_block: the first request's ``start_block`` (0 = head, negative = relative to
            head, positive = absolute, inclusive). Later requests use :meth:`restart`'s value.
        with_progress: ``with_progress`` modulo (0 = off; see the module docstring).
        stall_seconds: restart a stream that sent no ``listening``/``action_trace``/
            ``progress`` for this long while the socket lives (pings do not count).
        read_timeout: restart when no frame at all (pings included) arrived for this long;
            ``None`` disables (the server pings every 10 s).
        keepalive_seconds: interval of the ``{"type":"pong"}`` keep-alive (§1.3); ``None``
            disables it.
        backoff: reconnect delay schedule factory (see :func:`exponential_backoff`).
        rng: random generator for the default schedule's jitter.
        req_id: the stream's request id (stable across reconnects); default derived from the
            contract and action.
        open_timeout: seconds allowed for TCP + TLS + WebSocket handshake.
        max_size: largest accepted frame in bytes (see the module docstring).
        compression: ``None`` or ``"deflate"`` (permessage-deflate).
        max_repeated_faults: consecutive malformed-frame (or unknown error code) faults at the
            same start block after which the error becomes fatal.
        auth_timeout: HTTP timeout in seconds of one token request.
        tokens: a prepared :class:`TokenManager` (overrides ``api_key``/``auth_url``).

    Attributes:
        url: the stream URL without credentials.
        connects: successful handshakes so far.
        reconnects: connection attempts after the first one.
        last_error: text of the last transient fault (redacted), or ``None``.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        contract: str = "therealkarma",
        action: str = "transfer",
        api_key: str | None = None,
        auth_url: str | None = None,
        irreversible_only: bool = True,
        start_block: int = 0,
        with_progress: int = 10,
        stall_seconds: float = 60.0,
        read_timeout: float | None = 45.0,
        keepalive_seconds: float | None = 30.0,
        backoff: BackoffSchedule | None = None,
        rng: random.Random | None = None,
        req_id: str | None = None,
        open_timeout: float = 10.0,
        max_size: int = DEFAULT_MAX_SIZE,
        compression: str | None = None,
        max_repeated_faults: int = 5,
        auth_timeout: float = 10.0,
        tokens: TokenManager | None = None,
    ) -> None:
        self.url = resolve_endpoint(endpoint, environ={})
        self.contract = model.parse_name(contract, field="contract")
        self.action = model.parse_name(action, field="action")
        if with_progress < 0:
            raise UsageError(f"with_progress must be >= 0, got {with_progress}")
        if stall_seconds <= 0 or (read_timeout is not None and read_timeout <= 0):
            raise UsageError("stall_seconds and read_timeout must be positive")
        if keepalive_seconds is not None and keepalive_seconds <= 0:
            raise UsageError("keepalive_seconds must be positive (or None to disable)")
        if not 0 < max_size <= MAX_SIZE_CAP:
            raise UsageError(f"max_size must be in 1..{MAX_SIZE_CAP} bytes")
        self.irreversible_only = irreversible_only
        self.start_block = start_block
        self.with_progress = with_progress
        self.stall_seconds = stall_seconds
        self.read_timeout = read_timeout
        self.keepalive_seconds = keepalive_seconds
        self.req_id = req_id or f"karma-{self.contract}-{self.action}"
        self.open_timeout = open_timeout
        self.max_size = max_size
        self.compression = compression
        self.max_repeated_faults = max_repeated_faults
        self._backoff = backoff or exponential_backoff(rng=rng)
        if tokens is not None:
            self.tokens: TokenManager | None = tokens
        elif api_key:
            self.tokens = TokenManager(
                api_key, auth_url or derive_auth_url(self.url), timeout=auth_timeout
            )
        else:
            self.tokens = None
        self.decoder = FrameDecoder(self.req_id, self.contract, self.action)
        self.connects = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._restart_to: Any = _UNSET  # start block for the next request, set by restart()
        self._awaiting_restart = False
        self._generator: Any = None
        self._ws: BatchConnection | None = None
        self._deferred: BaseException | None = None  # a fault to raise after its batch
        self._tasks: list[asyncio.Future[Any]] = []
        self._ws_logger = _RedactingLogger(logging.getLogger("websockets.client"), {})

    def __repr__(self) -> str:
        return f"DfuseSource({self.url!r}, contract={self.contract!r}, action={self.action!r})"

    # -- the request --------------------------------------------------------------------------

    def request(self, start_block: int) -> dict[str, Any]:
        """The ``get_action_traces`` message sent for ``start_block`` (§2.1, §2.2)."""
        message: dict[str, Any] = {
            "type": "get_action_traces",
            "req_id": self.req_id,
            "listen": True,
            "start_block": start_block,
            "irreversible_only": self.irreversible_only,
        }
        if self.with_progress:
            message["with_progress"] = self.with_progress
        message["data"] = {
            "accounts": self.contract,
            "receivers": self.contract,
            "action_names": self.action,
        }
        return message

    # -- driving ------------------------------------------------------------------------------

    def restart(self, start_block: int | None) -> None:
        """Set the start block of the next request (the engine's ``Restart.start_block``).

        Call it after feeding ``ConnectionLost`` to the engine and before asking for the next
        event; called during a healthy stream, it makes the source reconnect at
        ``start_block``. ``None`` means the configured ``start_block``.
        """
        self._restart_to = self.start_block if start_block is None else start_block
        self._awaiting_restart = False

    def events(self, start_block: int | None = None) -> AsyncIterator[Any]:
        """Stream engine events until closed or a fatal error (see the module docstring).

        Args:
            start_block: overrides the constructor's ``start_block`` for the first request.

        Raises:
            ConnectError: fatal handshake or auth failure.
            ServerError: fatal server ``error`` message.
            ProtocolError: a malformed frame repeated ``max_repeated_faults`` times (an unknown
                error code repeated that often raises a fatal ``ServerError``).
            UsageError: resumed after ``ConnectionLost`` without :meth:`restart`.
        """
        return self._flatten(self.batches(start_block))

    def batches(self, start_block: int | None = None) -> AsyncIterator[list[Any]]:
        """:meth:`events` a socket read at a time: lists of events, in stream order.

        Every list holds at least one event; ``ConnectionLost`` always comes alone. Same
        contract as :meth:`events`, per list: after ``restart()`` during a healthy stream the
        rest of the current list belongs to the abandoned stream (the engine ignores it).
        """
        if self._generator is not None:
            raise UsageError("events() is already running for this source; use one iterator")
        self._generator = self._run(self.start_block if start_block is None else start_block)
        return self._generator

    async def _flatten(self, batches: AsyncIterator[list[Any]]) -> AsyncIterator[Any]:
        async for batch in batches:
            for event in batch:
                yield event
                if self._restart_to is not _UNSET:
                    break  # the rest belongs to the stream being abandoned

    async def aclose(self) -> None:
        """Close the socket and end the iterator (idempotent)."""
        generator, self._generator = self._generator, None
        if generator is not None:
            # RuntimeError: still running in another task; closing the socket ends it.
            with contextlib.suppress(RuntimeError):
                await generator.aclose()
        await self._close_ws(graceful=True)

    async def _run(self, first_start: int) -> AsyncIterator[Any]:
        start = first_start
        delays = self._backoff()
        attempt = 0
        fault_start: int | None = None
        faults = 0
        while True:
            if attempt:
                self.reconnects += 1
                delay = next(delays)
                logger.info("reconnecting in %.2f s at block %s", delay, start)
                await asyncio.sleep(delay)
            attempt += 1
            delivered = False
            cause: KarmaError | None = None
            reason: str | None = None
            try:
                await self._open(start)
                while True:
                    batch = await self._next_batch()
                    if not delivered:
                        delivered = any(type(event) is not Listening for event in batch)
                    yield batch
                    if self._restart_to is not _UNSET:
                        logger.info("restart requested at block %s", self._restart_to)
                        break
            except _Lost as lost:
                self.last_error = lost.reason
                reason, cause = lost.reason, lost.cause
            finally:
                await self._close_ws()
            if delivered:
                delays = self._backoff()  # a stream that delivered data resets the schedule
            if reason is not None:
                # A fault the server repeats at the same block (a malformed frame, an unknown
                # error code) would loop forever: after max_repeated_faults it is fatal.
                if isinstance(cause, ProtocolError) or (
                    isinstance(cause, ServerError) and cause.code not in TRANSIENT_CODES
                ):
                    faults = faults + 1 if fault_start == start else 1
                    fault_start = start
                    if faults >= self.max_repeated_faults and isinstance(cause, ServerError):
                        raise ServerError(
                            cause.code,
                            cause.server_message,
                            details=cause.details,
                            trace_id=cause.trace_id,
                            fatal=True,
                            hint=f"unknown error code repeated {faults} times at block {start}; "
                            "check the endpoint",
                        )
                    if faults >= self.max_repeated_faults:
                        raise ProtocolError(
                            f"{cause} — repeated {faults} times at block {start}; the server "
                            "keeps sending it, check the endpoint",
                            frame=getattr(cause, "frame", None),
                            fatal=True,
                        )
                self._restart_to = _UNSET
                self._awaiting_restart = True
                yield [ConnectionLost(reason)]
                if self._awaiting_restart:
                    raise UsageError(
                        "the source was resumed after ConnectionLost without restart(): feed "
                        "ConnectionLost to the engine and pass its Restart.start_block to "
                        "source.restart() before asking for the next event"
                    )
            start = self._restart_to
            self._restart_to = _UNSET

    # -- one connection -----------------------------------------------------------------------

    def _lose(self, error: KarmaError | str, *, level: int = logging.WARNING) -> _Lost:
        reason = redact(str(error))
        logger.log(level, "stream lost: %s", reason)
        return _Lost(reason, cause=error if isinstance(error, KarmaError) else None)

    async def _open(self, start_block: int) -> None:
        """Handshake (with one token renewal on HTTP 401) and send the request."""
        fresh = False
        for _ in range(2):
            token = None
            if self.tokens is not None:
                try:
                    issued = self.tokens.issued
                    token = await self.tokens.get(force=fresh)
                    fresh = fresh or self.tokens.issued != issued
                except ConnectError as exc:
                    if exc.fatal:
                        raise
                    raise self._lose(exc) from None
            try:
                self._ws = await connect(
                    self._url_with(token),
                    open_timeout=self.open_timeout,
                    ping_interval=None,
                    max_size=self.max_size,
                    compression=self.compression,
                    proxy=None if _is_loopback(self.url) else True,
                    logger=self._ws_logger,
                    create_connection=BatchConnection,
                )
                break
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status == 401 and self.tokens is not None and not fresh:
                    logger.info("the server refused the token (HTTP 401); fetching a new one")
                    self.tokens.invalidate()
                    fresh = True
                    continue
                error = _handshake_error(exc, self.url, authenticated=self.tokens is not None)
                if error.fatal:
                    raise error from None
                raise self._lose(error) from None
            except (OSError, TimeoutError, InvalidHandshake, EOFError) as exc:
                error = _connect_failure(exc, self.url)
                if error.fatal:
                    raise error from None
                raise self._lose(error) from None
        self.connects += 1
        request = self.request(start_block)
        logger.info(
            "streaming %s %s from %s (start_block %s, irreversible_only %s)",
            self.contract,
            self.action,
            self.url,
            start_block,
            self.irreversible_only,
        )
        try:
            await self._ws.send(json.dumps(request, separators=(",", ":")))
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        self._tasks = [asyncio.ensure_future(self._keepalive(self._ws))]
        if self.tokens is not None:
            self._tasks.append(asyncio.ensure_future(self.tokens.refresh_when_due()))

    def _url_with(self, token: str | None) -> str:
        # Rebuilt on every connect so that a renewed token is used (§1.1); appended raw, JWTs
        # are URL-safe.
        if token is None:
            return self.url
        return f"{self.url}{'&' if '?' in self.url else '?'}token={token}"

    async def _keepalive(self, ws: ClientConnection) -> None:
        if self.keepalive_seconds is None:
            return
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.keepalive_seconds)
                await ws.send(PONG_FRAME)

    async def _next_batch(self) -> list[Any]:
        """Events of the frames received so far (waiting for some); raise ``_Lost`` or fatal."""
        ws = self._ws
        assert ws is not None
        if self._deferred is not None:
            # A bad frame ended the previous batch; the events before it were delivered first.
            error, self._deferred = self._deferred, None
            return self._fault(error)
        loop = asyncio.get_running_loop()
        silent = 0.0  # seconds spent waiting without a stream event (suspended time excluded)
        events: list[Any] = []
        while True:
            frames = ws.take_nowait()
            if not frames:
                # Only an empty buffer pays for a timer: with frames waiting, none is needed.
                remaining = self.stall_seconds - silent
                limit = (
                    remaining if self.read_timeout is None else min(remaining, self.read_timeout)
                )
                began = loop.time()
                try:
                    async with asyncio.timeout(limit):
                        frames = await ws.take()
                except TimeoutError:
                    silent += loop.time() - began
                    raise self._stalled(silent, remaining) from None
                except ConnectionClosed as exc:
                    raise self._closed(exc) from None
                silent += loop.time() - began
            try:
                self.decoder.decode_into(frames, events)
            except (ProtocolError, ServerError) as exc:
                if not events:
                    return self._fault(exc)
                self._deferred = exc
            if events:
                return events

    def _stalled(self, silent: float, remaining: float) -> _Lost:
        if self.read_timeout is None or remaining <= self.read_timeout:
            return self._lose(
                StalledError(
                    f"the stream sent no data for {silent:.1f} s while the socket "
                    "stayed open; restarting it",
                    silent_seconds=silent,
                )
            )
        return self._lose(
            StalledError(
                f"no frame (not even a ping) for {self.read_timeout:.1f} s: the "
                "connection is dead; reconnecting",
                silent_seconds=silent,
            )
        )

    def _fault(self, error: BaseException) -> Any:
        """Raise what a bad frame means: fatal errors as they are, anything else as ``_Lost``."""
        if isinstance(error, ProtocolError):
            raise self._lose(error, level=logging.ERROR) from None
        if isinstance(error, ServerError) and not error.fatal:
            raise self._lose(error) from None
        raise error

    def _closed(self, exc: ConnectionClosed) -> _Lost:
        if exc.rcvd is not None:
            code, by = exc.rcvd.code, "the server"
        elif exc.sent is not None:
            code, by = exc.sent.code, "the client"
        else:
            code, by = 1006, "the network"
        if code == 1009 and exc.rcvd is None:
            # We refused a frame above max_size: allow bigger frames on the next connection.
            if self.max_size >= MAX_SIZE_CAP:
                return self._lose(
                    ProtocolError(
                        f"the server sent a frame larger than {MAX_SIZE_CAP} bytes (close 1009)"
                    ),
                    level=logging.ERROR,
                )
            self.max_size = min(MAX_SIZE_CAP, self.max_size * 2)
            return self._lose(
                f"a frame exceeded max_size (close 1009); reconnecting with max_size "
                f"{self.max_size} bytes"
            )
        names = {
            1000: "normal closure",
            1001: "going away",
            1006: "abnormal closure",
            1009: "message too big",
            1011: "server error",
        }
        level = logging.INFO if code in (1000, 1001) else logging.WARNING
        return self._lose(
            f"connection closed by {by} with code {code} ({names.get(code, 'other')}); "
            "reconnecting",
            level=level,
        )

    async def _close_ws(self, *, graceful: bool = False) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        self._deferred = None  # a fault of this connection's frames dies with it
        ws, self._ws = self._ws, None
        if ws is None:
            return
        if graceful:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout=0.5)
        # After a fault, and when a polite close does not finish: abort. A close handshake
        # would wait behind megabytes the server already queued for us (we stopped reading).
        ws.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.wait_closed(), timeout=1.0)


def _is_loopback(url: str) -> bool:
    return (urllib.parse.urlsplit(url).hostname or "") in _LOOPBACK_HOSTS


def _handshake_error(exc: InvalidStatus, url: str, *, authenticated: bool) -> ConnectError:
    """Classify a refused handshake (the retry decision lives here)."""
    status = exc.response.status_code
    detail = ""
    try:
        body = json.loads(exc.response.body or b"{}")
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            detail = f" {body['code']}: {body.get('message', '')}"
    except ValueError:
        pass
    if status == 401:
        what = (
            "refused the token issued for the API key, twice (a fresh one too)"
            if authenticated
            else "requires authentication"
        )
        return ConnectError(
            f"{url} {what} (HTTP 401{detail}); check DFUSE_API_KEY / --api-key and that the "
            "key is valid for this endpoint",
            status=status,
            fatal=True,
        )
    if status == 403:
        return ConnectError(
            f"{url} refused access (HTTP 403{detail}); check the API key's permissions",
            status=status,
            fatal=True,
        )
    if status in (408, 425, 429) or status >= 500:
        return ConnectError(
            f"{url} is unavailable (HTTP {status}{detail}); will retry with backoff",
            status=status,
            fatal=False,
        )
    return ConnectError(
        f"{url} refused the WebSocket upgrade (HTTP {status}{detail}); check the endpoint URL "
        f"(the stream path is {STREAM_PATH})",
        status=status,
        fatal=True,
    )


def _connect_failure(exc: BaseException, url: str) -> ConnectError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectError(
            f"TLS certificate of {url} not trusted ({exc.verify_message}); check the host name",
            fatal=True,
        )
    if isinstance(exc, InvalidURI):
        return ConnectError(f"invalid endpoint URL {url}", fatal=True)
    if isinstance(exc, TimeoutError):
        text = "handshake timed out"
    else:
        text = str(exc) or type(exc).__name__
    return ConnectError(f"cannot connect to {url}: {text}; will retry with backoff", fatal=False)
