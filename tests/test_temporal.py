from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.temporal import (
    parse_timestamp,
    resolve_event_time,
    resolve_time,
    states_time,
    with_absolute_time,
)

NY = ZoneInfo("America/New_York")
# Monday 2024-08-19 10:00 in New York.
REF = datetime(2024, 8, 19, 10, 0, tzinfo=NY)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on Friday at 10am", at(2024, 8, 23, 10)),
        ("two weeks ago", at(2024, 8, 5)),
        ("the day after tomorrow at 7:30am", at(2024, 8, 21, 7, 30)),
        ("tomorrow at 2pm", at(2024, 8, 20, 14)),
        ("tonight at 8", at(2024, 8, 19, 20)),
        ("on September 5th", at(2024, 9, 5)),
        ("yesterday", at(2024, 8, 18)),
        ("the day before yesterday", at(2024, 8, 17)),
        ("today", at(2024, 8, 19)),
        ("tonight", at(2024, 8, 19)),
        ("tomorrow at 2 pm", at(2024, 8, 20, 14)),
        ("tomorrow at 14:00", at(2024, 8, 20, 14)),
        ("tomorrow at noon", at(2024, 8, 20, 12)),
        ("tomorrow in the morning", at(2024, 8, 20, 9)),
        ("Tomorrow At 7:30 A.M.", at(2024, 8, 20, 7, 30)),
        ("3 days ago", at(2024, 8, 16)),
        ("twelve days ago", at(2024, 8, 7)),
        ("a month ago", at(2024, 7, 19)),
        ("in 2 weeks", at(2024, 9, 2)),
        ("in ten days", at(2024, 8, 29)),
        ("last Friday", at(2024, 8, 16)),
        ("next Wednesday", at(2024, 8, 21)),
        ("this Monday", at(2024, 8, 19)),
        ("on Monday", at(2024, 8, 26)),
        ("Thursday", at(2024, 8, 22)),
        ("last week", at(2024, 8, 12)),
        ("next month", at(2024, 9, 1)),
        ("last year", at(2023, 1, 1)),
        ("next week", at(2024, 8, 26)),
        ("in 3 months", at(2024, 11, 19)),
        ("this weekend", at(2024, 8, 24)),
        ("next weekend", at(2024, 8, 31)),
        ("next April", at(2025, 4, 1)),
        ("next September", at(2024, 9, 1)),
        ("September 5th", at(2024, 9, 5)),
        ("5 September", at(2024, 9, 5)),
        ("Sept 5", at(2024, 9, 5)),
        ("the 3rd of March", at(2025, 3, 3)),
        ("2024-09-05", at(2024, 9, 5)),
        ("May 8, 2023", at(2023, 5, 8)),
        ("8 May 2023", at(2023, 5, 8)),
        ("August 19", at(2024, 8, 19)),
        ("August 18", at(2025, 8, 18)),
        ("February 29th", at(2028, 2, 29)),
        ("last night at 11pm", at(2024, 8, 18, 23)),
        ("I went to the dentist on Friday", at(2024, 8, 16)),
        ("We adopted her on March 3rd", at(2024, 3, 3)),
        ("I have a dentist appointment tomorrow at 2pm.", at(2024, 8, 20, 14)),
        ("My flight to Tokyo leaves the day after tomorrow at 7:30am.", at(2024, 8, 21, 7, 30)),
    ],
)
def test_resolves_expressions(text: str, expected: datetime) -> None:
    assert resolve_event_time(text, REF) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I usually wake up at 6am",
        "in 2015",
        "I graduated from MIT in 2015",
        "I hate scheduling calls after 4 PM.",
        "in May 2023",
        "a few days ago",
        "My goal this year is to read 30 books.",
        "Those 5 may be late",
        "February 30th",
        "99999999 days ago",
        "9" * 5000 + " years ago",
        "",
        "nothing temporal here",
    ],
)
def test_no_date_gives_none(text: str) -> None:
    assert resolve_event_time(text, REF) is None


