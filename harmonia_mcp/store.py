"""SQLite storage: schema and migrations, WAL, the FTS5 external-content index, CRUD, soft delete, history.

One database file holds every user's memories; every query here takes a `user_id` and is scoped by it.
Writes go through one connection behind a lock (one writer, as SQLite wants); reads use a small pool of
read-only connections, which WAL lets proceed while a write is in flight.

The FTS5 table `memories_fts` is an external-content table over `memories(content, entities, tags)`,
kept in sync by triggers in the shape sqlite-utils' `enable_fts(create_triggers=True)` emits
(https://www.sqlite.org/fts5.html#external_content_tables).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, cast

import aiosqlite
import anyio

from harmonia_mcp import spans
from harmonia_mcp.errors import MemoryNotFound, QueryTooExpensive, StoreBusy
from harmonia_mcp.fairqueue import FairQueue
from harmonia_mcp.models import Category, ExtractedMemory, Memory

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

BUSY_TIMEOUT_MS = 5000
# Waits of BUSY_TIMEOUT_MS for another process's write lock before a write gives up with `StoreBusy`.
BUSY_RETRIES = 3
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
# The columns of the full-text index (from migration _M003_SEARCH_CONTEXT on), and their bm25() weights: a word
# in the memory's own sentence counts most, then its entities, the message it came from, the speaker's name,
# the conversation context and the tags. Chosen on the LoCoMo dev split by field, not by question (docs/search.md).
# The last column, `owner_token` (from migration _M004_FTS_OWNER on), holds one token naming the memory's user
# (`owner_token`), so a MATCH can be limited to one user inside the index; its weight 0 keeps it out of ranking.
FTS_COLUMNS = ("content", "entities", "tags", "source_message", "speaker", "context", "owner_token")
BM25_WEIGHTS = (10.0, 3.0, 1.0, 5.0, 2.0, 1.0, 0.0)
# Frozen: the index columns migration 4 creates (FTS_COLUMNS may grow in a later migration).
_M004_FTS_COLUMNS = ("content", "entities", "tags", "source_message", "speaker", "context", "owner_token")
# SQL for `owner_token(user_id)`, the expression of the generated column `memories.owner_token`.
OWNER_TOKEN_SQL = "'u' || hex(user_id) || '0'"

DateField = Literal["created_at", "event_time"]
# How many later messages of a conversation may carry a message in their context: at least the service's
# CONTEXT_MESSAGES (2); the hidden-span lookups look this far (docs/forgetting.md).
CONTEXT_REACH = 4
# Imported memories (no message_id) are grouped by their source text, looked up by an index on its start.
_SOURCE_KEY_CHARS = 64
# Search returns are counted in memory and written at most this often (`Store.record_access`).
ACCESS_FLUSH_SECONDS = 5.0
# The source of the `deleted` history row that retention writes.
EXPIRED_REASON = "expired (retention)"
# doctor's and Store.forgetting_stats's counts (parameters: EXPIRED_REASON, the "soon" UTC time), over every user.
FORGETTING_COUNTS_SQL = (
    "SELECT (SELECT count(*) FROM memories WHERE pinned = 1 AND status = 'active'), "
    "(SELECT count(*) FROM memories WHERE archived = 1 AND status = 'active'), "
    "(SELECT count(*) FROM memories WHERE status = 'deleted'), "
    "(SELECT count(*) FROM memory_history WHERE action = 'deleted' AND source_message = ?), "
    "(SELECT count(*) FROM memories WHERE status = 'active' AND pinned = 0 AND expires_at IS NOT NULL "
    "AND expires_at <= ?)"
)
FORGETTING_COUNT_NAMES = ("pinned", "archived", "deleted", "expired", "expiring_soon")


# doctor's and Store.vector_counts's figures (parameters: model, dimension): memories that should have a vector,
# and how many of them lack one of that model and dimension.
VECTOR_COUNTS_SQL = (
    "SELECT count(*), count(*) FILTER (WHERE v.rowid IS NULL OR v.model != ? OR v.dimension != ?) "
    "FROM memories m LEFT JOIN memory_vectors v ON v.rowid = m.rowid "
    "WHERE m.status IN ('active', 'superseded')"
)


def forgetting_counts(row: Sequence[Any] | None) -> dict[str, int]:
    """`FORGETTING_COUNTS_SQL`'s one row as {name: count}."""
    if row is None:
        return dict.fromkeys(FORGETTING_COUNT_NAMES, 0)
    return dict(zip(FORGETTING_COUNT_NAMES, (int(value) for value in row), strict=True))


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string with microseconds ("2026-01-02T03:04:05.000006+00:00")."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def to_utc_text(moment: datetime) -> str:
    """`moment` (timezone-aware) in the same ISO-8601 UTC form as `utc_now`, so strings compare as times."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def new_memory_id() -> str:
    """`mem_` followed by 16 random hex characters."""
    return "mem_" + secrets.token_hex(8)


def derived_memory_id(user_id: str, memory_id: str) -> str:
    """The id a memory imported into `user_id` gets when `memory_id` belongs to another user: `mem_` and the
    first 16 hex digits of SHA-256 over both, so the same import always derives the same id."""
    return "mem_" + hashlib.sha256(f"{user_id}\0{memory_id}".encode()).hexdigest()[:16]


def owner_token(user_id: str) -> str:
    """The one FTS5 token that stands for `user_id` in the index's `owner_token` column ("writer" -> "u7772697465720").

    "u", the UTF-8 bytes of `user_id` in upper-case hex, then "0": only letters and digits, so unicode61 keeps any
    user id as exactly one token, and a final digit, so the porter stemmer (whose suffixes all end in a letter)
    never shortens it into another user's token. Must equal `OWNER_TOKEN_SQL` (SQLite's `hex()` of TEXT is its
    UTF-8 bytes, upper case).
    """
    return "u" + user_id.encode("utf-8").hex().upper() + "0"


def owned_match(user_id: str, match: str) -> str:
    """The FTS5 expression `match` limited, inside the index, to the memories of `user_id`.

    Why: FTS5 would otherwise find and bm25-score the matching rows of every user before SQL drops the other
    users' rows; callers keep their `user_id = ?` condition too, so isolation never rests on the index alone.
    """
    return f'owner_token : "{owner_token(user_id)}" AND ({match})'


# --- migrations --------------------------------------------------------------------------------

# Each migration is one SQL script, applied in its own transaction.
_M001_INITIAL = f"""
        CREATE TABLE memories (
            rowid INTEGER PRIMARY KEY,
            memory_id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL,
            content TEXT NOT NULL,
            category TEXT NOT NULL,
            confidence REAL NOT NULL,
            entities TEXT NOT NULL DEFAULT '[]',
            tags TEXT NOT NULL DEFAULT '[]',
            event_time TEXT,
            event_time_utc TEXT,
            source_message TEXT,
            speaker TEXT,
            session_id TEXT,
            metadata TEXT NOT NULL DEFAULT '{{}}',
            extractor TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'superseded', 'deleted')),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX memories_user_status_created ON memories (user_id, status, created_at);
        CREATE INDEX memories_user_status_event ON memories (user_id, status, event_time_utc);

        CREATE VIRTUAL TABLE memories_fts USING fts5(
            content, entities, tags,
            content='memories', content_rowid='rowid',
            tokenize='{FTS_TOKENIZER}'
        );
        CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
            INSERT INTO memories_fts (rowid, content, entities, tags)
            VALUES (new.rowid, new.content, new.entities, new.tags);
        END;
        CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, content, entities, tags)
            VALUES ('delete', old.rowid, old.content, old.entities, old.tags);
        END;
        CREATE TRIGGER memories_au AFTER UPDATE OF content, entities, tags ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, content, entities, tags)
            VALUES ('delete', old.rowid, old.content, old.entities, old.tags);
            INSERT INTO memories_fts (rowid, content, entities, tags)
            VALUES (new.rowid, new.content, new.entities, new.tags);
        END;

        CREATE TABLE memory_history (
            history_id INTEGER PRIMARY KEY,
            memory_id TEXT NOT NULL REFERENCES memories (memory_id),
            user_id TEXT NOT NULL,
            action TEXT NOT NULL
                CHECK (action IN ('created', 'updated', 'merged', 'superseded', 'deleted', 'restored')),
            old_content TEXT,
            new_content TEXT,
            source_message TEXT,
            changed_at TEXT NOT NULL
        );
        CREATE INDEX memory_history_memory ON memory_history (memory_id);
"""


def _fts_insert_trigger(names: str, new_values: str, *, deferrable: bool) -> str:
    """The `memories_ai` trigger that indexes each inserted row, as SQL; `deferrable` adds its WHEN (see
    `_M010_DEFERRED_INDEX`)."""
    when = " WHEN NOT EXISTS (SELECT 1 FROM fts_deferred)" if deferrable else ""
    return f"""CREATE TRIGGER memories_ai AFTER INSERT ON memories{when} BEGIN
            INSERT INTO memories_fts (rowid, {names}) VALUES (new.rowid, {new_values});
        END;"""


def _rebuild_fts_index(
    columns: Sequence[str],
    *,
    update_of: Sequence[str],
    content: str = "memories",
    values: Mapping[str, str] | None = None,
    deferrable: bool = False,
) -> str:
    """SQL that replaces `memories_fts` and its sync triggers with an index over `columns`, then fills it.

    The trigger on update fires when any of `update_of` changes. A migration passes its own frozen column
    lists, so what it does never changes when `FTS_COLUMNS` does. `content` is the table (or view) FTS5 reads
    the indexed text back from (for highlight(), snippet() and 'rebuild'); `values` maps a column to the SQL
    expression over the row (`{row}.x`) that the triggers index for it, which must agree with `content`.
    `deferrable`: the insert trigger skips rows while `fts_deferred` has a row (migration 10 on: a later
    rebuild must pass True, or the rows `Store.import_rows` writes are indexed twice, by the trigger and by it).
    """
    names = ", ".join(columns)
    expressions = {column: (values or {}).get(column, "{row}." + column) for column in columns}
    new_values = ", ".join(expressions[column].format(row="new") for column in columns)
    old_values = ", ".join(expressions[column].format(row="old") for column in columns)
    return f"""
        DROP TRIGGER memories_ai;
        DROP TRIGGER memories_ad;
        DROP TRIGGER memories_au;
        DROP TABLE memories_fts;
        CREATE VIRTUAL TABLE memories_fts USING fts5(
            {names},
            content='{content}', content_rowid='rowid',
            tokenize='{FTS_TOKENIZER}'
        );
        {_fts_insert_trigger(names, new_values, deferrable=deferrable)}
        CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, {names}) VALUES ('delete', old.rowid, {old_values});
        END;
        CREATE TRIGGER memories_au AFTER UPDATE OF {", ".join(update_of)} ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, {names}) VALUES ('delete', old.rowid, {old_values});
            INSERT INTO memories_fts (rowid, {names}) VALUES (new.rowid, {new_values});
        END;
        INSERT INTO memories_fts (memories_fts) VALUES ('rebuild');
"""


# Links between memories that reconciliation writes (conflicts.py): `supersedes` points from a newer
# version to the memory it replaced, `related` from a new memory to one it complements.
_M002_LINKS = """
        CREATE TABLE memory_links (
            link_id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            from_id TEXT NOT NULL REFERENCES memories (memory_id),
            to_id TEXT NOT NULL REFERENCES memories (memory_id),
            kind TEXT NOT NULL CHECK (kind IN ('supersedes', 'related')),
            created_at TEXT NOT NULL,
            UNIQUE (from_id, to_id, kind)
        );
        CREATE INDEX memory_links_to ON memory_links (to_id);
