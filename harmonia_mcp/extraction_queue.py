"""Extraction off the request path: `store_memory` stores the rules' memories at once and queues the message;
one background worker runs the local model and lands its memories (issue 13).

Landing one job, in one transaction:

1. The provisional memories (the ones the rules extractor *created* for that message and that are still
   active) are marked `superseded`, with a history row: they stay in the file, inspectable and restorable.
2. Each model memory goes through `conflicts.reconcile` with the job's strategy, against everything the
   user has; since the provisional ones stepped aside first, the model's version of the same fact is never
   a second active copy.
3. Each provisional memory is linked (`supersedes`) from the model memory whose content is most like it.

A model that finds nothing in a message the rules did read leaves the rules' memories as they are (they
are never dropped for an empty reply). A failing model (down, timeout, garbage, HTTP errors) costs the
job one attempt; it is retried with a doubling backoff and marked `failed` with the reason after
`max_attempts`. The worker makes one model call at a time, and does not call while the model is known
down or slow (see `extract/select.py`); jobs wait in SQLite meanwhile and survive a restart.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import aiosqlite
import anyio
from rapidfuzz import fuzz

from harmonia_mcp import conflicts, jobs
from harmonia_mcp.errors import MemoryNotFound
from harmonia_mcp.extract import ExtractionError
from harmonia_mcp.extract.select import ModelState
from harmonia_mcp.models import ExtractedMemory, Memory, ResolutionStrategy
from harmonia_mcp.store import NewMemory, Store, to_utc_text
from harmonia_mcp.tasks import running

__all__ = ["ExtractionQueue", "QueueModel", "running_queue"]

logger = logging.getLogger(__name__)

# How long the worker waits before asking again while the model is down or slow, when nothing wakes it.
IDLE_SECONDS = 5.0


class QueueModel(Protocol):
    """The model side the worker needs (`extract/select.FallbackExtractor` is one)."""

    name: str

    @property
    def state(self) -> ModelState: ...

    def skip_reason(self) -> str | None:
        """Why the model should not be asked now, or None."""
        ...

    async def extract_model(self, message: str, *, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
        """The model's memories; raises `ExtractionError`."""
        ...


