"""Backpressure in `genloom serve`: a bounded generation queue, 429/503 with Retry-After past it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from genloom.api.concurrency import GenerationLimiter, Limits, check_connections, install
from genloom.errors import BadInput


def test_limiter_admits_queues_then_refuses_in_order():
    async def scenario():
        limiter = GenerationLimiter(Limits(max_concurrent=2, max_queue=2, queue_timeout=5))
        assert await limiter.acquire() is None and await limiter.acquire() is None  # two run
        first = asyncio.create_task(limiter.acquire())  # two wait, in order
        second = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        assert await limiter.acquire() == 429  # the queue is full: refused at once
        assert (limiter.running, len(limiter.waiters)) == (2, 2)
        limiter.release(1.0)  # a slot is handed to the oldest waiter, never to the newer one
        assert await first is None and not second.done()
        limiter.release(1.0)
        assert await second is None
        limiter.release(1.0)
        limiter.release(1.0)
        assert (limiter.running, limiter.admitted, limiter.rejected) == (0, 4, {429: 1, 503: 0})

    asyncio.run(scenario())


def test_a_request_that_waits_past_the_timeout_gets_503_and_frees_its_place():
    async def scenario():
        limiter = GenerationLimiter(Limits(max_concurrent=1, max_queue=1, queue_timeout=0.05))
        assert await limiter.acquire() is None
        assert await limiter.acquire() == 503  # waited 50 ms: no slot
        assert limiter.waiters == [] and limiter.running == 1
        limiter.release(0.5)
        assert limiter.running == 0 and await limiter.acquire() is None

    asyncio.run(scenario())


def test_retry_after_grows_with_the_queue_ahead():
    limiter = GenerationLimiter(Limits(max_concurrent=2, max_queue=10))
    limiter.mean_seconds = 3.0
    assert limiter.retry_after() == 2  # ceil(3 s × 1 / 2)
    limiter.waiters = [object()] * 5
    assert limiter.retry_after() == 9  # ceil(3 s × 6 / 2)


def _app(limits: Limits):
    from fastapi import FastAPI

    app = FastAPI()
    gate = asyncio.Event()

    @app.post("/v1/ask")
    async def ask():
        await gate.wait()
        return {"ok": True}

    @app.get("/v1/search")
    async def search():
        return {"hits": []}

    install(app, limits)
    return app, gate


def test_middleware_answers_429_with_retry_after_and_lets_other_routes_through():
    async def scenario():
        app, gate = _app(Limits(max_concurrent=1, max_queue=1, queue_timeout=30))
        limiter = app.state.generation_limiter
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            running = asyncio.create_task(client.post("/v1/ask"))
            queued = asyncio.create_task(client.post("/v1/ask"))
            while len(limiter.waiters) < 1:
                await asyncio.sleep(0.001)
            refused = await client.post("/v1/ask")
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == 429 and refused.json()["error"]["type"] == "overloaded"
            assert (await client.get("/v1/search")).status_code == 200  # not a generation: not limited
            gate.set()
            assert (await running).status_code == 200 and (await queued).status_code == 200
        assert (limiter.running, limiter.admitted) == (0, 2)

    asyncio.run(scenario())


def test_real_app_has_the_limiter_from_the_environment(monkeypatch):
    from genloom.api.app import create_app

    monkeypatch.setenv("GENLOOM_MAX_CONCURRENT", "3")
    monkeypatch.setenv("GENLOOM_MAX_QUEUE", "7")
    limiter = create_app().state.generation_limiter
    assert (limiter.limits.max_concurrent, limiter.limits.max_queue) == (3, 7)
    monkeypatch.setenv("GENLOOM_MAX_CONCURRENT", "0")
    with pytest.raises(BadInput, match="--max-concurrent must be at least 1"):
        create_app()


def test_workers_are_refused_when_their_pools_could_exhaust_the_server():
    limits = Limits(max_concurrent=16)  # 16 generations + 8 short routes + 8 overflow = 32 per worker
    check_connections(limits, 2, max_connections=100, in_use=5)
    with pytest.raises(BadInput, match=r"--workers 3 could open 96 database connections \(32 per worker\) but the "
                                       r"server allows 100 \(5 in use\): use --workers 2"):
        check_connections(limits, 3, max_connections=100, in_use=5)
    check_connections(limits, 9, max_connections=300, in_use=5)


def test_serve_rejects_bad_limits_before_starting(cli):
    for args, message in [(["--workers", "0"], "--workers must be at least 1"),
                          (["--max-queue", "-1"], "--max-queue must be 0 or more"),
                          (["--queue-timeout", "0"], "--queue-timeout must be positive")]:
        result = cli("serve", *args)
        assert result.exit_code == 1 and message in result.stderr, result.stderr
