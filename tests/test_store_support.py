"""Shared helpers for the store tests (no tests here): rows, commits, reading back, faults."""

from __future__ import annotations

import datetime as dt
import errno
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow.parquet as pq
from pyarrow import fs as pafs

from karma_analytics import layout, model
from karma_analytics.engine import Reject
from karma_analytics.layout import Request
from karma_analytics.store import Store

REQUEST = Request.for_token(endpoint="wss://eos.example.test/v1/stream")
BLOCK_MS = 500
MIDNIGHT_MS = int(dt.datetime(2026, 11, 27, tzinfo=dt.UTC).timestamp() * 1000)
#: Block 1000 is the first block of 2026-11-27; blocks below it are on 2026-11-26.
GENESIS_MS = MIDNIGHT_MS - 1000 * BLOCK_MS
DAY1 = dt.date(2026, 11, 26)
DAY2 = dt.date(2026, 11, 27)


def block_time(block: int) -> int:
    return GENESIS_MS + block * BLOCK_MS


def make_rows(first_block: int, next_block: int, *, per_block: int = 2) -> list[model.Transfer]:
    """Deterministic transfers for blocks [first_block, next_block); global_sequence is
    block * 10 + index, so it is unique and increasing along the chain."""
    rows = []
    for block in range(first_block, next_block):
        for idx in range(per_block):
            rows.append(
                model.Transfer(
                    block_num=block,
                    block_id=f"{block:08x}" + "ab" * 28,
                    block_time=block_time(block),
                    trx_id=f"{block:08x}{idx:04x}" + "cd" * 26,
                    action_idx=idx,
                    global_sequence=block * 10 + idx,
                    contract="therealkarma",
                    action="transfer",
                    from_account="alice.karma",
                    to_account="bob.karma",
                    amount_units=10_000 + block + idx,
                    precision=4,
                    symbol="KARMA",
                    memo=f"memo {block} {idx}",
                )
            )
    return rows


def make_reject(block: int, reason: str = "act.data.quantity: bad asset") -> Reject:
    return Reject(
        block_num=block,
        block_id=f"{block:08x}" + "ab" * 28,
        trx_id="ef" * 32,
        action_idx=9,
        global_sequence=block * 10 + 9,
        reason=reason,
        raw='{"trace": {"act": {"data": {"quantity": "1.0 KARMA!"}}}}',
    )


def commit_blocks(
    store: Store,
    first_block: int,
    next_block: int,
    *,
    per_block: int = 2,
    rejects: Iterable[Reject] = (),
) -> layout.Cursor:
    """Commit the deterministic rows of blocks [first_block, next_block)."""
    rows = make_rows(first_block, next_block, per_block=per_block)
    last = next_block - 1
    return store.commit(
        rows=rows,
        rejects=list(rejects),
        first_block=first_block,
        next_block=next_block,
        last_block_num=last,
        last_block_id=f"{last:08x}" + "ab" * 28,
        last_block_time=block_time(last),
        last_global_sequence=rows[-1].global_sequence if rows else None,
    )


def expected_sequences(first_block: int, next_block: int, *, per_block: int = 2) -> list[int]:
    return [r.global_sequence for r in make_rows(first_block, next_block, per_block=per_block)]


def committed(root: Path) -> list[layout.PartRef]:
    """The parts a reader may see (layout's reader rule)."""
    cursor = layout.read_cursor(pafs.LocalFileSystem(), str(root))
    if cursor is None:
        return []
    return layout.committed_parts(
        layout.list_parts(pafs.LocalFileSystem(), str(root)), cursor.next_block
    )


def read_committed(root: Path) -> list[int]:
    """Global sequences of the committed rows, in part order (duplicates kept on purpose)."""
    out: list[int] = []
    for part in committed(root):
        out += (
            pq.ParquetFile(root / part.path).read(columns=["global_sequence"]).column(0).to_pylist()
        )
    return out


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[str]:
    return [name for name in all_files(root) if Path(name).name.startswith(".")]


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Crash(BaseException):
    """Stands for the process dying: not an OSError, so the store does not clean up."""


class StepInjector:
    """Counts the store's durable steps (write, fsync, replace, unlink) on files under ``root``
    and raises ``error()`` at step number ``at`` (1-based); ``at=None`` only counts."""

    def __init__(
        self,
        root: Path,
        at: int | None,
        error: Callable[[], BaseException] = Crash,
        *,
        kinds: tuple[str, ...] = ("write", "fsync", "replace", "unlink"),
        match: Callable[[str], bool] = lambda path: True,
    ) -> None:
        self.root = str(root)
        self.at = at
        self.error = error
        self.kinds = kinds
        self.match = match
        self.steps: list[str] = []
        self.fired = False

    def _step(self, kind: str, path: str) -> None:
        if kind not in self.kinds or not path.startswith(self.root) or not self.match(path):
            return
        self.steps.append(f"{kind} {path[len(self.root) :]}")
        if self.at is not None and len(self.steps) == self.at:
            self.fired = True
            raise self.error()

    def install(self, monkeypatch) -> StepInjector:
        real_write, real_fsync = os.write, os.fsync
        real_replace, real_unlink = os.replace, os.unlink

        def write(fd, data):
            self._step("write", fd_path(fd))
            return real_write(fd, data)

        def fsync(fd):
            self._step("fsync", fd_path(fd))
            return real_fsync(fd)

        def replace(src, dst, **kwargs):
            self._step("replace", str(dst))
            return real_replace(src, dst, **kwargs)

        def unlink(path, **kwargs):
            self._step("unlink", str(path))
            return real_unlink(path, **kwargs)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "unlink", unlink)
        return self


def os_error(code: int) -> Callable[[], OSError]:
    return lambda: OSError(code, os.strerror(code))


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
