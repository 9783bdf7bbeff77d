"""DfuseSource + the real Engine against the project's devnet server (karma_analytics.devnet).

Each test streams a block range through faults and compares what the engine commits with the
devnet chain's truth: every transfer exactly once.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from dfuse_fake import drive_engine, failover, run
from websockets.asyncio.client import connect

from karma_analytics.devnet.server import devnet_server
from karma_analytics.engine import Engine
from karma_analytics.exceptions import ServerError
from karma_analytics.sources.dfuse import DfuseSource, FrameDecoder
from karma_analytics.sources.dfuse import decode as dfuse

FAST = {"head": 250_000, "block_interval": 0.0, "lib_lag": 2, "ping_interval": 0.5}
KEY = "server_devnet0123456789abcdef0123"


def quick_backoff() -> Any:
    return iter([0.001] * 10_000)


async def collect(source: Any, stop_block: int, next_block: int = 1) -> dict[str, Any]:
    """The collector's loop without the store (see ``dfuse_fake.drive_engine``)."""
    engine = Engine(
        next_block=next_block, flush_rows=2000, flush_seconds=0.0, stop_block=stop_block
    )
    return await drive_engine(source, engine)


@pytest.mark.slow
def test_exactly_once_through_devnet_faults() -> None:
    async def main() -> None:
        options = {**FAST, "drop_every": 700, "refuse_handshakes": 2, "accept_then_drop": 2}
        async with devnet_server(**options, fault_seed=3) as server:
            source = failover(server.url, start_block=1, backoff=quick_backoff)
            out = await collect(source, stop_block=20_000)
            assert out["rows"] == list(server.chain.truth(1, 20_000))
            lost = out["lost"]
            assert sum("HTTP 503" in r for r in lost) == 2
            assert sum("1006" in r for r in lost) >= 3
            assert server.stats.dropped_connections >= 3

    run(main(), timeout=120)


@pytest.mark.slow
def test_permessage_deflate_with_drops_is_exactly_once() -> None:
    # Compressed frames are decompressed by websockets before BatchConnection sees them.
    async def main() -> None:
        async with devnet_server(**FAST, drop_every=900, fault_seed=5) as server:
            probe = DfuseSource(server.url, compression="deflate")
            stream = probe.stream(1)
            async for _ in stream:
                assert probe._ws is not None
                assert [e.name for e in probe._ws.protocol.extensions] == ["permessage-deflate"]
                break
            await stream.aclose()
            await probe.aclose()
            source = failover(
                server.url, start_block=1, backoff=quick_backoff, compression="deflate"
            )
            out = await collect(source, stop_block=12_000)
            assert out["rows"] == list(server.chain.truth(1, 12_000))
            assert out["lost"]  # the drops happened and were recovered from

    run(main(), timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("code", [1000, 1009])
def test_devnet_close_codes(code: int) -> None:
    async def main() -> None:
        async with devnet_server(**FAST, drop_every=900, close_code=code) as server:
            source = failover(server.url, start_block=1, backoff=quick_backoff)
            out = await collect(source, stop_block=8_000)
            assert out["rows"] == list(server.chain.truth(1, 8_000))
            assert out["lost"] and all(f"code {code}" in r for r in out["lost"])

    run(main(), timeout=120)


@pytest.mark.slow
def test_devnet_malformed_json_frames_reconnect_without_loss() -> None:
    async def main() -> None:
        options = {**FAST, "malformed_rate": 0.002, "malformed_kind": "json"}
        async with devnet_server(**options) as server:
            source = failover(server.url, start_block=1, backoff=quick_backoff)
            out = await collect(source, stop_block=20_000)
            assert out["rows"] == list(server.chain.truth(1, 20_000))
            assert server.stats.malformed_sent >= 1
            assert all("not JSON" in r for r in out["lost"]) and out["lost"]

    run(main(), timeout=120)


def test_devnet_malformed_fields_become_rejects() -> None:
    async def main() -> None:
        options = {**FAST, "malformed_rate": 0.01, "malformed_kind": "field"}
        async with devnet_server(**options) as server:
            source = failover(server.url, start_block=1, backoff=quick_backoff)
            out = await collect(source, stop_block=5_000)
            assert not out["lost"]  # a bad field is a reject, not a connection fault
            rejects = out["rejects"]
            assert rejects and all(r.block_num <= 5_000 for r in rejects)
            reasons = {r.reason.split(":")[0] for r in rejects}
            assert reasons <= {
                "trace.receipt.global_sequence",
                "act.data.quantity",
                "act.data.from",
            }
            assert all(json.loads(r.raw)["block_num"] == r.block_num for r in rejects)
            truth = list(server.chain.truth(1, 5_000))
            assert set(out["rows"]) <= set(truth)
            # The devnet sends the broken trace instead of the genuine one: every truth row is
            # committed or rejected, exactly once.
            kept = [(t.trx_id, t.action_idx) for t in out["rows"]]
            kept += [(r.trx_id, r.action_idx) for r in rejects]
            assert sorted(kept) == sorted((t.trx_id, t.action_idx) for t in truth)

    run(main(), timeout=120)


@pytest.mark.slow
def test_devnet_stall_is_restarted_by_the_watchdog() -> None:
    async def main() -> None:
        async with devnet_server(**FAST, stall_after=400) as server:
            source = failover(server.url, start_block=1, backoff=quick_backoff, stall_seconds=0.6)
            out = await collect(source, stop_block=5_000)
            assert out["rows"] == list(server.chain.truth(1, 5_000))
            assert out["lost"] and all("no data for" in r for r in out["lost"])

    run(main(), timeout=120)


def test_devnet_auth_and_history_limit() -> None:
    async def main() -> None:
        async with devnet_server(**FAST, api_key=KEY, history_limit=3600) as server:
            source = failover(
                server.url,
                api_key=KEY,
                auth_url=server.auth_url,
                start_block=-100,
                backoff=quick_backoff,
            )
            head = server.head
            out = await collect(source, stop_block=head - 10, next_block=None)
            assert out["rows"] == list(server.chain.truth(head - 100, head - 10))
            assert server.stats.tokens_issued == 1
            source = failover(
                server.url,
                api_key=KEY,
                auth_url=server.auth_url,
                start_block=1,
                backoff=quick_backoff,
            )
            with pytest.raises(ServerError) as info:
                await collect(source, stop_block=10)
            assert info.value.code == "auth_invalid_streaming_start_block_error"
            assert info.value.fatal and KEY not in str(info.value)

    run(main(), timeout=120)


def test_fast_path_covers_devnet_frames() -> None:
    """The msgspec path must take real frames (else the speed-up silently disappears)."""

    async def main() -> list[bytes]:
        request = DfuseSource("ws://127.0.0.1:1").request(1)
        async with devnet_server(**FAST) as server, connect(server.url) as ws:
            await ws.send(json.dumps(request))
            frames = []
            while len(frames) < 2000:
                frames.append(await ws.recv(decode=False))
            ws.transport.abort()  # no close handshake behind the data the server queued
            return frames

    frames = run(main())
    decoder = FrameDecoder("karma-therealkarma-transfer", "therealkarma", "transfer")
    reference = FrameDecoder("karma-therealkarma-transfer", "therealkarma", "transfer", fast=False)
    slow = 0
    for frame in frames[1:]:  # after listening
        message = dfuse._FAST_DECODER.decode(frame)
        slow += decoder._fast(message) is dfuse._SLOW
        assert decoder.decode(frame) == reference.decode(frame)
    assert slow == 0
