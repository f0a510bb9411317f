"""keys, tenants, audit, pii: API keys with roles, tenant isolation by row-level security,
an append-only audit log, PII findings, and resource limits on the read-only SQL role

1. `api_keys`: one row per key; only a salted scrypt hash of the secret is kept.
2. Tenants. `genloom_tenant()` is the tenant of the current transaction: the
   `genloom.tenant` setting that genloom sets per transaction (genloom.db.tenancy), or
   'default' when unset, so a tenant-less install sees what it saw before. Every
   tenant-scoped table gets `tenant text NOT NULL DEFAULT genloom_tenant()` (existing rows:
   'default') and one policy, `tenant = genloom_tenant()` for reads and writes, with ROW
   LEVEL SECURITY enabled and forced (the owner is held too). Names are unique per tenant.
3. `genloom_app`: the NOLOGIN, NOBYPASSRLS role genloom's sessions switch to (SET LOCAL
   ROLE) so that policies hold even when genloom logs in as a superuser (the embedded
   server does; superusers bypass every policy). It owns the two tables genloom indexes at
   run time (CREATE INDEX needs the owner).
4. Views run with the caller's rights (`security_invoker`), so a view owned by a superuser
   is no way around a policy for `genloom_reader`.
5. `audit_log`: append-only (a trigger refuses UPDATE, DELETE and TRUNCATE); `v_audit_log`.
6. `pii_findings`: what the PII detector found (type, count, where; never the value);
   `collections.pii_mode` is a collection's default.
7. `genloom_reader` (genloom sql): at most 4 connections, temp_file_limit 1 GB, no
   advisory locks and no set_config (execute revoked from PUBLIC; granted back to genloom_app
   and the migrating user), so a query cannot switch its own tenant. Steps that need a superuser or CREATEROLE are
   skipped with a NOTICE on a managed server whose migrating user lacks them (docs/security.md).

Revision ID: 0013
Revises: 0012
"""
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

APP_ROLE = "genloom_app"
SHARED_TENANT = "genloom"  # reserved: shipped rows every tenant reads (genloom.db.tenancy refuses it as a tenant)
READER = "genloom_reader"

# Everything a tenant owns. Config shared by all tenants (embedding_models, item_embedders),
# derived tables read only by an id found under a policy (dataset_shards, retrieval_chunks,
# retrieval_postings, retrieval_*_stats; hidden from the reader instead) and api_keys are not scoped.
TENANT_TABLES = [
    "collections", "documents", "chunks", "embeddings", "chunk_duplicates",
    "prompt_templates", "sessions", "prompts", "generations", "generation_sources", "feedback",
    "items", "datasets", "dataset_versions", "dataset_members",
    "runs", "metrics", "models", "run_checkpoints", "dedup_decisions", "item_embeddings",
    "prompt_template_labels", "prompt_template_label_moves",  # 0012
]
# Tables genloom runs CREATE INDEX on at run time (per-embedder HNSW indexes).
APP_OWNED = ["embeddings", "item_embeddings"]
# (table, columns that were unique, name of the per-tenant unique index)
PER_TENANT_UNIQUE = [
    ("collections", ("name",), "uq_collections_tenant_name"),
    ("datasets", ("name",), "uq_datasets_tenant_name"),
    ("models", ("name", "version"), "uq_models_tenant_name_version"),
    ("prompt_templates", ("name", "version"), "uq_prompt_templates_tenant_name_version"),
    ("items", ("sha256",), "uq_items_tenant_sha256"),
]

TENANT_FUNCTION = """
CREATE OR REPLACE FUNCTION genloom_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS
$$ SELECT coalesce(nullif(current_setting('genloom.tenant', true), ''), 'default') $$
"""

APP_ROLE_SQL = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
    IF NOT pg_has_role(current_user, '{APP_ROLE}', 'MEMBER') THEN
        EXECUTE format('GRANT {APP_ROLE} TO %I', current_user);
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'genloom: role {APP_ROLE} not set up (% lacks CREATEROLE); tenants are then enforced '
                 'only if % is not a superuser', current_user, current_user;
END $$;
"""

APP_GRANTS = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        GRANT USAGE, CREATE ON SCHEMA public TO {APP_ROLE};  -- CREATE: run-time HNSW indexes
        GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public TO {APP_ROLE};
        GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE};
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES TO {APP_ROLE};
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {APP_ROLE};
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {APP_ROLE};
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO {APP_ROLE}', current_database());
    END IF;
END $$;
"""

