"""The audit trail: who did what, to what, when, with which outcome.

`record()` inserts into `audit_log` through the caller's session, so the entry commits or
rolls back with the action it describes. The table refuses UPDATE, DELETE and TRUNCATE by
trigger (migration 0013), so a psql user cannot rewrite history either; `v_audit_log` adds
the key's public prefix. Under tenants, each tenant sees its own entries.

Each tenant's rows form a hash chain (migration 0016): `hash = sha256(prev_hash ‖ the row)`, in
`chain_seq` order. `verify()` recomputes it, so a row deleted or changed by someone who got past
the triggers (a superuser disabling them) shows; `genloom audit verify` also keeps the head it saw
in `$GENLOOM_HOME/audit-heads.json`, so a chain cut at its end or recomputed wholesale since the
last verify shows too.

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
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from genloom.db.models import AuditLog
from genloom.db.queries.audit import audit_chain, audit_page


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
        sa.insert(AuditLog).values(
            key_id=actor.key_id,
            os_user=_os_user(),
            role=actor.role,
            action=action,
            object=object,
            outcome=outcome,
            # serialised here, as text cast to jsonb: default=str writes dates and paths in a detail as text
            detail=sa.cast(sa.literal(json.dumps(detail or {}, default=str), sa.Text), JSONB),
        )
    )


def list_entries(
    session: Session, *, limit: int = 50, action: str | None = None, before: int | None = None
) -> list[dict[str, Any]]:
    """Newest first, from the view (which adds the key's prefix); `before` (an id) pages by keyset."""
    return audit_page(session, limit=limit, action=action, before=before)


GENESIS = bytes(32)


@dataclasses.dataclass
class ChainReport:
    rows: int
    heads: dict[str, tuple[int, str]]  # tenant -> (chain_seq, hash hex) of its last row
    problems: list[str]


def verify(session: Session, known_heads: dict[str, tuple[int, str]] | None = None) -> ChainReport:
    """Recompute the hash chain of every tenant the caller can see; compare earlier heads if given."""
    rows = audit_chain(session)
    problems: list[str] = []
    heads: dict[str, tuple[int, str]] = {}
    seen: dict[tuple[str, int], str] = {}
    for r in rows:
        where = f"tenant {r.tenant!r}, entry {r.chain_seq} (id {r.id})"
        if r.chain_seq != (r.previous_seq or 0) + 1:
            problems.append(f"{where}: entries {(r.previous_seq or 0) + 1}..{r.chain_seq - 1} are missing")
        elif bytes(r.prev_hash) != bytes(r.previous_hash if r.previous_hash is not None else GENESIS):
            problems.append(f"{where}: does not follow the entry before it")
        if bytes(r.hash) != bytes(r.recomputed):
            problems.append(f"{where}: was changed after it was written")
        heads[r.tenant] = (r.chain_seq, bytes(r.hash).hex())
        seen[(r.tenant, r.chain_seq)] = bytes(r.hash).hex()
    for tenant, (seq, digest) in (known_heads or {}).items():
        if seen.get((tenant, seq)) != digest:
            problems.append(f"tenant {tenant!r}: entry {seq} (the head at the last verify) is gone or was rewritten")
    return ChainReport(rows=len(rows), heads=heads, problems=problems)


def _heads_file():
    from genloom.config import genloom_home

    return genloom_home() / "audit-heads.json"


def verify_and_anchor(session: Session) -> ChainReport:
    """verify() this tenant's chain against the head the last verify saw, then remember the new head.

    The heads live outside the database ($GENLOOM_HOME/audit-heads.json, mode 0600, one entry per
    store and tenant): a database superuser who cuts the chain's end, or recomputes it after a
    change, cannot rewrite them too.
    """
    import os

    from genloom.config import store_key
    from genloom.db.tenancy import current_tenant

    path, tenant = _heads_file(), current_tenant()
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    mine = stored.setdefault(store_key(), {})
    known = {tenant: tuple(mine[tenant])} if tenant in mine else {}
    report = verify(session, known)
    if not report.problems and tenant in report.heads:
        mine[tenant] = list(report.heads[tenant])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(stored, f)
        os.replace(tmp, path)
    return report
