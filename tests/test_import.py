"""`harmonia-mcp import FILE`: a JSON export loads back into a database, idempotently by memory_id."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from harmonia_mcp.cli import main
from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server

MESSAGES = [
    "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie.",
    "I have a dentist appointment tomorrow at 2pm.",
    "My sister Maria lives in Lisbon.",
]


async def _export(db_path: Path) -> dict[str, Any]:
    async with Client(create_server(Settings(db_path=str(db_path))), raise_exceptions=True) as client:
        for message in MESSAGES:
            await client.call_tool(
                "store_memory", {"message": message, "user_id": "jason", "occurred_at": "2024-08-19T10:00:00-04:00"}
            )
        result = await client.call_tool("export_memories", {"user_id": "jason", "format": "json"})
    assert result.structured_content is not None
    return json.loads(result.structured_content["data"])


def _rows(db_path: Path, user_id: str) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(db_path) as db:
        return {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT memory_id, content, category, confidence, entities, tags, event_time, event_time_utc, "
                "source_message, speaker, metadata, status, created_at, updated_at FROM memories WHERE user_id = ?",
                (user_id,),
            )
        }


async def _search_and_count(db_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    async with Client(create_server(Settings(db_path=str(db_path))), raise_exceptions=True) as client:
        found = await client.call_tool("search_memories", {"query": "Biggie", "user_id": "jason"})
        listed = await client.call_tool("list_memories", {"user_id": "jason"})
    assert found.structured_content is not None and listed.structured_content is not None
    return found.structured_content, listed.structured_content


def test_an_export_imports_into_another_file_with_every_field_and_is_searchable(tmp_path: Path) -> None:
    document = anyio.run(_export, tmp_path / "source.db")
    (tmp_path / "export.json").write_text(json.dumps(document), encoding="utf-8")
    target = tmp_path / "target.db"
    assert main(["import", str(tmp_path / "export.json"), "--db", str(target)]) == 0
    assert _rows(target, "jason") == _rows(tmp_path / "source.db", "jason")
    found, listed = anyio.run(_search_and_count, target)
    assert found["results"][0]["content"] == "User has a dog called Biggie"
    assert listed["pagination"]["total_count"] == len(document["memories"])
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT count(*) FROM memory_history WHERE action = 'created'").fetchone()[0] == len(
            document["memories"]
        )


def test_importing_twice_adds_nothing_and_user_id_can_be_reassigned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = anyio.run(_export, tmp_path / "source.db")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    target = tmp_path / "target.db"
    count = len(document["memories"])
    assert main(["import", str(path), "--db", str(target)]) == 0
    assert main(["import", str(path), "--db", str(target)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"imported {count} memories for jason; 0 were already there",
        f"imported 0 memories for jason; {count} were already there",
    ]
    # The same ids under another user are the same memories: skipped, never duplicated or moved.
    assert main(["import", str(path), "--db", str(target), "--user-id", "someone"]) == 0
    assert _rows(target, "someone") == {}
    fresh = tmp_path / "fresh.db"
    assert main(["import", str(path), "--db", str(fresh), "--user-id", "someone"]) == 0
    assert set(_rows(fresh, "someone")) == {memory["memory_id"] for memory in document["memories"]}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not JSON"),
        ('{"user_id": "x"}', '"memories" list'),
        ('{"user_id": "x", "memories": [{"memory_id": "mem_1"}]}', "memories.0"),
        ('{"user_id": "bad user!", "memories": []}', "user_id"),
    ],
)
def test_a_bad_file_is_refused_with_a_reason_and_imports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    target = tmp_path / "target.db"
    assert main(["import", str(path), "--db", str(target)]) == 1
    error = capsys.readouterr().err
    assert expected in error and "nothing was imported" in error
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT count(*) FROM memories").fetchone()[0] == 0


def test_the_console_script_imports_without_a_progress_bar_when_not_on_a_terminal(tmp_path: Path) -> None:
    document = anyio.run(_export, tmp_path / "source.db")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "harmonia_mcp", "import", str(path), "--db", str(tmp_path / "target.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "#" not in completed.stderr
    assert completed.stdout.startswith(f"imported {len(document['memories'])} memories for jason")
