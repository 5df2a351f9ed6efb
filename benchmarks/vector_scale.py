"""Scale of search by meaning: hybrid search p50/p95 at 10k and 100k memories, store rate, peak RSS.

Builds a database with the synthetic memories of `benchmarks/scale.py` (one user with `--big`, one with
`--medium`), loaded with `import_memories`. Embedding 110,000 memories with the real model would take about
five minutes of both cores (368 sentences/s, ../shared/bench/models.md), so the stored vectors are random unit
vectors written under the embedded model's name: the exact search costs the same whatever the values are. Every
query is embedded by the real model, inside the timings.

Prints: hybrid search p50/p95 in-process for both users (query embedding included) and over stdio for the big
one (`search_memories` through the official mcp client against `harmonia-mcp`), the first search's cost of
reading the user's vectors, `store_memory` rate over stdio with embedding, and the server's peak RSS (VmHWM).

    .venv/bin/python benchmarks/vector_scale.py [--big 100000 --medium 10000 --queries 200 --writes 200]

Timings are wall-clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import numpy as np
from mcp import Client
from scale import _children_rss_kib, _percentile, _queries, _timed, synthetic_export

from harmonia_mcp.child import server_parameters
from harmonia_mcp.embed import MINILM_DIMENSION, MINILM_MODEL_NAME, OnnxEmbedder
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.service import MemoryService, ServiceLimits
from harmonia_mcp.store import open_store
from harmonia_mcp.vectors import VectorIndex

LIMITS = ServiceLimits(default_user="default", max_message_bytes=32 * 1024, timezone=ZoneInfo("UTC"))


async def _random_vectors(db_path: Path) -> int:
    rng = np.random.default_rng(5)
    async with open_store(str(db_path)) as store:
        pending = await store.unembedded(MINILM_MODEL_NAME, MINILM_DIMENSION, limit=10**9)
        vectors = rng.standard_normal((len(pending), MINILM_DIMENSION)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [
            (rowid, content, vector.tobytes()) for (rowid, _, content, _), vector in zip(pending, vectors, strict=True)
        ]
        async with store.transaction() as db:
            await store.write_vectors(db, MINILM_MODEL_NAME, MINILM_DIMENSION, rows)
    return len(rows)


async def _main(arguments: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="harmonia-vector-scale-") as folder:
        db_path = Path(folder) / "vectors.db"
        async with open_store(str(db_path)) as store:
            service = MemoryService(store, RulesExtractor(), LIMITS)
            for seed, (user, count) in enumerate((("big", arguments.big), ("medium", arguments.medium))):
                await service.import_memories(json.dumps(synthetic_export(user, count, seed)))
        started = time.perf_counter()
        written = await _random_vectors(db_path)
        print(f"{written} memories, random unit vectors written in {time.perf_counter() - started:.1f} s")
        queries = _queries(arguments.queries, seed=99)
        figures: list[tuple[str, str]] = []
        async with open_store(str(db_path)) as store:
            index = VectorIndex(store, OnnxEmbedder())
            await index.load()
            service = MemoryService(store, RulesExtractor(), LIMITS, vectors=index)
            for user, count in (("medium", arguments.medium), ("big", arguments.big)):
                started = time.perf_counter()
                await service.search_memories(queries[0], user_id=user)
                first = (time.perf_counter() - started) * 1000
                times = await _timed([lambda q=q, u=user: service.search_memories(q, user_id=u) for q in queries])
                figures.append(
                    (
                        f"hybrid search p50 / p95, {count}-memory user, in-process (first search {first:.0f} ms)",
                        f"{statistics.median(times):.1f} ms / {_percentile(times, 0.95):.1f} ms",
                    )
                )
        async with Client(server_parameters(db_path)) as client:
            probe: dict[str, Any] = {}
            with anyio.fail_after(120):
                while probe.get("mode") != "hybrid":
                    result = await client.call_tool("search_memories", {"query": "probe", "user_id": "big"})
                    probe = result.structured_content or {}
                    await anyio.sleep(0.2)

            async def search(query: str) -> None:
                result = await client.call_tool("search_memories", {"query": query, "user_id": "big"})
                assert not result.is_error and (result.structured_content or {}).get("mode") == "hybrid"

            times = await _timed([lambda q=q: search(q) for q in queries])
            figures.append(
                (
                    f"hybrid search p50 / p95 over stdio, {arguments.big}-memory user",
                    f"{statistics.median(times):.1f} ms / {_percentile(times, 0.95):.1f} ms",
                )
            )
            started = time.perf_counter()
            for number in range(arguments.writes):
                message = f"I visited museum number {number} in Porto with my friend Ana"
                result = await client.call_tool("store_memory", {"message": message, "user_id": "writer"})
                assert not result.is_error, result.content
            rate = arguments.writes / (time.perf_counter() - started)
            figures.append(("store_memory over stdio, embedded before it answers", f"{rate:.0f} messages/s"))
            figures.append(
                (f"peak RSS of the server (VmHWM), {written} vectors", f"{_children_rss_kib() / 1024:.0f} MB")
            )
    print("| figure | measured |")
    print("| --- | --- |")
    for name, value in figures:
        print(f"| {name} | {value} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--medium", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--writes", type=int, default=200)
    return anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
