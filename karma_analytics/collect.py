"""The command line of the collector: ``python -m karma_analytics.collect`` (or ``karma-collect``).

    python -m karma_analytics.collect --demo
    python -m karma_analytics.collect --source hyperion --network eos --out data/transfers
    python -m karma_analytics.collect --source ship --endpoint ws://node:8080 --stop-block 5000

A thin layer over :mod:`karma_analytics.runner`: it parses flags into a
:class:`~karma_analytics.runner.CollectConfig`, configures logging and the progress display,
installs the signal handlers and maps errors to exit codes (:mod:`karma_analytics.cli`).

Stopping: Ctrl-C or SIGTERM asks the collector to stop: the rows of complete blocks are
committed, the sidecar is written, and the process exits 0 within a few seconds. A second
Ctrl-C exits at once (code 130); that is still safe because every file is replaced atomically
and a restart trusts only the sidecar.

Credentials: an API key comes from ``--api-key`` or the ``DFUSE_API_KEY`` environment
variable. It is never printed, logged, or written to the dataset (the sidecar records the
endpoint without credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from karma_analytics.cli import (
    EXIT_DATASET,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    exit_code_for,
)
from karma_analytics.exceptions import (
    KarmaError,
    RedactFilter,
    UsageError,
    redact,
    register_secret,
)
from karma_analytics.runner import (
    DEFAULT_FLUSH_ROWS,
    DEFAULT_OUT,
    DEMO_OUT,
    CollectConfig,
    Collector,
    CollectorStatus,
    CollectSummary,
    DemoSession,
    demo_session,
    run_collector,
)
from karma_analytics.sources.base import SOURCE_KINDS

__all__ = [
    "EXIT_DATASET",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CollectConfig",
    "CollectSummary",
    "Collector",
    "CollectorStatus",
    "DemoSession",
    "build_parser",
    "config_from_args",
    "demo_session",
    "exit_code_for",
    "main",
    "run_collector",
    "tune_gc",
]

logger = logging.getLogger(__name__)

_CONTRACT, _ACTION = "therealkarma", "transfer"


def _networks(kind: str) -> dict[str, tuple[str, ...]]:
    """The ``--network`` names of a source kind (module attribute ``NETWORKS``)."""
    import importlib

    module = importlib.import_module(f"karma_analytics.sources.{kind}")
    return dict(getattr(module, "NETWORKS", {}))


def infer_source(args: argparse.Namespace) -> str:
    """``--source`` when given; else ``hyperion`` for an http(s) endpoint or a public network
    name, ``dfuse`` otherwise (a ws(s):// endpoint, a retired dfuse name)."""
    if args.source:
        return args.source
    if args.network:
        return "hyperion" if args.network.lower() in _networks("hyperion") else "dfuse"
    first = (args.endpoint or [""])[0].strip().lower()
    return "hyperion" if first.startswith(("http://", "https://")) else "dfuse"


def resolve_network(kind: str, name: str) -> tuple[str, ...]:
    """The endpoints of ``--network NAME`` for a source kind.

    Raises:
        UsageError: an unknown name, or a hosted dfuse name (that service shut down in 2024).
    """
    key = name.strip().lower()
    if kind == "dfuse":
        from karma_analytics.sources.dfuse import RETIRED_NETWORKS
        from karma_analytics.sources.dfuse.protocol import RETIRED_MESSAGE

        if key in RETIRED_NETWORKS:
            raise UsageError(f"--network {name}: {RETIRED_MESSAGE}")
    networks = _networks(kind)
    if key not in networks:
        known = ", ".join(sorted(networks)) or "none"
        raise UsageError(f"--network {name}: not a known {kind} network (known: {known})")
    return networks[key]


# --- CLI -----------------------------------------------------------------------------------

_EPILOG = """exit codes:
  0    done: every block up to --stop-block is committed, or stopped by Ctrl-C/SIGTERM
  1    fatal error (server refused the request or the API key, no endpoint reachable within
       --give-up-after, protocol or storage fault)
  2    usage error
  3    the dataset is locked by another collector
  4    the dataset needs attention (corrupt sidecar, parts without sidecar, collected with
       another contract/action, or on another chain): see the message for what to do
  130  interrupted by a second Ctrl-C (the dataset stays consistent; rerun to resume)

A dataset belongs to a chain: any source or endpoint of the same chain may continue it,
exactly once (the sidecar records which one committed which blocks). The API key can also be
given in the DFUSE_API_KEY environment variable; it is never printed or stored. A rerun on
the same --out resumes exactly where the last commit ended.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m karma_analytics.collect`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m karma_analytics.collect",
        description=(
            "Collect token transfer actions from an Antelope chain (Hyperion, SHiP or dfuse) "
            "into a Parquet dataset, exactly once, resuming from the dataset's cursor sidecar."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--source",
        choices=SOURCE_KINDS,
        help="the protocol (default: hyperion for http(s) endpoints and --network, else dfuse)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--endpoint",
        metavar="URL",
        action="append",
        help="an endpoint of the chain; repeat it to fail over between providers",
    )
    where.add_argument(
        "--network",
        metavar="NAME",
        help="known public endpoints by chain name (Hyperion: eos, wax, telos, jungle4)",
    )
    where.add_argument(
        "--demo",
        action="store_true",
        help=f"run a local devnet in-process and collect a fixed two-day range into {DEMO_OUT}",
    )
    p.add_argument("--api-key", metavar="KEY", help="dfuse API key (default: $DFUSE_API_KEY)")
    p.add_argument("--auth-url", metavar="URL", help="dfuse token issuer (default: by endpoint)")
    p.add_argument("--out", metavar="DIR", help=f"dataset folder (default: {DEFAULT_OUT})")
    p.add_argument(
        "--chain-id",
        metavar="HEX",
        help="the chain the dataset belongs to, for a provider that cannot tell it; checked "
        "against the dataset and every endpoint",
    )
    p.add_argument("--contract", help=f"token contract (default: {_CONTRACT})")
    p.add_argument("--action", help=f"action name (default: {_ACTION})")
    p.add_argument(
        "--start-block",
        type=int,
        metavar="N",
        help="first block of a fresh dataset (0 = head, negative = before head); an existing "
        "dataset always resumes from its sidecar",
    )
    p.add_argument(
        "--stop-block",
        type=int,
        metavar="N",
        help="exit 0 once every block <= N is committed (default: run until stopped)",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="first block of a fresh dataset as a UTC date, datetime or duration back from now "
        "(2026-11-01, 2026-11-01T12:00Z, 30d, 12h); resolved through the chain API (Hyperion)",
    )
    p.add_argument(
        "--until",
        metavar="WHEN",
        help="stop before this UTC date, datetime or duration back from now (exclusive: "
        "--since 2026-11-01 --until 2026-12-01 is November); resolved like --since",
    )
    p.add_argument(
        "--include-reversible",
        action="store_true",
        help="follow the head instead of irreversible blocks: lower latency, but actions of "
        "blocks later forked out can be committed and are never taken back, and a fork that "
        "replaces blocks the stream already passed stops the collector (exit 1, protocol "
        "error) once it repeats at the same restart point",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=4,
        metavar="N",
        help="concurrent requests of a Hyperion backfill (default: %(default)s)",
    )
    p.add_argument(
        "--give-up-after",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="stop (exit 1) when no endpoint could be subscribed to for this long since the "
        "start; once streaming, outages are retried indefinitely (default: %(default)s)",
    )
    p.add_argument(
        "--flush-rows",
        type=int,
        default=DEFAULT_FLUSH_ROWS,
        metavar="N",
        help="commit once N rows of complete blocks are buffered (default: %(default)s)",
    )
    p.add_argument(
        "--flush-seconds",
        type=float,
        default=5.0,
        metavar="S",
        help="commit buffered rows at most S seconds after they arrived (default: %(default)s)",
    )
    p.add_argument(
        "--no-compact",
        action="store_true",
        help="do not merge finished days' parts while collecting (saves memory on very dense "
        "days; run `python -m karma_analytics.dataset compact DIR` later)",
    )
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="restart a stream that sent no data for S seconds (default: %(default)s)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="warnings and the final summary only (no progress bar, no periodic log lines)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: %(default)s; --quiet raises it to WARNING)",
    )
    return p


class _TqdmHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Write log lines above a live tqdm bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def _configure_logging(level: str, *, bar: bool) -> None:
    handler: logging.Handler = _TqdmHandler(sys.stderr) if bar else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # websockets logs frames at DEBUG (the request URL holds the token; the redacting filter
    # covers it, but frame dumps are noise) and every connection at INFO; the in-process
    # devnet of --demo is not what the user runs, so its lines stay out too.
    for name in ("websockets", "aiohttp", "socketio", "engineio", "karma_analytics.devnet"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


_DEMO_REFUSES = {
    "contract": "--contract",
    "action": "--action",
    "start_block": "--start-block",
    "include_reversible": "--include-reversible",
    "api_key": "--api-key",
    "auth_url": "--auth-url",
    "chain_id": "--chain-id",
    "source": "--source",
    "since": "--since",
    "until": "--until",
}


def _check_demo_args(args: argparse.Namespace) -> None:
    """--demo collects a fixed range of the local chain: refuse what it would ignore."""
    given = [
        flag for name, flag in _DEMO_REFUSES.items() if getattr(args, name) not in (None, False)
    ]
    if given:
        raise UsageError(
            f"--demo collects a fixed range of the built-in local chain and does not take "
            f"{', '.join(given)}; drop {'it' if len(given) == 1 else 'them'}, or collect from "
            "a real endpoint with --endpoint/--network"
        )


def config_from_args(
    args: argparse.Namespace, *, environ: dict[str, str] | None = None
) -> CollectConfig:
    """Build a :class:`CollectConfig` from parsed CLI arguments (``--demo`` excluded)."""
    environ = dict(os.environ) if environ is None else environ
    source = infer_source(args)
    if args.network:
        endpoints = resolve_network(source, args.network)
    elif args.endpoint:
        endpoints = tuple(args.endpoint)
    else:
        raise UsageError("no endpoint: pass --endpoint URL, --network NAME or --demo")
    api_key = args.api_key or environ.get("DFUSE_API_KEY") or None
    return CollectConfig(
        source=source,
        endpoints=endpoints,
        out=args.out or DEFAULT_OUT,
        chain_id=args.chain_id,
        give_up_after=args.give_up_after if args.give_up_after > 0 else None,
        api_key=api_key if source == "dfuse" else None,
        auth_url=args.auth_url,
        contract=args.contract or _CONTRACT,
        action=args.action or _ACTION,
        start_block=args.start_block or 0,
        stop_block=args.stop_block,
        since=args.since,
        until=args.until,
        irreversible_only=not args.include_reversible,
        flush_rows=args.flush_rows,
        flush_seconds=args.flush_seconds,
        stall_seconds=args.stall_seconds,
        compact=not args.no_compact,
        workers=args.workers,
    )


def _make_display(quiet: bool) -> Any:
    from karma_analytics.progress import BarDisplay, LogDisplay

    if quiet:
        return None
    if not sys.stderr.isatty():
        return LogDisplay(10.0)
    return BarDisplay(file=sys.stderr)


async def _main_async(config: CollectConfig, *, display: Any, summary_top: int) -> CollectSummary:
    collector = Collector(config, display=display, summary_top=summary_top)
    loop = asyncio.get_running_loop()
    hits = 0

    def on_signal(signum: int) -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            logger.warning(
                "%s: committing complete blocks and stopping (press Ctrl-C again to exit at"
                " once; the dataset stays consistent)",
                signal.Signals(signum).name,
            )
            collector.request_stop()
        else:
            sys.stderr.write("interrupted: exiting now (rerun to resume)\n")
            sys.stderr.flush()
            # The sidecar and the parts are only ever replaced atomically, and the OS drops
            # the flock with the process, so leaving without cleanup is safe (DESIGN.md).
            os._exit(EXIT_INTERRUPTED)

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    try:
        return await collector.run()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a streaming process.

    The hot path allocates hundreds of thousands of short-lived, acyclic objects per second
    (decoded frames, events, rows); with the default threshold (700) a collection runs every
    few frames and each older-generation pass walks every buffered row. Refcounting frees
    them anyway, so collections are made rarer and the objects alive after start-up (modules,
    classes) are frozen out of them. Called by the CLI only: a library call never changes
    process-wide settings.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def tune_memory() -> None:
    """Use the system allocator for Arrow buffers in a long-running collector process.

    pyarrow's default pool (mimalloc) keeps freed pages for reuse, so the footprint of a
    collector that commits and compacts for days grows towards its worst moment; the system
    allocator hands large buffers back at once. bench/bench_memory.py measures the effect.
    Called by the CLI only, like :func:`tune_gc`, before anything imports pyarrow: Arrow's C++
    code (the Parquet reader and writer among it) allocates from the pool chosen when libarrow
    loads, from ``ARROW_DEFAULT_MEMORY_POOL``; ``pa.set_memory_pool`` alone only moves
    pyarrow's own calls (measured: merging a day of 61 parts then peaked 60 MB higher, in
    mimalloc). An explicit ``ARROW_DEFAULT_MEMORY_POOL`` in the environment is respected.
    """
    _fix_malloc_mmap_threshold()
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    if "pyarrow" in sys.modules:  # too late for libarrow's default: move pyarrow's at least
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())


@contextlib.contextmanager
def pandas_kept_out() -> Iterator[bool]:
    """Run the block with ``import pandas`` failing, unless pandas is loaded already.

    The collector is pyarrow-only (see runner.dataset_facts), but pyarrow imports pandas, if
    installed, the first time it converts Python objects, to ask whether they are pandas
    objects: in a collection that cost ~0.1 s of start-up and ~35 MB of RSS for nothing
    (bench/RESULTS.md). pyarrow works without pandas, and treats a failed import as "not
    installed". Afterwards ``import pandas`` works again, and pyarrow imports it when a call
    needs it (``Table.to_pandas``). Used by the CLI only. Yields whether pandas was kept out.
    """
    if "pandas" in sys.modules:
        yield False
        return
    sys.meta_path.insert(0, _NoPandas)
    try:
        yield True
    finally:
        sys.meta_path.remove(_NoPandas)


class _NoPandas:
    """A meta path finder under which ``import pandas`` fails (see :func:`pandas_kept_out`)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is not used by the collector", name=name)


