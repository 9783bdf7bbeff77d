"""SHiP source: a nodeos/Spring ``state_history_plugin`` WebSocket, decoded by our own codec.

Modules: :mod:`.abi` (the node's ABI text, checked against our readers), :mod:`.codec` (the
binary format, pure), :mod:`.decode` (block results -> engine events, pure), :mod:`.source`
(:class:`ShipSource`, the I/O edge). Protocol reference: ship.md.
"""

from __future__ import annotations

from .source import ShipSource

__all__ = ["ShipSource"]
