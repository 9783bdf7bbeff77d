"""Hyperion source benchmarks (issue 9, parts 1-2) against the devnet Hyperion.

1. Backfill with latency 100 ms and pages of 1,000: ``workers 8`` vs ``workers 1`` vs the
   ideal ``workers x page / latency`` (the HyperionSource, in process, every event counted).
2. No latency: the real collector CLI (engine, Parquet commits) vs a bare client that fetches
   the same pages (same windows, same cursor queries) with the same HTTP library (aiohttp)
   and decodes them with msgspec; plus aiohttp vs httpx on those page fetches (httpx only if
   installed: ``pip install httpx`` into the venv; not a dependency). Both clients run the
   same way: each in a fresh process (``--bare``), timed from launch to exit, so each pays its
   own interpreter start and imports and nothing else (the bare client's fetch time inside
   its process is printed too). The target is judged against the bare client with the GC
   tuned as the CLI tunes it and glibc's allocator as it comes; the CLI also pins glibc's
   mmap threshold for its memory (collect.tune_memory), which costs any client time on 1 MB
   bodies, so the bare client is run that way too and that ratio printed beside it.

The server (one process, ``--serve``) is the devnet Hyperion with the benchmark's settings:
no gzip (loopback), no response cache, ``count_total`` off, and its per-block index of
rendered documents **warmed** over the whole range before the clock starts (a real Hyperion's
Elasticsearch index exists before anyone reads it; the devnet renders a document in ~55 us the
first time, ~2-6 us after). The ideal is computed against the latency only.

Run: ``python bench/bench_hyperion.py [--transfers 1000000] [--runs 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from karma_analytics.collect import tune_gc  # noqa: E402
from karma_analytics.engine import ActionReceived  # noqa: E402
from karma_analytics.sources.base import Selection, SourceSettings  # noqa: E402
from karma_analytics.sources.hyperion import HyperionSource  # noqa: E402
from karma_analytics.sources.hyperion.rest import MAX_SEQUENCE  # noqa: E402

PER_BLOCK = 40.0  # --transfers-per-block (airdrop bursts make the real mean about twice that)
FIRST = 100_000
FILTER = "therealkarma:transfer"


def plan(transfers: int, first: int = FIRST, per_block: float = PER_BLOCK) -> int:
    """The last block so that ``first..last`` holds about ``transfers``.

    The devnet's density is not uniform: airdrop bursts fill the first ``_BURST_LEN`` blocks of
    every ``_BURST_PERIOD`` at about 4x the rest. So the rate is sampled once inside a burst
    window and once outside, and the range is walked period by period with those two rates.
    """
    from karma_analytics.devnet.chain import _BURST_LEN, _BURST_PERIOD, Chain

    chain = Chain(transfers_per_block=per_block)
    base = first - first % _BURST_PERIOD
    burst = sum(1 for _ in chain.truth(base, base + _BURST_LEN - 1)) / _BURST_LEN
    calm = sum(1 for _ in chain.truth(base + _BURST_LEN, base + _BURST_LEN + 999)) / 1000
    expected = 0.0
    num = first
    while expected < transfers:
        offset = num % _BURST_PERIOD
        rate, end = (burst, _BURST_LEN) if offset < _BURST_LEN else (calm, _BURST_PERIOD)
        span = min(end - offset, max(1, int((transfers - expected) / rate) + 1))
        expected += span * rate
        num += span
    return num - 1


# --- the server process ---------------------------------------------------------------------


def serve(options: dict[str, Any], warm: tuple[int, int] | None) -> None:
    """Run one devnet Hyperion; print its URL once the range is warm."""
    from karma_analytics.devnet.hyperion import HyperionServer

    async def main() -> None:
        server = HyperionServer(**options)
        if warm is not None:
            lo, hi = warm
            t0 = time.perf_counter()
            docs = 0
            for start in range(lo, hi + 1, 500):
                cursor = 0
                while True:
                    params = {"filter": FILTER, "sort": "asc", "after": str(start),
                              "before": str(min(hi, start + 499)), "limit": "1000",
                              "global_sequence": f"{cursor + 1}-{MAX_SEQUENCE}"}  # fmt: skip
                    body = server._get_actions(params, time.perf_counter()).body
                    if body.endswith(b'"actions":[]}'):
                        break
                    k = body.rindex(b'"global_sequence":')
                    cursor = int(body[k + 18 : body.index(b",", k)])
                    docs += body.count(b'"receipts"')
            print(f"warm: {docs:,} docs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        server.stats = type(server.stats)()
        await server.start()
        print(server.url, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class server:
    """``count`` devnet Hyperion processes (``--serve``) of one chain: separate processes, so
    the server's CPU never shares the client's GIL."""

    def __init__(self, count: int = 1, warm: tuple[int, int] | None = None, **options: Any):
        self.count = count
        self.warm = warm
        self.options = {
            "head": 6_000_000, "block_interval": 0, "lib_lag": 2,
            "transfers_per_block": PER_BLOCK, "max_limit": 1000, "gzip": False,
            "cache_life": 0, "count_total": False, "cache_blocks": 64,
            "render_cache_docs": 1_100_000, **options,
        }  # fmt: skip

    def __enter__(self) -> server:
        args = [sys.executable, __file__, "--serve", json.dumps(self.options)]
        if self.warm:
            args += ["--warm", str(self.warm[0]), str(self.warm[1])]
        self.procs = [
            subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO)
            for _ in range(self.count)
        ]
        self.urls = [p.stdout.readline().strip() for p in self.procs]  # type: ignore[union-attr]
        self.url = ",".join(self.urls)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(10)


# --- clients --------------------------------------------------------------------------------


async def run_source(
    url: str, first: int, last: int, workers: int, extra: dict[str, Any] | None = None
) -> tuple[int, float, float, Any]:
    """Rows, seconds, the client's CPU time over those seconds, and the source's stats."""
    settings = SourceSettings(
        workers=workers, page_size=1000, request_timeout=60, extra=extra or {}
    )
    source = HyperionSource.create(url, Selection(), stop_block=last, settings=settings)
    rows = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
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
    seconds = time.perf_counter() - t0
    return rows, seconds, (time.process_time() - c0) / seconds, source.stats


def _params(lo: int, hi: int, cursor: int) -> dict[str, Any]:
    return {"filter": FILTER, "sort": "asc", "after": lo, "before": hi,
            "global_sequence": f"{cursor + 1}-{MAX_SEQUENCE}", "limit": 1000}  # fmt: skip


def _windows(first: int, last: int, window: int) -> list[tuple[int, int]]:
    return [(lo, min(last, lo + window - 1)) for lo in range(first, last + 1, window)]


async def bare_aiohttp(url: str, first: int, last: int, window: int) -> tuple[int, float]:
    """Fetch every page of every window in order, decode it (msgspec, to dicts); nothing else."""
    import aiohttp

    decoder = msgspec.json.Decoder()
    rows = 0
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for lo, hi in _windows(first, last, window):
            cursor = 0
            while True:
                async with session.get(
                    url + "/v2/history/get_actions", params=_params(lo, hi, cursor)
                ) as r:
                    docs = decoder.decode(await r.read())["actions"]
                if not docs:
                    break
                rows += len(docs)
                cursor = docs[-1]["global_sequence"]
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
        for lo, hi in _windows(first, last, window):
            cursor = 0
            while True:
                r = await client.get(
                    url + "/v2/history/get_actions", params=_params(lo, hi, cursor)
                )
                docs = decoder.decode(r.content)["actions"]
                if not docs:
                    break
                rows += len(docs)
                cursor = docs[-1]["global_sequence"]
    return rows, time.perf_counter() - t0


def _children_cpu() -> float:
    """User + system CPU seconds of the waited-for child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bare_cli(
    url: str, first: int, last: int, window: int, *, cli_memory: bool = False
) -> tuple[int, float, float, float]:
    """The bare aiohttp client in a fresh process: docs, seconds from launch to exit, the
    seconds of its fetch loop alone (measured inside the process), and its CPU seconds.
    ``cli_memory``: with the CLI's allocator settings (collect.tune_memory) too."""
    memory = "cli" if cli_memory else "plain"
    c0 = _children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--bare", url, str(first), str(last), str(window), memory],
        cwd=REPO, check=True, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    rows, inner = json.loads(done.stdout)
    return rows, seconds, inner, _children_cpu() - c0


