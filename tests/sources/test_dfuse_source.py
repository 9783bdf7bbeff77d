"""DfuseSource against a real loopback server that follows dfuse-protocol.md (see conftest)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dfuse_fake import (
    API_KEY,
    CONTRACT,
    FakeDfuse,
    Plan,
    drive_engine,
    expected_transfers,
    failover,
    run,
    trace_data,
)

from karma_analytics.engine import (
    ActionReceived,
    ConnectionLost,
    Engine,
    Listening,
    Progress,
)
from karma_analytics.exceptions import ConnectError, ProtocolError, ServerError, UsageError
from karma_analytics.sources.dfuse import DfuseSource, resolve_endpoint
from karma_analytics.sources.retry import Failover, exponential_backoff

Events = list[Any]


class Schedule:
    """An injected backoff schedule that records every delay the source asked for."""

    def __init__(self, delays: Callable[[int], float] = lambda n: 0.001 * (n + 1)) -> None:
        self.delays = delays
        self.taken: list[float] = []
        self.starts = 0

    def __call__(self) -> Iterator[float]:
        self.starts += 1
        n = 0
        while True:
            delay = self.delays(n)
            self.taken.append(delay)
            yield delay
            n += 1


def source_for(server: FakeDfuse, **options: Any) -> Failover:
    options.setdefault("backoff", Schedule())
    return failover(server.url, **options)


async def drive(
    source: DfuseSource,
    until: Callable[[Events], bool],
    *,
    restart_at: Callable[[Events], int | None] = lambda events: None,
) -> Events:
    """A minimal runner: records events, answers ConnectionLost with restart()."""
    events: Events = []
    try:
        async for event in source.events():
            events.append(event)
            if isinstance(event, ConnectionLost):
                source.restart(restart_at(events))
            if until(events):
                break
    finally:
        await source.aclose()
    return events


def count(kind: type, n: int) -> Callable[[Events], bool]:
    return lambda events: sum(isinstance(e, kind) for e in events) >= n


def lost(events: Events) -> list[str]:
    return [e.reason for e in events if isinstance(e, ConnectionLost)]


# --- endpoint --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("ws://127.0.0.1:8080", "ws://127.0.0.1:8080/v1/stream"),
        ("ws://127.0.0.1:8080/", "ws://127.0.0.1:8080/v1/stream"),
        ("wss://example.org/custom/path", "wss://example.org/custom/path"),
        ("eos.dfuse.example.org", "wss://eos.dfuse.example.org/v1/stream"),
        ("localhost:9000", "ws://localhost:9000/v1/stream"),
    ],
)
def test_resolve_endpoint(given: str, url: str) -> None:
    assert resolve_endpoint(given) == url


@pytest.mark.parametrize("name", ["mainnet", "kylin", "eosnation", "community", "EOS"])
def test_hosted_dfuse_names_say_the_service_is_gone(name: str) -> None:
    with pytest.raises(UsageError, match="shut down in 2024") as info:
        resolve_endpoint(name)
    assert "--source hyperion --network eos" in str(info.value)


def test_resolve_endpoint_refusals() -> None:
    with pytest.raises(UsageError, match="no dfuse endpoint"):
        resolve_endpoint("")
    with pytest.raises(UsageError, match=r"ws:// or wss://.*Hyperion"):
        resolve_endpoint("http://example.org")
    with pytest.raises(UsageError, match="credentials") as info:
        resolve_endpoint("wss://example.org/v1/stream?token=eyJa.eyJb.sig")
    assert "eyJa" not in str(info.value)


def test_backoff_schedule_is_capped_jittered_and_seeded() -> None:
    import random

    a = exponential_backoff(initial=1, factor=2, maximum=8, jitter=0.5, rng=random.Random(3))()
    b = exponential_backoff(initial=1, factor=2, maximum=8, jitter=0.5, rng=random.Random(3))()
    first = [next(a) for _ in range(8)]
    assert first == [next(b) for _ in range(8)]
    caps = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(cap * 0.5 <= d <= cap for d, cap in zip(first, caps, strict=True))


# --- request ---------------------------------------------------------------------------------


def test_request_shape_and_restart_point() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, plans=[Plan(after=3, then="drop")]) as server:
            source = source_for(server, start_block=10)
            events = await drive(source, count(Listening, 2), restart_at=lambda ev: 12)
            assert server.raw_requests[0] == (
                '{"type":"get_action_traces","req_id":"karma-therealkarma-transfer",'
                '"listen":true,"start_block":10,"irreversible_only":true,"with_progress":10,'
                '"data":{"accounts":"therealkarma","receivers":"therealkarma",'
                '"action_names":"transfer"}}'
            )
            second = json.loads(server.raw_requests[1])
            assert second == {**json.loads(server.raw_requests[0]), "start_block": 12}
            assert events[0] == Listening(10)
            assert events[-1] == Listening(12)
            assert server.tokens_seen == [None, None]  # no key: no token parameter at all

    run(main())


def test_head_start_and_options() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100) as server:
            source = source_for(
                server, start_block=0, irreversible_only=False, with_progress=0, req_id="r1"
            )
            events = await drive(source, count(Listening, 1))
            request = json.loads(server.raw_requests[0])
            assert request["start_block"] == 0 and request["irreversible_only"] is False
            assert request["req_id"] == "r1" and "with_progress" not in request
            assert events == [Listening(100)]  # the server resolved 0 to its head (§4.1)

    run(main())


def test_stream_content_matches_the_chain() -> None:
    async def main() -> None:
        async with FakeDfuse(head=60, progress_throttle=0.0) as server:
            source = source_for(server, start_block=10, with_progress=5)
            events = await drive(
                source, lambda ev: any(isinstance(e, Progress) and e.block_num == 60 for e in ev)
            )
            rows = [e.transfer for e in events if isinstance(e, ActionReceived)]
            assert rows == expected_transfers(10, 60)
            progress = [e.block_num for e in events if isinstance(e, Progress)]
            assert progress == list(range(10, 61, 5))

    run(main())


# --- reconnects ------------------------------------------------------------------------------


def test_exactly_once_through_drops_with_the_real_engine() -> None:
    """Drops at several points; the engine's restarts make every row arrive once."""

    async def main() -> None:
        plans = [
            Plan(after=4, then="drop"),
            Plan(after=9, then="close", code=1000),
            Plan(after=2, then="close", code=1011),
            Plan(after=7, then="drop"),
        ]
        async with FakeDfuse(head=120, progress_throttle=0.0, plans=plans) as server:
            source = source_for(server, start_block=10, with_progress=3)
            engine = Engine(next_block=10, flush_rows=5, flush_seconds=0.0, stop_block=100)
            out = await drive_engine(source, engine)
            assert out["rows"] == expected_transfers(10, 100)
            assert server.connections == 5
            starts = [json.loads(r)["start_block"] for r in server.raw_requests]
            assert starts[0] == 10 and starts == sorted(starts)

    run(main())


