"""Analytics views at volume: load N synthetic generations (default 1M) and time every view.

    python bench/analytics.py                     # 1M generations in a fresh embedded server (temp GENLOOM_HOME)
    python bench/analytics.py --generations 100000 --home /tmp/gl-bench --keep

Rows come from `generate_series` in SQL (no Python loop), in the proportions of a busy
RAG service: one prompt per generation, 10 generations per session, 3 sources each,
feedback on 15 %, 2 % errors, 4 models, 3 template versions, 2,000 documents of 10
chunks, spread over 90 days. Foreign-key triggers are skipped while loading
(session_replication_role = replica: the rows are consistent by construction).

Each view is timed the way people use it (the whole aggregate for the summary views,
a point lookup or a top-N for the row-level ones), warm, best and median of --repeat
runs, wall time on the client including fetching every row. The target: v_model_stats
≤ 1 s at 1M generations. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as py_platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

LOAD_SQL = [
    # Reference rows first: a collection, documents, chunks, templates, a registry model.
    "INSERT INTO collections (name) VALUES ('bench')",
    """INSERT INTO documents (collection_id, external_id, version, title, sha256)
       SELECT (SELECT id FROM collections WHERE name = 'bench'), 'doc-' || d, 1, 'Document ' || d, md5(d::text) || md5(d::text)
       FROM generate_series(1, 2000) d""",
    """INSERT INTO chunks (document_id, ordinal, text, token_count)
       SELECT d.id, o, 'chunk ' || o || ' of ' || d.external_id, 50
       FROM documents d CROSS JOIN generate_series(0, 9) o""",
    """INSERT INTO prompt_templates (name, version, text)
       SELECT 'rag', v, 'template v' || v FROM generate_series(1, 3) v""",
    """INSERT INTO models (name, version, architecture, sha256, size_bytes, checkpoint)
       VALUES ('demo-gpt', 1, 'transformer', repeat('0', 64), 1, '\\x00')""",
    # Sessions: one per 10 generations, spread over 90 days.
    """INSERT INTO sessions (user_id, collection_id, created_at)
       SELECT 'user-' || (s % 5000), (SELECT id FROM collections WHERE name = 'bench'),
              now() - interval '90 days' + (s::float8 / :sessions) * interval '90 days'
       FROM generate_series(1, :sessions) s""",
    """INSERT INTO prompts (session_id, text, template_name, template_version, created_at)
       SELECT (SELECT min(id) FROM sessions) + (g - 1) / 10, 'question ' || g, 'rag', 1 + g % 3,
              now() - interval '90 days' + (g::float8 / :n) * interval '90 days'
       FROM generate_series(1, :n) g""",
    # Models: 40 % extractive, 30 % qwen, 20 % the registry model, 10 % llama; 2 % errors.
    """INSERT INTO generations (prompt_id, model_name, model_revision, model_id, status, error,
                                retrieval_ms, generation_ms, total_ms, input_tokens, output_tokens, output, created_at)
       SELECT p.id,
              CASE WHEN m < 40 THEN 'extractive' WHEN m < 70 THEN 'qwen2-0.5b' WHEN m < 90 THEN 'demo-gpt' ELSE 'llama-1b' END,
              CASE WHEN m < 40 THEN NULL ELSE 'rev-' || (m % 3) END,
              CASE WHEN m BETWEEN 70 AND 89 THEN (SELECT id FROM models WHERE name = 'demo-gpt') END,
              CASE WHEN e < 2 THEN 'error' ELSE 'ok' END,
              CASE WHEN e < 2 THEN 'CUDA out of memory' END,
              5 + random() * 40,
              CASE WHEN e < 2 THEN NULL ELSE 50 + random() * random() * 2000 END,
              60 + random() * random() * 2100,
              200 + (random() * 800)::int,
              CASE WHEN e < 2 THEN NULL ELSE 20 + (random() * 200)::int END,
              'answer',
              p.created_at + interval '1 second'
       FROM (SELECT id, created_at, (id * 7919) % 100 AS m, (id * 104729) % 100 AS e FROM prompts) p""",
    # Three sources per generation, ranks 1..3.
    """INSERT INTO generation_sources (generation_id, generation_created_at, rank, chunk_id, score, bm25_rank, bm25_score,
                                       vector_rank, vector_score)
       SELECT g.id, g.created_at, r, c0 + ((g.id * 31 + r * 7919) % 20000), 1.0 / (60 + r), r, 10.0 / r, r, 0.9 / r
       FROM generations g CROSS JOIN generate_series(1, 3) r, (SELECT min(id) AS c0 FROM chunks) c""",
    # Feedback on 15 % of generations: a score, and a thumb on half of those.
    """INSERT INTO feedback (generation_id, generation_created_at, user_id, score, thumbs, created_at)
       SELECT g.id, g.created_at, 'user', 1 + (g.id * 13) % 5, CASE WHEN g.id % 2 = 0 THEN CASE WHEN g.id % 3 = 0 THEN -1 ELSE 1 END END,
              g.created_at + interval '1 minute'
       FROM generations g WHERE g.id % 20 < 3""",
]

# How each view is typically queried.
QUERIES = {
    # Baselines in the same run: one parallel scan of the log, and the straightforward
    # per-model GROUP BY with percentile_cont that v_model_stats replaces (sorts the log).
    "baseline: count(*) FROM generations": "SELECT count(*) FROM generations",
    "baseline: naive per-model percentile GROUP BY": """
        SELECT model_name, model_revision, model_id, count(*),
               count(*) FILTER (WHERE status = 'error'),
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY retrieval_ms),
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY generation_ms),
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY total_ms)
        FROM generations GROUP BY 1, 2, 3""",
    "v_model_stats": "SELECT * FROM v_model_stats",
    "v_model_stats (one model)": "SELECT * FROM v_model_stats WHERE model_name = 'demo-gpt'",
    "v_template_stats": "SELECT * FROM v_template_stats",
    "v_daily": "SELECT * FROM v_daily ORDER BY day",
    "v_daily (last 7 days)": "SELECT * FROM v_daily WHERE day >= current_date - 7",
    "v_model_daily": "SELECT * FROM v_model_daily ORDER BY day, model_name",
    "v_chunk_citations (top 20)": "SELECT * FROM v_chunk_citations ORDER BY citations DESC LIMIT 20",
    "v_document_citations (top 20)": "SELECT * FROM v_document_citations ORDER BY citations DESC LIMIT 20",
    "v_documents_never_cited": "SELECT * FROM v_documents_never_cited",
    "v_feedback_explained (one feedback)": "SELECT * FROM v_feedback_explained WHERE feedback_id = (SELECT max(id) FROM feedback)",
    "v_feedback_explained (50 worst, latest)": "SELECT * FROM v_feedback_explained WHERE score = 1 ORDER BY feedback_at DESC LIMIT 50",
    "v_feedback_sources (one generation)": "SELECT * FROM v_feedback_sources WHERE generation_id = (SELECT max(generation_id) FROM feedback)",
    "v_dataset_versions": "SELECT * FROM v_dataset_versions",
    "v_dataset_lineage": "SELECT * FROM v_dataset_lineage",
    "v_run_final_metrics": "SELECT * FROM v_run_final_metrics",
    "v_runs": "SELECT * FROM v_runs",
    "v_leaderboard": "SELECT * FROM v_leaderboard",
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generations", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--home", type=Path, help="GENLOOM_HOME to use (default: a temporary one, deleted afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the loaded database (reuse it with --home … --no-load)")
    p.add_argument("--no-load", action="store_true", help="time the views on data loaded by an earlier --keep run")
    p.add_argument("--out", default=None, help="also write the JSON to bench/results/OUT")
    p.add_argument("--work-mem", default=None, help="SET work_mem for the timing session, e.g. 64MB (default: server's)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="genloom-bench-analytics-"))
    os.environ["GENLOOM_HOME"] = str(home)
    os.environ.pop("DATABASE_URL", None)
    import psycopg
    import sqlalchemy as sa

    from genloom.db.engine import get_engine, libpq_url

    engine = get_engine()  # starts the embedded server, migrates
    url = libpq_url()
    out: dict = {
        "generations": args.generations,
        "machine": {"cpus": os.cpu_count(), "platform": py_platform.platform(), "python": py_platform.python_version()},
    }
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            out["server"] = conn.execute("SHOW server_version").fetchone()[0]
            out["work_mem"] = args.work_mem or conn.execute("SHOW work_mem").fetchone()[0]
            if not args.no_load:
                started = time.perf_counter()
                existing = conn.execute("SELECT count(*) FROM generations").fetchone()[0]
                if existing:
                    raise SystemExit(f"{home} already holds {existing} generations: use --no-load, or another --home")
                conn.execute("SET session_replication_role = replica")
                load_ms = {}
                for statement in LOAD_SQL:
                    t0 = time.perf_counter()
                    sql = statement.replace(":sessions", str(max(1, args.generations // 10))).replace(":n", str(args.generations))
                    conn.execute(sql)
                    table = sql.split("INTO", 1)[1].split()[0]
                    load_ms[table] = load_ms.get(table, 0) + round((time.perf_counter() - t0) * 1000)
                    print(f"loaded {table} in {load_ms[table] / 1000:.1f} s", file=sys.stderr, flush=True)
                conn.execute("SET session_replication_role = origin")
                conn.execute("VACUUM ANALYZE")
                out["load_s"] = round(time.perf_counter() - started, 1)
                out["load_ms_by_table"] = load_ms
            out["rows"] = {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("sessions", "prompts", "generations", "generation_sources", "feedback", "chunks")
            }
            if args.work_mem:
                conn.execute(f"SET work_mem = '{args.work_mem}'")
            timings = {}
            for label, query in QUERIES.items():
                runs = []
                rows = 0
                for _ in range(args.repeat + 1):  # the first run warms the cache and is dropped
                    t0 = time.perf_counter()
                    rows = len(conn.execute(query).fetchall())
                    runs.append((time.perf_counter() - t0) * 1000)
                runs = runs[1:]
                timings[label] = {"best_ms": round(min(runs), 1), "median_ms": round(statistics.median(runs), 1), "rows": rows}
                print(f"{label:42s} best {min(runs):8.1f} ms  median {statistics.median(runs):8.1f} ms  rows {rows}",
                      file=sys.stderr, flush=True)
            out["views"] = timings
            best = timings["v_model_stats"]["median_ms"]
            out["target"] = {
                "v_model_stats_median_ms": best,
                "limit_ms": 1000,
                "met": best <= 1000,
                "vs_naive_group_by": round(timings["baseline: naive per-model percentile GROUP BY"]["median_ms"] / best, 2),
                "vs_full_scan": round(best / timings["baseline: count(*) FROM generations"]["median_ms"], 1),
            }
            load = os.getloadavg()
            out["machine"]["loadavg_1_5_15"] = [round(x, 1) for x in load]
        if args.out:
            sys.path.insert(0, str(REPO / "bench"))
            from benchlib import keep_server_versions

            keep_server_versions(out)  # before the server stops
    finally:
        engine.dispose()
        if not args.keep:
            from genloom.db import embedded

            embedded.stop()
            if args.home is None:
                shutil.rmtree(home, ignore_errors=True)
    if args.out:
        sys.path.insert(0, str(REPO / "bench"))
        from benchlib import write_result

        write_result(args.out, out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
