"""One politeness budget per host, shared by every request to it: feed polls, robots.txt and pages.

At most ``concurrency`` requests to one host are in flight, and request starts to one host are at
least ``spacing`` seconds apart (more where the host's robots.txt asks for a longer Crawl-delay).
A host that answered 429 or 503 with Retry-After is **held** until then: nothing more starts on it,
and the work queued for it is handed back as held instead of being run. Workers never sit idle
behind a busy host while another host is ready: each takes the pending item whose host can start
soonest, reserves that start time, then waits for it; a job that needs a second request to the
same host (robots.txt, then the page) reserves another start with :meth:`HostBudget.next_start`.
The spacing is enforced once more when each request's first bytes are written (:func:`pace`,
called by the guarded transport): between actual sends, not only between reservations, since on a
busy machine the request before may have gone out late. A second request of the same job (the page
after robots.txt, a redirect to the same host) reserves the host's next start there.
The clock and the sleep are injectable so tests run without sleeping.

:class:`PoliteRunner` runs jobs on worker threads within a budget. Jobs can be submitted while it
runs (a parsed feed submits its article pages to the same per-host queues as the feed polls), and
results come back in batches as they finish.
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
    """Per-host concurrency, start spacing and Retry-After holds (see module docstring)."""

    concurrency: int = 2
    spacing: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # (host, reserved start) of recent requests, for reports, the benchmark and tests
    starts: deque[tuple[str, float]] = field(default_factory=lambda: deque(maxlen=100_000))
    # (host, actual start) of recent requests: when each really began, after any wait in begin()
    begun: deque[tuple[str, float]] = field(default_factory=lambda: deque(maxlen=100_000))
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _active: Counter[str] = field(default_factory=Counter, repr=False)
    _last: dict[str, float] = field(default_factory=dict, repr=False)
    _spacing: dict[str, float] = field(default_factory=dict, repr=False)  # per-host (Crawl-delay)
    _held: dict[str, float] = field(default_factory=dict, repr=False)  # host -> until (budget clock)
    _begun: dict[str, float] = field(default_factory=dict, repr=False)  # host -> last actual start

    def spacing_of(self, host: str) -> float:
        return max(self.spacing, self._spacing.get(host, 0.0))

    def set_spacing(self, host: str, seconds: float) -> None:
        """Space this host's starts at least ``seconds`` apart (never below the global spacing)."""
        with self._cond:
            self._spacing[host] = seconds

    def hold(self, host: str, seconds: float) -> None:
        """Start nothing on ``host`` for ``seconds`` (a Retry-After)."""
        with self._cond:
            until = self.clock() + seconds
            self._held[host] = max(self._held.get(host, until), until)
            self._cond.notify_all()

    def clear_holds(self) -> None:
        """Forget every hold (a new cycle sets them again from the state store)."""
        with self._cond:
            self._held.clear()

    def held(self, host: str) -> bool:
        with self._cond:
            return self._held_now(host)

    def _held_now(self, host: str) -> bool:
        until = self._held.get(host)
        if until is None:
            return False
        if until <= self.clock():
            del self._held[host]
            return False
        return True

    def take(self, pending: dict[str, deque[T]]) -> tuple[str, T, float | None] | None:
        """Reserve the item whose host can start soonest; blocks while every such host is full.

        Items of a held host come back at once with no start time (``None``): the caller hands them
        back unrun. Returns None when ``pending`` is empty.
        """
        with self._cond:
            while True:
                if not pending:
                    return None
                now = self.clock()
                best: str | None = None
                best_at = float("inf")
                for host in pending:
                    if self._held_now(host):
                        return host, self._pop(pending, host), None
                    if self._active[host] >= self.concurrency:
                        continue
                    at = max(now, self._last.get(host, float("-inf")) + self.spacing_of(host))
                    if at < best_at:
                        best, best_at = host, at
                if best is None:
                    self._cond.wait()
                    continue
                item = self._pop(pending, best)
                self._active[best] += 1
                self._last[best] = best_at
                self.starts.append((best, best_at))
                return best, item, best_at

    @staticmethod
    def _pop(pending: dict[str, deque[T]], host: str) -> T:
        items = pending[host]
        item = items.popleft()
        if not items:
            del pending[host]
        return item

    def next_start(self, host: str) -> float | None:
        """Reserve another start on ``host`` for a job that already holds a slot there.

        Returns when the request may start (the caller sleeps until then), or None if the host is
        held meanwhile.
        """
        with self._cond:
            if self._held_now(host):
                return None
            at = max(self.clock(), self._last.get(host, float("-inf")) + self.spacing_of(host))
            self._last[host] = at
            self.starts.append((host, at))
            return at

    def wait_until(self, at: float) -> None:
        delay = at - self.clock()
        if delay > 0:
            self.sleep(delay)

    def begin(self, host: str, at: float) -> None:
        """Wait for a reserved start, and longer if the host's previous request really began late.

        A reservation is made when a job is taken; the request before it may have begun later than
        its own reservation (a busy machine), so the spacing is enforced again between the actual
        starts, right before the request goes out.
        """
        while True:
            with self._cond:
                now = self.clock()
                ready = max(at, self._begun.get(host, float("-inf")) + self.spacing_of(host))
                if now >= ready:
                    self._begun[host] = now
                    self.begun.append((host, now))
                    return
            self.sleep(ready - now)

    def release(self, host: str) -> None:
        with self._cond:
            self._active[host] -= 1
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
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


