"""BatchConnection: websockets' client connection with our own message queue.

A real websockets server on loopback sends what a dfuse server may send: plain text frames,
fragmented messages, pings, a close; the tests check what ``take()`` hands over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

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
    compression = options.get("compression")
    async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}",
            create_connection=BatchConnection,
            **{"compression": None, "ping_interval": None, **options},
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


# --- the connection's own framing ---------------------------------------------------------------
# Past the handshake BatchConnection splits the stream into frames itself and hands websockets
# only whole frames of anything but a plain message. A raw TCP server lets these tests send
# bytes websockets' server never would (masked, reserved bits, unknown opcodes, a cut frame).

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


def _frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, payload, fin).serialize(mask=False, extensions=[])


Script = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """A TCP server that reads the upgrade request and passes the 101 response to ``script``
    (which sends it, or not, and whatever follows). Yields its ws:// URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"(?im)^sec-websocket-key: *(\S+)", request)
        assert key is not None
        accept = base64.b64encode(hashlib.sha1(key.group(1) + _GUID).digest())
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        try:
            await script(response, reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def take_until_closed(ws: BatchConnection) -> tuple[list[bytes], ConnectionClosed]:
    """Every message up to the end of the connection, and how it ended."""
    got: list[bytes] = []
    async with asyncio.timeout(10):
        while True:
            try:
                got += await ws.take()
            except ConnectionClosed as closed:
                return got, closed


def raw_client(url: str, **options: Any) -> Any:
    return connect(
        url, create_connection=BatchConnection, compression=None, ping_interval=None, **options
    )


# Every kind of frame the stream may hold, with the messages they make.
_STREAM = [
    (_frame(Opcode.TEXT, b"a"), [b"a"]),
    (_frame(Opcode.BINARY, b"\x01" * 125), [b"\x01" * 125]),  # the longest 7-bit length
    (_frame(Opcode.BINARY, b"\x02" * 126), [b"\x02" * 126]),  # 16-bit length
    (_frame(Opcode.PING, b"p1"), []),  # answered by websockets
    (_frame(Opcode.BINARY, b"fr", fin=False), []),
    (_frame(Opcode.CONT, b"agm", fin=False), []),
    (_frame(Opcode.CONT, b"ent", fin=True), [b"fragment"]),
    (_frame(Opcode.BINARY, b""), [b""]),
    (_frame(Opcode.PONG, b"unsolicited"), []),
    (_frame(Opcode.TEXT, b"z" * 300), [b"z" * 300]),
]


@in_a_loop
async def test_own_framing_gives_the_same_messages_wherever_the_reads_split() -> None:
    stream = b"".join(frame for frame, _ in _STREAM)
    expected = [message for _, messages in _STREAM for message in messages]
    big = _frame(Opcode.BINARY, bytes(range(256)) * 300)  # 64-bit length
    boundaries = [0]
    for frame, _ in _STREAM:
        boundaries.append(boundaries[-1] + len(frame))
    cuts = sorted(
        {k for b in boundaries for k in range(b - 12, b + 12) if 0 <= k <= len(stream)}
        | set(range(0, 140))
    )
    pongs: list[bytes] = []

    async def script(response: bytes, reader: asyncio.StreamReader, writer: Any) -> None:
        writer.write(response)
        while True:  # collect what the client writes: the pongs
            try:
                head = await reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return
            size = head[1] & 0x7F
            mask = await reader.readexactly(4)
            payload = await reader.readexactly(size)
            if head[0] & 0x0F == Opcode.PONG:
                pongs.append(bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            elif head[0] & 0x0F == Opcode.CLOSE:
                return  # and close the TCP connection, as a server does

    async with raw_server(script) as url, raw_client(url) as ws:
        assert isinstance(ws, BatchConnection)
        rounds = 0
        # The reads a socket may give: cut once anywhere near a frame boundary, cut twice, or
        # a byte at a time. The connection's state carries over from one round to the next.
        splits = [[k] for k in cuts] + [[k, k + 7] for k in cuts[:60]]
        splits.append(list(range(1, len(stream))))
        for split in splits:
            pieces = [stream[i:j] for i, j in zip([0, *split], [*split, len(stream)], strict=True)]
            for piece in pieces:
                ws.data_received(piece)
            rounds += 1
            assert ws.take_nowait() == expected, split
        for k in (1, 2, 5, 9, 10, 500, len(big) - 1):
            ws.data_received(big[:k])
            ws.data_received(big[k:])
            assert ws.take_nowait() == [big[10:]]
        # A large frame in many small reads: the reads are kept and joined once, when the
        # frame can be complete (joining at every read would copy it over and over).
        huge = _frame(Opcode.BINARY, bytes(range(256)) * 3000)  # below max_size, 1 MiB
        pieces = [huge[k : k + 1000] for k in range(0, len(huge), 1000)]
        for count, piece in enumerate(pieces[:-1], 1):
            ws.data_received(piece)
            assert len(ws._partial) == count and not ws.messages
        ws.data_received(pieces[-1])
        assert ws.take_nowait() == [huge[10:]] and not ws._partial
        # Still the connection's own framing (nothing made it hand over to websockets).
        assert ws._framing == "own"
        async with asyncio.timeout(10):
            while len(pongs) < rounds:
                await asyncio.sleep(0.01)  # polled: the server side has no event for this
    assert pongs == [b"p1"] * rounds


@in_a_loop
async def test_the_upgrade_response_may_end_in_any_read() -> None:
    # The response's blank line ends websockets' part; frames in the same read are ours.
    frames = _frame(Opcode.TEXT, b"abi") + _frame(Opcode.BINARY, b"\x00" * 200)
    made: list[BatchConnection] = []

    class Recorded(BatchConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    responses: asyncio.Queue[bytes] = asyncio.Queue()

    async def script(response: bytes, reader: asyncio.StreamReader, writer: Any) -> None:
        await responses.put(response)  # the test feeds it to the client, in pieces
        await reader.read()

    async with raw_server(script) as url:
        for cut in range(0, 140):
            made.clear()
            task = asyncio.ensure_future(
                connect(url, create_connection=Recorded, compression=None, ping_interval=None)
            )
            response = await asyncio.wait_for(responses.get(), timeout=10)
            stream = response + frames
            ws = made[0]
            cuts = sorted({min(cut, len(stream)), min(cut + 3, len(stream))})
            for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True):
                if i < j:
                    ws.data_received(stream[i:j])
            connection = await asyncio.wait_for(task, timeout=10)
            assert connection is ws
            assert ws.take_nowait() == [b"abi", b"\x00" * 200], cut
            assert ws._framing == "own"
            ws.transport.abort()  # the raw server does not do the close handshake
            await ws.wait_closed()


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (b"\x82\x83" + b"mask" + b"abc", 1002),  # a masked server frame
        (b"\xc2\x03abc", 1002),  # RSV1 without an extension
        (b"\x83\x03abc", 1002),  # opcode 3 is reserved
        # Headers websockets refuses before the payload, with a length the stream never
        # fills: refused at once, not waited for.
        (b"\x82\xfe\x10\x00" + b"mask", 1002),
        (b"\x83\x7e\x10\x00", 1002),
        (_frame(Opcode.BINARY, b"x", fin=False) + _frame(Opcode.BINARY, b"y"), 1002),
        (_frame(Opcode.CONT, b"y"), 1002),  # a continuation of nothing
        (b"\x82\x7f" + (2**40).to_bytes(8, "big"), 1009),  # over max_size
    ],
)
@in_a_loop
async def test_what_websockets_refuses_is_refused_after_the_good_messages(
    bad: bytes, code: int
) -> None:
    async def script(response: bytes, reader: asyncio.StreamReader, writer: Any) -> None:
        writer.write(response + _frame(Opcode.BINARY, b"good") + bad)
        await reader.read(1)  # the client's close frame: then close the TCP connection

    async with raw_server(script) as url, raw_client(url, max_size=2**20) as ws:
        got, closed = await take_until_closed(ws)
    assert got == [b"good"]
    assert closed.sent is not None and closed.sent.code == code


