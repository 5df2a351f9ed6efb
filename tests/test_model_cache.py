"""The cached, optimised model (harmonia_mcp/modelcache.py): built once in a child process, verified against its
manifest at every load, rebuilt when missing or corrupt, never making the serving process import `onnx`, and
computing the vectors the packaged file computes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from onnx_reference import pooled

from harmonia_mcp import embed, modelcache
from harmonia_mcp.embed import MINILM_ONNX_SHA256, OnnxEmbedder, default_model_path, lean_model_bytes, sha256_of

TEXTS = ["User has a dog called Biggie", "What pets does the user have?", "health: User is allergic to peanuts"]


def _reference(embedder: OnnxEmbedder) -> np.ndarray:
    """TEXTS embedded by a session of the rewritten graph built in this process (the path before the cache)."""
    session = onnxruntime.InferenceSession(lean_model_bytes(default_model_path()), providers=["CPUExecutionProvider"])
    return pooled(session, embedder._tokenizer, TEXTS)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder built once for this module's tests (each test that damages it copies it first)."""
    cache_dir = tmp_path_factory.mktemp("model-cache")
    assert modelcache.cached_model(default_model_path(), MINILM_ONNX_SHA256, cache_dir) is not None
    return cache_dir


def _entry(cache_dir: Path) -> Path:
    return modelcache.entry_of(cache_dir, MINILM_ONNX_SHA256)


def _fresh(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> OnnxEmbedder:
    monkeypatch.setattr(embed, "_LOADED", {})  # load from the files, not a session this process already holds
    embedder = OnnxEmbedder(cache_dir=cache_dir)
    embedder.load()
    return embedder


def test_the_cached_model_embeds_as_the_rewritten_file_does(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _entry(built)
    manifest = json.loads((entry / modelcache.MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {modelcache.MODEL_FILE, modelcache.DATA_FILE}
    # The weights are in the data file, which onnxruntime maps; the graph file is small.
    assert (entry / modelcache.DATA_FILE).stat().st_size > 40 * 2**20
    assert (entry / modelcache.MODEL_FILE).stat().st_size < 2**20
    embedder = _fresh(built, monkeypatch)
    np.testing.assert_allclose(embedder.embed_sync(TEXTS), _reference(embedder), atol=1e-5)


def test_a_verified_cache_is_used_as_it_is(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _entry(built)
    before = {path.name: path.stat().st_mtime_ns for path in entry.iterdir()}

    def no_build(source: Path, folder: Path) -> None:
        raise AssertionError("a verified cache was built again")

    monkeypatch.setattr(modelcache, "_build_in_child", no_build)
    _fresh(built, monkeypatch)
    assert {path.name: path.stat().st_mtime_ns for path in entry.iterdir()} == before


@pytest.mark.parametrize("damage", ["flip a byte of the weights", "truncate the graph", "lose the manifest"])
def test_a_corrupt_or_incomplete_cache_is_refused_and_rebuilt(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    import shutil

    cache_dir = tmp_path / "cache"
    shutil.copytree(built, cache_dir)
    entry = _entry(cache_dir)
    good = {name: sha256_of(entry / name) for name in (modelcache.MODEL_FILE, modelcache.DATA_FILE)}
    if damage == "flip a byte of the weights":
        with (entry / modelcache.DATA_FILE).open("r+b") as handle:
            handle.seek(20 * 2**20)
            byte = handle.read(1)
            handle.seek(20 * 2**20)
            handle.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "truncate the graph":
        (entry / modelcache.MODEL_FILE).write_bytes((entry / modelcache.MODEL_FILE).read_bytes()[:1000])
    else:
        (entry / modelcache.MANIFEST_FILE).unlink()
    assert modelcache.verified(entry) is None
    embedder = _fresh(cache_dir, monkeypatch)
    assert modelcache.verified(entry) == entry / modelcache.MODEL_FILE
    assert {name: sha256_of(entry / name) for name in good} == good  # the build is deterministic
    np.testing.assert_allclose(embedder.embed_sync(TEXTS), _reference(embedder), atol=1e-5)
    assert [path.name for path in cache_dir.iterdir()] == [entry.name]  # no scratch folder left behind


def test_a_cache_that_cannot_be_written_falls_back_to_the_rewrite_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    embedder = _fresh(blocked / "models", monkeypatch)
    np.testing.assert_allclose(embedder.embed_sync(TEXTS), _reference(embedder), atol=1e-5)


def test_the_serving_process_never_imports_onnx_even_when_it_builds_the_cache(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harmonia_mcp.embed import OnnxEmbedder\n"
        f"vectors = OnnxEmbedder(cache_dir=Path({str(tmp_path)!r})).embed_sync(['User has two cats'])\n"
        "assert vectors.shape == (1, 384)\n"
        "print('onnx' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
    assert modelcache.verified(_entry(tmp_path)) is not None  # it was built, by the child
