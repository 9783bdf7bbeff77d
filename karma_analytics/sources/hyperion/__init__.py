"""Hyperion History API source: REST backfill in parallel windows, then live (Socket.IO
stream or REST polling at the LIB). See hyperion.md; the modules:

* :mod:`.docs` (pure): documents -> transfer events, every server version;
* :mod:`.rest`: the HTTP client of one host and its error classification;
* :mod:`.backfill`: windows, reorder buffer, host pool;
* :mod:`.live`: past the backfill;
* :mod:`.source`: :class:`HyperionSource`, the :class:`~karma_analytics.sources.base.Source`.
"""

from __future__ import annotations

from .networks import CHAIN_IDS, NETWORKS
from .source import HyperionSource

__all__ = ["CHAIN_IDS", "NETWORKS", "HyperionSource"]
