"""Pydantic models shared by the core and the MCP boundary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

USER_ID_PATTERN = r"^[A-Za-z0-9_.@-]{1,128}$"
MEMORY_ID_PATTERN = r"^mem_[0-9a-f]{16}$"


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
Action = Literal["created", "skipped", "updated", "merged", "superseded_previous"]
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
    """Result of `delete_memory`."""

    memory_id: str
    deleted: bool


class ExportResult(BaseModel):
    """Result of `export_memories`: `data` is the whole export as one string in `format`."""

    format: ExportFormat
    memory_count: int
    data: str


class HistoryEntry(BaseModel):
    """One change to a memory: when (UTC), what (`created`, `updated`, `merged`, `superseded`, `deleted`,
    `restored`), the content before and after, and the message that caused it (when known)."""

    changed_at: str
    action: str
    old_content: str | None
    new_content: str | None
    source_message: str | None


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


class ImportResult(BaseModel):
    """Result of importing a JSON export: how many memories were added, and how many were already there."""

    user_id: str
    imported: int
    skipped: int
