"""Persistent ingest state in SQLite under the data directory (``<data_dir>/ingest/state.db``).

Per feed, keyed by the URL configured in the feeds file: HTTP validators (ETag, Last-Modified), the
hash of the last body, the schedule (next poll, interval, skip hours/days), where a permanent
redirect moved the feed, why it is disabled, and health counters. Per article: the id and
content hash last emitted (and the item's hash as the feed carried it) and the feed that emitted it,
so a restart emits nothing twice and an edited article (new content hash in the same feed) is
emitted again. State is written only after Kafka confirmed delivery; records sent and not yet
confirmed are noted in ``pending`` first, so that a process killed in between can find out, from
the topic itself, which of them arrived (:mod:`connectors.rss.delivery`). Per host: how long a
Retry-After holds it, and its robots.txt. Per article page: its validators and last extracted text
(compressed), to answer a 304 and to notice that a page's text changed.

Older databases are migrated in place: missing columns are added with ``ALTER TABLE``. Table
``meta`` records the article id scheme new ids are written under (``id_scheme``) and the oldest one
the ``seen`` table may hold (``oldest_id_scheme``): a database from before ids were versioned holds
scheme-1 ids, which ingest keeps recognising (docs/INGEST.md, "Id schemes"). One ingest process per
data directory: concurrent ingesters would race on the counters.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from connectors.rss.normalize import ID_SCHEME
from newsflow.records import FeedStatus, utc_now

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
CREATE TABLE IF NOT EXISTS pending (
    key TEXT NOT NULL,
    topic TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    item_hash TEXT,
    feed_url TEXT NOT NULL,
    PRIMARY KEY (key, topic)
);
CREATE TABLE IF NOT EXISTS pending_marks (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS hosts (
    host TEXT PRIMARY KEY,
    retry_until REAL,
    robots_status TEXT,
    robots_body TEXT,
    robots_fetched_at REAL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pages (
    url TEXT PRIMARY KEY,
    etag TEXT,
    last_modified TEXT,
    text_z BLOB NOT NULL,
    title TEXT,
    author TEXT,
    published_at TEXT,
    language TEXT,
    extracted_at TEXT NOT NULL,
    checked_at REAL NOT NULL
);
"""
# Columns of ``seen`` added later: the hash of the item as the feed carried it (before page text).
SEEN_MIGRATIONS: dict[str, str] = {"item_hash": "TEXT"}

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
    last_status: FeedStatus | None = None
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

    def __post_init__(self) -> None:
        if self.last_status is not None and not isinstance(self.last_status, FeedStatus):
            object.__setattr__(self, "last_status", FeedStatus(self.last_status))  # a row's plain text

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
class StoredPage:
    """An article page's last extraction, kept to answer a 304 and to notice a changed text."""

    url: str
    etag: str | None
    last_modified: str | None
    text: str
    title: str | None
    author: str | None
    published_at: str | None
    language: str | None
    extracted_at: str
    checked_at: float


@dataclass(frozen=True)
class Emitted:
    """One record Kafka confirmed: an article (its id) or a dead letter (its ``dlq:`` key)."""

    key: str
    content_hash: str  # of the record as sent ("rejected" for a dead letter)
    item_hash: str | None = None  # of the item as the feed carried it, when that differs
    topic: str = ""


