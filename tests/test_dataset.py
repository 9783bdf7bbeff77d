"""Tests of the read side: reader rule, filters, dtypes, filesystems, info, verify, CLI.

Datasets are written here by a small helper that follows the layout exactly (DESIGN.md "The
dataset on disk"): ``date=YYYY-MM-DD/part-<first>-<last>.parquet`` written with
``pyarrow.parquet.write_table`` plus ``_cursor.json`` from :class:`layout.Cursor`.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from karma_analytics import layout
from karma_analytics.dataset import (
    STRING_DTYPE,
    committed_files,
    dataset_info,
    empty_transfers,
    load_transfers,
    main,
    verify,
)
from karma_analytics.exceptions import CursorError, DatasetError, UsageError
from karma_analytics.model import ARROW_SCHEMA, COLUMNS, Transfer, transfers_to_table

# 2026-11-27 23:59:00 UTC: the helper's blocks cross midnight after 120 blocks (500 ms each).
GENESIS_MS = int(pd.Timestamp("2026-11-27T23:59:00Z").value // 1_000_000)
FIRST_BLOCK = 1000
NAMES = ("alice", "bob", "carol", "dave", "eve")
REQUEST = layout.Request.for_token()


def block_time(block: int) -> int:
    return GENESIS_MS + (block - FIRST_BLOCK) * 500


def make_rows(first: int, last: int, *, every: int = 1, symbol: str = "KARMA") -> list[Transfer]:
    """One transfer per ``every`` blocks in [first, last], deterministic."""
    rows = []
    for block in range(first, last + 1, every):
        i = block - FIRST_BLOCK
        rows.append(
            Transfer(
                block_num=block,
                block_id=f"{block:08x}" + "ab" * 28,
                block_time=block_time(block),
                trx_id=f"{i:064x}",
                action_idx=i % 3,
                global_sequence=10_000 + 2 * i,
                contract="therealkarma",
                action="transfer",
                from_account=NAMES[i % 5],
                to_account=NAMES[(i * 2 + 1) % 5],
                amount_units=(i % 7 + 1) * 5000,
                precision=4,
                symbol=symbol,
                memo=f"m{i}",
            )
        )
    return rows


def write_part(
    root: Path, first: int, last: int, rows: Sequence[Transfer], *, day: dt.date | None = None
) -> list[Path]:
    """Write one commit's rows, one part per UTC day, named by the commit range."""
    by_day: dict[dt.date, list[Transfer]] = {}
    for row in rows:
        by_day.setdefault(layout.day_of_ms(row.block_time), []).append(row)
    if day is not None:
        by_day.setdefault(day, [])
    paths = []
    for part_day, day_rows in sorted(by_day.items()):
        folder = root / layout.partition_name(part_day)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / layout.part_filename(first, last)
        pq.write_table(transfers_to_table(day_rows), path)
        paths.append(path)
    return paths


def write_cursor(root: Path, next_block: int, written: Sequence[Transfer], **extra) -> None:
    root.mkdir(parents=True, exist_ok=True)
    last = written[-1] if written else None
    fields = {
        "request": REQUEST,
        "next_block": next_block,
        "last_block_num": last.block_num if last else None,
        "last_block_id": last.block_id if last else None,
        "last_block_time": last.block_time if last else None,
        "last_global_sequence": last.global_sequence if last else None,
        "rows": len(written),
        "commits": 1,
        "written_at": "2026-11-28T00:00:00Z",
    }
    fields.update(extra)
    (root / layout.CURSOR_FILE).write_bytes(layout.Cursor(**fields).to_json_bytes())


def write_dataset(root: Path, commits: Sequence[tuple[int, int]], *, every: int = 1) -> list:
    """Write consecutive commits ``[(first, last), ...]`` and a cursor after the last one."""
    everything: list[Transfer] = []
    for first, last in commits:
        rows = make_rows(first, last, every=every)
        write_part(root, first, last, rows)
        everything += rows
    write_cursor(root, commits[-1][1] + 1, everything)
    return everything


