"""``/v2/history/get_actions`` semantics of the devnet Hyperion (pure): parameters, errors,
selection.

Everything here follows hyperion.md §1.1 (parameter semantics), §1.4 (errors by version) and §7
(the conformance checklist); the server (``hyperion.py``) supplies the documents, the clock and
what is searchable yet. Dates are resolved against the *chain's* clock ("now" is the head
block's time), since the devnet chain's dates are not the wall clock's.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as _dt
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .hyperion_docs import Doc, stored_doc

__all__ = [
    "MAX_SKIP",
    "VERSIONS",
    "ApiError",
    "Query",
    "Version",
    "parse_js_date",
    "parse_query",
    "select",
]

MAX_SKIP = 10_000  # getSkipLimit (3.3.10+) and ES index.max_result_window
TRACK_DEFAULT = 10_000
GS_MAX = 9_007_199_254_740_991
_ASC_WINDOW_DAYS = 90  # api.max_asc_window_days


@dataclasses.dataclass(frozen=True)
class Version:
    """What differs between the supported Hyperion versions (hyperion.md §0, §1.4, §2, §3)."""

    key: str
    full: str  # /v2/health "version"
    major: int
    handler_status: int  # status of handler-level errors: 400 only from 4.0.7 (c49191b)
    skip_check: bool  # "skip is above maximum ..." since 3.3.10
    asc_guard: bool  # sort=asc needs a bound, v4.0.3+
    health_limits: bool  # /v2/health "limits": absent in 3.3.9, present in 3.5.0-3 and 4.x

    @property
    def v4(self) -> bool:
        return self.major >= 4


VERSIONS: dict[str, Version] = {
    "3.3": Version("3.3", "3.3.9-8", 3, 500, False, False, False),
    "3.5": Version("3.5", "3.5.0-3", 3, 500, True, False, True),
    "4.0.5": Version("4.0.5", "4.0.5", 4, 500, True, True, True),
    "4.0.7": Version("4.0.7", "4.0.7", 4, 400, True, True, True),
}

_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class ApiError(Exception):
    """An error answered as Fastify's default error body (§1.4)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"statusCode": self.status}
        if self.code:
            out["code"] = self.code
        out["error"] = _REASONS.get(self.status, "Error")
        out["message"] = self.message
        return out


def _schema_error(param: str, text: str) -> ApiError:
    # Fastify 4/5 + Ajv 8 text (one error only); the Fastify 3 wording is UNCONFIRMED (§1.4).
    return ApiError(400, f"querystring/{param} {text}", "FST_ERR_VALIDATION")


def _handler_error(version: Version, message: str) -> ApiError:
    return ApiError(version.handler_status, message)


# Primary terms accepted as generic filters without a dot (§1.1 `primaryTerms`).
PRIMARY_TERMS = frozenset(
    {"block_num", "block_id", "global_sequence", "producer", "@timestamp",
     "creator_action_ordinal", "action_ordinal", "cpu_usage_us", "net_usage_words", "trx_id",
     "receipts.receiver", "receipts.global_sequence", "receipts.recv_sequence",
     "receipts.auth_sequence.account", "receipts.auth_sequence.sequence"}
)  # fmt: skip
_EXTENDED = ("transfer", "newaccount", "updateauth", "buyram", "buyrambytes", "delegatebw",
             "undelegatebw", "voteproducer")  # fmt: skip
_KNOWN = frozenset(
    {"limit", "skip", "account", "track", "filter", "sort", "after", "before", "simple",
     "hot_only", "noBinary", "checkLib", "sortedBy", "ignoreCache"}
)  # fmt: skip
_INT_RE = re.compile(r"[+-]?\d+")


@dataclasses.dataclass(frozen=True)
class Filter:
    """One generic filter (``field=value``): terms OR-ed, AND-ed or negated, or a range."""

    field: str
    kind: str  # "term", "or", "and", "not", "range", "match"
    values: tuple[str, ...]


