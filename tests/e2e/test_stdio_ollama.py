"""End to end over stdio with the Ollama extractor: `harmonia-mcp` as a child process, the fake Ollama
server of tests/fake_ollama.py on 127.0.0.1, the official `mcp` stdio client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_ollama import FakeOllama
from mcp import Client

from harmonia_mcp.child import server_parameters

pytestmark = pytest.mark.anyio

JASON = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."


async def _store(client: Client, message: str) -> dict[str, Any]:
    result = await client.call_tool(
        "store_memory",
        {"message": message, "occurred_at": "2024-08-19T10:00:00-04:00", "timezone": "America/New_York"},
    )
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_the_server_process_extracts_with_ollama_and_falls_back_to_rules(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    parameters = server_parameters(
        tmp_path / "e2e.db",
        {
            "HARMONIA_EXTRACTOR": "ollama",
            "HARMONIA_EXTRACTION": "sync",  # the model inside the call; the queue: the test below
            "OLLAMA_HOST": fake_ollama.url,
            "HARMONIA_OLLAMA_MODEL": "llama3.2:3b",
            "HARMONIA_OLLAMA_TIMEOUT_SECONDS": "10",
        },
    )
    with anyio.fail_after(60):
        async with Client(parameters) as client:
            by_model = await _store(client, JASON)
            dated = await _store(client, "I have a dentist appointment tomorrow at 2pm.")
            fake_ollama.fail("http500")
            by_rules = await _store(client, "I speak Spanish fluently and I'm learning Japanese.")
            listed = await client.call_tool("list_memories", {"limit": 50})

    assert [m["extractor"] for m in by_model["memories"]] == ["ollama"] * 3 and by_model["warnings"] == []
    [appointment] = dated["memories"]
    assert appointment["content"] == "User has a dentist appointment on 2024-08-20 at 14:00"
    assert appointment["event_time"] == "2024-08-20T14:00:00-04:00"
    assert by_rules["memories"] and all(m["extractor"] == "rules" for m in by_rules["memories"])
    assert "HTTP 500" in by_rules["warnings"][0]
    assert listed.structured_content is not None
    extractors = sorted(m["extractor"] for m in listed.structured_content["memories"])
    assert extractors == sorted(["ollama"] * 4 + ["rules"] * len(by_rules["memories"]))
    chat = fake_ollama.chat_requests()
    assert chat and all(request["model"] == "llama3.2:3b" and request["stream"] is False for request in chat)


async def test_the_server_process_queues_the_model_and_a_restart_resumes_what_was_left(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    env = {
        "HARMONIA_EXTRACTOR": "ollama",
        "HARMONIA_EXTRACTION": "async",
        "OLLAMA_HOST": fake_ollama.url,
        "HARMONIA_OLLAMA_MODEL": "llama3.2:3b",
        "HARMONIA_OLLAMA_TIMEOUT_SECONDS": "60",
    }
    fake_ollama.fail("timeout")  # the first process stops while its job waits on the model
    with anyio.fail_after(60):
        async with Client(server_parameters(tmp_path / "e2e.db", env)) as client:
            queued = await _store(client, JASON)
            while fake_ollama.in_flight == 0:
                await anyio.sleep(0.02)
    assert queued["pending_extraction"] and [m["extractor"] for m in queued["memories"]] == ["rules"] * 3
    fake_ollama.fail(None)
    with anyio.fail_after(60):
        async with Client(server_parameters(tmp_path / "e2e.db", env)) as client:
            while True:
                status = await client.call_tool("extraction_status", {"job_id": queued["job_id"]})
                assert status.structured_content is not None
                if status.structured_content["job"]["status"] == "done":
                    break
                await anyio.sleep(0.05)
            listed = await client.call_tool("list_memories", {"limit": 50})
    assert listed.structured_content is not None
    assert [m["extractor"] for m in listed.structured_content["memories"]] == ["ollama"] * 3
