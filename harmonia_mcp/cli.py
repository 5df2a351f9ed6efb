"""The `harmonia-mcp` command: `serve` (the default, over stdio; or SSE / streamable HTTP), `demo` and `doctor`.

The composition root: the only place that builds `Settings`. Under stdio, stdout carries the
protocol, so logs go to stderr; `demo` and `doctor` talk to a person and print to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, closing
from functools import partial
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, cast

import anyio
from pydantic import ValidationError
from pydantic_settings import SettingsError

from harmonia_mcp import __version__
from harmonia_mcp.config import Settings
from harmonia_mcp.errors import describe_validation_error
from harmonia_mcp.models import count_of

# Settings a flag can set, and the flag (config errors name the flag when it was given, else the variable).
_FLAGS = {
    "db_path": ("db", "--db"),
    "host": ("host", "--host"),
    "port": ("port", "--port"),
    "allowed_hosts": ("allowed_host", "--allowed-host"),
}
# Settings whose environment variable is not HARMONIA_<FIELD>.
_VARIABLES = {"ollama_host": "OLLAMA_HOST (or HARMONIA_OLLAMA_HOST)"}

if TYPE_CHECKING:
    from harmonia_mcp.service import MemoryService
    from harmonia_mcp.store import Store


def _overrides(arguments: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags."""
    return {
        field: getattr(arguments, flag)
        for field, (flag, _) in _FLAGS.items()
        if getattr(arguments, flag, None) is not None
    }


def _setting_name(field: str, flagged: set[str]) -> str:
    """How a person set `field`: the flag when one was given, else its environment variable."""
    if field in flagged:
        return _FLAGS[field][1]
    return _VARIABLES.get(field, f"HARMONIA_{field.upper()}")


def _configuration_error(error: Exception, flagged: set[str]) -> str:
    """A settings error in a person's words, naming the variable (`HARMONIA_TIMEZONE`) or the flag."""
    if isinstance(error, ValidationError):
        return describe_validation_error(
            error,
            # A nested value names its key or index: HARMONIA_USER_RESOLUTION_STRATEGIES['alice'].
            name=lambda loc: (
                _setting_name(str(loc[0]), flagged) + "".join(f"[{part!r}]" for part in loc[1:]) if loc else "a setting"
            ),
            schema=Settings.model_json_schema(),
        )
    # pydantic-settings' SettingsError: a value that is not valid JSON, e.g. for a dict setting.
    text = str(error)
    field = re.search(r'field "(\w+)"', text)
    if field is None:
        return text
    example = '{"alice": "version"}'
    return f"{_setting_name(field.group(1), flagged)} is not valid JSON: write an object such as {example}"


def _serve_flags() -> argparse.ArgumentParser:
    """`serve`'s flags; also accepted without the command (`harmonia-mcp --db PATH`), as README says.

    Defaults are suppressed so that a flag given before the command and one after it both count.
    """
    # No abbreviations: the bare command shares these flags with every subcommand, so a prefix such as
    # `reindex --all` would be read as --allowed-host or --allow-unauthenticated.
    flags = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS, allow_abbrev=False)
    flags.add_argument(
        "--transport",
        choices=["stdio", "sse", "streamable-http"],
        help="the MCP transport (default: stdio); streamable-http serves /mcp; sse serves /sse and /messages/ "
        "and is DEPRECATED (the MCP specification replaced HTTP+SSE with streamable HTTP; kept for old clients)",
    )
    flags.add_argument("--db", help="the SQLite file (default: HARMONIA_DB_PATH or the user data directory)")
    flags.add_argument("--host", help="HTTP transports: address to bind (default: HARMONIA_HOST or 127.0.0.1)")
    flags.add_argument("--port", type=int, help="HTTP transports: TCP port (default: HARMONIA_PORT or 8765)")
    flags.add_argument(
        "--allowed-host",
        action="append",
        metavar="HOST[:PORT|:*]",
        help="HTTP transports: a Host header to accept besides loopback (repeatable; replaces HARMONIA_ALLOWED_HOSTS)",
    )
    flags.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="HTTP transports: serve a non-loopback address without bearer tokens (unsafe; logged as a warning)",
    )
    return flags


