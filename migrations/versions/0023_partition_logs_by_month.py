"""partition logs by month: generations, generation_sources, feedback and metrics
become PARTITION BY RANGE on their timestamp, one partition per month (genloom.db.partitions)

The conversion is generic, so it keeps whatever earlier migrations added to these tables
(columns, indexes, checks, foreign keys, row-level security policies, triggers with their
ENABLE ALWAYS/REPLICA state, grants, comments, and every view that reads them):

1. Read everything about the five tables and the views that depend on them from the catalogs.
2. Drop those views; rename each table to `<table>__old`.
3. Create the partitioned table `LIKE` the old one (defaults, checks, identity, generated
   columns, comments), its partitions from the month of its oldest row to three months
   ahead, and copy the rows (OVERRIDING SYSTEM VALUE keeps identity values).
   `generation_sources` and `feedback` gain `generation_created_at`, their generation's
   `created_at`: a foreign key to a partitioned table must include its partition key.
4. Drop the old tables; recreate keys (the partition key appended to primary and unique
   keys, as PostgreSQL requires), indexes, foreign keys (to generations: composite),
   policies, triggers, grants, then the views from their saved definitions.

A foreign key into one of these tables from a table outside them cannot be carried over
(it would need the partition key too): the migration stops with its name rather than drop it.
The downgrade runs the same steps back to plain tables.

Revision ID: 0023
Revises: 0015
"""

import dataclasses
import datetime as dt
import re
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0018"
branch_labels = None
depends_on = None

# table → partition key; the order is the copy order (generations before the tables that read
# its created_at). `generation_created_at` is added to the two tables that reference generations.
KEYS = {
    "generations": "created_at",
    "generation_sources": "generation_created_at",
    "feedback": "generation_created_at",
    "metrics": "created_at",
}
# The audit log stays one table: its per-tenant hash chain (0016) is verified from entry 1 and its
# unique (tenant, chain_seq) index cannot hold on a partitioned table without the partition key.
# The analytics views' source SQL pinned at this revision (unchanged since 0017). A view re-created
# from pg_get_viewdef's text parses back to a slightly different tree (casts folded into ARRAY
# constants, extra aliases), so views with a pinned file get that exact SQL again.
PINNED_VIEWS = Path(__file__).resolve().parents[1] / "views" / "0017"
REFERENCED = {"generations": ("id", "created_at")}  # partitioned tables other tables point at
ADDED_KEY = "generation_created_at"  # the column the referencing tables gain


@dataclasses.dataclass
class Table:
    name: str
    owner: str
    comment: str | None
    rls: bool
    force_rls: bool
    columns: list[str]
    indexes: list[tuple[str, str, str | None, str | None, bool]]  # (name, indexdef, constraint, its def, unique)
    foreign_keys: list[tuple[str, str, str]]  # (name, definition, referenced table)
    incoming: list[tuple[str, str]]  # (constraint, referencing table)
    triggers: list[tuple[str, str, str]]  # (name, definition, tgenabled)
    policies: list[str]  # CREATE POLICY statements
    grants: list[str]
    identity: list[tuple[str, str, int, bool]]  # (column, old sequence, last_value, is_called)


@dataclasses.dataclass
class View:
    name: str
    kind: str
    definition: str
    options: list[str] | None
    owner: str
    comment: str | None
    grants: list[str]


def _sql(statement: str) -> None:
    """DDL as written (no bind-parameter parsing: saved view bodies may hold ':' in literals)."""
    op.get_bind().exec_driver_sql(statement)


def _rows(sql: str, **params):
    return op.get_bind().execute(sa.text(sql), params).all()


def _grants(oid: int, on: str) -> list[str]:
    rows = _rows(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, "
        "a.privilege_type, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.oid = :o AND a.grantee <> c.relowner",
        o=oid,
    )
    return [f"GRANT {priv} ON {on} TO {who}{' WITH GRANT OPTION' if opt else ''}" for who, priv, opt in rows]


