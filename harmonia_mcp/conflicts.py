"""Reconciling a new memory with the ones a user already has: find candidates, classify, resolve.

1. **Candidates** (`candidate_query`, `Store.find_candidates`): an FTS5 query of the new memory's key
   terms (its content words less the speaker's name and change markers such as "now", its entities,
   and the cue words of its attribute slot, so "User moved to Berlin" also looks for "lives") over
   the user's active memories, best `bm25()` first, at most `MAX_CANDIDATES`. The index chooses the
   rows; nothing scans the table.
2. **Classification** (`classify`, pure): each memory is read into a slot, (subject, attribute, value),
   by a small set of patterns over the third-person sentences the extractors write ("User works at
   TechCorp" is (user, employer, techcorp); "User's favorite color is blue" is (user, favorite color,
   blue)). Same subject and attribute with the same value is a `duplicate`; with a different value it
   is an `update` when the attribute holds one value at a time (employer, home, partner, an event's
   date, "User's X is ...") or when the new sentence says it changed ("now", "no longer", "new",
   "instead") for attributes that can hold several (likes, the car one drives, "is a ..."). Possession
   ("has", "plays") never updates. A new memory about a named thing the old one mentions ("Biggie is a
   beagle" after "User has a dog called Biggie") is a `complement`. Sentences no pattern reads are
   compared by their content words (rapidfuzz similarity after normalising spelling and synonyms): a
   `duplicate` only when they say the same words. Anything else is `unrelated`; an unrelated memory is
   never superseded, rewritten or merged.
3. **Resolution** (`reconcile`) by strategy, inside the caller's transaction: see docs/conflicts.md
   for the table and an example of each.

The slot patterns and word lists are this project's own, written for the rules extractor's output
(extract/rules.py) and the LLM extractor's third-person style; they are deliberately conservative.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

import aiosqlite
from rapidfuzz import fuzz

from harmonia_mcp import search
from harmonia_mcp.errors import MemoryNotFound
from harmonia_mcp.models import Action, ConflictKind, ExtractedMemory, Memory, ResolutionStrategy
from harmonia_mcp.store import NewMemory, Store

MAX_CANDIDATES = 8
# rapidfuzz `fuzz.ratio` (0-100) at or above which two words count as one spelled two ways ("organise" and
# "organize" score 87.5; "hiking" and "biking" 83.3). Chosen on this project's own examples (tests/test_conflicts.py).
SAME_SPELLING_RATIO = 85.0

Mode = Literal["functional", "marked", "never"]

# --- normalisation ------------------------------------------------------------------------------

_SPELLING = {
    "favourite": "favorite",
    "favourites": "favorites",
    "colour": "color",
    "colours": "colors",
    "named": "called",
    "neighbour": "neighbor",
    "organisation": "organization",
    "centre": "center",
}
_DETERMINERS = frozenset("a an the his her their its my our your this that these those some".split())
# Words that say a fact changed (or that only qualify it); dropped before values and sentences are compared.
_MARKERS = frozenset(
    """
    now no longer anymore instead new newly currently nowadays recently just still also really actually
    finally officially already absolutely totally truly these days switched changed sadly unfortunately
    honestly luckily thankfully
    """.split()
)
_CHANGE_MARKER = re.compile(
    r"\b(?:now|no\s+longer|anymore|any\s+more|instead|new|newly|switched|changed|nowadays|these\s+days|"
    r"moved|moves|relocated|rescheduled|postponed)\b",
    re.I,
)
_TRAILING_CHANGE = re.compile(r"\b(?:now|instead|anymore|any\s+more|these\s+days|nowadays)$", re.I)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_DATEISH = (
    r"(?:the\s+)?(?:\d|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|mon|tue|wed|thu|fri|sat|sun|"
    r"today|tonight|tomorrow|next|this|noon|midnight|later|the\s+\d)"
)


def _words(text: str) -> list[str]:
    return [_SPELLING.get(word, word) for word in _WORD.findall(text.lower())]


def _stem(word: str) -> str:
    """A light plural/3rd-person strip ("works" → "work", "balls" → "ball"); enough to compare values."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _content_tokens(text: str, drop: Iterable[str] = ()) -> frozenset[str]:
    return _tokens_without(text, frozenset(word.lower() for word in drop))


# Cached like `_parse_slot` (below), and for the same reason: the same stored sentences are read again for
# every new memory they are a candidate of. Pure, and frozensets are immutable, so sharing results is safe.
@functools.lru_cache(maxsize=8192)
def _tokens_without(text: str, dropped: frozenset[str]) -> frozenset[str]:
    return frozenset(
        _stem(word)
        for word in _words(text)
        if word not in search.STOP_WORDS and word not in _MARKERS and word not in dropped and _stem(word) not in dropped
    )


