"""``Engine.handle_batch`` against ``Engine.handle``: the same actions and the same state.

The batch entry point skips the general dispatch for another row of the open block; this
property checks that the shortcut never decides anything the one-by-one path would not, over
event sequences that mix honest runs with every kind of fault the engine knows.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine import act, bid, progress, reject, transfer

from karma_analytics.engine import (
    ActionReceived,
    ConnectionLost,
    Engine,
    Listening,
    Progress,
    Reject,
    StopRequested,
    Tick,
    WriteFailed,
    WriteSucceeded,
)
from karma_analytics.exceptions import UsageError


@st.composite
def stream_events(draw: st.DrawFn) -> list:
    """A stream: runs of rows per block with rising global sequences, and some mischief."""
    events: list = [Listening(draw(st.integers(1, 3)))]
    gs = draw(st.integers(1, 5))
    block = draw(st.integers(1, 4))
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(
            st.sampled_from(["rows", "rows", "rows", "progress", "fault", "gap", "listening"])
        )
        if kind == "rows":
            for _ in range(draw(st.integers(1, 6))):
                gs += draw(st.sampled_from([1, 1, 1, 0, -1]))  # 0 / -1: the safety net
                which = draw(st.sampled_from(["row", "row", "row", "reject", "bare", "fork"]))
                if which == "row":
                    events.append(act(block, gs))
                elif which == "fork":
                    events.append(act(block, gs, fork=1))
                elif which == "reject":
                    events.append(ActionReceived.of_reject(reject(block, gs)))
                else:  # a match that is not a row, or one without a global sequence
                    events.append(
                        ActionReceived(block, bid(block), None, draw(st.none() | st.just(gs)))
                    )
            block += draw(st.integers(1, 2))
        elif kind == "progress":
            events.append(progress(block - draw(st.integers(0, 2))))
        elif kind == "fault":
            events.append(act(max(1, block - 3), gs + 1))
        elif kind == "gap":
            block += draw(st.integers(1, 5))
        else:
            events.append(Listening(block))
    return events


def snapshot(engine: Engine) -> dict:
    return dict(vars(engine))


@pytest.mark.slow
@settings(max_examples=400)
@given(
    events=stream_events(),
    cuts=st.lists(st.integers(0, 80), max_size=6),
    clock=st.lists(st.sampled_from([0.0, 0.5, 3.0]), min_size=8, max_size=8),
    resumed=st.booleans(),
    flush_rows=st.integers(1, 5),
    stop_block=st.none() | st.integers(1, 30),
    acks=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_handle_batch_decides_exactly_like_handle(
    events, cuts, clock, resumed, flush_rows, stop_block, acks
) -> None:
    options = {
        "next_block": 1 if resumed else None,
        "flush_rows": flush_rows,
        "flush_seconds": 2.0,
        "min_commit_interval": 1.0,
        "stop_block": stop_block,
    }
    one, many = Engine(**options), Engine(**options)
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    now = 0.0
    for step, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        now += clock[step % len(clock)]
        expected: list = []
        for event in events[lo:hi]:
            expected += one.handle(event, now)
        assert many.handle_batch(events[lo:hi], now) == expected
        assert snapshot(many) == snapshot(one)
        # Between batches the runner feeds write results and ticks, as it would.
        commit = one.in_flight
        if commit is not None and acks[step % len(acks)]:
            assert many.handle(WriteSucceeded(commit.commit_id), now) == one.handle(
                WriteSucceeded(commit.commit_id), now
            )
        assert many.handle(Tick(), now) == one.handle(Tick(), now)
        assert snapshot(many) == snapshot(one)


def test_handle_batch_takes_rows_of_the_open_block_and_commits_on_the_next_block() -> None:
    engine = Engine(next_block=10, flush_rows=3, flush_seconds=60.0)
    batch = [Listening(10), *(act(10, gs) for gs in (1, 2, 3)), act(11, 4)]
    actions = engine.handle_batch(batch, 0.0)
    assert [a.rows for a in actions] == [tuple(transfer(10, gs) for gs in (1, 2, 3))]
    assert (actions[0].first_block, actions[0].next_block) == (10, 11)
    assert engine.pending_rows == 1


def test_handle_batch_drops_a_repeated_global_sequence_in_the_open_block() -> None:
    engine = Engine(next_block=10)
    engine.handle_batch([Listening(10), act(10, 5), act(10, 6), act(10, 6), act(10, 6)], 0.0)
    assert engine.pending_rows == 2
    assert engine.dropped_duplicates == 2


def test_handle_batch_rejects_misuse_like_handle() -> None:
    engine = Engine(next_block=10)
    with pytest.raises(UsageError, match="not an engine event"):
        engine.handle_batch([Listening(10), "frame"], 0.0)  # type: ignore[list-item]
    with pytest.raises(UsageError, match="write result"):
        engine.handle_batch([WriteFailed(7, "x")], 0.0)


def test_connection_lost_in_a_batch_drops_the_open_block() -> None:
    engine = Engine(next_block=10)
    actions = engine.handle_batch(
        [Listening(10), act(10, 1), act(10, 2), ConnectionLost("1006"), act(10, 3)], 0.0
    )
    assert [type(a).__name__ for a in actions] == ["Restart"]
    assert engine.pending_rows == 0
    assert engine.ignored_events == 1  # the frame of the abandoned stream
    assert engine.handle_batch([StopRequested()], 0.0)[-1].reason.name == "REQUESTED"


def test_progress_in_a_batch_completes_the_open_block() -> None:
    engine = Engine(next_block=10, flush_rows=2)
    actions = engine.handle_batch(
        [Listening(10), act(10, 1), act(10, 2), Progress(10, bid(10))], 0.0
    )
    assert [len(a.rows) for a in actions] == [2]
    assert actions[0].next_block == 11
    assert isinstance(reject(1, 1), Reject)


def test_a_batch_starting_in_the_open_block_still_runs_the_age_flush() -> None:
    engine = Engine(next_block=10, flush_rows=100, flush_seconds=2.0)
    assert engine.handle_batch([Listening(10), act(10, 1), act(11, 2), act(11, 3)], 0.0) == []
    # Block 10 waits since 0.0; the next batch, 5 s later, begins with a row of open block 11.
    actions = engine.handle_batch([act(11, 4), act(11, 5)], 5.0)
    assert [a.rows for a in actions] == [(transfer(10, 1),)]


def test_the_first_row_after_a_bare_action_starts_the_age_clock() -> None:
    engine = Engine(next_block=10, flush_rows=100, flush_seconds=2.0)
    # A match that is not a row opens block 10; the row after it comes through the shortcut.
    engine.handle_batch([Listening(10), ActionReceived(10, bid(10), None, 1), act(10, 2)], 0.0)
    assert engine.handle_batch([act(11, 3)], 1.0) == []  # block 10 complete, 1 s old
    actions = engine.handle_batch([act(11, 4)], 2.5)  # 2.5 s old: the age flush fires
    assert [a.rows for a in actions] == [(transfer(10, 2),)]
