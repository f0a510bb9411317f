"""Fixture rows for the analytics tests: small enough to compute every aggregate by hand.

Two UTC days. Model `extractive` answers g1 (ok), g2 (error), g5 (ok); registry model
`gpt@1` (trained on ds@1 by run R1) answers g3 and g4. Documents: d1 has a superseded
v1 and a current v2, d2 has two chunks, d3 is never cited. Datasets: ds@1 (3 real
images), ds@2 (parent ds@1, + 2 samples of vae@1), synth@1 (the 2 samples alone).
The expected values in the tests are worked out in comments next to each assertion.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import sqlalchemy as sa

from genloom.db.models import (
    Chunk,
    ChatSession,
    Collection,
    Dataset,
    DatasetMember,
    DatasetVersion,
    Document,
    Feedback,
    Generation,
    GenerationSource,
    Item,
    Metric,
    Model,
    Prompt,
    PromptTemplate,
    Run,
)

DAY1 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.timezone.utc)
DAY2 = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.timezone.utc)


def _image_item(seed: int, origin: str, **kw) -> Item:
    arr = (np.random.default_rng(seed).random((8, 8)) * 255).astype(np.uint8)
    payload = arr.tobytes()
    return Item(sha256=hashlib.sha256(payload).hexdigest(), modality="image", payload=payload, shape=[8, 8],
                dtype="uint8", label=str(seed % 10), origin=origin, **kw)


def load(session) -> dict[str, int]:
    """Insert the fixture and commit; return the ids the tests refer to."""
    ids: dict[str, int] = {}
    add = session.add

    def flush(obj, name):
        add(obj)
        session.flush()
        ids[name] = obj.id
        return obj

    # ---- datasets, runs, models (the training side)
    ds = flush(Dataset(name="ds", modality="image"), "ds")
    synth = flush(Dataset(name="synth", modality="image"), "synth")
    v1 = flush(DatasetVersion(dataset_id=ds.id, version=1), "ds@1")
    real = [flush(_image_item(i, "real"), f"real{i}") for i in range(3)]
    for item in real:
        add(DatasetMember(version_id=v1.id, item_id=item.id, split="train"))

    def run(name, kind, status="succeeded", finished=DAY1, **kw):
        return flush(Run(kind=kind, status=status, started_at=finished - dt.timedelta(minutes=5),
                         finished_at=finished, **kw), name)

    r1 = run("R1", "train", input_version_id=v1.id)
    gpt = flush(Model(name="gpt", version=1, architecture="transformer", sha256="0" * 64, size_bytes=1,
                      checkpoint=b"x", run_id=r1.id, input_version_id=v1.id), "gpt")
    r2 = run("R2", "train", input_version_id=v1.id)
    vae = flush(Model(name="vae", version=1, architecture="vae", sha256="1" * 64, size_bytes=1, checkpoint=b"x",
                      run_id=r2.id, input_version_id=v1.id), "vae")
    gan = flush(Model(name="gan", version=1, architecture="gan", sha256="2" * 64, size_bytes=1, checkpoint=b"x"), "gan")
    session.execute(sa.update(Run).where(Run.id == r1.id).values(model_id=gpt.id))
    session.execute(sa.update(Run).where(Run.id == r2.id).values(model_id=vae.id))
    r3 = run("R3", "sample", model_id=vae.id)
    samples = [flush(_image_item(10 + i, "synthetic", run_id=r3.id, model_id=vae.id), f"sample{i}") for i in range(2)]
    v2 = flush(DatasetVersion(dataset_id=ds.id, version=2, parent_id=v1.id, created_by_run_id=r3.id), "ds@2")
    for item in real + samples:
        add(DatasetMember(version_id=v2.id, item_id=item.id, split="train"))
    s1 = flush(DatasetVersion(dataset_id=synth.id, version=1, created_by_run_id=r3.id), "synth@1")
    for item in samples:
        add(DatasetMember(version_id=s1.id, item_id=item.id, split="train"))
    session.flush()
    session.execute(sa.update(Run).where(Run.id == r3.id).values(output_version_id=s1.id))

    # Metrics. R1 (gpt): loss 3, 2, 1 at steps 1..3 and a final val_loss 1.5 (step NULL).
    for step, value in [(1, 3.0), (2, 2.0), (3, 1.0)]:
        add(Metric(run_id=r1.id, step=step, name="loss", value=value))
    add(Metric(run_id=r1.id, step=None, name="val_loss", value=1.5))
    add(Metric(run_id=r1.id, step=3, name="lr", value=0.001))  # bookkeeping: never on a leaderboard
    # R2 (vae): loss 5 then 4.
    for step, value in [(1, 5.0), (2, 4.0)]:
        add(Metric(run_id=r2.id, step=step, name="loss", value=value))
    # Evaluations on ds@1: vae fid 30 / accuracy 0.7; gan fid 25 (older), then 20 / accuracy 0.9;
    # a failed gan run with fid 5 must not count.
    r4 = run("R4", "evaluate", model_id=vae.id, input_version_id=v1.id, finished=DAY2)
    add(Metric(run_id=r4.id, name="fid", value=30.0))
    add(Metric(run_id=r4.id, name="accuracy", value=0.7))
    r5 = run("R5", "evaluate", model_id=gan.id, input_version_id=v1.id, finished=DAY1)
    add(Metric(run_id=r5.id, name="fid", value=25.0))
    r6 = run("R6", "evaluate", model_id=gan.id, input_version_id=v1.id, finished=DAY2)
    add(Metric(run_id=r6.id, name="fid", value=20.0))
    add(Metric(run_id=r6.id, name="accuracy", value=0.9))
    r7 = run("R7", "evaluate", status="failed", model_id=gan.id, input_version_id=v1.id, finished=DAY2)
    add(Metric(run_id=r7.id, name="fid", value=5.0))

    # ---- retrieval store
    col = flush(Collection(name="c1"), "c1")
    d1v1 = flush(Document(collection_id=col.id, external_id="d1", version=1, title="Doc one (old)", sha256="a" * 64,
                          superseded_at=DAY1), "d1v1")
    d1v2 = flush(Document(collection_id=col.id, external_id="d1", version=2, title="Doc one", sha256="b" * 64), "d1v2")
    d2 = flush(Document(collection_id=col.id, external_id="d2", version=1, title="Doc two", sha256="c" * 64), "d2")
    d3 = flush(Document(collection_id=col.id, external_id="d3", version=1, title="Doc three", sha256="d" * 64), "d3")
    c11 = flush(Chunk(document_id=d1v1.id, ordinal=0, text="old one", token_count=2), "c11")
    c12 = flush(Chunk(document_id=d1v2.id, ordinal=0, text="new one", token_count=2), "c12")
    c21 = flush(Chunk(document_id=d2.id, ordinal=0, text="two a", token_count=2), "c21")
    c22 = flush(Chunk(document_id=d2.id, ordinal=1, text="two b", token_count=2), "c22")
    flush(Chunk(document_id=d3.id, ordinal=0, text="three", token_count=1), "c31")

    # ---- generation log
    add(PromptTemplate(name="t", version=1, text="{question}"))
    add(PromptTemplate(name="t", version=2, text="Q: {question}"))
    sa_ = flush(ChatSession(user_id="a", collection_id=col.id, created_at=DAY1), "s1")
    sb = flush(ChatSession(user_id="b", collection_id=col.id, created_at=DAY2), "s2")
    p1 = flush(Prompt(session_id=sa_.id, text="q1", template_name="t", template_version=1, created_at=DAY1), "p1")
    p2 = flush(Prompt(session_id=sa_.id, parent_id=p1.id, text="q2", template_name="t", template_version=2,
                      created_at=DAY1 + dt.timedelta(minutes=1)), "p2")
    p3 = flush(Prompt(session_id=sb.id, text="q3", template_name="t", template_version=1, created_at=DAY2), "p3")
    p4 = flush(Prompt(session_id=sb.id, parent_id=p3.id, text="q4", template_name="t", template_version=1,
                      created_at=DAY2 + dt.timedelta(minutes=1)), "p4")

    def gen(name, prompt, model, at, status, r_ms, g_ms, t_ms, out_tokens, **kw):
        return flush(Generation(prompt_id=prompt.id, model_name=model, status=status, retrieval_ms=r_ms,
                                generation_ms=g_ms, total_ms=t_ms, input_tokens=10, output_tokens=out_tokens,
                                output=f"answer {name}", created_at=at, **kw), name)

    g1 = gen("g1", p1, "extractive", DAY1, "ok", 10.0, 100.0, 110.0, 50)
    g2 = gen("g2", p2, "extractive", DAY1 + dt.timedelta(minutes=1), "error", 20.0, None, 20.0, None, error="boom")
    g3 = gen("g3", p3, "gpt", DAY2, "ok", 30.0, 200.0, 230.0, 100, model_id=gpt.id, model_revision="abc")
    g4 = gen("g4", p4, "gpt", DAY2 + dt.timedelta(minutes=1), "ok", 40.0, 400.0, 440.0, 100, model_id=gpt.id,
             model_revision="abc")
    g5 = gen("g5", p1, "extractive", DAY2 + dt.timedelta(minutes=2), "ok", 50.0, 300.0, 350.0, 30)
    for g, rank, chunk in [(g1, 1, c12), (g1, 2, c21), (g3, 1, c21), (g3, 2, c22), (g4, 1, c11), (g5, 1, c12)]:
        add(GenerationSource(generation_id=g.id, generation_created_at=g.created_at, rank=rank, chunk_id=chunk.id, score=1.0 / rank, bm25_rank=rank,
                             vector_rank=rank))
    session.flush()
    flush(Feedback(generation_id=g1.id, generation_created_at=g1.created_at, user_id="a", score=5, thumbs=1, created_at=DAY1), "f1")
    flush(Feedback(generation_id=g1.id, generation_created_at=g1.created_at, user_id="x", score=3, created_at=DAY1), "f2")
    flush(Feedback(generation_id=g3.id, generation_created_at=g3.created_at, user_id="b", score=1, thumbs=-1, label="wrong", comment="cites the wrong doc",
                   created_at=DAY2), "f3")
    flush(Feedback(generation_id=g4.id, generation_created_at=g4.created_at, user_id="b", thumbs=1, created_at=DAY2), "f4")
    session.commit()
    return ids
