"""Ids are validated by full match (issue 12.8): "alice\\n" is not alice, nor a new user, through the MCP client."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

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
