"""`genloom ask | generate | feedback | generations | sessions | templates`: parsing and rendering only."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from genloom.cli.output import WHERE_HELP, WHERE_JSON_HELP, JsonOption, console, info, print_json

generations_app = typer.Typer(
    help="The generation log: one generation with its sources and feedback.", no_args_is_help=True
)
sessions_app = typer.Typer(help="Conversations: the turns of a session.", no_args_is_help=True)
templates_app = typer.Typer(help="Named, versioned prompt templates.", no_args_is_help=True)

ModelOption = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="extractive (no LM), a local Hugging Face model directory, or a registry model NAME\\[@V]. "
        "Default: $GENLOOM_MODEL, else extractive.",
    ),
]
SessionOption = Annotated[Optional[int], typer.Option("--session", help="Continue this session (conversation) id.")]
MaxNewOption = Annotated[int, typer.Option("--max-new-tokens", help="Most tokens to generate.")]
TemperatureOption = Annotated[float, typer.Option("--temperature", help="Sampling temperature; 0 = greedy.")]
TopPOption = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass (with temperature > 0).")]
SeedOption = Annotated[Optional[int], typer.Option("--seed", help="Random seed for sampling.")]
StopOption = Annotated[Optional[list[str]], typer.Option("--stop", help="Stop at this string (repeatable).")]
NoStreamOption = Annotated[
    bool, typer.Option("--no-stream", help="Print the answer when complete instead of as it is generated.")
]
UserOption = Annotated[Optional[str], typer.Option("--user", help="Who is asking (recorded with the prompt).")]


def _via_server(request):
    """The call run by `genloom serve` on the same store, if one is up (it holds the models); else None."""
    import dataclasses
    import types

    from genloom.api.local import ServerGone, find_server
    from genloom.db.tenancy import current_tenant
    from genloom.generation.backend import Source

    server = find_server()
    if server is None or server.tenant != current_tenant():
        return None  # no server, or one working for another tenant: the call runs here, as this user's tenant
    from genloom.generation.resolve import default_model

    request.params.validate()  # bad options fail with the same message as without a server
    body = {k: v for k, v in dataclasses.asdict(request).items() if k not in ("params", "history", "mode")}
    body.update(dataclasses.asdict(request.params))
    body["model"] = request.model or default_model()  # this process's default, not the server's
    # What the call needs from this user's environment travels with it; the server's never stands in.
    if Path(body["model"]).expanduser().is_dir():  # a relative model folder means this shell's folder
        body["model"] = str(Path(body["model"]).expanduser().resolve())
    from genloom.db.engine import session_scope
    from genloom.generation.resolve import api_key_env_needed

    with session_scope() as s:
        key_env = api_key_env_needed(s, body["model"])
    if key_env:
        key = os.environ.get(key_env)
        if not key:
            return None  # run here, so the error names this user's missing variable
        body["endpoint_api_key"] = key
    try:
        out = server.ask(body)
    except ServerGone:
        return None
    payload = {
        k: out[k]
        for k in ("generation_id", "session_id", "prompt_id", "answer", "citations", "model", "timings_ms", "tokens")
    }
    if out.get("abstention"):
        payload["abstention"] = out["abstention"]
    return types.SimpleNamespace(
        **payload,
        abstention=out.get("abstention"),
        status=out["status"],
        error=out["error"],
        sources=[Source(**s) for s in out["sources"]],  # the real type: its `location` is a property
        as_json=lambda: payload,
    )


def _run_call(request, *, stream: bool, json_out: bool) -> None:
    from genloom.db.engine import session_scope
    from genloom.errors import GenloomError
    from genloom.generation.backend import describe_abstention
    from genloom.generation.call import ask as ask_call

    streamed = {"any": False}

    def on_text(piece: str) -> None:
        streamed["any"] = True
        sys.stdout.write(piece)
        sys.stdout.flush()

    result = _via_server(request)
    live = stream and not json_out and result is None  # a server's answer arrives whole
    if result is None:
        with session_scope() as session:
            result = ask_call(session, request, on_text=on_text if live else None)
    # Committed: a failed generation is in the log as status 'error', and still an error here.
    if result.status == "error":
        if streamed["any"]:
            sys.stdout.write("\n")
        raise GenloomError(f"generation {result.generation_id} failed: {result.error}")
    if json_out:
        print_json(result.as_json())
        return
    if live:
        sys.stdout.write("\n")
    else:
        sys.stdout.write(result.answer + "\n")
    if result.sources:
        cited = {c["n"] for c in result.citations}
        lines = ["", "Sources:"]
        for s in result.sources:
            mark = "*" if s.n in cited else " "
            lines.append(f"{mark}[{s.n}] {s.location}")
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    if result.abstention:
        info(f"[dim]abstained: {describe_abstention(result.abstention)}[/dim]")
    t = result.timings_ms
    info(
        f"[dim]generation {result.generation_id} · session {result.session_id} · {result.model} · "
        f"{t['total']:.0f} ms (retrieval {t['retrieval']:.0f}, "
        + (f"rerank {t['rerank']:.0f}, " if t.get("rerank") is not None else "")
        + f"generation {t['generation']:.0f}) · "
        f"tokens {result.tokens['input']} in, {result.tokens['output']} out[/dim]"
    )


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to retrieve from.")],
    model: ModelOption = None,
    session_id: SessionOption = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Chunks to retrieve.")] = 5,
    where: Annotated[Optional[list[str]], typer.Option("--where", help=WHERE_HELP)] = None,
    where_json: Annotated[Optional[str], typer.Option("--where-json", help=WHERE_JSON_HELP)] = None,
    embedding_model: Annotated[
        Optional[str],
        typer.Option(
            "--embedding-model", help="Retrieve with another model that has vectors here (see genloom embed)."
        ),
    ] = None,
    rerank: Annotated[
        Optional[str], typer.Option("--rerank", help="Rerank the retrieved hits with this reranker NAME[@V].")
    ] = None,
    rerank_depth: Annotated[
        Optional[int], typer.Option("--rerank-depth", help="How many top hits the reranker rescores (default 50).")
    ] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Skip the collection's default reranker.")] = False,
    max_new_tokens: MaxNewOption = 256,
    temperature: TemperatureOption = 0.0,
    top_p: TopPOption = 1.0,
    seed: SeedOption = None,
    stop: StopOption = None,
    template: Annotated[
        Optional[str], typer.Option("--template", help="Prompt template NAME, NAME@V or NAME@LABEL (default: default).")
    ] = None,
    user: UserOption = None,
    no_stream: NoStreamOption = False,
    json_out: JsonOption = False,
) -> None:
    """Answer QUESTION from a collection, with numbered citations; the call is logged."""
    from genloom.generation.backend import GenParams
    from genloom.generation.call import CallRequest
    from genloom.retrieval.filters import combine, parse_where, parse_where_json

    request = CallRequest(
        question=question,
        collection=collection,
        model=model,
        session_id=session_id,
        k=k,
        where=combine(parse_where(where), parse_where_json(where_json)),
        embedding_model=embedding_model,
        rerank=rerank,
        rerank_depth=rerank_depth,
        no_rerank=no_rerank,
        template=template,
        params=GenParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stop or []
        ),
        user=user,
    )
    _run_call(request, stream=not no_stream, json_out=json_out)


def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt (no retrieval).")],
    model: ModelOption = None,
    session_id: SessionOption = None,
    system: Annotated[Optional[str], typer.Option("--system", help="A system message.")] = None,
    max_new_tokens: MaxNewOption = 256,
    temperature: TemperatureOption = 0.0,
    top_p: TopPOption = 1.0,
    seed: SeedOption = None,
    stop: StopOption = None,
    user: UserOption = None,
    no_stream: NoStreamOption = False,
    json_out: JsonOption = False,
) -> None:
    """Generate from PROMPT with a model, without retrieval; the call is logged like `ask`."""
    from genloom.generation.backend import GenParams
    from genloom.generation.call import CallRequest

    request = CallRequest(
        question=prompt,
        model=model,
        session_id=session_id,
        system=system,
        params=GenParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stop or []
        ),
        user=user,
    )
    _run_call(request, stream=not no_stream, json_out=json_out)


def feedback(
    generation_id: Annotated[int, typer.Argument(help="The generation the feedback is about.")],
    score: Annotated[Optional[int], typer.Option("--score", help="1 (bad) to 5 (good).")] = None,
    up: Annotated[bool, typer.Option("--up", help="Thumbs up.")] = False,
    down: Annotated[bool, typer.Option("--down", help="Thumbs down.")] = False,
    label: Annotated[Optional[str], typer.Option("--label", help="A label, e.g. 'wrong-source'.")] = None,
    comment: Annotated[Optional[str], typer.Option("--comment", help="Free text.")] = None,
    user: UserOption = None,
    json_out: JsonOption = False,
) -> None:
    """Record feedback on a generation (--score 1..5, --up or --down)."""
    from genloom.db.engine import session_scope
    from genloom.errors import BadInput
    from genloom.generation.feedback import add_feedback, feedback_json

    if up and down:
        raise BadInput("give --up or --down, not both")
    if score is None and not (up or down):
        raise BadInput("give --score 1..5, --up or --down")
    thumbs = 1 if up else (-1 if down else None)
    with session_scope() as session:
        row = feedback_json(
            add_feedback(session, generation_id, score=score, thumbs=thumbs, label=label, comment=comment, user=user)
        )
    if json_out:
        print_json(row)
    else:
        info(f"feedback {row['feedback_id']} recorded on generation {generation_id}")


@generations_app.command("show")
def generations_show(
    generation_id: Annotated[int, typer.Argument(help="Generation id.")],
    json_out: JsonOption = False,
) -> None:
    """The prompt, answer, sources (with per-retriever ranks) and feedback of a generation."""
    from genloom.db.engine import session_scope
    from genloom.generation.log import generation_detail

    with session_scope() as session:
        detail = generation_detail(session, generation_id)
    if json_out:
        print_json(detail)
        return
    console.print(
        f"[bold]generation {detail['generation_id']}[/bold] · session {detail['session_id']} · "
        f"{detail['model']} · {detail['status']}",
        highlight=False,
    )
    console.print(f"[bold]Q:[/bold] {escape(detail['prompt'])}", highlight=False)
    console.print(
        f"A: {detail['answer'] if detail['status'] == 'ok' else detail['error']}", highlight=False, markup=False
    )
    if detail["sources"]:
        table = Table("n", "cited", "source", "fused", "bm25 rank", "vector rank")
        for s in detail["sources"]:
            where = s["location"] + (" (purged)" if s.get("tombstone") else "")
            table.add_row(
                str(s["n"]),
                {True: "yes", False: "no"}.get(s["cited"], "?"),
                where,
                f"{s['score']:.4f}" if s["score"] is not None else "",
                str(s["bm25_rank"] or ""),
                str(s["vector_rank"] or ""),
            )
        console.print(table)
    for f in detail["feedback"]:
        thumbs = {1: "👍", -1: "👎"}.get(f["thumbs"], "")
        console.print(
            f"feedback: {f['score'] or ''} {thumbs} {f['label'] or ''} {f['comment'] or ''}".rstrip(), markup=False
        )


@sessions_app.command("show")
def sessions_show(
    session_id: Annotated[int, typer.Argument(help="Session id.")],
    json_out: JsonOption = False,
) -> None:
    """The turns of a session in order."""
    from genloom.db.engine import session_scope
    from genloom.generation.log import session_detail

    with session_scope() as session:
        detail = session_detail(session, session_id)
    if json_out:
        print_json(detail)
        return
    console.print(
        f"[bold]session {detail['session_id']}[/bold] · collection {detail['collection'] or '-'}", highlight=False
    )
    for turn in detail["turns"]:
        console.print(f"[bold]Q{turn['prompt_id']}:[/bold] {escape(turn['question'])}", highlight=False)
        answer = turn["answer"] if turn["status"] == "ok" else f"[error] {turn['error']}"
        console.print(f"  A (generation {turn['generation_id']}): {answer}", highlight=False, markup=False)


@templates_app.command("add")
def templates_add(
    name: Annotated[str, typer.Argument(help="Template name; adding again makes the next version.")],
    file: Annotated[Path, typer.Option("--file", "-f", help="Template text with {sources} and {question}.")],
    json_out: JsonOption = False,
) -> None:
    """Store a new version of a prompt template."""
    from genloom.db.engine import session_scope
    from genloom.errors import BadInput
    from genloom.generation.templates import add_template

    try:
        text = file.read_text()
    except OSError as exc:
        raise BadInput(f"cannot read template file {file}: {exc.strerror or exc}") from None
    with session_scope() as session:
        t = add_template(session, name, text)
        row = {"name": t.name, "version": t.version, "id": t.id}
    if json_out:
        print_json(row)
    else:
        info(f"template {row['name']}@{row['version']}")


@templates_app.command("list")
def templates_list(json_out: JsonOption = False) -> None:
    """Every template version."""
    from genloom.db.engine import session_scope
    from genloom.generation.templates import list_templates

    with session_scope() as session:
        rows: list[dict[str, Any]] = [
            {"name": t.name, "version": t.version, "created_at": t.created_at, "text": t.text}
            for t in list_templates(session)
        ]
    if json_out:
        print_json(rows)
        return
    table = Table("name", "version", "created", "first line")
    for r in rows:
        table.add_row(
            r["name"], str(r["version"]), r["created_at"].strftime("%Y-%m-%d %H:%M"), r["text"].splitlines()[0][:70]
        )
    console.print(table)


@templates_app.command("label")
def templates_label(
    ref: Annotated[str, typer.Argument(help="NAME@V: the version the label should point at.")],
    label: Annotated[str, typer.Argument(help="The label, e.g. production; use it as --template NAME@production.")],
    user: UserOption = None,
    json_out: JsonOption = False,
) -> None:
    """Point a label at a template version (moves are recorded; roll back by moving it back)."""
    from genloom.db.engine import session_scope
    from genloom.generation.templates import label_template

    with session_scope() as session:
        row = label_template(session, ref, label, user=user)
    if json_out:
        print_json(row)
    elif not row["moved"]:
        info(f"{row['name']}@{row['label']} already points at version {row['version']}")
    else:
        was = f" (was {row['from_version']})" if row["from_version"] else ""
        info(f"{row['name']}@{row['label']} → version {row['version']}{was}")


@templates_app.command("history")
def templates_history(
    name: Annotated[str, typer.Argument(help="Template name.")],
    json_out: JsonOption = False,
) -> None:
    """Every label move of a template: who moved which label, when, from and to which version."""
    from genloom.db.engine import session_scope
    from genloom.generation.templates import label_history

    with session_scope() as session:
        rows = label_history(session, name)
    if json_out:
        print_json(rows)
        return
    table = Table("label", "from", "to", "by", "when")
    for r in rows:
        table.add_row(
            r["label"],
            str(r["from_version"] or "-"),
            str(r["to_version"]),
            r["moved_by"] or "",
            r["moved_at"].strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(ask)
    app.command()(generate)
    app.command()(feedback)
    app.add_typer(generations_app, name="generations")
    app.add_typer(sessions_app, name="sessions")
    app.add_typer(templates_app, name="templates")
