"""Read side of the transfers dataset: committed files, :func:`load_transfers`, info, verify.

Everything here follows the **reader rule** of the design (DESIGN.md, "The dataset on disk"):
a part counts only if its last block is below the sidecar's ``next_block``; inside one
partition a part whose block range lies inside another part's range is skipped (a compaction
leftover); names starting with ``.`` or ``_`` are never data. The file list is built here from
:mod:`karma_analytics.layout` and handed to ``pyarrow.dataset`` explicitly, so a reader never
sees a half-written commit or both the small parts and their compacted union.

Filters are pushed down twice: whole partitions (``date=YYYY-MM-DD`` folders) and parts (by the
block range in their names) are dropped before any file is opened, and the remaining filters go
to ``pyarrow.dataset`` as expressions, which skip row groups by their statistics.

Command line::

    python -m karma_analytics.dataset info PATH
    python -m karma_analytics.dataset verify PATH
    python -m karma_analytics.dataset compact PATH [--before YYYY-MM-DD]

Exit codes: 0 ok, 1 verification found problems, 2 usage or dataset error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import html
import itertools
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import layout
from .cli import EXIT_DATASET, EXIT_OK, EXIT_USAGE, exit_code_for, exit_codes_epilog
from .exceptions import CursorError, DatasetError, KarmaError, StoreError, UsageError
from .model import ARROW_SCHEMA, COLUMNS, SCHEMA_VERSION

__all__ = [
    "AMOUNT_COLUMN",
    "STRING_DTYPE",
    "DatasetInfo",
    "VerifyReport",
    "committed_files",
    "dataset_info",
    "empty_transfers",
    "load_transfers",
    "main",
    "verify",
]

log = logging.getLogger(__name__)

#: The pandas dtype of every string column: Arrow-backed, zero-copy from Parquet, exact.
STRING_DTYPE = pd.ArrowDtype(pa.string())
#: The float column the loader adds: ``amount_units / 10**precision`` (convenience only).
AMOUNT_COLUMN = "amount"
#: The columns a loaded frame can have, in their default order.
FRAME_COLUMNS: tuple[str, ...] = (*COLUMNS, AMOUNT_COLUMN)

_PARTITION_FIELD = pa.field("date", pa.date32())
# The files hold only ARROW_SCHEMA; the hive partitioning adds ``date`` from the folder name.
_DATASET_SCHEMA = ARROW_SCHEMA.remove_metadata().append(_PARTITION_FIELD)
_PARTITIONING = ds.partitioning(pa.schema([_PARTITION_FIELD]), flavor="hive")
# Antelope symbols carry at most 18 decimals (antelope-sources.md §1); 10**p is exact in
# float64 up to p = 22, so dividing by this table gives the correctly rounded amount.
_MAX_PRECISION = 18
_POW10 = np.array([10.0**p for p in range(256)], dtype=np.float64)
_TS_TYPE = ARROW_SCHEMA.field("block_time").type


# --- locating a dataset ------------------------------------------------------------------------


def _resolve(path: str | Path, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, root)`` for a local path, a filesystem URI, or an explicit filesystem."""
    if filesystem is not None:
        root = str(path).rstrip("/")
        return filesystem, root
    text = str(path)
    if isinstance(path, Path) or "://" not in text:
        return pafs.LocalFileSystem(), Path(text).expanduser().absolute().as_posix()
    try:
        filesystem, root = pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"cannot open {text!r}: {exc}; check the URI scheme and access") from exc
    return filesystem, root.rstrip("/")


def _join(root: str, relative: str) -> str:
    return f"{root}/{relative}" if root else relative


