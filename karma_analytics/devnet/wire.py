"""The dfuse WebSocket wire format of the devnet: frames as JSON text (pure).

Frames are built as strings, not through ``json.dumps`` of dicts, because a history replay sends
tens of thousands per second: every piece whose text never needs escaping (names, hex ids,
numbers) is written directly, and strings that may need it (memos) go through :func:`go_string`.
The output follows dfuse-protocol.md §3: envelope keys in the order ``type``, ``req_id``
(omitted when empty), ``data``; uint64 values as numbers up to 2^32-1 and decimal strings above;
the top-level ``block_time`` in Go RFC 3339 (``...:05.5Z``) and the trace one without zone
(``...:05.500``); ``except``/``error_code`` omitted; op arrays only when requested and
non-empty.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from typing import Any, NamedTuple

from ..model import format_asset, format_block_time, format_trace_time, uint64_to_name
from .chain import (
    _CONTRACT_ACCOUNTS,
    _MASK64,
    GS_BASE,
    KARMA_SYMBOL,
    Block,
    Trace,
    Transaction,
    _mix64,
)

__all__ = [
    "Shape",
    "action_trace_data",
    "envelope",
    "error_frame",
    "error_object",
    "go_json",
    "go_string",
    "head_info_data",
    "ping_frame",
    "prefix",
]

UINT32_MAX = 0xFFFFFFFF

# Primary key of a KARMA balance row (and scope of its stat row): the raw symbol code as a name.
_SYMBOL_KEY = uint64_to_name(int.from_bytes(KARMA_SYMBOL.encode().ljust(8, b"\0"), "little"))


class Shape(NamedTuple):
    """The parts of a ``get_action_traces`` request that change the rendered trace text."""

    inline: bool = False
    dbops: bool = False
    ramops: bool = False
    dtrxops: bool = False
    tableops: bool = False


DEFAULT_SHAPE = Shape()


def go_string(text: str) -> str:
    """A JSON string literal escaped as Go's ``encoding/json`` does (HTML-safe: ``<``, ``>``,
    ``&``, U+2028 and U+2029 become ``\\u`` escapes); non-ASCII stays UTF-8."""
    return _go_escape(json.dumps(text, ensure_ascii=False))


def go_json(value: Any) -> str:
    """Compact JSON of ``value`` with Go's string escaping (see :func:`go_string`)."""
    return _go_escape(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _go_escape(out: str) -> str:
    """Go's HTML-safe escapes applied to JSON text from ``json.dumps``."""
    if "<" in out or ">" in out or "&" in out or "\u2028" in out or "\u2029" in out:
        out = (
            out.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
        )
    return out


def u64(value: int) -> str:
    """dfuse's uint64 JSON rule: a number up to 2^32-1, a decimal string above (§3.2)."""
    return str(value) if value <= UINT32_MAX else f'"{value}"'


def prefix(message_type: str, req_id: str) -> str:
    """The envelope text before ``data``: ``{"type":...,"req_id":...,"data":``."""
    if req_id:
        return f'{{"type":"{message_type}","req_id":{go_string(req_id)},"data":'
    return f'{{"type":"{message_type}","data":'


def envelope(message_type: str, req_id: str, data_json: str) -> str:
    """A whole frame: ``{"type":..., "req_id":..., "data":...}`` (req_id omitted when empty)."""
    return prefix(message_type, req_id) + data_json + "}"


def ping_frame(now_ns: int) -> str:
    """``{"type":"ping","data":"<RFC3339Nano UTC>"}`` (§1.3; trailing zeros trimmed, Go style)."""
    seconds, nanos = divmod(now_ns, 1_000_000_000)
    base = format_block_time(seconds * 1000)[:-1]
    if nanos:
        base += "." + f"{nanos:09d}".rstrip("0")
    return f'{{"type":"ping","data":"{base}Z"}}'


def trace_id(seed: int, counter: int) -> str:
    """A deterministic 32-hex ``trace_id`` for the n-th error of a server."""
    return hashlib.blake2b(f"trace:{seed}:{counter}".encode(), digest_size=16).hexdigest()


def error_object(code: str, message: str, details: dict[str, Any] | None, trace: str) -> str:
    """The dfuse error object (§3.4): code, trace_id, message, details (omitted when empty)."""
    text = f'{{"code":{go_string(code)},"trace_id":"{trace}","message":{go_string(message)}'
    if details:
        text += ',"details":' + go_json(details)
    return text + "}"


def error_frame(
    req_id: str, code: str, message: str, details: dict[str, Any] | None, trace: str
) -> str:
    """An ``error`` frame carrying :func:`error_object`."""
    return envelope("error", req_id, error_object(code, message, details, trace))


def head_info_data(block: Block, lib_block: Block) -> str:
    """The ``head_info`` data object (§3.6)."""
    return (
        f'{{"last_irreversible_block_num":{lib_block.num},'
        f'"last_irreversible_block_id":"{lib_block.id}",'
        f'"head_block_num":{block.num},"head_block_id":"{block.id}",'
        f'"head_block_time":"{format_block_time(block.time_ms)}",'
        f'"head_block_producer":"{block.producer}"}}'
    )


# --- action traces --------------------------------------------------------------------------


_MEMO_JSON: dict[str, str] = {}


def _memo_json(memo: str) -> str:
    """:func:`go_string` of a memo, memoised: most memos repeat (human, CJK, airdrop texts)."""
    text = _MEMO_JSON.get(memo)
    if text is None:
        if memo.isdigit() and memo.isascii():
            return f'"{memo}"'  # exchange deposit ids: never escaped, rarely repeated
        text = go_string(memo)
        if len(_MEMO_JSON) >= 50_000:
            _MEMO_JSON.clear()
        _MEMO_JSON[memo] = text
    return text


def _act_json(trace: Trace) -> str:
    act = trace.act
    cached = act.cache
    if cached is not None:
        return cached
    asset = act.asset
    if asset is not None:
        units, precision, symbol = asset
        if precision == 4 and units >= 0:
            quantity = f"{units // 10000}.{units % 10000:04d} {symbol}"
        else:
            quantity = format_asset(units, precision, symbol)
        text = (
            f'{{"account":"{act.account}","name":"{act.name}",'
            f'"authorization":[{{"actor":"{act.actor}","permission":"active"}}],'
            f'"data":{{"from":"{act.from_account}","to":"{act.to_account}",'
            f'"quantity":"{quantity}","memo":{_memo_json(act.memo)}}},'
            f'"hex_data":"{act._hex or act.hex_data}"}}'
        )
    else:
        text = (
            f'{{"account":"{act.account}","name":"{act.name}",'
            f'"authorization":[{{"actor":"{act.actor}","permission":"active"}}],'
            f'"data":{go_json(act.data)},"hex_data":"{act.hex_data}"}}'
        )
    act.cache = text
    return text


_DAYS: dict[int, str] = {}
# Two 0.5 s blocks share a second: the last few thousand seconds' texts are kept.
_SECONDS: dict[int, str] = {}


def block_times(ms: int) -> tuple[str, str]:
    """Both dfuse time forms of ``ms``: top level (``...:05.5Z``) and trace (``...:05.500``).

    Same output as ``model.format_block_time`` / ``format_trace_time``, without datetime on
    the hot path.
    """
    seconds, millis = divmod(ms, 1000)
    base = _SECONDS.get(seconds)
    if base is None:
        day, second_of_day = divmod(seconds, 86_400)
        date = _DAYS.get(day)
        if date is None:
            date = _dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()
            if len(_DAYS) < 100_000:
                _DAYS[day] = date
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        base = f"{date}T{hour:02d}:{minute:02d}:{second:02d}"
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        _SECONDS[seconds] = base
    if millis == 0:
        return base + "Z", base
    fraction = f"{millis:03d}"
    return f"{base}.{fraction.rstrip('0')}Z", f"{base}.{fraction}"


_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()


def _block_times(block: Block) -> tuple[str, str]:
    times = block.cache.get("times")
    if times is None:
        times = block_times(block.time_ms)
        block.cache["times"] = times
    return times


def _block_texts(block: Block) -> tuple[str, str]:
    """The per-block pieces of every action_trace of ``block``: the head of ``data`` up to the
    ``trx_id`` value, and the trace's block fields up to ``account_ram_deltas``."""
    texts = block.cache.get("texts")
    if texts is None:
        top, trace_time = _block_times(block)
        texts = (
            f'{{"block_num":{block.num},"block_id":"{block.id}","block_time":"{top}","trx_id":"',
            f'"block_num":{block.num},"block_time":"{trace_time}",'
            f'"producer_block_id":"{block.id}","account_ram_deltas":',
        )
        block.cache["texts"] = texts
    return texts


def trace_json(trace: Trace, trx: Transaction, block: Block, inline: bool) -> str:
    """The ``trace`` object of an action_trace (eos-go encoding, §3.2)."""
    return _trace_json(trace, trx, block, inline, _block_texts(block)[1])


def _trace_json(
    trace: Trace, trx: Transaction, block: Block, inline: bool, tail: str, lead: str = "",
    end: str = "",
) -> str:  # fmt: skip
    """:func:`trace_json` with the block's ``tail`` text (:func:`_block_texts`), written after
    ``lead`` and before ``end`` in one piece (one copy of the ~1 kB text per frame)."""
    act = trace.act
    receiver = trace.receiver
    gs = trace.global_sequence
    # Contracts' receive counters are large (string-encoded), users' small (numbers): both
    # sides of the uint64 rule appear (dfuse §3.2); see Trace.recv_sequence.
    if receiver in _CONTRACT_ACCOUNTS:
        code_seq = 3
        recv = gs - 3_000_000_000
        elapsed = 40 if receiver == act.account else 5
    else:
        code_seq = 0
        recv = 1 + (gs - GS_BASE) // 3 % 4_000_000_000
        elapsed = 5
    h = (gs * 0x9E3779B97F4A7C15) & _MASK64
    elapsed += (h >> 32) % 360  # as Trace.elapsed
    auth = 2_000_000_000 + gs * 7 % 5_000_000_000
    if (
        (h >> 40) % 10 == 0  # as Trace.new_row
        and act.name == "transfer"
        and receiver == act.account
    ):
        deltas = f'[{{"account":"{act.from_account}","delta":240}}]'
    else:
        deltas = "[]"
    # dfuse's uint64 rule (§3.2), inlined: this runs for every frame of a first replay.
    gs_text = f'"{gs}"' if gs > UINT32_MAX else str(gs)
    recv_text = f'"{recv}"' if recv > UINT32_MAX else str(recv)
    auth_text = f'"{auth}"' if auth > UINT32_MAX else str(auth)
    if inline:
        children = ",".join(_trace_json(c, trx, block, True, tail) for c in trx.children(trace))
        inline_text = f"[{children}]"
    else:
        inline_text = "[]"
    return (
        f'{lead}{{"action_ordinal":{trace.ordinal},"creator_action_ordinal":{trace.creator},'
        f'"closest_unnotified_ancestor_action_ordinal":{trace.closest},'
        f'"receipt":{{"receiver":"{receiver}","act_digest":"{act._digest or act.digest}",'
        f'"global_sequence":{gs_text},"recv_sequence":{recv_text},'
        f'"auth_sequence":[["{act.actor}",{auth_text}]],'
        f'"code_sequence":{code_seq},"abi_sequence":{code_seq}}},'
        f'"receiver":"{receiver}","act":{act.cache or _act_json(trace)},"context_free":false,'
        f'"elapsed":{elapsed},"console":"","trx_id":"{trx.trx_id}",'
        f"{tail}{deltas},"
        f'"inline_traces":{inline_text}}}{end}'
    )


def _balance_hex(units: int) -> str:
    return units.to_bytes(8, "little", signed=True).hex() + "044b41524d410000"


def ops_for(trace: Trace, idx: int, block: Block) -> dict[str, list[dict[str, Any]]]:
    """The db/ram/dtrx/table ops produced by one execution (empty for notifications).

    Values are derived from ``global_sequence`` so that they cost nothing unless requested.
    """
    act = trace.act
    if trace.receiver != act.account or act.account == "eosio.token":
        return {}
    contract = act.account
    h = _mix64(trace.global_sequence ^ 0xD1B54A32D192ED03)
    out: dict[str, list[dict[str, Any]]] = {}
    if act.name == "transfer" and act.asset is not None:
        units = act.asset[0]
        frm, to = act.from_account, act.to_account
        old_from = units + h % 10**10
        dbops: list[dict[str, Any]] = [
            {
                "op": "UPD",
                "action_idx": idx,
                "opayer": frm,
                "npayer": frm,
                "path": f"{contract}/{frm}/accounts/{_SYMBOL_KEY}",
                "old": _balance_hex(old_from),
                "new": _balance_hex(old_from - units),
            }
        ]
        if trace.new_row:
            dbops.append(
                {
                    "op": "INS",
                    "action_idx": idx,
                    "npayer": frm,
                    "path": f"{contract}/{to}/accounts/{_SYMBOL_KEY}",
                    "new": _balance_hex(units),
                }
            )
            out["ramops"] = [
                {
                    "action_idx": idx,
                    "event_id": hashlib.blake2b(str(h).encode(), digest_size=20).hexdigest(),
                    "family": "table_row",
                    "action": "add",
                    "op": "primary_index_add",
                    "payer": frm,
                    "delta": 240,
                    "usage": 3_000 + h % 5_000_000_000,
                }
            ]
            out["tableops"] = [
                {"op": "INS", "action_idx": idx, "payer": frm, "path": f"{contract}/{to}/accounts"}
            ]
        else:
            old_to = (h >> 20) % 10**10
            dbops.append(
                {
                    "op": "UPD",
                    "action_idx": idx,
                    "opayer": to,
                    "npayer": to,
                    "path": f"{contract}/{to}/accounts/{_SYMBOL_KEY}",
                    "old": _balance_hex(old_to),
                    "new": _balance_hex(old_to + units),
                }
            )
        out["dbops"] = dbops
    elif act.name == "issue":
        supply = 10**13 + h % 10**12
        out["dbops"] = [
            {
                "op": "UPD",
                "action_idx": idx,
                "opayer": contract,
                "npayer": contract,
                "path": f"{contract}/{_SYMBOL_KEY}/stat/{_SYMBOL_KEY}",
                "old": _balance_hex(supply),
                "new": _balance_hex(supply + 10_000),
            }
        ]
    elif act.name == "claim" and h % 3 == 0:
        published = format_trace_time(block.time_ms)
        out["dtrxops"] = [
            {
                "op": "create",
                "action_idx": idx,
                "sender": contract,
                "sender_id": str(h % 10**12),
                "payer": act.actor,
                "published_at": published,
                "delay_until": format_trace_time(block.time_ms + 3_600_000),
                "expiration_at": format_trace_time(block.time_ms + 4_200_000),
                "trx_id": hashlib.blake2b(str(h).encode(), digest_size=32).hexdigest(),
            }
        ]
    return out


def action_trace_data(
    trace: Trace, idx: int, trx: Transaction, block: Block, shape: Shape, prefix: str = "",
    suffix: str = "",
) -> str:  # fmt: skip
    """The ``data`` object of an ``action_trace`` frame (§3.2), after ``prefix`` and before
    ``suffix`` (a server passes :func:`prefix` and ``"}"`` to get the whole frame in one
    piece)."""
    head, tail = _block_texts(block)
    lead = f'{prefix}{head}{trx.trx_id}","idx":{idx},"trace":'
    if not (shape.dbops or shape.ramops or shape.dtrxops or shape.tableops):
        return _trace_json(trace, trx, block, shape.inline, tail, lead, "}" + suffix)
    text = _trace_json(trace, trx, block, shape.inline, tail, lead)
    if shape.dbops or shape.ramops or shape.dtrxops or shape.tableops:
        ops = ops_for(trace, idx, block)
        # Only when requested and non-empty (omitempty in the server, §3.2).
        for flag, key in (
            (shape.dbops, "dbops"),
            (shape.ramops, "ramops"),
            (shape.dtrxops, "dtrxops"),
            (shape.tableops, "tableops"),
        ):
            if flag and ops.get(key):
                text += f',"{key}":' + _ops_json(ops[key])
    return text + "}" + suffix


def _ops_json(ops: list[dict[str, Any]]) -> str:
    parts = []
    for op in ops:
        items = []
        for key, value in op.items():
            if key in ("usage",):
                items.append(f'"{key}":{u64(value)}')
            else:
                items.append(f'"{key}":{go_json(value)}')
        parts.append("{" + ",".join(items) + "}")
    return "[" + ",".join(parts) + "]"
