"""Extraction quality on a labelled file, measured through the running server.

Starts `harmonia-mcp` as a child process, talks to it over stdio with the official `mcp` client, and
calls `store_memory` once per line of the file (with the line's `occurred_at` and the file's
`timezone`, each line under its own user so lines cannot interfere). Then scores what was stored,
as `../shared/bench/extraction/README.md` says:

- fact recall: expected memories matched by a stored memory whose content contains every
  `must_contain` item (case-insensitive; an inner list means any one of them);
- category accuracy: of the matched, the share whose category is acceptable (when several stored
  memories match one expected memory, one with an acceptable category counts);
- temporal accuracy: of the matched that carry `event_time` / `event_date`, the share that agree
  (`event_time` within a minute; `event_date` on the first ten characters);
- clean: lines with `expected: []` that stored nothing;
- third person: no stored content keeps a first-person word (I, I'm, me, my, mine, myself).

With a model (`--extractor ollama|openai|auto`) the server runs extraction in the background by default
(`--extraction async`, HARMONIA_EXTRACTION): each `store_memory` answers with the rules' memories at once,
the benchmark times those calls (p50/p95), waits for the queue to drain, and scores each user's final
memories (`list_memories`), reporting the time until the model's memories landed and the failed jobs.
With `--extraction sync` the model runs inside each call, as before, and the answer is scored.

Usage:
    .venv/bin/python benchmarks/extraction_eval.py [--file PATH] [--extractor rules|auto|ollama|openai]
        [--extraction async|sync] [--ollama-host URL] [--llm-base-url URL] [--model NAME]
        [--timeout SECONDS] [--verbose]

Prints the figures, the targets of issue 3 and each miss; exits 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from harmonia_mcp.child import server_parameters

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT.parent / "shared" / "bench" / "extraction" / "dev.jsonl"
TARGETS = {"fact recall": 0.9, "category accuracy": 0.8, "temporal accuracy": 0.9, "clean": 1.0, "third person": 1.0}


def _first_person(content: str) -> bool:
    # "I" only as a capital (a lowercase "i" inside "e.g. i.e." is not a pronoun in stored content).
    return bool(re.search(r"\bI\b", content)) or bool(
        re.search(r"\b(?:i'm|me|my|mine|myself)\b", content, re.IGNORECASE)
    )


@dataclass
class Score:
    expected: int = 0
    matched: int = 0
    category_ok: int = 0
    timed: int = 0
    time_ok: int = 0
    empty_cases: int = 0
    clean: int = 0
    contents: int = 0
    first_person: int = 0
    misses: list[str] = field(default_factory=list[str])
    extractors: Counter[str] = field(default_factory=Counter[str])
    warnings: Counter[str] = field(default_factory=Counter[str])


def _contains(content: str, item: str | list[str]) -> bool:
    low = content.lower()
    if isinstance(item, list):
        return any(choice.lower() in low for choice in item)
    return item.lower() in low


def _time_agrees(stored: str | None, expected: dict[str, Any]) -> bool:
    if stored is None:
        return False
    if "event_time" in expected:
        if len(stored) == 10:  # date-only: no clock time to compare
            return False
        delta = datetime.fromisoformat(stored) - datetime.fromisoformat(expected["event_time"])
        return abs(delta.total_seconds()) <= 60
    return stored[:10] == str(expected["event_date"])


def score_case(case: dict[str, Any], stored: list[dict[str, Any]], score: Score) -> None:
    """Add one line's outcome to `score` (see the module docstring for the rules)."""
    for memory in stored:
        score.contents += 1
        score.extractors[memory["extractor"]] += 1
        if _first_person(memory["content"]):
            score.first_person += 1
            score.misses.append(f"{case['id']}: first person left in {memory['content']!r}")
    if not case["expected"]:
        score.empty_cases += 1
        if stored:
            score.misses.append(f"{case['id']}: stored {[m['content'] for m in stored]} from small talk")
        else:
            score.clean += 1
        return
    for expected in case["expected"]:
        score.expected += 1
        matches = [m for m in stored if all(_contains(m["content"], item) for item in expected["must_contain"])]
        if not matches:
            score.misses.append(
                f"{case['id']}: no memory contains {expected['must_contain']} in {[m['content'] for m in stored]}"
            )
            continue
        score.matched += 1
        allowed = expected["category"] if isinstance(expected["category"], list) else [expected["category"]]
        good = [m for m in matches if m["category"] in allowed]
        if good:
            score.category_ok += 1
        else:
            score.misses.append(f"{case['id']}: category {matches[0]['category']} not in {allowed}")
        if "event_time" in expected or "event_date" in expected:
            score.timed += 1
            candidates = good or matches
            if any(_time_agrees(m["event_time"], expected) for m in candidates):
                score.time_ok += 1
            else:
                wanted = expected.get("event_time") or expected.get("event_date")
                score.misses.append(f"{case['id']}: event_time {candidates[0]['event_time']} is not {wanted}")


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))] if ordered else 0.0


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 1.0


