"""The store: the only package that knows the schema and opens connections.

Public surface (import from here or from genloom.db.engine):
- session_scope(purpose=...), sessionmaker_for, get_engine, engine_for: sessions and engines
  (genloom.db.engine; purposes write, read, stream, api);
- stream_connection / reader_connection: psycopg connections for COPY and for `genloom sql`;
- start_database: the start-up steps a process runs once per database.

Modules: url (which database), crash (recovery and diagnosis), migrate (schema to head),
stale_runs (runs whose process died), tenancy (tenant and role per transaction), models (the
typed schema), embedded (the bundled server), status (`genloom db status`).
Importing this package has no side effects: the tenant hook is installed by the engine.
"""

from genloom.db.engine import (
    PURPOSES,
    engine_for,
    get_engine,
    reader_connection,
    session_scope,
    sessionmaker_for,
    start_database,
    stream_connection,
)

__all__ = [
    "PURPOSES",
    "engine_for",
    "get_engine",
    "reader_connection",
    "session_scope",
    "sessionmaker_for",
    "start_database",
    "stream_connection",
]
