"""Encoder batches are bounded by padded tokens, not only by count (issue 30): a file without
sentence ends chunks into inputs of the model's full length, and 64 of them at once made MiniLM
peak about 1.2 GB on a CPU. bench/ingest_single_line.py --model minilm measures the memory."""

from __future__ import annotations

import random

import numpy as np
import pytest

from genloom import embeddings
from genloom.embeddings import token_batches

WORDS = "data model vector index query token chunk search rank score table row column".split()


def test_token_batches_bound_count_times_longest_and_keep_every_input_once() -> None:
    rng = random.Random(1)
    lengths = [256] * 40 + [rng.randint(3, 40) for _ in range(150)] + [100] * 30
    batches = token_batches(lengths, batch_size=64, token_budget=4096)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) * max(lengths[i] for i in batch) <= 4096
    full = [b for b in batches if lengths[b[0]] == 256]
    assert [len(b) for b in full] == [16, 16, 16]  # 4096 // 256 = 16 at a time (the last one topped up)
    assert max(len(b) for b in batches) == 64  # short inputs still go 64 at a time
    # Without a budget only the count bounds a batch: the full-length inputs go 64 at a time.
    unbounded = token_batches(lengths, batch_size=64, token_budget=None)
    assert max(len(b) * max(lengths[i] for i in b) for b in unbounded) == 64 * 256


def test_an_input_longer_than_the_budget_goes_alone() -> None:
    assert token_batches([300, 300, 5], batch_size=64, token_budget=256) == [[0], [1], [2]]


@pytest.fixture()
def tiny_encoder(tiny_model, monkeypatch):
    """The session's tiny model with its encode calls recorded: (inputs, longest in tokens)."""
    model = embeddings.get_embedder(str(tiny_model))
    calls: list[tuple[int, int]] = []
    encode = model.encode

    def recording_encode(texts, **kwargs):
        lengths = embeddings._token_lengths(model, list(texts))
        calls.append((len(texts), max(lengths, default=0)))
        return encode(texts, **kwargs)

    monkeypatch.setattr(model, "encode", recording_encode)
    return str(tiny_model), model, calls


def test_embed_keeps_encoder_batches_within_the_token_budget_and_the_order(tiny_encoder, monkeypatch) -> None:
    name, model, calls = tiny_encoder
    rng = random.Random(2)
    # Full-length chunks (a punctuation-free line) mixed with short ones, in no particular order.
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.choice((400, 400, 6, 30)))) for _ in range(90)]
    monkeypatch.setattr(embeddings, "CPU_TOKEN_BUDGET", 1024)
    vectors = embeddings.embed(texts, name=name, batch_size=64)
    assert vectors.shape == (90, 32) and vectors.dtype == np.float32
    assert len(calls) > 1
    assert all(n * longest <= 1024 for n, longest in calls), calls
    assert sum(n for n, _ in calls) == 90
    # Each row is its own text's vector: the same as encoding that text alone.
    alone = np.stack([model.encode([t], normalize_embeddings=True, convert_to_numpy=True)[0] for t in texts])
    np.testing.assert_allclose(vectors, alone, atol=1e-5)


def test_without_the_budget_a_batch_is_bound_by_count_only(tiny_encoder, monkeypatch) -> None:
    """The control: with the budget off, 64 full-length inputs go to the encoder at once."""
    name, _model, calls = tiny_encoder
    texts = [" ".join(WORDS * 40)] * 64
    monkeypatch.setattr(embeddings, "CPU_TOKEN_BUDGET", None)
    embeddings.embed(texts, name=name, batch_size=64)
    assert calls == [(64, 256)]
    calls.clear()
    monkeypatch.setattr(embeddings, "CPU_TOKEN_BUDGET", 4096)
    embeddings.embed(texts, name=name, batch_size=64)
    assert calls == [(16, 256)] * 4
