-- v_document_citations: per cited document version: citations, answers citing it, how often it was
--   retrieved, mean feedback of the answers citing it
--
-- One (generation, document) pair per answer, so an answer citing three chunks of
-- one document counts its feedback once for that document. Only cited sources count
-- (generation_sources.cited: the answer's [n] markers name them; NULL, for sealed answers
-- logged before migration 0017, counts as cited): a document that was retrieved into the
-- prompt but not cited gets neither the citation nor the answer's feedback. `retrievals`
-- counts every time it was a source, cited or not.
WITH fb AS (
    SELECT generation_id, sum(score) AS score_sum, count(score) AS scores,
           count(thumbs) FILTER (WHERE thumbs = 1) AS up, count(thumbs) AS thumbs
    FROM feedback GROUP BY generation_id
), pairs AS (
    -- DISTINCT ON walks the sources in primary-key (generation) order and only sorts
    -- within each answer, instead of hashing 3M (generation, document) groups.
    SELECT DISTINCT ON (s.generation_id, ch.document_id) s.generation_id, ch.document_id, s.rank AS best_rank
    FROM generation_sources s JOIN chunks ch ON ch.id = s.chunk_id
    WHERE s.cited IS NOT FALSE
    ORDER BY s.generation_id, ch.document_id, s.rank
), cites AS (
    SELECT ch.document_id, sum(x.cited) AS citations, sum(x.retrieved) AS retrievals
    FROM (SELECT chunk_id, count(*) FILTER (WHERE cited IS NOT FALSE) AS cited, count(*) AS retrieved
          FROM generation_sources GROUP BY chunk_id) x
    JOIN chunks ch ON ch.id = x.chunk_id
    GROUP BY ch.document_id
), d AS (
    SELECT p.document_id,
           count(*) AS answers,
           avg(p.best_rank)::float8 AS mean_best_rank,
           sum(fb.score_sum) AS score_sum, sum(fb.scores) AS scores,
           sum(fb.up) AS up, sum(fb.thumbs) AS thumbs
    FROM pairs p LEFT JOIN fb ON fb.generation_id = p.generation_id
    GROUP BY p.document_id
)
SELECT d.document_id, col.name AS collection, doc.external_id, doc.version AS document_version,
       doc.title, doc.uri, doc.superseded_at IS NULL AS is_current,
       cites.citations, d.answers, d.mean_best_rank,
       d.score_sum::float8 / nullif(d.scores, 0) AS mean_feedback_score,
       d.scores AS feedback_scores,
       d.up::float8 / nullif(d.thumbs, 0) AS thumbs_up_share,
       cites.retrievals
FROM d
JOIN cites ON cites.document_id = d.document_id
JOIN documents doc ON doc.id = d.document_id
JOIN collections col ON col.id = doc.collection_id
