"""Tests of the flow aggregations on small hand-made frames with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from karma_analytics import flows
from karma_analytics.dataset import STRING_DTYPE, empty_transfers
from karma_analytics.exceptions import UsageError

# 2026-11-27 is a Friday; 2026-11-30 a Monday.
ROWS = [
    ("2026-11-27 00:10", "alice", "bob", 10.0),
    ("2026-11-27 01:20", "alice", "carol", 5.0),
    ("2026-11-27 23:59:59.999", "bob", "carol", 2.0),
    ("2026-11-28 00:00", "carol", "alice", 1.0),
    ("2026-11-30 12:00", "dave", "alice", 100.0),
    ("2026-11-30 12:30", "alice", "bob", 0.5),
]


def make_frame(rows, *, symbol="KARMA", precision=4) -> pd.DataFrame:
    """A frame with the loader's dtypes (only the columns flows need)."""
    times = pd.to_datetime([r[0] for r in rows], utc=True, format="ISO8601").as_unit("ms")
    units = np.array([round(r[3] * 10**precision) for r in rows], dtype=np.int64)
    frame = pd.DataFrame(
        {
            "block_time": pd.Series(times, dtype="datetime64[ms, UTC]"),
            "from_account": pd.Series([r[1] for r in rows], dtype=STRING_DTYPE),
            "to_account": pd.Series([r[2] for r in rows], dtype=STRING_DTYPE),
            "amount_units": units,
            "precision": np.full(len(rows), precision, dtype=np.uint8),
            "symbol": pd.Series([symbol] * len(rows), dtype=STRING_DTYPE),
        }
    )
    frame["amount"] = frame["amount_units"] / 10.0**precision
    return frame


@pytest.fixture
def df() -> pd.DataFrame:
    return make_frame(ROWS)


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_volume_daily_fills_gaps(df):
    out = flows.volume(df, "1D")
    assert out.index.name == "period"
    assert list(out.index) == [
        day("2026-11-27"),
        day("2026-11-28"),
        day("2026-11-29"),
        day("2026-11-30"),
    ]
    assert out["amount"].tolist() == [17.0, 1.0, 0.0, 100.5]
    assert out["transfers"].tolist() == [3, 1, 0, 2]
    assert str(out.index.dtype) == "datetime64[ms, UTC]"


def test_volume_other_frequencies(df):
    hourly = flows.volume(df, "h")
    assert hourly["transfers"].sum() == 6
    assert hourly.index[0] == day("2026-11-27 00:00") and hourly.index[-1] == day(
        "2026-11-30 12:00"
    )
    weekly = flows.volume(df, "W")
    # Weeks start on Monday: Fri 27 .. Sun 29 in one week, Mon 30 in the next.
    assert list(weekly.index) == [day("2026-11-23"), day("2026-11-30")]
    assert weekly["transfers"].tolist() == [4, 2]
    monthly = flows.volume(df, "MS")
    assert list(monthly.index) == [day("2026-11-01")]
    assert monthly["amount"].tolist() == [118.5]
    with pytest.raises(UsageError):
        flows.volume(df, "fortnight")


def test_volume_from_amount_units_only(df):
    out = flows.volume(df.drop(columns="amount"), "1D")
    assert out["amount"].tolist() == [17.0, 1.0, 0.0, 100.5]


def test_top_senders_and_recipients(df):
    out = flows.top_senders(df)
    assert out.index.name == "account"
    assert list(out.index) == ["dave", "alice", "bob", "carol"]
    assert out["amount"].tolist() == [100.0, 15.5, 2.0, 1.0]
    assert out["transfers"].tolist() == [1, 3, 1, 1]
    by_count = flows.top_senders(df, 2, by="transfers")
    assert list(by_count.index) == ["alice", "dave"]  # tie on 1 transfer broken by amount
    rec = flows.top_recipients(df, 3)
    assert list(rec.index) == ["alice", "bob", "carol"]
    assert rec["amount"].tolist() == [101.0, 10.5, 7.0]
    assert flows.top_accounts(df, 1, side="to", by="transfers").index.tolist() == ["alice"]
    with pytest.raises(UsageError):
        flows.top_accounts(df, side="sideways")
    with pytest.raises(UsageError):
        flows.top_senders(df, 0)
    with pytest.raises(UsageError):
        flows.top_senders(df, by="weight")


