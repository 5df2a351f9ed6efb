"""End to end over stdio: `harmonia-mcp` as a child process forgets the dog in every answer, then purges
it from the file while it keeps running (docs/forgetting.md)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client

from harmonia_mcp.child import call_tool, server_parameters

pytestmark = pytest.mark.anyio

JASON = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."


def _file_bytes(db: Path) -> bytes:
    return b"".join(path.read_bytes() for path in (db, Path(f"{db}-wal")) if path.exists())


async def test_delete_hides_biggie_and_purge_removes_it_from_the_running_servers_file(tmp_path: Path) -> None:
    db = tmp_path / "forget.db"
    with anyio.fail_after(60):
        async with Client(server_parameters(db, {"HARMONIA_EXTRACTOR": "rules"})) as client:
            stored = await call_tool(client, "store_memory", {"message": JASON})
            dog = next(m["memory_id"] for m in stored["memories"] if "Biggie" in m["content"])
            await call_tool(client, "delete_memory", {"memory_id": dog})
            hits = await call_tool(client, "search_memories", {"query": "Biggie", "include_metadata": True})
            assert hits["results"] == []
            exported = await call_tool(client, "export_memories", {"format": "json"})
            assert "Biggie" not in exported["data"] and "Jason Thompson" in exported["data"]

            await call_tool(client, "restore_memory", {"memory_id": dog})
            assert (await call_tool(client, "search_memories", {"query": "Biggie"}))["results"]

            await call_tool(client, "delete_memory", {"memory_id": dog, "purge": True})
            # Read while the server still holds the file open: the purge checkpointed its WAL itself.
            data = _file_bytes(db)
            assert b"Biggie" not in data and b"biggi" not in data
            assert b"Jason Thompson" in data
