"""How well a model judges pairs of memories for LLM-assisted reconciliation (issue 13), against labels.

Sends each labelled (old, new) pair to `extract/judge.ModelJudge` over Ollama's API (or an OpenAI-compatible
server with `--llm-base-url`), whatever the rules say, and prints the model's relation next to the label,
the agreement, and how many calls failed (the rules' answer would then stand). `dev` pairs are the ones the
filter was designed on; `held-out` pairs were written after.

Usage:
    .venv/bin/python benchmarks/judge_eval.py --ollama-host URL --model NAME
    .venv/bin/python benchmarks/judge_eval.py --llm-base-url URL/v1 --model NAME
"""

from __future__ import annotations

import argparse
import sys
import time

import anyio

from harmonia_mcp.extract.judge import JsonModel, ModelJudge
from harmonia_mcp.extract.ollama import OllamaExtractor
from harmonia_mcp.extract.openai import OpenAIExtractor

PAIRS = [
    ("dev", "User quit the chess club", "User joined the chess club", "update"),
    ("dev", "Miso hates the vacuum cleaner", "The vacuum cleaner scares Miso", "duplicate"),
    ("dev", "User works at Google", "User works at Amazon", "update"),
    ("dev", "User is vegetarian since 2020", "User stopped eating meat in 2020", "duplicate"),
    ("dev", "User has a dog called Biggie", "User has a dog called Biggie", "duplicate"),
    ("held-out", "User takes the bus to the office", "User cycles to the office now", "update"),
    ("held-out", "User sold the old piano", "User bought a new piano", "unrelated"),
    ("held-out", "Biggie hates the vet visits", "The vet visits make Biggie anxious", "duplicate"),
    ("held-out", "User lives in Berlin", "User moved to Munich", "update"),
    ("held-out", "User likes jazz", "User likes rock music", "unrelated"),
    ("held-out", "User reads before bed", "User meditates every morning", "unrelated"),
    ("held-out", "User stopped drinking coffee", "User drinks coffee every morning", "update"),
    ("held-out", "User has a sister called Anna", "Anna is a doctor", "complement"),
]


async def run(arguments: argparse.Namespace) -> int:
    backend: JsonModel
    if arguments.llm_base_url:
        backend = OpenAIExtractor(arguments.llm_base_url, arguments.model, timeout_seconds=arguments.timeout)
    else:
        backend = OllamaExtractor(arguments.ollama_host, arguments.model, timeout_seconds=arguments.timeout)
    judge = ModelJudge(backend)
    agree: dict[str, list[bool]] = {"dev": [], "held-out": []}
    failed = 0
    started = time.perf_counter()
    for split, old, new, label in PAIRS:
        answer = await judge.judge(new, old)
        if answer is None:
            failed += 1
            print(f"{split:8} FAILED        want {label:10} | {old} -> {new}")
            continue
        agree[split].append(answer[0] == label)
        print(f"{split:8} {answer[0]:13} want {label:10} | {old} -> {new}  ({answer[1]})")
    elapsed = time.perf_counter() - started
    await backend.aclose()  # type: ignore[attr-defined]  # both backends have it
    for split, marks in agree.items():
        print(f"{split}: {sum(marks)}/{len(marks)} agree with the label")
    print(f"{failed} failed calls; {len(PAIRS)} judgments in {elapsed:.1f} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--ollama-host", default="http://127.0.0.1:11434")
    parser.add_argument("--llm-base-url")
    parser.add_argument("--model", required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    return anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
