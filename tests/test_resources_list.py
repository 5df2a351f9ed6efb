"""resources/list names each user's `recent` resource (issue 16.5); without tokens, every user with memories."""

from __future__ import annotations

import pytest
from mcp import Client

pytestmark = pytest.mark.anyio


async def test_resources_list_names_the_default_user_and_every_user_with_memories(client: Client) -> None:
    before = [str(resource.uri) for resource in (await client.list_resources()).resources]
    assert before == ["memory://default/recent"]  # something to show before the first memory
    for user in ("bob", "alice"):
        stored = await client.call_tool("store_memory", {"message": f"I met {user.title()}'s sister", "user_id": user})
        assert not stored.is_error
    listed = (await client.list_resources()).resources
    assert [str(resource.uri) for resource in listed] == [
        "memory://default/recent",
        "memory://alice/recent",
        "memory://bob/recent",
    ]
    text = (await client.read_resource(str(listed[1].uri))).contents[0]
    assert "Alice" in text.text  # type: ignore[union-attr]


async def test_a_user_whose_memories_are_all_deleted_is_not_listed(client: Client) -> None:
    stored = await client.call_tool("store_memory", {"message": "I have a dog called Biggie", "user_id": "carol"})
    assert stored.structured_content is not None
    memory_id = stored.structured_content["memories"][0]["memory_id"]
    assert not (await client.call_tool("delete_memory", {"memory_id": memory_id, "user_id": "carol"})).is_error
    uris = [str(resource.uri) for resource in (await client.list_resources()).resources]
    assert "memory://carol/recent" not in uris
