"""Search by meaning, the quality half (issue 9): the neighbour floors, and vector neighbours as reconciliation
candidates, with the real embedded model (all-MiniLM-L6-v2 int8 ONNX) on real SQLite files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from harmonia_mcp.embed import OnnxEmbedder
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.search import Fusion, admitted_neighbours
from harmonia_mcp.service import MemoryService, ServiceLimits
from harmonia_mcp.store import open_store
from harmonia_mcp.vectors import VectorIndex

pytestmark = pytest.mark.anyio

LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "bench" / "locomo"
LIMITS = ServiceLimits(default_user="default", max_message_bytes=32 * 1024, timezone=ZoneInfo("UTC"))


@pytest.fixture(scope="module")
def minilm() -> OnnxEmbedder:
    model = OnnxEmbedder()
    model.load()
    return model


@asynccontextmanager
async def service_on(path: Path, embedder: OnnxEmbedder | None) -> AsyncIterator[MemoryService]:
    async with open_store(str(path)) as store:
        vectors = VectorIndex(store, embedder) if embedder is not None else None
        if vectors is not None:
            assert await vectors.load()
        yield MemoryService(store, RulesExtractor(), LIMITS, vectors=vectors)


async def _statuses(service: MemoryService, user: str = "alice") -> dict[str, str]:
    listed = await service.list_memories(user_id=user, include_inactive=True)
    return {memory.content: memory.status for memory in listed.memories}


# --- the neighbour floors ---


def test_a_neighbour_must_pass_the_absolute_and_the_relative_floor() -> None:
    fusion = Fusion(candidate_floor=0.3, relative_floor=0.2)
    near = [(1, 0.55), (2, 0.36), (3, 0.34), (4, 0.29)]
    # best 0.55: the floor is max(0.3, 0.55 - 0.2) = 0.35, so 0.34 goes (relative) and 0.29 too (absolute).
    assert admitted_neighbours(near, fusion) == [(1, 0.55), (2, 0.36)]
    assert admitted_neighbours([(5, 0.31), (6, 0.29)], fusion) == [(5, 0.31)]
    assert admitted_neighbours([], fusion) == []


def test_the_absolute_floor_moves_from_the_plain_to_the_centred_one_with_the_users_centring() -> None:
    fusion = Fusion(candidate_floor=0.15, plain_candidate_floor=0.3, relative_floor=1.0)
    near = [(1, 0.31), (2, 0.25), (3, 0.16)]
    assert admitted_neighbours(near, fusion, centring=0.0) == [(1, 0.31)]  # a barely centred user: plain floor
    assert admitted_neighbours(near, fusion, centring=0.5) == [(1, 0.31), (2, 0.25)]  # floor 0.225
    assert admitted_neighbours(near, fusion, centring=1.0) == near


async def test_in_a_tiny_collection_a_name_does_not_bring_the_nearest_unrelated_memory(
    db_path: Path, minilm: OnnxEmbedder
) -> None:
    async with service_on(db_path, OnnxEmbedder()) as service:
        for message in ["I live in Zanzibar", "I have a parrot called Kiwi"]:
            await service.store_memory(message, user_id="bob")
        kiwi = await service.search_memories("Kiwi", user_id="bob")
        assert kiwi.mode == "hybrid"
        assert [hit.content for hit in kiwi.results] == ["User has a parrot called Kiwi"]
        # Meaning still finds what no word matches.
        pets = await service.search_memories("pets", user_id="bob")
        assert [hit.content for hit in pets.results] == ["User has a parrot called Kiwi"]


# Facts said among another conversation's turns, each asked for with words it does not contain. Before the
# search cosines were centred (issue 9, fourth round), "children", "brain teasers" and "medical history" found
# nothing here (every neighbour fell below the old 0.3 floor) and "financial goals" ranked its fact third.
AMONG_TURNS = {
    "financial goals": ("I'm saving money to buy a house", "User is saving money to buy a house"),
    "morning routine": ("I usually wake up at 5am", "User usually wakes up at 5am"),
    "past injuries": ("I broke my leg last year", "User broke their leg in"),
    "children": ("My son Leo is three years old", "User's son Leo is three years old"),
    "brain teasers": ("I do crossword puzzles every morning", "User does crossword puzzles every morning"),
    "kitchen hobbies": ("I make pasta from scratch on Sundays", "User makes pasta from scratch on Sundays"),
    "medical history": ("I had my appendix removed when I was twelve", "User had their appendix removed"),
}


async def test_paraphrases_find_their_fact_among_a_conversations_turns(db_path: Path, minilm: OnnxEmbedder) -> None:
    if not (LOCOMO / "turns.jsonl").exists():
        pytest.skip(f"shared LoCoMo data not found at {LOCOMO}")
    with (LOCOMO / "turns.jsonl").open(encoding="utf-8") as handle:
        turns = [turn for turn in map(json.loads, handle) if turn["conv_id"] == "conv-30"][:60]
    async with service_on(db_path, OnnxEmbedder()) as service:
        for turn in turns:
            await service.store_memory(turn["text"], user_id="dana", speaker=turn["speaker"])
        for message, _ in AMONG_TURNS.values():
            await service.store_memory(message, user_id="dana")
        for query, (_, content) in AMONG_TURNS.items():
            found = await service.search_memories(query, user_id="dana", limit=3)
            assert found.mode == "hybrid"
            assert any(hit.content.startswith(content) for hit in found.results), (query, found.results)


# --- vector neighbours as reconciliation candidates (item 6) ---


async def test_a_new_teaching_job_supersedes_the_old_one_though_they_share_no_word(
    db_path: Path, minilm: OnnxEmbedder
) -> None:
    async with service_on(db_path, OnnxEmbedder()) as service:
        await service.store_memory("I am a teacher at Lincoln High", user_id="alice")
        stored = await service.store_memory("I now teach at Roosevelt Middle School", user_id="alice")
        assert [memory.action for memory in stored.memories] == ["superseded_previous"]
        assert await _statuses(service) == {
            "User is a teacher at Lincoln High": "superseded",
            "User now teaches at Roosevelt Middle School": "active",
        }


async def test_without_an_embedder_the_same_pair_is_not_found_by_words(db_path: Path) -> None:
    # The control: the FTS candidates alone miss the old job, so the neighbours are what found it above.
    async with service_on(db_path, None) as service:
        await service.store_memory("I am a teacher at Lincoln High", user_id="alice")
        await service.store_memory("I now teach at Roosevelt Middle School", user_id="alice")
        assert set((await _statuses(service)).values()) == {"active"}


async def test_a_near_but_unrelated_memory_is_never_superseded(db_path: Path, minilm: OnnxEmbedder) -> None:
    async with service_on(db_path, OnnxEmbedder()) as service:
        # Neighbours in meaning (cosine 0.5-0.7) that say different, compatible things: two pets; a volunteer
        # post and a job; a club membership, which is not an employer, after a job.
        for message in [
            "I have a dog called Biggie",
            "I have a cat called Tom",
            "I am a volunteer at the animal shelter",
            "I work at Google",
            "My favourite colour is blue",
            "I am a member of the chess club at Lincoln High",
        ]:
            await service.store_memory(message, user_id="alice")
        statuses = await _statuses(service)
        assert len(statuses) == 6 and set(statuses.values()) == {"active"}, statuses
