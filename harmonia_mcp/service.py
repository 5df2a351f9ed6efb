"""`MemoryService`: the async core behind every front door (the MCP server and the CLI).

It validates arguments (raising `InvalidInput` with a message that says what is allowed), runs
extraction, resolves times and writes each message's memories in one transaction. It knows nothing
of MCP; the server turns its errors into tool errors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import TypeAdapter, ValidationError

from harmonia_mcp import conflicts, export, search
from harmonia_mcp.embed import EmbeddingError
from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.extract import Extractor, run_extractor
from harmonia_mcp.models import (
    USER_ID_PATTERN,
    Category,
    DeleteResult,
    ExportFormat,
    ExportResult,
    HistoryEntry,
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
from harmonia_mcp.search import Candidate, Fusion, SearchMode
from harmonia_mcp.store import DateField, MemoryFilter, NewMemory, Ranking, Store, utc_now
from harmonia_mcp.temporal import parse_timestamp
from harmonia_mcp.vectors import VectorIndex

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
        self,
        store: Store,
        extractor: Extractor,
        limits: ServiceLimits,
        ranking: Ranking | None = None,
        *,
        vectors: VectorIndex | None = None,
        fusion: Fusion | None = None,
    ) -> None:
        self.store = store
        self.extractor = extractor
        self.limits = limits
        self.ranking = ranking or Ranking()
        # None: no embedder (HARMONIA_EMBEDDER=none), keyword search only.
        self.vectors = vectors
        self.fusion = fusion or Fusion()
        self._said_loading = False

    async def _embed_written(self, user: str) -> None:
        """After a write committed: embed the user's memories that lack a vector now if the model is ready,
        else leave them queued for the background worker. Never raises (the memory is stored either way)."""
        if self.vectors is None:
            return
        if not self.vectors.ready:
            self.vectors.notify()
            return
        try:
            done = await self.vectors.embed_pending(user_id=user, limit=EMBED_INLINE)
        except Exception:  # a failure here must not fail the write that already committed
            logger.exception("embedding after a write failed; the memories stay queued")
            return
        if done >= EMBED_INLINE:
            self.vectors.notify()  # more may wait: the background worker takes them (its scan spans every user)

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
        await self._embed_written(user)
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
        mode: str | None = None,
    ) -> SearchResult:
        """Search a user's active memories by words and meaning; `query="*"` admits every memory the filters admit.

        `mode`: "hybrid" (words and meaning, the default when an embedder is configured), "keyword" (words
        only: FTS5 bm25, the default with HARMONIA_EMBEDDER=none) or "semantic" (meaning only). Until the
        embedding model is ready, or when it fails, hybrid and semantic searches answer by keyword and
        `warnings` says why; `mode` in the result is the mode that answered. Hybrid ranking: the union of
        the keyword candidates and the nearest vectors under every filter, fused by `search.Fusion`, then
        recency and category (`search.rank_candidates`, docs/search.md).

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
            InvalidInput: an empty query, a query with no word in it (letters or digits), or a bad filter.
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
        wanted, warnings = self._mode(mode)
        if not query.strip():
            raise InvalidInput("query is empty: give words to search for, or '*' to list every memory")
        if query.strip() == "*":
            order = "created_at" if sort_by == "relevance" else sort_by
            memories, total = await self.store.list_memories(
                user, memory_filter, sort_by=order, limit=limit, offset=offset
            )
            hits = [_hit(memory, 1.0, [], include_metadata) for memory in memories]
            return SearchResult(results=hits, pagination=_pagination(total, limit, offset, len(hits)), mode=wanted)
        match = search.build_match_expression(query)
        if match is None:
            raise InvalidInput(
                f"query {query[:100]!r} has no word to search for: give words (letters or digits), "
                "a \"quoted phrase\", or '*' to list every memory"
            )
        if self.vectors is not None and self.vectors.ready:
            # With an embedder, every mode ranks in one place (`search.rank_candidates`), so relevance_score means
            # the same in each and a provenance-only match is discounted; with none, keyword search is as before.
            vector = None
            if wanted != "keyword":
                try:
                    vector = await self.vectors.embed_query(query)
                except EmbeddingError as error:
                    warnings.append(f"search by meaning failed ({error}); answered by keyword only")
                    logger.warning("query embedding failed: %s", error)
                    wanted = "keyword"
            ranked, total = await self._hybrid(user, match, vector, memory_filter, wanted, limit + offset, boost)
            page = _sorted(ranked, sort_by)[offset : offset + limit]
            marks = await self.store.highlights(user, match, [hit.rowid for hit in page if hit.strength > 0])
            hits = [
                _hit(hit.memory, round(hit.relevance, 6), marks.get(hit.rowid, [hit.memory.content]), include_metadata)
                for hit in page
            ]
            pagination = _pagination(total, limit, offset, len(hits))
            return SearchResult(results=hits, pagination=pagination, mode=wanted, warnings=warnings)
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
        pagination = _pagination(total, limit, offset, len(hits))
        return SearchResult(results=hits, pagination=pagination, mode="keyword", warnings=warnings)

    def _mode(self, mode: str | None) -> tuple[SearchMode, list[str]]:
        """The search mode to use and the warnings that go with it (meaning asked for but not available).

        Raises:
            InvalidInput: `mode` is not hybrid, keyword or semantic.
        """
        if mode is not None and mode not in ("hybrid", "keyword", "semantic"):
            raise InvalidInput(f"mode {mode!r} is unknown: use hybrid, keyword or semantic")
        if mode == "keyword":
            return "keyword", []
        if self.vectors is None:
            if mode is None:
                return "keyword", []
            return "keyword", [f"mode {mode!r} needs an embedder, but HARMONIA_EMBEDDER is none: answered by keyword"]
        if self.vectors.ready:
            return ("hybrid" if mode is None else mode), []  # type: ignore[return-value]  # checked above
        if self.vectors.failure is not None:
            return "keyword", [f"search by meaning is off ({self.vectors.failure}); answered by keyword only"]
        self.vectors.notify()
        if not self._said_loading:
            self._said_loading = True
            logger.warning("the embedding model is still loading: searches answer by keyword until it is ready")
        return "keyword", ["the embedding model is still loading; answered by keyword only"]

    async def _hybrid(
        self,
        user: str,
        match: str,
        vector: Any | None,
        memory_filter: MemoryFilter,
        mode: SearchMode,
        reach: int,
        boost: Category | None,
    ) -> tuple[list[Candidate], int]:
        """The union of keyword and vector candidates, ranked (`search.rank_candidates`), and how many there are
        in all (every keyword match plus the nearest neighbours that match no word)."""
        assert self.vectors is not None  # checked by the caller
        depth = max(self.fusion.depth, reach)
        keyword: list[tuple[int, float, bool]] = []
        total = 0
        if mode != "semantic":
            keyword, total = await self.store.keyword_candidates(user, match, memory_filter, limit=depth)
        near: list[tuple[int, float]] = []
        cosine: dict[int, float] = {}
        if vector is not None:
            floor = self.fusion.candidate_floor
            near = await self.vectors.nearest(user, vector, memory_filter, count=depth, floor=floor)
            cosine = dict(near)
            missing = [rowid for rowid, _, _ in keyword if rowid not in cosine]
            cosine |= await self.vectors.similarities(user, vector, missing)
        text = {rowid: (strength, own) for rowid, strength, own in keyword}
        rowids = list(dict.fromkeys([*text, *cosine]))
        details = await self.store.candidates(user, rowids)
        candidates = []
        for rowid in rowids:
            if rowid not in details:
                continue  # removed between the reads
            memory, group = details[rowid]
            strength, own = text.get(rowid, (0.0, False))
            candidates.append(Candidate(rowid, memory, group, strength, own, cosine.get(rowid)))
        if mode == "hybrid":
            only_near = [rowid for rowid, _ in near if rowid not in text]
            total += len(only_near) - await self.store.count_matching(user, match, only_near)
        elif mode == "semantic":
            total = len(near)
        now = datetime.now(UTC)
        return search.rank_candidates(candidates, mode, self.fusion, self.ranking, now=now, boost=boost), total

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
        await self._embed_written(user)
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
        document: str | bytes,
        *,
        user_id: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportResult:
        """Load a JSON export (as `export_memories` writes it) in one transaction; idempotent by `memory_id`.

        Args:
            document: the export, `{"user_id": ..., "memories": [{every field of a memory}, ...]}`.
            user_id: whose memories they become; the document's `user_id` when None.
            progress: called with (memories done, memories in all) after each batch.

        Returns:
            How many memories were added and how many were skipped because their `memory_id` exists.

        Raises:
            InvalidInput: not JSON, not an export object, a memory missing a field or with a bad value
                (the message names the first one); nothing is imported then.
        """
        try:
            parsed = json.loads(document)
        except ValueError as error:
            raise InvalidInput(f"the import file is not JSON: {error}") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("memories"), list):
            raise InvalidInput('the import file must be a JSON export: an object with a "memories" list')
        owner = self.user(user_id if user_id is not None else parsed.get("user_id"))
        try:
            views = _EXPORTED_MEMORIES.validate_python(parsed["memories"])
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidInput(f"memories.{where} in the import file is invalid: {first['msg']}") from None
        memories = []
        for view in views:
            fields = view.model_dump()
            if view.event_time is not None:  # always stored with an offset, so it converts to UTC exactly
                when = parse_timestamp(view.event_time, self.limits.timezone, field=f"{view.memory_id} event_time")
                fields["event_time"] = when.isoformat()
            memories.append(Memory.model_construct(user_id=owner, **fields))  # validated just above, as MemoryView
        imported = 0
        async with self.store.transaction() as db:
            for start in range(0, len(memories), IMPORT_BATCH):
                imported += await self.store.import_memories(db, memories[start : start + IMPORT_BATCH])
                if progress is not None:
                    progress(min(start + IMPORT_BATCH, len(memories)), len(memories))
        if self.vectors is not None:
            self.vectors.notify()  # vectors are derived, never imported: the worker embeds them in batches
        return ImportResult(user_id=owner, imported=imported, skipped=len(memories) - imported)


EMBED_INLINE = 64  # memories a write embeds before it answers; more (an import) go to the background worker
IMPORT_BATCH = 5000  # memories per executemany batch of `import_memories` (one transaction for all)
_EXPORTED_MEMORIES = TypeAdapter(list[MemoryView])


def _sorted(ranked: list[Candidate], sort_by: str) -> list[Candidate]:
    """`ranked` (best first) in the order of `sort_by`: relevance keeps it; a field sorts highest or newest
    first, memories without the field last, relevance breaking ties (as `Store.search` does)."""
    if sort_by == "relevance":
        return ranked

    def value(hit: Candidate) -> float | None:
        memory = hit.memory
        if sort_by == "confidence":
            return memory.confidence
        text = {"created_at": memory.created_at, "updated_at": memory.updated_at}.get(sort_by, memory.event_time)
        if text is None:
            return None
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()

    keyed = [(value(hit), position, hit) for position, hit in enumerate(ranked)]
    present = sorted((item for item in keyed if item[0] is not None), key=lambda item: (-(item[0] or 0.0), item[1]))
    return [hit for _, _, hit in present] + [hit for key, _, hit in keyed if key is None]


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
