"""Hyperion action documents -> transfer events, for every server version (pure).

One Hyperion document is one action *as indexed*, not one execution. The rules that make the
result exactly once on every version (hyperion.md §4.3):

* An execution is the receipt whose ``receiver == act.account`` (the contract handling its own
  action); its receipt ``global_sequence`` is the row's key. The notifications to ``from`` and
  ``to`` are other receipts of the same document, not rows.
* ≤ v4.0.3 (all 3.x, issue #148): identical actions of one transaction were folded into one
  document with concatenated receipts, so a document can hold *several* executions: one
  transfer per matching receipt.
* v4.0.4: each notification was stored as its own document (one receipt, receiver = the
  notified account): such a *fragment* has no matching receipt and is skipped.
* ``act.data.quantity`` is the exact amount; ``amount`` is a float written by the indexer
  (``1e-08`` for ``0.00000001 WAX``) and never read (§1.3).
* ``@timestamp`` is UTC without a ``Z`` (``2024-01-11T23:17:15.000``).
* Raw documents (live stream, 3.x history stream) keep ``from``/``to``/``memo`` in a separate
  ``@transfer`` object; it is folded back into ``act.data`` first (§3.5). REST and 4.x history
  documents are already merged.
* A document whose ``act.data`` is not an object (``ds_error``: the indexer could not
  deserialize it, §1.3), or whose names or quantity do not parse, becomes a :class:`Reject`
  with the reason: kept, counted, never dropped (DESIGN.md "Bad input").

``action_idx``: the dataset's column is dfuse's execution index in the transaction
(DESIGN.md). Hyperion does not expose it: a document carries only its ``action_ordinal``
(creation order, 1-based, notifications included in the numbering), and the execution index
would need the whole transaction (one ``get_transaction`` per transaction). Hyperion rows
therefore carry ``action_ordinal - 1``: equal to dfuse's ``idx`` for the first action of a
transaction (the common single-transfer case), different for later actions of a
multi-action transaction. ``global_sequence`` stays the row's key on every source; the
executions folded into one ≤4.0.3 document share their document's ordinal.

A document that cannot even be placed (no integer ``block_num`` or ``global_sequence``) is a
protocol fault, not a reject: the paging cursor and the commit order depend on those two.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from karma_analytics import model
from karma_analytics.engine import ActionReceived, Reject
from karma_analytics.exceptions import ParseError, ProtocolError
from karma_analytics.model import (
    UINT64_MAX,
    Transfer,
    parse_asset,
    parse_block_time,
    parse_name,
    parse_uint64,
)

__all__ = [
    "DocStats",
    "FastDecoder",
    "FastDoc",
    "decode_doc",
    "decode_docs",
    "doc_block",
    "doc_sequence",
]

_UINT32_MAX = 2**32 - 1


@dataclass
class DocStats:
    """Counters of what decoding met (for logs and tests).

    Attributes:
        docs: documents seen.
        transfers: transfers built.
        rejects: rejects built.
        fragments: v4.0.4 notification fragments skipped (no receipt of the contract).
        collapsed: ≤4.0.3 documents holding more than one execution.
        foreign: documents of another contract or action (not asked for) skipped.
    """

    docs: int = 0
    transfers: int = 0
    rejects: int = 0
    fragments: int = 0
    collapsed: int = 0
    foreign: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def doc_block(doc: object) -> int:
    """The ``block_num`` of a document.

    Raises:
        ProtocolError: when it is missing or not a block number (transient: the range is
            fetched again rather than skipped).
    """
    value = doc.get("block_num") if isinstance(doc, dict) else None
    if _is_uint(value) and 1 <= value <= _UINT32_MAX:
        return value
    raise ProtocolError(
        f"Hyperion document without a valid block_num (got {value!r})", frame=_dump(doc)
    )


def doc_sequence(doc: object) -> int:
    """The top-level ``global_sequence`` of a document: the paging cursor (§4.2).

    It is the first receipt's sequence and the Elasticsearch ``_id``, so unique per document;
    raw stream documents may send it as a decimal string.

    Raises:
        ProtocolError: when it is missing or not an unsigned integer.
    """
    value = doc.get("global_sequence") if isinstance(doc, dict) else None
    try:
        return parse_uint64(value, field="global_sequence")
    except ParseError:
        raise ProtocolError(
            f"Hyperion document without a valid global_sequence (got {value!r})",
            frame=_dump(doc),
        ) from None


def _dump(doc: object) -> str:
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return repr(doc)


def _hex64(value: object, field_name: str) -> str:
    if isinstance(value, str) and len(value) == 64:
        try:
            int(value, 16)
        except ValueError:
            pass
        else:
            if value == value.lower():
                return value
    raise ParseError(field_name, value, "expected 64 lower-case hex digits")


def _merged_data(doc: Mapping[str, Any], act: Mapping[str, Any]) -> object:
    """``act.data`` with a raw document's ``@transfer`` folded back in (its keys first, as the
    API's ``mergeActionMeta`` does, §1.3); non-object data is returned as is."""
    data = act.get("data")
    meta = doc.get("@transfer")
    if isinstance(meta, dict) and isinstance(data, dict):
        merged = dict(meta)
        merged.update(data)
        return merged
    return data


