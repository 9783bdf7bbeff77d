"""The Parquet dataset writer: parts, cursor sidecar, recovery, writer lock, compaction.

Implements "The dataset on disk" of DESIGN.md. One :meth:`Store.commit` writes::

    <root>/date=YYYY-MM-DD/part-<first>-<last>.parquet   one per UTC day touched by the commit
    <root>/_rejects/rejects-<first>-<last>.jsonl          transfers that failed to parse (if any)
    <root>/_cursor.json                                   the commit point, written last

in this order: each part to a dot-temp file in its partition, fsync, rename into place, fsync
the partition folders; then the rejects file the same way; then the sidecar (temp, fsync,
rename, fsync the root). A commit is durable once the sidecar names its ``next_block``; until
then the reader rule (``layout.committed_parts``) hides its parts, and the next writer removes
them (:meth:`Store.open` recovery). Nothing after a crash is trusted but the sidecar.

Each part carries the commit in its Parquet key-value metadata (keys ``karma.*``, see
:data:`META_KEYS`), so :func:`rebuild_sidecar` can recreate a lost or damaged sidecar::

    python -m karma_analytics.store repair PATH [--contract C] [--action A] [--endpoint URL]

Storage faults (disk full, read-only folder, permission denied) raise :class:`StoreError` with
the temp files removed and the sidecar untouched, so the next run resumes where the last
durable commit ended.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import layout, model
from .exceptions import (
    ChainMismatchError,
    CursorError,
    KarmaError,
    LockedError,
    RequestMismatchError,
    StoreError,
    UsageError,
    redact,
)
from .layout import CURSOR_FILE, LOCK_FILE, REJECTS_DIR, Cursor, PartRef, Request

__all__ = [
    "META_KEYS",
    "ROW_GROUP_ROWS",
    "Store",
    "main",
    "read_part_metadata",
    "rebuild_sidecar",
    "recorded_request",
    "rejects_filename",
]

log = logging.getLogger(__name__)

#: Rows per Parquet row group: one group for a typical commit, a handful for a compacted day,
#: small enough that readers can skip groups by their statistics.
ROW_GROUP_ROWS = 128 * 1024
# Row groups of a merged day: smaller, so that a merge holds little in memory at a time.
MERGE_GROUP_ROWS = 16 * 1024
COMPRESSION = "zstd"

#: The Parquet key-value metadata every part carries (all values are UTF-8 text).
META_KEYS = {
    "karma.schema_version": "model.SCHEMA_VERSION of the rows",
    "karma.kind": '"commit" (written by one commit) or "compaction" (a merged day)',
    "karma.first_block": "first block of the part's range (inclusive)",
    "karma.last_block": "last block of the part's range (inclusive)",
    "karma.next_block": "commit: the next_block the commit made durable; compaction: last + 1",
    "karma.rows": "rows in this part",
    "karma.commit": "JSON: the commit's cursor fields (last_block_num, last_block_id, "
    "last_block_time, last_global_sequence, first_block, next_block, rows, rejects, days)",
    "karma.commits": "number of commits whose rows this part holds",
    "karma.merged": "compaction only: JSON list of the [first, last] commit ranges it holds",
    "karma.request": "JSON: the Request (source, endpoint without credentials, filters)",
}

_MS_PER_DAY = 86_400_000
_TEMP_SUFFIX = ".tmp"
_REJECTS_PREFIX = "rejects-"
_REJECTS_SUFFIX = ".jsonl"
_FAULT_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted (read-only or immutable folder?)",
    errno.EIO: "an I/O error occurred",
}


# --------------------------------------------------------------------------------------------
# Small file-system helpers (the only places that write bytes; tests inject faults here by
# patching os.write / os.fsync / os.replace).


def _write_durably(path: Path, data: Any) -> None:
    """Write ``data`` (bytes-like) to ``path`` and fsync it before returning."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: Any) -> None:
    """``os.write`` until every byte of ``data`` (bytes-like) is written."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    """fsync a folder so that renames and unlinks inside it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        return False
    return True


def _temp_name(final_name: str) -> str:
    # Dot-prefixed so that readers and list_parts never take it for data (layout rule).
    return f".{final_name}{_TEMP_SUFFIX}"


def _is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(_TEMP_SUFFIX)


def rejects_filename(first_block: int, last_block: int) -> str:
    """``rejects-0152000010-0152000399.jsonl``: the rejects of the commit ``[first, last]``."""
    return f"{_REJECTS_PREFIX}{first_block:010d}-{last_block:010d}{_REJECTS_SUFFIX}"


def _parse_rejects_filename(name: str) -> tuple[int, int] | None:
    if not (name.startswith(_REJECTS_PREFIX) and name.endswith(_REJECTS_SUFFIX)):
        return None
    body = name[len(_REJECTS_PREFIX) : -len(_REJECTS_SUFFIX)]
    first, sep, last = body.partition("-")
    if not (sep and first.isdigit() and last.isdigit()):
        return None
    return (int(first), int(last)) if int(first) <= int(last) else None


def _rejects_files(root: Path) -> list[tuple[int, int, Path]]:
    folder = root / REJECTS_DIR
    found = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        blocks = _parse_rejects_filename(entry.name)
        if blocks is not None and entry.is_file():
            found.append((blocks[0], blocks[1], Path(entry.path)))
    found.sort()
    return found


def _list_parts(root: Path) -> list[PartRef]:
    from pyarrow import fs as pafs

    return layout.list_parts(pafs.LocalFileSystem(), str(root))


def _data_folders(root: Path) -> list[Path]:
    """The root, every partition folder and the rejects folder (where temp files may be)."""
    folders = [root]
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.is_dir() and (
            layout.parse_partition_name(entry.name) is not None or entry.name == REJECTS_DIR
        ):
            folders.append(Path(entry.path))
    return folders


def _remove_temp_files(root: Path) -> list[Path]:
    removed = []
    for folder in _data_folders(root):
        for entry in os.scandir(folder):
            if _is_temp_name(entry.name) and entry.is_file() and _unlink_quietly(Path(entry.path)):
                removed.append(Path(entry.path))
    return removed


