"""Concurrency benchmark: N HTTP clients at once, each storing M memories and searching between stores.

Starts `harmonia-mcp serve --transport T` on a free 127.0.0.1 port with a temporary database and one
bearer token per client (each bound to its own user), or drives an already running server with --url
(then --token is sent by every client and all clients share that token's user). Prints clients,
memories, errors, elapsed seconds and stores per second. Described in docs/benchmarks.md.

    .venv/bin/python benchmarks/concurrency.py --clients 20 --memories 50

The throughput run turns the per-token rate limit and read budget off (`--rate-limit 0`; each client sends far more than
100 requests a minute). `--hostile` measures fairness instead, with the server's default limits: N
well-behaved clients (paced under the rate limit) store and search, first alone (calm), then again while M
hostile clients each send the most expensive searches the query bounds allow, several at once, and open
streamable HTTP sessions in a loop without closing them. It reports the well-behaved clients' p50/p95
latency and errors in both runs (and per tool), what the hostile clients were refused, and acknowledged
writes lost. Each run first waits until the server has embedded the hostile users' seeded memories (its
background worker would otherwise take a core for a minute or more); `--during-backlog` measures at once.
`--seed-cache DIR` seeds and embeds those memories once and copies the file for each run (then it waits
until searches answer by meaning). The well-behaved clients connect and warm their SDK's validators before any
call is timed.

    .venv/bin/python benchmarks/concurrency.py --hostile --clients 5 --hostile-clients 3 --memories 20
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from harmonia_mcp.child import server_command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _command() -> list[str]:
    command, arguments = server_command()
    return [command, *arguments]


def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx2.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with status {process.returncode}")
            try:
                if http.get(f"{base}/healthz").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
    raise SystemExit(f"the server did not answer /healthz within {timeout} s")


@asynccontextmanager
async def _connect(url: str, transport: str, token: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"}
    if transport == "sse":
        async with Client(sse_client(url, headers=headers)) as client:
            yield client
        return
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def _start_server(
    folder: Path, db_path: Path, token_lines: list[str], transport: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `harmonia-mcp serve` on a free port with these `token user` lines; return it and its MCP URL."""
    token_file = folder / "tokens"
    token_file.write_text("".join(token_lines), encoding="utf-8")
    token_file.chmod(0o600)
    port = _free_port()
    environment = {
        **os.environ,
        "HARMONIA_DB_PATH": str(db_path),
        "HARMONIA_AUTH_TOKENS_FILE": str(token_file),
        "HARMONIA_EXTRACTOR": "rules",
        **env,
    }
    command = [*_command(), "serve", "--transport", transport, "--port", str(port)]
    process = subprocess.Popen(command, env=environment, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    return process, f"{base}/sse" if transport == "sse" else f"{base}/mcp"


async def _run(url: str, transport: str, tokens: list[str], memories: int, search: bool) -> tuple[int, int, float]:
    """Return (acknowledged stores, errors, elapsed seconds)."""
    stored = 0
    errors = 0

    async def one_client(number: int) -> None:
        nonlocal stored, errors
        try:
            async with _connect(url, transport, tokens[number]) as client:
                for index in range(memories):
                    name = f"Bench{number}x{index}"
                    result = await client.call_tool("store_memory", {"message": f"I have a cat called {name}"})
                    if result.is_error:
                        errors += 1
                        continue
                    stored += 1
                    if search:
                        found = await client.call_tool("search_memories", {"query": name})
                        errors += int(found.is_error)
        except Exception as error:  # a client that dies counts as one error; the rest go on
            print(f"client {number}: {type(error).__name__}: {error}", file=sys.stderr)
            errors += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for number in range(len(tokens)):
            group.start_soon(one_client, number)
    return stored, errors, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    parser.add_argument("--memories", type=int, default=50, help="memories each client stores (default 50)")
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--no-search", action="store_true", help="only store; do not search between stores")
    parser.add_argument("--url", help="an already running server's MCP endpoint (…/mcp or …/sse)")
    parser.add_argument("--token", default="", help="with --url: the bearer token every client sends")
    parser.add_argument("--rate-limit", default="0", help="HARMONIA_RATE_LIMIT_PER_MINUTE of the server (default 0)")
    parser.add_argument("--hostile", action="store_true", help="calm run, then the same with hostile clients")
    parser.add_argument("--hostile-clients", type=int, default=3, help="with --hostile: hostile clients (default 3)")
    parser.add_argument("--pace", type=float, default=0.7, help="with --hostile: seconds between a calm client's calls")
    parser.add_argument("--seed", type=int, default=20_000, help="with --hostile: memories each hostile user has")
    parser.add_argument(
        "--hostile-kind",
        choices=["both", "search", "sessions"],
        default="both",
        help="with --hostile: what the hostile clients do (default both)",
    )
    parser.add_argument(
        "--read-seconds", help="with --hostile: the server's HARMONIA_READ_SECONDS_PER_MINUTE (default: its default)"
    )
    parser.add_argument(
        "--during-backlog",
        action="store_true",
        help="with --hostile: measure at once, while the server still embeds the seeded memories (default: wait)",
    )
    parser.add_argument(
        "--seed-cache",
        type=Path,
        help="with --hostile: a folder keeping the seeded memories with their vectors, made once and copied for "
        "each run (default: seed through import and let the server embed them, every run)",
    )
    parser.add_argument("--hostile-worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.hostile_worker:
        anyio.run(
            _hostile_worker, arguments.url, arguments.transport, arguments.token.split(","), arguments.hostile_kind
        )
        return 0
    if arguments.hostile:
        return hostile_main(arguments)

    with tempfile.TemporaryDirectory(prefix="harmonia-bench-") as folder:
        process: subprocess.Popen[bytes] | None = None
        db_path = Path(folder) / "bench.db"
        if arguments.url:
            url, tokens = arguments.url, [arguments.token] * arguments.clients
        else:
            tokens = [f"bench-token-{number:05d}-0123456789abcdef" for number in range(arguments.clients)]
            lines = [f"{token} user{n}\n" for n, token in enumerate(tokens)]
            limit = {"HARMONIA_RATE_LIMIT_PER_MINUTE": arguments.rate_limit}
            if arguments.rate_limit == "0":  # throughput: no per-caller budget of read work either
                limit["HARMONIA_READ_SECONDS_PER_MINUTE"] = "0"
            process, url = _start_server(Path(folder), db_path, lines, arguments.transport, limit)
        try:
            if process is not None:
                _wait_ready(url.rsplit("/", 1)[0], process)
            stored, errors, elapsed = anyio.run(
                _run, url, arguments.transport, tokens, arguments.memories, not arguments.no_search
            )
        finally:
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        in_database = None
        if process is not None:
            with sqlite3.connect(db_path) as db:
                in_database = db.execute("SELECT count(*) FROM memories WHERE status = 'active'").fetchone()[0]

    print(f"transport:    {arguments.transport}")
    print(f"clients:      {arguments.clients}")
    print(f"memories:     {arguments.clients * arguments.memories} requested, {stored} acknowledged", end="")
    print(f", {in_database} in the database" if in_database is not None else "")
    print(f"searches:     {'one after each store' if not arguments.no_search else 'none'}")
    print(f"errors:       {errors}")
    print(f"elapsed:      {elapsed:.2f} s")
    print(f"stores/s:     {stored / elapsed:.1f}")
    return 1 if errors else 0


# --- --hostile ---------------------------------------------------------------------------------

# The costliest search the bounds allow (search.check_query): 4 two-letter prefixes that match every seeded
# memory and 28 more words, under 2,000 characters.
WORST_QUERY = "us* li* te* nu* " + " ".join(["user", "likes", "tea", "number", "honey", "lemon", "morning"] * 4)
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}


def _seed(db_path: Path, users: list[str], count: int) -> None:
    """Give each hostile user `count` memories through the import path, so their searches have work to do."""
    import json

    from harmonia_mcp.cli import main as cli

    for user in users:
        rows = [
            {
                "memory_id": f"mem_{abs(hash(user)) % 65536:04x}{index:012x}",
                "content": f"User likes tea number {index} with honey and lemon in the morning",
                "category": "preference",
                "confidence": 0.9,
                "entities": [],
                "tags": [],
                "event_time": None,
                "source_message": None,
                "speaker": "User",
                "session_id": None,
                "metadata": {},
                "extractor": "rules",
                "status": "active",
                "created_at": "2026-01-01T00:00:00+00:00",
                "updated_at": "2026-01-01T00:00:00+00:00",
            }
            for index in range(count)
        ]
        path = db_path.with_suffix(f".{user}.json")
        path.write_text(json.dumps({"user_id": user, "memories": rows}), encoding="utf-8")
        assert cli(["import", str(path), "--db", str(db_path)]) == 0


BACKLOG_SQL = (
    "SELECT count(*) FROM memories m LEFT JOIN memory_vectors v ON v.rowid = m.rowid "
    "WHERE m.status IN ('active', 'superseded') AND v.rowid IS NULL"
)


def _settle(db_path: Path, process: subprocess.Popen[bytes], timeout: float = 900.0) -> float:
    """Wait until the server's background worker has embedded every seeded memory; return the seconds it took.

    Why: right after the import the worker embeds the hostile users' memories (5,000 each: most of a core for
    a minute or more); measuring during that would time the backlog, not the hostile clients."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        with sqlite3.connect(db_path, timeout=30) as db:
            if not db.execute(BACKLOG_SQL).fetchone()[0]:
                return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"the seeded memories were not all embedded within {timeout} s")


def _seeded_copy(db_path: Path, users: list[str], count: int, cache: Path | None) -> bool:
    """Seed `db_path` (`_seed`); with a `cache` folder, copy a file seeded and embedded once instead.

    Returns True when the copy already holds every vector (the server then has no backlog to embed). Why a
    cache: seeding and embedding 15,000 memories took 4-5 of a run's 8 minutes, under the shared machine's
    benchmark lock, twice a run; the measured part is the same either way (docs/benchmarks.md, issue 12 fourth
    round, says how the server's state differs)."""
    if cache is None:
        _seed(db_path, users, count)
        return False
    cached = cache / f"seed-{len(users)}x{count}.db"
    if not cached.exists():
        cache.mkdir(parents=True, exist_ok=True)
        building = cached.with_suffix(".building")
        building.unlink(missing_ok=True)
        _seed(building, users, count)
        started = time.monotonic()
        anyio.run(_embed_all, building)
        print(f"seed cache: embedded {len(users) * count} memories in {time.monotonic() - started:.0f} s")
        building.rename(cached)
        for user in users:
            building.with_suffix(f".{user}.json").unlink(missing_ok=True)
    with sqlite3.connect(cached) as source, sqlite3.connect(db_path) as target:
        source.backup(target)
    return True


async def _embed_all(db_path: Path) -> None:
    """Embed every memory of `db_path` with the server's own embedder (its background worker, in-process)."""
    from harmonia_mcp.config import Settings
    from harmonia_mcp.store import open_store
    from harmonia_mcp.vectors import open_vectors

    async with open_store(str(db_path)) as store, open_vectors(Settings(db_path=str(db_path)), store) as vectors:
        assert vectors is not None and await vectors.wait_ready(), "the embedding model did not load"
        while (await store.vector_counts(vectors.model, vectors.dimension))[1]:
            await anyio.sleep(1.0)


async def _wait_hybrid(url: str, transport: str, token: str, timeout: float = 120.0) -> None:
    """Wait until the server answers searches by meaning (its model loaded), probing as a user of its own."""
    with anyio.fail_after(timeout):
        async with _connect(url, transport, token) as client:
            while True:
                result = await client.call_tool("search_memories", {"query": "probe"})
                if not result.is_error and (result.structured_content or {}).get("mode") == "hybrid":
                    return
                await anyio.sleep(0.2)


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def _warm_validators(client: Client, tools: tuple[str, ...]) -> None:
    """Compile the client's output-schema validator of each of `tools` before anything is timed.

    Why: the SDK's client imports jsonschema on its first tool result (about 100-130 ms here, with the event
    loop blocked) and compiles each tool's validator on the session's first result of that tool (about 10 ms
    each). A host pays that once, in its own process; the well-behaved clients here share one process, so
    their first calls waited for each other's, and with 100 calls those five were the calm run's p95
    (docs/benchmarks.md, issue 12 fourth round). Checking an empty result compiles the validator, then fails.
    """
    for tool in tools:
        try:
            await client.session.validate_tool_result(tool, CallToolResult(content=[], structured_content={}))
        except RuntimeError:  # {} is not a valid result: expected, the validator is compiled and cached
            pass


async def _calm(url: str, transport: str, tokens: list[str], memories: int, pace: float) -> dict[str, Any]:
    latencies: list[float] = []
    warm: list[float] = []  # every call but each client's first (whose cost is the client's and user's cold start)
    by_tool: dict[str, list[float]] = {}
    slowest: list[tuple[float, str]] = []  # (latency, where): which calls make the tail
    errors: list[str] = []
    acknowledged: list[str] = []
    began = time.perf_counter()
    # Every client connects before any call is timed. Why: the connections' handshakes (initialize, tools/list,
    # each client's validators) are untimed, but five of them at once kept the server's and this process's
    # event loops busy while the first clients' first calls ran: the server took 14-44 ms over those calls and
    # the clients saw 92-149 ms (an instrumented run, docs/benchmarks.md, issue 12 fourth round).
    connected = [0]
    everyone = anyio.Event()

    def arrived() -> None:
        connected[0] += 1
        if connected[0] == len(tokens):
            everyone.set()

    async def one(number: int) -> None:
        counted = False
        try:
            async with _connect(url, transport, tokens[number]) as client:
                await client.list_tools()  # untimed, as a host does on connecting (the client caches the schemas)
                await _warm_validators(client, ("store_memory", "search_memories"))
                counted = True
                arrived()
                await everyone.wait()
                for index in range(memories):
                    name = f"Calm{number}x{index}"
                    for tool, arguments in (
                        ("store_memory", {"message": f"I have a cat called {name}"}),
                        ("search_memories", {"query": name}),
                    ):
                        started = time.perf_counter()
                        result = await client.call_tool(tool, arguments)
                        latencies.append(time.perf_counter() - started)
                        by_tool.setdefault(tool, []).append(latencies[-1])
                        if index or tool != "store_memory":
                            warm.append(latencies[-1])
                        where = f"{tool} of client {number}, call {index + 1}, at +{started - began:.1f} s"
                        slowest.append((latencies[-1], where))
                        if result.is_error:
                            errors.append(f"{tool}: {' '.join(getattr(b, 'text', '') for b in result.content)}")
                        elif tool == "store_memory":
                            acknowledged.append(f"User has a cat called {name}")
                        await anyio.sleep(pace)
        except Exception as error:  # a client that dies counts as one error
            errors.append(f"client {number}: {type(error).__name__}: {error}")
        finally:
            if not counted:  # the others must not wait for a client that never connected
                arrived()

    async with anyio.create_task_group() as group:
        for number in range(len(tokens)):
            group.start_soon(one, number)
    slowest = sorted(slowest, reverse=True)[: max(1, len(latencies) // 20)]
    return {
        "latencies": latencies,
        "warm": warm,
        "by_tool": by_tool,
        "slowest": slowest,
        "errors": errors,
        "acknowledged": acknowledged,
    }


async def _hostile(
    url: str, transport: str, token: str, stop: anyio.Event, tally: dict[str, int], kind: str = "both"
) -> None:
    async def searcher() -> None:
        while not stop.is_set():
            try:
                async with _connect(url, transport, token) as client:
                    while not stop.is_set():
                        result = await client.call_tool("search_memories", {"query": WORST_QUERY, "limit": 100})
                        tally["searches refused (tool error)" if result.is_error else "searches served"] += 1
            except Exception:  # refused at the HTTP layer (429): the session is gone; open another
                tally["searches refused (HTTP)"] += 1
                await anyio.sleep(0.2)

    async def session_opener() -> None:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        async with httpx2.AsyncClient(timeout=30.0) as http:
            while not stop.is_set():
                try:
                    response = await http.post(url, json=INITIALIZE, headers=headers)
                    tally[f"sessions: HTTP {response.status_code}"] += 1
                except httpx2.HTTPError:
                    tally["sessions: failed"] += 1
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        for _ in range(8 if kind != "sessions" else 0):  # more at once than the per-token concurrency cap (4)
            group.start_soon(searcher)
        if transport == "streamable-http" and kind != "search":
            group.start_soon(session_opener)


async def _hostile_worker(url: str, transport: str, tokens: list[str], kind: str) -> None:
    """The hostile clients, in their own process (so their work does not slow the calm clients' own event
    loop and skew what is measured), until stdin closes; then the tally as one JSON line on stdout."""
    import json
    from collections import Counter

    tally: Counter[str] = Counter()
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        for token in tokens:
            group.start_soon(_hostile, url, transport, token, stop, tally, kind)
        await anyio.to_thread.run_sync(sys.stdin.read)
        stop.set()
        group.cancel_scope.cancel()
    print(json.dumps(dict(tally)), flush=True)


def _one_run(
    mode: str, url: str, transport: str, calm: list[str], hostile: list[str], arguments: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, int]]:
    import json

    worker = None
    if mode == "hostile":
        command = [sys.executable, __file__, "--hostile-worker", "--url", url, "--transport", transport]
        command += ["--token", ",".join(hostile), "--hostile-kind", arguments.hostile_kind]
        worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        time.sleep(3)  # let the hostile load build up first
    outcome = anyio.run(_calm, url, transport, calm, arguments.memories, arguments.pace)
    if worker is None:
        return outcome, {}
    out, _ = worker.communicate(b"", timeout=120)
    return outcome, json.loads(out.decode().strip().splitlines()[-1])


def hostile_main(arguments: argparse.Namespace) -> int:
    """Calm run, then the same calm clients with hostile ones; print both and what the hostile ones got."""
    from collections import Counter

    import jsonschema  # noqa: F401  # the client's validator library, loaded before anything is timed (_warm_validators)

    results: dict[str, dict[str, Any]] = {}
    tally: Counter[str] = Counter()
    lost = 0
    for mode in ("calm", "hostile"):
        with tempfile.TemporaryDirectory(prefix="harmonia-bench-") as folder:
            db_path = Path(folder) / "bench.db"
            calm = [f"calm-token-{n:05d}-0123456789abcdef" for n in range(arguments.clients)]
            hostile = [f"hostile-token-{n:05d}-0123456789abcdef" for n in range(arguments.hostile_clients)]
            users = [f"hostile{n}" for n in range(len(hostile))]
            embedded = _seeded_copy(db_path, users, arguments.seed, arguments.seed_cache)
            probe = "probe-token-00000-0123456789abcdef"
            lines = [f"{t} calm{n}\n" for n, t in enumerate(calm)]
            lines += [f"{t} {u}\n" for t, u in zip(hostile, users, strict=True)]
            lines.append(f"{probe} probe\n")
            limits = (
                {} if arguments.read_seconds is None else {"HARMONIA_READ_SECONDS_PER_MINUTE": arguments.read_seconds}
            )
            process, url = _start_server(Path(folder), db_path, lines, arguments.transport, limits)
            base = url.rsplit("/", 1)[0]
            try:
                _wait_ready(base, process)
                settled = None if arguments.during_backlog else _settle(db_path, process)
                if embedded and not arguments.during_backlog:
                    anyio.run(_wait_hybrid, url, arguments.transport, probe)
                load_before = _load()
                results[mode], got = _one_run(mode, url, arguments.transport, calm, hostile, arguments)
                results[mode]["settled"] = settled
                results[mode]["load"] = f"{load_before} -> {_load()}"
                tally.update(got)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
            with sqlite3.connect(db_path) as db:
                stored = {row[0] for row in db.execute("SELECT content FROM memories WHERE user_id LIKE 'calm%'")}
            lost += sum(1 for content in results[mode]["acknowledged"] if content not in stored)

    print(
        f"transport: {arguments.transport}; {arguments.clients} well-behaved clients x {arguments.memories} "
        f"(store + search, {arguments.pace} s apart); {arguments.hostile_clients} hostile clients "
        f"(8 worst-case searches at once each, sessions opened in a loop; {arguments.seed} memories each)"
    )
    for mode, outcome in results.items():
        latencies = outcome["latencies"]
        settled = outcome["settled"]
        print(
            f"{mode:8} calls {len(latencies):5}  p50 {_percentile(latencies, 0.5) * 1000:7.1f} ms  "
            f"p95 {_percentile(latencies, 0.95) * 1000:7.1f} ms  errors {len(outcome['errors'])}  "
            f"(load average {outcome['load']}; "
            + ("measured during the embedding backlog)" if settled is None else f"backlog embedded in {settled:.0f} s)")
        )
        for tool, values in sorted(outcome["by_tool"].items()):
            print(
                f"         {tool:16} p50 {_percentile(values, 0.5) * 1000:7.1f} ms  "
                f"p95 {_percentile(values, 0.95) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"
            )
        print(
            "         slowest 5%: " + "; ".join(f"{value * 1000:.0f} ms {where}" for value, where in outcome["slowest"])
        )
        for error in outcome["errors"][:5]:
            print(f"         {error[:160]}")
    print("hostile: " + ", ".join(f"{key} {value}" for key, value in sorted(tally.items())))
    print(f"acknowledged writes lost: {lost}")
    calm_p95 = _percentile(results["calm"]["latencies"], 0.95)
    hostile_p95 = _percentile(results["hostile"]["latencies"], 0.95)
    print(f"p95 hostile / calm: {hostile_p95 / calm_p95:.2f}x (target: within 3x, 0 errors, 0 lost)")
    calm_warm, hostile_warm = (_percentile(results[mode]["warm"], 0.95) for mode in ("calm", "hostile"))
    print(
        f"without each client's first call: p95 calm {calm_warm * 1000:.1f} ms, hostile {hostile_warm * 1000:.1f} ms, "
        f"{hostile_warm / calm_warm:.2f}x"
    )
    return 1 if lost or results["hostile"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
