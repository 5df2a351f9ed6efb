"""End to end over HTTP: `harmonia-mcp serve --transport sse|streamable-http` as a process, driven by the
official mcp SSE and streamable HTTP clients with bearer tokens; auth, per-user isolation and limits."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import MCPError
from remote_server import (
    TRANSPORTS,
    RunningServer,
    Transport,
    call,
    connect,
    free_port,
    port_is_listening,
    running,
    server_command,
    tool_error,
)

pytestmark = pytest.mark.anyio

ALICE = "alice-0123456789-token-AAAAAAAA"
BOB = "bob-0123456789-token-BBBBBBBBBBBB"
WRONG = "not-a-token-0123456789-CCCCCCCC"
MAX_REQUEST_BYTES = 64 * 1024
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module", params=TRANSPORTS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server per transport for this module: tokens for alice and bob, DEBUG logs, a 64 KiB body cap."""
    transport: Transport = request.param
    folder = tmp_path_factory.mktemp(transport)
    tokens = folder / "tokens"
    tokens.write_text(f"# who may connect\n{ALICE} alice\n\n{BOB}   bob  # bob's laptop\n", encoding="utf-8")
    tokens.chmod(0o600)
    env = {
        "HARMONIA_AUTH_TOKENS_FILE": str(tokens),
        "HARMONIA_LOG_LEVEL": "DEBUG",
        "HARMONIA_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
    }
    with running(folder, transport, env=env) as started:
        yield started


async def test_store_search_list_export_delete_over_the_transport(server: RunningServer) -> None:
    async with connect(server, ALICE) as client:
        stored = await call(client, "store_memory", {"message": "I have a dog called Biggie"})
        [memory] = stored["memories"]
        assert memory["action"] == "created"
        assert memory["content"] == "User has a dog called Biggie"

        hits = await call(client, "search_memories", {"query": "Biggie"})
        assert [hit["memory_id"] for hit in hits["results"]] == [memory["memory_id"]]

        listed = await call(client, "list_memories", {"user_id": "alice"})
        assert memory["memory_id"] in [item["memory_id"] for item in listed["memories"]]

        exported = await call(client, "export_memories", {"format": "json"})
        assert "User has a dog called Biggie" in exported["data"]

        resource = await client.read_resource(f"memory://alice/{memory['memory_id']}")
        assert json.loads(resource.contents[0].text)["content"] == "User has a dog called Biggie"  # type: ignore[union-attr]

        await call(client, "delete_memory", {"memory_id": memory["memory_id"]})
        after = await call(client, "search_memories", {"query": "Biggie"})
        assert after["results"] == []


async def test_missing_or_wrong_token_gets_401_and_the_right_token_works(server: RunningServer) -> None:
    async with httpx2.AsyncClient(base_url=server.base, timeout=10.0) as http:
        if server.transport == "streamable-http":
            requests = [("POST", "/mcp", json.dumps(INITIALIZE))]
        else:
            requests = [("GET", "/sse", None), ("POST", "/messages/?session_id=0123", json.dumps(INITIALIZE))]
        for method, path, body in requests:
            for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": ALICE}):
                response = await http.request(method, path, content=body, headers={**MCP_HEADERS, **headers})
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"].startswith("Bearer ")
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"

    async with connect(server, BOB) as client:
        assert "store_memory" in [tool.name for tool in (await client.list_tools()).tools]


async def test_tokens_never_appear_in_the_log(server: RunningServer) -> None:
    async with connect(server, ALICE) as client:
        await call(client, "list_memories", {})
    async with httpx2.AsyncClient(base_url=server.base, timeout=10.0) as http:
        path = "/mcp" if server.transport == "streamable-http" else "/sse"
        await http.post(path, content=b"{}", headers={**MCP_HEADERS, "Authorization": f"Bearer {WRONG}"})
    log = server.log()
    assert "DEBUG" in log  # the server did log at DEBUG, so the check below means something
    for token in (ALICE, BOB, WRONG):
        assert token not in log


