"""HyperionSource against the devnet Hyperion over real sockets: every version and fault flag
gives exactly the chain's truth through the Engine."""

from __future__ import annotations

import pytest
from hyperion_helpers import drive, hyperion_truth, run, source_for

from karma_analytics.devnet.hyperion import HyperionServer
from karma_analytics.exceptions import SourceError

FROZEN = {"head": 250_000, "block_interval": 0.0, "lib_lag": 2}


async def collect(
    server_options: dict, first: int, last: int, *, restarts: int = 0, **settings
) -> tuple:
    server = HyperionServer(**{**FROZEN, **server_options})
    await server.start()
    try:
        source = source_for(server.url, last, **settings)
        out = await drive(source, first, last, max_restarts=restarts)
        return out, hyperion_truth(server.chain, first, last), server, source
    finally:
        await server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.3", "3.5", "4.0.5", "4.0.7"])
def test_every_version_gives_the_truth(version: str) -> None:
    out, truth, server, source = run(collect({"hyperion_version": version}, 1, 12_000))
    assert out["rows"] == truth and not out["rejects"]
    assert source.chain_id == server.chain_id
    assert source.stats.windows > 1
    # Each transfer counted once, whichever path decoded its document (no page was retried).
    assert source.stats.docs.transfers == len(truth) <= source.stats.docs.docs