def test_net_flow(df):
    out = flows.net_flow(df)
    assert list(out.index) == ["alice", "bob", "carol", "dave"]
    assert out.columns.tolist() == ["received", "sent", "net", "transfers_in", "transfers_out"]
    assert out["net"].tolist() == [85.5, 8.5, 6.0, -100.0]
    assert out.loc["alice", "received"] == 101.0 and out.loc["alice", "sent"] == 15.5
    assert out["transfers_in"].tolist() == [2, 2, 2, 0]
    assert out["transfers_out"].tolist() == [3, 1, 1, 1]


def test_flow_matrix_groups_the_rest(df):
    out = flows.flow_matrix(df, 2)
    assert out.index.name == "from_account" and out.columns.name == "to_account"
    assert out.index.tolist() == ["alice", "dave", "other"]
    assert out.columns.tolist() == ["alice", "dave", "other"]
    assert out.loc["alice", "other"] == 15.5
    assert out.loc["dave", "alice"] == 100.0
    assert out.loc["other", "alice"] == 1.0
    assert out.loc["other", "other"] == 2.0
    assert out.to_numpy().sum() == pytest.approx(118.5)
    counts = flows.flow_matrix(df, 2, by="transfers")
    # By count alice (5) leads, bob and carol tie on 3 and the name decides.
    assert counts.index.tolist() == ["alice", "bob", "other"]
    assert counts.loc["alice", "bob"] == 2 and counts.loc["alice", "other"] == 1
    assert counts.to_numpy().sum() == 6
    full = flows.flow_matrix(df, 10)
    assert "other" not in full.index and len(full) == 4
    assert full.loc["alice", "bob"] == 10.5
    with pytest.raises(UsageError):
        flows.flow_matrix(df, 2, other="alice")


def test_balance_change(df):
    out = flows.balance_change(df, ["alice", "bob"])
    assert out.columns.tolist() == ["alice", "bob"] and out.columns.name == "account"
    assert out.index.name == "block_time"
    assert out["alice"].tolist() == [-10.0, -15.0, -15.0, -14.0, 86.0, 85.5]
    assert out["bob"].tolist() == [10.0, 10.0, 8.0, 8.0, 8.0, 8.5]
    daily = flows.balance_change(df, ["alice", "bob"], freq="1D")
    assert daily["alice"].tolist() == [-15.0, -14.0, -14.0, 85.5]
    assert daily["bob"].tolist() == [8.0, 8.0, 8.0, 8.5]
    single = flows.balance_change(df, "dave")
    assert single["dave"].tolist() == [-100.0]
    nobody = flows.balance_change(df, "zed", freq="1D")
    assert nobody.empty and nobody.columns.tolist() == ["zed"]
    with pytest.raises(UsageError):
        flows.balance_change(df, [])


def test_size_distribution_log_bins(df):
    out = flows.size_distribution(df, per_decade=1)
    assert out.index.name == "bin"
    assert out["low"].tolist() == [0.1, 1.0, 10.0, 100.0]
    assert out["high"].tolist() == [1.0, 10.0, 100.0, 1000.0]
    assert out["transfers"].tolist() == [1, 3, 1, 1]
    assert out["amount"].tolist() == [0.5, 8.0, 10.0, 100.0]
    fine = flows.size_distribution(df)
    assert fine["transfers"].sum() == 6
    assert np.allclose(fine["high"] / fine["low"], 10**0.25)
    explicit = flows.size_distribution(df, bins=[0.5, 5, 500])
    assert explicit["transfers"].tolist() == [3, 3]  # [0.5, 5) and [5, 500]
    counted = flows.size_distribution(df, bins=3)
    assert len(counted) == 3 and counted["transfers"].sum() == 6
    with pytest.raises(UsageError):
        flows.size_distribution(df, bins=[5, 1])


def test_activity_hour_by_weekday(df):
    out = flows.activity(df)
    assert out.shape == (7, 24)
    assert out.index.name == "weekday" and out.columns.name == "hour"
    assert out.index[0] == "Monday"
    assert out.loc["Friday", 0] == 1 and out.loc["Friday", 1] == 1 and out.loc["Friday", 23] == 1
    assert out.loc["Saturday", 0] == 1
    assert out.loc["Monday", 12] == 2
    assert out.to_numpy().sum() == 6
    amounts = flows.activity(df, by="amount")
    assert amounts.loc["Monday", 12] == 100.5


