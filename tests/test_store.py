from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harmonia_mcp import store as store_module
from harmonia_mcp.errors import MemoryNotFound
from harmonia_mcp.models import Category, ExtractedMemory
from harmonia_mcp.store import MIGRATIONS, MemoryFilter, NewMemory, Store, open_store

pytestmark = pytest.mark.anyio


def _new(user: str, content: str, category: Category = Category.FACT, **extra: object) -> NewMemory:
    return NewMemory(user, ExtractedMemory(content=content, category=category, confidence=0.8, **extra), "rules")


async def _insert(store: Store, user: str, content: str, category: Category = Category.FACT) -> str:
    async with store.transaction() as db:
        memory = await store.insert_memory(db, _new(user, content, category))
    return memory.memory_id


def _fts_rows(path: Path, term: str) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?", (term,))]


async def test_a_new_file_is_migrated_to_the_latest_schema_with_wal(db_path: Path) -> None:
    async with open_store(str(db_path)):
        pass
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"memories", "memories_fts", "memory_history"} <= tables


async def test_reopening_a_migrated_file_keeps_its_memories(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        memory_id = await _insert(store, "alice", "Alice has a cat called Tom")
    async with open_store(str(db_path)) as store:
        memory = await store.get_memory("alice", memory_id)
    assert memory.content == "Alice has a cat called Tom"


async def test_a_file_from_a_newer_version_is_refused(db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        async with open_store(str(db_path)):
            pass


async def test_insert_then_get_returns_every_field(db_path: Path) -> None:
    when = datetime(2024, 8, 20, 14, 0, tzinfo=UTC) - timedelta(hours=4)
    async with open_store(str(db_path)) as store:
        async with store.transaction() as db:
            created = await store.insert_memory(
                db,
                NewMemory(
                    "alice",
                    ExtractedMemory(
                        content="Alice has a dentist appointment",
                        category=Category.EVENT,
                        confidence=0.9,
                        entities=["Alice"],
                        tags=["health"],
                        event_time=when,
                    ),
                    "rules",
                    source_message="I have a dentist appointment tomorrow",
                    speaker="Alice",
                    session_id="s1",
                    metadata={"dia_id": "D1:3", "nested": {"n": [1, 2]}},
                ),
            )
        fetched = await store.get_memory("alice", created.memory_id)
    assert fetched == created
    assert fetched.memory_id.startswith("mem_") and len(fetched.memory_id) == 20
    assert fetched.metadata == {"dia_id": "D1:3", "nested": {"n": [1, 2]}}
    assert fetched.event_time == when.isoformat()
    assert fetched.status == "active"


async def test_update_rewrites_the_full_text_index_and_records_history(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        memory_id = await _insert(store, "alice", "Alice works at TechCorp")
        async with store.transaction() as db:
            await store.update_content(db, "alice", memory_id, "Alice works at NewCorp", "I moved to NewCorp")
        history = await store.history("alice", memory_id)
    assert _fts_rows(db_path, "techcorp") == []
    assert len(_fts_rows(db_path, "newcorp")) == 1
    assert [entry["action"] for entry in history] == ["created", "updated"]
    assert history[1]["old_content"] == "Alice works at TechCorp"
    assert history[1]["new_content"] == "Alice works at NewCorp"


async def test_soft_delete_hides_the_memory_but_keeps_row_and_history(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        memory_id = await _insert(store, "alice", "Alice likes green tea")
        async with store.transaction() as db:
            await store.soft_delete(db, "alice", memory_id)
        with pytest.raises(MemoryNotFound):
            await store.get_memory("alice", memory_id)
        kept = await store.get_memory("alice", memory_id, include_inactive=True)
        hits, total = await store.search("alice", '"tea"', MemoryFilter(), limit=10, offset=0)
        history = await store.history("alice", memory_id)
    assert kept.status == "deleted"
    assert (hits, total) == ([], 0)
    assert [entry["action"] for entry in history] == ["created", "deleted"]


async def test_deleting_twice_or_an_unknown_id_raises_memory_not_found(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        memory_id = await _insert(store, "alice", "Alice likes green tea")
        async with store.transaction() as db:
            await store.soft_delete(db, "alice", memory_id)
        with pytest.raises(MemoryNotFound, match="already deleted"):
            async with store.transaction() as db:
                await store.soft_delete(db, "alice", memory_id)
        with pytest.raises(MemoryNotFound):
            async with store.transaction() as db:
                await store.soft_delete(db, "alice", "mem_0000000000000000")


async def test_hard_delete_of_a_row_removes_it_from_the_index(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        await _insert(store, "alice", "Alice plays the cello")
        async with store.transaction() as db:
            await db.execute("DELETE FROM memory_history WHERE user_id = 'alice'")
            await db.execute("DELETE FROM memories WHERE user_id = 'alice'")
    assert _fts_rows(db_path, "cello") == []


async def test_users_never_see_each_others_memories(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        alice_id = await _insert(store, "alice", "Alice has a secret recipe for pancakes")
        await _insert(store, "bob", "Bob has a secret recipe for waffles")
        bob_hits, _ = await store.search("bob", '"secret"', MemoryFilter(), limit=10, offset=0)
        bob_list, bob_total = await store.list_memories("bob", MemoryFilter())
        with pytest.raises(MemoryNotFound):
            await store.get_memory("bob", alice_id)
        with pytest.raises(MemoryNotFound):
            async with store.transaction() as db:
                await store.soft_delete(db, "bob", alice_id)
        still_there = await store.get_memory("alice", alice_id)
    assert [hit.memory.content for hit in bob_hits] == ["Bob has a secret recipe for waffles"]
    assert bob_total == 1 and bob_list[0].user_id == "bob"
    assert still_there.status == "active"


async def test_a_failed_transaction_leaves_nothing_behind(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        with pytest.raises(ZeroDivisionError):
            async with store.transaction() as db:
                await store.insert_memory(db, _new("alice", "Alice owns a boat"))
                _ = 1 / 0
        memories, total = await store.list_memories("alice", MemoryFilter())
    assert (memories, total) == ([], 0)
    assert _fts_rows(db_path, "boat") == []


async def test_list_filters_by_category_and_confidence_and_pages_exactly(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        for number in range(7):
            await _insert(store, "alice", f"Alice fact number {number}", Category.WORK if number % 2 else Category.FACT)
        work, work_total = await store.list_memories("alice", MemoryFilter(category=Category.WORK))
        page1, total = await store.list_memories("alice", MemoryFilter(), limit=3, offset=0)
        page3, _ = await store.list_memories("alice", MemoryFilter(), limit=3, offset=6)
        oldest, _ = await store.list_memories("alice", MemoryFilter(), descending=False, limit=1)
        confident, confident_total = await store.list_memories("alice", MemoryFilter(min_confidence=0.95))
    assert work_total == 3 and {memory.category for memory in work} == {Category.WORK}
    assert total == 7
    assert [memory.content for memory in page1] == [f"Alice fact number {n}" for n in (6, 5, 4)]
    assert [memory.content for memory in page3] == ["Alice fact number 0"]
    assert oldest[0].content == "Alice fact number 0"
    assert (confident, confident_total) == ([], 0)


async def test_date_filters_use_utc_and_exclusive_end(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        await _insert(store, "alice", "Alice stored this now")
        now = datetime.now(UTC)
        after, after_total = await store.list_memories("alice", MemoryFilter(from_date=now + timedelta(minutes=1)))
        before, before_total = await store.list_memories("alice", MemoryFilter(to_date=now - timedelta(minutes=1)))
        around, around_total = await store.list_memories(
            "alice", MemoryFilter(from_date=now - timedelta(minutes=1), to_date=now + timedelta(minutes=1))
        )
    assert after_total == before_total == 0
    assert around_total == 1 and around[0].content == "Alice stored this now"


async def test_memory_path_gives_a_private_working_database() -> None:
    async with open_store(":memory:") as store:
        memory_id = await _insert(store, "alice", "Alice sings in a choir")
        hits, total = await store.search("alice", '"choir"', MemoryFilter(), limit=5, offset=0)
        memory = await store.get_memory("alice", memory_id)
    assert total == 1 and hits[0].memory.memory_id == memory_id
    assert memory.content == "Alice sings in a choir"
    async with open_store(":memory:") as fresh:
        assert (await fresh.list_memories("alice", MemoryFilter()))[1] == 0


async def test_a_read_started_while_another_read_is_open_still_sees_committed_writes(db_path: Path) -> None:
    import anyio

    async with open_store(str(db_path)) as store:
        await _insert(store, "alice", "Alice has a cat")
        await _insert(store, "alice", "Alice has a dog")
        opened, release, read_done = anyio.Event(), anyio.Event(), anyio.Event()
        outcome: list[object] = []

        async def another_clients_read() -> None:
            # A read still stepping through its rows (private access: no public method pauses mid-read).
            async with store._reader.execute("SELECT memory_id FROM memories") as cursor:
                await cursor.fetchone()
                opened.set()
                await release.wait()

        async def read_the_new_memory(memory_id: str) -> None:
            try:
                outcome.append((await store.get_memory("alice", memory_id)).content)
            except MemoryNotFound as error:
                outcome.append(error)
            read_done.set()

        async with anyio.create_task_group() as group:
            group.start_soon(another_clients_read)
            await opened.wait()
            new_id = await _insert(store, "alice", "Alice has a parrot")
            group.start_soon(read_the_new_memory, new_id)
            # Give the new read every chance to run inside the open read's snapshot before that ends.
            with anyio.move_on_after(0.5):
                await read_done.wait()
            release.set()
        assert outcome == ["Alice has a parrot"]


async def test_one_trip_work_runs_on_aiosqlites_connection_thread_inside_the_open_transaction(tmp_path: Path) -> None:
    # store._on_thread leans on aiosqlite's private queue (`Connection._execute`); pyproject caps aiosqlite to the
    # releases where it exists, and this says so plainly if a release changes it.
    import threading

    import aiosqlite

    from harmonia_mcp.store import _on_thread

    async with aiosqlite.connect(tmp_path / "t.db") as db:
        await db.execute("CREATE TABLE t (x INTEGER)")
        await db.commit()
        await db.execute("BEGIN")
        await db.execute("INSERT INTO t VALUES (1)")

        def work(connection: sqlite3.Connection) -> tuple[int, int, bool]:
            (count,) = connection.execute("SELECT count(*) FROM t").fetchone()
            return count, threading.get_ident(), connection.in_transaction

        count, thread, in_transaction = await _on_thread(db, work)
        assert (count, in_transaction) == (1, True) and thread != threading.get_ident()
        await db.rollback()
        assert (await _on_thread(db, work))[0] == 0


async def test_memory_numbers_count_per_user_and_are_never_given_twice(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        first = await _insert(store, "alice", "Alice has a cat")
        second = await _insert(store, "alice", "Alice plays chess")
        bobs = await _insert(store, "bob", "Bob has a dog")
        third = await _insert(store, "alice", "Alice lives in Leeds")
        assert await store.numbers("alice", [third, first, second, bobs]) == {first: 1, second: 2, third: 3}
        assert await store.numbers("bob", [bobs, first]) == {bobs: 1}  # another user's id is left out
        async with store.transaction() as db:
            await store.purge(db, "alice", [third])
        fourth = await _insert(store, "alice", "Alice lives in York")
        assert await store.numbers("alice", [fourth]) == {fourth: 4}  # 3 was given once, to a purged memory
        assert await store.memory_id_by_number("alice", 3) is None
        assert await store.memory_id_by_number("alice", 4) == fourth
        assert await store.memory_id_by_number("bob", 1) == bobs
        assert await store.memory_id_by_number("bob", 2) is None
        async with store.transaction() as db:
            await store.erase_user(db, "alice")
        again = await _insert(store, "alice", "Alice has a parrot")
        assert await store.numbers("alice", [again]) == {again: 1}  # erasure keeps no trace of the user
        assert await store.memory_id_by_number("bob", 1) == bobs
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT user_id, last_number FROM memory_numbers ORDER BY user_id").fetchall() == [
            ("alice", 1),
            ("bob", 1),
        ]


async def test_a_file_from_before_memory_numbers_is_numbered_in_the_order_its_memories_were_stored(
    db_path: Path,
) -> None:
    from harmonia_mcp.store import _M011_MEMORY_NUMBERS

    with sqlite3.connect(db_path) as db:
        for number, script in enumerate(MIGRATIONS[: MIGRATIONS.index(_M011_MEMORY_NUMBERS)], start=1):
            db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        db.executemany(
            "INSERT INTO memories (memory_id, user_id, content, category, confidence, extractor, created_at, "
            "updated_at) VALUES (?, ?, ?, 'fact', 0.8, 'rules', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')",
            [
                ("mem_000000000000000c", "alice", "Alice has a cat"),
                ("mem_000000000000000b", "bob", "Bob has a dog"),
                ("mem_000000000000000a", "alice", "Alice plays chess"),
            ],
        )
    async with open_store(str(db_path)) as store:
        numbers = await store.numbers("alice", ["mem_000000000000000a", "mem_000000000000000c"])
        assert numbers == {"mem_000000000000000c": 1, "mem_000000000000000a": 2}  # by rowid, not by id
        assert await store.numbers("bob", ["mem_000000000000000b"]) == {"mem_000000000000000b": 1}
        later = await _insert(store, "alice", "Alice lives in Leeds")
        assert await store.numbers("alice", [later]) == {later: 3}


async def test_own_names_are_the_users_active_name_memories_newest_first_through_their_index(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        old = await _insert(store, "alice", "User's name is Alicia Moreno", Category.PERSONAL)
        await _insert(store, "alice", "User goes by Ali", Category.PERSONAL)
        await _insert(store, "alice", "User's sister's name is Carmen", Category.RELATIONSHIP)  # not the user's
        await _insert(store, "alice", "user goes by Lowercase")  # not the extractors' words: GLOB is exact
        deleted = await _insert(store, "alice", "User's nickname is Lala", Category.PERSONAL)
        await _insert(store, "bob", "User's name is Robert Smith", Category.PERSONAL)
        async with store.transaction() as db:
            await store.soft_delete(db, "alice", deleted)
            await store.set_status(db, "alice", old, "superseded", expected=["active"])
        await _insert(store, "alice", "User's full name is Alicia Moreno Ruiz", Category.PERSONAL)
        assert await store.own_names("alice") == ["User's full name is Alicia Moreno Ruiz", "User goes by Ali"]
        assert await store.own_names("bob") == ["User's name is Robert Smith"]
        assert await store.own_names("carol") == []
    with sqlite3.connect(db_path) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT content FROM memories WHERE user_id = 'alice' AND "
            + store_module._OWN_NAMES
            + " ORDER BY updated_at DESC"
        ).fetchall()
    assert "memories_own_names" in str(plan)  # the index's WHERE is the query's, word for word
