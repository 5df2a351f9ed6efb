"""Issue 12 item 9 end to end: `harmonia-mcp` over stdio answers every line it cannot take, and says so on stderr."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from harmonia_mcp.child import server_command

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


async def _reply(stdout: BufferedByteReceiveStream) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(await stdout.receive_until(b"\n", 1 << 20))
    return reply


BAD_LINES: list[tuple[bytes, int, str]] = [
    (b'{"jsonrpc": "2.0", "id": 2, "method": "ping"', -32700, "Parse error"),  # truncated
    (b'[{"jsonrpc": "2.0", "id": 3, "method": "ping"}]', -32600, "batches are not supported"),
    (b'{"jsonrpc": "2.0", "id": 4, "method": "ping", "params": {"x": "\\ud800"}}', -32700, "Parse error"),
    (b"[" * 450 + b"]" * 450, -32700, "recursion limit"),
    (b'{"jsonrpc": "2.0", "id": 6, "method": "ping", "params": {"x": "caf\xe9"}}', -32700, "not valid UTF-8"),
    (b'{"jsonrpc": "2.0", "id": 7, "result": 1, "error": 2}', -32600, "Invalid Request"),
]


async def test_every_unparseable_line_gets_an_error_reply_and_a_warning(tmp_path: Path) -> None:
    command, arguments = server_command()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HARMONIA_DB_PATH": str(tmp_path / "m.db"),
        "HARMONIA_EXTRACTOR": "rules",
    }
    with anyio.fail_after(120):  # a hang guard: without a reply the client would wait forever
        process: Process
        async with await anyio.open_process([command, *arguments], env=env) as process:
            assert process.stdin is not None and process.stdout is not None and process.stderr is not None
            stdout = BufferedByteReceiveStream(process.stdout)
            await process.stdin.send(_line(INITIALIZE))
            assert (await _reply(stdout))["id"] == 1
            await process.stdin.send(_line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            for line, code, text in BAD_LINES:
                await process.stdin.send(line + b"\n")
                reply = await _reply(stdout)
                assert reply["error"]["code"] == code, (line, reply)
                assert text in reply["error"]["message"], (line, reply)
                assert reply["id"] is None or code == -32600
            await process.stdin.send(_line({"jsonrpc": "2.0", "id": 99, "method": "ping"}))
            assert await _reply(stdout) == {"jsonrpc": "2.0", "id": 99, "result": {}}  # the session goes on
            await process.stdin.aclose()
            await process.wait()
            chunks = [chunk async for chunk in process.stderr]
    errors = b"".join(chunks).decode("utf-8", "replace")
    assert errors.count("stdio: refused a line") == len(BAD_LINES), errors
