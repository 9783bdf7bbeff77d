"""The transfer record and the strict parsers that build it from wire data (pure).

One :class:`Transfer` is one committed row of the dataset, unique by ``global_sequence``. Its
field order is the Arrow column order of :data:`ARROW_SCHEMA`. Times are kept as integer
milliseconds since the Unix epoch (UTC) so that no row goes through ``datetime`` objects on the
hot path; amounts are kept as exact integers in base units plus a precision, never floats.

Every parser raises :class:`~karma_analytics.exceptions.ParseError` with the field, the value
and the reason; nothing here touches files, sockets or the clock.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import pyarrow as pa

from .exceptions import ParseError

__all__ = [
    "ARROW_SCHEMA",
    "COLUMNS",
    "PLAIN_ASSET",
    "SCHEMA_VERSION",
    "Asset",
    "Transfer",
    "decode_transfer_hex",
    "encode_uint64",
    "format_asset",
    "format_block_time",
    "format_iso_ms",
    "format_trace_time",
    "is_valid_name",
    "name_to_uint64",
    "parse_asset",
    "parse_block_time",
    "parse_name",
    "parse_plain_asset",
    "parse_uint64",
    "table_to_transfers",
    "transfer_from_action_trace",
    "transfer_from_json",
    "transfer_to_json",
    "transfers_to_table",
    "uint64_to_name",
]

SCHEMA_VERSION = 1

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
# asset::max_amount in Antelope (libraries/chain/include/eosio/chain/asset.hpp): 2^62 - 1.
ASSET_MAX_AMOUNT = 2**62 - 1


class Transfer(NamedTuple):
    """One committed transfer; the field order is the Arrow column order.

    ``block_time`` is milliseconds since the Unix epoch in UTC. ``amount_units`` is the exact
    amount in base units (``"1.2345 KARMA"`` is 12345 at precision 4). ``action_idx`` is the
    action's position in its transaction from 0, in the order actions were scheduled: EOSIO's
    ``action_ordinal - 1``. Every source reports that ordinal (dfuse, SHiP and Hyperion alike),
    so a dataset continued through another source holds the same value for the same action.
    """

    block_num: int
    block_id: str
    block_time: int
    trx_id: str
    action_idx: int
    global_sequence: int
    contract: str
    action: str
    from_account: str
    to_account: str
    amount_units: int
    precision: int
    symbol: str
    memo: str


COLUMNS: tuple[str, ...] = Transfer._fields

ARROW_SCHEMA = pa.schema(
    [
        pa.field("block_num", pa.uint32(), nullable=False),
        pa.field("block_id", pa.string(), nullable=False),
        pa.field("block_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("trx_id", pa.string(), nullable=False),
        pa.field("action_idx", pa.uint32(), nullable=False),
        pa.field("global_sequence", pa.uint64(), nullable=False),
        pa.field("contract", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("from_account", pa.string(), nullable=False),
        pa.field("to_account", pa.string(), nullable=False),
        pa.field("amount_units", pa.int64(), nullable=False),
        pa.field("precision", pa.uint8(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("memo", pa.string(), nullable=False),
    ]
)
assert tuple(ARROW_SCHEMA.names) == COLUMNS


# --- Antelope names -------------------------------------------------------------------------
# A name is a uint64: characters 1-12 take 5 bits each from the top, a 13th takes the low 4
# bits (antelope-sources.md §1.2). Valid text is exactly what survives encode -> decode.

_NAME_CHARS = ".12345abcdefghijklmnopqrstuvwxyz"
_NAME_VALUE = {c: i for i, c in enumerate(_NAME_CHARS)}
_NAME_RE = re.compile(r"[.1-5a-z]{1,12}[.1-5a-j]?")
# Names repeat endlessly in a stream (a few thousand accounts), so validated ones are cached.
_valid_names: dict[str, bool] = {}
_NAME_CACHE_LIMIT = 100_000


def name_to_uint64(name: str) -> int:
    """Encode an Antelope name to its uint64 value.

    Raises:
        ParseError: if ``name`` is not a valid name.
    """
    if not is_valid_name(name) and name != "":
        raise ParseError("name", name, _name_reason(name))
    value = 0
    for i, char in enumerate(name):
        if i < 12:
            value |= (_NAME_VALUE[char] & 0x1F) << (64 - 5 * (i + 1))
        else:
            value |= _NAME_VALUE[char] & 0x0F
    return value


def uint64_to_name(value: int) -> str:
    """Decode a uint64 to its Antelope name text (trailing dots stripped)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT64_MAX:
        raise ParseError("name", value, "a name value must be an integer in 0..2^64-1")
    chars = []
    rest = value
    for i in range(13):
        if i == 0:
            chars.append(_NAME_CHARS[rest & 0x0F])
            rest >>= 4
        else:
            chars.append(_NAME_CHARS[rest & 0x1F])
            rest >>= 5
    return "".join(reversed(chars)).rstrip(".")


