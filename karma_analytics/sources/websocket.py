"""WebSocket plumbing shared by the WebSocket sources (dfuse JSON frames, SHiP binary frames).

:class:`BatchConnection` hands over received messages a socket read at a time (text or
binary, fragments joined), framing the plain ones itself; :func:`connect_failure` names why a
host could not be reached, in the words a user needs (name not resolved, refused, TLS,
timeout).
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
from websockets.protocol import State

from karma_analytics.exceptions import ConnectError

__all__ = ["LOOPBACK_HOSTS", "BatchConnection", "connect_failure", "is_loopback"]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


# BatchConnection's framing modes.
_HANDSHAKE, _OWN, _WEBSOCKETS = "handshake", "own", "websockets"
# The opcodes websockets knows (RFC 6455 §5.2): continuation, text, binary, close, ping, pong.
_OPCODES = frozenset({0, 1, 2, 8, 9, 10})


class BatchConnection(ClientConnection):
    """A websockets client connection that hands over received messages a socket read at a time.

    ``recv()`` costs a future, a queue hop and a join per message: about as much as decoding
    one of our 1.5 KB frames (bench/bench_ingest.py). A stream of many small messages is
    cheaper taken in batches: :meth:`take` returns every message received so far. The
    handshake, control frames (pings are answered by websockets), fragments, the close
    handshake, the ``max_size`` limit and compression stay with websockets: ours are the
    message queue (through ``process_event``, the hook websockets provides for subclasses) and
    the framing of whole plain messages, which websockets' parser makes several times dearer
    than the rest of a block's work (:meth:`data_received`).

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
        # Framing (see data_received): _HANDSHAKE until the HTTP response's blank line, then
        # _OWN while websockets' parser stands at a frame boundary, _WEBSOCKETS for good after
        # anything unusual.
        self._framing = _HANDSHAKE
        self._seen_tail = b""  # the last bytes of the response so far (a blank line may span)
        # An incomplete frame (_OWN): its reads so far, their size, and the size it needs
        # before it is worth joining them (a large frame arrives in many reads: joined once).
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._partial_need = 0
        self._limit: int | None = None  # websockets' frame size limit (_OWN)

    # --- framing ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Parse the plain frames of the common case here, hand everything else to websockets.

        websockets' parser (generators, a buffer shifted per frame) costs several
        microseconds per message, as much as the rest of a SHiP collector's work on a block
        without transfers. Past the handshake, the common frame is a whole unfragmented text
        or binary message without extensions; its header is two bytes and a length. So:

        * until the HTTP response's blank line, websockets gets every byte; the handshake done,
          its parser waits for a frame header with nothing buffered;
        * then this method splits the stream into frames itself. A complete plain message
          frame goes straight to the queue; any other complete frame (ping, pong, close, a
          fragment) is handed to websockets alone, so its parser is always at a frame boundary
          and its state (fragments, closing, pongs) stays its own; an incomplete frame waits
          for more bytes here;
        * a header websockets would refuse (masked, unknown opcode, over the size limit), or a
          connection no longer open, hands the rest of the stream to websockets for good: it
          fails the connection as it always did. (Reserved bits are not plain either: such a
          frame goes to websockets whole, which refuses it.)
        """
        framing = self._framing
        if framing is _OWN:
            partial = self._partial
            if partial:
                partial.append(data)
                self._partial_size += len(data)
                if self._partial_size < self._partial_need:
                    return
                data = b"".join(partial)
                self._partial = []
            self._frame(data)
        elif framing is _WEBSOCKETS:
            super().data_received(data)
        else:
            seen = self._seen_tail + data
            end = seen.find(b"\r\n\r\n")
            if end < 0:
                self._seen_tail = seen[-3:]
                super().data_received(data)
                return
            cut = end + 4 - len(self._seen_tail)
            super().data_received(data[:cut])
            protocol = self.protocol
            if protocol.state is State.OPEN and not protocol.extensions:
                self._framing = _OWN
                sizes = [
                    size
                    for size in (protocol.max_message_size, protocol.max_fragment_size)
                    if size is not None
                ]
                self._limit = min(sizes) if sizes else None
                if cut < len(data):
                    self._frame(data[cut:])
            else:
                self._framing = _WEBSOCKETS
                if cut < len(data):
                    super().data_received(data[cut:])

    def _frame(self, data: bytes) -> None:
        pos = 0
        size = len(data)
        limit = self._limit
        protocol = self.protocol
        messages = self.messages
        queued = len(messages)
        while pos + 2 <= size:
            head1 = data[pos]
            head2 = data[pos + 1]
            length = head2  # the mask bit set makes it >= 128: refused below
            start = pos + 2
            if length == 126:
                start += 2
                length = int.from_bytes(data[pos + 2 : start], "big")
            elif length == 127:
                start += 8
                length = int.from_bytes(data[pos + 2 : start], "big")
            # (An extended length cut by the read is read short, never long: the frame
            # cannot end within the read either, and waits below for more bytes.)
            end = start + length
            if (
                head2 & 0x80
                or (head1 & 0x0F) not in _OPCODES
                or (limit is not None and length > limit)
            ):
                # websockets refuses this header before its payload (masked, unknown opcode,
                # too big): it gets the rest of the stream and fails the connection its way.
                self._hand_over(data[pos:], queued)
                return
            if end > size:
                # Wait for the rest (``end`` may be short of the frame's end while its
                # extended length is cut: then the next read joins and looks again).
                self._partial = [data[pos:]]
                self._partial_size = size - pos
                self._partial_need = end - pos
                self._wake(queued)
                return
            if (head1 == 0x82 or head1 == 0x81) and protocol.current_size is None:
                messages.append(data[start:end])
            else:
                # Control frames and fragments: websockets' own, one whole frame at a time.
                super().data_received(data[pos:end])
                if protocol.state is not State.OPEN:
                    # A close (or a failure): what follows is websockets' to discard.
                    self._hand_over(data[end:], queued)
                    return
            pos = end
        if pos < size:  # one byte of a header
            self._partial = [data[pos:]]
            self._partial_size = self._partial_need = 1
        self._wake(queued)

    def _hand_over(self, rest: bytes, queued: int) -> None:
        """websockets parses everything from here on (``rest`` first)."""
        self._framing = _WEBSOCKETS
        self._wake(queued)
        if rest:
            super().data_received(rest)

    def _wake(self, queued: int) -> None:
        """After messages were queued (there were ``queued`` before): wake a waiting take,
        pause reading above the high-water mark."""
        messages = self.messages
        if len(messages) <= queued:
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(messages) >= self.high_water and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

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
        self._wake(len(self.messages) - 1)

    async def send_small(self, message: bytes) -> None:
        """Send one small binary message (an ack) like ``send``, cheaper per message.

        When the connection is open, no other send is in progress and writing is not paused
        (the socket's buffer is below its high-water mark), the frame is written at once;
        otherwise this is ``send``, with its waiting and its errors. ``send`` costs an async
        context manager and a drain check per message: for an ack per socket read that was a
        tenth of the SHiP source's time (bench/bench_ship.py).

        Raises:
            ConnectionClosed: as ``send``.
        """
        if self.protocol.state is State.OPEN and self.send_in_progress is None and not self.paused:
            self.protocol.send_binary(message)
            self.send_data()
            return
        await self.send(message)

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
