"""Relative and absolute time expressions → timezone-aware datetimes.

Pure functions:

- `resolve_time(text, reference_time)` finds the first date expression in free
  text ("tomorrow at 2pm", "two weeks ago", "on Friday", "September 5th",
  "May 8, 2023"), resolves it against `reference_time`, in its time zone, and
  says how precise it is (`ResolvedTime.granularity`) and where it was.
  `resolve_event_time` returns just the datetime.
- `with_absolute_time(text, resolved)` rewrites the expression with the absolute
  date ("tomorrow at 2pm" → "on 2024-08-20 at 14:00"), for memory content.
- `parse_timestamp(value, default_tz)` parses an ISO-8601 date or timestamp given
  as a tool argument, and raises `InvalidInput` with a helpful message otherwise.

Approach of `resolve_time`: every date pattern below is matched over the
lowercased text; the candidate that starts first wins (the longest on a tie, so
"the day after tomorrow" beats "tomorrow" and "next Friday" beats "Friday").
A time of day ("at 2pm", "at 7:30am", "at 14:00", "at 8", "noon", "in the
morning") is only applied when a day was found: a time alone ("I wake up at
6am") is a habit, not an event, and gives None; so does a weekday after "every"
or "each". When only the date is known the result is midnight of that date with
`date_only` set (stored as an ISO date). docs/temporal.md lists every case.

Conventions (documented because each is a choice):

- "on Friday", "Friday", "next Friday", "this coming Friday": the first Friday
  strictly after the reference day. "this Friday" may be the reference day itself.
  "last Friday": the most recent Friday strictly before it.
- Past sense: when the text reads as past tense ("I went there on Friday", "we
  adopted her on May 3rd"), a weekday or a month-day without a year resolves to
  the most recent occurrence instead of the next one.
- Except forward targets: the date a plan was moved to ("moved to May 10",
  "rescheduled for Friday", "postponed until", "pushed [back] to", "changed to",
  "brought forward to", "delayed until") or what was booked or planned is for
  ("booked a flight for Friday", "signed up for the race on May 3") keeps the
  next occurrence, and wins over any other date in the text ("moved from May 3
  to May 10" is May 10). "on <date>" right after the booking verb ("I signed up
  on Friday") dates the booking itself, so it stays past.
- A month-day without a year otherwise takes the next occurrence on or after
  the reference date.
- "last/next week|month|year" are the first day of that period (Monday, the 1st,
  1 January), date only. "next April" / "last April" are the first of that month,
  next / previous occurrence. "this weekend" is the coming Saturday (today on a
  weekend).
- Bare hours ("tonight at 8", "at 7"): with "tonight", "evening", "night" or
  "afternoon" they are pm; with "morning" am; otherwise 1-7 are pm and the rest
  are taken as written. "in the morning/afternoon/evening" alone mean 09:00,
  15:00, 19:00. "tonight" with no time is date-only.
- Too vague to place, so None: a bare year ("in 2015"), a month and year with no
  day ("May 2023"), "a few days ago", "this year".
- "N hours/minutes ago" and "in N hours/minutes" give an exact time, counted in
  UTC so that a DST change in between does not shift it by an hour.

Nothing here raises on odd input: numbers too large for the calendar, invalid
dates (February 30th) and out-of-range times are treated as "no match".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Literal

from dateutil.parser import isoparse
from dateutil.relativedelta import relativedelta

from harmonia_mcp.errors import InvalidInput

__all__ = [
    "EARLIEST_TIMESTAMP",
    "LATEST_TIMESTAMP",
    "ResolvedTime",
    "parse_timestamp",
    "resolve_event_time",
    "resolve_time",
    "with_absolute_time",
]

_MONTHS: dict[str, int] = {
    "january": 1,
    "jan": 1,
    "february": 2,
    "feb": 2,
    "march": 3,
    "mar": 3,
    "april": 4,
    "apr": 4,
    "may": 5,
    "june": 6,
    "jun": 6,
    "july": 7,
    "jul": 7,
    "august": 8,
    "aug": 8,
    "september": 9,
    "sept": 9,
    "sep": 9,
    "october": 10,
    "oct": 10,
    "november": 11,
    "nov": 11,
    "december": 12,
    "dec": 12,
}
_WEEKDAYS: dict[str, int] = {
    "monday": 0,
    "tuesday": 1,
    "wednesday": 2,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}
_NUMBER_WORDS: dict[str, int] = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "a couple of": 2,
    "couple of": 2,
    "a couple": 2,
}

# Longest alternatives first so "sept" wins over "sep" and "a couple of" over "a".
_MONTH_ALT = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAY_ALT = "|".join(_WEEKDAYS)
_NUM_ALT = r"\d+|" + "|".join(re.escape(w) for w in sorted(_NUMBER_WORDS, key=len, reverse=True))
_UNIT = r"(?P<unit>minute|min|hour|hr|day|week|month|year)s?"
# "5 may be late": a month word followed by a verb-ish word is not a date.
_NOT_MODAL = r"(?!\s+(?:be|have|not|also|never|go|come|want|need|take|get|make|help|well)\b)"

_ISO_DATE = re.compile(
    r"(?<![\d-])(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})"
    r"(?:[t ](?P<hh>\d{1,2}):(?P<mm>\d{2})(?::\d{2}(?:\.\d+)?)?)?(?![\d-])"
)
_MONTH_DAY = re.compile(
    rf"\b(?P<mon>{_MONTH_ALT})\b\.?{_NOT_MODAL}\s+(?:the\s+)?(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b(?![:.]\d)"
    r"(?:,?\s+(?P<y>\d{4})\b)?"
)
_DAY_MONTH = re.compile(
    rf"\b(?:the\s+)?(?<![\d.:])(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon>{_MONTH_ALT})\b\.?{_NOT_MODAL}"
    r"(?:,?\s+(?P<y>\d{4})\b)?"
)
_DAY_AROUND = re.compile(r"\b(?:the\s+)?day\s+(?P<dir>after\s+tomorrow|before\s+yesterday)\b")
_SIMPLE_DAY = re.compile(
    r"\b(?P<word>today|tonight|tomorrow|yesterday|this\s+morning|this\s+afternoon|this\s+evening|last\s+night)\b"
)
_AGO = re.compile(rf"\b(?P<num>{_NUM_ALT})\s+{_UNIT}\s+ago\b")
_IN_N = re.compile(rf"\bin\s+(?P<num>{_NUM_ALT})\s+{_UNIT}\b")
_FROM_NOW = re.compile(rf"\b(?P<num>{_NUM_ALT})\s+{_UNIT}\s+from\s+(?:now|today)\b")
_WEEKDAY = re.compile(rf"\b(?:(?P<rel>last|next|this\s+coming|this|coming|on)\s+)?(?P<wd>{_WEEKDAY_ALT})\b(?!')")
_REL_PERIOD = re.compile(r"\b(?P<rel>last|next|this)\s+(?P<period>week|month|year|weekend)\b")
_REL_MONTH = re.compile(rf"\b(?P<rel>last|next|this)\s+(?P<mon>{_MONTH_ALT})\b{_NOT_MODAL}")

_CLOCK_AMPM = re.compile(r"(?<![\d:.])(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ap>[ap])\.?\s?m\b\.?")
_CLOCK_AT_HM = re.compile(r"\bat\s+(?:about\s+|around\s+)?(?P<h>\d{1,2}):(?P<m>\d{2})\b")
_CLOCK_AT_H = re.compile(
    r"\bat\s+(?:about\s+|around\s+)?(?P<h>\d{1,2})\b"
    r"(?![:.,]\d|\s*(?:%|percent|years?|yrs?|months?|weeks?|days?|hours?|minutes?|people|kids|"
    r"miles?|km|kg|lbs?|pounds?|dollars?|euros?|of|in\s+the\s+\d))"
)
_NOON = re.compile(r"\b(?P<w>noon|midday|midnight)\b")
_PART_OF_DAY = re.compile(r"\b(?:in\s+the\s+)?(?P<w>morning|afternoon|evening)\b")
_AT_BEFORE = re.compile(r"\bat\s+(?:about\s+|around\s+)?$")
_LEAD_PREPOSITION = re.compile(r"\b(?:on|at)\s+$", re.I)
_OWN_PREPOSITION = re.compile(r"\b(?:since|until|till|by|before|after|from|to|for)\s+$", re.I)
_SPACES = re.compile(r"\s{2,}")
# "every Friday", "each morning", "every other Tuesday": recurring, so never a date.
_RECURRING = re.compile(r"\b(?:every|each)\s+(?:other\s+|single\s+)?$")
_SIMPLE_DAY_PART: dict[str, str] = {
    "tonight": "night",
    "last night": "night",
    "this morning": "morning",
    "this afternoon": "afternoon",
    "this evening": "evening",
}
_PM_HINT = re.compile(r"\b(?:tonight|evening|night|afternoon)\b")
_AM_HINT = re.compile(r"\bmorning\b")

# Past tense markers: a small list of common past forms, or "<pronoun> [adverb] <verb>ed".
_PAST = re.compile(
    r"\b(?:was|were|went|did|had|got|saw|met|came|made|took|told|gave|left|bought|spent|ate|drove|flew|ran|won|"
    r"lost|became|began|felt|found|heard|knew|thought|wrote|brought|kept|held|sat|stood|sold|sent|built|caught|"
    r"taught|woke|slept|wore|grew|threw|broke|chose|forgot|fell|paid|said|celebrated|visited|adopted|started|"
    r"finished|moved|graduated|attended|joined|married|returned|arrived|passed|happened)\b"
    r"|\b(?:i|we|he|she|they|you|it)\s+(?:\w+ly\s+|just\s+|also\s+|already\s+|finally\s+|once\s+)?[a-z]{2,}ed\b"
)
# Forward-looking dates in past-tense clauses. Words between the verb and the date, inside one clause
# (no "and"/"but"/"so"/"then"), e.g. "moved [the meeting] to", "signed up [for the race] on".
_GAP = r"(?:\s+(?!(?:and|but|so|then|because|while)\b)[\w'-]+){%d,%d}?\s+"
# The target of a move: "moved to May 10", "rescheduled for Friday", "pushed the deadline back to Friday".
_MOVED_TO = re.compile(
    r"\b(?:moved|rescheduled|re-scheduled|postponed|pushed|changed|brought|bumped|shifted|delayed|put\s+off|"
    r"switched)" + _GAP % (0, 5) + r"(?:to|for|until|till|til)\s+(?:the\s+)?$"
)
# What was booked or planned: "booked a flight for Friday", "signed up for the race on May 3". "on" needs the
# thing booked in between: in "I signed up on Friday" the date is when the booking happened.
_PLAN_VERB = (
    r"\b(?:booked|scheduled|planned|signed\s+up|registered|reserved|arranged|set\s+up|organi[sz]ed|enrolled|"
    r"made\s+(?:a|an)\s+(?:reservation|appointment|booking)|(?:bought|got)\s+(?:\w+\s+)?tickets?)"
)
_BOOKED_FOR = re.compile(_PLAN_VERB + _GAP % (0, 6) + r"for\s+(?:the\s+)?$")
_BOOKED_ON = re.compile(_PLAN_VERB + _GAP % (1, 6) + r"on\s+(?:the\s+)?$")
_FORWARD_WINDOW = 80
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'"})
# Anything longer is certainly off the calendar; keeps int() away from huge digit strings.
_MAX_NUMBER_DIGITS = 6


Granularity = Literal["minute", "day", "week", "weekend", "month", "year"]


@dataclass(frozen=True)
class _Candidate:
    start: int
    end: int
    day: date | None = None
    exact: datetime | None = None  # set when the expression fixes the time too ("3 hours ago")
    granularity: Granularity = "day"
    part_of_day: str | None = None  # "morning", "night", ... when the expression itself names one ("tonight")
    forward: bool = False  # the target of a move or booking ("moved to May 10"), which wins over other dates


@dataclass(frozen=True)
class _Clock:
    hour: int
    minute: int
    start: int
    end: int
    part: str | None = None  # "morning" etc. for a part of the day, None for a clock time ("2pm", "noon")


@dataclass(frozen=True)
class ResolvedTime:
    """A time expression found in a text, resolved to an absolute time.

    Attributes:
        moment: timezone-aware; midnight (local) of the day when no clock time was said.
        granularity: "minute" when a clock time was said (or "3 hours ago"), else what the expression
            names: "day", "week" (its Monday), "weekend" (its Saturday), "month" (its 1st), "year" (1 January).
        spans: (start, end) character offsets in the text of the date expression and, when one was used,
            the clock expression, in text order.
        part_of_day: "morning", "afternoon", "evening" or "night" when the text said only that; `moment` is
            then 09:00, 15:00 or 19:00 ("minute" granularity, for sorting), or midnight for "tonight".
    """

    moment: datetime
    granularity: Granularity
    spans: tuple[tuple[int, int], ...]
    part_of_day: str | None = None

    @property
    def date_only(self) -> bool:
        """True when no clock time was said: `moment`'s time of day carries no information."""
        return self.granularity != "minute"

    def iso(self) -> str:
        """ISO-8601: a date ("2024-08-20") when `date_only`, else a timestamp with offset."""
        return self.moment.date().isoformat() if self.date_only else self.moment.isoformat()

    def phrase(self) -> str:
        """The absolute time in words for a memory's content: "on 2024-08-20 at 14:00", "in April 2025"."""
        day = self.moment.date()
        if self.part_of_day is not None:
            return f"on the {self.part_of_day} of {day.isoformat()}"
        if self.granularity == "minute":
            return f"on {day.isoformat()} at {self.moment:%H:%M}"
        if self.granularity == "week":
            return f"in the week of {day.isoformat()}"
        if self.granularity == "weekend":
            return f"on the weekend of {day.isoformat()}"
        if self.granularity == "month":
            return f"in {day:%B} {day.year}"
        if self.granularity == "year":
            return f"in {day.year}"
        return f"on {day.isoformat()}"