def is_valid_name(name: object) -> bool:
    """Whether ``name`` is a non-empty Antelope name that round-trips through uint64."""
    if not isinstance(name, str):
        return False
    known = _valid_names.get(name)
    if known is not None:
        return known
    ok = _NAME_RE.fullmatch(name) is not None and not name.endswith(".")
    if len(_valid_names) >= _NAME_CACHE_LIMIT:
        _valid_names.clear()
    _valid_names[name] = ok
    return ok


def _name_reason(name: object) -> str:
    if not isinstance(name, str):
        return "a name must be a string"
    if not name:
        return "a name must not be empty"
    if len(name) > 13:
        return "a name has at most 13 characters"
    if name.endswith("."):
        return "a name must not end with '.'"
    bad = sorted({c for c in name if c not in _NAME_VALUE})
    if bad:
        return f"a name uses only a-z, 1-5 and '.', not {''.join(bad)!r}"
    if len(name) == 13:
        return "the 13th character of a name must be one of '.12345abcdefghij'"
    return "not a valid Antelope name"


def parse_name(value: object, *, field: str = "name") -> str:
    """Return ``value`` if it is a valid Antelope name, else raise :class:`ParseError`."""
    if isinstance(value, str) and is_valid_name(value):
        return value
    raise ParseError(field, value, _name_reason(value))


# --- assets ---------------------------------------------------------------------------------

_ASSET_RE = re.compile(r"(-?)([0-9]+)(?:\.([0-9]*))? ([A-Z]{1,7})")


class Asset(NamedTuple):
    """An exact token amount: ``amount_units / 10**precision`` of ``symbol``."""

    amount_units: int
    precision: int
    symbol: str


def parse_asset(text: object, *, allow_negative: bool = False, field: str = "quantity") -> Asset:
    """Parse an asset string such as ``"1.2345 KARMA"``.

    The precision is the number of digits after the point, as on chain: ``"1.23 KARMA"`` is a
    different symbol (``2,KARMA``) from ``"1.2300 KARMA"``.

    Args:
        text: the asset text.
        allow_negative: accept a leading ``-`` (transfers never carry negative amounts).
        field: the name reported in errors.

    Raises:
        ParseError: on anything but ``[-]digits[.digits] SYMBOL`` with one space, precision
            0..18, a symbol of 1..7 upper-case letters and ``|amount| <= 2^62 - 1``.
    """
    if not isinstance(text, str):
        raise ParseError(field, text, "an asset must be a string like '1.2345 KARMA'")
    match = _ASSET_RE.fullmatch(text)
    if match is None:
        raise ParseError(field, text, _asset_reason(text))
    sign, whole, fraction, symbol = match.groups()
    if fraction == "":
        raise ParseError(field, text, "a decimal point must be followed by digits")
    fraction = fraction or ""
    precision = len(fraction)
    if precision > 18:
        raise ParseError(field, text, "precision is at most 18 digits")
    amount = int(whole + fraction)
    if amount > ASSET_MAX_AMOUNT:
        raise ParseError(field, text, "amount exceeds the asset maximum 2^62-1 base units")
    if sign:
        if not allow_negative:
            raise ParseError(field, text, "a transfer amount must not be negative")
        amount = -amount
    return Asset(amount, precision, symbol)


def _asset_reason(text: str) -> str:
    if text != text.strip():
        return "no leading or trailing spaces allowed"
    if " " not in text:
        return "amount and symbol must be separated by one space"
    number, _, symbol = text.partition(" ")
    if not re.fullmatch(r"[A-Z]{1,7}", symbol):
        return "the symbol must be 1 to 7 upper-case letters A-Z after exactly one space"
    if "e" in number.lower():
        return "exponents are not allowed"
    if number.startswith("+"):
        return "no '+' sign allowed"
    return "the amount must be digits with an optional decimal point"


