"""The MCP surface: tools, resources and their wiring to one `MemoryService`.

`create_server(settings)` builds an `MCPServer` whose lifespan opens the store; nothing here knows SQL.
Errors from the core (`HarmoniaError`) become `ToolError`s with the same message, because in mcp 2.x
only a `ToolError`'s text reaches the client; anything else is a bug and arrives as a bare
"Error executing tool".
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import ToolAnnotations
from pydantic import AnyHttpUrl, Field

from harmonia_mcp import __version__
from harmonia_mcp.auth import TokenTable
from harmonia_mcp.config import Settings
from harmonia_mcp.errors import AccessDenied, HarmoniaError
from harmonia_mcp.extract.select import open_extractor
from harmonia_mcp.models import (
    Category,
    DeleteResult,
    ExportFormat,
    ExportResult,
    ListResult,
    ListSort,
    MemoryDetails,
    MemoryView,
    ResolutionStrategy,
    RestoreResult,
    SearchResult,
    SearchSort,
    SortOrder,
    StoreResult,
)
from harmonia_mcp.service import MAX_LIST_LIMIT, MAX_SEARCH_LIMIT, MemoryService, ServiceLimits
from harmonia_mcp.store import DateField, Ranking, open_store
from harmonia_mcp.vectors import open_vectors

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
harmonia-mcp is the user's long-term memory. Call store_memory with what the user tells you about \
themselves (facts, preferences, plans, people); call search_memories before answering anything that \
may depend on what they told you before. Memories are third-person sentences ("User has a dog called \
Biggie"). Everything stays on the user's machine."""


@dataclass
class AppContext:
    """What the lifespan gives every handler."""

    service: MemoryService
    # True when bearer tokens are configured: then an HTTP request without an authenticated principal
    # is refused even if it somehow got past the SDK's bearer middleware.
    tokens_required: bool = False


AppCtx = Context[AppContext]

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
DateFieldArg = Annotated[
    DateField, Field(description="Which time from_date/to_date filter on: created_at (stored) or event_time.")
]


@contextmanager
def _tool_errors() -> Iterator[None]:
    try:
        yield
    except HarmoniaError as error:
        raise ToolError(str(error)) from error


def _service(ctx: AppCtx) -> MemoryService:
    return ctx.request_context.lifespan_context.service


def _user(ctx: AppCtx, user_id: str | None) -> str | None:
    """The user this request may act as: the one its bearer token is bound to, else `user_id` as given.

    Every tool and resource goes through here, so isolation is decided once, by the server, from the
    principal the SDK's bearer middleware authenticated (`get_access_token()`), never from the client's
    `user_id` alone. Without tokens (stdio, in-memory clients, local HTTP) `user_id` is trusted as before.

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
    if user_id is not None and user_id != bound:
        raise AccessDenied(f"this token may only access user {bound}; omit user_id or pass {bound!r}")
    return bound


async def store_memory(
    message: Annotated[str, Field(description="What the speaker said, in natural language.")],
    ctx: AppCtx,
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
) -> StoreResult:
    """Extract durable facts from a message and remember them.

    Returns each memory found with its id, third-person content, category, confidence, event_time
    (absolute, when the message named a time) and action: created, skipped (already known: the
    existing memory is returned), updated or merged (an existing memory was rewritten), or
    superseded_previous (a new version; the old one is kept as superseded). `conflict` says how it
    related to what was known, `related_memory_ids` and `supersedes` give the ids involved.
    Small talk and questions store nothing.
    """
    with _tool_errors():
        result = await _service(ctx).store_memory(
            message,
            user_id=_user(ctx, user_id),
            speaker=speaker,
            session_id=session_id,
            metadata=metadata,
            occurred_at=occurred_at,
            resolution_strategy=resolution_strategy,
            timezone=timezone,
        )
    if any(memory.action != "skipped" for memory in result.memories):
        await ctx.notify_resources_changed()
    return result


async def search_memories(
    query: Annotated[
        str, Field(description="Words to look for; \"quoted phrases\" and prefix* work; '*' lists everything.")
    ],
    ctx: AppCtx,
    user_id: UserId = None,
    limit: Annotated[int, Field(ge=1, le=MAX_SEARCH_LIMIT)] = 10,
    offset: Annotated[int, Field(ge=0)] = 0,
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
    with _tool_errors():
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
            mode=mode,
        )


async def list_memories(
    ctx: AppCtx,
    user_id: UserId = None,
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT)] = 50,
    offset: Annotated[int, Field(ge=0)] = 0,
    category: Annotated[Category | None, Field(description="Only this category.")] = None,
    from_date: FromDate = None,
    to_date: ToDate = None,
    date_field: DateFieldArg = "created_at",
    sort_by: ListSort = "created_at",
    sort_order: SortOrder = "desc",
    include_inactive: Annotated[bool, Field(description="Also show superseded and deleted memories.")] = False,
) -> ListResult:
    """List the user's memories, newest first by default, with pagination."""
    with _tool_errors():
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
        )


async def delete_memory(
    memory_id: Annotated[str, Field(description="The memory's id, e.g. mem_0123456789abcdef.")],
    ctx: AppCtx,
    user_id: UserId = None,
) -> DeleteResult:
    """Delete one memory. It disappears from search, lists and exports; its history is kept."""
    with _tool_errors():
        result = await _service(ctx).delete_memory(memory_id, user_id=_user(ctx, user_id))
    await ctx.notify_resources_changed()
    return result


