"""Vector retrieval under row-level security: does the HNSW index stay in use, does k stay k, what does it cost?

Three tenants of N synthetic vectors each share one embeddings table and its HNSW index.
The same k-NN query (LIMIT k, ef_search 40, iterative scan as retrieval sets it) runs:

  all      as the superuser, no tenant filter: the cost before tenants existed (baseline)
  filter   as the superuser with an explicit `AND tenant = 'b'`: the filter without RLS
  rls      as genloom does it: SET LOCAL ROLE genloom_app, genloom.tenant = 'b', the policy filters

Reports p50/p95 per variant, rows per query (must be k), whether EXPLAIN shows the index,
and the ratios rls/all and rls/filter measured in the same run.

    nice -n 10 python bench/tenancy_rls.py --per-tenant 10000 --out bench/results/tenancy/rls_vector.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-tenant", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench/results/tenancy/rls_vector.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("GENLOOM_HOME", "/tmp/genloom-bench")
    os.environ.pop("GENLOOM_TENANT", None)

    import numpy as np
    import psycopg
    import sqlalchemy as sa
    from genloom.db import embedded
    from genloom.db.engine import get_engine, reset_engines
    from genloom.db.tenancy import use_tenant
    from genloom.retrieval.vector import ensure_embedding_model, hnsw_index_name
    from sqlalchemy.orm import Session

    server = embedded.start()
    name = "genloom_bench_rls"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    os.environ["DATABASE_URL"] = embedded.uri_for_database(server, name)
    reset_engines()
    engine = get_engine()
    rng = np.random.default_rng(14)
    started = time.perf_counter()
    model_id = None
    for tenant in ("a", "b", "c"):
        with use_tenant(tenant), Session(engine) as s, s.begin():
            model = ensure_embedding_model(s, f"synthetic-{args.dim}", args.dim)
            model_id = model.id
            cid = s.execute(
                sa.text(
                    "INSERT INTO collections (name, embedding_model_id) VALUES ('kb', :m) RETURNING id"
                ),
                {"m": model.id},
            ).scalar()
            s.execute(
                sa.text(
                    "INSERT INTO documents (collection_id, external_id, sha256, metadata) "
                    "SELECT :c, 'd' || g, md5(g::text) || md5(g::text), '{}' FROM generate_series(1, :n) g"
                ),
                {"c": cid, "n": args.per_tenant},
            )
            s.execute(
                sa.text(
                    "INSERT INTO chunks (document_id, ordinal, text, token_count, metadata) "
                    "SELECT id, 0, external_id, 1, '{}' FROM documents WHERE collection_id = :c"
                ),
                {"c": cid},
            )
            ids = (
                s.execute(
                    sa.text(
                        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id "
                        "WHERE d.collection_id = :c ORDER BY c.id"
                    ),
                    {"c": cid},
                )
                .scalars()
                .all()
            )
            vectors = rng.standard_normal((len(ids), args.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            s.execute(
                sa.text(
                    "INSERT INTO embeddings (chunk_id, embedding_model_id, embedding) "
                    "SELECT unnest(CAST(:ids AS bigint[])), :m, unnest(CAST(:v AS text[]))::vector"
                ),
                {
                    "ids": list(ids),
                    "m": model.id,
                    "v": ["[" + ",".join(f"{x:.6f}" for x in v) + "]" for v in vectors],
                },
            )
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE embeddings"))
    load_seconds = time.perf_counter() - started

    order = f"ORDER BY (e.embedding::vector({args.dim})) <=> CAST(:q AS vector({args.dim})) LIMIT {args.k}"
    base = (
        f"SELECT e.chunk_id FROM embeddings e WHERE e.embedding_model_id = {model_id}"
    )
    variants = {
        "all": base + " " + order,
        "filter": base + " AND e.tenant = 'b' " + order,
        "rls": base + " " + order,
    }
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    texts = ["[" + ",".join(f"{x:.6f}" for x in q) + "]" for q in queries]
    settings = "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', '40', true)"
    result = {}
    for variant, sql in variants.items():
        times, rows = [], []
        with (
            use_tenant("b"),
            Session(engine) if variant == "rls" else engine.connect() as conn,
        ):
            for i, q in enumerate(texts):
                tx = conn.begin()
                conn.execute(sa.text(settings))
                if i == 0:
                    plan = "\n".join(
                        conn.execute(sa.text("EXPLAIN " + sql), {"q": q}).scalars()
                    )
                t0 = time.perf_counter()
                got = conn.execute(sa.text(sql), {"q": q}).all()
                times.append((time.perf_counter() - t0) * 1000)
                rows.append(len(got))
                tx.rollback()
        result[variant] = {
            "p50_ms": round(statistics.median(times), 3),
            "p95_ms": round(sorted(times)[int(0.95 * len(times)) - 1], 3),
            "rows_min": min(rows),
            "rows_max": max(rows),
            "uses_hnsw_index": hnsw_index_name(model_id) in plan,
        }
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        sha = None
    out = {
        "benchmark": "tenancy_rls_vector",
        "machine": {
            "cpus": os.cpu_count(),
            "python": host_platform.python_version(),
            "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        },
        "git_sha": sha,
        "tenants": 3,
        "per_tenant": args.per_tenant,
        "dim": args.dim,
        "k": args.k,
        "queries": args.queries,
        "load_seconds": round(load_seconds, 1),
        "variants": result,
        "ratio_p50_rls_over_all": round(
            result["rls"]["p50_ms"] / result["all"]["p50_ms"], 3
        ),
        "ratio_p50_rls_over_filter": round(
            result["rls"]["p50_ms"] / result["filter"]["p50_ms"], 3
        ),
    }
    reset_engines()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