def _fix_malloc_mmap_threshold(threshold: int = 512 * 1024) -> bool:
    """Keep glibc's malloc serving blocks of ``threshold`` bytes and more with mmap.

    glibc raises its mmap threshold each time a mapped block is freed (up to 32 MB), after
    which Arrow's buffers come from the heap and stay there, fragmented, when freed: merging
    a day of parts then peaked ~20 MB higher and kept ~30 MB, and a 5 M-row Hyperion backfill
    peaked 268 MB instead of 214 (bench/RESULTS.md). A fixed threshold (what
    ``MALLOC_MMAP_THRESHOLD_`` does) gives large blocks back at once. It sits above 256 KB,
    asyncio's socket read size: each read is a fresh block of that size, and mapping one per
    read (glibc's initial 128 KB) cost a Hyperion backfill ~6 % of its time in page faults.
    Returns whether it was applied (only on glibc; the environment variable, if set, wins).
    """
    if sys.platform != "linux" or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    m_mmap_threshold = -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, threshold))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    bar = not args.quiet and sys.stderr.isatty()
    _configure_logging("WARNING" if args.quiet else args.log_level, bar=bar)
    tune_gc()
    tune_memory()
    with pandas_kept_out():
        return _run(args, parser)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        if args.demo:
            _check_demo_args(args)
            with demo_session(out=args.out, stop_block=args.stop_block) as demo:
                config = demo.config(
                    flush_rows=args.flush_rows,
                    flush_seconds=args.flush_seconds,
                    stall_seconds=args.stall_seconds,
                    compact=not args.no_compact,
                )
                summary = asyncio.run(
                    _main_async(config, display=_make_display(args.quiet), summary_top=5)
                )
        else:
            config = config_from_args(args)
            register_secret(config.api_key)
            summary = asyncio.run(
                _main_async(config, display=_make_display(args.quiet), summary_top=0)
            )
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KarmaError as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt:
        print("interrupted (rerun to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary)
    return EXIT_OK


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: one set of classes and the
    # logger named karma_analytics.collect, whichever way the CLI was started.
    from karma_analytics.collect import main as _main

    sys.exit(_main())
