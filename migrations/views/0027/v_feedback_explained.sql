-- v_feedback_explained: why was this answer bad: feedback → generation → prompt → session → sources →
--   model → training run → training dataset version, one row per feedback
--
-- "Why was this answer bad?": one row per feedback, everything behind it.
SELECT fb.id AS feedback_id, fb.created_at AS feedback_at, fb.score, fb.thumbs, fb.label, fb.comment,
       fb.user_id AS feedback_user,
       g.id AS generation_id, g.status, g.error, g.output AS answer,
       g.model_name, g.model_revision, g.params AS generation_params,
       g.retrieval_ms, g.generation_ms, g.total_ms, g.input_tokens, g.output_tokens,
       g.created_at AS generated_at,
       p.id AS prompt_id, p.text AS question, p.parent_id AS previous_prompt_id,
       p.template_name, p.template_version,
       ses.id AS session_id, ses.user_id AS session_user, col.name AS collection,
       (SELECT count(*) FROM prompts pp WHERE pp.session_id = ses.id AND pp.created_at <= p.created_at) AS turn,
       (SELECT jsonb_agg(jsonb_build_object(
                   'rank', s.rank, 'cited', s.cited, 'chunk_id', s.chunk_id, 'document_id', d.id,
                   'doc_id', d.external_id, 'document_version', d.version, 'title', d.title,
                   'superseded', d.superseded_at IS NOT NULL,
                   'score', s.score, 'bm25_rank', s.bm25_rank, 'vector_rank', s.vector_rank)
                   ORDER BY s.rank)
          FROM generation_sources s
          JOIN chunks ch ON ch.id = s.chunk_id
          JOIN documents d ON d.id = ch.document_id
         WHERE s.generation_id = g.id) AS sources,
       g.model_id,
       m.name || '@' || m.version AS model_ref,
       m.architecture AS model_architecture,
       m.run_id AS training_run_id,
       tr.status AS training_run_status,
       dv.id AS training_dataset_version_id,
       ds.name || '@' || dv.version AS training_dataset
FROM feedback fb
JOIN generations g ON g.id = fb.generation_id
JOIN prompts p ON p.id = g.prompt_id
JOIN sessions ses ON ses.id = p.session_id
LEFT JOIN collections col ON col.id = ses.collection_id
LEFT JOIN models m ON m.id = g.model_id
LEFT JOIN runs tr ON tr.id = m.run_id
LEFT JOIN dataset_versions dv ON dv.id = coalesce(m.input_version_id, tr.input_version_id)
LEFT JOIN datasets ds ON ds.id = dv.dataset_id
