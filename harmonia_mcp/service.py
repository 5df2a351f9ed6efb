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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import TypeAdapter, ValidationError

from harmonia_mcp import conflicts, export, jobs, search
from harmonia_mcp.errors import AlreadyActive, InvalidInput
from harmonia_mcp.extract import Extraction, Extractor, run_extractor
from harmonia_mcp.extract.caller import normalise_facts
from harmonia_mcp.extract.rules import RulesExtractor, find_entities, opens_with_pronoun, resolve_pronoun
from harmonia_mcp.extraction_queue import ExtractionQueue
from harmonia_mcp.models import (
    MEMORY_ID_PATTERN,
    USER_ID_PATTERN,
    CallerFact,
    Category,
    DeleteResult,
    ExportFormat,
    ExportResult,
    ExtractedMemory,
    ExtractionJobView,
    ExtractionStatus,
    HistoryEntry,
    ImportResult,
    JudgmentView,
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

CALLER = "caller"  # the `extractor` of memories written by the calling model (store_memory's facts)
SUPPORTED_STRATEGIES: tuple[ResolutionStrategy, ...] = ("auto", "update", "merge", "version", "keep_both", "skip")

MAX_SEARCH_LIMIT = 100
# SQLite's largest INTEGER: offsets and counts above it cannot be bound to a query.
MAX_OFFSET = 2**63 - 1
MAX_LIST_LIMIT = 500
MAX_METADATA_BYTES = 16 * 1024
MAX_SPEAKER_CHARS = 100
RECENT_COUNT = 50
MAX_FILTER_TAGS = 20
# Conversation context indexed with each memory (docs/search.md): the messages said just before it in the
# same user's session, if said within this window (a later session is a new conversation).
CONTEXT_MESSAGES = 2
CONTEXT_WINDOW_SECONDS = 6 * 3600.0

# Ids are checked with fullmatch: with match, "$" also matches before a final newline ("alice\n").
_USER_ID = re.compile(USER_ID_PATTERN)
_MEMORY_ID = re.compile(MEMORY_ID_PATTERN)
MAX_SESSION_ID_CHARS = 256
MAX_TAG_CHARS = 100
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What `clean_text` removes from message text: ANSI escape sequences whole (ECMA-48 CSI and OSC, e.g. the
# colour code ESC[31m), then every other C0/C1 control character but newline and tab.
_ESCAPE_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x9b[0-?]*[ -/]*[@-~]")
_STRAY_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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
        queue: ExtractionQueue | None = None,
    ) -> None:
        self.store = store
        self.extractor = extractor
        self.limits = limits
        self.ranking = ranking or Ranking()
        # With a queue (HARMONIA_EXTRACTION=async), store_memory stores the rules' memories at once and the
        # queue's worker runs the model later (extraction_queue.py); without one, the extractor runs inline.
        self.queue = queue
        self._rules = RulesExtractor()

    # --- argument checks ---

    def user(self, user_id: str | None) -> str:
        """`user_id`, or the default user when None.

        Raises:
            InvalidInput: not 1-128 characters of letters, digits, '_', '.', '@', '-'.
        """
        if user_id is None:
            return self.limits.default_user
        if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
            raise InvalidInput(
                f"user_id {str(user_id)[:140]!r} is invalid: "
                "use 1-128 characters of letters, digits, '_', '.', '@' or '-'"
            )
        return user_id

    @staticmethod
    def memory_id(memory_id: str) -> str:
        """`memory_id` if it has the form of one (`mem_` and 16 lowercase hex digits, nothing more).

        Raises:
            InvalidInput: any other string, e.g. "mem_0123456789abcdef\n".
        """
        if not _MEMORY_ID.fullmatch(memory_id):
            raise InvalidInput(
                f"memory_id {memory_id[:60]!r} is not a memory id: ids are 'mem_' and 16 hex digits, e.g. "
                "mem_0123456789abcdef (search_memories and list_memories return them)"
            )
        return memory_id

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
        wanted = tuple(tags or [])
        if len(wanted) > MAX_FILTER_TAGS or any(not _is_name(tag, MAX_TAG_CHARS) for tag in wanted):
            raise InvalidInput(
                f"tags must be at most {MAX_FILTER_TAGS} tags of 1-{MAX_TAG_CHARS} characters each, "
                "without surrounding spaces or control characters (newlines, tabs)"
            )
        if session_id is not None:
            _session_id(session_id)
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
        text = clean_text(message).strip()
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
        message: str | None = None,
        *,
        facts: Sequence[CallerFact] | None = None,
        user_id: str | None = None,
        speaker: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        occurred_at: str | None = None,
        resolution_strategy: str | None = None,
        timezone: str | None = None,
    ) -> StoreResult:
        """Extract memories from `message` (or take the caller's `facts`) and store them in one transaction.

        Args:
            message: what `speaker` said (1 byte to `max_message_bytes`, UTF-8). With `facts` it is only
                the source kept with each memory; no extractor reads it.
            facts: durable facts written by the calling model (1 to `caller.MAX_FACTS`), validated and
                normalised by `caller_facts`; they win over the message when the two disagree.
            user_id: whose memory this is; the default user when None.
            speaker: who "I"/"my" are in the message; "User" when None.
            session_id: an optional conversation id kept with each memory.
            metadata: a JSON object (at most 16 KiB) kept unchanged with each memory.
            occurred_at: when the message was said (ISO-8601; no offset means the configured time zone);
                relative times resolve against it, and of two conflicting facts the later said is the
                current one (conflicts.reconcile). Now when None.
            resolution_strategy: how to reconcile each memory with the user's active ones (`auto`,
                `update`, `merge`, `version`, `keep_both`, `skip`; see conflicts.reconcile and
                docs/conflicts.md). None means the user's configured default (`ServiceLimits`).
            timezone: the speaker's IANA time zone ("America/New_York"): relative times resolve in it
                (with its DST rules) and an `occurred_at` without an offset is read in it. None: the
                configured zone, whose DST rules are used when `occurred_at`'s offset agrees with it.

        Returns:
            A `StoreResult` with one entry per memory, in message (or facts) order. Each memory's
            `extractor` names what produced it ("caller" for facts, "rules" when the model failed), and
            `warnings` says why the model was not used.

        Raises:
            InvalidInput: neither message nor facts, or any argument or fact out of range; nothing is stored.
            sqlite3.Error: a write failed; the transaction is rolled back and nothing is stored.
        """
        if message is None and facts is None:
            raise InvalidInput(
                "give message (what was said) or facts (a list of durable facts, e.g. "
                '[{"content": "User has two cats", "keywords": ["pets"]}]), or both'
            )
        text = self._message(message) if message is not None else None
        user = self.user(user_id)
        who = _speaker(speaker)
        meta = _metadata(metadata)
        if session_id is not None:
            _session_id(session_id)
        strategy = self._strategy(user, resolution_strategy)
        reference = self._reference_time(occurred_at, timezone)
        queue = self.queue
        if facts is not None:
            # The caller's model already understood the message: no extractor reads it, no job is queued.
            extraction = Extraction(self.caller_facts(facts, speaker=who, reference_time=reference), CALLER)
            queue = None
        else:
            assert text is not None  # one of the two was checked above
            refusal = queue.refusal() if queue is not None else None
            if queue is not None:
                extraction = await run_extractor(self._rules, text, speaker=who, reference_time=reference)
                if refusal is not None:
                    warning = f"The local model was not used: {refusal}. The rules extractor read the message."
                    extraction = Extraction(extraction.memories, extraction.extractor, [warning])
                    queue = None
            else:
                extraction = await run_extractor(self.extractor, text, speaker=who, reference_time=reference)
        result = await self.write_memories(
            extraction, user, who, text, session_id, meta, strategy, reference, queue=queue
        )
        if message is not None and _has_controls(message):
            result.warnings.insert(
                0,
                "Control characters (other than newline and tab) and terminal escape sequences were removed "
                "from the message before it was stored.",
            )
        return result

    def caller_facts(
        self, facts: Sequence[CallerFact], *, speaker: str, reference_time: datetime
    ) -> list[ExtractedMemory]:
        """The caller's facts validated and normalised (extract/caller.py), ready for `write_memories`.

        Raises:
            InvalidInput: the first bad item, named ("facts[2]: ..."), or no/too many facts.
        """
        return normalise_facts(
            facts, speaker=speaker, reference_time=reference_time, max_bytes=self.limits.max_message_bytes
        )

    async def write_memories(
        self,
        extraction: Extraction,
        user: str,
        who: str,
        text: str | None,
        session_id: str | None,
        meta: dict[str, Any] | None,
        strategy: ResolutionStrategy,
        reference: datetime,
        *,
        queue: ExtractionQueue | None = None,
    ) -> StoreResult:
        """Reconcile and write one message's memories in one transaction (any failure stores nothing).

        The one write path of every source: `store_memory` calls it with the extractor's memories or the
        caller's facts (`caller_facts`); a background extraction job or a batch call can call it the same
        way. `user`, `who`, `strategy` are already checked; `text` is the message (None for facts alone),
        kept as each memory's source; `reference` is when it was said (its `occurred_at`, time order).
        A memory that opens with "She"/"He" is resolved against the speaker's previous message in the
        session (not for caller facts). With `queue`, the message is also queued, in the same transaction,
        for the background model extraction (issue 13), whose memories later replace these provisional ones.
        """
        extracted = extraction.memories
        said = to_utc_text(reference)
        # Without a message (facts only) the facts are what was said, for the next message's context.
        logged = text if text is not None else "; ".join(item.content for item in extracted)
        stored: list[StoredMemory] = []
        job_id: int | None = None
        async with self.store.transaction() as db:
            context = await self.store.conversation_context(
                db, user, session_id, reference, count=CONTEXT_MESSAGES, window_seconds=CONTEXT_WINDOW_SECONDS
            )
            if (
                extraction.extractor != CALLER
                and session_id is not None
                and any(opens_with_pronoun(item.content) for item in extracted)
            ):
                previous = await self.store.previous_message(
                    db, user, session_id, who, reference, window_seconds=CONTEXT_WINDOW_SECONDS
                )
                extracted = [_with_referent(item, previous, who) for item in extracted]
            message_id = await self.store.record_message(db, user, session_id, who, logged, reference)
            await self.store.prune_messages(db, user, session_id, keep=CONTEXT_MESSAGES)
            for item in extracted:
                new = NewMemory(
                    user, item, extraction.extractor, text, who, session_id, meta, message_id, context, said
                )
                resolution = await conflicts.reconcile(self.store, db, new, strategy, [who])
                stored.append(_resolved(resolution))
            if queue is not None and text is not None:
                job_id = await self._queue_job(
                    queue, db, user, who, session_id, meta, text, reference, strategy, message_id, context, stored
                )
        if queue is not None and job_id is not None:
            queue.wake()
        warnings = list(extraction.warnings)
        if queue is not None and job_id is None:
            warnings.append(
                "The extraction queue is full: the rules extractor read the message and the model will not."
            )
        if not extracted and job_id is None:
            warnings.append("No durable fact found in the message (small talk, a question or a request).")
        return StoreResult(memories=stored, warnings=warnings, pending_extraction=job_id is not None, job_id=job_id)

    async def _queue_job(
        self,
        queue: ExtractionQueue,
        db: Any,
        user: str,
        speaker: str,
        session_id: str | None,
        metadata: dict[str, Any] | None,
        text: str,
        reference: datetime,
        strategy: ResolutionStrategy,
        message_id: int,
        context: str | None,
        stored: list[StoredMemory],
    ) -> int | None:
        # Only what this message created is provisional; a memory it skipped or rewrote was there before.
        provisional = [memory.memory_id for memory in stored if memory.action in ("created", "superseded_previous")]
        zone = getattr(reference.tzinfo, "key", None)
        job = jobs.NewJob(
            user,
            text,
            speaker,
            session_id,
            metadata,
            reference.isoformat(),
            zone,
            strategy,
            message_id,
            context,
            provisional,
        )
        return await queue.enqueue(db, job)

    async def extraction_status(self, *, user_id: str | None = None, job_id: int | None = None) -> ExtractionStatus:
        """The background queue's figures (over every user) and, with `job_id`, that job of the user.

        Raises:
            InvalidInput: `job_id` is not one of the user's jobs.
        """
        user = self.user(user_id)
        queue = self.queue
        view: ExtractionJobView | None = None
        if job_id is not None:
            job = await jobs.get_job(self.store, user, job_id)
            if job is None:
                raise InvalidInput(
                    f"job_id {job_id} is not an extraction job of user {user}: use the job_id store_memory returned"
                )
            view = ExtractionJobView(
                job_id=job.job_id,
                status=job.status,
                attempts=job.attempts,
                provisional_memory_ids=list(job.provisional),
                memory_ids=list(job.result),
                extractor=job.extractor,
                error=job.last_error,
                created_at=job.created_at,
                finished_at=job.finished_at,
                judgments=[JudgmentView.model_validate(row) for row in await jobs.judgments(self.store, user, job_id)],
            )
        # After the job: a job seen done is then counted as done.
        async with self.store.transaction() as db:
            stats = await jobs.queue_stats(db)
        return ExtractionStatus(
            mode="async" if queue is not None else "sync",
            model_state=queue.model.state if queue is not None else getattr(self.extractor, "state", "none"),
            job=view,
            **stats.model_dump(),
        )

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
        if not query.strip():
            raise InvalidInput("query is empty: give words to search for, or '*' to list every memory")
        if query.strip() == "*":
            order = "created_at" if sort_by == "relevance" else sort_by
            memories, total = await self.store.list_memories(
                user, memory_filter, sort_by=order, limit=limit, offset=offset
            )
            hits = [_hit(memory, 1.0, [], include_metadata) for memory in memories]
            return SearchResult(results=hits, pagination=_pagination(total, limit, offset, len(hits)))
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
        return await self.store.get_memory(self.user(user_id), self.memory_id(memory_id))

    async def memory_details(self, memory_id: str, *, user_id: str | None = None) -> MemoryDetails:
        """One memory in any status (active, superseded or deleted), its history oldest first, and its links.

        Raises:
            MemoryNotFound: the user has no memory with that id.
        """
        user = self.user(user_id)
        memory = await self.store.get_memory(user, self.memory_id(memory_id), include_inactive=True)
        history = [HistoryEntry.model_validate(row) for row in await self.store.history(user, memory_id)]
        links = MemoryLinks.model_validate(await self.store.links(user, memory_id))
        history = await self._name_successors(user, history, links.superseded_by)
        return MemoryDetails(memory=MemoryView.of(memory), update_history=history, links=links)

    async def _name_successors(
        self, user: str, history: list[HistoryEntry], successors: list[str]
    ) -> list[HistoryEntry]:
        """`history` with each `superseded` entry naming what replaced it (the successor's content and id).

        The n-th `superseded` entry belongs to the n-th `supersedes` link (both are written in the same
        transaction, in order); extra entries (a link written twice is kept once) get the last successor.
        """
        named: list[HistoryEntry] = []
        seen = 0
        for entry in history:
            if entry.action == "superseded" and successors:
                successor_id = successors[min(seen, len(successors) - 1)]
                seen += 1
                successor = await self.store.get_memory(user, successor_id, include_inactive=True)
                entry = entry.model_copy(update={"new_content": successor.content, "successor_id": successor_id})
            named.append(entry)
        return named

    async def restore_memory(self, memory_id: str, *, user_id: str | None = None) -> RestoreResult:
        """Make a deleted or superseded memory active again (a `restored` history row records it).

        A memory that superseded it stays active; its id is in `active_successors`, for the caller to
        delete if the change it made was wrong.

        Raises:
            MemoryNotFound: the user has no such memory.
            AlreadyActive: the memory is active; nothing was changed.
        """
        user = self.user(user_id)
        if (await self.store.get_memory(user, self.memory_id(memory_id), include_inactive=True)).status == "active":
            raise AlreadyActive(memory_id)
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

    async def user_ids(self, *, limit: int) -> list[str]:
        """The default user, then up to `limit` - 1 other users with active memories, alphabetically."""
        others = [user for user in await self.store.user_ids(limit=limit) if user != self.limits.default_user]
        return [self.limits.default_user, *others][:limit]

    async def delete_memory(self, memory_id: str, *, user_id: str | None = None) -> DeleteResult:
        """Soft-delete one memory: it leaves search, lists and exports; its row and history stay.

        Raises:
            MemoryNotFound: unknown id for that user, or already deleted.
        """
        user = self.user(user_id)
        self.memory_id(memory_id)
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
        include_inactive: bool = False,
        include_history: bool = False,
    ) -> ExportResult:
        """Every memory of the user that the filters admit, oldest first, rendered in `format`.

        Args:
            include_inactive: also superseded and deleted memories (each says its `status`).
            include_history: JSON only: each memory's history rows and the links between the exported
                memories, so that `import_memories` restores statuses, links and history.

        Raises:
            InvalidInput: an unknown format, a bad filter, `max_memories` below 1, or `include_history`
                with a format other than json.
        """
        user = self.user(user_id)
        if format not in ("json", "csv", "markdown", "text"):
            raise InvalidInput(f"format {format!r} is not supported: use json, csv, markdown or text")
        if max_memories is not None and not 1 <= max_memories <= MAX_OFFSET:
            raise InvalidInput(
                f"max_memories {max_memories} is out of range: use 1 to {MAX_OFFSET} (or omit it for all)"
            )
        if include_history and format != "json":
            raise InvalidInput("include_history needs format json (the only format that import reads back)")
        memory_filter = self._filter(
            category=category, from_date=from_date, to_date=to_date, include_inactive=include_inactive
        )
        memories, _ = await self.store.list_memories(
            user, memory_filter, sort_by="created_at", descending=False, limit=max_memories
        )
        fmt: ExportFormat = format  # type: ignore[assignment]  # checked just above
        history = await self.store.all_history(user) if include_history else None
        links = await self.store.all_links(user) if include_history else None
        data = export.render(fmt, user, memories, utc_now(), history, links)
        return ExportResult(format=fmt, memory_count=len(memories), data=data)

    async def _import_history_and_links(self, db: Any, owner: str, parsed: dict[str, Any], present: set[str]) -> None:
        """Restore the exported history, occurred_at and links of the memories this import added."""
        history, occurred, links = _exported_history(parsed, present)
        await self.store.import_history_and_links(db, owner, history, occurred, links)

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
            present = await self.store.existing_memory_ids(db, [memory.memory_id for memory in memories])
            for start in range(0, len(memories), IMPORT_BATCH):
                imported += await self.store.import_memories(db, memories[start : start + IMPORT_BATCH])
                if progress is not None:
                    progress(min(start + IMPORT_BATCH, len(memories)), len(memories))
            await self._import_history_and_links(db, owner, parsed, present)
        return ImportResult(user_id=owner, imported=imported, skipped=len(memories) - imported)


