"""Retrieval that learns, over HTTP: train an embedder or a reranker, switch a collection's defaults.

    POST /v1/train/embedder   {"dataset": "docs-train-pairs", "name": "docs-emb", "steps": 200}   (writer)
    POST /v1/train/reranker   {"dataset": "docs-train-pairs", "name": "docs-rr"}                 (writer)
    POST /v1/collections/{name}/defaults   {"reranker": "docs-rr@1", "eval_run": 42}            (admin)
                                           (also embedding_model, rerank_depth, no_reranker, reader, no_reader)

The same library calls as `genloom train embedder|reranker` and `genloom collections set`. The
roles are in genloom.api.auth.ROUTE_ROLES: a reader key may do neither; training needs a writer
(a new registered model changes nothing anyone gets), switching what every search of a collection
uses needs an admin, and it is audited with the key that did it. Training runs in the request
(the answer is the registered model), so give it bounded --steps or epochs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Annotated, Literal, Optional

from fastapi import FastAPI, Path as PathParam
from pydantic import ConfigDict, Field

from genloom.api import request_limits
from genloom.api.schemas import BIGINT_MAX, Body, RowId
from genloom.api.session import DB
from genloom.errors import BadInput

Name = Annotated[str, Field(min_length=1, max_length=200)]


class TrainBody(Body):
    model_config = ConfigDict(extra="forbid")

    dataset: Name  # a pairs dataset NAME[@V] (genloom datasets import qrels|feedback --pairs)
    name: Name  # the registry name; versions are numbered
    init: Optional[Name] = None  # the encoder to start from: a registered embedder or a model folder
    steps: Optional[int] = Field(None, ge=1, le=1_000_000)
    epochs: Optional[float] = Field(None, gt=0, le=1000)
    batch_size: Optional[int] = Field(None, ge=1, le=4096)
    lr: Optional[float] = Field(None, gt=0, le=1)
    negatives: Optional[int] = Field(None, ge=0, le=64)
    max_length: Optional[int] = Field(None, ge=8, le=8192)
    seed: int = Field(0, ge=0, le=BIGINT_MAX)


class DefaultsBody(Body):
    model_config = ConfigDict(extra="forbid")

    embedding_model: Optional[Name] = None
    reranker: Optional[Name] = None
    rerank_depth: Optional[int] = Field(None, ge=1, le=1000)
    no_reranker: bool = False
    reader: Optional[Name] = None  # a registered span reader: ask's default answerer in this collection
    no_reader: bool = False
    eval_run: Optional[RowId] = None  # the evaluate run that justifies the switch


# The library's messages name the CLI's options; over HTTP they name the body's fields instead.
_FIELDS = re.compile(
    r"--(embedding-model|reranker|rerank-depth|no-reranker|reader|no-reader|eval-run|steps|epochs|batch-size|lr"
    r"|negatives|name)\b"
)


@contextlib.contextmanager
def _body_words() -> Iterator[None]:
    try:
        yield
    except BadInput as exc:
        raise BadInput(_FIELDS.sub(lambda m: m.group(1).replace("-", "_"), str(exc))) from None


def install(app: FastAPI) -> None:
    @app.post("/v1/train/{kind}", status_code=201)
    def train(kind: Literal["embedder", "reranker"], body: TrainBody) -> dict:
        from genloom.finetune.config import FinetuneConfig
        from genloom.finetune.jobs import train_retrieval_model

        request_limits.check_http_model(body.init)  # registered names and the server's model folders only
        config = FinetuneConfig(seed=body.seed, steps=body.steps)
        for option in ("epochs", "batch_size", "lr", "negatives", "max_length"):
            if getattr(body, option) is not None:
                setattr(config, option, getattr(body, option))
        with _body_words():
            result = train_retrieval_model(kind, body.dataset, name=body.name, base=body.init, config=config)
        return result.as_json()

    @app.post("/v1/collections/{name}/defaults")
    def collection_defaults(
        name: Annotated[str, PathParam(min_length=1, max_length=200)], body: DefaultsBody, session: DB
    ) -> dict:
        from genloom.retrieval.collections import set_defaults

        request_limits.check_no_nul(name=name)
        request_limits.check_http_model(body.embedding_model)
        request_limits.check_http_model(body.reader)
        with _body_words(), session.begin():
            return set_defaults(
                session,
                name,
                embedding_model=body.embedding_model,
                reranker=body.reranker,
                rerank_depth=body.rerank_depth,
                no_reranker=body.no_reranker,
                reader=body.reader,
                no_reader=body.no_reader,
                eval_run=body.eval_run,
            )