def same_words(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether two sets of content words say the same thing: equal (and not empty), or every word one
    has and the other lacks is a near-spelling of a word the other
    has, with no number among them ("organise"/"organize" match; "stamp 3"/"stamp 4", "blue"/"green" do not).
    Near-spelling is rapidfuzz `fuzz.ratio` >= `SAME_SPELLING_RATIO`.
    """
    if a == b:
        return bool(a)
    only_a, only_b = a - b, b - a
    if not only_a or not only_b or any(char.isdigit() for word in only_a | only_b for char in word):
        return False
    return all(any(fuzz.ratio(x, y) >= SAME_SPELLING_RATIO for y in only_b) for x in only_a) and all(
        any(fuzz.ratio(y, x) >= SAME_SPELLING_RATIO for x in only_a) for y in only_b
    )


@functools.lru_cache(maxsize=8192)  # pure; see `_tokens_without`
def _normal_sentence(text: str) -> str:
    return " ".join(word for word in _words(text) if word not in _MARKERS)


# --- slots ---------------------------------------------------------------------------------------

_S = r"^(?P<subj>.+?)"
_NEG = r"(?P<neg>\s+(?:does\s+not|doesn't|do\s+not|don't|did\s+not|didn't|no\s+longer|is\s+not|isn't|never))?"
_ADV = (
    r"(?:\s+(?:now|also|still|just|really|currently|recently|actually|finally|officially|already|absolutely|"
    r"totally|truly|newly))*"
)
# "has moved", "have started": a perfect tense of a change says what the simple past does. Not of other verbs
# ("has worked at Ocado" may be experience, not the job now), and not "had" (it may be over).
_AUX = (
    r"(?:\s+(?:is|are|was|were|has\s+been|have\s+been|will\s+be|"
    r"(?:has|have)(?=\s+(?:moved|relocated|started|taken|accepted|joined|begun|landed|gone|become|turned|switched|"
    r"got|gotten)\b)))?"
)
_HEAD = _S + _NEG + _ADV + _AUX + _ADV + r"\s+"
_COPULA = _S + _ADV + r"\s+(?:is|are|was|were|isn't|aren't)" + r"(?P<neg>\s+(?:not|no\s+longer|never))?" + _ADV + r"\s+"
_PARTNER_NOUNS = r"(?:girlfriend|boyfriend|partner|wife|husband|spouse|fianc[eé]e?)"


@dataclass(frozen=True)
class _Pattern:
    attribute: str
    regex: re.Pattern[str]
    mode: Mode
    needs_event_time: bool = False
    cue_words: str = ""


def _p(attribute: str, pattern: str, mode: Mode, cue_words: str = "", needs_event_time: bool = False) -> _Pattern:
    return _Pattern(attribute, re.compile(pattern, re.I), mode, needs_event_time, cue_words)


# First match wins; the order puts the specific readings ("is on May 3" with a date) before the broad ones.
_PATTERNS: tuple[_Pattern, ...] = (
    _p(
        "when",
        _HEAD
        + r"(?:(?:moved|rescheduled|postponed|pushed(?:\s+back)?|changed|brought\s+forward)\s+(?:to|for|until)\s+"
        + r"|(?:on|at|for)\s+)(?P<val>"
        + _DATEISH
        + r".*)$",
        "functional",
        needs_event_time=True,
    ),
    _p(
        "partner",
        _S + r"'s\s+" + _PARTNER_NOUNS + r"(?:'s\s+name)?" + _ADV + r"\s+is" + _ADV + r"(?:\s+(?:called|named))?"
        r"\s+(?P<val>.+)$",
        "functional",
        "girlfriend boyfriend partner wife husband dating married",
    ),
    _p(
        "partner",
        _HEAD + r"(?:dating|married\s+to|engaged\s+to|seeing|going\s+out\s+with|in\s+a\s+relationship\s+with)"
        r"\s+(?P<val>.+)$",
        "functional",
        "girlfriend boyfriend partner wife husband dating married",
    ),
    _p(
        "occupation",
        _HEAD + r"(?:works?|worked|working)\s+as\s+(?:an?\s+)?(?P<val>.+)$",
        "functional",
        "work job",
    ),
    _p(
        "employer",
        _HEAD + r"(?:works?|worked|working)\s+(?:at|for|with)\s+(?P<val>.+)$",
        "functional",
        "work job employer",
    ),
    _p(
        "employer",
        _HEAD + r"(?:started|starts|got|gotten|has|have|took|taken|began|begun|accepted|landed)\s+"
        r"(?:a\s+)?(?:new\s+)?(?:job|position|role|gig|post)(?:\s+as\s+(?:an?\s+)?[a-z -]+?)?\s+(?:at|with|for)\s+"
        r"(?P<val>.+)$",
        "functional",
        "work job employer",
    ),
    _p("employer", _HEAD + r"(?:employed\s+(?:at|by)|joined|joins)\s+(?P<val>.+)$", "functional", "work job"),
    # Where one teaches, or "is a <job> at X": an occupation noun (-er, -or, -ist, -ian, or a few others) before
    # "at"/"for", so "is a teacher at Lincoln High" and "teaches at Roosevelt Middle School" read the same slot.
    _p(
        "employer",
        _HEAD + r"(?:teach(?:es|ing)?|taught|lectures?|lectured)\s+(?:\w+\s+)?(?:at|for)\s+(?P<val>.+)$",
        "functional",
        "work job employer",
    ),
    _p(
        "employer",
        _COPULA + r"(?:an?\s+)(?:[a-z-]+\s+){0,2}"
        # Not a job, though it ends like one: these stay "is a ..." facts.
        r"(?!(?:volunteer|member|customer|regular|player|supporter|user|owner|reader|viewer|subscriber|visitor|"
        r"passenger|beginner|lover|fan|donor|neighbor|neighbour|partner|sponsor|collector|follower)\b)"
        r"(?:[a-z-]+(?:er|or|ist|ian)|nurse|chef|cook|clerk|engineer|"
        r"analyst|consultant|manager|intern|developer|barista|architect|pharmacist|surgeon|"
        r"mechanic|designer)\s+(?:at|for|with)\s+(?P<val>.+)$",
        "functional",
        "work job employer",
    ),
    _p(
        "residence",
        _HEAD + r"(?:lives?|lived|living|resides?|resided|moved|moves|relocated|relocates|based)\s+(?:in|to)\s+"
        r"(?P<val>.+)$",
        "functional",
        "live lives moved home based",
    ),
    _p(
        "age",
        _COPULA + r"(?P<val>\d{1,3})(?:\s+years?\s+old|\s*y/?o)?(?:\s+now)?$",
        "functional",
        "years old age",
    ),
    _p("age", _HEAD + r"(?:turned|turns)\s+(?P<val>\d{1,3})\b.*$", "functional", "years old age"),
    _p(
        "allergy",
        _COPULA + r"(?:(?:severely|very|mildly|slightly|a\s+bit|deathly)\s+)?(?:allergic|intolerant)\s+to\s+"
        r"(?P<val>.+)$",
        "never",
        "allergic allergy",
    ),
    _p(
        "eats",
        _HEAD + r"(?:eats?|ate|eating|drinks?|drank|drinking)\s+(?P<val>.+)$",
        "marked",
        "eat eats vegetarian vegan meat",
    ),
    _p(
        "diet",
        _COPULA + r"(?:an?\s+)?(?P<val>vegetarian|vegan|pescatarian|omnivore|flexitarian|carnivore)\b.*$",
        "marked",
        "vegetarian vegan pescatarian eat eats meat",
    ),
    # "User has gone vegan", "User became a vegetarian": a diet taken up is a change.
    _p(
        "diet",
        _HEAD + r"(?:went|gone|became|become|turned)\s+(?:an?\s+)?"
        r"(?P<val>vegetarian|vegan|pescatarian|omnivore|flexitarian|carnivore)\b.*$",
        "marked",
        "vegetarian vegan pescatarian eat eats meat",
    ),
    _p(
        "likes",
        _HEAD + r"(?:loves?|loved|likes?|liked|enjoys?|enjoyed|adores?|adored|prefers?|preferred|"
        r"is\s+into|is\s+obsessed\s+with|is\s+a\s+(?:big\s+|huge\s+)?fan\s+of)\s+(?P<val>.+)$",
        "marked",
        "love loves likes enjoys prefers",
    ),
    _p("dislikes", _HEAD + r"(?:hates?|hated|dislikes?|disliked|can't\s+stand)\s+(?P<val>.+)$", "marked", "hate"),
    _p("vehicle", _HEAD + r"(?:drives?|drove|driving)\s+(?:an?\s+)?(?P<val>.+)$", "marked", "drive drives car"),
    _p(
        "possessive",
        _S + r"'s\s+(?P<attr>[a-z][a-z ]*?)" + _ADV + r"\s+(?:is|are|was)" + _ADV + r"(?:\s+(?:called|named))?"
        r"\s+(?P<val>.+)$",
        "functional",
    ),
    _p("is_a", _COPULA + r"(?:an?\s+)(?P<val>.+)$", "marked"),
    _p("has", _HEAD + r"(?:has|have|had|owns?|owned)\s+(?P<val>.+)$", "never"),
    _p("plays", _HEAD + r"(?:plays?|played|playing)\s+(?P<val>.+)$", "never"),
)
# "User's X is Y" where one can have several X (friends, siblings, hobbies): it changes only when said so.
_MANY = frozenset(
    """
    friend sibling brother sister child kid son daughter cousin colleague coworker neighbor hobby interest
    pet uncle aunt grandparent grandchild nephew niece classmate teammate roommate parent
    """.split()
)


@dataclass(frozen=True)
class Slot:
    """One memory read as (subject, attribute, value); `value_text` keeps the sentence's own casing."""

    subject: str
    attribute: str
    value: frozenset[str]
    value_text: str
    mode: Mode
    negated: bool
    changed: bool = False
    cue_words: str = ""


def _subject(text: str) -> str:
    words = _words(text)
    while words and words[0] in _DETERMINERS:
        words = words[1:]
    joined = " ".join(words)
    return re.sub(r" and family$", "", joined)


def parse_slot(content: str, has_event_time: bool = False, names: Iterable[str] = ()) -> Slot | None:
    """Read `content` (a third-person memory sentence) as a `Slot`, or None when no pattern reads it.

    Args:
        content: e.g. "User now works at NewCorp".
        has_event_time: whether the memory has an event_time; only then is "X is on <date>" read as
            the time of X.
        names: the proper names the memory may be about (its entities and the speakers' names). A
            subject must be one of them, a possessive ("User's sister"), or a noun phrase opened by
            "the"/"a"; otherwise ("It feels like ...", "Feels like ...") there is no slot.
    """
    return _parse_slot(content, has_event_time, frozenset(name.lower() for name in names))


# --- changes of mind said in other words ----------------------------------------------------------
# Retractions and replacements are read as the negated or changed form the slot patterns know, so "User
# stopped playing tennis" negates "User plays tennis" and "User quit their job" retracts the employer. A
# retraction that names no value ("User quit their job", "User and Sam broke up") stands for any value:
# `ANY` is its value text.
ANY = "(any)"
_FILLERS = re.compile(
    r"^(?:it\s+turns\s+out(?:\s+that)?|turns\s+out|actually|honestly|sadly|unfortunately)\s*,?\s+"
    r"|,?\s+(?:after\s+all|sadly|unfortunately|honestly|though|lol|haha|altogether|completely|entirely|for\s+good)$",
    re.I,
)
# What stands before the subject without being part of the fact: an adverbial opener with no name in it ("For
# work User is ...", "After watching a documentary User stopped ...", "These days User ...") or a label before a
# colon ("Big change: User has ..."). Only when a capitalised word (the subject) follows; an opener with a name
# in it ("Since Karim got the job, ...", "When User was ten ...") is left alone.
_OPENER = re.compile(
    r"^(?:(?i:after|before|since|for|during|when|while|because)\s+[a-z][^A-Z,;:]*?"
    r"|(?i:these\s+days|lately|recently|today|this\s+[a-z]+|last\s+[a-z]+|next\s+[a-z]+))\s*,?\s+(?=[A-Z])"
    r"|^[A-Za-z][a-z'-]*(?:\s+[a-z'-]+){0,2}\s*:\s+(?=[A-Z])"
)
# "User is a big meat eater", "a coffee drinker" say what "User eats meat", "User drinks coffee" say; an eater only
# of the foods `_KINDS` knows ("a picky eater" is not a food), a drinker of anything but a manner ("a social drinker").
_EATER = re.compile(
    r"\b(?:is|are)\s+an?\s+(?:(?:big|huge|real|massive|serious|keen|heavy)\s+)?(?P<food>[a-z]+)\s+"
    r"(?P<kind>eater|drinker)\b"
)
_MANNERS = frozenset("heavy light social moderate occasional binge big serious regular".split())
# When, said after the fact ("... last month", "... two weeks ago"), is not part of its value.
_PAST_TIME = re.compile(
    r"\s+(?:last\s+(?:week|month|year|spring|summer|autumn|fall|winter|weekend)|(?:a|one|two|three|a\s+few|"
    r"several|\d+)\s+(?:days?|weeks?|months?|years?)\s+ago|yesterday|recently)$",
    re.I,
)
_E_STEMS = ("v", "k", "c", "z", "hat", "rid", "us", "writ", "bak", "skat", "smok", "danc", "mak", "tak")
_STOPPED = re.compile(
    r"\b(?:stopped|stops|quit|quits|gave\s+up|gives\s+up|has\s+given\s+up)\s+(?P<verb>[a-z]+)ing\b", re.I
)
_RETRACTIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.I), replacement)
    for pattern, replacement in (
        # "User quit their job at Farfetch", "User left Farfetch", "User was laid off from Acme"
        (
            r"^(?P<s>.+?)\s+(?:quit|left|resigned\s+from|was\s+(?:laid\s+off|fired)\s+from)\s+"
            r"(?:(?:their|his|her|[\w.-]+'s)\s+)?(?:job|position|role|work)\s+(?:at|with|for)\s+(?P<v>.+)$",
            r"\g<s> no longer works at \g<v>",
        ),
        (
            r"^(?P<s>.+?)\s+(?:quit|left|lost|resigned\s+from)\s+(?:(?:their|his|her|[\w.-]+'s)\s+)?"
            r"(?:job|position|role)$",
            rf"\g<s> no longer works at {ANY}",
        ),
        (r"^(?P<s>.+?)\s+(?:was\s+)?(?:laid\s+off|fired)$", rf"\g<s> no longer works at {ANY}"),
        (r"^(?P<s>.+?)\s+moved\s+(?:out\s+of|away\s+from)\s+(?P<v>.+)$", r"\g<s> no longer lives in \g<v>"),
        (
            r"^(?P<s>.+?)\s+(?:broke\s+up|split\s+up|separated|divorced)\s+(?:with|from)\s+(?P<v>.+)$",
            r"\g<s> no longer dating \g<v>",
        ),
        (r"^(?P<s>.+?)\s+divorced\s+(?P<v>[A-Z].*)$", r"\g<s> no longer dating \g<v>"),
        (
            r"^(?P<s>.+?)\s+and\s+family\s+(?:broke\s+up|split\s+up|separated|divorced|got\s+divorced)\b.*$",
            rf"\g<s> no longer dating {ANY}",
        ),
        (
            r"^(?P<s>.+?)\s+and\s+(?:(?:their|his|her|[\w.-]+'s)\s+\w+\s+)?(?P<v>[A-Z][\w-]*|family)\s+"
            r"(?:broke\s+up|split\s+up|separated|divorced|got\s+divorced)\b.*$",
            r"\g<s> no longer dating \g<v>",
        ),
        (r"^(?P<s>.+?)\s+(?:is|are)\s+(?:now\s+)?single\b.*$", rf"\g<s> no longer dating {ANY}"),
        # "User gave up coffee", "User has cut out alcohol": what one ate or drank, retracted (a verb in -ing is
        # `_STOPPED`'s; a name is not food).
        (
            r"^(?P<s>.+?)(?:\s+(?:has|have))?\s+(?:gave\s+up|given\s+up|cut\s+out|quit)\s+"
            r"(?P<v>(?-i:(?![a-z]+ing\b)[a-z][a-z-]*(?:\s+[a-z-]+)?))"
            # when, as the extractor writes it: "in November 2026", "on 2026-11-03", "in the week of 2026-11-23"
            r"(?:\s+(?:in|on|since)\s+(?:the\s+week\s+of\s+)?[A-Z0-9][\w -]*)?$",
            r"\g<s> no longer eats \g<v>",
        ),
        # "Oskar and User called off the engagement", "User broke off the engagement with Oskar"
        (
            r"^(?P<v>[A-Z][\w-]*)\s+and\s+(?P<s>[A-Z][\w-]*)\s+(?:called|broke)\s+off\s+(?:the|their)\s+engagement\b.*$",
            r"\g<s> no longer dating \g<v>",
        ),
        (
            r"^(?P<s>.+?)\s+(?:called|broke)\s+off\s+(?:the|their|his|her)\s+engagement(?:\s+(?:with|to)\s+(?P<v>.+))?$",
            rf"\g<s> no longer dating {ANY}",
        ),
        # "Tom and User broke up": the other one is named first.
        (
            r"^(?P<v>[A-Z][\w-]*)\s+and\s+(?P<s>[A-Z][\w-]*)\s+(?:broke\s+up|split\s+up|separated|divorced|"
            r"got\s+divorced)\b.*$",
            r"\g<s> no longer dating \g<v>",
        ),
    )
)


