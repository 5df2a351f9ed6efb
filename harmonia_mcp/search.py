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
