"""The search statement: BM25 and vector branches, fusion, filters, in one SQL string.

Both branches and the fusion run inside Postgres, so a hybrid search is one round trip
and the database returns only the k rows the caller sees.

Named parameters (bound by psycopg):
  :query, :ts_config            the query text and the collection's text-search config
  :query_embedding              the query vector in pgvector text form (NULL when unused)
  :collection_id, :where        collection, and a SQL/JSON path predicate on document metadata
                                (`genloom.retrieval.filters.to_jsonpath`)
  :k1, :b, :query_tf            BM25 parameters; query_tf weights a lexeme by its count in the query
  :bm25_depth, :vector_depth    how many candidates each branch passes to the fusion (0 = branch off)
  :mode                         'hybrid' | 'bm25' | 'vector'  (single modes score by their own branch)
  :fusion, :rrf_k, :bm25_weight 'rrf' (1/(rrf_k + rank) summed) or 'weighted' (min-max normalised
                                scores, bm25_weight * bm25 + (1 - bm25_weight) * vector)
  :by_document, :k              one row per document (its best chunk), and how many rows
  :distinct_text                one row per chunk text (case, spacing and punctuation ignored): the
                                same passage in two files (a package and its -whl twin, or a copy
                                re-wrapped or re-punctuated) fills one slot, not two

Five slots are filled in Python before binding, each from a fixed set of strings or an int:
  {dim}, {model_id}     literals, so the planner matches the per-model partial HNSW index
  {current}             'current' (current document versions only) or 'current IS NOT NULL' (all)
  {bm25_filter_join}, {vector_filter_join}
                        '' or a join to documents for the metadata filter
"""

from __future__ import annotations

# The fusion defaults, chosen on four development collections (SciFact, SQuAD-as-retrieval and
# their verbose variants; bench/retrieval_quality.py, docs/retrieval.md): min-max normalised
# scores mixed half and half beat both branches on every one, where RRF k = 60 fell below BM25
# on SQuAD. Here (not in search.py) so the CLI can show them without importing the database layer.
DEFAULT_FUSION = "weighted"
DEFAULT_BM25_WEIGHT = 0.5
DEFAULT_RRF_K = 60

