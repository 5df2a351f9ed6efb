"""Per-caller limits so that one client cannot starve the others: a request rate and a concurrency cap.

A caller is its bearer token (the fingerprint `auth.TokenTable` hands the SDK, never the secret), or one
shared key for unauthenticated callers (stdio, loopback HTTP without tokens). Over HTTP, `RateLimitMiddleware`
answers `429 Too Many Requests` with `Retry-After` (RFC 6585 section 4); under stdio, `ThrottleMiddleware`
answers a tool call over the rate with a tool error. `ThrottleMiddleware` also caps how many tool calls and
resource reads of one caller run at once, on every transport, and charges their time to the caller's
`ReadBudget`, so that a caller sending costly reads waits in a shared lane instead of taking every CPU;
`SessionCapMiddleware` and `SseCapMiddleware` cap how many streamable HTTP sessions or SSE connections one
caller holds open.

The default rate, 100 requests per minute, is the Harmonia API's documented limit.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, TextContent
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harmonia_mcp.fairqueue import FairQueue
from harmonia_mcp.store import READ_BACKGROUND, READ_OWNER

WINDOW_SECONDS = 60.0
ANONYMOUS = "anonymous"
# The share of time the over-budget lane may be busy (`ReadBudget`): on 2 cores, over-budget callers together
# hold at most half of one (measured with benchmarks/concurrency.py --hostile, docs/benchmarks.md).
LANE_DUTY = 0.5
# A caller may spend per_minute / BURST_SHARE seconds of read work at once (1 s of the default 6 a minute: some
# 30-100 ordinary searches, two of the costliest the query bounds allow; docs/benchmarks.md, issue 12 fourth round).
BURST_SHARE = 6
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


@dataclass
class _Slots:
    semaphore: anyio.Semaphore
    users: int = 0  # running plus waiting


class ConcurrencyCap:
    """At most `limit` operations running per key, up to `max_waiting` more queued in arrival order, and any
    beyond those refused (`limit` 0: no cap).

    Why queue: hosts may send a few tool calls at once, and those should simply take turns; a flood from one
    caller is refused instead of piling up.
    """

    def __init__(self, limit: int, max_waiting: int = 8) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self._slots: dict[str, _Slots] = {}

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[bool]:
        """Run one operation for `key`: yields True once it may run, or False at once when the queue is full."""
        if self.limit <= 0:
            yield True
            return
        slots = self._slots.setdefault(key, _Slots(anyio.Semaphore(self.limit)))
        if slots.users >= self.limit + self.max_waiting:
            yield False
            return
        slots.users += 1
        try:
            async with slots.semaphore:
                yield True
        finally:
            slots.users -= 1
            if not slots.users:
                self._slots.pop(key, None)


# The read-only tools (server.py annotates them so; tests/test_limits.py checks the two agree): their calls are
# charged to the caller's `ReadBudget`, as are resource reads.
READ_TOOLS = frozenset(
    {
        "search_memories",
        "list_memories",
        "export_memories",
        "get_memory",
        "extraction_status",
        "recall",
        "upcoming_events",
    }
)


def _is_read(ctx: ServerRequestContext[Any, Any]) -> bool:
    if ctx.method == "resources/read":
        return True
    return ctx.params is not None and ctx.params.get("name") in READ_TOOLS


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
    """MCP middleware: caps each caller's tool calls and resource reads running at once (every transport;
    a few more wait their turn), charges read calls to the caller's `ReadBudget`, and, for requests that did
    not come over HTTP (stdio, in-memory clients), limits their rate.

    `read_seconds_per_minute` is the read budget of requests over HTTP, `local_read_seconds_per_minute` that
    of the others (by default the same budget; the server passes `Settings.read_budget`: none under stdio). A refused
    tool call is a tool error whose text says which limit and what to do; a refused resource read is a
    JSON-RPC error with the same text.
    """

    def __init__(
        self,
        *,
        per_minute: int,
        max_concurrent: int,
        max_waiting: int = 8,
        read_seconds_per_minute: float = 0.0,
        local_read_seconds_per_minute: float | None = None,
    ) -> None:
        self.rate = RateLimiter(per_minute)
        self.cap = ConcurrencyCap(max_concurrent, max_waiting)
        slots = max(1, (os.cpu_count() or 2) // 2)
        # Reads only: writes are serialized by the store's write lock already, and bulk writers must not queue.
        self.reads = ReadBudget(read_seconds_per_minute, lane_slots=slots, lane_duty=LANE_DUTY)
        self.local_reads = (
            self.reads
            if local_read_seconds_per_minute is None
            else ReadBudget(local_read_seconds_per_minute, lane_slots=slots, lane_duty=LANE_DUTY)
        )

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
        READ_OWNER.set(key)  # the store shares its readers fairly between callers
        async with self.cap.slot(key) as admitted:
            if not admitted:
                return _refusal(
                    ctx,
                    f"too many requests at once: {self.cap.limit} of this caller's requests are running and "
                    f"{self.cap.max_waiting} waiting (HARMONIA_MAX_CONCURRENT_REQUESTS); wait for them to finish, "
                    "then retry",
                )
            if not _is_read(ctx):
                return await call_next(ctx)
            budget = self.local_reads if ctx.request is None else self.reads
            async with budget.run(key) as in_lane:
                # Over budget: its reads also go to the background reader, which the kernel runs last.
                marked = READ_BACKGROUND.set(in_lane)
                try:
                    return await call_next(ctx)
                finally:
                    READ_BACKGROUND.reset(marked)


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
        wait = self.limiter.acquire(_caller(scope))
        if wait is None:
            await self.app(scope, receive, send)
            return
        seconds = math.ceil(wait)
        message = (
            f"rate limit: more than {self.limiter.per_minute} requests in the last minute "
            f"(HARMONIA_RATE_LIMIT_PER_MINUTE); retry in {seconds} s"
        )
        await send_json_error(send, 429, message, [(b"retry-after", str(seconds).encode())])


async def send_json_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    """Answer an HTTP request with `status` and a JSON-RPC error body (no request id) carrying `message`."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _caller(scope: Scope) -> str:
    user = scope.get("user")
    return user.access_token.token if isinstance(user, AuthenticatedUser) else ANONYMOUS


