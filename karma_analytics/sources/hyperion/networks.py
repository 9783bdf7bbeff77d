"""Known public Hyperion hosts per network (data only).

Third-party services listed by the Hyperion project's endpoint page (hyperion.md §5, last
changed 2023-10-27) and other public material: **not verified** by this project's tests, not
guaranteed to be up, current or complete, and run by operators with their own rate limits
(§1.7). Pass ``--endpoint`` to choose a host yourself. Each entry is a base URL (the source
adds ``/v2/...`` and ``/v1/chain/...``); the first host of a tuple is tried first.
"""

from __future__ import annotations

__all__ = ["CHAIN_IDS", "NETWORKS"]

NETWORKS: dict[str, tuple[str, ...]] = {
    "eos": (
        "https://eos.hyperion.eosrio.io",
        "https://eos.eosusa.io",
        "https://hyperion.paycash.online",
    ),
    "wax": (
        "https://wax.eosrio.io",
        "https://api.waxsweden.org",
        "https://wax.eosusa.io",
        "https://wax.eosphere.io",
        "https://wax.pink.gg",
        "https://wax.blokcrafters.io",
        "https://hyperion.wax.eosdetroit.io",
        "https://wax.cryptolions.io",
    ),
    "telos": (
        "https://mainnet.telos.net",
        "https://telos.eosrio.io",
        "https://telos.eosusa.io",
        "https://telos.eosphere.io",
        "https://telos.caleos.io",
        "https://hyperion.telos.eosdetroit.io",
    ),
    "jungle4": (
        "https://jungle.eosusa.io",
        "https://jungle4.cryptolions.io",
    ),
}

#: Chain ids of the networks (hyperion.md §5): a host answering another id is not used.
CHAIN_IDS: dict[str, str] = {
    "eos": "aca376f206b8fc25a6ed44dbdc66547c36c6c33e3a119ffbeaef943642f0e906",
    "wax": "1064487b3cd1a897ce03ae5b6a865651747e2e152090f99c1d19d44e01aea5a4",
    "telos": "4667b205c6838ef70ff7988f6e8257e8be0e1284a2f59699054a018f743b1d11",
    "jungle4": "73e4385a2708e6d7048834fbc1079f2fabb17b3c125b146af438971e90716c4d",
}
