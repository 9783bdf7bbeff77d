"""pytest fixtures for a real devnet dfuse server on loopback.

Load with ``pytest_plugins = ["karma_analytics.devnet.pytest_plugin"]`` in the top-level
``conftest.py``. Fixtures:

* ``devnet``: a started :class:`~karma_analytics.devnet.testing.DevnetThread` with
  :data:`TEST_OPTIONS`, overridable per test with the ``devnet`` marker::

      @pytest.mark.devnet(drop_every=50, head=5000)
      def test_reconnects(devnet):
          collect(devnet.url, ...)
          assert rows == list(devnet.chain.truth(first, last))

* ``devnet_factory``: ``devnet_factory(**options)`` starts more servers (stopped at teardown).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .testing import DevnetThread

__all__ = ["TEST_OPTIONS", "devnet", "devnet_factory"]

# Fast defaults for tests: the head moves every 50 ms (so live tests finish quickly), pings
# every 0.5 s, LIB two blocks behind.
TEST_OPTIONS: dict[str, Any] = {
    "head": 2000,
    "block_interval": 0.05,
    "lib_lag": 2,
    "ping_interval": 0.5,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "devnet(**options): DevnetOptions for the `devnet` fixture of this test"
    )


@pytest.fixture
def devnet(request: pytest.FixtureRequest) -> Iterator[DevnetThread]:
    """A started devnet server (``.url``, ``.auth_url``, ``.chain``, ``.stats`` ...)."""
    marker = request.node.get_closest_marker("devnet")
    options = {**TEST_OPTIONS, **(marker.kwargs if marker else {})}
    server = DevnetThread(**options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def devnet_factory() -> Iterator[Callable[..., DevnetThread]]:
    """Start devnet servers with any options; all are stopped at teardown."""
    started: list[DevnetThread] = []

    def factory(**options: Any) -> DevnetThread:
        server = DevnetThread(**{**TEST_OPTIONS, **options})
        server.start()
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.stop()
