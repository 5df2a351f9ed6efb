"""Two-stage ranking (issue 14): keyword search in-process, two-stage against the exact statement, at N memories.

Builds (once, at `--db` when the file is missing) one user "big" with `--memories` synthetic memories from
`benchmarks/scale.py`, imported with `harmonia-mcp import`, then runs `--queries` scale.py queries through
`Store.search` (first page of 10) twice in each mode, alternating, and prints p50/p95 per mode and how many
first pages (ids in order) and totals are identical; then the same for the hybrid keyword side
(`Store.keyword_candidates` at fusion's depth).

    .venv/bin/python benchmarks/two_stage.py --db /tmp/two_stage.db [--memories 100000 --queries 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from harmonia_mcp import store as store_module
from harmonia_mcp.search import Fusion, build_match_expression
from harmonia_mcp.store import MemoryFilter, Store, open_store

sys.path.insert(0, str(Path(__file__).parent))
from lean_path import build  # noqa: E402
from scale import _queries  # noqa: E402

NOW = "2026-12-01T00:00:00Z"


async def _run(db: Path, queries: int) -> None:
    async with open_store(str(db)) as store:
        texts = _queries(queries, 7)
        pages: dict[str, list[tuple[list[str], int]]] = {}
        window = store_module.MAX_SEARCH_CANDIDATES
        for _ in range(2):
            for mode in ("two-stage", "exact"):
                store_module.MAX_SEARCH_CANDIDATES = window if mode == "two-stage" else 0
                times, found = [], []
                for text in texts:
                    match = build_match_expression(text)
                    assert match is not None
                    started = time.perf_counter()
                    hits, total = await store.search("big", match, MemoryFilter(), limit=10, offset=0, now=NOW)
                    times.append((time.perf_counter() - started) * 1000)
                    found.append(([hit.memory.memory_id for hit in hits], total))
                pages[mode] = found
                times.sort()
                print(f"{mode}: p50 {times[len(times) // 2]:.2f} ms, p95 {times[int(len(times) * 0.95)]:.2f} ms")
        store_module.MAX_SEARCH_CANDIDATES = window
        pairs = list(zip(pages["two-stage"], pages["exact"], strict=True))
        same = sum(fast[0] == exact[0] for fast, exact in pairs)
        totals = sum(fast[1] == exact[1] for fast, exact in pairs)
        print(f"identical first pages {same}/{len(pairs)}, identical totals {totals}/{len(pairs)}")
        await _keyword_side(store, texts)


async def _keyword_side(store: Store, texts: list[str]) -> None:
    """The hybrid keyword side, `Store.keyword_candidates` at fusion's depth: two-stage against every match."""
    depth = Fusion().depth
    window = store_module._keyword_window
    found: dict[str, list[Any]] = {}
    for _ in range(2):
        for mode in ("two-stage", "exact"):
            store_module._keyword_window = window if mode == "two-stage" else (lambda *_, **__: (None, 0))
            times, found[mode] = [], []
            for text in texts:
                match = build_match_expression(text)
                assert match is not None
                started = time.perf_counter()
                found[mode].append(await store.keyword_candidates("big", match, MemoryFilter(), limit=depth))
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            print(
                f"keyword_candidates (depth {depth}) {mode}: p50 {times[len(times) // 2]:.2f} ms, "
                f"p95 {times[int(len(times) * 0.95)]:.2f} ms"
            )
    store_module._keyword_window = window
    same = sum(fast == exact for fast, exact in zip(found["two-stage"], found["exact"], strict=True))
    print(f"identical keyword candidates and totals {same}/{len(texts)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="database file (built when missing)")
    parser.add_argument("--memories", type=int, default=100_000, help="memories of the user (default 100000)")
    parser.add_argument("--queries", type=int, default=100, help="queries (default 100)")
    arguments = parser.parse_args()
    build(arguments.db, "big", arguments.memories)
    anyio.run(_run, arguments.db, arguments.queries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
