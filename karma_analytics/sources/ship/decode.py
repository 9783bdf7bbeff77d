"""SHiP block results -> engine events (pure: bytes in, events out).

:class:`BlockDecoder` turns one binary server message into either a status result or the events
of one block: an :class:`~karma_analytics.engine.ActionReceived` per matching action trace, then
``Progress(block)``. The filter is ship.md §1.6's:

* only the outer ``transaction_trace_v0`` with ``status == 0`` (executed); never anything
  inside ``failed_dtrx_trace`` (a soft-failed deferred transaction is written with an outer
  status 0 whose onerror handler ran, §1.6 quirk);
* action traces with a receipt, ``receiver == act.account == contract`` and
  ``act.name == action`` (the notifications to ``from``/``to`` carry the same ``act``);
* ``global_sequence`` from the receipt; ``act.data`` decoded as (from, to, quantity, memo);
  data that does not parse becomes a :class:`~karma_analytics.engine.Reject` (kept, never
  dropped, DESIGN.md "Bad input").

``action_idx`` (the dataset column, model.Transfer) is ``action_ordinal - 1``: the action's
place in its transaction in scheduling order, the one value every source reports (dfuse's
``action_ordinal``, Hyperion's, SHiP's), so a dataset continued through another source holds the
same value for the same action. (It is not the trace's index in ``action_traces``, which nodeos
writes in execution order: the 25 transfers of an airdrop transaction have ordinals 1..25 but
indices 0, 3, 6, ...) An ordinal 0 (outside the protocol: ordinals start at 1) makes the action
a reject.

Block time (ship.md §1.7): the first 4 bytes of the ``block`` payload are the header timestamp
slot, ``time_ms = 946684800000 + 500 * slot``.

Gaps (ship.md §1.8): a result without ``this_block`` (the node has no id for that number), or
with ``this_block`` but no ``traces`` although they were asked for (outside the trace log), is a
:class:`GapError` (fatal) naming the block, never "no transfers".

The hot path (:func:`scan_traces`) walks every field of every trace (there is no length prefix
to skip by, §1.6) with offsets only: a non-matching action trace costs a few integer reads and
no objects. Before walking, a payload that does not contain the 24 bytes of a match's
``receiver, act.account, act.name`` (three consecutive names in an action trace:
:func:`matching_names`) cannot hold a matching trace and is not walked; pass
``full_scan=True`` to walk every payload anyway (the tests do, to check every structure).
In an irreversible backfill most results are such (:meth:`BlockDecoder.skip_plain`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

from karma_analytics.engine import ActionReceived, Progress, Reject
from karma_analytics.exceptions import ParseError, ProtocolError
from karma_analytics.model import Transfer, name_to_uint64

from . import codec
from .abi import ShipAbi
from .codec import DecodeError, read_varuint32

__all__ = [
    "BLOCK_EPOCH_MS",
    "BlockDecoder",
    "BlockEvents",
    "GapError",
    "Match",
    "block_time_ms",
    "scan_traces",
]

# block_timestamp_type: half-seconds since 2000-01-01T00:00:00Z (ship.md §1.7).
BLOCK_EPOCH_MS = 946_684_800_000
BLOCK_INTERVAL_MS = 500

_U64 = struct.Struct("<Q").unpack_from
_new_tuple = tuple.__new__
_U32 = struct.Struct("<I").unpack_from


_NO_BODY = (
    "block {num}: the node sent no block body (fetch_block) for a block with transfers, so "
    "their time is unknown; check the node's block log"
)


class GapError(ProtocolError):
    """A block result without the data the collector needs: a gap in the node's logs (fatal).

    Attributes:
        block_num: the block concerned.
    """

    def __init__(self, block_num: int, message: str) -> None:
        self.block_num = block_num
        super().__init__(message, fatal=True)


class Match(NamedTuple):
    """A matching action trace found by :func:`scan_traces` (offsets into the payload)."""

    trx_offset: int  # where the transaction id (32 bytes) starts
    action_idx: int
    action_ordinal: int
    global_sequence: int
    data_offset: int
    data_size: int


class BlockEvents(NamedTuple):
    """One decoded blocks result.

    Attributes:
        block_num, block_id: ``this_block`` (id as 64 hex).
        prev_block: ``(num, id hex)`` or ``None``.
        head, last_irreversible: block numbers the node reported with it.
        block_time: ms since the epoch from the ``block`` payload, or ``None`` without one.
        events: the block's ``ActionReceived`` events, then its ``Progress``.
    """

    block_num: int
    block_id: str
    prev_block: tuple[int, str] | None
    head: int
    last_irreversible: int
    block_time: int | None
    events: list[Any]


def block_time_ms(block: bytes) -> int:
    """The block time from a ``block`` payload (its first field is the timestamp slot)."""
    if len(block) < 4:
        raise DecodeError("block.timestamp", 0, f"4 bytes needed, {len(block)} left")
    return BLOCK_EPOCH_MS + BLOCK_INTERVAL_MS * _U32(block, 0)[0]


def matching_names(contract: int, action: int) -> bytes:
    """``receiver, act.account, act.name`` of a matching action trace as encoded: three
    consecutive names. A payload without these 24 bytes holds no match (module docstring)."""
    return struct.pack("<QQQ", contract, contract, action)


def _varuint(buf: bytes, pos: int) -> tuple[int, int]:
    # The common case (a value < 128) inline in the callers; this is the general one.
    return read_varuint32(buf, pos, "traces")


def _skip_partial(buf: bytes, pos: int) -> int:
    """Skip a ``partial_transaction`` variant (ship.md §1.6).

    Varuints below 128 (one byte) and empty lists are read inline: nearly every field is one.
    """
    if buf[pos] != 0:
        raise DecodeError("partial_transaction", pos, f"unknown variant index {buf[pos]}")
    pos += 11  # index, expiration u32, ref_block_num u16, ref_block_prefix u32
    pos = pos + 1 if buf[pos] < 0x80 else _varuint(buf, pos)[1]  # max_net_usage_words
    pos += 1  # max_cpu_usage_ms
    pos = pos + 1 if buf[pos] < 0x80 else _varuint(buf, pos)[1]  # delay_sec
    if buf[pos] == 0:  # transaction_extensions
        pos += 1
    else:
        count, pos = _varuint(buf, pos)
        for _ in range(count):
            size, pos = _varuint(buf, pos + 2)
            pos += size
    count = buf[pos]  # signatures
    if count == 1 and buf[pos + 1] < 2:  # one K1 or R1 signature: 66 bytes
        pos += 67
        count = 0
    elif count < 0x80:
        pos += 1
    else:
        count, pos = _varuint(buf, pos)
    for _ in range(count):
        kind = buf[pos]
        pos += 66
        if kind > 1:
            if kind != 2:
                raise DecodeError("partial_transaction_v0.signatures", pos - 66, "unknown key type")
            # WebAuthn: 65 bytes, then auth_data bytes and client_json string
            size, pos = _varuint(buf, pos)
            size2, pos = _varuint(buf, pos + size)
            pos += size2
    if buf[pos] == 0:  # context_free_data
        return pos + 1
    count, pos = _varuint(buf, pos)
    for _ in range(count):
        size, pos = _varuint(buf, pos)
        pos += size
    return pos


# An action trace's fields after ``elapsed`` when all are empty: console, account_ram_deltas,
# except?, error_code?, and for action_trace_v1 return_value.
_EMPTY_TAIL_V0 = bytes(4)
_EMPTY_TAIL_V1 = bytes(5)


def _action_tail(buf: bytes, pos: int, v1: bool) -> int:
    """Skip an action trace's fields after ``elapsed`` (the general case of _scan_trx)."""
    n = buf[pos]  # console
    if n < 0x80:
        pos += 1 + n
    else:
        n, pos = _varuint(buf, pos)
        pos += n
    n = buf[pos]  # account_ram_deltas
    if n < 0x80:
        pos += 1 + 16 * n
    else:
        n, pos = _varuint(buf, pos)
        pos += 16 * n
    flag = buf[pos]  # except?
    if flag == 0:
        pos += 1
    elif flag == 1:
        n, pos = _varuint(buf, pos + 1)
        pos += n
    else:
        _flag(buf, pos, "action_trace.except")
    flag = buf[pos]  # error_code?
    if flag == 0:
        pos += 1
    elif flag == 1:
        pos += 9
    else:
        _flag(buf, pos, "action_trace.error_code")
    if v1:
        n = buf[pos]  # return_value
        if n < 0x80:
            pos += 1 + n
        else:
            n, pos = _varuint(buf, pos)
            pos += n
    return pos


