"""Turning user text into a safe FTS5 query. (Ranking is computed in SQL: `store.Ranking`, docs/search.md.)

User text never reaches `MATCH` raw. It is split into words the way FTS5's `unicode61` tokenizer
splits them (runs of letters and digits; everything else separates; the text is not normalised, because
the index is not either), stop words and question words
are dropped, and each word is double-quoted, so `"`, `*`, `NEAR(`, `AND`, `OR`, `NOT`, `-` and `:` are
plain text. Two forms are kept on purpose: a `"quoted phrase"` stays a phrase, and a word with a
trailing `*` becomes a prefix query. The terms are joined with `OR`, so a memory that lacks one word
can still rank (bm25 rewards the memories that have more of them).

FTS5 query syntax: https://www.sqlite.org/fts5.html#full_text_query_syntax
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.models import Category, Memory
from harmonia_mcp.store import Ranking

# Letters and digits, as unicode61 treats them as token characters; "_" is a separator there. Characters that
# Unicode assigned after 6.1 (the tables unicode61 uses) may differ; at worst such a word is not found.
_WORD = re.compile(r"[^\W_]+(?:\*)?", re.UNICODE)
_PHRASE = re.compile(r'"([^"]*)"')

STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her
    here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself yourselves
    """.split()
)


# Bounds on one search query (issue 12): FTS5's work grows with every term (each is a posting-list walk) and
# far more with every prefix term (each expands to every indexed word that starts with it). A 50,000-word
# query took 6 s and 676 two-letter prefixes 8.5 s; a question an assistant sends has a few dozen words.
MAX_QUERY_CHARS = 2000
MAX_QUERY_TERMS = 32
MAX_PREFIX_TERMS = 4
MIN_PREFIX_CHARS = 2


def check_query(query: str) -> None:
    """Refuse a search query beyond the documented bounds (docs/tools.md), before any work is done.

    Counts what `build_match_expression` would search: distinct words outside phrases (stop words
    included, since they are searched when nothing else is left), each phrase's words, and `word*` prefixes.

    Raises:
        InvalidInput: more than `MAX_QUERY_CHARS` characters, more than `MAX_QUERY_TERMS` terms, more than
            `MAX_PREFIX_TERMS` prefix terms, or a prefix shorter than `MIN_PREFIX_CHARS` characters.
    """
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(
            f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}: search for the few words that matter"
        )
    phrase_words = [word for match in _PHRASE.finditer(query) for word in _words(match.group(1))]
    tokens = {token.lower() for token in _words(_PHRASE.sub(" ", query))}
    terms = len(phrase_words) + len(tokens)
    if terms > MAX_QUERY_TERMS:
        raise InvalidInput(
            f"query has {terms} words; the limit is {MAX_QUERY_TERMS}: search for the few words that matter"
        )
    prefixes = [token for token in tokens if token.endswith("*")]
    if len(prefixes) > MAX_PREFIX_TERMS:
        raise InvalidInput(f"query has {len(prefixes)} prefix terms (word*); the limit is {MAX_PREFIX_TERMS}")
    short = sorted(token for token in prefixes if len(token) - 1 < MIN_PREFIX_CHARS)
    if short:
        raise InvalidInput(
            f"prefix {short[0]!r} is too short: a prefix term needs at least {MIN_PREFIX_CHARS} letters before '*'"
        )


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def build_match_expression(query: str) -> str | None:
    """An FTS5 `MATCH` expression for `query`, or None when the query has no searchable word.

    Args:
        query: free text from a client, any Unicode.

    Returns:
        A string such as `"biggie" OR "dog"* OR "stuffed chicken"`: every term double-quoted, the
        terms joined with OR. Stop words are dropped unless nothing else is left.
    """
    phrases: list[str] = []
    for match in _PHRASE.finditer(query):
        words = [word.rstrip("*") for word in _words(match.group(1))]
        if words:
            phrases.append(_quote(" ".join(words)))
    rest = _PHRASE.sub(" ", query)
    tokens = _words(rest)
    content_tokens = [token for token in tokens if token.rstrip("*").lower() not in STOP_WORDS]
    chosen = content_tokens or ([] if phrases else tokens)
    terms: list[str] = []
    seen: set[str] = set()
    for token in chosen:
        word = token.rstrip("*").lower()
        term = _quote(word) + ("*" if token.endswith("*") else "")
        if term not in seen:
            seen.add(term)
            terms.append(term)
    terms = phrases + terms
    return " OR ".join(terms) if terms else None


