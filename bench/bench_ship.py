"""SHiP benchmarks (issue 10): decode rate, and end to end vs a bare websockets client.

    python bench/bench_ship.py decode [--blocks 3000]
    python bench/bench_ship.py e2e --blocks 20000 [--collector]

``decode``: block results at mainnet-like density (about 150 action traces per block in ~50
transactions, the contract present in ~2 % of blocks), encoded once with the devnet encoder,
then decoded by ``BlockDecoder`` (result header, traces walk, events): blocks per second on one
core, with the default quick path (payloads without a match's receiver, account and name bytes
are not walked) and with ``full_scan`` (every trace walked). Target >= 3,000 blocks/s.

``e2e``: a SHiP devnet server in a subprocess; a bare client that only receives the binary
frames and acks them (same window), then — with ``--collector`` — ``python -m
karma_analytics.collect --source ship`` over the same range into a temporary dataset. Target
ratio collector / bare >= 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from karma_analytics.devnet.chain import DEFAULT_TRANSFERS_PER_BLOCK
from karma_analytics.model import name_to_uint64
from karma_analytics.runner import DEFAULT_FLUSH_ROWS
from karma_analytics.sources.ship import codec
from karma_analytics.sources.ship.decode import BlockDecoder

_NAMES = [name_to_uint64(n) for n in ("eosio.token", "eosio", "alcorammswap", "bigexchange1",
                                       "someuser1234", "otheruser555", "gamecontract")]  # fmt: skip
_KARMA = name_to_uint64("therealkarma")
_TRANSFER = name_to_uint64("transfer")


def _action(
    w: codec.Writer, rng: random.Random, ordinal: int, receiver: int, account: int, name: int
) -> None:
    data = rng.randbytes(rng.choice((33, 45, 60, 90, 140)))
    w.varuint(1).varuint(ordinal).varuint(0 if ordinal == 1 else 1)
    w.u8(1).varuint(0).u64(receiver).raw(rng.randbytes(32)).u64(rng.getrandbits(40))
    w.u64(rng.getrandbits(30)).varuint(1).u64(account).u64(rng.getrandbits(20))
    w.varuint(rng.randrange(1, 300)).varuint(rng.randrange(1, 30))
    w.u64(receiver).u64(account).u64(name).varuint(1).u64(account).u64(name_to_uint64("active"))
    w.bytes_(data).u8(0).i64(0).varuint(0).varuint(0).u8(0).u8(0).varuint(0)


def mainnet_like_block(rng: random.Random, num: int, with_karma: bool) -> bytes:
    """One encoded get_blocks_result_v0: ~150 action traces in ~50 transactions."""
    w = codec.Writer()
    transactions = 50
    w.varuint(transactions)
    karma_at = rng.randrange(transactions) if with_karma else -1
    for t in range(transactions):
        w.varuint(0).raw(rng.randbytes(32)).u8(0).u32(300).varuint(20).i64(0).u64(160).u8(0)
        w.varuint(3)
        if t == karma_at:
            data = codec.encode_transfer_data(
                codec.TransferData("alice", "bob", 12345, 4, "KARMA", "hi")
            )
            w.varuint(1).varuint(1).varuint(0).u8(1).varuint(0).u64(_KARMA).raw(b"\x11" * 32)
            w.u64(10**10 + num).u64(5).varuint(1).u64(1).u64(1).varuint(1).varuint(1)
            w.u64(_KARMA).u64(_KARMA).u64(_TRANSFER).varuint(1).u64(1).u64(2).bytes_(data)
            w.u8(0).i64(0).varuint(0).varuint(0).u8(0).u8(0).varuint(0)
            first = 2
        else:
            account = rng.choice(_NAMES)
            _action(w, rng, 1, account, account, _TRANSFER)
            first = 2
        for ordinal in range(first, 4):
            _action(w, rng, ordinal, rng.choice(_NAMES), rng.choice(_NAMES), _TRANSFER)
        w.u8(0).u8(0).u8(0).u8(0)
        # partial with one K1 signature
        w.u8(1).varuint(0).u32(0).u16(0).u32(0).varuint(0).u8(0).varuint(0).varuint(0)
        w.varuint(1).u8(0).raw(rng.randbytes(65)).varuint(0)
    traces = w.getvalue()
    block = (1_700_000_000 + num).to_bytes(4, "little") + rng.randbytes(200)
    position = codec.BlockPosition(num, num.to_bytes(4, "big") + rng.randbytes(28))
    result = codec.GetBlocksResultV0(
        position, position, position, codec.BlockPosition(num - 1, position.block_id),
        block, traces, None,
    )  # fmt: skip
    return codec.encode_result(result)


def bench_decode(blocks: int) -> None:
    rng = random.Random(10)
    messages = [mainnet_like_block(rng, 1000 + i, rng.random() < 0.02) for i in range(blocks)]
    traces_per_block = 150
    size = sum(map(len, messages)) / len(messages)
    print(f"{blocks} blocks, {traces_per_block} action traces each, {size / 1000:.1f} KB/result")
    for full_scan in (False, True):
        decoder = BlockDecoder(None, full_scan=full_scan)
        for label, decode in (
            ("block_message, the source's path", decoder.block_message),
            ("block(result()), the general path", lambda m, d=decoder: d.block(d.result(m))),
        ):
            best = 0.0
            rows = 0
            for _ in range(3):
                # CPU time of this (single-threaded) loop: "on one core", and robust to a
                # machine busy with other work.
                start = time.process_time()
                rows = 0
                for message in messages:
                    rows += len(decode(message).events) - 1
                best = max(best, blocks / (time.process_time() - start))
            scan = "full scan" if full_scan else "quick path"
            print(f"  decode ({scan}, {label}): {best:,.0f} blocks/s ({rows} transfers)")


async def bare(url: str, first: int, last: int, window: int) -> tuple[float, int]:
    """The bare client: the collector's requests (status, then blocks with the same window and
    flags), then receive every binary frame and ack it; nothing is decoded. Returns (seconds,
    bytes received)."""
    from websockets.asyncio.client import connect

    began = time.perf_counter()
    size = 0
    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        await ws.recv()  # ABI
        await ws.send(codec.encode_request(codec.GetStatusRequestV0()))
        await ws.recv(decode=False)
        request = codec.GetBlocksRequestV0(first, last + 1, window, (), True, True, True, False)
        await ws.send(codec.encode_request(request))
        # Acks of a quarter window at a time: the window never runs dry, and the server reads
        # a few hundred acks rather than one per result (the collector acks once per read).
        step = max(1, window // 4)
        ack = codec.encode_request(codec.GetBlocksAckRequestV0(step))
        total = last - first + 1
        for count in range(1, total + 1):
            size += len(await ws.recv(decode=False))
            if count % step == 0:
                await ws.send(ack)
    return time.perf_counter() - began, size


async def source_only(url: str, first: int, last: int, window: int) -> tuple[float, int]:
    """ShipSource alone: frames decoded into engine events, no engine, no store."""
    from karma_analytics.sources.base import Selection
    from karma_analytics.sources.ship import ShipSource

    began = time.perf_counter()
    events = 0
    source = ShipSource(url, Selection(), stop_block=last, max_messages_in_flight=window)
    async for batch in source.stream(first):
        events += len(batch)
    return time.perf_counter() - began, events


def collector(url: str, first: int, last: int, window: int, flush_rows: int) -> tuple[float, int]:
    """The real Collector (ShipSource, engine, store) into a fresh folder, in this process."""
    from karma_analytics.collect import CollectConfig, Collector

    folder = Path(tempfile.mkdtemp(prefix="bench-ship-"))
    try:
        config = CollectConfig(
            source="ship",
            endpoint=url,
            out=folder / "transfers",
            start_block=first,
            stop_block=last,
            flush_rows=flush_rows,
            source_options={},
        )
        began = time.perf_counter()
        summary = asyncio.run(Collector(config).run())
        return time.perf_counter() - began, summary.rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(pid: int, run: Callable[[], tuple[float, int]]) -> tuple[float, int, float, float]:
    """``run()``'s (seconds, count) plus the server's and this process's CPU share of it."""
    server0, own0 = _cpu_seconds(pid), time.process_time()
    seconds, count = run()
    server = (_cpu_seconds(pid) - server0) / seconds
    own = (time.process_time() - own0) / seconds
    return seconds, count, server, own


