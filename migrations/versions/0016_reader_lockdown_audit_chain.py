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


def upgrade() -> None:
    op.execute(READER_LOCKDOWN)


def downgrade() -> None:
    op.execute(READER_LOCKDOWN_UNDO)
