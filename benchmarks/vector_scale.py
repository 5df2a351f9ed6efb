"""Scale of search by meaning: hybrid search p50/p95 at 10k and 100k memories, store rate, peak RSS.

Builds a database with the synthetic memories of `benchmarks/scale.py` (one user with `--big`, one with
`--medium`), loaded with `import_memories`. Embedding 110,000 memories with the real model would take about
five minutes of both cores (368 sentences/s, ../shared/bench/models.md), so the stored vectors are random unit
vectors written under the embedded model's name: the exact search costs the same whatever the values are. Every
query is embedded by the real model, inside the timings.

Prints: hybrid search p50/p95 in-process and over stdio (`search_memories` through the official mcp client
against `harmonia-mcp`) for both users (query embedding included), the vector side alone in-process (query
embedding of queries not seen before, and `VectorIndex.nearest` at the search's depth), the first search's cost
of reading the user's vectors, `store_memory` rate over stdio with embedding, and the server's peak RSS (VmHWM).

With `--overlap N`, it also embeds N real texts with the real model (the LoCoMo turns of `--data`, then
synthetic memories of `scale.py` up to N), and reports overlap@10 and overlap@100 of the two-stage search
(projection + exact re-score, `vectors.COARSE_FROM`) with exact float32 search, over the LoCoMo questions.

    .venv/bin/python benchmarks/vector_scale.py [--big 100000 --medium 10000 --queries 200 --writes 200]
    .venv/bin/python benchmarks/vector_scale.py --overlap 20000 --big 0 --medium 0

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
from harmonia_mcp.store import MemoryFilter, open_store
from harmonia_mcp.vectors import VectorIndex, embedding_text

DATA = Path(__file__).resolve().parents[2] / "shared" / "bench" / "locomo"

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


async def _overlap(arguments: argparse.Namespace) -> list[tuple[str, str]]:
    """overlap@10 and @100 of the two-stage search with exact search, on real vectors (module docstring)."""
    turns = [json.loads(line) for line in (arguments.data / "turns.jsonl").read_text().splitlines() if line]
    texts = [embedding_text(f"{turn['speaker']}: {turn['text']}", "other") for turn in turns][: arguments.overlap]
    extra = synthetic_export("overlap", max(0, arguments.overlap - len(texts)), seed=3)["memories"]
    texts += [embedding_text(memory["content"], memory["category"]) for memory in extra]
    questions = [json.loads(line)["question"] for line in (arguments.data / "questions.jsonl").read_text().splitlines()]
    embedder = OnnxEmbedder()
    figures: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="harmonia-vector-overlap-") as folder:
        db_path = Path(folder) / "overlap.db"
        async with open_store(str(db_path)) as store:
            service = MemoryService(store, RulesExtractor(), LIMITS)
            export = synthetic_export("real", len(texts), seed=4)
            for memory, text in zip(export["memories"], texts, strict=True):
                memory["content"] = text  # the stored vectors are of these texts; the content is not searched here
            await service.import_memories(json.dumps(export), user_id="real")
            pending = await store.unembedded(MINILM_MODEL_NAME, MINILM_DIMENSION, limit=10**9)
            started = time.perf_counter()
            vectors = np.concatenate([embedder.embed_sync(texts[s : s + 64]) for s in range(0, len(texts), 64)])
            print(f"{len(texts)} real texts embedded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            rows = [(rowid, c, v.tobytes()) for (rowid, _, c, _), v in zip(pending, vectors, strict=True)]
            async with store.transaction() as db:
                await store.write_vectors(db, MINILM_MODEL_NAME, MINILM_DIMENSION, rows)
            exact = VectorIndex(store, embedder, coarse_from=10**12)
            coarse = VectorIndex(store, embedder, coarse_from=1)
            await exact.load()
            await coarse.load()
            asked = questions[: arguments.queries]
            queries = np.concatenate([embedder.embed_sync(asked[s : s + 64]) for s in range(0, len(asked), 64)])
            for k in (10, 100):
                shares = []
                for query in queries:
                    truth = {rowid for rowid, _ in await exact.nearest("real", query, MemoryFilter(), count=k)}
                    found = {rowid for rowid, _ in await coarse.nearest("real", query, MemoryFilter(), count=k)}
                    shares.append(len(truth & found) / k)
                figures.append(
                    (
                        f"overlap@{k} of two-stage with exact search, {len(texts)} real vectors, {len(queries)} "
                        "LoCoMo questions (mean / worst)",
                        f"{statistics.mean(shares):.4f} / {min(shares):.2f}",
                    )
                )
    return figures


async def _main(arguments: argparse.Namespace) -> int:
    if arguments.overlap:
        figures = await _overlap(arguments)
        if not arguments.big:
            _print(figures)
            return 0
    else:
        figures = []
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
                times = await _timed(
                    [lambda q=q, u=user: service.search_memories(q, user_id=u, mode="keyword") for q in queries]
                )
                figures.append(
                    (
                        f"keyword search p50 / p95, {count}-memory user, in-process",
                        f"{statistics.median(times):.1f} ms / {_percentile(times, 0.95):.1f} ms",
                    )
                )
                depth = service.fusion.depth
                vectors = [await index.embed_query(query) for query in queries]
                times = await _timed(
                    [lambda u=user, v=v, d=depth: index.nearest(u, v, MemoryFilter(), count=d) for v in vectors]
                )
                figures.append(
                    (
                        f"vector side: nearest {depth}, {count}-memory user, in-process",
                        f"{statistics.median(times):.1f} ms / {_percentile(times, 0.95):.1f} ms",
                    )
                )
            fresh = [f"{query} number {number}" for number, query in enumerate(queries)]  # never cached
            times = await _timed([lambda q=q: index.embed_query(q) for q in fresh])
            figures.append(
                (
                    f"vector side: query embedding p50 / p95 (not cached; {len(set(queries))} of the "
                    f"{len(queries)} benchmark queries are distinct)",
                    f"{statistics.median(times):.1f} ms / {_percentile(times, 0.95):.1f} ms",
                )
            )
        async with Client(server_parameters(db_path)) as client:
            probe: dict[str, Any] = {}
            with anyio.fail_after(120):
                while probe.get("mode") != "hybrid":  # a user with no memories: no table is read yet
                    result = await client.call_tool("search_memories", {"query": "probe", "user_id": "nobody"})
                    probe = result.structured_content or {}
                    await anyio.sleep(0.2)

            phases = [("model ready", _children_memory())]

            async def search(query: str, user: str, mode: str = "hybrid") -> None:
                result = await client.call_tool("search_memories", {"query": query, "user_id": user, "mode": mode})
                assert not result.is_error and (result.structured_content or {}).get("mode") == mode

            for user, count in (("medium", arguments.medium), ("big", arguments.big)):
                await search(queries[0], user)  # reads the user's vectors
                phases.append((f"first search, {count}-memory user", _children_memory()))
                for mode in ("hybrid", "keyword"):
                    times = await _timed([lambda q=q, u=user, m=mode: search(q, u, m) for q in queries])
                    figures.append(
                        (
                            f"{mode} search p50 / p95 over stdio, {count}-memory user",
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
            phases.append((f"after the searches and {arguments.writes} writes", _children_memory()))
            figures.extend((f"server VmRSS / VmHWM: {phase}", f"{rss} / {peak} MB") for phase, (rss, peak) in phases)
            figures.append(
                (f"peak RSS of the server (VmHWM), {written} vectors", f"{_children_rss_kib() / 1024:.0f} MB")
            )
    _print(figures)
    return 0


def _children_memory() -> tuple[int, int]:
    """(VmRSS, VmHWM) in MB of the largest child process (the stdio server), read from /proc."""
    found = (0, 0)
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            fields = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in lines if line.startswith("Vm")}
            found = max(found, (fields.get("VmRSS", 0), fields.get("VmHWM", 0)), key=lambda pair: pair[1])
    return found


def _print(figures: list[tuple[str, str]]) -> None:
    print("| figure | measured |")
    print("| --- | --- |")
    for name, value in figures:
        print(f"| {name} | {value} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--medium", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--overlap", type=int, default=0, help="real vectors for the overlap@k figures (0: none)")
    parser.add_argument("--data", type=Path, default=DATA, help="the LoCoMo folder (turns.jsonl, questions.jsonl)")
    return anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