def bench_e2e(blocks: int, runs: int, window: int, flush_rows: int, per_block: float) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "karma_analytics.devnet", "serve", "--protocol", "ship",
         "--block-interval", "0", "--head", str(blocks + 100),
         "--transfers-per-block", str(per_block), "--result-cache-mb", "1024"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        # Warm-up, not counted: fills the server's cache of encoded results (the server then
        # sends cached bytes to both clients alike) and imports the collector's modules.
        _, size = asyncio.run(bare(url, 1, blocks, window))
        collector(url, 1, blocks, window, flush_rows)
        print(
            f"SHiP devnet {url}: blocks 1..{blocks:,}, {size / blocks / 1000:.1f} KB/result, "
            f"window {window}, flush_rows {flush_rows}"
        )
        bare_t, source_t, coll_t = [], [], []
        bare_cpu, coll_cpu = [], []  # client CPU seconds (robust to a busy machine)
        rows = 0
        pid = server.pid
        for run in range(runs):
            b, _, b_srv, b_own = _timed(pid, lambda: asyncio.run(bare(url, 1, blocks, window)))
            s, _, s_srv, s_own = _timed(
                pid, lambda: asyncio.run(source_only(url, 1, blocks, window))
            )
            c, rows, c_srv, c_own = _timed(
                pid, lambda: collector(url, 1, blocks, window, flush_rows)
            )
            bare_t.append(b)
            source_t.append(s)
            coll_t.append(c)
            bare_cpu.append(b * b_own)
            coll_cpu.append(c * c_own)
            print(
                f"run {run + 1}: bare {b:.2f} s (server CPU {b_srv:.0%}, client {b_own:.0%}), "
                f"source only {s:.2f} s ({s_srv:.0%}, {s_own:.0%}), collector {c:.2f} s "
                f"({c_srv:.0%}, {c_own:.0%}; {rows:,} rows), ratio {b / c:.2f}"
            )
        b, s, c = (statistics.median(t) for t in (bare_t, source_t, coll_t))
        b_cpu, c_cpu = statistics.median(bare_cpu), statistics.median(coll_cpu)
        print(
            f"median bare websockets: {b:.2f} s = {blocks / b:,.0f} blocks/s\n"
            f"median source only:     {s:.2f} s = {blocks / s:,.0f} blocks/s\n"
            f"median collector:       {c:.2f} s = {blocks / c:,.0f} blocks/s, {rows:,} rows\n"
            f"ratio (bare time / collector time): {b / c:.2f}  (target >= 0.7)\n"
            f"median of the per-run ratios:       "
            f"{statistics.median(x / y for x, y in zip(bare_t, coll_t, strict=True)):.2f}\n"
            f"client CPU, medians: bare {b_cpu:.2f} s, collector {c_cpu:.2f} s; "
            f"ratio {b_cpu / c_cpu:.2f}"
        )
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    decode = sub.add_parser("decode")
    decode.add_argument("--blocks", type=int, default=3000)
    e2e = sub.add_parser("e2e")
    e2e.add_argument("--blocks", type=int, default=50_000)
    e2e.add_argument("--runs", type=int, default=5)
    e2e.add_argument("--window", type=int, default=64)
    e2e.add_argument("--flush-rows", type=int, default=DEFAULT_FLUSH_ROWS)
    e2e.add_argument("--per-block", type=float, default=DEFAULT_TRANSFERS_PER_BLOCK)
    args = parser.parse_args()
    if args.what == "decode":
        bench_decode(args.blocks)
    else:
        from karma_analytics.collect import tune_gc

        # As the CLI runs (collect.main calls it); both clients run in this process alike.
        tune_gc()
        bench_e2e(args.blocks, args.runs, args.window, args.flush_rows, args.per_block)


if __name__ == "__main__":
    main()
