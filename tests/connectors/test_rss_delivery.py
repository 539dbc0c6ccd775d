"""kill -9 of ingest between sending and saving: the restart sends every record exactly once.

A real broker, feeds served on loopback, and a child process that is really killed with SIGKILL at
the worst moment: inside the state save that follows Kafka's confirmations, after part of the
feeds' states are written (``after_delivery``: everything sent is in Kafka by then; ``in_flight``:
records still on their way). A new Ingestor on the same data directory then runs a cycle.
"""

import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from connectors import kafka as kafka_clients
from connectors.rss.feeds import Feed
from connectors.rss.ingest import Ingestor
from newsflow.config import REPO_ROOT
from newsflow.feedserver import FeedServer, Reply
from newsflow.records import Article, decode

pytestmark = pytest.mark.integration

FEEDS, ITEMS = 20, 50

CHILD = r"""
import os, signal, sys
from connectors.rss.feeds import load_feeds
from connectors.rss.ingest import Ingestor
from connectors.rss.state import StateStore
from newsflow.config import Settings

mode, feeds_file = sys.argv[1], sys.argv[2]
ingestor = Ingestor(Settings())
real_save = StateStore.save

def save(self, updates):
    if any(u.emitted for u in updates):
        real_save(self, updates[: len(updates) // 2])  # part of the feeds are saved...
        if mode == "after_delivery":
            ingestor.producer.flush()  # ...and everything sent so far is in Kafka
        print("killing", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(self, updates)

StateStore.save = save
ingestor.run_cycle(load_feeds(feeds_file), force=True)
print("not killed", flush=True)
"""


def feed_body(feed: int) -> bytes:
    items = "".join(
        f"<item><title>Feed {feed} story {i}</title><link>https://wire{feed}.example/{i}</link>"
        f"<description>Story {i} of feed {feed}, with enough words to be a summary.</description></item>"
        for i in range(ITEMS)
    )
    orphan = "<item><description>no link, no guid, no title</description></item>" if feed % 10 == 0 else ""
    channel = f"<channel><title>F{feed}</title>{items}{orphan}</channel>"
    return f'<?xml version="1.0"?><rss version="2.0">{channel}</rss>'.encode()


@pytest.mark.parametrize("mode", ["after_delivery", "in_flight"])
def test_kill_9_mid_cycle_then_restart_produces_every_record_exactly_once(kafka_settings, tmp_path, mode):
    settings = kafka_settings.with_overrides(
        **{
            "ingest.per_host_spacing_s": 0.0,
            "ingest.per_host_concurrency": 8,
            "ingest.parse_processes": 0,
            "ingest.full_text": "never",
        }
    )
    with FeedServer() as host:
        feeds = [
            Feed(url=host.route(f"/f{i}.rss", Reply(body=feed_body(i))), name=f"f{i}") for i in range(FEEDS)
        ]
        feeds_file = tmp_path / "feeds.yaml"
        feeds_file.write_text("feeds:\n" + "".join(f"  - url: {f.url}\n" for f in feeds))
        env = {
            **os.environ,
            "NEWSFLOW_DATA_DIR": str(settings.data_dir),
            "NEWSFLOW_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
            "NEWSFLOW_TOPICS_RAW": settings.topics.raw,
            "NEWSFLOW_TOPICS_DLQ": settings.topics.dlq,
            "NEWSFLOW_TOPICS_ENRICHED": settings.topics.enriched,
            "NEWSFLOW_TOPICS_FEED_HEALTH": settings.topics.feed_health,
            "NEWSFLOW_INGEST_PER_HOST_SPACING_S": "0",
            "NEWSFLOW_INGEST_PER_HOST_CONCURRENCY": "8",
            "NEWSFLOW_INGEST_PARSE_PROCESSES": "0",
            "NEWSFLOW_INGEST_FULL_TEXT": "never",
        }
        child = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(feeds_file)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert child.returncode == -signal.SIGKILL, (child.returncode, child.stdout, child.stderr[-2000:])
        before = len(kafka_clients.read_all(settings.kafka, settings.topics.raw))
        with Ingestor(settings) as ingestor:
            assert ingestor.state.has_pending()
            summary = ingestor.run_cycle(feeds, force=True)
            again = ingestor.run_cycle(feeds, force=True)
    assert summary.recovered is not None and summary.recovered.pending > 0
    if mode == "after_delivery":
        assert before > 0 and summary.recovered.delivered == summary.recovered.pending
    records = kafka_clients.read_all(settings.kafka, settings.topics.raw)
    counts = Counter(decode(Article, r.value).id for r in records)
    assert len(counts) == FEEDS * ITEMS, "an article was lost"
    assert set(counts.values()) == {1}, f"produced twice: {[k for k, v in counts.items() if v > 1][:5]}"
    assert before + summary.new_articles == FEEDS * ITEMS  # counts reconcile: killed run + restart
    letters = kafka_clients.read_all(settings.kafka, settings.topics.dlq)
    assert len(letters) == FEEDS // 10 and len({r.key for r in letters}) == FEEDS // 10
    assert again.new_articles == 0 and again.recovered is None
