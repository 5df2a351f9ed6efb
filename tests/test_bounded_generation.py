"""Bounded generation (issue 13): a token cap, keep_alive and a repeat penalty on every model call, a timeout
that really cancels the request, and the "slow" state, against the fake Ollama server over real HTTP."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import anyio
import pytest
from fake_ollama import FakeOllama

from harmonia_mcp.extract import ExtractionError
from harmonia_mcp.extract.ollama import OllamaExtractor
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.extract.select import SLOW_AFTER, FallbackExtractor

pytestmark = pytest.mark.anyio

REF = datetime(2024, 8, 19, 10, 0, tzinfo=ZoneInfo("America/New_York"))
JASON = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."
MODEL = "llama3.2:3b"


async def test_every_chat_caps_its_tokens_and_sends_keep_alive_and_a_repeat_penalty(fake_ollama: FakeOllama) -> None:
    extractor = OllamaExtractor(
        fake_ollama.url, MODEL, timeout_seconds=5, max_tokens=77, keep_alive="12m", repeat_penalty=1.3
    )
    await extractor.extract(JASON, speaker="User", reference_time=REF)
    await extractor.aclose()
    (request,) = fake_ollama.chat_requests()
    assert request["options"]["num_predict"] == 77
    assert request["options"]["repeat_penalty"] == 1.3
    assert request["keep_alive"] == "12m"


async def test_a_runaway_reply_is_cut_by_the_cap_and_reported_as_invalid_not_as_a_timeout(
    fake_ollama: FakeOllama,
) -> None:
    # The fake repeats a word until num_predict; without the cap it would hold the request until the
    # 30 s timeout, and the error would say "did not reply".
    fake_ollama.fail("runaway")
    extractor = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=30, max_retries=1, max_tokens=40)
    with pytest.raises(ExtractionError) as caught:
        await extractor.extract(JASON, speaker="User", reference_time=REF)
    await extractor.aclose()
    assert "gave no valid reply in 2 attempts" in caught.value.reason
    assert "not JSON" in caught.value.reason
    assert not caught.value.timed_out
    assert len(fake_ollama.chat_requests()) == 2


async def test_a_timeout_cancels_the_request_so_the_server_can_stop_generating(fake_ollama: FakeOllama) -> None:
    fake_ollama.fail("timeout")
    extractor = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=0.5)
    with pytest.raises(ExtractionError) as caught:
        await extractor.extract(JASON, speaker="User", reference_time=REF)
    assert caught.value.timed_out and caught.value.unavailable
    # The client is still open: only cancelling the request can have closed the connection.
    with anyio.fail_after(10):
        while fake_ollama.cancelled < 1:
            await anyio.sleep(0.02)
    await extractor.aclose()
    assert fake_ollama.cancelled == 1


async def test_a_model_that_times_out_twice_in_a_row_is_slow_and_left_alone_then_recovers(
    fake_ollama: FakeOllama,
) -> None:
    model = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=0.3, max_retries=0)
    extractor = FallbackExtractor(model, RulesExtractor(), mode="auto", slow_retry_seconds=3600)
    fake_ollama.fail("timeout", times=SLOW_AFTER)
    for _ in range(SLOW_AFTER):
        report = await extractor.extract_with_report(JASON, speaker="User", reference_time=REF)
        assert report.extractor == "rules"
    assert extractor.state == "slow"
    assert len(fake_ollama.chat_requests()) == SLOW_AFTER
    # Left alone: the next message does not reach the model; a probe (tags still answer) does not clear it.
    assert (await extractor.refresh()).ok
    report = await extractor.extract_with_report(JASON, speaker="User", reference_time=REF)
    assert report.extractor == "rules"
    assert f"timed out {SLOW_AFTER} times in a row" in report.warnings[0]
    assert len(fake_ollama.chat_requests()) == SLOW_AFTER
    # Due again (the retry interval has passed): a reply in time makes it ok.
    extractor.slow_retry_seconds = 0.0
    report = await extractor.extract_with_report(JASON, speaker="User", reference_time=REF)
    await model.aclose()
    assert report.extractor == "ollama"
    assert extractor.state == "ok"


async def test_one_timeout_is_not_slow_and_a_down_server_is_down_not_slow(
    fake_ollama: FakeOllama, refused_url: str
) -> None:
    model = OllamaExtractor(fake_ollama.url, MODEL, timeout_seconds=0.3, max_retries=0)
    extractor = FallbackExtractor(model, RulesExtractor(), mode="auto")
    fake_ollama.fail("timeout", times=1)
    await extractor.extract_with_report(JASON, speaker="User", reference_time=REF)
    assert extractor.state == "unknown"
    assert (await extractor.extract_with_report(JASON, speaker="User", reference_time=REF)).extractor == "ollama"
    assert extractor.state == "ok"
    await model.aclose()
    down = FallbackExtractor(OllamaExtractor(refused_url, MODEL, timeout_seconds=2), RulesExtractor(), mode="auto")
    await down.extract_with_report(JASON, speaker="User", reference_time=REF)
    assert down.state == "down"
    await down.model.aclose()
