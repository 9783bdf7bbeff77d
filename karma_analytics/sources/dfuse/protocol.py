"""dfuse WebSocket Stream API: the protocol's pure parts (endpoint form, request, error codes).

dfuse-protocol.md is the reference; section numbers below are its own.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from karma_analytics.exceptions import ServerError, UsageError, redact
from karma_analytics.sources.websocket import LOOPBACK_HOSTS

__all__ = [
    "FATAL_CODES",
    "RETIRED_NETWORKS",
    "STREAM_PATH",
    "TRANSIENT_CODES",
    "chain_api_url",
    "request_message",
    "resolve_endpoint",
    "server_error_from",
]

STREAM_PATH = "/v1/stream"
#: Names of the hosted dfuse services (dfuse-protocol.md §1.1), all shut down in 2024: asking
#: for one gets a message that says so and what to use instead.
RETIRED_NETWORKS = frozenset({"mainnet", "kylin", "eosnation", "community", "eos"})
RETIRED_MESSAGE = (
    "the hosted dfuse service shut down in 2024 (its endpoints no longer exist). For a public "
    "chain use Hyperion: --source hyperion --network eos (or wax, telos, jungle4); with your "
    "own node use SHiP: --source ship --endpoint ws://NODE:8080; a self-hosted dfuse-protocol "
    "server still works with --source dfuse --endpoint ws[s]://HOST/v1/stream"
)

#: dfuse error codes that retrying the same request cannot fix (§3.4), with what to do.
FATAL_CODES: dict[str, str] = {
    "auth_invalid_token_error": "the token was refused; check DFUSE_API_KEY and the auth URL",
    "auth_invalid_streaming_start_block_error": (
        "the API key may not go back that far; start at a later block (a fresh dataset with "
        "--start-block) or use a key with more history"
    ),
    "ws_message_data_validation_error": "the server refused the request; check contract/action",
    "ws_invalid_json_message_data_error": "the server could not decode the request fields",
    "ws_invalid_json_message_error": "the server could not parse the request as JSON",
    "request_validation_error": "the server refused the request (e.g. start block 0 resolved)",
    "ws_unknown_message_error": "this server does not know get_action_traces",
    "ws_unavailable_message_error": "get_action_traces is disabled on this server",
    "ws_binary_message_unsupported_error": "the server refused a binary frame",
}
#: dfuse error codes after which a new connection may succeed (§3.4, §5.5).
TRANSIENT_CODES = frozenset(
    {
        "unexpected_error",
        "data_unable_to_get_irreversible_block_id_error",
        "ws_stream_already_exist_error",
        "ws_too_much_stream_error",
        "ws_stream_not_found_error",
        "app_head_info_not_ready_error",
    }
)


# --- endpoint --------------------------------------------------------------------------------


def resolve_endpoint(endpoint: str) -> str:
    """The full stream URL for an endpoint as given (dfuse-protocol.md §1.1).

    Accepted forms: ``ws[s]://host[:port][/path]`` (``/v1/stream`` is appended when there is
    no path) or a bare ``host[:port]`` (``wss://``, or ``ws://`` for a loopback host).

    Raises:
        UsageError: nothing given, a retired hosted-dfuse name, another scheme, or
            credentials in the URL.
    """
    given = (endpoint or "").strip()
    if not given:
        raise UsageError("no dfuse endpoint: pass an endpoint URL (ws[s]://host/v1/stream)")
    if given.lower() in RETIRED_NETWORKS:
        raise UsageError(f"{given!r}: {RETIRED_MESSAGE}")
    if "://" not in given:
        host = urllib.parse.urlsplit("//" + given).hostname or ""
        scheme = "ws" if host in LOOPBACK_HOSTS else "wss"
        given = f"{scheme}://{given}"
    parts = urllib.parse.urlsplit(given)
    if parts.scheme not in ("ws", "wss"):
        raise UsageError(
            f"the dfuse endpoint must be a ws:// or wss:// URL, got {parts.scheme}:// "
            "(an http(s) URL is a Hyperion endpoint: --source hyperion)"
        )
    if not parts.hostname:
        raise UsageError(f"the dfuse endpoint has no host: {redact(given)!r}")
    query = urllib.parse.parse_qs(parts.query)
    if "token" in query or parts.username or parts.password:
        raise UsageError(
            "do not put credentials in the endpoint URL; pass the API key (--api-key or "
            "DFUSE_API_KEY): the source fetches and renews the token itself"
        )
    path = parts.path if parts.path not in ("", "/") else STREAM_PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def chain_api_url(stream_url: str, route: str = "/v1/chain/get_info") -> str:
    """The native chain API beside a stream endpoint: dfuse hosts served it on the same host
    (``wss`` -> ``https``, ``ws`` -> ``http``)."""
    parts = urllib.parse.urlsplit(stream_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urllib.parse.urlunsplit((scheme, parts.netloc, route, "", ""))


def request_message(
    req_id: str,
    start_block: int,
    *,
    contract: str,
    action: str,
    irreversible_only: bool,
    with_progress: int,
    stop_block: int | None = None,
) -> dict[str, Any]:
    """The ``get_action_traces`` message for ``start_block`` (§2.1, §2.2): the contract's own
    executions of ``action`` (``accounts`` and ``receivers`` both the contract)."""
    message: dict[str, Any] = {
        "type": "get_action_traces",
        "req_id": req_id,
        "listen": True,
        "start_block": start_block,
        "irreversible_only": irreversible_only,
    }
    if with_progress:
        message["with_progress"] = with_progress
    message["data"] = {"accounts": contract, "receivers": contract, "action_names": action}
    return message


# --- server errors ---------------------------------------------------------------------------


def server_error_from(data: object) -> ServerError:
    """Build the :class:`ServerError` for the ``data`` of an ``error`` message (§3.4).

    Known fatal codes get ``fatal=True`` and a hint; known transient codes and unknown codes
    are transient (the source reconnects).
    """
    if not isinstance(data, dict):
        data = {}
    code = data.get("code")
    code = code if isinstance(code, str) and code else "unknown_error"
    message = data.get("message")
    message = message if isinstance(message, str) else ""
    details = data.get("details")
    trace_id = data.get("trace_id")
    fatal = code in FATAL_CODES
    unknown = not fatal and code not in TRANSIENT_CODES
    if fatal:
        hint = FATAL_CODES[code]
    elif code in TRANSIENT_CODES:
        hint = "reconnecting"
    else:
        hint = "unknown error code; reconnecting"
    if isinstance(details, dict) and details.get("reason"):
        message = f"{message} ({details['reason']})"
    return ServerError(
        code,
        message,
        details=details if isinstance(details, dict) else None,
        trace_id=trace_id if isinstance(trace_id, str) else "",
        fatal=fatal,
        hint=hint,
        persistent=unknown,
    )
