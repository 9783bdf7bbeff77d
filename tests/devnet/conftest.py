"""Devnet tests: fixtures from the devnet pytest plugin (also loadable suite-wide)."""

from __future__ import annotations

import pytest

from karma_analytics.devnet.pytest_plugin import devnet, devnet_factory

__all__ = ["devnet", "devnet_factory"]


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too so that --strict-markers accepts @pytest.mark.devnet even when the
    # top-level conftest does not load the plugin.
    config.addinivalue_line(
        "markers", "devnet(**options): DevnetOptions for the `devnet` fixture of this test"
    )
