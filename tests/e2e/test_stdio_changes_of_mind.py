"""End to end over stdio: a conversation with changes of mind (benchmarks/data/conversation_issue10.json)
stored as messages and as caller facts by `harmonia-mcp` as a child process; the current facts answer."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from mcp import Client

from harmonia_mcp.child import ToolCallFailed, call_tool, replay_conversation, server_parameters

pytestmark = pytest.mark.anyio

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "conversation_issue10.json"


async def _first(client: Client, user: str, query: str) -> str:
    found = await call_tool(client, "search_memories", {"user_id": user, "query": query, "limit": 3})
    content: str = found["results"][0]["content"]
    return content


# Sessions are stored in reverse: time order, not call order, must decide which version is current.
async def test_changes_of_mind_stored_out_of_order_leave_the_current_facts_first(tmp_path: Path) -> None:
    conversation = json.loads(DATA.read_text(encoding="utf-8"))
    with anyio.fail_after(240):
        async with Client(server_parameters(tmp_path / "e2e.db")) as client:
            for user, as_facts in (("rules", False), ("caller", True)):
                await replay_conversation(client, user, conversation["sessions"], as_facts=as_facts, reverse=True)
                assert "Stripe" in await _first(client, user, "where does the user work employer job")
                assert "Berlin" in await _first(client, user, "where does the user live city")
                assert "meat" in await _first(client, user, "does the user eat meat")
                assert "not allergic" in await _first(client, user, "is the user allergic to cats")
                listed = await call_tool(client, "list_memories", {"user_id": user, "include_inactive": True})
                statuses = {m["content"]: m["status"] for m in listed["memories"]}
                assert statuses.get("User works as a product designer at Farfetch") == "superseded", statuses
            caller = await call_tool(client, "list_memories", {"user_id": "caller"})
            assert {memory["extractor"] for memory in caller["memories"]} == {"caller"}
            with pytest.raises(ToolCallFailed, match=r"facts\[0\]: category 'hobby' is unknown"):
                await call_tool(client, "store_memory", {"facts": [{"content": "User knits", "category": "hobby"}]})