def _number(token: str) -> int | None:
    token = " ".join(token.split())
    if token.isdigit():
        return int(token) if len(token) <= _MAX_NUMBER_DIGITS else None
    return _NUMBER_WORDS.get(token)


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except (ValueError, OverflowError):
        return None


def _add_days(day: date, amount: int) -> date | None:
    try:
        return day + timedelta(days=amount)
    except (ValueError, OverflowError):
        return None


def _shift(day: date, unit: str, amount: int) -> date | None:
    try:
        if unit == "day":
            return day + relativedelta(days=amount)
        if unit == "week":
            return day + relativedelta(weeks=amount)
        if unit == "month":
            return day + relativedelta(months=amount)
        return day + relativedelta(years=amount)
    except (ValueError, OverflowError):
        return None


def _unit_name(unit: str) -> str:
    return {"min": "minute", "hr": "hour"}.get(unit, unit)


def _year_occurrence(ref_day: date, month: int, day_of_month: int, past: bool) -> date | None:
    """Next (or, in past sense, most recent) valid `month`/`day_of_month` around `ref_day`."""
    step = -1 if past else 1
    # Eight years always reach a leap year, so February 29th resolves too.
    for offset in range(9):
        found = _safe_date(ref_day.year + step * offset, month, day_of_month)
        if found is None:
            continue
        if (not past and found >= ref_day) or (past and found <= ref_day):
            return found
    return None


