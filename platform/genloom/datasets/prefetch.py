"""A background thread that keeps an iterator a few items ahead (shard and row reads overlap training)."""

from __future__ import annotations

from collections.abc import Iterator


def prefetched(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run `iterator` in a daemon thread, `depth` items ahead; errors re-raise in the consumer."""
    import contextvars
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def worker() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            else:
                items.put((True, done))
        except BaseException as exc:  # handed to the consumer
            items.put((False, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # ends the server-side cursor and returns its connection
                except Exception:
                    pass  # the connection is already gone (server stopped, database dropped)

    # copy_context: the reads run for the caller's tenant (genloom.db.tenancy)
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(worker,), name="genloom-prefetch", daemon=True
    )
    thread.start()
    try:
        while True:
            ok, item = items.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        if threading.current_thread() is not thread:
            thread.join(timeout=10)
