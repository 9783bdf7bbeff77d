"""Benchmark: action_trace frames per second from the devnet server to ONE bare client.

What is measured (history replay over loopback, server and client in separate processes):

* ``cold``: the first replay of a block range -- blocks are generated and every trace is
  rendered to JSON while streaming; each cold run uses a fresh server process (median of
  ``--runs``);
* ``warm``: later replays of the same range -- the rendered frame texts come from the server's
  frame cache (the normal case for reconnects, restarts and several clients);
* ``baseline``: a bare ``websockets`` server that sends pre-built strings (real devnet frames,
  same sizes) with one ``await ws.send(text)`` per frame, received by the same client.

The client is a bare ``websockets`` asyncio client that only counts frames (no JSON parsing).
Rates are medians over ``--runs`` runs; the ratio is devnet / baseline from the same run.

    python bench/bench_devnet.py                       # 100,000 frames, 5 runs, no compression
    python bench/bench_devnet.py --compression deflate --frames 50000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

REQUEST = {
    "type": "get_action_traces",
    "req_id": "bench",
    "listen": True,
    "start_block": 1,
    "data": {"accounts": "therealkarma", "action_names": "transfer"},
}


async def _measure(url: str, frames: int, compression: str | None) -> tuple[float, int]:
    """Seconds from sending the request to the ``frames``-th action_trace, and bytes seen."""
    async with connect(url, compression=compression, max_size=None, close_timeout=0.1) as ws:
        started = time.perf_counter()
        await ws.send(json.dumps(REQUEST))
        count = 0
        size = 0
        async for message in ws:
            if message.startswith('{"type":"action_trace"'):
                count += 1
                size += len(message)
                if count == frames:
                    break
        elapsed = time.perf_counter() - started
        ws.transport.abort()  # do not wait for a close handshake behind unread frames
    return elapsed, size


async def _measure_raw(url: str, frames: int) -> tuple[float, int]:
    """Like :func:`_measure` with a minimal RFC 6455 reader instead of websockets: it only
    splits frames, so it shows how fast the server itself can go (no compression)."""
    host, _, rest = url.removeprefix("ws://").partition(":")
    port, _, path = rest.partition("/")
    reader, writer = await asyncio.open_connection(host, int(port), limit=2**22)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /{path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    payload = json.dumps(REQUEST).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    started = time.perf_counter()
    writer.write(bytes((0x81, 0x80 | 126)) + len(payload).to_bytes(2, "big") + mask + masked)
    buffer = b""
    count = size = 0
    marker = b'{"type":"action_trace"'
    while count < frames:
        chunk = await reader.read(1 << 20)
        if not chunk:
            raise SystemExit("server closed the connection")
        buffer += chunk
        pos = 0
        while True:
            if len(buffer) - pos < 2:
                break
            length = buffer[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if len(buffer) - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if len(buffer) - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                head = 10
            if len(buffer) - pos < head + length:
                break
            if buffer.startswith(marker, pos + head):
                count += 1
                size += length
                if count == frames:
                    break
            pos += head + length
        buffer = buffer[pos:]
    elapsed = time.perf_counter() - started
    writer.transport.abort()
    return elapsed, size


async def _sample(url: str, count: int) -> list[str]:
    out = []
    async with connect(url, compression=None, max_size=None, close_timeout=0.1) as ws:
        await ws.send(json.dumps(REQUEST))
        async for message in ws:
            if message.startswith('{"type":"action_trace"'):
                out.append(message)
                if len(out) == count:
                    break
        ws.transport.abort()
    return out


def _start(command: list[str]) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    url = process.stdout.readline().strip()
    if not url.startswith("ws://"):
        process.kill()
        raise SystemExit(f"server did not start: {command}")
    return process, url


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


async def _baseline_server(frame_file: str, total: int, compression: str | None) -> None:
    with open(frame_file, encoding="utf-8") as handle:
        frames = json.load(handle)

    async def handler(ws) -> None:
        await ws.recv()
        n = len(frames)
        with contextlib.suppress(ConnectionClosed):
            for i in range(total):
                await ws.send(frames[i % n])
            await ws.wait_closed()

    async with serve(
        handler, "127.0.0.1", 0, compression=compression, ping_interval=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"ws://127.0.0.1:{port}/", flush=True)
        await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--density", type=float, default=2.0, help="transfers per block")
    parser.add_argument("--compression", choices=("none", "deflate"), default="none")
    parser.add_argument("--baseline-server", nargs=2, metavar=("FRAMES_JSON", "TOTAL"))
    args = parser.parse_args()
    compression = None if args.compression == "none" else "deflate"
    if args.baseline_server:
        asyncio.run(
            _baseline_server(args.baseline_server[0], int(args.baseline_server[1]), compression)
        )
        return

    # Enough blocks for the requested frames (the first 600 blocks hold an airdrop burst).
    head = int(args.frames / max(args.density, 0.01) * 1.3) + 10_000
    command = [
        sys.executable, "-m", "karma_analytics.devnet", "serve", "--block-interval", "0",
        "--head", str(head), "--transfers-per-block", str(args.density),
        "--compression", args.compression, "--frame-cache-mb", "2048", "--ping-interval", "3600",
    ]  # fmt: skip
    cold = []
    for _ in range(args.runs - 1):
        # A fresh server per cold run: nothing generated or rendered yet.
        devnet, devnet_url = _start(command)
        try:
            cold.append(asyncio.run(_measure(devnet_url, args.frames, compression))[0])
        finally:
            _stop(devnet)
    devnet, devnet_url = _start(command)
    try:
        cold_s, size = asyncio.run(_measure(devnet_url, args.frames, compression))
        cold.append(cold_s)
        warm = [
            asyncio.run(_measure(devnet_url, args.frames, compression))[0] for _ in range(args.runs)
        ]
        raw = []
        if compression is None:
            raw = [asyncio.run(_measure_raw(devnet_url, args.frames))[0] for _ in range(args.runs)]
        sample = asyncio.run(_sample(devnet_url, 256))
    finally:
        _stop(devnet)

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(sample, handle)
        frame_file = handle.name
    try:
        baseline_server, baseline_url = _start(
            [
                sys.executable, __file__, "--compression", args.compression,
                "--baseline-server", frame_file, str(args.frames * (args.runs + 1)),
            ]
        )  # fmt: skip
        try:
            base = []
            for _ in range(args.runs):
                base.append(asyncio.run(_measure(baseline_url, args.frames, compression))[0])
                # The baseline server sends forever; a new connection starts a new run.
        finally:
            _stop(baseline_server)
    finally:
        os.unlink(frame_file)

    def rate(seconds: float) -> float:
        return args.frames / seconds

    cold_rate = statistics.median(rate(s) for s in cold)
    warm_rate = statistics.median(rate(s) for s in warm)
    base_rate = statistics.median(rate(s) for s in base)
    print(f"frames per run       {args.frames:,} action_trace (mean {size / args.frames:.0f} B)")
    print(f"density              {args.density} transfers/block, compression={args.compression}")
    print(
        f"devnet cold          {cold_rate:,.0f} frames/s (generate + render + send, median of"
        f" {len(cold)}; min {rate(max(cold)):,.0f}, max {rate(min(cold)):,.0f})"
    )
    print(f"devnet warm          {warm_rate:,.0f} frames/s (median of {args.runs})")
    if raw:
        raw_rate = statistics.median(rate(s) for s in raw)
        print(f"devnet warm, raw     {raw_rate:,.0f} frames/s (minimal frame-splitting client)")
    print(f"baseline websockets  {base_rate:,.0f} frames/s (median of {args.runs})")
    print(f"ratio warm/baseline  {warm_rate / base_rate:.2f}")
    print(f"ratio cold/baseline  {cold_rate / base_rate:.2f}")
    print(f"load average         {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
