"""Issue 3: SIGKILL the real CLI at random moments; the dataset must never lie.

Seeded: the kill delays come from ``random.Random(SEED)``, so a failure replays with the same
schedule (timing still varies a little between machines). ``bench/crash_loop.py`` runs the
same loop much longer.
"""

from __future__ import annotations

import pytest
from collect_helpers import RANGE_LAST, crash_loop

SEED = 20261128
KILLS = 20


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_or_duplicates(net_factory, tmp_path) -> None:
    # A head moving at 50 blocks/s: runs spend their time streaming and committing (every
    # 50 ms) rather than finishing at once, so the kills land in every phase. The head passes
    # the range's end after ~54 s, about when the 20 kills are done: a faster head let a fast
    # machine finish most later runs before their kill.
    live = net_factory(head=300, block_interval=0.02)
    truth = list(live.chain.truth(1, RANGE_LAST))
    out = tmp_path / "transfers"
    stats = crash_loop(
        live.url,
        out,
        truth,
        stop_block=RANGE_LAST,
        kills=KILLS,
        seed=SEED,
        min_delay=0.8,
        max_delay=3.5,  # a busy machine takes 2-3 s to the first commit
    )
    assert stats["kills"] >= KILLS
    # the kills landed while data was being committed, not only at start-up or the end
    assert stats["kills_while_committing"] >= 5, stats


@pytest.mark.slow
def test_sigkill_across_midnight_with_a_dropping_server(net_factory, tmp_path) -> None:
    """Kills on top of a dropping server, around a UTC midnight (commits with two parts)."""
    midnight = 28_800  # genesis is 20:00 UTC, blocks are 0.5 s apart
    first, last = midnight - 1_000, midnight + 1_000
    server = net_factory(head=last + 200, drop_every=211, fault_seed=4)
    truth = list(server.chain.truth(first, last))
    assert len({t.block_time // 86_400_000 for t in truth}) == 2
    out = tmp_path / "transfers"
    stats = crash_loop(
        server.url,
        out,
        truth,
        start_block=first,
        stop_block=last,
        kills=8,
        seed=SEED + 1,
        extra_args=("--flush-rows", "150", "--flush-seconds", "0.2"),
    )
    assert stats["kills"] >= 8
    assert len(list(out.glob("date=*"))) == 2