def expected_frame(rows: Sequence[Transfer]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["amount"] = frame["amount_units"] / 10.0 ** frame["precision"]
    return frame


def assert_rows(frame: pd.DataFrame, rows: Sequence[Transfer]) -> None:
    assert frame["global_sequence"].tolist() == [r.global_sequence for r in rows]
    got = list(frame[list(COLUMNS)].itertuples(index=False))
    want = list(rows)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.block_time.value // 1_000_000 == w.block_time
        assert g._replace(block_time=0) == tuple(w._replace(block_time=0))


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[Transfer]]:
    root = tmp_path / "transfers"
    rows = write_dataset(root, [(1000, 1099), (1100, 1199), (1200, 1299)])
    return root, rows


# --- loading ------------------------------------------------------------------------------------


def test_load_all_rows_dtypes_order(dataset):
    root, rows = dataset
    frame = load_transfers(root)
    assert list(frame.columns) == [*COLUMNS, "amount"]
    assert_rows(frame, rows)
    assert isinstance(frame.index, pd.RangeIndex)
    assert frame.index.equals(pd.RangeIndex(len(rows)))
    assert str(frame["block_time"].dtype) == "datetime64[ms, UTC]"
    for name in (
        "block_id",
        "trx_id",
        "contract",
        "action",
        "from_account",
        "to_account",
        "symbol",
        "memo",
    ):
        assert frame[name].dtype == STRING_DTYPE, name
    assert frame["amount_units"].dtype == np.int64
    assert frame["block_num"].dtype == np.uint32
    assert frame["global_sequence"].dtype == np.uint64
    assert frame["precision"].dtype == np.uint8
    assert frame["amount"].dtype == np.float64
    assert frame["amount"].tolist() == [r.amount_units / 10**4 for r in rows]
    # The helper's blocks cross midnight: two partitions.
    assert sorted({p.name for p in root.iterdir() if p.is_dir()}) == [
        "date=2026-11-27",
        "date=2026-11-28",
    ]


def test_exact_amount_units_beyond_float_precision(tmp_path):
    root = tmp_path / "ds"
    big = make_rows(1000, 1001)
    big[1] = big[1]._replace(amount_units=2**62 - 1)
    write_part(root, 1000, 1001, big)
    write_cursor(root, 1002, big)
    frame = load_transfers(root)
    assert frame["amount_units"].tolist() == [big[0].amount_units, 2**62 - 1]


def test_reader_rule_skips_uncommitted_contained_and_hidden(tmp_path):
    root = tmp_path / "ds"
    rows = write_dataset(root, [(1000, 1099), (1100, 1199)])
    # Leftover of an interrupted commit: at/after next_block (1200).
    write_part(root, 1200, 1249, make_rows(1200, 1249))
    # Compaction leftover: the union parts (one per day) and the small parts all present.
    write_part(root, 1000, 1199, rows)
    # A temp file and an underscore folder are never data.
    day_folder = root / "date=2026-11-27"
    (day_folder / ".part-0000001000-0000001099.parquet.tmp").write_bytes(b"half")
    (root / "_rejects").mkdir()
    (root / "_rejects" / "rejects.jsonl").write_text("{}\n")
    (root / "_lock").write_text("")
    frame = load_transfers(root)
    assert_rows(frame, rows)
    names = [Path(p).name for p in committed_files(root)]
    assert names == ["part-0000001000-0000001199.parquet"] * 2


def test_part_straddling_next_block_is_not_committed(tmp_path):
    root = tmp_path / "ds"
    rows = make_rows(1000, 1010)
    write_part(root, 1000, 1010, rows)
    write_cursor(root, 1010, rows[:-1])  # part's last block 1010 is not below next_block
    assert len(load_transfers(root)) == 0