async def test_a_token_bound_to_alice_cannot_reach_bobs_memories(server: RunningServer) -> None:
    async with connect(server, BOB) as bob:
        stored = await call(bob, "store_memory", {"message": "I live in Zanzibar"})
        bobs_id = stored["memories"][0]["memory_id"]

    refusal = "this token may only access user alice"
    async with connect(server, ALICE) as alice:
        for tool, arguments in [
            ("store_memory", {"message": "I live in Lisbon", "user_id": "bob"}),
            ("search_memories", {"query": "Zanzibar", "user_id": "bob"}),
            ("list_memories", {"user_id": "bob"}),
            ("export_memories", {"user_id": "bob"}),
            ("delete_memory", {"memory_id": bobs_id, "user_id": "bob"}),
        ]:
            assert refusal in tool_error(await alice.call_tool(tool, arguments)), tool
        # Without user_id alice acts as herself: bob's memory is neither visible nor deletable.
        assert (await call(alice, "search_memories", {"query": "Zanzibar"}))["results"] == []
        assert "Zanzibar" not in (await call(alice, "export_memories", {"format": "text"}))["data"]
        assert "No memory" in tool_error(await alice.call_tool("delete_memory", {"memory_id": bobs_id}))
        for uri in (f"memory://bob/{bobs_id}", "memory://bob/recent"):
            with pytest.raises(MCPError) as refused:
                await alice.read_resource(uri)
            # A resource refusal names the URIs the token may read, not tool arguments (issue 16.4).
            assert "this token may only read user alice's memories: use memory://alice/recent" in str(refused.value)

    async with connect(server, BOB) as bob:
        hits = await call(bob, "search_memories", {"query": "Zanzibar", "user_id": "bob"})
        assert [hit["memory_id"] for hit in hits["results"]] == [bobs_id]
        lisbon = await call(bob, "search_memories", {"query": "Lisbon"})
        assert lisbon["results"] == []


async def test_a_token_may_erase_only_its_own_user(server: RunningServer) -> None:
    async with connect(server, BOB) as bob:
        await call(bob, "store_memory", {"message": "I have a parrot called Kiwi"})
    async with connect(server, ALICE) as alice:
        await call(alice, "store_memory", {"message": "I have a hamster called Nibbles"})
        refusal = "this token may only access user alice"
        erase_bob = {"user_id": "bob", "confirm": "bob"}
        assert refusal in tool_error(await alice.call_tool("delete_user_memories", erase_bob))
        assert "confirm='alice'" in tool_error(await alice.call_tool("delete_user_memories", {"confirm": "bob"}))
        erased = await call(alice, "delete_user_memories", {"confirm": "alice"})
        assert erased["user_id"] == "alice" and erased["memories"] >= 1
        assert (await call(alice, "list_memories", {"include_inactive": True}))["pagination"]["total_count"] == 0
    async with connect(server, BOB) as bob:
        # By words: bob's parrot survived alice's erasure (meaning would add bob's other memories too).
        kiwi = await call(bob, "search_memories", {"query": "Kiwi", "mode": "keyword"})
        assert [hit["content"] for hit in kiwi["results"]] == ["User has a parrot called Kiwi"]


async def test_foreign_host_or_origin_and_oversized_bodies_are_refused(server: RunningServer) -> None:
    auth = {**MCP_HEADERS, "Authorization": f"Bearer {ALICE}"}
    large_body = b" " * (MAX_REQUEST_BYTES + 1)
    # One connection per request: the SDK's SSE endpoint raises after sending a refusal, and uvicorn then
    # closes the connection, which a pooled client would otherwise try to reuse.
    method, path = ("POST", "/mcp") if server.transport == "streamable-http" else ("GET", "/sse")
    body = json.dumps(INITIALIZE) if method == "POST" else None
    async with httpx2.AsyncClient(base_url=server.base, timeout=10.0) as http:
        host = await http.request(method, path, content=body, headers={**auth, "Host": "evil.example:80"})
    async with httpx2.AsyncClient(base_url=server.base, timeout=10.0) as http:
        origin = await http.request(method, path, content=body, headers={**auth, "Origin": "http://evil.example"})
    async with httpx2.AsyncClient(base_url=server.base, timeout=10.0) as http:
        if server.transport == "streamable-http":
            large = await http.post("/mcp", content=large_body, headers=auth)
        else:
            large = await _post_to_a_live_sse_session(http, auth, large_body)
    assert host.status_code == 421
    assert origin.status_code == 403
    assert large.status_code == 413


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
async def test_a_loopback_host_header_without_a_port_is_accepted(server: RunningServer, host: str) -> None:
    # Issue 12 item 6: docs/remote.md allows the loopback names on any port, including none (port 80).
    auth = {**MCP_HEADERS, "Authorization": f"Bearer {ALICE}", "Host": host}
    method, path = ("POST", "/mcp") if server.transport == "streamable-http" else ("GET", "/sse")
    body = json.dumps(INITIALIZE) if method == "POST" else None
    async with (
        httpx2.AsyncClient(base_url=server.base, timeout=10.0) as http,
        http.stream(method, path, content=body, headers=auth) as response,
    ):
        assert response.status_code == 200


