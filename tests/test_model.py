"""The record model: names, assets, integers, times, and action_trace parsing."""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from karma_analytics.exceptions import ParseError
from karma_analytics.model import (
    ARROW_SCHEMA,
    COLUMNS,
    Transfer,
    decode_transfer_hex,
    encode_uint64,
    format_asset,
    format_block_time,
    format_iso_ms,
    format_trace_time,
    is_valid_name,
    name_to_uint64,
    parse_asset,
    parse_block_time,
    parse_name,
    parse_uint64,
    table_to_transfers,
    transfer_from_action_trace,
    transfer_from_json,
    transfer_to_json,
    transfers_to_table,
    uint64_to_name,
)

# --- names ----------------------------------------------------------------------------------

names12 = st.text(alphabet=".12345abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12).filter(
    lambda s: not s.endswith(".")
)
names13 = st.builds(
    lambda head, last: head + last,
    st.text(alphabet=".12345abcdefghijklmnopqrstuvwxyz", min_size=12, max_size=12),
    st.sampled_from("12345abcdefghij"),
)


def test_known_name_values():
    # antelope-sources.md §1.2
    assert name_to_uint64("therealkarma") == 14651745718058214496
    assert name_to_uint64("transfer") == 0xCDCD3C2D57000000
    assert name_to_uint64("active") == 0x3232EDA800000000
    assert uint64_to_name(0xCB55751A3035E460) == "therealkarma"


@given(st.one_of(names12, names13))
def test_name_round_trip(name):
    assert is_valid_name(name)
    assert uint64_to_name(name_to_uint64(name)) == name


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_uint64_round_trip_through_names(value):
    name = uint64_to_name(value)
    if name:
        assert name_to_uint64(name) == value


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "must not be empty"),
        ("Alice", "not 'A'"),
        ("bob0", "not '0'"),
        ("alice6", "not '6'"),
        ("bob.", "must not end with '.'"),
        ("abcdefghijklmn", "at most 13"),
        ("abcdefghijklz", "13th character"),
        ("al ice", "not ' '"),
        (12, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_bad_names(bad, reason):
    assert not is_valid_name(bad)
    with pytest.raises(ParseError, match=reason) as info:
        parse_name(bad, field="act.data.from")
    assert info.value.field == "act.data.from"


# --- assets ---------------------------------------------------------------------------------


@given(
    st.integers(min_value=0, max_value=2**62 - 1),
    st.integers(min_value=0, max_value=18),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=7),
)
def test_asset_round_trip(units, precision, symbol):
    text = format_asset(units, precision, symbol)
    assert parse_asset(text) == (units, precision, symbol)


def test_asset_examples():
    assert parse_asset("1.2345 KARMA") == (12345, 4, "KARMA")
    assert parse_asset("1000.0000 KARMA") == (10000000, 4, "KARMA")
    assert parse_asset("0.0001 KARMA") == (1, 4, "KARMA")
    assert parse_asset("7 X") == (7, 0, "X")
    # Precision comes from the digits: a different symbol on chain.
    assert parse_asset("1.23 KARMA") == (123, 2, "KARMA")
    assert parse_asset("-1.5 EOS", allow_negative=True) == (-15, 1, "EOS")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("-1.0000 KARMA", "must not be negative"),
        ("1.0000  KARMA", "symbol must be 1 to 7"),
        (" 1.0000 KARMA", "no leading or trailing spaces"),
        ("1.0000 KARMA ", "no leading or trailing spaces"),
        ("1.0000KARMA", "separated by one space"),
        ("1e5 KARMA", "exponents"),
        ("1.0000 karma", "upper-case"),
        ("1.0000 TOOLONGX", "1 to 7"),
        ("1. KARMA", "followed by digits"),
        (".5 KARMA", "digits with an optional decimal point"),
        ("+1.0 KARMA", "'\\+' sign"),
        ("1.0000000000000000000 KARMA", "at most 18"),
        ("4611686018427387904 KARMA", "maximum"),
        ("99999999999999999999.0000 KARMA", "maximum"),
        ("1,0000 KARMA", "digits"),
        (10000, "must be a string"),
    ],
)
def test_bad_assets(bad, reason):
    with pytest.raises(ParseError, match=reason):
        parse_asset(bad)


