"""The collector CLI end to end: real child processes against a real devnet on loopback."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
from collect_helpers import (
    RANGE_LAST,
    check_prefix_of_truth,
    child_env,
    cli_args,
    committed_rows,
    next_block,
    range_args,
    run_cli,
    wait_for,
)

import karma_analytics.collect as collect_module
from karma_analytics.model import transfer_from_json


def test_help_documents_exit_codes_and_flags() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    for text in (
        "--endpoint",
        "--network",
        "--demo",
        "--api-key",
        "--stop-block",
        "--include-reversible",
        "--flush-rows",
        "--flush-seconds",
        "--quiet",
        "exit codes:",
        "130",
        "DFUSE_API_KEY",
    ):
        assert text in done.stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130"):
        assert f"\n  {code}" in done.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        ((), "no endpoint"),
        (("--source", "dfuse", "--endpoint", "http://example.org"), "ws:// or wss://"),
        (("--network", "mainnet"), "hosted dfuse service shut down in 2024"),
        (("--source", "dfuse", "--network", "eos"), "--source hyperion --network eos"),
        (("--endpoint", "ws://127.0.0.1:9", "--contract", "Bad!"), "invalid contract name 'Bad!'"),
        (("--endpoint", "ws://127.0.0.1:9", "--chain-id", "abc"), "64 hex digits"),
        (("--demo", "--contract", "eosio.token"), "does not take --contract"),
        (
            ("--demo", "--start-block", "5", "--include-reversible"),
            "--start-block, --include-reversible",
        ),
        (("--endpoint", "ws://127.0.0.1:9/v1/stream", "--flush-rows", "0"), "flush_rows"),
        (
            (
                "--endpoint",
                "ws://127.0.0.1:9/v1/stream",
                "--start-block",
                "50",
                "--stop-block",
                "10",
            ),
            "below start_block",
        ),
        (("--network", "nowhere"), "not a known"),
        (("--demo", "--endpoint", "ws://x/v1/stream"), "not allowed with"),
    ],
)
@pytest.mark.slow
def test_usage_errors_exit_2(tmp_path, args, needle) -> None:
    done = run_cli(*args, "--out", str(tmp_path / "d"), timeout=60)
    assert done.returncode == collect_module.EXIT_USAGE, done.stderr
    assert needle in done.stderr
    assert not (tmp_path / "d").exists()  # refused before the folder (or its lock) existed
    assert not (tmp_path / "d").exists()  # refused before the folder (or its lock) existed
    assert committed_rows(tmp_path / "d") == []


def run_python(
    code: str, *, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``python -c code`` in a child with the test environment; output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=child_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_cli_module_does_not_import_pandas_or_matplotlib() -> None:
    code = (
        "import sys, karma_analytics.collect as c, karma_analytics.engine, "
        "karma_analytics.store, karma_analytics.sources.dfuse, karma_analytics.progress;"
        "bad = [m for m in ('pandas', 'matplotlib') if m in sys.modules];"
        "assert not bad, bad"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_cli_memory_setup_is_in_place_before_pyarrow_loads() -> None:
    # Our decision (collect.tune_memory): the CLI module loads without pyarrow, so the system
    # allocator can be chosen for libarrow's default pool through ARROW_DEFAULT_MEMORY_POOL
    # before it loads; an explicit choice in the environment wins; glibc's mmap threshold is
    # pinned unless MALLOC_MMAP_THRESHOLD_ says otherwise. What the allocators then do with
    # that (RSS, mimalloc's peak) is bench/check_memory_tuning.py's to measure, not a test's.
    code = (
        "import json, os, sys\n"
        "import karma_analytics.collect as c\n"
        "loaded_before = 'pyarrow' in sys.modules\n"
        "c.tune_memory()\n"
        "import pyarrow as pa\n"
        "print(json.dumps([loaded_before, os.environ.get('ARROW_DEFAULT_MEMORY_POOL'),\n"
        "                  pa.default_memory_pool().backend_name,\n"
        "                  c._fix_malloc_mmap_threshold()]))\n"
    )
    env = child_env()
    for name in ("MALLOC_MMAP_THRESHOLD_", "ARROW_DEFAULT_MEMORY_POOL"):
        env.pop(name, None)
    seen = {}
    for case, extra in {
        "default": {},
        "explicit": {"ARROW_DEFAULT_MEMORY_POOL": "mimalloc", "MALLOC_MMAP_THRESHOLD_": "65536"},
    }.items():
        done = run_python(code, env={**env, **extra})
        assert done.returncode == 0, done.stderr
        seen[case] = json.loads(done.stdout)
    glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert seen["default"] == [False, "system", "system", glibc]
    assert seen["explicit"] == [False, "mimalloc", "mimalloc", False]


@pytest.mark.slow
def test_cli_collects_without_loading_pandas_and_pandas_works_after(tmp_path) -> None:
    # Our decision (collect.pandas_kept_out): the collector is pyarrow-only, and pyarrow would
    # otherwise import pandas at the first row conversion. The demo commits, compacts and
    # prints its top accounts; afterwards pandas imports and pyarrow converts to it as usual.
    code = (
        "import json, sys\n"
        "import karma_analytics.collect as c\n"
        f"exit_code = c.main(['--demo', '--out', {str(tmp_path / 'demo')!r}, '--quiet'])\n"
        "loaded = 'pandas' in sys.modules\n"
        "import pyarrow as pa\n"
        "frame = pa.table({'a': [1, 2]}).to_pandas()\n"
        "print(json.dumps([exit_code, loaded, type(frame).__name__, int(frame['a'].sum())]))\n"
    )
    done = run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [0, False, "DataFrame", 3]
    assert "rows over 2 UTC day(s)" in done.stdout


# --- end to end against the devnet -------------------------------------------------------------


FAST = ("--flush-rows", "40", "--flush-seconds", "0.2", "--stall-seconds", "3")


def devnet_truth_cli(first: int, last: int) -> list:
    """The expected rows, from ``python -m karma_analytics.devnet truth`` (JSON lines)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "karma_analytics.devnet",
            "truth",
            "--from",
            str(first),
            "--to",
            str(last),
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [transfer_from_json(json.loads(line)) for line in done.stdout.splitlines() if line]


