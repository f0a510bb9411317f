"""Server time of the UI's Generations pages at scale: the list, a filtered list and a detail page.

Fills a fresh database with N generations (default 1,000,000) in SQL (generate_series), logs in
with a reader key, and times each page through the real app (FastAPI in-process, the same code
`genloom serve` runs), median of repeated requests after one warm-up. Target: each < 300 ms.

    GENLOOM_HOME=/tmp/ui/home nice -n 19 python bench/ui_pages.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import environment  # noqa: E402

FILL = """
INSERT INTO sessions (id, user_id, collection_id, metadata)
SELECT g, 'user' || (g % 50), NULL, '{}' FROM generate_series(1, :sessions) g;
INSERT INTO prompts (id, session_id, user_id, text, template_name, template_version, metadata, created_at)
SELECT g, 1 + g % :sessions, 'user' || (g % 50), 'question number ' || g, 'default', 1, '{}',
       now() - make_interval(secs => (:n - g) * 2)
FROM generate_series(1, :n) g;
INSERT INTO generations (id, prompt_id, model_name, params, output, status, retrieval_ms, generation_ms, total_ms,
                         input_tokens, output_tokens, created_at)
SELECT g, g, 'model-' || (g % 5),
       jsonb_build_object('finish_reason', CASE WHEN g % 17 = 0 THEN 'abstain' ELSE 'stop' END),
       'answer ' || g, CASE WHEN g % 97 = 0 THEN 'error' ELSE 'ok' END, 5 + g % 20, 50 + g % 400, 60 + g % 420,
       100 + g % 300, 20 + g % 80, now() - make_interval(secs => (:n - g) * 2)
FROM generate_series(1, :n) g;
INSERT INTO feedback (generation_id, score, thumbs, created_at)
SELECT g, 1 + g % 5, CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END, now() FROM generate_series(7, :n, 7) g;
SELECT setval(pg_get_serial_sequence('sessions', 'id'), :sessions);
SELECT setval(pg_get_serial_sequence('prompts', 'id'), :n);
SELECT setval(pg_get_serial_sequence('generations', 'id'), :n);
ANALYZE sessions; ANALYZE prompts; ANALYZE generations; ANALYZE feedback;
"""

PAGES = {
    "list": "/ui/generations",
    "list_page_2": "/ui/generations?before={before}",
    # model-3 is every 5th row, feedback every 7th, latency >= 200 ms 70% of rows: a match every ~50 rows.
    "filtered": "/ui/generations?model=model-3&has_feedback=yes&min_ms=200",
    # The worst case of a keyset scan in id order: a filter nothing matches reads the whole log.
    "filtered_no_match": "/ui/generations?model=no-such-model&min_ms=200",
    "detail": "/ui/generations/{mid}",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", default="bench/results/ui/ui_pages.json")
    args = parser.parse_args()

    import re

    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from genloom.api.auth import SecuritySettings
    from genloom.db.engine import get_engine, session_scope
    from genloom.keys import create_key
    from genloom.server import create_app

    engine = get_engine()
    with engine.begin() as conn:
        filled = conn.execute(sa.text("SELECT count(*), (SELECT count(*) FROM feedback) FROM generations")).one()
    started = time.perf_counter()
    if tuple(filled) != (args.rows, args.rows // 7):
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE feedback, generation_sources, generations, prompts, sessions CASCADE"))
            for statement in FILL.split(";"):
                if statement.strip():
                    conn.execute(sa.text(statement), {"n": args.rows, "sessions": max(args.rows // 20, 1)})
    fill_s = time.perf_counter() - started
    with session_scope() as s:
        key = create_key(s, role="reader").key
    client = TestClient(create_app(SecuritySettings(auth=True)), base_url="http://127.0.0.1")
    form = client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert client.post("/ui/login", data={"key": key, "csrf": token}, follow_redirects=False).status_code == 303
    results = {}
    for name, path in PAGES.items():
        url = path.format(before=args.rows - 50, mid=args.rows // 2)
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t0) * 1000.0)
            assert response.status_code == 200
        results[name] = {
            "url": url,
            "median_ms": round(statistics.median(times), 2),
            "p95_ms": round(sorted(times)[int(0.95 * (len(times) - 1))], 2),
            "under_300_ms": statistics.median(times) < 300,
        }
        print(name, results[name], flush=True)
    with engine.connect() as conn:
        postgres = conn.execute(sa.text("SHOW server_version")).scalar()
        pgvector = conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
    out = {
        "command": " ".join(["python", *sys.argv]),
        "environment": environment() | {"postgresql": postgres, "pgvector": pgvector},
        "rows": {"generations": args.rows, "feedback": args.rows // 7},
        "fill_seconds": round(fill_s, 1),
        "how": "server time: the whole request through the app in-process (auth, query, template), median of "
        f"{args.repeat} after one warm-up, on a reader's session",
        "pages": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