async def _post_to_a_live_sse_session(
    http: httpx2.AsyncClient, headers: dict[str, str], body: bytes
) -> httpx2.Response:
    async with http.stream("GET", "/sse", headers=headers) as stream:
        assert stream.status_code == 200
        with anyio.fail_after(10):
            async for line in stream.aiter_lines():
                if line.startswith("data: /messages/"):
                    endpoint = line.removeprefix("data: ")
                    return await http.post(endpoint, content=body, headers=headers)
    raise AssertionError("the SSE stream announced no message endpoint")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_binding_all_interfaces_without_a_token_is_refused(tmp_path: Path, transport: Transport) -> None:
    import subprocess

    port = free_port()
    result = subprocess.run(
        [*server_command(), "serve", "--transport", transport, "--host", "0.0.0.0", "--port", str(port)],
        env={"PATH": "/usr/bin:/bin", "HARMONIA_DB_PATH": str(tmp_path / "m.db")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "HARMONIA_AUTH_TOKEN" in result.stderr and "--allow-unauthenticated" in result.stderr
    assert not port_is_listening(port)
    with socket.socket() as probe:  # the port was never taken: we can bind it ourselves
        probe.bind(("127.0.0.1", port))


async def test_recall_profile_and_user_id_completion_stay_within_the_token(server: RunningServer) -> None:
    from mcp.types import PromptReference

    async with connect(server, BOB) as bob:
        await call(bob, "store_memory", {"message": "I have a parrot called Kiwi"})
    async with connect(server, ALICE) as alice:
        refusal = "this token may only access user alice"
        assert refusal in tool_error(await alice.call_tool("recall", {"topic": "parrot", "user_id": "bob"}))
        assert "Kiwi" not in (await call(alice, "recall", {"topic": "parrot Kiwi"}))["text"]
        with pytest.raises(MCPError) as refused:
            await alice.read_resource("memory://bob/profile")
        assert refusal in str(refused.value)
        # bob has memories in this file, but alice's completion offers only alice.
        found = await alice.complete(
            PromptReference(type="ref/prompt", name="recall"), {"name": "user_id", "value": ""}
        )
        assert found.completion.values == ["alice"]
        none = await alice.complete(
            PromptReference(type="ref/prompt", name="recall"), {"name": "user_id", "value": "b"}
        )
        assert none.completion.values == []
    if server.transport == "sse":
        assert "the sse transport is deprecated" in server.log()


def test_a_proxied_host_without_a_port_is_accepted_for_a_wildcard_port_allowed_host(tmp_path: Path) -> None:
    # Issue 12 item 6, the documented reverse-proxy setup: a proxy on 443 sends `Host: memory.example.lan`.
    with running(tmp_path, "streamable-http", arguments=["--allowed-host", "memory.example.lan:*"]) as server:
        statuses: dict[str, int] = {}
        for host in ("memory.example.lan", "memory.example.lan:443", "memory.example.lan.evil", "evil.example"):
            # One connection per request: a refused request may leave uvicorn closing it.
            with httpx2.Client(base_url=server.base, timeout=10.0) as http:
                headers = {**MCP_HEADERS, "Host": host, "Origin": f"https://{host}"}
                statuses[host] = http.post("/mcp", content=json.dumps(INITIALIZE), headers=headers).status_code
    assert statuses == {
        "memory.example.lan": 200,
        "memory.example.lan:443": 200,
        "memory.example.lan.evil": 421,
        "evil.example": 421,
    }