# The subject the extractors give the user's own memories ("User lives in Lisbon", docs/extraction.md).
USER_SUBJECT = "User"
_REPEATED_SUBJECT = re.compile(r"\bUser(?:\s+User)+\b")
_USER_WORD = re.compile(r"\bUser(?:['’]s)?\b")
# A name as the memories write it: a capitalised word of two letters or more ("Joaquin", "Wójcik", "O'Neill").
_NAME_WORD = re.compile(r"(?<![\w'’-])[^\W\d_a-z][\w'’-]*\w")
_POSSESSIVE = re.compile(r"['’]s$")


def own_name_words(contents: Iterable[str]) -> list[str]:
    """The capitalised words of the user's own name memories (`Store.own_names`: "User's name is Joaquin Araya",
    "User goes by Jo"), other than the subject itself: `["Joaquin", "Araya", "Jo"]`, first seen first."""
    words = (_POSSESSIVE.sub("", word) for content in contents for word in _NAME_WORD.findall(content))
    return list(
        dict.fromkeys(
            word for word in words if word[0].isupper() and word != USER_SUBJECT and word.lower() not in STOP_WORDS
        )
    )


def as_user_subject(query: str, names: Sequence[str]) -> str:
    """`query` with the user named as their own memories name them: each of the user's `names` (whole words, case
    as given: `own_name_words`) becomes "User" ("Where does Joaquin work now?" -> "Where does User work now?"), a
    full name one "User", a possessive "User's".

    Why: the extractors write the user's own facts with the subject "User", while an assistant asks with the
    user's name. By the name, keyword search finds first the name memory ("User's name is Joaquin Araya", whose one
    rare word it is) and the vector side ranks other people's facts first; by "User", both sides find the user's
    (docs/search.md, "The user's own name"). First-person words ("where do I work") are left as they are: rewritten
    to "User" they cost more questions than they gained on a held-out life. A query that would be left with no word
    but "User" ("Joaquin") is returned unchanged: it asks for the name itself.
    """
    words = sorted({name for name in names if len(name) >= 2}, key=len, reverse=True)
    rewritten = query
    if words:
        pattern = r"(?<![\w'’-])(?:" + "|".join(re.escape(word) for word in words) + r")(?![\w-])"
        rewritten = re.sub(pattern, USER_SUBJECT, rewritten)
    rewritten = _REPEATED_SUBJECT.sub(USER_SUBJECT, rewritten)
    if rewritten == query:
        return query
    kept = [token.rstrip("*").lower() for token in _words(rewritten)]
    if not [token for token in kept if token not in STOP_WORDS and token != USER_SUBJECT.lower()]:
        return query
    return rewritten


def without_user_subject(text: str) -> str:
    """`text` without the word "User" (or "User's"): the keyword side of a query `as_user_subject` rewrote. The
    word is in every one of the user's own memories, so it adds nothing to bm25 but a mark in every highlight."""
    return _USER_WORD.sub(" ", text)


def topic_query(topic: str) -> str | None:
    """A search query for `recall` from a whole user message, within `check_query`'s bounds: the message itself
    when it is within them, else its first `MAX_QUERY_TERMS` distinct words that are not stop words (plain
    words: quotes and `*` lose their query meaning), or None when it has no searchable word.

    A user message is not a query its author wrote for search, so it is cut to size rather than refused."""
    try:
        check_query(topic)
    except InvalidInput:
        pass
    else:
        return topic if build_match_expression(topic) is not None else None
    words = list(dict.fromkeys(word.rstrip("*").lower() for word in _words(topic)))
    content = [word for word in words if word and word not in STOP_WORDS] or [word for word in words if word]
    chosen: list[str] = []
    for word in content[:MAX_QUERY_TERMS]:
        if len(" ".join([*chosen, word])) > MAX_QUERY_CHARS:
            break
        chosen.append(word)
    return " ".join(chosen) or None


# --- hybrid ranking (search by meaning; docs/search.md) ---------------------------------------------------


SearchMode = Literal["hybrid", "keyword", "semantic"]


