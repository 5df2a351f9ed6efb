"""Per-caller limits so that one client cannot starve the others: a request rate and a concurrency cap.

A caller is its bearer token (the fingerprint `auth.TokenTable` hands the SDK, never the secret), or one
shared key for unauthenticated callers (stdio, loopback HTTP without tokens). Over HTTP, `RateLimitMiddleware`
answers `429 Too Many Requests` with `Retry-After` (RFC 6585 section 4); under stdio, `ThrottleMiddleware`
answers a tool call over the rate with a tool error. `ThrottleMiddleware` also caps how many tool calls and
resource reads of one caller run at once, on every transport.

The default rate, 100 requests per minute, is the Harmonia API's documented limit.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, TextContent
from starlette.types import ASGIApp, Receive, Scope, Send

WINDOW_SECONDS = 60.0
ANONYMOUS = "anonymous"
# Methods that do a caller's work (the rest are handshakes, listings and notifications, cheap and bounded).
_WORK_METHODS = frozenset({"tools/call", "resources/read"})


class RateLimiter:
    """At most `per_minute` events per key in any sliding 60-second window (`per_minute` 0: no limit).

    Memory is bounded by the keys seen in the last minute: a key's record is dropped once it is empty.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def acquire(self, key: str) -> float | None:
        """Count one event for `key`; None when allowed, else the seconds until one would be allowed."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        for other in [other for other, events in self._events.items() if events[-1] <= now - WINDOW_SECONDS]:
            del self._events[other]  # every event of that key is outside the window
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - WINDOW_SECONDS:
            events.popleft()
        if len(events) >= self.per_minute:
            return max(0.001, events[0] + WINDOW_SECONDS - now)
        events.append(now)
        return None


class ConcurrencyCap:
    """At most `limit` operations in flight per key (`limit` 0: no cap)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[str, int] = {}

    def enter(self, key: str) -> bool:
        """Start one operation for `key`; False (and nothing counted) when `key` is at its cap."""
        if self.limit <= 0:
            return True
        running = self._running.get(key, 0)
        if running >= self.limit:
            return False
        self._running[key] = running + 1
        return True

    def exit(self, key: str) -> None:
        """End one operation that `enter(key)` admitted."""
        if self.limit <= 0:
            return
        remaining = self._running.get(key, 1) - 1
        if remaining > 0:
            self._running[key] = remaining
        else:
            self._running.pop(key, None)


def caller_key() -> str:
    """The current request's caller: its token fingerprint, or `ANONYMOUS` without a token."""
    token = get_access_token()
    return token.token if token is not None else ANONYMOUS


def _refusal(ctx: ServerRequestContext[Any, Any], message: str) -> HandlerResult:
    if ctx.method == "tools/call":
        return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
    from mcp import MCPError

    raise MCPError(code=-32000, message=message)


class ThrottleMiddleware:
    """MCP middleware: caps each caller's tool calls and resource reads in flight (every transport) and,
    for requests that did not come over HTTP (stdio, in-memory clients), their rate.

    A refused tool call is a tool error whose text says which limit and what to do; a refused resource read
    is a JSON-RPC error with the same text.
    """

    def __init__(self, *, per_minute: int, max_concurrent: int) -> None:
        self.rate = RateLimiter(per_minute)
        self.cap = ConcurrencyCap(max_concurrent)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method not in _WORK_METHODS:
            return await call_next(ctx)
        key = caller_key()
        if ctx.request is None:  # over HTTP, RateLimitMiddleware already counted this request
            wait = self.rate.acquire(key)
            if wait is not None:
                return _refusal(
                    ctx,
                    f"rate limit: more than {self.rate.per_minute} requests in the last minute "
                    f"(HARMONIA_RATE_LIMIT_PER_MINUTE); retry in {math.ceil(wait)} s",
                )
        if not self.cap.enter(key):
            return _refusal(
                ctx,
                f"too many requests at once: {self.cap.limit} of this caller's requests are still running "
                "(HARMONIA_MAX_CONCURRENT_REQUESTS); wait for one to finish, then retry",
            )
        try:
            return await call_next(ctx)
        finally:
            self.cap.exit(key)


class RateLimitMiddleware:
    """ASGI middleware (inside the SDK's authentication): `429` with `Retry-After` for a caller over its rate.

    Counts every HTTP request but `/healthz`; the caller is the authenticated token's fingerprint, else
    `ANONYMOUS` (one budget for every unauthenticated client of the server).
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        user = scope.get("user")
        key = user.access_token.token if isinstance(user, AuthenticatedUser) else ANONYMOUS
        wait = self.limiter.acquire(key)
        if wait is None:
            await self.app(scope, receive, send)
            return
        seconds = math.ceil(wait)
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": -32000,
                    "message": f"rate limit: more than {self.limiter.per_minute} requests in the last minute "
                    f"(HARMONIA_RATE_LIMIT_PER_MINUTE); retry in {seconds} s",
                },
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(seconds).encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
