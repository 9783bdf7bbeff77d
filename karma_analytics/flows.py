"""Token-flow aggregations over a transfers DataFrame (pure pandas/numpy, no I/O).

Every function takes the frame returned by :func:`karma_analytics.dataset.load_transfers`
first (it needs ``from_account``, ``to_account``, ``block_time`` and ``amount`` — or
``amount_units`` with ``precision`` — depending on the function) and returns a DataFrame or
Series with named index and columns. Amounts are in token units (``amount``, float64); counts
are numbers of transfers and are named ``transfers``. Times are UTC.

Amounts of different tokens must not be added up: functions that sum amounts raise
:class:`~karma_analytics.exceptions.UsageError` when the frame holds more than one
``(symbol, precision)``; load one token with ``load_transfers(..., symbol="KARMA")``.

Everything is vectorised: accounts are turned into integer codes once (``pandas.factorize``)
and sums are ``numpy.bincount``/groupby over those codes, so 10 million rows take seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from .exceptions import UsageError

__all__ = [
    "activity",
    "balance_change",
    "edge_list",
    "flow_matrix",
    "net_flow",
    "new_vs_returning",
    "size_distribution",
    "token_symbol",
    "top_accounts",
    "top_recipients",
    "top_senders",
    "volume",
]

By = Literal["amount", "transfers"]
Side = Literal["from", "to"]

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000
# 1970-01-01 was a Thursday; with Monday = 0 that is weekday 3.
_EPOCH_WEEKDAY = 3


# --- helpers -------------------------------------------------------------------------------------


def _require(df: pd.DataFrame, *columns: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise UsageError(f"expected a transfers DataFrame, got {type(df).__name__}")
    missing = [name for name in columns if name not in df.columns]
    if missing:
        raise UsageError(
            f"the frame lacks columns {missing}; load them with load_transfers(columns=...)"
        )


def token_symbol(df: pd.DataFrame) -> str | None:
    """The single token symbol of ``df`` (e.g. ``"KARMA"``), or ``None`` if unknown or empty.

    Raises:
        UsageError: the frame mixes tokens (several symbols or precisions).
    """
    if len(df) == 0:
        return None
    for column in ("symbol", "precision"):
        if column in df.columns:
            values = df[column]
            first = values.iloc[0]
            if not bool((values == first).all()):
                raise UsageError(
                    f"the frame mixes tokens ({sorted(map(str, pd.unique(values)))[:5]} in "
                    f"{column!r}); amounts of different tokens cannot be added: filter one "
                    "with load_transfers(..., symbol='KARMA') or df[df.symbol == 'KARMA']"
                )
    return str(df["symbol"].iloc[0]) if "symbol" in df.columns else None


def _amounts(df: pd.DataFrame) -> np.ndarray:
    """float64 token amounts: the ``amount`` column, else ``amount_units / 10**precision``."""
    token_symbol(df)
    if "amount" in df.columns:
        return df["amount"].to_numpy(dtype=np.float64, na_value=np.nan)
    _require(df, "amount_units", "precision")
    units = df["amount_units"].to_numpy(dtype=np.float64)
    return units / np.power(10.0, df["precision"].to_numpy(dtype=np.int64))


def _weights(df: pd.DataFrame, by: str) -> np.ndarray | None:
    """Per-row weights for ``by``: amounts, or None meaning 'count transfers'."""
    if by == "amount":
        return _amounts(df)
    if by in ("transfers", "count"):
        return None
    raise UsageError(f"by={by!r}: use 'amount' or 'transfers'")


def _factorize(values: pd.Series | np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and uniques, through Arrow's hash table (about 3x pandas.factorize here)."""
    array = pa.array(values)  # zero-copy for Arrow-backed columns and numpy integers
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    encoded = array.dictionary_encode(null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
    dictionary = encoded.dictionary
    if pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type):
        uniques = pd.Index(pd.array(dictionary, dtype=pd.ArrowDtype(dictionary.type)))
    else:
        uniques = pd.Index(dictionary.to_numpy(zero_copy_only=False))
    return codes, uniques


