"""The MCP surface: tools, resources and their wiring to one `MemoryService`.

`create_server(settings)` builds an `MCPServer` whose lifespan opens the store; nothing here knows SQL.
Errors from the core (`HarmoniaError`) become `ToolError`s with the same message, because in mcp 2.x
only a `ToolError`'s text reaches the client. `HarmoniaServer` does that for every tool registered with
`add_tool`, and also says in a person's words what was wrong with arguments that fail the input schema,
and turns any unexpected exception into a short reason (the traceback goes to the log), never a bare
"Error executing tool".
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourcesListChanged, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    Completion,
    CompletionArgument,
    CompletionContext,
    ListResourcesResult,
    PaginatedRequestParams,
    PromptReference,
    Resource,
    ResourceTemplateReference,
    ToolAnnotations,
)
from pydantic import AnyHttpUrl, Field, ValidationError

from harmonia_mcp import __version__
from harmonia_mcp.auth import TokenTable
from harmonia_mcp.config import Settings
from harmonia_mcp.embed import MINILM_MODEL_NAME
from harmonia_mcp.errors import AccessDenied, HarmoniaError, describe_validation_error
from harmonia_mcp.extract.caller import MAX_FACTS
from harmonia_mcp.extract.judge import ModelJudge
from harmonia_mcp.extract.select import FallbackExtractor, open_extractor
from harmonia_mcp.extraction_queue import ExtractionQueue, running_queue
from harmonia_mcp.models import (
    CallerFact,
    Category,
    DeleteResult,
    EraseResult,
    ExportFormat,
    ExportResult,
    ExtractionStatus,
    ListResult,
    ListSort,
    MemoryDetails,
    MemoryView,
    Profile,
    RecallResult,
    ResolutionStrategy,
    RestoreResult,
    SearchResult,
    SearchSort,
    SortOrder,
    StoreBatchResult,
    StoreItem,
    StoreResult,
    UpcomingResult,
    UpdateResult,
)
from harmonia_mcp.service import (
    DEFAULT_RECALL_BUDGET,
    MAX_BATCH_ITEMS,
    MAX_LIST_LIMIT,
    MAX_OFFSET,
    MAX_RECALL_BUDGET,
    MAX_SEARCH_LIMIT,
    MAX_UPCOMING_DAYS,
    MIN_RECALL_BUDGET,
    RECENT_COUNT,
    MemoryService,
    ServiceLimits,
)
from harmonia_mcp.store import DateField, Ranking, open_store
from harmonia_mcp.throttle import ThrottleMiddleware
from harmonia_mcp.vectors import VectorIndex, open_vectors

logger = logging.getLogger(__name__)
# The one line said at start-up (database, extractor, embedder); the CLI shows it at the default log level.
STARTUP_LOGGER = "harmonia_mcp.startup"

FACTS_GUIDE = """\
Best: pass `facts`, the durable facts you understood, with the user's message as `message` (kept as the \
source; no extractor reads it). One fact per item, a third-person sentence about the user ("User ..."), \
absolute dates when known (or put the words in `when`: "next Friday at 3pm"), a change of mind said as \
the new state ("User no longer eats meat", "User now works at Stripe"). Add `keywords` a search might use \
that the sentence lacks. Do not store small talk, moods of the moment, questions, requests to you, or what \
you said. Examples:
1. "Ugh, long day. Btw my sister Ana lands tomorrow and stays three days" said 2026-03-02 -> \
facts=[{"content": "User's sister Ana arrives on 2026-03-03 and stays for three days", "category": "event", \
"event_time": "2026-03-03", "entities": ["Ana"], "keywords": ["sister", "visit", "family"]}]
2. "Actually I switched jobs, I'm at Stripe now as a designer. Still have my two cats lol" -> \
facts=[{"content": "User now works as a designer at Stripe", "category": "work", "keywords": ["job", "employer"]}, \
{"content": "User has two cats", "category": "relationship", "keywords": ["pets"]}]"""

INSTRUCTIONS = (
    """\
