"""The SHiP codec and decoder against real golden vectors, composed vectors and properties.

Vectors: tests/data/ship/ (PROVENANCE.md there): F1 the Telos ``traces`` payload, F2 the ABI,
F3 the abieos transfer data, F5 the 20 eos-etl mainnet transfers; the composed messages of
antelope-sources.md §2.8 / ship.md §1.3.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karma_analytics.engine import ActionReceived, Progress
from karma_analytics.exceptions import ParseError, ProtocolError
from karma_analytics.model import format_asset, name_to_uint64, uint64_to_name
from karma_analytics.sources.ship import codec
from karma_analytics.sources.ship.abi import parse_abi
from karma_analytics.sources.ship.codec import DecodeError
from karma_analytics.sources.ship.decode import (
    BlockDecoder,
    GapError,
    block_time_ms,
    matching_names,
    scan_traces,
)

DATA = Path(__file__).parents[2] / "data" / "ship"
ABI_TEXT = (DATA / "ship.abi.json").read_text("utf-8")
TELOS = bytes.fromhex((DATA / "traces-telos-v0.hex").read_text().strip())
KARMA = name_to_uint64("therealkarma")
TRANSFER = name_to_uint64("transfer")

# antelope-sources.md §2.8: status (head 1001, LIB 670, logs 2..1002, EOS chain id) and the
# 728-byte block 1000 with one KARMA transfer and its two notifications.
STATUS_HEX = (
    "00e9030000000003e97e3cd00c4264fde9ee7402cc249e8028eb6f76ff1418941a755eddb99e020000000002"
    "9e09ee0e5fc252059301d8b63e29024832e46365f42ba315d721206b9002000000ea03000002000000ea0300"
    "00aca376f206b8fc25a6ed44dbdc66547c36c6c33e3a119ffbeaef943642f0e906"
)
BLOCK_HEX = (
    "01e9030000000003e97e3cd00c4264fde9ee7402cc249e8028eb6f76ff1418941a755eddb99e020000000002"
    "9e09ee0e5fc252059301d8b63e29024832e46365f42ba315d721206b9001e8030000000003e896a0a6111e3c"
    "2706d61deb84c7c8e5a137b776f34a7dc3775f3652de01e7030000000003e70590a3ea8618fca78dd2451ac3"
    "4658cdbb9bf2bb065564e92260df9d0001c0040100abababababababababababababababababababababababab"
    "abababababababab00fa00000010000000000000000080000000000000000003010100010060e435301a7555"
    "cb759600739399bc9af7a312d787625c4ea66cf370cd4323773339bacbbf4b5bd4e8030000000000000a0000"
    "0000000000010000000000855c340500000000000000010160e435301a7555cb60e435301a7555cb00000057"
    "2d3ccdcd010000000000855c3400000000a8ed3232230000000000855c340000000000000e3d393000000000"
    "0000044b41524d410000026869000000000000000000000000000001020101000000000000855c3475960073"
    "9399bc9af7a312d787625c4ea66cf370cd4323773339bacbbf4b5bd4e9030000000000001400000000000000"
    "010000000000855c34060000000000000001010000000000855c3460e435301a7555cb000000572d3ccdcd01"
    "0000000000855c3400000000a8ed3232230000000000855c340000000000000e3d3930000000000000044b41"
    "524d410000026869000000000000000000000000000001030101000000000000000e3d759600739399bc9af7"
    "a312d787625c4ea66cf370cd4323773339bacbbf4b5bd4ea030000000000001e000000000000000100000000"
    "00855c34070000000000000001010000000000000e3d60e435301a7555cb000000572d3ccdcd010000000000"
    "855c3400000000a8ed3232230000000000855c340000000000000e3d3930000000000000044b41524d410000"
    "0268690000000000000000000000000000000000000000"
)


# --- golden vectors -----------------------------------------------------------------------------


def test_telos_traces_decode_byte_for_byte() -> None:
    traces = codec.decode_traces(TELOS)
    assert len(TELOS) == 7757 and len(traces) == 2
    assert codec.encode_traces(traces) == TELOS  # every field kept, nothing left over
    onblock, vrf = traces
    assert [t.status for t in traces] == [0, 0]
    assert all(t.partial is not None and t.failed_dtrx_trace is None for t in traces)
    assert onblock.id.hex() == "c102e4e7f45c22323866e70a1e8b8ed73b05b16794e7fd1131b8ddc6dc5a5b16"
    assert vrf.id.hex() == "fb12f424fc903ef5f7d5e93b118c3bdd2eb18eb397d0760d436d73bdafc7cb33"
    actions = [a for t in traces for a in t.action_traces]
    assert all(isinstance(a, codec.ActionTraceV0) for a in actions)
    assert [(a.receiver, a.act.account, a.act.name) for a in actions] == [
        ("eosio", "eosio", "onblock"),
        ("vrftesttest1", "vrftesttest1", "setrand"),
        ("vrfcallerst1", "vrfcallerst1", "receiverand"),
    ]
    assert [a.receipt.global_sequence for a in actions] == [117094983, 117094984, 117094985]
    assert [len(a.act.data) for a in actions] == [116, 2487, 1836]
    assert [(a.action_ordinal, a.creator_action_ordinal) for a in actions[1:]] == [(1, 0), (2, 1)]
    console = actions[2].console
    assert len(console) == 2684 and console.startswith(b"Receiverand calle")
    assert hashlib.sha256(console).hexdigest() == (
        "42584a905409de1a154c602814a0c7d94f323e2150a222678bffa43ebbf35f4f"
    )
    with pytest.raises(UnicodeDecodeError) as info:
        console.decode("utf-8")
    assert info.value.start == 787
    # onblock data = the previous block's header: slot 1336442147 = 2021-03-05T00:57:53.500Z.
    assert block_time_ms(actions[0].act.data) == 1614905873500
    assert uint64_to_name(int.from_bytes(actions[0].act.data[4:12], "little")) == "theteloscope"
    assert vrf.partial.ref_block_num == 11249 and len(vrf.partial.signatures) == 1


def test_telos_traces_scan_finds_what_the_reference_decoder_finds() -> None:
    matches = scan_traces(TELOS, name_to_uint64("vrfcallerst1"), name_to_uint64("receiverand"))
    assert [(m.action_idx, m.action_ordinal, m.global_sequence) for m in matches] == [
        (1, 2, 117094985)
    ]
    m = matches[0]
    assert TELOS[m.trx_offset : m.trx_offset + 32].hex().startswith("fb12f424")
    assert len(TELOS[m.data_offset : m.data_offset + m.data_size]) == 1836
    assert scan_traces(TELOS, KARMA, TRANSFER) == []
    assert scan_traces(TELOS, KARMA, TRANSFER, full_scan=False) == []


def test_eos_etl_mainnet_transfers_decode_to_the_fixture() -> None:
    lines = (DATA / "eos-etl-block-30000000-transfers.jsonl").read_text().splitlines()
    assert len(lines) == 20
    for line in lines:
        row = json.loads(line)
        want = {item["key"]: item["value"] for item in row["data"]}
        got = codec.decode_transfer_data(bytes.fromhex(row["hex_data"]))
        assert {
            "from": got.from_account,
            "to": got.to_account,
            "quantity": format_asset(got.amount_units, got.precision, got.symbol),
            "memo": got.memo,
        } == want
        assert codec.encode_transfer_data(got).hex() == row["hex_data"]


def test_abieos_transfer_data() -> None:
    fixture = json.loads((DATA / "abieos-transfer-data.json").read_text())
    got = codec.decode_transfer_data(bytes.fromhex(fixture["hex_data"]))
    assert got == codec.TransferData("useraaaaaaaa", "useraaaaaaab", 1, 4, "SYS", "")
    assert fixture["data"]["quantity"] == format_asset(1, 4, "SYS")


def test_real_abi_parses_and_matches_the_readers() -> None:
    assert hashlib.sha256(ABI_TEXT.encode()).hexdigest() == (
        "f17a3bc91db1baa017c78ed31ed82eb52a4f4f12b661d59d15815bc9fab0e12e"
    )
    abi = parse_abi(ABI_TEXT).check()
    assert abi.version == "eosio::abi/1.1"
    assert abi.variant("request") == codec.REQUEST_NAMES
    assert abi.variant("result") == codec.RESULT_NAMES
    assert abi.variant("action_trace") == codec.ACTION_TRACE_NAMES
    assert abi.aliases == {"transaction_id": "checksum256"}


def test_the_abi_drives_the_variant_indices() -> None:
    # A node whose ABI lists the result members in another order: index 0 now means a
    # blocks result. The decoder follows the ABI, not Spring's numbering.
    data = json.loads(ABI_TEXT)
    for variant in data["variants"]:
        if variant["name"] == "result":
            variant["types"] = ["get_blocks_result_v0", "get_status_result_v0"]
    abi = parse_abi(json.dumps(data)).check()
    decoder = BlockDecoder(abi)
    message = bytes.fromhex(BLOCK_HEX)
    assert isinstance(decoder.result(b"\x00" + message[1:]), codec.GetBlocksResultV0)
    assert isinstance(
        decoder.result(b"\x01" + bytes.fromhex(STATUS_HEX)[1:]), codec.GetStatusResultV0
    )


@pytest.mark.parametrize(
    ("struct", "change"),
    [
        ("action_trace_v1", lambda fields: fields[:-1]),  # no return_value
        ("action_trace_v0", lambda fields: [*fields, {"name": "x", "type": "uint8"}]),
        ("transaction_trace_v0", lambda fields: [fields[1], fields[0], *fields[2:]]),
        ("get_blocks_result_v0", lambda fields: [{**f, "type": "bytes"} for f in fields]),
    ],
)
def test_a_differing_abi_is_refused_loudly(struct: str, change: object) -> None:
    data = json.loads(ABI_TEXT)
    for item in data["structs"]:
        if item["name"] == struct:
            item["fields"] = change(item["fields"])  # type: ignore[operator]
    with pytest.raises(ProtocolError) as info:
        parse_abi(json.dumps(data)).check()
    assert info.value.fatal and struct in str(info.value) and "expected" in str(info.value)


def test_not_an_abi_is_fatal() -> None:
    with pytest.raises(ProtocolError, match="state-history-endpoint") as info:
        parse_abi(b"\x01\x02 not json")
    assert info.value.fatal
    with pytest.raises(ProtocolError, match="no variant 'result'"):
        parse_abi(json.dumps({"structs": [], "variants": []})).variant("result")


# --- composed vectors (antelope-sources.md §2.8, ship.md §1.3) ----------------------------------


@pytest.mark.parametrize(
    ("request_", "hex_"),
    [
        (codec.GetStatusRequestV0(), "00"),
        (codec.GetStatusRequestV1(), "04"),
        (
            codec.GetBlocksRequestV0(100, 0xFFFFFFFF, 5, (), False, False, True, False),
            "0164000000ffffffff050000000000000100",
        ),
        (
            codec.GetBlocksRequestV1(100, 0xFFFFFFFF, 5, (), False, False, True, False, False),
            "0364000000ffffffff05000000000000010000",
        ),
        (codec.GetBlocksAckRequestV0(1), "0201000000"),
    ],
)
def test_composed_requests(request_: object, hex_: str) -> None:
    assert codec.encode_request(request_).hex() == hex_
    assert codec.decode_request(bytes.fromhex(hex_)) == request_


def test_composed_reconnect_request_with_positions() -> None:
    hex_ = (
        "01e9030000ffffffff0a00000002e7030000000003e70590a3ea8618fca78dd2451ac34658cdbb9bf2bb0655"
        "64e92260df9de8030000000003e896a0a6111e3c2706d61deb84c7c8e5a137b776f34a7dc3775f3652de0000"
        "0100"
    )
    request = codec.decode_request(bytes.fromhex(hex_))
    assert request.start_block_num == 1001 and request.max_messages_in_flight == 10
    assert [p.block_num for p in request.have_positions] == [999, 1000]
    assert codec.encode_request(request).hex() == hex_


def test_composed_status_result() -> None:
    status = codec.decode_result(bytes.fromhex(STATUS_HEX))
    assert isinstance(status, codec.GetStatusResultV0)
    assert (status.head.block_num, status.last_irreversible.block_num) == (1001, 670)
    assert (status.trace_begin_block, status.trace_end_block) == (2, 1002)
    assert status.chain_id.hex() == (
        "aca376f206b8fc25a6ed44dbdc66547c36c6c33e3a119ffbeaef943642f0e906"
    )
    assert codec.encode_result(status).hex() == STATUS_HEX
    # Without the binary extension the chain id is simply absent (``checksum256$``).
    short = codec.decode_result(bytes.fromhex(STATUS_HEX)[:-32])
    assert short.chain_id is None


def test_composed_block_result_with_one_karma_transfer() -> None:
    message = bytes.fromhex(BLOCK_HEX)
    assert len(message) == 728
    result = codec.decode_result(message)
    assert result.this_block.block_num == 1000 and result.prev_block.block_num == 999
    assert result.block is None and result.deltas is None and len(result.traces) == 576
    assert codec.encode_result(result) == message
    (trace,) = codec.decode_traces(result.traces)
    assert [a.receipt.global_sequence for a in trace.action_traces] == [1000, 1001, 1002]
    assert all(isinstance(a, codec.ActionTraceV1) for a in trace.action_traces)
    matches = scan_traces(result.traces, KARMA, TRANSFER)
    assert [(m.action_idx, m.global_sequence) for m in matches] == [(0, 1000)]
    # No ``block`` payload: the transfer's time is unknown, a fatal gap naming the block.
    decoder = BlockDecoder(parse_abi(ABI_TEXT).check())
    with pytest.raises(GapError, match="block 1000") as info:
        decoder.block(result)
    assert info.value.fatal and info.value.block_num == 1000
    # With a block body (timestamp slot first) the transfer decodes.
    slot = (1_795_723_200_000 - 946_684_800_000) // 500
    timed = result._replace(block=slot.to_bytes(4, "little") + b"\x00" * 40)
    block = decoder.block(timed)
    first, progress = block.events
    assert isinstance(first, ActionReceived) and isinstance(progress, Progress)
    row = first.transfer
    assert row is not None and row.block_time == 1_795_723_200_000
    assert (row.from_account, row.to_account, row.amount_units, row.symbol, row.memo) == (
        "alice", "bob", 12345, "KARMA", "hi",
    )  # fmt: skip
    assert (row.global_sequence, row.action_idx, row.block_num) == (1000, 0, 1000)
    assert row.trx_id == "ab" * 32 and row.block_id == result.this_block.block_id.hex()
    assert progress.block_num == 1000


def test_gaps_are_fatal_and_name_the_block() -> None:
    decoder = BlockDecoder(None)
    result = codec.decode_result(bytes.fromhex(BLOCK_HEX))
    with pytest.raises(GapError, match="block 1000: the node sent no traces") as info:
        decoder.block(result._replace(traces=None))
    assert info.value.fatal
    with pytest.raises(GapError, match="without this_block") as info:
        decoder.block(result._replace(this_block=None))
    assert info.value.fatal


def test_unparsable_transfer_data_is_a_reject() -> None:
    result = codec.decode_result(bytes.fromhex(BLOCK_HEX))
    # Break the memo length of the executed transfer's data (all three copies share it).
    traces = result.traces.replace(bytes.fromhex("044b41524d410000026869"),
                                   bytes.fromhex("044b41524d410000056869"))  # fmt: skip
    timed = result._replace(traces=traces, block=b"\x00" * 8)
    event = BlockDecoder(None).block(timed).events[0]
    assert event.transfer is None and event.reject is not None
    assert event.reject.global_sequence == 1000 and "memo length" in event.reject.reason
    raw = json.loads(event.reject.raw)
    assert raw["action_ordinal"] == 1 and raw["data"].endswith("056869")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("0000000000855c34" * 2 + "3930000000000000" + "044b41524d410000" + "00", "valid"),
        ("0000000000855c340000000000000e3d3930000000000000" + "13" + "4b41524d410000" + "00",
         "precision"),
        ("0000000000855c340000000000000e3d3930000000000000" + "046b61726d610000" + "00",
         "A-Z"),
        ("0000000000855c340000000000000e3d" + "ffffffffffffff7f" + "044b41524d410000" + "00",
         "beyond"),
        ("0000000000855c340000000000000e3d3930000000000000044b41524d410000" + "02ff00",
         "UTF-8"),
        ("0000000000855c340000000000000e3d3930000000000000044b41524d4100", "too short"),
        ("0000000000855c340000000000000e3d3930000000000000044b41524d410000" + "0068", "length"),
    ],
)  # fmt: skip
def test_transfer_data_refusals(data: str, reason: str) -> None:
    # The first case: from == to is allowed by the codec (it only decodes); it is a valid
    # transfer shape. The others are refused.
    if reason == "valid":
        assert codec.decode_transfer_data(bytes.fromhex(data)).from_account == "alice"
        return
    with pytest.raises(ParseError, match=reason):
        codec.decode_transfer_data(bytes.fromhex(data))


# --- properties --------------------------------------------------------------------------------

names = st.integers(0, 2**64 - 1).map(uint64_to_name)
accounts = st.text("abcdefghijklmnopqrstuvwxyz12345", min_size=1, max_size=12)
checksums = st.binary(min_size=32, max_size=32)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
blobs = st.binary(max_size=300)
positions = st.builds(codec.BlockPosition, u32, checksums)
receipts = st.builds(
    codec.ActionReceiptV0, names, checksums, u64, u64,
    st.lists(st.builds(codec.AccountAuthSequence, names, u64), max_size=3).map(tuple),
    u32, u32,
)  # fmt: skip
acts = st.builds(
    codec.Action, names, names,
    st.lists(st.builds(codec.PermissionLevel, names, names), max_size=3).map(tuple), blobs,
)  # fmt: skip
deltas = st.lists(st.builds(codec.AccountDelta, names, i64), max_size=3).map(tuple)
_trace_fields = (
    u32, u32, st.none() | receipts, names, acts, st.booleans(), i64, blobs, deltas,
    st.none() | blobs, st.none() | u64,
)  # fmt: skip
action_traces = st.builds(codec.ActionTraceV0, *_trace_fields) | st.builds(
    codec.ActionTraceV1, *_trace_fields, blobs
)
signatures = st.builds(lambda k, b: bytes([k]) + b, st.sampled_from([0, 1]),
                       st.binary(min_size=65, max_size=65))  # fmt: skip
partials = st.builds(
    codec.PartialTransactionV0, u32, st.integers(0, 65535), u32, u32, st.integers(0, 255), u32,
    st.lists(st.builds(codec.Extension, st.integers(0, 65535), blobs), max_size=2).map(tuple),
    st.lists(signatures, max_size=2).map(tuple), st.lists(blobs, max_size=2).map(tuple),
)  # fmt: skip


def _trx(failed: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(
        codec.TransactionTraceV0, checksums, st.integers(0, 4), u32, u32, i64, u64,
        st.booleans(), st.lists(action_traces, max_size=4).map(tuple),
        st.none() | st.builds(codec.AccountDelta, names, i64), st.none() | blobs,
        st.none() | u64, failed, st.none() | partials,
    )  # fmt: skip


transaction_traces = _trx(st.none() | _trx(st.none()))
requests = st.one_of(
    st.just(codec.GetStatusRequestV0()),
    st.just(codec.GetStatusRequestV1()),
    st.builds(codec.GetBlocksAckRequestV0, u32),
    st.builds(codec.GetBlocksRequestV0, u32, u32, u32, st.lists(positions, max_size=3).map(tuple),
              st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    st.builds(codec.GetBlocksRequestV1, u32, u32, u32, st.lists(positions, max_size=3).map(tuple),
              st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans()),
)  # fmt: skip
payloads = st.none() | st.binary(max_size=20_000)
results = st.one_of(
    st.builds(codec.GetStatusResultV0, positions, positions, u32, u32, u32, u32,
              st.none() | checksums),
    st.builds(codec.GetStatusResultV1, positions, positions, u32, u32, u32, u32, checksums,
              u32, u32),
    st.builds(codec.GetBlocksResultV0, positions, positions, st.none() | positions,
              st.none() | positions, payloads, payloads, payloads),
    st.builds(codec.GetBlocksResultV1, positions, positions, st.none() | positions,
              st.none() | positions, payloads, payloads, payloads, payloads),
)  # fmt: skip


@given(st.integers(0, 2**32 - 1))
def test_varuint32_round_trip(value: int) -> None:
    raw = codec.Writer().varuint(value).getvalue()
    assert codec.read_varuint32(raw, 0) == (value, len(raw))


@given(st.integers(0, 2**64 - 1))
def test_varuint64_round_trip(value: int) -> None:
    raw = codec.Writer().varuint(value).getvalue()
    assert codec.read_varuint64(raw, 0) == (value, len(raw))


def test_varints_refuse_over_long_and_truncated() -> None:
    with pytest.raises(DecodeError, match="longer than 5 bytes"):
        codec.read_varuint32(b"\x80\x80\x80\x80\x80\x01", 0)
    with pytest.raises(DecodeError, match="above 2"):
        codec.read_varuint32(b"\xff\xff\xff\xff\x1f", 0)
    with pytest.raises(DecodeError, match="truncated varuint64"):
        codec.read_varuint64(b"\x80\x80", 0)


@given(u64)
def test_name_round_trip(value: int) -> None:
    raw = codec.Writer().name(uint64_to_name(value)).getvalue()
    assert codec.read_name(raw, 0) == (uint64_to_name(value), 8)
    assert int.from_bytes(raw, "little") == value


@given(requests)
def test_request_round_trip(request_: object) -> None:
    raw = codec.encode_request(request_)
    assert codec.decode_request(raw) == request_


@given(results)
def test_result_round_trip_and_refusals(result: object) -> None:
    raw = codec.encode_result(result)
    assert codec.decode_result(raw) == result
    if not isinstance(result, codec.GetStatusResultV0):  # v0 status ends in an extension
        with pytest.raises(DecodeError, match="left over"):
            codec.decode_result(raw + b"\x00")
        for cut in {1, len(raw) // 2, len(raw) - 1}:
            with pytest.raises(DecodeError, match=r"while reading \S+ at offset \d+"):
                codec.decode_result(raw[:cut])


@pytest.mark.slow
@given(st.lists(transaction_traces, max_size=3))
def test_traces_round_trip_and_scan_agrees(traces: list[codec.TransactionTraceV0]) -> None:
    raw = codec.encode_traces(traces)
    assert codec.decode_traces(raw) == tuple(traces)
    # The fast scanner finds exactly what the reference decoder's filter finds.
    contract = traces[0].action_traces[0].receiver if traces and traces[0].action_traces else "a"
    action = traces[0].action_traces[0].act.name if traces and traces[0].action_traces else "b"
    cv, av = name_to_uint64(contract), name_to_uint64(action)
    want = [
        (t.id, idx, a.receipt.global_sequence, a.act.data)
        for t in traces
        if t.status == 0
        for idx, a in enumerate(t.action_traces)
        if a.receipt is not None
        and a.receiver == contract
        and a.act.account == contract
        and a.act.name == action
    ]
    for full_scan in (True, False):
        got = [
            (raw[m.trx_offset : m.trx_offset + 32], m.action_idx, m.global_sequence,
             raw[m.data_offset : m.data_offset + m.data_size])
            for m in scan_traces(raw, cv, av, full_scan=full_scan)
        ]  # fmt: skip
        assert got == want


@pytest.mark.slow
@given(st.lists(transaction_traces, min_size=1, max_size=2), st.data())
def test_truncated_and_over_long_traces_are_refused(
    traces: list[codec.TransactionTraceV0], data: st.DataObject
) -> None:
    raw = codec.encode_traces(traces)
    cut = data.draw(st.integers(1, len(raw) - 1))
    for decode in (codec.decode_traces, lambda b: scan_traces(b, 1, 1)):
        with pytest.raises(DecodeError) as info:
            decode(raw[:cut])
        assert info.value.offset <= cut and not info.value.fatal
        with pytest.raises(DecodeError, match="left over"):
            decode(raw + b"\x00")


@given(st.builds(codec.TransferData, accounts.filter(lambda a: not a.endswith(".")),
                 accounts, st.integers(-(2**62) + 1, 2**62 - 1), st.integers(0, 18),
                 st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=7),
                 st.text(max_size=80)))  # fmt: skip
def test_transfer_data_round_trip(value: codec.TransferData) -> None:
    assert codec.decode_transfer_data(codec.encode_transfer_data(value)) == value


def test_decode_error_is_transient_protocol_error_with_context() -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode_result(bytes.fromhex(BLOCK_HEX)[:100])
    error = info.value
    assert isinstance(error, ProtocolError) and not error.fatal
    assert error.what.startswith("get_blocks_result_v0.") and error.offset > 0
    assert dataclasses.is_dataclass(error) is False  # a plain exception with attributes


def _devnet_messages(
    v1: bool, legacy: bool, fetch_block: bool = True, per_block: float = 2.0
) -> list[bytes]:
    from types import SimpleNamespace

    from karma_analytics.devnet.ship import ShipServer

    server = ShipServer(
        head=400, block_interval=0, transfers_per_block=per_block, action_trace_v0=legacy
    )
    request = codec.GetBlocksRequestV0(1, 401, 10, (), True, fetch_block, True, False)
    session = SimpleNamespace(request=request, v1=v1)
    return [b"".join(server._result(session, num, 400)) for num in range(1, 301)]  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("full_scan", [False, True])
@pytest.mark.parametrize(("v1", "legacy"), [(False, False), (True, False), (False, True)])
def test_block_message_equals_the_general_path(v1: bool, legacy: bool, full_scan: bool) -> None:
    # The in-place fast path gives exactly block(result(message)), Progress or not.
    decoder = BlockDecoder(parse_abi(ABI_TEXT).check(), full_scan=full_scan)
    messages = _devnet_messages(v1, legacy)
    rows = 0
    for message in messages:
        slow = decoder.block(decoder.result(message))
        assert decoder.block_message(message) == slow
        assert decoder.block_message(message, progress=False) == slow._replace(
            events=slow.events[:-1]
        )
        rows += len(slow.events) - 1
    assert rows > 300
    # A status message comes back decoded, as result() gives it.
    status = bytes.fromhex(STATUS_HEX)
    assert decoder.block_message(status) == decoder.result(status)


@pytest.mark.slow
def test_block_message_refuses_what_the_general_path_refuses() -> None:
    decoder = BlockDecoder(None, full_scan=True)
    message = next(
        m for m in _devnet_messages(False, False) if len(decoder.block_message(m).events) > 2
    )
    for cut in range(1, len(message)):
        bad = message[:cut]
        with pytest.raises(DecodeError) as slow:
            decoder.block(decoder.result(bad))
        with pytest.raises(DecodeError) as fast:
            decoder.block_message(bad)
        assert str(fast.value) == str(slow.value)
    # A traces payload whose length is right but whose content is cut: the walk refuses it.
    result = decoder.result(message)
    traces = result.traces[:-5]
    shorter = codec.encode_result(result._replace(traces=traces))
    with pytest.raises(DecodeError, match="ends inside it") as fast:
        decoder.block_message(shorter)
    with pytest.raises(DecodeError) as slow:
        decoder.block(decoder.result(shorter))
    assert str(fast.value) == str(slow.value)
    # No block body for a block with transfers: the same gap either way.
    bodiless = _devnet_messages(False, False, fetch_block=False)
    gaps = 0
    for m in bodiless:
        try:
            decoder.block(decoder.result(m))
        except GapError as slow_gap:
            with pytest.raises(GapError) as fast_gap:
                decoder.block_message(m)
            assert str(fast_gap.value) == str(slow_gap)
            gaps += 1
    assert gaps > 10


# --- skip_plain: the backfill's pass over results without a match ---------------------------


def _run_of_plain(decoder: BlockDecoder, messages: list[bytes]) -> tuple[int, int]:
    """Walk ``messages`` (blocks 1, 2, ...) as the source does: skip_plain, then block_message
    for each result it stops at. Checks every result on the way; returns (passed over, not)."""
    wanted = matching_names(KARMA, TRANSFER)
    index = 0
    expected = 1
    skipped = stopped = 0
    while index < len(messages):
        after = decoder.skip_plain(messages, index, expected, 10**9)
        for message in messages[index:after]:
            result = decoder.result(message)
            assert result.this_block.block_num == expected
            assert wanted not in result.traces  # so no transfer can be in it
            assert decoder.block_message(message, progress=False).events == []
            expected += 1
        skipped += after - index
        if after == len(messages):
            break
        # The result it stopped at may hold a match: its traces name one.
        result = decoder.result(messages[after])
        assert result.this_block.block_num == expected
        assert wanted in result.traces
        stopped += 1
        expected += 1
        index = after + 1
    return skipped, stopped


@pytest.mark.parametrize("fetch_block", [True, False])
@pytest.mark.parametrize(("v1", "legacy"), [(False, False), (True, False), (False, True)])
def test_skip_plain_passes_over_exactly_the_results_that_cannot_hold_a_match(
    v1: bool, legacy: bool, fetch_block: bool
) -> None:
    decoder = BlockDecoder(parse_abi(ABI_TEXT).check())
    messages = _devnet_messages(v1, legacy, fetch_block)
    skipped, stopped = _run_of_plain(decoder, messages)
    assert skipped > 20 and stopped > 100  # both kinds are there
    # With full_scan nothing is passed over.
    assert BlockDecoder(None, full_scan=True).skip_plain(messages, 0, 1, 10**9) == 0


def test_skip_plain_stops_at_the_last_block_another_number_and_a_status() -> None:
    decoder = BlockDecoder(parse_abi(ABI_TEXT).check())
    wanted = matching_names(KARMA, TRANSFER)
    messages = _devnet_messages(False, False, per_block=0.05)
    # The first run of plain results, and the result after it (one with a match).
    start = next(i for i, m in enumerate(messages) if wanted not in decoder.result(m).traces)
    consecutive = 0
    while wanted not in decoder.result(messages[start + consecutive]).traces:
        consecutive += 1
    assert consecutive >= 3
    run = messages[start : start + consecutive + 1]
    first = start + 1  # messages[i] is block i + 1
    assert decoder.skip_plain(run, 0, first, first + consecutive) == consecutive
    assert decoder.skip_plain(run, 0, first, first) == 1  # ``last`` is inclusive
    assert decoder.skip_plain(run, 0, first, first - 1) == 0
    assert decoder.skip_plain(run, 0, first + 1, 10**9) == 0  # not the block expected
    status = bytes.fromhex(STATUS_HEX)
    assert decoder.skip_plain([run[0], status, run[1]], 0, first, 10**9) == 1
    assert decoder.skip_plain(run, 1, first + 1, 10**9) == consecutive  # an index into run


def test_skip_plain_never_passes_over_a_malformed_result() -> None:
    # Whatever is wrong with a result, skip_plain leaves it to block_message, which says what.
    decoder = BlockDecoder(None)
    wanted = matching_names(KARMA, TRANSFER)
    message = next(
        m for m in _devnet_messages(False, False) if wanted not in decoder.result(m).traces
    )
    result = decoder.result(message)
    num = result.this_block.block_num
    assert decoder.skip_plain([message], 0, num, num) == 1
    for cut in range(len(message)):
        assert decoder.skip_plain([message[:cut]], 0, num, num) == 0, cut
        with pytest.raises(DecodeError):
            decoder.block_message(message[:cut])
    for extra in (b"\x00", b"\x01"):
        assert decoder.skip_plain([message + extra], 0, num, num) == 0
        with pytest.raises(DecodeError):
            decoder.block_message(message + extra)
    for at, value in ((73, 0), (-1, 1)):
        # this_block? absent, with the rest laid out as if present; deltas? present, but cut.
        bad = bytearray(message)
        bad[at] = value
        assert decoder.skip_plain([bytes(bad)], 0, num, num) == 0
        with pytest.raises(ProtocolError):
            decoder.block_message(bytes(bad))
    bad_flag = bytearray(message)
    bad_flag[110] = 2  # prev_block? is neither absent nor present
    assert decoder.skip_plain([bytes(bad_flag)], 0, num, num) == 0
    with pytest.raises(DecodeError):
        decoder.block_message(bytes(bad_flag))
    no_id = codec.encode_result(result._replace(this_block=None))
    assert decoder.skip_plain([no_id], 0, num, num) == 0
    with pytest.raises(GapError, match="without this_block"):
        decoder.block_message(no_id)
    no_traces = codec.encode_result(result._replace(traces=None))
    assert decoder.skip_plain([no_traces], 0, num, num) == 0
    with pytest.raises(GapError, match=f"block {num}"):
        decoder.block_message(no_traces)
    short_body = codec.encode_result(result._replace(block=b"\x01\x02"))
    assert decoder.skip_plain([short_body], 0, num, num) == 0
    with pytest.raises(DecodeError):
        decoder.block_message(short_body)
    # Deltas (not requested, but well-formed) are not plain either; block_message reads them.
    with_deltas = codec.encode_result(result._replace(deltas=b"\x00"))
    assert decoder.skip_plain([with_deltas], 0, num, num) == 0
    assert decoder.block_message(with_deltas, progress=False).events == []