def test_rows_sorted_by_global_sequence_even_if_files_are_not(tmp_path):
    root = tmp_path / "ds"
    rows = make_rows(1000, 1009)
    write_part(root, 1000, 1009, list(reversed(rows)))
    write_cursor(root, 1010, rows)
    frame = load_transfers(root)
    assert_rows(frame, rows)
    assert frame.index.equals(pd.RangeIndex(10))


@pytest.mark.parametrize("kind", ["missing", "empty", "cursor_only", "empty_parts"])
def test_empty_or_missing_dataset_gives_typed_empty_frame(tmp_path, kind):
    root = tmp_path / "ds"
    if kind == "empty":
        root.mkdir()
    elif kind == "cursor_only":
        write_cursor(root, 1000, [])
    elif kind == "empty_parts":
        write_part(root, 1000, 1000, [], day=dt.date(2026, 11, 27))
        write_cursor(root, 1001, [])
    frame = load_transfers(root)
    reference = empty_transfers()
    assert len(frame) == 0
    assert list(frame.columns) == [*COLUMNS, "amount"]
    assert frame.dtypes.equals(reference.dtypes)
    assert str(frame["block_time"].dtype) == "datetime64[ms, UTC]"
    assert frame["memo"].dtype == STRING_DTYPE
    assert isinstance(frame.index, pd.RangeIndex)


def test_not_a_dataset(tmp_path):
    a_file = tmp_path / "file.parquet"
    pq.write_table(transfers_to_table(make_rows(1000, 1001)), a_file)
    with pytest.raises(DatasetError, match="is a file"):
        load_transfers(a_file)
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    (foreign / "photos").mkdir()
    with pytest.raises(DatasetError, match="not a transfers dataset"):
        load_transfers(foreign)
    orphan = tmp_path / "orphan"
    write_part(orphan, 1000, 1001, make_rows(1000, 1001))
    with pytest.raises(DatasetError, match="repair"):
        load_transfers(orphan)
    corrupt = tmp_path / "corrupt"
    write_dataset(corrupt, [(1000, 1001)])
    (corrupt / layout.CURSOR_FILE).write_text('{"schema_version": 1, "next')
    with pytest.raises(CursorError):
        load_transfers(corrupt)