def _db_flag(command: argparse.ArgumentParser, help: str) -> None:
    # Suppressed default: the bare command's --db (a serve flag) must not be overwritten by the subcommand's.
    command.add_argument("--db", default=argparse.SUPPRESS, help=help)


def _parser() -> argparse.ArgumentParser:
    serve_flags = _serve_flags()
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="harmonia-mcp",
        description="A local-first MCP memory server. With no command, serves MCP over stdio "
        "(and takes serve's flags, e.g. harmonia-mcp --db PATH).",
        parents=[serve_flags],
    )
    parser.add_argument("--version", action="version", version=f"harmonia-mcp {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve MCP (the default command)", parents=[serve_flags])
    # --db defaults suppressed: a top-level `harmonia-mcp --db PATH doctor` is not overwritten by None.
    demo = commands.add_parser("demo", help="run the server as a child process and show it working over stdio")
    _db_flag(demo, "the SQLite file to use (default: a temporary file, removed afterwards)")
    doctor = commands.add_parser("doctor", help="print the database, SQLite/FTS5 and Ollama status (changes nothing)")
    _db_flag(doctor, "the SQLite file to check")
    importer = commands.add_parser(
        "import", help="load a JSON export (as export_memories writes it); memories already present are skipped"
    )
    importer.add_argument("file", type=Path, help="the file to load ('-' reads standard input)")
    importer.add_argument(
        "--from",
        dest="source_format",
        choices=["json", "server-memory", "mem0", "text"],
        default="json",
        help="the file's format: json (an export of harmonia-mcp, the default), server-memory (the JSONL of "
        "@modelcontextprotocol/server-memory), mem0 (get_all output or export), text (notes or Markdown, one "
        "memory per line or bullet); imported memories keep ids derived from the source, so importing twice "
        "adds nothing",
    )
    importer.add_argument("--user-id", help="whose memories they become (default: the file's user_id)")
    importer.add_argument(
        "--skip-invalid",
        action="store_true",
        help="import the valid rows of a file that has invalid ones (default: a file with any invalid row imports "
        "nothing)",
    )
    _db_flag(importer, "the SQLite file to load into (default: HARMONIA_DB_PATH or the data directory)")
    exporter = commands.add_parser(
        "export", help="write a user's memories (JSON by default: every memory, with history and links, for import)"
    )
    exporter.add_argument("--user-id", help="whose memories (default: HARMONIA_DEFAULT_USER)")
    exporter.add_argument("--format", choices=["json", "csv", "markdown", "text"], default="json")
    exporter.add_argument("--output", "-o", type=Path, help="the file to write (default: standard output)")
    exporter.add_argument(
        "--active-only",
        action="store_true",
        help="only active memories, without history (default for json: everything, as a backup)",
    )
    _db_flag(exporter, "the SQLite file to read (default: HARMONIA_DB_PATH or the data directory)")
    forget = commands.add_parser(
        "forget-user", help="erase every memory of a user from the database file (cannot be undone)"
    )
    forget.add_argument("user", help="the user id to erase")
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _db_flag(forget, "the SQLite file (default: HARMONIA_DB_PATH or the data directory)")
    sweep = commands.add_parser("sweep", help="delete the memories whose expiry or retention time has passed")
    _db_flag(sweep, "the SQLite file (default: HARMONIA_DB_PATH or the data directory)")
    delete = commands.add_parser("delete", help="delete one memory (--purge: remove it from the file for good)")
    delete.add_argument(
        "memory_id", help="the memory's id, e.g. mem_0123456789abcdef, or its number as recall shows it, e.g. 42"
    )
    delete.add_argument("--user-id", help="whose memory it is (default: HARMONIA_DEFAULT_USER)")
    delete.add_argument("--purge", action="store_true", help="remove it, its history and its text from the file")
    _db_flag(delete, "the SQLite file (default: HARMONIA_DB_PATH or the data directory)")
    reindex = commands.add_parser(
        "reindex", help="embed the memories that lack a vector of the configured model (search by meaning)"
    )
    _db_flag(reindex, "the SQLite file (default: HARMONIA_DB_PATH or the data directory)")
    reindex.add_argument("--all", action="store_true", help="drop every stored vector first and re-embed everything")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 bad configuration or arguments)."""
    arguments = _parser().parse_args(argv)
    overrides = _overrides(arguments)
    flagged = set(overrides)
    try:
        settings = Settings(**overrides)
    except (ValidationError, SettingsError) as error:
        print(f"harmonia-mcp: invalid configuration: {_configuration_error(error, flagged)}", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stderr, level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if arguments.command == "demo":
        return anyio.run(_demo, getattr(arguments, "db", None))
    if arguments.command == "doctor":
        return anyio.run(_doctor, settings)
    if arguments.command == "import" and arguments.source_format != "json":
        return anyio.run(_import_from, settings, arguments.source_format, arguments.file, arguments.user_id)
    if arguments.command == "import":
        return anyio.run(_import, settings, arguments.file, arguments.user_id, arguments.skip_invalid)
    if arguments.command == "export":
        return anyio.run(_export, settings, arguments)
    if arguments.command == "forget-user":
        return anyio.run(_forget_user, settings, arguments.user, arguments.yes)
    if arguments.command == "sweep":
        return anyio.run(_sweep, settings)
    if arguments.command == "delete":
        return anyio.run(_delete, settings, arguments.memory_id, arguments.user_id, arguments.purge)
    if arguments.command == "reindex":
        return anyio.run(_reindex, settings, arguments.all)
    _show_startup_line(settings)
    transport: str = getattr(arguments, "transport", "stdio")
    if transport in ("sse", "streamable-http"):
        http_transport = cast(Literal["sse", "streamable-http"], transport)  # argparse choices checked it
        unauthenticated: bool = getattr(arguments, "allow_unauthenticated", False)
        return _serve_http(settings, http_transport, allow_unauthenticated=unauthenticated)
    return _serve(settings)


def _show_startup_line(settings: Settings) -> None:
    # The server's one start-up line (database, extractor, embedder; server.STARTUP_LOGGER) shows at the
    # default level too, so a host's log says what is in use; only HARMONIA_LOG_LEVEL=ERROR hides it.
    from harmonia_mcp.server import STARTUP_LOGGER

    logging.getLogger(STARTUP_LOGGER).setLevel(logging.ERROR if settings.log_level == "ERROR" else logging.INFO)


def _serve(settings: Settings) -> int:
    from harmonia_mcp.auth import TokenConfigError
    from harmonia_mcp.embed import limit_malloc_arenas
    from harmonia_mcp.server import create_server
    from harmonia_mcp.stdio import serve_stdio

    limit_malloc_arenas()  # before any thread (the store's readers, the model's worker)
    try:
        server = create_server(settings)
    except TokenConfigError as error:
        print(f"harmonia-mcp: {error}", file=sys.stderr)
        return 2
    anyio.run(serve_stdio, server)
    return 0


def _serve_http(
    settings: Settings, transport: Literal["sse", "streamable-http"], *, allow_unauthenticated: bool
) -> int:
    from harmonia_mcp.auth import TokenConfigError
    from harmonia_mcp.embed import limit_malloc_arenas
    from harmonia_mcp.remote import PortUnavailable, UnsafeConfiguration, serve_http

    limit_malloc_arenas()
    path = "/sse" if transport == "sse" else "/mcp"
    if transport == "sse":
        logging.getLogger("harmonia_mcp").warning(
            "the sse transport is deprecated by the MCP specification (replaced by streamable HTTP); "
            "it still works, but prefer --transport streamable-http for new clients"
        )

    def serving(host: str, port: int) -> None:
        # Only once the socket listens and the store is open: a refused start prints no "serving" line.
        print(f"harmonia-mcp: serving MCP over {transport} at http://{host}:{port}{path}", file=sys.stderr, flush=True)

    try:
        anyio.run(
            partial(serve_http, settings, transport, allow_unauthenticated=allow_unauthenticated, on_serving=serving)
        )
    except (UnsafeConfiguration, TokenConfigError, PortUnavailable) as error:
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
    import httpx  # only `doctor` needs it: not imported when serving (cold start)

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
    from harmonia_mcp.extract.select import model_backend

    host = settings.ollama_host if "://" in settings.ollama_host else f"http://{settings.ollama_host}"
    answers, detail = await _ollama_status(host)
    print(f"Ollama:    {host} {detail}")
    if settings.extractor == "rules":
        print("extractor: rules (HARMONIA_EXTRACTOR=rules; Ollama is not used)")
        return
    model = model_backend(settings.model_copy(update={"ollama_host": host}))
    if model.name == "openai":  # an OpenAI-compatible server instead of Ollama: probe it directly
        answers = True
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
                print(f"test:      {count_of(len(memories))} in {elapsed:.2f} s from {DOCTOR_MESSAGE!r}")
                for memory in memories:
                    print(f"           [{memory.category.value}] {memory.content}")
                used = "ollama"
        until = "" if used == "ollama" else ", until Ollama and the model answer"
        print(f"extractor: {used} (HARMONIA_EXTRACTOR={settings.extractor}{until})")
    finally:
        await model.aclose()


async def _queue_report(settings: Settings) -> None:
    """Print the background extraction queue's figures (issue 13): depth, failures, latency, newest error.

    Read through the same read-only URI as the schema line, so doctor still changes nothing.
    """
    import aiosqlite

    from harmonia_mcp.jobs import queue_stats

    mode: str = settings.extraction
    if mode == "auto":
        mode = "sync (no model)" if settings.extractor == "rules" else "async"
    uri = _read_only_uri(settings.db_path)
    if uri is None:
        print(f"queue:     {mode} (HARMONIA_EXTRACTION); no database yet")
        return
    try:
        async with aiosqlite.connect(uri, uri=True) as db:
            stats = await queue_stats(db)
    except sqlite3.Error:
        print(f"queue:     {mode} (HARMONIA_EXTRACTION); no queue in this file yet (the server would add it)")
        return
    latency = (
        f"{stats.latency_p50_seconds:g} s median, {stats.latency_p95_seconds:g} s p95 until the model's memories land"
        if stats.latency_p50_seconds is not None and stats.latency_p95_seconds is not None
        else "no job done yet"
    )
    print(
        f"queue:     {mode} (HARMONIA_EXTRACTION); {stats.pending} pending, {stats.running} running, "
        f"{stats.done} done, {stats.failed} failed; {latency}"
    )
    if stats.last_error:
        print(f"           newest error: {stats.last_error}")


def _read_only_uri(db_path: str) -> str | None:
    """A SQLite URI that reads `db_path` without changing it, or None when there is no file to read.

    A file no process has open is read as immutable (so SQLite creates no -wal/-shm files next to it);
    one with a live write-ahead log is read through it, read-only.
    """
    from urllib.parse import quote

    if db_path == ":memory:":
        return None
    path = Path(db_path).expanduser()
    if not path.exists():
        return None
    live = Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    return f"file:{quote(str(path.resolve()))}?{'mode=ro' if live else 'immutable=1'}"


def _schema_report(db_path: str) -> tuple[int, str]:
    """(exit status, the database's line) for doctor, changing nothing: no folder, file or migration is made."""
    from harmonia_mcp.store import MIGRATIONS

    if db_path == ":memory:":
        return 0, "in memory (a new, empty database each start)"
    uri = _read_only_uri(db_path)
    if uri is None:
        return 0, "does not exist; would be created (with its folder) when the server first starts"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        return 1, f"cannot be read as a SQLite database: {error}"
    current = len(MIGRATIONS)
    if version == current:
        return 0, f"schema version {version} (current)"
    if version < current:
        return 0, f"schema version {version}; the server would migrate it to {current} when it starts"
    return 1, f"schema version {version} is newer than this harmonia-mcp understands ({current}): upgrade it"


async def _doctor(settings: Settings) -> int:
    print(f"harmonia-mcp {__version__}")
    print(f"database:  {settings.db_path}")
    print(f"SQLite:    {sqlite3.sqlite_version}")
    print(f"FTS5:      {_fts5_version()}")
    status, schema = _schema_report(settings.db_path)
    print(f"schema:    {schema}")
    await _queue_report(settings)
    await _forgetting_report(settings)
    await _ollama_report(settings)
    status = max(status, await _embedder_report(settings))
    print(f"time zone: {settings.timezone} (HARMONIA_TIMEZONE: 'tomorrow' resolves in it)")
    return status


async def _embedder_report(settings: Settings) -> int:
    """Print the embedder, its model and dimension, and how many memories lack a current vector (read-only)."""
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
    uri = _read_only_uri(settings.db_path)
    if uri is None:
        return 0  # the schema line above said there is no database yet
    import aiosqlite

    from harmonia_mcp.store import VECTOR_COUNTS_SQL

    try:
        async with (
            aiosqlite.connect(uri, uri=True) as db,
            db.execute(VECTOR_COUNTS_SQL, (embedder.model, embedder.dimension)) as cursor,
        ):
            row = await cursor.fetchone()
    except sqlite3.Error:
        print("vectors:   none in this file yet (the server would add the table and embed every memory)")
        return 0
    total, missing = (int(row[0]), int(row[1])) if row else (0, 0)
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


async def _import(settings: Settings, file: Path, user_id: str | None, skip_invalid: bool) -> int:
    import shutil

    from harmonia_mcp.errors import HarmoniaError, StoreBusy
    from harmonia_mcp.extract.rules import RulesExtractor
    from harmonia_mcp.server import make_limits
    from harmonia_mcp.service import MemoryService
    from harmonia_mcp.store import open_store

    with contextlib.ExitStack() as files:
        try:
            if str(file) == "-":
                # Spooled to a temporary file (in memory up to 8 MiB): the import reads it twice, and stdin once.
                source: IO[bytes] = files.enter_context(tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024))
                shutil.copyfileobj(sys.stdin.buffer, source)
                source.seek(0)
            else:
                source = files.enter_context(file.open("rb"))
        except OSError as error:
            print(f"harmonia-mcp import: cannot read {file}: {error}", file=sys.stderr)
            return 1
        # A bar only for a person watching; piped or logged runs get the one summary line.
        progress = _progress_bar if sys.stderr.isatty() else None
        async with open_store(settings.db_path) as store:
            service = MemoryService(store, RulesExtractor(), make_limits(settings))
            try:
                result = await service.import_memories(
                    source, user_id=user_id, skip_invalid=skip_invalid, progress=progress
                )
            except StoreBusy as error:
                if progress is not None:
                    print(file=sys.stderr)
                print(
                    f"harmonia-mcp import: {error}; the batches already written stay: run the same import again "
                    "to finish it",
                    file=sys.stderr,
                )
                return 1
            except HarmoniaError as error:
                if progress is not None:
                    print(file=sys.stderr)
                print(f"harmonia-mcp import: {error}\nnothing was imported", file=sys.stderr)
                return 1
    if progress is not None:
        print(file=sys.stderr)
    already = "was" if result.skipped == 1 else "were"
    summary = f"imported {count_of(result.imported)} for {result.user_id}; {result.skipped} {already} already there"
    if result.new_ids:
        summary += f"; {result.new_ids} got new ids (their ids belong to another user in this database)"
    print(summary)
    if result.invalid:
        print(f"skipped {len(result.invalid)} invalid rows (--skip-invalid):", file=sys.stderr)
        for problem in result.invalid[:20]:
            print(f"  memories[{problem.index}]: {problem.reason}", file=sys.stderr)
    return 0


