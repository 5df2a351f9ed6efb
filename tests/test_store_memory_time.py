"""Times through the MCP layer: date-only precision, the `timezone` argument, DST, habits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tzlocal
from mcp import Client

from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

SAID = "2024-08-19T10:00:00-04:00"  # Monday morning in New York


def _settings(tmp_path: Path, zone: str) -> Settings:
    return Settings(db_path=str(tmp_path / "t.db"), extractor="rules", timezone=zone)


async def _store(client: Client, message: str, **extra: Any) -> dict[str, Any]:
    result = await client.call_tool("store_memory", {"message": message, "occurred_at": SAID, **extra})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_a_day_without_a_clock_time_is_stored_as_a_date_and_still_filters_and_sorts(tmp_path: Path) -> None:
    async with Client(create_server(_settings(tmp_path, "America/New_York"))) as client:
        [moved] = (await _store(client, "I moved to Denver two weeks ago."))["memories"]
        [dentist] = (await _store(client, "I have a dentist appointment tomorrow at 2pm."))["memories"]
        [habit] = (await _store(client, "I hate scheduling calls after 4 PM."))["memories"]
        on_the_day = await client.call_tool(
            "list_memories", {"date_field": "event_time", "from_date": "2024-08-05", "to_date": "2024-08-05"}
        )
        by_time = await client.call_tool("list_memories", {"sort_by": "event_time", "sort_order": "asc"})
    assert (moved["content"], moved["event_time"]) == ("User moved to Denver on 2024-08-05", "2024-08-05")
    assert dentist["event_time"] == "2024-08-20T14:00:00-04:00"
    assert habit["event_time"] is None and habit["content"] == "User hates scheduling calls after 4 PM"
    assert on_the_day.structured_content is not None and by_time.structured_content is not None
    assert [m["memory_id"] for m in on_the_day.structured_content["memories"]] == [moved["memory_id"]]
    assert [m["memory_id"] for m in by_time.structured_content["memories"]] == [
        moved["memory_id"],
        dentist["memory_id"],
        habit["memory_id"],
    ]


async def test_the_timezone_argument_gives_the_offset_in_force_on_the_event_day(tmp_path: Path) -> None:
    async with Client(create_server(_settings(tmp_path, "UTC"))) as client:
        zoned = await _store(client, "I start a new job in 3 months at 9am.", timezone="America/New_York")
        fixed = await _store(client, "I start a course in 3 months at 9am.")
    # November is standard time in New York (-05:00); without a zone the message's fixed offset is kept.
    assert zoned["memories"][0]["event_time"] == "2024-11-19T09:00:00-05:00"
    assert fixed["memories"][0]["event_time"] == "2024-11-19T09:00:00-04:00"


async def test_the_configured_zone_is_used_when_the_offset_agrees_with_it(tmp_path: Path) -> None:
    async with Client(create_server(_settings(tmp_path, "America/New_York"))) as client:
        stored = await _store(client, "I start a new job in 3 months at 9am.")
    assert stored["memories"][0]["event_time"] == "2024-11-19T09:00:00-05:00"


async def test_an_unknown_timezone_is_a_tool_error_that_says_what_is_allowed(tmp_path: Path) -> None:
    async with Client(create_server(_settings(tmp_path, "UTC"))) as client:
        result = await client.call_tool("store_memory", {"message": "I live in Lisbon.", "timezone": "Mars/Base"})
        listed = await client.call_tool("list_memories", {})
    assert result.is_error
    assert "timezone 'Mars/Base' is not an IANA time zone name" in str(result.content)
    assert listed.structured_content is not None and listed.structured_content["memories"] == []


def test_the_default_time_zone_is_the_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARMONIA_TIMEZONE", raising=False)
    try:
        for zone in ("Asia/Tokyo", "America/Sao_Paulo"):
            monkeypatch.setenv("TZ", zone)
            tzlocal.reload_localzone()  # tzlocal caches the zone it found
            assert Settings().timezone == zone
    finally:
        monkeypatch.undo()
        tzlocal.reload_localzone()
