"""The logged call: question → retrieval → context → generation, all of it in the store.

One call is one transaction of the caller's session:

    with session_scope() as s:
        result = ask(s, CallRequest(question="...", collection="demo"))

`prepare()` validates, retrieves, assembles the prompt and inserts the session (new or
continued), the prompt (parent = the previous turn), the generation and its sources;
`execute()` generates and completes the generation row. Bad input (empty question,
unknown collection, session or template, a model that is not a causal LM, a context
that cannot fit one source) raises before anything is written. A failure while
generating is recorded as status 'error' with its message, so analytics see failures;
any other failure rolls the whole transaction back: never half a call.

The ids exist after `prepare()` (flushed, not committed), so a streaming HTTP response
can announce its generation id in the first chunk.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from genloom.crypto import seal, unseal
from genloom.db.models import ChatSession, Generation, GenerationSource, Prompt
from genloom.errors import BadInput, NotFound
from genloom.generation.backend import MAX_K, Backend, GenOutput, GenParams, OnText, Source
from genloom.generation.context import AssembledPrompt, Turn, assemble
from genloom.generation.resolve import load_backend
from genloom.pii import log_mode, pseudonym, record_findings, redact

_CITATION = re.compile(r"\[(\d{1,3})\]")


@dataclasses.dataclass
class CallRequest:
    question: str
    collection: str | None = None  # None: no retrieval (`genloom generate`)
    model: str | None = None  # extractive | PATH | NAME[@V]; None: the collection's reader, else the configured default
    session_id: int | None = None  # continue this conversation
    k: int = 5
    where: dict[str, Any] | None = None  # a filter document (genloom.retrieval.filters)
    template: str | None = None  # NAME[@V]; None: 'default' (retrieval calls only)
    params: GenParams = dataclasses.field(default_factory=GenParams)
    user: str | None = None
    system: str | None = None
    # Earlier turns given by the caller (an OpenAI messages list); None: read from the session.
    history: list[Turn] | None = None
    mode: str = "hybrid"
    embedding_model: str | None = None  # another model with vectors in the collection (`genloom embed`)
    rerank: str | None = None  # a reranker NAME[@V]; None: the collection's default, if any
    rerank_depth: int | None = None  # hits the reranker rescores (None: the collection's, else 50)
    no_rerank: bool = False  # skip the collection's default reranker


@dataclasses.dataclass
class PreparedCall:
    request: CallRequest
    backend: Backend
    assembled: AssembledPrompt
    session_id: int
    prompt_id: int
    generation_id: int
    retrieval_ms: float
    rerank_ms: float | None
    started: float  # perf_counter at the start of the call
    pii_mode: str = "off"  # how PII is kept in the log (genloom.pii): the model sees the clear text, tables do not


@dataclasses.dataclass
class CallResult:
    generation_id: int
    session_id: int
    prompt_id: int
    answer: str
    citations: list[dict[str, Any]]
    sources: list[Source]
    model: str
    timings_ms: dict[str, float]
    tokens: dict[str, int]
    status: str  # 'ok' or 'error'
    error: str | None = None
    finish_reason: str = "stop"
    abstention: dict[str, Any] | None = None  # why the answer is "the sources do not answer this"

    def as_json(self) -> dict[str, Any]:
        """The `genloom ask --json` shape (and the body of POST /v1/ask)."""
        return {
            "generation_id": self.generation_id,
            "session_id": self.session_id,
            "prompt_id": self.prompt_id,
            "answer": self.answer,
            "citations": self.citations,
            "model": self.model,
            "timings_ms": self.timings_ms,
            "tokens": self.tokens,
            **({"abstention": self.abstention} if self.abstention else {}),
        }


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def session_history(session: Session, session_id: int) -> tuple[list[Turn], int | None]:
    """The session's answered turns in order, and the id of its last prompt (the next parent)."""
    rows = session.execute(
        sa.select(Prompt.id, Prompt.text, Generation.output, Generation.status)
        .outerjoin(Generation, Generation.prompt_id == Prompt.id)
        .where(Prompt.session_id == session_id)
        .order_by(Prompt.created_at, Prompt.id, Generation.id)
    ).all()
    turns = [
        Turn(question=unseal(r.text, "prompts.text") or "", answer=unseal(r.output, "generations.output") or "")
        for r in rows
        if r.status == "ok" and r.output is not None
    ]
    return turns, (rows[-1].id if rows else None)


