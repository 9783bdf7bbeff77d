"""Crashes between the steps of a commit, and storage faults (disk full, read-only folder).

A crash is a ``Crash`` (BaseException) raised at the n-th durable step on files of the dataset
(write, fsync, rename, unlink), so that the store cannot clean up, exactly like a killed
process; one test kills a real process with ``os._exit`` between steps. Disk-full and
read-only faults are OSErrors raised at the same boundary (``os.write``/``os.fsync``/
``os.replace``), since a real full disk cannot be made here without root-only tricks; the
read-only folder is also made for real (chmod, or ``chattr +i`` when running as root).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_store_support import (
    REQUEST,
    Crash,
    StepInjector,
    all_files,
    commit_blocks,
    expected_sequences,
    make_reject,
    os_error,
    read_committed,
    temp_files,
)

from karma_analytics import layout
from karma_analytics.exceptions import StoreError
from karma_analytics.layout import CURSOR_FILE
from karma_analytics.store import Store

REPO = Path(__file__).resolve().parents[1]

# Durable commit A = blocks 900..949 (day 1). Commit B = blocks 950..1049, crossing midnight at
# block 1000: two parts, a rejects file and the sidecar, i.e. every kind of step.
A = (900, 950)
B = (950, 1050)


def build(root: Path) -> None:
    with Store.open(root, REQUEST, auto_compact=False) as store:
        commit_blocks(store, *A, rejects=[make_reject(905)])


def commit_b(store: Store) -> None:
    commit_blocks(store, *B, rejects=[make_reject(960), make_reject(1010)])


def assert_consistent(root: Path) -> int:
    """Reopen after a crash and check the dataset equals exactly one of the durable states."""
    with Store.open(root, REQUEST, auto_compact=False) as store:
        next_block = store.next_block
        assert next_block in (A[1], B[1])
        assert temp_files(root) == []
        for part in layout.list_parts(__import__("pyarrow.fs").fs.LocalFileSystem(), str(root)):
            assert part.last_block < next_block, part
        rejects = sorted((root / layout.REJECTS_DIR).iterdir())
        expected_rejects = 1 if next_block == A[1] else 2
        assert len(rejects) == expected_rejects
        assert store.cursor.rejects == (1 if next_block == A[1] else 3)
        assert read_committed(root) == expected_sequences(A[0], next_block)
        assert store.cursor.rows == len(expected_sequences(A[0], next_block))
        if next_block == A[1]:
            # The next run redoes the lost commit and ends up complete.
            commit_b(store)
    assert read_committed(root) == expected_sequences(A[0], B[1])
    return next_block


@pytest.mark.slow
def test_crash_at_every_step_of_a_commit(tmp_path, monkeypatch):
    probe = tmp_path / "probe"
    build(probe)
    with Store.open(probe, REQUEST, auto_compact=False) as store, monkeypatch.context() as patch:
        counter = StepInjector(probe, None).install(patch)
        commit_b(store)
    steps = counter.steps
    # The protocol's order: parts, rejects, then the sidecar; the sidecar rename is the commit.
    renames = [s for s in steps if s.startswith("replace")]
    assert [Path(s.split(" ", 1)[1]).name for s in renames] == [
        layout.part_filename(950, 1049),
        layout.part_filename(950, 1049),
        "rejects-0000000950-0000001049.jsonl",
        CURSOR_FILE,
    ]
    commit_point = steps.index(renames[-1]) + 1  # steps at or before it leave A durable
    assert len(steps) >= 15

    outcomes = []
    for at in range(1, len(steps) + 1):
        root = tmp_path / f"crash-{at:02d}"
        build(root)
        store = Store.open(root, REQUEST, auto_compact=False)
        with monkeypatch.context() as patch:
            injector = StepInjector(root, at).install(patch)
            with pytest.raises(Crash):
                commit_b(store)
        assert injector.fired
        store.close()  # the process is gone: the kernel drops its lock
        next_block = assert_consistent(root)
        assert next_block == (B[1] if at > commit_point else A[1]), (at, steps[at - 1])
        outcomes.append(next_block)
        shutil.rmtree(root)
    assert A[1] in outcomes and B[1] in outcomes


KILLER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[4])
    from test_store_support import REQUEST, commit_blocks, make_reject
    from karma_analytics.store import Store

    root, at, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    real_replace = os.replace
    calls = 0

    def replace(src, dst, **kwargs):
        global calls
        calls += 1
        if calls == at and when == "before":
            os._exit(17)
        real_replace(src, dst, **kwargs)
        if calls == at and when == "after":
            os._exit(17)

    store = Store.open(root, REQUEST, auto_compact=False)
    os.replace = replace
    commit_blocks(store, 950, 1050, rejects=[make_reject(960), make_reject(1010)])
    sys.exit(0)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("at", "when", "durable"),
    [(1, "before", 950), (2, "after", 950), (4, "before", 950), (4, "after", 1050)],
)
def test_killed_process_between_steps(tmp_path, at, when, durable):
    build(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", KILLER, str(tmp_path), str(at), when, str(Path(__file__).parent)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 17, result.stderr
    assert assert_consistent(tmp_path) == durable


# --- storage faults -----------------------------------------------------------------------------

REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "read-only",
    errno.EACCES: "permission denied",
    errno.EDQUOT: "quota",
}


@pytest.mark.parametrize("code", sorted(REASONS), ids=lambda c: errno.errorcode[c])
@pytest.mark.parametrize(
    ("kind", "target"),
    [
        ("write", "part-"),
        ("fsync", "part-"),
        ("replace", "part-"),
        ("write", "rejects-"),
        ("write", "_cursor.json"),
        ("fsync", "_cursor.json"),
        ("replace", "_cursor.json"),
    ],
)
@pytest.mark.slow
def test_storage_fault_loses_nothing(tmp_path, monkeypatch, code, kind, target):
    build(tmp_path)
    before_files = all_files(tmp_path)
    before_sidecar = (tmp_path / CURSOR_FILE).read_bytes()
    store = Store.open(tmp_path, REQUEST, auto_compact=False)
    with monkeypatch.context() as patch:
        injector = StepInjector(
            tmp_path, 1, os_error(code), kinds=(kind,), match=lambda p: target in p
        ).install(patch)
        with pytest.raises(StoreError) as info:
            commit_b(store)
    assert injector.fired
    message = str(info.value)
    assert REASONS[code] in message
    assert "Nothing that was committed before was lost" in message
    assert "next_block=950" in message and "What to do" in message
    assert info.value.path == str(tmp_path)
    # Temp files and this commit's renamed parts are gone; the sidecar is untouched.
    assert all_files(tmp_path) == before_files
    assert (tmp_path / CURSOR_FILE).read_bytes() == before_sidecar
    assert store.next_block == 950
    # The same store can retry once the fault is gone...
    commit_b(store)
    store.close()
    # ...and the next run sees everything exactly once.
    with Store.open(tmp_path, REQUEST) as store:
        assert store.next_block == 1050
    assert read_committed(tmp_path) == expected_sequences(900, 1050)


def test_fault_on_the_next_run_after_a_disk_full_commit(tmp_path, monkeypatch):
    """Disk full while writing the sidecar, the runner stops; the next run loses nothing."""
    build(tmp_path)
    store = Store.open(tmp_path, REQUEST, auto_compact=False)
    with monkeypatch.context() as patch:
        StepInjector(
            tmp_path, 1, os_error(errno.ENOSPC), kinds=("write",), match=lambda p: "_cursor" in p
        ).install(patch)
        with pytest.raises(StoreError, match="disk is full"):
            commit_b(store)
    store.close()
    assert assert_consistent(tmp_path) == 950


def test_folder_sync_failure_after_the_sidecar_rename(tmp_path, monkeypatch):
    # After the rename the commit is visible: it must not be undone, but the caller must know
    # it may not be durable (and stop).
    build(tmp_path)
    with Store.open(tmp_path, REQUEST, auto_compact=False) as store, monkeypatch.context() as patch:
        counter = StepInjector(tmp_path, None).install(patch)
        commit_b(store)
    last = len(counter.steps)
    assert counter.steps[-1] == "fsync "  # the root folder itself

    root = tmp_path / "again"
    build(root)
    with Store.open(root, REQUEST, auto_compact=False) as store:
        with monkeypatch.context() as patch:
            StepInjector(root, last, os_error(errno.EIO)).install(patch)
            with pytest.raises(StoreError, match="may not survive a power loss"):
                commit_b(store)
        assert store.next_block == 1050
    assert read_committed(root) == expected_sequences(900, 1050)


def _writable(folder: Path) -> bool:
    probe = folder / ".probe.tmp"
    try:
        probe.write_bytes(b"x")
    except OSError:
        return False
    probe.unlink()
    return True


def test_read_only_folder(tmp_path, monkeypatch):
    """A really read-only dataset folder: chmod 0o500 stops a normal user; root ignores modes,
    so as root the folders are made immutable with ``chattr +i`` (EPERM). Only if neither works
    (no chattr, unsupported file system) is EROFS raised at the ``os.open`` boundary."""
    build(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    before_files = all_files(tmp_path)
    before_sidecar = (tmp_path / CURSOR_FILE).read_bytes()
    store = Store.open(tmp_path, REQUEST, auto_compact=False)
    folders = [tmp_path, empty, *[p for p in tmp_path.iterdir() if p.is_dir() and p != empty]]
    for folder in folders:
        folder.chmod(0o500)
    mode = "chmod"
    immutable: list[Path] = []
    try:
        if _writable(tmp_path):
            mode = "chattr"
            for folder in folders:
                done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
                if done.returncode == 0:
                    immutable.append(folder)
        if _writable(tmp_path):
            mode = "simulated"
            real_open = os.open

            def read_only_open(path, flags, *args, **kwargs):
                if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_RDWR):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
                return real_open(path, flags, *args, **kwargs)

            monkeypatch.setattr(os, "open", read_only_open)
            monkeypatch.setattr(Path, "mkdir", lambda *a, **k: read_only_open("/", os.O_RDWR))
        print(f"read-only folder made by: {mode}")
        with pytest.raises(StoreError) as info:
            commit_b(store)
        message = str(info.value)
        assert "Nothing that was committed before was lost" in message
        assert any(word in message for word in ("permission", "not permitted", "read-only"))
        # A new dataset cannot even be locked in a read-only folder: a clear error, not a crash.
        with pytest.raises(StoreError, match="could not create the lock file"):
            Store.open(empty, REQUEST)
    finally:
        monkeypatch.undo()
        for folder in immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        for folder in folders:
            folder.chmod(0o755)
    assert all_files(tmp_path) == before_files
    assert (tmp_path / CURSOR_FILE).read_bytes() == before_sidecar
    commit_b(store)
    store.close()
    assert read_committed(tmp_path) == expected_sequences(900, 1050)
