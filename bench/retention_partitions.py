"""Retention of the generation log: dropping monthly partitions vs the batched DELETE, in one run.

One store at revision 0015 (plain tables) is loaded with N generations spread evenly over the
last 12 months (one source each, feedback on 10 %), then copied (CREATE DATABASE … TEMPLATE).
The cut-off is 90 days back (`genloom retention --older-than 90d`), so ~3/4 of the log goes:

- baseline: the batched `DELETE` that `genloom retention` ran before migration 0023
  (genloom.analytics.retention.apply_retention, 10k generations per transaction), on the copy
  still at 0015;
- partitions: the other copy migrated to head (timed too: the one-off conversion), then
  `drop_expired_partitions` (DETACH + DROP of whole months, DELETE in the boundary month only).

Both must leave the same number of generations. Run:

    nice -n 19 python bench/retention_partitions.py --generations 1000000 --out retention/partitions.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import keep_server_versions, write_result  # noqa: E402

LOAD_SQL = [
    "INSERT INTO sessions DEFAULT VALUES",
    "INSERT INTO prompts (session_id, text, created_at) SELECT id, 'q', now() - interval '400 days' FROM sessions",
    # N generations, evenly over the last 360 days.
    """INSERT INTO generations (prompt_id, model_name, output, total_ms, created_at)
       SELECT (SELECT id FROM prompts), 'm', 'answer', g, now() - (g::float8 / :n) * interval '360 days'
       FROM generate_series(1, :n) g""",
    """INSERT INTO generation_sources (generation_id, rank, score) SELECT id, 1, 0.5 FROM generations""",
    """INSERT INTO feedback (generation_id, score, created_at)
       SELECT id, 1 + id % 5, created_at FROM generations WHERE id % 10 = 0""",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generations", type=int, default=1_000_000)
    p.add_argument("--out", default=None, help="write the JSON to bench/results/OUT")
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="genloom-bench-retention-"))
    os.environ["GENLOOM_HOME"] = str(home)
    os.environ.pop("DATABASE_URL", None)
    import psycopg
    import sqlalchemy as sa

    from genloom.analytics.retention import apply_retention, drop_expired_partitions
    from genloom.db import embedded, migrate
    from genloom.db.engine import get_engine, reset_engines

    server = embedded.start()
    out: dict = {"command": " ".join(["python", *sys.argv]), "generations": args.generations}
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            out["server"] = conn.execute("SHOW server_version").fetchone()[0]
            conn.execute("CREATE DATABASE bench_delete")
        os.environ["DATABASE_URL"] = embedded.uri_for_database(server, "bench_delete")
        engine = get_engine(migrate=False)
        migrate.upgrade(engine, "0018")
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in LOAD_SQL:
                conn.execute(sa.text(statement.replace(":n", str(args.generations))))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
        out["load_s"] = round(time.perf_counter() - started, 1)
        print(f"loaded {args.generations} generations in {out['load_s']} s", file=sys.stderr, flush=True)
        reset_engines()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_partitions TEMPLATE bench_delete STRATEGY FILE_COPY")
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=90)
        out["cutoff"] = cutoff.isoformat()

        # Baseline: the batched DELETE, on plain tables.
        engine = get_engine(migrate=False)
        t0 = time.perf_counter()
        deleted = apply_retention(engine, cutoff)
        out["delete"] = {"seconds": round(time.perf_counter() - t0, 2), "deleted": deleted}
        with engine.connect() as conn:
            out["delete"]["left"] = conn.execute(sa.text("SELECT count(*) FROM generations")).scalar()
        print(f"batched DELETE: {out['delete']}", file=sys.stderr, flush=True)
        reset_engines()

        # Partitions: convert (once), then drop whole months.
        os.environ["DATABASE_URL"] = embedded.uri_for_database(server, "bench_partitions")
        engine = get_engine(migrate=False)
        t0 = time.perf_counter()
        migrate.upgrade(engine, "head")
        out["migration_0023_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        dropped = drop_expired_partitions(engine, cutoff)
        drop_s = time.perf_counter() - t0
        prompts = apply_retention(engine, cutoff)  # what `genloom retention` runs next: prompts, sessions
        out["partitions"] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "drop_seconds": round(drop_s, 2),
            "dropped_partitions": len(dropped["dropped_partitions"]),
            "rows_in_dropped_partitions": dropped["rows_in_dropped_partitions"],
            "deleted_in_boundary": dropped["deleted_in_boundary"],
            "then_batched_delete": prompts,
        }
        with engine.connect() as conn:
            out["partitions"]["left"] = conn.execute(sa.text("SELECT count(*) FROM generations")).scalar()
        print(f"partition drop: {out['partitions']}", file=sys.stderr, flush=True)
        out["same_result"] = out["partitions"]["left"] == out["delete"]["left"]
        out["speedup_vs_delete"] = round(out["delete"]["seconds"] / out["partitions"]["seconds"], 1)
        out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        keep_server_versions(out)  # before the server stops
    finally:
        reset_engines()
        embedded.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(f"speed-up vs DELETE: {out['speedup_vs_delete']}x, same result: {out['same_result']}", file=sys.stderr)
    if args.out:
        print(write_result(args.out, out))


if __name__ == "__main__":
    main()
