-- v_dataset_versions: per dataset version: real/synthetic/augmented counts, splits, parent, creating
--   run, models that sampled into it
WITH counts AS (
    SELECT dm.version_id,
           count(*) AS items,
           count(*) FILTER (WHERE i.origin = 'real') AS real,
           count(*) FILTER (WHERE i.origin = 'synthetic') AS synthetic,
           count(*) FILTER (WHERE i.origin = 'augmented') AS augmented,
           count(*) FILTER (WHERE dm.split = 'train') AS train,
           count(*) FILTER (WHERE dm.split = 'val') AS val,
           count(*) FILTER (WHERE dm.split = 'test') AS test
    FROM dataset_members dm JOIN items i ON i.id = dm.item_id
    GROUP BY dm.version_id
), samplers AS (
    SELECT dm.version_id, array_agg(DISTINCT m.name || '@' || m.version) AS models_sampled_in
    FROM dataset_members dm
    JOIN items i ON i.id = dm.item_id AND i.origin = 'synthetic'
    JOIN models m ON m.id = i.model_id
    GROUP BY dm.version_id
)
SELECT dv.id AS version_id, ds.name AS dataset, dv.version, ds.name || '@' || dv.version AS ref,
       ds.modality, dv.sealed,
       pds.name || '@' || pv.version AS parent,
       dv.created_by_run_id, r.kind AS created_by_run_kind,
       coalesce(c.items, 0) AS items,
       coalesce(c.real, 0) AS real,
       coalesce(c.synthetic, 0) AS synthetic,
       coalesce(c.augmented, 0) AS augmented,
       c.synthetic::float8 / nullif(c.items, 0) AS synthetic_share,
       coalesce(c.train, 0) AS train, coalesce(c.val, 0) AS val, coalesce(c.test, 0) AS test,
       coalesce(sm.models_sampled_in, '{}') AS models_sampled_in,
       dv.created_at
FROM dataset_versions dv
JOIN datasets ds ON ds.id = dv.dataset_id
LEFT JOIN dataset_versions pv ON pv.id = dv.parent_id
LEFT JOIN datasets pds ON pds.id = pv.dataset_id
LEFT JOIN runs r ON r.id = dv.created_by_run_id
LEFT JOIN counts c ON c.version_id = dv.id
LEFT JOIN samplers sm ON sm.version_id = dv.id