def test_time_filters_start_inclusive_end_exclusive(dataset):
    root, rows = dataset
    midnight = "2026-11-28"
    after = load_transfers(root, start=midnight)
    assert_rows(after, [r for r in rows if r.block_time >= block_time(1120)])
    assert after["block_num"].iloc[0] == 1120  # exactly at midnight: included
    before = load_transfers(root, end=dt.date(2026, 11, 28))
    assert before["block_num"].iloc[-1] == 1119  # midnight excluded
    assert len(before) + len(after) == len(rows)
    # Naive datetime = UTC; aware datetime converted; ISO text with offset.
    window = load_transfers(
        root, start=dt.datetime(2026, 11, 28, 0, 0, 5), end="2026-11-28T01:00:10+01:00"
    )
    assert window["block_num"].tolist() == list(range(1130, 1140))
    aware = dt.datetime(2026, 11, 27, 19, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert load_transfers(root, start=aware)["block_num"].iloc[0] == 1130
    ts = pd.Timestamp("2026-11-28 00:00:05", tz="UTC")
    assert load_transfers(root, end=ts)["block_num"].iloc[-1] == 1129
    assert len(load_transfers(root, start=midnight, end=midnight)) == 0
    with pytest.raises(UsageError):
        load_transfers(root, start="2026-11-29", end="2026-11-28")
    with pytest.raises(UsageError):
        load_transfers(root, start=12345)
    with pytest.raises(UsageError):
        load_transfers(root, start="not a date")


def test_block_and_account_filters(dataset):
    root, rows = dataset
    frame = load_transfers(root, blocks=(1150, 1160))
    assert frame["block_num"].tolist() == list(range(1150, 1161))
    assert len(load_transfers(root, blocks=(1300, 1400))) == 0
    frame = load_transfers(root, accounts="alice")
    want = [r for r in rows if "alice" in (r.from_account, r.to_account)]
    assert_rows(frame, want)
    assert any(r.from_account != "alice" for r in want)  # OR, not AND
    frame = load_transfers(root, from_accounts=["bob", "carol"], to_accounts="alice")
    want = [r for r in rows if r.from_account in ("bob", "carol") and r.to_account == "alice"]
    assert_rows(frame, want)
    assert len(want) > 0
    with pytest.raises(UsageError):
        load_transfers(root, blocks=(5, 1))
    with pytest.raises(UsageError):
        load_transfers(root, accounts=[])


def test_symbol_and_exact_min_amount(tmp_path):
    root = tmp_path / "ds"
    karma = make_rows(1000, 1009)
    karma = [r._replace(amount_units=999 + i) for i, r in enumerate(karma)]  # 0.0999 .. 0.1008
    other = [
        r._replace(
            symbol="EOS", precision=2, amount_units=9 + i, global_sequence=r.global_sequence + 1
        )
        for i, r in enumerate(make_rows(1000, 1009))
    ]
    rows = sorted(karma + other, key=lambda r: r.global_sequence)
    write_part(root, 1000, 1009, rows)
    write_cursor(root, 1010, rows)
    frame = load_transfers(root, min_amount=0.1)
    # 0.1 KARMA = 1000 units (precision 4); 0.1 EOS = 10 units (precision 2): exact boundaries.
    assert sorted(frame.loc[frame["symbol"] == "KARMA", "amount_units"]) == list(range(1000, 1009))
    assert sorted(frame.loc[frame["symbol"] == "EOS", "amount_units"]) == list(range(10, 19))
    assert (frame["amount"] >= 0.1).all()
    only = load_transfers(root, symbol="KARMA", min_amount="0.1005")
    assert only["amount_units"].tolist() == [1005, 1006, 1007, 1008]
    assert set(load_transfers(root, symbol="2,EOS")["symbol"]) == {"EOS"}
    assert len(load_transfers(root, symbol="4,EOS")) == 0
    with pytest.raises(UsageError):
        load_transfers(root, min_amount="lots")


def test_columns_selection(dataset):
    root, rows = dataset
    frame = load_transfers(root, columns=["to_account", "amount"])
    assert list(frame.columns) == ["to_account", "amount"]
    assert frame["amount"].tolist() == [r.amount_units / 10**4 for r in rows]
    assert frame["to_account"].tolist() == [r.to_account for r in rows]
    empty = load_transfers(root / "nothing", columns=["block_time"])
    assert list(empty.columns) == ["block_time"]
    with pytest.raises(UsageError, match="unknown columns"):
        load_transfers(root, columns=["from"])


def test_date_filter_never_opens_other_partitions(dataset):
    """Partition pruning: a broken part in another day does not matter to a one-day load."""
    root, rows = dataset
    for path in (root / "date=2026-11-27").iterdir():
        path.write_bytes(b"not parquet")
    frame = load_transfers(root, start="2026-11-28", end="2026-11-29")
    assert_rows(frame, [r for r in rows if r.block_num >= 1120])
    with pytest.raises(pa.ArrowInvalid):
        load_transfers(root)


def test_block_filter_never_opens_other_parts(dataset):
    root, _rows = dataset
    (root / "date=2026-11-28" / layout.part_filename(1000, 1099)).write_bytes(b"junk")
    frame = load_transfers(root, blocks=(1200, 1210))
    assert frame["block_num"].tolist() == list(range(1200, 1211))


class CountingHandler(pafs.FileSystemHandler):
    """A PyFileSystem handler over a local folder that records every path listed or opened."""

    def __init__(self, base: Path) -> None:
        self.fs = pafs.SubTreeFileSystem(str(base), pafs.LocalFileSystem())
        self.opened: list[str] = []
        self.listed: list[str] = []

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        self.listed.append(selector.base_dir)
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        self.opened.append(path)
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        self.opened.append(path)
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)


