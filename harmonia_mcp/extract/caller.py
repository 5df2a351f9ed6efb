"""Facts written by the calling model (`store_memory(facts=[...])`): validate and normalise, all or nothing.

The host model (Claude, GPT, ...) has already understood the conversation; it hands over one durable fact
per item. The server still does its part before reconciliation: every item is checked (the first bad one
raises `InvalidInput` naming the item and what is allowed, so nothing of the call is stored), and each
fact is normalised the way extracted memories are:

- content: whitespace collapsed, a final period dropped, "the user" → the speaker's name, any
  first-person word rewritten to the speaker (`rules.third_person`);
- time: `event_time` (ISO-8601) or `when` (words such as "next Friday at 3pm", resolved against
  `occurred_at` in the user's zone by `temporal.resolve_time`); with neither, a relative time in the
  content is resolved and rewritten to an absolute date, as the rules extractor does. A birthday or
  anniversary stays a month and day (`temporal.recurring_date`);
- category: checked against the twelve, or inferred from the content by the rules' cue words;
- entities: as given, or the capitalised names in the content; keywords: lower-cased and kept as
  tags, which the full-text index covers, so a fact about "two cats" is found by "pets";
- confidence: as given (0-1), else `CALLER_CONFIDENCE`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.extract.rules import categorise, find_entities, third_person
from harmonia_mcp.models import CallerFact, Category, ExtractedMemory
from harmonia_mcp.temporal import parse_timestamp, recurring_date, resolve_time, with_absolute_time

__all__ = ["CALLER_CONFIDENCE", "MAX_FACTS", "normalise_facts"]

MAX_FACTS = 50  # per call: a conversation turn rarely holds more, and one call is one transaction
MAX_LIST_ITEMS = 20  # entities or keywords per fact
MAX_WORD_CHARS = 100
# The host model read the whole conversation; its facts are surer than a rules clause (0.7-0.9), and
# below what a user confirms by hand (1.0).
CALLER_CONFIDENCE = 0.9

_THE_USER = re.compile(r"\b[Tt]he user\b")
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CATEGORIES = ", ".join(category.value for category in Category)


def _words(values: list[str] | None, what: str, label: str) -> list[str]:
    if values is None:
        return []
    if len(values) > MAX_LIST_ITEMS:
        raise InvalidInput(f"{label}: {len(values)} {what}; at most {MAX_LIST_ITEMS} are allowed")
    out: list[str] = []
    for value in values:
        word = _SPACES.sub(" ", value).strip()
        if not 1 <= len(word) <= MAX_WORD_CHARS or _CONTROL.search(word):
            raise InvalidInput(f"{label}: each of {what} must be 1-{MAX_WORD_CHARS} characters on one line")
        out.append(word)
    return list(dict.fromkeys(out))


def _content(fact: CallerFact, speaker: str, max_bytes: int, label: str) -> str:
    text = _SPACES.sub(" ", fact.content).strip().rstrip(".").strip()
    if not text:
        raise InvalidInput(f"{label}: content is empty; write one durable fact, e.g. 'User has two cats'")
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidInput(f"{label}: content is {size} bytes; the limit is {max_bytes} bytes: split it")
    if _CONTROL.search(text):
        raise InvalidInput(f"{label}: content has control characters; send plain text")
    text = _THE_USER.sub(speaker, text)
    text = third_person(text, speaker)
    return text[:1].upper() + text[1:]


def _category(fact: CallerFact, label: str) -> Category | None:
    if fact.category is None:
        return None
    try:
        return Category(fact.category.strip().lower())
    except ValueError:
        raise InvalidInput(f"{label}: category {fact.category[:40]!r} is unknown; use one of {_CATEGORIES}") from None


def _normalise(fact: CallerFact, speaker: str, reference_time: datetime, max_bytes: int, label: str) -> ExtractedMemory:
    content = _content(fact, speaker, max_bytes, label)
    category = _category(fact, label)
    if fact.confidence is not None and not 0.0 <= fact.confidence <= 1.0:
        raise InvalidInput(f"{label}: confidence {fact.confidence} is out of range; use a number from 0 to 1")
    if fact.event_time is not None and fact.when is not None:
        raise InvalidInput(f"{label}: give event_time (ISO-8601) or when (words), not both")
    event_time: datetime | None = None
    date_only = False
    if fact.event_time is not None:
        event_time = parse_timestamp(fact.event_time, reference_time.tzinfo or UTC, field=f"{label} event_time")
        date_only = _DATE_ONLY.match(fact.event_time.strip()) is not None
    elif fact.when is not None:
        resolved = resolve_time(fact.when, reference_time)
        if resolved is None:
            raise InvalidInput(
                f"{label}: when {fact.when[:60]!r} is not a date or time this server can read; use e.g. "
                "'tomorrow at 2pm', 'next Friday', 'May 3' or an ISO-8601 event_time"
            )
        event_time, date_only = resolved.moment, resolved.date_only
    # A relative time in the content ("tomorrow") becomes the absolute one, whichever way the time came.
    said = None if recurring_date(content) else resolve_time(content, reference_time)
    if said is not None:
        content = with_absolute_time(content, said)
        if event_time is None:
            event_time, date_only = said.moment, said.date_only
    tags = [word.lower() for word in _words(fact.keywords, "keywords", label)]
    entities = _words(fact.entities, "entities", label) if fact.entities is not None else find_entities(content)
    if category is None:
        category = categorise(content, event_time, reference_time)
    return ExtractedMemory(
        content=content,
        category=category,
        confidence=CALLER_CONFIDENCE if fact.confidence is None else fact.confidence,
        entities=[entity for entity in entities if entity != speaker],
        tags=list(dict.fromkeys(tags)),
        event_time=event_time,
        event_date_only=date_only,
    )


def normalise_facts(
    facts: Sequence[CallerFact], *, speaker: str, reference_time: datetime, max_bytes: int
) -> list[ExtractedMemory]:
    """Validate and normalise the caller's facts, in order (see the module docstring).

    Args:
        facts: 1 to `MAX_FACTS` items.
        speaker: the name that first-person words and "the user" become ("User", "Caroline").
        reference_time: when the conversation said them (timezone-aware); "when" and relative times in
            the content resolve against it.
        max_bytes: the longest content allowed, in UTF-8 bytes (the message limit).

    Returns:
        One `ExtractedMemory` per fact.

    Raises:
        InvalidInput: no facts, too many, or an item that is empty, too long, of an unknown category, with
            a malformed or impossible date, or a confidence outside 0-1; the message names the item
            ("facts[2]") and what is allowed.
    """
    if not facts:
        raise InvalidInput("facts is empty: give 1 or more facts, or send message instead")
    if len(facts) > MAX_FACTS:
        raise InvalidInput(f"facts has {len(facts)} items; at most {MAX_FACTS} per call: split them over calls")
    return [_normalise(fact, speaker, reference_time, max_bytes, f"facts[{index}]") for index, fact in enumerate(facts)]
