"""Forgetting quality: when one memory of a message is deleted, how much of it still shows, and how much of the
other memories of that message is lost with it (`spans.source_span` + `spans.redact`, docs/forgetting.md).

Dev: every message of the extraction dev set (`../shared/bench/extraction/dev.jsonl`) and of the first
`--conversations` LoCoMo conversations (`../shared/bench/locomo/turns.jsonl`, speaker = the turn's speaker)
from which the rules extractor takes two or more memories. For each memory X of such a message, X's span is
cut out of the message and two things are counted, with a tokenizer of this file (lower-cased words of 3+
letters, a few function words dropped), not the one `spans.py` uses:

- leak: X has a word that no other memory of the message has, and one such word is still in the redacted
  message (a fact the user deleted would still be findable by it);
- collateral: another memory Y of the message has a word that X does not, and one such word was cut out (Y
  loses part of its provenance).

Held-out: `HELD_OUT` below, written after the change, messages with memories phrased as a model would phrase
them (not the rules extractor's output) and the span a careful reader would hide; scored by exact span, and
by leak / collateral as above.

    .venv/bin/python benchmarks/forget_eval.py [--conversations 3] [--data ../shared/bench]
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from harmonia_mcp.extract.rules import extract_memories
from harmonia_mcp.spans import redact, source_span

BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench"  # ../shared/bench beside the checkout
_WORD = re.compile(r"[a-z]{3,}")
# Function and filler words, and the LoCoMo speakers' names (the third-person rewrite puts the speaker's name
# into every memory, so a name left in "Hey Caroline, …" is not a leak of the deleted fact).
_FUNCTION = frozenset(
    "the and but for with that this was were are has have had user not you she her his him too also though just "
    "really caroline melanie jon gina john maria joanna nate tim audrey andrew".split()
)

# (message, [(memory as a model would write it, the span to hide)]) — written after the change, never tuned on.
HELD_OUT: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "I'm a pediatric nurse in Leeds, and my husband Tom teaches history.",
        [
            ("User works as a pediatric nurse in Leeds", "I'm a pediatric nurse in Leeds"),
            ("User's husband Tom is a history teacher", "my husband Tom teaches history"),
        ],
    ),
    (
        "We adopted a rescue greyhound named Pepper last spring; she hates thunderstorms.",
        [
            ("User adopted a rescue greyhound named Pepper", "We adopted a rescue greyhound named Pepper last spring"),
            ("Pepper is afraid of thunderstorms", "she hates thunderstorms"),
        ],
    ),
    (
        "My daughter Ines starts university in Coimbra in September. I'm learning Japanese for a trip to Osaka.",
        [
            (
                "User's daughter Ines starts university in Coimbra in September",
                "My daughter Ines starts university in Coimbra in September",
            ),
            ("User is learning Japanese", "I'm learning Japanese for a trip to Osaka"),
        ],
    ),
    (
        "I can't eat gluten, but I love baking sourdough for friends.",
        [
            ("User cannot eat gluten", "I can't eat gluten"),
            ("User enjoys baking sourdough bread for friends", "I love baking sourdough for friends"),
        ],
    ),
    (
        "Last week I ran my first marathon in Berlin — 4 hours 12 minutes! Next goal: Boston.",
        [
            (
                "User ran their first marathon in Berlin in 4 hours 12 minutes",
                "Last week I ran my first marathon in Berlin",
            ),
            ("User wants to run the Boston marathon next", "Next goal: Boston."),
        ],
    ),
    (
        "My brother Karim lives in Montreal and my best friend Ana moved to Chile.",
        [
            ("User's brother Karim lives in Montreal", "My brother Karim lives in Montreal"),
            ("User's best friend Ana moved to Chile", "my best friend Ana moved to Chile"),
        ],
    ),
    (
        "I drive a blue Tesla. My office is at 42 Harbour Street.",
        [
            ("User drives a blue Tesla", "I drive a blue Tesla"),
            ("User's office is at 42 Harbour Street", "My office is at 42 Harbour Street"),
        ],
    ),
    (
        "I was diagnosed with asthma as a kid, so I always carry an inhaler when hiking.",
        [
            ("User has had asthma since childhood", "I was diagnosed with asthma as a kid"),
            ("User carries an inhaler when hiking", "I always carry an inhaler when hiking"),
        ],
    ),
]


def _words(text: str) -> set[str]:
    return {word for word in _WORD.findall(text.lower()) if word not in _FUNCTION}


def _leak_and_collateral(message: str, memories: list[str], index: int, span: str | None) -> tuple[bool, bool]:
    redacted = redact(message, [span or message]) or ""
    mine = _words(memories[index])
    others = set().union(*(_words(text) for j, text in enumerate(memories) if j != index))
    left = _words(redacted)
    distinct = {word for word in mine - others if word in _words(message)}
    leak = bool(distinct & left)
    collateral = False
    for j, text in enumerate(memories):
        if j == index:
            continue
        theirs = {word for word in _words(text) - mine if word in _words(message)}
        if theirs - left:
            collateral = True
    return leak, collateral


def _dev_messages(bench: Path, conversations: int) -> list[tuple[str, str]]:
    messages = [(json.loads(line)["message"], "User") for line in (bench / "extraction" / "dev.jsonl").open()]
    seen: list[str] = []
    for line in (bench / "locomo" / "turns.jsonl").open():
        turn = json.loads(line)
        if turn["conv_id"] not in seen:
            seen.append(turn["conv_id"])
        if len(seen) > conversations:
            break
        messages.append((turn["text"], turn["speaker"]))
    return messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=3, help="LoCoMo conversations for dev (default 3)")
    parser.add_argument("--data", type=Path, default=BENCH, help="the shared bench folder (default ../shared/bench)")
    arguments = parser.parse_args()
    now = datetime(2024, 8, 19, 10, tzinfo=UTC)
    cases = leaks = collaterals = unfound = 0
    for message, speaker in _dev_messages(arguments.data, arguments.conversations):
        memories = extract_memories(message, speaker, now)
        if len(memories) < 2:
            continue
        texts = [memory.content for memory in memories]
        for index, memory in enumerate(memories):
            span = source_span(message, memory.content, memory.entities)
            unfound += span is None
            leak, collateral = _leak_and_collateral(message, texts, index, span)
            cases += 1
            leaks += leak
            collaterals += collateral
    print(f"dev (rules extractor, {cases} memories from messages with 2+):")
    print(
        f"  leak {leaks}/{cases} = {leaks / max(cases, 1):.1%}, collateral {collaterals}/{cases} = "
        f"{collaterals / max(cases, 1):.1%}, no span found {unfound}"
    )
    exact = held = held_leaks = held_collateral = 0
    for message, expected in HELD_OUT:
        texts = [memory for memory, _ in expected]
        for index, (memory, span_wanted) in enumerate(expected):
            span = source_span(message, memory)
            held += 1
            exact += span == span_wanted
            leak, collateral = _leak_and_collateral(message, texts, index, span)
            held_leaks += leak
            held_collateral += collateral
            if span != span_wanted:
                print(f"  held-out miss: {memory!r} -> {span!r} (wanted {span_wanted!r})")
    print(
        f"held-out ({held} memories, model-style wording): exact span {exact}/{held} = {exact / held:.1%}, "
        f"leak {held_leaks}/{held}, collateral {held_collateral}/{held}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
