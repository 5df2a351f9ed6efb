"""A reference embedding: what a session computes for texts, pooled as sentence-transformers pools all-MiniLM-L6-v2
(mean over the attention mask, then unit length), written out here so the server's path can be checked against it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pooled(session: Any, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """One unit row per text: `session` (an onnxruntime session of the model) run on `tokenizer`'s encodings."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
    mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
    (hidden,) = session.run(
        ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    )
    weights = mask[:, :, None].astype(np.float32)
    vectors = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
    return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