_HISTORY_ACTIONS = frozenset({"created", "updated", "merged", "superseded", "deleted", "restored"})


def _exported_history(
    parsed: dict[str, Any], present: set[str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str], list[dict[str, str]]]:
    """The history, occurred_at and links of a JSON export (`export_memories(include_history=True)`), for the
    memories not already in the file (`present`); anything malformed is an `InvalidInput` naming it."""
    history: dict[str, list[dict[str, Any]]] = {}
    occurred: dict[str, str] = {}
    for index, item in enumerate(parsed["memories"]):
        memory_id = str(item.get("memory_id"))
        if memory_id in present or memory_id in history:
            continue
        if isinstance(item.get("occurred_at"), str):
            occurred[memory_id] = item["occurred_at"]
        rows = item.get("history", [])
        if not isinstance(rows, list) or not all(
            isinstance(row, dict)
            and row.get("action") in _HISTORY_ACTIONS
            and isinstance(row.get("changed_at"), str)
            and all(row.get(key) is None or isinstance(row.get(key), str) for key in _HISTORY_TEXT)
            for row in rows
        ):
            raise InvalidInput(
                f"memories.{index}.history in the import file is invalid: a list of objects with action (one of "
                f"{', '.join(sorted(_HISTORY_ACTIONS))}), changed_at, and old_content/new_content/source_message"
            )
        history[memory_id] = rows
    links = parsed.get("links", [])
    if not isinstance(links, list) or not all(
        isinstance(link, dict)
        and link.get("kind") in ("supersedes", "related")
        and isinstance(link.get("from_id"), str)
        and isinstance(link.get("to_id"), str)
        for link in links
    ):
        raise InvalidInput(
            'links in the import file is invalid: a list of {"from_id", "to_id", "kind": "supersedes"|"related"}'
        )
    return history, occurred, links