def _open_dataset(
    filesystem: pafs.FileSystem,
    root: str,
    *,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    strict: bool = True,
) -> tuple[layout.Listing, layout.Cursor | None, list[layout.PartRef]]:
    """Scan, read the sidecar and apply the reader rule.

    Raises:
        DatasetError: not a dataset (a file, foreign entries at the root, parts but no sidecar).
        CursorError: the sidecar exists but is corrupt.
    """
    listing = layout.scan(filesystem, root, first_day=first_day, last_day=last_day)
    if not listing.exists:
        return listing, None, []
    top_foreign = [name for name in listing.foreign if "/" not in name]
    if strict and top_foreign:
        shown = ", ".join(sorted(top_foreign)[:5])
        raise DatasetError(
            f"{root!r} is not a transfers dataset: unexpected entries {shown}; a dataset root "
            "holds only _cursor.json, date=YYYY-MM-DD folders and names starting with . or _"
        )
    cursor = layout.read_cursor(filesystem, root)
    if cursor is None:
        if listing.partition_days and strict:
            raise DatasetError(
                f"{root!r} has partitions but no {layout.CURSOR_FILE}, so nothing in it is known "
                f"to be committed. {layout.repair_hint(root)}"
            )
        return listing, None, []
    return listing, cursor, layout.committed_parts(listing.parts, cursor.next_block)


def committed_files(
    path: str | Path = "data/transfers", *, filesystem: pafs.FileSystem | None = None
) -> list[str]:
    """The committed part files of a dataset under the reader rule, for outside engines.

    Args:
        path: dataset root: a local path or a ``pyarrow.fs`` URI (``file://``, ``s3://`` ...).
        filesystem: use this filesystem instead of resolving ``path`` (then ``path`` is the
            root inside it).

    Returns:
        Full paths (within the resolved filesystem) sorted by first block; empty if the
        dataset is empty or missing.
    """
    fs, root = _resolve(path, filesystem)
    _, _, parts = _open_dataset(fs, root)
    return [_join(root, part.path) for part in parts]


# --- loading -----------------------------------------------------------------------------------


