"""The write path's fewer trips to the database (issue 14, second round): a message's candidates are read
in one round with its log entry, an import checks each row once and spools it; the results stay the same."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_calls import call as _call

from harmonia_mcp import service as service_module
from harmonia_mcp.config import Settings
from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.server import make_limits
from harmonia_mcp.service import MemoryService
from harmonia_mcp.store import open_store

pytestmark = pytest.mark.anyio


async def _active(client: Client, user: str) -> list[str]:
    listed = await _call(client, "list_memories", {"user_id": user, "limit": 100})
    return sorted(memory["content"] for memory in listed["memories"])


async def test_a_memory_is_reconciled_against_the_earlier_memories_of_its_own_message(client: Client) -> None:
    # Both memories' candidates are read before the message writes; the second must still see the first.
    result = await _call(client, "store_memory", {"message": "I live in Paris. I moved to Berlin.", "user_id": "ana"})
    paris, berlin = result["memories"]
    assert paris["action"] == "created"
    assert berlin["action"] == "superseded_previous" and berlin["supersedes"] == [paris["memory_id"]]
    assert await _active(client, "ana") == ["User moved to Berlin"]


async def test_a_fact_said_twice_in_one_message_is_stored_once(client: Client) -> None:
    message = "I have a dog called Biggie. I have a dog called Biggie!"
    first, second = (await _call(client, "store_memory", {"message": message, "user_id": "bo"}))["memories"]
    assert (first["action"], second["action"]) == ("created", "skipped")
    assert second["memory_id"] == first["memory_id"]


async def test_after_a_skipped_memory_the_next_one_still_updates_what_was_stored(client: Client) -> None:
    await _call(client, "store_memory", {"message": "I have a dog called Biggie. I live in Paris.", "user_id": "cy"})
    again = {"message": "I have a dog called Biggie. I moved to Berlin.", "user_id": "cy"}
    dog, berlin = (await _call(client, "store_memory", again))["memories"]
    assert dog["action"] == "skipped"
    assert berlin["action"] == "superseded_previous" and len(berlin["supersedes"]) == 1
    assert await _active(client, "cy") == ["User has a dog called Biggie", "User moved to Berlin"]


def _row(number: int) -> dict[str, Any]:
    memory_id = f"mem_{number:016x}"
    return {
        "memory_id": memory_id,
        "content": f"User owns boat number {number}",
        "category": "fact",
        "confidence": 0.8,
        "entities": [f"Boat{number}"],
        "tags": ["boats"],
        "event_time": None,
        "source_message": f"I own boat number {number}",
        "speaker": "User",
        "session_id": "s1",
        "metadata": {"n": number},
        "extractor": "rules",
        "status": "active" if number % 2 else "superseded",
        "created_at": "2024-01-01T10:00:00+00:00",
        "updated_at": "2024-01-02T10:00:00+00:00",
        "occurred_at": f"2023-12-{number + 1:02d}T09:00:00+00:00",
        "history": [
            {"action": "created", "changed_at": "2024-01-01T10:00:00+00:00", "new_content": "User owns a boat"},
            {
                "action": "updated",
                "changed_at": "2024-01-02T10:00:00+00:00",
                "old_content": "User owns a boat",
                "new_content": f"User owns boat number {number}",
            },
        ],
    }


async def test_an_import_in_many_batches_keeps_every_row_its_history_and_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "IMPORT_BATCH", 2)  # 7 rows: four batches through the spool
    document = {"user_id": "dana", "memories": [_row(number) for number in range(7)]}
    settings = Settings(db_path=str(tmp_path / "import.db"))
    async with open_store(settings.db_path) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        done: list[tuple[int, int]] = []
        result = await service.import_memories(json.dumps(document), progress=lambda a, b: done.append((a, b)))
    assert (result.imported, result.skipped, result.new_ids) == (7, 0, 0)
    assert done == [(2, 7), (4, 7), (6, 7), (7, 7)]
    with sqlite3.connect(settings.db_path) as db:
        rows = db.execute(
            "SELECT memory_id, user_id, content, status, metadata, occurred_at FROM memories ORDER BY memory_id"
        ).fetchall()
        history = db.execute(
            "SELECT action, old_content, new_content FROM memory_history WHERE memory_id = ? ORDER BY history_id",
            ("mem_0000000000000005",),
        ).fetchall()
    assert [row[0] for row in rows] == [f"mem_{number:016x}" for number in range(7)]
    assert {row[1] for row in rows} == {"dana"}
    assert rows[5][2:] == ("User owns boat number 5", "active", '{"n": 5}', "2023-12-06T09:00:00+00:00")
    assert rows[4][3] == "superseded"
    assert history == [
        ("created", None, "User owns a boat"),
        ("updated", "User owns a boat", "User owns boat number 5"),
    ]


async def test_an_invalid_last_row_imports_nothing_even_after_whole_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "IMPORT_BATCH", 2)
    bad = _row(6) | {"confidence": 7.0}
    document = {"user_id": "eve", "memories": [*(_row(number) for number in range(6)), bad, _row(3)]}
    settings = Settings(db_path=str(tmp_path / "import.db"))
    async with open_store(settings.db_path) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        with pytest.raises(InvalidInput) as caught:
            await service.import_memories(json.dumps(document))
    assert "memories[6]: confidence 7.0 is out of range" in str(caught.value)
    assert "memories[7]: memory_id 'mem_0000000000000003' repeats memories[3]" in str(caught.value)
    with sqlite3.connect(settings.db_path) as db:
        assert db.execute("SELECT count(*) FROM memories").fetchone()[0] == 0
