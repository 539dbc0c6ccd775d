"""A per-host politeness budget shared by every feed on a host, and worker threads that respect it.

At most ``concurrency`` requests to one host are in flight, and request starts to one host are at
least ``spacing`` seconds apart. Workers never sit idle behind a busy host while another host is
ready: each takes the pending item whose host can start soonest, reserves that start time, then
waits for it. The clock and the sleep are injectable so tests run without sleeping.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def host_key(url: str) -> str:
    """The politeness key of a URL: its host and port, lower-case."""
    try:
        parts = urlsplit(url)
        return (parts.netloc or url).lower()
    except ValueError:
        return url


@dataclass
class HostBudget:
    """Per-host concurrency and start spacing (see module docstring)."""

    concurrency: int = 2
    spacing: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # (host, reserved start) of recent requests, for reports and tests
    starts: deque[tuple[str, float]] = field(default_factory=lambda: deque(maxlen=10_000))
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _active: Counter[str] = field(default_factory=Counter, repr=False)
    _last: dict[str, float] = field(default_factory=dict, repr=False)

    def take(self, pending: dict[str, deque[T]]) -> tuple[str, T, float] | None:
        """Reserve the item whose host can start soonest; blocks while every such host is full."""
        with self._cond:
            while True:
                if not pending:
                    return None
                now = self.clock()
                best: str | None = None
                best_at = float("inf")
                for host in pending:
                    if self._active[host] >= self.concurrency:
                        continue
                    at = max(now, self._last.get(host, float("-inf")) + self.spacing)
                    if at < best_at:
                        best, best_at = host, at
                if best is None:
                    self._cond.wait()
                    continue
                items = pending[best]
                item = items.popleft()
                if not items:
                    del pending[best]
                self._active[best] += 1
                self._last[best] = best_at
                self.starts.append((best, best_at))
                return best, item, best_at

    def release(self, host: str) -> None:
        with self._cond:
            self._active[host] -= 1
            self._cond.notify_all()

    def cancel(self, pending: dict[str, deque[T]]) -> None:
        """Hand out nothing more from ``pending`` (the consumer stopped early)."""
        with self._cond:
            pending.clear()
            self._cond.notify_all()


@dataclass
class _Failed(Generic[T]):
    item: T
    exc: BaseException


_DONE = object()


class PoliteRunner(Generic[T, R]):
    """Run ``fn`` over items on worker threads within a :class:`HostBudget`; results as they finish."""

    def __init__(self, budget: HostBudget, workers: int) -> None:
        self.budget = budget
        self.workers = max(1, workers)

    def run(
        self, items: Iterable[T], url_of: Callable[[T], str], fn: Callable[[T], R], max_batch: int = 64
    ) -> Iterator[list[R]]:
        """Yield results in batches: whatever finished since the last batch, at most ``max_batch``.

        An exception raised by ``fn`` is re-raised here, after the other workers stopped.
        """
        pending: dict[str, deque[T]] = {}
        for item in items:
            pending.setdefault(host_key(url_of(item)), deque()).append(item)
        total = sum(len(q) for q in pending.values())
        if not total:
            return
        results: queue.Queue[object] = queue.Queue()
        threads = [
            threading.Thread(
                target=self._work, args=(pending, fn, results), name=f"feed-fetch-{i}", daemon=True
            )
            for i in range(min(self.workers, total))
        ]
        for thread in threads:
            thread.start()
        running = len(threads)
        try:
            while running:
                batch: list[R] = []
                result = results.get()  # block for the first, then take what is ready
                while True:
                    if result is _DONE:
                        running -= 1
                    elif isinstance(result, _Failed):
                        raise result.exc
                    else:
                        batch.append(result)  # type: ignore[arg-type]
                    if len(batch) >= max_batch or not running:
                        break
                    try:
                        result = results.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    yield batch
        finally:
            self.budget.cancel(pending)
            for thread in threads:
                thread.join()

    def _work(self, pending: dict[str, deque[T]], fn: Callable[[T], R], results: queue.Queue[object]) -> None:
        try:
            while (job := self.budget.take(pending)) is not None:
                host, item, start_at = job
                try:
                    delay = start_at - self.budget.clock()
                    if delay > 0:
                        self.budget.sleep(delay)
                    results.put(fn(item))
                except BaseException as exc:  # handed to the consumer, which re-raises it
                    results.put(_Failed(item, exc))
                finally:
                    self.budget.release(host)
        finally:
            results.put(_DONE)
