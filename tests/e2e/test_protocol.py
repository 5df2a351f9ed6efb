"""Protocol currency: `harmonia-mcp` as a child process speaks the oldest MCP revision the SDK negotiates
(2024-11-05, by the initialize handshake) and the newest (2026-07-28, stateless, no handshake)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from mcp import Client
from mcp.types import TextContent
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_PROTOCOL_VERSION, OLDEST_SUPPORTED_VERSION

from harmonia_mcp.child import call_tool, server_parameters

pytestmark = pytest.mark.anyio


def test_the_documented_revisions_are_the_ones_the_sdk_speaks() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "remote.md").read_text(encoding="utf-8")
    for revision in (*HANDSHAKE_PROTOCOL_VERSIONS, LATEST_PROTOCOL_VERSION):
        assert f"`{revision}`" in text, revision
    assert (OLDEST_SUPPORTED_VERSION, LATEST_PROTOCOL_VERSION) == ("2024-11-05", "2026-07-28")


async def _exchange(process: Process, message: dict[str, Any], buffer: bytearray) -> dict[str, Any]:
    assert process.stdin is not None and process.stdout is not None
    await process.stdin.send(json.dumps(message).encode() + b"\n")
    with anyio.fail_after(30):
        while True:
            while b"\n" not in buffer:
                buffer += await process.stdout.receive()
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            reply: dict[str, Any] = json.loads(line)
            if reply.get("id") == message["id"]:
                return reply


async def test_a_client_of_the_oldest_revision_gets_a_working_session(tmp_path: Path) -> None:
    parameters = server_parameters(tmp_path / "old.db")
    async with await anyio.open_process([parameters.command, *parameters.args], env=parameters.env) as process:
        assert process.stdin is not None
        buffer = bytearray()
        hello = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2024-11-05",
                "capabilities": {},
                "clientInfo": {"name": "old", "version": "1"},
            },
        }
        initialized = await _exchange(process, hello, buffer)
        assert initialized["result"]["protocolVersion"] == "2024-11-05"
        assert {"tools", "resources", "prompts"} <= set(initialized["result"]["capabilities"])
        await process.stdin.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        tools = await _exchange(process, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, buffer)
        assert {"store_memory", "recall", "upcoming_events"} <= {tool["name"] for tool in tools["result"]["tools"]}
        call = {"name": "store_memory", "arguments": {"message": "I have a dog called Biggie."}}
        stored = await _exchange(process, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": call}, buffer)
        assert stored["result"]["structuredContent"]["memories"][0]["content"] == "User has a dog called Biggie"
        recall = {"name": "recall", "arguments": {"topic": "dog"}}
        found = await _exchange(process, {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": recall}, buffer)
        assert "User has a dog called Biggie" in found["result"]["structuredContent"]["text"]
        prompt = {"name": "recall", "arguments": {"topic": "dog"}}
        got = await _exchange(process, {"jsonrpc": "2.0", "id": 5, "method": "prompts/get", "params": prompt}, buffer)
        assert "User has a dog called Biggie" in got["result"]["messages"][0]["content"]["text"]
        await process.stdin.aclose()


@pytest.mark.parametrize(("mode", "revision"), [("2026-07-28", "2026-07-28"), ("legacy", "2025-11-25")])
async def test_the_newest_stateless_and_the_newest_handshake_revision_give_a_working_session(
    tmp_path: Path, mode: Any, revision: str
) -> None:
    async with Client(server_parameters(tmp_path / "new.db"), mode=mode) as client:
        assert client.protocol_version == revision
        stored = await call_tool(client, "store_memory", {"message": "I have a dog called Biggie."})
        recalled = await call_tool(client, "recall", {"topic": "dog"})
        assert recalled["memory_ids"] == [stored["memories"][0]["memory_id"]]
        prompt = await client.get_prompt("recall", {"topic": "dog"})
        assert isinstance(prompt.messages[0].content, TextContent)
        assert "User has a dog called Biggie" in prompt.messages[0].content.text
        profile = await client.read_resource("memory://default/profile")
        assert "Biggie" in str(profile.contents[0])


def test_serve_help_marks_sse_deprecated(capsys: pytest.CaptureFixture[str]) -> None:
    from harmonia_mcp.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "sse serves /sse and /messages/ and is DEPRECATED" in help_text
