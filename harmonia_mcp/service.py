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
import marshal
import re
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from pydantic import ValidationError

from harmonia_mcp import conflicts, context, export, jobs, search
from harmonia_mcp.embed import EmbeddingError
from harmonia_mcp.errors import AlreadyActive, InvalidInput, MemoryNotFound
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
    EraseResult,
    ExportFormat,
    ExportResult,
    ExtractedMemory,
    ExtractionJobView,
    ExtractionStatus,
    HistoryEntry,
    ImportProblem,
    ImportResult,
    JudgmentView,
    ListResult,
    ListSort,
    Memory,
    MemoryDetails,
    MemoryLinks,
    MemoryView,
    Pagination,
    Profile,
    ProfileEntry,
    RecallResult,
    ResolutionStrategy,
    RestoreResult,
    SearchHit,
    SearchResult,
    SearchSort,
    SortOrder,
    StoreBatchResult,
    StoredItem,
    StoredMemory,
    StoreItem,
    StoreResult,
    UpcomingEvent,
    UpcomingResult,
    UpdateResult,
)
from harmonia_mcp.search import Candidate, Fusion, SearchMode
from harmonia_mcp.store import (
    EXPIRED_REASON,
    DateField,
    ImportRow,
    MemoryFilter,
    NewMemory,
    Ranking,
    Store,
    to_utc_text,
    utc_now,
)
from harmonia_mcp.temporal import parse_timestamp
from harmonia_mcp.vectors import VectorIndex, embedding_text

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
# store_memories: items per call (one transaction holds the single writer for the whole batch; at the
# measured ~2,000 messages/s a full batch takes about half a second) and bad items named in one error.
MAX_BATCH_ITEMS = 1000
MAX_REPORTED_ITEMS = 5
MAX_FILTER_TAGS = 20
# Conversation context indexed with each memory (docs/search.md): the messages said just before it in the
# same user's session, if said within this window (a later session is a new conversation).
CONTEXT_MESSAGES = 2
CONTEXT_WINDOW_SECONDS = 6 * 3600.0
# recall, profile and upcoming_events (docs/tools.md): budgets are in tokens by context.estimate_tokens.
DEFAULT_RECALL_BUDGET = 1500
# The profile's share of a `recall` block: a quarter of the budget, and never more than this many tokens (about
# 12-15 lines with memory numbers). The profile is a fixed core of at most 21 slot entries; past a few hundred tokens a
# larger budget serves the topic better than the profile's least important entries (docs/benchmarks.md).
MAX_PROFILE_TOKENS = 250
MIN_RECALL_BUDGET = 50
MAX_RECALL_BUDGET = 32000
MAX_UPCOMING_DAYS = 366
MAX_UPCOMING_EVENTS = 200
PROFILE_CANDIDATES = 300  # newest memories per category that the profile looks at
RECURRING_CANDIDATES = 200
RECURRING_YEARLY_QUERY = "birthday birthdays anniversary anniversaries bday"
RECURRING_WEEKLY_QUERY = "every each monday tuesday wednesday thursday friday saturday sunday"

# Ids are checked with fullmatch: with match, "$" also matches before a final newline ("alice\n").
_USER_ID = re.compile(USER_ID_PATTERN)
_MEMORY_ID = re.compile(MEMORY_ID_PATTERN)
# The fewest hex digits of a short memory id (`resolve_memory_id`): 8, as in `mem_3f2a9c0b`, like git's
# abbreviated hashes; `recall`'s block showed these before it showed memory numbers, and they are still accepted.
SHORT_ID_DIGITS = 8
_SHORT_MEMORY_ID = re.compile(rf"^mem_[0-9a-f]{{{SHORT_ID_DIGITS},15}}$")
# A memory number as `recall`'s block shows it ("#42"), or its digits alone ("42": a resource URI cannot hold "#").
_MEMORY_NUMBER = re.compile(r"^#?([1-9][0-9]{0,17})$")
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
    # Retention (docs/forgetting.md): active, unpinned memories neither updated nor returned by a search for
    # this many days are deleted by the sweep; per user if listed, else the default (None: nothing expires).
    retention_days: float | None = None
    user_retention_days: Mapping[str, float] = field(default_factory=dict[str, float])
    # How often the sweep runs: on the first call after each interval (see `MemoryService.sweep_expired`).
    sweep_interval_seconds: float = 3600.0


@dataclass(frozen=True)
class _Prepared:
    """One message checked and extracted, ready for `MemoryService._write_one` (see `store_memory`'s args)."""

    extraction: Extraction
    user: str
    who: str
    text: str | None
    session_id: str | None
    meta: dict[str, Any] | None
    strategy: ResolutionStrategy
    reference: datetime
    queue: ExtractionQueue | None
    importance: float | None
    expires_at: str | None
    cleaned: bool  # control characters were removed from the message (a warning says so)


