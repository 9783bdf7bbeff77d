"""Issue 9 end to end: the real CLI collecting from the devnet's Hyperion API.

A Hyperion devnet and a dfuse devnet with the same seed serve the same chain (same blocks,
same chain id), so a dataset may move between them and ``truth`` still decides.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from collect_helpers import (
    RANGE_LAST,
    committed_rows,
    crash_loop,
    next_block,
    range_args,
    run_cli,
)

from karma_analytics.collect import EXIT_USAGE
from karma_analytics.devnet.hyperion import HyperionThread

FAST = ("--flush-rows", "200", "--flush-seconds", "0.2", "--stall-seconds", "5")


@pytest.fixture
def hyperion_factory():
    started: list[HyperionThread] = []

    def start(**options):
        options = {"head": 3_300, "block_interval": 0.0, "lib_lag": 2, "cache_life": 0, **options}
        server = HyperionThread(**options).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def hyperion_args(url, out, first, last, *extra):
    return ("--source", "hyperion", *range_args(url, out, first, last), *FAST, *extra)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.3", "4.0.7"])
def test_collects_exactly_the_truth(hyperion_factory, tmp_path, version) -> None:
    server = hyperion_factory(
        hyperion_version=version, error_rate=0.1, short_page_rate=0.3, fault_seed=3
    )
    out = tmp_path / "transfers"
    done = run_cli(*hyperion_args(server.url, out, 1, RANGE_LAST, "--workers", "4"))
    assert done.returncode == 0, done.stderr
    assert committed_rows(out) == list(server.chain.truth(1, RANGE_LAST))
    assert server.stats.errors_injected > 0 and server.stats.short_pages > 0
    body = json.loads((out / "_cursor.json").read_text())
    assert body["sources"][0]["source"] == "hyperion"


@pytest.mark.slow
def test_a_dfuse_dataset_continues_through_hyperion_and_back(
    net_factory, hyperion_factory, tmp_path
) -> None:
    dfuse = net_factory()
    hyperion = hyperion_factory()
    out = tmp_path / "transfers"
    assert run_cli(*range_args(dfuse.url, out, 1, 1_000), *FAST).returncode == 0
    done = run_cli("--source", "hyperion", "--endpoint", hyperion.url, "--out", str(out),
                   "--stop-block", "2000", *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    back = run_cli(*range_args(dfuse.url, out, 1, RANGE_LAST), *FAST)
    assert back.returncode == 0, back.stderr
    assert committed_rows(out) == list(dfuse.chain.truth(1, RANGE_LAST))
    kinds = [s["source"] for s in json.loads((out / "_cursor.json").read_text())["sources"]]
    assert kinds == ["dfuse", "hyperion", "dfuse"]


@pytest.mark.slow
def test_since_and_until_resolve_to_exact_blocks_with_missed_slots(
    hyperion_factory, tmp_path
) -> None:
    server = hyperion_factory(missed_slot_rate=0.3)
    chain = server.chain
    # A window of wall-clock time inside the chain: its blocks are not 0.5 s apart.
    first_ms, last_ms = chain.block_time_ms(400), chain.block_time_ms(1_400)
    since = dt.datetime.fromtimestamp((first_ms - 1) / 1000, dt.UTC).isoformat()
    until = dt.datetime.fromtimestamp((last_ms + 1) / 1000, dt.UTC).isoformat()
    out = tmp_path / "transfers"
    done = run_cli("--source", "hyperion", "--endpoint", server.url, "--out", str(out),
                   "--since", since, "--until", until, *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "starting at block 400" in done.stderr and "stopping after block 1400" in done.stderr
    assert committed_rows(out) == list(chain.truth(400, 1_400))
    assert next_block(out) == 1_401
    extra = json.loads((out / "_cursor.json").read_text())["extra"]
    assert extra["since"]["start_block"] == 400 and extra["until"]["stop_block"] == 1_400
    clash = run_cli("--source", "hyperion", "--endpoint", server.url, "--out", str(out),
                    "--until", until, "--stop-block", "9")  # fmt: skip
    assert clash.returncode == EXIT_USAGE and "--until or --stop-block" in clash.stderr


@pytest.mark.slow
def test_several_endpoints_share_the_backfill(hyperion_factory, tmp_path) -> None:
    a, b = hyperion_factory(), hyperion_factory()
    out = tmp_path / "transfers"
    done = run_cli(*hyperion_args(a.url, out, 1, RANGE_LAST, "--endpoint", b.url, "--workers", "4"))
    assert done.returncode == 0, done.stderr
    assert committed_rows(out) == list(a.chain.truth(1, RANGE_LAST))
    # both hosts served pages of the backfill
    route = "get_actions"
    assert a.stats.requests.get(route, 0) > 0 and b.stats.requests.get(route, 0) > 0


@pytest.mark.slow
def test_sigkill_across_backfill_and_live(hyperion_factory, tmp_path) -> None:
    # A head moving at 20 blocks/s from block 1,500, pages of 50 and 100 ms per request with one
    # worker: a run backfills for seconds, then follows the LIB until the head passes the stop
    # block (about 80 s after the start), so the kills land in both phases, never after a run
    # could finish by itself.
    server = hyperion_factory(head=1_500, block_interval=0.05, latency_ms=100, max_limit=50)
    last = 3_000
    truth = list(server.chain.truth(1, last))
    stats = crash_loop(
        server.url,
        tmp_path / "transfers",
        truth,
        stop_block=last,
        kills=20,
        seed=909,
        min_delay=1.0,  # an interpreter with aiohttp takes about a second to its first request
        max_delay=3.5,
        extra_args=(
            "--source", "hyperion", "--workers", "1", "--flush-rows", "50",
            "--flush-seconds", "0.1",
        ),
    )  # fmt: skip
    assert stats["kills"] >= 20
    assert stats["kills_while_committing"] >= 5, stats