_HISTORY_TEXT = ("old_content", "new_content", "source_message")

IMPORT_BATCH = 5000  # memories per executemany batch of `import_memories` (one transaction for all)
_EXPORTED_MEMORIES = TypeAdapter(list[MemoryView])


# Confidence of a memory that opens with a pronoun naming no one we could find: it is kept, but least sure.
UNRESOLVED_PRONOUN_CONFIDENCE = 0.4


def _with_referent(item: ExtractedMemory, previous: str | None, speaker: str) -> ExtractedMemory:
    """`item` with an opening "She"/"He" resolved to the person the speaker's previous message named
    (rules.resolve_pronoun); when that is not unambiguous, kept as it is with a lower confidence."""
    if not opens_with_pronoun(item.content):
        return item
    resolved = resolve_pronoun(item.content, previous, speaker) if previous else None
    if resolved is None:
        return item.model_copy(update={"confidence": min(item.confidence, UNRESOLVED_PRONOUN_CONFIDENCE)})
    names = [word for word in find_entities(resolved) if word not in item.entities and word != speaker]
    return item.model_copy(update={"content": resolved, "entities": [*names, *item.entities]})


def _category(value: Category | str | None) -> Category | None:
    if value is None or isinstance(value, Category):
        return value
    try:
        return Category(value)
    except ValueError:
        allowed = ", ".join(category.value for category in Category)
        raise InvalidInput(f"category {value!r} is unknown: use one of {allowed}") from None


