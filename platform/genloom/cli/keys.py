"""`genloom keys create|list|revoke` and `genloom audit list|verify`: who may call the HTTP API, and what was done."""

from __future__ import annotations

from typing import Annotated

import typer

from genloom.cli.output import JsonOption, console, info, print_json

keys_app = typer.Typer(help="API keys for `genloom serve` (roles: reader, writer, admin).", no_args_is_help=True)
audit_app = typer.Typer(help="The append-only audit trail.", no_args_is_help=True)


@keys_app.command("create")
def create_cmd(
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="reader (search, read), writer (+ ask, feedback, ingest), admin (+ keys, retention, deletes).",
        ),
    ],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant whose rows the key sees.")] = "default",
    expires: Annotated[
        str | None, typer.Option("--expires", help="30d, 12h, 1y or a date (2027-01-31); default never.")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="What the key is for.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Create a key and print it once (only a salted hash is stored)."""
    from genloom.db.engine import session_scope
    from genloom.keys import create_key

    with session_scope() as s:
        new = create_key(s, role=role, tenant=tenant, expires=expires, note=note)
    if json_out:
        print_json(new.as_json())
        return
    print(new.key)
    info(
        f"key {new.id} ({new.prefix}): role {new.role}, tenant {new.tenant}"
        + (f", expires {new.expires_at:%Y-%m-%d %H:%M} UTC" if new.expires_at else "")
        + ". Store it now: it cannot be shown again."
    )


@keys_app.command("list")
def list_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Keys (never their secrets)."""
    from rich.table import Table

    from genloom.db.engine import session_scope
    from genloom.keys import list_keys

    with session_scope() as s:
        rows = list_keys(s, include_revoked=all_)
    if json_out:
        print_json(rows)
        return
    table = Table()
    for col in ("id", "prefix", "role", "tenant", "created", "expires", "revoked", "note"):
        table.add_column(col)

    def stamp(t) -> str:
        return t.strftime("%Y-%m-%d %H:%M") if t else "-"

    for r in rows:
        table.add_row(
            str(r["id"]),
            r["prefix"],
            r["role"],
            r["tenant"],
            stamp(r["created_at"]),
            stamp(r["expires_at"]),
            stamp(r["revoked_at"]),
            r["note"] or "",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke_cmd(
    key: Annotated[str, typer.Argument(help="The key's id or prefix (from `genloom keys list`).")],
    json_out: JsonOption = False,
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from genloom.db.engine import session_scope
    from genloom.keys import revoke_key

    with session_scope() as s:
        row = revoke_key(s, key)
    if json_out:
        print_json(row)
    else:
        info(f"revoked key {row['id']} ({row['prefix']})")


@keys_app.command("rotate-data-key")
def rotate_data_key_cmd(json_out: JsonOption = False) -> None:
    """Re-encrypt stored prompts, answers and feedback comments under GENLOOM_ENCRYPTION_KEY.

    Values sealed with the previous key need it in GENLOOM_ENCRYPTION_KEY_OLD; plain values
    (stored before encryption was turned on) are sealed too. One transaction: all or nothing.
    """
    from genloom import audit
    from genloom.crypto import current_key, key_id, rotate
    from genloom.db.engine import session_scope

    with session_scope() as s:
        counts = rotate(s)  # raises BadInput when no key is configured
        key = current_key()
        assert key is not None, "rotate() returned without a data key"
        audit.record(s, "data_key.rotate", key_id(key), detail=counts)
    if json_out:
        print_json({"key_id": key_id(key), "resealed": counts})
    else:
        info(
            f"re-encrypted {sum(counts.values())} values under key {key_id(key)}: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )


@audit_app.command("list")
def audit_list_cmd(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many entries, newest first.")] = 50,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action or family (e.g. key, auth.failure).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """The audit trail of this tenant (also the view v_audit_log)."""
    from rich.table import Table

    from genloom.audit import list_entries
    from genloom.db.engine import session_scope
    from genloom.errors import BadInput

    if limit < 1:
        raise BadInput(f"--limit must be at least 1 (got {limit})")
    with session_scope() as s:
        rows = list_entries(s, limit=limit, action=action)
    if json_out:
        print_json(rows)
        return
    table = Table()
    for col in ("id", "at", "who", "action", "object", "outcome"):
        table.add_column(col, overflow="fold")
    for r in rows:
        who = f"key {r['key_prefix']} ({r['role']})" if r["key_id"] else f"{r['os_user'] or '?'} ({r['role']})"
        table.add_row(
            str(r["id"]), r["at"].strftime("%Y-%m-%d %H:%M:%S"), who, r["action"], r["object"] or "", r["outcome"]
        )
    console.print(table)


@audit_app.command("verify")
def audit_verify_cmd(json_out: JsonOption = False) -> None:
    """Recompute this tenant's audit hash chain: exit 1 if an entry was deleted, changed or cut off."""
    from genloom.audit import verify_and_anchor
    from genloom.db.engine import session_scope
    from genloom.errors import GenloomError

    with session_scope() as s:
        report = verify_and_anchor(s)
    if json_out:
        print_json({"rows": report.rows, "heads": report.heads, "problems": report.problems})
    if report.problems:
        raise GenloomError(f"audit chain broken: {report.problems[0]} ({len(report.problems)} problem(s))")
    if not json_out:
        info(f"audit chain intact: {report.rows} entries")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