def _weekday_date(ref_day: date, weekday: int, rel: str, past: bool) -> date | None:
    ahead = (weekday - ref_day.weekday()) % 7
    behind = (ref_day.weekday() - weekday) % 7
    if rel == "last":
        return _add_days(ref_day, -(behind or 7))
    if rel == "this":
        return _add_days(ref_day, -behind if past else ahead)
    if past and rel in ("", "on"):
        return _add_days(ref_day, -(behind or 7))
    return _add_days(ref_day, ahead or 7)


def _weekend_date(ref_day: date, rel: str) -> date | None:
    weekday = ref_day.weekday()
    # Days to the Saturday of the current weekend: ahead on weekdays, 0 or -1 on a weekend.
    to_saturday = 5 - weekday
    if rel == "next":
        return _add_days(ref_day, to_saturday + 7)
    if rel == "last":
        return _add_days(ref_day, to_saturday - 7)
    return ref_day if weekday >= 5 else _add_days(ref_day, to_saturday)


def _period_start(ref_day: date, period: str, amount: int) -> date | None:
    """The first day of the week (Monday), month or year `amount` periods from `ref_day`'s."""
    shifted = _shift(ref_day, period, amount)
    if shifted is None:
        return None
    if period == "week":
        return _add_days(shifted, -shifted.weekday())
    if period == "month":
        return shifted.replace(day=1)
    return shifted.replace(month=1, day=1)