@in_a_loop
async def test_a_frame_cut_by_the_end_of_the_stream_is_an_abnormal_closure() -> None:
    async def script(response: bytes, reader: asyncio.StreamReader, writer: Any) -> None:
        whole = _frame(Opcode.BINARY, b"whole")
        cut = _frame(Opcode.BINARY, b"c" * 1000)[:500]
        writer.write(response + whole + cut)
        await writer.drain()
        writer.write_eof()
        await reader.read()

    async with raw_server(script) as url, raw_client(url) as ws:
        got, closed = await take_until_closed(ws)
    assert got == [b"whole"]
    assert closed.rcvd is None  # no close frame came


@in_a_loop
async def test_nothing_after_a_close_frame_is_delivered() -> None:
    async def script(response: bytes, reader: asyncio.StreamReader, writer: Any) -> None:
        close = _frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye")
        writer.write(response + _frame(Opcode.TEXT, b"a") + close + _frame(Opcode.TEXT, b"b"))
        await reader.read(1)  # the client's close frame

    async with raw_server(script) as url, raw_client(url) as ws:
        got, closed = await take_until_closed(ws)
    assert got == [b"a"]
    assert closed.rcvd is not None and closed.rcvd.code == 1000


@in_a_loop
async def test_a_waiting_take_wakes_up_for_messages_read_with_a_control_frame() -> None:
    async def script(response: bytes, reader: asyncio.StreamReader, writer: Any) -> None:
        writer.write(response)
        await writer.drain()
        await reader.readexactly(1)  # the test's signal: take() is waiting
        writer.write(_frame(Opcode.BINARY, b"m1") + _frame(Opcode.PING, b"") + b"\x82")
        await reader.read()

    async with raw_server(script) as url, raw_client(url) as ws:
        take = asyncio.ensure_future(ws.take())
        await asyncio.sleep(0)  # one loop turn: take() runs up to its only await, the wait
        assert not take.done()
        ws.transport.write(b"\x00")  # a raw byte for the raw server, not a frame
        assert await asyncio.wait_for(take, timeout=10) == [b"m1"]
        ws.transport.abort()


