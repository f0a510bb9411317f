"""Alembic, driven from Python: bring a database to the schema head.

The migration scripts live in the repository's `migrations/` folder; `alembic`
from the repo root uses the same scripts through alembic.ini.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from genloom.db import partitions
from genloom.errors import DatabaseError

# platform/genloom/db/migrate.py → repo root is three folders up from genloom/.
MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"

# Any constant works; it only has to be the same in every genloom process, so that two
# processes migrating one database at once take turns instead of colliding.
MIGRATION_LOCK_KEY = 0x67656E6C  # "genl"


def alembic_config(engine: Engine | None = None) -> Config:
    if not (MIGRATIONS_DIR / "env.py").exists():
        raise DatabaseError(
            f"migration scripts not found in {MIGRATIONS_DIR}; install genloom from its source checkout (pip install -e .)"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_vector_available(engine: Engine) -> None:
    with engine.connect() as conn:
        available = conn.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).scalar()
    if not available:
        raise DatabaseError(
            "the database server has no `vector` extension: install pgvector on it "
            "(https://github.com/pgvector/pgvector#installation) or unset DATABASE_URL to use the embedded server"
        )


def update_vector_extension(engine: Engine) -> tuple[str | None, str | None]:
    """Bring an installed `vector` extension to the version the server ships; return (before, after).

    A data directory made by an older pgvector keeps the old SQL objects until
    `ALTER EXTENSION vector UPDATE` runs the shipped upgrade scripts. Without the privilege to do
    so (an external server's extension owned by someone else) the extension is left as it is.
    """
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT e.extversion, a.default_version FROM pg_extension e "
                "JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'vector'"
            )
        ).first()
    if row is None or row.extversion == row.default_version:
        return (row.extversion, row.extversion) if row else (None, None)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER EXTENSION vector UPDATE"))
    except sa.exc.ProgrammingError:
        return row.extversion, row.extversion  # not ours to update: `genloom db status` shows the version
    return row.extversion, row.default_version


def upgrade(engine: Engine, revision: str = "head") -> dict:
    """Migrate; on a Citus coordinator also distribute what is not yet distributed.

    Returns what genloom.db.distribute did ({} on one node).
    """
    from genloom.db.tenancy import forget_engine

    check_vector_available(engine)
    command.upgrade(alembic_config(engine), revision)
    update_vector_extension(engine)
    partitions.maintain(engine)
    from genloom.db.cluster import prepare
    from genloom.db.distribute import distribute

    distributed = distribute(engine)  # a Citus coordinator: every table distributed by tenant or a reference table
    prepare(engine)  # a Citus coordinator: the tenancy settings reach the workers
    forget_engine(engine)  # tenancy may have just appeared (0013)
    return distributed


def downgrade(engine: Engine, revision: str = "base") -> None:
    from genloom.db.tenancy import forget_engine

    command.downgrade(alembic_config(engine), revision)
    forget_engine(engine)


def ensure_schema(engine: Engine) -> None:
    """Upgrade to head unless already there (one cheap query in the common case)."""
    if current_revision(engine) == head_revision():
        return
    upgrade(engine)
