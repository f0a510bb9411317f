"""Distribute genloom's schema over a Citus 14 cluster: the multi-tenant pattern, run by `genloom db migrate`.

Alembic builds the same schema everywhere (one node or a Citus coordinator). On a coordinator
(the `citus` extension is installed) `distribute(engine)` then runs after the migrations, once
per table (a table that is distributed already is left alone, so it is safe to run again and a
later migration's new table is distributed on the next `genloom db migrate`):

1. **Reference tables** (a copy on every node): the small global tables that carry no tenant,
   `embedding_models` and `item_embedders`. A reference table may not point at a distributed
   one, so `item_embedders.model_id → models` is dropped on a cluster (a soft reference there).
2. **Tenant everywhere**: the tables that belong to a tenant through their parent
   (`retrieval_*` through their collection, `dataset_shards` through its version) get a
   `tenant` column, filled from the parent, defaulting to `genloom_tenant()` for new rows.
3. **Keys lead with the tenant**: Citus requires the distribution column in every primary key and
   unique constraint, so each one without `tenant` is rebuilt as (tenant, …) under the same
   name (an `ON CONFLICT ON CONSTRAINT` works on both topologies); unique indexes likewise.
4. **Distributed by tenant, co-located**: every tenant table is hash-distributed on `tenant` in
   one co-location group with `collections` (partitioned logs included: their months follow).
   A tenant's rows, all of them, live on one worker: a tenant's query is a router query.
5. **Foreign keys between distributed tables include the tenant**: (tenant, x_id) →
   parent (tenant, id), with the same ON DELETE action (CASCADE, NO ACTION). Citus refuses
   `ON DELETE SET NULL` on a key that includes the distribution column, even as
   `SET NULL (x_id)`: those references (a session's collection, a generation's registry model,
   a source's purged chunk, …) are soft on a cluster, listed in the result's
   `soft_references` (a deleted parent leaves the id behind instead of NULL).

One node keeps the stricter keys (`id` alone is unique there); nothing here runs without Citus.
docs/architecture.md ("Scaling out") says what happens to one very large collection.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

TENANT = "tenant"
ANCHOR = "collections"  # the co-location group is named after this table
REFERENCE_TABLES = ("embedding_models", "item_embedders")
# Tables that belong to a tenant through a parent: table → (parent, column pointing at parent.id).
TENANT_FROM = {
    "retrieval_chunks": ("collections", "collection_id"),
    "retrieval_postings": ("collections", "collection_id"),
    "retrieval_term_stats": ("collections", "collection_id"),
    "retrieval_collection_stats": ("collections", "collection_id"),
    "dataset_shards": ("dataset_versions", "version_id"),
}
LOCAL_TABLES = ("alembic_version",)  # the coordinator's own bookkeeping
_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

Say = Callable[[str], None]


def is_citus(conn: Connection) -> bool:
    return bool(conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")).scalar())


def _tables(conn: Connection) -> list[str]:
    """genloom's tables in public (partition parents, not their partitions)."""
    return list(
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
                "AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname"
            )
        ).scalars()
    )


def _distributed(conn: Connection) -> set[str]:
    return set(
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
                "WHERE c.relnamespace = 'public'::regnamespace"
            )
        ).scalars()
    )


def _columns(conn: Connection, table: str) -> set[str]:
    return set(
        conn.execute(
            sa.text(
                "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"
            ),
            {"t": table},
        ).scalars()
    )


def _foreign_keys(conn: Connection) -> list[dict]:
    rows = conn.execute(
        sa.text(
            """
            SELECT c.conname, r.relname AS child, p.relname AS parent,
                   ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,
                   ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS refcols,
                   c.confdeltype, c.confupdtype, c.condeferrable
            FROM pg_constraint c
            JOIN pg_class r ON r.oid = c.conrelid
            JOIN pg_class p ON p.oid = c.confrelid
            WHERE c.contype = 'f' AND c.conparentid = 0 AND r.relnamespace = 'public'::regnamespace
            ORDER BY r.relname, c.conname
            """
        )
    ).mappings()
    return [dict(row) for row in rows]


