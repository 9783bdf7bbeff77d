"""Command-line flags of the devnet Hyperion (``serve --protocol hyperion``).

Kept apart from ``hyperion.py`` so that building the devnet's argument parser does not import
aiohttp and python-socketio.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .hyperion_docs import DATA_BUGS
from .hyperion_query import VERSIONS

if TYPE_CHECKING:
    from .hyperion import HyperionServer

__all__ = ["add_arguments", "server_from_args"]

# Flags of the ``serve`` parser that the Hyperion server reads as they are (chain and clock).
_SHARED = ("host", "port", "seed", "head", "block_interval", "lib_lag", "transfers_per_block",
           "genesis_ms", "accounts", "cache_blocks", "fault_seed", "chain_id",
           "missed_slot_rate", "latency_ms")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the Hyperion flags to the ``serve`` parser.

    Flags the parser already has (``--seed``, ``--head``, ``--port`` ..., or one another
    protocol added first, such as ``--latency-ms``) are shared, not redefined.
    """
    existing = set(parser._option_string_actions)  # argparse keeps no public view of these
    group = parser.add_argument_group("hyperion (with --protocol hyperion)")

    def add(flag: str, **kwargs: Any) -> None:
        if flag not in existing:
            group.add_argument(flag, **kwargs)

    add("--hyperion-version", choices=tuple(VERSIONS), default="4.0.7",
        help="server version to imitate (default 4.0.7)")  # fmt: skip
    add("--max-limit", type=int, default=1000, help="limits.get_actions (default 1000)")
    add("--missed-slot-rate", type=float, default=0.0,
        help="mean missed 0.5 s slots per block: block times with gaps (default 0)")  # fmt: skip
    add("--chain-id", default=None, help="64 hex (default: the devnet's chain id)")
    add("--cache-life", type=float, default=1.0,
        help="response cache seconds, 0 = off (default 1, as the reference config)")  # fmt: skip
    add("--index-lag", type=int, default=0, help="last N blocks partly unsearchable")
    add("--latency-ms", type=float, default=0.0, help="added to every HTTP request")
    add("--rate-limit", type=int, default=None, help="requests per minute per client IP")
    add("--error-rate", type=float, default=0.0, help="P of a 5xx (JSON or HTML) per request")
    add("--short-page-rate", type=float, default=0.0, help="P of a page cut short")
    add("--data-bug", choices=DATA_BUGS, default="none",
        help="collapse-identical (<=4.0.3) or fragment-notifications (4.0.4)")  # fmt: skip
    add("--stream-never-ack", action="store_true", help="never answer stream requests")
    add("--stream-relay-down-after", type=int, default=None,
        help="status relay_down after every N live blocks")  # fmt: skip


def server_from_args(args: argparse.Namespace) -> HyperionServer:
    """A :class:`~karma_analytics.devnet.hyperion.HyperionServer` from parsed ``serve``
    arguments (absent or None values keep the server's defaults)."""
    from .hyperion import HyperionServer

    options: dict[str, Any] = {}
    for name in _SHARED:
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value.lower() if name == "chain_id" else value
    return HyperionServer(
        **options,
        hyperion_version=args.hyperion_version,
        max_limit=args.max_limit,
        cache_life=args.cache_life,
        index_lag=args.index_lag,
        rate_limit=args.rate_limit,
        error_rate=args.error_rate,
        short_page_rate=args.short_page_rate,
        data_bug=args.data_bug,
        stream_never_ack=args.stream_never_ack,
        stream_relay_down_after=args.stream_relay_down_after,
    )
