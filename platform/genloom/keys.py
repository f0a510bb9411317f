"""API keys: created once, shown once, stored as a salted hash.

A key reads `glk_<prefix>_<secret>`: the prefix (public, 8 hex) finds the row; the secret
(32 random bytes, url-safe) is checked against `scrypt(secret, salt)` with a constant-time
compare. Nothing that could answer a request is stored. scrypt is deliberately slow
(~40 ms), so a verified (prefix, secret digest) pair is remembered per process; the row is
still read on every request, so revocation and expiry take effect at once.

Roles nest: reader < writer < admin (see genloom.api.auth for what each may call).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom import audit
from genloom.db.models import ApiKey
from genloom.db.tenancy import validate_tenant
from genloom.errors import BadInput, Forbidden, NotFound, Unauthorized

ROLES = ("reader", "writer", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
_KEY = re.compile(r"^glk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
# scrypt cost: 16 MiB of memory and ~40 ms per check (RFC 7914's interactive-login figure).
_N, _R, _P = 2**14, 8, 1
_verified: dict[tuple[str, bytes], bytes] = {}  # (prefix, sha256(secret)) → stored hash it matched
_verified_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    key_id: int | None
    role: str
    tenant: str


@dataclasses.dataclass
class NewKey:
    id: int
    prefix: str
    key: str  # shown once; not recoverable afterwards
    role: str
    tenant: str
    expires_at: dt.datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "prefix": self.prefix,
            "role": self.role,
            "tenant": self.tenant,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode("ascii"), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 1024 * 1024, dklen=32)


def check_role(role: str) -> str:
    if role not in RANK:
        raise BadInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def parse_expires(text: str | None, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """'30d', '12h', '1y' (from now) or an ISO date/time; None for never."""
    if text is None or not text.strip() or text.strip() == "never":
        return None
    now = now or dt.datetime.now(dt.UTC)
    m = re.match(r"^\s*(\d+)\s*([hdwy])\s*$", text, re.IGNORECASE)
    if m:
        hours = int(m.group(1)) * {"h": 1, "d": 24, "w": 168, "y": 8760}[m.group(2).lower()]
        if hours <= 0:
            raise BadInput(f"--expires must be a positive duration (got {text!r})")
        return now + dt.timedelta(hours=hours)
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"--expires must look like 30d, 12h, 1y or 2027-01-31 (got {text!r})") from None
    value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if value <= now:
        raise BadInput(f"--expires {text!r} is in the past")
    return value


def create_key(
    session: Session, *, role: str, tenant: str = "default", expires: str | None = None, note: str | None = None
) -> NewKey:
    check_role(role)
    tenant = validate_tenant(tenant)
    expires_at = parse_expires(expires)
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    key_id = session.execute(
        sa.insert(ApiKey)
        .values(
            prefix=prefix,
            salt=salt,
            hash=_hash(secret, salt),
            role=role,
            tenant=tenant,
            note=note,
            expires_at=expires_at,
            created_by=audit._os_user(),
        )
        .returning(ApiKey.id)
    ).scalar_one()
    audit.record(session, "key.create", f"key {key_id} ({prefix})", detail={"role": role, "tenant": tenant})
    return NewKey(
        id=key_id, prefix=prefix, key=f"glk_{prefix}_{secret}", role=role, tenant=tenant, expires_at=expires_at
    )


def list_keys(session: Session, *, include_revoked: bool = False, tenant: str | None = None) -> list[dict[str, Any]]:
    """Never the secret (only its salted hash is stored). `tenant`: only that tenant's keys (the web UI's admin)."""
    query = sa.select(
        ApiKey.id,
        ApiKey.prefix,
        ApiKey.role,
        ApiKey.tenant,
        ApiKey.note,
        ApiKey.created_at,
        ApiKey.created_by,
        ApiKey.expires_at,
        ApiKey.revoked_at,
    ).order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return [dict(r) for r in session.execute(query).mappings()]


def revoke_key(session: Session, ref: str, *, tenant: str | None = None) -> dict[str, Any]:
    """Revoke by id or prefix; revoking twice is not an error. `tenant`: only a key of that tenant."""
    ref = ref.strip()
    # A prefix is 8 hex digits and may be all digits (about 2 % of keys): a ref that is some key's
    # prefix means that key; only otherwise is a number an id.
    by_prefix = session.execute(sa.select(ApiKey.id).where(ApiKey.prefix == ref)).first() is not None
    revoke = (
        sa.update(ApiKey)
        .where((ApiKey.id == int(ref)) if ref.isdigit() and not by_prefix else (ApiKey.prefix == ref))
        .values(revoked_at=sa.func.coalesce(ApiKey.revoked_at, sa.func.now()))
        .returning(ApiKey.id, ApiKey.prefix, ApiKey.role, ApiKey.tenant, ApiKey.revoked_at)
    )
    if tenant is not None:
        revoke = revoke.where(ApiKey.tenant == tenant)
    row = session.execute(revoke, execution_options={"synchronize_session": False}).mappings().first()
    if row is None:
        raise NotFound(f"no API key {ref!r} (list them with: genloom keys list)")
    audit.record(session, "key.revoke", f"key {row['id']} ({row['prefix']})")
    return dict(row)


def authenticate(session: Session, presented: str | None) -> Principal:
    """The principal a presented key stands for, or Unauthorized (one line, never echoing the key)."""
    if not presented:
        raise Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' (create one with: genloom keys create)"
        )
    m = _KEY.match(presented.strip())
    if not m:
        raise Unauthorized("invalid API key")
    prefix, secret = m.groups()
    row = session.execute(_KEY_ROW.add_columns(ApiKey.salt).where(ApiKey.prefix == prefix)).first()
    if row is None:
        raise Unauthorized("invalid API key")
    digest = hashlib.sha256(secret.encode()).digest()
    with _verified_lock:
        known = _verified.get((prefix, digest))
    if known is None or not hmac.compare_digest(known, row.hash):
        if not hmac.compare_digest(_hash(secret, row.salt), row.hash):
            raise Unauthorized("invalid API key")
        with _verified_lock:
            _verified[(prefix, digest)] = bytes(row.hash)
    if row.revoked_at is not None:
        raise Unauthorized(f"API key {prefix} was revoked")
    if row.expires_at is not None and row.expires_at <= row.now:
        raise Unauthorized(f"API key {prefix} expired at {row.expires_at.isoformat(timespec='seconds')}")
    return Principal(key_id=row.id, role=row.role, tenant=row.tenant)


# Browser sessions (genloom.ui): a cookie `gls_<key id>_<expiry>_<mac>` signed with the key's own
# stored hash, a server-side secret that never leaves the database. No secret of its own to keep,
# it dies with its key (revoke, expiry), and the key itself is never stored in the browser.
SESSION_SECONDS = 12 * 3600
_SESSION = re.compile(r"^gls_(\d{1,18})_(\d{1,12})_([A-Za-z0-9_-]{43})$")


def _session_mac(stored_hash: bytes, key_id: int, expires: int) -> str:
    mac = hmac.new(bytes(stored_hash), f"genloom-session.{key_id}.{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


# A key's row as authentication reads it, with the database's clock (expiry is judged by it, not ours).
_KEY_ROW = sa.select(
    ApiKey.id,
    ApiKey.hash,
    ApiKey.role,
    ApiKey.tenant,
    ApiKey.expires_at,
    ApiKey.revoked_at,
    sa.func.now().label("now"),
)


def _key_row(session: Session, key_id: int):
    return session.execute(_KEY_ROW.where(ApiKey.id == key_id)).first()


def issue_session(session: Session, principal: Principal, *, seconds: int = SESSION_SECONDS) -> str:
    """A session token for a principal that authenticate() just returned (the UI's login)."""
    if principal.key_id is None:
        raise BadInput("a browser session is issued for an API key only")
    row = _key_row(session, principal.key_id)
    expires = int(row.now.timestamp()) + seconds
    if row.expires_at is not None:  # a session never outlives its key
        expires = min(expires, int(row.expires_at.timestamp()))
    return f"gls_{row.id}_{expires}_{_session_mac(row.hash, row.id, expires)}"


def authenticate_session(session: Session, token: str | None) -> Principal:
    """The principal a session token stands for; the key row is read each time (revocation is immediate)."""
    m = _SESSION.match(token or "")
    if not m:
        raise Unauthorized("not logged in")
    key_id, expires = int(m.group(1)), int(m.group(2))
    row = _key_row(session, key_id)
    if row is None or not hmac.compare_digest(_session_mac(row.hash, key_id, expires), m.group(3)):
        raise Unauthorized("invalid session")
    if row.revoked_at is not None or expires <= row.now.timestamp():
        raise Unauthorized("session expired or its key was revoked: log in again")
    if row.expires_at is not None and row.expires_at <= row.now:
        raise Unauthorized("the session's key has expired: log in again")
    return Principal(key_id=row.id, role=row.role, tenant=row.tenant)


def role_refusal(session: Session, principal: Principal, needed: str, *, what: str, refusal: str) -> Forbidden | None:
    """None when the principal's role reaches `needed`; else the Forbidden(refusal) to raise, audited on `what`.

    The caller raises it after committing, so the audit row stays. The web UI's pages and the MCP tools
    check their callers with it (the HTTP API's own check is api/auth.py)."""
    if allows(principal.role, needed):
        return None
    error = Forbidden(refusal)
    audit.record(
        session,
        "auth.failure",
        what,
        outcome="refused",
        detail={"reason": refusal},
        actor=audit.Actor(key_id=principal.key_id, role=principal.role),
    )
    return error


def allows(role: str, needed: str) -> bool:
    return RANK[role] >= RANK[needed]
