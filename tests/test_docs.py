"""The docs cover what the server exposes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


async def test_every_tool_and_argument_is_documented(client: Client) -> None:
    text = (ROOT / "docs" / "tools.md").read_text(encoding="utf-8")
    for tool in (await client.list_tools()).tools:
        assert f"## `{tool.name}`" in text, f"docs/tools.md has no section for {tool.name}"
        section = text.split(f"## `{tool.name}`", 1)[1].split("\n## ", 1)[0]
        for argument in tool.input_schema.get("properties", {}):
            assert f"`{argument}`" in section or f"`{argument}`" in text.split("## `", 1)[0], (
                f"docs/tools.md does not describe {tool.name}'s argument {argument}"
            )


async def test_every_resource_template_is_documented(client: Client) -> None:
    text = (ROOT / "docs" / "tools.md").read_text(encoding="utf-8")
    for template in (await client.list_resource_templates()).resource_templates:
        assert f"`{template.uri_template}`" in text


def test_example_claude_desktop_config_starts_the_console_script() -> None:
    import json

    config = json.loads((ROOT / "claude_desktop_config.example.json").read_text(encoding="utf-8"))
    server = config["mcpServers"]["harmonia"]
    assert server["command"].endswith("/harmonia-mcp")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert json.dumps(config, indent=2) in readme
