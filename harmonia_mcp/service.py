"""`MemoryService`: the async core behind every front door (the MCP server and the CLI).

It validates arguments (raising `InvalidInput` with a message that says what is allowed), runs
extraction, resolves times and writes each message's memories in one transaction. It knows nothing
of MCP; the server turns its errors into tool errors.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from harmonia_mcp import conflicts, export, search
from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.extract import Extractor, run_extractor
from harmonia_mcp.models import (
    MEMORY_ID_PATTERN,
    USER_ID_PATTERN,
    Category,
    DeleteResult,
    ExportFormat,
    ExportResult,
    HistoryEntry,
    ImportProblem,
    ImportResult,
    ListResult,
    ListSort,
    Memory,
    MemoryDetails,
    MemoryLinks,
    MemoryView,
    Pagination,
    ResolutionStrategy,
    RestoreResult,
    SearchHit,
    SearchResult,
    SearchSort,
    SortOrder,
    StoredMemory,
    StoreResult,
)
from harmonia_mcp.store import DateField, MemoryFilter, NewMemory, Ranking, Store, to_utc_text, utc_now
from harmonia_mcp.temporal import parse_timestamp

logger = logging.getLogger(__name__)

SUPPORTED_STRATEGIES: tuple[ResolutionStrategy, ...] = ("auto", "update", "merge", "version", "keep_both", "skip")

MAX_SEARCH_LIMIT = 100
MAX_LIST_LIMIT = 500
MAX_METADATA_BYTES = 16 * 1024
MAX_SPEAKER_CHARS = 100
RECENT_COUNT = 50
MAX_FILTER_TAGS = 20
# Conversation context indexed with each memory (docs/search.md): the messages said just before it in the
# same user's session, if said within this window (a later session is a new conversation).
CONTEXT_MESSAGES = 2
CONTEXT_WINDOW_SECONDS = 6 * 3600.0

_USER_ID = re.compile(USER_ID_PATTERN)
_MEMORY_ID = re.compile(MEMORY_ID_PATTERN.removeprefix("^").removesuffix("$"))
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ServiceLimits:
    """Defaults and limits the service enforces; `timezone` is used for timestamps given without an offset."""

    default_user: str
    max_message_bytes: int
    timezone: tzinfo
    # store_memory's strategy when a call names none: per user if listed, else the default.
    resolution_strategy: ResolutionStrategy = "auto"
    user_strategies: Mapping[str, ResolutionStrategy] = field(default_factory=dict[str, ResolutionStrategy])


class MemoryService:
    """Store, search, list, delete and export memories for many users over one `Store`."""

    def __init__(
        self, store: Store, extractor: Extractor, limits: ServiceLimits, ranking: Ranking | None = None
    ) -> None:
        self.store = store
        self.extractor = extractor
        self.limits = limits
        self.ranking = ranking or Ranking()

    # --- argument checks ---

    def user(self, user_id: str | None) -> str:
        """`user_id`, or the default user when None.

        Raises:
            InvalidInput: not 1-128 characters of letters, digits, '_', '.', '@', '-'.
        """
        if user_id is None:
            return self.limits.default_user
        if not _USER_ID.match(user_id):
            raise InvalidInput(
                f"user_id {user_id[:140]!r} is invalid: use 1-128 characters of letters, digits, '_', '.', '@' or '-'"
            )
        return user_id

    def _timestamp(self, value: str | None, field: str) -> datetime | None:
        return None if value is None else parse_timestamp(value, self.limits.timezone, field=field)

    def _filter(
        self,
        *,
        category: Category | str | None,
        from_date: str | None,
        to_date: str | None,
        date_field: DateField = "created_at",
        min_confidence: float | None = None,
        include_inactive: bool = False,
        max_confidence: float | None = None,
        tags: list[str] | None = None,
        session_id: str | None = None,
    ) -> MemoryFilter:
        start = self._timestamp(from_date, "from_date")
        end = self._timestamp(to_date, "to_date")
        if end is not None and to_date is not None and _DATE_ONLY.match(to_date.strip()):
            end += timedelta(days=1)  # a date-only to_date includes that whole day
        if start is not None and end is not None and start >= end:
            raise InvalidInput(f"from_date {from_date!r} is not before to_date {to_date!r}")
        if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
            raise InvalidInput(f"min_confidence {min_confidence} is out of range: use a number from 0 to 1")
        if max_confidence is not None and not 0.0 <= max_confidence <= 1.0:
            raise InvalidInput(f"max_confidence {max_confidence} is out of range: use a number from 0 to 1")
        if min_confidence is not None and max_confidence is not None and min_confidence > max_confidence:
            raise InvalidInput(f"min_confidence {min_confidence} is above max_confidence {max_confidence}")
        wanted = tuple(tag.strip() for tag in tags or [])
        if len(wanted) > MAX_FILTER_TAGS or any(not 1 <= len(tag) <= 100 for tag in wanted):
            raise InvalidInput(f"tags must be at most {MAX_FILTER_TAGS} tags of 1-100 characters each")
        return MemoryFilter(
            category=_category(category),
            from_date=start,
            to_date=end,
            date_field=date_field,
            min_confidence=min_confidence,
            include_inactive=include_inactive,
            tags=wanted,
            max_confidence=max_confidence,
            session_id=session_id,
        )

    def _message(self, message: str) -> str:
        text = message.strip()
        if not text:
            raise InvalidInput("message is empty: send the text to remember, e.g. 'I have a dog called Biggie'")
        size = len(text.encode("utf-8"))
        if size > self.limits.max_message_bytes:
            raise InvalidInput(
                f"message is {size} bytes; the limit is {self.limits.max_message_bytes} bytes "
                "(HARMONIA_MAX_MESSAGE_BYTES): split it into smaller messages"
            )
        return text

    def _strategy(self, user: str, requested: str | None) -> ResolutionStrategy:
        if requested is None:
            return self.limits.user_strategies.get(user, self.limits.resolution_strategy)
        if requested not in SUPPORTED_STRATEGIES:
            raise InvalidInput(
                f"resolution_strategy {requested!r} is unknown: use one of " + ", ".join(SUPPORTED_STRATEGIES)
            )
        return requested

    # --- operations ---

    async def store_memory(
        self,
        message: str,
        *,
        user_id: str | None = None,
        speaker: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        occurred_at: str | None = None,
        resolution_strategy: str | None = None,
        timezone: str | None = None,
    ) -> StoreResult:
        """Extract memories from `message` and store them in one transaction.

        Args:
            message: what `speaker` said (1 byte to `max_message_bytes`, UTF-8).
            user_id: whose memory this is; the default user when None.
            speaker: who "I"/"my" are in the message; "User" when None.
            session_id: an optional conversation id kept with each memory.
            metadata: a JSON object (at most 16 KiB) kept unchanged with each memory.
            occurred_at: when the message was said (ISO-8601; no offset means the configured time zone);
                relative times resolve against it. Now when None.
            resolution_strategy: how to reconcile each memory with the user's active ones (`auto`,
                `update`, `merge`, `version`, `keep_both`, `skip`; see conflicts.reconcile and
                docs/conflicts.md). None means the user's configured default (`ServiceLimits`).
            timezone: the speaker's IANA time zone ("America/New_York"): relative times resolve in it
                (with its DST rules) and an `occurred_at` without an offset is read in it. None: the
                configured zone, whose DST rules are used when `occurred_at`'s offset agrees with it.

        Returns:
            A `StoreResult` with one entry per extracted memory, in message order. Each memory's
            `extractor` names what produced it ("rules" when the model failed), and `warnings` says
            why the model was not used.

        Raises:
            InvalidInput: any argument is out of range; nothing is stored.
            sqlite3.Error: a write failed; the transaction is rolled back and nothing is stored.
        """
        text = self._message(message)
        user = self.user(user_id)
        who = _speaker(speaker)
        meta = _metadata(metadata)
        if session_id is not None and not 1 <= len(session_id) <= 256:
            raise InvalidInput("session_id must be 1-256 characters")
        strategy = self._strategy(user, resolution_strategy)
        reference = self._reference_time(occurred_at, timezone)
        extraction = await run_extractor(self.extractor, text, speaker=who, reference_time=reference)
        extracted = extraction.memories
        stored: list[StoredMemory] = []
        async with self.store.transaction() as db:
            context = await self.store.conversation_context(
                db, user, session_id, reference, count=CONTEXT_MESSAGES, window_seconds=CONTEXT_WINDOW_SECONDS
            )
            message_id = await self.store.record_message(db, user, session_id, who, text, reference)
            await self.store.prune_messages(db, user, session_id, keep=CONTEXT_MESSAGES)
            for item in extracted:
                new = NewMemory(user, item, extraction.extractor, text, who, session_id, meta, message_id, context)
                resolution = await conflicts.reconcile(self.store, db, new, strategy, [who])
                stored.append(_resolved(resolution))
        warnings = list(extraction.warnings)
        if not extracted:
            warnings.append("No durable fact found in the message (small talk, a question or a request).")
        return StoreResult(memories=stored, warnings=warnings)

    def _reference_time(self, occurred_at: str | None, timezone: str | None) -> datetime:
        """When the message was said, in the zone whose rules should resolve "tomorrow" and "in 3 months".

        Raises:
            InvalidInput: `timezone` is not an IANA zone name, or `occurred_at` is not ISO-8601.
        """
        zone: tzinfo = self.limits.timezone
        if timezone is not None:
            try:
                zone = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise InvalidInput(
                    f"timezone {timezone[:60]!r} is not an IANA time zone name: use e.g. 'America/New_York', "
                    "'Europe/Lisbon' or 'UTC'"
                ) from None
        if occurred_at is None:
            return datetime.now(zone)
        said = parse_timestamp(occurred_at, zone, field="occurred_at")
        in_zone = said.astimezone(zone)
        # A fixed offset ("-04:00") has no DST rules; adopt the zone's when it agrees (or was asked for),
        # so "in 3 months at 9am" gets November's offset. Otherwise the offset given wins.
        if timezone is not None or in_zone.utcoffset() == said.utcoffset():
            return in_zone
        return said

    async def search_memories(
        self,
        query: str,
        *,
        user_id: str | None = None,
        limit: int = 10,
        offset: int = 0,
        category: Category | str | None = None,
        from_date: str | None = None,
        to_date: str | None = None,
        date_field: DateField = "created_at",
        min_confidence: float | None = None,
        sort_by: SearchSort = "relevance",
        include_metadata: bool = False,
        include_superseded: bool = False,
        tags: list[str] | None = None,
        max_confidence: float | None = None,
        session_id: str | None = None,
        boost_category: Category | str | None = None,
    ) -> SearchResult:
        """Full-text search over a user's active memories; `query="*"` admits every memory the filters admit.

        The query is turned into a safe FTS5 expression by `search.build_match_expression`; hits are ranked
        by `Ranking` (bm25 with column weights, recency, an optional `boost_category`), see docs/search.md.
        Every filter (category, tags: all of them, dates on `date_field`, confidence range, session) is applied
        in SQL, so `total_count` and `has_more` are exact.

        With `include_superseded`, older versions that a newer memory superseded are searched too; each
        hit's `status` says which it is.

        Returns:
            One page of hits (best first for `sort_by="relevance"`, else newest/highest first) and
            exact pagination. With `query="*"` every hit's relevance_score is 1.0.

        Raises:
            InvalidInput: an empty query, a query with no word in it (letters or digits), a query beyond the
                bounds of `search.check_query`, or a bad filter.
        """
        user = self.user(user_id)
        _page_bounds(limit, offset, MAX_SEARCH_LIMIT)
        memory_filter = self._filter(
            category=category,
            from_date=from_date,
            to_date=to_date,
            date_field=date_field,
            min_confidence=min_confidence,
            max_confidence=max_confidence,
            tags=tags,
            session_id=session_id,
        )
        if include_superseded:
            memory_filter = dataclasses.replace(memory_filter, include_superseded=True)
        boost = _category(boost_category)
        if not query.strip():
            raise InvalidInput("query is empty: give words to search for, or '*' to list every memory")
        if query.strip() == "*":
            order = "created_at" if sort_by == "relevance" else sort_by
            memories, total = await self.store.list_memories(
                user, memory_filter, sort_by=order, limit=limit, offset=offset
            )
            hits = [_hit(memory, 1.0, [], include_metadata) for memory in memories]
            return SearchResult(results=hits, pagination=_pagination(total, limit, offset, len(hits)))
        search.check_query(query)
        match = search.build_match_expression(query)
        if match is None:
            raise InvalidInput(
                f"query {query[:100]!r} has no word to search for: give words (letters or digits), "
                "a \"quoted phrase\", or '*' to list every memory"
            )
        found, total = await self.store.search(
            user,
            match,
            memory_filter,
            sort_by=sort_by,
            limit=limit,
            offset=offset,
            ranking=self.ranking,
            boost_category=boost,
        )
        hits = [_hit(hit.memory, hit.relevance, hit.highlights, include_metadata) for hit in found]
        return SearchResult(results=hits, pagination=_pagination(total, limit, offset, len(hits)))

    async def list_memories(
        self,
        *,
        user_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        category: Category | str | None = None,
        from_date: str | None = None,
        to_date: str | None = None,
        date_field: DateField = "created_at",
        sort_by: ListSort = "created_at",
        sort_order: SortOrder = "desc",
        include_inactive: bool = False,
    ) -> ListResult:
        """One page of a user's memories, newest first by default; superseded and deleted ones only on request."""
        user = self.user(user_id)
        _page_bounds(limit, offset, MAX_LIST_LIMIT)
        memory_filter = self._filter(
            category=category,
            from_date=from_date,
            to_date=to_date,
            date_field=date_field,
            include_inactive=include_inactive,
        )
        memories, total = await self.store.list_memories(
            user, memory_filter, sort_by=sort_by, descending=sort_order == "desc", limit=limit, offset=offset
        )
        views = [MemoryView.of(memory) for memory in memories]
        return ListResult(memories=views, pagination=_pagination(total, limit, offset, len(views)))

    async def get_memory(self, memory_id: str, *, user_id: str | None = None) -> Memory:
        """One active memory of the user.

        Raises:
            MemoryNotFound: no active memory with that id for that user.
        """
        return await self.store.get_memory(self.user(user_id), memory_id)

    async def memory_details(self, memory_id: str, *, user_id: str | None = None) -> MemoryDetails:
        """One memory in any status (active, superseded or deleted), its history oldest first, and its links.

        Raises:
            MemoryNotFound: the user has no memory with that id.
        """
        user = self.user(user_id)
        memory = await self.store.get_memory(user, memory_id, include_inactive=True)
        history = [HistoryEntry.model_validate(row) for row in await self.store.history(user, memory_id)]
        links = MemoryLinks.model_validate(await self.store.links(user, memory_id))
        return MemoryDetails(memory=MemoryView.of(memory), update_history=history, links=links)

    async def restore_memory(self, memory_id: str, *, user_id: str | None = None) -> RestoreResult:
        """Make a deleted or superseded memory active again (a `restored` history row records it).

        A memory that superseded it stays active; its id is in `active_successors`, for the caller to
        delete if the change it made was wrong.

        Raises:
            MemoryNotFound: the user has no such memory, or it is already active.
        """
        user = self.user(user_id)
        async with self.store.transaction() as db:
            before = await self.store.set_status(
                db, user, memory_id, "active", expected=("deleted", "superseded"), source_message=None
            )
        memory = await self.store.get_memory(user, memory_id)
        successors = (await self.store.successors(user, [memory_id])).get(memory_id, [])
        statuses = [(await self.store.get_memory(user, other, include_inactive=True)).status for other in successors]
        active = [other for other, status in zip(successors, statuses, strict=True) if status == "active"]
        return RestoreResult(memory=MemoryView.of(memory), previous_status=before.status, active_successors=active)

    async def recent_memories(self, *, user_id: str | None = None, count: int = RECENT_COUNT) -> list[Memory]:
        """The user's `count` newest active memories, newest first."""
        memories, _ = await self.store.list_memories(self.user(user_id), MemoryFilter(), limit=count)
        return memories

    async def delete_memory(self, memory_id: str, *, user_id: str | None = None) -> DeleteResult:
        """Soft-delete one memory: it leaves search, lists and exports; its row and history stay.

        Raises:
            MemoryNotFound: unknown id for that user, or already deleted.
        """
        user = self.user(user_id)
        async with self.store.transaction() as db:
            await self.store.soft_delete(db, user, memory_id)
        return DeleteResult(memory_id=memory_id, deleted=True)

    async def export_memories(
        self,
        *,
        user_id: str | None = None,
        format: str = "json",
        category: Category | str | None = None,
        from_date: str | None = None,
        to_date: str | None = None,
        max_memories: int | None = None,
    ) -> ExportResult:
        """Every active memory of the user that the filters admit, oldest first, rendered in `format`.

        Raises:
            InvalidInput: an unknown format, a bad filter, or `max_memories` below 1.
        """
        user = self.user(user_id)
        if format not in ("json", "csv", "markdown", "text"):
            raise InvalidInput(f"format {format!r} is not supported: use json, csv, markdown or text")
        if max_memories is not None and max_memories < 1:
            raise InvalidInput("max_memories must be at least 1 (or omitted for all)")
        memory_filter = self._filter(category=category, from_date=from_date, to_date=to_date)
        memories, _ = await self.store.list_memories(
            user, memory_filter, sort_by="created_at", descending=False, limit=max_memories
        )
        fmt: ExportFormat = format  # type: ignore[assignment]  # checked just above
        data = export.render(fmt, user, memories, utc_now())
        return ExportResult(format=fmt, memory_count=len(memories), data=data)

    async def import_memories(
        self,
        source: str | bytes | IO[bytes],
        *,
        user_id: str | None = None,
        skip_invalid: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportResult:
        """Load a JSON export (as `export_memories` writes it), streamed, in batches; idempotent by `memory_id`.

        Two passes over `source` (so a file or stdin must be given seekable; str and bytes are wrapped):
        the first validates every row with `import_row` and reports every bad one, the second inserts the
        good rows `IMPORT_BATCH` at a time, each batch its own short transaction, so other writers of the
        file (another server process) wait at most one batch. An import that stops half way (a crash, a
        kill) leaves whole batches behind; running it again adds the rest.

        A row whose `memory_id` the target user already has is skipped ("already there"). A row whose id
        belongs to another user is imported under a new id derived from the user and the old id (the same
        on every run, so importing twice still adds nothing), with everything else, its provenance
        (source message, speaker, session, times, metadata) included, kept.

        Args:
            source: the export, `{"user_id": ..., "memories": [{every field of a memory}, ...]}`.
            user_id: whose memories they become; the document's `user_id` when None.
            skip_invalid: import the valid rows of a file that has invalid ones (reported in `invalid`),
                instead of importing nothing.
            progress: called with (rows done, rows in all) after each batch.

        Returns:
            How many memories were added, skipped as already there, given new ids, and found invalid.

        Raises:
            InvalidInput: not JSON, not an export object, a bad user_id, or (without `skip_invalid`) any
                invalid row: the message lists the bad rows by index and why; nothing is imported then.
            StoreBusy: another process kept the database locked through every retry (whole batches
                already written stay; run the import again to finish).
        """
        stream: IO[bytes] = (
            io.BytesIO(source.encode("utf-8") if isinstance(source, str) else source)
            if isinstance(source, str | bytes)
            else source
        )
        header = export.ExportHeader()
        invalid: dict[int, str] = {}
        first_index: dict[str, int] = {}
        rows = 0
        for index, raw in enumerate(export.read_json_export(stream, header)):
            rows += 1
            try:
                memory = self.import_row(raw, "_")
            except InvalidInput as error:
                invalid[index] = str(error)
                continue
            earlier = first_index.setdefault(memory.memory_id, index)
            if earlier != index:
                invalid[index] = f"memory_id {memory.memory_id!r} repeats memories[{earlier}]"
        if user_id is None and header.user_id is not None and not isinstance(header.user_id, str):
            raise InvalidInput('the import file\'s "user_id" must be a string (or pass --user-id)')
        owner = self.user(user_id if user_id is not None else header.user_id)
        if invalid and not skip_invalid:
            raise InvalidInput(_invalid_rows_message(invalid, rows))
        stream.seek(0)
        imported = renamed = 0
        batch: list[Memory] = []
        done = 0

        async def flush() -> None:
            nonlocal imported, renamed, done
            added, moved = await self._import_batch(batch)
            imported, renamed, done = imported + added, renamed + moved, done + len(batch)
            batch.clear()
            if progress is not None:
                progress(done, rows - len(invalid))

        for index, raw in enumerate(export.read_json_export(stream, export.ExportHeader())):
            if index in invalid:
                continue
            batch.append(self.import_row(raw, owner))
            if len(batch) >= IMPORT_BATCH:
                await flush()
        if batch:
            await flush()
        valid = rows - len(invalid)
        return ImportResult(
            user_id=owner,
            imported=imported,
            skipped=valid - imported,
            new_ids=renamed,
            invalid=[ImportProblem(index=index, reason=reason) for index, reason in sorted(invalid.items())],
        )

    async def _import_batch(self, memories: list[Memory]) -> tuple[int, int]:
        async with self.store.transaction() as db:
            return await self.store.import_memories(db, memories)

    def import_row(self, raw: Any, owner: str) -> Memory:
        """One row of a JSON export as the `Memory` to insert for `owner`, checked as the tools check values.

        The per-row mapping of `import_memories`: the fields of `MemoryView`, a `mem_` + 16 hex id, non-empty
        content within `max_message_bytes`, confidence 0-1, speaker, session_id and metadata by the same rules
        as `store_memory`, and ISO-8601 times with an offset (stored, like the tools', in UTC).

        Raises:
            InvalidInput: the row is not an object or a field is missing or invalid; the message names the field.
        """
        if not isinstance(raw, dict):
            raise InvalidInput(f"is a JSON {type(raw).__name__}, not an object with the fields of a memory")
        _check_depth(raw.get("metadata"), "metadata")
        try:
            view = MemoryView.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidInput(f"{where}: {first['msg']}") from None
        if not _MEMORY_ID.fullmatch(view.memory_id):
            raise InvalidInput(f"memory_id {view.memory_id[:40]!r} is not of the form mem_ + 16 hex digits")
        content = view.content.strip()
        if not content:
            raise InvalidInput("content is empty")
        if len(content.encode("utf-8")) > self.limits.max_message_bytes:
            raise InvalidInput(f"content is longer than {self.limits.max_message_bytes} bytes")
        if not 0.0 <= view.confidence <= 1.0:  # false for NaN too
            raise InvalidInput(f"confidence {view.confidence} is out of range: use a number from 0 to 1")
        if view.speaker is not None:
            _speaker(view.speaker)
        if view.session_id is not None and not 1 <= len(view.session_id) <= 256:
            raise InvalidInput("session_id must be 1-256 characters")
        _metadata(view.metadata)
        if not view.extractor.strip():
            raise InvalidInput("extractor is empty")
        zone = self.limits.timezone
        fields = view.model_dump()
        fields["content"] = content
        try:
            if view.event_time is not None:
                fields["event_time"] = parse_timestamp(view.event_time, zone, field="event_time").isoformat()
                to_utc_text(datetime.fromisoformat(fields["event_time"]))  # the store keeps it in UTC too
            for name in ("created_at", "updated_at"):
                fields[name] = to_utc_text(parse_timestamp(fields[name], zone, field=name))
        except (OverflowError, ValueError) as error:  # InvalidInput is a ValueError: keep its message
            if isinstance(error, InvalidInput):
                raise
            raise InvalidInput(f"a time is out of range (years 1-9999 in UTC): {error}") from None
        return Memory.model_construct(user_id=owner, **fields)  # validated just above, as MemoryView


# Memories per batch of `import_memories`, each batch one transaction: about 0.1 s of writing on the 2-core
# benchmark machine, so a writer in another process waits far less than its 5 s busy timeout.
IMPORT_BATCH = 500
MAX_REPORTED_ROWS = 20
MAX_METADATA_DEPTH = 32


def _invalid_rows_message(invalid: Mapping[int, str], rows: int) -> str:
    shown = [f"memories[{index}]: {reason}" for index, reason in sorted(invalid.items())[:MAX_REPORTED_ROWS]]
    more = f"\n  ... and {len(invalid) - MAX_REPORTED_ROWS} more" if len(invalid) > MAX_REPORTED_ROWS else ""
    return (
        f"{len(invalid)} of {rows} rows of the import file are invalid:\n  "
        + "\n  ".join(shown)
        + more
        + "\nfix them, or pass --skip-invalid to import the valid rows"
    )


def _check_depth(value: Any, field: str) -> None:
    """Refuse JSON nested deeper than `MAX_METADATA_DEPTH` (walked without recursion).

    Raises:
        InvalidInput: `value` is nested too deeply.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise InvalidInput(f"{field} is nested more than {MAX_METADATA_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _category(value: Category | str | None) -> Category | None:
    if value is None or isinstance(value, Category):
        return value
    try:
        return Category(value)
    except ValueError:
        allowed = ", ".join(category.value for category in Category)
        raise InvalidInput(f"category {value!r} is unknown: use one of {allowed}") from None


def _speaker(speaker: str | None) -> str:
    if speaker is None:
        return "User"
    name = speaker.strip()
    if not 1 <= len(name) <= MAX_SPEAKER_CHARS or _CONTROL.search(name):
        raise InvalidInput(f"speaker must be a name of 1-{MAX_SPEAKER_CHARS} characters on one line, e.g. 'Caroline'")
    return name


def _metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    if metadata is None:
        return None
    _check_depth(metadata, "metadata")
    try:
        size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"metadata must be a JSON object: {error}") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES} bytes")
    return metadata


def _page_bounds(limit: int, offset: int, max_limit: int) -> None:
    if not 1 <= limit <= max_limit:
        raise InvalidInput(f"limit {limit} is out of range: use 1 to {max_limit}")
    if offset < 0:
        raise InvalidInput(f"offset {offset} is negative: use 0 or more")


def _pagination(total: int, limit: int, offset: int, returned: int) -> Pagination:
    return Pagination(total_count=total, limit=limit, offset=offset, has_more=offset + returned < total)


def _stored(memory: Memory, action: Literal["created", "skipped"]) -> StoredMemory:
    return StoredMemory(
        memory_id=memory.memory_id,
        content=memory.content,
        category=memory.category,
        confidence=memory.confidence,
        event_time=memory.event_time,
        action=action,
        extractor=memory.extractor,
        metadata=memory.metadata,
    )


def _resolved(resolution: conflicts.Resolution) -> StoredMemory:
    stored = _stored(resolution.memory, "created")
    return stored.model_copy(
        update={
            "action": resolution.action,
            "conflict": resolution.conflict,
            "related_memory_ids": resolution.related_memory_ids,
            "supersedes": resolution.supersedes,
        }
    )


def _hit(memory: Memory, relevance: float, highlights: list[str], include_metadata: bool) -> SearchHit:
    return SearchHit(
        memory_id=memory.memory_id,
        content=memory.content,
        category=memory.category,
        relevance_score=relevance,
        highlights=highlights,
        created_at=memory.created_at,
        event_time=memory.event_time,
        metadata=memory.metadata if include_metadata else None,
        source_message=memory.source_message if include_metadata else None,
        status=memory.status,
    )
