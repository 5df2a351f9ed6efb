"""`store_memories` over stdio: `harmonia-mcp` as a child process and the official client (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from harmonia_mcp.child import call_tool, server_parameters

pytestmark = pytest.mark.anyio


async def test_a_conversation_stored_in_one_call_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "batch.db"
    items = [
        {"message": "I live in Paris.", "speaker": "Caroline", "occurred_at": "2024-01-10T10:00:00+00:00"},
        {"message": "Lovely day, isn't it?", "speaker": "Caroline", "occurred_at": "2024-01-10T10:01:00+00:00"},
        {"message": "I moved to Berlin.", "speaker": "Caroline", "occurred_at": "2024-06-10T10:00:00+00:00"},
        {"message": "", "speaker": "Caroline"},
    ]
    async with Client(server_parameters(db)) as client:
        refused = await client.call_tool("store_memories", {"items": items, "user_id": "caroline"})
        assert refused.is_error
        assert "items[3]: message is empty" in " ".join(getattr(block, "text", "") for block in refused.content)
        stored = await call_tool(client, "store_memories", {"items": items[:3], "user_id": "caroline"})
    assert [len(item["memories"]) for item in stored["items"]] == [1, 0, 1]
    async with Client(server_parameters(db)) as client:
        listed = await call_tool(client, "list_memories", {"user_id": "caroline", "include_inactive": True})
    statuses = {memory["content"]: memory["status"] for memory in listed["memories"]}
    assert statuses == {"Caroline lives in Paris": "superseded", "Caroline moved to Berlin": "active"}
