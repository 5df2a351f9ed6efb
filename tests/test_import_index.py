"""The import indexes each batch in one statement (migration 10, `fts_deferred`): the index must end up exactly as
the per-row trigger would have left it, after a batch that fails half way too, and other writes keep indexing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from harmonia_mcp import store as store_module
from harmonia_mcp.config import Settings
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.server import make_limits
from harmonia_mcp.service import IMPORT_BATCH, MemoryService
from harmonia_mcp.store import ImportRow, open_store

USER = "importer"
ROWS = IMPORT_BATCH * 2 + 7


def _document() -> dict[str, Any]:
    rows = [
        {
            "memory_id": f"mem_{index:016x}",
            "content": f"User has a cat called Kit{index}",
            "category": "relationship",
            "confidence": 0.9,
            "entities": [f"Kit{index}"],
            "tags": ["pets"],
            "event_time": None,
            "source_message": f"I have a cat called Kit{index}.",
            "speaker": "User",
            "session_id": None,
            "metadata": {"n": index},
            "extractor": "rules",
            "status": "active",
            "created_at": "2024-01-01T00:00:00+00:00",
            "updated_at": "2024-01-01T00:00:00+00:00",
        }
        for index in range(ROWS)
    ]
    return {"user_id": USER, "memories": rows}


async def _import(path: Path, document: dict[str, Any]) -> int:
    async with open_store(str(path)) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(Settings(db_path=str(path))))
        return (await service.import_memories(json.dumps(document))).imported


async def _store(path: Path, message: str) -> None:
    async with open_store(str(path)) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(Settings(db_path=str(path))))
        await service.store_memory(message, user_id=USER)


def _ranked(db: sqlite3.Connection, match: str) -> list[tuple[int, float]]:
    return [
        (int(row[0]), round(float(row[1]), 9))
        for row in db.execute(
            "SELECT rowid, bm25(memories_fts) FROM memories_fts WHERE memories_fts MATCH ? ORDER BY rowid", (match,)
        )
    ]


def _assert_index_as_rebuilt(path: Path) -> None:
    """Every memory is found by its own name, and the index scores as one rebuilt from the rows: a row left out,
    or indexed twice (by the trigger and by the import), changes the matches or bm25's statistics."""
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM fts_deferred").fetchone() == (0,)
        names = [
            str(row[0])
            for row in db.execute("SELECT json_extract(entities, '$[0]') AS name FROM memories WHERE name IS NOT NULL")
        ]
        for name in names[:: max(1, len(names) // 50)] + names[-3:]:
            assert len(db.execute("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?", (name,)).fetchall()) == 1
        queries = ["cat", "called OR pets", "hamster OR cat"]
        before = [_ranked(db, query) for query in queries]
        db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")
        assert [_ranked(db, query) for query in queries] == before


def test_an_import_is_indexed_as_the_trigger_would_and_later_writes_are_indexed(tmp_path: Path) -> None:
    path = tmp_path / "import.db"
    assert anyio.run(_import, path, _document()) == ROWS
    anyio.run(_store, path, "I have a hamster called Biscuit.")  # the trigger indexes again after an import
    _assert_index_as_rebuilt(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'biscuit'").fetchone() == (1,)


def test_a_batch_that_fails_after_its_rows_are_in_leaves_no_trace_and_the_rerun_completes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second batch fails after its rows and the flag are written, before it is indexed: the transaction rolls
    # back rows and flag together, the first batch stays whole, and running the import again adds the rest.
    path = tmp_path / "import.db"
    real = store_module._insert_imported
    calls: list[int] = []

    def failing(conn: sqlite3.Connection, rows: Any) -> None:
        real(conn, rows)
        calls.append(1)
        if len(calls) == 2:
            raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(store_module, "_insert_imported", failing)
    with pytest.raises(sqlite3.OperationalError, match="simulated"):
        anyio.run(_import, path, _document())
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM memories").fetchone() == (IMPORT_BATCH,)
        assert db.execute("SELECT count(*) FROM fts_deferred").fetchone() == (0,)
    _assert_index_as_rebuilt(path)
    anyio.run(_store, path, "I have a hamster called Biscuit.")
    monkeypatch.setattr(store_module, "_insert_imported", real)
    assert anyio.run(_import, path, _document()) == ROWS - IMPORT_BATCH
    _assert_index_as_rebuilt(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM memories").fetchone() == (ROWS + 1,)


def test_import_rows_indexes_only_its_own_batch(tmp_path: Path) -> None:
    # Rows written before the batch (by the trigger) are not indexed a second time by the batch's statement.
    path = tmp_path / "rows.db"

    async def scenario() -> None:
        await _store(path, "I have a hamster called Biscuit.")
        async with open_store(str(path)) as store, store.transaction() as db:
            row = ImportRow(
                "mem_00000000000000aa", USER, "User likes tea", "preference", 0.9, [], [], None, None, None, None,
                {}, "rules", "active", "2024-01-01T00:00:00+00:00", "2024-01-01T00:00:00+00:00",
            )  # fmt: skip
            counts = await store.import_rows(db, [row])
            assert counts.inserted == 1

    anyio.run(scenario)
    _assert_index_as_rebuilt(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'biscuit OR tea'").fetchone() == (
            2,
        )
