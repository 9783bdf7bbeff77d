"""FrameDecoder: fast (msgspec) and reference (json + model) paths agree; envelope vs reject."""

from __future__ import annotations

import copy
import json

import pytest
from dfuse_fake import CONTRACT, block_id, trace_data
from hypothesis import given
from hypothesis import strategies as st

from karma_analytics import model
from karma_analytics.engine import ActionReceived, Listening, Progress
from karma_analytics.exceptions import ProtocolError, ServerError
from karma_analytics.sources.dfuse import FrameDecoder
from karma_analytics.sources.dfuse import decode as dfuse

REQ = "karma-therealkarma-transfer"


def frame(kind: str, data: object, req_id: str | None = REQ) -> bytes:
    out: dict = {"type": kind}
    if req_id is not None:
        out["req_id"] = req_id
    out["data"] = data
    return json.dumps(out, separators=(",", ":")).encode()


def both(raw: bytes | str) -> object:
    """Decode with both paths; they must agree (also on the exception type and text)."""
    fast = FrameDecoder(REQ, CONTRACT, "transfer", fast=True)
    ref = FrameDecoder(REQ, CONTRACT, "transfer", fast=False)
    try:
        expected = ref.decode(raw)
    except (ProtocolError, ServerError) as exc:
        with pytest.raises(type(exc)) as info:
            fast.decode(raw)
        assert str(info.value) == str(exc)
        raise
    assert fast.decode(raw) == expected
    return expected


def mutated(path: tuple, value: object, *, delete: bool = False) -> bytes:
    data = copy.deepcopy(trace_data(12, 0))
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return frame("action_trace", data)


def test_fast_path_is_used_and_matches_the_model() -> None:
    assert dfuse._FAST_DECODER is not None
    data = trace_data(12, 1)
    event = both(frame("action_trace", data))
    assert isinstance(event, ActionReceived)
    assert event.transfer == model.transfer_from_action_trace(data)
    assert event.reject is None
    assert (event.block_num, event.block_id, event.block_time, event.global_sequence) == (
        12,
        block_id(12),
        event.transfer.block_time,
        event.transfer.global_sequence,
    )
    # the fast path really answered (the reference path is not hiding a fast-path failure)
    fast = FrameDecoder(REQ, CONTRACT, "transfer")
    assert fast._fast(dfuse._FAST_DECODER.decode(frame("action_trace", data))) == event


def test_progress_listening_ping_other_streams() -> None:
    assert both(frame("progress", {"block_num": 20, "block_id": block_id(20)})) == Progress(
        20, block_id(20)
    )
    assert both(frame("listening", {"next_block": 7})) == Listening(7)
    assert both(b'{"type":"ping","data":"2021-03-04T10:36:14.526391919Z"}') is None
    assert both(frame("action_trace", trace_data(12, 0), req_id="other")) is None
    assert both(frame("progress", {"block_num": 20, "block_id": block_id(20)}, req_id=None)) is None
    assert both(frame("unlistened", {"success": True})) is None


def test_notification_and_other_action_are_not_rows() -> None:
    note = both(frame("action_trace", trace_data(12, 0, receiver="alice")))
    assert isinstance(note, ActionReceived)
    assert note.transfer is None and note.reject is None
    assert note.block_num == 12 and note.global_sequence is not None
    other = copy.deepcopy(trace_data(12, 0))
    other["trace"]["act"]["name"] = "issue"
    event = both(frame("action_trace", other))
    assert event.transfer is None and event.reject is None


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("trace", "act", "data", "quantity"), "1.0.0 KARMA", "act.data.quantity"),
        (("trace", "act", "data", "quantity"), "-1.0000 KARMA", "negative"),
        (("trace", "act", "data", "from"), "Alice", "act.data.from"),
        (("trace", "act", "data", "memo"), 5, "act.data.memo"),
        (("trace", "receipt", "global_sequence"), "12x", "global_sequence"),
        (("trx_id",), "xyz", "trx_id"),
        (("block_time",), "yesterday", "block_time"),
    ],
)
def test_bad_trace_becomes_a_reject(path: tuple, value: object, reason: str) -> None:
    event = both(mutated(path, value))
    assert isinstance(event, ActionReceived)
    assert event.transfer is None and event.reject is not None
    assert reason in event.reject.reason
    assert event.reject.block_num == 12 and event.reject.block_id == block_id(12)
    assert json.loads(event.reject.raw)["block_num"] == 12  # the data object, kept whole


