"""`recall` on hand-written held-out questions (benchmarks/data/recall_heldout*.json), at several budgets.

Starts harmonia-mcp as a child process over stdio, stores the user's messages (in order, so "I moved to
Leeds" supersedes "I live in Manchester"), then asks each question with `recall(topic=question, budget=B)`.
A question counts as answered when every `must_contain` word is in the block and no `absent` word is.
Prints, per budget, the share answered and the mean block tokens; then, for `search_memories` on each question,
where the first hit holding the answer is ranked (share first, top 3, top 10, MRR@10); and the profile (the
resource).

Each file is one user's life; `recall_heldout_2.json` (70 messages) is long enough that small budgets must
choose what goes in.

    .venv/bin/python benchmarks/recall_heldout.py [--budgets 300,800,1500] [--data FILE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from harmonia_mcp.child import call_tool, server_parameters

DATA = sorted((Path(__file__).resolve().parent / "data").glob("recall_heldout*.json"))


async def _main(budgets: list[int], files: list[Path]) -> int:
    for path in files:
        print(f"# {path.name}")
        await _one(json.loads(path.read_text(encoding="utf-8")), budgets)
    return 0


async def _one(case: dict[str, Any], budgets: list[int]) -> None:
    user = case["user_id"]
    with tempfile.TemporaryDirectory(prefix="harmonia-recall-heldout-") as folder:
        async with Client(server_parameters(Path(folder) / "heldout.db")) as client:
            for message in case["messages"]:
                await call_tool(
                    client, "store_memory", {"message": message, "user_id": user, "occurred_at": case["occurred_at"]}
                )
            probe: dict[str, Any] = {}
            with anyio.fail_after(120):  # ask the retriever the server ships: hybrid, once the model has loaded
                while probe.get("mode") != "hybrid":
                    probe = await call_tool(client, "search_memories", {"query": "probe", "user_id": user})
                    await anyio.sleep(0.5)
            print(f"{len(case['messages'])} messages, {len(case['questions'])} questions\n")
            print("| budget | answered | mean tokens | misses |")
            print("| ---: | ---: | ---: | --- |")
            for budget in budgets:
                answered, tokens, misses = 0, 0, []
                for question in case["questions"]:
                    block = await call_tool(
                        client, "recall", {"topic": question["question"], "user_id": user, "budget": budget}
                    )
                    text = block["text"]
                    tokens += block["tokens"]
                    ok = all(word in text for word in question["must_contain"]) and not any(
                        word in text for word in question.get("absent", [])
                    )
                    answered += ok
                    if not ok:
                        misses.append(question["must_contain"][0])
                count = len(case["questions"])
                print(f"| {budget} | {answered / count:.3f} | {tokens / count:.0f} | {', '.join(misses) or '-'} |")
            await _search_ranks(client, case)
            profile = await client.read_resource(f"memory://{user}/profile")
            print("\n" + getattr(profile.contents[0], "text", ""))


async def _search_ranks(client: Client, case: dict[str, Any]) -> None:
    """`search_memories` on each question (10 hits): where the first hit whose content holds the answer (a
    `must_contain` word, any case; a hit holding an `absent` word does not count) is ranked."""
    ranks: list[int | None] = []
    for question in case["questions"]:
        found = await call_tool(
            client, "search_memories", {"query": question["question"], "user_id": case["user_id"], "limit": 10}
        )
        wanted = [word.lower() for word in question["must_contain"]]
        stale = [word.lower() for word in question.get("absent", [])]
        contents = [hit["content"].lower() for hit in found["results"]]
        ranks.append(
            next(
                (
                    rank
                    for rank, content in enumerate(contents)
                    if any(word in content for word in wanted) and not any(word in content for word in stale)
                ),
                None,
            )
        )
    count = len(ranks)
    hits = [rank for rank in ranks if rank is not None]
    print(
        "\nsearch_memories on the questions: first hit holds the answer "
        f"{sum(rank == 0 for rank in hits) / count:.3f}, "
        f"in the top 3 {sum(rank < 3 for rank in hits) / count:.3f}, top 10 {len(hits) / count:.3f}, "
        f"MRR@10 {sum(1 / (rank + 1) for rank in hits) / count:.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="300,800,1500", help="comma-separated token budgets")
    parser.add_argument("--data", type=Path, nargs="+", default=DATA, help="held-out files (default: all)")
    arguments = parser.parse_args()
    return anyio.run(_main, [int(value) for value in arguments.budgets.split(",")], arguments.data)


if __name__ == "__main__":
    sys.exit(main())
