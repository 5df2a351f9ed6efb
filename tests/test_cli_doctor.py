"""`harmonia-mcp doctor` reports on Ollama: host, version, the model, one timed extraction."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_ollama import FakeOllama

from harmonia_mcp.cli import main


def _doctor(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db: Path, host: str) -> str:
    monkeypatch.setenv("OLLAMA_HOST", host)
    monkeypatch.setenv("HARMONIA_EXTRACTOR", "auto")
    monkeypatch.setenv("HARMONIA_OLLAMA_MODEL", "llama3.2:3b")
    assert main(["doctor", "--db", str(db)]) == 0
    return capsys.readouterr().out


def test_doctor_runs_a_timed_test_extraction_when_the_model_is_pulled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    out = _doctor(monkeypatch, capsys, tmp_path / "d.db", fake_ollama.url)
    assert f"Ollama:    {fake_ollama.url} answers, version 0.6.0-fake" in out
    assert "model:     llama3.2:3b is pulled" in out
    assert "test:      3 memories in " in out and "[work] User works as a software engineer at AWS" in out
    assert "extractor: ollama (HARMONIA_EXTRACTOR=auto)" in out


def test_doctor_says_how_to_pull_a_missing_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    fake_ollama.models = []
    out = _doctor(monkeypatch, capsys, tmp_path / "d.db", fake_ollama.url)
    assert "run `ollama pull llama3.2:3b`" in out
    assert "test:" not in out
    assert "extractor: rules (HARMONIA_EXTRACTOR=auto, until Ollama and the model answer)" in out
    assert fake_ollama.chat_requests() == []


def test_doctor_reports_an_ollama_that_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, refused_url: str
) -> None:
    out = _doctor(monkeypatch, capsys, tmp_path / "d.db", refused_url)
    assert f"Ollama:    {refused_url} does not answer" in out
    assert "extractor: rules" in out


def test_doctor_shows_the_extraction_queue_depth_failures_and_latency(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    import anyio
    from mcp import Client

    from harmonia_mcp.config import Settings
    from harmonia_mcp.server import create_server

    db = tmp_path / "d.db"
    settings = Settings.model_validate(
        {
            "db_path": str(db),
            "extractor": "ollama",
            "extraction": "async",
            "ollama_host": fake_ollama.url,
            "ollama_max_retries": 0,
            "extraction_max_attempts": 1,
        }
    )

    async def fill() -> None:
        async with Client(create_server(settings)) as client:
            for message in ("I have a dentist appointment tomorrow at 2pm.", "ok thanks! I like tea."):
                stored = (await client.call_tool("store_memory", {"message": message})).structured_content
                assert stored is not None
                with anyio.fail_after(60):
                    while True:
                        status = await client.call_tool("extraction_status", {"job_id": stored["job_id"]})
                        assert status.structured_content is not None
                        if status.structured_content["job"]["status"] in ("done", "failed"):
                            break
                        await anyio.sleep(0.02)

    anyio.run(fill)  # the second message has no recording: the fake answers HTTP 500
    out = _doctor(monkeypatch, capsys, db, fake_ollama.url)
    assert "queue:     async (HARMONIA_EXTRACTION); 0 pending, 0 running, 1 done, 1 failed;" in out
    assert " s p95 until the model's memories land" in out
    assert "newest error: Ollama at" in out and "HTTP 500" in out
