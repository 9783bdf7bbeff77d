"""Fixtures of the collector tests: real devnet servers on loopback (background threads)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from collect_helpers import FROZEN

from karma_analytics.devnet.testing import DevnetThread


@pytest.fixture
def net_factory() -> Iterator[Callable[..., DevnetThread]]:
    """Start devnet servers (``FROZEN`` defaults + options); all stopped at teardown."""
    started: list[DevnetThread] = []

    def start(**options: Any) -> DevnetThread:
        server = DevnetThread(**{**FROZEN, **options})
        server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def net(net_factory: Callable[..., DevnetThread]) -> DevnetThread:
    """One fault-free devnet with a frozen head at ``HEAD``."""
    return net_factory()