def test_result_is_in_the_reference_time_zone() -> None:
    result = resolve_event_time("tomorrow at 2pm", REF)
    assert result is not None
    assert result.isoformat() == "2024-08-20T14:00:00-04:00"
    tokyo = datetime(2024, 8, 19, 23, 30, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert resolve_event_time("tomorrow", tokyo) == datetime(2024, 8, 20, tzinfo=ZoneInfo("Asia/Tokyo"))


def test_hours_ago_is_exact() -> None:
    assert resolve_event_time("3 hours ago", REF) == REF - timedelta(hours=3)
    assert resolve_event_time("in 30 minutes", REF) == REF + timedelta(minutes=30)


def test_naive_reference_is_taken_as_utc() -> None:
    result = resolve_event_time("yesterday", datetime(2023, 5, 8, 13, 56))
    assert result == datetime(2023, 5, 7, tzinfo=UTC)


# Monday 2026-03-02 10:00 in New York, for the forward-looking cases.
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=NY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The target of a move lies ahead although the verb is past tense.
        ("My dentist appointment moved to May 10", at(2026, 5, 10)),
        ("My exam was moved to April 20", at(2026, 4, 20)),
        ("The team meeting was moved to Wednesday", at(2026, 3, 4)),
        ("The launch was rescheduled for March 20th", at(2026, 3, 20)),
        ("The party got postponed until Saturday", at(2026, 3, 7)),
        ("My surgery was postponed to the 3rd of April", at(2026, 4, 3)),
        ("They pushed the deadline back to Friday", at(2026, 3, 6)),
        ("The meeting was pushed to Thursday", at(2026, 3, 5)),
        ("Our flight was changed to March 5", at(2026, 3, 5)),
        ("The review was brought forward to Thursday", at(2026, 3, 5)),
        ("The game was delayed until Sunday", at(2026, 3, 8)),
        # A move's target wins over the date it was moved from.
        ("My appointment was moved from May 3 to May 10", at(2026, 5, 10)),
        # The date of what was booked, planned or signed up for lies ahead.
        ("I booked a flight for Friday", at(2026, 3, 6)),
        ("I signed up for the race on May 3", at(2026, 5, 3)),
        ("We scheduled the call for Thursday", at(2026, 3, 5)),
        ("I made a reservation for March 14th", at(2026, 3, 14)),
        ("I registered for the conference on April 2", at(2026, 4, 2)),
        ("I signed up on Monday for the race on May 3", at(2026, 5, 3)),
        # Still past: the date is not what was moved or booked.
        ("I moved to Boston on Friday", at(2026, 2, 27)),
        ("We moved to Lisbon on March 3rd", at(2025, 3, 3)),
        ("I signed up on Friday", at(2026, 2, 27)),
        ("The meeting was on Wednesday", at(2026, 2, 25)),
        ("I went to the dentist on Friday and booked nothing", at(2026, 2, 27)),
        ("I planned the party and we had it on Saturday", at(2026, 2, 28)),
    ],
)
def test_moved_and_booked_dates_look_forward_in_past_tense(text: str, expected: datetime) -> None:
    assert resolve_event_time(text, MONDAY) == expected


def test_first_expression_wins() -> None:
    assert resolve_event_time("I moved here two years ago and start a new job next week", REF) == at(2022, 8, 19)


@given(st.text(max_size=400))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    result = resolve_event_time(text, REF)
    assert result is None or result.tzinfo is not None


_TOKENS = [
    "tomorrow",
    "yesterday",
    "tonight",
    "at",
    "8",
    "7:30am",
    "99:99",
    "13pm",
    "0am",
    "ago",
    "in",
    "days",
    "weeks",
    "years",
    "999999999999",
    "99999",
    "next",
    "last",
    "this",
    "on",
    "friday",
    "september",
    "feb",
    "31st",
    "29",
    "0",
    "9999",
    "-",
    "2024-02-30",
    "2024-13-01",
    "0001-01-01",
    "9999-12-31",
    "the day after",
    "noon",
    "midnight",
    "morning",
    "é",
    "\u2019",
]


