"""Helpers shared by the collector tests: run the real CLI, read the committed view."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from karma_analytics import layout
from karma_analytics.model import Transfer, table_to_transfers

# A frozen head: blocks 1..RANGE_LAST are irreversible at once and the range holds ~1,200
# transfers over many commits with the small flush sizes the tests use. The head lies well
# beyond the range: a block is only proven complete by a later action or a progress (dfuse
# §4.2, throttled to one per 250 ms), so the last blocks before a frozen head never are.
HEAD = 3_200
RANGE_LAST = 3_000
FROZEN: dict[str, Any] = {
    "head": HEAD,
    "block_interval": 0.0,
    "lib_lag": 2,
    "ping_interval": 0.5,
    "compression": None,
}

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child CLI: this checkout importable, no inherited API key."""
    env = {k: v for k, v in os.environ.items() if k != "DFUSE_API_KEY"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli_args(*args: str) -> list[str]:
    return [PYTHON, "-m", "karma_analytics.collect", *args]


def range_args(url: str, out: object, first: int, last: int) -> tuple[str, ...]:
    """The CLI arguments that collect blocks ``first..last`` from ``url`` into ``out``."""
    return (
        "--endpoint", url, "--out", str(out), "--start-block", str(first), "--stop-block", str(last)
    )  # fmt: skip


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m karma_analytics.collect ARGS`` to its end and capture its output."""
    return subprocess.run(
        cli_args(*args),
        env=env or child_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def committed_rows(root: str | Path) -> list[Transfer]:
    """Rows of the committed view (reader rule), in part order, via model.table_to_transfers."""
    fs = pafs.LocalFileSystem()
    root = str(Path(root).absolute())
    cursor = layout.read_cursor(fs, root)
    if cursor is None:
        return []
    rows: list[Transfer] = []
    for part in layout.committed_parts(layout.list_parts(fs, root), cursor.next_block):
        rows.extend(table_to_transfers(pq.read_table(f"{root}/{part.path}")))
    return rows


def next_block(root: str | Path) -> int | None:
    cursor = layout.read_cursor(pafs.LocalFileSystem(), str(Path(root).absolute()))
    return None if cursor is None else cursor.next_block


def check_prefix_of_truth(rows: Sequence[Transfer], truth: Sequence[Transfer], upto: int) -> None:
    """The committed view must be exactly truth's rows of blocks < ``upto``: no gap, no dup."""
    seqs = [r.global_sequence for r in rows]
    assert len(seqs) == len(set(seqs)), "duplicate global_sequence in the committed view"
    expected = [t for t in truth if t.block_num < upto]
    assert sorted(rows, key=lambda r: r.global_sequence) == expected


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true or fail after ``timeout`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def crash_loop(
    url: str,
    out: Path,
    truth: Sequence[Transfer],
    *,
    start_block: int = 1,
    stop_block: int,
    kills: int,
    seed: int,
    min_delay: float = 0.3,
    max_delay: float = 1.4,
    extra_args: Sequence[str] = ("--flush-rows", "20", "--flush-seconds", "0.05"),
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Start the CLI, SIGKILL it after a seeded random delay, check the committed view, repeat.

    After every kill the committed view (reader rule) must be exactly truth's rows below the
    sidecar's next_block: no row outside truth, no duplicate, no gap. A run that finishes
    before its kill must exit 0 with exactly the truth; the folder is then removed and the
    loop goes on from scratch. Ends with one uninterrupted run that must complete exactly.

    Returns:
        counters: ``kills``, ``completed`` (runs that ended by themselves), ``max_next_block``,
        ``kills_while_committing`` (kills of a run that had committed data but not finished).
    """
    import random
    import shutil
    import signal as _signal
    import tempfile

    rng = random.Random(seed)
    stats = {"kills": 0, "completed": 0, "max_next_block": 0, "kills_while_committing": 0}
    previous: int | None = None
    args = cli_args(
        *range_args(url, out, start_block, stop_block),
        "--quiet",
        "--stall-seconds",
        "5",
        *extra_args,
    )
    with tempfile.TemporaryFile("w+") as errors:
        while stats["kills"] < kills:
            errors.seek(0)
            errors.truncate()
            proc = subprocess.Popen(
                args, env=child_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=errors
            )
            delay = rng.uniform(min_delay, max_delay)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(_signal.SIGKILL)
                proc.wait()
                stats["kills"] += 1
                upto = next_block(out)
                rows = committed_rows(out)
                if upto is None:
                    assert rows == [], "rows visible without a sidecar"
                else:
                    check_prefix_of_truth(rows, truth, upto)
                    stats["max_next_block"] = max(stats["max_next_block"], upto)
                    if previous is not None and previous < upto <= stop_block:
                        stats["kills_while_committing"] += 1  # it moved and was not done
                previous = upto
                if log:
                    log(
                        f"kill {stats['kills']} after {delay:.2f} s: next_block={upto}, "
                        f"{len(rows)} rows committed"
                    )
                continue
            errors.seek(0)
            assert proc.returncode == 0, errors.read()[-3000:]
            assert committed_rows(out) == list(truth)
            stats["completed"] += 1
            # A loop whose runs all finish before their kill would never end: say so instead.
            assert stats["completed"] <= 3 * kills + 3, (
                f"{stats['completed']} runs finished before their kill delay "
                f"({min_delay}..{max_delay} s): make the runs longer or the delays shorter"
            )
            previous = None
            if log:
                log(f"run completed by itself after < {delay:.2f} s; starting over")
            shutil.rmtree(out)
        final = subprocess.run(
            args,
            env=child_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert final.returncode == 0, final.stderr[-3000:]
    assert next_block(out) == stop_block + 1
    assert committed_rows(out) == list(truth)
    return stats
