"""Benchmark of ``load_transfers`` against plain pyarrow on a synthetic dataset.

Writes a synthetic dataset that follows the layout exactly (``date=YYYY-MM-DD/part-<first>-
<last>.parquet`` + ``_cursor.json``) into a temporary folder, then measures, as medians of
``--repeat`` runs in the same process:

* ``baseline``: ``pyarrow.dataset.dataset(files, ...).to_table(columns=COLUMNS).to_pandas()``
  over the same committed files;
* ``load``: ``load_transfers(root)`` (reader rule, stable dtypes, ``amount``, sorted);
* ``one_day``: ``load_transfers(root, start=day, end=day + 1)`` on a day in the middle.

Usage::

    python bench/bench_load.py --rows 10_000_000 --days 30 --repeat 5 [--dir /dev/shm]

Targets (issue 4): load / baseline <= 1.3; one_day / load <= 0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from karma_analytics import layout
from karma_analytics.dataset import STRING_DTYPE, committed_files, load_transfers
from karma_analytics.model import ARROW_SCHEMA, COLUMNS

GENESIS = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
BLOCK_MS = 500
FIRST_BLOCK = 400_000_000
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_strings(rng: np.random.Generator, n: int, nbytes: int = 32) -> pa.Array:
    """``n`` random lowercase hex strings of ``2 * nbytes`` characters, built without Python loops."""
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    chars = np.empty((n, 2 * nbytes), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    offsets = np.arange(0, (n + 1) * 2 * nbytes, 2 * nbytes, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def account_pool(rng: np.random.Generator, size: int) -> pa.Array:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz12345", dtype=np.uint8)
    chars = letters[rng.integers(0, len(letters), size=(size, 12))]
    offsets = np.arange(0, (size + 1) * 12, 12, dtype=np.int32)
    return pa.StringArray.from_buffers(size, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def synthetic_table(rng: np.random.Generator, n: int, days: int, accounts: int) -> pa.Table:
    """``n`` transfers spread over ``days`` UTC days, sorted by block and global_sequence."""
    blocks_total = days * 86_400_000 // BLOCK_MS
    offsets = np.sort(rng.integers(0, blocks_total, size=n))
    block_num = (FIRST_BLOCK + offsets).astype(np.uint32)
    genesis_ms = int(GENESIS.timestamp() * 1000)
    block_time = genesis_ms + offsets.astype(np.int64) * BLOCK_MS
    global_sequence = (5_000_000_000 + np.arange(n, dtype=np.uint64) * 3).astype(np.uint64)
    # Zipf-like account popularity: a few whales, a long tail.
    weights = 1.0 / np.arange(1, accounts + 1) ** 1.1
    weights /= weights.sum()
    pool = account_pool(rng, accounts)
    from_idx = rng.choice(accounts, size=n, p=weights).astype(np.int32)
    to_idx = rng.choice(accounts, size=n, p=weights).astype(np.int32)
    amount_units = np.exp(rng.normal(9.0, 2.5, size=n)).astype(np.int64) + 1
    memos = pa.array(["", "", "", "thanks", "reward", "tip for the post"])
    memo_idx = rng.integers(0, len(memos), size=n).astype(np.int32)
    block_ids = hex_strings(rng, n)  # one id per row is close enough for size and speed
    return pa.table(
        {
            "block_num": pa.array(block_num, pa.uint32()),
            "block_id": block_ids,
            "block_time": pa.array(block_time, pa.timestamp("ms", tz="UTC")),
            "trx_id": hex_strings(rng, n),
            "action_idx": pa.array(rng.integers(0, 4, size=n).astype(np.uint32)),
            "global_sequence": pa.array(global_sequence, pa.uint64()),
            "contract": pa.repeat("therealkarma", n).cast(pa.string()),
            "action": pa.repeat("transfer", n).cast(pa.string()),
            "from_account": pool.take(pa.array(from_idx)),
            "to_account": pool.take(pa.array(to_idx)),
            "amount_units": pa.array(amount_units, pa.int64()),
            "precision": pa.array(np.full(n, 4, np.uint8)),
            "symbol": pa.repeat("KARMA", n).cast(pa.string()),
            "memo": memos.take(pa.array(memo_idx)),
        },
        schema=ARROW_SCHEMA,
    )


def write_dataset(root: Path, table: pa.Table, parts_per_day: int) -> int:
    """Write ``table`` as commits of ``parts_per_day`` parts per day; returns next_block."""
    times = table.column("block_time").cast(pa.int64()).to_numpy()
    blocks = table.column("block_num").to_numpy()
    day_index = times // 86_400_000
    bounds = np.flatnonzero(np.diff(day_index)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(times)]])
    for start, end in zip(starts, ends, strict=True):
        day = layout.day_of_ms(int(times[start]))
        folder = root / layout.partition_name(day)
        folder.mkdir(parents=True)
        cuts = np.linspace(start, end, parts_per_day + 1).astype(int)
        for lo, hi in itertools.pairwise(cuts):
            if hi <= lo:
                continue
            name = layout.part_filename(int(blocks[lo]), int(blocks[hi - 1]))
            pq.write_table(table.slice(lo, hi - lo), folder / name)
    next_block = int(blocks[-1]) + 1
    cursor = layout.Cursor(
        request=layout.Request.for_token(endpoint="synthetic"),
        next_block=next_block,
        last_block_num=int(blocks[-1]),
        last_block_id="00" * 32,
        last_block_time=int(times[-1]),
        last_global_sequence=int(table.column("global_sequence")[-1].as_py()),
        rows=table.num_rows,
        commits=len(starts) * parts_per_day,
        written_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    (root / layout.CURSOR_FILE).write_bytes(cursor.to_json_bytes())
    return next_block


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds (all threads of this process) and the result."""
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--parts-per-day", type=int, default=8)
    parser.add_argument("--accounts", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="write here and keep it")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="parent of the temporary dataset folder, e.g. /dev/shm to take disk I/O out",
    )
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="karma-bench-", dir=args.dir))
    root = base / "transfers"
    try:
        t0 = time.perf_counter()
        table = synthetic_table(
            np.random.default_rng(args.seed), args.rows, args.days, args.accounts
        )
        write_dataset(root, table, args.parts_per_day)
        del table
        size = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        print(f"dataset folder: {root}")
        print(
            f"dataset: {args.rows:,} rows, {args.days} days, {args.parts_per_day} parts/day, "
            f"{size / 1e6:,.0f} MB, written in {time.perf_counter() - t0:.1f} s"
        )
        files = committed_files(root)

        def baseline() -> pd.DataFrame:
            dataset = ds.dataset(
                files, format="parquet", partitioning="hive", partition_base_dir=str(root)
            )
            return dataset.to_table(columns=list(COLUMNS)).to_pandas()

        def same_dtypes() -> pd.DataFrame:
            # The same read with the loader's string dtype: isolates the loader's own work
            # (reader rule, amount column, order check) from the string conversion.
            dataset = ds.dataset(
                files, format="parquet", partitioning="hive", partition_base_dir=str(root)
            )
            table = dataset.to_table(columns=list(COLUMNS))
            return table.to_pandas(types_mapper={pa.string(): STRING_DTYPE}.get)

        def load() -> pd.DataFrame:
            return load_transfers(root)

        middle = GENESIS.date() + dt.timedelta(days=args.days // 2)

        def one_day() -> pd.DataFrame:
            return load_transfers(root, start=middle, end=middle + dt.timedelta(days=1))

        # Warm the page cache once so every variant reads from memory alike, then interleave
        # the variants in each round so that noise from other processes hits them alike.
        baseline()
        names = ("baseline", "same_dtypes", "load", "one_day")
        timings: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        day_rows = 0
        for _ in range(args.repeat):
            variants = (
                ("baseline", baseline),
                ("same_dtypes", same_dtypes),
                ("load", load),
                ("one_day", one_day),
            )
            for name, call in variants:
                seconds, cpu_seconds, frame = timed(call)
                timings[name].append(seconds)
                cpu[name].append(cpu_seconds)
                if name == "load":
                    assert len(frame) == args.rows
                    assert frame["global_sequence"].is_monotonic_increasing
                elif name == "one_day":
                    day_rows = len(frame)
                del frame
        t_base, t_same, t_load, t_day = (statistics.median(timings[k]) for k in names)
        ratios = [lo / ba for lo, ba in zip(timings["load"], timings["baseline"], strict=True)]
        print(
            f"python {platform.python_version()}, pandas {pd.__version__}, "
            f"pyarrow {pa.__version__}, {platform.machine()}, repeat={args.repeat} (medians)"
        )
        print("| measure | seconds | ratio | target |")
        print("|---|---|---|---|")
        print(f"| baseline `ds.dataset(files).to_table().to_pandas()` | {t_base:.3f} | 1.00 | |")
        print(
            f"| same read, loader's string dtype | {t_same:.3f} | {t_same / t_base:.2f} x "
            "baseline | |"
        )
        print(
            f"| `load_transfers(root)` | {t_load:.3f} | {t_load / t_base:.2f} x baseline | <= 1.3 |"
        )
        print(
            f"| `load_transfers(root, start=day, end=day+1)` ({day_rows:,} rows) | {t_day:.3f} "
            f"| {t_day / t_load:.3f} x full load | <= 0.1 |"
        )
        print(
            "per-round load/baseline ratios: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f" (median {statistics.median(ratios):.2f})"
        )
        for name, values in timings.items():
            print(f"{name} wall seconds per round: " + ", ".join(f"{v:.3f}" for v in values))
            print(f"{name} CPU seconds per round: " + ", ".join(f"{v:.3f}" for v in cpu[name]))
        c_base, c_same, c_load, c_day = (statistics.median(cpu[k]) for k in names)
        print(
            f"CPU-time medians: baseline {c_base:.3f} s, same dtypes {c_same:.3f} s, "
            f"load {c_load:.3f} s "
            f"({c_load / c_base:.2f} x), one day {c_day:.3f} s ({c_day / c_load:.3f} x load)"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