def prepare(session: Session, request: CallRequest) -> PreparedCall:
    """Validate, retrieve, assemble, and insert the call's rows (flushed, not committed)."""
    started = time.perf_counter()
    question = (request.question or "").strip()
    if not question:
        raise BadInput("empty question: give the text to ask")
    params = request.params.validate()
    if request.collection is not None and not 1 <= request.k <= MAX_K:
        raise BadInput(f"k must be between 1 and {MAX_K} (got {request.k})")

    # The conversation: lock its row so concurrent turns of one session chain in order.
    parent_id = None
    history = list(request.history or [])
    chat = None
    if request.session_id is not None:
        chat = session.scalar(sa.select(ChatSession).where(ChatSession.id == request.session_id).with_for_update())
        if chat is None:
            raise NotFound(f"no session {request.session_id}", cli_hint="a new one starts when you leave out --session")
        stored, parent_id = session_history(session, chat.id)
        if request.history is None:
            history = stored

    template = None
    collection = None
    if request.collection is not None:
        from genloom.generation.templates import get_template
        from genloom.retrieval.collections import get_collection

        collection = get_collection(session, request.collection)
        template = get_template(session, request.template)
    elif request.template is not None:
        raise BadInput("a template needs retrieval: give a collection (templates render {sources})")

    model = request.model
    if model is None and collection is not None:  # the collection's default reader, else the configured default
        from genloom.retrieval.collections import collection_reader

        model = collection_reader(session, collection)
    backend = load_backend(session, model)

    candidates = None
    retrieval_ms = 0.0
    rerank_ms = None
    if collection is not None:  # request.collection was given (and found)
        from genloom.retrieval.rerank import search_reranked

        hits, timing = search_reranked(
            session,
            question,
            collection=collection,
            k=request.k,
            mode=request.mode,
            where=request.where,
            embedding_model=request.embedding_model,
            rerank_model=request.rerank,
            rerank_depth=request.rerank_depth,
            use_default=not request.no_rerank,
        )
        retrieval_ms, rerank_ms = timing["search_ms"], timing["rerank_ms"]
        candidates = [Source.numbered(hit, i + 1) for i, hit in enumerate(hits)]
    elif backend.name == "extractive":
        raise BadInput(
            "the extractive backend answers from retrieved sources: give a collection, or a model that generates"
        )

    assembled = assemble(
        backend,
        question=question,
        candidates=candidates,
        template_text=template.text if template else None,
        history=history,
        max_new_tokens=params.max_new_tokens,
        system=request.system,
    )

    pii_mode = log_mode(collection.pii_mode if collection is not None else None)
    logged_question, question_pii = redact(question, pii_mode)
    logged_prompt, prompt_pii = redact(assembled.prompt, pii_mode)
    if chat is None:
        chat = ChatSession(
            user_id=pseudonym(request.user, pii_mode),
            collection_id=collection.id if collection is not None else None,
            title=seal((logged_question or "")[:120], "sessions.title"),
        )
        session.add(chat)
        session.flush()
    prompt = Prompt(
        session_id=chat.id,
        parent_id=parent_id,
        user_id=pseudonym(request.user, pii_mode),
        text=seal(logged_question, "prompts.text"),
        template_name=template.name if template else None,
        template_version=template.version if template else None,
        metadata_={"history_turns": assembled.history_turns, "dropped_sources": assembled.dropped_sources},
    )
    session.add(prompt)
    session.flush()
    retrieval = (
        {"collection": request.collection, "k": request.k, "mode": request.mode, "where": request.where or {}}
        if request.collection is not None
        else {}
    )
    if request.collection is not None and rerank_ms is not None:
        retrieval.update(reranker=timing["reranker"], rerank_depth=timing["rerank_depth"])
    generation = Generation(
        prompt_id=prompt.id,
        model_name=backend.name,
        model_revision=backend.revision,
        model_id=backend.model_id,
        params={**params.as_dict(), **retrieval},
        rendered_prompt=seal(logged_prompt, "generations.rendered_prompt"),
        status="ok",  # completed by execute(); invisible to others until commit
        retrieval_ms=retrieval_ms,
        rerank_ms=rerank_ms,
        input_tokens=assembled.input_tokens,
    )
    session.add(generation)
    session.flush()
    record_findings(session, "prompt", prompt.id, "text", question_pii, pii_mode)
    record_findings(session, "generation", generation.id, "rendered_prompt", prompt_pii, pii_mode)
    if assembled.sources:
        session.execute(
            sa.insert(GenerationSource),
            [
                {
                    "generation_id": generation.id,
                    "generation_created_at": generation.created_at,  # the month partition it lives in
                    "rank": s.n,
                    "chunk_id": s.chunk_id,
                    "score": s.score,
                    "bm25_rank": s.bm25_rank,
                    "bm25_score": s.bm25_score,
                    "vector_rank": s.vector_rank,
                    "vector_score": s.vector_score,
                    "cited": False,  # until execute() reads the answer's [n] markers
                }
                for s in assembled.sources
            ],
        )
    return PreparedCall(
        request=request,
        backend=backend,
        assembled=assembled,
        session_id=chat.id,
        prompt_id=prompt.id,
        generation_id=generation.id,
        retrieval_ms=retrieval_ms,
        rerank_ms=rerank_ms,
        started=started,
        pii_mode=pii_mode,
    )


