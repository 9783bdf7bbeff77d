"""The devnet chain as SHiP binary: block headers, ``signed_block`` bodies, ``traces`` (pure).

What a state-history node would log for the deterministic chain (ship.md §1.6, §1.7, §4):

* every block's traces start with the implicit ``eosio::onblock`` transaction whose action data
  is the **previous** block's header (controller.cpp, ship.md §1.7), then one trace per
  transaction in block order;
* ``block`` (fetch_block) is a packed ``signed_block`` whose first field is the header
  timestamp slot, ``(time_ms - 946684800000) / 500``;
* executed transactions: status 0, every action trace with its receipt; failed ones keep their
  traces and receipts but carry their status (hard_fail 2, expired 4, no traces for expired),
  so only the status rule excludes them; a ``soft_fail`` transaction is written the way nodeos
  writes a soft-failed deferred transaction whose onerror handler ran: an outer trace with
  status **0** (an ``eosio::onerror`` action) holding the failed transaction, with its KARMA
  transfer, in ``failed_dtrx_trace`` (ship.md §1.6 quirk) — a decoder must not descend there;
* ``action_trace_v1`` with Spring's non-debug values (``elapsed`` 0, ``console`` empty,
  ``except`` "Y"), or ``action_trace_v0`` with real elapsed times and console text, some of it
  not UTF-8, as EOSIO 2.0-era logs hold (fixture F1).

Block ids are the chain's (block number in the first 8 hex digits, then a hash of the number
and the fork, ship.md §4). ``global_sequence`` values are the chain's; the implicit actions
(onblock, onerror), which the chain does not number, take slots the chain never uses (the last
1000 of the previous block's range).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from ..exceptions import UsageError
from ..model import name_to_uint64
from ..sources.ship.codec import Writer
from .chain import GS_BASE, GS_PER_BLOCK, Block, Chain

__all__ = [
    "BLOCK_EPOCH_MS",
    "SHIP_ABI_TEXT",
    "STATUS_CODES",
    "block_body",
    "block_header",
    "block_traces",
    "timestamp_slot",
]

BLOCK_EPOCH_MS = 946_684_800_000
STATUS_CODES = {"executed": 0, "soft_fail": 1, "hard_fail": 2, "delayed": 3, "expired": 4}

_EOSIO = name_to_uint64("eosio")
_ACTIVE = name_to_uint64("active")
_ONBLOCK = name_to_uint64("onblock")
_ONERROR = name_to_uint64("onerror")
_NAMES: dict[str, int] = {}


def _name(text: str) -> int:
    value = _NAMES.get(text)
    if value is None:
        value = _NAMES[text] = name_to_uint64(text)
    return value


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=32).digest()


def timestamp_slot(time_ms: int) -> int:
    """The ``block_timestamp_type`` slot of a block time (500 ms slots since 2000-01-01).

    Raises:
        UsageError: the time is not on a 500 ms slot after 2000-01-01.
    """
    offset = time_ms - BLOCK_EPOCH_MS
    if offset < 0 or offset % 500:
        raise UsageError(
            f"block time {time_ms} ms is not a 500 ms slot after 2000-01-01; choose a "
            "genesis_ms that is"
        )
    return offset // 500


def block_header(chain: Chain, num: int, fork: int = 0, prev_fork: int = 0) -> bytes:
    """The packed ``block_header`` of block ``num`` (116 bytes with no schedule/extensions):
    timestamp, producer, confirmed, previous, transaction_mroot, action_mroot,
    schedule_version, new_producers (absent), header_extensions (none)."""
    previous = chain.block_id(num - 1, prev_fork) if num > 1 else "00" * 32
    w = Writer()
    w.u32(timestamp_slot(chain.block_time_ms(num))).u64(_name(chain.producer(num))).u16(0)
    w.raw(bytes.fromhex(previous)).raw(_digest("trx", num, fork)).raw(_digest("act", num, fork))
    w.u32(1).u8(0).varuint(0)
    return w.getvalue()


def block_body(header: bytes, block: Block) -> bytes:
    """A packed ``signed_block``: the header, a K1 signature, the transaction receipts (left
    empty: the collector reads only the timestamp, ship.md §1.7) and no extensions."""
    return header + b"\x00" + _digest("sig", block.num, block.fork) * 2 + b"\x01" + b"\x00\x00"


def _partial(w: Writer, trx_id: str) -> None:
    # partial_transaction_v0: expiration, ref_block_num, ref_block_prefix, max_net_usage_words,
    # max_cpu_usage_ms, delay_sec, no extensions, one K1 signature, no context-free data.
    w.u8(1).varuint(0).u32(0).u16(0).u32(0).varuint(0).u8(0).varuint(0).varuint(0)
    w.varuint(1).u8(0).raw(bytes.fromhex(trx_id)[:32] + bytes.fromhex(trx_id)[:32] + b"\x1f")
    w.varuint(0)


def _console(trace: Any, legacy: bool) -> bytes:
    if not legacy:
        return b""
    text = f"{trace.receiver}: {trace.act.name} #{trace.global_sequence}".encode()
    if trace.global_sequence % 5 == 0:
        # Contracts print raw bytes (fixture F1's console is not UTF-8).
        text += b" \xeb\x80\xff raw"
    return text


_RECEIPT = struct.Struct(
    "<BBQ32sQQBQQBB"
)  # flag, index, receiver, digest, gs, recv, auth, code, abi
_ACT = struct.Struct("<QQQBQQ")  # receiver, account, name, one authorization


def _action_trace(
    w: Writer,
    *,
    legacy: bool,
    ordinal: int,
    creator: int,
    receiver: int,
    account: int,
    name: int,
    actor: int,
    data: bytes,
    digest: bytes,
    global_sequence: int,
    recv_sequence: int,
    auth_sequence: int,
    elapsed: int,
    console: bytes,
    ram_delta: tuple[int, int] | None = None,
    failed: bool = False,
) -> None:
    w.varuint(0 if legacy else 1).varuint(ordinal).varuint(creator)
    buf = w.buf
    # receipt (action_receipt_v0) with one auth_sequence entry, code and abi sequence 1
    buf += _RECEIPT.pack(
        1, 0, receiver, digest, global_sequence, recv_sequence, 1, actor, auth_sequence, 1, 1
    )
    buf += _ACT.pack(receiver, account, name, 1, actor, _ACTIVE)
    w.varuint(len(data))
    buf += data
    buf.append(0)  # context_free
    w.i64(elapsed if legacy else 0).varuint(len(console))
    buf += console
    if ram_delta is None:
        buf.append(0)
    else:
        w.varuint(1).u64(ram_delta[0]).i64(ram_delta[1])
    if failed:
        w.u8(1).bytes_(b"Y").u8(1).u64(10_000_000)  # except "Y", a generic error code
    else:
        buf += b"\x00\x00"
    if not legacy:
        buf.append(0)  # return_value


def _transaction(w: Writer, trx: Any, status: int, legacy: bool, *, partial: bool) -> None:
    w.varuint(0).raw(bytes.fromhex(trx.trx_id)).u8(status).u32(180).varuint(16)
    w.i64(0 if not legacy else 211).u64(128).u8(0)
    traces = [] if status == STATUS_CODES["expired"] else trx.traces
    failed = status != 0
    w.varuint(len(traces))
    for trace in traces:
        act = trace.act
        receiver = _name(trace.receiver)
        actor = _name(act.actor)
        _action_trace(
            w,
            legacy=legacy,
            ordinal=trace.ordinal,
            creator=trace.creator,
            receiver=receiver,
            account=_name(act.account),
            name=_name(act.name),
            actor=actor,
            data=bytes.fromhex(act.hex_data),
            digest=bytes.fromhex(act.digest),
            global_sequence=trace.global_sequence,
            # Failed transactions' traces have global_sequence 0 in the chain (never
            # executed); their derived counters would go negative.
            recv_sequence=max(0, trace.recv_sequence),
            auth_sequence=max(0, trace.auth_sequence),
            elapsed=trace.elapsed,
            console=_console(trace, legacy),
            ram_delta=(actor, 240) if trace.new_row else None,
            failed=failed and trace is traces[-1],
        )
    w.u8(0)  # account_ram_delta
    if failed:
        w.u8(1).bytes_(b"Y").u8(1).u64(10_000_000)
    else:
        w.u8(0).u8(0)
    w.u8(0)  # failed_dtrx_trace
    if partial:
        _partial(w, trx.trx_id)
    else:
        w.u8(0)


def block_traces(chain: Chain, block: Block, prev_header: bytes, *, legacy: bool = False) -> bytes:
    """The ``traces`` payload of ``block`` (see the module docstring).

    Args:
        chain: the chain (for names of the implicit actions).
        block: the block (canonical or a forked-out variant).
        prev_header: the previous block's packed header: the onblock action's data.
        legacy: ``action_trace_v0`` with real elapsed/console instead of Spring's v1.
    """
    num = block.num
    spare = GS_BASE + num * GS_PER_BLOCK - 1000  # unused by the chain (see module docstring)
    w = Writer()
    soft = sum(1 for trx in block.transactions if trx.status == "soft_fail")
    w.varuint(1 + len(block.transactions))
    # The implicit onblock transaction (ship.md §1.6: first, when there is one).
    onblock_id = _digest("onblock", num, block.fork)
    w.varuint(0).raw(onblock_id).u8(0).u32(100).varuint(0).i64(0).u64(0).u8(0).varuint(1)
    _action_trace(
        w, legacy=legacy, ordinal=1, creator=0, receiver=_EOSIO, account=_EOSIO,
        name=_ONBLOCK, actor=_EOSIO, data=prev_header, digest=_digest("onblock-act", num),
        global_sequence=spare, recv_sequence=spare - GS_BASE, auth_sequence=spare - GS_BASE,
        elapsed=90, console=b"",
    )  # fmt: skip
    w.u8(0).u8(0).u8(0).u8(0)
    _partial(w, onblock_id.hex())
    k = 0
    for trx in block.transactions:
        if trx.status != "soft_fail":
            _transaction(w, trx, STATUS_CODES[trx.status], legacy, partial=True)
            continue
        # Outer status 0 (onerror ran), the failed deferred transaction inside (§1.6).
        k += 1
        sender = _name(trx.traces[0].act.actor) if trx.traces else _EOSIO
        outer_id = _digest("onerror", trx.trx_id)
        w.varuint(0).raw(outer_id).u8(0).u32(150).varuint(12).i64(0).u64(96).u8(1)
        w.varuint(1)
        _action_trace(
            w, legacy=legacy, ordinal=1, creator=0, receiver=sender, account=_EOSIO,
            name=_ONERROR, actor=sender, data=bytes.fromhex(trx.trx_id),
            digest=_digest("onerror-act", trx.trx_id), global_sequence=spare + k,
            recv_sequence=k, auth_sequence=k, elapsed=30, console=b"",
        )  # fmt: skip
        w.u8(0).u8(0).u8(0)
        w.u8(1)  # failed_dtrx_trace: the deferred transaction, hard_fail
        _transaction(w, trx, STATUS_CODES["hard_fail"], legacy, partial=False)
        w.u8(0)  # no partial with a failed_dtrx_trace (ship.md §1.6)
    assert k == soft
    return w.getvalue()


# The SHiP protocol ABI a node sends first (ship.md §1.1, fixture F2), byte for byte: the raw
# string of AntelopeIO/abieos src/ship.abi.cpp @ ae78105e015dae0dc10466018f8d7c3eae455285,
# identical to Spring v1.0.2-v1.2.2's libraries/state_history/abi.cpp. Licence: MIT,
# "Copyright (c) 2021-2022 EOS Network Foundation (ENF) and its contributors ... based upon
# EOSIO/abieos, Copyright (c) 2017-2019 block.one and its contributors" (full notice and
# provenance: tests/data/ship/PROVENANCE.md). Checked against that copy by the tests.
SHIP_ABI_TEXT = """{
    "version": "eosio::abi/1.1",
    "structs": [
        {
            "name": "get_status_request_v0", "fields": []
        },
        {
            "name": "get_status_request_v1", "fields": []
        },
        {
            "name": "block_position", "fields": [
                { "name": "block_num", "type": "uint32" },
                { "name": "block_id", "type": "checksum256" }
            ]
        },
        {
            "name": "get_status_result_v0", "fields": [
                { "name": "head", "type": "block_position" },
                { "name": "last_irreversible", "type": "block_position" },
                { "name": "trace_begin_block", "type": "uint32" },
                { "name": "trace_end_block", "type": "uint32" },
                { "name": "chain_state_begin_block", "type": "uint32" },
                { "name": "chain_state_end_block", "type": "uint32" },
                { "name": "chain_id", "type": "checksum256$" }
            ]
        },
        {
            "name": "get_status_result_v1", "fields": [
                { "name": "head", "type": "block_position" },
                { "name": "last_irreversible", "type": "block_position" },
                { "name": "trace_begin_block", "type": "uint32" },
                { "name": "trace_end_block", "type": "uint32" },
                { "name": "chain_state_begin_block", "type": "uint32" },
                { "name": "chain_state_end_block", "type": "uint32" },
                { "name": "chain_id", "type": "checksum256" },
                { "name": "finality_data_begin_block", "type": "uint32" },
                { "name": "finality_data_end_block", "type": "uint32" }
            ]
        },
        {
            "name": "get_blocks_request_v0", "fields": [
                { "name": "start_block_num", "type": "uint32" },
                { "name": "end_block_num", "type": "uint32" },
                { "name": "max_messages_in_flight", "type": "uint32" },
                { "name": "have_positions", "type": "block_position[]" },
                { "name": "irreversible_only", "type": "bool" },
                { "name": "fetch_block", "type": "bool" },
                { "name": "fetch_traces", "type": "bool" },
                { "name": "fetch_deltas", "type": "bool" }
            ]
        },
        {
            "name": "get_blocks_request_v1", "fields": [
                { "name": "start_block_num", "type": "uint32" },
                { "name": "end_block_num", "type": "uint32" },
                { "name": "max_messages_in_flight", "type": "uint32" },
                { "name": "have_positions", "type": "block_position[]" },
                { "name": "irreversible_only", "type": "bool" },
                { "name": "fetch_block", "type": "bool" },
                { "name": "fetch_traces", "type": "bool" },
                { "name": "fetch_deltas", "type": "bool" },
                { "name": "fetch_finality_data", "type": "bool" }
            ]
        },
        {
            "name": "get_blocks_ack_request_v0", "fields": [
                { "name": "num_messages", "type": "uint32" }
            ]
        },
        {
            "name": "get_blocks_result_v0", "fields": [
                { "name": "head", "type": "block_position" },
                { "name": "last_irreversible", "type": "block_position" },
                { "name": "this_block", "type": "block_position?" },
                { "name": "prev_block", "type": "block_position?" },
                { "name": "block", "type": "bytes?" },
                { "name": "traces", "type": "bytes?" },
                { "name": "deltas", "type": "bytes?" }
            ]
        },
        {
            "name": "get_blocks_result_v1", "fields": [
                { "name": "head", "type": "block_position" },
                { "name": "last_irreversible", "type": "block_position" },
                { "name": "this_block", "type": "block_position?" },
                { "name": "prev_block", "type": "block_position?" },
                { "name": "block", "type": "bytes?" },
                { "name": "traces", "type": "bytes?" },
                { "name": "deltas", "type": "bytes?" },
                { "name": "finality_data", "type": "bytes?" }
            ]
        },
        {
            "name": "row", "fields": [
                { "name": "present", "type": "bool" },
                { "name": "data", "type": "bytes" }
            ]
        },
        {
            "name": "table_delta_v0", "fields": [
                { "name": "name", "type": "string" },
                { "name": "rows", "type": "row[]" }
            ]
        },
        {
            "name": "action", "fields": [
                { "name": "account", "type": "name" },
                { "name": "name", "type": "name" },
                { "name": "authorization", "type": "permission_level[]" },
                { "name": "data", "type": "bytes" }
            ]
        },
        {
            "name": "account_auth_sequence", "fields": [
                { "name": "account", "type": "name" },
                { "name": "sequence", "type": "uint64" }
            ]
        },
        {
            "name": "action_receipt_v0", "fields": [
                { "name": "receiver", "type": "name" },
                { "name": "act_digest", "type": "checksum256" },
                { "name": "global_sequence", "type": "uint64" },
                { "name": "recv_sequence", "type": "uint64" },
                { "name": "auth_sequence", "type": "account_auth_sequence[]" },
                { "name": "code_sequence", "type": "varuint32" },
                { "name": "abi_sequence", "type": "varuint32" }
            ]
        },
        {
            "name": "account_delta", "fields": [
                { "name": "account", "type": "name" },
                { "name": "delta", "type": "int64" }
            ]
        },
        {
            "name": "action_trace_v0", "fields": [
                { "name": "action_ordinal", "type": "varuint32" },
                { "name": "creator_action_ordinal", "type": "varuint32" },
                { "name": "receipt", "type": "action_receipt?" },
                { "name": "receiver", "type": "name" },
                { "name": "act", "type": "action" },
                { "name": "context_free", "type": "bool" },
                { "name": "elapsed", "type": "int64" },
                { "name": "console", "type": "string" },
                { "name": "account_ram_deltas", "type": "account_delta[]" },
                { "name": "except", "type": "string?" },
                { "name": "error_code", "type": "uint64?" }
            ]
        },
        {
            "name": "action_trace_v1", "fields": [
                { "name": "action_ordinal", "type": "varuint32" },
                { "name": "creator_action_ordinal", "type": "varuint32" },
                { "name": "receipt", "type": "action_receipt?" },
                { "name": "receiver", "type": "name" },
                { "name": "act", "type": "action" },
                { "name": "context_free", "type": "bool" },
                { "name": "elapsed", "type": "int64" },
                { "name": "console", "type": "string" },
                { "name": "account_ram_deltas", "type": "account_delta[]" },
                { "name": "except", "type": "string?" },
                { "name": "error_code", "type": "uint64?" },
                { "name": "return_value", "type": "bytes"}
            ]
        },
        {
            "name": "partial_transaction_v0", "fields": [
                { "name": "expiration", "type": "time_point_sec" },
                { "name": "ref_block_num", "type": "uint16" },
                { "name": "ref_block_prefix", "type": "uint32" },
                { "name": "max_net_usage_words", "type": "varuint32" },
                { "name": "max_cpu_usage_ms", "type": "uint8" },
                { "name": "delay_sec", "type": "varuint32" },
                { "name": "transaction_extensions", "type": "extension[]" },
                { "name": "signatures", "type": "signature[]" },
                { "name": "context_free_data", "type": "bytes[]" }
            ]
        },
        {
            "name": "transaction_trace_v0", "fields": [
                { "name": "id", "type": "checksum256" },
                { "name": "status", "type": "uint8" },
                { "name": "cpu_usage_us", "type": "uint32" },
                { "name": "net_usage_words", "type": "varuint32" },
                { "name": "elapsed", "type": "int64" },
                { "name": "net_usage", "type": "uint64" },
                { "name": "scheduled", "type": "bool" },
                { "name": "action_traces", "type": "action_trace[]" },
                { "name": "account_ram_delta", "type": "account_delta?" },
                { "name": "except", "type": "string?" },
                { "name": "error_code", "type": "uint64?" },
                { "name": "failed_dtrx_trace", "type": "transaction_trace?" },
                { "name": "partial", "type": "partial_transaction?" }
            ]
        },
        {
            "name": "packed_transaction", "fields": [
                { "name": "signatures", "type": "signature[]" },
                { "name": "compression", "type": "uint8" },
                { "name": "packed_context_free_data", "type": "bytes" },
                { "name": "packed_trx", "type": "bytes" }
            ]
        },
        {
            "name": "transaction_receipt_header", "fields": [
                { "name": "status", "type": "uint8" },
                { "name": "cpu_usage_us", "type": "uint32" },
                { "name": "net_usage_words", "type": "varuint32" }
            ]
        },
        {
            "name": "transaction_receipt", "base": "transaction_receipt_header", "fields": [
                { "name": "trx", "type": "transaction_variant" }
            ]
        },
        {
            "name": "extension", "fields": [
                { "name": "type", "type": "uint16" },
                { "name": "data", "type": "bytes" }
            ]
        },
        {
            "name": "block_header", "fields": [
                { "name": "timestamp", "type": "block_timestamp_type" },
                { "name": "producer", "type": "name" },
                { "name": "confirmed", "type": "uint16" },
                { "name": "previous", "type": "checksum256" },
                { "name": "transaction_mroot", "type": "checksum256" },
                { "name": "action_mroot", "type": "checksum256" },
                { "name": "schedule_version", "type": "uint32" },
                { "name": "new_producers", "type": "producer_schedule?" },
                { "name": "header_extensions", "type": "extension[]" }
            ]
        },
        {
            "name": "signed_block_header", "base": "block_header", "fields": [
                { "name": "producer_signature", "type": "signature" }
            ]
        },
        {
            "name": "signed_block", "base": "signed_block_header", "fields": [
                { "name": "transactions", "type": "transaction_receipt[]" },
                { "name": "block_extensions", "type": "extension[]" }
            ]
        },
        {   "name": "transaction_header", "fields": [
                { "name": "expiration", "type": "time_point_sec" },
                { "name": "ref_block_num", "type": "uint16" },
                { "name": "ref_block_prefix", "type": "uint32" },
                { "name": "max_net_usage_words", "type": "varuint32" },
                { "name": "max_cpu_usage_ms", "type": "uint8" },
                { "name": "delay_sec", "type": "varuint32" }
            ]
        },
        {   "name": "transaction", "base": "transaction_header", "fields": [
                { "name": "context_free_actions", "type": "action[]" },
                { "name": "actions", "type": "action[]" },
                { "name": "transaction_extensions", "type": "extension[]" }
            ]
        },
        {
            "name": "code_id", "fields": [
                { "type": "uint8", "name": "vm_type" },
                { "type": "uint8", "name": "vm_version" },
                { "type": "checksum256", "name": "code_hash" }
            ]
        },
        {
            "name": "account_v0", "fields": [
                { "type": "name", "name": "name" },
                { "type": "block_timestamp_type", "name": "creation_date" },
                { "type": "bytes", "name": "abi" }
            ]
        },
        {
            "name": "account_metadata_v0", "fields": [
                { "type": "name", "name": "name" },
                { "type": "bool", "name": "privileged" },
                { "type": "time_point", "name": "last_code_update" },
                { "type": "code_id?", "name": "code" }
            ]
        },
        {
            "name": "code_v0", "fields": [
                { "type": "uint8", "name": "vm_type" },
                { "type": "uint8", "name": "vm_version" },
                { "type": "checksum256", "name": "code_hash" },
                { "type": "bytes", "name": "code" }
            ]
        },
        {
            "name": "contract_table_v0", "fields": [
                { "type": "name", "name": "code" },
                { "type": "name", "name": "scope" },
                { "type": "name", "name": "table" },
                { "type": "name", "name": "payer" }
            ]
        },
        {
            "name": "contract_row_v0", "fields": [
                { "type": "name", "name": "code" },
                { "type": "name", "name": "scope" },
                { "type": "name", "name": "table" },
                { "type": "uint64", "name": "primary_key" },
                { "type": "name", "name": "payer" },
                { "type": "bytes", "name": "value" }
            ]
        },
        {
            "name": "contract_index64_v0", "fields": [
                { "type": "name", "name": "code" },
                { "type": "name", "name": "scope" },
                { "type": "name", "name": "table" },
                { "type": "uint64", "name": "primary_key" },
                { "type": "name", "name": "payer" },
                { "type": "uint64", "name": "secondary_key" }
            ]
        },
        {
            "name": "contract_index128_v0", "fields": [
                { "type": "name", "name": "code" },
                { "type": "name", "name": "scope" },
                { "type": "name", "name": "table" },
                { "type": "uint64", "name": "primary_key" },
                { "type": "name", "name": "payer" },
                { "type": "uint128", "name": "secondary_key" }
            ]
        },
        {
            "name": "contract_index256_v0", "fields": [
                { "type": "name", "name": "code" },
                { "type": "name", "name": "scope" },
                { "type": "name", "name": "table" },
                { "type": "uint64", "name": "primary_key" },
                { "type": "name", "name": "payer" },
                { "type": "checksum256", "name": "secondary_key" }
            ]
        },
        {
            "name": "contract_index_double_v0", "fields": [
                { "type": "name", "name": "code" },
                { "type": "name", "name": "scope" },
                { "type": "name", "name": "table" },
                { "type": "uint64", "name": "primary_key" },
                { "type": "name", "name": "payer" },
                { "type": "float64", "name": "secondary_key" }
            ]
        },
        {
            "name": "contract_index_long_double_v0", "fields": [
                { "type": "name", "name": "code" },
                { "type": "name", "name": "scope" },
                { "type": "name", "name": "table" },
                { "type": "uint64", "name": "primary_key" },
                { "type": "name", "name": "payer" },
                { "type": "float128", "name": "secondary_key" }
            ]
        },
        {
            "name": "producer_key", "fields": [
                { "type": "name", "name": "producer_name" },
                { "type": "public_key", "name": "block_signing_key" }
            ]
        },
        {
            "name": "producer_schedule", "fields": [
                { "type": "uint32", "name": "version" },
                { "type": "producer_key[]", "name": "producers" }
            ]
        },
        {
            "name": "block_signing_authority_v0", "fields": [
                { "type": "uint32", "name": "threshold" },
                { "type": "key_weight[]", "name": "keys" }
            ]
        },
        {
            "name": "producer_authority", "fields": [
                { "type": "name", "name": "producer_name" },
                { "type": "block_signing_authority", "name": "authority" }
            ]
        },
        {
            "name": "producer_authority_schedule", "fields": [
                { "type": "uint32", "name": "version" },
                { "type": "producer_authority[]", "name": "producers" }
            ]
        },
        {
            "name": "chain_config_v0", "fields": [
                { "type": "uint64", "name": "max_block_net_usage" },
                { "type": "uint32", "name": "target_block_net_usage_pct" },
                { "type": "uint32", "name": "max_transaction_net_usage" },
                { "type": "uint32", "name": "base_per_transaction_net_usage" },
                { "type": "uint32", "name": "net_usage_leeway" },
                { "type": "uint32", "name": "context_free_discount_net_usage_num" },
                { "type": "uint32", "name": "context_free_discount_net_usage_den" },
                { "type": "uint32", "name": "max_block_cpu_usage" },
                { "type": "uint32", "name": "target_block_cpu_usage_pct" },
                { "type": "uint32", "name": "max_transaction_cpu_usage" },
                { "type": "uint32", "name": "min_transaction_cpu_usage" },
                { "type": "uint32", "name": "max_transaction_lifetime" },
                { "type": "uint32", "name": "deferred_trx_expiration_window" },
                { "type": "uint32", "name": "max_transaction_delay" },
                { "type": "uint32", "name": "max_inline_action_size" },
                { "type": "uint16", "name": "max_inline_action_depth" },
                { "type": "uint16", "name": "max_authority_depth" }
            ]
        },
        {
            "name": "chain_config_v1", "fields": [
                { "type": "uint64", "name": "max_block_net_usage" },
                { "type": "uint32", "name": "target_block_net_usage_pct" },
                { "type": "uint32", "name": "max_transaction_net_usage" },
                { "type": "uint32", "name": "base_per_transaction_net_usage" },
                { "type": "uint32", "name": "net_usage_leeway" },
                { "type": "uint32", "name": "context_free_discount_net_usage_num" },
                { "type": "uint32", "name": "context_free_discount_net_usage_den" },
                { "type": "uint32", "name": "max_block_cpu_usage" },
                { "type": "uint32", "name": "target_block_cpu_usage_pct" },
                { "type": "uint32", "name": "max_transaction_cpu_usage" },
                { "type": "uint32", "name": "min_transaction_cpu_usage" },
                { "type": "uint32", "name": "max_transaction_lifetime" },
                { "type": "uint32", "name": "deferred_trx_expiration_window" },
                { "type": "uint32", "name": "max_transaction_delay" },
                { "type": "uint32", "name": "max_inline_action_size" },
                { "type": "uint16", "name": "max_inline_action_depth" },
                { "type": "uint16", "name": "max_authority_depth" },
                { "type": "uint32", "name": "max_action_return_value_size" }
            ]
        },
        {
            "name": "wasm_config_v0", "fields": [
                { "type": "uint32", "name": "max_mutable_global_bytes" },
                { "type": "uint32", "name": "max_table_elements" },
                { "type": "uint32", "name": "max_section_elements" },
                { "type": "uint32", "name": "max_linear_memory_init" },
                { "type": "uint32", "name": "max_func_local_bytes" },
                { "type": "uint32", "name": "max_nested_structures" },
                { "type": "uint32", "name": "max_symbol_bytes" },
                { "type": "uint32", "name": "max_module_bytes" },
                { "type": "uint32", "name": "max_code_bytes" },
                { "type": "uint32", "name": "max_pages" },
                { "type": "uint32", "name": "max_call_depth" }
            ]
        },
        {
            "name": "global_property_v0", "fields": [
                { "type": "uint32?", "name": "proposed_schedule_block_num" },
                { "type": "producer_schedule", "name": "proposed_schedule" },
                { "type": "chain_config", "name": "configuration" }
            ]
        },
        {
            "name": "global_property_v1", "fields": [
                { "type": "uint32?", "name": "proposed_schedule_block_num" },
                { "type": "producer_authority_schedule", "name": "proposed_schedule" },
                { "type": "chain_config", "name": "configuration" },
                { "type": "checksum256", "name": "chain_id" },
                { "type": "wasm_config$", "name": "wasm_configuration" }
            ]
        },
        {
            "name": "generated_transaction_v0", "fields": [
                { "type": "name", "name": "sender" },
                { "type": "uint128", "name": "sender_id" },
                { "type": "name", "name": "payer" },
                { "type": "checksum256", "name": "trx_id" },
                { "type": "bytes", "name": "packed_trx" }
            ]
        },
        {
            "name": "activated_protocol_feature_v0", "fields": [
                { "type": "checksum256", "name": "feature_digest" },
                { "type": "uint32", "name": "activation_block_num" }
            ]
        },
        {
            "name": "protocol_state_v0", "fields": [
                { "type": "activated_protocol_feature[]", "name": "activated_protocol_features" }
            ]
        },
        {
            "name": "key_weight", "fields": [
                { "type": "public_key", "name": "key" },
                { "type": "uint16", "name": "weight" }
            ]
        },
        {
            "name": "permission_level", "fields": [
                { "type": "name", "name": "actor" },
                { "type": "name", "name": "permission" }
            ]
        },
        {
            "name": "permission_level_weight", "fields": [
                { "type": "permission_level", "name": "permission" },
                { "type": "uint16", "name": "weight" }
            ]
        },
        {
            "name": "wait_weight", "fields": [
                { "type": "uint32", "name": "wait_sec" },
                { "type": "uint16", "name": "weight" }
            ]
        },
        {
            "name": "authority", "fields": [
                { "type": "uint32", "name": "threshold" },
                { "type": "key_weight[]", "name": "keys" },
                { "type": "permission_level_weight[]", "name": "accounts" },
                { "type": "wait_weight[]", "name": "waits" }
            ]
        },
        {
            "name": "permission_v0", "fields": [
                { "type": "name", "name": "owner" },
                { "type": "name", "name": "name" },
                { "type": "name", "name": "parent" },
                { "type": "time_point", "name": "last_updated" },
                { "type": "authority", "name": "auth" }
            ]
        },
        {
            "name": "permission_link_v0", "fields": [
                { "type": "name", "name": "account" },
                { "type": "name", "name": "code" },
                { "type": "name", "name": "message_type" },
                { "type": "name", "name": "required_permission" }
            ]
        },
        {
            "name": "resource_limits_v0", "fields": [
                { "type": "name", "name": "owner" },
                { "type": "int64", "name": "net_weight" },
                { "type": "int64", "name": "cpu_weight" },
                { "type": "int64", "name": "ram_bytes" }
            ]
        },
        {
            "name": "usage_accumulator_v0", "fields": [
                { "type": "uint32", "name": "last_ordinal" },
                { "type": "uint64", "name": "value_ex" },
                { "type": "uint64", "name": "consumed" }
            ]
        },
        {
            "name": "resource_usage_v0", "fields": [
                { "type": "name", "name": "owner" },
                { "type": "usage_accumulator", "name": "net_usage" },
                { "type": "usage_accumulator", "name": "cpu_usage" },
                { "type": "uint64", "name": "ram_usage" }
            ]
        },
        {
            "name": "resource_limits_state_v0", "fields": [
                { "type": "usage_accumulator", "name": "average_block_net_usage" },
                { "type": "usage_accumulator", "name": "average_block_cpu_usage" },
                { "type": "uint64", "name": "total_net_weight" },
                { "type": "uint64", "name": "total_cpu_weight" },
                { "type": "uint64", "name": "total_ram_bytes" },
                { "type": "uint64", "name": "virtual_net_limit" },
                { "type": "uint64", "name": "virtual_cpu_limit" }
            ]
        },
        {
            "name": "resource_limits_ratio_v0", "fields": [
                { "type": "uint64", "name": "numerator" },
                { "type": "uint64", "name": "denominator" }
            ]
        },
        {
            "name": "elastic_limit_parameters_v0", "fields": [
                { "type": "uint64", "name": "target" },
                { "type": "uint64", "name": "max" },
                { "type": "uint32", "name": "periods" },
                { "type": "uint32", "name": "max_multiplier" },
                { "type": "resource_limits_ratio", "name": "contract_rate" },
                { "type": "resource_limits_ratio", "name": "expand_rate" }
            ]
        },
        {
            "name": "resource_limits_config_v0", "fields": [
                { "type": "elastic_limit_parameters", "name": "cpu_limit_parameters" },
                { "type": "elastic_limit_parameters", "name": "net_limit_parameters" },
                { "type": "uint32", "name": "account_cpu_usage_average_window" },
                { "type": "uint32", "name": "account_net_usage_average_window" }
            ]
        },
        {
            "name": "finalizer_authority", "fields": [
                { "name": "description", "type": "string" },
                { "name": "weight", "type": "uint64" },
                { "name": "public_key", "type": "bytes" }
            ]
        },
        {
            "name": "finalizer_authority_with_string_key", "fields": [
                { "name": "description", "type": "string" },
                { "name": "weight", "type": "uint64" },
                { "name": "public_key", "type": "string" }
            ]
        },
        {
            "name": "finalizer_policy_with_string_key", "fields": [
                { "name": "generation", "type": "uint32" },
                { "name": "threshold", "type": "uint64" },
                { "name": "finalizers", "type": "finalizer_authority_with_string_key[]" }
            ]
        },
        {
            "name": "finality_data", "fields": [
                { "name": "major_version", "type": "uint32" },
                { "name": "minor_version", "type": "uint32" },
                { "name": "active_finalizer_policy_generation", "type": "uint32" },
                { "name": "action_mroot", "type": "checksum256" },
                { "name": "reversible_blocks_mroot", "type": "checksum256" },
                { "name": "latest_qc_claim_block_num", "type": "uint32" },
                { "name": "latest_qc_claim_finality_digest", "type": "checksum256" },
                { "name": "latest_qc_claim_timestamp", "type": "block_timestamp_type" },
                { "name": "base_digest", "type": "checksum256" },
                { "name": "pending_finalizer_policy", "type": "finalizer_policy_with_string_key?" },
                { "name": "last_pending_finalizer_policy_generation", "type": "uint32" }
            ]
        },
        {
            "name": "protocol_feature_activation_extension", "fields": [
                { "name": "protocol_features", "type": "checksum256[]" }
            ]
        },
        {
            "name": "producer_schedule_change_extension", "base": "producer_authority_schedule", "fields": []
        },
        {
            "name": "qc_claim", "fields": [
                { "name": "block_num", "type": "uint32" },
                { "name": "is_strong_qc", "type": "bool" }
            ]
        },
        {
            "name": "insert_finalizer_policy_index_pair", "fields": [
                { "name": "index", "type": "uint16" },
                { "name": "value", "type": "finalizer_authority" }
            ]
        },
        {
            "name": "finalizer_policy_diff", "fields": [
                { "name": "generation", "type": "uint32" },
                { "name": "threshold", "type": "uint64" },
                { "name": "remove_indexes", "type": "uint16[]" },
                { "name": "insert_indexes", "type": "insert_finalizer_policy_index_pair[]" }
            ]
        },
        {
            "name": "insert_proposer_policy_index_pair", "fields": [
                { "name": "index", "type": "uint16" },
                { "name": "value", "type": "producer_authority" }
            ]
        },
        {
            "name": "proposer_policy_diff", "fields": [
                { "name": "version", "type": "uint32" },
                { "name": "proposal_time", "type": "block_timestamp_type" },
                { "name": "remove_indexes", "type": "uint16[]" },
                { "name": "insert_indexes", "type": "insert_proposer_policy_index_pair[]" }
            ]
        },
        {
            "name": "finality_extension", "fields": [
                { "name": "qc_claim", "type": "qc_claim" },
                { "name": "new_finalizer_policy_diff", "type": "finalizer_policy_diff?" },
                { "name": "new_proposer_policy_diff", "type": "proposer_policy_diff?" }
            ]
        }
    ],
    "types": [
        { "new_type_name": "transaction_id", "type": "checksum256" }
    ],
    "variants": [
        { "name": "request", "types": ["get_status_request_v0", "get_blocks_request_v0", "get_blocks_ack_request_v0", "get_blocks_request_v1", "get_status_request_v1"] },
        { "name": "result", "types": ["get_status_result_v0", "get_blocks_result_v0", "get_blocks_result_v1", "get_status_result_v1"] },

        { "name": "action_receipt", "types": ["action_receipt_v0"] },
        { "name": "action_trace", "types": ["action_trace_v0", "action_trace_v1"] },
        { "name": "partial_transaction", "types": ["partial_transaction_v0"] },
        { "name": "transaction_trace", "types": ["transaction_trace_v0"] },
        { "name": "transaction_variant", "types": ["transaction_id", "packed_transaction"] },

        { "name": "table_delta", "types": ["table_delta_v0"] },
        { "name": "account", "types": ["account_v0"] },
        { "name": "account_metadata", "types": ["account_metadata_v0"] },
        { "name": "code", "types": ["code_v0"] },
        { "name": "contract_table", "types": ["contract_table_v0"] },
        { "name": "contract_row", "types": ["contract_row_v0"] },
        { "name": "contract_index64", "types": ["contract_index64_v0"] },
        { "name": "contract_index128", "types": ["contract_index128_v0"] },
        { "name": "contract_index256", "types": ["contract_index256_v0"] },
        { "name": "contract_index_double", "types": ["contract_index_double_v0"] },
        { "name": "contract_index_long_double", "types": ["contract_index_long_double_v0"] },
        { "name": "chain_config", "types": ["chain_config_v0", "chain_config_v1"] },
        { "name": "wasm_config", "types": ["wasm_config_v0"] },
        { "name": "global_property", "types": ["global_property_v0", "global_property_v1"] },
        { "name": "generated_transaction", "types": ["generated_transaction_v0"] },
        { "name": "activated_protocol_feature", "types": ["activated_protocol_feature_v0"] },
        { "name": "protocol_state", "types": ["protocol_state_v0"] },
        { "name": "permission", "types": ["permission_v0"] },
        { "name": "permission_link", "types": ["permission_link_v0"] },
        { "name": "resource_limits", "types": ["resource_limits_v0"] },
        { "name": "usage_accumulator", "types": ["usage_accumulator_v0"] },
        { "name": "resource_usage", "types": ["resource_usage_v0"] },
        { "name": "resource_limits_state", "types": ["resource_limits_state_v0"] },
        { "name": "resource_limits_ratio", "types": ["resource_limits_ratio_v0"] },
        { "name": "elastic_limit_parameters", "types": ["elastic_limit_parameters_v0"] },
        { "name": "resource_limits_config", "types": ["resource_limits_config_v0"] },
        { "name": "block_signing_authority", "types": ["block_signing_authority_v0"] },
        { "name": "block_header_extension", "types": ["protocol_feature_activation_extension", "producer_schedule_change_extension", "finality_extension"] }
    ],
    "tables": [
        { "name": "account", "type": "account", "key_names": ["name"] },
        { "name": "account_metadata", "type": "account_metadata", "key_names": ["name"] },
        { "name": "code", "type": "code", "key_names": ["vm_type", "vm_version", "code_hash"] },
        { "name": "contract_table", "type": "contract_table", "key_names": ["code", "scope", "table"] },
        { "name": "contract_row", "type": "contract_row", "key_names": ["code", "scope", "table", "primary_key"] },
        { "name": "contract_index64", "type": "contract_index64", "key_names": ["code", "scope", "table", "primary_key"] },
        { "name": "contract_index128", "type": "contract_index128", "key_names": ["code", "scope", "table", "primary_key"] },
        { "name": "contract_index256", "type": "contract_index256", "key_names": ["code", "scope", "table", "primary_key"] },
        { "name": "contract_index_double", "type": "contract_index_double", "key_names": ["code", "scope", "table", "primary_key"] },
        { "name": "contract_index_long_double", "type": "contract_index_long_double", "key_names": ["code", "scope", "table", "primary_key"] },
        { "name": "global_property", "type": "global_property", "key_names": [] },
        { "name": "generated_transaction", "type": "generated_transaction", "key_names": ["sender", "sender_id"] },
        { "name": "protocol_state", "type": "protocol_state", "key_names": [] },
        { "name": "permission", "type": "permission", "key_names": ["owner", "name"] },
        { "name": "permission_link", "type": "permission_link", "key_names": ["account", "code", "message_type"] },
        { "name": "resource_limits", "type": "resource_limits", "key_names": ["owner"] },
        { "name": "resource_usage", "type": "resource_usage", "key_names": ["owner"] },
        { "name": "resource_limits_state", "type": "resource_limits_state", "key_names": [] },
        { "name": "resource_limits_config", "type": "resource_limits_config", "key_names": [] }
    ]
}"""