# --- uint64 and times -----------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_uint64_number_or_string(value):
    encoded = encode_uint64(value)
    assert isinstance(encoded, int) == (value <= 2**32 - 1)
    assert parse_uint64(encoded, field="x") == value
    assert parse_uint64(str(value), field="x") == value


@pytest.mark.parametrize("bad", [-1, 2**64, "-1", "1.0", "1e3", " 12", "", True, 1.0, None, "١٢"])
def test_bad_uint64(bad):
    with pytest.raises(ParseError):
        parse_uint64(bad, field="trace.receipt.global_sequence")


def test_both_time_formats():
    top = parse_block_time("2020-11-20T12:00:05.5Z")
    inner = parse_block_time("2020-11-20T12:00:05.500")
    assert top == inner == 1605873605500
    assert parse_block_time("2020-11-20T12:00:05Z") == parse_block_time("2020-11-20T12:00:05")
    assert format_block_time(top) == "2020-11-20T12:00:05.5Z"
    assert format_block_time(top - 500) == "2020-11-20T12:00:05Z"
    assert format_trace_time(top) == "2020-11-20T12:00:05.500"
    assert format_trace_time(top - 500) == "2020-11-20T12:00:05"
    assert format_iso_ms(top) == "2020-11-20T12:00:05.500Z"


@given(st.integers(min_value=0, max_value=4_000_000_000).map(lambda n: n * 500))
def test_time_round_trip(ms):
    assert parse_block_time(format_block_time(ms)) == ms
    assert parse_block_time(format_trace_time(ms)) == ms
    assert parse_block_time(format_iso_ms(ms)) == ms


@pytest.mark.parametrize(
    "bad", ["2020-11-20 12:00:05Z", "2020-11-20T12:00Z", "2020-13-20T12:00:05Z", "yesterday", 5]
)
def test_bad_times(bad):
    with pytest.raises(ParseError):
        parse_block_time(bad)


# --- action_trace -> record -----------------------------------------------------------------

BLOCK_ID = "090f560a" + "df554fe9fb21830436e182429f324db2828ebf51573b4683349e4803"
TRX_ID = "8fd144010cbb04e4efee04fab4f2b65f210c3a0fd9e29560303f611282658dd5"


def message_data(receiver="therealkarma", **overrides):
    data = {
        "block_num": 152000010,
        "block_id": BLOCK_ID,
        "block_time": "2020-11-20T12:00:05.5Z",
        "trx_id": TRX_ID,
        "idx": 2,
        "trace": {
            "action_ordinal": 3,
            "receipt": {"receiver": receiver, "global_sequence": "9876543210"},
            "receiver": receiver,
            "act": {
                "account": "therealkarma",
                "name": "transfer",
                "authorization": [{"actor": "alice", "permission": "active"}],
                "data": {"from": "alice", "to": "bob", "quantity": "1.2345 KARMA", "memo": "hi"},
                "hex_data": "0000000000855c340000000000000e3d3930000000000000044b41524d410000026869",
            },
            "block_time": "2020-11-20T12:00:05.500",
            "inline_traces": [],
        },
    }
    data.update(overrides)
    return data


def test_action_idx_is_the_ordinal_minus_one_with_idx_only_for_old_servers():
    # dfuse's own idx (execution order) is not what other sources can report: the record holds
    # action_ordinal - 1, which every source has (model.Transfer).
    assert transfer_from_action_trace(message_data(idx=7)).action_idx == 2
    old = message_data(idx=7)
    del old["trace"]["action_ordinal"]
    assert transfer_from_action_trace(old).action_idx == 7
    bad = message_data()
    bad["trace"]["action_ordinal"] = 0
    with pytest.raises(ParseError, match="action_ordinal"):
        transfer_from_action_trace(bad)


def test_record_from_action_trace():
    record = transfer_from_action_trace(message_data())
    assert record == Transfer(
        block_num=152000010,
        block_id=BLOCK_ID,
        block_time=1605873605500,
        trx_id=TRX_ID,
        action_idx=2,
        global_sequence=9876543210,
        contract="therealkarma",
        action="transfer",
        from_account="alice",
        to_account="bob",
        amount_units=12345,
        precision=4,
        symbol="KARMA",
        memo="hi",
    )