def _capture(name: str) -> Table:
    (oid, owner, comment, rls, force_rls) = _rows(
        "SELECT c.oid, quote_ident(pg_get_userbyid(c.relowner)), obj_description(c.oid, 'pg_class'), "
        "c.relrowsecurity, c.relforcerowsecurity FROM pg_class c WHERE c.oid = to_regclass(:t)",
        t=name,
    )[0]
    columns = [
        r[0]
        for r in _rows(
            "SELECT attname FROM pg_attribute WHERE attrelid = :o AND attnum > 0 AND NOT attisdropped "
            "AND attgenerated = '' ORDER BY attnum",
            o=oid,
        )
    ]
    indexes = [
        tuple(r)
        for r in _rows(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid), con.conname, pg_get_constraintdef(con.oid), "
            "i.indisunique FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
            "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid "
            "WHERE i.indrelid = :o ORDER BY ic.relname",
            o=oid,
        )
    ]
    foreign_keys = [
        tuple(r)
        for r in _rows(
            "SELECT conname, pg_get_constraintdef(oid), confrelid::regclass::text FROM pg_constraint "
            "WHERE conrelid = :o AND contype = 'f' AND conparentid = 0 ORDER BY conname",
            o=oid,
        )
    ]
    incoming = [
        tuple(r)
        for r in _rows(
            "SELECT conname, conrelid::regclass::text FROM pg_constraint WHERE confrelid = :o AND contype = 'f' AND conparentid = 0",
            o=oid,
        )
    ]
    triggers = [
        tuple(r)
        for r in _rows(
            "SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger "
            "WHERE tgrelid = :o AND NOT tgisinternal ORDER BY tgname",
            o=oid,
        )
    ]
    policies = [
        f"CREATE POLICY {pol} ON {name} AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'} FOR {cmd} TO {roles}"
        + (f" USING ({qual})" if qual else "")
        + (f" WITH CHECK ({check})" if check else "")
        for pol, permissive, cmd, roles, qual, check in _rows(
            "SELECT quote_ident(p.polname), p.polpermissive, "
            "CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' "
            "WHEN 'd' THEN 'DELETE' ELSE 'ALL' END, "
            "coalesce((SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END, ', ') "
            "FROM unnest(p.polroles) r), 'PUBLIC'), "
            "pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) "
            "FROM pg_policy p WHERE p.polrelid = :o ORDER BY p.polname",
            o=oid,
        )
    ]
    identity = []
    for (column,) in _rows("SELECT attname FROM pg_attribute WHERE attrelid = :o AND attidentity <> ''", o=oid):
        sequence = _rows("SELECT pg_get_serial_sequence(:t, :c)", t=name, c=column)[0][0]
        last_value, is_called = _rows(f"SELECT last_value, is_called FROM {sequence}")[0]
        identity.append((column, sequence, last_value, is_called))
    return Table(
        name, owner, comment, rls, force_rls, columns, indexes, foreign_keys, incoming, triggers, policies,
        _grants(oid, name), identity,
    )  # fmt: skip


def _dependent_views(tables: list[str]) -> list[View]:
    """Every view reading the tables, directly or through other views."""
    rows = _rows(
        """
        WITH RECURSIVE deps(oid) AS (
            SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = ANY(CAST(:oids AS oid[]))
               AND r.ev_class <> d.refobjid
            UNION
            SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN deps ON d.refobjid = deps.oid
             WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class <> d.refobjid
        )
        SELECT DISTINCT c.oid, c.relname, c.relkind, pg_get_viewdef(c.oid), c.reloptions,
               quote_ident(pg_get_userbyid(c.relowner)), obj_description(c.oid, 'pg_class')
        FROM deps JOIN pg_class c ON c.oid = deps.oid ORDER BY c.oid
        """,
        oids=[_rows("SELECT to_regclass(:t)::oid", t=t)[0][0] for t in tables],
    )
    return [View(name, kind, definition, options, owner, comment, _grants(oid, name))
            for oid, name, kind, definition, options, owner, comment in rows]  # fmt: skip


def _drop_views(views: list[View]) -> None:
    for view in views:
        kind = "MATERIALIZED VIEW" if view.kind == "m" else "VIEW"
        _sql(f"DROP {kind} IF EXISTS {view.name} CASCADE")


