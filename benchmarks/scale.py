"""Scale: search latency, write throughput, bulk import, export, cold start, memory and size at 100,000 memories.

Builds one database file with deterministic synthetic memories (names, places, jobs, dates, preferences,
each with the first-person message it came from): one user with `--big` memories (default 100,000), nine
users with `--medium` each (default 10,000) and one with `--small` (default 1,000, for the growth line).
Each user's memories are written as a JSON export and loaded with `harmonia-mcp import` (the big one through
the console script as a child process, the others in-process), then it prints:

- search p50/p95 over `--queries` queries (default 200) for the big user, in-process (MemoryService) and
  over stdio (`search_memories` through the official mcp client against `harmonia-mcp serve`);
- search p50 for the 1k, 10k and 100k users (how latency grows);
- `store_memory` throughput over stdio (rules extractor and the duplicate check, one call per message);
- bulk import rate; export of 10,000 memories as JSON and CSV; cold start to `initialize` answered;
- peak RSS of the server process (VmHWM) after the stdio searches and writes; bytes per memory of the file;
- forgetting (issue 11), in-process at the end: soft delete of one memory of the big user, purge of one
  (index merge and WAL checkpoint included), and erasure of a `--medium` user (`delete_user_memories`).

    .venv/bin/python benchmarks/scale.py [--big 100000 --medium 10000 --small 1000 --queries 200 --writes 1000]

Timings are wall-clock on whatever else the machine is doing; run it on an idle machine for figures to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from harmonia_mcp.child import server_parameters
from harmonia_mcp.config import Settings
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.server import make_limits
from harmonia_mcp.service import MemoryService
from harmonia_mcp.store import open_store

FIRST = "Maria James Aiko Omar Lena Pedro Sofia Tariq Ingrid Chen Amara Luca Nadia Felix Rosa Kofi Elena Jonas".split()
PLACES = (
    "Lisbon Porto Berlin Tokyo Nairobi Toronto Austin Seoul Oslo Lima Cairo Dublin Hanoi Quito Perth Kyoto "
    "Madrid Boston Denver Munich Prague Vienna Zurich Bergen"
).split()
JOBS = "nurse teacher chef pilot architect plumber lawyer dentist baker engineer journalist farmer".split()
COMPANIES = "Acme Globex Initech Umbrella Stark Wayne Hooli Vandelay Wonka Cyberdyne".split()
FOODS = "sushi ramen tacos pizza curry falafel pho paella dumplings risotto lasagna kimchi".split()
HOBBIES = "pottery chess climbing knitting surfing painting cycling birdwatching baking gardening".split()
RELATIONS = "sister brother cousin aunt uncle neighbour colleague friend".split()
PETS = "dog cat parrot rabbit hamster turtle".split()
MONTHS = "January February March April May June July August September October November December".split()

TEMPLATES: list[tuple[str, str, str]] = [
    ("My {relation} {name} lives in {place}.", "User's {relation} {name} lives in {place}", "relationship"),
    ("I work as a {job} at {company}.", "User works as a {job} at {company}", "work"),
    ("I really love {food}.", "User really loves {food}", "preference"),
    ("I visited {place} in {month} {year}.", "User visited {place} in {month} {year}", "event"),
    (
        "My {relation} {name} was born on {month} {day}.",
        "User's {relation} {name} was born on {month} {day}",
        "personal",
    ),
    ("I have a {pet} called {name}.", "User has a {pet} called {name}", "relationship"),
    ("I started {hobby} classes with {name}.", "User started {hobby} classes with {name}", "goal"),
    ("I am allergic to {food}.", "User is allergic to {food}", "health"),
    ("I want to move to {place} next year.", "User wants to move to {place} next year", "goal"),
    ("I'm learning {hobby} on weekends.", "User is learning {hobby} on weekends", "skill"),
]

QUERIES = [
    "Where does my {relation} live?",
    "{name}",
    "What is my job at {company}?",
    "Do I like {food}?",
    "When did I visit {place}?",
    "{hobby} classes",
    "my {pet}",
    "allergic {food}",
    '"{place}"',
    "move to {place}",
]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        relation=rng.choice(RELATIONS),
        name=rng.choice(FIRST),
        place=rng.choice(PLACES),
        job=rng.choice(JOBS),
        company=rng.choice(COMPANIES),
        food=rng.choice(FOODS),
        month=rng.choice(MONTHS),
        year=rng.randint(1990, 2025),
        day=rng.randint(1, 28),
        pet=rng.choice(PETS),
        hobby=rng.choice(HOBBIES),
    )


def synthetic_export(user_id: str, count: int, seed: int) -> dict[str, Any]:
    """A JSON export (the shape `export_memories` writes) of `count` deterministic memories for `user_id`."""
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    memories = []
    for index in range(count):
        message_template, content_template, category = rng.choice(TEMPLATES)
        state = rng.getstate()
        message = _fill(rng, message_template)
        rng.setstate(state)  # the same draws fill the content, so the two agree
        content = _fill(rng, content_template)
        when = (start + timedelta(minutes=index * 15 + rng.randint(0, 14))).isoformat(timespec="microseconds")
        memories.append(
            {
                "memory_id": f"mem_{rng.getrandbits(64):016x}",
                "content": content,
                "category": category,
                "confidence": rng.choice((0.5, 0.7, 0.9)),
                "entities": [word for word in content.split() if word[:1].isupper() and word != "User"],
                "tags": [],
                "event_time": None,
                "source_message": message,
                "speaker": "User",
                "session_id": None,
                "metadata": {"n": index},
                "extractor": "rules",
                "status": "active",
                "created_at": when,
                "updated_at": when,
            }
        )
    return {"user_id": user_id, "exported_at": start.isoformat(), "memory_count": count, "memories": memories}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def _timed(calls: list[Callable[[], Awaitable[Any]]]) -> list[float]:
    times = []
    for call in calls:
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _queries(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [_fill(rng, rng.choice(QUERIES)) for _ in range(count)]


def _children_rss_kib() -> int:
    """Peak RSS (VmHWM, KiB) of this process's child processes: the stdio server."""
    peak = 0
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            status = Path(f"/proc/{pid}/status")
            if status.exists():
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
    return peak


