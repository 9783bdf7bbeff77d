"""Helpers of the Hyperion source tests: run a stream through the real Engine, and the truth
with Hyperion's action_idx (action_ordinal - 1, docs.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from karma_analytics.devnet.chain import Chain
from karma_analytics.engine import (
    ActionReceived,
    ConnectionLost,
    Engine,
    Progress,
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
    """``chain.truth``: every source reports ``action_idx`` as ``action_ordinal - 1``."""
    return list(chain.truth(first, last))


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


class LibWatch:
    """What a live collection did against a devnet Hyperion, in time.

    ``watch(source)`` wraps ``source.stream`` so that every ``ActionReceived`` and ``Progress``
    is recorded with the server's LIB at the moment the source yields it (``seen``: (event
    kind, block, lib, monotonic time)); the server's LIB advances are recorded as the clock
    announces them (``libs``: lib -> monotonic time; attach after ``server.start()``).
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.libs: dict[int, float] = {}
        self.seen: list[tuple[str, int, int, float]] = []
        stream = server.stream
        announce = stream.on_lib

        async def on_lib(lib: int) -> None:
            self.libs.setdefault(lib, time.monotonic())
            await announce(lib)

        stream.on_lib = on_lib  # the clock looks it up on the instance at every advance

    def watch(self, source: HyperionSource) -> HyperionSource:
        opened = source.stream

        async def stream(start: int | None) -> Any:
            async for batch in opened(start):
                lib = self.server.lib
                now = time.monotonic()
                for event in batch:
                    if isinstance(event, ActionReceived):
                        self.seen.append(("action", event.block_num, lib, now))
                    elif isinstance(event, Progress):
                        self.seen.append(("progress", event.block_num, lib, now))
                yield batch

        source.stream = stream  # type: ignore[method-assign]
        return source

    def above_lib(self) -> list[tuple[str, int, int, float]]:
        """Events yielded for a block above the LIB of that moment (must be none)."""
        return [s for s in self.seen if s[1] > s[2]]

    def progress_after(self, block: int) -> list[tuple[int, float]]:
        """``(block, time)`` of every Progress beyond ``block``."""
        return [(b, t) for kind, b, _lib, t in self.seen if kind == "progress" and b > block]