def _fault(
    exc: OSError,
    doing: str,
    root: Path,
    next_block: int | None,
    *,
    cleanup: str = "the partial files of this commit were removed",
) -> StoreError:
    """A StoreError for an OS fault during a write, saying what to do next."""
    reason = _FAULT_REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    code = errno.errorcode.get(exc.errno or 0, "")
    where = f" ({exc.filename})" if exc.filename else ""
    resume = (
        f"the sidecar still says next_block={next_block}, so the next run resumes there"
        if next_block is not None
        else "the sidecar was not changed"
    )
    remedy = {
        errno.ENOSPC: "free some disk space",
        errno.EDQUOT: "free some space or raise the quota",
        errno.EROFS: "make the folder writable",
        errno.EACCES: "make the folder writable for this user",
        errno.EPERM: "make the folder writable (check chattr/immutable flags)",
    }.get(exc.errno or 0, "fix the storage problem")
    return StoreError(
        f"could not {doing} in {root}: {reason} [{code or exc.errno}]{where}. Nothing that was "
        f"committed before was lost: {cleanup} and {resume}. What to do: {remedy}, or collect "
        f"into another --out folder, then run again.",
        path=str(root),
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _safe_request(request: Request) -> Request:
    """The request with credentials removed from its endpoint (belt and braces: it should
    never hold any; DESIGN.md "never a key or a token")."""
    clean = redact(request.endpoint)
    if clean != request.endpoint:
        log.warning("the endpoint held a credential; it is recorded without it")
        return dataclasses.replace(request, endpoint=clean)
    return request


def _request_text(identity: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={identity[key]!r}" for key in sorted(identity))


def _reject_record(reject: Any) -> dict[str, Any]:
    """A JSON line for one rejected transfer (an engine ``Reject`` or a mapping)."""
    keys = ("block_num", "block_id", "trx_id", "action_idx", "global_sequence", "reason", "raw")
    if isinstance(reject, Mapping):
        record = {key: reject.get(key) for key in keys}
    else:
        record = {key: getattr(reject, key, None) for key in keys}
    for key in ("reason", "raw"):
        if record[key] is not None and not isinstance(record[key], str):
            record[key] = _dumps(record[key])
        if isinstance(record[key], str):
            record[key] = redact(record[key])
    return record


def read_part_metadata(path: str | Path) -> dict[str, str]:
    """The ``karma.*`` key-value metadata of a part file (empty if it has none)."""
    raw = pq.read_metadata(path).metadata or {}
    out = {}
    for key, value in raw.items():
        text_key = key.decode("utf-8", "replace")
        if text_key.startswith("karma."):
            out[text_key] = value.decode("utf-8", "replace")
    return out


def _parquet_bytes(table: pa.Table, metadata: Mapping[str, str]) -> pa.Buffer:
    """Serialize a part in memory, so that the bytes reach disk through _write_durably only."""
    table = table.replace_schema_metadata(dict(metadata))
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=COMPRESSION,
        row_group_size=ROW_GROUP_ROWS,
        write_statistics=True,
    )
    return sink.getvalue()


class _BufferedFdSink:
    """A write-only file object over an fd whose bytes reach disk only through os.write.

    Writes are gathered into chunks of a few MB, so a merged part costs a handful of
    ``os.write`` calls (the fault-injection point of the tests) and bounded memory.
    """

    CHUNK = 1024 * 1024

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.closed = False

    def write(self, data: Any) -> int:
        self.buffer += data
        if len(self.buffer) >= self.CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        _write_all(self.fd, self.buffer)
        self.buffer.clear()

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True

    def writable(self) -> bool:
        return True


def _stream_parts(temp: Path, paths: list[Path], metadata: Mapping[str, str]) -> bool:
    """Write ``paths`` (in block order) into ``temp`` as one part, a row group at a time.

    Returns ``False``, leaving nothing behind, if the rows are not already in global_sequence
    order across the parts (then the caller sorts in memory).
    """
    schema = model.ARROW_SCHEMA.with_metadata(dict(metadata))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    in_order = True
    try:
        sink = _BufferedFdSink(fd)
        with pq.ParquetWriter(
            sink, schema, compression=COMPRESSION, write_statistics=True
        ) as writer:
            previous = -1
            pending: list[pa.Table] = []
            pending_rows = 0
            for path in paths:
                source = pq.ParquetFile(path)
                for index in range(source.num_row_groups):
                    group = _check_table(source.read_row_group(index).replace_schema_metadata(None))
                    if group.num_rows == 0:
                        continue
                    sequences = group.column("global_sequence")
                    if sequences[0].as_py() <= previous:
                        in_order = False
                        break
                    previous = sequences[-1].as_py()
                    # Small commits make small row groups: coalesce them to full ones.
                    pending.append(group)
                    pending_rows += group.num_rows
                    if pending_rows >= MERGE_GROUP_ROWS:
                        writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                        pending, pending_rows = [], 0
                if not in_order:
                    break
            if pending and in_order:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
        sink.close()
        if in_order:
            os.fsync(fd)
    finally:
        os.close(fd)
        # Give the merge's buffers back to the system: the collector keeps running after it.
        pa.default_memory_pool().release_unused()
    if not in_order:
        _unlink_quietly(temp)
    return in_order


def _read_sorted(root: Path, parts: list[PartRef]) -> pa.Table:
    tables = [pq.ParquetFile(root / p.path).read().replace_schema_metadata(None) for p in parts]
    return _check_table(pa.concat_tables(tables)).sort_by("global_sequence")


def _check_table(table: pa.Table) -> pa.Table:
    expected = model.ARROW_SCHEMA
    if table.schema.remove_metadata().equals(expected):
        return table
    if table.schema.names != expected.names:
        raise UsageError(
            f"a commit table must have the columns {list(expected.names)}, "
            f"got {table.schema.names}; build it with model.transfers_to_table()"
        )
    try:
        return table.cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UsageError(f"a commit table does not match model.ARROW_SCHEMA: {exc}") from None


def _split_by_day(table: pa.Table) -> list[tuple[date, pa.Table]]:
    """Sort by global_sequence and split by the UTC day of block_time (Hive partitions)."""
    sequences = table.column("global_sequence").to_numpy()
    if len(sequences) > 1 and not bool((sequences[1:] >= sequences[:-1]).all()):
        table = table.sort_by("global_sequence")
    millis = table.column("block_time").cast(pa.int64()).to_numpy()
    day_numbers = millis // _MS_PER_DAY
    numbers = np.unique(day_numbers)
    if len(numbers) == 1:
        return [(layout.day_of_ms(int(numbers[0]) * _MS_PER_DAY), table)]
    return [
        (layout.day_of_ms(int(number) * _MS_PER_DAY), table.filter(pa.array(day_numbers == number)))
        for number in numbers
    ]


# --------------------------------------------------------------------------------------------
# The writer lock.


class _Lock:
    """An exclusive, non-blocking ``flock`` on ``<root>/_lock`` naming its holder."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self.fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _fault(
                exc, "create the lock file", root, None, cleanup="nothing was written"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise LockedError(
                f"{root} is being written by another collector ({holder}); a dataset has one "
                f"writer at a time. Stop that collector first, or collect into another --out "
                f"folder.",
                path=str(root),
            ) from None
        except OSError as exc:
            os.close(fd)
            raise _fault(
                exc, "lock the dataset", root, None, cleanup="nothing was written"
            ) from exc
        self.fd = fd
        # Who holds it, for the next writer's error message (pid and host are not secrets).
        note = _dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (note + "\n").encode(), 0)
        except OSError as exc:  # the lock itself is held; the note is a courtesy
            log.debug("could not record the lock holder in %s: %s", self.path, exc)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            note = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
            return f"pid {note['pid']} on {note.get('host', '?')} since {note.get('since', '?')}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


# --------------------------------------------------------------------------------------------
# The store.


class Store:
    """The one writer of a dataset folder. Open with :meth:`Store.open`; use as a context manager.

    Attributes:
        root: the dataset folder.
        request: what this run collects (recorded in the sidecar and every part).
        cursor: the durable commit point, or ``None`` for a dataset without any commit yet.
        auto_compact: merge finished days after each commit (see :meth:`compact`).
    """

    def __init__(self, root: Path, request: Request, lock: _Lock, *, auto_compact: bool) -> None:
        # Use Store.open(): it takes the lock and recovers before a Store exists.
        self.root = root
        self.request = request
        self.cursor: Cursor | None = None
        self.auto_compact = auto_compact
        self._lock: _Lock | None = lock
        self._chain_id: str | None = None
        self._notes: dict[str, Any] = {}
        # The before_day of the last successful compaction: auto compaction runs again only
        # when the cursor moves into a new UTC day (cheap commits within a day).
        self._compacted_before: date | None = None

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | Path,
        request: Request,
        *,
        create: bool = True,
        auto_compact: bool = True,
    ) -> Store:
        """Open a dataset for writing.

        Takes the writer lock, reads the sidecar, checks the recorded request, and removes the
        leftovers of an interrupted commit or compaction (logged at WARNING).

        Args:
            root: the dataset folder (``--out``); created when missing and ``create`` is true.
            request: what this run collects. Its identity must equal the recorded one; the
                endpoint may differ (same chain, another provider).
            create: create the folder when it does not exist.
            auto_compact: merge finished days after each commit.

        Raises:
            LockedError: another writer holds the dataset.
            CursorError: the sidecar is damaged, or parts exist without a sidecar (the message
                gives the repair command).
            RequestMismatchError: the dataset was collected with another request.
            StoreError: the folder is missing (``create=False``) or cannot be written.
        """
        root = Path(root)
        request = _safe_request(request)
        if not root.is_dir():
            if not create:
                raise StoreError(
                    f"no dataset at {root}: the folder does not exist. Check the path, or let "
                    f"the collector create it.",
                    path=str(root),
                )
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _fault(
                    exc, "create the dataset folder", root, None, cleanup="nothing was written"
                ) from exc
        lock = _Lock(root)
        store = cls(root, request, lock, auto_compact=auto_compact)
        try:
            store.cursor = _read_sidecar(root)
            store._check_request()
            store._recover()
        except BaseException:
            store.close()
            raise
        return store

    def _check_request(self) -> None:
        if self.cursor is None:
            return
        recorded = self.cursor.request
        if recorded.identity() != self.request.identity():
            differing = sorted(
                key
                for key in self.request.identity()
                if recorded.identity().get(key) != self.request.identity().get(key)
            )
            raise RequestMismatchError(
                f"{self.root} holds data collected with [{_request_text(recorded.identity())}] "
                f"but this run asks for [{_request_text(self.request.identity())}] (differs in: "
                f"{', '.join(differing)}). Collect this request into another --out folder, or "
                f"rerun with the original flags to continue the dataset.",
                path=str(self.root),
            )
        if (recorded.source, recorded.endpoint) != (self.request.source, self.request.endpoint):
            log.info(
                "continuing the dataset through %s %s (its last commit came through %s %s)",
                self.request.source,
                redact(self.request.endpoint),
                recorded.source,
                redact(recorded.endpoint),
            )

    @property
    def chain_id(self) -> str | None:
        """The chain the dataset belongs to: recorded, or bound by :meth:`bind_chain`."""
        if self.cursor is not None and self.cursor.chain_id is not None:
            return self.cursor.chain_id
        return self._chain_id

    def note(self, notes: Mapping[str, Any]) -> None:
        """Record facts of this run (e.g. how ``--since`` resolved) in the sidecar's ``extra``,
        from the next commit on."""
        self._notes.update(notes)

    def bind_chain(self, chain_id: str) -> None:
        """Tie the dataset to ``chain_id`` (written with the next commit).

        A dataset recorded before chain ids were kept takes the first one seen and is
        upgraded in place on its next commit.

        Raises:
            ChainMismatchError: the dataset belongs to another chain.
        """
        recorded = self.chain_id
        if recorded is not None and recorded != chain_id:
            raise ChainMismatchError(
                f"{self.root} holds data of chain {recorded}, but this run's endpoint serves "
                f"chain {chain_id}. Collect into another --out folder, or use an endpoint of "
                "the dataset's chain",
                path=str(self.root),
                dataset_chain_id=recorded,
                other_chain_id=chain_id,
            )
        self._chain_id = chain_id

    def _recover(self) -> None:
        """Remove what an interrupted commit or compaction left (DESIGN.md "Recovery")."""
        parts = _list_parts(self.root)
        rejects = _rejects_files(self.root)
        if self.cursor is None:
            if parts or rejects:
                # Refuse before touching anything: only the repair may decide what counts.
                raise CursorError(
                    f"{self.root} has {len(parts)} part(s) and {len(rejects)} rejects file(s) "
                    f"but no {CURSOR_FILE}, so which of them are committed is unknown; refusing "
                    f"to write rather than restart silently. "
                    f"{layout.repair_hint(self.root, self.request)}",
                    path=str(self.root / CURSOR_FILE),
                )
            for temp in _remove_temp_files(self.root):
                log.warning("recovery: removed temp file %s", temp)
            return
        next_block = self.cursor.next_block
        straddling = [p for p in parts if p.first_block < next_block <= p.last_block]
        if straddling:
            # This writer never makes such a part (a commit ends at next_block - 1 and a merge
            # covers committed ranges only): the sidecar is older than the data, e.g. restored
            # from a backup. Deleting the part could lose rows the sidecar calls committed.
            raise CursorError(
                f"{self.root / straddling[0].path} spans next_block={next_block} of "
                f"{CURSOR_FILE}: the sidecar is older than the data (restored from a backup?). "
                f"{layout.repair_hint(self.root, self.request, force=True)}",
                path=str(self.root / CURSOR_FILE),
            )
        removed = [str(p) for p in _remove_temp_files(self.root)]
        touched: set[Path] = set()
        for part in parts:
            if part.first_block >= next_block:
                # Written by a commit whose sidecar never landed.
                path = self.root / part.path
                if _unlink_quietly(path):
                    removed.append(str(path))
                    touched.add(path.parent)
        for _first, last, path in rejects:
            if last >= next_block and _unlink_quietly(path):
                removed.append(str(path))
                touched.add(path.parent)
        removed += [str(p) for p in self._remove_contained_parts(touched)]
        for folder in touched:
            self._try_fsync_dir(folder)
        for path in removed:
            log.warning("recovery: removed %s (left by an interrupted commit or compaction)", path)
        self._remove_empty_partitions()

    def _remove_contained_parts(self, touched: set[Path] | None = None) -> list[Path]:
        """Finish an interrupted compaction: delete parts hidden inside a merged part."""
        assert self.cursor is not None
        parts = [p for p in _list_parts(self.root) if p.last_block < self.cursor.next_block]
        kept = set(layout.committed_parts(parts, self.cursor.next_block))
        removed = []
        for part in parts:
            if part not in kept:
                path = self.root / part.path
                if _unlink_quietly(path):
                    removed.append(path)
                    if touched is not None:
                        touched.add(path.parent)
                    else:
                        self._try_fsync_dir(path.parent)
        return removed

    def _remove_empty_partitions(self) -> None:
        for folder in _data_folders(self.root)[1:]:
            if folder.name == REJECTS_DIR:
                continue
            try:
                folder.rmdir()  # only succeeds when empty
            except OSError:
                continue

    @staticmethod
    def _try_fsync_dir(folder: Path) -> None:
        try:
            _fsync_dir(folder)
        except OSError as exc:
            log.warning("could not fsync %s: %s", folder, exc)

    # -- state ---------------------------------------------------------------------------------

    @property
    def next_block(self) -> int | None:
        """The durable next_block, or ``None`` before the first commit."""
        return None if self.cursor is None else self.cursor.next_block

    @property
    def closed(self) -> bool:
        return self._lock is None

    def _check_open(self) -> None:
        if self._lock is None:
            raise UsageError(f"the store for {self.root} is closed; open it again")

    # -- committing ----------------------------------------------------------------------------

    def commit(
        self,
        *,
        rows: Sequence[model.Transfer],
        rejects: Sequence[Any] = (),
        first_block: int,
        next_block: int,
        last_block_num: int | None = None,
        last_block_id: str | None = None,
        last_block_time: int | None = None,
        last_global_sequence: int | None = None,
        via: tuple[str, str] | None = None,
    ) -> Cursor:
        """Commit the rows of blocks ``[first_block, next_block)`` and move the cursor.

        Args:
            rows: the transfers of the committed blocks, in any order (sorted by
                global_sequence on write). May be empty: the commit then only moves the cursor.
            rejects: transfers that failed to parse (engine ``Reject`` objects or mappings with
                ``block_num, block_id, trx_id, action_idx, global_sequence, reason, raw``).
            first_block: first block of the commit (normally the durable next_block).
            next_block: the new durable next_block (first block not committed).
            last_block_num, last_block_id, last_block_time: the last committed block
                (time in ms since the epoch, UTC); ``None`` keeps the previous value.
            last_global_sequence: the highest committed global_sequence; ``None`` keeps the
                previous value.
            via: ``(source kind, endpoint)`` that delivered these blocks, for the sidecar's
                history; ``None`` = the request's.

        Returns:
            The new durable cursor (also in :attr:`cursor`).

        Raises:
            UsageError: the range or the rows are inconsistent with the cursor.
            StoreError: a storage fault; nothing committed before was lost, the sidecar is
                unchanged, and the commit may be retried.
        """
        return self.commit_table(
            model.transfers_to_table(rows),
            rejects=rejects,
            first_block=first_block,
            next_block=next_block,
            last_block_num=last_block_num,
            last_block_id=last_block_id,
            last_block_time=last_block_time,
            last_global_sequence=last_global_sequence,
            via=via,
        )

    def commit_table(
        self,
        table: pa.Table,
        *,
        rejects: Sequence[Any] = (),
        first_block: int,
        next_block: int,
        last_block_num: int | None = None,
        last_block_id: str | None = None,
        last_block_time: int | None = None,
        last_global_sequence: int | None = None,
        via: tuple[str, str] | None = None,
    ) -> Cursor:
        """Like :meth:`commit` with the rows as a prebuilt Arrow table (``model.ARROW_SCHEMA``)."""
        self._check_open()
        table = _check_table(table)
        previous = self.cursor
        self._check_range(table, len(rejects), first_block, next_block)
        if last_global_sequence is None and table.num_rows:
            last_global_sequence = int(pc.max(table.column("global_sequence")).as_py())

        def keep(value: Any, name: str) -> Any:
            # None means "unchanged" (e.g. a zero-row commit that only moves next_block).
            if value is not None or previous is None:
                return value
            return getattr(previous, name)

        spans = previous.sources if previous else ()
        cursor = Cursor(
            request=self.request,
            next_block=next_block,
            chain_id=self.chain_id,
            sources=layout.extend_spans(
                spans,
                *(via or (self.request.source, self.request.endpoint)),
                first_block,
                next_block - 1,
            ),
            last_block_num=keep(last_block_num, "last_block_num"),
            last_block_id=keep(last_block_id, "last_block_id"),
            last_block_time=keep(last_block_time, "last_block_time"),
            last_global_sequence=keep(last_global_sequence, "last_global_sequence"),
            rows=(previous.rows if previous else 0) + table.num_rows,
            rejects=(previous.rejects if previous else 0) + len(rejects),
            commits=(previous.commits if previous else 0) + 1,
            written_at=_now_iso(),
            # "rebuilt" describes the sidecar a repair wrote, not the ones after it.
            extra={
                **{k: v for k, v in (previous.extra if previous else {}).items() if k != "rebuilt"},
                **self._notes,
            },
        )
        self._write_commit(table, rejects, first_block, next_block, cursor)
        if self.auto_compact:
            self._auto_compact()
        return cursor

    def _check_range(
        self, table: pa.Table, n_rejects: int, first_block: int, next_block: int
    ) -> None:
        previous = self.cursor
        if not (0 <= first_block <= next_block):
            raise UsageError(f"bad commit range: first_block={first_block} next_block={next_block}")
        if previous is not None:
            if first_block < previous.next_block:
                raise UsageError(
                    f"commit starts at block {first_block}, below the durable next_block "
                    f"{previous.next_block}: those blocks are committed already"
                )
            if first_block > previous.next_block:
                log.warning(
                    "commit starts at block %d, after the durable next_block %d: blocks %d..%d "
                    "are skipped",
                    first_block,
                    previous.next_block,
                    previous.next_block,
                    first_block - 1,
                )
        if (table.num_rows or n_rejects) and first_block == next_block:
            raise UsageError("a commit with rows or rejects needs a non-empty block range")
        if table.num_rows:
            low, high = pc.min_max(table.column("block_num")).values()
            if low.as_py() < first_block or high.as_py() >= next_block:
                raise UsageError(
                    f"rows span blocks {low.as_py()}..{high.as_py()}, outside the commit range "
                    f"[{first_block}, {next_block})"
                )

    def _part_metadata(
        self,
        *,
        kind: str,
        first: int,
        last: int,
        next_block: int,
        rows: int,
        commit: Mapping[str, Any],
        commits: int,
        merged: list[list[int]] | None = None,
    ) -> dict[str, str]:
        meta = {
            "karma.schema_version": str(model.SCHEMA_VERSION),
            "karma.kind": kind,
            "karma.first_block": str(first),
            "karma.last_block": str(last),
            "karma.next_block": str(next_block),
            "karma.rows": str(rows),
            "karma.commit": _dumps(commit),
            "karma.commits": str(commits),
            "karma.request": _dumps(dataclasses.asdict(self.request)),
        }
        if self.chain_id is not None:
            meta["karma.chain_id"] = self.chain_id
        if merged is not None:
            meta["karma.merged"] = _dumps(merged)
        return meta

    def _write_commit(
        self,
        table: pa.Table,
        rejects: Sequence[Any],
        first_block: int,
        next_block: int,
        cursor: Cursor,
    ) -> None:
        """Write order of DESIGN.md: parts, rejects, then the sidecar; each temp-fsync-rename."""
        durable_next = self.cursor.next_block if self.cursor else None
        pieces = _split_by_day(table) if table.num_rows else []
        last = next_block - 1
        commit_info = {
            "first_block": first_block,
            "next_block": next_block,
            "last_block_num": cursor.last_block_num,
            "last_block_id": cursor.last_block_id,
            "last_block_time": cursor.last_block_time,
            "last_global_sequence": cursor.last_global_sequence,
            "rows": table.num_rows,
            "rejects": len(rejects),
            "days": [day.isoformat() for day, _ in pieces],
        }
        temps: list[Path] = []
        placed: list[Path] = []
        new_folders: list[Path] = []
        stage = "write a part"
        try:
            folders: list[Path] = []
            for day, piece in pieces:
                folder = self.root / layout.partition_name(day)
                if not folder.is_dir():
                    folder.mkdir()
                    new_folders.append(folder)
                folders.append(folder)
                final = folder / layout.part_filename(first_block, last)
                data = _parquet_bytes(
                    piece,
                    self._part_metadata(
                        kind="commit",
                        first=first_block,
                        last=last,
                        next_block=next_block,
                        rows=piece.num_rows,
                        commit=commit_info,
                        commits=1,
                    ),
                )
                temp = folder / _temp_name(final.name)
                temps.append(temp)
                _write_durably(temp, data)
                os.replace(temp, final)
                temps.remove(temp)
                placed.append(final)
            for folder in folders:
                _fsync_dir(folder)
            if rejects:
                stage = "write the rejects file"
                folder = self.root / REJECTS_DIR
                if not folder.is_dir():
                    folder.mkdir()
                    new_folders.append(folder)
                final = folder / rejects_filename(first_block, last)
                lines = "".join(
                    json.dumps(_reject_record(r), ensure_ascii=False, default=_json_default) + "\n"
                    for r in rejects
                )
                temp = folder / _temp_name(final.name)
                temps.append(temp)
                _write_durably(temp, lines.encode("utf-8"))
                os.replace(temp, final)
                temps.remove(temp)
                placed.append(final)
                _fsync_dir(folder)
            if new_folders:
                _fsync_dir(self.root)
            stage = "write the cursor sidecar"
            sidecar = self.root / CURSOR_FILE
            temp = self.root / _temp_name(CURSOR_FILE)
            temps.append(temp)
            _write_durably(temp, cursor.to_json_bytes())
            os.replace(temp, sidecar)
            temps.remove(temp)
        except OSError as exc:
            # Before the sidecar rename nothing of this commit counts: undo it all so that the
            # folder looks as it did (the runner may retry the same or a larger commit).
            for path in temps + placed:
                _unlink_quietly(path)
            for folder in new_folders:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise _fault(exc, stage, self.root, durable_next) from exc
        # The sidecar is in place: from here the commit is visible, never undo it.
        self.cursor = cursor
        try:
            _fsync_dir(self.root)
        except OSError as exc:
            raise StoreError(
                f"the commit up to block {next_block - 1} was written to {self.root} but the "
                f"folder could not be synced ({exc}); it may not survive a power loss. Stop and "
                f"restart the collector: it resumes from whatever the sidecar says.",
                path=str(self.root),
            ) from exc
        log.debug(
            "committed blocks %d..%d: %d rows in %d part(s), %d rejects",
            first_block,
            last,
            table.num_rows,
            len(pieces),
            len(rejects),
        )

    # -- compaction ----------------------------------------------------------------------------

    def _auto_compact(self) -> None:
        if self.cursor is None or self.cursor.last_block_time is None:
            return
        before_day = layout.day_of_ms(self.cursor.last_block_time)
        if before_day == self._compacted_before:
            return
        try:
            merged = self.compact(before_day=before_day)
        except (KarmaError, OSError) as exc:
            # The commit is durable; a failed compaction only leaves small parts (and maybe a
            # temp file or a hidden part that the next run removes).
            log.warning("compaction after the commit failed, will retry later: %s", exc)
            return
        if merged:
            log.info("compacted %d finished day(s) in %s", merged, self.root)

    def compact(self, *, before_day: date | None = None) -> int:
        """Merge each finished day's committed parts into one part named by the union range.

        The merged part is written atomically (temp, fsync, rename) before the small parts are
        deleted, so under the reader rule a reader sees the old parts or the merged one, never
        both. An interrupted compaction is finished here or at the next :meth:`open`.

        Args:
            before_day: merge days strictly before this UTC day. ``None`` means the day of the
                durable cursor's last block time (days before it are finished).

        Returns:
            The number of days merged.

        Raises:
            StoreError: a storage fault (the small parts stay; nothing is lost).
        """
        self._check_open()
        if self.cursor is None:
            return 0
        if before_day is None:
            if self.cursor.last_block_time is None:
                return 0
            before_day = layout.day_of_ms(self.cursor.last_block_time)
        for path in _remove_temp_files(self.root):
            log.warning("compaction: removed temp file %s", path)
        for path in self._remove_contained_parts():
            log.warning("compaction: removed %s (already inside a merged part)", path)
        parts = layout.committed_parts(_list_parts(self.root), self.cursor.next_block)
        by_day: dict[date, list[PartRef]] = {}
        for part in parts:
            if part.day is not None and part.day < before_day:
                by_day.setdefault(part.day, []).append(part)
        merged = 0
        for day in sorted(by_day):
            if len(by_day[day]) > 1:
                self._merge_day(day, by_day[day])
                merged += 1
        self._compacted_before = before_day
        return merged

    def _merge_day(self, day: date, parts: list[PartRef]) -> None:
        assert self.cursor is not None
        folder = self.root / layout.partition_name(day)
        parts = sorted(parts)
        commit_ranges: list[list[int]] = []
        top_commit: dict[str, Any] = {}
        top_last = -1
        rows = 0
        for part in parts:
            path = self.root / part.path
            meta = read_part_metadata(path)
            rows += pq.ParquetFile(path).metadata.num_rows
            commit_ranges += _commit_ranges(part, meta)
            if part.last_block > top_last:
                top_last = part.last_block
                top_commit = json.loads(meta.get("karma.commit", "{}"))
        first = min(p.first_block for p in parts)
        last = max(p.last_block for p in parts)
        final = folder / layout.part_filename(first, last)
        temp = folder / _temp_name(final.name)
        metadata = self._part_metadata(
            kind="compaction",
            first=first,
            last=last,
            next_block=last + 1,
            rows=rows,
            commit=top_commit,
            commits=len(commit_ranges),
            merged=sorted(commit_ranges),
        )
        try:
            # Stream row group by row group: a busy day can hold millions of rows, and the
            # collector's memory must not grow with it (bench/bench_memory.py).
            if not _stream_parts(temp, [self.root / p.path for p in parts], metadata):
                _write_durably(temp, _parquet_bytes(_read_sorted(self.root, parts), metadata))
            os.replace(temp, final)
            _fsync_dir(folder)
        except OSError as exc:
            _unlink_quietly(temp)
            raise _fault(
                exc,
                f"compact {folder.name}",
                self.root,
                self.cursor.next_block,
                cleanup="the merged part's temp file was removed, the day's parts stay as they were",
            ) from exc
        # The merged part is durable and contains every small range: they are now hidden by
        # the reader rule and can go.
        for part in parts:
            path = self.root / part.path
            if path != final:
                _unlink_quietly(path)
        self._try_fsync_dir(folder)
        log.info("compacted %d parts of %s into %s (%d rows)", len(parts), day, final.name, rows)

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the writer lock. Idempotent."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}, next_block={self.next_block})"


def _read_sidecar(root: Path) -> Cursor | None:
    path = root / CURSOR_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _fault(
            exc, "read the cursor sidecar", root, None, cleanup="nothing was written"
        ) from exc
    try:
        return Cursor.from_json_bytes(data, path=str(path))
    except CursorError as exc:
        # The message of a damaged sidecar ends with layout.repair_hint.
        raise CursorError(
            f"nothing will be written to {root} while its commit point is unknown: {exc}",
            path=str(path),
        ) from exc


# --------------------------------------------------------------------------------------------
# Repair.


def recorded_request(root: str | Path) -> Request | None:
    """The request recorded in the parts' metadata (the newest part's), or ``None``."""
    root = Path(root)
    for part in reversed(_list_parts(root)):
        meta = read_part_metadata(root / part.path)
        if "karma.request" in meta:
            return _request_from_json(meta["karma.request"])
    return None


def _request_from_json(text: str) -> Request:
    body = json.loads(text)
    names = {f.name for f in dataclasses.fields(Request)}
    return Request(**{key: value for key, value in body.items() if key in names})


def rebuild_sidecar(
    root: str | Path,
    request: Request | None = None,
    *,
    force: bool = False,
    notes: list[str] | None = None,
) -> Cursor | None:
    """Rebuild ``_cursor.json`` from the parts' metadata (the repair command's core).

    Takes the writer lock. ``next_block`` becomes the end of the highest complete commit + 1;
    the parts of an incomplete commit (some of its days or its rejects file missing) are
    removed, as are temp files and parts hidden inside a merged part. A damaged sidecar is kept
    beside as ``_cursor.json.broken-<time>``.

    Zero-row commits leave no part, so the rebuilt ``next_block`` may be lower than the lost
    one: the collector then re-reads blocks that held no matching transfers (nothing is lost
    or duplicated).

    Args:
        root: the dataset folder.
        request: the expected request; ``None`` takes the one recorded in the parts. Its
            identity must match the recorded one (the endpoint may differ).
        force: rebuild even when the existing sidecar is readable.
        notes: if given, human-readable lines describing what was done are appended.

    Returns:
        The new cursor; the existing one if it was readable and ``force`` is false; ``None``
        when there is nothing to rebuild from (no parts, no rejects files).

    Raises:
        LockedError: a collector is writing the dataset.
        RequestMismatchError: the parts were collected with another request.
        CursorError: the parts' metadata is missing or inconsistent.
    """
    root = Path(root)
    say = notes.append if notes is not None else (lambda _text: None)
    if not root.is_dir():
        raise StoreError(f"no dataset at {root}: the folder does not exist", path=str(root))
    lock = _Lock(root)
    try:
        return _rebuild_locked(root, request, force, say)
    finally:
        lock.release()


def _rebuild_locked(root: Path, request: Request | None, force: bool, say: Any) -> Cursor | None:
    sidecar = root / CURSOR_FILE
    existing: Cursor | None = None
    broken = False
    if sidecar.exists():
        try:
            existing = Cursor.from_json_bytes(sidecar.read_bytes(), path=str(sidecar))
        except CursorError as exc:
            broken = True
            say(f"the existing sidecar is damaged: {exc}")
    if existing is not None and not force:
        say(
            f"{sidecar} is readable (next_block={existing.next_block}, rows={existing.rows}); "
            f"nothing rebuilt. Use --force to rebuild it from the parts anyway."
        )
        return existing
    for path in _remove_temp_files(root):
        say(f"removed temp file {path}")

    parts = _list_parts(root)
    rejects = _rejects_files(root)
    infos: dict[PartRef, dict[str, str]] = {}
    for part in parts:
        meta = read_part_metadata(root / part.path)
        if "karma.request" not in meta or "karma.commit" not in meta:
            raise CursorError(
                f"{root / part.path} has no karma metadata, so the sidecar cannot be rebuilt "
                f"from it. Move that file out of the dataset and run the repair again.",
                path=str(root / part.path),
            )
        infos[part] = meta

    recorded = {_dumps(_request_from_json(m["karma.request"]).identity()) for m in infos.values()}
    if len(recorded) > 1:
        raise CursorError(
            f"the parts in {root} were collected with different requests ({len(recorded)}); "
            f"separate them into different folders first.",
            path=str(root),
        )
    newest = recorded_request(root)
    if request is None:
        request = newest
    elif newest is not None and newest.identity() != request.identity():
        raise RequestMismatchError(
            f"the parts in {root} were collected with [{_request_text(newest.identity())}], "
            f"not [{_request_text(request.identity())}]. Repair with the original flags.",
            path=str(root),
        )
    if request is None and existing is not None:
        request = existing.request
    if not parts and not rejects:
        if sidecar.exists() and broken:
            aside = _move_aside(sidecar)
            say(f"moved the damaged sidecar to {aside}")
        say(
            f"{root} has no parts and no rejects files: nothing to rebuild; the next run starts fresh"
        )
        return None
    if request is None:
        raise CursorError(
            f"{root} has rejects files but no parts, so the request cannot be recovered; "
            f"pass --contract and --action.",
            path=str(root),
        )
    request = _safe_request(request)

    # Commits and their completeness: a commit part names the days and rejects it wrote.
    commits: dict[tuple[int, int], dict[str, Any]] = {}
    for part, meta in infos.items():
        if meta.get("karma.kind", "commit") == "commit":
            commits[(part.first_block, part.last_block)] = json.loads(meta["karma.commit"])
    rejects_ranges = {(first, last) for first, last, _ in rejects}
    by_partition: dict[date | None, list[PartRef]] = {}
    for part in parts:
        by_partition.setdefault(part.day, []).append(part)
    first_incomplete: int | None = None
    for (first, last), info in sorted(commits.items()):
        missing = []
        for day_text in info.get("days", []):
            day = date.fromisoformat(day_text)
            if not any(
                p.first_block <= first and last <= p.last_block for p in by_partition.get(day, [])
            ):
                missing.append(day_text)
        if info.get("rejects") and (first, last) not in rejects_ranges:
            missing.append("rejects file")
        if missing:
            say(f"commit {first}..{last} is incomplete (missing: {', '.join(missing)})")
            first_incomplete = first
            break
    ends = [p.last_block for p in parts] + [last for _, last, _ in rejects]
    next_block = (max(ends) + 1) if first_incomplete is None else first_incomplete
    for part in parts:
        if part.last_block >= next_block and _unlink_quietly(root / part.path):
            say(f"removed {part.path} (part of an incomplete commit)")
    for _, last, path in rejects:
        if last >= next_block and _unlink_quietly(path):
            say(f"removed {path.relative_to(root)} (rejects of an incomplete commit)")
    live = layout.committed_parts([p for p in parts if p.last_block < next_block], next_block)
    for part in parts:
        if part.last_block < next_block and part not in live and _unlink_quietly(root / part.path):
            say(f"removed {part.path} (already inside a merged part)")

    rows = 0
    commit_set: set[tuple[int, int]] = set()
    last_gs: int | None = None
    top: dict[str, Any] = {}
    top_last = -1
    chain_id: str | None = None
    for part in live:
        meta = infos[part]
        file_meta = pq.read_metadata(root / part.path)
        rows += file_meta.num_rows
        commit_set.update((a, b) for a, b in _commit_ranges(part, meta))
        part_max = _column_max(file_meta, "global_sequence")
        if part_max is not None:
            last_gs = part_max if last_gs is None else max(last_gs, part_max)
        chain_id = chain_id or meta.get("karma.chain_id")
        if part.last_block > top_last:
            top_last = part.last_block
            top = json.loads(meta["karma.commit"])
    reject_count = 0
    for first, last, path in rejects:
        if last < next_block:
            with path.open("rb") as handle:
                reject_count += sum(1 for line in handle if line.strip())
            commit_set.add((first, last))
    # Zero-row commits without rejects leave no trace: the count is a lower bound.
    cursor = Cursor(
        request=request,
        next_block=next_block,
        chain_id=chain_id,
        last_block_num=top.get("last_block_num"),
        last_block_id=top.get("last_block_id"),
        last_block_time=top.get("last_block_time"),
        last_global_sequence=last_gs,
        rows=rows,
        rejects=reject_count,
        commits=len(commit_set),
        written_at=_now_iso(),
        extra={"rebuilt": True},
    )
    temp = root / _temp_name(CURSOR_FILE)
    try:
        if sidecar.exists():
            # A copy, not a move: the old file stays in place until the new one replaces it.
            aside = sidecar.with_name(f"{CURSOR_FILE}.broken-{_stamp()}")
            _write_durably(aside, sidecar.read_bytes())
            say(f"kept the previous sidecar as {aside.name}")
        _write_durably(temp, cursor.to_json_bytes())
        os.replace(temp, sidecar)
        _fsync_dir(root)
    except OSError as exc:
        _unlink_quietly(temp)
        raise _fault(
            exc, "write the rebuilt sidecar", root, None, cleanup="its temp file was removed"
        ) from exc
    say(
        f"rebuilt {sidecar}: next_block={next_block}, rows={rows}, rejects={reject_count}, "
        f"{len(live)} part(s)"
    )
    return cursor


def _commit_ranges(part: PartRef, meta: Mapping[str, str]) -> list[list[int]]:
    """The [first, last] ranges of the commits whose rows a part holds."""
    if meta.get("karma.kind") == "compaction" and "karma.merged" in meta:
        return [list(r) for r in json.loads(meta["karma.merged"])]
    return [[part.first_block, part.last_block]]


def _column_max(file_meta: pq.FileMetaData, name: str) -> int | None:
    index = file_meta.schema.names.index(name)
    best = None
    for group in range(file_meta.num_row_groups):
        stats = file_meta.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None
        best = stats.max if best is None else max(best, stats.max)
    return best


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.broken-{_stamp()}")
    os.replace(path, aside)
    return aside


# --------------------------------------------------------------------------------------------
# Command line: python -m karma_analytics.store repair PATH ...

_COMPACT_MOVED = "compaction is `python -m karma_analytics.dataset compact PATH`"


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m karma_analytics.store repair PATH [--contract C] [--action A] ...``.

    Returns the exit code (:mod:`karma_analytics.cli`: the same as the collector's).
    """
    from .cli import EXIT_OK, EXIT_USAGE, exit_code_for, exit_codes_epilog

    parser = argparse.ArgumentParser(
        prog="python -m karma_analytics.store",
        description="Maintenance of a karma_analytics dataset folder.",
        epilog=exit_codes_epilog(
            "repaired, or nothing needed repairing",
            interrupted="interrupted by Ctrl-C (the old sidecar, if any, is still in place)",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    repair = commands.add_parser(
        "repair", help="rebuild the cursor sidecar (_cursor.json) from the parts' metadata"
    )
    repair.add_argument("path", help="the dataset folder (the collector's --out)")
    repair.add_argument("--contract", help="expected contract (checked against the parts)")
    repair.add_argument("--action", help="expected action (checked against the parts)")
    repair.add_argument("--endpoint", help="endpoint to record (no credentials)")
    repair.add_argument(
        "--force", action="store_true", help="rebuild even if the sidecar is readable"
    )
    # Listed only to point to the one compaction command, whatever follows it.
    commands.add_parser("compact", help=f"moved: {_COMPACT_MOVED}")
    words = list(argv) if argv is not None else sys.argv[1:]
    if words[:1] == ["compact"]:
        print(f"error: {_COMPACT_MOVED}", file=sys.stderr)
        return EXIT_USAGE
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        return _repair_main(args)
    except (KarmaError, KeyboardInterrupt) as exc:
        print(f"error: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return exit_code_for(exc)


def _repair_main(args: argparse.Namespace) -> int:
    root = Path(args.path)
    request = recorded_request(root) if root.is_dir() else None
    if request is None and args.contract and args.action:
        request = Request.for_token(args.contract, args.action)
    if request is not None:
        for flag in ("contract", "action"):
            wanted = getattr(args, flag)
            if wanted is not None and wanted != getattr(request, flag):
                raise RequestMismatchError(
                    f"the parts in {root} were collected for {flag}={getattr(request, flag)!r}, "
                    f"not {wanted!r}; repair with the original flags",
                    path=str(root),
                )
        if args.endpoint is not None:
            request = dataclasses.replace(request, endpoint=args.endpoint)
    notes: list[str] = []
    cursor = rebuild_sidecar(root, request, force=args.force, notes=notes)
    for line in notes:
        print(line)
    if cursor is not None:
        print(f"next run resumes at block {cursor.next_block}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
