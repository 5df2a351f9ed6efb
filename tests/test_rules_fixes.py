"""Rules extractor fixes of issue 10: fillers, small talk, pronouns from the previous message, short facts
about named pets and people, natural possessives, recurring dates, category rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from mcp import Client

from harmonia_mcp.extract.rules import extract_memories, resolve_pronoun
from harmonia_mcp.models import Category

SAID = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _contents(message: str, speaker: str = "User") -> list[str]:
    return [memory.content for memory in extract_memories(message, speaker, SAID)]


@pytest.mark.parametrize(
    ("message", "content"),
    [
        ("Actually I switched jobs, I now work at Stripe", "User now works at Stripe"),
        ("I'm allergic to cats, sadly", "User is allergic to cats"),
        ("It turns out I'm not allergic to cats after all", "User is not allergic to cats"),
        ("Honestly I love rock climbing lol", "User loves rock climbing"),
        ("I changed my mind, I prefer tea", "User now prefers tea"),
        ("Ugh, my knee hurts when I run, unfortunately", "User's knee hurts when User runs"),
    ],
)
def test_fillers_and_change_announcements_leave_the_fact(message: str, content: str) -> None:
    assert _contents(message) == [content]


@pytest.mark.parametrize(
    "message", ["Ugh, long day", "Meh.", "I'm exhausted today", "Phew, what a week lol", "Meh, rainy Monday."]
)
def test_small_talk_and_the_mood_of_the_moment_store_nothing(message: str) -> None:
    assert _contents(message) == []


def test_a_feeling_about_something_is_kept() -> None:
    assert _contents("I'm so proud of my daughter today") == ["User is so proud of their daughter on 2026-03-02"]


@pytest.mark.parametrize(
    ("message", "content"),
    [
        ("Pixel hates the U-Bahn.", "Pixel hates the U-Bahn"),
        ("Luna sleeps on the piano.", "Luna sleeps on the piano"),
        ("Tom speaks four languages.", "Tom speaks four languages"),
    ],
)
def test_short_durable_facts_about_named_pets_and_people_are_kept(message: str, content: str) -> None:
    assert _contents(message) == [content]


@pytest.mark.parametrize(
    ("message", "content"),
    [
        ("I broke my wrist", "User broke their wrist"),
        ("I'm hoping to get my pilot's license", "User is hoping to get their pilot's license"),
        ("I taught myself to knit", "User taught themselves to knit"),
        ("My sister lives in Porto", "User's sister lives in Porto"),
    ],
)
def test_possessives_after_the_anonymous_speaker_read_naturally(message: str, content: str) -> None:
    assert _contents(message) == [content]


def test_a_named_speaker_keeps_their_name() -> None:
    assert _contents("I broke my wrist", "Caroline") == ["Caroline broke Caroline's wrist"]


@pytest.mark.parametrize(
    ("message", "content"),
    [
        ("My birthday is on March 14", "User's birthday is on March 14"),
        ("Our anniversary is June 2", "User's anniversary is June 2"),
        ("I play chess every Thursday", "User plays chess every Thursday"),
    ],
)
def test_recurring_dates_stay_recurring(message: str, content: str) -> None:
    memories = extract_memories(message, "User", SAID)
    assert [(m.content, m.event_time) for m in memories] == [(content, None)]


def test_a_birthday_party_on_a_given_day_is_still_an_event() -> None:
    (memory,) = extract_memories("My birthday party is next Saturday", "User", SAID)
    assert memory.event_time is not None and memory.event_time.date().isoformat() == "2026-03-07"


@pytest.mark.parametrize(
    ("message", "category"),
    [
        ("I'm Priya Raman", Category.PERSONAL),
        ("My name's Leo Marsh", Category.PERSONAL),
        ("I run a small bakery", Category.WORK),
        ("We own a little bookshop in Porto", Category.WORK),
        ("My partner Sam works night shifts at the hospital", Category.RELATIONSHIP),
        ("My dad is a mechanic", Category.RELATIONSHIP),
        ("My sister works as a nurse", Category.RELATIONSHIP),
        ("My wife teaches history at a high school", Category.RELATIONSHIP),
        ("I own a small bike repair shop", Category.WORK),
        ("I'm Ada Lovelace, nice to meet you", Category.PERSONAL),
        ("Our anniversary is on May 2", Category.RELATIONSHIP),
    ],
)
def test_category_rules(message: str, category: Category) -> None:
    assert [memory.category for memory in extract_memories(message, "User", SAID)] == [category]


@pytest.mark.parametrize(
    ("content", "previous", "resolved"),
    [
        ("She will stay for three days", "My sister Ana is visiting", "User's sister Ana will stay for three days"),
        ("He starts at Google on Monday", "My husband got a new job", "User's husband starts at Google on Monday"),
        ("Her flight lands at 6", "My mom is coming over", "User's mom's flight lands at 6"),
        ("She will stay for three days", "My sister and my mom are visiting", None),  # two women: ambiguous
        ("She will stay for three days", "My brother is visiting", None),  # no woman named
        ("User will stay", "My sister is visiting", None),  # no pronoun
    ],
)
def test_resolve_pronoun(content: str, previous: str, resolved: str | None) -> None:
    assert resolve_pronoun(content, previous, "User") == resolved


async def _store(client: Client, message: str, minute: int, session: str = "s1") -> list[dict[str, Any]]:
    result = await client.call_tool(
        "store_memory",
        {"message": message, "session_id": session, "occurred_at": f"2026-03-02T10:{minute:02d}:00+00:00"},
    )
    assert result.structured_content is not None, result.content
    memories: list[dict[str, Any]] = result.structured_content["memories"]
    return memories


@pytest.mark.anyio
async def test_a_pronoun_resolves_to_the_person_of_the_previous_message_of_the_same_session(client: Client) -> None:
    await _store(client, "My sister Ana is coming to visit next week", 0)
    (resolved,) = await _store(client, "She will stay for three days", 1)
    assert resolved["content"] == "User's sister Ana will stay for three days"
    (other,) = await _store(client, "She will stay for three days", 2, session="s2")  # another conversation
    assert other["content"] == "She will stay for three days"
    assert other["confidence"] == 0.4