HYBRID_SQL = """
WITH
-- BM25 (Okapi): idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)),
--   tf part = tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen)),
-- summed over the query's lexemes weighted by their count in the query, qtf (OR semantics).
-- Lucene/Anserini (one clause per query token) and bm25s (one addend per token) do the same;
-- on verbose queries the words a person repeats are the ones that matter. N, avglen, df are
-- over current chunks. :query_tf = false counts each lexeme once (genloom before issue 19).
query_terms AS (
    SELECT lexeme AS term,
           CASE WHEN :query_tf THEN coalesce(array_length(positions, 1), 1) ELSE 1 END AS qtf
    FROM unnest(to_tsvector(CAST(:ts_config AS regconfig), :query))
),
stats AS (
    SELECT n_chunks::float8 AS n, total_length::float8 / greatest(n_chunks, 1) AS avglen
    FROM retrieval_collection_stats
    WHERE collection_id = :collection_id{t_stats}
),
term_weight AS (
    SELECT ts.term, q.qtf * ln(1 + (s.n - ts.df + 0.5) / (ts.df::float8 + 0.5)) AS weight
    FROM query_terms q
    JOIN retrieval_term_stats ts ON ts.collection_id = :collection_id AND ts.term = q.term AND ts.df > 0{t_ts}
    CROSS JOIN stats s
),
bm25 AS (
    SELECT chunk_id, score, row_number() OVER (ORDER BY score DESC, chunk_id) AS rank
    FROM (
        SELECT p.chunk_id,
               sum(i.weight * p.tf * (:k1 + 1)
                   / (p.tf + :k1 * (1 - :b + :b * p.chunk_length / s.avglen))) AS score
        FROM term_weight i
        JOIN retrieval_postings p
          ON p.collection_id = :collection_id AND p.term = i.term AND p.{current}{t_p}
        CROSS JOIN stats s
        {bm25_filter_join}
        GROUP BY p.chunk_id
        ORDER BY score DESC, p.chunk_id
        LIMIT :bm25_depth
    ) scored
),
-- Vector: cosine similarity through the model's HNSW index. With a filter, pgvector 0.8's
-- iterative scan (set for this transaction) keeps walking the graph until the rows that
-- pass the filter fill the branch, so a selective filter still yields k rows.
vec AS (
    SELECT chunk_id, 1 - distance AS score, row_number() OVER (ORDER BY distance, chunk_id) AS rank
    FROM (
        SELECT e.chunk_id,
               (e.embedding::vector({dim})) <=> CAST(:query_embedding AS vector({dim})) AS distance
        FROM embeddings e
        JOIN retrieval_chunks rc ON rc.chunk_id = e.chunk_id{t_rc}
        {vector_filter_join}
        WHERE e.embedding_model_id = {model_id}
          AND rc.collection_id = :collection_id AND rc.{current}{t_e}
        ORDER BY distance
        LIMIT :vector_depth
    ) nearest
),
-- Fusion over the union of both branches; a chunk missing from a branch gets nothing from it.
fused AS (
    SELECT coalesce(b.chunk_id, v.chunk_id) AS chunk_id,
           b.rank AS bm25_rank, b.score AS bm25_score,
           v.rank AS vector_rank, v.score AS vector_score,
           CASE
             WHEN :mode = 'bm25' THEN b.score
             WHEN :mode = 'vector' THEN v.score
             WHEN :fusion = 'rrf' THEN
                 coalesce(1.0 / (:rrf_k + b.rank), 0) + coalesce(1.0 / (:rrf_k + v.rank), 0)
             ELSE
                 :bm25_weight * coalesce(
                     (b.score - min(b.score) OVER ()) / nullif(max(b.score) OVER () - min(b.score) OVER (), 0),
                     CASE WHEN b.chunk_id IS NULL THEN 0 ELSE 1 END)
               + (1 - :bm25_weight) * coalesce(
                     (v.score - min(v.score) OVER ()) / nullif(max(v.score) OVER () - min(v.score) OVER (), 0),
                     CASE WHEN v.chunk_id IS NULL THEN 0 ELSE 1 END)
           END AS score
    FROM bm25 b
    FULL OUTER JOIN vec v ON v.chunk_id = b.chunk_id
),
hits AS (
    SELECT f.*, c.document_id, c.text, c.metadata AS chunk_metadata,
           d.external_id, d.title, d.version, d.metadata AS document_metadata,
           row_number() OVER (PARTITION BY c.document_id ORDER BY f.score DESC, f.chunk_id) AS rank_in_document,
           row_number() OVER (PARTITION BY md5(btrim(regexp_replace(lower(c.text), '[^[:alnum:]]+', ' ', 'g')))
                              ORDER BY f.score DESC, f.chunk_id) AS rank_of_text
    FROM fused f
    JOIN chunks c ON c.id = f.chunk_id{t_c}
    JOIN documents d ON d.id = c.document_id{t_d}
)
SELECT chunk_id, document_id, external_id, title, text, score,
       bm25_rank, bm25_score, vector_rank, vector_score, version, document_metadata, chunk_metadata
FROM hits
WHERE (NOT :by_document OR rank_in_document = 1) AND (NOT :distinct_text OR rank_of_text = 1)
ORDER BY score DESC, chunk_id
LIMIT :k
"""

# The metadata filter (a jsonpath predicate, see retrieval/filters.py); only joined in when there is one,
# so an unfiltered BM25 branch stays an index-only scan over the postings.
BM25_FILTER_JOIN = """JOIN retrieval_chunks frc ON frc.chunk_id = p.chunk_id{t_frc}
        JOIN documents fd ON fd.id = frc.document_id AND fd.metadata @@ CAST(:where AS jsonpath){t_fd}"""
VECTOR_FILTER_JOIN = """JOIN documents fd ON fd.id = rc.document_id AND fd.metadata @@ CAST(:where AS jsonpath){t_fd}"""
# On a Citus cluster every table is distributed by tenant (genloom.db.distribute): each one the
# statement reads is also filtered on `tenant = :tenant`, so the whole search is a router query,
# one worker, one shard (the row-level policy filters the same rows, but Citus cannot route on it).
TENANT_SLOTS = {"t_stats": "", "t_ts": "ts.", "t_p": "p.", "t_rc": "rc.", "t_e": "e.", "t_c": "c.", "t_d": "d.",
                "t_frc": "frc.", "t_fd": "fd."}  # fmt: skip


def render_sql(
    *, dim: int | None, model_id: int | None, current_only: bool, filtered: bool, by_tenant: bool = False
) -> str:
    """Fill the non-parameter slots; every value is an int or one of a few fixed strings.

    `by_tenant` (a Citus cluster): every table is also filtered on `tenant = :tenant`.
    """
    tenant = {slot: f" AND {alias}tenant = :tenant" if by_tenant else "" for slot, alias in TENANT_SLOTS.items()}
    return HYBRID_SQL.format(
        dim=int(dim or 1),
        model_id=int(model_id or 0),
        current="current" if current_only else "current IS NOT NULL",
        bm25_filter_join=(BM25_FILTER_JOIN if filtered else "").format(**tenant),
        vector_filter_join=(VECTOR_FILTER_JOIN if filtered else "").format(**tenant),
        **tenant,
    )
