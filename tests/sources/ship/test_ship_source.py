"""ShipSource + the real Engine against the SHiP devnet server over real sockets.

Each streaming test compares what the engine commits with the devnet chain's truth (every
transfer field, exactly once); fault tests check which SourceError a fault raises.
"""

from __future__ import annotations

import asyncio

import pytest
from ship_helpers import FAST, drive, run

from karma_analytics.devnet.ship import ship_server
from karma_analytics.engine import ActionReceived, Listening, Progress
from karma_analytics.exceptions import ConnectError, ProtocolError, UsageError
from karma_analytics.sources.base import Selection, SourceSettings
from karma_analytics.sources.ship import ShipSource, codec
from karma_analytics.sources.ship.codec import DecodeError
from karma_analytics.sources.ship.decode import BlockEvents


def source(url: str, stop: int | None, **kwargs: object) -> ShipSource:
    return ShipSource(url, Selection(), stop_block=stop, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"full_scan": True},
        {"action_trace_v0": True, "split_frames": True, "frame_chunk": 700},
        {"transfers_per_block": 3.0},
    ],
    ids=["v1", "v1-full-scan", "v0-split-frames", "dense"],
)
@pytest.mark.slow
def test_stream_equals_truth(options: dict[str, object]) -> None:
    async def main() -> None:
        server_options = {k: v for k, v in options.items() if k != "full_scan"}
        async with ship_server(**FAST, **server_options) as server:
            src = source(server.url, 4000, full_scan=bool(options.get("full_scan")))
            out = await drive(src, start=1, stop_block=4000)
            truth = list(server.chain.truth(1, 4000))
            assert out["rows"] == truth and len(truth) > 500
            assert not out["lost"] and out["fatal"] is None and out["streams"] == 1
            assert src.chain_id == server.options.chain_id
            # Acks never exceed what was received; the last window is not acked (done).
            assert server.stats.acked_messages == src.acks_sent <= src.results_received
            assert src.results_received == 4000

    run(main())


def test_request_status_and_first_batch() -> None:
    async def main() -> None:
        async with ship_server(**{**FAST, "head": 100}, trace_begin_block=10) as server:
            settings = SourceSettings(max_messages_in_flight=7, request_timeout=5)
            src = ShipSource.create(server.url, Selection(), stop_block=98, settings=settings)
            batches = [b async for b in src.stream(None)]  # None: start at LIB
            lib = server.lib
            assert batches[0] == [Listening(lib)]
            request = server.stats.last_blocks_request
            assert (request.start_block_num, request.end_block_num) == (lib, 99)
            assert request.max_messages_in_flight == 7 and request.irreversible_only
            assert request.fetch_block and request.fetch_traces and not request.fetch_deltas
            assert request.have_positions == ()
            assert src.status.trace_begin_block == 10
            assert [type(e) for b in batches[1:] for e in b][-1] is Progress

    async def collect() -> None:
        async with ship_server(**FAST, trace_begin_block=10) as server:
            src = source(server.url, 30, max_messages_in_flight=3)
            batches = [b async for b in src.stream(10)]
            progress = [e.block_num for b in batches for e in b if isinstance(e, Progress)]
            # One Progress per socket read (its last block), increasing, ending at the stop.
            assert progress == sorted(set(progress)) and progress[-1] == 30
            assert all(isinstance(b[-1], Progress) for b in batches[1:])
            # Credits: 3 at a time, acked as processed; 21 results need >= 6 acks.
            assert server.stats.acks >= 6 and server.stats.results_sent == 21

    run(main())
    run(collect())


def test_start_below_the_trace_log_is_fatal() -> None:
    async def main() -> None:
        async with ship_server(**FAST, trace_begin_block=500) as server:
            src = source(server.url, 1000)
            with pytest.raises(ProtocolError, match=r"traces for blocks 500\.\.") as info:
                async for _ in src.stream(100):
                    pass
            assert info.value.fatal and "block 100" in str(info.value)

    run(main())


@pytest.mark.slow
def test_drops_refusals_and_malformed_frames_recover_to_truth() -> None:
    async def main() -> None:
        options = {
            **FAST, "drop_every": 700, "refuse_handshakes": 2, "accept_then_drop": 2,
            "malformed_rate": 0.0005, "fault_seed": 4,
        }  # fmt: skip
        async with ship_server(**options) as server:
            out = await drive(source(server.url, 6000), start=1, stop_block=6000)
            assert out["fatal"] is None
            assert out["rows"] == list(server.chain.truth(1, 6000))
            lost = out["lost"]
            assert sum("HTTP 503" in r for r in lost) == 2
            assert sum("malformed SHiP message" in r for r in lost) == server.stats.malformed_sent
            assert server.stats.malformed_sent >= 1
            drops = server.stats.dropped_connections
            assert drops >= 2 + 6000 // 700 - server.stats.malformed_sent
            # Every connection but the last ended in exactly one transient fault.
            assert len(lost) == server.stats.handshakes - 1 == out["streams"] - 1

    run(main(), timeout=90)


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"refuse_handshakes": 1}, ConnectError, "HTTP 503"),
        ({"accept_then_drop": 1}, ConnectError, "closed the connection"),
        ({"drop_every": 5}, ConnectError, "closed the connection"),
        ({"malformed_rate": 1.0, "malformed_kind": "truncated"}, DecodeError, "malformed"),
        ({"malformed_rate": 1.0, "malformed_kind": "garbage"}, DecodeError, "variant index"),
    ],
)
def test_fault_kinds_are_transient(options: dict[str, object], error: type, text: str) -> None:
    async def main() -> None:
        async with ship_server(**FAST, **options) as server:
            with pytest.raises(error, match=text) as info:
                async for _ in source(server.url, 100).stream(1):
                    pass
            assert not info.value.fatal

    run(main())