@dataclass(frozen=True)
class FeedUpdate:
    """Everything one poll changes for one feed, saved in one transaction with the emitted ids."""

    state: FeedState  # the feed's new row (counters already computed)
    emitted: Sequence[Emitted] = field(default_factory=tuple)
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
        self.oldest_id_scheme = self._id_schemes()
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        for table, migrations in (("feeds", MIGRATIONS), ("seen", SEEN_MIGRATIONS)):
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column, kind in migrations.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def _id_schemes(self) -> int:
        """Record the current id scheme; return the oldest one the stored ids may be under."""
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if "oldest_id_scheme" in stored:
            oldest = int(stored["oldest_id_scheme"])
        else:  # a new database, or one from before ids were versioned: any ids it holds are scheme 1's
            held = self._db.execute("SELECT 1 FROM seen UNION ALL SELECT 1 FROM pending LIMIT 1").fetchone()
            oldest = 1 if held else ID_SCHEME
        self._db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [("oldest_id_scheme", str(min(oldest, ID_SCHEME))), ("id_scheme", str(ID_SCHEME))],
        )
        return min(oldest, ID_SCHEME)

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
        """Ids among (id, item_hash) pairs to emit: never seen, or edited in the same feed.

        ``item_hash`` is the hash of the item as the feed carries it; it is compared with the one
        stored when the id was emitted (the emitted record's hash may include page text). The same
        article syndicated by another feed (same id, text trimmed differently) is a duplicate, not
        an edit: it is not emitted again.
        """
        items = list(items)
        known = self.known(items)
        return {i for i, h in items if i not in known or (known[i][1] == feed_url and known[i][0] != h)}

    def known(self, items: Iterable[tuple[str, str]]) -> dict[str, tuple[str, str, str]]:
        """For ids already emitted: (item hash, feed URL, emitted content hash)."""
        ids = [i for i, _ in items]
        known: dict[str, tuple[str, str, str]] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    "SELECT id, COALESCE(item_hash, content_hash), feed_url, content_hash "  # noqa: S608
                    f"FROM seen WHERE id IN ({marks})",
                    chunk,
                )
                known.update((i, (h, f, c)) for i, h, f, c in rows)
        return known

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
        seen_rows: list[tuple[str, str, str | None, str, str, str]] = []
        for update in updates:
            values = [getattr(update.state, c) for c in _COLUMNS]
            # bozo_count and items_seen are added to the stored totals, not replaced
            values[_COLUMNS.index("bozo_count")] = int(update.bozo)
            values[_COLUMNS.index("items_seen")] = update.items
            rows.append(values)
            seen_rows.extend(
                (e.key, e.content_hash, e.item_hash, update.state.url, now, now) for e in update.emitted
            )
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO seen (id, content_hash, item_hash, feed_url, first_seen, last_emitted) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "content_hash = excluded.content_hash, item_hash = excluded.item_hash, "
                    "last_emitted = excluded.last_emitted WHERE seen.feed_url = excluded.feed_url",
                    seen_rows,
                )
                self._db.executemany(
                    "DELETE FROM pending WHERE key = ? AND topic = ?",
                    [(e.key, e.topic) for u in updates for e in u.emitted],
                )
                self._db.executemany(upsert, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def reset(self, url: str) -> bool:
        """Re-enable a feed, clear its failures and schedule and forget where it moved; False if unknown."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE feeds SET disabled_reason = NULL, disabled_at = NULL, consecutive_failures = 0, "
                "hard_failures = 0, next_poll = NULL, moved_to = NULL WHERE url = ?",
                (url,),
            )
        return cursor.rowcount > 0

    # -- records sent but not yet confirmed (see connectors.rss.delivery) ---------------------------
    def intend(self, feed_url: str, records: Sequence[Emitted]) -> None:
        """Note records about to be sent; :meth:`save` forgets them once confirmed."""
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO pending (key, topic, content_hash, item_hash, feed_url) "
                "VALUES (?, ?, ?, ?, ?)",
                [(e.key, e.topic, e.content_hash, e.item_hash, feed_url) for e in records],
            )

    def pending(self) -> list[tuple[str, Emitted]]:
        """(feed URL, record) of every record sent and not yet known to be delivered or not."""
        with self._lock:
            rows = self._db.execute(
                "SELECT feed_url, key, content_hash, item_hash, topic FROM pending"
            ).fetchall()
        return [(f, Emitted(k, c, i, t)) for f, k, c, i, t in rows]

    def has_pending(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM pending LIMIT 1").fetchone() is not None

    def marks(self) -> dict[str, dict[int, int]]:
        """Per topic and partition, an offset before every pending record (where recovery scans from)."""
        found: dict[str, dict[int, int]] = {}
        with self._lock:
            for topic, partition, offset in self._db.execute(
                "SELECT topic, partition, start_offset FROM pending_marks"
            ):
                found.setdefault(topic, {})[partition] = offset
        return found

    def set_marks(self, marks: dict[str, dict[int, int]]) -> None:
        """Record scan start offsets, keeping any lower one already stored."""
        with self._lock:
            self._db.executemany(
                "INSERT INTO pending_marks (topic, partition, start_offset) VALUES (?, ?, ?) "
                "ON CONFLICT(topic, partition) DO UPDATE SET "
                "start_offset = MIN(start_offset, excluded.start_offset)",
                [(t, p, o) for t, parts in marks.items() for p, o in parts.items()],
            )

    def resolve_pending(self, delivered: Sequence[tuple[str, Emitted]]) -> None:
        """After a recovery scan: mark what reached Kafka as emitted, forget every pending record."""
        now = utc_now()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO seen (id, content_hash, item_hash, feed_url, first_seen, last_emitted) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "content_hash = excluded.content_hash, item_hash = excluded.item_hash, "
                    "last_emitted = excluded.last_emitted WHERE seen.feed_url = excluded.feed_url",
                    [(e.key, e.content_hash, e.item_hash, f, now, now) for f, e in delivered],
                )
                self._db.execute("DELETE FROM pending")
                self._db.execute("DELETE FROM pending_marks")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def clear_marks_if_idle(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending_marks WHERE NOT EXISTS (SELECT 1 FROM pending)")

    # -- hosts ------------------------------------------------------------------------------------
    def hold_host(self, host: str, until: float) -> None:
        """Remember a Retry-After: nothing is requested from ``host`` before ``until`` (epoch s)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO hosts (host, retry_until) VALUES (?, ?) ON CONFLICT(host) DO UPDATE SET "
                "retry_until = MAX(COALESCE(retry_until, 0), excluded.retry_until)",
                (host, until),
            )

    def held_hosts(self, now: float) -> dict[str, float]:
        """Hosts under a Retry-After at ``now`` (epoch s), with when it ends."""
        with self._lock:
            rows = self._db.execute(
                "SELECT host, retry_until FROM hosts WHERE retry_until > ?", (now,)
            ).fetchall()
        return dict(rows)

    # -- robots.txt per host -----------------------------------------------------------------------
    def robots(self, host: str) -> tuple[str, str, float] | None:
        """(status, body, fetched at) of the host's stored robots.txt, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT robots_status, robots_body, robots_fetched_at FROM hosts "
                "WHERE host = ? AND robots_status IS NOT NULL",
                (host,),
            ).fetchone()
        return (row[0], row[1] or "", row[2]) if row else None

    def save_robots(self, host: str, status: str, body: str, fetched_at: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO hosts (host, robots_status, robots_body, robots_fetched_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(host) DO UPDATE SET robots_status = excluded.robots_status, "
                "robots_body = excluded.robots_body, robots_fetched_at = excluded.robots_fetched_at",
                (host, status, body, fetched_at),
            )

    # -- article pages -------------------------------------------------------------------------------
    def page(self, url: str) -> StoredPage | None:
        with self._lock:
            row = self._db.execute(
                "SELECT url, etag, last_modified, text_z, title, author, published_at, language, "
                "extracted_at, checked_at FROM pages WHERE url = ?",
                (url,),
            ).fetchone()
        if row is None:
            return None
        text = zlib.decompress(row[3]).decode("utf-8")
        return StoredPage(row[0], row[1], row[2], text, *row[4:])

    def save_page(self, page: StoredPage) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO pages (url, etag, last_modified, text_z, title, author, "
                "published_at, language, extracted_at, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    page.url,
                    page.etag,
                    page.last_modified,
                    zlib.compress(page.text.encode("utf-8"), 6),
                    page.title,
                    page.author,
                    page.published_at,
                    page.language,
                    page.extracted_at,
                    page.checked_at,
                ),
            )

    def pages_to_recheck(self, urls: Iterable[str], checked_before: float, extracted_after: str) -> set[str]:
        """Stored pages among ``urls`` last checked before ``checked_before`` (epoch s) and first
        extracted after ``extracted_after`` (ISO): recent articles whose page may have changed."""
        wanted = list(dict.fromkeys(urls))
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT url FROM pages WHERE url IN ({marks}) AND checked_at < ? "  # noqa: S608
                    "AND extracted_at > ?",
                    [*chunk, checked_before, extracted_after],
                )
                found.update(r[0] for r in rows)
        return found

    def prune_pages(self, checked_before: float) -> int:
        """Forget pages not checked since ``checked_before`` (epoch s); returns how many."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM pages WHERE checked_at < ?", (checked_before,))
        return cursor.rowcount
