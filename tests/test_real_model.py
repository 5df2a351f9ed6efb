"""A real model behind the real extractor code (issue 13): SmolLM2-135M-Instruct through tests/model_server.

These check plumbing, not wisdom: the replies fit the schema, memories are stored with the model's
extractor name, the token cap cuts a generation, a timeout falls back to rules, the queue drains. A 135M
model's facts are poor; nothing here asserts what it extracted. Skipped, saying why, when Node,
node-llama-cpp or the GGUF file is missing (tests/real_model.py). Kept to a handful of model calls: each
costs seconds of CPU on a shared machine.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest
from mcp import Client
from real_model import MODEL_NAME

from harmonia_mcp.config import Settings
from harmonia_mcp.extract import ExtractionError
from harmonia_mcp.extract.ollama import OllamaExtractor
from harmonia_mcp.extract.openai import OpenAIExtractor
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.extract.select import FallbackExtractor
from harmonia_mcp.server import create_server

pytestmark = [pytest.mark.anyio, pytest.mark.real_model]

REF = datetime(2024, 8, 19, 10, 0, tzinfo=ZoneInfo("Europe/Lisbon"))
# Generous: one extraction is 3-15 s on an idle 2-core machine, much more when it is shared. Never asserted.
GENEROUS = 240.0


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_stored_messages_are_extracted_by_the_real_model_in_the_background(
    tmp_path: Path, real_model_server: str
) -> None:
    settings = Settings.model_validate(
        {
            "db_path": str(tmp_path / "m.db"),
            "extractor": "ollama",
            "extraction": "async",
            "ollama_host": real_model_server,
            "ollama_model": MODEL_NAME,
            "ollama_timeout_seconds": GENEROUS,
            "ollama_max_retries": 0,
            "llm_max_tokens": 256,
            "timezone": "Europe/Lisbon",
        }
    )
    messages = ["My sister Anna lives in Lisbon.", "I have a dog called Biggie and I love green tea."]
    async with Client(create_server(settings)) as client:
        stored = [await _call(client, "store_memory", {"message": text, "user_id": "u"}) for text in messages]
        assert all(result["pending_extraction"] for result in stored)
        assert {m["extractor"] for result in stored for m in result["memories"]} == {"rules"}
        with anyio.fail_after(2 * GENEROUS):
            while (status := await _call(client, "extraction_status", {}))["pending"] + status["running"]:
                await anyio.sleep(0.2)
        jobs = [
            (await _call(client, "extraction_status", {"user_id": "u", "job_id": result["job_id"]}))["job"]
            for result in stored
        ]
        active = (await _call(client, "list_memories", {"user_id": "u"}))["memories"]
    # Valid under the schema the first time (ollama_max_retries=0 would fail the job otherwise).
    assert [(job["status"], job["attempts"], job["extractor"]) for job in jobs] == [("done", 1, "ollama")] * 2
    landed = {memory_id for job in jobs for memory_id in job["memory_ids"]}
    assert landed, "the model stored nothing for either message"
    by_id = {m["memory_id"]: m for m in active}
    assert all(by_id[memory_id]["extractor"] == "ollama" for memory_id in landed if memory_id in by_id)
    assert all(m["content"].strip() for m in active)


async def test_a_timeout_falls_back_to_rules_and_the_token_cap_cuts_the_next_reply(real_model_server: str) -> None:
    hurried = OllamaExtractor(real_model_server, MODEL_NAME, timeout_seconds=0.2, max_retries=0)
    extractor = FallbackExtractor(hurried, RulesExtractor(), mode="ollama")
    report = await extractor.extract_with_report(
        "I work as a nurse at the city hospital.", speaker="User", reference_time=REF
    )
    await hurried.aclose()
    assert report.extractor == "rules" and report.memories
    assert "did not reply within 0.2 s" in report.warnings[0]
    # The server dropped the abandoned generation: the next request is answered, cut at 12 tokens.
    capped = OllamaExtractor(real_model_server, MODEL_NAME, timeout_seconds=GENEROUS, max_retries=0, max_tokens=12)
    with pytest.raises(ExtractionError) as caught:
        await capped.extract("I have a cat called Miso.", speaker="User", reference_time=REF)
    await capped.aclose()
    assert "not JSON" in caught.value.reason and not caught.value.timed_out


async def test_the_openai_compatible_backend_gets_schema_valid_replies(real_model_server: str) -> None:
    extractor = OpenAIExtractor(
        f"{real_model_server}/v1", MODEL_NAME, timeout_seconds=GENEROUS, max_retries=0, max_tokens=256
    )
    memories = await extractor.extract("I play the violin in an orchestra.", speaker="User", reference_time=REF)
    assert (await extractor.probe()).ok
    await extractor.aclose()
    assert extractor.schema_supported is True
    assert all(memory.content for memory in memories)


async def test_the_embed_route_gives_the_models_own_vectors(real_model_server: str) -> None:
    async with httpx.AsyncClient(base_url=real_model_server, timeout=GENEROUS) as client:
        reply = (await client.post("/api/embed", json={"model": MODEL_NAME, "input": ["a cat", "a dog"]})).json()
        tags = (await client.get("/api/tags")).json()
        unknown = await client.post("/api/chat", json={"model": "nope", "messages": []})
    assert len(reply["embeddings"]) == 2 and len(reply["embeddings"][0]) == 576  # SmolLM2-135M's hidden size
    assert reply["embeddings"][0] != reply["embeddings"][1]
    assert [model["name"] for model in tags["models"]] == [MODEL_NAME]
    assert unknown.status_code == 404
