"""The durable background extraction queue's SQL: the `extraction_jobs` table (migration `_M007_JOBS` in store.py).

A job is one stored message waiting for the local model. Its life: `pending` (due at `not_before`) ->
`running` (claimed by the one worker; `attempts` counts claims) -> `done` (with the ids the model's
memories became) or back to `pending` with a later `not_before` after a failure, until `failed` when
the attempts are used up. A job found `running` when the server starts was interrupted (the process
died mid-call) and is made `pending` again, so nothing is lost.

Only SQL lives here; what a job does is extraction_queue.py's business.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiosqlite

from harmonia_mcp.models import QueueFigures
from harmonia_mcp.store import Store, utc_now

JobStatus = Literal["pending", "running", "done", "failed"]
# How many finished jobs the latency figures of `queue_stats` look at.
LATENCY_WINDOW = 200


@dataclass(frozen=True)
class NewJob:
    """What the worker needs to extract one message later, exactly as `store_memory` would have.

    `reference_time` is ISO-8601 with its offset; `zone` the IANA name whose DST rules resolve relative
    times (None: the fixed offset). `provisional` are the ids of the memories the rules stored for the
    message (only those it created, never an older memory it skipped or rewrote).
    """

    user_id: str
    message: str
    speaker: str
    session_id: str | None
    metadata: dict[str, Any] | None
    reference_time: str
    zone: str | None
    strategy: str
    message_id: int | None
    context: str | None
    provisional: list[str]


@dataclass(frozen=True)
class Job(NewJob):
    """A job as stored."""

    job_id: int = 0
    status: JobStatus = "pending"
    attempts: int = 0
    last_error: str | None = None
    result: tuple[str, ...] = ()
    extractor: str | None = None
    created_at: str = ""
    finished_at: str | None = None


def _later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def _job(row: aiosqlite.Row) -> Job:
    return Job(
        user_id=row["user_id"],
        message=row["message"],
        speaker=row["speaker"],
        session_id=row["session_id"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else None,
        reference_time=row["reference_time"],
        zone=row["zone"],
        strategy=row["strategy"],
        message_id=row["message_id"],
        context=row["context"],
        provisional=list(json.loads(row["provisional"])),
        job_id=int(row["job_id"]),
        status=row["status"],
        attempts=int(row["attempts"]),
        last_error=row["last_error"],
        result=tuple(json.loads(row["result"])),
        extractor=row["extractor"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


async def add_job(db: aiosqlite.Connection, job: NewJob) -> int:
    """Queue `job` inside the open transaction `db` (the one that stores the rules' memories); return its id."""
    now = utc_now()
    async with db.execute(
        """
        INSERT INTO extraction_jobs (user_id, message, speaker, session_id, metadata, reference_time, zone, strategy,
            message_id, context, provisional, not_before, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        (
            job.user_id,
            job.message,
            job.speaker,
            job.session_id,
            None if job.metadata is None else json.dumps(job.metadata, ensure_ascii=False),
            job.reference_time,
            job.zone,
            job.strategy,
            job.message_id,
            job.context,
            json.dumps(job.provisional),
            now,
            now,
            now,
        ),
    ) as cursor:
        return int(cursor.lastrowid or 0)


async def waiting(db: aiosqlite.Connection) -> int:
    """How many jobs are pending or running."""
    async with db.execute("SELECT count(*) FROM extraction_jobs WHERE status IN ('pending', 'running')") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def resume_interrupted(store: Store) -> int:
    """Make every `running` job `pending` again (call once at start-up, before the worker); return how many."""
    async with store.transaction() as db:
        cursor = await db.execute(
            "UPDATE extraction_jobs SET status = 'pending', updated_at = ? WHERE status = 'running'", (utc_now(),)
        )
        return cursor.rowcount


async def claim_next(store: Store) -> Job | None:
    """Mark the oldest due pending job `running` (one more attempt) and return it; None when none is due."""
    now = utc_now()
    async with store.transaction() as db:
        async with db.execute(
            "SELECT job_id FROM extraction_jobs WHERE status = 'pending' AND not_before <= ? ORDER BY job_id LIMIT 1",
            (now,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        await db.execute(
            "UPDATE extraction_jobs SET status = 'running', attempts = attempts + 1, updated_at = ? WHERE job_id = ?",
            (now, row[0]),
        )
        async with db.execute("SELECT * FROM extraction_jobs WHERE job_id = ?", (row[0],)) as cursor:
            claimed = await cursor.fetchone()
    assert claimed is not None  # selected and updated just above, in the same transaction
    return _job(claimed)


async def seconds_until_due(store: Store) -> float | None:
    """Seconds until the next pending job is due (0 when one is due now); None when nothing is pending."""
    async with (
        store.transaction() as db,
        db.execute("SELECT min(not_before) FROM extraction_jobs WHERE status = 'pending'") as cursor,
    ):
        row = await cursor.fetchone()
    if row is None or row[0] is None:
        return None
    return max(0.0, (datetime.fromisoformat(row[0]) - datetime.now(UTC)).total_seconds())


async def finish(db: aiosqlite.Connection, job_id: int, result: list[str], extractor: str, note: str | None) -> None:
    """Mark a job `done` with the ids its memories became, inside the transaction that stored them."""
    now = utc_now()
    await db.execute(
        "UPDATE extraction_jobs SET status = 'done', result = ?, extractor = ?, last_error = ?, updated_at = ?, "
        "finished_at = ? WHERE job_id = ?",
        (json.dumps(result), extractor, note, now, now, job_id),
    )


async def fail(store: Store, job: Job, reason: str, *, max_attempts: int, retry_seconds: float) -> JobStatus:
    """Record a failed attempt: back to `pending` after `retry_seconds * 2**(attempts-1)`, or `failed` when
    `max_attempts` are used up. Returns the job's new status."""
    status: JobStatus = "failed" if job.attempts >= max_attempts else "pending"
    delay = retry_seconds * 2 ** max(0, job.attempts - 1)
    now = utc_now()
    async with store.transaction() as db:
        await db.execute(
            "UPDATE extraction_jobs SET status = ?, last_error = ?, not_before = ?, updated_at = ?, finished_at = ? "
            "WHERE job_id = ?",
            (status, reason, _later(delay), now, now if status == "failed" else None, job.job_id),
        )
    return status


async def get_job(store: Store, user_id: str, job_id: int) -> Job | None:
    """The user's job `job_id`, or None."""
    async with (
        store.transaction() as db,
        db.execute("SELECT * FROM extraction_jobs WHERE job_id = ? AND user_id = ?", (job_id, user_id)) as cursor,
    ):
        row = await cursor.fetchone()
    return _job(row) if row else None


def _percentile(values: list[float], share: float) -> float | None:
    # Nearest-rank percentile (https://en.wikipedia.org/wiki/Percentile#The_nearest-rank_method).
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))
    return round(ordered[int(rank) - 1], 3)


