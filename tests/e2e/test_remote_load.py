"""End to end over streamable HTTP under load and through crashes: many clients at once, SIGTERM, SIGKILL.

The 20 x 50 test runs on streamable HTTP only (the current MCP transport); SSE shares the same service
and store path (test_remote.py covers it functionally) and doubling the load would double the time.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import anyio
import pytest
from remote_server import RunningServer, call, connect, running, spawn, wait_ready

pytestmark = pytest.mark.anyio

CLIENTS = 20
MEMORIES_PER_CLIENT = 50
WRITERS = 3
# These tests measure loss under load, not the per-token limits (test_limits.py does): each client here sends
# far more than the default 100 requests a minute.
UNLIMITED = {"HARMONIA_RATE_LIMIT_PER_MINUTE": "0"}


def _token(number: int) -> str:
    return f"load-token-{number:04d}-0123456789abcdef"


def _tokens_file(folder: Path, count: int) -> Path:
    path = folder / "tokens"
    path.write_text("".join(f"{_token(number)} user{number}\n" for number in range(count)), encoding="utf-8")
    path.chmod(0o600)
    return path


def _active_contents(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as db:
        return [row[0] for row in db.execute("SELECT content FROM memories WHERE status = 'active'")]


async def test_twenty_clients_storing_and_searching_at_once_lose_nothing(tmp_path: Path) -> None:
    tokens = _tokens_file(tmp_path, CLIENTS)
    errors: list[str] = []
    unseen: list[str] = []

    async def one_client(server: RunningServer, number: int) -> None:
        async with connect(server, _token(number)) as client:
            for index in range(MEMORIES_PER_CLIENT):
                name = f"Pet{number}x{index}"
                stored = await client.call_tool("store_memory", {"message": f"I have a cat called {name}"})
                if stored.is_error:
                    errors.append(str(stored.content))
                    continue
                found = await client.call_tool("search_memories", {"query": name})
                if found.is_error:
                    errors.append(str(found.content))
                elif [hit["content"] for hit in (found.structured_content or {})["results"]] != [
                    f"User has a cat called {name}"
                ]:
                    unseen.append(name)
            listed = await call(client, "list_memories", {"limit": 500})
            if listed["pagination"]["total_count"] != MEMORIES_PER_CLIENT:
                errors.append(f"user{number} lists {listed['pagination']['total_count']} memories")

    # Keyword search: each client checks that its own name finds exactly its one memory (hybrid search would add
    # its other cats by meaning, which tests/test_semantic.py covers).
    env = {"HARMONIA_AUTH_TOKENS_FILE": str(tokens), "HARMONIA_EMBEDDER": "none", **UNLIMITED}
    with running(tmp_path, "streamable-http", env=env) as server:
        with anyio.fail_after(240):
            async with anyio.create_task_group() as group:
                for number in range(CLIENTS):
                    group.start_soon(one_client, server, number)
        log = server.log()

    assert errors == []
    assert unseen == []
    contents = _active_contents(server.db_path)
    expected = {f"User has a cat called Pet{n}x{i}" for n in range(CLIENTS) for i in range(MEMORIES_PER_CLIENT)}
    assert len(contents) == CLIENTS * MEMORIES_PER_CLIENT
    assert set(contents) == expected
    assert "database is locked" not in log


async def _store_until_refused(server: RunningServer, number: int, acknowledged: list[str]) -> None:
    """Store memories one after another until the server stops answering; record each acknowledged one."""
    try:
        async with connect(server, _token(number)) as client:
            index = 0
            while True:
                name = f"Note{number}x{index}"
                result = await client.call_tool("store_memory", {"message": f"I have a cat called {name}"})
                if result.is_error:
                    return
                acknowledged.append(f"User has a cat called {name}")
                index += 1
    except Exception:  # the server went away mid-stream: every later call fails, which is the point
        return


async def _stream_of_stores_then(server: RunningServer, sig: int, after: int) -> tuple[list[str], int]:
    """Run WRITERS clients storing; once `after` stores are acknowledged send `sig`; return them and the exit."""
    acknowledged: list[str] = []
    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for number in range(WRITERS):
                group.start_soon(_store_until_refused, server, number, acknowledged)
            while len(acknowledged) < after:
                await anyio.sleep(0.01)
            server.process.send_signal(sig)
            status = await anyio.to_thread.run_sync(server.stop)
    return list(acknowledged), status


async def _listed_after_restart(tmp_path: Path, db_path: Path, tokens: Path) -> set[str]:
    contents: set[str] = set()
    env = {"HARMONIA_AUTH_TOKENS_FILE": str(tokens), **UNLIMITED}
    with running(tmp_path, "streamable-http", env=env, db_path=db_path) as restarted:
        for number in range(WRITERS):
            async with connect(restarted, _token(number)) as client:
                listed = await call(client, "list_memories", {"limit": 500})
                contents |= {memory["content"] for memory in listed["memories"]}
    return contents


async def test_sigterm_shuts_down_cleanly_without_losing_an_acknowledged_store(tmp_path: Path) -> None:
    tokens = _tokens_file(tmp_path, WRITERS)
    server = spawn(tmp_path, "streamable-http", env={"HARMONIA_AUTH_TOKENS_FILE": str(tokens), **UNLIMITED})
    try:
        wait_ready(server)
        acknowledged, status = await _stream_of_stores_then(server, signal.SIGTERM, after=30)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    log = server.log()
    # uvicorn re-raises the signal after its graceful shutdown, so the exit is "terminated by SIGTERM".
    assert status in (0, -signal.SIGTERM), log
    assert "Traceback" not in log
    # The store was closed: SQLite checkpoints and removes the WAL file when the last connection closes.
    assert not Path(f"{server.db_path}-wal").exists(), log
    assert set(acknowledged) <= set(_active_contents(server.db_path))
    assert set(acknowledged) <= await _listed_after_restart(tmp_path, server.db_path, tokens)


async def test_sigkill_mid_stream_keeps_every_acknowledged_store_and_an_intact_database(tmp_path: Path) -> None:
    tokens = _tokens_file(tmp_path, WRITERS)
    server = spawn(tmp_path, "streamable-http", env={"HARMONIA_AUTH_TOKENS_FILE": str(tokens), **UNLIMITED})
    try:
        wait_ready(server)
        acknowledged, status = await _stream_of_stores_then(server, signal.SIGKILL, after=30)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert status == -signal.SIGKILL
    assert len(acknowledged) >= 30
    assert set(acknowledged) <= await _listed_after_restart(tmp_path, server.db_path, tokens)
    with sqlite3.connect(server.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # FTS5's own check: raises if the full-text index disagrees with the memories table.
        db.execute("INSERT INTO memories_fts(memories_fts) VALUES('integrity-check')")
