"""Benchmark of every flow aggregation on a synthetic transfers frame.

The frame has the loader's dtypes (built by the same conversion as ``load_transfers``) with
Zipf-like account popularity, so group counts are realistic. Prints the median of
``--repeat`` runs per function.

Usage::

    python bench/bench_flows.py --rows 10_000_000 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
from bench_load import synthetic_table

from karma_analytics import flows
from karma_analytics.dataset import FRAME_COLUMNS, _table_to_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--accounts", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    t0 = time.perf_counter()
    table = synthetic_table(np.random.default_rng(args.seed), args.rows, args.days, args.accounts)
    df = _table_to_frame(table, list(FRAME_COLUMNS))
    del table
    print(
        f"frame: {len(df):,} rows, {args.accounts:,} accounts, {args.days} days, "
        f"built in {time.perf_counter() - t0:.1f} s"
    )
    whales = [str(a) for a in flows.top_senders(df, 3).index]
    cases: dict[str, Callable[[], object]] = {
        "volume(df, '1D')": lambda: flows.volume(df, "1D"),
        "volume(df, 'h')": lambda: flows.volume(df, "h"),
        "top_senders(df, 10)": lambda: flows.top_senders(df, 10),
        "top_recipients(df, 10, by='transfers')": lambda: flows.top_recipients(
            df, 10, by="transfers"
        ),
        "net_flow(df)": lambda: flows.net_flow(df),
        "flow_matrix(df, 10)": lambda: flows.flow_matrix(df, 10),
        "balance_change(df, 3 accounts)": lambda: flows.balance_change(df, whales),
        "balance_change(df, 3 accounts, freq='1D')": lambda: flows.balance_change(
            df, whales, freq="1D"
        ),
        "size_distribution(df)": lambda: flows.size_distribution(df),
        "activity(df)": lambda: flows.activity(df),
        "new_vs_returning(df, '1D')": lambda: flows.new_vs_returning(df, "1D"),
        "edge_list(df)": lambda: flows.edge_list(df),
    }
    print(
        f"python {platform.python_version()}, pandas {pd.__version__}, pyarrow {pa.__version__}"
        f", numpy {np.__version__}, {platform.machine()}, repeat={args.repeat} (medians)"
    )
    print("| function | seconds | result shape |")
    print("|---|---|---|")
    for name, call in cases.items():
        times = []
        shape = None
        for _ in range(args.repeat):
            gc.collect()
            start = time.perf_counter()
            result = call()
            times.append(time.perf_counter() - start)
            shape = getattr(result, "shape", None)
            del result
        print(f"| `{name}` | {statistics.median(times):.3f} | {shape} |")


if __name__ == "__main__":
    main()
