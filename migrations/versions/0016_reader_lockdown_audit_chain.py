"""reader lockdown, audit chain: genloom_reader loses PL/pgSQL, temporary objects and the
statistics views; audit_log's guards fire always and its rows form a hash chain

1. The reader (`genloom sql`) could leave its tenant without set_config: a `DO` block's
   PL/pgSQL `SET LOCAL genloom.tenant = …` needs no right on any function. USAGE on the
   language plpgsql is revoked from PUBLIC (granted back to genloom_app and the migrating
   user; trigger functions need no USAGE to run). Functions are the other way to carry a
   `SET` clause into a query: the reader may create none (no CREATE on schema public, no
   TEMPORARY on the database, so no pg_temp function either).
2. All tenants' `genloom sql` sessions share one login, so `pg_stat_activity` showed each
   other's query text and `pg_stat_user_tables` all tenants' row counts. SELECT on the
   statistics views (pg_stat*, pg_statio*) and EXECUTE on the functions behind them
   (pg_stat_get_*) and on the relation-size functions are revoked from PUBLIC, granted back to
   genloom_app, the migrating user and pg_monitor. `pg_stats` is left: Postgres already hides
   the statistics of a table whose row-level security applies to the caller.

3. audit_log's append-only triggers were ordinary ones, which `SET session_replication_role =
   replica` switches off without DDL: they, and the new chain trigger, are ENABLE ALWAYS.
4. A hash chain per tenant: each row gets `chain_seq` (1, 2, … within its tenant), `prev_hash`
   (the previous row's `hash`; 32 zero bytes for the first) and `hash = sha256(prev_hash ‖ the
   row as a JSON array)` (`audit_log_row_hash`), set by a BEFORE INSERT trigger that serialises
   a tenant's inserts with a transaction-level advisory lock. A row deleted or changed, even by
   a superuser who disabled the triggers, breaks the chain (`genloom audit verify`). Existing
   rows are chained in id order.

Like 0013, steps that need a superuser are skipped with a NOTICE on a managed server whose
migrating user is not one (docs/security.md says which statements to run there).

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

APP_ROLE = "genloom_app"
READER = "genloom_reader"

# The catalog objects whose rows describe every tenant at once.
STATS_VIEWS = r"c.relname ~ '^pg_stat(io)?_' AND c.relname !~ '^pg_stats'"
STATS_FUNCTIONS = r"p.proname ~ '^pg_stat_get_' OR p.proname IN ('pg_relation_size', 'pg_total_relation_size', 'pg_table_size', 'pg_indexes_size')"

READER_LOCKDOWN = f"""
DO $$
DECLARE
    obj text;
    grantees text := format('%I', current_user)
        || CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN ', {APP_ROLE}' ELSE '' END;
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %s', current_database(), grantees);
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN
        REVOKE CREATE ON SCHEMA public FROM {READER};
        EXECUTE format('REVOKE TEMPORARY, CREATE ON DATABASE %I FROM {READER}', current_database());
    END IF;
    BEGIN
        REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC;
        EXECUTE format('GRANT USAGE ON LANGUAGE plpgsql TO %s', grantees);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'genloom: plpgsql left usable by PUBLIC (needs a superuser); the reader can then leave its tenant with DO';
    END;
    BEGIN
        FOR obj IN SELECT c.oid::regclass::text FROM pg_class c
                   WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'v' AND {STATS_VIEWS}
        LOOP
            EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', obj);
            EXECUTE format('GRANT SELECT ON %s TO %s, pg_monitor', obj, grantees);
        END LOOP;
        FOR obj IN SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'pg_catalog'::regnamespace AND ({STATS_FUNCTIONS})
        LOOP
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', obj);
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s, pg_monitor', obj, grantees);
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'genloom: statistics views left readable by PUBLIC (needs a superuser)';
    END;
END $$;
"""

READER_LOCKDOWN_UNDO = f"""
DO $$
DECLARE obj text;
BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
    BEGIN
        GRANT USAGE ON LANGUAGE plpgsql TO PUBLIC;
        FOR obj IN SELECT c.oid::regclass::text FROM pg_class c
                   WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'v' AND {STATS_VIEWS}
        LOOP
            EXECUTE format('GRANT SELECT ON %s TO PUBLIC', obj);
        END LOOP;
        FOR obj IN SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'pg_catalog'::regnamespace AND ({STATS_FUNCTIONS})
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', obj);
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'genloom: reader lockdown left in place (needs a superuser)';
    END;