def decode_doc(
    doc: object, contract: str, action: str, stats: DocStats | None = None
) -> list[ActionReceived]:
    """The transfers (or rejects) of one document, in receipt order.

    Args:
        doc: one element of ``actions[]`` (REST), of a history batch's ``messages`` or a live
            message (stream).
        contract: the selection's contract (``act.account`` and the execution's receiver).
        action: the selection's action name.
        stats: counters to update, optional.

    Returns:
        One event per receipt whose receiver is the contract: ``[]`` for a v4.0.4
        notification fragment or a document of another contract/action, several for a
        ≤4.0.3 collapsed document.

    Raises:
        ProtocolError: the document has no usable ``block_num`` or ``global_sequence``.
    """
    block_num = doc_block(doc)
    top_sequence = doc_sequence(doc)
    assert isinstance(doc, dict)
    if stats is not None:
        stats.docs += 1
    act = doc.get("act")
    if not isinstance(act, dict):
        return [_reject(doc, block_num, top_sequence, "act: expected a JSON object", stats)]
    if act.get("account") != contract or act.get("name") != action:
        # The filter asked the server for contract:action only; anything else is not ours.
        if stats is not None:
            stats.foreign += 1
        return []
    receipts = doc.get("receipts")
    if not isinstance(receipts, list):
        return [_reject(doc, block_num, top_sequence, "receipts: expected a list", stats)]
    sequences: list[int] = []
    for index, receipt in enumerate(receipts):
        if not isinstance(receipt, dict) or receipt.get("receiver") != contract:
            continue
        try:
            sequences.append(
                parse_uint64(
                    receipt.get("global_sequence"), field=f"receipts[{index}].global_sequence"
                )
            )
        except ParseError as exc:
            return [_reject(doc, block_num, top_sequence, str(exc), stats)]
    if not sequences:
        if stats is not None:
            stats.fragments += 1
        return []
    if stats is not None and len(sequences) > 1:
        stats.collapsed += 1
    try:
        block_id = _hex64(doc.get("block_id"), "block_id")
        trx_id = _hex64(doc.get("trx_id"), "trx_id")
        block_time = parse_block_time(doc.get("@timestamp"), field="@timestamp")
        ordinal = doc.get("action_ordinal", 1)
        if not (_is_uint(ordinal) and 1 <= ordinal <= _UINT32_MAX):
            raise ParseError("action_ordinal", ordinal, "expected an integer in 1..2^32-1")
        data = _merged_data(doc, act)
        if not isinstance(data, dict):
            raise ParseError(
                "act.data",
                data,
                "expected a JSON object (the indexer could not deserialize the action)",
            )
        from_account = parse_name(data.get("from"), field="act.data.from")
        to_account = parse_name(data.get("to"), field="act.data.to")
        asset = parse_asset(data.get("quantity"), field="act.data.quantity")
        memo = data.get("memo")
        if not isinstance(memo, str):
            raise ParseError("act.data.memo", memo, "expected a string")
        contract_name = parse_name(contract, field="act.account")
    except ParseError as exc:
        return [_reject(doc, block_num, seq, str(exc), stats) for seq in sequences]
    out = []
    for seq in sequences:
        out.append(
            ActionReceived.of_transfer(
                Transfer(
                    block_num=block_num,
                    block_id=block_id,
                    block_time=block_time,
                    trx_id=trx_id,
                    action_idx=ordinal - 1,
                    global_sequence=seq,
                    contract=contract_name,
                    action=action,
                    from_account=from_account,
                    to_account=to_account,
                    amount_units=asset.amount_units,
                    precision=asset.precision,
                    symbol=asset.symbol,
                    memo=memo,
                )
            )
        )
    if stats is not None:
        stats.transfers += len(out)
    return out


