"""The background extraction queue (issue 13), through the MCP server, against the fake Ollama over HTTP.

store_memory answers with the rules' memories and a job id; the worker's model memories replace them
(with history, never as duplicates); failures are retried then marked failed; a restart resumes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_ollama import FakeOllama
from mcp import Client

from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

JASON = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."
MISO = "My cat Miso hates the vacuum, and I am training for a 10k."
MODEL = "llama3.2:3b"


def queue_settings(db_path: Path, host: str, **extra: Any) -> Settings:
    return Settings.model_validate(
        {
            "db_path": str(db_path),
            "extractor": "ollama",
            "extraction": "async",
            "ollama_host": host,
            "ollama_model": MODEL,
            "ollama_timeout_seconds": 5.0,
            "ollama_max_retries": 0,
            "extraction_retry_seconds": 0.05,
            "timezone": "America/New_York",
        }
        | extra
    )


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _settled(client: Client, job_id: int, user: str = "jason") -> dict[str, Any]:
    """The job once it is done or failed (bounded by a generous limit for a busy machine)."""
    with anyio.fail_after(60):
        while True:
            status = await _call(client, "extraction_status", {"user_id": user, "job_id": job_id})
            if status["job"]["status"] in ("done", "failed"):
                return status
            await anyio.sleep(0.02)


async def test_store_memory_answers_with_rules_then_the_model_replaces_them_with_history(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    async with Client(create_server(queue_settings(tmp_path / "m.db", fake_ollama.url))) as client:
        stored = await _call(client, "store_memory", {"message": JASON, "user_id": "jason"})
        assert stored["pending_extraction"] is True and stored["job_id"] >= 1
        assert [m["extractor"] for m in stored["memories"]] == ["rules"] * 3
        status = await _settled(client, stored["job_id"])
        active = (await _call(client, "list_memories", {"user_id": "jason"}))["memories"]
        everything = (await _call(client, "list_memories", {"user_id": "jason", "include_inactive": True}))["memories"]
        rules_id = stored["memories"][0]["memory_id"]
        details = await _call(client, "get_memory", {"user_id": "jason", "memory_id": rules_id})
    job = status["job"]
    assert job["status"] == "done" and job["extractor"] == "ollama" and job["attempts"] == 1
    assert job["provisional_memory_ids"] == [m["memory_id"] for m in stored["memories"]]
    # The model's three memories are the active ones; the rules' three are kept, superseded.
    assert sorted(m["memory_id"] for m in active) == sorted(job["memory_ids"])
    assert {m["extractor"] for m in active} == {"ollama"} and len(active) == 3
    assert len({m["content"] for m in active}) == 3
    superseded = [m for m in everything if m["status"] == "superseded"]
    assert sorted(m["memory_id"] for m in superseded) == sorted(job["provisional_memory_ids"])
    assert [entry["action"] for entry in details["update_history"]] == ["created", "superseded"]
    assert details["links"]["superseded_by"] and details["links"]["superseded_by"][0] in job["memory_ids"]
    assert status["done"] == 1 and status["pending"] == 0 and status["model_state"] == "ok"
    assert status["latency_p95_seconds"] is not None


async def test_the_worker_makes_one_model_call_at_a_time_and_drains_the_queue(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    fake_ollama.delay = 0.1
    messages = [JASON, MISO, "I have a dentist appointment tomorrow at 2pm.", MISO]
    async with Client(create_server(queue_settings(tmp_path / "m.db", fake_ollama.url))) as client:
        job_ids = [
            (await _call(client, "store_memory", {"message": text, "user_id": "jason"}))["job_id"] for text in messages
        ]
        statuses = [await _settled(client, job_id) for job_id in job_ids]
        active = (await _call(client, "list_memories", {"user_id": "jason"}))["memories"]
    assert [s["job"]["status"] for s in statuses] == ["done"] * 4
    assert fake_ollama.most_in_flight == 1
    assert len(fake_ollama.chat_requests()) == 4
    # MISO said twice: the second landing reconciles with the first, no duplicate active memory.
    contents = [m["content"] for m in active]
    assert len(contents) == len(set(contents))
    assert {m["extractor"] for m in active} == {"ollama"}


async def test_a_failing_model_is_retried_then_the_job_fails_with_the_reason_and_rules_memories_stay(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    fake_ollama.fail("http500")
    settings = queue_settings(tmp_path / "m.db", fake_ollama.url, extraction_max_attempts=2)
    async with Client(create_server(settings)) as client:
        stored = await _call(client, "store_memory", {"message": JASON, "user_id": "jason"})
        status = await _settled(client, stored["job_id"])
        active = (await _call(client, "list_memories", {"user_id": "jason"}))["memories"]
    job = status["job"]
    assert job["status"] == "failed" and job["attempts"] == 2
    assert "HTTP 500" in job["error"]
    assert status["failed"] == 1 and "HTTP 500" in (status["last_error"] or "")
    assert len(fake_ollama.chat_requests()) == 2
    assert sorted(m["memory_id"] for m in active) == sorted(m["memory_id"] for m in stored["memories"])


async def test_garbage_then_a_good_reply_lands_on_the_retry(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    fake_ollama.fail("invalid_json", times=1)
    async with Client(create_server(queue_settings(tmp_path / "m.db", fake_ollama.url))) as client:
        stored = await _call(client, "store_memory", {"message": MISO, "user_id": "jason"})
        status = await _settled(client, stored["job_id"])
    assert status["job"]["status"] == "done" and status["job"]["attempts"] == 2


async def test_a_job_interrupted_by_a_stop_resumes_after_a_restart(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    db = tmp_path / "m.db"
    fake_ollama.fail("timeout")  # the model "generates" until the server is stopped
    async with Client(create_server(queue_settings(db, fake_ollama.url, ollama_timeout_seconds=60))) as client:
        stored = await _call(client, "store_memory", {"message": JASON, "user_id": "jason"})
        with anyio.fail_after(30):
            while fake_ollama.in_flight == 0:
                await anyio.sleep(0.02)
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT status FROM extraction_jobs").fetchall() == [("running",)]
    fake_ollama.fail(None)
    async with Client(create_server(queue_settings(db, fake_ollama.url))) as client:
        status = await _settled(client, stored["job_id"])
        active = (await _call(client, "list_memories", {"user_id": "jason"}))["memories"]
    assert status["job"]["status"] == "done" and status["job"]["attempts"] == 2
    assert {m["extractor"] for m in active} == {"ollama"} and len(active) == 3


async def test_a_landing_notifies_resource_listeners(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    fake_ollama.delay = 0.3
    async with Client(create_server(queue_settings(tmp_path / "m.db", fake_ollama.url))) as client:
        async with client.listen(resources_list_changed=True) as events:
            stored = await _call(client, "store_memory", {"message": MISO, "user_id": "jason"})
            seen = 0
            with anyio.fail_after(60):
                async for _ in events:
                    seen += 1
                    status = await _call(client, "extraction_status", {"user_id": "jason", "job_id": stored["job_id"]})
                    if status["job"]["status"] == "done":
                        break
    assert seen >= 1 and status["job"]["status"] == "done"


async def test_sync_mode_keeps_the_model_on_the_request_path(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    settings = queue_settings(tmp_path / "m.db", fake_ollama.url, extraction="sync")
    async with Client(create_server(settings)) as client:
        stored = await _call(client, "store_memory", {"message": JASON, "user_id": "jason"})
        status = await _call(client, "extraction_status", {"user_id": "jason"})
    assert stored["pending_extraction"] is False and stored["job_id"] is None
    assert [m["extractor"] for m in stored["memories"]] == ["ollama"] * 3
    assert status["mode"] == "sync" and status["pending"] == status["done"] == 0


async def test_a_model_known_down_is_not_queued_for_and_the_warning_says_why(tmp_path: Path, refused_url: str) -> None:
    settings = queue_settings(tmp_path / "m.db", refused_url, extractor="auto")
    async with Client(create_server(settings)) as client:
        with anyio.fail_after(30):
            while (await _call(client, "extraction_status", {}))["model_state"] != "down":
                await anyio.sleep(0.02)
        stored = await _call(client, "store_memory", {"message": JASON, "user_id": "jason"})
    assert stored["pending_extraction"] is False
    assert "connection refused" in stored["warnings"][0]
    assert [m["extractor"] for m in stored["memories"]] == ["rules"] * 3


async def test_an_unknown_job_id_is_a_clear_tool_error(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    async with Client(create_server(queue_settings(tmp_path / "m.db", fake_ollama.url))) as client:
        stored = await _call(client, "store_memory", {"message": MISO, "user_id": "jason"})
        other = await client.call_tool("extraction_status", {"user_id": "someone", "job_id": stored["job_id"]})
    assert other.is_error
    assert "is not an extraction job of user someone" in str(other.content)
