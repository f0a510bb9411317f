-- v_run_final_metrics: per run and metric: the final value (the step-NULL row, else the last step)
--
-- A run's final value of a metric: its step-NULL row when it logged one, else the
-- value at its last step.
SELECT DISTINCT ON (mt.run_id, mt.name)
       mt.run_id, r.kind, r.status, r.name AS run_name,
       mt.name AS metric, mt.value, mt.step,
       r.model_id, m.name || '@' || m.version AS model_ref, m.architecture,
       r.input_version_id, ds.name AS dataset, ds.name || '@' || dv.version AS dataset_ref,
       r.started_at, r.finished_at
FROM metrics mt
JOIN runs r ON r.id = mt.run_id
LEFT JOIN models m ON m.id = r.model_id
LEFT JOIN dataset_versions dv ON dv.id = r.input_version_id
LEFT JOIN datasets ds ON ds.id = dv.dataset_id
WHERE mt.item_id IS NULL
ORDER BY mt.run_id, mt.name, (mt.step IS NULL) DESC, mt.step DESC, mt.id DESC