@pytest.mark.parametrize("receiver", ["alice", "bob"])
def test_notifications_are_not_transfers(receiver):
    assert transfer_from_action_trace(message_data(receiver=receiver)) is None


def test_receiver_from_receipt_when_top_level_missing():
    data = message_data()
    del data["trace"]["receiver"]
    assert transfer_from_action_trace(data).global_sequence == 9876543210
    data["trace"]["receipt"]["receiver"] = "bob"
    assert transfer_from_action_trace(data) is None


def test_undecoded_data_falls_back_to_hex():
    data = message_data()
    del data["trace"]["act"]["data"]
    assert transfer_from_action_trace(data) == transfer_from_action_trace(message_data())


def test_global_sequence_as_number():
    data = message_data()
    data["trace"]["receipt"]["global_sequence"] = 7
    assert transfer_from_action_trace(data).global_sequence == 7


def _mutate(path, value):
    def apply(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return apply


BAD_TRACES = [
    (("trace", "act", "data", "quantity"), "-1.0000 KARMA", "act.data.quantity"),
    (("trace", "act", "data", "quantity"), "1 KARMA extra", "act.data.quantity"),
    (("trace", "act", "data", "from"), "Alice", "act.data.from"),
    (("trace", "act", "data", "to"), KeyError, "act.data.to"),
    (("trace", "act", "data", "memo"), 5, "act.data.memo"),
    (("trace", "receipt", "global_sequence"), "12x", "trace.receipt.global_sequence"),
    (("trace", "receipt"), KeyError, "trace.receipt"),
    (("block_num",), "152000010", "block_num"),
    (("block_id",), "xyz", "block_id"),
    (("block_time",), "2020-11-20", "block_time"),
    (("trx_id",), KeyError, "trx_id"),
    (("trace", "action_ordinal"), -1, "trace.action_ordinal"),
    (("trace", "act", "data"), "not an object", "trace.act.data"),
    (("trace",), KeyError, "trace"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD_TRACES)
def test_bad_traces_name_their_field(path, value, field):
    data = copy.deepcopy(message_data())
    _mutate(path, value)(data)
    with pytest.raises(ParseError) as info:
        transfer_from_action_trace(data)
    assert info.value.field == field


def test_bad_hex_data():
    data = message_data()
    del data["trace"]["act"]["data"]
    data["trace"]["act"]["hex_data"] = "00ff"
    with pytest.raises(ParseError, match="too short"):
        transfer_from_action_trace(data)
    assert decode_transfer_hex(message_data()["trace"]["act"]["hex_data"])["memo"] == "hi"


# --- Arrow and JSON -------------------------------------------------------------------------

records = st.builds(
    Transfer,
    block_num=st.integers(0, 2**32 - 1),
    block_id=st.just(BLOCK_ID),
    block_time=st.integers(0, 2**41),
    trx_id=st.just(TRX_ID),
    action_idx=st.integers(0, 2**32 - 1),
    global_sequence=st.integers(0, 2**64 - 1),
    contract=names12,
    action=names12,
    from_account=names12,
    to_account=names12,
    amount_units=st.integers(0, 2**62 - 1),
    precision=st.integers(0, 18),
    symbol=st.just("KARMA"),
    memo=st.text(max_size=40),
)


@pytest.mark.slow
@given(st.lists(records, max_size=5))
def test_arrow_and_json_round_trip(rows):
    table = transfers_to_table(rows)
    assert table.schema == ARROW_SCHEMA
    assert table_to_transfers(table) == rows
    assert [transfer_from_json(transfer_to_json(r)) for r in rows] == rows


def test_schema_matches_design():
    assert COLUMNS[0] == "block_num" and COLUMNS[-1] == "memo"
    assert ARROW_SCHEMA.field("block_time").type == pa.timestamp("ms", tz="UTC")
    assert ARROW_SCHEMA.field("global_sequence").type == pa.uint64()
    assert ARROW_SCHEMA.field("precision").type == pa.uint8()
    assert ARROW_SCHEMA.field("amount_units").type == pa.int64()
