"""The pages of /ui. Each renders what a library function returns; none writes its own query.

ROLES says what each page needs (reader < writer < admin, as over HTTP); a page not listed needs
admin. PUBLIC lists the only pages without a session: the login form and the static files.
Lists are paginated by keyset (`?before=ID` / `?after=KEY`): the next page starts past the last row shown.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path, PurePath
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import UploadFile  # what request.form() returns (fastapi's is a subclass)

from genloom.api.session import DB
from genloom.errors import BadInput, NotFound
from genloom.ui import session as ui_session
from genloom.ui.charts import bar_chart, line_chart

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["line_chart"] = line_chart
templates.env.globals["bar_chart"] = bar_chart
templates.env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, default=str, ensure_ascii=False)

PUBLIC = frozenset({("GET", "/ui/login"), ("POST", "/ui/login"), ("GET", "/ui/static/{name}")})
ROLES: dict[tuple[str, str], str] = {
    ("GET", "/ui"): "reader",
    ("POST", "/ui/logout"): "reader",
    ("GET", "/ui/ask"): "reader",  # a reader sees the page, not its submit button
    ("POST", "/ui/ask"): "writer",
    ("GET", "/ui/chunks/{chunk_id}"): "reader",
    ("GET", "/ui/generations"): "reader",
    ("GET", "/ui/generations/{generation_id}"): "reader",
    ("POST", "/ui/generations/{generation_id}/feedback"): "writer",
    ("POST", "/ui/generations/{generation_id}/dataset"): "writer",
    ("GET", "/ui/collections"): "reader",
    ("GET", "/ui/collections/{name}"): "reader",
    ("GET", "/ui/collections/{name}/document"): "reader",
    ("GET", "/ui/collections/{name}/search"): "reader",
    ("POST", "/ui/collections/{name}/upload"): "writer",
    ("POST", "/ui/collections/{name}/document/delete"): "writer",
    ("POST", "/ui/collections/{name}/document/metadata"): "writer",
    ("GET", "/ui/datasets"): "reader",
    ("GET", "/ui/datasets/diff"): "reader",
    ("GET", "/ui/datasets/{ref}"): "reader",
    ("GET", "/ui/runs"): "reader",
    ("GET", "/ui/runs/compare"): "reader",
    ("GET", "/ui/runs/{run_id}"): "reader",
    ("GET", "/ui/models"): "reader",
    ("GET", "/ui/evaluations"): "reader",
    ("GET", "/ui/analytics"): "reader",
    ("GET", "/ui/analytics/views/{view}"): "reader",
    ("GET", "/ui/audit"): "admin",
    ("GET", "/ui/keys"): "admin",
    ("POST", "/ui/keys"): "admin",
    ("POST", "/ui/keys/{key_id}/revoke"): "admin",
}
PAGE = 50
MAX_UPLOAD_FILES = 200


async def _user(request: Request) -> dict[str, Any]:
    return await ui_session.check(request, ROLES)


User = Annotated[dict[str, Any], Depends(_user)]
router = APIRouter(prefix="/ui", include_in_schema=False)


def page(request: Request, template: str, user: dict[str, Any] | None, status_code: int = 200, **context: Any):
    nav = [
        ("Ask", "/ui/ask"),
        ("Generations", "/ui/generations"),
        ("Collections", "/ui/collections"),
        ("Datasets", "/ui/datasets"),
        ("Runs", "/ui/runs"),
        ("Models", "/ui/models"),
        ("Evaluations", "/ui/evaluations"),
        ("Analytics", "/ui/analytics"),
    ] + ([("Keys", "/ui/keys"), ("Audit", "/ui/audit")] if user and user["role"] == "admin" else [])
    return templates.TemplateResponse(
        request, template, {"user": user, "nav": nav, "path": request.url.path, **context}, status_code=status_code
    )


def _blank(value: Optional[str]) -> Optional[str]:
    return value.strip() if value and value.strip() else None


# --------------------------------------------------------------------------- login, static


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/ui/ask"):
    token = ui_session.new_login_token()
    response = page(request, "login.html", None, login_token=token, next=_safe_next(next), error=None)
    response.set_cookie(ui_session.LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/ui/login")
    return response


def _safe_next(target: str) -> str:
    """Only a path inside the UI (no open redirect to another site)."""
    return target if target.startswith("/ui") and not target.startswith("//") else "/ui/ask"


@router.post("/login")
def login(request: Request, key: Annotated[str, Form()], csrf: Annotated[str, Form()] = "", next: str = "/ui/ask"):
    import hmac

    from genloom.db.engine import session_scope
    from genloom.errors import Forbidden, Unauthorized
    from genloom.keys import authenticate, issue_session

    expected = request.cookies.get(ui_session.LOGIN_COOKIE) or ""
    if not expected or not hmac.compare_digest(csrf, expected):
        raise Forbidden("missing or wrong CSRF token: reload the login page and try again")
    try:
        with session_scope(purpose="api") as s:
            principal = authenticate(s, key)
            token = issue_session(s, principal)
    except Unauthorized as exc:
        from genloom import audit

        with session_scope(purpose="api") as s:
            audit.record(s, "auth.failure", "POST /ui/login", outcome="refused", detail={"reason": str(exc)})
        fresh = ui_session.new_login_token()
        response = page(
            request,
            "login.html",
            None,
            401,
            login_token=fresh,
            next=_safe_next(next),
            error="That key was not accepted.",
        )
        response.set_cookie(ui_session.LOGIN_COOKIE, fresh, httponly=True, samesite="strict", path="/ui/login")
        return response
    response = RedirectResponse(_safe_next(next), status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(
        ui_session.COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/ui", max_age=12 * 3600
    )
    response.delete_cookie(ui_session.LOGIN_COOKIE, path="/ui/login")
    return response


@router.post("/logout")
def logout(user: User):
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(ui_session.COOKIE, path="/ui")
    return response


@router.get("/static/{name}")
def static(name: str):
    path = STATIC / PurePath(name).name
    if not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


@router.get("")
def home(user: User):
    return RedirectResponse("/ui/ask", status_code=303)


# --------------------------------------------------------------------------- ask


@router.get("/ask", response_class=HTMLResponse)
def ask_page(request: Request, user: User, session: DB):
    from genloom.generation.templates import list_templates
    from genloom.registry import list_models
    from genloom.retrieval.collections import list_collections

    with session.begin():
        collections = list_collections(session)
        template_names = sorted({t.name for t in list_templates(session)})
        models = list_models(session, limit=50)
    return page(request, "ask.html", user, collections=collections, templates=template_names, models=models)


@router.post("/ask")
def ask(
    user: User,
    question: Annotated[str, Form(min_length=1)],
    collection: Annotated[str, Form(min_length=1)],
    template: Annotated[str, Form()] = "",
    model: Annotated[str, Form()] = "",
    k: Annotated[int, Form(ge=1, le=50)] = 5,
):
    """The answer as server-sent events in the OpenAI text-completion chunk shape (the API's own streamer):
    the same logged call as POST /v1/ask, so it shows up under Generations like any other."""
    from genloom.api import request_limits
    from genloom.api.openai_routes import stream_call
    from genloom.generation.backend import GenParams
    from genloom.generation.call import CallRequest

    request_limits.check_query(question)
    request_limits.check_http_model(_blank(model))
    call = CallRequest(
        question=question,
        collection=collection,
        model=_blank(model),
        template=_blank(template),
        k=k,
        params=GenParams(max_new_tokens=256, temperature=0.0),
        user=f"key:{user['key_id']}",
    )
    return stream_call(call, int(time.time()), kind="text", include_usage=True)


@router.get("/chunks/{chunk_id}", response_class=HTMLResponse)
def chunk(request: Request, chunk_id: int, user: User, session: DB):
    from genloom.retrieval.documents import chunk_detail

    with session.begin():
        detail = chunk_detail(session, chunk_id)
    fragment = request.headers.get("hx-request") == "true"  # into the Ask page's side panel
    return page(request, "chunk_body.html" if fragment else "chunk.html", user, chunk=detail)


# --------------------------------------------------------------------------- generations


@router.get("/generations", response_class=HTMLResponse)
def generations(
    request: Request,
    user: User,
    session: DB,
    before: Optional[int] = None,
    model: Optional[str] = None,
    template: Optional[str] = None,
    collection: Optional[str] = None,
    user_id: Annotated[Optional[str], Query(alias="user")] = None,
    since: Optional[str] = None,
    until: Optional[str] = None,
    min_score: Optional[str] = None,
    max_score: Optional[str] = None,
    min_ms: Optional[str] = None,
    max_ms: Optional[str] = None,
    has_feedback: Optional[str] = None,
    abstained: Optional[str] = None,
    status: Optional[str] = None,
):
    from genloom.generation.log import generation_facets, list_generations

    filters = {
        "model": _blank(model),
        "template": _blank(template),
        "collection": _blank(collection),
        "user": _blank(user_id),
        "since": _blank(since),
        "until": _blank(until),
        "min_score": _number(min_score, "min_score"),
        "max_score": _number(max_score, "max_score"),
        "min_ms": _number(min_ms, "min_ms"),
        "max_ms": _number(max_ms, "max_ms"),
        "has_feedback": _yes_no(has_feedback),
        "abstained": _yes_no(abstained),
        "status": _blank(status),
    }
    with session.begin():
        rows = list_generations(session, before=before, limit=PAGE, **filters)
        facets = generation_facets(session)
    query = {k: v for k, v in request.query_params.items() if k != "before" and v}
    return page(
        request,
        "generations.html",
        user,
        rows=rows,
        facets=facets,
        filters=query,
        next_before=rows[-1]["id"] if len(rows) == PAGE else None,
    )


def _number(value: Optional[str], name: str) -> float | None:
    if not _blank(value):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except ValueError:
        raise BadInput(f"{name} must be a number (got {value!r})") from None


def _yes_no(value: Optional[str]) -> bool | None:
    return {"yes": True, "no": False}.get((value or "").lower())


@router.get("/generations/{generation_id}", response_class=HTMLResponse)
def generation(request: Request, generation_id: int, user: User, session: DB):
    from genloom.generation.log import generation_detail

    with session.begin():
        detail = generation_detail(session, generation_id)
    return page(request, "generation.html", user, g=detail)


@router.post("/generations/{generation_id}/feedback")
def rate(
    request: Request,
    generation_id: int,
    user: User,
    session: DB,
    thumbs: Annotated[Optional[str], Form()] = None,
    score: Annotated[Optional[str], Form()] = None,
    comment: Annotated[Optional[str], Form()] = None,
):
    from genloom.generation.feedback import add_feedback

    thumbs_value = {"up": 1, "down": -1}.get(thumbs or "")
    score_value = int(score) if score and score.strip().isdigit() else None
    with session.begin():
        row = add_feedback(
            session,
            generation_id,
            score=score_value,
            thumbs=thumbs_value,
            label=None,
            comment=_blank(comment),
            user=f"key:{user['key_id']}",
        )
        feedback_id = row.id
    if request.headers.get("hx-request") == "true":
        return HTMLResponse(f'<p class="ok" role="status">Feedback #{feedback_id} stored. Thank you.</p>')
    return RedirectResponse(f"/ui/generations/{generation_id}#feedback", status_code=303)


@router.post("/generations/{generation_id}/dataset")
def add_to_dataset(
    generation_id: int,
    user: User,
    session: DB,
    name: Annotated[str, Form(min_length=1, max_length=128)],
    split: Annotated[str, Form()] = "train",
):
    """Question and answer as a text item in a new version of dataset NAME (versions are immutable)."""
    from genloom.datasets.importers import add_generation

    with session.begin():
        added = add_generation(session, generation_id, name.strip(), split=split)
    return RedirectResponse(f"/ui/datasets/{added['dataset']}", status_code=303)


# --------------------------------------------------------------------------- collections and documents


@router.get("/collections", response_class=HTMLResponse)
def collections(request: Request, user: User, session: DB, after: Optional[str] = None):
    from genloom.retrieval.collections import list_collections

    with session.begin():
        rows = list_collections(session, after=_blank(after), limit=PAGE)
    return page(
        request, "collections.html", user, rows=rows, next_after=rows[-1]["name"] if len(rows) == PAGE else None
    )


@router.get("/collections/{name}", response_class=HTMLResponse)
def collection(request: Request, name: str, user: User, session: DB, after: Optional[str] = None, report: str = ""):
    from genloom.retrieval.collections import collection_summary, get_collection
    from genloom.retrieval.documents import list_documents

    with session.begin():
        found = get_collection(session, name)
        summary = collection_summary(session, found)
        docs = list_documents(session, found.id, limit=PAGE, after=_blank(after))
    return page(
        request,
        "collection.html",
        user,
        name=name,
        summary=summary,
        docs=docs,
        next_after=docs[-1]["external_id"] if len(docs) == PAGE else None,
        report=report,
    )


@router.get("/collections/{name}/document", response_class=HTMLResponse)
def document(request: Request, name: str, ref: str, user: User, session: DB, after: Optional[int] = None):
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.documents import document_chunks, document_detail

    with session.begin():
        found = get_collection(session, name)
        detail = document_detail(session, found.id, ref)
        current = detail["versions"][-1]["id"]
        chunks = document_chunks(session, current, after=after, limit=PAGE)
    return page(
        request,
        "document.html",
        user,
        name=name,
        doc=detail,
        chunks=chunks,
        next_after=chunks[-1]["ordinal"] if len(chunks) == PAGE else None,
    )


@router.get("/collections/{name}/search", response_class=HTMLResponse)
def search(
    request: Request,
    name: str,
    user: User,
    session: DB,
    q: str = "",
    where: str = "",
    k: Annotated[int, Query(ge=1, le=50)] = 5,
    rerank: str = "",
    no_rerank: bool = False,
):
    """The three retrieval modes side by side, with `--where` filters (one per line), and the hybrid list
    reordered by a reranker (the one named, else the collection's default) as `search --rerank` does."""
    from genloom.api import request_limits
    from genloom.retrieval.filters import parse_where
    from genloom.retrieval.rerank import search_reranked
    from genloom.retrieval.search import MODES, search as run_search

    results: dict[str, list] = {}
    reranked: dict[str, Any] | None = None
    if q.strip():
        request_limits.check_query(q)
        filters = parse_where([line.strip() for line in where.splitlines() if line.strip()])
        with session.begin():
            for mode in MODES:
                results[mode] = [
                    h.to_dict() for h in run_search(session, q, collection=name, k=k, mode=mode, where=filters)
                ]
            hits, info = search_reranked(
                session, q, collection=name, k=k, rerank_model=rerank.strip() or None,
                use_default=not no_rerank, mode="hybrid", where=filters,
            )  # fmt: skip
            if info.get("reranker"):
                reranked = {**info, "hits": [h.to_dict() for h in hits]}
    return page(
        request, "search.html", user, name=name, q=q, where=where, k=k, rerank=rerank, no_rerank=no_rerank,
        results=results, reranked=reranked,
    )  # fmt: skip


@router.post("/collections/{name}/upload")
async def upload(request: Request, name: str, user: User):
    """Files (or a folder's files) through the same ingest pipeline as `genloom ingest`, with its report."""
    from fastapi.concurrency import run_in_threadpool

    form = await request.form()
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    if not files:
        raise BadInput("choose at least one file to upload")
    if len(files) > MAX_UPLOAD_FILES:
        raise BadInput(f"at most {MAX_UPLOAD_FILES} files per upload (got {len(files)})")
    with tempfile.TemporaryDirectory(prefix="genloom-upload-") as folder:
        for f in files:
            # A folder upload sends 'dir/sub/file.md': keep the relative path, never leave the folder.
            parts = [p for p in PurePath(f.filename or "").parts if p not in ("", ".", "..", "/")]
            if not parts:
                continue
            target = Path(folder, *parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(await f.read())
        result = await run_in_threadpool(_ingest_folder, folder, name)
    return page(request, "upload_report.html", user, name=name, report=result)


def _ingest_folder(folder: str, collection: str) -> dict[str, Any]:
    from ingest.pipeline import IngestOptions, ingest

    result = ingest([folder], IngestOptions(collection=collection))
    out = result.to_json(limit=50)
    out["summary_line"] = result.summary_line()
    for problem in out["problems"]:  # the temporary folder means nothing to the user
        problem["path"] = str(Path(problem["path"]).relative_to(folder)) if problem["path"].startswith(folder) else ""
    return out


@router.post("/collections/{name}/document/delete")
def delete_document_page(name: str, user: User, session: DB, ref: Annotated[str, Form()]):
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.documents import delete_document

    with session.begin():
        delete_document(session, get_collection(session, name).id, ref)
    return RedirectResponse(f"/ui/collections/{name}", status_code=303)


@router.post("/collections/{name}/document/metadata")
def set_metadata_page(
    name: str,
    user: User,
    session: DB,
    ref: Annotated[str, Form()],
    key: Annotated[str, Form(min_length=1)],
    value: Annotated[str, Form()] = "",
):
    from urllib.parse import quote

    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.documents import set_metadata

    with session.begin():  # an empty value removes the key
        set_metadata(session, get_collection(session, name).id, ref, {key: value or None})
    return RedirectResponse(f"/ui/collections/{name}/document?ref={quote(ref, safe='')}", status_code=303)


# --------------------------------------------------------------------------- datasets


@router.get("/datasets", response_class=HTMLResponse)
def datasets(request: Request, user: User, session: DB, after: Optional[str] = None):
    from genloom.datasets.versions import list_versions

    with session.begin():
        rows = list_versions(session, after=_blank(after), limit=PAGE)
    return page(request, "datasets.html", user, rows=rows, next_after=rows[-1]["ref"] if len(rows) == PAGE else None)


@router.get("/datasets/diff", response_class=HTMLResponse)
def dataset_diff(request: Request, user: User, session: DB, a: str, b: str):
    from genloom.datasets.versions import diff_versions, resolve_version

    with session.begin():
        diff = diff_versions(
            session, resolve_version(session, a, sealed_only=False), resolve_version(session, b, sealed_only=False)
        )
    return page(request, "dataset_diff.html", user, a=a, b=b, diff=diff)


@router.get("/datasets/{ref}", response_class=HTMLResponse)
def dataset(request: Request, ref: str, user: User, session: DB, after: Optional[int] = None):
    import base64

    from genloom.datasets.items import image_png, item_text
    from genloom.datasets.versions import resolve_version, version_items, version_lineage, version_summary

    with session.begin():
        version = resolve_version(session, ref, sealed_only=False)
        summary = version_summary(session, version)
        lineage = version_lineage(session, version)
        items = version_items(session, version, after=after, limit=48)
    for item in items:
        payload = item.pop("payload")
        if item["modality"] == "image" and item["shape"]:
            item["png"] = base64.b64encode(image_png(payload, item["shape"], item["dtype"])).decode()
        elif item["modality"] == "text":
            item["preview"] = item_text(item["text"], payload)[:300]
    return page(
        request,
        "dataset.html",
        user,
        ref=ref,
        summary=summary,
        lineage=lineage,
        items=items,
        next_after=items[-1]["item_id"] if len(items) == 48 else None,
    )


# --------------------------------------------------------------------------- runs, models, evaluations


@router.get("/runs", response_class=HTMLResponse)
def runs(request: Request, user: User, session: DB, before: Optional[int] = None, kind: str = "", status: str = ""):
    from genloom.runs import list_runs

    with session.begin():
        rows = list_runs(session, before=before, limit=PAGE, kind=_blank(kind), status=_blank(status))
    return page(
        request,
        "runs.html",
        user,
        rows=rows,
        kind=kind,
        status=status,
        next_before=rows[-1]["id"] if len(rows) == PAGE else None,
    )


@router.get("/runs/compare", response_class=HTMLResponse)
def compare_runs(request: Request, user: User, session: DB, a: int, b: int):
    from genloom.runs import run_detail

    with session.begin():
        first, second = run_detail(session, a), run_detail(session, b)
    names = sorted(set(first["curves"]) | set(second["curves"]))
    finals = sorted(set(first["final_metrics"]) | set(second["final_metrics"]))
    return page(request, "compare.html", user, a=first, b=second, names=names, finals=finals)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run(request: Request, run_id: int, user: User, session: DB):
    from genloom.runs import run_detail

    with session.begin():
        detail = run_detail(session, run_id)
    return page(request, "run.html", user, run=detail)


@router.get("/models", response_class=HTMLResponse)
def models(request: Request, user: User, session: DB, before: Optional[int] = None):
    from genloom.registry import list_models

    with session.begin():
        rows = list_models(session, before=before, limit=PAGE)
    return page(request, "models.html", user, rows=rows, next_before=rows[-1]["id"] if len(rows) == PAGE else None)


@router.get("/evaluations", response_class=HTMLResponse)
def evaluations(request: Request, user: User, session: DB, before: Optional[int] = None):
    """Evaluation runs (retrieval, RAG, models) newest first, each with its final metrics."""
    from genloom.runs import list_runs, run_detail

    with session.begin():
        rows = list_runs(session, before=before, limit=PAGE, kind="evaluate")
        for row in rows:
            row["final_metrics"] = run_detail(session, row["id"])["final_metrics"]
    return page(
        request,
        "evaluations.html",
        user,
        rows=rows,
        charts=_metrics_over_runs(rows),
        next_before=rows[-1]["id"] if len(rows) == PAGE else None,
    )


def _evaluation_suite(run: dict[str, Any]) -> str:
    """What a line on an evaluation chart follows: the same evaluation repeated over time."""
    params = run["params"] or {}
    if params.get("evaluation") == "rag":
        return f"rag:{params.get('collection')}:{params.get('model') or 'default'}"
    return run["name"] or str(params.get("what") or "evaluate")


def _metrics_over_runs(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{metric: {suite: [(run id, value), ...]}}, oldest run first: one chart per metric, one line per suite."""
    charts: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for run in reversed(rows):
        for metric, value in run["final_metrics"].items():
            charts.setdefault(metric, {}).setdefault(_evaluation_suite(run), []).append((run["id"], value))
    return dict(sorted(charts.items()))


# How each documented view is paged: (ordering column, whether it is unique). A unique column gives a
# keyset "next page"; over a column that repeats (several rows per day or per run) the page is the top rows.
ANALYTICS_VIEWS: dict[str, tuple[str, bool]] = {
    "v_model_stats": ("generations", False),
    "v_template_stats": ("generations", False),
    "v_daily": ("day", True),
    "v_model_daily": ("day", False),
    "v_chunk_citations": ("chunk_id", True),
    "v_document_citations": ("document_id", True),
    "v_documents_never_cited": ("document_id", True),
    "v_feedback_explained": ("feedback_id", True),
    "v_feedback_sources": ("feedback_id", False),
    "v_dataset_versions": ("version_id", True),
    "v_dataset_items": ("version_id", False),
    "v_dataset_lineage": ("version_id", False),
    "v_run_final_metrics": ("run_id", False),
    "v_runs": ("run_id", True),
    "v_leaderboard": ("metric", False),
    "v_audit_log": ("id", True),
}
CELL_CHARS = 200  # long text (answers, questions, JSON) is cut in a table cell


@router.get("/analytics", response_class=HTMLResponse)
def analytics(request: Request, user: User, session: DB, before: Optional[str] = None):
    from genloom.analytics.summary import view_page
    from genloom.analytics.views import VIEWS

    with session.begin():
        daily = view_page(session, "v_daily", key="day", after=_blank(before), limit=60)
        models = view_page(session, "v_model_stats", key="generations", limit=20)
        template_stats = view_page(session, "v_template_stats", key="generations", limit=20)
    series = {
        "generations": [(i, float(d["generations"])) for i, d in enumerate(reversed(daily))],
        "errors": [(i, float(d["errors"])) for i, d in enumerate(reversed(daily))],
    }
    return page(
        request,
        "analytics.html",
        user,
        daily=daily,
        models=models,
        template_stats=template_stats,
        series=series,
        views=VIEWS,
        next_before=daily[-1]["day"] if len(daily) == 60 else None,
    )


@router.get("/analytics/views/{view}", response_class=HTMLResponse)
def analytics_view(request: Request, view: str, user: User, session: DB, after: Optional[str] = None):
    """One documented view as a table: a keyset page over its unique column, else its top rows."""
    from genloom.analytics.summary import view_page
    from genloom.analytics.views import VIEWS

    if view not in ANALYTICS_VIEWS:
        raise NotFound(f"no documented view {view!r}; see /ui/analytics")
    key, unique = ANALYTICS_VIEWS[view]
    with session.begin():
        rows = view_page(session, view, key=key, after=_blank(after) if unique else None, limit=PAGE)
    for row in rows:
        for column, value in row.items():
            if isinstance(value, (dict, list)):
                value = json.dumps(value, default=str, ensure_ascii=False)
            if isinstance(value, str) and len(value) > CELL_CHARS:
                value = value[:CELL_CHARS] + "…"
            row[column] = value
    return page(
        request,
        "analytics_view.html",
        user,
        view=view,
        description=VIEWS[view],
        key=key,
        unique=unique,
        rows=rows,
        next_after=rows[-1][key] if unique and len(rows) == PAGE else None,
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, user: User, session: DB, before: Optional[int] = None):
    from genloom.audit import list_entries

    with session.begin():
        rows = list_entries(session, limit=PAGE, before=before)
    return page(request, "audit.html", user, rows=rows, next_before=rows[-1]["id"] if len(rows) == PAGE else None)


# --------------------------------------------------------------------------- keys (admin)


@router.get("/keys", response_class=HTMLResponse)
def keys_page(request: Request, user: User, session: DB, show_all: Annotated[bool, Query(alias="all")] = False):
    """The tenant's API keys (never a secret: only its salted hash is stored), a create form, revoke buttons."""
    from genloom.keys import list_keys

    with session.begin():
        rows = list_keys(session, include_revoked=show_all, tenant=user["tenant"])
    return page(request, "keys.html", user, rows=rows, show_all=show_all, new_key=None)


@router.post("/keys", response_class=HTMLResponse)
def create_key_page(
    request: Request,
    user: User,
    session: DB,
    role: Annotated[str, Form()],
    expires: Annotated[str, Form()] = "",
    note: Annotated[str, Form(max_length=200)] = "",
):
    """A key for the admin's own tenant, audited as `genloom keys create`; its secret is shown once, never stored."""
    from genloom.keys import create_key, list_keys

    with session.begin():
        new = create_key(session, role=role, tenant=user["tenant"], expires=_blank(expires), note=_blank(note))
    with session.begin():
        rows = list_keys(session, tenant=user["tenant"])
    response = page(request, "keys.html", user, rows=rows, show_all=False, new_key=new)
    response.headers["Cache-Control"] = "no-store"  # the one page that holds a secret stays out of caches
    return response


@router.post("/keys/{key_id}/revoke")
def revoke_key_page(key_id: int, user: User, session: DB):
    """Revoke one of the tenant's keys (its sessions end at once), audited as `genloom keys revoke`."""
    from genloom.keys import revoke_key

    with session.begin():
        revoke_key(session, str(key_id), tenant=user["tenant"])
    return RedirectResponse("/ui/keys", status_code=303)
