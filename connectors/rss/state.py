"""Persistent ingest state in SQLite under the data directory.

Per feed: HTTP validators (ETag, Last-Modified), the last status and health counters. Per article:
the id and content hash last emitted, so a restart emits nothing twice and an edited article (new
content hash) is emitted again. State is written only after Kafka confirmed delivery.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from newsflow.records import utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
    url TEXT PRIMARY KEY,
    etag TEXT,
    last_modified TEXT,
    last_status TEXT,
    last_error TEXT,
    last_success TEXT,
    last_polled TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    bozo_count INTEGER NOT NULL DEFAULT 0,
    items_seen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS seen (
    id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    feed_url TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_emitted TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class FeedState:
    url: str
    etag: str | None = None
    last_modified: str | None = None
    last_status: str | None = None
    last_error: str | None = None
    last_success: str | None = None
    last_polled: str | None = None
    consecutive_failures: int = 0
    bozo_count: int = 0
    items_seen: int = 0


class StateStore:
    """Thread-safe access to the ingest state database."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def feed(self, url: str) -> FeedState:
        with self._lock:
            row = self._db.execute(
                "SELECT url, etag, last_modified, last_status, last_error, last_success, last_polled, "
                "consecutive_failures, bozo_count, items_seen FROM feeds WHERE url = ?",
                (url,),
            ).fetchone()
        return FeedState(*row) if row else FeedState(url=url)

    def feeds(self) -> list[FeedState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT url, etag, last_modified, last_status, last_error, last_success, last_polled, "
                "consecutive_failures, bozo_count, items_seen FROM feeds ORDER BY url"
            ).fetchall()
        return [FeedState(*row) for row in rows]

    def unseen(self, feed_url: str, items: Iterable[tuple[str, str]]) -> set[str]:
        """Ids among (id, content_hash) pairs to emit: never seen, or edited in the same feed.

        The same article syndicated by another feed (same id, text trimmed differently) is a
        duplicate, not an edit: it is not emitted again.
        """
        items = list(items)
        if not items:
            return set()
        known: dict[str, tuple[str, str]] = {}
        ids = [i for i, _ in items]
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT id, content_hash, feed_url FROM seen WHERE id IN ({marks})",  # noqa: S608
                    chunk,
                )
                known.update((i, (h, f)) for i, h, f in rows)
        return {i for i, h in items if i not in known or (known[i][1] == feed_url and known[i][0] != h)}

    def record_success(
        self,
        url: str,
        status: str,
        emitted: Iterable[tuple[str, str]],
        etag: str | None,
        last_modified: str | None,
        bozo: bool,
        items: int,
    ) -> None:
        """Save validators and seen ids in one transaction (call after Kafka confirmed delivery)."""
        now = utc_now()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO seen (id, content_hash, feed_url, first_seen, last_emitted) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "content_hash = excluded.content_hash, last_emitted = excluded.last_emitted "
                    "WHERE seen.feed_url = excluded.feed_url",
                    [(i, h, url, now, now) for i, h in emitted],
                )
                self._db.execute(
                    "INSERT INTO feeds (url, etag, last_modified, last_status, last_error, last_success, "
                    "last_polled, consecutive_failures, bozo_count, items_seen) "
                    "VALUES (?, ?, ?, ?, NULL, ?, ?, 0, ?, ?) ON CONFLICT(url) DO UPDATE SET "
                    "etag = COALESCE(excluded.etag, feeds.etag), "
                    "last_modified = COALESCE(excluded.last_modified, feeds.last_modified), "
                    "last_status = excluded.last_status, last_error = NULL, "
                    "last_success = excluded.last_success, last_polled = excluded.last_polled, "
                    "consecutive_failures = 0, bozo_count = feeds.bozo_count + excluded.bozo_count, "
                    "items_seen = feeds.items_seen + excluded.items_seen",
                    (url, etag, last_modified, status, now, now, int(bozo), items),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def record_failure(self, url: str, status: str, error: str) -> FeedState:
        now = utc_now()
        with self._lock:
            self._db.execute(
                "INSERT INTO feeds (url, last_status, last_error, last_polled, consecutive_failures) "
                "VALUES (?, ?, ?, ?, 1) ON CONFLICT(url) DO UPDATE SET last_status = excluded.last_status, "
                "last_error = excluded.last_error, last_polled = excluded.last_polled, "
                "consecutive_failures = feeds.consecutive_failures + 1",
                (url, status, error[:1000], now),
            )
        return self.feed(url)
