"""resources/list under bearer tokens (issue 16.5): a token sees only its own user's `recent` resource, and
reading another user's URI says which URIs it may read. Over streamable HTTP, as a process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import MCPError
from remote_server import RunningServer, call, connect, running

pytestmark = pytest.mark.anyio

ALICE = "alice-0123456789-token-AAAAAAAA"
BOB = "bob-0123456789-token-BBBBBBBBBBBB"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder: Path = tmp_path_factory.mktemp("listed")
    tokens = folder / "tokens"
    tokens.write_text(f"{ALICE} alice\n{BOB} bob\n", encoding="utf-8")
    tokens.chmod(0o600)
    with running(folder, "streamable-http", env={"HARMONIA_AUTH_TOKENS_FILE": str(tokens)}) as started:
        yield started


async def test_a_token_lists_only_its_own_users_recent_resource(server: RunningServer) -> None:
    async with connect(server, BOB) as bob:
        await call(bob, "store_memory", {"message": "I have a cat called Tom"})
    async with connect(server, ALICE) as alice:
        await call(alice, "store_memory", {"message": "I have a dog called Biggie"})
        listed = await alice.list_resources()
    uris = [str(resource.uri) for resource in listed.resources]
    assert uris == ["memory://alice/recent"]
    assert listed.resources[0].mime_type == "text/markdown"


async def test_reading_another_users_uri_names_the_uris_the_token_may_read(server: RunningServer) -> None:
    async with connect(server, ALICE) as alice:
        with pytest.raises(MCPError) as refused:
            await alice.read_resource("memory://bob/recent")
        own = await alice.read_resource("memory://alice/recent")
    message = str(refused.value)
    assert "memory://alice/recent" in message and "memory://bob/" in message
    assert "omit user_id" not in message and "Tom" not in message
    assert "Biggie" in own.contents[0].text  # type: ignore[union-attr]
