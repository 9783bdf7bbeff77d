"""A small dfuse Stream API server for the source's tests, written from dfuse-protocol.md.

It follows the spec, not the client: token check at the upgrade (§1.2, 401 JSON body), an auth
endpoint on its own HTTP port (``POST /v1/auth/issue``, any content type), ``ping`` every
``ping_interval`` (§1.3), request validation with the spec's error strings (§2.1/§2.2),
``start_block`` resolution (§4.1), ``listening`` first, action traces per block then
``progress`` by absolute modulo with the 250 ms throttle counted from the request (§4.2),
irreversible blocks only when asked (§4.4), uint64 > 2^32 as strings and both time formats
(§3.2). Faults are planned per connection (§7.9): refuse the handshake, drop TCP, close with a
code, stall, send an error or a garbage frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from karma_analytics import model
from karma_analytics.engine import ConnectionLost, Restart, WriteCommit, WriteSucceeded
from karma_analytics.sources.base import Selection
from karma_analytics.sources.dfuse import DfuseSource
from karma_analytics.sources.retry import Failover

CONTRACT = "therealkarma"
GENESIS_MS = 1_795_000_000_000  # 2026-11-18
API_KEY = "server_0123456789abcdef0123456789abcdef"
CHAIN_ID = hashlib.sha256(b"fake dfuse chain").hexdigest()


def block_id(n: int) -> str:
    return f"{n:08x}" + hashlib.sha256(b"blk%d" % n).hexdigest()[:56]


def trx_id(n: int, t: int) -> str:
    return hashlib.sha256(b"trx%d-%d" % (n, t)).hexdigest()


def transfers_in(n: int) -> int:
    """Deterministic: blocks have 0, 1 or 2 transfers."""
    return n % 3


def global_sequence(n: int, t: int) -> int:
    return 5_000_000_000 + n * 10 + t  # above 2^32: sent as a decimal string


def trace_data(n: int, t: int, *, receiver: str = CONTRACT, quantity: str | None = None) -> dict:
    """The ``data`` of one ``action_trace`` (§3.2 shape)."""
    ms = GENESIS_MS + n * 500
    tid = trx_id(n, t)
    gs = global_sequence(n, t)
    return {
        "block_num": n,
        "block_id": block_id(n),
        "block_time": model.format_block_time(ms),
        "trx_id": tid,
        "idx": 0 if receiver == CONTRACT else 1,
        "trace": {
            "action_ordinal": 1,
            "creator_action_ordinal": 0,
            "closest_unnotified_ancestor_action_ordinal": 0,
            "receipt": {
                "receiver": receiver,
                "act_digest": hashlib.sha256(b"d%d" % n).hexdigest(),
                "global_sequence": model.encode_uint64(gs),
                "recv_sequence": model.encode_uint64(4_300_000_000 + n),
                "auth_sequence": [["alice", 1234]],
                "code_sequence": 7,
                "abi_sequence": 7,
            },
            "receiver": receiver,
            "act": {
                "account": CONTRACT,
                "name": "transfer",
                "authorization": [{"actor": "alice", "permission": "active"}],
                "data": {
                    "from": "alice",
                    "to": f"bob{t + 1}",
                    "quantity": quantity or f"{n % 97}.{n % 10000:04d} KARMA",
                    "memo": f"memo {n}/{t}",
                },
                "hex_data": "00",
            },
            "context_free": False,
            "elapsed": 120,
            "console": "",
            "trx_id": tid,
            "block_num": n,
            "block_time": model.format_trace_time(ms),
            "producer_block_id": block_id(n),
            "account_ram_deltas": [],
            "inline_traces": [],
        },
    }


def expected_transfers(first: int, last: int) -> list[model.Transfer]:
    out = []
    for n in range(first, last + 1):
        for t in range(transfers_in(n)):
            out.append(model.transfer_from_action_trace(trace_data(n, t)))
    return out


@dataclass
class Plan:
    """What one connection does (consumed in connection order).

    Attributes:
        refuse: answer the upgrade with this HTTP status (no WebSocket).
        after: data frames (action_trace/progress) to send before ``then``.
        then: ``"drop"`` (abort TCP: 1006), ``"close"`` (close with ``code``), ``"stall"``
            (send nothing more but pings), ``"error"`` (an error message ``error_code`` for the
            request), ``"raw"`` (send ``raw`` as a text frame), ``"accept_drop"`` (abort right
            after the upgrade, before reading the request), ``""`` (behave).
        extra: frames (dicts or raw text) sent right after ``listening``.
    """

    refuse: int | None = None
    after: int = 0
    then: str = ""
    code: int = 1000
    error_code: str = "unexpected_error"
    raw: str = ""
    extra: list[Any] = field(default_factory=list)


class FakeDfuse:
    """See the module docstring. Start with ``async with FakeDfuse(...) as server``."""

    def __init__(
        self,
        *,
        head: int = 200,
        lib: int | None = None,
        auth: bool = False,
        token_lifetime: int = 86_400,
        ping_interval: float = 10.0,
        progress_throttle: float = 0.25,
        history_limit: int | None = None,
        plans: list[Plan] | None = None,
    ) -> None:
        self.head = head
        self.lib = head if lib is None else lib
        self.auth = auth
        self.token_lifetime = token_lifetime
        self.ping_interval = ping_interval
        self.progress_throttle = progress_throttle
        self.history_limit = history_limit
        self.plans = list(plans or [])
        self.valid_tokens: set[str] = set()
        self.issued: list[str] = []
        self.issue_bodies: list[bytes] = []
        self.connections = 0  # upgrade attempts
        self.get_info_requests = 0
        self.tokens_seen: list[str | None] = []
        self.requests: list[dict] = []
        self.raw_requests: list[str] = []
        self.pongs: list[str] = []
        self.url = ""
        self.auth_url = ""
        self.request_event = asyncio.Event()
        self.pong_event = asyncio.Event()
        self.issue_event = asyncio.Event()
        self._plan_of: dict[int, Plan] = {}
        self._handlers: set[asyncio.Task] = set()

    # -- auth ---------------------------------------------------------------------------------

    def new_token(self) -> tuple[str, int]:
        n = len(self.issued) + 1
        # JWT-shaped (three base64url parts) like the real service.
        token = f"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ0ZXN0LXt{n:04d}In0.c2lnbmF0dXJlLXt{n:04d}"
        self.issued.append(token)
        self.valid_tokens.add(token)
        return token, int(time.time()) + self.token_lifetime

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    async def _auth_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.issue_bodies.append(body)
            status, answer = 404, {"code": "not_found", "message": "no route"}
            if method == "POST" and path == "/v1/auth/issue":
                try:
                    key = json.loads(body).get("api_key")
                except ValueError:
                    key = None
                if key == API_KEY:
                    token, expires_at = self.new_token()
                    status, answer = 200, {"token": token, "expires_at": expires_at}
                    self.issue_event.set()
                else:
                    status = 401
                    answer = {
                        "code": "auth_invalid_api_key_error",
                        "trace_id": "0",
                        "message": "The provided API key is not valid.",
                    }
            payload = json.dumps(answer).encode()
            writer.write(
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        finally:
            writer.close()

    # -- handshake ----------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Any) -> Response | None:
        if urllib.parse.urlsplit(request.path).path == "/v1/chain/get_info":
            # The native chain API beside the stream, as dfuse hosts served it; plans and
            # connection counts are about the stream only.
            self.get_info_requests += 1
            return self._json_response(200, {"chain_id": CHAIN_ID, "head_block_num": self.head})
        self.connections += 1
        number = self.connections
        plan = self.plans.pop(0) if self.plans else Plan()
        self._plan_of[id(connection)] = plan
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        token = query.get("token", [None])[0]
        bearer = request.headers.get("Authorization", "")
        if bearer.lower().startswith("bearer ") and len(bearer.split()) == 2:
            token = bearer.split()[1]
        self.tokens_seen.append(token)
        if urllib.parse.urlsplit(request.path).path != "/v1/stream":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if plan.refuse is not None:
            return self._json_response(plan.refuse, {"code": "refused", "message": "planned"})
        if self.auth and token not in self.valid_tokens:
            return self._json_response(
                401,
                {
                    "code": "auth_invalid_token_error",
                    "trace_id": "5d4c",
                    "message": "Unable to correctly decode provided token.",
                    "details": {"token": token or "", "reason": "token expired or unknown"},
                },
            )
        del number
        return None

    @staticmethod
    def _json_response(status: int, body: dict) -> Response:
        payload = json.dumps(body).encode()
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return Response(status, HTTPStatus(status).phrase, headers, payload)

    # -- stream -------------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        plan = self._plan_of.pop(id(ws), Plan())
        pinger = asyncio.create_task(self._pings(ws))
        streams: list[asyncio.Task] = []
        try:
            if plan.then == "accept_drop":
                ws.transport.abort()
                return
            async for frame in ws:
                if isinstance(frame, bytes):
                    await self._error(ws, None, "ws_binary_message_unsupported_error", "binary")
                    continue
                try:
                    message = json.loads(frame)
                except ValueError as exc:
                    await self._error(
                        ws, None, "ws_invalid_json_message_error", "bad json", {"reason": str(exc)}
                    )
                    continue
                if message.get("type") == "pong":
                    self.pongs.append(frame)
                    self.pong_event.set()
                    continue
                self.raw_requests.append(frame)
                self.requests.append(message)
                self.request_event.set()
                if message.get("type") not in ("get_action_traces", "get_actions"):
                    await self._error(
                        ws,
                        message.get("req_id"),
                        "ws_unknown_message_error",
                        "unknown message",
                        {"type": message.get("type")},
                    )
                    continue
                streams.append(asyncio.create_task(self._stream(ws, message, plan)))
        except Exception:
            pass
        finally:
            pinger.cancel()
            for s in streams:
                s.cancel()
            self._handlers.discard(task)

    async def _pings(self, ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(self.ping_interval)
                now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".123456789Z"
                await ws.send(json.dumps({"type": "ping", "data": now}))

    async def _error(
        self, ws: ServerConnection, req_id: str | None, code: str, msg: str, details: Any = None
    ) -> None:
        out: dict[str, Any] = {"type": "error"}
        if req_id:
            out["req_id"] = req_id
        data: dict[str, Any] = {"code": code, "trace_id": "abc123", "message": msg}
        if details:
            data["details"] = details
        out["data"] = data
        await ws.send(json.dumps(out))

    async def _stream(self, ws: ServerConnection, message: dict, plan: Plan) -> None:
        req_id = message.get("req_id")
        data = message.get("data") or {}
        start = message.get("start_block", 0)
        if not isinstance(start, int) or isinstance(start, bool):
            await self._error(ws, req_id, "ws_invalid_json_message_data_error", "bad field")
            return
        if not (data.get("accounts") or data.get("account")):
            await self._error(
                ws,
                req_id,
                "ws_message_data_validation_error",
                "The received message data is not valid.",
                {"reason": "'data.accounts' required"},
            )
            return
        if message.get("listen") is not True:
            await self._error(
                ws,
                req_id,
                "ws_message_data_validation_error",
                "The received message data is not valid.",
                {"reason": "'listen' required"},
            )
            return
        head = self.head
        s = head if start == 0 else head + start if start < 0 else start
        if self.history_limit is not None and s < head - self.history_limit:
            await self._error(
                ws,
                req_id,
                "auth_invalid_streaming_start_block_error",
                f"Your credentials allow you to go back as far as block #{head - self.history_limit}"
                f", but you requested block #{s}. Contact support",
            )
            return
        accounts = set(filter(None, (a.strip() for a in data["accounts"].split("|"))))
        receivers = set(filter(None, (a.strip() for a in data.get("receivers", "").split("|"))))
        receivers = receivers or accounts
        names = set(filter(None, (a.strip() for a in data.get("action_names", "").split("|"))))
        modulo = message.get("with_progress", 0) or 0
        last_progress = time.monotonic()  # the throttle clock starts at request time (§4.2)
        common = {"type": "", "req_id": req_id} if req_id else {"type": ""}

        async def send(kind: str, payload: Any) -> None:
            out = dict(common)
            out["type"] = kind
            out["data"] = payload
            await ws.send(json.dumps(out, separators=(",", ":")))

        await send("listening", {"next_block": s})
        for frame in plan.extra:
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        sent = 0

        async def fault() -> bool:
            if plan.then in ("", "accept_drop") or sent < plan.after:
                return False
            if plan.then == "drop":
                ws.transport.abort()
            elif plan.then == "close":
                await ws.close(plan.code)
            elif plan.then == "stall":
                await asyncio.Event().wait()
            elif plan.then == "error":
                await self._error(ws, req_id, plan.error_code, "planned error")
            elif plan.then == "raw":
                await ws.send(plan.raw)
                await asyncio.Event().wait()
            return True

        if await fault():
            return
        n = s
        last = self.lib if message.get("irreversible_only") else self.head
        while True:
            while n > last:
                await asyncio.sleep(0.05)
                last = self.lib if message.get("irreversible_only") else self.head
            for t in range(transfers_in(n)):
                d = trace_data(n, t)
                trace = d["trace"]
                if (
                    trace["receiver"] in receivers
                    and trace["act"]["account"] in accounts
                    and (not names or trace["act"]["name"] in names)
                ):
                    await send("action_trace", d)
                    sent += 1
                    if await fault():
                        return
            now = time.monotonic()
            if modulo and n % modulo == 0 and now - last_progress > self.progress_throttle:
                last_progress = now
                await send("progress", {"block_num": n, "block_id": block_id(n)})
                sent += 1
                if await fault():
                    return
            n += 1
            await asyncio.sleep(0)

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDfuse:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/stream"
        self._auth = await asyncio.start_server(self._auth_http, "127.0.0.1", 0)
        auth_port = self._auth.sockets[0].getsockname()[1]
        self.auth_url = f"http://127.0.0.1:{auth_port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._auth.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._auth.wait_closed(), 5)


def run(coro: Any, timeout: float = 30.0) -> Any:
    """Run one test coroutine with a deadline (no pytest-asyncio in the environment)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def drive_engine(source: Any, engine: Any) -> dict[str, Any]:
    """The collector's loop without the store: commits are recorded in memory and acknowledged.

    Feeds every event of ``source.events()`` to ``engine``, answers ``Restart`` with
    ``source.restart()``, and ends at the engine's ``Stop`` (closing the source).

    Returns:
        ``{"rows", "rejects", "lost" (ConnectionLost reasons), "engine"}``.
    """
    rows: list[Any] = []
    rejects: list[Any] = []
    reasons: list[str] = []
    try:
        async for event in source.events():
            if isinstance(event, ConnectionLost):
                reasons.append(event.reason)
            pending = list(engine.handle(event, 0.0))
            stop = False
            while pending:
                action = pending.pop(0)
                if isinstance(action, WriteCommit):
                    rows.extend(action.rows)
                    rejects.extend(action.rejects)
                    pending.extend(engine.handle(WriteSucceeded(action.commit_id), 0.0))
                elif isinstance(action, Restart):
                    source.restart(action.start_block)
                else:
                    stop = True
            if stop:
                break
    finally:
        await source.aclose()
    return {"rows": rows, "rejects": rejects, "lost": reasons, "engine": engine}


_FAILOVER_OPTIONS = ("backoff", "stall_seconds", "max_repeated_faults", "give_up_after")


def failover(url: str, **options: Any) -> Failover:
    """One DfuseSource under the runner's retry policy (``.sources[0]`` is the source)."""
    retry = {key: options.pop(key) for key in _FAILOVER_OPTIONS if key in options}
    retry.setdefault("backoff", lambda: iter(lambda: 0.001, None))
    start = options.pop("start_block", 10)
    selection = Selection(irreversible_only=options.pop("irreversible_only", True))
    return Failover(
        [DfuseSource(url, selection, **options)], start_block=start, give_up_after=None, **retry
    )
