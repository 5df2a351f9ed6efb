"""The MCP surface, in memory: `mcp.client.Client(server)` against `create_server`."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent, TextResourceContents

pytestmark = pytest.mark.anyio

JASON = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."
FIVE_TOOLS = {"store_memory", "search_memories", "list_memories", "delete_memory", "export_memories"}


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _error(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert isinstance(result.content[0], TextContent)
    return result.content[0].text


async def test_tools_list_has_the_five_tools_with_schemas_and_annotations(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert FIVE_TOOLS <= set(tools)
    for name in FIVE_TOOLS:
        assert tools[name].output_schema is not None, name
        assert tools[name].description, name
        assert tools[name].annotations is not None, name
    assert tools["search_memories"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert tools["delete_memory"].annotations.destructive_hint is True  # type: ignore[union-attr]
    assert tools["store_memory"].annotations.read_only_hint is False  # type: ignore[union-attr]
    # message or facts (issue 10): neither is required by the schema; the service asks for one of them.
    store_schema = tools["store_memory"].input_schema
    assert {"message", "facts"} <= set(store_schema["properties"])
    assert "message" not in store_schema.get("required", [])


async def test_store_memory_extracts_the_three_jason_facts(client: Client) -> None:
    stored = await _call(client, "store_memory", {"message": JASON})
    memories = stored["memories"]
    assert [(m["content"], m["category"]) for m in memories] == [
        ("User's name is Jason Thompson", "personal"),
        ("User works as a software engineer at AWS", "work"),
        ("User has a dog called Biggie", "relationship"),
    ]
    assert {m["action"] for m in memories} == {"created"}
    assert {m["extractor"] for m in memories} == {"rules"}
    assert all(m["memory_id"].startswith("mem_") for m in memories)


async def test_small_talk_stores_nothing_and_says_so(client: Client) -> None:
    stored = await _call(client, "store_memory", {"message": "Thanks!"})
    assert stored["memories"] == []
    assert stored["warnings"]
    listed = await _call(client, "list_memories", {})
    assert listed["pagination"]["total_count"] == 0


async def test_storing_the_same_fact_twice_skips_the_second(client: Client) -> None:
    first = await _call(client, "store_memory", {"message": "I have a dog called Biggie."})
    second = await _call(client, "store_memory", {"message": "I have a dog called Biggie."})
    assert second["memories"][0]["action"] == "skipped"
    assert second["memories"][0]["memory_id"] == first["memories"][0]["memory_id"]
    both = await _call(
        client, "store_memory", {"message": "I have a dog called Biggie.", "resolution_strategy": "keep_both"}
    )
    assert both["memories"][0]["action"] == "created"
    assert (await _call(client, "list_memories", {}))["pagination"]["total_count"] == 2


async def test_speaker_and_occurred_at_shape_the_memory(client: Client) -> None:
    stored = await _call(
        client,
        "store_memory",
        {
            "message": "I have a dentist appointment tomorrow at 2pm.",
            "speaker": "Caroline",
            "occurred_at": "2024-08-19T10:00:00-04:00",
        },
    )
    memory = stored["memories"][0]
    assert memory["content"].startswith("Caroline has a dentist appointment")
    assert memory["event_time"].startswith("2024-08-20T14:00:00")
    assert memory["event_time"].endswith("-04:00")


async def test_metadata_comes_back_unchanged_in_search_list_and_export(client: Client) -> None:
    metadata = {"dia_id": "D1:3", "source": {"app": "test", "n": [1, 2.5, None, True]}, "ünï": "cødé"}
    stored = await _call(client, "store_memory", {"message": "I play the cello every Sunday.", "metadata": metadata})
    assert stored["memories"][0]["metadata"] == metadata
    hits = await _call(client, "search_memories", {"query": "cello", "include_metadata": True})
    assert hits["results"][0]["metadata"] == metadata
    plain = await _call(client, "search_memories", {"query": "cello"})
    assert plain["results"][0].get("metadata") is None
    listed = await _call(client, "list_memories", {})
    assert listed["memories"][0]["metadata"] == metadata
    exported = await _call(client, "export_memories", {"format": "json"})
    assert json.loads(exported["data"])["memories"][0]["metadata"] == metadata
    rows = list(csv.DictReader(io.StringIO((await _call(client, "export_memories", {"format": "csv"}))["data"])))
    assert json.loads(rows[0]["metadata"]) == metadata


async def test_search_finds_the_matching_memory_first_with_highlights(client: Client) -> None:
    await _call(client, "store_memory", {"message": JASON})
    await _call(client, "store_memory", {"message": "I love hiking in the mountains."})
    found = await _call(client, "search_memories", {"query": "What is the dog called?"})
    top = found["results"][0]
    assert top["content"] == "User has a dog called Biggie"
    assert 0 < top["relevance_score"] <= 1
    assert "[dog]" in top["highlights"][0]
    scores = [hit["relevance_score"] for hit in found["results"]]
    assert scores == sorted(scores, reverse=True)
    assert found["pagination"]["total_count"] == len(found["results"])


async def test_search_star_lists_everything_the_filters_admit(client: Client) -> None:
    await _call(client, "store_memory", {"message": JASON})
    everything = await _call(client, "search_memories", {"query": "*"})
    work = await _call(client, "search_memories", {"query": "*", "category": "work"})
    assert everything["pagination"]["total_count"] == 3
    assert [hit["content"] for hit in work["results"]] == ["User works as a software engineer at AWS"]


async def test_search_and_list_paginate_exactly(client: Client) -> None:
    for number in range(12):
        await _call(client, "store_memory", {"message": f"I collected stamp number {number} from Peru."})
    seen: list[str] = []
    offset = 0
    while True:
        page = await _call(client, "search_memories", {"query": "stamp", "limit": 5, "offset": offset})
        seen += [hit["memory_id"] for hit in page["results"]]
        assert page["pagination"]["total_count"] == 12
        assert page["pagination"]["has_more"] == (offset + len(page["results"]) < 12)
        if not page["pagination"]["has_more"]:
            break
        offset += 5
    assert len(seen) == len(set(seen)) == 12
    last = await _call(client, "list_memories", {"limit": 5, "offset": 10})
    assert len(last["memories"]) == 2 and last["pagination"]["has_more"] is False


async def test_users_are_isolated_across_every_tool(client: Client) -> None:
    alice = await _call(client, "store_memory", {"message": "I have a parrot called Rio.", "user_id": "alice"})
    await _call(client, "store_memory", {"message": "I have a hamster called Nibbles.", "user_id": "bob"})
    bob_search = await _call(client, "search_memories", {"query": "parrot Rio", "user_id": "bob"})
    assert bob_search["results"] == []
    bob_export = await _call(client, "export_memories", {"user_id": "bob", "format": "text"})
    assert "Rio" not in bob_export["data"] and "Nibbles" in bob_export["data"]
    alice_id = alice["memories"][0]["memory_id"]
    message = await _error(client, "delete_memory", {"memory_id": alice_id, "user_id": "bob"})
    assert alice_id in message
    assert (await _call(client, "list_memories", {"user_id": "alice"}))["pagination"]["total_count"] == 1


async def test_delete_is_soft_and_a_second_delete_is_a_clear_error(client: Client) -> None:
    stored = await _call(client, "store_memory", {"message": "I like green tea."})
    memory_id = stored["memories"][0]["memory_id"]
    assert await _call(client, "delete_memory", {"memory_id": memory_id}) == {
        "memory_id": memory_id,
        "deleted": True,
        "purged": False,
    }
    assert (await _call(client, "search_memories", {"query": "tea"}))["results"] == []
    assert "already deleted" in await _error(client, "delete_memory", {"memory_id": memory_id})
    inactive = await _call(client, "list_memories", {"include_inactive": True})
    assert [(m["memory_id"], m["status"]) for m in inactive["memories"]] == [(memory_id, "deleted")]


async def test_every_export_format_carries_the_memories(client: Client) -> None:
    await _call(client, "store_memory", {"message": JASON})
    for fmt in ("json", "csv", "markdown", "text"):
        exported = await _call(client, "export_memories", {"format": fmt})
        assert exported["format"] == fmt and exported["memory_count"] == 3
        assert "Jason Thompson" in exported["data"], fmt
    limited = await _call(client, "export_memories", {"format": "json", "max_memories": 2})
    assert limited["memory_count"] == 2
    work = await _call(client, "export_memories", {"format": "text", "category": "work"})
    assert work["data"] == "[work] User works as a software engineer at AWS\n"


async def test_memory_resources_read_one_memory_and_the_recent_list(client: Client) -> None:
    stored = await _call(client, "store_memory", {"message": JASON, "user_id": "alice"})
    memory_id = stored["memories"][2]["memory_id"]
    templates = {template.uri_template for template in (await client.list_resource_templates()).resource_templates}
    assert {"memory://{user_id}/{memory_id}", "memory://{user_id}/recent"} <= templates
    one = (await client.read_resource(f"memory://alice/{memory_id}")).contents[0]
    assert isinstance(one, TextResourceContents)
    assert json.loads(one.text)["content"] == "User has a dog called Biggie"
    recent = (await client.read_resource("memory://alice/recent")).contents[0]
    assert isinstance(recent, TextResourceContents)
    assert recent.text.count("\n- ") == 3 and "Jason Thompson" in recent.text
    with pytest.raises(MCPError):
        await client.read_resource(f"memory://bob/{memory_id}")


BAD_INPUT = [
    ("store_memory", {"message": ""}, "empty"),
    ("store_memory", {"message": "   \n "}, "empty"),
    ("store_memory", {"message": "I like tea. " * 3000}, "limit"),
    ("store_memory", {"message": "I like tea.", "user_id": "not a valid id!"}, "user_id"),
    ("store_memory", {"message": "I like tea.", "user_id": "x" * 129}, "user_id"),
    ("store_memory", {"message": "I like tea.", "occurred_at": "yesterday-ish"}, "occurred_at"),
    ("store_memory", {"message": "I like tea.", "speaker": ""}, "speaker"),
    ("store_memory", {"message": "I like tea.", "resolution_strategy": "overwrite"}, "resolution_strategy"),
    ("delete_memory", {"memory_id": "mem_0000000000000000"}, "mem_0000000000000000"),
    ("delete_memory", {"memory_id": "nonsense"}, "nonsense"),
    ("export_memories", {"format": "xml"}, "format"),
    ("search_memories", {"query": ""}, "empty"),
    ("search_memories", {"query": '" * - ( )'}, "no word"),
    ("search_memories", {"query": "tea", "from_date": "31/12/2024"}, "from_date"),
    ("search_memories", {"query": "tea", "from_date": "2025-01-02", "to_date": "2025-01-01"}, "before"),
    ("search_memories", {"query": "tea", "limit": 0}, "limit"),
    ("list_memories", {"category": "gossip"}, "category"),
]


@pytest.mark.parametrize(("tool", "arguments", "expected"), BAD_INPUT)
async def test_bad_input_is_a_clear_tool_error_and_nothing_is_lost(
    client: Client, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    await _call(client, "store_memory", {"message": JASON})
    message = await _error(client, tool, arguments)
    assert expected.lower() in message.lower(), message
    after = await _call(client, "search_memories", {"query": "Biggie"})
    assert after["results"][0]["content"] == "User has a dog called Biggie"
    assert (await _call(client, "list_memories", {}))["pagination"]["total_count"] == 3


@pytest.mark.parametrize("query", ['"', "NEAR(", "AND OR -", "dog*", 'Biggie" OR "x', "col:dog", "((("])
async def test_fts5_syntax_in_a_query_is_searched_literally(client: Client, query: str) -> None:
    await _call(client, "store_memory", {"message": JASON})
    result = await client.call_tool("search_memories", {"query": query})
    if result.is_error:
        assert isinstance(result.content[0], TextContent)
        assert "no word" in result.content[0].text
    else:
        assert result.structured_content is not None
        assert result.structured_content["pagination"]["total_count"] >= 0
    # The message's other memories match through their indexed source message, below the one that says it.
    found = await _call(client, "search_memories", {"query": "dog"})
    assert found["results"][0]["content"] == "User has a dog called Biggie"
    assert found["pagination"]["total_count"] == 3


async def test_a_prefix_query_matches_word_starts(client: Client) -> None:
    await _call(client, "store_memory", {"message": JASON})
    found = await _call(client, "search_memories", {"query": "Bigg*"})
    assert found["results"][0]["content"] == "User has a dog called Biggie"
    assert found["results"][0]["highlights"][0] == "User has a dog called [Biggie]"
