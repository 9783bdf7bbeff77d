"""Dates, the analyst's unit: ``--since`` / ``--until`` values -> exact block numbers.

Parsing is pure (``now`` is passed in); the block search takes the block-time lookup as an
async callable, so it runs against any chain API (Hyperion hosts proxy
``/v1/chain/get_block``, rest.py) and against a dict in tests.

Values (all UTC):

* a date ``2026-11-01`` (midnight UTC);
* a datetime ``2026-11-01T12:30:00Z``, ``2026-11-01T14:30:00+02:00``, ``2026-11-01 12:30``
  (a datetime without a zone is UTC, like Hyperion's own block times);
* a duration back from ``now``: ``30d``, ``12h``, ``90m``, ``45s``, ``2w``;
* ``now``.

Range rule: ``since`` is inclusive, ``until`` exclusive, so November is
``--since 2026-11-01 --until 2026-12-01``; the start block is the first block whose time is
``>= since``, the stop block the last block whose time is ``< until``.

Blocks are produced in 0.5 s slots, but a producer can miss its slot: block times are
strictly increasing by **at least** 0.5 s, not exactly. That gives rigorous bounds from any
known block (a block ``k`` blocks later is at least ``0.5 k`` s later), used to narrow each
step of the binary search; nothing assumes regular spacing.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Awaitable, Callable

from .exceptions import UsageError

__all__ = [
    "BLOCK_MS",
    "block_at_or_after",
    "parse_duration_ms",
    "parse_when",
    "resolve_range",
]

#: The block slot in milliseconds: the minimum distance of two consecutive blocks' times.
BLOCK_MS = 500

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNIT_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

GetBlockTime = Callable[[int], Awaitable[int]]


def parse_duration_ms(text: str) -> int | None:
    """``"30d"`` -> milliseconds; ``None`` when ``text`` is not a duration."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        return None
    return round(float(match.group(1)) * _UNIT_MS[match.group(2)])


def parse_when(text: str, *, now_ms: int) -> int:
    """A ``--since``/``--until`` value as milliseconds since the epoch (UTC).

    Args:
        text: see the module docstring.
        now_ms: the current time (durations count back from it).

    Raises:
        UsageError: not a date, datetime, duration or ``now``.
    """
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    duration = parse_duration_ms(value)
    if duration is not None:
        return now_ms - duration
    iso = value.replace(" ", "T", 1)
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        if _DATE.fullmatch(iso):
            moment = _dt.datetime.strptime(iso, "%Y-%m-%d")
        else:
            moment = _dt.datetime.fromisoformat(iso)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a date (2026-11-01), a datetime (2026-11-01T12:00:00Z) or a "
            "duration (30d, 12h, 90m)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return round(moment.timestamp() * 1000)


async def block_at_or_after(
    time_ms: int, get_block_time: GetBlockTime, lo: int, hi: int, *, block_ms: int = BLOCK_MS
) -> int:
    """The first block in ``lo..hi`` whose time is ``>= time_ms`` (``hi + 1`` if none).

    Each known block ``m`` bounds the answer: if ``time(m) >= t`` no block before
    ``m - (time(m) - t) // block_ms`` can reach ``t``; if ``time(m) < t`` the block
    ``m + ceil((t - time(m)) / block_ms)`` surely does. With no missed slot the first bracket
    is the answer; each missed slot costs at most a few more lookups (binary search inside
    the bracket).

    Args:
        time_ms: the time sought (ms, UTC).
        get_block_time: ``num -> time_ms`` of a block (e.g. ``/v1/chain/get_block``).
        lo, hi: the searched range (inclusive, ``lo <= hi``).
        block_ms: the slot length (minimum spacing of block times).
    """
    if lo > hi:
        raise UsageError(f"empty block range {lo}..{hi}")
    t_lo = await get_block_time(lo)
    if t_lo >= time_ms:
        return lo
    t_hi = await get_block_time(hi)
    if t_hi < time_ms:
        return hi + 1
    # Invariant: the answer is in a..b, time(a - 1) < t (known or implied), time(b) >= t.
    a = max(lo + 1, hi - (t_hi - time_ms) // block_ms)
    b = min(hi, lo + math.ceil((time_ms - t_lo) / block_ms))
    while a < b:
        m = (a + b) // 2
        t_m = await get_block_time(m)
        if t_m >= time_ms:
            b = m
            a = max(a, m - (t_m - time_ms) // block_ms)
        else:
            a = m + 1
            b = min(b, m + math.ceil((time_ms - t_m) / block_ms))
    return a


async def resolve_range(
    since: str | None,
    until: str | None,
    *,
    now_ms: int,
    get_block_time: GetBlockTime,
    head_block: int,
    first_block: int = 1,
    block_ms: int = BLOCK_MS,
) -> tuple[int | None, int | None]:
    """``--since`` / ``--until`` -> ``(start_block, stop_block)`` (``None`` where not given).

    Args:
        since, until: the values (see the module docstring); ``until`` is exclusive.
        now_ms: the current time, for durations.
        get_block_time: ``num -> time_ms`` (Hyperion: ``HyperionHost.get_block_time``).
        head_block: the chain's head (``get_info``): the search's upper end.
        first_block: the lowest block the chain API serves.
        block_ms: the slot length.

    Returns:
        ``start_block``: first block with time ``>= since``; ``stop_block``: last block with
        time ``< until``. An ``until`` beyond the head is estimated at one block per slot from
        the head (an upper bound: missed slots make fewer blocks).

    Raises:
        UsageError: a value does not parse, ``since`` is not before ``until``, or ``since``
            lies beyond the head.
    """
    start = stop = None
    since_ms = parse_when(since, now_ms=now_ms) if since else None
    until_ms = parse_when(until, now_ms=now_ms) if until else None
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise UsageError(f"--since ({since}) must be before --until ({until})")
    if since_ms is not None:
        start = await block_at_or_after(
            since_ms, get_block_time, first_block, head_block, block_ms=block_ms
        )
        if start > head_block:
            raise UsageError(f"--since {since} is after the chain's head block {head_block}")
    if until_ms is not None:
        first_at = await block_at_or_after(
            until_ms, get_block_time, start or first_block, head_block, block_ms=block_ms
        )
        if first_at > head_block:
            head_ms = await get_block_time(head_block)
            first_at = head_block + max(1, math.ceil((until_ms - head_ms) / block_ms))
        stop = first_at - 1
    return start, stop
