"""A deterministic synthetic Antelope chain with KARMA-like token activity (pure).

Every block is a function of ``(seed, block number)`` only: block ``n`` is generated from its own
``random.Random`` seeded by a hash of the chain seed and ``n``, so any block can be produced
without generating the ones before it, and the same seed gives the same chain on every machine.
Nothing here touches sockets, files or the clock; the only state is a memo (LRU) of generated
blocks.

The activity follows antelope-sources.md §7.3 (assumptions, not measurements):

* block ``n`` is produced at ``genesis_ms + 500 * n`` (0.5 s blocks; block numbers start at 1);
  block ids are 64 hex digits whose first 8 are the block number (dfuse §3.2);
* a few thousand valid 12-character accounts with Zipf-like activity plus hubs
  (``therealkarma``, ``karmaairdrop``, ``karma4market``, the exchange ``bigexchange1``);
* amounts in base units (precision 4): a log-normal body, round values and repeated bot amounts;
* memos from empty to exactly 256 UTF-8 bytes, with JSON-looking, CJK and emoji text;
* airdrop bursts (25 ``transfer`` actions per transaction, in periodic windows), an airdrop
  contract sending inline transfers, ``issue`` sending an inline transfer, bot loops;
* noise a collector must ignore: the notifications to ``from``/``to`` (three traces per transfer,
  antelope-sources.md §1.1), other actions of the contract (``powerup``, ``claim`` with an
  inline ``rewarded``), ``eosio.token`` EOS transfers, and failed transactions (kept in the block
  with a non-``executed`` status; a server never emits them).

``global_sequence`` is ``GS_BASE + n * GS_PER_BLOCK + k`` for the k-th executed action trace of
block ``n``: unique and increasing chain-wide, computable per block, and above 2^32 so the
dfuse uint64-as-string rule is always exercised.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ..exceptions import UsageError
from ..model import Transfer, format_asset, is_valid_name, name_to_uint64

__all__ = [
    "AIRDROP",
    "CONTRACT",
    "DEFAULT_GENESIS_MS",
    "DEFAULT_TRANSFERS_PER_BLOCK",
    "EOS_TOKEN",
    "EXCHANGE",
    "GS_BASE",
    "GS_PER_BLOCK",
    "MARKET",
    "Action",
    "Block",
    "Chain",
    "Trace",
    "Transaction",
]

# 2026-11-26T20:00:00Z: with the default density the first 200,000 blocks (~27.8 h) hold about
# 50,000 KARMA transfers and cover three UTC dates (26th evening, all of the 27th, 28th early).
DEFAULT_GENESIS_MS = 1_795_723_200_000
DEFAULT_TRANSFERS_PER_BLOCK = 0.25
BLOCK_MS = 500

CONTRACT = "therealkarma"
AIRDROP = "karmaairdrop"
MARKET = "karma4market"
EXCHANGE = "bigexchange1"
EOS_TOKEN = "eosio.token"
KARMA_SYMBOL = "KARMA"
KARMA_PRECISION = 4

GS_BASE = 8_000_000_000
GS_PER_BLOCK = 100_000
# A block never holds more executed action traces than it has global_sequence slots.
_MAX_TRACES_PER_BLOCK = GS_PER_BLOCK - 1000
_CHUNK = 4096
MAX_TRANSFERS_PER_BLOCK = 5000.0

_MASK64 = (1 << 64) - 1

# Airdrop bursts: 25-transfer transactions only inside a window of _BURST_LEN blocks at the
# start of every _BURST_PERIOD blocks (about 5 minutes every 2.8 hours).
_BURST_PERIOD = 20_000
_BURST_LEN = 600

_ROUND_UNITS = tuple(v * 10_000 for v in (1, 2, 5, 10, 20, 25, 50, 100, 250, 500, 1000, 10_000))
_BOT_UNITS = (5019, 12_345, 7_777_700, 1_000_001)

_FAIRDROP_MEMO = "Karma Fairdrop - Life is beautiful, beautiful, beautiful, beautiful!"
_REWARD_MEMO = "Thanks for POWERING UP with KARMA! Here's your POWER UP reward."
_HUMAN_MEMOS = (
    "thanks!",
    "for the coffee",
    "rent share",
    "gm",
    "Life is beautiful",
    "payment #42 <ok> & done",
    "tip for the great post",
    'he said "hi"',
    "back\\slash and tab\tinside",
    "line one\nline two",
    "good karma to you",
    "refund",
)
_CJK_MEMOS = (
    "谢谢你的帮助",
    "好的因果报应",
    "ありがとうございます",
    "감사합니다 카르마",
    "Karma 🎉🚀 to the moon",
    "Ünïcödé mémo — ça va?",
    "业力转账测试",
)


def _mix64(value: int) -> int:
    """SplitMix64 finaliser: a fast, portable 64-bit hash of an integer."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _hex_digest(text: str, size: int = 32) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def _truncate_utf8(text: str, limit: int = 256) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def _poisson_cdf(lam: float) -> list[float]:
    if lam <= 0:
        return [1.0]
    cdf = []
    term = math.exp(-lam)
    total = 0.0
    k = 0
    limit = int(lam + 12 * math.sqrt(lam) + 20)
    while k <= limit:
        total += term
        cdf.append(total)
        k += 1
        term *= lam / k
    cdf[-1] = 1.0
    return cdf


