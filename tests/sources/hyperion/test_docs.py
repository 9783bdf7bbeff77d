"""docs.py: Hyperion documents -> transfers, for the recorded WAX facts and every version shape."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import msgspec
import pytest

from karma_analytics.devnet.chain import CONTRACT, Chain
from karma_analytics.devnet.hyperion_docs import block_docs, rest_doc
from karma_analytics.exceptions import ProtocolError
from karma_analytics.model import parse_block_time
from karma_analytics.sources.hyperion.docs import DocStats, FastDecoder, decode_doc, decode_docs
from karma_analytics.sources.hyperion.rest import _typed_decoder

DATA = Path(__file__).resolve().parents[2] / "data" / "hyperion"


def wax_docs() -> list[dict]:
    return json.loads((DATA / "wax-3.3.9-get_actions.json").read_text())["actions"]


def test_recorded_wax_page_decodes_to_its_five_transfers() -> None:
    events = [e for d in wax_docs() for e in decode_doc(d, "eosio.token", "transfer")]
    rows = [e.transfer for e in events]
    assert all(r is not None for r in rows)
    got = [
        (r.block_num, r.global_sequence, r.from_account, r.to_account, r.amount_units,
         r.precision, r.symbol, r.memo, r.action_idx)
        for r in rows
    ]  # fmt: skip
    assert got == [
        (287085451, 87725138180, "gqyqi.wam", "teamgreymass", 1, 8, "WAX",
         "Yay WharfKit! Thank you <3", 1),
        (287052968, 87722228609, "eosio.bpay", "teamgreymass", 523910357665, 8, "WAX",
         "producer block pay", 5),
        (287050776, 87722045250, "eosio.voters", "teamgreymass", 11235174772, 8, "WAX",
         "voter pay", 5),
        (286880155, 87706745735, "eosio.bpay", "teamgreymass", 523085529570, 8, "WAX",
         "producer block pay", 5),
        (286877963, 87706560125, "eosio.voters", "teamgreymass", 11314328512, 8, "WAX",
         "voter pay", 5),
    ]  # fmt: skip
    first = rows[0]
    # @timestamp has no Z and is UTC.
    assert first.block_time == parse_block_time("2024-01-11T23:17:15.000Z")
    assert first.block_id.startswith("111c938b") and first.trx_id.startswith("7894d74f")
    assert first.contract == "eosio.token" and first.action == "transfer"


def test_the_float_amount_is_never_read() -> None:
    doc = wax_docs()[0]
    assert doc["act"]["data"]["amount"] == 1e-08
    doc["act"]["data"]["amount"] = 123.0  # a wrong float changes nothing
    (event,) = decode_doc(doc, "eosio.token", "transfer")
    assert event.transfer.amount_units == 1 and event.transfer.precision == 8


def test_docs_of_another_contract_or_action_are_not_ours() -> None:
    stats = DocStats()
    assert decode_doc(wax_docs()[0], "therealkarma", "transfer", stats) == []
    assert decode_doc(wax_docs()[0], "eosio.token", "issue", stats) == []
    assert stats.foreign == 2


def test_v404_notification_fragments_are_skipped() -> None:
    doc = wax_docs()[0]
    stats = DocStats()
    fragments = []
    for receipt in doc["receipts"]:
        fragment = copy.deepcopy(doc)
        fragment["receipts"] = [receipt]
        fragment["global_sequence"] = receipt["global_sequence"]
        fragments.append(fragment)
    events = decode_docs(fragments, "eosio.token", "transfer", stats)
    assert [e.global_sequence for e in events] == [87725138180]
    assert stats.fragments == 2


def test_collapsed_identical_actions_give_one_transfer_per_execution_in_order() -> None:
    # <= 4.0.3 (#148): two identical transfers of one transaction folded into one document;
    # another action of the same transaction executed between them.
    a = copy.deepcopy(wax_docs()[0])
    a["receipts"] = a["receipts"] + [
        {"receiver": "eosio.token", "global_sequence": 87725138186},
        {"receiver": "gqyqi.wam", "global_sequence": 87725138187},
        {"receiver": "teamgreymass", "global_sequence": 87725138188},
    ]
    b = copy.deepcopy(wax_docs()[0])
    b["global_sequence"] = 87725138183
    b["receipts"] = [
        {"receiver": r, "global_sequence": 87725138183 + i}
        for i, r in enumerate(("eosio.token", "gqyqi.wam", "teamgreymass"))
    ]
    b["act"]["data"]["memo"] = "between"
    stats = DocStats()
    events = decode_docs([a, b], "eosio.token", "transfer", stats)
    assert [e.global_sequence for e in events] == [87725138180, 87725138183, 87725138186]
    assert [e.transfer.memo for e in events] == [
        "Yay WharfKit! Thank you <3",
        "between",
        "Yay WharfKit! Thank you <3",
    ]
    assert stats.collapsed == 1 and stats.transfers == 3


def test_raw_stream_docs_fold_the_transfer_object_and_string_sequences() -> None:
    rest = wax_docs()[1]
    raw = copy.deepcopy(rest)
    data = raw["act"]["data"]
    raw["@transfer"] = {k: data.pop(k) for k in ("from", "to", "amount", "symbol", "memo")}
    raw["receipts"] = [{**r, "global_sequence": str(r["global_sequence"])} for r in raw["receipts"]]
    del raw["timestamp"]
    assert decode_doc(raw, "eosio.token", "transfer") == decode_doc(rest, "eosio.token", "transfer")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["act"].__setitem__("data", "0a1b2c"), "act.data"),
        (lambda d: d["act"]["data"].__setitem__("from", "Not.Valid"), "act.data.from"),
        (lambda d: d["act"]["data"].__setitem__("quantity", "1e-8 WAX"), "act.data.quantity"),
        (lambda d: d["act"]["data"].pop("quantity"), "act.data.quantity"),
        (lambda d: d["act"]["data"].__setitem__("memo", 5), "act.data.memo"),
        (lambda d: d.__setitem__("block_id", "xyz"), "block_id"),
        (lambda d: d.__setitem__("@timestamp", "yesterday"), "@timestamp"),
    ],
)
def test_bad_docs_become_rejects_with_reason(change, reason) -> None:
    doc = wax_docs()[0]
    change(doc)
    (event,) = decode_doc(doc, "eosio.token", "transfer")
    assert event.transfer is None
    reject = event.reject
    assert reject.reason.startswith(reason)
    assert reject.block_num == 287085451 and reject.global_sequence == 87725138180
    assert json.loads(reject.raw)["trx_id"] == doc["trx_id"]


@pytest.mark.parametrize("field", ["block_num", "global_sequence"])
def test_a_doc_that_cannot_be_placed_is_a_protocol_fault(field) -> None:
    doc = wax_docs()[0]
    doc[field] = "soon"
    with pytest.raises(ProtocolError) as info:
        decode_doc(doc, "eosio.token", "transfer")
    assert not info.value.fatal


# The backfill's fast path: typed documents (msgspec structs) through FastDecoder must give
# exactly what decode_doc gives on the same documents as dicts, or None (then the caller
# uses decode_doc).


def typed_docs(docs: list[dict]) -> list:
    return _typed_decoder.decode(json.dumps({"actions": docs}).encode()).actions


def fast_equals_reference(docs: list[dict], contract: str) -> int:
    """Asserts the fast path agrees with the reference on every doc; returns how many it took."""
    fast = FastDecoder(contract, "transfer")
    taken = 0
    for raw, typed in zip(docs, typed_docs(docs), strict=True):
        ref_stats = DocStats()
        event = fast.decode(typed)
        reference = decode_doc(raw, contract, "transfer", ref_stats)
        if event is not None:
            taken += 1
            assert [event] == reference
            # What the caller counts for a document the fast path took.
            assert (ref_stats.docs, ref_stats.transfers) == (1, 1)
    return taken


def test_fast_path_equals_the_reference_on_the_recorded_wax_page() -> None:
    assert fast_equals_reference(wax_docs(), "eosio.token") == 5


@pytest.mark.parametrize("bug", ["none", "collapse-identical", "fragment-notifications"])
def test_fast_path_equals_the_reference_on_devnet_pages(bug: str) -> None:
    chain = Chain(seed=5, transfers_per_block=4)
    docs = [
        rest_doc(d)
        for num in range(1, 300)
        for d in block_docs(chain.block(num), bug)
        if d.act.account == CONTRACT and d.act.name == "transfer"
    ]
    single = [d for d in docs if [r["receiver"] for r in d["receipts"]].count(CONTRACT) == 1]
    # Every doc holding one execution takes the fast path; fragments and collapsed docs do not.
    assert fast_equals_reference(docs, CONTRACT) == len(single) > 0


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["act"]["data"].__setitem__("from", "Not.Valid"),
        lambda d: d["act"]["data"].__setitem__("to", "waytoolongname1"),
        lambda d: d["act"]["data"].__setitem__("quantity", "1e-8 WAX"),
        lambda d: d["act"]["data"].__setitem__("quantity", "1.0 wax"),
        lambda d: d.__setitem__("block_id", "xyz"),
        lambda d: d.__setitem__("trx_id", "ABC"),
        lambda d: d.__setitem__("@timestamp", "yesterday"),
        lambda d: d.__setitem__("block_num", 0),
        lambda d: d.__setitem__("block_num", 2**32),
        lambda d: d.__setitem__("global_sequence", 2**64),
        lambda d: d.__setitem__("action_ordinal", 0),
        lambda d: d["receipts"][0].__setitem__("global_sequence", -1),
        lambda d: d["receipts"].append(dict(d["receipts"][0])),  # collapsed
        lambda d: d.__setitem__("receipts", []),  # a fragment
        lambda d: d["receipts"][0].__setitem__("receiver", "gqyqi.wam"),
        lambda d: d["act"].__setitem__("name", "issue"),
    ],
)
def test_fast_path_hands_what_it_does_not_accept_to_the_reference(change) -> None:
    doc = wax_docs()[0]
    change(doc)
    try:
        typed = typed_docs([doc])
    except msgspec.ValidationError:
        return  # a number out of range: the page is not typed, the reference decides it
    assert FastDecoder("eosio.token", "transfer").decode(typed[0]) is None
