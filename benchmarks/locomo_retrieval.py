"""Retrieval quality on LoCoMo (dev split): does `search_memories` return the turns that answer a question?

Starts `harmonia-mcp` as a child process over stdio (the official mcp client), stores every turn of each
conversation of `../shared/bench/locomo/turns.jsonl` with `store_memories` (user_id = the conversation id,
speaker = the turn's speaker, occurred_at = the session date, metadata = {"dia_id": ...}), then asks every
question of `questions.jsonl` with `search_memories` (limit=10, include_metadata=true) and maps the hits
back to dia_ids in rank order, keeping the first occurrence of each. A turn whose memory was skipped as a
duplicate of an existing one counts through that memory. Prints recall@5, recall@10, hit@10 and MRR@10,
overall and per category, next to plain FTS5 BM25 over the raw turns computed here as the data's README
describes it (each turn indexed as "speaker: text", the OR of the question's lower-cased word tokens with
stop words removed, each double-quoted, ranked by bm25(); standard library sqlite3 only).

Each question is asked once per search mode of `--modes` (keyword, semantic, hybrid; the server runs the
embedded model, which loads after start-up: the searches wait until the server answers in hybrid mode). The
last table puts recall@5 / recall@10 / MRR@10 of plain BM25 and of every mode side by side, from the one run.

Metrics (as in the README): recall@k = share of a question's evidence turns in the top k, averaged over
questions; hit@10 = at least one evidence turn in the top 10; MRR@10 = 1/rank of the first evidence turn
within the top 10, else 0.

    .venv/bin/python benchmarks/locomo_retrieval.py [--data DIR] [--conversations N]
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from harmonia_mcp.child import call_tool, server_parameters

DATA = Path(__file__).resolve().parents[2] / "shared" / "bench" / "locomo"
CATEGORIES = ("single-hop", "multi-hop", "temporal", "open-domain")
# The baseline's stop words: the same English list the server uses, so the two differ in what is indexed
# and how it is ranked, not in which question words are searched.
BASELINE_TOKENIZER = "porter unicode61"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _scores(ranked: Sequence[str], evidence: Iterable[str]) -> tuple[float, float, float, float]:
    wanted = set(evidence)
    top5, top10 = set(ranked[:5]), set(ranked[:10])
    first = next((1.0 / (rank + 1) for rank, dia_id in enumerate(ranked[:10]) if dia_id in wanted), 0.0)
    return len(wanted & top5) / len(wanted), len(wanted & top10) / len(wanted), float(bool(wanted & top10)), first


def _baseline(turns: list[dict[str, Any]], questions: list[dict[str, Any]]) -> dict[str, list[tuple[float, ...]]]:
    from harmonia_mcp.search import STOP_WORDS

    db = sqlite3.connect(":memory:")
    db.execute(
        f"CREATE VIRTUAL TABLE t USING fts5(body, conv UNINDEXED, dia UNINDEXED, tokenize='{BASELINE_TOKENIZER}')"
    )
    db.executemany(
        "INSERT INTO t VALUES (?, ?, ?)", [(f"{t['speaker']}: {t['text']}", t["conv_id"], t["dia_id"]) for t in turns]
    )
    results: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for question in questions:
        words = [word for word in re.findall(r"\w+", question["question"].lower()) if word not in STOP_WORDS]
        expression = " OR ".join(f'"{word}"' for word in dict.fromkeys(words))
        ranked = (
            [
                row[0]
                for row in db.execute(
                    "SELECT dia FROM t WHERE t MATCH ? AND conv = ? ORDER BY bm25(t) LIMIT 10",
                    (expression, question["conv_id"]),
                )
            ]
            if expression
            else []
        )
        score = _scores(ranked, question["evidence"])
        results["overall"].append(score)
        results[question["category"]].append(score)
    return results


BATCH = 500  # turns per store_memories call (the tool takes up to 1,000)


async def store_turns(client: Client, turns: list[dict[str, Any]], stats: dict[str, float]) -> dict[str, list[str]]:
    """Store every turn with `store_memories` (one call per up to `BATCH` turns of a conversation, in order,
    the same as one `store_memory` per turn); return memory_id -> the dia_ids it stands for (its own turn,
    then turns whose memory was skipped as its duplicate). Adds counts and "store seconds" to `stats`."""
    turns_of: dict[str, list[str]] = defaultdict(list)
    started = time.perf_counter()
    chunks: list[list[dict[str, Any]]] = []
    for turn in turns:
        if not chunks or chunks[-1][0]["conv_id"] != turn["conv_id"] or len(chunks[-1]) >= BATCH:
            chunks.append([])
        chunks[-1].append(turn)
    for chunk in chunks:
        items = [
            {
                "message": turn["text"],
                "speaker": turn["speaker"],
                "occurred_at": turn["session_date"],
                "metadata": {"dia_id": turn["dia_id"]},
            }
            for turn in chunk
        ]
        batch = await call_tool(client, "store_memories", {"items": items, "user_id": chunk[0]["conv_id"]})
        for turn, stored in zip(chunk, batch["items"], strict=True):
            stats["memories created"] += sum(m["action"] == "created" for m in stored["memories"])
            stats["memories skipped as duplicates"] += sum(m["action"] == "skipped" for m in stored["memories"])
            stats["turns with no memory"] += not stored["memories"]
            for memory in stored["memories"]:
                if turn["dia_id"] not in turns_of[memory["memory_id"]]:
                    turns_of[memory["memory_id"]].append(turn["dia_id"])
    stats["store seconds"] = time.perf_counter() - started
    return turns_of


async def _harmonia(
    turns: list[dict[str, Any]], questions: list[dict[str, Any]], db_path: Path, modes: Sequence[str]
) -> tuple[dict[str, dict[str, list[tuple[float, ...]]]], dict[str, float]]:
    stats: dict[str, float] = defaultdict(float)
    by_mode: dict[str, dict[str, list[tuple[float, ...]]]] = {mode: defaultdict(list) for mode in modes}
    async with Client(server_parameters(db_path)) as client:
        turns_of = await store_turns(client, turns, stats)
        if any(mode != "keyword" for mode in modes):
            # The model loads after start-up; memories stored before that are embedded by the background worker.
            probe: dict[str, Any] = {}
            with anyio.fail_after(120):
                while probe.get("mode") != "hybrid":
                    probe = await call_tool(
                        client, "search_memories", {"query": "probe", "user_id": turns[0]["conv_id"]}
                    )
                    await anyio.sleep(0.5)
        for mode in modes:
            started = time.perf_counter()
            await _ask(client, questions, mode, turns_of, by_mode[mode])
            stats[f"{mode} search seconds"] = time.perf_counter() - started
    return by_mode, stats


async def _ask(
    client: Client,
    questions: list[dict[str, Any]],
    mode: str,
    turns_of: dict[str, list[str]],
    results: dict[str, list[tuple[float, ...]]],
) -> None:
    for question in questions:
        arguments = {"query": question["question"], "user_id": question["conv_id"], "limit": 10}
        found = await call_tool(client, "search_memories", {**arguments, "include_metadata": True, "mode": mode})
        ranked: list[str] = []
        for hit in found["results"]:
            for dia_id in [hit["metadata"].get("dia_id"), *turns_of.get(hit["memory_id"], [])]:
                if dia_id and dia_id not in ranked:
                    ranked.append(dia_id)
        score = _scores(ranked, question["evidence"])
        results["overall"].append(score)
        results[question["category"]].append(score)


def _mean(rows: list[tuple[float, ...]], index: int) -> float:
    return sum(row[index] for row in rows) / len(rows) if rows else 0.0


def _print(ours: dict[str, list[tuple[float, ...]]], base: dict[str, list[tuple[float, ...]]]) -> list[str]:
    lines = [
        "| group | questions | recall@5 | recall@10 | hit@10 | MRR@10 "
        "| plain BM25 recall@5 | recall@10 | hit@10 | MRR@10 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    worse: list[str] = []
    for group in ("overall", *CATEGORIES):
        if group not in ours:
            continue
        mine = [_mean(ours[group], i) for i in range(4)]
        theirs = [_mean(base[group], i) for i in range(4)]
        lines.append(
            f"| {group} | {len(ours[group])} | "
            + " | ".join(f"{value:.3f}" for value in mine)
            + " | "
            + " | ".join(f"{value:.3f}" for value in theirs)
            + " |"
        )
        if mine[1] < theirs[1]:
            worse.append(group)
    print("\n".join(lines))
    return worse


def _print_side_by_side(by_mode: dict[str, dict[str, list[tuple[float, ...]]]], base: dict[str, Any]) -> None:
    """One table: recall@5 / recall@10 / MRR@10 per group for plain BM25 and each mode, from this one run."""
    columns = {"plain BM25": base, **{f"{mode}": results for mode, results in by_mode.items()}}
    print("\nrecall@5 / recall@10 / MRR@10, one run:\n")
    print("| group | questions | " + " | ".join(columns) + " |")
    print("| --- | ---: |" + " --- |" * len(columns))
    for group in ("overall", *CATEGORIES):
        if group not in base:
            continue
        cells = [" / ".join(f"{_mean(results[group], i):.3f}" for i in (0, 1, 3)) for results in columns.values()]
        print(f"| {group} | {len(base[group])} | " + " | ".join(cells) + " |")


def load_dev(data: Path, conversations: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The turns and questions of the first `conversations` conversations (all when None), and a summary line."""
    turns = _jsonl(data / "turns.jsonl")
    questions = _jsonl(data / "questions.jsonl")
    kept = list(dict.fromkeys(turn["conv_id"] for turn in turns))[:conversations]
    turns = [turn for turn in turns if turn["conv_id"] in kept]
    questions = [question for question in questions if question["conv_id"] in kept]
    print(f"LoCoMo dev: {len(kept)} conversations, {len(turns)} turns, {len(questions)} questions")
    return turns, questions