def test_pyfilesystem_wrapper_and_pruning(dataset):
    root, rows = dataset
    handler = CountingHandler(root.parent)
    filesystem = pafs.PyFileSystem(handler)
    frame = load_transfers("transfers", filesystem=filesystem)
    assert_rows(frame, rows)
    handler.opened.clear()
    handler.listed.clear()
    frame = load_transfers("transfers", filesystem=filesystem, start="2026-11-28")
    assert_rows(frame, [r for r in rows if r.block_num >= 1120])
    assert not any("2026-11-27" in path for path in handler.opened + handler.listed)
    assert any("2026-11-28" in path for path in handler.opened)


def test_file_uri_subtree_and_mock_filesystems(dataset):
    root, rows = dataset
    assert_rows(load_transfers(root.as_uri()), rows)
    assert_rows(load_transfers(str(root)), rows)
    subtree = pafs.SubTreeFileSystem(str(root.parent), pafs.LocalFileSystem())
    assert_rows(load_transfers("transfers", filesystem=subtree), rows)
    # An in-memory filesystem: nothing local about it.
    mock = pafs._MockFileSystem()
    mock.create_dir("bucket/transfers")
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir():
            mock.create_dir(f"bucket/transfers/{relative}")
        else:
            with mock.open_output_stream(f"bucket/transfers/{relative}") as out:
                out.write(path.read_bytes())
    assert_rows(load_transfers("bucket/transfers", filesystem=mock), rows)
    assert dataset_info("bucket/transfers", filesystem=mock).rows == len(rows)
    assert verify("bucket/transfers", filesystem=mock).ok


# --- info ---------------------------------------------------------------------------------------


def test_dataset_info(dataset):
    root, rows = dataset
    (root / "date=2026-11-28" / ".part-x.tmp").write_bytes(b"")
    write_part(root, 1300, 1310, make_rows(1300, 1310))  # uncommitted leftover
    info = dataset_info(root)
    assert info.rows == len(rows)
    assert info.parts == 4  # 1000-1099 split over two days, then two more parts
    assert info.days == (dt.date(2026, 11, 27), dt.date(2026, 11, 28))
    assert info.first_block == 1000 and info.last_block == 1299
    assert info.first_time == block_time(1000) and info.last_time == block_time(1299)
    assert info.bytes == sum(
        os.path.getsize(p) for p in root.rglob("part-*.parquet") if "1300" not in p.name
    )
    assert info.cursor.next_block == info.next_block == 1300
    assert info.request.contract == "therealkarma"
    assert info.skipped_parts == 1 and info.temp_files == 1
    text = str(info)
    assert "rows" in text and "300" in text and "2026-11-27" in text and "next_block" in text
    assert "<table>" in info._repr_html_()
    assert info.as_dict()["rows"] == 300
    empty = dataset_info(root.parent / "none")
    assert empty.rows == 0 and empty.cursor is None and empty.first_block is None
    assert "sidecar" in str(empty)


# --- verify -------------------------------------------------------------------------------------


def test_verify_clean_dataset(dataset):
    root, rows = dataset
    write_part(root, 1000, 1299, rows)  # compaction finished writing, small parts not yet gone
    report = verify(root)
    assert report.ok, str(report)
    assert report.problems == []
    assert report.rows_checked == len(rows)
    assert any("compaction leftover" in note for note in report.notes)
    assert "OK" in str(report)


def _problems(root: Path) -> str:
    report = verify(root)
    assert not report.ok
    assert "PROBLEM" in str(report)
    return "\n".join(report.problems)


