"""Open-loop load on `genloom serve` at rising rates, and a short soak; loopback only, bounded.

    nice -n 10 python bench/serve_load.py                              # rates 0.5,1,2,4,8 req/s, 20 s each
    nice -n 10 python bench/serve_load.py --rates 1,2 --duration 10 --soak 60 --soak-rate 1

Set-up: a fresh embedded server in a temporary GENLOOM_HOME (or the DATABASE_URL you give),
the bundled sample documents ingested as collection `bench`, then `genloom serve` started as a
child process on 127.0.0.1 with the extractive backend (no language model: the answer is
quoted sentences; each request still runs hybrid retrieval, embeds the question and the
sources' sentences with MiniLM, and logs session, prompt, generation and sources).

Open loop: request i is sent at t0 + its Poisson arrival time, whether or not earlier ones have
been answered (a closed loop would slow its own offered load and hide the knee). Each step
records throughput (answered 2xx per second over the step, drain included), latency p50/p95/p99
of the answered requests, and every refusal (429/503 from the server's queue bound) and client
error. After each step the generations table is compared with the responses: every 2xx (and
logged 500) has exactly one generations row with its id, and nothing else was logged.

The knee: the highest offered rate at which every request was answered (no refusal, no error)
with p95 within 3x the lowest rate's p95; past it, latency climbs or the queue bound refuses work.

Soak (--soak SECONDS): a constant rate below the knee; every 5 s the server process's RSS and
its open database connections are sampled. "Flat": the median of the last third of the samples
is within 15 % (RSS) and within the pool bound (connections) of the first third's.

Bounds: --max-requests caps the requests of the whole run, every request has a timeout, and
the server is stopped at the end. JSON goes to bench/results/serve_load/ (and stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "platform"), str(REPO), str(REPO / "bench")]

from benchlib import environment, keep_server_versions, write_result  # noqa: E402

QUESTIONS = [
    "How does genloom rank keywords with BM25?",
    "What are the default k1 and b parameters?",
    "How is the inverse document frequency computed?",
    "How are embeddings stored in PostgreSQL?",
    "What does hybrid search combine?",
    "How does reciprocal rank fusion work?",
    "What happens during ingestion of a document?",
    "How are documents split into chunks?",
    "Which index does vector search use?",
    "What is the single source of truth in genloom?",
    "How are unchanged documents detected on re-ingest?",
    "What text-search configuration is used by default?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def cli(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


async def one_request(client, url: str, headers: dict, question: str, timeout: float) -> dict:
    started = time.perf_counter()
    try:
        r = await client.post(url, json={"question": question, "collection": "bench"}, headers=headers,
                              timeout=timeout)
        out = {"status": r.status_code, "seconds": time.perf_counter() - started}
        if r.status_code in (200, 500):
            out["generation_id"] = r.json().get("generation_id") or r.json().get("error", {}).get("generation_id")
        if r.status_code in (429, 503):
            out["retry_after"] = r.headers.get("retry-after")
        return out
    except Exception as exc:  # timeout, connection refused or reset: a client-side error
        return {"status": None, "error": type(exc).__name__, "seconds": time.perf_counter() - started}


async def open_loop(base: str, headers: dict, rate: float, duration: float, budget: int, timeout: float,
                    rng: random.Random) -> tuple[list[dict], float]:
    import httpx

    arrivals, t = [], rng.expovariate(rate)
    while t < duration and len(arrivals) < budget:
        arrivals.append(t)
        t += rng.expovariate(rate)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits) as client:
        t0 = time.perf_counter()
        tasks = []
        for i, at in enumerate(arrivals):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(
                one_request(client, f"{base}/v1/ask", headers, QUESTIONS[i % len(QUESTIONS)], timeout)))
        results = await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return list(results), max(wall, duration)


def summarise(rate: float, results: list[dict], wall: float) -> dict:
    ok = [r["seconds"] for r in results if r["status"] == 200]
    by_status: dict[str, int] = {}
    for r in results:
        key = str(r["status"]) if r["status"] is not None else f"client:{r.get('error')}"
        by_status[key] = by_status.get(key, 0) + 1
    return {
        "offered_rate": rate,
        "sent": len(results),
        "sent_rate_per_s": round(len(results) / max(wall, 1e-9), 3),
        "answered_2xx": len(ok),
        "throughput_per_s": round(len(ok) / wall, 3),
        "wall_s": round(wall, 2),
        "latency_ms": {f"p{q}": (round(1000 * v, 1) if (v := percentile(ok, q)) is not None else None)
                       for q in (50, 95, 99)},
        "by_status": by_status,
        "refused": sum(1 for r in results if r["status"] in (429, 503)),
        "errors": sum(1 for r in results if r["status"] not in (200, 429, 503)),
    }


def logged_check(engine, since_id: int, results: list[dict]) -> dict:
    """Rows logged == requests answered: one generations row per 2xx/500 response, no others."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        ids = set(conn.execute(sa.text("SELECT id FROM generations WHERE id > :i"), {"i": since_id}).scalars())
    answered = {r["generation_id"] for r in results if r["status"] in (200, 500) and r.get("generation_id")}
    return {"rows_logged": len(ids), "requests_answered": len(answered),
            "equal": ids == answered, "logged_not_answered": len(ids - answered), "answered_not_logged": len(answered - ids)}


