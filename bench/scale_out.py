"""Scale-out figures: search latency on one node vs a Citus router query vs a fan-out, and replica lag.

1. Search latency. The same genloom-shaped table (tenant, 384-d embedding with an HNSW index,
   a tsvector with a GIN index) holds N chunks of T tenants, on the embedded single server and on
   a 3-node Citus cluster (`genloom db cluster init --workers 2`, distributed by tenant, 32 shards).
   Timed per query (median of R): a vector top-10 and a full-text top-10 for one tenant (on
   Citus a router query: one shard on one worker), and the same over all tenants (on Citus a
   fan-out over every shard, top-k merged on the coordinator). genloom's own schema is
   distributed the same way by `genloom db migrate` (docs/architecture.md#scaling-out; its
   search is a router query, checked against one node's results in tests/test_cluster.py);
   this table isolates the engine's paths from genloom's ingest, on the same data.
2. Replica lag under steady ingest: a streaming replica of the embedded server
   (`genloom db replica create`) while a writer inserts chunk-sized rows at a fixed rate;
   genloom.db.routing measures the lag every 0.5 s.

    nice -n 19 python bench/scale_out.py --chunks 20000 --out scale_out/scale_out.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import keep_server_versions, write_result  # noqa: E402

DIM = 384
TABLE = """CREATE TABLE bench_chunks (tenant text NOT NULL, id bigint NOT NULL, text text,
           tsv tsvector, embedding vector(384), PRIMARY KEY (tenant, id))"""
LOAD = """INSERT INTO bench_chunks
          SELECT 't' || (g % {tenants}), g, 'chunk ' || g || ' word' || (g % 997) || ' word' || (g % 101),
                 to_tsvector('simple', 'chunk word' || (g % 997) || ' word' || (g % 101)),
                 (SELECT array_agg(sin(g * 0.37 + j))::vector FROM generate_series(1, 384) j)
          FROM generate_series({start}, {stop}) g"""
INDEXES = [
    "CREATE INDEX ON bench_chunks USING hnsw (embedding vector_cosine_ops)",
    "CREATE INDEX ON bench_chunks USING gin (tsv)",
    "ANALYZE bench_chunks",
]
QUERY_VECTOR = "(SELECT array_agg(sin(12345 * 0.37 + j))::vector FROM generate_series(1, 384) j)"
QUERIES = {
    "vector top-10, one tenant": f"SELECT id FROM bench_chunks WHERE tenant = 't3' ORDER BY embedding <=> {QUERY_VECTOR} LIMIT 10",
    "vector top-10, all tenants": f"SELECT id FROM bench_chunks ORDER BY embedding <=> {QUERY_VECTOR} LIMIT 10",
    "full-text top-10, one tenant": "SELECT id FROM bench_chunks WHERE tenant = 't3' AND tsv @@ 'word7'::tsquery "
    "ORDER BY ts_rank(tsv, 'word7'::tsquery) DESC LIMIT 10",
    "full-text top-10, all tenants": "SELECT id FROM bench_chunks WHERE tsv @@ 'word7'::tsquery "
    "ORDER BY ts_rank(tsv, 'word7'::tsquery) DESC LIMIT 10",
}


def load(conn, chunks: int, tenants: int, *, distributed: bool) -> float:
    started = time.perf_counter()
    conn.execute(TABLE)
    if distributed:
        conn.execute("SET citus.shard_count = 32")
        conn.execute("SELECT create_distributed_table('bench_chunks', 'tenant')")
    step = 5000
    for start in range(1, chunks + 1, step):
        conn.execute(LOAD.format(tenants=tenants, start=start, stop=min(chunks, start + step - 1)))
    for statement in INDEXES:
        conn.execute(statement)
    return time.perf_counter() - started


def time_queries(conn, repeat: int) -> dict:
    out = {}
    for label, sql in QUERIES.items():
        runs = []
        for _ in range(repeat + 1):  # the first run warms caches and is dropped
            t0 = time.perf_counter()
            conn.execute(sql).fetchall()
            runs.append((time.perf_counter() - t0) * 1000)
        out[label] = {"median_ms": round(statistics.median(runs[1:]), 2), "best_ms": round(min(runs[1:]), 2)}
        print(f"  {label:32s} {out[label]['median_ms']:8.2f} ms", file=sys.stderr, flush=True)
    return out


def tasks_of(conn, sql: str) -> int | None:
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql).fetchall())
    for line in plan.splitlines():
        if "Task Count:" in line:
            return int(line.split(":")[1])
    return None


def replica_lag(seconds: float, rate: int) -> dict:
    """Lag samples while a writer inserts `rate` rows/s into the primary for `seconds`."""
    import psycopg

    from genloom.db import replicas, routing
    from genloom.db.engine import get_engine, libpq_url

    engine = get_engine()
    folder = Path(tempfile.mkdtemp(prefix="genloom-bench-replica-")) / "standby"
    replicas.create(folder)
    url = routing.read_urls()[0]
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with psycopg.connect(libpq_url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS bench_ingest (id bigserial PRIMARY KEY, text text, e vector(384))")
            while not stop.is_set():
                t0 = time.perf_counter()
                conn.execute(
                    "INSERT INTO bench_ingest (text, e) SELECT repeat('x', 1000), "
                    "(SELECT array_agg(random())::vector FROM generate_series(1, 384)) FROM generate_series(1, %s)",
                    (rate // 10,),
                )
                written[0] += rate // 10
                time.sleep(max(0.0, 0.1 - (time.perf_counter() - t0)))

    thread = threading.Thread(target=writer)
    thread.start()
    samples = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        verdict = routing.measure(url, engine)
        samples.append(verdict.lag_s if verdict.lag_s is not None else float("nan"))
        time.sleep(0.5)
    stop.set()
    thread.join()
    replicas.remove(folder)
    shutil.rmtree(folder.parent, ignore_errors=True)
    finite = sorted(s for s in samples if s == s)
    return {
        "seconds": seconds,
        "target_rows_per_s": rate,
        "rows_written": written[0],
        "row_bytes_approx": 1000 + 4 * DIM,
        "samples": len(samples),
        "lag_s_median": round(statistics.median(finite), 3) if finite else None,
        "lag_s_p95": round(finite[int(0.95 * (len(finite) - 1))], 3) if finite else None,
        "lag_s_max": round(finite[-1], 3) if finite else None,
        "fell_back_to_primary": sum(1 for s in samples if not (s == s) or s > routing.max_lag_s()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=20_000)
    p.add_argument("--tenants", type=int, default=16)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--lag-seconds", type=float, default=30)
    p.add_argument("--rate", type=int, default=500, help="rows per second the writer inserts")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import psycopg

    from genloom.db import cluster, embedded
    from genloom.db.engine import get_engine, libpq_url, reset_engines

    out: dict = {"command": " ".join(["python", *sys.argv]), "chunks": args.chunks, "tenants": args.tenants}
    homes = []
    try:
        # 1a. one node: the embedded server
        home = Path(tempfile.mkdtemp(prefix="genloom-bench-single-"))
        homes.append(home)
        os.environ["GENLOOM_HOME"] = str(home)
        os.environ.pop("DATABASE_URL", None)
        reset_engines()
        get_engine()  # starts and migrates the store (the vector extension)
        with psycopg.connect(libpq_url(), autocommit=True) as conn:
            out["server"] = conn.execute("SHOW server_version").fetchone()[0]
            print("single node:", file=sys.stderr)
            out["single_node"] = {"load_s": round(load(conn, args.chunks, args.tenants, distributed=False), 1)}
            out["single_node"]["queries"] = time_queries(conn, args.repeat)
        # 2. replica lag, on the same embedded server
        print("replica lag under steady ingest:", file=sys.stderr)
        out["replica_lag"] = lag = replica_lag(args.lag_seconds, args.rate)
        print(f"  {lag}", file=sys.stderr)
        reset_engines()
        embedded.stop()

        # 1b. Citus: coordinator + 2 workers
        home = Path(tempfile.mkdtemp(prefix="genloom-bench-citus-"))
        homes.append(home)
        os.environ["GENLOOM_HOME"] = str(home)
        made = cluster.init(2, progress=lambda m: print("  " + m, file=sys.stderr))
        with psycopg.connect(made["coordinator"], autocommit=True) as conn:
            out["citus_version"] = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'").fetchone()[0]
            print("citus (coordinator + 2 workers):", file=sys.stderr)
            out["citus"] = {"load_s": round(load(conn, args.chunks, args.tenants, distributed=True), 1)}
            out["citus"]["queries"] = time_queries(conn, args.repeat)
            out["citus"]["tasks"] = {label: tasks_of(conn, sql) for label, sql in QUERIES.items()}
        single, citus = out["single_node"]["queries"], out["citus"]["queries"]
        out["ratio_citus_to_single_median"] = {
            label: round(citus[label]["median_ms"] / single[label]["median_ms"], 2) for label in QUERIES
        }
        out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        keep_server_versions(out)  # the Citus coordinator's, before the cluster stops
    finally:
        reset_engines()
        if os.environ.get("GENLOOM_HOME") and cluster.nodes():
            cluster.stop()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)
    if args.out:
        print(write_result(args.out, out))


if __name__ == "__main__":
    main()
