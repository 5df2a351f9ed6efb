"""The prompts the Ollama extractor sends: one place, versioned, rendered by a test.

`PROMPT_VERSION` changes whenever the wording changes, so a stored memory's extraction can be traced
to the prompt that produced it (the Ollama extractor logs it with each call) and a benchmark figure
to the prompt it measured.

Design of the prompt, and why:

- A system prompt defines the task and the twelve categories of DESIGN.md, each with one example,
  because small models (3B) pick categories far better from an example than from a name.
- It names the speaker, so "I" becomes a name rather than "the user" in imported conversations.
- It gives the reference time and time zone, but asks the model to keep time words as said
  ("tomorrow at 2pm"): date arithmetic is where small models go wrong, so harmonia resolves the
  words itself with `temporal.py` against the same reference time and writes the absolute date.
- Few-shot examples (a user turn and the JSON the assistant should answer) show the shape of a reply,
  the split of one message into several memories, and empty replies for small talk and questions.
  None of them is a sentence of the benchmark file.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from harmonia_mcp.models import Category

PROMPT_VERSION = "extract-v1"

CATEGORY_EXAMPLES: dict[Category, str] = {
    Category.PERSONAL: "{speaker} lives in Porto",
    Category.RELATIONSHIP: "{speaker}'s brother Tom is a firefighter",
    Category.PREFERENCE: "{speaker} prefers tea to coffee",
    Category.WORK: "{speaker} works as an accountant at Deloitte",
    Category.EDUCATION: "{speaker} studied law at the University of Coimbra",
    Category.HEALTH: "{speaker} is lactose intolerant",
    Category.EVENT: "{speaker} has a job interview on Thursday at 3pm",
    Category.GOAL: "{speaker} wants to run a marathon",
    Category.SKILL: "{speaker} plays the cello",
    Category.EMOTION: "{speaker} feels anxious about the exams",
    Category.FACT: "{speaker} owns a red bicycle",
    Category.OTHER: "The bakery on Rua Augusta closes at noon",
}

_SYSTEM = """\
You extract long-term memories from one message that {speaker} said to an assistant.

A memory is a durable fact about {speaker} or the people, pets, places and plans in their life:
something worth remembering weeks later. Write each memory as one short third-person sentence that
starts with "{speaker}" (or the person it is about) and never uses "I", "me", "my", "we" or "our".
Keep names, numbers and places exactly as said. Split a message with several facts into several
memories, one fact each.

Return no memories (an empty list) for questions, requests to the assistant, greetings, thanks and
small talk: they are not facts about {speaker}.

Time: the message was said on {reference} (time zone {zone}). Keep time words exactly as said
("tomorrow at 2pm", "two weeks ago", "on Friday"); do not compute dates, harmonia does that.
A habit ("every Friday", "after 4 PM") is a preference or fact, not an event.

Pick one category per memory:
{categories}

confidence: 0.9 when {speaker} says it plainly about themselves, 0.7 when it is implied,
0.5 when it is about someone else or uncertain.
entities: the names of people, pets, places, organisations and products in the memory.

Answer with JSON only: {{"memories": [{{"content": ..., "category": ..., "confidence": ..., "entities": [...]}}]}}"""

# (what the speaker said, the memories the assistant answers). Speaker written as {speaker}.
_FEW_SHOT: tuple[tuple[str, list[dict[str, Any]]], ...] = (
    (
        "I'm Priya and I teach chemistry at a high school in Leeds. My partner Tom is a nurse.",
        [
            {"content": "{speaker}'s name is Priya", "category": "personal", "confidence": 0.9, "entities": ["Priya"]},
            {
                "content": "{speaker} teaches chemistry at a high school in Leeds",
                "category": "work",
                "confidence": 0.9,
                "entities": ["Leeds"],
            },
            {
                "content": "{speaker}'s partner Tom is a nurse",
                "category": "relationship",
                "confidence": 0.9,
                "entities": ["Tom"],
            },
        ],
    ),
    (
        "haha that's great, thanks so much!",
        [],
    ),
    (
        "Can you suggest a good podcast about history?",
        [],
    ),
    (
        "I have a vet appointment for my cat Luna on Thursday at 9am, and I'm really worried about her.",
        [
            {
                "content": "{speaker} has a vet appointment for {speaker}'s cat Luna on Thursday at 9am",
                "category": "event",
                "confidence": 0.9,
                "entities": ["Luna"],
            },
            {
                "content": "{speaker} is worried about {speaker}'s cat Luna",
                "category": "emotion",
                "confidence": 0.9,
                "entities": ["Luna"],
            },
        ],
    ),
    (
        "I never drink coffee after 3 PM and I've been learning the piano since last year.",
        [
            {
                "content": "{speaker} never drinks coffee after 3 PM",
                "category": "preference",
                "confidence": 0.9,
                "entities": [],
            },
            {
                "content": "{speaker} has been learning the piano since last year",
                "category": "skill",
                "confidence": 0.9,
                "entities": [],
            },
        ],
    ),
)


def _zone_name(moment: datetime) -> str:
    key = getattr(moment.tzinfo, "key", None)  # zoneinfo.ZoneInfo names its IANA zone here
    offset = moment.strftime("%z")
    utc = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    return f"{key}, {utc}" if key else utc


def system_prompt(speaker: str, reference_time: datetime) -> str:
    """The system prompt for one message.

    Args:
        speaker: the name "I" refers to ("User", "Caroline").
        reference_time: when the message was said, timezone-aware.

    Returns:
        The prompt text, with the categories, the speaker and the reference time filled in.
    """
    categories = "\n".join(
        f'- {category.value}: e.g. "{example.format(speaker=speaker)}"'
        for category, example in CATEGORY_EXAMPLES.items()
    )
    return _SYSTEM.format(
        speaker=speaker,
        reference=reference_time.strftime("%A %Y-%m-%d %H:%M"),
        zone=_zone_name(reference_time),
        categories=categories,
    )


def _fill(value: Any, speaker: str) -> Any:
    if isinstance(value, str):
        return value.replace("{speaker}", speaker)
    if isinstance(value, list):
        return [_fill(item, speaker) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, speaker) for key, item in value.items()}
    return value


def chat_messages(message: str, speaker: str, reference_time: datetime) -> list[dict[str, str]]:
    """The whole conversation sent to `/api/chat`: system prompt, few-shot turns, then `message`.

    Args:
        message: what `speaker` said, sent unchanged as the last user turn.
        speaker: the name "I" refers to.
        reference_time: when the message was said, timezone-aware.

    Returns:
        Chat messages as `{"role": ..., "content": ...}` dicts, in order.
    """
    messages = [{"role": "system", "content": system_prompt(speaker, reference_time)}]
    for said, memories in _FEW_SHOT:
        messages.append({"role": "user", "content": said})
        reply = {"memories": _fill(memories, speaker)}
        messages.append({"role": "assistant", "content": json.dumps(reply, ensure_ascii=False)})
    messages.append({"role": "user", "content": message})
    return messages
