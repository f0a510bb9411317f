-- v_audit_log: who did what, when, with what outcome: API key changes, refused requests, model
--   registrations, dataset seals, retention, `genloom sql` statements (by hash), data-key rotation
--
-- audit_log is append-only (a trigger refuses UPDATE, DELETE and TRUNCATE; migration 0013); the
-- view adds the acting key's public prefix. It runs with the caller's rights, so a tenant sees
-- only its own rows.
-- The keys are joined as their own subquery (OFFSET 0), not on the tenant: a refused request
-- is logged under the tenant of the request, which need not be the key's. On a Citus cluster
-- (both tables distributed by tenant) an outer join on the key id alone is refused ("complex
-- joins …"); as a subquery Citus reads the keys first and joins them to each shard.
SELECT a.id, a.at, a.tenant, a.key_id, k.prefix AS key_prefix, a.os_user, a.role, a.action, a.object,
       a.outcome, a.detail
FROM audit_log a LEFT JOIN (SELECT id, prefix FROM api_keys OFFSET 0) k ON k.id = a.key_id