def _keys_without_tenant(conn: Connection, table: str) -> list[dict]:
    rows = conn.execute(
        sa.text(
            """
            SELECT c.conname, c.contype,
                   ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols
            FROM pg_constraint c
            WHERE c.conrelid = CAST(:t AS regclass) AND c.contype IN ('p', 'u') AND c.conparentid = 0
            """
        ),
        {"t": table},
    ).mappings()
    return [dict(row) for row in rows if TENANT not in row["cols"]]


def _unique_indexes_without_tenant(conn: Connection, table: str) -> list[tuple[str, str]]:
    """(name, definition) of unique indexes that back no constraint and do not mention the tenant."""
    rows = conn.execute(
        sa.text(
            """
            SELECT i.relname, pg_get_indexdef(x.indexrelid)
            FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = CAST(:t AS regclass) AND x.indisunique
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
              AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = x.indexrelid)
            """
        ),
        {"t": table},
    ).all()
    return [(name, ddl) for name, ddl in rows if not re.search(rf"\(\s*{TENANT}\b|,\s*{TENANT}\b", ddl)]


def _q(names) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _fk_sql(fk: dict, *, with_tenant: bool) -> str:
    cols, refcols = list(fk["cols"]), list(fk["refcols"])
    on_delete = _ACTIONS[fk["confdeltype"]]
    if with_tenant and TENANT not in cols:
        if on_delete == "SET NULL":
            on_delete = f"SET NULL ({_q(cols)})"  # null the reference, never the tenant
        cols, refcols = [TENANT, *cols], [TENANT, *refcols]
    return (
        f'ALTER TABLE "{fk["child"]}" ADD CONSTRAINT "{fk["conname"]}" FOREIGN KEY ({_q(cols)}) '
        f'REFERENCES "{fk["parent"]}" ({_q(refcols)}) ON DELETE {on_delete}'
        + (" DEFERRABLE" if fk["condeferrable"] else "")
    )


def plan(conn: Connection) -> dict:
    """What `distribute` would do on this coordinator (tables still local, by role)."""
    done = _distributed(conn)
    tables = [t for t in _tables(conn) if t not in LOCAL_TABLES]
    reference = [t for t in tables if t in REFERENCE_TABLES and t not in done]
    tenant = [
        t
        for t in tables
        if t not in REFERENCE_TABLES and t not in done and (TENANT in _columns(conn, t) or t in TENANT_FROM)
    ]
    other = [t for t in tables if t not in done and t not in reference and t not in tenant]
    return {"reference": reference, "tenant": tenant, "unplaced": other, "distributed": sorted(done)}