async def queue_stats(db: aiosqlite.Connection) -> QueueFigures:
    """Counts by status over every user, latency over the last `LATENCY_WINDOW` done jobs, the newest error."""
    async with db.execute("SELECT status, count(*) FROM extraction_jobs GROUP BY status") as cursor:
        counts = {row[0]: int(row[1]) for row in await cursor.fetchall()}
    async with db.execute(
        "SELECT created_at, finished_at FROM extraction_jobs WHERE status = 'done' ORDER BY job_id DESC LIMIT ?",
        (LATENCY_WINDOW,),
    ) as cursor:
        spans = [
            (datetime.fromisoformat(row[1]) - datetime.fromisoformat(row[0])).total_seconds()
            for row in await cursor.fetchall()
        ]
    async with db.execute(
        "SELECT last_error FROM extraction_jobs WHERE last_error IS NOT NULL AND status != 'done' "
        "ORDER BY updated_at DESC LIMIT 1"
    ) as cursor:
        row = await cursor.fetchone()
    return QueueFigures(
        pending=counts.get("pending", 0),
        running=counts.get("running", 0),
        done=counts.get("done", 0),
        failed=counts.get("failed", 0),
        latency_p50_seconds=_percentile(spans, 0.5),
        latency_p95_seconds=_percentile(spans, 0.95),
        last_error=row[0] if row else None,
    )


async def add_judgment(
    db: aiosqlite.Connection,
    job_id: int,
    user_id: str,
    memory_id: str,
    other_memory_id: str,
    relation: str,
    reason: str,
    judge: str,
) -> None:
    """Record what the model said about a pair (LLM-assisted reconciliation), inside the landing transaction."""
    await db.execute(
        "INSERT INTO reconciliation_judgments (job_id, user_id, memory_id, other_memory_id, relation, reason, judge, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (job_id, user_id, memory_id, other_memory_id, relation, reason, judge, utc_now()),
    )


async def judgments(store: Store, user_id: str, job_id: int) -> list[dict[str, str]]:
    """The judgments recorded while landing the user's job `job_id`, in order."""
    async with (
        store.transaction() as db,
        db.execute(
            "SELECT memory_id, other_memory_id, relation, reason, judge FROM reconciliation_judgments "
            "WHERE job_id = ? AND user_id = ? ORDER BY judgment_id",
            (job_id, user_id),
        ) as cursor,
    ):
        return [dict(row) for row in await cursor.fetchall()]