def format_asset(amount_units: int, precision: int, symbol: str) -> str:
    """Format base units back to asset text: ``(12345, 4, "KARMA")`` -> ``"1.2345 KARMA"``."""
    sign = "-" if amount_units < 0 else ""
    digits = str(abs(amount_units))
    if precision == 0:
        return f"{sign}{digits} {symbol}"
    digits = digits.rjust(precision + 1, "0")
    return f"{sign}{digits[:-precision]}.{digits[-precision:]} {symbol}"


# --- integers -------------------------------------------------------------------------------


def parse_uint64(value: object, *, field: str) -> int:
    """Parse a uint64 sent as a JSON number or as a decimal string (dfuse §3.2 rule)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit() and value.isascii():
        number = int(value)
    else:
        raise ParseError(field, value, "expected an unsigned integer (number or decimal string)")
    if not 0 <= number <= UINT64_MAX:
        raise ParseError(field, value, "out of the uint64 range")
    return number


def encode_uint64(value: int) -> int | str:
    """dfuse's JSON rule for uint64: a number up to 2^32-1, a decimal string above."""
    return value if value <= UINT32_MAX else str(value)


def _parse_uint32(value: object, *, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINT32_MAX:
        return value
    raise ParseError(field, value, "expected an integer in 0..2^32-1")


# --- times ----------------------------------------------------------------------------------
# Top level: Go RFC 3339 "2020-11-20T12:00:05.5Z"; inside `trace`: "2020-11-20T12:00:05.500"
# without a zone (dfuse-protocol.md §3.2). Both are UTC.

_TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z?)")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_time_cache: dict[str, int] = {}
_TIME_CACHE_LIMIT = 8192


def parse_block_time(text: object, *, field: str = "block_time") -> int:
    """Parse either dfuse time format to milliseconds since the epoch (UTC)."""
    if isinstance(text, str):
        cached = _time_cache.get(text)
        if cached is not None:
            return cached
    if not isinstance(text, str):
        raise ParseError(field, text, "expected a time string like 2020-11-20T12:00:05.5Z")
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise ParseError(field, text, "expected a time like 2020-11-20T12:00:05.5Z")
    year, month, day, hour, minute, second, fraction, _zone = match.groups()
    try:
        moment = _dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=_dt.UTC
        )
    except ValueError as exc:
        raise ParseError(field, text, f"not a calendar time ({exc})") from None
    delta = moment - _EPOCH
    ms = (delta.days * 86_400 + delta.seconds) * 1000
    if fraction:
        ms += int(fraction[:3].ljust(3, "0"))
    if len(_time_cache) >= _TIME_CACHE_LIMIT:
        _time_cache.clear()
    _time_cache[text] = ms
    return ms


def _split_ms(ms: int) -> tuple[str, int]:
    seconds, millis = divmod(ms, 1000)
    moment = _EPOCH + _dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S"), millis


def format_block_time(ms: int) -> str:
    """Top-level dfuse form: ``2020-11-20T12:00:05.5Z`` (trailing zeros trimmed, Go style)."""
    base, millis = _split_ms(ms)
    if millis == 0:
        return base + "Z"
    return f"{base}.{millis:03d}".rstrip("0") + "Z"


def format_trace_time(ms: int) -> str:
    """The form inside ``trace``: ``2020-11-20T12:00:05.500`` or ``...:05`` for whole seconds."""
    base, millis = _split_ms(ms)
    return base if millis == 0 else f"{base}.{millis:03d}"


def format_iso_ms(ms: int) -> str:
    """``2020-11-20T12:00:05.500Z``: the form used in JSON lines (``devnet truth``)."""
    base, millis = _split_ms(ms)
    return f"{base}.{millis:03d}Z"


# --- the action_trace message -> record -----------------------------------------------------

_HEX64_RE = re.compile(r"[0-9a-f]{64}")


def _hex64(value: object, field: str) -> str:
    if isinstance(value, str) and len(value) == 64 and _HEX64_RE.fullmatch(value):
        return value
    raise ParseError(field, value, "expected 64 lower-case hex digits")


