"""Command line of the devnet: ``serve`` a dfuse-style server, print the ``truth``.

    python -m karma_analytics.devnet serve [--port 0] [--seed 7] [--head N] ...
    python -m karma_analytics.devnet truth --seed 7 --from 1 --to 200000

``serve`` prints the ``ws://`` URL as the first line of stdout (flushed) once it accepts
connections, and the auth URL as the second line when ``--api-key`` (or the environment
variable ``KARMA_DEVNET_API_KEY``) is set; it runs until SIGINT/SIGTERM and exits 0.
``truth`` prints one JSON object per line (``model.transfer_to_json``): exactly the records a
correct collector commits for the block range, in global_sequence order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from ..exceptions import KarmaError
from ..model import transfer_to_json
from .chain import DEFAULT_GENESIS_MS, DEFAULT_TRANSFERS_PER_BLOCK, Chain
from .server import DEFAULT_HEAD, DevnetOptions, DevnetServer

__all__ = ["main"]

API_KEY_ENV = "KARMA_DEVNET_API_KEY"


def _chain_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=7, help="chain seed (default 7)")
    parser.add_argument(
        "--transfers-per-block", type=float, default=DEFAULT_TRANSFERS_PER_BLOCK,
        help=f"mean KARMA transfers per block (default {DEFAULT_TRANSFERS_PER_BLOCK})",
    )  # fmt: skip
    parser.add_argument(
        "--genesis-ms", type=int, default=DEFAULT_GENESIS_MS,
        help="time of block 0, ms since the epoch (default 2026-11-26T20:00:00Z)",
    )  # fmt: skip
    parser.add_argument("--accounts", type=int, default=3000, help="user accounts (default 3000)")
    parser.add_argument(
        "--missed-slot-rate", type=float, default=0.0,
        help="mean missed 0.5 s slots per block: block times with gaps (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--twin-rate", type=float, default=0.0,
        help="P that a user transfer is sent twice in one transaction (identical actions, "
        "what Hyperion <= 4.0.3 collapses; default 0)",
    )  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m karma_analytics.devnet",
        description="Local deterministic chain with a dfuse WebSocket Stream API server.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server until SIGINT/SIGTERM")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    _chain_flags(serve)
    serve.add_argument("--head", type=int, default=DEFAULT_HEAD, help="head block at start")
    serve.add_argument(
        "--block-interval", type=float, default=0.5,
        help="seconds per new head block; 0 freezes the head (default 0.5)",
    )  # fmt: skip
    serve.add_argument("--lib-lag", type=int, default=2, help="LIB = head - N (default 2)")
    serve.add_argument("--cache-blocks", type=int, default=4096, help="LRU of generated blocks")
    serve.add_argument(
        "--frame-cache-mb", type=float, default=128.0,
        help="LRU of rendered frame texts, MB (default 128: the whole demo range)",
    )  # fmt: skip
    serve.add_argument("--fork-every", type=int, default=0, help="fork at multiples of N")
    serve.add_argument("--fork-depth", type=int, default=2, help="blocks replaced per fork")
    serve.add_argument(
        "--api-key", default=None,
        help=f"require tokens issued for this key (or set {API_KEY_ENV})",
    )  # fmt: skip
    serve.add_argument("--token-ttl", type=float, default=86_400.0, help="token lifetime, s")
    serve.add_argument("--ping-interval", type=float, default=10.0, help="seconds (default 10)")
    serve.add_argument("--progress-throttle", type=float, default=0.25, help="seconds")
    serve.add_argument("--max-streams", type=int, default=12, help="per connection (+1 fits)")
    serve.add_argument("--compression", choices=("deflate", "none"), default="deflate")
    serve.add_argument("--batch-frames", type=int, default=32, help="frames per send batch")
    faults = serve.add_argument_group("fault injection (seeded by --fault-seed)")
    faults.add_argument("--drop-every", type=int, default=0, help="drop TCP after N frames")
    faults.add_argument("--drop-rate", type=float, default=0.0, help="drop with P per frame")
    faults.add_argument(
        "--close-code", type=int, default=None,
        help="with --drop-*: close with this code (1000/1009) instead of dropping",
    )  # fmt: skip
    faults.add_argument("--refuse-handshakes", type=int, default=0, help="503 the first N")
    faults.add_argument("--accept-then-drop", type=int, default=0, help="drop first N at once")
    faults.add_argument("--stall-after", type=int, default=0, help="stream silent after N")
    faults.add_argument("--malformed-rate", type=float, default=0.0, help="P per action_trace")
    faults.add_argument("--malformed-kind", choices=("mixed", "json", "field"), default="mixed")
    faults.add_argument("--history-limit", type=int, default=None, help="blocks behind head")
    faults.add_argument("--fault-seed", type=int, default=0)
    serve.add_argument(
        "--chain-id", default=None, help="64 hex digits (default: the devnet's own chain id)"
    )
    serve.add_argument("--log-level", default="WARNING")
    serve.add_argument(
        "--protocol", choices=("dfuse", "hyperion", "ship"), default="dfuse",
        help="API to serve the chain as (default dfuse)",
    )  # fmt: skip
    from .hyperion_cli import add_arguments as hyperion_arguments

    hyperion_arguments(serve)
    from .ship import add_arguments as ship_arguments

    ship_arguments(serve)

    truth = sub.add_parser("truth", help="print the expected transfers as JSON lines")
    _chain_flags(truth)
    truth.add_argument("--from", dest="first", type=int, required=True, help="first block")
    truth.add_argument("--to", dest="last", type=int, required=True, help="last block (incl.)")
    truth.add_argument("--contract", default="therealkarma")
    truth.add_argument("--action", default="transfer")
    return parser


def _options(args: argparse.Namespace) -> DevnetOptions:
    return DevnetOptions(
        host=args.host,
        port=args.port,
        seed=args.seed,
        head=args.head,
        block_interval=args.block_interval,
        lib_lag=args.lib_lag,
        transfers_per_block=args.transfers_per_block,
        genesis_ms=args.genesis_ms,
        missed_slot_rate=args.missed_slot_rate,
        twin_rate=args.twin_rate,
        accounts=args.accounts,
        cache_blocks=args.cache_blocks,
        frame_cache_mb=args.frame_cache_mb,
        fork_every=args.fork_every,
        fork_depth=args.fork_depth,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        token_ttl=args.token_ttl,
        ping_interval=args.ping_interval,
        progress_throttle=args.progress_throttle,
        max_streams=args.max_streams,
        compression=None if args.compression == "none" else "deflate",
        batch_frames=args.batch_frames,
        drop_every=args.drop_every,
        drop_rate=args.drop_rate,
        close_code=args.close_code,
        refuse_handshakes=args.refuse_handshakes,
        accept_then_drop=args.accept_then_drop,
        stall_after=args.stall_after,
        malformed_rate=args.malformed_rate,
        malformed_kind=args.malformed_kind,
        history_limit=args.history_limit,
        fault_seed=args.fault_seed,
        **({"chain_id": args.chain_id.lower()} if args.chain_id else {}),
    )


async def _serve(server: DevnetServer | Any) -> None:
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    print(server.url, flush=True)
    if getattr(server, "auth_url", None):
        print(server.auth_url, flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            logging.basicConfig(
                level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
            )
            if args.protocol == "ship":
                from .ship import server_from_args as ship_server_from_args

                asyncio.run(_serve(ship_server_from_args(args)))
            elif args.protocol == "hyperion":
                from .hyperion_cli import server_from_args

                server = server_from_args(args)
                if server.options.twin_rate != args.twin_rate:
                    # hyperion_cli's shared flags do not carry --twin-rate: rebuild with it
                    # (nothing is started yet; the constructor only builds the chain).
                    server = type(server)(server.options, twin_rate=args.twin_rate)
                asyncio.run(_serve(server))
            else:
                asyncio.run(_serve(DevnetServer(_options(args))))
            return 0
        chain = Chain(
            seed=args.seed,
            transfers_per_block=args.transfers_per_block,
            genesis_ms=args.genesis_ms,
            accounts=args.accounts,
            missed_slot_rate=args.missed_slot_rate,
            twin_rate=args.twin_rate,
        )
        out = sys.stdout
        for transfer in chain.truth(
            args.first, args.last, contract=args.contract, action=args.action
        ):
            out.write(json.dumps(transfer_to_json(transfer), ensure_ascii=False) + "\n")
        out.flush()
        return 0
    except KarmaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
