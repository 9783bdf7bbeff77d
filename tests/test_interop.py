"""Outside engines (DuckDB, Polars) read a finished dataset and get exactly our rows.

Outside engines know nothing of the sidecar. While a collector runs, or after a crash, the
folder may hold parts that are not committed (at or after ``next_block``) and, after an
interrupted compaction, small parts inside a merged one. An engine that wants committed data
only must apply the reader rule (DESIGN.md) — e.g. read the list from
:func:`karma_analytics.dataset.committed_files` — or read a finished dataset: writer stopped,
``python -m karma_analytics.dataset verify PATH`` reporting OK. These tests use a dataset
written by the real :class:`karma_analytics.store.Store`, verified, before and after
compaction, and read it both from the committed file list and from a plain glob.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from karma_analytics import layout
from karma_analytics.dataset import committed_files, load_transfers, main, verify
from karma_analytics.model import COLUMNS, Transfer, transfers_to_table
from karma_analytics.store import Store

# Blocks of 500 ms from 23:50 UTC: the commits below cross midnight.
GENESIS_MS = int(pd.Timestamp("2026-11-27T23:50:00Z").value // 1_000_000)
NAMES = ("alice", "bob", "carol", "dave", "eve", "frank")


def transfers(first: int, last: int) -> list[Transfer]:
    rng = np.random.default_rng(first)
    rows = []
    for block in range(first, last + 1):
        for idx in range(int(rng.integers(0, 3))):
            sequence = block * 10 + idx
            rows.append(
                Transfer(
                    block_num=block,
                    block_id=f"{block:08x}" + "cd" * 28,
                    block_time=GENESIS_MS + (block - 1000) * 500,
                    trx_id=f"{sequence:064x}",
                    action_idx=idx,
                    global_sequence=sequence,
                    contract="therealkarma",
                    action="transfer",
                    from_account=NAMES[int(rng.integers(0, 6))],
                    to_account=NAMES[int(rng.integers(0, 6))],
                    amount_units=int(rng.integers(1, 10**9)),
                    precision=4,
                    symbol="KARMA",
                    memo="é✓" if idx == 1 else "",
                )
            )
    return rows


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A dataset written by the store in 6 commits over two UTC days, writer closed."""
    root = tmp_path / "transfers"
    with Store.open(root, layout.Request.for_token(), auto_compact=False) as store:
        for first in range(1000, 4000, 500):
            last = first + 499
            rows = transfers(first, last)
            store.commit(
                rows=rows,
                first_block=first,
                next_block=last + 1,
                last_block_num=last,
                last_block_id=f"{last:08x}" + "cd" * 28,
                last_block_time=GENESIS_MS + (last - 1000) * 500,
            )
    return root


def normalise(frame: pd.DataFrame) -> dict[str, list]:
    """Column -> Python values, block_time as ms since the epoch, rows by global_sequence."""
    frame = frame.sort_values("global_sequence", kind="stable")
    out = {}
    for name in COLUMNS:
        column = frame[name]
        if name == "block_time":
            times = pd.DatetimeIndex(column)
            times = times.tz_convert("UTC") if times.tz is not None else times.tz_localize("UTC")
            out[name] = list(times.as_unit("ms").asi8)
        else:
            out[name] = [v.item() if hasattr(v, "item") else v for v in column.tolist()]
    return out


def duckdb_rows(files: list[str] | str) -> pd.DataFrame:
    with duckdb.connect() as con:
        return con.execute(
            "SELECT * FROM read_parquet(?, hive_partitioning = true) ORDER BY global_sequence",
            [files],
        ).df()


def polars_rows(files: list[str] | str) -> pd.DataFrame:
    frame = pl.scan_parquet(files, hive_partitioning=True).sort("global_sequence").collect()
    return frame.to_pandas()


def check_engines_agree(root: Path) -> int:
    ours = load_transfers(root)
    expected = normalise(ours)
    files = committed_files(root)
    glob = str(root / "date=*" / "part-*.parquet")
    for source in (files, glob):
        for reader in (duckdb_rows, polars_rows):
            theirs = reader(source)
            assert "date" in theirs.columns  # the hive partition column, derived from folders
            assert normalise(theirs) == expected, (reader.__name__, source)
    return len(ours)


@pytest.mark.slow
def test_duckdb_and_polars_read_what_load_transfers_reads(finished):
    assert verify(finished).ok
    parts = sorted(p.name for p in finished.rglob("part-*.parquet"))
    assert len(parts) >= 7  # six commits, one of them split over two days
    rows = check_engines_agree(finished)
    assert rows == layout.read_cursor(pafs.LocalFileSystem(), str(finished)).rows


@pytest.mark.slow
def test_after_compaction(finished):
    before = load_transfers(finished)
    assert main(["compact", str(finished), "--before", "2026-11-30"]) == 0
    days = sorted(p.name for p in finished.iterdir() if p.name.startswith("date="))
    assert days == ["date=2026-11-27", "date=2026-11-28"]
    for day in days:
        assert len(list((finished / day).glob("part-*.parquet"))) == 1
    assert verify(finished).ok
    pd.testing.assert_frame_equal(load_transfers(finished), before)
    check_engines_agree(finished)


def test_duckdb_with_the_reader_rule_on_an_unfinished_folder(finished):
    """A leftover part beyond next_block: the glob sees it, the committed list does not."""
    committed = load_transfers(finished)
    cursor = layout.read_cursor(pafs.LocalFileSystem(), str(finished))
    leftover_rows = transfers(cursor.next_block, cursor.next_block + 9)
    day = layout.day_of_ms(leftover_rows[0].block_time)
    path = (
        finished
        / layout.partition_name(day)
        / layout.part_filename(cursor.next_block, cursor.next_block + 9)
    )
    pq.write_table(transfers_to_table(leftover_rows), path)
    assert normalise(duckdb_rows(committed_files(finished))) == normalise(committed)
    glob = str(finished / "date=*" / "part-*.parquet")
    assert len(duckdb_rows(glob)) == len(committed) + len(leftover_rows)
    assert not verify(finished).ok
    assert dt.date(2026, 11, 28) == day