def _get(mapping: object, key: str, field: str) -> Any:
    if not isinstance(mapping, dict):
        raise ParseError(field.rpartition(".")[0] or field, mapping, "expected a JSON object")
    try:
        return mapping[key]
    except KeyError:
        raise ParseError(field, None, "missing field") from None


def transfer_from_action_trace(data: dict[str, Any]) -> Transfer | None:
    """Build the record from the ``data`` of a dfuse ``action_trace`` message.

    Only the trace whose receiver is the contract itself is a transfer; the notifications to
    ``from`` and ``to`` carry the same ``act`` with another receiver and give ``None``.

    If ``act.data`` is absent (the server could not decode it), the standard transfer layout
    is decoded from ``act.hex_data`` instead (antelope-sources.md §1.4).

    Raises:
        ParseError: on a missing or mistyped field, a bad name, asset, time or id.
    """
    trace = _get(data, "trace", "trace")
    act = _get(trace, "act", "trace.act")
    receipt = trace.get("receipt") if isinstance(trace, dict) else None
    receiver = trace.get("receiver")
    if receiver is None and isinstance(receipt, dict):
        receiver = receipt.get("receiver")
    contract = _get(act, "account", "trace.act.account")
    if receiver != contract:
        if not isinstance(receiver, str):
            raise ParseError("trace.receiver", receiver, "missing or not a string")
        return None
    contract = parse_name(contract, field="trace.act.account")
    action = parse_name(_get(act, "name", "trace.act.name"), field="trace.act.name")
    if not isinstance(receipt, dict):
        raise ParseError("trace.receipt", receipt, "missing receipt")
    global_sequence = parse_uint64(
        _get(receipt, "global_sequence", "trace.receipt.global_sequence"),
        field="trace.receipt.global_sequence",
    )
    fields = act.get("data")
    if fields is None:
        hex_data = act.get("hex_data")
        if not isinstance(hex_data, str):
            raise ParseError("trace.act.data", None, "missing (and no hex_data to decode)")
        fields = decode_transfer_hex(hex_data)
    if not isinstance(fields, dict):
        raise ParseError("trace.act.data", fields, "expected a JSON object")
    asset = parse_asset(_get(fields, "quantity", "act.data.quantity"), field="act.data.quantity")
    memo = _get(fields, "memo", "act.data.memo")
    if not isinstance(memo, str):
        raise ParseError("act.data.memo", memo, "expected a string")
    return Transfer(
        block_num=_parse_uint32(_get(data, "block_num", "block_num"), field="block_num"),
        block_id=_hex64(_get(data, "block_id", "block_id"), "block_id"),
        block_time=parse_block_time(_get(data, "block_time", "block_time")),
        trx_id=_hex64(_get(data, "trx_id", "trx_id"), "trx_id"),
        action_idx=action_idx_of(trace, data),
        global_sequence=global_sequence,
        contract=contract,
        action=action,
        from_account=parse_name(_get(fields, "from", "act.data.from"), field="act.data.from"),
        to_account=parse_name(_get(fields, "to", "act.data.to"), field="act.data.to"),
        amount_units=asset.amount_units,
        precision=asset.precision,
        symbol=asset.symbol,
        memo=memo,
    )


def action_idx_of(trace: Any, data: Any) -> int:
    """``action_ordinal - 1`` of a dfuse trace (see :class:`Transfer`); a server too old to send
    the ordinal (dfuse-protocol.md: absent in old examples) leaves dfuse's ``idx``."""
    ordinal = trace.get("action_ordinal") if isinstance(trace, dict) else None
    if ordinal is None:
        return _parse_uint32(_get(data, "idx", "idx"), field="idx")
    ordinal = _parse_uint32(ordinal, field="trace.action_ordinal")
    if ordinal < 1:
        raise ParseError("trace.action_ordinal", ordinal, "action ordinals start at 1")
    return ordinal - 1


PLAIN_ASSET = re.compile(r"([0-9]+)(?:\.([0-9]{1,18}))? ([A-Z]{1,7})")