_NOT_ANYMORE = re.compile(r"\b(?:does\s+not|doesn't|do\s+not|don't)\s+(\w+)(?:\s+(.+?))?\s+any\s*more$", re.I)
_BARE_RETRACTION = re.compile(r"^\S+(?:'s\s+\w+)?\s+no\s+longer\s+[a-z]+$", re.I)
_RETRACTED_VERB = re.compile(r"^(?P<s>.+?)\s+no\s+longer\s+(?P<v>[a-z]+?)(?:es|s)?(?:\s+(?P<o>.+))?$", re.I)


def _retracts_verb(new: Fact, old: Fact) -> bool:
    """Whether `new` retracts what `old` states with the same verb: "User no longer drives" or "User no
    longer learns German" against "User drives a Volvo" or "User is learning German on Duolingo": the same
    subject, the same verb (any of -s, -es, -ing, after "is"), and every word of the retracted object in
    the old sentence. Only a positive `old` is retracted."""
    retraction = _RETRACTED_VERB.match(canonical(new.content))
    stated = canonical(old.content)
    if retraction is None or _NEGATION.search(stated) is not None:
        return False
    verb = re.escape(retraction["v"].lower())
    match = re.match(
        rf"^{re.escape(retraction['s'])}\s+(?:is\s+|are\s+)?{verb}(?:s|es|ing)?\b(?P<rest>.*)$", stated, re.I
    )
    if match is None:
        return False
    wanted = retraction["o"]
    if wanted is None or wanted == ANY:
        return True
    words = _content_tokens(wanted)
    return bool(words) and words <= _content_tokens(match["rest"])


