"""The devnet chain as Hyperion action documents (pure): stored, REST and merged shapes.

Hyperion indexes one Elasticsearch document per action *execution* (hyperion.md §1.3, §4.1):
the contract's own trace and the notifications it caused (``require_recipient``) share one
``act`` and become one document whose ``receipts`` list every receiver in execution order; the
document's ``global_sequence`` (its ES ``_id``) is the first receipt's. Three shapes exist:

* **stored** ("raw", §3.5): what the indexer wrote and what live stream messages (both
  versions) and 3.x history batches carry: receipt sequences as *strings*, transfer fields moved
  out of ``act.data`` into a separate ``@transfer`` object (``amount`` a float), ``act_digest``
  (4.x indexers), ``elapsed`` as a string;
* **merged** (4.x history batches, ``get_transaction``): the stored doc after
  ``mergeActionMeta`` -- ``@transfer`` folded back into ``act.data`` (its keys first: ``from,
  to, amount, symbol, memo``, then ``quantity``), ``timestamp`` added;
* **REST** (``get_actions``, §1.2-1.3): the merged doc serialized against Fastify's response
  schema: only the declared keys, in the declared order, receipt numbers as JSON numbers.

Data-bug modes reproduce version-specific indexer faults (§4.3, §4.4) without touching the
chain (``truth`` stays the chain's): ``collapse-identical`` groups identical actions of one
transaction into one doc with concatenated receipts (<= 4.0.3 and all 3.x, issue #148);
``fragment-notifications`` stores every receipt as its own doc (4.0.4).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from ..model import format_asset, format_trace_time
from .chain import Block, Trace, Transaction

__all__ = [
    "DATA_BUGS",
    "Doc",
    "block_docs",
    "dumps",
    "format_time",
    "merged_doc",
    "rest_doc",
    "rest_text",
    "simple_doc",
    "stored_doc",
    "stored_text",
]

DATA_BUGS = ("none", "collapse-identical", "fragment-notifications")

# Actions whose data the indexer splits into an ``@<name>`` object (H4 `action_data/`): only
# ``transfer`` carries transfers; the others never occur on the devnet chain.
_TRANSFER = "transfer"


_encode = msgspec.json.Encoder().encode


def dumps(value: Any) -> str:
    """Compact JSON as Node's ``JSON.stringify`` writes it (UTF-8 kept, no HTML escapes, floats
    shortest round-trip with JS exponents such as ``1e-8``). Integral floats must be passed as
    :func:`js_number` makes them (JS writes ``10``, not ``10.0``)."""
    return _encode(value).decode()


def js_number(value: float) -> float | int:
    """A double as JavaScript prints it: integral values without ``.0``."""
    if value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def format_time(ms: int) -> str:
    """Hyperion's block time text: ``2024-01-11T23:17:15.000`` (UTC, milliseconds, no Z)."""
    text = format_trace_time(ms)
    return text if "." in text else text + ".000"


