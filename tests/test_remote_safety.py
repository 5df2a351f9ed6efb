"""Start-up safety checks, Host/Origin settings and the shared store of the HTTP transports (no server is started)."""

from __future__ import annotations

import logging

import pytest

from harmonia_mcp.auth import TokenTable
from harmonia_mcp.config import Settings
from harmonia_mcp.remote import UnsafeConfiguration, check_exposure, is_loopback, transport_security
from harmonia_mcp.server import create_server

TOKENS = TokenTable([("a-token-of-16-chars-A", "alice")])


def _settings(host: str, allowed: str = "") -> Settings:
    return Settings(db_path=":memory:", host=host, allowed_hosts=allowed)  # type: ignore[arg-type]


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                                 ("localhost", True), ("0.0.0.0", False), ("192.0.2.7", False),
                                                 ("memory.lan", False)])  # fmt: skip
def test_loopback_is_recognised(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_loopback_needs_no_token() -> None:
    check_exposure(_settings("127.0.0.1"), None, allow_unauthenticated=False)


@pytest.mark.parametrize("host", ["192.0.2.7", "0.0.0.0", "::"])
def test_a_network_address_without_tokens_is_refused_with_how_to_fix_it(host: str) -> None:
    with pytest.raises(UnsafeConfiguration) as refused:
        check_exposure(_settings(host, "memory.lan:*"), None, allow_unauthenticated=False)
    message = str(refused.value)
    assert "HARMONIA_AUTH_TOKEN" in message and "HARMONIA_AUTH_TOKENS_FILE" in message
    assert "--allow-unauthenticated" in message


def test_allow_unauthenticated_serves_but_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_exposure(_settings("192.0.2.7"), None, allow_unauthenticated=True)
    assert "WITHOUT authentication" in caplog.text


def test_all_interfaces_need_the_host_names_clients_use() -> None:
    with pytest.raises(UnsafeConfiguration, match="--allowed-host"):
        check_exposure(_settings("0.0.0.0"), TOKENS, allow_unauthenticated=False)
    check_exposure(_settings("0.0.0.0", "memory.lan:*"), TOKENS, allow_unauthenticated=False)
    check_exposure(_settings("192.0.2.7"), TOKENS, allow_unauthenticated=False)


def test_allowed_hosts_are_loopback_the_bound_address_and_the_configured_names() -> None:
    security = transport_security(_settings("192.0.2.7", "memory.lan:*, memory.example.com"))
    assert security.enable_dns_rebinding_protection
    assert security.allowed_hosts == [
        "127.0.0.1:*",
        "localhost:*",
        "[::1]:*",
        "192.0.2.7:*",
        "memory.lan:*",
        "memory.example.com",
        "127.0.0.1",
        "localhost",
        "[::1]",
        "192.0.2.7",
        "memory.lan",
    ]
    assert "https://memory.example.com" in security.allowed_origins
    assert "http://evil.example" not in security.allowed_origins
    assert "[fd00::7]:*" in transport_security(_settings("fd00::7")).allowed_hosts


@pytest.mark.parametrize(
    ("host_header", "allowed"),
    [("memory.example.lan", True), ("memory.example.lan:443", True), ("localhost", True), ("127.0.0.1", True),
     ("[::1]", True), ("memory.example.lan.evil", False), ("evil.example", False)],
)  # fmt: skip
def test_a_wildcard_port_also_admits_the_name_without_a_port(host_header: str, allowed: bool) -> None:
    # Issue 12 item 6: a reverse proxy on 443 sends `Host: memory.example.lan`; the SDK's middleware decides.
    from mcp.server.transport_security import TransportSecurityMiddleware

    middleware = TransportSecurityMiddleware(transport_security(_settings("0.0.0.0", "memory.example.lan:*")))
    assert middleware._validate_host(host_header) is allowed  # pyright: ignore[reportPrivateUsage]
    assert middleware._validate_origin(f"https://{host_header}") is allowed  # pyright: ignore[reportPrivateUsage]


@pytest.mark.parametrize("host", ["0", "", "0.0.0.0", "::", "[::]", "0.0", "0x0"])
def test_every_spelling_of_all_addresses_needs_the_host_names(host: str) -> None:
    # Issue 12 item 11: `--host 0` and HARMONIA_HOST='' bind every interface, like 0.0.0.0.
    with pytest.raises(UnsafeConfiguration, match="--allowed-host"):
        check_exposure(_settings(host), TOKENS, allow_unauthenticated=False)
    with pytest.raises(UnsafeConfiguration, match="without authentication"):
        check_exposure(_settings(host, "memory.lan:*"), None, allow_unauthenticated=False)


def test_an_empty_host_variable_is_refused_by_serve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harmonia_mcp.cli import main

    monkeypatch.setenv("HARMONIA_HOST", "")
    monkeypatch.setenv("HARMONIA_AUTH_TOKEN", "a-token-of-16-chars-A")
    assert main(["serve", "--transport", "streamable-http", "--db", ":memory:", "--port", "1"]) == 2
    assert "--allowed-host" in capsys.readouterr().err


def test_a_star_turns_the_host_checks_off() -> None:
    assert not transport_security(_settings("0.0.0.0", "*")).enable_dns_rebinding_protection


@pytest.mark.anyio
async def test_every_sse_connection_shares_one_open_store(settings: Settings) -> None:
    # The SDK's SSE app enters the server lifespan once per connection.
    server = create_server(settings)
    lifespan = server.settings.lifespan
    assert lifespan is not None
    async with lifespan(server) as first:
        async with lifespan(server) as second:
            assert second.service is first.service
        await first.service.store_memory("I have a dog called Rex")  # still open after the other left
    async with lifespan(server) as again:  # reopened after the last one left
        assert again.service is not first.service
        assert (await again.service.list_memories()).pagination.total_count == 1
