"""The Parquet writer: commits, read back, sidecar, rejects, request check, lock, repair.

Faults and crashes are in test_store_faults.py, compaction in test_store_compaction.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_store_support import (
    DAY1,
    DAY2,
    REQUEST,
    all_files,
    block_time,
    commit_blocks,
    committed,
    expected_sequences,
    make_reject,
    make_rows,
    read_committed,
)

from karma_analytics import layout, model
from karma_analytics.exceptions import (
    ChainMismatchError,
    CursorError,
    LockedError,
    RequestMismatchError,
    UsageError,
)
from karma_analytics.layout import CURSOR_FILE, Cursor, Request
from karma_analytics.store import (
    META_KEYS,
    Store,
    main,
    read_part_metadata,
    rebuild_sidecar,
    rejects_filename,
)

REPO = Path(__file__).resolve().parents[1]
CHAIN_A = "a" * 64
CHAIN_B = "b" * 64


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "karma_analytics.store", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


# --- commit and read back ---------------------------------------------------------------------


def test_commit_and_read_back(tmp_path):
    root = tmp_path / "transfers"
    with Store.open(root, REQUEST, auto_compact=False) as store:
        assert store.cursor is None
        first = commit_blocks(store, 900, 950)
        # The second commit crosses midnight (block 1000): one part per day, same range name.
        second = commit_blocks(store, 950, 1050)
    assert first.next_block == 950 and first.rows == 100 and first.commits == 1
    assert second.next_block == 1050 and second.rows == 300 and second.commits == 2
    assert second.last_global_sequence == 1049 * 10 + 1
    assert second.last_block_time == block_time(1049)

    name_a = layout.part_filename(900, 949)
    name_b = layout.part_filename(950, 1049)
    assert all_files(root) == sorted(
        [
            CURSOR_FILE,
            layout.LOCK_FILE,
            f"{layout.partition_name(DAY1)}/{name_a}",
            f"{layout.partition_name(DAY1)}/{name_b}",
            f"{layout.partition_name(DAY2)}/{name_b}",
        ]
    )
    assert read_committed(root) == expected_sequences(900, 1050)

    # Every part: the model's schema, zstd, sorted by global_sequence, its rows on its day.
    for part in committed(root):
        path = root / part.path
        table = pq.ParquetFile(path).read()
        assert table.schema.remove_metadata().equals(model.ARROW_SCHEMA)
        seq = table.column("global_sequence").to_pylist()
        assert seq == sorted(seq)
        days = {
            layout.day_of_ms(t) for t in model.table_to_transfers(table) for t in [t.block_time]
        }
        assert days == {part.day}
        meta = pq.read_metadata(path)
        assert meta.row_group(0).column(0).compression == "ZSTD"

    # The sidecar as written is the cursor returned.
    cursor = layout.Cursor.from_json_bytes((root / CURSOR_FILE).read_bytes())
    assert cursor.next_block == 1050 and cursor.rows == 300
    assert cursor.request == REQUEST
    assert cursor.written_at.endswith("Z")

    # Reopening resumes from the sidecar.
    with Store.open(root, REQUEST) as store:
        assert store.cursor == cursor
        assert store.next_block == 1050


def test_part_metadata_records_the_commit(tmp_path):
    with Store.open(tmp_path, REQUEST) as store:
        commit_blocks(store, 950, 1050, rejects=[make_reject(960)])
    path = tmp_path / layout.partition_name(DAY2) / layout.part_filename(950, 1049)
    meta = read_part_metadata(path)
    assert set(meta) == set(META_KEYS) - {"karma.merged"}
    assert meta["karma.schema_version"] == str(model.SCHEMA_VERSION)
    assert meta["karma.kind"] == "commit"
    assert (meta["karma.first_block"], meta["karma.last_block"]) == ("950", "1049")
    assert meta["karma.next_block"] == "1050"
    assert meta["karma.rows"] == "100" == str(pq.read_metadata(path).num_rows)
    commit = json.loads(meta["karma.commit"])
    assert commit["days"] == [DAY1.isoformat(), DAY2.isoformat()]
    assert commit["rejects"] == 1 and commit["rows"] == 200
    assert commit["last_block_num"] == 1049
    assert commit["last_global_sequence"] == 10491
    assert json.loads(meta["karma.request"]) == {
        "source": "dfuse",
        "endpoint": REQUEST.endpoint,
        "contract": "therealkarma",
        "action": "transfer",
        "accounts": "therealkarma",
        "receivers": "therealkarma",
        "action_names": "transfer",
        "irreversible_only": True,
    }


def test_rows_in_any_order_are_written_sorted(tmp_path):
    rows = make_rows(100, 200)
    shuffled = rows[1::2] + rows[::2]
    with Store.open(tmp_path, REQUEST) as store:
        cursor = store.commit(
            rows=shuffled, first_block=100, next_block=200, last_block_time=block_time(199)
        )
    assert read_committed(tmp_path) == [r.global_sequence for r in rows]
    # last_global_sequence defaults to the highest committed one.
    assert cursor.last_global_sequence == rows[-1].global_sequence


def test_commit_table_takes_a_prebuilt_table(tmp_path):
    table = model.transfers_to_table(make_rows(10, 20))
    with Store.open(tmp_path, REQUEST) as store:
        cursor = store.commit_table(table, first_block=10, next_block=20)
        with pytest.raises(UsageError, match="columns"):
            store.commit_table(table.drop_columns(["memo"]), first_block=20, next_block=30)
    assert cursor.rows == 20
    assert read_committed(tmp_path) == expected_sequences(10, 20)


def test_zero_row_commit_only_rewrites_the_sidecar(tmp_path):
    with Store.open(tmp_path, REQUEST) as store:
        # The runner records the start block before any data (DESIGN.md, hole 2).
        cursor = store.commit(rows=[], first_block=500, next_block=500)
        assert all_files(tmp_path) == [CURSOR_FILE, layout.LOCK_FILE]
        assert cursor.next_block == 500 and cursor.rows == 0 and cursor.commits == 1
        before = (tmp_path / CURSOR_FILE).read_bytes()
        cursor = store.commit(
            rows=[], first_block=500, next_block=700, last_block_num=699, last_block_time=1
        )
        assert all_files(tmp_path) == [CURSOR_FILE, layout.LOCK_FILE]
        assert (tmp_path / CURSOR_FILE).read_bytes() != before
    assert cursor.next_block == 700 and cursor.last_block_num == 699 and cursor.commits == 2


def test_commit_refuses_inconsistent_ranges_and_writes_nothing(tmp_path):
    with Store.open(tmp_path, REQUEST) as store:
        commit_blocks(store, 100, 200)
        before = all_files(tmp_path), (tmp_path / CURSOR_FILE).read_bytes()
        with pytest.raises(UsageError, match="below the durable next_block"):
            commit_blocks(store, 150, 250)
        with pytest.raises(UsageError, match="outside the commit range"):
            store.commit(rows=make_rows(200, 260), first_block=200, next_block=250)
        with pytest.raises(UsageError, match="bad commit range"):
            store.commit(rows=[], first_block=300, next_block=299)
        assert (all_files(tmp_path), (tmp_path / CURSOR_FILE).read_bytes()) == before
        # A closed store refuses to commit.
    with pytest.raises(UsageError, match="closed"):
        commit_blocks(store, 200, 210)


# --- rejects ------------------------------------------------------------------------------------


def test_rejects_are_written_per_commit_and_counted(tmp_path):
    rejects = [make_reject(120), make_reject(130, reason="from: not a valid name")]
    mapping_reject = {"block_num": 220, "reason": "bad", "raw": {"x": 1}}
    with Store.open(tmp_path, REQUEST) as store:
        cursor = commit_blocks(store, 100, 200, rejects=rejects)
        assert cursor.rejects == 2
        # A commit without rows but with a reject writes the rejects file and the sidecar only.
        cursor = store.commit(rows=[], rejects=[mapping_reject], first_block=200, next_block=300)
        assert cursor.rejects == 3 and cursor.rows == 200
    path = tmp_path / layout.REJECTS_DIR / rejects_filename(100, 199)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {
            "block_num": r.block_num,
            "block_id": r.block_id,
            "trx_id": r.trx_id,
            "action_idx": r.action_idx,
            "global_sequence": r.global_sequence,
            "reason": r.reason,
            "raw": r.raw,
        }
        for r in rejects
    ]
    second = tmp_path / layout.REJECTS_DIR / rejects_filename(200, 299)
    (only,) = [json.loads(line) for line in second.read_text().splitlines()]
    assert only["reason"] == "bad" and json.loads(only["raw"]) == {"x": 1}
    assert only["trx_id"] is None
    # Rejects are never data for a reader.
    assert read_committed(tmp_path) == expected_sequences(100, 200)


def test_rejects_of_an_uncommitted_commit_are_removed_at_open(tmp_path):
    with Store.open(tmp_path, REQUEST) as store:
        commit_blocks(store, 100, 200)
    # Leftover of a commit whose sidecar never landed.
    leftover = tmp_path / layout.REJECTS_DIR / rejects_filename(200, 299)
    leftover.parent.mkdir()
    leftover.write_text('{"reason": "x"}\n')
    with Store.open(tmp_path, REQUEST) as store:
        assert not leftover.exists()
        assert store.cursor.rejects == 0


# --- request identity ---------------------------------------------------------------------------


def test_request_mismatch_is_refused(tmp_path):
    with Store.open(tmp_path, REQUEST) as store:
        commit_blocks(store, 100, 110)
    other = Request.for_token("eosio.token", endpoint=REQUEST.endpoint)
    with pytest.raises(RequestMismatchError) as info:
        Store.open(tmp_path, other)
    message = str(info.value)
    assert "'therealkarma'" in message and "'eosio.token'" in message
    assert "--out" in message and "original flags" in message
    assert "contract" in message
    reversible = Request.for_token(endpoint=REQUEST.endpoint, irreversible_only=False)
    with pytest.raises(RequestMismatchError, match="irreversible_only"):
        Store.open(tmp_path, reversible)
    # The refused opens released the lock: the right request opens.
    with Store.open(tmp_path, REQUEST) as store:
        assert store.next_block == 110


def test_another_endpoint_is_accepted_logged_and_recorded(tmp_path, caplog):
    with Store.open(tmp_path, REQUEST) as store:
        commit_blocks(store, 100, 110)
    moved = Request.for_token(endpoint="wss://other-provider.example.test/v1/stream")
    with (
        caplog.at_level(logging.INFO, logger="karma_analytics.store"),
        Store.open(tmp_path, moved) as store,
    ):
        cursor = commit_blocks(store, 110, 120)
    assert "continuing the dataset through dfuse" in caplog.text and "other-provider" in caplog.text
    assert cursor.request.endpoint == moved.endpoint
    # The history says which endpoint committed which blocks.
    assert [(s.endpoint, s.first_block, s.last_block) for s in cursor.sources] == [
        (REQUEST.endpoint, 100, 109),
        (moved.endpoint, 110, 119),
    ]


def test_another_source_of_the_same_chain_continues_the_dataset(tmp_path):
    with Store.open(tmp_path, REQUEST) as store:
        store.bind_chain(CHAIN_A)
        commit_blocks(store, 100, 110)
    hyperion = Request.for_token(endpoint="https://hyperion.example.test", source="hyperion")
    with Store.open(tmp_path, hyperion) as store:
        assert store.chain_id == CHAIN_A
        store.bind_chain(CHAIN_A)
        cursor = commit_blocks(store, 110, 120)
    assert cursor.chain_id == CHAIN_A
    assert [s.source for s in cursor.sources] == ["dfuse", "hyperion"]
    assert Cursor.from_json_bytes(cursor.to_json_bytes()) == cursor


def test_another_chain_is_refused_naming_both(tmp_path):
    with Store.open(tmp_path, REQUEST) as store:
        store.bind_chain(CHAIN_A)
        commit_blocks(store, 100, 110)
    with Store.open(tmp_path, REQUEST) as store:
        with pytest.raises(ChainMismatchError) as caught:
            store.bind_chain(CHAIN_B)
        assert CHAIN_A in str(caught.value) and CHAIN_B in str(caught.value)
        assert caught.value.dataset_chain_id == CHAIN_A


def test_a_dataset_without_chain_id_takes_the_first_one_seen(tmp_path):
    with Store.open(tmp_path, REQUEST) as store:
        commit_blocks(store, 100, 110)
    sidecar = tmp_path / "_cursor.json"
    body = json.loads(sidecar.read_text())
    del body["chain_id"], body["sources"]  # as written before chain ids were kept
    sidecar.write_text(json.dumps(body))
    with Store.open(tmp_path, REQUEST) as store:
        assert store.chain_id is None
        store.bind_chain(CHAIN_B)
        cursor = commit_blocks(store, 110, 111)
    assert json.loads(sidecar.read_text())["chain_id"] == CHAIN_B == cursor.chain_id
    # ... and the repair command finds it again in the parts.
    sidecar.unlink()
    assert rebuild_sidecar(tmp_path).chain_id == CHAIN_B


# --- no credentials -----------------------------------------------------------------------------


def test_no_key_or_token_is_ever_written(tmp_path):
    secret = "eyJhbGciOiJSUzI1NiJ9.SECRETPAYLOAD"
    leaky = Request.for_token(endpoint=f"wss://eos.example.test/v1/stream?token={secret}")
    with Store.open(tmp_path, leaky) as store:
        commit_blocks(store, 950, 1050, rejects=[make_reject(960)])
        commit_blocks(store, 1050, 1060)  # compacts day 1
    rebuild_sidecar(tmp_path, force=True)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 5
    for path in written:
        data = path.read_bytes()
        assert secret.encode() not in data, path
        assert b"SECRETPAYLOAD" not in data, path
    cursor = layout.Cursor.from_json_bytes((tmp_path / CURSOR_FILE).read_bytes())
    assert cursor.request.endpoint == "wss://eos.example.test/v1/stream?token=***"


# --- the writer lock ----------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from karma_analytics.layout import Request
    from karma_analytics.store import Store

    store = Store.open(sys.argv[1], Request.for_token(endpoint="wss://eos.example.test/v1/stream"))
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until the test says so
    store.close()
    print("released", flush=True)
    """
)


