"""Concurrency benchmark: N HTTP clients at once, each storing M memories and searching between stores.

Starts `harmonia-mcp serve --transport T` on a free 127.0.0.1 port with a temporary database and one
bearer token per client (each bound to its own user), or drives an already running server with --url
(then --token is sent by every client and all clients share that token's user). Prints clients,
memories, errors, elapsed seconds and stores per second. Described in docs/benchmarks.md.

    .venv/bin/python benchmarks/concurrency.py --clients 20 --memories 50
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

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

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
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="harmonia-bench-") as folder:
        process: subprocess.Popen[bytes] | None = None
        db_path = Path(folder) / "bench.db"
        if arguments.url:
            url, tokens = arguments.url, [arguments.token] * arguments.clients
        else:
            tokens = [f"bench-token-{number:05d}-0123456789abcdef" for number in range(arguments.clients)]
            token_file = Path(folder) / "tokens"
            token_file.write_text("".join(f"{token} user{n}\n" for n, token in enumerate(tokens)), encoding="utf-8")
            token_file.chmod(0o600)
            port = _free_port()
            env = {
                **os.environ,
                "HARMONIA_DB_PATH": str(db_path),
                "HARMONIA_AUTH_TOKENS_FILE": str(token_file),
                "HARMONIA_EXTRACTOR": "rules",
            }
            command = [*_command(), "serve", "--transport", arguments.transport, "--port", str(port)]
            process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
            base = f"http://127.0.0.1:{port}"
            url = f"{base}/sse" if arguments.transport == "sse" else f"{base}/mcp"
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


if __name__ == "__main__":
    sys.exit(main())
