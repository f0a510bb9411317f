"""Alembic environment: runs migrations online against genloom's database.

genloom passes its engine in `config.attributes["engine"]`; the `alembic` command
line (from the repo root) falls back to genloom's configured database.
"""

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from genloom.db.models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from genloom.db.engine import get_engine

        engine = get_engine(migrate=False)
    from genloom.db.migrate import MIGRATION_LOCK_KEY

    with engine.connect() as connection:
        # Serialise concurrent migrators; the lock is released when the session ends.
        connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            connection.commit()


if context.is_offline_mode():
    raise SystemExit("genloom migrations run online only: alembic upgrade head")
run_migrations_online()
