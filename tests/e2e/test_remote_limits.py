"""End to end over HTTP: the per-token rate limit answers 429 to the caller over it and no one else (issue 12)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from fake_ollama import FakeOllama
from mcp.types import CallToolResult
from remote_server import RunningServer, call, connect, running

pytestmark = pytest.mark.anyio

ALICE = "alice-0123456789-token-AAAAAAAA"
BOB = "bob-0123456789-token-BBBBBBBBBBBB"
RATE = 6
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}


def _tokens_file(folder: Path) -> Path:
    """A tokens file for alice and bob, readable by its owner only."""
    tokens = folder / "tokens"
    tokens.write_text(f"{ALICE} alice\n{BOB} bob\n", encoding="utf-8")
    tokens.chmod(0o600)
    return tokens


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    tokens = _tokens_file(tmp_path)
    env = {"HARMONIA_AUTH_TOKENS_FILE": str(tokens), "HARMONIA_RATE_LIMIT_PER_MINUTE": str(RATE)}
    with running(tmp_path, "streamable-http", env=env) as started:
        yield started


async def test_a_token_over_its_rate_gets_429_and_other_tokens_are_served(server: RunningServer) -> None:
    statuses: list[int] = []
    async with httpx2.AsyncClient(base_url=server.base, timeout=30.0) as http:
        for _ in range(RATE + 2):
            response = await http.post(
                "/mcp", content=json.dumps(INITIALIZE), headers={**HEADERS, "Authorization": f"Bearer {ALICE}"}
            )
            statuses.append(response.status_code)
        assert statuses == [200] * RATE + [429, 429]
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert "rate limit: more than 6 requests in the last minute" in response.json()["error"]["message"]
        health = await http.get("/healthz")
        assert health.status_code == 200  # never counted: supervisors poll it
    async with connect(server, BOB) as bob:  # initialize, initialized, then the call: 3 of bob's 6
        listed = await call(bob, "list_memories", {})
        assert listed["pagination"]["total_count"] == 0


async def _open_session(http: httpx2.AsyncClient, token: str) -> httpx2.Response:
    return await http.post(
        "/mcp", content=json.dumps(INITIALIZE), headers={**HEADERS, "Authorization": f"Bearer {token}"}
    )


def _two_sessions_each(tmp_path: Path, *, idle_seconds: str) -> dict[str, str]:
    """Server environment: tokens for alice and bob, no rate limit, 2 sessions per caller, this idle timeout."""
    tokens = _tokens_file(tmp_path)
    return {
        "HARMONIA_AUTH_TOKENS_FILE": str(tokens),
        "HARMONIA_RATE_LIMIT_PER_MINUTE": "0",
        "HARMONIA_MAX_SESSIONS_PER_CALLER": "2",
        "HARMONIA_SESSION_IDLE_SECONDS": idle_seconds,
    }


async def test_one_token_cannot_hold_every_session_and_idle_ones_are_reaped(tmp_path: Path) -> None:
    # Issue 12 item 2: the SDK's cap is for all callers together; ours is per token, and idle sessions end.
    env = _two_sessions_each(tmp_path, idle_seconds="2")
    with running(tmp_path, "streamable-http", env=env) as server:
        async with httpx2.AsyncClient(base_url=server.base, timeout=30.0) as http:
            opened = [await _open_session(http, ALICE) for _ in range(2)]
            assert [response.status_code for response in opened] == [200, 200]
            refused = await _open_session(http, ALICE)
            assert refused.status_code == 429
            assert "too many open sessions" in refused.json()["error"]["message"]
            assert (await _open_session(http, BOB)).status_code == 200  # bob is not locked out
            # Once alice's sessions have been idle past the timeout they are closed and she may open new ones.
            with anyio.fail_after(60):  # a hang guard: the reaping itself is the SDK's timer
                while (await _open_session(http, ALICE)).status_code == 429:
                    await anyio.sleep(0.5)
            gone = await http.post(
                "/mcp",
                content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
                headers={
                    **HEADERS,
                    "Authorization": f"Bearer {ALICE}",
                    "mcp-session-id": opened[0].headers["mcp-session-id"],
                },
            )
            assert gone.status_code == 404


@asynccontextmanager
async def _sse_stream(
    http: httpx2.AsyncClient, token: str
) -> AsyncIterator[tuple[httpx2.Response, str, AsyncIterator[str]]]:
    """An open SSE stream, what the server sent first on it ("" when it was refused), and the rest of it.

    The rest must be read from the same iterator: a dropped one closes the stream when collected.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.stream("GET", "/sse", headers=headers) as response:
        first = ""
        rest = response.aiter_text()
        if response.status_code == 200:
            async for chunk in rest:
                first += chunk
                if "session_id=" in first:
                    break
        else:
            await response.aread()
        yield response, first, rest


