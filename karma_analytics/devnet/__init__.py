"""A local, deterministic Antelope chain and a dfuse WebSocket Stream API server over it.

For demos and tests (real sockets, no mocks)::

    from karma_analytics.devnet import DEMO_OPTIONS, DEMO_RANGE, run_devnet_in_thread

    with run_devnet_in_thread(**DEMO_OPTIONS) as devnet:
        ...  # stream blocks DEMO_RANGE from devnet.url (start_block=1, stop after 200,000)
        expected = list(devnet.chain.truth(*DEMO_RANGE))

Defaults (``Chain()`` / ``python -m karma_analytics.devnet serve``):

* seed 7; genesis 2026-11-26T20:00:00Z, block ``n`` at genesis + 0.5 s * n (blocks start at 1);
* 0.25 KARMA transfers per block on average (plus notifications and noise);
* demo range: blocks 1..200,000 = 50,213 transfers from 2026-11-26T20:00:01Z to
  2026-11-27T23:46:39.5Z (two UTC dates); ``DEMO_OPTIONS`` freezes the head at 250,000 with a LIB
  lag of 2 so that a history replay never waits for new blocks;
* server: head 250,000 moving every 0.5 s, LIB = head - 2, pings every 10 s, progress
  throttle 250 ms, 12 (+1) streams per connection, permessage-deflate offered.

Modules: ``chain`` (pure block generator and ``truth``), ``wire`` (frame text), ``server``
(asyncio + websockets), ``testing`` (background-thread runner), ``pytest_plugin`` (fixtures),
``__main__`` (CLI: ``serve`` and ``truth``). Names are imported lazily so that
``import karma_analytics.devnet`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chain import Block, Chain, Trace, Transaction
    from .server import DevnetOptions, DevnetServer, DevnetStats, devnet_server
    from .testing import DEMO_OPTIONS, DEMO_RANGE, DevnetThread, run_devnet_in_thread

__all__ = [
    "DEMO_OPTIONS",
    "DEMO_RANGE",
    "Block",
    "Chain",
    "DevnetOptions",
    "DevnetServer",
    "DevnetStats",
    "DevnetThread",
    "Trace",
    "Transaction",
    "devnet_server",
    "run_devnet_in_thread",
]

_WHERE = {
    "Block": "chain",
    "Chain": "chain",
    "Trace": "chain",
    "Transaction": "chain",
    "DevnetOptions": "server",
    "DevnetServer": "server",
    "DevnetStats": "server",
    "devnet_server": "server",
    "DEMO_OPTIONS": "testing",
    "DEMO_RANGE": "testing",
    "DevnetThread": "testing",
    "run_devnet_in_thread": "testing",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