"""


# Search context (issue 6): the full-text index also covers the message a memory came from, the speaker and
# the conversation context (the messages said just before it), and a bounded log of recent messages supplies
# that context. Indexing a passage with its surrounding text is "contextual retrieval" (Anthropic, 2024,
# https://www.anthropic.com/news/contextual-retrieval); on LoCoMo it lifts recall@10 the most (docs/search.md).
# Frozen: what migration 3 indexes must not change when FTS_COLUMNS does.
_M003_FTS_COLUMNS = ("content", "entities", "tags", "source_message", "speaker", "context")
_M003_SEARCH_CONTEXT = """
        ALTER TABLE memories ADD COLUMN message_id INTEGER;
        ALTER TABLE memories ADD COLUMN context TEXT;
        CREATE INDEX memories_message ON memories (message_id) WHERE message_id IS NOT NULL;

        CREATE TABLE messages (
            message_id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL,
            session_id TEXT,
            speaker TEXT,
            text TEXT NOT NULL,
            occurred_at_utc TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX messages_conversation ON messages (user_id, session_id, message_id);

""" + _rebuild_fts_index(_M003_FTS_COLUMNS, update_of=_M003_FTS_COLUMNS)

# The owner in the index (issue: scale): FTS5 knows nothing of `user_id`, so a MATCH walked and bm25-scored the
# matching rows of every user before the join dropped the other users' (22 ms per reconciliation candidate query
# and 15 ms per search at 191,000 memories, docs/benchmarks.md). `owner_token` is a virtual generated column
# (computed on read, stored only in the index) that the external-content table reads like any other column.
_M004_FTS_OWNER = f"""
        ALTER TABLE memories ADD COLUMN owner_token TEXT GENERATED ALWAYS AS ({OWNER_TOKEN_SQL}) VIRTUAL;

""" + _rebuild_fts_index(_M004_FTS_COLUMNS, update_of=(*_M003_FTS_COLUMNS, "user_id"))

# Search by meaning (issue 9): one vector per memory, keyed by the memory's rowid, with the model that made it and
# its dimension, so vectors of two models never mix. Deleting the memory row removes its vector (trigger, so it
# holds whatever `PRAGMA foreign_keys` says); rewriting what the memory says drops its vector, which leaves the
# memory "lacking a current vector": the durable queue that `Store.unembedded` reads is exactly those rows.
_M005_VECTORS = """
        CREATE TABLE memory_vectors (
            rowid INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            model TEXT NOT NULL,
            dimension INTEGER NOT NULL,
            vector BLOB NOT NULL
        );
        CREATE INDEX memory_vectors_user_model ON memory_vectors (user_id, model);
        CREATE TRIGGER memory_vectors_ad AFTER DELETE ON memories BEGIN
            DELETE FROM memory_vectors WHERE rowid = old.rowid;
        END;
        CREATE TRIGGER memory_vectors_au AFTER UPDATE OF content, category, user_id ON memories BEGIN
            DELETE FROM memory_vectors WHERE rowid = old.rowid;
        END;
"""

# Forgetting (issue 11, docs/forgetting.md). A deleted memory's part of its source message (`hidden_span`) is
# hidden from the other memories that show or index that message: `source_redacted` and `context_redacted` are
# the source message and conversation context with the deleted memories' spans cut out (NULL: nothing hidden),
# and the index reads them through the view `memories_indexed`, so search, highlights and snippets never see
# the hidden text, while the raw columns keep it for restore_memory. Also: pin, importance (0-1, NULL is
# neutral), archive, an expiry time (UTC) and the access counter of search hits.
# A later migration that rebuilds the index must keep reading through the view, with these two arguments of
# `_rebuild_fts_index` (and "source_redacted", "context_redacted" in its `update_of`), or deleted text returns.
FTS_CONTENT = "memories_indexed"
FTS_VALUES = {
    "source_message": "coalesce({row}.source_redacted, {row}.source_message)",
    "context": "coalesce({row}.context_redacted, {row}.context)",
}
_M006_FORGETTING_COLUMNS = (*_M004_FTS_COLUMNS,)
_M006_FORGETTING = """
        ALTER TABLE memories ADD COLUMN hidden_span TEXT;
        ALTER TABLE memories ADD COLUMN source_redacted TEXT;
        ALTER TABLE memories ADD COLUMN context_redacted TEXT;
        ALTER TABLE memories ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE memories ADD COLUMN importance REAL;
        ALTER TABLE memories ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE memories ADD COLUMN expires_at TEXT;
        ALTER TABLE memories ADD COLUMN access_count INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE memories ADD COLUMN last_accessed_at TEXT;
        CREATE INDEX memories_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;
        CREATE INDEX memories_conversation ON memories (user_id, session_id, message_id)
            WHERE message_id IS NOT NULL;
        CREATE INDEX memories_imported_source ON memories (user_id, substr(source_message, 1, 64))
            WHERE message_id IS NULL;
        CREATE VIEW memories_indexed AS
            SELECT rowid, content, entities, tags, coalesce(source_redacted, source_message) AS source_message,
                speaker, coalesce(context_redacted, context) AS context, owner_token
            FROM memories;
""" + _rebuild_fts_index(
    _M006_FORGETTING_COLUMNS,
    update_of=(*_M003_FTS_COLUMNS, "user_id", "source_redacted", "context_redacted"),
    content=FTS_CONTENT,
    values=FTS_VALUES,
)

# The durable background extraction queue (issue 13, harmonia_mcp/jobs.py): one row per message waiting for, or
# done with, the local model. `provisional` and `result` are JSON lists of memory ids (the rules' memories stored
# at once, and what the model's memories became).
_M007_JOBS = """
        CREATE TABLE extraction_jobs (
            job_id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
            message TEXT NOT NULL,
            speaker TEXT NOT NULL,
            session_id TEXT,
            metadata TEXT,
            reference_time TEXT NOT NULL,
            zone TEXT,
            strategy TEXT NOT NULL,
            message_id INTEGER,
            context TEXT,
            provisional TEXT NOT NULL DEFAULT '[]',
            result TEXT NOT NULL DEFAULT '[]',
            extractor TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            not_before TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX extraction_jobs_due ON extraction_jobs (status, not_before);

        -- LLM-assisted reconciliation: what the model said about a pair the rules could not classify.
        CREATE TABLE reconciliation_judgments (
            judgment_id INTEGER PRIMARY KEY,
            job_id INTEGER REFERENCES extraction_jobs (job_id),
            user_id TEXT NOT NULL,
            memory_id TEXT NOT NULL,
            other_memory_id TEXT NOT NULL,
            relation TEXT NOT NULL,
            reason TEXT NOT NULL,
            judge TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX reconciliation_judgments_job ON reconciliation_judgments (job_id);
"""

# Time order (issue 10): when the message a memory came from was said (UTC), so that reconciliation can let
# the later of two conflicting facts be the current one, whatever order they were stored in (conflicts.py).
# Memories stored before it have NULL, read as their created_at.
_M008_OCCURRED_AT = """
        ALTER TABLE memories ADD COLUMN occurred_at TEXT;
"""

# Search totals (issue 14): the memories a default search leaves out (not active, or archived), by user, so the
# exact total of a two-stage search is FTS5's own count of the match less the few of these that match, instead
# of a join of every matching row (`Store._count_matches`). The WHERE must stay `_UNSEARCHED` word for word.
_UNSEARCHED = "status != 'active' OR archived = 1"
_M009_SEARCH_TOTALS = f"""
        CREATE INDEX memories_unsearched ON memories (user_id) WHERE {_UNSEARCHED};
"""

# Batch indexing (issue 14, the import): the insert trigger indexed each row in its own statement, and FTS5 writes
# its pending terms to disk at every statement savepoint, so an import of 500 rows wrote 500 tiny segments and
# merged them (about 30 us a row of the import's 55; one INSERT ... SELECT of the same rows costs 5). While
# `fts_deferred` has a row the trigger skips, and `Store.import_rows` indexes the batch itself in one statement
# before it empties the table, all in the batch's own transaction: a crash rolls back rows, index and flag
# together, and no other connection ever sees the flag (it is only written inside a write transaction).
_M010_COLUMNS = _M006_FORGETTING_COLUMNS  # frozen: what migration 6's index holds
_M010_NEW_VALUES = ", ".join(FTS_VALUES.get(column, "{row}." + column).format(row="new") for column in _M010_COLUMNS)
_M010_DEFERRED_INDEX = f"""
        CREATE TABLE fts_deferred (since INTEGER NOT NULL);
        DROP TRIGGER memories_ai;
        {_fts_insert_trigger(", ".join(_M010_COLUMNS), _M010_NEW_VALUES, deferrable=True)}
"""

# Memory numbers (issue 15): each memory also gets its user's next number (1, 2, 3, ...), which `recall`'s block
# shows as "#42" in place of an id (3-4 tokens in cl100k against 10 for `mem_3f2a9c0b`) and every tool taking a memory
# id accepts (`Store.memory_id_by_number`). `memory_numbers` holds each user's last number given, so a number is
# never given twice, even after its memory is purged: a stale "#42" is not found rather than naming another
# memory. The trigger numbers every insert, whichever statement made it; updating `number` fires no other
# trigger (theirs are AFTER UPDATE OF other columns). Existing memories are numbered in the order they were stored.
_M011_MEMORY_NUMBERS = """
        ALTER TABLE memories ADD COLUMN number INTEGER;
        WITH numbered AS (
            SELECT rowid AS id, row_number() OVER (PARTITION BY user_id ORDER BY rowid) AS n FROM memories
        )
        UPDATE memories SET number = numbered.n FROM numbered WHERE numbered.id = memories.rowid;
        CREATE TABLE memory_numbers (user_id TEXT PRIMARY KEY, last_number INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO memory_numbers (user_id, last_number) SELECT user_id, max(number) FROM memories GROUP BY user_id;
        CREATE UNIQUE INDEX memories_user_number ON memories (user_id, number);
        CREATE TRIGGER memories_number AFTER INSERT ON memories BEGIN
            INSERT INTO memory_numbers (user_id, last_number) VALUES (new.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET last_number = last_number + 1;
            UPDATE memories SET number = (SELECT last_number FROM memory_numbers WHERE user_id = new.user_id)
                WHERE rowid = new.rowid;
        END;
"""

# The user's own name (issue 9): the memories that say it, found without reading the user's other memories, so that
# search can name the user as their memories do (`search.as_user_subject`, `Store.own_names`). GLOB, not LIKE: it
# is case-sensitive whatever `PRAGMA case_sensitive_like` says, and these are the extractors' exact words. The
# WHERE must stay `_OWN_NAMES` word for word (SQLite uses a partial index only for a query that repeats its terms).
_OWN_NAMES = (
    "status = 'active' AND (content GLOB 'User''s name is *' OR content GLOB 'User''s full name is *' "
    "OR content GLOB 'User goes by *' OR content GLOB 'User''s nickname is *')"
)
_M012_OWN_NAMES = f"""
        CREATE INDEX memories_own_names ON memories (user_id, updated_at) WHERE {_OWN_NAMES};
"""

# Append only; `PRAGMA user_version` is the number of migrations applied.
MIGRATIONS: Sequence[str] = (
    _M001_INITIAL,
    _M002_LINKS,
    _M003_SEARCH_CONTEXT,
    _M004_FTS_OWNER,
    _M005_VECTORS,
    _M006_FORGETTING,
    _M007_JOBS,
    _M008_OCCURRED_AT,
    _M009_SEARCH_TOTALS,
    _M010_DEFERRED_INDEX,
    _M011_MEMORY_NUMBERS,
    _M012_OWN_NAMES,
)

LinkKind = Literal["supersedes", "related"]


async def migrate(db: aiosqlite.Connection) -> int:
    """Apply the migrations `db` has not had yet, each in its own transaction; return the schema version.

    Raises:
        RuntimeError: the file was written by a newer harmonia-mcp (its version is above ours).
    """
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this harmonia-mcp understands ({len(MIGRATIONS)}); "
            "upgrade harmonia-mcp"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # One script so that executescript (which commits first) cannot split the transaction.
        try:
            await db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        logger.info("applied migration %d", number)
    return len(MIGRATIONS)


# --- queries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryFilter:
    """What a list, search or export admits. Dates are timezone-aware; `to_date` is exclusive."""

    category: Category | None = None
    from_date: datetime | None = None
    to_date: datetime | None = None
    date_field: DateField = "created_at"
    min_confidence: float | None = None
    session_id: str | None = None
    include_inactive: bool = False
    # Superseded memories (older versions) but not deleted ones; `include_inactive` admits both.
    include_superseded: bool = False
    # Every one of these tags (compared ignoring case); empty admits any.
    tags: tuple[str, ...] = ()
    max_confidence: float | None = None
    # Archived memories (kept, but out of search, lists and exports by default).
    include_archived: bool = False

    def where(self, user_id: str, alias: str = "m") -> tuple[str, list[Any]]:
        """The SQL condition (over table alias `alias`) and its parameters."""
        clauses = [f"{alias}.user_id = ?"]
        params: list[Any] = [user_id]
        if not self.include_inactive:
            if self.include_superseded:
                clauses.append(f"{alias}.status IN ('active', 'superseded')")
            else:
                clauses.append(f"{alias}.status = 'active'")
        if not self.include_archived and not self.include_inactive:
            clauses.append(f"{alias}.archived = 0")
        if self.category is not None:
            clauses.append(f"{alias}.category = ?")
            params.append(self.category.value)
        column = f"{alias}.created_at" if self.date_field == "created_at" else f"{alias}.event_time_utc"
        if self.from_date is not None:
            clauses.append(f"{column} >= ?")
            params.append(to_utc_text(self.from_date))
        if self.to_date is not None:
            clauses.append(f"{column} < ?")
            params.append(to_utc_text(self.to_date))
        if self.min_confidence is not None:
            clauses.append(f"{alias}.confidence >= ?")
            params.append(self.min_confidence)
        if self.session_id is not None:
            clauses.append(f"{alias}.session_id = ?")
            params.append(self.session_id)
        if self.max_confidence is not None:
            clauses.append(f"{alias}.confidence <= ?")
            params.append(self.max_confidence)
        for tag in self.tags:
            clauses.append(f"EXISTS (SELECT 1 FROM json_each({alias}.tags) WHERE lower(json_each.value) = ?)")
            params.append(tag.lower())
        return " AND ".join(clauses), params


_SORT_COLUMNS = {
    "created_at": "m.created_at",
    "updated_at": "m.updated_at",
    "event_time": "m.event_time_utc",
    "confidence": "m.confidence",
}

_MEMORY_COLUMNS = (
    "m.memory_id, m.user_id, m.content, m.category, m.confidence, m.entities, m.tags, m.event_time, "
    "coalesce(m.source_redacted, m.source_message) AS source_message, m.speaker, m.session_id, m.metadata, "
    "m.extractor, m.status, m.created_at, m.updated_at, m.pinned, m.importance, m.archived, m.expires_at, "
    "m.access_count, m.last_accessed_at, m.occurred_at"
)


def _row_to_memory(row: sqlite3.Row) -> Memory:
    return Memory(
        memory_id=row["memory_id"],
        user_id=row["user_id"],
        content=row["content"],
        category=Category(row["category"]),
        confidence=row["confidence"],
        entities=json.loads(row["entities"]),
        tags=json.loads(row["tags"]),
        event_time=row["event_time"],
        source_message=row["source_message"],
        speaker=row["speaker"],
        session_id=row["session_id"],
        metadata=json.loads(row["metadata"]),
        extractor=row["extractor"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        occurred_at=row["occurred_at"],
        pinned=bool(row["pinned"]),
        importance=row["importance"],
        archived=bool(row["archived"]),
        expires_at=row["expires_at"],
        access_count=row["access_count"],
        last_accessed_at=row["last_accessed_at"],
    )


@dataclass(frozen=True)
class NewMemory:
    """Everything needed to insert one memory."""

    user_id: str
    extracted: ExtractedMemory
    extractor: str
    source_message: str | None = None
    speaker: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] | None = None
    # The `messages` row this memory came from, and the conversation just before it (indexed for search).
    message_id: int | None = None
    context: str | None = None
    # When the message was said, UTC ISO-8601 (`to_utc_text`); decides which of two conflicting facts is current.
    occurred_at: str | None = None


@dataclass(frozen=True)
class FullTextHit:
    """A row of a full-text search.

    `bm25` is FTS5's weighted `bm25()` (lower is better); `relevance` is the 0-1 score of `Ranking`;
    `highlights` are the memory's content with matched words in [brackets], then, when the message it came
    from matched, a snippet of that message.
    """

    memory: Memory
    bm25: float
    relevance: float
    highlights: list[str]


@dataclass(frozen=True)
class Ranking:
    """How relevance is computed from bm25, recency and category (the formula is in docs/search.md).

    relevance = (bm25 / best bm25 of the query) * repeat_penalty ** (n - 1)
                * (1 - recency_weight + recency_weight * 0.5 ** (age_days / half_life_days))
                * (1 if no boost_category or the memory is in it, else 1 - category_weight)

    where n is the memory's rank among the hits that came from the same message, and age is measured from
    the memory's `updated_at`. Every factor lies in 0-1, so relevance does too.

    Pinned and important memories (docs/forgetting.md): before that division, a memory's bm25 is multiplied
    by 1 + pin_weight * b, with b = 1 when pinned, else clamp(2 * (importance - 0.5), 0, 1) (importance unset
    counts 0.5, so b = 0): at most a 25% stronger match, never more, and nothing changes for memories that
    are neither pinned nor above 0.5 importance.
    """

    half_life_days: float = 30.0
    recency_weight: float = 0.2
    category_weight: float = 0.3
    repeat_penalty: float = 0.5
    pin_weight: float = 0.25


# Two-stage ranking (issue 14, docs/search.md): a relevance-ordered search ranks only FTS5's this many best rows
# by bm25 (`Store._two_stage_page`; what that makes approximate is written there); pages that end beyond
# MAX_SEARCH_CANDIDATES run the one-statement exact query over every match.
SEARCH_CANDIDATES = 200
MAX_SEARCH_CANDIDATES = 12_800

# The ranking query of `search`, over a `hits` subquery of (rowid, bm25_strength, pin_boost, message_group,
# category, updated_at, sort_value): relevance per `Ranking` (best score, rank within a message, total by window
# functions), ordered and paged. `_EXACT_HITS` is every match (bm25() may only be called where the FTS table is
# queried, so it is taken there); `_TWO_STAGE_SQL` takes its hits from FTS5's best rows (`window_rows`).
# CROSS JOIN keeps the FTS5 match (or the candidate list) as the outer loop: without statistics the planner
# may otherwise walk the user's index and probe the FTS table per row, seconds instead of milliseconds at 100k.
_HIT_COLUMNS = """(CASE WHEN m.pinned = 1 THEN 1.0
                        ELSE min(1.0, max(0.0, (coalesce(m.importance, 0.5) - 0.5) * 2.0)) END) AS pin_boost,
                    coalesce(m.message_id, -m.rowid) AS message_group, m.category AS category,
                    m.updated_at AS updated_at, {sort_value} AS sort_value"""
_EXACT_HITS = (
    "SELECT m.rowid AS rowid, -bm25(memories_fts, "
    + ", ".join(str(weight) for weight in BM25_WEIGHTS)
    + ") AS bm25_strength, "
    + _HIT_COLUMNS
    + " FROM memories_fts CROSS JOIN memories m ON m.rowid = memories_fts.rowid"
    " WHERE memories_fts MATCH ? AND {where}"
)
_RANKED_SQL = """
            WITH hits AS ({hits}), boosted AS (
                SELECT *, bm25_strength * (1.0 + ? * pin_boost) AS strength FROM hits
            ), scored AS (
                SELECT rowid, strength, bm25_strength, sort_value, count(*) OVER () AS total,
                    coalesce(strength / nullif(max(strength) OVER (), 0), 1.0)
                    * pow(?, row_number() OVER (PARTITION BY message_group ORDER BY strength DESC, rowid DESC) - 1)
                    * (1.0 - ? + ? * pow(0.5, max(0.0, julianday(?) - julianday(updated_at)) / ?))
                    * (CASE WHEN ? IS NULL OR category = ? THEN 1.0 ELSE 1.0 - ? END) AS relevance
                FROM boosted
            )
            SELECT rowid, strength, bm25_strength, relevance, total FROM scored ORDER BY {order} LIMIT ? OFFSET ?
"""

_BM25_SQL = "bm25(memories_fts, " + ", ".join(str(weight) for weight in BM25_WEIGHTS) + ")"
# Both stages of `_two_stage_page` in one statement: `window_rows` is FTS5's `window` strongest rows by raw bm25
# (ties to the newest insert), materialized so that FTS5 scores the match once; the ranking formula then runs
# over those that pass `{where}`, and `window_count` says how many the window held. One statement rather than
# two with a JSON list between them: 0.3 ms less per search at 10,000 memories (docs/benchmarks.md, issue 14).
_TWO_STAGE_SQL = _RANKED_SQL.format(
    hits="SELECT m.rowid AS rowid, c.strength AS bm25_strength, "
    + _HIT_COLUMNS.format(sort_value="NULL")
    + " FROM window_rows c CROSS JOIN memories m ON m.rowid = c.rowid WHERE {where}",
    order="relevance DESC, rowid DESC",
)
_TWO_STAGE_SQL = _TWO_STAGE_SQL.replace(
    "WITH hits AS",
    f"WITH window_rows AS MATERIALIZED (SELECT rowid, -{_BM25_SQL} AS strength FROM memories_fts "
    "WHERE memories_fts MATCH ? ORDER BY strength DESC, rowid DESC LIMIT ?), hits AS",
    1,
).replace(
    "SELECT rowid, strength, bm25_strength, relevance, total FROM scored",
    "SELECT rowid, strength, bm25_strength, relevance, total, (SELECT count(*) FROM window_rows) AS window_count, "
    "(SELECT min(strength) FROM window_rows) AS window_floor FROM scored",
    1,
)

# Readers (issue 12): enough read-only connections that one slow search does not stall every other user's
# reads, few enough that each still gets a CPU share on a small machine. SQLite releases the GIL while it
# steps a statement, so the connections' threads do run in parallel.
READ_CONNECTIONS = 4
# The most SQLite virtual-machine instructions one read statement may run (checked every `_PROGRESS_STEPS`), so
# no single statement, however shaped, holds a reader for long. A search whose words match all 50,000 memories
# of one user runs 7.4e6 (about 150 per matching row; docs/benchmarks.md, issue 12 section), so 2e8 stops only
# reads of well over a million rows. FTS5's own work inside one step (expanding a prefix) is not counted:
# `search.check_query` bounds that.
MAX_READ_INSTRUCTIONS = 200_000_000
# `Store.own_names`: a user has one name and a nickname or two; more are older versions that stayed active.
OWN_NAME_MEMORIES = 8
_PROGRESS_STEPS = 10_000
# The background reader (issue 12, fourth round): one more read-only connection whose thread runs this much
# nicer than the server (Linux nice values, 0-19), for the reads of callers past their read budget
# (`throttle.ReadBudget`'s lane). Why: the lane bounds how much of the time those reads run, not whose work the
# cores take first while they run; at nice 10 the kernel gives a busy thread of the server about nine times
# that thread's share, so the well-behaved callers' reads and writes are served first.
BACKGROUND_NICE = 10


class _Reader:
    """One read-only connection and its work budget (`MAX_READ_INSTRUCTIONS` per statement)."""

    def __init__(self, connection: aiosqlite.Connection, budget: int | None) -> None:
        self.connection = connection
        self.budget = budget
        self.used = 0

    def _progress(self) -> int:
        # Runs on the connection's thread between VM steps; non-zero interrupts the statement.
        self.used += _PROGRESS_STEPS
        return 1 if self.budget is not None and self.used > self.budget else 0

    def check_budget(self, error: sqlite3.OperationalError) -> None:
        """Raise `QueryTooExpensive` from `error` when it is this reader's budget that interrupted the statement.

        Raises:
            QueryTooExpensive: the statement ran past its work budget.
        """
        if self.budget is not None and self.used > self.budget:
            raise QueryTooExpensive(
                "this request needs more work than one request may use: search for fewer or rarer words, "
                "or narrow it with category, tags or dates"
            ) from error

    async def install(self) -> None:
        if self.budget is not None:
            await self.connection.set_progress_handler(self._progress, _PROGRESS_STEPS)


# One statement of `_ReaderPool.run`: (sql, parameters) -> every row.
ReadStatement = Callable[[str, Sequence[Any]], list[sqlite3.Row]]

# Who the current read is for (a caller key; the server sets it per request). When every reader is busy, a free
# one goes to the waiting caller that holds the fewest, so one caller's many slow reads cannot queue another's.
READ_OWNER: ContextVar[str] = ContextVar("harmonia_read_owner", default="")
# Whether the current read is background work (a caller past its read budget): it then runs on the background
# reader, never on the others (`_ReaderPool`).
READ_BACKGROUND: ContextVar[bool] = ContextVar("harmonia_read_background", default=False)


class _ReaderPool:
    """The read-only connections, each used by one statement at a time, shared fairly between callers.

    Why one statement per connection: with no explicit transaction, SQLite holds a connection's read
    snapshot until every statement on it is reset. A statement started while another request's statement
    is still open joins that old snapshot and misses writes committed since, so a client could fail to see
    its own acknowledged store. One statement at a time gives each a fresh snapshot; reads never wait for
    the writer (WAL), and wait for each other only when every connection is busy. Then the next free
    connection goes to the waiting `READ_OWNER` that holds the fewest connections (first come first served
    among equals), so a caller with many reads in flight cannot make another caller wait behind all of them.

    Any read of the store goes through `execute` (keyword search, lists, and other read sides such as
    vectors), so all of them share the pool and its per-statement work budget.

    With a `background` pool, reads made while `READ_BACKGROUND` is true use only its readers (at a lower
    thread priority, `BACKGROUND_NICE`) and the other reads never do, so background work neither takes a
    reader from the others nor waits for one they hold.
    """

    def __init__(self, readers: Sequence[_Reader], background: _ReaderPool | None = None) -> None:
        self._idle = list(readers)
        self._background = background
        own = tuple(reader.connection for reader in readers)
        self.connections: tuple[aiosqlite.Connection, ...] = own + (
            () if background is None else background.connections
        )
        self._held: dict[str, int] = {}
        self._waiting: FairQueue[_Reader] = FairQueue()

    def _pool(self) -> _ReaderPool:
        return self._background if self._background is not None and READ_BACKGROUND.get() else self

    async def _acquire(self, owner: str) -> _Reader:
        if self._idle and not self._waiting:
            self._held[owner] = self._held.get(owner, 0) + 1
            return self._idle.pop()
        return await self._waiting.wait(owner, self._release)  # counted by `_release` when handed over

    def _release(self, owner: str, reader: _Reader) -> None:
        held = self._held.get(owner, 1) - 1
        if held > 0:
            self._held[owner] = held
        else:
            self._held.pop(owner, None)
        chosen = self._waiting.hand(reader, rank=lambda waiting: -self._held.get(waiting, 0))
        if chosen is None:
            self._idle.append(reader)
        else:
            self._held[chosen] = self._held.get(chosen, 0) + 1

    @asynccontextmanager
    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> AsyncIterator[aiosqlite.Cursor]:
        """A cursor over `sql` on a reader, held until the block exits.

        Raises:
            QueryTooExpensive: the statement ran past its work budget and was interrupted.
        """
        owner, pool = READ_OWNER.get(), self._pool()
        reader = await pool._acquire(owner)
        reader.used = 0
        try:
            async with reader.connection.execute(sql, parameters) as cursor:
                yield cursor
        except sqlite3.OperationalError as error:
            reader.check_budget(error)
            raise
        finally:
            pool._release(owner, reader)

    async def run(self, work: Callable[[ReadStatement], _T]) -> _T:
        """`work(read)` on one reader's own thread, in one trip, inside one read transaction (one snapshot).

        `read(sql, parameters)` runs one statement and returns all its rows; each statement has its own
        work budget, as with `execute`. Why: each `execute` costs three hand-overs between the event loop
        and the connection's thread (execute, fetch, close), which on a busy two-core machine cost more
        than a small search's SQL (issue 14, docs/benchmarks.md); a search's four statements go in one.

        Raises:
            QueryTooExpensive: a statement ran past its work budget and was interrupted.
        """
        owner, pool = READ_OWNER.get(), self._pool()
        reader = await pool._acquire(owner)

        def read(sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
            reader.used = 0
            try:
                return connection.execute(sql, parameters).fetchall()
            except sqlite3.OperationalError as error:
                reader.check_budget(error)
                raise

        def in_snapshot() -> _T:
            # Autocommit connections (isolation_level=None): BEGIN/COMMIT are ours. The in-memory store's one
            # connection may be inside a write transaction already; its statements then read that.
            if connection.in_transaction:
                return work(read)
            connection.execute("BEGIN")
            try:
                return work(read)
            finally:
                if connection.in_transaction:
                    connection.execute("COMMIT")

        connection = reader.connection._conn  # noqa: SLF001  # the sqlite3 connection, used only on its thread
        try:
            # aiosqlite's own queue to the connection's thread (`Connection._execute`, the method behind its
            # public calls since 0.17): the only way to run several statements there in one hand-over.
            queue: Callable[[Callable[[], _T]], Awaitable[_T]] = reader.connection._execute  # noqa: SLF001
            return await queue(in_snapshot)
        finally:
            pool._release(owner, reader)


# The write path's statements, shared by the one-trip functions below (`_on_thread`) and the methods.
_INSERT_MEMORY = """
    INSERT INTO memories (memory_id, user_id, content, category, confidence, entities, tags, event_time,
        event_time_utc, source_message, speaker, session_id, metadata, extractor, status, created_at,
        updated_at, message_id, context, occurred_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?)
"""
_INSERT_HISTORY = (
    "INSERT INTO memory_history (memory_id, user_id, action, old_content, new_content, source_message, changed_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_MEMORY_BY_ID = f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE m.memory_id = ? AND m.user_id = ?"
_INSERT_LINK = "INSERT OR IGNORE INTO memory_links (user_id, from_id, to_id, kind, created_at) VALUES (?, ?, ?, ?, ?)"
# Whether any deleted memory of this conversation hides a span (the common answer, no, in one lookup).
_HIDES_IN_CONVERSATION = (
    "SELECT 1 FROM memories WHERE user_id = ? AND status = 'deleted' AND hidden_span IS NOT NULL "
    "AND session_id IS ? LIMIT 1"
)


# Reconciliation's candidates: the user's active memories whose own text (content, entities, tags) best
# matches, by the index's weighted bm25(). Only what a memory itself says counts: its source message and
# conversation context would make every memory of a busy conversation a candidate.
_CANDIDATES = (
    f"SELECT {_MEMORY_COLUMNS}, bm25(memories_fts, {', '.join(str(weight) for weight in BM25_WEIGHTS)}) AS score "
    "FROM memories_fts CROSS JOIN memories m ON m.rowid = memories_fts.rowid "
    "WHERE memories_fts MATCH ? AND m.user_id = ? AND m.status = 'active' ORDER BY score LIMIT ?"
)


def _candidate_parameters(user_id: str, match: str, limit: int) -> tuple[str, str, int]:
    return owned_match(user_id, f"{{content entities tags}} : ({match})"), user_id, limit


async def _on_thread(db: aiosqlite.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run `work` with `db`'s sqlite3 connection on aiosqlite's own thread: several statements, one trip.

    Why: each `await db.execute(...)` is a hand-off to that thread and back (a queue put, a thread wake-up, a
    future resolved on the event loop), which cost the write path more than most of its statements do
    (docs/benchmarks.md, "Issue 14: write path, second round"). aiosqlite runs its own methods the same way
    (`Connection._execute(fn, ...)`); `work` runs inside the caller's open transaction and must not await.
    """
    connection = db._conn
    return cast(_T, await db._execute(work, connection))  # type: ignore[no-untyped-call]


def _owners_of(conn: sqlite3.Connection, memory_ids: Sequence[str]) -> dict[str, str]:
    """The user of each of `memory_ids` that exists in the file (any user, any status); on the database thread."""
    owners: dict[str, str] = {}
    for start in range(0, len(memory_ids), 500):  # SQLite's bound-parameter limit is 999 on old builds
        chunk = list(memory_ids[start : start + 500])
        marks = ", ".join("?" for _ in chunk)
        rows = conn.execute(f"SELECT memory_id, user_id FROM memories WHERE memory_id IN ({marks})", chunk)
        owners |= {str(row[0]): str(row[1]) for row in rows}
    return owners


class ImportRow(NamedTuple):
    """One memory for `Store.import_rows`, as the export has it (checked by `MemoryService.import_row`'s rules):
    the columns of `Memory`, with `category` as its value and times as UTC ISO-8601."""

    memory_id: str
    user_id: str
    content: str
    category: str
    confidence: float
    entities: list[str]
    tags: list[str]
    event_time: str | None
    source_message: str | None
    speaker: str | None
    session_id: str | None
    metadata: dict[str, Any]
    extractor: str
    status: str
    created_at: str
    updated_at: str


_INSERT_IMPORTED = """
    INSERT INTO memories (memory_id, user_id, content, category, confidence, entities, tags, event_time, event_time_utc,
        source_message, speaker, session_id, metadata, extractor, status, created_at, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# The rows above a rowid indexed as the insert trigger would index each (the view reads what the index holds).
_INDEX_SINCE = (
    f"INSERT INTO memories_fts (rowid, {', '.join(FTS_COLUMNS)}) "
    f"SELECT rowid, {', '.join(FTS_COLUMNS)} FROM {FTS_CONTENT} WHERE rowid > ?"
)


def _insert_imported(conn: sqlite3.Connection, rows: Iterable[ImportRow]) -> None:
    """Insert checked import rows as they are, with a `created` history row each (`Store.import_rows`)."""
    fresh = list(rows)
    conn.executemany(
        _INSERT_IMPORTED,
        [
            (
                m.memory_id,
                m.user_id,
                m.content,
                m.category,
                m.confidence,
                json.dumps(m.entities, ensure_ascii=False),
                json.dumps(m.tags, ensure_ascii=False),
                m.event_time,
                to_utc_text(datetime.fromisoformat(m.event_time)) if m.event_time else None,
                m.source_message,
                m.speaker,
                m.session_id,
                json.dumps(m.metadata, ensure_ascii=False),
                m.extractor,
                m.status,
                m.created_at,
                m.updated_at,
            )
            for m in fresh
        ],
    )
    conn.executemany(
        "INSERT INTO memory_history (memory_id, user_id, action, old_content, new_content, source_message, "
        "changed_at) VALUES (?, ?, 'created', NULL, ?, ?, ?)",
        [(m.memory_id, m.user_id, m.content, m.source_message, m.created_at) for m in fresh],
    )


class ImportCounts(NamedTuple):
    """What `Store.import_rows` did: rows inserted, of those how many under a new id, and which of the rows'
    own ids were in the file before (any user)."""

    inserted: int
    moved: int
    present: set[str]


@dataclass(frozen=True)
class LoggedMessage:
    """What `Store.log_message` read and wrote for one message."""

    message_id: int
    context: str | None  # the conversation just before it, `speaker: text` lines, oldest first
    previous: str | None  # the speaker's own previous message in the session, when asked for
    candidates: list[list[sqlite3.Row]]  # per expression given, its `candidate_rows`


def _fact_columns(extracted: ExtractedMemory) -> tuple[str, str, float, str, str, str | None, str | None]:
    """The column values of what a memory says: content, category, confidence, entities and tags (JSON),
    event_time and event_time_utc. A date-only event keeps its precision as an ISO date; event_time_utc
    (local midnight in UTC) sorts it among timed ones."""
    event_time = event_time_utc = None
    if extracted.event_time is not None:
        moment = extracted.event_time
        event_time = moment.date().isoformat() if extracted.event_date_only else moment.isoformat()
        event_time_utc = to_utc_text(moment)
    return (
        extracted.content,
        extracted.category.value,
        extracted.confidence,
        json.dumps(extracted.entities, ensure_ascii=False),
        json.dumps(extracted.tags, ensure_ascii=False),
        event_time,
        event_time_utc,
    )


def _span_of(row: sqlite3.Row) -> str | None:
    """The part of the memory's source message it came from; the whole message when no part is found."""
    source = row["source_message"]
    if not source:
        return None
    return spans.source_span(source, str(row["content"]), json.loads(row["entities"])) or str(source)


def _same_message(message_a: int | None, source_a: str | None, message_b: int | None, source_b: str | None) -> bool:
    """Whether two memories came from one message: the same `message_id`, or (imported, without one) the same text."""
    if message_a is not None or message_b is not None:
        return message_a == message_b
    return source_a is not None and source_a == source_b


# A user's memory ids (any status) that start with a prefix, in id order: a range over the `memory_id` index, since
# ids are `mem_` and lowercase hex digits, all below "g" (`Store.memory_ids_with_prefix`).
_IDS_WITH_PREFIX = (
    "SELECT memory_id FROM memories WHERE memory_id >= ? AND memory_id < ? AND user_id = ? ORDER BY memory_id LIMIT ?"
)

# --- keyword search, run on a reader's thread (`_ReaderPool.run`; `Store.search`, issue 14) ---

# Whether any memory of another user is in the file (two index seeks on `memories_user_status_created`).
_OTHER_USERS = (
    "SELECT EXISTS (SELECT 1 FROM memories WHERE user_id < ?) OR EXISTS (SELECT 1 FROM memories WHERE user_id > ?)"
)


def _scoped_match(read: ReadStatement, user_id: str, match: str) -> str:
    """`match` limited to `user_id`'s memories inside the index (`owned_match`), or `match` itself when the file
    holds no other user's memory (in this read snapshot).

    Why: the owner token costs bm25() a count of every one of the user's rows (its idf) and the match a walk of
    the owner's doclist, about 4 ms per search at 100,000 memories (docs/benchmarks.md, issue 14 fourth round),
    and in a one-user file it selects nothing. Dropping it changes no score: the owner column's bm25 weight is
    0, so the owner phrase adds exactly 0.0 to every row's sum. Callers keep their `user_id = ?` conditions.
    """
    rows = read(_OTHER_USERS, [user_id, user_id])
    return owned_match(user_id, match) if rows and rows[0][0] else match


def _count_matches(read: ReadStatement, match: str, where: str, params: list[Any]) -> int:
    """How many memories match the FTS5 expression `match` (already owned) and pass the filter `where`.

    Under the default filter (active, not archived) this is FTS5's count of the match (the owner token
    keeps it to the user) less the matching rows of `memories_unsearched`;
    any other filter joins every matching row.
    """
    default_where, default_params = MemoryFilter().where(params[0])
    if where == default_where and params == default_params:
        rows = read(
            "SELECT (SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?) - (SELECT "
            "count(*) FROM memories_fts WHERE memories_fts MATCH ? AND rowid IN (SELECT rowid FROM memories "
            f"INDEXED BY memories_unsearched WHERE user_id = ? AND ({_UNSEARCHED})))",
            [match, match, params[0]],
        )
    else:
        rows = read(
            f"SELECT count(*) FROM memories_fts CROSS JOIN memories m ON m.rowid = memories_fts.rowid "
            f"WHERE memories_fts MATCH ? AND {where}",
            [match, *params],
        )
    return int(rows[0][0]) if rows else 0


def _two_stage_page(
    read: ReadStatement,
    user_id: str,
    words: str,
    match: str,
    where: str,
    params: list[Any],
    scoring: list[Any],
    *,
    limit: int,
    offset: int,
) -> tuple[list[sqlite3.Row] | None, int]:
    """One relevance-ordered page of `Store.search` ranked over FTS5's best rows by bm25 only, and the exact
    total (None when the window's rows that pass the filter are fewer than the page). `words` is the search's
    FTS5 expression, `match` the same limited to the user (`_scoped_match`).

    Stage 1 lets FTS5 pick the `window` strongest rows by raw bm25 inside the index (no join, no window
    function over every match), among the rows that hold every term when `_conjunction` proves that is the
    same window; `window` is `SEARCH_CANDIDATES`, or twice the page's end when that is
    more. Stage 2 applies `_RANKED_SQL`, the same formula as the exact query, to those rows only; both
    are one statement (`_TWO_STAGE_SQL`). What is
    exact and what is approximate (docs/search.md, "Two-stage ranking"): when FTS5 finds no more rows than
    the window, everything is exact; otherwise a row outside the window, weaker by bm25 than every row
    in it, is left out even where recency, pin/importance or the category boost would have lifted it
    onto the page, and "best bm25 of the query" is the window's best boosted strength. The total is
    always exact (`_count_matches`).
    """
    window = max(SEARCH_CANDIDATES, 2 * (offset + limit))
    sql = _TWO_STAGE_SQL.format(where=where)
    page = None
    pruned = _conjunction(read, user_id, words, match, window)
    if pruned is not None:
        page = read(sql, [pruned.match, window, *params, *scoring, limit, offset])
        if not (page and pruned.proves(page[0], window)):
            page = None
    if page is None:
        page = read(sql, [match, window, *params, *scoring, limit, offset])
    if not page:  # nothing of the window passes the filter: its size decides as below
        sized = read(
            "SELECT count(*) FROM (SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?)", [match, window]
        )
        held = int(sized[0][0])
    else:
        held = int(page[0]["window_count"])
    if held < window:  # FTS5 found every match: exact, and so is the window's count
        return page, int(page[0]["total"]) if page else _count_matches(read, match, where, params)
    if len(page) < limit:  # archived or inactive rows thinned the window below the page: rank every match
        return None, 0
    return page, _count_matches(read, match, where, params)


def _keyword_window(
    read: ReadStatement, user_id: str, words: str, match: str, where: str, params: list[Any], *, limit: int
) -> tuple[list[sqlite3.Row] | None, int]:
    """Two-stage candidates for `Store.keyword_candidates` under the default filter: FTS5's `limit` strongest rows
    by bm25 (chosen inside the index, as `_two_stage_page` stage 1, among the rows that hold every term when
    `_conjunction` proves that is the same window) that pass `where`, and the exact total; None
    when archived or inactive rows in that window leave it short although FTS5 found more (then every match is
    ranked). The rows are the same as ordering every match that passes `where` by bm25: a row that fails the
    filter is dropped either way, and no row outside the window is stronger than the ones in it. `words` is the
    search's FTS5 expression, `match` the same limited to the user (`_scoped_match`)."""
    sql = (
        f"WITH window_rows AS MATERIALIZED (SELECT rowid, -{_BM25_SQL} AS strength FROM memories_fts "
        "WHERE memories_fts MATCH ? ORDER BY strength DESC, rowid DESC LIMIT ?) "
        "SELECT c.rowid AS rowid, c.strength AS strength, (SELECT count(*) FROM window_rows) AS window_count, "
        "(SELECT min(strength) FROM window_rows) AS window_floor "
        f"FROM window_rows c CROSS JOIN memories m ON m.rowid = c.rowid WHERE {where} "
        "ORDER BY c.strength DESC, c.rowid DESC"
    )
    rows = None
    pruned = _conjunction(read, user_id, words, match, limit)
    if pruned is not None:
        rows = read(sql, [pruned.match, limit, *params])
        if not (rows and pruned.proves(rows[0], limit)):
            rows = None
    if rows is None:
        rows = read(sql, [match, limit, *params])
    held = int(rows[0]["window_count"]) if rows else -1
    if len(rows) < limit and held != len(rows):
        # Short: either FTS5 found fewer than `limit` (then the filtered rows are every match, exact) or some
        # of the window failed the filter (then a weaker row outside it may belong in the page).
        sized = read(
            "SELECT count(*) FROM (SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?)", [match, limit]
        )
        if int(sized[0][0]) >= limit:
            return None, 0
    return rows, _count_matches(read, match, where, params) if rows else 0


# FTS5's bm25 constant k1 (fts5_aux.c, `fts5Bm25Function`: k1 = 1.2, b = 0.75). A phrase adds
# idf * f * (k1 + 1) / (f + k1 * (1 - b + b * D / avgdl)) to a row's score, where f is the phrase's hits weighted
# by column: less than idf * (k1 + 1) whatever f, D and the weights are, since 1 - b > 0.
_BM25_K1 = 1.2
# FTS5 floors a phrase's idf at this (fts5_aux.c, `fts5Bm25GetData`), for phrases in more than half the rows.
_BM25_MIN_IDF = 1e-6
# A quoted term of `search.build_match_expression`: a word, a phrase, or a word with a prefix `*`.
_QUOTED_TERM = re.compile(r'"(?:[^"]|"")*"\*?')


def _disjuncts(match: str) -> list[str] | None:
    """The terms of `match` when it is a disjunction of two or more quoted terms (`t1 OR t2 ...`, the form of
    `search.build_match_expression`), else None."""
    terms = _QUOTED_TERM.findall(match)
    return terms if len(terms) > 1 and " OR ".join(terms) == match else None


class _Conjunction(NamedTuple):
    """A search's terms joined with AND (`match`, limited to the user like the search's own expression), and the
    best score a row lacking one of them can reach (`beaten`)."""

    match: str
    beaten: float

    def proves(self, row: sqlite3.Row, window: int) -> bool:
        """Whether the window this expression gave (`row`: any row of it, with `window_count` and `window_floor`,
        its size and weakest strength before any filter) is the `window` strongest of every match."""
        return int(row["window_count"]) == window and float(row["window_floor"]) > self.beaten


def _conjunction(read: ReadStatement, user_id: str, words: str, match: str, window: int) -> _Conjunction | None:
    """The terms of `words` joined with AND, for a window of the `window` strongest rows by bm25 taken among the
    rows that hold every term, or None when that window cannot be full (`match` is `words` as the search runs it,
    owner token or not: `_scoped_match`).

    Exact pruning in the spirit of MaxScore (Turtle & Flood 1995, "Query evaluation: strategies and
    optimizations"): a phrase adds less than idf * (k1 + 1) to FTS5's bm25 (`_BM25_K1`), with the idf FTS5 uses
    (log((N - n + 0.5) / (n + 0.5)), N rows in the index, n of them holding the phrase, floored at
    `_BM25_MIN_IDF`), so a row that lacks a term scores less than the sum of the other terms' bounds. When the
    weakest row of the conjunction's window scores more than the largest such sum (`_Conjunction.proves`), no
    other row can enter, and the window is the one every match gives. `a AND b` has the same phrases in the
    same order as `a OR b`, so FTS5's score of a row that matches both is the same to the last bit.

    None when `words` is not a disjunction of two or more quoted terms, or fewer than `window` of the user's rows
    hold every term. The terms' counts are of every user's rows, as FTS5's idf is.
    """
    terms = _disjuncts(words)
    if terms is None:
        return None
    conjunction = " AND ".join(terms)
    if match != words:
        conjunction = owned_match(user_id, conjunction)
    # Fewer than `window` of the user's rows hold every term: the window could not be full. Asked first, without
    # bm25: a fifth of the window's statement (0.2 against 0.8 ms at 10,000 memories), less than the terms' counts.
    sized = "SELECT count(*) FROM (SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?)"
    if int(read(sized, [conjunction, window])[0][0]) < window:
        return None
    indexed = int(read("SELECT count(*) FROM memories_fts_docsize", [])[0][0])
    counted = "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?"
    holding = [int(read(counted, [term])[0][0]) for term in terms]
    bounds = [
        (_BM25_K1 + 1) * max(math.log((indexed - count + 0.5) / (count + 0.5)), _BM25_MIN_IDF) for count in holding
    ]
    # A margin for the rounding of FTS5's sum and of ours.
    beaten = (sum(bounds) - min(bounds)) * (1 + 1e-9)
    return _Conjunction(conjunction, beaten)


def _matching_rowids(read: ReadStatement, match: str, rowids: list[int]) -> set[int]:
    """Those of `rowids` that match the FTS5 expression `match`.

    Why `+rowid`: a bare `rowid IN (...)` makes SQLite call FTS5 once per listed rowid, each call parsing the
    expression and opening its doclists again (about 40-60 us a rowid at 100,000 memories); with the unary plus
    FTS5 walks the match once and SQLite tests each row against the list (docs/benchmarks.md, issue 9 sixth
    round). The walk is limited to the rowids' range, which FTS5 seeks to.
    """
    if not rowids:
        return set()
    found = read(
        "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? AND rowid BETWEEN ? AND ? "
        "AND +rowid IN (SELECT value FROM json_each(?))",
        [match, min(rowids), max(rowids), json.dumps(rowids)],
    )
    return {int(row[0]) for row in found}


def _hit_details(read: ReadStatement, match: str, rowids: list[int]) -> dict[int, tuple[Memory, list[str]]]:
    """The memories `rowids` with their highlights, for one page of `search` (highlight() needs the MATCH)."""
    marks = ", ".join("?" for _ in rowids)
    source = FTS_COLUMNS.index("source_message")
    rows = read(
        f"SELECT {_MEMORY_COLUMNS}, m.rowid AS hit_rowid, highlight(memories_fts, 0, '[', ']') AS highlight, "
        f"snippet(memories_fts, {source}, '[', ']', '...', 16) AS marked, "
        f"snippet(memories_fts, {source}, '', '', '...', 16) AS unmarked "
        f"FROM memories_fts CROSS JOIN memories m ON m.rowid = memories_fts.rowid "
        f"WHERE memories_fts MATCH ? AND memories_fts.rowid IN ({marks})",
        [match, *rowids],
    )
    details: dict[int, tuple[Memory, list[str]]] = {}
    for row in rows:
        highlights = [str(row["highlight"])]
        if row["marked"] and row["marked"] != row["unmarked"]:
            highlights.append(str(row["marked"]))
        details[int(row["hit_rowid"])] = (_row_to_memory(row), highlights)
    return details


class Store:
    """The SQLite store. Open it with `open_store`; all methods are coroutines and scoped by `user_id`."""

    def __init__(self, writer: aiosqlite.Connection, readers: _ReaderPool, path: str) -> None:
        self._writer = writer
        self._reader = readers
        self.path = path
        self._write_lock = anyio.Lock()
        # Search returns not yet written: (user_id, memory_id) -> (count, last time), see `record_access`.
        self._pending_access: dict[tuple[str, str], tuple[int, str]] = {}
        self._access_flushed = time.monotonic()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (`BEGIN IMMEDIATE` ... `COMMIT`); any exception rolls it back and propagates.

        Raises:
            StoreBusy: another process held the write lock through `BUSY_RETRIES` waits of `BUSY_TIMEOUT_MS`
                each (SQLITE_BUSY); nothing was written.
        """
        async with self._write_lock:
            await self._begin()
            try:
                yield self._writer
            except BaseException:
                # Shielded: a cancelled caller must still leave the connection out of the transaction.
                with anyio.CancelScope(shield=True):
                    await self._writer.execute("ROLLBACK")
                raise
            with anyio.CancelScope(shield=True):
                await self._writer.execute("COMMIT")

    async def _begin(self) -> None:
        # Why retry: SQLite's busy handler already waited BUSY_TIMEOUT_MS; another process (an import, a second
        # server on the same file) may hold the lock longer, and a few more waits ride out its batches.
        for attempt in range(1, BUSY_RETRIES + 1):
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                logger.warning("database is locked (attempt %d of %d): %s", attempt, BUSY_RETRIES, error)
        raise StoreBusy(
            "the database is busy: another process is writing to it; nothing was changed, retry in a few seconds"
        )

    # --- writes: each takes the connection of an open `transaction()` ---

    async def insert_memory(self, db: aiosqlite.Connection, new: NewMemory, *, related: Sequence[str] = ()) -> Memory:
        """Insert one active memory and its `created` history row, with a `related` link from it to each of
        `related` (as `add_link`); return it as stored."""
        now = utc_now()
        extracted = new.extracted
        facts = _fact_columns(extracted)
        memory_id = new_memory_id()
        row = (
            memory_id,
            new.user_id,
            *facts,
            new.source_message,
            new.speaker,
            new.session_id,
            json.dumps(new.metadata or {}, ensure_ascii=False),
            new.extractor,
            now,
            now,
            new.message_id,
            new.context,
            new.occurred_at,
        )
        history = (memory_id, new.user_id, "created", None, extracted.content, new.source_message, now)

        def write(conn: sqlite3.Connection) -> int | None:
            # The memory, its history row and the check for hidden spans: one trip to the database thread.
            rowid = conn.execute(_INSERT_MEMORY, row).lastrowid
            conn.execute(_INSERT_HISTORY, history)
            conn.executemany(_INSERT_LINK, [(new.user_id, memory_id, other, "related", now) for other in related])
            if new.context and conn.execute(_HIDES_IN_CONVERSATION, (new.user_id, new.session_id)).fetchone():
                return rowid
            return None

        hiding = await _on_thread(db, write)
        if hiding is not None:
            await self._refresh_redactions(db, new.user_id, [hiding])
        return Memory(
            memory_id=memory_id,
            user_id=new.user_id,
            content=extracted.content,
            category=extracted.category,
            confidence=extracted.confidence,
            entities=list(extracted.entities),
            tags=list(extracted.tags),
            event_time=facts[5],
            source_message=new.source_message,
            speaker=new.speaker,
            session_id=new.session_id,
            metadata=dict(new.metadata or {}),
            extractor=new.extractor,
            status="active",
            created_at=now,
            updated_at=now,
            occurred_at=new.occurred_at,
        )

    async def update_content(
        self, db: aiosqlite.Connection, user_id: str, memory_id: str, content: str, source_message: str | None = None
    ) -> None:
        """Rewrite an active memory's content in place (the FTS index follows by trigger), with history.

        Raises:
            MemoryNotFound: no active memory `memory_id` for `user_id`.
        """
        old = await self._active_content(db, user_id, memory_id)
        now = utc_now()
        await db.execute(
            "UPDATE memories SET content = ?, updated_at = ? WHERE memory_id = ? AND user_id = ?",
            (content, now, memory_id, user_id),
        )
        await self._record(db, memory_id, user_id, "updated", old, content, source_message, now)

    async def soft_delete(
        self, db: aiosqlite.Connection, user_id: str, memory_id: str, *, reason: str | None = None
    ) -> None:
        """Mark a memory `deleted`; it stays in the file, with a `deleted` history row (`reason` as its source).

        Its part of the source message (`spans.source_span`, or the whole message when none is found) becomes
        its `hidden_span`, which the memories sharing that message or carrying it as context stop showing and
        indexing (docs/forgetting.md).

        Raises:
            MemoryNotFound: no memory with that id for that user, or it is already deleted.
        """
        async with db.execute(
            "SELECT status, content, entities, source_message FROM memories WHERE memory_id = ? AND user_id = ?",
            (memory_id, user_id),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise MemoryNotFound(memory_id, user_id)
        if row["status"] == "deleted":
            raise MemoryNotFound(memory_id, user_id, "it was already deleted")
        now = utc_now()
        span = _span_of(row)
        await db.execute(
            "UPDATE memories SET status = 'deleted', hidden_span = ?, updated_at = ? "
            "WHERE memory_id = ? AND user_id = ?",
            (span, now, memory_id, user_id),
        )
        await self._record(db, memory_id, user_id, "deleted", row["content"], None, reason, now)
        await self._refresh_around(db, user_id, memory_id, span)

    async def rewrite_memory(
        self,
        db: aiosqlite.Connection,
        user_id: str,
        memory_id: str,
        extracted: ExtractedMemory,
        action: Literal["updated", "merged"],
        source_message: str | None = None,
        *,
        provenance: NewMemory | None = None,
    ) -> Memory:
        """Replace an active memory's content, category, confidence, entities, tags and event_time in place.

        Its id and created_at stay; history gets an `action` row with the old and new content. With
        `provenance` (the new memory whose content replaces the old), the source message, speaker, session,
        metadata and conversation context move to it too, so search and provenance follow what the memory
        now says; without it they stay.

        Raises:
            MemoryNotFound: no active memory `memory_id` for `user_id`.
        """
        old = await self._active_content(db, user_id, memory_id)
        now = utc_now()
        if provenance is not None:
            await db.execute(
                """
                UPDATE memories SET source_message = ?, speaker = ?, session_id = ?, metadata = ?, message_id = ?,
                    context = ?, occurred_at = ?
                WHERE memory_id = ? AND user_id = ?
                """,
                (
                    provenance.source_message,
                    provenance.speaker,
                    provenance.session_id,
                    json.dumps(provenance.metadata or {}, ensure_ascii=False),
                    provenance.message_id,
                    provenance.context,
                    provenance.occurred_at,
                    memory_id,
                    user_id,
                ),
            )
            await self._refresh_redactions(db, user_id, await self._affected(db, user_id, memory_id, None))
        await db.execute(
            """
            UPDATE memories SET content = ?, category = ?, confidence = ?, entities = ?, tags = ?, event_time = ?,
                event_time_utc = ?, updated_at = ?
            WHERE memory_id = ? AND user_id = ?
            """,
            (*_fact_columns(extracted), now, memory_id, user_id),
        )
        await self._record(db, memory_id, user_id, action, old, extracted.content, source_message, now)
        memory = await self._get(db, user_id, memory_id)
        assert memory is not None  # updated just above, inside the same transaction
        return memory

    async def set_status(
        self,
        db: aiosqlite.Connection,
        user_id: str,
        memory_id: str,
        status: Literal["active", "superseded"],
        *,
        expected: Sequence[str],
        source_message: str | None = None,
    ) -> Memory:
        """Move a memory whose status is one of `expected` to `status`, with a history row.

        `superseded` records a `superseded` row; `active` (from superseded or deleted) records `restored`.

        Returns:
            The memory as it was before the change (so its `status` is the previous one).

        Raises:
            MemoryNotFound: no memory `memory_id` for `user_id`, or its status is not one of `expected`.
        """
        now = utc_now()
        action = "superseded" if status == "superseded" else "restored"

        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            # The read, the change and its history row: one trip to the database thread.
            row: sqlite3.Row | None = conn.execute(_MEMORY_BY_ID, (memory_id, user_id)).fetchone()
            if row is None or row["status"] not in expected:
                return row
            conn.execute(
                "UPDATE memories SET status = ?, updated_at = ? WHERE memory_id = ? AND user_id = ?",
                (status, now, memory_id, user_id),
            )
            conn.execute(
                _INSERT_HISTORY, (memory_id, user_id, action, row["content"], row["content"], source_message, now)
            )
            return row

        found = await _on_thread(db, work)
        if found is None:
            raise MemoryNotFound(memory_id, user_id)
        memory = _row_to_memory(found)
        if memory.status not in expected:
            raise MemoryNotFound(memory_id, user_id, f"it is {memory.status}, not {' or '.join(expected)}")
        if memory.status == "deleted":
            await self._unhide(db, user_id, memory_id)
        return memory

    # --- forgetting: hidden spans, purge, erasure (docs/forgetting.md) ---

    async def _group(
        self, db: aiosqlite.Connection, user_id: str, message_id: int | None, source: str | None, extra: str = ""
    ) -> list[sqlite3.Row]:
        """The user's memories that came from one message (same `message_id`; imported ones, which have none,
        by the same text), with `extra` SQL conditions over `m`. Both lookups use an index."""
        columns = (
            "m.rowid, m.memory_id, m.message_id, m.session_id, m.source_message, m.context, m.source_redacted, "
            "m.context_redacted, m.hidden_span"
        )
        params: list[Any]
        if message_id is not None:
            sql = f"SELECT {columns} FROM memories m WHERE m.message_id = ? AND m.user_id = ?"
            params = [message_id, user_id]
        elif source is not None:
            # The whole text is compared here, not in SQL: with `source_message = ?` beside it, the planner
            # stopped using the index on the text's start (seen with EXPLAIN QUERY PLAN on SQLite 3.40).
            sql = (
                f"SELECT {columns} FROM memories m WHERE m.user_id = ? AND m.message_id IS NULL "
                f"AND substr(m.source_message, 1, {_SOURCE_KEY_CHARS}) = ?"
            )
            async with db.execute(sql + extra, [user_id, source[:_SOURCE_KEY_CHARS]]) as cursor:
                return [row for row in await cursor.fetchall() if row["source_message"] == source]
        else:
            return []
        async with db.execute(sql + extra, params) as cursor:
            return list(await cursor.fetchall())

    async def _nearby_messages(
        self, db: aiosqlite.Connection, user_id: str, session_id: str | None, message_id: int, *, after: bool
    ) -> list[int]:
        """The ids of the `CONTEXT_REACH` messages with memories just after (or before) `message_id` in the same
        user's conversation: the only ones whose context can hold it (or that its context can hold)."""
        direction, order = (">", "ASC") if after else ("<", "DESC")
        async with db.execute(
            f"SELECT DISTINCT message_id FROM memories WHERE user_id = ? AND session_id IS ? "
            f"AND message_id {direction} ? ORDER BY message_id {order} LIMIT {CONTEXT_REACH}",
            (user_id, session_id, message_id),
        ) as cursor:
            return [int(row[0]) for row in await cursor.fetchall()]

    async def _affected(self, db: aiosqlite.Connection, user_id: str, memory_id: str, span: str | None) -> list[int]:
        """Rowids of the memories a span of `memory_id`'s message can show through: the same message, and the
        next messages of the conversation whose context holds `span`."""
        async with db.execute(
            "SELECT message_id, session_id, source_message FROM memories WHERE memory_id = ? AND user_id = ?",
            (memory_id, user_id),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return []
        rowids = [
            int(other["rowid"]) for other in await self._group(db, user_id, row["message_id"], row["source_message"])
        ]
        if span and row["message_id"] is not None:
            for later in await self._nearby_messages(db, user_id, row["session_id"], row["message_id"], after=True):
                rowids += [
                    int(other["rowid"])
                    for other in await self._group(db, user_id, later, None)
                    if other["context"] and span in other["context"]
                ]
        return rowids

    async def _refresh_around(self, db: aiosqlite.Connection, user_id: str, memory_id: str, span: str | None) -> None:
        """Recompute what the memories near `memory_id` show (see `_affected`)."""
        await self._refresh_redactions(db, user_id, await self._affected(db, user_id, memory_id, span))

    async def _unhide(self, db: aiosqlite.Connection, user_id: str, memory_id: str) -> None:
        async with db.execute(
            "SELECT hidden_span FROM memories WHERE memory_id = ? AND user_id = ?", (memory_id, user_id)
        ) as cursor:
            row = await cursor.fetchone()
        span = row["hidden_span"] if row else None
        await db.execute(
            "UPDATE memories SET hidden_span = NULL WHERE memory_id = ? AND user_id = ?", (memory_id, user_id)
        )
        await self._refresh_around(db, user_id, memory_id, span)

    async def _refresh_redactions(self, db: aiosqlite.Connection, user_id: str, rowids: Sequence[int]) -> None:
        """Recompute `source_redacted` and `context_redacted` of the user's memories `rowids`.

        A memory's source message loses the spans of the deleted memories of the same message (the same
        `message_id`, or for imported memories the same text); its context loses the spans of the deleted
        memories of the messages just before it (the only ones a context holds). Its own span never counts.
        Every lookup is indexed, so the cost does not grow with the user's memories. The index follows by
        trigger.
        """
        deleted = " AND m.status = 'deleted' AND m.hidden_span IS NOT NULL"
        for rowid in dict.fromkeys(rowids):
            async with db.execute(
                "SELECT rowid, memory_id, message_id, session_id, source_message, context, source_redacted, "
                "context_redacted FROM memories WHERE rowid = ? AND user_id = ?",
                (rowid, user_id),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                continue
            siblings = [
                str(other["hidden_span"])
                for other in await self._group(db, user_id, row["message_id"], row["source_message"], deleted)
                if other["memory_id"] != row["memory_id"]
            ]
            before: list[str] = []
            if row["context"] and row["message_id"] is not None:
                for earlier in await self._nearby_messages(
                    db, user_id, row["session_id"], row["message_id"], after=False
                ):
                    before += [
                        str(other["hidden_span"]) for other in await self._group(db, user_id, earlier, None, deleted)
                    ]
            source = spans.redact(row["source_message"], siblings)
            context = spans.redact(row["context"], before)
            source_redacted = None if source == row["source_message"] else source
            context_redacted = None if context == row["context"] else context
            if (source_redacted, context_redacted) != (row["source_redacted"], row["context_redacted"]):
                await db.execute(
                    "UPDATE memories SET source_redacted = ?, context_redacted = ? WHERE rowid = ?",
                    (source_redacted, context_redacted, row["rowid"]),
                )

    async def purge(self, db: aiosqlite.Connection, user_id: str, memory_ids: Sequence[str]) -> int:
        """Remove the memories `memory_ids` of `user_id` from the file: rows, history, links, index entries,
        and their part of every source message, context and message log entry of the user's other memories.

        The one place that deletes memory rows (purge and erasure share it); the caller runs `compact()` after
        the transaction so the FTS5 index and the WAL keep no copy. Returns how many memories were removed.

        Raises:
            MemoryNotFound: one of `memory_ids` is not a memory of `user_id` (nothing is removed).
        """
        wanted = list(dict.fromkeys(memory_ids))
        if not wanted:
            return 0
        await db.execute("CREATE TEMP TABLE IF NOT EXISTS purge_ids (rowid INTEGER PRIMARY KEY, memory_id TEXT)")
        await db.execute("DELETE FROM temp.purge_ids")
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            await db.execute(
                f"INSERT INTO temp.purge_ids (rowid, memory_id) SELECT rowid, memory_id FROM memories "
                f"WHERE user_id = ? AND memory_id IN ({marks})",
                [user_id, *chunk],
            )
        async with db.execute("SELECT count(*) FROM temp.purge_ids") as cursor:
            found = await cursor.fetchone()
        if found is None or int(found[0]) != len(wanted):
            async with db.execute("SELECT memory_id FROM temp.purge_ids") as cursor:
                present = {str(row[0]) for row in await cursor.fetchall()}
            missing = next(memory_id for memory_id in wanted if memory_id not in present)
            raise MemoryNotFound(missing, user_id)
        async with db.execute(
            "SELECT count(*) FROM memories WHERE user_id = ? AND rowid NOT IN (SELECT rowid FROM temp.purge_ids)",
            (user_id,),
        ) as cursor:
            remaining = await cursor.fetchone()
        if remaining is not None and int(remaining[0]) > 0:
            await self._scrub_others(db, user_id)
        # Issue 9's memory_vectors rows go with their memory rows here (one DELETE keyed by rowid).
        await db.execute(
            "DELETE FROM memory_links WHERE user_id = ? AND (from_id IN (SELECT memory_id FROM temp.purge_ids) "
            "OR to_id IN (SELECT memory_id FROM temp.purge_ids))",
            (user_id,),
        )
        await db.execute(
            "DELETE FROM memory_history WHERE user_id = ? AND memory_id IN (SELECT memory_id FROM temp.purge_ids)",
            (user_id,),
        )
        await db.execute("DELETE FROM memories WHERE rowid IN (SELECT rowid FROM temp.purge_ids)")
        await db.execute("DELETE FROM temp.purge_ids")
        return len(wanted)

    async def _scrub_others(self, db: aiosqlite.Connection, user_id: str) -> None:
        """Cut the spans of the memories in `temp.purge_ids` out of the raw text of what the user keeps."""
        async with db.execute(
            "SELECT m.memory_id, m.content, m.entities, m.source_message, m.message_id, m.hidden_span "
            "FROM memories m JOIN temp.purge_ids p ON p.rowid = m.rowid"
        ) as cursor:
            doomed = list(await cursor.fetchall())
        touched: set[int] = set()
        for row in doomed:
            span = row["hidden_span"] or _span_of(row)
            if span is None:
                continue
            near = await self._affected(db, user_id, str(row["memory_id"]), span)
            async with db.execute(
                "SELECT m.rowid, m.source_message, m.context, m.hidden_span, m.message_id FROM memories m "
                f"WHERE m.rowid IN ({', '.join('?' for _ in near)}) "
                "AND m.rowid NOT IN (SELECT rowid FROM temp.purge_ids)",
                near,
            ) as cursor:
                others = list(await cursor.fetchall())
            for other in others:
                touched.add(int(other["rowid"]))
                sibling = _same_message(
                    row["message_id"], row["source_message"], other["message_id"], other["source_message"]
                )
                await db.execute(
                    "UPDATE memories SET source_message = ?, context = ?, hidden_span = ? WHERE rowid = ?",
                    (
                        spans.redact(other["source_message"], [span]) if sibling else other["source_message"],
                        spans.redact(other["context"], [span]),
                        spans.redact(other["hidden_span"], [span]),
                        other["rowid"],
                    ),
                )
            await db.execute(
                "UPDATE memory_history SET source_message = replace(source_message, ?, ?) "
                "WHERE user_id = ? AND instr(source_message, ?) > 0",
                (span, spans.REDACTED, user_id, span),
            )
            await db.execute(
                "UPDATE messages SET text = replace(text, ?, ?) WHERE user_id = ? AND instr(text, ?) > 0",
                (span, spans.REDACTED, user_id, span),
            )
        await self._refresh_redactions(db, user_id, sorted(touched))

    async def erase_user(self, db: aiosqlite.Connection, user_id: str) -> dict[str, int]:
        """Purge every memory of `user_id` and its message log; return the counts removed, by kind."""
        async with db.execute("SELECT memory_id FROM memories WHERE user_id = ?", (user_id,)) as cursor:
            ids = [str(row[0]) for row in await cursor.fetchall()]
        async with db.execute(
            "SELECT (SELECT count(*) FROM memory_history WHERE user_id = ?), "
            "(SELECT count(*) FROM memory_links WHERE user_id = ?), (SELECT count(*) FROM messages WHERE user_id = ?)",
            (user_id, user_id, user_id),
        ) as cursor:
            counts = await cursor.fetchone()
        memories = await self.purge(db, user_id, ids)
        await db.execute("DELETE FROM memory_history WHERE user_id = ?", (user_id,))
        await db.execute("DELETE FROM memory_links WHERE user_id = ?", (user_id,))
        await db.execute("DELETE FROM messages WHERE user_id = ?", (user_id,))
        # Erasure keeps no trace of the user id, so the user's numbering starts again at 1.
        await db.execute("DELETE FROM memory_numbers WHERE user_id = ?", (user_id,))
        history, links, messages = (int(value) for value in counts) if counts else (0, 0, 0)
        return {"memories": memories, "history_rows": history, "links": links, "messages": messages}

    async def compact(self) -> None:
        """After a purge: merge the FTS5 index into one segment (dropping the deleted entries and their
        delete markers, which hold the words too), then copy the WAL into the file and truncate it.

        `PRAGMA secure_delete` (on for the writer) zeroes the freed pages and cells, so no byte of purged text
        is left in the database file or its `-wal` afterwards (tests/test_forgetting.py reads the raw bytes).
        Why 'optimize' and not FTS5's own secure-delete option: that needs SQLite 3.44, Debian 12 has 3.40.
        """
        async with self._write_lock:
            await self._writer.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')")
            if self.path != ":memory:":
                async with self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                    row = await cursor.fetchone()
                if row is not None and int(row[0]) != 0:
                    logger.warning("the WAL checkpoint after a purge was blocked by a reader; it will run at close")

    # --- pin, importance, archive, expiry, access (docs/forgetting.md) ---

    async def set_flags(
        self,
        db: aiosqlite.Connection,
        user_id: str,
        memory_ids: Sequence[str],
        *,
        pinned: bool | None = None,
        importance: float | None = None,
        archived: bool | None = None,
        expires_at: str | None = None,
        clear_expiry: bool = False,
    ) -> None:
        """Set what is given (None leaves it) on the user's active memories `memory_ids`; `clear_expiry` drops
        their `expires_at`. Does not touch `updated_at`, so recency and retention are not reset by it.

        Raises:
            MemoryNotFound: one of them is not an active memory of the user (nothing is changed).
        """
        sets: list[str] = []
        values: list[Any] = []
        for column, value in (("pinned", pinned), ("importance", importance), ("archived", archived)):
            if value is not None:
                sets.append(f"{column} = ?")
                values.append(int(value) if isinstance(value, bool) else value)
        if expires_at is not None or clear_expiry:
            sets.append("expires_at = ?")
            values.append(expires_at)
        for memory_id in memory_ids:
            await self.get_memory_in(db, user_id, memory_id)
            if sets:
                await db.execute(
                    f"UPDATE memories SET {', '.join(sets)} WHERE memory_id = ? AND user_id = ?",
                    [*values, memory_id, user_id],
                )

    async def record_access(self, user_id: str, memory_ids: Sequence[str], when: str) -> None:
        """Count one search return for each of `memory_ids` at `when` (a counter, no query log).

        Counts are held in memory and written in one transaction at most every `ACCESS_FLUSH_SECONDS`
        (and by `flush_access`, which `get_memory`, the retention sweep and `close` call first). Why: a
        write per search cost 6-12 ms, as much as the search itself on a 10k-memory user.
        """
        for memory_id in memory_ids:
            count, _ = self._pending_access.get((user_id, memory_id), (0, when))
            self._pending_access[(user_id, memory_id)] = (count + 1, when)
        if time.monotonic() - self._access_flushed >= ACCESS_FLUSH_SECONDS:
            await self.flush_access()

    async def flush_access(self) -> None:
        """Write the access counts held since the last flush. Best effort: a busy database logs and drops them
        rather than fail the call that caused it."""
        self._access_flushed = time.monotonic()
        if not self._pending_access:
            return
        batch, self._pending_access = self._pending_access, {}
        try:
            async with self.transaction() as db:
                await db.executemany(
                    "UPDATE memories SET access_count = access_count + ?, "
                    "last_accessed_at = max(coalesce(last_accessed_at, ''), ?) WHERE user_id = ? AND memory_id = ?",
                    [(count, when, user, memory_id) for (user, memory_id), (count, when) in batch.items()],
                )
        except sqlite3.OperationalError as error:
            logger.warning("%d access counts not recorded: %s", len(batch), error)

    async def expired(
        self, db: aiosqlite.Connection, now: str, retention: Mapping[str, str] | None = None, *, default: str | None
    ) -> list[tuple[str, str]]:
        """(user_id, memory_id) of the active, unpinned memories due to expire at `now` (ISO-8601 UTC).

        Due: `expires_at` at or before `now`, or, for retention, last updated and last returned by a search
        before the cutoff: `retention[user]` for the users listed, else `default` (None: no retention).
        """
        async with db.execute(
            "SELECT user_id, memory_id FROM memories WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "AND status = 'active' AND pinned = 0",
            (now,),
        ) as cursor:
            due = [(str(row[0]), str(row[1])) for row in await cursor.fetchall()]
        listed = dict(retention or {})
        idle = "max(m.updated_at, coalesce(m.last_accessed_at, '')) < ? AND m.status = 'active' AND m.pinned = 0"
        for user, cutoff in listed.items():
            async with db.execute(
                f"SELECT m.user_id, m.memory_id FROM memories m WHERE m.user_id = ? AND {idle}", (user, cutoff)
            ) as cursor:
                due += [(str(row[0]), str(row[1])) for row in await cursor.fetchall()]
        if default is not None:
            marks = ", ".join("?" for _ in listed)
            others = f"AND m.user_id NOT IN ({marks})" if listed else ""
            async with db.execute(
                f"SELECT m.user_id, m.memory_id FROM memories m WHERE {idle} {others}", (default, *listed)
            ) as cursor:
                due += [(str(row[0]), str(row[1])) for row in await cursor.fetchall()]
        return list(dict.fromkeys(due))

    async def forgetting_stats(self, now: str, soon: str) -> dict[str, int]:
        """Counts over the whole file: pinned, archived, deleted, deleted by retention, and due by `soon`."""
        async with self._reader.execute(FORGETTING_COUNTS_SQL, (EXPIRED_REASON, soon)) as cursor:
            row = await cursor.fetchone()
        return forgetting_counts(row)

    async def add_link(self, db: aiosqlite.Connection, user_id: str, from_id: str, to_id: str, kind: LinkKind) -> None:
        """Record that `from_id` supersedes (or is related to) `to_id`; a link already there is kept as is."""
        await db.execute(_INSERT_LINK, (user_id, from_id, to_id, kind, utc_now()))

    async def _get(self, db: aiosqlite.Connection, user_id: str, memory_id: str) -> Memory | None:
        rows = list(await db.execute_fetchall(_MEMORY_BY_ID, (memory_id, user_id)))
        return _row_to_memory(rows[0]) if rows else None

    async def _active_content(self, db: aiosqlite.Connection, user_id: str, memory_id: str) -> str:
        rows = list(
            await db.execute_fetchall(
                "SELECT content FROM memories WHERE memory_id = ? AND user_id = ? AND status = 'active'",
                (memory_id, user_id),
            )
        )
        if not rows:
            raise MemoryNotFound(memory_id, user_id)
        return str(rows[0]["content"])

    async def _record(
        self,
        db: aiosqlite.Connection,
        memory_id: str,
        user_id: str,
        action: str,
        old_content: str | None,
        new_content: str | None,
        source_message: str | None,
        changed_at: str,
    ) -> None:
        await db.execute(
            _INSERT_HISTORY, (memory_id, user_id, action, old_content, new_content, source_message, changed_at)
        )

    async def log_message(
        self,
        db: aiosqlite.Connection,
        user_id: str,
        session_id: str | None,
        speaker: str | None,
        text: str,
        occurred_at: datetime,
        *,
        count: int,
        window_seconds: float,
        previous_of: str | None = None,
        prune_to: int | None = None,
        candidates: Sequence[str | None] = (),
        candidate_limit: int = 0,
    ) -> LoggedMessage:
        """Read the conversation context of a new message, append it to the user's conversation log and prune
        the log, in one trip to the database thread.

        Args:
            count, window_seconds: the context is the last `count` messages of the same user and session said
                at most `window_seconds` before `occurred_at` (and not after it), one `speaker: text` line each.
            previous_of: a speaker whose own previous message in the session (same window) is wanted too,
                read before this one is recorded (to resolve an opening "She"/"He"); None: not read. Needs a
                session.
            prune_to: forget the message of this conversation that falls out of the newest `prune_to`
                (at most one); None: no pruning (a batch prunes once at the end, `prune_conversations`).
            candidates: FTS5 expressions (`conflicts.candidate_query`; None: no query) whose `candidate_rows`
                (at most `candidate_limit` each) are read too, in the same trip, before any memory is written:
                reconciliation's first round of candidate lookups for all of the message's memories.

        Why the log is pruned: it exists only to give the next messages their context; a memory keeps its own
        `source_message`, and its `message_id` stays as a group key.
        """
        start = to_utc_text(occurred_at - timedelta(seconds=window_seconds))
        said = to_utc_text(occurred_at)

        def work(conn: sqlite3.Connection) -> LoggedMessage:
            rows = conn.execute(
                "SELECT speaker, text FROM messages WHERE user_id = ? AND session_id IS ? "
                "AND occurred_at_utc BETWEEN ? AND ? ORDER BY message_id DESC LIMIT ?",
                (user_id, session_id, start, said, count),
            ).fetchall()
            lines = [f"{row['speaker']}: {row['text']}" if row["speaker"] else str(row["text"]) for row in rows[::-1]]
            previous = None
            if previous_of is not None and session_id is not None:
                found = conn.execute(
                    "SELECT text FROM messages WHERE user_id = ? AND session_id = ? AND speaker IS ? "
                    "AND occurred_at_utc BETWEEN ? AND ? ORDER BY message_id DESC LIMIT 1",
                    (user_id, session_id, previous_of, start, said),
                ).fetchone()
                previous = str(found["text"]) if found else None
            message_id = conn.execute(
                "INSERT INTO messages (user_id, session_id, speaker, text, occurred_at_utc, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, session_id, speaker, text, said, utc_now()),
            ).lastrowid
            if prune_to is not None:
                conn.execute(
                    "DELETE FROM messages WHERE message_id = (SELECT message_id FROM messages WHERE user_id = ? "
                    "AND session_id IS ? ORDER BY message_id DESC LIMIT 1 OFFSET ?)",
                    (user_id, session_id, max(1, prune_to)),
                )
            found_candidates = [
                []
                if match is None
                else conn.execute(_CANDIDATES, _candidate_parameters(user_id, match, candidate_limit)).fetchall()
                for match in candidates
            ]
            return LoggedMessage(int(message_id or 0), "\n".join(lines) or None, previous, found_candidates)

        return await _on_thread(db, work)

    async def prune_conversations(
        self, db: aiosqlite.Connection, user_id: str, session_ids: Sequence[str | None], keep: int
    ) -> None:
        """Keep only the newest `keep` messages of each of this user's `session_ids` (None: no session).

        The batch form of `log_message`'s pruning: `store_memories` records a batch's messages and prunes once per
        conversation at the end, in one statement, instead of once per message.
        """
        await db.executemany(
            "DELETE FROM messages WHERE user_id = ? AND session_id IS ? AND message_id < COALESCE(("
            "SELECT message_id FROM messages WHERE user_id = ? AND session_id IS ? "
            "ORDER BY message_id DESC LIMIT 1 OFFSET ?), -1)",
            [(user_id, session, user_id, session, max(1, keep) - 1) for session in dict.fromkeys(session_ids)],
        )

    async def import_rows(self, db: aiosqlite.Connection, rows: Sequence[ImportRow]) -> ImportCounts:
        """Insert `rows` as they are (ids, times, status) with a `created` history row each, in one trip to the
        database thread; return how many were inserted, how many of those got a new id, and which of the rows'
        own ids were in the file before. The FTS index follows by trigger.

        A memory whose `memory_id` its user already has is skipped. One whose id belongs to another user (ids
        are unique in the file) is inserted under `derived_memory_id(user, id)`, skipped in turn if the user
        already has that, so importing the same rows twice never adds them twice, for any user.
        """

        def work(conn: sqlite3.Connection) -> ImportCounts:
            owners = _owners_of(conn, [row.memory_id for row in rows])
            present = set(owners)
            renamed = {
                row.memory_id: derived_memory_id(row.user_id, row.memory_id)
                for row in rows
                if owners.get(row.memory_id, row.user_id) != row.user_id
            }
            owners |= _owners_of(conn, list(renamed.values()))
            fresh: dict[str, ImportRow] = {}
            moved = 0
            for row in rows:
                memory_id = renamed.get(row.memory_id, row.memory_id)
                if memory_id in owners or memory_id in fresh:
                    continue  # already there (a derived id another user holds would need 2**64 luck; skipped too)
                if memory_id != row.memory_id:
                    row = row._replace(memory_id=memory_id)
                    moved += 1
                fresh[memory_id] = row
            # The batch is indexed in one statement after its rows are in (`_M010_DEFERRED_INDEX`): rowids only grow
            # inside this write transaction, so the batch's rows are exactly those above the largest before it.
            since = conn.execute("SELECT coalesce(max(rowid), 0) FROM memories").fetchone()[0]
            conn.execute("INSERT INTO fts_deferred (since) VALUES (?)", (since,))
            try:
                _insert_imported(conn, fresh.values())
                conn.execute(_INDEX_SINCE, (since,))
            finally:
                conn.execute("DELETE FROM fts_deferred")
            return ImportCounts(len(fresh), moved, present)

        return await _on_thread(db, work)

    # --- reads ---

    async def find_active_by_content(self, db: aiosqlite.Connection, user_id: str, content: str) -> Memory | None:
        """The user's active memory whose content equals `content` ignoring case, or None."""
        async with db.execute(
            f"SELECT {_MEMORY_COLUMNS} FROM memories m "
            "WHERE m.user_id = ? AND m.status = 'active' AND m.content = ? COLLATE NOCASE LIMIT 1",
            (user_id, content),
        ) as cursor:
            row = await cursor.fetchone()
        return _row_to_memory(row) if row else None

    async def get_memory(self, user_id: str, memory_id: str, *, include_inactive: bool = False) -> Memory:
        """The memory `memory_id` of `user_id`.

        Raises:
            MemoryNotFound: none with that id for that user (or it is not active and `include_inactive` is false).
        """
        status = "" if include_inactive else " AND m.status = 'active'"
        async with self._reader.execute(
            f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE m.memory_id = ? AND m.user_id = ?{status}",
            (memory_id, user_id),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise MemoryNotFound(memory_id, user_id)
        return _row_to_memory(row)

    async def get_memory_in(self, db: aiosqlite.Connection, user_id: str, memory_id: str) -> Memory:
        """The active memory `memory_id` of `user_id`, read on `db` (an open transaction's connection).

        Raises:
            MemoryNotFound: no active memory with that id for that user.
        """
        memory = await self._get(db, user_id, memory_id)
        if memory is None or memory.status != "active":
            raise MemoryNotFound(memory_id, user_id, "" if memory is None else f"it is {memory.status}")
        return memory

    async def history(self, user_id: str, memory_id: str) -> list[dict[str, Any]]:
        """The history rows of one memory, oldest first, as dicts (action, old/new content, source, time).

        Source messages do not show the spans of the user's other deleted memories (docs/forgetting.md).
        """
        async with self._reader.execute(
            "SELECT action, old_content, new_content, source_message, changed_at FROM memory_history "
            "WHERE memory_id = ? AND user_id = ? ORDER BY history_id",
            (memory_id, user_id),
        ) as cursor:
            rows = [dict(row) for row in await cursor.fetchall()]
        async with self._reader.execute(
            "SELECT hidden_span FROM memories WHERE user_id = ? AND status = 'deleted' AND hidden_span IS NOT NULL "
            "AND memory_id != ?",
            (user_id, memory_id),
        ) as cursor:
            hidden = [str(row[0]) for row in await cursor.fetchall()]
        for row in rows:
            row["source_message"] = spans.redact(row["source_message"], hidden)
        return rows

    async def list_memories(
        self,
        user_id: str,
        memory_filter: MemoryFilter,
        *,
        sort_by: str = "created_at",
        descending: bool = True,
        limit: int | None = 50,
        offset: int = 0,
    ) -> tuple[list[Memory], int]:
        """One page of the user's memories that pass `memory_filter`, and how many pass it in all.

        `sort_by` is one of created_at, updated_at, event_time, confidence; ties go to the newest insert.
        Memories with no event_time sort last when sorting by event_time. `limit=None` means no limit.
        """
        where, params = memory_filter.where(user_id)
        column = _SORT_COLUMNS[sort_by]
        direction = "DESC" if descending else "ASC"
        order = f"{column} IS NULL, {column} {direction}, m.rowid {direction}"
        async with self._reader.execute(f"SELECT count(*) FROM memories m WHERE {where}", params) as cursor:
            count_row = await cursor.fetchone()
        total = int(count_row[0]) if count_row else 0
        async with self._reader.execute(
            f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, -1 if limit is None else limit, offset],
        ) as cursor:
            rows = await cursor.fetchall()
        return [_row_to_memory(row) for row in rows], total

    async def search(
        self,
        user_id: str,
        match: str,
        memory_filter: MemoryFilter,
        *,
        sort_by: str = "relevance",
        limit: int,
        offset: int,
        ranking: Ranking | None = None,
        boost_category: Category | None = None,
        now: str | None = None,
    ) -> tuple[list[FullTextHit], int]:
        """Full-text search: one page of hits for the FTS5 `match` expression, and how many match in all.

        Relevance (see `Ranking`) is computed inside SQL over every matching row before `LIMIT`/`OFFSET`,
        so pages are exact and `total` counts the same rows. `sort_by="relevance"` orders by it, best first;
        any other `_SORT_COLUMNS` key orders by that column, highest or newest first, then by relevance.
        `now` (ISO-8601, UTC; default: the current time) is what recency is measured against. `match` must
        already be a safe FTS5 query (see `search.build_match_expression`); it is bound as a parameter,
        never spliced into the SQL.
        """
        rank = ranking or Ranking()
        words = match
        where, params = memory_filter.where(user_id)
        sort_value = "NULL" if sort_by == "relevance" else _SORT_COLUMNS[sort_by]
        order = "relevance DESC, rowid DESC"
        if sort_by != "relevance":
            order = f"sort_value IS NULL, sort_value DESC, {order}"
        scoring = [
            rank.pin_weight,
            rank.repeat_penalty,
            rank.recency_weight,
            rank.recency_weight,
            now or utc_now(),
            rank.half_life_days,
            boost_category.value if boost_category is not None else None,
            boost_category.value if boost_category is not None else None,
            rank.category_weight,
        ]
        two_stage = (
            sort_by == "relevance" and offset + limit <= MAX_SEARCH_CANDIDATES and memory_filter == MemoryFilter()
        )
        exact_sql = _RANKED_SQL.format(hits=_EXACT_HITS.format(where=where, sort_value=sort_value), order=order)

        def work(read: ReadStatement) -> tuple[list[sqlite3.Row], int, dict[int, tuple[Memory, list[str]]]]:
            page = None
            match = _scoped_match(read, user_id, words)
            # Only under the default filter: a narrower one could leave too few of the window's rows standing.
            if two_stage:
                page, total = _two_stage_page(
                    read, user_id, words, match, where, params, scoring, limit=limit, offset=offset
                )
            if page is None:
                page = read(exact_sql, [match, *params, *scoring, limit, offset])
                total = int(page[0]["total"]) if page else _count_matches(read, match, where, params)
            details = _hit_details(read, match, [int(row["rowid"]) for row in page]) if page else {}
            return page, total, details

        # One trip to a reader's thread for the whole search (`_ReaderPool.run`), in one snapshot.
        page, total, details = await self._reader.run(work)
        hits = []
        for row in page:
            if int(row["rowid"]) not in details:
                continue  # not matched any more (a concurrent write is excluded by the snapshot; kept as a guard)
            memory, highlights = details[int(row["rowid"])]
            hits.append(
                FullTextHit(memory, -float(row["bm25_strength"]), round(float(row["relevance"]), 6), highlights)
            )
        return hits, total

    async def find_candidates(
        self, db: aiosqlite.Connection, user_id: str, match: str, *, limit: int
    ) -> list[FullTextHit]:
        """The user's active memories that best match the FTS5 expression `match`, best first (by `bm25()`).

        Runs on `db`, the connection of an open transaction, so memories written earlier in that
        transaction are seen. FTS5 picks the rows from its index; there is no scan of the table.
        """
        rows = await self.candidate_rows(db, user_id, match, limit=limit)
        return [FullTextHit(_row_to_memory(row), float(row["score"]), 0.0, []) for row in rows]

    async def candidate_rows(
        self, db: aiosqlite.Connection, user_id: str, match: str, *, limit: int
    ) -> list[sqlite3.Row]:
        """`find_candidates` as rows (the columns of `row_memory`, and `score`): reconciliation reads a few
        columns of each and builds a `Memory` (`row_memory`) only for the candidates it keeps."""
        rows = await db.execute_fetchall(_CANDIDATES, _candidate_parameters(user_id, match, limit))
        return list(rows)

    @staticmethod
    def row_memory(row: sqlite3.Row) -> Memory:
        """The `Memory` of a row of `candidate_rows`."""
        return _row_to_memory(row)

    async def keyword_candidates(
        self, user_id: str, match: str, memory_filter: MemoryFilter, *, limit: int
    ) -> tuple[list[tuple[int, float, bool]], int]:
        """The first stage of hybrid search: the `limit` best full-text matches that pass `memory_filter`, as
        (rowid, strength = -bm25 with `BM25_WEIGHTS`, whether the memory's own text matched), best first, and
        how many match in all. "Own text" is content, entities and tags; a memory found only through its
        source message, speaker or conversation context has it False (docs/search.md, provenance).

        Under the default filter the rows are chosen inside FTS5 (`_keyword_window`), among the memories that hold
        every term when bm25's bounds prove no other row can enter (`_conjunction`): the rows, order and strengths
        of ranking every match.
        """
        where, params = memory_filter.where(user_id)

        def work(read: ReadStatement) -> tuple[list[tuple[int, float, bool]], int]:
            rows = None
            owned = _scoped_match(read, user_id, match)
            if memory_filter == MemoryFilter():
                rows, total = _keyword_window(read, user_id, match, owned, where, params, limit=limit)
            if rows is None:
                rows = read(
                    # bm25() only where the FTS table is queried: a window function beside it is refused.
                    f"WITH hits AS (SELECT m.rowid AS rowid, -{_BM25_SQL} AS strength "
                    "FROM memories_fts CROSS JOIN memories m ON m.rowid = memories_fts.rowid "
                    f"WHERE memories_fts MATCH ? AND {where}) "
                    "SELECT rowid, strength FROM hits ORDER BY strength DESC, rowid DESC LIMIT ?",
                    [owned, *params, limit],
                )
                total = _count_matches(read, owned, where, params) if rows else 0
            if not rows:
                return [], 0
            rowids = [int(row["rowid"]) for row in rows]
            # The rows are the user's already, so the own-text match needs no owner token.
            own = _matching_rowids(read, f"{{content entities tags}} : ({match})", rowids)
            return [
                (rowid, float(row["strength"]), rowid in own) for rowid, row in zip(rowids, rows, strict=True)
            ], total

        # One trip to a reader's thread, in one snapshot (`_ReaderPool.run`).
        return await self._reader.run(work)

    async def count_matching(self, user_id: str, match: str, rowids: Sequence[int]) -> int:
        """How many of `rowids` (memories of `user_id`) match the FTS5 expression `match` (for the exact total of a
        hybrid search)."""
        if not rowids:
            return 0
        wanted = list(rowids)
        return await self._reader.run(
            lambda read: len(_matching_rowids(read, _scoped_match(read, user_id, match), wanted))
        )

    async def highlights(self, user_id: str, match: str, rowids: Sequence[int]) -> dict[int, list[str]]:
        """The highlights of `Store.search` for those of `rowids` that match `match`."""
        if not rowids:
            return {}
        details = await self._reader.run(
            lambda read: _hit_details(read, _scoped_match(read, user_id, match), list(rowids))
        )
        return {rowid: marks for rowid, (_, marks) in details.items()}

    # --- vectors (search by meaning; docs/search.md) ---

    async def unembedded(
        self, model: str, dimension: int, *, user_id: str | None = None, limit: int = 256
    ) -> list[tuple[int, str, str, str]]:
        """Memories (active or superseded) lacking a vector of `model` and `dimension`: (rowid, user_id, content,
        category), oldest first, at most `limit`; only `user_id`'s when given. This is the durable embedding queue."""
        owner = "m.user_id = ? AND " if user_id is not None else ""
        async with self._reader.execute(
            "SELECT m.rowid AS rowid, m.user_id AS user_id, m.content AS content, m.category AS category "
            "FROM memories m "
            "LEFT JOIN memory_vectors v ON v.rowid = m.rowid "
            f"WHERE {owner}m.status IN ('active', 'superseded') "
            "AND (v.rowid IS NULL OR v.model != ? OR v.dimension != ?) ORDER BY m.rowid LIMIT ?",
            [*([user_id] if user_id is not None else []), model, dimension, limit],
        ) as cursor:
            rows = await cursor.fetchall()
        return [(int(row["rowid"]), str(row["user_id"]), str(row["content"]), str(row["category"])) for row in rows]

    async def with_any_vector(self, rowids: Sequence[int]) -> set[int]:
        """Those of `rowids` that have a vector of any model (issue 9/14 footprint: a stale vector means a model
        change, which the background worker re-embeds; a memory with none was written just now)."""
        found: set[int] = set()
        for start in range(0, len(rowids), 900):
            chunk = list(rowids[start : start + 900])
            marks = ", ".join("?" for _ in chunk)
            async with self._reader.execute(f"SELECT rowid FROM memory_vectors WHERE rowid IN ({marks})", chunk) as c:
                found.update(int(row[0]) for row in await c.fetchall())
        return found

    async def vector_counts(self, model: str, dimension: int) -> tuple[int, int]:
        """(memories active or superseded, how many of them lack a vector of `model` and `dimension`)."""
        async with self._reader.execute(VECTOR_COUNTS_SQL, (model, dimension)) as cursor:
            row = await cursor.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def write_vectors(
        self, db: aiosqlite.Connection, model: str, dimension: int, rows: Sequence[tuple[int, str, bytes]]
    ) -> list[int]:
        """Store (rowid, content embedded, float32 vector bytes) rows; return the rowids written.

        A row is written only if the memory still says `content`, so a vector computed before a concurrent
        rewrite never lands on the new text (the rewrite stays queued instead).
        """
        written: list[int] = []
        for rowid, content, vector in rows:
            async with db.execute(
                "INSERT OR REPLACE INTO memory_vectors (rowid, user_id, model, dimension, vector) "
                "SELECT rowid, user_id, ?, ?, ? FROM memories WHERE rowid = ? AND content = ?",
                (model, dimension, vector, rowid, content),
            ) as cursor:
                if cursor.rowcount:
                    written.append(rowid)
        return written

    async def clear_vectors(self, db: aiosqlite.Connection) -> int:
        """Delete every stored vector (for `reindex`); return how many there were."""
        async with db.execute("DELETE FROM memory_vectors") as cursor:
            return int(cursor.rowcount)

    async def user_vectors(
        self, user_id: str, model: str, dimension: int, *, batch: int = 4096
    ) -> AsyncGenerator[tuple[int, list[tuple[int, bytes]]], None]:
        """Every vector of `user_id` made by `model` with `dimension`, by rowid, in batches of (rowid, float32
        bytes); each batch comes with the number of such vectors in all (so a caller can allocate once)."""
        where = "WHERE user_id = ? AND model = ? AND dimension = ?"
        async with self._reader.execute(
            f"SELECT count(*) FROM memory_vectors {where}", (user_id, model, dimension)
        ) as c:
            row = await c.fetchone()
        total = int(row[0]) if row else 0
        async with self._reader.execute(
            f"SELECT rowid, vector FROM memory_vectors {where} ORDER BY rowid", (user_id, model, dimension)
        ) as cursor:
            while rows := await cursor.fetchmany(batch):
                yield total, [(int(found[0]), bytes(found[1])) for found in rows]

    async def _rows_in(
        self, sql: str, keys: Sequence[Any], parameters: Sequence[Any] = (), *, chunk: int = 500
    ) -> list[sqlite3.Row]:
        """The rows of `sql` run on a reader for `keys`, `chunk` at a time: `sql` has `{marks}` where the chunk's
        placeholders go (its `IN` list), and `parameters` follow the chunk's keys. SQLite caps the placeholders
        of one statement (999 in older builds), so a long list is split."""
        rows: list[sqlite3.Row] = []
        for start in range(0, len(keys), chunk):
            part = list(keys[start : start + chunk])
            marks = ", ".join("?" for _ in part)
            async with self._reader.execute(sql.format(marks=marks), [*part, *parameters]) as cursor:
                rows.extend(await cursor.fetchall())
        return rows

    async def vectors_of(
        self, user_id: str, model: str, dimension: int, rowids: Sequence[int]
    ) -> list[tuple[int, bytes]]:
        """The vectors (rowid, float32 bytes) of those of `rowids` that are `user_id`'s and made by `model` with
        `dimension`, in rowid order (issue 9's exact re-score of the coarse search's candidates)."""
        rows = await self._rows_in(
            "SELECT rowid, vector FROM memory_vectors NOT INDEXED WHERE rowid IN ({marks}) "
            "AND user_id = ? AND model = ? AND dimension = ?",
            rowids,
            (user_id, model, dimension),
            chunk=900,
        )
        return [(int(row[0]), bytes(row[1])) for row in rows]

    async def admitted(self, user_id: str, memory_filter: MemoryFilter, rowids: Sequence[int]) -> list[int]:
        """Those of `rowids` that are `user_id`'s memories and pass `memory_filter`, in the order given.

        Here, in `candidates` and in `vectors_of`, `NOT INDEXED` keeps SQLite on rowid lookups: left to itself it
        walks the (user_id, status) index over every memory of the user and tests each rowid against the list, 22 ms
        for 500 rowids of a 100,000-memory user instead of 1 ms (docs/benchmarks.md, "Peak RSS at 100k, fourth
        round"). The rowid is still used under `NOT INDEXED` (SQLite's documentation of the clause)."""
        where, params = memory_filter.where(user_id)
        literal = where.replace("{", "{{").replace("}", "}}")  # `_rows_in` formats the statement
        sql = "SELECT m.rowid FROM memories m NOT INDEXED WHERE m.rowid IN ({marks}) AND " + literal
        allowed = {int(row[0]) for row in await self._rows_in(sql, rowids, params)}
        return [rowid for rowid in rowids if rowid in allowed]

    async def memory_ids_with_prefix(self, user_id: str, prefix: str, *, limit: int = 2) -> list[str]:
        """Up to `limit` ids of `user_id`'s memories (any status) that start with `prefix`, in id order."""
        async with self._reader.execute(_IDS_WITH_PREFIX, (prefix, prefix + "g", user_id, limit)) as cursor:
            return [str(row[0]) for row in await cursor.fetchall()]

    async def numbers(self, user_id: str, memory_ids: Sequence[str]) -> dict[str, int]:
        """The memory number (`_M011_MEMORY_NUMBERS`: 1, 2, 3, ... per user, never given twice) of each of
        `memory_ids` that is a memory of `user_id`; ids of no memory of the user are left out. One query per 500 ids."""
        wanted = list(dict.fromkeys(memory_ids))
        if not wanted:
            return {}
        rows = await self._rows_in(
            "SELECT memory_id, number FROM memories WHERE memory_id IN ({marks}) AND user_id = ?", wanted, (user_id,)
        )
        return {str(row["memory_id"]): int(row["number"]) for row in rows}

    async def memory_id_by_number(self, user_id: str, number: int) -> str | None:
        """The id of `user_id`'s memory (any status) with memory number `number`, or None when there is none
        (never given, or its memory was purged). Another user's numbers are never looked at."""
        async with self._reader.execute(
            "SELECT memory_id FROM memories WHERE user_id = ? AND number = ?", (user_id, number)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def own_names(self, user_id: str) -> list[str]:
        """The contents of `user_id`'s active memories that say the user's name ("User's name is Joaquin Araya",
        "User's full name is ...", "User goes by Jo", "User's nickname is ..."), newest first, at most
        `OWN_NAME_MEMORIES`. One index seek (`_M012_OWN_NAMES`), whatever the user holds."""
        async with self._reader.execute(
            f"SELECT content FROM memories INDEXED BY memories_own_names WHERE user_id = ? AND {_OWN_NAMES} "
            "ORDER BY updated_at DESC LIMIT ?",
            (user_id, OWN_NAME_MEMORIES),
        ) as cursor:
            return [str(row[0]) for row in await cursor.fetchall()]

    async def candidates(self, user_id: str, rowids: Sequence[int]) -> dict[int, tuple[Memory, int]]:
        """The memories `rowids` of `user_id` with their message group (the id that `Ranking`'s repeat penalty
        groups by: the message they came from, else their own negated rowid)."""
        rows = await self._rows_in(
            f"SELECT {_MEMORY_COLUMNS}, m.rowid AS hit_rowid, coalesce(m.message_id, -m.rowid) AS message_group "
            "FROM memories m NOT INDEXED WHERE m.rowid IN ({marks}) AND m.user_id = ?",
            rowids,
            (user_id,),
        )
        return {int(row["hit_rowid"]): (_row_to_memory(row), int(row["message_group"])) for row in rows}

    async def links(self, user_id: str, memory_id: str) -> dict[str, list[str]]:
        """The links of one memory: ids it `supersedes`, ids it is `superseded_by`, and `related` ids (both ways)."""
        out: dict[str, list[str]] = {"supersedes": [], "superseded_by": [], "related": []}
        async with self._reader.execute(
            "SELECT from_id, to_id, kind FROM memory_links WHERE user_id = ? AND (from_id = ? OR to_id = ?) "
            "ORDER BY link_id",
            (user_id, memory_id, memory_id),
        ) as cursor:
            rows = await cursor.fetchall()
        for row in rows:
            outgoing = row["from_id"] == memory_id
            other = row["to_id"] if outgoing else row["from_id"]
            key = "related" if row["kind"] == "related" else ("supersedes" if outgoing else "superseded_by")
            if other not in out[key]:
                out[key].append(other)
        return out

    async def successors(self, user_id: str, memory_ids: Sequence[str]) -> dict[str, list[str]]:
        """For each of `memory_ids`, the ids of the memories that supersede it (only ids that have any)."""
        out: dict[str, list[str]] = {}
        if not memory_ids:
            return out
        marks = ", ".join("?" for _ in memory_ids)
        async with self._reader.execute(
            f"SELECT from_id, to_id FROM memory_links WHERE user_id = ? AND kind = 'supersedes' AND to_id IN ({marks}) "
            "ORDER BY link_id",
            (user_id, *memory_ids),
        ) as cursor:
            rows = await cursor.fetchall()
        for row in rows:
            out.setdefault(row["to_id"], []).append(row["from_id"])
        return out

    async def user_ids(self, *, limit: int) -> list[str]:
        """Up to `limit` users that have active memories, alphabetically."""
        async with self._reader.execute(
            "SELECT DISTINCT user_id FROM memories WHERE status = 'active' ORDER BY user_id LIMIT ?", (limit,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [row["user_id"] for row in rows]

    # --- export and import of history and links (issue 10: "export is everything") ---

    async def all_history(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """Every history row of the user's memories, by memory id, oldest first (for a full export)."""
        out: dict[str, list[dict[str, Any]]] = {}
        async with self._reader.execute(
            "SELECT memory_id, changed_at, action, old_content, new_content, source_message FROM memory_history "
            "WHERE user_id = ? ORDER BY history_id",
            (user_id,),
        ) as cursor:
            rows = await cursor.fetchall()
        for row in rows:
            entry = {key: row[key] for key in ("changed_at", "action", "old_content", "new_content", "source_message")}
            out.setdefault(str(row["memory_id"]), []).append(entry)
        return out

    async def all_links(self, user_id: str) -> list[dict[str, str]]:
        """Every link between the user's memories (`from_id`, `to_id`, `kind`, `created_at`), oldest first."""
        async with self._reader.execute(
            "SELECT from_id, to_id, kind, created_at FROM memory_links WHERE user_id = ? ORDER BY link_id", (user_id,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [{key: str(row[key]) for key in ("from_id", "to_id", "kind", "created_at")} for row in rows]

    async def import_history_and_links(
        self,
        db: aiosqlite.Connection,
        user_id: str,
        history: Mapping[str, Sequence[Mapping[str, Any]]],
        occurred: Mapping[str, str],
        links: Sequence[Mapping[str, str]],
    ) -> None:
        """After `import_memories`: give the memories just imported their exported history (replacing the one
        `created` row the import wrote) and `occurred_at`, and add the exported links whose two ends are
        memories of `user_id` (a link already there is kept).

        Args:
            history: memory id → its history rows (`changed_at`, `action`, `old_content`, `new_content`,
                `source_message`), oldest first; only ids imported by this call.
            occurred: memory id → `occurred_at` (UTC ISO-8601), for ids imported by this call.
            links: `from_id`, `to_id`, `kind` (`supersedes` or `related`), optional `created_at`.
        """
        now = utc_now()

        def work(conn: sqlite3.Connection) -> None:
            for memory_id, rows in history.items():
                if not rows:
                    continue
                conn.execute("DELETE FROM memory_history WHERE memory_id = ? AND user_id = ?", (memory_id, user_id))
                conn.executemany(
                    _INSERT_HISTORY,
                    [
                        (
                            memory_id,
                            user_id,
                            row["action"],
                            row.get("old_content"),
                            row.get("new_content"),
                            row.get("source_message"),
                            row["changed_at"],
                        )
                        for row in rows
                    ],
                )
            conn.executemany(
                "UPDATE memories SET occurred_at = ? WHERE memory_id = ? AND user_id = ? AND occurred_at IS NULL",
                [(when, memory_id, user_id) for memory_id, when in occurred.items()],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO memory_links (user_id, from_id, to_id, kind, created_at) SELECT ?, ?, ?, ?, ? "
                "WHERE (SELECT COUNT(*) FROM memories WHERE user_id = ? AND memory_id IN (?, ?)) = 2",
                [
                    (user_id, link["from_id"], link["to_id"], link["kind"], link.get("created_at") or now, user_id)
                    + (link["from_id"], link["to_id"])
                    for link in links
                ],
            )

        # One trip to the database thread for the batch (a trip per memory with history was most of its time).
        await _on_thread(db, work)

    async def list_users(self, prefix: str = "", *, limit: int = 100) -> list[str]:
        """Distinct user ids with at least one memory (any status) that start with `prefix`, sorted, at most `limit`.

        `prefix` is compared literally and case-sensitively (no LIKE, so '%' and '_' in it are plain characters).
        """
        async with self._reader.execute(
            "SELECT DISTINCT user_id FROM memories WHERE substr(user_id, 1, ?) = ? ORDER BY user_id LIMIT ?",
            [len(prefix), prefix, limit],
        ) as cursor:
            rows = await cursor.fetchall()
        return [str(row[0]) for row in rows]

    async def close(self) -> None:
        await self.flush_access()
        for connection in self._reader.connections:
            if connection is not self._writer:
                await connection.close()
        await self._writer.close()


def _lower_priority(_: sqlite3.Connection) -> None:
    """Make the calling thread `BACKGROUND_NICE` nicer (on the background reader's own thread). Linux only:
    there each thread has its own nice value; elsewhere the call would renice the whole process."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICE))
    except OSError as error:  # a sandbox may forbid it; the reader then works at the usual priority
        logger.warning("cannot lower the background reader's priority: %s", error)


async def _connect(path: str, *, read_only: bool = False) -> aiosqlite.Connection:
    if read_only:
        db = await aiosqlite.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    else:
        db = await aiosqlite.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    if not read_only:
        # Freed pages and cells are zeroed, so a purged memory leaves no bytes behind (docs/forgetting.md).
        await db.execute("PRAGMA secure_delete = ON")
    await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await db.execute("PRAGMA foreign_keys = ON")
    return db


@asynccontextmanager
async def open_store(
    path: str, *, readers: int = READ_CONNECTIONS, max_read_instructions: int | None = MAX_READ_INSTRUCTIONS
) -> AsyncIterator[Store]:
    """Open (creating and migrating if needed) the database at `path` and close it on exit.

    `path` may be ':memory:' (one private in-memory database, for tests; its one connection also reads).
    The parent folder is created. `readers` read-only connections serve reads, each statement limited to
    `max_read_instructions` SQLite VM instructions (None: no limit), and one more, the background reader
    (`BACKGROUND_NICE`), serves the reads made with `READ_BACKGROUND` set.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a SQLite database.
        RuntimeError: the file's schema is newer than this version understands.
    """
    in_memory = path == ":memory:"
    if not in_memory:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        path = str(Path(path).expanduser())
    writer = await _connect(path)
    try:
        if not in_memory:
            await writer.execute("PRAGMA journal_mode = WAL")
            await writer.execute("PRAGMA synchronous = NORMAL")
        await migrate(writer)
        pool: list[_Reader] = []
        spare: list[_Reader] = []  # the background reader (`BACKGROUND_NICE`), for a file only
        try:
            if in_memory:
                pool.append(_Reader(writer, None))  # the writer's connection: no budget on writes
            for _ in range(0 if in_memory else max(1, readers)):
                pool.append(_Reader(await _connect(path, read_only=True), max_read_instructions))
                await pool[-1].install()
            if not in_memory:
                spare.append(_Reader(await _connect(path, read_only=True), max_read_instructions))
                await spare[0].install()
                await _on_thread(spare[0].connection, _lower_priority)
        except BaseException:
            for reader in [*pool, *spare]:
                if reader.connection is not writer:
                    await reader.connection.close()
            raise
    except BaseException:
        await writer.close()
        raise
    store = Store(writer, _ReaderPool(pool, _ReaderPool(spare) if spare else None), path)
    try:
        yield store
    finally:
        # Shielded: a cancelled server must still close its connections (and checkpoint the WAL).
        with anyio.CancelScope(shield=True):
            await store.close()
