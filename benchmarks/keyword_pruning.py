"""Exact keyword pruning (issue 9, sixth round): the keyword windows taken among the rows that hold every term.

Builds (once, at `--db` when the file is missing) the file of `benchmarks/vector_scale.py`: one user "big" with
`--big` synthetic memories of `benchmarks/scale.py` and one "medium" with `--medium`, imported with
`import_memories` (so every search runs with the owner token, as in any file with two users). Then, for each user,
runs `--queries` scale.py queries through the hybrid keyword side (`Store.keyword_candidates` at fusion's depth)
and keyword search's first page (`Store.search`, 10 hits), with the pruning (`store._conjunction`) and without it,
alternating, and prints p50/p95 per mode, how many results are identical (rows, strengths, own-text flags and
totals; ids, relevance, highlights and totals), and how often the bound was tried and how often it held.

    .venv/bin/python benchmarks/keyword_pruning.py --db /tmp/keyword_pruning.db [--big 100000 --medium 10000]

Timings are wall-clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio

from harmonia_mcp import store as store_module
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.search import Fusion, build_match_expression
from harmonia_mcp.service import MemoryService, ServiceLimits
from harmonia_mcp.store import MemoryFilter, open_store

sys.path.insert(0, str(Path(__file__).parent))
from scale import _percentile, _queries, synthetic_export  # noqa: E402

NOW = "2026-12-01T00:00:00Z"
LIMITS = ServiceLimits(default_user="default", max_message_bytes=32 * 1024, timezone=ZoneInfo("UTC"))


async def _build(db: Path, big: int, medium: int) -> None:
    async with open_store(str(db)) as store:
        service = MemoryService(store, RulesExtractor(), LIMITS)
        for seed, (user, count) in enumerate((("big", big), ("medium", medium))):
            await service.import_memories(json.dumps(synthetic_export(user, count, seed)))


async def _run(db: Path, queries: int) -> None:
    proved: list[bool] = []
    proves = store_module._Conjunction.proves
    conjunction = store_module._conjunction

    def counted(self: Any, row: Any, window: int) -> bool:
        proved.append(held := proves(self, row, window))
        return held

    store_module._Conjunction.proves = counted  # type: ignore[method-assign]
    depth = Fusion().depth
    async with open_store(str(db)) as store:
        for user in ("big", "medium"):
            matches = [build_match_expression(text) for text in _queries(queries, 99)]
            times: dict[str, list[float]] = {"pruned": [], "every match": []}
            found: dict[str, list[Any]] = {"pruned": [], "every match": []}
            pages: dict[str, list[Any]] = {"pruned": [], "every match": []}
            page_times: dict[str, list[float]] = {"pruned": [], "every match": []}
            proved.clear()
            for match in matches:
                assert match is not None
                for mode in ("pruned", "every match"):
                    store_module._conjunction = conjunction if mode == "pruned" else (lambda *_, **__: None)
                    started = time.perf_counter()
                    found[mode].append(await store.keyword_candidates(user, match, MemoryFilter(), limit=depth))
                    times[mode].append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    hits, total = await store.search(user, match, MemoryFilter(), limit=10, offset=0, now=NOW)
                    page_times[mode].append((time.perf_counter() - started) * 1000)
                    pages[mode].append(([(hit.memory.memory_id, hit.relevance, hit.highlights) for hit in hits], total))
            store_module._conjunction = conjunction
            tried = len(proved)
            same = sum(a == b for a, b in zip(found["pruned"], found["every match"], strict=True))
            same_pages = sum(a == b for a, b in zip(pages["pruned"], pages["every match"], strict=True))
            print(f"user {user}: bound tried {tried} times, held {sum(proved)}")
            for label, table in ((f"keyword_candidates (depth {depth})", times), ("search, first page", page_times)):
                for mode, values in table.items():
                    print(
                        f"  {label}, {mode}: p50 {statistics.median(values):.1f} ms, "
                        f"p95 {_percentile(values, 0.95):.1f} ms"
                    )
            print(f"  identical: candidates {same}/{len(matches)}, first pages {same_pages}/{len(matches)}")
    store_module._Conjunction.proves = proves  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--medium", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100)
    arguments = parser.parse_args()
    if not arguments.db.exists():
        anyio.run(_build, arguments.db, arguments.big, arguments.medium)
    anyio.run(_run, arguments.db, arguments.queries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
