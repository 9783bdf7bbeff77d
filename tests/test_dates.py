"""dates.py: --since/--until parsing and the block-time binary search with missed slots."""

from __future__ import annotations

import asyncio
import bisect
import random

import pytest

from karma_analytics.dates import block_at_or_after, parse_when, resolve_range
from karma_analytics.exceptions import UsageError

NOW = parse_when("2026-11-20T12:00:00Z", now_ms=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", "2026-11-01T00:00:00+00:00"),
        ("2026-11-01T12:30:00Z", "2026-11-01T12:30:00+00:00"),
        ("2026-11-01T14:30:00+02:00", "2026-11-01T12:30:00+00:00"),
        ("2026-11-01 12:30", "2026-11-01T12:30:00+00:00"),
        ("2026-11-01T12:30:00.250Z", "2026-11-01T12:30:00.250000+00:00"),
    ],
)
def test_dates_and_datetimes_are_utc(text: str, expected: str) -> None:
    import datetime as dt

    assert parse_when(text, now_ms=NOW) == round(
        dt.datetime.fromisoformat(expected).timestamp() * 1000
    )


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30d", 30 * 86_400_000),
        ("12h", 43_200_000),
        ("90m", 5_400_000),
        ("45s", 45_000),
        ("2w", 14 * 86_400_000),
        ("now", 0),
    ],
)
def test_durations_count_back_from_now(text: str, ms: int) -> None:
    assert parse_when(text, now_ms=NOW) == NOW - ms


@pytest.mark.parametrize("text", ["yesterday", "30x", "2026-13-01", "", "1.2.3"])
def test_bad_values_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_when(text, now_ms=NOW)


class Blocks:
    """Block times with missed slots: each block takes 1 + (missed) slots of 500 ms."""

    def __init__(self, count: int, missed_rate: float, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.times = [0]  # index 0 unused
        t = 1_790_000_000_000
        for _ in range(count):
            t += 500
            while rng.random() < missed_rate:
                t += 500
            self.times.append(t)
        self.calls = 0

    async def time(self, num: int) -> int:
        self.calls += 1
        return self.times[num]

    def first_at_or_after(self, t: int) -> int:
        return bisect.bisect_left(self.times, t, 1)


@pytest.mark.parametrize("missed_rate", [0.0, 0.02, 0.3])
def test_binary_search_finds_the_exact_block_with_missed_slots(missed_rate: float) -> None:
    blocks = Blocks(200_000, missed_rate)
    rng = random.Random(5)
    first, last = blocks.times[1], blocks.times[-1]
    targets = [rng.randrange(first - 1000, last + 1000) for _ in range(200)]
    targets += [blocks.times[n] for n in (1, 2, 777, 199_999, 200_000)]
    targets += [blocks.times[n] + 1 for n in (1, 777, 199_999)]

    async def main() -> None:
        for t in targets:
            blocks.calls = 0
            got = await block_at_or_after(t, blocks.time, 1, 200_000)
            assert got == blocks.first_at_or_after(t), t
            assert blocks.calls <= 40
        if missed_rate == 0.0:
            blocks.calls = 0
            await block_at_or_after(blocks.times[123_456] - 10, blocks.time, 1, 200_000)
            assert blocks.calls <= 3  # regular spacing: the first bracket is the answer

    asyncio.run(main())


def test_resolve_range_since_inclusive_until_exclusive() -> None:
    blocks = Blocks(100_000, 0.1)

    async def main() -> None:
        since = blocks.times[1000]
        until = blocks.times[5000]
        fmt = lambda ms: f"{ms // 1000}"  # noqa: E731
        del fmt
        import datetime as dt

        iso = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()  # noqa: E731
        start, stop = await resolve_range(
            iso(since), iso(until), now_ms=NOW, get_block_time=blocks.time, head_block=100_000
        )
        assert (start, stop) == (1000, 4999)
        start, stop = await resolve_range(
            None, "1h", now_ms=blocks.times[-1], get_block_time=blocks.time, head_block=100_000
        )
        assert (
            start is None
            and blocks.times[stop] < blocks.times[-1] - 3_600_000 <= blocks.times[stop + 1]
        )
        with pytest.raises(UsageError):
            await resolve_range(
                iso(until), iso(since), now_ms=NOW, get_block_time=blocks.time, head_block=100_000
            )

    asyncio.run(main())
