"""The SQLite state store: migration of an older database, batched saves, dedupe rules."""

import sqlite3

from connectors.rss.normalize import ID_SCHEME
from connectors.rss.state import Emitted, FeedState, FeedUpdate, StateStore

OLD_SCHEMA = """
CREATE TABLE feeds (
    url TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, last_status TEXT, last_error TEXT,
    last_success TEXT, last_polled TEXT, consecutive_failures INTEGER NOT NULL DEFAULT 0,
    bozo_count INTEGER NOT NULL DEFAULT 0, items_seen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE seen (
    id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, feed_url TEXT NOT NULL,
    first_seen TEXT NOT NULL, last_emitted TEXT NOT NULL
);
INSERT INTO feeds (url, etag, last_status, bozo_count, items_seen)
    VALUES ('http://a/rss', '"e1"', 'ok', 2, 40);
INSERT INTO seen VALUES ('id1', 'h1', 'http://a/rss', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
"""


def test_an_older_database_is_migrated_in_place(tmp_path):
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    store = StateStore(path)
    try:
        state = store.feed("http://a/rss")
        assert (state.etag, state.bozo_count, state.items_seen) == ('"e1"', 2, 40)
        assert state.next_poll is None and state.disabled_reason is None and state.hard_failures == 0
        assert store.unseen("http://a/rss", [("id1", "h1"), ("id2", "h2")]) == {"id2"}
    finally:
        store.close()
    StateStore(path).close()  # opening a migrated database again is a no-op


def test_save_adds_counters_and_records_emitted_ids_in_one_transaction(tmp_path):
    store = StateStore(tmp_path / "s.db")
    try:
        first = FeedState(url="http://a/rss", etag='"1"', last_status="ok", next_poll=100.0)
        store.save(
            [
                FeedUpdate(first, [Emitted("x", "h")], items=20, bozo=True),
                FeedUpdate(FeedState(url="http://b/rss")),
            ]
        )
        store.save([FeedUpdate(first, [], items=5, bozo=False)])
        state = store.feed("http://a/rss")
        assert (state.items_seen, state.bozo_count, state.next_poll) == (25, 1, 100.0)
        assert set(store.states(["http://a/rss", "http://b/rss", "http://c/rss"])) == {
            "http://a/rss",
            "http://b/rss",
            "http://c/rss",
        }
        assert store.unseen("http://a/rss", [("x", "h")]) == set()
        assert store.unseen("http://a/rss", [("x", "edited")]) == {"x"}  # an edit in the same feed
        assert store.unseen("http://b/rss", [("x", "other text")]) == set()  # a syndicated copy
    finally:
        store.close()


def test_reset_re_enables_a_feed(tmp_path):
    store = StateStore(tmp_path / "s.db")
    try:
        gone = FeedState(url="http://a/rss", disabled_reason="gone", consecutive_failures=3, hard_failures=3)
        store.save([FeedUpdate(gone)])
        assert store.feed("http://a/rss").disabled
        assert store.reset("http://a/rss") and not store.reset("http://unknown/rss")
        state = store.feed("http://a/rss")
        assert not state.disabled and state.consecutive_failures == 0 and state.next_poll is None
    finally:
        store.close()


def test_reset_forgets_where_a_feed_moved(tmp_path):
    store = StateStore(tmp_path / "s.db")
    try:
        store.save([FeedUpdate(FeedState(url="http://a/rss", moved_to="http://elsewhere/rss"))])
        assert store.feed("http://a/rss").fetch_url == "http://elsewhere/rss"
        assert store.reset("http://a/rss")
        assert store.feed("http://a/rss").fetch_url == "http://a/rss"
    finally:
        store.close()


def test_pending_records_are_forgotten_once_saved_and_marks_keep_the_lowest_offset(tmp_path):
    store = StateStore(tmp_path / "s.db")
    try:
        sent = [Emitted("a1", "h1", None, "raw"), Emitted("dlq:x", "rejected", None, "dlq")]
        store.set_marks({"raw": {0: 10, 1: 5}})
        store.set_marks({"raw": {0: 12, 1: 3}})
        assert store.marks() == {"raw": {0: 10, 1: 3}}
        store.intend("http://a/rss", sent)
        assert store.has_pending() and {e.key for _, e in store.pending()} == {"a1", "dlq:x"}
        store.save([FeedUpdate(FeedState(url="http://a/rss"), [sent[0]])])
        assert [e.key for _, e in store.pending()] == ["dlq:x"]
        store.resolve_pending([("http://a/rss", sent[1])])
        assert not store.has_pending() and store.marks() == {}
        assert store.unseen("http://a/rss", [("a1", "h1"), ("dlq:x", "rejected")]) == set()
    finally:
        store.close()


def test_ids_are_versioned_and_a_database_from_before_keeps_recognising_scheme_1(tmp_path):
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.executescript(OLD_SCHEMA)  # seen ids from before ids were versioned
    for _ in range(2):  # the upgrade is recorded once and kept
        store = StateStore(old)
        assert store.oldest_id_scheme == 1
        store.close()
    with sqlite3.connect(old) as db:
        assert dict(db.execute("SELECT key, value FROM meta")) == {
            "id_scheme": str(ID_SCHEME),
            "oldest_id_scheme": "1",
        }
    fresh = StateStore(tmp_path / "new.db")
    fresh.save([FeedUpdate(FeedState(url="http://a/rss"), [Emitted("x", "h")])])
    fresh.close()
    assert StateStore(tmp_path / "new.db").oldest_id_scheme == ID_SCHEME
