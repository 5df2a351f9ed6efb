"""The owner in the full-text index (migration 4): a version-3 file migrates and stays searchable, and a
MATCH limited to one user's `owner_token` never finds another user's memories, even users whose ids differ
only in case or punctuation and who wrote the same words."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from harmonia_mcp.models import ExtractedMemory
from harmonia_mcp.search import build_match_expression
from harmonia_mcp.store import MIGRATIONS, MemoryFilter, NewMemory, Store, open_store, owned_match, owner_token

pytestmark = pytest.mark.anyio

# Ids that differ only in case, spacing, punctuation or accents: the index must still tell them apart.
USERS = ("alice", "Alice", "ALICE", "al ice", "alice-1", "alice_1", "ålice", "ali\u0301ce", "a", "ab")


async def _insert(store: Store, user: str, content: str, source: str | None = None) -> str:
    async with store.transaction() as db:
        memory = await store.insert_memory(
            db, NewMemory(user, ExtractedMemory(content=content), "rules", source_message=source)
        )
    return memory.memory_id


def test_every_user_id_is_one_token_of_its_own() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE probe USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
    db.execute("CREATE VIRTUAL TABLE probe_vocab USING fts5vocab(probe, 'instance')")
    seen: dict[str, str] = {}
    for user in (*USERS, "", "e", "ed", "ing", "\x00", "日本語", "x" * 300):
        db.execute("DELETE FROM probe")
        db.execute("INSERT INTO probe (body) VALUES (?)", (owner_token(user),))
        terms = [row[0] for row in db.execute("SELECT term FROM probe_vocab")]
        assert len(terms) == 1, (user, terms)
        assert terms[0] not in seen, (user, seen.get(terms[0]))
        seen[terms[0]] = user


def test_the_python_token_is_the_one_sqlite_computes() -> None:
    db = sqlite3.connect(":memory:")
    for user in USERS:
        assert db.execute("SELECT 'u' || hex(?) || '0'", (user,)).fetchone()[0] == owner_token(user)


async def test_search_and_candidates_stay_within_the_user(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        ids = {
            user: await _insert(store, user, "User keeps bees on the roof in Porto", "I keep bees") for user in USERS
        }
        match = build_match_expression("bees Porto")
        assert match is not None
        for user in USERS:
            hits, total = await store.search(user, match, MemoryFilter(), limit=50, offset=0)
            assert [hit.memory.memory_id for hit in hits] == [ids[user]]
            assert total == 1
            # A page past the end still counts only the user's rows.
            assert await store.search(user, match, MemoryFilter(), limit=5, offset=5) == ([], 1)
            async with store.transaction() as db:
                candidates = await store.find_candidates(db, user, match, limit=50)
            assert [hit.memory.memory_id for hit in candidates] == [ids[user]]
        hits, total = await store.search("nobody", match, MemoryFilter(), limit=50, offset=0)
        assert (hits, total) == ([], 0)


async def test_the_index_itself_is_limited_to_the_owner(db_path: Path) -> None:
    """Without the `user_id` condition of the SQL, the owner token alone picks the user's rows."""
    async with open_store(str(db_path)) as store:
        for user in USERS:
            await _insert(store, user, "User plays the cello")
    with sqlite3.connect(db_path) as db:
        for user in USERS:
            rows = db.execute(
                "SELECT m.user_id FROM memories_fts JOIN memories m ON m.rowid = memories_fts.rowid "
                "WHERE memories_fts MATCH ?",
                (owned_match(user, '"cello"'),),
            ).fetchall()
            assert rows == [(user,)]


async def test_a_version_3_file_is_migrated_and_its_memories_stay_searchable(db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        for number, script in enumerate(MIGRATIONS[:3], start=1):
            db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        for memory_id, user in (("mem_00000000000000aa", "alice"), ("mem_00000000000000bb", "bob")):
            db.execute(
                "INSERT INTO memories (memory_id, user_id, content, category, confidence, extractor, created_at,"
                " updated_at, source_message, context) VALUES (?, ?, 'User keeps bees', 'fact', 0.7, 'rules',"
                " '2024-01-01T00:00:00.000000+00:00', '2024-01-01T00:00:00.000000+00:00', 'I keep bees on my roof',"
                " 'Bob: what about the garden?')",
                (memory_id, user),
            )
    async with open_store(str(db_path)) as store:
        by_content, _ = await store.search("alice", '"bees"', MemoryFilter(), limit=10, offset=0)
        by_source, _ = await store.search("alice", '"roof"', MemoryFilter(), limit=10, offset=0)
        by_context, _ = await store.search("bob", '"garden"', MemoryFilter(), limit=10, offset=0)
        # Written after the migration: the triggers fill the owner column too.
        new_id = await _insert(store, "alice", "User keeps goats")
        by_new, _ = await store.search("alice", '"goats"', MemoryFilter(), limit=10, offset=0)
        bob_goats, _ = await store.search("bob", '"goats"', MemoryFilter(), limit=10, offset=0)
    assert [hit.memory.memory_id for hit in by_content] == ["mem_00000000000000aa"]
    assert [hit.memory.memory_id for hit in by_source] == ["mem_00000000000000aa"]
    assert [hit.memory.memory_id for hit in by_context] == ["mem_00000000000000bb"]
    assert [hit.memory.memory_id for hit in by_new] == [new_id]
    assert bob_goats == []
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 4
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('integrity-check')")


async def test_updates_and_deletes_keep_the_index_in_step(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        memory_id = await _insert(store, "alice", "User plays the cello")
        async with store.transaction() as db:
            await db.execute("UPDATE memories SET content = 'User plays the oboe' WHERE memory_id = ?", (memory_id,))
        oboe, _ = await store.search("alice", '"oboe"', MemoryFilter(), limit=10, offset=0)
        cello, _ = await store.search("alice", '"cello"', MemoryFilter(), limit=10, offset=0)
        async with store.transaction() as db:
            await db.execute("DELETE FROM memory_history WHERE memory_id = ?", (memory_id,))
            await db.execute("DELETE FROM memories WHERE memory_id = ?", (memory_id,))
        gone, total = await store.search("alice", '"oboe"', MemoryFilter(), limit=10, offset=0)
    assert [hit.memory.memory_id for hit in oboe] == [memory_id]
    assert (cello, gone, total) == ([], [], 0)
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('integrity-check')")
