"""The store: connection handling, the embedded server, typed models, migrations."""

from genloom.db.engine import get_engine, session_scope, sessionmaker_for

__all__ = ["get_engine", "session_scope", "sessionmaker_for"]
