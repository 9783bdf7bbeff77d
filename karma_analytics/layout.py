"""The dataset's names, the cursor sidecar format and the reader rule.

Shared by the writer (``store``), the read side (``dataset``) and outside tools. Layout::

    <root>/_cursor.json                              the commit point (Cursor)
    <root>/_lock                                     flock held by the one writer
    <root>/_rejects/                                 transfers that failed to parse
    <root>/date=2026-11-27/part-0152000010-0152000399.parquet
    <root>/date=2026-11-27/.part-....tmp             a write in progress (never read)

Reader rule (DESIGN.md): a part counts only if its last block is below the sidecar's
``next_block``; inside a partition, a part whose range lies inside another part's range is
skipped (compaction leaves both for a moment); names starting with ``.`` or ``_`` are never data.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .exceptions import CursorError, DatasetError
from .model import SCHEMA_VERSION

__all__ = [
    "CURSOR_FILE",
    "LOCK_FILE",
    "REJECTS_DIR",
    "Cursor",
    "Listing",
    "PartRef",
    "Request",
    "SourceSpan",
    "committed_parts",
    "day_of_ms",
    "extend_spans",
    "list_parts",
    "parse_part_filename",
    "parse_partition_name",
    "part_filename",
    "partition_name",
    "read_cursor",
    "repair_hint",
    "scan",
]

CURSOR_FILE = "_cursor.json"
LOCK_FILE = "_lock"
REJECTS_DIR = "_rejects"

_PART_RE = re.compile(r"part-(\d{10})-(\d{10})\.parquet")
_PARTITION_RE = re.compile(r"date=(\d{4}-\d{2}-\d{2})")


def part_filename(first_block: int, last_block: int) -> str:
    """``part-0152000010-0152000399.parquet`` for the inclusive block range of a commit."""
    if not 0 <= first_block <= last_block < 10**10:
        raise ValueError(f"bad part range {first_block}..{last_block}")
    return f"part-{first_block:010d}-{last_block:010d}.parquet"


def parse_part_filename(name: str) -> tuple[int, int] | None:
    """The ``(first, last)`` block range of a part file name, or ``None`` if it is not one."""
    match = _PART_RE.fullmatch(name)
    if match is None:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    return (first, last) if first <= last else None


def partition_name(day: _dt.date) -> str:
    """``date=2026-11-27``: the Hive partition folder of a UTC day."""
    return f"date={day.isoformat()}"


def parse_partition_name(name: str) -> _dt.date | None:
    """The day of a ``date=YYYY-MM-DD`` folder name, or ``None``."""
    match = _PARTITION_RE.fullmatch(name)
    if match is None:
        return None
    try:
        return _dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def day_of_ms(ms: int) -> _dt.date:
    """The UTC date of a block time given in milliseconds since the epoch."""
    return _dt.date(1970, 1, 1) + _dt.timedelta(days=ms // 86_400_000)


def repair_hint(
    root: str | os.PathLike[str] | None, request: Request | None = None, *, force: bool = False
) -> str:
    """The one sentence that tells how to rebuild a dataset's sidecar (every message uses it).

    Args:
        root: the dataset folder, quoted for the shell in the command; ``None`` writes ``PATH``.
        request: when known, its contract and action are added as checks (``--contract``,
            ``--action``); the repair otherwise takes them from the parts' metadata.
        force: add ``--force`` (rebuild even though the sidecar is readable).
    """
    command = "python -m karma_analytics.store repair "
    command += "PATH" if root is None else shlex.quote(os.fspath(root))
    if request is not None:
        command += f" --contract {shlex.quote(request.contract)}"
        command += f" --action {shlex.quote(request.action)}"
    if force:
        command += " --force"
    return f"Rebuild the sidecar from the parts' metadata with `{command}`."


@dataclass(frozen=True)
class Request:
    """What a dataset was collected with; the identity must match on every resume.

    ``source`` (the protocol) and ``endpoint`` are those of the latest run; they are recorded for
    humans and may change between runs (same chain, another source or provider). ``endpoint``
    never holds credentials (no ``token=``, no key).
    """

    source: str
    endpoint: str
    contract: str
    action: str
    accounts: str
    receivers: str
    action_names: str
    irreversible_only: bool = True

    def identity(self) -> dict[str, Any]:
        """The fields that must be equal for a run to continue an existing dataset.

        The source kind and the endpoint are not identity: any source or provider of the same
        chain may continue a dataset (the chain id is checked on its own, see
        :attr:`Cursor.chain_id`).
        """
        out = asdict(self)
        del out["endpoint"]
        del out["source"]
        return out

    @classmethod
    def for_token(
        cls,
        contract: str = "therealkarma",
        action: str = "transfer",
        *,
        endpoint: str = "",
        source: str = "dfuse",
        irreversible_only: bool = True,
    ) -> Request:
        """The standard request: the contract's own executions of ``action``."""
        return cls(
            source=source,
            endpoint=endpoint,
            contract=contract,
            action=action,
            accounts=contract,
            receivers=contract,
            action_names=action,
            irreversible_only=irreversible_only,
        )