async def get_memory(
    memory_id: Annotated[str, Field(description="The memory's id, e.g. mem_0123456789abcdef.")],
    ctx: AppCtx,
    user_id: UserId = None,
) -> MemoryDetails:
    """Show one memory, whatever its status, with its update history and its links.

    update_history lists each change (changed_at in UTC, action, old_content, new_content,
    source_message), oldest first; links give the ids it supersedes, is superseded_by, and is related to.
    """
    with _tool_errors():
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
    with _tool_errors():
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
    max_memories: Annotated[int | None, Field(ge=1, description="At most this many (oldest first).")] = None,
) -> ExportResult:
    """Export the user's memories, oldest first, as JSON, CSV, Markdown or plain text."""
    with _tool_errors():
        return await _service(ctx).export_memories(
            user_id=_user(ctx, user_id),
            format=format,
            category=category,
            from_date=from_date,
            to_date=to_date,
            max_memories=max_memories,
        )


async def read_recent(user_id: str, ctx: AppCtx) -> str:
    """The user's 50 newest memories as Markdown."""
    service = _service(ctx)
    try:
        memories = await service.recent_memories(user_id=_user(ctx, user_id))
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
        memory = await service.get_memory(memory_id, user_id=_user(ctx, user_id))
    except HarmoniaError as error:
        raise ResourceNotFoundError(str(error)) from error
    return json.dumps(MemoryView.of(memory).model_dump(mode="json"), ensure_ascii=False, indent=2)


def make_limits(settings: Settings) -> ServiceLimits:
    """The service limits that `settings` configure."""
    return ServiceLimits(
        default_user=settings.default_user,
        max_message_bytes=settings.max_message_bytes,
        timezone=settings.zone,
        resolution_strategy=settings.resolution_strategy,
        user_strategies=dict(settings.user_resolution_strategies),
    )


class _SharedContext:
    """One open store and `MemoryService` for every concurrent entry of the server lifespan.

    The SSE transport enters the lifespan once per connection; without sharing, each client would open
    its own writer connection and SQLite would serialise them by returning "database is locked". The
    first entry opens the store, the last exit closes it.
    """

    def __init__(self, settings: Settings, *, tokens_required: bool) -> None:
        self._settings = settings
        self._tokens_required = tokens_required
        self._lock = anyio.Lock()
        self._users = 0
        self._stack: AsyncExitStack | None = None
        self._context: AppContext | None = None

    @asynccontextmanager
    async def enter(self) -> AsyncIterator[AppContext]:
        async with self._lock:
            if self._context is None:
                stack = AsyncExitStack()
                store = await stack.enter_async_context(open_store(self._settings.db_path))
                extractor = await stack.enter_async_context(open_extractor(self._settings))
                logger.info("memories in %s, extractor %s", store.path, self._settings.extractor)
                settings = self._settings
                ranking = Ranking(
                    half_life_days=settings.recency_half_life_days, recency_weight=settings.recency_weight
                )
                vectors = await stack.enter_async_context(open_vectors(settings, store))
                service = MemoryService(store, extractor, make_limits(settings), ranking, vectors=vectors)
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


def create_server(settings: Settings) -> MCPServer[AppContext]:
    """An `MCPServer` with the five memory tools and the memory resources, over the store at `settings.db_path`.

    The store is opened when the server starts (its lifespan) and closed when it stops. When
    `settings` configure bearer tokens (`auth_token`, `auth_tokens_file`), the server's HTTP apps require
    one (the SDK's bearer middleware) and each request acts only as its token's user (`_user`).

    Raises:
        TokenConfigError: the configured tokens are malformed.
    """

    tokens = TokenTable.from_settings(settings)
    shared = _SharedContext(settings, tokens_required=tokens is not None)
    auth: dict[str, Any] = {}
    if tokens is not None:
        # The SDK requires an issuer URL, but with no OAuth provider and no resource_server_url it never
        # serves or advertises one: these are static bearer tokens checked by `TokenTable`.
        auth = {
            "auth": AuthSettings(issuer_url=AnyHttpUrl("http://127.0.0.1"), resource_server_url=None),
            "token_verifier": tokens,
        }

    server: MCPServer[AppContext] = MCPServer(
        "harmonia-mcp",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lambda _: shared.enter(),
        log_level=settings.log_level,
        **auth,
    )
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False)
    reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    server.add_tool(store_memory, title="Store memory", annotations=writes)
    server.add_tool(search_memories, title="Search memories", annotations=reads)
    server.add_tool(list_memories, title="List memories", annotations=reads)
    server.add_tool(
        delete_memory,
        title="Delete memory",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False),
    )
    server.add_tool(export_memories, title="Export memories", annotations=reads)
    server.add_tool(get_memory, title="Get memory with history", annotations=reads)
    server.add_tool(
        restore_memory,
        title="Restore memory",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    )
    # "recent" first: templates are tried in registration order, and it would also match {memory_id}.
    server.resource("memory://{user_id}/recent", name="recent_memories", mime_type="text/markdown")(read_recent)
    server.resource("memory://{user_id}/{memory_id}", name="memory", mime_type="application/json")(read_memory)
    return server
