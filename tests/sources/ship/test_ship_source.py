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
from karma_analytics.sources.ship import ShipSource
from karma_analytics.sources.ship.codec import DecodeError


def source(url: str, stop: int | None, **kwargs: object) -> ShipSource:
    return ShipSource(url, Selection(), stop_block=stop, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"action_trace_v0": True, "split_frames": True, "frame_chunk": 700},
        {"transfers_per_block": 3.0},
    ],
    ids=["v1", "v0-split-frames", "dense"],
)
def test_stream_equals_truth(options: dict[str, object]) -> None:
    async def main() -> None:
        async with ship_server(**FAST, **options) as server:
            src = source(server.url, 4000, full_scan=True)
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
            events = []
            async for batch in src.stream(10):
                events.extend(batch)
            progress = [e.block_num for e in events if isinstance(e, Progress)]
            assert progress == list(range(10, 31))
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
            await server.wait_for(lambda: len(progress) == 20)
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


def test_stream_events_alone_equal_truth() -> None:
    # Without the engine (whose duplicate net would hide rows of failed transactions, whose
    # global_sequence is 0): the source itself yields exactly the truth, then Progress per block.
    async def main() -> None:
        async with ship_server(**FAST, transfers_per_block=4.0) as server:
            events = [e async for b in source(server.url, 1500).stream(1) for e in b]
            rows = [e.transfer for e in events if isinstance(e, ActionReceived)]
            assert rows == list(server.chain.truth(1, 1500))
            assert [e.block_num for e in events if isinstance(e, Progress)] == list(range(1, 1501))

    run(main())
