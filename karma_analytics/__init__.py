"""karma_analytics: collect Antelope token transfers exactly once, load them, chart the flows.

Importing the package is cheap: the public names below load their modules on first use, so
``python -m karma_analytics.collect`` never pulls in pandas or matplotlib.

    >>> import karma_analytics as ka
    >>> from karma_analytics.notebook import collect
    >>> collect(demo=True)                             # doctest: +SKIP
    >>> df = ka.load_transfers("data/demo/transfers")  # doctest: +SKIP

``karma_analytics.collect`` is the collector's module (``python -m karma_analytics.collect``);
the notebook functions ``collect`` and ``start_collector`` live in ``karma_analytics.notebook``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "start_collector": "karma_analytics.notebook",
    "load_transfers": "karma_analytics.dataset",
    "dataset_info": "karma_analytics.dataset",
    "verify": "karma_analytics.dataset",
    "flows": "karma_analytics.flows",
    "charts": "karma_analytics.charts",
    "Transfer": "karma_analytics.model",
    "KarmaError": "karma_analytics.exceptions",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'karma_analytics' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.rsplit(".", 1)[1] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
