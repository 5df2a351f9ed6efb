"""Pydantic models shared by the core and the MCP boundary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

USER_ID_PATTERN = r"^[A-Za-z0-9_.@-]{1,128}$"
MEMORY_ID_PATTERN = r"^mem_[0-9a-f]{16}$"


def count_of(count: int, noun: str = "memory", plural: str = "memories") -> str:
    """`count` with its noun, singular for one: "1 memory", "0 memories", "2 memories"."""
    return f"{count} {noun if count == 1 else plural}"


class Category(StrEnum):
    """The twelve kinds of memory (see docs/tools.md for one example of each)."""

    PERSONAL = "personal"
    RELATIONSHIP = "relationship"
    PREFERENCE = "preference"
    WORK = "work"
    EDUCATION = "education"
    HEALTH = "health"
    EVENT = "event"
    GOAL = "goal"
    SKILL = "skill"
    EMOTION = "emotion"
    FACT = "fact"
    OTHER = "other"


Status = Literal["active", "superseded", "deleted"]
Action = Literal["created", "skipped", "updated", "merged", "superseded_previous", "stored_as_superseded"]
ExportFormat = Literal["json", "csv", "markdown", "text"]
SearchSort = Literal["relevance", "created_at", "updated_at", "event_time", "confidence"]
ListSort = Literal["created_at", "updated_at", "event_time", "confidence"]
SortOrder = Literal["asc", "desc"]
ResolutionStrategy = Literal["auto", "update", "merge", "version", "keep_both", "skip"]
ConflictKind = Literal["duplicate", "update", "complement", "unrelated"]


class ExtractedMemory(BaseModel):
    """One fact an extractor found in a message, before it is stored.

    `content` is a third-person sentence ("User has a dog called Biggie").
    `event_time` is timezone-aware when set; `event_date_only` says no clock time was said, so the
    store keeps only its date ("2024-08-20") and its time of day (midnight) means nothing.
    """

    content: str = Field(min_length=1)
    category: Category = Category.OTHER
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    entities: list[str] = Field(default_factory=list[str])
    tags: list[str] = Field(default_factory=list[str])
    event_time: datetime | None = None
    event_date_only: bool = False

    @field_validator("confidence", mode="before")
    @classmethod
    def _clamp_confidence(cls, value: Any) -> Any:
        if isinstance(value, int | float):
            return min(1.0, max(0.0, float(value)))
        return value


class CallerFact(BaseModel):
    """One fact written by the calling model for `store_memory(facts=[...])` (validated by extract/caller.py).

    Fields are loosely typed on purpose: the server, not the schema, says what was wrong with an item and
    what is allowed, and names the item.
    """

    content: str = Field(description="One durable fact as a third-person sentence, e.g. 'User has two cats'.")
    category: str | None = Field(default=None, description="One of the 12 categories; inferred when omitted.")
    event_time: str | None = Field(default=None, description="ISO-8601 date or timestamp the fact refers to.")
    when: str | None = Field(default=None, description="A time said in words ('next Friday at 3pm'), resolved.")
    entities: list[str] | None = Field(default=None, description="Names in the fact; found when omitted.")
    keywords: list[str] | None = Field(
        default=None, description="Words it should also be found by ('pets' for a fact about cats)."
    )
    confidence: float | None = Field(default=None, description="0-1; default 0.9.")


class MemoryView(BaseModel):
    """A memory as `list_memories`, exports and the resources show it: every field but `user_id`."""

    memory_id: str
    content: str
    category: Category
    confidence: float
    entities: list[str]
    tags: list[str]
    event_time: str | None
    source_message: str | None
    speaker: str | None
    session_id: str | None
    metadata: dict[str, Any]
    extractor: str
    status: Status
    created_at: str
    updated_at: str
    # When the message it came from was said (UTC); None for memories stored before it was recorded.
    occurred_at: str | None = None
    # Forgetting (docs/forgetting.md): pinned memories never expire and rank a little higher; importance is
    # 0-1 (None: not set, neutral); archived ones are kept but left out of search, lists and exports unless
    # asked for; expires_at (UTC) is when retention deletes it; access_count and last_accessed_at count how
    # often, and when last, a search returned it.
    pinned: bool = False
    importance: float | None = None
    archived: bool = False
    expires_at: str | None = None
    access_count: int = 0
    last_accessed_at: str | None = None

    @classmethod
    def of(cls, memory: Memory) -> MemoryView:
        return cls.model_validate(memory.model_dump(exclude={"user_id"}))


class Memory(MemoryView):
    """A stored memory, as the store returns it: the view plus its owner. Times are ISO-8601 strings;
    created/updated are UTC."""

    user_id: str


class StoredMemory(BaseModel):
    """One memory in the result of `store_memory`."""

    memory_id: str
    content: str
    category: Category
    confidence: float
    event_time: str | None
    action: Action
    extractor: str
    metadata: dict[str, Any]
    # Reconciliation (conflicts.py): how the new memory related to the one it was reconciled with, and the ids.
    conflict: ConflictKind | None = None
    related_memory_ids: list[str] = Field(default_factory=list[str])
    supersedes: list[str] = Field(default_factory=list[str])


class StoreResult(BaseModel):
    """Result of `store_memory`: what was extracted and what happened to each memory."""

    memories: list[StoredMemory]
    warnings: list[str] = Field(default_factory=list[str])
    # Background extraction (issue 13): the memories above are the rules' provisional ones, and the local
    # model is still to read the message; `extraction_status(job_id)` says when its memories have landed.
    pending_extraction: bool = False
    job_id: int | None = None


class StoreItem(BaseModel):
    """One message (or the caller's facts about it) of a `store_memories` batch; the fields of `store_memory`.

    Checked by the service with store_memory's rules, so an error names the item (`items[3]: ...`).
    """

    message: str | None = Field(
        default=None, description="What the speaker said. With facts, kept only as their source."
    )
    facts: list[CallerFact] | None = Field(
        default=None, description="Durable facts you understood from this message (as store_memory's facts)."
    )
    speaker: str | None = Field(default=None, description="Who 'I' and 'my' are in the message (default 'User').")
    session_id: str | None = Field(default=None, description="An optional conversation id kept with each memory.")
    metadata: dict[str, Any] | None = Field(default=None, description="A JSON object kept with each memory.")
    occurred_at: str | None = Field(default=None, description="When it was said (ISO-8601). Default: now.")
    timezone: str | None = Field(default=None, description="The speaker's IANA time zone for this message.")
    resolution_strategy: ResolutionStrategy | None = Field(
        default=None, description="auto, update, merge, version, keep_both or skip; default: the configured one."
    )
    importance: float | None = Field(default=None, description="0-1, how much these memories matter.")
    expires_at: str | None = Field(default=None, description="Forget these memories at this ISO-8601 time.")
    ttl_days: float | None = Field(default=None, description="Forget these memories after this many days.")


class StoredItem(StoreResult):
    """What `store_memories` did with one item: `index` is its place in `items` (from 0)."""

    index: int


class StoreBatchResult(BaseModel):
    """Result of `store_memories`: one entry per item, in item order, and how many memories were written."""

    items: list[StoredItem]
    memories_written: int  # created or rewritten; skipped duplicates not counted


class Pagination(BaseModel):
    """Where a page sits: `has_more` is true when `offset + len(page) < total_count`."""

    total_count: int
    limit: int
    offset: int
    has_more: bool


class SearchHit(BaseModel):
    """One search result. `relevance_score` is in 0-1, higher is better; `highlights` mark matches with [ and ]."""

    memory_id: str
    content: str
    category: Category
    relevance_score: float
    highlights: list[str]
    created_at: str
    event_time: str | None
    metadata: dict[str, Any] | None = None
    source_message: str | None = None
    status: Status = "active"


class SearchResult(BaseModel):
    """Result of `search_memories`."""

    results: list[SearchHit]
    pagination: Pagination
    # The mode that answered: hybrid, keyword or semantic (keyword when meaning was asked for but unavailable).
    mode: Literal["hybrid", "keyword", "semantic"] = "keyword"
    warnings: list[str] = Field(default_factory=list)


class ListResult(BaseModel):
    """Result of `list_memories`."""

    memories: list[MemoryView]
    pagination: Pagination


class DeleteResult(BaseModel):
    """Result of `delete_memory`: `purged` is true when the memory was removed from the file for good."""

    memory_id: str
    deleted: bool
    purged: bool = False


class UpdateResult(BaseModel):
    """Result of `update_memory`: the memory as corrected, and what reconciling it did to the others."""

    memory: MemoryView
    superseded: list[str] = Field(default_factory=list[str])
    related_memory_ids: list[str] = Field(default_factory=list[str])


class EraseResult(BaseModel):
    """Result of `delete_user_memories`: what was removed from the file for `user_id`, by kind."""

    user_id: str
    memories: int
    history_rows: int
    links: int
    messages: int


class ExportResult(BaseModel):
    """Result of `export_memories`: `data` is the whole export as one string in `format`."""

    format: ExportFormat
    memory_count: int
    data: str


class HistoryEntry(BaseModel):
    """One change to a memory: when (UTC), what (`created`, `updated`, `merged`, `superseded`, `deleted`,
    `restored`), the content before and after, and the message that caused it (when known).

    In a `superseded` entry, `new_content` is the content of the memory that replaced this one and
    `successor_id` its id (None in every other entry)."""

    changed_at: str
    action: str
    old_content: str | None
    new_content: str | None
    source_message: str | None
    successor_id: str | None = None


class MemoryLinks(BaseModel):
    """How a memory relates to others: the ids it `supersedes`, the ids it is `superseded_by`, `related` ids."""

    supersedes: list[str] = Field(default_factory=list[str])
    superseded_by: list[str] = Field(default_factory=list[str])
    related: list[str] = Field(default_factory=list[str])


class MemoryDetails(BaseModel):
    """Result of `get_memory`: the memory in any status, its history (oldest first) and its links."""

    memory: MemoryView
    update_history: list[HistoryEntry]
    links: MemoryLinks


class RestoreResult(BaseModel):
    """Result of `restore_memory`: the memory, active again, the status it had, and the still-active memories
    that had superseded it (delete them if the change they made was wrong)."""

    memory: MemoryView
    previous_status: Status
    active_successors: list[str] = Field(default_factory=list[str])


class ImportProblem(BaseModel):
    """One row of an import file that was not imported: its index in `memories` and why."""

    index: int
    reason: str


class ImportResult(BaseModel):
    """Result of importing a JSON export: how many memories were added, and how many were already there."""

    user_id: str
    imported: int
    skipped: int
    # Imported under a new id, because their id belongs to another user (see `MemoryService.import_memories`).
    new_ids: int = 0
    # Rows left out (only with skip_invalid), by index.
    invalid: list[ImportProblem] = Field(default_factory=list[ImportProblem])


class JudgmentView(BaseModel):
    """What the model said about a pair the rules could not classify (LLM-assisted reconciliation)."""

    memory_id: str
    other_memory_id: str
    relation: Literal["duplicate", "update", "complement", "unrelated"]
    reason: str
    judge: str


class ExtractionJobView(BaseModel):
    """One background extraction job: `pending`, `running`, `done` (with `memory_ids`) or `failed` (with `error`)."""

    job_id: int
    status: Literal["pending", "running", "done", "failed"]
    attempts: int
    provisional_memory_ids: list[str]
    memory_ids: list[str]
    extractor: str | None
    error: str | None
    created_at: str
    finished_at: str | None
    judgments: list[JudgmentView] = Field(default_factory=list[JudgmentView])


class QueueFigures(BaseModel):
    """Background extraction jobs by status (over every user), the latency in seconds from store_memory to the
    model's memories landing (over recent jobs; None before any), and the newest error of a job not done."""

    pending: int
    running: int
    done: int
    failed: int
    latency_p50_seconds: float | None
    latency_p95_seconds: float | None
    last_error: str | None


class ExtractionStatus(QueueFigures):
    """The background extraction queue: the model's state, the queue's figures and, when asked for, one job."""

    mode: Literal["sync", "async"]
    model_state: Literal["unknown", "ok", "down", "slow", "none"]
    job: ExtractionJobView | None = None


# --- context for the next prompt (recall, profile, upcoming events) ---


class RecallResult(BaseModel):
    """Result of `recall`: one Markdown block for the prompt, at most `budget` tokens (by `tokens`' estimate).

    `memory_ids` lists every memory in the block, in block order; `profile_ids`, `relevant_ids` and
    `upcoming_ids` say which section each came from. `left_out` counts candidates that did not fit.
    """

    text: str
    tokens: int
    budget: int
    memory_ids: list[str]
    profile_ids: list[str]
    relevant_ids: list[str]
    upcoming_ids: list[str]
    left_out: int


class UpcomingEvent(BaseModel):
    """One occurrence of a dated memory: `date` is when it happens next (ISO date, or timestamp when a clock
    time was said); `recurrence` is yearly (birthdays, anniversaries), weekly ("every Friday") or null."""

    date: str
    memory_id: str
    content: str
    category: Category
    event_time: str | None
    recurrence: Literal["yearly", "weekly"] | None = None


class UpcomingResult(BaseModel):
    """Result of `upcoming_events`: occurrences from `from_date` to `to_date` (both inclusive), soonest first."""

    from_date: str
    to_date: str
    events: list[UpcomingEvent]


class ProfileEntry(BaseModel):
    """One fact of the profile: which slot it fills (name, home, work, family, pets, languages, health,
    preferences) and the memory."""

    slot: str
    memory_id: str
    content: str
    category: Category
    updated_at: str


class Profile(BaseModel):
    """The user's stable core, from their active memories, newest first within each slot."""

    user_id: str
    entries: list[ProfileEntry]
