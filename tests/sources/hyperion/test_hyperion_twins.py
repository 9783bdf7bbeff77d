"""Identical actions in one transaction (Chain ``twin_rate``) through the devnet Hyperion and
HyperionSource: with ``data_bug="collapse-identical"`` (<= 4.0.3, issue #148, hyperion.md
§4.3-4.4) the server folds each pair into one document with six receipts, and the source still
gives one transfer per receipt of the contract, so every execution of the chain's truth."""

from __future__ import annotations

import pytest
from hyperion_helpers import drive, hyperion_truth, run, source_for

from karma_analytics.devnet.chain import CONTRACT
from karma_analytics.devnet.hyperion import HyperionServer

FROZEN = {"head": 250_000, "block_interval": 0.0, "lib_lag": 2}
FIRST, LAST = 1, 12_000
TWIN_RATE = 0.05


async def collect(server_options: dict, **settings) -> tuple:
    server = HyperionServer(**{**FROZEN, "twin_rate": TWIN_RATE, **server_options})
    await server.start()
    try:
        source = source_for(server.url, LAST, **settings)
        out = await drive(source, FIRST, LAST)
        return out, hyperion_truth(server.chain, FIRST, LAST), server, source
    finally:
        await server.stop()


def folded(server: HyperionServer) -> dict[int, int]:
    """``global_sequence -> action_ordinal`` of the contract executions the server folded into
    another one's document (every contract receipt of a collapsed doc but its first)."""
    out: dict[int, int] = {}
    for num in server.chain.nonempty_between(FIRST, LAST):
        for doc in server.docs(num):
            executions = [t for t in doc.traces if t.receiver == CONTRACT == t.act.account]
            for trace in executions[1:]:
                out[trace.global_sequence] = doc.traces[0].ordinal
    return out


def twin_pairs(rows: list) -> int:
    """How many transactions hold two records of the same transfer (action ordinals 1, 2)."""
    seen: dict[tuple, list[int]] = {}
    for r in rows:
        key = (r.trx_id, r.from_account, r.to_account, r.amount_units, r.memo)
        seen.setdefault(key, []).append(r.action_idx)
    return sum(1 for idx in seen.values() if idx == [0, 1])


@pytest.mark.slow
def test_collapsed_identical_transfers_give_every_execution() -> None:
    out, truth, server, source = run(
        collect({"data_bug": "collapse-identical", "hyperion_version": "3.3"}, workers=4)
    )
    # The server really folded identical actions (six receipts, two of the contract) ...
    hidden = folded(server)
    assert len(hidden) > 50 and twin_pairs(truth) == len(hidden)
    # ... and the source recovered each hidden execution: the same records as the chain's truth,
    # keys (global_sequence) included ...
    rows = out["rows"]
    assert not out["rejects"]
    assert [r.global_sequence for r in rows] == [r.global_sequence for r in truth]
    assert [r._replace(action_idx=0) for r in rows] == [r._replace(action_idx=0) for r in truth]
    # ... except the ordinal of a folded execution, which a collapsed document does not carry:
    # it has its document's (sources/hyperion/docs.py), action_ordinal 1 instead of 2.
    expected = [
        r._replace(action_idx=hidden[r.global_sequence] - 1) if r.global_sequence in hidden else r
        for r in truth
    ]
    assert rows == expected
    assert source.stats.docs.collapsed == len(hidden)
    assert {truth[i].action_idx for i, r in enumerate(truth) if r.global_sequence in hidden} == {1}


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.3", "4.0.7"])
def test_identical_transfers_without_the_data_bug_give_exactly_the_truth(version: str) -> None:
    out, truth, server, source = run(collect({"hyperion_version": version}, workers=4))
    assert not folded(server) and source.stats.docs.collapsed == 0
    assert twin_pairs(truth) > 50
    assert out["rows"] == truth and not out["rejects"]
