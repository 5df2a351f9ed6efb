"""The vector side's two regimes (exact, and coarse projection + exact re-score) and the query cache, on real
SQLite files. Vectors are written under a model name directly, so the search maths is checked against a brute-force
float32 reference computed here; the real model's queries are covered in test_semantic.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmonia_mcp.embed import Vectors
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.models import Category
from harmonia_mcp.service import MemoryService, ServiceLimits
from harmonia_mcp.store import MemoryFilter, Store, open_store
from harmonia_mcp.vectors import CENTRE_PRIOR, RERANK_MIN, VectorIndex, _UserMatrix, fit_basis

pytestmark = pytest.mark.anyio

LIMITS = ServiceLimits(default_user="default", max_message_bytes=32 * 1024, timezone=ZoneInfo("UTC"))
DIMENSION = 128
HEALTH = MemoryFilter(category=Category.HEALTH)
MODEL = "test-structured"


class Structured:
    """An embedder whose vectors have the low-rank structure of sentence embeddings (a few strong directions plus
    noise), so a projection on the top directions keeps most of each dot product, as it does for MiniLM."""

    def __init__(self) -> None:
        self.calls = 0
        self._rng = np.random.default_rng(11)
        self._mix = self._rng.standard_normal((8, DIMENSION)).astype(np.float32)

    @property
    def model(self) -> str:
        return MODEL

    @property
    def dimension(self) -> int:
        return DIMENSION

    async def start(self) -> None:
        return None

    def sample(self, count: int) -> Vectors:
        latent = self._rng.standard_normal((count, 8)).astype(np.float32)
        noise = 0.3 * self._rng.standard_normal((count, DIMENSION)).astype(np.float32)
        vectors = latent @ self._mix + noise
        return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        return self.sample(len(texts))


def _export(user: str, count: int) -> str:
    memories = [
        {
            "memory_id": f"mem_{(ord(user[0]) << 40) + index:016x}",
            "content": f"User note number {index}",
            "category": "health" if index % 10 == 0 else "other",
            "confidence": 0.9,
            "entities": [],
            "tags": [],
            "event_time": None,
            "source_message": None,
            "speaker": "User",
            "session_id": None,
            "metadata": {},
            "extractor": "rules",
            "status": "active",
            "created_at": "2024-01-01T00:00:00+00:00",
            "updated_at": "2024-01-01T00:00:00+00:00",
        }
        for index in range(count)
    ]
    return json.dumps({"memories": memories})


async def _with_vectors(store: Store, embedder: Structured, user: str, count: int) -> dict[int, Vectors]:
    await MemoryService(store, RulesExtractor(), LIMITS).import_memories(_export(user, count), user_id=user)
    pending = await store.unembedded(MODEL, DIMENSION, user_id=user, limit=10**6)
    vectors = embedder.sample(len(pending))
    rows = [(rowid, content, vector.tobytes()) for (rowid, _, content, _), vector in zip(pending, vectors, strict=True)]
    async with store.transaction() as db:
        await store.write_vectors(db, MODEL, DIMENSION, rows)
    return {rowid: vector for (rowid, _, _, _), vector in zip(pending, vectors, strict=True)}


def _exact_top(vectors: dict[int, Vectors], query: Vectors, count: int, admit: set[int] | None = None) -> list[int]:
    ranked = sorted(vectors, key=lambda rowid: -float(vectors[rowid] @ query))
    return [rowid for rowid in ranked if admit is None or rowid in admit][:count]


async def test_the_coarse_regime_returns_exact_cosines_and_nearly_the_exact_top_k(db_path: Path) -> None:
    embedder = Structured()
    async with open_store(str(db_path)) as store:
        vectors = await _with_vectors(store, embedder, "alice", 4 * RERANK_MIN)
        coarse = VectorIndex(store, embedder, coarse_from=1)
        exact = VectorIndex(store, embedder)
        await coarse.load()
        await exact.load()
        overlaps = []
        for query in embedder.sample(20):
            found = await coarse.nearest("alice", query, MemoryFilter(), count=20)
            for rowid, cosine in found:
                assert cosine == pytest.approx(float(vectors[rowid] @ query), abs=1e-6)  # re-scored exactly
            assert [cosine for _, cosine in found] == sorted((cosine for _, cosine in found), reverse=True)
            truth = _exact_top(vectors, query, 20)
            assert [rowid for rowid, _ in await exact.nearest("alice", query, MemoryFilter(), count=20)] == truth
            overlaps.append(len({rowid for rowid, _ in found} & set(truth)) / 20)
        assert np.mean(overlaps) >= 0.95, overlaps
        assert coarse._cache["alice"].matrix.shape[1] < DIMENSION  # the projection is what is held


async def test_the_coarse_regime_applies_filters_widens_its_pool_and_keeps_to_one_user(db_path: Path) -> None:
    embedder = Structured()
    async with open_store(str(db_path)) as store:
        vectors = await _with_vectors(store, embedder, "alice", 3 * RERANK_MIN)
        others = await _with_vectors(store, embedder, "bob", 200)
        index = VectorIndex(store, embedder, coarse_from=1)
        await index.load()
        health = set(await store.admitted("alice", HEALTH, list(vectors)))
        assert 0 < len(health) < len(vectors) // 5
        query = embedder.sample(1)[0]
        # 100 of a category that holds a tenth: the first pool (512) cannot hold them, so it must widen.
        found = await index.nearest("alice", query, HEALTH, count=100)
        assert len(found) == 100 and {rowid for rowid, _ in found} <= health
        truth = _exact_top(vectors, query, 100, admit=health)
        assert len({rowid for rowid, _ in found} & set(truth)) >= 90
        everything = await index.nearest("alice", query, MemoryFilter(), count=10**4)
        assert len(everything) == len(vectors) and not {rowid for rowid, _ in everything} & set(others)
        floor = sorted(float(vector @ query) for vector in vectors.values())[-30]
        above = await index.nearest("alice", query, MemoryFilter(), count=100, floor=floor)
        assert all(cosine >= floor for _, cosine in above) and len(above) >= 27


async def test_the_coarse_regime_stays_in_step_with_writes_and_similarities_are_exact(db_path: Path) -> None:
    embedder = Structured()
    async with open_store(str(db_path)) as store:
        vectors = await _with_vectors(store, embedder, "alice", 2 * RERANK_MIN)
        index = VectorIndex(store, embedder, coarse_from=1)
        await index.load()
        query = embedder.sample(1)[0]
        await index.nearest("alice", query, MemoryFilter(), count=5)  # reads the user's table
        some = list(vectors)[:50]
        similar = await index.similarities("alice", query, [*some, 10**9])
        assert set(similar) == set(some)
        for rowid in some:
            assert similar[rowid] == pytest.approx(float(vectors[rowid] @ query), abs=1e-6)
        # A new memory whose vector equals the query becomes the nearest through the cached (projected) table.
        await MemoryService(store, RulesExtractor(), LIMITS).import_memories(
            _export("alice", 2 * RERANK_MIN + 1), user_id="alice"
        )
        (newest,) = await store.unembedded(MODEL, DIMENSION, user_id="alice", limit=10)
        target = query.copy()

        class Exactly(Structured):
            async def embed(self, texts: Sequence[str]) -> Vectors:
                return np.tile(target, (len(texts), 1))

        index.embedder = Exactly()
        assert await index.embed_pending(user_id="alice") == 1
        (best,) = await index.nearest("alice", query, MemoryFilter(), count=1)
        assert best[0] == newest[0] and best[1] == pytest.approx(1.0, abs=1e-5)


def _centred_reference(vectors: dict[int, Vectors], query: Vectors) -> dict[int, float]:
    """cos(d - c, q - c) computed directly, with c the sum of the *other* vectors / (n - 1 + CENTRE_PRIOR)."""
    total = np.stack(list(vectors.values())).astype(np.float64).sum(axis=0)
    out = {}
    for rowid, vector in vectors.items():
        centre = (total - vector) / (len(vectors) - 1 + CENTRE_PRIOR)
        moved, moved_query = vector - centre, query - centre
        out[rowid] = float(moved @ moved_query / (np.linalg.norm(moved) * np.linalg.norm(moved_query)))
    return out


@pytest.mark.parametrize("coarse_from", [1, 10**6])
async def test_centred_search_scores_about_the_users_shrunk_mean_in_both_regimes(
    db_path: Path, coarse_from: int
) -> None:
    embedder = Structured()
    async with open_store(str(db_path)) as store:
        vectors = await _with_vectors(store, embedder, "alice", 2 * RERANK_MIN)
        await _with_vectors(store, embedder, "bob", 50)  # another user's vectors must not move alice's centre
        index = VectorIndex(store, embedder, coarse_from=coarse_from)
        await index.load()
        query = embedder.sample(1)[0]
        truth = _centred_reference(vectors, query)
        found = await index.nearest("alice", query, MemoryFilter(), count=20, centred=True)
        for rowid, cosine in found:
            assert cosine == pytest.approx(truth[rowid], abs=1e-4)
        best = sorted(truth, key=lambda rowid: -truth[rowid])[:20]
        overlap = len({rowid for rowid, _ in found} & set(best))
        assert overlap == 20 if coarse_from > 1 else overlap >= 17
        # The centred order is not the raw order (else centring would change nothing).
        raw = [rowid for rowid, _ in await index.nearest("alice", query, MemoryFilter(), count=20)]
        assert raw != [rowid for rowid, _ in found]
        some = list(vectors)[:10]
        similar = await index.similarities("alice", query, some, centred=True)
        assert all(similar[rowid] == pytest.approx(truth[rowid], abs=1e-4) for rowid in some)


@asynccontextmanager
async def _alices_index(db_path: Path, count: int) -> AsyncIterator[tuple[dict[int, Vectors], VectorIndex, Vectors]]:
    """alice's `count` vectors, an exact-regime index over them (loaded), and a query vector."""
    embedder = Structured()
    async with open_store(str(db_path)) as store:
        vectors = await _with_vectors(store, embedder, "alice", count)
        index = VectorIndex(store, embedder)
        await index.load()
        yield vectors, index, embedder.sample(1)[0]