def _month_date(ref_day: date, month: int, rel: str) -> date | None:
    if rel == "next":
        year = ref_day.year if month > ref_day.month else ref_day.year + 1
    elif rel == "last":
        year = ref_day.year if month < ref_day.month else ref_day.year - 1
    else:
        year = ref_day.year
    return _safe_date(year, month, 1)


def _forward_target(low: str, match: re.Match[str]) -> bool:
    """True when the date at `match` is what was moved or booked, so it lies ahead even in past tense."""
    # "on Friday" is matched with its "on", which the booking rule needs to see before the date.
    lead = "on " if match.group(0).startswith("on ") else ""
    before = low[max(0, match.start() - _FORWARD_WINDOW) : match.start()] + lead
    return any(pattern.search(before) for pattern in (_MOVED_TO, _BOOKED_FOR, _BOOKED_ON))


def _candidates(low: str, ref: datetime, past: bool) -> list[_Candidate]:
    ref_day = ref.date()
    found: list[_Candidate] = []

    def add(
        match: re.Match[str],
        day: date | None,
        exact: datetime | None = None,
        granularity: Granularity = "day",
        part_of_day: str | None = None,
    ) -> None:
        if _RECURRING.search(low, max(0, match.start() - 12), match.start()):
            return  # "every Friday": a habit, not a date
        if day is not None or exact is not None:
            forward = _forward_target(low, match)
            found.append(_Candidate(match.start(), match.end(), day, exact, granularity, part_of_day, forward))

    def past_at(match: re.Match[str]) -> bool:
        return past and not _forward_target(low, match)

    for m in _ISO_DATE.finditer(low):
        add(m, _safe_date(int(m["y"]), int(m["m"]), int(m["d"])))
    for pattern in (_MONTH_DAY, _DAY_MONTH):
        for m in pattern.finditer(low):
            month, dom = _MONTHS[m["mon"]], int(m["d"])
            if m["y"]:
                add(m, _safe_date(int(m["y"]), month, dom))
            else:
                add(m, _year_occurrence(ref_day, month, dom, past_at(m)))
    for m in _DAY_AROUND.finditer(low):
        add(m, _add_days(ref_day, 2 if m["dir"].startswith("after") else -2))
    for m in _SIMPLE_DAY.finditer(low):
        word = " ".join(m["word"].split())
        offset = 1 if word == "tomorrow" else -1 if word in ("yesterday",) or word.startswith("last") else 0
        add(m, _add_days(ref_day, offset), part_of_day=_SIMPLE_DAY_PART.get(word))
    for pattern, sign in ((_AGO, -1), (_IN_N, 1), (_FROM_NOW, 1)):
        for m in pattern.finditer(low):
            amount = _number(m["num"])
            if amount is None:
                continue
            unit = _unit_name(m["unit"])
            if unit in ("hour", "minute"):
                try:
                    # Elapsed time, so via UTC: across a DST change the wall clock moves by more or less.
                    moment = (ref.astimezone(UTC) + timedelta(**{unit + "s": sign * amount})).astimezone(ref.tzinfo)
                except (ValueError, OverflowError):
                    continue
                add(m, None, moment, "minute")
            else:
                add(m, _shift(ref_day, unit, sign * amount))
    for m in _WEEKDAY.finditer(low):
        rel = " ".join((m["rel"] or "").split())
        rel = "next" if rel in ("coming", "this coming") else rel
        add(m, _weekday_date(ref_day, _WEEKDAYS[m["wd"]], rel, past_at(m)))
    for m in _REL_PERIOD.finditer(low):
        rel, period = m["rel"], m["period"]
        if period == "weekend":
            add(m, _weekend_date(ref_day, rel), granularity="weekend")
        elif rel != "this":  # "this year" is a span, not a day
            granularity: Granularity = "week" if period == "week" else "month" if period == "month" else "year"
            add(m, _period_start(ref_day, period, 1 if rel == "next" else -1), granularity=granularity)
    for m in _REL_MONTH.finditer(low):
        add(m, _month_date(ref_day, _MONTHS[m["mon"]], m["rel"]), granularity="month")
    return found