class Action:
    """The ``act`` of an action: shared by its execution trace and its notifications.

    Transfers keep their fields as values (``from_account``, ``to_account``, ``asset`` as
    ``(units, precision, symbol)``, ``memo``); ``data``, ``hex_data`` and ``digest`` are built
    on first use, so generating a block stays cheap when most of it is never rendered.
    """

    __slots__ = (
        "_data", "_digest", "_hex", "account", "actor", "asset", "cache", "from_account",
        "memo", "name", "ordinal", "to_account", "trx_id",
    )  # fmt: skip

    def __init__(
        self,
        account: str,
        name: str,
        actor: str,
        trx_id: str,
        ordinal: int,
        *,
        from_account: str = "",
        to_account: str = "",
        asset: tuple[int, int, str] | None = None,
        memo: str = "",
        data: dict[str, Any] | None = None,
        hex_data: str | None = None,
    ) -> None:
        self.account = account
        self.name = name
        self.actor = actor
        self.trx_id = trx_id
        self.ordinal = ordinal
        self.from_account = from_account
        self.to_account = to_account
        self.asset = asset
        self.memo = memo
        self._data = data
        self._hex = hex_data
        self._digest: str | None = None
        self.cache: str | None = None  # rendered JSON of `act` (owned by the wire module)

    @property
    def authorization(self) -> tuple[tuple[str, str], ...]:
        return ((self.actor, "active"),)

    @property
    def data(self) -> dict[str, Any]:
        """The ABI-decoded fields, in ABI order."""
        if self._data is None:
            units, precision, symbol = self.asset or (0, 4, "KARMA")
            self._data = {
                "from": self.from_account,
                "to": self.to_account,
                "quantity": format_asset(units, precision, symbol),
                "memo": self.memo,
            }
        return self._data

    @property
    def hex_data(self) -> str:
        """The action data in the ABI binary layout, hex (antelope-sources.md §1.4)."""
        if self._hex is None:
            units, precision, symbol = self.asset or (0, 4, "KARMA")
            memo = self.memo.encode()
            self._hex = (
                _name_hex(self.from_account)
                + _name_hex(self.to_account)
                + units.to_bytes(8, "little", signed=True).hex()
                + _symbol_hex(precision, symbol)
                + _varuint_hex(len(memo))
                + memo.hex()
            )
        return self._hex

    @property
    def digest(self) -> str:
        """``act_digest``: 64 hex, the same for the execution and its notifications."""
        if self._digest is None:
            self._digest = _hex_digest(f"act:{self.trx_id}:{self.ordinal}")
        return self._digest