@dataclasses.dataclass
class Query:
    """A validated ``get_actions`` request."""

    limit: int = 10
    skip: int = 0
    asc: bool = False
    codes: tuple[tuple[str | None, str | None], ...] = ()  # filter items (None = any)
    account: str | None = None
    block_lo: int = 1
    block_hi: int | None = None  # None = no upper bound
    gs_lo: int = 0
    gs_hi: int = GS_MAX
    filters: tuple[Filter, ...] = ()
    track: int | None = TRACK_DEFAULT  # None = exact total
    check_lib: bool = False
    simple: bool = False
    hot_only: bool = False
    ignore_cache: bool = False


# --- JavaScript's Date parsing, the parts Hyperion users send --------------------------------

_ISO_RE = re.compile(
    r"([+-]\d{6}|\d{4})(?:-(\d{2})(?:-(\d{2}))?)?"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?"
)


def parse_js_date(text: str) -> int | None:
    """``new Date(text).getTime()`` for ISO-like text, or None for "Invalid Date".

    Date-time forms without an offset are local time in JavaScript; the devnet's local zone is
    UTC (always send ``Z``, §1.1). A bare integer is a year, as in V8 (``new Date("12345")``).
    """
    text = text.strip()
    m = _ISO_RE.fullmatch(text)
    if m is None:
        return None
    year_s, month, day, hour, minute, second, frac, zone = m.groups()
    try:
        year = int(year_s)
        if not 1 <= year <= 9999:
            # Beyond datetime's range: still a valid JS date, far away in either direction.
            return 253402300799999 if year > 0 else -62135596800000
        moment = _dt.datetime(
            year, int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
            int(second or 0), int((frac or "0")[:6].ljust(6, "0")), tzinfo=_dt.UTC,
        )  # fmt: skip
    except ValueError:
        return None
    ms = int(moment.replace(microsecond=0).timestamp()) * 1000 + int(
        (frac or "0")[:3].ljust(3, "0")
    )
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        ms -= sign * (int(digits[:2]) * 60 + int(digits[2:])) * 60_000
    return ms