@dataclass(frozen=True)
class SourceSpan:
    """Blocks ``first_block..last_block`` were committed through ``source`` at ``endpoint``."""

    source: str
    endpoint: str
    first_block: int
    last_block: int


def extend_spans(
    spans: tuple[SourceSpan, ...], source: str, endpoint: str, first: int, last: int
) -> tuple[SourceSpan, ...]:
    """The history after a commit of blocks ``first..last`` through ``source``/``endpoint``:
    the last span grows when it is the same source and endpoint, else a new one begins."""
    if last < first:
        return spans
    if spans and (spans[-1].source, spans[-1].endpoint) == (source, endpoint):
        head = spans[-1]
        return (*spans[:-1], SourceSpan(source, endpoint, head.first_block, last))
    return (*spans, SourceSpan(source, endpoint, first, last))


@dataclass(frozen=True)
class Cursor:
    """The content of ``_cursor.json``: the durable commit point of a dataset.

    Attributes:
        next_block: first block not yet durably committed; a restart sends it as start_block.
        chain_id: the chain the dataset belongs to (64 hex digits); ``None`` in a dataset
            recorded before chain ids were kept (it takes the first one seen).
        sources: which source and endpoint committed which block range, oldest first.
        last_block_time: milliseconds since the epoch (UTC) of the last committed block, or None.
        rows: committed rows in total; ``rejects``: rejected transfers in total.
        written_at: ISO UTC time the sidecar was written (informational).
    """

    request: Request
    next_block: int
    chain_id: str | None = None
    sources: tuple[SourceSpan, ...] = ()
    last_block_num: int | None = None
    last_block_id: str | None = None
    last_block_time: int | None = None
    last_global_sequence: int | None = None
    rows: int = 0
    rejects: int = 0
    commits: int = 0
    written_at: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json_bytes(self) -> bytes:
        body = asdict(self)
        body["request"] = asdict(self.request)
        body["sources"] = [asdict(span) for span in self.sources]
        # Readable time beside the exact integer, for people opening the file.
        if self.last_block_time is not None:
            from .model import format_iso_ms

            body["last_block_time_iso"] = format_iso_ms(self.last_block_time)
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json_bytes(cls, data: bytes, *, path: str = "") -> Cursor:
        """Parse a sidecar; raise :class:`CursorError` saying what to do if it is damaged."""
        where = path or CURSOR_FILE
        root = (os.path.dirname(path) or os.curdir) if path else None
        hint = f"{repair_hint(root)} Or move the folder away to start over."
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CursorError(f"cannot read {where}: {exc}. {hint}", path=where) from None
        if not isinstance(body, dict):
            raise CursorError(f"{where} is not a JSON object. {hint}", path=where)
        try:
            version = body.get("schema_version")
            if version != SCHEMA_VERSION:
                raise CursorError(
                    f"{where} has schema version {version!r}; this version of karma_analytics "
                    f"reads version {SCHEMA_VERSION}.",
                    path=where,
                )
            request = Request(**body["request"])
            next_block = body["next_block"]
            if not isinstance(next_block, int) or isinstance(next_block, bool) or next_block < 0:
                raise TypeError("next_block must be a non-negative integer")
            for key in ("rows", "rejects", "commits"):
                if not isinstance(body.get(key, 0), int):
                    raise TypeError(f"{key} must be an integer")
            chain_id = body.get("chain_id")
            if chain_id is not None and not (
                isinstance(chain_id, str) and re.fullmatch(r"[0-9a-f]{64}", chain_id)
            ):
                raise TypeError("chain_id must be 64 lowercase hex digits")
            sources = tuple(SourceSpan(**span) for span in body.get("sources") or ())
            return cls(
                request=request,
                next_block=next_block,
                chain_id=chain_id,
                sources=sources,
                last_block_num=body.get("last_block_num"),
                last_block_id=body.get("last_block_id"),
                last_block_time=body.get("last_block_time"),
                last_global_sequence=body.get("last_global_sequence"),
                rows=body.get("rows", 0),
                rejects=body.get("rejects", 0),
                commits=body.get("commits", 0),
                written_at=body.get("written_at", ""),
                schema_version=version,
                extra=body.get("extra") or {},
            )
        except CursorError:
            raise
        except (KeyError, TypeError) as exc:
            raise CursorError(
                f"{where} is incomplete or mistyped ({exc}). {hint}", path=where
            ) from None


