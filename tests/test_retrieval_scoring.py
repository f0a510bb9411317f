"""BM25 with query term frequency, computed by hand; the default fusion on a tiny fixture (issue 19)."""

from __future__ import annotations

import math

import numpy as np
import pytest


def _tiny_collection(session, name: str, docs: dict[str, list[str]], vectors: dict[str, list[list[float]]]):
    """Documents made of the given chunks and chunk vectors (no model), indexed for BM25."""
    from genloom.retrieval import bm25
    from genloom.retrieval.collections import ensure_collection
    from genloom.retrieval.vector import ensure_embedding_model

    from genloom.db.bulk import PreparedDocument, write_documents

    dim = len(next(iter(vectors.values()))[0])
    model = ensure_embedding_model(session, f"test-fixed-{dim}", dim)
    coll = ensure_collection(session, name, embedding_model_id=model.id)
    prepared = []
    for i, (doc_id, chunks) in enumerate(docs.items()):
        v = np.asarray(vectors[doc_id], dtype=np.float32)
        prepared.append(PreparedDocument(
            external_id=doc_id, version=1, sha256=f"{i:064x}", title=None, uri=None, mime_type="text/plain",
            metadata={}, chunk_texts=chunks, token_counts=[len(c.split()) for c in chunks],
            vectors=v / np.linalg.norm(v, axis=1, keepdims=True),
        ))
    _, chunk_ids = write_documents(session, coll.id, model.id, prepared)
    bm25.index_chunks(session, coll.id, "english", chunk_ids)
    session.commit()
    return coll


def _okapi(tf: int, idf: float, length: int, avglen: float, k1: float = 0.9, b: float = 0.4) -> float:
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avglen))


def test_bm25_weights_a_repeated_query_term_by_its_count(session):
    from genloom.retrieval.search import search

    # Lexemes (english): d1 appl x2, banana -> length 3; d2 banana, cherri -> 2; d3 cherri, date -> 2.
    _tiny_collection(session, "qtf", {"d1": ["apple apple banana"], "d2": ["banana cherry"], "d3": ["cherry date"]},
                     {d: [[1.0, 0.0]] for d in ("d1", "d2", "d3")})
    n, avglen = 3, 7 / 3
    idf_apple = math.log(1 + (n - 1 + 0.5) / (1 + 0.5))  # df 1
    idf_banana = math.log(1 + (n - 2 + 0.5) / (2 + 0.5))  # df 2
    idf_cherry = idf_banana

    # "apple apple banana cherry": appl qtf 2, banana qtf 1, cherri qtf 1.
    hits = search(session, "Apple? apple, banana and cherry", collection="qtf", mode="bm25", k=10)
    got = {h.doc_id: h.bm25_score for h in hits}
    assert got == pytest.approx({
        "d1": 2 * _okapi(2, idf_apple, 3, avglen) + _okapi(1, idf_banana, 3, avglen),
        "d2": _okapi(1, idf_banana, 2, avglen) + _okapi(1, idf_cherry, 2, avglen),
        "d3": _okapi(1, idf_cherry, 2, avglen),
    }, abs=1e-9)
    # Written out for d1 with k1 0.9, b 0.4: 2 * 0.98083 * 2 * 1.9 / (2 + 0.9 * (0.6 + 0.4 * 9 / 7)) + ...
    assert got["d1"] == pytest.approx(2.92827, abs=1e-5)

    once = {h.doc_id: h.bm25_score for h in search(session, "apple apple banana cherry", collection="qtf",
                                                   mode="bm25", k=10, query_tf=False)}
    assert once["d1"] == pytest.approx(_okapi(2, idf_apple, 3, avglen) + _okapi(1, idf_banana, 3, avglen), abs=1e-9)
    assert once["d2"] == pytest.approx(got["d2"], abs=1e-9)


def test_query_lexemes_lists_each_lexeme_with_its_count(session):
    from genloom.retrieval.bm25 import query_lexemes

    assert query_lexemes(session, "english", "the apple, the apples and a banana") == [("appl", 2), ("banana", 1)]


def test_default_fusion_mixes_min_max_normalised_scores_half_and_half(session):
    from genloom.retrieval.search import search

    # Query "zebra" with query vector (1, 0). BM25 finds z3 (tf 3) above z1h (tf 1); cosine ranks
    # z1h 1.0, h 0.8, z3 0.6, c 0.0.
    _tiny_collection(session, "fuse", {"z3": ["zebra zebra zebra"], "z1h": ["zebra horse"], "h": ["horse"],
                                       "c": ["cat"]},
                     {"z3": [[0.6, 0.8]], "z1h": [[1.0, 0.0]], "h": [[0.8, 0.6]], "c": [[0.0, 1.0]]})
    hits = search(session, "zebra", collection="fuse", k=10, query_embedding=[1.0, 0.0], by_document=True)
    # 0.5 * minmax(BM25) + 0.5 * minmax(cosine); a document BM25 did not find gets 0 from it.
    assert [(h.doc_id, round(h.score, 6)) for h in hits] == [
        ("z3", 0.5 * 1 + 0.5 * 0.6), ("z1h", 0.5 * 0 + 0.5 * 1.0), ("h", 0.5 * 0.8), ("c", 0.0)]
    # RRF k = 60, the default before issue 19, puts the document both branches rank high first instead.
    rrf = search(session, "zebra", collection="fuse", k=10, query_embedding=[1.0, 0.0], by_document=True,
                 fusion="rrf")
    assert [h.doc_id for h in rrf][:2] == ["z1h", "z3"]
    assert rrf[0].score == pytest.approx(1 / 62 + 1 / 61, abs=1e-12)
