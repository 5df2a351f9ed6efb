"""Context for the next prompt: token counts, the user's profile, recurring events and the `recall` block.

Pure functions over `Memory` objects; `MemoryService.recall`, `.profile` and `.upcoming_events` fetch the
memories (through the service's own search and list, so a better retriever improves `recall` for free)
and call these.

- `estimate_tokens(text)`: a deliberately pessimistic token count (see its docstring), so that a block
  cut to a budget by it fits the budget under the BPE tokenizers hosts use.
- `profile_entries(memories)`: the user's stable core, slot by slot (name, home, work, family and
  partner, pets, languages, health, preferences), newest first, one value for single-valued slots.
- `next_occurrence(memory, today)`: the next date of a recurring memory (a birthday or anniversary with
  a date, or "every Friday"), or None.
- `assemble(sections, budget)`: the Markdown block, greedy in priority order, never over the budget and
  never with half a memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

from harmonia_mcp.models import Category, Memory
from harmonia_mcp.temporal import states_time

Recurrence = Literal["yearly", "weekly"]

# --- tokens --------------------------------------------------------------------------------------

_TOKEN_PIECES = re.compile(r"'s\b|[A-Za-z]+|[0-9]+|\n|([^\sA-Za-z0-9])\1*")


def estimate_tokens(text: str) -> int:
    """An upper estimate of how many tokens `text` is for a BPE tokenizer (GPT's cl100k and o200k, Llama 3).

    Counted per piece: a run of ASCII letters is ceil(len/5) tokens (BPE vocabularies hold most English
    words whole); a run of digits is ceil(len/3) (cl100k and o200k split numbers into groups of up to
    three digits); "'s" is one token, and so is a run of one repeated punctuation character ("##");
    every other character (other punctuation, a newline, each non-ASCII letter) is one token. Spaces are
    free (BPE merges a space into the next word). A memory id such as `mem_3f2a9c0b1d4e5f60` counts 17,
    exactly what cl100k and o200k give it.

    Calibrated on the 758 `recall` blocks of the LoCoMo dev questions (docs/benchmarks.md): the
    estimate was 1.15 times the cl100k count on average and never below 1.06 times it (o200k alike),
    so a block cut to a budget by it fits that budget in the host's tokenizer.

    Args:
        text: any string.

    Returns:
        The estimate, 0 for an empty string.
    """
    total = 0
    for found in _TOKEN_PIECES.finditer(text):
        piece = found.group(0)
        if piece[0].isascii() and piece[0].isalpha():
            total += math.ceil(len(piece) / 5)
        elif piece[0].isdigit():
            total += math.ceil(len(piece) / 3)
        else:
            total += 1
    return total


# --- profile -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    name: str
    # (pattern, categories) tiers: a memory belongs to the slot through the first tier whose pattern its
    # content matches and whose categories hold its category; earlier tiers are shown first.
    tiers: tuple[tuple[re.Pattern[str], frozenset[Category]], ...]
    keep: int  # how many memories the slot shows


def _slot(name: str, keep: int, *tiers: tuple[str | re.Pattern[str], Iterable[Category]]) -> _Slot:
    compiled = tuple(
        (words if isinstance(words, re.Pattern) else re.compile(rf"\b(?:{words})\b", re.I), frozenset(kinds))
        for words, kinds in tiers
    )
    return _Slot(name, compiled, keep)


# Where someone lives, comes from or works is the user's only when the user is the sentence's subject: "User
# is originally from Porto", "User and family moved to Leeds", not "User's colleague Sam is from Ghent".
_SUBJECT = (
    r"^[A-Z][\w'.-]*(?: [A-Z][\w'.-]*)? (?:and family )?(?:(?:is|was|has|had|have) )?"
    r"(?:(?:now|originally|recently|just|also|still|currently|actually) )*"
)


def _about_user(words: str) -> re.Pattern[str]:
    return re.compile(rf"{_SUBJECT}(?:{words})\b")


_ANY = frozenset(Category)
# In profile order. Single-valued slots (name, home, origin) keep one memory: the newest, so that "moved to
# Berlin" replaces "lives in Lisbon" even when reconciliation kept both active. Tiers put the defining
# facts first: "works as a nurse" before "my manager is Tom", a partner before a grandmother.
PROFILE_SLOTS: tuple[_Slot, ...] = (
    _slot("name", 1, (r"name is|goes by|nickname|named|called", (Category.PERSONAL,))),
    _slot("home", 1, (_about_user(r"lives? in|living in|moved to|moving to|relocated to|resides? in|based in"), _ANY)),
    _slot("origin", 1, (_about_user(r"from|grew up|comes? from|born in|born and raised"), _ANY)),
    _slot(
        "work",
        2,
        (
            _about_user(
                r"works? (?:as|at|for|in)|employed|retired|self-employed|freelanc\w*|runs an? |joined|"
                # a new job, as conflicts.py's employer patterns read it: "accepted a job at", "started a new role with"
                r"(?:started|starts|got|took|began|accepted|landed) (?:a )?(?:new )?(?:job|position|role) "
                r"(?:at|with|for)"
            ),
            _ANY,
        ),
        (_about_user(r"an? "), (Category.WORK, Category.EDUCATION)),
        (r"job|employer|profession|career|\w+", (Category.WORK,)),
        (r"stud(?:y|ies|ied|ying)|student|degree|university|college|school", (Category.EDUCATION,)),
    ),
    _slot(
        "family",
        4,
        (r"wife|husband|partner|spouse|married|engaged|fianc\w*|girlfriend|boyfriend", _ANY),
        (r"kids?|child|children|sons?|daughters?|baby", _ANY),
        (
            r"mother|father|mom|mum|dad|parents?|sisters?|brothers?|siblings?|grandm\w*|grandf\w*|(?<!and )family",
            (Category.RELATIONSHIP, Category.PERSONAL, Category.FACT),
        ),
    ),
    _slot(
        "pets",
        3,
        (
            r"dogs?|cats?|pupp(?:y|ies)|kittens?|pets?|parrots?|hamsters?|rabbits?|bunn(?:y|ies)|horses?|"
            r"turtles?|guinea pigs?|snakes?|lizards?",
            _ANY,
        ),
    ),
    _slot("languages", 2, (r"speaks?|speaking|languages?|fluent|native speaker|bilingual", _ANY)),
    _slot(
        "health",
        3,
        (
            r"allerg\w*|asthma|migraines?|diabet\w*|inhaler|medication|medicine|disease|condition|injur\w*|"
            r"chronic|surgery|pregnan\w*|celiac|coeliac|intoleran\w*|disorder|blood pressure|anxiety|"
            r"depress\w*|diagnosed|epilep\w*|arthritis",
            _ANY,
        ),
        (r"\w+", (Category.HEALTH,)),
    ),
    _slot("preferences", 4, (r"\w+", (Category.PREFERENCE,))),
)


def _about_speaker(memory: Memory) -> bool:
    """Whether the memory is about the person who said it: its content starts with the speaker ("User has a
    dog", "Caroline's sister ..."). Memories with no speaker (imported) are taken as about the user."""
    if not memory.speaker:
        return True
    return memory.content == memory.speaker or memory.content.startswith((memory.speaker + " ", memory.speaker + "'"))


def _tier(slot: _Slot, memory: Memory) -> int | None:
    for index, (pattern, categories) in enumerate(slot.tiers):
        if memory.category in categories and pattern.search(memory.content):
            return index
    return None


def profile_entries(memories: Sequence[Memory]) -> list[tuple[str, Memory]]:
    """The user's profile: (slot name, memory) pairs in `PROFILE_SLOTS` order, each memory at most once.

    Args:
        memories: the user's active memories, any order (superseded ones must be left out by the caller).

    Returns:
        For each slot, at most its `keep` memories among those about their speaker (`_about_speaker`: "User's
        wife Anna", not "Those kids will be so happy") whose content names the slot ("lives in",
        "wife", "dog", "allergic", ...) in a category the slot allows; by tier, then newest first (by
        `updated_at`, then `created_at`), except that pinned memories come first and, within a tier, more important
        ones (issue 11's `importance`) before newer ones. A memory matching two slots is shown in the first. Memories
        that repeat the content of one already shown (ignoring case and spaces) are left out.
    """
    newest = sorted(memories, key=lambda memory: (memory.updated_at, memory.created_at), reverse=True)
    used: set[str] = set()
    seen_content: set[str] = set()
    entries: list[tuple[str, Memory]] = []
    for slot in PROFILE_SLOTS:
        ranked = [
            (tier, order, memory)
            for order, memory in enumerate(newest)
            if (tier := _tier(slot, memory)) is not None and _about_speaker(memory)
        ]
        kept = 0
        for _, _, memory in sorted(ranked, key=lambda entry: _precedence(entry[0], entry[1], entry[2])):
            if kept >= slot.keep:
                break
            key = _content_key(memory.content)
            if memory.memory_id in used or key in seen_content:
                continue
            entries.append((slot.name, memory))
            used.add(memory.memory_id)
            seen_content.add(key)
            kept += 1
    return entries


# The importance of a memory that has none (issue 11: None is neutral), for ordering the profile.
NEUTRAL_IMPORTANCE = 0.5


def _precedence(tier: int, order: int, memory: Memory) -> tuple[int, int, float, int]:
    """Within a slot: pinned memories first, then by tier, then higher importance, then newest (`order`)."""
    importance = memory.importance if memory.importance is not None else NEUTRAL_IMPORTANCE
    return (0 if memory.pinned else 1, tier, -importance, order)


def _content_key(content: str) -> str:
    return " ".join(content.lower().split())


# --- recurring events ----------------------------------------------------------------------------

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKLY = re.compile(
    r"\b(?:every|each)\s+(?P<a>monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b"
    r"|\bon\s+(?P<b>monday|tuesday|wednesday|thursday|friday|saturday|sunday)s\b"
    r"|\b(?P<c>monday|tuesday|wednesday|thursday|friday|saturday|sunday)s\b",
    re.I,
)
_YEARLY = re.compile(r"\b(?:birthdays?|anniversar(?:y|ies)|bday)\b", re.I)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def event_date(memory: Memory) -> date | None:
    """The calendar date of the memory's `event_time` as stored (in the offset it was said in), or None."""
    if memory.event_time is None:
        return None
    found = _DATE.match(memory.event_time)
    if found is None:
        return None
    try:
        return date(int(found[1]), int(found[2]), int(found[3]))
    except ValueError:
        return None


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = (
    r"(?P<month{n}>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
# A day of the year without a year, as the rules extractor keeps recurring dates ("User's birthday is on
# March 14", "on the 9th of September").
_MONTH_DAY = re.compile(
    rf"\b{_MONTH.format(n=1)}\s+(?P<day1>\d{{1,2}})(?:st|nd|rd|th)?\b"
    rf"|\b(?:the\s+)?(?P<day2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH.format(n=2)}\b",
    re.I,
)


def month_day(memory: Memory) -> tuple[int, int] | None:
    """(month, day) of a memory's date: its `event_time`'s, else one named in its content without a year."""
    stored = event_date(memory)
    if stored is not None:
        return stored.month, stored.day
    found = _MONTH_DAY.search(memory.content)
    if found is None:
        return None
    month = _MONTHS.index((found["month1"] or found["month2"])[:3].lower()) + 1
    day = int(found["day1"] or found["day2"])
    return (month, day) if 1 <= day <= 31 else None


def recurrence(memory: Memory) -> Recurrence | None:
    """How the memory recurs: "yearly" (a birthday or anniversary with a date, from `event_time` or a
    month and day in its content), "weekly" ("every Friday", "on Fridays"), or None (a one-off, or a habit
    with no day to place it on)."""
    if (_YEARLY.search(memory.content) or any(_YEARLY.fullmatch(tag) for tag in memory.tags)) and month_day(
        memory
    ) is not None:
        return "yearly"
    if _WEEKLY.search(memory.content):
        return "weekly"
    return None


def next_occurrence(memory: Memory, today: date) -> tuple[date, Recurrence] | None:
    """The first date on or after `today` on which a recurring memory happens, and how it recurs.

    Yearly: the stored date's month and day in `today`'s year, or the next year's if that has passed
    (29 February falls on 28 February in other years). Weekly: the next such weekday, today included.

    Returns:
        (date, recurrence), or None when the memory does not recur (`recurrence`).
    """
    kind = recurrence(memory)
    if kind == "yearly":
        stored = month_day(memory)
        assert stored is not None  # recurrence() checked it
        month, stored_day = stored
        for year in (today.year, today.year + 1):
            day = stored_day
            while True:
                try:
                    candidate = date(year, month, day)
                    break
                except ValueError:  # 29 February in a common year
                    day -= 1
            if candidate >= today:
                return candidate, kind
        return None
    if kind == "weekly":
        found = _WEEKLY.search(memory.content)
        assert found is not None
        weekday = _WEEKDAYS.index((found["a"] or found["b"] or found["c"]).lower())
        return today + timedelta(days=(weekday - today.weekday()) % 7), kind
    return None


# --- relevant memories ---------------------------------------------------------------------------

# Reciprocal rank fusion's constant k = 60 (Cormack, Clarke and Buettcher, "Reciprocal rank fusion outperforms
# Condorcet and individual rank learning methods", SIGIR 2009).
RRF_K = 60
# What `recall`'s second list (nearest by meaning, no floor) weighs against search's ranking: 0.3-0.45 gave the
# same context recall on the LoCoMo dev questions (0.78-0.79 all-in, from 0.765), 0.8 less than none
# (docs/benchmarks.md).
MEANING_WEIGHT = 0.4


def fuse_rankings(first: Sequence[str], second: Sequence[str], second_weight: float = MEANING_WEIGHT) -> list[str]:
    """The ids of two rankings (best first) in one order by weighted reciprocal rank fusion: each id scores
    1 / (RRF_K + rank) in `first` plus `second_weight` / (RRF_K + rank) in `second` (ranks from 0). Ties keep
    `first`'s order, then `second`'s. Each id appears once."""
    scores: dict[str, float] = {}
    for weight, ranking in ((1.0, first), (second_weight, second)):
        for rank, key in enumerate(dict.fromkeys(ranking)):
            scores[key] = scores.get(key, 0.0) + weight / (RRF_K + rank)
    return sorted(scores, key=lambda key: -scores[key])


# --- the block -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One memory as a line of the block: `when` is a date shown before it (or empty); the line ends with
    `label` (a short form of the memory id that the tools accept), or the memory id when `label` is empty,
    unless `show_id` is false."""

    memory_id: str
    content: str
    category: Category
    when: str = ""
    show_id: bool = True
    label: str = ""

    def line(self) -> str:
        prefix = f"{self.when}: " if self.when else ""
        if not self.show_id:
            return f"- {prefix}{self.content}"
        return f"- {prefix}{self.content} ({self.label or self.memory_id})"


@dataclass
class Section:
    """A titled part of the block whose items are grouped by category (or kept in order, `grouped=False`)."""

    key: str
    title: str
    items: list[Item] = field(default_factory=list[Item])
    grouped: bool = True
    # At most this many tokens of the budget for this section (None: whatever is left).
    max_tokens: int | None = None


@dataclass(frozen=True)
class Block:
    """The assembled text, its estimated tokens, the memory ids per section key (in the order shown), and how
    many did not fit."""

    text: str
    tokens: int
    ids: dict[str, list[str]]
    left_out: int


def _groups(section: Section, items: list[Item]) -> list[tuple[Category | None, list[Item]]]:
    """The section's items as shown: by category in `Category` order (or as one group when not grouped)."""
    if not section.grouped:
        return [(None, items)]
    return [
        (category, [item for item in items if item.category == category])
        for category in Category
        if any(item.category == category for item in items)
    ]


def _render_lines(sections: Sequence[Section], chosen: dict[str, list[Item]]) -> list[str]:
    lines: list[str] = []
    for section in sections:
        items = chosen.get(section.key, [])
        if not items:
            continue
        if lines:
            lines.append("")  # a blank line between sections
        lines.append(f"## {section.title}")
        for category, group in _groups(section, items):
            if category is not None:
                lines.append(f"### {category.value}")
            lines += [item.line() for item in group]
    return lines


def assemble(sections: Sequence[Section], budget: int, fill_order: Sequence[str] | None = None) -> Block:
    """Fill the block section by section (`fill_order`, by key; default: section order), each section's
    items in their order, while it fits `budget`. The text shows the sections in `sections` order.

    Each memory goes in whole or not at all; a memory already placed in an earlier section is not repeated,
    nor is one whose content repeats a placed one (ignoring case and spaces). An item that does not fit is
    skipped and a later, shorter one may still go in. Headings count towards the budget.

    Args:
        sections: in priority order (profile, then relevant, then upcoming).
        budget: the most tokens the text may have, by `estimate_tokens`.
        fill_order: section keys in the order they get their share of the budget.

    Returns:
        The `Block`; its `tokens` is `estimate_tokens(text)` and is never above `budget`.
    """
    chosen: dict[str, list[Item]] = {section.key: [] for section in sections}
    costs: dict[str, int] = {}

    def measure() -> int:
        # Equal to estimate_tokens of the text: no counted piece spans a newline, and each line ends with one.
        lines = _render_lines(sections, chosen)
        for line in lines:
            if line not in costs:
                costs[line] = estimate_tokens(line)
        return sum(costs[line] for line in lines) + len(lines)

    placed: set[str] = set()
    placed_content: set[str] = set()
    left_out = 0
    tokens = 0
    by_key = {section.key: section for section in sections}
    for section in [by_key[key] for key in fill_order] if fill_order is not None else sections:
        section_start = tokens
        for item in section.items:
            key = _content_key(item.content)
            if item.memory_id in placed or key in placed_content:
                continue
            chosen[section.key].append(item)
            trial = measure()
            over_section = section.max_tokens is not None and trial - section_start > section.max_tokens
            if trial > budget or over_section:
                chosen[section.key].pop()
                left_out += 1
                continue
            tokens = trial
            placed.add(item.memory_id)
            placed_content.add(key)
    lines = _render_lines(sections, chosen)
    text = "\n".join(lines) + "\n" if lines else ""
    ids = {
        section.key: [item.memory_id for _, group in _groups(section, chosen[section.key]) for item in group]
        for section in sections
    }
    return Block(text=text, tokens=estimate_tokens(text), ids=ids, left_out=left_out)


def display_date(event_time: str | None, content: str | None = None) -> str:
    """An `event_time` for a line of the block: the date, with the clock time when one was said; empty when
    there is none, or when `content` already says it (`temporal.states_time`: "User went to Rome on
    2023-05-08" needs no "2023-05-08: " in front, about 7 tokens a line)."""
    if event_time is None:
        return ""
    moment = event_time
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return moment[:10]
    if content is not None and states_time(content, parsed):
        return ""
    if len(moment) <= 10:
        return moment
    return parsed.strftime("%Y-%m-%d %H:%M") if (parsed.hour, parsed.minute) != (0, 0) else parsed.strftime("%Y-%m-%d")
