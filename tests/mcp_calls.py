"""Calling tools through the official mcp client in tests: the structured result, or the tool error's text."""

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
