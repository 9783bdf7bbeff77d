"""Faults end to end: a misbehaving server, a failing disk, a damaged or busy dataset.

Server faults run the real CLI against a devnet with fault flags; each test checks that the
fault really happened (devnet counters), so it can fail. Storage faults run the runner
in-process with ``os.write`` failing for chosen files (ENOSPC), or the CLI as an unprivileged
user on a folder it cannot write. After every fault, a plain rerun must finish with exactly
the truth: nothing lost, nothing twice.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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

from karma_analytics import layout
from karma_analytics.collect import (
    EXIT_DATASET,
    EXIT_ERROR,
    EXIT_LOCKED,
    CollectConfig,
    Collector,
)
from karma_analytics.exceptions import StoreError

FAST = ("--quiet", "--flush-rows", "40", "--flush-seconds", "0.2", "--stall-seconds", "2")


def collect_range(url: str, out: Path, *extra: str, stop: int = RANGE_LAST, timeout: float = 120):
    return run_cli(
        *range_args(url, out, 1, stop),
        *FAST,
        *extra,
        timeout=timeout,
    )


# --- server faults: the collector recovers by itself ------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "options, happened",
    [
        ({"drop_every": 97}, lambda s: s.dropped_connections >= 3),
        ({"drop_rate": 0.01, "fault_seed": 3}, lambda s: s.dropped_connections >= 2),
        ({"accept_then_drop": 3}, lambda s: s.connections >= 4),
        ({"drop_every": 150, "close_code": 1000}, lambda s: s.closed_by_fault >= 2),
        ({"drop_every": 150, "close_code": 1009}, lambda s: s.closed_by_fault >= 2),
        ({"refuse_handshakes": 3}, lambda s: s.refused_handshakes == 3),
        ({"stall_after": 300}, lambda s: s.stalled_streams >= 2),
        (
            {"malformed_rate": 0.01, "malformed_kind": "json", "fault_seed": 5},
            lambda s: s.malformed_sent >= 2,
        ),
    ],
    ids=[
        "drop-every",
        "drop-random",
        "accept-then-drop",
        "close-1000",
        "close-1009",
        "refused-handshakes",
        "silent-stall",
        "malformed-json",
    ],
)
def test_transient_server_faults_lose_nothing(net_factory, tmp_path, options, happened) -> None:
    server = net_factory(**options)
    out = tmp_path / "transfers"
    done = collect_range(server.url, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert happened(server.stats), server.stats
    assert committed_rows(out) == list(server.chain.truth(1, RANGE_LAST))
    assert "reconnects 0" not in done.stdout


@pytest.mark.slow
def test_malformed_fields_are_rejected_and_kept(net_factory, tmp_path) -> None:
    """A trace with a broken field is kept in _rejects with its reason, never silently lost.

    The devnet sends the broken trace instead of the real one (a transfer whose data really is
    malformed). Every transfer of the range is then either committed or rejected, exactly once.
    """
    server = net_factory(malformed_rate=0.02, malformed_kind="field", fault_seed=11)
    out = tmp_path / "transfers"
    done = collect_range(server.url, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.stats.malformed_sent >= 5
    truth = list(server.chain.truth(1, RANGE_LAST))
    rows = committed_rows(out)
    assert set(rows) <= set(truth)
    rejects = []
    for path in sorted((out / layout.REJECTS_DIR).glob("*.jsonl")):
        rejects += [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rejects) >= 5
    assert all(r["reason"] and r["block_num"] <= RANGE_LAST for r in rejects)
    kept = [(r.trx_id, r.action_idx) for r in rows] + [
        (r["trx_id"], r["action_idx"]) for r in rejects
    ]
    assert sorted(kept) == sorted((t.trx_id, t.action_idx) for t in truth)
    cursor = layout.read_cursor(__import__("pyarrow.fs").fs.LocalFileSystem(), str(out))
    assert cursor.rejects == len(rejects)
    assert f"{len(rejects)} rejects" in done.stdout


@pytest.mark.slow
def test_expired_tokens_are_renewed_on_reconnect(net_factory, tmp_path) -> None:
    key = "server_expiring0123456789abcdef01"
    server = net_factory(api_key=key, token_ttl=1.0, drop_every=120)
    out = tmp_path / "transfers"
    done = run_cli(
        *range_args(server.url, out, 1, RANGE_LAST),
        "--auth-url",
        server.auth_url,
        *FAST,
        env=child_env(DFUSE_API_KEY=key),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.stats.tokens_issued >= 2
    assert committed_rows(out) == list(server.chain.truth(1, RANGE_LAST))


# --- fatal server faults: clear error, non-zero exit, rerun after the fix is exact ------------


@pytest.mark.slow
def test_history_limit_is_fatal_then_rerun_completes(net_factory, tmp_path) -> None:
    limited = net_factory(history_limit=1000)  # blocks before head-1000 are refused
    out = tmp_path / "transfers"
    done = collect_range(limited.url, out, timeout=60)
    assert done.returncode == EXIT_ERROR
    assert "auth_invalid_streaming_start_block_error" in done.stderr
    assert "may not go back that far" in done.stderr
    # The fresh dataset recorded nothing it did not see; fixed (a key with more history):
    fixed = net_factory()
    again = collect_range(fixed.url, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert committed_rows(out) == list(fixed.chain.truth(1, RANGE_LAST))


@pytest.mark.slow
def test_missing_or_wrong_api_key_is_fatal_then_rerun_completes(net_factory, tmp_path) -> None:
    key = "server_right0123456789abcdef012345"
    secured = net_factory(api_key=key)
    out = tmp_path / "transfers"
    no_key = collect_range(secured.url, out, timeout=60)
    assert no_key.returncode == EXIT_ERROR
    assert "401" in no_key.stderr and "authentication" in no_key.stderr
    wrong = "server_wrong0123456789abcdef012345"
    bad = collect_range(
        secured.url, out, "--api-key", wrong, "--auth-url", secured.auth_url, timeout=60
    )
    assert bad.returncode == EXIT_ERROR
    assert "refused the API key" in bad.stderr
    assert wrong not in bad.stderr + bad.stdout
    good = collect_range(secured.url, out, "--api-key", key, "--auth-url", secured.auth_url)
    assert good.returncode == 0, good.stderr[-3000:]
    assert committed_rows(out) == list(secured.chain.truth(1, RANGE_LAST))


# --- storage faults -----------------------------------------------------------------------------


def _fail_writes(monkeypatch, predicate, *, after: int = 0) -> dict[str, int]:
    """Make ``os.write`` fail with ENOSPC for files whose name matches, after ``after`` hits."""
    real_write = os.write
    seen = {"hits": 0, "failed": 0}

    def write(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            name = ""
        if predicate(name):
            seen["hits"] += 1
            if seen["hits"] > after:
                seen["failed"] += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return seen


def _in_process_collector(url: str, out: Path) -> Collector:
    """The collector of ``python -m karma_analytics.collect`` for blocks 1..RANGE_LAST, in
    this process (so that ``os.write`` can be patched)."""
    config = CollectConfig(
        endpoint=url,
        out=out,
        start_block=1,
        stop_block=RANGE_LAST,
        flush_rows=40,
        flush_seconds=0.2,
    )
    return Collector(config)


@pytest.mark.parametrize(
    "which, after",
    [
        # the first data commit's part (the listening commit before it writes no part)
        pytest.param(lambda n: n.startswith(".part-"), 0, id="disk-full-writing-a-part"),
        # the sidecar of the first data commit (its parts are already in place)
        pytest.param(lambda n: n.startswith("._cursor"), 1, id="disk-full-writing-the-sidecar"),
    ],
)
def test_disk_full_stops_with_clear_error_and_rerun_is_exact(
    net, tmp_path, monkeypatch, which, after
) -> None:
    out = tmp_path / "transfers"
    seen = _fail_writes(monkeypatch, which, after=after)
    collector = _in_process_collector(net.url, out)
    with pytest.raises(StoreError) as caught:
        asyncio.run(collector.run())
    assert seen["failed"] == 1
    message = str(caught.value)
    assert "disk is full" in message and "free some disk space" in message
    assert collector.status.state == "failed" and "disk is full" in collector.status.error
    upto = next_block(out)
    truth = list(net.chain.truth(1, RANGE_LAST))
    check_prefix_of_truth(committed_rows(out), truth, upto)
    assert not [p for p in out.rglob(".*") if p.name != layout.LOCK_FILE]  # temps removed
    monkeypatch.undo()
    summary = asyncio.run(_in_process_collector(net.url, out).run())
    assert summary.reason == "complete"
    assert committed_rows(out) == truth


@pytest.mark.slow
def test_disk_full_exits_1_from_the_cli(net, tmp_path) -> None:
    """The same through the CLI: exit 1 and the store's message, no traceback."""
    out = tmp_path / "transfers"
    hook = tmp_path / "hook"
    hook.mkdir()
    # A sitecustomize in the child makes every write of a part temp file fail.
    (hook / "sitecustomize.py").write_text(
        "import errno, os\n"
        "_w = os.write\n"
        "_n = [0]\n"
        "def _write(fd, data):\n"
        "    try:\n"
        "        name = os.path.basename(os.readlink(f'/proc/self/fd/{fd}'))\n"
        "    except OSError:\n"
        "        name = ''\n"
        "    if name.startswith('.part-'):\n"
        "        _n[0] += 1\n"
        "        if _n[0] > 0:\n"
        "            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "    return _w(fd, data)\n"
        "os.write = _write\n"
    )
    env = child_env()
    env["PYTHONPATH"] = str(hook) + os.pathsep + env["PYTHONPATH"]
    done = run_cli(*range_args(net.url, out, 1, RANGE_LAST), *FAST, env=env)
    assert done.returncode == EXIT_ERROR, done.stderr[-2000:]
    assert "error: could not write a part" in done.stderr
    assert "disk is full" in done.stderr
    assert "Traceback" not in done.stderr
    again = collect_range(net.url, out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert committed_rows(out) == list(net.chain.truth(1, RANGE_LAST))


def _make_read_only(folder: Path) -> list[str]:
    """Make ``folder`` unwritable; returns the command that undoes it."""
    if os.geteuid() == 0:
        # root ignores permission bits; the immutable attribute stops root too (EPERM).
        subprocess.run(["chattr", "-R", "+i", str(folder)], check=True)
        return ["chattr", "-R", "-i", str(folder)]
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return ["chmod", "-R", "u+w", str(folder)]


@pytest.mark.slow
def test_read_only_folder_is_a_clear_error(net, tmp_path) -> None:
    out = tmp_path / "transfers"
    first = collect_range(net.url, out, stop=1000)
    assert first.returncode == 0, first.stderr
    undo = _make_read_only(out)
    try:
        done = run_cli(
            "--endpoint",
            net.url,
            "--out",
            str(out),
            "--stop-block",
            str(RANGE_LAST),
            *FAST,
            timeout=60,
        )
    finally:
        subprocess.run(undo, check=True)
    assert done.returncode == EXIT_ERROR, done.stderr[-2000:]
    text = done.stderr.lower()
    assert "not permitted" in text or "permission denied" in text, done.stderr[-2000:]
    assert "writable" in text and "Traceback" not in done.stderr
    assert committed_rows(out) == list(net.chain.truth(1, 1000))
    again = collect_range(net.url, out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert committed_rows(out) == list(net.chain.truth(1, RANGE_LAST))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_damaged_sidecar_exits_4_with_repair_command(net, tmp_path, damage) -> None:
    out = tmp_path / "transfers"
    assert collect_range(net.url, out, stop=1500).returncode == 0
    sidecar = out / layout.CURSOR_FILE
    data = sidecar.read_bytes()
    sidecar.write_bytes(b"\x00garbage{" if damage == "corrupt" else data[: len(data) // 2])
    done = collect_range(net.url, out, timeout=60)
    assert done.returncode == EXIT_DATASET
    assert "repair" in done.stderr and "Traceback" not in done.stderr
    repair = subprocess.run(
        [sys.executable, "-m", "karma_analytics.store", "repair", str(out)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert repair.returncode == 0, repair.stderr
    again = collect_range(net.url, out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert committed_rows(out) == list(net.chain.truth(1, RANGE_LAST))


@pytest.mark.slow
def test_second_collector_on_the_same_folder_exits_3(net_factory, tmp_path) -> None:
    live = net_factory(head=400, block_interval=0.02)
    out = tmp_path / "transfers"
    first = subprocess.Popen(
        cli_args("--endpoint", live.url, "--out", str(out), "--start-block", "1", *FAST),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (next_block(out) or 0) > 100, timeout=60, what="the first commits")
        second = run_cli("--endpoint", live.url, "--out", str(out), *FAST, timeout=60)
        assert second.returncode == EXIT_LOCKED
        assert "one writer at a time" in second.stderr and "Traceback" not in second.stderr
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=20)
    finally:
        first.kill()
    assert first.returncode == 0
    upto = next_block(out)
    final = run_cli(
        "--endpoint", live.url, "--out", str(out), "--stop-block", str(upto + 50), *FAST
    )
    assert final.returncode == 0, final.stderr[-2000:]
    assert committed_rows(out) == list(live.chain.truth(1, upto + 50))


@pytest.mark.slow
def test_mismatched_request_exits_4_and_loses_nothing(net, tmp_path) -> None:
    out = tmp_path / "transfers"
    assert collect_range(net.url, out, stop=1000).returncode == 0
    other = collect_range(net.url, out, "--contract", "eosio.token", timeout=60)
    assert other.returncode == EXIT_DATASET
    assert "collected with" in other.stderr and "contract" in other.stderr
    reversible = collect_range(net.url, out, "--include-reversible", timeout=60)
    assert reversible.returncode == EXIT_DATASET
    assert "irreversible_only" in reversible.stderr
    assert committed_rows(out) == list(net.chain.truth(1, 1000))
    again = collect_range(net.url, out)
    assert again.returncode == 0
    assert committed_rows(out) == list(net.chain.truth(1, RANGE_LAST))


# --- reversible mode -----------------------------------------------------------------------------


@pytest.mark.slow
def test_include_reversible_without_forks_is_exact(net_factory, tmp_path) -> None:
    server = net_factory()
    out = tmp_path / "transfers"
    done = collect_range(server.url, out, "--include-reversible")
    assert done.returncode == 0, done.stderr[-2000:]
    assert committed_rows(out) == list(server.chain.truth(1, RANGE_LAST))


@pytest.mark.slow
def test_include_reversible_with_forks_documented_behaviour(net_factory, tmp_path) -> None:
    """Forks in reversible mode (dfuse §3.8: no undo, replacement blocks re-use numbers).

    Documented behaviour (README, ``--include-reversible`` help): actions of blocks that are
    later forked out can be committed and are never taken back; a replacement block below the
    restart point is a protocol violation that restarts the stream, and the same violation
    repeated at the same restart point stops the collector with exit 1 and a clear message.
    Never a duplicate global_sequence, and every committed row is either canonical or carries
    the id of a forked-out block.
    """
    server = net_factory(fork_every=100, fork_depth=3)
    out = tmp_path / "transfers"
    done = collect_range(server.url, out, "--include-reversible")
    assert done.returncode == EXIT_ERROR
    assert "protocol violation" in done.stderr and "irreversible blocks only" in done.stderr
    assert "Traceback" not in done.stderr
    rows = committed_rows(out)
    seqs = [r.global_sequence for r in rows]
    assert rows and len(seqs) == len(set(seqs))
    upto = next_block(out)
    truth = set(server.chain.truth(1, upto - 1))
    forked = [r for r in rows if r not in truth]
    for row in forked:
        assert row.block_id != server.chain.block(row.block_num).id  # a forked-out block
    assert all(r.block_num < upto for r in rows)
