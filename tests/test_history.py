"""get_memory's history explains itself (issue 16.6): a superseded entry names what replaced it."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

pytestmark = pytest.mark.anyio


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error and result.structured_content is not None, result.content
    return result.structured_content


async def _store(client: Client, message: str) -> dict[str, Any]:
    memory: dict[str, Any] = (await _call(client, "store_memory", {"message": message}))["memories"][0]
    return memory


async def _superseded_entries(client: Client, memory_id: str) -> list[dict[str, Any]]:
    history = (await _call(client, "get_memory", {"memory_id": memory_id}))["update_history"]
    return [entry for entry in history if entry["action"] == "superseded"]


async def test_a_superseded_entry_names_its_successor_by_content_and_id(client: Client) -> None:
    old = await _store(client, "Biggie loves his stuffed Costco chicken")
    new = await _store(client, "Biggie now loves his yellow ball")
    assert new["supersedes"] == [old["memory_id"]]
    [entry] = await _superseded_entries(client, old["memory_id"])
    assert entry["old_content"] == "Biggie loves his stuffed Costco chicken"
    assert entry["new_content"] == "Biggie now loves his yellow ball"
    assert entry["successor_id"] == new["memory_id"]
    created = (await _call(client, "get_memory", {"memory_id": old["memory_id"]}))["update_history"][0]
    assert created["action"] == "created" and created["successor_id"] is None


async def test_each_version_in_a_chain_names_the_one_after_it(client: Client) -> None:
    first = await _store(client, "I work at TechCorp")
    second = await _store(client, "I now work at NewCorp")
    third = await _store(client, "I now work at ThirdCorp")
    assert second["supersedes"] == [first["memory_id"]] and third["supersedes"] == [second["memory_id"]]
    [of_first] = await _superseded_entries(client, first["memory_id"])
    [of_second] = await _superseded_entries(client, second["memory_id"])
    assert (of_first["new_content"], of_first["successor_id"]) == (second["content"], second["memory_id"])
    assert (of_second["new_content"], of_second["successor_id"]) == (third["content"], third["memory_id"])
    assert of_second["old_content"] == "User now works at NewCorp"
