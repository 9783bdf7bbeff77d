"""The example notebook runs top to bottom in a real Jupyter kernel and draws every chart."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "karma_transfer_flows.ipynb"


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.fixture(params=["demo", "hyperion"])
def endpoint(request, monkeypatch):
    """The collect cell's two ways: the built-in chain, or a Hyperion endpoint from the env."""
    for name in ("KARMA_ENDPOINT", "KARMA_SOURCE", "KARMA_SINCE", "KARMA_UNTIL"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "demo":
        yield None
        return
    from karma_analytics.devnet.hyperion import HyperionThread

    with HyperionThread(head=30_000, block_interval=0.0, cache_life=0) as server:
        monkeypatch.setenv("KARMA_ENDPOINT", server.url)
        monkeypatch.setenv("KARMA_SOURCE", "hyperion")
        monkeypatch.setenv("KARMA_START_BLOCK", "1")
        monkeypatch.setenv("KARMA_STOP_BLOCK", "20000")
        yield server


@pytest.mark.slow
def test_notebook_runs_in_a_kernel(tmp_path, monkeypatch, endpoint):
    monkeypatch.setenv("KARMA_DATA", str(tmp_path / "transfers"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    started = time.monotonic()
    client.execute(env=dict(os.environ))
    elapsed = time.monotonic() - started
    assert elapsed < 120, f"the notebook took {elapsed:.0f} s; it must run in under 2 minutes"

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code_cells:
        for output in cell.outputs:
            assert output.output_type != "error", f"{output.ename}: {output.evalue}"
            if output.output_type == "stream" and output.name == "stderr":
                assert "Traceback" not in output.text and "Error" not in output.text, output.text
    chart_cells = [cell for cell in code_cells if "charts." in cell.source]
    assert len(chart_cells) >= 8
    for cell in chart_cells:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert images, f"no image from cell:\n{cell.source}"
    # The collect cell really collected: the load cell shows a non-empty frame.
    load_cell = next(cell for cell in code_cells if "load_transfers" in cell.source)
    shown = "".join(o.get("text", "") for o in load_cell.outputs)
    loaded = re.search(r"loaded ([\d,]+) transfers", shown)
    assert loaded and int(loaded.group(1).replace(",", "")) > 0, shown
    assert (tmp_path / "transfers" / "_cursor.json").exists()
    if endpoint is not None:  # the Hyperion run collected exactly its range
        from karma_analytics.dataset import load_transfers

        frame = load_transfers(tmp_path / "transfers")
        truth = list(endpoint.chain.truth(1, 20_000))
        assert len(frame) == len(truth) == int(loaded.group(1).replace(",", ""))
        assert endpoint.stats.requests.get("get_actions", 0) > 0
