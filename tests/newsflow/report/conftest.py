"""A known set of enriched records and feed-health polls, written through the real sinks.

``corpus`` builds them; ``written_report`` writes the records with the file sink (a Beam pipeline),
the polls to the feed-health topic of the session broker and the ingest state, then builds the report.
Tests recompute every expected number from ``corpus`` directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import apache_beam as beam
import pytest

from connectors import kafka as kafka_clients
from connectors.files import EnrichedRow, WriteFiles
from connectors.rss.state import FeedState, FeedUpdate, StateStore
from newsflow.records import (
    Article,
    Enriched,
    FeedHealth,
    FeedStatus,
    StanceResult,
    TopicScore,
    content_hash,
    encode,
    to_dict,
)
from tests.fixtures_pg import postgres_dsn  # noqa: F401 - a fixture

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CLAIMS = {"c1": "Foreign hackers changed vote counts", "c2": "The hospital in Idlib was bombed"}
SOURCES = ["Levant Wire", "World Desk", "Mideast Monitor", "Tech Security", "Business Daily"]


# The fields of a feed-health record in the first release (no fetch URL, counters, cut or pages).
FIRST_RELEASE = {"schema", "feed_url", "name", "status", "error", "new_articles", "items", "rejected"}
FIRST_RELEASE |= {"bozo", "consecutive_failures", "last_success", "at"}


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@dataclass
class Poll:
    feed_url: str
    name: str
    status: str
    at: datetime
    disabled_reason: str | None = None


def corpus() -> tuple[list[Enriched], list[Poll]]:
    """60 articles over 3 days before NOW (a spike of 12 Syria articles in one hour) and 4 older ones."""
    records = []
    for n in range(64):
        if n < 12:  # the spike: 12 Syria articles in the 09:00 hour two days ago
            topics, at = ["syria_conflict"], NOW - timedelta(days=2, hours=3) + timedelta(minutes=4 * n)
        elif n < 60:
            topics = [["election_interference"], ["other"], ["syria_conflict"], ["other"]][n % 4]
            at = NOW - timedelta(hours=(n * 7) % 70, minutes=n % 50)
        else:  # outside a 3-day window
            topics, at = ["syria_conflict"], NOW - timedelta(days=10, hours=n)
        if n == 20:
            topics = ["syria_conflict", "election_interference"]  # multi-label: counts in both
        stances = [
            StanceResult(
                claim_id=cid,
                claim=text,
                label=("agree", "disagree", "discuss", "unrelated", "unrelated")[(n + k) % 5],
                score=0.9,
            )
            for k, (cid, text) in enumerate(CLAIMS.items())
        ]
        article = Article(
            id=f"article-{n:04d}",
            feed_url=f"http://feeds.test/{n % 5}.rss",
            source=SOURCES[(n * 3) % 5],
            url=f"https://news.test/{n}",
            title=f"Headline number {n}",
            summary="A short lead.",
            published_at=None if n == 30 else _iso(at),  # n=30: the fetch time counts instead
            fetched_at=_iso(at),
            content_hash=content_hash(str(n)),
        )
        records.append(
            Enriched(
                article=article,
                topics=[TopicScore(label=t, score=0.9) for t in topics],
                primary_topic=topics[0],
                stances=stances,
                model={"encoder": "test"},
                enriched_at=_iso(NOW),
                run_id="run-test",
            )
        )
    polls = []
    for hour in range(0, 60, 3):
        at = NOW - timedelta(hours=hour)
        polls.append(Poll("http://feeds.test/0.rss", "Levant Wire", "ok" if hour % 2 else "not_modified", at))
        bad = "http_500" if hour < 30 else "timeout"
        polls.append(
            Poll(
                "http://feeds.test/1.rss", "World Desk", bad, at, "5 failures in a row" if hour == 0 else None
            )
        )
    return records, polls


def write_records(directory, records: list[Enriched]) -> None:
    rows = [EnrichedRow("news.raw", i % 2, i, r, encode(r)) for i, r in enumerate(records)]
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        _ = pipeline | beam.Create(rows) | WriteFiles(str(directory), ("jsonl", "parquet"))


def write_health(settings, polls: list[Poll]) -> None:
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    # a topic created just now may not have its leaders yet: retry for a while rather than 0.5 s
    producer = kafka_clients.producer(settings.kafka, retries=40, retry_backoff_ms=250)
    for poll in polls:
        record = FeedHealth(
            feed_url=poll.feed_url,
            name=poll.name,
            status=FeedStatus(poll.status),
            error=None if FeedStatus(poll.status).healthy else f"{poll.status}: it failed",
            disabled_reason=poll.disabled_reason,
            at=_iso(poll.at),
        )
        value = encode(record)
        if poll.at < NOW - timedelta(hours=45):  # as the first release wrote them: an untyped dict
            value = json.dumps({k: v for k, v in to_dict(record).items() if k in FIRST_RELEASE}).encode()
        producer.send(settings.topics.feed_health, key=poll.feed_url.encode(), value=value)
    producer.flush()
    producer.close()
    store = StateStore(settings.data_dir / "ingest" / "state.db")
    try:
        store.save(
            [
                FeedUpdate(
                    FeedState(url="http://feeds.test/0.rss", last_status="ok", last_success=_iso(NOW))
                ),
                FeedUpdate(
                    FeedState(
                        url="http://feeds.test/1.rss",
                        last_status="http_500",
                        consecutive_failures=5,
                        disabled_reason="5 failures in a row",
                    )
                ),
            ]
        )
    finally:
        store.close()


@pytest.fixture
def written_report(kafka_settings, tmp_path):
    """(settings, records, polls, ReportResult) for the corpus, report window 3 days before NOW."""
    from newsflow.report.build import build_report

    records, polls = corpus()
    write_records(kafka_settings.enriched_dir, records)
    write_health(kafka_settings, polls)
    result = build_report(kafka_settings, tmp_path / "report", since="3d", now=NOW)
    return kafka_settings, records, polls, result
