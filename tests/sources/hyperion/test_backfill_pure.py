"""backfill.py's pure parts: the window planner, the reorder buffer, a window's progress."""

from __future__ import annotations

import itertools
import random

import pytest

from karma_analytics.engine import ActionReceived, Progress
from karma_analytics.sources.hyperion.backfill import (
    ReorderBuffer,
    Window,
    WindowPlanner,
    WindowProgress,
)


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


def test_reorder_buffer_streams_the_head_and_bounds_the_other_windows_in_events() -> None:
    # 60 windows of 1..12 pages (some far longer than planned), pages of 10 events of one
    # block each; any held window may fetch a page, in random order, when allowed.
    rng = random.Random(3)
    buffer = ReorderBuffer(capacity=6, max_events=40)
    pages = {seq: rng.randint(1, 12) for seq in range(60)}
    fetched: dict[int, int] = {}
    next_seq = 0
    sequence = itertools.count(1)
    expected: list[ActionReceived] = []
    emitted: list[object] = []
    while (buffer.next_block or 0) < 6000:
        while next_seq < 60 and buffer.may_start(next_seq * 100):
            window = Window(next_seq, next_seq * 100, next_seq * 100 + 99)
            buffer.hold(WindowProgress(window))
            fetched[next_seq] = 0
            next_seq += 1
        movable = [s for s in fetched if buffer.may_continue(s * 100)]
        assert buffer.next_block in [s * 100 for s in movable]  # the head never waits
        seq = rng.choice(movable)
        progress = buffer.progress(seq * 100)
        if fetched[seq] == pages[seq]:
            progress.done = True  # the closing empty page
            del fetched[seq]
        else:
            block = progress.window.lo + fetched[seq]
            page = [ActionReceived(block, "", 0, next(sequence)) for _ in range(10)]
            progress.events.extend(page)
            progress.tail_block = block
            fetched[seq] += 1
        buffer.observe()
        while (batch := buffer.take()) is not None:
            emitted.extend(batch)
        # Past the head and the window after it (both always go on), one page over the bound
        # at most; the head holds one open block.
        after_head = (buffer.next_block or 0) + 100
        held = buffer.next_block is not None and after_head // 100 < next_seq
        beside = len(buffer.progress(after_head).events) if held else 0
        assert buffer.events() - beside <= 40 + 10 + 10
    assert buffer.peak <= 6 and buffer.peak_events <= 60 + 12 * 10  # + one window after the head
    events = [e for e in emitted if isinstance(e, ActionReceived)]
    for seq in range(60):
        lo = seq * 100
        expected += sorted(
            (e for e in events if lo <= e.block_num < lo + 100), key=lambda e: e.global_sequence
        )
    assert events == expected and len(events) == 10 * sum(pages.values())
    assert sorted(e.global_sequence for e in events) == list(range(1, len(events) + 1))
    progress_marks = [e.block_num for e in emitted if isinstance(e, Progress)]
    assert progress_marks == [seq * 100 + 99 for seq in range(60)]
    # Each Progress follows every event of its window: nothing of window k after it.
    for index, item in enumerate(emitted):
        if isinstance(item, Progress):
            later = [e for e in emitted[index + 1 :] if isinstance(e, ActionReceived)]
            assert all(e.block_num > item.block_num for e in later)
    with pytest.raises(ValueError):
        buffer.hold(WindowProgress(Window(0, 0, 99)))


def test_window_progress_takes_complete_blocks_in_order() -> None:
    progress = WindowProgress(Window(0, 1, 10))
    # A collapsed document's receipts arrive out of order within their block.
    progress.events = [ActionReceived(b, "", 0, s) for b, s in ((1, 5), (1, 3), (2, 7), (3, 9))]
    progress.ordered = False
    assert [e.global_sequence for e in progress.take(3)] == [3, 5, 7]
    assert [e.global_sequence for e in progress.take(3)] == []
    assert [e.global_sequence for e in progress.take(None)] == [9]
    assert progress.events == []


def test_a_long_head_is_split_above_what_it_fetched() -> None:
    buffer = ReorderBuffer(capacity=4, max_events=1_000)
    head = WindowProgress(Window(0, 100, 199))
    buffer.hold(head)
    assert buffer.split(page_size=10, min_pages=2) is None  # nothing seen: no density yet
    # 40 documents over blocks 100..109: 4 per block, so 90 blocks left look like 36 pages.
    head.events = [ActionReceived(100 + i // 4, "", 0, i + 1) for i in range(40)]
    head.docs_seen, head.tail_block = 40, 109
    second = buffer.split(page_size=10, min_pages=2)
    assert second is not None and (second.lo, second.hi) == (155, 199)
    assert (head.window.lo, head.window.hi) == (100, 154)
    assert buffer.progress(155).window == second and len(buffer) == 2
    assert not buffer.is_head(155) and buffer.may_continue(155)
    # A sparse rest is not worth a window (its closing empty page costs a request).
    head.docs_seen = 2
    assert buffer.split(page_size=10, min_pages=2) is None
    # The head ends at the cut; its Progress names the new hi, then the second half leads.
    head.done = True
    batch = buffer.take()
    assert batch is not None and isinstance(batch[-1], Progress) and batch[-1].block_num == 154
    assert len(batch) == 41 and buffer.is_head(155)


def test_the_head_its_neighbour_and_the_range_end_go_past_the_bound() -> None:
    buffer = ReorderBuffer(capacity=8, max_events=10)
    windows = [WindowProgress(Window(i, 10 * i, 10 * i + 9)) for i in range(3)]
    for progress in windows:
        buffer.hold(progress)
    windows[1].events = [ActionReceived(10, "", 0, i) for i in range(1, 21)]  # over the bound
    assert buffer.may_continue(0) and buffer.may_continue(10)  # the head and the next one
    assert not buffer.may_continue(20) and not buffer.may_start(30)
    buffer.ending = True  # nothing left to plan: no window waits
    assert buffer.may_continue(20)
