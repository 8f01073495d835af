"""In-process executor: runs range tasks on a small thread pool (for tests and tiny jobs).

>>> ex = LocalExecutor(); f = ex.submit(lambda: 41 + 1, pin=0)
>>> ex.wait([f], 1.0) == [f] and f.result()
42
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable


class LocalExecutor:
    """Executor protocol: `submit(fn, *args, pin=)`, `wait(futures, timeout)`, `close()`."""

    def __init__(self, threads: int = 1) -> None:
        self.workers = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stream-task")

    def submit(self, fn: Callable[..., Any], *args: Any, pin: int) -> Future:
        return self._pool.submit(fn, *args)

    def outcome(self, future: Future) -> tuple[Any, BaseException | None] | None:
        """(result, None) or (None, error) for a finished future; None if not done."""
        if not future.done():
            return None
        exc = future.exception()
        return (None, exc) if exc is not None else (future.result(), None)

    def cancel(self, future: Future) -> None:
        """Drop a task that has not started (a running one finishes, unheard)."""
        future.cancel()

    def wait(self, futures: list[Future], timeout: float) -> list[Future]:
        """The futures that are done within `timeout` (possibly none)."""
        done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return [f for f in futures if f in done]

    def describe(self) -> str:
        return f"in-process ({self.workers} thread)"

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