async def test_sse_connections_are_capped_per_token_and_idle_ones_are_closed(tmp_path: Path) -> None:
    # Issue 12 item 2 for SSE: the SDK's SSE app has no cap at all; ours is per token, and idle streams end.
    env = _two_sessions_each(tmp_path, idle_seconds="3")
    with running(tmp_path, "sse", env=env) as server:
        async with httpx2.AsyncClient(base_url=server.base, timeout=60.0) as http, AsyncExitStack() as streams:
            first, _, first_rest = await streams.enter_async_context(_sse_stream(http, ALICE))
            second, _, _ = await streams.enter_async_context(_sse_stream(http, ALICE))
            assert (first.status_code, second.status_code) == (200, 200)
            async with _sse_stream(http, ALICE) as (refused, _, _):
                assert refused.status_code == 429
                assert "too many open SSE connections" in refused.json()["error"]["message"]
            async with _sse_stream(http, BOB) as (bob, hello, _):
                assert bob.status_code == 200 and "session_id=" in hello  # bob is not locked out
            # Idle past the timeout, alice's streams are ended by the server (the body completes) ...
            with anyio.fail_after(60):  # a hang guard: the reaping is the server's timer
                async for _ in first_rest:
                    pass
            # ... and she may open new ones.
            async with _sse_stream(http, ALICE) as (again, hello, _):
                assert again.status_code == 200 and "session_id=" in hello


async def test_an_sse_session_in_use_is_not_reaped_and_unauthenticated_clients_share_one_cap(tmp_path: Path) -> None:
    # Without tokens (loopback) every client is one caller: the cap is per server. A client that keeps
    # calling tools keeps its stream, however long it lasts.
    env = {
        "HARMONIA_RATE_LIMIT_PER_MINUTE": "0",
        "HARMONIA_MAX_SESSIONS_PER_CALLER": "1",
        "HARMONIA_SESSION_IDLE_SECONDS": "2",
    }
    with running(tmp_path, "sse", env=env) as server:
        async with connect(server, None) as client:
            async with httpx2.AsyncClient(base_url=server.base, timeout=30.0) as http:
                async with _sse_stream(http, "") as (refused, _, _):
                    assert refused.status_code == 429
            for number in range(6):  # about 3 idle timeouts in all, each call well within one
                await call(client, "store_memory", {"message": f"I have {number + 2} plants", "user_id": "u"})
                await anyio.sleep(0.5)
            listed = await call(client, "list_memories", {"user_id": "u"})
            assert listed["pagination"]["total_count"] >= 1


async def test_without_tokens_every_streamable_http_client_shares_one_session_cap(tmp_path: Path) -> None:
    # Issue 12 item 2: unauthenticated loopback clients are one caller, so the cap is per server.
    env = {"HARMONIA_RATE_LIMIT_PER_MINUTE": "0", "HARMONIA_MAX_SESSIONS_PER_CALLER": "2"}
    with running(tmp_path, "streamable-http", env=env) as server:
        statuses = []
        for _ in range(3):  # three clients, each with its own connection
            async with httpx2.AsyncClient(base_url=server.base, timeout=30.0) as http:
                response = await http.post("/mcp", content=json.dumps(INITIALIZE), headers=HEADERS)
                statuses.append(response.status_code)
        assert statuses == [200, 200, 429]
        assert "too many open sessions: this caller already has 2" in response.json()["error"]["message"]


