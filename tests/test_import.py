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


def _exported(tmp_path: Path) -> tuple[dict[str, Any], Path, Path]:
    """An export of MESSAGES for jason, written to a file; returns it, the file and an empty target database."""
    document = anyio.run(_export, tmp_path / "source.db")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return document, path, tmp_path / "target.db"


def test_importing_twice_adds_nothing_and_user_id_can_be_reassigned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document, path, target = _exported(tmp_path)
    count = len(document["memories"])
    assert main(["import", str(path), "--db", str(target)]) == 0
    assert main(["import", str(path), "--db", str(target)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"imported {count} memories for jason; 0 were already there",
        f"imported 0 memories for jason; {count} were already there",
    ]
    fresh = tmp_path / "fresh.db"
    assert main(["import", str(path), "--db", str(fresh), "--user-id", "someone"]) == 0
    assert set(_rows(fresh, "someone")) == {memory["memory_id"] for memory in document["memories"]}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not JSON"),
        ('{"user_id": "x"}', '"memories" list'),
        ('{"user_id": "x", "memories": [{"memory_id": "mem_1"}]}', "memories[0]: content: Field required"),
        ('{"user_id": "x", "memories": {"a": 1}}', '"memories" must be a list'),
        ('{"user_id": "x", "memories": [1, 2', "not JSON"),
        ('{"user_id": "bad user!", "memories": []}', "user_id"),
        ('{"user_id": 7, "memories": []}', '"user_id" must be a string'),
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


def _good_row(document: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**document["memories"][0], **changes}


DEEP = '{"a": ' * 5000 + "{}" + "}" * 5000  # json.dumps itself cannot write it: spliced into the file text


BAD_ROWS: list[tuple[dict[str, Any], str]] = [
    ({"created_at": "not a date"}, "created_at 'not a date' is not a valid ISO-8601"),
    ({"updated_at": "yesterday"}, "updated_at 'yesterday' is not a valid ISO-8601"),
    ({"confidence": 7}, "confidence 7.0 is out of range"),
    ({"content": "   "}, "content is empty"),
    ({"memory_id": "mem_1"}, "memory_id 'mem_1' is not of the form mem_ + 16 hex digits"),
    ({"metadata": "DEEP"}, "metadata is nested more than 32 levels deep"),
    ({"category": "gossip"}, "category: Input should be"),
    ({"memory_id": None}, "memory_id: Input should be a valid string"),
]


def test_every_invalid_row_is_reported_by_index_and_the_file_imports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 12 item 4: the same checks as the tools, every bad row named, nothing imported.
    document = anyio.run(_export, tmp_path / "source.db")
    good = document["memories"]
    bad = [
        _good_row(document, **{"memory_id": f"mem_{index:016x}", **change})
        for index, (change, _) in enumerate(BAD_ROWS)
    ]
    duplicate = dict(good[0])
    rows = [*good, *bad, duplicate]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"user_id": "jason", "memories": rows}).replace('"DEEP"', DEEP), encoding="utf-8")
    target = tmp_path / "target.db"
    assert main(["import", str(path), "--db", str(target)]) == 1
    error = capsys.readouterr().err
    assert f"{len(BAD_ROWS) + 1} of {len(rows)} rows of the import file are invalid" in error
    for offset, (_, reason) in enumerate(BAD_ROWS):
        assert f"memories[{len(good) + offset}]: {reason}" in error, reason
    assert f"memories[{len(rows) - 1}]: memory_id {good[0]['memory_id']!r} repeats memories[0]" in error
    assert "nothing was imported" in error and "Traceback" not in error
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT count(*) FROM memories").fetchone()[0] == 0

    assert main(["import", str(path), "--db", str(target), "--skip-invalid"]) == 0
    out, error = capsys.readouterr()
    assert out.startswith(f"imported {len(good)} memories for jason")
    assert f"skipped {len(BAD_ROWS) + 1} invalid rows" in error
    assert set(_rows(target, "jason")) == {memory["memory_id"] for memory in good}
    # Every imported row is searchable: no NULL julianday() from a bad time breaks the ranking.
    found, _ = anyio.run(_search_and_count, target)
    assert found["results"][0]["content"] == "User has a dog called Biggie"


def test_importing_into_another_user_gives_new_ids_keeps_provenance_and_stays_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 16 item 2: "already there" never matches another user's memory.
    document, path, target = _exported(tmp_path)
    count = len(document["memories"])
    assert main(["import", str(path), "--db", str(target)]) == 0
    assert main(["import", str(path), "--db", str(target), "--user-id", "alice"]) == 0
    assert main(["import", str(path), "--db", str(target), "--user-id", "alice"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        f"imported {count} memories for alice; 0 were already there; {count} got new ids "
        "(their ids belong to another user in this database)",
        f"imported 0 memories for alice; {count} were already there",
    ]
    jason, alice = _rows(target, "jason"), _rows(target, "alice")
    assert len(alice) == count and not set(alice) & set(jason)
    assert sorted(alice.values()) == sorted(jason.values())  # content, times, source message, speaker, metadata
    assert _rows(target, "jason") == _rows(tmp_path / "source.db", "jason")  # jason's own rows untouched


def test_a_large_import_is_written_in_batches_and_resumes(tmp_path: Path) -> None:
    # Issue 12 item 3: each batch commits on its own, so a stopped import keeps whole batches and a rerun
    # adds only the rest.
    from harmonia_mcp.service import IMPORT_BATCH

    document = anyio.run(_export, tmp_path / "source.db")
    template = document["memories"][0]
    rows = [
        {**template, "memory_id": f"mem_{index:016x}", "content": f"User has a cat called Cat{index}"}
        for index in range(IMPORT_BATCH * 2 + 7)
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"user_id": "jason", "memories": rows}), encoding="utf-8")
    target = tmp_path / "target.db"
    assert main(["import", str(path), "--db", str(target)]) == 0
    with sqlite3.connect(target) as db:
        db.execute("DELETE FROM memory_history WHERE memory_id >= ?", (f"mem_{IMPORT_BATCH:016x}",))
        db.execute("DELETE FROM memories WHERE memory_id >= ?", (f"mem_{IMPORT_BATCH:016x}",))  # "stopped" here
    completed = subprocess.run(
        [sys.executable, "-m", "harmonia_mcp", "import", "-", "--db", str(target)],
        input=path.read_bytes(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.decode().startswith(
        f"imported {len(rows) - IMPORT_BATCH} memories for jason; {IMPORT_BATCH} were already there"
    )
    assert len(_rows(target, "jason")) == len(rows)
