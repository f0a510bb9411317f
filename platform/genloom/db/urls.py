"""Database URLs: the driver's form, validation, and hiding passwords before they are shown."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from genloom.errors import ConfigError


def sqlalchemy_url(url: str) -> str:
    """postgresql://… or postgres://… → postgresql+psycopg://… (psycopg 3 driver)."""
    validate_url(url)
    scheme, rest = url.split("://", 1)
    return "postgresql+psycopg://" + rest


def validate_url(url: str) -> None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        raise ConfigError(
            f"DATABASE_URL must look like postgresql://user:password@host:5432/dbname (got {redact(url)!r}); "
            "unset it to use the embedded server"
        )
    try:
        urlsplit(url).port  # raises on a non-numeric port
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL is malformed ({exc}): {redact(url)}") from None


_SECRET_PARAM = re.compile(r"(?i)([?&;\s](?:password|sslpassword)=)[^&;\s]*")


def redact(url: str) -> str:
    """Hide passwords before a URL goes into an error message or a status report.

    Both libpq forms: `user:secret@host` and `?password=secret` (or `sslpassword=`).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if parts.password:
        url = url.replace(f":{parts.password}@", ":***@", 1)
    return _SECRET_PARAM.sub(r"\1***", url)
