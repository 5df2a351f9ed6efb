"""conflicts.py's pure parts: slots, classification, candidate queries, merged sentences."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from harmonia_mcp.conflicts import Fact, candidate_query, classify, merge_content, parse_slot, same_words
from harmonia_mcp.models import Category, ExtractedMemory, Memory


def _fact(content: str, entities: tuple[str, ...] = (), event_date: str | None = None) -> Fact:
    return Fact(content, entities, event_date)


def _memory(content: str, entities: list[str] | None = None) -> Memory:
    return Memory(
        memory_id="mem_0123456789abcdef",
        user_id="u",
        content=content,
        category=Category.RELATIONSHIP,
        confidence=0.9,
        entities=entities or [],
        tags=[],
        event_time=None,
        source_message=None,
        speaker="User",
        session_id=None,
        metadata={},
        extractor="rules",
        status="active",
        created_at="2026-01-01T00:00:00+00:00",
        updated_at="2026-01-01T00:00:00+00:00",
    )


# (old, new, expected kind); entities as the rules extractor gives them.
CASES = [
    (
        _fact("User has a dog called Biggie", ("Biggie",)),
        _fact("User has a dog named Biggie", ("Biggie",)),
        "duplicate",
    ),
    (_fact("User loves sushi"), _fact("User really loves sushi"), "duplicate"),
    (_fact("User's favorite color is blue"), _fact("User's favourite colour is blue"), "duplicate"),
    (_fact("User works at TechCorp", ("TechCorp",)), _fact("User works for TechCorp", ("TechCorp",)), "duplicate"),
    (_fact("User lives in Lisbon", ("Lisbon",)), _fact("User lives in Lisbon, Portugal", ("Lisbon",)), "duplicate"),
    (_fact("User works at TechCorp", ("TechCorp",)), _fact("User now works at NewCorp", ("NewCorp",)), "update"),
    (
        _fact("Biggie loves his stuffed Costco chicken", ("Biggie", "Costco")),
        _fact("Biggie now loves his yellow ball", ("Biggie",)),
        "update",
    ),
    (_fact("User lives in Lisbon", ("Lisbon",)), _fact("User just moved to Berlin", ("Berlin",)), "update"),
    (_fact("User's girlfriend is Anna", ("Anna",)), _fact("User is now dating Sam", ("Sam",)), "update"),
    (_fact("User's favorite color is blue"), _fact("User's favorite color is green"), "update"),
    (_fact("User prefers tea"), _fact("User now prefers coffee"), "update"),
    (_fact("User is vegetarian"), _fact("User is vegan now"), "update"),
    (_fact("User works at TechCorp", ("TechCorp",)), _fact("User doesn't work at TechCorp", ("TechCorp",)), "update"),
    (
        _fact("The party is on Friday", (), "2026-03-06"),
        _fact("The party is now on Saturday", (), "2026-03-07"),
        "update",
    ),
    (_fact("User has a dog called Biggie", ("Biggie",)), _fact("Biggie is a beagle", ("Biggie",)), "complement"),
    (
        _fact("User's sister Maria lives in Lisbon", ("Maria", "Lisbon")),
        _fact("Maria is a nurse", ("Maria",)),
        "complement",
    ),
    (_fact("User works at TechCorp", ("TechCorp",)), _fact("TechCorp is based in Austin", ("TechCorp",)), "complement"),
    (_fact("User loves sushi"), _fact("User loves hiking"), "unrelated"),
    (_fact("User prefers tea"), _fact("User prefers coffee"), "unrelated"),
    (_fact("User loves hiking"), _fact("User's sister loves hiking"), "unrelated"),
    (
        _fact("User works at TechCorp", ("TechCorp",)),
        _fact("User's brother works at TechCorp", ("TechCorp",)),
        "unrelated",
    ),
    (_fact("User's favorite color is blue"), _fact("User's favorite food is pizza"), "unrelated"),
    (
        _fact("User has a dog called Biggie", ("Biggie",)),
        _fact("User now has a cat called Luna", ("Luna",)),
        "unrelated",
    ),
    (_fact("User plays tennis"), _fact("User now plays the piano"), "unrelated"),
    (_fact("User collected stamp number 3 from Peru"), _fact("User collected stamp number 4 from Peru"), "unrelated"),
    (_fact("Joanna loves hiking", ("Joanna",)), _fact("Joanna loves trying something new", ("Joanna",)), "unrelated"),
    (_fact("Feels like a dream come true"), _fact("It feels like all the hard work paid off now"), "unrelated"),
    (
        _fact("User's dentist appointment is on May 3", (), "2026-05-03"),
        _fact("User's car appointment is on May 3", (), "2026-05-03"),
        "unrelated",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), CASES, ids=[f"{c[0].content} -> {c[1].content}" for c in CASES])
def test_classify(old: Fact, new: Fact, expected: str) -> None:
    assert classify(new, old, ["User"]).kind == expected


def test_an_event_on_another_day_is_never_a_duplicate_of_the_same_sentence() -> None:
    old = _fact("User has a team meeting", (), "2026-03-09")
    new = _fact("User has a team meeting", (), "2026-03-10")
    assert classify(new, old).kind != "duplicate"
    assert classify(_fact("User has a team meeting", (), "2026-03-09"), old).kind == "duplicate"


def test_the_speaker_name_is_not_a_link_between_memories() -> None:
    old = _fact("Caroline went hiking", ("Caroline",))
    new = _fact("Caroline is a counselor", ("Caroline",))
    assert classify(new, old, ["Caroline"]).kind == "unrelated"


def test_parse_slot_reads_subject_attribute_value_and_markers() -> None:
    slot = parse_slot("User now works at NewCorp", names=["User"])
    assert slot is not None
    assert (slot.subject, slot.attribute, slot.value, slot.value_text) == ("user", "employer", {"newcorp"}, "NewCorp")
    assert slot.changed and not slot.negated
    owner = parse_slot("User's wife's name is Sarah", names=["User", "Sarah"])
    assert owner is not None and (owner.subject, owner.attribute) == ("user", "partner")
    assert parse_slot("It feels like a dream", names=["User"]) is None
    assert parse_slot("User's dentist appointment is on May 3", has_event_time=False, names=["User"]) is not None
    when = parse_slot("User's dentist appointment is on May 3", has_event_time=True, names=["User"])
    assert when is not None and when.attribute == "when"


def test_same_words_allows_spelling_but_not_numbers_or_other_words() -> None:
    assert same_words(frozenset({"organise", "party"}), frozenset({"organize", "party"}))
    assert not same_words(frozenset({"stamp", "3"}), frozenset({"stamp", "4"}))
    assert not same_words(frozenset({"blue"}), frozenset({"green"}))
    assert not same_words(frozenset(), frozenset())


def test_candidate_query_leaves_out_the_speaker_and_markers_and_adds_slot_cues() -> None:
    query = candidate_query(ExtractedMemory(content="User just moved to Berlin", entities=["Berlin"]), ["User"])
    assert query is not None
    assert '"user"' not in query and '"just"' not in query
    assert '"berlin"' in query and '"lives"' in query
    assert candidate_query(ExtractedMemory(content="User is now"), ["User"]) is None


def test_merge_content() -> None:
    dog = _memory("User has a dog called Biggie", ["Biggie"])
    beagle = ExtractedMemory(content="Biggie is a beagle", entities=["Biggie"])
    assert merge_content(beagle, dog, "complement") == "User has a beagle called Biggie"
    job = _memory("User works at TechCorp", ["TechCorp"])
    new_job = ExtractedMemory(content="User now works at NewCorp", entities=["NewCorp"])
    assert merge_content(new_job, job, "update") == "User now works at NewCorp (previously: TechCorp)"
    short = _memory("User loves sushi")
    longer = ExtractedMemory(content="User really loves sushi", event_time=datetime(2026, 1, 1, tzinfo=UTC))
    assert merge_content(longer, short, "duplicate") == "User really loves sushi"
    other = ExtractedMemory(content="Maria is a nurse", entities=["Maria"])
    assert merge_content(other, _memory("User's sister Maria lives in Lisbon", ["Maria"]), "complement") == (
        "User's sister Maria lives in Lisbon; Maria is a nurse"
    )
