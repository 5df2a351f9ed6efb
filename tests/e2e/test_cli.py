"""The `harmonia-mcp` command as a newcomer runs it: demo, doctor, bad configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HARMONIA_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "harmonia_mcp", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def test_demo_stores_searches_and_exports_over_stdio(tmp_path: Path) -> None:
    result = _run("demo", "--db", str(tmp_path / "demo.db"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tools: store_memory, search_memories, list_memories, delete_memory, export_memories" in out
    assert "created: [relationship] Jason has a dog called Biggie" in out
    assert "(nothing durable: not stored)" in out
    assert "# Memories of demo" in out
    assert (tmp_path / "demo.db").exists()


def test_doctor_reports_database_sqlite_fts5_and_extractor(tmp_path: Path) -> None:
    db = tmp_path / "doctor.db"
    result = _run("doctor", env={"HARMONIA_DB_PATH": str(db), "OLLAMA_HOST": "http://127.0.0.1:9"})
    assert result.returncode == 0, result.stderr
    assert f"database:  {db}" in result.stdout
    assert "FTS5:      available" in result.stdout
    assert "does not exist; would be created" in result.stdout and not db.exists()
    assert "does not answer" in result.stdout
    assert "extractor: rules" in result.stdout
    assert "retention: off (HARMONIA_RETENTION_DAYS)" in result.stdout
    assert "forgotten: nothing (no database yet)" in result.stdout


def test_an_invalid_setting_exits_2_and_names_it() -> None:
    result = _run("doctor", env={"HARMONIA_TIMEZONE": "Mars/Base"})
    assert result.returncode == 2
    assert "HARMONIA_TIMEZONE" in result.stderr and "Mars/Base" in result.stderr
    assert result.stdout == ""


def test_forget_user_and_delete_purge_from_the_shell(tmp_path: Path) -> None:
    import sqlite3

    from mcp_calls import exported_memory

    from harmonia_mcp.store import MIGRATIONS

    db = tmp_path / "forget.db"
    env = {"HARMONIA_DB_PATH": str(db)}
    # A database with two users, written as the server would (import of a JSON export).
    export = {
        "user_id": "erin",
        "memories": [
            exported_memory(number, content)
            for number, content in ((1, "User has a dog called Biggie"), (2, "User has a cat called Whiskers"))
        ],
    }
    (tmp_path / "erin.json").write_text(json.dumps(export), encoding="utf-8")
    assert _run("import", str(tmp_path / "erin.json"), env=env).returncode == 0

    purged = _run("delete", "mem_0000000000000001", "--user-id", "erin", "--purge", env=env)
    assert purged.returncode == 0, purged.stderr
    assert "purged mem_0000000000000001" in purged.stdout
    assert b"Biggie" not in db.read_bytes()

    refused = _run("forget-user", "erin", env=env)  # no terminal to confirm on, and no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    erased = _run("forget-user", "erin", "--yes", env=env)
    assert erased.returncode == 0, erased.stderr
    assert "erased erin: 1 memories" in erased.stdout
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM memories").fetchone() == (0,)
        assert connection.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    assert b"Whiskers" not in db.read_bytes()
