"""Frame text of the devnet: exact dfuse encodings (pure)."""

from __future__ import annotations

import json
import re

from karma_analytics.devnet import wire
from karma_analytics.devnet.chain import CONTRACT, Chain
from karma_analytics.model import (
    format_block_time,
    format_trace_time,
    transfer_from_action_trace,
)


def _first(chain: Chain, predicate):
    for num in range(1, 3000):
        block = chain.block(num)
        for trx in block.transactions:
            if trx.status != "executed":
                continue
            for idx, trace in enumerate(trx.traces):
                if predicate(trace):
                    return trace, idx, trx, block
    raise AssertionError("no such trace")


CHAIN = Chain(seed=5, transfers_per_block=3)


def test_block_times_match_model_formatters():
    for ms in (0, 500, 1_795_723_200_000, 1_795_723_200_500, 1_795_809_599_500, 4_102_444_800_500):
        assert wire.block_times(ms) == (format_block_time(ms), format_trace_time(ms))


def test_go_string_escapes_like_go():
    assert wire.go_string('a<b>&"c"\\\n') == '"a\\u003cb\\u003e\\u0026\\"c\\"\\\\\\n"'
    assert wire.go_string("谢谢 🎉") == '"谢谢 🎉"'
    assert json.loads(wire.go_string("x\u2028y")) == "x\u2028y"
    assert "\\u2028" in wire.go_string("x\u2028y")


def test_uint64_rule():
    assert wire.u64(4294967295) == "4294967295"
    assert wire.u64(4294967296) == '"4294967296"'


def test_envelope_key_order_and_omitted_req_id():
    assert wire.envelope("listening", "r1", '{"next_block":5}') == (
        '{"type":"listening","req_id":"r1","data":{"next_block":5}}'
    )
    assert wire.envelope("unlistened", "", '{"success":true}') == (
        '{"type":"unlistened","data":{"success":true}}'
    )


def test_error_object_details_omitted_when_empty():
    text = wire.error_frame("", "c", "m", None, "abc")
    assert text == '{"type":"error","data":{"code":"c","trace_id":"abc","message":"m"}}'
    text = wire.error_frame("r", "c", "m", {"reason": "x"}, "abc")
    assert json.loads(text)["data"]["details"] == {"reason": "x"}
    assert len(wire.trace_id(7, 1)) == 32 and wire.trace_id(7, 1) != wire.trace_id(7, 2)


def test_ping_frame_is_rfc3339nano_utc():
    assert wire.ping_frame(1_614_854_174_526_391_919) == (
        '{"type":"ping","data":"2021-03-04T10:36:14.526391919Z"}'
    )
    assert (
        wire.ping_frame(1_614_854_174_000_000_000)
        == '{"type":"ping","data":"2021-03-04T10:36:14Z"}'
    )
    assert wire.ping_frame(1_614_854_174_500_000_000).endswith('14.5Z"}')


def test_action_trace_data_has_every_field_and_parses():
    trace, idx, trx, block = _first(
        CHAIN, lambda t: t.act.name == "transfer" and t.receiver == CONTRACT == t.act.account
    )
    text = wire.action_trace_data(trace, idx, trx, block, wire.DEFAULT_SHAPE)
    data = json.loads(text)
    assert list(data) == ["block_num", "block_id", "block_time", "trx_id", "idx", "trace"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.5)?Z", data["block_time"])
    t = data["trace"]
    assert list(t) == [
        "action_ordinal", "creator_action_ordinal", "closest_unnotified_ancestor_action_ordinal",
        "receipt", "receiver", "act", "context_free", "elapsed", "console", "trx_id",
        "block_num", "block_time", "producer_block_id", "account_ram_deltas", "inline_traces",
    ]  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.500)?", t["block_time"])
    assert "except" not in t and "error_code" not in t and "depth" not in data
    receipt = t["receipt"]
    assert isinstance(receipt["global_sequence"], str)  # > 2^32: a decimal string
    assert int(receipt["global_sequence"]) == trace.global_sequence
    assert list(t["act"]) == ["account", "name", "authorization", "data", "hex_data"]
    assert t["inline_traces"] == []
    record = transfer_from_action_trace(data)
    assert record is not None
    assert record.global_sequence == trace.global_sequence and record.action_idx == idx


def test_notification_trace_uses_small_numbers_and_is_not_a_record():
    trace, idx, trx, block = _first(
        CHAIN, lambda t: t.act.name == "transfer" and t.receiver != t.act.account
    )
    data = json.loads(wire.action_trace_data(trace, idx, trx, block, wire.DEFAULT_SHAPE))
    assert isinstance(data["trace"]["receipt"]["recv_sequence"], int)
    assert transfer_from_action_trace(data) is None


def test_inline_traces_nest_children_in_execution_order():
    trace, idx, trx, block = _first(CHAIN, lambda t: t.act.name == "issue")
    data = json.loads(wire.action_trace_data(trace, idx, trx, block, wire.Shape(inline=True)))
    children = data["trace"]["inline_traces"]
    assert [c["act"]["name"] for c in children] == ["transfer"]
    notes = children[0]["inline_traces"]
    assert [n["receiver"] for n in notes] == [children[0]["act"]["data"]["to"]]
    assert children[0]["creator_action_ordinal"] == data["trace"]["action_ordinal"]


def test_ops_only_when_requested_and_non_empty():
    trace, idx, trx, block = _first(
        CHAIN,
        lambda t: (
            t.act.name == "transfer" and t.receiver == CONTRACT == t.act.account and t.new_row
        ),
    )
    plain = json.loads(wire.action_trace_data(trace, idx, trx, block, wire.DEFAULT_SHAPE))
    assert not {"dbops", "ramops", "dtrxops", "tableops"} & set(plain)
    full = json.loads(
        wire.action_trace_data(trace, idx, trx, block, wire.Shape(False, True, True, True, True))
    )
    assert {"dbops", "ramops", "tableops"} <= set(full)
    assert "dtrxops" not in full  # requested but empty: omitted
    assert [op["op"] for op in full["dbops"]] == ["UPD", "INS"]
    assert full["dbops"][1]["npayer"] == trace.act.from_account
    assert "opayer" not in full["dbops"][1] and "old" not in full["dbops"][1]
    assert all(op["action_idx"] == idx for op in full["dbops"] + full["ramops"])
    assert full["ramops"][0]["family"] == "table_row"
    assert full["tableops"][0]["path"] == f"{CONTRACT}/{trace.act.to_account}/accounts"
    assert full["trace"]["account_ram_deltas"] == [
        {"account": trace.act.from_account, "delta": 240}
    ]
    note, nidx, ntrx, nblock = _first(CHAIN, lambda t: t.receiver != t.act.account)
    only = json.loads(
        wire.action_trace_data(note, nidx, ntrx, nblock, wire.Shape(False, True, True, True, True))
    )
    assert not {"dbops", "ramops", "dtrxops", "tableops"} & set(only)


def test_head_info_shape():
    data = json.loads(wire.head_info_data(CHAIN.block(100), CHAIN.block(98)))
    assert list(data) == [
        "last_irreversible_block_num", "last_irreversible_block_id", "head_block_num",
        "head_block_id", "head_block_time", "head_block_producer",
    ]  # fmt: skip
    assert data["head_block_num"] == 100 and data["last_irreversible_block_num"] == 98
