"""The Ollama extractor, its prompts and the fallback to rules, against a fake Ollama server over HTTP.

The real `ollama` client talks to `tests/fake_ollama.py` on 127.0.0.1; nothing of ours is mocked.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from fake_ollama import FakeOllama
from mcp import Client

from harmonia_mcp.config import Settings
from harmonia_mcp.extract import ExtractionError, run_extractor
from harmonia_mcp.extract.ollama import REPLY_SCHEMA, TEMPERATURE, ExtractionReply, OllamaExtractor
from harmonia_mcp.extract.prompts import CATEGORY_EXAMPLES, PROMPT_VERSION, chat_messages, system_prompt
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.extract.select import FallbackExtractor, open_extractor
from harmonia_mcp.models import Category
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

NY = ZoneInfo("America/New_York")
REF = datetime(2024, 8, 19, 10, 0, tzinfo=NY)
JASON = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."
MODEL = "llama3.2:3b"


def ollama_settings(
    db_path: Path, host: str, extractor: str = "ollama", timeout: float = 5.0, extraction: str = "sync"
) -> Settings:
    # sync: these tests read the model's memories in store_memory's answer (test_extraction_queue.py: async).
    return Settings.model_validate(
        {
            "db_path": str(db_path),
            "extractor": extractor,
            "extraction": extraction,
            "ollama_host": host,
            "ollama_model": MODEL,
            "ollama_timeout_seconds": timeout,
            "ollama_max_retries": 1,
            "timezone": "America/New_York",
        }
    )


# --- prompts ---------------------------------------------------------------------------------------


def test_system_prompt_names_every_category_the_speaker_and_the_reference_time() -> None:
    prompt = system_prompt("Caroline", REF)
    for category in Category:
        assert f"- {category.value}: e.g." in prompt
    assert len(CATEGORY_EXAMPLES) == 12
    assert 'e.g. "Caroline\'s brother Tom is a firefighter"' in prompt
    assert "Monday 2024-08-19 10:00" in prompt
    assert "America/New_York, UTC-04:00" in prompt
    assert "questions" in prompt and "small talk" in prompt
    assert "{" not in prompt.replace('{"memories"', "").replace('{"content"', "")  # every placeholder filled
    assert PROMPT_VERSION.startswith("extract-v")


def test_chat_messages_put_few_shot_turns_between_the_system_prompt_and_the_message() -> None:
    messages = chat_messages("I play chess.", "Caroline", REF)
    assert messages[0]["role"] == "system"
    assert messages[-1] == {"role": "user", "content": "I play chess."}
    turns = messages[1:-1]
    assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2)
    replies = [ExtractionReply.model_validate_json(m["content"]) for m in turns if m["role"] == "assistant"]
    assert any(not reply.memories for reply in replies), "a few-shot example must show an empty reply"
    contents = [memory.content for reply in replies for memory in reply.memories]
    assert contents and all(content.startswith("Caroline") for content in contents)
    assert all(memory.category in {c.value for c in Category} for reply in replies for memory in reply.memories)


# --- the extractor against the fake server ------------------------------------------------------------


async def test_structured_output_request_and_validated_memories(fake_ollama: FakeOllama) -> None:
    extractor = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5)
    try:
        memories = await extractor.extract(JASON, speaker="User", reference_time=REF)
    finally:
        await extractor.aclose()
    assert [(m.content, m.category) for m in memories] == [
        ("User's name is Jason Thompson", Category.PERSONAL),
        ("User works as a software engineer at AWS", Category.WORK),
        ("User has a dog called Biggie", Category.RELATIONSHIP),
    ]
    [request] = fake_ollama.chat_requests()
    assert request["model"] == MODEL
    assert request["stream"] is False
    assert request["format"] == REPLY_SCHEMA
    assert request["format"]["properties"]["memories"]["type"] == "array"
    assert 0 <= request["options"]["temperature"] == TEMPERATURE <= 0.2
    assert request["messages"][-1] == {"role": "user", "content": JASON}


async def test_relative_time_in_a_reply_becomes_an_absolute_date(fake_ollama: FakeOllama) -> None:
    extractor = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5)
    [memory] = await extractor.extract(
        "I have a dentist appointment tomorrow at 2pm.", speaker="User", reference_time=REF
    )
    await extractor.aclose()
    assert memory.content == "User has a dentist appointment on 2024-08-20 at 14:00"
    assert memory.event_time == datetime(2024, 8, 20, 14, 0, tzinfo=NY)
    assert not memory.event_date_only


async def test_replies_are_cleaned_confidence_clamped_unknown_category_other_empty_dropped(
    fake_ollama: FakeOllama,
) -> None:
    extractor = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5)
    memories = await extractor.extract(
        "My cat Miso hates the vacuum, and I am training for a 10k.", speaker="Sam", reference_time=REF
    )
    await extractor.aclose()
    assert [(m.content, m.category, m.confidence, m.entities) for m in memories] == [
        ("Sam's cat Miso hates the vacuum", Category.OTHER, 1.0, ["Miso"]),
        ("Sam is training for a 10k", Category.GOAL, 0.0, []),
    ]


async def test_small_talk_reply_gives_no_memories(fake_ollama: FakeOllama) -> None:
    extractor = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5)
    assert await extractor.extract("ok thanks!", speaker="User", reference_time=REF) == []
    await extractor.aclose()


@pytest.mark.parametrize("mode", ["invalid_json", "schema"])
async def test_an_invalid_reply_is_asked_again(fake_ollama: FakeOllama, mode: str) -> None:
    fake_ollama.fail(mode, times=1)
    extractor = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5, max_retries=1)
    memories = await extractor.extract(JASON, speaker="User", reference_time=REF)
    await extractor.aclose()
    assert len(memories) == 3
    assert len(fake_ollama.chat_requests()) == 2


@pytest.mark.parametrize(
    ("mode", "reason", "unavailable"),
    [
        ("invalid_json", "no valid reply in 3 attempts (last: not JSON", False),
        ("schema", "no valid reply in 3 attempts (last: JSON that does not fit the schema (memories", False),
        ("http500", "answered HTTP 500: llama runner process has terminated", True),
        ("timeout", "did not reply within 0.5 s", True),
    ],
)
async def test_failures_raise_extraction_error_with_the_reason(
    fake_ollama: FakeOllama, mode: str, reason: str, unavailable: bool
) -> None:
    fake_ollama.fail(mode)
    extractor = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=0.5, max_retries=2)
    with pytest.raises(ExtractionError) as raised:
        await extractor.extract(JASON, speaker="User", reference_time=REF)
    await extractor.aclose()
    assert reason in raised.value.reason
    assert raised.value.unavailable is unavailable
    assert len(fake_ollama.chat_requests()) == (3 if not unavailable else 1)


async def test_model_not_pulled_and_connection_refused_say_what_to_do(
    fake_ollama: FakeOllama, refused_url: str
) -> None:
    fake_ollama.models = ["llama3.1:8b"]
    missing = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5)
    with pytest.raises(ExtractionError, match=r"not pulled .*run `ollama pull llama3\.2:3b`"):
        await missing.extract(JASON, speaker="User", reference_time=REF)
    probe = await missing.probe()
    assert not probe.ok and "ollama pull llama3.2:3b" in probe.detail and probe.models == ("llama3.1:8b",)
    await missing.aclose()

    down = OllamaExtractor(refused_url, MODEL, timeout_seconds=5)
    with pytest.raises(ExtractionError, match="does not answer .*connection refused") as raised:
        await down.extract(JASON, speaker="User", reference_time=REF)
    assert raised.value.unavailable
    assert not (await down.probe()).ok
    await down.aclose()


async def test_probe_accepts_the_latest_tag_for_an_untagged_model(fake_ollama: FakeOllama) -> None:
    fake_ollama.models = ["llama3.2:latest"]
    extractor = OllamaExtractor(fake_ollama.url, "llama3.2", timeout_seconds=5)
    assert (await extractor.probe()).ok
    await extractor.aclose()


# --- nothing is lost when the model fails: through the MCP layer -----------------------------------------


async def _store(client: Client, message: str) -> dict[str, Any]:
    result = await client.call_tool(
        "store_memory", {"message": message, "occurred_at": "2024-08-19T10:00:00-04:00", "user_id": "jason"}
    )
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_store_memory_uses_the_model_and_says_so(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    async with Client(create_server(ollama_settings(tmp_path / "m.db", fake_ollama.url))) as client:
        stored = await _store(client, JASON)
        listed = await client.call_tool("list_memories", {"user_id": "jason", "sort_order": "asc"})
    assert stored["warnings"] == []
    assert [m["extractor"] for m in stored["memories"]] == ["ollama"] * 3
    assert listed.structured_content is not None
    assert [(m["content"], m["extractor"]) for m in listed.structured_content["memories"]] == [
        ("User's name is Jason Thompson", "ollama"),
        ("User works as a software engineer at AWS", "ollama"),
        ("User has a dog called Biggie", "ollama"),
    ]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("refused", "connection refused"),
        ("timeout", "did not reply within 0.5 s"),
        ("http500", "answered HTTP 500"),
        ("not_pulled", "not pulled"),
        ("invalid_json", "not JSON"),
        ("schema", "does not fit the schema"),
    ],
)
async def test_when_the_model_fails_the_rules_extractor_stores_the_message(
    tmp_path: Path, fake_ollama: FakeOllama, refused_url: str, failure: str, reason: str
) -> None:
    host = refused_url if failure == "refused" else fake_ollama.url
    if failure == "not_pulled":
        fake_ollama.models = []
    elif failure != "refused":
        fake_ollama.fail(failure)
    expected = await RulesExtractor().extract(JASON, speaker="User", reference_time=REF)
    async with Client(create_server(ollama_settings(tmp_path / "m.db", host, timeout=0.5))) as client:
        stored = await _store(client, JASON)
        listed = await client.call_tool("list_memories", {"user_id": "jason", "sort_order": "asc"})
    assert [(m["content"], m["extractor"], m["action"]) for m in stored["memories"]] == [
        (memory.content, "rules", "created") for memory in expected
    ]
    assert len(expected) == 3
    [warning] = stored["warnings"]
    assert warning.startswith("The Ollama extractor was not used: ") and reason in warning
    assert listed.structured_content is not None
    assert [m["extractor"] for m in listed.structured_content["memories"]] == ["rules"] * 3


async def test_auto_mode_skips_a_missing_model_and_uses_it_once_pulled(fake_ollama: FakeOllama) -> None:
    fake_ollama.models = []
    model = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5)
    extractor = FallbackExtractor(model, RulesExtractor(), mode="auto")
    assert not (await extractor.refresh()).ok

    skipped = await run_extractor(extractor, JASON, speaker="User", reference_time=REF)
    assert skipped.extractor == "rules" and len(skipped.memories) == 3
    assert "ollama pull llama3.2:3b" in skipped.warnings[0]
    assert fake_ollama.chat_requests() == [], "auto mode must not wait on a model it knows is missing"

    fake_ollama.models = [MODEL]
    assert (await extractor.refresh()).ok
    used = await run_extractor(extractor, JASON, speaker="User", reference_time=REF)
    assert (used.extractor, used.warnings) == ("ollama", [])
    await model.aclose()


async def test_auto_mode_stops_calling_a_model_that_went_down_until_a_probe_finds_it(
    fake_ollama: FakeOllama,
) -> None:
    model = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5)
    extractor = FallbackExtractor(model, RulesExtractor(), mode="auto")
    fake_ollama.fail("http500", times=1)
    first = await run_extractor(extractor, JASON, speaker="User", reference_time=REF)
    second = await run_extractor(extractor, JASON, speaker="User", reference_time=REF)
    assert (first.extractor, second.extractor) == ("rules", "rules")
    assert len(fake_ollama.chat_requests()) == 1
    await extractor.refresh()
    assert (await run_extractor(extractor, JASON, speaker="User", reference_time=REF)).extractor == "ollama"
    await model.aclose()


async def test_ollama_mode_tries_the_model_on_every_call(fake_ollama: FakeOllama) -> None:
    model = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=5)
    extractor = FallbackExtractor(model, RulesExtractor(), mode="ollama")
    fake_ollama.fail("http500", times=1)
    assert (await run_extractor(extractor, JASON, speaker="User", reference_time=REF)).extractor == "rules"
    assert (await run_extractor(extractor, JASON, speaker="User", reference_time=REF)).extractor == "ollama"
    await model.aclose()


async def test_the_background_watch_probes_again_and_again(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    fake_ollama.models = []
    settings = ollama_settings(tmp_path / "m.db", fake_ollama.url, extractor="auto")
    with anyio.fail_after(10):
        async with open_extractor(settings, recheck_seconds=0.01) as extractor:
            assert isinstance(extractor, FallbackExtractor)
            while extractor.availability is None:
                await anyio.sleep(0.01)
            assert not extractor.availability.ok
            fake_ollama.models = [MODEL]
            while not extractor.availability.ok:
                await anyio.sleep(0.01)
    assert sum(path == "/api/tags" for _, path, _ in fake_ollama.requests) >= 2


async def test_start_up_does_not_wait_for_a_hanging_ollama(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    fake_ollama.fail("timeout")  # chat hangs; tags still answer
    settings = ollama_settings(tmp_path / "m.db", fake_ollama.url, extractor="auto", timeout=0.5)
    with anyio.fail_after(10):
        async with Client(create_server(settings)) as client:
            stored = await _store(client, JASON)
    assert [m["extractor"] for m in stored["memories"]] == ["rules"] * 3
    assert "did not reply within 0.5 s" in stored["warnings"][0]


async def test_rules_setting_never_contacts_ollama(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    settings = ollama_settings(tmp_path / "m.db", fake_ollama.url, extractor="rules")
    async with Client(create_server(settings)) as client:
        stored = await _store(client, JASON)
    assert [m["extractor"] for m in stored["memories"]] == ["rules"] * 3
    assert fake_ollama.requests == []


async def test_fake_server_answers_version_and_embed_like_ollama(fake_ollama: FakeOllama) -> None:
    import httpx
    from ollama import AsyncClient

    client = AsyncClient(host=fake_ollama.url)
    embedded = await client.embed(model=MODEL, input=["a", "b"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 8
    await client.close()  # type: ignore[no-untyped-call]
    async with httpx.AsyncClient(base_url=fake_ollama.url) as raw:
        assert json.loads((await raw.get("/api/version")).text)["version"]


@pytest.mark.parametrize("mode", ["auto", "ollama", "rules"])
async def test_an_error_inside_open_extractor_comes_out_unchanged(
    tmp_path: Path, fake_ollama: FakeOllama, mode: str
) -> None:
    settings = ollama_settings(tmp_path / "m.db", fake_ollama.url, extractor=mode)
    with pytest.raises(LookupError, match="from the body"):
        async with open_extractor(settings):
            raise LookupError("from the body")