harmonia-mcp is the user's long-term memory. Call store_memory with what the user tells you about \
themselves (facts, preferences, plans, people); call recall with the user's message for their profile, \
the relevant memories and upcoming events in one block within a token budget, or search_memories before \
answering anything that may depend on what they told you before. Memories are third-person sentences \
("User has a dog called Biggie"). Everything stays on the user's machine. A newer fact replaces the one it \
contradicts (the old one is kept as superseded); pass occurred_at when storing an old conversation.
"""
    + FACTS_GUIDE
)


@dataclass
class AppContext:
    """What the lifespan gives every handler."""

    service: MemoryService
    # True when bearer tokens are configured: then an HTTP request without an authenticated principal
    # is refused even if it somehow got past the SDK's bearer middleware.
    tokens_required: bool = False


AppCtx = Context[AppContext]

_MEMORY_ID_HELP = "The memory's id, e.g. mem_0123456789abcdef, or its number as recall shows it, e.g. #42."

UserId = Annotated[
    str | None,
    Field(description="Whose memories: 1-128 of [A-Za-z0-9_.@-]. Omit for the configured default user."),
]
FromDate = Annotated[
    str | None, Field(description="Only memories at or after this ISO-8601 date or timestamp (created_at by default).")
]
ToDate = Annotated[
    str | None, Field(description="Only memories before the end of this ISO-8601 date, or before this timestamp.")
]
Importance = Annotated[
    float | None, Field(ge=0.0, le=1.0, description="How much it matters, 0 (trivial) to 1 (essential); ranks higher.")
]
IncludeArchived = Annotated[bool, Field(description="Also show archived memories (archive_memory).")]
DateFieldArg = Annotated[
    DateField, Field(description="Which time from_date/to_date filter on: created_at (stored) or event_time.")
]


def _service(ctx: AppCtx) -> MemoryService:
    return ctx.request_context.lifespan_context.service


def _user(ctx: AppCtx, user_id: str | None, *, resource: bool = False) -> str | None:
    """The user this request may act as: the one its bearer token is bound to, else `user_id` as given.

    Every tool and resource goes through here, so isolation is decided once, by the server, from the
    principal the SDK's bearer middleware authenticated (`get_access_token()`), never from the client's
    `user_id` alone. Without tokens (stdio, in-memory clients, local HTTP) `user_id` is trusted as before.

    `resource` says the user came from a resource URI, so a refusal names the URIs the token may read.

    Raises:
        AccessDenied: the token is bound to another user than `user_id`, or tokens are configured and
            this HTTP request carries none.
    """
    token = get_access_token()
    if token is None:
        if ctx.request_context.lifespan_context.tokens_required and ctx.request_context.request is not None:
            raise AccessDenied("this request has no valid bearer token; send Authorization: Bearer <token>")
        return user_id
    bound = token.subject or token.client_id
    if user_id is not None and user_id != bound and resource:
        raise AccessDenied(
            f"this token may only read user {bound}'s memories: use memory://{bound}/recent "
            f"or memory://{bound}/{{memory_id}}, not memory://{user_id}/..."
        )
    if user_id is not None and user_id != bound:
        raise AccessDenied(f"this token may only access user {bound}; omit user_id or pass {bound!r}")
    return bound


async def store_memory(
    ctx: AppCtx,
    message: Annotated[
        str | None,
        Field(description="What the speaker said, in natural language. With facts, kept only as their source."),
    ] = None,
    facts: Annotated[
        list[CallerFact] | None,
        Field(
            description=f"Durable facts you understood, 1-{MAX_FACTS} items: {{content (third person), category?, "
            "event_time? (ISO-8601) or when? (words), entities?, keywords?, confidence?}. No extractor runs then.",
        ),
    ] = None,
    user_id: UserId = None,
    speaker: Annotated[
        str | None, Field(description="Who 'I' and 'my' are in the message (default 'User'), e.g. 'Caroline'.")
    ] = None,
    session_id: Annotated[str | None, Field(description="An optional conversation id kept with each memory.")] = None,
    metadata: Annotated[
        dict[str, Any] | None, Field(description="A JSON object kept unchanged with each memory (at most 16 KiB).")
    ] = None,
    occurred_at: Annotated[
        str | None,
        Field(description="When the message was said (ISO-8601); 'tomorrow' resolves against it. Default: now."),
    ] = None,
    resolution_strategy: Annotated[
        ResolutionStrategy | None,
        Field(
            description="How to reconcile with what the user already has: auto, update, merge, version, keep_both "
            "or skip. Omit for the configured default (HARMONIA_RESOLUTION_STRATEGY, normally auto)."
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        Field(description="The speaker's IANA time zone, e.g. 'America/New_York'. Default: HARMONIA_TIMEZONE."),
    ] = None,
    importance: Importance = None,
    expires_at: Annotated[
        str | None, Field(description="Forget these memories at this ISO-8601 time (must be in the future).")
    ] = None,
    ttl_days: Annotated[
        float | None, Field(gt=0, description="Forget these memories after this many days (instead of expires_at).")
    ] = None,
) -> StoreResult:
    """Remember durable facts: the ones you pass as `facts` (best), or those extracted from `message`.

    Returns each memory found with its id, third-person content, category, confidence, event_time
    (absolute, when the message named a time) and action: created, skipped (already known: the
    existing memory is returned), updated or merged (an existing memory was rewritten), or
    superseded_previous (a new version; the old one is kept as superseded), or stored_as_superseded (said,
    by occurred_at, before the active fact it conflicts with, so kept as an older version of it). `conflict` says how it
    related to what was known, `related_memory_ids` and `supersedes` give the ids involved.
    Small talk and questions store nothing.
    """
    result = await _service(ctx).store_memory(
        message,
        facts=facts,
        user_id=_user(ctx, user_id),
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
    if any(memory.action != "skipped" for memory in result.memories):
        await ctx.notify_resources_changed()
    return result


async def store_memories(
    ctx: AppCtx,
    items: Annotated[
        list[StoreItem],
        Field(
            description=f"1-{MAX_BATCH_ITEMS} messages in the order they were said, each {{message and/or facts, "
            "speaker?, session_id?, metadata?, occurred_at?, timezone?, resolution_strategy?, importance?, "
            "expires_at?, ttl_days?}, with store_memory's meaning."
        ),
    ],
    user_id: UserId = None,
) -> StoreBatchResult:
    """Remember many messages (a conversation, an import) in one call: store_memory for each, in one transaction.

    Items are stored in order, each reconciled with what the user had and with the earlier items ("I live in
    Paris" then "I moved to Berlin" leaves Berlin current). Returns, per item (with its index), what
    store_memory returns. If any item is invalid the whole call is refused, naming each bad item by index,
    and nothing is stored: fix those items and send the batch again.
    """
    result = await _service(ctx).store_memories(items, user_id=_user(ctx, user_id))
    if result.memories_written:
        await ctx.notify_resources_changed()
    return result


async def search_memories(
    query: Annotated[
        str, Field(description="Words to look for; \"quoted phrases\" and prefix* work; '*' lists everything.")
    ],
    ctx: AppCtx,
    user_id: UserId = None,
    limit: Annotated[int, Field(ge=1, le=MAX_SEARCH_LIMIT)] = 10,
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0,
    category: Annotated[Category | None, Field(description="Only this category.")] = None,
    from_date: FromDate = None,
    to_date: ToDate = None,
    date_field: DateFieldArg = "created_at",
    min_confidence: Annotated[float | None, Field(ge=0.0, le=1.0)] = None,
    sort_by: Annotated[SearchSort, Field(description="relevance (best match first) or a field, highest first.")] = (
        "relevance"
    ),
    include_metadata: Annotated[bool, Field(description="Add each memory's metadata and source message.")] = False,
    include_superseded: Annotated[
        bool, Field(description="Also search older versions that a newer memory superseded (status: superseded).")
    ] = False,
    tags: Annotated[list[str] | None, Field(description="Only memories that have every one of these tags.")] = None,
    max_confidence: Annotated[float | None, Field(ge=0.0, le=1.0)] = None,
    session_id: Annotated[str | None, Field(description="Only memories stored with this session_id.")] = None,
    boost_category: Annotated[
        Category | None, Field(description="Rank memories of this category higher, without filtering the others.")
    ] = None,
    include_archived: IncludeArchived = False,
    mode: Annotated[
        Literal["hybrid", "keyword", "semantic"] | None,
        Field(
            description="hybrid: by words and meaning (default when an embedder is on); keyword: words only; "
            "semantic: meaning only."
        ),
    ] = None,
) -> SearchResult:
    """Search the user's memories by words and meaning, best match first.

    Each hit has a relevance_score from 0 to 1 (text match and meaning, with recency; see docs/search.md) and
    highlights with matched words in [brackets]; pagination gives total_count and has_more. `mode` says which
    mode answered, `warnings` why meaning was not used when it was asked for.
    """
    return await _service(ctx).search_memories(
        query,
        user_id=_user(ctx, user_id),
        limit=limit,
        offset=offset,
        category=category,
        from_date=from_date,
        to_date=to_date,
        date_field=date_field,
        min_confidence=min_confidence,
        sort_by=sort_by,
        include_metadata=include_metadata,
        include_superseded=include_superseded,
        tags=tags,
        max_confidence=max_confidence,
        session_id=session_id,
        boost_category=boost_category,
        include_archived=include_archived,
        mode=mode,
    )


async def list_memories(
    ctx: AppCtx,
    user_id: UserId = None,
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT)] = 50,
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0,
    category: Annotated[Category | None, Field(description="Only this category.")] = None,
    from_date: FromDate = None,
    to_date: ToDate = None,
    date_field: DateFieldArg = "created_at",
    sort_by: ListSort = "created_at",
    sort_order: SortOrder = "desc",
    include_inactive: Annotated[bool, Field(description="Also show superseded and deleted memories.")] = False,
    include_archived: IncludeArchived = False,
) -> ListResult:
    """List the user's memories, newest first by default, with pagination."""
    return await _service(ctx).list_memories(
        user_id=_user(ctx, user_id),
        limit=limit,
        offset=offset,
        category=category,
        from_date=from_date,
        to_date=to_date,
        date_field=date_field,
        sort_by=sort_by,
        sort_order=sort_order,
        include_inactive=include_inactive,
        include_archived=include_archived,
    )


async def delete_memory(
    memory_id: Annotated[str, Field(description=_MEMORY_ID_HELP)],
    ctx: AppCtx,
    user_id: UserId = None,
    purge: Annotated[
        bool,
        Field(description="Remove it from the database file for good (no restore), also if already deleted."),
    ] = False,
) -> DeleteResult:
    """Delete one memory. It disappears from search, lists, resources and exports, and so does its part of
    the message it came from, for the other memories of that message; restore_memory undoes it.
    With purge=true it is removed from the database file with its history and cannot be restored.
    """
    result = await _service(ctx).delete_memory(memory_id, user_id=_user(ctx, user_id), purge=purge)
    await ctx.notify_resources_changed()
    return result


async def delete_user_memories(
    confirm: Annotated[str, Field(description="The user id again, to confirm: erasing cannot be undone.")],
    ctx: AppCtx,
    user_id: UserId = None,
) -> EraseResult:
    """Erase every memory of a user from the database file, with history, links and logged messages.

    Cannot be undone. confirm must repeat the user id (with a bearer token: the token's own user).
    Returns how many memories, history rows, links and messages were removed.
    """
    result = await _service(ctx).delete_user_memories(_user(ctx, user_id), confirm=confirm)
    await ctx.notify_resources_changed()
    return result


async def get_memory(
    memory_id: Annotated[str, Field(description=_MEMORY_ID_HELP)],
    ctx: AppCtx,
    user_id: UserId = None,
) -> MemoryDetails:
    """Show one memory, whatever its status, with its update history and its links.

    update_history lists each change (changed_at in UTC, action, old_content, new_content,
    source_message), oldest first; links give the ids it supersedes, is superseded_by, and is related to.
    """
    return await _service(ctx).memory_details(memory_id, user_id=_user(ctx, user_id))


async def restore_memory(
    memory_id: Annotated[str, Field(description="The id of a deleted or superseded memory.")],
    ctx: AppCtx,
    user_id: UserId = None,
) -> RestoreResult:
    """Undo a delete, or bring a superseded (older) version back as active.

    The memory that superseded it stays active; its id is in active_successors: delete it with
    delete_memory if that change was wrong.
    """
    result = await _service(ctx).restore_memory(memory_id, user_id=_user(ctx, user_id))
    await ctx.notify_resources_changed()
    return result


async def export_memories(
    ctx: AppCtx,
    user_id: UserId = None,
    format: Annotated[ExportFormat, Field(description="json, csv, markdown or text.")] = "json",
    category: Annotated[Category | None, Field(description="Only this category.")] = None,
    from_date: FromDate = None,
    to_date: ToDate = None,
    max_memories: Annotated[
        int | None, Field(ge=1, le=MAX_OFFSET, description="At most this many (oldest first).")
    ] = None,
    include_inactive: Annotated[
        bool, Field(description="Also superseded and deleted memories; each says its status.")
    ] = False,
    include_history: Annotated[
        bool,
        Field(description="JSON only: each memory's change history and the links between memories (for a backup)."),
    ] = False,
    include_archived: IncludeArchived = False,
) -> ExportResult:
    """Export the user's memories, oldest first, as JSON, CSV, Markdown or plain text.

    For a full backup use format json with include_inactive and include_history: `harmonia-mcp import`
    restores it with statuses, links and history.
    """
    return await _service(ctx).export_memories(
        user_id=_user(ctx, user_id),
        format=format,
        category=category,
        from_date=from_date,
        to_date=to_date,
        max_memories=max_memories,
        include_inactive=include_inactive,
        include_history=include_history,
        include_archived=include_archived,
    )


async def extraction_status(
    ctx: AppCtx,
    user_id: UserId = None,
    job_id: Annotated[
        int | None, Field(ge=1, description="A job_id that store_memory returned, to see whether it has landed.")
    ] = None,
) -> ExtractionStatus:
    """Show the background extraction queue: whether the local model is ok, down or slow, how many messages
    wait for it, how many failed, how long the model's memories take to land, and (with job_id) one job:
    pending, running, done (memory_ids are what the model stored; the provisional rules memories are then
    superseded) or failed (error says why; the rules memories stay)."""
    return await _service(ctx).extraction_status(user_id=_user(ctx, user_id), job_id=job_id)


MemoryId = Annotated[str, Field(description=_MEMORY_ID_HELP)]


async def update_memory(
    memory_id: MemoryId,
    ctx: AppCtx,
    user_id: UserId = None,
    content: Annotated[
        str | None, Field(description="The corrected third-person sentence, e.g. 'User has a dog called Rex'.")
    ] = None,
    category: Annotated[Category | None, Field(description="The corrected category.")] = None,
    event_time: Annotated[str | None, Field(description="The corrected time it refers to (ISO-8601).")] = None,
    importance: Importance = None,
) -> UpdateResult:
    """Correct an active memory in place: content, category, event_time and/or importance.

    The change is kept in its history (get_memory shows old and new content) and re-indexed; memories the
    corrected one now duplicates or contradicts are marked superseded (ids in superseded), related ones
    are linked (related_memory_ids).
    """
    result = await _service(ctx).update_memory(
        memory_id,
        user_id=_user(ctx, user_id),
        content=content,
        category=category,
        event_time=event_time,
        importance=importance,
    )
    await ctx.notify_resources_changed()
    return result


async def pin_memory(memory_id: MemoryId, ctx: AppCtx, user_id: UserId = None) -> MemoryView:
    """Pin an active memory: it never expires and ranks a little higher in search."""
    return await _service(ctx).set_pinned(memory_id, True, user_id=_user(ctx, user_id))


async def unpin_memory(memory_id: MemoryId, ctx: AppCtx, user_id: UserId = None) -> MemoryView:
    """Unpin a memory: it ranks like the others again and retention may expire it."""
    return await _service(ctx).set_pinned(memory_id, False, user_id=_user(ctx, user_id))


async def archive_memory(
    memory_id: MemoryId,
    ctx: AppCtx,
    user_id: UserId = None,
    archived: Annotated[bool, Field(description="true archives it; false brings it back.")] = True,
) -> MemoryView:
    """Archive an active memory: it is kept, but search, lists and exports skip it unless include_archived."""
    result = await _service(ctx).set_archived(memory_id, archived, user_id=_user(ctx, user_id))
    await ctx.notify_resources_changed()
    return result


async def read_recent(user_id: str, ctx: AppCtx) -> str:
    """The user's 50 newest memories as Markdown."""
    service = _service(ctx)
    try:
        memories = await service.recent_memories(user_id=_user(ctx, user_id, resource=True))
    except HarmoniaError as error:
        raise ResourceNotFoundError(str(error)) from error
    lines = [f"# Recent memories of {user_id}", ""]
    lines += [f"- [{memory.category.value}] {memory.content} `{memory.memory_id}`" for memory in memories]
    if not memories:
        lines.append("No memories yet.")
    return "\n".join(lines) + "\n"


async def read_memory(user_id: str, memory_id: str, ctx: AppCtx) -> str:
    """One memory as JSON, with every field."""
    service = _service(ctx)
    try:
        memory = await service.get_memory(memory_id, user_id=_user(ctx, user_id, resource=True))
    except HarmoniaError as error:
        raise ResourceNotFoundError(str(error)) from error
    return json.dumps(MemoryView.of(memory).model_dump(mode="json"), ensure_ascii=False, indent=2)


# --- context for the next prompt: recall, upcoming events, the profile, prompts, completion ---


async def recall(
    ctx: AppCtx,
    topic: Annotated[
        str | None,
        Field(description="The user's current message or topic; relevant memories are searched with it."),
    ] = None,
    user_id: UserId = None,
    budget: Annotated[
        int,
        Field(
            ge=MIN_RECALL_BUDGET,
            le=MAX_RECALL_BUDGET,
            description="The most tokens the block may have (estimated pessimistically; see docs/tools.md).",
        ),
    ] = DEFAULT_RECALL_BUDGET,
    upcoming_days: Annotated[
        int, Field(ge=0, le=MAX_UPCOMING_DAYS, description="How many days ahead upcoming events go.")
    ] = 7,
    include_ids: Annotated[
        bool,
        Field(
            description="End each line with its memory number, e.g. (#42), which the tools accept as memory_id; "
            "memory_ids lists the full ids anyway."
        ),
    ] = True,
) -> RecallResult:
    """Context for the next prompt: one Markdown block to put before the user's message.

    It holds the user's profile first, then the memories most relevant to `topic`, then upcoming events
    with their dates; grouped by category, each line ending with its memory number (#42); only current versions,
    no duplicates, whole memories only, never over `budget` tokens. memory_ids lists the ids used.
    """
    return await _service(ctx).recall(
        topic, user_id=_user(ctx, user_id), budget=budget, upcoming_days=upcoming_days, include_ids=include_ids
    )


async def upcoming_events(
    ctx: AppCtx,
    days: Annotated[int, Field(ge=0, le=MAX_UPCOMING_DAYS, description="From today to this many days ahead.")] = 7,
    user_id: UserId = None,
) -> UpcomingResult:
    """The user's dated memories happening from today to `days` days ahead, soonest first.

    Recurring ones (birthdays and anniversaries with a date, "every Friday" habits) appear at their
    next occurrence with `recurrence` set.
    """
    return await _service(ctx).upcoming_events(user_id=_user(ctx, user_id), days=days)


def profile_markdown(profile: Profile) -> str:
    """The profile as Markdown: one heading per slot, one bullet per memory with its id."""
    lines = [f"# Profile of {profile.user_id}", ""]
    current = ""
    for entry in profile.entries:
        if entry.slot != current:
            if current:
                lines.append("")
            lines.append(f"## {entry.slot}")
            current = entry.slot
        lines.append(f"- {entry.content} `{entry.memory_id}`")
    if not profile.entries:
        lines.append("Nothing known yet.")
    return "\n".join(lines) + "\n"


async def read_profile(user_id: str, ctx: AppCtx) -> str:
    """The user's profile (name, home, work, family, pets, languages, health, preferences) as Markdown."""
    try:
        profile = await _service(ctx).profile(user_id=_user(ctx, user_id))
    except HarmoniaError as error:
        raise ResourceNotFoundError(str(error)) from error
    return profile_markdown(profile)


RECALL_PROMPT = """\
Here is what you remember about me (from harmonia-mcp; each line ends with its memory number, such as (#42), \
which harmonia-mcp's tools take as memory_id). Use it when it helps, do not recite it, and say so if something \
in it looks outdated.

{block}"""

REMEMBER_PROMPT = """\
Read the conversation below and remember what is durable about me: facts about me, people and pets in my \
life, preferences, plans and dated events, health notes I gave, work and skills. Leave out small talk, \
questions and anything said only about the conversation itself.

Call the harmonia-mcp tool `store_memories` once{user_clause}, with `items`: one object per message that \
says something durable, in the order they were said, {{"message": "<the message, verbatim>", "speaker": \
"<who said it, e.g. User>", "occurred_at": "<ISO-8601 time it was said, when the conversation shows it>", \
"facts": [...]}}, where `facts` lists what that message says worth keeping, each {{"content": "<one \
third-person sentence, e.g. User has a dog called Biggie>", "category": "<personal, relationship, \
preference, work, education, health, event, goal, skill, emotion, fact or other>", "event_time": \
"<ISO-8601 date or timestamp with offset, only for a dated event>", "entities": [...], "keywords": [...], \
"confidence": <0 to 1>}}; one fact per object, absolute dates instead of "tomorrow". If `store_memories` \
is not available, call `store_memory` once per item with the same fields.

Conversation:
{conversation}"""


async def recall_prompt(
    ctx: AppCtx,
    topic: Annotated[str | None, Field(description="What the conversation is about (optional).")] = None,
    budget: Annotated[str | None, Field(description="Most tokens of context, 50 to 32000 (default 1500).")] = None,
    user_id: Annotated[str | None, Field(description="Whose memories (default: the configured user).")] = None,
) -> str:
    """Put what harmonia-mcp remembers about the user, relevant to a topic, into the conversation."""
    # Prompt arguments are strings; and only an MCPError's message reaches the client from a prompt.
    try:
        tokens = DEFAULT_RECALL_BUDGET if budget is None or not budget.strip() else int(budget)
    except ValueError:
        raise MCPError(INVALID_PARAMS, f"budget {budget!r} is not a whole number: give 50 to 32000 tokens") from None
    try:
        result = await _service(ctx).recall(topic, user_id=_user(ctx, user_id or None), budget=tokens)
    except HarmoniaError as error:
        raise MCPError(INVALID_PARAMS, str(error)) from error
    return RECALL_PROMPT.format(block=result.text or "(nothing remembered yet)")


async def remember_prompt(
    ctx: AppCtx,
    conversation: Annotated[str, Field(description="The conversation to remember, pasted as text.")],
    user_id: Annotated[str | None, Field(description="Whose memories (default: the configured user).")] = None,
) -> str:
    """Turn a pasted conversation into one store_memories call with the facts worth remembering."""
    try:
        user = _user(ctx, user_id or None)
    except HarmoniaError as error:
        raise MCPError(INVALID_PARAMS, str(error)) from error
    clause = f' with `user_id` "{user}"' if user is not None else ""
    return REMEMBER_PROMPT.format(user_clause=clause, conversation=conversation)


async def _complete_user_id(service: MemoryService | None, prefix: str, tokens_configured: bool) -> list[str]:
    """User ids to offer for a `user_id` argument: only the caller's own when tokens are configured."""
    token = get_access_token()
    if token is not None:
        bound = token.subject or token.client_id
        return [bound] if bound.startswith(prefix) else []
    if tokens_configured or service is None:
        return []  # tokens are on but this caller has none (or the store is not open): reveal nothing
    return await service.list_users(prefix, limit=MAX_COMPLETIONS)


MAX_COMPLETIONS = 100  # the spec caps completion/complete at 100 values


def make_limits(settings: Settings) -> ServiceLimits:
    """The service limits that `settings` configure."""
    return ServiceLimits(
        default_user=settings.default_user,
        max_message_bytes=settings.max_message_bytes,
        timezone=settings.zone,
        resolution_strategy=settings.resolution_strategy,
        user_strategies=dict(settings.user_resolution_strategies),
        retention_days=settings.retention_days,
        user_retention_days=dict(settings.user_retention_days),
        sweep_interval_seconds=settings.retention_sweep_seconds,
    )


def embedder_label(settings: Settings) -> str:
    """The embedder the start-up line names: "embedded all-MiniLM-L6-v2-int8 (loads in the background)",
    "ollama nomic-embed-text at http://...", or "none (keyword search only)"."""
    if settings.embedder == "none":
        return "none (keyword search only)"
    if settings.embedder == "ollama":
        return f"ollama {settings.embed_model} at {settings.ollama_host}"
    model = settings.embed_model_path or MINILM_MODEL_NAME
    return f"embedded {model} (loads in the background)"


def startup_line(db_path: str, settings: Settings, *, embedder: str) -> str:
    """The start-up line: version, database path, extractor (and Ollama model and host), embedder.

    E.g. "harmonia-mcp 0.1.0: database /home/me/.local/share/harmonia-mcp/memories.db; extractor auto
    (Ollama llama3.2:3b at http://127.0.0.1:11434 when it answers, else rules); embedder none".
    """
    model = f"Ollama {settings.ollama_model} at {settings.ollama_host}"
    if settings.llm_base_url and settings.extractor in ("auto", "openai"):
        model = f"OpenAI-compatible {settings.llm_model or '(no model)'} at {settings.llm_base_url}"
    extractor = {
        "rules": "rules (no model is used)",
        "auto": f"auto ({model} when it answers, else rules)",
        "ollama": f"ollama ({model}; rules when it fails)",
        "openai": f"openai ({model}; rules when it fails)",
    }[settings.extractor]
    return f"harmonia-mcp {__version__}: database {db_path}; extractor {extractor}; embedder {embedder}"


class _SharedContext:
    """One open store and `MemoryService` for every concurrent entry of the server lifespan.

    The SSE transport enters the lifespan once per connection; without sharing, each client would open
    its own writer connection and SQLite would serialise them by returning "database is locked". The
    first entry opens the store, the last exit closes it.
    """

    def __init__(self, settings: Settings, *, tokens_required: bool, events: SubscriptionBus | None = None) -> None:
        self._settings = settings
        self._events = events
        self._tokens_required = tokens_required
        self._lock = anyio.Lock()
        self._users = 0
        self._stack: AsyncExitStack | None = None
        self._context: AppContext | None = None

    def service(self) -> MemoryService | None:
        """The open service, or None before the server started or after it stopped."""
        return self._context.service if self._context is not None else None

    @asynccontextmanager
    async def enter(self) -> AsyncIterator[AppContext]:
        async with self._lock:
            if self._context is None:
                stack = AsyncExitStack()
                store = await stack.enter_async_context(
                    open_store(self._settings.db_path, readers=self._settings.read_connections)
                )
                extractor = await stack.enter_async_context(open_extractor(self._settings))
                logging.getLogger(STARTUP_LOGGER).info(
                    "%s", startup_line(store.path, self._settings, embedder=embedder_label(self._settings))
                )
                settings = self._settings
                ranking = Ranking(
                    half_life_days=settings.recency_half_life_days, recency_weight=settings.recency_weight
                )
                vectors = await stack.enter_async_context(open_vectors(settings, store))
                queue = await self._start_queue(stack, store, extractor, vectors)
                service = MemoryService(store, extractor, make_limits(settings), ranking, queue, vectors=vectors)
                self._stack, self._context = stack, AppContext(service, tokens_required=self._tokens_required)
            self._users += 1
            context = self._context
        try:
            yield context
        finally:
            closing: AsyncExitStack | None = None
            with anyio.CancelScope(shield=True):
                async with self._lock:
                    self._users -= 1
                    if self._users == 0 and self._stack is not None:
                        closing, self._stack, self._context = self._stack, None, None
            # Closed outside the shield: the extractor's task group must exit as the innermost cancel scope
            # of the task that entered it; open_store shields its own close.
            if closing is not None:
                await closing.aclose()

    async def _start_queue(
        self, stack: AsyncExitStack, store: Any, extractor: Any, vectors: VectorIndex | None
    ) -> ExtractionQueue | None:
        """The background extraction queue, running, when a model is configured and extraction is not sync.

        When a job lands, resource listeners are told and the vector worker embeds the model's memories.
        """
        settings = self._settings
        if settings.extraction == "sync" or not isinstance(extractor, FallbackExtractor):
            return None
        events = self._events

        async def landed(_user: str) -> None:
            if vectors is not None:
                vectors.notify()
            if events is not None:
                await events.publish(ResourcesListChanged())

        queue = ExtractionQueue(
            store,
            extractor,
            max_attempts=settings.extraction_max_attempts,
            retry_seconds=settings.extraction_retry_seconds,
            limit=settings.extraction_queue_limit,
            on_landed=landed,
            judge=ModelJudge(extractor.model) if settings.llm_reconcile else None,
        )
        return await stack.enter_async_context(running_queue(queue))


# --- the error boundary: every tool gets it by being registered with HarmoniaServer.add_tool -------

MAX_REASON_CHARS = 200
# resources/list names at most this many users' `recent` resources (the templates reach every user).
MAX_LISTED_USERS = 100


class HarmoniaServer(MCPServer[AppContext]):
    """`MCPServer` with harmonia-mcp's error boundary and descriptions; register tools with `add_tool`.

    For every tool, whoever adds it:

    - arguments that fail the input schema get one sentence per argument, naming it, quoting the value
      and saying what is allowed (`errors.describe_validation_error`), not pydantic's text and links;
    - a `HarmoniaError` raised anywhere in the tool reaches the client with its own message;
    - any other exception reaches the client as "unexpected <type>: <first line>" and is logged with
      its traceback (ERROR), instead of the SDK's bare "Error executing tool <name>";
    - the description is the docstring with its indentation removed (`inspect.cleandoc`).

    The `prompts` capability is advertised only when a prompt is registered.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lowlevel = self._lowlevel_server
        advertise = lowlevel.get_capabilities

        def capabilities(*cap_args: Any, **cap_kwargs: Any) -> Any:
            found = advertise(*cap_args, **cap_kwargs)
            if not self._prompt_manager.list_prompts():
                found = found.model_copy(update={"prompts": None})
            return found

        # Evaluated at each initialize, so prompts registered after construction are advertised.
        lowlevel.get_capabilities = capabilities  # type: ignore[method-assign]

    async def _handle_list_resources(
        self, ctx: ServerRequestContext[AppContext], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        """The registered resources, plus each user's `memory://{user_id}/recent` (only the token's user
        when tokens are configured), so that hosts that show concrete resources show something."""
        listed = await super()._handle_list_resources(ctx, params)
        app = ctx.lifespan_context
        token = get_access_token()
        if token is not None:
            users = [token.subject or token.client_id]
        elif app.tokens_required and ctx.request is not None:
            users = []
        else:
            users = await app.service.user_ids(limit=MAX_LISTED_USERS)
        recent = [
            Resource(
                uri=f"memory://{user}/recent",
                name=f"recent_memories:{user}",
                title=f"Recent memories of {user}",
                description=f"The {RECENT_COUNT} newest memories of {user}, as Markdown.",
                mime_type="text/markdown",
            )
            for user in users
        ]
        return ListResourcesResult(resources=[*listed.resources, *recent])

    def add_tool(  # type: ignore[override]  # same parameters, keyword-only after fn
        self, fn: Callable[..., Any], name: str | None = None, *, description: str | None = None, **kwargs: Any
    ) -> None:
        """Register `fn` as a tool; its description is `description`, else its docstring, dedented."""
        super().add_tool(fn, name, description=description or inspect.cleandoc(fn.__doc__ or ""), **kwargs)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppContext, Any] | None = None
    ) -> Any:
        """Call tool `name`; every failure is a `ToolError` whose text says what went wrong (see the class).

        Raises:
            ToolError: the arguments are invalid, the tool raised, or it is unknown.
        """
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError as error:
            cause = error.__cause__
            if isinstance(cause, HarmoniaError):
                raise ToolError(f"Error executing tool {name}: {cause}") from cause
            logger.error("tool %s raised an unexpected exception", name, exc_info=cause or error)
            raise ToolError(f"Error executing tool {name}: {_unexpected_reason(cause)}") from None
        except ToolError as error:
            if isinstance(error.__cause__, ValidationError):
                tool = self._tool_manager.get_tool(name)
                reason = describe_validation_error(error.__cause__, schema=tool.parameters if tool else None)
                # Raised from the ValidationError so that the SDK logs the argument names, not the values.
                raise ToolError(f"Error executing tool {name}: {reason}") from error.__cause__
            raise


def _unexpected_reason(cause: BaseException | None) -> str:
    if cause is None:
        return "an unexpected error; the server's log has the details"
    first = (str(cause).strip().splitlines() or [""])[0]
    if len(first) > MAX_REASON_CHARS:
        first = first[: MAX_REASON_CHARS - 3] + "..."
    detail = f": {first}" if first else ""
    return f"unexpected {type(cause).__name__}{detail} (the server's log has the traceback)"


def create_server(settings: Settings) -> HarmoniaServer:
    """An `MCPServer` with the five memory tools and the memory resources, over the store at `settings.db_path`.

    The store is opened when the server starts (its lifespan) and closed when it stops. When
    `settings` configure bearer tokens (`auth_token`, `auth_tokens_file`), the server's HTTP apps require
    one (the SDK's bearer middleware) and each request acts only as its token's user (`_user`).

    Raises:
        TokenConfigError: the configured tokens are malformed.
    """

    tokens = TokenTable.from_settings(settings)
    # Our own bus (the SDK's default kind) so that the background queue can announce memories that land
    # outside any request.
    events = InMemorySubscriptionBus()
    shared = _SharedContext(settings, tokens_required=tokens is not None, events=events)
    auth: dict[str, Any] = {}
    if tokens is not None:
        # The SDK requires an issuer URL, but with no OAuth provider and no resource_server_url it never
        # serves or advertises one: these are static bearer tokens checked by `TokenTable`.
        auth = {
            "auth": AuthSettings(issuer_url=AnyHttpUrl("http://127.0.0.1"), resource_server_url=None),
            "token_verifier": tokens,
        }

    server = HarmoniaServer(
        "harmonia-mcp",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lambda _: shared.enter(),
        log_level=settings.log_level,
        subscriptions=events,
        middleware=[
            ThrottleMiddleware(
                per_minute=settings.rate_limit(http=False),
                max_concurrent=settings.max_concurrent_requests,
                read_seconds_per_minute=settings.read_budget(http=True),
                local_read_seconds_per_minute=settings.read_budget(http=False),
            )
        ],
        **auth,
    )
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False)
    reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    # The description the host model reads: the handler's docstring, then how to write facts.
    described = f"{inspect.cleandoc(store_memory.__doc__ or '')}\n\n{FACTS_GUIDE}"
    server.add_tool(store_memory, title="Store memory", description=described, annotations=writes)
    server.add_tool(search_memories, title="Search memories", annotations=reads)
    server.add_tool(list_memories, title="List memories", annotations=reads)
    server.add_tool(
        delete_memory,
        title="Delete memory",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False),
    )
    server.add_tool(export_memories, title="Export memories", annotations=reads)
    # After the five contract tools, whose order clients and the demo show first.
    server.add_tool(store_memories, title="Store many memories", annotations=writes)
    server.add_tool(get_memory, title="Get memory with history", annotations=reads)
    server.add_tool(
        restore_memory,
        title="Restore memory",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    )
    server.add_tool(extraction_status, title="Extraction queue status", annotations=reads)
    server.add_tool(
        delete_user_memories,
        title="Erase a user's memories",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True),
    )
    server.add_tool(
        update_memory,
        title="Update memory",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    )
    flags = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)
    server.add_tool(pin_memory, title="Pin memory", annotations=flags)
    server.add_tool(unpin_memory, title="Unpin memory", annotations=flags)
    server.add_tool(archive_memory, title="Archive memory", annotations=flags)
    server.add_tool(recall, title="Recall context for the next prompt", annotations=reads)
    server.add_tool(upcoming_events, title="Upcoming events", annotations=reads)
    # "recent" and "profile" first: templates are tried in registration order, and would also match {memory_id}.
    server.resource("memory://{user_id}/recent", name="recent_memories", mime_type="text/markdown")(read_recent)
    server.resource("memory://{user_id}/profile", name="profile", mime_type="text/markdown")(read_profile)
    server.resource("memory://{user_id}/{memory_id}", name="memory", mime_type="application/json")(read_memory)
    server.prompt("recall", title="Recall what you know about me")(recall_prompt)
    server.prompt("remember", title="Remember this conversation")(remember_prompt)

    async def complete(
        ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, _: CompletionContext | None
    ) -> Completion | None:
        """Completion for the prompts' and resource templates' `user_id` argument (the SDK passes no ctx)."""
        if argument.name != "user_id":
            return None
        values = await _complete_user_id(shared.service(), argument.value, tokens is not None)
        return Completion(values=values, total=len(values), has_more=False)

    server.completion()(complete)  # type: ignore[no-untyped-call]  # the SDK's decorator factory is unannotated
    return server
