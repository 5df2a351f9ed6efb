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

from harmonia_mcp.errors import InvalidInput

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