@pytest.mark.parametrize(("code", "by"), [(1000, "server"), (1009, "server"), (1011, "server")])
def test_close_codes_reconnect_and_are_logged(
    code: int, by: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> Events:
        async with FakeDfuse(head=100, plans=[Plan(after=2, then="close", code=code)]) as server:
            return await drive(source_for(server), count(Listening, 2))

    with caplog.at_level(logging.INFO, logger="karma_analytics"):
        events = run(main())
    assert lost(events) == [
        f"connection closed by the {by} with code {code} "
        f"({ {1000: 'normal closure', 1009: 'message too big', 1011: 'server error'}[code] })"
    ]
    assert f"code {code}" in caplog.text


def test_abnormal_drop_is_1006() -> None:
    async def main() -> Events:
        async with FakeDfuse(head=100, plans=[Plan(after=1, then="drop")]) as server:
            return await drive(source_for(server), count(Listening, 2))

    assert "code 1006" in lost(run(main()))[0]


def test_frame_above_max_size_doubles_the_limit() -> None:
    async def main() -> None:
        big = {"type": "ping", "data": "x" * 5000}
        async with FakeDfuse(head=100, plans=[Plan(extra=[big])]) as server:
            source = source_for(server, max_size=4096)
            events = await drive(source, count(Listening, 2))
            assert "1009" in lost(events)[0] and "8192" in lost(events)[0]
            assert source.sources[0].max_size == 8192

    run(main())


def test_accept_then_drop_backs_off_and_resets_after_data() -> None:
    async def main() -> None:
        plans = [Plan(then="accept_drop")] * 3 + [
            Plan(after=2, then="drop"),
            Plan(then="accept_drop"),
        ]
        async with FakeDfuse(head=100, plans=plans) as server:
            schedule = Schedule(lambda n: [0.01, 0.02, 0.04, 0.08][min(n, 3)])
            source = source_for(server, backoff=schedule)
            events = await drive(source, count(Listening, 2))
            # three failed opens: 3 growing delays; the 4th connection delivered data, so the
            # schedule restarts (0.01) after its drop, and again after the last accept_drop (0.02)
            assert schedule.taken == [0.01, 0.02, 0.04, 0.01, 0.02]
            assert schedule.starts == 2
            assert len(lost(events)) == 5 and server.connections == 6
            assert source.reconnects == 5

    run(main())


def test_refused_handshakes_transient_then_fatal() -> None:
    async def main() -> None:
        plans = [Plan(refuse=503), Plan(refuse=429), Plan()]
        async with FakeDfuse(head=100, plans=plans) as server:
            events = await drive(source_for(server), count(Listening, 1))
            reasons = lost(events)
            assert "HTTP 503" in reasons[0] and "HTTP 429" in reasons[1]
        async with FakeDfuse(head=100, plans=[Plan(refuse=404)]) as server:
            with pytest.raises(ConnectError) as info:
                await drive(source_for(server), count(Listening, 1))
            assert info.value.fatal and info.value.status == 404
            assert "check the endpoint URL" in str(info.value)

    run(main())


def test_connection_refused_is_transient() -> None:
    async def main() -> None:
        with socket.socket() as probe:  # a port with nothing listening
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        source = failover(f"ws://127.0.0.1:{port}", open_timeout=2, backoff=Schedule())
        events = await drive(source, count(ConnectionLost, 2))
        assert all("cannot connect" in r for r in lost(events))

    run(main())


def test_resuming_without_restart_is_misuse() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, plans=[Plan(then="accept_drop")]) as server:
            source = source_for(server)
            iterator = source.events()
            assert isinstance(await iterator.__anext__(), ConnectionLost)
            with pytest.raises(UsageError, match="restart"):
                await iterator.__anext__()
            await source.aclose()
            assert server.connections == 1  # no request went out

    run(main())


