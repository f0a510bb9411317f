"""int8 ONNX vs fp32 torch: sentence-encoder throughput, single-query latency and agreement, side by side.

    OMP_NUM_THREADS=1 nice -n 19 python bench/onnx_encoder.py [--docs 128] [--queries 100]

Exports the shipped all-MiniLM-L6-v2 to ONNX (fp32 and dynamic int8, `genloom.onnx_encoder`) into
a scratch folder, then on the same SciFact passages (title + abstract, the first N of the corpus)
and queries measures, for torch fp32 (the baseline), ONNX fp32 and ONNX int8: passages/s of
`embed` (batch 64), single-query p50/p90 ms, and the cosine of each vector to torch's. One process,
the three encoders interleaved per repetition, so load on the shared machine hits all alike.
Writes bench/results/retrieval/onnx_encoder.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import write_result  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def main() -> None:
    from genloom import embeddings
    from genloom.onnx_encoder import export_onnx

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--docs", type=int, default=128)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    docs = []
    with (args.data / "corpus.jsonl").open() as f:
        for line in f:
            record = json.loads(line)
            docs.append(f"{record['title']}\n\n{record['text']}" if record.get("title") else record["text"])
            if len(docs) == args.docs:
                break
    with (args.data / "queries.jsonl").open() as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(args.queries), f)]

    work = Path(tempfile.mkdtemp(prefix="genloom-onnx-"))
    source = embeddings.model_path(None)
    started = time.perf_counter()
    folders = {"onnx_fp32": export_onnx(source, work / "fp32", quantize="fp32")}
    folders["onnx_int8"] = export_onnx(source, work / "int8", quantize="int8")
    export_s = time.perf_counter() - started
    models = {"torch_fp32": None, **{k: str(v) for k, v in folders.items()}}

    reference = embeddings.embed(docs, name=None)
    doc_seconds: dict[str, list[float]] = {k: [] for k in models}
    query_ms: dict[str, list[float]] = {k: [] for k in models}
    vectors: dict[str, np.ndarray] = {}
    for model in models.values():  # warm-up: load and one pass
        embeddings.embed(queries[:4], name=model)
    for _ in range(args.repeats):
        for name, model in models.items():
            t = time.perf_counter()
            vectors[name] = embeddings.embed(docs, name=model, batch_size=64)
            doc_seconds[name].append(time.perf_counter() - t)
        for q in queries:
            for name, model in models.items():
                t = time.perf_counter()
                embeddings.embed([q], name=model)
                query_ms[name].append(1000 * (time.perf_counter() - t))
    results = {}
    for name in models:
        cos = (vectors[name] * reference).sum(axis=1)
        best = min(doc_seconds[name])
        results[name] = {
            "passages_per_s": round(len(docs) / best, 2),
            "query_p50_ms": round(float(np.percentile(query_ms[name], 50)), 2),
            "query_p90_ms": round(float(np.percentile(query_ms[name], 90)), 2),
            "cosine_to_torch_min": round(float(cos.min()), 5),
            "cosine_to_torch_mean": round(float(cos.mean()), 5),
        }
    base = results["torch_fp32"]
    for name in models:
        results[name]["throughput_vs_torch_fp32"] = round(results[name]["passages_per_s"] / base["passages_per_s"], 2)
        results[name]["query_p50_vs_torch_fp32"] = round(results[name]["query_p50_ms"] / base["query_p50_ms"], 3)
    out = {
        "command": " ".join(sys.argv),
        "scale": {"passages": len(docs), "queries": len(queries), "repeats": args.repeats, "batch_size": 64},
        "note": "bare encode throughput (no database); best of the repeats for passages/s, all repeats for query latency",
        "export_seconds": round(export_s, 1),
        "model_bytes": {k: (Path(v) / "model.onnx").stat().st_size for k, v in folders.items()},
        "encoders": results,
    }
    path = write_result("retrieval/onnx_encoder.json", out, database=False)
    print(json.dumps(out["encoders"], indent=2))
    print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