def _account_codes(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Codes of from_account and to_account over one shared vocabulary."""
    from_codes, from_names = _factorize(df["from_account"])
    to_codes, to_names = _factorize(df["to_account"])
    names = from_names.append(to_names.difference(from_names, sort=False))
    # Map the recipients' own codes onto the shared vocabulary (a lookup of uniques only).
    to_codes = names.get_indexer(to_names)[to_codes] if len(to_codes) else to_codes
    return from_codes, to_codes, names


def _name_rank(names: pd.Index) -> np.ndarray:
    """Alphabetical rank of each name (ties in rankings are broken by name, as integers)."""
    order = np.argsort(np.asarray(names.astype(str), dtype=object), kind="stable")
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return rank


def _bincount(codes: np.ndarray, weights: np.ndarray | None, size: int) -> np.ndarray:
    out = np.bincount(codes, weights=weights, minlength=size)
    return out if weights is not None else out.astype(np.int64)


def _check_n(n: int) -> int:
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise UsageError(f"n={n!r}: pass a positive integer")
    return int(n)


def _period_groups(times: pd.Series, freq: str) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Row -> period number, and every period start from the first to the last row.

    Periods are left-closed and labelled by their start, in UTC. Fixed frequencies (``"h"``,
    ``"15min"``, ``"1D"`` ...) are counted from the Unix epoch; calendar ones (``"W"`` weeks
    from Monday, ``"M"``/``"MS"`` months, ``"Q"``/``"QS"``, ``"Y"``/``"YS"``) follow the
    calendar, as :class:`pandas.Period` does.
    """
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        offset = None  # may still be a period alias such as "M"
    index = pd.DatetimeIndex(times)
    index = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
    if isinstance(offset, pd.offsets.Tick):
        step = pd.Timedelta(offset).value  # nanoseconds
        ns = index.as_unit("ns").asi8
        bins = ns // step
        first, last = int(bins.min()), int(bins.max())
        labels = pd.DatetimeIndex(
            np.arange(first, last + 1, dtype=np.int64) * step, tz="UTC"
        ).as_unit(index.unit)
        return (bins - first).astype(np.intp), labels
    naive = index.tz_localize(None)
    periods = None
    text = str(freq)
    # Offset aliases name period ends or starts ("ME", "MS"); Period wants the plain one ("M").
    for name in dict.fromkeys((text, text.removesuffix("S"), text.removesuffix("E"))):
        try:
            periods = naive.to_period(name)
            break
        except (ValueError, TypeError):
            continue
    if periods is None:
        raise UsageError(f"freq={freq!r} is not a pandas frequency such as 'h', '1D', 'W', 'MS'")
    if periods.freq.n != 1:
        raise UsageError(
            f"freq={freq!r}: multiples of calendar periods are not supported; use a fixed "
            "frequency such as '14D'"
        )
    ordinals = periods.asi8
    first, last = int(ordinals.min()), int(ordinals.max())
    span = pd.period_range(start=periods[ordinals.argmin()], periods=last - first + 1)
    labels = span.start_time.tz_localize("UTC").as_unit(index.unit)
    return (ordinals - first).astype(np.intp), labels


def _empty_times(df: pd.DataFrame) -> pd.DatetimeIndex:
    dtype = df["block_time"].dtype if "block_time" in df.columns else "datetime64[ms, UTC]"
    return pd.DatetimeIndex([], dtype=dtype, name="period")


# --- over time -----------------------------------------------------------------------------------


def volume(df: pd.DataFrame, freq: str = "1D") -> pd.DataFrame:
    """Transferred amount and number of transfers per period.

    Args:
        df: transfers (``block_time`` and amounts).
        freq: a pandas frequency (``"h"``, ``"1D"``, ``"W"``, ``"MS"`` ...); bins as
            ``DataFrame.resample`` makes them, in UTC.

    Returns:
        Index ``period`` (period start, UTC) with every period between the first and the last
        transfer, columns ``amount`` (token units) and ``transfers``.
    """
    _require(df, "block_time")
    if len(df) == 0:
        return pd.DataFrame(
            {"amount": pd.Series([], dtype=np.float64), "transfers": pd.Series([], dtype=np.int64)},
            index=_empty_times(df),
        )
    amounts = _amounts(df)
    codes, labels = _period_groups(df["block_time"], freq)
    out = pd.DataFrame(
        {
            "amount": _bincount(codes, amounts, len(labels)),
            "transfers": _bincount(codes, None, len(labels)),
        },
        index=labels.rename("period"),
    )
    return out


# --- accounts ------------------------------------------------------------------------------------


def top_accounts(
    df: pd.DataFrame, n: int = 10, *, side: Side = "from", by: By = "amount"
) -> pd.DataFrame:
    """The ``n`` accounts that sent (``side="from"``) or received (``side="to"``) the most.

    Args:
        df: transfers.
        n: how many accounts.
        side: ``"from"`` for senders, ``"to"`` for recipients.
        by: rank by ``"amount"`` (token units) or by number of ``"transfers"``.

    Returns:
        Index ``account``, columns ``amount`` and ``transfers``, sorted by ``by`` descending
        (ties by the other column, then by name), at most ``n`` rows.
    """
    n = _check_n(n)
    if side not in ("from", "to"):
        raise UsageError(f"side={side!r}: use 'from' or 'to'")
    column = f"{side}_account"
    _require(df, column)
    _weights(df, by)  # validates `by` before any work
    amounts = _amounts(df) if len(df) else np.zeros(0)
    codes, names = _factorize(df[column])
    table = pd.DataFrame(
        {
            "amount": _bincount(codes, amounts, len(names)),
            "transfers": _bincount(codes, None, len(names)),
        },
        index=pd.Index(names, name="account"),
    )
    return _rank(table, by, n)


def _rank(table: pd.DataFrame, by: str, n: int | None) -> pd.DataFrame:
    by = "transfers" if by == "count" else by
    other = "transfers" if by == "amount" else "amount"
    order = np.lexsort((_name_rank(table.index), -table[other].to_numpy(), -table[by].to_numpy()))
    if n is not None:
        order = order[:n]
    return table.iloc[order]


def top_senders(df: pd.DataFrame, n: int = 10, *, by: By = "amount") -> pd.DataFrame:
    """The ``n`` biggest senders; see :func:`top_accounts`."""
    return top_accounts(df, n, side="from", by=by)


def top_recipients(df: pd.DataFrame, n: int = 10, *, by: By = "amount") -> pd.DataFrame:
    """The ``n`` biggest recipients; see :func:`top_accounts`."""
    return top_accounts(df, n, side="to", by=by)


def net_flow(df: pd.DataFrame) -> pd.DataFrame:
    """Per account: received, sent and their difference.

    Returns:
        Index ``account``; columns ``received``, ``sent``, ``net`` (= received - sent, token
        units), ``transfers_in``, ``transfers_out``; sorted by ``net`` descending (biggest
        gainers first, biggest spenders last), ties by name.
    """
    _require(df, "from_account", "to_account")
    amounts = _amounts(df) if len(df) else np.zeros(0)
    from_codes, to_codes, names = _account_codes(df)
    size = len(names)
    received = _bincount(to_codes, amounts, size)
    sent = _bincount(from_codes, amounts, size)
    table = pd.DataFrame(
        {
            "received": received,
            "sent": sent,
            "net": received - sent,
            "transfers_in": _bincount(to_codes, None, size),
            "transfers_out": _bincount(from_codes, None, size),
        },
        index=pd.Index(names, name="account"),
    )
    order = np.lexsort((_name_rank(table.index), -table["net"].to_numpy()))
    return table.iloc[order]


def _top_by_activity(
    from_codes: np.ndarray,
    to_codes: np.ndarray,
    names: pd.Index,
    weights: np.ndarray | None,
    n: int,
) -> np.ndarray:
    """Codes of the ``n`` accounts with the most sent + received (ties by name)."""
    size = len(names)
    total = _bincount(from_codes, weights, size) + _bincount(to_codes, weights, size)
    order = np.lexsort((_name_rank(names), -total))
    return order[:n]


def flow_matrix(
    df: pd.DataFrame, n: int = 10, *, by: By = "amount", other: str = "other"
) -> pd.DataFrame:
    """Amounts (or counts) sent between the ``n`` most active accounts, the rest as ``other``.

    The top accounts are ranked by sent + received ``by``. Every transfer lands in one cell,
    so the matrix sums to the frame's total.

    Args:
        df: transfers.
        n: number of named accounts.
        by: ``"amount"`` (token units) or ``"transfers"``.
        other: label of the group of all other accounts (must not be a top account's name).

    Returns:
        A square frame: index ``from_account`` (senders), columns ``to_account``
        (recipients), both the top accounts in rank order then ``other`` (present only if
        some transfer involves another account).
    """
    n = _check_n(n)
    _require(df, "from_account", "to_account")
    weights = _weights(df, by)
    from_codes, to_codes, names = _account_codes(df)
    top = _top_by_activity(from_codes, to_codes, names, weights, n)
    labels = [str(name) for name in names[top]]
    if other in labels:
        raise UsageError(f"other={other!r} is also an account name; pass another label")
    # Account code -> matrix slot: rank for top accounts, k (= "other") for the rest.
    k = len(top)
    slot = np.full(len(names), k, dtype=np.intp)
    slot[top] = np.arange(k)
    size = k + 1
    cells = slot[from_codes] * size + slot[to_codes]
    matrix = _bincount(cells, weights, size * size).reshape(size, size)
    has_other = len(names) > k
    if not has_other:
        matrix = matrix[:k, :k]
    else:
        labels = [*labels, other]
    return pd.DataFrame(
        matrix,
        index=pd.Index(labels, name="from_account"),
        columns=pd.Index(labels, name="to_account"),
    )


def balance_change(
    df: pd.DataFrame, accounts: str | Iterable[str], *, freq: str | None = None
) -> pd.DataFrame:
    """Cumulative balance change (received - sent) of chosen accounts over time.

    This is the change since the first transfer in ``df``, not the on-chain balance (the
    opening balance is unknown).

    Args:
        df: transfers.
        accounts: one account name or several.
        freq: ``None`` for a value after every block time where a chosen account moved;
            a pandas frequency for the value at the end of every period (periods without
            movement repeat the previous value).

    Returns:
        Index ``block_time`` (``freq=None``) or ``period`` (period start), one column per
        account (columns named ``account``), token units.
    """
    _require(df, "from_account", "to_account", "block_time")
    names = [accounts] if isinstance(accounts, str) else [str(a) for a in accounts]
    if not names:
        raise UsageError("accounts is empty; pass at least one account name")
    names = list(dict.fromkeys(names))
    involved = (df["from_account"].isin(names) | df["to_account"].isin(names)).to_numpy(dtype=bool)
    amounts = _amounts(df)[involved] if len(df) else np.zeros(0)
    # Only the three columns needed, never a copy of the whole frame.
    senders = df["from_account"][involved]
    recipients = df["to_account"][involved]
    times = df["block_time"][involved]
    deltas = []
    for name in names:  # a loop over the few chosen accounts, not over rows
        incoming = (recipients == name).to_numpy(dtype=bool)
        outgoing = (senders == name).to_numpy(dtype=bool)
        deltas.append(np.where(incoming, amounts, 0.0) - np.where(outgoing, amounts, 0.0))
    columns = pd.Index(names, name="account")
    if len(times) == 0:
        return pd.DataFrame(
            np.zeros((0, len(names))),
            index=_empty_times(df).rename("block_time" if freq is None else "period"),
            columns=columns,
        )
    if freq is None:
        ms = _epoch_ms(times)
        stamps, codes = np.unique(ms, return_inverse=True)
        index = pd.DatetimeIndex(
            pd.to_datetime(stamps, unit="ms", utc=True), name="block_time"
        ).as_unit("ms")
    else:
        codes, labels = _period_groups(times, freq)
        index = labels.rename("period")
    sums = np.column_stack([_bincount(codes, delta, len(index)) for delta in deltas])
    return pd.DataFrame(np.cumsum(sums, axis=0), index=index, columns=columns)


# --- distributions -------------------------------------------------------------------------------


def size_distribution(
    df: pd.DataFrame, *, bins: int | Sequence[float] | None = None, per_decade: int = 4
) -> pd.DataFrame:
    """How many transfers (and how much) fall in each transfer-size bin, on a log scale.

    Args:
        df: transfers.
        bins: ``None`` for ``per_decade`` bins per power of ten from the decade of the smallest
            to past the largest amount; an int for that many log-spaced bins over the data
            range; or explicit increasing edges in token units.
        per_decade: bins per power of ten when ``bins`` is ``None``.

    Returns:
        One row per bin (index ``bin``): ``low`` (inclusive), ``high`` (exclusive; the last
        bin includes its high edge), ``transfers``, ``amount`` (sum within the bin). Amounts
        <= 0 are not counted (a token transfer is always positive).
    """
    amounts = _amounts(df) if len(df) else np.zeros(0)
    amounts = amounts[amounts > 0]
    edges = _log_edges(amounts, bins, per_decade)
    # searchsorted + bincount: one binary search per row, no sort (np.histogram sorts the data
    # for uneven bins). Bins are [low, high); the last one also takes its high edge.
    slots = np.searchsorted(edges, amounts, side="right") - 1
    slots[amounts == edges[-1]] = len(edges) - 2
    inside = (slots >= 0) & (slots < len(edges) - 1)
    counts = np.bincount(slots[inside], minlength=len(edges) - 1)
    sums = np.bincount(slots[inside], weights=amounts[inside], minlength=len(edges) - 1)
    return pd.DataFrame(
        {
            "low": edges[:-1],
            "high": edges[1:],
            "transfers": counts.astype(np.int64),
            "amount": sums,
        },
        index=pd.RangeIndex(len(counts), name="bin"),
    )


def _log_edges(
    amounts: np.ndarray, bins: int | Sequence[float] | None, per_decade: int
) -> np.ndarray:
    if bins is not None and not isinstance(bins, int | np.integer):
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0) or edges[0] <= 0:
            raise UsageError("bins: pass at least two increasing positive edges")
        return edges
    if len(amounts) == 0:
        low, high = 0.0, 1.0
    else:
        low, high = float(amounts.min()), float(amounts.max())
    if bins is not None:
        if bins < 1:
            raise UsageError(f"bins={bins!r}: pass a positive number of bins")
        if len(amounts) == 0 or low == high:
            low, high = 10.0 ** np.floor(np.log10(low)) if low > 0 else 1.0, (high or 1.0) * 10
        return np.logspace(np.log10(low), np.log10(high), int(bins) + 1)
    if not isinstance(per_decade, int) or per_decade < 1:
        raise UsageError(f"per_decade={per_decade!r}: pass a positive integer")
    if len(amounts) == 0:
        return np.array([1.0, 10.0])
    first = int(np.floor(np.log10(low) * per_decade + 1e-9))
    last = int(np.floor(np.log10(high) * per_decade + 1e-9)) + 1
    steps = np.arange(first, last + 1)
    # Exact powers of ten at whole decades so that 0.1, 1, 10 land on edges, not beside them.
    edges = np.array(
        [
            10.0 ** (s // per_decade) if s % per_decade == 0 else 10.0 ** (s / per_decade)
            for s in steps
        ]
    )
    if edges[0] > low:  # float rounding of log10: widen by one step
        edges = np.concatenate([[10.0 ** ((first - 1) / per_decade)], edges])
    if edges[-1] <= high:
        edges = np.concatenate([edges, [10.0 ** ((last + 1) / per_decade)]])
    return edges


def activity(df: pd.DataFrame, *, by: By = "transfers") -> pd.DataFrame:
    """Transfers (or amount) by weekday and hour of day, UTC.

    Returns:
        7 x 24 frame: index ``weekday`` (``Monday`` .. ``Sunday``), columns ``hour``
        (0 .. 23); every cell present, zeros where nothing happened.
    """
    _require(df, "block_time")
    weights = _weights(df, by) if len(df) else (None if by != "amount" else np.zeros(0))
    ms = _epoch_ms(df["block_time"])
    hours = (ms // _MS_PER_HOUR) % 24
    weekdays = (ms // _MS_PER_DAY + _EPOCH_WEEKDAY) % 7
    grid = _bincount(weekdays * 24 + hours, weights, 7 * 24).reshape(7, 24)
    return pd.DataFrame(
        grid,
        index=pd.Index(WEEKDAYS, name="weekday"),
        columns=pd.RangeIndex(24, name="hour"),
    )


def _epoch_ms(times: pd.Series) -> np.ndarray:
    """Milliseconds since the epoch (UTC) of a datetime column, any unit or timezone."""
    values = pd.DatetimeIndex(times)
    if values.tz is not None:
        values = values.tz_convert("UTC")
    return values.as_unit("ms").asi8


def new_vs_returning(
    df: pd.DataFrame, freq: str = "1D", *, side: Literal["both", "from", "to"] = "both"
) -> pd.DataFrame:
    """Active accounts per period, split into first-timers and returning ones.

    An account is *new* in the period of its first transfer in ``df`` and *returning* in any
    later period where it is active. So the first period counts everyone as new: load some
    history before the window you study.

    Args:
        df: transfers.
        freq: a pandas frequency (resample binning, UTC).
        side: count accounts as senders or recipients (``"both"``), senders only, or
            recipients only.

    Returns:
        Index ``period``; columns ``new``, ``returning``, ``active`` (= new + returning).
    """
    _require(df, "block_time")
    if side not in ("both", "from", "to"):
        raise UsageError(f"side={side!r}: use 'both', 'from' or 'to'")
    if len(df) == 0:
        zeros = pd.Series([], dtype=np.int64)
        return pd.DataFrame(
            {"new": zeros, "returning": zeros, "active": zeros}, index=_empty_times(df)
        )
    periods, labels = _period_groups(df["block_time"], freq)
    if side == "both":
        from_codes, to_codes, names = _account_codes(df)
        codes = np.concatenate([from_codes, to_codes])
        periods = np.concatenate([periods, periods])
    else:
        codes, names = _factorize(df[f"{side}_account"])
    count = len(labels)
    # Each (account, period) pair once: one int key, hashed (no sort of rows).
    pairs = pd.unique(codes.astype(np.int64) * count + periods)
    pair_periods = pairs % count
    # First period of each account (every account has at least one row, so no gaps remain).
    first = np.full(len(names), count, dtype=np.intp)
    np.minimum.at(first, codes, periods)
    active = np.bincount(pair_periods, minlength=count)
    new = np.bincount(first, minlength=count)
    return pd.DataFrame(
        {"new": new, "returning": active - new, "active": active},
        index=labels.rename("period"),
    ).astype(np.int64)


# --- graph ---------------------------------------------------------------------------------------


def edge_list(df: pd.DataFrame, *, min_transfers: int = 1) -> pd.DataFrame:
    """One row per (sender, recipient) pair, ready for graph tools.

    For example ``networkx.from_pandas_edgelist(edges, "from_account", "to_account",
    edge_attr=["amount", "transfers"], create_using=networkx.DiGraph)``.

    Args:
        df: transfers.
        min_transfers: drop pairs with fewer transfers than this.

    Returns:
        Columns ``from_account``, ``to_account``, ``amount`` (token units), ``transfers``;
        sorted by amount descending (ties by transfers, then names); RangeIndex.
    """
    _require(df, "from_account", "to_account")
    amounts = _amounts(df) if len(df) else np.zeros(0)
    from_codes, to_codes, names = _account_codes(df)
    size = max(len(names), 1)
    keys = from_codes.astype(np.int64) * size + to_codes
    pair_codes, pairs = _factorize(keys)
    pairs = pairs.to_numpy(dtype=np.int64)
    sums = _bincount(pair_codes, amounts, len(pairs))
    counts = _bincount(pair_codes, None, len(pairs))
    keep = counts >= min_transfers
    pairs, sums, counts = pairs[keep], sums[keep], counts[keep]
    senders, recipients = pairs // size, pairs % size
    rank = _name_rank(names)
    # Sort on numbers only (name ranks break ties); strings are gathered once, at the end.
    # Three stable argsorts, least significant key first, beat one 4-key lexsort by ~2x.
    order = np.argsort(rank[senders] * size + rank[recipients], kind="stable")
    order = order[np.argsort(-counts[order], kind="stable")]
    order = order[np.argsort(-sums[order], kind="stable")]
    senders, recipients = senders[order], recipients[order]
    edges = pd.DataFrame(
        {
            "from_account": pd.Series(names[senders], dtype=df["from_account"].dtype),
            "to_account": pd.Series(names[recipients], dtype=df["to_account"].dtype),
            "amount": sums[order],
            "transfers": counts[order],
        }
    )
    return edges