@pytest.mark.parametrize(
    "faults",
    [
        {"error_rate": 0.1},
        {"short_page_rate": 0.4},
        {"data_bug": "collapse-identical", "hyperion_version": "3.3"},
        {"data_bug": "fragment-notifications", "hyperion_version": "4.0.5"},
        {"index_lag": 8},
        {"latency_ms": 20},
        {"missed_slot_rate": 0.1},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
@pytest.mark.slow
def test_fault_flags_still_give_the_truth(faults: dict) -> None:
    # Small windows: many requests, so every fault happens; a fault of the start-up requests
    # (get_info, health) reaches the runner, played here by drive()'s restarts.
    out, truth, _server, source = run(
        collect(faults, 1, 12_000, workers=4, restarts=20, page_size=100)
    )
    assert out["rows"] == truth and not out["rejects"]
    if "error_rate" in faults:
        assert source.stats.window_retries > 0
    if "short_page_rate" in faults:
        assert source.stats.short_pages > 0
    if faults.get("data_bug") == "fragment-notifications":
        assert source.stats.docs.fragments > 0
    # collapse-identical: the devnet chain has no identical actions in one transaction in
    # 1..12000 (stats.docs.collapsed == 0); the collapse rule is tested in test_docs.py.


def test_the_tip_is_kept_under_lib_and_index_lag() -> None:
    # History up to the frozen head: what the source emits stops at LIB - margin.
    async def main() -> None:
        server = HyperionServer(**{**FROZEN, "index_lag": 8, "head": 20_000})
        await server.start()
        try:
            source = source_for(server.url, None)
            lib, tip = await source.safe_tip(source._hosts()[0])
            # the margin is kept from the index tip (the devnet's head), not from the LIB
            assert lib == server.lib and tip == min(lib, server.head - source.margin_blocks)
            await source.aclose()
        finally:
            await server.stop()

    run(main())


@pytest.mark.slow
@pytest.mark.parametrize(("margin", "exact"), [(None, True), (10, False)])
def test_an_index_lagging_within_the_margin_loses_nothing(margin, exact) -> None:
    # Docs of the last 20 blocks under the index tip become searchable late and out of order
    # (§1.6). The default margin (60 blocks) waits for them; a margin of 10 does not, and the
    # run provably misses rows — so the margin, not luck, is what keeps the dataset whole.
    async def main() -> None:
        server = HyperionServer(
            **{**FROZEN, "head": 4_000, "block_interval": 0.02, "index_lag": 20,
               "transfers_per_block": 3.0, "cache_life": 0}
        )  # fmt: skip
        await server.start()
        try:
            head0 = server.head
            first, stop = head0 - 100, head0 + 80
            extra = {} if margin is None else {"margin_blocks": margin}
            source = source_for(server.url, stop, extra={**extra, "live": "poll"})
            out = await drive(source, first, stop)
            truth = hyperion_truth(server.chain, first, stop)
            if exact:
                assert out["rows"] == truth
            else:
                assert set(out["rows"]) < set(truth)
        finally:
            await server.stop()

    run(main(), timeout=120)


@pytest.mark.slow
def test_blocks_with_more_actions_than_a_page_are_paged_exactly_once() -> None:
    # Airdrop blocks (25 transfers per transaction) with pages of 4 documents.
    out, truth, _server, source = run(collect({"max_limit": 4}, 1, 1500, workers=2))
    assert out["rows"] == truth
    per_block: dict[int, int] = {}
    for row in truth:
        per_block[row.block_num] = per_block.get(row.block_num, 0) + 1
    assert max(per_block.values()) > 4
    assert source.stats.pages > len(truth) / 4


def test_page_size_comes_from_health_or_the_error_message() -> None:
    # 3.3.9 has no limits in /v2/health: the first page asks for 1000, the server answers
    # "limit too big, maximum: 50" and the source settles on 50.
    out, truth, _server, source = run(
        collect({"hyperion_version": "3.3", "max_limit": 50}, 1, 3000, workers=2)
    )
    assert out["rows"] == truth
    assert source.stats.pages >= len(truth) / 50


@pytest.mark.slow
def test_429_retry_after_is_respected() -> None:
    out, truth, server, source = run(
        collect(
            {"rate_limit": 10, "rate_window": 0.3}, 1, 6_000, workers=4, page_size=100,
            extra={"window_pages": 1},
            restarts=20,
        ),
        timeout=90,
    )  # fmt: skip
    assert out["rows"] == truth
    assert server.stats.rate_limited > 0
    assert source.stats.window_retries > 0


def test_another_chain_id_is_refused() -> None:
    async def main() -> None:
        server = HyperionServer(**FROZEN)
        await server.start()
        try:
            source = source_for(server.url, 100, extra={"chain_id": "ab" * 32})
            with pytest.raises(SourceError) as info:
                async for _ in source.stream(1):
                    pass
            assert info.value.fatal and "not the expected" in str(info.value)
            await source.aclose()
        finally:
            await server.stop()

    run(main())


@pytest.mark.slow
def test_parallel_windows_are_emitted_in_order_with_a_bounded_buffer() -> None:
    out, truth, _server, source = run(
        collect(
            {"latency_ms": 5},
            1,
            30_000,
            workers=8,
            page_size=100,
            extra={"window_pages": 1, "capacity": 3},
        )
    )
    assert out["rows"] == truth
    assert source.stats.peak_buffered <= 3
    assert source.stats.windows > 10


@pytest.mark.slow
@pytest.mark.parametrize(
    "server_options",
    [{}, {"data_bug": "collapse-identical", "hyperion_version": "3.3", "error_rate": 0.05}],
    ids=["plain", "collapsed+errors"],
)
def test_heads_longer_than_planned_are_split_and_still_give_the_truth(
    server_options: dict,
) -> None:
    # The devnet's airdrop burst (blocks 20,000..20,599, ~4x denser) follows a calm stretch:
    # windows planned at the calm density hold many more pages than planned, and idle workers
    # take shares of them. A 20 ms latency lets the others go idle while the head is fetched.
    from karma_analytics.devnet.chain import _BURST_PERIOD

    first = _BURST_PERIOD - 1_500
    out, truth, _server, source = run(
        collect(
            {"latency_ms": 20, "transfers_per_block": 6.0, **server_options},
            first,
            _BURST_PERIOD + 900,
            workers=6,
            page_size=100,
            restarts=20,
        )
    )
    assert out["rows"] == truth and len(truth) > 5_000
    assert source.stats.splits > 0


@pytest.mark.slow
def test_windows_move_off_a_failing_host_and_a_foreign_chain_is_dropped() -> None:
    async def main() -> None:
        good = HyperionServer(**FROZEN)
        bad = HyperionServer(**FROZEN, error_rate=1.0)
        foreign = HyperionServer(**FROZEN, chain_id="cd" * 32)
        for s in (good, bad, foreign):
            await s.start()
        try:
            source = source_for(f"{bad.url},{good.url},{foreign.url}", 8000, workers=4)
            assert len(source.mirrors) == 2
            out = await drive(source, 1, 8000)
            assert out["rows"] == hyperion_truth(good.chain, 1, 8000)
            assert source.stats.window_retries > 0
        finally:
            for s in (good, bad, foreign):
                await s.stop()

    run(main())


@pytest.mark.slow
def test_live_polling_follows_the_lib_and_never_passes_it() -> None:
    async def main() -> None:
        server = HyperionServer(head=5_000, block_interval=0.01, lib_lag=3)
        await server.start()
        try:
            source = source_for(server.url, None, extra={"poll_seconds": 0.05, "live": "poll"})
            stop = server.head + 150
            source.stop_block = stop
            out = await drive(source, 4_000, stop)
            assert out["rows"] == hyperion_truth(server.chain, 4_000, stop)
            assert server.lib >= stop  # nothing was committed before it was irreversible
            assert source.live_stats.polls > 0
        finally:
            await server.stop()

    run(main())


def test_a_failed_page_resumes_at_its_cursor_not_the_whole_window() -> None:
    # Issue 9: 5xx and non-JSON bodies "retry the same cursor". Pages of 10 over a window of
    # ~100 transfers with half the requests failing: each successful request is a new page.
    from karma_analytics.sources.hyperion.backfill import Window, WindowProgress, fetch_window

    async def main() -> None:
        server = HyperionServer(**{**FROZEN, "error_rate": 0.5, "fault_seed": 11, "cache_life": 0})
        await server.start()
        try:
            source = source_for(server.url, None, page_size=10)
            host = source._hosts()[0]
            await host.get_info()
            window = Window(0, 1, 400)
            progress = WindowProgress(window)
            failures = 0
            while True:
                try:
                    await fetch_window(host, window, "therealkarma", "transfer", progress=progress)
                    break
                except SourceError:
                    failures += 1
            assert progress.done
            events, docs = progress.take(None), progress.docs_seen
            rows = [e.transfer for e in events]
            assert rows == hyperion_truth(server.chain, 1, 400) and len(rows) > 50
            ok = server.stats.responses.get(200, 0) - 1  # minus get_info
            pages = -(-docs // 10) + 1  # every page once, and the closing empty one
            assert failures > 5 and ok == pages
            await source.aclose()
        finally:
            await server.stop()

    run(main(), timeout=120)
