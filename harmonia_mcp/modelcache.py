"""The embedded model, rewritten and optimised once into a cached folder that the serving process loads as it is.

Why: building the session from the packaged file means parsing the graph with `onnx` (13 MB of library that stays
imported), rewriting it, serialising it, and letting onnxruntime fold the int8 MatMul weights to float32 while the
int8 ones, the graph and the serialised bytes are all still held: the load peaked at 125 MB above the libraries.
The folder holds what onnxruntime's own offline optimisation writes (`SessionOptions.optimized_model_filepath`,
level basic, so constant folding is done and nothing hardware-specific is) from the rewritten graph
(`embed.lean_model_bytes`): the graph in `model.onnx` and every initializer in `model.data`, which onnxruntime
memory-maps instead of copying. Loading it peaks at about 55 MB above the libraries and computes the same vectors
(docs/benchmarks.md, "Peak RSS at 100k, fourth round"). The folder is written by a short-lived child process
(`python -m harmonia_mcp.modelcache SOURCE FOLDER`), so `onnx` is never imported by the server.

Layout: `<cache dir>/minilm-<first 16 hex of the source's SHA-256>-ort<onnxruntime version>-v<CACHE_VERSION>/`
with `model.onnx`, `model.data` and `manifest.json` (the SHA-256 of both files, written last). The folder is
verified against its manifest at every load; one that is missing, incomplete or corrupt is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import platformdirs

logger = logging.getLogger(__name__)

# Bump when what `build` writes changes (the rewrite, the optimisation level): older folders are then ignored.
CACHE_VERSION = 1
MODEL_FILE = "model.onnx"
DATA_FILE = "model.data"
MANIFEST_FILE = "manifest.json"
# A build takes about 3 s here (a fresh interpreter, onnx, one optimisation pass); the bound only catches a hang.
BUILD_TIMEOUT_SECONDS = 300.0


def default_cache_dir() -> Path:
    """Where cached models live by default: platformdirs' user cache dir (`~/.cache/harmonia-mcp/models` on Linux)."""
    return Path(platformdirs.user_cache_dir("harmonia-mcp", appauthor=False)) / "models"


def entry_of(cache_dir: Path, source_sha256: str) -> Path:
    """The folder that holds the cached build of the model whose file has `source_sha256`, for this onnxruntime."""
    import onnxruntime

    return cache_dir / f"minilm-{source_sha256[:16]}-ort{onnxruntime.__version__}-v{CACHE_VERSION}"


def verified(entry: Path) -> Path | None:
    """`entry`'s model file if the folder is complete and every file has the SHA-256 its manifest gives, else None."""
    from harmonia_mcp.embed import sha256_of

    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text())
        expected = {name: str(manifest["files"][name]) for name in (MODEL_FILE, DATA_FILE)}
        for name, digest in expected.items():
            if sha256_of(entry / name) != digest:
                logger.warning("the cached model file %s is corrupt (checksum differs); rebuilding it", entry / name)
                return None
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable or malformed: rebuilt the same way
        return None
    return entry / MODEL_FILE


def cached_model(source: Path, source_sha256: str, cache_dir: Path) -> Path | None:
    """The verified cached model built from `source` (whose checksum the caller has checked), building it first if
    it is missing or corrupt; None when it cannot be built (the caller then loads `source` the old way).

    The build runs in a child process (module docstring) into a temporary folder that is renamed into place, so a
    reader never sees a half-written folder, and two processes building at once both end with a complete one.
    """
    entry = entry_of(cache_dir, source_sha256)
    found = verified(entry)
    if found is not None:
        return found
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=cache_dir))
    except OSError as error:
        logger.warning("cannot write the model cache in %s (%s); loading the model without it", cache_dir, error)
        return None
    try:
        _build_in_child(source, scratch)
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)  # corrupt (it failed verification above)
        try:
            scratch.rename(entry)
        except OSError:  # another process renamed its own build into place first: use that one
            pass
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("building the cached model in %s failed (%s); loading the model without it", cache_dir, error)
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return verified(entry)


def _build_in_child(source: Path, folder: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harmonia_mcp.modelcache", str(source), str(folder)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if result.returncode != 0:
        raise subprocess.SubprocessError(f"exit {result.returncode}: {result.stderr.strip()[-500:]}")


def build(source: Path, folder: Path) -> None:
    """Write the cached model of `source` into the existing, empty `folder` (module docstring). Imports `onnx`: run
    it in a child process (`cached_model` does).

    Raises:
        EmbeddingError: `source` is not an ONNX model, or onnxruntime cannot open it.
    """
    import onnxruntime

    from harmonia_mcp.embed import EmbeddingError, lean_model_bytes, sha256_of

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.optimized_model_filepath = str(folder / MODEL_FILE)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    try:
        onnxruntime.InferenceSession(lean_model_bytes(source), options, providers=["CPUExecutionProvider"])
    except EmbeddingError:
        raise
    except Exception as error:  # onnxruntime's errors have no common public base class
        raise EmbeddingError(f"cannot optimise the ONNX model {source}: {error}") from error
    files = {name: sha256_of(folder / name) for name in (MODEL_FILE, DATA_FILE)}
    (folder / MANIFEST_FILE).write_text(json.dumps({"source": str(source), "files": files}, indent=1))


def main(argv: list[str]) -> int:
    """`python -m harmonia_mcp.modelcache SOURCE FOLDER`: `build`; exit 0 when done, 1 with the error on stderr."""
    from harmonia_mcp.embed import EmbeddingError

    if len(argv) != 2:
        sys.stderr.write("usage: python -m harmonia_mcp.modelcache SOURCE FOLDER\n")
        return 2
    try:
        build(Path(argv[0]), Path(argv[1]))
    except (EmbeddingError, OSError) as error:
        sys.stderr.write(f"{error}\n")  # the parent logs it; stdout is never used (test_architecture)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