@dataclass(frozen=True, order=True)
class PartRef:
    """A part file: its path relative to the root, its partition day and block range."""

    first_block: int
    last_block: int
    path: str
    day: _dt.date | None = None


def committed_parts(parts: Iterable[PartRef], next_block: int) -> list[PartRef]:
    """Apply the reader rule: the parts a reader may see, sorted by (first_block, path).

    Keeps parts whose last block is below ``next_block``; inside one partition drops a part
    whose range lies inside another kept part's range (the other being the larger one, or the
    same range at a later path).
    """
    visible = [p for p in parts if p.last_block < next_block]
    by_partition: dict[str, list[PartRef]] = {}
    for part in visible:
        by_partition.setdefault(part.path.rpartition("/")[0], []).append(part)
    kept: list[PartRef] = []
    for group in by_partition.values():
        # Widest first: a part is contained iff some already kept part covers its range.
        group.sort(key=lambda p: (p.first_block, -p.last_block, p.path))
        reach = -1
        for part in group:
            if part.last_block <= reach:
                continue
            kept.append(part)
            reach = part.last_block
    kept.sort()
    return kept


@dataclass
class Listing:
    """What one scan of a dataset folder found (paths relative to the root).

    Attributes:
        exists: whether the root exists.
        partition_days: the day of every ``date=YYYY-MM-DD`` folder, sorted.
        parts: part files of the scanned partitions, partition by partition.
        temp_files: dot files inside scanned partitions (leftovers of interrupted writes).
        foreign: names that are neither data, hidden, nor a partition.
    """

    exists: bool = False
    partition_days: list[_dt.date] = field(default_factory=list)
    parts: list[PartRef] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


def scan(
    filesystem: Any,
    root: str,
    *,
    first_day: _dt.date | None = None,
    last_day: _dt.date | None = None,
) -> Listing:
    """List partitions, then the part files of the partitions within ``[first_day, last_day]``.

    Partitions outside the days are never listed, which is how a date filter avoids touching
    the rest of the dataset. Names starting with ``.`` or ``_`` are never data.

    Raises:
        DatasetError: if ``root`` is a file.
    """
    from pyarrow import fs as pafs

    root = root.rstrip("/")
    listing = Listing()
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return listing
    if info.type != pafs.FileType.Directory:
        raise DatasetError(
            f"{root!r} is a file, not a dataset folder; pass the dataset root "
            "(the folder that holds _cursor.json and date=YYYY-MM-DD folders)"
        )
    listing.exists = True
    selected: list[tuple[_dt.date, str]] = []
    for entry in filesystem.get_file_info(pafs.FileSelector(root, recursive=False)):
        name = entry.base_name
        if name.startswith((".", "_")):
            continue
        day = parse_partition_name(name) if entry.type == pafs.FileType.Directory else None
        if day is None:
            listing.foreign.append(name)
            continue
        listing.partition_days.append(day)
        if (first_day is None or day >= first_day) and (last_day is None or day <= last_day):
            selected.append((day, name))
    listing.partition_days.sort()
    for day, folder in sorted(selected):
        selector = pafs.FileSelector(f"{root}/{folder}" if root else folder, recursive=False)
        for entry in filesystem.get_file_info(selector):
            name = entry.base_name
            relative = f"{folder}/{name}"
            if name.startswith("."):
                listing.temp_files.append(relative)
                continue
            if name.startswith("_"):
                continue
            block_range = parse_part_filename(name)
            if block_range is None or entry.type != pafs.FileType.File:
                listing.foreign.append(relative)
                continue
            listing.parts.append(PartRef(block_range[0], block_range[1], relative, day))
    return listing


def list_parts(filesystem: Any, root: str) -> list[PartRef]:
    """All part files under ``root`` on a ``pyarrow.fs`` filesystem (committed or not), sorted.

    Ignores every file or folder whose name starts with ``.`` or ``_``, and anything that is
    not a ``date=YYYY-MM-DD/part-<first>-<last>.parquet`` file (see :func:`scan`).
    """
    return sorted(scan(filesystem, root).parts)


def read_cursor(filesystem: Any, root: str) -> Cursor | None:
    """Read ``<root>/_cursor.json``; ``None`` if absent; :class:`CursorError` if damaged."""
    from pyarrow import fs as pafs

    path = f"{root.rstrip('/')}/{CURSOR_FILE}"
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as stream:
        data = stream.read()
    return Cursor.from_json_bytes(data, path=path)