class MemoryService:
    """Store, search, list, delete and export memories for many users over one `Store`."""

    def __init__(
        self,
        store: Store,
        extractor: Extractor,
        limits: ServiceLimits,
        ranking: Ranking | None = None,
        queue: ExtractionQueue | None = None,
        clock: Callable[[], datetime] | None = None,
        *,
        vectors: VectorIndex | None = None,
        fusion: Fusion | None = None,
    ) -> None:
        self.store = store
        self.extractor = extractor
        self.limits = limits
        self.ranking = ranking or Ranking()
        # With a queue (HARMONIA_EXTRACTION=async), store_memory stores the rules' memories at once and the
        # queue's worker runs the model later (extraction_queue.py); without one, the extractor runs inline.
        self.queue = queue
        self._rules = RulesExtractor()
        # The time retention and expiry are measured against (a frozen clock in tests); aware, any zone.
        self.clock = clock or (lambda: datetime.now(UTC))
        self._next_sweep: datetime | None = None

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
        if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
            raise InvalidInput(
                f"user_id {str(user_id)[:140]!r} is invalid: "
                "use 1-128 characters of letters, digits, '_', '.', '@' or '-'"
            )
        return user_id

    async def resolve_memory_id(self, user: str, memory_id: str) -> str:
        """The full id of the memory of `user` (any status) that `memory_id` names: a full id as it is; a memory
        number, "#42" as `recall`'s block shows it or "42" (`Store.memory_id_by_number`: the user's own numbering,
        never reused); or a short id (`mem_` and `SHORT_ID_DIGITS` to 15 hex digits, like git's abbreviated
        hashes) when exactly one of the user's memory ids starts with it.

        Raises:
            InvalidInput: none of these forms (e.g. "mem_0123456789abcdef\n": ids are checked by full match); a
                short id that starts more than one of the user's ids.
            MemoryNotFound: a number or short id that names none of the user's memories.
        """
        if _MEMORY_ID.fullmatch(memory_id):
            return memory_id
        numbered = _MEMORY_NUMBER.fullmatch(memory_id)
        if numbered is not None:
            found_id = await self.store.memory_id_by_number(user, int(numbered.group(1)))
            if found_id is None:
                raise MemoryNotFound(memory_id, user)
            return found_id
        if not _SHORT_MEMORY_ID.fullmatch(memory_id):
            raise InvalidInput(_not_a_memory_id(memory_id))
        found = await self.store.memory_ids_with_prefix(user, memory_id, limit=3)
        if not found:
            raise MemoryNotFound(memory_id, user)
        if len(found) > 1:
            shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
            raise InvalidInput(
                f"memory_id {memory_id!r} is ambiguous: more than one memory id starts with it ({shown}); "
                "give more of its digits or the full id"
            )
        return found[0]

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
        importance: float | None = None,
        expires_at: str | None = None,
        ttl_days: float | None = None,
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
            importance: 0-1, how much the memories matter (ranking and docs/forgetting.md); None: unset.
            expires_at: when the memories expire (ISO-8601, in the future); or `ttl_days` (> 0) from now.

        Returns:
            A `StoreResult` with one entry per memory, in message (or facts) order. Each memory's
            `extractor` names what produced it ("caller" for facts, "rules" when the model failed), and
            `warnings` says why the model was not used.

        Raises:
            InvalidInput: neither message nor facts, or any argument or fact out of range; nothing is stored.
            sqlite3.Error: a write failed; the transaction is rolled back and nothing is stored.
        """
        prepared = await self._prepare(
            message,
            facts=facts,
            user_id=user_id,
            speaker=speaker,
            session_id=session_id,
            metadata=metadata,
            occurred_at=occurred_at,
            resolution_strategy=resolution_strategy,
            timezone=timezone,
            importance=importance,
            expires_at=expires_at,
            ttl_days=ttl_days,
        )
        await self._sweep_if_due()
        return (await self._write_prepared([prepared]))[0]

    async def store_memories(self, items: Sequence[StoreItem], *, user_id: str | None = None) -> StoreBatchResult:
        """Store a batch of messages (or caller facts) of one user in one transaction, in item order.

        Each item takes store_memory's arguments and rules (its own occurred_at, speaker, session_id, ...).
        Items are reconciled in order against what the user had and against the earlier items of the batch
        ("I live in Paris" then "I moved to Berlin" leaves Berlin active), so one call equals the same
        store_memory calls made one by one, only faster (one transaction, one embedding round).

        Args:
            items: 1 to `MAX_BATCH_ITEMS` items.
            user_id: whose memories these are; the default user when None.

        Returns:
            A `StoreBatchResult`: per item (with its `index`), what store_memory would have returned.

        Raises:
            InvalidInput: no items, too many, or any item invalid; the message names every bad item by its
                index (`items[2]: ...`, at most `MAX_REPORTED_ITEMS`) and nothing of the batch is stored, so the
                corrected batch can be sent again whole.
            sqlite3.Error / StoreBusy: a write failed; the transaction is rolled back and nothing is stored.
        """
        if not items:
            raise InvalidInput(f"items is empty: give 1 to {MAX_BATCH_ITEMS} messages or facts to store")
        if len(items) > MAX_BATCH_ITEMS:
            raise InvalidInput(
                f"items has {len(items)} entries; the limit is {MAX_BATCH_ITEMS} per call: split the batch"
            )
        user = self.user(user_id)
        prepared: list[_Prepared] = []
        problems: list[str] = []
        for index, item in enumerate(items):
            try:
                prepared.append(
                    await self._prepare(
                        item.message,
                        facts=item.facts,
                        user_id=user,
                        speaker=item.speaker,
                        session_id=item.session_id,
                        metadata=item.metadata,
                        occurred_at=item.occurred_at,
                        resolution_strategy=item.resolution_strategy,
                        timezone=item.timezone,
                        importance=item.importance,
                        expires_at=item.expires_at,
                        ttl_days=item.ttl_days,
                    )
                )
            except InvalidInput as error:
                problems.append(f"items[{index}]: {error}")
        if problems:
            shown = "; ".join(problems[:MAX_REPORTED_ITEMS])
            more = f" (and {len(problems) - MAX_REPORTED_ITEMS} more)" if len(problems) > MAX_REPORTED_ITEMS else ""
            raise InvalidInput(
                f"{len(problems)} of {len(items)} items are invalid, so nothing was stored: {shown}{more}"
            )
        await self._sweep_if_due()
        results = await self._write_prepared(prepared)
        stored = [
            StoredItem(
                index=index,
                memories=result.memories,
                warnings=result.warnings,
                pending_extraction=result.pending_extraction,
                job_id=result.job_id,
            )
            for index, result in enumerate(results)
        ]
        written = sum(1 for result in results for memory in result.memories if memory.action != "skipped")
        return StoreBatchResult(items=stored, memories_written=written)

    async def _prepare(
        self,
        message: str | None,
        *,
        facts: Sequence[CallerFact] | None,
        user_id: str | None,
        speaker: str | None,
        session_id: str | None,
        metadata: dict[str, Any] | None,
        occurred_at: str | None,
        resolution_strategy: str | None,
        timezone: str | None,
        importance: float | None,
        expires_at: str | None,
        ttl_days: float | None,
    ) -> _Prepared:
        """Check one message's arguments and extract its memories (nothing is written yet).

        Raises:
            InvalidInput: as `store_memory`.
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
        _importance(importance)
        expiry = self._expiry(expires_at, ttl_days)
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
        cleaned = message is not None and _has_controls(message)
        return _Prepared(
            extraction, user, who, text, session_id, meta, strategy, reference, queue, importance, expiry, cleaned
        )

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
        importance: float | None = None,
        expires_at: str | None = None,
    ) -> StoreResult:
        """Reconcile and write one message's memories in one transaction (any failure stores nothing).

        The one write path of every source: `store_memory` calls it with the extractor's memories or the
        caller's facts (`caller_facts`); a background extraction job or a batch call can call it the same
        way. `user`, `who`, `strategy` are already checked; `text` is the message (None for facts alone),
        kept as each memory's source; `reference` is when it was said (its `occurred_at`, time order).
        A memory that opens with "She"/"He" is resolved against the speaker's previous message in the
        session (not for caller facts). With `queue`, the message is also queued, in the same transaction,
        for the background model extraction (issue 13), whose memories later replace these provisional ones.
        `importance` (0-1) and `expires_at` (UTC ISO-8601), already checked, are set on every memory written.
        """
        prepared = _Prepared(
            extraction, user, who, text, session_id, meta, strategy, reference, queue, importance, expires_at, False
        )
        return (await self._write_prepared([prepared]))[0]

    async def _write_prepared(self, batch: Sequence[_Prepared]) -> list[StoreResult]:
        """Write prepared messages in order in one transaction (any failure stores none), then wake the queue
        and embed the new memories (one round per user); one `StoreResult` per message."""
        # Meaning neighbours are read before the transaction, so the model never holds the write lock (a
        # batch's later items see its earlier ones through the FTS candidates only).
        neighbours = [await self._meaning_neighbours(prepared.user, prepared.extraction.memories) for prepared in batch]
        async with self.store.transaction() as db:
            outcomes = [
                await self._write_one(db, prepared, near, prune=len(batch) == 1)
                for prepared, near in zip(batch, neighbours, strict=True)
            ]
            if len(batch) > 1:
                # The log only gives the next messages their context (the newest CONTEXT_MESSAGES are read):
                # one prune per conversation after the batch leaves it as pruning after each message would.
                for user in dict.fromkeys(prepared.user for prepared in batch):
                    sessions = [prepared.session_id for prepared in batch if prepared.user == user]
                    await self.store.prune_conversations(db, user, sessions, keep=CONTEXT_MESSAGES)
        for prepared, (_, job_id) in zip(batch, outcomes, strict=True):
            if prepared.queue is not None and job_id is not None:
                prepared.queue.wake()
        for user in dict.fromkeys(prepared.user for prepared in batch):
            await self._embed_written(user)
        results: list[StoreResult] = []
        for prepared, (stored, job_id) in zip(batch, outcomes, strict=True):
            warnings = list(prepared.extraction.warnings)
            if prepared.queue is not None and job_id is None:
                warnings.append(
                    "The extraction queue is full: the rules extractor read the message and the model will not."
                )
            if not prepared.extraction.memories and job_id is None:
                warnings.append("No durable fact found in the message (small talk, a question or a request).")
            if prepared.cleaned:
                warnings.insert(
                    0,
                    "Control characters (other than newline and tab) and terminal escape sequences were removed "
                    "from the message before it was stored.",
                )
            results.append(
                StoreResult(memories=stored, warnings=warnings, pending_extraction=job_id is not None, job_id=job_id)
            )
        return results

    async def _write_one(
        self, db: Any, prepared: _Prepared, neighbours: Sequence[list[str]], *, prune: bool = True
    ) -> tuple[list[StoredMemory], int | None]:
        """Reconcile and write one prepared message inside the open transaction `db`; its memories and job id.
        `neighbours`: per extracted memory, the memory ids nearest it in meaning (`_meaning_neighbours`).
        `prune`: drop the conversation's message that falls out of the context window (a batch prunes once)."""
        extraction, user, who, text = prepared.extraction, prepared.user, prepared.who, prepared.text
        session_id, reference, queue = prepared.session_id, prepared.reference, prepared.queue
        extracted = extraction.memories
        said = to_utc_text(reference)
        # Without a message (facts only) the facts are what was said, for the next message's context.
        logged = text if text is not None else "; ".join(item.content for item in extracted)
        stored: list[StoredMemory] = []
        job_id: int | None = None
        resolve = (
            extraction.extractor != CALLER
            and session_id is not None
            and any(opens_with_pronoun(item.content) for item in extracted)
        )
        # The context, the speaker's previous message, the log entry, the prune and the first round of candidate
        # lookups for all the message's memories: one trip (Store.log_message). A memory that opens with a
        # pronoun is rewritten with the previous message first, so then its candidates are read afterwards.
        matches = [] if resolve else [conflicts.candidate_query(item, [who]) for item in extracted]
        log = await self.store.log_message(
            db,
            user,
            session_id,
            who,
            logged,
            reference,
            count=CONTEXT_MESSAGES,
            window_seconds=CONTEXT_WINDOW_SECONDS,
            previous_of=who if resolve else None,
            prune_to=CONTEXT_MESSAGES if prune else None,
            candidates=matches,
            candidate_limit=conflicts.MAX_CANDIDATES,
        )
        context, message_id = log.context, log.message_id
        if resolve:
            extracted = [_with_referent(item, log.previous, who) for item in extracted]
        written = False
        for index, (item, near) in enumerate(zip(extracted, neighbours, strict=True)):
            new = NewMemory(
                user, item, extraction.extractor, text, who, session_id, prepared.meta, message_id, context, said
            )
            # Read before this message wrote anything; once an earlier memory of it was written, read again,
            # so each memory is still reconciled against the ones before it.
            prefetched = log.candidates[index] if matches and not written else None
            resolution = await conflicts.reconcile(
                self.store, db, new, prepared.strategy, [who], neighbours=near, prefetched=prefetched
            )
            written = written or resolution.action != "skipped"
            stored.append(_resolved(resolution))
        kept = [memory.memory_id for memory in stored if memory.action != "skipped"]
        if prepared.importance is not None or prepared.expires_at is not None:
            await self.store.set_flags(db, user, kept, importance=prepared.importance, expires_at=prepared.expires_at)
        if queue is not None and text is not None:
            job_id = await self._queue_job(
                queue,
                db,
                user,
                who,
                session_id,
                prepared.meta,
                text,
                reference,
                prepared.strategy,
                message_id,
                context,
                stored,
            )
        return stored, job_id

    async def _meaning_neighbours(self, user: str, extracted: Sequence[ExtractedMemory]) -> list[list[str]]:
        """For each memory about to be written, the ids of the user's active memories nearest it in meaning
        (at most `conflicts.NEIGHBOUR_CANDIDATES`, cosine at least `conflicts.NEIGHBOUR_FLOOR`): reconciliation
        candidates beside the FTS ones (issue 9, item 6). Empty lists when there is no ready embedder or it
        fails: reconciliation then works from words alone, as before. Read before the write transaction, so
        the model call never holds the write lock."""
        empty: list[list[str]] = [[] for _ in extracted]
        if self.vectors is None or not self.vectors.ready or not extracted:
            return empty
        try:
            vectors = await self.vectors.embed_texts(
                [embedding_text(item.content, item.category.value) for item in extracted]
            )
            nearest = [
                await self.vectors.nearest(
                    user, vector, MemoryFilter(), count=conflicts.NEIGHBOUR_CANDIDATES, floor=conflicts.NEIGHBOUR_FLOOR
                )
                for vector in vectors
            ]
            details = await self.store.candidates(user, list({rowid for near in nearest for rowid, _ in near}))
            return [[details[rowid][0].memory_id for rowid, _ in near if rowid in details] for near in nearest]
        except EmbeddingError as error:
            logger.warning("no meaning neighbours for reconciliation: %s", error)
            return empty

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
        include_archived: bool = False,
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
        memory_filter = dataclasses.replace(memory_filter, include_archived=include_archived)
        await self._sweep_if_due()
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
        search.check_query(query)
        # Searched as the user's own memories word it: "User", not the user's name (`search.as_user_subject`).
        meant = await self._as_user_subject(user, query)
        match = search.build_match_expression(query if meant == query else search.without_user_subject(meant))
        if match is None:
            raise InvalidInput(
                f"query {query[:100]!r} has no word to search for: give words (letters or digits), "
                "a \"quoted phrase\", or '*' to list every memory"
            )
        if self.vectors is not None and self.vectors.ready:
            # With an embedder, every mode ranks in one place (`search.rank_candidates`), so relevance_score means
            # the same in each and a provenance-only match is discounted; with none, keyword search is as before.
            vectors = self.vectors

            async def query_vector() -> Any | None:
                try:
                    return await vectors.embed_query(meant)
                except EmbeddingError as error:
                    warnings.append(f"search by meaning failed ({error}); answered by keyword only")
                    logger.warning("query embedding failed: %s", error)
                    return None

            ranked, total, wanted = await self._hybrid(
                user, match, query_vector, memory_filter, wanted, limit + offset, boost
            )
            page = _sorted(ranked, sort_by)[offset : offset + limit]
            marks = await self.store.highlights(user, match, [hit.rowid for hit in page if hit.strength > 0])
            hits = [
                _hit(hit.memory, round(hit.relevance, 6), marks.get(hit.rowid, [hit.memory.content]), include_metadata)
                for hit in page
            ]
            await self.store.record_access(user, [hit.memory_id for hit in hits], to_utc_text(self.clock()))
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
        await self.store.record_access(user, [hit.memory_id for hit in hits], to_utc_text(self.clock()))
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
        query_vector: Callable[[], Awaitable[Any | None]],
        memory_filter: MemoryFilter,
        mode: SearchMode,
        reach: int,
        boost: Category | None,
    ) -> tuple[list[Candidate], int, SearchMode]:
        """The union of keyword and vector candidates, ranked (`search.rank_candidates`), how many there are in all
        (every keyword match plus the nearest neighbours that match no word), and the mode that answered:
        "keyword" when `query_vector()` (the query's vector, or None when embedding it failed) gives None.

        The keyword side (FTS5, on a reader's thread) and the vector side (the query's embedding on a worker
        thread, then numpy and the re-score's reads) run at once, as do the candidates' rows, the missing
        cosines and the count of the neighbours that match no word: each reads on its own reader in its own
        snapshot, as one after the other did, so the candidates are the same."""
        assert self.vectors is not None  # checked by the caller
        vectors = self.vectors
        depth = max(self.fusion.depth, reach)
        keyword: list[tuple[int, float, bool]] = []
        total = 0
        near: list[tuple[int, float]] = []
        vector: Any | None = None

        async def keyword_side() -> None:
            nonlocal keyword, total
            keyword, total = await self.store.keyword_candidates(user, match, memory_filter, limit=depth)

        async def vector_side() -> None:
            nonlocal near, vector
            vector = await query_vector()
            if vector is not None:
                floor = self.fusion.candidate_floor
                found = await vectors.nearest(user, vector, memory_filter, count=depth, floor=floor, centred=True)
                near = search.admitted_neighbours(found, self.fusion, await vectors.centring(user))

        by_words = mode != "semantic"
        await _concurrently(*([keyword_side] if by_words else []), *([vector_side] if mode != "keyword" else []))
        if mode != "keyword" and vector is None:
            mode = "keyword"
            if not by_words:
                await keyword_side()  # a semantic search whose query could not be embedded answers by keyword
        text = {rowid: (strength, own) for rowid, strength, own in keyword}
        # The keyword rows first, then the neighbours that match no word (the order ranking has always seen).
        rowids = list(dict.fromkeys([*text, *(rowid for rowid, _ in near)]))
        near_cosine = dict(near)
        missing = [rowid for rowid, _, _ in keyword if rowid not in near_cosine]
        only_near = [rowid for rowid, _ in near if rowid not in text]
        details: dict[int, tuple[Memory, int]] = {}
        extra: dict[int, float] = {}
        matching = 0

        async def read_details() -> None:
            nonlocal details
            details = await self.store.candidates(user, rowids)

        async def read_missing() -> None:
            nonlocal extra
            assert vector is not None  # only run with a vector
            extra = await vectors.similarities(user, vector, missing, centred=True)

        async def count_only_near() -> None:
            nonlocal matching
            matching = await self.store.count_matching(user, match, only_near)

        await _concurrently(
            read_details,
            *([read_missing] if vector is not None else []),
            *([count_only_near] if mode == "hybrid" and only_near else []),
        )
        cosine = near_cosine | extra if vector is not None else {}
        candidates = []
        for rowid in rowids:
            if rowid not in details:
                continue  # removed between the reads
            memory, group = details[rowid]
            strength, own = text.get(rowid, (0.0, False))
            candidates.append(Candidate(rowid, memory, group, strength, own, cosine.get(rowid)))
        if mode == "hybrid":
            total += len(only_near) - matching
        elif mode == "semantic":
            total = len(near)
        now = datetime.now(UTC)
        ranked = search.rank_candidates(candidates, mode, self.fusion, self.ranking, now=now, boost=boost)
        return ranked, total, mode

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
        include_archived: bool = False,
    ) -> ListResult:
        """One page of a user's memories, newest first by default; superseded, deleted and archived ones only
        on request."""
        user = self.user(user_id)
        _page_bounds(limit, offset, MAX_LIST_LIMIT)
        memory_filter = self._filter(
            category=category,
            from_date=from_date,
            to_date=to_date,
            date_field=date_field,
            include_inactive=include_inactive,
        )
        memory_filter = dataclasses.replace(memory_filter, include_archived=include_archived)
        await self._sweep_if_due()
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
        user = self.user(user_id)
        return await self.store.get_memory(user, await self.resolve_memory_id(user, memory_id))

    async def memory_details(self, memory_id: str, *, user_id: str | None = None) -> MemoryDetails:
        """One memory in any status (active, superseded or deleted), its history oldest first, and its links.

        Raises:
            MemoryNotFound: the user has no memory with that id.
        """
        user = self.user(user_id)
        memory_id = await self.resolve_memory_id(user, memory_id)
        await self.store.flush_access()
        memory = await self.store.get_memory(user, memory_id, include_inactive=True)
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
        memory_id = await self.resolve_memory_id(user, memory_id)
        if (await self.store.get_memory(user, memory_id, include_inactive=True)).status == "active":
            raise AlreadyActive(memory_id)
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

    async def user_ids(self, *, limit: int) -> list[str]:
        """The default user, then up to `limit` - 1 other users with active memories, alphabetically."""
        others = [user for user in await self.store.user_ids(limit=limit) if user != self.limits.default_user]
        return [self.limits.default_user, *others][:limit]

    async def delete_memory(self, memory_id: str, *, user_id: str | None = None, purge: bool = False) -> DeleteResult:
        """Delete one memory: it leaves search, lists and exports, and so does its part of the message it came
        from, for every other memory that shows or indexes that message (docs/forgetting.md).

        Without `purge` the row and history stay (restore_memory undoes it). With `purge` (also for a memory
        already deleted) the memory, its history, links and index entries and its part of other memories'
        source messages and context are removed from the database file, and the file is compacted.

        Raises:
            MemoryNotFound: unknown id for that user, or (without `purge`) already deleted.
        """
        user = self.user(user_id)
        memory_id = await self.resolve_memory_id(user, memory_id)
        if purge:
            async with self.store.transaction() as db:
                await self.store.purge(db, user, [memory_id])
            await self.store.compact()
            return DeleteResult(memory_id=memory_id, deleted=True, purged=True)
        async with self.store.transaction() as db:
            await self.store.soft_delete(db, user, memory_id)
        return DeleteResult(memory_id=memory_id, deleted=True)

    async def delete_user_memories(self, user_id: str | None = None, *, confirm: str | None = None) -> EraseResult:
        """Erase a user: purge every memory, history row, link and logged message of `user_id`, in one
        transaction, then compact the file. `confirm` must repeat the user id (the default user's when
        `user_id` is None), so a slip cannot erase anyone.

        Raises:
            InvalidInput: `confirm` is missing or is not the user id; nothing is removed.
        """
        user = self.user(user_id)
        if confirm != user:
            raise InvalidInput(
                f"erasing every memory of {user!r} cannot be undone: pass confirm={user!r} to go ahead"
                + ("" if confirm is None else f" (confirm was {confirm[:140]!r})")
            )
        async with self.store.transaction() as db:
            counts = await self.store.erase_user(db, user)
        await self.store.compact()
        return EraseResult(user_id=user, **counts)

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
        include_archived: bool = False,
    ) -> ExportResult:
        """Every memory of the user that the filters admit, oldest first, rendered in `format`: active ones,
        archived ones too with `include_archived`.

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
        memory_filter = dataclasses.replace(memory_filter, include_archived=include_archived)
        await self._sweep_if_due()
        memories, _ = await self.store.list_memories(
            user, memory_filter, sort_by="created_at", descending=False, limit=max_memories
        )
        fmt: ExportFormat = format  # type: ignore[assignment]  # checked just above
        history = await self.store.all_history(user) if include_history else None
        links = await self.store.all_links(user) if include_history else None
        data = export.render(fmt, user, memories, utc_now(), history, links)
        return ExportResult(format=fmt, memory_count=len(memories), data=data)

    # --- forgetting: update, pin, importance, archive, retention (docs/forgetting.md) ---

    def _expiry(self, expires_at: str | None, ttl_days: float | None) -> str | None:
        """The UTC expiry time for `expires_at` or `ttl_days` (at most one), or None for neither.

        Raises:
            InvalidInput: both given, a malformed or past `expires_at`, or `ttl_days` not above 0.
        """
        now = self.clock()
        if expires_at is not None and ttl_days is not None:
            raise InvalidInput("give expires_at or ttl_days, not both")
        if ttl_days is not None:
            if not 0 < ttl_days <= MAX_TTL_DAYS:
                raise InvalidInput(
                    f"ttl_days {ttl_days} is out of range: use a number of days above 0, up to {MAX_TTL_DAYS}"
                )
            return to_utc_text(now + timedelta(days=ttl_days))
        if expires_at is None:
            return None
        when = parse_timestamp(expires_at, self.limits.timezone, field="expires_at")
        if when <= now:
            raise InvalidInput(f"expires_at {expires_at[:60]!r} is not in the future: give a later time, or ttl_days")
        return to_utc_text(when)

    async def update_memory(
        self,
        memory_id: str,
        *,
        user_id: str | None = None,
        content: str | None = None,
        category: Category | str | None = None,
        event_time: str | None = None,
        importance: float | None = None,
    ) -> UpdateResult:
        """Correct an active memory in place (a correction from the user or the host model).

        Content, category and event_time changes are written with an `updated` history row (old and new
        content) and re-indexed by trigger; the corrected memory is then reconciled with the user's other
        active memories (conflicts.find_candidates): those it now duplicates or updates are marked
        `superseded` and linked to it (the correction is the newest word), those it complements are linked
        as `related`. `importance` alone changes no history.

        Raises:
            InvalidInput: nothing to change, empty content, unknown category, bad event_time or importance.
            MemoryNotFound: no active memory with that id for that user.
        """
        user = self.user(user_id)
        if content is None and category is None and event_time is None and importance is None:
            raise InvalidInput("nothing to update: give content, category, event_time or importance")
        memory_id = await self.resolve_memory_id(user, memory_id)
        text = None if content is None else content.strip()
        if text is not None and not 1 <= len(text) <= MAX_CONTENT_CHARS:
            raise InvalidInput(f"content must be 1-{MAX_CONTENT_CHARS} characters, e.g. 'User has a dog called Rex'")
        kind = _category(category)
        when = self._timestamp(event_time, "event_time")
        _importance(importance)
        await self._sweep_if_due()
        superseded: list[str] = []
        related: list[str] = []
        async with self.store.transaction() as db:
            current = await self.store.get_memory_in(db, user, memory_id)
            if importance is not None:
                await self.store.set_flags(db, user, [memory_id], importance=importance)
            if text is not None or kind is not None or when is not None:
                fields = _extracted(current, self.limits.timezone)
                if text is not None:
                    fields = fields.model_copy(
                        update={
                            "content": text,
                            "entities": [name for name in fields.entities if name.lower() in text.lower()],
                        }
                    )
                if kind is not None:
                    fields = fields.model_copy(update={"category": kind})
                if when is not None:
                    date_only = event_time is not None and bool(_DATE_ONLY.match(event_time.strip()))
                    fields = fields.model_copy(update={"event_time": when, "event_date_only": date_only})
                await self.store.rewrite_memory(db, user, memory_id, fields, "updated")
                speakers = [current.speaker or "User"]
                for candidate in await conflicts.find_candidates(self.store, db, user, fields, speakers):
                    other = candidate.memory.memory_id
                    if other == memory_id:
                        continue
                    if candidate.verdict.kind in ("duplicate", "update"):
                        await self.store.set_status(db, user, other, "superseded", expected=("active",))
                        await self.store.add_link(db, user, memory_id, other, "supersedes")
                        superseded.append(other)
                    else:
                        await self.store.add_link(db, user, memory_id, other, "related")
                        related.append(other)
            updated = await self.store.get_memory_in(db, user, memory_id)
        await self._embed_written(user)  # a new content dropped the old vector (memory_vectors_au)
        return UpdateResult(memory=MemoryView.of(updated), superseded=superseded, related_memory_ids=related)

    async def set_pinned(self, memory_id: str, pinned: bool, *, user_id: str | None = None) -> MemoryView:
        """Pin (or unpin) an active memory: pinned ones never expire and rank a little higher (`Ranking`).

        Raises:
            MemoryNotFound: no active memory with that id for that user (a deleted one cannot be pinned).
        """
        user = self.user(user_id)
        memory_id = await self.resolve_memory_id(user, memory_id)
        async with self.store.transaction() as db:
            await self.store.set_flags(db, user, [memory_id], pinned=pinned)
            memory = await self.store.get_memory_in(db, user, memory_id)
        return MemoryView.of(memory)

    async def set_archived(self, memory_id: str, archived: bool, *, user_id: str | None = None) -> MemoryView:
        """Archive (or bring back) an active memory: kept, but out of search, lists and exports unless
        `include_archived`.

        Raises:
            MemoryNotFound: no active memory with that id for that user.
        """
        user = self.user(user_id)
        memory_id = await self.resolve_memory_id(user, memory_id)
        async with self.store.transaction() as db:
            await self.store.set_flags(db, user, [memory_id], archived=archived)
            memory = await self.store.get_memory_in(db, user, memory_id)
        return MemoryView.of(memory)

    async def sweep_expired(self) -> dict[str, int]:
        """Soft-delete every memory due to expire now (by `expires_at`, or by the retention days of its user);
        pinned ones never. Each gets a `deleted` history row whose source is "expired (retention)", and its
        span is hidden like any delete. Returns the count per user (only users with some).
        """
        await self.store.flush_access()  # a search return counts as use
        now = self.clock()
        default = self.limits.retention_days
        cutoffs = {
            user: to_utc_text(now - timedelta(days=days)) for user, days in self.limits.user_retention_days.items()
        }
        counts: dict[str, int] = {}
        async with self.store.transaction() as db:
            due = await self.store.expired(
                db,
                to_utc_text(now),
                cutoffs,
                default=None if default is None else to_utc_text(now - timedelta(days=default)),
            )
        # Batches of SWEEP_BATCH deletes per transaction: a first sweep over a large file (retention just
        # turned on) takes about 6 ms per memory on a loaded 2-core machine, and other writers must get in.
        for start in range(0, len(due), SWEEP_BATCH):
            async with self.store.transaction() as db:
                for user, memory_id in due[start : start + SWEEP_BATCH]:
                    try:
                        await self.store.soft_delete(db, user, memory_id, reason=EXPIRED_REASON)
                    except MemoryNotFound:
                        continue  # deleted by its user since the list was read
                    counts[user] = counts.get(user, 0) + 1
        if counts:
            logger.info("retention deleted %d memories", sum(counts.values()))
        return counts

    async def _sweep_if_due(self) -> None:
        """Run `sweep_expired` on the first call after each `sweep_interval_seconds` (the first call included).

        Why not a timer task: the SSE transport enters and leaves the server lifespan once per connection, in
        different tasks, so a task group opened there cannot be closed reliably; a due check on each call
        costs one comparison, and `harmonia-mcp sweep` runs it from cron for a server that sits idle.
        """
        now = self.clock()
        if self._next_sweep is not None and now < self._next_sweep:
            return
        self._next_sweep = now + timedelta(seconds=self.limits.sweep_interval_seconds)
        await self.sweep_expired()

    async def forgetting_stats(self) -> dict[str, int]:
        """Counts for `doctor`: pinned, archived, deleted, deleted by retention, expiring within 7 days."""
        now = self.clock()
        return await self.store.forgetting_stats(to_utc_text(now), to_utc_text(now + timedelta(days=7)))

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
        # Why a spool: the second pass used to parse and check every row again (two thirds of an import's Python
        # time); now the first pass writes each checked row, in batches, to a temporary file (marshal, only the
        # batch in memory) and the second reads them back. Memory stays bounded by one batch.
        with tempfile.TemporaryFile(prefix="harmonia-import-") as spool:
            pending: list[tuple[Any, ...]] = []
            for index, raw in enumerate(export.read_json_export(stream, header)):
                rows += 1
                try:
                    fields = self._import_fields(raw)
                    history, when = _row_history(raw)
                except InvalidInput as error:
                    invalid[index] = str(error)
                    continue
                earlier = first_index.setdefault(fields["memory_id"], index)
                if earlier != index:
                    invalid[index] = f"memory_id {fields['memory_id']!r} repeats memories[{earlier}]"
                    continue
                pending.append((_import_columns(fields), history, when))
                if len(pending) >= IMPORT_BATCH:
                    marshal.dump(pending, spool)
                    pending = []
            if pending:
                marshal.dump(pending, spool)
            if user_id is None and header.user_id is not None and not isinstance(header.user_id, str):
                raise InvalidInput('the import file\'s "user_id" must be a string (or pass --user-id)')
            owner = self.user(user_id if user_id is not None else header.user_id)
            if invalid and not skip_invalid:
                raise InvalidInput(_invalid_rows_message(invalid, rows))
            stream.seek(0)
            links = _exported_links(export.read_json_links(stream))
            spool.seek(0)
            imported = renamed = done = 0
            valid = rows - len(invalid)
            while done < valid:
                batch: list[tuple[Any, ...]] = marshal.load(spool)
                added, moved = await self._import_batch(owner, batch)
                imported, renamed, done = imported + added, renamed + moved, done + len(batch)
                if progress is not None:
                    progress(done, valid)
        if links:
            # Links last: both ends must be memories of `owner` by now (Store.import_history_and_links checks).
            async with self.store.transaction() as db:
                await self.store.import_history_and_links(db, owner, {}, {}, links)
        if self.vectors is not None:
            self.vectors.notify()  # vectors are derived, never imported: the worker embeds them in batches
        return ImportResult(
            user_id=owner,
            imported=imported,
            skipped=valid - imported,
            new_ids=renamed,
            invalid=[ImportProblem(index=index, reason=reason) for index, reason in sorted(invalid.items())],
        )

    async def _import_batch(self, owner: str, rows: list[tuple[Any, ...]]) -> tuple[int, int]:
        """Insert one batch of spooled rows (`_import_columns`, history rows, occurred_at) for `owner` in one
        transaction, with the exported history and occurred_at of each memory that is new under its own id (a
        memory already there keeps its own history); how many were inserted and how many got a new id."""
        memories = [ImportRow(columns[0], owner, *columns[1:]) for columns, _, _ in rows]
        async with self.store.transaction() as db:
            counts = await self.store.import_rows(db, memories)
            history: dict[str, list[dict[str, Any]]] = {}
            occurred: dict[str, str] = {}
            for memory, (_, rows_of, when) in zip(memories, rows, strict=True):
                if memory.memory_id in counts.present or memory.memory_id in history:
                    continue
                history[memory.memory_id] = rows_of
                if when is not None:
                    occurred[memory.memory_id] = when
            await self.store.import_history_and_links(db, owner, history, occurred, [])
        return counts.inserted, counts.moved

    def import_row(self, raw: Any, owner: str) -> Memory:
        """One row of a JSON export as the `Memory` to insert for `owner` (the checks of `_import_fields`).

        Raises:
            InvalidInput: the row is not an object or a field is missing or invalid; the message names the field.
        """
        return Memory.model_construct(user_id=owner, **self._import_fields(raw))  # validated, as MemoryView

    def _import_fields(self, raw: Any) -> dict[str, Any]:
        """One row of a JSON export checked as the tools check values: the fields of the `Memory` to insert
        (without `user_id`).

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
        # The validated view's own field values (a model_dump would copy every nested value again).
        fields = dict(view.__dict__)
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
        return fields

    # --- context for the next prompt (recall, profile, upcoming events; harmonia_mcp/context.py) ---

    async def profile(self, *, user_id: str | None = None) -> Profile:
        """The user's stable core from their active memories: name, home, work, family and partner, pets,
        languages, health notes, preferences (`context.PROFILE_SLOTS`), defining facts first, then newest.

        Superseded memories are never read, so after "I moved to Berlin" superseded "User lives in Lisbon"
        the home is Berlin; single-valued slots show only their newest memory even when both stayed active.

        Raises:
            InvalidInput: a bad `user_id`.
        """
        user = self.user(user_id)
        wanted = sorted({category for slot in context.PROFILE_SLOTS for _, kinds in slot.tiers for category in kinds})
        memories: list[Memory] = []
        for category in wanted:
            found, _ = await self.store.list_memories(
                user, MemoryFilter(category=category), sort_by="updated_at", limit=PROFILE_CANDIDATES
            )
            memories += found
        entries = [
            ProfileEntry(
                slot=slot,
                memory_id=memory.memory_id,
                content=memory.content,
                category=memory.category,
                updated_at=memory.updated_at,
            )
            for slot, memory in context.profile_entries(memories)
        ]
        return Profile(user_id=user, entries=entries)

    async def upcoming_events(
        self, *, user_id: str | None = None, days: int = 7, today: date | None = None
    ) -> UpcomingResult:
        """The user's dated memories happening from today to `days` days ahead, soonest first.

        One-off events come from `event_time`; recurring ones (birthdays and anniversaries with a date,
        "every Friday" habits; `context.recurrence`) are expanded into their next occurrence.

        Args:
            days: 0 (today only) to `MAX_UPCOMING_DAYS`.
            today: the first day, in the configured time zone (default: today there).

        Raises:
            InvalidInput: `days` out of range, or a bad `user_id`.
        """
        user = self.user(user_id)
        if not 0 <= days <= MAX_UPCOMING_DAYS:
            raise InvalidInput(f"days {days} is out of range: use 0 to {MAX_UPCOMING_DAYS}")
        first = today or datetime.now(self.limits.timezone).date()
        last = first + timedelta(days=days)
        dated, _ = await self.store.list_memories(
            user,
            self._filter(category=None, from_date=first.isoformat(), to_date=last.isoformat(), date_field="event_time"),
            sort_by="event_time",
            descending=False,
            limit=MAX_UPCOMING_EVENTS,
        )
        recurring: dict[str, tuple[Memory, date, context.Recurrence]] = {}
        for query in (RECURRING_YEARLY_QUERY, RECURRING_WEEKLY_QUERY):
            match = search.build_match_expression(query)
            assert match is not None  # constant queries of plain words
            found, _ = await self.store.search(
                user, match, MemoryFilter(), limit=RECURRING_CANDIDATES, offset=0, ranking=self.ranking
            )
            for hit in found:
                occurrence = context.next_occurrence(hit.memory, first)
                if occurrence is not None and occurrence[0] <= last:
                    recurring[hit.memory.memory_id] = (hit.memory, *occurrence)
        events = [
            UpcomingEvent(
                date=day.isoformat(),
                memory_id=memory.memory_id,
                content=memory.content,
                category=memory.category,
                event_time=memory.event_time,
                recurrence=kind,
            )
            for memory, day, kind in recurring.values()
        ]
        events += [
            UpcomingEvent(
                date=memory.event_time or "",
                memory_id=memory.memory_id,
                content=memory.content,
                category=memory.category,
                event_time=memory.event_time,
            )
            for memory in dated
            if memory.memory_id not in recurring
        ]
        events.sort(key=lambda event: (event.date[:10], context.display_date(event.date), event.memory_id))
        return UpcomingResult(from_date=first.isoformat(), to_date=last.isoformat(), events=events)

    async def recall(
        self,
        topic: str | None = None,
        *,
        user_id: str | None = None,
        budget: int = DEFAULT_RECALL_BUDGET,
        upcoming_days: int = 7,
        today: date | None = None,
        include_ids: bool = True,
    ) -> RecallResult:
        """One Markdown block of what the user's assistant should know now, at most `budget` tokens.

        Sections, in this order: the profile (`profile`), the memories most relevant to `topic` (through
        `search_memories`, so whatever retriever it uses, fused with the nearest by meaning:
        `_with_meaning_neighbours`; a topic beyond search's bounds is cut by `search.topic_query`), and upcoming
        events (`upcoming_events`). Within each, memories are grouped by category; each line ends with the
        memory's number ("#42"), dated ones start with their date unless their content says it. Only active memories
        (the newest version of a fact) are used, each at most once, and a memory goes in whole or not at all
        (`context.assemble`). The profile gets at most a quarter of the budget and `MAX_PROFILE_TOKENS`,
        upcoming events a fifth; both are filled first, and relevant memories get the rest.

        Args:
            topic: the user's current message or topic; None or no searchable word gives no relevant
                section.
            budget: `MIN_RECALL_BUDGET` to `MAX_RECALL_BUDGET` tokens, counted by `context.estimate_tokens`.
            upcoming_days: how far ahead upcoming events go, 0 to `MAX_UPCOMING_DAYS`.
            include_ids: end each line with its memory number (`Store.numbers`: "#42", the user's own numbering,
                never reused; about 4 tokens with its brackets against 13-17 for a full id), which every tool
                taking a memory id accepts (`resolve_memory_id`); `memory_ids` lists the full ids either way.

        Raises:
            InvalidInput: budget or upcoming_days out of range, a bad `user_id`.
        """
        user = self.user(user_id)
        if not MIN_RECALL_BUDGET <= budget <= MAX_RECALL_BUDGET:
            raise InvalidInput(
                f"budget {budget} is out of range: use {MIN_RECALL_BUDGET} to {MAX_RECALL_BUDGET} tokens"
            )
        profile = await self.profile(user_id=user)
        upcoming = await self.upcoming_events(user_id=user, days=upcoming_days, today=today)
        relevant: list[context.Item] = []
        query = search.topic_query(topic) if topic is not None else None
        if topic is not None and query is not None:
            hits = (await self.search_memories(query, user_id=user, limit=MAX_SEARCH_LIMIT)).results
            relevant = [
                context.Item(
                    hit.memory_id,
                    hit.content,
                    hit.category,
                    context.display_date(hit.event_time, hit.content),
                    include_ids,
                )
                for hit in hits
            ]
            relevant = await self._with_meaning_neighbours(user, topic, relevant, include_ids)
        sections = [
            context.Section(
                "profile",
                "What the user told you about themselves",
                [
                    context.Item(entry.memory_id, entry.content, entry.category, show_id=include_ids)
                    for entry in profile.entries
                ],
                max_tokens=min(budget // 4, MAX_PROFILE_TOKENS),
            ),
            context.Section(
                "relevant",
                "Relevant memories",
                relevant,
            ),
            context.Section(
                "upcoming",
                f"Upcoming (next {upcoming_days} days)",
                [
                    context.Item(
                        event.memory_id,
                        event.content,
                        event.category,
                        context.display_date(event.date) + (f" ({event.recurrence})" if event.recurrence else ""),
                        include_ids,
                    )
                    for event in upcoming.events
                ],
                grouped=False,
                max_tokens=budget // 5,
            ),
        ]
        if include_ids:
            await self._label_with_numbers(user, sections)
        block = context.assemble(sections, budget, fill_order=("profile", "upcoming", "relevant"))
        order = [*block.ids["profile"], *block.ids["relevant"], *block.ids["upcoming"]]
        return RecallResult(
            text=block.text,
            tokens=block.tokens,
            budget=budget,
            memory_ids=order,
            profile_ids=block.ids["profile"],
            relevant_ids=block.ids["relevant"],
            upcoming_ids=block.ids["upcoming"],
            left_out=block.left_out,
        )

    async def _as_user_subject(self, user: str, text: str) -> str:
        """`text` with the user's own names (their name memories, `Store.own_names`) rewritten to "User", as their
        memories word them (`search.as_user_subject`)."""
        return search.as_user_subject(text, search.own_name_words(await self.store.own_names(user)))

    async def _label_with_numbers(self, user: str, sections: Sequence[context.Section]) -> None:
        """Label every item of `sections` with its memory number ("#42", `Store.numbers`): the block shows it in
        place of the full id, which the structured result still lists."""
        wanted = [item.memory_id for section in sections for item in section.items]
        if not wanted:
            return
        numbers = await self.store.numbers(user, wanted)
        for section in sections:
            section.items = [
                dataclasses.replace(item, label=f"#{numbers[item.memory_id]}") if item.memory_id in numbers else item
                for item in section.items
            ]

    async def _with_meaning_neighbours(
        self, user: str, topic: str, found: list[context.Item], include_ids: bool
    ) -> list[context.Item]:
        """`found` (search's hits for `topic`, best first) fused (`context.fuse_rankings`) with the user's
        `MAX_SEARCH_LIMIT` active memories nearest to `topic` by meaning, with none of search's neighbour floors:
        a search answer should hold only what matches, a context block should fill its budget with what is
        nearest. Unchanged when no embedder is ready or embedding fails (search has said why in its log)."""
        if self.vectors is None or not self.vectors.ready:
            return found
        try:
            vector = await self.vectors.embed_query(await self._as_user_subject(user, topic))
        except EmbeddingError:
            return found
        near = await self.vectors.nearest(user, vector, MemoryFilter(), count=MAX_SEARCH_LIMIT)
        details = await self.store.candidates(user, [rowid for rowid, _ in near])
        items = {item.memory_id: item for item in found}
        for memory, _ in details.values():
            items.setdefault(
                memory.memory_id,
                context.Item(
                    memory.memory_id,
                    memory.content,
                    memory.category,
                    context.display_date(memory.event_time, memory.content),
                    include_ids,
                ),
            )
        nearest = [details[rowid][0].memory_id for rowid, _ in near if rowid in details]
        return [items[key] for key in context.fuse_rankings([item.memory_id for item in found], nearest)]

    async def list_users(self, prefix: str = "", *, limit: int = 100) -> list[str]:
        """User ids that have memories and start with `prefix`, sorted, at most `limit` (for completion)."""
        return await self.store.list_users(prefix, limit=limit)


def _not_a_memory_id(memory_id: object) -> str:
    return (
        f"memory_id {str(memory_id)[:60]!r} is not a memory id: ids are 'mem_' and 16 hex digits, e.g. "
        f"mem_0123456789abcdef (search_memories and list_memories return them), a memory number as recall shows "
        f"it (#42, or 42), or an id's first {SHORT_ID_DIGITS} or more hex digits (mem_0123abcd)"
    )


_HISTORY_ACTIONS = frozenset({"created", "updated", "merged", "superseded", "deleted", "restored"})
_HISTORY_TEXT = ("old_content", "new_content", "source_message")


def _row_history(raw: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The exported history rows and `occurred_at` of one row of a JSON export (`export_memories(
    include_history=True)`), for `import_memories` to restore.

    Raises:
        InvalidInput: `history` is not a list of {action, changed_at, old_content/new_content/source_message}.
    """
    if not isinstance(raw, dict):
        return [], None
    occurred = raw.get("occurred_at") if isinstance(raw.get("occurred_at"), str) else None
    rows = raw.get("history", [])
    if not isinstance(rows, list) or not all(
        isinstance(row, dict)
        and row.get("action") in _HISTORY_ACTIONS
        and isinstance(row.get("changed_at"), str)
        and all(row.get(key) is None or isinstance(row.get(key), str) for key in _HISTORY_TEXT)
        for row in rows
    ):
        raise InvalidInput(
            "history is invalid: a list of objects with action (one of "
            f"{', '.join(sorted(_HISTORY_ACTIONS))}), changed_at, and old_content/new_content/source_message"
        )
    return rows, occurred


def _import_columns(fields: Mapping[str, Any]) -> tuple[Any, ...]:
    """The `store.ImportRow` of checked row fields (`MemoryService._import_fields`) without its `user_id`, as
    plain values (what marshal can spool): memory_id first, then the columns after user_id in order."""
    category = fields["category"]
    return (
        fields["memory_id"],
        fields["content"],
        category.value if isinstance(category, Category) else str(category),
        fields["confidence"],
        list(fields["entities"]),
        list(fields["tags"]),
        fields["event_time"],
        fields["source_message"],
        fields["speaker"],
        fields["session_id"],
        fields["metadata"],
        fields["extractor"],
        fields["status"],
        fields["created_at"],
        fields["updated_at"],
    )


def _exported_links(links: Any) -> list[dict[str, str]]:
    """The top-level `links` of a JSON export, checked.

    Raises:
        InvalidInput: not a list of {"from_id", "to_id", "kind": "supersedes"|"related"}.
    """
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
    return links


MAX_TTL_DAYS = 36500.0
SWEEP_BATCH = 200
MAX_CONTENT_CHARS = 2000


def _importance(value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise InvalidInput(f"importance {value} is out of range: use a number from 0 (trivial) to 1 (essential)")


def _extracted(memory: Memory, zone: tzinfo) -> ExtractedMemory:
    """What `memory` says, as the `ExtractedMemory` that `Store.rewrite_memory` writes back."""
    when: datetime | None = None
    date_only = False
    if memory.event_time is not None:
        date_only = bool(_DATE_ONLY.match(memory.event_time))
        when = parse_timestamp(memory.event_time, zone, field="event_time")
    return ExtractedMemory(
        content=memory.content,
        category=memory.category,
        confidence=memory.confidence,
        entities=list(memory.entities),
        tags=list(memory.tags),
        event_time=when,
        event_date_only=date_only,
    )


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


EMBED_INLINE = 64  # memories a write embeds before it answers; more (an import) go to the background worker


async def _concurrently(*calls: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `calls` at once and wait for all of them; the first to fail cancels the others and its exception is
    raised as itself (not inside an exception group), so callers see the errors one call after another would."""
    if len(calls) == 1:
        await calls[0]()
        return
    try:
        async with anyio.create_task_group() as group:
            for call in calls:
                group.start_soon(call)
    except BaseExceptionGroup as failed:
        if len(failed.exceptions) == 1:
            raise failed.exceptions[0] from failed.exceptions[0].__cause__
        raise


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
    _check_depth(metadata, "metadata")
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
