"""The driver's errors, classified for callers outside the store (which never import psycopg)."""

from __future__ import annotations


def is_foreign_key_violation(exc: BaseException) -> bool:
    """Whether EXC (a SQLAlchemy DBAPIError or a psycopg error) is a broken foreign key."""
    from psycopg.errors import ForeignKeyViolation

    return isinstance(getattr(exc, "orig", exc), ForeignKeyViolation)