@given(st.lists(st.sampled_from(_TOKENS), max_size=12).map(" ".join))
def test_never_raises_on_date_like_text(text: str) -> None:
    result = resolve_event_time(text, REF)
    assert result is None or result.tzinfo is not None


def test_calendar_edges_do_not_raise() -> None:
    late = datetime(9999, 12, 31, 12, tzinfo=UTC)
    assert resolve_event_time("tomorrow", late) is None
    assert resolve_event_time("next year", late) is None
    early = datetime(1, 1, 1, 12, tzinfo=UTC)
    assert resolve_event_time("yesterday", early) is None


# --- parse_timestamp ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-08-19T10:00:00-04:00", datetime(2024, 8, 19, 10, tzinfo=NY)),
        ("2024-08-19", datetime(2024, 8, 19, tzinfo=NY)),
        ("2023-05-08T13:56:00", datetime(2023, 5, 8, 13, 56, tzinfo=NY)),
        ("2024-08-19T14:00:00Z", datetime(2024, 8, 19, 14, tzinfo=UTC)),
        ("  2024-08-19T10:00  ", datetime(2024, 8, 19, 10, tzinfo=NY)),
    ],
)
def test_parse_timestamp_accepts_iso(value: str, expected: datetime) -> None:
    result = parse_timestamp(value, NY)
    assert result == expected
    assert result.tzinfo is not None


def test_parse_timestamp_keeps_the_given_offset() -> None:
    assert parse_timestamp("2024-08-19T10:00:00+02:00", NY).utcoffset() == timedelta(hours=2)
    assert parse_timestamp("2024-08-19T10:00:00", NY).utcoffset() == timedelta(hours=-4)


@pytest.mark.parametrize("value", ["yesterday-ish", "", "   ", "2024-13-01", "2024-02-30", "19/08/2024", "x" * 500])
def test_parse_timestamp_rejects_bad_input(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_timestamp(value, NY, field="occurred_at")
    message = str(info.value)
    assert message.startswith("occurred_at ")
    assert "2024-08-19T10:00:00-04:00" in message
    assert len(message) < 200


def test_parse_timestamp_message_names_value_and_default_field() -> None:
    with pytest.raises(InvalidInput, match=r"^date 'yesterday-ish' is not a valid ISO-8601 date or timestamp"):
        parse_timestamp("yesterday-ish", NY)


def test_parse_timestamp_rejects_non_string() -> None:
    with pytest.raises(InvalidInput, match="from_date"):
        parse_timestamp(None, NY, field="from_date")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "iso", "rewritten"),
    [
        (
            "User has a dentist appointment tomorrow at 2pm",
            "2024-08-20T14:00:00-04:00",
            "User has a dentist appointment on 2024-08-20 at 14:00",
        ),
        ("User moved to Denver two weeks ago", "2024-08-05", "User moved to Denver on 2024-08-05"),
        ("Emma turns 7 on September 5th", "2024-09-05", "Emma turns 7 on 2024-09-05"),
        ("User will call at 3pm tomorrow", "2024-08-20T15:00:00-04:00", "User will call on 2024-08-20 at 15:00"),
        (
            "User has a meeting on Friday at 10am",
            "2024-08-23T10:00:00-04:00",
            "User has a meeting on 2024-08-23 at 10:00",
        ),
        ("User is in Madrid next week", "2024-08-26", "User is in Madrid in the week of 2024-08-26"),
        ("User hikes in Sintra this weekend", "2024-08-24", "User hikes in Sintra on the weekend of 2024-08-24"),
        ("User runs the Boston Marathon next April", "2025-04-01", "User runs the Boston Marathon in April 2025"),
        ("User starts a new job next month", "2024-09-01", "User starts a new job in September 2024"),
        ("User moves to Porto in 3 months", "2024-11-19", "User moves to Porto on 2024-11-19"),
        (
            "User has a call tomorrow morning",
            "2024-08-20T09:00:00-04:00",
            "User has a call on the morning of 2024-08-20",
        ),
        ("User goes out tonight", "2024-08-19", "User goes out on the night of 2024-08-19"),
        ("User booked a flight for Friday", "2024-08-23", "User booked a flight for 2024-08-23"),
        ("User booked a hotel for next week", "2024-08-26", "User booked a hotel for the week of 2024-08-26"),
    ],
)
def test_resolved_time_keeps_its_precision_and_rewrites_the_words(text: str, iso: str, rewritten: str) -> None:
    resolved = resolve_time(text, REF)
    assert resolved is not None
    assert resolved.iso() == iso
    assert resolved.date_only == (len(iso) == 10)
    assert with_absolute_time(text, resolved) == rewritten


