"""A write's own embedding never waits behind the background worker's backlog (issue 12: the calm clients' p95 of
over a minute in `benchmarks/concurrency.py --hostile` was their stores waiting for an import's vectors)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import numpy as np
import pytest
from test_vector_regimes import _export  # 'User note number N' rows, as an import writes them

from harmonia_mcp.embed import Vectors
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.service import MemoryService, ServiceLimits
from harmonia_mcp.store import open_store
from harmonia_mcp.vectors import EMBED_BATCH, VectorIndex

pytestmark = pytest.mark.anyio

LIMITS = ServiceLimits(default_user="default", max_message_bytes=32 * 1024, timezone=ZoneInfo("UTC"))
BACKLOG_TEXT = "User note number"  # what test_vector_regimes._export writes


class HeldBacklog:
    """An embedder whose calls for the imported notes, after the first `free_calls` of them, wait until `release`
    is set; other texts embed at once.

    So the background worker is stuck inside a backlog batch, holding whatever it holds, for as long as the test
    wants, without any wall-clock timing. The first batch passes: the worker embeds it before search turns
    hybrid (`VectorIndex.load(embed_new=True)`), and the test is about a write once the model is ready."""

    def __init__(self, free_calls: int) -> None:
        self.release = anyio.Event()
        self.backlog_started = anyio.Event()
        self.free_calls = free_calls

    @property
    def model(self) -> str:
        return "test-held"

    @property
    def dimension(self) -> int:
        return 8

    async def start(self) -> None:
        return None

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if any(BACKLOG_TEXT in text for text in texts):
            if self.free_calls > 0:
                self.free_calls -= 1
            else:
                self.backlog_started.set()
                await self.release.wait()
        rows = np.ones((len(texts), self.dimension), dtype=np.float32)
        rows[:, 0] += np.arange(len(texts), dtype=np.float32)
        return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


async def test_a_store_is_embedded_and_answers_while_the_backlog_is_still_being_embedded(db_path: Path) -> None:
    # The start-up batch (EMBED_BATCH memories, one call of this embedder) passes; the next one is held.
    embedder = HeldBacklog(free_calls=1)
    async with open_store(str(db_path)) as store:
        service = MemoryService(store, RulesExtractor(), LIMITS)
        await service.import_memories(_export("bulk", 200), user_id="bulk")
        index = VectorIndex(store, embedder)
        service.vectors = index
        async with anyio.create_task_group() as group:
            group.start_soon(index.run)
            with anyio.fail_after(10):
                await embedder.backlog_started.wait()  # the worker is inside its first backlog batch
                result = await service.store_memory("I have a cat called Tom", user_id="alice")
            (memory,) = result.memories
            with sqlite3.connect(db_path) as db:
                alice = db.execute(
                    "SELECT count(*) FROM memory_vectors v JOIN memories m ON m.rowid = v.rowid WHERE m.memory_id = ?",
                    (memory.memory_id,),
                ).fetchone()[0]
                bulk = db.execute("SELECT count(*) FROM memory_vectors WHERE user_id = 'bulk'").fetchone()[0]
            assert alice == 1  # embedded by the write itself, before it answered
            assert index.ready
            assert bulk == EMBED_BATCH  # while the backlog's second batch had not finished
            embedder.release.set()
            with anyio.fail_after(10):
                while (await store.vector_counts(embedder.model, embedder.dimension))[1]:
                    await anyio.sleep(0.01)
            group.cancel_scope.cancel()
