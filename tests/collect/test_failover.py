"""Issue 8: a dataset belongs to a chain; endpoints fail over; dead hosts give up in time.

Every test runs the real CLI against real devnet servers on loopback. Two devnets with the
same seed serve the same chain (same blocks, same chain id), like two providers of one chain.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import time

import pytest
from collect_helpers import (
    RANGE_LAST,
    child_env,
    cli_args,
    committed_rows,
    next_block,
    range_args,
    run_cli,
    wait_for,
)

from karma_analytics.collect import EXIT_DATASET, EXIT_ERROR, EXIT_USAGE
from karma_analytics.devnet.server import DEVNET_CHAIN_ID

FAST = ("--flush-rows", "40", "--flush-seconds", "0.2", "--stall-seconds", "3")
OTHER_CHAIN = "c0ffee" + "0" * 58


def sidecar(out) -> dict:
    return json.loads((out / "_cursor.json").read_text())


def free_port() -> int:
    with socket.socket() as probe:  # nothing listens on it once closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_second_provider_of_the_same_chain_continues_exactly(net_factory, tmp_path) -> None:
    first, second = net_factory(), net_factory()
    out = tmp_path / "transfers"
    middle = RANGE_LAST // 2
    done = run_cli(*range_args(first.url, out, 1, middle), *FAST)
    assert done.returncode == 0, done.stderr
    again = run_cli(
        "--endpoint", second.url, "--out", str(out), "--stop-block", str(RANGE_LAST), *FAST
    )
    assert again.returncode == 0, again.stderr
    assert committed_rows(out) == list(first.chain.truth(1, RANGE_LAST))
    body = sidecar(out)
    assert body["chain_id"] == DEVNET_CHAIN_ID
    spans = [(s["endpoint"], s["first_block"], s["last_block"]) for s in body["sources"]]
    assert spans[0][0] == first.url and spans[-1][0] == second.url
    assert spans[0][1] == 1 and spans[-1][2] == RANGE_LAST
    assert all(a[2] + 1 == b[1] for a, b in itertools.pairwise(spans))
    assert "continuing the dataset through dfuse" in again.stderr


@pytest.mark.slow
def test_another_chain_is_refused_with_both_ids(net_factory, tmp_path) -> None:
    ours = net_factory()
    theirs = net_factory(chain_id=OTHER_CHAIN)
    out = tmp_path / "transfers"
    assert run_cli(*range_args(ours.url, out, 1, 500), *FAST).returncode == 0
    before = committed_rows(out)
    refused = run_cli("--endpoint", theirs.url, "--out", str(out), "--stop-block", "900", *FAST)
    assert refused.returncode == EXIT_DATASET, refused.stderr
    assert DEVNET_CHAIN_ID in refused.stderr and OTHER_CHAIN in refused.stderr
    assert committed_rows(out) == before and next_block(out) == 501
    # --chain-id that contradicts the dataset is refused the same way, before connecting.
    stated = run_cli(*range_args(ours.url, out, 1, 900), "--chain-id", OTHER_CHAIN, *FAST)
    assert stated.returncode == EXIT_DATASET and OTHER_CHAIN in stated.stderr


@pytest.mark.slow
def test_an_endpoint_of_another_chain_is_dropped_among_several(net_factory, tmp_path) -> None:
    ours = net_factory()
    theirs = net_factory(chain_id=OTHER_CHAIN)
    out = tmp_path / "transfers"
    done = run_cli(
        *range_args(theirs.url, out, 1, 800),
        "--endpoint", ours.url, "--chain-id", DEVNET_CHAIN_ID, *FAST,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        f"{theirs.url} serves chain {OTHER_CHAIN}" in done.stderr and "dropping it" in done.stderr
    )
    assert committed_rows(out) == list(ours.chain.truth(1, 800))
    assert {s["endpoint"] for s in sidecar(out)["sources"]} == {ours.url}


@pytest.mark.slow
def test_dead_endpoints_give_up_in_the_time_set_naming_each(tmp_path) -> None:
    dead = [f"ws://127.0.0.1:{free_port()}/v1/stream" for _ in range(2)]
    began = time.monotonic()
    done = run_cli(
        "--endpoint", dead[0], "--endpoint", dead[1], "--out", str(tmp_path / "d"),
        "--give-up-after", "2", *FAST, timeout=60,
    )  # fmt: skip
    took = time.monotonic() - began
    assert done.returncode == EXIT_ERROR, done.stderr
    assert "gave up after 2 s without one successful subscription" in done.stderr
    for url in dead:
        assert f"{url}: cannot connect to {url}: connection refused" in done.stderr
    assert took < 15  # 2 s of retries plus the interpreter's start and exit
    # one log line per attempt, not three
    attempts = [line for line in done.stderr.splitlines() if "(attempt " in line]
    assert attempts and all("connection refused" in line for line in attempts)


@pytest.mark.slow
def test_one_of_two_endpoints_dies_mid_run_and_nothing_is_lost(net_factory, tmp_path) -> None:
    # The first provider follows a moving head (the run takes a while), the second has every
    # block already: when the first dies, the run goes on through the second.
    dying = net_factory(head=300, block_interval=0.005)
    spare = net_factory()
    out = tmp_path / "transfers"
    proc = subprocess.Popen(
        cli_args(*range_args(dying.url, out, 1, RANGE_LAST), "--endpoint", spare.url, *FAST),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (next_block(out) or 0) > 600, timeout=60, what="a first commit")
        dying.stop()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert committed_rows(out) == list(spare.chain.truth(1, RANGE_LAST))
    assert [s["endpoint"] for s in sidecar(out)["sources"]][-1] == spare.url
    assert "collection complete" in stdout


@pytest.mark.slow
def test_quiet_prints_warnings_and_the_summary_only(net, tmp_path) -> None:
    done = run_cli(*range_args(net.url, tmp_path / "d", 1, 400), "--quiet", *FAST)
    assert done.returncode == 0, done.stderr
    assert " INFO " not in done.stderr
    assert "collection complete" in done.stdout


@pytest.mark.slow
def test_the_demo_shows_the_collector_not_the_local_chain(tmp_path) -> None:
    done = run_cli("--demo", "--out", str(tmp_path / "demo"), "--stop-block", "4000")
    assert done.returncode == 0, done.stderr
    assert "karma_analytics.devnet" not in done.stderr and "websockets" not in done.stderr
    assert "collection complete" in done.stdout
    # a rerun says nothing about an endpoint change it did not record
    again = run_cli("--demo", "--out", str(tmp_path / "demo"), "--stop-block", "4000")
    assert again.returncode == 0 and "already complete" in again.stdout
    assert "recorded" not in again.stderr
    refused = run_cli(
        "--demo", "--api-key", "server_0123456789abcdef", "--out", str(tmp_path / "x")
    )
    assert refused.returncode == EXIT_USAGE and "does not take --api-key" in refused.stderr
    assert "server_0123456789abcdef" not in refused.stderr
