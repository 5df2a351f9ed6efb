"""Two-stage ranking (issue 14): a relevance page ranked over FTS5's best bm25 candidates, on a real SQLite file
with repeated wording, shared messages, pins, importance, ages and categories. When the window holds every
match the page is the exact ranking; with the default window, memories stored in time order (as a store
fills) get the exact first pages; with any window `total_count` stays exact (docs/search.md)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from harmonia_mcp import store as store_module
from harmonia_mcp.models import Category, ExtractedMemory
from harmonia_mcp.search import build_match_expression
from harmonia_mcp.store import MemoryFilter, NewMemory, Store, open_store

pytestmark = pytest.mark.anyio

WORDS = "violin piano Lisbon Porto sushi ramen sister brother nurse teacher chess pottery dog cat".split()
NOW = "2026-12-01T00:00:00+00:00"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with open_store(str(db_path)) as opened:
        rng = random.Random(14)
        categories = list(Category)
        async with opened.transaction() as db:
            for index in range(1500):
                words = rng.sample(WORDS, rng.randint(1, 4)) + ["filler"] * rng.randint(0, 6)
                await opened.insert_memory(
                    db,
                    NewMemory(
                        "alice" if index % 10 else "bob",
                        ExtractedMemory(content=" ".join(words), category=rng.choice(categories)),
                        "rules",
                        source_message=" ".join(rng.sample(WORDS, 2)),
                        # Memories from one message share a repeat penalty (`Ranking.repeat_penalty`).
                        message_id=index // 3 if rng.random() < 0.5 else None,
                    ),
                )
            # Ages follow insertion order, one every six hours, as in a store filled over time.
            await db.execute(
                "UPDATE memories SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', '2026-12-01', "
                "'-' || ((1600 - rowid) * 6) || ' hours'), pinned = (rowid % 41 = 0), "
                "importance = CASE WHEN rowid % 7 = 0 THEN (rowid % 11) / 10.0 END, "
                "archived = (rowid % 53 = 0), status = CASE WHEN rowid % 61 = 0 THEN 'deleted' ELSE 'active' END"
            )
        yield opened


async def _page(store: Store, query: str, exact: bool, **arguments: Any) -> tuple[list[tuple[str, float]], int]:
    match = build_match_expression(query)
    assert match is not None
    window = store_module.MAX_SEARCH_CANDIDATES
    if exact:
        store_module.MAX_SEARCH_CANDIDATES = 0  # every page beyond the window: the exact query
    try:
        hits, total = await store.search(
            "alice", match, MemoryFilter(**arguments.pop("filters", {})), now=NOW, **arguments
        )
    finally:
        store_module.MAX_SEARCH_CANDIDATES = window
    return [(hit.memory.memory_id, hit.relevance) for hit in hits], total


# "filler" is in most rows and barely moves bm25, so recency decides its order: outside a window of 200 there
# are newer rows of equal strength, the documented case where two-stage pages differ (docs/search.md).
QUERIES = ["violin", "Lisbon sushi", "dog OR cat", '"sister brother"', "piano chess pottery", "nurse"]
EVERY_QUERY = [*QUERIES, "filler"]


@pytest.mark.parametrize("query", QUERIES)
async def test_the_first_pages_equal_the_exact_ranking(store: Store, query: str) -> None:
    for limit, offset in ((10, 0), (1, 0), (5, 5)):
        fast = await _page(store, query, False, limit=limit, offset=offset)
        exact = await _page(store, query, True, limit=limit, offset=offset)
        assert fast == exact, (query, limit, offset)
        assert fast[1] > 0


@pytest.mark.parametrize("query", EVERY_QUERY)
async def test_a_window_holding_every_match_is_exact_even_for_ages_out_of_order(
    store: Store, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with store.transaction() as db:
        await db.execute(
            "UPDATE memories SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', '2026-12-01', "
            "'-' || (rowid * 7919 % 97) || ' days')"
        )
    monkeypatch.setattr(store_module, "SEARCH_CANDIDATES", 2000)
    for limit, offset in ((10, 0), (25, 50)):
        assert await _page(store, query, False, limit=limit, offset=offset) == await _page(
            store, query, True, limit=limit, offset=offset
        )


@pytest.mark.parametrize("query", EVERY_QUERY)
async def test_a_small_window_ranks_its_own_rows_and_keeps_the_total_exact(
    store: Store, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SEARCH_CANDIDATES", 8)
    fast, total = await _page(store, query, False, limit=10, offset=0)
    exact, exact_total = await _page(store, query, True, limit=10, offset=0)
    assert total == exact_total
    # A page of 10 widens the window to 20; every hit is one of the 20 strongest by bm25, best first.
    assert len(fast) == min(10, exact_total)
    assert [score for _, score in fast] == sorted((score for _, score in fast), reverse=True)
    strongest, _ = await _page(store, query, True, limit=exact_total, offset=0)
    assert all(0 < score <= 1 for _, score in fast)
    assert {memory for memory, _ in fast} <= {memory for memory, _ in strongest}


async def test_a_category_boost_and_filters_keep_the_page_exact(store: Store) -> None:
    # Filters other than the default rank every match (the window could hold too few of their rows).
    for filters in ({"category": Category.PREFERENCE}, {"include_archived": True}, {"min_confidence": 0.9}):
        arguments = {"limit": 10, "offset": 0, "boost_category": Category.WORK, "filters": filters}
        fast = await _page(store, "violin OR filler", False, **dict(arguments))
        exact = await _page(store, "violin OR filler", True, **dict(arguments))
        assert fast == exact, filters


async def test_the_window_is_used_and_the_total_counts_every_match(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The exact query must not run for a first page the window proves, and the total is still every match.
    calls: list[int] = []
    monkeypatch.setattr(store_module, "_EXACT_HITS", "SELECT * FROM no_such_table WHERE {where} {sort_value}")
    original = store_module._count_matches

    def counted(*arguments: Any) -> int:
        calls.append(1)
        return original(*arguments)

    monkeypatch.setattr(store_module, "_count_matches", counted)
    match = build_match_expression("filler")
    assert match is not None
    hits, total = await store.search("alice", match, MemoryFilter(), limit=10, offset=0, now=NOW)
    assert len(hits) == 10
    async with store.transaction() as db:
        cursor = await db.execute(
            "SELECT count(*) FROM memories WHERE user_id = 'alice' AND status = 'active' AND archived = 0 "
            "AND (' ' || content || ' ' || source_message || ' ') LIKE '% filler %'"
        )
        row = await cursor.fetchone()
    assert row is not None and total == row[0] > 200
    assert calls == [1]


@pytest.mark.parametrize("query", EVERY_QUERY)
async def test_hybrid_keyword_candidates_equal_ranking_every_match(
    store: Store, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hybrid keyword side picks its candidates inside FTS5 (`_keyword_window`); the rows, their order,
    # strengths, own-text flags and the total must equal ranking every match, whatever the depth, including
    # depths where archived and deleted rows fall inside the window.
    match = build_match_expression(query)
    assert match is not None
    for limit in (1, 7, 50, 200, 2000):
        fast = await store.keyword_candidates("alice", match, MemoryFilter(), limit=limit)
        assert fast == await _every_match_ranked(store, "alice", match, limit, monkeypatch), (query, limit)
        assert fast[1] > 0 and len(fast[0]) == min(limit, fast[1])


async def _every_match_ranked(
    store: Store, user: str, match: str, limit: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[int, float, bool]], int]:
    """`Store.keyword_candidates` with both windows off: every match ranked by bm25 in SQL."""
    with monkeypatch.context() as patched:
        patched.setattr(store_module, "_keyword_window", lambda *_, **__: (None, 0))
        return await store.keyword_candidates(user, match, MemoryFilter(), limit=limit)


def _spy_conjunction(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each window the terms' conjunction was tried for, whether the bound proved it (True) or the window was
    taken over every match (False)."""
    answers: list[bool] = []
    original = store_module._Conjunction.proves

    def spied(self: Any, row: Any, window: int) -> bool:
        answers.append(proved := original(self, row, window))
        return proved

    monkeypatch.setattr(store_module._Conjunction, "proves", spied)
    return answers


