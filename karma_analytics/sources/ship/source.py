"""ShipSource: one SHiP WebSocket connection and one blocks subscription -> engine events.

The I/O edge of the SHiP source (the decoding is :mod:`.decode`, pure). One :meth:`stream` is
(ship.md §1.2, §1.4, §1.9):

1. connect (plain ``ws://``: nodes offer no TLS, §1.2); read the ABI text, check it (fatal
   when it differs from the layouts we read);
2. send ``get_status_request_v0``; read the status: chain id, head, LIB, trace range. A start
   below ``trace_begin_block`` is a fatal error saying the node's range (never a silent jump);
3. send ``get_blocks_request_v0`` from the start block to ``stop_block + 1`` (exclusive, §1.4)
   with ``max_messages_in_flight`` credits, ``fetch_block`` (block time, §1.7) and
   ``fetch_traces``; ``have_positions`` only in reversible mode (§1.8);
4. yield ``[Listening(start)]``, then per socket read the events of its block results: the
   blocks' actions in order, then one ``Progress`` for the read's last block (it proves every
   block up to it complete; one per read, not one per block, keeps the engine's work per
   block small). In irreversible mode the runs of results that cannot hold a match are
   passed over without decoding (:meth:`~.decode.BlockDecoder.skip_plain`). Ack the results
   of each read once decoded (credits count block results only, and a new blocks request
   resets them, so every stream starts from a full window, §1.4). A bad result ends the
   read: what came before it is yielded (with its ``Progress``) before the error is raised;
5. return once the stop block's result is processed.

Reversible mode (``--include-reversible``, ``irreversible_only`` false; ship.md §1.4, §1.8): the
node streams up to its head, and a fork makes it go back and re-send the blocks that replaced
the ones it had sent (``block_applied``). The source keeps the ids of the blocks it handed to
the engine (the last 400) and:

* **a fork inside a stream** (a block number going back): the block's ``prev_block`` as a
  ``Progress``, then the block's events, reach the engine. That progress is behind the engine's
  safe point S, a protocol fault: the engine drops the open block and restarts at S (the same
  fault again at S stops the run, exit 1);
* **every new stream** sends those ids below its start as ``have_positions``: a node lowers the
  start to the first of them that is no longer on its chain. A first block below S (or a first
  block whose ``prev_block`` is not the block collected) means a block the engine already has —
  committed, or committed when the run stops — was forked out. That is not papered over: a
  fatal :class:`~karma_analytics.exceptions.ProtocolError` says that block N, already committed
  in reversible mode, was forked out, and what to do: recollect from before N into a new
  ``--out`` folder, or use the default irreversible mode. So in practice a fork the collector
  has seen ends the run, with the rows of the forked-out blocks committed (never taken back);
  a fork resolved before the collector reached it is never seen;
* a ``prev_block`` that contradicts the block delivered just before it, without going back,
  is the same fatal error.

The ids are kept in memory only: a new process resuming a reversible dataset has no positions
to send for its first stream.

Faults are raised, never retried here (the runner, ``sources/retry.py``, reconnects):
:class:`~karma_analytics.exceptions.ConnectError` (transient or fatal, via
:func:`~karma_analytics.sources.websocket.connect_failure`), a dropped connection
(``ConnectError``, transient), a malformed message
(:class:`~karma_analytics.sources.ship.codec.DecodeError`, a transient ``ProtocolError``), a
gap (:class:`~karma_analytics.sources.ship.decode.GapError`, fatal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from karma_analytics.engine import Listening, Progress
from karma_analytics.exceptions import ConnectError, ProtocolError, SourceError, UsageError

from .. import base
from ..websocket import BatchConnection, connect_failure
from . import codec
from .abi import parse_abi
from .decode import BlockDecoder, BlockEvents

__all__ = ["ShipSource"]

logger = logging.getLogger(__name__)

_NO_END = 0xFFFFFFFF
# Block ids of reversible blocks kept for have_positions on a reconnect (ship.md §1.8).
_POSITIONS_KEPT = 400


class ShipSource(base.Source):
    """A nodeos/Spring ``state_history_plugin`` endpoint (``ws://host:port``).

    Args:
        endpoint: ``ws://host:port`` (normalised by :meth:`normalize_endpoint`).
        selection: contract, action, ``irreversible_only``.
        stop_block: last block wanted (inclusive); ``None`` = follow the chain.
        max_messages_in_flight: the credit window (ship.md §1.9).
        open_timeout: seconds for the TCP + WebSocket handshake and for the ABI and status.
        full_scan: walk every traces payload (see :mod:`.decode`).
    """

    kind = "ship"

    def __init__(
        self,
        endpoint: str,
        selection: base.Selection,
        *,
        stop_block: int | None = None,
        max_messages_in_flight: int = 64,
        open_timeout: float = 30.0,
        full_scan: bool = False,
    ) -> None:
        super().__init__(self.normalize_endpoint(endpoint), selection, stop_block=stop_block)
        if max_messages_in_flight < 1:
            raise UsageError(
                f"max_messages_in_flight must be at least 1, got {max_messages_in_flight}"
            )
        self.max_messages_in_flight = max_messages_in_flight
        self.open_timeout = open_timeout
        self.full_scan = full_scan
        #: The last status result (``codec.GetStatusResultV0``) of the latest stream.
        self.status: Any = None
        #: Block results received and acks sent, over all streams (for tests and logs).
        self.results_received = 0
        self.acks_sent = 0
        self._positions: OrderedDict[int, bytes] = OrderedDict()

    @classmethod
    def create(
        cls,
        endpoint: str,
        selection: base.Selection,
        *,
        stop_block: int | None = None,
        settings: base.SourceSettings | None = None,
    ) -> ShipSource:
        settings = settings or base.SourceSettings()
        extra = settings.extra or {}
        return cls(
            endpoint,
            selection,
            stop_block=stop_block,
            max_messages_in_flight=settings.max_messages_in_flight,
            open_timeout=settings.request_timeout,
            full_scan=bool(extra.get("ship_full_scan", False)),
        )

    @staticmethod
    def normalize_endpoint(endpoint: str) -> str:
        """``ws://host:port`` (a bare ``host:port`` gets ``ws://``).

        Raises:
            UsageError: another scheme (SHiP has no TLS: put a TLS-terminating proxy's plain
                side, or an SSH tunnel, behind ``ws://``), or no port.
        """
        text = endpoint.strip()
        if "://" not in text:
            text = "ws://" + text
        parts = urllib.parse.urlsplit(text)
        if parts.scheme != "ws":
            raise UsageError(
                f"a SHiP endpoint is ws://host:port (the node's state-history-endpoint); "
                f"got {endpoint!r}: nodeos serves no {parts.scheme}:// there (ship.md §1.2)"
            )
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise UsageError(
                f"a SHiP endpoint needs a host and a port, e.g. ws://127.0.0.1:8080; got "
                f"{endpoint!r}"
            )
        return urllib.parse.urlunsplit(("ws", parts.netloc, parts.path, "", ""))

    # --- the stream ---------------------------------------------------------------------------

    async def stream(self, start_block: int | None) -> AsyncIterator[list[Any]]:
        """One connection and one blocks subscription (module docstring; base.py contract).

        Raises:
            SourceError: see the module docstring; ``fatal`` says whether a retry can help.
        """
        selection = self.selection
        url = self.endpoint
        try:
            ws = await connect(
                url,
                create_connection=BatchConnection,
                max_size=None,  # results with blocks exceed 1 MiB (ship.md §1.9)
                compression=None,
                open_timeout=self.open_timeout,
                close_timeout=1,
                proxy=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ConnectError(
                f"{url} refused the WebSocket upgrade with HTTP {status}"
                + ("; is this the node's state-history-endpoint?" if status < 500 else ""),
                status=status,
                fatal=400 <= status < 500 and status not in (408, 429),
            ) from None
        except (OSError, TimeoutError, InvalidHandshake, EOFError) as exc:
            raise connect_failure(exc, url) from None
        assert isinstance(ws, BatchConnection)
        try:
            async for batch in self._run(ws, start_block, selection):
                yield batch
        except ConnectionClosed as exc:
            raise ConnectError(f"{url} closed the connection: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise connect_failure(exc, url) from None
        finally:
            # Also on aclose() by the runner: a close frame, then at most close_timeout.
            with contextlib.suppress(Exception):
                await ws.close()

    async def _messages(self, ws: BatchConnection, pending: list[bytes]) -> bytes:
        """The next message (handshake phase: one at a time, within ``open_timeout``)."""
        if not pending:
            try:
                async with asyncio.timeout(self.open_timeout):
                    pending.extend(await ws.take())
            except TimeoutError:
                raise ConnectError(
                    f"{self.endpoint} sent nothing for {self.open_timeout:g} s after the "
                    "handshake (a SHiP node sends its ABI at once)"
                ) from None
        return pending.pop(0)

    async def _run(
        self, ws: BatchConnection, start_block: int | None, selection: base.Selection
    ) -> AsyncIterator[list[Any]]:
        pending: list[bytes] = []
        abi = parse_abi(await self._messages(ws, pending)).check()
        decoder = BlockDecoder(abi, selection.contract, selection.action, full_scan=self.full_scan)
        request_names = decoder.request_names
        await ws.send(codec.encode_request(codec.GetStatusRequestV0(), request_names))
        while True:
            status = decoder.result(await self._messages(ws, pending))
            if isinstance(status, codec.GetStatusResultV0 | codec.GetStatusResultV1):
                break
            # A block result before any blocks request is outside the protocol.
            raise ProtocolError("the node sent a block result before any blocks request")
        self.status = status
        self.chain_id = status.chain_id.hex() if status.chain_id is not None else None
        irreversible = selection.irreversible_only
        if start_block is None:
            latest = status.last_irreversible if irreversible else status.head
            start_block = latest.block_num
        if start_block < status.trace_begin_block:
            raise ProtocolError(
                f"block {start_block} is below the node's trace log: it has traces for blocks "
                f"{status.trace_begin_block}..{status.trace_end_block - 1} (ship.md §1.8). "
                "Start at or after the first, or collect the earlier range from another node "
                "or source",
                fatal=True,
            )
        stop = self.stop_block
        end = _NO_END if stop is None else min(_NO_END, stop + 1)
        keep = self._positions
        positions: tuple[codec.BlockPosition, ...] = ()
        if not irreversible:
            # Blocks >= the start were not complete in the engine: they come again.
            for num in [n for n in keep if n >= start_block]:
                del keep[num]
            positions = tuple(codec.BlockPosition(num, bid) for num, bid in keep.items())
        window = self.max_messages_in_flight
        request = codec.GetBlocksRequestV0(
            start_block_num=start_block,
            end_block_num=end,
            max_messages_in_flight=window,
            have_positions=positions,
            irreversible_only=irreversible,
            fetch_block=True,
            fetch_traces=True,
            fetch_deltas=False,
        )
        await ws.send(codec.encode_request(request, request_names))
        logger.info(
            "SHiP %s: blocks from %d (chain %s, head %d, LIB %d, traces %d..%d%s)",
            self.endpoint, start_block, self.chain_id, status.head.block_num,
            status.last_irreversible.block_num, status.trace_begin_block,
            status.trace_end_block - 1,
            f"; reversible, {len(positions)} positions" if not irreversible else "",
        )  # fmt: skip
        yield [Listening(start_block)]
        expected = start_block
        final = _NO_END if stop is None else stop
        # Irreversible blocks: runs of plain results (no match possible) are passed over
        # without decoding (BlockDecoder.skip_plain); the rest goes through block_message.
        skip = decoder.skip_plain if irreversible else None
        ack = codec.encode_request(codec.GetBlocksAckRequestV0(1), request_names)
        while True:
            messages = pending or await ws.take()
            pending = []
            events: list[Any] = []
            results = 0
            done = False
            fork = False
            last: Any = None  # the last block of this read: its Progress closes the batch
            last_plain: bytes | None = None  # ... when skip_plain passed over it
            failure: SourceError | None = None
            index = 0
            count = len(messages)
            try:
                while index < count:
                    if skip is not None:
                        after = skip(messages, index, expected, final)
                        if after > index:
                            results += after - index
                            expected += after - index
                            last_plain = messages[after - 1]
                            index = after
                            if expected > final:
                                done = True
                                break
                            if index == count:
                                break
                    message = messages[index]
                    index += 1
                    block = decoder.block_message(message, progress=False)
                    if type(block) is not BlockEvents:
                        continue  # a status answer (free of credits, §1.9)
                    results += 1
                    num = block.block_num
                    if irreversible:
                        if num != expected:
                            # Leap 4.0.4+/5 silently moves a low start up (§1.5, §1.8(c)).
                            raise self._skipped(num, expected, start_block)
                    elif self._check_reversible(block, expected, start_block):
                        fork = True
                        break
                    expected = num + 1
                    last = block
                    last_plain = None
                    if not irreversible:
                        keep[num] = bytes.fromhex(block.block_id)
                        while len(keep) > _POSITIONS_KEPT:
                            keep.popitem(last=False)
                    if block.events:
                        events += block.events
                    if stop is not None and num >= stop:
                        done = True
                        break
            except SourceError as exc:
                # What came before the bad result in this read is sound: hand it over first
                # (a gap then names its block with everything before it committed).
                failure = exc
            # One Progress per read, not per block: it proves every block up to it complete.
            if last_plain is not None:
                events.append(Progress(expected - 1, decoder.this_block_id(last_plain)))
            elif last is not None:
                events.append(Progress(last.block_num, last.block_id))
            if fork:
                events += self._fork_evidence(block, expected)
            self.results_received += results
            if failure is not None:
                if events:
                    yield events
                raise failure
            if results and not done and not fork:
                await ws.send_small(
                    ack
                    if results == 1
                    else codec.encode_request(codec.GetBlocksAckRequestV0(results), request_names)
                )
                self.acks_sent += results
            if events:
                yield events
            if done:
                return
            if fork:
                # The engine has seen the fork (a protocol fault) and restarts at its safe
                # point; a runner that went on reading gets a transient error instead.
                raise ProtocolError(
                    f"{self.endpoint} switched forks; restarting from the safe point"
                )

    def _skipped(self, num: int, expected: int, start_block: int) -> ProtocolError:
        return ProtocolError(
            f"the node sent block {num} where block {expected} was due: blocks would be "
            "skipped; it may have moved the start to its first available block (Leap 5, "
            "ship.md §1.5)",
            fatal=num > expected and expected == start_block,
        )

    def _check_reversible(self, block: Any, expected: int, start_block: int) -> bool:
        """Reversible mode: check one block result against the blocks delivered before it.

        Returns ``True`` for a fork inside the stream (a block number going back; see
        :meth:`_fork_evidence`). Raises the fatal forked-out error when a block already handed
        to the engine (so committed, or about to be) is no longer on the node's chain, and the
        skip error for a block number that jumps forward.
        """
        num = block.block_num
        if num > expected:
            raise self._skipped(num, expected, start_block)
        if num < expected:
            if expected == start_block:
                # The node lowered the start below our restart point: one of the
                # have_positions we sent (blocks the engine already has) was forked out.
                raise self._forked_out(
                    num, f"restarting at block {start_block}, the node answered from block {num}"
                )
            return True
        prev = block.prev_block
        known = self._positions.get(num - 1)
        if prev is not None and known is not None and bytes.fromhex(prev[1]) != known:
            # Block num - 1 was delivered with another id, and the node did not go back.
            raise self._forked_out(
                num - 1,
                f"block {num} names block {num - 1} {prev[1]}, not the one collected",
            )
        return False

    def _fork_evidence(self, block: Any, expected: int) -> list[Any]:
        """The events that show the engine a fork inside the stream: the node went back to
        re-send the blocks that replaced some we delivered (ship.md §1.4 ``block_applied``).

        The block's ``prev_block`` as a ``Progress``, behind the engine's safe point (the block
        after the last one delivered): a protocol fault by the engine's rules, which restarts
        at its safe point, where the next stream's have_positions let the node say which block
        was replaced. Then the block's own events (ignored by an engine that restarts).
        """
        num = block.block_num
        logger.warning(
            "SHiP %s: fork: the node went back to block %d after block %d (block %d is now %s)",
            self.endpoint, num, expected - 1, num, block.block_id,
        )  # fmt: skip
        prev = block.prev_block
        evidence: list[Any] = [Progress(prev[0], prev[1])] if prev is not None else []
        return [*evidence, *block.events, Progress(num, block.block_id)]

    def _forked_out(self, num: int, how: str) -> ProtocolError:
        return ProtocolError(
            f"block {num}, already committed in reversible mode (--include-reversible), was "
            f"forked out: {self.endpoint} no longer has the block id collected for it "
            f"({how}). Rows of "
            "forked-out blocks are in the dataset and are never taken back. Recollect from "
            f"before block {num} into a new --out folder, or collect irreversible blocks only "
            "(the default, without --include-reversible)",
            fatal=True,
        )

    def __repr__(self) -> str:
        return f"ShipSource({self.endpoint!r})"
