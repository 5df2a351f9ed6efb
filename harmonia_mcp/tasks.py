"""One helper for background tasks that live as long as a context (the extractor's probe, the embedding worker)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio


@asynccontextmanager
async def running(task: Callable[[], Coroutine[Any, Any, object]]) -> AsyncIterator[None]:
    """Run `task` in the background while the body runs, and cancel it when the body exits.

    An error of the body is raised as itself, not wrapped in the task group's `BaseExceptionGroup`.
    Must be exited by the task that entered it (anyio's task group rule).
    """
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(task)
            yield
            group.cancel_scope.cancel()
    except BaseExceptionGroup as errors:
        # The task group wraps an error of the body in a group; hand the caller its own error back.
        if len(errors.exceptions) == 1:
            raise errors.exceptions[0] from None
        raise