async def test_a_token_past_its_concurrency_cap_is_refused_while_other_tokens_are_served(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    """Over HTTP with tokens: one of alice's calls runs (held inside the model), 8 wait their turn, the tenth is
    refused with the limit's name; bob is served meanwhile; once the model answers, all nine are stored."""
    env = {
        "HARMONIA_AUTH_TOKENS_FILE": str(_tokens_file(tmp_path)),
        "HARMONIA_MAX_CONCURRENT_REQUESTS": "1",
        "HARMONIA_EXTRACTOR": "ollama",
        "HARMONIA_EXTRACTION": "sync",
        "OLLAMA_HOST": fake_ollama.url,
        "HARMONIA_OLLAMA_MODEL": "llama3.2:3b",
        "HARMONIA_OLLAMA_TIMEOUT_SECONDS": "120",
    }
    fake_ollama.delay = 120.0  # every extraction is held in the model until `release`
    results: list[CallToolResult] = []
    with running(tmp_path, "streamable-http", env=env) as server:
        async with connect(server, ALICE) as alice, connect(server, BOB) as bob:

            async def store(number: int) -> None:
                results.append(await alice.call_tool("store_memory", {"message": f"I have {number} houseplants."}))

            async with anyio.create_task_group() as group:
                for number in range(10):
                    group.start_soon(store, number)
                with anyio.fail_after(60):  # the refusal, and the one running call reaching the model
                    while not results or fake_ollama.in_flight < 1:
                        await anyio.sleep(0.05)
                # The only answer so far is the refusal: the other nine are held in the model or queued behind it.
                assert len(results) == 1 and results[0].is_error, results
                assert fake_ollama.in_flight == 1
                with anyio.fail_after(30):  # not behind alice's queue: the cap is per token
                    listed = await call(bob, "list_memories", {})
                assert listed["pagination"]["total_count"] == 0
                fake_ollama.release()
    refusal = results[0].content[0].text  # type: ignore[union-attr]
    assert "too many requests at once: 1 of this caller's requests are running and 8 waiting" in refusal
    assert "HARMONIA_MAX_CONCURRENT_REQUESTS" in refusal
    stored = results[1:]
    assert len(stored) == 9 and not any(result.is_error for result in stored)
    assert fake_ollama.most_in_flight == 1  # alice's calls took turns


async def test_an_sse_call_that_outlasts_the_idle_time_keeps_its_stream(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    """A stream that owes a reply is in use: a store held 3 s in the model, with streams reaped after 1 s idle,
    still answers on its stream; once answered, an idle stream is reaped as before."""
    env = {
        "HARMONIA_RATE_LIMIT_PER_MINUTE": "0",
        "HARMONIA_SESSION_IDLE_SECONDS": "1",
        "HARMONIA_EXTRACTOR": "ollama",
        "HARMONIA_EXTRACTION": "sync",
        "OLLAMA_HOST": fake_ollama.url,
        "HARMONIA_OLLAMA_MODEL": "llama3.2:3b",
        "HARMONIA_OLLAMA_TIMEOUT_SECONDS": "60",
    }
    fake_ollama.delay = 3.0
    with running(tmp_path, "sse", env=env) as server:
        async with connect(server, None) as client:
            with anyio.fail_after(60):
                stored = await call(client, "store_memory", {"message": "I have a dog called Biggie.", "user_id": "u"})
        assert stored["memories"], stored
        assert fake_ollama.most_in_flight == 1  # the call did reach the model and wait there
