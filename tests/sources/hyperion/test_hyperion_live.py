"""HyperionSource past the backfill, against the devnet's real Socket.IO stream over loopback.

Every collection here starts below the head and stops beyond it, so the source must go live;
each ends with exactly ``chain.truth``, never yields a block above the LIB of that moment
(checked event by event), and the fault it is about is shown to have happened (server and
source counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hyperion_helpers import LibWatch, drive, hyperion_truth, run, source_for

from karma_analytics.devnet.hyperion import HyperionServer
from karma_analytics.sources.hyperion import HyperionSource

# A moving chain: 20 blocks a second, LIB 2 behind the head, enough transfers that the stream's
# history replay of [next, head] spans several (tiny) batches.
MARGIN = 10  # blocks below the index tip (the devnet's index tip is its head)
LIVE = {
    "head": 20_000,
    "block_interval": 0.05,
    "lib_lag": 2,
    "transfers_per_block": 3.0,
    "stream_batch": 2,
    "stream_batch_pause": 0.0,
}


@dataclass
class Live:
    out: dict[str, Any]
    truth: list[Any]
    server: HyperionServer
    source: HyperionSource
    watch: LibWatch
    head0: int  # the head when the collection began
    stop: int


async def follow(
    server_options: dict[str, Any],
    *,
    before: int = 60,
    after: int = 30,
    stream_mode: str | None = None,
    during: Callable[[HyperionServer, HyperionSource], Awaitable[None]] | None = None,
    **extra: Any,
) -> Live:
    """Collect ``[head - before, head + after]`` while the chain moves (and ``during`` runs
    beside it)."""
    server = HyperionServer(**{**LIVE, **server_options})
    await server.start()
    try:
        if stream_mode is not None:
            server.stream.mode = stream_mode
        watch = LibWatch(server)
        head0 = server.head
        first, stop = head0 - before, head0 + after
        # A small index margin keeps these runs short; the default is tested on its own.
        extra.setdefault("margin_blocks", MARGIN)
        source = watch.watch(source_for(server.url, stop, extra=extra))
        side = asyncio.create_task(during(server, source)) if during is not None else None
        try:
            out = await drive(source, first, stop)
        finally:
            if side is not None:
                side.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await side
        return Live(out, hyperion_truth(server.chain, first, stop), server, source, watch,
                    head0, stop)  # fmt: skip
    finally:
        await server.stop()


def assert_exact_and_irreversible(live: Live) -> None:
    assert live.out["rows"] == live.truth and not live.out["rejects"]
    assert live.truth, "the range holds transfers"
    assert not live.watch.above_lib(), "a block above the LIB was yielded"
    # It really went live: Progress past the first safe tip, up to the stop block.
    assert live.watch.progress_after(live.head0 - live.source.margin_blocks)
    assert max(b for b, _ in live.watch.progress_after(0)) == live.stop


def assert_cross_checked(live: Live) -> None:
    """The stream's documents (history and live, both shapes) decoded to the very rows REST
    then committed."""
    stats = live.source.live_stats
    assert stats.matched > 0 and stats.differs == 0 and stats.stream_only == 0, stats


def lib_delays(live: Live) -> list[float]:
    """Per LIB advance of the live phase: seconds from the server announcing it to the first
    Progress covering the block it makes safe (the index tip, the devnet's head, minus the
    margin: LIB + lib_lag - margin)."""
    margin = live.source.margin_blocks
    progress = live.watch.progress_after(live.head0 - margin)
    delays = []
    for lib, announced in sorted(live.watch.libs.items()):
        safe = min(lib, lib + LIVE["lib_lag"] - margin)
        if progress and progress[0][0] <= safe <= live.stop:
            covered = next(t for b, t in progress if b >= safe)
            delays.append(covered - announced)
    return delays


SLOW = pytest.mark.slow  # the other variants cover the same code: run by the full suite


@pytest.mark.parametrize(
    "version", ["3.3", pytest.param("3.5", marks=SLOW), pytest.param("4.0.5", marks=SLOW), "4.0.7"]
)
@pytest.mark.slow
def test_live_stream_gives_the_truth_and_never_passes_the_lib(version: str) -> None:
    live = run(follow({"hyperion_version": version}), 30)
    assert_exact_and_irreversible(live)
    stats, server = live.source.live_stats, live.server.stats
    assert stats.connected == 1 and stats.requests_ok >= 1 and stats.polls == 0, stats
    assert stats.lib_updates > 0 and stats.lib_reads > 0
    assert stats.live_docs > 0 and stats.history_docs > 0
    assert_cross_checked(live)
    assert server.stream_history_batches >= 2  # the replay of [next, head] ran
    if version.startswith("4."):
        # Each batch waited for an ack; only {"status": true} lets the replay go on to the
        # next batch and to history_end (§3.5).
        assert server.stream_history_stopped == 0
        assert stats.history_ends >= 1
    else:
        assert stats.history_ends == 0  # 3.x sends none


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.3", "4.0.7"])
def test_a_request_never_acked_still_follows_lib_updates(version: str) -> None:
    live = run(follow({"hyperion_version": version, "stream_never_ack": True}), 30)
    assert_exact_and_irreversible(live)
    stats, server = live.source.live_stats, live.server.stats
    assert server.stream_requests >= 1 and server.stream_acks_ok == 0  # the fault
    assert stats.requests_ok == 0
    assert stats.lib_reads > 0 and stats.polls == 0  # lib_update is a broadcast (§3.5)
    # ... and the request's missing ack (10 s to give up) never held a read back.
    delays = lib_delays(live)
    assert delays and max(delays) < 1.0, delays


@pytest.mark.slow
@pytest.mark.parametrize("version", [pytest.param("3.5", marks=SLOW), "4.0.7"])
def test_relay_down_and_restored_give_the_truth(version: str) -> None:
    live = run(
        follow(
            {"hyperion_version": version, "stream_relay_down_after": 6,
             "stream_relay_down_blocks": 6},
            after=50, poll_seconds=0.1,
        ),
        30,
    )  # fmt: skip
    assert_exact_and_irreversible(live)
    stats, server = live.source.live_stats, live.server.stats
    assert server.stream_relay_downs >= 2  # the fault, more than once
    assert stats.relay_down >= 2 and stats.relay_restored >= 1
    # The request is sent again after each relay_restored, from the next block (§3.6).
    assert stats.requests_ok >= 2 and server.stream_acks_ok >= 2
    assert stats.idle_reads > 0  # no lib_update while the relay is down: it looked anyway
    assert stats.differs == 0 and stats.stream_only == 0


@pytest.mark.slow
@pytest.mark.parametrize("version", [pytest.param("3.3", marks=SLOW), "4.0.7"])
def test_the_server_dropping_the_socket_reconnects_and_resends(version: str) -> None:
    async def drop_once(server: HyperionServer, source: HyperionSource) -> None:
        stats = source.live_stats
        while not (stats.lib_reads >= 3 and stats.requests_ok >= 1):
            await asyncio.sleep(0.005)  # polling a counter: no event to wait on here
        for sid in list(server.stream.sockets):
            await server.stream.sio.disconnect(sid)

    live = run(
        follow({"hyperion_version": version}, after=60, during=drop_once, poll_seconds=0.1), 30
    )
    assert_exact_and_irreversible(live)
    stats, server = live.source.live_stats, live.server.stats
    assert stats.disconnects >= 1 and server.stream_connections >= 2  # the fault, then back
    assert stats.connected >= 2 and stats.requests_ok >= 2 and server.stream_acks_ok >= 2
    assert stats.polls == 0 and stats.differs == 0 and stats.stream_only == 0


@pytest.mark.parametrize(
    "seam", [pytest.param(4, marks=SLOW, id="overlap"), pytest.param(-4, id="gap")]
)
@pytest.mark.slow
def test_seam_overlap_or_gap_between_history_and_live(seam: int) -> None:
    live = run(follow({"hyperion_version": "4.0.7", "stream_seam": seam}), 30)
    assert_exact_and_irreversible(live)
    assert_cross_checked(live)


@pytest.mark.parametrize(
    "mode", ["absent", "refuse"], ids=["no-stream-404", "socketio2-standin-400"]
)
@pytest.mark.slow
def test_no_usable_stream_falls_back_to_polling(mode: str) -> None:
    live = run(follow({"hyperion_version": "4.0.7"}, stream_mode=mode, poll_seconds=0.1), 30)
    assert_exact_and_irreversible(live)
    stats, server = live.source.live_stats, live.server
    assert server.stream.refused >= 1 and server.stats.stream_connections == 0  # the fault
    assert stats.connected == 0 and stats.refused.startswith("connect failed"), stats.refused
    assert stats.polls > 0 and stats.lib_reads == 0


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.3", "4.0.7"])
def test_a_lib_update_wakes_the_rest_read_at_once(version: str) -> None:
    # A poll period of 30 s: only lib_update can explain a Progress per LIB step.
    interval = 0.1
    live = run(
        follow({"hyperion_version": version, "block_interval": interval}, after=25,
               poll_seconds=30.0),
        30,
    )  # fmt: skip
    assert_exact_and_irreversible(live)
    delays = lib_delays(live)
    assert len(delays) >= 10, delays
    # The Progress follows the server's LIB advance by one loopback REST round trip: far
    # below the poll period, and below one block.
    assert statistics.median(delays) < interval / 2, delays
    assert max(delays) < 1.0, delays
    assert live.source.live_stats.idle_reads == 0 and live.source.live_stats.polls == 0