async def test_a_one_memory_users_centred_cosine_is_the_plain_cosine(db_path: Path) -> None:
    async with _alices_index(db_path, 1) as (vectors, index, query):
        ((rowid, cosine),) = await index.nearest("alice", query, MemoryFilter(), count=1, centred=True)
        assert cosine == pytest.approx(float(vectors[rowid] @ query), abs=1e-5)  # its own vector is not its centre
        assert await index.centring("alice") == pytest.approx(1 / (1 + CENTRE_PRIOR))


async def test_the_centre_follows_writes_and_removals(db_path: Path) -> None:
    async with _alices_index(db_path, 100) as (vectors, index, query):
        await index.nearest("alice", query, MemoryFilter(), count=1)  # reads the user's table
        table = index._cache["alice"]
        gone = list(vectors)[:30]
        table.remove(gone)
        replaced = list(vectors)[30]
        fresh = Structured().sample(1)
        table.upsert([replaced], fresh)
        kept = {rowid: vector for rowid, vector in vectors.items() if rowid not in gone}
        kept[replaced] = fresh[0]
        centre = table.centre()
        assert centre.size == len(kept)
        assert np.allclose(centre.total, np.stack(list(kept.values())).sum(axis=0), atol=1e-4)
        table.remove(list(kept))
        assert table.centre().size == 0 and np.allclose(table.centre().total, 0.0, atol=1e-4)