def _row(figure: str, value: str, target: str) -> None:
    print(f"| {figure} | {value} | {target} |")


async def _main(arguments: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="harmonia-scale-") as name:
        return await _run(arguments, Path(name))


async def _run(arguments: argparse.Namespace, folder: Path) -> int:
    db_path = folder / "scale.db"
    users = [("big", arguments.big), *[(f"medium{n}", arguments.medium) for n in range(9)], ("small", arguments.small)]
    total = sum(count for _, count in users)
    shown = ", ".join(f"{user}={count}" for user, count in users[:2])
    print(f"database {db_path}: {total} memories ({shown}, ... small={users[-1][1]})")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")

    # 1. Bulk import: the big user through the console script, the rest in-process.
    started = time.perf_counter()
    exports = {user: synthetic_export(user, count, seed) for seed, (user, count) in enumerate(users)}
    generated = time.perf_counter() - started
    big_file = folder / "big.json"
    big_file.write_text(json.dumps(exports["big"]), encoding="utf-8")
    script = Path(sys.executable).parent / "harmonia-mcp"
    started = time.perf_counter()
    subprocess.run([str(script), "import", str(big_file), "--db", str(db_path)], check=True, capture_output=True)
    cli_seconds = time.perf_counter() - started
    settings = Settings(db_path=str(db_path))
    async with open_store(str(db_path)) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        started = time.perf_counter()
        imported = 0
        for user, _ in users[1:]:
            imported += (await service.import_memories(json.dumps(exports[user]))).imported
        inprocess_seconds = time.perf_counter() - started

        # 2. Search in-process.
        queries = _queries(arguments.queries, seed=99)
        await service.search_memories(queries[0], user_id="big")  # warm the page cache once
        big_times = await _timed(
            [lambda q=q: service.search_memories(q, user_id="big", include_metadata=True) for q in queries]
        )
        growth = {}
        for user in ("small", "medium0", "big"):
            growth[user] = statistics.median(
                await _timed([lambda q=q, u=user: service.search_memories(q, user_id=u) for q in queries])
            )

        # 3. Export of 10,000 memories.
        export_times = {}
        for fmt in ("json", "csv"):
            started = time.perf_counter()
            result = await service.export_memories(user_id="medium0", format=fmt)
            export_times[fmt] = (time.perf_counter() - started, result.memory_count)

    # 4. Over stdio: cold start, search, store_memory throughput, peak RSS.
    started = time.perf_counter()
    async with Client(server_parameters(db_path)) as client:
        cold_start = time.perf_counter() - started

        async def search(query: str) -> None:
            result = await client.call_tool(
                "search_memories", {"query": query, "user_id": "big", "include_metadata": True}
            )
            assert not result.is_error, result.content

        stdio_times = await _timed([lambda q=q: search(q) for q in queries])
        rng = random.Random(7)
        messages = [_fill(rng, rng.choice(TEMPLATES)[0]) for _ in range(arguments.writes)]
        started = time.perf_counter()
        for message in messages:
            result = await client.call_tool("store_memory", {"message": message, "user_id": "writer"})
            assert not result.is_error, result.content
        write_seconds = time.perf_counter() - started
        peak_kib = _children_rss_kib()

    size = sum(path.stat().st_size for path in folder.glob("scale.db*"))
    forgetting = await _forgetting(db_path, settings, exports)
    print("| figure | measured | target |")
    print("| --- | --- | --- |")
    _row(
        f"search p50 / p95, {len(queries)} queries, {arguments.big}-memory user, in-process",
        f"{statistics.median(big_times):.1f} ms / {_percentile(big_times, 0.95):.1f} ms",
        "<= 5 ms / <= 20 ms",
    )
    _row(
        "search p50 / p95 over stdio",
        f"{statistics.median(stdio_times):.1f} ms / {_percentile(stdio_times, 0.95):.1f} ms",
        "<= 10 ms p50",
    )
    _row(
        "store_memory over stdio (rules extractor, duplicate check)",
        f"{arguments.writes / write_seconds:.0f} messages/s",
        ">= 300 messages/s",
    )
    _row(
        "bulk import, `harmonia-mcp import` (process start included)",
        f"{arguments.big / cli_seconds:,.0f} memories/s ({arguments.big} in {cli_seconds:.1f} s)",
        ">= 10,000 memories/s",
    )
    _row(
        "bulk import, in-process (JSON parse + validate + insert)",
        f"{imported / inprocess_seconds:,.0f} memories/s ({imported} in {inprocess_seconds:.1f} s)",
        ">= 10,000 memories/s",
    )
    for fmt, (seconds, count) in export_times.items():
        _row(f"export of {count} memories, {fmt.upper()}", f"{seconds:.2f} s", "<= 0.5 s")
    _row("cold start to `initialize` answered", f"{cold_start:.2f} s", "<= 1 s")
    _row(f"peak RSS of the server (VmHWM) with {total} memories", f"{peak_kib / 1024:.0f} MB", "<= 150 MB")
    _row("database size", f"{size / 1e6:.0f} MB, {size / total:.0f} bytes per memory", "printed")
    for figure, seconds in forgetting.items():
        _row(figure, f"{seconds * 1000:.0f} ms", "printed")
    print(
        "\nsearch p50 in-process by user size: "
        + ", ".join(f"{dict(users)[user]} memories {ms:.1f} ms" for user, ms in growth.items())
    )
    print(f"(synthetic data generated in {generated:.1f} s)")
    return 0


