"""The SHiP binary format: a pure, sans-I/O reader and writer for the protocol's types.

Readers take ``(buf, pos)`` and return ``(value, new_pos)``; writers append to a
:class:`Writer`. Layouts are those of ship.md §1.3 (requests, results, ``block_position``) and
§1.6 (the trace structs), with the primitive encodings of antelope-sources.md §2.6: all
little-endian; ``varuint32`` is LEB128; ``bytes?`` payload lengths of a blocks result are LEB128
up to 64 bits (ship.md §1.6); ``string`` is read as raw bytes because history written in debug
mode or by old nodes holds console text that is not UTF-8 (fixture F1).

Variants are encoded as a ``varuint32`` index; which struct an index means comes from the ABI
the node sent (:mod:`.abi`): the readers here take the member names as a tuple, defaulting to
Spring's (ship.md §1.3), and dispatch on the *name*.

Every read is bounds-checked: truncated input, an over-long varint, an unknown variant index or
bytes left over after a top-level message raise :class:`DecodeError`, a
:class:`~karma_analytics.exceptions.ProtocolError` naming what was being read and the offset.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from karma_analytics.exceptions import ParseError, ProtocolError
from karma_analytics.model import ASSET_MAX_AMOUNT, name_to_uint64, uint64_to_name

__all__ = [
    "ACTION_TRACE_NAMES",
    "REQUEST_NAMES",
    "RESULT_NAMES",
    "AccountAuthSequence",
    "AccountDelta",
    "Action",
    "ActionReceiptV0",
    "ActionTraceV0",
    "ActionTraceV1",
    "BlockPosition",
    "DecodeError",
    "Extension",
    "GetBlocksAckRequestV0",
    "GetBlocksRequestV0",
    "GetBlocksRequestV1",
    "GetBlocksResultV0",
    "GetBlocksResultV1",
    "GetStatusRequestV0",
    "GetStatusRequestV1",
    "GetStatusResultV0",
    "GetStatusResultV1",
    "PartialTransactionV0",
    "PermissionLevel",
    "TransactionTraceV0",
    "TransferData",
    "Writer",
    "decode_request",
    "decode_result",
    "decode_traces",
    "decode_transfer_data",
    "encode_request",
    "encode_result",
    "encode_traces",
    "encode_transfer_data",
    "read_name",
    "read_varuint32",
    "read_varuint64",
]

T = TypeVar("T")

# Spring's variant member lists (ship.md §1.3, §1.6); a node's ABI may reorder or extend
# them, which is why every reader takes the names as an argument.
REQUEST_NAMES = (
    "get_status_request_v0",
    "get_blocks_request_v0",
    "get_blocks_ack_request_v0",
    "get_blocks_request_v1",
    "get_status_request_v1",
)
RESULT_NAMES = (
    "get_status_result_v0",
    "get_blocks_result_v0",
    "get_blocks_result_v1",
    "get_status_result_v1",
)
ACTION_TRACE_NAMES = ("action_trace_v0", "action_trace_v1")


class DecodeError(ProtocolError):
    """A SHiP message does not decode: truncated, over-long, or an unknown variant.

    Transient like every protocol fault: the collector reconnects from its safe point.

    Attributes:
        what: the field or struct being read, e.g. ``"action_trace_v1.console"``.
        offset: the byte offset in the message (or payload) where it failed.
    """

    def __init__(self, what: str, offset: int, reason: str, *, fatal: bool = False) -> None:
        self.what = what
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"malformed SHiP message: {reason} while reading {what} at offset {offset}; "
            "the collector reconnects, and if it repeats check that the node runs Spring or "
            "Leap (ship.md §1.5)",
            fatal=fatal,
        )


# --- primitives --------------------------------------------------------------------------------

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_names: dict[int, str] = {}


def _need(buf: bytes, pos: int, size: int, what: str) -> None:
    if pos + size > len(buf):
        raise DecodeError(what, pos, f"{size} bytes needed, {max(0, len(buf) - pos)} left")


def read_varuint32(buf: bytes, pos: int, what: str = "varuint32") -> tuple[int, int]:
    """LEB128, at most 5 bytes and below 2^32."""
    value = 0
    shift = 0
    start = pos
    end = len(buf)
    while True:
        if pos >= end:
            raise DecodeError(what, start, "truncated varuint32")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 35:
            raise DecodeError(what, start, "varuint32 longer than 5 bytes")
    if value > 0xFFFFFFFF:
        raise DecodeError(what, start, "varuint32 above 2^32-1")
    return value, pos


def read_varuint64(buf: bytes, pos: int, what: str = "varuint64") -> tuple[int, int]:
    """LEB128 up to 64 bits (SHiP's ``history_pack_varuint64`` payload lengths, §1.6)."""
    value = 0
    shift = 0
    start = pos
    end = len(buf)
    while True:
        if pos >= end:
            raise DecodeError(what, start, "truncated varuint64")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise DecodeError(what, start, "varuint64 longer than 10 bytes")
    if value >= 1 << 64:
        raise DecodeError(what, start, "varuint64 above 2^64-1")
    return value, pos


def read_u8(buf: bytes, pos: int, what: str = "uint8") -> tuple[int, int]:
    if pos >= len(buf):
        raise DecodeError(what, pos, "1 byte needed, 0 left")
    return buf[pos], pos + 1


def read_bool(buf: bytes, pos: int, what: str = "bool") -> tuple[bool, int]:
    value, pos = read_u8(buf, pos, what)
    if value > 1:
        raise DecodeError(what, pos - 1, f"bool byte {value} is neither 0 nor 1")
    return value == 1, pos


def read_u16(buf: bytes, pos: int, what: str = "uint16") -> tuple[int, int]:
    _need(buf, pos, 2, what)
    return _U16.unpack_from(buf, pos)[0], pos + 2


def read_u32(buf: bytes, pos: int, what: str = "uint32") -> tuple[int, int]:
    _need(buf, pos, 4, what)
    return _U32.unpack_from(buf, pos)[0], pos + 4


def read_u64(buf: bytes, pos: int, what: str = "uint64") -> tuple[int, int]:
    _need(buf, pos, 8, what)
    return _U64.unpack_from(buf, pos)[0], pos + 8


def read_i64(buf: bytes, pos: int, what: str = "int64") -> tuple[int, int]:
    _need(buf, pos, 8, what)
    return _I64.unpack_from(buf, pos)[0], pos + 8


def name_text(value: int) -> str:
    """The text of a name value (memoised: a stream repeats a few thousand names)."""
    text = _names.get(value)
    if text is None:
        text = uint64_to_name(value)
        if len(_names) > 200_000:
            _names.clear()
        _names[value] = text
    return text


def read_name(buf: bytes, pos: int, what: str = "name") -> tuple[str, int]:
    _need(buf, pos, 8, what)
    return name_text(_U64.unpack_from(buf, pos)[0]), pos + 8


def read_checksum256(buf: bytes, pos: int, what: str = "checksum256") -> tuple[bytes, int]:
    _need(buf, pos, 32, what)
    return bytes(buf[pos : pos + 32]), pos + 32


def read_bytes(buf: bytes, pos: int, what: str = "bytes") -> tuple[bytes, int]:
    """``bytes`` or ``string``: varuint32 length, then the raw bytes (never decoded here)."""
    size, pos = read_varuint32(buf, pos, what)
    _need(buf, pos, size, what)
    return bytes(buf[pos : pos + size]), pos + size


def _optional(
    reader: Callable[[bytes, int, str], tuple[T, int]],
) -> Callable[[bytes, int, str], tuple[T | None, int]]:
    def read(buf: bytes, pos: int, what: str) -> tuple[T | None, int]:
        present, pos = read_bool(buf, pos, what)
        if not present:
            return None, pos
        return reader(buf, pos, what)

    return read


def _array(
    reader: Callable[[bytes, int, str], tuple[T, int]],
) -> Callable[[bytes, int, str], tuple[tuple[T, ...], int]]:
    def read(buf: bytes, pos: int, what: str) -> tuple[tuple[T, ...], int]:
        count, pos = read_varuint32(buf, pos, what)
        # Every element takes at least one byte: refuse absurd counts before looping.
        if count > len(buf) - pos:
            raise DecodeError(what, pos, f"array of {count} elements cannot fit")
        out = []
        for _ in range(count):
            item, pos = reader(buf, pos, what)
            out.append(item)
        return tuple(out), pos

    return read


def _variant_name(buf: bytes, pos: int, names: Sequence[str], what: str) -> tuple[str, int]:
    index, new_pos = read_varuint32(buf, pos, what)
    if index >= len(names):
        raise DecodeError(what, pos, f"unknown variant index {index} (the ABI lists {len(names)})")
    return names[index], new_pos


class Writer:
    """Appends SHiP encodings to a bytearray (the devnet server's and the tests' encoder)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    def varuint(self, value: int) -> Writer:
        """LEB128 (varuint32, or the 64-bit form of payload lengths)."""
        buf = self.buf
        if 0 <= value < 0x80:
            buf.append(value)
            return self
        if value < 0:
            raise ValueError(f"varuint of a negative value {value}")
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                buf.append(byte | 0x80)
            else:
                buf.append(byte)
                return self

    def u8(self, value: int) -> Writer:
        self.buf.append(value)
        return self

    def boolean(self, value: bool) -> Writer:
        self.buf.append(1 if value else 0)
        return self

    def u16(self, value: int) -> Writer:
        self.buf += _U16.pack(value)
        return self

    def u32(self, value: int) -> Writer:
        self.buf += _U32.pack(value)
        return self

    def u64(self, value: int) -> Writer:
        self.buf += _U64.pack(value)
        return self

    def i64(self, value: int) -> Writer:
        self.buf += _I64.pack(value)
        return self

    def name(self, text: str) -> Writer:
        self.buf += _U64.pack(name_to_uint64(text))
        return self

    def checksum256(self, value: bytes) -> Writer:
        if len(value) != 32:
            raise ValueError(f"checksum256 must be 32 bytes, got {len(value)}")
        self.buf += value
        return self

    def raw(self, value: bytes) -> Writer:
        self.buf += value
        return self

    def bytes_(self, value: bytes) -> Writer:
        self.varuint(len(value))
        self.buf += value
        return self

    def optional(self, value: Any, write: Callable[[Any], Any]) -> Writer:
        if value is None:
            self.buf.append(0)
        else:
            self.buf.append(1)
            write(value)
        return self

    def array(self, values: Sequence[Any], write: Callable[[Any], Any]) -> Writer:
        self.varuint(len(values))
        for value in values:
            write(value)
        return self


# --- structs: requests and results (ship.md §1.3) ---------------------------------------------


class BlockPosition(NamedTuple):
    block_num: int
    block_id: bytes


class GetStatusRequestV0(NamedTuple):
    pass


class GetStatusRequestV1(NamedTuple):
    pass


class GetBlocksRequestV0(NamedTuple):
    start_block_num: int
    end_block_num: int
    max_messages_in_flight: int
    have_positions: tuple[BlockPosition, ...]
    irreversible_only: bool
    fetch_block: bool
    fetch_traces: bool
    fetch_deltas: bool


class GetBlocksRequestV1(NamedTuple):
    start_block_num: int
    end_block_num: int
    max_messages_in_flight: int
    have_positions: tuple[BlockPosition, ...]
    irreversible_only: bool
    fetch_block: bool
    fetch_traces: bool
    fetch_deltas: bool
    fetch_finality_data: bool


class GetBlocksAckRequestV0(NamedTuple):
    num_messages: int


class GetStatusResultV0(NamedTuple):
    head: BlockPosition
    last_irreversible: BlockPosition
    trace_begin_block: int
    trace_end_block: int
    chain_state_begin_block: int
    chain_state_end_block: int
    chain_id: bytes | None  # a binary extension (``checksum256$``): absent when no bytes remain


class GetStatusResultV1(NamedTuple):
    head: BlockPosition
    last_irreversible: BlockPosition
    trace_begin_block: int
    trace_end_block: int
    chain_state_begin_block: int
    chain_state_end_block: int
    chain_id: bytes
    finality_data_begin_block: int
    finality_data_end_block: int


class GetBlocksResultV0(NamedTuple):
    head: BlockPosition
    last_irreversible: BlockPosition
    this_block: BlockPosition | None
    prev_block: BlockPosition | None
    block: bytes | None
    traces: bytes | None
    deltas: bytes | None


class GetBlocksResultV1(NamedTuple):
    head: BlockPosition
    last_irreversible: BlockPosition
    this_block: BlockPosition | None
    prev_block: BlockPosition | None
    block: bytes | None
    traces: bytes | None
    deltas: bytes | None
    finality_data: bytes | None


def read_block_position(buf: bytes, pos: int, what: str = "block_position") -> tuple[Any, int]:
    _need(buf, pos, 36, what)
    return BlockPosition(_U32.unpack_from(buf, pos)[0], bytes(buf[pos + 4 : pos + 36])), pos + 36


def _write_position(w: Writer, value: BlockPosition) -> None:
    w.u32(value.block_num).checksum256(value.block_id)


def _read_payload(buf: bytes, pos: int, what: str) -> tuple[bytes | None, int]:
    """``bytes?`` of a blocks result: flag, 64-bit LEB128 length, bytes (ship.md §1.6)."""
    present, pos = read_bool(buf, pos, what)
    if not present:
        return None, pos
    size, pos = read_varuint64(buf, pos, what)
    _need(buf, pos, size, what)
    return bytes(buf[pos : pos + size]), pos + size


_read_opt_position = _optional(read_block_position)
_read_positions = _array(read_block_position)


def _read_blocks_request(buf: bytes, pos: int, v1: bool) -> tuple[Any, int]:
    what = "get_blocks_request_v1" if v1 else "get_blocks_request_v0"
    start, pos = read_u32(buf, pos, what + ".start_block_num")
    end, pos = read_u32(buf, pos, what + ".end_block_num")
    credits, pos = read_u32(buf, pos, what + ".max_messages_in_flight")
    positions, pos = _read_positions(buf, pos, what + ".have_positions")
    flags = []
    for field in ("irreversible_only", "fetch_block", "fetch_traces", "fetch_deltas") + (
        ("fetch_finality_data",) if v1 else ()
    ):
        flag, pos = read_bool(buf, pos, f"{what}.{field}")
        flags.append(flag)
    if v1:
        return GetBlocksRequestV1(start, end, credits, positions, *flags), pos
    return GetBlocksRequestV0(start, end, credits, positions, *flags), pos


_REQUEST_READERS: dict[str, Callable[[bytes, int], tuple[Any, int]]] = {
    "get_status_request_v0": lambda buf, pos: (GetStatusRequestV0(), pos),
    "get_status_request_v1": lambda buf, pos: (GetStatusRequestV1(), pos),
    "get_blocks_request_v0": lambda buf, pos: _read_blocks_request(buf, pos, False),
    "get_blocks_request_v1": lambda buf, pos: _read_blocks_request(buf, pos, True),
    "get_blocks_ack_request_v0": lambda buf, pos: (lambda v: (GetBlocksAckRequestV0(v[0]), v[1]))(
        read_u32(buf, pos, "get_blocks_ack_request_v0.num_messages")
    ),
}
_REQUEST_TYPES = {
    GetStatusRequestV0: "get_status_request_v0",
    GetStatusRequestV1: "get_status_request_v1",
    GetBlocksRequestV0: "get_blocks_request_v0",
    GetBlocksRequestV1: "get_blocks_request_v1",
    GetBlocksAckRequestV0: "get_blocks_ack_request_v0",
}


def _finish(buf: bytes, pos: int, what: str) -> None:
    if pos != len(buf):
        raise DecodeError(what, pos, f"{len(buf) - pos} bytes left over after the message")


def decode_request(buf: bytes, names: Sequence[str] = REQUEST_NAMES) -> Any:
    """One client message (a ``request`` variant); the whole buffer must be consumed.

    Raises:
        DecodeError: truncated, over-long, or an index the ABI does not list.
    """
    name, pos = _variant_name(buf, 0, names, "request")
    reader = _REQUEST_READERS.get(name)
    if reader is None:
        raise DecodeError("request", 0, f"request type {name!r} is not supported")
    value, pos = reader(buf, pos)
    _finish(buf, pos, name)
    return value


def encode_request(request: Any, names: Sequence[str] = REQUEST_NAMES) -> bytes:
    """Encode one request struct as its ``request`` variant (index looked up by name)."""
    name = _REQUEST_TYPES[type(request)]
    w = Writer().varuint(names.index(name))
    if isinstance(request, GetBlocksAckRequestV0):
        w.u32(request.num_messages)
    elif isinstance(request, GetBlocksRequestV0 | GetBlocksRequestV1):
        w.u32(request.start_block_num).u32(request.end_block_num)
        w.u32(request.max_messages_in_flight)
        w.array(request.have_positions, lambda p: _write_position(w, p))
        for flag in request[4:]:
            w.boolean(flag)
    return w.getvalue()


def _read_status(buf: bytes, pos: int, v1: bool) -> tuple[Any, int]:
    what = "get_status_result_v1" if v1 else "get_status_result_v0"
    head, pos = read_block_position(buf, pos, what + ".head")
    lib, pos = read_block_position(buf, pos, what + ".last_irreversible")
    numbers = []
    for field in ("trace_begin_block", "trace_end_block", "chain_state_begin_block",
                  "chain_state_end_block"):  # fmt: skip
        value, pos = read_u32(buf, pos, f"{what}.{field}")
        numbers.append(value)
    if not v1:
        # ``checksum256$``: a binary extension, present only when bytes remain (§1.3).
        chain_id = None
        if pos < len(buf):
            chain_id, pos = read_checksum256(buf, pos, what + ".chain_id")
        return GetStatusResultV0(head, lib, *numbers, chain_id), pos
    chain_id, pos = read_checksum256(buf, pos, what + ".chain_id")
    fbegin, pos = read_u32(buf, pos, what + ".finality_data_begin_block")
    fend, pos = read_u32(buf, pos, what + ".finality_data_end_block")
    return GetStatusResultV1(head, lib, *numbers, chain_id, fbegin, fend), pos


def read_blocks_result(buf: bytes, pos: int, v1: bool) -> tuple[Any, int]:
    what = "get_blocks_result_v1" if v1 else "get_blocks_result_v0"
    head, pos = read_block_position(buf, pos, what + ".head")
    lib, pos = read_block_position(buf, pos, what + ".last_irreversible")
    this_block, pos = _read_opt_position(buf, pos, what + ".this_block")
    prev_block, pos = _read_opt_position(buf, pos, what + ".prev_block")
    block, pos = _read_payload(buf, pos, what + ".block")
    traces, pos = _read_payload(buf, pos, what + ".traces")
    deltas, pos = _read_payload(buf, pos, what + ".deltas")
    if v1:
        finality, pos = _read_payload(buf, pos, what + ".finality_data")
        return GetBlocksResultV1(head, lib, this_block, prev_block, block, traces, deltas,
                                 finality), pos  # fmt: skip
    return GetBlocksResultV0(head, lib, this_block, prev_block, block, traces, deltas), pos


_RESULT_READERS: dict[str, Callable[[bytes, int], tuple[Any, int]]] = {
    "get_status_result_v0": lambda buf, pos: _read_status(buf, pos, False),
    "get_status_result_v1": lambda buf, pos: _read_status(buf, pos, True),
    "get_blocks_result_v0": lambda buf, pos: read_blocks_result(buf, pos, False),
    "get_blocks_result_v1": lambda buf, pos: read_blocks_result(buf, pos, True),
}
_RESULT_TYPES = {
    GetStatusResultV0: "get_status_result_v0",
    GetStatusResultV1: "get_status_result_v1",
    GetBlocksResultV0: "get_blocks_result_v0",
    GetBlocksResultV1: "get_blocks_result_v1",
}


def decode_result(buf: bytes, names: Sequence[str] = RESULT_NAMES) -> Any:
    """One server binary message (a ``result`` variant); the whole buffer must be consumed.

    Raises:
        DecodeError: truncated, over-long, or an index the ABI does not list.
    """
    name, pos = _variant_name(buf, 0, names, "result")
    reader = _RESULT_READERS.get(name)
    if reader is None:
        raise DecodeError("result", 0, f"result type {name!r} is not supported")
    value, pos = reader(buf, pos)
    _finish(buf, pos, name)
    return value


def _write_payload(w: Writer, value: bytes | None) -> None:
    if value is None:
        w.u8(0)
    else:
        w.u8(1).varuint(len(value)).raw(value)


def encode_result(result: Any, names: Sequence[str] = RESULT_NAMES) -> bytes:
    """Encode one result struct as its ``result`` variant (index looked up by name)."""
    w = Writer().varuint(names.index(_RESULT_TYPES[type(result)]))
    _write_position(w, result.head)
    _write_position(w, result.last_irreversible)
    if isinstance(result, GetStatusResultV0 | GetStatusResultV1):
        for value in result[2:6]:
            w.u32(value)
        if result.chain_id is not None:
            w.checksum256(result.chain_id)
        if isinstance(result, GetStatusResultV1):
            w.u32(result.finality_data_begin_block).u32(result.finality_data_end_block)
        return w.getvalue()
    w.optional(result.this_block, lambda p: _write_position(w, p))
    w.optional(result.prev_block, lambda p: _write_position(w, p))
    for payload in result[4:]:
        _write_payload(w, payload)
    return w.getvalue()


# --- structs: traces (ship.md §1.6) -------------------------------------------------------------


class PermissionLevel(NamedTuple):
    actor: str
    permission: str


class Action(NamedTuple):
    account: str
    name: str
    authorization: tuple[PermissionLevel, ...]
    data: bytes


class AccountAuthSequence(NamedTuple):
    account: str
    sequence: int


class ActionReceiptV0(NamedTuple):
    receiver: str
    act_digest: bytes
    global_sequence: int
    recv_sequence: int
    auth_sequence: tuple[AccountAuthSequence, ...]
    code_sequence: int
    abi_sequence: int


class AccountDelta(NamedTuple):
    account: str
    delta: int


class ActionTraceV0(NamedTuple):
    action_ordinal: int
    creator_action_ordinal: int
    receipt: ActionReceiptV0 | None
    receiver: str
    act: Action
    context_free: bool
    elapsed: int
    console: bytes
    account_ram_deltas: tuple[AccountDelta, ...]
    except_: bytes | None
    error_code: int | None


class ActionTraceV1(NamedTuple):
    action_ordinal: int
    creator_action_ordinal: int
    receipt: ActionReceiptV0 | None
    receiver: str
    act: Action
    context_free: bool
    elapsed: int
    console: bytes
    account_ram_deltas: tuple[AccountDelta, ...]
    except_: bytes | None
    error_code: int | None
    return_value: bytes


class Extension(NamedTuple):
    type: int
    data: bytes


class PartialTransactionV0(NamedTuple):
    expiration: int
    ref_block_num: int
    ref_block_prefix: int
    max_net_usage_words: int
    max_cpu_usage_ms: int
    delay_sec: int
    transaction_extensions: tuple[Extension, ...]
    signatures: tuple[bytes, ...]  # each the whole encoded ``signature`` (type byte + data)
    context_free_data: tuple[bytes, ...]


class TransactionTraceV0(NamedTuple):
    id: bytes
    status: int
    cpu_usage_us: int
    net_usage_words: int
    elapsed: int
    net_usage: int
    scheduled: bool
    action_traces: tuple[ActionTraceV0 | ActionTraceV1, ...]
    account_ram_delta: AccountDelta | None
    except_: bytes | None
    error_code: int | None
    failed_dtrx_trace: TransactionTraceV0 | None
    partial: PartialTransactionV0 | None


def _read_permission(buf: bytes, pos: int, what: str) -> tuple[PermissionLevel, int]:
    actor, pos = read_name(buf, pos, what + ".actor")
    permission, pos = read_name(buf, pos, what + ".permission")
    return PermissionLevel(actor, permission), pos


def _read_auth_sequence(buf: bytes, pos: int, what: str) -> tuple[AccountAuthSequence, int]:
    account, pos = read_name(buf, pos, what + ".account")
    sequence, pos = read_u64(buf, pos, what + ".sequence")
    return AccountAuthSequence(account, sequence), pos


def _read_delta(buf: bytes, pos: int, what: str) -> tuple[AccountDelta, int]:
    account, pos = read_name(buf, pos, what + ".account")
    delta, pos = read_i64(buf, pos, what + ".delta")
    return AccountDelta(account, delta), pos


_read_permissions = _array(_read_permission)
_read_auth_sequences = _array(_read_auth_sequence)
_read_deltas = _array(_read_delta)
_read_opt_delta = _optional(_read_delta)
_read_opt_bytes = _optional(read_bytes)
_read_opt_u64 = _optional(read_u64)


def read_action(buf: bytes, pos: int, what: str = "action") -> tuple[Action, int]:
    account, pos = read_name(buf, pos, what + ".account")
    name, pos = read_name(buf, pos, what + ".name")
    auth, pos = _read_permissions(buf, pos, what + ".authorization")
    data, pos = read_bytes(buf, pos, what + ".data")
    return Action(account, name, auth, data), pos


def _read_receipt(buf: bytes, pos: int, what: str) -> tuple[ActionReceiptV0, int]:
    # ``action_receipt`` has one member (index 0 = action_receipt_v0) in every known ABI.
    _, pos = _variant_name(buf, pos, ("action_receipt_v0",), what)
    receiver, pos = read_name(buf, pos, what + ".receiver")
    digest, pos = read_checksum256(buf, pos, what + ".act_digest")
    gs, pos = read_u64(buf, pos, what + ".global_sequence")
    recv, pos = read_u64(buf, pos, what + ".recv_sequence")
    auth, pos = _read_auth_sequences(buf, pos, what + ".auth_sequence")
    code, pos = read_varuint32(buf, pos, what + ".code_sequence")
    abi, pos = read_varuint32(buf, pos, what + ".abi_sequence")
    return ActionReceiptV0(receiver, digest, gs, recv, auth, code, abi), pos


_read_opt_receipt = _optional(_read_receipt)


def read_action_trace(
    buf: bytes, pos: int, names: Sequence[str] = ACTION_TRACE_NAMES
) -> tuple[ActionTraceV0 | ActionTraceV1, int]:
    """One ``action_trace`` variant (v0, or v1 with ``return_value``)."""
    name, pos = _variant_name(buf, pos, names, "action_trace")
    if name not in ("action_trace_v0", "action_trace_v1"):
        raise DecodeError("action_trace", pos, f"action trace type {name!r} is not supported")
    what = name
    ordinal, pos = read_varuint32(buf, pos, what + ".action_ordinal")
    creator, pos = read_varuint32(buf, pos, what + ".creator_action_ordinal")
    receipt, pos = _read_opt_receipt(buf, pos, what + ".receipt")
    receiver, pos = read_name(buf, pos, what + ".receiver")
    act, pos = read_action(buf, pos, what + ".act")
    context_free, pos = read_bool(buf, pos, what + ".context_free")
    elapsed, pos = read_i64(buf, pos, what + ".elapsed")
    console, pos = read_bytes(buf, pos, what + ".console")
    deltas, pos = _read_deltas(buf, pos, what + ".account_ram_deltas")
    except_, pos = _read_opt_bytes(buf, pos, what + ".except")
    error_code, pos = _read_opt_u64(buf, pos, what + ".error_code")
    fields = (ordinal, creator, receipt, receiver, act, context_free, elapsed, console, deltas,
              except_, error_code)  # fmt: skip
    if name == "action_trace_v1":
        return_value, pos = read_bytes(buf, pos, what + ".return_value")
        return ActionTraceV1(*fields, return_value), pos
    return ActionTraceV0(*fields), pos


def _read_signature(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """A ``signature``: a key-type index, then K1/R1 65 bytes or WebAuthn's three fields."""
    start = pos
    kind, pos = read_varuint32(buf, pos, what)
    if kind in (0, 1):
        _need(buf, pos, 65, what)
        pos += 65
    elif kind == 2:
        _need(buf, pos, 65, what)
        _, pos = read_bytes(buf, pos + 65, what + ".auth_data")
        _, pos = read_bytes(buf, pos, what + ".client_json")
    else:
        raise DecodeError(what, start, f"unknown signature type {kind}")
    return bytes(buf[start:pos]), pos


def _read_extension(buf: bytes, pos: int, what: str) -> tuple[Extension, int]:
    kind, pos = read_u16(buf, pos, what + ".type")
    data, pos = read_bytes(buf, pos, what + ".data")
    return Extension(kind, data), pos


_read_extensions = _array(_read_extension)
_read_signatures = _array(_read_signature)
_read_bytes_array = _array(read_bytes)


def _read_partial(buf: bytes, pos: int, what: str) -> tuple[PartialTransactionV0, int]:
    _, pos = _variant_name(buf, pos, ("partial_transaction_v0",), what)
    what = "partial_transaction_v0"
    expiration, pos = read_u32(buf, pos, what + ".expiration")
    ref_num, pos = read_u16(buf, pos, what + ".ref_block_num")
    ref_prefix, pos = read_u32(buf, pos, what + ".ref_block_prefix")
    net_words, pos = read_varuint32(buf, pos, what + ".max_net_usage_words")
    cpu_ms, pos = read_u8(buf, pos, what + ".max_cpu_usage_ms")
    delay, pos = read_varuint32(buf, pos, what + ".delay_sec")
    extensions, pos = _read_extensions(buf, pos, what + ".transaction_extensions")
    signatures, pos = _read_signatures(buf, pos, what + ".signatures")
    cfd, pos = _read_bytes_array(buf, pos, what + ".context_free_data")
    return PartialTransactionV0(expiration, ref_num, ref_prefix, net_words, cpu_ms, delay,
                                extensions, signatures, cfd), pos  # fmt: skip


_read_opt_partial = _optional(_read_partial)


def read_transaction_trace(
    buf: bytes, pos: int, action_names: Sequence[str] = ACTION_TRACE_NAMES, depth: int = 0
) -> tuple[TransactionTraceV0, int]:
    """One ``transaction_trace`` variant (index 0 = ``transaction_trace_v0``)."""
    _, pos = _variant_name(buf, pos, ("transaction_trace_v0",), "transaction_trace")
    what = "transaction_trace_v0"
    trx_id, pos = read_checksum256(buf, pos, what + ".id")
    status, pos = read_u8(buf, pos, what + ".status")
    cpu, pos = read_u32(buf, pos, what + ".cpu_usage_us")
    net_words, pos = read_varuint32(buf, pos, what + ".net_usage_words")
    elapsed, pos = read_i64(buf, pos, what + ".elapsed")
    net, pos = read_u64(buf, pos, what + ".net_usage")
    scheduled, pos = read_bool(buf, pos, what + ".scheduled")
    count, pos = read_varuint32(buf, pos, what + ".action_traces")
    if count > len(buf) - pos:
        raise DecodeError(what + ".action_traces", pos, f"array of {count} cannot fit")
    traces = []
    for _ in range(count):
        trace, pos = read_action_trace(buf, pos, action_names)
        traces.append(trace)
    ram, pos = _read_opt_delta(buf, pos, what + ".account_ram_delta")
    except_, pos = _read_opt_bytes(buf, pos, what + ".except")
    error_code, pos = _read_opt_u64(buf, pos, what + ".error_code")
    failed, pos = read_bool(buf, pos, what + ".failed_dtrx_trace")
    failed_trace = None
    if failed:
        if depth > 8:
            raise DecodeError(what + ".failed_dtrx_trace", pos, "nested deeper than 8 levels")
        failed_trace, pos = read_transaction_trace(buf, pos, action_names, depth + 1)
    partial, pos = _read_opt_partial(buf, pos, what + ".partial")
    return TransactionTraceV0(trx_id, status, cpu, net_words, elapsed, net, scheduled,
                              tuple(traces), ram, except_, error_code, failed_trace,
                              partial), pos  # fmt: skip


def decode_traces(
    payload: bytes, action_names: Sequence[str] = ACTION_TRACE_NAMES
) -> tuple[TransactionTraceV0, ...]:
    """The ``traces`` payload of a blocks result: ``transaction_trace[]``, wholly consumed.

    The reference decoder (every field into structs); the collector's hot path is
    :func:`karma_analytics.sources.ship.decode.scan_traces`.
    """
    count, pos = read_varuint32(payload, 0, "traces")
    if count > len(payload) - pos:
        raise DecodeError("traces", 0, f"array of {count} transaction traces cannot fit")
    out = []
    for _ in range(count):
        trace, pos = read_transaction_trace(payload, pos, action_names)
        out.append(trace)
    _finish(payload, pos, "traces")
    return tuple(out)


def _write_action(w: Writer, act: Action) -> None:
    w.name(act.account).name(act.name)
    w.array(act.authorization, lambda p: w.name(p.actor).name(p.permission))
    w.bytes_(act.data)


def write_action_trace(
    w: Writer, trace: ActionTraceV0 | ActionTraceV1, names: Sequence[str] = ACTION_TRACE_NAMES
) -> None:
    v1 = isinstance(trace, ActionTraceV1)
    w.varuint(names.index("action_trace_v1" if v1 else "action_trace_v0"))
    w.varuint(trace.action_ordinal).varuint(trace.creator_action_ordinal)

    def receipt(r: ActionReceiptV0) -> None:
        w.varuint(0).name(r.receiver).checksum256(r.act_digest)
        w.u64(r.global_sequence).u64(r.recv_sequence)
        w.array(r.auth_sequence, lambda a: w.name(a.account).u64(a.sequence))
        w.varuint(r.code_sequence).varuint(r.abi_sequence)

    w.optional(trace.receipt, receipt)
    w.name(trace.receiver)
    _write_action(w, trace.act)
    w.boolean(trace.context_free).i64(trace.elapsed).bytes_(trace.console)
    w.array(trace.account_ram_deltas, lambda d: w.name(d.account).i64(d.delta))
    w.optional(trace.except_, w.bytes_)
    w.optional(trace.error_code, w.u64)
    if v1:
        w.bytes_(trace.return_value)


def write_transaction_trace(
    w: Writer, trace: TransactionTraceV0, names: Sequence[str] = ACTION_TRACE_NAMES
) -> None:
    w.varuint(0).checksum256(trace.id).u8(trace.status).u32(trace.cpu_usage_us)
    w.varuint(trace.net_usage_words).i64(trace.elapsed).u64(trace.net_usage)
    w.boolean(trace.scheduled)
    w.array(trace.action_traces, lambda t: write_action_trace(w, t, names))
    w.optional(trace.account_ram_delta, lambda d: w.name(d.account).i64(d.delta))
    w.optional(trace.except_, w.bytes_)
    w.optional(trace.error_code, w.u64)
    w.optional(trace.failed_dtrx_trace, lambda t: write_transaction_trace(w, t, names))

    def partial(p: PartialTransactionV0) -> None:
        w.varuint(0).u32(p.expiration).u16(p.ref_block_num).u32(p.ref_block_prefix)
        w.varuint(p.max_net_usage_words).u8(p.max_cpu_usage_ms).varuint(p.delay_sec)
        w.array(p.transaction_extensions, lambda e: w.u16(e.type).bytes_(e.data))
        w.array(p.signatures, w.raw)
        w.array(p.context_free_data, w.bytes_)

    w.optional(trace.partial, partial)


def encode_traces(
    traces: Sequence[TransactionTraceV0], names: Sequence[str] = ACTION_TRACE_NAMES
) -> bytes:
    """Inverse of :func:`decode_traces`."""
    w = Writer()
    w.array(traces, lambda t: write_transaction_trace(w, t, names))
    return w.getvalue()


# --- transfer data (antelope-sources.md §1.3, §1.4) -------------------------------------------


class TransferData(NamedTuple):
    """The decoded ``transfer`` action data (from, to, quantity, memo).

    Its fields are :class:`~karma_analytics.model.Transfer`'s last six, in the same order:
    the decoder unpacks one into a row.
    """

    from_account: str
    to_account: str
    amount_units: int
    precision: int
    symbol: str
    memo: str


_TRANSFER_HEAD = struct.Struct("<QQqB7s")
_new_tuple = tuple.__new__


def decode_transfer_data(data: bytes, *, field: str = "act.data") -> TransferData:
    """Decode ``name from, name to, asset quantity, string memo`` strictly.

    Raises:
        ParseError: truncated or over-long data, an invalid name, symbol or amount, a memo
            that is not UTF-8. (A collector keeps such a trace as a reject, DESIGN.md.)
    """
    if len(data) < 33:
        raise ParseError(field, data.hex(), f"{len(data)} bytes are too short for a transfer")
    frm, to, amount, precision, code = _TRANSFER_HEAD.unpack_from(data, 0)
    size = data[32]
    if size < 0x80:  # a memo below 128 bytes: its length is one byte
        pos = 33
    else:
        try:
            size, pos = read_varuint32(data, 32, field + ".memo")
        except DecodeError as exc:
            raise ParseError(field, data.hex(), exc.reason) from None
    if pos + size != len(data):
        raise ParseError(
            field, data.hex(), f"memo length {size} does not match the {len(data)}-byte data"
        )
    from_name = _valid_names.get(frm) or _valid_name(frm, f"{field}.from")
    to_name = _valid_names.get(to) or _valid_name(to, f"{field}.to")
    symbol = _valid_symbols.get(code) or _valid_symbol(code, f"{field}.quantity")
    if precision > 18:
        raise ParseError(f"{field}.quantity", precision, "precision above 18")
    if not -ASSET_MAX_AMOUNT <= amount <= ASSET_MAX_AMOUNT:
        raise ParseError(f"{field}.quantity", amount, "amount beyond 2^62-1")
    try:
        memo = data[pos:].decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"{field}.memo", data[pos:].hex(), "memo is not UTF-8") from None
    # tuple.__new__: TransferData(...) without its keyword handling (one per transfer).
    return _new_tuple(TransferData, (from_name, to_name, amount, precision, symbol, memo))