END $$;
"""


AUDIT_CHAIN = r"""
ALTER TABLE audit_log ADD COLUMN chain_seq bigint, ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

-- The row as hashed: a JSON array (jsonb's text form is canonical); `at` as epoch microseconds,
-- so the session's TimeZone does not change the hash.
CREATE FUNCTION audit_log_row_hash(prev bytea, seq bigint, id bigint, at timestamptz, tenant text,
                                   key_id bigint, os_user text, role text, action text, object text,
                                   outcome text, detail jsonb)
RETURNS bytea LANGUAGE sql STABLE AS $$
    SELECT sha256(prev || convert_to(jsonb_build_array(seq, id, (extract(epoch FROM at) * 1000000)::bigint,
                                                       tenant, key_id, os_user, role, action, object, outcome,
                                                       detail)::text, 'UTF8'))
$$;

CREATE FUNCTION audit_log_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE last record;
BEGIN
    -- One insert per tenant at a time, until commit: the next row must see this one's hash.
    PERFORM pg_advisory_xact_lock(hashtext('genloom.audit_log'), hashtext(NEW.tenant));
    SELECT chain_seq, hash INTO last FROM audit_log
        WHERE tenant = NEW.tenant ORDER BY chain_seq DESC LIMIT 1;
    NEW.chain_seq := coalesce(last.chain_seq, 0) + 1;
    NEW.prev_hash := coalesce(last.hash, decode(repeat('00', 32), 'hex'));
    NEW.hash := audit_log_row_hash(NEW.prev_hash, NEW.chain_seq, NEW.id, NEW.at, NEW.tenant, NEW.key_id,
                                   NEW.os_user, NEW.role, NEW.action, NEW.object, NEW.outcome, NEW.detail);
    RETURN NEW;
END $$;

-- Existing rows, chained in id order (the guards are off for this one rewrite).
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
DO $$
DECLARE r record; prev bytea; prev_tenant text; seq bigint;
BEGIN
    FOR r IN SELECT * FROM audit_log ORDER BY tenant, id LOOP
        IF prev_tenant IS DISTINCT FROM r.tenant THEN
            prev := decode(repeat('00', 32), 'hex');
            seq := 0;
            prev_tenant := r.tenant;
        END IF;
        seq := seq + 1;
        UPDATE audit_log SET chain_seq = seq, prev_hash = prev,
               hash = audit_log_row_hash(prev, seq, r.id, r.at, r.tenant, r.key_id, r.os_user, r.role,
                                         r.action, r.object, r.outcome, r.detail)
            WHERE id = r.id RETURNING hash INTO prev;
    END LOOP;
END $$;
ALTER TABLE audit_log ALTER COLUMN chain_seq SET NOT NULL, ALTER COLUMN prev_hash SET NOT NULL,
                      ALTER COLUMN hash SET NOT NULL;
CREATE UNIQUE INDEX uq_audit_log_tenant_chain_seq ON audit_log (tenant, chain_seq);

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_chain();
-- ALWAYS: session_replication_role = replica (no DDL needed) no longer switches them off.
ALTER TABLE audit_log ENABLE ALWAYS TRIGGER audit_log_chain;
ALTER TABLE audit_log ENABLE ALWAYS TRIGGER audit_log_no_update;
ALTER TABLE audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;
"""

AUDIT_CHAIN_UNDO = """
DROP TRIGGER audit_log_chain ON audit_log;
DROP FUNCTION audit_log_chain();
DROP FUNCTION audit_log_row_hash(bytea, bigint, bigint, timestamptz, text, bigint, text, text, text, text, text, jsonb);
DROP INDEX uq_audit_log_tenant_chain_seq;
ALTER TABLE audit_log DROP COLUMN chain_seq, DROP COLUMN prev_hash, DROP COLUMN hash;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_truncate;
"""


def upgrade() -> None:
    op.execute(READER_LOCKDOWN)
    op.execute(AUDIT_CHAIN)


def downgrade() -> None:
    op.execute(AUDIT_CHAIN_UNDO)
    op.execute(READER_LOCKDOWN_UNDO)
