-- v_dataset_lineage: everything upstream of a dataset version (recursive): parents, and the training
--   versions of models whose samples it holds
--
-- Upstream of a version: its parent chain, and for synthetic items the models that
-- made them and the versions those models were trained on, recursively. depth 0 is
-- the version itself; `path` guards against cycles.
-- The tables are read in plain CTEs first and the recursive walk is nested in one of them:
-- Citus refuses a recursive CTE in a query over distributed tables ("recursive CTEs are only
-- supported when they contain a filter on the distribution column"), but plans each CTE on
-- its own, so on a cluster the walk runs on the coordinator over the tenant's rows read from
-- the shards. The samples' join matches the tenant too (co-located on a cluster; under the
-- tenant policy the same rows on one node).
WITH versions AS (
    SELECT id, dataset_id, version, parent_id, created_by_run_id FROM dataset_versions
), names AS (
    SELECT id, name FROM datasets
), registry AS (
    SELECT id, name, version, run_id FROM models
), run_kinds AS (
    SELECT id, kind FROM runs
), sampled AS (
    SELECT DISTINCT dm.version_id AS child_id, coalesce(m.input_version_id, tr.input_version_id) AS upstream_id,
           m.id AS via_model_id, i.run_id AS via_run_id
    FROM dataset_members dm
    JOIN items i ON i.id = dm.item_id AND i.tenant = dm.tenant AND i.origin = 'synthetic'
    JOIN models m ON m.id = i.model_id AND m.tenant = i.tenant
    LEFT JOIN runs tr ON tr.id = m.run_id AND tr.tenant = m.tenant
    WHERE coalesce(m.input_version_id, tr.input_version_id) IS NOT NULL
), walked AS (
    WITH RECURSIVE edges AS (
        SELECT dv.id AS child_id, dv.parent_id AS upstream_id, 'parent'::text AS relation,
               NULL::bigint AS via_model_id, dv.created_by_run_id AS via_run_id
        FROM versions dv WHERE dv.parent_id IS NOT NULL
        UNION
        SELECT s.child_id, s.upstream_id, 'sampled_from_model_trained_on', s.via_model_id, s.via_run_id
        FROM sampled s
    ), walk AS (
        SELECT dv.id AS version_id, dv.id AS ancestor_id, 0 AS depth, 'self'::text AS relation,
               NULL::bigint AS via_model_id, dv.created_by_run_id AS via_run_id, ARRAY[dv.id] AS path
        FROM versions dv
        UNION ALL
        SELECT w.version_id, e.upstream_id, w.depth + 1, e.relation, e.via_model_id, e.via_run_id,
               w.path || e.upstream_id
        FROM walk w JOIN edges e ON e.child_id = w.ancestor_id
        WHERE e.upstream_id <> ALL (w.path) AND w.depth < 32
    )
    SELECT * FROM walk
)
SELECT w.version_id, ds.name || '@' || dv.version AS ref,
       w.depth, w.relation,
       w.ancestor_id AS ancestor_version_id, ads.name || '@' || adv.version AS ancestor,
       w.via_model_id, m.name || '@' || m.version AS via_model,
       m.run_id AS via_model_training_run_id,
       w.via_run_id, vr.kind AS via_run_kind,
       adv.created_by_run_id AS ancestor_created_by_run_id, ar.kind AS ancestor_created_by_run_kind,
       w.path
FROM walked w
JOIN versions dv ON dv.id = w.version_id
JOIN names ds ON ds.id = dv.dataset_id
JOIN versions adv ON adv.id = w.ancestor_id
JOIN names ads ON ads.id = adv.dataset_id
LEFT JOIN registry m ON m.id = w.via_model_id
LEFT JOIN run_kinds vr ON vr.id = w.via_run_id
LEFT JOIN run_kinds ar ON ar.id = adv.created_by_run_id