def _eats(match: re.Match[str]) -> str:
    food = match["food"]
    if match["kind"] == "eater":
        known = food in _KINDS or any(food in kind for kind in _KINDS.values())
        return f"eats {food}" if known else match[0]
    return f"drinks {food}" if food not in _MANNERS else match[0]


def _stem_ing(match: re.Match[str]) -> str:
    base = match["verb"].lower()
    if len(base) > 2 and base[-1] == base[-2] and base[-1] not in "aeiouls":
        base = base[:-1]  # running → run, swimming → swim
    elif base.endswith(_E_STEMS):
        base += "e"  # driving → drive, smoking → smoke
    plural = base + ("es" if base.endswith(("s", "sh", "ch", "x", "o")) else "s")
    return f"no longer {plural}"


@functools.lru_cache(maxsize=8192)  # pure, and read for the same stored memories message after message
def canonical(content: str) -> str:
    """`content` with fillers dropped and a retraction in the negated form the slot patterns read:
    "It turns out User is not allergic to cats after all" → "User is not allergic to cats"; "User stopped
    eating meat" → "User no longer eats meat"; "User quit their job" → "User no longer works at (any)". Only the
    first clause before ";" is read, without an opener before its subject ("For work User is a nurse" → "User is a
    nurse"), and "is a meat eater" reads "eats meat"."""
    # A second clause after ";" is another statement; the slot is read from the first.
    text = content.split(";")[0].strip().rstrip(".!")
    text = _OPENER.sub("", text)
    previous = None
    while previous != text:
        previous, text = text, _FILLERS.sub("", text).strip()
    text = _EATER.sub(_eats, text)
    text = _PAST_TIME.sub("", text)
    text = _STOPPED.sub(_stem_ing, text)
    text = _NOT_ANYMORE.sub(lambda m: f"no longer {m[1]}s" + (f" {m[2]}" if m[2] else ""), text)
    for pattern, replacement in _RETRACTIONS:
        rewritten = pattern.sub(replacement, text)
        if rewritten != text:
            return rewritten
    # "User no longer drives", "User doesn't smoke anymore": the verb retracted with whatever it took.
    return _BARE_RETRACTION.sub(rf"\g<0> {ANY}", text)


# A job with its workplace ("works as a product designer at Farfetch") is also a slot of the employer, so a
# new employer ("now works at Stripe") updates it.
_AT_WORKPLACE = re.compile(r"^(?P<job>.+?)\s+(?:at|for|with)\s+(?P<place>.+)$", re.I)


def parse_slots(content: str, has_event_time: bool = False, names: Iterable[str] = ()) -> tuple[Slot, ...]:
    """Every slot `content` holds: the one `parse_slot` reads, then any it implies (an occupation at a
    workplace is also an employer). Empty when no pattern reads it."""
    slot = parse_slot(content, has_event_time, names)
    if slot is None:
        return ()
    if slot.attribute == "partner" and slot.negated and len(slot.value_text.split()) == 1 and slot.value_text != ANY:
        # "Nina and User broke up" ends the relationship for both of them, whoever is named first.
        mirrored = dataclasses.replace(
            slot, subject=slot.value_text.lower(), value=frozenset([slot.subject]), value_text=slot.subject
        )
        return slot, mirrored
    if slot.attribute == "occupation":
        place = _AT_WORKPLACE.match(slot.value_text)
        if place is not None:
            value = _content_tokens(place["place"], drop=slot.subject.split())
            employer = dataclasses.replace(
                slot, attribute="employer", value=value, value_text=place["place"], cue_words="work job employer"
            )
            return slot, employer
    return (slot,)


