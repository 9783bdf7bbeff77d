"""Unit tests of the commit engine: each hole of the reference pattern, the flush policy, the
stop block, zero-row throttling, rejects, the safety net and protocol faults.

The hole tests describe what the reference example (protocol §6) would do and assert the
opposite, so each of them fails against the reference behaviour.
"""

from __future__ import annotations

import pytest

from karma_analytics.engine import (
    ActionReceived,
    ConnectionLost,
    Engine,
    Listening,
    Progress,
    Reject,
    Restart,
    State,
    Stop,
    StopReason,
    StopRequested,
    Tick,
    WriteCommit,
    WriteFailed,
    WriteSucceeded,
)
from karma_analytics.exceptions import UsageError
from karma_analytics.model import Transfer

GENESIS_MS = 1_700_000_000_000


def bid(block: int, fork: int = 0) -> str:
    """A block id whose first 8 hex digits are the block number (like Antelope's)."""
    return f"{block:08x}" + f"{fork:056x}"


def transfer(block: int, gs: int, *, idx: int = 0, fork: int = 0) -> Transfer:
    return Transfer(
        block_num=block,
        block_id=bid(block, fork),
        block_time=GENESIS_MS + block * 500,
        trx_id=f"{gs:064x}",
        action_idx=idx,
        global_sequence=gs,
        contract="therealkarma",
        action="transfer",
        from_account="alice",
        to_account="bob",
        amount_units=10_000,
        precision=4,
        symbol="KARMA",
        memo="",
    )


def act(block: int, gs: int, **kw) -> ActionReceived:
    return ActionReceived.of_transfer(transfer(block, gs, **kw))


def reject(block: int, gs: int | None) -> Reject:
    return Reject(block, bid(block), "ab" * 32, 0, gs, "quantity: bad asset", '{"x":1}')


def progress(block: int, fork: int = 0) -> Progress:
    return Progress(block, bid(block, fork))


def commits(actions) -> list[WriteCommit]:
    return [a for a in actions if isinstance(a, WriteCommit)]


def only_commit(actions) -> WriteCommit:
    found = commits(actions)
    assert len(found) == 1, actions
    return found[0]


class Driver:
    """Feeds events with a controllable clock and collects the actions."""

    def __init__(self, **options) -> None:
        options.setdefault("next_block", 100)
        options.setdefault("flush_rows", 1000)
        options.setdefault("flush_seconds", 1000.0)
        options.setdefault("min_commit_interval", 1000.0)
        self.engine = Engine(**options)
        self.now = 0.0

    def __call__(self, *events, dt: float = 0.0) -> list:
        self.now += dt
        out: list = []
        for event in events:
            out.extend(self.engine.handle(event, self.now))
        return out

    def ack(self, commit: WriteCommit) -> list:
        return self(WriteSucceeded(commit.commit_id))


def test_a_resumed_engine_streams_after_a_matching_listening() -> None:
    d = Driver(next_block=100, min_commit_interval=1e9)
    assert d.engine.state is State.AWAITING_LISTENING
    assert d(Listening(100)) == []
    assert d.engine.state is State.STREAMING
    assert d.engine.safe_point == 100
    assert d.engine.durable_next_block == 100


# --- holes of the reference pattern ----------------------------------------------------------


def test_hole1_progress_marks_the_block_after_it() -> None:
    # Reference: commit(P) marks P, so a reconnect replays P's actions -> duplicates.
    d = Driver(flush_rows=2)
    d(Listening(100))
    d(act(100, 1), act(110, 2))
    out = d(progress(110))
    commit = only_commit(out)
    assert [r.global_sequence for r in commit.rows] == [1, 2]
    assert commit.next_block == 111
    d.ack(commit)
    assert d(ConnectionLost("drop")) == [Restart(111)]


def test_hole2_fresh_dataset_records_listening_before_any_data() -> None:
    # Reference: nothing is marked before the first commit; a drop resumes at the new head.
    d = Driver(next_block=None, flush_rows=1)
    assert d(ConnectionLost("before listening")) == [Restart(None)]
    out = d(Listening(500))
    first = only_commit(out)
    assert (first.rows, first.rejects, first.first_block, first.next_block) == ((), (), 500, 500)
    # Data arrives while the start is being recorded; nothing is committed before it is durable.
    assert commits(d(act(500, 1), act(501, 2), progress(501), Tick(), dt=5000)) == []
    assert d.engine.durable_next_block is None
    assert d(ConnectionLost("drop")) == [Restart(502)]
    out = d.ack(first)
    assert d.engine.durable_next_block == 500
    data = only_commit(out)
    assert [r.global_sequence for r in data.rows] == [1, 2]
    assert (data.first_block, data.next_block) == (500, 502)