def clean_text(text: str) -> str:
    """`text` without control characters other than newline and tab (docs/tools.md, store_memory).

    CR LF and a lone CR become LF; ANSI escape sequences (`_ESCAPE_SEQUENCE`) go whole, so "\x1b[31mred"
    is "red", not "[31mred"; every other C0 or C1 control character and DEL is removed.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _STRAY_CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))


def _has_controls(text: str) -> bool:
    """Whether `clean_text` removes anything from `text` but line-ending changes."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    return bool(_ESCAPE_SEQUENCE.search(normalised) or _STRAY_CONTROL.search(normalised))


def _is_name(value: str, max_chars: int) -> bool:
    """1-`max_chars` characters, no control character, no surrounding whitespace (so "x\n" is not "x")."""
    return 1 <= len(value) <= max_chars and value == value.strip() and not _CONTROL.search(value)


def _session_id(session_id: str) -> None:
    if not _is_name(session_id, MAX_SESSION_ID_CHARS):
        raise InvalidInput(
            f"session_id {session_id[:60]!r} is invalid: use 1-{MAX_SESSION_ID_CHARS} characters on one line, "
            "without surrounding spaces or control characters"
        )


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
        # allow_nan=False: NaN and Infinity are not JSON; stored, they would come back as null.
        size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except ValueError as error:
        if "Out of range float" in str(error):
            raise InvalidInput(
                "metadata contains NaN or Infinity, which JSON does not allow: send a finite number, "
                "null or a string instead"
            ) from None
        raise InvalidInput(f"metadata must be a JSON object: {error}") from None
    except TypeError as error:
        raise InvalidInput(f"metadata must be a JSON object: {error}") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES} bytes")
    return metadata


def _page_bounds(limit: int, offset: int, max_limit: int) -> None:
    if not 1 <= limit <= max_limit:
        raise InvalidInput(f"limit {limit} is out of range: use 1 to {max_limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"offset {offset} is out of range: use 0 to {MAX_OFFSET}")


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
