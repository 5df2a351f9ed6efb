"""Serving MCP over stdio with an answer for every line: the SDK's `stdio_server`, fed checked lines.

The SDK's stdio transport (mcp 2.3.0) decodes stdin with `errors="replace"` (invalid UTF-8 silently becomes
U+FFFD) and drops a line it cannot parse without replying, so the client waits for its own timeout. It cannot
be configured otherwise, so this module reads stdin itself and checks each line first, with the same
pydantic model the SDK uses (`mcp_types.jsonrpc_message_adapter`):

- invalid UTF-8, malformed JSON (truncated, a lone-surrogate escape, nesting past the parser's limit) get
  JSON-RPC `-32700 Parse error` with `id: null` (JSON-RPC 2.0 section 5.1);
- valid JSON that is not one JSON-RPC message (a batch array: MCP has no batches since 2025-06-18, or an
  object that is not a request, notification or response) gets `-32600 Invalid Request`, with the message's
  `id` when it has a usable one;

each with a warning on stderr. Only checked lines reach the SDK; its own stdout handling is unchanged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import IO, Any, cast

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

logger = logging.getLogger(__name__)

MAX_SHOWN_CHARS = 80


def check_line(line: bytes) -> tuple[str | None, types.JSONRPCError | None]:
    """The line as text when it is one JSON-RPC message, else the error reply it deserves.

    Returns:
        `(text, None)` for a message, `(None, reply)` for a line to refuse, `(None, None)` for a blank line.
    """
    if not line.strip():
        return None, None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, _reply(types.PARSE_ERROR, f"Parse error: the line is not valid UTF-8 (byte {error.start})")
    try:
        types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            return None, _reply(types.PARSE_ERROR, f"Parse error: {first['msg']}")
        return None, _reply(types.INVALID_REQUEST, _invalid_request_reason(text), _usable_id(text))
    return text, None


def _invalid_request_reason(text: str) -> str:
    if text.lstrip().startswith("["):
        return "Invalid Request: JSON-RPC batches are not supported by MCP; send one message per line"
    return "Invalid Request: not a JSON-RPC 2.0 request, notification or response"


def _usable_id(text: str) -> str | int | None:
    try:
        parsed: Any = json.loads(text)
    except (ValueError, RecursionError):
        return None
    identifier = parsed.get("id") if isinstance(parsed, dict) else None
    return identifier if isinstance(identifier, str | int) and not isinstance(identifier, bool) else None


def _reply(code: int, message: str, identifier: str | int | None = None) -> types.JSONRPCError:
    return types.JSONRPCError(jsonrpc="2.0", id=identifier, error=types.ErrorData(code=code, message=message))


async def _checked_lines(stdin: IO[bytes], refusals: MemoryObjectSendStream[types.JSONRPCError]) -> AsyncIterator[str]:
    async with refusals:
        async for line in anyio.wrap_file(stdin):
            text, refusal = check_line(line)
            if refusal is not None:
                shown = line[:MAX_SHOWN_CHARS].decode("utf-8", "backslashreplace")
                logger.warning("stdio: refused a line (%d bytes, %r...): %s", len(line), shown, refusal.error.message)
                await refusals.send(refusal)
            elif text is not None:
                yield text


async def _answer(refusals: MemoryObjectReceiveStream[types.JSONRPCError], write_stream: Any) -> None:
    async with refusals:
        async for refusal in refusals:
            try:
                await write_stream.send(SessionMessage(refusal))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return


async def serve_stdio(server: MCPServer[Any], stdin: IO[bytes] | None = None) -> None:
    """Serve `server` over stdio (as `MCPServer.run_stdio_async` does) until stdin ends, answering bad lines.

    `stdin` defaults to the process's standard input (its binary buffer).
    """
    send, receive = anyio.create_memory_object_stream[types.JSONRPCError](16)
    lines = _checked_lines(stdin if stdin is not None else sys.stdin.buffer, send)
    # The SDK iterates `stdin` with `async for`; an async iterator of lines is all it needs.
    async with stdio_server(stdin=cast(Any, lines)) as (read_stream, write_stream):
        lowlevel = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]  # as run_stdio_async does
        async with anyio.create_task_group() as group:
            group.start_soon(_answer, receive, write_stream)
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
            group.cancel_scope.cancel()