async def test_a_write_growing_the_table_during_a_filtered_search_does_not_stall_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `nearest` awaits the filter between chunks; a write landing then grows the cached table. The search must
    # still end with what it found (it once sorted the scores again and again, forever).
    embedder = Structured()
    async with open_store(str(db_path)) as store:
        vectors = await _with_vectors(store, embedder, "alice", 300)
        index = VectorIndex(store, embedder)
        await index.load()
        query = embedder.sample(1)[0]
        await index.nearest("alice", query, HEALTH, count=1)  # the table is cached now
        admitted = store.admitted
        grown = False

        async def admitted_during_a_write(user_id: str, memory_filter: MemoryFilter, rowids: list[int]) -> list[int]:
            nonlocal grown
            if not grown:
                grown = True
                index._cache["alice"].upsert([10**6], embedder.sample(1))  # a concurrent write's vector
            return await admitted(user_id, memory_filter, rowids)

        sorts = 0
        argsort = np.argsort

        def counted_argsort(*arguments: object, **options: object) -> object:
            nonlocal sorts
            sorts += 1
            assert sorts < 50, "nearest keeps sorting: it never ends"
            return argsort(*arguments, **options)  # type: ignore[call-overload]

        monkeypatch.setattr(store, "admitted", admitted_during_a_write)
        monkeypatch.setattr(np, "argsort", counted_argsort)
        found = await index.nearest("alice", query, HEALTH, count=100)  # more than the 30 health notes
        health = set(await admitted("alice", HEALTH, list(vectors)))
        assert grown and {rowid for rowid, _ in found} == health


