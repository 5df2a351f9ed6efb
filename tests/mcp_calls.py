"""Test helpers: calling tools through the official mcp client (the structured result, or the tool error's
text), and memories as an export holds them."""

from __future__ import annotations

from typing import Any

from mcp import Client
from mcp.types import TextContent


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The structured result of a call that must succeed."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    """The message of a call that must be a tool error."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert isinstance(result.content[0], TextContent)
    return result.content[0].text


def exported_memory(number: int, content: str, source_message: str | None = None) -> dict[str, Any]:
    """One memory as `export_memories(format="json")` writes it, with the id `mem_` + `number` in 16 digits."""
    return {
        "memory_id": f"mem_{number:016d}",
        "content": content,
        "category": "personal",
        "confidence": 0.9,
        "entities": [],
        "tags": [],
        "event_time": None,
        "source_message": source_message,
        "speaker": "User",
        "session_id": None,
        "metadata": {},
        "extractor": "rules",
        "status": "active",
        "created_at": "2026-01-01T00:00:00.000000+00:00",
        "updated_at": "2026-01-01T00:00:00.000000+00:00",
    }
