"""SHiP benchmarks (issue 10): decode rate, and end to end vs a bare websockets client.

    python bench/bench_ship.py decode [--blocks 3000]
    python bench/bench_ship.py e2e --blocks 20000 [--collector]

``decode``: block results at mainnet-like density (about 150 action traces per block in ~50
transactions, the contract present in ~2 % of blocks), encoded once with the devnet encoder,
then decoded by ``BlockDecoder`` (result header, traces walk, events): blocks per second on one
core, with the default quick path (payloads without the contract's name bytes are not walked)
and with ``full_scan`` (every trace walked). Target >= 3,000 blocks/s.

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
import subprocess
import sys
import tempfile
import time

from karma_analytics.model import name_to_uint64
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
        best = 0.0
        rows = 0
        for _ in range(3):
            start = time.perf_counter()
            rows = 0
            for message in messages:
                block = decoder.block(decoder.result(message))
                rows += len(block.events) - 1
            best = max(best, blocks / (time.perf_counter() - start))
        label = "full scan" if full_scan else "quick path"
        print(f"  decode ({label}): {best:,.0f} blocks/s ({rows} transfers)")


async def _bare_client(url: str, first: int, last: int, window: int) -> float:
    from websockets.asyncio.client import connect

    start = time.perf_counter()
    async with connect(url, max_size=None, compression=None) as ws:
        await ws.recv()  # ABI
        request = codec.GetBlocksRequestV0(first, last + 1, window, (), True, True, True, False)
        await ws.send(codec.encode_request(request))
        received = 0
        ack = codec.encode_request(codec.GetBlocksAckRequestV0(1))
        while received < last - first + 1:
            await ws.recv()
            received += 1
            await ws.send(ack)
    return time.perf_counter() - start


def bench_e2e(blocks: int, collector: bool, window: int) -> None:
    env = dict(os.environ)
    server = subprocess.Popen(
        [sys.executable, "-m", "karma_analytics.devnet", "serve", "--protocol", "ship",
         "--block-interval", "0", "--head", str(blocks + 100)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        # First pass warms the server's result cache for both runs alike.
        asyncio.run(_bare_client(url, 1, blocks, window))
        bare = asyncio.run(_bare_client(url, 1, blocks, window))
        print(f"bare client: {blocks / bare:,.0f} blocks/s ({bare:.2f} s)")
        if not collector:
            return
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "karma_analytics.collect", "--source", "ship",
                 "--endpoint", url, "--out", out, "--start-block", "1",
                 "--stop-block", str(blocks), "--quiet"],
                capture_output=True, text=True, env=env,
            )  # fmt: skip
            elapsed = time.perf_counter() - start
        if done.returncode != 0:
            print("collector failed:", done.stderr[-2000:])
            return
        print(f"collector:   {blocks / elapsed:,.0f} blocks/s ({elapsed:.2f} s, process incl.)")
        print(f"ratio collector/bare: {bare / elapsed:.2f}")
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    decode = sub.add_parser("decode")
    decode.add_argument("--blocks", type=int, default=3000)
    e2e = sub.add_parser("e2e")
    e2e.add_argument("--blocks", type=int, default=20_000)
    e2e.add_argument("--window", type=int, default=64)
    e2e.add_argument("--collector", action="store_true")
    args = parser.parse_args()
    if args.what == "decode":
        bench_decode(args.blocks)
    else:
        bench_e2e(args.blocks, args.collector, args.window)


if __name__ == "__main__":
    main()
