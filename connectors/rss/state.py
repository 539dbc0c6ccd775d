"""Persistent ingest state in SQLite under the data directory (``<data_dir>/ingest/state.db``).

Per feed, keyed by the URL configured in the feeds file: HTTP validators (ETag, Last-Modified), the
hash of the last body, the schedule (next poll, interval, skip hours/days), where a permanent
redirect moved the feed, why it is disabled, and health counters. Per article: the id and
content hash last emitted and the feed that emitted it, so a restart emits nothing twice and an
edited article (new content hash in the same feed) is emitted again. State is written only after
Kafka confirmed delivery.

Older databases are migrated in place: missing columns are added with ``ALTER TABLE``. One ingest
process per data directory: concurrent ingesters would race on the counters.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
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

# Columns added after the first release, with their SQL types (migrated by ALTER TABLE ADD COLUMN).
MIGRATIONS: dict[str, str] = {
    "next_poll": "REAL",
    "interval_s": "REAL",
    "hard_failures": "INTEGER NOT NULL DEFAULT 0",
    "disabled_reason": "TEXT",
    "disabled_at": "TEXT",
    "moved_to": "TEXT",
    "last_http_status": "INTEGER",
    "body_hash": "TEXT",
    "skip_hours": "TEXT",
    "skip_days": "TEXT",
}


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
    next_poll: float | None = None
    interval_s: float | None = None
    hard_failures: int = 0
    disabled_reason: str | None = None
    disabled_at: str | None = None
    moved_to: str | None = None
    last_http_status: int | None = None
    body_hash: str | None = None
    skip_hours: str | None = None  # the feed's <skipHours>, comma-separated UTC hours
    skip_days: str | None = None  # the feed's <skipDays>, comma-separated lower-case day names

    @property
    def disabled(self) -> bool:
        return self.disabled_reason is not None

    @property
    def fetch_url(self) -> str:
        """Where to fetch: the permanent-redirect target if the feed moved, else its URL."""
        return self.moved_to or self.url


_COLUMNS = [f.name for f in fields(FeedState)]
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM feeds"  # noqa: S608 - fixed column names


@dataclass(frozen=True)
class FeedUpdate:
    """Everything one poll changes for one feed, saved in one transaction with the emitted ids."""

    state: FeedState  # the feed's new row (counters already computed)
    emitted: Sequence[tuple[str, str]] = field(default_factory=tuple)  # (id, content_hash)
    items: int = 0  # items in this fetch, added to items_seen
    bozo: bool = False  # added to bozo_count


class StateStore:
    """Thread-safe access to the ingest state database."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(feeds)")}
        for column, kind in MIGRATIONS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE feeds ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()

    def feed(self, url: str) -> FeedState:
        with self._lock:
            row = self._db.execute(f"{_SELECT} WHERE url = ?", (url,)).fetchone()
        return FeedState(*row) if row else FeedState(url=url)

    def feeds(self) -> list[FeedState]:
        with self._lock:
            rows = self._db.execute(f"{_SELECT} ORDER BY url").fetchall()
        return [FeedState(*row) for row in rows]

    def states(self, urls: Iterable[str]) -> dict[str, FeedState]:
        """The state of each URL (a blank state for feeds never polled), in one query."""
        wanted = list(dict.fromkeys(urls))
        found: dict[str, FeedState] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(f"{_SELECT} WHERE url IN ({marks})", chunk):
                    found[row[0]] = FeedState(*row)
        return {url: found.get(url) or FeedState(url=url) for url in wanted}

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

    def save(self, updates: Sequence[FeedUpdate]) -> None:
        """Write feed rows and emitted ids in one transaction (call after Kafka confirmed delivery)."""
        if not updates:
            return
        now = utc_now()
        placeholders = ", ".join("?" * len(_COLUMNS))
        assignments = ", ".join(
            f"{c} = excluded.{c}" for c in _COLUMNS if c not in ("url", "bozo_count", "items_seen")
        )
        upsert = (
            f"INSERT INTO feeds ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "  # noqa: S608
            f"ON CONFLICT(url) DO UPDATE SET {assignments}, "
            "bozo_count = feeds.bozo_count + excluded.bozo_count, "
            "items_seen = feeds.items_seen + excluded.items_seen"
        )
        rows = []
        seen_rows: list[tuple[str, str, str, str, str]] = []
        for update in updates:
            values = [getattr(update.state, c) for c in _COLUMNS]
            # bozo_count and items_seen are added to the stored totals, not replaced
            values[_COLUMNS.index("bozo_count")] = int(update.bozo)
            values[_COLUMNS.index("items_seen")] = update.items
            rows.append(values)
            seen_rows.extend((i, h, update.state.url, now, now) for i, h in update.emitted)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO seen (id, content_hash, feed_url, first_seen, last_emitted) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "content_hash = excluded.content_hash, last_emitted = excluded.last_emitted "
                    "WHERE seen.feed_url = excluded.feed_url",
                    seen_rows,
                )
                self._db.executemany(upsert, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def reset(self, url: str) -> bool:
        """Re-enable a feed and clear its failures and schedule; False if the feed is unknown."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE feeds SET disabled_reason = NULL, disabled_at = NULL, consecutive_failures = 0, "
                "hard_failures = 0, next_poll = NULL WHERE url = ?",
                (url,),
            )
        return cursor.rowcount > 0
