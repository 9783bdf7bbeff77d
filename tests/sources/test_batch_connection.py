"""BatchConnection: websockets' client connection with our own message queue.

A real websockets server on loopback sends what a dfuse server may send: plain text frames,
fragmented messages, pings, a close; the tests check what ``take()`` hands over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from karma_analytics.sources.websocket import BatchConnection

Handler = Callable[[ServerConnection], Awaitable[None]]


def in_a_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop (fixtures pass through)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@contextlib.asynccontextmanager
async def client_of(handler: Handler, **options) -> AsyncIterator[BatchConnection]:
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}",
            create_connection=BatchConnection,
            compression=None,
            ping_interval=None,
            **options,
        ) as ws:
            assert isinstance(ws, BatchConnection)
            yield ws


async def take_until(ws: BatchConnection, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        got += await ws.take()
    return got


@in_a_loop
async def test_messages_come_in_order_as_bytes_in_batches() -> None:
    async def handler(ws: ServerConnection) -> None:
        for n in range(500):
            await ws.send(f'{{"n":{n}}}')
        await ws.send(b"\x00binary")
        await ws.wait_closed()

    async with client_of(handler) as ws:
        got = await take_until(ws, 501)
    assert got[:500] == [f'{{"n":{n}}}'.encode() for n in range(500)]
    assert got[500] == b"\x00binary"
    assert all(type(m) is bytes for m in got)


@in_a_loop
async def test_fragmented_messages_are_joined_between_whole_ones() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("first")
        await ws.send(["frag", "ment", "ed"])  # an iterable is sent as fragments
        await ws.send("last")
        await ws.wait_closed()

    async with client_of(handler) as ws:
        assert await take_until(ws, 3) == [b"first", b"fragmented", b"last"]


@in_a_loop
async def test_a_message_of_too_many_fragments_is_refused_with_1009() -> None:
    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(["x"] * (BatchConnection.max_fragments + 10))
        await ws.wait_closed()

    async with client_of(handler) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await take_until(ws, 1)
    assert info.value.sent is not None and info.value.sent.code == 1009


@in_a_loop
async def test_max_size_is_enforced_by_websockets() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("ok")
        with contextlib.suppress(ConnectionClosed):
            await ws.send("y" * 5000)
        await ws.wait_closed()

    async with client_of(handler, max_size=1000) as ws:
        assert await ws.take() == [b"ok"]
        with pytest.raises(ConnectionClosed) as info:
            await take_until(ws, 1)
    assert info.value.sent is not None and info.value.sent.code == 1009


@in_a_loop
async def test_messages_before_a_close_are_delivered_then_the_close_is_raised() -> None:
    async def handler(ws: ServerConnection) -> None:
        for n in range(3):
            await ws.send(str(n))
        await ws.close(1011, "going down")

    async with client_of(handler) as ws:
        await ws.wait_closed()  # everything has arrived; nothing was taken yet
        assert await ws.take() == [b"0", b"1", b"2"]
        with pytest.raises(ConnectionClosed) as info:
            await ws.take()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011


@in_a_loop
async def test_a_waiting_take_wakes_up_when_the_connection_drops() -> None:
    taking = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await taking.wait()  # drop the connection only once the client's take() is waiting
        ws.transport.abort()

    async with client_of(handler) as ws:
        take = asyncio.ensure_future(ws.take())
        await asyncio.sleep(0)  # one loop turn: take() runs up to its only await, the wait
        assert not take.done()
        taking.set()
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(take, timeout=10)
    assert info.value.rcvd is None  # no close frame: an abnormal closure


@in_a_loop
async def test_pings_are_answered_while_nobody_takes() -> None:
    answered = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send("data")
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, timeout=10)
        answered.set()
        await ws.wait_closed()

    async with client_of(handler):
        await asyncio.wait_for(answered.wait(), timeout=10)


@in_a_loop
async def test_reading_pauses_above_the_high_water_mark_and_resumes_on_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(BatchConnection, "high_water", 8)
    sent_all = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        for n in range(2000):
            await ws.send("z" * 1000 + str(n))
        sent_all.set()
        await ws.wait_closed()

    async with client_of(handler) as ws:
        async with asyncio.timeout(10):
            while len(ws.messages) < 8:  # polled: the connection has no event for this
                await asyncio.sleep(0.01)
        assert not ws.transport.is_reading()  # the socket buffer fills; the server waits
        held = len(ws.messages)
        assert held < 2000
        got = await take_until(ws, 2000)
        await asyncio.wait_for(sent_all.wait(), timeout=10)
    assert [int(m[1000:]) for m in got] == list(range(2000))
