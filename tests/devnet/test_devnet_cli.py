"""The command line (real processes), the background-thread runner and the pytest fixture."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest
from devnet_helpers import open_ws, recv, run, send, traces_request
from websockets.sync.client import connect as sync_connect

from karma_analytics.devnet import Chain, run_devnet_in_thread
from karma_analytics.model import transfer_from_action_trace, transfer_from_json

PYTHON = sys.executable


def _serve(*flags: str, env: dict | None = None) -> tuple[subprocess.Popen, list[str]]:
    process = subprocess.Popen(
        [PYTHON, "-m", "karma_analytics.devnet", "serve", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = process.stdout.readline().strip()
    return process, [first]


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_serve_prints_url_first_and_exits_zero_on_sigterm():
    process, lines = _serve("--head", "3000", "--block-interval", "0", "--transfers-per-block", "2")
    try:
        url = lines[0]
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/v1/stream")

        async def scenario() -> list:
            ws = await open_ws(url)
            await send(ws, traces_request(start_block=10))
            assert (await recv(ws))["data"] == {"next_block": 10}
            message = await recv(ws)
            await ws.close()
            return [transfer_from_action_trace(message["data"])]

        records = run(scenario())
        expected = next(iter(Chain(seed=7, transfers_per_block=2).truth(10, 3000)))
        assert records[0] == expected
    finally:
        code = _stop(process)
    assert code == 0


@pytest.mark.slow
def test_serve_with_api_key_prints_auth_url_second_and_sigint():
    env = {**os.environ, "KARMA_DEVNET_API_KEY": "server_key_from_env"}
    process, lines = _serve("--block-interval", "0", "--head", "100", env=env)
    try:
        lines.append(process.stdout.readline().strip())
        assert lines[0].startswith("ws://") and lines[1].startswith("http://127.0.0.1:")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=10)
    assert code == 0
    assert "server_key_from_env" not in process.stderr.read()


@pytest.mark.slow
def test_truth_cli_prints_json_lines_equal_to_truth():
    result = subprocess.run(
        [PYTHON, "-m", "karma_analytics.devnet", "truth", "--seed", "9", "--from", "1",
         "--to", "800", "--transfers-per-block", "1.5"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    expected = list(Chain(seed=9, transfers_per_block=1.5).truth(1, 800))
    assert len(lines) == len(expected) > 100
    assert [transfer_from_json(json.loads(line)) for line in lines] == expected
    first = json.loads(lines[0])
    assert first["block_time"].endswith("Z") and first["contract"] == "therealkarma"


@pytest.mark.slow
def test_truth_cli_rejects_bad_density():
    result = subprocess.run(
        [PYTHON, "-m", "karma_analytics.devnet", "truth", "--from", "1", "--to", "2",
         "--transfers-per-block", "-1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "transfers_per_block" in result.stderr


def test_thread_runner_serves_sync_clients():
    with run_devnet_in_thread(head=3000, block_interval=0, transfers_per_block=2) as devnet:
        with sync_connect(devnet.url, compression=None, close_timeout=0.2) as ws:
            ws.send(json.dumps(traces_request(start_block=50)))
            assert json.loads(ws.recv(timeout=5))["type"] == "listening"
            message = json.loads(ws.recv(timeout=5))
            assert transfer_from_action_trace(message["data"]) == next(
                iter(devnet.chain.truth(50, 3000))
            )
        devnet.wait_for(lambda: devnet.stats.open_connections == 0)
        assert devnet.stats.connections == 1 and devnet.head == 3000 and devnet.lib == 2998
        token, expires_at = devnet.issue_token()
        assert token.count(".") == 2 and expires_at > 0
    with pytest.raises(RuntimeError):
        run_devnet_in_thread(port=devnet.server.port, host="256.0.0.1").__enter__()


@pytest.mark.devnet(head=777, block_interval=0, drop_every=3)
def test_devnet_fixture_with_marker(devnet):
    assert devnet.head == 777

    async def scenario() -> int:
        ws = await open_ws(devnet.url)
        await send(ws, traces_request(start_block=1))
        count = 0
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
                count += 1
        except Exception:
            return count

    assert run(scenario()) == 3


def test_devnet_factory(devnet_factory):
    a = devnet_factory(seed=1, block_interval=0)
    b = devnet_factory(seed=2, block_interval=0)
    assert a.url != b.url
    assert a.chain.block_id(5) != b.chain.block_id(5)
