-- v_documents_never_cited: current document versions no answer has cited
SELECT d.id AS document_id, col.name AS collection, d.external_id, d.version AS document_version,
       d.title, d.uri, d.created_at,
       (SELECT count(*) FROM chunks ch WHERE ch.document_id = d.id) AS chunks
FROM documents d
JOIN collections col ON col.id = d.collection_id
WHERE d.superseded_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM chunks ch JOIN generation_sources s ON s.chunk_id = ch.id
      WHERE ch.document_id = d.id)
