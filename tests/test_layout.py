"""Part names, the sidecar format and the reader rule."""

from __future__ import annotations

import datetime as dt

import pyarrow.fs as pafs
import pytest

from karma_analytics.exceptions import CursorError, DatasetError
from karma_analytics.layout import (
    Cursor,
    Listing,
    PartRef,
    Request,
    committed_parts,
    day_of_ms,
    list_parts,
    parse_part_filename,
    parse_partition_name,
    part_filename,
    read_cursor,
    scan,
)

DAY = dt.date(2026, 11, 27)


def part(first, last, day=DAY):
    return PartRef(first, last, f"date={day.isoformat()}/{part_filename(first, last)}", day)


def test_part_names_round_trip():
    name = part_filename(152000010, 152000399)
    assert name == "part-0152000010-0152000399.parquet"
    assert parse_part_filename(name) == (152000010, 152000399)
    assert parse_part_filename(".part-0152000010-0152000399.parquet.tmp") is None
    assert parse_part_filename("part-0000000009-0000000001.parquet") is None
    assert parse_partition_name("date=2026-11-27") == DAY
    assert parse_partition_name("date=2026-02-30") is None
    assert day_of_ms(0) == dt.date(1970, 1, 1)
    assert day_of_ms(86_400_000 - 1) == dt.date(1970, 1, 1)


def test_reader_rule_cursor_bound():
    parts = [part(0, 9), part(10, 19), part(20, 29)]
    assert committed_parts(parts, 20) == parts[:2]
    assert committed_parts(parts, 29) == parts[:2]
    assert committed_parts(parts, 30) == parts


def test_reader_rule_skips_contained_parts_within_a_partition():
    small = [part(0, 9), part(10, 19), part(20, 29)]
    merged = part(0, 29)
    assert committed_parts([*small, merged], 30) == [merged]
    # A part of another day with a contained range is its own data, not a leftover.
    other_day = part(10, 19, DAY + dt.timedelta(days=1))
    assert committed_parts([merged, other_day], 30) == [merged, other_day]
    # Partial overlap is not containment: both stay (verify() reports it).
    overlap = [part(0, 15), part(10, 19)]
    assert committed_parts(overlap, 30) == overlap


def test_cursor_round_trip_and_damage(tmp_path):
    request = Request.for_token(endpoint="ws://127.0.0.1:1/v1/stream")
    cursor = Cursor(request=request, next_block=42, last_block_time=1605873605500, rows=3)
    data = cursor.to_json_bytes()
    assert Cursor.from_json_bytes(data) == cursor
    for damaged in (
        data[: len(data) // 2],
        b"",
        b"[]",
        data.replace(b'"next_block": 42', b'"next_block": "x"'),
    ):
        with pytest.raises(CursorError, match="repair"):
            Cursor.from_json_bytes(damaged, path="x/_cursor.json")
    assert request.identity() == Request.for_token(endpoint="other").identity()
    assert request.identity() != Request.for_token("eosio.token").identity()


def test_list_parts_ignores_hidden_and_foreign_files(tmp_path):
    folder = tmp_path / "date=2026-11-27"
    folder.mkdir()
    for name in (
        part_filename(0, 9),
        ".part-0000000010-0000000019.parquet.tmp",
        "_x.parquet",
        "notes.txt",
    ):
        (folder / name).write_bytes(b"x")
    (tmp_path / "_rejects").mkdir()
    (tmp_path / ".hidden").mkdir()
    fs = pafs.LocalFileSystem()
    assert [p.path for p in list_parts(fs, str(tmp_path))] == [
        f"date=2026-11-27/{part_filename(0, 9)}"
    ]
    assert read_cursor(fs, str(tmp_path)) is None
    (tmp_path / "_cursor.json").write_bytes(Cursor(Request.for_token(), 10).to_json_bytes())
    assert read_cursor(fs, str(tmp_path)).next_block == 10


def test_scan_classifies_and_filters_by_day_and_list_parts_agrees(tmp_path) -> None:
    fs = pafs.LocalFileSystem()
    for relative in [
        "date=2026-11-26/part-0000000001-0000000099.parquet",
        "date=2026-11-26/.part-0000000100-0000000120.parquet.tmp",
        "date=2026-11-27/part-0000000200-0000000299.parquet",
        "date=2026-11-27/part-0000000100-0000000199.parquet",
        "date=2026-11-27/notes.txt",
        "date=2026-11-27/_ignored.parquet",
        "date=2026-11-28/part-0000000300-0000000399.parquet",
        "stray.csv",
        "_cursor.json",
    ]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    (tmp_path / "date=2026-11-27" / "part-0000000400-0000000499.parquet").mkdir()

    whole = scan(fs, str(tmp_path) + "/")
    assert whole.exists
    assert whole.partition_days == [
        dt.date(2026, 11, 26),
        dt.date(2026, 11, 27),
        dt.date(2026, 11, 28),
    ]
    assert whole.temp_files == ["date=2026-11-26/.part-0000000100-0000000120.parquet.tmp"]
    assert sorted(whole.foreign) == [
        "date=2026-11-27/notes.txt",
        "date=2026-11-27/part-0000000400-0000000499.parquet",  # a folder, not a file
        "stray.csv",
    ]
    assert list_parts(fs, str(tmp_path)) == sorted(whole.parts)
    assert [p.first_block for p in list_parts(fs, str(tmp_path))] == [1, 100, 200, 300]

    one_day = scan(
        fs, str(tmp_path), first_day=dt.date(2026, 11, 27), last_day=dt.date(2026, 11, 27)
    )
    assert {p.day for p in one_day.parts} == {dt.date(2026, 11, 27)}
    assert one_day.temp_files == []  # the other partitions were not listed at all
    assert len(one_day.partition_days) == 3

    assert scan(fs, str(tmp_path / "missing")) == Listing()
    with pytest.raises(DatasetError, match="is a file"):
        scan(fs, str(tmp_path / "stray.csv"))
