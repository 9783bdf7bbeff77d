"""A deterministic synthetic Antelope chain with KARMA-like token activity (pure).

Every block is a function of ``(seed, block number)`` only. Canonical blocks are drawn in
aligned chunks (4096 blocks at demo densities, fewer when dense): one numpy PCG64 stream, seeded
by a SeedSequence of the chain seed and the chunk, gives every count, kind, account, amount and
memo of the chunk at once (vectorised); a block's objects are built from those arrays only when
the block is asked for, and empty blocks (most of them at demo densities) never are. So any
block can be produced without generating the ones before it, and the same seed gives the same
chain on every machine (numpy specifies SeedSequence and PCG64 bit for bit; only raw 64-bit
words are drawn and turned into numbers with exact arithmetic). Nothing here touches sockets,
files or the clock; the only state is a memo (LRU) of drawn chunks and generated blocks.

The activity follows antelope-sources.md §7.3 (assumptions, not measurements):

* block ``n`` is produced at ``genesis_ms + 500 * n`` (0.5 s blocks; block numbers start at 1);
  with ``missed_slot_rate`` (off by default) some slots are missed, so later blocks shift by
  whole 0.5 s slots (``Chain.block_time_ms``);
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
  with a non-``executed`` status; a server never emits them);
* with ``twin_rate`` (off by default) some user transfers are sent twice in one transaction:
  two identical ``transfer`` actions (same data, authorization and ``act_digest``), each with
  its own receipts and notifications (the case Hyperion <= 4.0.3 folds into one document).

``global_sequence`` is ``GS_BASE + n * GS_PER_BLOCK + k`` for the k-th executed action trace of
block ``n``: unique and increasing chain-wide, computable per block, and above 2^32 so the
dfuse uint64-as-string rule is always exercised.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import statistics
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

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
# Canonical blocks are drawn in aligned chunks of about this many events (a power of two of
# blocks, at most 4096), see _Segment.
_CHUNK_EVENTS = 4096
# Block numbers of non-empty blocks memoised at most (Chain.nonempty_between): ~10 MB.
_NONEMPTY_HELD = 262_144
MAX_TRANSFERS_PER_BLOCK = 5000.0

_MASK64 = (1 << 64) - 1
# Missed slots are placed per window of this many blocks (Chain.missed_slots).
_SLOT_WINDOW = 1024

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

    @classmethod
    def transfer(
        cls, account: str, actor: str, trx_id: str, ordinal: int, from_account: str,
        to_account: str, asset: tuple[int, int, str], memo: str, hex_data: str, digest: str,
    ) -> Action:  # fmt: skip
        """A ``transfer`` with every field known (the generator's fast path)."""
        act = cls.__new__(cls)
        act.account = account
        act.name = "transfer"
        act.actor = actor
        act.trx_id = trx_id
        act.ordinal = ordinal
        act.from_account = from_account
        act.to_account = to_account
        act.asset = asset
        act.memo = memo
        act._data = None
        act._hex = hex_data
        act._digest = digest
        act.cache = None
        return act

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
        return base + (((self.global_sequence * 0x9E3779B97F4A7C15) & _MASK64) >> 32) % 360

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
            and (((self.global_sequence * 0x9E3779B97F4A7C15) & _MASK64) >> 40) % 10 == 0
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
        missed_slot_rate: mean number of missed 0.5 s slots per produced block (0 = none, the
            default: block ``n`` at ``genesis_ms + 500 * n`` exactly). With it on, a producer
            sometimes misses its slot, so block times stay multiples of 500 ms and strictly
            increasing but with irregular gaps (one or more empty slots): date-to-block
            searches (``get_block`` bisection) are then exercised. Every protocol served from
            this chain sees the same times; see :meth:`block_time_ms`.
        twin_rate: probability (0..1) that a user's KARMA transfer transaction carries the
            same ``transfer`` action twice (0 = never, the default: the chain is exactly the
            one without the option). Twins have equal ``act``, authorization and
            ``act_digest`` (a hash of the action's content in EOSIO) but action ordinals 1
            and 2, distinct ``global_sequence`` values and their own notifications to
            ``from`` and ``to``; :meth:`truth` has two records for such a transaction. Drawn
            per event after every other draw of a chunk, so the option changes nothing else.
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
        missed_slot_rate: float = 0.0,
        twin_rate: float = 0.0,
    ) -> None:
        if not 0.0 <= missed_slot_rate <= 10.0:
            raise UsageError(f"missed_slot_rate must be in 0..10, got {missed_slot_rate}")
        if not 0.0 <= twin_rate <= 1.0:
            raise UsageError(f"twin_rate must be in 0..1, got {twin_rate!r}")
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
        self.missed_slot_rate = float(missed_slot_rate)
        self.twin_rate = float(twin_rate)
        self._slot_windows: OrderedDict[int, tuple[int, list[int]]] = OrderedDict()
        self._key = _mix64(seed * 0x100000001B3 + 0xC0FFEE)
        self._cache: OrderedDict[tuple[int, int], Block] = OrderedDict()
        self._cache_size = max(1, cache_blocks)
        self._lock = threading.Lock()
        self._segments: OrderedDict[tuple[int, int], _Segment] = OrderedDict()
        # The non-empty block numbers of canonical chunks, kept apart from their (large)
        # segments: range queries (Hyperion's get_actions, the stream's history) walk them for
        # every request, over spans wider than the segment memo at dense settings.
        self._nonempty: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._nonempty_held = 0  # block numbers in self._nonempty
        chunk = 4096
        while chunk > 1 and chunk * max(self.transfers_per_block, 0.001) > _CHUNK_EVENTS:
            chunk //= 2
        self._chunk = chunk
        self._last_segment = _Segment.EMPTY
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
        self._zipf = np.array(cumulative, dtype=np.float64)
        self._zipf_total = total
        # Account indices of the vectorised draws: the users, then the two user-like hubs.
        self._names: tuple[str, ...] = (*self.accounts, EXCHANGE, MARKET)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._name_values = np.array([name_to_uint64(n) for n in self._names], dtype=np.uint64)
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
        # The order of the kinds is the order of the _USER.._FAILED codes.
        assert tuple(kind for kind, _ in self._kinds) == _KIND_NAMES[:-1]
        self._lambda = sum(rate for _, rate in self._kinds)
        self._event_cdf = np.array(_poisson_cdf(self._lambda))
        kind_cum = []
        acc = 0.0
        for _, rate in self._kinds:
            acc += rate
            kind_cum.append(acc / self._lambda if self._lambda else 1.0)
        kind_cum[-1] = 1.0
        self._kind_cum = np.array(kind_cum)
        # 25-transfer airdrop transactions only inside burst windows; ~13% of all transfers.
        self._burst_lambda = 0.13 * x / 25.0 * (_BURST_PERIOD / _BURST_LEN)
        self._burst_cdf = np.array(_poisson_cdf(self._burst_lambda))

    def _pick(self, hub: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Senders or recipients (indices into ``_names``): hubs sometimes, else Zipf-like over
        the user accounts; ``hub`` and ``rank`` are raw 64-bit words."""
        users = len(self.accounts)
        index = np.searchsorted(self._zipf, _unit(rank) * self._zipf_total, side="left")
        index = np.minimum(index, users - 1)
        u = _unit(hub)
        return np.where(u < 0.06, users, np.where(u < 0.08, users + 1, index))

    # --- public API -----------------------------------------------------------------------

    def block_time_ms(self, num: int) -> int:
        """Time of block ``num`` in ms since the epoch (UTC).

        ``genesis_ms + 500 * n`` when no slots are missed; else ``genesis_ms + 500 * (n +
        m(n))`` where ``m(n)`` is the number of slots missed before block ``n`` (see
        :meth:`missed_slots`).
        """
        if not self.missed_slot_rate:
            return self.genesis_ms + BLOCK_MS * num
        return self.genesis_ms + BLOCK_MS * (num + self.missed_slots(num))

    def missed_slots(self, num: int) -> int:
        """How many slots were missed before block ``num`` (0 when the option is off).

        Computable for any block on its own: blocks come in windows of ``_SLOT_WINDOW``; a
        window ``w`` misses exactly ``floor(r*W*(w+1)) - floor(r*W*w)`` slots (a closed-form
        running total), placed before seeded random blocks of the window, with repeats
        (several slots missed in a row).
        """
        rate = self.missed_slot_rate
        if not rate or num <= 0:
            return 0
        window, offset = divmod(num, _SLOT_WINDOW)
        with self._lock:
            entry = self._slot_windows.get(window)
        if entry is None:
            base = math.floor(rate * _SLOT_WINDOW * window)
            count = math.floor(rate * _SLOT_WINDOW * (window + 1)) - base
            rng = random.Random(f"devnet-missed-slots:{self.seed}:{window}")
            positions = sorted(rng.randrange(_SLOT_WINDOW) for _ in range(count))
            entry = (base, positions)
            with self._lock:
                self._slot_windows[window] = entry
                if len(self._slot_windows) > 256:
                    self._slot_windows.popitem(last=False)
        base, positions = entry
        return base + bisect.bisect_right(positions, offset)

    def block_id(self, num: int, fork: int = 0) -> str:
        """The 64-hex id of block ``num`` (``fork`` != 0: of its forked-out variant): the block
        number in 8 hex digits, then 56 random ones drawn with the block's chunk."""
        segment, b = self._segment(num, fork)
        return segment.block_id(num, b)

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
        for num in self.nonempty_between(max(1, first), last):
            block = self.generate(num)
            for trx in block.transactions:
                if trx.status != "executed":
                    continue
                for trace in trx.traces:
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
                        action_idx=trace.ordinal - 1,  # model.Transfer
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

    def _segment(self, num: int, fork: int) -> tuple[_Segment, int]:
        """The generated segment holding block ``num`` (``fork``) and the block's index in it.

        Canonical blocks come in aligned chunks of ``self._chunk`` blocks; a forked-out variant
        is a segment of its own (one block), so any block is computable on its own.
        """
        if not fork:
            # Streams walk blocks in order: the last canonical segment first (no lock needed
            # to read one tuple attribute).
            last_segment = self._last_segment
            b = num - last_segment.first
            if 0 <= b < last_segment.size:
                return last_segment, b
        if fork:
            key = (fork, num)
            first, last = num, num
        else:
            index = num // self._chunk
            key = (0, index)
            first, last = max(1, index * self._chunk), index * self._chunk + self._chunk - 1
        segments = self._segments
        with self._lock:
            segment = segments.get(key)
            if segment is not None:
                segments.move_to_end(key)
        if segment is None:
            segment = _Segment(self, fork, first, last)
            with self._lock:
                segments[key] = segment
                if len(segments) > 16:
                    segments.popitem(last=False)
        if not fork:
            self._last_segment = segment
        return segment, num - segment.first

    def is_empty(self, num: int, fork: int = 0) -> bool:
        """Whether block ``num`` has no transactions (cheap: no block is generated)."""
        segment, b = self._segment(num, fork)
        starts = segment.starts
        return starts[b] == starts[b + 1]

    def nonempty_between(self, first: int, last: int, every: int = 0) -> list[int]:
        """Canonical block numbers in ``first..last`` that have transactions, merged with the
        multiples of ``every`` (0 = none), ascending."""
        out: list[int] = []
        size = self._chunk
        num = max(1, first)
        memo = self._nonempty
        while num <= last:
            index = num // size
            with self._lock:
                nums = memo.get(index)
            if nums is None:
                nums = self._segment(num, 0)[0].nonempty
                with self._lock:
                    memo[index] = nums
                    self._nonempty_held += len(nums)
                    while self._nonempty_held > _NONEMPTY_HELD and len(memo) > 1:
                        self._nonempty_held -= len(memo.popitem(last=False)[1])
            lo = bisect.bisect_left(nums, num)
            hi = bisect.bisect_right(nums, last)
            out.extend(nums[lo:hi])
            num = (num // size + 1) * size
        if every > 0:
            start = -(-first // every) * every
            out = sorted(set(out).union(range(start, last + 1, every)))
        return out

    def generate(self, num: int, fork: int = 0) -> Block:
        """Generate block ``num`` from scratch (no block memo); see :meth:`block`."""
        if not 1 <= num <= 0xFFFFFFFF:
            raise UsageError(f"block numbers are 1..4294967295, got {num}")
        segment, b = self._segment(num, fork)
        return segment.block(self, num, b, fork)


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


# --- vectorised draws -----------------------------------------------------------------------
#
# A segment draws every random number it needs from one PCG64 stream seeded by a SeedSequence
# of (chain key, fork, first, last): both are specified bit for bit by numpy and independent of
# the platform. Only raw 64-bit words are drawn; they become floats in [0, 1) by exact scaling
# (53 bits) and integers in [0, n) by a 32x32-bit multiply-shift, so no platform maths enters
# the stream. The log-normal body uses a quantile table built once with ``math`` (as the former
# per-block generator used ``random.gauss``), interpolated with IEEE arithmetic only.

_KIND_NAMES = ("user", "issue", "distribute", "powerup", "claim", "eos", "failed", "airdrop")
_USER, _ISSUE, _DISTRIBUTE, _POWERUP, _CLAIM, _EOS, _FAILED, _AIRDROP = range(8)
# Transfer-shaped parameter sets ("slots") per event; distribute draws 2-10.
_SLOTS = np.array([1, 1, 0, 1, 1, 1, 1, 25], dtype=np.int64)
_STATUSES = ("hard_fail", "soft_fail", "expired")
_LOGNORMAL_BUCKETS = 8192
_LOGNORMAL: np.ndarray | None = None
_M53 = 2.0**-53


def _lognormal_table() -> np.ndarray:
    """Quantiles of the log-normal amount body (antelope-sources.md §7.3: median ~50 KARMA,
    sigma of ln = 2.5), in base units, at ``_LOGNORMAL_BUCKETS + 1`` evenly spaced levels."""
    global _LOGNORMAL
    if _LOGNORMAL is None:
        dist = statistics.NormalDist(13.1, 2.5)
        n = _LOGNORMAL_BUCKETS
        levels = [0.25 / n] + [i / n for i in range(1, n)] + [1 - 0.25 / n]
        table = [max(1, min(int(math.exp(dist.inv_cdf(p))), 10**15)) for p in levels]
        _LOGNORMAL = np.array(table, dtype=np.float64)
    return _LOGNORMAL


def _unit(words: np.ndarray) -> np.ndarray:
    """Floats in [0, 1) from 64-bit words (top 53 bits, exact)."""
    return (words >> np.uint64(11)).astype(np.float64) * _M53


def _below(words: np.ndarray, n: int) -> np.ndarray:
    """Integers in [0, n) from 64-bit words (n < 2^32; multiply-shift of the top 32 bits)."""
    return ((words >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)


_MEMO_CACHE: dict[tuple[int, int], tuple[str, str]] = {}
_MEMO_HEX: dict[str, str] = {}
_SYMBOL_KARMA = int.from_bytes(bytes([KARMA_PRECISION]) + b"KARMA".ljust(7, b"\0"), "little")
_FAIRDROP_HEX = _string_hex(_FAIRDROP_MEMO)
_SYMBOL_EOS = int.from_bytes(bytes([4]) + b"EOS".ljust(7, b"\0"), "little")


def _memo_hex(memo: str) -> str:
    """The ABI ``string`` encoding of a memo (varuint length + UTF-8), hex; memoised."""
    text = _MEMO_HEX.get(memo)
    if text is None:
        text = _string_hex(memo)
        if len(_MEMO_HEX) >= 50_000:
            _MEMO_HEX.clear()
        _MEMO_HEX[memo] = text
    return text


def _memo(code: int, param: int, extra: int) -> tuple[str, str]:
    """The memo text of a slot (see the memo codes in :class:`_Segment`) and its ABI hex."""
    if code == 0:
        return "", "00"
    if 2 <= code <= 4:
        # Unique, short ASCII texts (under 128 bytes: a one-byte length), never memoised.
        if code == 2:
            text = str(param)
        elif code == 3:
            text = f"action:bet,seed:{param:016x}{extra:016x}"
        else:
            text = f'{{"op":"tip","id":{param},"note":"<3 & thanks"}}'
        return text, f"{len(text):02x}{text.encode().hex()}"
    key = (code, param)
    parts = _MEMO_CACHE.get(key)
    if parts is None:
        if code == 1:
            text = _HUMAN_MEMOS[param]
        elif code == 5:
            text = _CJK_MEMOS[param]
        else:
            # Long memos up to the 256-byte cap, cut on a character boundary (§1.1: bytes, not
            # characters); some end exactly at 256 bytes with multi-byte characters.
            base = _CJK_MEMOS[param // 1000] + " " + _FAIRDROP_MEMO + " "
            text = _truncate_utf8((base * 8)[: 60 + param % 1000], 256)
        parts = _MEMO_CACHE[key] = (text, _string_hex(text))
    return parts


class _Segment:
    """The random draws of blocks ``first..last`` (one fork), computed together with numpy.

    Per block: the number of events (Poisson) and airdrop transactions (Poisson, inside burst
    windows only), shuffled together. Per event: its kind, transaction id and status. Per slot
    (a transfer-shaped parameter set; 25 for an airdrop, 2-10 for a distribute, else 1):
    sender, recipient, amount, memo and act digest. Blocks are built from these lists on demand
    (:meth:`block`), so most blocks (empty ones) never become objects.
    """

    __slots__ = (
        "block_ids", "digests", "event_kind", "event_slot", "event_status", "first", "fixed_hex",
        "memo_code", "memo_extra", "memo_param", "nonempty", "size", "slot_from", "slot_to",
        "slot_units", "starts", "trx_ids", "twins",
    )  # fmt: skip

    EMPTY: _Segment  # a placeholder holding no block

    def __init__(self, chain: Chain | None, fork: int, first: int, last: int) -> None:
        self.first = first
        self.size = last - first + 1
        self.twins: frozenset[int] = frozenset()  # events sending their transfer twice
        if chain is None:
            return
        # The per-block, per-event and per-slot values are kept as tuples of ints: the garbage
        # collector stops tracking those, so cached segments cost it nothing.
        seq = np.random.SeedSequence([chain._key, fork, first, last, 0x5E6])
        raw = np.random.PCG64(seq).random_raw
        nblocks = last - first + 1
        nums = np.arange(first, last + 1, dtype=np.int64)
        counts = np.searchsorted(chain._event_cdf, _unit(raw(nblocks)), side="left")
        burst_draw = np.searchsorted(chain._burst_cdf, _unit(raw(nblocks)), side="left")
        bursts = np.where(nums % _BURST_PERIOD < _BURST_LEN, burst_draw, 0)
        totals = counts + bursts
        starts = np.zeros(nblocks + 1, dtype=np.int64)
        np.cumsum(totals, out=starts[1:])
        events = int(starts[-1])
        self.starts = tuple(starts.tolist())
        self.nonempty = tuple((nums[totals > 0]).tolist())
        # Events: kinds by rate, airdrops after the counted ones, then a shuffle per block.
        block_of = np.repeat(np.arange(nblocks), totals)
        position = np.arange(events) - starts[:-1][block_of]
        kinds = np.searchsorted(chain._kind_cum, _unit(raw(events)), side="left")
        kinds = np.where(position >= counts[block_of], _AIRDROP, kinds)
        order = np.lexsort((raw(events), block_of))
        kinds = kinds[order]
        event_words = raw(events)
        slots = _SLOTS[kinds]
        slots = np.where(kinds == _DISTRIBUTE, 2 + _below(event_words, 9).astype(np.int64), slots)
        slot_starts = np.zeros(events + 1, dtype=np.int64)
        np.cumsum(slots, out=slot_starts[1:])
        self.event_kind = tuple(kinds.tolist())
        self.event_slot = tuple(slot_starts.tolist())
        self.event_status = tuple(_below(raw(events), 3).tolist())
        self.trx_ids = raw(4 * events).astype("<u8").tobytes().hex()
        nslots = int(slot_starts[-1])
        slot_kind = np.repeat(kinds, slots)
        # Accounts (indices into chain._names: the users, then EXCHANGE, then MARKET).
        frm = chain._pick(raw(nslots), raw(nslots))
        to = chain._pick(raw(nslots), raw(nslots))
        to = np.where(to == frm, chain._pick(raw(nslots), raw(nslots)), to)
        to = np.where(to == frm, (frm + 1) % len(chain._names), to)
        # Amounts: round values, repeated bot amounts, a log-normal body (§7.3).
        shape = _unit(raw(nslots))
        pick = raw(nslots)
        table = _lognormal_table()
        level = raw(nslots)
        bucket = (level >> np.uint64(64 - 13)).astype(np.int64)
        within = _unit(level << np.uint64(13))
        body = np.floor(table[bucket] + (table[bucket + 1] - table[bucket]) * within)
        units = np.where(
            shape < 0.25,
            np.array(_ROUND_UNITS, dtype=np.int64)[_below(pick, len(_ROUND_UNITS))],
            np.where(
                shape < 0.33,
                np.array(_BOT_UNITS, dtype=np.int64)[_below(pick, len(_BOT_UNITS))],
                np.clip(body, 1, 10**15).astype(np.int64),
            ),
        )
        # Bot loops: one sender, one fixed amount, again and again (user transfers only).
        bot = (slot_kind == _USER) & (_unit(raw(nslots)) < 0.05)
        bot_index = np.array([chain._index[b] for b in chain.bots], dtype=np.int64)
        frm = np.where(bot, bot_index[_below(raw(nslots), len(chain.bots))], frm)
        exchange = len(chain.accounts)
        to = np.where(bot, exchange, to)
        units = np.where(bot, _BOT_UNITS[0], units)
        other = raw(nslots)
        units = np.where(slot_kind == _EOS, units // 100 + 1, units)
        units = np.where(
            slot_kind == _AIRDROP, (1 + _below(other, 250_000).astype(np.int64)) * 10_000, units
        )
        units = np.where(
            slot_kind == _DISTRIBUTE, (1 + _below(other, 2500).astype(np.int64)) * 10_000, units
        )
        units = np.where(slot_kind == _CLAIM, 1 + _below(other, 50_000).astype(np.int64), units)
        # Memo codes: 0 empty, 1 human, 2 numeric (exchange deposits), 3 bet seed, 4 JSON,
        # 5 CJK/emoji, 6 long (up to 256 bytes).
        u = _unit(raw(nslots))
        code = np.select(
            [u < 0.22, u < 0.42, (u < 0.55) | (to == exchange), u < 0.70, u < 0.78, u < 0.92],
            [0, 1, 2, 3, 4, 5],
            6,
        )
        p1, p2 = raw(nslots), raw(nslots)
        param = np.select(
            [code == 1, code == 2, code == 3, code == 4, code == 5, code == 6],
            [
                _below(p1, len(_HUMAN_MEMOS)).astype(np.int64),
                100_000 + np.floor(_unit(p1) * 9_999_900_000).astype(np.int64),
                (p1 >> np.uint64(1)).astype(np.int64),
                _below(p1, 10**6).astype(np.int64),
                _below(p1, len(_CJK_MEMOS)).astype(np.int64),
                (_below(p1, len(_CJK_MEMOS)) * np.uint64(1000) + _below(p2, 240)).astype(np.int64),
            ],
            0,
        )
        self.slot_from = tuple(frm.tolist())
        self.slot_to = tuple(to.tolist())
        self.slot_units = tuple(units.tolist())
        self.memo_code = tuple(code.tolist())
        self.memo_param = tuple(param.tolist())
        self.memo_extra = tuple(p2.tolist())
        self.digests = raw(4 * nslots).astype("<u8").tobytes().hex()
        self.block_ids = raw(4 * nblocks).astype("<u8").tobytes().hex()
        if chain.twin_rate:
            # Twin transfers (Chain twin_rate): drawn after everything else, so that with the
            # option off the stream, hence the chain, is exactly what it is without it.
            twin = (kinds == _USER) & (_unit(raw(events)) < chain.twin_rate)
            self.twins = frozenset(np.flatnonzero(twin).tolist())
        # The fixed part of each transfer's ABI data (from, to, quantity: 32 bytes, §1.4), as
        # one hex text for the whole segment; the memo is appended when a block is built.
        contract_from = (slot_kind == _AIRDROP) | (slot_kind == _DISTRIBUTE)
        fixed = np.empty((nslots, 4), dtype="<u8")
        fixed[:, 0] = np.where(
            contract_from,
            name_to_uint64(AIRDROP),
            np.where(slot_kind == _ISSUE, name_to_uint64(CONTRACT), chain._name_values[frm]),
        )
        fixed[:, 1] = chain._name_values[to]
        fixed[:, 2] = units.astype(np.uint64)
        fixed[:, 3] = np.where(slot_kind == _EOS, _SYMBOL_EOS, _SYMBOL_KARMA)
        self.fixed_hex = fixed.tobytes().hex()

    def block_id(self, num: int, b: int) -> str:
        """The id of block ``num`` (index ``b`` in this segment)."""
        return f"{num & 0xFFFFFFFF:08x}{self.block_ids[64 * b : 64 * b + 56]}"

    def block(self, chain: Chain, num: int, b: int, fork: int) -> Block:
        """Build block ``num`` (index ``b`` in this segment) from the drawn values."""
        first_event, end_event = self.starts[b], self.starts[b + 1]
        block_id = f"{num & 0xFFFFFFFF:08x}{self.block_ids[64 * b : 64 * b + 56]}"
        if chain.missed_slot_rate:
            time_ms = chain.block_time_ms(num)
        else:
            time_ms = chain.genesis_ms + BLOCK_MS * num  # as Chain.block_time_ms / producer
        producer = chain.producers[(num // 12) % len(chain.producers)]
        if first_event == end_event:
            return Block(num, block_id, time_ms, producer, [], fork)
        names = chain._names
        kinds, slot_of, statuses = self.event_kind, self.event_slot, self.event_status
        frm_of, to_of, units_of = self.slot_from, self.slot_to, self.slot_units
        codes, params, extras = self.memo_code, self.memo_param, self.memo_extra
        trx_ids, digests, fixed_hex = self.trx_ids, self.digests, self.fixed_hex
        twins = self.twins
        transactions: list[Transaction] = []
        append = transactions.append
        new_transfer = Action.transfer
        gs = GS_BASE + num * GS_PER_BLOCK
        gs_limit = gs + _MAX_TRACES_PER_BLOCK
        for e in range(first_event, end_event):
            kind = kinds[e]
            s = slot_of[e]
            trx_id = trx_ids[64 * e : 64 * e + 64]
            if twins and e in twins:
                # The same transfer action twice (Chain twin_rate): equal data, authorization
                # and digest; ordinals 1 and 2, each executed then notified (EOSIO order).
                frm = names[frm_of[s]]
                to = names[to_of[s]]
                memo, memo_hex = _memo(codes[s], params[s], extras[s])
                hex_data = fixed_hex[64 * s : 64 * s + 64] + memo_hex
                digest = digests[64 * s : 64 * s + 64]
                asset = (units_of[s], 4, "KARMA")
                plans = [
                    _Plan(
                        new_transfer(
                            CONTRACT, frm, trx_id, i, frm, to, asset, memo, hex_data, digest
                        ),
                        (frm, to),
                    )
                    for i in (1, 2)
                ]
                gs = _add_transaction(append, trx_id, "executed", plans, gs)
                continue
            if kind in (_USER, _EOS):
                # Fast path (most transactions): one transfer and its two notifications.
                frm = names[frm_of[s]]
                to = names[to_of[s]]
                contract, symbol = (CONTRACT, "KARMA") if kind == _USER else (EOS_TOKEN, "EOS")
                memo, memo_hex = _memo(codes[s], params[s], extras[s])
                act = new_transfer(
                    contract, frm, trx_id, 1, frm, to, (units_of[s], 4, symbol), memo,
                    fixed_hex[64 * s : 64 * s + 64] + memo_hex, digests[64 * s : 64 * s + 64],
                )  # fmt: skip
                append(
                    Transaction(
                        trx_id,
                        "executed",
                        [
                            Trace(act, contract, 1, 0, 0, gs),
                            Trace(act, frm, 2, 1, 1, gs + 1),
                            Trace(act, to, 3, 1, 1, gs + 2),
                        ],
                    )
                )
                gs += 3
                continue
            status = "executed"
            plans: list[_Plan]
            if kind == _FAILED:
                frm, to = names[frm_of[s]], names[to_of[s]]
                plans = [_transfer(frm, to, units_of[s], "", trx_id, 1, self, s)]
                status = _STATUSES[statuses[e]]
            elif kind == _ISSUE:
                to = names[to_of[s]]
                units = units_of[s]
                issue = Action(
                    CONTRACT, "issue", CONTRACT, trx_id, 1,
                    data={"to": to, "quantity": format_asset(units, 4, KARMA_SYMBOL),
                          "memo": "Issue"},
                    hex_data=_name_hex(to) + _asset_hex(units) + _string_hex("Issue"),
                )  # fmt: skip
                inline = _transfer(CONTRACT, to, units, "Issue", trx_id, 2, self, s)
                plans = [_Plan(issue, (), (inline,))]
            elif kind == _DISTRIBUTE:
                count = slot_of[e + 1] - s
                root = Action(
                    AIRDROP, "distribute", AIRDROP, trx_id, 1,
                    data={"batch": count}, hex_data=count.to_bytes(4, "little").hex(),
                )  # fmt: skip
                inlines = tuple(
                    _transfer(
                        AIRDROP, names[to_of[s + i]], units_of[s + i], _FAIRDROP_MEMO, trx_id,
                        2 + i, self, s + i,
                    )
                    for i in range(count)
                )  # fmt: skip
                plans = [_Plan(root, (), inlines)]
            elif kind == _AIRDROP:
                # Karma Fairdrop: 25 transfer actions per transaction (antelope-sources.md
                # §1.5), in EOSIO order: each execution, then its two notifications (to the
                # airdrop account and the recipient), whose ordinals follow the 25 actions'.
                traces = []
                add = traces.append
                for i in range(25):
                    slot = s + i
                    to = names[to_of[slot]]
                    act = new_transfer(
                        CONTRACT, AIRDROP, trx_id, i + 1, AIRDROP, to,
                        (units_of[slot], 4, "KARMA"), _FAIRDROP_MEMO,
                        fixed_hex[64 * slot : 64 * slot + 64] + _FAIRDROP_HEX,
                        digests[64 * slot : 64 * slot + 64],
                    )  # fmt: skip
                    add(Trace(act, CONTRACT, i + 1, 0, 0, gs))
                    add(Trace(act, AIRDROP, 26 + 2 * i, i + 1, i + 1, gs + 1))
                    add(Trace(act, to, 27 + 2 * i, i + 1, i + 1, gs + 2))
                    gs += 3
                append(Transaction(trx_id, "executed", traces))
                continue
            elif kind == _POWERUP:
                owner = names[to_of[s]]
                units = units_of[s]
                act = Action(
                    CONTRACT, "powerup", owner, trx_id, 1,
                    data={"owner": owner, "quantity": format_asset(units, 4, KARMA_SYMBOL)},
                    hex_data=_name_hex(owner) + _asset_hex(units),
                )  # fmt: skip
                plans = [_Plan(act)]
            else:  # claim
                owner = names[to_of[s]]
                units = units_of[s]
                claim = Action(
                    CONTRACT, "claim", owner, trx_id, 1, data={"owner": owner},
                    hex_data=_name_hex(owner),
                )  # fmt: skip
                # The KARMA contract pays staking rewards with an inline `rewarded` notify
                # action (not a transfer, antelope-sources.md §1.5).
                rewarded = Action(
                    CONTRACT, "rewarded", CONTRACT, trx_id, 2,
                    data={"to": owner, "quantity": format_asset(units, 4, KARMA_SYMBOL),
                          "memo": _REWARD_MEMO},
                    hex_data=_name_hex(owner) + _asset_hex(units) + _string_hex(_REWARD_MEMO),
                )  # fmt: skip
                plans = [_Plan(claim, (), (_Plan(rewarded, (owner,)),))]
            gs = _add_transaction(append, trx_id, status, plans, gs)
        if gs > gs_limit:
            raise UsageError(
                f"block {num} needs more than {_MAX_TRACES_PER_BLOCK} action traces; "
                "lower transfers_per_block"
            )
        return Block(num, block_id, time_ms, producer, transactions, fork)


_Segment.EMPTY = _Segment(None, 0, 0, -1)
_KARMA = (KARMA_PRECISION, KARMA_SYMBOL)


def _transfer(
    frm: str, to: str, units: int, memo: str, trx_id: str, ordinal: int, segment: _Segment,
    slot: int,
) -> _Plan:  # fmt: skip
    """A KARMA transfer sent by ``frm`` (an inline one when ``frm`` is a contract)."""
    act = Action.transfer(
        CONTRACT, frm, trx_id, ordinal, frm, to, (units, KARMA_PRECISION, KARMA_SYMBOL), memo,
        segment.fixed_hex[64 * slot : 64 * slot + 64] + _memo_hex(memo),
        segment.digests[64 * slot : 64 * slot + 64],
    )  # fmt: skip
    # require_recipient(from), require_recipient(to); notifying the receiver itself is skipped
    # by the chain (issue -> inline transfer from the contract).
    if frm == CONTRACT:
        return _Plan(act, (to,))
    return _Plan(act, (frm, to))


def _add_transaction(append: Any, trx_id: str, status: str, plans: list[_Plan], gs: int) -> int:
    """Execute ``plans`` in EOSIO order: an action, then its notifications, then its inline
    actions (depth first); ordinals are assigned when an action is scheduled. Returns the next
    free global_sequence."""
    executed = status == "executed"
    step = 1 if executed else 0
    start = gs
    if not executed:
        gs = 0
    traces: list[Trace] = []
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
    append(Transaction(trx_id, status, traces))
    return gs if executed else start