def citations_of(answer: str, sources: list[Source]) -> list[dict[str, Any]]:
    """The sources the answer's `[n]` markers cite, in order of first citation."""
    by_n = {s.n: s for s in sources}
    seen: list[int] = []
    for match in _CITATION.finditer(answer or ""):
        n = int(match.group(1))
        if n in by_n and n not in seen:
            seen.append(n)
    from genloom.retrieval.locations import location_fields

    return [
        {
            "n": n,
            "doc_id": by_n[n].doc_id,
            "chunk_id": by_n[n].chunk_id,
            "title": by_n[n].title,
            **location_fields(by_n[n].metadata),
            "location": by_n[n].location,
        }
        for n in seen
    ]


def execute(session: Session, prepared: PreparedCall, *, on_text: OnText | None = None) -> CallResult:
    """Generate, then complete the generation row (ok, or error with its message)."""
    request, assembled = prepared.request, prepared.assembled
    generation_started = time.perf_counter()
    error = None
    try:
        output = prepared.backend.generate(
            assembled.prompt,
            params=request.params,
            question=request.question.strip(),
            sources=assembled.sources,
            on_text=on_text,
        )
    except Exception as exc:  # recorded, not raised: analytics must see failed calls
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        error = f"{type(exc).__name__}: {first}"[:2000]
        output = GenOutput(text="", input_tokens=assembled.input_tokens, output_tokens=0, finish_reason="error")
    generation_ms = _ms(generation_started)
    total_ms = _ms(prepared.started)
    status = "error" if error else "ok"
    ended: dict[str, Any] = {"finish_reason": output.finish_reason}
    if output.abstention:
        ended["abstention"] = output.abstention
    logged_output, output_pii = redact(output.text if not error else None, prepared.pii_mode)
    record_findings(session, "generation", prepared.generation_id, "output", output_pii, prepared.pii_mode)
    session.execute(
        sa.update(Generation)
        .where(Generation.id == prepared.generation_id)
        .values(
            output=seal(logged_output, "generations.output"),
            status=status,
            error=error,
            generation_ms=generation_ms,
            total_ms=total_ms,
            input_tokens=output.input_tokens,
            output_tokens=output.output_tokens,
            # How the generation ended ('stop', 'length', 'abstain', 'error') and why it abstained,
            # beside its parameters.
            params=Generation.params.op("||")(sa.cast(sa.literal(json.dumps(ended)), JSONB)),
        )
    )
    citations = citations_of(output.text, assembled.sources)
    if citations:  # retrieved is not cited: analytics credit only the sources the answer names
        session.execute(
            sa.update(GenerationSource)
            .where(
                GenerationSource.generation_id == prepared.generation_id,
                GenerationSource.rank.in_([c["n"] for c in citations]),
            )
            .values(cited=True)
        )
    return CallResult(
        generation_id=prepared.generation_id,
        session_id=prepared.session_id,
        prompt_id=prepared.prompt_id,
        answer=output.text,
        citations=citations,
        sources=assembled.sources,
        model=prepared.backend.name,
        timings_ms={
            "retrieval": prepared.retrieval_ms,
            **({"rerank": prepared.rerank_ms} if prepared.rerank_ms is not None else {}),
            "generation": generation_ms,
            "total": total_ms,
        },
        tokens={"input": output.input_tokens, "output": output.output_tokens},
        status=status,
        error=error,
        finish_reason=output.finish_reason,
        abstention=output.abstention,
    )


def ask(session: Session, request: CallRequest, *, on_text: OnText | None = None) -> CallResult:
    """prepare + execute in the caller's transaction. Check `result.status`: a generation
    failure is returned (so the caller commits the error row), not raised."""
    return execute(session, prepare(session, request), on_text=on_text)