def _hour_24(hour: int, minute: int, low: str) -> tuple[int, int] | None:
    """Resolve a clock time written without am/pm, using the hints described in the module docstring."""
    if hour > 23 or minute > 59:
        return None
    if 1 <= hour <= 11:
        if _AM_HINT.search(low):
            return hour, minute
        if _PM_HINT.search(low) or hour <= 7:
            return hour + 12, minute
    return hour, minute


def _time_of_day(low: str) -> _Clock | None:
    m = _CLOCK_AMPM.search(low)
    if m:
        hour, minute = int(m["h"]), int(m["m"] or 0)
        if not 1 <= hour <= 12 or minute > 59:
            return None
        hour %= 12
        start = _AT_BEFORE.search(low, max(0, m.start() - 12), m.start())
        return _Clock(hour + 12 if m["ap"] == "p" else hour, minute, start.start() if start else m.start(), m.end())
    m = _CLOCK_AT_HM.search(low)
    if m:
        hour, minute = int(m["h"]), int(m["m"])
        if m["h"].startswith("0"):  # "07:30" is 24-hour notation, taken as written
            return _Clock(hour, minute, m.start(), m.end()) if minute <= 59 else None
        resolved = _hour_24(hour, minute, low)
        return _Clock(*resolved, m.start(), m.end()) if resolved else None
    m = _CLOCK_AT_H.search(low)
    if m:
        resolved = _hour_24(int(m["h"]), 0, low)
        return _Clock(*resolved, m.start(), m.end()) if resolved else None
    m = _NOON.search(low)
    if m:
        start = _AT_BEFORE.search(low, max(0, m.start() - 12), m.start())
        hour = 0 if m["w"] == "midnight" else 12
        return _Clock(hour, 0, start.start() if start else m.start(), m.end())
    m = _PART_OF_DAY.search(low)
    if m:
        hour, minute = {"morning": (9, 0), "afternoon": (15, 0), "evening": (19, 0)}[m["w"]]
        return _Clock(hour, minute, m.start(), m.end(), m["w"])
    return None


