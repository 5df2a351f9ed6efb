"""Export is everything: superseded and deleted versions, history and links, `harmonia-mcp export` on the
command line, and a JSON round trip through `harmonia-mcp import` with statuses, links and history intact."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server

USER = "lena"
SAID = [
    ("I work at Farfetch", "2025-01-10T10:00:00+00:00"),
    ("I live in Berlin", "2026-11-01T10:00:00+00:00"),
    ("I live in Lisbon", "2024-01-01T10:00:00+00:00"),  # said earlier: stored as superseded by Berlin
    ("Actually I switched jobs, I now work at Stripe", "2026-02-01T10:00:00+00:00"),
    ("I have a cat called Miso", "2026-02-02T10:00:00+00:00"),
    ("I love karaoke", "2026-02-03T10:00:00+00:00"),
]


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _fill(db_path: Path) -> None:
    async with Client(create_server(Settings(db_path=str(db_path), extractor="rules"))) as client:
        for message, when in SAID:
            await _call(client, "store_memory", {"message": message, "user_id": USER, "occurred_at": when})
        listed = await _call(client, "list_memories", {"user_id": USER})
        karaoke = next(m["memory_id"] for m in listed["memories"] if "karaoke" in m["content"])
        await _call(client, "delete_memory", {"user_id": USER, "memory_id": karaoke})


def _state(db_path: Path) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """Every memory (id, content, status, occurred_at), link and history row of USER, as stored."""
    with sqlite3.connect(db_path) as db:
        memories = set(
            db.execute("SELECT memory_id, content, status, occurred_at FROM memories WHERE user_id = ?", (USER,))
        )
        links = set(db.execute("SELECT from_id, to_id, kind FROM memory_links WHERE user_id = ?", (USER,)))
        history = set(
            db.execute(
                "SELECT memory_id, action, old_content, new_content, source_message, changed_at FROM memory_history "
                "WHERE user_id = ?",
                (USER,),
            )
        )
    return memories, links, history


def _cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harmonia_mcp", *arguments], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_tool_exports_inactive_versions_with_history_and_links(tmp_path: Path) -> None:
    db = tmp_path / "source.db"
    anyio.run(_fill, db)

    async def export(arguments: dict[str, Any]) -> dict[str, Any]:
        async with Client(create_server(Settings(db_path=str(db)))) as client:
            return await _call(client, "export_memories", {"user_id": USER, **arguments})

    active = json.loads(anyio.run(export, {})["data"])
    assert {m["status"] for m in active["memories"]} == {"active"}
    assert "links" not in active and "history" not in active["memories"][0]
    everything = json.loads(anyio.run(export, {"include_inactive": True, "include_history": True})["data"])
    statuses = {m["content"]: m["status"] for m in everything["memories"]}
    assert statuses["User works at Farfetch"] == "superseded"
    assert statuses["User lives in Lisbon"] == "superseded"
    assert statuses["User loves karaoke"] == "deleted"
    assert statuses["User lives in Berlin"] == "active"
    ids = {m["content"]: m["memory_id"] for m in everything["memories"]}
    links = {(link["from_id"], link["to_id"], link["kind"]) for link in everything["links"]}
    assert (ids["User lives in Berlin"], ids["User lives in Lisbon"], "supersedes") in links
    assert (ids["User now works at Stripe"], ids["User works at Farfetch"], "supersedes") in links
    karaoke = next(m for m in everything["memories"] if m["status"] == "deleted")
    assert [row["action"] for row in karaoke["history"]] == ["created", "deleted"]
    markdown = anyio.run(export, {"format": "markdown", "include_inactive": True})["data"]
    assert "User loves karaoke [deleted]" in markdown


def test_include_history_needs_json(tmp_path: Path) -> None:
    async def export() -> str:
        async with Client(create_server(Settings(db_path=str(tmp_path / "x.db")))) as client:
            result = await client.call_tool("export_memories", {"format": "csv", "include_history": True})
        assert result.is_error
        return " ".join(getattr(block, "text", "") for block in result.content)

    assert "include_history needs format json" in anyio.run(export)


def test_cli_export_then_import_round_trips_statuses_links_and_history(tmp_path: Path) -> None:
    source, target, backup = tmp_path / "source.db", tmp_path / "target.db", tmp_path / "backup.json"
    anyio.run(_fill, source)
    exported = _cli("export", "--db", str(source), "--user-id", USER, "--output", str(backup))
    assert exported.returncode == 0, exported.stderr
    assert "exported 6 memories" in exported.stderr
    imported = _cli("import", str(backup), "--db", str(target))
    assert imported.returncode == 0, imported.stderr
    assert _state(target) == _state(source)
    memories, links, history = _state(target)
    assert len(links) >= 2 and {status for _, _, status, _ in memories} == {"active", "superseded", "deleted"}
    # Importing again changes nothing (idempotent by memory_id).
    assert _cli("import", str(backup), "--db", str(target)).returncode == 0
    assert _state(target) == _state(source)


def test_cli_export_to_stdout_in_another_format_and_a_missing_database(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    anyio.run(_fill, source)
    text = _cli("export", "--db", str(source), "--user-id", USER, "--format", "text", "--active-only")
    assert text.returncode == 0, text.stderr
    assert "[work] User now works at Stripe" in text.stdout
    assert "karaoke" not in text.stdout
    missing = _cli("export", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and "no database" in missing.stderr


def test_a_malformed_history_in_the_import_file_imports_nothing(tmp_path: Path) -> None:
    source, target, backup = tmp_path / "source.db", tmp_path / "target.db", tmp_path / "backup.json"
    anyio.run(_fill, source)
    assert _cli("export", "--db", str(source), "--user-id", USER, "--output", str(backup)).returncode == 0
    document = json.loads(backup.read_text(encoding="utf-8"))
    document["memories"][1]["history"] = [{"action": "exploded", "changed_at": "2026-01-01"}]
    backup.write_text(json.dumps(document), encoding="utf-8")
    result = _cli("import", str(backup), "--db", str(target))
    assert result.returncode == 1
    assert "memories[1]: history is invalid" in result.stderr
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT COUNT(*) FROM memories").fetchone() == (0,)
