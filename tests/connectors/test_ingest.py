"""Ingest against feeds served over HTTP on loopback and the real broker."""

import shutil

import pytest

from connectors import kafka as kafka_clients
from connectors.rss.feeds import Feed, load_feeds
from connectors.rss.ingest import Ingestor
from connectors.rss.parse import parse_feed
from newsflow.config import REPO_ROOT
from newsflow.feedserver import FeedServer
from newsflow.records import Article, DeadLetter, FeedHealth, decode

pytestmark = pytest.mark.integration

SAMPLES = REPO_ROOT / "examples" / "feeds"


@pytest.fixture
def kafka_settings(kafka_settings):
    """The session broker's settings, without the 1 s politeness spacing (all feeds share one host),
    and no article page fetches (the samples link to sites on the internet; tests stay on loopback)."""
    return kafka_settings.with_overrides(**{"ingest.per_host_spacing_s": 0.0, "ingest.full_text": "never"})


def _expected_ids(base: str) -> set[str]:
    ids = set()
    for path in list(SAMPLES.glob("*.rss")) + list(SAMPLES.glob("*.atom")):
        ids |= {a.id for a in parse_feed(path.read_bytes(), f"{base}/{path.name}").articles}
    return ids


def test_ingest_produces_every_article_once_keyed_by_id(kafka_settings):
    with FeedServer(SAMPLES) as server:
        feeds = load_feeds(REPO_ROOT / "examples" / "feeds.yaml", base=server.base_url)
        with Ingestor(kafka_settings) as ingestor:
            first = ingestor.run_cycle(feeds)
            not_due = ingestor.run_cycle(feeds)  # every feed was just polled: none is due yet
            second = ingestor.run_cycle(feeds, force=True)  # what `newsflow ingest --once` does
    assert first.by_status == {"ok": 7}
    assert not_due.outcomes == [] and not_due.not_due == 7
    assert second.by_status == {"not_modified": 7} and second.new_articles == 0
    records = kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.raw)
    articles = [decode(Article, r.value) for r in records]
    assert all(r.key.decode() == a.id for r, a in zip(records, articles, strict=True))
    ids = [a.id for a in articles]
    assert len(ids) == len(set(ids)), "an article was produced twice"
    assert set(ids) == _expected_ids(server.base_url)
    assert first.new_articles == len(ids)
    health = kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.feed_health)
    assert {decode(FeedHealth, h.value).status for h in health} == {"ok", "not_modified"}


def test_restart_emits_nothing_twice_and_edits_are_re_emitted(kafka_settings, tmp_path):
    feeds_dir = tmp_path / "feeds"
    feeds_dir.mkdir()
    shutil.copy(SAMPLES / "levant-wire.rss", feeds_dir / "one.rss")
    with FeedServer(feeds_dir) as server:
        feed = [Feed(url=f"{server.base_url}/one.rss", name="One")]
        for _ in range(2):  # two processes in a row: a restart
            with Ingestor(kafka_settings) as ingestor:
                ingestor.state._db.execute(
                    "UPDATE feeds SET etag = NULL, last_modified = NULL, body_hash = NULL"
                )  # force a 200 and a parse
                ingestor.run_cycle(feed, force=True)
        count = len(kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.raw))
        path = feeds_dir / "one.rss"
        path.write_text(path.read_text().replace("Nine years on", "Nine years later", 1))
        with Ingestor(kafka_settings) as ingestor:
            edited = ingestor.run_cycle(feed, force=True)
    assert count == 9
    assert edited.new_articles == 1


def test_bad_feeds_do_not_stop_the_cycle(kafka_settings, tmp_path):
    feeds_dir = tmp_path / "feeds"
    feeds_dir.mkdir()
    shutil.copy(SAMPLES / "business-daily.rss", feeds_dir / "good.rss")
    (feeds_dir / "page.html").write_text("<html><body>not a feed</body></html>")
    (feeds_dir / "empty.rss").write_text("")
    (feeds_dir / "orphan.rss").write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
        "<item><description>no link, guid or title</description></item></channel></rss>"
    )
    with FeedServer(feeds_dir) as server:
        feeds = [
            Feed(url=f"{server.base_url}/{name}")
            for name in ("good.rss", "page.html", "empty.rss", "missing.rss", "orphan.rss")
        ]
        feeds.append(Feed(url="http://127.0.0.1:9/refused.rss"))
        with Ingestor(kafka_settings) as ingestor:
            summary = ingestor.run_cycle(feeds)
    status = {o.feed.url.rsplit("/", 1)[1]: o.status for o in summary.outcomes}
    assert status == {
        "good.rss": "ok",
        "page.html": "not_a_feed",
        "empty.rss": "not_a_feed",
        "missing.rss": "http_404",
        "orphan.rss": "ok",
        "refused.rss": "connection_error",
    }
    assert summary.new_articles == 9
    letters = [
        decode(DeadLetter, r.value)
        for r in kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.dlq)
    ]
    assert [(d.stage, d.reason) for d in letters] == [("ingest", "unidentifiable_item")]
    assert letters[0].source.feed_url.endswith("/orphan.rss")
