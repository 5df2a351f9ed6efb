"""End to end over stdio: `harmonia-mcp` as a child process, driven by the official `mcp` stdio client,
on the first LoCoMo conversation of `../shared/bench/locomo/`."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from harmonia_mcp.child import call_tool, server_parameters

pytestmark = pytest.mark.anyio

CONVERSATION = "conv-26"
LOCOMO = Path(__file__).resolve().parents[3] / "shared" / "bench" / "locomo"


async def _list_all(client: Client, user_id: str) -> tuple[list[dict[str, Any]], int]:
    memories: list[dict[str, Any]] = []
    while True:
        page = await call_tool(client, "list_memories", {"user_id": user_id, "limit": 500, "offset": len(memories)})
        memories += page["memories"]
        if not page["pagination"]["has_more"]:
            return memories, page["pagination"]["total_count"]


def _jsonl(name: str) -> list[dict[str, Any]]:
    with (LOCOMO / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture
def locomo() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not (LOCOMO / "turns.jsonl").exists():
        pytest.skip(f"shared LoCoMo data not found at {LOCOMO}; clone the project next to shared/ to run this test")
    turns = [turn for turn in _jsonl("turns.jsonl") if turn["conv_id"] == CONVERSATION]
    questions = [question for question in _jsonl("questions.jsonl") if question["conv_id"] == CONVERSATION]
    return turns, questions[:10]


async def test_a_locomo_conversation_end_to_end_over_stdio(
    tmp_path: Path, locomo: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    turns, questions = locomo
    db_path = tmp_path / "e2e.db"
    with anyio.fail_after(300):
        async with Client(server_parameters(db_path)) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert {"store_memory", "search_memories", "list_memories", "delete_memory", "export_memories"} <= tools

            stored_ids: set[str] = set()
            turns_with_memories = 0
            for turn in turns:
                result = await call_tool(
                    client,
                    "store_memory",
                    {
                        "message": turn["text"],
                        "user_id": CONVERSATION,
                        "speaker": turn["speaker"],
                        "occurred_at": turn["session_date"],
                        "metadata": {"dia_id": turn["dia_id"]},
                    },
                )
                turns_with_memories += bool(result["memories"])
                # Reconciliation may skip a repeat or supersede an older version: follow what each result says.
                for memory in result["memories"]:
                    stored_ids -= set(memory["supersedes"])
                    if memory["action"] in ("created", "superseded_previous"):
                        stored_ids.add(memory["memory_id"])
                    if memory["action"] in ("created", "superseded_previous"):
                        assert memory["metadata"] == {"dia_id": turn["dia_id"]}
                        assert memory["content"].startswith(turn["speaker"]) or " I " not in f" {memory['content']} "
            assert turns_with_memories > len(turns) // 2

            answered = 0
            for question in questions:
                found = await call_tool(
                    client,
                    "search_memories",
                    {"query": question["question"], "user_id": CONVERSATION, "limit": 10, "include_metadata": True},
                )
                dia_ids = [hit["metadata"]["dia_id"] for hit in found["results"]]
                answered += bool(set(dia_ids) & set(question["evidence"]))
            assert answered >= 6, f"evidence found for only {answered} of {len(questions)} questions"

            listed, total = await _list_all(client, CONVERSATION)
            assert total == len(stored_ids) == len(listed)
            assert {memory["memory_id"] for memory in listed} == stored_ids

            exports = {
                fmt: await call_tool(client, "export_memories", {"user_id": CONVERSATION, "format": fmt})
                for fmt in ("json", "csv", "markdown", "text")
            }
            assert {fmt: exported["memory_count"] for fmt, exported in exports.items()} == dict.fromkeys(exports, total)
            assert len(json.loads(exports["json"]["data"])["memories"]) == total
            assert len(list(csv.DictReader(io.StringIO(exports["csv"]["data"])))) == total
            assert len(exports["text"]["data"].splitlines()) == total
            assert exports["markdown"]["data"].count("\n- ") == total

            victim = listed[0]["memory_id"]
            assert (await call_tool(client, "delete_memory", {"user_id": CONVERSATION, "memory_id": victim}))["deleted"]

        # A new process on the same file sees everything but the deleted memory.
        async with Client(server_parameters(db_path)) as client:
            after, after_total = await _list_all(client, CONVERSATION)
            assert after_total == total - 1
            assert {m["memory_id"] for m in after} == stored_ids - {victim}
            gone = await client.call_tool("delete_memory", {"user_id": CONVERSATION, "memory_id": victim})
            assert gone.is_error

    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_pets_finds_two_cats_over_stdio_with_no_setup(tmp_path: Path) -> None:
    """The default install and configuration (no HARMONIA_EMBEDDER, no download, no Ollama) search by meaning."""
    async with Client(server_parameters(tmp_path / "pets.db")) as client:
        for message in ("I have two cats", "I work as a nurse", "The train was late again this morning"):
            await call_tool(client, "store_memory", {"message": message})
        found: dict[str, Any] = {}
        with anyio.fail_after(60):
            while found.get("mode") != "hybrid":  # the model loads in the background after start-up
                found = await call_tool(client, "search_memories", {"query": "pets"})
                await anyio.sleep(0.1)
        assert found["results"][0]["content"] == "User has two cats"
