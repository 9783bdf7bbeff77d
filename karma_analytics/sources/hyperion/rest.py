"""HTTP client of one Hyperion host: get_actions pages, health, get_info, get_block (I/O).

One :class:`HyperionHost` per base URL, over one shared ``aiohttp.ClientSession``
(keep-alive connection pool; aiohttp asks for and inflates gzip itself; one total timeout per
request). Bodies are decoded with msgspec (the same JSON numbers as the server sent; no float
is ever used for an amount, docs.py reads ``quantity``).

The client chose aiohttp over httpx by measurement (bench/bench_hyperion.py, part 2).

Error classification (hyperion.md §1.4, §1.7). A source has no retry loop (sources/base.py):
every fault is raised as a :class:`HyperionHttpError` or :class:`ConnectError` whose
``fatal`` flag tells the runner whether backing off can help:

* ``429``: transient, ``retry_after`` = the ``retry-after`` header in seconds (the rate
  limiter's fixed one-minute window, §1.7);
* ``5xx``, a body that is not JSON (proxies and CDNs answer HTML, §1.7), a timeout, a reset:
  transient (``retry_after`` from the header when a 503 sends one);
* other ``4xx``: fatal, with the server's ``message`` (a wrong parameter will not get better).
  Exception: ``limit too big, maximum: N`` is the page-size negotiation, answered by
  :meth:`HyperionHost.get_actions` itself (§1.5) — on ≤4.0.5 and 3.x it arrives as a 500.

The parallel backfill retries a failed *window* by moving it to another host or waiting for
the host's ``retry_after``: that is load balancing across windows (backfill.py), not a retry
of a stream; when every host keeps failing, the error reaches the runner.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from karma_analytics.exceptions import ConnectError, ServerError, redact
from karma_analytics.model import parse_block_time

from .docs import FastDoc

__all__ = [
    "MAX_SEQUENCE",
    "ChainInfo",
    "HyperionHost",
    "HyperionHttpError",
    "Page",
    "new_session",
]

logger = logging.getLogger(__name__)

#: The upper bound sent in ``global_sequence=<a>-<b>``: ES needs both bounds (§1.1) and JS
#: parses the query string as a double, so stay at 2^53 - 1 (§4.2's query).
MAX_SEQUENCE = 9_007_199_254_740_991

_MAXIMUM = re.compile(r"maximum:\s*(\d+)")
_decoder = msgspec.json.Decoder()


class _TypedPage(msgspec.Struct, gc=False):
    actions: list[FastDoc]
    last_indexed_block: int | None = None
    cached: bool = False


_typed_decoder = msgspec.json.Decoder(_TypedPage)


class HyperionHttpError(ServerError):
    """An HTTP answer that is not a usable 200 (or a 200 whose body is not JSON).

    Attributes:
        status: the HTTP status (``0`` when the body, not the status, was wrong).
        retry_after: seconds the server asked to wait (``retry-after``), or ``None``.
        host: the base URL of the host.
    """

    def __init__(
        self,
        host: str,
        status: int,
        server_message: str,
        *,
        retry_after: float | None = None,
        fatal: bool = False,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.host = host
        hint = "backing off" if not fatal else "check the endpoint and the selection"
        super().__init__(f"http_{status}", f"{host}: {server_message}", fatal=fatal, hint=hint)


@dataclass(frozen=True, slots=True)
class ChainInfo:
    """What ``/v1/chain/get_info`` says (§2.2).

    Attributes:
        chain_id: 64 hex digits.
        head: head block number.
        lib: last irreversible block number.
        lib_id: the LIB's block id (``""`` when not sent).
    """

    chain_id: str
    head: int
    lib: int
    lib_id: str


@dataclass(frozen=True, slots=True)
class Page:
    """One ``get_actions`` answer.

    Attributes:
        docs: ``actions[]`` as decoded JSON (dicts), or as :class:`~.docs.FastDoc` structs
            when ``typed``.
        last_indexed_block: the index tip the answer reports, or ``None`` when the host does
            not send it (key absent, e.g. wax.blokcrafters.io 3.3.9, §1.2).
        cached: whether the response came from Hyperion's response cache.
        raw: the body, when ``typed`` (:meth:`dicts` decodes it for the reference path).
    """

    docs: list[Any]
    last_indexed_block: int | None
    cached: bool
    raw: bytes | None = None

    @property
    def typed(self) -> bool:
        return self.raw is not None

    def dicts(self) -> list[Any]:
        """``actions[]`` as dicts (decoded again from ``raw`` when typed)."""
        if self.raw is None:
            return self.docs
        return _page("", _decoder.decode(self.raw)).docs


def new_session(*, connections: int = 64) -> aiohttp.ClientSession:
    """A session for Hyperion hosts: pooled keep-alive connections, gzip, no cookies."""
    connector = aiohttp.TCPConnector(
        limit=connections, limit_per_host=connections, ttl_dns_cache=300
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"Accept": "application/json", "Accept-Encoding": "gzip, deflate"},
        json_serialize=lambda obj: msgspec.json.encode(obj).decode(),
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class HyperionHost:
    """One Hyperion base URL (``https://host``, no ``/v2``) over a shared session.

    Args:
        base_url: the normalized endpoint.
        session: the shared aiohttp session (owned by the caller).
        timeout: seconds for one request, connection included.
        expected_chain_id: refuse the host if its ``get_info`` names another chain.
        page_size: the wanted page size, or ``None`` for the host's maximum.
    """

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 30.0,
        expected_chain_id: str | None = None,
        page_size: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.expected_chain_id = expected_chain_id
        self.page_size = page_size
        self.version: str | None = None
        self.requests = 0

    def __repr__(self) -> str:
        return f"HyperionHost({self.base_url!r})"

    # --- one request --------------------------------------------------------------------

    async def request(
        self, path: str, params: Mapping[str, Any] | None = None, *, body: Any = None
    ) -> tuple[Any, Mapping[str, str]]:
        """One GET (or POST with a JSON ``body``); returns the decoded JSON and the headers.

        Raises:
            HyperionHttpError: a non-200 answer or a body that is not JSON (see the module
                docstring for ``fatal`` and ``retry_after``).
            ConnectError: timeout, refused or reset connection (transient).
        """
        raw, status, headers = await self._fetch(path, params, body)
        return self._decode(path, raw, status, headers), headers

    async def _fetch(
        self, path: str, params: Mapping[str, Any] | None, body: Any
    ) -> tuple[bytes, int, Mapping[str, str]]:
        """One round trip: the body, the status and the headers (I/O errors classified)."""
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params, safe=":,")
        self.requests += 1
        try:
            if body is None:
                context = self.session.get(url, timeout=self.timeout)
            else:
                context = self.session.post(url, json=body, timeout=self.timeout)
            async with context as response:
                raw = await response.read()
                status = response.status
                headers = response.headers
        except TimeoutError:
            raise ConnectError(
                f"{self.base_url}: no answer within {self.timeout.total:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise ConnectError(f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        return raw, status, headers

    def _decode(self, path: str, raw: bytes, status: int, headers: Mapping[str, str]) -> Any:
        """The JSON of a 200 answer, else the error it stands for (see :meth:`request`)."""
        try:
            data = _decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            data = None
            if status == 200:
                raise HyperionHttpError(
                    self.base_url,
                    0,
                    f"{path} answered a body that is not JSON: {raw[:80]!r}",
                    retry_after=_retry_after(headers),
                ) from None
        if status == 200:
            return data
        message = data.get("message") if isinstance(data, dict) else None
        text = str(message) if message else raw[:120].decode("utf-8", "replace").strip()
        text = redact(f"{path} HTTP {status}: {text or 'empty body'}")
        if status == 429 or status >= 500 or data is None:
            raise HyperionHttpError(self.base_url, status, text, retry_after=_retry_after(headers))
        raise HyperionHttpError(self.base_url, status, text, fatal=True)

    # --- chain and health ---------------------------------------------------------------

    async def get_info(self) -> ChainInfo:
        """``/v1/chain/get_info``; checks the chain id against ``expected_chain_id``.

        Raises:
            HyperionHttpError: fatal when the host serves another chain (dropped, §2.3), or
                the answer lacks the fields.
        """
        data, _ = await self.request("/v1/chain/get_info")
        try:
            chain_id = str(data["chain_id"]).lower()
            head = int(data["head_block_num"])
            lib = int(data["last_irreversible_block_num"])
        except (KeyError, TypeError, ValueError):
            # Upstream nodeos errors come back as HTTP 200 with an error body (§2.2).
            raise HyperionHttpError(
                self.base_url, 200, f"get_info answer without chain fields: {str(data)[:120]}"
            ) from None
        if self.expected_chain_id is not None and chain_id != self.expected_chain_id:
            raise HyperionHttpError(
                self.base_url,
                200,
                f"serves chain {chain_id}, not the expected {self.expected_chain_id}; "
                "this host is not used",
                fatal=True,
            )
        lib_id = data.get("last_irreversible_block_id")
        return ChainInfo(chain_id, head, lib, lib_id if isinstance(lib_id, str) else "")

    async def health(self) -> dict[str, Any]:
        """``/v2/health`` (shape by version, §2.1); remembers ``version``."""
        data, _ = await self.request("/v2/health")
        if not isinstance(data, dict):
            raise HyperionHttpError(self.base_url, 200, "health answer is not an object")
        version = data.get("version")
        self.version = version if isinstance(version, str) else None
        return data

    async def discover_page_size(self) -> int | None:
        """The page size to use: the wanted one capped by ``limits.get_actions`` of
        ``/v2/health`` (4.x, 3.5); ``None`` when health does not say (3.3.9: then the first
        ``get_actions`` negotiates from the error's ``maximum: N``)."""
        try:
            health = await self.health()
        except HyperionHttpError as exc:
            if exc.fatal:
                raise
            return self.page_size
        limit = (
            (health.get("limits") or {}).get("get_actions")
            if isinstance(health.get("limits"), dict)
            else None
        )
        if isinstance(limit, int) and limit > 0:
            self.page_size = min(self.page_size or limit, limit)
        elif self.page_size is None:
            self.page_size = 1000  # the reference config's maximum; negotiated down if wrong
        return self.page_size

    async def get_block_time(self, num: int) -> int:
        """The time of block ``num`` in ms (UTC) via ``/v1/chain/get_block`` (for dates.py)."""
        data, _ = await self.request("/v1/chain/get_block", body={"block_num_or_id": num})
        try:
            return parse_block_time(data["timestamp"])
        except (KeyError, TypeError, ValueError):
            raise HyperionHttpError(
                self.base_url, 200, f"get_block {num} answer without a timestamp"
            ) from None

    # --- history ------------------------------------------------------------------------

    async def get_actions(
        self,
        contract: str,
        action: str,
        lo: int,
        hi: int,
        after_sequence: int,
        *,
        ignore_cache: bool = False,
        limit: int | None = None,
        typed: bool = False,
    ) -> Page:
        """One page of ``contract:action`` docs of blocks ``lo..hi`` (inclusive) whose
        ``global_sequence`` is above ``after_sequence``, ascending (§4.2).

        ``after``/``before`` are block numbers, inclusive, and satisfy the 4.0.3+ ``sort=asc``
        guard; the ``global_sequence`` range is the cursor (never ``skip``, never
        ``after=<last block>``, §0.1).

        ``typed``: decode the documents as :class:`~.docs.FastDoc` structs (the backfill's
        hot path); a body they do not fit is decoded as dicts (``Page.typed`` False).
        """
        params: dict[str, Any] = {
            "filter": f"{contract}:{action}",
            "sort": "asc",
            "after": lo,
            "before": hi,
            "global_sequence": f"{after_sequence + 1}-{MAX_SEQUENCE}",
        }
        if ignore_cache:
            params["ignoreCache"] = "true"
        for _ in range(3):
            if limit or self.page_size:
                params["limit"] = min(limit or self.page_size, self.page_size or limit)
            else:
                params.pop("limit", None)
            path = "/v2/history/get_actions"
            try:
                raw, status, headers = await self._fetch(path, params, None)
                if typed and status == 200:
                    try:
                        page = _typed_decoder.decode(raw)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        pass
                    else:
                        tip = page.last_indexed_block
                        return Page(page.actions, tip, page.cached, raw)
                data = self._decode(path, raw, status, headers)
            except HyperionHttpError as exc:
                match = _MAXIMUM.search(exc.server_message)
                if match and "limit" in exc.server_message and self.page_size:
                    maximum = int(match.group(1))
                    # maximum 0: the operator left limits.get_actions unset, so any explicit
                    # limit is refused and only the default page (10) works (§1.4).
                    self.page_size = maximum if maximum > 0 else None
                    logger.info("%s: page size set to %s by the server", self.base_url, maximum)
                    continue
                raise
            return _page(self.base_url, data)
        raise HyperionHttpError(self.base_url, 500, "page size negotiation did not settle")


def _page(host: str, data: Any) -> Page:
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list):
        raise HyperionHttpError(host, 200, "get_actions answer without an actions list")
    tip = data.get("last_indexed_block")
    return Page(
        data["actions"],
        tip if isinstance(tip, int) and not isinstance(tip, bool) else None,
        bool(data.get("cached")),
    )


async def sleep_until(deadline: float) -> None:
    """Sleep until the monotonic ``deadline`` (no-op when past)."""
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
