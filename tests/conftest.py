from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
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
    return Settings(db_path=str(db_path), extractor="rules", default_user="default", max_message_bytes=32 * 1024)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    from harmonia_mcp.server import create_server

    async with Client(create_server(settings), raise_exceptions=True) as connected:
        yield connected
