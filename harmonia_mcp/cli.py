"""The `harmonia-mcp` command: `serve` (the default, over stdio; or SSE / streamable HTTP), `demo` and `doctor`.

The composition root: the only place that builds `Settings`. Under stdio, stdout carries the
protocol, so logs go to stderr; `demo` and `doctor` talk to a person and print to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

import anyio
import httpx
from pydantic import ValidationError

from harmonia_mcp import __version__
from harmonia_mcp.config import Settings


def _settings(arguments: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(arguments, "db", None):
        overrides["db_path"] = arguments.db
    for flag, field in (("host", "host"), ("port", "port"), ("allowed_host", "allowed_hosts")):
        if getattr(arguments, flag, None) is not None:
            overrides[field] = getattr(arguments, flag)
    return Settings(**overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harmonia-mcp",
        description="A local-first MCP memory server. With no command, serves MCP over stdio.",
    )
    parser.add_argument("--version", action="version", version=f"harmonia-mcp {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="serve MCP (the default command)")
    serve.add_argument(
        "--transport",
        choices=["stdio", "sse", "streamable-http"],
        default="stdio",
        help="the MCP transport (default: stdio); sse serves /sse and /messages/, streamable-http serves /mcp",
    )
    serve.add_argument("--db", help="the SQLite file (default: HARMONIA_DB_PATH or the user data directory)")
    serve.add_argument("--host", help="HTTP transports: address to bind (default: HARMONIA_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP transports: TCP port (default: HARMONIA_PORT or 8765)")
    serve.add_argument(
        "--allowed-host",
        action="append",
        metavar="HOST[:PORT|:*]",
        help="HTTP transports: a Host header to accept besides loopback (repeatable; replaces HARMONIA_ALLOWED_HOSTS)",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="HTTP transports: serve a non-loopback address without bearer tokens (unsafe; logged as a warning)",
    )
    demo = commands.add_parser("demo", help="run the server as a child process and show it working over stdio")
    demo.add_argument("--db", help="the SQLite file to use (default: a temporary file, removed afterwards)")
    doctor = commands.add_parser("doctor", help="print the database, SQLite/FTS5 and Ollama status")
    doctor.add_argument("--db", help="the SQLite file to check")
    importer = commands.add_parser(
        "import", help="load a JSON export (as export_memories writes it); memories already present are skipped"
    )
    importer.add_argument("file", type=Path, help="the JSON export to load ('-' reads standard input)")
    importer.add_argument("--user-id", help="whose memories they become (default: the file's user_id)")
    importer.add_argument("--db", help="the SQLite file to load into (default: HARMONIA_DB_PATH or the data directory)")
    reindex = commands.add_parser(
        "reindex", help="embed the memories that lack a vector of the configured model (search by meaning)"
    )
    reindex.add_argument("--db", help="the SQLite file (default: HARMONIA_DB_PATH or the data directory)")
    reindex.add_argument("--all", action="store_true", help="drop every stored vector first and re-embed everything")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 bad configuration or arguments)."""
    arguments = _parser().parse_args(argv)
    try:
        settings = _settings(arguments)
    except ValidationError as error:
        print(f"harmonia-mcp: invalid configuration:\n{error}", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stderr, level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if arguments.command == "demo":
        return anyio.run(_demo, arguments.db)
    if arguments.command == "doctor":
        return anyio.run(_doctor, settings)
    if arguments.command == "import":
        return anyio.run(_import, settings, arguments.file, arguments.user_id)
    if arguments.command == "reindex":
        return anyio.run(_reindex, settings, arguments.all)
    transport: str = getattr(arguments, "transport", "stdio")
    if transport in ("sse", "streamable-http"):
        http_transport = cast(Literal["sse", "streamable-http"], transport)  # argparse choices checked it
        return _serve_http(settings, http_transport, allow_unauthenticated=arguments.allow_unauthenticated)
    return _serve(settings)


def _serve(settings: Settings) -> int:
    from harmonia_mcp.server import create_server

    server = create_server(settings)
    anyio.run(server.run_stdio_async)
    return 0


def _serve_http(
    settings: Settings, transport: Literal["sse", "streamable-http"], *, allow_unauthenticated: bool
) -> int:
    from harmonia_mcp.auth import TokenConfigError
    from harmonia_mcp.remote import UnsafeConfiguration, serve_http

    path = "/sse" if transport == "sse" else "/mcp"
    print(
        f"harmonia-mcp: serving MCP over {transport} at http://{settings.host}:{settings.port}{path}", file=sys.stderr
    )
    try:
        anyio.run(partial(serve_http, settings, transport, allow_unauthenticated=allow_unauthenticated))
    except (UnsafeConfiguration, TokenConfigError) as error:
        print(f"harmonia-mcp: {error}", file=sys.stderr)
        return 2
    return 0


# --- doctor --------------------------------------------------------------------------------------


def _fts5_version() -> str:
    try:
        with sqlite3.connect(":memory:") as db:
            db.execute("CREATE VIRTUAL TABLE probe USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
        return "available (porter unicode61 tokenizer)"
    except sqlite3.Error as error:
        return f"NOT available: {error}"


async def _ollama_status(host: str) -> tuple[bool, str]:
    try:
        async with httpx.AsyncClient(base_url=host, timeout=2.0) as client:
            response = await client.get("/api/version")
            response.raise_for_status()
            return True, f"answers, version {response.json().get('version', '?')}"
    except (httpx.HTTPError, ValueError) as error:
        return False, f"does not answer ({type(error).__name__}: {error})"


DOCTOR_MESSAGE = "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."


async def _ollama_report(settings: Settings) -> None:
    """Print Ollama's host and version, whether the model is pulled, one timed extraction, and the extractor."""
    from datetime import datetime

    from harmonia_mcp.extract import ExtractionError
    from harmonia_mcp.extract.ollama import OllamaExtractor

    host = settings.ollama_host if "://" in settings.ollama_host else f"http://{settings.ollama_host}"
    answers, detail = await _ollama_status(host)
    print(f"Ollama:    {host} {detail}")
    if settings.extractor == "rules":
        print("extractor: rules (HARMONIA_EXTRACTOR=rules; Ollama is not used)")
        return
    model = OllamaExtractor(
        host,
        settings.ollama_model,
        timeout_seconds=settings.ollama_timeout_seconds,
        max_retries=settings.ollama_max_retries,
    )
    try:
        availability = await model.probe() if answers else None
        print(f"model:     {availability.detail if availability else settings.ollama_model + ' (not checked)'}")
        used = "rules"
        if availability is not None and availability.ok:
            started = time.perf_counter()
            try:
                memories = await model.extract(
                    DOCTOR_MESSAGE, speaker="User", reference_time=datetime.now(settings.zone)
                )
            except ExtractionError as error:
                print(f"test:      extraction failed after {time.perf_counter() - started:.2f} s: {error.reason}")
            else:
                elapsed = time.perf_counter() - started
                print(f"test:      {len(memories)} memories in {elapsed:.2f} s from {DOCTOR_MESSAGE!r}")
                for memory in memories:
                    print(f"           [{memory.category.value}] {memory.content}")
                used = "ollama"
        until = "" if used == "ollama" else ", until Ollama and the model answer"
        print(f"extractor: {used} (HARMONIA_EXTRACTOR={settings.extractor}{until})")
    finally:
        await model.aclose()


async def _doctor(settings: Settings) -> int:
    from harmonia_mcp.store import open_store

    print(f"harmonia-mcp {__version__}")
    print(f"database:  {settings.db_path}")
    print(f"SQLite:    {sqlite3.sqlite_version}")
    print(f"FTS5:      {_fts5_version()}")
    status = 0
    try:
        async with open_store(settings.db_path) as store:
            async with store.transaction() as db, db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            print(f"schema:    version {row[0] if row else '?'} (the file opens and migrates)")
    except (sqlite3.Error, OSError, RuntimeError) as error:
        print(f"schema:    cannot open the database: {error}")
        status = 1
    await _ollama_report(settings)
    status = max(status, await _embedder_report(settings))
    print(f"time zone: {settings.timezone} (HARMONIA_TIMEZONE: 'tomorrow' resolves in it)")
    return status


async def _embedder_report(settings: Settings) -> int:
    """Print the embedder, its model and dimension, and how many memories lack a current vector."""
    from harmonia_mcp.store import open_store
    from harmonia_mcp.vectors import make_embedder

    embedder = make_embedder(settings)
    if embedder is None:
        print("embedder:  none (HARMONIA_EMBEDDER=none; search is by keyword only)")
        return 0
    from harmonia_mcp.embed import EmbeddingError

    started = time.perf_counter()
    try:
        await embedder.start()
    except EmbeddingError as error:
        print(f"embedder:  {settings.embedder} FAILED to load: {error} (search answers by keyword only)")
        return 1
    finally:
        close = getattr(embedder, "aclose", None)
        if close is not None:
            await close()
    elapsed = time.perf_counter() - started
    print(
        f"embedder:  {settings.embedder}, model {embedder.model}, {embedder.dimension} dimensions "
        f"(ready in {elapsed:.2f} s)"
    )
    try:
        async with open_store(settings.db_path) as store:
            total, missing = await store.vector_counts(embedder.model, embedder.dimension)
    except (sqlite3.Error, OSError, RuntimeError):
        return 0  # the schema line above already said why
    print(
        f"vectors:   {total - missing} of {total} memories have a current vector; {missing} wait (harmonia-mcp reindex)"
    )
    return 0


async def _reindex(settings: Settings, everything: bool) -> int:
    """Embed every memory lacking a current vector (all of them with `everything`), with a bar on a terminal."""
    from harmonia_mcp.store import open_store
    from harmonia_mcp.vectors import VectorIndex, make_embedder

    embedder = make_embedder(settings)
    if embedder is None:
        print("harmonia-mcp reindex: HARMONIA_EMBEDDER is none; set it to embedded or ollama", file=sys.stderr)
        return 2
    progress = _progress_bar if sys.stderr.isatty() else None
    async with open_store(settings.db_path) as store:
        index = VectorIndex(store, embedder)
        if not await index.load():
            print(f"harmonia-mcp reindex: the embedder cannot start: {index.failure}", file=sys.stderr)
            return 1
        if everything:
            async with store.transaction() as db:
                await store.clear_vectors(db)
        total, missing = await store.vector_counts(index.model, index.dimension)
        done = 0
        while True:
            step = await index.embed_pending(limit=256)
            done += step
            if progress is not None:
                progress(min(done, missing), missing)
            if step == 0:
                break
        _, left = await store.vector_counts(index.model, index.dimension)
    if progress is not None:
        print(file=sys.stderr)
    print(f"embedded {done} memories with {index.model}; {total - left} of {total} have a current vector")
    return 0 if left == 0 else 1


# --- import --------------------------------------------------------------------------------------


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)


async def _import(settings: Settings, file: Path, user_id: str | None) -> int:
    from harmonia_mcp.errors import HarmoniaError
    from harmonia_mcp.extract.rules import RulesExtractor
    from harmonia_mcp.server import make_limits
    from harmonia_mcp.service import MemoryService
    from harmonia_mcp.store import open_store

    try:
        document = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as error:
        print(f"harmonia-mcp import: cannot read {file}: {error}", file=sys.stderr)
        return 1
    # A bar only for a person watching; piped or logged runs get the one summary line.
    progress = _progress_bar if sys.stderr.isatty() else None
    async with open_store(settings.db_path) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        try:
            result = await service.import_memories(document, user_id=user_id, progress=progress)
        except HarmoniaError as error:
            if progress is not None:
                print(file=sys.stderr)
            print(f"harmonia-mcp import: {error}; nothing was imported", file=sys.stderr)
            return 1
    if progress is not None:
        print(file=sys.stderr)
    print(f"imported {result.imported} memories for {result.user_id}; {result.skipped} were already there")
    return 0


# --- demo ----------------------------------------------------------------------------------------


async def _demo(db_path: str | None) -> int:
    from mcp import Client

    from harmonia_mcp.child import server_parameters

    sample = json.loads(resources.files("harmonia_mcp").joinpath("data/sample_conversation.json").read_text("utf-8"))
    with tempfile.TemporaryDirectory(prefix="harmonia-demo-") as folder:
        path = db_path or str(Path(folder) / "demo.db")
        print(f"1. Starting `harmonia-mcp` as a child process over stdio (database: {path})")
        # The user's own settings carry over (the extractor, the time zone), but not their database.
        settings = {
            key: value
            for key, value in os.environ.items()
            if (key.startswith("HARMONIA_") or key == "OLLAMA_HOST") and key != "HARMONIA_DB_PATH"
        }
        async with Client(server_parameters(path, settings)) as client:
            tools = await client.list_tools()
            print(f"   tools: {', '.join(tool.name for tool in tools.tools)}")
            user, speaker, when = sample["user_id"], sample["speaker"], sample["occurred_at"]
            print(f"\n2. Storing {len(sample['messages'])} messages said by {speaker} at {when}")
            for message in sample["messages"]:
                result = await client.call_tool(
                    "store_memory", {"message": message, "user_id": user, "speaker": speaker, "occurred_at": when}
                )
                print(f"   > {message}")
                stored = (result.structured_content or {}).get("memories", [])
                for memory in stored:
                    when_text = f" @ {memory['event_time']}" if memory.get("event_time") else ""
                    print(f"     {memory['action']}: [{memory['category']}] {memory['content']}{when_text}")
                if not stored:
                    print("     (nothing durable: not stored)")
            print("\n3. Searching")
            for query in sample["searches"]:
                result = await client.call_tool("search_memories", {"query": query, "user_id": user, "limit": 3})
                hits = (result.structured_content or {}).get("results", [])
                print(f"   ? {query}")
                for hit in hits:
                    print(f"     {hit['relevance_score']:.2f}  {hit['content']}")
            print("\n4. Exporting as Markdown")
            result = await client.call_tool("export_memories", {"user_id": user, "format": "markdown"})
            print("   " + (result.structured_content or {}).get("data", "").replace("\n", "\n   "))
        print("5. Done. Plug the server into Claude Desktop with claude_desktop_config.example.json.")
    return 0
