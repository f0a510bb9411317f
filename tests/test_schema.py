"""The typed schema (genloom/db/models.py) is the migrated database, table for table.

Alembic's autogenerate comparison (the check behind `alembic check`) lists what differs
between the models and a database migrated to head: tables, columns, types, nullability,
server defaults, indexes, unique constraints and foreign keys. It does not look at primary keys
or CHECK constraints, so the test compares those itself. A migration that adds a column without
the model (or a model column without a migration) fails here, naming what drifted.

Partitioned tables (0023) are compared as their parents only: the month partitions
(pg_class.relispartition), and the indexes and foreign keys PostgreSQL clones onto or towards them,
are the database's bookkeeping of the parent's definition, which the models describe.
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

# Made at run time, not by a migration: one HNSW index per embedding model / item embedder
# (genloom.retrieval.vector, genloom.dedup.semantic). A database with data has them; the models cannot.
RUN_TIME_INDEX_PREFIXES = ("ix_embeddings_hnsw_", "ix_item_embeddings_hnsw_")


def _partitions(conn: sa.Connection) -> set[str]:
    """The partitions (and partition indexes) in the current schema: both have relispartition set."""
    query = "SELECT relname FROM pg_class WHERE relispartition AND relnamespace = current_schema()::regnamespace"
    return set(conn.execute(sa.text(query)).scalars())


def _filters(partitions: set[str]):
    def include_name(name, type_, parent_names) -> bool:
        # A partition is never reflected, so neither are its cloned indexes and foreign keys.
        return not (type_ == "table" and name in partitions)

    def include_object(obj, name, type_, reflected, compare_to) -> bool:
        if type_ == "index" and name and name.startswith(RUN_TIME_INDEX_PREFIXES):
            return False
        # A foreign key into a partitioned table is cloned once per partition of the referenced
        # table, on the referencing parent itself (feedback → generations_p2027_01, ...).
        return not (type_ == "foreign_key_constraint" and reflected and obj.referred_table.name in partitions)

    return include_name, include_object


def _describe(diff) -> str:
    """One line per difference, saying which side has what."""
    if isinstance(diff, list):  # column modifications come as a list of tuples
        return "; ".join(_describe(d) for d in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        where = "models.py only" if kind == "add_table" else "the database only"
        return f"table {diff[1].name}: in {where}"
    if kind in ("add_column", "remove_column"):
        where = "models.py only" if kind == "add_column" else "the database only"
        return f"column {diff[2]}.{diff[3].name}: in {where}"
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint"):
        obj = diff[1]
        where = "models.py only" if kind.startswith("add") else "the database only"
        cols = ", ".join(
            str(getattr(c, "name", c)) for c in getattr(obj, "columns", []) or getattr(obj, "expressions", [])
        )
        return f"{kind.split('_')[1]} {obj.name or '(unnamed)'} on {obj.table.name} ({cols}): in {where}"
    if kind in ("add_fk", "remove_fk"):
        fk = diff[1]
        where = "models.py only" if kind == "add_fk" else "the database only"
        cols = ", ".join(c.name for c in fk.columns)
        return f"foreign key {fk.parent.name}({cols}) → {fk.referred_table.name}: in {where}"
    if kind.startswith("modify_"):
        _, _, table, column, _, db_value, model_value = diff
        what = kind.removeprefix("modify_")
        return f"column {table}.{column}: {what} is {db_value!r} in the database, {model_value!r} in models.py"
    return repr(diff)


def schema_drift(engine: sa.Engine) -> list[str]:
    """What differs between genloom.db.models and the database behind `engine`, one line each."""
    from genloom.db.models import Base

    with engine.connect() as conn, warnings.catch_warnings():
        # runs ↔ dataset_versions reference each other; alembic warns it cannot sort them.
        warnings.filterwarnings("ignore", message="Cannot correctly sort tables")
        include_name, include_object = _filters(_partitions(conn))
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_name": include_name,
                "include_object": include_object,
            },
        )
        lines = [_describe(d) for d in compare_metadata(context, Base.metadata)]
        inspector = sa.inspect(conn)
        for table in Base.metadata.sorted_tables:
            db_pk = inspector.get_pk_constraint(table.name)["constrained_columns"]
            model_pk = [c.name for c in table.primary_key.columns]
            if sorted(db_pk) != sorted(model_pk):
                lines.append(
                    f"primary key of {table.name}: ({', '.join(db_pk)}) in the database, ({', '.join(model_pk)}) in models.py"
                )
            db_checks = {c["name"] for c in inspector.get_check_constraints(table.name)}
            model_checks = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
            for name in sorted(db_checks - model_checks):
                lines.append(f"check constraint {name} on {table.name}: in the database only")
            for name in sorted(model_checks - db_checks):
                lines.append(f"check constraint {name} on {table.name}: in models.py only")
    return lines


def test_models_match_the_migrated_database(engine):
    drift = schema_drift(engine)
    assert not drift, "models.py and the migrations disagree:\n  " + "\n  ".join(drift)


def test_drift_is_reported_by_name(engine):
    """The comparison sees a column the models lack, and says which one (the test above relies on it)."""
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE collections ADD COLUMN colour text"))
        conn.execute(sa.text("ALTER TABLE api_keys ALTER COLUMN note SET NOT NULL"))
        conn.execute(sa.text("DROP INDEX ix_audit_log_action"))
        # A partitioned parent: the column reaches every month partition, and is reported once.
        conn.execute(sa.text("ALTER TABLE generations ADD COLUMN colour text"))
        assert any(name.startswith("generations_p") for name in _partitions(conn)), "no partitions to ignore"
    drift = schema_drift(engine)
    assert "column collections.colour: in the database only" in drift
    assert [line for line in drift if "colour" in line and "generations" in line] == [
        "column generations.colour: in the database only"
    ]
    assert "column api_keys.note: nullable is False in the database, True in models.py" in drift
    assert "index ix_audit_log_action on audit_log (action, at): in models.py only" in drift


def test_every_tenant_scoped_table_has_its_tenant_column_in_the_models(engine):
    """The row-level security policies (0013) and the models name the same tables."""
    from genloom.db.models import Base

    with engine.connect() as conn:
        scoped = set(
            conn.execute(sa.text("SELECT tablename FROM pg_policies WHERE policyname = 'tenant_isolation'")).scalars()
        )
    assert scoped, "no tenant policies found: is the database at head?"
    for name in sorted(scoped):
        assert "tenant" in Base.metadata.tables[name].columns, (
            f"{name} has a tenant policy but its model has no tenant column"
        )
