"""What the collector's memory tuning does on this machine (glibc and Arrow's allocators).

``karma_analytics.collect.tune_memory`` (called by the CLI before pyarrow loads) picks the
system allocator for libarrow's default pool through ``ARROW_DEFAULT_MEMORY_POOL`` and pins
glibc's mmap threshold. That the CLI makes these choices is tested
(tests/collect/test_cli.py); what the allocators then do with them is the allocators'
behaviour, measured here, each case in a fresh child process, untuned and tuned:

1. Arrow: the default pool's backend, and how much the Parquet writer and reader allocate in
   mimalloc (0 once the system allocator is the default: the tuning reaches Arrow's C++ code).
2. glibc: after one freed 8 MB block (which raises glibc's dynamic mmap threshold), how much of
   39 freed 1 MB blocks stays resident (tuned: about 0, they were mmapped; untuned: about 39).

    python bench/check_memory_tuning.py [--json]

Exits 0 after printing; it judges nothing (bench/RESULTS.md has the context).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ARROW = """\
import sys
from karma_analytics.collect import tune_memory
if sys.argv[1] == 'tuned': tune_memory()
import pyarrow as pa, pyarrow.parquet as pq
n = 100_000
table = pa.table({'x': list(range(n)), 's': [str(i) for i in range(n)]})
pq.write_table(table, sys.argv[2], compression='zstd')
pq.ParquetFile(sys.argv[2]).read_row_group(0)
print(pa.default_memory_pool().backend_name, pa.mimalloc_memory_pool().max_memory())
"""

GLIBC = """\
import ctypes, sys
from karma_analytics.collect import tune_memory
if sys.argv[1] == 'tuned': tune_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def anon():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon'):
            return int(line.split()[1]) // 1024
big = libc.malloc(8 << 20); ctypes.memset(big, 1, 8 << 20); libc.free(big)
before = anon()
blocks = [libc.malloc(1 << 20) for _ in range(40)]
for b in blocks: ctypes.memset(b, 1, 1 << 20)
for b in reversed(blocks[:-1]): libc.free(b)  # the last one pins the heap top
print(anon() - before)
"""


def _child(code: str, *args: str) -> str:
    env = dict(os.environ)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "ARROW_DEFAULT_MEMORY_POOL"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def measure() -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("untuned", "tuned"):
            backend, peak = _child(ARROW, mode, str(Path(tmp) / f"{mode}.parquet")).split()
            row: dict[str, object] = {
                "arrow_default_pool": backend,
                "mimalloc_peak_bytes": int(peak),
            }
            if sys.platform == "linux":
                row["glibc_resident_after_free_mb"] = int(_child(GLIBC, mode))
            results[mode] = row
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = measure()
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return 0
    print(f"python {sys.version.split()[0]} on {sys.platform}")
    for mode, row in results.items():
        print(f"{mode}:")
        print(f"  Arrow default pool             {row['arrow_default_pool']}")
        print(f"  mimalloc peak (Parquet w+r)    {row['mimalloc_peak_bytes']:,} bytes")
        if "glibc_resident_after_free_mb" in row:
            print(
                f"  resident after freeing 39 MB   {row['glibc_resident_after_free_mb']} MB"
                "  (1 MB blocks, after an 8 MB one was freed)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
