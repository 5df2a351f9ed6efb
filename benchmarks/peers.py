"""Peers (issue 14 item 5): harmonia-mcp against `@modelcontextprotocol/server-memory`, over stdio, in one run.

For each N in `--sizes` (default 100, 2,000 and 20,000), both servers get the same N generated memories
(`benchmarks/scale.py`'s generator): harmonia through `harmonia-mcp import` of the JSON export, server-memory
as its own JSONL file (one entity per memory: name = memory id, entityType = category, the memory's sentence
as its one observation), since both would otherwise spend most of the run on loading. Then, with the official
`mcp` stdio client and both servers running side by side:

- cold start: from starting the process to `initialize` answered, on the loaded store;
- search p50/p95: `--queries` one-word queries (a name, place, food or hobby: server-memory matches a query as
  one substring, so longer queries find nothing there), sent to each server alternately: harmonia's
  `search_memories` (first page of 10) and server-memory's `search_nodes` (every match, as it answers);
- store rate: `--writes` new messages, alternately: harmonia's `store_memory` (rules extractor, reconciliation
  against the N memories) and server-memory's `create_entities` with one entity per call.

Every figure is printed for both, with harmonia's ratio to server-memory. server-memory is installed with
`npm install` into a temporary folder (`--npm-cache` keeps it between runs); without npm the run stops with a
message. harmonia runs with `HARMONIA_EMBEDDER=none` unless `--embedder embedded` (keyword search; with the
embedded model the N memories would first have to be embedded).

    .venv/bin/python benchmarks/peers.py [--sizes 100,2000,20000 --queries 100 --writes 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from harmonia_mcp.child import server_parameters

sys.path.insert(0, str(Path(__file__).parent))
from scale import FIRST, FOODS, HOBBIES, PLACES, TEMPLATES, _fill, _percentile, synthetic_export  # noqa: E402

PACKAGE = "@modelcontextprotocol/server-memory"
USER = "peer"


def install_server_memory(folder: Path) -> Path | None:
    """`npm install` server-memory into `folder` (kept if already there); its entry script, or None without npm."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None
    script = folder / "node_modules" / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"
    if not script.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(folder), PACKAGE],
            check=True,
            capture_output=True,
        )
    return script


def _jsonl(export: dict[str, Any]) -> str:
    """server-memory's file format: one JSON entity per line (its `saveGraph`)."""
    return "\n".join(
        json.dumps(
            {
                "type": "entity",
                "name": memory["memory_id"],
                "entityType": memory["category"],
                "observations": [memory["content"]],
            }
        )
        for memory in export["memories"]
    )


def _queries(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(rng.choice((FIRST, PLACES, FOODS, HOBBIES))) for _ in range(count)]


async def _entered(parameters: StdioServerParameters, stack: AsyncExitStack) -> tuple[Client, float]:
    started = time.perf_counter()
    client = await stack.enter_async_context(Client(parameters))
    return client, time.perf_counter() - started


async def _alternate(calls: dict[str, list[Callable[[], Awaitable[Any]]]]) -> dict[str, list[float]]:
    """Run the i-th call of each side in turn; milliseconds per call, per side."""
    times: dict[str, list[float]] = {side: [] for side in calls}
    for index in range(len(next(iter(calls.values())))):
        for side, side_calls in calls.items():
            started = time.perf_counter()
            result = await side_calls[index]()
            times[side].append((time.perf_counter() - started) * 1000)
            assert not result.is_error, (side, result.content)
    return times


async def _measure(size: int, folder: Path, node_script: Path, arguments: argparse.Namespace) -> dict[str, Any]:
    export = synthetic_export(USER, size, seed=size)
    db = folder / f"harmonia-{size}.db"
    export_file = folder / f"export-{size}.json"
    export_file.write_text(json.dumps(export), encoding="utf-8")
    script = Path(sys.executable).parent / "harmonia-mcp"
    subprocess.run([str(script), "import", str(export_file), "--db", str(db)], check=True, capture_output=True)
    memory_file = folder / f"server-memory-{size}.jsonl"
    memory_file.write_text(_jsonl(export), encoding="utf-8")

    ours = server_parameters(db, {"HARMONIA_EMBEDDER": arguments.embedder})
    environment = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    theirs = StdioServerParameters(
        command="node", args=[str(node_script)], env=environment | {"MEMORY_FILE_PATH": str(memory_file)}
    )
    queries = _queries(arguments.queries, size)
    rng = random.Random(size + 1)
    messages = [_fill(rng, rng.choice(TEMPLATES)[0]) for _ in range(arguments.writes)]
    async with AsyncExitStack() as stack:
        harmonia, harmonia_start = await _entered(ours, stack)
        memory, memory_start = await _entered(theirs, stack)
        for query in queries[:10]:  # warm both: page cache, first-call imports, V8's JIT
            await harmonia.call_tool("search_memories", {"query": query, "user_id": USER})
            await memory.call_tool("search_nodes", {"query": query})
        searches = await _alternate(
            {
                "harmonia": [
                    lambda q=query: harmonia.call_tool("search_memories", {"query": q, "user_id": USER})
                    for query in queries
                ],
                "server-memory": [lambda q=query: memory.call_tool("search_nodes", {"query": q}) for query in queries],
            }
        )
        entity = {"entityType": "fact"}
        stores = await _alternate(
            {
                "harmonia": [
                    lambda m=message: harmonia.call_tool("store_memory", {"message": m, "user_id": USER})
                    for message in messages
                ],
                "server-memory": [
                    lambda m=message, n=index: memory.call_tool(
                        "create_entities", {"entities": [entity | {"name": f"new_{n}", "observations": [m]}]}
                    )
                    for index, message in enumerate(messages)
                ],
            }
        )
    return {
        "cold start s": {"harmonia": harmonia_start, "server-memory": memory_start},
        "search p50 ms": {side: statistics.median(times) for side, times in searches.items()},
        "search p95 ms": {side: _percentile(times, 0.95) for side, times in searches.items()},
        "store /s": {side: 1000 * len(times) / sum(times) for side, times in stores.items()},
    }


async def _run(arguments: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="harmonia-peers-") as name:
        folder = Path(name)
        node_script = install_server_memory(arguments.npm_cache or folder / "npm")
        if node_script is None:
            print("npm or node is not installed: server-memory cannot be run, so there is nothing to compare")
            return 0
        print(f"load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores; harmonia embedder {arguments.embedder}")
        print("| N | figure | harmonia | server-memory | ratio (harmonia / server-memory) |")
        print("| ---: | --- | ---: | ---: | ---: |")
        for size in arguments.sizes:
            figures = await _measure(size, folder, node_script, arguments)
            for figure, values in figures.items():
                ours, theirs = values["harmonia"], values["server-memory"]
                print(f"| {size:,} | {figure} | {ours:.3g} | {theirs:.3g} | {ours / theirs:.2f} |")
        print(f"(load {os.getloadavg()[0]:.1f} at the end)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(size) for size in text.split(",")],
        default=[100, 2000, 20000],
        help="memories per run, comma-separated (default 100,2000,20000)",
    )
    parser.add_argument("--queries", type=int, default=100, help="search calls per server and size (default 100)")
    parser.add_argument("--writes", type=int, default=100, help="store calls per server and size (default 100)")
    parser.add_argument("--embedder", choices=("none", "embedded"), default="none", help="harmonia's embedder")
    parser.add_argument("--npm-cache", type=Path, help="folder to install server-memory into and keep")
    return anyio.run(_run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
