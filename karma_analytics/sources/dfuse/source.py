"""dfuse WebSocket Stream API source: one ``get_action_traces`` connection -> engine events.

The source owns one socket at a time and everything about it: endpoint and token
(:mod:`.auth`), the request, the ``pong`` keep-alive, the dead-socket timeout (no frame, not
even a ping, for ``read_timeout``) and the frame decoder (:mod:`.decode`). Reconnects, backoff,
the stall watchdog and failover are the runner's (:mod:`karma_analytics.sources.retry`).

Stream contract: see :mod:`karma_analytics.sources.base`. The first frame of a stream is the
server's ``listening`` (§3.1), so the first batch begins with ``Listening``; the chain id comes
from ``GET /v1/chain/get_info`` on the endpoint's host (dfuse hosts served the native chain API
beside the stream; the devnet does too), asked once per source.

Faults raised, by kind: :class:`~karma_analytics.exceptions.ConnectError` (transient: refused,
unreachable, HTTP 5xx/429 at the upgrade; fatal: HTTP 401 for a token issued for this very
attempt — a cached token refused with 401 is renewed once first —, 401 without a key, 403/404
and other 4xx, the auth service refusing the key, a certificate error), a dropped socket with
any close code, including 1000 and 1009 (transient ``ConnectError``),
:class:`~karma_analytics.exceptions.ServerError` (the server's ``error`` message; fatal codes in
:data:`~.protocol.FATAL_CODES`), :class:`~karma_analytics.exceptions.ProtocolError` (a malformed
frame; transient and ``persistent``). Events decoded before a malformed frame are delivered
first, then the fault is raised.

Receiving: frames are not read with websockets' ``recv()`` (a future, a queue hop and a join per
message, ~5 us, and the per-read timeout another ~5 us) but taken a socket read at a time from
:class:`~karma_analytics.sources.websocket.BatchConnection`; websockets still does the
handshake, framing, control frames, limits and the close handshake. The dead-socket timer is
armed only when no frame is waiting.

Choices (and why):

* ``with_progress=10``: progress is throttled to one per 250 ms by the server (§4.2), so the
  modulo only matters live, where 10 blocks = 5 s: replays after a reconnect stay short, zero-row
  cursor commits stay cheap, and billed services (each message is a document) send 10x fewer
  than with 1.
* ``max_size`` 16 MiB: a transfer trace is about 1.5 KB (no inline traces or ops are
  requested). If a frame still exceeds it, websockets closes with 1009; the source then doubles
  the limit for the next connection, up to 256 MiB (a bigger frame is a protocol fault).
* Close codes 1000 and 1009 reconnect too (client-js stops on them, §1.4; a collector must not
  stop silently). The code is in the error text.
* ``compression=None`` by default: on loopback against the devnet (which offers deflate),
  200,000 blocks / 51,500 events took 1.09 s of client CPU without and 1.29 s with
  permessage-deflate; pass ``compression="deflate"`` for slow remote links.
* No WebSocket-level pings (the dfuse server pings every 10 s at the application level, §1.3);
  a dead socket is caught by ``read_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from karma_analytics import model
from karma_analytics.exceptions import (
    ConnectError,
    ProtocolError,
    ServerError,
    StalledError,
    UsageError,
    redacting_logger,
)
from karma_analytics.sources.base import Selection, Source, SourceSettings, parse_chain_id
from karma_analytics.sources.dfuse.auth import TokenManager, derive_auth_url
from karma_analytics.sources.dfuse.decode import FrameDecoder
from karma_analytics.sources.dfuse.protocol import (
    STREAM_PATH,
    chain_api_url,
    request_message,
    resolve_endpoint,
)
from karma_analytics.sources.websocket import (
    BatchConnection,
    connect_failure,
    is_loopback,
)

__all__ = ["DEFAULT_MAX_SIZE", "MAX_SIZE_CAP", "DfuseSource"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 16 * 2**20
MAX_SIZE_CAP = 256 * 2**20
PONG_FRAME = '{"type":"pong"}'


class DfuseSource(Source):
    """One ``get_action_traces`` stream per :meth:`stream` call (see the module docstring).

    Args:
        endpoint: stream URL or ``host[:port]`` (see :func:`~.protocol.resolve_endpoint`).
        selection: contract and action (sent as ``accounts``/``receivers`` and
            ``action_names``: the contract's own executions only, §2.2), irreversible_only.
        stop_block: the last block wanted (the stream itself is open-ended: dfuse has no stop
            block with ``listen``; the engine stops at it).
        api_key: dfuse API key, or ``None`` for a server without authentication.
        auth_url: token issuer; ``None`` derives it from the endpoint (§1.2).
        with_progress: ``with_progress`` modulo (0 = off; see the module docstring).
        read_timeout: a connection with no frame at all (pings included) for this long is
            dead; ``None`` disables (the server pings every 10 s).
        keepalive_seconds: interval of the ``{"type":"pong"}`` keep-alive (§1.3); ``None``
            disables it.
        req_id: the stream's request id (stable across reconnects); default derived from the
            contract and action.
        open_timeout: seconds allowed for TCP + TLS + WebSocket handshake (and get_info).
        max_size: largest accepted frame in bytes (see the module docstring).
        compression: ``None`` or ``"deflate"`` (permessage-deflate).
        auth_timeout: HTTP timeout in seconds of one token request.
        tokens: a prepared :class:`TokenManager` (overrides ``api_key``/``auth_url``).

    Attributes:
        url: the stream URL without credentials (also :attr:`endpoint`).
        connects: successful handshakes so far.
    """

    kind = "dfuse"

    def __init__(
        self,
        endpoint: str,
        selection: Selection | None = None,
        *,
        stop_block: int | None = None,
        api_key: str | None = None,
        auth_url: str | None = None,
        with_progress: int = 10,
        read_timeout: float | None = 45.0,
        keepalive_seconds: float | None = 30.0,
        req_id: str | None = None,
        open_timeout: float = 10.0,
        max_size: int = DEFAULT_MAX_SIZE,
        compression: str | None = None,
        auth_timeout: float = 10.0,
        tokens: TokenManager | None = None,
    ) -> None:
        selection = selection or Selection()
        url = resolve_endpoint(endpoint)
        super().__init__(url, selection, stop_block=stop_block)
        self.url = url
        self.contract = model.parse_name(selection.contract, field="contract")
        self.action = model.parse_name(selection.action, field="action")
        self.irreversible_only = selection.irreversible_only
        if with_progress < 0:
            raise UsageError(f"with_progress must be >= 0, got {with_progress}")
        if read_timeout is not None and read_timeout <= 0:
            raise UsageError("read_timeout must be positive (or None to disable)")
        if keepalive_seconds is not None and keepalive_seconds <= 0:
            raise UsageError("keepalive_seconds must be positive (or None to disable)")
        if not 0 < max_size <= MAX_SIZE_CAP:
            raise UsageError(f"max_size must be in 1..{MAX_SIZE_CAP} bytes")
        self.with_progress = with_progress
        self.read_timeout = read_timeout
        self.keepalive_seconds = keepalive_seconds
        self.req_id = req_id or f"karma-{self.contract}-{self.action}"
        self.open_timeout = open_timeout
        self.max_size = max_size
        self.compression = compression
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
        self._chain_known = False
        self._ws: BatchConnection | None = None
        self._deferred: BaseException | None = None  # a fault to raise after its batch
        self._tasks: list[asyncio.Future[Any]] = []
        self._ws_logger = redacting_logger("websockets.client")

    @classmethod
    def create(
        cls,
        endpoint: str,
        selection: Selection,
        *,
        stop_block: int | None = None,
        settings: SourceSettings | None = None,
    ) -> DfuseSource:
        settings = settings or SourceSettings()
        return cls(
            endpoint,
            selection,
            stop_block=stop_block,
            api_key=settings.api_key,
            auth_url=settings.auth_url,
            **dict(settings.extra),
        )

    @staticmethod
    def normalize_endpoint(endpoint: str) -> str:
        return resolve_endpoint(endpoint)

    def __repr__(self) -> str:
        return f"DfuseSource({self.url!r}, contract={self.contract!r}, action={self.action!r})"

    def request(self, start_block: int) -> dict[str, Any]:
        """The ``get_action_traces`` message sent for ``start_block`` (§2.1, §2.2)."""
        return request_message(
            self.req_id,
            start_block,
            contract=self.contract,
            action=self.action,
            irreversible_only=self.irreversible_only,
            with_progress=self.with_progress,
        )

    # -- the stream ---------------------------------------------------------------------------

    async def stream(self, start_block: int | None) -> AsyncIterator[list[Any]]:
        """One connection: handshake, request at ``start_block`` (``None``: the head, or the
        LIB with irreversible_only; negative: relative to it), then batches of events."""
        try:
            # A token issued during this attempt (for get_info) counts as fresh at the upgrade.
            issued = self.tokens.issued if self.tokens is not None else None
            if not self._chain_known:
                await self._learn_chain_id()
            await self._open(0 if start_block is None else start_block, issued)
            while True:
                yield await self._next_batch()
        finally:
            await self._close_ws()

    async def aclose(self) -> None:
        await self._close_ws(graceful=True)

    async def _learn_chain_id(self) -> None:
        """``GET /v1/chain/get_info`` beside the stream; ``None`` if the host cannot tell.

        The standard library in a worker thread, not aiohttp: a dfuse run makes this one
        request, and aiohttp's import alone costs more than a second on a busy machine.
        """
        url = chain_api_url(self.url)
        headers = {"Accept": "application/json"}
        if self.tokens is not None:
            headers["Authorization"] = f"Bearer {await self.tokens.get()}"
        try:
            status, body = await asyncio.to_thread(_http_get, url, headers, self.open_timeout)
        except OSError as exc:  # the host is not there: name the endpoint the user gave
            raise connect_failure(exc, self.url) from None
        if status >= 500 or status == 429:
            raise ConnectError(f"{url} is unavailable (HTTP {status})", status=status)
        chain_id = None
        if status == 200:
            try:
                value = json.loads(body).get("chain_id")
                chain_id = parse_chain_id(value) if isinstance(value, str) else None
            except (ValueError, AttributeError, UsageError):
                chain_id = None
        if chain_id is None:
            logger.info("%s does not tell its chain id (HTTP %d)", url, status)
        self.chain_id = chain_id
        self._chain_known = True

    # -- one connection -----------------------------------------------------------------------

    async def _open(self, start_block: int, issued_before: int | None = None) -> None:
        """Handshake (with one token renewal on HTTP 401) and send the request."""
        fresh = False
        for _ in range(2):
            token = None
            if self.tokens is not None:
                try:
                    issued = self.tokens.issued if issued_before is None else issued_before
                    issued_before = None
                    token = await self.tokens.get(force=fresh)
                    fresh = fresh or self.tokens.issued != issued
                except ConnectError:
                    raise
            try:
                self._ws = await connect(
                    self._url_with(token),
                    open_timeout=self.open_timeout,
                    ping_interval=None,
                    max_size=self.max_size,
                    compression=self.compression,
                    proxy=None if is_loopback(self.url) else True,
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
                raise _handshake_error(
                    exc, self.url, authenticated=self.tokens is not None
                ) from None
            except (OSError, TimeoutError, InvalidHandshake, EOFError) as exc:
                raise connect_failure(exc, self.url) from None
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
        """Events of the frames received so far (waiting for some), or raise the fault."""
        ws = self._ws
        assert ws is not None
        if self._deferred is not None:
            # A bad frame ended the previous batch; the events before it were delivered first.
            error, self._deferred = self._deferred, None
            raise error
        events: list[Any] = []
        while True:
            frames = ws.take_nowait()
            if not frames:
                # Only an empty buffer pays for a timer: with frames waiting, none is needed.
                try:
                    async with asyncio.timeout(self.read_timeout):
                        frames = await ws.take()
                except TimeoutError:
                    raise StalledError(
                        f"no frame (not even a ping) for {self.read_timeout:.1f} s: the "
                        "connection is dead",
                        silent_seconds=self.read_timeout or 0.0,
                    ) from None
                except ConnectionClosed as exc:
                    raise self._closed(exc) from None
            try:
                self.decoder.decode_into(frames, events)
            except (ProtocolError, ServerError) as exc:
                if not events:
                    raise
                self._deferred = exc
            if events:
                return events

    def _closed(self, exc: ConnectionClosed) -> ConnectError | ProtocolError:
        if exc.rcvd is not None:
            code, by = exc.rcvd.code, "the server"
        elif exc.sent is not None:
            code, by = exc.sent.code, "the client"
        else:
            code, by = 1006, "the network"
        if code == 1009 and exc.rcvd is None:
            # We refused a frame above max_size: allow bigger frames on the next connection.
            if self.max_size >= MAX_SIZE_CAP:
                return ProtocolError(
                    f"the server sent a frame larger than {MAX_SIZE_CAP} bytes (close 1009)"
                )
            self.max_size = min(MAX_SIZE_CAP, self.max_size * 2)
            return ConnectError(
                f"a frame exceeded max_size (close 1009); the next connection allows "
                f"{self.max_size} bytes"
            )
        names = {
            1000: "normal closure",
            1001: "going away",
            1006: "abnormal closure",
            1009: "message too big",
            1011: "server error",
        }
        return ConnectError(
            f"connection closed by {by} with code {code} ({names.get(code, 'other')})"
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


def _http_get(url: str, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """One GET: ``(status, body)``; a host that cannot be reached raises ``OSError``."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(
        *([urllib.request.ProxyHandler({})] if is_loopback(url) else [])
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(1 << 20)
    except urllib.error.URLError as exc:
        raise exc.reason if isinstance(exc.reason, OSError) else OSError(str(exc.reason)) from None


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
