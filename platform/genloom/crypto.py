"""Field encryption (opt-in): AES-256-GCM with a key from GENLOOM_ENCRYPTION_KEY.

A value is stored as `gle1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`. The key id is the
first 8 hex digits of sha256(key), so a row names the key that sealed it and
`genloom keys rotate-data-key` can find what an old key sealed (GENLOOM_ENCRYPTION_KEY_OLD).
GCM authenticates: a changed byte fails to decrypt instead of decrypting to garbage.

The key is 32 random bytes, given as base64 (make one with
`python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"`).
Encrypted text cannot be searched or aggregated by SQL: that is the trade-off.
"""

from __future__ import annotations

import base64
import hashlib
import os

from genloom.errors import BadInput, ConfigError

KEY_ENV = "GENLOOM_ENCRYPTION_KEY"
OLD_KEY_ENV = "GENLOOM_ENCRYPTION_KEY_OLD"
PREFIX = "gle1:"


def _parse_key(text: str, env: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{env} must be 32 random bytes in base64 (44 characters); see docs/security.md")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def current_key() -> bytes | None:
    text = os.environ.get(KEY_ENV, "").strip()
    return _parse_key(text, KEY_ENV) if text else None


def _keys() -> dict[str, bytes]:
    keys = {}
    for env in (KEY_ENV, OLD_KEY_ENV):
        text = os.environ.get(env, "").strip()
        if text:
            key = _parse_key(text, env)
            keys[key_id(key)] = key
    return keys


def is_encrypted(value: str | None) -> bool:
    return value is not None and value.startswith(PREFIX)


def encrypt(plaintext: str, key: bytes | None = None, *, context: bytes = b"") -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = key or current_key()
    if key is None:
        raise BadInput(f"encryption needs {KEY_ENV} (32 random bytes in base64)")
    nonce = os.urandom(12)  # 96-bit random nonce: safe for far more than 2^32 values per key
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), context or None)
    return f"{PREFIX}{key_id(key)}:{base64.b64encode(nonce + sealed).decode()}"


def decrypt(value: str, *, context: bytes = b"") -> str:
    """Plain text back; a value that is not encrypted is returned as is."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not is_encrypted(value):
        return value
    _, kid, blob = value.split(":", 2)
    key = _keys().get(kid)
    if key is None:
        raise ConfigError(f"a value is sealed with key {kid}, which is neither {KEY_ENV} nor {OLD_KEY_ENV}")
    raw = base64.b64decode(blob)
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], context or None).decode("utf-8")
    except InvalidTag:
        raise ConfigError(
            f"a value sealed with key {kid} failed authentication (altered, or the wrong context)"
        ) from None


# Columns genloom seals when a key is configured, with the context (AAD) each is sealed under:
# a ciphertext copied into another column fails authentication instead of decrypting there.
SEALED_COLUMNS = [
    ("prompts", "text"),
    ("sessions", "title"),
    ("generations", "rendered_prompt"),
    ("generations", "output"),
    ("feedback", "comment"),
]


def seal(value: str | None, column: str) -> str | None:
    """Encrypt `value` for `column` ('table.column') when GENLOOM_ENCRYPTION_KEY is set; else as is."""
    if value is None or current_key() is None:
        return value
    return encrypt(value, context=column.encode())


def unseal(value: str | None, column: str) -> str | None:
    """The readable value of a stored one (plain values pass through)."""
    if value is None or not is_encrypted(value):
        return value
    return decrypt(value, context=column.encode())


def rotate(session, *, batch: int = 1000) -> dict[str, int]:
    """Re-seal every value not sealed with the current key (old-key ciphertexts and plain text alike).

    Old ciphertexts need GENLOOM_ENCRYPTION_KEY_OLD. Runs in the caller's transaction, so a
    failure leaves every row as it was.
    """
    import sqlalchemy as sa

    from genloom.db.models import Base

    key = current_key()
    if key is None:
        raise BadInput(f"rotate-data-key needs the new key in {KEY_ENV} (and the old one in {OLD_KEY_ENV})")
    kid = key_id(key)
    counts: dict[str, int] = {}
    for table, column in SEALED_COLUMNS:
        name = f"{table}.{column}"
        done = 0
        t = Base.metadata.tables[table]
        rows = session.execute(
            sa.select(t.c.id, t.c[column].label("v")).where(
                t.c[column].is_not(None), t.c[column].not_like(f"{PREFIX}{kid}:%")
            )
        ).all()
        # Core UPDATE by id, one statement executed per batch of rows (executemany)
        reseal = sa.update(t).where(t.c.id == sa.bindparam("row_id")).values({column: sa.bindparam("sealed")})
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            session.execute(
                reseal,
                [
                    {"row_id": r.id, "sealed": encrypt(unseal(r.v, name) or "", key, context=name.encode())}
                    for r in part
                ],
            )
            done += len(part)
        counts[name] = done
    return counts