def test_hole2_drop_after_listening_resumes_at_the_recorded_start() -> None:
    d = Driver(next_block=None)
    first = only_commit(d(Listening(500)))
    d.ack(first)
    d(act(500, 1))  # open block 500, never proven complete
    assert d(ConnectionLost("drop")) == [Restart(500)]


def test_hole3_fork_in_the_stream_is_a_fault_not_a_late_commit() -> None:
    # Reference: a replacement block with a lower number is appended and committed late.
    d = Driver(flush_rows=1)
    d(Listening(100))
    d(act(100, 1))
    out = d(act(101, 2))  # closes block 100
    commit = only_commit(out)
    d.ack(commit)
    out = d(act(101, 3, fork=1))  # same number, another block id
    assert out == [Restart(101)]
    assert d.engine.state is State.AWAITING_LISTENING
    assert d.engine.pending_rows == 0  # the open block (gs 2) was dropped
    assert d.engine.faults == 1
    out = d(act(100, 4))  # stale frame of the abandoned stream: ignored
    assert out == [] and d.engine.ignored_events == 1
    assert d(Listening(101)) == []
    d(act(101, 2), progress(101))
    assert d.engine.durable_next_block == 101
    assert [r.global_sequence for r in d.engine.in_flight.rows] == [2]


def test_hole4_cursor_moves_only_on_write_succeeded() -> None:
    # Reference: the mark is set in memory before anything is durable.
    d = Driver(flush_rows=1)
    d(Listening(100))
    commit = only_commit(d(act(100, 1), progress(100)))
    assert d.engine.durable_next_block == 100
    assert commits(d(act(101, 2), progress(101))) == []  # one commit in flight
    assert d.engine.pending_rows == 1
    out = d(WriteFailed(commit.commit_id, "disk full"))
    assert out == [Stop(StopReason.WRITE_FAILED, "disk full")]
    assert d.engine.durable_next_block == 100
    assert d.engine.state is State.STOPPED
    assert d(act(102, 3), Tick()) == []


def test_hole6_open_block_dropped_before_restart_and_complete_rows_kept() -> None:
    # Reference (ported naively): the pending list is cleared *after* the restart is sent, so
    # frames of the new stream that arrive in between are lost; or, without clearing, the
    # open block's rows are committed twice.
    d = Driver(flush_rows=10)
    d(Listening(100))
    d(act(100, 1), act(101, 2), act(101, 3))  # block 100 complete, block 101 open
    assert d.engine.pending_rows == 3
    out = d(ConnectionLost("1006"))
    assert out == [Restart(101)]
    assert d.engine.pending_rows == 1  # block 100 kept, block 101 dropped before the Restart
    d(act(101, 3))  # a late frame of the old stream
    assert d.engine.pending_rows == 1
    d(Listening(101), act(101, 2), act(101, 3))  # the server re-sends block 101
    assert d.engine.dropped_duplicates == 0  # the replay is not mistaken for duplicates
    commit = only_commit(d(progress(101), StopRequested()))
    assert [r.global_sequence for r in commit.rows] == [1, 2, 3]
    assert (commit.first_block, commit.next_block) == (100, 102)
    assert d.ack(commit) == [Stop(StopReason.REQUESTED)]


# --- flush policy ----------------------------------------------------------------------------


def test_flush_by_row_count_counts_complete_blocks_only() -> None:
    d = Driver(flush_rows=3)
    d(Listening(100))
    assert commits(d(act(100, 1), act(100, 2), act(101, 3))) == []  # 2 complete, 1 open
    commit = only_commit(d(act(102, 4)))  # block 101 complete: 3 items
    assert [r.global_sequence for r in commit.rows] == [1, 2, 3]
    assert commit.next_block == 102
    assert d.engine.pending_rows == 1


def test_flush_by_age_of_the_oldest_pending_row() -> None:
    d = Driver(flush_seconds=10.0)
    d(Listening(100))
    d(act(100, 1))  # arrives at t=0
    d(act(101, 2), dt=6)  # block 100 complete at t=6, its row is 6 s old
    d(act(102, 3), dt=1)  # block 101 complete at t=7; the oldest row is still the first
    assert commits(d(Tick(), dt=2.9)) == []
    commit = only_commit(d(Tick(), dt=0.1))  # t=10
    assert [r.global_sequence for r in commit.rows] == [1, 2]
    assert commit.next_block == 102