# Why cached: reconciliation reads the new memory against each of up to MAX_CANDIDATES stored ones, and the
# same stored memories come back as candidates message after message; its regexes were most of a
# store_memory call's Python time (benchmarks/scale.py). Slots are frozen, so sharing them is safe.
@functools.lru_cache(maxsize=4096)
def _parse_slot(content: str, has_event_time: bool, known: frozenset[str]) -> Slot | None:
    text = canonical(content)
    for pattern in _PATTERNS:
        if pattern.needs_event_time and not has_event_time:
            continue
        match = pattern.regex.match(text)
        if match is None:
            continue
        subject = _subject(match["subj"])
        # A gerund ("Losing Jon's job was hard") or a long phrase is an event or an opinion, not a thing
        # that holds one value; reading it as a slot would let an opinion supersede another.
        if not subject or subject.split()[0].endswith("ing") or len(subject.split()) > 5:
            continue
        raw = match["subj"].strip()
        if not (
            raw.split()[0].lower() in ("the", "a", "an")
            or "'s" in raw
            or subject in known
            or subject.split()[-1] in known
        ):
            continue
        attribute = pattern.attribute
        mode = pattern.mode
        if attribute == "possessive":
            attribute = " ".join(_words(match["attr"]))
            if _stem(attribute.split()[-1]) in _MANY or attribute.endswith("s"):
                mode = "marked"
        value_text = match["val"].strip()
        value = _content_tokens(value_text, drop=subject.split())
        negated = match["neg"] is not None if "neg" in pattern.regex.groupindex else False
        # A change is said before the value ("Biggie now loves ...", "User is now dating ...") or at the
        # very end ("User is vegan now"); "new" inside the value ("something new") says nothing.
        changed = bool(_CHANGE_MARKER.search(text, 0, match.start("val")) or _TRAILING_CHANGE.search(text))
        return Slot(subject, attribute, value, value_text, mode, negated, changed, pattern.cue_words)
    return None


# --- classification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """What classification needs to know of a memory, new or stored."""

    content: str
    entities: tuple[str, ...] = ()
    event_date: str | None = None  # YYYY-MM-DD of the event_time, when there is one

    @classmethod
    def of_extracted(cls, memory: ExtractedMemory) -> Fact:
        date = memory.event_time.date().isoformat() if memory.event_time else None
        return cls(memory.content, tuple(memory.entities), date)

    @classmethod
    def of_memory(cls, memory: Memory) -> Fact:
        date = memory.event_time[:10] if memory.event_time else None
        return cls(memory.content, tuple(memory.entities), date)

    def slot(self, speakers: Iterable[str]) -> Slot | None:
        """This memory read as a `Slot` (see `parse_slot`), its entities and `speakers` as the known names."""
        return parse_slot(self.content, self.event_date is not None, [*self.entities, *speakers])

    def slots(self, speakers: Iterable[str]) -> tuple[Slot, ...]:
        """Every slot this memory holds (see `parse_slots`)."""
        return parse_slots(self.content, self.event_date is not None, [*self.entities, *speakers])


@dataclass(frozen=True)
class Verdict:
    """How a new memory relates to a stored one, and a short reason (for logs and tests)."""

    kind: ConflictKind
    reason: str


# Kinds a retraction may name for what an old fact names by example: "User no longer eats meat" retracts
# "User eats steak". This project's own short lists of common words.
_KINDS: dict[str, frozenset[str]] = {
    "meat": frozenset(
        "meat steak beef pork chicken bacon ham lamb burger sausage veal turkey rib salami pepperoni duck".split()
    ),
    "fish": frozenset("fish salmon tuna cod sardine seafood shrimp prawn sushi".split()),
    "dairy": frozenset("dairy milk cheese yogurt yoghurt butter cream".split()),
    "alcohol": frozenset("alcohol beer wine whisky whiskey vodka gin rum cocktail".split()),
    "sugar": frozenset("sugar sweet candy chocolate dessert soda".split()),
}
# A diet rules out what it does not eat: "User is vegetarian" retracts "User eats steak".
_DIET_EXCLUDES = {
    "vegetarian": ("meat", "fish"),
    "vegan": ("meat", "fish", "dairy"),
    "pescatarian": ("meat",),
}


def _kind_covers(general: frozenset[str], specific: frozenset[str]) -> bool:
    """Whether a value names a kind ("meat") that the other value is an instance of ("steak ...")."""
    return any(word in _KINDS and _KINDS[word] & specific for word in general)


def _diet_contradicts(new: Slot, old: Slot) -> bool:
    """A new diet rules out what the user was said to eat; eating it again ("now eats fish") ends the diet."""
    if new.negated or old.negated:
        return False
    if new.attribute == "diet" and old.attribute == "eats":
        diet, eaten = new, old
    elif new.attribute == "eats" and old.attribute == "diet" and new.changed:
        diet, eaten = old, new
    else:
        return False
    excluded = {kind for name in diet.value for kind in _DIET_EXCLUDES.get(name, ())}
    return any(_KINDS[kind] & eaten.value or kind in eaten.value for kind in excluded)


_NEGATION = re.compile(r"\b(?:not|no\s+longer|never|anymore|any\s+more)\b|n't\b", re.I)


def _negated(content: str) -> bool:
    return _NEGATION.search(canonical(content)) is not None


def _values_match(new: Slot, old: Slot, new_fact: Fact, old_fact: Fact) -> bool:
    if new.attribute == "when":
        return new_fact.event_date == old_fact.event_date
    if new.negated != old.negated:
        # A retraction of any value ("User quit their job") or of a kind ("meat" for "steak").
        retraction, fact = (new, old) if new.negated else (old, new)
        if retraction.value_text == ANY:
            return True
        if _kind_covers(retraction.value, fact.value):
            return True
    if new.value == old.value:
        return True
    if new.value and old.value and (new.value <= old.value or old.value <= new.value):
        return True
    return same_words(new.value, old.value)


def _subjects_match(a: str, b: str, speakers: frozenset[str]) -> bool:
    if a == b:
        return True
    # "User's sister Maria" and "Maria" are the same person; "User" is never matched this way.
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return " " not in short and short not in speakers and long.endswith(" " + short)


def _named(subject: str, fact: Fact, speakers: frozenset[str]) -> str | None:
    """The subject's proper name when it is one of the memory's entities (and not a speaker), else None."""
    last = subject.split()[-1] if subject else ""
    for entity in fact.entities:
        name = entity.lower()
        if name not in speakers and (name == subject or name == last):
            return name
    return None


