"""The vector side of search: embedding memories into `memory_vectors` and exact nearest neighbours per user.

`VectorIndex` owns one `Embedder`. It loads the model off the request path (a background task started with
the server, or the first use), embeds every memory that lacks a vector of the current model and dimension
(the durable queue is the database itself: `Store.unembedded`), and answers nearest-neighbour queries by
brute-force cosine over the user's vectors with numpy. Each user's vectors are read once into a matrix
and kept in step with the writes made through this index; another user's vectors are never read.

Two regimes, by the user's number of vectors (docs/search.md, "Vector side: memory and speed" in
docs/benchmarks.md):

- below `COARSE_FROM` vectors: the full float32 matrix, brute-force cosine. Exact.
- from `COARSE_FROM` on: only a `COARSE_DIMENSION`-column projection of each vector is kept in memory (the top
  principal directions of the user's vectors, fitted on a sample at load), and a query scores all rows in that
  projection, takes the best `RERANK_FACTOR` x `count` (at least `RERANK_MIN`) and re-scores those exactly in
  float32 from the vectors stored in the file. Every cosine returned is exact; which memories make the top
  `count` is approximate (a true neighbour can miss the re-scored pool); overlap@k with exact search is
  measured in docs/benchmarks.md. At 100,000 x 384 this holds 26 MB instead of 154 MB and reads a quarter of
  the bytes per query (a float32 product over the full matrix is memory-bound: about 20 ms here).

Why not sqlite-vec: it is a loadable SQLite extension and this Python's `sqlite3` has no
`enable_load_extension` (pyenv builds without it), so it cannot be the path that always works; the numpy
path needs no extension.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

from harmonia_mcp.config import Settings
from harmonia_mcp.embed import Embedder, EmbeddingError, OllamaEmbedder, OnnxEmbedder, release_free_memory
from harmonia_mcp.store import MemoryFilter, Store
from harmonia_mcp.tasks import running

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from harmonia_mcp.embed import Vectors

# numpy is imported in the functions that compute, not with the module: the stdio server answers `initialize`
# before any vector is read (docs/benchmarks.md, "Cold start and footprint").

logger = logging.getLogger(__name__)

EMBED_BATCH = 64  # memories per pass (one read, one transaction); the model takes them 8 at a time (MODEL_BATCH)
# The two-stage regime (module docstring). Chosen by measurement on real MiniLM vectors (benchmarks/vector_scale.py
# --overlap): below COARSE_FROM the exact product is a few milliseconds and small, so exactness costs nothing.
COARSE_FROM = 20_000
COARSE_DIMENSION = 64
RERANK_FACTOR = 8
RERANK_MIN = 512
COARSE_SAMPLE = 8192  # vectors the projection is fitted on (the first read, in rowid order)
# Vectors per fetch when a user's table is read: each batch is held twice for a moment (the rows' bytes, then joined),
# so this bounds the read's transient (1.5 MB each at 384 dimensions). A divisor of COARSE_SAMPLE (the sample is whole).
READ_BATCH = 1024
# Vectors read for one user from which the freed read buffers are handed back to the system (10-30 MB at 10k-100k).
TRIM_AFTER_READ = 5_000
QUERY_CACHE = 256  # query vectors kept (an assistant repeats and pages through the same queries)
# Search cosines are taken about the mean of the user's other vectors, shrunk by about n / (n + CENTRE_PRIOR) for a
# user with n vectors (`centred_cosine`; docs/search.md, "Centred cosine"): a small collection is barely centred,
# since the mean of a few vectors is mostly those vectors.
CENTRE_PRIOR = 20.0


def embedding_text(content: str, category: str) -> str:
    """What is embedded for a memory: its category, then its content ("health: User is allergic to peanuts").

    Why the category: an assistant's query often names the kind of fact rather than its words ("medical
    conditions", "educational background"); on the dev sets the prefix lifted semantic recall@10 on LoCoMo from
    0.570 to 0.597 and the paraphrase top-3 rate from 0.83 to 0.87 (docs/search.md). Entities are already in
    the content the extractors write, so they are not added again.
    """
    return f"{category}: {content}"


@dataclass
class _UserMatrix:
    """One user's vectors: row i of `matrix` is the memory `rowids[i]`, in use while `live[i]` (a removed row keeps
    its rowid, as zeros, so that the memory's next vector takes the same row).

    With a `basis` (dimension x k, orthonormal columns) the rows are the vectors projected on it (the coarse
    regime of the module docstring); without, they are the vectors themselves.

    Finding a memory's row: the table is read in rowid order and new memories get higher rowids, so rows
    [0, `ordered`) have increasing rowids and are found by binary search (`np.searchsorted`); a row appended out of
    order (an older memory's first vector, after the read), and every row after it, is in the small `late` dict.
    A dict of every row cost about 10 MB at 100,000 vectors (docs/benchmarks.md, "Peak RSS at 100k").
    """

    rowids: npt.NDArray[np.int64]
    live: npt.NDArray[np.bool_]
    matrix: Vectors
    size: int = 0
    ordered: int = 0
    late: dict[int, int] = field(default_factory=dict[int, int])
    basis: Vectors | None = None
    # The sum of the live rows' full vectors (float64), for `centre`. In the coarse regime a removed or replaced
    # row is subtracted as its projection mapped back (the full vector is not held), so there it is approximate.
    total: npt.NDArray[np.float64] | None = None

    @property
    def coarse(self) -> bool:
        return self.basis is not None

    def project(self, vectors: Vectors) -> Vectors:
        """`vectors` as this table stores them (projected in the coarse regime)."""
        import numpy as np

        return vectors if self.basis is None else np.ascontiguousarray(vectors @ self.basis, dtype=np.float32)

    @classmethod
    def build(cls, dimension: int, basis: Vectors | None = None) -> _UserMatrix:
        """An empty table of `dimension`-long vectors (stored projected on `basis` when given)."""
        import numpy as np

        columns = dimension if basis is None else basis.shape[1]
        return cls(
            np.zeros(16, dtype=np.int64), np.zeros(16, dtype=np.bool_), np.zeros((16, columns), np.float32), basis=basis
        )

    def _full(self, index: int) -> npt.NDArray[np.float64]:
        """Row `index` as a full vector (mapped back from its projection in the coarse regime)."""
        import numpy as np

        row: npt.NDArray[np.float64] = self.matrix[index].astype(np.float64)
        if self.basis is not None:
            row = row @ self.basis.T.astype(np.float64)
        return row

    def _add(self, vectors: npt.NDArray[np.floating[Any]], sign: float = 1.0) -> None:
        import numpy as np

        summed = sign * vectors.astype(np.float64).sum(axis=0)
        self.total = summed if self.total is None else self.total + summed

    @property
    def live_count(self) -> int:
        """How many rows hold a vector."""
        return int(self.live[: self.size].sum())

    @property
    def centring(self) -> float:
        """How far this table's search cosines are centred, n / (n + CENTRE_PRIOR) for n live vectors (0-1)."""
        count = self.live_count
        return count / (count + CENTRE_PRIOR)

    def centre(self) -> Centre:
        """What search cosines are taken about (`centred_cosine`): the sum of the live vectors and their count."""
        import numpy as np

        dimension = self.matrix.shape[1] if self.basis is None else self.basis.shape[0]
        total = np.zeros(dimension, dtype=np.float32) if self.total is None else self.total.astype(np.float32)
        return Centre(total, self.live_count)

    def reserve(self, capacity: int) -> None:
        """Make room for `capacity` rows in all (read in batches, the matrix is allocated once)."""
        import numpy as np

        if capacity > len(self.rowids):
            # One new array and a copy: concatenating with a zero block would hold both at once (2x at 100k).
            rowids = np.zeros(capacity, dtype=np.int64)
            rowids[: self.size] = self.rowids[: self.size]
            live = np.zeros(capacity, dtype=np.bool_)
            live[: self.size] = self.live[: self.size]
            matrix = np.zeros((capacity, self.matrix.shape[1]), dtype=np.float32)
            matrix[: self.size] = self.matrix[: self.size]
            self.rowids, self.live, self.matrix = rowids, live, matrix

    def rows_of(self, rowids: Sequence[int]) -> npt.NDArray[np.int64]:
        """The row of each of `rowids` (live or removed), -1 for one never held."""
        import numpy as np

        wanted = np.asarray(rowids, dtype=np.int64)
        rows = np.full(len(wanted), -1, dtype=np.int64)
        if self.ordered:
            prefix = self.rowids[: self.ordered]
            at = np.minimum(np.searchsorted(prefix, wanted), self.ordered - 1)
            hit = prefix[at] == wanted
            rows[hit] = at[hit]
        if self.late:
            for offset in np.flatnonzero(rows < 0):
                rows[offset] = self.late.get(int(wanted[offset]), -1)
        return rows

    def live_rows(self, rowids: Sequence[int]) -> list[tuple[int, int]]:
        """(rowid, row) of those of `rowids` that have a vector here, in the order given."""
        return [
            (rowid, int(row))
            for rowid, row in zip(rowids, self.rows_of(rowids), strict=True)
            if row >= 0 and self.live[row]
        ]

    def _append(self, rowid: int) -> int:
        if self.size == len(self.rowids):
            # Grow by a quarter: appends stay amortised O(1) without doubling a 150 MB matrix at 100k.
            self.reserve(self.size + max(64, self.size // 4))
        index = self.size
        self.size += 1
        self.rowids[index] = rowid
        if not self.late and (self.ordered == 0 or rowid > self.rowids[self.ordered - 1]):
            self.ordered = self.size
        else:
            self.late[rowid] = index
        return index

    def upsert(self, rowids: Sequence[int], vectors: Vectors) -> None:
        """Add or replace the full vectors of `rowids` (projected here in the coarse regime)."""
        import numpy as np

        if len(rowids):
            self._add(vectors)
            for row in self.rows_of(rowids):
                if row >= 0 and self.live[row]:
                    self._add(self._full(int(row))[None, :], -1.0)  # its old vector leaves the sum
        vectors = self.project(vectors)
        wanted = np.asarray(rowids, dtype=np.int64)
        in_order = len(wanted) > 0 and not self.late and self.ordered == self.size
        in_order = in_order and bool(np.all(wanted[1:] > wanted[:-1]))
        in_order = in_order and (self.ordered == 0 or int(wanted[0]) > int(self.rowids[self.ordered - 1]))
        if in_order:  # all new and after every row held (a load, in rowid order): one bulk copy
            if self.size + len(wanted) > len(self.rowids):
                self.reserve(self.size + max(len(wanted), self.size // 4))
            end = self.size + len(wanted)
            self.rowids[self.size : end] = wanted
            self.live[self.size : end] = True
            self.matrix[self.size : end] = vectors
            self.size = self.ordered = end
            return
        for rowid, vector in zip(rowids, vectors, strict=True):
            row = int(self.rows_of([rowid])[0])  # one at a time: a rowid given twice takes one row
            index = row if row >= 0 else self._append(int(rowid))
            self.live[index] = True
            self.matrix[index] = vector

    def remove(self, rowids: Sequence[int]) -> None:
        for row in self.rows_of(rowids):
            if row >= 0 and self.live[row]:
                self._add(self._full(int(row))[None, :], -1.0)
                self.live[row] = False
                self.matrix[row] = 0.0


class Centre(NamedTuple):
    """A user's vectors summed (`total`, shape (dimension,)) and counted (`size`): what `centred_cosine` needs."""

    total: Vectors
    size: int


def centred_cosine(
    dot: npt.NDArray[np.float32], along: npt.NDArray[np.float32], query: Vectors, centre: Centre
) -> npt.NDArray[np.float32]:
    """The cosine of each unit vector d and the unit query q about the mean of the user's *other* vectors, shrunk:
    cos(d - c_d, q - c_d) with c_d = (S - d) / (n - 1 + CENTRE_PRIOR), S the sum of the user's n vectors. From
    d . q (`dot`) and d . S (`along`), one value per row; the rows themselves are not needed, so neither the
    stored vectors nor the coarse projection change.

    Why: a user's sentence vectors share a common direction (all of one conversation, one person, one register),
    which adds about the same to every cosine and lets generic memories sit near every query. Taking the
    cosine about the user's mean removes it (the "common mean vector" removal of Mu and Viswanath, All-but-the-
    Top, ICLR 2018). The shrinkage n / (n + CENTRE_PRIOR) leaves a small collection nearly uncentred, and leaving
    d itself out of its centre keeps a small collection's cosines what they were (a one-memory user's are the
    plain cosine): d's own share of the mean would lower every cosine by about 1 / (n + CENTRE_PRIOR). On LoCoMo dev
    it lifted hybrid recall@10 and the paraphrase sets (docs/benchmarks.md, issue 9 fourth round).
    """
    import numpy as np

    scale = centre.size - 1 + CENTRE_PRIOR
    square = float(centre.total @ centre.total)
    toward = float(query @ centre.total)
    row_centre = (along - 1.0) / scale  # d . c_d
    query_centre = (toward - dot) / scale  # q . c_d
    centre_square = (square - 2.0 * along + 1.0) / scale**2  # c_d . c_d
    numerator = dot - row_centre - query_centre + centre_square
    row_norms = np.sqrt(np.maximum(1.0 - 2.0 * row_centre + centre_square, 1e-12))
    query_norms = np.sqrt(np.maximum(1.0 - 2.0 * query_centre + centre_square, 1e-12))
    centred: npt.NDArray[np.float32] = (numerator / (row_norms * query_norms)).astype(np.float32)
    return centred


def fit_basis(sample: Vectors, columns: int) -> Vectors:
    """The `columns` directions that keep most of the dot products among `sample`'s rows: the top eigenvectors
    of the uncentred second-moment matrix (PCA without centring, so that a dot product of projections
    approximates the dot product itself), shape (dimension, columns), orthonormal columns."""
    import numpy as np

    return basis_of((sample.T @ sample).astype(np.float64), columns)


def basis_of(moment: npt.NDArray[np.float64], columns: int) -> Vectors:
    """`fit_basis` from the sample's second-moment matrix (`sample.T @ sample`, dimension x dimension), which can be
    summed batch by batch."""
    import numpy as np

    _, vectors = np.linalg.eigh(moment)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :columns], dtype=np.float32)


def _vectors_of(rows: Sequence[tuple[int, bytes]], dimension: int) -> Vectors:
    import numpy as np

    return np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), dimension)


class VectorIndex:
    """Embeds memories and finds a user's nearest ones. See the module docstring.

    Args:
        store: the open store.
        embedder: what makes the vectors; its `model` and `dimension` name them in the table.
        coarse_from: a user with at least this many vectors is searched in two stages (module docstring).
    """

    def __init__(self, store: Store, embedder: Embedder, *, coarse_from: int = COARSE_FROM) -> None:
        self.store = store
        self.embedder = embedder
        self.coarse_from = coarse_from
        self._queries: OrderedDict[str, Vectors] = OrderedDict()
        self._ready = anyio.Event()
        self._started = False  # the embedder started (it may embed before `ready`, see `load`)
        self._failure: str | None = None
        self._loading = False
        self._cache: dict[str, _UserMatrix] = {}
        self._wake = anyio.Event()
        self._embed_lock = anyio.Lock()

    # --- state ---

    @property
    def ready(self) -> bool:
        """The model is loaded and searches use it."""
        return self._ready.is_set() and self._failure is None

    @property
    def failure(self) -> str | None:
        """Why the embedder is unusable (set when loading failed), else None."""
        return self._failure

    @property
    def model(self) -> str:
        return self.embedder.model

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    async def load(self, *, embed_new: bool = False) -> bool:
        """Load the model if not yet done (off the event loop); True when it is usable. Never raises.

        With `embed_new`, one batch of memories that have no vector yet is embedded before `ready` turns true.
        """
        if self._ready.is_set():
            return self._failure is None
        if self._loading:
            await self._ready.wait()
            return self._failure is None
        self._loading = True
        try:
            await self.embedder.start()
        except EmbeddingError as error:
            self._failure = str(error)
            logger.warning("search by meaning is off: %s; search answers by keyword only", error)
        else:
            self._started = True
            # With `embed_new` (the server's worker, `run`): the memories written while the model loaded (no vector
            # at all) get theirs before searches turn hybrid,
            # so a search that says "hybrid" has seen them (up to one batch). Vectors of another model, and a longer
            # queue, are left to the background worker, as before.
            try:
                if embed_new:
                    await self.embed_pending(limit=EMBED_BATCH, only_new=True)
            except Exception:  # the queue stays in the file for the background worker
                logger.exception("embedding the memories written during start-up failed")
            logger.info("search by meaning is ready (%s, %d dimensions)", self.model, self.dimension)
        finally:
            self._ready.set()
        return self._failure is None

    async def wait_ready(self) -> bool:
        """Wait until loading finished (or failed); True when the model is usable."""
        return await self.load()

    # --- writing vectors ---

    async def embed_pending(
        self, *, user_id: str | None = None, limit: int | None = None, only_new: bool = False
    ) -> int:
        """Embed memories that lack a current vector (one user's, or everyone's), in batches; return how many.
        With `only_new`, one batch of those that have no vector of any model (not those of a model change).

        A batch that fails to embed is left queued (logged once per failure kind) and the call stops.
        """
        if not self._started or self._failure is not None:
            return 0
        done = 0
        # Trigger: a pass over every user (the background worker's backlog, `reindex`) vs one user's (a write's).
        # Why: the backlog of an import (15,000 memories: a minute of model time) held this lock from start to
        # end, so every write's own embedding waited for all of it (the calm run's p95 of over a minute in
        # benchmarks/concurrency.py --hostile). Outcome: only passes over every user take turns; a write's pass
        # runs at once. Its texts are in the query cache already (embedded to find its neighbours), and a row
        # that both passes take gets the same vector written twice (write_vectors checks the content).
        async with self._embed_lock if user_id is None else nullcontext():
            while limit is None or done < limit:
                size = EMBED_BATCH if limit is None else min(EMBED_BATCH, limit - done)
                pending = await self.store.unembedded(self.model, self.dimension, user_id=user_id, limit=size)
                if only_new:
                    stale = await self.store.with_any_vector([rowid for rowid, _, _, _ in pending])
                    pending = [row for row in pending if row[0] not in stale]
                    limit = done + len(pending)  # one batch
                if not pending:
                    break
                for owner in {owner for _, owner, _, _ in pending}:
                    if owner in self._cache:
                        self._cache[owner].remove([rowid for rowid, who, _, _ in pending if who == owner])
                try:
                    # Through the cache: a memory just written was embedded once already to find its neighbours.
                    vectors = await self.embed_texts([embedding_text(text, kind) for _, _, text, kind in pending])
                except EmbeddingError as error:
                    logger.warning("embedding %d memories failed (they stay queued): %s", len(pending), error)
                    break
                rows = [
                    (rowid, content, vector.tobytes())
                    for (rowid, _, content, _), vector in zip(pending, vectors, strict=True)
                ]
                async with self.store.transaction() as db:
                    written = set(await self.store.write_vectors(db, self.model, self.dimension, rows))
                for (rowid, owner, _, _), vector in zip(pending, vectors, strict=True):
                    if rowid in written and owner in self._cache:
                        self._cache[owner].upsert([rowid], vector[None, :])
                done += len(pending)
                if len(written) < len(pending):
                    break  # rewritten meanwhile: the next call takes them again, with their new text
        return done

    def notify(self) -> None:
        """Tell the background worker that memories may wait for a vector."""
        self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The background worker: load the model, embed the queue, then embed whatever `notify` signals."""
        task_status.started()
        if not await self.load(embed_new=True):
            return
        while True:
            self._wake = anyio.Event()
            try:
                await self.embed_pending()
            except Exception:  # keep the server up; the queue stays in the file for the next pass
                logger.exception("background embedding failed")
            await self._wake.wait()

    def forget(self, user_id: str | None = None) -> None:
        """Drop the cached matrix of one user (or all), to be read again from the file on next use."""
        if user_id is None:
            self._cache.clear()
        else:
            self._cache.pop(user_id, None)

    # --- reading ---

    async def _matrix(self, user_id: str) -> _UserMatrix:
        table = self._cache.get(user_id)
        if table is None:
            table = await self._read_matrix(user_id)
            self._cache[user_id] = table
            if table.size >= TRIM_AFTER_READ:
                # Here, not in the read: its last batch (bytes, and the bytes joined) is freed when the read returns.
                release_free_memory()
        return table

    async def _read_matrix(self, user_id: str) -> _UserMatrix:
        """The user's table, read from the file in batches of `READ_BATCH`.

        In the coarse regime no more than one batch of float32 vectors is held at once: the first `COARSE_SAMPLE`
        are read once to sum their second moment and fit the projection (`basis_of`), then every vector is read
        (those again) and each batch projected as it arrives. Holding the sample instead (its bytes, then joined)
        peaked about 22 MB higher at 100,000 vectors (docs/benchmarks.md, "Peak RSS at 100k").
        """
        table = _UserMatrix.build(self.dimension)
        moment: npt.NDArray[np.float64] | None = None
        sampled = 0
        async with aclosing(self.store.user_vectors(user_id, self.model, self.dimension, batch=READ_BATCH)) as batches:
            async for total, rows in batches:
                vectors = _vectors_of(rows, self.dimension)
                if total < self.coarse_from:
                    table.reserve(total)
                    table.upsert([rowid for rowid, _ in rows], vectors)
                    continue
                product = vectors.T @ vectors
                moment = product.astype("float64") if moment is None else moment + product
                sampled += len(rows)
                if sampled >= min(COARSE_SAMPLE, total):
                    break
        if moment is not None:
            table = _UserMatrix.build(self.dimension, basis_of(moment, COARSE_DIMENSION))
            async for total, rows in self.store.user_vectors(user_id, self.model, self.dimension, batch=READ_BATCH):
                table.reserve(total)
                table.upsert([rowid for rowid, _ in rows], _vectors_of(rows, self.dimension))
        return table

    async def _exact(
        self, user_id: str, query: Vectors, rowids: Sequence[int], centre: Centre | None = None
    ) -> dict[int, float]:
        """The exact float32 cosine of `query` to each of `rowids` that has a current vector, read from the file
        (about `centre` when given: `centred_cosine`)."""
        rows = await self.store.vectors_of(user_id, self.model, self.dimension, rowids)
        if not rows:
            return {}
        stored = _vectors_of(rows, self.dimension)
        scores = stored @ query
        if centre is not None:
            scores = centred_cosine(scores, stored @ centre.total, query, centre)
        return {rowid: float(score) for (rowid, _), score in zip(rows, scores, strict=True)}

    async def embed_query(self, text: str) -> Vectors:
        """The query's vector, shape (dimension,). The last `QUERY_CACHE` distinct queries are remembered.

        Raises:
            EmbeddingError: the model is not ready or failed.
        """
        if not self.ready:
            raise EmbeddingError(self._failure or "the embedding model is still loading")
        return (await self.embed_texts([text]))[0]

    async def embed_texts(self, texts: Sequence[str]) -> list[Vectors]:
        """One vector, shape (dimension,), per text, in order; texts not among the last `QUERY_CACHE` distinct
        ones embedded are embedded in one model call. The vectors are read-only (shared through the cache).

        Raises:
            EmbeddingError: the model is not ready or failed, or answered with the wrong shape.
        """
        import numpy as np

        if not self._started or self._failure is not None:
            raise EmbeddingError(self._failure or "the embedding model is still loading")
        # Taken from the cache before the model call: another call may trim the cache while this one waits.
        found = {text: self._queries[text] for text in texts if text in self._queries}
        missing = list(dict.fromkeys(text for text in texts if text not in found))
        if missing:
            vectors = await self.embedder.embed(missing)
            if vectors.shape != (len(missing), self.dimension):
                raise EmbeddingError(
                    f"vectors of shape {vectors.shape} for {len(missing)} texts, expected dimension {self.dimension}"
                )
            for text, row in zip(missing, vectors, strict=True):
                vector = np.array(row, dtype=np.float32)
                vector.setflags(write=False)  # shared by every caller of the cache
                found[text] = vector
        for text in dict.fromkeys(texts):
            self._queries[text] = found[text]
            self._queries.move_to_end(text)
        while len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return [found[text] for text in texts]

    async def nearest(
        self,
        user_id: str,
        query: Vectors,
        memory_filter: MemoryFilter,
        *,
        count: int,
        floor: float = -1.0,
        centred: bool = False,
    ) -> list[tuple[int, float]]:
        """The `count` memories of `user_id` that pass `memory_filter` with the highest cosine to `query` (at
        least `floor`), best first, as (rowid, cosine). With `centred`, the cosine is taken about the user's
        `_UserMatrix.centre` (`centred_cosine`; search does this, reconciliation does not). Exact below
        `coarse_from` vectors; from there the cosines are exact and the membership approximate (module docstring)."""
        import numpy as np

        table = await self._matrix(user_id)
        if table.size == 0:
            return []
        centre = table.centre() if centred else None
        if table.coarse:
            return await self._nearest_coarse(
                table, user_id, query, memory_filter, count=count, floor=floor, centre=centre
            )
        matrix = table.matrix[: table.size]
        scores = matrix @ query
        if centre is not None:
            # Two matrix-vector products, not one product with two columns: that one is a GEMM, which packs the
            # matrix into OpenBLAS's buffer (15 MB more resident for good at 10,000 vectors) and was slower.
            scores = centred_cosine(scores, matrix @ centre.total, query, centre)
        step = max(4 * count, 64)
        if step < table.size:
            # The best `step` first (argpartition is linear); the full sort only if the filters reject too many.
            head = np.argpartition(-scores, step)[:step]
            order = head[np.argsort(-scores[head], kind="stable")]
        else:
            order = np.argsort(-scores, kind="stable")
        found: list[tuple[int, float]] = []
        start = 0
        while len(found) < count:
            if start >= len(order):
                # Compared with the scores taken above: a write may grow the table while `admitted` is awaited.
                if len(order) == len(scores):
                    break
                order = np.argsort(-scores, kind="stable")
                continue
            chunk = order[start : start + step]
            start += step
            step *= 4
            live = chunk[table.live[chunk]]
            above = live[scores[live] >= floor]
            if len(above):
                rowids = [int(rowid) for rowid in table.rowids[above]]
                score_of = dict(zip(rowids, (float(score) for score in scores[above]), strict=True))
                admitted = await self._admitted_first(user_id, memory_filter, rowids, count - len(found))
                found.extend((rowid, score_of[rowid]) for rowid in admitted)
            if len(above) < len(live):
                break  # best first: everything after this chunk is below the floor too
        return found[:count]

    async def _nearest_coarse(
        self,
        table: _UserMatrix,
        user_id: str,
        query: Vectors,
        memory_filter: MemoryFilter,
        *,
        count: int,
        floor: float,
        centre: Centre | None = None,
    ) -> list[tuple[int, float]]:
        """`nearest` in the coarse regime: score the projections, re-score the best pool exactly, widen the
        pool (x4) while the filters leave fewer than `count`."""
        import numpy as np

        matrix = table.matrix[: table.size]
        if centre is None:
            scores = matrix @ table.project(query[None, :])[0]
        else:
            projected = table.project(np.stack([query, centre.total]))
            scores = centred_cosine(matrix @ projected[0], matrix @ projected[1], query, centre)  # as in `nearest`
        size = len(scores)  # not table.size: a write may grow the table while this awaits
        pool = max(RERANK_FACTOR * count, RERANK_MIN)
        seen: set[int] = set()
        found: list[tuple[int, float]] = []
        while True:
            head = np.argpartition(-scores, pool)[:pool] if pool < size else np.arange(size)
            rowids = [int(rowid) for rowid in table.rowids[head[table.live[head]]] if int(rowid) not in seen]
            seen.update(rowids)
            exact = await self._exact(user_id, query, rowids, centre)
            above = sorted((rowid for rowid, score in exact.items() if score >= floor), key=lambda r: -exact[r])
            # The best `count` of this pool's admitted rows: a wider pool may still hold better ones.
            admitted = await self._admitted_first(user_id, memory_filter, above, count)
            found.extend((rowid, exact[rowid]) for rowid in admitted)
            if len(found) >= count or pool >= size or len(above) < len(exact):
                break  # enough, everything seen, or the pool already reaches below the floor
            pool *= 4
        found.sort(key=lambda pair: -pair[1])
        return found[:count]

    async def _admitted_first(
        self, user_id: str, memory_filter: MemoryFilter, rowids: Sequence[int], want: int
    ) -> list[int]:
        """The first `want` of `rowids`, in their order, that pass `memory_filter` (`Store.admitted`), checked a
        slice at a time (the slice doubling) rather than all at once: under the default filter nearly every
        neighbour passes, and checking 800 rowids cost 5 ms at 100,000 memories where 130 cost 1."""
        admitted: list[int] = []
        start, size = 0, want + want // 4 + 16
        while start < len(rowids) and len(admitted) < want:
            admitted.extend(await self.store.admitted(user_id, memory_filter, rowids[start : start + size]))
            start += size
            size *= 2
        return admitted[:want]

    async def centring(self, user_id: str) -> float:
        """How far `user_id`'s centred cosines are centred (0-1, `_UserMatrix.centring`): the weight that moves
        search's absolute neighbour floor from the plain-cosine one to the centred one
        (`search.admitted_neighbours`)."""
        return (await self._matrix(user_id)).centring

    async def similarities(
        self, user_id: str, query: Vectors, rowids: Sequence[int], *, centred: bool = False
    ) -> dict[int, float]:
        """The cosine of `query` to each of `rowids` that has a current vector (of `user_id`'s only), about the
        user's centre with `centred` (as `nearest`); exact in both regimes (read from the file in the coarse one)."""

        table = await self._matrix(user_id)
        known = table.live_rows(rowids)
        centre = table.centre() if centred else None
        if table.coarse:
            return await self._exact(user_id, query, [rowid for rowid, _ in known], centre) if known else {}
        if not known:
            return {}
        rows = table.matrix[[row for _, row in known]]
        scores = rows @ query
        if centre is not None:
            scores = centred_cosine(scores, rows @ centre.total, query, centre)
        return {rowid: float(score) for (rowid, _), score in zip(known, scores, strict=True)}


def make_embedder(settings: Settings) -> Embedder | None:
    """The embedder `settings.embedder` names (nothing is loaded yet), or None for `none`."""
    if settings.embedder == "none":
        return None
    if settings.embedder == "ollama":
        host = settings.ollama_host if "://" in settings.ollama_host else f"http://{settings.ollama_host}"
        return OllamaEmbedder(host, settings.embed_model, timeout_seconds=settings.ollama_timeout_seconds)
    return OnnxEmbedder(
        Path(settings.embed_model_path) if settings.embed_model_path else None,
        cache_dir=Path(settings.model_cache_dir) if settings.model_cache_dir else None,
    )


@asynccontextmanager
async def open_vectors(
    settings: Settings, store: Store, *, embedder: Embedder | None = None
) -> AsyncIterator[VectorIndex | None]:
    """A `VectorIndex` over `store` whose background worker (load, then embed the queue) runs while in use;
    None when the embedder is `none`. Entering never waits for the model."""
    chosen = embedder or make_embedder(settings)
    if chosen is None:
        yield None
        return
    index = VectorIndex(store, chosen)
    try:
        async with running(index.run):
            yield index
    finally:
        close = getattr(chosen, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