def _create_views(views: list[View]) -> None:
    """Recreate in dependency order: try each, postpone those whose base views are not back yet."""
    bind = op.get_bind()
    pending = list(views)
    while pending:
        postponed = []
        for view in pending:
            kind = "MATERIALIZED VIEW" if view.kind == "m" else "VIEW"
            options = f" WITH ({', '.join(view.options)})" if view.options else ""
            savepoint = bind.begin_nested()
            try:
                pinned = PINNED_VIEWS / f"{view.name}.sql"
                definition = pinned.read_text(encoding="utf-8") if view.kind == "v" and pinned.exists() else view.definition
                bind.exec_driver_sql(f"CREATE {kind} {view.name}{options} AS\n{definition}")
            except sa.exc.ProgrammingError:
                savepoint.rollback()
                postponed.append(view)
                continue
            savepoint.commit()
            _sql(f"ALTER {kind} {view.name} OWNER TO {view.owner}")
            if view.comment:
                bind.execute(sa.text(f"COMMENT ON {kind} {view.name} IS :c"), {"c": view.comment})
            for grant in view.grants:
                _sql(grant)
        if len(postponed) == len(pending):
            names = ", ".join(v.name for v in postponed)
            raise RuntimeError(f"migration 0023 could not recreate the views {names}")
        pending = postponed


def _key_columns(definition: str, key: str | None, drop: str | None) -> str:
    """'PRIMARY KEY (id)' → 'PRIMARY KEY (id, created_at)' (or back, dropping `drop`)."""
    match = re.match(r"^(PRIMARY KEY|UNIQUE(?: NULLS NOT DISTINCT)?) \(([^)]*)\)(.*)$", definition)
    if not match:
        raise RuntimeError(f"migration 0023 cannot carry the key {definition!r} over to a partitioned table")
    columns = [c.strip() for c in match.group(2).split(",")]
    if key and key not in columns:
        columns.append(key)
    if drop and drop in columns:
        columns.remove(drop)
    return f"{match.group(1)} ({', '.join(columns)}){match.group(3)}"


def _foreign_key(definition: str, referenced: str, partitioned: bool) -> str:
    """A foreign key into generations: (generation_id) ↔ (generation_id, generation_created_at)."""
    if referenced not in REFERENCED:
        return definition
    ref_id, ref_key = REFERENCED[referenced]
    if partitioned:
        match = re.match(rf"^FOREIGN KEY \((\w+)\) REFERENCES {referenced}\({ref_id}\)(.*)$", definition)
        if not match:
            raise RuntimeError(f"migration 0023 cannot make {definition!r} name the partition key")
        column, rest = match.groups()
        # SET NULL must leave the partition key alone (PostgreSQL ≥ 15 takes a column list).
        rest = rest.replace("ON DELETE SET NULL", f"ON DELETE SET NULL ({column})")
        return f"FOREIGN KEY ({column}, {ADDED_KEY}) REFERENCES {referenced}({ref_id}, {ref_key}){rest}"
    match = re.match(
        rf"^FOREIGN KEY \((\w+), {ADDED_KEY}\) REFERENCES {referenced}\({ref_id}, {ref_key}\)(.*)$", definition
    )
    if not match:
        raise RuntimeError(f"migration 0023 cannot turn {definition!r} back into a one-column key")
    column, rest = match.groups()
    rest = re.sub(r" SET NULL \(\w+\)", " SET NULL", rest)
    return f"FOREIGN KEY ({column}) REFERENCES {referenced}({ref_id}){rest}"


def _first_month(source: str) -> dt.datetime:
    now = dt.datetime.now(dt.timezone.utc)
    oldest = op.get_bind().execute(sa.text(f"SELECT min(k) FROM ({source}) s")).scalar()
    oldest = min(oldest, now) if oldest else now
    return dt.datetime(oldest.year, oldest.month, 1, tzinfo=dt.timezone.utc)


