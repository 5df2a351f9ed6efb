"""Reconciliation that catches changes of mind (retraction, replacement, single-valued attributes) and time order."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from harmonia_mcp.conflicts import Fact, canonical, classify

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # negation and retraction
        ("User is allergic to cats, sadly", "It turns out User is not allergic to cats after all"),
        ("User eats steak at least once a week", "User doesn't eat meat anymore"),
        ("User eats bacon every morning", "User stopped eating meat"),
        ("User eats chicken", "User is vegetarian"),
        ("User plays tennis on Sundays", "User stopped playing tennis"),
        ("User smokes cigarettes", "User quit smoking cigarettes"),
        ("User works at Farfetch", "User quit their job"),
        ("User works as a product designer at Farfetch", "User left their job at Farfetch"),
        # replacement
        ("User works as a product designer at Farfetch", "User now works at Stripe"),
        ("User lives in Lisbon", "User moved out of Lisbon"),
        ("User is dating Anna", "User broke up with Anna"),
        ("User's girlfriend is Anna", "User and Anna broke up"),
        ("User prefers coffee", "User now prefers tea"),
        ("User drives a Volvo", "User doesn't drive anymore"),
        ("User runs every morning", "User stopped running"),
        ("User is dating Tom", "Tom and User broke up"),
        ("User is a vegetarian", "User now eats fish"),
        ("User is learning German on Duolingo", "User no longer learns German"),
        # single-valued attributes
        ("User is 34 years old", "User is 35 years old"),
        ("User is 34", "User turned 35"),
        ("User's favourite band is Muse", "User's favorite band is Radiohead"),
        ("User's husband is Tom", "User's husband is Mark"),
        # what stands before the subject, a second clause, a noun for what one eats, a perfect tense, a long job title
        ("User is a big meat eater, grilled lamb is their weakness", "User stopped eating meat altogether"),
        ("User is a meat eater", "After watching a documentary User stopped eating meat; User is vegetarian now"),
        ("For work User is an air traffic controller at Lyon airport", "User has accepted a job at ENAC"),
        ("User is a senior software engineer at Spotify", "Big change: User has taken a position as head of data at X"),
        ("User works at Spotify", "User accepted a post as an instructor at ENAC"),
        ("These days User lives in Lyon", "User moved to Toulouse"),
        ("User lives in Ghent", "User has moved to Antwerp"),  # a perfect tense of a change
        ("User is a meat eater", "After a year of thinking about it, User has gone vegan"),
        ("User is 41 years old", "User is 42 now"),
        ("User is a big coffee drinker", "User gave up coffee in November 2026"),  # as the extractor dates it
        ("User drinks a glass of wine every evening", "User has cut out alcohol completely"),
        ("User is engaged to Oskar", "Oskar and User called off the engagement"),
    ],
)
def test_a_change_of_mind_updates_the_fact_it_contradicts(old: str, new: str) -> None:
    entities = tuple(name for name in ("Anna", "Tom") if name in new)
    assert classify(Fact(new, entities), Fact(old, entities)).kind == "update"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # multi-valued attributes keep both
        ("User is allergic to cats", "User is allergic to peanuts"),
        ("User has a sister", "User has a brother"),
        ("User speaks Spanish", "User speaks French"),
        ("User eats steak", "User eats salad"),
        ("User has a dog called Pixel", "User has a cat called Miso"),
        # unrelated
        ("User works at Farfetch", "User eats steak"),
        ("User lives in Lisbon", "User's sister moved out of Porto"),
        ("User plays tennis", "User stopped playing the piano"),
        ("User is allergic to cats", "User's sister is not allergic to cats"),
        ("User eats fish", "User no longer eats meat"),
        ("User is vegetarian", "User eats tofu"),
        ("User is vegetarian", "User eats fish"),  # not said as a change: both kept
        ("User's brother plays chess", "User stopped playing chess"),
        ("User is learning German", "User no longer learns Spanish"),
        ("User doesn't drive", "User no longer drives"),
        # the new readings touch no other fact
        ("User is a picky eater", "User is vegetarian"),  # "picky" is not a food
        ("User's brother is a pilot at KLM", "User has accepted a job at ENAC"),
        ("Since Karim got the job, User has been happier", "User has accepted a job at ENAC"),
        ("User is a volunteer at the animal shelter", "User has accepted a job at ENAC"),
        ("For years User has lived in Lyon", "User's sister moved to Toulouse"),
        ("User works at Ocado", "User has worked at Siemens before"),  # experience, not the job now
        ("User is a social drinker", "User gave up coffee"),  # a manner, not a drink
        ("User drinks coffee", "User quit Facebook"),
        ("User's sister is engaged to Tom", "User called off the engagement"),
        ("User lives in Ghent", "User's sister has moved to Antwerp"),
    ],
)
def test_other_values_and_other_facts_are_not_updates(old: str, new: str) -> None:
    assert classify(Fact(new), Fact(old)).kind != "update"


def test_a_weekday_alone_is_not_a_fact_but_an_event_on_a_weekday_is() -> None:
    from datetime import UTC, datetime

    from harmonia_mcp.extract.rules import extract_memories

    said = datetime(2026, 3, 2, 10, tzinfo=UTC)
    assert extract_memories("Meh, rainy Monday.", "User", said) == []
    assert [m.content for m in extract_memories("The party is on Friday", "User", said)] == [
        "The party is on 2026-03-06"
    ]


def test_canonical_reads_fillers_and_retractions() -> None:
    assert canonical("It turns out User is not allergic to cats after all") == "User is not allergic to cats"
    assert canonical("User stopped driving to work") == "User no longer drives to work"
    assert canonical("User quit their job") == "User no longer works at (any)"
    assert canonical("For work User is a nurse") == "User is a nurse"
    assert canonical("Big change: User moved to Porto") == "User moved to Porto"
    assert canonical("Since Karim left, User lives alone") == "Since Karim left, User lives alone"  # names someone
    assert canonical("User is a big coffee eater") == "User is a big coffee eater"  # not a food `_KINDS` knows
    assert canonical("User is a big meat eater") == "User eats meat"
    assert canonical("User loves sushi; User hates olives") == "User loves sushi"


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _state(client: Client, user: str) -> dict[str, str]:
    listed = await _call(client, "list_memories", {"user_id": user, "include_inactive": True})
    return {memory["content"]: memory["status"] for memory in listed["memories"]}


async def _say(client: Client, user: str, fact: str, when: str) -> dict[str, Any]:
    stored = await _call(client, "store_memory", {"user_id": user, "facts": [{"content": fact}], "occurred_at": when})
    memory: dict[str, Any] = stored["memories"][0]
    return memory


async def test_a_fact_said_earlier_is_stored_as_superseded_by_the_later_one(client: Client) -> None:
    later = await _say(client, "u1", "User lives in Berlin", "2026-11-01T10:00:00Z")
    older = await _say(client, "u1", "User lives in Lisbon", "2024-01-01T10:00:00Z")
    assert older["action"] == "stored_as_superseded"
    assert older["related_memory_ids"] == [later["memory_id"]]
    assert await _state(client, "u1") == {"User lives in Berlin": "active", "User lives in Lisbon": "superseded"}
    details = await _call(client, "get_memory", {"user_id": "u1", "memory_id": later["memory_id"]})
    assert details["links"]["supersedes"] == [older["memory_id"]]
    found = await _call(client, "search_memories", {"user_id": "u1", "query": "where does the user live"})
    assert [hit["content"] for hit in found["results"]] == ["User lives in Berlin"]


async def test_a_new_job_announced_as_news_supersedes_the_old_one(client: Client) -> None:
    for message in ("I work as a seismologist at the Universidad Santa Maria.", "Big news: I accepted a job at Acme."):
        await _call(client, "store_memory", {"user_id": "u3", "message": message})
    assert await _state(client, "u3") == {
        "User works as a seismologist at the Universidad Santa Maria": "superseded",
        "User accepted a job at Acme": "active",
    }


async def test_out_of_order_and_in_order_give_the_same_final_state(client: Client) -> None:
    said = [
        ("User works at Farfetch", "2024-01-01T10:00:00Z"),
        ("User now works at Stripe", "2025-06-01T10:00:00Z"),
        ("User now works at Figma", "2026-06-01T10:00:00Z"),
    ]
    for fact, when in said:
        await _say(client, "in-order", fact, when)
    for fact, when in reversed(said):
        await _say(client, "reversed", fact, when)
    in_order, backwards = await _state(client, "in-order"), await _state(client, "reversed")
    assert [fact for fact, status in in_order.items() if status == "active"] == ["User now works at Figma"]
    assert [fact for fact, status in backwards.items() if status == "active"] == ["User now works at Figma"]
    assert set(in_order) == set(backwards)


async def test_a_later_retraction_supersedes_and_an_unrelated_fact_is_untouched(client: Client) -> None:
    await _say(client, "u1", "User is allergic to cats", "2026-01-01T10:00:00Z")
    await _say(client, "u1", "User is allergic to peanuts", "2026-01-02T10:00:00Z")
    await _say(client, "u1", "User has a cat called Miso", "2026-01-03T10:00:00Z")
    retraction = await _say(client, "u1", "It turns out User is not allergic to cats after all", "2026-02-01T10:00:00Z")
    assert retraction["action"] == "superseded_previous"
    state = await _state(client, "u1")
    assert state["User is allergic to cats"] == "superseded"
    assert state["User is allergic to peanuts"] == "active"
    assert state["User has a cat called Miso"] == "active"
