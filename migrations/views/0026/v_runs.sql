-- v_runs: per run: kind, status, model, input/output dataset versions, duration, final metrics as JSON
SELECT r.id AS run_id, r.kind, r.status, r.name, r.device,
       m.name || '@' || m.version AS model_ref,
       ids.name || '@' || iv.version AS input_dataset,
       ods.name || '@' || ov.version AS output_dataset,
       r.started_at, r.finished_at,
       extract(epoch FROM r.finished_at - r.started_at)::float8 AS duration_s,
       coalesce((SELECT jsonb_object_agg(fm.metric, fm.value)
                   FROM v_run_final_metrics fm WHERE fm.run_id = r.id), '{}'::jsonb) AS final_metrics,
       (SELECT max(mt.step) FROM metrics mt WHERE mt.run_id = r.id) AS last_step,
       r.code_version, r.error
FROM runs r
LEFT JOIN models m ON m.id = r.model_id
LEFT JOIN dataset_versions iv ON iv.id = r.input_version_id
LEFT JOIN datasets ids ON ids.id = iv.dataset_id
LEFT JOIN dataset_versions ov ON ov.id = r.output_version_id
LEFT JOIN datasets ods ON ods.id = ov.dataset_id
