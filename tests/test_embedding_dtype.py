"""Embedding precision: fp16 weights on CUDA only, and float32 vectors whatever the model's precision."""

from __future__ import annotations

import numpy as np
import torch

from genloom import embeddings as embedding


def test_half_precision_only_on_cuda():
    assert embedding.load_kwargs("cuda") == {"model_kwargs": {"dtype": torch.float16}}
    assert embedding.load_kwargs("cuda:1") == {"model_kwargs": {"dtype": torch.float16}}
    assert embedding.load_kwargs("cpu") == {}


def test_a_half_precision_model_still_gives_float32_unit_vectors(monkeypatch):
    # What CUDA loads, forced on the CPU (torch has fp16 CPU kernels): embed's contract holds.
    monkeypatch.setattr(embedding, "load_kwargs", lambda device: {"model_kwargs": {"dtype": torch.float16}})
    path = str(embedding.model_path(None))  # its own cache key: the default model's cached instance is untouched
    embedding.get_embedder.cache_clear()
    try:
        assert embedding.get_embedder(path).dtype == torch.float16
        vectors = embedding.embed(["BM25 and vectors, fused in SQL", "a handwritten seven"], name=path)
        assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)
    finally:
        embedding.get_embedder.cache_clear()
