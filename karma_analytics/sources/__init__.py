"""Upstream sources: each module turns one wire protocol into engine events.

* :mod:`karma_analytics.sources.dfuse` — the dfuse WebSocket Stream API (``get_action_traces``),
  with :mod:`karma_analytics.sources.auth` for the API key -> token exchange.

Import the submodule you need (``from karma_analytics.sources.dfuse import DfuseSource``); this
package imports nothing itself so that ``import karma_analytics`` stays cheap.
"""
