"""The progress displays: text content, log cadence, notebook line (no terminal needed)."""

from __future__ import annotations

import io
import logging
import time

from karma_analytics.collect import CollectorStatus
from karma_analytics.progress import BarDisplay, LogDisplay, NotebookDisplay, describe, format_lag


def test_format_lag() -> None:
    assert format_lag(4.9) == "4s"
    assert format_lag(192) == "3m12s"
    assert format_lag(2 * 3600 + 5 * 60) == "2h05m"
    assert format_lag(5 * 86400) == "5d"
    assert format_lag(-3) == "0s"


def test_describe_with_and_without_stop_block() -> None:
    status = CollectorStatus(
        state="streaming",
        start_block=1,
        next_block=501,
        stop_block=1000,
        rows=1234,
        reconnects=2,
        rejects=1,
    )
    text = describe(status)
    assert "streaming" in text and "block 501/1,001" in text and "rows 1,234" in text
    assert "reconnects 2" in text and "rejects 1" in text and "lag" not in text
    live = CollectorStatus(
        state="streaming", next_block=10, last_block_time=int((time.time() - 75) * 1000)
    )
    assert "lag 1m1" in describe(live)
    failed = CollectorStatus(state="failed", error="disk is full")
    assert "error: disk is full" in describe(failed)


def test_log_display_cadence(caplog) -> None:
    caplog.set_level(logging.INFO, logger="karma_analytics.progress")
    status = CollectorStatus(state="streaming", next_block=5)
    display = LogDisplay(interval=3600)
    display.update(status)  # too early: nothing
    assert not caplog.records
    display.interval = 0
    display.update(status)
    display.close(status)
    assert len(caplog.records) == 2
    status.state = "failed"
    display.close(status)  # a failure is reported by whoever catches it, not twice
    assert len(caplog.records) == 2


def test_bar_display_draws_the_final_state() -> None:
    stream = io.StringIO()
    status = CollectorStatus(state="streaming", start_block=1, next_block=1, stop_block=100)
    bar = BarDisplay(file=stream)
    bar.update(status)
    status.next_block, status.rows = 101, 42
    bar.close(status)
    text = stream.getvalue()
    assert "100/100" in text and "rows=42" in text and "reconnects=0" in text


def test_notebook_display_outside_ipython_is_silent() -> None:
    display = NotebookDisplay(interval=0)
    status = CollectorStatus(state="streaming", next_block=5)
    display.update(status)
    display.close(status)  # no IPython kernel: nothing to draw into, no error


def test_reconnecting_shows_the_attempt_and_the_last_error() -> None:
    status = CollectorStatus(
        state="reconnecting", next_block=7, attempt=3, last_error="connection refused"
    )
    assert describe(status).startswith("reconnecting (attempt 3): connection refused |")
    stream = io.StringIO()
    bar = BarDisplay(file=stream)
    bar.update(status)
    bar.close(status)
    assert "reconnecting (attempt 3): connection refused" in stream.getvalue()
    status.state, status.attempt = "streaming", 0
    assert describe(status).startswith("streaming |")
