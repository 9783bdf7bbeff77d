"""The error tree of karma_analytics.

Every error says what happened and what to do next, and carries structured attributes so that
callers decide by attribute, not by parsing text::

    KarmaError                       base of everything raised on purpose
    ├── UsageError                   local misuse: a bad argument or flag (also a ValueError)
    ├── ParseError                   a value from the wire does not parse (also a ValueError)
    ├── SourceError                  a source's stream failed (``fatal``: retrying cannot help)
    │   ├── ProtocolError            the server sent a frame outside the protocol
    │   ├── ServerError              the server sent an error message (dfuse ``code``, HTTP ...)
    │   ├── ConnectError             the handshake was refused or the host cannot be reached
    │   └── StalledError             the stream went silent while the connection stayed open
    ├── StoreError                   a storage fault while writing a dataset
    │   ├── LockedError              another writer holds the dataset
    │   ├── CursorError              the cursor sidecar is missing, corrupt or truncated
    │   └── RequestMismatchError     the dataset was collected with another request
    │       └── ChainMismatchError   ... or on another chain
    └── DatasetError                 the read side: not a dataset, or it failed verification

Source faults carry a ``fatal`` flag: a fatal one stops the collector, a transient one makes it
reconnect from the durable cursor (the one decision is
:func:`karma_analytics.sources.retry.is_fatal`). Messages never contain credentials: build them
with :func:`redact`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = [
    "ChainMismatchError",
    "ConnectError",
    "CursorError",
    "DatasetError",
    "KarmaError",
    "LockedError",
    "ParseError",
    "ProtocolError",
    "RedactFilter",
    "RequestMismatchError",
    "ServerError",
    "SourceError",
    "StalledError",
    "StoreError",
    "UsageError",
    "redact",
    "redacting_logger",
]

# Credentials can appear as a query parameter (dfuse puts the JWT in ``?token=``), as an HTTP
# bearer header, or as an API key in a JSON body or a command line.
_SECRET_PATTERNS = (
    re.compile(r"(?i)([?&]token=)[^&\s\"']+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(\"?(?:api_key|apikey|api-key|token)\"?\s*[:=]\s*\"?)[^\"'&\s,}]+"),
)
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a credential so that :func:`redact` removes it wherever it appears.

    Args:
        value: an API key or token; ``None`` or values shorter than 6 characters are ignored
            (too short to redact without mangling ordinary text).
    """
    if value and len(value) >= 6:
        _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with tokens, bearer headers and registered secrets replaced by ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class RedactFilter(logging.Filter):
    """A logging filter that takes credentials out of a record before any handler formats it.

    The one redaction of log lines: the CLI puts it on its handler, and the loggers handed to
    websockets (which logs request lines such as ``GET /v1/stream?token=...`` at DEBUG) carry
    it too. The message and any traceback text are rendered, then redacted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.msg = redact(message)
        record.args = None
        return True


def redacting_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with :class:`RedactFilter` attached (once)."""
    log = logging.getLogger(name)
    if not any(isinstance(f, RedactFilter) for f in log.filters):
        log.addFilter(RedactFilter())
    return log


class KarmaError(Exception):
    """Base of every error raised on purpose by karma_analytics."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(KarmaError, ValueError):
    """A bad argument or command-line flag (local misuse)."""


class ParseError(KarmaError, ValueError):
    """A value from the wire does not parse.

    Attributes:
        field: where the value came from, e.g. ``"act.data.quantity"``.
        value: the offending value (as received).
        reason: why it was refused.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field}: {reason} (got {shown})")


class SourceError(KarmaError):
    """A source's stream failed; the base of every remote fault.

    Attributes:
        fatal: ``True`` when retrying the same request cannot succeed (the run stops);
            ``False`` for a fault the collector recovers from by reconnecting.
    """

    fatal: bool = False
    #: A fault that comes back if the server repeats itself (a malformed frame, an unknown
    #: error code): after a few in a row at the same block the retry policy makes it fatal.
    persistent: bool = False

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        self.fatal = fatal
        super().__init__(message)


class ProtocolError(SourceError):
    """The server sent a frame outside the protocol (not JSON, unknown type, bad fields).

    Transient: the collector reconnects from its safe point rather than skip the frame.
    """

    persistent = True

    def __init__(self, message: str, *, frame: str | None = None, fatal: bool = False) -> None:
        self.frame = frame[:200] if frame else frame
        super().__init__(message, fatal=fatal)


class ServerError(SourceError):
    """The server answered with a dfuse ``error`` message.

    Attributes:
        code: the dfuse error code, e.g. ``"auth_invalid_streaming_start_block_error"``.
        server_message: the server's own message.
        details: the ``details`` object, or ``{}``.
        trace_id: the server's trace id, or ``""``.
        fatal: whether retrying the same request cannot succeed.
        persistent: an unknown code, fatal once repeated (see :class:`SourceError`).
    """

    def __init__(
        self,
        code: str,
        server_message: str,
        *,
        details: dict[str, Any] | None = None,
        trace_id: str = "",
        fatal: bool = False,
        hint: str = "",
        persistent: bool = False,
    ) -> None:
        self.persistent = persistent
        self.code = code
        self.server_message = server_message
        self.details = details or {}
        self.trace_id = trace_id
        text = f"server error {code}: {server_message}"
        if hint:
            text += f" — {hint}"
        super().__init__(text, fatal=fatal)


class ConnectError(SourceError):
    """The WebSocket handshake was refused or the host could not be reached.

    Attributes:
        status: the HTTP status of a refused handshake, or ``None``.
        fatal: ``True`` when retrying cannot help (e.g. a bad API key).
    """

    def __init__(self, message: str, *, status: int | None = None, fatal: bool = False) -> None:
        self.status = status
        super().__init__(message, fatal=fatal)


class StalledError(SourceError):
    """The stream sent no data for too long while the socket stayed open (transient)."""

    def __init__(self, message: str, *, silent_seconds: float = 0.0) -> None:
        self.silent_seconds = silent_seconds
        super().__init__(message)


class StoreError(KarmaError):
    """A storage fault while writing a dataset.

    Attributes:
        path: the dataset folder or file concerned.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = str(path)
        super().__init__(message)


class LockedError(StoreError):
    """Another collector holds the dataset's writer lock."""


class CursorError(StoreError):
    """The cursor sidecar is missing (with parts present), corrupt or truncated."""


class RequestMismatchError(StoreError):
    """The dataset was collected with another request (contract, action, filters)."""


class ChainMismatchError(RequestMismatchError):
    """The dataset belongs to another chain than the endpoint (or ``--chain-id``) serves.

    Attributes:
        dataset_chain_id: the chain id recorded in the sidecar.
        other_chain_id: the chain id the run was about to continue it with.
    """

    def __init__(
        self, message: str, *, path: str = "", dataset_chain_id: str, other_chain_id: str
    ) -> None:
        self.dataset_chain_id = dataset_chain_id
        self.other_chain_id = other_chain_id
        super().__init__(message, path=path)


class DatasetError(KarmaError):
    """A read-side problem: the path is not a dataset, or it failed verification."""
