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

The stream's live documents are still read and decoded (counted in :class:`LiveStats`: a
cheap consistency signal), 4.x history batches are acknowledged with ``{"status": True}``
returned from the handler (python-socketio answers acks with the handler's return value,
§3.1; anything else stops the server's replay), ``relay_down`` switches to polling
``get_info`` until ``relay_restored``, after which the request is sent again
(``resend_requests`` too, §3.6). Where the host has no stream, or an old Socket.IO 2 server
(≤3.1.x, §3.1: python-socketio 5 cannot talk to it), the connection fails and the source
polls REST instead (:func:`wait_for_tip`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from karma_analytics.engine import Progress
from karma_analytics.exceptions import SourceError

from .backfill import HostPool, backfill
from .docs import decode_doc

if TYPE_CHECKING:
    from .source import HyperionSource

__all__ = ["LiveStats", "follow_stream", "next_block_after", "wait_for_tip"]

logger = logging.getLogger(__name__)

#: Seconds to wait for the Socket.IO connection and the request's ack.
CONNECT_SECONDS = 10.0


@dataclass
class LiveStats:
    """What the live phase saw."""

    connected: int = 0
    lib_updates: int = 0
    live_docs: int = 0
    live_transfers: int = 0
    history_batches_acked: int = 0
    relay_down: int = 0
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
    wake = asyncio.Event()
    relay_up = asyncio.Event()
    relay_up.set()
    resend = asyncio.Event()
    lost = asyncio.Event()
    client = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)

    def on_message(message: Any) -> Any:
        # Synchronous top half: python-socketio runs each packet in its own task (§3.1).
        if not isinstance(message, dict):
            return None
        mode = message.get("mode")
        if message.get("type") == "action_trace" and mode == "live":
            doc = message.get("message")
            if isinstance(doc, bytes | bytearray):
                doc = doc.decode("utf-8", "replace")
            if isinstance(doc, str):
                with contextlib.suppress(ValueError):
                    doc = json.loads(doc)
            if isinstance(doc, dict):
                stats.live_docs += 1
                with contextlib.suppress(SourceError):
                    stats.live_transfers += len(
                        decode_doc(doc, selection.contract, selection.action)
                    )
            return None
        if mode == "history":
            # 4.x: a history batch is sent with an ack; replay stops unless the answer is an
            # object whose status is true (§3.5). We ask for live only, but answer right.
            stats.history_batches_acked += 1
            return {"status": True}
        return None

    def on_lib_update(data: Any) -> None:
        stats.lib_updates += 1
        wake.set()

    def on_status(data: Any) -> None:
        if data == "relay_down":
            stats.relay_down += 1
            relay_up.clear()
        elif data == "relay_restored":
            relay_up.set()
            resend.set()
        wake.set()

    def on_resend(data: Any) -> None:
        stats.resend_requests += 1
        resend.set()
        wake.set()

    def on_disconnect(*args: Any) -> None:
        lost.set()
        wake.set()

    client.on("message", on_message)
    client.on("lib_update", on_lib_update)
    client.on("status", on_status)
    client.on("resend_requests", on_resend)
    client.on("disconnect", on_disconnect)

    request = {
        "contract": selection.contract,
        "action": selection.action,
        "account": "",  # 3.x requires the field as a string (§3.3)
        "start_from": 0,  # live only: history comes from REST
        "read_until": 0,
        "filters": [],  # 3.x requires an array
    }

    async def subscribe() -> bool:
        try:
            ack = await client.call("action_stream_request", request, timeout=CONNECT_SECONDS)
        except Exception as exc:  # socketio.exceptions.TimeoutError and transport errors
            stats.refused = f"no ack ({type(exc).__name__})"
            return False
        if isinstance(ack, dict) and ack.get("status") == "OK":
            return True
        # "STREAMING_OFFLINE", 3.x FAIL (greylist), 4.x ERROR: poll instead (§3.4).
        stats.refused = str(ack)[:200]
        logger.info("Hyperion stream request refused by %s: %s", host.base_url, stats.refused)
        return False

    try:
        try:
            await asyncio.wait_for(
                client.connect(
                    host.base_url,
                    transports=["websocket"],
                    socketio_path="stream",
                    wait_timeout=CONNECT_SECONDS,
                ),
                CONNECT_SECONDS + 1,
            )
        except Exception as exc:  # no stream, Socket.IO 2 server, refused upgrade
            stats.refused = f"connect failed ({type(exc).__name__}: {exc})"
            logger.info("no Hyperion stream at %s: %s; polling REST", host.base_url, exc)
            return
        stats.connected += 1
        if not await subscribe():
            return
        while not lost.is_set():
            # No lib_update for a while (indexer catching up, §3.6): look anyway.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), source.poll_seconds * 5)
            wake.clear()
            if lost.is_set():
                return
            if resend.is_set() and relay_up.is_set():
                resend.clear()
                if not await subscribe():
                    return
            _lib, tip = await source.safe_tip(host)
            if tip < next_block:
                continue
            end = tip if source.stop_block is None else min(tip, source.stop_block)
            async for batch in backfill(
                pool,
                selection.contract,
                selection.action,
                next_block,
                end,
                workers=source.settings.workers,
                capacity=source.capacity,
                target_pages=source.window_pages,
                stats=source.stats,
                ignore_cache=True,
            ):
                yield batch
            next_block = end + 1
            if source.stop_block is not None and next_block > source.stop_block:
                return
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 2)
