"""How long `store_memory` takes as a tool call while the background queue is busy with a real model (issue 13).

Starts `harmonia-mcp` as a child process (stdio, the official client) with a model configured and
`HARMONIA_EXTRACTION=async` (or `sync`), sends `--calls` messages one after another (the lines of the
labelled files, cycled, each under its own user), and prints the p50/p95/max of the call's wall time,
first call included and excluded (the first one pays the server's warm-up). The model keeps working
through the queue meanwhile, on the same machine, so the figures include that contention.

Usage:
    .venv/bin/python benchmarks/store_latency.py --ollama-host URL --model NAME [--calls 100]
        [--extraction async|sync] [--file PATH ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

from harmonia_mcp.child import server_parameters

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--ollama-host", required=True)
    parser.add_argument("--model", required=True)
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
    return anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