def test_new_vs_returning(df):
    out = flows.new_vs_returning(df, "1D")
    assert out.index.name == "period"
    assert out.columns.tolist() == ["new", "returning", "active"]
    assert out["new"].tolist() == [3, 0, 0, 1]
    assert out["returning"].tolist() == [0, 2, 0, 2]
    assert out["active"].tolist() == [3, 2, 0, 3]
    senders = flows.new_vs_returning(df, "1D", side="from")
    assert senders["new"].tolist() == [2, 1, 0, 1]
    assert senders["returning"].tolist() == [0, 0, 0, 1]
    recipients = flows.new_vs_returning(df, "1D", side="to")
    assert recipients["new"].tolist() == [2, 1, 0, 0]
    assert recipients["returning"].tolist() == [0, 0, 0, 2]


def test_edge_list(df):
    out = flows.edge_list(df)
    assert out.columns.tolist() == ["from_account", "to_account", "amount", "transfers"]
    assert out.index.equals(pd.RangeIndex(5))
    assert [tuple(r) for r in out.itertuples(index=False)] == [
        ("dave", "alice", 100.0, 1),
        ("alice", "bob", 10.5, 2),
        ("alice", "carol", 5.0, 1),
        ("bob", "carol", 2.0, 1),
        ("carol", "alice", 1.0, 1),
    ]
    assert out["from_account"].dtype == STRING_DTYPE
    assert flows.edge_list(df, min_transfers=2)["to_account"].tolist() == ["bob"]


def test_mixed_tokens_are_refused(df):
    other = make_frame(ROWS[:2], symbol="EOS")
    mixed = pd.concat([df, other], ignore_index=True)
    for call in (flows.volume, flows.top_senders, flows.net_flow, flows.edge_list):
        with pytest.raises(UsageError, match="mixes tokens"):
            call(mixed)
    assert flows.token_symbol(df) == "KARMA"
    assert flows.token_symbol(df.iloc[:0]) is None
    # Counting transfers is fine across tokens.
    assert flows.activity(mixed).to_numpy().sum() == 8


def test_empty_frames():
    empty = empty_transfers()
    assert flows.volume(empty).columns.tolist() == ["amount", "transfers"]
    assert len(flows.volume(empty)) == 0
    assert flows.top_senders(empty).empty
    assert flows.net_flow(empty).empty
    assert flows.flow_matrix(empty).empty
    assert flows.balance_change(empty, "alice").empty
    assert flows.size_distribution(empty)["transfers"].sum() == 0
    assert flows.activity(empty).to_numpy().sum() == 0
    assert flows.new_vs_returning(empty).empty
    assert flows.edge_list(empty).columns.tolist() == [
        "from_account",
        "to_account",
        "amount",
        "transfers",
    ]
    with pytest.raises(UsageError, match="lacks columns"):
        flows.volume(pd.DataFrame({"x": [1]}))


NAMES = st.sampled_from(["alice", "bob", "carol", "dave", "eve", "frank"])


@pytest.mark.slow
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10 * 86_400_000),
            NAMES,
            NAMES,
            st.integers(1, 10**9),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 4),
)
def test_conservation_properties(raw, n):
    rows = [
        (pd.Timestamp(1_700_000_000_000 + t, unit="ms", tz="UTC").isoformat(), a, b, u / 10**4)
        for t, a, b, u in raw
    ]
    frame = make_frame(rows)
    total = frame["amount"].sum()
    assert flows.volume(frame, "6h")["amount"].sum() == pytest.approx(total)
    assert flows.flow_matrix(frame, n).to_numpy().sum() == pytest.approx(total)
    assert flows.edge_list(frame)["amount"].sum() == pytest.approx(total)
    net = flows.net_flow(frame)
    assert net["net"].sum() == pytest.approx(0.0, abs=1e-6 * max(total, 1))
    accounts = set(frame["from_account"]) | set(frame["to_account"])
    assert flows.new_vs_returning(frame, "1D")["new"].sum() == len(accounts)
    assert flows.size_distribution(frame)["transfers"].sum() == len(frame)
    assert flows.activity(frame).to_numpy().sum() == len(frame)
    final = flows.balance_change(frame, sorted(accounts)).iloc[-1]
    assert np.allclose(final.to_numpy(), net.loc[sorted(accounts), "net"].to_numpy())
