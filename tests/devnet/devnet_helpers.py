"""Small async helpers for talking to a devnet server with a bare websockets client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

KARMA_TRANSFERS = {"accounts": "therealkarma", "action_names": "transfer"}
TIMEOUT = 20.0


def run(coro: Coroutine[Any, Any, Any], timeout: float = 40.0) -> Any:
    """Run a scenario with a hard deadline so a hung socket fails the test instead of CI."""

    async def guarded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


async def open_ws(url: str, **kwargs: Any) -> ClientConnection:
    # A client that stops reading mid-stream cannot see the server's close frame behind the
    # unread data, so a clean close would wait the whole close_timeout: keep it short.
    options: dict[str, Any] = {
        "compression": None, "max_size": None, "open_timeout": 5, "close_timeout": 0.2,
    }  # fmt: skip
    options.update(kwargs)
    return await connect(url, **options)


def traces_request(req_id: str = "r1", **fields: Any) -> dict[str, Any]:
    """A get_action_traces request; ``data`` defaults to KARMA transfers."""
    message: dict[str, Any] = {
        "type": "get_action_traces",
        "req_id": req_id,
        "listen": True,
        "data": dict(KARMA_TRANSFERS),
    }
    message.update(fields)
    return message


async def send(ws: ClientConnection, message: dict[str, Any] | str) -> None:
    await ws.send(message if isinstance(message, str) else json.dumps(message))


async def recv(ws: ClientConnection, *, pings: bool = False, timeout: float = TIMEOUT) -> dict:
    """The next frame as a dict (pings skipped unless ``pings``)."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout)
        message = json.loads(raw)
        if pings or message.get("type") != "ping":
            return message


async def recv_raw(ws: ClientConnection, *, timeout: float = TIMEOUT) -> str:
    """The next non-ping frame as text."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout)
        if not raw.startswith('{"type":"ping"'):
            return raw


async def collect(
    ws: ClientConnection,
    until: Callable[[dict], bool],
    *,
    raw: bool = False,
    timeout: float = TIMEOUT,
) -> list[Any]:
    """Non-ping frames up to and including the first for which ``until`` is true."""
    out: list[Any] = []

    async def loop() -> None:
        while True:
            text = await ws.recv()
            message = json.loads(text)
            if message.get("type") == "ping":
                continue
            out.append(text if raw else message)
            if until(message):
                return

    await asyncio.wait_for(loop(), timeout)
    return out


def past_block(last: int) -> Callable[[dict], bool]:
    """Stop once a frame reports a block number above ``last``."""

    def check(message: dict) -> bool:
        data = message.get("data")
        return isinstance(data, dict) and data.get("block_num", 0) > last

    return check


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)
