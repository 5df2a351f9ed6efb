"""Ids are validated by full match (issue 12.8): "alice\\n" is not alice, nor a new user, through the MCP client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from mcp_calls import exported_memory

from harmonia_mcp.config import Settings
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.server import make_limits
from harmonia_mcp.service import MemoryService
from harmonia_mcp.store import open_store

pytestmark = pytest.mark.anyio


async def _error(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments!r}) was accepted"
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


async def _stored_id(client: Client, user: str) -> str:
    result = await client.call_tool("store_memory", {"message": "I have a dog called Biggie", "user_id": user})
    assert result.structured_content is not None
    memory_id: str = result.structured_content["memories"][0]["memory_id"]
    return memory_id


@pytest.mark.parametrize("user_id", ["alice\n", "alice\r\n", "\nalice", "ali\nce", "alice "])
async def test_a_user_id_with_a_newline_or_space_is_refused_by_every_tool(client: Client, user_id: str) -> None:
    await _stored_id(client, "alice")
    for tool, arguments in (
        ("store_memory", {"message": "I like tea"}),
        ("search_memories", {"query": "dog"}),
        ("list_memories", {}),
        ("export_memories", {}),
    ):
        text = await _error(client, tool, {**arguments, "user_id": user_id})
        assert f"user_id {user_id!r} is invalid" in text
    listed = await client.call_tool("list_memories", {"user_id": "alice"})
    assert listed.structured_content is not None
    assert listed.structured_content["pagination"]["total_count"] == 1  # nothing was stored for "alice\n"


@pytest.mark.parametrize("suffix", ["\n", " ", "0", "\x00"])
async def test_a_memory_id_must_be_exactly_one(client: Client, suffix: str) -> None:
    memory_id = await _stored_id(client, "alice")
    for tool in ("get_memory", "delete_memory", "restore_memory"):
        text = await _error(client, tool, {"memory_id": memory_id + suffix, "user_id": "alice"})
        assert "is not a memory id" in text and "mem_0123456789abcdef" in text
    got = await client.call_tool("get_memory", {"memory_id": memory_id, "user_id": "alice"})
    assert not got.is_error and got.structured_content is not None
    assert got.structured_content["memory"]["status"] == "active"  # the delete above did not happen


@pytest.mark.parametrize("session_id", ["s1\n", "s1\t", " s1", "s\x1b[31m1"])
async def test_a_session_id_with_control_characters_or_surrounding_space_is_refused(
    client: Client, session_id: str
) -> None:
    text = await _error(client, "store_memory", {"message": "I like tea", "session_id": session_id})
    assert "session_id" in text and "control characters" in text
    text = await _error(client, "search_memories", {"query": "tea", "session_id": session_id})
    assert "session_id" in text
    assert not (await client.call_tool("store_memory", {"message": "I like tea", "session_id": "s1"})).is_error


@pytest.mark.parametrize("tag", ["work\n", "work\x00", " work", ""])
async def test_a_tag_filter_must_be_a_tag(client: Client, tag: str) -> None:
    text = await _error(client, "search_memories", {"query": "tea", "tags": [tag]})
    assert "tags must be" in text and "control characters" in text


def _exported(memory_id: str, content: str) -> dict[str, Any]:
    return {**exported_memory(1, content), "memory_id": memory_id}


# Two ids sharing their first 9 hex digits, and one alone: short ids of 10, 10 and 8 digits.
DOG, CAT, CHESS = "mem_3f2a9c0b10000000", "mem_3f2a9c0b1fffffff", "mem_77aa000000000001"


async def _import(settings: Settings, user: str = "default") -> None:
    memories = [
        _exported(DOG, "User has a dog called Biggie"),
        _exported(CAT, "User has a cat called Mochi"),
        _exported(CHESS, "User plays chess with a neighbour"),
    ]
    async with open_store(settings.db_path) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        await service.import_memories(json.dumps({"user_id": user, "memories": memories}))


async def test_recall_shows_memory_numbers_and_every_tool_takes_them(client: Client, settings: Settings) -> None:
    await _import(settings)  # numbered 1, 2, 3 in the order they were stored
    recall = await client.call_tool("recall", {"topic": "dog cat chess"})
    assert recall.structured_content is not None
    text = recall.structured_content["text"]
    assert "Biggie (#1)" in text and "Mochi (#2)" in text and "neighbour (#3)" in text
    assert "mem_" not in text
    assert set(recall.structured_content["memory_ids"]) == {DOG, CAT, CHESS}  # full ids in the structured result
    got = await client.call_tool("get_memory", {"memory_id": "#2"})
    assert got.structured_content is not None and got.structured_content["memory"]["memory_id"] == CAT
    resource = await client.read_resource("memory://default/3")  # a URI cannot hold "#": the digits alone
    assert "chess" in resource.contents[0].text  # type: ignore[union-attr]
    await client.call_tool("pin_memory", {"memory_id": "#3"})
    deleted = await client.call_tool("delete_memory", {"memory_id": "#1"})
    assert not deleted.is_error
    restored = await client.call_tool("restore_memory", {"memory_id": "1"})
    assert restored.structured_content is not None and restored.structured_content["memory"]["memory_id"] == DOG
    listed = await client.call_tool("list_memories", {})
    assert listed.structured_content is not None
    pinned = {memory["memory_id"]: memory["pinned"] for memory in listed.structured_content["memories"]}
    assert pinned == {DOG: False, CAT: False, CHESS: True}


async def test_a_short_id_still_names_its_memory(client: Client, settings: Settings) -> None:
    await _import(settings)
    got = await client.call_tool("get_memory", {"memory_id": "mem_3f2a9c0b1f"})
    assert got.structured_content is not None and got.structured_content["memory"]["memory_id"] == CAT
    resource = await client.read_resource("memory://default/mem_77aa0000")
    assert "chess" in resource.contents[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("number", ["#4", "4", "#0", "#1 ", "#-1", "# 1", "#01"])
async def test_a_memory_number_that_names_none_of_the_callers_memories_is_refused(
    client: Client, settings: Settings, number: str
) -> None:
    await _import(settings, user="alice")
    await _import(settings, user="bob")
    text = await _error(client, "delete_memory", {"memory_id": number, "user_id": "alice"})
    if number in ("#4", "4"):
        assert f"No memory {number!r} for user 'alice'" in text
    else:
        assert "is not a memory id" in text and "#42" in text
    for user in ("alice", "bob"):
        listed = await client.call_tool("list_memories", {"user_id": user})
        assert listed.structured_content is not None
        assert listed.structured_content["pagination"]["total_count"] == 3  # nothing was deleted


async def test_a_memory_number_is_resolved_among_the_callers_memories_only(client: Client, settings: Settings) -> None:
    stored = await client.call_tool("store_memory", {"message": "I have a dog called Biggie", "user_id": "bob"})
    assert stored.structured_content is not None
    await _import(settings, user="alice")
    for user, expected in (("alice", DOG), ("bob", stored.structured_content["memories"][0]["memory_id"])):
        got = await client.call_tool("get_memory", {"memory_id": "#1", "user_id": user})
        assert got.structured_content is not None and got.structured_content["memory"]["memory_id"] == expected
    text = await _error(client, "get_memory", {"memory_id": "#2", "user_id": "bob"})
    assert "No memory '#2' for user 'bob'" in text


async def test_a_short_id_that_names_two_memories_none_or_too_few_digits_is_refused(
    client: Client, settings: Settings
) -> None:
    await _import(settings)
    text = await _error(client, "delete_memory", {"memory_id": "mem_3f2a9c0b"})
    assert "ambiguous" in text and DOG in text and CAT in text
    text = await _error(client, "get_memory", {"memory_id": "mem_3f2a9c0b2"})
    assert "No memory 'mem_3f2a9c0b2'" in text
    text = await _error(client, "update_memory", {"memory_id": "mem_77aa000", "content": "User plays go"})
    assert "is not a memory id" in text and "8 or more hex digits" in text
    listed = await client.call_tool("list_memories", {})
    assert listed.structured_content is not None
    assert listed.structured_content["pagination"]["total_count"] == 3  # nothing was deleted or changed


async def test_a_short_id_is_resolved_among_the_callers_memories_only(client: Client, settings: Settings) -> None:
    await _import(settings, user="alice")
    text = await _error(client, "get_memory", {"memory_id": "mem_77aa0000", "user_id": "bob"})
    assert "No memory 'mem_77aa0000' for user 'bob'" in text
    got = await client.call_tool("get_memory", {"memory_id": "mem_77aa0000", "user_id": "alice"})
    assert got.structured_content is not None and got.structured_content["memory"]["memory_id"] == CHESS
