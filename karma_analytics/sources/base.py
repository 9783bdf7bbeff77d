"""The source interface: what every upstream protocol implements (pure; no I/O here).

A *source* is one endpoint of one protocol (dfuse, Hyperion, SHiP). It is given the selection
(contract, action, irreversible_only), an optional stop block, and for each stream a start
block. It implements **one connection and one subscription**; everything about retrying lives
once, in :mod:`karma_analytics.sources.retry` (backoff, stall watchdog, failover between
endpoints, giving up, the transient-or-fatal decision).

The stream contract (what :meth:`Source.stream` promises)::

    async for batch in source.stream(start_block):     # batch: list of engine events
        ...

* ``start_block`` is inclusive; ``None`` means the head, or the LIB with
  ``irreversible_only``; a negative number counts back from there. The source resolves it to
  a number.
* The first batch begins with ``Listening(n)``: the stream starts at block ``n`` (the resolved
  start). Before yielding it the source knows :attr:`Source.chain_id` (or knows that its
  provider cannot tell, then ``None``).
* Then ``ActionReceived`` and ``Progress`` events, in block order. ``Progress(b)`` is promised
  only once every matching action of every block ``<= b`` has been yielded: it is what lets the
  engine commit a block without a later action (DESIGN.md, the safe point). A source that can
  go quiet (no matching action for a while) must still yield ``Progress`` at least every few
  seconds while the chain advances, or the watchdog takes it for a stall.
* Every batch holds at least one event. A source never yields ``ConnectionLost``: faults are
  raised.
* The stream ends by returning (upstream finished, e.g. past the stop block) or by raising one
  :class:`SourceError` whose ``fatal`` flag says whether retrying can help. Anything else
  raised is a bug and ends the run.
* Nothing is committed by a source and nothing is retried inside it; the runner may abandon a
  stream at any batch (``aclose()`` of the iterator), then start a new one.

Each source names its :attr:`~Source.kind`, its :attr:`~Source.endpoint` without credentials
(what logs, errors and the sidecar show) and, once learned, the :attr:`~Source.chain_id` it
serves. A dataset belongs to a chain (DESIGN.md): any source of the same chain may continue it.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from karma_analytics.exceptions import SourceError, UsageError

__all__ = [
    "SOURCE_KINDS",
    "Selection",
    "Source",
    "SourceError",
    "SourceSettings",
    "parse_chain_id",
    "source_class",
]

#: The values of ``--source``, in the order they are documented.
SOURCE_KINDS = ("dfuse", "hyperion", "ship")

_CHAIN_ID = re.compile(r"[0-9a-f]{64}")


def parse_chain_id(value: str, *, what: str = "chain id") -> str:
    """A chain id as 64 lowercase hex digits; raise :class:`UsageError` otherwise."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _CHAIN_ID.fullmatch(text):
        raise UsageError(f"{what} must be 64 hex digits, got {value!r}")
    return text


@dataclass(frozen=True, slots=True)
class Selection:
    """What to collect: the contract's own executions of ``action``.

    Attributes:
        contract: the token contract (``act.account`` and the receiver).
        action: the action name.
        irreversible_only: only irreversible blocks (DESIGN.md default).
    """

    contract: str = "therealkarma"
    action: str = "transfer"
    irreversible_only: bool = True


@dataclass(frozen=True)
class SourceSettings:
    """Protocol options from the command line or the notebook; each source takes what it uses.

    Attributes:
        api_key: a key the provider exchanges for a token (dfuse); never logged or stored.
        auth_url: the token issuer (dfuse); ``None`` derives it from the endpoint.
        workers: concurrent requests of a parallel backfill (Hyperion windows).
        page_size: actions per page; ``None`` asks the server for its maximum (Hyperion).
        request_timeout: seconds allowed for one HTTP request or handshake.
        rate_limit_rpm: requests per minute to stay under per host; ``None`` = the server's
            ``429`` answers decide (Hyperion).
        max_messages_in_flight: flow-control window (SHiP credits).
        extra: anything else a source documents (keys are its own).
    """

    api_key: str | None = field(default=None, repr=False)
    auth_url: str | None = None
    workers: int = 4
    page_size: int | None = None
    request_timeout: float = 30.0
    rate_limit_rpm: float | None = None
    max_messages_in_flight: int = 64
    extra: Mapping[str, Any] = field(default_factory=dict)


class Source(abc.ABC):
    """One endpoint of one protocol; see the module docstring for the stream contract.

    Attributes:
        kind: the protocol (one of :data:`SOURCE_KINDS`).
        endpoint: the endpoint as shown to people: a URL without credentials.
        chain_id: the chain this endpoint serves, 64 hex digits; ``None`` until a stream has
            started, or when the provider cannot tell.
        selection: what is collected.
        stop_block: the last block wanted (inclusive), a hint the source may pass upstream;
            ``None`` = no end.
    """

    kind: ClassVar[str] = ""

    def __init__(self, endpoint: str, selection: Selection, *, stop_block: int | None) -> None:
        self.endpoint = endpoint
        self.selection = selection
        self.stop_block = stop_block
        self.chain_id: str | None = None

    @classmethod
    @abc.abstractmethod
    def create(
        cls,
        endpoint: str,
        selection: Selection,
        *,
        stop_block: int | None = None,
        settings: SourceSettings | None = None,
    ) -> Source:
        """Build the source for an endpoint as the user gave it (URL, ``host[:port]``).

        Raises:
            UsageError: the endpoint is not a URL this protocol can use (say which form is).
        """

    @staticmethod
    def normalize_endpoint(endpoint: str) -> str:
        """The endpoint as this protocol's full URL, without credentials (for identity and
        display); the default returns it stripped."""
        return endpoint.strip()

    @abc.abstractmethod
    def stream(self, start_block: int | None) -> AsyncIterator[list[Any]]:
        """One connection and one subscription from ``start_block`` (see the module docstring).

        Raises:
            SourceError: the stream failed; ``fatal`` says whether a retry can help.
        """

    async def head_block_num(self) -> int:
        """The chain's head block, from the provider's chain API (for ``--since``/``--until``).

        Raises:
            UsageError: this source has no chain API to ask.
            SourceError: the request failed.
        """
        raise UsageError(
            f"{self.kind} endpoints give no block times here: use --start-block/--stop-block "
            "instead of --since/--until (or collect the dates through --source hyperion)"
        )

    async def block_time_ms(self, num: int) -> int:
        """The time of block ``num`` in ms since the epoch (UTC), from the chain API.

        Raises:
            UsageError: this source has no chain API to ask (see :meth:`head_block_num`).
            SourceError: the request failed.
        """
        await self.head_block_num()
        raise AssertionError("head_block_num raises for sources without a chain API")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release what the source holds between streams (sessions, tokens); idempotent."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint!r})"


_CLASSES = {
    "dfuse": ("karma_analytics.sources.dfuse", "DfuseSource"),
    "hyperion": ("karma_analytics.sources.hyperion", "HyperionSource"),
    "ship": ("karma_analytics.sources.ship", "ShipSource"),
}


def source_class(kind: str) -> type[Source]:
    """The :class:`Source` class of a ``--source`` value (imported on demand: keeps
    ``import karma_analytics`` cheap and one protocol's dependencies out of another's run)."""
    import importlib

    try:
        module_name, class_name = _CLASSES[kind]
    except KeyError:
        raise UsageError(
            f"unknown source {kind!r}; choose one of {', '.join(SOURCE_KINDS)}"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)
