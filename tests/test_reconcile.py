"""Reconciliation through the MCP layer, in memory: strategies, history, links, restore, rollback."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent

from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

FAIL_ON_SUPERSEDE = """
CREATE TRIGGER test_fail_supersede BEFORE UPDATE OF status ON memories WHEN NEW.status = 'superseded'
BEGIN SELECT RAISE(ABORT, 'injected failure'); END;
"""


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _store(client: Client, message: str, **arguments: Any) -> dict[str, Any]:
    stored = await _call(client, "store_memory", {"message": message, **arguments})
    assert len(stored["memories"]) == 1, stored
    memory: dict[str, Any] = stored["memories"][0]
    return memory


async def _active(client: Client) -> dict[str, str]:
    listed = await _call(client, "list_memories", {"limit": 500})
    return {memory["memory_id"]: memory["content"] for memory in listed["memories"]}


async def _everything(client: Client) -> dict[str, tuple[str, str]]:
    listed = await _call(client, "list_memories", {"limit": 500, "include_inactive": True})
    return {memory["memory_id"]: (memory["content"], memory["status"]) for memory in listed["memories"]}


async def test_biggie_new_favourite_toy_supersedes_the_old_one(client: Client) -> None:
    old = await _store(client, "Biggie loves his stuffed Costco chicken")
    new = await _store(client, "Biggie now loves his yellow ball")

    assert new["action"] == "superseded_previous"
    assert new["conflict"] == "update"
    assert new["supersedes"] == [old["memory_id"]]
    assert new["memory_id"] != old["memory_id"]
    assert await _active(client) == {new["memory_id"]: "Biggie now loves his yellow ball"}
    assert (await _everything(client))[old["memory_id"]] == ("Biggie loves his stuffed Costco chicken", "superseded")

    # The new version may still match through its conversation context (the message before it), but the
    # superseded memory and its words are out of search.
    hidden = await _call(client, "search_memories", {"query": "Costco chicken"})
    assert old["memory_id"] not in {hit["memory_id"] for hit in hidden["results"]}
    assert not any("Costco" in hit["content"] for hit in hidden["results"])
    shown = await _call(client, "search_memories", {"query": "Costco chicken", "include_superseded": True})
    assert (shown["results"][0]["memory_id"], shown["results"][0]["status"]) == (old["memory_id"], "superseded")

    old_details = await _call(client, "get_memory", {"memory_id": old["memory_id"]})
    assert old_details["memory"]["status"] == "superseded"
    assert old_details["links"]["superseded_by"] == [new["memory_id"]]
    assert [entry["action"] for entry in old_details["update_history"]] == ["created", "superseded"]
    assert old_details["update_history"][1]["source_message"] == "Biggie now loves his yellow ball"
    new_details = await _call(client, "get_memory", {"memory_id": new["memory_id"]})
    assert new_details["links"]["supersedes"] == [old["memory_id"]]
    assert new_details["links"]["superseded_by"] == []


async def test_new_employer_rewritten_in_place_with_update_keeps_the_old_text_in_history(client: Client) -> None:
    old = await _store(client, "I work at TechCorp")
    new = await _store(client, "I now work at NewCorp", resolution_strategy="update")

    assert new["action"] == "updated"
    assert new["memory_id"] == old["memory_id"]
    assert new["related_memory_ids"] == [old["memory_id"]]
    assert await _active(client) == {old["memory_id"]: "User now works at NewCorp"}
    history = (await _call(client, "get_memory", {"memory_id": old["memory_id"]}))["update_history"]
    assert [entry["action"] for entry in history] == ["created", "updated"]
    assert history[1]["old_content"] == "User works at TechCorp"
    assert history[1]["new_content"] == "User now works at NewCorp"
    assert history[1]["source_message"] == "I now work at NewCorp"
    found = await _call(client, "search_memories", {"query": "NewCorp"})
    assert [hit["memory_id"] for hit in found["results"]] == [old["memory_id"]]
    old_words = (await _call(client, "search_memories", {"query": "TechCorp"}))["results"]
    assert not any("TechCorp" in hit["content"] for hit in old_words)


async def test_new_employer_by_default_is_a_new_version(client: Client) -> None:
    old = await _store(client, "I work at TechCorp")
    new = await _store(client, "I now work at NewCorp")
    assert (new["action"], new["supersedes"]) == ("superseded_previous", [old["memory_id"]])
    assert await _active(client) == {new["memory_id"]: "User now works at NewCorp"}


async def test_version_strategy_supersedes_a_moved_appointment(client: Client) -> None:
    when = {"occurred_at": "2026-03-02T10:00:00+00:00"}
    old = await _store(client, "My dentist appointment is on May 3", **when)
    new = await _store(client, "My dentist appointment is now on May 10", resolution_strategy="version", **when)
    assert new["action"] == "superseded_previous"
    assert new["supersedes"] == [old["memory_id"]]
    assert new["event_time"].startswith("2026-05-10")
    assert list(await _active(client)) == [new["memory_id"]]


async def test_merge_folds_the_breed_into_the_dog(client: Client) -> None:
    dog = await _store(client, "I have a dog called Biggie")
    merged = await _store(client, "Biggie is a beagle", resolution_strategy="merge")

    assert merged["action"] == "merged"
    assert merged["conflict"] == "complement"
    assert merged["memory_id"] == dog["memory_id"]
    assert await _active(client) == {dog["memory_id"]: "User has a beagle called Biggie"}
    history = (await _call(client, "get_memory", {"memory_id": dog["memory_id"]}))["update_history"]
    assert [(entry["action"], entry["old_content"]) for entry in history] == [
        ("created", None),
        ("merged", "User has a dog called Biggie"),
    ]


async def test_merge_of_an_update_keeps_the_previous_value_in_the_sentence(client: Client) -> None:
    old = await _store(client, "I live in Lisbon")
    merged = await _store(client, "I now live in Berlin", resolution_strategy="merge")
    assert (merged["action"], merged["memory_id"]) == ("merged", old["memory_id"])
    assert await _active(client) == {old["memory_id"]: "User now lives in Berlin (previously: Lisbon)"}


async def test_keep_both_stores_a_conflicting_memory_and_links_it(client: Client) -> None:
    old = await _store(client, "My favorite color is blue")
    new = await _store(client, "My favorite color is now green", resolution_strategy="keep_both")
    assert new["action"] == "created"
    assert new["conflict"] == "update"
    assert new["related_memory_ids"] == [old["memory_id"]]
    assert set(await _active(client)) == {old["memory_id"], new["memory_id"]}
    assert (await _call(client, "get_memory", {"memory_id": old["memory_id"]}))["links"]["related"] == [
        new["memory_id"]
    ]


async def test_skip_stores_nothing_when_the_fact_conflicts(client: Client) -> None:
    old = await _store(client, "I'm dating Tom")
    skipped = await _store(client, "I'm now dating Sam", resolution_strategy="skip")
    assert (skipped["action"], skipped["memory_id"], skipped["conflict"]) == ("skipped", old["memory_id"], "update")
    assert await _active(client) == {old["memory_id"]: "User is dating Tom"}


async def test_a_reworded_duplicate_is_skipped_and_returns_the_existing_memory(client: Client) -> None:
    old = await _store(client, "I have a dog called Biggie")
    again = await _store(client, "I have a dog named Biggie")
    assert (again["action"], again["memory_id"], again["conflict"]) == ("skipped", old["memory_id"], "duplicate")
    assert again["content"] == "User has a dog called Biggie"
    spelled = await _store(client, "My favourite colour is blue")
    first = await _store(client, "My favorite color is blue")
    assert first["action"] == "skipped" and first["memory_id"] == spelled["memory_id"]
    assert len(await _active(client)) == 2


async def test_a_complement_keeps_both_linked(client: Client) -> None:
    dog = await _store(client, "User has a dog called Biggie")
    breed = await _store(client, "Biggie is a beagle")
    assert (breed["action"], breed["conflict"]) == ("created", "complement")
    assert breed["related_memory_ids"] == [dog["memory_id"]]
    assert set(await _active(client)) == {dog["memory_id"], breed["memory_id"]}
    links = (await _call(client, "get_memory", {"memory_id": dog["memory_id"]}))["links"]
    assert links == {"supersedes": [], "superseded_by": [], "related": [breed["memory_id"]]}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("I love sushi", "I love hiking"),
        ("I love hiking", "My sister loves hiking"),
        ("I work at TechCorp", "My brother works at TechCorp"),
        ("My favorite color is blue", "My favorite food is pizza"),
        ("I have a dog called Biggie", "I have a cat called Luna"),
        ("I live in Lisbon", "My parents live in Porto"),
        ("I play tennis", "I now play the piano"),
    ],
)
@pytest.mark.parametrize("strategy", ["auto", "merge", "update", "version"])
async def test_unrelated_facts_sharing_a_word_are_never_superseded_or_merged(
    client: Client, first: str, second: str, strategy: str
) -> None:
    one = await _store(client, first)
    two = await _store(client, second, resolution_strategy=strategy)
    assert two["action"] == "created"
    assert two["supersedes"] == []
    everything = await _everything(client)
    assert everything[one["memory_id"]] == (one["content"], "active")
    assert everything[two["memory_id"]][1] == "active"


async def test_restore_undoes_a_delete(client: Client) -> None:
    memory = await _store(client, "I'm allergic to peanuts")
    await _call(client, "delete_memory", {"memory_id": memory["memory_id"]})
    assert await _active(client) == {}
    restored = await _call(client, "restore_memory", {"memory_id": memory["memory_id"]})
    assert restored["previous_status"] == "deleted"
    assert restored["memory"]["status"] == "active"
    assert await _active(client) == {memory["memory_id"]: "User is allergic to peanuts"}
    history = (await _call(client, "get_memory", {"memory_id": memory["memory_id"]}))["update_history"]
    assert [entry["action"] for entry in history] == ["created", "deleted", "restored"]


async def test_restore_brings_a_superseded_memory_back_and_names_its_successor(client: Client) -> None:
    old = await _store(client, "I work at TechCorp")
    new = await _store(client, "I now work at NewCorp")
    restored = await _call(client, "restore_memory", {"memory_id": old["memory_id"]})
    assert restored["previous_status"] == "superseded"
    assert restored["active_successors"] == [new["memory_id"]]
    assert set(await _active(client)) == {old["memory_id"], new["memory_id"]}
    found = await _call(client, "search_memories", {"query": "TechCorp"})
    assert (found["results"][0]["memory_id"], found["results"][0]["status"]) == (old["memory_id"], "active")


async def test_restore_of_an_active_or_unknown_memory_is_a_clear_error(client: Client) -> None:
    memory = await _store(client, "I'm vegetarian")
    for memory_id in (memory["memory_id"], "mem_0000000000000000"):
        result = await client.call_tool("restore_memory", {"memory_id": memory_id})
        assert result.is_error
        assert isinstance(result.content[0], TextContent)
        assert memory_id in result.content[0].text
    other_user = await client.call_tool("get_memory", {"memory_id": memory["memory_id"], "user_id": "mallory"})
    assert other_user.is_error


async def test_a_failure_mid_resolution_leaves_the_store_as_it_was(settings: Settings, db_path: Path) -> None:
    async with Client(create_server(settings), raise_exceptions=False) as client:
        old = await _store(client, "I work at TechCorp")
        before = await _everything(client)
        with sqlite3.connect(db_path) as db:
            db.executescript(FAIL_ON_SUPERSEDE)
        # The new version is inserted first, then superseding the old one fails: both must be undone,
        # along with the other memory of the same message that was stored before it.
        result = await client.call_tool("store_memory", {"message": "I have a cat called Luna. I now work at NewCorp."})
        assert result.is_error
        assert await _everything(client) == before
        details = await _call(client, "get_memory", {"memory_id": old["memory_id"]})
        assert [entry["action"] for entry in details["update_history"]] == ["created"]
        assert details["links"] == {"supersedes": [], "superseded_by": [], "related": []}
        # The server is still up and still writes.
        assert (await _store(client, "I play the piano"))["action"] == "created"
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM memory_links").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM memory_history").fetchone()[0] == 2


async def test_configured_default_strategy_applies_per_user(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARMONIA_RESOLUTION_STRATEGY", "keep_both")
    monkeypatch.setenv("HARMONIA_USER_RESOLUTION_STRATEGIES", '{"alice": "skip"}')
    settings = Settings(db_path=str(db_path))
    assert settings.resolution_strategy == "keep_both"
    async with Client(create_server(settings), raise_exceptions=True) as client:
        await _store(client, "I work at TechCorp")
        assert (await _store(client, "I now work at NewCorp"))["action"] == "created"
        await _store(client, "I work at TechCorp", user_id="alice")
        assert (await _store(client, "I now work at NewCorp", user_id="alice"))["action"] == "skipped"
        # An explicit strategy wins over the configured one.
        assert (await _store(client, "I now work at NewCorp", user_id="alice", resolution_strategy="version"))[
            "action"
        ] == "superseded_previous"


def test_an_unknown_configured_strategy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARMONIA_RESOLUTION_STRATEGY", "overwrite")
    with pytest.raises(ValueError, match="resolution_strategy"):
        Settings()
