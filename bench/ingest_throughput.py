"""Whole-ingest throughput against bare `SentenceTransformer.encode` of the same chunks.

    python bench/ingest_throughput.py [--docs 400] [--repeats 3] [--out ingest/throughput.json]

The documents are the first N of SciFact's corpus (../shared/data/scifact) when present,
else generated paragraphs. Baseline: the chunk texts the pipeline embeds, encoded in one
`encode()` call (batch 64, normalised), timed before and after the ingest and averaged.
Ingest: `ingest_documents` into a fresh collection (loading excluded; chunking, hashing,
embedding, binary COPY, BM25 postings and statistics, transactions included), which is
then deleted. Rounds alternate encode and ingest (--repeats, default 3); prints JSON with
chunks/s of each, every round's ratio and the median.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402


def documents(n: int):
    from ingest.loaders import SourceDocument

    corpus = Path(os.environ.get("GENLOOM_SHARED_DATA", ROOT.parent / "shared" / "data")) / "scifact" / "corpus.jsonl"
    if corpus.is_file():
        with corpus.open() as f:
            records = [json.loads(next(f)) for _ in range(n)]
        return [SourceDocument(external_id=r["_id"], title=r["title"], text=r["text"]) for r in records], "scifact"
    import random

    rng = random.Random(0)
    words = "data model vector index query token chunk search rank score table row column".split()
    docs = []
    for i in range(n):
        text = " ".join(" ".join(rng.choice(words) for _ in range(15)) + "." for _ in range(20))
        docs.append(SourceDocument(external_id=f"g{i}", title=f"Generated {i}", text=text))
    return docs, "generated"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3, help="alternating (encode, ingest, encode) rounds; the median ratio is reported")
    parser.add_argument("--out", default=None, help="also write the JSON to bench/results/OUT")
    args = parser.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")

    import statistics

    from genloom.db.engine import session_scope
    from genloom import embeddings
    from ingest.chunking import Chunker, embedding_text
    from ingest.pipeline import IngestOptions, ingest_documents

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib import environment, write_result

    env = environment()
    docs, source = documents(args.docs)
    model = embeddings.get_embedder()
    chunker = Chunker(model.tokenizer, model.max_seq_length)
    texts = [embedding_text(d.title, c.text) for d in docs for c in chunker.chunk(d.text, d.title)]
    model.encode(texts[:64], batch_size=64, normalize_embeddings=True)  # warm-up

    def bare() -> float:
        t0 = time.perf_counter()
        model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        return time.perf_counter() - t0

    # Alternate bare encode and ingest, so a change in the machine's load hits both sides alike;
    # each round's baseline is the mean of the encodes just before and just after its ingest.
    rounds = []
    before = bare()
    for _ in range(args.repeats):
        name = f"bench-throughput-{uuid.uuid4().hex[:8]}"
        result = ingest_documents(docs, IngestOptions(collection=name))
        after = bare()
        with session_scope() as s:
            s.execute(sa.text("DELETE FROM collections WHERE name = :n"), {"n": name})
        assert result.chunks == len(texts), (result.chunks, len(texts))
        baseline = len(texts) / ((before + after) / 2)
        pipeline = result.chunks / result.seconds
        rounds.append({
            "encode_seconds": [round(before, 2), round(after, 2)],
            "encode_chunks_per_s": round(baseline, 2),
            "ingest_chunks_per_s": round(pipeline, 2),
            "ingest_seconds": round(result.seconds, 2),
            "ingest_embed_seconds": round(result.embed_seconds, 2),
            "ingest_write_seconds": round(result.write_seconds, 2),
            "ratio": round(pipeline / baseline, 3),
        })
        before = after
    report = {
        "environment": env,
        "source": source,
        "documents": len(docs),
        "chunks": len(texts),
        "rounds": rounds,
        "ratio_median": round(statistics.median(r["ratio"] for r in rounds), 3),
        "ratio_min": min(r["ratio"] for r in rounds),
        "ratio_max": max(r["ratio"] for r in rounds),
        "load_average_at_end": [round(x, 2) for x in __import__("os").getloadavg()],
    }
    if args.out:
        write_result(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
