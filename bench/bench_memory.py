"""Benchmark 3: peak memory of a 5,000,000-transfer collection (target <= 250 MB, flat).

A devnet server (own process) serves a dense chain; the real CLI collects it in a child
process with default flush settings. This script samples the child's ``VmRSS`` and its peak
``VmHWM`` (the kernel's ru_maxrss) from ``/proc`` twice a second and prints them each time the
committed row count (sidecar) passes another million, then the peak for the whole run.

    python bench/bench_memory.py [--transfers 5000000] [--per-block 20] [--no-compact]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def committed(root: Path) -> int:
    try:
        return json.loads((root / "_cursor.json").read_bytes())["rows"]
    except (OSError, ValueError, KeyError):
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=5_000_000)
    parser.add_argument("--per-block", type=float, default=20.0)
    parser.add_argument("--limit-mb", type=float, default=250.0)
    parser.add_argument(
        "--no-compact", action="store_true", help="pass --no-compact to the collector"
    )
    args = parser.parse_args()

    # The chain's mean density is per_block: 3 % more blocks make sure the target is passed.
    stop = int(args.transfers / args.per_block * 1.03)
    folder = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    server = subprocess.Popen(
        [sys.executable, "-m", "karma_analytics.devnet", "serve", "--transfers-per-block",
         str(args.per_block), "--head", str(stop + 300), "--block-interval", "0",
         "--compression", "none", "--cache-blocks", "64"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        out = folder / "transfers"
        began = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", "karma_analytics.collect", "--endpoint", url, "--out",
             str(out), "--start-block", "1", "--stop-block", str(stop), "--quiet",
             *(["--no-compact"] if args.no_compact else [])],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"collecting blocks 1..{stop:,} (~{args.transfers:,} transfers) from {url}")
        print(f"{'rows committed':>15} {'seconds':>8} {'RSS MB':>7} {'peak MB':>8}")
        milestone = 1_000_000
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
                print(
                    f"{milestone:>15,} {time.monotonic() - began:>8.1f} {rss:>7.1f} "
                    f"{peak / 1024:>8.1f}",
                    flush=True,
                )
                milestone += 1_000_000
            time.sleep(0.5)
        rows = committed(out)
        seconds = time.monotonic() - began
        print(
            f"exit {child.returncode}: {rows:,} rows in {seconds:.1f} s "
            f"({rows / seconds:,.0f} rows/s)"
        )
        print(f"peak RSS (VmHWM, sampled): {peak / 1024:.1f} MB  (limit {args.limit_mb:.0f} MB)")
        if len(rss_at) >= 2:
            first, last = min(rss_at), max(rss_at)
            print(
                f"RSS growth from {first:,} to {last:,} rows: "
                f"{rss_at[last] - rss_at[first]:+.1f} MB"
            )
        ok = child.returncode == 0 and rows >= args.transfers and peak / 1024 <= args.limit_mb
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
