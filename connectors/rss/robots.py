"""robots.txt for article page fetches: one per host, cached, with its Crawl-delay.

Rules (RFC 9309): a robots.txt answered 2xx is obeyed for the ``newsflow`` user agent (else ``*``);
4xx means no rules (everything allowed); 5xx, a timeout or an unreachable host mean "allow nothing"
for now (the RFC's "complete disallow" while the server is in trouble), retried after
``ERROR_TTL_S``. A Crawl-delay raises the host's spacing in the shared budget (capped). Entries are
kept in the state store for ``ttl_s`` (a day by default), so a restart does not fetch them again.
Feed polls do not consult robots.txt (a feed is published to be polled), but they share the host's
budget, Crawl-delay included.
"""

from __future__ import annotations

import threading
import time
import urllib.robotparser
from collections.abc import Callable
from dataclasses import dataclass

from connectors.rss.fetch import FetchResult

AGENT = "newsflow"
ERROR_TTL_S = 3600.0
MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309: at least 500 KiB must be parsed; more is ignored


@dataclass(frozen=True)
class Robots:
    """The rules of one host: ``status`` is ``ok`` (rules), ``none`` (4xx: no rules) or ``error``."""

    status: str
    body: str = ""
    fetched_at: float = 0.0

    def parser(self) -> urllib.robotparser.RobotFileParser:
        parser = urllib.robotparser.RobotFileParser()
        parser.parse(self.body.splitlines())
        return parser

    def allows(self, url: str) -> bool:
        if self.status == "none":
            return True
        if self.status == "error":
            return False
        return self.parser().can_fetch(AGENT, url)

    def crawl_delay(self) -> float | None:
        if self.status != "ok":
            return None
        delay = self.parser().crawl_delay(AGENT)
        try:
            return float(delay) if delay is not None else None
        except (TypeError, ValueError):
            return None


def from_fetch(result: FetchResult, now: float) -> Robots:
    """The rules a robots.txt fetch gives (see the module docstring)."""
    if result.ok:
        return Robots("ok", result.content[:MAX_ROBOTS_BYTES].decode("utf-8", "replace"), now)
    if result.http_status is not None and 400 <= result.http_status < 500:
        return Robots("none", "", now)
    if result.status in ("too_large", "not_html"):
        return Robots("none", "", now)
    return Robots("error", "", now)


class RobotsCache:
    """Per-host rules, loaded from the state store or fetched once per host at a time."""

    def __init__(
        self,
        load: Callable[[str], Robots | None],
        store: Callable[[str, Robots], None],
        ttl_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load, self._store, self.ttl_s, self.clock = load, store, ttl_s, clock
        self._cache: dict[str, Robots] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _fresh(self, robots: Robots | None) -> bool:
        if robots is None:
            return False
        ttl = ERROR_TTL_S if robots.status == "error" else self.ttl_s
        return self.clock() - robots.fetched_at < ttl

    def get(self, host: str, fetch: Callable[[], FetchResult]) -> tuple[Robots, bool]:
        """The host's rules, fetching them with ``fetch`` when none are fresh; (rules, fetched now)."""
        with self._guard:
            lock = self._locks.setdefault(host, threading.Lock())
        with lock:  # one fetch per host, however many workers want it
            robots = self._cache.get(host)
            if not self._fresh(robots):
                robots = self._load(host)
            if self._fresh(robots):
                assert robots is not None
                self._cache[host] = robots
                return robots, False
            robots = from_fetch(fetch(), self.clock())
            self._cache[host] = robots
            self._store(host, robots)
            return robots, True