def resolve_time(text: str, reference_time: datetime) -> ResolvedTime | None:
    """Find the first date expression in `text` and resolve it, keeping where it was and how precise it is.

    Args:
        text: free text, any length, any characters ("I have a dentist appointment tomorrow at 2pm").
        reference_time: when the text was said. Relative expressions resolve against it and the
            result is in its time zone; a naive value is taken as UTC. Give it a zone with DST rules
            (`zoneinfo.ZoneInfo`), not a fixed offset, for "in 3 months at 2pm" to get the offset of then.

    Returns:
        A `ResolvedTime`, or None when there is no date expression, when it is too vague (a bare year),
        when it is a habit ("every Friday"), or when it falls off the calendar ("99999999 days ago").

    Never raises for any string.
    """
    if not isinstance(text, str) or not text:
        return None
    tz = reference_time.tzinfo or UTC
    ref = reference_time if reference_time.tzinfo else reference_time.replace(tzinfo=tz)
    low = text.translate(_APOSTROPHES).lower()
    past = _PAST.search(low) is not None
    candidates = _candidates(low, ref, past)
    if not candidates:
        return None
    # The target of a move or booking wins ("moved from May 3 to May 10"); otherwise the first, then the longest.
    best = min(candidates, key=lambda c: (not c.forward, c.start, -(c.end - c.start)))
    date_span = (best.start, best.end)
    if best.exact is not None:
        return ResolvedTime(best.exact.replace(second=0, microsecond=0), "minute", (date_span,))
    if best.day is None:
        return None
    clock = _time_of_day(low) if best.granularity == "day" else None
    # An ISO date may carry its own clock time, which wins over any other time in the text.
    iso = _ISO_DATE.match(low, best.start)
    if iso is not None and iso["hh"] is not None and int(iso["hh"]) <= 23 and int(iso["mm"]) <= 59:
        clock = _Clock(int(iso["hh"]), int(iso["mm"]), best.start, best.end)
    hour, minute = (clock.hour, clock.minute) if clock is not None else (0, 0)
    try:
        moment = datetime.combine(best.day, dtime(hour, minute), tzinfo=tz)
    except (ValueError, OverflowError):
        return None
    if clock is None:
        return ResolvedTime(moment, best.granularity, (date_span,), best.part_of_day)
    spans = _merge([date_span] if (clock.start, clock.end) == date_span else [date_span, (clock.start, clock.end)])
    # "tomorrow morning": an approximate hour for sorting, while the content keeps the words (part_of_day).
    return ResolvedTime(moment, "minute", spans, clock.part)


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    ordered = sorted(spans)
    merged: list[tuple[int, int]] = []
    for start, end in ordered:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def resolve_event_time(text: str, reference_time: datetime) -> datetime | None:
    """Find a date expression in `text` and return it as an absolute, timezone-aware datetime.

    Args:
        text: free text, any length, any characters ("I have a dentist appointment tomorrow at 2pm").
        reference_time: when the text was said. Relative expressions resolve against it and the
            result is in its time zone; a naive value is taken as UTC.

    Returns:
        The datetime the text refers to, with second and microsecond zero; midnight of the day when
        the text names a date but no time of day. None when there is no date expression, when it is
        too vague (a bare year), or when it falls off the calendar ("99999999 days ago"). See
        `resolve_time` for the precision and the position of the expression.

    Never raises for any string.
    """
    resolved = resolve_time(text, reference_time)
    return None if resolved is None else resolved.moment


