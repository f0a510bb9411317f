"""Who is looking at a page: the session cookie, the role a page needs, and the CSRF token of its forms.

The cookie holds `keys.issue_session`'s token (key id, expiry, an HMAC under the key's stored hash),
never the key. Each request re-reads the key row (keys.authenticate_session), so revoking a key ends
its sessions at once. The CSRF token of a form is an HMAC of the session token, which a page on
another origin can neither read (HttpOnly) nor send along (SameSite=Strict).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from genloom.errors import Forbidden, GenloomError, Unauthorized

COOKIE = "genloom_session"
LOGIN_COOKIE = "genloom_login"  # the login form's own CSRF token (double submit: there is no session yet)
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


# `serve --no-auth` (loopback only) has no session: forms then carry a token from this per-process secret,
# which a page on another origin cannot read.
_NO_AUTH_SECRET = secrets.token_urlsafe(32)


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"genloom-ui-csrf", hashlib.sha256).hexdigest()


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def _principal(token: str | None, method: str, path: str, needed: str):
    """Authenticate the cookie and authorise the route in one short transaction; refusals are audited."""
    from genloom import audit
    from genloom.db.engine import session_scope
    from genloom.keys import authenticate_session, role_refusal

    refused: GenloomError | None = None
    with session_scope(purpose="api") as s:
        try:
            principal = authenticate_session(s, token)
        except Unauthorized as exc:
            if token:  # a forged or stale cookie; a missing one is just a visitor to redirect
                audit.record(s, "auth.failure", f"{method} {path}", outcome="refused", detail={"reason": str(exc)})
            refused = exc
        else:
            refused = role_refusal(
                s,
                principal,
                needed,
                what=f"{method} {path}",
                refusal=f"your key's role ({principal.role}) may not use {method} {path} (needs {needed})",
            )
    if refused is not None:  # after the commit: the refusal stays in the audit log
        raise refused
    return principal


async def check(request: Request, roles: dict[tuple[str, str], str]) -> dict[str, Any]:
    """The page's dependency: cookie → principal, role, CSRF on POST; sets tenant and audit actor.

    A GET without a session is redirected to the login page; anything else is 401. A route not in
    `roles` needs admin, so a new page is closed until someone decides who may see it.
    """
    from genloom import audit
    from genloom.db.tenancy import current_tenant, set_tenant
    from genloom.keys import Principal

    route = request.scope.get("route")
    path = getattr(route, "path_format", None) or request.url.path
    method = "GET" if request.method == "HEAD" else request.method
    needed = roles.get((method, path), "admin")
    token = request.cookies.get(COOKIE)
    if not request.app.state.genloom_security.auth:  # --no-auth on loopback: the CLI user's tenant, as the API
        principal, token = Principal(key_id=None, role="admin", tenant=current_tenant()), _NO_AUTH_SECRET
    else:
        try:
            principal = await run_in_threadpool(_principal, token, method, path, needed)
        except Unauthorized:
            if method == "GET":
                target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
                raise HTTPException(status_code=303, headers={"Location": f"/ui/login?next={target}"}) from None
            raise
    expected = csrf_token(token or "")
    if method == "POST":
        sent = request.headers.get(CSRF_HEADER)
        if sent is None:
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        if not sent or not hmac.compare_digest(sent, expected):
            raise Forbidden("missing or wrong CSRF token: reload the page and submit the form again")
    set_tenant(principal.tenant)  # context variables set here reach the endpoint's thread
    audit.set_actor(audit.Actor(key_id=principal.key_id, role=principal.role if principal.key_id else "no-auth"))
    return {"role": principal.role, "tenant": principal.tenant, "key_id": principal.key_id, "csrf": expected}
