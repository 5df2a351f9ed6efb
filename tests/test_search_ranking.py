"""Search behaviour (issue 6): ranking, filters, exact pagination, conversation context, migration, and any
Unicode query at the tool boundary."""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.types import TextContent

from harmonia_mcp.config import Settings
from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.models import Category, ExtractedMemory
from harmonia_mcp.search import build_match_expression, check_query
from harmonia_mcp.server import create_server
from harmonia_mcp.store import _M001_INITIAL, MIGRATIONS, MemoryFilter, NewMemory, Ranking, Store, open_store

pytestmark = pytest.mark.anyio


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _insert(store: Store, user: str, content: str, **fields: Any) -> str:
    extracted = {key: fields.pop(key) for key in ("category", "confidence", "tags") if key in fields}
    async with store.transaction() as db:
        memory = await store.insert_memory(
            db, NewMemory(user, ExtractedMemory(content=content, **extracted), "rules", **fields)
        )
    return memory.memory_id


async def _age(store: Store, memory_id: str, days: float) -> None:
    then = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="microseconds")
    async with store.transaction() as db:
        await db.execute(
            "UPDATE memories SET updated_at = ?, created_at = ? WHERE memory_id = ?", (then, then, memory_id)
        )


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with open_store(str(db_path)) as opened:
        yield opened


# --- ranking -------------------------------------------------------------------------------------


async def test_recency_ranks_the_newer_of_two_equal_matches_first_by_the_half_life(store: Store) -> None:
    old = await _insert(store, "alice", "Alice plays the violin")
    new = await _insert(store, "alice", "Alice plays the violin too")
    await _age(store, old, 30)
    await _age(store, new, 0)
    hits, _ = await store.search("alice", '"violin"', MemoryFilter(), limit=10, offset=0)
    scores = {hit.memory.memory_id: hit.relevance for hit in hits}
    assert [hit.memory.memory_id for hit in hits] == [new, old]
    # Same text strength (the shorter row is a slightly better bm25 match, so compare the recency factor only):
    # one half-life old keeps 1 - 0.2 + 0.2 * 0.5 = 0.9 of its score.
    plain, _ = await store.search(
        "alice", '"violin"', MemoryFilter(), limit=10, offset=0, ranking=Ranking(recency_weight=0)
    )
    base = {hit.memory.memory_id: hit.relevance for hit in plain}
    assert scores[old] == pytest.approx(base[old] * 0.9, abs=1e-4)
    assert scores[new] == pytest.approx(base[new], abs=1e-4)


async def test_without_recency_the_better_text_match_wins_whatever_its_age(store: Store) -> None:
    strong = await _insert(store, "alice", "Violin violin violin lessons")
    weak = await _insert(store, "alice", "Alice mentioned a violin once during a long story about her summer trip")
    await _age(store, strong, 3650)
    hits, _ = await store.search(
        "alice", '"violin"', MemoryFilter(), limit=10, offset=0, ranking=Ranking(recency_weight=0.0)
    )
    assert [hit.memory.memory_id for hit in hits] == [strong, weak]
    assert hits[0].relevance == 1.0 and 0.0 < hits[1].relevance < 1.0


async def test_boost_category_lifts_that_category_without_filtering_the_rest(store: Store) -> None:
    fact = await _insert(store, "alice", "Alice mentions tennis", category=Category.FACT)
    goal = await _insert(store, "alice", "Alice mentions tennis", category=Category.GOAL)
    plain, _ = await store.search("alice", '"tennis"', MemoryFilter(), limit=10, offset=0)
    boosted, total = await store.search(
        "alice", '"tennis"', MemoryFilter(), limit=10, offset=0, boost_category=Category.GOAL
    )
    assert [hit.memory.memory_id for hit in plain] == [goal, fact]  # a tie goes to the newer insert
    assert [hit.memory.memory_id for hit in boosted] == [goal, fact] and total == 2
    assert boosted[1].relevance == pytest.approx(boosted[0].relevance * 0.7, abs=1e-4)
    fact_first, _ = await store.search(
        "alice", '"tennis"', MemoryFilter(), limit=10, offset=0, boost_category=Category.FACT
    )
    assert [hit.memory.memory_id for hit in fact_first] == [fact, goal]


async def test_a_second_hit_from_the_same_message_is_halved(store: Store) -> None:
    first = await _insert(store, "alice", "Alice sails on Sundays", message_id=7)
    second = await _insert(store, "alice", "Alice sails on Sundays", message_id=7)
    other = await _insert(store, "alice", "Alice sails on Sundays", message_id=8)
    hits, _ = await store.search("alice", '"sails"', MemoryFilter(), limit=10, offset=0)
    order = [hit.memory.memory_id for hit in hits]
    assert order[:2] == [other, second] and order[2] == first
    assert hits[2].relevance == pytest.approx(hits[0].relevance * 0.5, abs=1e-4)