def distribute(engine: Engine, progress: Say | None = None) -> dict:
    """Distribute every genloom table not yet distributed (see the module docstring); {} without Citus."""
    say = progress or (lambda message: None)
    with engine.connect() as conn:
        if not is_citus(conn):
            return {}
        todo = plan(conn)
    if not todo["reference"] and not todo["tenant"]:
        _let_triggers_read(engine)
        return todo
    if todo["unplaced"]:
        from genloom.errors import DatabaseError

        raise DatabaseError(
            f"cannot distribute {', '.join(todo['unplaced'])}: neither a tenant column nor a reference table "
            "(genloom.db.distribute.REFERENCE_TABLES / TENANT_FROM)"
        )
    moving = set(todo["reference"]) | set(todo["tenant"])
    reference_all = set(REFERENCE_TABLES)
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL citus.enable_unsafe_triggers = on"))  # immutability and audit-chain triggers
        conn.execute(
            sa.text("SET LOCAL citus.multi_shard_modify_mode = 'sequential'")
        )  # DDL and distribution in one transaction
        fks = [fk for fk in _foreign_keys(conn) if fk["child"] in moving or fk["parent"] in moving]
        for fk in fks:
            conn.execute(sa.text(f'ALTER TABLE "{fk["child"]}" DROP CONSTRAINT "{fk["conname"]}"'))
        for table in todo["tenant"]:
            if table in TENANT_FROM and TENANT not in _columns(conn, table):
                parent, column = TENANT_FROM[table]
                say(f"distribute: {table} gets the tenant of its {parent}")
                conn.execute(sa.text(f'ALTER TABLE "{table}" ADD COLUMN {TENANT} text'))
                conn.execute(
                    sa.text(f'UPDATE "{table}" t SET {TENANT} = p.{TENANT} FROM "{parent}" p WHERE p.id = t."{column}"')
                )
                conn.execute(sa.text(f'ALTER TABLE "{table}" ALTER COLUMN {TENANT} SET DEFAULT genloom_tenant()'))
                conn.execute(sa.text(f'ALTER TABLE "{table}" ALTER COLUMN {TENANT} SET NOT NULL'))
            for key in _keys_without_tenant(conn, table):
                kind = "PRIMARY KEY" if key["contype"] == "p" else "UNIQUE"
                conn.execute(sa.text(f'ALTER TABLE "{table}" DROP CONSTRAINT "{key["conname"]}"'))
                conn.execute(
                    sa.text(
                        f'ALTER TABLE "{table}" ADD CONSTRAINT "{key["conname"]}" {kind} ({_q([TENANT, *key["cols"]])})'
                    )
                )
            for name, ddl in _unique_indexes_without_tenant(conn, table):
                conn.execute(sa.text(f'DROP INDEX "{name}"'))
                conn.execute(sa.text(re.sub(r"USING (\w+) \(", rf"USING \1 ({TENANT}, ", ddl, count=1)))
        for table in todo["reference"]:
            say(f"distribute: {table} → reference table")
            conn.execute(sa.text("SELECT create_reference_table(:t)"), {"t": table})
        ordered = sorted(todo["tenant"], key=lambda t: t != ANCHOR)
        for table in ordered:
            say(f"distribute: {table} → distributed by {TENANT}")
            if table == ANCHOR:
                conn.execute(sa.text("SELECT create_distributed_table(:t, :c)"), {"t": table, "c": TENANT})
            else:
                conn.execute(
                    sa.text("SELECT create_distributed_table(:t, :c, colocate_with => :a)"),
                    {"t": table, "c": TENANT, "a": ANCHOR},
                )
        dropped = []
        for fk in fks:
            child_ref, parent_ref = fk["child"] in reference_all, fk["parent"] in reference_all
            if (child_ref and not parent_ref) or (not child_ref and not parent_ref and fk["confdeltype"] in "nd"):
                dropped.append(f"{fk['child']}.{','.join(fk['cols'])} → {fk['parent']}")  # not allowed by Citus
                continue
            conn.execute(sa.text(_fk_sql(fk, with_tenant=not child_ref and not parent_ref)))
    todo["soft_references"] = dropped
    _let_triggers_read(engine)
    return todo


def _let_triggers_read(engine: Engine) -> None:
    """genloom's triggers (sealed dataset versions, the audit chain) read a table from inside a
    shard's trigger on a worker: a distributed query there, which Citus refuses unless allowed.
    Their reads stay within the row's tenant, co-located on that worker (local execution, same
    transaction), so each trigger function is allowed to, and nothing else is."""
    with engine.begin() as conn:
        functions = conn.execute(
            sa.text(
                """
                SELECT DISTINCT p.oid::regprocedure::text FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                WHERE NOT t.tgisinternal AND p.pronamespace = 'public'::regnamespace
                  AND NOT coalesce('citus.allow_nested_distributed_execution=on' = ANY(p.proconfig), false)
                """
            )
        ).scalars()
        for function in list(functions):
            conn.execute(sa.text(f"ALTER FUNCTION {function} SET citus.allow_nested_distributed_execution = on"))
