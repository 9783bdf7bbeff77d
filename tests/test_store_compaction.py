"""Compaction of finished days: merged atomically, readers see old parts or the merged one."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_store_support import (
    DAY1,
    DAY2,
    REQUEST,
    Crash,
    StepInjector,
    commit_blocks,
    committed,
    expected_sequences,
    make_rows,
    os_error,
    read_committed,
    temp_files,
)

from karma_analytics import layout, model
from karma_analytics.store import Store, read_part_metadata

DAY1_DIR = layout.partition_name(DAY1)
DAY2_DIR = layout.partition_name(DAY2)
# Three commits inside day 1, then one crossing midnight (block 1000).
RANGES = [(900, 920), (920, 950), (950, 990), (990, 1010)]
OLD_DAY1 = [f"{DAY1_DIR}/{layout.part_filename(a, b - 1)}" for a, b in RANGES]
MERGED = f"{DAY1_DIR}/{layout.part_filename(900, 1009)}"


def parts_of(root: Path, day_dir: str) -> list[str]:
    return sorted(f"{day_dir}/{p.name}" for p in (root / day_dir).iterdir())


def build(root: Path, *, auto_compact: bool) -> Store:
    store = Store.open(root, REQUEST, auto_compact=auto_compact)
    for first, nxt in RANGES:
        commit_blocks(store, first, nxt)
    return store


def test_finished_day_is_compacted_by_the_commit_that_leaves_it(tmp_path):
    store = Store.open(tmp_path, REQUEST)
    for first, nxt in RANGES[:3]:
        commit_blocks(store, first, nxt)
    # Day 1 is not finished yet: its parts stay.
    assert parts_of(tmp_path, DAY1_DIR) == OLD_DAY1[:3]
    commit_blocks(store, *RANGES[3])
    assert parts_of(tmp_path, DAY1_DIR) == [MERGED]
    assert parts_of(tmp_path, DAY2_DIR) == [f"{DAY2_DIR}/{layout.part_filename(990, 1009)}"]
    assert read_committed(tmp_path) == expected_sequences(900, 1010)

    path = tmp_path / MERGED
    table = pq.ParquetFile(path).read()
    assert table.schema.remove_metadata().equals(model.ARROW_SCHEMA)
    assert table.column("global_sequence").to_pylist() == expected_sequences(900, 1000)
    assert pq.read_metadata(path).row_group(0).column(0).compression == "ZSTD"
    meta = read_part_metadata(path)
    assert meta["karma.kind"] == "compaction"
    assert (meta["karma.first_block"], meta["karma.last_block"]) == ("900", "1009")
    assert json.loads(meta["karma.merged"]) == [[a, b - 1] for a, b in RANGES]
    assert meta["karma.commits"] == "4" and meta["karma.rows"] == "200"
    assert json.loads(meta["karma.commit"])["last_block_num"] == 1009

    # More commits in day 2 leave day 1 alone and do not merge the unfinished day 2.
    commit_blocks(store, 1010, 1020)
    commit_blocks(store, 1020, 1030)
    assert parts_of(tmp_path, DAY1_DIR) == [MERGED]
    assert len(parts_of(tmp_path, DAY2_DIR)) == 3
    store.close()
    # A rebuilt sidecar from merged + small parts matches the real one.
    from karma_analytics.store import rebuild_sidecar

    real = layout.Cursor.from_json_bytes((tmp_path / layout.CURSOR_FILE).read_bytes())
    rebuilt = rebuild_sidecar(tmp_path, REQUEST, force=True)
    assert (rebuilt.next_block, rebuilt.rows, rebuilt.last_global_sequence) == (
        real.next_block,
        real.rows,
        real.last_global_sequence,
    )
    assert rebuilt.last_block_id == real.last_block_id
    assert rebuilt.commits == real.commits == 6


def test_explicit_compact(tmp_path):
    with Store.open(tmp_path, REQUEST, auto_compact=False) as store:
        assert store.compact() == 0  # nothing committed
        for first, nxt in RANGES:
            commit_blocks(store, first, nxt)
        assert store.compact(before_day=DAY1) == 0
        assert len(parts_of(tmp_path, DAY1_DIR)) == 4
        assert store.compact() == 1
        assert parts_of(tmp_path, DAY1_DIR) == [MERGED]
        assert store.compact() == 0  # one part left: nothing to merge
        # An explicit run may merge the unfinished day too; later parts stay outside its range.
        commit_blocks(store, 1010, 1020)
        assert store.compact(before_day=DAY2.replace(day=28)) == 1
        commit_blocks(store, 1020, 1030)
        assert read_committed(tmp_path) == expected_sequences(900, 1030)
        assert parts_of(tmp_path, DAY2_DIR) == [
            f"{DAY2_DIR}/{layout.part_filename(990, 1019)}",
            f"{DAY2_DIR}/{layout.part_filename(1020, 1029)}",
        ]
        # Merging a merged part again keeps the list of the commits it holds.
        assert store.compact(before_day=DAY2.replace(day=28)) == 1
        path = tmp_path / DAY2_DIR / layout.part_filename(990, 1029)
        assert parts_of(tmp_path, DAY2_DIR) == [f"{DAY2_DIR}/{path.name}"]
        meta = read_part_metadata(path)
        assert json.loads(meta["karma.merged"]) == [[990, 1009], [1010, 1019], [1020, 1029]]
        assert meta["karma.commits"] == "3"
        assert read_committed(tmp_path) == expected_sequences(900, 1030)


@pytest.mark.slow
def test_crash_at_every_step_of_a_compaction(tmp_path, monkeypatch):
    probe = tmp_path / "probe"
    store = build(probe, auto_compact=False)
    with monkeypatch.context() as patch:
        counter = StepInjector(probe, None).install(patch)
        assert store.compact() == 1
    store.close()
    steps = counter.steps
    assert [s.split(" ")[0] for s in steps] == ["write", "fsync", "replace", "fsync"] + [
        "unlink"
    ] * 4 + ["fsync"]
    merged_at = 3  # the rename of the merged part

    for at in range(1, len(steps) + 1):
        root = tmp_path / f"crash-{at}"
        store = build(root, auto_compact=False)
        with monkeypatch.context() as patch:
            StepInjector(root, at).install(patch)
            with pytest.raises(Crash):
                store.compact()
        # A reader right now (the writer is dead): old parts or the merged one, never both,
        # and every committed row exactly once.
        seen = [p.path for p in committed(root) if p.day == DAY1]
        assert seen == (OLD_DAY1 if at <= merged_at else [MERGED]), (at, steps[at - 1])
        assert read_committed(root) == expected_sequences(900, 1010)
        store.close()
        # The next writer cleans up, and a rerun finishes the merge.
        with Store.open(root, REQUEST, auto_compact=False) as store:
            assert temp_files(root) == []
            on_disk = parts_of(root, DAY1_DIR)
            assert on_disk == (OLD_DAY1 if at <= merged_at else [MERGED])
            store.compact()
        assert parts_of(root, DAY1_DIR) == [MERGED]
        assert read_committed(root) == expected_sequences(900, 1010)
        shutil.rmtree(root)


def test_crash_mid_compaction_is_cleaned_by_a_rerun_in_the_same_process(tmp_path, monkeypatch):
    store = build(tmp_path, auto_compact=False)
    with monkeypatch.context() as patch:
        StepInjector(tmp_path, 1, kinds=("unlink",)).install(patch)
        with pytest.raises(Crash):
            store.compact()
    assert sorted(parts_of(tmp_path, DAY1_DIR)) == sorted([*OLD_DAY1, MERGED])
    assert store.compact() == 0  # removes the hidden small parts; nothing left to merge
    assert parts_of(tmp_path, DAY1_DIR) == [MERGED]
    store.close()


def test_failed_auto_compaction_keeps_the_commit(tmp_path, monkeypatch, caplog):
    store = Store.open(tmp_path, REQUEST)
    for first, nxt in RANGES[:3]:
        commit_blocks(store, first, nxt)
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING):
        # The commit's own writes succeed; the merged part's write hits a full disk.
        StepInjector(
            tmp_path, 1, os_error(errno.ENOSPC), kinds=("write",), match=lambda p: "0900-" in p
        ).install(patch)
        cursor = commit_blocks(store, *RANGES[3])
    assert cursor.next_block == 1010 and store.next_block == 1010
    assert "compaction after the commit failed" in caplog.text and "disk is full" in caplog.text
    assert parts_of(tmp_path, DAY1_DIR) == OLD_DAY1
    assert temp_files(tmp_path) == []
    assert read_committed(tmp_path) == expected_sequences(900, 1010)
    # An explicit run (or the next day boundary) merges it later.
    assert store.compact() == 1
    assert parts_of(tmp_path, DAY1_DIR) == [MERGED]
    store.close()


def test_compact_command(tmp_path, capsys):
    from karma_analytics.dataset import main
    from karma_analytics.store import main as store_main

    build(tmp_path, auto_compact=False).close()
    assert main(["compact", str(tmp_path)]) == 0
    assert "1 day(s) merged" in capsys.readouterr().out
    assert parts_of(tmp_path, DAY1_DIR) == [MERGED]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compact", str(empty)]) == 0
    assert "nothing to compact" in capsys.readouterr().out
    # Compaction has one command; the store's old one points to it.
    assert store_main(["compact", str(tmp_path)]) == 2
    assert "python -m karma_analytics.dataset compact PATH" in capsys.readouterr().err


def test_merge_streams_in_order_parts_and_sorts_the_rest(tmp_path, monkeypatch):
    """Parts in global_sequence order are merged row group by row group (bounded memory);
    only parts out of order fall back to an in-memory sort, and both give sorted rows."""
    import karma_analytics.store as store_module

    def no_full_read(*args, **kwargs):
        raise AssertionError("an in-order day must not be read into memory whole")

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "_read_sorted", no_full_read)
        store = build(tmp_path / "ordered", auto_compact=False)
        assert store.compact() == 1
        store.close()
    assert read_committed(tmp_path / "ordered") == expected_sequences(900, 1010)

    # A later commit whose rows sort before the earlier one's (not a real chain, but the
    # merged part must still be sorted by global_sequence).
    root = tmp_path / "unordered"
    store = Store.open(root, REQUEST, auto_compact=False)
    early, late = make_rows(900, 920), make_rows(920, 950)
    late = [row._replace(global_sequence=row.global_sequence - 1000) for row in late]
    for rows, (first, nxt) in ((early, (900, 920)), (late, (920, 950))):
        store.commit(rows=rows, first_block=first, next_block=nxt)
    calls = []
    real = store_module._read_sorted
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "_read_sorted", lambda *a: calls.append(a) or real(*a))
        assert store.compact(before_day=DAY2) == 1
    store.close()
    assert len(calls) == 1
    merged = read_committed(root)
    assert merged == sorted(r.global_sequence for r in early + late)
    assert temp_files(root) == []