async def test_a_repeated_query_is_embedded_once(db_path: Path) -> None:
    embedder = Structured()
    async with open_store(str(db_path)) as store:
        index = VectorIndex(store, embedder)
        await index.load()
        first = await index.embed_query("what pets does the user have")
        again = await index.embed_query("what pets does the user have")
        other = await index.embed_query("where does the user live")
        assert embedder.calls == 2 and np.array_equal(first, again) and not np.array_equal(first, other)
        with pytest.raises(ValueError):
            first[0] = 2.0  # the cached vector is shared, so it is read-only


def test_the_projection_keeps_the_strong_directions() -> None:
    sample = Structured().sample(4000)
    basis = fit_basis(sample, 8)
    assert basis.shape == (DIMENSION, 8)
    assert np.allclose(basis.T @ basis, np.eye(8), atol=1e-4)
    kept = np.linalg.norm(sample @ basis, axis=1) ** 2
    assert kept.mean() > 0.8  # 8 latent directions, noise 0.3 per coordinate: most of the energy is kept


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["upsert", "remove"]), st.lists(st.integers(1, 60), min_size=1, max_size=6)),
        max_size=40,
    ),
    st.lists(st.integers(1, 60), unique=True, max_size=30),
)
def test_the_user_table_finds_each_memorys_row_as_a_dict_would(
    operations: list[tuple[str, list[int]]], loaded: list[int]
) -> None:
    # The table finds rows by binary search over the rows read in rowid order and a dict for rows written out of
    # order later; a plain dict of every rowid (what it replaced) is the reference. Loaded in rowid order as a read
    # is, then writes of any rowid: older ones, repeated ones, removed ones written again.
    rng = np.random.default_rng(len(operations))
    table = _UserMatrix.build(4)
    reference: dict[int, Vectors] = {}
    first = sorted(loaded)
    if first:
        vectors = rng.standard_normal((len(first), 4)).astype(np.float32)
        table.upsert(first, vectors)
        reference.update(zip(first, vectors, strict=True))
    for kind, rowids in operations:
        if kind == "upsert":
            vectors = rng.standard_normal((len(rowids), 4)).astype(np.float32)
            table.upsert(rowids, vectors)
            reference.update(zip(rowids, vectors, strict=True))  # a rowid given twice: the last vector stays
        else:
            table.remove(rowids)
            for rowid in rowids:
                reference.pop(rowid, None)
    everything = list(range(0, 62))
    found = dict(table.live_rows(everything))
    assert set(found) == set(reference)
    for rowid, row in found.items():
        assert np.array_equal(table.matrix[row], reference[rowid])
        assert table.rowids[row] == rowid
    assert int(table.live[: table.size].sum()) == len(reference)
    assert not table.matrix[: table.size][~table.live[: table.size]].any()  # removed rows score 0
    assert len(set(table.rowids[: table.size].tolist())) == table.size  # one row per memory


