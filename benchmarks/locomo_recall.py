"""Context recall at a token budget on LoCoMo (dev split): are a question's evidence turns inside `recall`'s block?

Stores every turn as `benchmarks/locomo_retrieval.py` does (the same `store_turns`: harmonia-mcp as a child
process over stdio, user_id = conversation, speaker, occurred_at = session date), then for every question
calls `recall(topic=question, budget=B)` and, for comparison, `search_memories(question, limit=10)`. A
memory stands for its own turn and the turns that were skipped as its duplicates.

Reported per category and overall:

- context recall@B: the share of a question's evidence turns whose memory is in the block, averaged;
- all-in@B: the share of questions whose evidence turns are all in the block (the issue's target, >= 0.8);
- search recall@10 and all-in@10, the same measures over the top 10 search hits;
- the mean block size in tokens (`context.estimate_tokens`), memories per block and how many are profile.

`--dump FILE` writes every block's text (one JSON string a line), e.g. to count it with a real tokenizer.

    .venv/bin/python benchmarks/locomo_recall.py [--budget 1500] [--no-ids] [--conversations N] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

import anyio
from locomo_retrieval import CATEGORIES, DATA, _mean, load_dev, store_turns
from mcp import Client

from harmonia_mcp.child import call_tool, server_parameters


def _covered(memory_ids: list[str], turns_of: dict[str, list[str]], evidence: list[str]) -> tuple[float, float]:
    inside = {dia_id for memory_id in memory_ids for dia_id in turns_of.get(memory_id, [])}
    wanted = set(evidence)
    share = len(wanted & inside) / len(wanted)
    return share, float(share == 1.0)


async def _run(
    turns: list[dict[str, Any]],
    questions: list[dict[str, Any]],
    budget: int,
    db_path: Path,
    dump: TextIO | None,
    include_ids: bool,
) -> tuple[dict[str, list[tuple[float, ...]]], dict[str, float]]:
    stats: dict[str, float] = defaultdict(float)
    rows: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    async with Client(server_parameters(db_path)) as client:
        turns_of = await store_turns(client, turns, stats)
        # The model loads after start-up, and memories stored before that are embedded in the background: wait
        # until search runs hybrid, so that every question is asked of the retriever the server ships.
        probe: dict[str, Any] = {}
        with anyio.fail_after(120):
            while probe.get("mode") != "hybrid":
                probe = await call_tool(client, "search_memories", {"query": "probe", "user_id": turns[0]["conv_id"]})
                await anyio.sleep(0.5)
        started = time.perf_counter()
        for question in questions:
            user = question["conv_id"]
            recall = {"topic": question["question"], "user_id": user, "budget": budget, "include_ids": include_ids}
            block = await call_tool(client, "recall", recall)
            found = await call_tool(
                client, "search_memories", {"query": question["question"], "user_id": user, "limit": 10}
            )
            in_block = _covered(block["memory_ids"], turns_of, question["evidence"])
            in_top10 = _covered([hit["memory_id"] for hit in found["results"]], turns_of, question["evidence"])
            row = (
                *in_block,
                *in_top10,
                float(block["tokens"]),
                float(len(block["memory_ids"])),
                float(len(block["profile_ids"])),
            )
            if dump is not None:
                dump.write(json.dumps(block["text"]) + "\n")
            if block["tokens"] > budget:
                stats["blocks over budget"] += 1
            rows["overall"].append(row)
            rows[question["category"]].append(row)
        stats["recall+search seconds"] = time.perf_counter() - started
    return rows, stats


async def _main(arguments: argparse.Namespace) -> int:
    turns, questions = load_dev(arguments.data, arguments.conversations)
    with tempfile.TemporaryDirectory(prefix="harmonia-locomo-recall-") as folder:
        dump = arguments.dump.open("w", encoding="utf-8") if arguments.dump else None
        try:
            db = Path(folder) / "locomo.db"
            rows, stats = await _run(turns, questions, arguments.budget, db, dump, not arguments.no_ids)
        finally:
            if dump is not None:
                dump.close()
    print(", ".join(f"{name}: {value:.1f}" for name, value in stats.items()))
    b = arguments.budget
    print(
        f"\n| group | questions | context recall@{b} | all-in@{b} | search recall@10 | all-in@10 "
        "| mean tokens | mean memories | of them profile |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for group in ("overall", *CATEGORIES):
        if group in rows:
            values = [_mean(rows[group], index) for index in range(7)]
            print(
                f"| {group} | {len(rows[group])} | {values[0]:.3f} | {values[1]:.3f} | {values[2]:.3f} | "
                f"{values[3]:.3f} | {values[4]:.0f} | {values[5]:.1f} | {values[6]:.1f} |"
            )
    target = _mean(rows["overall"], 1)
    verdict = "met" if target >= 0.8 else "NOT met"
    print(f"\nall evidence inside the {b}-token block: {target:.3f} (target >= 0.8): {verdict}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help=f"the LoCoMo folder (default: {DATA})")
    parser.add_argument("--budget", type=int, default=1500, help="recall's token budget (default 1500)")
    parser.add_argument("--no-ids", action="store_true", help="recall with include_ids=false")
    parser.add_argument("--dump", type=Path, help="write each block's text to this file, one JSON string a line")
    parser.add_argument("--conversations", type=int, default=None, help="only the first N conversations")
    return anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