@dataclass(frozen=True)
class Fusion:
    """How a hybrid hit's match score is made from its text match and its meaning (docs/search.md).

    match = w * text + (1 - w) * meaning, where
      text    = strength / max(best strength of the query, text_reference) (0 when the words do not match),
                times `provenance_weight` when only the memory's source message or context matched (keyword
                mode divides by the best strength alone, as the SQL ranking does);
      meaning = (cosine - cosine_floor) / (cosine_ceiling - cosine_floor), clipped to 0-1;
      w       = `text_weight_for` the query's best strength: from `weak_text_weight` (no word evidence) up to
                `text_weight` once the best word match reaches `evidence_strength` (0: w = text_weight always).
    Chosen by measurement on the LoCoMo dev split and the paraphrase benchmark (docs/search.md, Fusion).
    """

    # The cosines are centred (`vectors.centred_cosine`, about the user's mean vector), which lowers them: a
    # paraphrase's memory is at 0.2-0.5 where it was at 0.35-0.6 (issue 9, fourth round).
    text_weight: float = 0.85
    cosine_floor: float = 0.1
    cosine_ceiling: float = 0.6
    # Hybrid only: the text part divides by max(best strength, text_reference), so a query whose best word match
    # is weak (a common word such as "user") gets a small text part and meaning decides. 0 turns it off.
    text_reference: float = 25.0
    provenance_weight: float = 0.5
    # Nearest neighbours below this (centred) cosine are not candidates (they may still rank through their words)...
    candidate_floor: float = 0.15
    # ...and this is the floor of an uncentred collection (a user with few vectors, barely centred: see
    # `admitted_neighbours`), the plain-cosine floor the third round chose.
    plain_candidate_floor: float = 0.3
    # ...nor those more than this below the best neighbour of the query (`admitted_neighbours`).
    relative_floor: float = 0.2
    # How many candidates each side contributes at least (more when a page reaches deeper).
    depth: int = 100
    # "weighted" (the formula above) or "rrf": reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009),
    # match = (text_weight / (k + text rank) + (1 - text_weight) / (k + meaning rank)) * (k + 1), kept for the
    # comparison in docs/benchmarks.md.
    kind: Literal["weighted", "rrf"] = "weighted"
    rrf_k: int = 60
    # Keyword evidence (hybrid, weighted only): a query whose best bm25 strength is below this trusts its words
    # less, linearly down to `weak_text_weight` (`text_weight_for`). 0 keeps the weight fixed at `text_weight`.
    evidence_strength: float = 20.0
    weak_text_weight: float = 0.2


def text_weight_for(best_strength: float, fusion: Fusion) -> float:
    """The text weight `w` of a hybrid query whose best keyword match has bm25 strength `best_strength` (>= 0).

    w = weak_text_weight + (text_weight - weak_text_weight) * min(1, best_strength / evidence_strength).
    Why: a query whose words match strongly (a name and a topic, as in LoCoMo questions) is best answered by
    its words, while one whose best match is a common word ("user", "living") is what a paraphrase looks like,
    and there the meaning should decide. A fixed weight has to trade one for the other: on LoCoMo dev every
    fixed weight that lifted the paraphrase sets cost single-hop recall (docs/search.md, Fusion).
    """
    if fusion.evidence_strength <= 0:
        return fusion.text_weight
    evidence = min(1.0, max(0.0, best_strength) / fusion.evidence_strength)
    return fusion.weak_text_weight + (fusion.text_weight - fusion.weak_text_weight) * evidence


@dataclass
class Candidate:
    """One memory in the union of the keyword and vector candidates."""

    rowid: int
    memory: Memory
    message_group: int
    strength: float = 0.0  # -bm25, 0 when the words do not match
    own_text: bool = False
    cosine: float | None = None
    match: float = 0.0
    relevance: float = 0.0
    highlights: list[str] = field(default_factory=list[str])


def admitted_neighbours(
    near: list[tuple[int, float]], fusion: Fusion, centring: float = 1.0
) -> list[tuple[int, float]]:
    """The nearest neighbours that may be candidates: cosine at least the absolute floor and at most
    `relative_floor` below the best neighbour's (`near` is (rowid, cosine), any order; the order is kept).

    The absolute floor goes from `plain_candidate_floor` to `candidate_floor` as `centring` (0-1: how far the
    user's cosines are centred, `VectorIndex.centring`) goes from 0 to 1, because a centred cosine is lower than
    a plain one for the same pair: a one-memory user's cosines are plain ones, a large user's centred.

    Why both floors: in a small collection the nearest of a few vectors is near only because nothing else is
    ("Kiwi" is 0.26 from "User lives in Zanzibar" and 0.55 from "User has a parrot called Kiwi"); the absolute
    floor drops the first, the relative one drops what is far behind the best match. Both cost nothing on the dev
    paraphrase sets and LoCoMo dev (docs/search.md, Fusion).
    """
    best = max((cosine for _, cosine in near), default=0.0)
    weight = min(1.0, max(0.0, centring))
    absolute = fusion.plain_candidate_floor + (fusion.candidate_floor - fusion.plain_candidate_floor) * weight
    floor = max(absolute, best - fusion.relative_floor)
    return [(rowid, cosine) for rowid, cosine in near if cosine >= floor]


