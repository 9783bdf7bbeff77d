"""Run the devnet server from synchronous code: tests, notebooks, the collector's ``--demo``.

:class:`DevnetThread` runs a :class:`~karma_analytics.devnet.server.DevnetServer` on its own
event loop in a daemon thread::

    with run_devnet_in_thread(head=300_000, block_interval=0) as devnet:
        print(devnet.url)                       # ws://127.0.0.1:PORT/v1/stream
        rows = list(devnet.chain.truth(1, 200_000))

``devnet_server`` (async) is re-exported here for asyncio code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

from .chain import Chain
from .server import DevnetServer, DevnetStats, devnet_server

__all__ = [
    "DEMO_OPTIONS",
    "DEMO_RANGE",
    "DevnetThread",
    "ServerThread",
    "devnet_server",
    "run_devnet_in_thread",
]

# A fast history-only set-up for demos: the head is frozen far beyond the demo range, so a
# collector replays DEMO_RANGE (about 50,000 KARMA transfers over two UTC days, 2026-11-26
# and 2026-11-27) as fast as the socket allows and never waits for new blocks.
DEMO_RANGE = (1, 200_000)
DEMO_OPTIONS: dict[str, Any] = {"head": 250_000, "block_interval": 0.0, "lib_lag": 2}


class ServerThread:
    """Any devnet server (dfuse, Hyperion, SHiP) on its own event loop in a daemon thread.

    The server object needs ``async start()``, ``async stop()``, ``url``, ``chain``, ``head``,
    ``lib`` and ``stats``; its coroutines belong to the background loop. Use it as a context
    manager (or call :meth:`start` / :meth:`stop`).

    Args:
        server: the server to run (not started yet).
    """

    #: The thread's name and the server's name in error messages.
    label = "devnet"

    def __init__(self, server: Any) -> None:
        self.server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the thread and wait until the server accepts connections.

        Raises:
            RuntimeError: if the server could not start (the cause is chained).
        """
        name = f"karma-{self.label.replace(' ', '-')}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"{self.label} failed to start: {self._error}") from self._error
        if not self._ready.is_set():
            raise RuntimeError(f"{self.label} did not start within 30 s")
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()

    def stop(self) -> None:
        """Close all connections, stop the server and join the thread (idempotent)."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- views --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's URL (its protocol's scheme)."""
        return self.server.url

    @property
    def chain(self) -> Chain:
        """The chain served (``block(n)``, ``truth(first, last)``)."""
        return self.server.chain

    @property
    def head(self) -> int:
        """Current head block number."""
        return self.server.head

    @property
    def lib(self) -> int:
        """Current last irreversible block number."""
        return self.server.lib

    @property
    def stats(self) -> Any:
        """Live counters (read them from the calling thread, never write them)."""
        return self.server.stats

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate`` (e.g. ``lambda: devnet.stats.connections >= 2``) until true.

        Raises:
            TimeoutError: if it is still false after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(0.002)


class DevnetThread(ServerThread):
    """The dfuse devnet server in a background thread (see :class:`ServerThread`).

    Args:
        **options: fields of :class:`~karma_analytics.devnet.server.DevnetOptions`.
    """

    server: DevnetServer

    def __init__(self, **options: Any) -> None:
        super().__init__(DevnetServer(**options))

    @property
    def stats(self) -> DevnetStats:
        """Live counters (connections, frames sent, faults ...)."""
        return self.server.stats

    @property
    def auth_url(self) -> str | None:
        """``http://HOST:PORT`` of ``POST /v1/auth/issue`` when an API key is set."""
        return self.server.auth_url

    def issue_token(self, ttl: float | None = None) -> tuple[str, int]:
        """A valid token ``(jwt, expires_at)`` without going through HTTP."""
        return self.server.issue_token(ttl)


@contextlib.contextmanager
def run_devnet_in_thread(**options: Any) -> Iterator[DevnetThread]:
    """Context manager: a started :class:`DevnetThread`, stopped on exit."""
    devnet = DevnetThread(**options)
    devnet.start()
    try:
        yield devnet
    finally:
        devnet.stop()
