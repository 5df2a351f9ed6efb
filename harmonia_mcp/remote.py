"""Serving MCP to remote clients: the SDK's SSE and streamable HTTP apps under uvicorn.

What this module adds around the SDK's apps (`MCPServer.sse_app`, `MCPServer.streamable_http_app`):

- `GET /healthz` → `{"status": "ok", ...}`, without auth, for process supervisors;
- DNS-rebinding protection (`Host` / `Origin` checks) through the SDK's `TransportSecuritySettings`,
  with loopback names, the bound address and `HARMONIA_ALLOWED_HOSTS` allowed;
- the SDK's request body cap, set from `HARMONIA_MAX_REQUEST_BYTES`;
- per-caller rate limits, and caps on the sessions (streamable HTTP) or connections (SSE) one caller holds
  open, with idle ones closed (`throttle.py`);
- the start-up refusal to expose an unauthenticated server on a non-loopback address;
- query strings redacted from uvicorn's access log (a client may put a token or session id there).

Bearer tokens and per-user isolation live in `auth.py` and `server.py`; the SDK's bearer middleware
answers 401 itself.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from harmonia_mcp import __version__
from harmonia_mcp.auth import TokenTable
from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server
from harmonia_mcp.throttle import RateLimiter, RateLimitMiddleware, SessionCapMiddleware, SseCapMiddleware

logger = logging.getLogger(__name__)

HttpTransport = Literal["sse", "streamable-http"]
LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
# Seconds uvicorn waits for open connections (SSE streams never end by themselves) after SIGTERM before
# cancelling them; every store acknowledged before then is already committed.
GRACEFUL_SHUTDOWN_SECONDS = 3


class UnsafeConfiguration(Exception):
    """The server would be exposed unsafely; the message says what to configure instead."""


class PortUnavailable(Exception):
    """The address cannot be bound (the port is in use, or the address is not this machine's)."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name to bind) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def check_exposure(settings: Settings, tokens: TokenTable | None, *, allow_unauthenticated: bool) -> None:
    """Refuse configurations that would expose memories on a network; warn when explicitly allowed.

    Raises:
        UnsafeConfiguration: a non-loopback `settings.host` without tokens (unless `allow_unauthenticated`),
            or a wildcard address (0.0.0.0, ::) with no `allowed_hosts` to check `Host` headers against.
    """
    if is_loopback(settings.host):
        return
    if tokens is None:
        if not allow_unauthenticated:
            raise UnsafeConfiguration(
                f"refusing to serve on {settings.host} without authentication: anyone who can reach it could read "
                "and change every user's memories. Configure a token, e.g.\n"
                "  export HARMONIA_AUTH_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\n"
                "or HARMONIA_AUTH_TOKENS_FILE=/path/to/tokens (one 'token user_id' per line; see docs/remote.md), "
                "or bind --host 127.0.0.1. To serve without authentication anyway, pass --allow-unauthenticated."
            )
        logger.warning(
            "serving on %s WITHOUT authentication (--allow-unauthenticated): any client can read and change "
            "every user's memories",
            settings.host,
        )
    if _is_wildcard(settings.host) and not settings.allowed_hosts:
        raise UnsafeConfiguration(
            f"--host {settings.host} accepts any address, so say which Host names clients will use, e.g. "
            "--allowed-host memory.example.lan:* (or HARMONIA_ALLOWED_HOSTS=memory.example.lan:*,192.0.2.7:*); "
            "requests with other Host headers are refused (DNS-rebinding protection). '*' turns the check off."
        )


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """`Host` / `Origin` checks for the SDK's transports.

    Allowed `Host` values: the loopback names with or without a port, the bound address with or without a
    port (when it is a specific address) and `settings.allowed_hosts` (`name`, `name:port` or `name:*`, which
    also admits the bare `name`); `Origin` may be
    http:// or https:// of any of those. `allowed_hosts == ["*"]` turns the checks off.
    """
    if "*" in settings.allowed_hosts:
        logger.warning("Host/Origin checks are off (allowed hosts '*'): DNS-rebinding protection is disabled")
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = list(LOOPBACK_HOSTS)
    if not is_loopback(settings.host) and not _is_wildcard(settings.host):
        bound = f"[{settings.host}]" if ":" in settings.host and not settings.host.startswith("[") else settings.host
        hosts.append(f"{bound}:*")
    hosts += [host for host in settings.allowed_hosts if host not in hosts]
    # `name:*` also admits the bare name: a Host header on the scheme's default port (a proxy on 443, a
    # client on 80) carries no port, and the SDK's wildcard match requires one.
    hosts += [host[:-2] for host in hosts if host.endswith(":*") and host[:-2] not in hosts]
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def http_app(settings: Settings, transport: HttpTransport) -> Starlette:
    """The ASGI app serving MCP over `transport` with `/healthz`, auth, Host/Origin checks and the body cap.

    SSE: the stream at `/sse`, client messages at `/messages/`. Streamable HTTP: `/mcp`.

    Raises:
        TokenConfigError: the configured tokens are malformed (see `auth.TokenTable.from_settings`).
    """
    server = create_server(settings)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, "transport": transport})

    server.custom_route("/healthz", methods=["GET"])(healthz)

    security = transport_security(settings)
    if transport == "streamable-http":
        # The SDK's session manager enters the server lifespan (opening the store) once, at start-up.
        app = server.streamable_http_app(
            max_request_body_size=settings.max_request_bytes,
            transport_security=security,
            host=settings.host,
            session_idle_timeout=settings.session_idle_seconds,
            max_sessions=settings.max_sessions,
        )
        _add_rate_limit(app, settings)
        manager = server.session_manager
        # The SDK keeps its open sessions in `_server_instances` (mcp 2.3.0) and offers no public view of them;
        # tests/e2e/test_remote_limits.py fails if that changes.
        app.user_middleware.append(
            Middleware(
                SessionCapMiddleware,
                per_caller=settings.max_sessions_per_caller,
                is_open=lambda session: session in manager._server_instances,  # pyright: ignore[reportPrivateUsage]
            )
        )
        return app
    app = server.sse_app(
        max_request_body_size=settings.max_request_bytes, transport_security=security, host=settings.host
    )
    _add_rate_limit(app, settings)
    # The SDK's SSE app has no session cap or idle timeout of its own: the same limits as streamable HTTP.
    app.user_middleware.append(
        Middleware(
            SseCapMiddleware,
            per_caller=settings.max_sessions_per_caller,
            total=settings.max_sessions,
            idle_seconds=settings.session_idle_seconds,
        )
    )
    lifespan = server.settings.lifespan
    assert lifespan is not None  # create_server always sets one

    # The SSE app enters the server lifespan per connection; holding one entry for the app's whole life
    # opens the store at start-up (so a bad database fails before /healthz answers) and keeps it open.
    @asynccontextmanager
    async def hold_store(_: Starlette) -> AsyncIterator[None]:
        async with lifespan(server):
            yield

    app.router.lifespan_context = hold_store
    return app


