-- v_feedback_sources: the same, one row per (feedback, cited chunk)
--
-- The same join flattened to one row per (feedback, cited source): GROUP BY a chunk or a
-- document to find what the badly rated answers were grounded on. Sources the answer did not
-- cite (generation_sources.cited false) get no row: feedback is credited to what was cited.
-- Each join matches the tenant too: on a Citus cluster the join is then co-located on each shard
-- instead of repartitioned (whose EXPLAIN ANALYZE, run by `genloom analytics summary`, exhausted
-- the coordinator's memory); under the tenant policy the same rows on one node.
SELECT fb.id AS feedback_id, fb.score, fb.thumbs, fb.label,
       g.id AS generation_id, g.model_name, g.status,
       s.rank, s.chunk_id, s.score AS fused_score, s.bm25_rank, s.bm25_score, s.vector_rank, s.vector_score,
       d.id AS document_id, col.name AS collection, d.external_id, d.version AS document_version, d.title,
       d.superseded_at IS NOT NULL AS superseded, left(ch.text, 200) AS text_preview
FROM feedback fb
JOIN generations g ON g.id = fb.generation_id AND g.tenant = fb.tenant
JOIN generation_sources s ON s.generation_id = g.id AND s.tenant = g.tenant
JOIN chunks ch ON ch.id = s.chunk_id AND ch.tenant = s.tenant
JOIN documents d ON d.id = ch.document_id AND d.tenant = ch.tenant
JOIN collections col ON col.id = d.collection_id AND col.tenant = d.tenant
WHERE s.cited IS NOT FALSE