class Trace:
    """One action trace (an execution of ``act`` at ``receiver``) with its receipt numbers.

    ``ordinal``, ``creator`` and ``closest`` are EOSIO's ``action_ordinal``,
    ``creator_action_ordinal`` and ``closest_unnotified_ancestor_action_ordinal``. The other
    receipt numbers derive from ``global_sequence`` (see the properties).
    """

    __slots__ = ("act", "closest", "creator", "global_sequence", "ordinal", "receiver")

    def __init__(
        self,
        act: Action,
        receiver: str,
        ordinal: int,
        creator: int,
        closest: int,
        global_sequence: int,
    ) -> None:
        self.act = act
        self.receiver = receiver
        self.ordinal = ordinal
        self.creator = creator
        self.closest = closest
        self.global_sequence = global_sequence

    @property
    def recv_sequence(self) -> int:
        # Contracts' receive counters are large (string-encoded), users' small (numbers): both
        # sides of the uint64 rule appear (dfuse §3.2).
        if self.receiver in _CONTRACT_ACCOUNTS:
            return self.global_sequence - 3_000_000_000
        return 1 + (self.global_sequence - GS_BASE) // 3 % 4_000_000_000

    @property
    def auth_sequence(self) -> int:
        return 2_000_000_000 + self.global_sequence * 7 % 5_000_000_000

    @property
    def elapsed(self) -> int:
        """Microseconds of execution (int64 rule)."""
        base = 40 if self.receiver == self.act.account else 5
        return base + _mix64(self.global_sequence) % 360

    @property
    def is_execution(self) -> bool:
        """True for the execution at the contract, False for a notification."""
        return self.receiver == self.act.account

    @property
    def new_row(self) -> bool:
        """A transfer execution whose recipient had no balance row creates one (RAM charged
        to ``from``, as in the KARMA contract)."""
        return (
            self.act.name == "transfer"
            and self.receiver == self.act.account
            and (_mix64(self.global_sequence) >> 8) % 10 == 0
        )


class Transaction:
    """A transaction trace: ``status`` is ``executed`` or a failure (never streamed)."""

    __slots__ = ("_children", "status", "traces", "trx_id")

    def __init__(self, trx_id: str, status: str, traces: list[Trace]) -> None:
        self.trx_id = trx_id
        self.status = status
        self.traces = traces
        self._children: dict[int, list[Trace]] | None = None

    def children(self, trace: Trace) -> list[Trace]:
        """Traces whose closest unnotified ancestor is ``trace`` (dfuse ``inline_traces``)."""
        if self._children is None:
            children: dict[int, list[Trace]] = {}
            for item in self.traces:
                if item.closest:
                    children.setdefault(item.closest, []).append(item)
            self._children = children
        return self._children.get(trace.ordinal, [])


class Block:
    """One block: number, id, time (ms since the epoch, UTC), producer and transactions.

    ``fork`` is 0 for the canonical block, else the fork point of a forked-out variant.
    ``cache`` is free for a server to memoise rendered frames of this block.
    """

    __slots__ = ("cache", "fork", "id", "num", "producer", "time_ms", "transactions")

    def __init__(
        self,
        num: int,
        block_id: str,
        time_ms: int,
        producer: str,
        transactions: list[Transaction],
        fork: int = 0,
    ) -> None:
        self.num = num
        self.id = block_id
        self.time_ms = time_ms
        self.producer = producer
        self.transactions = transactions
        self.fork = fork
        self.cache: dict[Any, Any] = {}


_CONTRACT_ACCOUNTS = frozenset({CONTRACT, AIRDROP, EOS_TOKEN})


class _Plan:
    """An action to execute: notifications it asks for and inline actions it sends."""

    __slots__ = ("act", "inline", "notify")

    def __init__(self, act: Action, notify: tuple[str, ...] = (), inline: tuple = ()) -> None:
        self.act = act
        self.notify = notify
        self.inline = inline