async def _insert(store: Store, rows: list[tuple[str, str, str | None]]) -> None:
    async with store.transaction() as db:
        for user, content, context in rows:
            await store.insert_memory(db, NewMemory(user, ExtractedMemory(content=content), "rules", context=context))


async def test_keyword_candidates_among_rows_holding_every_term_when_the_bound_proves_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "alpha beta" rows are short and hold both terms: the 200 strongest of them beat anything a row with one of
    # the two words can score, so the candidates come from `alpha AND beta`, with bob's rows in the same file.
    rows = [("alice", "alpha beta", None)] * 250 + [("alice", "beta filler words", None)] * 300
    rows += [("alice", "alpha filler words", None)] * 50 + [("alice", "gamma delta", None)] * 1000
    rows += [("bob", "alpha beta", None)] * 40
    async with open_store(str(db_path)) as store:
        await _insert(store, rows)
        answers = _spy_conjunction(monkeypatch)
        match = '"alpha" OR "beta"'
        fast = await store.keyword_candidates("alice", match, MemoryFilter(), limit=20)
        assert answers == [True]
        exact = await _every_match_ranked(store, "alice", match, 20, monkeypatch)
        assert fast == exact
        assert fast[1] == 600  # the total counts every match, not only the rows holding both words
        async with store.transaction() as db:
            cursor = await db.execute("SELECT rowid FROM memories WHERE user_id = 'alice' AND content = 'alpha beta'")
            both = {row[0] for row in await cursor.fetchall()}
        assert {rowid for rowid, _, _ in fast[0]} <= both
        assert all(own for _, _, own in fast[0])
        answers.clear()
        # Keyword search's first stage takes its window (200 rows) the same way; the page is the exact one.
        assert await _page(store, "alpha beta", False, limit=10, offset=0) == await _page(
            store, "alpha beta", True, limit=10, offset=0
        )
        assert answers == [True]
        answers.clear()
        # Bob has 40 rows with both words: a window of 200 could not be full, so it is not even tried.
        bob_page = await store.search("bob", '"alpha" OR "beta"', MemoryFilter(), limit=10, offset=0, now=NOW)
        assert answers == [] and bob_page[1] == 40 and all(hit.memory.user_id == "bob" for hit in bob_page[0])