AUDIT_SQL = """
CREATE TABLE audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant text NOT NULL DEFAULT genloom_tenant(),
    key_id bigint,              -- the API key that acted (NULL: the CLI)
    os_user text,               -- the OS user of the CLI process or server
    role text,                  -- the key's role, or 'cli'
    action text NOT NULL,       -- e.g. key.create, generation.delete, sql.run, auth.failure
    object text,                -- what it acted on (a name, an id, a statement's sha256)
    outcome text NOT NULL DEFAULT 'ok',
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX ix_audit_log_at ON audit_log (at);
CREATE INDEX ix_audit_log_action ON audit_log (action, at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"""
# The view's source is platform/genloom/analytics/views/v_audit_log.sql; this revision runs the
# copy pinned with it (migrations/views/0013/), so replaying it later runs the same SQL.
PINNED_VIEWS = Path(__file__).resolve().parents[1] / "views" / "0013"

KEYS_SQL = """
CREATE TABLE api_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix text NOT NULL UNIQUE,   -- the public part of the key (glk_<prefix>_<secret>)
    salt bytea NOT NULL,
    hash bytea NOT NULL,           -- scrypt(secret, salt); the secret itself is never stored
    role text NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
    tenant text NOT NULL DEFAULT 'default',
    note text,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text,
    expires_at timestamptz,
    revoked_at timestamptz
);
"""

PII_SQL = """
CREATE TABLE pii_findings (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL DEFAULT genloom_tenant(),
    at timestamptz NOT NULL DEFAULT now(),
    object_kind text NOT NULL,     -- 'document', 'prompt', 'generation'
    object_id bigint NOT NULL,
    field text NOT NULL,           -- 'text', 'answer', ...
    pii_type text NOT NULL,        -- 'email', 'phone', 'card', 'iban', 'ip', 'national_id'
    count integer NOT NULL CHECK (count > 0),
    spans int4range[] NOT NULL,    -- character offsets in the original text; never the value
    mode text NOT NULL CHECK (mode IN ('mask', 'hash', 'encrypt', 'detect'))
);
CREATE INDEX ix_pii_findings_object ON pii_findings (object_kind, object_id);
ALTER TABLE collections ADD COLUMN pii_mode text CHECK (pii_mode IN ('off', 'mask', 'hash', 'encrypt'));
"""

READER_LIMITS = f"""
DO $$
DECLARE f regprocedure;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN
        RETURN;
    END IF;
    REVOKE SELECT ON api_keys FROM {READER};
    -- Derived tables genloom reaches only through an id it read under a policy; they are not
    -- scoped (a policy would cost BM25 its index-only scans), so the reader does not see them.
    REVOKE SELECT ON dataset_shards, retrieval_chunks, retrieval_postings, retrieval_term_stats,
                     retrieval_collection_stats FROM {READER};
    BEGIN
        ALTER ROLE {READER} CONNECTION LIMIT 4;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'genloom: could not set a connection limit on {READER}';
    END;
    BEGIN
        ALTER ROLE {READER} SET temp_file_limit = '1GB';
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'genloom: could not set temp_file_limit on {READER} (needs a superuser)';
    END;
    BEGIN
        FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'pg_catalog' AND p.proname ~ '^pg_(try_)?advisory'
        LOOP
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, current_user);
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO {APP_ROLE}', f);
            END IF;
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'genloom: advisory lock functions left executable by PUBLIC (needs a superuser)';
    END;
    -- set_config inside a query (a MATERIALIZED CTE) would let one `genloom sql` statement switch
    -- genloom.tenant before its scans; SET is a statement of its own, which genloom sql never combines.
    BEGIN
        REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;
        EXECUTE format('GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO %I', current_user);
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
            GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO {APP_ROLE};
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'genloom: set_config left executable by PUBLIC (needs a superuser)';
    END;
END $$;
"""