# --- export --------------------------------------------------------------------------------------


async def _export(settings: Settings, arguments: argparse.Namespace) -> int:
    from harmonia_mcp.errors import HarmoniaError
    from harmonia_mcp.extract.rules import RulesExtractor
    from harmonia_mcp.server import make_limits
    from harmonia_mcp.service import MemoryService
    from harmonia_mcp.store import open_store

    if not Path(settings.db_path).exists():
        print(f"harmonia-mcp export: no database at {settings.db_path}", file=sys.stderr)
        return 1
    everything = not arguments.active_only
    async with open_store(settings.db_path) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        try:
            result = await service.export_memories(
                user_id=arguments.user_id,
                format=arguments.format,
                include_inactive=everything,
                include_history=everything and arguments.format == "json",
            )
        except HarmoniaError as error:
            print(f"harmonia-mcp export: {error}", file=sys.stderr)
            return 1
    if arguments.output is None:
        sys.stdout.write(result.data if result.data.endswith("\n") else result.data + "\n")
    else:
        try:
            arguments.output.write_text(result.data, encoding="utf-8")
        except OSError as error:
            print(f"harmonia-mcp export: cannot write {arguments.output}: {error}", file=sys.stderr)
            return 1
        print(f"exported {result.memory_count} memories to {arguments.output}", file=sys.stderr)
    return 0


