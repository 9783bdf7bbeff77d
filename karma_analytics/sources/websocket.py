"""WebSocket plumbing shared by the WebSocket sources (dfuse JSON frames, SHiP binary frames).

:class:`BatchConnection` hands over received messages a socket read at a time (text or
binary, fragments joined); :func:`connect_failure` names why a host could not be reached, in
the words a user needs (name not resolved, refused, TLS, timeout).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.parse
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidURI
from websockets.frames import CloseCode, Frame, Opcode

from karma_analytics.exceptions import ConnectError

__all__ = ["LOOPBACK_HOSTS", "BatchConnection", "connect_failure", "is_loopback"]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class BatchConnection(ClientConnection):
    """A websockets client connection that hands over received messages a socket read at a time.

    ``recv()`` costs a future, a queue hop and a join per message: about as much as decoding
    one of our 1.5 KB frames (bench/bench_ingest.py). A stream of many small messages is
    cheaper taken in batches: :meth:`take` returns every message received so far. The
    handshake, control frames (pings are answered by websockets), the close handshake, the
    ``max_size`` limit and compression stay with websockets: only the message queue is ours,
    through ``process_event``, the hook websockets provides for subclasses.

    Pass it as ``connect(..., create_connection=BatchConnection)`` and do not call ``recv()``.
    """

    #: Messages buffered before reading from the socket pauses (TCP backpressure): ~3 MB here.
    high_water = 2048
    #: Fragments of one message above which it is refused (close 1009), as websockets does.
    max_fragments = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[bytes] = []
        self._fragments: list[bytes] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False

    def process_event(self, event: Any) -> None:
        if type(event) is not Frame or self.response is None:
            super().process_event(event)  # the handshake response
            return
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            data = event.data
            message = data if type(data) is bytes else bytes(data)
            if not event.fin:
                self._fragments = [message]
                return
        elif opcode is Opcode.CONT:
            # websockets' parser already refused a continuation without a first fragment.
            fragments = self._fragments
            assert fragments is not None
            fragments.append(bytes(event.data))
            if len(fragments) > self.max_fragments:
                self._fragments = None
                self.protocol.fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
                self.send_data()
                return
            if not event.fin:
                return
            self._fragments = None
            message = b"".join(fragments)
        else:
            super().process_event(event)  # ping, pong, close
            return
        self.messages.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(self.messages) >= self.high_water and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_nowait(self) -> list[bytes]:
        """Every message received so far, oldest first (possibly none)."""
        messages = self.messages
        if messages:
            self.messages = []
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
        return messages

    async def take(self) -> list[bytes]:
        """Wait for at least one message; return every message received so far.

        Messages that arrived before the connection closed are returned first.

        Raises:
            ConnectionClosed: the connection is closed and every message was taken.
        """
        if not self.messages:
            if not self.connection_lost_waiter.done():
                waiter = self._waiter = self.loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
            if not self.messages:
                await asyncio.shield(self.connection_lost_waiter)
                raise self.close_exc
        return self.take_nowait()


def is_loopback(url: str) -> bool:
    """Whether the URL's host is a loopback name or address (no proxy, ``ws://`` allowed)."""
    return (urllib.parse.urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def connect_failure(exc: BaseException, url: str) -> ConnectError:
    """The :class:`ConnectError` for a failed connection attempt, saying which kind it was.

    A bad certificate or URL is fatal (retrying cannot help); a name that does not resolve,
    a refused connection, a reset or a timeout is transient (outages end).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectError(
            f"TLS certificate of {url} not trusted ({exc.verify_message}); check the host name",
            fatal=True,
        )
    if isinstance(exc, InvalidURI):
        return ConnectError(f"invalid endpoint URL {url}", fatal=True)
    if isinstance(exc, socket.gaierror):
        text = f"host name not resolved ({exc.strerror or exc})"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS error ({exc.reason or exc})"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, ConnectionResetError):
        text = "connection reset"
    else:
        text = str(exc) or type(exc).__name__
    return ConnectError(f"cannot connect to {url}: {text}", fatal=False)
