"""update_memory, pin, importance, archive, retention with a frozen clock, and access counters
(docs/forgetting.md). Real SQLite files; the service with a clock the test moves, and the MCP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from mcp import Client
from mcp_calls import call as _call
from mcp_calls import error as _error

from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.service import MemoryService, ServiceLimits
from harmonia_mcp.store import open_store

pytestmark = pytest.mark.anyio

# The store stamps created_at/updated_at with the wall clock; the frozen clock starts there and only moves forward.
START = datetime.now(UTC)


class Clock:
    """A clock that stands still until the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


def _service(store: Any, clock: Clock, **limits: Any) -> MemoryService:
    base = ServiceLimits(default_user="u", max_message_bytes=32 * 1024, timezone=ZoneInfo("UTC"), **limits)
    return MemoryService(store, RulesExtractor(), base, clock=clock)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Any]:
    async with open_store(str(tmp_path / "retention.db")) as opened:
        yield opened


async def _store(service: MemoryService, message: str, **arguments: Any) -> str:
    result = await service.store_memory(message, occurred_at=service.clock().isoformat(), **arguments)
    return result.memories[0].memory_id


async def _active(service: MemoryService) -> set[str]:
    listed = await service.list_memories(include_archived=True)
    return {memory.content for memory in listed.memories}


async def test_ttl_and_expires_at_delete_at_that_time_and_not_before(store: Any, clock: Clock) -> None:
    service = _service(store, clock, sweep_interval_seconds=60)
    await _store(service, "I have a dog called Biggie.", ttl_days=2)
    await _store(service, "I live in Porto.", expires_at=(START + timedelta(days=3, hours=12)).isoformat())
    await _store(service, "I like green tea.")
    clock.advance(days=1, hours=23)
    await service.sweep_expired()
    assert await _active(service) == {"User has a dog called Biggie", "User lives in Porto", "User likes green tea"}
    clock.advance(hours=2)
    assert await service.sweep_expired() == {"u": 1}
    assert await _active(service) == {"User lives in Porto", "User likes green tea"}
    clock.advance(days=3)
    await service.list_memories()  # the sweep is due again: a call runs it
    assert await _active(service) == {"User likes green tea"}
    deleted = await service.list_memories(include_inactive=True)
    assert {m.content for m in deleted.memories if m.status == "deleted"} == {
        "User has a dog called Biggie",
        "User lives in Porto",
    }
    # Expired is a soft delete: restore brings it back, and its history says why it went.
    dog = next(m for m in deleted.memories if "Biggie" in m.content)
    history = (await service.memory_details(dog.memory_id)).update_history
    assert history[-1].action == "deleted" and history[-1].source_message == "expired (retention)"
    await service.restore_memory(dog.memory_id)
    assert "User has a dog called Biggie" in await _active(service)


async def test_retention_days_forget_idle_memories_but_never_pinned_ones(store: Any, clock: Clock) -> None:
    service = _service(store, clock, retention_days=30, user_retention_days={"brief": 1})
    idle = await _store(service, "I have a dog called Biggie.")
    pinned = await _store(service, "I live in Porto.")
    await service.set_pinned(pinned, True)
    searched = await _store(service, "I like green tea.")
    brief = await _store(service, "I play chess.", user_id="brief")
    clock.advance(days=20)
    hits = await service.search_memories("tea")  # being returned by a search counts as use
    assert [hit.memory_id for hit in hits.results] == [searched]
    # That search ran the due sweep: "brief" keeps memories one day, so its idle one is gone already.
    assert (await service.list_memories(user_id="brief")).memories == []
    clock.advance(days=15)
    counts = await service.sweep_expired()
    assert counts == {"u": 1}
    assert await _active(service) == {"User lives in Porto", "User likes green tea"}
    assert (await service.list_memories(user_id="brief")).memories == []
    for memory_id, user in ((idle, "u"), (brief, "brief")):
        assert (await service.memory_details(memory_id, user_id=user)).memory.status == "deleted"
    stats = await service.forgetting_stats()
    assert stats["pinned"] == 1 and stats["expired"] == 2 and stats["deleted"] == 2


async def test_a_pinned_memory_with_a_past_expiry_is_kept(store: Any, clock: Clock) -> None:
    service = _service(store, clock)
    memory_id = await _store(service, "I have a dog called Biggie.", ttl_days=1)
    await service.set_pinned(memory_id, True)
    clock.advance(days=10)
    assert await service.sweep_expired() == {}
    assert await _active(service) == {"User has a dog called Biggie"}
    await service.set_pinned(memory_id, False)
    assert await service.sweep_expired() == {"u": 1}


