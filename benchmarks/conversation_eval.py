"""A realistic multi-session conversation with changes of mind, replayed through `store_memory` twice, then asked.

Starts `harmonia-mcp` as a child process (stdio, rules extractor, a fresh database in a temporary folder)
and replays `benchmarks/data/conversation_issue10.json` (4 sessions, 33 messages, written for issue 10)
under two users:

- `rules`: each message as `message`, with its session and `occurred_at`; the rules extractor reads it;
- `caller`: each message's `facts`, written the way a host model would write them (third person, the
  change of mind said as the new state, keywords), with the message as their source.

Then it asks each question through `search_memories` (limit 10) and scores, per user:

- top-1 / top-3: the share of questions whose first hit / one of the first three hits is a current
  fact (its content contains one of the question's `current` phrases, case-insensitive);
- stale first: questions where a stale fact (one of `stale`) ranks above the first current one (or is
  found when no current one is).

    .venv/bin/python benchmarks/conversation_eval.py [--verbose]

Targets (issue 10): caller top-3 >= 0.9 with 0 stale first; rules top-3 >= 0.8. Exit 0 when met.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from harmonia_mcp.child import call_tool, replay_conversation, server_parameters

DATA = Path(__file__).resolve().parent / "data" / "conversation_issue10.json"


@dataclass
class Score:
    """How one way of storing the conversation answered the questions."""

    top1: int = 0
    top3: int = 0
    stale_first: int = 0
    questions: int = 0
    stored: int = 0
    lines: list[str] = field(default_factory=list[str])


def _has(content: str, phrases: list[str]) -> bool:
    low = content.lower()
    return any(phrase.lower() in low for phrase in phrases)


async def _ask(client: Client, user: str, questions: list[dict[str, Any]], score: Score) -> None:
    for question in questions:
        found = await call_tool(client, "search_memories", {"user_id": user, "query": question["query"], "limit": 10})
        contents = [hit["content"] for hit in found["results"]]
        current = next((rank for rank, text in enumerate(contents) if _has(text, question["current"])), None)
        stale = next(
            (rank for rank, text in enumerate(contents) if question["stale"] and _has(text, question["stale"])), None
        )
        score.questions += 1
        score.top1 += current == 0
        score.top3 += current is not None and current < 3
        stale_first = stale is not None and (current is None or stale < current)
        score.stale_first += stale_first
        mark = "ok  " if current == 0 else ("top3" if current is not None and current < 3 else "MISS")
        note = "  STALE FIRST" if stale_first else ""
        score.lines.append(f"{mark} {question['query']!r}: {contents[:3]}{note}")


async def main(verbose: bool) -> int:
    conversation = json.loads(DATA.read_text(encoding="utf-8"))
    messages = sum(len(session["messages"]) for session in conversation["sessions"])
    scores = {"rules": Score(), "caller": Score()}
    with tempfile.TemporaryDirectory() as folder:
        async with Client(server_parameters(Path(folder) / "conversation.db")) as client:
            for user, score in scores.items():
                score.stored = await replay_conversation(
                    client, user, conversation["sessions"], as_facts=user == "caller", timezone=conversation["timezone"]
                )
                await _ask(client, user, conversation["questions"], score)
    print(
        f"{messages} messages in {len(conversation['sessions'])} sessions, {len(conversation['questions'])} questions"
    )
    print(f"{'stored as':<10} {'memories':>8} {'top-1':>6} {'top-3':>6} {'stale first':>11}")
    for user, score in scores.items():
        n = score.questions
        print(f"{user:<10} {score.stored:>8} {score.top1 / n:>6.3f} {score.top3 / n:>6.3f} {score.stale_first:>11}")
    for user, score in scores.items():
        misses = [line for line in score.lines if verbose or not line.startswith("ok")]
        if misses:
            print(f"\n{user}:")
            print("\n".join(f"  {line}" for line in misses))
    rules, caller = scores["rules"], scores["caller"]
    met = caller.top3 / caller.questions >= 0.9 and caller.stale_first == 0 and rules.top3 / rules.questions >= 0.8
    return 0 if met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--verbose", action="store_true", help="print every question, not only the misses")
    sys.exit(anyio.run(main, parser.parse_args().verbose))