class SessionCapMiddleware:
    """ASGI middleware (inside the SDK's authentication): at most `per_caller` open streamable HTTP sessions
    per caller; the request that would open one more gets `429` saying so.

    Why: the SDK's own cap (`max_sessions`) is for all callers together, so one token could fill it and lock
    every other user out. A session is counted from the response that opens it (its `mcp-session-id`
    header) until `is_open(session_id)` says it has ended (client DELETE, idle timeout, crash); openings
    still in flight count too, so a burst of parallel `initialize` requests cannot slip past.
    """

    def __init__(self, app: ASGIApp, *, per_caller: int, is_open: Callable[[str], bool], path: str = "/mcp") -> None:
        self.app = app
        self.per_caller = per_caller
        self._is_open = is_open
        self._path = path
        self._sessions: dict[str, set[str]] = {}
        self._opening: dict[str, int] = {}

    def open_sessions(self, key: str) -> int:
        """How many sessions `key` holds open (forgetting those that have ended), openings in flight included."""
        live = {session for session in self._sessions.get(key, set()) if self._is_open(session)}
        if live:
            self._sessions[key] = live
        else:
            self._sessions.pop(key, None)
        return len(live) + self._opening.get(key, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        opens = (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path", "").rstrip("/") == self._path
            and not any(name == b"mcp-session-id" for name, _ in scope.get("headers", []))
        )
        if self.per_caller <= 0 or not opens:
            await self.app(scope, receive, send)
            return
        key = _caller(scope)
        if self.open_sessions(key) >= self.per_caller:
            message = (
                f"too many open sessions: this caller already has {self.per_caller} "
                "(HARMONIA_MAX_SESSIONS_PER_CALLER); reuse one, or end one with an HTTP DELETE, then retry"
            )
            await send_json_error(send, 429, message, [(b"retry-after", b"60")])
            return

        opening = True

        def opened() -> None:
            # Once (when the response names the session, or when the request ends without one): from then on
            # the session counts as open through `is_open`, not as an opening in flight.
            nonlocal opening
            if opening:
                opening = False
                self._opening[key] -= 1
                if not self._opening[key]:
                    del self._opening[key]

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                for name, value in message.get("headers", []):
                    if name.lower() == b"mcp-session-id":
                        self._sessions.setdefault(key, set()).add(value.decode("latin-1"))
                        opened()
            await send(message)

        self._opening[key] = self._opening.get(key, 0) + 1
        try:
            await self.app(scope, receive, recording_send)
        finally:
            opened()


_SSE_SESSION = re.compile(rb"session_id=([0-9a-f]{32})")


@dataclass
class _SseStream:
    caller: str
    last_active: float
    session: str | None = None
    # The JSON-RPC ids of the client's requests posted for this stream and not yet answered on it: a stream that
    # owes a reply is in use, however long the call takes (a model call in sync mode can outlast the idle time).
    pending: set[str] = field(default_factory=set[str])
    # The body chunks since the last event's end: the start of an SSE event whose end has not been sent yet.
    unparsed: list[bytes] = field(default_factory=list[bytes])

    def complete_events(self, chunk: bytes) -> list[bytes]:
        """The SSE events that `chunk` completes, whole; the rest is kept for the next chunk. Each byte is joined
        once per event end, however many chunks an event comes in."""
        if not chunk:
            return []
        tail = b"".join(self.unparsed[-3:])[-3:]  # an event end may span chunks (of a byte each, at worst)
        self.unparsed.append(chunk)
        if not _SSE_EVENT_END.search(tail + chunk):
            return []
        events, rest = _sse_events(b"".join(self.unparsed))
        self.unparsed = [rest] if rest else []
        return events


def _json_messages(text: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages in `text` (one object or a batch), [] when it is not JSON."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return []
    found = parsed if isinstance(parsed, list) else [parsed]
    return [message for message in found if isinstance(message, dict)]


# An SSE event ends at a blank line; a line ends with CRLF, LF or CR (the HTML standard's event stream format).
_SSE_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def _sse_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete SSE events at the start of `buffer` and the rest, the start of an event not yet ended."""
    *events, rest = _SSE_EVENT_END.split(buffer)
    return events, rest


def _sse_event(event: bytes) -> tuple[bytes, bytes]:
    """One SSE event's type (`message` when it names none) and its `data:` lines joined by newlines, as the event
    stream format joins them."""
    kind = b"message"
    data: list[bytes] = []
    for line in event.splitlines():
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"event":
            kind = value
        elif name == b"data":
            data.append(value)
    return kind, b"\n".join(data)


class SseCapMiddleware:
    """ASGI middleware (inside the SDK's authentication) for the SSE transport: at most `per_caller` open SSE
    streams per caller and `total` for all callers together, each closed once idle for `idle_seconds`.

    The SDK's SSE app has neither a cap nor an idle timeout, so one token could hold connections (and
    their sessions) until the server runs out of memory or file descriptors. A stream is open from its
    `GET {sse_path}` until the response ends; the request that would open one more gets `429` (per caller)
    or `503` (all callers) saying so. A stream is active when its client posts a message to it (the
    `session_id` the SDK names in its first `endpoint` event) or the server sends it a message; keep-alive
    pings do not count. A stream that owes its client a reply (a request posted for it and not yet answered on
    it) is never idle, however long the call takes. An idle stream is ended cleanly (the response completes),
    which ends its session.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_caller: int,
        total: int,
        idle_seconds: float,
        sse_path: str = "/sse",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.per_caller = per_caller
        self.total = total
        self.idle_seconds = idle_seconds
        self._sse_path = sse_path
        self._clock = clock
        self._streams: dict[int, _SseStream] = {}
        self._by_session: dict[str, _SseStream] = {}

    def open_streams(self, caller: str | None = None) -> int:
        """How many SSE streams are open: of `caller`, or of every caller when None."""
        return sum(1 for stream in self._streams.values() if caller is None or stream.caller == caller)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "POST":
            found = _SSE_SESSION.search(scope.get("query_string", b""))
            stream = self._by_session.get(found[1].decode()) if found else None
            if stream is not None:
                stream.last_active = self._clock()
                receive = _noting_requests(receive, stream)
            await self.app(scope, receive, send)
            return
        if scope.get("method") != "GET" or scope.get("path", "").rstrip("/") != self._sse_path:
            await self.app(scope, receive, send)
            return
        caller = _caller(scope)
        if self.per_caller > 0 and self.open_streams(caller) >= self.per_caller:
            message = (
                f"too many open SSE connections: this caller already has {self.per_caller} "
                "(HARMONIA_MAX_SESSIONS_PER_CALLER); close one, then retry"
            )
            await send_json_error(send, 429, message, [(b"retry-after", b"60")])
            return
        if self.open_streams() >= self.total:
            message = f"the server has {self.total} SSE connections open (HARMONIA_MAX_SESSIONS); retry later"
            await send_json_error(send, 503, message, [(b"retry-after", b"60")])
            return
        await self._serve_stream(scope, receive, send, caller)

    async def _serve_stream(self, scope: Scope, receive: Receive, send: Send, caller: str) -> None:
        stream = _SseStream(caller, self._clock())
        self._streams[id(stream)] = stream
        state = {"started": False, "ended": False}

        async def watching_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                # An event may come in several body chunks, or several in one: parse whole events only.
                for event in stream.complete_events(body):
                    kind, data = _sse_event(event)
                    if kind == b"endpoint" and stream.session is None:
                        found = _SSE_SESSION.search(data)
                        if found:
                            stream.session = found[1].decode()
                            self._by_session[stream.session] = stream
                    messages = _json_messages(data) if kind == b"message" and data else []
                    if messages:
                        stream.last_active = self._clock()
                    for sent in messages:
                        if "id" in sent and ("result" in sent or "error" in sent):
                            stream.pending.discard(json.dumps(sent["id"]))
                state["ended"] = not message.get("more_body", False)
            await send(message)

        try:
            async with anyio.create_task_group() as group:

                async def reap_when_idle() -> None:
                    while True:
                        idle = self._clock() - stream.last_active
                        if idle >= self.idle_seconds and not stream.pending:
                            break
                        await anyio.sleep(self.idle_seconds - idle if idle < self.idle_seconds else self.idle_seconds)
                    group.cancel_scope.cancel()

                group.start_soon(reap_when_idle)
                await self.app(scope, receive, watching_send)
                group.cancel_scope.cancel()
            if state["started"] and not state["ended"]:  # reaped: end the response instead of dropping it
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._streams.pop(id(stream), None)
            if stream.session is not None:
                self._by_session.pop(stream.session, None)


def _noting_requests(receive: Receive, stream: _SseStream) -> Receive:
    """`receive` that adds the ids of the requests in the posted body to `stream.pending` (and takes out those a
    `notifications/cancelled` names: no reply will come for them)."""
    chunks: list[bytes] = []

    async def noting() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                for posted in _json_messages(b"".join(chunks)):
                    if "method" in posted and "id" in posted:
                        stream.pending.add(json.dumps(posted["id"]))
                    elif posted.get("method") == "notifications/cancelled":
                        cancelled = (posted.get("params") or {}).get("requestId")
                        stream.pending.discard(json.dumps(cancelled))
        return message

    return noting


@dataclass
class _Account:
    balance: float  # seconds of work left; negative: in debt
    refilled: float  # clock reading of the last refill
    running: int = 0  # its calls running in the over-budget lane
    free: int = 0  # its calls running outside the lane (within budget)
    cost: float | None = None  # seconds its last call took; None until one has finished
    first: int = 0  # its calls waiting for its first call to finish (its cost still unknown)
    costed: anyio.Event = field(default_factory=anyio.Event)  # set once `cost` is known


class ReadBudget:
    """A per-caller budget of work time, so that callers within their budget never wait behind one over it.

    Each caller has a token bucket of seconds (Tanenbaum's token bucket, as in network traffic shaping):
    it holds at most `burst` seconds (`per_minute / 6` by default) and refills at `per_minute / 60` seconds a
    second; every call is charged the seconds it took. A call runs at once when the caller's balance covers
    what its running calls and this one are expected to cost (each as much as its last call; nothing before
    its first, whose cost is unknown, so a caller's further calls wait for its first to finish). Otherwise it
    is served in the over-budget lane: at most `lane_slots` such calls run at once (one per caller), and a
    free slot goes to the waiting caller that is least in debt (first come first served among equals), so
    heavy callers share the lane round-robin instead of one of them holding it. The lane also rests: after
    a call of d seconds its next call starts d * (1 / `lane_duty` - 1) seconds later at the earliest, so the
    lane is busy at most `lane_duty` of the time.

    Why: the costliest search the query bounds allow is CPU-bound (about 0.46 s on 2 cores, docs/benchmarks.md),
    and a few tokens sending them within the rate limit take more CPU than a small machine has; capping
    requests does not cap their cost. With the lane, all over-budget callers together hold at most
    `lane_slots` x `lane_duty` CPUs, and the rest stays for everyone else. Why the rest: a lane that is never
    idle held a whole core of two, and the well-behaved clients' p95 under three hostile tokens was 4x
    their calm p95 (docs/benchmarks.md, issue 12 third round). Why the expected cost and the small burst:
    with only "balance > 0" checked at the start, every new token started as many costly searches at once as
    its concurrency cap let it (three tokens: six, more than two cores), all charged only when they ended;
    the well-behaved clients' calls in those seconds took 1.5 s (docs/benchmarks.md, issue 12 fourth round).
    Now a new token has one call in flight until its cost is known, and then only as many as its balance pays
    for, while a client's burst of cheap searches (a few ms each) still runs at once.

    `per_minute` 0 turns the budget off (every call runs at once).
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        lane_slots: int = 1,
        lane_duty: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.per_minute = per_minute
        self.burst = burst if burst is not None else per_minute / BURST_SHARE
        self.lane_slots = lane_slots
        self.lane_duty = lane_duty
        self._clock = clock
        self._sleep = sleep
        self._lane_opens_at = 0.0  # clock reading before which no lane call starts (the lane's rest)
        self._accounts: dict[str, _Account] = {}
        self._lane_running = 0
        self._waiting: FairQueue[None] = FairQueue()

    def balance(self, key: str) -> float:
        """`key`'s seconds of budget left (refilled up to now); `burst` for a caller not seen lately."""
        now = self._clock()
        account = self._accounts.get(key)
        if account is None:
            return self.burst
        account.balance = min(self.burst, account.balance + (now - account.refilled) * self.per_minute / 60)
        account.refilled = now
        return account.balance

    def _account(self, key: str) -> _Account:
        balance = self.balance(key)
        return self._accounts.setdefault(key, _Account(balance, self._clock()))

    def charge(self, key: str, seconds: float) -> None:
        """Take `seconds` of work from `key`'s budget."""
        if self.per_minute > 0:
            self._account(key).balance -= seconds

    @asynccontextmanager
    async def run(self, key: str) -> AsyncIterator[bool]:
        """Run one call of `key`: at once within its budget, else when the lane gives it a slot; charged after.
        Yields whether it runs in the lane."""
        if self.per_minute <= 0:
            yield False
            return
        await self._learn_cost(key)
        in_lane = not self._covers(key)
        if in_lane:
            await self._enter_lane(key)
            try:
                rest = self._lane_opens_at - self._clock()
                if rest > 0:
                    await self._sleep(rest)  # holding the slot: the lane stays idle meanwhile
            except BaseException:
                self._leave_lane(key)
                raise
        else:
            self._account(key).free += 1
        started = self._clock()
        try:
            yield in_lane
        finally:
            ended = self._clock()
            self.charge(key, ended - started)
            account = self._account(key)
            account.cost = ended - started
            account.costed.set()
            if not in_lane:
                account.free -= 1
            else:
                rest = (ended - started) * (1 / self.lane_duty - 1)
                self._lane_opens_at = max(self._lane_opens_at, ended + rest)
                self._leave_lane(key)
            self._forget_settled()

    async def _learn_cost(self, key: str) -> None:
        # A caller whose cost is unknown has one call at a time outside the lane: the others wait for it.
        account = self._account(key)
        if account.cost is not None or not account.free:
            return
        account.first += 1
        try:
            await account.costed.wait()
        finally:
            account.first -= 1

    def _covers(self, key: str) -> bool:
        """Whether `key`'s balance pays for its running calls outside the lane and one more, each expected to
        cost what its last call did (nothing for a first call: the balance need only be positive)."""
        account = self._account(key)
        expected = (account.cost or 0.0) * (account.free + 1)
        return self.balance(key) > expected

    def _can_enter(self, key: str) -> bool:
        account = self._accounts.get(key)
        return self._lane_running < self.lane_slots and (account is None or not account.running)

    async def _enter_lane(self, key: str) -> None:
        if not self._waiting and self._can_enter(key):
            self._lane_running += 1
            self._account(key).running += 1
            return
        await self._waiting.wait(key, lambda key, _: self._leave_lane(key))  # counted by `_leave_lane`

    def _leave_lane(self, key: str) -> None:
        self._lane_running -= 1
        self._account(key).running -= 1
        chosen = self._waiting.hand(None, rank=self.balance, eligible=self._can_enter)
        if chosen is not None:
            self._lane_running += 1
            self._account(chosen).running += 1

    def _forget_settled(self) -> None:
        # Bounded memory: a caller back at a full bucket with nothing running or waiting has no state to keep.
        waiting = self._waiting.keys()
        idle = [
            key
            for key, account in self._accounts.items()
            if not (account.running or account.free or account.first) and key not in waiting
        ]
        for key in idle:
            if self.balance(key) >= self.burst:
                del self._accounts[key]
