"""Rule-based state machine tests of the commit engine against a simple model.

A random chain (blocks with 0..3 matching actions; transfers, rejects with and without a
global sequence, and notifications that are no row) is streamed by a simulated dfuse server
(protocol §4: ``listening`` first, each block's actions, progress after some blocks and always
after the last one, inclusive restarts). Hypothesis interleaves frames with connection drops,
stale frames of an abandoned stream, crashes (a new engine from the durable state only, with
or without the in-flight write having landed), write successes and failures, clock ticks and
stop requests. The model store keeps what ``WriteSucceeded`` confirmed; the invariants check
it against the chain after every step, and the teardown drives the run to its end to check
that everything is eventually committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

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
from karma_analytics.model import Transfer

GENESIS_MS = 1_700_000_000_000


def bid(block: int) -> str:
    return f"{block:08x}" + "ab" * 28


@dataclass
class Chain:
    """A finished, irreversible chain segment: the truth the engine must reproduce."""

    first: int
    blocks: list[list[ActionReceived]]
    progress_after: frozenset[int]

    @property
    def last(self) -> int:
        return self.first + len(self.blocks) - 1

    def actions(self, block: int) -> list[ActionReceived]:
        return self.blocks[block - self.first]

    def frames(self, start: int) -> list:
        """What a dfuse server sends for ``start_block = start`` (inclusive, §4.1)."""
        out: list = [Listening(start)]
        for block in range(max(start, self.first), self.last + 1):
            out.extend(self.actions(block))
            if block in self.progress_after or block == self.last:
                out.append(Progress(block, bid(block)))
        return out

    def truth(self, below: int) -> tuple[list[Transfer], list[Reject]]:
        rows: list[Transfer] = []
        rejects: list[Reject] = []
        for block in range(self.first, min(below, self.last + 1)):
            for a in self.actions(block):
                if a.transfer is not None:
                    rows.append(a.transfer)
                elif a.reject is not None:
                    rejects.append(a.reject)
        return rows, rejects


@st.composite
def chains(draw: st.DrawFn, max_blocks: int = 25) -> Chain:
    first = draw(st.integers(1, 1000))
    sizes = draw(st.lists(st.integers(0, 3), min_size=1, max_size=max_blocks))
    gs = draw(st.sampled_from([0, 2**32 - 3]))  # also cross the dfuse string encoding limit
    blocks = []
    for offset, size in enumerate(sizes):
        block = first + offset
        time = GENESIS_MS + block * 500
        actions = []
        for idx in range(size):
            gs += draw(st.integers(1, 3))
            kind = draw(st.sampled_from(["transfer", "transfer", "reject", "reject-no-gs", "note"]))
            if kind == "transfer":
                t = Transfer(
                    block, bid(block), time, f"{gs:064x}", idx, gs, "therealkarma", "transfer",
                    "alice", "bob", gs * 10, 4, "KARMA", f"m{gs}",
                )  # fmt: skip
                actions.append(ActionReceived.of_transfer(t))
            elif kind == "note":
                actions.append(ActionReceived(block, bid(block), time, gs))
            else:
                seq = gs if kind == "reject" else None
                r = Reject(block, bid(block), f"{gs:064x}", idx, seq, "bad asset", f'{{"g":{gs}}}')
                actions.append(ActionReceived.of_reject(r, time))
        blocks.append(actions)
    last = first + len(sizes) - 1
    progress_after = draw(st.frozensets(st.integers(first, last)))
    return Chain(first, blocks, progress_after)


@dataclass
class ModelStore:
    """What a store holds after the writes the runner confirmed."""

    next_block: int | None = None
    last_global_sequence: int | None = None
    rows: list[Transfer] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    def apply(self, commit: WriteCommit) -> None:
        if self.next_block is None:
            assert commit.first_block == commit.next_block, "a fresh dataset records its start"
            assert not commit.rows and not commit.rejects
        else:
            assert commit.first_block == self.next_block
            assert commit.next_block >= self.next_block, "committed next_block decreased"
        for item in (*commit.rows, *commit.rejects):
            assert commit.first_block <= item.block_num < commit.next_block
        self.rows.extend(commit.rows)
        self.rejects.extend(commit.rejects)
        self.next_block = commit.next_block
        if commit.last_global_sequence is not None:
            self.last_global_sequence = commit.last_global_sequence


class EngineMachine(RuleBasedStateMachine):
    """The runner loop, with every fault a real runner can meet, against a model store."""

    chain: Chain

    @initialize(
        chain=chains(),
        flush_rows=st.integers(1, 6),
        flush_seconds=st.sampled_from([0.0, 2.0, 30.0]),
        min_commit_interval=st.sampled_from([0.0, 3.0, 1e9]),
        stop_offset=st.none() | st.integers(-2, 30),
    )
    def setup(self, chain, flush_rows, flush_seconds, min_commit_interval, stop_offset) -> None:
        self.chain = chain
        self.stop_block = None if stop_offset is None else max(1, chain.first + stop_offset)
        self.options = {
            "flush_rows": flush_rows,
            "flush_seconds": flush_seconds,
            "min_commit_interval": min_commit_interval,
            "stop_block": self.stop_block,
        }
        self.store = ModelStore()
        self.now = 0.0
        self.runs = 0
        self.new_engine()

    # --- the runner ------------------------------------------------------------------------

    def new_engine(self) -> None:
        """A process start: nothing is trusted but the durable store."""
        self.engine = Engine(
            next_block=self.store.next_block,
            last_global_sequence=self.store.last_global_sequence,
            **self.options,
        )
        self.runs += 1
        self.in_flight: WriteCommit | None = None
        self.stop: Stop | None = None
        self.stale: list = []
        self.connect(self.store.next_block)
        self.feed(Tick())

    def connect(self, start: int | None) -> None:
        # A fresh dataset's configured start is the chain's first block.
        self.frames = self.chain.frames(self.chain.first if start is None else start)
        self.position = 0
        self.requested = start

    def feed(self, event) -> list:
        assert self.stop is None, "no event after Stop"
        actions = self.engine.handle(event, self.now)
        for action in actions:
            assert self.stop is None, "Stop is the last action"
            if isinstance(action, WriteCommit):
                assert self.in_flight is None, "two commits in flight"
                self.in_flight = action
            elif isinstance(action, Restart):
                assert isinstance(event, ConnectionLost), f"unexpected restart after {event}"
                assert action.start_block == self.engine.safe_point
                # Frames of the abandoned stream that a runner may still have queued.
                rest = self.frames[self.position :]
                self.stale = [f for f in rest if not isinstance(f, Listening)]
                self.connect(action.start_block)
            else:
                assert isinstance(action, Stop)
                assert self.in_flight is None or isinstance(event, WriteFailed)
                self.stop = action
        return actions

    # --- rules ------------------------------------------------------------------------------

    @precondition(lambda self: self.stop is None and self.position < len(self.frames))
    @rule(count=st.integers(1, 8))
    def deliver(self, count: int) -> None:
        for _ in range(count):
            if self.stop is not None or self.position >= len(self.frames):
                return
            frame = self.frames[self.position]
            self.position += 1
            if isinstance(frame, Listening):
                self.stale = []  # the old stream's frames can no longer arrive
            self.feed(frame)

    @precondition(lambda self: self.stop is None and self.stale and self.position == 0)
    @rule()
    def deliver_stale_frame(self) -> None:
        # A frame of the abandoned stream, processed after the Restart went out (hole 6).
        before = (self.engine.pending_rows, self.engine.pending_rejects, self.engine.safe_point)
        self.feed(self.stale.pop(0))
        after = (self.engine.pending_rows, self.engine.pending_rejects, self.engine.safe_point)
        assert after == before

    @precondition(lambda self: self.stop is None)
    @rule()
    def drop_connection(self) -> None:
        actions = self.feed(ConnectionLost("1006"))
        assert (
            any(isinstance(a, Restart) for a in actions)
            or self.stop is not None
            or (self.engine.state is State.STOPPING)
        )

    @rule()
    def crash(self) -> None:
        self.new_engine()

    @precondition(lambda self: self.in_flight is not None)
    @rule()
    def crash_after_write_landed(self) -> None:
        assert self.in_flight is not None
        self.store.apply(self.in_flight)
        self.new_engine()

    @precondition(lambda self: self.in_flight is not None)
    @rule()
    def write_succeeds(self) -> None:
        commit, self.in_flight = self.in_flight, None
        assert commit is not None
        self.store.apply(commit)
        self.feed(WriteSucceeded(commit.commit_id))

    @precondition(lambda self: self.in_flight is not None)
    @rule()
    def write_fails(self) -> None:
        commit, self.in_flight = self.in_flight, None
        assert commit is not None
        actions = self.feed(WriteFailed(commit.commit_id, "disk full"))
        assert actions == [Stop(StopReason.WRITE_FAILED, "disk full")]
        assert self.engine.durable_next_block == self.store.next_block
        self.new_engine()

    @precondition(lambda self: self.stop is None)
    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 10.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.feed(Tick())

    @precondition(lambda self: self.stop is None)
    @rule()
    def request_stop(self) -> None:
        self.feed(StopRequested())

    @precondition(lambda self: self.stop is not None)
    @rule()
    def run_again(self) -> None:
        self.new_engine()

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def committed_exactly_once_and_never_ahead(self) -> None:
        store = self.store
        sequences = [r.global_sequence for r in store.rows]
        sequences += [r.global_sequence for r in store.rejects if r.global_sequence is not None]
        assert len(sequences) == len(set(sequences)), "a row was committed twice"
        if store.next_block is None:
            assert not store.rows and not store.rejects
            return
        # All rows of blocks < next_block are committed, and nothing else.
        rows, rejects = self.chain.truth(store.next_block)
        assert sorted(store.rows) == rows
        assert sorted(store.rejects, key=lambda r: (r.block_num, r.action_idx)) == rejects
        if self.stop_block is not None:
            assert store.next_block <= max(self.stop_block + 1, self.chain.first)

    @invariant()
    def engine_agrees_with_the_store(self) -> None:
        engine = self.engine
        assert engine.durable_next_block == self.store.next_block
        if engine.safe_point is not None and engine.durable_next_block is not None:
            assert engine.safe_point >= engine.durable_next_block
        assert engine.dropped_duplicates == 0  # an honest server never trips the safety net
        assert engine.faults == 0

    def teardown(self) -> None:
        if not hasattr(self, "chain"):
            return
        # Liveness: without further faults the run ends with everything committed.
        finishing = False
        for _ in range(10_000):
            if self.stop is not None:
                if self.stop.reason is StopReason.STOP_BLOCK or (
                    finishing and self.stop.reason is StopReason.REQUESTED
                ):
                    break
                self.new_engine()
            elif self.in_flight is not None:
                self.write_succeeds()
            elif self.position < len(self.frames):
                self.deliver(1)
            else:
                finishing = True
                self.feed(StopRequested())
        else:
            pytest.fail("the engine never finished")
        self.committed_exactly_once_and_never_ahead()
        end = self.chain.last + 1
        if self.stop_block is not None:
            end = max(min(end, self.stop_block + 1), self.chain.first)
        if self.stop_block is not None and self.stop_block < self.chain.first:
            assert self.store.next_block is None or self.store.next_block == self.chain.first
        else:
            assert self.store.next_block == end


EngineMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_engine_machine = EngineMachine.TestCase


class HeavyEngineMachine(EngineMachine):
    pass


HeavyEngineMachine.TestCase.settings = settings(
    max_examples=1000, stateful_step_count=120, deadline=None
)
test_engine_machine_heavy = pytest.mark.slow(HeavyEngineMachine.TestCase)