def parse_plain_asset(text: str) -> tuple[int, int, str] | None:
    """:func:`parse_asset` for the plain form ``digits[.digits] SYMBOL``, fast; ``None`` = ask
    :func:`parse_asset` (the decoders' hot paths: dfuse frames, Hyperion pages).

    Accepts a subset of what :func:`parse_asset` accepts, with the same result: the language
    of ``PLAIN_ASSET``, checked with string methods (a third cheaper than the regex).
    """
    number, _, symbol = text.partition(" ")
    whole, dot, fraction = number.partition(".")
    if not (
        0 < len(symbol) <= 7
        and symbol.isascii()
        and symbol.isalpha()
        and symbol.isupper()
        and whole.isascii()
        and whole.isdigit()
    ):
        return None
    if dot:
        if not (len(fraction) <= 18 and fraction.isascii() and fraction.isdigit()):
            return None
        amount, precision = int(whole + fraction), len(fraction)
    else:
        amount, precision = int(whole), 0
    if amount > ASSET_MAX_AMOUNT:
        return None
    return amount, precision, symbol


def decode_transfer_hex(hex_data: str) -> dict[str, str]:
    """Decode the binary ``transfer`` layout (from, to, asset, memo) to its JSON fields."""
    try:
        raw = bytes.fromhex(hex_data)
    except ValueError:
        raise ParseError("trace.act.hex_data", hex_data, "not hex") from None
    if len(raw) < 33:
        raise ParseError("trace.act.hex_data", hex_data, "too short for a transfer")
    from_name = uint64_to_name(int.from_bytes(raw[0:8], "little"))
    to_name = uint64_to_name(int.from_bytes(raw[8:16], "little"))
    amount = int.from_bytes(raw[16:24], "little", signed=True)
    precision = raw[24]
    symbol = raw[25:32].rstrip(b"\0").decode("ascii", "replace")
    length, shift, pos = 0, 0, 32
    while True:
        if pos >= len(raw):
            raise ParseError("trace.act.hex_data", hex_data, "truncated memo length")
        byte = raw[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    memo_bytes = raw[pos : pos + length]
    if len(memo_bytes) != length or pos + length != len(raw):
        raise ParseError("trace.act.hex_data", hex_data, "memo length does not match the data")
    try:
        memo = memo_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("trace.act.hex_data", hex_data, "memo is not UTF-8") from None
    if precision > 18:
        raise ParseError("trace.act.hex_data", hex_data, "precision above 18")
    return {
        "from": from_name,
        "to": to_name,
        "quantity": format_asset(amount, precision, symbol),
        "memo": memo,
    }


# --- conversions ----------------------------------------------------------------------------


def transfer_to_json(transfer: Transfer) -> dict[str, Any]:
    """A JSON-ready dict of the record (``block_time`` as ``format_iso_ms``)."""
    out = transfer._asdict()
    out["block_time"] = format_iso_ms(transfer.block_time)
    return out


def transfer_from_json(data: dict[str, Any]) -> Transfer:
    """Inverse of :func:`transfer_to_json`."""
    values = dict(data)
    values["block_time"] = parse_block_time(values["block_time"])
    return Transfer(**{name: values[name] for name in COLUMNS})


def transfers_to_table(rows: Sequence[Transfer]) -> pa.Table:
    """Build an Arrow table with :data:`ARROW_SCHEMA` from records, in the given order."""
    if not rows:
        return ARROW_SCHEMA.empty_table()
    n = len(rows)
    arrays = []
    for index, field in enumerate(ARROW_SCHEMA):
        # One list per column; cheaper than zip(*rows), which builds a tuple per row.
        column = list(map(itemgetter(index), rows))
        first = column[0]
        if column[-1] == first and column.count(first) == n:
            # Contract, action, symbol and precision hardly ever change within a commit:
            # repeating one value skips converting n Python objects (this conversion holds
            # the GIL, so it slows the collector's reader thread too).
            arrays.append(pa.repeat(pa.scalar(first, type=field.type), n))
        else:
            arrays.append(pa.array(column, type=field.type))
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def table_to_transfers(table: pa.Table) -> list[Transfer]:
    """Records from an Arrow table holding at least :data:`COLUMNS` (extra columns ignored)."""
    columns = []
    for name in COLUMNS:
        column = table.column(name)
        if name == "block_time":
            column = column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        elif pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns.append(column.to_pylist())
    return [Transfer._make(values) for values in zip(*columns, strict=True)]