def _flag(buf: bytes, pos: int, what: str) -> int:
    value = buf[pos]
    if value > 1:
        raise DecodeError(what, pos, f"presence flag {value} is neither 0 nor 1")
    return value


def _scan_trx(
    buf: bytes,
    pos: int,
    wanted: bytes,
    empty_tails: Sequence[bytes],
    out: list[tuple[int, int, int, int, int, int]] | None,
    depth: int,
) -> int:
    """Walk one ``transaction_trace`` variant from ``pos``; append matches to ``out`` (None:
    collect nothing, e.g. inside ``failed_dtrx_trace``). Returns the position after it.

    ``wanted`` is :func:`matching_names`, compared in one call; ``empty_tails`` is, per
    ``action_trace`` variant index, the bytes of its fields after ``elapsed`` when all are
    empty. A match is appended as the fields of a :class:`Match` (a plain tuple is cheaper to
    build)."""
    if buf[pos] != 0:
        raise DecodeError("transaction_trace", pos, f"unknown variant index {buf[pos]}")
    trx_offset = pos + 1
    status = buf[pos + 33]
    pos += 38  # index, id, status, cpu_usage_us
    value = buf[pos]
    pos = pos + 1 if value < 0x80 else _varuint(buf, pos)[1]  # net_usage_words
    pos += 17  # elapsed, net_usage, scheduled
    count = buf[pos]
    if count < 0x80:
        pos += 1
    else:
        count, pos = _varuint(buf, pos)
    take = out is not None and status == 0
    nflags = len(empty_tails)
    first = wanted[0]
    for idx in range(count):
        kind = buf[pos]
        if kind >= nflags:
            raise DecodeError("action_trace", pos, f"unknown variant index {kind}")
        pos += 1
        ordinal = buf[pos]
        if ordinal < 0x80:
            pos += 1
        else:
            ordinal, pos = _varuint(buf, pos)
        pos = pos + 1 if buf[pos] < 0x80 else _varuint(buf, pos)[1]  # creator_action_ordinal
        has_receipt = buf[pos]
        if has_receipt > 1:
            _flag(buf, pos, "action_trace.receipt")
        pos += 1
        gs_pos = 0
        if has_receipt:
            if buf[pos] != 0:
                raise DecodeError("action_receipt", pos, f"unknown variant index {buf[pos]}")
            gs_pos = pos + 41  # index, receiver, act_digest
            pos += 57  # ..., global_sequence, recv_sequence
            n = buf[pos]
            if n < 0x80:
                pos += 1 + 16 * n
            else:
                n, pos = _varuint(buf, pos)
                pos += 16 * n
            pos = pos + 1 if buf[pos] < 0x80 else _varuint(buf, pos)[1]  # code_sequence
            pos = pos + 1 if buf[pos] < 0x80 else _varuint(buf, pos)[1]  # abi_sequence
        receiver_pos = pos
        pos += 24  # receiver, act.account, act.name
        n = buf[pos]
        if n < 0x80:
            pos += 1 + 16 * n
        else:
            n, pos = _varuint(buf, pos)
            pos += 16 * n
        size = buf[pos]
        if size < 0x80:
            pos += 1
        else:
            size, pos = _varuint(buf, pos)
        data_pos = pos
        pos += size + 9  # data, context_free, elapsed
        empty = empty_tails[kind]
        if buf.startswith(empty, pos):
            # console, account_ram_deltas, except?, error_code? (and return_value for v1) all
            # empty, as nearly always: one comparison.
            pos += len(empty)
        else:
            pos = _action_tail(buf, pos, empty is _EMPTY_TAIL_V1)
        if (
            take
            and has_receipt
            and buf[receiver_pos] == first
            and buf.startswith(wanted, receiver_pos)
        ):
            match = (trx_offset, idx, ordinal, _U64(buf, gs_pos)[0], data_pos, size)
            out.append(match)  # type: ignore[union-attr]
    if buf.startswith(b"\0\0\0\0", pos):
        # account_ram_delta?, except?, error_code?, failed_dtrx_trace?: all absent (as nearly
        # always), then partial?
        pos += 4
        if buf[pos] == 1:
            return _skip_partial(buf, pos + 1)
        _flag(buf, pos, "transaction_trace.partial")
        return pos + 1
    pos += 17 if _flag(buf, pos, "transaction_trace.account_ram_delta") else 1
    if _flag(buf, pos, "transaction_trace.except"):
        n, pos = _varuint(buf, pos + 1)
        pos += n
    else:
        pos += 1
    pos += 9 if _flag(buf, pos, "transaction_trace.error_code") else 1
    if _flag(buf, pos, "transaction_trace.failed_dtrx_trace"):
        if depth >= 8:
            raise DecodeError("failed_dtrx_trace", pos, "nested deeper than 8 levels")
        pos = _scan_trx(buf, pos + 1, wanted, empty_tails, None, depth + 1)
    else:
        pos += 1
    if _flag(buf, pos, "transaction_trace.partial"):
        pos = _skip_partial(buf, pos + 1)
    else:
        pos += 1
    return pos