def test_restart_during_a_healthy_stream_reconnects_without_connection_lost() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100) as server:
            source = source_for(server, start_block=10)
            events: Events = []
            async for event in source.events():
                events.append(event)
                if len(events) == 3:
                    source.restart(11)  # e.g. the engine saw a protocol violation
                if isinstance(event, Listening) and event.next_block == 11:
                    break
            await source.aclose()
            assert not lost(events)
            assert [json.loads(r)["start_block"] for r in server.raw_requests] == [10, 11]
            # Nothing of the abandoned stream after the restart, even from the same read.
            assert events[3] == Listening(11)

    run(main())


# --- watchdog, keepalive -----------------------------------------------------------------------


def test_stall_watchdog_ignores_pings() -> None:
    async def main() -> None:
        plans = [Plan(after=2, then="stall")]
        async with FakeDfuse(head=100, ping_interval=0.05, plans=plans) as server:
            source = source_for(server, stall_seconds=0.5, read_timeout=0.3)
            events = await drive(source, count(Listening, 2))
            assert "no data for" in lost(events)[0]  # pings kept coming every 50 ms

    run(main())


def test_read_timeout_catches_a_dead_socket() -> None:
    async def main() -> None:
        plans = [Plan(after=2, then="stall")]
        async with FakeDfuse(head=100, ping_interval=60, plans=plans) as server:
            source = source_for(server, stall_seconds=30, read_timeout=0.3)
            events = await drive(source, count(Listening, 2))
            assert "not even a ping" in lost(events)[0]

    run(main())


@pytest.mark.slow
def test_suspended_time_does_not_count_as_silence() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, plans=[Plan(after=30, then="stall")]) as server:
            source = source_for(server, stall_seconds=0.3, read_timeout=None)
            seen = 0
            async for event in source.events():
                seen += 1
                if seen == 2:
                    await asyncio.sleep(0.5)  # a slow runner: longer than stall_seconds
                if isinstance(event, ConnectionLost):
                    break
            await source.aclose()
            assert seen > 20  # frames buffered during the pause were delivered, no false stall

    run(main())


