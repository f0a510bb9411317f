"""int8 ONNX vs fp32 torch: sentence-encoder throughput, single-query latency, agreement and SciFact nDCG@10, side by side.

    nice -n 5 python bench/onnx_encoder.py [--docs 1000] [--queries 200] [--repeats 2]

Exports the shipped all-MiniLM-L6-v2 to ONNX (fp32 and dynamic int8, `genloom.onnx_encoder`) into
a scratch folder, then for torch fp32 (the baseline), ONNX fp32 and ONNX int8, on the same inputs:

- passages/s of `embed` (batch 64) over N SciFact passages (title + abstract, one passage per
  document, cut at the model's 256 tokens): every document judged for a test query, then the
  corpus in order up to N. Best of the repeats, by wall clock and by the process's CPU time (the
  second barely moves with the shared machine's load; the first does);
- single-query p50/p90 ms (wall and CPU) over the first `--queries` SciFact test queries;
- the cosine of each passage vector to torch's;
- nDCG@10 of exact (brute-force) vector search over those passages for all 300 test queries: the
  quality cost of int8 on the same haystack (not genloom's chunked ingest).

One process, one thread per encoder (OMP_NUM_THREADS, default 1, which both torch and ONNX Runtime
follow), the three encoders interleaved per repetition, so load on the shared machine hits all
alike. Writes bench/results/retrieval/onnx_encoder.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: one thread per encoder unless told

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import write_result  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def main() -> None:
    from genloom import embeddings
    from genloom.onnx_encoder import export_onnx
    from genloom.retrieval.beir import ndcg_at

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200, help="test queries timed one at a time")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    relevant: dict[str, dict[str, int]] = {}
    for row in (args.data / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, score = row.split("\t")
        relevant.setdefault(qid, {})[did] = int(score)
    judged = {d for rels in relevant.values() for d in rels}
    records = [json.loads(line) for line in (args.data / "corpus.jsonl").read_text().splitlines()]
    chosen = [r for r in records if r["_id"] in judged]
    chosen += [r for r in records if r["_id"] not in judged][: max(0, args.docs - len(chosen))]
    doc_ids = [r["_id"] for r in chosen]
    docs = [f"{r['title']}\n\n{r['text']}" if r.get("title") else r["text"] for r in chosen]
    query_text = {}
    with (args.data / "queries.jsonl").open() as f:
        for line in f:
            record = json.loads(line)
            if record["_id"] in relevant:
                query_text[record["_id"]] = record["text"]
    test_ids = sorted(query_text)
    queries = [query_text[q] for q in test_ids[: args.queries]]

    work = Path(tempfile.mkdtemp(prefix="genloom-onnx-"))
    source = embeddings.model_path(None)
    started = time.perf_counter()
    folders = {"onnx_fp32": export_onnx(source, work / "fp32", quantize="fp32")}
    folders["onnx_int8"] = export_onnx(source, work / "int8", quantize="int8")
    export_s = time.perf_counter() - started
    models = {"torch_fp32": None, **{k: str(v) for k, v in folders.items()}}

    doc_seconds: dict[str, list[float]] = {k: [] for k in models}
    doc_cpu_seconds: dict[str, list[float]] = {k: [] for k in models}
    query_ms: dict[str, list[float]] = {k: [] for k in models}
    query_cpu_ms: dict[str, list[float]] = {k: [] for k in models}
    vectors: dict[str, np.ndarray] = {}
    for model in models.values():  # warm-up: load and one pass
        embeddings.embed(queries[:4], name=model)
    loads = []
    for _ in range(args.repeats):
        for name, model in models.items():
            t, c = time.perf_counter(), time.process_time()
            vectors[name] = embeddings.embed(docs, name=model, batch_size=64)
            doc_seconds[name].append(time.perf_counter() - t)
            doc_cpu_seconds[name].append(time.process_time() - c)
        for q in queries:
            for name, model in models.items():
                t, c = time.perf_counter(), time.process_time()
                embeddings.embed([q], name=model)
                query_ms[name].append(1000 * (time.perf_counter() - t))
                query_cpu_ms[name].append(1000 * (time.process_time() - c))
        loads.append([round(x, 2) for x in os.getloadavg()])
    reference = vectors["torch_fp32"]
    results = {}
    for name, model in models.items():
        cos = (vectors[name] * reference).sum(axis=1)
        query_vectors = embeddings.embed([query_text[q] for q in test_ids], name=model)
        top = np.argsort(-(query_vectors @ vectors[name].T), axis=1)[:, :10]
        ndcg = [ndcg_at([doc_ids[j] for j in row], relevant[q]) for q, row in zip(test_ids, top)]
        results[name] = {
            "passages_per_s": round(len(docs) / min(doc_seconds[name]), 2),
            "passages_per_cpu_s": round(len(docs) / min(doc_cpu_seconds[name]), 2),
            "query_p50_ms": round(float(np.percentile(query_ms[name], 50)), 2),
            "query_p90_ms": round(float(np.percentile(query_ms[name], 90)), 2),
            "query_cpu_p50_ms": round(float(np.percentile(query_cpu_ms[name], 50)), 2),
            "cosine_to_torch_min": round(float(cos.min()), 5),
            "cosine_to_torch_mean": round(float(cos.mean()), 5),
            "ndcg10": round(float(np.mean(ndcg)), 4),
        }
    base = results["torch_fp32"]
    for name in models:
        r = results[name]
        r["throughput_vs_torch_fp32"] = round(r["passages_per_s"] / base["passages_per_s"], 2)
        r["cpu_throughput_vs_torch_fp32"] = round(r["passages_per_cpu_s"] / base["passages_per_cpu_s"], 2)
        r["query_p50_vs_torch_fp32"] = round(r["query_p50_ms"] / base["query_p50_ms"], 3)
        r["ndcg10_minus_torch_fp32"] = round(r["ndcg10"] - base["ndcg10"], 4)
    out = {
        "command": " ".join(sys.argv),
        "scale": {
            "passages": len(docs),
            "judged_passages": len(judged & set(doc_ids)),
            "of": len(records),
            "ndcg_queries": len(test_ids),
            "queries": len(queries),
            "repeats": args.repeats,
            "batch_size": 64,
        },
        "threads": int(os.environ["OMP_NUM_THREADS"]),
        "load_average_after_each_repeat": loads,
        "note": (
            "bare encode (no database); passages/s: best of the repeats, by wall clock and by process CPU time; "
            "query latency: all repeats; nDCG@10: exact vector search over these passages, all test queries"
        ),
        "export_seconds": round(export_s, 1),
        "model_bytes": {k: (Path(v) / "model.onnx").stat().st_size for k, v in folders.items()},
        "encoders": results,
    }
    path = write_result("retrieval/onnx_encoder.json", out, database=False)
    print(json.dumps(out["encoders"], indent=2))
    print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
