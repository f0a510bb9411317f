-- v_documents_never_cited: current document versions no answer has cited (retrievals: how often
--   one was retrieved into a prompt all the same)
--
-- Cited = named by an answer's [n] markers (generation_sources.cited; NULL, for sealed answers
-- logged before migration 0017, counts as cited).
SELECT d.id AS document_id, col.name AS collection, d.external_id, d.version AS document_version,
       d.title, d.uri, d.created_at,
       (SELECT count(*) FROM chunks ch WHERE ch.document_id = d.id) AS chunks,
       (SELECT count(*) FROM chunks ch JOIN generation_sources s ON s.chunk_id = ch.id
         WHERE ch.document_id = d.id) AS retrievals
FROM documents d
JOIN collections col ON col.id = d.collection_id
WHERE d.superseded_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM chunks ch JOIN generation_sources s ON s.chunk_id = ch.id
      WHERE ch.document_id = d.id AND s.cited IS NOT FALSE)
