"""Benchmark 3 (issue 9): peak memory of a 5,000,000-transfer Hyperion backfill through the CLI.

Two devnet Hyperion processes (``bench_hyperion.py --serve``, as mirrors of one chain; cold:
the documents are rendered as they are asked for) serve a dense chain; the real CLI collects
it with ``--source hyperion --workers 8`` in a child process with default flush settings.
As ``bench_memory.py`` does for dfuse, this script samples the child's ``VmRSS`` and peak
``VmHWM`` from ``/proc`` twice a second and prints them each time the committed row count
(sidecar) passes another million, then the peak of the whole run.

    python bench/bench_hyperion_memory.py [--transfers 5000000] [--workers 8]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hyperion import FIRST, REPO, plan, server
from bench_memory import committed, proc_status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=5_000_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--limit-mb", type=float, default=250.0)
    args = parser.parse_args()
    stop = plan(int(args.transfers * 1.02))
    folder = Path(tempfile.mkdtemp(prefix="bench-hyperion-memory-"))
    with server(args.servers, render_cache_docs=200_000) as hyperion:
        try:
            out = folder / "transfers"
            began = time.monotonic()
            child = subprocess.Popen(
                [sys.executable, "-m", "karma_analytics.collect", "--source", "hyperion",
                 "--endpoint", hyperion.url, "--out", str(out), "--start-block", str(FIRST),
                 "--stop-block", str(stop), "--workers", str(args.workers), "--quiet"],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            print(f"collecting blocks {FIRST:,}..{stop:,} (~{args.transfers:,} transfers) "
                  f"from {hyperion.url}, workers {args.workers}")  # fmt: skip
            print(f"{'rows committed':>15} {'seconds':>8} {'RSS MB':>7} {'peak MB':>8}")
            step = 500_000
            milestone = step
            peak = 0
            rss_at: dict[int, float] = {}
            while child.poll() is None:
                try:
                    status = proc_status(child.pid)
                except OSError:
                    break
                peak = max(peak, status.get("VmHWM", 0))
                rows = committed(out)
                while rows >= milestone:
                    rss = status["VmRSS"] / 1024
                    rss_at[milestone] = rss
                    print(f"{milestone:>15,} {time.monotonic() - began:>8.1f} {rss:>7.1f} "
                          f"{peak / 1024:>8.1f}", flush=True)  # fmt: skip
                    milestone += step
                time.sleep(0.5)
            rows = committed(out)
            seconds = time.monotonic() - began
            print(f"exit {child.returncode}: {rows:,} rows in {seconds:.1f} s "
                  f"({rows / seconds:,.0f} rows/s)")  # fmt: skip
            print(f"peak RSS (VmHWM, sampled): {peak / 1024:.1f} MB  "
                  f"(limit {args.limit_mb:.0f} MB)")  # fmt: skip
            if len(rss_at) >= 2:
                first = (
                    min(k for k in rss_at if k >= 1_000_000) if max(rss_at) > 1e6 else min(rss_at)
                )
                last = max(rss_at)
                print(f"RSS growth from {first:,} to {last:,} rows: "
                      f"{rss_at[last] - rss_at[first]:+.1f} MB")  # fmt: skip
            ok = child.returncode == 0 and rows >= args.transfers and peak / 1024 <= args.limit_mb
            print("PASS" if ok else "FAIL")
            return 0 if ok else 1
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
