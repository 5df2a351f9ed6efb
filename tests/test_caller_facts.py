"""store_memory(facts=[...]): facts written by the calling model, validated all or nothing, normalised, indexed."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

pytestmark = pytest.mark.anyio

SAID = "2026-03-02T10:00:00+00:00"


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _error(client: Client, arguments: dict[str, Any]) -> str:
    result = await client.call_tool("store_memory", arguments)
    assert result.is_error
    return " ".join(getattr(block, "text", "") for block in result.content)


async def _all(client: Client, user: str = "u1") -> list[dict[str, Any]]:
    listed = await _call(client, "list_memories", {"user_id": user, "include_inactive": True})
    memories: list[dict[str, Any]] = listed["memories"]
    return memories


async def test_facts_are_stored_as_given_with_the_message_as_source_and_no_extraction(client: Client) -> None:
    stored = await _call(
        client,
        "store_memory",
        {
            "user_id": "u1",
            "message": "Ugh, long day. I live in Paris btw, and I got two cats lol",
            "facts": [{"content": "User has two cats", "keywords": ["Pets", "animals"]}],
            "occurred_at": SAID,
        },
    )
    assert [(m["content"], m["extractor"]) for m in stored["memories"]] == [("User has two cats", "caller")]
    memories = await _all(client)
    assert len(memories) == 1  # "I live in Paris" was not extracted: the facts win
    assert memories[0]["source_message"].startswith("Ugh, long day")
    assert memories[0]["tags"] == ["pets", "animals"]
    assert memories[0]["confidence"] == 0.9
    found = await _call(client, "search_memories", {"user_id": "u1", "query": "pets"})
    assert [hit["content"] for hit in found["results"]] == ["User has two cats"]


async def test_facts_are_normalised_to_third_person_and_absolute_time(client: Client) -> None:
    stored = await _call(
        client,
        "store_memory",
        {
            "user_id": "u1",
            "speaker": "Caroline",
            "occurred_at": SAID,
            "facts": [
                {"content": "I'm allergic to peanuts."},
                {"content": "The user's sister Ana arrives tomorrow"},
                {"content": "Caroline has a dentist appointment", "when": "next Friday at 3pm"},
                {"content": "Caroline's birthday is on March 14"},
            ],
        },
    )
    memories = stored["memories"]
    assert memories[0]["content"] == "Caroline is allergic to peanuts"
    assert memories[0]["category"] == "health"  # inferred from the cue words
    assert memories[1]["content"] == "Caroline's sister Ana arrives on 2026-03-03"
    assert memories[1]["event_time"] == "2026-03-03"
    assert memories[2]["event_time"] == "2026-03-06T15:00:00+00:00"
    assert memories[3]["content"] == "Caroline's birthday is on March 14"  # yearly: not pinned to one year
    assert memories[3]["event_time"] is None


async def test_given_category_entities_and_event_time_are_kept(client: Client) -> None:
    stored = await _call(
        client,
        "store_memory",
        {
            "user_id": "u1",
            "facts": [
                {
                    "content": "User runs a bakery called Crumbs",
                    "category": "WORK",
                    "entities": ["Crumbs"],
                    "event_time": "2025-05-01",
                    "confidence": 0.6,
                }
            ],
        },
    )
    memory = stored["memories"][0]
    assert (memory["category"], memory["event_time"], memory["confidence"]) == ("work", "2025-05-01", 0.6)
    assert (await _all(client))[0]["entities"] == ["Crumbs"]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"content": "   "}, "facts[1]: content is empty"),
        ({"content": "User likes tea", "category": "food"}, "facts[1]: category 'food' is unknown"),
        ({"content": "User flies", "event_time": "2026-02-30"}, "facts[1] event_time '2026-02-30'"),
        ({"content": "User flies", "event_time": "soon-ish"}, "facts[1] event_time"),
        ({"content": "User flies", "when": "whenever"}, "facts[1]: when 'whenever'"),
        ({"content": "User flies", "when": "tomorrow", "event_time": "2026-03-03"}, "not both"),
        ({"content": "User flies", "confidence": 1.5}, "facts[1]: confidence 1.5 is out of range"),
        ({"content": "x" * 40000}, "facts[1]: content is 40000 bytes"),
        ({"content": "User flies", "keywords": ["k"] * 21}, "at most 20"),
    ],
)
async def test_a_bad_fact_is_an_error_naming_it_and_nothing_of_the_call_is_stored(
    client: Client, bad: dict[str, Any], says: str
) -> None:
    message = await _error(client, {"user_id": "u1", "facts": [{"content": "User has two cats"}, bad]})
    assert says in message
    assert await _all(client) == []


async def test_too_many_or_no_facts_or_nothing_at_all_are_errors(client: Client) -> None:
    many = [{"content": f"User has {n} books"} for n in range(51)]
    assert "at most 50" in await _error(client, {"user_id": "u1", "facts": many})
    assert "facts is empty" in await _error(client, {"user_id": "u1", "facts": []})
    assert "give message" in await _error(client, {"user_id": "u1"})
    assert await _all(client) == []


async def test_caller_facts_reconcile_with_what_is_known(client: Client) -> None:
    await _call(client, "store_memory", {"user_id": "u1", "message": "I work at Farfetch", "occurred_at": SAID})
    stored = await _call(
        client,
        "store_memory",
        {"user_id": "u1", "facts": [{"content": "User now works at Stripe"}], "occurred_at": "2026-04-01T10:00:00Z"},
    )
    assert stored["memories"][0]["action"] == "superseded_previous"
    statuses = {m["content"]: m["status"] for m in await _all(client)}
    assert statuses == {"User works at Farfetch": "superseded", "User now works at Stripe": "active"}
