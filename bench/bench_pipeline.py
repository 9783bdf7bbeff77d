"""Benchmark 2: the collector pipeline without a network vs the stdlib JSON parser alone.

Frames of a ``get_action_traces`` stream are rendered in memory once (from the devnet chain,
exactly as the devnet server sends them). Then, alternating, several times each:

* **baseline** — ``json.loads`` of every frame, nothing else;
* **pipeline** — the real runner (:class:`karma_analytics.collect.Collector`) fed by a source
  that decodes the same frames with the source's :class:`FrameDecoder` (msgspec fast path),
  through the engine, to committed Parquet parts and sidecar in a fresh folder (fsyncs
  included).

Prints the medians and the ratio ``baseline_seconds / pipeline_seconds`` (target >= 1.0: the
whole pipeline is faster than merely parsing the frames with the stdlib), and the median of
the per-run ratios (each pair ran back to back, so it is less exposed to a noisy machine). One
warm-up round of each side runs first and is not counted.

    python bench/bench_pipeline.py [--transfers 300000] [--runs 5] [--default-gc]

Both sides run with the GC settings the CLI uses (:func:`karma_analytics.collect.tune_gc`)
unless ``--default-gc``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from karma_analytics.collect import DEFAULT_FLUSH_ROWS, CollectConfig, Collector, tune_gc
from karma_analytics.devnet import wire
from karma_analytics.devnet.chain import CONTRACT, Chain
from karma_analytics.sources.base import Selection, Source
from karma_analytics.sources.dfuse import FrameDecoder

REQ_ID = "karma-therealkarma-transfer"


def render_frames(
    transfers: int, *, seed: int = 7, per_block: float = 20.0, first_block: int = 1
) -> tuple[list[bytes], int]:
    """Frames of an irreversible stream from ``first_block`` holding ``transfers`` transfers.

    Returns the frames (``listening``, ``action_trace``s, a ``progress`` every 10 blocks) and
    the last block rendered.
    """
    chain = Chain(seed=seed, transfers_per_block=per_block, cache_blocks=1)
    frames = [wire.envelope("listening", REQ_ID, f'{{"next_block":{first_block}}}').encode()]
    count = 0
    num = first_block
    shape = wire.Shape()
    while count < transfers:
        block = chain.generate(num)
        for trx in block.transactions:
            if trx.status != "executed":
                continue
            for idx, trace in enumerate(trx.traces):
                act = trace.act
                if trace.receiver != CONTRACT or act.account != CONTRACT or act.name != "transfer":
                    continue
                data = wire.action_trace_data(trace, idx, trx, block, shape)
                frames.append(wire.envelope("action_trace", REQ_ID, data).encode())
                if act.asset is not None and "from" in act.data:
                    count += 1
        if num % 10 == 0:
            frames.append(
                wire.envelope(
                    "progress", REQ_ID, f'{{"block_num":{num},"block_id":"{block.id}"}}'
                ).encode()
            )
        num += 1
    return frames, num - 1


class MemorySource(Source):
    """Replays in-memory frames through the real frame decoder, as a :class:`Source`.

    Frames are handed over the way :class:`DfuseSource` hands them over: in batches of one
    socket read (asyncio reads at most 256 KiB at a time), decoded by
    :meth:`FrameDecoder.decode_into`; the runner drives it through its real retry policy
    (``sources.retry.Failover``), stall watchdog included.
    """

    kind = "dfuse"
    READ_BYTES = 256 * 1024

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__("memory://frames", Selection(), stop_block=None)
        self.chain_id = "0" * 64
        self.frames = frames
        self.decoder = FrameDecoder(REQ_ID, CONTRACT, "transfer")

    @classmethod
    def create(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("built directly")

    async def stream(self, start_block):  # type: ignore[no-untyped-def]
        decode_into = self.decoder.decode_into
        frames = self.frames
        start = 0
        while start < len(frames):
            end, size = start, 0
            while end < len(frames) and size < self.READ_BYTES:
                size += len(frames[end])
                end += 1
            events: list = []
            decode_into(frames[start:end], events)
            start = end
            if events:
                yield events
        await asyncio.Event().wait()  # a live stream never ends by itself


def time_json(frames: list[bytes]) -> float:
    loads = json.loads
    began = time.perf_counter()
    for frame in frames:
        loads(frame)
    return time.perf_counter() - began


def time_pipeline(frames: list[bytes], last_block: int, flush_rows: int) -> tuple[float, int]:
    folder = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        config = CollectConfig(
            endpoint="ws://127.0.0.1:1/v1/stream",
            out=folder / "transfers",
            start_block=1,
            stop_block=last_block - 10,
            flush_rows=flush_rows,
            flush_seconds=3600,
        )
        collector = Collector(config, sources=[MemorySource(frames)])
        began = time.perf_counter()
        summary = asyncio.run(collector.run())
        return time.perf_counter() - began, summary.rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--flush-rows",
        type=int,
        default=DEFAULT_FLUSH_ROWS,
        help="rows per commit (the CLI's default)",
    )
    parser.add_argument(
        "--default-gc", action="store_true", help="keep Python's default GC thresholds"
    )
    args = parser.parse_args()

    began = time.perf_counter()
    frames, last = render_frames(args.transfers)
    size = sum(map(len, frames))
    print(
        f"rendered {len(frames):,} frames ({size / 2**20:.1f} MiB, blocks 1..{last:,}) "
        f"in {time.perf_counter() - began:.1f} s"
    )
    if not args.default_gc:
        tune_gc()  # what the CLI does at start-up; both sides run under the same setting
    # Warm-up, not counted: the first pipeline run imports pyarrow.parquet and the store
    # (~0.3 s, once per process), which is start-up, not throughput.
    time_json(frames)
    time_pipeline(frames, last, args.flush_rows)
    json_times, pipe_times = [], []
    rows = 0
    for run in range(args.runs):
        json_times.append(time_json(frames))
        seconds, rows = time_pipeline(frames, last, args.flush_rows)
        pipe_times.append(seconds)
        print(
            f"run {run + 1}: json.loads {json_times[-1]:.3f} s, pipeline {seconds:.3f} s "
            f"({rows:,} rows committed)"
        )
    j, p = statistics.median(json_times), statistics.median(pipe_times)
    print(
        f"median json.loads only: {j:.3f} s = {len(frames) / j:,.0f} frames/s\n"
        f"median pipeline:        {p:.3f} s = {len(frames) / p:,.0f} frames/s, "
        f"{rows / p:,.0f} rows/s committed\n"
        f"ratio (json.loads time / pipeline time): {j / p:.2f}  (target >= 1.0)\n"
        f"median of the per-run ratios:           "
        f"{statistics.median(a / b for a, b in zip(json_times, pipe_times, strict=True)):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
