"""The store: connection handling, the embedded server, typed models, migrations."""

from genloom.db import tenancy  # noqa: F401  (registers the per-transaction tenant hook on every Session)
from genloom.db.engine import get_engine, session_scope, sessionmaker_for

__all__ = ["get_engine", "session_scope", "sessionmaker_for"]
