"""The devnet Hyperion's Socket.IO stream over loopback, 3.x and 4.x: handshake, request
validation and acks, history (acked on 4.x), live, lib_update, relay faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio
from devnet_hyperion_helpers import decode, run, serving, truth

KARMA = {"contract": "therealkarma", "action": "transfer", "account": "", "filters": []}


class Recorder:
    """A python-socketio client that records every event in arrival order."""

    def __init__(self, history_ack: Any = None) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        self.history_ack = history_ack if history_ack is not None else {"status": True}

        async def any_event(event: str, data: Any = None) -> Any:
            self.events.append((event, data))  # first, synchronously: arrival order (§3.1)
            self.changed.set()
            if (
                event == "message" and isinstance(data, dict)
                and data.get("mode") == "history" and data.get("type") == "action_trace"
            ):  # fmt: skip
                return self.history_ack
            return None

        self.client.on("*", any_event)

    async def wait(self, predicate: Any, timeout: float = 15.0) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def of(self, name: str, **match: Any) -> list[Any]:
        return [
            d for e, d in self.events
            if e == name and all(isinstance(d, dict) and d.get(k) == v for k, v in match.items())
        ]  # fmt: skip


@contextlib.asynccontextmanager
async def connected(url: str, **kwargs: Any) -> AsyncIterator[Recorder]:
    recorder = Recorder(**kwargs)
    await recorder.client.connect(url, transports=["websocket"], socketio_path="stream")
    try:
        yield recorder
    finally:
        await recorder.client.disconnect()


def fold(doc: dict) -> dict:
    """What clients do with a raw doc (the JS client's processActionTrace): ``@transfer``
    merged into ``act.data``."""
    meta = doc.get("@transfer")
    if meta is None:
        return doc
    out = dict(doc)
    out["act"] = dict(doc["act"], data={**meta, **doc["act"]["data"]})
    return out


def _history_docs(recorder: Recorder) -> list[dict]:
    return [fold(m) for d in recorder.of("message", type="action_trace", mode="history")
            for m in d["messages"]]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.3", "4.0.7"])
def test_handshake_history_equals_truth(version: str) -> None:
    async def scenario() -> None:
        async with (
            serving(hyperion_version=version, head=1500, stream_batch=100,
                    stream_batch_pause=0) as server,
            connected(server.url) as rec,
        ):  # fmt: skip
            if version.startswith("4"):
                await rec.wait(lambda: rec.of("handshake"))
                assert rec.of("handshake")[0] == {"chain": "devnet", "chain_id": server.chain_id}
            else:
                await rec.wait(lambda: rec.of("message", event="handshake"))
            ack = await rec.client.call(
                "action_stream_request", {**KARMA, "start_from": 100, "read_until": 1400},
                timeout=5,
            )  # fmt: skip
            assert ack["status"] == "OK" and ack["currentBlockNum"] == 1500
            if version.startswith("4"):
                await rec.wait(lambda: rec.of("message", type="history_end"))
                assert rec.of("message", type="history_end")[0]["reqUUID"] == ack["reqUUID"]
            else:
                # 3.x overwrites read_until with currentBlockNum (§3.3): history to 1500.
                expected = len(truth(server.chain, 100, 1500))
                await rec.wait(lambda: len(_history_docs(rec)) >= expected)
        docs = _history_docs(rec)
        assert rec.of("message", type="trace_init")[0]["first_block"] >= 100
        assert decode(docs) == truth(server.chain, 100, 1400 if version.startswith("4") else 1500)
        first = docs[0]
        if version.startswith("4"):
            # merged: @transfer folded into act.data, timestamp added; sorted by block only
            assert "@transfer" not in first and "timestamp" in first
            assert list(first["act"]["data"])[:3] == ["from", "to", "amount"]
            blocks = [d["block_num"] for d in docs]
            assert blocks == sorted(blocks)
        else:
            # raw: @transfer apart, string sequences, sorted by global_sequence
            raw = rec.of("message", type="action_trace", mode="history")[0]["messages"][0]
            assert "@transfer" in raw and set(raw["act"]["data"]) == {"quantity"}
            assert isinstance(first["receipts"][0]["global_sequence"], str)
            sequences = [d["global_sequence"] for d in docs]
            assert sequences == sorted(sequences)

    run(scenario())


def test_v4_history_stops_silently_unless_ack_is_status_true() -> None:
    async def scenario() -> None:
        async with (
            serving(head=1500, stream_batch=20, stream_batch_pause=0) as server,
            connected(server.url, history_ack=True) as rec,  # a bare True is not {status: true}
        ):
            await rec.client.call(
                "action_stream_request", {**KARMA, "start_from": 100, "read_until": 1400},
                timeout=5,
            )  # fmt: skip
            await server.wait_for(lambda: server.stats.stream_history_stopped == 1)
        assert len(rec.of("message", type="action_trace", mode="history")) == 1
        assert not rec.of("message", type="history_end")

    run(scenario())


@pytest.mark.parametrize(
    ("version", "request_", "expected"),
    [
        ("4.0.7", {**KARMA, "action": "*"}, {"status": "ERROR",
                                              "message": "Invalid action name: *"}),
        ("4.0.7", {"start_from": 1}, {"status": "ERROR",
                                       "message": "account or contract and action are required"}),
        ("4.0.7", {**KARMA, "contract": "nosuchtoken1"},
         {"status": "ERROR", "message": "Contract nosuchtoken1 not found"}),
        ("4.0.7", {**KARMA, "start_from": 50, "read_until": 10},
         {"status": "ERROR", "message": "start_from cannot be greater than read_until"}),
        ("3.5", {**KARMA, "contract": "eosio.token"},
         {"status": "FAIL", "reason": "request too broad, please be more specific"}),
        ("3.3", {"contract": "therealkarma", "action": "transfer"},
         {"status": "FAIL", "reason": "invalid request"}),
        ("3.3", {**KARMA, "action": "*"}, {"status": "OK"}),
    ],
)  # fmt: skip
def test_request_validation_by_version(version: str, request_: dict, expected: dict) -> None:
    async def scenario() -> None:
        async with (
            serving(hyperion_version=version) as server,
            connected(server.url) as rec,
        ):
            ack = await rec.client.call("action_stream_request", request_, timeout=5)
        assert {k: ack[k] for k in expected} == expected
        if ack["status"] == "ERROR":
            assert "reqUUID" not in ack
        else:
            assert ack["reqUUID"] and ack["currentBlockNum"] == 20_000

    run(scenario())


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.5", "4.0.5"])
def test_live_docs_come_before_the_lib_update_that_covers_them(version: str) -> None:
    async def scenario() -> None:
        async with (
            serving(hyperion_version=version, block_interval=0.02, transfers_per_block=5,
                    lib_lag=3) as server,
            connected(server.url) as rec,
        ):  # fmt: skip
            ack = await rec.client.call("action_stream_request", dict(KARMA), timeout=5)
            start = ack["currentBlockNum"]
            await rec.wait(
                lambda: any(
                    e == "lib_update" and d["block_num"] >= start + 15 for e, d in rec.events
                )
            )
        live = []
        for index, (event, data) in enumerate(rec.events):
            if event == "message" and isinstance(data, dict) and data.get("mode") == "live":
                raw = data["message"]
                if version.startswith("4"):
                    assert isinstance(raw, bytes) and data["targets"] == [ack["reqUUID"]]
                else:
                    assert isinstance(raw, str) and data["reqUUID"] == ack["reqUUID"]
                live.append((index, fold(json.loads(raw))))
        assert live and all(doc["block_num"] > start for _, doc in live)
        assert "@transfer" in json.loads(rec.of("message", mode="live")[0]["message"])  # raw
        libs = [(i, d) for i, (e, d) in enumerate(rec.events) if e == "lib_update"]
        assert libs[0][1]["chain_id"] == server.chain_id
        assert libs[0][1]["block_id"] == server.chain.block_id(libs[0][1]["block_num"])
        for index, doc in live:
            covering = [i for i, d in libs if d["block_num"] >= doc["block_num"]]
            assert not covering or covering[0] > index
        last_lib = libs[-1][1]["block_num"]
        got = decode([doc for _, doc in live if doc["block_num"] <= last_lib])
        assert {t[0] for t in truth(server.chain, start + 1, last_lib)} <= {g[0] for g in got}

    run(scenario())


def test_relay_down_offline_and_restored() -> None:
    async def scenario() -> None:
        async with (
            serving(block_interval=0.02, stream_relay_down_after=5,
                    stream_relay_down_blocks=10) as server,
            connected(server.url) as rec,
        ):  # fmt: skip
            await rec.client.call("action_stream_request", dict(KARMA), timeout=5)
            await rec.wait(lambda: ("status", "relay_down") in rec.events)
            offline = await rec.client.call("action_stream_request", dict(KARMA), timeout=5)
            await rec.wait(lambda: ("status", "relay_restored") in rec.events)
        assert offline == "STREAMING_OFFLINE"
        assert server.stats.stream_relay_downs >= 1

    run(scenario())


def test_never_ack_mode_times_out_the_client() -> None:
    async def scenario() -> None:
        async with (
            serving(stream_never_ack=True) as server,
            connected(server.url) as rec,
        ):
            with pytest.raises(socketio.exceptions.TimeoutError):
                await rec.client.call("action_stream_request", dict(KARMA), timeout=0.5)

    run(scenario())


def test_seam_overlap_replays_the_request_head_live() -> None:
    async def scenario() -> None:
        async with (
            serving(stream_seam=40, transfers_per_block=5) as server,
            connected(server.url) as rec,
        ):
            ack = await rec.client.call(
                "action_stream_request", {**KARMA, "start_from": 19_900}, timeout=5
            )
            await rec.wait(lambda: rec.of("message", type="history_end"))
            expected = {t[0] for t in truth(server.chain, 19_961, 20_000)}
            await rec.wait(lambda: len(rec.of("message", mode="live")) >= len(expected))
        live = {g[0] for g in decode(
            [fold(json.loads(d["message"])) for d in rec.of("message", mode="live")])}  # fmt: skip
        history = {g[0] for g in decode(_history_docs(rec))}
        assert ack["currentBlockNum"] == 20_000
        assert live == expected and expected <= history  # the same docs twice: dedupe

    run(scenario())


@pytest.mark.parametrize("mode, status", [("absent", 404), ("refuse", 400)])
def test_a_host_without_a_usable_stream(mode: str, status: int) -> None:
    # "absent": a host that does not proxy /stream/ (the catch-all 404); "refuse": HTTP 400
    # with an Engine.IO error, the stand-in for a Socket.IO 2 server (hyperion_stream.py).
    async def scenario() -> None:
        import aiohttp

        async with serving() as server:
            server.stream.mode = mode
            async with (
                aiohttp.ClientSession() as session,
                session.get(server.url + "/stream/?EIO=4&transport=websocket") as response,
            ):
                body = await response.json(content_type=None)
            assert response.status == status
            if mode == "absent":
                assert body["statusCode"] == 404 and "/stream/" in body["message"]
            else:
                assert body == {"code": 5, "message": "Unsupported protocol version"}
            client = socketio.AsyncClient(reconnection=False)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(server.url, transports=["websocket"], socketio_path="stream")
            await client.disconnect()  # closes its HTTP session
            assert server.stream.refused == 2 and server.stats.stream_connections == 0
            server.stream.mode = "socketio"  # and back: the stream is served again
            async with connected(server.url) as rec:
                ack = await rec.client.call("action_stream_request", dict(KARMA), timeout=5)
            assert ack["status"] == "OK" and server.stats.stream_connections == 1

    run(scenario())