def _add_rate_limit(app: Starlette, settings: Settings) -> None:
    # Appended, so innermost: it runs after the SDK's authentication and sees the caller's token.
    limiter = RateLimiter(settings.rate_limit(http=True))
    app.user_middleware.append(Middleware(RateLimitMiddleware, limiter=limiter))


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` (IPv4 or IPv6 by the address; names resolve), not yet listening.

    Bound before anything else starts, so that a busy port fails before the database is touched.

    Raises:
        PortUnavailable: the address is in use or cannot be bound; the message says which and what to do.
    """
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as error:
        sock.close()
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {error.strerror or error}. Is another server running there? "
            "Pick another port with --port (or HARMONIA_PORT), or stop the other process."
        ) from error
    return sock


class RedactQueryStrings(logging.Filter):
    """Replaces the query string of each uvicorn access-log line with `?[redacted]`.

    Clients sometimes send a bearer token as `?access_token=...`, and SSE's `/messages/?session_id=...`
    names a live session; neither may reach a log file. uvicorn logs
    `'%s - "%s %s HTTP/%s" %d'` with the path and query as the third argument.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


_REDACT_QUERY_STRINGS = RedactQueryStrings()


class _Server(uvicorn.Server):
    """uvicorn's server, calling `on_started(host, port)` once it listens and the app's lifespan has started."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit and self._on_started is not None:
            self._on_started()


async def serve_http(
    settings: Settings,
    transport: HttpTransport,
    *,
    allow_unauthenticated: bool = False,
    on_serving: Callable[[str, int], None] | None = None,
) -> None:
    """Serve MCP over `transport` on `settings.host`:`settings.port` until SIGINT or SIGTERM.

    Checks the exposure, then binds the port, before opening the database, so a refused configuration
    or a busy port never listens and never creates a file. `on_serving(host, port)` is called once the
    server listens with the store open (`port` is the bound one, also when `settings.port` is 0).

    Raises:
        UnsafeConfiguration: see `check_exposure`.
        TokenConfigError: the configured tokens are malformed.
        PortUnavailable: the port is in use or the address cannot be bound.
    """
    check_exposure(settings, TokenTable.from_settings(settings), allow_unauthenticated=allow_unauthenticated)
    app = http_app(settings, transport)
    sock = bind_socket(settings.host, settings.port)
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # Keep the root logging set up by the CLI (stderr, HARMONIA_LOG_LEVEL) rather than uvicorn's own.
        log_config=None,
    )
    logging.getLogger("uvicorn.access").addFilter(_REDACT_QUERY_STRINGS)  # added once: filters are a set
    started = None if on_serving is None else (lambda: on_serving(settings.host, port))
    try:
        await _Server(config, started).serve(sockets=[sock])
    finally:
        sock.close()