def with_absolute_time(text: str, resolved: ResolvedTime) -> str:
    """`text` with its time expression replaced by `resolved.phrase()`.

    "User has a dentist appointment tomorrow at 2pm" → "User has a dentist appointment on 2024-08-20 at 14:00".
    A preposition just before the expression ("on Friday", "at 2pm") goes with it. The first span becomes
    the phrase; a later, separate span (the clock in "tomorrow, as usual, at 2pm") is removed.
    `resolved` must come from `resolve_time` on this same `text`; when the text's length changed under
    lowercasing (a few non-ASCII letters do that), the text is returned with the phrase appended instead.
    """
    if len(text.lower()) != len(text) or not resolved.spans or resolved.spans[-1][1] > len(text):
        return f"{text} ({resolved.phrase()})"
    pieces: list[str] = []
    cursor = 0
    for index, (start, end) in enumerate(resolved.spans):
        lead = _LEAD_PREPOSITION.search(text, max(cursor, start - 8), start)
        if lead is not None:
            start = lead.start()
        pieces.append(text[cursor:start].rstrip(" ,") if index else text[cursor:start])
        if index == 0:
            phrase = resolved.phrase()
            if _OWN_PREPOSITION.search(text, max(0, start - 8), start):
                phrase = phrase.split(" ", 1)[1]  # "since last year" → "since 2023", not "since in 2023"
            pieces.append(phrase)
        cursor = end
    pieces.append(text[cursor:])
    result = pieces[0]
    for piece in pieces[1:]:
        if result and piece and not result.endswith(" ") and piece[0].isalnum():
            result += " "
        result += piece
    return _SPACES.sub(" ", result).strip()


