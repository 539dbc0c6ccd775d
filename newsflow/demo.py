"""The offline end-to-end demo (``newsflow demo`` / ``make run``).

bundled sample feeds served over HTTP on 127.0.0.1 (one of them, the Valley Gazette, carries only
teasers: its article pages are served too, fetched and extracted) → ingest → Kafka ``news.raw`` → the Beam
enrichment pipeline (FnApiRunner, committed offsets) → Kafka ``news.enriched`` + JSON Lines files →
a summary read back from ``news.enriched``. A second run finds nothing new and says so.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from connectors import kafka as kafka_clients
from connectors.rss.feeds import load_feeds
from connectors.rss.ingest import CycleSummary, Ingestor
from newsflow.broker import LocalBroker, broker_answers
from newsflow.config import Settings
from newsflow.feedserver import FeedServer
from pipelines.enrich import EnrichReport, run_enrich


@dataclass
class DemoResult:
    ingest: CycleSummary
    enrich: EnrichReport
    records: list[dict[str, Any]]  # every enriched record in the topic, latest per id
    timings: dict[str, float] = field(default_factory=dict)
    broker_started: bool = False

    @property
    def this_run(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("run_id") == self.enrich.run_id]

    def topic_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for record in self.records:
            for topic in record["topics"]:
                counts[topic["label"]] += 1
        return counts

    def stance_counts(self) -> dict[str, Counter[str]]:
        table: dict[str, Counter[str]] = {}
        for record in self.records:
            for stance in record["stances"]:
                table.setdefault(stance["claim_id"], Counter())[stance["label"]] += 1
        return table


def ensure_broker(settings: Settings) -> bool:
    """Start the local broker unless one answers already; True if this call started it."""
    if broker_answers(settings.kafka.bootstrap):
        return False
    LocalBroker(settings).up()
    return True


def run_demo(settings: Settings) -> DemoResult:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    started = ensure_broker(settings)
    timings["broker"] = time.perf_counter() - start

    start = time.perf_counter()
    # Offline: no article page is fetched unless its feed says so in the feeds file (the Valley
    # Gazette, whose pages the demo serves); the other samples link to sites on the internet.
    settings = settings.with_overrides(**{"ingest.full_text": "never"})
    feeds_dir = settings.feeds_file.parent / "feeds"
    port = settings.demo_port
    try:
        server = FeedServer(feeds_dir, port=port)
    except OSError:
        server = FeedServer(feeds_dir, port=0)  # the usual port is taken: any free one will do
    with server, Ingestor(settings) as ingestor:
        summary = ingestor.run_cycle(load_feeds(settings.feeds_file, base=server.base_url), force=True)
    timings["ingest"] = time.perf_counter() - start

    start = time.perf_counter()
    report = run_enrich(settings)
    timings["enrich"] = time.perf_counter() - start

    start = time.perf_counter()
    latest: dict[str, dict[str, Any]] = {}
    for message in kafka_clients.read_all(settings.kafka, settings.topics.enriched):
        record = json.loads(message.value)
        latest[record["article"]["id"]] = record
    timings["read back"] = time.perf_counter() - start
    return DemoResult(summary, report, list(latest.values()), timings, started)