def test_flush_on_stop_request_and_accumulate_while_in_flight() -> None:
    d = Driver(flush_rows=2)
    d(Listening(100))
    first = only_commit(d(act(100, 1), act(100, 2), progress(100)))
    assert commits(d(act(101, 3), act(102, 4), act(103, 5))) == []  # in flight: accumulate
    assert d(StopRequested()) == []  # waits for the write
    assert d.engine.state is State.STOPPING
    d(act(104, 6), progress(104))  # ignored once stopping
    second = only_commit(d.ack(first))
    assert [r.global_sequence for r in second.rows] == [3, 4]  # block 103 was still open
    assert (second.first_block, second.next_block) == (101, 103)
    assert d.ack(second) == [Stop(StopReason.REQUESTED)]
    assert d.engine.committed_rows == 4
    assert d.engine.durable_next_block == 103


def test_stop_request_with_nothing_to_write_stops_at_once() -> None:
    d = Driver(min_commit_interval=1e9)
    d(Listening(100))
    assert d(StopRequested()) == [Stop(StopReason.REQUESTED)]
    assert d.engine.stop_reason is StopReason.REQUESTED


# --- zero-row commits ------------------------------------------------------------------------


def test_zero_row_commits_are_throttled() -> None:
    d = Driver(min_commit_interval=5.0)
    d(Listening(100))
    assert commits(d(progress(105), dt=4.9)) == []  # throttled from the first event
    first = only_commit(d(progress(110), dt=0.1))
    assert (first.rows, first.next_block) == ((), 111)
    d.ack(first)
    assert commits(d(progress(120), dt=1)) == []
    assert commits(d(progress(130), Tick(), dt=3.9)) == []
    second = only_commit(d(Tick(), dt=0.1))
    assert (second.first_block, second.next_block) == (111, 131)
    assert (second.last_block_num, second.last_block_id) == (130, bid(130))
    d.ack(second)
    assert commits(d(Tick(), dt=100)) == []  # nothing new: no commit


def test_data_commit_is_not_throttled_by_min_commit_interval() -> None:
    d = Driver(min_commit_interval=1e9, flush_rows=1)
    d(Listening(100))
    d.ack(only_commit(d(act(100, 1), progress(100))))
    commit = only_commit(d(act(101, 2), progress(101)))
    assert [r.global_sequence for r in commit.rows] == [2]


# --- stop block ------------------------------------------------------------------------------


def test_stop_block_commits_nothing_beyond_it() -> None:
    d = Driver(stop_block=105, flush_rows=1000)
    d(Listening(100))
    d(act(104, 1), act(105, 2))
    out = d(act(106, 3))  # proves 105 complete; 106 is beyond the stop block
    commit = only_commit(out)
    assert [r.block_num for r in commit.rows] == [104, 105]
    assert commit.next_block == 106
    assert d.engine.state is State.STOPPING
    assert d.ack(commit) == [Stop(StopReason.STOP_BLOCK)]


def test_stop_block_progress_beyond_caps_next_block() -> None:
    d = Driver(stop_block=105)
    d(Listening(100))
    d(act(103, 1))
    commit = only_commit(d(progress(110)))
    assert commit.next_block == 106
    assert (commit.last_block_num, commit.last_block_time) == (103, GENESIS_MS + 103 * 500)
    assert d.ack(commit) == [Stop(StopReason.STOP_BLOCK)]


def test_engine_already_past_stop_block_stops_on_first_event() -> None:
    d = Driver(next_block=106, stop_block=105)
    assert d.engine.state is State.STOPPING
    assert d(Tick()) == [Stop(StopReason.STOP_BLOCK)]
    assert d(Listening(106)) == []


def test_stop_block_with_commit_in_flight_waits_then_writes_the_rest() -> None:
    d = Driver(stop_block=102, flush_rows=1)
    d(Listening(100))
    first = only_commit(d(act(100, 1), act(101, 2)))
    d(act(102, 3), act(103, 4))
    second = only_commit(d.ack(first))
    assert [r.global_sequence for r in second.rows] == [2, 3]
    assert second.next_block == 103
    assert d.ack(second) == [Stop(StopReason.STOP_BLOCK)]


# --- rejects ---------------------------------------------------------------------------------


def test_rejects_are_committed_with_their_block() -> None:
    d = Driver(flush_rows=3)
    d(Listening(100))
    bad = reject(100, 2)
    bad_without_sequence = reject(101, None)
    d(act(100, 1), ActionReceived.of_reject(bad, GENESIS_MS))
    d(ActionReceived.of_reject(bad_without_sequence))
    assert (d.engine.pending_rows, d.engine.pending_rejects) == (1, 2)
    commit = only_commit(d(act(102, 3)))  # 3 items in complete blocks
    assert commit.rows == (transfer(100, 1),)
    assert commit.rejects == (bad, bad_without_sequence)
    assert commit.last_global_sequence == 2
    d.ack(commit)
    assert (d.engine.committed_rows, d.engine.committed_rejects) == (1, 2)