_valid_names: dict[int, str] = {}
_valid_symbols: dict[bytes, str] = {}


def _valid_symbol(code: bytes, field: str) -> str:
    """The text of a 7-byte symbol code field (memoised like names).

    Raises:
        ParseError: not 1-7 letters A-Z padded with zero bytes.
    """
    symbol = code.rstrip(b"\0")
    if not symbol or not symbol.isalpha() or not symbol.isupper() or b"\0" in symbol:
        raise ParseError(field, code.hex(), "symbol code must be 1-7 letters A-Z")
    if len(_valid_symbols) > 10_000:
        _valid_symbols.clear()
    text = _valid_symbols[code] = symbol.decode("ascii")
    return text


def _valid_name(value: int, field: str) -> str:
    """The text of a name value that round-trips (memoised: a stream repeats its accounts).

    Raises:
        ParseError: the value is not a valid Antelope name.
    """
    text = name_text(value)
    if not text or name_to_uint64_safe(text) != value:
        raise ParseError(field, f"0x{value:016x}", "not a valid Antelope name")
    if len(_valid_names) > 200_000:
        _valid_names.clear()
    _valid_names[value] = text
    return text


def name_to_uint64_safe(text: str) -> int | None:
    """``name_to_uint64`` or ``None`` when the text is not a valid name."""
    try:
        return name_to_uint64(text)
    except ParseError:
        return None


def encode_transfer_data(value: TransferData) -> bytes:
    """Inverse of :func:`decode_transfer_data`."""
    code = value.symbol.encode("ascii")
    memo = value.memo.encode()
    w = Writer().name(value.from_account).name(value.to_account).i64(value.amount_units)
    w.u8(value.precision).raw(code.ljust(7, b"\0")).bytes_(memo)
    return w.getvalue()