async def _main(arguments: argparse.Namespace) -> int:
    turns, questions = load_dev(arguments.data, arguments.conversations)
    base = _baseline(turns, questions)
    with tempfile.TemporaryDirectory(prefix="harmonia-locomo-") as folder:
        by_mode, stats = await _harmonia(turns, questions, Path(folder) / "locomo.db", arguments.modes)
    print(
        ", ".join(
            f"{name}: {value:.0f}" if "seconds" not in name else f"{name}: {value:.1f}" for name, value in stats.items()
        )
    )
    for mode, ours in by_mode.items():
        print(f"\nharmonia-mcp search_memories mode={mode} (rules extractor) vs plain FTS5 BM25 over raw turns:\n")
        worse = _print(ours, base)
        target = _mean(ours["overall"], 1)
        print(f"\nrecall@10 {target:.3f} (target >= 0.66): {'met' if target >= 0.66 else 'NOT met'}")
        print("categories below plain BM25 on recall@10: " + (", ".join(worse) if worse else "none"))
        if mode != "keyword" and "keyword" in by_mode:
            below = [
                group
                for group in ("overall", *CATEGORIES)
                if group in ours and _mean(ours[group], 1) < _mean(by_mode["keyword"][group], 1)
            ]
            print(f"categories below keyword mode on recall@10: {', '.join(below) if below else 'none'}")
    _print_side_by_side(by_mode, base)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help=f"the LoCoMo folder (default: {DATA})")
    parser.add_argument("--conversations", type=int, default=None, help="only the first N conversations")
    parser.add_argument(
        "--modes",
        type=lambda text: text.split(","),
        default=["keyword", "semantic", "hybrid"],
        help="search modes to measure, comma-separated (default: keyword,semantic,hybrid)",
    )
    return anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
