"""dfuse API key -> JWT exchange and the token's refresh schedule (dfuse-protocol.md §1.2).

The API key is exchanged at ``POST <auth_url>/v1/auth/issue`` with the JSON body
``{"api_key": ...}``; the answer is ``{"token": <JWT>, "expires_at": <unix seconds>}``. The token
is only checked at the WebSocket handshake, so a refreshed token matters for the *next*
connection only (§1.2 "Validation timing"). Like client-js, :class:`TokenManager` treats a token
as due for renewal once 95 % of its lifetime has passed.

The HTTP call uses the standard library (``urllib.request``) in a worker thread: one POST a day
does not justify an HTTP client dependency.

Neither the key nor a token is ever logged or put into an exception message: both are
registered with :func:`karma_analytics.exceptions.register_secret` as soon as they are known.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from karma_analytics.exceptions import ConnectError, UsageError, redact, register_secret

__all__ = [
    "DEFAULT_AUTH_URL",
    "EOSNATION_AUTH_URL",
    "REFRESH_FRACTION",
    "Token",
    "TokenManager",
    "derive_auth_url",
    "issue_token",
    "looks_like_jwt",
]

logger = logging.getLogger(__name__)

DEFAULT_AUTH_URL = "https://auth.dfuse.io"
EOSNATION_AUTH_URL = "https://auth.eosnation.io"
# client-js schedules the refresh at (expires_at - now) * 0.95 (§1.2, refresh-scheduler.ts).
REFRESH_FRACTION = 0.95
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def looks_like_jwt(value: str) -> bool:
    """Whether ``value`` has the three dot-separated parts of a JWT (client-js refuses those)."""
    parts = value.split(".")
    return len(parts) == 3 and all(parts)


def derive_auth_url(stream_url: str) -> str:
    """The auth service that issues tokens for a stream endpoint (§1.2).

    ``https://auth.eosnation.io`` for EOS Nation hosts, ``http(s)://host:port`` of the stream
    itself for a plain ``ws://`` endpoint (a local dfuse-for-EOSIO or the devnet serves
    ``/v1/auth/issue`` next to ``/v1/stream``), else ``https://auth.dfuse.io``.
    """
    parts = urllib.parse.urlsplit(stream_url)
    host = (parts.hostname or "").lower()
    if host.endswith("eosnation.io"):
        return EOSNATION_AUTH_URL
    if parts.scheme == "ws" or host in _LOOPBACK_HOSTS:
        scheme = "https" if parts.scheme == "wss" else "http"
        return f"{scheme}://{parts.netloc}"
    return DEFAULT_AUTH_URL


@dataclass(frozen=True)
class Token:
    """An issued JWT.

    Attributes:
        value: the JWT (never log it).
        expires_at: expiry, Unix time in seconds (as sent by the auth service).
        issued_at: local wall-clock time (Unix seconds) when it was received.
    """

    value: str
    expires_at: float
    issued_at: float

    @property
    def refresh_at(self) -> float:
        """Unix time at which the token should be replaced (95 % of its lifetime)."""
        return self.issued_at + max(0.0, self.expires_at - self.issued_at) * REFRESH_FRACTION

    def __repr__(self) -> str:  # keep the JWT out of reprs, tracebacks and debuggers' output
        return f"Token(value='***', expires_at={self.expires_at}, issued_at={self.issued_at})"


def issue_token(auth_url: str, api_key: str, *, timeout: float = 10.0) -> tuple[str, float]:
    """Exchange an API key for a JWT (blocking; call it from a thread).

    Args:
        auth_url: base URL of the auth service, e.g. ``https://auth.dfuse.io``.
        api_key: the dfuse API key.
        timeout: socket timeout in seconds.

    Returns:
        ``(token, expires_at)`` with ``expires_at`` in Unix seconds.

    Raises:
        ConnectError: ``fatal=True`` when the service refuses the key (HTTP 400/401/403) or
            answers something that is not a token; ``fatal=False`` for network errors,
            timeouts, HTTP 429 and 5xx.
    """
    url = auth_url.rstrip("/") + "/v1/auth/issue"
    body = json.dumps({"api_key": api_key}).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        detail = _error_detail(exc)
        fatal = exc.code in (400, 401, 403, 404)
        what = "refused the API key" if exc.code in (401, 403) else "failed"
        hint = (
            "check DFUSE_API_KEY (or --api-key) and the auth URL"
            if fatal
            else "will retry with backoff"
        )
        raise ConnectError(
            f"auth service {auth_url} {what}: HTTP {exc.code}{detail}; {hint}",
            status=exc.code,
            fatal=fatal,
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectError(
            f"cannot reach auth service {auth_url}: {reason}; will retry with backoff",
            fatal=False,
        ) from None
    try:
        answer = json.loads(payload)
        token = answer["token"]
        expires_at = answer["expires_at"]
        if not isinstance(token, str) or not token:
            raise TypeError("token")
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            raise TypeError("expires_at")
    except (ValueError, KeyError, TypeError):
        raise ConnectError(
            f"auth service {auth_url} answered without a token "
            '(expected {"token": ..., "expires_at": ...}); check the auth URL',
            fatal=True,
        ) from None
    register_secret(token)
    return token, float(expires_at)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return ""
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return f" ({body['code']}: {body.get('message', '')})"
    return ""


class TokenManager:
    """Caches the JWT for an API key and renews it before it expires.

    Args:
        api_key: the dfuse API key; a JWT-looking value is refused (pass the key, not a token).
        auth_url: base URL of the auth service.
        timeout: HTTP timeout in seconds for one issue request.
        clock: wall clock in Unix seconds (injectable for tests; ``expires_at`` is wall time).
        issue: the blocking issue function (injectable); runs in a worker thread.
    """

    def __init__(
        self,
        api_key: str,
        auth_url: str,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        issue: Callable[..., tuple[str, float]] = issue_token,
    ) -> None:
        if looks_like_jwt(api_key):
            raise UsageError(
                "the API key looks like a JWT token (three dot-separated parts); pass the dfuse "
                "API key itself (e.g. server_...), the token is fetched from it"
            )
        register_secret(api_key)
        self._api_key = api_key
        self.auth_url = auth_url
        self._timeout = timeout
        self._clock = clock
        self._issue = issue
        self._token: Token | None = None
        self._inflight: asyncio.Future[Token] | None = None
        self.issued = 0
        """How many tokens were fetched so far (for status displays and tests)."""

    @property
    def token(self) -> Token | None:
        """The cached token, if any."""
        return self._token

    def seconds_until_refresh(self) -> float | None:
        """Seconds until the cached token is due for renewal (``None`` without a token)."""
        if self._token is None:
            return None
        return max(0.0, self._token.refresh_at - self._clock())

    def invalidate(self) -> None:
        """Forget the cached token (e.g. after the server refused it with HTTP 401)."""
        self._token = None

    async def get(self, *, force: bool = False) -> str:
        """Return a token that is not yet due for renewal, fetching one if needed.

        If a renewal fails transiently while the cached token has not yet expired, the cached
        token is returned (it is still accepted at the handshake).

        Raises:
            ConnectError: as :func:`issue_token`.
        """
        now = self._clock()
        current = self._token
        if not force and current is not None and now < current.refresh_at:
            return current.value
        try:
            return (await self._fetch()).value
        except ConnectError as exc:
            if not exc.fatal and not force and current is not None and now < current.expires_at:
                logger.warning("token renewal failed, using the current token: %s", exc)
                return current.value
            raise

    async def _fetch(self) -> Token:
        # Concurrent callers (reconnect + refresh timer) share one request, like client-js.
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch_once())
        inflight = self._inflight
        try:
            return await asyncio.shield(inflight)
        finally:
            if inflight.done():
                self._inflight = None

    async def _fetch_once(self) -> Token:
        logger.debug("requesting a token from %s", self.auth_url)
        value, expires_at = await asyncio.to_thread(
            self._issue, self.auth_url, self._api_key, timeout=self._timeout
        )
        register_secret(value)
        token = Token(value=value, expires_at=expires_at, issued_at=self._clock())
        self._token = token
        self.issued += 1
        logger.info(
            "got a token from %s valid for %.0f s",
            self.auth_url,
            token.expires_at - token.issued_at,
        )
        return token

    async def refresh_when_due(self) -> None:
        """Sleep until the cached token is due, then renew it; repeat forever.

        Meant to run as a background task while a stream is open, so that a reconnect finds a
        fresh token without waiting for the auth service. Failures are logged and left to the
        next :meth:`get`.
        """
        while True:
            delay = self.seconds_until_refresh()
            if delay is None:
                return
            # A floor keeps a token with a zero or negative lifetime from a fetch loop.
            await asyncio.sleep(max(delay, 1.0))
            try:
                await self._fetch()
            except ConnectError as exc:
                logger.warning(
                    "token renewal failed (will retry at reconnect): %s", redact(str(exc))
                )
                return
