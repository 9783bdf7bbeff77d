"""Seeded fault injection: drops, close codes, refused handshakes, stalls, malformed frames,
backpressure."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from devnet_helpers import eventually, open_ws, recv, run, send, traces_request
from websockets.exceptions import ConnectionClosed, InvalidStatus

from karma_analytics.devnet import devnet_server
from karma_analytics.exceptions import ParseError
from karma_analytics.model import transfer_from_action_trace

HISTORY = {"head": 20_000, "block_interval": 0, "transfers_per_block": 2, "ping_interval": 30}


async def _frames_until_closed(ws) -> list[str]:
    frames = []
    with pytest.raises(ConnectionClosed):
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), 10))
    return frames


def test_drop_every_aborts_tcp_after_exactly_n_frames():
    async def scenario() -> None:
        async with devnet_server(**HISTORY, drop_every=40) as server:
            for _ in range(2):  # every connection gets its own 40 frames
                ws = await open_ws(server.url)
                await send(ws, traces_request(start_block=1))
                frames = await _frames_until_closed(ws)
                assert len(frames) == 40
                assert json.loads(frames[0])["type"] == "listening"
                assert ws.close_code == 1006 and ws.protocol.close_rcvd is None
            assert server.stats.dropped_connections == 2

    run(scenario())


@pytest.mark.parametrize("code", [1000, 1009])
def test_close_code_instead_of_drop(code):
    async def scenario() -> None:
        async with devnet_server(**HISTORY, drop_every=25, close_code=code) as server:
            ws = await open_ws(server.url)
            await send(ws, traces_request(start_block=1))
            frames = await _frames_until_closed(ws)
            assert len(frames) == 25
            assert ws.close_code == code
            assert server.stats.closed_by_fault == 1

    run(scenario(), timeout=20)


def test_drop_rate_is_deterministic_per_fault_seed():
    async def frames_before_drop(seed: int) -> list[int]:
        counts = []
        async with devnet_server(**HISTORY, drop_rate=0.01, fault_seed=seed) as server:
            for _ in range(3):
                ws = await open_ws(server.url)
                await send(ws, traces_request(start_block=1))
                counts.append(len(await _frames_until_closed(ws)))
        return counts

    async def scenario() -> None:
        first = await frames_before_drop(3)
        assert first == await frames_before_drop(3)
        assert first != await frames_before_drop(4)
        assert len(set(first)) > 1  # connections get different schedules

    run(scenario())


def test_refuse_handshakes_then_accept():
    async def scenario() -> None:
        async with devnet_server(**HISTORY, refuse_handshakes=2) as server:
            for _ in range(2):
                with pytest.raises(InvalidStatus) as caught:
                    await open_ws(server.url)
                assert caught.value.response.status_code == 503
            ws = await open_ws(server.url)
            await send(ws, traces_request(start_block=1))
            assert (await recv(ws))["type"] == "listening"
            await ws.close()
            assert server.stats.refused_handshakes == 2 and server.stats.handshakes == 3

    run(scenario())


def test_accept_then_drop():
    async def scenario() -> None:
        async with devnet_server(**HISTORY, accept_then_drop=2) as server:
            for _ in range(2):
                ws = await open_ws(server.url)  # the handshake succeeds ...
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)  # ... then the TCP connection dies
                assert ws.close_code == 1006
            ws = await open_ws(server.url)
            await send(ws, traces_request(start_block=1))
            assert (await recv(ws))["type"] == "listening"
            await ws.close()

    run(scenario())


@pytest.mark.slow
def test_stall_after_n_frames_while_pings_continue():
    async def scenario() -> None:
        async with devnet_server(
            head=20_000, block_interval=0, transfers_per_block=2, stall_after=30,
            ping_interval=0.05, progress_throttle=0,
        ) as server:  # fmt: skip
            ws = await open_ws(server.url)
            await send(ws, traces_request(start_block=1, with_progress=5))
            data_frames = pings = 0
            await eventually(lambda: server.stats.stalled_streams == 1)
            loop = asyncio.get_running_loop()
            quiet_until = loop.time() + 0.5
            while loop.time() < quiet_until or pings < 3:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message["type"] == "ping":
                    pings += 1
                elif message["type"] in ("action_trace", "progress"):
                    data_frames += 1
            assert data_frames == 30
            assert pings >= 3
            await ws.close()

    run(scenario())


@pytest.mark.slow
def test_malformed_frames_precede_or_replace_real_ones():
    """Cut frames come in addition to the real one; broken-field frames replace it."""

    async def stream(seed: int) -> list[str]:
        async with devnet_server(
            **HISTORY, malformed_rate=0.2, fault_seed=seed
        ) as server:  # fmt: skip
            ws = await open_ws(server.url)
            await send(ws, traces_request(start_block=1))
            frames = []
            while True:
                raw = await asyncio.wait_for(ws.recv(), 10)
                frames.append(raw)
                found = re.search(r'"block_num":(\d+),', raw)
                if found and int(found.group(1)) > 200:
                    break
                assert len(frames) < 50_000
            await ws.close()
            truth = list(server.chain.truth(1, 200))
        records, rejected, not_json = [], [], 0
        for raw in frames:
            try:
                message = json.loads(raw)
            except ValueError:
                not_json += 1
                continue
            if message["type"] != "action_trace" or message["data"]["block_num"] > 200:
                continue
            try:
                record = transfer_from_action_trace(message["data"])
            except ParseError:
                rejected.append(
                    (message["data"]["trx_id"], message["data"]["trace"]["action_ordinal"] - 1)
                )
                continue
            records.append(record)
        assert not_json > 10 and len(rejected) > 10
        # Every transfer arrives once: as a good frame, or as its broken replacement.
        kept = [(r.trx_id, r.action_idx) for r in records]
        assert sorted(kept + rejected) == sorted((t.trx_id, t.action_idx) for t in truth)
        assert set(records) <= set(truth)
        return frames

    async def scenario() -> None:
        assert await stream(1) == await stream(1)

    run(scenario())


def test_slow_client_is_not_buffered_without_bound():
    async def scenario() -> None:
        async with devnet_server(
            head=300_000, block_interval=0, transfers_per_block=2, ping_interval=30
        ) as server:  # fmt: skip
            ws = await open_ws(server.url, max_queue=1)
            await send(ws, traces_request(start_block=1))
            # Never read: the server must stop once socket buffers and one batch are full.
            # Waited for as flow control engaging at both ends: the client stopped reading,
            # the server's transport paused writing (buffer above its high-water mark) and no
            # frame went out since the previous look (a sender that ignores flow control would
            # still be going, or be done with everything).
            last = -1

            def stopped() -> bool:
                nonlocal last
                sent, last = last, server.stats.frames_sent
                paused = any(
                    t.get_write_buffer_size() > t.get_write_buffer_limits()[1]
                    for t in (conn.ws.transport for conn in server._conns)
                )
                return not ws.transport.is_reading() and paused and sent == last

            await eventually(stopped, timeout=30)
            assert 0 < last < 60_000, last  # far below the ~150,000 frames available
            ws.transport.abort()

    run(scenario())