class ExtractionQueue:
    """The background extraction queue over one store (see the module docstring).

    Args:
        store: where jobs and memories live.
        model: the model to run.
        max_attempts: model attempts per job before it is marked failed.
        retry_seconds: the backoff before the first retry; it doubles with each attempt.
        limit: the most jobs pending or running; beyond it `enqueue` refuses (the message keeps its rules memories).
        on_landed: awaited with the user id after a job's memories are stored (e.g. to notify MCP clients).
        judge: asks the model about candidate pairs the rules cannot classify (LLM-assisted reconciliation);
            None: the rules decide alone.
    """

    def __init__(
        self,
        store: Store,
        model: QueueModel,
        *,
        max_attempts: int = 3,
        retry_seconds: float = 10.0,
        limit: int = 1000,
        on_landed: Callable[[str], Awaitable[None]] | None = None,
        judge: conflicts.PairJudge | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.limit = limit
        self.on_landed = on_landed
        self.judge = judge
        self._wake = anyio.Event()

    def refusal(self) -> str | None:
        """Why a message should not be queued now (the model is known to be down), or None to queue it."""
        if self.model.state == "down":
            return self.model.skip_reason()
        return None

    async def enqueue(self, db: aiosqlite.Connection, job: jobs.NewJob) -> int | None:
        """Queue `job` inside the caller's transaction; None when the queue is full. Call `wake` after commit."""
        if await jobs.waiting(db) >= self.limit:
            logger.warning("extraction queue is full (%d jobs): storing by rules only", self.limit)
            return None
        return await jobs.add_job(db, job)

    def wake(self) -> None:
        """Tell the worker a job may be due."""
        self._wake.set()

    async def run(self) -> None:
        """Resume interrupted jobs, then run due jobs one at a time, forever (cancel it to stop)."""
        resumed = await jobs.resume_interrupted(self.store)
        if resumed:
            logger.info("extraction queue: resumed %d interrupted jobs", resumed)
        while True:
            try:
                await self._step()
            except Exception:  # the worker's top level: a failed read (say, the disk is full) must not stop it
                logger.exception("extraction queue: the worker failed; trying again in %g s", IDLE_SECONDS)
                await anyio.sleep(IDLE_SECONDS)

    async def _step(self) -> None:
        # A fresh event before looking: a job queued after the look still wakes the wait below.
        self._wake = anyio.Event()
        if self.model.skip_reason() is not None:
            await self._sleep(IDLE_SECONDS)
            return
        job = await jobs.claim_next(self.store)
        if job is None:
            await self._sleep(await jobs.seconds_until_due(self.store))
            return
        await self.run_job(job)

    async def _sleep(self, seconds: float | None) -> None:
        with anyio.move_on_after(seconds if seconds is not None else float("inf")):
            await self._wake.wait()

    async def run_job(self, job: jobs.Job) -> None:
        """Run one claimed job: ask the model, then land its memories or record the failure. Never raises
        (but cancellation), so one bad job cannot stop the worker."""
        try:
            memories = await self.model.extract_model(
                job.message, speaker=job.speaker, reference_time=_reference_time(job)
            )
        except ExtractionError as error:
            await self._failed(job, error.reason)
            return
        try:
            await self._land(job, memories)
        except Exception as error:  # the worker's top level: a bug or a failed write must not stop it
            logger.exception("extraction job %d could not be stored", job.job_id)
            await self._failed(job, f"storing the model's memories failed: {error}")
            return
        if self.on_landed is not None:
            await self.on_landed(job.user_id)

    async def _failed(self, job: jobs.Job, reason: str) -> None:
        status = await jobs.fail(
            self.store, job, reason, max_attempts=self.max_attempts, retry_seconds=self.retry_seconds
        )
        logger.warning(
            "extraction job %d attempt %d/%d failed (%s): %s",
            job.job_id,
            job.attempts,
            self.max_attempts,
            status,
            reason,
        )

    async def _land(self, job: jobs.Job, memories: list[ExtractedMemory]) -> None:
        store, user = self.store, job.user_id
        # Model judgments first, outside the write transaction (each is a model call).
        judged: list[dict[str, conflicts.Verdict]] = []
        for item in memories:
            verdicts: dict[str, conflicts.Verdict] = {}
            if self.judge is not None:
                verdicts = await conflicts.judge_unreadable_pairs(
                    store, user, item, [job.speaker], self.judge, exclude=job.provisional
                )
            judged.append(verdicts)
        async with store.transaction() as db:
            if not memories:
                note = "the model found no durable fact; the rules' memories stay"
                await jobs.finish(db, job.job_id, [], self.model.name, note)
                return
            replaced: list[Memory] = []
            for memory_id in job.provisional:
                try:
                    replaced.append(
                        await store.set_status(
                            db, user, memory_id, "superseded", expected=("active",), source_message=job.message
                        )
                    )
                except MemoryNotFound:
                    continue  # deleted, or superseded by a later message, since: leave it as it is
            landed: list[Memory] = []
            strategy: ResolutionStrategy = job.strategy  # type: ignore[assignment]  # checked when queued
            for item, verdicts in zip(memories, judged, strict=True):
                new = NewMemory(
                    user,
                    item,
                    self.model.name,
                    job.message,
                    job.speaker,
                    job.session_id,
                    job.metadata,
                    job.message_id,
                    job.context,
                    to_utc_text(_reference_time(job)),  # time order (conflicts.py): when it was said
                )
                resolution = await conflicts.reconcile(store, db, new, strategy, [job.speaker], verdicts)
                landed.append(resolution.memory)
                for other_id, verdict in verdicts.items():
                    await jobs.add_judgment(
                        db,
                        job.job_id,
                        user,
                        resolution.memory.memory_id,
                        other_id,
                        verdict.kind,
                        verdict.reason.removeprefix("model: "),
                        self.judge.name if self.judge is not None else "",
                    )
            for old in replaced:
                successor = max(landed, key=lambda memory: fuzz.token_set_ratio(memory.content, old.content))
                await store.add_link(db, user, successor.memory_id, old.memory_id, "supersedes")
            ids = list(dict.fromkeys(memory.memory_id for memory in landed))
            await jobs.finish(db, job.job_id, ids, self.model.name, None)
        logger.info("extraction job %d landed %d memories, replaced %d", job.job_id, len(ids), len(replaced))


def _reference_time(job: jobs.Job) -> datetime:
    said = datetime.fromisoformat(job.reference_time)
    return said.astimezone(ZoneInfo(job.zone)) if job.zone else said


@asynccontextmanager
async def running_queue(queue: ExtractionQueue) -> AsyncIterator[ExtractionQueue]:
    """Run `queue`'s worker in a task while the context is open; cancel it on exit (jobs stay in SQLite)."""
    async with running(queue.run):
        yield queue
