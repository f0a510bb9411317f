"""The audit trail: who did what, to what, when, with which outcome.

`record()` inserts into `audit_log` through the caller's session, so the entry commits or
rolls back with the action it describes. The table refuses UPDATE, DELETE and TRUNCATE by
trigger (migration 0013), so a psql user cannot rewrite history either; `v_audit_log` adds
the key's public prefix. Under tenants, each tenant sees its own entries.

Who acted: the API key (id and role) when a request carries one (`acting_as`), else the CLI
(role 'cli'); always the OS user of the process.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import getpass
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session


@dataclasses.dataclass(frozen=True)
class Actor:
    key_id: int | None
    role: str


_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("genloom_actor", default=None)


def set_actor(actor: Actor | None) -> None:
    _actor.set(actor)


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the audit row still lands
        return None


def statement_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record(
    session: Session | sa.Connection,
    action: str,
    object: str | None = None,
    *,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> None:
    """Append one entry in the caller's transaction (its tenant is the transaction's)."""
    actor = actor or _actor.get() or Actor(key_id=None, role="cli")
    session.execute(
        sa.text(
            "INSERT INTO audit_log (key_id, os_user, role, action, object, outcome, detail) "
            "VALUES (:k, :u, :r, :a, :o, :out, CAST(:d AS jsonb))"
        ),
        {
            "k": actor.key_id,
            "u": _os_user(),
            "r": actor.role,
            "a": action,
            "o": object,
            "out": outcome,
            "d": json.dumps(detail or {}, default=str),
        },
    )


def list_entries(session: Session, *, limit: int = 50, action: str | None = None) -> list[dict[str, Any]]:
    """Newest first, from the view (which adds the key's prefix)."""
    query = "SELECT * FROM v_audit_log" + (" WHERE action = :a OR action LIKE :prefix" if action else "")
    rows = session.execute(
        sa.text(query + " ORDER BY id DESC LIMIT :n"), {"a": action, "prefix": f"{action}.%", "n": limit}
    ).mappings()
    return [dict(r) for r in rows]
