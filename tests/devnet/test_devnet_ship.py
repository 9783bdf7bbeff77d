"""The SHiP devnet server with a bare websockets client: ship.md §4's checklist."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from karma_analytics.devnet.ship import ship_server
from karma_analytics.sources.ship import codec
from karma_analytics.sources.ship.decode import block_time_ms

FAST = {"head": 1000, "block_interval": 0.0, "lib_lag": 2}
ABI = Path(__file__).parents[1] / "data" / "ship" / "ship.abi.json"


def run(coro: Any, timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def blocks(start: int, end: int = 0xFFFFFFFF, credits: int = 100, **flags: Any) -> bytes:
    request = codec.GetBlocksRequestV0(
        start, end, credits, tuple(flags.pop("positions", ())),
        flags.pop("irreversible_only", True), flags.pop("fetch_block", True),
        flags.pop("fetch_traces", True), False,
    )  # fmt: skip
    return codec.encode_request(request)


async def open_client(url: str) -> Any:
    ws = await connect(url, max_size=None, compression=None)
    abi = await ws.recv()
    assert isinstance(abi, str)
    return ws, abi


async def take(ws: Any, count: int) -> list[Any]:
    """The next ``count`` block results (status answers skipped)."""
    out = []
    while len(out) < count:
        result = codec.decode_result(await ws.recv())
        if not isinstance(result, codec.GetStatusResultV0):
            out.append(result)
    return out


async def barrier(ws: Any) -> list[Any]:
    """Block results that arrive before the answers to two status requests.

    The writer answers queued status requests at the start of a turn, before that turn's block
    result (ship.md §1.4); the second answer therefore follows a whole turn that found nothing
    else to send, or the results it sent.
    """
    out = []
    for _ in range(2):
        await ws.send(codec.encode_request(codec.GetStatusRequestV0()))
        while True:
            result = codec.decode_result(await ws.recv())
            if isinstance(result, codec.GetStatusResultV0):
                break
            out.append(result)
    return out


def test_abi_text_first_then_status() -> None:
    async def main() -> None:
        async with ship_server(**FAST, trace_begin_block=5) as server:
            ws, abi = await open_client(server.url + "/any/path")
            assert abi.encode() == ABI.read_bytes()
            assert hashlib.sha256(abi.encode()).hexdigest().startswith("f17a3bc9")
            await ws.send(b"\x00")
            status = codec.decode_result(await ws.recv())
            assert isinstance(status, codec.GetStatusResultV0)
            assert (status.head.block_num, status.last_irreversible.block_num) == (1000, 998)
            assert (status.trace_begin_block, status.trace_end_block) == (5, 1001)
            assert status.chain_id.hex() == server.options.chain_id
            assert status.head.block_id == server.block_id(1000)
            await ws.send(b"\x04")
            v1 = codec.decode_result(await ws.recv())
            assert isinstance(v1, codec.GetStatusResultV1) and v1.chain_id == status.chain_id
            await ws.close()

    run(main())


def test_credits_acks_and_a_new_request_resets_them() -> None:
    async def main() -> None:
        async with ship_server(**FAST) as server:
            ws, _ = await open_client(server.url)
            await ws.send(blocks(10, credits=3))
            got = await take(ws, 3)
            assert [r.this_block.block_num for r in got] == [10, 11, 12]
            assert (await barrier(ws)) == []  # no credit: silence
            await ws.send(codec.encode_request(codec.GetBlocksAckRequestV0(2)))
            got = await take(ws, 2)
            assert [r.this_block.block_num for r in got] == [13, 14]
            assert (await barrier(ws)) == []
            # A new request replaces cursor and credits (ship.md §1.4): 2, not 2 + leftovers.
            await ws.send(codec.encode_request(codec.GetBlocksAckRequestV0(5)))
            await ws.send(blocks(100, credits=2))
            got = [r.this_block.block_num for r in await take(ws, 2)]
            got += [r.this_block.block_num for r in await barrier(ws)]
            assert got[-2:] == [100, 101] and 100 in got and len(got) <= 7
            assert (await barrier(ws)) == []
            await ws.close()

    run(main())


def test_block_contents_onblock_time_and_trace_range() -> None:
    async def main() -> None:
        async with ship_server(**FAST, trace_begin_block=20) as server:
            chain = server.chain
            ws, _ = await open_client(server.url)
            await ws.send(blocks(18, end=23, credits=100))
            got = await take(ws, 5)
            assert (await barrier(ws)) == []  # end_block_num is exclusive
            assert [r.this_block.block_num for r in got] == [18, 19, 20, 21, 22]  # end exclusive
            for result in got:
                num = result.this_block.block_num
                assert isinstance(result, codec.GetBlocksResultV0)
                assert result.this_block.block_id.hex() == chain.block_id(num)
                assert result.prev_block == codec.BlockPosition(
                    num - 1, bytes.fromhex(chain.block_id(num - 1))
                )
                assert block_time_ms(result.block) == chain.block(num).time_ms
                if num < 20:
                    assert result.traces is None  # outside the trace log: a gap
                    continue
                traces = codec.decode_traces(result.traces)
                onblock = traces[0].action_traces[0]
                assert (onblock.act.account, onblock.act.name) == ("eosio", "onblock")
                # onblock data = the previous block's header (ship.md §1.7).
                assert block_time_ms(onblock.act.data) == chain.block(num - 1).time_ms
                # ... whose `previous` is the id of the block before it.
                assert onblock.act.data[14:46] == server.block_id(num - 2)
                assert all(isinstance(a, codec.ActionTraceV1) for t in traces
                           for a in t.action_traces)  # fmt: skip
                assert len(traces) == 1 + len(chain.block(num).transactions)
            await ws.close()

    run(main())


@pytest.mark.slow
def test_scenarios_failed_soft_failed_and_legacy_console() -> None:
    async def main() -> None:
        async with ship_server(**FAST, action_trace_v0=True, transfers_per_block=4.0) as server:
            ws, _ = await open_client(server.url)
            await ws.send(blocks(1, end=400, credits=1000))
            got = await take(ws, 399)
            statuses: set[int] = set()
            failed_dtrx = 0
            bad_console = 0
            for result in got:
                for trace in codec.decode_traces(result.traces):
                    statuses.add(trace.status)
                    if trace.failed_dtrx_trace is not None:
                        assert trace.status == 0 and trace.failed_dtrx_trace.status == 2
                        failed_dtrx += 1
                    for action in trace.action_traces:
                        assert isinstance(action, codec.ActionTraceV0)
                        try:
                            action.console.decode("utf-8")
                        except UnicodeDecodeError:
                            bad_console += 1
            assert {0, 2, 4} <= statuses and failed_dtrx > 0 and bad_console > 0
            await ws.close()

    run(main())


def test_have_positions_lower_the_start() -> None:
    async def main() -> None:
        async with ship_server(**FAST) as server:
            ws, _ = await open_client(server.url)
            good = codec.BlockPosition(50, server.block_id(50))
            bad = codec.BlockPosition(47, b"\x01" * 32)
            above = codec.BlockPosition(60, b"\x02" * 32)  # at/above start: ignored
            await ws.send(blocks(55, end=57, positions=[good, bad, above]))
            got = await take(ws, 10)
            assert [r.this_block.block_num for r in got] == list(range(47, 57))
            await ws.close()

    run(main())


def test_split_frames_reassemble_to_the_same_message() -> None:
    async def main() -> None:
        messages = []
        for split in (False, True):
            async with ship_server(**FAST, split_frames=split, frame_chunk=100) as server:
                ws, _ = await open_client(server.url)
                await ws.send(blocks(5, end=8))
                messages.append([await ws.recv() for _ in range(3)])
                await ws.close()
        assert messages[0] == messages[1]

    run(main())


def test_a_bad_request_closes_the_connection() -> None:
    async def main() -> None:
        async with ship_server(**FAST) as server:
            for bad in (b"\x09", b"\x01\x00\x00", "text"):
                ws, _ = await open_client(server.url)
                await ws.send(bad)
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            assert server.stats.bad_requests == 3

    run(main())


def test_forks_rewind_in_reversible_mode_only() -> None:
    async def main() -> None:
        options = {"head": 5, "block_interval": 0.02, "lib_lag": 3, "fork_every": 10,
                   "fork_depth": 2}  # fmt: skip
        async with ship_server(**options) as server:
            seen: dict[bool, list[tuple[int, bytes, int]]] = {}
            for irreversible in (False, True):
                ws, _ = await open_client(server.url)
                await ws.send(blocks(1, end=15, irreversible_only=irreversible))
                out = []
                while not out or out[-1][0] != 14:
                    result = codec.decode_result(await ws.recv())
                    out.append((result.this_block.block_num, result.this_block.block_id,
                                result.prev_block.block_num if result.prev_block else 0))  # fmt: skip
                seen[irreversible] = out
                await ws.close()
            nums = [n for n, _, _ in seen[False]]
            # 9 and 10 are first their forked-out variant, then (head 11) the canonical ones.
            assert nums.count(9) == 2 and nums.count(10) == 2
            first9, second9 = [i for n, i, _ in seen[False] if n == 9]
            assert first9 != second9 and second9 == server.block_id(9)
            assert server.stats.rewinds >= 1
            assert [n for n, _, _ in seen[True]] == list(range(1, 15))
            assert all(i == server.block_id(n) for n, i, _ in seen[True])

    run(main())