async def _forgetting_report(settings: Settings) -> None:
    """Print retention settings and forgetting counts (issue 11), read-only like the schema line."""
    from datetime import UTC, datetime, timedelta

    import aiosqlite

    from harmonia_mcp.store import EXPIRED_REASON, FORGETTING_COUNTS_SQL, forgetting_counts, to_utc_text

    users = ", ".join(f"{user} {days:g}" for user, days in settings.user_retention_days.items())
    days = f"{settings.retention_days:g} days" if settings.retention_days else "off"
    print(f"retention: {days} (HARMONIA_RETENTION_DAYS){'; per user: ' + users if users else ''}")
    uri = _read_only_uri(settings.db_path)
    if uri is None:
        print("forgotten: nothing (no database yet)")
        return
    soon = to_utc_text(datetime.now(UTC) + timedelta(days=7))
    try:
        async with (
            aiosqlite.connect(uri, uri=True) as db,
            db.execute(FORGETTING_COUNTS_SQL, (EXPIRED_REASON, soon)) as cursor,
        ):
            stats = forgetting_counts(await cursor.fetchone())
    except sqlite3.Error:
        print("forgotten: no forgetting columns in this file yet (the server would add them)")
        return
    print(
        f"forgotten: {stats['deleted']} deleted ({stats['expired']} by retention), {stats['expiring_soon']} "
        f"expire within 7 days; {stats['pinned']} pinned, {stats['archived']} archived"
    )