def _mix(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class Doc:
    """One indexed action document of one canonical block (see the module docstring).

    Attributes:
        block: the chain block; ``trx``: its transaction; ``traces``: the receipts' traces in
            execution order (the first one gives ``global_sequence`` and the ordinals).
        first_in_trx: the transaction's first document (carries cpu/net/signatures, §1.3).
        rest: memo of the REST JSON text (see :func:`rest_text`).
    """

    __slots__ = ("act", "block", "first_in_trx", "global_sequence", "rest", "stored", "traces",
                 "trx")  # fmt: skip

    def __init__(
        self, block: Block, trx: Transaction, traces: list[Trace], first_in_trx: bool
    ) -> None:
        self.block = block
        self.trx = trx
        self.traces = traces
        self.act = traces[0].act
        self.global_sequence = traces[0].global_sequence
        self.first_in_trx = first_in_trx
        self.rest: str | None = None
        self.stored: str | None = None

    @property
    def receivers(self) -> list[str]:
        return [t.receiver for t in self.traces]

    @property
    def actors(self) -> list[str]:
        return [actor for actor, _ in self.act.authorization]


def block_docs(block: Block, data_bug: str = "none") -> list[Doc]:
    """The documents of ``block`` in ``global_sequence`` order (executed transactions only:
    Hyperion indexes only traces with ``except === null``, §4.4)."""
    docs: list[Doc] = []
    for trx in block.transactions:
        if trx.status != "executed":
            continue
        groups: dict[Any, list[Trace]] = {}
        if data_bug == "fragment-notifications":
            # v4.0.4: every receipt became its own document (CL 4.0.5).
            for trace in trx.traces:
                groups[trace.global_sequence] = [trace]
        elif data_bug == "collapse-identical":
            # <= v4.0.3: grouping by the action digest alone, and identical actions of one
            # transaction have the same digest (issue #148): one doc, concatenated receipts.
            for trace in trx.traces:
                act = trace.act
                key = (act.account, act.name, act.authorization, act.hex_data)
                groups.setdefault(key, []).append(trace)
        else:
            for trace in trx.traces:
                groups.setdefault(id(trace.act), []).append(trace)
        for i, traces in enumerate(groups.values()):
            docs.append(Doc(block, trx, traces, i == 0))
    docs.sort(key=lambda doc: doc.global_sequence)
    return docs


# --- the pieces ------------------------------------------------------------------------------


def _authorization(doc: Doc) -> list[dict[str, str]]:
    return [{"actor": a, "permission": p} for a, p in doc.act.authorization]


def _receipts(doc: Doc, as_text: bool) -> list[dict[str, Any]]:
    conv = str if as_text else int
    out = []
    for t in doc.traces:
        out.append(
            {
                "receiver": t.receiver,
                "global_sequence": conv(t.global_sequence),
                "recv_sequence": conv(t.recv_sequence),
                "auth_sequence": [
                    {"account": actor, "sequence": conv(t.auth_sequence)}
                    for actor, _ in doc.act.authorization
                ],
            }
        )
    return out


def _transfer_meta(data: dict[str, Any]) -> dict[str, Any] | None:
    """The indexer's ``@transfer`` object, or None when ``quantity`` is not ``"<n> <SYM>"``."""
    quantity = data.get("quantity")
    if not isinstance(quantity, str) or " " not in quantity:
        return None
    number, _, symbol = quantity.partition(" ")
    try:
        amount = float(number)  # JavaScript parseFloat: a double, never exact (§1.3)
    except ValueError:
        return None
    return {
        "from": data.get("from"),
        "to": data.get("to"),
        "amount": js_number(amount),
        "symbol": symbol,
        "memo": data.get("memo"),
    }


def _merged_data(doc: Doc) -> dict[str, Any]:
    data = doc.act.data
    if doc.act.name == _TRANSFER:
        meta = _transfer_meta(data)
        if meta is not None:
            # Deep merge: @transfer keys first, then what stayed in data (§1.3, WK key order).
            merged = dict(meta)
            for key, value in data.items():
                if key not in merged:
                    merged[key] = value
            return merged
    return dict(data)


def _cpu_net_sigs(doc: Doc) -> tuple[int, int, list[str]]:
    h = _mix("trx:" + doc.trx.trx_id)
    sig = hashlib.blake2b(doc.trx.trx_id.encode(), digest_size=48).hexdigest()
    return 100 + h % 900, 12 + (h >> 16) % 40, ["SIG_K1_" + sig[:95]]


def _ram_deltas(doc: Doc) -> list[tuple[str, int]]:
    return [(t.act.from_account, 240) for t in doc.traces if t.new_row and t.act.from_account]


def _inline_count(doc: Doc) -> int:
    return len(doc.trx.children(doc.traces[0]))


# --- the shapes ------------------------------------------------------------------------------


def stored_doc(doc: Doc, *, act_digest: bool = True) -> dict[str, Any]:
    """The stored (raw) document (§3.5): string receipt sequences, ``@transfer`` apart.

    ``act_digest`` is written by 4.x indexers only (absent from the 3.3.9 recordings, FACTS §3).
    Key order follows the recorded 3.3.9 ``get_transaction`` doc, minus what merging adds.
    """
    first = doc.traces[0]
    block = doc.block
    data = dict(doc.act.data)
    meta = None
    if doc.act.name == _TRANSFER:
        meta = _transfer_meta(data)
        if meta is not None:
            # features.index_transfer_memo (default true): from, to and memo move out (§1.3).
            for key in ("from", "to", "memo"):
                data.pop(key, None)
    out: dict[str, Any] = {
        "action_ordinal": first.ordinal,
        "creator_action_ordinal": first.creator,
        "act": {
            "account": doc.act.account,
            "name": doc.act.name,
            "authorization": _authorization(doc),
            "data": data,
        },
    }
    if meta is not None:
        out["@transfer"] = meta
    out["context_free"] = False
    elapsed = str(first.elapsed)
    if elapsed != "0":  # dropped when "0" (H4 cleanActionTrace)
        out["elapsed"] = elapsed
    out["@timestamp"] = format_time(block.time_ms)
    out["block_num"] = block.num
    out["block_id"] = block.id
    out["producer"] = block.producer
    out["trx_id"] = doc.trx.trx_id
    out["global_sequence"] = doc.global_sequence
    if doc.first_in_trx:
        cpu, net, sigs = _cpu_net_sigs(doc)
        out["cpu_usage_us"] = cpu
        out["net_usage_words"] = net
        out["signatures"] = sigs
    out["inline_count"] = _inline_count(doc)
    out["inline_filtered"] = False
    out["receipts"] = _receipts(doc, as_text=True)
    out["code_sequence"] = 1
    out["abi_sequence"] = 1
    if act_digest:
        out["act_digest"] = doc.act.digest
    deltas = _ram_deltas(doc)
    if deltas:
        out["account_ram_deltas"] = [{"account": a, "delta": str(d)} for a, d in deltas]
    return out


def stored_text(doc: Doc, *, act_digest: bool = True) -> str:
    """JSON text of :func:`stored_doc` (memoised for the 4.x form)."""
    if not act_digest:
        return dumps(stored_doc(doc, act_digest=False))
    if doc.stored is None:
        doc.stored = dumps(stored_doc(doc))
    return doc.stored


def merged_doc(doc: Doc, *, act_digest: bool = True, notified: bool = False) -> dict[str, Any]:
    """The stored doc after ``mergeActionMeta`` (4.x history, ``get_transaction``).

    ``notified`` adds the comma-joined receivers (``get_transaction`` since 4.0.5, §2.4).
    """
    out = stored_doc(doc, act_digest=act_digest)
    meta = out.pop("@transfer", None)
    if meta is not None:
        out["act"]["data"] = _merged_data(doc)
    if notified:
        out["notified"] = ",".join(doc.receivers)
    out["timestamp"] = out["@timestamp"]
    return out


def rest_doc(doc: Doc) -> dict[str, Any]:
    """The ``get_actions`` projection (§1.3): declared keys only, in schema order."""
    block = doc.block
    first = doc.traces[0]
    stamp = format_time(block.time_ms)
    out: dict[str, Any] = {
        "@timestamp": stamp,
        "timestamp": stamp,
        "block_num": block.num,
        "block_id": block.id,
        "trx_id": doc.trx.trx_id,
        "act": {
            "account": doc.act.account,
            "name": doc.act.name,
            "authorization": _authorization(doc),
            "data": _merged_data(doc),
        },
        "receipts": _receipts(doc, as_text=False),
    }
    sigs: list[str] = []
    if doc.first_in_trx:
        cpu, net, sigs = _cpu_net_sigs(doc)
        out["cpu_usage_us"] = cpu
        out["net_usage_words"] = net
    deltas = _ram_deltas(doc)
    if deltas:
        out["account_ram_deltas"] = [{"account": a, "delta": d} for a, d in deltas]
    out["global_sequence"] = doc.global_sequence
    out["producer"] = block.producer
    out["action_ordinal"] = first.ordinal
    out["creator_action_ordinal"] = first.creator
    if sigs:
        out["signatures"] = sigs
    return out


def rest_text(doc: Doc) -> str:
    """JSON text of :func:`rest_doc`, memoised on the doc.

    Built from text pieces rather than through a dict: a backfill serves tens of thousands of
    docs per second. Names, hex ids and numbers never need escaping; memos and other data go
    through :func:`dumps`. Equal to ``dumps(rest_doc(doc))`` (tested).
    """
    text = doc.rest
    if text is not None:
        return text
    block = doc.block
    head = block.cache.get("hyperion_rest")
    if head is None:
        stamp = format_time(block.time_ms)
        head = block.cache["hyperion_rest"] = (
            f'{{"@timestamp":"{stamp}","timestamp":"{stamp}","block_num":{block.num},'
            f'"block_id":"{block.id}","trx_id":"'
        )
        block.cache["hyperion_tail"] = f'"producer":"{block.producer}",'
    act = doc.act
    first = doc.traces[0]
    auth = act.authorization
    auth_text = ",".join(f'{{"actor":"{a}","permission":"{p}"}}' for a, p in auth)
    receipts = []
    for t in doc.traces:
        seq = t.auth_sequence
        sequences = ",".join(f'{{"account":"{a}","sequence":{seq}}}' for a, _ in auth)
        receipts.append(
            f'{{"receiver":"{t.receiver}","global_sequence":{t.global_sequence},'
            f'"recv_sequence":{t.recv_sequence},"auth_sequence":[{sequences}]}}'
        )
    if act.name == _TRANSFER and act.asset is not None and act._data is None:
        # The generator's transfers (data not yet built): from the fields, in merged order.
        units, precision, symbol = act.asset
        quantity = format_asset(units, precision, symbol)
        amount = dumps(js_number(float(quantity.partition(" ")[0])))
        data = (
            f'{{"from":"{act.from_account}","to":"{act.to_account}","amount":{amount},'
            f'"symbol":"{symbol}","memo":{dumps(act.memo)},"quantity":"{quantity}"}}'
        )
    else:
        data = dumps(_merged_data(doc))
    parts = [
        head, doc.trx.trx_id,
        f'","act":{{"account":"{act.account}","name":"{act.name}","authorization":[{auth_text}],'
        f'"data":{data}}},"receipts":[', ",".join(receipts), "]",
    ]  # fmt: skip
    sigs = ""
    if doc.first_in_trx:
        cpu, net, sig_list = _cpu_net_sigs(doc)
        parts.append(f',"cpu_usage_us":{cpu},"net_usage_words":{net}')
        sigs = ',"signatures":[' + ",".join(f'"{x}"' for x in sig_list) + "]"
    deltas = _ram_deltas(doc)
    if deltas:
        parts.append(
            ',"account_ram_deltas":['
            + ",".join(f'{{"account":"{a}","delta":{d}}}' for a, d in deltas)
            + "]"
        )
    parts.append(f',"global_sequence":{doc.global_sequence},')
    parts.append(block.cache["hyperion_tail"])
    parts.append(
        f'"action_ordinal":{first.ordinal},"creator_action_ordinal":{first.creator}{sigs}}}'
    )
    text = doc.rest = "".join(parts)
    return text


def simple_doc(doc: Doc, lib: int | None) -> dict[str, Any]:
    """A ``simple_actions[]`` item (§1.3); ``irreversible`` only with ``checkLib`` (``lib``
    not None), strictly ``block_num < lib``."""
    out: dict[str, Any] = {
        "block": doc.block.num,
        "timestamp": format_time(doc.block.time_ms),
    }
    if lib is not None:
        out["irreversible"] = doc.block.num < lib
    out["contract"] = doc.act.account
    out["action"] = doc.act.name
    out["actors"] = ",".join(f"{a}@{p}" for a, p in doc.act.authorization)
    out["notified"] = ",".join(doc.receivers)
    out["transaction_id"] = doc.trx.trx_id
    out["data"] = _merged_data(doc)
    return out
