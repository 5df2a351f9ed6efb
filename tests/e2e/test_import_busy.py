"""Issue 12 item 3 end to end: `harmonia-mcp import` (a process) never locks a running server's writers out,
and a server that cannot get the write lock says so in a tool error."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import anyio
import pytest
from mcp import Client

from harmonia_mcp import store
from harmonia_mcp.child import call_tool, server_command, server_parameters
from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

ROWS = 30_000


def _export_file(path: Path) -> None:
    row = {
        "content": "",
        "category": "preference",
        "confidence": 0.9,
        "entities": [],
        "tags": [],
        "event_time": None,
        "source_message": "I like tea",
        "speaker": "User",
        "session_id": None,
        "metadata": {},
        "extractor": "rules",
        "status": "active",
        "created_at": "2026-01-01T00:00:00.000000+00:00",
        "updated_at": "2026-01-01T00:00:00.000000+00:00",
    }
    rows = [
        {**row, "memory_id": f"mem_{index:016x}", "content": f"User likes tea number {index}"} for index in range(ROWS)
    ]
    path.write_text(json.dumps({"user_id": "importer", "memories": rows}), encoding="utf-8")


def _count(db_path: Path) -> int:
    try:
        with sqlite3.connect(db_path, timeout=30) as db:
            return int(db.execute("SELECT count(*) FROM memories WHERE user_id = 'importer'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created or not migrated yet


async def test_a_server_keeps_storing_while_another_process_imports(tmp_path: Path) -> None:
    db_path = tmp_path / "shared.db"
    source = tmp_path / "big.json"
    _export_file(source)
    async with Client(server_parameters(db_path)) as client:
        await call_tool(client, "list_memories", {})  # the server has opened (and migrated) the file
        command, arguments = server_command()
        importer = subprocess.Popen([command, *arguments, "import", str(source), "--db", str(db_path)])
        try:
            with anyio.fail_after(300):  # a hang guard, not a speed threshold
                while _count(db_path) == 0:
                    assert importer.poll() is None, "the import ended before its first batch was seen"
                    await anyio.sleep(0.05)
                stored = []
                for number in range(3):
                    result = await call_tool(client, "store_memory", {"message": f"I have a dog called Rex{number}"})
                    stored += [memory["content"] for memory in result["memories"]]
                # Ordering: the stores were acknowledged while the import was still writing.
                still_importing = importer.poll() is None
                status = await anyio.to_thread.run_sync(importer.wait)
        finally:
            if importer.poll() is None:
                importer.kill()
    assert still_importing, "the import finished too soon to show anything; raise ROWS"
    assert status == 0
    assert stored == [f"User has a dog called Rex{number}" for number in range(3)]
    assert _count(db_path) == ROWS


async def test_a_write_that_cannot_get_the_lock_is_a_tool_error_saying_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 50)
    monkeypatch.setattr(store, "BUSY_RETRIES", 2)
    db_path = tmp_path / "m.db"
    settings = Settings(db_path=str(db_path), extractor="rules")
    async with Client(create_server(settings)) as client:
        await client.call_tool("list_memories", {})
        other = sqlite3.connect(db_path, isolation_level=None)  # another process's writer, holding the lock
        other.execute("BEGIN IMMEDIATE")
        try:
            refused = await client.call_tool("store_memory", {"message": "I have a dog called Biggie"})
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert refused.is_error
        text = " ".join(getattr(block, "text", "") for block in refused.content)
        assert "the database is busy" in text and "retry" in text
        stored = await client.call_tool("store_memory", {"message": "I have a dog called Biggie"})
        assert not stored.is_error
