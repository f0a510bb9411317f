"""Tenants on a managed server, where genloom logs in as the (non-superuser) owner of its tables.

On the embedded server genloom logs in as a superuser and switches each transaction to the
NOLOGIN role `genloom_app`, which the policies bind. On a managed Postgres (RDS, Cloud SQL, Azure)
the login is an ordinary role that owns the tables it migrated and cannot be granted genloom_app
(it lacks ADMIN on a role someone else created): there the only thing between the owner and other
tenants' rows is FORCE ROW LEVEL SECURITY, since a table's owner otherwise bypasses its policies.
This test builds that setup on the test server: a database owned by such a role, migrated by it.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db import embedded


@pytest.fixture
def owner_url(pg_server, monkeypatch):
    """A fresh database owned and migrated by a LOGIN role that is neither superuser nor genloom_app."""
    from genloom.db.engine import get_engine, reset_engines

    role, name = f"owner_{uuid.uuid4().hex[:8]}", f"m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as su:
        # CREATEROLE as managed servers give their admin user; genloom_app exists already (the
        # template's migration made it), so this role cannot grant it to itself.
        su.execute(f"CREATE ROLE {role} LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS")
        su.execute(f"CREATE DATABASE {name} OWNER {role}")
    with psycopg.connect(embedded.uri_for_database(pg_server, name), autocommit=True) as su:
        # What a managed server's extension allow-list provides; the migration then finds them.
        su.execute("CREATE EXTENSION vector")
        su.execute("CREATE EXTENSION pg_trgm")
    head, _, query = embedded.uri_for_database(pg_server, name).partition("?")
    scheme, _, rest = head.partition("://")
    url = f"{scheme}://{quote(role)}{rest[rest.index('@') :]}" + (f"?{query}" if query else "")
    monkeypatch.setenv("DATABASE_URL", url)
    reset_engines()
    get_engine()  # migrates to head, as that role
    yield url
    reset_engines()
    with psycopg.connect(pg_server, autocommit=True) as su:
        su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        su.execute(f"DROP OWNED BY {role}")
        su.execute(f"DROP ROLE IF EXISTS {role}")


def _collections_seen(engine) -> list[tuple[str, str]]:
    with Session(engine) as s:
        return [tuple(r) for r in s.execute(sa.text("SELECT tenant, name FROM collections ORDER BY name"))]


def test_a_non_superuser_table_owner_sees_only_its_tenant(owner_url):
    from genloom.db.engine import get_engine
    from genloom.db.tenancy import use_tenant

    engine = get_engine()
    with engine.connect() as conn:
        who = conn.execute(
            sa.text(
                "SELECT r.rolsuper, r.rolbypassrls, pg_has_role(current_user, 'genloom_app', 'MEMBER'), "
                "c.relowner = r.oid FROM pg_roles r, pg_class c "
                "WHERE r.rolname = current_user AND c.oid = 'collections'::regclass"
            )
        ).one()
    # The managed setup: no superuser, no BYPASSRLS, no genloom_app to switch to, owner of the table.
    # (Whether FORCE is on is left to the behaviour below: without it the owner sees every tenant.)
    assert tuple(who) == (False, False, False, True)

    for tenant in ("acme", "globex"):
        with use_tenant(tenant), Session(engine) as s, s.begin():
            s.execute(sa.text("INSERT INTO collections (name) VALUES (:n)"), {"n": f"{tenant}-kb"})
    with use_tenant("acme"):
        assert _collections_seen(engine) == [("acme", "acme-kb")]
    with use_tenant("globex"):
        assert _collections_seen(engine) == [("globex", "globex-kb")]
        # Writing another tenant's row is refused too (WITH CHECK), not silently stored.
        with pytest.raises(sa.exc.ProgrammingError, match="row-level security"), Session(engine) as s, s.begin():
            s.execute(sa.text("INSERT INTO collections (tenant, name) VALUES ('acme', 'planted')"))
    with engine.connect() as conn:  # outside a Session: no tenant set at all, so no rows
        assert conn.execute(sa.text("SELECT count(*) FROM collections")).scalar() == 0
