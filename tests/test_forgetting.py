"""Forgetting through the MCP client: delete hides a fact from every answer, purge removes it from the file,
erasing a user removes everything of theirs (docs/forgetting.md). Real SQLite files throughout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client
from mcp.types import TextResourceContents
from mcp_calls import call as _call
from mcp_calls import error as _error
from mcp_calls import exported_memory

from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

JASON = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."
# The word and the porter stem FTS5 stores for it ("biggie" -> "biggi").
SECRET_BYTES = (b"Biggie", b"biggie", b"BIGGIE", b"biggi")


async def _resource(client: Client, uri: str) -> str:
    result = await client.read_resource(uri)
    content = result.contents[0]
    assert isinstance(content, TextResourceContents)
    return content.text


async def _everything_visible(client: Client, user: str = "default") -> str:
    """Every answer a client can get without include_inactive, as one string."""
    parts: list[str] = []
    for query in ("Biggie", "dog", "Jason", "AWS", "*"):
        found = await _call(
            client, "search_memories", {"query": query, "user_id": user, "include_metadata": True, "limit": 100}
        )
        parts.append(json.dumps(found))
    listed = await _call(client, "list_memories", {"user_id": user})
    parts.append(json.dumps(listed))
    for fmt in ("json", "csv", "markdown", "text"):
        exported = await _call(client, "export_memories", {"user_id": user, "format": fmt})
        parts.append(exported["data"])
    parts.append(await _resource(client, f"memory://{user}/recent"))
    for memory in listed["memories"]:
        parts.append(await _resource(client, f"memory://{user}/{memory['memory_id']}"))
        parts.append(json.dumps(await _call(client, "get_memory", {"memory_id": memory["memory_id"], "user_id": user})))
    return "\n".join(parts)


async def _store_jason(client: Client) -> dict[str, str]:
    stored = await _call(client, "store_memory", {"message": JASON})
    return {memory["content"]: memory["memory_id"] for memory in stored["memories"]}


async def test_deleting_the_dog_hides_biggie_from_every_answer_and_restore_brings_it_back(client: Client) -> None:
    ids = await _store_jason(client)
    # A later message of the same conversation carries the first as context.
    await _call(client, "store_memory", {"message": "I live in Porto."})
    assert "Biggie" in await _everything_visible(client)

    await _call(client, "delete_memory", {"memory_id": ids["User has a dog called Biggie"]})
    visible = await _everything_visible(client)
    assert "Biggie" not in visible
    assert (await _call(client, "search_memories", {"query": "Biggie"}))["results"] == []
    # The other facts of the message are still found, with what remains of their message.
    jason = (await _call(client, "search_memories", {"query": "Jason", "include_metadata": True}))["results"]
    assert jason[0]["content"] == "User's name is Jason Thompson"
    assert "software engineer at AWS" in (jason[0]["source_message"] or "")
    porto = (await _call(client, "search_memories", {"query": "Porto"}))["results"]
    assert porto[0]["content"] == "User lives in Porto"

    await _call(client, "restore_memory", {"memory_id": ids["User has a dog called Biggie"]})
    found = await _call(client, "search_memories", {"query": "Biggie", "limit": 10})
    assert {hit["content"] for hit in found["results"]} >= {"User has a dog called Biggie"}
    assert "I have a dog called Biggie" in await _everything_visible(client)
    details = await _call(client, "get_memory", {"memory_id": ids["User's name is Jason Thompson"]})
    assert details["memory"]["source_message"] == JASON


async def test_deleting_the_name_keeps_the_dog_findable(client: Client) -> None:
    ids = await _store_jason(client)
    await _call(client, "delete_memory", {"memory_id": ids["User's name is Jason Thompson"]})
    assert (await _call(client, "search_memories", {"query": "Thompson"}))["results"] == []
    dog = (await _call(client, "search_memories", {"query": "Biggie"}))["results"]
    assert dog[0]["content"] == "User has a dog called Biggie"
    assert all("Thompson" not in json.dumps(hit) for hit in dog)


def _raw_bytes(db_path: Path) -> dict[str, bytes]:
    files = {}
    for suffix in ("", "-wal"):
        path = Path(f"{db_path}{suffix}")
        files[path.name] = path.read_bytes() if path.exists() else b""
    return files


async def test_purge_leaves_no_byte_of_the_fact_in_the_file_its_wal_or_the_index(client: Client, db_path: Path) -> None:
    ids = await _store_jason(client)
    await _call(client, "store_memory", {"message": "I live in Porto."})
    for number in range(30):  # enough rows that the index has several segments to merge
        await _call(client, "store_memory", {"message": f"I visited museum number {number} in Lisbon."})
    assert any(word in data for data in _raw_bytes(db_path).values() for word in SECRET_BYTES)

    result = await _call(client, "delete_memory", {"memory_id": ids["User has a dog called Biggie"], "purge": True})
    assert result == {"memory_id": ids["User has a dog called Biggie"], "deleted": True, "purged": True}

    for name, data in _raw_bytes(db_path).items():
        for word in SECRET_BYTES:
            assert word not in data, f"{word!r} is still in {name}"
    assert "Biggie" not in await _everything_visible(client)
    inactive = await _call(client, "list_memories", {"include_inactive": True, "limit": 100})
    assert ids["User has a dog called Biggie"] not in {memory["memory_id"] for memory in inactive["memories"]}
    assert "Biggie" not in json.dumps(inactive)
    assert (
        "no memory"
        in (await _error(client, "restore_memory", {"memory_id": ids["User has a dog called Biggie"]})).lower()
    )
    # What the other memories said is intact and still found.
    aws = (await _call(client, "search_memories", {"query": "AWS"}))["results"]
    assert aws[0]["content"] == "User works as a software engineer at AWS"


async def test_purge_after_a_soft_delete_also_removes_it(client: Client, db_path: Path) -> None:
    ids = await _store_jason(client)
    await _call(client, "delete_memory", {"memory_id": ids["User has a dog called Biggie"]})
    await _call(client, "delete_memory", {"memory_id": ids["User has a dog called Biggie"], "purge": True})
    for data in _raw_bytes(db_path).values():
        assert b"Biggie" not in data and b"biggi" not in data


async def test_purging_an_unknown_or_another_users_memory_is_an_error_and_changes_nothing(client: Client) -> None:
    ids = await _call(client, "store_memory", {"message": "I like green tea.", "user_id": "alice"})
    alice_id = ids["memories"][0]["memory_id"]
    message = await _error(client, "delete_memory", {"memory_id": alice_id, "user_id": "bob", "purge": True})
    assert alice_id in message and "bob" in message
    message = await _error(client, "delete_memory", {"memory_id": "mem_0000000000000000", "purge": True})
    assert "mem_0000000000000000" in message
    listed = await _call(client, "list_memories", {"user_id": "alice"})
    assert [memory["memory_id"] for memory in listed["memories"]] == [alice_id]


async def test_erasing_a_user_needs_the_confirmation_and_removes_only_that_user(client: Client, db_path: Path) -> None:
    await _store_jason(client)
    await _call(client, "store_memory", {"message": "I have a cat called Whiskers.", "user_id": "other"})
    message = await _error(client, "delete_user_memories", {"user_id": "default", "confirm": "yes"})
    assert "confirm='default'" in message
    assert (await _call(client, "list_memories", {}))["pagination"]["total_count"] == 3

    erased = await _call(client, "delete_user_memories", {"user_id": "default", "confirm": "default"})
    assert erased["user_id"] == "default" and erased["memories"] == 3
    assert erased["history_rows"] == 3 and erased["messages"] == 1
    assert (await _call(client, "list_memories", {"include_inactive": True}))["pagination"]["total_count"] == 0
    for data in _raw_bytes(db_path).values():
        for word in (b"Biggie", b"biggi", b"Thompson", b"thompson"):
            assert word not in data
    other = await _call(client, "search_memories", {"query": "Whiskers", "user_id": "other"})
    assert [hit["content"] for hit in other["results"]] == ["User has a cat called Whiskers"]
    assert (await _call(client, "list_memories", {"user_id": "other"}))["pagination"]["total_count"] == 1


async def test_the_erase_tool_is_marked_destructive(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    annotations = tools["delete_user_memories"].annotations
    assert annotations is not None and annotations.destructive_hint is True
    assert "confirm" in tools["delete_user_memories"].input_schema["required"]


async def test_a_reopened_file_keeps_what_delete_hid(settings: Settings) -> None:
    async with Client(create_server(settings), raise_exceptions=True) as first:
        ids = await _store_jason(first)
        await _call(first, "delete_memory", {"memory_id": ids["User has a dog called Biggie"]})
    async with Client(create_server(settings), raise_exceptions=True) as second:
        assert (await _call(second, "search_memories", {"query": "Biggie"}))["results"] == []


async def test_imported_memories_of_one_message_hide_each_others_span(settings: Settings) -> None:
    from harmonia_mcp.extract.rules import RulesExtractor
    from harmonia_mcp.server import make_limits
    from harmonia_mcp.service import MemoryService
    from harmonia_mcp.store import open_store

    source = "I live in Porto and my cat is called Mochi."
    memories = [exported_memory(1, "User lives in Porto", source), exported_memory(2, "User's cat is Mochi", source)]
    document = {"user_id": "default", "memories": memories}
    async with open_store(settings.db_path) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        await service.import_memories(json.dumps(document))
        await service.delete_memory("mem_0000000000000002")
        assert (await service.search_memories("Mochi")).results == []
        porto = await service.search_memories("Porto", include_metadata=True)
        assert [hit.source_message for hit in porto.results] == ["I live in Porto and \u2026."]
        await service.restore_memory("mem_0000000000000002")
        back = await service.search_memories("Mochi")
        assert [hit.memory_id for hit in back.results] == ["mem_0000000000000002", "mem_0000000000000001"]


async def test_saying_a_deleted_fact_again_is_remembered_again(client: Client) -> None:
    ids = await _store_jason(client)
    await _call(client, "delete_memory", {"memory_id": ids["User has a dog called Biggie"]})
    again = await _call(client, "store_memory", {"message": "I have a dog called Biggie.", "session_id": "later"})
    assert [memory["action"] for memory in again["memories"]] == ["created"]
    found = await _call(client, "search_memories", {"query": "Biggie"})
    assert [hit["content"] for hit in found["results"]] == ["User has a dog called Biggie"]


async def test_a_version_4_file_migrates_and_the_index_stays_consistent_through_forgetting(db_path: Path) -> None:
    import sqlite3

    from harmonia_mcp.store import _M004_FTS_OWNER, MIGRATIONS, MemoryFilter, open_store

    with sqlite3.connect(db_path) as db:
        for number, script in enumerate(MIGRATIONS[: MIGRATIONS.index(_M004_FTS_OWNER) + 1], start=1):
            db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        for memory_id, content in (
            ("mem_00000000000000aa", "User keeps bees"),
            ("mem_00000000000000bb", "User has a dog called Biggie"),
        ):
            db.execute(
                "INSERT INTO memories (memory_id, user_id, content, category, confidence, extractor, created_at,"
                " updated_at, source_message, message_id) VALUES (?, 'alice', ?, 'fact', 0.7, 'rules',"
                " '2024-01-01T00:00:00.000000+00:00', '2024-01-01T00:00:00.000000+00:00',"
                " 'I keep bees on my roof and I have a dog called Biggie', 7)",
                (memory_id, content),
            )
    async with open_store(str(db_path)) as store:
        before, _ = await store.search("alice", '"biggie"', MemoryFilter(), limit=10, offset=0)
        async with store.transaction() as db:
            await store.soft_delete(db, "alice", "mem_00000000000000bb")
        hidden, total = await store.search("alice", '"biggie"', MemoryFilter(), limit=10, offset=0)
        bees, _ = await store.search("alice", '"roof"', MemoryFilter(), limit=10, offset=0)
        async with store.transaction() as db:
            await store.purge(db, "alice", ["mem_00000000000000bb"])
        await store.compact()
    assert {hit.memory.memory_id for hit in before} == {"mem_00000000000000aa", "mem_00000000000000bb"}
    assert (hidden, total) == ([], 0)
    assert [hit.memory.source_message for hit in bees] == ["I keep bees on my roof and \u2026"]
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('integrity-check')")
        assert db.execute("SELECT source_message FROM memories").fetchall() == [("I keep bees on my roof and \u2026",)]
