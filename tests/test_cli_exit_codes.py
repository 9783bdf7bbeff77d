"""One face for the command lines: ``dataset`` and ``store`` exit like the collector.

On real folders: 2 usage, 3 locked (the lock held by another process), 4 needs attention (with
the one repair hint of :func:`karma_analytics.layout.repair_hint`), 1 fatal. Every condition is
checked through each CLI's ``main()``, then once more as real processes (what a shell sees).
The table itself is :mod:`karma_analytics.cli`; the collector's own codes are in tests/collect.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_store import start_lock_holder
from test_store_support import DAY1, REQUEST, commit_blocks

from karma_analytics import cli, layout
from karma_analytics.dataset import main as dataset_main
from karma_analytics.exceptions import (
    ChainMismatchError,
    ConnectError,
    CursorError,
    DatasetError,
    KarmaError,
    LockedError,
    ProtocolError,
    RequestMismatchError,
    StoreError,
    UsageError,
)
from karma_analytics.store import Store
from karma_analytics.store import main as store_main

REPO = Path(__file__).resolve().parents[1]
DATASET = ("-m", "karma_analytics.dataset")
STORE = ("-m", "karma_analytics.store")
COMPACT_POINTER = "python -m karma_analytics.dataset compact PATH"


def run_all(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run the command lines at the same time (each one Python process); wait for all."""
    procs = [
        subprocess.Popen(
            [sys.executable, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for command in commands
    ]
    done = []
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return done


def explain(done: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{' '.join(done.args)} -> {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A committed two-day dataset in a folder whose name needs quoting for the shell."""
    folder = tmp_path / "out dir"
    with Store.open(folder, REQUEST, auto_compact=False) as store:
        commit_blocks(store, 900, 950)
        commit_blocks(store, 950, 1050)
    return folder


# --- the table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("bad flag"), 2),
        (LockedError("held by pid 1"), 3),
        (CursorError("damaged"), 4),
        (RequestMismatchError("another contract"), 4),
        (ChainMismatchError("another chain", dataset_chain_id="aa", other_chain_id="bb"), 4),
        (DatasetError("not a dataset"), 4),
        (StoreError("disk full"), 1),
        (ConnectError("refused", fatal=True), 1),
        (ProtocolError("bad frame"), 1),
        (KarmaError("anything else"), 1),
        (RuntimeError("a bug"), 1),
        (KeyboardInterrupt(), 130),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_exit_code_for(error: BaseException, code: int) -> None:
    assert cli.exit_code_for(error) == code


def test_the_codes() -> None:
    assert (cli.EXIT_OK, cli.EXIT_ERROR, cli.EXIT_USAGE, cli.EXIT_LOCKED, cli.EXIT_DATASET) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert cli.EXIT_INTERRUPTED == 130


def test_the_repair_hint_quotes_the_path_for_the_shell() -> None:
    assert layout.repair_hint("data/transfers") == (
        "Rebuild the sidecar from the parts' metadata with "
        "`python -m karma_analytics.store repair data/transfers`."
    )
    hint = layout.repair_hint(Path("/x/out dir"), REQUEST, force=True)
    assert (
        "`python -m karma_analytics.store repair '/x/out dir' --contract therealkarma "
        "--action transfer --force`" in hint
    )
    assert "repair PATH`" in layout.repair_hint(None)


# --- every condition, through main() ---------------------------------------------------------


@pytest.fixture
def cli_run(capsys: pytest.CaptureFixture[str]):
    """``cli_run(main, *args)`` -> ``(code, stdout, stderr)`` of one command line."""

    def run(main, *args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run


@pytest.mark.parametrize(
    ("main", "args"),
    [
        (dataset_main, ()),
        (dataset_main, ("frobnicate", "x")),
        (dataset_main, ("info",)),
        (dataset_main, ("compact", "x", "--before", "not-a-date")),
        (store_main, ()),
        (store_main, ("repair",)),
        (store_main, ("repair", "x", "--frobnicate")),
    ],
)
def test_usage_errors_exit_2(cli_run, main, args) -> None:
    code, _out, err = cli_run(main, *args)
    assert code == 2, err
    assert "usage:" in err


def test_compaction_has_one_command(cli_run, root: Path) -> None:
    for args in (("compact", str(root)), ("compact", "--help"), ("compact",)):
        code, _out, err = cli_run(store_main, *args)
        assert code == 2
        assert COMPACT_POINTER in err
    assert layout.part_filename(900, 949) in {p.name for p in root.rglob("part-*")}  # untouched


def test_help_documents_the_codes(cli_run) -> None:
    for main in (dataset_main, store_main):
        code, out, _err = cli_run(main, "--help")
        assert code == 0
        assert "exit codes:" in out
        for code in ("0", "1", "2", "3", "4", "130"):
            assert f"\n  {code:<4} " in out


def test_locked_exits_3(cli_run, root: Path) -> None:
    holder = start_lock_holder(root)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for main, args in (
            (dataset_main, ("compact", str(root))),
            (store_main, ("repair", str(root), "--force")),
        ):
            code, _out, err = cli_run(main, *args)
            assert code == 3, err
            assert f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()


def test_corrupt_sidecar_exits_4_with_the_repair_hint(cli_run, root: Path) -> None:
    (root / layout.CURSOR_FILE).write_bytes(b'{"next_block": 10')
    hint = layout.repair_hint(root)
    assert "'" in hint  # the space in the folder name is quoted for the shell
    code, _out, err = cli_run(dataset_main, "info", str(root))
    assert code == 4 and hint in err, err
    code, out, _err = cli_run(dataset_main, "verify", str(root))
    assert code == 4 and hint in out, out
    code, _out, err = cli_run(dataset_main, "compact", str(root))
    assert code == 4 and hint in err, err

    code, _out, err = cli_run(store_main, "repair", str(root))
    assert code == 0, err
    code, out, _err = cli_run(dataset_main, "verify", str(root))
    assert code == 0, out


def test_parts_without_sidecar_exit_4_with_the_repair_hint(cli_run, root: Path) -> None:
    (root / layout.CURSOR_FILE).unlink()
    hint = layout.repair_hint(root)
    code, _out, err = cli_run(dataset_main, "info", str(root))
    assert code == 4 and hint in err, err
    code, out, _err = cli_run(dataset_main, "verify", str(root))
    assert code == 4 and hint in out, out
    code, _out, err = cli_run(dataset_main, "compact", str(root))
    assert code == 4 and hint in err, err
    # The repair refuses another request: the dataset needs attention, not a retry.
    code, _out, err = cli_run(store_main, "repair", str(root), "--contract", "eosio.token")
    assert code == 4 and "original flags" in err, err
    assert not (root / layout.CURSOR_FILE).exists()

    code, _out, err = cli_run(store_main, "repair", str(root))
    assert code == 0, err
    code, out, err = cli_run(dataset_main, "compact", str(root))
    assert code == 0 and "1 day(s) merged" in out, err


def test_verify_problems_exit_4(cli_run, root: Path) -> None:
    (root / layout.partition_name(DAY1) / ".part-x.tmp").write_bytes(b"")
    code, out, _err = cli_run(dataset_main, "verify", str(root))
    assert code == 4 and "temp file" in out, out


def test_fatal_errors_exit_1(cli_run, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    for main, args in (
        (store_main, ("repair", str(missing))),
        (dataset_main, ("compact", str(missing))),
    ):
        code, _out, err = cli_run(main, *args)
        assert code == 1 and "does not exist" in err, err


# --- what a shell sees: real processes ---------------------------------------------------------


@pytest.mark.slow
def test_real_processes_exit_with_the_same_codes(root: Path, tmp_path: Path) -> None:
    """One condition per code and CLI, as processes (sys.exit of main's code), all at once."""
    holder = start_lock_holder(root)
    try:
        assert holder.stdout.readline().strip() == "locked"
        locked = run_all((*DATASET, "compact", str(root)), (*STORE, "repair", str(root)))
    finally:
        holder.kill()
        holder.wait()
    (root / layout.CURSOR_FILE).write_bytes(b"\x00 garbage")
    usage, pointer, corrupt, fatal = run_all(
        (*DATASET, "verify"),
        (*STORE, "compact", str(root)),
        (*DATASET, "info", str(root)),
        (*STORE, "repair", str(tmp_path / "missing")),
    )
    for done, code in (
        (usage, 2),
        (pointer, 2),
        (corrupt, 4),
        (fatal, 1),
        *((d, 3) for d in locked),
    ):
        assert done.returncode == code, explain(done)
        assert "Traceback" not in done.stderr, explain(done)
    assert COMPACT_POINTER in pointer.stderr
    assert layout.repair_hint(root) in corrupt.stderr
