-- v_chunk_citations: per retrieved chunk: how often answers cited it and how often it was only
--   retrieved, mean rank when cited, mean feedback of the answers citing it
WITH fb AS (
    SELECT generation_id, sum(score) AS score_sum, count(score) AS scores,
           count(thumbs) FILTER (WHERE thumbs = 1) AS up, count(thumbs) AS thumbs
    FROM feedback GROUP BY generation_id
), c AS (
    -- A chunk is at most one source slot of an answer (retrieval returns distinct
    -- chunks), so a citation is an answer citing it: no count(DISTINCT) over the log.
    -- Cited = the answer's [n] markers name it (generation_sources.cited, migration 0017);
    -- NULL (sealed answers logged before 0017, unreadable to SQL) counts as cited, as it did.
    -- Feedback is credited only where the chunk was cited: a source the answer never used
    -- earns none of its score.
    SELECT s.chunk_id,
           count(*) FILTER (WHERE s.cited IS NOT FALSE) AS citations,
           (avg(s.rank) FILTER (WHERE s.cited IS NOT FALSE))::float8 AS mean_rank,
           sum(fb.score_sum) FILTER (WHERE s.cited IS NOT FALSE) AS score_sum,
           sum(fb.scores) FILTER (WHERE s.cited IS NOT FALSE) AS scores,
           sum(fb.up) FILTER (WHERE s.cited IS NOT FALSE) AS up,
           sum(fb.thumbs) FILTER (WHERE s.cited IS NOT FALSE) AS thumbs,
           count(*) AS retrievals
    FROM generation_sources s LEFT JOIN fb ON fb.generation_id = s.generation_id
    GROUP BY s.chunk_id
)
SELECT c.chunk_id, ch.document_id, col.name AS collection, d.external_id, d.version AS document_version,
       d.title, ch.ordinal, d.superseded_at IS NULL AS is_current,
       c.citations, c.mean_rank,
       c.score_sum::float8 / nullif(c.scores, 0) AS mean_feedback_score,
       c.scores AS feedback_scores,
       c.up::float8 / nullif(c.thumbs, 0) AS thumbs_up_share,
       left(ch.text, 200) AS text_preview,
       c.retrievals
FROM c
JOIN chunks ch ON ch.id = c.chunk_id
JOIN documents d ON d.id = ch.document_id
JOIN collections col ON col.id = d.collection_id
