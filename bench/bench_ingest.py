"""Benchmark 1: end-to-end ingest, devnet -> committed Parquet, vs a bare websockets client.

A devnet server runs in its own process (``python -m karma_analytics.devnet serve``), its head
frozen a little beyond the measured range. Then, alternating, several times each:

* **bare** — a plain ``websockets`` client sends the collector's exact request and receives
  frames (``recv(decode=False)``, a byte-prefix test per frame, nothing else) until it has the
  range's last action trace;
* **source** — the collector's :class:`DfuseSource` alone (frames decoded into engine events,
  no engine, no store), for the breakdown;
* **collector** — the real :class:`karma_analytics.collect.Collector` (source, engine, store)
  collects the same range into a fresh folder until the sidecar says every block of the range
  is committed.

Both run in this process, one at a time, with the server on the other core. Prints the medians
and the ratio ``bare_seconds / collector_seconds`` (target >= 0.8), and the median of the
per-run ratios. One warm-up round (bare and collector) runs first and is not counted.

    python bench/bench_ingest.py [--transfers 200000] [--per-block 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import connect

from karma_analytics.collect import DEFAULT_FLUSH_ROWS, CollectConfig, Collector
from karma_analytics.devnet.chain import CONTRACT, Chain
from karma_analytics.sources.dfuse import DfuseSource


def plan(transfers: int, per_block: float, seed: int) -> tuple[int, int]:
    """The last block holding ``transfers`` transfers from block 1, and its action traces."""
    chain = Chain(seed=seed, transfers_per_block=per_block, cache_blocks=1)
    count = traces = 0
    num = 0
    while count < transfers:
        num += 1
        for trx in chain.generate(num).transactions:
            if trx.status != "executed":
                continue
            for trace in trx.traces:
                act = trace.act
                if (
                    trace.receiver == CONTRACT
                    and act.account == CONTRACT
                    and act.name == "transfer"
                ):
                    traces += 1
                    if act.asset is not None and "from" in act.data:
                        count += 1
    return num, traces


async def bare(url: str, request: dict, traces: int) -> tuple[float, int]:
    began = time.perf_counter()
    frames = 0
    seen = 0
    # max_queue=None: with websockets' default flow control (max_queue=16) a consumer this
    # fast stalls ~50 ms per server batch here, both processes idle (measured: 10.5 s instead
    # of 1.9 s for 50,000 frames); an unbounded queue is the bare client's best setting.
    async with connect(
        url, max_size=2**24, max_queue=None, compression=None, ping_interval=None
    ) as ws:
        await ws.send(json.dumps(request, separators=(",", ":")))
        while seen < traces:
            frame = await ws.recv(decode=False)
            frames += 1
            if frame.startswith(b'{"type":"action_trace"'):
                seen += 1
    return time.perf_counter() - began, frames


async def source_only(url: str, last: int) -> tuple[float, int]:
    began = time.perf_counter()
    events = 0
    source = DfuseSource(url)
    stream = source.stream(1)
    try:
        async for batch in stream:
            events += len(batch)
            if getattr(batch[-1], "block_num", 0) > last:
                break
    finally:
        await stream.aclose()
        await source.aclose()
    return time.perf_counter() - began, events


def collector(url: str, last: int, flush_rows: int) -> tuple[float, int]:
    folder = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        config = CollectConfig(
            endpoint=url,
            out=folder / "transfers",
            start_block=1,
            stop_block=last,
            flush_rows=flush_rows,
        )
        began = time.perf_counter()
        summary = asyncio.run(Collector(config).run())
        return time.perf_counter() - began, summary.rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=200_000)
    parser.add_argument("--per-block", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--flush-rows",
        type=int,
        default=DEFAULT_FLUSH_ROWS,
        help="rows per commit (the CLI's default)",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    last, traces = plan(args.transfers, args.per_block, args.seed)
    # LIB a few hundred blocks past the range: the collector needs a later block to prove
    # the range's last block complete (dfuse §4.2/§4.3).
    head = last + 300
    server = subprocess.Popen(
        [sys.executable, "-m", "karma_analytics.devnet", "serve", "--seed", str(args.seed),
         "--transfers-per-block", str(args.per_block), "--head", str(head),
         "--block-interval", "0", "--compression", "none", "--cache-blocks", "64"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        print(
            f"devnet {url}: blocks 1..{last:,} hold {args.transfers:,} transfers "
            f"({traces:,} action traces)"
        )
        request = DfuseSource(url).request(1)
        # Warm-up, not counted: imports (pyarrow.parquet, the store) and first connections.
        asyncio.run(bare(url, request, traces))
        collector(url, last, args.flush_rows)
        bare_times, source_times, coll_times = [], [], []
        for run in range(args.runs):
            b, frames = asyncio.run(bare(url, request, traces))
            s, _ = asyncio.run(source_only(url, last))
            c, rows = collector(url, last, args.flush_rows)
            bare_times.append(b)
            source_times.append(s)
            coll_times.append(c)
            print(
                f"run {run + 1}: bare {b:.2f} s ({frames:,} frames), source only {s:.2f} s, "
                f"collector {c:.2f} s ({rows:,} rows committed)"
            )
        b = statistics.median(bare_times)
        s = statistics.median(source_times)
        c = statistics.median(coll_times)
        print(
            f"median bare websockets: {b:.2f} s = {traces / b:,.0f} action traces/s\n"
            f"median source only:     {s:.2f} s = {traces / s:,.0f} events/s\n"
            f"median collector:       {c:.2f} s = {rows / c:,.0f} rows/s committed\n"
            f"ratio (bare time / collector time): {b / c:.2f}  (target >= 0.8)\n"
            f"median of the per-run ratios:       "
            f"{statistics.median(x / y for x, y in zip(bare_times, coll_times, strict=True)):.2f}\n"
            f"ratio (source-only time / collector time): {s / c:.2f}"
        )
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