def scan_traces(
    payload: bytes,
    contract: int,
    action: int,
    v1_flags: Sequence[bool] = (False, True),
    *,
    full_scan: bool = True,
) -> list[Match]:
    """The matching action traces of a ``traces`` payload (see the module docstring).

    Args:
        payload: the ``transaction_trace[]`` bytes.
        contract, action: the contract and action names as uint64 values.
        v1_flags: per ``action_trace`` variant index, whether it is ``action_trace_v1``.
        full_scan: walk the payload even when :func:`matching_names` do not occur in it.

    Raises:
        DecodeError: the payload is truncated, over-long or has an unknown variant index.
    """
    wanted = matching_names(contract, action)
    if not full_scan and wanted not in payload:
        return []
    found = _scan_range(payload, 0, len(payload), wanted, empty_tails(v1_flags))
    return [Match._make(fields) for fields in found]


def empty_tails(v1_flags: Sequence[bool]) -> tuple[bytes, ...]:
    """Per ``action_trace`` variant index, the bytes of its fields after ``elapsed`` when all
    are empty (what the walk compares in one call)."""
    return tuple(_EMPTY_TAIL_V1 if v1 else _EMPTY_TAIL_V0 for v1 in v1_flags)


def _scan_range(
    buf: bytes, start: int, end: int, wanted: bytes, tails: Sequence[bytes]
) -> list[tuple[int, int, int, int, int, int]]:
    """:func:`scan_traces` of the payload ``buf[start:end]`` in place (no copy), walked in
    full; ``wanted`` is :func:`matching_names`, ``tails`` :func:`empty_tails`. The offsets of
    the matches are into ``buf``, and each comes as the fields of a :class:`Match`. Bytes
    after ``end`` are never taken for the payload's: a walk that passes ``end`` is the
    truncation error, wherever it stopped.

    Raises:
        DecodeError: as :func:`scan_traces` (offsets relative to ``start``).
    """
    out: list[tuple[int, int, int, int, int, int]] = []
    size = end - start
    pos = start
    here = start
    try:
        if start >= end:
            raise DecodeError("traces", 0, "truncated varuint32")
        count = buf[start]
        if count < 0x80:
            pos = start + 1
        else:
            count, pos = read_varuint32(buf, start, "traces")
        for _ in range(count):
            here = pos
            pos = _scan_trx(buf, pos, wanted, tails, out, 0)
            if pos > end:
                break
    except DecodeError as exc:
        if exc.offset < end:
            raise DecodeError(exc.what, exc.offset - start, exc.reason) from None
        # A length field jumped past the end: the payload is cut inside this trace.
        pos = end + 1
    except (IndexError, struct.error):
        pos = end + 1
    if pos != end:
        if pos > end:
            raise DecodeError(
                "transaction_trace", here - start, f"payload of {size} bytes ends inside it"
            )
        raise DecodeError("traces", pos - start, f"{end - pos} bytes left over after the traces")
    return out