class _Pending(dict[str, deque[T]]):
    """Per-host queues; ``closed`` once no more items will be submitted."""

    closed: bool = False


_DONE = object()


class Session(Generic[T, R]):
    """Running workers over per-host queues; :meth:`submit` jobs, iterate :meth:`batches`."""

    def __init__(
        self,
        budget: HostBudget,
        workers: int,
        fn: Callable[[T], R],
        on_held: Callable[[T], R] | None,
        max_batch: int,
    ) -> None:
        self.budget = budget
        self.fn = fn
        self.on_held = on_held
        self.max_batch = max_batch
        self._pending: _Pending[T] = _Pending()
        self._results: queue.Queue[object] = queue.Queue()
        self._outstanding = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"polite-fetch-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, url: str, item: T) -> None:
        with self.budget._cond:
            self._pending.setdefault(host_key(url), deque()).append(item)
            self._outstanding += 1
            self.budget._cond.notify_all()

    def batches(self) -> Iterator[list[R]]:
        """Results as they finish, until every submitted job (including ones submitted by the
        consumer between batches) has its result. A job's exception is re-raised here."""
        while self._outstanding:
            batch: list[R] = []
            result = self._results.get()
            while True:
                self._outstanding -= 1
                if isinstance(result, _Failed):
                    raise result.exc
                batch.append(result)  # type: ignore[arg-type]
                if len(batch) >= self.max_batch or not self._outstanding:
                    break
                try:
                    result = self._results.get_nowait()
                except queue.Empty:
                    break
            yield batch

    def close(self) -> None:
        with self.budget._cond:
            self._pending.clear()
            self._pending.closed = True
            self.budget._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while True:
            with self.budget._cond:
                while not self._pending and not self._pending.closed:
                    self.budget._cond.wait()
                if self._pending.closed:
                    return
            job = self.budget.take(self._pending)
            if job is None:
                continue
            host, item, start_at = job
            if start_at is None:  # the host is held (Retry-After): hand the item back unrun
                try:
                    self._results.put(self.on_held(item) if self.on_held else _Failed(item, HostHeld(host)))
                except BaseException as exc:
                    self._results.put(_Failed(item, exc))
                continue
            try:
                self.budget.wait_until(start_at)
                _slot.current = _Slot(self.budget, host, start_at)
                self._results.put(self.fn(item))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                self._results.put(_Failed(item, exc))
            finally:
                _slot.current = None
                self.budget.release(host)


@dataclass
class _Slot:
    """The host start a worker holds for the job it runs (thread-local)."""

    budget: HostBudget
    host: str
    start_at: float
    used: bool = False


_slot = threading.local()


def pace(url: str) -> None:
    """Called right before a request to ``url`` is written: wait for the host's budget.

    The job's first request to its own host goes at its reserved start, later ones at the host's
    next start; each is recorded as begun only now, so the spacing holds between actual sends.
    Requests outside a runner job, or to another host (a cross-host redirect), are not paced here.
    """
    slot: _Slot | None = getattr(_slot, "current", None)
    if slot is None or host_key(url) != slot.host:
        return
    at = slot.start_at if not slot.used else slot.budget.next_start(slot.host)
    slot.used = True
    slot.budget.begin(slot.host, at if at is not None else slot.budget.clock())


class HostHeld(Exception):
    """A job's host is held by a Retry-After and the runner has no ``on_held`` for it."""


class PoliteRunner(Generic[T, R]):
    """Run jobs on worker threads within a :class:`HostBudget`; results as they finish."""

    def __init__(self, budget: HostBudget, workers: int) -> None:
        self.budget = budget
        self.workers = max(1, workers)

    def session(
        self, fn: Callable[[T], R], on_held: Callable[[T], R] | None = None, max_batch: int = 64
    ) -> Session[T, R]:
        """Workers that run ``fn`` over submitted jobs (``on_held`` for those of a held host)."""
        return Session(self.budget, self.workers, fn, on_held, max_batch)

    def run(
        self, items: Iterable[T], url_of: Callable[[T], str], fn: Callable[[T], R], max_batch: int = 64
    ) -> Iterator[list[R]]:
        """Yield results in batches: whatever finished since the last batch, at most ``max_batch``.

        An exception raised by ``fn`` is re-raised here, after the other workers stopped.
        """
        items = list(items)
        if not items:
            return
        session = Session(self.budget, min(self.workers, len(items)), fn, None, max_batch)
        try:
            for item in items:
                session.submit(url_of(item), item)
            yield from session.batches()
        finally:
            session.close()