def _to_ms(value: Any, *, name: str) -> int | None:
    """Milliseconds since the epoch (UTC), rounded up, for a date, datetime or ISO string."""
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        raise UsageError(
            f"{name}={value!r}: pass a date, a datetime or an ISO string such as '2026-11-27'"
        )
    try:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            stamp = pd.Timestamp(value.year, value.month, value.day)
        else:
            stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{name}={value!r} is not a date or time: {exc}") from exc
    if stamp is pd.NaT:
        raise UsageError(f"{name}={value!r} is not a date or time")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    nanoseconds = stamp.as_unit("ns").value
    # Rounding up keeps both bounds exact on millisecond block times: t >= start and t < end.
    return -(-nanoseconds // 1_000_000)


def _names(value: str | Iterable[str] | None, *, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    names = [str(item) for item in value]
    if not names:
        raise UsageError(f"{name} is empty; pass None to not filter, or at least one account")
    return names


def _min_amount_expr(min_amount: Any) -> ds.Expression:
    """Exact ``amount >= min_amount`` on integer base units, one branch per precision."""
    try:
        minimum = decimal.Decimal(str(min_amount))
    except decimal.InvalidOperation as exc:
        raise UsageError(f"min_amount={min_amount!r} is not a number") from exc
    if not minimum.is_finite():
        raise UsageError(f"min_amount={min_amount!r} must be finite")
    units = pc.field("amount_units")
    precision = pc.field("precision")
    expr = None
    for p in range(_MAX_PRECISION + 1):
        threshold = int((minimum.scaleb(p)).to_integral_value(rounding=decimal.ROUND_CEILING))
        threshold = max(min(threshold, 2**63 - 1), -(2**63))
        branch = (precision == pa.scalar(p, pa.uint8())) & (
            units >= pa.scalar(threshold, pa.int64())
        )
        expr = branch if expr is None else expr | branch
    return expr


def _symbol_expr(symbol: str) -> ds.Expression:
    text = str(symbol).strip()
    if "," in text:  # "4,KARMA": the Antelope symbol form with its precision
        digits, _, code = text.partition(",")
        if not digits.isdigit() or not code:
            raise UsageError(f"symbol={symbol!r}: use a code like 'KARMA' or '4,KARMA'")
        return (pc.field("symbol") == code) & (
            pc.field("precision") == pa.scalar(int(digits), pa.uint8())
        )
    if not text:
        raise UsageError("symbol is empty; pass None to not filter")
    return pc.field("symbol") == text


def _clamp_u32(value: int) -> pa.Scalar:
    return pa.scalar(min(max(int(value), 0), 2**32 - 1), pa.uint32())


def _check_columns(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(FRAME_COLUMNS)
    if isinstance(columns, str):
        columns = [columns]
    wanted = list(dict.fromkeys(columns))
    unknown = [name for name in wanted if name not in FRAME_COLUMNS]
    if unknown:
        raise UsageError(f"unknown columns {unknown}; choose from {list(FRAME_COLUMNS)}")
    return wanted


def _string_mapper(arrow_type: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return STRING_DTYPE
    return None


def _table_to_frame(table: pa.Table, wanted: list[str]) -> pd.DataFrame:
    """Arrow table -> frame with the stable dtypes, sorted by global_sequence, RangeIndex."""
    if "global_sequence" in table.column_names and table.num_rows > 1:
        sequence = table.column("global_sequence").to_numpy()
        if not bool(np.all(sequence[1:] > sequence[:-1])):
            table = table.take(pc.sort_indices(table, [("global_sequence", "ascending")]))
    table = table.replace_schema_metadata(None)
    frame = table.to_pandas(types_mapper=_string_mapper)
    if AMOUNT_COLUMN in wanted:
        units = frame["amount_units"].to_numpy()
        scale = _POW10[frame["precision"].to_numpy()]
        frame[AMOUNT_COLUMN] = units.astype(np.float64) / scale
    if list(frame.columns) != wanted:
        frame = frame[wanted]
    return frame


def empty_transfers(columns: Sequence[str] | None = None) -> pd.DataFrame:
    """An empty transfers frame with the loader's columns and dtypes."""
    wanted = _check_columns(columns)
    return _table_to_frame(ARROW_SCHEMA.empty_table(), wanted)


def load_transfers(
    path: str | Path = "data/transfers",
    *,
    start: Any = None,
    end: Any = None,
    blocks: tuple[int, int] | None = None,
    accounts: str | Iterable[str] | None = None,
    from_accounts: str | Iterable[str] | None = None,
    to_accounts: str | Iterable[str] | None = None,
    symbol: str | None = None,
    min_amount: Any = None,
    columns: Sequence[str] | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> pd.DataFrame:
    """Load committed transfers as a pandas DataFrame.

    Only committed data is read, by the reader rule (see the module docstring). All filters
    combine with AND; each is pushed down: the date range skips partition folders and the block
    range skips part files before anything is opened, and every filter becomes a
    ``pyarrow.dataset`` expression that skips row groups by their statistics.

    Args:
        path: dataset root: a local path, or any ``pyarrow.fs`` URI (``file:///...``,
            ``s3://bucket/prefix`` ...).
        start: first instant included (``block_time >= start``). A ``datetime.date``, a
            ``datetime``/``pandas.Timestamp`` or an ISO string; naive values are UTC, aware
            ones are converted to UTC; a date means its midnight UTC.
        end: first instant excluded (``block_time < end``), same forms as ``start``; so
            ``start="2026-11-27", end="2026-11-28"`` is exactly that UTC day.
        blocks: ``(first, last)`` block numbers, both inclusive.
        accounts: account name(s) appearing as sender OR recipient.
        from_accounts: sender name(s).
        to_accounts: recipient name(s).
        symbol: token symbol code, e.g. ``"KARMA"``, or ``"4,KARMA"`` to also require the
            precision.
        min_amount: smallest amount kept, in token units (``1.5`` means 1.5 KARMA). It is
            applied exactly on the integer column: a row is kept when ``amount_units >=
            ceil(min_amount * 10**precision)`` for that row's precision, with ``min_amount``
            taken through its decimal text (``0.1`` is exactly 0.1, not the nearest binary
            float), so no float rounding can drop or keep a boundary row.
        columns: columns to return, from the schema plus ``"amount"``; ``None`` means all.
            Columns needed for sorting or for ``amount`` are read but not returned.
        filesystem: a ``pyarrow.fs.FileSystem`` to read from; then ``path`` is the root
            inside it (e.g. with ``SubTreeFileSystem``).

    Returns:
        One row per transfer, sorted by ``global_sequence``, with a RangeIndex. Dtypes:
        ``block_time`` ``datetime64[ms, UTC]``; strings :data:`STRING_DTYPE`
        (``string[pyarrow]`` ArrowDtype); ``block_num``/``action_idx`` uint32,
        ``global_sequence`` uint64, ``amount_units`` int64 (exact), ``precision`` uint8,
        ``amount`` float64 (``amount_units / 10**precision``). A missing or empty dataset
        gives an empty frame with these columns and dtypes.

    Raises:
        DatasetError: ``path`` is a file, holds foreign entries, or has parts but no sidecar.
        CursorError: the sidecar is corrupt.
        UsageError: a bad argument.
    """
    wanted = _check_columns(columns)
    start_ms = _to_ms(start, name="start")
    end_ms = _to_ms(end, name="end")
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise UsageError(f"start={start!r} is after end={end!r}")
    first_day = layout.day_of_ms(start_ms) if start_ms is not None else None
    last_day = layout.day_of_ms(end_ms - 1) if end_ms is not None else None

    filters: list[ds.Expression] = []
    if start_ms is not None:
        filters.append(pc.field("block_time") >= pa.scalar(start_ms, _TS_TYPE))
    if end_ms is not None:
        filters.append(pc.field("block_time") < pa.scalar(end_ms, _TS_TYPE))
    if blocks is not None:
        try:
            first_block, last_block = (int(b) for b in blocks)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"blocks={blocks!r}: pass (first, last), both inclusive") from exc
        if first_block > last_block:
            raise UsageError(f"blocks={blocks!r}: first is after last")
        filters.append(pc.field("block_num") >= _clamp_u32(first_block))
        filters.append(pc.field("block_num") <= _clamp_u32(last_block))
    names = _names(accounts, name="accounts")
    if names is not None:
        filters.append(pc.field("from_account").isin(names) | pc.field("to_account").isin(names))
    names = _names(from_accounts, name="from_accounts")
    if names is not None:
        filters.append(pc.field("from_account").isin(names))
    names = _names(to_accounts, name="to_accounts")
    if names is not None:
        filters.append(pc.field("to_account").isin(names))
    if symbol is not None:
        filters.append(_symbol_expr(symbol))
    if min_amount is not None:
        filters.append(_min_amount_expr(min_amount))

    fs, root = _resolve(path, filesystem)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        parts: list[layout.PartRef] = []
        _open_dataset(fs, root, first_day=first_day, last_day=first_day)  # still validate path
    else:
        _, _, parts = _open_dataset(fs, root, first_day=first_day, last_day=last_day)
    if blocks is not None:
        parts = [p for p in parts if p.last_block >= first_block and p.first_block <= last_block]

    read = list(dict.fromkeys(name for name in wanted if name != AMOUNT_COLUMN))
    if AMOUNT_COLUMN in wanted:
        read += [name for name in ("amount_units", "precision") if name not in read]
    if "global_sequence" not in read:
        read.append("global_sequence")
    if not parts:
        table = ARROW_SCHEMA.empty_table().select(read)
    else:
        dataset = ds.dataset(
            [_join(root, part.path) for part in parts],
            schema=_DATASET_SCHEMA,
            format="parquet",
            filesystem=fs,
            partitioning=_PARTITIONING,
            partition_base_dir=root,
        )
        expr = None
        for item in filters:
            expr = item if expr is None else expr & item
        table = dataset.to_table(columns=read, filter=expr)
    log.debug("loaded %d rows from %d parts of %s", table.num_rows, len(parts), root)
    return _table_to_frame(table, wanted)


# --- info ----------------------------------------------------------------------------------------


def _format_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


@dataclass(frozen=True)
class DatasetInfo:
    """A summary of a dataset from its sidecar and its Parquet footers (no data pages read).

    Attributes:
        path: the dataset root as resolved.
        cursor: the sidecar, or ``None`` if there is none.
        rows: committed rows (sum of the committed parts' Parquet row counts).
        days: the UTC days that hold committed parts.
        parts: number of committed part files.
        bytes: total size of the committed part files.
        first_block, last_block: smallest and largest ``block_num`` of committed rows.
        first_time, last_time: earliest and latest ``block_time`` (ms since epoch, UTC).
        skipped_parts: part files present but not read under the reader rule.
        temp_files: dot files inside partitions (writes in progress or leftovers).
    """

    path: str
    cursor: layout.Cursor | None
    rows: int
    days: tuple[dt.date, ...]
    parts: int
    bytes: int
    first_block: int | None
    last_block: int | None
    first_time: int | None
    last_time: int | None
    skipped_parts: int = 0
    temp_files: int = 0

    @property
    def next_block(self) -> int | None:
        """The sidecar's next_block (first block not committed), or None without a sidecar."""
        return None if self.cursor is None else self.cursor.next_block

    @property
    def request(self) -> layout.Request | None:
        """What the dataset was collected with (from the sidecar), or None."""
        return None if self.cursor is None else self.cursor.request

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (times as ISO text)."""
        cursor = self.cursor
        return {
            "path": self.path,
            "rows": self.rows,
            "days": [day.isoformat() for day in self.days],
            "parts": self.parts,
            "bytes": self.bytes,
            "first_block": self.first_block,
            "last_block": self.last_block,
            "first_time": _format_ms(self.first_time) if self.first_time is not None else None,
            "last_time": _format_ms(self.last_time) if self.last_time is not None else None,
            "skipped_parts": self.skipped_parts,
            "temp_files": self.temp_files,
            "cursor": None if cursor is None else json.loads(cursor.to_json_bytes()),
        }

    def _lines(self) -> list[tuple[str, str]]:
        cursor = self.cursor
        days = "-"
        if self.days:
            days = f"{len(self.days)} ({self.days[0].isoformat()} .. {self.days[-1].isoformat()})"
        lines = [
            ("path", self.path),
            ("rows", f"{self.rows:,}"),
            ("days", days),
            ("parts", f"{self.parts:,} ({self.bytes / 1e6:,.1f} MB)"),
            ("blocks", f"{_opt(self.first_block)} .. {_opt(self.last_block)}"),
            ("time", f"{_format_ms(self.first_time)} .. {_format_ms(self.last_time)}"),
        ]
        if cursor is None:
            lines.append(("sidecar", "none"))
        else:
            request = cursor.request
            lines += [
                ("source", f"{request.source} {request.endpoint}"),
                (
                    "request",
                    f"{request.contract}:{request.action} "
                    f"irreversible_only={request.irreversible_only}",
                ),
                ("next_block", f"{cursor.next_block:,}"),
                (
                    "last_block",
                    f"{_opt(cursor.last_block_num)} {cursor.last_block_id or ''}".rstrip(),
                ),
                ("last_time", _format_ms(cursor.last_block_time)),
                (
                    "sidecar rows",
                    f"{cursor.rows:,} (rejects {cursor.rejects:,}, commits {cursor.commits:,})",
                ),
                ("written_at", str(cursor.written_at)),
            ]
        if self.skipped_parts or self.temp_files:
            lines.append(("not read", f"{self.skipped_parts} parts, {self.temp_files} temp files"))
        return lines

    def __str__(self) -> str:
        lines = self._lines()
        width = max(len(key) for key, _ in lines)
        return "\n".join(f"{key:<{width}}  {value}" for key, value in lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self._lines()
        )
        return f"<table>{rows}</table>"


def _opt(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _column_range(metadata: pq.FileMetaData, name: str) -> tuple[int, int] | None:
    """min/max of an integer-like column from row-group statistics, or None if missing."""
    index = metadata.schema.names.index(name)
    low = high = None
    for group in range(metadata.num_row_groups):
        column = metadata.row_group(group).column(index)
        stats = column.statistics
        if column.num_values == 0:
            continue
        if stats is None or not stats.has_min_max:
            return None
        lo, hi = stats.min_raw, stats.max_raw
        if not isinstance(lo, int):
            return None
        low = lo if low is None else min(low, lo)
        high = hi if high is None else max(high, hi)
    if low is None:
        return None
    return low, high


def dataset_info(
    path: str | Path = "data/transfers", *, filesystem: pafs.FileSystem | None = None
) -> DatasetInfo:
    """Summarise a dataset: sidecar fields, committed rows, days, parts, bytes, block and time range.

    Reads the sidecar and the Parquet footers of committed parts only.

    Raises:
        DatasetError: the path is not a dataset (see :func:`load_transfers`).
    """
    fs, root = _resolve(path, filesystem)
    listing, cursor, parts = _open_dataset(fs, root)
    rows = size = 0
    blocks: list[tuple[int, int]] = []
    times: list[tuple[int, int]] = []
    for part in parts:
        full = _join(root, part.path)
        with fs.open_input_file(full) as handle:
            size += handle.size()
            metadata = pq.ParquetFile(handle).metadata
        rows += metadata.num_rows
        if metadata.num_rows == 0:
            continue
        block_range = _column_range(metadata, "block_num")
        time_range = _column_range(metadata, "block_time")
        if block_range is None or time_range is None:
            table = pq.read_table(full, columns=["block_num", "block_time"], filesystem=fs)
            block_range = _min_max(table.column("block_num"))
            time_range = _min_max(table.column("block_time").cast(pa.int64()))
        blocks.append(block_range)
        times.append(time_range)
    return DatasetInfo(
        path=root,
        cursor=cursor,
        rows=rows,
        days=tuple(sorted({part.day for part in parts if part.day is not None})),
        parts=len(parts),
        bytes=size,
        first_block=min((b[0] for b in blocks), default=None),
        last_block=max((b[1] for b in blocks), default=None),
        first_time=min((t[0] for t in times), default=None),
        last_time=max((t[1] for t in times), default=None),
        skipped_parts=len(listing.parts) - len(parts),
        temp_files=len(listing.temp_files),
    )


def _min_max(array: pa.ChunkedArray | pa.Array) -> tuple[int, int]:
    result = pc.min_max(array)
    return int(result["min"].as_py()), int(result["max"].as_py())


# --- verify --------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`.

    Attributes:
        path: the dataset root as resolved.
        problems: one sentence per problem found; empty when the dataset is sound.
        notes: harmless findings (e.g. compaction leftovers skipped by the reader rule).
        parts_checked: committed parts read in full.
        rows_checked: rows read from them.
    """

    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parts_checked: int = 0
    rows_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = "OK" if self.ok else f"{len(self.problems)} PROBLEM(S)"
        lines = [
            f"verify {self.path}: {head} "
            f"({self.parts_checked:,} parts, {self.rows_checked:,} rows checked)"
        ]
        lines += [f"  problem: {text}" for text in self.problems]
        lines += [f"  note: {text}" for text in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


def _same_schema(schema: pa.Schema) -> bool:
    if schema.names != ARROW_SCHEMA.names:
        return False
    return all(a.type == b.type for a, b in zip(schema, ARROW_SCHEMA, strict=True))


def verify(
    path: str | Path = "data/transfers", *, filesystem: pafs.FileSystem | None = None
) -> VerifyReport:
    """Check a dataset against the design's invariants, reading every committed part in full.

    Checks: the root holds only dataset entries; a sidecar exists if there are partitions and
    it parses; no part at or after ``next_block`` and no temp file (leftovers of an interrupted
    commit); inside each partition no two committed parts overlap unless one contains the
    other; every committed part is readable, has the dataset's schema, and its rows match its
    Parquet footer row count, lie within the block range of its name, within its partition's
    UTC day, and below ``next_block``; ``global_sequence`` is unique across the dataset and not
    above the sidecar's last one; the sidecar's row count equals the committed rows.

    While a collector is writing, a temp file or a not-yet-committed part can be seen for a
    moment; verify a dataset whose writer is stopped for a definite answer.

    Returns:
        The report; ``report.ok`` is True when ``report.problems`` is empty.
    """
    fs, root = _resolve(path, filesystem)
    report = VerifyReport(path=root)
    try:
        listing = layout.scan(fs, root)
    except DatasetError as exc:
        report.problems.append(str(exc))
        return report
    if not listing.exists:
        report.problems.append(f"{root!r} does not exist")
        return report
    for name in listing.foreign:
        report.problems.append(f"foreign entry {name!r} (not a partition, part or hidden file)")
    try:
        cursor = layout.read_cursor(fs, root)
    except CursorError as exc:
        report.problems.append(f"sidecar unreadable: {exc}")
        return report
    if cursor is None:
        if listing.partition_days:
            report.problems.append(
                f"partitions present but no {layout.CURSOR_FILE}. {layout.repair_hint(root)}"
            )
        else:
            report.notes.append("empty dataset (no sidecar, no partitions)")
        return report

    for name in listing.temp_files:
        report.problems.append(f"temp file {name!r} left by an interrupted write")
    for part in listing.parts:
        if part.last_block >= cursor.next_block:
            report.problems.append(
                f"uncommitted part {part.path!r} (last block {part.last_block} >= next_block "
                f"{cursor.next_block}); a writer restart removes it"
            )
    committed = layout.committed_parts(listing.parts, cursor.next_block)
    kept = {part.path for part in committed}
    for part in listing.parts:
        if part.last_block < cursor.next_block and part.path not in kept:
            report.notes.append(
                f"part {part.path!r} lies inside a larger part of its partition and is skipped "
                "(compaction leftover)"
            )

    by_day: dict[dt.date | None, list[layout.PartRef]] = {}
    for part in committed:
        by_day.setdefault(part.day, []).append(part)
    for day_parts in by_day.values():
        ordered = sorted(day_parts, key=lambda p: (p.first_block, p.last_block))
        for before, after in itertools.pairwise(ordered):
            if after.first_block <= before.last_block:
                report.problems.append(
                    f"parts {before.path!r} and {after.path!r} overlap without containment"
                )

    sequences: list[np.ndarray] = []
    rows = 0
    for part in committed:
        rows += _verify_part(fs, root, part, cursor, report, sequences)
    report.rows_checked = rows

    if sequences:
        allseq = np.concatenate(sequences)
        allseq.sort()
        duplicates = allseq[1:][allseq[1:] == allseq[:-1]]
        if duplicates.size:
            report.problems.append(
                f"{duplicates.size} duplicate global_sequence values (first {int(duplicates[0])})"
            )
        if (
            cursor.last_global_sequence is not None
            and int(allseq[-1]) > cursor.last_global_sequence
        ):
            report.problems.append(
                f"global_sequence {int(allseq[-1])} is above the sidecar's last_global_sequence "
                f"{cursor.last_global_sequence}"
            )
    if cursor.rows != rows:
        report.problems.append(
            f"sidecar counts {cursor.rows:,} rows but the committed parts hold {rows:,}"
        )
    return report


def _verify_part(
    fs: pafs.FileSystem,
    root: str,
    part: layout.PartRef,
    cursor: layout.Cursor,
    report: VerifyReport,
    sequences: list[np.ndarray],
) -> int:
    full = _join(root, part.path)
    try:
        with fs.open_input_file(full) as handle:
            parquet = pq.ParquetFile(handle)
            metadata = parquet.metadata
            table = parquet.read()
    except (OSError, pa.ArrowException) as exc:
        report.problems.append(f"part {part.path!r} is unreadable: {exc}")
        return 0
    report.parts_checked += 1
    if not _same_schema(table.schema):
        report.problems.append(f"part {part.path!r} has another schema: {table.schema.names}")
        return table.num_rows
    if table.num_rows != metadata.num_rows:
        report.problems.append(
            f"part {part.path!r} holds {table.num_rows} rows, its footer says {metadata.num_rows}"
        )
    _check_part_metadata(part, metadata, report)
    if table.num_rows == 0:
        return 0
    low, high = _min_max(table.column("block_num"))
    if low < part.first_block or high > part.last_block:
        report.problems.append(
            f"part {part.path!r} has blocks {low}..{high} outside its name's range "
            f"{part.first_block}..{part.last_block}"
        )
    if high >= cursor.next_block:
        report.problems.append(f"part {part.path!r} has block {high} >= next_block")
    earliest, latest = _min_max(table.column("block_time").cast(pa.int64()))
    if part.day is not None and not (
        layout.day_of_ms(earliest) == part.day == layout.day_of_ms(latest)
    ):
        report.problems.append(
            f"part {part.path!r} has rows from {_format_ms(earliest)} to {_format_ms(latest)}, "
            f"outside its partition day {part.day.isoformat()}"
        )
    sequences.append(table.column("global_sequence").to_numpy())
    return table.num_rows


def _check_part_metadata(
    part: layout.PartRef, metadata: pq.FileMetaData, report: VerifyReport
) -> None:
    """Compare the commit recorded in a part's ``karma.*`` key-value metadata (when present)."""
    raw = metadata.metadata or {}
    recorded = {
        key.decode("utf-8", "replace"): value.decode("utf-8", "replace")
        for key, value in raw.items()
        if key.startswith(b"karma.")
    }
    if not recorded:
        return  # written by another tool; the name and the rows are still checked
    expected = {
        "karma.first_block": str(part.first_block),
        "karma.last_block": str(part.last_block),
        "karma.rows": str(metadata.num_rows),
        "karma.schema_version": str(SCHEMA_VERSION),
    }
    for key, want in expected.items():
        if key in recorded and recorded[key] != want:
            report.problems.append(
                f"part {part.path!r} metadata {key}={recorded[key]} but expected {want}"
            )


# --- command line --------------------------------------------------------------------------------


def _compact(path: str, before: dt.date | None) -> int | None:
    """Merge finished days with the store (takes the writer lock); returns the days merged.

    ``None`` when the dataset is empty (nothing to compact).
    """
    # Imported here: the store is the writer side, only needed by this one command.
    from .store import Store

    fs, root = _resolve(path, None)
    if not isinstance(fs, pafs.LocalFileSystem):
        raise UsageError("compact works on a local folder only")
    # Refuses a file, foreign entries, parts without a sidecar (with the repair hint) and a
    # damaged sidecar (CursorError) before taking the lock.
    listing, cursor, _parts = _open_dataset(fs, root)
    if not listing.exists:
        raise StoreError(f"no dataset at {root}: the folder does not exist", path=root)
    if cursor is None:
        return None
    with Store.open(root, cursor.request, create=False) as store:
        return store.compact(before_day=before)


_CLI_EPILOG = f"""\
{exit_codes_epilog("done (verify: the dataset is OK)")}
verify prints every problem it finds and exits 4 if there is any: the dataset needs attention,
like a dataset the collector refuses. Repairs are `python -m karma_analytics.store repair PATH`.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``info``, ``verify`` or ``compact`` a dataset.

    Returns the exit code (:mod:`karma_analytics.cli`: the same as the collector's).
    """
    parser = argparse.ArgumentParser(
        prog="python -m karma_analytics.dataset",
        description="Inspect, verify or compact a transfers dataset.",
        epilog=_CLI_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    info_cmd = commands.add_parser("info", help="summary from the sidecar and Parquet footers")
    info_cmd.add_argument("path", help="dataset root (local path or pyarrow URI)")
    info_cmd.add_argument("--json", action="store_true", help="print JSON")
    verify_cmd = commands.add_parser("verify", help="check every committed part (exit 4 if not ok)")
    verify_cmd.add_argument("path", help="dataset root (local path or pyarrow URI)")
    compact_cmd = commands.add_parser("compact", help="merge each finished day into one part")
    compact_cmd.add_argument("path", help="dataset root (local folder)")
    compact_cmd.add_argument(
        "--before",
        type=dt.date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="compact only days before this one (default: the store's choice)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "info":
            info = dataset_info(args.path)
            print(json.dumps(info.as_dict(), indent=2) if args.json else info)
            return EXIT_OK
        if args.command == "verify":
            report = verify(args.path)
            print(report)
            return EXIT_OK if report.ok else EXIT_DATASET
        merged = _compact(args.path, args.before)
        if merged is None:
            print(f"{args.path} has no commits; nothing to compact")
        else:
            print(f"compacted {args.path}: {merged} day(s) merged")
        return EXIT_OK
    except (KarmaError, KeyboardInterrupt) as exc:
        print(f"error: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(main())