def _service_over(settings: Settings, store: Store) -> MemoryService:
    from harmonia_mcp.extract.rules import RulesExtractor
    from harmonia_mcp.server import make_limits
    from harmonia_mcp.service import MemoryService

    return MemoryService(store, RulesExtractor(), make_limits(settings))


# --- forgetting ---------------------------------------------------------------------------------


@asynccontextmanager
async def _offline_service(settings: Settings) -> AsyncIterator[MemoryService]:
    """A `MemoryService` over the configured file with the rules extractor, for commands run from a shell."""
    from harmonia_mcp.store import open_store

    async with open_store(settings.db_path) as store:
        yield _service_over(settings, store)


async def _sweep(settings: Settings) -> int:
    async with _offline_service(settings) as service:
        counts = await service.sweep_expired()
    print(f"expired {sum(counts.values())} memories" + "".join(f"; {user}: {n}" for user, n in counts.items()))
    return 0


async def _forget_user(settings: Settings, user: str, yes: bool) -> int:
    from harmonia_mcp.errors import HarmoniaError

    if not yes:
        if not sys.stdin.isatty():
            print(f"harmonia-mcp forget-user: pass --yes to erase {user!r} (this cannot be undone)", file=sys.stderr)
            return 2
        typed = input(f"Erase every memory of {user!r} from {settings.db_path}? Type the user id to confirm: ")
        if typed.strip() != user:
            print("harmonia-mcp forget-user: not confirmed; nothing was erased", file=sys.stderr)
            return 1
    async with _offline_service(settings) as service:
        try:
            result = await service.delete_user_memories(user, confirm=user)
        except HarmoniaError as error:
            print(f"harmonia-mcp forget-user: {error}", file=sys.stderr)
            return 1
    print(
        f"erased {result.user_id}: {result.memories} memories, {result.history_rows} history rows, "
        f"{result.links} links, {result.messages} logged messages"
    )
    return 0