async def run(arguments: argparse.Namespace) -> int:
    cases = [json.loads(line) for line in Path(arguments.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    zone = cases[0]["timezone"]
    score = Score()
    with tempfile.TemporaryDirectory(prefix="harmonia-eval-") as folder:
        env = {
            "HARMONIA_EXTRACTOR": arguments.extractor,
            "HARMONIA_TIMEZONE": zone,
            "HARMONIA_EXTRACTION": arguments.extraction,
        }
        if arguments.ollama_host:
            env["OLLAMA_HOST"] = arguments.ollama_host
        if arguments.llm_base_url:
            env["HARMONIA_LLM_BASE_URL"] = arguments.llm_base_url
        if arguments.model:
            env["HARMONIA_LLM_MODEL" if arguments.extractor == "openai" else "HARMONIA_OLLAMA_MODEL"] = arguments.model
        if arguments.timeout:
            env["HARMONIA_OLLAMA_TIMEOUT_SECONDS"] = str(arguments.timeout)
        started = time.perf_counter()
        call_ms: list[float] = []
        answers: list[list[dict[str, Any]]] = []
        drained = 0.0
        queue: dict[str, Any] = {}
        async with Client(server_parameters(Path(folder) / "eval.db", env)) as client:
            ready = time.perf_counter()
            for index, case in enumerate(cases):
                called = time.perf_counter()
                result = await client.call_tool(
                    "store_memory",
                    {
                        "message": case["message"],
                        "user_id": f"eval-{index}",
                        "occurred_at": case["occurred_at"],
                        "timezone": case["timezone"],
                    },
                )
                call_ms.append((time.perf_counter() - called) * 1000)
                if result.is_error or result.structured_content is None:
                    print(f"{case['id']}: tool error {result.content}", file=sys.stderr)
                    return 2
                answers.append(result.structured_content["memories"])
                for warning in result.structured_content["warnings"]:
                    for prefix in (
                        "The Ollama extractor was not used: ",
                        "The OpenAI-compatible extractor was not used: ",
                    ):
                        if warning.startswith(prefix):
                            score.warnings[warning.removeprefix(prefix).split(". The ")[0]] += 1
            finished = time.perf_counter()
            if arguments.extraction == "async" and arguments.extractor != "rules":
                while True:  # the queue drains; the server's own timeout bounds each job
                    queue = (await client.call_tool("extraction_status", {})).structured_content or {}
                    if not queue.get("pending", 0) + queue.get("running", 0):
                        break
                    await anyio.sleep(0.5)
                drained = time.perf_counter()
                for index in range(len(cases)):
                    listed = await client.call_tool("list_memories", {"user_id": f"eval-{index}", "limit": 500})
                    answers[index] = (listed.structured_content or {}).get("memories", [])
            for case, stored in zip(cases, answers, strict=True):
                if arguments.verbose:
                    print(f"{case['id']}: {case['message']}")
                    for memory in stored:
                        print(f"      [{memory['category']}] {memory['content']}  @ {memory['event_time']}")
                score_case(case, stored, score)

    figures = {
        "fact recall": _ratio(score.matched, score.expected),
        "category accuracy": _ratio(score.category_ok, score.matched),
        "temporal accuracy": _ratio(score.time_ok, score.timed),
        "clean": _ratio(score.clean, score.empty_cases),
        "third person": _ratio(score.contents - score.first_person, score.contents),
    }
    counts = {
        "fact recall": f"{score.matched}/{score.expected}",
        "category accuracy": f"{score.category_ok}/{score.matched}",
        "temporal accuracy": f"{score.time_ok}/{score.timed}",
        "clean": f"{score.clean}/{score.empty_cases} small-talk messages stored nothing",
        "third person": f"{score.contents - score.first_person}/{score.contents} contents",
    }
    print(f"file: {arguments.file} ({len(cases)} messages, time zone {zone})")
    print(f"extractor setting: {arguments.extractor}; memories by extractor: {dict(score.extractors)}")
    if score.warnings:
        print(f"model not used: {dict(score.warnings)}")
    print(
        f"server start {ready - started:.2f} s; {len(cases)} store_memory calls in {finished - ready:.2f} s "
        f"({(finished - ready) / len(cases) * 1000:.1f} ms each; p50 {_percentile(call_ms, 0.5):.1f} ms, "
        f"p95 {_percentile(call_ms, 0.95):.1f} ms, max {max(call_ms):.1f} ms)"
    )
    if queue:
        print(
            f"background queue ({arguments.extraction}): drained {drained - finished:.1f} s after the last call; "
            f"{queue['done']} done, {queue['failed']} failed; store_memory to landing p50 "
            f"{queue['latency_p50_seconds']} s, p95 {queue['latency_p95_seconds']} s; model {queue['model_state']}"
            + (f"; newest error: {queue['last_error']}" if queue.get("last_error") else "")
        )
    met = True
    for name, value in figures.items():
        ok = value >= TARGETS[name]
        met &= ok
        print(f"{name:18} {value:6.3f}  ({counts[name]})  target >= {TARGETS[name]:.1f}  {'ok' if ok else 'MISSED'}")
    for miss in score.misses:
        print(f"  miss: {miss}")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--file", default=str(DEFAULT_FILE), help="the labelled JSONL file")
    parser.add_argument("--extractor", choices=["rules", "auto", "ollama", "openai"], default="rules")
    parser.add_argument(
        "--extraction", choices=["async", "sync"], default="async", help="HARMONIA_EXTRACTION (default async)"
    )
    parser.add_argument("--ollama-host", help="OLLAMA_HOST for the server (default: its own default)")
    parser.add_argument("--llm-base-url", help="HARMONIA_LLM_BASE_URL, e.g. http://127.0.0.1:8080/v1 (openai)")
    parser.add_argument("--model", help="HARMONIA_OLLAMA_MODEL (or HARMONIA_LLM_MODEL with --extractor openai)")
    parser.add_argument("--timeout", type=float, help="HARMONIA_OLLAMA_TIMEOUT_SECONDS for each model call")
    parser.add_argument("--verbose", action="store_true", help="print every stored memory")
    return anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