def collector_cli(url: str, first: int, last: int, workers: int) -> tuple[int, float, float]:
    """The real CLI, committing to Parquet: rows, seconds from launch to exit (imports
    included) and its CPU seconds."""
    folder = Path(tempfile.mkdtemp(prefix="bench-hyperion-"))
    try:
        out = folder / "transfers"
        c0 = _children_cpu()
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "karma_analytics.collect", "--source", "hyperion",
             "--endpoint", url, "--out", str(out), "--start-block", str(first),
             "--stop-block", str(last), "--workers", str(workers), "--quiet"],
            cwd=REPO, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        cpu = _children_cpu() - c0
        rows = json.loads((out / "_cursor.json").read_bytes())["rows"]
        return rows, seconds, cpu
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=1_000_000)
    parser.add_argument("--one-worker-transfers", type=int, default=200_000)
    parser.add_argument("--bare-transfers", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--window", type=int, default=100, help="bare clients' window (blocks)")
    parser.add_argument("--parts", default="12")
    parser.add_argument("--extra", default="{}", help="source extras (JSON), e.g. capacity")
    parser.add_argument(
        "--servers", type=int, default=1, help="part 1: devnet processes (mirrors of one chain)"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--bare", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--warm", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(json.loads(args.serve), tuple(args.warm) if args.warm else None)
        return
    if args.bare:
        # The GC as the CLI's process runs (collect.main), the allocator as asked.
        from karma_analytics.collect import tune_memory

        bare_url, bare_first, bare_last, bare_window, memory = args.bare
        tune_gc()
        if memory == "cli":
            tune_memory()
        rows, sec = asyncio.run(
            bare_aiohttp(bare_url, int(bare_first), int(bare_last), int(bare_window))
        )
        print(json.dumps([rows, sec]))
        return
    # As the CLI runs (collect.main calls it): the source's rate, not the default GC's.
    tune_gc()
    extra = json.loads(args.extra)
    last = plan(args.transfers)
    last1 = plan(args.one_worker_transfers)
    lastb = plan(args.bare_transfers)
    print(f"blocks {FIRST:,}..{last:,} (~{args.transfers:,} transfers); workers 1 on "
          f"{FIRST:,}..{last1:,}; no-latency runs on {FIRST:,}..{lastb:,}")  # fmt: skip

    if "1" in args.parts:
        print(f"== 1. latency 100 ms, pages of 1000 ({args.servers} server process(es), warmed)")
        with server(args.servers, warm=(FIRST, last), latency_ms=100) as hyperion:
            ideal = 8 * 1000 / 0.1
            r8: list[float] = []
            r1: list[float] = []
            for run in range(args.runs):
                rows, sec, cpu, st = asyncio.run(run_source(hyperion.url, FIRST, last, 8, extra))
                r8.append(rows / sec)
                print(f"run {run + 1} workers 8: {rows:,} transfers in {sec:.1f} s = "
                      f"{rows / sec:,.0f}/s ({rows / sec / ideal:.2f} of ideal); {st.pages} "
                      f"pages, {st.windows} windows, peak held {st.peak_buffered} windows / "
                      f"{st.peak_events:,} events, {st.parked} parked; client CPU "
                      f"{cpu:.0%} of the wall time", flush=True)  # fmt: skip
                rows, sec, _, st = asyncio.run(run_source(hyperion.url, FIRST, last1, 1, extra))
                r1.append(rows / sec)
                print(f"run {run + 1} workers 1: {rows:,} transfers in {sec:.1f} s = "
                      f"{rows / sec:,.0f}/s; {st.pages} pages, {st.windows} windows", flush=True)  # fmt: skip
            m8, m1 = statistics.median(r8), statistics.median(r1)
            print(f"median workers 8: {m8:,.0f}/s = {m8 / ideal:.2f} of the ideal {ideal:,.0f}/s "
                  f"(target >= 0.7); workers 1: {m1:,.0f}/s (ideal 10,000/s); "
                  f"speed-up {m8 / m1:.1f}x (target >= 5x)")  # fmt: skip

    if "2" in args.parts:
        print("== 2. no latency (one server process, warmed)")
        with server(1, warm=(FIRST, lastb)) as hyperion:
            url = hyperion.urls[0]
            bare: list[float] = []
            bare_tuned: list[float] = []
            bare_inner: list[float] = []
            coll: list[float] = []
            coll4: list[float] = []
            coll8: list[float] = []
            hx: list[float] = []
            cpu_b: list[float] = []  # CPU seconds per process, bare and collector workers 4
            cpu_c4: list[float] = []
            for run in range(args.runs):
                rows_b, sec_b, inner_b, cpu = bare_cli(url, FIRST, lastb, args.window)
                cpu_b.append(cpu)
                _, sec_t, _, _ = bare_cli(url, FIRST, lastb, args.window, cli_memory=True)
                rows_c, sec_c, _ = collector_cli(url, FIRST, lastb, 1)
                rows_c4, sec_c4, cpu = collector_cli(url, FIRST, lastb, 4)
                cpu_c4.append(cpu)
                rows_c8, sec_c8, _ = collector_cli(url, FIRST, lastb, 8)
                got = asyncio.run(bare_httpx(url, FIRST, lastb, args.window))
                bare.append(rows_b / sec_b)
                bare_tuned.append(rows_b / sec_t)
                bare_inner.append(rows_b / inner_b)
                coll.append(rows_c / sec_c)
                coll4.append(rows_c4 / sec_c4)
                coll8.append(rows_c8 / sec_c8)
                line = (f"run {run + 1}: bare aiohttp {rows_b:,} docs {sec_b:.2f} s (fetch loop "
                        f"{inner_b:.2f} s), with the CLI's allocator {sec_t:.2f} s; collector "
                        f"CLI workers 1 {rows_c:,} rows {sec_c:.2f} s, workers 4 {sec_c4:.2f} s, "
                        f"workers 8 {sec_c8:.2f} s")  # fmt: skip
                if got is not None:
                    hx.append(got[0] / got[1])
                    line += f"; bare httpx {got[1]:.2f} s"
                print(line, flush=True)
            mb, mt, mi, mc, mc4, mc8 = (
                statistics.median(x) for x in (bare, bare_tuned, bare_inner, coll, coll4, coll8)
            )
            print(f"median bare aiohttp {mb:,.0f} docs/s launch to exit ({mi:,.0f} docs/s in "
                  f"its fetch loop; {mt:,.0f} docs/s with the CLI's allocator)\n"
                  f"collector CLI (target >= 0.8; in brackets against the bare client with the "
                  f"CLI's allocator): workers 1 {mc:,.0f} rows/s -> {mc / mb:.2f} "
                  f"({mc / mt:.2f}); workers 4, the CLI's default, {mc4:,.0f} rows/s -> "
                  f"{mc4 / mb:.2f} ({mc4 / mt:.2f}); workers 8 {mc8:,.0f} rows/s -> "
                  f"{mc8 / mb:.2f} ({mc8 / mt:.2f})")  # fmt: skip
            # The bare client has one request in flight: part of its time is the server's.
            # Its CPU against the collector's says what the collector costs a machine.
            b_cpu, c_cpu = statistics.median(cpu_b), statistics.median(cpu_c4)
            print(f"client CPU, medians: bare {b_cpu:.2f} s, collector workers 4 {c_cpu:.2f} s; "
                  f"ratio {b_cpu / c_cpu:.2f}")  # fmt: skip
            if hx:
                print(f"median bare httpx {statistics.median(hx):,.0f} docs/s (in this process) vs "
                      f"aiohttp's fetch loop {mi:,.0f} docs/s -> httpx/aiohttp "
                      f"{statistics.median(hx) / mi:.2f}")  # fmt: skip
            else:
                print("httpx not installed: skipped")


if __name__ == "__main__":
    main()