def _reject(
    doc: dict[str, Any],
    block_num: int,
    sequence: int | None,
    reason: str,
    stats: DocStats | None,
) -> ActionReceived:
    block_id = doc.get("block_id")
    trx_id = doc.get("trx_id")
    ordinal = doc.get("action_ordinal")
    try:
        block_time: int | None = parse_block_time(doc.get("@timestamp"))
    except ParseError:
        block_time = None
    if stats is not None:
        stats.rejects += 1
        key = reason.split(":")[0]
        stats.reasons[key] = stats.reasons.get(key, 0) + 1
    return ActionReceived.of_reject(
        Reject(
            block_num=block_num,
            block_id=block_id if isinstance(block_id, str) else "",
            trx_id=trx_id if isinstance(trx_id, str) else "",
            action_idx=ordinal - 1 if _is_uint(ordinal) and ordinal >= 1 else -1,
            global_sequence=sequence,
            reason=reason,
            raw=_dump(doc),
        ),
        block_time,
    )


def decode_docs(
    docs: Iterable[object], contract: str, action: str, stats: DocStats | None = None
) -> list[ActionReceived]:
    """Decode documents of one or more blocks and order the events by (block, sequence).

    The order matters for the engine's duplicate net: a ≤4.0.3 collapsed document sorts by its
    *first* receipt, so its second execution can be above the next document's sequence (§4.4);
    sorting the events of a block by their own receipt sequence restores execution order.
    Callers must pass every document of a block together (the backfill emits whole blocks).
    """
    out: list[ActionReceived] = []
    for doc in docs:
        out.extend(decode_doc(doc, contract, action, stats))
    out.sort(key=_order)
    return out


def _order(event: ActionReceived) -> tuple[int, int]:
    seq = event.global_sequence
    return event.block_num, -1 if seq is None else seq


# --- the fast path: typed REST documents ---------------------------------------------------------
#
# A 1000-doc page is ~1.2 MB of JSON; decoding it into dicts costs ~20 us per doc, more than
# everything else the collector does with a row. The typed view below holds only what a
# transfer needs (msgspec skips the other keys without building objects); whatever it does not
# accept (a type mismatch or a number out of range fails the whole page's typed decode, a
# value check fails one doc)
# goes to the reference path above (:func:`decode_doc` on the dict), which decides. Both paths
# give the same events (tests/sources/hyperion/test_docs.py).


_BlockNum = Annotated[int, msgspec.Meta(ge=1, le=_UINT32_MAX)]
_Ordinal = Annotated[int, msgspec.Meta(ge=1, le=_UINT32_MAX)]
# msgspec bounds must fit an int64: the top of the uint64 range is checked in decode().
_Sequence = Annotated[int, msgspec.Meta(ge=0)]


class _Fields(msgspec.Struct, gc=False):
    from_: str = msgspec.field(name="from")
    to: str
    quantity: str
    memo: str


class _Act(msgspec.Struct, gc=False):
    account: str
    name: str
    data: _Fields


class _Receipt(msgspec.Struct, gc=False):
    receiver: str
    global_sequence: _Sequence