def test_connection_refused_is_transient() -> None:
    async def main() -> None:
        async with ship_server(**FAST) as server:
            url = server.url
        with pytest.raises(ConnectError, match="refused") as info:
            async for _ in source(url, 10).stream(1):
                pass
        assert not info.value.fatal

    run(main())


def test_stalled_node_leaves_the_stream_silent() -> None:
    # The stall watchdog is the runner's: the source just waits, the connection stays open.
    async def main() -> None:
        async with ship_server(**FAST, stall_after=20) as server:
            progress: list[int] = []

            async def consume() -> None:
                async for batch in source(server.url, 100).stream(1):
                    progress.extend(e.block_num for e in batch if isinstance(e, Progress))

            task = asyncio.create_task(consume())
            await server.wait_for(lambda: server.stats.stalled_connections == 1)
            await server.wait_for(lambda: progress[-1:] == [20])
            assert not task.done() and server.stats.open_connections == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(main())


def test_reversible_mode_sends_have_positions_on_reconnect() -> None:
    async def main() -> None:
        async with ship_server(**FAST) as server:
            src = ShipSource(server.url, Selection(irreversible_only=False), stop_block=50)
            async for _ in src.stream(1):
                pass
            assert not server.stats.last_blocks_request.irreversible_only
            stream = src.stream(51)
            await anext(stream)  # Listening: the request is sent
            await server.wait_for(lambda: server.stats.blocks_requests == 2)
            await stream.aclose()
            positions = server.stats.last_blocks_request.have_positions
            assert [p.block_num for p in positions][-3:] == [48, 49, 50]
            assert positions[-1].block_id == server.block_id(50)

    run(main())


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [("127.0.0.1:8080", "ws://127.0.0.1:8080"), (" ws://node:8080 ", "ws://node:8080")],
)
def test_normalize_endpoint(endpoint: str, url: str) -> None:
    assert ShipSource.normalize_endpoint(endpoint) == url
    assert ShipSource.create(endpoint, Selection()).endpoint == url


@pytest.mark.parametrize("endpoint", ["wss://node:8080", "http://node:8080", "ws://node"])
def test_normalize_endpoint_refuses(endpoint: str) -> None:
    with pytest.raises(UsageError, match="ws://"):
        ShipSource.normalize_endpoint(endpoint)


@pytest.mark.slow
def test_stream_events_alone_equal_truth() -> None:
    # Without the engine (whose duplicate net would hide rows of failed transactions, whose
    # global_sequence is 0): the source itself yields exactly the truth, then Progress per block.
    async def main() -> None:
        async with ship_server(**FAST, transfers_per_block=0.5) as server:
            events = [e async for b in source(server.url, 1500).stream(1) for e in b]
            rows = [e.transfer for e in events if isinstance(e, ActionReceived)]
            assert rows == list(server.chain.truth(1, 1500))
            progress = [e for e in events if isinstance(e, Progress)]
            numbers = [e.block_num for e in progress]
            assert numbers == sorted(set(numbers)) and numbers[-1] == 1500
            # Each names its block by the node's id (the cursor keeps it).
            assert all(e.block_id == server.block_id(e.block_num).hex() for e in progress)

    run(main())


@pytest.mark.slow
@pytest.mark.parametrize("depth", [1, 3])
def test_a_fork_reaches_the_engine_then_the_forked_out_block_is_fatal(depth: int) -> None:
    # The collector follows the head: the fork window 11-depth..10 comes first in its forked-out
    # variant; at head 11 the node goes back. The engine sees the rewind (a progress behind its
    # safe point: a protocol fault, no lost connection) and restarts at S = 11; the node
    # answers that stream's have_positions from the first forked-out block: fatal, named.
    async def main() -> None:
        options = {"head": 5, "block_interval": 0.05, "lib_lag": 3, "fork_every": 10,
                   "fork_depth": depth, "transfers_per_block": 0.2}  # fmt: skip
        async with ship_server(**options) as server:
            src = ShipSource(server.url, Selection(irreversible_only=False), stop_block=60)
            out = await drive(src, start=1, stop_block=60)
            first = 11 - depth
            fatal = out["fatal"]
            assert isinstance(fatal, ProtocolError) and fatal.fatal
            assert f"block {first}, already committed in reversible mode" in str(fatal)
            assert "restarting at block 11, the node answered from block" in str(fatal)
            assert out["lost"] == [] and out["streams"] == 2
            assert server.stats.rewinds == 1
            positions = server.stats.last_blocks_request.have_positions
            assert positions[-1] == codec.BlockPosition(10, server.block_id(10, 10))
            truth = list(server.chain.truth(1, 60))
            assert [r for r in out["rows"] if r.block_num < first] == [
                t for t in truth if t.block_num < first
            ]

    run(main())


def test_a_prev_block_that_contradicts_the_delivered_block_is_fatal() -> None:
    src = ShipSource("ws://node:8080", Selection(irreversible_only=False))
    src._positions[9] = bytes.fromhex("09" * 32)

    def block(num: int, prev_id: str) -> BlockEvents:
        return BlockEvents(num, "aa" * 32, (num - 1, prev_id), 20, 10, None, [])

    assert not src._check_reversible(block(10, "09" * 32), 10, 5)
    with pytest.raises(ProtocolError, match="block 9, already committed") as info:
        src._check_reversible(block(10, "0f" * 32), 10, 5)
    assert info.value.fatal and "Recollect from before block 9" in str(info.value)
    # A number jumping forward is the skip error, fatal on a stream's first block.
    with pytest.raises(ProtocolError, match="blocks would be skipped") as info:
        src._check_reversible(block(12, "0b" * 32), 10, 10)
    assert info.value.fatal