def test_pong_keepalive_is_sent() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, plans=[Plan(after=1, then="stall")]) as server:
            source = source_for(server, keepalive_seconds=0.05, stall_seconds=5)
            task = asyncio.ensure_future(drive(source, lambda ev: False))
            await asyncio.wait_for(server.pong_event.wait(), 5)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await source.aclose()
            assert server.pongs[0] == '{"type":"pong"}'

    run(main())


# --- server errors, malformed frames, rows -------------------------------------------------------


def test_fatal_server_error_stops_with_a_clear_message() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100_000, history_limit=3600) as server:
            with pytest.raises(ServerError) as info:
                await drive(source_for(server, start_block=10), count(Listening, 1))
            error = info.value
            assert error.fatal and error.code == "auth_invalid_streaming_start_block_error"
            assert "go back as far as block #96400" in str(error)
            assert "start at a later block" in str(error)

    run(main())


@pytest.mark.parametrize(
    "code",
    ["unexpected_error", "data_unable_to_get_irreversible_block_id_error", "some_new_error"],
)
def test_transient_server_errors_reconnect(code: str) -> None:
    async def main() -> Events:
        async with FakeDfuse(head=100, plans=[Plan(after=1, then="error", error_code=code)]) as s:
            return await drive(source_for(s), count(Listening, 2))

    assert code in lost(run(main()))[0]


@pytest.mark.parametrize(
    "code",
    ["ws_message_data_validation_error", "request_validation_error", "ws_unknown_message_error"],
)
def test_fatal_server_error_codes(code: str) -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, plans=[Plan(then="error", error_code=code)]) as server:
            with pytest.raises(ServerError) as info:
                await drive(source_for(server), count(Listening, 2))
            assert info.value.fatal and info.value.code == code

    run(main())


def test_malformed_frame_reconnects_then_becomes_fatal_when_repeated() -> None:
    async def main() -> None:
        plans = [Plan(after=1, then="raw", raw="{not json")] * 3
        async with FakeDfuse(head=100, plans=plans) as server:
            source = source_for(server, max_repeated_faults=3)
            reasons: list[str] = []
            with pytest.raises(ProtocolError) as info:
                async for event in source.events():
                    if isinstance(event, ConnectionLost):
                        reasons.append(event.reason)
                        source.restart(10)
            await source.aclose()
            assert len(reasons) == 2 and all("not JSON" in r for r in reasons)
            assert info.value.fatal and "repeated 3 times at block 10" in str(info.value)

    run(main())


def test_frames_before_a_malformed_one_are_delivered_first_in_batches() -> None:
    # The bad frame arrives in the same socket read as the 30 before it: those are valid
    # stream data and reach the runner (moving the safe point) before ConnectionLost does.
    async def main() -> list[list]:
        plans = [Plan(after=30, then="raw", raw="{not json")]
        async with FakeDfuse(head=200, plans=plans) as server:
            source = source_for(server)
            batches: list[list] = []
            try:
                async for batch in source.batches():
                    batches.append(batch)
                    if isinstance(batch[0], ConnectionLost):
                        source.restart(10)
                    elif sum(isinstance(b[0], ConnectionLost) for b in batches) and any(
                        isinstance(e, Listening) for e in batch
                    ):
                        break
            finally:
                await source.aclose()
            return batches

    batches = run(main())
    lost_at = next(i for i, b in enumerate(batches) if isinstance(b[0], ConnectionLost))
    assert len(batches[lost_at]) == 1 and "not JSON" in batches[lost_at][0].reason
    before = [e for b in batches[:lost_at] for e in b]
    assert isinstance(before[0], Listening)
    assert len(before) == 31  # listening + the 30 data frames
    assert all(b for b in batches)  # no empty batch is ever handed over


def test_unknown_message_type_is_a_protocol_fault() -> None:
    frame = json.dumps({"type": "table_delta", "req_id": "karma-therealkarma-transfer", "data": {}})

    async def main() -> Events:
        async with FakeDfuse(head=100, plans=[Plan(after=1, then="raw", raw=frame)]) as server:
            return await drive(source_for(server), count(Listening, 2))

    assert "unknown message type 'table_delta'" in lost(run(main()))[0]