class Chain:
    """A deterministic chain: ``block(n)`` and the expected collector output ``truth()``.

    Args:
        seed: chain seed; the same seed gives the same blocks everywhere.
        transfers_per_block: mean number of KARMA ``transfer`` executions per block (airdrops,
            inline transfers and bot loops included); noise scales with it.
        genesis_ms: time of block 0 in ms since the epoch (UTC); block ``n`` is at
            ``genesis_ms + 500 * n``.
        accounts: how many ordinary user accounts to generate.
        cache_blocks: how many generated blocks to keep (LRU).
        fork_every: in reversible mode, a fork happens at every block number divisible by this
            (0 = never); see :meth:`reversible_events`.
        fork_depth: how many blocks each fork replaces (``1 <= fork_depth < fork_every``).
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        transfers_per_block: float = DEFAULT_TRANSFERS_PER_BLOCK,
        genesis_ms: int = DEFAULT_GENESIS_MS,
        accounts: int = 3000,
        cache_blocks: int = 4096,
        fork_every: int = 0,
        fork_depth: int = 2,
    ) -> None:
        if not 0 <= transfers_per_block <= MAX_TRANSFERS_PER_BLOCK:
            raise UsageError(
                f"transfers_per_block must be in 0..{MAX_TRANSFERS_PER_BLOCK:g}, "
                f"got {transfers_per_block!r}"
            )
        if fork_every and not 1 <= fork_depth < fork_every:
            raise UsageError(
                f"fork_depth must be in 1..fork_every-1 ({fork_every - 1}), got {fork_depth}"
            )
        if accounts < 10:
            raise UsageError(f"accounts must be at least 10, got {accounts}")
        self.seed = seed
        self.transfers_per_block = float(transfers_per_block)
        self.genesis_ms = genesis_ms
        self.fork_every = fork_every
        self.fork_depth = fork_depth
        self._key = _mix64(seed * 0x100000001B3 + 0xC0FFEE)
        self._cache: OrderedDict[tuple[int, int], Block] = OrderedDict()
        self._cache_size = max(1, cache_blocks)
        self._lock = threading.Lock()
        self._nonempty: dict[int, tuple[int, ...]] = {}
        self._build_accounts(accounts)
        self._build_rates()

    # --- set-up ---------------------------------------------------------------------------

    def _build_accounts(self, count: int) -> None:
        rng = random.Random(f"devnet-accounts:{self.seed}")
        syllables = (
            "ka", "ro", "mi", "ta", "zo", "le", "be", "ra", "ny", "qu", "sh", "ve", "lo",
            "ju", "pe", "wi", "xo", "da", "go", "hu", "ch", "ai", "ee", "st",
        )  # fmt: skip
        reserved = {CONTRACT, AIRDROP, MARKET, EXCHANGE, EOS_TOKEN}
        names: list[str] = []
        seen = set(reserved)
        while len(names) < count:
            if rng.random() < 0.6:
                text = ""
                while len(text) < 12:
                    text += syllables[rng.randrange(len(syllables))]
                text = text[: rng.randint(7, 10)]
                text += "".join(rng.choice("12345") for _ in range(12 - len(text)))
            else:
                text = rng.choice("abcdefghijklmnopqrstuvwxyz") + "".join(
                    rng.choice("abcdefghijklmnopqrstuvwxyz12345") for _ in range(11)
                )
            if len(text) == 12 and is_valid_name(text) and text not in seen:
                seen.add(text)
                names.append(text)
        self.accounts: tuple[str, ...] = tuple(names)
        self.bots: tuple[str, ...] = tuple(names[i] for i in (3, 17, 40))
        # Zipf-like activity (antelope-sources.md §7.3: exponent 1.1-1.5).
        cumulative = []
        total = 0.0
        for rank in range(count):
            total += 1.0 / (rank + 1) ** 1.2
            cumulative.append(total)
        self._zipf = cumulative
        self._zipf_total = total
        self.producers: tuple[str, ...] = tuple(
            "blockprod"
            + "".join("abcdefghijklmnopqrstuvwxyz"[(i * 7 + j * 3) % 26] for j in range(3))
            for i in range(21)
        )

    def _build_rates(self) -> None:
        x = self.transfers_per_block
        # Event kinds and their mean count per block (outside airdrop windows).
        self._kinds = (
            ("user", 0.80 * x),
            ("issue", 0.02 * x),
            ("distribute", 0.05 * x / 6.0),
            ("powerup", 0.04 * x + 0.002),
            ("claim", 0.03 * x + 0.002),
            ("eos", 0.30 * x + 0.01),
            ("failed", 0.02 * x + 0.001),
        )
        self._lambda = sum(rate for _, rate in self._kinds)
        self._event_cdf = _poisson_cdf(self._lambda)
        kind_cum = []
        acc = 0.0
        for _, rate in self._kinds:
            acc += rate
            kind_cum.append(acc / self._lambda if self._lambda else 1.0)
        kind_cum[-1] = 1.0
        self._kind_cum = kind_cum
        # 25-transfer airdrop transactions only inside burst windows; ~13% of all transfers.
        self._burst_lambda = 0.13 * x / 25.0 * (_BURST_PERIOD / _BURST_LEN)
        self._burst_cdf = _poisson_cdf(self._burst_lambda)

    # --- public API -----------------------------------------------------------------------

    def block_time_ms(self, num: int) -> int:
        """Time of block ``num`` in ms since the epoch (UTC)."""
        return self.genesis_ms + BLOCK_MS * num

    def block_id(self, num: int, fork: int = 0) -> str:
        """The 64-hex id of block ``num`` (``fork`` != 0: of its forked-out variant)."""
        return f"{num & 0xFFFFFFFF:08x}" + _hex_digest(f"block:{self.seed}:{num}:{fork}", 28)

    def producer(self, num: int) -> str:
        """The producer of block ``num`` (12-block rounds over 21 producers)."""
        return self.producers[(num // 12) % len(self.producers)]

    def block(self, num: int, fork: int = 0) -> Block:
        """Block ``num`` (memoised). ``fork`` != 0 gives the forked-out variant of that fork.

        Raises:
            UsageError: if ``num`` is not in 1..2^32-1.
        """
        key = (num, fork)
        with self._lock:
            block = self._cache.get(key)
            if block is not None:
                self._cache.move_to_end(key)
                return block
        block = self.generate(num, fork)
        with self._lock:
            self._cache[key] = block
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return block

    def truth(
        self, first: int, last: int, *, contract: str = CONTRACT, action: str = "transfer"
    ) -> Iterator[Transfer]:
        """The records a correct collector commits for blocks ``first..last`` (inclusive).

        Traces with ``receiver == act.account == contract`` and ``act.name == action`` in
        executed transactions of canonical blocks, in ``global_sequence`` order. Only
        transfer-shaped actions (``from``, ``to``, ``quantity``, ``memo``) are records.
        """
        for num in range(max(1, first), last + 1):
            block = self.generate(num)
            for trx in block.transactions:
                if trx.status != "executed":
                    continue
                for idx, trace in enumerate(trx.traces):
                    act = trace.act
                    if trace.receiver != contract or act.account != contract or act.name != action:
                        continue
                    data = act.data
                    if act.asset is None or "from" not in data:
                        continue
                    units, precision, symbol = act.asset
                    yield Transfer(
                        block_num=num,
                        block_id=block.id,
                        block_time=block.time_ms,
                        trx_id=trx.trx_id,
                        action_idx=idx,
                        global_sequence=trace.global_sequence,
                        contract=act.account,
                        action=act.name,
                        from_account=data["from"],
                        to_account=data["to"],
                        amount_units=units,
                        precision=precision,
                        symbol=symbol,
                        memo=data["memo"],
                    )

    def reversible_events(self, start: int) -> Iterator[tuple[int, int, int]]:
        """The order in which a reversible (``irreversible_only: false``) stream sees blocks.

        Yields ``(block_num, fork, visible_at)`` from the first block ``>= start`` on, forever:
        ``fork`` is 0 for canonical blocks, else the fork point of a forked-out variant;
        ``visible_at`` is the head block number at which the event happens. With
        ``fork_every = N`` and ``fork_depth = D``, the blocks ``f-D+1..f`` of every fork point
        ``f`` (a multiple of N) are first seen in a forked-out variant and, once block ``f+1``
        is produced, replaced by the canonical ones, which carry equal or lower numbers and
        other ids (dfuse §3.8: no undo, no retraction, no redo). As with dfuse's inclusive
        gate, once the first block ``>= start`` has passed, everything after it passes, even
        lower numbers.
        """
        num = max(1, start)
        every, depth = self.fork_every, self.fork_depth
        if not every:
            while True:
                yield num, 0, num
                num += 1
        while True:
            fork_point = -(-num // every) * every  # the next multiple of `every`, >= num
            window_first = fork_point - depth + 1
            if num >= window_first:
                for n in range(num, fork_point + 1):
                    yield n, fork_point, n
                for n in range(window_first, fork_point + 1):
                    yield n, 0, fork_point + 1
                num = fork_point + 1
            else:
                for n in range(num, window_first):
                    yield n, 0, n
                num = window_first

    # --- generation -----------------------------------------------------------------------

    def _draws(self, num: int, fork: int) -> tuple[int, int, int]:
        """(seed of the block's generator, events, airdrop transactions) of block ``num``."""
        h1 = _mix64((self._key ^ (fork * 0x9E3779B1)) + num)
        h2 = _mix64(h1 ^ 0x5BD1E995)
        count = bisect.bisect_left(self._event_cdf, h1 / 2**64)
        bursts = 0
        if num % _BURST_PERIOD < _BURST_LEN:
            bursts = bisect.bisect_left(self._burst_cdf, h2 / 2**64)
        return h1 ^ h2, count, bursts

    def is_empty(self, num: int, fork: int = 0) -> bool:
        """Whether block ``num`` has no transactions (cheap: no block is generated)."""
        _, count, bursts = self._draws(num, fork)
        return count == 0 and bursts == 0

    def nonempty_between(self, first: int, last: int, every: int = 0) -> list[int]:
        """Canonical block numbers in ``first..last`` that have transactions, merged with the
        multiples of ``every`` (0 = none), ascending. Memoised per chunk of blocks."""
        out: list[int] = []
        chunk = first // _CHUNK
        while chunk * _CHUNK <= last:
            nums = self._nonempty.get(chunk)
            if nums is None:
                base = chunk * _CHUNK
                nums = tuple(n for n in range(max(1, base), base + _CHUNK) if not self.is_empty(n))
                with self._lock:
                    self._nonempty[chunk] = nums
                    if len(self._nonempty) > 4096:
                        self._nonempty.pop(next(iter(self._nonempty)))
            lo = bisect.bisect_left(nums, first)
            hi = bisect.bisect_right(nums, last)
            out.extend(nums[lo:hi])
            chunk += 1
        if every > 0:
            start = -(-first // every) * every
            out = sorted(set(out).union(range(start, last + 1, every)))
        return out

    def generate(self, num: int, fork: int = 0) -> Block:
        """Generate block ``num`` from scratch (no memo); see :meth:`block`."""
        if not 1 <= num <= 0xFFFFFFFF:
            raise UsageError(f"block numbers are 1..4294967295, got {num}")
        seed, count, bursts = self._draws(num, fork)
        block_id = self.block_id(num, fork)
        time_ms = self.block_time_ms(num)
        if count == 0 and bursts == 0:
            return Block(num, block_id, time_ms, self.producer(num), [], fork)
        rng = random.Random(_mix64(seed))
        gen = _BlockGen(self, rng, num, fork)
        kinds = self._kinds
        kind_cum = self._kind_cum
        draw = rng.random
        events = [kinds[bisect.bisect_left(kind_cum, draw())][0] for _ in range(count)]
        events.extend("airdrop" for _ in range(bursts))
        rng.shuffle(events)
        for kind in events:
            gen.event(kind)
        if gen.next_gs > gen.gs_limit:
            raise UsageError(
                f"block {num} needs more than {_MAX_TRACES_PER_BLOCK} action traces; "
                "lower transfers_per_block"
            )
        return Block(num, block_id, time_ms, self.producer(num), gen.transactions, fork)

    def pick_account(self, rng: random.Random) -> str:
        """A sender or recipient: hubs sometimes, else Zipf-like over the user accounts."""
        u = rng.random()
        if u < 0.06:
            return EXCHANGE
        if u < 0.08:
            return MARKET
        index = bisect.bisect_left(self._zipf, rng.random() * self._zipf_total)
        return self.accounts[min(index, len(self.accounts) - 1)]


_NAME_HEX: dict[str, str] = {}
_SYMBOL_HEX: dict[tuple[int, str], str] = {}


def _name_hex(name: str) -> str:
    """Little-endian hex of a name's uint64 (ABI encoding, antelope-sources.md §1.4)."""
    cached = _NAME_HEX.get(name)
    if cached is None:
        cached = name_to_uint64(name).to_bytes(8, "little").hex()
        if len(_NAME_HEX) < 100_000:
            _NAME_HEX[name] = cached
    return cached


def _symbol_hex(precision: int, code: str) -> str:
    cached = _SYMBOL_HEX.get((precision, code))
    if cached is None:
        cached = bytes([precision]).hex() + code.encode().ljust(7, b"\0").hex()
        _SYMBOL_HEX[(precision, code)] = cached
    return cached


def _varuint_hex(value: int) -> str:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return out.hex()


def _asset_hex(units: int, precision: int = KARMA_PRECISION, code: str = KARMA_SYMBOL) -> str:
    return units.to_bytes(8, "little", signed=True).hex() + _symbol_hex(precision, code)


def _string_hex(text: str) -> str:
    raw = text.encode()
    return _varuint_hex(len(raw)) + raw.hex()


_KARMA = (KARMA_PRECISION, KARMA_SYMBOL)


class _BlockGen:
    """Builds the transactions of one block, assigning ordinals and global sequences."""

    def __init__(self, chain: Chain, rng: random.Random, num: int, fork: int) -> None:
        self.chain = chain
        self.rng = rng
        self.random = rng.random
        self.num = num
        self.fork = fork
        self.transactions: list[Transaction] = []
        self.next_gs = GS_BASE + num * GS_PER_BLOCK
        self.gs_limit = self.next_gs + _MAX_TRACES_PER_BLOCK
        self.trx_prefix = f"trx:{chain.seed}:{num}:{fork}:"

    # --- values -----------------------------------------------------------------------------

    def pick(self, seq: tuple) -> Any:
        return seq[int(self.random() * len(seq))]

    def amount(self) -> int:
        u = self.random()
        if u < 0.25:
            return self.pick(_ROUND_UNITS)
        if u < 0.33:
            return self.pick(_BOT_UNITS)
        # Log-normal body around 50 KARMA, sigma of ln = 2.5 (antelope-sources.md §7.3).
        return max(1, min(int(math.exp(self.rng.gauss(13.1, 2.5))), 10**15))

    def memo(self, to: str) -> str:
        u = self.random()
        if u < 0.22:
            return ""
        if u < 0.42:
            return self.pick(_HUMAN_MEMOS)
        if u < 0.55 or to == EXCHANGE:
            return str(100_000 + int(self.random() * 9_999_900_000))
        if u < 0.70:
            return f"action:bet,seed:{self.rng.getrandbits(128):032x}"
        if u < 0.78:
            return f'{{"op":"tip","id":{int(self.random() * 10**6)},"note":"<3 & thanks"}}'
        if u < 0.92:
            return self.pick(_CJK_MEMOS)
        # Long memos up to the 256-byte cap, cut on a character boundary (§1.1: bytes, not
        # characters); some end exactly at 256 bytes with multi-byte characters.
        base = self.pick(_CJK_MEMOS) + " " + _FAIRDROP_MEMO + " "
        text = (base * 8)[: 60 + int(self.random() * 240)]
        return _truncate_utf8(text, 256)

    def pair(self) -> tuple[str, str]:
        pick = self.chain.pick_account
        frm = pick(self.rng)
        to = pick(self.rng)
        while to == frm:
            to = pick(self.rng)
        return frm, to

    # --- actions --------------------------------------------------------------------------

    def transfer(
        self, frm: str, to: str, units: int, memo: str, trx_id: str, ordinal: int,
        actor: str | None = None, contract: str = CONTRACT, symbol: tuple[int, str] = _KARMA,
    ) -> _Plan:  # fmt: skip
        act = Action(
            contract, "transfer", actor or frm, trx_id, ordinal,
            from_account=frm, to_account=to, asset=(units, symbol[0], symbol[1]), memo=memo,
        )  # fmt: skip
        # require_recipient(from), require_recipient(to); notifying the receiver itself is
        # skipped by the chain (issue -> inline transfer from the contract).
        if frm == contract:
            return _Plan(act, (to,))
        return _Plan(act, (frm, to))

    def new_trx_id(self) -> str:
        return _hex_digest(self.trx_prefix + str(len(self.transactions)))

    def event(self, kind: str) -> None:
        trx_id = self.new_trx_id()
        plans: list[_Plan]
        status = "executed"
        chain = self.chain
        if kind == "user":
            frm, to = self.pair()
            units = self.amount()
            if self.random() < 0.05:
                # Bot loop: one sender, one fixed amount, again and again.
                frm = self.pick(chain.bots)
                units = _BOT_UNITS[0]
                to = EXCHANGE
            plans = [self.transfer(frm, to, units, self.memo(to), trx_id, 1)]
        elif kind == "failed":
            frm, to = self.pair()
            plans = [self.transfer(frm, to, self.amount(), "", trx_id, 1)]
            status = self.pick(("hard_fail", "soft_fail", "expired"))
        elif kind == "issue":
            to = chain.pick_account(self.rng)
            units = self.amount()
            issue = Action(
                CONTRACT, "issue", CONTRACT, trx_id, 1,
                data={"to": to, "quantity": format_asset(units, 4, KARMA_SYMBOL), "memo": "Issue"},
                hex_data=_name_hex(to) + _asset_hex(units) + _string_hex("Issue"),
            )  # fmt: skip
            inline = self.transfer(CONTRACT, to, units, "Issue", trx_id, 2, actor=CONTRACT)
            plans = [_Plan(issue, (), (inline,))]
        elif kind == "distribute":
            count = 2 + int(self.random() * 9)
            recipients = [chain.pick_account(self.rng) for _ in range(count)]
            recipients = [r for r in recipients if r != AIRDROP] or [chain.accounts[0]]
            root = Action(
                AIRDROP, "distribute", AIRDROP, trx_id, 1,
                data={"batch": len(recipients)},
                hex_data=len(recipients).to_bytes(4, "little").hex(),
            )  # fmt: skip
            inlines = tuple(
                self.transfer(
                    AIRDROP,
                    to,
                    (1 + int(self.random() * 2500)) * 10_000,
                    _FAIRDROP_MEMO,
                    trx_id,
                    2 + i,
                )
                for i, to in enumerate(recipients)
            )
            plans = [_Plan(root, (), inlines)]
        elif kind == "airdrop":
            # Karma Fairdrop: 25 transfer actions per transaction (antelope-sources.md §1.5).
            plans = []
            for i in range(25):
                to = chain.pick_account(self.rng)
                while to == AIRDROP:
                    to = chain.pick_account(self.rng)
                units = (1 + int(self.random() * 250_000)) * 10_000
                plans.append(self.transfer(AIRDROP, to, units, _FAIRDROP_MEMO, trx_id, i + 1))
        elif kind == "powerup":
            owner = chain.pick_account(self.rng)
            units = self.amount()
            act = Action(
                CONTRACT, "powerup", owner, trx_id, 1,
                data={"owner": owner, "quantity": format_asset(units, 4, KARMA_SYMBOL)},
                hex_data=_name_hex(owner) + _asset_hex(units),
            )  # fmt: skip
            plans = [_Plan(act)]
        elif kind == "claim":
            owner = chain.pick_account(self.rng)
            units = 1 + int(self.random() * 50_000)
            claim = Action(
                CONTRACT, "claim", owner, trx_id, 1, data={"owner": owner},
                hex_data=_name_hex(owner),
            )  # fmt: skip
            # The KARMA contract pays staking rewards with an inline `rewarded` notify action
            # (not a transfer, antelope-sources.md §1.5).
            rewarded = Action(
                CONTRACT, "rewarded", CONTRACT, trx_id, 2,
                data={"to": owner, "quantity": format_asset(units, 4, KARMA_SYMBOL),
                      "memo": _REWARD_MEMO},
                hex_data=_name_hex(owner) + _asset_hex(units) + _string_hex(_REWARD_MEMO),
            )  # fmt: skip
            plans = [_Plan(claim, (), (_Plan(rewarded, (owner,)),))]
        else:  # "eos": another token's transfer, which a collector must ignore
            frm, to = self.pair()
            plans = [
                self.transfer(
                    frm,
                    to,
                    self.amount() // 100 + 1,
                    self.memo(to),
                    trx_id,
                    1,
                    contract=EOS_TOKEN,
                    symbol=(4, "EOS"),
                )
            ]
        self.add_transaction(trx_id, status, plans)

    def add_transaction(self, trx_id: str, status: str, plans: list[_Plan]) -> None:
        """Execute ``plans`` in EOSIO order: an action, then its notifications, then its
        inline actions (depth first); ordinals are assigned when an action is scheduled."""
        executed = status == "executed"
        gs = self.next_gs if executed else 0
        step = 1 if executed else 0
        if len(plans) == 1 and not plans[0].inline:
            # Fast path (most transactions): one action and its notifications.
            act = plans[0].act
            traces = [Trace(act, act.account, 1, 0, 0, gs)]
            for i, account in enumerate(plans[0].notify):
                traces.append(Trace(act, account, 2 + i, 1, 1, gs + (1 + i) * step))
            if executed:
                self.next_gs = gs + len(traces)
            self.transactions.append(Transaction(trx_id, status, traces))
            return
        traces = []
        next_ordinal = len(plans)

        def run(plan: _Plan, ordinal: int, creator: int, closest: int) -> None:
            nonlocal next_ordinal, gs
            act = plan.act
            traces.append(Trace(act, act.account, ordinal, creator, closest, gs))
            gs += step
            first_notified = next_ordinal + 1
            next_ordinal += len(plan.notify)
            first_inline = next_ordinal + 1
            next_ordinal += len(plan.inline)
            for i, account in enumerate(plan.notify):
                traces.append(Trace(act, account, first_notified + i, ordinal, ordinal, gs))
                gs += step
            for i, child in enumerate(plan.inline):
                run(child, first_inline + i, ordinal, ordinal)

        for i, plan in enumerate(plans):
            run(plan, i + 1, 0, 0)
        if executed:
            if gs > self.gs_limit:
                raise UsageError(
                    f"block {self.num} needs more than {_MAX_TRACES_PER_BLOCK} action traces; "
                    "lower transfers_per_block"
                )
            self.next_gs = gs
        self.transactions.append(Transaction(trx_id, status, traces))
