"""The Socket.IO stream (``/stream``) of the devnet Hyperion, 3.x and 4.x protocols.

hyperion.md §3 and the stream part of §7:

* transport: python-socketio ``AsyncServer`` on the REST server's aiohttp app, websocket only,
  ``socketio_path="stream"`` (Engine.IO 4, Socket.IO 5: socket.io 4.x servers, §3.1);
* on connect, 4.x emits ``handshake {chain, chain_id}``; 3.x emits ``message {event:
  "handshake", chain}`` (§3.5);
* ``action_stream_request``: validation and acks per version (§3.3-3.4): 4.x rejects invalid
  names (so ``*``), unknown contracts/actions and ``start_from > read_until`` with ``{status:
  "ERROR", message}``; 3.x requires ``account`` (string) and ``filters`` (list) and refuses
  live ``eosio.token`` without a specific account (``FAIL``, history still replayed) and
  keeps one ``reqUUID`` per socket; ``"STREAMING_OFFLINE"`` while the relay is down; never an
  ack with ``stream_never_ack``;
* history (``start_from`` a number != 0, or a date string): ``trace_init``, batches of
  ``stream_batch`` docs -- 3.x stored docs sorted by ``global_sequence``, unacknowledged; 4.x
  merged docs sorted by block only (ties shuffled), each batch sent with an ack request that
  must be answered with an object whose ``status`` is ``true`` within ``stream_ack_timeout``
  or the replay stops silently -- then 4.x ``history_end {lastBlock}``;
* live: attached *before* the replay, every new head block (reversible!) as one message per
  doc: 4.x ``{type, mode:"live", targets:[uuid], message:<bytes of the stored doc>}``, 3.x
  ``{type, reqUUID, mode:"live", message:"<stored doc JSON>"}``; ``stream_seam`` > 0 replays
  that many blocks before the request's head as live too (overlap), < 0 ends history that
  many blocks early (a gap only REST can close);
* ``lib_update {chain_id, block_num, block_id}`` broadcast when LIB advances (after the live
  docs of the blocks it covers); ``status`` ``relay_down``/``relay_restored`` every
  ``stream_relay_down_after`` live blocks, the router's requests dropped (re-send them);
* 4.x ``cancel_stream_request`` and ``reconnect`` (answered by ``resend_requests`` after 1 s);
* hosts without a usable stream, by :attr:`StreamServer.mode` (``stream_mode`` if the server's
  options have one; tests may set ``server.stream.mode`` after start): ``"socketio"`` serves
  the stream, ``"absent"`` answers ``/stream/`` like any unknown route (a host that does not
  proxy it: Fastify 404 JSON), ``"refuse"`` answers HTTP 400 with an Engine.IO error body (a
  stand-in for a Socket.IO 2 / Engine.IO 3 server, which python-socketio 5 cannot talk to,
  §3.1: the devnet does not emulate EIO3 itself); :attr:`StreamServer.refused` counts them.

Not reproduced: delta streams, fork events (the devnet serves canonical blocks only), fill
passes (nothing is indexed late in history ranges), ``stream_scroll_limit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import uuid
from collections.abc import Iterator
from typing import Any

import socketio
from aiohttp import web

from ..model import is_valid_name
from .chain import AIRDROP, CONTRACT, EOS_TOKEN
from .hyperion_docs import Doc, merged_doc, stored_doc, stored_text
from .hyperion_query import parse_js_date

__all__ = ["STREAM_MODES", "StreamServer"]

STREAM_MODES = ("socketio", "absent", "refuse")

logger = logging.getLogger(__name__)

# The ABIs of the devnet's contracts: the actions each can receive (4.x checks both, §3.3).
_ABIS: dict[str, frozenset[str]] = {
    CONTRACT: frozenset(
        {"transfer", "issue", "powerup", "claim", "rewarded", "open", "close", "retire", "create"}
    ),
    EOS_TOKEN: frozenset({"transfer", "issue", "open", "close", "retire", "create"}),
    AIRDROP: frozenset({"distribute"}),
}
_OPERATORS = ("eq", "ne", "gt", "lt", "gte", "lte", "contains", "starts_with", "ends_with")


@dataclasses.dataclass
class _Request:
    """One accepted ``action_stream_request``."""

    uuid: str
    sid: str
    contract: str
    action: str
    account: str
    filters: list[dict[str, Any]]
    filter_or: bool
    first_live: int  # first block delivered live
    live: bool


class _Socket:
    """Per-socket state: 3.x's single reqUUID, the emit lock, running tasks."""

    def __init__(self) -> None:
        self.uuid = ""
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.gone = asyncio.Event()


