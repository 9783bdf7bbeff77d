"""Issue 10 end to end: ``python -m karma_analytics.collect --source ship`` against the SHiP devnet.

Every test runs the real CLI (a child process) against a :class:`ShipThread` on loopback and
compares the committed view with the chain's truth. The SHiP and dfuse devnets with the same
seed serve the same chain under the same chain id (DEVNET_CHAIN_ID), like two providers of one
chain, so a dataset may move between the protocols.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from collect_helpers import (
    HEAD,
    RANGE_LAST,
    check_prefix_of_truth,
    committed_rows,
    crash_loop,
    next_block,
    range_args,
    run_cli,
)

from karma_analytics.collect import EXIT_ERROR
from karma_analytics.devnet.server import DEVNET_CHAIN_ID
from karma_analytics.devnet.ship import ShipStats, ShipThread

FROZEN_SHIP: dict[str, Any] = {"head": HEAD, "block_interval": 0.0, "lib_lag": 2}
FAST = ("--flush-rows", "40", "--flush-seconds", "0.2", "--stall-seconds", "3")


@pytest.fixture
def ship_factory() -> Iterator[Callable[..., ShipThread]]:
    """Start SHiP devnet servers (``FROZEN_SHIP`` + options); all stopped at teardown."""
    started: list[ShipThread] = []

    def start(**options: Any) -> ShipThread:
        node = ShipThread(**{**FROZEN_SHIP, **options}).start()
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.stop()


def ship_cli(url: str, out: object, first: int, last: int, *extra: str, timeout: float = 120):
    return run_cli("--source", "ship", *range_args(url, out, first, last), *extra, timeout=timeout)


def sidecar(out) -> dict:
    return json.loads((out / "_cursor.json").read_text())


# --- truth under every fault flag ------------------------------------------------------------

FaultCheck = Callable[[ShipStats, str], bool]

FAULTS: list[tuple[str, dict[str, Any], tuple[str, ...], FaultCheck]] = [
    (
        "drop-every",
        {"drop_every": 700},
        (),
        lambda s, err: s.dropped_connections >= RANGE_LAST // 700 and s.handshakes >= 5,
    ),
    (
        "drop-rate",
        {"drop_rate": 0.001, "fault_seed": 3},
        (),
        lambda s, err: s.dropped_connections >= 1 and "closed the connection" in err,
    ),
    (
        "stall",
        {"stall_after": 1200},
        ("--stall-seconds", "0.5"),
        lambda s, err: s.stalled_connections >= 2 and "sent no data" in err,
    ),
    (
        "refuse-handshakes",
        {"refuse_handshakes": 2},
        (),
        lambda s, err: s.refused_handshakes == 2 and err.count("HTTP 503") == 2,
    ),
    (
        "accept-then-drop",
        {"accept_then_drop": 2},
        (),
        lambda s, err: s.dropped_connections == 2 and s.connections == 3,
    ),
    (
        "malformed",
        {"malformed_rate": 0.001, "fault_seed": 5},
        (),
        lambda s, err: s.malformed_sent >= 1 and err.count("malformed") >= s.malformed_sent,
    ),
]


@pytest.mark.parametrize(
    ("options", "extra", "check"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
@pytest.mark.slow
def test_truth_through_the_cli_under_faults(
    ship_factory, tmp_path, options: dict[str, Any], extra: tuple[str, ...], check: FaultCheck
) -> None:
    node = ship_factory(**options)
    out = tmp_path / "transfers"
    done = ship_cli(node.url, out, 1, RANGE_LAST, *FAST, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert committed_rows(out) == list(node.chain.truth(1, RANGE_LAST))
    assert next_block(out) == RANGE_LAST + 1
    assert check(node.stats, done.stderr), (node.stats, done.stderr[-3000:])
    assert "Traceback" not in done.stderr


# --- SIGKILL loop ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_loop_through_ship_never_loses_or_duplicates(ship_factory, tmp_path) -> None:
    # A head moving at 50 blocks/s (as tests/collect/test_crash.py): runs stream and commit
    # (every 50 ms) rather than finish at once, so the kills land in every phase.
    node = ship_factory(head=300, block_interval=0.02)
    truth = list(node.chain.truth(1, RANGE_LAST))
    out = tmp_path / "transfers"
    stats = crash_loop(
        node.url,
        out,
        truth,
        stop_block=RANGE_LAST,
        kills=20,
        seed=20261201,
        # Up to 2.6 s: the CLI's start-up (~1.5 s, more on a busy machine) comes first.
        min_delay=0.6,
        max_delay=2.6,
        extra_args=("--source", "ship", "--flush-rows", "20", "--flush-seconds", "0.05"),
    )
    assert stats["kills"] >= 20
    assert stats["kills_while_committing"] >= 5, stats


# --- one dataset, two protocols ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("first_kind", ["dfuse", "ship"])
def test_a_dataset_moves_between_dfuse_and_ship(
    net_factory, ship_factory, tmp_path, first_kind: str
) -> None:
    dfuse, ship = net_factory(), ship_factory()
    truth = list(ship.chain.truth(1, RANGE_LAST))
    assert truth == list(dfuse.chain.truth(1, RANGE_LAST))  # same seed, same chain
    urls = {"dfuse": dfuse.url, "ship": ship.url}
    second_kind = "ship" if first_kind == "dfuse" else "dfuse"
    out = tmp_path / "transfers"
    middle = RANGE_LAST // 2
    begun = run_cli("--source", first_kind, *range_args(urls[first_kind], out, 1, middle), *FAST)
    assert begun.returncode == 0, begun.stderr[-3000:]
    assert next_block(out) == middle + 1
    continued = run_cli(
        "--source", second_kind, "--endpoint", urls[second_kind], "--out", str(out),
        "--stop-block", str(RANGE_LAST), *FAST,
    )  # fmt: skip
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert committed_rows(out) == truth
    body = sidecar(out)
    assert body["chain_id"] == DEVNET_CHAIN_ID
    spans = [
        (s["source"], s["endpoint"], s["first_block"], s["last_block"]) for s in body["sources"]
    ]
    assert spans == [
        (first_kind, urls[first_kind], 1, middle),
        (second_kind, urls[second_kind], middle + 1, RANGE_LAST),
    ]
    assert f"continuing the dataset through {second_kind}" in continued.stderr


# --- the node's trace log ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_start_below_the_trace_log_is_refused_naming_the_range(ship_factory, tmp_path) -> None:
    node = ship_factory(trace_begin_block=500)
    out = tmp_path / "transfers"
    done = ship_cli(node.url, out, 100, 1000, *FAST)
    assert done.returncode == EXIT_ERROR, done.stderr[-3000:]
    assert f"block 100 is below the node's trace log: it has traces for blocks 500..{HEAD}" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert committed_rows(out) == []
    assert node.stats.blocks_requests == 0  # refused from the status, before any block


@pytest.mark.slow
def test_a_block_without_traces_is_a_gap_naming_the_block(ship_factory, tmp_path) -> None:
    gap = 1234
    node = ship_factory(trace_gaps=(gap,))
    out = tmp_path / "transfers"
    done = ship_cli(node.url, out, 1, RANGE_LAST, *FAST)
    assert done.returncode == EXIT_ERROR, done.stderr[-3000:]
    assert f"block {gap}: the node sent no traces for it" in done.stderr
    assert "Traceback" not in done.stderr
    # Everything before the gap is committed, nothing at or after it ("no transfers" is no
    # answer for a block whose traces are missing).
    assert next_block(out) == gap
    check_prefix_of_truth(committed_rows(out), list(node.chain.truth(1, RANGE_LAST)), gap)


# --- reversible mode ---------------------------------------------------------------------------


@pytest.mark.slow
def test_reversible_forks_resolved_before_the_collector_reaches_them(ship_factory, tmp_path):
    # Forks every 100 blocks, but the collected range lies far below the head: every fork in it
    # was resolved before the collector got there, so it sees canonical blocks only.
    node = ship_factory(head=HEAD, block_interval=0.05, fork_every=100, fork_depth=3)
    out = tmp_path / "transfers"
    done = ship_cli(node.url, out, 1, RANGE_LAST, "--include-reversible", *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert committed_rows(out) == list(node.chain.truth(1, RANGE_LAST))
    assert node.stats.rewinds == 0 and "fork" not in done.stderr
    assert not node.stats.last_blocks_request.irreversible_only


@pytest.mark.slow
def test_reversible_fork_of_a_collected_block_stops_with_the_block(ship_factory, tmp_path):
    """A collector at the head sees a fork window first in its forked-out variant, then the
    node goes back to re-send the canonical blocks. Deterministically (the collector keeps up
    with a block every 100 ms): the engine takes the rewind for a protocol fault and restarts
    at its safe point S; the next stream's have_positions name the forked-out blocks; the node
    answers from the first of them, below S; the run stops, exit 1, naming that block."""
    every, depth = 10, 3
    node = ship_factory(head=100, block_interval=0.1, fork_every=every, fork_depth=depth)
    out = tmp_path / "transfers"
    done = ship_cli(node.url, out, 1, 400, "--include-reversible", *FAST)
    assert done.returncode == EXIT_ERROR, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    err = done.stderr
    assert "fork: the node went back to block" in err
    assert "protocol violation: progress for block" in err
    marker = "error: block "
    assert marker in err, err[-3000:]
    forked = int(err.split(marker, 1)[1].split(",", 1)[0])
    point = forked + depth - 1
    assert point % every == 0  # the first block of a fork window
    assert f"block {forked}, already committed in reversible mode" in err
    assert f"Recollect from before block {forked} into a new --out folder" in err
    assert node.stats.rewinds >= 1 and node.stats.blocks_requests >= 2
    positions = node.stats.last_blocks_request.have_positions
    assert positions and positions[-1].block_id == node.server.block_id(point, point)
    # Below the fork: exactly the chain; the forked-out blocks' rows are committed (the
    # documented cost of reversible mode) and carry the forked-out ids.
    upto = next_block(out)
    assert upto is not None and forked < upto <= point + 1
    rows = committed_rows(out)
    check_prefix_of_truth(
        [r for r in rows if r.block_num < forked], list(node.chain.truth(1, 400)), forked
    )
    for row in rows:
        if row.block_num >= forked:
            assert row.block_id == node.chain.block_id(row.block_num, point)
    assert sidecar(out)["last_block_id"] == node.chain.block_id(upto - 1, point)