async def _delete(settings: Settings, memory_id: str, user_id: str | None, purge: bool) -> int:
    from harmonia_mcp.errors import HarmoniaError

    async with _offline_service(settings) as service:
        try:
            result = await service.delete_memory(memory_id, user_id=user_id, purge=purge)
        except HarmoniaError as error:
            print(f"harmonia-mcp delete: {error}", file=sys.stderr)
            return 1
    print(f"{'purged' if result.purged else 'deleted'} {result.memory_id}")
    return 0


async def _import_from(settings: Settings, source_format: str, file: Path, user_id: str | None) -> int:
    """`import --from server-memory|mem0|text FILE`: convert (harmonia_mcp/importers.py), then the JSON import."""
    from datetime import datetime

    from harmonia_mcp import importers
    from harmonia_mcp.errors import HarmoniaError
    from harmonia_mcp.extract.rules import RulesExtractor
    from harmonia_mcp.extract.select import open_extractor
    from harmonia_mcp.server import make_limits
    from harmonia_mcp.service import MemoryService
    from harmonia_mcp.store import open_store, utc_now

    try:
        text = (sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"harmonia-mcp import: cannot read {file}: {error}", file=sys.stderr)
        return 1
    async with open_store(settings.db_path) as store:
        service = MemoryService(store, RulesExtractor(), make_limits(settings))
        try:
            owner = service.user(user_id)
            if source_format == "server-memory":
                conversions = [importers.from_server_memory(text, owner, now=utc_now())]
            elif source_format == "mem0":
                conversions = importers.from_mem0(
                    text, user_id and owner, default_user=settings.default_user, now=utc_now()
                )
            else:
                async with open_extractor(settings) as extractor:
                    reference = datetime.now(settings.zone)
                    conversions = [await importers.from_text(text, owner, extractor, reference_time=reference)]
            for conversion in conversions:
                result = await service.import_memories(json.dumps(conversion.document), user_id=conversion.user_id)
                mapped = ", ".join(f"{count} {kind}" for kind, count in conversion.mapped.items()) or "nothing"
                print(
                    f"{source_format}: mapped {mapped}; imported {result.imported} memories for {result.user_id}, "
                    f"{result.skipped} were already there; skipped {len(conversion.skipped)} items"
                )
                for reason in conversion.skipped:
                    print(f"  skipped {reason}")
        except HarmoniaError as error:
            print(f"harmonia-mcp import: {error}; nothing more was imported", file=sys.stderr)
            return 1
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
