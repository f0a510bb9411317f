"""`genloom collections …` and `genloom documents …`: manage what was ingested (parsing and rendering only)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.table import Table

from genloom.cli.output import WHERE_HELP, JsonOption, console, info, print_json

collections_app = typer.Typer(help="Collections: list, show, set, rename, delete.", no_args_is_help=True)
documents_app = typer.Typer(
    help="Documents of a collection: list, show, delete (retire or purge), set-meta.", no_args_is_help=True
)
CollectionOption = Annotated[str, typer.Option("--collection", "-c", help="The collection.")]
DocArgument = Annotated[str, typer.Argument(help="Document: its id, external id, or file path.")]


@collections_app.command("list")
def collections_list(json_out: JsonOption = False) -> None:
    """Every collection with its document and chunk counts."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import list_collections

    with session_scope() as s:
        rows = list_collections(s)
    if json_out:
        print_json(rows)
        return
    table = Table("name", "documents", "retired", "chunks", "embedding model", "text search", "created")
    for r in rows:
        table.add_row(
            r["name"],
            str(r["documents"]),
            str(r["retired"]),
            str(r["chunks"]),
            r["embedding_model"] or "-",
            r["text_search_config"],
            r["created_at"].strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@collections_app.command("show")
def collections_show(
    name: Annotated[str, typer.Argument(help="Collection name.")], json_out: JsonOption = False
) -> None:
    """Counts and BM25 statistics of one collection."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import collection_summary, datasets_from_collection, get_collection

    with session_scope() as s:
        summary = collection_summary(s, get_collection(s, name))
        summary["datasets_imported_from_it"] = datasets_from_collection(s, name)
    if json_out:
        print_json(summary)
        return
    for key, value in summary.items():
        console.print(f"{key}: {value}", highlight=False, markup=False)


@collections_app.command("set")
def collections_set(
    name: Annotated[str, typer.Argument(help="Collection.")],
    embedding_model: Annotated[
        Optional[str],
        typer.Option("--embedding-model", help="Default embedding model (one with vectors for every chunk here)."),
    ] = None,
    reranker: Annotated[
        Optional[str], typer.Option("--reranker", help="Default reranker for search and ask (registered NAME[@V]).")
    ] = None,
    rerank_depth: Annotated[
        Optional[int], typer.Option("--rerank-depth", help="How many top hits the default reranker rescores.")
    ] = None,
    no_reranker: Annotated[bool, typer.Option("--no-reranker", help="Remove the default reranker.")] = False,
    reader: Annotated[
        Optional[str],
        typer.Option("--reader", help="Default reader: ask answers with it when no --model is given (NAME[@V])."),
    ] = None,
    no_reader: Annotated[bool, typer.Option("--no-reader", help="Remove the default reader.")] = False,
    eval_run: Annotated[
        Optional[int],
        typer.Option(
            "--eval-run", help="The evaluate run that justifies the switch (genloom eval retrieval --compare)."
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Switch a collection's default embedding model, reranker or reader; recorded in the audit log (who, when, which eval run)."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import set_defaults

    with session_scope() as s:
        result = set_defaults(
            s,
            name,
            embedding_model=embedding_model,
            reranker=reranker,
            rerank_depth=rerank_depth,
            no_reranker=no_reranker,
            reader=reader,
            no_reader=no_reader,
            eval_run=eval_run,
        )
    if json_out:
        print_json(result)
        return
    changed = ", ".join(f"{k} → {v}" for k, v in result["set"].items())
    justified = f" (justified by eval run {eval_run})" if eval_run is not None else " (no --eval-run given)"
    info(f"collection {name!r}: {changed}{justified}")


@collections_app.command("rename")
def collections_rename(
    name: Annotated[str, typer.Argument(help="Current name.")],
    new_name: Annotated[str, typer.Argument(help="New name.")],
    json_out: JsonOption = False,
) -> None:
    """Rename a collection (sessions, runs and documents follow: they refer to it by id)."""
    from genloom.retrieval.collections import rename_collection
    from genloom.retrieval.documents import record_change

    result = record_change(
        "rename", name, lambda s, cid, run: {"from": name, "to": rename_collection(s, name, new_name).name}, to=new_name
    )
    if json_out:
        print_json(result)
    else:
        info(f"collection {name!r} renamed to {new_name!r} (run {result['run_id']})")


@collections_app.command("delete")
def collections_delete(
    name: Annotated[str, typer.Argument(help="Collection to delete, with all its documents.")],
    force: Annotated[bool, typer.Option("--force", help="Delete even though datasets were imported from it.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Delete a collection for good (asks first; --yes skips the question); generations that cited it
    keep their answers and a tombstone per source."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import collection_summary, get_collection
    from genloom.retrieval.documents import delete_collection, record_change

    if not yes:
        with session_scope() as s:
            summary = collection_summary(s, get_collection(s, name))
        message = (
            f"deleting collection {name!r} removes {summary.get('document_versions', 0)} document versions "
            f"and {summary.get('chunks') or 0} chunks for good"
        )
        _confirm_or_refuse(message, json_out=json_out)
    result = record_change(
        "delete collection", name, lambda s, cid, run: delete_collection(s, name, force=force, run_id=run), force=force
    )
    if json_out:
        print_json(result)
    else:
        info(
            f"collection {name!r} deleted: {result['documents']} document versions, {result['chunks']} chunks; "
            f"{result['generations_citing']} generations keep a tombstone for their sources (run {result['run_id']})"
        )


def _confirm_or_refuse(message: str, *, json_out: bool) -> None:
    """Ask on a terminal; with --json or no terminal to ask on, refuse in one line naming --yes."""
    from genloom.errors import BadInput

    if json_out or not sys.stdin.isatty():
        raise BadInput(f"{message}: confirm with --yes")
    if not typer.confirm(message + ". Continue?", err=True):
        raise BadInput(f"{message}: not confirmed (nothing deleted)")


@documents_app.command("list")
def documents_list(
    collection: CollectionOption,
    retired: Annotated[
        bool, typer.Option("--include-retired", "--retired", help="Also list retired documents.")
    ] = False,
    only_retired: Annotated[bool, typer.Option("--only-retired", help="List retired documents only.")] = False,
    where: Annotated[Optional[list[str]], typer.Option("--where", help=WHERE_HELP)] = None,
    limit: Annotated[int, typer.Option("--limit", help="Most rows (says so when there are more).")] = 100,
    offset: Annotated[int, typer.Option("--offset", help="Skip this many rows first (the next page).")] = 0,
    json_out: JsonOption = False,
) -> None:
    """Current documents of a collection (--include-retired: retired ones too; --only-retired: those alone)."""
    from genloom.db.engine import session_scope
    from genloom.errors import BadInput
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.documents import list_documents
    from genloom.retrieval.filters import parse_where

    if limit < 1 or offset < 0:
        raise BadInput("--limit must be at least 1 and --offset at least 0")
    status = "retired" if only_retired else ("any" if retired else "current")
    with session_scope() as s:
        rows = list_documents(
            s, get_collection(s, collection).id, status=status, where=parse_where(where), limit=limit + 1, offset=offset
        )
    more = len(rows) > limit  # one row past the page tells us there is a next one
    rows = rows[:limit]
    if json_out:
        print_json(rows)
    else:
        table = Table("id", "external id", "v", "title", "chunks", "status")
        for r in rows:
            table.add_row(
                str(r["id"]), r["external_id"], str(r["version"]), r["title"] or "", str(r["chunks"]), r["status"]
            )
        console.print(table)
    if more:
        info(f"more documents: rows {offset + 1}-{offset + limit} shown; the next page: --offset {offset + limit}")


@documents_app.command("show")
def documents_show(collection: CollectionOption, document: DocArgument, json_out: JsonOption = False) -> None:
    """A document's versions, metadata, and the generations that cited it."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.documents import document_detail

    with session_scope() as s:
        detail = document_detail(s, get_collection(s, collection).id, document)
    if json_out:
        print_json(detail)
        return
    console.print(f"[bold]{detail['title'] or detail['external_id']}[/bold] · {detail['status']}", highlight=False)
    console.print(f"external id: {detail['external_id']}", highlight=False, markup=False)
    console.print(f"metadata: {detail['metadata']}", highlight=False, markup=False)
    for v in detail["versions"]:
        console.print(f"  v{v['version']} (id {v['id']}): {v['chunks']} chunks, {v['status']}", highlight=False)
    if detail["cited_by_generations"]:
        console.print(f"cited by generations: {', '.join(map(str, detail['cited_by_generations']))}", highlight=False)


@documents_app.command("delete")
def documents_delete(
    collection: CollectionOption,
    document: DocArgument,
    purge: Annotated[
        bool, typer.Option("--purge", help="Remove every version's rows for good (cited sources keep a tombstone).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Purge without asking.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Retire a document (kept for past citations, no longer searchable), or --purge it."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.documents import _document_versions, delete_document, purge_impact, record_change

    if purge and not yes:
        with session_scope() as s:
            ids = [v["id"] for v in _document_versions(s, get_collection(s, collection).id, document)]
            impact = purge_impact(s, ids)
        message = (
            f"purge removes {impact['documents']} versions and {impact['chunks']} chunks for good; "
            f"{impact['generations_citing']} generations cite them and will keep only a tombstone"
        )
        _confirm_or_refuse(message, json_out=json_out)
    result = record_change(
        "purge" if purge else "retire",
        collection,
        lambda s, cid, run: delete_document(s, cid, document, purge=purge, run_id=run),
        document=document,
    )
    if json_out:
        print_json(result)
    elif purge:
        info(
            f"purged {result['external_id']}: {result['versions']} versions, {result['chunks']} chunks; "
            f"{result['generations_citing']} generations keep a tombstone (run {result['run_id']})"
        )
    else:
        info(f"retired {result['external_id']}: no longer searchable, kept for past citations (run {result['run_id']})")


@documents_app.command("set-meta")
def documents_set_meta(
    collection: CollectionOption,
    args: Annotated[
        list[str], typer.Argument(help="DOC then key=value… (key= removes a key); with --where, key=value… only.")
    ],
    where: Annotated[
        Optional[list[str]], typer.Option("--where", help="Change every current document matching this: " + WHERE_HELP)
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Set metadata on a document's current version, or with --where on every current document that
    matches, in one transaction (new versions of their files inherit it; nothing is re-embedded)."""
    from genloom.errors import BadInput
    from genloom.retrieval.documents import record_change, set_metadata, set_metadata_where
    from genloom.retrieval.filters import parse_where

    document: str = "" if where else args[0]
    pairs = args if where else args[1:]
    changes: dict[str, str | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"set-meta expects key=value (got {pair!r})")
        changes[key.strip()] = value if value != "" else None
    if where:
        filter_doc = parse_where(where)
        result = record_change(
            "set-meta",
            collection,
            lambda s, cid, run: set_metadata_where(s, cid, filter_doc, changes, run_id=run),
            where=where,
            changes=changes,
        )
        if json_out:
            print_json(result)
        else:
            info(f"{result['documents']} documents: set {changes} (run {result['run_id']})")
        return
    result = record_change(
        "set-meta",
        collection,
        lambda s, cid, run: set_metadata(s, cid, document, changes, run_id=run),
        document=document,
        changes=changes,
    )
    if json_out:
        print_json(result)
    else:
        info(f"{result['external_id']}: metadata now {result['metadata']} (run {result['run_id']})")


def register(app: typer.Typer) -> None:
    app.add_typer(collections_app, name="collections")
    app.add_typer(documents_app, name="documents")