def states_time(text: str, moment: datetime) -> bool:
    """True when `text` already says `moment` the way `ResolvedTime.phrase` writes it into a memory: its ISO
    date ("2024-08-20", with "14:00" too when `moment` has a clock time), or for the first of a month the month
    and year ("April 2025"), or for the first of January the year ("in 2024", "since 2024").

    `recall` shows a line's date only when the line does not say it already (`context.display_date`).
    """
    day = moment.date()
    if day.isoformat() in text:
        return (moment.hour, moment.minute) == (0, 0) or f"{moment:%H:%M}" in text
    if day.day == 1 and f"{day:%B} {day.year}" in text:
        return True
    return (day.month, day.day) == (1, 1) and re.search(rf"(?<!\d){day.year}(?!\d)", text) is not None


# The range a timestamp argument may take, in UTC: a day inside what `datetime` can hold, so converting it
# to UTC, a date-only to_date's extra day and the conversation window before an occurred_at never overflow.
EARLIEST_TIMESTAMP = datetime(1, 1, 2, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC)


_COMMON_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})?)?")


def _isoparse(text: str) -> datetime:
    # Why: an import parses two timestamps per row and dateutil's isoparse is pure Python (~40 us each);
    # the forms exports and clients send almost always (2024-08-19, 2024-08-19T10:00:00.123+00:00) go to
    # the C `datetime.fromisoformat`, which reads those exactly as isoparse does; anything else to isoparse.
    if _COMMON_ISO.fullmatch(text):
        return datetime.fromisoformat(text)
    return isoparse(text)


def parse_timestamp(value: str, default_tz: tzinfo, *, field: str = "date") -> datetime:
    """Parse an ISO-8601 date or timestamp given as an argument by a client.

    Args:
        value: "2024-08-19", "2024-08-19T10:00:00-04:00", "2024-08-19T14:00:00Z", or a naive
            "2023-05-08T13:56:00" (read as wall time in `default_tz`). Surrounding spaces are ignored.
        default_tz: the time zone for values without an offset (dates are midnight there).
        field: the argument's name, used in the error message ("occurred_at", "from_date").

    Returns:
        A timezone-aware datetime.

    Raises:
        InvalidInput: `value` is empty, not a string, not ISO-8601, or outside `EARLIEST_TIMESTAMP` to
            `LATEST_TIMESTAMP` (0001-01-02 to 9999-12-30, UTC); the message names `field`, quotes the value
            (shortened if long) and shows the accepted forms.
    """
    shown = value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "..."
    hint = "use e.g. 2024-08-19 or 2024-08-19T10:00:00-04:00"
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} {shown!r} is empty or not a string; {hint}")
    try:
        parsed = _isoparse(value.strip())
    except (ValueError, OverflowError, TypeError) as exc:
        raise InvalidInput(f"{field} {shown!r} is not a valid ISO-8601 date or timestamp; {hint}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_tz)
    try:
        in_range = EARLIEST_TIMESTAMP <= parsed.astimezone(UTC) <= LATEST_TIMESTAMP
    except (ValueError, OverflowError):
        in_range = False
    if not in_range:
        raise InvalidInput(f"{field} {shown!r} is out of range: use a time between 0001-01-02 and 9999-12-30 (UTC)")
    return parsed


# A yearly date (a birthday, an anniversary) said as a month and day with no year and no "next"/"this":
# it comes back every year, so pinning it to the next occurrence would make it wrong a year later.
_YEARLY_CUE = re.compile(r"\b(?:birthday|bday|b-day|anniversary|name\s+day)s?\b", re.I)
_PINNED = re.compile(
    r"\b(?:\d{4}|next|this|last|coming|tomorrow|today|tonight|yesterday|in\s+\d+|in\s+(?:a|two|three)\b|ago)\b",
    re.I,
)


def recurring_date(text: str) -> bool:
    """True when `text` states a yearly date ("User's birthday is on March 14", "Their anniversary is
    June 2"): a birthday/anniversary cue and no year or relative word ("next", "in 3 days", "2025").
    Such a date is kept as the words said (month and day) rather than resolved to one year's date."""
    return _YEARLY_CUE.search(text) is not None and _PINNED.search(text) is None
