from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_ollama import FakeOllama
from mcp import Client

from harmonia_mcp.config import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memories.db"


@pytest.fixture
def settings(db_path: Path) -> Settings:
    # No embedder: most tests do not need meaning, and the model costs CPU on a shared machine (test_semantic.py
    # runs the real one).
    return Settings(
        db_path=str(db_path), extractor="rules", default_user="default", max_message_bytes=32 * 1024, embedder="none"
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    from harmonia_mcp.server import create_server

    async with Client(create_server(settings), raise_exceptions=True) as connected:
        yield connected


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A fake Ollama server on 127.0.0.1 (see tests/fake_ollama.py), stopped after the test."""
    with FakeOllama() as server:
        yield server


@pytest.fixture
def refused_url() -> str:
    """The URL of a 127.0.0.1 port on which nothing listens: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def real_model_server() -> Iterator[str]:
    """The URL of tests/model_server/server.mjs with SmolLM2-135M-Instruct (skips, saying why, when absent)."""
    from real_model import ModelServer, missing

    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    server = ModelServer()
    try:
        yield server.url
    finally:
        server.stop()
