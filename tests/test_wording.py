"""Counts read as English (issue 16.7): "1 memory", not "1 memories"."""

from __future__ import annotations

import pytest
from mcp import Client

pytestmark = pytest.mark.anyio


async def _markdown(client: Client) -> str:
    result = await client.call_tool("export_memories", {"format": "markdown"})
    assert result.structured_content is not None
    data: str = result.structured_content["data"]
    return data


async def test_a_markdown_export_counts_in_the_singular_and_the_plural(client: Client) -> None:
    assert "\n0 memories, exported " in await _markdown(client)
    await client.call_tool("store_memory", {"message": "I have a dog called Biggie"})
    one = await _markdown(client)
    assert "\n1 memory, exported " in one and "1 memories" not in one
    await client.call_tool("store_memory", {"message": "I work at AWS"})
    assert "\n2 memories, exported " in await _markdown(client)