def max_generation_id(engine) -> int:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM generations")).scalar())


def knee(steps: list[dict]) -> float | None:
    """The highest offered rate (before the first unhealthy step) at which every request sent was
    answered 2xx and p95 stayed within 3x the lowest rate's p95."""
    base_p95 = next((s["latency_ms"]["p95"] for s in steps if s["latency_ms"]["p95"]), None)
    best = None
    for s in steps:
        p95 = s["latency_ms"]["p95"]
        healthy = (s["sent"] > 0 and s["answered_2xx"] == s["sent"] and p95 is not None
                   and base_p95 is not None and p95 <= 3 * base_p95)
        if not healthy:
            break
        best = s["offered_rate"]
    return best


async def soak(base: str, headers: dict, rate: float, seconds: float, timeout: float, server_pid: int, engine,
               rng: random.Random) -> dict:
    import psutil
    import sqlalchemy as sa

    proc = psutil.Process(server_pid)
    samples: list[dict] = []
    stop = time.monotonic() + seconds

    async def sampler():
        while time.monotonic() < stop:
            with engine.connect() as conn:
                conns = conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'genloom-api'")).scalar()
            samples.append({"t": round(seconds - (stop - time.monotonic()), 1),
                            "rss_mib": round(proc.memory_info().rss / 2**20, 1), "db_connections": int(conns),
                            "threads": proc.num_threads()})
            await asyncio.sleep(5)

    since = max_generation_id(engine)
    sampling = asyncio.create_task(sampler())
    results, wall = await open_loop(base, headers, rate, seconds, 10**9, timeout, rng)
    await sampling
    third = max(1, len(samples) // 3)
    first = statistics.median(s["rss_mib"] for s in samples[:third])
    last = statistics.median(s["rss_mib"] for s in samples[-third:])
    conn_first = statistics.median(s["db_connections"] for s in samples[:third])
    conn_last = statistics.median(s["db_connections"] for s in samples[-third:])
    return {
        "rate": rate, "seconds": seconds, **summarise(rate, results, wall),
        "logged": logged_check(engine, since, results),
        "rss_mib_first_third_median": first, "rss_mib_last_third_median": last,
        "rss_growth": round(last / first - 1, 4),
        "db_connections_first_third_median": conn_first, "db_connections_last_third_median": conn_last,
        "flat": last <= first * 1.15 and conn_last <= max(conn_first * 1.5, conn_first + 8),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="0.5,1,2,4,8", help="offered request rates (per second), rising")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals per rate")
    parser.add_argument("--max-requests", type=int, default=1500, help="cap on requests over the whole run")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request client timeout (s)")
    parser.add_argument("--soak", type=float, default=0.0, help="soak seconds at --soak-rate (0: no soak)")
    parser.add_argument("--soak-rate", type=float, default=None, help="default: half the knee")
    parser.add_argument("--max-concurrent", type=int, default=4)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--queue-timeout", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=6, help="requests before the first step (model loading)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="serve_load/load.json", help="path under bench/results/")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    home = None
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    if not env.get("DATABASE_URL"):
        home = tempfile.mkdtemp(prefix="genloom-serve-load-")
        env["GENLOOM_HOME"] = home
        os.environ["GENLOOM_HOME"] = home
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")})
    server = None
    report: dict = {"environment": environment(), "config": vars(args)}
    try:
        r = cli("ingest", str(REPO / "platform" / "genloom" / "data" / "sample_docs"), "--collection", "bench", env=env)
        if r.returncode:
            raise SystemExit(f"ingest failed: {r.stderr.strip()[-500:]}")
        if not env.get("GENLOOM_API_KEY"):  # serve requires a key by default: a writer may ask (it logs)
            r = cli("keys", "create", "--role", "writer", "--json", env=env)
            if r.returncode:
                raise SystemExit(f"keys create failed: {r.stderr.strip()[-500:]}")
            env["GENLOOM_API_KEY"] = json.loads(r.stdout)["key"]
        headers = {"Authorization": f"Bearer {env['GENLOOM_API_KEY']}"}
        from genloom.db.engine import get_engine

        engine = get_engine()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, str(REPO / "cli.py"), "serve", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--max-concurrent", str(args.max_concurrent), "--max-queue",
             str(args.max_queue), "--queue-timeout", str(args.queue_timeout)],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {server.stderr.read()[-1000:] if server.stderr else ''}")
            time.sleep(0.5)
        for i in range(args.warmup):  # the first requests load MiniLM: not part of any step
            r = httpx.post(f"{base}/v1/ask", json={"question": QUESTIONS[i % len(QUESTIONS)], "collection": "bench"},
                           headers=headers, timeout=args.timeout)
            if r.status_code != 200:  # a refused warm-up would make every step a list of refusals
                raise SystemExit(f"warm-up request answered {r.status_code}: {r.text[:300]}")

        rng = random.Random(args.seed)
        budget = args.max_requests
        steps = []
        for rate in rates:
            if budget <= 0:
                break
            since = max_generation_id(engine)
            results, wall = asyncio.run(open_loop(base, headers, rate, args.duration, budget, args.timeout, rng))
            budget -= len(results)
            step = summarise(rate, results, wall)
            step["logged"] = logged_check(engine, since, results)
            step["load_average_1min"] = round(os.getloadavg()[0], 2)
            steps.append(step)
            print(json.dumps({k: step[k] for k in ("offered_rate", "throughput_per_s", "latency_ms", "by_status")}),
                  file=sys.stderr, flush=True)
        report["steps"] = steps
        report["knee_offered_rate"] = knee(steps)
        report["rows_logged_equal_requests_answered"] = all(s["logged"]["equal"] for s in steps)
        if args.soak > 0:
            soak_rate = args.soak_rate or max(0.25, (report["knee_offered_rate"] or rates[0]) / 2)
            report["soak"] = asyncio.run(soak(base, headers, soak_rate, args.soak, args.timeout, server.pid, engine, rng))
        report["environment_at_end"] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
        keep_server_versions(report, env)  # before the server stops
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if home:
            try:
                from genloom.db import embedded
                from genloom.db.engine import reset_engines

                reset_engines()
                embedded.stop()
            except Exception:
                pass
            shutil.rmtree(home, ignore_errors=True)
    path = write_result(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k not in ("steps", "soak")} | {"result_file": str(path)},
                     indent=2))


if __name__ == "__main__":
    main()
