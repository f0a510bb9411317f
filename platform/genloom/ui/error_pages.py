"""Refusals and bad input on /ui as a small HTML page for a browser, with the API's status and one-line message.

The API's exception handlers (genloom.api.app, genloom.api.auth) stay the one place that decides the
status and words the message; this wraps each of them so that a request for a /ui page that accepts
text/html gets that message in a page instead of the JSON body. Everything else (the API, MCP, the
Ask page's fetch, a redirect to the login form) is answered exactly as before.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

TITLES = {
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    413: "Too large",
    422: "That input was not accepted",
}


def wants_html(request: Request) -> bool:
    return request.url.path.startswith("/ui") and "text/html" in request.headers.get("accept", "")


def install(app: FastAPI) -> None:
    """Wrap every exception handler the app has so far (call after the API and its auth are installed)."""
    for exc_class, handler in list(app.exception_handlers.items()):
        app.exception_handlers[exc_class] = _wrapped(handler)


def _wrapped(handler: Any):
    async def handle(request: Request, exc: Exception) -> Response:
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        if response.status_code < 400 or not wants_html(request):
            return response
        return _page(request, response)

    return handle


def _page(request: Request, response: Response) -> Response:
    from genloom.ui.routes import templates

    try:
        message = json.loads(bytes(response.body))["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = "The request could not be completed."
    status = response.status_code
    page = templates.TemplateResponse(
        request,
        "error.html",
        {
            "user": None,
            "nav": [],
            "path": request.url.path,
            "status": status,
            "message": message,
            "title": TITLES.get(status, "Something went wrong"),
        },
        status_code=status,
    )
    for name in ("www-authenticate", "retry-after"):
        if name in response.headers:
            page.headers[name] = response.headers[name]
    return page