def test_rejects_of_the_open_block_are_dropped_on_reconnect() -> None:
    d = Driver()
    d(Listening(100))
    d(ActionReceived.of_reject(reject(100, 5)))
    assert d(ConnectionLost()) == [Restart(100)]
    assert d.engine.pending_rejects == 0
    d(Listening(100), ActionReceived.of_reject(reject(100, 5)))
    assert d.engine.pending_rejects == 1 and d.engine.dropped_duplicates == 0


def test_notification_without_row_moves_the_safe_point() -> None:
    d = Driver()
    d(Listening(100))
    d(ActionReceived(103, bid(103), None, 7))
    assert d.engine.safe_point == 103
    assert d.engine.pending_rows == 0


# --- safety net ------------------------------------------------------------------------------


def test_global_sequence_net_drops_and_counts_duplicates() -> None:
    d = Driver(next_block=100, last_global_sequence=50)
    d(Listening(100))
    d(act(100, 50), act(100, 51), act(100, 51), act(101, 40), act(101, 52))
    assert d.engine.dropped_duplicates == 3
    assert d.engine.pending_rows == 2
    commit = only_commit(d(progress(101), StopRequested()))
    assert [r.global_sequence for r in commit.rows] == [51, 52]
    assert commit.last_global_sequence == 52


# --- protocol faults -------------------------------------------------------------------------


def test_listening_at_another_block_stops_with_protocol_error() -> None:
    d = Driver(flush_rows=1000)
    d(Listening(100))
    d(act(100, 1), act(101, 2))
    assert d(ConnectionLost()) == [Restart(101)]
    out = d(Listening(90))
    commit = only_commit(out)  # the complete block is still written
    assert [r.global_sequence for r in commit.rows] == [1]
    (stop,) = d.ack(commit)
    assert stop.reason is StopReason.PROTOCOL_ERROR
    assert "90" in stop.error and "101" in stop.error


def test_progress_going_backwards_restarts_then_a_repeat_stops() -> None:
    d = Driver(min_commit_interval=1e9)
    d(Listening(100))
    d(progress(110), act(111, 1))
    assert d(progress(105)) == [Restart(111)]
    assert d.engine.pending_rows == 0
    d(Listening(111))
    commit = only_commit(d(progress(105)))  # stopping: the cursor still moves to 111
    assert (commit.rows, commit.next_block) == ((), 111)
    (stop,) = d.ack(commit)
    assert stop.reason is StopReason.PROTOCOL_ERROR and "105" in stop.error
    assert d.engine.faults == 2


def test_action_below_the_safe_point_is_a_fault() -> None:
    d = Driver()
    d(Listening(100))
    d(progress(110))
    assert d(act(105, 1)) == [Restart(111)]


def test_progress_with_another_block_id_is_a_fault() -> None:
    d = Driver()
    d(Listening(100))
    d(act(104, 1))
    assert d(progress(104, fork=3)) == [Restart(104)]


def test_second_listening_without_restart_is_a_fault() -> None:
    d = Driver()
    d(Listening(100))
    d(act(102, 1))
    assert d(Listening(100)) == [Restart(102)]
    assert d.engine.state is State.AWAITING_LISTENING


# --- misuse and status -----------------------------------------------------------------------


def test_misuse_raises_usage_error() -> None:
    d = Driver(flush_rows=1)
    with pytest.raises(UsageError):
        d(WriteSucceeded(1))
    d(Listening(100))
    commit = only_commit(d(act(100, 1), progress(100)))
    with pytest.raises(UsageError):
        d(WriteSucceeded(commit.commit_id + 1))
    with pytest.raises(UsageError):
        d("not an event")
    t = transfer(101, 2)
    with pytest.raises(UsageError):
        d(ActionReceived(101, t.block_id, t.block_time, 2, transfer=t, reject=reject(101, 2)))
    for bad in ({"flush_rows": 0}, {"flush_seconds": -1}, {"next_block": 0}):
        with pytest.raises(UsageError):
            Engine(**{"next_block": 1, **bad})


def test_status_properties_follow_the_stream() -> None:
    d = Driver(flush_rows=2)
    d(Listening(100))
    assert (d.engine.last_block_num, d.engine.pending_rows, d.engine.in_flight) == (None, 0, None)
    d(act(100, 1), act(101, 2))
    assert (d.engine.last_block_num, d.engine.safe_point, d.engine.pending_rows) == (101, 101, 2)
    commit = only_commit(d(progress(101)))
    assert d.engine.in_flight == commit
    assert d.engine.stop_reason is None
    d.ack(commit)
    assert (d.engine.committed_rows, d.engine.durable_next_block) == (2, 102)
    assert (commit.last_block_num, commit.last_block_id) == (101, bid(101))
    assert commit.last_block_time == GENESIS_MS + 101 * 500