def test_collects_a_range_exactly_then_rerun_is_already_complete(net, tmp_path) -> None:
    out = tmp_path / "transfers"
    done = run_cli(
        *range_args(net.url, out, 1, RANGE_LAST),
        *FAST,
    )
    assert done.returncode == 0, done.stderr
    assert "fresh dataset: starting at block 1" in done.stderr
    assert "collection complete" in done.stdout
    truth = devnet_truth_cli(1, RANGE_LAST)
    assert len(truth) > 500
    rows = committed_rows(out)
    assert rows == truth  # exact: same rows, same order (global_sequence), no extra, no dup
    assert next_block(out) == RANGE_LAST + 1
    assert f"{len(truth):,} rows" in done.stdout

    again = run_cli(
        "--endpoint", net.url, "--out", str(out), "--stop-block", str(RANGE_LAST), *FAST, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout
    assert committed_rows(out) == truth


@pytest.mark.slow
def test_resumes_from_sidecar_and_warns_about_conflicting_start(net, tmp_path) -> None:
    out = tmp_path / "transfers"
    first = run_cli(
        *range_args(net.url, out, 100, 1200),
        *FAST,
    )
    assert first.returncode == 0, first.stderr
    assert next_block(out) == 1201
    second = run_cli(
        *range_args(net.url, out, 5, RANGE_LAST),
        *FAST,
    )
    assert second.returncode == 0, second.stderr
    assert "resuming at block 1201" in second.stderr
    assert "ignoring --start-block 5" in second.stderr
    assert committed_rows(out) == list(net.chain.truth(100, RANGE_LAST))


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_args(*args), env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_sigint_commits_complete_blocks_and_exits_0(net_factory, tmp_path) -> None:
    live = net_factory(head=400, block_interval=0.02)  # a moving head: the run never ends
    out = tmp_path / "transfers"
    proc = _spawn("--endpoint", live.url, "--out", str(out), "--start-block", "1", *FAST)
    try:
        wait_for(lambda: (next_block(out) or 0) > 300, timeout=60, what="a few commits")
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert time.monotonic() - began < 10  # bounded shutdown
    assert "stopped on request" in stdout
    upto = next_block(out)
    assert upto is not None and upto > 300
    check_prefix_of_truth(committed_rows(out), list(live.chain.truth(1, upto)), upto)


@pytest.mark.slow
def test_second_sigint_exits_130_and_dataset_stays_consistent(net_factory, tmp_path) -> None:
    live = net_factory(head=400, block_interval=0.02)
    out = tmp_path / "transfers"
    proc = _spawn("--endpoint", live.url, "--out", str(out), "--start-block", "1", *FAST)
    try:
        wait_for(lambda: (next_block(out) or 0) > 200, timeout=60, what="a few commits")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    # The second signal may land after the clean stop finished: then the exit is 0.
    assert proc.returncode in (130, 0), stderr
    upto = next_block(out)
    check_prefix_of_truth(committed_rows(out), list(live.chain.truth(1, upto)), upto)
    # ... and a rerun continues exactly.
    final = run_cli(
        "--endpoint", live.url, "--out", str(out), "--stop-block", str(upto + 100), *FAST
    )
    assert final.returncode == 0, final.stderr
    assert committed_rows(out) == list(live.chain.truth(1, upto + 100))


@pytest.mark.slow
def test_api_key_from_environment_and_progress_lines(net_factory, tmp_path) -> None:
    key = "server_demo0123456789abcdef0123456789"
    secured = net_factory(api_key=key)
    out = tmp_path / "transfers"
    done = run_cli(
        *range_args(secured.url, out, 1, 800),
        "--auth-url",
        secured.auth_url,
        *FAST,
        env=child_env(DFUSE_API_KEY=key),
    )
    assert done.returncode == 0, done.stderr
    assert committed_rows(out) == list(secured.chain.truth(1, 800))
    assert secured.stats.tokens_issued >= 1
    assert key not in done.stderr + done.stdout
    # not a terminal: plain log lines, no tqdm carriage returns
    assert "\r" not in done.stderr
    assert "| rows " in done.stderr


@pytest.mark.slow
def test_progress_bar_on_a_terminal(net, tmp_path) -> None:
    """On a terminal: a tqdm bar (blocks toward the stop block, rows, rows/s, reconnects)."""
    import pty

    out = tmp_path / "transfers"
    leader, follower = pty.openpty()
    # A wide terminal: at 80 columns a fast run's rate ("19.2Mblk/s") pushes the bar's last
    # fields off the line.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
    proc = None
    try:
        proc = subprocess.Popen(
            cli_args(
                *range_args(net.url, out, 1, RANGE_LAST),
                "--flush-rows",
                "40",
            ),
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO once the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
    finally:
        os.close(leader)
        if proc is not None and proc.poll() is None:
            proc.kill()
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen[-2000:]
    assert "\r" in screen  # redrawn in place
    assert "blk" in screen and "rows/s" in screen and "reconnects" in screen
    assert "100%" in screen


@pytest.mark.slow
def test_demo_collects_two_days_under_a_minute_and_rerun_is_instant(tmp_path) -> None:
    out = tmp_path / "demo"
    began = time.monotonic()
    done = run_cli("--demo", "--out", str(out), "--quiet", timeout=180)
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-2000:]
    assert seconds < 60, seconds
    assert "collection complete" in done.stdout
    assert "2 UTC day(s)" in done.stdout and "top senders by amount" in done.stdout
    rows = committed_rows(out)
    assert len(rows) >= 50_000
    assert len({r.block_time // 86_400_000 for r in rows}) >= 2
    from karma_analytics.devnet.chain import Chain
    from karma_analytics.devnet.testing import DEMO_RANGE

    assert rows == list(Chain(seed=7).truth(*DEMO_RANGE))
    began = time.monotonic()
    again = run_cli("--demo", "--out", str(out), "--quiet", timeout=60)
    assert again.returncode == 0
    assert "already complete" in again.stdout
    assert time.monotonic() - began < 10
