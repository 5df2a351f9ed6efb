from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harmonia_mcp.search import build_match_expression

FTS5_TRAPS = ['"', "*", "NEAR(", "AND OR -", 'a" OR "b', "col:term", "^start", "(((", "NOT", "-x", "\x00"]


@pytest.fixture(scope="module")
def fts() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
    db.executemany(
        "INSERT INTO t (body) VALUES (?)",
        [("User has a dog called Biggie",), ("Maria lives near Lisbon",), ("User and Maria went hiking",)],
    )
    return db


def test_words_are_quoted_and_joined_with_or() -> None:
    assert build_match_expression("Biggie dog") == '"biggie" OR "dog"'


def test_stop_and_question_words_are_dropped() -> None:
    assert build_match_expression("What is the name of my dog?") == '"name" OR "dog"'


def test_a_query_of_only_stop_words_still_searches_them() -> None:
    assert build_match_expression("AND OR") == '"and" OR "or"'


def test_quoted_phrases_stay_phrases_and_trailing_star_is_a_prefix() -> None:
    assert build_match_expression('"dog called" Big*') == '"dog called" OR "big"*'


def test_no_words_gives_none() -> None:
    assert build_match_expression('" * - ( ) :') is None


@pytest.mark.parametrize("query", FTS5_TRAPS)
def test_fts5_syntax_is_literal_and_never_an_sqlite_error(fts: sqlite3.Connection, query: str) -> None:
    expression = build_match_expression(query)
    if expression is not None:
        fts.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,)).fetchall()


def test_near_is_searched_as_a_word(fts: sqlite3.Connection) -> None:
    expression = build_match_expression("NEAR(")
    assert expression is not None
    rows = fts.execute("SELECT body FROM t WHERE t MATCH ?", (expression,)).fetchall()
    assert rows == [("Maria lives near Lisbon",)]


@given(st.text())
def test_any_unicode_query_builds_a_valid_expression(query: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
    expression = build_match_expression(query)
    if expression is not None:
        db.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,)).fetchall()


def test_a_topic_within_the_query_bounds_is_searched_as_given() -> None:
    from harmonia_mcp.search import topic_query

    assert topic_query('where does "my sister" live?') == 'where does "my sister" live?'
    assert topic_query("who? what?") == "who? what?"  # stop words only: still searched, as a query is
    assert topic_query("?!") is None


def test_a_topic_beyond_the_query_bounds_keeps_its_first_distinct_content_words() -> None:
    from harmonia_mcp.search import MAX_QUERY_CHARS, MAX_QUERY_TERMS, check_query, topic_query

    words = [f"word{number}" for number in range(50)]
    message = "I think " + " and the ".join(words) + ' "quoted" a* ' + " ".join(words)
    query = topic_query(message)
    assert query is not None
    assert query.split() == ["think", *words[: MAX_QUERY_TERMS - 1]]
    check_query(query)  # within bounds: never refused
    long = topic_query("dog " * 5000 + "cat")
    assert long == "dog cat" and len(long) <= MAX_QUERY_CHARS
