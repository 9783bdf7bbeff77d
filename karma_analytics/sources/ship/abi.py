"""The ABI text a SHiP node sends first: parse it, check it against our readers (pure).

The node writes its protocol ABI as the first (text) WebSocket message (ship.md §1.2). Decoding
is driven by it where that is cheap: every variant's member names come from here, so an index
means whatever the node says it means. The struct readers in :mod:`.codec` are hand-written for
the Spring/Leap layouts (ship.md §1.3, §1.6); :meth:`ShipAbi.check` compares the field lists of
every struct they read with the node's, and refuses a differing ABI loudly (fatal: an older
EOSIO 2.1 node uses the same names for other layouts, ship.md §1.3, "never hard-code v1").

The ``tables`` section is ignored: 16 of its 19 names are not valid Antelope names (ship.md
§1.1), which a generic ABI library would refuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from karma_analytics.exceptions import ProtocolError

__all__ = ["EXPECTED_STRUCTS", "ShipAbi", "parse_abi"]

# What the readers in codec.py implement, field by field (name, type), in wire order.
EXPECTED_STRUCTS: dict[str, tuple[tuple[str, str], ...]] = {
    "block_position": (("block_num", "uint32"), ("block_id", "checksum256")),
    "get_blocks_request_v0": (
        ("start_block_num", "uint32"), ("end_block_num", "uint32"),
        ("max_messages_in_flight", "uint32"), ("have_positions", "block_position[]"),
        ("irreversible_only", "bool"), ("fetch_block", "bool"), ("fetch_traces", "bool"),
        ("fetch_deltas", "bool"),
    ),
    "get_blocks_ack_request_v0": (("num_messages", "uint32"),),
    "get_status_result_v0": (
        ("head", "block_position"), ("last_irreversible", "block_position"),
        ("trace_begin_block", "uint32"), ("trace_end_block", "uint32"),
        ("chain_state_begin_block", "uint32"), ("chain_state_end_block", "uint32"),
        ("chain_id", "checksum256$"),
    ),
    "get_blocks_result_v0": (
        ("head", "block_position"), ("last_irreversible", "block_position"),
        ("this_block", "block_position?"), ("prev_block", "block_position?"),
        ("block", "bytes?"), ("traces", "bytes?"), ("deltas", "bytes?"),
    ),
    "transaction_trace_v0": (
        ("id", "checksum256"), ("status", "uint8"), ("cpu_usage_us", "uint32"),
        ("net_usage_words", "varuint32"), ("elapsed", "int64"), ("net_usage", "uint64"),
        ("scheduled", "bool"), ("action_traces", "action_trace[]"),
        ("account_ram_delta", "account_delta?"), ("except", "string?"),
        ("error_code", "uint64?"), ("failed_dtrx_trace", "transaction_trace?"),
        ("partial", "partial_transaction?"),
    ),
    "action_trace_v0": (
        ("action_ordinal", "varuint32"), ("creator_action_ordinal", "varuint32"),
        ("receipt", "action_receipt?"), ("receiver", "name"), ("act", "action"),
        ("context_free", "bool"), ("elapsed", "int64"), ("console", "string"),
        ("account_ram_deltas", "account_delta[]"), ("except", "string?"),
        ("error_code", "uint64?"),
    ),
    "action_receipt_v0": (
        ("receiver", "name"), ("act_digest", "checksum256"), ("global_sequence", "uint64"),
        ("recv_sequence", "uint64"), ("auth_sequence", "account_auth_sequence[]"),
        ("code_sequence", "varuint32"), ("abi_sequence", "varuint32"),
    ),
    "action": (
        ("account", "name"), ("name", "name"), ("authorization", "permission_level[]"),
        ("data", "bytes"),
    ),
    "permission_level": (("actor", "name"), ("permission", "name")),
    "account_auth_sequence": (("account", "name"), ("sequence", "uint64")),
    "account_delta": (("account", "name"), ("delta", "int64")),
    "partial_transaction_v0": (
        ("expiration", "time_point_sec"), ("ref_block_num", "uint16"),
        ("ref_block_prefix", "uint32"), ("max_net_usage_words", "varuint32"),
        ("max_cpu_usage_ms", "uint8"), ("delay_sec", "varuint32"),
        ("transaction_extensions", "extension[]"), ("signatures", "signature[]"),
        ("context_free_data", "bytes[]"),
    ),
    "extension": (("type", "uint16"), ("data", "bytes")),
}  # fmt: skip

# Structs read only if the node lists them (Spring >= 1.0 adds them; Leap 5 has action_trace_v1
# but no v1 requests, ship.md §1.5).
OPTIONAL_STRUCTS: dict[str, tuple[tuple[str, str], ...]] = {
    "action_trace_v1": (*EXPECTED_STRUCTS["action_trace_v0"], ("return_value", "bytes")),
    "get_blocks_request_v1": (
        *EXPECTED_STRUCTS["get_blocks_request_v0"], ("fetch_finality_data", "bool"),
    ),
    "get_blocks_result_v1": (
        *EXPECTED_STRUCTS["get_blocks_result_v0"], ("finality_data", "bytes?"),
    ),
    "get_status_result_v1": (
        *EXPECTED_STRUCTS["get_status_result_v0"][:6], ("chain_id", "checksum256"),
        ("finality_data_begin_block", "uint32"), ("finality_data_end_block", "uint32"),
    ),
}  # fmt: skip

# Variants whose members must be among the structs we can read; members we cannot read are
# allowed as long as the node never sends them to us (requests we never make, result types
# answering them), so they are checked when a message arrives, not here.
_VARIANTS = ("request", "result", "transaction_trace", "action_trace", "action_receipt",
             "partial_transaction")  # fmt: skip


def _incompatible(message: str) -> ProtocolError:
    return ProtocolError(
        f"the node's SHiP ABI is not one this collector reads: {message}. Supported: the "
        "Spring 1.x / Leap 3-5 layouts (ship.md §1.3, §1.5); upgrade the collector or use "
        "another source",
        fatal=True,
    )


@dataclass(frozen=True)
class ShipAbi:
    """The parts of a node's SHiP ABI the decoder uses.

    Attributes:
        version: e.g. ``"eosio::abi/1.1"``.
        structs: struct name -> ``((field, type), ...)`` in wire order (``base`` expanded).
        variants: variant name -> member type names in index order.
        aliases: ``types`` section (new type name -> type).
        text: the ABI text as received.
    """

    version: str
    structs: dict[str, tuple[tuple[str, str], ...]]
    variants: dict[str, tuple[str, ...]]
    aliases: dict[str, str]
    text: str

    def variant(self, name: str) -> tuple[str, ...]:
        """The member names of a variant, by index.

        Raises:
            ProtocolError: (fatal) the ABI has no such variant.
        """
        try:
            return self.variants[name]
        except KeyError:
            raise _incompatible(f"no variant {name!r}") from None

    def check(self) -> ShipAbi:
        """Compare the field lists of every struct the readers use; return ``self``.

        Raises:
            ProtocolError: (fatal) a struct is missing or its fields differ, naming both lists.
        """
        for name in _VARIANTS:
            self.variant(name)
        for name, expected in EXPECTED_STRUCTS.items():
            self._compare(name, expected, required=True)
        for name, expected in OPTIONAL_STRUCTS.items():
            self._compare(name, expected, required=False)
        if "action_trace_v0" not in self.variant("action_trace"):
            raise _incompatible("variant action_trace lacks action_trace_v0")
        for name in ("get_status_request_v0", "get_blocks_request_v0",
                     "get_blocks_ack_request_v0"):  # fmt: skip
            if name not in self.variant("request"):
                raise _incompatible(f"variant request lacks {name}")
        return self

    def _compare(self, name: str, expected: tuple[tuple[str, str], ...], *, required: bool) -> None:
        got = self.structs.get(name)
        if got is None:
            if required:
                raise _incompatible(f"struct {name!r} is missing")
            return
        resolved = tuple((field, self._resolve(kind)) for field, kind in got)
        if resolved != expected:
            raise _incompatible(
                f"struct {name!r} has fields {_show(resolved)}, expected {_show(expected)}"
            )

    def _resolve(self, kind: str) -> str:
        """Resolve a ``types`` alias, keeping the ``?``/``[]``/``$`` suffix."""
        suffix = ""
        while kind.endswith(("?", "$", "[]")):
            cut = 2 if kind.endswith("[]") else 1
            suffix = kind[-cut:] + suffix
            kind = kind[:-cut]
        seen = 0
        while kind in self.aliases and seen < 32:
            kind = self.aliases[kind]
            seen += 1
        return kind + suffix


def _show(fields: tuple[tuple[str, str], ...]) -> str:
    return "(" + ", ".join(f"{f} {t}" for f, t in fields) + ")"


def parse_abi(text: str | bytes) -> ShipAbi:
    """Parse the node's ABI text (the first WebSocket message).

    Raises:
        ProtocolError: (fatal) not JSON or not an ABI with structs and variants.
    """
    try:
        data: Any = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(
            f"the node's first message is not the SHiP ABI JSON ({exc}); is the endpoint a "
            "state_history_plugin port (state-history-endpoint)?",
            fatal=True,
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("structs"), list):
        raise _incompatible("the first message is JSON but has no 'structs' list")
    raw_structs: dict[str, dict[str, Any]] = {}
    try:
        for struct in data["structs"]:
            raw_structs[str(struct["name"])] = struct
        variants = {
            str(v["name"]): tuple(str(t) for t in v["types"]) for v in data.get("variants", [])
        }
        aliases = {str(t["new_type_name"]): str(t["type"]) for t in data.get("types", [])}

        def fields(name: str, depth: int = 0) -> tuple[tuple[str, str], ...]:
            struct = raw_structs[name]
            base = struct.get("base") or ""
            inherited = fields(base, depth + 1) if base and depth < 16 else ()
            own = tuple((str(f["name"]), str(f["type"])) for f in struct.get("fields", []))
            return inherited + own

        structs = {name: fields(name) for name in raw_structs}
    except (KeyError, TypeError) as exc:
        raise _incompatible(f"malformed ABI JSON ({type(exc).__name__}: {exc})") from None
    return ShipAbi(
        version=str(data.get("version", "")),
        structs=structs,
        variants=variants,
        aliases=aliases,
        text=text if isinstance(text, str) else text.decode("utf-8", "replace"),
    )
