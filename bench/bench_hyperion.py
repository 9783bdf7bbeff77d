"""Hyperion source benchmarks (issue 9, parts 1-2) against the devnet Hyperion.

1. Backfill with ``--latency-ms 100`` and pages of 1,000: workers 8 vs workers 1 vs the ideal
   ``workers x page / latency``.
2. No latency: the source's rate vs a bare client that fetches the same pages with the same
   HTTP library (aiohttp) and only decodes the JSON; plus aiohttp vs httpx on the same pages
   (httpx only if installed: ``pip install httpx`` into the venv; not a dependency).

Run: ``python bench/bench_hyperion.py [--transfers N] [--quick]``. The devnet server runs in a
thread of its own (its own event loop) so that its CPU does not share the client's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import msgspec

from karma_analytics.engine import ActionReceived
from karma_analytics.sources.base import Selection, SourceSettings
from karma_analytics.sources.hyperion import HyperionSource
from karma_analytics.sources.hyperion.rest import MAX_SEQUENCE

DENSITY = 40.0  # transfers per block: 1M transfers in ~25k blocks


async def run_source(url: str, first: int, last: int, workers: int) -> tuple[int, float, Any]:
    source = HyperionSource.create(
        url,
        Selection(),
        stop_block=last,
        settings=SourceSettings(workers=workers, page_size=1000, request_timeout=60),
    )
    rows = 0
    t0 = time.perf_counter()
    stream = source.stream(first)
    try:
        async for batch in stream:
            for event in batch:
                if isinstance(event, ActionReceived):
                    rows += 1
            if getattr(batch[-1], "block_num", 0) >= last:
                break
    finally:
        await stream.aclose()
        await source.aclose()
    return rows, time.perf_counter() - t0, source.stats


async def bare_aiohttp(url: str, first: int, last: int, window: int) -> tuple[int, float]:
    import aiohttp

    decoder = msgspec.json.Decoder()
    rows = 0
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        lo = first
        while lo <= last:
            hi = min(last, lo + window - 1)
            cursor = 0
            while True:
                params = {
                    "filter": "therealkarma:transfer", "sort": "asc", "after": lo, "before": hi,
                    "global_sequence": f"{cursor + 1}-{MAX_SEQUENCE}", "limit": 1000,
                }  # fmt: skip
                async with session.get(url + "/v2/history/get_actions", params=params) as r:
                    docs = decoder.decode(await r.read())["actions"]
                if not docs:
                    break
                rows += len(docs)
                cursor = docs[-1]["global_sequence"]
            lo = hi + 1
    return rows, time.perf_counter() - t0


async def bare_httpx(url: str, first: int, last: int, window: int) -> tuple[int, float] | None:
    try:
        import httpx
    except ImportError:
        return None
    decoder = msgspec.json.Decoder()
    rows = 0
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:
        lo = first
        while lo <= last:
            hi = min(last, lo + window - 1)
            cursor = 0
            while True:
                params = {
                    "filter": "therealkarma:transfer", "sort": "asc", "after": lo, "before": hi,
                    "global_sequence": f"{cursor + 1}-{MAX_SEQUENCE}", "limit": 1000,
                }  # fmt: skip
                r = await client.get(url + "/v2/history/get_actions", params=params)
                docs = decoder.decode(r.content)["actions"]
                if not docs:
                    break
                rows += len(docs)
                cursor = docs[-1]["global_sequence"]
            lo = hi + 1
    return rows, time.perf_counter() - t0


class server:  # noqa: N801 - used like a function in `with`
    """``count`` devnet Hyperion processes (``python -m karma_analytics.devnet serve``) of
    one chain: separate processes, so the servers' CPU never shares the client's GIL."""

    def __init__(self, count: int = 1, **flags: Any) -> None:
        self.count = count
        self.flags = flags

    def __enter__(self) -> server:
        import subprocess
        import sys

        args = [
            sys.executable, "-m", "karma_analytics.devnet", "serve", "--protocol", "hyperion",
            "--head", "5000000", "--block-interval", "0", "--lib-lag", "2",
            "--transfers-per-block", str(DENSITY), "--max-limit", "1000",
        ]  # fmt: skip
        for key, value in self.flags.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self.procs = [
            subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(self.count)
        ]
        self.urls = [p.stdout.readline().strip() for p in self.procs]
        self.url = ",".join(self.urls)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=1_000_000)
    parser.add_argument("--one-worker-transfers", type=int, default=100_000)
    parser.add_argument("--bare-transfers", type=int, default=200_000)
    parser.add_argument(
        "--servers", type=int, default=4, help="devnet server processes for part 1 (mirrors)"
    )
    args = parser.parse_args()
    blocks = int(args.transfers / DENSITY)
    first = 100_000

    print("== 1. latency 100 ms, pages of 1000")
    with server(args.servers, latency_ms=100) as hyperion:
        rows8, sec8, stats8 = asyncio.run(run_source(hyperion.url, first, first + blocks, 8))
        ideal = 8 * 1000 / 0.1
        print(f"workers 8: {rows8:,} transfers in {sec8:.1f} s = {rows8 / sec8:,.0f}/s; "
              f"ideal {ideal:,.0f}/s -> {rows8 / sec8 / ideal:.2f} of ideal; "
              f"{stats8.pages} pages, {stats8.windows} windows, peak buffer {stats8.peak_buffered}")  # fmt: skip
        b1 = int(args.one_worker_transfers / DENSITY)
        rows1, sec1, _ = asyncio.run(run_source(hyperion.url, first, first + b1, 1))
        print(f"workers 1: {rows1:,} transfers in {sec1:.1f} s = {rows1 / sec1:,.0f}/s "
              f"(ideal {1000 / 0.1:,.0f}/s); speed-up {rows8 / sec8 / (rows1 / sec1):.1f}x")  # fmt: skip

    print("== 2. no latency")
    with server() as hyperion:
        bb = int(args.bare_transfers / DENSITY)
        window = 200  # 8000 transfers: about the source's adapted window
        # Warm the server's document cache identically for everyone.
        asyncio.run(bare_aiohttp(hyperion.urls[0], first, first + bb, window))
        url = hyperion.urls[0]
        rows_b, sec_b = asyncio.run(bare_aiohttp(url, first, first + bb, window))
        rows_s, sec_s, _ = asyncio.run(run_source(url, first, first + bb, 1))
        rows_s8, sec_s8, _ = asyncio.run(run_source(url, first, first + bb, 8))
        print(f"bare aiohttp: {rows_b / sec_b:,.0f}/s; source workers 1: {rows_s / sec_s:,.0f}/s "
              f"-> {rows_s / sec_s / (rows_b / sec_b):.2f}; source workers 8: {rows_s8 / sec_s8:,.0f}/s")  # fmt: skip
        hx = asyncio.run(bare_httpx(url, first, first + bb, window))
        if hx is None:
            print("httpx not installed: skipped")
        else:
            print(f"bare httpx: {hx[0] / hx[1]:,.0f}/s vs aiohttp {rows_b / sec_b:,.0f}/s")


if __name__ == "__main__":
    main()
