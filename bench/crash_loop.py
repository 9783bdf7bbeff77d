"""The long crash loop (issue 3): SIGKILL the real CLI many times at random moments.

Same loop as ``tests/collect/test_crash.py`` (seeded delays, committed view checked after
every kill: exactly truth's rows below the sidecar's ``next_block``, no duplicate, no row
outside truth), with many more kills, a moving head, optional server faults, and a range
that crosses a UTC midnight.

    python bench/crash_loop.py [--kills 200] [--seed 1] [--drop-every 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "collect"))

from collect_helpers import crash_loop  # noqa: E402

from karma_analytics.devnet.testing import DevnetThread  # noqa: E402

MIDNIGHT = 28_800  # the devnet genesis is 20:00 UTC and blocks are 0.5 s apart


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drop-every", type=int, default=0, help="devnet fault: drop TCP")
    parser.add_argument("--blocks", type=int, default=6_000, help="range length")
    parser.add_argument("--out", type=Path, default=None, help="dataset folder (default tmp)")
    parser.add_argument("--verbose", action="store_true", help="one line per kill")
    args = parser.parse_args()

    first = MIDNIGHT - args.blocks // 2
    last = first + args.blocks - 1
    # A head that moves from just past the start and reaches the end of the range about when
    # the kills are done: the runs follow it live and commit all the time instead of
    # replaying a finished range in a blink.
    interval = max(0.002, args.kills * 1.2 / args.blocks)
    devnet = DevnetThread(
        head=first + 200,
        block_interval=interval,
        lib_lag=2,
        ping_interval=0.5,
        compression=None,
        drop_every=args.drop_every,
        fault_seed=args.seed,
    ).start()
    began = time.monotonic()
    try:
        truth = list(devnet.chain.truth(first, last))
        with tempfile.TemporaryDirectory(prefix="crash-loop-") as tmp:
            out = args.out or Path(tmp) / "transfers"
            print(
                f"blocks {first:,}..{last:,} ({len(truth):,} transfers), {args.kills} kills, "
                f"seed {args.seed}, drop_every {args.drop_every}"
            )
            stats = crash_loop(
                devnet.url,
                out,
                truth,
                start_block=first,
                stop_block=last,
                kills=args.kills,
                seed=args.seed,
                min_delay=0.3,
                max_delay=2.5,
                log=print if args.verbose else None,
            )
    finally:
        devnet.stop()
    print(
        f"OK: {stats['kills']} kills ({stats['kills_while_committing']} while committing), "
        f"{stats['completed']} runs completed by themselves, final dataset == truth; "
        f"{time.monotonic() - began:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
