"""One ingest cycle: poll every feed, produce new articles to ``news.raw``, then save state.

Order of operations per feed, so that a crash loses nothing: fetch (conditional GET) → parse →
keep items that are new or changed → produce to Kafka (acks=all, idempotent, key = article id) →
wait for delivery → only then save the feed's validators and the emitted ids. A crash between
delivery and saving re-sends those articles next cycle, with the same ids (consumers dedupe by id).
Items that cannot be identified go to ``news.dlq`` with a reason; feed-level problems are counted
in the cycle summary and published as a health record on ``news.feed-health``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError

from connectors import kafka as kafka_clients
from connectors.rss.feeds import Feed
from connectors.rss.fetch import FetchResult, fetch, make_client
from connectors.rss.parse import ParsedFeed, parse_feed
from connectors.rss.state import StateStore
from newsflow.config import Settings
from newsflow.records import Article, DeadLetter, SourceCoordinates, encode, utc_now

log = logging.getLogger(__name__)


@dataclass
class FeedOutcome:
    feed: Feed
    status: str
    new: int = 0
    items: int = 0
    rejected: int = 0
    bozo: bool = False
    error: str = ""


@dataclass
class CycleSummary:
    outcomes: list[FeedOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def new_articles(self) -> int:
        return sum(o.new for o in self.outcomes)

    @property
    def by_status(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    @property
    def errors(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes if o.status not in ("ok", "not_modified"))

    @property
    def rejected(self) -> int:
        return sum(o.rejected for o in self.outcomes)


@dataclass
class _Polled:
    feed: Feed
    fetched: FetchResult
    parsed: ParsedFeed | None


class Ingestor:
    """Polls feeds and produces articles; create once, call :meth:`run_cycle` per poll."""

    def __init__(self, settings: Settings, producer: KafkaProducer | None = None, workers: int = 16) -> None:
        self.settings = settings
        self.state = StateStore(settings.data_dir / "ingest" / "state.db")
        self.client = make_client()
        self._own_producer = producer is None
        if producer is None:
            kafka_clients.require_broker(settings.kafka)
            kafka_clients.ensure_topics(settings.kafka, settings.topics)
        self.producer = producer or kafka_clients.producer(settings.kafka)
        self.workers = workers

    def close(self) -> None:
        self.client.close()
        if self._own_producer:
            self.producer.close()
        self.state.close()

    def run_cycle(
        self, feeds: list[Feed], progress: Callable[[FeedOutcome], None] | None = None
    ) -> CycleSummary:
        start = time.perf_counter()
        summary = CycleSummary()
        active = [f for f in feeds if f.enabled]
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(active)))) as pool:
            for polled in pool.map(self._poll, active):
                outcome = self._emit(polled)
                summary.outcomes.append(outcome)
                if progress is not None:
                    progress(outcome)
        summary.seconds = time.perf_counter() - start
        return summary

    # -- per feed -------------------------------------------------------------------------------
    def _poll(self, feed: Feed) -> _Polled:
        state = self.state.feed(feed.url)
        fetched = fetch(self.client, feed.url, state.etag, state.last_modified)
        if not fetched.ok:
            return _Polled(feed, fetched, None)
        parsed = parse_feed(
            fetched.content,
            feed.url,
            source=feed.name,
            language=feed.language,
            content_type=fetched.content_type,
        )
        return _Polled(feed, fetched, parsed)

    def _emit(self, polled: _Polled) -> FeedOutcome:
        feed, fetched, parsed = polled.feed, polled.fetched, polled.parsed
        if fetched.status == "not_modified":
            outcome = FeedOutcome(feed, "not_modified")
            self.state.record_success(
                feed.url, "not_modified", [], fetched.etag, fetched.last_modified, False, 0
            )
        elif parsed is None:
            outcome = FeedOutcome(feed, fetched.status, error=fetched.error)
            self.state.record_failure(feed.url, fetched.status, fetched.error)
        elif not parsed.is_feed:
            error = f"not a feed ({parsed.bozo_reason or 'no RSS/Atom content'})"
            outcome = FeedOutcome(feed, "not_a_feed", error=error)
            self.state.record_failure(feed.url, "not_a_feed", error)
        else:
            outcome = self._produce(feed, fetched, parsed)
        self._publish_health(outcome)
        return outcome

    def _produce(self, feed: Feed, fetched: FetchResult, parsed: ParsedFeed) -> FeedOutcome:
        fresh = self.state.unseen(feed.url, ((a.id, a.content_hash) for a in parsed.articles))
        # One id per cycle even if a feed repeats an item.
        to_send: dict[str, Article] = {}
        for article in parsed.articles:
            if article.id in fresh:
                to_send.setdefault(article.id, article)
        futures = [
            self.producer.send(self.settings.topics.raw, key=a.id.encode(), value=encode(a))
            for a in to_send.values()
        ]
        for rejected in parsed.rejected:
            letter = DeadLetter(
                stage="ingest",
                reason=rejected.reason,
                error=rejected.error,
                payload=rejected.payload,
                source=SourceCoordinates(feed_url=feed.url),
            )
            futures.append(self.producer.send(self.settings.topics.dlq, key=None, value=encode(letter)))
        self.producer.flush()
        failed = [f for f in futures if f.failed()]
        if failed:
            error = f"Kafka did not confirm {len(failed)} of {len(futures)} records: {failed[0].exception}"
            log.error("feed %s: %s; its state is not saved, the next cycle retries", feed.url, error)
            self.state.record_failure(feed.url, "kafka_error", error)
            return FeedOutcome(feed, "kafka_error", items=len(parsed.articles), error=error)
        self.state.record_success(
            feed.url,
            "ok",
            [(a.id, a.content_hash) for a in to_send.values()],
            fetched.etag,
            fetched.last_modified,
            parsed.bozo,
            len(parsed.articles),
        )
        if parsed.bozo:
            log.info(
                "feed %s is malformed but recovered %d items: %s",
                feed.url,
                len(parsed.articles),
                parsed.bozo_reason,
            )
        return FeedOutcome(
            feed,
            "ok",
            new=len(to_send),
            items=len(parsed.articles),
            rejected=len(parsed.rejected),
            bozo=parsed.bozo,
        )

    def _publish_health(self, outcome: FeedOutcome) -> None:
        state = self.state.feed(outcome.feed.url)
        record = {
            "schema": "newsflow.feed-health.v1",
            "feed_url": outcome.feed.url,
            "name": outcome.feed.name,
            "status": outcome.status,
            "error": outcome.error or None,
            "new_articles": outcome.new,
            "items": outcome.items,
            "rejected": outcome.rejected,
            "bozo": outcome.bozo,
            "consecutive_failures": state.consecutive_failures,
            "last_success": state.last_success,
            "at": utc_now(),
        }
        try:
            self.producer.send(
                self.settings.topics.feed_health,
                key=outcome.feed.url.encode(),
                value=json.dumps(record).encode(),
            )
        except KafkaError as exc:  # health is best-effort; articles are not
            log.warning("could not publish feed health for %s: %s", outcome.feed.url, exc)