def test_notifications_other_streams_and_rejects() -> None:
    req = "karma-therealkarma-transfer"
    bad = trace_data(10, 0, quantity="1.0.0 KARMA")
    extra = [
        {"type": "action_trace", "req_id": req, "data": trace_data(10, 0, receiver="alice")},
        {"type": "action_trace", "req_id": "someone-else", "data": trace_data(10, 0)},
        {"type": "ping", "data": "2021-03-04T10:36:14.526391919Z"},
        {"type": "action_trace", "req_id": req, "data": bad},
    ]

    async def main() -> Events:
        async with FakeDfuse(head=100, plans=[Plan(extra=extra)]) as server:
            return await drive(source_for(server, start_block=12), count(ActionReceived, 3))

    events = run(main())
    note, reject, row = events[1:4]
    assert note.transfer is None and note.reject is None and note.block_num == 10
    assert reject.transfer is None and reject.reject.reason.startswith("act.data.quantity")
    assert json.loads(reject.reject.raw) == bad
    assert reject.reject.trx_id == bad["trx_id"] and reject.global_sequence is not None
    assert row.transfer is not None and row.block_num == 13
    assert row.transfer.contract == CONTRACT


# --- auth --------------------------------------------------------------------------------------


def test_auth_issue_and_token_on_the_url() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, auth=True) as server:
            source = source_for(server, api_key=API_KEY, auth_url=server.auth_url)
            await drive(source, count(Listening, 1))
            assert [json.loads(b) for b in server.issue_bodies] == [{"api_key": API_KEY}]
            assert server.tokens_seen == [server.issued[0]]

    run(main())


def test_auth_url_is_derived_from_the_endpoint() -> None:
    assert (
        DfuseSource("mainnet.eos.dfuse.io", api_key=API_KEY).tokens.auth_url
        == "https://auth.dfuse.io"
    )
    source = DfuseSource("eos.dfuse.eosnation.io", api_key=API_KEY)
    assert source.tokens.auth_url == "https://auth.eosnation.io"
    assert DfuseSource("ws://127.0.0.1:9/", api_key=API_KEY).tokens.auth_url == "http://127.0.0.1:9"
    assert (
        DfuseSource("ws://127.0.0.1:9/", api_key=API_KEY, auth_url="http://a:1").tokens.auth_url
        == "http://a:1"
    )
    assert DfuseSource("ws://127.0.0.1:9/").tokens is None


def test_jwt_looking_api_key_is_refused() -> None:
    with pytest.raises(UsageError, match="looks like a JWT") as info:
        DfuseSource("eos.dfuse.example.org", api_key="eyJhbGciOiJ9.eyJzdWIiOiJ4In0.c2ln")
    assert "eyJhbGciOiJ9" not in str(info.value)


def test_expired_token_at_reconnect_fetches_a_new_one_once() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, auth=True, plans=[Plan(after=2, then="drop")]) as server:
            source = source_for(server, api_key=API_KEY, auth_url=server.auth_url)

            def restart(events: Events) -> int:
                server.expire_tokens()  # the token expired while we were disconnected
                return 10

            events = await drive(source, count(Listening, 2), restart_at=restart)
            assert len(server.issued) == 2
            # 1st connect, 2nd refused with 401 (expired), 3rd with the new token
            assert server.tokens_seen == [server.issued[0], server.issued[0], server.issued[1]]
            assert len(lost(events)) == 1  # the 401 retry is internal: no extra ConnectionLost

    run(main())


def test_http_401_with_a_fresh_token_is_fatal() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, auth=True) as server:
            server.valid_tokens = _NeverValid()
            source = source_for(server, api_key=API_KEY, auth_url=server.auth_url)
            with pytest.raises(ConnectError) as info:
                await drive(source, count(Listening, 1))
            assert info.value.fatal and info.value.status == 401
            assert "auth_invalid_token_error" in str(info.value)
            assert "DFUSE_API_KEY" in str(info.value)
            # the token was issued for this very connect: renewing it again cannot help
            assert len(server.issued) == 1 and server.connections == 1

    run(main())