@pytest.mark.parametrize(
    "text",
    [
        "I hate scheduling calls after 4 PM.",
        "I go to yoga every Friday at 6pm",
        "We meet every other Tuesday",
        "I call my mom each Sunday evening",
        "I love hiking on weekends",
        "I work out on Mondays",
    ],
)
def test_recurring_habits_are_not_dated(text: str) -> None:
    assert resolve_time(text, REF) is None


def test_clock_times_keep_the_offset_in_force_on_that_day_across_dst() -> None:
    # New York leaves daylight saving time at 02:00 on Sunday 2024-11-03.
    saturday = datetime(2024, 11, 2, 10, 0, tzinfo=NY)
    assert resolve_event_time("tomorrow at 2pm", saturday) == datetime(2024, 11, 3, 14, 0, tzinfo=NY)
    resolved = resolve_time("tomorrow at 2pm", saturday)
    assert resolved is not None and resolved.iso() == "2024-11-03T14:00:00-05:00"
    in_months = resolve_time("in 3 months at 9am", REF)
    assert in_months is not None and in_months.iso() == "2024-11-19T09:00:00-05:00"


def test_elapsed_hours_across_dst_count_real_hours() -> None:
    # 00:30 EDT plus three real hours is 02:30 EST (the 01:00-02:00 hour happens twice that night).
    just_after_midnight = datetime(2024, 11, 3, 0, 30, tzinfo=NY)
    later = resolve_event_time("in 3 hours", just_after_midnight)
    assert later is not None
    assert later.astimezone(UTC) == datetime(2024, 11, 3, 7, 30, tzinfo=UTC)
    assert later.isoformat() == "2024-11-03T02:30:00-05:00"


@pytest.mark.parametrize(
    ("text", "moment", "states"),
    [
        ("User flew to Rome on 2024-03-09", datetime(2024, 3, 9), True),
        ("User flew to Rome on 2024-03-09", datetime(2024, 3, 10), False),
        # A clock time is part of the moment: the date alone does not say it.
        ("User has a dentist appointment on 2024-03-12 at 14:00", datetime(2024, 3, 12, 14, 0), True),
        ("User has a dentist appointment on 2024-03-12", datetime(2024, 3, 12, 14, 0), False),
        ("User moves to Berlin in April 2024", datetime(2024, 4, 1), True),
        ("User moves to Berlin in April 2024", datetime(2024, 4, 2), False),
        ("User has lived in Lisbon since 2023", datetime(2023, 1, 1), True),
        ("User has lived in Lisbon since 2023", datetime(2023, 6, 1), False),
        ("User's order 12023 shipped", datetime(2023, 1, 1), False),
        ("User likes tea", datetime(2024, 3, 9), False),
    ],
)
def test_states_time_knows_the_forms_phrase_writes(text: str, moment: datetime, states: bool) -> None:
    assert states_time(text, moment) is states


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31)))
def test_what_with_absolute_time_writes_states_its_moment(reference: datetime) -> None:
    for expression in ("tomorrow at 2pm", "next month", "last year", "two weeks ago", "on Friday", "next week"):
        resolved = resolve_time(f"I see Anna {expression}", reference)
        assert resolved is not None
        assert states_time(with_absolute_time(f"I see Anna {expression}", resolved), resolved.moment)
