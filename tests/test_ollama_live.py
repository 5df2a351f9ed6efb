"""Against a real Ollama, when one answers at OLLAMA_HOST with the model pulled; skipped otherwise.

Run with a local Ollama: `ollama pull llama3.2:3b && .venv/bin/pytest -m ollama`.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from mcp import Client

from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server

pytestmark = [pytest.mark.anyio, pytest.mark.ollama]

HOST = os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434")
MODEL = os.environ.get("HARMONIA_OLLAMA_MODEL", "llama3.2:3b")
JASON = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."


def _ollama_with_model() -> str | None:
    """None when a real Ollama with MODEL answers at HOST, else why the test is skipped."""
    url = HOST if "://" in HOST else f"http://{HOST}"
    try:
        tags = httpx.get(f"{url}/api/tags", timeout=2.0).json()
    except (httpx.HTTPError, ValueError) as error:
        return f"no Ollama answers at {url} ({type(error).__name__})"
    names = {model.get("model") or model.get("name") for model in tags.get("models", [])}
    wanted = MODEL if ":" in MODEL else f"{MODEL}:latest"
    return None if wanted in names else f"Ollama at {url} has not pulled {MODEL}"


async def test_a_real_model_stores_the_three_facts_of_the_introduction(tmp_path: Path) -> None:
    reason = _ollama_with_model()
    if reason is not None:
        pytest.skip(reason)
    settings = Settings.model_validate(
        {
            "db_path": str(tmp_path / "live.db"),
            "extractor": "ollama",
            "ollama_host": HOST,
            "ollama_model": MODEL,
            "ollama_timeout_seconds": 120,
        }
    )
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("store_memory", {"message": JASON})
    assert not result.is_error and result.structured_content is not None
    stored = result.structured_content
    assert stored["warnings"] == [], stored["warnings"]
    memories = stored["memories"]
    assert all(memory["extractor"] == "ollama" for memory in memories)
    contents = [memory["content"] for memory in memories]
    assert len(memories) == 3, contents
    name = next(m for m in memories if "Jason Thompson" in m["content"])
    job = next(m for m in memories if "AWS" in m["content"])
    dog = next(m for m in memories if "Biggie" in m["content"])
    assert "software engineer" in job["content"].lower()
    assert "dog" in dog["content"].lower()
    assert name["category"] == "personal" and job["category"] == "work"
    assert dog["category"] in ("relationship", "fact", "personal")
    for content in contents:
        assert not {"i", "my", "me"} & set(content.lower().replace(".", " ").split()), content
