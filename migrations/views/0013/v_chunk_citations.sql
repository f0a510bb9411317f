-- v_chunk_citations: per cited chunk: citations (answers citing it), mean rank, mean feedback of the
--   answers citing it
WITH fb AS (
    SELECT generation_id, sum(score) AS score_sum, count(score) AS scores,
           count(thumbs) FILTER (WHERE thumbs = 1) AS up, count(thumbs) AS thumbs
    FROM feedback GROUP BY generation_id
), c AS (
    -- A chunk is at most one source slot of an answer (retrieval returns distinct
    -- chunks), so a citation is an answer citing it: no count(DISTINCT) over the log.
    SELECT s.chunk_id,
           count(*) AS citations,
           avg(s.rank)::float8 AS mean_rank,
           sum(fb.score_sum) AS score_sum, sum(fb.scores) AS scores,
           sum(fb.up) AS up, sum(fb.thumbs) AS thumbs
    FROM generation_sources s LEFT JOIN fb ON fb.generation_id = s.generation_id
    GROUP BY s.chunk_id
)
SELECT c.chunk_id, ch.document_id, col.name AS collection, d.external_id, d.version AS document_version,
       d.title, ch.ordinal, d.superseded_at IS NULL AS is_current,
       c.citations, c.mean_rank,
       c.score_sum::float8 / nullif(c.scores, 0) AS mean_feedback_score,
       c.scores AS feedback_scores,
       c.up::float8 / nullif(c.thumbs, 0) AS thumbs_up_share,
       left(ch.text, 200) AS text_preview
FROM c
JOIN chunks ch ON ch.id = c.chunk_id
JOIN documents d ON d.id = ch.document_id
JOIN collections col ON col.id = d.collection_id
