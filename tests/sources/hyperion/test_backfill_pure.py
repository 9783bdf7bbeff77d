"""backfill.py's pure parts: the window planner and the bounded reorder buffer."""

from __future__ import annotations

import itertools
import random

import pytest

from karma_analytics.sources.hyperion.backfill import ReorderBuffer, WindowPlanner


def test_planner_covers_the_range_once_and_adapts_to_density() -> None:
    planner = WindowPlanner(10, 1_000_000, page_size=1000, target_pages=4, initial_blocks=100)
    windows = []
    while not planner.done():
        w = planner.next()
        windows.append(w)
        planner.observe(w.hi - w.lo + 1, docs=(w.hi - w.lo + 1) * 2)  # 2 docs per block
    assert windows[0].lo == 10 and windows[-1].hi == 1_000_000
    assert all(a.hi + 1 == b.lo for a, b in itertools.pairwise(windows))
    assert [w.seq for w in windows] == list(range(len(windows)))
    # 4 pages of 1000 at 2 docs per block: 2000 blocks per window once learned.
    assert {w.hi - w.lo + 1 for w in windows[5:-1]} == {2000}


def test_reorder_buffer_emits_in_order_and_bounds_what_is_held() -> None:
    rng = random.Random(3)
    buffer = ReorderBuffer(capacity=4)
    started: list[int] = []
    in_flight: list[int] = []
    emitted: list[int] = []
    next_seq = 0
    while len(emitted) < 200:
        while buffer.may_start(next_seq) and next_seq < 200:
            in_flight.append(next_seq)
            next_seq += 1
        # Window "next to emit" is the slowest: it finishes last among those in flight.
        choices = [s for s in in_flight if s != buffer.next_seq] or in_flight
        done = rng.choice(choices)
        in_flight.remove(done)
        buffer.put(done, done)
        started.append(done)
        assert len(buffer) + len(in_flight) <= 4
        while buffer.ready():
            emitted.append(buffer.pop())
    assert emitted == list(range(200))
    assert buffer.peak <= 4
    with pytest.raises(ValueError):
        buffer.put(0, 0)
