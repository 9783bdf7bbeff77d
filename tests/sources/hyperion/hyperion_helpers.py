"""Helpers of the Hyperion source tests: run a stream through the real Engine, and the truth
with Hyperion's action_idx (action_ordinal - 1, docs.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from karma_analytics.devnet.chain import Chain
from karma_analytics.engine import (
    ConnectionLost,
    Engine,
    Restart,
    Stop,
    WriteCommit,
    WriteSucceeded,
)
from karma_analytics.exceptions import SourceError
from karma_analytics.model import Transfer
from karma_analytics.sources.base import Selection, SourceSettings
from karma_analytics.sources.hyperion import HyperionSource


def run(coro: Any, timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def hyperion_truth(chain: Chain, first: int, last: int) -> list[Transfer]:
    """``chain.truth`` with ``action_idx`` as a Hyperion source sets it (ordinal - 1)."""
    out = []
    blocks: dict[int, Any] = {}
    for row in chain.truth(first, last):
        block = blocks.get(row.block_num) or chain.block(row.block_num)
        blocks = {row.block_num: block}
        trx = next(t for t in block.transactions if t.trx_id == row.trx_id)
        out.append(row._replace(action_idx=trx.traces[row.action_idx].ordinal - 1))
    return out


def source_for(url: str, stop_block: int | None, **settings: Any) -> HyperionSource:
    extra = settings.pop("extra", {})
    return HyperionSource.create(
        url,
        Selection(),
        stop_block=stop_block,
        settings=SourceSettings(request_timeout=10.0, extra=extra, **settings),
    )


async def drive(
    source: HyperionSource, start: int | None, stop: int, *, max_restarts: int = 0
) -> dict[str, Any]:
    """Feed ``stream(start)`` through the Engine until its Stop (no store), like the runner.

    A transient SourceError becomes ConnectionLost and the stream is opened again at the
    engine's restart point (at most ``max_restarts`` times); a fatal one is raised.
    """
    engine = Engine(next_block=None, flush_rows=5000, flush_seconds=0.0, stop_block=stop)
    rows: list[Transfer] = []
    rejects: list[Any] = []
    out = {"rows": rows, "rejects": rejects, "engine": engine, "batches": 0, "restarts": 0}

    def execute(actions: list[Any]) -> int | bool | None:
        pending = list(actions)
        restart: Any = False
        while pending:
            action = pending.pop(0)
            if isinstance(action, WriteCommit):
                rows.extend(action.rows)
                rejects.extend(action.rejects)
                pending.extend(engine.handle(WriteSucceeded(action.commit_id), 0.0))
            elif isinstance(action, Restart):
                restart = action.start_block
            elif isinstance(action, Stop):
                return True
        return restart if restart is not False else None

    try:
        while True:
            stream = source.stream(start)
            try:
                async for batch in stream:
                    out["batches"] += 1
                    assert batch, "a source never yields an empty batch"
                    result = execute(engine.handle_batch(batch, 0.0))
                    if result is True:
                        return out
                    if result is not None:
                        raise AssertionError(f"engine asked for a restart at {result}")
                raise AssertionError("the stream ended before the stop block")
            except SourceError as exc:
                if exc.fatal or out["restarts"] >= max_restarts:
                    raise
                out["restarts"] += 1
                actions = engine.handle(ConnectionLost(str(exc)), 0.0)
                result = execute(actions)
                if result is True:
                    return out
                start = result if result is not None else start
            finally:
                await stream.aclose()
    finally:
        await source.aclose()