def _parse_int_prefix(text: str) -> int | None:
    """JavaScript ``parseInt(text)``: the leading integer, or None for NaN."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else None


# --- parameters ------------------------------------------------------------------------------


def _schema_int(params: Mapping[str, str], name: str, minimum: int) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if _INT_RE.fullmatch(raw.strip() or "x") is None:
        raise _schema_error(name, "must be integer")
    value = int(raw)
    if value < minimum:
        raise _schema_error(name, f"must be >= {minimum}")
    return value


def _schema_bool(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise _schema_error(name, "must be boolean")
    return raw == "true"


def _schema_len(params: Mapping[str, str], name: str, low: int, high: int | None) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if len(raw) < low:
        raise _schema_error(name, f"must NOT have fewer than {low} characters")
    if high is not None and len(raw) > high:
        raise _schema_error(name, f"must NOT have more than {high} characters")
    return raw


def _es_error(message: str) -> ApiError:
    # The ES client's ResponseError status (400 for a query ES cannot parse); text UNCONFIRMED.
    return ApiError(400, f"search_phase_execution_exception: {message}")


def parse_query(
    params: Mapping[str, str],
    version: Version,
    *,
    max_limit: int,
    now_ms: int,
    block_at: Callable[[int, bool], int],
) -> Query:
    """Validate ``params`` like Hyperion ``version`` does and build a :class:`Query`.

    Args:
        params: the query string (one value per name).
        max_limit: ``api.limits.get_actions``.
        now_ms: "now" for date bounds and the 90-day ``sort=asc`` window (the head's time).
        block_at: ``block_at(ms, first)`` = the first block at/after ``ms`` (``first``) or the
            last block at/before it, for date-mode bounds on ``@timestamp``.

    Raises:
        ApiError: with the status and message of that version (§1.4).
    """
    q = Query()
    # Schema first (Ajv, in property order), then the handler's checks.
    limit = _schema_int(params, "limit", 1)
    skip = _schema_int(params, "skip", 0)
    q.account = _schema_len(params, "account", 1, 12)
    track = params.get("track")
    filt = _schema_len(params, "filter", 3, None)
    sort = params.get("sort")
    if sort is not None and sort not in ("desc", "asc", "1", "-1"):
        raise _schema_error("sort", "must be equal to one of the allowed values")
    q.simple = _schema_bool(params, "simple")
    q.hot_only = _schema_bool(params, "hot_only")
    _schema_bool(params, "noBinary")
    q.check_lib = _schema_bool(params, "checkLib")
    q.ignore_cache = bool(params.get("ignoreCache"))

    if limit is not None and limit > max_limit:
        raise _handler_error(version, f"limit too big, maximum: {max_limit}")
    q.limit = limit if limit is not None else 10
    q.skip = skip or 0
    if version.skip_check and q.skip > MAX_SKIP:
        raise _handler_error(
            version,
            f"skip is above maximum internal limit: {MAX_SKIP}. please limit your search scope "
            "or use pagination with before/after parameters",
        )
    if q.skip + q.limit > MAX_SKIP:
        # ES index.max_result_window (Hyperion's templates keep the default); status and text
        # as ES reports them (UNCONFIRMED through Hyperion, §1.1).
        raise ApiError(
            500,
            "search_phase_execution_exception: Result window is too large, from + size must be "
            f"less than or equal to: [{MAX_SKIP}] but was [{q.skip + q.limit}]",
        )
    q.asc = sort in ("asc", "1")
    after, before = params.get("after"), params.get("before")
    if q.asc and version.asc_guard:
        _asc_guard(version, after, before, now_ms)
    _apply_time_filter(q, version, after, before, now_ms, block_at)
    if track is not None:
        if track == "true":
            q.track = None
        elif _INT_RE.fullmatch(track) and int(track) > 0:
            q.track = int(track)
        elif track != "false":
            raise ApiError(500, "failed to parse track param")  # plain Error, even in 4.0.7
    if filt:
        items = []
        for item in filt.split(","):
            code, _, name = item.partition(":")
            code_v = code if code and code != "*" else None
            name_v = name if name and name != "*" else None
            if code_v is None and name_v is None:
                continue  # "*:*" is ignored
            items.append((code_v, name_v))
        q.codes = tuple(items)
    q.filters = tuple(_generic_filters(q, params))
    return q


def _asc_guard(version: Version, after: str | None, before: str | None, now_ms: int) -> None:
    def valid(value: str | None) -> bool:
        if not value:
            return False
        number = _parse_int_prefix(value)
        if _INT_RE.fullmatch(value.strip()) and number is not None and number > 0:
            return True
        return parse_js_date(value.replace(" ", "T")) is not None

    if not valid(after) and not valid(before):
        raise _handler_error(
            version,
            'sort=asc requires a valid "after" or "before" (ISO date or block number) to bound '
            "the search",
        )
    # Only a date-looking `after` is window-checked, before the space -> T rewrite (§1.1).
    if after and "T" in after:
        ms = parse_js_date(after)
        if ms is not None and now_ms - ms > _ASC_WINDOW_DAYS * 86_400_000:
            raise _handler_error(
                version, f'sort=asc "after" date must be within the last {_ASC_WINDOW_DAYS} days'
            )


def _apply_time_filter(
    q: Query,
    version: Version,
    after: str | None,
    before: str | None,
    now_ms: int,
    block_at: Callable[[int, bool], int],
) -> None:
    after = after.replace(" ", "T") if after else after
    before = before.replace(" ", "T") if before else before
    if (after and "T" in after) or (before and "T" in before):
        # Date mode on @timestamp, both bounds inclusive; defaults "0" and "now".
        lo_ms = _date_bound(version, after, "after", 0)
        hi_ms = _date_bound(version, before, "before", now_ms)
        q.block_lo = max(1, block_at(lo_ms, True))
        q.block_hi = block_at(hi_ms, False)
        return
    # Block mode: a bound counts when parseInt(value) > 0; the raw string goes to ES.
    for value, is_lo in ((after, True), (before, False)):
        if not value:
            continue
        number = _parse_int_prefix(value)
        if number is None or number <= 0:
            continue  # silently no bound (§1.1 edge semantics)
        if _INT_RE.fullmatch(value.strip()) is None:
            raise _es_error(f'failed to create query: For input string: "{value}"')
        if is_lo:
            q.block_lo = max(1, number)
        else:
            q.block_hi = number


def _date_bound(version: Version, value: str | None, name: str, default: int) -> int:
    if not value:
        return default
    ms = parse_js_date(value)
    if ms is None:
        if version.handler_status == 400:
            raise ApiError(400, f"Invalid time value [{name}]")
        raise ApiError(500, "Invalid time value")
    return ms


def _generic_filters(q: Query, params: Mapping[str, str]) -> Iterator[Filter]:
    for name, value in params.items():
        if name in _KNOWN or ("." not in name and name not in PRIMARY_TERMS):
            continue
        field = name
        prefix = name.split(".", 1)[0]
        if prefix in _EXTENDED:
            field = "@" + name
        if value.startswith("!"):
            yield Filter(field, "not", (value[1:],))
        elif field == "@transfer.memo":
            yield Filter(field, "match", (value,))
        elif "-" in value and field != "@timestamp":
            lo, _, hi = value.partition("-")
            if not lo or not hi:
                raise _es_error(f'failed to create query: For input string: ""  [{name}]')
            if field == "global_sequence" and _INT_RE.fullmatch(lo) and _INT_RE.fullmatch(hi):
                # The backfill cursor (§4.2): also used to start the scan at the right block.
                q.gs_lo, q.gs_hi = max(q.gs_lo, int(lo)), min(q.gs_hi, int(hi))
                continue
            yield Filter(field, "range", (lo, hi))
        elif "," in value:
            yield Filter(field, "or", tuple(value.split(",")))
        elif " " in value:
            yield Filter(field, "and", tuple(value.split(" ")))
        else:
            yield Filter(field, "term", (value,))


# --- selection -------------------------------------------------------------------------------


def _field_values(doc: Doc, field: str) -> list[Any]:
    """Every value of ``field`` (a dotted path) in the stored doc; arrays fan out."""
    if field == "global_sequence":
        return [doc.global_sequence]
    if field == "block_num":
        return [doc.block.num]
    nodes: list[Any] = [stored_doc(doc)]
    for part in field.split("."):
        nxt: list[Any] = []
        for node in nodes:
            if isinstance(node, list):
                for item in node:
                    if isinstance(item, dict) and part in item:
                        value = item[part]
                        nxt.extend(value if isinstance(value, list) else [value])
            elif isinstance(node, dict) and part in node:
                value = node[part]
                nxt.extend(value if isinstance(value, list) else [value])
        nodes = nxt
    return nodes


def _equal(a: Any, b: str) -> bool:
    if isinstance(a, bool):
        return str(a).lower() == b
    if isinstance(a, (int, float)):
        try:
            return float(b) == a
        except ValueError:
            return False
    return str(a) == b


def _in_range(a: Any, lo: str, hi: str) -> bool:
    try:
        return float(lo) <= float(a) <= float(hi)
    except (TypeError, ValueError):
        return str(lo) <= str(a) <= str(hi)


def _matches_filter(doc: Doc, f: Filter) -> bool:
    values = _field_values(doc, f.field)
    if f.kind == "term":
        return any(_equal(v, f.values[0]) for v in values)
    if f.kind == "or":
        return any(_equal(v, t) for t in f.values for v in values)
    if f.kind == "and":
        return all(any(_equal(v, t) for v in values) for t in f.values)
    if f.kind == "not":
        return not any(_equal(v, f.values[0]) for v in values)
    if f.kind == "match":
        words = {w.lower() for w in f.values[0].split()}
        text = " ".join(str(v) for v in values).lower().split()
        return any(w in text for w in words)
    return any(_in_range(v, f.values[0], f.values[1]) for v in values)


def matches(q: Query, doc: Doc) -> bool:
    """Whether ``doc`` matches every term of ``q`` except the block/sequence bounds."""
    if q.codes:
        act = doc.act
        for code, name in q.codes:
            if (code is None or code == act.account) and (name is None or name == act.name):
                break
        else:
            return False
    # account: notified (not stored since 3.x) OR receipts.receiver OR act.authorization.actor.
    if q.account is not None and q.account not in doc.receivers and q.account not in doc.actors:
        return False
    return all(_matches_filter(doc, f) for f in q.filters)


@dataclasses.dataclass
class Selection:
    """The page (docs, or whatever ``take`` returns for them) and the ES-style ``total``."""

    docs: list[Any]
    total: int
    relation: str  # "eq" or "gte"


def _neg(value: int) -> int:
    return -value


def select(
    q: Query,
    blocks_in: Callable[[int, int, bool], Iterable[tuple[Sequence[int], Any]]],
    *,
    hi_block: int,
    lo_block: int = 1,
    count_total: bool = True,
    take: Callable[[Any, int, int], Sequence[Any]] | None = None,
) -> Selection:
    """Run ``q`` over the searchable docs.

    Args:
        blocks_in: ``blocks_in(lo, hi, asc)`` yields, block by block in ``lo..hi`` (descending
            when not ``asc``), ``(sequences, block)``: the ``global_sequence`` of each
            searchable doc matching ``q`` (:func:`matches`), ascending (descending when not
            ``asc``), and a handle on those docs; a block is never scanned doc by doc: the
            sequence range of the cursor is found by bisection.
        hi_block: last block that may hold searchable docs (the index tip).
        lo_block: first indexed block.
        count_total: count ``total`` like ES (up to ``track``); False = report only what the
            scan saw (``relation`` "gte" when it stopped early), for benchmarks.
        take: ``take(block, i, j)`` = the items ``i..j-1`` of a block (default: the handle
            is the list of docs itself).
    """
    lo = max(q.block_lo, lo_block, _block_of(q.gs_lo))
    hi = min(hi_block, q.block_hi if q.block_hi is not None else hi_block, _block_of(q.gs_hi))
    want = q.skip + q.limit
    cap = q.track
    gs_lo, gs_hi = q.gs_lo, q.gs_hi
    page: list[Any] = []
    count = 0
    stopped = False
    asc = q.asc
    if lo <= hi:
        for seqs, block in blocks_in(lo, hi, asc):
            n = len(seqs)
            if not n:
                continue
            if asc:
                i = 0 if seqs[0] >= gs_lo else bisect.bisect_left(seqs, gs_lo)
                j = n if seqs[-1] <= gs_hi else bisect.bisect_right(seqs, gs_hi)
            else:
                i = 0 if seqs[0] <= gs_hi else bisect.bisect_left(seqs, -gs_hi, key=_neg)
                j = n if seqs[-1] >= gs_lo else bisect.bisect_right(seqs, -gs_lo, key=_neg)
            if i >= j:
                continue
            if count < want:
                end = min(j, i + want - count)
                page.extend(take(block, i, end) if take is not None else block[i:end])
            count += j - i
            if count >= want and (not count_total or (cap is not None and count >= cap)):
                stopped = True
                break
    relation = "eq"
    if stopped:
        relation = "gte"
        if count_total and cap is not None:
            count = cap
    return Selection(page[q.skip : want], count, relation)


def match_key(q: Query) -> tuple[Any, ...]:
    """What :func:`matches` depends on (to memoise per-block matches)."""
    return (q.codes, q.account, q.filters)


def _block_of(gs: int) -> int:
    # The devnet's global_sequence layout (chain.py: GS_BASE + n * GS_PER_BLOCK + k) lets a
    # sequence bound become a block bound, as an ES range on a sorted field would prune.
    from .chain import GS_BASE, GS_PER_BLOCK

    if gs <= GS_BASE:
        return 0
    return min((gs - GS_BASE) // GS_PER_BLOCK, 2**32)