def test_auth_service_refusing_the_key_is_fatal() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, auth=True) as server:
            source = source_for(server, api_key="server_wrongwrongwrong", auth_url=server.auth_url)
            with pytest.raises(ConnectError) as info:
                await drive(source, count(Listening, 1))
            assert info.value.fatal and info.value.status == 401
            assert "refused the API key" in str(info.value)
            assert "wrongwrong" not in str(info.value)

    run(main())


@pytest.mark.slow
def test_token_is_renewed_before_expiry_and_used_at_the_next_connect() -> None:
    async def main() -> None:
        # 2 s lifetime: renewal at 95 % (1.9 s); the stream stays up meanwhile.
        plans = [Plan(after=2, then="stall")]
        async with FakeDfuse(head=100, auth=True, token_lifetime=2, plans=plans) as server:
            source = source_for(server, api_key=API_KEY, auth_url=server.auth_url, stall_seconds=30)
            events: Events = []

            async def consume() -> None:
                async for event in source.events():
                    events.append(event)
                    if isinstance(event, ConnectionLost):
                        source.restart(10)
                    if sum(isinstance(e, Listening) for e in events) == 2:
                        return

            task = asyncio.ensure_future(consume())
            await asyncio.wait_for(server.issue_event.wait(), 5)
            server.issue_event.clear()
            await asyncio.wait_for(server.issue_event.wait(), 5)  # the renewal
            assert len(server.issued) == 2 and server.connections == 1
            server.plans.append(Plan())
            # make the server drop the stalled socket: the reconnect must use the new token
            for ws in list(server._server.connections):
                ws.transport.abort()
            await asyncio.wait_for(task, 10)
            await source.aclose()
            assert server.tokens_seen[-1] == server.issued[1]

    run(main())


class _NeverValid(set):
    def __contains__(self, item: object) -> bool:
        return False


def test_secrets_never_in_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[str] = []

    async def main() -> FakeDfuse:
        async with FakeDfuse(head=100, auth=True, plans=[Plan(after=1, then="drop")]) as server:
            source = source_for(server, api_key=API_KEY, auth_url=server.auth_url)

            def restart(events: Events) -> int:
                server.valid_tokens = _NeverValid()  # 401 from now on
                return 10

            with pytest.raises(ConnectError) as info:
                await drive(source, count(Listening, 2), restart_at=restart)
            errors.append(str(info.value))
            errors.append(repr(info.value))
            errors.append(repr(source.sources[0].tokens.token))
            return server

    with caplog.at_level(logging.DEBUG):
        server = run(main())
    # everything the client side logged (the test server's own websockets.server log is not
    # the library's: it prints the request line it received)
    client = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server")
    )
    text = client + "\n".join(errors)
    assert server.issued and "token=***" in client  # websockets' DEBUG request line, redacted
    assert "websockets.client" in {r.name for r in caplog.records}
    for secret in [API_KEY, *server.issued]:
        assert secret not in text
        for part in secret.split("."):
            assert part not in text


def test_unknown_error_code_repeated_becomes_fatal() -> None:
    async def main() -> None:
        plans = [Plan(after=1, then="error", error_code="brand_new_error")] * 2
        async with FakeDfuse(head=100, plans=plans) as server:
            source = source_for(server, max_repeated_faults=2)
            with pytest.raises(ServerError) as info:
                await drive(source, lambda ev: False, restart_at=lambda ev: 10)
            assert info.value.fatal and info.value.code == "brand_new_error"
            assert "repeated 2 times at block 10" in str(info.value)

    run(main())


def test_restart_none_requests_the_configured_start_again() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, plans=[Plan(after=1, then="drop")]) as server:
            source = source_for(server, start_block=-20)
            events = await drive(source, count(Listening, 2), restart_at=lambda ev: None)
            starts = [json.loads(r)["start_block"] for r in server.raw_requests]
            assert starts == [-20, -20]  # Restart(None): no start point recorded yet
            assert [e for e in events if isinstance(e, Listening)] == [Listening(80)] * 2

    run(main())


def test_http_401_without_an_api_key_is_fatal() -> None:
    async def main() -> None:
        async with FakeDfuse(head=100, auth=True) as server:
            with pytest.raises(ConnectError) as info:
                await drive(source_for(server), count(Listening, 1))
            assert info.value.fatal and info.value.status == 401
            assert "requires authentication" in str(info.value)
            assert server.tokens_seen == [None]

    run(main())