def test_verify_finds_leftovers_and_overlaps(dataset):
    root, _rows = dataset
    write_part(root, 1300, 1310, make_rows(1300, 1310))
    (root / "date=2026-11-28" / ".part-0000001300-0000001310.parquet.tmp").write_bytes(b"x")
    (root / "date=2026-11-28" / layout.part_filename(1190, 1210)).write_bytes(b"")
    (root / "README.txt").write_text("hi")
    text = _problems(root)
    assert "uncommitted part" in text
    assert "temp file" in text
    assert "overlap" in text
    assert "foreign entry 'README.txt'" in text


def test_verify_finds_duplicates_and_count_mismatch(tmp_path):
    root = tmp_path / "ds"
    rows = make_rows(1000, 1009)
    write_part(root, 1000, 1004, rows[:5])
    dup = rows[5:]
    dup[0] = dup[0]._replace(global_sequence=rows[0].global_sequence)
    write_part(root, 1005, 1009, dup)
    write_cursor(root, 1010, rows, rows=12)
    text = _problems(root)
    assert "duplicate global_sequence" in text
    assert "sidecar counts 12 rows but the committed parts hold 10" in text


def test_verify_finds_rows_outside_name_and_day(tmp_path):
    root = tmp_path / "ds"
    rows = make_rows(1000, 1009)
    folder = root / "date=2026-11-28"
    folder.mkdir(parents=True)
    pq.write_table(transfers_to_table(rows), folder / layout.part_filename(1000, 1005))
    write_cursor(root, 1010, rows)
    text = _problems(root)
    assert "outside its name's range" in text
    assert "outside its partition day 2026-11-28" in text


def test_verify_finds_unreadable_and_wrong_schema(tmp_path):
    root = tmp_path / "ds"
    rows = write_dataset(root, [(1000, 1009), (1010, 1019)])
    (root / "date=2026-11-27" / layout.part_filename(1000, 1009)).write_bytes(b"garbage")
    pq.write_table(
        pa.table({"x": [1]}), root / "date=2026-11-27" / layout.part_filename(1010, 1019)
    )
    text = _problems(root)
    assert "unreadable" in text
    assert "another schema" in text
    assert len(rows) == 20


def test_verify_missing_or_corrupt_sidecar_and_gs_above_cursor(tmp_path):
    root = tmp_path / "ds"
    rows = make_rows(1000, 1004)
    write_part(root, 1000, 1004, rows)
    assert "no _cursor.json" in _problems(root)
    (root / layout.CURSOR_FILE).write_text("{")
    assert "sidecar unreadable" in _problems(root)
    write_cursor(root, 1005, rows, last_global_sequence=rows[-2].global_sequence)
    assert "above the sidecar's last_global_sequence" in _problems(root)
    assert "does not exist" in _problems(tmp_path / "missing")
    assert verify(tmp_path / "missing").ok is False


# --- command line -------------------------------------------------------------------------------


def test_cli_exit_codes(dataset, capsys, tmp_path):
    root, _rows = dataset
    assert main(["info", str(root)]) == 0
    assert "rows" in capsys.readouterr().out
    assert main(["info", "--json", str(root)]) == 0
    assert '"rows": 300' in capsys.readouterr().out
    assert main(["verify", str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    (root / "date=2026-11-28" / ".part-x.tmp").write_bytes(b"")
    assert main(["verify", str(root)]) == 4  # problems found: the dataset needs attention
    assert "temp file" in capsys.readouterr().out
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert main(["info", str(a_file)]) == 4  # not a dataset (DatasetError)
    assert "is a file" in capsys.readouterr().err
    assert main(["frobnicate", str(root)]) == 2
    assert main([]) == 2


@pytest.mark.slow
def test_cli_as_a_process(dataset):
    root, _ = dataset
    done = subprocess.run(
        [sys.executable, "-m", "karma_analytics.dataset", "verify", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "karma_analytics.dataset", "info", str(root / "_cursor.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 4


def test_schema_of_helper_matches_design():
    assert transfers_to_table(make_rows(1000, 1000)).schema.equals(ARROW_SCHEMA)