async def test_bad_retention_input_is_refused_and_nothing_is_stored(store: Any, clock: Clock) -> None:
    service = _service(store, clock)
    for arguments, expected in (
        ({"ttl_days": 0}, "ttl_days 0 is out of range"),
        ({"ttl_days": -3}, "ttl_days -3 is out of range"),
        ({"expires_at": (START - timedelta(minutes=1)).isoformat()}, "is not in the future"),
        ({"expires_at": "next week"}, "expires_at 'next week' is not a valid ISO-8601"),
        ({"expires_at": "2027-01-01", "ttl_days": 3}, "not both"),
        ({"importance": 1.5}, "importance 1.5 is out of range"),
    ):
        with pytest.raises(InvalidInput) as error:
            await service.store_memory("I have a dog called Biggie.", **arguments)
        assert expected in str(error.value), arguments
    assert await _active(service) == set()


async def test_get_memory_counts_how_often_and_when_a_search_returned_it(store: Any, clock: Clock) -> None:
    service = _service(store, clock)
    memory_id = await _store(service, "I have a dog called Biggie.")
    other = await _store(service, "I live in Porto.", session_id="another conversation")
    assert (await service.memory_details(memory_id)).memory.access_count == 0
    await service.search_memories("Biggie")
    clock.advance(hours=5)
    await service.search_memories("dog")
    details = (await service.memory_details(memory_id)).memory
    assert details.access_count == 2
    assert details.last_accessed_at == (START + timedelta(hours=5)).isoformat(timespec="microseconds")
    assert (await service.memory_details(other)).memory.access_count == 0


# --- through the MCP client ---


async def test_update_memory_corrects_in_place_with_history_and_reindexes(client: Client) -> None:
    stored = await _call(client, "store_memory", {"message": "I have a dog called Biggie."})
    memory_id = stored["memories"][0]["memory_id"]
    updated = await _call(
        client, "update_memory", {"memory_id": memory_id, "content": "User has a dog called Rex", "importance": 0.9}
    )
    assert updated["memory"]["content"] == "User has a dog called Rex"
    assert updated["memory"]["importance"] == 0.9 and updated["memory"]["memory_id"] == memory_id
    found = await _call(client, "search_memories", {"query": "Rex"})
    assert [hit["memory_id"] for hit in found["results"]] == [memory_id]
    details = await _call(client, "get_memory", {"memory_id": memory_id})
    changes = [(h["action"], h["old_content"], h["new_content"]) for h in details["update_history"]]
    assert changes[-1] == ("updated", "User has a dog called Biggie", "User has a dog called Rex")


async def test_update_memory_supersedes_the_memory_it_now_contradicts(client: Client) -> None:
    porto = (await _call(client, "store_memory", {"message": "I live in Porto."}))["memories"][0]["memory_id"]
    typo = (await _call(client, "store_memory", {"message": "I work as a nurse."}))["memories"][0]["memory_id"]
    result = await _call(client, "update_memory", {"memory_id": typo, "content": "User lives in Lisbon"})
    assert result["superseded"] == [porto]
    active = await _call(client, "list_memories", {})
    assert [memory["content"] for memory in active["memories"]] == ["User lives in Lisbon"]
    links = (await _call(client, "get_memory", {"memory_id": typo}))["links"]
    assert links["supersedes"] == [porto]


async def test_update_memory_bad_input_is_a_tool_error_and_changes_nothing(client: Client) -> None:
    memory_id = (await _call(client, "store_memory", {"message": "I live in Porto."}))["memories"][0]["memory_id"]
    assert "nothing to update" in await _error(client, "update_memory", {"memory_id": memory_id})
    assert "content must be" in await _error(client, "update_memory", {"memory_id": memory_id, "content": "  "})
    message = await _error(client, "update_memory", {"memory_id": memory_id, "event_time": "soon"})
    assert "event_time 'soon'" in message
    assert "mem_0000000000000000" in await _error(
        client, "update_memory", {"memory_id": "mem_0000000000000000", "content": "User lives in Faro"}
    )
    details = await _call(client, "get_memory", {"memory_id": memory_id})
    assert details["memory"]["content"] == "User lives in Porto" and len(details["update_history"]) == 1


