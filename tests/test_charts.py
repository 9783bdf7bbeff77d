"""Tests of the charts on the Agg backend, asserting on artists (no image baselines)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import PathPatch, Rectangle
from test_flows import ROWS, make_frame

from karma_analytics import charts, flows
from karma_analytics.dataset import empty_transfers


@pytest.fixture
def df() -> pd.DataFrame:
    return make_frame(ROWS)


@pytest.fixture
def ax():
    figure, axes = plt.subplots()
    yield axes
    plt.close(figure)


@pytest.fixture(autouse=True)
def no_show(monkeypatch):
    """Charts must never show or save on their own."""

    def refuse(*args, **kwargs):
        raise AssertionError("a chart called show/savefig")

    monkeypatch.setattr(plt, "show", refuse)
    monkeypatch.setattr(plt, "savefig", refuse)
    monkeypatch.setattr(Figure, "savefig", refuse)
    before = dict(matplotlib.rcParams)
    yield
    assert dict(matplotlib.rcParams) == before


def bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_plot_volume(df, ax):
    out = charts.plot_volume(df, ax=ax)
    assert out is ax
    heights = [b.get_height() for b in bars(ax)]
    assert heights == [17.0, 1.0, 0.0, 100.5]
    assert ax.get_title() == "Transfer volume per day (UTC)"
    assert ax.get_ylabel() == "KARMA"
    assert ax.get_xlabel() == "time (UTC)"
    counts = charts.plot_volume(df, by="transfers", freq="W", ax=ax.figure.add_subplot(2, 1, 2))
    assert [b.get_height() for b in bars(counts)] == [4, 2]
    assert counts.get_ylabel() == "transfers"


def test_plot_volume_defaults_to_current_axes_and_passes_kwargs(df):
    figure = plt.figure()
    try:
        current = plt.gca()
        out = charts.plot_volume(df, color="red")
        assert out is current
        assert bars(out)[0].get_facecolor()[:3] == (1.0, 0.0, 0.0)
    finally:
        plt.close(figure)


def test_plot_top_accounts(df, ax):
    charts.plot_top_accounts(df, n=3, ax=ax)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dave", "alice", "bob"]
    assert [b.get_width() for b in bars(ax)] == [100.0, 15.5, 2.0]
    assert ax.get_title() == "Top 3 senders by amount"
    assert ax.get_xlabel() == "KARMA"
    assert "15.5" in texts(ax)  # value labels at the bar ends
    assert ax.yaxis_inverted()  # biggest on top


def test_plot_top_recipients_by_count(df, ax):
    charts.plot_top_accounts(df, side="to", by="transfers", ax=ax)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["alice", "bob", "carol"]
    assert [b.get_width() for b in bars(ax)] == [2, 2, 2]
    assert ax.get_title() == "Top 10 recipients by transfers"


def test_plot_net_flow(df, ax):
    charts.plot_net_flow(df, n=5, ax=ax)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["alice", "bob", "carol", "dave"]
    widths = [b.get_width() for b in bars(ax)]
    assert widths == [85.5, 8.5, 6.0, -100.0]
    colors = [b.get_facecolor() for b in bars(ax)]
    assert colors[0] == colors[1] != colors[3]
    assert ax.get_xlabel() == "net (KARMA)"


def test_plot_flow_matrix(df, ax):
    charts.plot_flow_matrix(df, n=2, ax=ax)
    images = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    assert len(images) == 1
    expected = flows.flow_matrix(df, 2).to_numpy()
    assert np.array_equal(images[0].get_array(), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["alice", "dave", "other"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["alice", "dave", "other"]
    assert sorted(texts(ax)) == sorted(["15.5", "100", "1", "2"])  # non-zero cells annotated
    assert ax.get_xlabel() == "to (recipient)" and ax.get_ylabel() == "from (sender)"
    assert len(ax.figure.axes) == 2  # the colour bar


def test_plot_flows_patches(df, ax):
    charts.plot_flows(df, n=2, ax=ax)
    nodes = [p for p in ax.patches if isinstance(p, Rectangle)]
    bands = [p for p in ax.patches if isinstance(p, PathPatch)]
    # Senders: dave, alice, other(bob, carol); recipients: alice, bob, other(carol).
    assert len(nodes) == 6
    # Bands: dave->alice, alice->bob, alice->other, other->other, other->alice.
    assert len(bands) == 5
    left = sorted((n for n in nodes if n.get_x() == 0.0), key=lambda n: -n.get_y())
    heights = np.array([n.get_height() for n in left])
    assert np.allclose(heights / heights.sum(), np.array([100.0, 15.5, 3.0]) / 118.5)
    # Band thickness is proportional to amount: the dave->alice band is as tall as dave's node.
    thickness = sorted(
        (float(np.ptp(b.get_path().vertices[[0, 7], 1])) for b in bands), reverse=True
    )
    assert thickness[0] == pytest.approx(heights[0])
    labels = " ".join(texts(ax))
    assert "dave" in labels and "other" in labels and "senders" in labels
    assert ax.get_title() == "Flows among top accounts (KARMA)"
    assert not ax.axison


def test_plot_balance(df, ax):
    charts.plot_balance(df, ["alice", "bob"], ax=ax)
    lines = ax.get_lines()
    step_lines = [line for line in lines if line.get_label() in ("alice", "bob")]
    assert len(step_lines) == 2
    assert list(step_lines[0].get_ydata()) == [-10.0, -15.0, -15.0, -14.0, 86.0, 85.5]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["alice", "bob"]
    assert ax.get_ylabel() == "change (KARMA)"


def test_plot_size_distribution(df, ax):
    charts.plot_size_distribution(df, per_decade=1, ax=ax)
    assert [b.get_height() for b in bars(ax)] == [1, 3, 1, 1]
    assert [b.get_x() for b in bars(ax)] == [0.1, 1.0, 10.0, 100.0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "transfer size (KARMA, log scale)"


def test_plot_activity(df, ax):
    charts.plot_activity(df, ax=ax)
    image = next(a for a in ax.get_children() if isinstance(a, AxesImage))
    grid = np.asarray(image.get_array())
    assert grid.shape == (7, 24) and grid.sum() == 6
    assert grid[4, 0] == 1 and grid[0, 12] == 2  # Friday 00h, Monday 12h
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["Mon", "Tue"]
    assert ax.get_title() == "Activity by hour and weekday (UTC)"


@pytest.mark.parametrize(
    "plot",
    [
        charts.plot_volume,
        charts.plot_top_accounts,
        charts.plot_net_flow,
        charts.plot_flow_matrix,
        charts.plot_flows,
        charts.plot_size_distribution,
        charts.plot_activity,
        lambda frame, ax: charts.plot_balance(frame, ["alice"], ax=ax),
    ],
)
def test_empty_data_gives_a_note(plot, ax):
    out = plot(empty_transfers(), ax=ax)
    assert out is ax
    assert "no transfers" in texts(ax)
    assert ax.get_title()


def test_balance_of_an_absent_account_gives_a_note(df, ax):
    charts.plot_balance(df, ["zed"], ax=ax)
    assert "no transfers" in texts(ax)


@pytest.mark.slow
def test_dashboard(df, tmp_path):
    figures = plt.get_fignums()
    figure = charts.flow_dashboard(df, n=3)
    assert isinstance(figure, Figure)
    assert plt.get_fignums() == figures  # not registered with pyplot
    titles = [a.get_title() for a in figure.axes]
    assert "Transfer volume per day (UTC)" in titles
    assert "Flows among top accounts (KARMA)" in titles
    assert sum(1 for t in titles if t) == 9
    assert "6 transfers" in figure._suptitle.get_text()
    figure.canvas.draw()  # renders without error
    empty = charts.flow_dashboard(empty_transfers())
    empty.canvas.draw()
    assert sum("no transfers" in texts(a) for a in empty.axes) == 9


@pytest.mark.slow
def test_render_every_chart_to_png(df, tmp_path, monkeypatch):
    """Each chart renders to a non-trivial PNG (for a human to look at when it changes)."""
    monkeypatch.undo()  # allow savefig here: the test saves, not the charts
    plots = {
        "volume": lambda a: charts.plot_volume(df, ax=a),
        "top": lambda a: charts.plot_top_accounts(df, ax=a),
        "net": lambda a: charts.plot_net_flow(df, ax=a),
        "matrix": lambda a: charts.plot_flow_matrix(df, ax=a),
        "flows": lambda a: charts.plot_flows(df, ax=a),
        "balance": lambda a: charts.plot_balance(df, ["alice", "dave"], ax=a),
        "sizes": lambda a: charts.plot_size_distribution(df, ax=a),
        "activity": lambda a: charts.plot_activity(df, ax=a),
    }
    for name, plot in plots.items():
        figure = Figure(figsize=(6, 4))
        plot(figure.add_subplot())
        path = tmp_path / f"{name}.png"
        figure.savefig(path, dpi=60)
        assert path.stat().st_size > 5_000, name
