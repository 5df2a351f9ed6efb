"""The OpenAI-compatible extractor (issue 13) against the fake server's /v1 routes over real HTTP."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import pytest
from fake_ollama import FakeOllama
from mcp import Client
from pydantic import ValidationError

from harmonia_mcp.config import Settings
from harmonia_mcp.extract import ExtractionError
from harmonia_mcp.extract.ollama import REPLY_SCHEMA
from harmonia_mcp.extract.openai import OpenAIExtractor
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

REF = datetime(2024, 8, 19, 10, 0, tzinfo=ZoneInfo("America/New_York"))
JASON = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."
MODEL = "llama3.2:3b"


def _extractor(fake: FakeOllama, **options: object) -> OpenAIExtractor:
    return OpenAIExtractor(f"{fake.url}/v1", MODEL, **options)  # type: ignore[arg-type]


def _chats(fake: FakeOllama) -> list[dict[str, object]]:
    return [body for _, path, body in fake.requests if path == "/v1/chat/completions"]


async def test_the_request_carries_the_schema_the_token_cap_and_a_repeat_penalty(fake_ollama: FakeOllama) -> None:
    extractor = _extractor(fake_ollama, max_tokens=99, repeat_penalty=1.2)
    memories = await extractor.extract(JASON, speaker="User", reference_time=REF)
    await extractor.aclose()
    assert [m.content for m in memories][1] == "User works as a software engineer at AWS"
    (request,) = _chats(fake_ollama)
    assert request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "extraction_reply", "schema": REPLY_SCHEMA},
    }
    assert request["max_tokens"] == 99 and request["repeat_penalty"] == 1.2
    assert extractor.schema_supported is True


async def test_a_server_without_structured_outputs_is_asked_without_the_schema_from_then_on(
    fake_ollama: FakeOllama,
) -> None:
    fake_ollama.openai_schema = False
    extractor = _extractor(fake_ollama)
    first = await extractor.extract(JASON, speaker="User", reference_time=REF)
    second = await extractor.extract(JASON, speaker="User", reference_time=REF)
    await extractor.aclose()
    assert len(first) == len(second) == 3
    assert ["response_format" in body for body in _chats(fake_ollama)] == [True, False, False]
    assert extractor.schema_supported is False


async def test_an_invalid_reply_gets_one_repair_turn_that_shows_the_model_what_was_wrong(
    fake_ollama: FakeOllama,
) -> None:
    fake_ollama.fail("invalid_json", times=1)
    extractor = _extractor(fake_ollama)
    memories = await extractor.extract(JASON, speaker="User", reference_time=REF)
    await extractor.aclose()
    assert len(memories) == 3
    repair = _chats(fake_ollama)[1]["messages"]
    assert isinstance(repair, list)
    assert repair[-2]["role"] == "assistant" and repair[-2]["content"].startswith("Sure! Here are")
    assert repair[-1]["role"] == "user" and "not valid: not JSON" in repair[-1]["content"]


async def test_two_invalid_replies_are_an_extraction_error(fake_ollama: FakeOllama) -> None:
    fake_ollama.fail("schema")
    extractor = _extractor(fake_ollama)
    with pytest.raises(ExtractionError) as caught:
        await extractor.extract(JASON, speaker="User", reference_time=REF)
    await extractor.aclose()
    assert "gave no valid reply in 2 attempts" in caught.value.reason and not caught.value.unavailable


async def test_the_api_key_is_sent_as_a_bearer_token_and_never_logged(
    fake_ollama: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    fake_ollama.api_key = "sk-right-key"
    caplog.set_level(logging.DEBUG)
    good = _extractor(fake_ollama, api_key="sk-right-key")
    assert len(await good.extract(JASON, speaker="User", reference_time=REF)) == 3
    await good.aclose()
    assert fake_ollama.headers[-1]["authorization"] == "Bearer sk-right-key"
    wrong = _extractor(fake_ollama, api_key="sk-wrong-secret")
    with pytest.raises(ExtractionError) as caught:
        await wrong.extract(JASON, speaker="User", reference_time=REF)
    assert "refused the API key (HTTP 401)" in caught.value.reason
    assert not (await wrong.probe()).ok
    await wrong.aclose()
    assert "sk-wrong-secret" not in caught.value.reason
    assert "sk-right-key" not in caplog.text and "sk-wrong-secret" not in caplog.text


async def test_an_unknown_model_and_a_refused_connection_are_unavailable(
    fake_ollama: FakeOllama, refused_url: str
) -> None:
    unknown = OpenAIExtractor(f"{fake_ollama.url}/v1", "no-such-model")
    with pytest.raises(ExtractionError) as caught:
        await unknown.extract(JASON, speaker="User", reference_time=REF)
    await unknown.aclose()
    assert (
        caught.value.unavailable and "HTTP 404" in caught.value.reason and "HARMONIA_LLM_MODEL" in caught.value.reason
    )
    down = OpenAIExtractor(f"{refused_url}/v1", MODEL)
    with pytest.raises(ExtractionError) as refused:
        await down.extract(JASON, speaker="User", reference_time=REF)
    assert refused.value.unavailable and "connection refused" in refused.value.reason
    assert not (await down.probe()).ok
    await down.aclose()


async def test_a_timeout_cancels_the_request(fake_ollama: FakeOllama) -> None:
    fake_ollama.fail("timeout")
    extractor = _extractor(fake_ollama, timeout_seconds=0.5)
    with pytest.raises(ExtractionError) as caught:
        await extractor.extract(JASON, speaker="User", reference_time=REF)
    assert caught.value.timed_out
    with anyio.fail_after(10):
        while fake_ollama.cancelled < 1:
            await anyio.sleep(0.02)
    await extractor.aclose()


def test_extractor_openai_needs_a_base_url_and_a_model(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="HARMONIA_LLM_BASE_URL"):
        Settings(db_path=str(tmp_path / "m.db"), extractor="openai")


async def test_store_memory_through_the_queue_with_the_openai_backend(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    settings = Settings.model_validate(
        {
            "db_path": str(tmp_path / "m.db"),
            "extractor": "openai",
            "llm_base_url": f"{fake_ollama.url}/v1",
            "llm_model": MODEL,
            "timezone": "America/New_York",
        }
    )
    async with Client(create_server(settings)) as client:
        stored = (await client.call_tool("store_memory", {"message": JASON})).structured_content
        assert stored is not None and stored["pending_extraction"]
        with anyio.fail_after(60):
            while True:
                status = (await client.call_tool("extraction_status", {"job_id": stored["job_id"]})).structured_content
                assert status is not None
                if status["job"]["status"] != "pending" and status["job"]["status"] != "running":
                    break
                await anyio.sleep(0.02)
        listed = (await client.call_tool("list_memories", {})).structured_content
    assert status["job"]["status"] == "done" and status["job"]["extractor"] == "openai"
    assert listed is not None and {m["extractor"] for m in listed["memories"]} == {"openai"}
