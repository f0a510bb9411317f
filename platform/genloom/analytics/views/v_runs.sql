-- v_runs: per run: kind, status, model, input/output dataset versions, duration, final metrics as JSON
--
-- Every join also matches the tenant, and the per-run aggregates are joined as grouped
-- subqueries rather than correlated ones: on a Citus cluster (every table distributed by
-- tenant) outer joins and correlated subqueries must meet on the distribution column ("complex
-- joins are only supported when all distributed tables are co-located …"); under the tenant
-- policy a caller's rows all share one tenant, so on one node the result is the same.
SELECT r.id AS run_id, r.kind, r.status, r.name, r.device,
       m.name || '@' || m.version AS model_ref,
       ids.name || '@' || iv.version AS input_dataset,
       ods.name || '@' || ov.version AS output_dataset,
       r.started_at, r.finished_at,
       extract(epoch FROM r.finished_at - r.started_at)::float8 AS duration_s,
       coalesce(fm.final_metrics, '{}'::jsonb) AS final_metrics,
       ls.last_step,
       r.code_version, r.error
FROM runs r
LEFT JOIN models m ON m.id = r.model_id AND m.tenant = r.tenant
LEFT JOIN dataset_versions iv ON iv.id = r.input_version_id AND iv.tenant = r.tenant
LEFT JOIN datasets ids ON ids.id = iv.dataset_id AND ids.tenant = iv.tenant
LEFT JOIN dataset_versions ov ON ov.id = r.output_version_id AND ov.tenant = r.tenant
LEFT JOIN datasets ods ON ods.id = ov.dataset_id AND ods.tenant = ov.tenant
LEFT JOIN (SELECT run_id, jsonb_object_agg(metric, value) AS final_metrics
           FROM v_run_final_metrics GROUP BY run_id) fm ON fm.run_id = r.id
LEFT JOIN (SELECT tenant, run_id, max(step) AS last_step
           FROM metrics GROUP BY tenant, run_id) ls ON ls.run_id = r.id AND ls.tenant = r.tenant