def _mentions(fact: Fact, name: str) -> bool:
    return name in {entity.lower() for entity in fact.entities} or name in _words(fact.content)


def classify(new: Fact, old: Fact, speakers: Iterable[str] = ("user",)) -> Verdict:
    """Classify `new` against the stored `old`: duplicate, update, complement or unrelated.

    Args:
        new: the memory about to be stored.
        old: an active memory of the same user.
        speakers: the names memories use for the people speaking ("User", "Caroline"); they are
            subjects of most memories, so sharing one is not a link between two memories.

    Returns:
        A `Verdict`. Rules, in order: the same normalised sentence is a duplicate; two memories that
        both read as slots compare subject, attribute and value (see the module docstring); otherwise
        the same content words are a duplicate, a named subject of one mentioned by the other is a
        complement, and anything else is unrelated.
    """
    names = frozenset(speaker.lower() for speaker in speakers)
    if new.event_date != old.event_date and new.event_date is not None and old.event_date is not None:
        same_sentence = False
    else:
        same_sentence = _normal_sentence(new.content) == _normal_sentence(old.content)
    if same_sentence:
        return Verdict("duplicate", "same sentence")
    new_slots, old_slots = new.slots(names), old.slots(names)
    for candidate_new in new_slots:
        for candidate_old in old_slots:
            if _subjects_match(candidate_new.subject, candidate_old.subject, names):
                if _diet_contradicts(candidate_new, candidate_old):
                    return Verdict("update", f"{candidate_new.value_text} rules out {candidate_old.value_text}")
    # The first pair of slots about the same subject and attribute decides; else the primary slots.
    pair = next(
        (
            (a, b)
            for a in new_slots
            for b in old_slots
            if a.attribute == b.attribute and _subjects_match(a.subject, b.subject, names)
        ),
        None,
    )
    new_slot, old_slot = pair or (new_slots[0] if new_slots else None, old_slots[0] if old_slots else None)
    if new_slot is not None and old_slot is not None:
        same_subject = _subjects_match(new_slot.subject, old_slot.subject, names)
        if same_subject and new_slot.attribute == old_slot.attribute:
            dates_differ = new.event_date is not None and old.event_date not in (None, new.event_date)
            same_value = _values_match(new_slot, old_slot, new, old) and not dates_differ
            if same_value and new_slot.negated == old_slot.negated:
                return Verdict("duplicate", f"same {new_slot.attribute} of {new_slot.subject}")
            if same_value:
                return Verdict("update", f"{new_slot.attribute} of {new_slot.subject} negated")
            if new_slot.negated or old_slot.negated:
                # A retraction only retracts what it names: "no longer eats meat" says nothing of fish.
                return Verdict("unrelated", f"another {new_slot.attribute} of {new_slot.subject} negated")
            if new_slot.mode == "functional":
                return Verdict("update", f"new {new_slot.attribute} of {new_slot.subject}")
            if new_slot.mode == "marked" and new_slot.changed:
                return Verdict("update", f"{new_slot.attribute} of {new_slot.subject} changed")
            return Verdict("unrelated", f"another {new_slot.attribute} of {new_slot.subject}")
        name = _named(new_slot.subject, new, names)
        if same_subject and name is not None:
            return Verdict("complement", f"more about {name}")
        if name is not None and _mentions(old, name):
            return Verdict("complement", f"more about {name}")
        old_name = _named(old_slot.subject, old, names)
        if old_name is not None and _mentions(new, old_name):
            return Verdict("complement", f"more about {old_name}")
        return Verdict("unrelated", "different subject or attribute")
    if _retracts_verb(new, old):
        return Verdict("update", "the verb retracted")
    new_words = _content_tokens(canonical(new.content), drop=names)
    old_words = _content_tokens(canonical(old.content), drop=names)
    dates_differ = new.event_date is not None and old.event_date is not None and new.event_date != old.event_date
    if not dates_differ and same_words(new_words, old_words):
        if _negated(new.content) != _negated(old.content):
            return Verdict("update", "the same words negated")
        return Verdict("duplicate", "same words")
    for subject_fact, other in ((new, old), (old, new)):
        slot = subject_fact.slot(names)
        if slot is not None:
            name = _named(slot.subject, subject_fact, names)
            if name is not None and _mentions(other, name):
                return Verdict("complement", f"more about {name}")
    return Verdict("unrelated", "no shared slot")


# --- candidates ----------------------------------------------------------------------------------


def candidate_query(memory: ExtractedMemory, speakers: Iterable[str] = ("user",)) -> str | None:
    """The FTS5 `MATCH` expression that finds the stored memories `memory` may duplicate or update.

    Its content words without the speakers' names and change markers, its entities, and its slot's cue
    words, quoted and OR-ed by `search.build_match_expression`; None when nothing is left.
    """
    names = {speaker.lower() for speaker in speakers}
    slot = parse_slot(memory.content, memory.event_time is not None, [*memory.entities, *names])
    words = [
        word
        for word in _WORD.findall(memory.content.lower())
        if word.split("'")[0] not in names and word not in _MARKERS and word not in search.STOP_WORDS
    ]
    # The index does not know that "colour" is "color": both spellings are looked for.
    words += [_SPELLING[word] for word in words if word in _SPELLING]
    words += [british for british, american in _SPELLING.items() if american in words]
    terms = [*words, *(entity for entity in memory.entities if entity.lower() not in names)]
    if slot is not None:
        terms += slot.cue_words.split()
    return search.build_match_expression(" ".join(word.replace("'s", "") for word in terms))


# --- merging -------------------------------------------------------------------------------------

_CALLED = r"\b(?P<art>an?)\s+(?P<noun>[A-Za-z-]+)\s+(?:called|named)\s+{name}\b"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def merge_content(new: ExtractedMemory, old: Memory, kind: ConflictKind) -> str:
    """One sentence that says what `old` and `new` say together.

    - duplicate: the longer of the two (it carries more detail);
    - update: the new sentence, with the old value in brackets ("User now works at NewCorp (previously:
      TechCorp)");
    - complement: "X is a/an N" folded into "a <noun> called X" ("User has a dog called Biggie" + "Biggie
      is a beagle" → "User has a beagle called Biggie"); otherwise both sentences joined by "; ".
    """
    if kind == "duplicate":
        return new.content if len(new.content.split()) > len(old.content.split()) else old.content
    names = [*new.entities, *old.entities, *([old.speaker] if old.speaker else [])]
    if kind == "update":
        old_slot = parse_slot(old.content, old.event_time is not None, names)
        previous = old_slot.value_text if old_slot is not None else old.content
        return f"{new.content} (previously: {previous})"
    for describing, described in ((new.content, old.content), (old.content, new.content)):
        slot = parse_slot(describing, False, names)
        if slot is None or slot.attribute != "is_a" or slot.negated or len(slot.value_text.split()) > 3:
            continue
        name = re.escape(slot.subject)
        pattern = re.compile(_CALLED.format(name=name), re.I)
        match = pattern.search(described)
        if match:
            noun = slot.value_text
            return (
                described[: match.start()]
                + f"{_article(noun)} {noun} called "
                + described[match.end() - len(slot.subject) :]
            )
    return f"{old.content}; {new.content}"