def meaning(cosine: float | None, fusion: Fusion) -> float:
    """The meaning part of the match score, in 0-1 (see `Fusion`)."""
    if cosine is None:
        return 0.0
    span = fusion.cosine_ceiling - fusion.cosine_floor
    return min(1.0, max(0.0, (cosine - fusion.cosine_floor) / span))


def _semantic_match(cosine: float | None, fusion: Fusion) -> float:
    """Semantic mode's match: the cosine mapped from `cosine_floor` up to 1 (clipped to 0-1). The hybrid ceiling
    is not used here: alone, the meaning part must keep the order of neighbours above the ceiling, which in a
    conversation of 1,000 memories are many (LoCoMo dev recall@10 0.584 -> 0.476 with a ceiling of 0.6)."""
    return meaning(cosine, replace(fusion, cosine_ceiling=1.0))


def _reciprocal_rank_fusion(candidates: list[Candidate], fusion: Fusion) -> None:
    def ranks(key: Callable[[Candidate], float]) -> dict[int, int]:
        ordered = sorted((c for c in candidates if key(c) > 0), key=lambda c: (key(c), c.rowid), reverse=True)
        return {candidate.rowid: position + 1 for position, candidate in enumerate(ordered)}

    by_text = ranks(lambda c: c.strength * (1.0 if c.own_text else fusion.provenance_weight))
    by_meaning = ranks(lambda c: meaning(c.cosine, fusion))
    k = fusion.rrf_k
    for candidate in candidates:
        text = fusion.text_weight / (k + by_text[candidate.rowid]) if candidate.rowid in by_text else 0.0
        sense = (1 - fusion.text_weight) / (k + by_meaning[candidate.rowid]) if candidate.rowid in by_meaning else 0.0
        candidate.match = (text + sense) * (k + 1)


def pin_boost(memory: Memory) -> float:
    """1 for a pinned memory, else clamp(2 * (importance - 0.5), 0, 1) with no importance counting 0.5: the
    `b` of `store.Ranking`'s pin boost (the same formula as its SQL), so neutral memories get 0."""
    if memory.pinned:
        return 1.0
    importance = memory.importance if memory.importance is not None else 0.5
    return min(1.0, max(0.0, (importance - 0.5) * 2.0))


def rank_candidates(
    candidates: list[Candidate],
    mode: SearchMode,
    fusion: Fusion,
    ranking: Ranking,
    *,
    now: datetime,
    boost: Category | None = None,
) -> list[Candidate]:
    """Score `candidates` in place and return them best first.

    relevance = min(1, match * (1 + pin_weight * pin_boost)) (match: see `Fusion`; keyword mode: the text
                part alone, semantic: the meaning part alone)
                * repeat_penalty ** (n - 1) * recency * category factor, as `store.Ranking` defines them.
    Every factor is in 0-1, so relevance is. Ties go to the newest memory (highest rowid).
    """
    if mode == "hybrid" and fusion.kind == "rrf":
        _reciprocal_rank_fusion(candidates, fusion)
    else:
        best = max((candidate.strength for candidate in candidates), default=0.0)
        weight = text_weight_for(best, fusion)
        if mode == "hybrid":
            best = max(best, fusion.text_reference)
        for candidate in candidates:
            text = candidate.strength / best if best > 0 else 0.0
            if not candidate.own_text:
                text *= fusion.provenance_weight
            sense = meaning(candidate.cosine, fusion)
            weighted = weight * text + (1 - weight) * sense
            candidate.match = {"keyword": text, "semantic": _semantic_match(candidate.cosine, fusion)}.get(
                mode, weighted
            )
    candidates.sort(key=lambda candidate: (candidate.match, candidate.rowid), reverse=True)
    seen: dict[int, int] = {}
    for candidate in candidates:
        repeats = seen.get(candidate.message_group, 0)
        seen[candidate.message_group] = repeats + 1
        updated = datetime.fromisoformat(candidate.memory.updated_at)
        age_days = max(0.0, (now - updated).total_seconds() / 86400.0)
        recency = 1.0 - ranking.recency_weight + ranking.recency_weight * 0.5 ** (age_days / ranking.half_life_days)
        category = 1.0 if boost is None or candidate.memory.category == boost else 1.0 - ranking.category_weight
        # The pin/importance boost of `store.Ranking` (docs/search.md), capped so relevance stays in 0-1.
        boosted = min(1.0, candidate.match * (1.0 + ranking.pin_weight * pin_boost(candidate.memory)))
        # Unrounded, so two weak matches still order by their words; callers round for display.
        candidate.relevance = boosted * ranking.repeat_penalty**repeats * recency * category
    candidates.sort(key=lambda candidate: (candidate.relevance, candidate.rowid), reverse=True)
    return candidates
