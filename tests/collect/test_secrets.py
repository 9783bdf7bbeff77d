"""The API key and the tokens issued for it appear nowhere: logs, output, files, errors."""

from __future__ import annotations

import asyncio

import pytest
from collect_helpers import RANGE_LAST, child_env, committed_rows, range_args, run_cli

from karma_analytics.collect import CollectConfig, Collector
from karma_analytics.exceptions import ConnectError

KEY = "server_5ecr3t0123456789abcdef0123456789"


@pytest.fixture
def secured(net_factory):  # type: ignore[no-untyped-def]
    """A devnet requiring KEY, with short-lived tokens and drops (several tokens issued)."""
    server = net_factory(api_key=KEY, token_ttl=1.5, drop_every=150)
    issued: list[str] = []
    original = server.server.issue_token

    def recording(ttl=None):  # type: ignore[no-untyped-def]
        token, expires_at = original(ttl)
        issued.append(token)
        return token, expires_at

    server.server.issue_token = recording  # the devnet's auth endpoint calls it per request
    server.issued = issued
    return server


def _assert_clean(text: str | bytes, issued: list[str], where: str) -> None:
    blob = text if isinstance(text, bytes) else text.encode()
    assert KEY.encode() not in blob, f"API key in {where}"
    for token in issued:
        assert token.encode() not in blob, f"token in {where}"
        # also no recognisable piece of it (the signature alone would do harm)
        assert token.split(".")[2].encode() not in blob, f"token signature in {where}"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "env"])
def test_key_and_tokens_never_appear(secured, tmp_path, how) -> None:
    out = tmp_path / "transfers"
    args = [
        *range_args(secured.url, out, 1, RANGE_LAST),
        "--auth-url",
        secured.auth_url,
        "--log-level",
        "DEBUG",
        "--flush-rows",
        "40",
        "--flush-seconds",
        "0.2",
    ]
    env = child_env()
    if how == "flag":
        args += ["--api-key", KEY]
    else:
        env["DFUSE_API_KEY"] = KEY
    done = run_cli(*args, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert committed_rows(out) == list(secured.chain.truth(1, RANGE_LAST))
    assert len(secured.issued) >= 2  # tokens were renewed: more secrets to leak
    assert "DEBUG" in done.stderr  # the most verbose logging was on
    _assert_clean(done.stdout, secured.issued, "stdout")
    _assert_clean(done.stderr, secured.issued, "stderr (logs)")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "_cursor.json" for p in files)
    for path in files:
        _assert_clean(path.read_bytes(), secured.issued, str(path))


@pytest.mark.slow
def test_errors_and_status_never_carry_the_key(secured, tmp_path, caplog) -> None:
    """In-process: a wrong key's error text, the status, reprs and log records are clean."""
    wrong = "server_wr0ng0123456789abcdef01234567"
    config = CollectConfig(
        endpoint=secured.url,
        auth_url=secured.auth_url,
        api_key=wrong,
        out=tmp_path / "transfers",
        start_block=1,
        stop_block=RANGE_LAST,
    )
    collector = Collector(config)
    caplog.set_level("DEBUG")
    with pytest.raises(ConnectError) as caught:
        asyncio.run(collector.run())
    texts = [
        str(caught.value),
        repr(caught.value),
        repr(config),
        repr(collector.status),
        str(collector.status.error),
        caplog.text,
    ]  # (no token was ever issued here)
    for text in texts:
        assert wrong not in text and KEY not in text
    assert "refused the API key" in str(caught.value)

    # the right key, in-process, with every log record captured
    caplog.clear()
    good = CollectConfig(
        endpoint=secured.url,
        auth_url=secured.auth_url,
        api_key=KEY,
        out=tmp_path / "transfers",
        start_block=1,
        stop_block=RANGE_LAST,
        flush_rows=40,
        flush_seconds=0.2,
    )
    summary = asyncio.run(Collector(good).run())
    assert summary.reason == "complete"
    # (the devnet server runs in this process too; its own request log is not the collector's)
    ours = [
        r
        for r in caplog.records
        if not r.name.startswith(("websockets.server", "karma_analytics.devnet"))
    ]
    assert ours
    _assert_clean("\n".join(r.getMessage() for r in ours), secured.issued, "log records")
    _assert_clean(repr(good) + str(summary), secured.issued, "repr/summary")
