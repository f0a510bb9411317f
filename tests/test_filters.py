"""Metadata filters: the --where grammar, the JSON form, what matches in Postgres, and the HNSW path."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa


def test_where_strings_parse_to_filter_documents():
    from genloom.retrieval.filters import parse_where

    assert parse_where(None) is None
    assert parse_where(["lang=en"]) == {"lang": {"$eq": "en"}}
    assert parse_where(["lang!=en", "year>=2020", "lang in en, fr", "tag not in a,b", "summary exists", "x<=3", "d<2024-01-01", "n>1"]) == {
        "$and": [
            {"lang": {"$ne": "en"}},
            {"year": {"$gte": "2020"}},
            {"lang": {"$in": ["en", "fr"]}},
            {"tag": {"$nin": ["a", "b"]}},
            {"summary": {"$exists": True}},
            {"x": {"$lte": "3"}},
            {"d": {"$lt": "2024-01-01"}},
            {"n": {"$gt": "1"}},
        ]
    }
    assert parse_where(["title=a=b"]) == {"title": {"$eq": "a=b"}}  # the first operator splits


@pytest.mark.parametrize(
    "bad, message",
    [
        (["novalue"], "--where expects key=value"),
        (["=x"], "--where expects key=value"),
        (["year>=soon"], "compares numbers or ISO dates"),
        (["lang in ,"], "give the values after 'in'"),
    ],
)
def test_bad_where_strings_are_one_line_errors(bad, message):
    from genloom.errors import BadInput
    from genloom.retrieval.filters import parse_where, to_jsonpath

    with pytest.raises(BadInput, match=message):
        to_jsonpath(parse_where(bad))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ('{"$xor": []}', "unknown operator '\\$xor'"),
        ('{"a": {"$near": 1}}', "unknown operator '\\$near'"),
        ('{"$or": []}', "non-empty list"),
        ('{"a": {"$exists": "yes"}}', "\\$exists takes true or false"),
        ('[1]', "expected a non-empty JSON object"),
    ],
)
def test_bad_where_json_is_a_one_line_error(text, message):
    from genloom.errors import BadInput
    from genloom.retrieval.filters import parse_where_json

    with pytest.raises(BadInput, match=message):
        parse_where_json(text)


METADATA = {
    "a": {"lang": "en", "year": 2019, "date": "2023-05-01", "draft": "yes"},
    "b": {"lang": "fr", "year": "2021", "date": "2024-02-10"},
    "c": {"lang": "de", "year": 2024, "date": "2024-11-30", "summary": "short"},
    "d": {"lang": "en", "year": "unknown"},
}


def _matching(session, where) -> list[str]:
    from genloom.retrieval.filters import to_jsonpath

    path = to_jsonpath(where)
    return [
        name for name, meta in METADATA.items()
        if session.scalar(sa.text("SELECT CAST(:m AS jsonb) @@ CAST(:p AS jsonpath)"), {"m": __import__("json").dumps(meta), "p": path})
    ]


@pytest.mark.parametrize(
    "where, expected",
    [
        (["lang=en"], ["a", "d"]),
        (["lang!=en"], ["b", "c"]),
        (["lang in fr,de"], ["b", "c"]),
        (["lang not in fr,de"], ["a", "d"]),
        (["year=2021"], ["b"]),  # a string "2021" equals the number
        (["year=2019"], ["a"]),  # and a number equals the text
        (["year>=2021"], ["b", "c"]),  # numbers and numeric strings compare numerically; "unknown" never matches
        (["year<2021"], ["a"]),
        (["date>=2024-01-01"], ["b", "c"]),
        (["date<2024-02-10"], ["a"]),
        (["summary exists"], ["c"]),
        (["draft missing"], ["b", "c", "d"]),
        (["lang=en", "year>2000"], ["a"]),
    ],
)
def test_where_strings_match_in_postgres(db_url, session, where, expected):
    from genloom.retrieval.filters import parse_where

    assert _matching(session, parse_where(where)) == expected


@pytest.mark.parametrize(
    "where, expected",
    [
        ({"lang": "en"}, ["a", "d"]),  # the old equality-only form still works
        ({"$or": [{"lang": "fr"}, {"year": {"$gte": 2024}}]}, ["b", "c"]),
        ({"$not": {"lang": "en"}}, ["b", "c"]),
        ({"$and": [{"lang": {"$in": ["en", "de"]}}, {"$not": {"draft": "yes"}}]}, ["c", "d"]),
        ({"lang": "en", "year": {"$lt": 2020, "$gt": 2000}}, ["a"]),
        ({"summary": {"$exists": False}, "lang": {"$ne": "en"}}, ["b"]),
        ({"weird \"key\"": "x"}, []),  # quoted safely
    ],
)
def test_where_json_matches_in_postgres(db_url, session, where, expected):
    assert _matching(session, where) == expected


def _random_corpus(session, n_docs: int, rare_every: int, dim: int = 16, seed: int = 0):
    """n_docs one-chunk documents with random unit vectors; every rare_every-th has tag=rare, year i."""
    from genloom.retrieval import bm25
    from genloom.retrieval.collections import ensure_collection
    from genloom.retrieval.vector import ensure_embedding_model
    from genloom.db.bulk import PreparedDocument, write_documents

    rng = np.random.default_rng(seed)
    model = ensure_embedding_model(session, "test-random-16", dim)
    coll = ensure_collection(session, "r", embedding_model_id=model.id)
    vectors = rng.normal(size=(n_docs, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [
        PreparedDocument(
            external_id=f"d{i}", version=1, sha256=f"{i:064x}", title=None, uri=None, mime_type="text/plain",
            metadata={"tag": "rare" if i % rare_every == 0 else "common", "year": 1000 + i},
            chunk_texts=[f"document number {i} about topic {i % 7}"], token_counts=[6], vectors=vectors[i : i + 1],
        )
        for i in range(n_docs)
    ]
    _, chunk_ids = write_documents(session, coll.id, model.id, docs)
    bm25.index_chunks(session, coll.id, "english", chunk_ids)
    session.commit()
    session.execute(sa.text("ANALYZE"))
    return rng, dim, model.id


def test_one_percent_filter_returns_k_rows_through_the_hnsw_index(session):
    """Forced onto the HNSW graph (at this size the planner rightly prefers filtering first and
    sorting exactly), the iterative scan keeps walking past ef_search until k rows pass the
    filter; EXPLAIN shows the index."""
    from genloom.retrieval.search import search
    from genloom.retrieval.vector import hnsw_index_name

    rng, dim, model_id = _random_corpus(session, n_docs=2000, rare_every=100)  # 20 rare = 1 %
    query = rng.normal(size=dim).astype(np.float32)
    query /= np.linalg.norm(query)
    captured: list[tuple[str, dict]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "query_terms AS" in statement:
            captured.append((statement, parameters))

    engine = session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        for mode in ("vector", "hybrid"):
            session.execute(sa.text("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off"))
            for where in ({"tag": "rare"}, {"$and": [{"tag": "rare"}, {"year": {"$gte": 1000}}]}):
                hits = search(session, "document", collection="r", mode=mode, k=10, where=where,
                              query_embedding=query, ef_search=10, depth=10)
                assert len(hits) == 10, (mode, where)
                assert all(h.metadata["tag"] == "rare" for h in hits)
            statement, parameters = captured[-1]
            plan = "\n".join(
                session.connection().exec_driver_sql("EXPLAIN " + statement, parameters).scalars().all()
            )
            assert f"Index Scan using {hnsw_index_name(model_id)}" in plan, plan
            session.rollback()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    # The exact answer (no index) agrees on which rows are nearest.
    exact = session.execute(
        sa.text(
            "SELECT e.chunk_id FROM embeddings e JOIN chunks c ON c.id = e.chunk_id "
            "JOIN documents d ON d.id = c.document_id WHERE d.metadata @> '{\"tag\": \"rare\"}' "
            "ORDER BY e.embedding::vector(16) <=> CAST(:q AS vector(16)) LIMIT 10"
        ),
        {"q": "[" + ",".join(map(str, query)) + "]"},
    ).scalars().all()
    hits = search(session, "document", collection="r", mode="vector", k=10, where={"tag": "rare"}, query_embedding=query)
    assert [h.chunk_id for h in hits] == exact


def test_range_filter_through_search_and_cli(session, cli):
    from genloom.retrieval.search import search

    _random_corpus(session, n_docs=300, rare_every=10)
    hits = search(session, "document", collection="r", mode="bm25", k=50, where={"year": {"$gte": 1290}})
    assert sorted(h.metadata["year"] for h in hits) == list(range(1290, 1300))
    result = cli("search", "document", "--collection", "r", "--mode", "bm25", "-k", "50",
                 "--where", "year>=1290", "--where", "tag!=rare", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(r["metadata"]["year"] for r in result.json()) == [y for y in range(1290, 1300) if y != 1290]
    result = cli("search", "document", "--collection", "r", "--mode", "bm25", "-k", "50",
                 "--where-json", '{"$or": [{"year": 1001}, {"year": {"$lte": 1000}}]}', "--json")
    assert sorted(r["metadata"]["year"] for r in result.json()) == [1000, 1001]
    bad = cli("search", "document", "--collection", "r", "--where", "year>=soon")
    assert bad.exit_code == 1 and bad.stderr.count("\n") == 1 and "compares numbers or ISO dates" in bad.stderr


def test_http_search_takes_where_and_where_json(session):
    from fastapi.testclient import TestClient

    from genloom.api.app import create_app
    from genloom.api.auth import SecuritySettings

    _random_corpus(session, n_docs=300, rare_every=10)
    # keys and the Host allow-list are tests/test_security.py's subject; here only the filters
    with TestClient(create_app(SecuritySettings(auth=False)), base_url="http://127.0.0.1") as client:
        base = {"q": "document", "collection": "r", "mode": "bm25", "k": 50}
        r = client.get("/v1/search", params={**base, "where": ["year>=1290", "tag!=rare"]})
        assert r.status_code == 200, r.text
        assert sorted(h["metadata"]["year"] for h in r.json()["hits"]) == list(range(1291, 1300))
        r = client.get("/v1/search", params={**base, "where_json": '{"$or": [{"year": 1001}, {"year": {"$lte": 1000}}]}'})
        assert sorted(h["metadata"]["year"] for h in r.json()["hits"]) == [1000, 1001]
        bad = client.get("/v1/search", params={**base, "where_json": '{"$xor": []}'})
        assert bad.status_code == 422 and "unknown operator" in bad.json()["error"]["message"]