def test_missing_act_data_falls_back_to_hex_data_like_the_model() -> None:
    data = copy.deepcopy(trace_data(12, 0))
    del data["trace"]["act"]["data"]
    data["trace"]["act"]["hex_data"] = "zz"
    event = both(frame("action_trace", data))
    assert event.reject is not None and "hex" in event.reject.reason


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1,2]",
        b'{"data":{}}',
        frame("head_info", {}),
        frame("action_trace", {"block_id": block_id(1)}),
        mutated(("block_id",), "nothex"),
        mutated(("block_num",), -1),
        frame("listening", {"next_block": "7"}),
        frame("progress", {"block_num": 20}),
    ],
)
def test_malformed_frames_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        both(raw)


def test_error_frames() -> None:
    err = {"code": "auth_invalid_streaming_start_block_error", "trace_id": "t", "message": "old"}
    with pytest.raises(ServerError) as info:
        both(frame("error", err))
    assert info.value.fatal and info.value.code == err["code"]
    with pytest.raises(ServerError) as info:
        both(frame("error", {"code": "unexpected_error", "trace_id": "t", "message": "boom"}))
    assert not info.value.fatal
    # errors of other requests, or about frames without a request id, are not ours
    assert both(frame("error", err, req_id="other")) is None
    assert both(frame("error", err, req_id=None)) is None


@given(st.text(max_size=30))
def test_fast_asset_agrees_with_the_model(text: str) -> None:
    fast = model.parse_plain_asset(text)
    if fast is not None:
        assert model.parse_asset(text) == fast


@given(
    st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{0,20})? [A-Za-z]{0,8}", fullmatch=True)
    | st.sampled_from(["1.0000 KARMA", "0 K", "1. KARMA", ".5 KARMA", "1.0000  KARMA", "١.0 KARMA"])
)
@pytest.mark.slow
def test_fast_asset_agrees_on_asset_like_text(text: str) -> None:
    fast = model.parse_plain_asset(text)
    try:
        expected = tuple(model.parse_asset(text))
    except Exception:
        assert fast is None
    else:
        assert fast is None or fast == expected
    # The fast path takes the whole plain form (not just some of it), or it would never be used.
    plain = model.PLAIN_ASSET.fullmatch(text)
    if plain is not None and fast is None:
        assert int(plain[1] + (plain[2] or "")) > model.ASSET_MAX_AMOUNT


@given(
    quantity=st.from_regex(r"[0-9]{1,6}\.[0-9]{4} KARMA", fullmatch=True),
    to=st.from_regex(r"[a-z1-5.]{1,13}", fullmatch=True),
    gs=st.integers(0, 2**64 + 5),
    as_string=st.booleans(),
)
def test_fast_and_reference_agree_on_generated_traces(
    quantity: str, to: str, gs: int, as_string: bool
) -> None:
    data = copy.deepcopy(trace_data(33, 1, quantity=quantity))
    data["trace"]["act"]["data"]["to"] = to
    data["trace"]["receipt"]["global_sequence"] = str(gs) if as_string else gs
    both(frame("action_trace", data))


@given(
    st.from_regex(
        r"20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{0,10})?Z?",
        fullmatch=True,
    )
    | st.text(max_size=25)
)
def test_fast_time_agrees_with_the_model(text: str) -> None:
    fast = dfuse._fast_time(text)
    if fast is not None:
        assert model.parse_block_time(text) == fast