async def test_relevance_is_in_the_unit_interval_and_ordered(client: Client) -> None:
    for message in ("I love green tea.", "My sister drinks tea at noon.", "I visited a tea farm in Japan last May."):
        await _call(client, "store_memory", {"message": message})
    found = await _call(client, "search_memories", {"query": "tea Japan"})
    scores = [hit["relevance_score"] for hit in found["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= score <= 1.0 for score in scores) and scores[0] == 1.0
    assert "[Japan]" in found["results"][0]["highlights"][0]


# --- what a hit shows, filters, pagination --------------------------------------------------------


async def test_a_hit_shows_times_and_with_metadata_its_source_and_a_snippet(client: Client) -> None:
    message = "Honestly I adore my grandmother's lemon cake, she bakes it every Easter."
    await _call(client, "store_memory", {"message": message, "metadata": {"k": 1}, "occurred_at": "2024-03-01"})
    bare = await _call(client, "search_memories", {"query": "Easter"})
    full = await _call(client, "search_memories", {"query": "Easter", "include_metadata": True})
    hit = full["results"][0]
    assert bare["results"][0]["metadata"] is None and bare["results"][0]["source_message"] is None
    assert hit["metadata"] == {"k": 1} and hit["source_message"] == message
    assert hit["created_at"].endswith("+00:00")
    assert any("[Easter]" in text for text in hit["highlights"])


async def test_every_filter_is_applied_before_counting(client: Client, db_path: Path) -> None:
    await _call(client, "store_memory", {"message": "I have a dog called Rex.", "session_id": "s1"})
    await _call(client, "store_memory", {"message": "I have a doctor appointment with my dog tomorrow at 3pm."})
    await _call(client, "store_memory", {"message": "The dog park opened near the river."})
    everything = await _call(client, "search_memories", {"query": "dog"})
    rows = {hit["memory_id"]: hit for hit in everything["results"]}
    with sqlite3.connect(db_path) as db:
        facts = {
            row[0]: (row[1], set(json.loads(row[2])), row[3])
            for row in db.execute("SELECT memory_id, confidence, tags, session_id FROM memories")
        }
    assert len(rows) == everything["pagination"]["total_count"] == 3

    async def ids(**arguments: Any) -> set[str]:
        found = await _call(client, "search_memories", {"query": "dog", "limit": 100, **arguments})
        assert found["pagination"]["total_count"] == len(found["results"])
        return {hit["memory_id"] for hit in found["results"]}

    assert await ids(session_id="s1") == {m for m, f in facts.items() if f[2] == "s1"} != set()
    assert await ids(max_confidence=0.6) == {m for m, f in facts.items() if f[0] <= 0.6}
    assert await ids(min_confidence=0.6, max_confidence=1.0) == {m for m, f in facts.items() if f[0] >= 0.6}
    tagged = {m for m, f in facts.items() if "appointment" in f[1]}
    assert tagged and await ids(tags=["Appointment"]) == tagged
    assert await ids(tags=["appointment", "no-such-tag"]) == set()
    assert await ids(date_field="event_time", from_date="2000-01-01") == {
        hit["memory_id"] for hit in everything["results"] if hit["event_time"]
    }
    assert await ids(date_field="created_at", to_date="2000-01-01") == set()
    assert len(await ids(category="relationship")) >= 1
    error = await client.call_tool("search_memories", {"query": "dog", "min_confidence": 0.9, "max_confidence": 0.5})
    assert error.is_error


@pytest.mark.parametrize("sort_by", ["relevance", "created_at", "updated_at", "event_time", "confidence"])
async def test_search_pages_are_exact_across_boundaries_for_every_sort(client: Client, sort_by: str) -> None:
    for number in range(11):
        await _call(client, "store_memory", {"message": f"I collected stamp {number} in Peru on May {number + 1}."})
    whole = await _call(client, "search_memories", {"query": "stamp Peru", "limit": 100, "sort_by": sort_by})
    expected = [hit["memory_id"] for hit in whole["results"]]
    total = whole["pagination"]["total_count"]
    assert total == len(expected) >= 11
    seen: list[str] = []
    for offset in range(0, total + 4, 4):
        page = await _call(
            client, "search_memories", {"query": "stamp Peru", "limit": 4, "offset": offset, "sort_by": sort_by}
        )
        assert page["pagination"]["total_count"] == total
        assert page["pagination"]["has_more"] == (offset + len(page["results"]) < total)
        seen += [hit["memory_id"] for hit in page["results"]]
    assert seen == expected


# --- conversation context ------------------------------------------------------------------------


async def test_a_memory_is_found_by_words_of_the_question_it_answered(client: Client, db_path: Path) -> None:
    asked = await _call(client, "store_memory", {"message": "Which city do you love most?", "speaker": "Bea"})
    assert asked["memories"] == []
    answer = "Lisbon, without a doubt. I moved there in 2019."
    await _call(client, "store_memory", {"message": answer, "speaker": "Ana"})
    found = await _call(client, "search_memories", {"query": "city", "include_metadata": True})
    assert [hit["source_message"] for hit in found["results"]] == [answer] * len(found["results"]) != []
    other_user = await _call(client, "search_memories", {"query": "city", "user_id": "someone-else"})
    assert other_user["results"] == []
    for number in range(5):
        await _call(client, "store_memory", {"message": f"Small talk number {number}, how are you?"})
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2


async def test_context_does_not_cross_sessions_or_long_pauses(client: Client) -> None:
    await _call(client, "store_memory", {"message": "Which city do you love most?", "session_id": "a"})
    await _call(client, "store_memory", {"message": "I moved to Porto in 2019.", "session_id": "b"})
    await _call(client, "store_memory", {"message": "Which river do you love?", "occurred_at": "2024-01-01T10:00:00"})
    await _call(
        client, "store_memory", {"message": "I swam in the Douro last year.", "occurred_at": "2024-03-01T10:00:00"}
    )
    assert (await _call(client, "search_memories", {"query": "city"}))["results"] == []
    assert (await _call(client, "search_memories", {"query": "river"}))["results"] == []


async def test_a_version_1_file_is_migrated_and_its_memories_stay_searchable(db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        db.executescript(_M001_INITIAL + "\nPRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO memories (memory_id, user_id, content, category, confidence, extractor, created_at,"
            " updated_at, source_message) VALUES ('mem_00000000000000aa', 'alice', 'Alice keeps bees', 'fact', 0.7,"
            " 'rules', '2024-01-01T00:00:00.000000+00:00', '2024-01-01T00:00:00.000000+00:00',"
            " 'I keep bees on my roof')"
        )
    async with open_store(str(db_path)) as store:
        by_content, _ = await store.search("alice", '"bees"', MemoryFilter(), limit=10, offset=0)
        by_source, _ = await store.search("alice", '"roof"', MemoryFilter(), limit=10, offset=0)
    assert [hit.memory.memory_id for hit in by_content] == ["mem_00000000000000aa"]
    assert [hit.memory.memory_id for hit in by_source] == ["mem_00000000000000aa"]
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


# --- query handling ------------------------------------------------------------------------------


def _fts5_tokens(db: sqlite3.Connection, text: str) -> list[str]:
    db.execute("DELETE FROM probe")
    db.execute("INSERT INTO probe (body) VALUES (?)", (text,))
    return [row[0] for row in db.execute("SELECT term FROM probe_vocab ORDER BY offset")]


@pytest.fixture(scope="module")
def tokenizer() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE probe USING fts5(body, tokenize='unicode61 remove_diacritics 2')")
    db.execute("CREATE VIRTUAL TABLE probe_vocab USING fts5vocab(probe, 'instance')")
    return db


# Letters, digits, spaces, punctuation and math symbols that Unicode already had in version 3.2: where Python's
# Unicode data and the Unicode 6.1 tables of FTS5's unicode61 agree (docs/search.md names the exceptions).
_COMMON_TEXT = st.text(
    st.characters(categories=("Lu", "Ll", "Lt", "Lo", "Nd", "Zs", "Po", "Ps", "Pe", "Pd", "Sm")).filter(
        lambda char: unicodedata.ucd_3_2_0.category(char) == unicodedata.category(char)
    ),
    max_size=40,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_COMMON_TEXT)
def test_queries_are_split_into_the_words_fts5_indexes(tokenizer: sqlite3.Connection, text: str) -> None:
    from harmonia_mcp.search import _words

    ours = [word.rstrip("*") for word in _words(text)]
    # Each of our words is one FTS5 token, and together they are the FTS5 tokens of the text.
    assert [token for word in ours for token in _fts5_tokens(tokenizer, word)] == _fts5_tokens(tokenizer, text)


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("unicode") / "memories.db"

    async def seed() -> None:
        async with Client(create_server(Settings(db_path=str(path)))) as client:
            for message in ("I have a dog called Biggie.", "Ich wohne in Köln und liebe Käse.", "我喜欢喝茶。"):
                await client.call_tool("store_memory", {"message": message})

    anyio.run(seed)
    return path


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_any_unicode_query_gives_a_valid_page_or_a_clear_error(seeded_db: Path, query: str) -> None:
    async def ask() -> None:
        async with Client(create_server(Settings(db_path=str(seeded_db))), raise_exceptions=True) as client:
            result = await client.call_tool("search_memories", {"query": query, "limit": 2})
        try:
            check_query(query)
        except InvalidInput as bound:  # past the documented query bounds (issue 12): that reason, as a tool error
            assert result.is_error and isinstance(result.content[0], TextContent)
            assert str(bound) in result.content[0].text
            return
        if query.strip() != "*" and build_match_expression(query) is None:
            assert result.is_error
            assert isinstance(result.content[0], TextContent)
            assert "query" in result.content[0].text and (
                "no word" in result.content[0].text or "empty" in result.content[0].text
            )
            return
        assert not result.is_error, result.content
        page = result.structured_content
        assert page is not None
        total, hits = page["pagination"]["total_count"], page["results"]
        assert 0 <= len(hits) <= 2 and len(hits) <= total <= 3
        assert page["pagination"]["has_more"] == (len(hits) < total)
        assert all(0.0 <= hit["relevance_score"] <= 1.0 for hit in hits)

    anyio.run(ask)
