"""Backpressure for `genloom serve`: a bounded generation queue and a concurrency limit.

A generation (`POST /v1/ask`, `POST /v1/chat/completions`, streamed or not) holds a model,
a database connection and a worker thread for its whole length. Without a bound, a burst
queues unboundedly inside the thread pool: every request slows down together, clients time
out, and the server keeps working on answers nobody will read. So:

- at most `max_concurrent` generations run at once (per worker process);
- up to `max_queue` more wait, first come first served, for at most `queue_timeout` seconds;
- past that a request is refused at once, before any work: **429** when the queue is full,
  **503** when it waited `queue_timeout` without a slot. Both carry `Retry-After` (seconds,
  from the recent service time and the queue ahead), and the OpenAI error shape, so the
  OpenAI SDKs back off and retry by themselves.

Other routes (search, feedback, reads) are short and not limited here.

The limiter is pure ASGI middleware: it holds the slot until the response's last byte is
sent, so a streamed answer counts for as long as it streams. With `--workers N` each process
has its own limiter: the server as a whole admits N × max_concurrent generations.

Database pool per worker: `pool_size(limits)` = one connection per admitted generation plus
`SHORT_ROUTE_CONNECTIONS` for the short routes, and `POOL_OVERFLOW` more in bursts. A short route
that finds the pool busy waits for a connection (the pool's timeout) rather than opening more:
the server's `max_connections` (100 by default, the embedded server's too) is shared by every
worker and every other client. `genloom serve --workers N` checks N × (pool + overflow) against
it before starting (see `check_connections`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import time
from typing import Any

from genloom.errors import BadInput

LIMITED_PATHS = ("/v1/ask", "/v1/chat/completions", "/v1/completions")
SHORT_ROUTE_CONNECTIONS = 8  # search, feedback, reads: milliseconds each, so a few connections serve many
POOL_OVERFLOW = 8


@dataclasses.dataclass(frozen=True)
class Limits:
    max_concurrent: int = 16  # generations running at once, per worker process
    max_queue: int = 64  # generations waiting for a slot; beyond: 429
    queue_timeout: float = 30.0  # seconds a request may wait for a slot; beyond: 503

    @classmethod
    def from_env(cls) -> Limits:
        """GENLOOM_MAX_CONCURRENT, GENLOOM_MAX_QUEUE, GENLOOM_QUEUE_TIMEOUT (what `serve` sets)."""
        d = cls()
        try:
            limits = cls(
                max_concurrent=int(os.environ.get("GENLOOM_MAX_CONCURRENT", d.max_concurrent)),
                max_queue=int(os.environ.get("GENLOOM_MAX_QUEUE", d.max_queue)),
                queue_timeout=float(os.environ.get("GENLOOM_QUEUE_TIMEOUT", d.queue_timeout)),
            )
        except ValueError as exc:
            raise BadInput(f"bad serve limit in the environment: {exc}") from None
        return limits.validate()

    def validate(self) -> Limits:
        if self.max_concurrent < 1:
            raise BadInput(f"--max-concurrent must be at least 1 (got {self.max_concurrent})")
        if self.max_queue < 0:
            raise BadInput(f"--max-queue must be 0 or more (got {self.max_queue})")
        if not self.queue_timeout > 0:
            raise BadInput(f"--queue-timeout must be positive (got {self.queue_timeout})")
        return self

    def to_env(self) -> dict[str, str]:
        return {
            "GENLOOM_MAX_CONCURRENT": str(self.max_concurrent),
            "GENLOOM_MAX_QUEUE": str(self.max_queue),
            "GENLOOM_QUEUE_TIMEOUT": str(self.queue_timeout),
        }


def pool_size(limits: Limits) -> int:
    """Connections one worker keeps: one per admitted generation (each holds its connection from
    retrieval to commit, streamed or not), plus a few for the short routes."""
    return limits.max_concurrent + SHORT_ROUTE_CONNECTIONS


def connections_needed(limits: Limits, workers: int) -> int:
    return workers * (pool_size(limits) + POOL_OVERFLOW)


def check_connections(limits: Limits, workers: int, max_connections: int, in_use: int) -> None:
    """Refuse a `--workers` count whose pools could exhaust the server's connections."""
    needed = connections_needed(limits, workers)
    free = max_connections - in_use
    if needed > free:
        per = pool_size(limits) + POOL_OVERFLOW
        fit = max(0, free // per)
        raise BadInput(
            f"--workers {workers} could open {needed} database connections ({per} per worker) but the server "
            f"allows {max_connections} ({in_use} in use): use --workers {fit or 1} with a lower --max-concurrent, "
            "or raise max_connections"
        )


class GenerationLimiter:
    """Admission control on the event loop: a counter of running generations and a FIFO of waiters."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.running = 0
        self.waiters: list[asyncio.Future] = []
        self.mean_seconds = 1.0  # exponentially weighted mean service time, for Retry-After
        self.admitted = 0
        self.rejected = {429: 0, 503: 0}

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead drained at the recent rate."""
        ahead = len(self.waiters) + 1
        return max(1, min(120, math.ceil(self.mean_seconds * ahead / self.limits.max_concurrent)))

    async def acquire(self) -> int | None:
        """None when admitted; else the HTTP status of the refusal (429 or 503)."""
        if self.running < self.limits.max_concurrent and not self.waiters:
            self.running += 1
            self.admitted += 1
            return None
        if len(self.waiters) >= self.limits.max_queue:
            self.rejected[429] += 1
            return 429
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.limits.queue_timeout)
        except asyncio.TimeoutError:
            if waiter.done():  # the slot arrived just as the timer fired: take it
                self.admitted += 1
                return None
            self.waiters.remove(waiter)
            waiter.cancel()
            self.rejected[503] += 1
            return 503
        except BaseException:  # the client went away while queued
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self.release(None)  # it had been handed a slot: pass it on
            raise
        self.admitted += 1
        return None

    def release(self, seconds: float | None) -> None:
        if seconds is not None:
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds
        while self.waiters:  # hand the slot straight to the oldest waiter (running stays the same)
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(True)
                return
        self.running -= 1

    def stats(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "queued": len(self.waiters),
            "admitted": self.admitted,
            "rejected_429": self.rejected[429],
            "rejected_503": self.rejected[503],
            **dataclasses.asdict(self.limits),
        }


class LimitMiddleware:
    """ASGI middleware: generation routes go through the limiter; the rest pass straight on."""

    def __init__(self, app, limiter: GenerationLimiter):
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in LIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        refused = await self.limiter.acquire()
        if refused is not None:
            await _refuse(send, refused, self.limiter.retry_after())
            return
        started = time.monotonic()
        try:
            await self.app(scope, receive, send)  # returns after the last byte, streams included
        finally:
            self.limiter.release(time.monotonic() - started)


async def _refuse(send, status: int, retry_after: int) -> None:
    if status == 429:
        message = "too many generation requests queued: retry after the Retry-After header's seconds"
    else:
        message = "no generation slot became free in time: the server is overloaded, retry later"
    body = json.dumps({"error": {"message": message, "type": "overloaded", "code": status}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install(app, limits: Limits | None = None) -> GenerationLimiter:
    """Put the limiter in front of APP (kept as `app.state.generation_limiter`)."""
    limiter = GenerationLimiter(limits or Limits.from_env())
    app.add_middleware(LimitMiddleware, limiter=limiter)
    app.state.generation_limiter = limiter
    return limiter
