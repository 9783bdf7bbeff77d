"""Jupyter bridge: run the collector in the background of a notebook, or to completion.

Two entry points:

* :func:`start_collector` starts the collector as a task on the notebook's running event loop
  (ipykernel runs one) and returns at once with a :class:`CollectorHandle`: other cells keep
  executing while it collects, a one-line progress display updates in the cell's output, and
  ``handle.stop()`` / ``handle.wait()`` / ``handle.status`` control and watch it. Outside a
  running loop (a plain script) the collector runs in a background thread instead.
* :func:`collect` blocks until the run ends (``stop_block`` reached, or interrupted) and
  returns the summary. It works in a plain script (``asyncio.run``) and inside Jupyter, where
  a loop is already running (then, and only then, ``nest_asyncio`` is applied to that loop).

Both accept ``demo=True`` to collect the fixed demo range from an in-process devnet, exactly
as ``python -m karma_analytics.collect --demo`` does.

    >>> from karma_analytics.notebook import collect, start_collector
    >>> summary = collect(demo=True)                                      # doctest: +SKIP
    >>> h = start_collector("https://eos.hyperion.eosrio.io", source="hyperion",
    ...                     out="data/transfers")                           # doctest: +SKIP
    >>> h.status.rows                                                     # doctest: +SKIP
    >>> h.stop(); summary = h.wait()                                      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from karma_analytics.exceptions import UsageError
from karma_analytics.runner import (
    CollectConfig,
    Collector,
    CollectorStatus,
    CollectSummary,
    demo_session,
)

__all__ = ["CollectorHandle", "StatusSnapshot", "collect", "start_collector"]


@dataclass(frozen=True)
class StatusSnapshot:
    """A consistent copy of a running collector's figures.

    Attributes:
        state: ``"starting"``, ``"streaming"``, ``"reconnecting"``, ``"stopping"``,
            ``"done"``, ``"stopped"`` or ``"failed"``.
        rows: rows committed by this run.
        blocks: blocks committed by this run.
        next_block: first block not yet committed (``None`` until known).
        reconnects: stream restarts so far.
        rejects: rejected transfers kept so far.
        rows_per_second: average commit rate of this run.
        error: the error text that ended the run, or ``None``.
    """

    state: str
    rows: int
    blocks: int
    next_block: int | None
    reconnects: int
    rejects: int
    rows_per_second: float
    error: str | None

    @classmethod
    def of(cls, status: CollectorStatus) -> StatusSnapshot:
        return cls(
            state=status.state,
            rows=status.rows,
            blocks=status.blocks,
            next_block=status.next_block,
            reconnects=status.reconnects,
            rejects=status.rejects,
            rows_per_second=status.rows_per_second(),
            error=status.error,
        )


def _config(
    endpoint: str | None, *, out: str | Path | None, options: dict[str, Any]
) -> CollectConfig:
    if endpoint is None and not options.get("endpoints"):
        raise UsageError(
            "pass an endpoint URL (e.g. a Hyperion https://host, source='hyperion') or demo=True"
        )
    if options.get("api_key") is None:
        import os

        options["api_key"] = os.environ.get("DFUSE_API_KEY") or None
    return CollectConfig(endpoint=endpoint, out=out or "data/transfers", **options)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread (the kernel's loop inside Jupyter), if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    # In a Jupyter cell the kernel's loop runs this thread but the cell code is not inside a
    # task, so get_running_loop() fails while get_event_loop() returns the running loop.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return None
    return loop if loop.is_running() else None


def _in_ipython_kernel() -> bool:
    import sys

    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except Exception:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _display(progress: bool | Any) -> Any:
    if progress is False or progress is None:
        return None
    if progress is not True:
        return progress  # a caller-supplied display object
    from karma_analytics.progress import BarDisplay, NotebookDisplay

    return NotebookDisplay() if _in_ipython_kernel() else BarDisplay()


class CollectorHandle:
    """Control of a collector running in the background (from :func:`start_collector`).

    The collector keeps running while other cells execute. Nothing here blocks except
    :meth:`wait`.
    """

    def __init__(self, collector: Collector, *, demo: Any = None) -> None:
        self._collector = collector
        self._demo = demo
        self._task: asyncio.Task[CollectSummary] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._result: CollectSummary | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()

    # -- starting ----------------------------------------------------------------------------

    def _start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._task = loop.create_task(self._run(), name="karma-collector")

    def _start_thread(self) -> None:
        def target() -> None:
            with contextlib.suppress(BaseException):
                asyncio.run(self._run_in_thread())

        self._thread = threading.Thread(target=target, name="karma-collector", daemon=True)
        self._thread.start()

    async def _run_in_thread(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._run()

    async def _run(self) -> CollectSummary:
        try:
            self._result = await self._collector.run()
            return self._result
        except BaseException as error:
            self._error = error
            raise
        finally:
            if self._demo is not None:
                with contextlib.suppress(Exception):
                    self._demo.close()
            self._finished.set()

    # -- public ------------------------------------------------------------------------------

    @property
    def status(self) -> StatusSnapshot:
        """Current figures (rows, blocks, next_block, reconnects, state, error)."""
        return StatusSnapshot.of(self._collector.status)

    @property
    def config(self) -> CollectConfig:
        return self._collector.config

    def done(self) -> bool:
        """Whether the run has ended (complete, stopped or failed)."""
        return self._finished.is_set()

    def stop(self) -> None:
        """Ask the collector to commit what is complete and stop; returns at once.

        Call :meth:`wait` (or ``await handle``) for the summary.
        """
        collector = self._collector
        if self._thread is not None:
            collector.request_stop_threadsafe()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(collector.request_stop)

    def result(self) -> CollectSummary:
        """The summary of a finished run; re-raises its error. Raises RuntimeError if running."""
        if not self.done():
            raise RuntimeError("the collector is still running: call stop() then wait()")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def wait(self, timeout: float | None = None) -> CollectSummary:
        """Block until the run ends and return its summary (re-raises its error).

        Inside Jupyter (the collector runs on the kernel's loop) this keeps that loop running
        while waiting (via ``nest_asyncio``); in a cell you can also write ``await handle``.

        Args:
            timeout: seconds to wait at most; ``None`` waits for the end.

        Raises:
            TimeoutError: the run did not end within ``timeout``.
        """
        if self._task is not None and not self.done():
            loop = self._loop
            assert loop is not None
            if loop.is_running():
                import nest_asyncio

                nest_asyncio.apply(loop)
            waiter = asyncio.wait_for(asyncio.shield(self._task), timeout)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                loop.run_until_complete(waiter)
            if not self.done():
                raise TimeoutError(f"collector still running after {timeout} s")
        elif not self._finished.wait(timeout):
            raise TimeoutError(f"collector still running after {timeout} s")
        return self.result()

    def __await__(self) -> Any:
        return self._wait_async().__await__()

    async def _wait_async(self) -> CollectSummary:
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._task)
        else:
            await asyncio.to_thread(self._finished.wait)
        return self.result()

    def __repr__(self) -> str:
        s = self.status
        return (
            f"<CollectorHandle {s.state}: {s.rows:,} rows, {s.blocks:,} blocks, "
            f"next_block={s.next_block}, reconnects={s.reconnects}"
            + (f", error={s.error!r}" if s.error else "")
            + ">"
        )


def start_collector(
    endpoint: str | None = None,
    *,
    demo: bool = False,
    out: str | Path | None = None,
    progress: bool | Any = True,
    **options: Any,
) -> CollectorHandle:
    """Start collecting in the background and return a handle at once.

    On the running event loop of this thread (Jupyter's kernel loop) the collector is a task
    on that loop; without one (plain script) it runs in a daemon thread with its own loop.

    Args:
        endpoint: dfuse stream URL; not needed with ``demo``.
        demo: collect the demo range from an in-process devnet (``data/demo/transfers``).
        out: dataset folder (default ``data/transfers``, or the demo folder).
        progress: ``True`` for a live display in the cell output (a tqdm bar outside
            Jupyter), ``False`` for none, or a display object.
        **options: other :class:`~karma_analytics.collect.CollectConfig` fields
            (``api_key``, ``contract``, ``action``, ``start_block``, ``stop_block``,
            ``irreversible_only``, ``flush_rows``, ``flush_seconds``, ...).

    Returns:
        The handle: ``stop()``, ``wait()``, ``status``, ``await handle``.
    """
    session = demo_session(out=out, stop_block=options.pop("stop_block", None)) if demo else None
    try:
        if session is not None:
            config = session.config(**options)
        else:
            config = _config(endpoint, out=out, options=options)
        collector = Collector(config, display=_display(progress), summary_top=5 if demo else 0)
    except BaseException:
        if session is not None:
            session.close()
        raise
    handle = CollectorHandle(collector, demo=session)
    loop = _running_loop()
    if loop is not None:
        handle._start_on(loop)
    else:
        handle._start_thread()
    return handle


def collect(
    endpoint: str | None = None,
    *,
    demo: bool = False,
    out: str | Path | None = None,
    stop_block: int | None = None,
    progress: bool | Any = True,
    **options: Any,
) -> CollectSummary:
    """Collect until ``stop_block`` is committed (or until interrupted) and return the summary.

    Works in a plain script and inside Jupyter. Interrupting (Ctrl-C / the kernel's stop
    button) commits what is complete before returning.

    Args:
        endpoint: dfuse stream URL; not needed with ``demo``.
        demo: collect the demo range from an in-process devnet.
        out: dataset folder (default ``data/transfers``, or ``data/demo/transfers``).
        stop_block: last block to collect; ``None`` runs until interrupted (demo: the demo
            range's end).
        progress: as for :func:`start_collector`.
        **options: other :class:`~karma_analytics.collect.CollectConfig` fields.

    Raises:
        KarmaError: a fatal error (after committing every complete block).
    """
    session = demo_session(out=out, stop_block=stop_block) if demo else None
    try:
        if session is not None:
            config = session.config(**options)
        else:
            config = _config(endpoint, out=out, options={"stop_block": stop_block, **options})
        collector = Collector(config, display=_display(progress), summary_top=5 if demo else 0)
        loop = _running_loop()
        if loop is None:
            return asyncio.run(_run_interruptible(collector))
        import nest_asyncio

        # Only here: a loop is already running in this thread (Jupyter), so re-enter it.
        nest_asyncio.apply(loop)
        task = loop.create_task(collector.run())
        while True:
            try:
                return loop.run_until_complete(task)
            except KeyboardInterrupt:
                # The kernel's interrupt button: commit what is complete, then return.
                if task.done():
                    raise
                collector.request_stop()
    finally:
        if session is not None:
            session.close()


async def _run_interruptible(collector: Collector) -> CollectSummary:
    """Run; on KeyboardInterrupt / cancellation ask for a clean stop and finish the run."""
    task = asyncio.ensure_future(collector.run())
    while True:
        try:
            return await asyncio.shield(task)
        except (KeyboardInterrupt, asyncio.CancelledError):
            if task.done():
                raise
            collector.request_stop()
