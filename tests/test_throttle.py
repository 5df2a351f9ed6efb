"""The SSE stream cap's bookkeeping (`throttle.SseCapMiddleware`) against an ASGI app that answers in chunks as a
real server may: a reply that arrives in several body chunks, or several replies in one, still settles the
requests it answers, so the stream is reaped once idle and not before."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from harmonia_mcp.throttle import SseCapMiddleware, _json_messages, _sse_event, _sse_events, _SseStream

pytestmark = pytest.mark.anyio

SESSION = "ab" * 16
IDLE = 0.2  # seconds


def _sse_message(event: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of one event, as the middleware reads them: only `message` events carry them."""
    kind, data = _sse_event(event)
    return _json_messages(data) if kind == b"message" and data else []


def _reply(request_id: int) -> bytes:
    message = {"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": "x" * 50}]}}
    return b"event: message\r\ndata: " + json.dumps(message).encode() + b"\r\n\r\n"


def _app(pieces: list[bytes], posted: anyio.Event, delay: float) -> Any:
    """For POST: take the body, answer 202. For GET: the endpoint event, then, `delay` seconds after the post
    (longer than the idle time: the stream owes a reply, so it must not be reaped), `pieces` one chunk each."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            while (await receive()).get("more_body"):
                pass
            posted.set()
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        endpoint = f"event: endpoint\r\ndata: /messages/?session_id={SESSION}\r\n\r\n".encode()
        await send({"type": "http.response.body", "body": endpoint, "more_body": True})
        await posted.wait()
        await anyio.sleep(delay)
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await anyio.sleep_forever()

    return app


async def _serve(pieces: list[bytes], request_ids: list[int]) -> bytes:
    """Open a stream, post `request_ids` to it, and return what the stream sent before it was reaped."""
    posted = anyio.Event()
    middleware = SseCapMiddleware(_app(pieces, posted, delay=3 * IDLE), per_caller=2, total=2, idle_seconds=IDLE)
    sent: list[Message] = []

    async def collect(message: Message) -> None:
        sent.append(message)

    async def nothing() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    async def post() -> None:
        with anyio.fail_after(5):
            while middleware.open_streams() == 0 or not sent:
                await anyio.sleep(0.01)
        requests = [{"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {}} for i in request_ids]
        body = json.dumps(requests).encode()
        chunks = iter(
            [
                {"type": "http.request", "body": body[:10], "more_body": True},
                {"type": "http.request", "body": body[10:], "more_body": False},
            ]
        )

        async def receive() -> Message:
            return next(chunks)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/messages/",
            "query_string": f"session_id={SESSION}".encode(),
        }
        await middleware(scope, receive, collect_post)

    post_sent: list[Message] = []

    async def collect_post(message: Message) -> None:
        post_sent.append(message)

    get_scope = {"type": "http", "method": "GET", "path": "/sse", "query_string": b""}
    with anyio.fail_after(10):  # never reaped: the replies were not seen, and the stream stays open for good
        async with anyio.create_task_group() as group:
            group.start_soon(post)
            await middleware(get_scope, nothing, collect)
    assert post_sent[0]["status"] == 202
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}  # ended cleanly
    return b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")


async def test_a_reply_split_across_chunks_settles_its_request_and_the_stream_is_then_reaped() -> None:
    reply = _reply(7)
    pieces = [reply[:9], reply[9:40], reply[40:-1], reply[-1:]]
    body = await _serve(pieces, [7])
    assert reply in body  # the stream lived past the idle time until the reply was sent whole


async def test_two_replies_in_one_chunk_settle_both_requests() -> None:
    body = await _serve([_reply(1) + _reply(2)], [1, 2])
    assert _reply(1) + _reply(2) in body


def test_sse_events_keeps_the_unended_event_for_the_next_chunk() -> None:
    events, rest = _sse_events(b"event: message\ndata: {}\n\n: ping\r\n\r\nevent: mess")
    assert events == [b"event: message\ndata: {}", b": ping"] and rest == b"event: mess"
    assert _sse_message(events[1]) == []  # a comment (keep-alive) is no message
    joined = b'event: message\ndata: {"jsonrpc": "2.0",\ndata: "id": 3, "result": {}}'
    assert _sse_message(joined) == [{"jsonrpc": "2.0", "id": 3, "result": {}}]
    assert _sse_message(b'event: endpoint\ndata: {"id": 1, "result": {}}') == []


def test_an_event_sent_a_byte_at_a_time_is_parsed_once_its_end_arrives() -> None:
    stream = _SseStream("caller", 0.0)
    reply = _reply(5) + b": ping\r\n\r\n"
    found = [event for index in range(len(reply)) for event in stream.complete_events(reply[index : index + 1])]
    assert [_sse_message(event) for event in found][0][0]["id"] == 5
    assert found[1] == b": ping" and stream.unparsed == []
