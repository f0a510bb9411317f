-- v_dataset_items: per dataset version and member item: its split and effective label (the
--   membership's label when the version relabels the item, else the item's own), origin, modality,
--   content hash
--
-- The one definition of an item's label in a version: NULLIF(COALESCE(m.label, i.label), '')
-- (migration 0009); genloom's readers use the same expression (datasets/items.py).
SELECT d.name AS dataset, v.version, m.version_id, m.item_id, m.split,
       NULLIF(COALESCE(m.label, i.label), '') AS label, i.origin, i.modality, i.sha256, i.run_id, i.model_id
FROM dataset_members m
JOIN items i ON i.id = m.item_id
JOIN dataset_versions v ON v.id = m.version_id
JOIN datasets d ON d.id = v.dataset_id
