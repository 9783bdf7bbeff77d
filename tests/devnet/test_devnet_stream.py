"""get_action_traces over real sockets: start blocks, filters, shapes, progress, modes."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from devnet_helpers import (
    collect,
    open_ws,
    past_block,
    recv,
    recv_raw,
    run,
    send,
    traces_request,
)

from karma_analytics.devnet import devnet_server
from karma_analytics.devnet.chain import CONTRACT
from karma_analytics.model import transfer_from_action_trace

FROZEN = {"head": 1300, "block_interval": 0, "transfers_per_block": 2}


def _records(messages: list[dict], last: int) -> list:
    out = []
    for m in messages:
        if m["type"] == "action_trace" and m["data"]["block_num"] <= last:
            record = transfer_from_action_trace(m["data"])
            if record is not None:
                out.append(record)
    return out


@pytest.mark.slow
def test_history_equals_truth_and_two_servers_send_identical_frames():
    async def scenario() -> None:
        frames = []
        for _ in range(2):
            async with devnet_server(**FROZEN) as server:
                ws = await open_ws(server.url)
                await send(ws, traces_request(start_block=100))
                got = await collect(ws, past_block(500), raw=True)
                await ws.close()
                frames.append([f for f in got if '"action_trace"' in f])
                messages = [json.loads(f) for f in got]
                assert messages[0] == {
                    "type": "listening", "req_id": "r1", "data": {"next_block": 100},
                }  # fmt: skip
                records = _records(messages, 500)
                assert records == list(server.chain.truth(100, 500))
                assert len(records) > 400
        assert frames[0] == frames[1]

    run(scenario())


def test_start_block_forms_and_inclusive_start():
    async def scenario() -> None:
        async with devnet_server(**FROZEN) as server:
            ws = await open_ws(server.url)
            head = server.head
            await send(ws, traces_request("a", start_block=0))
            assert (await recv(ws))["data"] == {"next_block": head}
            await send(ws, traces_request("b", start_block=-300))
            listening = (await collect(ws, lambda m: m.get("req_id") == "b"))[-1]
            assert listening == {
                "type": "listening",
                "req_id": "b",
                "data": {"next_block": head - 300},
            }
            # Absolute and inclusive: the first traces are those of the start block itself.
            start = next(n for n in range(200, 400) if list(server.chain.truth(n, n)))
            await send(ws, traces_request("c", start_block=start))
            messages = await collect(
                ws, lambda m: m.get("req_id") == "c" and m["type"] == "action_trace"
            )
            first = messages[-1]
            assert first["data"]["block_num"] == start
            # A future start block is accepted: listening now, data once the head gets there.
            await send(ws, traces_request("d", start_block=head + 10))
            assert (await collect(ws, lambda m: m.get("req_id") == "d"))[-1]["data"] == {
                "next_block": head + 10
            }
            await ws.close()

    run(scenario())


@pytest.mark.slow
def test_receivers_default_to_accounts_and_explicit_receivers_get_notifications():
    async def scenario() -> None:
        async with devnet_server(**FROZEN) as server:
            rows = list(server.chain.truth(100, 400))
            user = rows[0].from_account
            ws = await open_ws(server.url)
            await send(ws, traces_request(start_block=100))
            plain = await collect(ws, past_block(400))
            receivers = {
                m["data"]["trace"]["receiver"] for m in plain if m["type"] == "action_trace"
            }
            assert receivers == {CONTRACT}
            await send(
                ws,
                traces_request(
                    "n", start_block=100,
                    data={"accounts": " therealkarma |", "receivers": f"therealkarma| {user} ",
                          "action_names": "transfer"},
                ),
            )  # fmt: skip
            both = await collect(ws, lambda m: m.get("req_id") == "n" and past_block(400)(m))
            traces = [
                m["data"]
                for m in both
                if m["type"] == "action_trace"
                and m["req_id"] == "n"
                and m["data"]["block_num"] <= 400
            ]
            assert {t["trace"]["receiver"] for t in traces} == {CONTRACT, user}
            note = next(t for t in traces if t["trace"]["receiver"] == user)
            assert transfer_from_action_trace(note) is None
            await ws.close()

    run(scenario())


@pytest.mark.slow
def test_action_names_empty_means_all_and_deprecated_aliases_and_get_actions():
    async def scenario() -> None:
        async with devnet_server(**FROZEN) as server:
            ws = await open_ws(server.url)
            await send(ws, traces_request("all", start_block=1, data={"accounts": CONTRACT}))
            messages = await collect(ws, past_block(1200))
            names = {
                m["data"]["trace"]["act"]["name"] for m in messages if m["type"] == "action_trace"
            }
            assert {"transfer", "issue", "powerup", "claim", "rewarded"} <= names
            # Singular fields replace the plural ones (action.go backwards compatibility).
            await send(
                ws,
                {"type": "get_actions", "req_id": "old", "listen": True, "start_block": 1,
                 "data": {"account": CONTRACT, "accounts": "eosio.token", "action_name": "issue",
                          "action_names": "transfer"}},
            )  # fmt: skip
            old = await collect(ws, lambda m: m.get("req_id") == "old" and past_block(1200)(m))
            names = {
                m["data"]["trace"]["act"]["name"]
                for m in old if m["type"] == "action_trace" and m["req_id"] == "old"
            }  # fmt: skip
            assert names == {"issue"}
            await ws.close()

    run(scenario())


@pytest.mark.slow
def test_inline_traces_and_ops_over_the_wire():
    async def scenario() -> None:
        async with devnet_server(**FROZEN) as server:
            ws = await open_ws(server.url)
            await send(
                ws,
                traces_request(
                    "x", start_block=1,
                    data={"accounts": CONTRACT, "action_names": "issue|transfer",
                          "with_inline_traces": True, "with_dbops": True, "with_ramops": True,
                          "with_dtrxops": True, "with_tableops": True},
                ),
            )  # fmt: skip
            messages = await collect(ws, past_block(1200))
            traces = [m["data"] for m in messages if m["type"] == "action_trace"]
            issue = next(t for t in traces if t["trace"]["act"]["name"] == "issue")
            assert issue["trace"]["inline_traces"][0]["act"]["name"] == "transfer"
            # The inline transfer matches the filter too: also sent as its own action_trace.
            child_gs = issue["trace"]["inline_traces"][0]["receipt"]["global_sequence"]
            assert any(t["trace"]["receipt"]["global_sequence"] == child_gs for t in traces)
            assert all("dbops" in t for t in traces)
            assert any("ramops" in t and "tableops" in t for t in traces)
            assert any("ramops" not in t for t in traces)
            await ws.close()

    run(scenario())


def test_progress_modulo_throttle_order_and_independent_of_matches():
    async def scenario() -> None:
        async with devnet_server(
            head=4000, block_interval=0.005, transfers_per_block=0.5, progress_throttle=0.02
        ) as server:
            ws = await open_ws(server.url)
            sent_at = time.monotonic()
            await send(ws, traces_request(start_block=1000, with_progress=7))
            messages = await collect(
                ws, lambda m: m["type"] == "progress" and m["data"]["block_num"] > 4000
            )
            first_progress_at = None
            last_action = 0
            for m in messages[1:]:
                if m["type"] == "progress":
                    first_progress_at = first_progress_at or time.monotonic()
                    block = m["data"]["block_num"]
                    assert block % 7 == 0
                    assert m["data"]["block_id"] == server.chain.block_id(block)
                    # Progress comes after every action of its block.
                    assert last_action <= block
                else:
                    last_action = m["data"]["block_num"]
            assert first_progress_at - sent_at >= 0.02
            # Progress with no matching actions at all (accounts that never act).
            await send(
                ws,
                traces_request("none", start_block=1, with_progress=1, data={"accounts": "nobody"}),
            )
            quiet = await collect(
                ws, lambda m: m.get("req_id") == "none" and m["type"] == "progress"
            )
            assert [m["type"] for m in quiet if m.get("req_id") == "none"] == [
                "listening",
                "progress",
            ]
            await ws.close()

    run(scenario())


@pytest.mark.slow
def test_progress_default_throttle_is_250ms():
    async def scenario() -> None:
        async with devnet_server(
            head=5_000_000, block_interval=0, transfers_per_block=0.05
        ) as server:
            ws = await open_ws(server.url)
            sent = time.monotonic()
            await send(
                ws, traces_request(start_block=1, with_progress=1, data={"accounts": "nobody"})
            )
            stamps = []
            while len(stamps) < 5:
                message = await recv(ws)
                if message["type"] == "progress":
                    stamps.append(time.monotonic())
            assert stamps[0] - sent >= 0.25
            # One progress per 250 ms at most, while thousands of blocks pass in between
            # (arrival times jitter with batching, so look at the mean gap).
            assert (stamps[-1] - stamps[0]) / 4 >= 0.22
            assert server.head == 5_000_000
            await ws.close()

    run(scenario())


def test_irreversible_only_waits_for_lib_and_live_mode_reaches_head():
    async def scenario() -> None:
        async with devnet_server(
            head=3000, block_interval=0.02, lib_lag=5, progress_throttle=0,
        ) as server:  # fmt: skip
            ws = await open_ws(server.url)
            await send(
                ws,
                traces_request(
                    "irr", start_block=0, irreversible_only=True, with_progress=1,
                    data={"accounts": "nobody"},
                ),
            )  # fmt: skip
            listening = await recv(ws)
            start = listening["data"]["next_block"]
            seen = []
            while len(seen) < 10:
                message = await recv(ws)
                if message["type"] == "progress":
                    block = message["data"]["block_num"]
                    assert block <= server.lib  # never beyond LIB
                    seen.append(block)
            assert seen == list(range(start, start + 10))
            await send(ws, {"type": "unlisten", "req_id": "u", "data": {"req_id": "irr"}})
            await send(
                ws,
                traces_request("live", start_block=0, with_progress=1, data={"accounts": "nobody"}),
            )
            messages = await collect(
                ws, lambda m: m.get("req_id") == "live" and m["type"] == "progress"
            )
            block = messages[-1]["data"]["block_num"]
            assert block > server.lib - 1  # reversible mode goes past LIB, up to head
            await ws.close()

    run(scenario())


@pytest.mark.slow
def test_reversible_mode_injects_forks_without_retraction():
    async def scenario() -> None:
        async with devnet_server(
            head=20_000, block_interval=0, fork_every=10, fork_depth=3, progress_throttle=0,
            transfers_per_block=3,
        ) as server:  # fmt: skip
            ws = await open_ws(server.url)
            await send(ws, traces_request(start_block=101, with_progress=1))
            messages = await collect(
                ws, lambda m: m["type"] == "progress" and m["data"]["block_num"] == 131
            )
            progress = [
                (m["data"]["block_num"], m["data"]["block_id"])
                for m in messages if m["type"] == "progress"
            ]  # fmt: skip
            nums = [n for n, _ in progress]
            assert nums[:13] == [101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 108, 109, 110]
            # Forked-out and replacement blocks share numbers but not ids.
            assert progress[7][1] != progress[10][1]
            assert progress[10][1] == server.chain.block_id(108)
            assert progress[7][1] == server.chain.block_id(108, 110)
            assert all(m["type"] in ("listening", "action_trace", "progress") for m in messages)
            # The whole stream is exactly: per event of the reversible order, the block's
            # matching traces, then its progress; forked-out actions are delivered and never
            # retracted, replacements come later with equal or lower numbers.
            expected = []
            for num, fork, _ in server.chain.reversible_events(101):
                block = server.chain.block(num, fork)
                for trx in block.transactions:
                    if trx.status != "executed":
                        continue
                    for trace in trx.traces:
                        act = trace.act
                        if trace.receiver == act.account == CONTRACT and act.name == "transfer":
                            expected.append(("a", num, block.id, trace.global_sequence))
                expected.append(("p", num, block.id, None))
                if (num, fork) == (131, 0):
                    break
            got = [
                ("a", m["data"]["block_num"], m["data"]["block_id"],
                 int(m["data"]["trace"]["receipt"]["global_sequence"]))
                if m["type"] == "action_trace"
                else ("p", m["data"]["block_num"], m["data"]["block_id"], None)
                for m in messages[1:]
            ]  # fmt: skip
            assert got == expected
            forked_ids = {server.chain.block_id(n, 110) for n in (108, 109, 110)}
            assert any(kind == "a" and block_id in forked_ids for kind, _, block_id, _ in got)
            # irreversible_only never sees forked-out blocks.
            await send(
                ws, traces_request("irr", start_block=101, irreversible_only=True, with_progress=1)
            )
            irr = await collect(
                ws,
                lambda m: (
                    m.get("req_id") == "irr"
                    and m["type"] == "progress"
                    and m["data"]["block_num"] == 120
                ),
            )
            irr_nums = [
                m["data"]["block_num"]
                for m in irr
                if m.get("req_id") == "irr" and m["type"] == "progress"
            ]
            assert irr_nums == list(range(101, 121))
            await ws.close()

    run(scenario())


def test_unlisten_stops_the_stream_and_replies_with_own_req_id():
    async def scenario() -> None:
        async with devnet_server(head=3000, block_interval=0.01, progress_throttle=0) as server:
            ws = await open_ws(server.url)
            await send(
                ws,
                traces_request("s1", start_block=0, with_progress=1, data={"accounts": "nobody"}),
            )
            await collect(ws, lambda m: m["type"] == "progress")
            await send(ws, {"type": "unlisten", "req_id": "u1", "data": {"req_id": "s1"}})
            reply = await collect(ws, lambda m: m["type"] == "unlistened")
            assert reply[-1] == {"type": "unlistened", "req_id": "u1", "data": {"success": True}}
            # Nothing more for s1: the next frames belong to a new request.
            await send(ws, {"type": "get_head_info", "req_id": "h", "fetch": True, "data": {}})
            after = await collect(ws, lambda m: m["type"] == "head_info")
            assert all(m.get("req_id") != "s1" for m in after)
            # The freed id can be reused; an unknown one is an error with the unlisten's req_id.
            await send(ws, {"type": "unlisten", "req_id": "u2", "data": {"req_id": "s1"}})
            error = await recv(ws)
            assert error["type"] == "error" and error["req_id"] == "u2"
            assert error["data"]["code"] == "ws_stream_not_found_error"
            assert error["data"]["message"] == "A request listener with this id does not exist."
            assert error["data"]["details"] == {"request_id": "s1"}
            await send(ws, {"type": "unlisten", "data": {"req_id": "zz"}})
            assert "req_id" not in await recv(ws)
            await ws.close()
            assert server.stats.streams_started == 1

    run(scenario())


def test_head_info_fetch_and_listen():
    async def scenario() -> None:
        async with devnet_server(head=3000, block_interval=0.01) as server:
            ws = await open_ws(server.url)
            await send(ws, {"type": "get_head_info", "req_id": "h1", "fetch": True, "data": {}})
            info = await recv(ws)
            assert info["type"] == "head_info" and info["req_id"] == "h1"
            data = info["data"]
            assert data["head_block_num"] - data["last_irreversible_block_num"] == 2
            assert data["head_block_id"] == server.chain.block_id(data["head_block_num"])
            assert data["head_block_time"].endswith("Z")
            await send(ws, {"type": "get_head_info", "req_id": "h2", "listen": True, "data": {}})
            heads = []
            while len(heads) < 3:
                message = await recv(ws)
                if message.get("req_id") == "h2":
                    heads.append(message["data"]["head_block_num"])
            assert heads == sorted(heads) and heads[-1] > heads[0]
            await ws.close()

    run(scenario())


def test_uint64_strings_and_omitted_fields_in_raw_frames():
    async def scenario() -> None:
        async with devnet_server(**FROZEN) as server:
            ws = await open_ws(server.url)
            await send(ws, traces_request(start_block=100))
            await recv_raw(ws)
            raw = await recv_raw(ws)
            assert raw.startswith('{"type":"action_trace","req_id":"r1","data":{"block_num":')
            assert '"global_sequence":"' in raw and '"recv_sequence":"' in raw
            assert '"except"' not in raw and '"depth"' not in raw and '"dbops"' not in raw
            await send(ws, traces_request("", start_block=100))
            # An empty req_id: replies carry no req_id at all.
            message = await collect(ws, lambda m: "req_id" not in m, raw=True)
            assert message[-1].startswith('{"type":"listening","data":')
            await ws.close()
            assert server.stats.action_traces_sent >= 1

    run(scenario())


@pytest.mark.slow
def test_history_is_fast_enough_for_a_demo():
    """A warm replay (second pass, frames from the cache) of 10,000 frames stays fast even under
    CI load (bench/bench_devnet.py measures the real rate)."""

    async def scenario() -> None:
        async with devnet_server(head=6000, block_interval=0, transfers_per_block=2) as server:
            for attempt in range(2):
                ws = await open_ws(server.url)
                await send(ws, traces_request(f"r{attempt}", start_block=1))
                started = time.monotonic()
                count = 0
                while True:
                    raw = await asyncio.wait_for(ws.recv(), 10)
                    if raw.startswith('{"type":"action_trace"'):
                        count += 1
                        if count == 10_000:
                            break
                elapsed = time.monotonic() - started
                ws.transport.abort()
            assert count / elapsed > 5_000, f"{count / elapsed:.0f} frames/s"

    run(scenario())
