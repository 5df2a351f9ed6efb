"""Careless and hostile input that used to pass silently (issue 12.12), each over the transport where it shows:
NaN/Infinity in metadata and control characters in messages over stdio, formula cells in a CSV export, and a
token in a query string over HTTP."""

from __future__ import annotations

import csv
import io
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from remote_server import running

from harmonia_mcp.child import call_tool, server_command, server_parameters

pytestmark = pytest.mark.anyio

REPLY_TIMEOUT_SECONDS = 60
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}


def _raw_stdio(db: Path, lines: list[str], wanted: set[int]) -> dict[int, dict[str, Any]]:
    """Send raw JSON-RPC lines (as a careless client writes them) to `harmonia-mcp` over stdio, and read
    replies until every id in `wanted` has one (stdin stays open until then: EOF stops the server)."""
    command, prefix = server_command()
    handshake = [json.dumps(INITIALIZE), json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})]
    process = subprocess.Popen(
        [command, *prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        env=server_parameters(db).env,
    )
    assert process.stdin is not None and process.stdout is not None
    replies: dict[int, dict[str, Any]] = {}
    # Read the pipe unbuffered and split lines here: with a buffered readline, two replies written at once leave
    # the second in Python's buffer, where select() cannot see it.
    pending = b""
    try:
        process.stdin.write(("\n".join([*handshake, *lines]) + "\n").encode())
        deadline = time.monotonic() + REPLY_TIMEOUT_SECONDS
        while not wanted <= replies.keys():
            if b"\n" not in pending:
                ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
                assert ready, f"no reply to {sorted(wanted - replies.keys())} within {REPLY_TIMEOUT_SECONDS}s"
                chunk = os.read(process.stdout.fileno(), 65536)
                assert chunk, "the server closed stdout"
                pending += chunk
                continue
            line, pending = pending.split(b"\n", 1)
            reply = json.loads(line)
            if isinstance(reply.get("id"), int):
                replies[reply["id"]] = reply
    finally:
        process.stdin.close()
        process.wait(timeout=REPLY_TIMEOUT_SECONDS)
    return replies


def _store_line(request_id: int, metadata_json: str) -> str:
    return (
        f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "tools/call", "params": {{"name": "store_memory", '
        f'"arguments": {{"message": "I have a dog called Biggie", "metadata": {metadata_json}}}}}}}'
    )


def test_nan_and_infinity_in_metadata_are_refused_over_stdio(tmp_path: Path) -> None:
    by_id = _raw_stdio(
        tmp_path / "m.db",
        [_store_line(1, '{"score": NaN}'), _store_line(2, '{"nested": {"x": [1, -Infinity]}}'), _store_line(3, "{}")],
        {1, 2, 3},
    )
    for request_id in (1, 2):
        result = by_id[request_id]["result"]
        assert result["isError"] is True, result
        assert "metadata contains NaN or Infinity" in result["content"][0]["text"]
    assert by_id[3]["result"].get("isError") is not True  # the same call with finite metadata is stored
    assert len(by_id[3]["result"]["structuredContent"]["memories"]) == 1


async def test_control_characters_are_removed_from_messages_over_stdio(tmp_path: Path) -> None:
    async with Client(server_parameters(tmp_path / "m.db")) as client:
        message = "I have a dog\x07 called \x1b[31mBiggie\x1b[0m\x00.\r\nMy sister\tis called\x7f Ana\x9b."
        stored = await call_tool(client, "store_memory", {"message": message, "user_id": "alice"})
        assert stored["memories"], stored
        assert any("Control characters" in warning for warning in stored["warnings"]), stored["warnings"]
        clean = await call_tool(client, "store_memory", {"message": "I like tea.\r\nI\tswim.", "user_id": "bob"})
        assert not any("Control characters" in warning for warning in clean["warnings"]), clean["warnings"]
        listed = await call_tool(client, "list_memories", {"user_id": "alice", "limit": 10})
    for memory in listed["memories"]:
        for text in (memory["content"], memory["source_message"]):
            assert not any(ord(character) < 32 and character not in "\n\t" for character in text), text
            assert "\x7f" not in text and "[31m" not in text and "\x9b" not in text
    sources = {memory["source_message"] for memory in listed["memories"]}
    assert sources == {"I have a dog called Biggie.\nMy sister\tis called Ana."}


async def test_csv_export_neutralises_formula_cells(tmp_path: Path) -> None:
    async with Client(server_parameters(tmp_path / "m.db")) as client:
        for message in ('=HYPERLINK("http://evil.example","click")', "+1 555 0100 is my number", "@SUM(A1:A9)"):
            await call_tool(client, "store_memory", {"message": message, "user_id": "eve", "session_id": "-s1"})
        exported = await call_tool(client, "export_memories", {"user_id": "eve", "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(exported["data"])))
    assert rows, exported
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    assert {row["session_id"] for row in rows} == {"'-s1"}
    assert any(row["source_message"].startswith("'=HYPERLINK(") for row in rows)


def test_a_token_in_a_query_string_is_never_logged(tmp_path: Path) -> None:
    secret = "query-token-0123456789-SECRET"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice-0123456789-token-AAAAAAAA alice\n{secret} bob\n", encoding="utf-8")
    tokens.chmod(0o600)
    env = {"HARMONIA_AUTH_TOKENS_FILE": str(tokens), "HARMONIA_LOG_LEVEL": "DEBUG"}
    with running(tmp_path, "streamable-http", env=env) as server:
        with httpx2.Client(timeout=10.0) as http:
            for path in (f"/mcp?access_token={secret}", f"/healthz?token={secret}", f"/nowhere?t={secret}"):
                http.get(f"{server.base}{path}")
        server.stop()
        log = server.log()
    assert "/healthz?[redacted]" in log  # the access log is on at DEBUG, and redacted
    assert secret not in log
