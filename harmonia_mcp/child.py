"""Running harmonia-mcp as a child process and talking to it with the official `mcp` stdio client.

One place for what the demo, the benchmarks and the end-to-end tests all do: find the
`harmonia-mcp` command of this installation, start it on a given database, and call tools,
treating a tool error as an exception.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters


class ToolCallFailed(RuntimeError):
    """A tool answered with `isError: true` (or without structured content); the message is the tool's text."""


def server_command() -> tuple[str, list[str]]:
    """The command that starts this installation's server: the `harmonia-mcp` console script next to
    the running Python, else one on PATH, else `python -m harmonia_mcp`. Returns (command, arguments)."""
    script = Path(sys.executable).parent / "harmonia-mcp"
    if script.exists():
        return str(script), []
    found = shutil.which("harmonia-mcp")
    return (found, []) if found else (sys.executable, ["-m", "harmonia_mcp"])


def server_parameters(db_path: str | Path, env: Mapping[str, str] | None = None) -> StdioServerParameters:
    """How to start `harmonia-mcp` on the SQLite file `db_path`: no arguments, as Claude Desktop starts it.

    The child gets PATH and HOME from this process, `HARMONIA_DB_PATH`, `HARMONIA_EXTRACTOR=rules` (so
    no Ollama is contacted unless `env` says otherwise), then `env` on top.
    """
    command, arguments = server_command()
    environment = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    environment |= {"HARMONIA_DB_PATH": str(db_path), "HARMONIA_EXTRACTOR": "rules", **(env or {})}
    return StdioServerParameters(command=command, args=arguments, env=environment)


async def call_tool(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call `tool` and return its structured result.

    Raises:
        ToolCallFailed: the tool returned an error, or no structured content.
    """
    result = await client.call_tool(tool, arguments)
    if result.is_error or result.structured_content is None:
        texts = [getattr(block, "text", "") for block in result.content]
        raise ToolCallFailed(f"{tool} failed: {' '.join(texts)}")
    structured: dict[str, Any] = result.structured_content
    return structured


async def replay_conversation(
    client: Client,
    user_id: str,
    sessions: list[dict[str, Any]],
    *,
    as_facts: bool,
    timezone: str | None = None,
    reverse: bool = False,
) -> int:
    """Store a conversation through `store_memory`, one call per message; return how many memories it reported.

    Args:
        sessions: `[{"session_id", "messages": [{"at": ISO-8601, "text", "facts": [...]}, ...]}, ...]`, as in
            `benchmarks/data/conversation_issue10.json`.
        as_facts: pass each message's `facts` (the message as their source), skipping messages with none, as
            a host model would; else the message alone, for the server's extractor.
        timezone: the speaker's IANA zone, passed on when given.
        reverse: store the sessions last first (time order, not call order, must decide what is current).

    Raises:
        ToolCallFailed: a call was refused.
    """
    stored = 0
    for session in reversed(sessions) if reverse else sessions:
        for message in session["messages"]:
            arguments: dict[str, Any] = {
                "user_id": user_id,
                "message": message["text"],
                "session_id": session["session_id"],
                "occurred_at": message["at"],
            }
            if timezone is not None:
                arguments["timezone"] = timezone
            if as_facts:
                if not message["facts"]:
                    continue
                arguments["facts"] = message["facts"]
            stored += len((await call_tool(client, "store_memory", arguments))["memories"])
    return stored
