"""Generation speed through genloom against plain `model.generate`, on the same model in one run.

A random-weight causal LM is built from a config (speed does not depend on weights):
`small` (4-layer Llama, for CPUs) or `qwen2-0.5b` (Qwen2-0.5B's shape: 24 layers, hidden
896, 151,936-token vocabulary) for a GPU. The bundled sample documents are ingested into
a collection, and every genloom request is the full logged call: hybrid retrieval,
context assembly in the model's tokens, generation (streamed), and the log rows.

Measured, each as new tokens per second (EOS is disabled so every request makes exactly
--new-tokens tokens):
- batch 1: plain `model.generate` on the rendered RAG prompt vs the genloom call;
- 8 and 32 concurrent requests: genloom calls from as many threads at once vs plain
  `model.generate` on one batch of as many prompts (what a hand-rolled server would do);
- RAG overhead: (retrieval + prompt assembly + logging) / end-to-end latency of a call.

    python bench/generation.py                         # CPU: the small config
    python bench/generation.py --config qwen2-0.5b     # GPU: static cache + compile on CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

QUESTION = "How does genloom combine keyword search and vector search?"


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_generate(backend, input_ids, new_tokens: int, batch: int) -> float:
    """Seconds for one `model.generate` call on `batch` copies of the prompt (greedy)."""
    import torch

    ids = input_ids.repeat(batch, 1)
    kwargs = {"cache_implementation": "static"} if backend.static_cache else {}
    _sync(backend.device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = backend.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, pad_token_id=backend.tokenizer.pad_token_id, **kwargs,
        )
    _sync(backend.device)
    elapsed = time.perf_counter() - started
    assert out.shape[1] - ids.shape[1] == new_tokens, out.shape
    return elapsed


def pool_engine(concurrency: int):
    """An engine with one pooled connection per concurrent call (a logged call holds its
    connection from retrieval to commit), as the HTTP server sizes its own pool."""
    import sqlalchemy as sa
    from genloom.db.engine import get_engine

    base = get_engine()  # connects and migrates once, follows DATABASE_URL
    return sa.create_engine(base.url, pool_pre_ping=True, pool_size=concurrency + 2, max_overflow=0, pool_timeout=600)


def genloom_calls(engine, model_dir: str, collection: str, new_tokens: int, concurrency: int) -> tuple[float, list]:
    """Wall seconds for `concurrency` simultaneous logged calls, and their results."""
    from genloom.db.engine import session_scope
    from genloom.generation.backend import GenParams
    from genloom.generation.call import CallRequest, ask

    results: list = [None] * concurrency
    errors: list = []
    barrier = threading.Barrier(concurrency + 1)

    def one(i: int) -> None:
        barrier.wait()
        try:
            with session_scope(engine) as s:
                results[i] = ask(s, CallRequest(question=QUESTION, collection=collection, model=model_dir, k=3,
                                                params=GenParams(max_new_tokens=new_tokens), user="bench"))
        except BaseException as exc:  # re-raised below, in the measuring thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    assert all(r is not None and r.status == "ok" for r in results), [r.error for r in results if r]
    return elapsed, results


def measure(config: str = "small", *, new_tokens: int = 32, repeats: int = 3, concurrency=(8, 32),
            collection: str = "bench-generation", embedding_model: str | None = None,
            on_partial=None) -> dict:
    """Every measurement of this benchmark as one report dict (see the module docstring).

    `on_partial(report)` is called after each part, so a caller with a time limit keeps what
    was measured before the limit struck."""
    import torch
    from genloom.db.engine import session_scope
    from genloom.generation.resolve import load_backend
    from genloom.generation.testing import build_random_lm

    from ingest.pipeline import IngestOptions, ingest

    partial = on_partial or (lambda report: None)
    ingest([ROOT / "platform" / "genloom" / "data" / "sample_docs"],
           IngestOptions(collection=collection, embedding_model=embedding_model))
    tmp = tempfile.mkdtemp(prefix="genloom-bench-")
    # Word-level tokenizer: about one token per word, like a real BPE on English (the tiny
    # byte-level one would spend a token per character and overflow small context windows).
    model_dir = str(build_random_lm(Path(tmp) / config, config, tokenizer="words"))
    with session_scope() as s:
        backend = load_backend(s, model_dir)
    # Random weights emit EOS at random: without it every request makes exactly new_tokens.
    backend.model.generation_config.eos_token_id = None
    engine = pool_engine(max([1, *concurrency]))

    # Warm-up (allocations, kernels, compilation on CUDA) on both paths, then one call for the prompt.
    started = time.perf_counter()
    _, (warm,) = genloom_calls(engine, model_dir, collection, new_tokens, 1)
    with session_scope() as s:
        from genloom.db.models import Generation

        prompt = s.get(Generation, warm.generation_id).rendered_prompt
    input_ids = torch.tensor([backend._encode(prompt)], device=backend.device)
    plain_generate(backend, input_ids, new_tokens, 1)

    report: dict = {
        "benchmark": "generation",
        "config": config,
        "parameters": sum(p.numel() for p in backend.model.parameters()),
        "device": backend.device,
        "dtype": str(backend.dtype).replace("torch.", ""),
        "static_cache": backend.static_cache,
        "prompt_tokens": int(input_ids.shape[1]),
        "new_tokens": new_tokens,
        "warmup_s": round(time.perf_counter() - started, 2),
    }
    partial(report)

    # Batch 1: alternate the two paths so drift (other load on the machine) hits both.
    plain_s, calls = [], []
    for _ in range(repeats):
        plain_s.append(plain_generate(backend, input_ids, new_tokens, 1))
        elapsed, (result,) = genloom_calls(engine, model_dir, collection, new_tokens, 1)
        calls.append((elapsed, result))
    plain_tps = new_tokens / statistics.median(plain_s)
    e2e_tps = new_tokens / statistics.median(e for e, _ in calls)
    gen_tps = new_tokens / (statistics.median(r.timings_ms["generation"] for _, r in calls) / 1000)
    overhead = [1 - r.timings_ms["generation"] / r.timings_ms["total"] for _, r in calls]
    report["batch1"] = {
        "plain_generate_tokens_per_s": round(plain_tps, 2),
        "genloom_end_to_end_tokens_per_s": round(e2e_tps, 2),
        "genloom_generation_only_tokens_per_s": round(gen_tps, 2),
        "ratio_end_to_end_vs_plain": round(e2e_tps / plain_tps, 3),
        "ratio_generation_vs_plain": round(gen_tps / plain_tps, 3),
        "rag_overhead_share": round(statistics.median(overhead), 4),
        "median_ms": {k: round(statistics.median(r.timings_ms[k] for _, r in calls), 1)
                      for k in ("retrieval", "generation", "total")},
    }
    partial(report)

    report["concurrent"] = []
    for c in concurrency:
        # One untimed round per path first: a static cache is sized for one batch shape, so
        # plain `generate` compiles again for each new batch size.
        plain_generate(backend, input_ids, new_tokens, c)
        genloom_calls(engine, model_dir, collection, new_tokens, c)
        plain = plain_generate(backend, input_ids, new_tokens, c)
        elapsed, results = genloom_calls(engine, model_dir, collection, new_tokens, c)
        tokens = sum(r.tokens["output"] for r in results)
        report["concurrent"].append({
            "requests": c,
            "plain_generate_batched_tokens_per_s": round(c * new_tokens / plain, 2),
            "genloom_tokens_per_s": round(tokens / elapsed, 2),
            "ratio_vs_plain_batched": round((tokens / elapsed) / (c * new_tokens / plain), 3),
            "genloom_latency_ms_median": round(statistics.median(r.timings_ms["total"] for r in results), 1),
            "rag_overhead_share_median": round(
                statistics.median(1 - r.timings_ms["generation"] / r.timings_ms["total"] for r in results), 4),
        })
        partial(report)
    engine.dispose()
    report["machine"] = (
        torch.cuda.get_device_name(0) if backend.device.startswith("cuda")
        else f"{host_platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", help="small | tiny-llama | qwen2-0.5b")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[8, 32])
    parser.add_argument("--collection", default="bench-generation")
    parser.add_argument("--embedding-model", default=None, help="a local sentence-transformers folder (default: bundled MiniLM)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 keeps timings stable on a shared machine)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    report = measure(args.config, new_tokens=args.new_tokens, repeats=args.repeats, concurrency=args.concurrency,
                     collection=args.collection, embedding_model=args.embedding_model)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
