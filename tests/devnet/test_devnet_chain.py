"""The pure chain generator: determinism, shapes, statistics, truth, fork order."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

import pytest

from karma_analytics.devnet.chain import (
    AIRDROP,
    CONTRACT,
    DEFAULT_GENESIS_MS,
    EOS_TOKEN,
    EXCHANGE,
    GS_BASE,
    GS_PER_BLOCK,
    Chain,
)
from karma_analytics.exceptions import UsageError
from karma_analytics.model import decode_transfer_hex, is_valid_name, parse_asset


def _fingerprint(block) -> tuple:
    return (
        block.num,
        block.id,
        block.time_ms,
        tuple(
            (
                trx.trx_id,
                trx.status,
                tuple(
                    (t.receiver, t.act.account, t.act.name, t.ordinal, t.creator, t.closest,
                     t.global_sequence, t.act.hex_data)
                    for t in trx.traces
                ),
            )
            for trx in block.transactions
        ),
    )  # fmt: skip


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain(seed=7)


@pytest.fixture(scope="module")
def dense() -> Chain:
    return Chain(seed=11, transfers_per_block=5)


@pytest.fixture(scope="module")
def dense_blocks(dense: Chain) -> list:
    # Blocks 1..600 are inside the first airdrop window.
    return [dense.generate(n) for n in range(1, 1500)]


def test_same_seed_same_blocks_in_any_order():
    a, b = Chain(seed=7, transfers_per_block=2), Chain(seed=7, transfers_per_block=2)
    numbers = [5, 123_456, 2, 99_999, 7]
    first = [_fingerprint(a.generate(n)) for n in numbers]
    second = [_fingerprint(b.generate(n)) for n in reversed(numbers)][::-1]
    assert first == second
    assert _fingerprint(a.block(123_456)) == first[1]  # memoised copy is the same block


def test_other_seed_other_chain():
    a, b = Chain(seed=7, transfers_per_block=2), Chain(seed=8, transfers_per_block=2)
    assert [a.block_id(n) for n in range(1, 50)] != [b.block_id(n) for n in range(1, 50)]
    assert [_fingerprint(a.generate(n)) for n in range(1, 50)] != [
        _fingerprint(b.generate(n)) for n in range(1, 50)
    ]


@pytest.mark.slow
def test_block_ids_times_and_trx_ids(dense_blocks):
    for block in dense_blocks[:300]:
        assert len(block.id) == 64 and int(block.id, 16) >= 0
        assert int(block.id[:8], 16) == block.num
        assert block.time_ms == DEFAULT_GENESIS_MS + 500 * block.num
        for trx in block.transactions:
            assert len(trx.trx_id) == 64 and int(trx.trx_id, 16) >= 0
    ids = [trx.trx_id for b in dense_blocks for trx in b.transactions]
    assert len(ids) == len(set(ids))


def test_block_zero_and_out_of_range_are_usage_errors(chain):
    with pytest.raises(UsageError):
        chain.block(0)
    with pytest.raises(UsageError):
        chain.block(2**32)
    with pytest.raises(UsageError):
        Chain(transfers_per_block=-1)
    with pytest.raises(UsageError):
        Chain(fork_every=5, fork_depth=5)


def test_global_sequence_unique_increasing_and_large(dense_blocks):
    last = 0
    for block in dense_blocks:
        base = GS_BASE + block.num * GS_PER_BLOCK
        for trx in block.transactions:
            if trx.status != "executed":
                continue
            for trace in trx.traces:
                gs = trace.global_sequence
                assert gs > last and base <= gs < base + GS_PER_BLOCK
                assert gs > 2**32
                last = gs


@pytest.mark.slow
def test_transfer_fields_are_valid(dense_blocks):
    memo_sizes = []
    for block in dense_blocks:
        for trx in block.transactions:
            for trace in trx.traces:
                act = trace.act
                if act.name != "transfer" or trace.receiver != act.account:
                    continue
                data = act.data
                assert data["from"] != data["to"]
                assert is_valid_name(data["from"]) and is_valid_name(data["to"])
                asset = parse_asset(data["quantity"])
                assert asset.amount_units > 0
                if act.account == CONTRACT:
                    assert (asset.precision, asset.symbol) == (4, "KARMA")
                memo = data["memo"]
                memo_sizes.append(len(memo.encode()))
                # hex_data is the ABI encoding of the same fields (antelope-sources.md §1.4).
                assert decode_transfer_hex(act.hex_data) == data
    assert max(memo_sizes) == 256  # the cap is reached, never exceeded
    assert min(memo_sizes) == 0
    assert any(size > 0 for size in memo_sizes)


def test_memos_include_utf8_cjk_and_json(chain):
    memos = [t.memo for t in chain.truth(1, 20_000)]
    assert any(any("\u4e00" <= c <= "\u9fff" for c in m) for m in memos)
    assert any(m.startswith('{"op"') for m in memos)
    assert any(len(m.encode()) > len(m) for m in memos)
    assert all(len(m.encode()) <= 256 for m in memos)


def test_accounts_are_valid_twelve_char_names(chain):
    assert len(chain.accounts) == 3000
    assert len(set(chain.accounts)) == 3000
    assert all(len(a) == 12 and is_valid_name(a) for a in chain.accounts)


def test_three_traces_per_transfer_and_notification_ordinals(dense_blocks):
    seen_plain = 0
    for block in dense_blocks:
        for trx in block.transactions:
            traces = trx.traces
            for i, trace in enumerate(traces):
                act = trace.act
                if act.name != "transfer" or trace.receiver != act.account:
                    continue
                notes = [t for t in traces if t.act is act and t is not trace]
                expected = {act.data["from"], act.data["to"]} - {act.account}
                assert {t.receiver for t in notes} == expected
                for note in notes:
                    assert note.creator == trace.ordinal == note.closest
                    assert traces.index(note) > i
                if len(expected) == 2:
                    seen_plain += 1
    assert seen_plain > 100


def test_airdrop_bursts_and_inline_transfers(dense_blocks):
    batch = inline = issue_inline = 0
    for block in dense_blocks:
        for trx in block.transactions:
            executions = [
                t for t in trx.traces
                if t.act.name == "transfer" and t.receiver == t.act.account == CONTRACT
            ]  # fmt: skip
            if len(executions) == 25 and all(t.creator == 0 for t in executions):
                batch += 1
                assert {t.act.data["from"] for t in executions} == {AIRDROP}
            for t in executions:
                if t.creator != 0:
                    inline += 1
                    parent = next(p for p in trx.traces if p.ordinal == t.creator)
                    assert parent.act.name in ("issue", "distribute")
                    issue_inline += parent.act.name == "issue"
    assert batch > 0 and inline > 0 and issue_inline > 0


def test_noise_is_present_and_excluded_from_truth(dense, dense_blocks):
    names = Counter()
    statuses = Counter()
    for block in dense_blocks:
        for trx in block.transactions:
            statuses[trx.status] += 1
            for t in trx.traces:
                names[(t.act.account, t.act.name)] += 1
    assert names[(CONTRACT, "powerup")] and names[(CONTRACT, "claim")]
    assert names[(CONTRACT, "issue")] and names[(CONTRACT, "rewarded")]
    assert names[(EOS_TOKEN, "transfer")]
    assert sum(v for k, v in statuses.items() if k != "executed") > 0
    truth = list(dense.truth(1, 1499))
    assert all(t.contract == CONTRACT and t.action == "transfer" for t in truth)
    executed_transfers = sum(
        1
        for b in dense_blocks
        for trx in b.transactions
        if trx.status == "executed"
        for t in trx.traces
        if t.act.name == "transfer" and t.receiver == t.act.account == CONTRACT
    )
    assert len(truth) == executed_transfers
    gs = [t.global_sequence for t in truth]
    assert gs == sorted(gs) and len(set(gs)) == len(gs)
    eos = list(dense.truth(1, 200, contract=EOS_TOKEN))
    assert eos and all(t.symbol == "EOS" for t in eos)


def test_hubs_and_zipf_skew(chain):
    rows = list(chain.truth(1, 40_000))
    counts = Counter(itertools.chain.from_iterable((r.from_account, r.to_account) for r in rows))
    top = [name for name, _ in counts.most_common(10)]
    assert EXCHANGE in top and AIRDROP in top
    # Zipf-like: the busiest user account is far above the median one.
    users = [c for name, c in counts.items() if name in set(chain.accounts)]
    users.sort()
    assert users[-1] > 20 * users[len(users) // 2]
    amounts = Counter(r.amount_units for r in rows)
    assert amounts.most_common(1)[0][1] > 50  # repeated bot / round amounts


@pytest.mark.slow
def test_demo_range_has_50k_transfers_over_two_utc_days(chain):
    rows = list(chain.truth(1, 200_000))
    assert len(rows) >= 50_000
    days = {dt.datetime.fromtimestamp(r.block_time / 1000, dt.UTC).date() for r in rows}
    assert len(days) >= 2


def test_nonempty_between_matches_is_empty(chain):
    nums = chain.nonempty_between(4000, 9000)
    assert nums == [n for n in range(4000, 9001) if not chain.is_empty(n)]
    assert all(chain.generate(n).transactions for n in nums[:50])
    assert not any(chain.generate(n).transactions for n in range(4000, 4200) if n not in nums)
    with_progress = chain.nonempty_between(4000, 4100, 10)
    assert set(range(4000, 4101, 10)) <= set(with_progress)


def test_reversible_events_order():
    chain = Chain(seed=3, fork_every=10, fork_depth=3)
    events = list(itertools.islice(chain.reversible_events(5), 20))
    assert events[:3] == [(5, 0, 5), (6, 0, 6), (7, 0, 7)]
    # Blocks 8-10 are first seen forked out, then replaced once block 11 exists.
    assert events[3:6] == [(8, 10, 8), (9, 10, 9), (10, 10, 10)]
    assert events[6:9] == [(8, 0, 11), (9, 0, 11), (10, 0, 11)]
    assert events[9] == (11, 0, 11)
    assert chain.block(8, 10).id != chain.block(8).id
    assert chain.block(8, 10).id[:8] == chain.block(8).id[:8]
    # Starting inside a fork window: everything after the first block >= start passes.
    assert list(itertools.islice(chain.reversible_events(9), 5)) == [
        (9, 10, 9), (10, 10, 10), (8, 0, 11), (9, 0, 11), (10, 0, 11),
    ]  # fmt: skip
    plain = Chain(seed=3)
    assert list(itertools.islice(plain.reversible_events(1), 3)) == [
        (1, 0, 1),
        (2, 0, 2),
        (3, 0, 3),
    ]


def _twins(chain: Chain, first: int, last: int) -> list:
    """Transactions holding the same KARMA transfer action twice: (block, trx, executions)."""
    out = []
    for num in chain.nonempty_between(first, last):
        block = chain.generate(num)
        for trx in block.transactions:
            if trx.status != "executed":
                continue
            groups: dict = {}
            for t in trx.traces:
                act = t.act
                if act.name == "transfer" and t.receiver == act.account == CONTRACT:
                    key = (act.authorization, act.hex_data)
                    groups.setdefault(key, []).append(t)
            out.extend((block, trx, g) for g in groups.values() if len(g) > 1)
    return out


def test_twin_rate_sends_identical_transfers_in_one_transaction():
    chain = Chain(seed=7, transfers_per_block=2, twin_rate=0.1)
    twins = _twins(chain, 1, 3000)
    assert len(twins) > 50
    truth = {(r.trx_id, r.global_sequence): r for r in chain.truth(1, 3000)}
    for _block, trx, (one, two) in twins:
        a, b = one.act, two.act
        assert a is not b  # two actions (two Hyperion docs unless collapsed) ...
        assert (a.account, a.name, a.authorization, a.data, a.hex_data) == (
            b.account, b.name, b.authorization, b.data, b.hex_data
        )  # fmt: skip
        assert a.digest == b.digest  # ... with the same act_digest (a hash of the content)
        assert (one.ordinal, two.ordinal) == (1, 2) and one.creator == two.creator == 0
        assert one.global_sequence < two.global_sequence
        # EOSIO order: action 1, its notifications (ordinals 3, 4), action 2, its (5, 6).
        assert [(t.receiver, t.ordinal, t.creator) for t in trx.traces] == [
            (CONTRACT, 1, 0), (a.data["from"], 3, 1), (a.data["to"], 4, 1),
            (CONTRACT, 2, 0), (b.data["from"], 5, 2), (b.data["to"], 6, 2),
        ]  # fmt: skip
        assert [t.global_sequence for t in trx.traces] == list(
            range(one.global_sequence, one.global_sequence + 6)
        )
        rows = [truth[(trx.trx_id, t.global_sequence)] for t in (one, two)]
        assert [r.action_idx for r in rows] == [0, 1]
        assert rows[0].memo == rows[1].memo and rows[0].amount_units == rows[1].amount_units


@pytest.mark.slow
def test_twin_rate_changes_nothing_else():
    plain = Chain(seed=7, transfers_per_block=2)
    assert not _twins(plain, 1, 3000)
    assert not _twins(Chain(seed=7, transfers_per_block=2, twin_rate=0.0), 1, 3000)
    twinned = Chain(seed=7, transfers_per_block=2, twin_rate=0.1)
    with_twins = {block.num for block, _trx, _g in _twins(twinned, 1, 3000)}
    for num in range(1, 3000):
        a, b = plain.generate(num), twinned.generate(num)
        assert [t.trx_id for t in a.transactions] == [t.trx_id for t in b.transactions]
        if num not in with_twins:
            assert _fingerprint(a) == _fingerprint(b)
    # Any block on its own, in any order, as in a full walk.
    again = Chain(seed=7, transfers_per_block=2, twin_rate=0.1)
    for num in sorted(with_twins, reverse=True)[:20]:
        assert _fingerprint(again.generate(num)) == _fingerprint(twinned.generate(num))
    with pytest.raises(UsageError):
        Chain(twin_rate=1.5)
