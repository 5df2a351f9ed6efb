"""Search by meaning with the real embedded model (all-MiniLM-L6-v2 int8 ONNX), on real SQLite files."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import numpy as np
import pytest
from mcp import Client

from harmonia_mcp import embed
from harmonia_mcp.config import Settings
from harmonia_mcp.embed import EmbeddingError, OnnxEmbedder, Vectors
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.models import Category, Memory
from harmonia_mcp.search import Candidate, Fusion, rank_candidates, text_weight_for
from harmonia_mcp.server import create_server
from harmonia_mcp.service import MemoryService, ServiceLimits
from harmonia_mcp.store import Ranking, open_store
from harmonia_mcp.vectors import VectorIndex

pytestmark = pytest.mark.anyio

LIMITS = ServiceLimits(default_user="default", max_message_bytes=32 * 1024, timezone=ZoneInfo("UTC"))
FACTS = [
    "I have a dog called Biggie",
    "I work as a nurse",
    "I'm vegetarian",
    "My daughter Mia starts school in September",
    "My favourite colour is green",
]
DISTRACTORS = [
    "The weather in Lisbon was lovely yesterday",
    "I watched a documentary about volcanoes",
    "My laptop needs a new battery",
    "We painted the kitchen walls last weekend",
    "The train was late again this morning",
]


@pytest.fixture(scope="session")
def minilm() -> OnnxEmbedder:
    """The real model, loaded once per test session (later OnnxEmbedder()s reuse the loaded session)."""
    model = OnnxEmbedder()
    model.load()
    return model


class Renamed:
    """The real model under another name and, optionally, a failure: a stand-in for "another model"."""

    def __init__(self, inner: OnnxEmbedder, model: str, *, fail_start: bool = False, fail_embed: bool = False) -> None:
        self.inner = inner
        self._model = model
        self.fail_start = fail_start
        self.fail_embed = fail_embed
        self.calls = 0

    @property
    def model(self) -> str:
        return self._model

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    async def start(self) -> None:
        if self.fail_start:
            raise EmbeddingError("model file /nowhere/model.onnx does not exist")

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        if self.fail_embed:
            raise EmbeddingError("onnxruntime: simulated failure")
        return await self.inner.embed(texts)


@asynccontextmanager
async def service_on(path: Path, embedder: Any | None) -> AsyncIterator[MemoryService]:
    async with open_store(str(path)) as store:
        vectors = VectorIndex(store, embedder) if embedder is not None else None
        if vectors is not None:
            await vectors.load()
        yield MemoryService(store, RulesExtractor(), LIMITS, vectors=vectors)


async def _store_all(service: MemoryService, messages: Sequence[str], user: str = "alice") -> None:
    for message in messages:
        await service.store_memory(message, user_id=user)


async def _contents(service: MemoryService, query: str, user: str = "alice", **options: Any) -> list[str]:
    result = await service.search_memories(query, user_id=user, **options)
    return [hit.content for hit in result.results]


def _vector_rows(path: Path) -> list[tuple[int, str, str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT rowid, user_id, model, dimension FROM memory_vectors ORDER BY rowid").fetchall()


# --- the embedder ---


def test_minilm_gives_unit_vectors_that_put_a_dog_near_a_puppy(minilm: OnnxEmbedder) -> None:
    vectors = minilm.embed_sync(["I have a dog", "User owns a puppy", "The weather is nice"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_a_query_of_thousands_of_words_is_cut_before_embedding(minilm: OnnxEmbedder) -> None:
    long = "dog " * 5000
    assert len(embed.clip(long)) == embed.MAX_EMBED_CHARS
    assert np.allclose(minilm.embed_sync([long]), minilm.embed_sync([long[: embed.MAX_EMBED_CHARS]]))


class Gated(Renamed):
    """The real model, but each call waits for `gate` when `hold` is set (to interleave two calls)."""

    def __init__(self, inner: OnnxEmbedder) -> None:
        super().__init__(inner, inner.model)
        self.gate = anyio.Event()
        self.hold = False

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if self.hold:
            await self.gate.wait()
        return await super().embed(texts)


async def test_embedding_many_texts_survives_another_call_trimming_the_cache(
    tmp_path: Path, minilm: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A call that found "cached" in the cache and then waited for the model must still answer it after
    # another call filled the cache past its size and evicted it (this raised KeyError once).
    from harmonia_mcp import vectors as vectors_module

    monkeypatch.setattr(vectors_module, "QUERY_CACHE", 2)
    gated = Gated(minilm)
    async with open_store(str(tmp_path / "m.db")) as store:
        index = VectorIndex(store, gated)
        await index.load()
        (cached,) = await index.embed_texts(["cached"])
        gated.hold = True
        answers: dict[str, list[Vectors]] = {}

        async def slow() -> None:
            answers["slow"] = await index.embed_texts(["cached", "waits for the model"])

        async with anyio.create_task_group() as group:
            group.start_soon(slow)
            await anyio.sleep(0.05)
            gated.hold = False
            answers["fast"] = await index.embed_texts(["one", "two", "three"])
            gated.gate.set()
    first, second = answers["slow"]
    assert np.array_equal(first, cached)
    assert np.allclose(second, minilm.embed_sync(["waits for the model"])[0], atol=1e-5)
    assert len(answers["fast"]) == 3


def test_a_corrupt_model_file_is_refused_by_its_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"not a model")
    monkeypatch.setattr(embed, "default_model_path", lambda: corrupt)
    with pytest.raises(EmbeddingError, match="sha256"):
        OnnxEmbedder(threads=3).load()  # threads=3: not the session the other tests share


# --- meaning through the MCP client ---


async def test_the_issues_paraphrases_are_found_through_the_mcp_client(db_path: Path, minilm: OnnxEmbedder) -> None:
    settings = Settings(db_path=str(db_path), extractor="rules", embedder="embedded")
    async with Client(create_server(settings), raise_exceptions=True) as client:
        for message in [*DISTRACTORS, *FACTS]:
            await client.call_tool("store_memory", {"message": message})
        expected = {"pet": "dog called Biggie", "job": "nurse", "favorite": "favourite colour", "kids": "daughter"}
        for query, wanted in expected.items():
            result: dict[str, Any] = {}
            with anyio.fail_after(30):
                while result.get("mode") != "hybrid":  # the model loads after start-up
                    result = (await client.call_tool("search_memories", {"query": query})).structured_content or {}
                    await anyio.sleep(0.05)
            assert wanted in result["results"][0]["content"], (query, result["results"])
            assert 0.0 < result["results"][0]["relevance_score"] <= 1.0


async def test_keyword_mode_does_not_find_a_paraphrase_and_says_so(db_path: Path, minilm: OnnxEmbedder) -> None:
    async with service_on(db_path, OnnxEmbedder()) as service:
        await _store_all(service, FACTS)
        assert await _contents(service, "pet", mode="keyword") == []
        assert await _contents(service, "pet", mode="semantic") != []
        result = await service.search_memories("pet", user_id="alice")
        assert result.mode == "hybrid" and result.results[0].content == "User has a dog called Biggie"


# --- union and fusion ---


def _candidate(rowid: int, strength: float, cosine: float | None, own: bool = True) -> Candidate:
    now = datetime.now(UTC).isoformat()
    memory = Memory(
        memory_id=f"mem_{rowid:016x}",
        user_id="u",
        content=f"memory {rowid}",
        category=Category.FACT,
        confidence=0.8,
        entities=[],
        tags=[],
        event_time=None,
        source_message=None,
        speaker=None,
        session_id=None,
        metadata={},
        extractor="rules",
        status="active",
        created_at=now,
        updated_at=now,
    )
    return Candidate(rowid, memory, -rowid, strength, own, cosine)


def test_fusion_ranks_the_union_and_a_hit_found_by_one_side_still_ranks() -> None:
    both = _candidate(1, strength=5.0, cosine=0.6)
    words_only = _candidate(2, strength=10.0, cosine=None)
    meaning_only = _candidate(3, strength=0.0, cosine=0.65)
    neither_much = _candidate(4, strength=1.0, cosine=0.1)
    fusion = Fusion(text_weight=0.5, cosine_floor=0.2, cosine_ceiling=0.7, text_reference=0.0, evidence_strength=0.0)
    ranked = rank_candidates(
        [neither_much, words_only, meaning_only, both], "hybrid", fusion, Ranking(), now=datetime.now(UTC)
    )
    # match: both 0.5*0.5 + 0.5*0.8 = 0.65; words only 0.5*1.0 = 0.5; meaning only 0.5*0.9 = 0.45; 0.05.
    assert [candidate.rowid for candidate in ranked] == [1, 2, 3, 4]
    assert [round(candidate.match, 6) for candidate in ranked] == [0.65, 0.5, 0.45, 0.05]
    assert all(0.0 < candidate.relevance <= 1.0 for candidate in ranked)


def test_keyword_and_semantic_modes_score_by_one_side_only() -> None:
    words, meaning = _candidate(1, 4.0, 0.1), _candidate(2, 1.0, 0.7)
    now = datetime.now(UTC)
    assert [c.rowid for c in rank_candidates([words, meaning], "keyword", Fusion(), Ranking(), now=now)] == [1, 2]
    assert [c.rowid for c in rank_candidates([words, meaning], "semantic", Fusion(), Ranking(), now=now)] == [2, 1]


def test_the_text_weight_follows_the_querys_keyword_evidence() -> None:
    fusion = Fusion()
    assert text_weight_for(0.0, fusion) == pytest.approx(fusion.weak_text_weight)
    assert text_weight_for(fusion.evidence_strength / 2, fusion) == pytest.approx(
        (fusion.weak_text_weight + fusion.text_weight) / 2
    )
    assert text_weight_for(10 * fusion.evidence_strength, fusion) == pytest.approx(fusion.text_weight)
    assert text_weight_for(1.0, Fusion(text_weight=0.7, evidence_strength=0.0)) == pytest.approx(0.7)


def test_meaning_decides_when_the_only_word_match_is_weak_and_words_decide_when_it_is_strong() -> None:
    now = datetime.now(UTC)
    fixed_high, fixed_low = Fusion(evidence_strength=0.0), Fusion(text_weight=0.2, evidence_strength=0.0)

    def order(strength: float, fusion: Fusion) -> list[int]:
        words, meaning = _candidate(1, strength=strength, cosine=0.3), _candidate(2, strength=0.0, cosine=0.55)
        return [c.rowid for c in rank_candidates([words, meaning], "hybrid", fusion, Ranking(), now=now)]

    # A common word matched weakly (a paraphrase): the memory that means it wins, where a fixed 0.85 lets words win.
    assert order(4.0, Fusion()) == [2, 1]
    assert order(4.0, fixed_high) == [1, 2]
    # A strong word match: words win, where a fixed low text weight lets the nearer meaning win.
    assert order(30.0, Fusion()) == [1, 2]
    assert order(30.0, fixed_low) == [2, 1]


def test_semantic_mode_keeps_the_order_of_neighbours_above_the_hybrid_ceiling() -> None:
    fusion = Fusion()
    nearer, near = _candidate(1, 0.0, fusion.cosine_ceiling + 0.1), _candidate(2, 0.0, fusion.cosine_ceiling + 0.05)
    ranked = rank_candidates([near, nearer], "semantic", fusion, Ranking(), now=datetime.now(UTC))
    assert [c.rowid for c in ranked] == [1, 2] and ranked[0].relevance > ranked[1].relevance


def test_a_provenance_only_match_cannot_outrank_a_match_by_the_memorys_own_text() -> None:
    provenance = _candidate(1, strength=10.0, cosine=0.3, own=False)
    own = _candidate(2, strength=6.0, cosine=0.3, own=True)
    ranked = rank_candidates([provenance, own], "hybrid", Fusion(), Ranking(), now=datetime.now(UTC))
    assert [candidate.rowid for candidate in ranked] == [2, 1]


async def test_where_do_i_live_finds_the_home_not_the_job_said_in_the_same_breath(
    db_path: Path, minilm: OnnxEmbedder
) -> None:
    async with service_on(db_path, OnnxEmbedder()) as service:
        await _store_all(service, ["I live in Lisbon and I work as a product designer at Farfetch", *DISTRACTORS])
        contents = await _contents(service, "where do I live?")
        assert "Lisbon" in contents[0], contents


# --- filters, pagination, isolation ---


async def test_filters_and_pagination_apply_to_the_vector_side(db_path: Path, minilm: OnnxEmbedder) -> None:
    async with service_on(db_path, OnnxEmbedder()) as service:
        await _store_all(service, [*FACTS, *DISTRACTORS, "I have two cats", "My parrot talks"])
        everything = await service.search_memories("animals", user_id="alice", mode="semantic", limit=100)
        pets = [hit.content for hit in everything.results[:3]]
        assert all(any(word in text for word in ("dog", "cats", "parrot")) for text in pets), pets
        in_health = await service.search_memories("animals", user_id="alice", mode="semantic", category="health")
        assert all(hit.category == Category.HEALTH for hit in in_health.results)
        seen: list[str] = []
        for offset in range(0, everything.pagination.total_count, 2):
            page = await service.search_memories("animals", user_id="alice", limit=2, offset=offset)
            seen += [hit.memory_id for hit in page.results]
            assert page.pagination.has_more == (offset + len(page.results) < page.pagination.total_count)
        assert len(seen) == len(set(seen))
        hybrid_total = (await service.search_memories("animals", user_id="alice", limit=1)).pagination.total_count
        assert len(seen) == hybrid_total


async def test_another_users_vectors_are_never_searched(db_path: Path, minilm: OnnxEmbedder) -> None:
    async with service_on(db_path, OnnxEmbedder()) as service:
        await _store_all(service, ["I have a dog called Biggie"], user="bob")
        await _store_all(service, DISTRACTORS, user="alice")
        for mode in ("semantic", "hybrid"):
            contents = await _contents(service, "pets", mode=mode, limit=100)
            assert not any("Biggie" in text for text in contents)
        assert await _contents(service, "pets", user="bob", mode="semantic") == ["User has a dog called Biggie"]


# --- writes keep vectors current ---


async def test_rewrites_restores_and_purges_keep_vectors_in_step(db_path: Path, minilm: OnnxEmbedder) -> None:
    async with service_on(db_path, OnnxEmbedder()) as service:
        await _store_all(service, ["I work at TechCorp"])
        await _store_all(service, ["I have a dog called Biggie"])
        # An update rewrites or supersedes the old memory; either way the new text is what meaning finds.
        await service.store_memory("I work at Globex now", user_id="alice", resolution_strategy="update")
        found = await _contents(service, "where does the user work", mode="semantic")
        assert found[0].startswith("User works at Globex") and not any("TechCorp" in text for text in found), found
        dog = (await service.search_memories("Biggie", user_id="alice")).results[0]
        await service.delete_memory(dog.memory_id, user_id="alice")
        assert "User has a dog called Biggie" not in await _contents(service, "pet", mode="semantic")
        await service.restore_memory(dog.memory_id, user_id="alice")
        assert (await _contents(service, "pet", mode="semantic"))[0] == "User has a dog called Biggie"
    rows = _vector_rows(db_path)
    assert {row[2] for row in rows} == {embed.MINILM_MODEL_NAME} and {row[3] for row in rows} == {384}
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM memories WHERE content = 'User has a dog called Biggie'")
    assert len(_vector_rows(db_path)) == len(rows) - 1


async def test_a_model_change_re_embeds_every_memory(db_path: Path, minilm: OnnxEmbedder) -> None:
    async with service_on(db_path, Renamed(OnnxEmbedder(), "old-model")) as service:
        await _store_all(service, FACTS)
    assert {row[2] for row in _vector_rows(db_path)} == {"old-model"}
    async with service_on(db_path, OnnxEmbedder()) as service:
        assert service.vectors is not None
        assert await service.store.vector_counts(embed.MINILM_MODEL_NAME, 384) == (5, 5)
        # Until re-embedded, meaning finds nothing (no vector of this model) and words still do.
        assert await _contents(service, "pet", mode="semantic") == []
        assert (await _contents(service, "Biggie"))[0] == "User has a dog called Biggie"
        assert await service.vectors.embed_pending() == 5
        assert await service.store.vector_counts(embed.MINILM_MODEL_NAME, 384) == (5, 0)
        assert (await _contents(service, "pet"))[0] == "User has a dog called Biggie"
    assert {row[2] for row in _vector_rows(db_path)} == {embed.MINILM_MODEL_NAME}


async def test_a_restart_embeds_the_memories_stored_while_there_was_no_model(
    db_path: Path, minilm: OnnxEmbedder
) -> None:
    async with service_on(db_path, None) as service:
        await _store_all(service, FACTS)
    assert _vector_rows(db_path) == []
    settings = Settings(db_path=str(db_path), extractor="rules", embedder="embedded")
    async with Client(create_server(settings), raise_exceptions=True) as client:
        with anyio.fail_after(30):
            while len(_vector_rows(db_path)) < len(FACTS):  # the background worker drains the queue
                await anyio.sleep(0.05)
        found = await client.call_tool("search_memories", {"query": "pet", "user_id": "alice"})
        result = found.structured_content or {}
        assert result["mode"] == "hybrid" and result["results"][0]["content"] == "User has a dog called Biggie"


# --- an embedder that fails ---


@pytest.mark.parametrize("failure", ["start", "embed"])
async def test_a_failing_embedder_never_fails_store_or_search(
    db_path: Path, minilm: OnnxEmbedder, failure: str
) -> None:
    broken = Renamed(OnnxEmbedder(), embed.MINILM_MODEL_NAME, fail_start=failure == "start", fail_embed=True)
    async with service_on(db_path, broken) as service:
        stored = await service.store_memory("I have a dog called Biggie", user_id="alice")
        assert [memory.action for memory in stored.memories] == ["created"]
        result = await service.search_memories("Biggie", user_id="alice")
        assert [hit.content for hit in result.results] == ["User has a dog called Biggie"]
        assert result.mode == "keyword" and result.warnings and "keyword" in result.warnings[0]
        assert "simulated" in result.warnings[0] or "does not exist" in result.warnings[0]
    assert _vector_rows(db_path) == []  # left queued for when the model works


async def test_keyword_only_while_the_model_loads_and_with_no_embedder(db_path: Path) -> None:
    async with open_store(str(db_path)) as store:
        loading = MemoryService(store, RulesExtractor(), LIMITS, vectors=VectorIndex(store, OnnxEmbedder()))
        await loading.store_memory("I have a dog called Biggie", user_id="alice")
        result = await loading.search_memories("Biggie dog", user_id="alice")
        assert result.mode == "keyword" and "loading" in result.warnings[0]
        none = MemoryService(store, RulesExtractor(), LIMITS)
        plain = await none.search_memories("Biggie dog", user_id="alice")
        assert plain.mode == "keyword" and plain.warnings == []
        asked = await none.search_memories("Biggie dog", user_id="alice", mode="semantic")
        assert asked.mode == "keyword" and "HARMONIA_EMBEDDER is none" in asked.warnings[0]


# --- the command line ---


def test_reindex_embeds_what_lacks_a_vector_and_doctor_counts_it(
    db_path: Path, minilm: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harmonia_mcp.cli import main

    async def store_without_model() -> None:
        async with service_on(db_path, None) as service:
            await _store_all(service, FACTS)

    anyio.run(store_without_model)
    monkeypatch.setenv("HARMONIA_EXTRACTOR", "rules")
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    assert main(["doctor", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert "embedder:  embedded, model all-MiniLM-L6-v2-int8, 384 dimensions" in out
    assert "vectors:   0 of 5 memories have a current vector; 5 wait" in out
    assert main(["reindex", "--db", str(db_path)]) == 0
    assert "embedded 5 memories" in capsys.readouterr().out
    assert len(_vector_rows(db_path)) == 5
    assert main(["reindex", "--all", "--db", str(db_path)]) == 0
    assert "embedded 5 memories" in capsys.readouterr().out
    assert main(["doctor", "--db", str(db_path)]) == 0
    assert "vectors:   5 of 5 memories have a current vector; 0 wait" in capsys.readouterr().out
    monkeypatch.setenv("HARMONIA_EMBEDDER", "none")
    assert main(["reindex", "--db", str(db_path)]) == 2


# --- the Ollama embedder ---


async def test_the_ollama_embedder_stores_its_model_and_dimension(db_path: Path, fake_ollama: Any) -> None:
    from harmonia_mcp.embed import OllamaEmbedder

    embedder = OllamaEmbedder(fake_ollama.url, "nomic-embed-text", timeout_seconds=5)
    try:
        async with service_on(db_path, embedder) as service:
            await _store_all(service, FACTS[:2])
            result = await service.search_memories("Biggie", user_id="alice")
            assert result.mode == "hybrid" and result.results[0].content == "User has a dog called Biggie"
    finally:
        await embedder.aclose()
    assert {(row[2], row[3]) for row in _vector_rows(db_path)} == {("ollama:nomic-embed-text", 8)}
    embeds = [body for method, path, body in fake_ollama.requests if path == "/api/embed"]
    assert embeds and all(body["model"] == "nomic-embed-text" for body in embeds)


async def test_ollama_down_leaves_search_by_keyword_with_a_warning(db_path: Path, refused_url: str) -> None:
    from harmonia_mcp.embed import OllamaEmbedder

    embedder = OllamaEmbedder(refused_url, "nomic-embed-text", timeout_seconds=2)
    try:
        async with service_on(db_path, embedder) as service:
            stored = await service.store_memory("I have a dog called Biggie", user_id="alice")
            assert stored.memories[0].action == "created"
            result = await service.search_memories("Biggie", user_id="alice", mode="semantic")
            assert result.mode == "keyword" and "Ollama embed" in result.warnings[0]
            assert [hit.content for hit in result.results] == ["User has a dog called Biggie"]
    finally:
        await embedder.aclose()


def test_a_pinned_memory_gets_the_keyword_paths_bounded_boost_in_hybrid_ranking_too() -> None:
    plain, pinned = _candidate(2, strength=6.0, cosine=0.5), _candidate(1, strength=6.0, cosine=0.5)
    pinned.memory = pinned.memory.model_copy(update={"pinned": True})
    ranked = rank_candidates([plain, pinned], "hybrid", Fusion(), Ranking(), now=datetime.now(UTC))
    assert [candidate.rowid for candidate in ranked] == [1, 2]  # the pinned one wins the tie, not the newer rowid
    assert ranked[0].relevance == pytest.approx(min(1.0, ranked[1].relevance * (1 + Ranking().pin_weight)))
    assert all(0.0 < candidate.relevance <= 1.0 for candidate in ranked)


async def test_a_semantic_search_whose_query_cannot_be_embedded_answers_by_keyword(
    db_path: Path, minilm: OnnxEmbedder
) -> None:
    flaky = Renamed(OnnxEmbedder(), embed.MINILM_MODEL_NAME)
    async with service_on(db_path, flaky) as service:
        await _store_all(service, ["I have a dog called Biggie", "I work as a nurse"])
        assert len(_vector_rows(db_path)) == 2  # embedded while the model worked
        flaky.fail_embed = True
        result = await service.search_memories("Biggie", user_id="alice", mode="semantic")
    # The keyword side was not part of a semantic search; it must run once the vector side has nothing. (The
    # nurse follows, matched only through its provenance: the message before it named Biggie.)
    assert [hit.content for hit in result.results][:1] == ["User has a dog called Biggie"]
    assert result.mode == "keyword" and "simulated" in result.warnings[0]


async def test_the_two_sides_of_a_search_run_at_once_and_a_failure_arrives_as_itself() -> None:
    from harmonia_mcp.errors import InvalidInput
    from harmonia_mcp.service import _concurrently

    keyword_started = anyio.Event()
    order: list[str] = []

    async def keyword_side() -> None:
        keyword_started.set()
        order.append("keyword")

    async def vector_side() -> None:
        await keyword_started.wait()  # one after the other (vector side first) would never get past this
        order.append("vector")

    with anyio.fail_after(10):  # a guard against a hang, not a timing
        await _concurrently(vector_side, keyword_side)
    assert order == ["keyword", "vector"]

    cancelled: list[bool] = []

    async def slow() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    async def failing() -> None:
        await anyio.sleep(0)
        raise InvalidInput("query too long")

    with pytest.raises(InvalidInput, match="query too long"):  # not an exception group
        await _concurrently(slow, failing)
    assert cancelled == [True]