def _merged(new: ExtractedMemory, old: Memory, kind: ConflictKind) -> ExtractedMemory:
    content = merge_content(new, old, kind)
    entities = list(dict.fromkeys([*old.entities, *new.entities]))
    tags = list(dict.fromkeys([*old.tags, *new.tags]))
    event_time = new.event_time
    if event_time is None and old.event_time is not None:
        event_time = datetime.fromisoformat(old.event_time)
    category = new.category if kind == "update" else old.category
    return ExtractedMemory(
        content=content,
        category=category,
        confidence=max(new.confidence, old.confidence),
        entities=entities,
        tags=tags,
        event_time=event_time,
    )


# --- resolution ----------------------------------------------------------------------------------


@dataclass
class Resolution:
    """What reconciliation did with one new memory: the memory to report, the action and the ids involved."""

    memory: Memory
    action: Action
    conflict: ConflictKind | None = None
    related_memory_ids: list[str] = field(default_factory=list[str])
    supersedes: list[str] = field(default_factory=list[str])


@dataclass(frozen=True)
class Candidate:
    """A stored memory and how the new one relates to it."""

    memory: Memory
    verdict: Verdict


async def find_candidates(
    store: Store,
    db: aiosqlite.Connection,
    user_id: str,
    memory: ExtractedMemory,
    speakers: Sequence[str],
    judged: Mapping[str, Verdict] | None = None,
    neighbours: Sequence[str] = (),
    prefetched: Sequence[sqlite3.Row] | None = None,
) -> list[Candidate]:
    """The user's active memories that `memory` duplicates, updates or complements, best match first.

    Candidates are the FTS matches of `candidate_query`, then the memories `neighbours` (ids of the user's
    memories nearest in meaning, found by the caller; those no longer active are skipped). `judged` maps a
    stored memory's id to a verdict decided beforehand (by `judge_unreadable_pairs`); it replaces the rules'
    verdict for that memory. `prefetched`: the FTS matches already read in this transaction, with nothing
    written since (`Store.log_message(candidates=...)`), instead of reading them again.
    """
    if prefetched is not None:
        rows = list(prefetched)
    else:
        match = candidate_query(memory, speakers)
        rows = [] if match is None else await store.candidate_rows(db, user_id, match, limit=MAX_CANDIDATES)
    new = Fact.of_extracted(memory)
    out: list[Candidate] = []
    # Why rows: most candidates are unrelated, and a `Memory` of each was a fifth of reconciliation's time;
    # one is built only for the candidates kept (the same verdicts, from the same columns).
    for row in rows:
        speaker = row["speaker"]
        names = [*speakers, speaker] if speaker else list(speakers)
        event_time = row["event_time"]
        old_fact = Fact(row["content"], tuple(json.loads(row["entities"])), event_time[:10] if event_time else None)
        verdict = (judged or {}).get(row["memory_id"]) or classify(new, old_fact, names)
        if verdict.kind != "unrelated":
            out.append(Candidate(store.row_memory(row), verdict))
    known = {str(row["memory_id"]) for row in rows}
    for old in await _neighbour_memories(store, db, user_id, neighbours, known):
        names = [*speakers, old.speaker] if old.speaker else list(speakers)
        verdict = (judged or {}).get(old.memory_id) or classify(new, Fact.of_memory(old), names)
        if verdict.kind != "unrelated":
            out.append(Candidate(old, verdict))
    return out


# Vector neighbours as candidates (issue 9, item 6): the memories whose meaning is nearest the new one's, found by
# the caller (the service holds the vector index) before the transaction. "User now teaches at Roosevelt Middle
# School" shares no indexed word with "User is a teacher at Lincoln High" (cosine 0.59); the classification
# still decides, so a neighbour it does not read as the same slot is never superseded. The floor and count bound
# the extra classifications (docs/conflicts.md; measured with benchmarks/conflict_eval.py).
NEIGHBOUR_CANDIDATES = 5
NEIGHBOUR_FLOOR = 0.5


async def _neighbour_memories(
    store: Store, db: aiosqlite.Connection, user_id: str, memory_ids: Sequence[str], known: set[str]
) -> list[Memory]:
    """The memories `memory_ids` that are still active (read on `db`, the open transaction) and not in `known`."""
    out: list[Memory] = []
    for memory_id in memory_ids:
        if memory_id in known:
            continue
        try:
            out.append(await store.get_memory_in(db, user_id, memory_id))
        except MemoryNotFound:
            continue  # superseded or deleted since the neighbours were found
    return out


def said_at(memory: Memory) -> str:
    """When `memory` was said (UTC ISO-8601): its `occurred_at`, else, for memories stored before that was
    recorded, its `created_at`."""
    return memory.occurred_at or memory.created_at


def said_before(new: NewMemory, old: Memory) -> bool:
    """Whether the new memory was said strictly before the stored `old` one (time order, docs/conflicts.md).

    A new memory without `occurred_at` is said now, so never before."""
    return new.occurred_at is not None and _utc(new.occurred_at) < _utc(said_at(old))


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _store_as_superseded(
    store: Store, db: aiosqlite.Connection, new: NewMemory, later: Memory, related: list[str]
) -> Resolution:
    """Keep a memory said before the active one it conflicts with as `superseded` by it (time order).

    Why: back-filling an old conversation must not make its stale facts current; the later fact stays
    active, and the older one is still there, as history, linked from it.
    """
    created = await store.insert_memory(db, new)
    older = await store.set_status(
        db, new.user_id, created.memory_id, "superseded", expected=("active",), source_message=new.source_message
    )
    await store.add_link(db, new.user_id, later.memory_id, created.memory_id, "supersedes")
    for other in related:
        await store.add_link(db, new.user_id, created.memory_id, other, "related")
    memory = older.model_copy(update={"status": "superseded"})
    return Resolution(memory, "stored_as_superseded", "update", [later.memory_id, *related])