@in_a_loop
async def test_keepalive_pongs_reach_websockets_between_messages() -> None:
    # The connection's own keepalive pings are answered by pongs amid the messages: websockets
    # must see each (it measures the latency from them, and closes a connection without).
    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            for n in range(100_000):
                await ws.send(b"\x00" * 100 + str(n).encode())
        await ws.wait_closed()

    async with client_of(handler, ping_interval=0.01, ping_timeout=5) as ws:
        got: list[bytes] = []
        async with asyncio.timeout(10):
            while ws.latency == 0:  # websockets sets it from the first pong it reads
                got += await ws.take()
        assert ws._framing == "own"  # the pong came through the connection's own framing
        got += await take_until(ws, 100_000 - len(got))
    assert [int(m[100:]) for m in got] == list(range(100_000))


@in_a_loop
async def test_with_compression_websockets_frames_every_message() -> None:
    # permessage-deflate frames carry RSV1: the connection leaves all framing to websockets,
    # and its messages still come in order, waking a waiting take.
    taking = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await taking.wait()
        for n in range(300):
            await ws.send(f"compressed {n} " + "x" * 200)
        await ws.send(["frag", "ment"])
        await ws.wait_closed()

    async with client_of(handler, compression="deflate") as ws:
        take = asyncio.ensure_future(ws.take())
        await asyncio.sleep(0)  # one loop turn: take() runs up to its only await, the wait
        assert not take.done()
        taking.set()
        got = await asyncio.wait_for(take, timeout=10)
        got += await take_until(ws, 301 - len(got))
        assert ws._framing == "websockets"
    assert got[:300] == [f"compressed {n} ".encode() + b"x" * 200 for n in range(300)]
    assert got[300] == b"fragment"
