"""The one retry policy of every source: backoff, stall watchdog, failover, giving up.

A :class:`~karma_analytics.sources.base.Source` implements one connection and one subscription.
:class:`Failover` turns one or more of them (the ``--endpoint`` list, all of one chain) into the
endless stream of engine events the runner drives, with the rules a collector needs:

* **one decision**: :func:`is_fatal` says whether an error ends the run or is retried;
  a fault the server repeats at the same start block (a malformed frame, an unknown error
  code: ``SourceError.persistent``) becomes fatal after ``max_repeated_faults`` in a row;
* **backoff**: capped exponential with jitter before every new attempt, also when a server
  accepts and drops at once (websockets' own loop would retry that at once); the schedule
  starts again after a stream that delivered data; an error carrying ``retry_after`` (HTTP
  429) waits at least that long;
* **stall watchdog**: a stream that yields nothing for ``stall_seconds`` is abandoned
  (time the runner spends with a batch does not count: the clock runs only while waiting);
* **failover**: each failure moves to the next endpoint; every endpoint must serve the same
  chain id, one that reports another is dropped with a warning;
* **giving up**: a run that has not had one successful subscription since it started stops
  after ``give_up_after`` seconds, naming each endpoint and its last error; once a run has
  streamed, outages are retried for ever (a cron job must outlive a provider's outage).

Driving contract (the runner's duties, unchanged from the dfuse source it replaces)::

    failover = Failover(sources, start_block=start)
    async for batch in failover.batches():       # lists of engine events
        for action in engine.handle_batch(batch, now):
            if isinstance(action, Restart):
                failover.restart(action.start_block)
    await failover.aclose()

After a failure the failover yields ``[ConnectionLost(reason)]`` and is suspended: no new
connection is opened until the runner has fed it to the engine (which drops the open block,
DESIGN.md hole 6) and called :meth:`Failover.restart` with the engine's safe point. Resuming
without ``restart()`` raises :class:`~karma_analytics.exceptions.UsageError`. ``restart()``
during a healthy stream abandons it at the next batch, without ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from karma_analytics.engine import ConnectionLost, Listening
from karma_analytics.exceptions import (
    ChainMismatchError,
    ConnectError,
    KarmaError,
    ProtocolError,
    ServerError,
    SourceError,
    StalledError,
    UsageError,
    redact,
)
from karma_analytics.sources.base import Source

__all__ = ["BackoffSchedule", "Failover", "exponential_backoff", "is_fatal"]

logger = logging.getLogger(__name__)

BackoffSchedule = Callable[[], Iterator[float]]
_UNSET: Any = object()


def exponential_backoff(
    *,
    initial: float = 0.5,
    factor: float = 2.0,
    maximum: float = 30.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> BackoffSchedule:
    """A capped exponential backoff schedule with jitter.

    The n-th delay (from 0) is ``min(maximum, initial * factor**n)`` scaled by a random factor
    in ``[1 - jitter, 1]``, so that many collectors do not reconnect in lockstep.

    Args:
        initial: first delay in seconds.
        factor: growth per attempt.
        maximum: cap in seconds (before jitter).
        jitter: fraction of the delay that is random (0 = none, 1 = full jitter).
        rng: random generator (seed it in tests); default a fresh ``random.Random()``.

    Returns:
        A factory; each call starts a new sequence of delays.
    """
    if initial < 0 or factor < 1 or maximum < 0 or not 0 <= jitter <= 1:
        raise UsageError("backoff needs initial >= 0, factor >= 1, maximum >= 0, 0 <= jitter <= 1")
    generator = rng if rng is not None else random.Random()

    def schedule() -> Iterator[float]:
        delay = initial
        while True:
            yield min(delay, maximum) * (1.0 - jitter * generator.random())
            delay = min(maximum, delay * factor)

    return schedule


def is_fatal(error: BaseException) -> bool:
    """The retry decision: whether ``error`` from a source ends the run.

    A :class:`SourceError` says so itself (``fatal``); any other :class:`KarmaError` (local
    misuse, a dataset of another chain) is fatal; anything else is a bug and fatal too.
    """
    if isinstance(error, SourceError):
        return error.fatal
    return True


class Failover:
    """Endless engine events from one or more sources of one chain (see the module docstring).

    Args:
        sources: the endpoints, in the order to try them.
        start_block: the first stream's start (``None``: the head, or LIB).
        stall_seconds: abandon a stream that yields nothing for this long.
        give_up_after: seconds without one successful subscription after which the run stops
            (``None``: never).
        backoff: reconnect delay schedule factory (see :func:`exponential_backoff`).
        chain_id: the chain the run must stay on (the dataset's, or ``--chain-id``); ``None``
            takes the first endpoint's.
        chain_id_source: what ``chain_id`` came from, for messages (``"the dataset"``,
            ``"--chain-id"``).
        on_chain_id: called once with the chain id when it is first learned from an endpoint
            (the runner records it in the dataset).
        max_repeated_faults: consecutive persistent faults at one start block that are fatal.
        clock: monotonic seconds (tests pass their own).

    Attributes:
        reconnects: attempts after the first one.
        attempt: failed attempts in a row (0 while streaming).
        last_error: the last failure (redacted), or ``None``.
        endpoint: the endpoint of the current (or last) attempt.
        subscribed: whether any stream has started since the run began.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        start_block: int | None = None,
        stall_seconds: float = 60.0,
        give_up_after: float | None = 300.0,
        backoff: BackoffSchedule | None = None,
        chain_id: str | None = None,
        chain_id_source: str = "--chain-id",
        on_chain_id: Callable[[str], None] | None = None,
        max_repeated_faults: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not sources:
            raise UsageError("no endpoint: give at least one")
        if stall_seconds <= 0:
            raise UsageError(f"stall_seconds must be > 0, got {stall_seconds}")
        if give_up_after is not None and give_up_after <= 0:
            raise UsageError(f"give_up_after must be > 0, got {give_up_after}")
        self.sources = list(sources)
        self.start_block = start_block
        self.stall_seconds = stall_seconds
        self.give_up_after = give_up_after
        self.chain_id = chain_id
        self.chain_id_source = chain_id_source
        self._on_chain_id = on_chain_id
        self.max_repeated_faults = max_repeated_faults
        self._backoff = backoff or exponential_backoff()
        self._clock = clock
        self.reconnects = 0
        self.attempt = 0
        self.last_error: str | None = None
        self.endpoint = self.sources[0].endpoint
        self.subscribed = False
        self.errors: dict[str, str] = {}  # endpoint -> its last error, for the give-up message
        self._restart_to: Any = _UNSET
        self._awaiting_restart = False
        self._generator: Any = None
        self._retry_after = 0.0

    def __repr__(self) -> str:
        return f"Failover({[s.endpoint for s in self.sources]!r})"

    # -- driving ----------------------------------------------------------------------------

    def restart(self, start_block: int | None) -> None:
        """Set the start of the next stream (the engine's ``Restart.start_block``).

        ``None`` means the configured start. Called during a healthy stream, the stream is
        abandoned at the next batch.
        """
        self._restart_to = self.start_block if start_block is None else start_block
        self._awaiting_restart = False

    def batches(self) -> AsyncIterator[list[Any]]:
        """Lists of engine events, each from one source read; ``ConnectionLost`` comes alone.

        Raises:
            SourceError: a fatal error (``fatal`` is true), or giving up.
            ChainMismatchError: no endpoint serves the dataset's chain.
            UsageError: resumed after ``ConnectionLost`` without :meth:`restart`.
        """
        if self._generator is not None:
            raise UsageError("batches() is already running; use one iterator")
        self._generator = self._run()
        return self._generator

    async def events(self) -> AsyncIterator[Any]:
        """:meth:`batches` one event at a time (the rest of a batch is dropped after a
        ``restart()``: it belongs to the abandoned stream)."""
        async for batch in self.batches():
            for event in batch:
                yield event
                if self._restart_to is not _UNSET:
                    break

    async def aclose(self) -> None:
        """End the iteration and close every source (idempotent)."""
        generator, self._generator = self._generator, None
        if generator is not None:
            with contextlib.suppress(RuntimeError):  # still running in another task
                await generator.aclose()
        for source in self.sources:
            with contextlib.suppress(Exception):
                await source.aclose()

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> AsyncIterator[list[Any]]:
        start = self.start_block
        delays = self._backoff()
        began = self._clock()
        index = 0
        fault_start: int | None = None
        faults = 0
        while True:
            if self.attempt:
                self.reconnects += 1
                # A server that says when to come back (HTTP 429 retry-after) is believed.
                delay = max(next(delays), self._retry_after)
                deadline = self._give_up_deadline(began)
                if deadline is not None:
                    delay = min(delay, max(0.0, deadline - self._clock()))
                await asyncio.sleep(delay)
                self._check_give_up(began)
            source = self.sources[index % len(self.sources)]
            self.endpoint = source.endpoint
            delivered = False
            dropped = False
            error: BaseException | None = None
            stream = source.stream(start)
            try:
                first = True
                while True:
                    try:
                        batch = await self._next(stream, began, first=first)
                    except StopAsyncIteration:
                        if source.stop_block is not None:
                            return  # upstream finished: every block up to the stop is out
                        raise ProtocolError(
                            f"{source.endpoint} ended the stream without an error"
                        ) from None
                    if first:
                        first = False
                        self._check_chain(source)
                        self.subscribed = True
                        self.attempt = 0
                    if not delivered:
                        delivered = any(type(event) is not Listening for event in batch)
                    yield batch
                    if self._restart_to is not _UNSET:
                        break
            except SourceError as exc:
                if exc.fatal:
                    raise
                error = exc
            except _Dropped as exc:
                error, dropped = exc.error, True
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()  # type: ignore[attr-defined]
            if delivered:
                delays = self._backoff()  # a stream that delivered data resets the schedule
            if error is not None:
                self._retry_after = float(getattr(error, "retry_after", None) or 0.0)
                reason = redact(str(error))
                self.attempt += 1
                self.last_error = reason
                self.errors[source.endpoint] = reason
                if getattr(error, "persistent", False):
                    faults = faults + 1 if fault_start == start else 1
                    fault_start = start
                    if faults >= self.max_repeated_faults:
                        raise _escalated(error, f"repeated {faults} times at block {start}")
                if not dropped and len(self.sources) > 1:
                    index += 1  # the next endpoint (a dropped one left its place to it)
                logger.warning(
                    "%s: %s (attempt %d; next: %s)",
                    source.endpoint,
                    reason,
                    self.attempt,
                    self.sources[index % len(self.sources)].endpoint,
                )
                self._restart_to = _UNSET
                self._awaiting_restart = True
                yield [ConnectionLost(reason)]
                if self._awaiting_restart:
                    raise UsageError(
                        "resumed after ConnectionLost without restart(): feed ConnectionLost "
                        "to the engine and pass its Restart.start_block to restart() first"
                    )
            start = self._restart_to
            self._restart_to = _UNSET

    async def _next(self, stream: Any, began: float, *, first: bool) -> list[Any]:
        """The next batch, within the stall limit (and, before the first subscription, within
        the give-up deadline)."""
        limit = self.stall_seconds
        deadline = self._give_up_deadline(began) if first and not self.subscribed else None
        if deadline is not None:
            limit = min(limit, max(0.001, deadline - self._clock()))
        try:
            async with asyncio.timeout(limit):
                return await anext(stream)
        except TimeoutError:
            if deadline is not None and self._clock() >= deadline:
                raise StalledError(
                    f"no answer within the {self.give_up_after:g} s allowed to subscribe"
                ) from None
            raise StalledError(
                f"the stream sent no data for {limit:.1f} s; restarting it",
                silent_seconds=limit,
            ) from None

    def _give_up_deadline(self, began: float) -> float | None:
        if self.subscribed or self.give_up_after is None:
            return None
        return began + self.give_up_after

    def _check_give_up(self, began: float) -> None:
        deadline = self._give_up_deadline(began)
        if deadline is None or self._clock() < deadline:
            return
        detail = "; ".join(
            f"{s.endpoint}: {self.errors.get(s.endpoint, 'not tried')}" for s in self.sources
        )
        raise ConnectError(
            f"gave up after {self.give_up_after:g} s without one successful subscription — "
            f"{detail}. Check the endpoint URL(s) and your network, or pass another "
            "--endpoint (--give-up-after sets the limit)",
            fatal=True,
        )

    def _check_chain(self, source: Source) -> None:
        """Keep the run on one chain: adopt the first endpoint's id, drop any other."""
        reported = source.chain_id
        if reported is None:
            if self.chain_id is None:
                raise ConnectError(
                    f"{source.endpoint} does not tell which chain it serves; pass --chain-id HEX",
                    fatal=True,
                )
            return  # the provider cannot tell: the stated id stands
        if self.chain_id is None:
            self.chain_id = reported
            self.chain_id_source = source.endpoint
            if self._on_chain_id is not None:
                self._on_chain_id(reported)
            return
        if reported == self.chain_id:
            return
        message = (
            f"{source.endpoint} serves chain {reported}, but {self.chain_id_source} says "
            f"{self.chain_id}"
        )
        if len(self.sources) == 1:
            if self.chain_id_source == "the dataset":
                raise ChainMismatchError(
                    f"{message}: this dataset belongs to another chain. Collect into another "
                    "--out folder, or point --endpoint at a provider of the dataset's chain",
                    dataset_chain_id=self.chain_id,
                    other_chain_id=reported,
                )
            raise ConnectError(f"{message}; check the endpoint", fatal=True)
        logger.warning("%s; dropping it", message)
        self.sources.remove(source)
        raise _Dropped(ConnectError(f"{message}; dropped"))


def _escalated(error: BaseException, how: str) -> SourceError:
    """The fatal form of a persistent fault the server keeps repeating (same kind of error)."""
    advice = f"{how}; the server keeps sending it, check the endpoint"
    if isinstance(error, ServerError):
        return ServerError(
            error.code,
            error.server_message,
            details=error.details,
            trace_id=error.trace_id,
            fatal=True,
            hint=advice,
        )
    return ProtocolError(f"{redact(str(error))} — {advice}", fatal=True)


class _Dropped(KarmaError):
    """Internal: an endpoint left the rotation; retry with the next one."""

    def __init__(self, error: SourceError) -> None:
        super().__init__(str(error))
        self.error = error
