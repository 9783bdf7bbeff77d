"""HyperionSource: one Hyperion endpoint (plus optional mirrors) as a :class:`Source`.

One :meth:`~HyperionSource.stream` (sources/base.py contract):

1. ``/v1/chain/get_info`` on the primary host: the chain id (a host naming another chain
   than expected is refused, fatal) and the LIB (§2.3); mirrors are checked the same way and
   dropped when they serve another chain.
2. ``[Listening(start)]`` (``start=None``: the LIB).
3. Backfill ``start..min(stop_block, safe tip)`` in parallel windows (backfill.py), where the
   safe tip is ``min(LIB, (last_indexed_block or LIB) - margin)`` (§4.2, §1.6: the index
   tip includes docs not yet searchable, parallel index queues fill blocks out of order).
4. Past it, follow the chain (live.py): REST at the safe tip (``ignoreCache``), or the
   Socket.IO stream where the host has one; nothing above the LIB is ever yielded.
5. Return once ``stop_block`` is done.

Every fault is raised (no retry loop here); within the backfill a failed window moves to
another host (backfill.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from karma_analytics.engine import Listening
from karma_analytics.exceptions import SourceError, UsageError
from karma_analytics.sources.base import Selection, Source, SourceSettings, parse_chain_id

from . import live
from .backfill import WINDOW_PAGES, BackfillStats, HostPool, backfill
from .rest import HyperionHost, new_session

__all__ = ["HyperionSource"]

logger = logging.getLogger(__name__)

#: Blocks kept below the index tip (``last_indexed_block``): the reader sets it before the docs
#: travel RabbitMQ -> indexer -> ES bulk -> 1 s refresh, and parallel index queues fill blocks
#: out of order (§1.6), so the last indexed blocks are incomplete for a while. 60 blocks (30 s
#: at 0.5 s blocks) tolerates a backlog of that much; a host lagging more would lose rows, so
#: the margin is kept from the index tip, not from the LIB (which is ~1 s behind the head).
#: Tests measure it: an index lag above the margin loses rows, below it none.
DEFAULT_MARGIN_BLOCKS = 60
#: Seconds between two looks at the LIB when polling (the stall watchdog wants a Progress
#: every few seconds while the LIB advances).
DEFAULT_POLL_SECONDS = 1.0


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HyperionSource(Source):
    """A Hyperion History API endpoint; see the module docstring.

    Args:
        endpoint: base URL (normalized by :meth:`normalize_endpoint`).
        selection: contract, action, irreversible_only.
        stop_block: last block (inclusive), or ``None`` to follow the chain.
        settings: ``workers`` (parallel windows), ``page_size``, ``request_timeout``,
            ``rate_limit_rpm`` (per host) and ``extra`` keys: ``mirrors`` (more base URLs of
            the same chain, used by the backfill), ``chain_id`` (expected, 64 hex),
            ``margin_blocks``, ``poll_seconds``, ``live`` (``"auto"``, ``"stream"`` or
            ``"poll"``), ``window_pages`` (pages per window), ``capacity`` (windows held),
            ``max_events`` (events held past the head window).
    """

    kind = "hyperion"

    def __init__(
        self,
        endpoint: str,
        selection: Selection,
        *,
        stop_block: int | None = None,
        settings: SourceSettings | None = None,
    ) -> None:
        super().__init__(self.normalize_endpoint(endpoint), selection, stop_block=stop_block)
        self.settings = settings or SourceSettings()
        extra = dict(self.settings.extra)
        mirrors = extra.get("mirrors") or ()
        if isinstance(mirrors, str):
            mirrors = [m for m in mirrors.split(",") if m.strip()]
        self.mirrors = tuple(
            m for m in (self.normalize_endpoint(x) for x in mirrors) if m != self.endpoint
        )
        expected = extra.get("chain_id")
        self.expected_chain_id = parse_chain_id(expected) if expected else None
        self.margin_blocks = int(extra.get("margin_blocks", DEFAULT_MARGIN_BLOCKS))
        self.poll_seconds = float(extra.get("poll_seconds", DEFAULT_POLL_SECONDS))
        self.live_mode = str(extra.get("live", "auto"))
        if self.live_mode not in ("auto", "stream", "poll"):
            raise UsageError(f"live must be auto, stream or poll, got {self.live_mode!r}")
        self.window_pages = float(extra.get("window_pages", WINDOW_PAGES))
        self.capacity = extra.get("capacity")
        self.max_events = extra.get("max_events")
        if self.settings.workers < 1:
            raise UsageError(f"workers must be at least 1, got {self.settings.workers}")
        self._session: aiohttp.ClientSession | None = None
        self.stats = BackfillStats()
        self.live_stats = live.LiveStats()

    @classmethod
    def create(
        cls,
        endpoint: str,
        selection: Selection,
        *,
        stop_block: int | None = None,
        settings: SourceSettings | None = None,
    ) -> HyperionSource:
        """The source for ``endpoint`` (``https://host[/v2]``, ``host[:port]``); a comma
        separated list makes the first the primary and the others mirrors.

        Raises:
            UsageError: not an http(s) URL or host name.
        """
        parts = [p for p in endpoint.split(",") if p.strip()]
        if len(parts) > 1:
            extra = dict(settings.extra) if settings else {}
            extra["mirrors"] = tuple(parts[1:]) + tuple(extra.get("mirrors") or ())
            base = settings or SourceSettings()
            settings = SourceSettings(
                api_key=base.api_key,
                auth_url=base.auth_url,
                workers=base.workers,
                page_size=base.page_size,
                request_timeout=base.request_timeout,
                rate_limit_rpm=base.rate_limit_rpm,
                max_messages_in_flight=base.max_messages_in_flight,
                extra=extra,
            )
        return cls(
            parts[0] if parts else endpoint, selection, stop_block=stop_block, settings=settings
        )

    @staticmethod
    def normalize_endpoint(endpoint: str) -> str:
        """``https://host[:port]`` from ``https://host[/v2][/]`` or ``host[:port]``;
        ``http://`` is kept (and the default) for loopback hosts only.

        Raises:
            UsageError: anything that is not an http(s) URL or a host name.
        """
        text = endpoint.strip()
        if not text:
            raise UsageError("a Hyperion endpoint is needed, e.g. https://wax.eosusa.io")
        if "://" not in text:
            host_part = text.split("/")[0]
            hostname = host_part.rsplit(":", 1)[0].strip("[]")
            text = ("http://" if _is_loopback(hostname) else "https://") + text
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"a Hyperion endpoint is an https:// URL or a host name, got {endpoint!r}"
            )
        if parts.username or parts.password or parts.query:
            raise UsageError("a Hyperion endpoint takes no credentials or query string")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise UsageError(f"use https:// for a public Hyperion host, got {endpoint!r}")
        path = parts.path.rstrip("/")
        if path.endswith("/v2"):
            path = path[:-3]
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path.rstrip("/"), "", ""))

    # --- the stream ---------------------------------------------------------------------

    def _hosts(self) -> list[HyperionHost]:
        if self._session is None or self._session.closed:
            self._session = new_session(connections=max(8, 2 * self.settings.workers))
        return [
            HyperionHost(
                url,
                self._session,
                timeout=self.settings.request_timeout,
                expected_chain_id=self.chain_id or self.expected_chain_id,
                page_size=self.settings.page_size,
            )
            for url in (self.endpoint, *self.mirrors)
        ]

    async def _prepare(self, hosts: Sequence[HyperionHost]) -> tuple[list[HyperionHost], int]:
        """Chain id, LIB and page size from every host; hosts of another chain are dropped.

        The first host that answers names the chain (unless ``chain_id`` was given); a host
        failing transiently now stays in the pool (it rests there, backfill.py). When no host
        answers, the primary's error is raised.
        """
        answered: list[HyperionHost] = []
        resting: list[HyperionHost] = []
        lib: int | None = None
        first_error: SourceError | None = None
        for host in hosts:
            host.expected_chain_id = self.chain_id or self.expected_chain_id
            try:
                info = await host.get_info()
                await host.discover_page_size()
            except SourceError as exc:
                first_error = first_error or exc
                if exc.fatal:
                    logger.warning("not using Hyperion host %s: %s", host.base_url, exc)
                    continue
                logger.info("Hyperion host %s: %s", host.base_url, exc)
                resting.append(host)
                continue
            self.chain_id = info.chain_id
            lib = info.lib if lib is None else lib
            answered.append(host)
        if lib is None:
            assert first_error is not None
            raise first_error
        # The first host that answered leads (get_info, tip probes, the stream).
        return answered + resting, lib

    async def safe_tip(self, host: HyperionHost, lib: int | None = None) -> tuple[int, int]:
        """``(lib, safe)``: the LIB and the last block the backfill may complete (§4.2)."""
        if lib is None:
            lib = (await host.get_info()).lib
        # One cheap probe for last_indexed_block (absent on some hosts: then the LIB alone).
        page = await host.get_actions(
            self.selection.contract, self.selection.action, lib, lib, 0, limit=1,
            ignore_cache=True,
        )  # fmt: skip
        tip = page.last_indexed_block if page.last_indexed_block is not None else lib
        return lib, min(lib, tip - self.margin_blocks)

    async def stream(self, start_block: int | None) -> AsyncIterator[list[Any]]:
        """See the module docstring and sources/base.py."""
        hosts, lib = await self._prepare(self._hosts())
        pool = HostPool(hosts, rate_limit_rpm=self.settings.rate_limit_rpm)
        start = start_block if start_block is not None else max(1, lib)
        if start < 1:
            raise UsageError(f"start_block must be a positive block number, got {start}")
        yield [Listening(start)]
        next_block = start
        stop = self.stop_block
        lib, tip = await self.safe_tip(hosts[0], lib)
        first_pass = True
        use_stream = self.live_mode != "poll"
        while True:
            end = tip if stop is None else min(tip, stop)
            if next_block <= end:
                async for batch in backfill(
                    pool,
                    self.selection.contract,
                    self.selection.action,
                    next_block,
                    end,
                    workers=self.settings.workers,
                    capacity=self.capacity,
                    max_events=self.max_events,
                    target_pages=self.window_pages,
                    stats=self.stats,
                    ignore_cache=not first_pass,
                ):
                    yield batch
                next_block = end + 1
            if stop is not None and next_block > stop:
                return
            first_pass = False
            if use_stream:
                async for batch in live.follow_stream(self, pool, next_block, self.live_stats):
                    yield batch
                    next_block = live.next_block_after(batch, next_block)
                    if stop is not None and next_block > stop:
                        return
                # The stream is not available (no stream, Socket.IO 2, refused request) or
                # was lost: poll from where it left off for the rest of this stream.
                use_stream = False
            lib, tip = await live.wait_for_tip(self, pool, next_block, self.poll_seconds)

    async def head_block_num(self) -> int:
        """The head block from ``/v1/chain/get_info`` (for ``--since``/``--until``)."""
        return (await self._hosts()[0].get_info()).head

    async def block_time_ms(self, num: int) -> int:
        """The time of block ``num`` from ``/v1/chain/get_block`` (Hyperion proxies the chain
        API, hyperion.md §2.2)."""
        return await self._hosts()[0].get_block_time(num)

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
            await asyncio.sleep(0)