async def _forgetting(db_path: Path, settings: Settings, exports: dict[str, Any]) -> dict[str, float]:
    """Seconds to soft-delete one memory, purge one and erase the last medium user, in the file as built."""
    figures: dict[str, float] = {}
    async with open_store(str(db_path)) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        total = (await service.list_memories(user_id="big", limit=1)).pagination.total_count
        ids = [memory["memory_id"] for memory in exports["big"]["memories"][:2]]
        started = time.perf_counter()
        await service.delete_memory(ids[0], user_id="big")
        figures[f"delete_memory (soft) of one memory of a {total}-memory user"] = time.perf_counter() - started
        started = time.perf_counter()
        await service.delete_memory(ids[1], user_id="big", purge=True)
        figures["delete_memory(purge=true) of one memory (FTS5 merge + WAL checkpoint included)"] = (
            time.perf_counter() - started
        )
        victim = "medium8"
        count = len(exports[victim]["memories"])
        started = time.perf_counter()
        erased = await service.delete_user_memories(victim, confirm=victim)
        assert erased.memories == count, erased
        figures[f"delete_user_memories of a {count}-memory user (FTS5 merge + WAL checkpoint included)"] = (
            time.perf_counter() - started
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=100_000, help="memories of the big user (default 100000)")
    parser.add_argument("--medium", type=int, default=10_000, help="memories of each of 9 users (default 10000)")
    parser.add_argument("--small", type=int, default=1_000, help="memories of the small user (default 1000)")
    parser.add_argument("--queries", type=int, default=200, help="search queries (default 200)")
    parser.add_argument("--writes", type=int, default=1000, help="store_memory calls over stdio (default 1000)")
    return anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