def _unique_on(bind, table: str, columns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(constraint names, index names) that make exactly `columns` unique on `table`."""
    insp = sa.inspect(bind)
    constraints = [c["name"] for c in insp.get_unique_constraints(table) if tuple(c["column_names"]) == columns]
    indexes = [
        i["name"] for i in insp.get_indexes(table)
        if i["unique"] and tuple(i["column_names"]) == columns and i["name"] not in constraints
        and not i.get("dialect_options", {}).get("postgresql_where")
    ]
    return constraints, indexes


def upgrade() -> None:
    bind = op.get_bind()
    op.execute(TENANT_FUNCTION)
    op.execute(KEYS_SQL)
    op.execute(AUDIT_SQL)
    op.execute("CREATE VIEW v_audit_log AS\n" + (PINNED_VIEWS / "v_audit_log.sql").read_text(encoding="utf-8"))
    op.execute(PII_SQL)
    for table in TENANT_TABLES:
        # A constant default fills existing rows without rewriting the table; then the per-transaction one.
        op.execute(f"ALTER TABLE {table} ADD COLUMN tenant text NOT NULL DEFAULT 'default'")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN tenant SET DEFAULT genloom_tenant()")
    # 0012's template labels: one label per (tenant, template name), and no foreign key to
    # (name, version), which is no longer unique; label_template() checks the version exists
    # under the caller's policy (a label may point at a shared, shipped template).
    op.execute("ALTER TABLE prompt_template_labels DROP CONSTRAINT IF EXISTS prompt_template_labels_name_version_fkey")
    op.execute("ALTER TABLE prompt_template_labels DROP CONSTRAINT prompt_template_labels_pkey")
    op.execute("ALTER TABLE prompt_template_labels ADD PRIMARY KEY (tenant, name, label)")
    for table, columns, name in PER_TENANT_UNIQUE:
        constraints, indexes = _unique_on(bind, table, columns)
        for c in constraints:
            op.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{c}"')
        for i in indexes:
            op.execute(f'DROP INDEX "{i}"')
        op.execute(f"CREATE UNIQUE INDEX {name} ON {table} (tenant, {', '.join(columns)})")
    op.execute(APP_ROLE_SQL)
    op.execute(APP_GRANTS)
    # Templates genloom ships (the 'default' template) belong to the reserved tenant 'genloom',
    # which every tenant reads and none writes.
    op.execute("ALTER TABLE prompt_templates DISABLE TRIGGER prompt_templates_immutable")  # a one-off relabel
    op.execute(f"UPDATE prompt_templates SET tenant = '{SHARED_TENANT}' WHERE metadata @> '{{\"shipped\": true}}'")
    op.execute("ALTER TABLE prompt_templates ENABLE TRIGGER prompt_templates_immutable")
    for table in TENANT_TABLES + ["audit_log", "pii_findings"]:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        shared = f" OR tenant = '{SHARED_TENANT}'" if table == "prompt_templates" else ""
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant = genloom_tenant(){shared}) WITH CHECK (tenant = genloom_tenant())"
        )
    op.execute(f"""
        DO $$
        BEGIN
            IF pg_has_role(current_user, '{APP_ROLE}', 'MEMBER') THEN
                {' '.join(f'ALTER TABLE {t} OWNER TO {APP_ROLE};' for t in APP_OWNED)}
            END IF;
        END $$;
    """)
    # Views with the caller's rights (PostgreSQL 15+): a superuser-owned view would skip every policy.
    op.execute("""
        DO $$
        DECLARE v record;
        BEGIN
            IF current_setting('server_version_num')::int >= 150000 THEN
                FOR v IN SELECT c.oid::regclass AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'public' AND c.relkind = 'v'
                LOOP
                    EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', v.name);
                END LOOP;
            END IF;
        END $$;
    """)
    op.execute(READER_LIMITS)


def downgrade() -> None:
    bind = op.get_bind()
    op.execute(f"""
        DO $$
        DECLARE f regprocedure;
        BEGIN
            FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = 'pg_catalog' AND p.proname ~ '^pg_(try_)?advisory'
            LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
            END LOOP;
            GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO PUBLIC;
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN
                ALTER ROLE {READER} CONNECTION LIMIT -1;
                ALTER ROLE {READER} RESET temp_file_limit;
                GRANT SELECT ON dataset_shards, retrieval_chunks, retrieval_postings, retrieval_term_stats,
                                retrieval_collection_stats TO {READER};
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'genloom: reader limits left in place';
        END $$;
    """)
    owner = bind.execute(sa.text("SELECT current_user")).scalar()
    for table in APP_OWNED:
        op.execute(f'ALTER TABLE {table} OWNER TO "{owner}"')
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for table, columns, name in PER_TENANT_UNIQUE:
        op.execute(f"DROP INDEX {name}")
        op.execute(f"ALTER TABLE {table} ADD UNIQUE ({', '.join(columns)})")
    op.execute("ALTER TABLE prompt_template_labels DROP CONSTRAINT prompt_template_labels_pkey")
    op.execute("ALTER TABLE prompt_template_labels ADD PRIMARY KEY (name, label)")
    op.execute(
        "ALTER TABLE prompt_template_labels ADD CONSTRAINT prompt_template_labels_name_version_fkey "
        "FOREIGN KEY (name, version) REFERENCES prompt_templates (name, version)"
    )
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN tenant")
    op.execute("ALTER TABLE collections DROP COLUMN pii_mode")
    op.execute("DROP TABLE pii_findings")
    op.execute("DROP VIEW v_audit_log")
    op.execute("DROP TABLE audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")
    op.execute("DROP TABLE api_keys")
    op.execute("DROP FUNCTION genloom_tenant()")
    op.execute(f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {APP_ROLE};
                ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {APP_ROLE};
                REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {APP_ROLE};
                REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {APP_ROLE};
                REVOKE USAGE, CREATE ON SCHEMA public FROM {APP_ROLE};
                EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM {APP_ROLE}', current_database());
            END IF;
        END $$;
    """)
