-- v_dataset_lineage: everything upstream of a dataset version (recursive): parents, and the training
--   versions of models whose samples it holds
--
-- Upstream of a version: its parent chain, and for synthetic items the models that
-- made them and the versions those models were trained on, recursively. depth 0 is
-- the version itself; `path` guards against cycles.
WITH RECURSIVE edges AS (
    SELECT dv.id AS child_id, dv.parent_id AS upstream_id, 'parent'::text AS relation,
           NULL::bigint AS via_model_id, dv.created_by_run_id AS via_run_id
    FROM dataset_versions dv WHERE dv.parent_id IS NOT NULL
    UNION
    SELECT DISTINCT dm.version_id, coalesce(m.input_version_id, tr.input_version_id),
           'sampled_from_model_trained_on', m.id, i.run_id
    FROM dataset_members dm
    JOIN items i ON i.id = dm.item_id AND i.origin = 'synthetic'
    JOIN models m ON m.id = i.model_id
    LEFT JOIN runs tr ON tr.id = m.run_id
    WHERE coalesce(m.input_version_id, tr.input_version_id) IS NOT NULL
), walk AS (
    SELECT dv.id AS version_id, dv.id AS ancestor_id, 0 AS depth, 'self'::text AS relation,
           NULL::bigint AS via_model_id, dv.created_by_run_id AS via_run_id, ARRAY[dv.id] AS path
    FROM dataset_versions dv
    UNION ALL
    SELECT w.version_id, e.upstream_id, w.depth + 1, e.relation, e.via_model_id, e.via_run_id,
           w.path || e.upstream_id
    FROM walk w JOIN edges e ON e.child_id = w.ancestor_id
    WHERE e.upstream_id <> ALL (w.path) AND w.depth < 32
)
SELECT w.version_id, ds.name || '@' || dv.version AS ref,
       w.depth, w.relation,
       w.ancestor_id AS ancestor_version_id, ads.name || '@' || adv.version AS ancestor,
       w.via_model_id, m.name || '@' || m.version AS via_model,
       m.run_id AS via_model_training_run_id,
       w.via_run_id, vr.kind AS via_run_kind,
       adv.created_by_run_id AS ancestor_created_by_run_id, ar.kind AS ancestor_created_by_run_kind,
       w.path
FROM walk w
JOIN dataset_versions dv ON dv.id = w.version_id
JOIN datasets ds ON ds.id = dv.dataset_id
JOIN dataset_versions adv ON adv.id = w.ancestor_id
JOIN datasets ads ON ads.id = adv.dataset_id
LEFT JOIN models m ON m.id = w.via_model_id
LEFT JOIN runs vr ON vr.id = w.via_run_id
LEFT JOIN runs ar ON ar.id = adv.created_by_run_id
