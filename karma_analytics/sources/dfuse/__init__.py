"""The dfuse WebSocket Stream API source (a legacy protocol: no public server since 2024).

* :mod:`.protocol` — endpoint form, the request, error codes (pure);
* :mod:`.decode` — frames -> engine events (pure, the hot path);
* :mod:`.auth` — the API key -> token exchange;
* :mod:`.source` — :class:`DfuseSource`, one connection per stream.
"""

from karma_analytics.sources.dfuse.decode import FrameDecoder
from karma_analytics.sources.dfuse.protocol import (
    FATAL_CODES,
    RETIRED_NETWORKS,
    TRANSIENT_CODES,
    resolve_endpoint,
    server_error_from,
)
from karma_analytics.sources.dfuse.source import DEFAULT_MAX_SIZE, DfuseSource

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FATAL_CODES",
    "NETWORKS",
    "RETIRED_NETWORKS",
    "TRANSIENT_CODES",
    "DfuseSource",
    "FrameDecoder",
    "resolve_endpoint",
    "server_error_from",
]

#: Known public dfuse endpoints by ``--network`` name: none since the hosted service shut down.
NETWORKS: dict[str, tuple[str, ...]] = {}