async def test_keyword_candidates_fall_back_to_every_match_when_the_bound_fails(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows holding both words hold them only in a long conversation context (bm25 weight 1); rows with "alpha"
    # in their own short content score higher without "beta". Taking the rows that hold both would be wrong.
    padding = " ".join(["pad"] * 50)
    rows = [("alice", "unrelated note", f"alpha beta {padding}")] * 300 + [("alice", "alpha", None)] * 250
    rows += [("alice", "beta gamma", None)] * 600 + [("alice", "delta", None)] * 3000
    async with open_store(str(db_path)) as store:
        await _insert(store, rows)
        answers = _spy_conjunction(monkeypatch)
        match = '"alpha" OR "beta"'
        fast = await store.keyword_candidates("alice", match, MemoryFilter(), limit=10)
        assert answers == [False]
        assert fast == await _every_match_ranked(store, "alice", match, 10, monkeypatch)
        async with store.transaction() as db:
            cursor = await db.execute("SELECT rowid FROM memories WHERE content = 'alpha'")
            alpha_only = {row[0] for row in await cursor.fetchall()}
        assert len(fast[0]) == 10 and {rowid for rowid, _, _ in fast[0]} <= alpha_only
        answers.clear()
        page, total = await _page(store, "alpha beta", False, limit=10, offset=0)
        assert (page, total) == await _page(store, "alpha beta", True, limit=10, offset=0)
        assert answers == [False] and total == 1150


async def test_own_text_flags_and_count_matching_follow_what_each_memory_says(db_path: Path) -> None:
    # A memory whose own words (content, entities) hold the term is flagged; one that holds it only in its
    # source message or context is not. count_matching counts exactly the given rowids that match.
    async with open_store(str(db_path)) as store:
        async with store.transaction() as db:
            for index in range(400):
                kind = index % 4
                extracted = ExtractedMemory(
                    content="violin lessons" if kind == 0 else f"note {index}",
                    entities=["Violin Club"] if kind == 1 else [],
                )
                await store.insert_memory(
                    db,
                    NewMemory(
                        "bob" if index % 5 == 0 else "alice",
                        extracted,
                        "rules",
                        source_message="I play the violin" if kind == 2 else "hello",
                        context="we talked about violin" if kind == 3 else None,
                    ),
                )
            cursor = await db.execute("SELECT rowid FROM memories WHERE user_id = 'alice' ORDER BY rowid")
            alice = [row[0] for row in await cursor.fetchall()]
        found, total = await store.keyword_candidates("alice", '"violin"', MemoryFilter(), limit=1000)
        assert total == len(found) == len(alice)  # every memory of alice holds "violin" somewhere
        kinds = {rowid: (rowid - 1) % 4 for rowid in alice}
        assert {rowid for rowid, _, own in found if own} == {rowid for rowid in alice if kinds[rowid] in (0, 1)}
        chosen = alice[::3]
        assert await store.count_matching("alice", '"violin"', chosen) == len(chosen)
        assert await store.count_matching("alice", '"lessons"', chosen) == sum(kinds[r] == 0 for r in chosen)
        assert await store.count_matching("alice", '"lessons"', []) == 0


async def test_a_one_user_file_drops_the_owner_token_and_changes_no_result(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without another user the match runs without the owner token (`store._scoped_match`); every score,
    # highlight and total must equal the owner-scoped search, and a second user's memory brings the token back.
    async with open_store(str(db_path)) as opened:
        rng = random.Random(7)
        async with opened.transaction() as db:
            for _ in range(300):
                words = rng.sample(WORDS, rng.randint(1, 4)) + ["filler"] * rng.randint(0, 3)
                await opened.insert_memory(
                    db,
                    NewMemory("alice", ExtractedMemory(content=" ".join(words)), "rules", source_message=words[0]),
                )
        matches: list[str] = []
        original = store_module._scoped_match

        def seen(read: Any, user_id: str, match: str) -> str:
            matches.append(scoped := original(read, user_id, match))
            return scoped

        def owned(read: Any, user_id: str, match: str) -> str:
            return store_module.owned_match(user_id, match)

        async def results() -> list[Any]:
            found = []
            for query in [*QUERIES, "filler"]:
                match = build_match_expression(query)
                assert match is not None
                found.append(await opened.search("alice", match, MemoryFilter(), limit=10, offset=0, now=NOW))
                found.append(await opened.keyword_candidates("alice", match, MemoryFilter(), limit=50))
                found.append(await opened.highlights("alice", match, list(range(1, 40))))
            return found

        monkeypatch.setattr(store_module, "_scoped_match", seen)
        bare = await results()
        assert matches and not any("owner_token" in match for match in matches)
        monkeypatch.setattr(store_module, "_scoped_match", owned)
        assert bare == await results()
        async with opened.transaction() as db:
            await opened.insert_memory(db, NewMemory("bob", ExtractedMemory(content="violin filler"), "rules"))
        monkeypatch.setattr(store_module, "_scoped_match", seen)
        matches.clear()
        hits, _ = await opened.search("alice", '"violin"', MemoryFilter(), limit=500, offset=0, now=NOW)
        assert matches and all("owner_token" in match for match in matches)
        assert hits and all(hit.memory.user_id == "alice" for hit in hits)