class FastDoc(msgspec.Struct, gc=False):
    """The fields of one REST ``actions[]`` item that make a transfer.

    The numbers' lower bounds (and block numbers' and ordinals' upper bounds) are msgspec
    constraints, checked as the page is parsed: a page with such a number out of range is
    not typed at all and goes to the reference path whole.
    """

    block_num: _BlockNum
    global_sequence: _Sequence
    act: _Act
    receipts: list[_Receipt]
    block_id: str = ""
    trx_id: str = ""
    timestamp: str = msgspec.field(default="", name="@timestamp")
    action_ordinal: _Ordinal = 1


_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAMES_LIMIT = 65_536


_new_tuple = tuple.__new__


class FastDecoder:
    """Typed REST documents -> events, with the reference path's result (pure, per stream).

    :meth:`decode` returns ``None`` for a document it does not accept: the caller then gives
    that document's dict form to :func:`decode_doc`. Ids, names and block times that repeat
    (a block's docs share its id and time, an airdrop's its transaction) are validated once
    and their string objects shared. Quantities are parsed every time: too few repeat for a
    memo to pay for itself.
    """

    def __init__(self, contract: str, action: str) -> None:
        self.contract = contract
        self.action = action
        # A contract that is not a valid name matches no document here (an object equal to
        # no string): the reference path then refuses each one with its reason.
        self._match: object = contract if model.is_valid_name(contract) else object()
        self._names: set[str] = set()
        self._block_id = ""
        self._trx_id = ""
        self._time_text = ""
        self._time_ms = 0

    def _learn_name(self, name: str) -> bool:
        """Validate a name not seen yet and remember it (the caller checks ``_names`` inline:
        most names repeat, and the hot path then costs one set lookup, no call)."""
        if not model.is_valid_name(name):
            return False
        if len(self._names) >= _NAMES_LIMIT:
            self._names.clear()
        self._names.add(name)
        return True

    def decode(self, doc: FastDoc) -> ActionReceived | None:
        """The one event of ``doc`` (see :func:`decode_doc`), or ``None``: use the reference.

        Only documents holding exactly one execution take this path (fragments and collapsed
        documents are rare: the reference decides them), so the answer is one event: one
        document and one transfer for the caller's :class:`DocStats`. The typed parse checked
        the numbers' ranges, but for the top of the sequences' (:class:`FastDoc`).
        """
        act = doc.act
        contract = self._match
        if act.account != contract or act.name != self.action or doc.global_sequence > UINT64_MAX:
            return None
        seq = -1
        for receipt in doc.receipts:
            if receipt.receiver == contract:
                if seq >= 0:
                    return None  # a collapsed document: the reference decides
                seq = receipt.global_sequence
        if not 0 <= seq <= UINT64_MAX:
            return None  # a fragment (no execution) or a sequence out of range
        fields = act.data
        names = self._names
        from_ = fields.from_
        to = fields.to
        if (from_ not in names and not self._learn_name(from_)) or (
            to not in names and not self._learn_name(to)
        ):
            return None
        block_id = doc.block_id
        if block_id == self._block_id:
            block_id = self._block_id
        elif _HEX64.fullmatch(block_id):
            self._block_id = block_id
        else:
            return None
        trx_id = doc.trx_id
        if trx_id == self._trx_id:
            trx_id = self._trx_id
        elif _HEX64.fullmatch(trx_id):
            self._trx_id = trx_id
        else:
            return None
        text = doc.timestamp
        if text == self._time_text:
            block_time = self._time_ms
        else:
            try:
                block_time = parse_block_time(text, field="@timestamp")
            except ParseError:
                return None
            self._time_text, self._time_ms = text, block_time
        asset = model.parse_plain_asset(fields.quantity)
        if asset is None:
            return None
        block_num = doc.block_num
        return ActionReceived(
            block_num,
            block_id,
            block_time,
            seq,
            _new_tuple(
                Transfer,
                (
                    block_num,
                    block_id,
                    block_time,
                    trx_id,
                    doc.action_ordinal - 1,
                    seq,
                    self.contract,
                    self.action,
                    from_,
                    to,
                    *asset,
                    fields.memo,
                ),
            ),
        )
