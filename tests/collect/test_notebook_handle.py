"""The Jupyter bridge: a background collector on a running loop, and blocking collect().

In-process tests run ``start_collector`` inside ``asyncio.run`` while other coroutines run.
``collect()`` is tested in child processes (plain script, and inside a running loop where
nest_asyncio gets applied, which must not leak into this test process), and everything once
more in a real Jupyter kernel through nbclient.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import nbformat
import pytest
from collect_helpers import RANGE_LAST, child_env, committed_rows, next_block
from nbclient import NotebookClient

from karma_analytics.notebook import start_collector

FAST = {"flush_rows": 40, "flush_seconds": 0.2}


@pytest.mark.slow
def test_start_collector_runs_beside_other_coroutines(net_factory, tmp_path) -> None:
    # A head moving at 200 blocks/s: the run lasts a few seconds, long enough to watch it.
    live = net_factory(head=300, block_interval=0.005)
    stop = 1_200
    out = tmp_path / "transfers"

    async def main():  # type: ignore[no-untyped-def]
        handle = start_collector(
            live.url, out=out, start_block=1, stop_block=stop, progress=False, **FAST
        )
        assert not handle.done()  # returned at once
        ticks = 0
        seen = []
        while not handle.done():  # "other cells": this coroutine keeps running meanwhile
            ticks += 1
            seen.append(handle.status.rows)
            await asyncio.sleep(0.01)
        summary = await handle
        return handle, ticks, seen, summary

    handle, ticks, seen, summary = asyncio.run(main())
    assert ticks > 20
    assert any(0 < rows < summary.rows for rows in seen)  # live status while collecting
    assert summary.reason == "complete" and summary.rows == handle.status.rows
    status = handle.status
    assert status.state == "done" and status.error is None
    assert status.next_block == stop + 1 and status.blocks == stop
    assert committed_rows(out) == list(live.chain.truth(1, stop))


def test_stop_commits_and_wait_returns_summary(net_factory, tmp_path) -> None:
    live = net_factory(head=300, block_interval=0.01)
    out = tmp_path / "transfers"

    async def main():  # type: ignore[no-untyped-def]
        handle = start_collector(live.url, out=out, start_block=1, progress=False, **FAST)
        async with asyncio.timeout(60):  # polled: wait for a durable commit past block 200
            while (next_block(out) or 0) < 200:
                assert not handle.done(), handle.status
                await asyncio.sleep(0.02)
        handle.stop()
        return handle, await handle

    handle, summary = asyncio.run(main())
    assert summary.reason == "stopped" and handle.status.state == "stopped"
    upto = next_block(out)
    assert summary.next_block == upto
    assert committed_rows(out) == list(live.chain.truth(1, upto - 1))


def test_start_collector_without_a_loop_uses_a_thread(net, tmp_path) -> None:
    out = tmp_path / "transfers"
    handle = start_collector(
        net.url, out=out, start_block=1, stop_block=RANGE_LAST, progress=False, **FAST
    )
    summary = handle.wait(timeout=60)
    assert summary.reason == "complete"
    assert committed_rows(out) == list(net.chain.truth(1, RANGE_LAST))


def test_errors_surface_through_the_handle(net, tmp_path) -> None:
    out = tmp_path / "transfers"
    (out).mkdir()
    (out / "_cursor.json").write_text("{not json")
    handle = start_collector(net.url, out=out, stop_block=RANGE_LAST, progress=False)
    with pytest.raises(Exception, match="repair"):
        handle.wait(timeout=30)
    assert handle.status.state == "failed" and "repair" in handle.status.error


def _script(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.slow
def test_collect_blocks_in_a_plain_script(net, tmp_path) -> None:
    out = tmp_path / "transfers"
    done = _script(f"""
        import json, sys
        from karma_analytics.notebook import collect
        s = collect({net.url!r}, out={str(out)!r}, start_block=1, stop_block={RANGE_LAST},
                    progress=False, flush_rows=40, flush_seconds=0.2)
        print(json.dumps({{"reason": s.reason, "rows": s.rows,
                           "nest": "nest_asyncio" in sys.modules}}))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {
        "reason": "complete",
        "rows": len(list(net.chain.truth(1, RANGE_LAST))),
        "nest": False,
    }  # nest_asyncio only when a loop is already running
    assert committed_rows(out) == list(net.chain.truth(1, RANGE_LAST))


@pytest.mark.slow
def test_collect_blocks_inside_a_running_loop(net, tmp_path) -> None:
    out = tmp_path / "transfers"
    done = _script(f"""
        import asyncio, json
        from karma_analytics.notebook import collect

        async def main():
            ticks = 0
            async def other():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)
            task = asyncio.create_task(other())
            s = collect({net.url!r}, out={str(out)!r}, start_block=1,
                        stop_block={RANGE_LAST}, progress=False, flush_rows=40,
                        flush_seconds=0.2)
            task.cancel()
            return s, ticks

        s, ticks = asyncio.run(main())
        print(json.dumps({{"reason": s.reason, "rows": s.rows, "ticks": ticks}}))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["reason"] == "complete"
    assert result["ticks"] > 0  # the loop kept running other tasks during the blocking call
    assert committed_rows(out) == list(net.chain.truth(1, RANGE_LAST))


@pytest.mark.slow
def test_collect_demo_range_prefix(tmp_path) -> None:
    """collect(demo=True) uses the in-process devnet like the CLI (a short prefix here)."""
    from karma_analytics.devnet.chain import Chain
    from karma_analytics.notebook import collect

    out = tmp_path / "demo"
    summary = collect(demo=True, out=out, stop_block=8_000, progress=False)
    assert summary.reason == "complete" and summary.top_senders
    assert committed_rows(out) == list(Chain(seed=7).truth(1, 8_000))
    again = collect(demo=True, out=out, stop_block=8_000, progress=False)
    assert again.reason == "already_complete" and again.rows == 0


@pytest.mark.slow
def test_in_a_real_jupyter_kernel(net, tmp_path) -> None:
    out = tmp_path / "transfers"
    live_head = RANGE_LAST
    cells = [
        f"""
        from karma_analytics.notebook import start_collector
        h = start_collector({net.url!r}, out={str(out)!r}, start_block=1,
                            stop_block={live_head}, flush_rows=40, flush_seconds=0.2)
        print("started", h.done())
        """,
        """
        # another cell runs while the collector works in the background
        total = sum(range(1000))
        print("other cell", total)
        """,
        """
        summary = await h
        print("STATE", h.status.state, h.status.rows, h.status.next_block)
        """,
        f"""
        from karma_analytics.notebook import collect
        s2 = collect({net.url!r}, out={str(out)!r}, stop_block={live_head})
        print("BLOCKING", s2.reason)
        """,
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    texts = []
    for cell in nb.cells:
        for output in cell.outputs:
            if output.get("output_type") == "stream":
                texts.append(output["text"])
            elif "data" in output:
                texts.append(output["data"].get("text/plain", ""))
    joined = "\n".join(texts)
    assert "started False" in joined
    assert "other cell 499500" in joined
    assert f"STATE done {len(list(net.chain.truth(1, live_head)))} {live_head + 1}" in joined
    assert "BLOCKING already_complete" in joined
    assert "karma collector:" in joined  # the live display line in the cell output
    assert committed_rows(out) == list(net.chain.truth(1, live_head))