def start_lock_holder(root: Path) -> subprocess.Popen[str]:
    """Another process that opens a store on ``root`` and holds its lock until told to go."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_second_writer_in_another_process_gets_locked_error(tmp_path):
    holder = start_lock_holder(tmp_path)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as info:
            Store.open(tmp_path, REQUEST)
        assert str(tmp_path) in str(info.value)
        assert f"pid {holder.pid}" in str(info.value)
        assert info.value.path == str(tmp_path)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with Store.open(tmp_path, REQUEST) as store:
        commit_blocks(store, 1, 2)


def test_lock_is_released_when_the_holder_dies(tmp_path):
    # A killed collector leaves its pid in _lock but the kernel drops the flock.
    holder = start_lock_holder(tmp_path)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    with Store.open(tmp_path, REQUEST) as store:
        assert store.cursor is None


def test_second_writer_in_the_same_process_gets_locked_error(tmp_path):
    with Store.open(tmp_path, REQUEST):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            Store.open(tmp_path, REQUEST)
        with pytest.raises(LockedError):
            rebuild_sidecar(tmp_path, force=True)


# --- missing and damaged sidecar, repair --------------------------------------------------------


def _dataset_with_two_days(root: Path) -> layout.Cursor:
    with Store.open(root, REQUEST, auto_compact=False) as store:
        commit_blocks(store, 900, 950, rejects=[make_reject(910)])
        return commit_blocks(store, 950, 1050)


def test_parts_without_sidecar_are_refused_then_repaired_by_the_cli(tmp_path):
    root = tmp_path / "out dir"  # a space: the printed command must quote it
    original = _dataset_with_two_days(root)
    (root / CURSOR_FILE).unlink()
    files = all_files(root)
    with pytest.raises(CursorError) as info:
        Store.open(root, REQUEST)
    message = str(info.value)
    assert "no _cursor.json" in message
    assert (
        f"python -m karma_analytics.store repair '{root}' --contract therealkarma "
        f"--action transfer" in message
    )
    assert all_files(root) == files  # refused, nothing touched

    result = run_cli("repair", str(root), "--contract", "therealkarma", "--action", "transfer")
    assert result.returncode == 0, result.stderr
    assert "next_block=1050" in result.stdout and "rows=300" in result.stdout
    assert "resumes at block 1050" in result.stdout

    with Store.open(root, REQUEST) as store:
        cursor = store.cursor
    assert cursor.next_block == original.next_block
    assert cursor.rows == original.rows and cursor.rejects == 1
    assert cursor.commits == original.commits == 2
    assert cursor.last_global_sequence == original.last_global_sequence
    assert cursor.last_block_id == original.last_block_id
    assert cursor.last_block_time == original.last_block_time
    assert cursor.request == REQUEST
    assert read_committed(root) == expected_sequences(900, 1050)


def test_repair_cli_refuses_another_contract(tmp_path):
    _dataset_with_two_days(tmp_path)
    (tmp_path / CURSOR_FILE).unlink()
    result = run_cli("repair", str(tmp_path), "--contract", "eosio.token", "--action", "transfer")
    assert result.returncode == 4  # needs attention, like the collector's RequestMismatchError
    assert "contract='therealkarma'" in result.stderr and "original flags" in result.stderr
    assert not (tmp_path / CURSOR_FILE).exists()


def test_repair_records_a_new_endpoint(tmp_path, capsys):
    _dataset_with_two_days(tmp_path)
    (tmp_path / CURSOR_FILE).unlink()
    assert main(["repair", str(tmp_path), "--endpoint", "wss://b.example.test/v1/stream"]) == 0
    cursor = layout.Cursor.from_json_bytes((tmp_path / CURSOR_FILE).read_bytes())
    assert cursor.request.endpoint == "wss://b.example.test/v1/stream"
    assert cursor.extra == {"rebuilt": True}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"\x00\xff garbage", id="garbage"),
        pytest.param(lambda data: b"[1, 2]", id="not-an-object"),
        pytest.param(lambda data: data.replace(b'"next_block"', b'"nxt"'), id="field-missing"),
    ],
)
def test_damaged_sidecar_is_refused_with_the_repair_command(tmp_path, damage, capsys):
    original = _dataset_with_two_days(tmp_path)
    sidecar = tmp_path / CURSOR_FILE
    sidecar.write_bytes(damage(sidecar.read_bytes()))
    files = all_files(tmp_path)
    with pytest.raises(CursorError) as info:
        Store.open(tmp_path, REQUEST)
    assert "python -m karma_analytics.store repair" in str(info.value)
    assert info.value.path == str(sidecar)
    assert all_files(tmp_path) == files  # never a silent restart

    assert main(["repair", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and "kept the previous sidecar" in out
    kept = [name for name in all_files(tmp_path) if name.startswith("_cursor.json.broken-")]
    assert len(kept) == 1
    with Store.open(tmp_path, REQUEST) as store:
        assert store.next_block == original.next_block
        assert store.cursor.rows == original.rows
    assert read_committed(tmp_path) == expected_sequences(900, 1050)


def test_repair_of_a_readable_sidecar_does_nothing_unless_forced(tmp_path):
    original = _dataset_with_two_days(tmp_path)
    notes: list[str] = []
    assert rebuild_sidecar(tmp_path, notes=notes) == original
    assert "nothing rebuilt" in notes[0]
    rebuilt = rebuild_sidecar(tmp_path, REQUEST, force=True)
    assert rebuilt.next_block == original.next_block and rebuilt.rows == original.rows
    with pytest.raises(RequestMismatchError):
        rebuild_sidecar(tmp_path, Request.for_token("eosio.token"), force=True)


def test_repair_drops_an_incomplete_last_commit(tmp_path):
    # The last commit wrote a part for DAY1 but its DAY2 part never landed, nor the sidecar.
    with Store.open(tmp_path, REQUEST, auto_compact=False) as store:
        commit_blocks(store, 900, 950)
        commit_blocks(store, 950, 1050)
    (tmp_path / CURSOR_FILE).unlink()
    (tmp_path / layout.partition_name(DAY2) / layout.part_filename(950, 1049)).unlink()
    notes: list[str] = []
    cursor = rebuild_sidecar(tmp_path, REQUEST, notes=notes)
    assert cursor.next_block == 950 and cursor.rows == 100
    assert any("incomplete" in line and "2026-11-27" in line for line in notes)
    assert not (tmp_path / layout.partition_name(DAY1) / layout.part_filename(950, 1049)).exists()
    assert read_committed(tmp_path) == expected_sequences(900, 950)


def test_repair_with_nothing_to_rebuild(tmp_path):
    (tmp_path / CURSOR_FILE).write_bytes(b"{broken")
    with pytest.raises(CursorError):
        Store.open(tmp_path, REQUEST)
    notes: list[str] = []
    assert rebuild_sidecar(tmp_path, REQUEST, notes=notes) is None
    assert any("nothing to rebuild" in line for line in notes)
    with Store.open(tmp_path, REQUEST) as store:
        assert store.cursor is None


def test_open_without_create_on_a_missing_folder(tmp_path):
    from karma_analytics.exceptions import StoreError

    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nope", REQUEST, create=False)
    assert not (tmp_path / "nope").exists()


# --- speed --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_commit_of_100k_rows_is_fast(tmp_path):
    rows = make_rows(100_000, 150_000, per_block=2)
    assert len(rows) == 100_000
    with Store.open(tmp_path, REQUEST) as store:
        started = time.perf_counter()
        cursor = store.commit(rows=rows, first_block=100_000, next_block=150_000)
        elapsed = time.perf_counter() - started
    assert cursor.rows == 100_000
    print(f"100k-row commit: {elapsed:.3f} s")
    # About 0.25 s on a 2-core CI machine; the bound only catches a per-row Python slow path.
    assert elapsed < 5.0


def test_sidecar_older_than_a_merged_part_is_refused_not_pruned(tmp_path):
    with Store.open(tmp_path, REQUEST) as store:
        commit_blocks(store, 900, 950)
        old_sidecar = (tmp_path / CURSOR_FILE).read_bytes()
        commit_blocks(store, 950, 1050)
        commit_blocks(store, 1050, 1060)  # day 1 is merged into part 900..1049
    merged = tmp_path / layout.partition_name(DAY1) / layout.part_filename(900, 1049)
    assert merged.exists()
    # Someone restores an old sidecar (next_block=950): deleting the merged part would lose
    # blocks 900..949, which that sidecar calls committed.
    (tmp_path / CURSOR_FILE).write_bytes(old_sidecar)
    files = all_files(tmp_path)
    with pytest.raises(CursorError, match="older than the data") as info:
        Store.open(tmp_path, REQUEST)
    assert "repair" in str(info.value) and "--force" in str(info.value)
    assert all_files(tmp_path) == files
    cursor = rebuild_sidecar(tmp_path, REQUEST, force=True)
    assert cursor.next_block == 1060 and cursor.rows == 320
    assert read_committed(tmp_path) == expected_sequences(900, 1060)


def test_outside_engine_reads_the_committed_parts_as_hive_parquet(tmp_path):
    import duckdb  # a declared test dependency

    with Store.open(tmp_path, REQUEST) as store:
        commit_blocks(store, 900, 950)
        commit_blocks(store, 950, 1050)
        commit_blocks(store, 1050, 1060)
    files = [str(tmp_path / part.path) for part in committed(tmp_path)]
    rows, distinct, first_day, last_day = (
        duckdb.connect()
        .execute(
            "select count(*), count(distinct global_sequence), min(date), max(date) "
            "from read_parquet(?, hive_partitioning = true)",
            [files],
        )
        .fetchone()
    )
    assert rows == distinct == 320
    assert (first_day, last_day) == (DAY1, DAY2)


def test_repair_of_a_missing_folder_fails_cleanly(tmp_path, capsys):
    assert main(["repair", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