async def test_two_users_interleaved_each_get_their_own_exact_neighbours_after_out_of_order_writes(
    db_path: Path,
) -> None:
    # Rowids of two users interleave in the file; each user's table holds its own only, and stays exact when an
    # older memory's vector arrives after the read (the table's out-of-order rows) and when vectors are replaced.
    embedder = Structured()
    async with open_store(str(db_path)) as store:
        service = MemoryService(store, RulesExtractor(), LIMITS)
        for _ in range(3):  # interleaved imports: alice, bob, alice, bob, ...
            await service.import_memories(_export("alice", 40), user_id="alice")
            await service.import_memories(_export("bob", 40), user_id="bob")
        alice = dict(await _vectors_for(store, embedder, "alice", skip=5))  # 5 oldest left without a vector
        bob = dict(await _vectors_for(store, embedder, "bob", skip=0))
        index = VectorIndex(store, embedder)
        await index.load()
        query = embedder.sample(1)[0]
        found = await index.nearest("alice", query, MemoryFilter(), count=10**3)
        assert [rowid for rowid, _ in found] == _exact_top(alice, query, 10**3)
        late = await index.embed_pending(user_id="alice")  # the 5 older ones, after the table was read
        assert late == 5
        assert index._cache["alice"].late  # they took the out-of-order path
        alice = dict(await _current(store, "alice"))
        for user, vectors in (("alice", alice), ("bob", bob)):
            found = await index.nearest(user, query, MemoryFilter(), count=10**3)
            assert [rowid for rowid, _ in found] == _exact_top(vectors, query, 10**3)
            for rowid, cosine in found:
                assert cosine == pytest.approx(float(vectors[rowid] @ query), abs=1e-6)
        assert not set(alice) & set(bob)
        similar = await index.similarities("alice", query, list(bob)[:20] + list(alice)[:20])
        assert set(similar) == set(list(alice)[:20])  # bob's rowids are not alice's, whatever the table holds


async def _vectors_for(store: Store, embedder: Structured, user: str, *, skip: int) -> list[tuple[int, Vectors]]:
    """Vectors for `user`'s memories but the `skip` oldest, written under MODEL; (rowid, vector)."""
    pending = (await store.unembedded(MODEL, DIMENSION, user_id=user, limit=10**6))[skip:]
    vectors = embedder.sample(len(pending))
    rows = [(rowid, content, vector.tobytes()) for (rowid, _, content, _), vector in zip(pending, vectors, strict=True)]
    async with store.transaction() as db:
        await store.write_vectors(db, MODEL, DIMENSION, rows)
    return [(rowid, vector) for (rowid, _, _, _), vector in zip(pending, vectors, strict=True)]


async def _current(store: Store, user: str) -> list[tuple[int, Vectors]]:
    batches = [rows async for _, rows in store.user_vectors(user, MODEL, DIMENSION)]
    return [(rowid, np.frombuffer(blob, dtype=np.float32)) for rows in batches for rowid, blob in rows]


@pytest.mark.parametrize("coarse_from", [1, 10**6])
async def test_neighbours_are_admitted_a_slice_at_a_time_with_the_same_answer(
    db_path: Path, coarse_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `nearest` checks the filter on the best rows first and stops once it has enough; the answer must be what
    # checking every row of the pool at once gives, in both regimes, for a filter that passes a tenth and for none.
    embedder = Structured()
    async with open_store(str(db_path)) as store:
        await _with_vectors(store, embedder, "alice", 3 * RERANK_MIN)
        index = VectorIndex(store, embedder, coarse_from=coarse_from)
        await index.load()
        checked: list[int] = []
        admitted = store.admitted

        async def counted(user_id: str, memory_filter: MemoryFilter, rowids: Sequence[int]) -> list[int]:
            checked.append(len(rowids))
            return await admitted(user_id, memory_filter, rowids)

        async def all_at_once(user_id: str, memory_filter: MemoryFilter, rowids: Sequence[int], want: int) -> list[int]:
            return (await counted(user_id, memory_filter, rowids))[:want]

        monkeypatch.setattr(store, "admitted", counted)
        for query in embedder.sample(3):
            for memory_filter in (HEALTH, MemoryFilter()):
                for count in (1, 7, 100):
                    checked.clear()
                    sliced = await index.nearest("alice", query, memory_filter, count=count, centred=True)
                    sliced_work = sum(checked)
                    with monkeypatch.context() as patched:
                        patched.setattr(index, "_admitted_first", all_at_once)
                        checked.clear()
                        whole = await index.nearest("alice", query, memory_filter, count=count, centred=True)
                    assert sliced == whole and len(whole) == count
                    assert sliced_work <= sum(checked)
                    if memory_filter == MemoryFilter():
                        assert sliced_work < sum(checked)