def _convert(tables: dict[str, Table], *, partitioned: bool) -> None:
    from genloom.db.partitions import ensure_partitions

    bind = op.get_bind()
    names = list(KEYS)
    for name in names:
        for constraint, referencing in tables[name].incoming:
            if referencing not in KEYS:
                raise RuntimeError(
                    f"migration 0023: {referencing}.{constraint} references {name}; a key into a partitioned "
                    f"table must include its partition key: extend the migration to carry it"
                )
            _sql(f"ALTER TABLE {referencing} DROP CONSTRAINT {constraint}")
    for name in names:
        _sql(f"ALTER TABLE {name} RENAME TO {name}__old")
        _sql(f"ALTER TABLE {name}__old NO FORCE ROW LEVEL SECURITY")  # the owner copies every row

    for name in names:  # 3. new tables, their partitions, the rows
        table, key = tables[name], KEYS[name]
        adds_key = key == ADDED_KEY
        copied = [c for c in table.columns if c != ADDED_KEY]
        like = (
            f"LIKE {name}__old INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING GENERATED "
            "INCLUDING COMMENTS INCLUDING STORAGE INCLUDING COMPRESSION"
        )
        if partitioned:
            extra = f", {ADDED_KEY} timestamptz NOT NULL" if adds_key else ""
            _sql(f"CREATE TABLE {name} ({like}{extra}) PARTITION BY RANGE ({key})")
            if adds_key:
                source = f"SELECT g.created_at AS k FROM {name}__old o JOIN generations g ON g.id = o.generation_id"
                select = ", ".join(f"o.{c}" for c in copied) + ", g.created_at"
                rows_from = f"{name}__old o JOIN generations g ON g.id = o.generation_id"
                target = ", ".join([*copied, ADDED_KEY])
            else:
                source = f"SELECT {key} AS k FROM {name}__old"
                select, rows_from, target = ", ".join(copied), f"{name}__old", ", ".join(copied)
            ensure_partitions(bind, tables=(name,), first_month=_first_month(source))
        else:
            _sql(f"CREATE TABLE {name} ({like})")
            if adds_key:
                _sql(f"ALTER TABLE {name} DROP COLUMN {ADDED_KEY}")
            select = target = ", ".join(copied)
            rows_from = f"{name}__old"
        _sql(f"INSERT INTO {name} ({target}) OVERRIDING SYSTEM VALUE SELECT {select} FROM {rows_from}")

    for name in names:  # 4. the old tables go; keys, indexes, foreign keys come back under their names
        table, key = tables[name], KEYS[name]
        new_sequences = {
            column: bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": name, "c": column}).scalar()
            for column, *_ in table.identity
        }
        _sql(f"DROP TABLE {name}__old")
        for column, old_sequence, last_value, is_called in table.identity:
            old_short = old_sequence.split(".")[-1]
            _sql(f"ALTER SEQUENCE {new_sequences[column]} RENAME TO {old_short}")
            bind.execute(sa.text("SELECT setval(:s, :v, :c)"), {"s": old_sequence, "v": last_value, "c": is_called})
        for index, indexdef, constraint, condef, unique in table.indexes:
            if constraint:
                fixed = _key_columns(condef, key if partitioned else None, None if partitioned else key)
                _sql(f"ALTER TABLE {name} ADD CONSTRAINT {constraint} {fixed}")
            elif unique and partitioned:
                raise RuntimeError(f"migration 0023 cannot carry the unique index {index} to a partitioned table")
            else:
                _sql(indexdef.replace(" ON ONLY ", " ON "))
        for constraint, definition, referenced in table.foreign_keys:
            fixed = _foreign_key(definition, referenced, partitioned)
            _sql(f"ALTER TABLE {name} ADD CONSTRAINT {constraint} {fixed}")

    for name in names:  # rights, policies and triggers last: the copies above ran without them
        table = tables[name]
        _sql(f"ALTER TABLE {name} OWNER TO {table.owner}")
        if table.comment:
            bind.execute(sa.text(f"COMMENT ON TABLE {name} IS :c"), {"c": table.comment})
        for grant in table.grants:
            _sql(grant)
        for policy in table.policies:
            _sql(policy)
        if table.rls:
            _sql(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
        if table.force_rls:
            _sql(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")
        for trigger, definition, enabled in table.triggers:
            _sql(definition)
            state = {"D": "DISABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}.get(enabled)
            if state:
                _sql(f"ALTER TABLE {name} {state} TRIGGER {trigger}")


def _run(*, partitioned: bool) -> None:
    tables = {name: _capture(name) for name in KEYS}
    views = _dependent_views(list(KEYS))
    _drop_views(views)
    _convert(tables, partitioned=partitioned)
    _create_views(views)


def upgrade() -> None:
    _run(partitioned=True)


def downgrade() -> None:
    _run(partitioned=False)