class BlockDecoder:
    """Decode the node's binary messages for one selection, with the node's ABI.

    Args:
        abi: the checked ABI (variant names by index); ``None`` = Spring's lists.
        contract, action: what to collect.
        full_scan: see :func:`scan_traces`.
    """

    def __init__(
        self,
        abi: ShipAbi | None,
        contract: str = "therealkarma",
        action: str = "transfer",
        *,
        full_scan: bool = False,
    ) -> None:
        self.result_names = abi.variant("result") if abi else codec.RESULT_NAMES
        self.request_names = abi.variant("request") if abi else codec.REQUEST_NAMES
        trace_names = abi.variant("action_trace") if abi else codec.ACTION_TRACE_NAMES
        for name in trace_names:
            if name not in ("action_trace_v0", "action_trace_v1"):
                raise ProtocolError(
                    f"the node's ABI lists an action trace type {name!r} this collector cannot "
                    "read (ship.md §1.5)",
                    fatal=True,
                )
        self.action_trace_names = trace_names
        self.v1_flags = tuple(name == "action_trace_v1" for name in trace_names)
        self.contract = contract
        self.action = action
        self.contract_value = name_to_uint64(contract)
        self.action_value = name_to_uint64(action)
        self.full_scan = full_scan
        self._needle = matching_names(self.contract_value, self.action_value)
        self._empty_tails = empty_tails(self.v1_flags)
        # Result variant index -> whether it is get_blocks_result_v1 (fast path of block_message).
        self._blocks_kinds = {
            i: name == "get_blocks_result_v1"
            for i, name in enumerate(self.result_names)
            if name in ("get_blocks_result_v0", "get_blocks_result_v1") and i < 0x80
        }
        # First byte of a message -> the size of a plain blocks result's all-absent tail
        # (deltas?, and finality_data? for v1), 0 for anything else (skip_plain).
        self._plain_tails = bytes(
            (2 if self._blocks_kinds[i] else 1) if i in self._blocks_kinds else 0
            for i in range(256)
        )

    def skip_plain(self, messages: Sequence[bytes], index: int, expected: int, last: int) -> int:
        """Pass over the plain results from ``messages[index]`` on; return the index of the
        first message that is not one (``len(messages)`` when all are).

        A plain result is the common case of an irreversible backfill, checked without building
        anything: a well-formed blocks result for block ``expected`` (then ``expected + 1``,
        ...; at most ``last``) with ``this_block``, ``traces`` and no ``deltas``, whose traces
        payload does not contain :func:`matching_names`, so cannot hold a matching trace
        (the module docstring). It has no events, and the caller learns its number from its
        place in the run. Anything else — a status answer, another block number, a block that
        may hold a match, an unusual or malformed header — ends the run, and
        :meth:`block_message` gives its events or its precise error. With ``full_scan`` no
        result is plain.

        Per block this costs about as much as reading the socket does: ~20 bytecodes, no
        objects (the backfill's hot loop; bench/bench_ship.py).
        """
        if self.full_scan:
            return index
        tails = self._plain_tails
        needle = self._needle
        count = len(messages)
        u32 = _U32
        try:
            while index < count and expected <= last:
                message = messages[index]
                tail = tails[message[0]]
                if not tail or message[73] != 1 or u32(message, 74)[0] != expected:
                    break
                flag = message[110]  # prev_block?
                if flag == 1:
                    pos = 147
                elif flag == 0:
                    pos = 111
                else:
                    break
                # block? then traces?: payload lengths, inline up to two bytes (16 KiB). Written
                # out twice on purpose: a helper call for each would add about a fifth to this
                # loop, which runs once per block of a backfill.
                flag = message[pos]
                if flag == 1:
                    size = message[pos + 1]
                    if size < 0x80:
                        pos += 2
                    elif message[pos + 2] < 0x80:
                        size = (size & 0x7F) | message[pos + 2] << 7
                        pos += 3
                    else:
                        size, pos = codec.read_varuint64(message, pos + 1)
                    if size < 4:  # no timestamp: block_message refuses it
                        break
                    pos += size
                elif flag == 0:
                    pos += 1
                else:
                    break
                if message[pos] != 1:  # traces? (absent: block_message names the gap)
                    break
                size = message[pos + 1]
                if size < 0x80:
                    pos += 2
                elif message[pos + 2] < 0x80:
                    size = (size & 0x7F) | message[pos + 2] << 7
                    pos += 3
                else:
                    size, pos = codec.read_varuint64(message, pos + 1)
                end = pos + size
                # deltas? absent (and finality_data? absent for v1): the tail's 1 or 2 bytes
                # are zeros, and nothing follows.
                if len(message) != end + tail or message[end] or message[-1]:
                    break
                if message.find(needle, pos, end) >= 0:
                    break
                index += 1
                expected += 1
        except (IndexError, DecodeError, struct.error):
            pass  # block_message raises the precise error for this message
        return index

    @staticmethod
    def this_block_id(message: bytes) -> str:
        """The ``this_block`` id (64 hex) of a result :meth:`skip_plain` passed over."""
        return message[78:110].hex()

    def block_message(self, message: bytes, *, progress: bool = True) -> BlockEvents | Any:
        """One server message: the :class:`BlockEvents` of a blocks result, or the decoded
        status result (anything but a blocks result comes back as :meth:`result` gives it).

        The same as ``block(result(message))`` for a blocks result, without building the
        result struct or copying its payloads: the header is read in place and the traces are
        walked inside the message. Anything unusual (a result without ``this_block`` or without
        traces, a bad flag, a length that does not add up) goes through the general path, which
        raises the precise error.

        Args:
            progress: end the events with the block's ``Progress`` (a caller that yields one
                ``Progress`` per batch passes ``False``).

        Raises:
            GapError, DecodeError: as :meth:`result` and :meth:`block`.
        """
        v1 = self._blocks_kinds.get(message[0]) if message else None
        if v1 is None:
            result = self.result(message)
            if isinstance(result, codec.GetBlocksResultV0 | codec.GetBlocksResultV1):
                return self._without_progress(self.block(result), progress)
            return result
        try:
            # variant, head (u32, id), last_irreversible, this_block? (present), prev_block?
            if message[73] != 1:
                raise IndexError
            num = _U32(message, 74)[0]
            flag = message[110]
            if flag == 1:
                prev: tuple[int, str] | None = (_U32(message, 111)[0], message[115:147].hex())
                pos = 147
            elif flag == 0:
                prev, pos = None, 111
            else:
                raise IndexError
            flag = message[pos]  # block?
            block_at = -1
            if flag == 1:
                size = message[pos + 1]
                if size < 0x80:
                    pos += 2
                else:
                    size, pos = codec.read_varuint64(message, pos + 1)
                block_at, block_size = pos, size
                pos += size
            elif flag == 0:
                pos += 1
            else:
                raise IndexError
            if message[pos] != 1:  # traces? (absent: the general path names the gap)
                raise IndexError
            size = message[pos + 1]
            if size < 0x80:
                pos += 2
            else:
                size, pos = codec.read_varuint64(message, pos + 1)
            traces_at, traces_end = pos, pos + size
            pos = traces_end
            for _ in range(2 if v1 else 1):  # deltas?, finality_data?
                flag = message[pos]
                if flag == 0:
                    pos += 1
                elif flag == 1:
                    size, pos = codec.read_varuint64(message, pos + 1)
                    pos += size
                else:
                    raise IndexError
            if pos != len(message) or (block_at >= 0 and block_size < 4):
                raise IndexError
        except (IndexError, DecodeError, struct.error):
            return self._without_progress(self.block(self.result(message)), progress)
        block_id = message[78:110].hex()
        block_time = (
            BLOCK_EPOCH_MS + BLOCK_INTERVAL_MS * _U32(message, block_at)[0]
            if block_at >= 0
            else None
        )
        events = (
            self._transfers(message, traces_at, traces_end, num, block_id, block_time)
            if traces_end > traces_at
            else []
        )
        if progress:
            events.append(Progress(num, block_id))
        return BlockEvents(
            num, block_id, prev, _U32(message, 1)[0], _U32(message, 37)[0], block_time, events
        )

    @staticmethod
    def _without_progress(block: BlockEvents, progress: bool) -> BlockEvents:
        return block if progress else block._replace(events=block.events[:-1])

    def result(self, message: bytes) -> Any:
        """Decode one result message into its struct (codec's ``GetStatusResult*`` or
        ``GetBlocksResult*``).

        Raises:
            DecodeError: the message does not decode.
        """
        return codec.decode_result(message, self.result_names)

    def block(self, result: Any, *, fetch_traces: bool = True) -> BlockEvents:
        """The events of one blocks result (see the module docstring).

        Raises:
            GapError: no ``this_block``, or no ``traces`` although requested, or a matching
                trace in a block that came without its ``block`` payload (no time).
            DecodeError: the traces payload does not decode.
        """
        this = result.this_block
        if this is None:
            raise GapError(
                0,
                "the node sent a block result without this_block (it has no block id for the "
                f"requested number; head {result.head.block_num}, LIB "
                f"{result.last_irreversible.block_num}): a gap in its block log (ship.md §1.8). "
                "Collect that range from another node or source",
            )
        num = this.block_num
        block_id = this.block_id.hex()
        traces = result.traces
        if traces is None and fetch_traces:
            raise GapError(
                num,
                f"block {num}: the node sent no traces for it although they were requested: the "
                "block is outside its trace log (trace-history, pruned, or below "
                "trace_begin_block; ship.md §1.8). Collect that range from another node or "
                "source",
            )
        block_time = block_time_ms(result.block) if result.block is not None else None
        events = (
            self._transfers(traces, 0, len(traces), num, block_id, block_time) if traces else []
        )
        events.append(Progress(num, block_id))
        prev = result.prev_block
        return BlockEvents(
            num,
            block_id,
            (prev.block_num, prev.block_id.hex()) if prev is not None else None,
            result.head.block_num,
            result.last_irreversible.block_num,
            block_time,
            events,
        )

    def _transfers(
        self, buf: bytes, start: int, end: int, num: int, block_id: str, block_time: int | None
    ) -> list[Any]:
        """The events of the matching traces in the traces payload ``buf[start:end]`` (not
        empty), with the needle check unless ``full_scan`` (module docstring).

        Raises:
            GapError: a match in a block without its ``block`` payload (no time).
            DecodeError: the payload does not decode.
        """
        needle = self._needle
        if not self.full_scan and buf.find(needle, start, end) < 0:
            return []
        matches = _scan_range(buf, start, end, needle, self._empty_tails)
        if not matches:
            return []
        if block_time is None:
            raise GapError(num, _NO_BODY.format(num=num))
        return [self._event(buf, match, num, block_id, block_time) for match in matches]

    def _event(
        self,
        traces: bytes,
        match: tuple[int, int, int, int, int, int],
        num: int,
        block_id: str,
        block_time: int,
    ) -> ActionReceived:
        trx_offset, _, ordinal, gs, data_offset, data_size = match  # Match's fields
        trx_id = traces[trx_offset : trx_offset + 32].hex()
        data = traces[data_offset : data_offset + data_size]
        try:
            if ordinal < 1:
                raise ParseError("action_trace.action_ordinal", ordinal, "ordinals start at 1")
            parsed = codec.decode_transfer_data(data)
        except ParseError as exc:
            raw = json.dumps(
                {
                    "block_num": num,
                    "trx_id": trx_id,
                    "action_ordinal": ordinal,
                    "global_sequence": gs,
                    "account": self.contract,
                    "name": self.action,
                    "data": data.hex(),
                },
                separators=(",", ":"),
            )
            reject = Reject(num, block_id, trx_id, max(0, ordinal - 1), gs, str(exc), raw)
            return ActionReceived.of_reject(reject, block_time)
        # Transfer(...) by tuple.__new__, without the keyword handling (one per row).
        row = _new_tuple(
            Transfer,
            (num, block_id, block_time, trx_id, ordinal - 1, gs, self.contract, self.action,
             *parsed),
        )  # fmt: skip
        # ActionReceived.of_transfer(row), without the class method's lookups (one per row).
        return ActionReceived(num, block_id, block_time, gs, row)
