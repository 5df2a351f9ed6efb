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

Recurrence = Literal["yearly", "weekly"]

# --- tokens --------------------------------------------------------------------------------------

_TOKEN_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|\n|[^\sA-Za-z0-9]")


def estimate_tokens(text: str) -> int:
    """An upper estimate of how many tokens `text` is for a BPE tokenizer (GPT's cl100k, Llama, Claude).

    Counted per piece: a run of ASCII letters is ceil(len/4) tokens (BPE vocabularies hold most English
    words whole, and about 4 characters per token is the usual figure for English, OpenAI's "What are
    tokens" note); a run of digits is ceil(len/3) (cl100k splits numbers into groups of up to three
    digits); every other character (punctuation, a newline, each non-ASCII letter) is one token. Spaces
    are free (BPE merges a space into the next word). Hex ids such as `mem_3f2a9c0b1d4e5f60` thus count
    17, about what cl100k gives them. It over-counts plain English by 10-30%, which is the point: a block
    cut to a budget by this count fits that budget in the host's tokenizer.

    Args:
        text: any string.

    Returns:
        The estimate, 0 for an empty string.
    """
    total = 0
    for piece in _TOKEN_PIECES.findall(text):
        if piece[0].isascii() and piece[0].isalpha():
            total += math.ceil(len(piece) / 4)
        elif piece[0].isdigit():
            total += math.ceil(len(piece) / 3)
        else:
            total += 1
    return total


# --- profile -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    name: str
    pattern: re.Pattern[str]
    categories: frozenset[Category]
    keep: int  # how many memories the slot shows, newest first


def _slot(name: str, words: str, categories: Iterable[Category], keep: int) -> _Slot:
    return _Slot(name, re.compile(rf"\b(?:{words})\b", re.I), frozenset(categories), keep)


_ANY = frozenset(Category)
# In profile order. Single-valued slots (name, home) keep one memory: the newest, so that "moved to
# Berlin" replaces "lives in Lisbon" even when reconciliation kept both active.
PROFILE_SLOTS: tuple[_Slot, ...] = (
    _slot("name", r"name is|named|called|goes by|nickname", (Category.PERSONAL,), 1),
    _slot(
        "home",
        r"lives?|living|moved|moving|relocated|resides?|grew up|is from|comes from|hometown|based in",
        (Category.PERSONAL, Category.FACT, Category.OTHER),
        1,
    ),
    _slot(
        "work",
        r"works?|working|job|employed|employer|profession|career|colleagues?|boss|company|engineer|teacher|"
        r"nurse|doctor|manager|developer|designer|student|studies|studying|retired",
        (Category.WORK, Category.EDUCATION, Category.PERSONAL),
        2,
    ),
    _slot(
        "family",
        r"wife|husband|partner|spouse|married|engaged|fianc[eé]e?|girlfriend|boyfriend|sons?|daughters?|kids?|"
        r"child|children|mother|father|mom|mum|dad|parents?|sisters?|brothers?|siblings?|grandm\w*|grandf\w*|"
        r"family|baby",
        (Category.RELATIONSHIP, Category.PERSONAL, Category.FACT),
        4,
    ),
    _slot(
        "pets",
        r"dogs?|cats?|pupp(?:y|ies)|kittens?|pets?|parrots?|hamsters?|rabbits?|bunn(?:y|ies)|horses?|turtles?|"
        r"guinea pigs?|snakes?|lizards?",
        _ANY,
        3,
    ),
    _slot("languages", r"speaks?|speaking|languages?|fluent|native|bilingual", _ANY, 2),
    _slot("health", r"\w+", (Category.HEALTH,), 3),
    _slot("preferences", r"\w+", (Category.PREFERENCE,), 4),
)


def profile_entries(memories: Sequence[Memory]) -> list[tuple[str, Memory]]:
    """The user's profile: (slot name, memory) pairs in `PROFILE_SLOTS` order, each memory at most once.

    Args:
        memories: the user's active memories, any order (superseded ones must be left out by the caller).

    Returns:
        For each slot, its newest memories (by `updated_at`, then `created_at`) whose category is one of
        the slot's and whose content names the slot ("lives", "moved", "wife", "dog", ...), at most the
        slot's `keep`. A memory matching two slots is shown in the first. Memories that repeat the
        content of a newer one (ignoring case and spaces) are left out.
    """
    newest = sorted(memories, key=lambda memory: (memory.updated_at, memory.created_at), reverse=True)
    used: set[str] = set()
    seen_content: set[str] = set()
    entries: list[tuple[str, Memory]] = []
    for slot in PROFILE_SLOTS:
        kept = 0
        for memory in newest:
            if kept >= slot.keep:
                break
            key = _content_key(memory.content)
            if memory.memory_id in used or key in seen_content:
                continue
            if memory.category in slot.categories and slot.pattern.search(memory.content):
                entries.append((slot.name, memory))
                used.add(memory.memory_id)
                seen_content.add(key)
                kept += 1
    return entries


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


def recurrence(memory: Memory) -> Recurrence | None:
    """How the memory recurs: "yearly" (a birthday or anniversary with a date), "weekly" ("every Friday",
    "on Fridays"), or None (a one-off, or a habit with no day to place it on)."""
    if event_date(memory) is not None and (
        _YEARLY.search(memory.content) or any(_YEARLY.fullmatch(tag) for tag in memory.tags)
    ):
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
        stored = event_date(memory)
        assert stored is not None  # recurrence() checked it
        for year in (today.year, today.year + 1):
            day = stored.day
            while True:
                try:
                    candidate = date(year, stored.month, day)
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


# --- the block -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One memory as a line of the block: `when` is a date shown before it (or empty)."""

    memory_id: str
    content: str
    category: Category
    when: str = ""

    def line(self) -> str:
        prefix = f"{self.when}: " if self.when else ""
        return f"- {prefix}{self.content} ({self.memory_id})"


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
    """The assembled text, its estimated tokens, the memory ids per section key, and how many did not fit."""

    text: str
    tokens: int
    ids: dict[str, list[str]]
    left_out: int


def _render_lines(sections: Sequence[Section], chosen: dict[str, list[Item]]) -> list[str]:
    lines: list[str] = []
    for section in sections:
        items = chosen.get(section.key, [])
        if not items:
            continue
        if lines:
            lines.append("")  # a blank line between sections
        lines.append(f"## {section.title}")
        if section.grouped:
            order = [category for category in Category if any(item.category == category for item in items)]
            for category in order:
                lines.append(f"### {category.value}")
                lines += [item.line() for item in items if item.category == category]
        else:
            lines += [item.line() for item in items]
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
    ids = {key: [item.memory_id for item in items] for key, items in chosen.items()}
    return Block(text=text, tokens=estimate_tokens(text), ids=ids, left_out=left_out)


def display_date(event_time: str | None) -> str:
    """An `event_time` for a line of the block: the date, with the clock time when one was said."""
    if event_time is None:
        return ""
    moment = event_time
    if len(moment) <= 10:
        return moment
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return moment[:10]
    return parsed.strftime("%Y-%m-%d %H:%M") if (parsed.hour, parsed.minute) != (0, 0) else parsed.strftime("%Y-%m-%d")
