"""`store_memories`: many messages of one user in one call and one transaction (issue 14, item 3)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from fake_ollama import FakeOllama
from mcp import Client
from mcp_calls import call as _call
from mcp_calls import error as _error
from test_extraction_queue import JASON, MISO, queue_settings

from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio


async def _active(client: Client, user: str) -> list[str]:
    listed = await _call(client, "list_memories", {"user_id": user, "limit": 500})
    return sorted(memory["content"] for memory in listed["memories"])


def _table_count(db_path: Path, table: str) -> int:
    with sqlite3.connect(db_path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_each_item_gets_its_own_result_in_order_with_its_index(client: Client) -> None:
    items = [
        {"message": "I have a dog called Biggie.", "speaker": "Jason"},
        {"message": "Nice weather today, isn't it?"},
        {"message": "I am allergic to peanuts.", "occurred_at": "2024-05-01T09:00:00+00:00"},
        {"facts": [{"content": "User plays the cello", "keywords": ["music"]}]},
    ]
    result = await _call(client, "store_memories", {"items": items, "user_id": "jason"})
    assert [item["index"] for item in result["items"]] == [0, 1, 2, 3]
    first, small_talk, allergy, facts = result["items"]
    assert [m["content"] for m in first["memories"]] == ["Jason has a dog called Biggie"]
    assert small_talk["memories"] == [] and "No durable fact" in small_talk["warnings"][0]
    assert [m["category"] for m in allergy["memories"]] == ["health"]
    assert [(m["content"], m["extractor"]) for m in facts["memories"]] == [("User plays the cello", "caller")]
    assert result["memories_written"] == 3
    stored = await _call(client, "get_memory", {"user_id": "jason", "memory_id": allergy["memories"][0]["memory_id"]})
    assert stored["memory"]["occurred_at"].startswith("2024-05-01T09:00:00")


async def test_a_later_item_of_the_same_batch_updates_an_earlier_one(client: Client) -> None:
    items = [
        {"message": "I live in Paris.", "occurred_at": "2024-01-10T10:00:00+00:00"},
        {"message": "I moved to Berlin.", "occurred_at": "2024-06-10T10:00:00+00:00"},
    ]
    result = await _call(client, "store_memories", {"items": items, "user_id": "ana"})
    paris, berlin = (item["memories"][0] for item in result["items"])
    assert berlin["action"] == "superseded_previous" and berlin["supersedes"] == [paris["memory_id"]]
    active = await _active(client, "ana")
    assert len(active) == 1 and "Berlin" in active[0]


async def test_the_batch_matches_the_same_store_memory_calls_one_by_one(client: Client) -> None:
    messages = [
        "My name is Jason Thompson.",
        "I work as a nurse at Acme.",
        "I work as a teacher at Globex now.",
        "My sister Maria lives in Lisbon.",
        "I have a dog called Biggie.",
        "I have a dog called Biggie.",
    ]
    for message in messages:
        await _call(client, "store_memory", {"message": message, "user_id": "one-by-one", "session_id": "s1"})
    batch = [{"message": message, "session_id": "s1"} for message in messages]
    result = await _call(client, "store_memories", {"items": batch, "user_id": "batched"})
    assert await _active(client, "batched") == await _active(client, "one-by-one")
    assert [m["action"] for m in result["items"][5]["memories"]] == ["skipped"]


async def test_sending_the_same_batch_twice_stores_nothing_new(client: Client) -> None:
    items = [{"message": "I have a cat called Miso."}, {"message": "I love hiking in the Alps."}]
    await _call(client, "store_memories", {"items": items, "user_id": "kim"})
    before = await _active(client, "kim")
    again = await _call(client, "store_memories", {"items": items, "user_id": "kim"})
    assert {m["action"] for item in again["items"] for m in item["memories"]} == {"skipped"}
    assert again["memories_written"] == 0
    assert await _active(client, "kim") == before and len(before) == 2


async def test_users_stay_apart(client: Client) -> None:
    await _call(client, "store_memories", {"items": [{"message": "I live in Paris."}], "user_id": "alice"})
    moved = await _call(client, "store_memories", {"items": [{"message": "I moved to Berlin."}], "user_id": "bob"})
    # Bob's move is new to Bob: it supersedes nothing of Alice's.
    assert moved["items"][0]["memories"][0]["action"] == "created"
    assert ["User lives in Paris"] == await _active(client, "alice")
    assert all("Paris" not in content for content in await _active(client, "bob"))


async def test_a_bad_item_is_named_by_index_and_nothing_of_the_batch_is_stored(client: Client, db_path: Path) -> None:
    await _call(client, "store_memory", {"message": "I have a dog called Rex.", "user_id": "lee"})
    before = await _active(client, "lee")
    messages = _table_count(db_path, "messages")
    items = [
        {"message": "I moved to Berlin."},
        {"message": "   "},
        {"message": "I have a cat called Miso.", "occurred_at": "yesterday-ish"},
    ]
    text = await _error(client, "store_memories", {"items": items, "user_id": "lee"})
    assert "2 of 3 items are invalid, so nothing was stored" in text
    assert "items[1]: message is empty" in text and "items[2]: occurred_at" in text
    assert "items[0]" not in text
    # A value the schema refuses is named by its place too.
    items[1:] = [{"message": "I like tea.", "resolution_strategy": "sometimes"}]
    assert "items[1].resolution_strategy 'sometimes' is not allowed" in await _error(
        client, "store_memories", {"items": items, "user_id": "lee"}
    )
    assert await _active(client, "lee") == before
    assert _table_count(db_path, "messages") == messages


async def test_an_empty_or_oversized_batch_says_what_is_allowed(client: Client) -> None:
    assert "items is empty" in await _error(client, "store_memories", {"items": []})
    many = [{"message": f"I have {n} coins."} for n in range(1001)]
    assert "limit is 1000" in await _error(client, "store_memories", {"items": many})


async def test_a_failed_write_rolls_back_the_whole_batch(client: Client, db_path: Path) -> None:
    await _call(client, "store_memory", {"message": "I live in Paris.", "user_id": "zoe"})
    with sqlite3.connect(db_path) as db:
        # A trigger standing in for a full disk: the third item's memory cannot be written.
        db.execute(
            "CREATE TRIGGER fail_on_miso BEFORE INSERT ON memories WHEN NEW.content LIKE '%Miso%' "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    items = [{"message": "I moved to Berlin."}, {"message": "I like tea."}, {"message": "I have a cat called Miso."}]
    result = await client.call_tool("store_memories", {"items": items, "user_id": "zoe"})
    assert result.is_error
    assert await _active(client, "zoe") == ["User lives in Paris"]


async def test_with_the_model_each_message_is_queued_as_store_memory_does(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    async with Client(create_server(queue_settings(tmp_path / "m.db", fake_ollama.url))) as client:
        items = [
            {"message": JASON},
            {"facts": [{"content": "User plays the cello"}]},
            {"message": MISO},
        ]
        result = await _call(client, "store_memories", {"items": items, "user_id": "jason"})
        jason, facts, miso = result["items"]
        assert jason["pending_extraction"] and miso["pending_extraction"]
        assert {m["extractor"] for m in jason["memories"] + miso["memories"]} == {"rules"}
        # Caller facts need no model, as with store_memory.
        assert not facts["pending_extraction"] and facts["job_id"] is None
        jobs = []
        for job_id in (jason["job_id"], miso["job_id"]):
            with anyio.fail_after(60):
                while (
                    job := (await _call(client, "extraction_status", {"user_id": "jason", "job_id": job_id}))["job"]
                )["status"] not in ("done", "failed"):
                    await anyio.sleep(0.02)
            jobs.append(job)
        listed = await _call(client, "list_memories", {"user_id": "jason", "limit": 100})
    assert [job["status"] for job in jobs] == ["done", "done"]
    assert len(fake_ollama.chat_requests()) == 2
    # The model's memories replaced the rules' provisional ones; the caller's fact stays.
    assert {m["extractor"] for m in listed["memories"]} == {"ollama", "caller"}


async def test_the_message_log_keeps_the_last_two_messages_of_each_conversation(client: Client, db_path: Path) -> None:
    items = [
        {"message": f"I have {name} as a friend.", "session_id": session}
        for name in ("Ana", "Ben", "Cy")
        for session in ("s1", "s2")
    ]
    items.append({"message": "I like tea.", "session_id": "s1"})
    await _call(client, "store_memories", {"items": items, "user_id": "log"})
    with sqlite3.connect(db_path) as db:
        kept = db.execute("SELECT session_id, text FROM messages WHERE user_id = 'log' ORDER BY message_id").fetchall()
    assert kept == [
        ("s2", "I have Ben as a friend."),
        ("s1", "I have Cy as a friend."),
        ("s2", "I have Cy as a friend."),
        ("s1", "I like tea."),
    ]
