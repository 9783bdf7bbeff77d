"""Exit codes shared by every command line of karma_analytics (one face for all three).

``python -m karma_analytics.collect``, ``python -m karma_analytics.dataset`` and
``python -m karma_analytics.store`` end with the same code for the same condition::

    0    done
    1    fatal error: the work could not be done (remote refusal, protocol or storage fault)
    2    usage error: bad flags or arguments; nothing was touched
    3    the dataset is locked by another writer (a collector, a repair or a compaction)
    4    the dataset needs attention: corrupt sidecar, parts without sidecar, collected with
         another request or on another chain, or ``verify`` found problems; the message says
         what to do (often: rebuild the sidecar with ``python -m karma_analytics.store repair``)
    130  interrupted (a second Ctrl-C); the dataset stays consistent

The error -> code mapping is :func:`exit_code_for`; the ``--help`` epilogs are built from
:func:`exit_codes_epilog`. Pure: imports nothing but the error tree.
"""

from __future__ import annotations

from .exceptions import (
    CursorError,
    DatasetError,
    LockedError,
    RequestMismatchError,
    UsageError,
)

__all__ = [
    "EXIT_DATASET",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "exit_code_for",
    "exit_codes_epilog",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_DATASET = 4
EXIT_INTERRUPTED = 130


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error that ended a command.

    ``UsageError`` -> 2; ``LockedError`` -> 3; ``CursorError``, ``RequestMismatchError`` (and
    its ``ChainMismatchError``) and the read side's ``DatasetError`` (not a dataset as it
    stands, or it failed verification) -> 4; ``KeyboardInterrupt`` -> 130; anything else,
    including the other storage and source faults -> 1.
    """
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, LockedError):
        return EXIT_LOCKED
    if isinstance(error, CursorError | RequestMismatchError | DatasetError):
        return EXIT_DATASET
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def exit_codes_epilog(done: str, *, interrupted: str | None = None) -> str:
    """The ``exit codes:`` block of a ``--help`` epilog.

    Args:
        done: what exit 0 means for this command line.
        interrupted: what exit 130 means, or ``None`` to say "interrupted by Ctrl-C".
    """
    rows = [
        (EXIT_OK, done),
        (EXIT_ERROR, "fatal error (remote refusal, protocol or storage fault)"),
        (EXIT_USAGE, "usage error (bad flags or arguments; nothing was touched)"),
        (EXIT_LOCKED, "the dataset is locked by another writer"),
        (
            EXIT_DATASET,
            "the dataset needs attention (corrupt sidecar, parts without sidecar, another\n"
            "request or chain, verify found problems): the message says what to do",
        ),
        (EXIT_INTERRUPTED, interrupted or "interrupted by Ctrl-C (the dataset stays consistent)"),
    ]
    lines = ["exit codes:"]
    for code, text in rows:
        first, *rest = text.split("\n")
        lines.append(f"  {code:<4} {first}")
        lines.extend(f"       {more}" for more in rest)
    return "\n".join(lines) + "\n"