async def reconcile(
    store: Store,
    db: aiosqlite.Connection,
    new: NewMemory,
    strategy: ResolutionStrategy,
    speakers: Sequence[str],
    judged: Mapping[str, Verdict] | None = None,
    neighbours: Sequence[str] = (),
    prefetched: Sequence[sqlite3.Row] | None = None,
) -> Resolution:
    """Store `new` according to `strategy` and what the user already has, inside the open transaction `db`.

    | kind \\ strategy | auto | update | merge | version | keep_both | skip |
    | duplicate | skip | skip | merge | skip | create | skip |
    | update | version | rewrite old | merge | version | create, linked | skip |
    | complement | create, linked | create, linked | merge | create, linked | create, linked | create, linked |

    Time order comes first: under every strategy but keep_both and skip, a new memory said (by
    `occurred_at`) before the active memory it updates is stored as `superseded` by it, linked from it
    (`action="stored_as_superseded"`), and the later memory stays current.

    "skip" returns the existing memory with `action="skipped"`; "version" creates the new memory, marks
    every memory it updates `superseded` and links them to it; "rewrite old" rewrites the old memory in
    place (history keeps the old text); "merge" rewrites the old memory with `merge_content`. `judged` and
    `neighbours` (memory ids nearest in meaning) and `prefetched` (its FTS candidates, already read): see
    `find_candidates`.

    Raises:
        sqlite3.Error / MemoryNotFound: a write failed; the caller's transaction then rolls back.
    """
    user = new.user_id
    candidates = await find_candidates(store, db, user, new.extracted, speakers, judged, neighbours, prefetched)
    duplicates = [c for c in candidates if c.verdict.kind == "duplicate"]
    updates = [c for c in candidates if c.verdict.kind == "update"]
    complements = [c for c in candidates if c.verdict.kind == "complement"]
    related = [c.memory.memory_id for c in complements]

    if duplicates and strategy != "keep_both":
        target = duplicates[0].memory
        if strategy == "merge":
            merged = _merged(new.extracted, target, "duplicate")
            if merged.content != target.content or set(merged.entities) != set(target.entities):
                memory = await store.rewrite_memory(db, user, target.memory_id, merged, "merged", new.source_message)
                return Resolution(memory, "merged", "duplicate", [target.memory_id])
        return Resolution(target, "skipped", "duplicate", [target.memory_id])

    if updates and strategy not in ("keep_both", "skip"):
        later = [c.memory for c in updates if said_before(new, c.memory)]
        if later:
            return await _store_as_superseded(store, db, new, later[0], related)

    if updates and strategy != "keep_both":
        target = updates[0].memory
        if strategy == "skip":
            return Resolution(target, "skipped", "update", [target.memory_id])
        if strategy == "update":
            memory = await store.rewrite_memory(
                db, user, target.memory_id, new.extracted, "updated", new.source_message, provenance=new
            )
            return Resolution(memory, "updated", "update", [target.memory_id])
        if strategy == "merge":
            merged = _merged(new.extracted, target, "update")
            memory = await store.rewrite_memory(db, user, target.memory_id, merged, "merged", new.source_message)
            return Resolution(memory, "merged", "update", [target.memory_id])
        # auto and version: a new version; every memory it updates steps aside, linked to it.
        created = await store.insert_memory(db, new)
        superseded: list[str] = []
        for candidate in updates:
            old_id = candidate.memory.memory_id
            await store.set_status(
                db, user, old_id, "superseded", expected=("active",), source_message=new.source_message
            )
            await store.add_link(db, user, created.memory_id, old_id, "supersedes")
            superseded.append(old_id)
        for other in related:
            await store.add_link(db, user, created.memory_id, other, "related")
        return Resolution(created, "superseded_previous", "update", [*superseded, *related], superseded)

    if complements and strategy == "merge" and not duplicates and not updates:
        target = complements[0].memory
        merged = _merged(new.extracted, target, "complement")
        memory = await store.rewrite_memory(db, user, target.memory_id, merged, "merged", new.source_message)
        return Resolution(memory, "merged", "complement", [target.memory_id])

    linked = [c.memory.memory_id for c in (*duplicates, *updates)] + related
    created = await store.insert_memory(db, new, related=linked)
    kind: ConflictKind | None = None
    if duplicates:
        kind = "duplicate"
    elif updates:
        kind = "update"
    elif complements:
        kind = "complement"
    return Resolution(created, "created", kind, linked)


# --- model-assisted classification (issue 13) ------------------------------------------------------

# A pair the rules cannot read is sent to the model only when the two share at least this many content words
# (the FTS candidate query already found them by shared words; one shared word is mostly the topic), and at most
# MAX_JUDGED pairs per new memory, best candidates first: each judgment is a model call of about a second.
JUDGE_MIN_SHARED_WORDS = 2
MAX_JUDGED = 2


class PairJudge(Protocol):
    """Something that says how a new memory relates to a stored one (extract/judge.ModelJudge)."""

    name: str

    async def judge(self, new: str, old: str) -> tuple[ConflictKind | Literal["unrelated"], str] | None:
        """The relation and a reason, or None when it cannot say (the rules' answer then stands)."""
        ...


def needs_judgment(new: Fact, old: Fact, verdict: Verdict, speakers: Iterable[str]) -> bool:
    """Whether the rules could not classify the pair (no slot reads both) though they share content words."""
    if verdict.kind != "unrelated" or verdict.reason != "no shared slot":
        return False
    names = [speaker.lower() for speaker in speakers]
    shared = _content_tokens(new.content, drop=names) & _content_tokens(old.content, drop=names)
    return len(shared) >= JUDGE_MIN_SHARED_WORDS


async def judge_unreadable_pairs(
    store: Store,
    user_id: str,
    memory: ExtractedMemory,
    speakers: Sequence[str],
    judge: PairJudge,
    exclude: Iterable[str] = (),
) -> dict[str, Verdict]:
    """Ask `judge` about the candidate pairs of `memory` the rules cannot classify (see `needs_judgment`).

    Reads the candidates in a short transaction, then asks the model outside it (a model call must never
    hold the write lock). Returns the stored memory id -> the model's verdict (reason prefixed "model: "),
    for `reconcile(judged=...)`; pairs the model could not judge are left out, so the rules' answer stands.
    """
    match = candidate_query(memory, speakers)
    if match is None:
        return {}
    skipped = set(exclude)
    async with store.transaction() as db:
        hits = await store.find_candidates(db, user_id, match, limit=MAX_CANDIDATES)
    new = Fact.of_extracted(memory)
    pairs: list[Memory] = []
    for hit in hits:
        if hit.memory.memory_id in skipped:
            continue
        names = [*speakers, hit.memory.speaker] if hit.memory.speaker else list(speakers)
        old = Fact.of_memory(hit.memory)
        if needs_judgment(new, old, classify(new, old, names), names):
            pairs.append(hit.memory)
    verdicts: dict[str, Verdict] = {}
    for old_memory in pairs[:MAX_JUDGED]:
        answer = await judge.judge(memory.content, old_memory.content)
        if answer is not None:
            kind, reason = answer
            verdicts[old_memory.memory_id] = Verdict(kind, f"model: {reason}")
    return verdicts
