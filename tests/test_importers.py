"""`harmonia-mcp import --from server-memory|mem0|text FILE`: other servers' files round-trip into memories.

The server-memory file was written by the real `@modelcontextprotocol/server-memory` (2026.8.31) through its
own tools (tests/data/importers/make_server_memory.py). The mem0 file follows mem0's documented
`get_all()` output (mem0 itself needs an LLM and an embedding service to write one, not available here).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import TextResourceContents

from harmonia_mcp.cli import main
from harmonia_mcp.config import Settings
from harmonia_mcp.importers import from_server_memory
from harmonia_mcp.server import create_server

DATA = Path(__file__).resolve().parent / "data" / "importers"


def _import(capsys: pytest.CaptureFixture[str], db: Path, *arguments: str) -> str:
    capsys.readouterr()
    assert main(["import", "--db", str(db), *arguments]) == 0
    return capsys.readouterr().out


def _read(db: Path, user_id: str) -> tuple[list[dict[str, Any]], str]:
    return anyio.run(_memories, db, user_id)


async def _memories(db: Path, user_id: str) -> tuple[list[dict[str, Any]], str]:
    settings = Settings(db_path=str(db), extractor="rules")
    async with Client(create_server(settings), raise_exceptions=True) as client:
        listed = await client.call_tool("list_memories", {"user_id": user_id, "limit": 500})
        profile = await client.read_resource(f"memory://{user_id}/profile")
    assert listed.structured_content is not None and isinstance(profile.contents[0], TextResourceContents)
    return listed.structured_content["memories"], profile.contents[0].text


def test_server_memory_graph_becomes_memories_with_entities_and_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.db"
    file = str(DATA / "server-memory.jsonl")
    first = _import(capsys, db, "--from", "server-memory", file, "--user-id", "jason")
    assert "mapped 6 observation, 1 entity without observations, 3 relation" in first
    assert "imported 10 memories for jason, 0 were already there; skipped 0 items" in first
    again = _import(capsys, db, "--from", "server-memory", file, "--user-id", "jason")
    assert "imported 0 memories for jason, 10 were already there" in again
    memories, profile = _read(db, "jason")
    by_content = {memory["content"]: memory for memory in memories}
    assert set(by_content) == {
        "User lives in Lisbon",
        "User works as a nurse",
        "User speaks Portuguese and English",
        "User is allergic to peanuts",
        "Biggie: A beagle, adopted in 2021",
        "Anna loves climbing",
        "Santa Maria Hospital is an organization",
        "User owns Biggie",
        "User is married to Anna",
        "User works at Santa Maria Hospital",
    }
    assert by_content["User owns Biggie"]["entities"] == ["Biggie"]
    assert by_content["User works at Santa Maria Hospital"]["entities"] == ["Santa Maria Hospital"]
    assert by_content["Biggie: A beagle, adopted in 2021"]["entities"] == ["Biggie"]
    assert by_content["User is allergic to peanuts"]["category"] == "health"
    assert by_content["User is married to Anna"]["metadata"]["server_memory"]["relation_type"] == "is_married_to"
    assert "Lisbon" in profile.split("## home")[1] and "peanuts" in profile.split("## health")[1]


def test_server_memory_reports_what_it_skipped() -> None:
    text = '{"type":"entity","name":"A","entityType":"x","observations":["Likes tea"]}\nnot json\n{"type":"other"}\n'
    text += '{"type":"relation","from":"A","to":""}\n'
    converted = from_server_memory(text, "u", now="2026-01-01T00:00:00+00:00")
    assert converted.mapped == {"observation": 1}
    assert converted.skipped == [
        "line 2: not JSON",
        "line 3: type 'other' is neither entity nor relation",
        "line 4: a relation without from, to and relationType",
    ]


def test_mem0_memories_keep_their_owner_times_and_categories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.db"
    out = _import(capsys, db, "--from", "mem0", str(DATA / "mem0-get-all.json"))
    assert "imported 2 memories for alice" in out and "imported 1 memories for bob" in out
    assert "skipped item 4: no memory text" in out
    assert "imported 0 memories for alice, 2 were already there" in _import(
        capsys, db, "--from", "mem0", str(DATA / "mem0-get-all.json")
    )
    alice, _ = _read(db, "alice")
    by_content = {memory["content"]: memory for memory in alice}
    hiking = by_content["User is planning to go hiking in the Alps next summer"]
    assert hiking["category"] == "event" and hiking["tags"] == ["travel", "hobbies"]
    assert hiking["created_at"] == "2024-07-26T17:29:36.630547+00:00"
    assert hiking["metadata"]["mem0"]["id"] == "892db2ae-06d9-49e5-8b3e-585ef9b85b8e"
    nuts = by_content["Is a vegetarian and allergic to nuts"]
    # Stored as every timestamp is (UTC, microseconds); the instant is mem0's.
    assert nuts["category"] == "preference"
    assert datetime.fromisoformat(nuts["updated_at"]) == datetime.fromisoformat("2024-07-26T16:15:00+00:00")
    bob, _ = _read(db, "bob")
    assert [(memory["content"], memory["category"]) for memory in bob] == [
        ("Works as a data scientist at a fintech startup", "work")
    ]
    # --user-id puts everything under one user.
    _import(capsys, tmp_path / "one.db", "--from", "mem0", str(DATA / "mem0-get-all.json"), "--user-id", "me")
    assert len((_read(tmp_path / "one.db", "me"))[0]) == 3


def test_text_notes_go_through_the_extractor_one_memory_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARMONIA_EXTRACTOR", "rules")
    db = tmp_path / "m.db"
    out = _import(capsys, db, "--from", "text", str(DATA / "notes.md"), "--user-id", "jason")
    assert "skipped line 8: no durable fact in 'Where did I put my keys?'" in out
    assert "skipped 1 items" in out
    assert "imported 0 memories" in _import(capsys, db, "--from", "text", str(DATA / "notes.md"), "--user-id", "jason")
    memories, profile = _read(db, "jason")
    contents = {memory["content"] for memory in memories}
    assert contents == {
        "User's name is Jason Thompson",
        "User lives in Lisbon",
        "User works as a nurse",
        "User has a dog called Biggie",
        "User is allergic to peanuts",
        "User prefers tea over coffee",
    }
    assert all(memory["extractor"] == "rules" for memory in memories)
    assert "Jason Thompson" in profile.split("## name")[1]
