"""LLM-assisted reconciliation (issue 13): pairs the rules cannot classify go to the model, whose answer
decides (and is recorded), with the rules' answer as the fallback. The model is the fake Ollama over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_ollama import FakeOllama
from mcp import Client

from harmonia_mcp.config import Settings
from harmonia_mcp.conflicts import Fact, classify, needs_judgment
from harmonia_mcp.extract.judge import JUDGMENT_MAX_TOKENS, JUDGMENT_SCHEMA, ModelJudge
from harmonia_mcp.extract.ollama import OllamaExtractor
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

MODEL = "llama3.2:3b"


@pytest.mark.parametrize(
    ("old", "new", "asked"),
    [
        ("User quit the chess club", "User joined the chess club", True),
        ("Miso hates the vacuum cleaner", "The vacuum cleaner scares Miso", True),
        ("User works at Google", "User works at Amazon", False),  # the rules read both: an update
        ("User is vegetarian since 2020", "User stopped eating meat in 2020", False),  # one shared word
        ("User has a dog called Biggie", "User has a dog called Biggie", False),  # a duplicate
    ],
)
def test_only_pairs_the_rules_cannot_read_that_share_words_go_to_the_model(old: str, new: str, asked: bool) -> None:
    verdict = classify(Fact(new), Fact(old), ["User"])
    assert needs_judgment(Fact(new), Fact(old), verdict, ["User"]) is asked


async def test_the_judge_sends_its_schema_and_cap_and_falls_back_on_failure(fake_ollama: FakeOllama) -> None:
    judge = ModelJudge(OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5))
    fake_ollama.judgment = {"relation": "update", "reason": "rejoining replaces quitting"}
    assert await judge.judge("User joined the chess club", "User quit the chess club") == (
        "update",
        "rejoining replaces quitting",
    )
    (request,) = fake_ollama.chat_requests()
    assert request["format"] == JUDGMENT_SCHEMA and request["options"]["num_predict"] == JUDGMENT_MAX_TOKENS
    assert "OLD: User quit the chess club\nNEW: User joined the chess club" in request["messages"][-1]["content"]
    fake_ollama.judgment = {"relation": "maybe"}  # not one of the four: the rules' answer stands
    assert await judge.judge("a b", "c d") is None
    fake_ollama.fail("http500")
    assert await judge.judge("a b", "c d") is None
    assert judge.name == f"ollama:{MODEL}"


def _settings(db: Path, host: str, reconcile: bool) -> Settings:
    return Settings.model_validate(
        {
            "db_path": str(db),
            "extractor": "ollama",
            "extraction": "async",
            "ollama_host": host,
            "ollama_model": MODEL,
            "llm_reconcile": reconcile,
            "timezone": "UTC",
        }
    )


async def _store_and_land(client: Client, message: str) -> dict[str, Any]:
    stored = (await client.call_tool("store_memory", {"message": message})).structured_content
    assert stored is not None
    with anyio.fail_after(60):
        while True:
            status = (await client.call_tool("extraction_status", {"job_id": stored["job_id"]})).structured_content
            assert status is not None
            if status["job"]["status"] in ("done", "failed"):
                job: dict[str, Any] = status["job"]
                return job
            await anyio.sleep(0.02)


@pytest.mark.parametrize("reconcile", [True, False])
async def test_the_models_verdict_decides_an_unreadable_pair_and_is_recorded(
    tmp_path: Path, fake_ollama: FakeOllama, reconcile: bool
) -> None:
    first, second = "I gave up chess club last year.", "These days I am back at chess club."
    for message, content in ((first, "User quit the chess club"), (second, "User joined the chess club")):
        reply = {"memories": [{"content": content, "category": "personal", "confidence": 0.8, "entities": []}]}
        fake_ollama.recordings[(MODEL, message)] = reply
    fake_ollama.judgment = {"relation": "update", "reason": "rejoining replaces quitting"}
    async with Client(create_server(_settings(tmp_path / "m.db", fake_ollama.url, reconcile))) as client:
        old_job = await _store_and_land(client, first)
        new_job = await _store_and_land(client, second)
        listed = (await client.call_tool("list_memories", {"include_inactive": True})).structured_content
    assert listed is not None
    status = {m["memory_id"]: m["status"] for m in listed["memories"]}
    (old_id,), (new_id,) = old_job["memory_ids"], new_job["memory_ids"]
    if reconcile:
        assert status[old_id] == "superseded" and status[new_id] == "active"
        assert new_job["judgments"] == [
            {
                "memory_id": new_id,
                "other_memory_id": old_id,
                "relation": "update",
                "reason": "rejoining replaces quitting",
                "judge": f"ollama:{MODEL}",
            }
        ]
    else:  # the rules alone call the pair unrelated: both stay
        assert status[old_id] == status[new_id] == "active"
        assert new_job["judgments"] == []
