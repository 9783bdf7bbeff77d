"""Helpers for the devnet Hyperion tests: a server on loopback, paging, the decoding rule."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp

from karma_analytics.devnet.chain import Chain
from karma_analytics.devnet.hyperion import HyperionServer
from karma_analytics.model import format_asset

VERSIONS = ("3.3", "3.5", "4.0.5", "4.0.7")
GS_MAX = 9_007_199_254_740_991


def run(coro: Coroutine[Any, Any, Any], timeout: float = 40.0) -> Any:
    """Run a scenario with a hard deadline so a hung socket fails the test, not CI."""

    async def guarded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[HyperionServer]:
    """A started server (frozen head at 20,000 unless told otherwise), always stopped."""
    server = HyperionServer(**{"head": 20_000, "block_interval": 0, **options})
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def get(session: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any, Any]:
    """GET ``url`` with string params: (status, JSON body or text, headers)."""
    async with session.get(url, params={k: str(v) for k, v in params.items()}) as response:
        text = await response.text()
        try:
            body: Any = __import__("json").loads(text)
        except ValueError:
            body = text
        return response.status, body, response.headers


def window_params(lo: int, hi: int, cursor: int, limit: int) -> dict[str, Any]:
    """The backfill query of hyperion.md §4.2."""
    return {
        "filter": "therealkarma:transfer",
        "sort": "asc",
        "after": lo,
        "before": hi,
        "global_sequence": f"{cursor + 1}-{GS_MAX}",
        "limit": limit,
    }


async def page_window(
    session: aiohttp.ClientSession, url: str, lo: int, hi: int, limit: int, **extra: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every doc of the window by global_sequence cursor; done only at an EMPTY page.

    Returns (docs, pages)."""
    docs: list[dict[str, Any]] = []
    cursor = 0
    pages = 0
    while True:
        params = {**window_params(lo, hi, cursor, limit), **extra}
        status, body, _ = await get(session, url + "/v2/history/get_actions", **params)
        assert status == 200, body
        pages += 1
        actions = body["actions"]
        if not actions:
            return docs, pages
        sequences = [a["global_sequence"] for a in actions]
        assert sequences == sorted(sequences) and sequences[0] > cursor
        docs.extend(actions)
        cursor = sequences[-1]


def decode(docs: list[dict[str, Any]], contract: str = "therealkarma") -> list[tuple]:
    """The test's decoding rule (hyperion.md §4.3): one transfer per receipt whose receiver is
    the contract, keyed by that receipt's global_sequence; the exact ``quantity``."""
    out = []
    for doc in docs:
        act = doc["act"]
        if act["account"] != contract or act["name"] != "transfer":
            continue
        data = act["data"]
        for receipt in doc["receipts"]:
            if receipt["receiver"] == act["account"]:
                out.append(
                    (int(receipt["global_sequence"]), doc["block_num"], doc["trx_id"],
                     data["from"], data["to"], data["quantity"], data["memo"])
                )  # fmt: skip
    return sorted(out)


def truth(chain: Chain, lo: int, hi: int) -> list[tuple]:
    """``chain.truth`` in :func:`decode`'s form."""
    return [
        (t.global_sequence, t.block_num, t.trx_id, t.from_account, t.to_account,
         format_asset(t.amount_units, t.precision, t.symbol), t.memo)
        for t in chain.truth(lo, hi)
    ]  # fmt: skip