async def test_archive_hides_from_search_list_and_export_until_asked(client: Client) -> None:
    memory_id = (await _call(client, "store_memory", {"message": "I live in Porto."}))["memories"][0]["memory_id"]
    archived = await _call(client, "archive_memory", {"memory_id": memory_id})
    assert archived["archived"] is True and archived["status"] == "active"
    assert (await _call(client, "search_memories", {"query": "Porto"}))["results"] == []
    assert (await _call(client, "list_memories", {}))["memories"] == []
    assert "Porto" not in (await _call(client, "export_memories", {"format": "text"}))["data"]
    found = await _call(client, "search_memories", {"query": "Porto", "include_archived": True})
    assert [hit["memory_id"] for hit in found["results"]] == [memory_id]
    assert (await _call(client, "list_memories", {"include_archived": True}))["pagination"]["total_count"] == 1
    exported = await _call(client, "export_memories", {"format": "text", "include_archived": True})
    assert "Porto" in exported["data"]
    await _call(client, "archive_memory", {"memory_id": memory_id, "archived": False})
    assert len((await _call(client, "search_memories", {"query": "Porto"}))["results"]) == 1


async def test_pinning_a_deleted_memory_is_an_error(client: Client) -> None:
    memory_id = (await _call(client, "store_memory", {"message": "I live in Porto."}))["memories"][0]["memory_id"]
    await _call(client, "delete_memory", {"memory_id": memory_id})
    assert "it is deleted" in await _error(client, "pin_memory", {"memory_id": memory_id})
    assert "it is deleted" in await _error(client, "archive_memory", {"memory_id": memory_id})


async def test_pinned_and_important_memories_rank_higher_but_boundedly(client: Client) -> None:
    first = (await _call(client, "store_memory", {"message": "I like green tea."}))["memories"][0]["memory_id"]
    second = (await _call(client, "store_memory", {"message": "I drink black tea every morning."}))["memories"][0][
        "memory_id"
    ]
    before = [hit["memory_id"] for hit in (await _call(client, "search_memories", {"query": "tea"}))["results"]]
    assert set(before) == {first, second}
    low = before[-1]
    pinned = await _call(client, "pin_memory", {"memory_id": low})
    assert pinned["pinned"] is True
    after = (await _call(client, "search_memories", {"query": "tea"}))["results"]
    assert after[0]["memory_id"] == low and after[0]["relevance_score"] == 1.0
    assert 0 < after[1]["relevance_score"] <= 1.0
    await _call(client, "unpin_memory", {"memory_id": low})
    again = [hit["memory_id"] for hit in (await _call(client, "search_memories", {"query": "tea"}))["results"]]
    assert again == before


def test_doctor_reports_retention_and_what_was_forgotten(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import anyio

    from harmonia_mcp.cli import main

    db = tmp_path / "doctor.db"

    async def forget_some() -> None:
        async with open_store(str(db)) as opened:
            service = _service(opened, clock)
            await _store(service, "I have a dog called Biggie.", ttl_days=1)
            pinned = await _store(service, "I live in Porto.", session_id="b")
            archived = await _store(service, "I like green tea.", session_id="c")
            await _store(service, "I play chess.", session_id="d", ttl_days=3)
            await service.set_pinned(pinned, True)
            await service.set_archived(archived, True)
            clock.advance(days=2)
            assert await service.sweep_expired() == {"u": 1}

    anyio.run(forget_some)
    monkeypatch.setenv("HARMONIA_EXTRACTOR", "rules")
    monkeypatch.setenv("HARMONIA_RETENTION_DAYS", "90")
    monkeypatch.setenv("HARMONIA_USER_RETENTION_DAYS", '{"alice": 7}')
    assert main(["doctor", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "retention: 90 days (HARMONIA_RETENTION_DAYS); per user: alice 7" in out
    # The chess memory expires in 3 days from the wall clock, which doctor reads: within 7 days.
    assert "forgotten: 1 deleted (1 by retention), 1 expire within 7 days; 1 pinned, 1 archived" in out


async def test_bad_forgetting_arguments_are_tool_errors_that_name_them(client: Client) -> None:
    for arguments, named in (
        ({"ttl_days": 0}, "ttl_days"),
        ({"importance": 1.5}, "importance"),
        ({"expires_at": "2020-01-01"}, "is not in the future"),
    ):
        assert named in await _error(client, "store_memory", {"message": "I like green tea.", **arguments})
    assert "confirm" in await _error(client, "delete_user_memories", {})
    assert (await _call(client, "list_memories", {"include_inactive": True}))["pagination"]["total_count"] == 0
