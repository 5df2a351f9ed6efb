"""Issue 12 item 1: bounded search queries and reads, a pool of readers, per-caller rate and concurrency."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from harmonia_mcp.config import Settings
from harmonia_mcp.errors import QueryTooExpensive
from harmonia_mcp.search import MAX_PREFIX_TERMS, MAX_QUERY_CHARS, MAX_QUERY_TERMS
from harmonia_mcp.server import create_server
from harmonia_mcp.store import MemoryFilter, open_store
from harmonia_mcp.throttle import READ_TOOLS, RateLimiter, ReadBudget, ThrottleMiddleware

pytestmark = pytest.mark.anyio

# Counts to a billion: far past any read budget, and it holds its reader for as long as it runs.
SHORT = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) SELECT x FROM c"
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT x FROM c"


def _error_text(result: CallToolResult) -> str:
    assert result.is_error, result
    return " ".join(getattr(block, "text", "") for block in result.content)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("dog " * 50_000, f"the limit is {MAX_QUERY_CHARS}"),
        (" ".join(f"word{number}" for number in range(MAX_QUERY_TERMS + 1)), f"the limit is {MAX_QUERY_TERMS}"),
        (" ".join(f"{a}{b}*" for a in "ab" for b in "abc"), f"the limit is {MAX_PREFIX_TERMS}"),
        ("d* biggie", "needs at least 2 letters"),
        ('"' + " ".join(f"w{number}" for number in range(40)) + '"', f"the limit is {MAX_QUERY_TERMS}"),
    ],
)
async def test_a_search_past_the_bounds_is_a_tool_error_that_says_the_limit(
    settings: Settings, query: str, expected: str
) -> None:
    async with Client(create_server(settings)) as client:
        await client.call_tool("store_memory", {"message": "I have a dog called Biggie"})
        refused = await client.call_tool("search_memories", {"query": query})
        assert expected in _error_text(refused)
        within = await client.call_tool("search_memories", {"query": "big* dog " + "word " * 20})
        assert not within.is_error
        assert [hit["content"] for hit in (within.structured_content or {})["results"]] == [
            "User has a dog called Biggie"
        ]


async def test_a_read_past_its_work_budget_is_stopped_and_the_reader_stays_usable(tmp_path: Path) -> None:
    async with open_store(str(tmp_path / "m.db"), readers=1, max_read_instructions=1_000_000) as store:
        with pytest.raises(QueryTooExpensive, match="more work than one request may use"):
            async with store._reader.execute(ENDLESS) as cursor:  # pyright: ignore[reportPrivateUsage]
                await cursor.fetchall()
        memories, total = await store.list_memories("alice", MemoryFilter())
        assert (memories, total) == ([], 0)


async def test_a_one_trip_read_keeps_each_statements_budget_and_ends_its_snapshot(tmp_path: Path) -> None:
    # `_ReaderPool.run` (the one-trip path of keyword search): a statement past its budget is refused as with
    # `execute`; statements before it within budget ran; the read transaction is over afterwards, so the next
    # read on the same (only) reader sees a write committed after the refused one.
    async with open_store(str(tmp_path / "m.db"), readers=1, max_read_instructions=1_000_000) as store:
        reader = store._reader  # pyright: ignore[reportPrivateUsage]
        ran: list[int] = []

        def work(read: Any) -> None:
            # Statements within the budget run; the budget is counted per statement, as with `execute`.
            ran.extend(len(read(SHORT, ())) for _ in range(3))
            read(ENDLESS, ())

        with pytest.raises(QueryTooExpensive, match="more work than one request may use"):
            await reader.run(work)
        assert ran == [5000, 5000, 5000]
        async with store.transaction() as db:
            await db.execute("CREATE TABLE later (x)")
        names = await reader.run(lambda read: [row[0] for row in read("SELECT name FROM sqlite_master", ())])
        assert "later" in names


async def test_a_slow_read_does_not_stall_another_users_reads(tmp_path: Path) -> None:
    # Ordering, not timing: the victim's list must complete while the hostile read still holds its reader.
    # With one serialised reader it could only start after the hostile read ended, and this would deadlock.
    order: list[str] = []
    victim_done = anyio.Event()
    async with open_store(str(tmp_path / "m.db"), max_read_instructions=None) as store:
        async with store.transaction() as db:
            await db.execute(
                "INSERT INTO memories (memory_id, user_id, content, category, confidence, extractor, created_at, "
                "updated_at) VALUES ('mem_0000000000000001', 'victim', 'User likes tea', 'preference', 0.9, "
                "'rules', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
            )

        async def hostile() -> None:
            async with store._reader.execute(ENDLESS) as cursor:  # pyright: ignore[reportPrivateUsage]
                await cursor.fetchone()
                order.append("hostile started")
                await victim_done.wait()
                order.append("hostile ended")

        async def victim() -> None:
            while not order:
                await anyio.sleep(0)
            memories, _ = await store.list_memories("victim", MemoryFilter())
            order.append(f"victim saw {memories[0].content}")
            victim_done.set()

        with anyio.fail_after(120):  # a deadlock guard, not a speed threshold
            async with anyio.create_task_group() as group:
                group.start_soon(hostile)
                group.start_soon(victim)
    assert order == ["hostile started", "victim saw User likes tea", "hostile ended"]


async def test_stdio_over_its_configured_rate_gets_a_tool_error(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "m.db"), extractor="rules", rate_limit_per_minute=3)
    async with Client(create_server(settings)) as client:
        for _ in range(3):
            assert not (await client.call_tool("list_memories", {})).is_error
        refused = await client.call_tool("list_memories", {})
        assert "rate limit: more than 3 requests in the last minute" in _error_text(refused)
        assert (await client.list_tools()).tools  # only work is counted; the session stays usable


def test_the_rate_window_slides() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.acquire("a") is None and limiter.acquire("a") is None
    assert limiter.acquire("a") == pytest.approx(60.0)
    assert limiter.acquire("b") is None  # another caller has its own budget
    now[0] = 30.0
    assert limiter.acquire("a") == pytest.approx(30.0)
    now[0] = 60.5
    assert limiter.acquire("a") is None


@dataclass
class _Ctx:
    method: str
    request: Any = None
    params: Any = None


async def test_a_caller_past_its_concurrency_cap_waits_then_is_refused_when_the_queue_is_full() -> None:
    middleware = ThrottleMiddleware(per_minute=0, max_concurrent=2, max_waiting=1)
    release = anyio.Event()
    started: list[str] = []
    results: list[Any] = []

    async def slow(ctx: Any) -> Any:
        started.append(ctx.method)
        await release.wait()
        return {"ok": True}

    async def call(method: str = "tools/call") -> None:
        results.append(await middleware(cast(Any, _Ctx(method)), slow))

    async with anyio.create_task_group() as group:
        for _ in range(3):  # two run, the third waits its turn
            group.start_soon(call)
        while len(started) < 2 or not middleware.cap._slots["anonymous"].users == 3:  # pyright: ignore
            await anyio.sleep(0)
        refused = await middleware(cast(Any, _Ctx("tools/call")), slow)
        assert isinstance(refused, CallToolResult) and refused.is_error
        assert "2 of this caller's requests are running and 1 waiting" in refused.content[0].text  # type: ignore[union-attr]
        group.start_soon(call, "tools/list")  # listings are not capped
        while "tools/list" not in started:
            await anyio.sleep(0)
        assert started.count("tools/call") == 2
        release.set()
    assert results == [{"ok": True}] * 4
    assert started.count("tools/call") == 3
    assert await middleware(cast(Any, _Ctx("tools/call")), slow) == {"ok": True}


def test_readers_are_read_only(tmp_path: Path) -> None:
    async def attempt() -> None:
        async with open_store(str(tmp_path / "m.db")) as store:
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                async with store._reader.execute("DELETE FROM memories"):  # pyright: ignore[reportPrivateUsage]
                    pass

    anyio.run(attempt)


async def test_a_free_reader_goes_to_the_caller_holding_the_fewest(tmp_path: Path) -> None:
    # Ordering, not timing: hostile holds both readers and queues a third read; the victim queues after it,
    # yet gets the first reader hostile frees.
    from harmonia_mcp.store import READ_OWNER

    order: list[str] = []
    release = {name: anyio.Event() for name in ("h1", "h2")}
    async with open_store(str(tmp_path / "m.db"), readers=2, max_read_instructions=None) as store:
        pool = store._reader  # pyright: ignore[reportPrivateUsage]

        async def hold(name: str) -> None:
            READ_OWNER.set("hostile")
            async with pool.execute(ENDLESS) as cursor:
                await cursor.fetchone()
                order.append(f"{name} holds")
                await release[name].wait()

        async def read(name: str, owner: str) -> None:
            READ_OWNER.set(owner)
            async with pool.execute("SELECT 1") as cursor:
                await cursor.fetchone()
            order.append(f"{name} read")

        async def until(count: int) -> None:
            while len(pool._waiting) < count:  # pyright: ignore[reportPrivateUsage]
                await anyio.sleep(0)

        with anyio.fail_after(120):  # a deadlock guard, not a speed threshold
            async with anyio.create_task_group() as group:
                group.start_soon(hold, "h1")
                group.start_soon(hold, "h2")
                while len(order) < 2:
                    await anyio.sleep(0)
                group.start_soon(read, "h3", "hostile")
                await until(1)
                group.start_soon(read, "victim", "victim")
                await until(2)
                release["h1"].set()
                while "victim read" not in order:
                    await anyio.sleep(0)
                release["h2"].set()
    assert order[2:] == ["victim read", "h3 read"]


async def test_a_caller_within_its_read_budget_never_waits_behind_callers_over_it() -> None:
    # Issue 12's hostile load: callers over their budget share one lane, least in debt first; a caller
    # within its budget runs at once, so it finishes before the over-budget calls queued ahead of it.
    now = [0.0]
    budget = ReadBudget(6.0, burst=2.0, lane_slots=1, clock=lambda: now[0])
    budget.charge("heavy", 10.0)
    budget.charge("other-heavy", 5.0)
    finished: list[str] = []
    release = {name: anyio.Event() for name in ("a", "b", "c")}
    entered: list[str] = []

    async def read(caller: str, name: str) -> None:
        async with budget.run(caller):
            entered.append(name)
            if name in release:
                await release[name].wait()
            now[0] += 1.0  # each read is charged one second
        finished.append(name)

    async with anyio.create_task_group() as group:
        group.start_soon(read, "heavy", "a")
        while entered != ["a"]:
            await anyio.sleep(0)
        group.start_soon(read, "heavy", "b")  # queued first, but its caller is the most in debt
        group.start_soon(read, "other-heavy", "c")
        for _ in range(20):
            await anyio.sleep(0)
        assert entered == ["a"]  # one lane slot, and one lane call per caller
        with anyio.fail_after(10):  # a hang guard: were "light" queued in the lane, it would wait for ever
            await read("light", "v")  # within budget: runs at once, while "a" still holds the lane
        assert finished == ["v"]
        release["a"].set()
        while len(entered) < 3:
            await anyio.sleep(0)
        assert entered == ["a", "v", "c"]  # round-robin: the less indebted caller's call goes next
        release["c"].set()
        release["b"].set()
    assert finished == ["v", "a", "c", "b"]
    now[0] += 1000.0  # refilled: a caller back at a full bucket is forgotten (bounded memory)
    async with budget.run("light"):
        pass
    assert budget.balance("heavy") == pytest.approx(2.0)


async def test_the_over_budget_lane_rests_so_it_is_busy_at_most_its_duty() -> None:
    # Issue 12, third round: a lane that never rests held a whole core of two under three hostile tokens.
    now = [0.0]
    rests: list[float] = []

    async def sleep(seconds: float) -> None:
        rests.append(seconds)
        now[0] += seconds

    budget = ReadBudget(6.0, burst=2.0, lane_slots=1, lane_duty=0.25, clock=lambda: now[0], sleep=sleep)
    budget.charge("heavy", 100.0)
    spans: list[tuple[str, float, float]] = []

    async def read(caller: str, seconds: float) -> None:
        async with budget.run(caller):
            started = now[0]
            now[0] += seconds
        spans.append((caller, started, now[0]))

    await read("heavy", 2.0)  # the lane was idle: no rest
    await read("light", 0.5)  # within budget: never rests
    await read("heavy", 1.0)  # 2 s busy at a duty of 1/4: the lane rests 6 s first
    await read("heavy", 1.0)
    assert rests == [pytest.approx(5.5), pytest.approx(3.0)]  # 6 s after the first ended, 3 s after the second
    assert spans == [("heavy", 0.0, 2.0), ("light", 2.0, 2.5), ("heavy", 8.0, 9.0), ("heavy", 12.0, 13.0)]
    busy = sum(end - start for caller, start, end in spans if caller == "heavy")
    opens_at = budget._lane_opens_at  # pyright: ignore[reportPrivateUsage]
    assert busy / (opens_at - spans[0][1]) == pytest.approx(0.25)  # busy a quarter of the time, rests included


async def test_a_new_callers_second_read_waits_for_its_first_then_goes_to_the_lane_if_it_cannot_pay() -> None:
    # Issue 12, fourth round: a new token's costly searches all started at once (its balance was positive
    # when each started, charged only when they ended), so three tokens ran six on two cores.
    now = [0.0]
    budget = ReadBudget(6.0, lane_slots=1, clock=lambda: now[0])  # burst: 1 s
    entered: list[str] = []
    finished: list[str] = []
    release = {name: anyio.Event() for name in ("a", "b")}

    async def read(caller: str, name: str, seconds: float) -> None:
        async with budget.run(caller):
            entered.append(name)
            if name in release:
                await release[name].wait()
            now[0] += seconds
        finished.append(name)

    with anyio.fail_after(10):  # a hang guard, not a speed threshold
        async with anyio.create_task_group() as group:
            group.start_soon(read, "new", "a", 0.6)
            while entered != ["a"]:
                await anyio.sleep(0)
            group.start_soon(read, "new", "b", 0.6)
            for _ in range(20):
                await anyio.sleep(0)
            assert entered == ["a"]  # its first call's cost is unknown: the second waits for it
            await read("other", "v", 0.01)  # another new caller is not held up by it
            assert finished == ["v"]
            release["a"].set()
            while len(entered) < 3:
                await anyio.sleep(0)
            # 1 s - 0.6 s left, and the next call is expected to cost 0.6 s as well: it runs in the lane.
            assert budget._lane_running == 1  # pyright: ignore[reportPrivateUsage]
            await read("other", "w", 0.01)  # within budget: at once, while "b" holds the lane
            assert finished == ["v", "a", "w"]
            release["b"].set()
    assert finished == ["v", "a", "w", "b"]


async def test_a_callers_burst_of_cheap_reads_runs_at_once_while_the_lane_is_busy() -> None:
    # The other side of the rule above: once a caller's reads are known to be cheap, several run together,
    # none waits in the over-budget lane behind a heavy caller's call.
    now = [0.0]
    budget = ReadBudget(6.0, lane_slots=1, clock=lambda: now[0])
    budget.charge("heavy", 10.0)
    heavy_entered, heavy_release = anyio.Event(), anyio.Event()
    in_flight: list[int] = []
    all_in = anyio.Event()
    finished: list[str] = []

    async def heavy() -> None:
        async with budget.run("heavy"):
            heavy_entered.set()
            await heavy_release.wait()
        finished.append("heavy")

    async def cheap(name: str) -> None:
        async with budget.run("normal"):
            in_flight.append(1)
            if len(in_flight) == 4:
                all_in.set()
            await all_in.wait()  # all four must be running at once to get past here
            now[0] += 0.01
        finished.append(name)

    with anyio.fail_after(10):  # a hang guard: were the reads serialized or queued in the lane, they would hang
        async with anyio.create_task_group() as group:
            group.start_soon(heavy)
            await heavy_entered.wait()
            async with budget.run("normal"):  # its first read, which tells the budget what its reads cost
                now[0] += 0.01
            for name in ("s1", "s2", "s3", "s4"):
                group.start_soon(cheap, name)
            await all_in.wait()
            while len(finished) < 4:
                await anyio.sleep(0)
            assert "heavy" not in finished
            heavy_release.set()
    assert finished[-1] == "heavy"


async def test_over_budget_reads_use_only_the_background_reader_and_the_others_never_wait_for_it(
    tmp_path: Path,
) -> None:
    # Issue 12, fourth round: the lane's reads run on one more connection, whose thread the kernel serves
    # last; they never take the ordinary readers, and ordinary reads never wait for it.
    from harmonia_mcp.store import READ_BACKGROUND, READ_OWNER

    order: list[str] = []
    release = {name: anyio.Event() for name in ("o1", "o2", "bg1")}
    async with open_store(str(tmp_path / "m.db"), readers=2, max_read_instructions=None) as store:
        pool = store._reader  # pyright: ignore[reportPrivateUsage]
        assert len(pool.connections) == 3  # two readers and the background one

        async def hold(name: str, background: bool) -> None:
            READ_OWNER.set(name)
            READ_BACKGROUND.set(background)
            async with pool.execute(ENDLESS) as cursor:
                await cursor.fetchone()
                order.append(f"{name} holds")
                await release[name].wait()

        async def read(name: str, background: bool) -> None:
            marks = READ_OWNER.set(name), READ_BACKGROUND.set(background)
            try:
                rows = await pool.run(lambda statement: statement("SELECT 1", ()))
            finally:
                READ_OWNER.reset(marks[0])
                READ_BACKGROUND.reset(marks[1])
            assert rows[0][0] == 1
            order.append(f"{name} read")

        with anyio.fail_after(120):  # a deadlock guard, not a speed threshold
            async with anyio.create_task_group() as group:
                group.start_soon(hold, "o1", False)
                group.start_soon(hold, "o2", False)
                while len(order) < 2:
                    await anyio.sleep(0)
                await read("bg-while-readers-busy", True)  # every ordinary reader is held: it still runs
                group.start_soon(hold, "bg1", True)
                while "bg1 holds" not in order:
                    await anyio.sleep(0)
                group.start_soon(read, "bg2", True)  # the background reader is held: this one waits for it
                release["o1"].set()
                await read("ordinary", False)  # gets the freed ordinary reader, not the background one
                assert "bg2 read" not in order
                release["bg1"].set()
                while "bg2 read" not in order:
                    await anyio.sleep(0)
                release["o2"].set()
    assert order.index("ordinary read") < order.index("bg2 read")


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_the_background_readers_thread_runs_nicer_than_the_server(tmp_path: Path) -> None:
    from harmonia_mcp.store import BACKGROUND_NICE, READ_BACKGROUND

    def nice(_: Any) -> list[list[int]]:  # on the reader's own thread
        return [[os.getpriority(os.PRIO_PROCESS, threading.get_native_id())]]

    async with open_store(str(tmp_path / "m.db"), readers=1) as store:
        pool = store._reader  # pyright: ignore[reportPrivateUsage]
        ordinary = await pool.run(nice)
        marked = READ_BACKGROUND.set(True)
        try:
            background = await pool.run(nice)
        finally:
            READ_BACKGROUND.reset(marked)
    assert background[0][0] == min(19, ordinary[0][0] + BACKGROUND_NICE)


async def test_a_call_in_the_over_budget_lane_reads_in_the_background() -> None:
    from harmonia_mcp.store import READ_BACKGROUND

    middleware = ThrottleMiddleware(per_minute=0, max_concurrent=2, read_seconds_per_minute=6.0)
    seen: list[bool] = []

    async def handler(_: Any) -> Any:
        seen.append(READ_BACKGROUND.get())
        return {"ok": True}

    search = _Ctx("tools/call", params={"name": "search_memories"})
    await middleware(cast(Any, search), handler)  # within budget
    middleware.reads.charge("anonymous", 100.0)
    await middleware(cast(Any, search), handler)  # over it: the lane
    assert seen == [False, True]
    assert READ_BACKGROUND.get() is False  # reset after the call


async def test_reads_over_http_and_local_reads_have_their_own_budgets() -> None:
    from harmonia_mcp.store import READ_BACKGROUND

    middleware = ThrottleMiddleware(
        per_minute=0, max_concurrent=2, read_seconds_per_minute=6.0, local_read_seconds_per_minute=0.0
    )
    seen: list[bool] = []

    async def handler(_: Any) -> Any:
        seen.append(READ_BACKGROUND.get())
        return {"ok": True}

    middleware.reads.charge("anonymous", 100.0)  # far past the HTTP budget
    await middleware(cast(Any, _Ctx("tools/call", params={"name": "search_memories"})), handler)  # stdio
    await middleware(cast(Any, _Ctx("tools/call", request=object(), params={"name": "search_memories"})), handler)
    assert seen == [False, True]  # the local call has no budget; the HTTP one is served in the lane
    assert middleware.local_reads.balance("anonymous") == 0.0  # no budget: nothing is charged


def test_the_server_budgets_reads_over_http_only_unless_a_budget_is_set(tmp_path: Path) -> None:
    from harmonia_mcp.server import HarmoniaServer

    def throttle(server: HarmoniaServer) -> ThrottleMiddleware:
        return next(found for found in server.middleware if isinstance(found, ThrottleMiddleware))

    default = throttle(create_server(Settings(db_path=str(tmp_path / "m.db"), extractor="rules")))
    assert (default.reads.per_minute, default.local_reads.per_minute) == (6.0, 0.0)
    configured = Settings(db_path=str(tmp_path / "m.db"), extractor="rules", read_seconds_per_minute=2.5)
    chosen = throttle(create_server(configured))
    assert (chosen.reads.per_minute, chosen.local_reads.per_minute) == (2.5, 2.5)


async def test_read_tools_are_charged_to_the_read_budget_and_are_the_read_only_tools(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "m.db"), extractor="rules", embedder="none")
    server = create_server(settings)
    async with Client(server) as client:
        listed = (await client.list_tools()).tools
        read_only = {tool.name for tool in listed if tool.annotations and tool.annotations.read_only_hint}
        assert read_only == READ_TOOLS
    middleware = ThrottleMiddleware(per_minute=0, max_concurrent=2, read_seconds_per_minute=6.0)
    clock = [0.0]
    middleware.reads._clock = lambda: clock[0]  # pyright: ignore[reportPrivateUsage]

    async def slow(_: Any) -> Any:
        clock[0] += 0.5
        return {"ok": True}

    await middleware(cast(Any, _Ctx("tools/call", params={"name": "store_memory"})), slow)
    assert middleware.reads.balance("anonymous") == pytest.approx(1.0)  # writes are not charged; burst 6 / 6 s
    await middleware(cast(Any, _Ctx("tools/call", params={"name": "search_memories"})), slow)
    assert middleware.reads.balance("anonymous") == pytest.approx(0.5)
