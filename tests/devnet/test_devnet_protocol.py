"""Protocol edges over real sockets: errors, validation, listener map, pings, auth."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import time

import pytest
from devnet_helpers import (
    collect,
    eventually,
    open_ws,
    recv,
    recv_raw,
    run,
    send,
    traces_request,
)
from websockets.exceptions import InvalidStatus

from karma_analytics.devnet import devnet_server

QUIET = {"head": 5000, "block_interval": 0, "ping_interval": 30}


def _error(message: dict) -> dict:
    assert message["type"] == "error", message
    data = message["data"]
    assert re.fullmatch(r"[0-9a-f]{32}", data["trace_id"])
    return data


def test_frame_level_errors_have_no_req_id():
    async def scenario() -> None:
        async with devnet_server(**QUIET) as server:
            ws = await open_ws(server.url)
            await ws.send(b"\x01\x02")
            raw = await recv_raw(ws)
            assert raw.startswith(
                '{"type":"error","data":{"code":"ws_binary_message_unsupported_error"'
            )
            data = _error(json.loads(raw))
            assert data["message"] == "Binary messages are not supported."
            assert "details" not in data
            await ws.send("not json")
            data = _error(await recv(ws))
            assert data["code"] == "ws_invalid_json_message_error"
            assert data["message"] == "The received message is not a valid JSON."
            assert (
                data["details"]["reason"] == "invalid character 'n' looking for beginning of value"
            )
            await ws.send('{"type": "get_head_info", "req_id": 5}')
            message = await recv(ws)
            assert "req_id" not in message
            assert _error(message)["code"] == "ws_invalid_json_message_error"
            # The connection stays open after errors.
            await send(ws, {"type": "get_head_info", "req_id": "ok", "fetch": True})
            assert (await recv(ws))["type"] == "head_info"
            await ws.close()

    run(scenario())


def test_unknown_types_ping_and_pong():
    async def scenario() -> None:
        async with devnet_server(**QUIET) as server:
            ws = await open_ws(server.url)
            await send(ws, {"type": "pong"})  # client-js keep-alive: silently dropped
            await send(ws, {"type": "ping", "req_id": "p"})
            message = await recv(ws)
            assert message["req_id"] == "p"
            data = _error(message)
            assert data["code"] == "ws_unknown_message_error"
            assert data["message"] == "The received message type is unknown."
            assert data["details"] == {"type": "ping"}
            await send(ws, {"req_id": "q"})
            assert _error(await recv(ws))["details"] == {"type": ""}
            await send(ws, {"type": "get_table_rows", "req_id": "t", "listen": True, "data": {}})
            assert _error(await recv(ws))["code"] == "ws_unavailable_message_error"
            await ws.close()

    run(scenario())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"data": {"action_names": "transfer"}}, "'data.accounts' required"),
        ({"data": None}, "'data.accounts' required"),
        ({"listen": False}, "'listen' required"),
        ({"listen": None}, "'listen' required"),
        ({"fetch": True}, "'fetch' not supported"),
    ],
)
def test_validation_errors(change, reason):
    async def scenario() -> None:
        async with devnet_server(**QUIET) as server:
            ws = await open_ws(server.url)
            await send(ws, traces_request("v", **change))
            message = await recv(ws)
            assert message["req_id"] == "v"
            data = _error(message)
            assert data["code"] == "ws_message_data_validation_error"
            assert data["message"] == "The received message data is not valid."
            assert data["details"] == {"reason": reason}
            await ws.close()

    run(scenario(), timeout=15)


def test_mistyped_fields_are_json_data_errors():
    async def scenario() -> None:
        async with devnet_server(**QUIET) as server:
            ws = await open_ws(server.url)
            for field, value in (
                ("start_block", "100"),
                ("start_block", 1.5),
                ("with_progress", True),
            ):
                await send(ws, traces_request("m", **{field: value}))
                data = _error(await recv(ws))
                assert data["code"] == "ws_invalid_json_message_data_error"
                assert data["message"] == "The received message data is not a valid JSON."
                assert f"GetActionTraces.{field} of type int64" in data["details"]["reason"]
            await send(ws, traces_request("m", data={"accounts": ["therealkarma"]}))
            data = _error(await recv(ws))
            assert "GetActionTraces.data.accounts of type string" in data["details"]["reason"]
            # Go matches keys case-insensitively: START_BLOCK works.
            await send(ws, {"type": "get_action_traces", "req_id": "c", "Listen": True,
                            "START_BLOCK": 42, "data": {"Accounts": "therealkarma"}})  # fmt: skip
            assert (await recv(ws))["data"] == {"next_block": 42}
            await ws.close()

    run(scenario())


def test_duplicate_and_too_many_listeners_off_by_one():
    async def scenario() -> None:
        async with devnet_server(**QUIET, max_streams=2) as server:
            ws = await open_ws(server.url)
            quiet = {"accounts": "nobody"}
            for i in range(3):  # max + 1 are accepted (the check runs before adding)
                await send(ws, traces_request(f"s{i}", data=quiet))
                assert (await recv(ws))["type"] == "listening"
            await send(ws, traces_request("s3", data=quiet))
            data = _error(await recv(ws))
            assert data["code"] == "ws_too_much_stream_error"
            assert (
                data["message"]
                == "No more request listener could be created within this connection."
            )
            assert data["details"] == {"actual_listener_count": 3, "maximum_listener_count": 2}
            await send(ws, {"type": "unlisten", "req_id": "u", "data": {"req_id": "s2"}})
            assert (await recv(ws))["type"] == "unlistened"
            await send(ws, traces_request("s1", data=quiet))
            message = await recv(ws)
            assert message["req_id"] == "s1"
            data = _error(message)
            assert data["code"] == "ws_stream_already_exist_error"
            assert data["message"] == "A request listener with this id already exists."
            assert data["details"] == {"request_id": "s1"}
            # Listener ids are per connection: another connection may reuse s1.
            other = await open_ws(server.url)
            await send(other, traces_request("s1", data=quiet))
            assert (await recv(other))["type"] == "listening"
            await other.close()
            await ws.close()

    run(scenario())


def test_start_block_edge_cases_and_history_limit():
    async def scenario() -> None:
        async with devnet_server(**QUIET, history_limit=1000) as server:
            ws = await open_ws(server.url)
            await send(ws, traces_request("old", start_block=3000))
            message = await recv(ws)
            data = _error(message)
            assert data["code"] == "auth_invalid_streaming_start_block_error"
            assert data["message"] == (
                "Your credentials allow you to go back as far as block #4000, but you requested "
                "block #3000. Contact support@dfuse.io or reach us via our dfuse Telegram "
                "channels to request an API key able to retrieve more historical data."
            )
            assert "details" not in data
            await send(ws, traces_request("rel", start_block=-1001))
            assert _error(await recv(ws))["code"] == "auth_invalid_streaming_start_block_error"
            await send(ws, traces_request("ok", start_block=-1000))
            assert (await recv(ws))["data"] == {"next_block": 4000}
            await ws.close()
        async with devnet_server(**QUIET) as server:
            ws = await open_ws(server.url)
            # Beyond -head the uint32 arithmetic wraps to a far-future block (accepted).
            await send(ws, traces_request("wrap", start_block=-6000, data={"accounts": "nobody"}))
            assert (await recv(ws))["data"] == {"next_block": 5000 - 6000 + 2**32}
            await send(ws, traces_request("zero", start_block=-4_000_000_000))
            data = _error(await recv(ws))
            assert data["code"] == "request_validation_error"
            assert data["message"] == "The request is invalid."
            assert data["details"] == {
                "errors": {"block_num": ["The block_num field must be greater than 0"]}
            }
            await ws.close()

    run(scenario())


def test_pings_every_interval_and_not_counted_as_replies():
    async def scenario() -> None:
        async with devnet_server(head=5000, block_interval=0, ping_interval=0.05) as server:
            ws = await open_ws(server.url)
            pings = []
            while len(pings) < 3:
                raw = await asyncio.wait_for(ws.recv(), 5)
                pings.append(raw)
            for raw in pings:
                assert re.fullmatch(
                    r'\{"type":"ping","data":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z"\}', raw
                ), raw
            await ws.close()
            assert server.stats.pings_sent >= 3

    run(scenario())


def _post(url: str, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("POST", path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = json.loads(response.read() or b"null")
    connection.close()
    return response.status, payload


def _exp_claim(token: str) -> float:
    """The ``exp`` claim of a JWT (seconds, with the millisecond the server rounded it to)."""
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


@pytest.mark.slow
def test_auth_issue_and_token_checks_at_upgrade():
    async def scenario() -> None:
        async with devnet_server(**QUIET, api_key="server_abc123", token_ttl=0.6) as server:
            assert server.auth_url and server.auth_url.startswith("http://127.0.0.1:")
            # No token at all: 401 with the dfuse error body, no upgrade.
            with pytest.raises(InvalidStatus) as caught:
                await open_ws(server.url)
            response = caught.value.response
            assert response.status_code == 401
            body = json.loads(response.body)
            assert body["code"] == "auth_invalid_token_error"
            assert body["message"] == "Unable to correctly decode provided token."
            assert body["details"]["token"] == "" and "required" in body["details"]["reason"]
            assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"])
            # client-js posts JSON without any Content-Type.
            status, issued = await asyncio.to_thread(
                _post, server.auth_url, "/v1/auth/issue", b'{"api_key":"server_abc123"}'
            )
            assert status == 200 and set(issued) == {"token", "expires_at"}
            assert isinstance(issued["expires_at"], int)
            assert issued["expires_at"] <= time.time() + 0.6
            token = issued["token"]
            status, bad = await asyncio.to_thread(
                _post, server.auth_url, "/v1/auth/issue", b'{"api_key":"nope"}'
            )
            assert status == 401 and bad["code"]
            status, _ = await asyncio.to_thread(_post, server.auth_url, "/v1/auth/issue", b"{")
            assert status == 400
            # Token in the query string, in a Bearer header, and a malformed header falling
            # back to the query parameter.
            ws1 = await open_ws(f"{server.url}?token={token}")
            ws2 = await open_ws(server.url, additional_headers={"Authorization": f"Bearer {token}"})
            ws3 = await open_ws(
                f"{server.url}?token={token}", additional_headers={"Authorization": "Token x y"}
            )
            with pytest.raises(InvalidStatus) as caught:
                await open_ws(server.url, additional_headers={"Authorization": f"Bearer {token}x"})
            assert caught.value.response.status_code == 401
            # Expiry is checked only at the upgrade: ws1 lives on, a new upgrade fails once
            # the clock has passed the token's own exp claim.
            expires = _exp_claim(token)
            await eventually(lambda: time.time() >= expires, timeout=5)
            with pytest.raises(InvalidStatus) as caught:
                await open_ws(f"{server.url}?token={token}")
            expired = json.loads(caught.value.response.body)
            assert "expired" in expired["details"]["reason"]
            await send(ws1, {"type": "get_head_info", "req_id": "h", "fetch": True})
            assert (await recv(ws1))["type"] == "head_info"
            for ws in (ws1, ws2, ws3):
                await ws.close()
            assert server.stats.rejected_auth == 3

    run(scenario())


def test_other_paths_are_404():
    async def scenario() -> None:
        async with devnet_server(**QUIET) as server:
            with pytest.raises(InvalidStatus) as caught:
                await open_ws(server.url.replace("/v1/stream", "/v1/other"))
            assert caught.value.response.status_code == 404
            ws = await open_ws(server.url + "?x=1")  # query strings are fine
            await ws.close()

    run(scenario())


def test_compression_is_negotiated_when_offered():
    async def scenario() -> None:
        async with devnet_server(**QUIET, transfers_per_block=2) as server:
            ws = await open_ws(server.url, compression="deflate")
            assert ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith(
                "permessage-deflate"
            )
            await send(ws, traces_request(start_block=100))
            messages = await collect(
                ws, lambda m: m["type"] == "action_trace" and m["data"]["block_num"] > 300
            )
            assert sum(m["type"] == "action_trace" for m in messages) > 100
            await ws.close()

    run(scenario())
