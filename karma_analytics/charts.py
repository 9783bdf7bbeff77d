"""Matplotlib charts of token flows, for notebooks.

Conventions (STYLE.md, after seaborn and matplotlib's guidance): every ``plot_*`` function
takes the transfers frame first (as returned by :func:`karma_analytics.dataset.load_transfers`)
and keyword-only options; ``ax=None`` means the current Axes (``plt.gca()``); it draws on that
one Axes and returns it. Extra ``**kwargs`` go to the one Axes method named in each docstring.
Nothing here calls ``plt.show()``, saves files or touches ``rcParams``. Amounts are labelled
with the token symbol found in the data; times are UTC. An empty frame gives an empty plot
with a "no transfers" note instead of an exception. :func:`flow_dashboard` makes and returns
its own multi-panel Figure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch, Rectangle
from matplotlib.path import Path
from matplotlib.ticker import FuncFormatter

from . import flows

__all__ = [
    "flow_dashboard",
    "plot_activity",
    "plot_balance",
    "plot_flow_matrix",
    "plot_flows",
    "plot_net_flow",
    "plot_size_distribution",
    "plot_top_accounts",
    "plot_volume",
]

NO_DATA = "no transfers"
_PALETTE = (
    "#4C72B0",
    "#DD8452",
    "#55A868",
    "#C44E52",
    "#8172B3",
    "#937860",
    "#DA8BC3",
    "#8C8C8C",
    "#CCB974",
    "#64B5CD",
)
_OTHER_COLOR = "#B0B0B0"
_GAIN_COLOR = "#2E8B57"
_LOSS_COLOR = "#C0392B"
_FREQ_WORDS = {
    "h": "hour",
    "1h": "hour",
    "D": "day",
    "1D": "day",
    "W": "week",
    "MS": "month",
    "M": "month",
    "ME": "month",
    "YS": "year",
    "Y": "year",
}


# --- helpers -------------------------------------------------------------------------------------


def _axes(ax: Axes | None) -> Axes:
    return plt.gca() if ax is None else ax


def _unit(df: pd.DataFrame) -> str:
    return flows.token_symbol(df) or "tokens"


def _short(value: float) -> str:
    """Compact number text: 1.2k, 3.4M, 0.25."""
    magnitude = abs(value)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    if magnitude == 0:
        return "0"
    if float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.3g}"


_SHORT_FORMATTER = FuncFormatter(lambda value, _pos: _short(value))


def _no_data(ax: Axes, title: str) -> Axes:
    ax.set_title(title)
    ax.text(
        0.5,
        0.5,
        NO_DATA,
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="0.45",
        fontsize=12,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _freq_word(freq: str) -> str:
    return _FREQ_WORDS.get(freq, freq)


def _naive_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """UTC wall times without a zone, so matplotlib labels them in UTC whatever its settings."""
    return index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index


def _period_days(times: pd.DatetimeIndex, freq: str) -> float:
    """Length of one period in days (matplotlib's date unit), for bar widths."""
    if len(times) > 1:
        return float(np.median(np.diff(times.asi8))) / _ticks_per_second(times) / 86_400
    try:
        return pd.Timedelta(freq).total_seconds() / 86_400
    except ValueError:
        return 1.0


def _ticks_per_second(times: pd.DatetimeIndex) -> float:
    return {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[times.unit]


def _date_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")


def _clean(ax: Axes) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# --- over time -----------------------------------------------------------------------------------


def plot_volume(
    df: pd.DataFrame,
    *,
    freq: str = "1D",
    by: flows.By = "amount",
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Bars of the transferred amount (or number of transfers) per period.

    Args:
        df: transfers.
        freq: period length, a pandas frequency (``"h"``, ``"1D"``, ``"W"``, ``"MS"``).
        by: ``"amount"`` (token units) or ``"transfers"``.
        ax: Axes to draw on; ``None`` for the current one.
        **kwargs: passed to ``Axes.bar``.

    Returns:
        The Axes.
    """
    ax = _axes(ax)
    what = "volume" if by == "amount" else "transfers"
    title = f"Transfer {what} per {_freq_word(freq)} (UTC)"
    if len(df) == 0:
        return _no_data(ax, title)
    table = flows.volume(df, freq)
    column = "amount" if by == "amount" else "transfers"
    times = _naive_utc(pd.DatetimeIndex(table.index))
    width = 0.85 * _period_days(times, freq)
    options = {"color": _PALETTE[0], "width": width, "align": "edge"}
    options.update(kwargs)
    ax.bar(times, table[column].to_numpy(), **options)
    _date_axis(ax)
    ax.set_ylabel(_unit(df) if by == "amount" else "transfers")
    ax.yaxis.set_major_formatter(_SHORT_FORMATTER)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    _clean(ax)
    return ax


def plot_balance(
    df: pd.DataFrame,
    accounts: str | Iterable[str],
    *,
    freq: str | None = None,
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Step lines of the cumulative balance change (received - sent) of chosen accounts.

    Args:
        df: transfers.
        accounts: one account name or several (one line each).
        freq: ``None`` for a step at every movement, or a pandas frequency.
        ax: Axes to draw on; ``None`` for the current one.
        **kwargs: passed to ``Axes.step``.

    Returns:
        The Axes (with a legend naming the accounts).
    """
    ax = _axes(ax)
    title = "Cumulative balance change (UTC)"
    if len(df) == 0:
        return _no_data(ax, title)
    table = flows.balance_change(df, accounts, freq=freq)
    if len(table) == 0:
        return _no_data(ax, title)
    times = _naive_utc(pd.DatetimeIndex(table.index))
    for i, name in enumerate(table.columns):
        options = {
            "where": "post",
            "color": _PALETTE[i % len(_PALETTE)],
            "linewidth": 1.8,
            "label": str(name),
        }
        options.update(kwargs)
        ax.step(times, table[name].to_numpy(), **options)
    ax.axhline(0, color="0.6", linewidth=0.8)
    _date_axis(ax)
    ax.set_ylabel(f"change ({_unit(df)})")
    ax.yaxis.set_major_formatter(_SHORT_FORMATTER)
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    _clean(ax)
    return ax


# --- accounts ------------------------------------------------------------------------------------


def plot_top_accounts(
    df: pd.DataFrame,
    *,
    n: int = 10,
    side: flows.Side = "from",
    by: flows.By = "amount",
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Horizontal bars of the top senders (``side="from"``) or recipients (``side="to"``).

    Args:
        df: transfers.
        n: number of accounts.
        side: ``"from"`` or ``"to"``.
        by: rank and measure by ``"amount"`` or ``"transfers"``.
        ax: Axes to draw on; ``None`` for the current one.
        **kwargs: passed to ``Axes.barh``.

    Returns:
        The Axes; the biggest account is at the top, each bar labelled with its value.
    """
    ax = _axes(ax)
    who = "senders" if side == "from" else "recipients"
    title = f"Top {n} {who} by {'amount' if by == 'amount' else 'transfers'}"
    if len(df) == 0:
        return _no_data(ax, title)
    table = flows.top_accounts(df, n, side=side, by=by)
    column = "amount" if by == "amount" else "transfers"
    values = table[column].to_numpy()
    labels = [str(name) for name in table.index]
    positions = np.arange(len(labels))
    options = {"color": _PALETTE[0] if side == "from" else _PALETTE[1]}
    options.update(kwargs)
    bars = ax.barh(positions, values, **options)
    ax.bar_label(bars, labels=[_short(v) for v in values], padding=3, fontsize=9)
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    ax.set_xlabel(_unit(df) if by == "amount" else "transfers")
    ax.xaxis.set_major_formatter(_SHORT_FORMATTER)
    ax.margins(x=0.12)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    _clean(ax)
    return ax


def plot_net_flow(df: pd.DataFrame, *, n: int = 10, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Diverging bars of net flow (received - sent): the ``n`` biggest gainers and spenders.

    Args:
        df: transfers.
        n: accounts on each side.
        ax: Axes to draw on; ``None`` for the current one.
        **kwargs: passed to ``Axes.barh``.

    Returns:
        The Axes; gainers (green) on top, spenders (red) below.
    """
    ax = _axes(ax)
    title = "Net flow (received − sent)"
    if len(df) == 0:
        return _no_data(ax, title)
    table = flows.net_flow(df)
    gainers = table[table["net"] > 0].head(n)
    spenders = table[table["net"] < 0].tail(n)
    shown = pd.concat([gainers, spenders])
    if len(shown) == 0:
        return _no_data(ax, title)
    values = shown["net"].to_numpy()
    positions = np.arange(len(values))
    colors = np.where(values >= 0, _GAIN_COLOR, _LOSS_COLOR)
    options: dict[str, Any] = {"color": colors}
    options.update(kwargs)
    bars = ax.barh(positions, values, **options)
    ax.bar_label(bars, labels=[_short(v) for v in values], padding=3, fontsize=9)
    ax.set_yticks(positions, [str(name) for name in shown.index])
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_xlabel(f"net ({_unit(df)})")
    ax.xaxis.set_major_formatter(_SHORT_FORMATTER)
    ax.margins(x=0.15)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    _clean(ax)
    return ax


def plot_flow_matrix(
    df: pd.DataFrame,
    *,
    n: int = 8,
    by: flows.By = "amount",
    ax: Axes | None = None,
    colorbar: bool = True,
    **kwargs: Any,
) -> Axes:
    """Heatmap of the flow matrix among the top ``n`` accounts (rest as ``other``), with values.

    Args:
        df: transfers.
        n: named accounts (see :func:`karma_analytics.flows.flow_matrix`).
        by: ``"amount"`` or ``"transfers"``.
        ax: Axes to draw on; ``None`` for the current one.
        colorbar: add a colour bar beside the Axes.
        **kwargs: passed to ``Axes.imshow`` (e.g. ``cmap``).

    Returns:
        The Axes; rows are senders, columns recipients, each cell annotated.
    """
    ax = _axes(ax)
    title = f"Flows between top accounts ({_unit(df) if by == 'amount' else 'transfers'})"
    if len(df) == 0:
        return _no_data(ax, title)
    matrix = flows.flow_matrix(df, n, by=by)
    values = matrix.to_numpy(dtype=np.float64)
    options = {"cmap": "Blues", "aspect": "auto", "interpolation": "nearest"}
    options.update(kwargs)
    image = ax.imshow(values, **options)
    peak = values.max() if values.size else 0.0
    for (row, col), value in np.ndenumerate(values):
        if value == 0:
            continue
        dark = peak > 0 and value / peak > 0.55
        ax.text(
            col,
            row,
            _short(value),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if dark else "0.15",
        )
    labels = [str(name) for name in matrix.columns]
    ax.set_xticks(np.arange(len(labels)), labels, rotation=40, ha="right")
    ax.set_yticks(np.arange(len(matrix.index)), [str(name) for name in matrix.index])
    ax.set_xlabel("to (recipient)")
    ax.set_ylabel("from (sender)")
    ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03, format=_SHORT_FORMATTER)
    return ax


def _spread_labels(centres: list[float], *, gap: float = 0.045, low: float = 0.0) -> list[float]:
    """Label heights near ``centres`` (top to bottom) at least ``gap`` apart, above ``low``."""
    spread = list(centres)
    for k in range(1, len(spread)):
        spread[k] = min(spread[k], spread[k - 1] - gap)
    if spread and spread[-1] < low:
        spread[-1] = low
        for k in range(len(spread) - 2, -1, -1):
            spread[k] = max(spread[k], spread[k + 1] + gap)
    return spread


def plot_flows(
    df: pd.DataFrame,
    *,
    n: int = 6,
    ax: Axes | None = None,
    other: str = "other",
    **kwargs: Any,
) -> Axes:
    """Alluvial (Sankey-style) diagram: top senders left, top recipients right.

    Each band joins a sender to a recipient with a height proportional to the amount sent;
    accounts outside the top ``n`` on each side are grouped as ``other``, so the two columns
    add up to the same total.

    Args:
        df: transfers.
        n: named accounts on each side.
        ax: Axes to draw on; ``None`` for the current one.
        other: label of the grouped accounts.
        **kwargs: passed to every band's ``PathPatch`` (e.g. ``alpha``).

    Returns:
        The Axes (axis lines hidden). Patches: one Rectangle per node, one PathPatch per
        non-empty band.
    """
    ax = _axes(ax)
    unit = _unit(df)
    title = f"Flows among top accounts ({unit})"
    if len(df) == 0:
        return _no_data(ax, title)
    edges = flows.edge_list(df)
    senders = [str(a) for a in flows.top_senders(df, n).index]
    recipients = [str(a) for a in flows.top_recipients(df, n).index]
    left = edges["from_account"].astype(str).where(edges["from_account"].isin(senders), other)
    right = edges["to_account"].astype(str).where(edges["to_account"].isin(recipients), other)
    grouped = edges.groupby([left.to_numpy(), right.to_numpy()])["amount"].sum()
    left_names = [s for s in senders if s in set(left)] + ([other] if (left == other).any() else [])
    right_names = [r for r in recipients if r in set(right)] + (
        [other] if (right == other).any() else []
    )
    matrix = np.zeros((len(left_names), len(right_names)))
    li = {name: i for i, name in enumerate(left_names)}
    ri = {name: j for j, name in enumerate(right_names)}
    for (a, b), value in grouped.items():  # at most (n + 1)^2 cells
        matrix[li[a], ri[b]] += value
    total = matrix.sum()
    if total <= 0:
        return _no_data(ax, title)

    gap = 0.02
    node_width = 0.025
    out_sizes = matrix.sum(axis=1)
    in_sizes = matrix.sum(axis=0)
    # One vertical scale for both columns, so equal amounts get equal heights on both sides.
    common = 1.0 - gap * (max(len(left_names), len(right_names)) - 1)

    def scale(value: float) -> float:
        return value / total * common

    left_tops = 1.0 - np.concatenate([[0.0], np.cumsum(out_sizes[:-1] / total * common + gap)])
    right_tops = 1.0 - np.concatenate([[0.0], np.cumsum(in_sizes[:-1] / total * common + gap)])

    def color(i: int) -> str:
        return _OTHER_COLOR if left_names[i] == other else _PALETTE[i % len(_PALETTE)]

    x_left, x_right = node_width, 1.0 - node_width
    # Small nodes sit close together: spread their labels so that none overlap.
    left_labels = _spread_labels(
        [left_tops[i] - scale(out_sizes[i]) / 2 for i in range(len(left_names))]
    )
    right_labels = _spread_labels(
        [right_tops[j] - scale(in_sizes[j]) / 2 for j in range(len(right_names))]
    )
    for i, name in enumerate(left_names):
        height = scale(out_sizes[i])
        ax.add_patch(
            Rectangle((0.0, left_tops[i] - height), node_width, height, color=color(i), linewidth=0)
        )
        ax.text(
            -0.015,
            left_labels[i],
            f"{name}  {_short(out_sizes[i])}",
            ha="right",
            va="center",
            fontsize=9,
        )
    for j, name in enumerate(right_names):
        height = scale(in_sizes[j])
        ax.add_patch(
            Rectangle(
                (x_right, right_tops[j] - height),
                node_width,
                height,
                color=_OTHER_COLOR if name == other else "0.35",
                linewidth=0,
            )
        )
        ax.text(
            1.015,
            right_labels[j],
            f"{_short(in_sizes[j])}  {name}",
            ha="left",
            va="center",
            fontsize=9,
        )
    # Bands: leave each sender in recipient order, enter each recipient in sender order.
    left_offsets = np.zeros(len(left_names))
    right_offsets = np.zeros(len(right_names))
    middle = (x_left + x_right) / 2
    for i in range(len(left_names)):
        for j in range(len(right_names)):
            value = matrix[i, j]
            if value <= 0:
                continue
            height = scale(value)
            y0 = left_tops[i] - left_offsets[i]
            y1 = right_tops[j] - right_offsets[j]
            left_offsets[i] += height
            right_offsets[j] += height
            vertices = [
                (x_left, y0),
                (middle, y0),
                (middle, y1),
                (x_right, y1),
                (x_right, y1 - height),
                (middle, y1 - height),
                (middle, y0 - height),
                (x_left, y0 - height),
                (x_left, y0),
            ]
            codes = [
                Path.MOVETO,
                Path.CURVE4,
                Path.CURVE4,
                Path.CURVE4,
                Path.LINETO,
                Path.CURVE4,
                Path.CURVE4,
                Path.CURVE4,
                Path.CLOSEPOLY,
            ]
            options = {"facecolor": color(i), "alpha": 0.45, "edgecolor": "none"}
            options.update(kwargs)
            ax.add_patch(PathPatch(Path(vertices, codes), **options))
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylim(-0.07, 1.01)
    ax.set_axis_off()
    ax.set_title(title)
    for x, text, align in ((0.0, "senders", "left"), (1.0, "recipients", "right")):
        ax.text(x, -0.02, text, ha=align, va="top", fontsize=9, color="0.35")
    return ax


# --- distributions -------------------------------------------------------------------------------


def plot_size_distribution(
    df: pd.DataFrame,
    *,
    per_decade: int = 4,
    by: flows.By = "transfers",
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Histogram of transfer sizes on log-spaced bins (log x axis).

    Args:
        df: transfers.
        per_decade: bins per power of ten.
        by: bar height = number of ``"transfers"`` or total ``"amount"`` in the bin.
        ax: Axes to draw on; ``None`` for the current one.
        **kwargs: passed to ``Axes.bar``.

    Returns:
        The Axes; one bar per bin.
    """
    ax = _axes(ax)
    title = "Transfer size distribution"
    if len(df) == 0:
        return _no_data(ax, title)
    table = flows.size_distribution(df, per_decade=per_decade)
    column = "transfers" if by != "amount" else "amount"
    options = {"color": _PALETTE[2], "edgecolor": "white", "linewidth": 0.6, "align": "edge"}
    options.update(kwargs)
    ax.bar(
        table["low"].to_numpy(),
        table[column].to_numpy(),
        width=(table["high"] - table["low"]).to_numpy(),
        **options,
    )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_SHORT_FORMATTER)
    ax.set_xlabel(f"transfer size ({_unit(df)}, log scale)")
    ax.set_ylabel("transfers" if column == "transfers" else f"amount ({_unit(df)})")
    ax.yaxis.set_major_formatter(_SHORT_FORMATTER)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    _clean(ax)
    return ax


def plot_activity(
    df: pd.DataFrame,
    *,
    by: flows.By = "transfers",
    ax: Axes | None = None,
    colorbar: bool = True,
    **kwargs: Any,
) -> Axes:
    """Heatmap of activity by hour of day (x) and weekday (y), UTC.

    Args:
        df: transfers.
        by: ``"transfers"`` or ``"amount"``.
        ax: Axes to draw on; ``None`` for the current one.
        colorbar: add a colour bar beside the Axes.
        **kwargs: passed to ``Axes.imshow`` (e.g. ``cmap``).

    Returns:
        The Axes.
    """
    ax = _axes(ax)
    title = "Activity by hour and weekday (UTC)"
    if len(df) == 0:
        return _no_data(ax, title)
    grid = flows.activity(df, by=by)
    options = {"cmap": "Greens", "aspect": "auto", "interpolation": "nearest"}
    options.update(kwargs)
    image = ax.imshow(grid.to_numpy(dtype=np.float64), **options)
    ax.set_xticks(np.arange(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
    ax.set_yticks(np.arange(7), [day[:3] for day in grid.index])
    ax.set_xlabel("hour of day (UTC)")
    ax.set_title(title)
    if colorbar:
        bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03, format=_SHORT_FORMATTER)
        bar.set_label("transfers" if by != "amount" else _unit(df))
    return ax


# --- dashboard -----------------------------------------------------------------------------------


def flow_dashboard(
    df: pd.DataFrame, *, n: int = 8, freq: str = "1D", figsize: tuple[float, float] = (15, 17)
) -> Figure:
    """A multi-panel overview of the flows in ``df``.

    Panels: volume per period; top senders and recipients; the alluvial flows and the flow
    matrix; net flow and transfer sizes; activity by hour and weekday, and the balance change
    of the two biggest gainers and the biggest spender.

    The Figure is created here (not through pyplot), so it is not left open in pyplot's
    state; a notebook displays the returned Figure.

    Args:
        df: transfers.
        n: accounts per ranking panel.
        freq: period of the volume panel.
        figsize: figure size in inches.

    Returns:
        The Figure (9 panels plus colour bars).
    """
    figure = Figure(figsize=figsize, layout="constrained")
    grid = figure.add_gridspec(5, 2, height_ratios=[1.0, 1.2, 1.5, 1.2, 1.0])
    unit = _unit(df)
    rows = f"{len(df):,} transfers"
    if len(df):
        times = pd.DatetimeIndex(df["block_time"]).tz_convert("UTC")
        rows += f", {times.min():%Y-%m-%d %H:%M} – {times.max():%Y-%m-%d %H:%M} UTC"
    figure.suptitle(f"{unit} token flows — {rows}", fontsize=14)
    plot_volume(df, freq=freq, ax=figure.add_subplot(grid[0, :]))
    plot_top_accounts(df, n=n, side="from", ax=figure.add_subplot(grid[1, 0]))
    plot_top_accounts(df, n=n, side="to", ax=figure.add_subplot(grid[1, 1]))
    plot_flows(df, n=min(n, 6), ax=figure.add_subplot(grid[2, 0]))
    plot_flow_matrix(df, n=min(n, 8), ax=figure.add_subplot(grid[2, 1]))
    plot_net_flow(df, n=max(n // 2, 1), ax=figure.add_subplot(grid[3, 0]))
    plot_size_distribution(df, ax=figure.add_subplot(grid[3, 1]))
    plot_activity(df, ax=figure.add_subplot(grid[4, 0]))
    balance_ax = figure.add_subplot(grid[4, 1])
    if len(df):
        movers = flows.net_flow(df)
        chosen = list(dict.fromkeys([*movers.index[:2], *movers.index[-1:]]))
        plot_balance(df, [str(a) for a in chosen], ax=balance_ax)
    else:
        plot_balance(df, [], ax=balance_ax)
    return figure
