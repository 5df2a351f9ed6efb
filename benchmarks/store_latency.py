"""How long `store_memory` takes as a tool call while the background queue is busy with a real model (issue 13).

Starts `harmonia-mcp` as a child process (stdio, the official client) with a model configured and
`HARMONIA_EXTRACTION=async` (or `sync`), sends `--calls` messages one after another (the lines of the
labelled files, cycled, each under its own user), and prints the p50/p95/max of the call's wall time,
first call included and excluded (the first one pays the server's warm-up). The model keeps working
through the queue meanwhile, on the same machine, so the figures include that contention.

With `--throughput` (issue 14, the write path) it needs no model: with the rules extractor, once with
`HARMONIA_EMBEDDER=none` and once with the embedded model, it sends the same `--messages` synthetic
first-person messages (benchmarks/scale.py's generator) as one `store_memory` call each and as
`store_memories` calls of `--batch` items, each run under a fresh user of a fresh database, and prints
messages/s for both and their ratio; then the rate of `harmonia-mcp import` (the console script, start-up
included) and of `MemoryService.import_memories` in-process for `--import-count` memories.

Usage:
    .venv/bin/python benchmarks/store_latency.py --ollama-host URL --model NAME [--calls 100]
        [--extraction async|sync] [--file PATH ...]
    .venv/bin/python benchmarks/store_latency.py --throughput [--messages 1000 --batch 200 --import-count 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

from harmonia_mcp.child import call_tool, server_parameters
from harmonia_mcp.config import Settings
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.server import make_limits
from harmonia_mcp.service import MemoryService
from harmonia_mcp.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import TEMPLATES, _fill, synthetic_export  # noqa: E402  (a sibling script, not a package)

ROOT = Path(__file__).resolve().parents[1]


def _percentile(values: list[float], share: float) -> float:
    # Nearest-rank percentile.
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


async def run(arguments: argparse.Namespace) -> int:
    cases = [
        json.loads(line)
        for file in arguments.file
        for line in Path(file).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    env = {
        "HARMONIA_EXTRACTOR": "ollama",
        "HARMONIA_EXTRACTION": arguments.extraction,
        "OLLAMA_HOST": arguments.ollama_host,
        "HARMONIA_OLLAMA_MODEL": arguments.model,
        "HARMONIA_OLLAMA_TIMEOUT_SECONDS": "120",
    }
    times: list[float] = []
    pending = 0
    with tempfile.TemporaryDirectory(prefix="harmonia-latency-") as folder:
        async with Client(server_parameters(Path(folder) / "latency.db", env)) as client:
            for index in range(arguments.calls):
                case = cases[index % len(cases)]
                started = time.perf_counter()
                result = await client.call_tool(
                    "store_memory",
                    {"message": case["message"], "user_id": f"u{index}", "occurred_at": case["occurred_at"]},
                )
                times.append((time.perf_counter() - started) * 1000)
                if result.is_error or result.structured_content is None:
                    print(f"call {index}: tool error {result.content}", file=sys.stderr)
                    return 2
                pending += bool(result.structured_content.get("pending_extraction"))
            status = (await client.call_tool("extraction_status", {})).structured_content or {}
    rest = times[1:] or times
    print(f"{arguments.calls} store_memory calls, HARMONIA_EXTRACTION={arguments.extraction}, {pending} queued")
    p50, p95 = _percentile(times, 0.5), _percentile(times, 0.95)
    print(f"all:        p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(times):.1f} ms")
    print(
        f"after 1st:  p50 {_percentile(rest, 0.5):.1f} ms, p95 {_percentile(rest, 0.95):.1f} ms, max {max(rest):.1f} ms"
    )
    print(
        f"queue at the end: {status.get('pending')} pending, {status.get('running')} running, {status.get('done')} done"
    )
    return 0


async def _write_rates(messages: list[str], batch: int, embedder: str, folder: Path) -> tuple[float, float]:
    """messages/s of one store_memory call per message, then of store_memories in batches, over stdio."""
    env = {"HARMONIA_EMBEDDER": embedder}
    rates: list[float] = []
    for mode in ("single", "batch"):
        async with Client(server_parameters(folder / f"{embedder}-{mode}.db", env)) as client:
            await call_tool(client, "store_memory", {"message": "I have a warm-up cat.", "user_id": "warm"})
            started = time.perf_counter()
            if mode == "single":
                for message in messages:
                    await call_tool(client, "store_memory", {"message": message, "user_id": "writer"})
            else:
                for start in range(0, len(messages), batch):
                    items = [{"message": message} for message in messages[start : start + batch]]
                    await call_tool(client, "store_memories", {"items": items, "user_id": "writer"})
            rates.append(len(messages) / (time.perf_counter() - started))
    return rates[0], rates[1]


async def throughput(arguments: argparse.Namespace) -> int:
    rng = random.Random(7)
    messages = [_fill(rng, rng.choice(TEMPLATES)[0]) for _ in range(arguments.messages)]
    with tempfile.TemporaryDirectory(prefix="harmonia-writes-") as name:
        folder = Path(name)
        print(f"{len(messages)} messages; store_memories batches of {arguments.batch}; rules extractor, stdio")
        print("| embedder | store_memory msg/s | store_memories msg/s | ratio |")
        print("| --- | --- | --- | --- |")
        for embedder in ("none", "embedded"):
            single, batched = await _write_rates(messages, arguments.batch, embedder, folder)
            print(f"| {embedder} | {single:.0f} | {batched:.0f} | {batched / single:.1f}x |")
        export = synthetic_export("importer", arguments.import_count, 3)
        export_file = folder / "import.json"
        export_file.write_text(json.dumps(export), encoding="utf-8")
        script = Path(sys.executable).parent / "harmonia-mcp"
        started = time.perf_counter()
        subprocess.run(
            [str(script), "import", str(export_file), "--db", str(folder / "cli.db")], check=True, capture_output=True
        )
        cli = time.perf_counter() - started
        settings = Settings(db_path=str(folder / "inprocess.db"))
        async with open_store(settings.db_path) as store:
            service = MemoryService(store, RulesExtractor(), make_limits(settings))
            started = time.perf_counter()
            imported = (await service.import_memories(json.dumps(export))).imported
            inprocess = time.perf_counter() - started
        count = arguments.import_count
        print(f"import of {count} memories: harmonia-mcp import {count / cli:.0f}/s ({cli:.2f} s with start-up), ")
        print(f"  in-process import_memories {imported / inprocess:.0f}/s ({inprocess:.2f} s)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--throughput", action="store_true", help="write rates with the rules extractor (no model)")
    parser.add_argument("--messages", type=int, default=1000, help="messages per write run (--throughput)")
    parser.add_argument("--batch", type=int, default=200, help="items per store_memories call (--throughput)")
    parser.add_argument("--import-count", type=int, default=20000, help="memories imported (--throughput)")
    parser.add_argument("--ollama-host")
    parser.add_argument("--model")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--extraction", choices=["async", "sync"], default="async")
    parser.add_argument(
        "--file",
        nargs="+",
        default=[
            str(ROOT.parent / "shared" / "bench" / "extraction" / "dev.jsonl"),
            str(ROOT / "benchmarks" / "data" / "heldout.jsonl"),
        ],
    )
    arguments = parser.parse_args()
    if arguments.throughput:
        return anyio.run(throughput, arguments)
    if not arguments.ollama_host or not arguments.model:
        parser.error("--ollama-host and --model are required (or use --throughput)")
    return anyio.run(run, arguments)


if __name__ == "__main__":
    sys.exit(main())
