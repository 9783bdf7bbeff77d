"""Helpers of the SHiP source tests: a minimal runner loop (engine + source, no store)."""

from __future__ import annotations

import asyncio
from typing import Any

from karma_analytics.engine import (
    ConnectionLost,
    Engine,
    Restart,
    Stop,
    WriteCommit,
    WriteSucceeded,
)
from karma_analytics.exceptions import SourceError

FAST = {"head": 60_000, "block_interval": 0.0, "lib_lag": 2}


def run(coro: Any, timeout: float = 60.0) -> Any:
    """Run one test coroutine with a deadline (no pytest-asyncio in the environment)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def drive(
    source: Any, *, start: int, stop_block: int, max_streams: int = 200
) -> dict[str, Any]:
    """The collector's loop without the store and without backoff: streams from the engine's
    safe point, feeds batches, records commits; a transient SourceError is a ConnectionLost,
    a fatal one ends the run (returned as ``fatal``).

    Returns:
        ``{"rows", "rejects", "lost" (messages), "fatal" (error or None), "streams"}``.
    """
    engine = Engine(next_block=start, flush_rows=2000, flush_seconds=0.0, stop_block=stop_block)
    rows: list[Any] = []
    rejects: list[Any] = []
    lost: list[str] = []
    fatal: SourceError | None = None
    streams = 0
    next_start: int | None = start
    done = False

    def execute(actions: list[Any]) -> None:
        nonlocal next_start, done
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, WriteCommit):
                rows.extend(action.rows)
                rejects.extend(action.rejects)
                pending.extend(engine.handle(WriteSucceeded(action.commit_id), 0.0))
            elif isinstance(action, Restart):
                next_start = action.start_block
            elif isinstance(action, Stop):
                done = True

    while not done and streams < max_streams:
        streams += 1
        start_block = next_start
        next_start = None
        stream = source.stream(start_block)
        try:
            async for batch in stream:
                execute(engine.handle_batch(batch, 0.0))
                if done or next_start is not None:
                    break
            else:
                # The stream finished (stop block): the engine must have stopped.
                pass
        except SourceError as exc:
            if exc.fatal:
                fatal = exc
                break
            lost.append(str(exc))
            execute(engine.handle(ConnectionLost(str(exc)), 0.0))
        finally:
            await stream.aclose()
        if not done and next_start is None:
            next_start = engine.safe_point
    return {"rows": rows, "rejects": rejects, "lost": lost, "fatal": fatal, "streams": streams}
