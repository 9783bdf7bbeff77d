"""Past the backfill: follow the LIB, by the Socket.IO stream or by polling REST (I/O).

What is committed past the backfill always comes from REST ``get_actions`` over
``[last emitted + 1, safe tip]`` with ``ignoreCache`` (§1.2 cache pitfall), window by window
like the backfill, and nothing above the LIB is ever yielded. The Socket.IO stream (§3) is
used for what it does well, telling *when* the LIB moved (``lib_update``), not for the rows:

* live documents are reversible and 4.x forks are removed with no client event (§4.1,
  §3.5): a buffered live document of a block that was later forked out cannot be told from a
  canonical one by its contents, and ``lib_update`` names the id of the LIB block only;
* documents deserialized before the request attached, or while the relay was down
  (``relay_down`` ... ``relay_restored``), are never sent live (§3.5 seam, §3.6);
* so every live block would need the REST pass anyway to close the seam (§4.2 "re-run REST
  over [last_committed+1, LIB]"): running it for every LIB step makes the seam a non-issue
  and costs one or two requests per step.

Commits are gated by ``lib_update``: each one wakes the REST read at once, with the LIB it
names (no ``get_info``, whose proxy cache can be half a second stale, §2.2), so a block is
committed a REST round trip after it is irreversible and indexed (the safe tip, source.py).
``lib_update`` is a broadcast to every socket (§3.5), so it keeps coming whatever became of
the request; with no ``lib_update`` for a while (indexer catching up, §3.6), while the relay
is down or while the socket reconnects, the loop looks with ``get_info`` every poll period.

The request (``action_stream_request`` from the first block not yet committed, so the server
replays ``[next, head]`` and then goes live; re-sent on every (re)connect, after
``relay_restored`` and on ``resend_requests``, §3.6) is sent in the background: an ack that
never comes, ``"STREAMING_OFFLINE"``, 3.x ``FAIL`` or 4.x ``ERROR`` only cost the cross-check.
4.x history batches are acknowledged with ``{"status": True}`` returned from the handler
(python-socketio answers acks with the handler's return value, §3.1; anything else stops the
server's replay). History and live documents of both shapes are decoded and checked against
what REST then commits for their blocks (:class:`LiveStats`: ``matched``, ``differs``,
``stream_only``): a cheap consistency signal, logged when REST lacks what the stream showed.

Where the host has no stream, or an old Socket.IO 2 server (≤3.1.x, §3.1: python-socketio 5
cannot talk to it), the first connection fails and the source polls REST instead
(:func:`wait_for_tip`). A socket dropped later is reconnected in the background (back-off
0.5 to 5 s), REST looking every poll period meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from karma_analytics.engine import ActionReceived, Progress
from karma_analytics.exceptions import SourceError

from .backfill import HostPool, backfill
from .docs import decode_doc

if TYPE_CHECKING:
    from .source import HyperionSource

__all__ = ["LiveStats", "follow_stream", "next_block_after", "wait_for_tip"]

logger = logging.getLogger(__name__)

#: Seconds to wait for the Socket.IO connection and for the request's ack.
CONNECT_SECONDS = 10.0
#: Poll periods without a ``lib_update`` before the loop looks with ``get_info`` anyway.
IDLE_POLLS = 5.0
#: First and longest pause (s) before reconnecting a dropped socket (doubling in between).
RECONNECT_SECONDS = (0.5, 5.0)
#: Stream documents held for the cross-check at most (blocks above the last commit).
MAX_HELD = 100_000


@dataclass
class LiveStats:
    """What the live phase saw (counters; ``refused``: the last refusal or failure)."""

    connected: int = 0
    disconnects: int = 0
    lib_updates: int = 0
    lib_reads: int = 0  # REST reads woken by a lib_update
    idle_reads: int = 0  # REST reads after a poll period without one
    requests_sent: int = 0
    requests_ok: int = 0
    history_batches: int = 0  # history messages with docs (4.x: each acked)
    history_docs: int = 0
    history_ends: int = 0
    live_docs: int = 0
    live_transfers: int = 0
    matched: int = 0  # stream transfers equal to the committed REST one
    differs: int = 0  # same global_sequence, another row
    stream_only: int = 0  # seen on the stream, absent from REST for a committed block
    relay_down: int = 0
    relay_restored: int = 0
    resend_requests: int = 0
    refused: str = ""
    polls: int = 0


def next_block_after(batch: list[Any], next_block: int) -> int:
    """The next block to fetch after ``batch`` (its last ``Progress`` + 1)."""
    for event in reversed(batch):
        if isinstance(event, Progress):
            return max(next_block, event.block_num + 1)
    return next_block


async def wait_for_tip(
    source: HyperionSource, pool: HostPool, next_block: int, poll_seconds: float
) -> tuple[int, int]:
    """Poll until the safe tip reaches ``next_block``; return ``(lib, tip)``.

    One poll costs a ``get_info`` and a one-document probe (for ``last_indexed_block``).

    Raises:
        SourceError: the primary host failed (the runner backs off and may fail over).
    """
    host = pool.hosts[0] if pool.hosts else None
    if host is None:
        raise pool.last_fatal() or SourceError("no Hyperion host left", fatal=True)
    while True:
        await asyncio.sleep(poll_seconds)  # the polling period, not a stand-in for an event
        source.live_stats.polls += 1
        lib, tip = await source.safe_tip(host)
        if tip >= next_block:
            return lib, tip


class _CrossCheck:
    """Stream transfers by global_sequence, checked against REST once their block is
    committed (then forgotten)."""

    def __init__(self, stats: LiveStats) -> None:
        self.stats = stats
        self.held: dict[int, ActionReceived] = {}
        self.rest: dict[int, ActionReceived] = {}
        self.committed = 0

    def add(self, event: ActionReceived) -> None:
        seq = event.global_sequence
        if seq is None or event.block_num <= self.committed or len(self.held) >= MAX_HELD:
            return  # late (its block is committed already) or too many held
        self.held[seq] = event

    def batch(self, batch: list[Any]) -> None:
        for event in batch:
            if isinstance(event, ActionReceived) and event.global_sequence is not None:
                self.rest[event.global_sequence] = event
            elif isinstance(event, Progress):
                self._commit(event.block_num)

    def _commit(self, block: int) -> None:
        self.committed = max(self.committed, block)
        done = [seq for seq, ev in self.held.items() if ev.block_num <= block]
        for seq in done:
            event = self.held.pop(seq)
            rest = self.rest.get(seq)
            if rest is None:
                self.stats.stream_only += 1
                logger.warning(
                    "the Hyperion stream showed global_sequence %d (block %d) that REST did "
                    "not return (forked out, or indexed late)",
                    seq,
                    event.block_num,
                )
            elif rest == event:
                self.stats.matched += 1
            else:
                self.stats.differs += 1
                logger.warning("stream and REST differ for global_sequence %d", seq)
        self.rest.clear()


async def follow_stream(
    source: HyperionSource, pool: HostPool, next_block: int, stats: LiveStats
) -> AsyncIterator[list[Any]]:
    """Follow the chain with ``lib_update`` pushes; returns (to polling) when the host has
    no usable stream. Each batch is REST windows up to the new safe tip (with Progress).

    Raises:
        SourceError: a REST request failed (as in the backfill).
    """
    try:
        import socketio
    except ImportError:  # pragma: no cover - a dependency
        return
    host = pool.hosts[0]
    selection = source.selection
    contract, action = selection.contract, selection.action
    check = _CrossCheck(stats)
    wake = asyncio.Event()
    state: dict[str, Any] = {
        "lib": 0,  # the highest lib_update seen
        "fresh": False,  # a lib_update since the last read
        "relay_up": True,
        "online": False,  # the socket is connected (reconnect() brings it back)
        "resend": False,  # the request is due
        "uuids": set(),  # our accepted reqUUIDs (4.x live targets)
        "last_lib_at": 0.0,
    }
    tasks: set[asyncio.Task[Any]] = set()  # the request in flight
    keeper: asyncio.Task[None] | None = None  # reconnect()
    lost = asyncio.Event()
    # Reconnection is ours (reconnect() below): python-socketio does not reconnect after a
    # server-side disconnect ("io server disconnect", like the JS client).
    client = socketio.AsyncClient(
        reconnection=False,
        logger=False,
        engineio_logger=False,
        websocket_extra_options={"max_msg_size": 0},  # a history batch may exceed 4 MiB (§3.1)
    )

    def hold(doc: Any) -> int:
        try:
            events = decode_doc(doc, contract, action)
        except SourceError:
            return 0
        for event in events:
            check.add(event)
        return len(events)

    # Handlers are synchronous: python-socketio runs each packet in its own task, so all
    # the work is done before the next await (§3.1), and the ack is the return value.
    def on_message(message: Any) -> Any:
        if not isinstance(message, dict):
            return None
        mode = message.get("mode")
        kind = message.get("type")
        if kind == "action_trace" and mode == "live":
            targets = message.get("targets")
            if (
                isinstance(targets, list)
                and state["uuids"]
                and not (state["uuids"] & {t for t in targets if isinstance(t, str)})
            ):
                return None  # 4.x: a message for another request (§3.5 routing quirks)
            doc = message.get("message")
            if isinstance(doc, bytes | bytearray):
                doc = doc.decode("utf-8", "replace")
            if isinstance(doc, str):
                with contextlib.suppress(ValueError):
                    doc = json.loads(doc)
            if isinstance(doc, dict):
                stats.live_docs += 1
                stats.live_transfers += hold(doc)
            return None
        if kind == "action_trace" and mode == "history":
            # 4.x: a history batch is sent with an ack; the replay stops unless the answer
            # is an object whose status is true (§3.5). 3.x sends no ack request.
            docs = message.get("messages")
            if isinstance(docs, list) and docs:
                stats.history_batches += 1
                for doc in docs:
                    stats.history_docs += 1
                    hold(doc)
            return {"status": True}
        if kind == "history_end":
            stats.history_ends += 1
        return None

    def on_lib_update(data: Any) -> None:
        if not isinstance(data, dict):
            return
        chain_id = data.get("chain_id")
        number = data.get("block_num")
        if chain_id is not None and source.chain_id and chain_id != source.chain_id:
            return  # another chain's broadcast (a misconfigured Redis adapter)
        if isinstance(number, bool) or not isinstance(number, int):
            return
        stats.lib_updates += 1
        state["last_lib_at"] = time.monotonic()
        if not state["relay_up"]:
            # lib_update travels through the relay: it is up again, whether or not we saw
            # relay_restored (a request refused "STREAMING_OFFLINE" may have missed it).
            state["relay_up"] = True
            state["resend"] = True
            wake.set()
        if number > state["lib"]:
            state["lib"] = number
            state["fresh"] = True
            wake.set()

    def on_status(data: Any) -> None:
        if data == "relay_down":
            stats.relay_down += 1
            state["relay_up"] = False
        elif data == "relay_restored":
            stats.relay_restored += 1
            state["relay_up"] = True
            state["resend"] = True  # the router's request maps may be stale (§3.6)
        wake.set()

    def on_resend(data: Any) -> None:
        stats.resend_requests += 1
        state["resend"] = True
        wake.set()

    def on_connect() -> None:
        stats.connected += 1
        state["online"] = True
        state["resend"] = True  # on every (re)connect (§3.6)
        wake.set()

    def on_disconnect(*args: Any) -> None:
        stats.disconnects += 1
        state["online"] = False
        lost.set()
        wake.set()

    client.on("connect", on_connect)
    client.on("message", on_message)
    client.on("lib_update", on_lib_update)
    client.on("status", on_status)
    client.on("resend_requests", on_resend)
    client.on("disconnect", on_disconnect)

    async def subscribe(start: int) -> None:
        request = {
            "contract": contract,
            "action": action,
            "account": "",  # 3.x requires the field as a string (§3.3)
            "start_from": start,  # a JSON number: a block; history [start, head], then live
            "read_until": 0,
            "filters": [],  # 3.x requires an array
        }
        stats.requests_sent += 1
        try:
            ack = await client.call("action_stream_request", request, timeout=CONNECT_SECONDS)
        except Exception as exc:  # socketio.exceptions.TimeoutError, disconnects
            stats.refused = f"no ack ({type(exc).__name__})"
            logger.info("Hyperion stream request to %s: %s", host.base_url, stats.refused)
            return
        if isinstance(ack, dict) and ack.get("status") == "OK":
            stats.requests_ok += 1
            if isinstance(ack.get("reqUUID"), str):
                state["uuids"].add(ack["reqUUID"])
            return
        if ack == "STREAMING_OFFLINE":
            state["relay_up"] = False  # re-sent after relay_restored (§3.6)
        # 3.x FAIL (greylist), 4.x ERROR: no live documents; lib_update still comes.
        stats.refused = str(ack)[:200]
        logger.info("Hyperion stream request refused by %s: %s", host.base_url, stats.refused)

    async def open_socket() -> None:
        await asyncio.wait_for(
            client.connect(
                host.base_url,
                transports=["websocket"],
                socketio_path="stream",
                wait_timeout=CONNECT_SECONDS,
            ),
            CONNECT_SECONDS + 1,
        )

    async def reconnect() -> None:
        # In the background: REST keeps looking every poll period while the socket is down
        # (and the request goes again on connect, §3.6).
        delay = RECONNECT_SECONDS[0]
        while True:
            await lost.wait()
            await asyncio.sleep(delay)  # back-off between attempts
            try:
                await open_socket()
            except Exception as exc:
                logger.info("Hyperion stream at %s: reconnect failed: %s", host.base_url, exc)
                with contextlib.suppress(Exception):
                    await client.disconnect()  # its half-open HTTP session
                delay = min(delay * 2, RECONNECT_SECONDS[1])
                continue
            lost.clear()
            delay = RECONNECT_SECONDS[0]

    try:
        try:
            await open_socket()
        except Exception as exc:  # no stream, Socket.IO 2 server, refused upgrade
            stats.refused = f"connect failed ({type(exc).__name__}: {exc})"
            logger.info("no Hyperion stream at %s: %s; polling REST", host.base_url, exc)
            return
        keeper = asyncio.create_task(reconnect())
        while True:
            if state["resend"] and state["online"] and state["relay_up"]:
                state["resend"] = False
                for task in tasks:
                    task.cancel()
                task = asyncio.create_task(subscribe(next_block))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            idle = False
            if not state["fresh"]:
                healthy = (
                    state["online"]
                    and state["relay_up"]
                    and time.monotonic() - state["last_lib_at"] < IDLE_POLLS * source.poll_seconds
                )
                timeout = source.poll_seconds * (IDLE_POLLS if healthy else 1.0)
                try:
                    await asyncio.wait_for(wake.wait(), timeout)
                except TimeoutError:
                    idle = True
            wake.clear()
            if not state["fresh"] and not idle:
                continue  # woken by the connection or the relay: the request may be due
            if state["fresh"]:
                state["fresh"] = False
                stats.lib_reads += 1
                lib, tip = await source.safe_tip(host, state["lib"])
            else:
                stats.idle_reads += 1
                lib, tip = await source.safe_tip(host)
                if lib < state["lib"]:  # a cached get_info behind the last lib_update
                    lib, tip = await source.safe_tip(host, state["lib"])
            if tip < next_block:
                continue
            end = tip if source.stop_block is None else min(tip, source.stop_block)
            async for batch in backfill(
                pool,
                contract,
                action,
                next_block,
                end,
                workers=source.settings.workers,
                capacity=source.capacity,
                max_events=source.max_events,
                target_pages=source.window_pages,
                stats=source.stats,
                ignore_cache=True,
            ):
                check.batch(batch)
                yield batch
            next_block = end + 1
            if source.stop_block is not None and next_block > source.stop_block:
                return
    finally:
        if keeper is not None:
            keeper.cancel()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 2)
