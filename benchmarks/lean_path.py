"""The lean MCP path (issue 14 item 2): keyword search over stdio against the bare-SDK floor, in one run.

Builds (once, at `--db` when the file is missing) one user "big" with `--memories` synthetic memories from
`benchmarks/scale.py`, imported with `harmonia-mcp import`. Then starts, side by side, `harmonia-mcp` on it
(`HARMONIA_EMBEDDER=none`: keyword search, so the figure is ours, not the embedding model's) and
`benchmarks/floor_server.py` (a trivial `MCPServer` tool returning as many hits in the same shape), both with
the official stdio client, and calls `search_memories` on them alternately, `--queries` scale.py queries,
first page of 10, `--rounds` times. Prints p50/p95 of each and the ratio of the p50s per round, and the
in-process p50 (`MemoryService.search_memories`, same queries) so that the stdio cost can be told apart
from the search's own.

    .venv/bin/python benchmarks/lean_path.py --db /tmp/lean10k.db [--memories 10000 --queries 200 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from harmonia_mcp.child import server_parameters
from harmonia_mcp.config import Settings
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.server import make_limits
from harmonia_mcp.service import MemoryService
from harmonia_mcp.store import open_store

sys.path.insert(0, str(Path(__file__).parent))
from scale import _percentile, _queries, synthetic_export  # noqa: E402


def build(db: Path, user: str, memories: int) -> None:
    """Import `memories` synthetic memories of `user` into `db` with the console script (skipped if `db` exists)."""
    if db.exists():
        return
    with tempfile.TemporaryDirectory() as folder:
        export = Path(folder) / "export.json"
        export.write_text(json.dumps(synthetic_export(user, memories, 0)), encoding="utf-8")
        script = Path(sys.executable).parent / "harmonia-mcp"
        subprocess.run([str(script), "import", str(export), "--db", str(db)], check=True, capture_output=True)


def floor_parameters() -> StdioServerParameters:
    """How to start `benchmarks/floor_server.py` with this Python."""
    environment = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return StdioServerParameters(
        command=sys.executable, args=[str(Path(__file__).parent / "floor_server.py")], env=environment
    )


async def _in_process(db: Path, queries: list[str]) -> float:
    settings = Settings(db_path=str(db), embedder="none")
    async with open_store(str(db)) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        await service.search_memories(queries[0], user_id="big")
        times = []
        for query in queries:
            started = time.perf_counter()
            await service.search_memories(query, user_id="big")
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def _run(arguments: argparse.Namespace) -> None:
    queries = _queries(arguments.queries, 7)
    env = {"HARMONIA_EMBEDDER": "none"}
    async with Client(server_parameters(arguments.db, env)) as ours, Client(floor_parameters()) as floor:
        for client in (ours, floor):  # warm both (page cache, first-call imports)
            for query in queries[:20]:
                await client.call_tool("search_memories", {"query": query, "user_id": "big"})
        for round_number in range(1, arguments.rounds + 1):
            times: dict[str, list[float]] = {"harmonia": [], "floor": []}
            for query in queries:
                for name, client in (("harmonia", ours), ("floor", floor)):
                    started = time.perf_counter()
                    result = await client.call_tool("search_memories", {"query": query, "user_id": "big"})
                    times[name].append((time.perf_counter() - started) * 1000)
                    assert not result.is_error and result.structured_content is not None, result.content
            p50 = {name: statistics.median(values) for name, values in times.items()}
            shown = ", ".join(
                f"{name} p50 {p50[name]:.2f} ms p95 {_percentile(values, 0.95):.2f} ms"
                for name, values in times.items()
            )
            print(f"round {round_number}: {shown}, ratio {p50['harmonia'] / p50['floor']:.2f}")
    print(f"in-process MemoryService.search_memories p50 {await _in_process(arguments.db, queries):.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="database file (built when missing)")
    parser.add_argument("--memories", type=int, default=10_000, help="memories of the user (default 10000)")
    parser.add_argument("--queries", type=int, default=200, help="queries per round (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    arguments = parser.parse_args()
    build(arguments.db, "big", arguments.memories)
    print(f"{arguments.memories} memories, {arguments.queries} queries, load {os.getloadavg()[0]:.1f}")
    anyio.run(_run, arguments)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