class StreamServer:
    """The stream side of a :class:`~karma_analytics.devnet.hyperion.HyperionServer`."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.options = server.options
        self.v4 = server.version.v4
        self.stats = server.stats
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            transports=["websocket"],
            always_connect=True,  # CONNECT goes out before the handshake event we emit
            cors_allowed_origins="*",
            max_http_buffer_size=64 << 20,
            logger=False,
            engineio_logger=False,
        )
        #: "socketio" (serve the stream), "absent" (404) or "refuse" (400); module docstring.
        self.mode: str = str(getattr(self.options, "stream_mode", "socketio"))
        if self.mode not in STREAM_MODES:
            raise ValueError(f"stream_mode must be one of {', '.join(STREAM_MODES)}")
        self.refused = 0  # /stream/ requests answered without a stream (mode != "socketio")
        self.sockets: dict[str, _Socket] = {}
        self.requests: dict[str, _Request] = {}  # the router's live requests, by uuid
        self.relay_up = True
        self._live_blocks = 0
        self._down_until = 0
        self._rng = random.Random(f"hyperion-stream:{self.options.fault_seed}")
        sio = self.sio
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on("action_stream_request", self._on_action_request)
        sio.on("cancel_stream_request", self._on_cancel)
        sio.on("reconnect", self._on_reconnect)
        sio.on("delta_stream_request", self._on_delta_request)

    def attach(self, app: Any) -> None:
        # The Engine.IO routes of ``sio.attach(app, socketio_path="stream")``, through
        # :meth:`_handle` so that :attr:`mode` can take the stream away.
        for method in ("GET", "POST", "OPTIONS"):
            app.router.add_route(method, "/stream/", self._handle)

    async def _handle(self, request: Any) -> Any:
        if self.mode == "socketio":
            return await self.sio.handle_request(request)
        self.refused += 1
        if self.mode == "absent":
            return await self.server._dispatch(request)  # the catch-all 404 of unknown routes
        return web.json_response({"code": 5, "message": "Unsupported protocol version"}, status=400)

    async def close(self) -> None:
        for state in self.sockets.values():
            state.gone.set()
            for task in list(state.tasks):
                task.cancel()
        with contextlib.suppress(Exception):
            await self.sio.shutdown()

    # --- connection ---------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: Any, auth: Any = None) -> None:
        self.sockets[sid] = _Socket()
        self.stats.stream_connections += 1
        self.stats.stream_open += 1
        chain = self.options.chain_name
        if self.v4:
            await self._emit(sid, "handshake", {"chain": chain, "chain_id": self.server.chain_id})
        else:
            await self._emit(sid, "message", {"event": "handshake", "chain": chain})

    async def _on_disconnect(self, sid: str, *args: Any) -> None:
        self.stats.stream_open -= 1
        state = self.sockets.pop(sid, None)
        for key in [k for k, r in self.requests.items() if r.sid == sid]:
            del self.requests[key]
        if state is not None:
            state.gone.set()
            for task in list(state.tasks):
                task.cancel()

    def _spawn(self, sid: str, coro: Any) -> None:
        state = self.sockets.get(sid)
        if state is None:
            coro.close()
            return
        task = asyncio.create_task(coro)
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    async def _emit(self, sid: str, event: str, data: Any, callback: Any = None) -> bool:
        """Emit under the socket's lock: messages with binary attachments are several
        packets, which concurrent emits could interleave (python-socketio ``call`` notes)."""
        state = self.sockets.get(sid)
        if state is None:
            return False
        async with state.lock:
            await self.sio.emit(event, data, to=sid, callback=callback)
        return True

    # --- requests -----------------------------------------------------------------------

    async def _on_action_request(self, sid: str, data: Any = None) -> Any:
        self.stats.stream_requests += 1
        if self.options.stream_never_ack:
            # A request whose processing threw: only logged, never answered (§3.3).
            state = self.sockets.get(sid)
            if state is not None:
                await state.gone.wait()
            return None
        if not self.relay_up:
            self.stats.stream_acks_refused += 1
            return "STREAMING_OFFLINE"
        if not isinstance(data, dict):
            data = {}
        answer = self._request_v4(sid, data) if self.v4 else self._request_v3(sid, data)
        if isinstance(answer, dict) and answer.get("status") == "OK":
            self.stats.stream_acks_ok += 1
        else:
            self.stats.stream_acks_refused += 1
        return answer

    def _block_ref(self, value: Any, head: int) -> int | None:
        """``start_from``/``read_until``: a JSON number is a block (negative: head + n), a
        string a date (``@timestamp``), 0/absent none (§3.3)."""
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, (int, float)):
            if value == 0:
                return None
            number = int(value)
            return head + number if number < 0 else number
        if isinstance(value, str) and value:
            ms = parse_js_date(value.replace(" ", "T"))
            if ms is None:
                with contextlib.suppress(ValueError):
                    ms = int(value)  # epoch milliseconds as text
            if ms is not None:
                return self.server.block_at(ms, True)
        return None

    def _request_v4(self, sid: str, data: dict[str, Any]) -> Any:
        contract = data.get("contract") or ""
        action = data.get("action") or ""
        account = data.get("account") or ""
        if not account and not (contract and action):
            return _error("account or contract and action are required")
        if contract and not is_valid_name(contract):
            return _error(f"Invalid contract name: {contract}")
        if action and not is_valid_name(action):
            return _error(f"Invalid action name: {action}")
        if account and not is_valid_name(account):
            return _error(f"Invalid account name: {account}")
        head = self.server.head
        start = self._block_ref(data.get("start_from"), head)
        until = self._block_ref(data.get("read_until"), head)
        if start is not None and until is not None and start > until:
            return _error("start_from cannot be greater than read_until")
        filters = data.get("filters") or []
        filter_or = data.get("filter_op") == "or"
        if not isinstance(filters, list):
            filters = []
        fields = [f.get("field") for f in filters if isinstance(f, dict)]
        duplicates = len(fields) - len(set(fields))
        if duplicates and not filter_or:
            return {
                "status": "ERROR",
                "message": "Multiple filters for the same field are not valid unless in OR "
                f"mode. {duplicates} errors found",
                "errorData": sorted({f for f in fields if fields.count(f) > 1}),
            }
        if contract:
            abi = _ABIS.get(contract)
            if abi is None:
                return _error(f"Contract {contract} not found")
            if action and action not in abi:
                return _error(f"Action {action} not found in contract {contract}")
        ignore_live = bool(data.get("ignore_live"))
        if until is None and not ignore_live:
            until = head  # read_until defaults to the API's currentBlockNum
        req = _Request(
            str(uuid.uuid4()), sid, contract, action, account, filters, filter_or,
            head + 1 - max(0, self.options.stream_seam), not ignore_live,
        )  # fmt: skip
        if req.live:
            # Live attach happens before the history replay (§3.5).
            self._attach(req, head)
        if start is not None:
            self._spawn(sid, self._history(req, start, until if until is not None else head))
        return {"status": "OK", "reqUUID": req.uuid, "currentBlockNum": head}

    def _request_v3(self, sid: str, data: dict[str, Any]) -> Any:
        head = self.server.head
        state = self.sockets.get(sid)
        request_id = str(uuid.uuid4())
        if state is not None:
            state.uuid = request_id  # one reqUUID per socket (socket.data.reqUUID)
        contract = data.get("contract")
        action = data.get("action")
        account = data.get("account")
        filters = data.get("filters")
        if (
            not isinstance(contract, str) or not isinstance(action, str)
            or not isinstance(account, str) or not isinstance(filters, list)
        ):  # fmt: skip
            return {"status": "FAIL", "reason": "invalid request", "reqUUID": request_id,
                    "currentBlockNum": head}  # fmt: skip
        start = self._block_ref(data.get("start_from"), head)
        until = head if start is not None else self._block_ref(data.get("read_until"), head)
        greylisted = contract == EOS_TOKEN and account in ("", contract)
        req = _Request(
            request_id, sid, "" if contract == "*" else contract,
            "" if action == "*" else action, account, filters, False,
            head + 1 - max(0, self.options.stream_seam), not greylisted,
        )  # fmt: skip
        if req.live:
            self._attach(req, head)
        if start is not None:
            # 3.x replays history even after a greylist FAIL (§3.4).
            self._spawn(sid, self._history(req, start, until if until is not None else head))
        if greylisted:
            return {"status": "FAIL", "reason": "request too broad, please be more specific",
                    "reqUUID": request_id, "currentBlockNum": head}  # fmt: skip
        return {"status": "OK", "reqUUID": request_id, "currentBlockNum": head}

    async def _on_cancel(self, sid: str, data: Any = None) -> Any:
        if not self.v4:
            return None
        if not self.relay_up:
            return "STREAMING_OFFLINE"
        key = data.get("reqUUID") if isinstance(data, dict) else None
        req = self.requests.get(key) if isinstance(key, str) else None
        if req is None or req.sid != sid:
            return {"status": "NOT_FOUND"}
        del self.requests[key]
        return {"status": "OK"}

    async def _on_reconnect(self, sid: str, data: Any = None) -> None:
        if not self.v4 or not isinstance(data, dict):
            return
        last_id = data.get("last_id")

        async def later() -> None:
            # Action requests are never re-bound: the client is told to re-send (§3.2).
            await asyncio.sleep(1.0)
            await self._emit(sid, "resend_requests", {"last_id": last_id})

        self._spawn(sid, later())

    async def _on_delta_request(self, sid: str, data: Any = None) -> Any:
        return _error("delta streams are not served by the devnet") if self.v4 else {
            "status": "FAIL", "reason": "invalid request"}  # fmt: skip

    # --- matching -------------------------------------------------------------------------

    def _doc_matches(self, req: _Request, doc: Doc, live: bool) -> bool:
        act = doc.act
        if req.contract and act.account != req.contract:
            return False
        if req.action and act.name != req.action:
            return False
        if req.account:
            if live and self.v4 and req.contract and req.action:
                # 4.x router quirk: contract+action+account compares a string with the array
                # of notified accounts, so such a request never matches live (§3.5).
                return False
            if req.account not in doc.receivers and req.account not in doc.actors:
                return False
        return True

    def _passes_filters(self, req: _Request, doc: dict[str, Any]) -> bool:
        checks = [_check_filter(f, doc) for f in req.filters if isinstance(f, dict)]
        if not checks:
            return True
        return any(checks) if req.filter_or else all(checks)

    def _history_docs(self, req: _Request, start: int, until: int) -> Iterator[Doc]:
        server = self.server
        head = server.head
        for num in server.chain.nonempty_between(max(1, start), min(until, head)):
            for doc in server.docs(num):
                if self._doc_matches(req, doc, False) and server.searchable(doc, head):
                    yield doc

    # --- history --------------------------------------------------------------------------

    async def _history(self, req: _Request, start: int, until: int) -> None:
        options = self.options
        sid = req.sid
        until += min(0, options.stream_seam)  # a negative seam: history ends early (gap)
        batch_size = options.stream_batch
        state = self.sockets.get(sid)
        if state is None:
            return
        await asyncio.sleep(0)  # the ack goes out first (same loop step as the handler)
        batch: list[Doc] = []
        first = True
        last_block = 0
        docs = self._history_docs(req, start, until)
        while True:
            batch = []
            for doc in docs:
                batch.append(doc)
                if len(batch) >= batch_size:
                    break
            if not batch:
                break
            if first:
                first = False
                count = len(batch)
                await self._emit(sid, "message", {
                    "reqUUID": self._label(req), "type": "trace_init", "mode": "history",
                    "first_block": batch[0].block.num,
                    "results": {"value": count, "relation": "gte" if count == batch_size
                                else "eq"},
                })  # fmt: skip
            messages, filtered = self._history_messages(req, batch)
            payload = {"reqUUID": self._label(req), "type": "action_trace", "mode": "history",
                       "messages": messages, "filtered": filtered}  # fmt: skip
            self.stats.stream_history_batches += 1
            last_block = batch[-1].block.num
            if self.v4:
                if not await self._send_acked(sid, payload):
                    self.stats.stream_history_stopped += 1
                    return  # stops silently: no more batches, no history_end (§3.5)
            elif not await self._emit(sid, "message", payload):
                return
            if options.stream_batch_pause > 0:
                await asyncio.sleep(options.stream_batch_pause)
        if self.v4:
            await self._emit(sid, "message", {
                "type": "history_end", "reqUUID": req.uuid, "mode": "history",
                "message": {"lastBlock": last_block or until},
            })  # fmt: skip

    def _label(self, req: _Request) -> str:
        if self.v4:
            return req.uuid
        state = self.sockets.get(req.sid)
        # 3.x labels history with the socket's *latest* reqUUID (§3.4).
        return state.uuid if state is not None and state.uuid else req.uuid

    def _history_messages(self, req: _Request, batch: list[Doc]) -> tuple[list[Any], int]:
        if self.v4:
            docs = [merged_doc(d) for d in batch]
            # 4.x sorts by block_num only: ties inside a block come in no particular order.
            keyed = [(d["block_num"], self._rng.random(), i) for i, d in enumerate(docs)]
            docs = [docs[i] for _, _, i in sorted(keyed)]
        else:
            docs = [stored_doc(d, act_digest=False) for d in batch]
        kept = [d for d in docs if self._passes_filters(req, d)]
        return kept, len(docs) - len(kept)

    async def _send_acked(self, sid: str, payload: dict[str, Any]) -> bool:
        """``socket.timeout(120000).emitWithAck``: True only for an ack object with
        ``status === true`` (python handlers returning ``True`` or ``None`` fail, §3.5)."""
        done = asyncio.Event()
        answer: list[Any] = []

        def callback(*args: Any) -> None:
            answer.append(args[0] if args else None)
            done.set()

        if not await self._emit(sid, "message", payload, callback=callback):
            return False
        state = self.sockets.get(sid)
        gone = state.gone if state is not None else asyncio.Event()
        waiter = asyncio.create_task(done.wait())
        leaving = asyncio.create_task(gone.wait())
        try:
            await asyncio.wait(
                {waiter, leaving}, timeout=self.options.stream_ack_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
        finally:
            waiter.cancel()
            leaving.cancel()
        if not answer:
            return False
        ack = answer[0]
        return isinstance(ack, dict) and ack.get("status") is True

    # --- live -----------------------------------------------------------------------------

    async def on_block(self, num: int) -> None:
        """A new head block: relay faults, then its docs to every matching live request."""
        options = self.options
        if not self.relay_up:
            if num >= self._down_until:
                self.relay_up = True
                await self.sio.emit("status", "relay_restored")
            return
        self._live_blocks += 1
        every = options.stream_relay_down_after
        if every and self._live_blocks % every == 0:
            self.relay_up = False
            self._down_until = num + max(1, options.stream_relay_down_blocks)
            self.stats.stream_relay_downs += 1
            self.requests.clear()  # the router's request maps are stale after a relay drop
            await self.sio.emit("status", "relay_down")
            return
        if not self.requests:
            return
        if self.server.chain.is_empty(num):
            return
        await self._deliver(num, self.server.docs(num))

    async def _deliver(self, num: int, docs: list[Doc], only: _Request | None = None) -> None:
        by_sid: dict[str, list[_Request]] = {}
        for req in [only] if only is not None else self.requests.values():
            if req.first_live <= num:
                by_sid.setdefault(req.sid, []).append(req)
        for sid, reqs in by_sid.items():
            for doc in docs:
                targets = [r for r in reqs if self._doc_matches(r, doc, True)]
                if not targets:
                    continue
                raw = None
                kept = []
                for r in targets:
                    if r.filters:
                        raw = raw or stored_doc(doc, act_digest=self.v4)
                        if not self._passes_filters(r, raw):
                            continue
                    kept.append(r)
                if not kept:
                    continue
                text = stored_text(doc, act_digest=self.v4)
                if self.v4:
                    message = {
                        "type": "action_trace",
                        "mode": "live",
                        "targets": [r.uuid for r in kept],
                        "message": text.encode(),
                    }
                    await self._emit(sid, "message", message)
                    self.stats.stream_live_sent += 1
                else:
                    for r in kept:
                        await self._emit(
                            sid,
                            "message",
                            {
                                "type": "action_trace",
                                "reqUUID": r.uuid,
                                "mode": "live",
                                "message": text,
                            },
                        )
                        self.stats.stream_live_sent += 1

    def _attach(self, req: _Request, head: int) -> None:
        self.requests[req.uuid] = req
        if req.first_live <= head:
            self._spawn(req.sid, self._replay_seam(req, head))

    async def _replay_seam(self, req: _Request, head: int) -> None:
        """With ``stream_seam`` > 0: the blocks just before the request's head, live again
        (the same docs as the end of the history: an overlap to dedupe)."""
        await asyncio.sleep(0)  # after the ack
        for num in range(req.first_live, head + 1):
            if not self.server.chain.is_empty(num):
                await self._deliver(num, self.server.docs(num), only=req)

    async def on_lib(self, lib: int) -> None:
        """LIB advanced: broadcast ``lib_update`` (none while the relay is down)."""
        if not self.relay_up or not self.sockets:
            return
        self.stats.stream_lib_updates += 1
        await self.sio.emit(
            "lib_update",
            {"chain_id": self.server.chain_id, "block_num": lib,
             "block_id": self.server.chain.block_id(lib)},
        )  # fmt: skip


def _error(message: str) -> dict[str, Any]:
    return {"status": "ERROR", "message": message}


def _lookup(doc: dict[str, Any], field: str) -> Any:
    node: Any = doc
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _check_filter(f: dict[str, Any], doc: dict[str, Any]) -> bool:
    """One stream filter (``checkMetaFilter``): a dotted path into the doc; ``@transfer.x``
    falls back to ``act.data.x`` once merged; operators of 4.x (§3.3)."""
    field = str(f.get("field", ""))
    expected = f.get("value")
    value = _lookup(doc, field)
    if value is None and field.startswith("@transfer."):
        value = _lookup(doc, "act.data." + field.split(".", 1)[1])
    if value is None and "." not in field:
        value = _lookup(doc, "data." + field)
    op = f.get("operator") or "eq"
    if op not in _OPERATORS:
        op = "eq"
    if f.get("asset") and isinstance(value, str) and " " in value:
        value = value.split(" ")[0]
    try:
        if op in ("gt", "lt", "gte", "lte"):
            a, b = float(value), float(expected)  # type: ignore[arg-type]
            return {"gt": a > b, "lt": a < b, "gte": a >= b, "lte": a <= b}[op]
    except (TypeError, ValueError):
        return False
    a_text, b_text = str(value), str(expected)
    if op == "eq":
        return value is not None and a_text == b_text
    if op == "ne":
        return a_text != b_text
    if op == "contains":
        return b_text in a_text
    if op == "starts_with":
        return a_text.startswith(b_text)
    return a_text.endswith(b_text)
