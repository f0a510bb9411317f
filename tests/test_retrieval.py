"""Retrieval: true BM25 in SQL, vector search with filters, fusion, search API and CLI, BEIR eval."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from conftest import shared_data

CORPUS = {
    "cats.txt": "Cats are small domesticated carnivores. A cat sleeps most of the day and hunts mice at night.",
    "dogs.txt": "Dogs are loyal companions. A dog needs daily walks, and dogs bark at strangers and at cats.",
    "pasta.txt": "Cook the spaghetti in a large pot of salted boiling water for nine minutes, then drain it.",
    "postgres.txt": "PostgreSQL stores rows in heap pages; an index maps keys to rows. Vacuum reclaims dead rows.",
    "zyx.txt": "The zyxquartz protocol report lists the committee members and the dates of the meetings.",
    "solar.txt": "Solar panels convert sunlight into electricity; panels on a roof face south in the north.",
}


@pytest.fixture(scope="module")
def embedder():
    """Load the bundled model once for the module (the process cache keeps it afterwards)."""
    from genloom.embeddings import get_embedder

    return get_embedder()


@pytest.fixture
def corpus(db_url, tmp_path, embedder):
    from ingest.pipeline import IngestOptions, ingest

    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in CORPUS.items():
        (folder / name).write_text(text)
    result = ingest([folder], IngestOptions(collection="c"))
    assert result.documents == len(CORPUS) and not result.errors
    return folder


def _name(hit) -> str:
    return Path(hit.doc_id).name


def _python_bm25(session, query: str, k1=0.9, b=0.4) -> dict[int, float]:
    """Okapi BM25 written out in Python over the same lexemes Postgres produces."""
    rows = session.execute(
        sa.text(
            """
            SELECT c.id, l.lexeme, array_length(l.positions, 1)
            FROM chunks c JOIN documents d ON d.id = c.document_id AND d.superseded_at IS NULL
            CROSS JOIN LATERAL unnest(to_tsvector('english', coalesce(d.title, '') || E'\\n' || c.text)) l
            """
        )
    ).all()
    all_chunks = session.scalars(
        sa.text("SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id AND d.superseded_at IS NULL")
    ).all()
    tf: dict[int, Counter] = {cid: Counter() for cid in all_chunks}
    for cid, lexeme, count in rows:
        tf[cid][lexeme] = count
    query_terms = dict(session.execute(
        sa.text("SELECT lexeme, array_length(positions, 1) FROM unnest(to_tsvector('english', :q))"), {"q": query}
    ).all())  # lexeme -> its count in the query (query term frequency)
    n = len(tf)
    length = {cid: sum(c.values()) for cid, c in tf.items()}
    avglen = sum(length.values()) / n
    df = Counter(t for c in tf.values() for t in c)
    scores = {}
    for cid, counts in tf.items():
        s = 0.0
        for t, qtf in query_terms.items():
            f = counts.get(t, 0)
            if f:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                s += qtf * idf * f * (k1 + 1) / (f + k1 * (1 - b + b * length[cid] / avglen))
        if s > 0:
            scores[cid] = s
    return scores


@pytest.mark.parametrize(
    "query", ["cats and dogs", "rows of the index pages", "panels sunlight roof", "zyxquartz", "rows, rows and a row index"]
)
def test_bm25_scores_equal_python_bm25_over_the_same_lexemes(corpus, session, query):
    from genloom.retrieval.search import search

    hits = search(session, query, collection="c", mode="bm25", k=50)
    expected = _python_bm25(session, query)
    assert {h.chunk_id for h in hits} == set(expected)
    for hit in hits:
        assert hit.bm25_score == pytest.approx(expected[hit.chunk_id], abs=1e-6)
    assert [h.bm25_rank for h in hits] == list(range(1, len(hits) + 1))


def test_bm25_parameters_are_configurable(corpus, session):
    from genloom.retrieval.search import search

    hits = search(session, "cats dogs", collection="c", mode="bm25", k1=1.2, b=0.75)
    expected = _python_bm25(session, "cats dogs", k1=1.2, b=0.75)
    assert {h.chunk_id: h.bm25_score for h in hits} == pytest.approx(expected, abs=1e-6)


def test_hybrid_ranks_a_document_that_only_one_branch_found(corpus, session, embedder):
    from genloom.retrieval.search import search
    from genloom.embeddings import embed

    # BM25 alone finds zyx.txt (the only document with the word); the query vector is
    # pasta.txt's own text, so the vector branch's top-1 (depth 1) is pasta.txt alone.
    vector = embed([CORPUS["pasta.txt"]])[0]
    hits = search(session, "zyxquartz", collection="c", mode="hybrid", k=5, depth=1, query_embedding=vector)
    by_name = {_name(h): h for h in hits}
    assert set(by_name) == {"zyx.txt", "pasta.txt"}
    assert by_name["zyx.txt"].bm25_rank == 1 and by_name["zyx.txt"].vector_rank is None
    assert by_name["pasta.txt"].vector_rank == 1 and by_name["pasta.txt"].bm25_rank is None
    for hit in hits:  # default fusion: 0.5 * (1, the only candidate of its branch) + 0.5 * 0 (absent)
        assert hit.score == pytest.approx(0.5)
    rrf = search(session, "zyxquartz", collection="c", mode="hybrid", k=5, depth=1, query_embedding=vector,
                 fusion="rrf")
    assert sorted(_name(h) for h in rrf) == ["pasta.txt", "zyx.txt"]
    for hit in rrf:  # RRF with k = 60: one branch at rank 1 each
        assert hit.score == pytest.approx(1 / 61)


def test_hybrid_puts_the_document_both_branches_agree_on_first(corpus, session):
    from genloom.retrieval.search import search

    hits = search(session, "how long to boil spaghetti", collection="c", k=3)
    assert _name(hits[0]) == "pasta.txt"
    assert hits[0].bm25_rank == 1 and hits[0].vector_rank == 1
    assert hits[0].score == pytest.approx(1.0)  # the best of both branches: 0.5 * 1 + 0.5 * 1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_vector_mode_scores_are_cosine_similarities(corpus, session):
    from genloom.retrieval.search import search
    from genloom.embeddings import embed

    hits = search(session, "a pet that barks", collection="c", mode="vector", k=6)
    assert _name(hits[0]) == "dogs.txt"
    assert len(hits) == 6 and all(h.bm25_rank is None for h in hits)
    q = embed(["a pet that barks"])[0]
    d = embed(["dogs\n\n" + CORPUS["dogs.txt"]])[0]
    assert hits[0].vector_score == pytest.approx(float(q @ d), abs=1e-4)


def test_weighted_fusion_mixes_normalised_scores(corpus, session):
    from genloom.retrieval.search import search

    hits = search(session, "cats", collection="c", k=6, fusion="weighted", bm25_weight=0.7)
    assert all(0.0 <= h.score <= 1.0 + 1e-9 for h in hits)
    top = hits[0]
    assert _name(top) == "cats.txt" and top.score == pytest.approx(1.0)  # best in both branches


def test_metadata_filter_and_by_document(corpus, session, tmp_path):
    from genloom.retrieval.search import search
    from ingest.loaders import LoadOptions
    from ingest.pipeline import IngestOptions, ingest

    extra = tmp_path / "extra.txt"
    extra.write_text("Cats and dogs can share a home if they meet young.")
    ingest([extra], IngestOptions(collection="c", load=LoadOptions(metadata={"team": "pets"})))
    for mode in ("bm25", "vector", "hybrid"):
        hits = search(session, "cats", collection="c", mode=mode, where={"team": "pets"})
        assert [_name(h) for h in hits] == ["extra.txt"], mode
        assert hits[0].metadata["team"] == "pets"
    hits = search(session, "cats dogs", collection="c", k=10, by_document=True)
    assert len({h.document_id for h in hits}) == len(hits)


def _random_corpus(session, n_docs: int, rare_every: int, dim: int = 32, seed: int = 0):
    """n_docs one-chunk documents with random unit vectors; every rare_every-th has tag=rare."""
    from genloom.retrieval import bm25
    from genloom.retrieval.collections import ensure_collection
    from genloom.retrieval.vector import ensure_embedding_model
    from genloom.db.bulk import PreparedDocument, write_documents

    rng = np.random.default_rng(seed)
    model = ensure_embedding_model(session, "test-random-32", dim)
    coll = ensure_collection(session, "r", embedding_model_id=model.id)
    vectors = rng.normal(size=(n_docs, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [
        PreparedDocument(
            external_id=f"d{i}", version=1, sha256=f"{i:064x}", title=None, uri=None, mime_type="text/plain",
            metadata={"tag": "rare" if i % rare_every == 0 else "common"},
            chunk_texts=[f"document number {i} about topic {i % 7}"], token_counts=[6], vectors=vectors[i : i + 1],
        )
        for i in range(n_docs)
    ]
    _, chunk_ids = write_documents(session, coll.id, model.id, docs)
    bm25.index_chunks(session, coll.id, "english", chunk_ids)
    session.commit()
    session.execute(sa.text("ANALYZE"))  # the planner's row estimates, as autovacuum would leave them
    return rng, dim


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def test_one_percent_selective_filter_still_returns_k_rows(session):
    from sqlalchemy import event

    from genloom.retrieval.search import search
    from genloom.retrieval.vector import hnsw_index_name

    rng, dim = _random_corpus(session, n_docs=3000, rare_every=100)  # 30 rare documents = 1 %
    index = hnsw_index_name(session.scalar(sa.text("SELECT id FROM embedding_models WHERE name = 'test-random-32'")))
    query = rng.normal(size=dim).astype(np.float32)
    query /= np.linalg.norm(query)
    for mode in ("vector", "hybrid"):
        # Force the HNSW path (for 30 rows the planner may prefer an exact scan and sort): with
        # ef_search 20 and 1 % of rows passing the filter, a plain graph walk would return ~0 rows;
        # only the iterative scan keeps walking until 10 rows pass.
        session.execute(sa.text("SET LOCAL enable_sort = off"))
        session.execute(sa.text("SET LOCAL enable_seqscan = off"))
        statements = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            statements.append((statement, parameters))

        event.listen(session.get_bind(), "before_cursor_execute", capture)
        try:
            hits = search(session, "document", collection="r", mode=mode, k=10, where={"tag": "rare"},
                          query_embedding=query, ef_search=20, depth=10)
        finally:
            event.remove(session.get_bind(), "before_cursor_execute", capture)
        statement, parameters = statements[-1]
        plan = session.connection().exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar()[0]["Plan"]
        assert any(node.get("Index Name") == index for node in _plan_nodes(plan)), (mode, plan)
        assert len(hits) == 10, mode
        assert all(h.metadata["tag"] == "rare" for h in hits)
        if mode == "vector":
            vector_hits = hits
        session.rollback()  # the SET LOCALs end with the transaction
    exact = session.execute(
        sa.text(
            "SELECT e.chunk_id FROM embeddings e JOIN chunks c ON c.id = e.chunk_id "
            "JOIN documents d ON d.id = c.document_id WHERE d.metadata @> '{\"tag\": \"rare\"}' "
            "ORDER BY e.embedding::vector(32) <=> CAST(:q AS vector(32)) LIMIT 10"
        ),
        {"q": "[" + ",".join(map(str, query)) + "]"},
    ).scalars().all()
    # relaxed_order may return the 10 in a slightly different order than the exact scan; the set is the contract.
    assert sorted(h.chunk_id for h in vector_hits) == sorted(exact)
    hits = search(session, "document", collection="r", mode="bm25", k=10, where={"tag": "rare"})
    assert len(hits) == 10 and all(h.metadata["tag"] == "rare" for h in hits)


def test_unknown_collection_and_empty_query_are_clear_errors(db_url, session):
    from genloom.errors import BadInput, NotFound
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.search import search

    with pytest.raises(NotFound, match="collection 'nope' not found"):
        search(session, "x", collection="nope")
    with pytest.raises(NotFound):
        get_collection(session, "nope")
    with pytest.raises(BadInput, match="empty query"):
        search(session, "   ", collection="nope")


def test_search_cli_single_json_and_bad_input(corpus, cli):
    result = cli("search", "boiling water spaghetti", "--collection", "c", "-k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    rows = result.json()
    assert len(rows) == 2 and Path(rows[0]["doc_id"]).name == "pasta.txt"
    assert {"doc_id", "chunk_id", "title", "text", "score", "bm25_rank", "vector_rank"} <= set(rows[0])
    human = cli("search", "spaghetti", "--collection", "c", "-k", "1", "--mode", "bm25")
    assert human.exit_code == 0 and "pasta.txt" in human.stdout
    for args, message in [
        (("search", "", "--collection", "c"), "error: empty query: give the text to search for\n"),
        (("search", "x", "--collection", "nope"), "error: collection 'nope' not found"),
        (("search", "x", "--collection", "c", "--mode", "fuzzy"), "error: unknown mode 'fuzzy'"),
        (("search", "x", "--collection", "c", "--where", "novalue"), "error: --where expects key=value"),
    ]:
        bad = cli(*args)
        assert bad.exit_code == 1, args
        assert bad.stderr.startswith(message) and bad.stderr.count("\n") == 1, bad.stderr


def test_search_cli_batch_mode_writes_one_line_per_query(corpus, cli, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        json.dumps({"_id": "q1", "text": "barking dog"}) + "\n" + json.dumps({"id": "q2", "query": "solar roof"}) + "\n"
    )
    result = cli("search", "--queries", queries, "--collection", "c", "--mode", "hybrid", "-k", "3",
                 "--by-document", "--json")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["query_id"] for line in lines] == ["q1", "q2"]
    assert Path(lines[0]["results"][0]["doc_id"]).name == "dogs.txt"
    assert Path(lines[1]["results"][0]["doc_id"]).name == "solar.txt"
    assert all(len(line["results"]) == 3 for line in lines)


def test_beir_metrics_match_hand_computed_values():
    from genloom.retrieval.beir import mrr_at, ndcg_at, recall_at, score_run

    rel = {"a": 1, "b": 1}
    assert ndcg_at(["x", "a", "y", "b"], rel) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert recall_at(["x", "a"], rel) == 0.5
    assert mrr_at(["x", "y", "b"], rel) == pytest.approx(1 / 3)
    assert mrr_at([f"x{i}" for i in range(10)] + ["a"], rel) == 0.0
    assert score_run({"q": ["a", "b"]}, {"q": rel, "empty": {"z": 0}}) == {"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}


def test_graded_ndcg_matches_hand_computed_values():
    from genloom.retrieval.beir import ndcg_at

    rel = {"a": 3, "b": 2, "c": 1, "z": 0}
    # DCG = 2/log2(2) + 0/log2(3) + 3/log2(4) + 1/log2(5) = 2 + 1.5 + 0.4306765581 = 3.9306765581
    # IDCG (3, 2, 1) = 3 + 2/log2(3) + 1/2 = 3 + 1.2618595071 + 0.5 = 4.7618595071
    assert ndcg_at(["b", "x", "a", "c"], rel) == pytest.approx(3.9306765581 / 4.7618595071, abs=1e-9)
    assert ndcg_at(["a", "b", "c"], rel) == pytest.approx(1.0)
    assert ndcg_at(["c", "b", "a"], rel) == pytest.approx((1 + 2 / math.log2(3) + 3 / 2) / 4.7618595071)
    # k cuts the run *and* the ideal list: at k = 1 only the top document counts.
    assert ndcg_at(["b", "a"], rel, k=1) == pytest.approx(2 / 3)
    assert ndcg_at(["z", "x"], rel) == 0.0


def test_a_document_listed_twice_counts_once():
    from genloom.retrieval.beir import mrr_at, ndcg_at, recall_at

    rel = {"a": 2, "b": 1}
    # A run repeating its best document must not beat the ideal ranking (was 1.63).
    assert ndcg_at(["a", "a", "a", "b"], rel) == pytest.approx(1.0)
    assert ndcg_at(["b", "b", "a"], rel) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    # The repeat does not take a rank: "a" is second, not third.
    assert mrr_at(["x", "x", "a"], rel) == pytest.approx(1 / 2)
    assert recall_at(["x", "x", "a"], rel, k=2) == 0.5


def test_eval_retrieval_on_a_scifact_subset_end_to_end(db_url, cli, tmp_path, embedder):
    scifact = shared_data("scifact")
    qrels = [line.split("\t") for line in (scifact / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    wanted_queries = sorted({q for q, _, _ in qrels})[:5]
    relevant = {d for q, d, _ in qrels if q in wanted_queries}
    corpus = [json.loads(line) for line in (scifact / "corpus.jsonl").open()]
    subset = [doc for doc in corpus if doc["_id"] in relevant] + [doc for doc in corpus if doc["_id"] not in relevant][:15]
    beir = tmp_path / "scifact-mini"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in subset))
    queries = [json.loads(line) for line in (scifact / "queries.jsonl").open()]
    (beir / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries if q["_id"] in wanted_queries))
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in qrels if r[0] in wanted_queries)
    )
    result = cli("eval", "retrieval", "--beir", beir, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["queries"] == len(wanted_queries) and report["collection"] == "beir-scifact-mini"
    assert set(report["modes"]) == {"bm25", "vector", "hybrid"}
    for mode, metrics in report["modes"].items():
        assert 0.3 < metrics["ndcg@10"] <= 1.0 and 0.3 < metrics["mrr@10"] <= 1.0
        # 100 > corpus size: the vector branch ranks everything; BM25 only what shares a lexeme.
        assert metrics["recall@100"] == 1.0 if mode != "bm25" else metrics["recall@100"] > 0.5
    from genloom.db.engine import session_scope

    with session_scope() as s:
        run = s.execute(sa.text("SELECT kind, status FROM runs WHERE id = :i"), {"i": report["run_id"]}).one()
        names = set(s.scalars(sa.text("SELECT name FROM metrics WHERE run_id = :i"), {"i": report["run_id"]}))
    assert tuple(run) == ("evaluate", "succeeded")
    assert {"bm25/ndcg@10", "vector/recall@100", "hybrid/mrr@10"} <= names
    again = cli("eval", "retrieval", "--beir", beir, "--modes", "bm25", "--json").json()
    assert again["ingest"]["written"] == 0 and again["ingest"]["unchanged"] == len(subset)
    bad = cli("eval", "retrieval", "--beir", tmp_path / "missing")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: BEIR folder not found")
