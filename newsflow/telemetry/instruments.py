"""Every live metric newsflow records, and the hooks the working code calls to record them.

The hooks are called where the work happens: the ingest loop for each feed it polled
(:func:`feed_polled`), the feed connector and the enrich pipeline for each dead letter
(:func:`dead_letter`), the pipeline for each enriched article (:func:`enriched`), the model
handler for each batch (:func:`model_batch`, :func:`models_loaded`), the Kafka reader for each
commit (:func:`offsets_committed`). Each hook is cheap (a few counter increments) and never raises.

Metrics (Prometheus names; ``/metrics`` of ``--metrics-port`` serves :data:`REGISTRY`):

=============================================  =========  ============================================
``newsflow_feeds_polled_total{status}``        counter    feeds polled, by outcome (ok, not_modified, …)
``newsflow_articles_produced_total``           counter    new articles Kafka confirmed on the raw topic
``newsflow_dead_letters_total{stage,reason}``  counter    dead letters: ingest, decode, enrich, build
``newsflow_articles_enriched_total``           counter    enriched records built and validated
``newsflow_consumer_lag{topic,partition}``     gauge      raw records the enrich group has not committed
``newsflow_model_batch_seconds``               histogram  one model call on a batch of articles
``newsflow_model_batch_articles``              histogram  articles per model batch
``newsflow_produce_to_enriched_seconds``       histogram  raw record's Kafka timestamp → enriched record
``newsflow_last_success_timestamp_seconds``    gauge      {job}: last ingest cycle, enrich commit or run
``newsflow_enrich_planned_offsets``            gauge      offsets a bounded enrich run plans to read
``newsflow_models_loaded``                     gauge      1 once the models are loaded in this process
``newsflow_broker_reachable``                  gauge      1 when the last broker check succeeded
=============================================  =========  ============================================

**Where they are recorded.** The hooks record in the process that runs them. Ingest, the consumer
lag and the last-success times are recorded by the ``newsflow`` process itself, whatever the Beam
runner. The pipeline's hooks run in the Beam workers: with the FnApiRunner (the default) and with
runners whose SDK workers run inside the ``newsflow`` process (Prism with its default LOOPBACK
environment) they are live on ``/metrics``. With workers in other processes or machines (Prism with
``--environment_type=PROCESS``/``DOCKER``, ``--direct_running_mode=multi_processing``, Flink,
Dataflow) this process does not see them while the run lasts: :func:`account_run` then adds the
run's Beam counters (articles enriched, dead letters by stage and reason) when each run ends, and
the histograms and ``newsflow_models_loaded`` stay empty (the runner's own metrics carry Beam's
``newsflow`` counters and RunInference's batch latency).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Beam counter names (namespace ``newsflow``) that carry what the histograms cannot, on every runner.
BEAM_DEAD_LETTER_PREFIX = "dlq_reason."  # dlq_reason.<stage>.<reason>
ENRICH_STAGES = ("decode", "enrich", "build")

FEEDS_POLLED = Counter(
    "newsflow_feeds_polled", "Feeds polled, by outcome status", ["status"], registry=REGISTRY
)
ARTICLES_PRODUCED = Counter(
    "newsflow_articles_produced", "New articles the broker confirmed on the raw topic", registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "newsflow_dead_letters",
    "Items sent to the dead-letter topic, by stage (ingest, decode, enrich, build) and reason",
    ["stage", "reason"],
    registry=REGISTRY,
)
ARTICLES_ENRICHED = Counter(
    "newsflow_articles_enriched", "Enriched records built and validated", registry=REGISTRY
)
CONSUMER_LAG = Gauge(
    "newsflow_consumer_lag",
    "Raw records the enrich consumer group has not committed yet (end offset - committed offset)",
    ["topic", "partition"],
    registry=REGISTRY,
)
MODEL_BATCH_SECONDS = Histogram(
    "newsflow_model_batch_seconds",
    "Seconds one model call took on a batch of articles (topics and stance)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
MODEL_BATCH_ARTICLES = Histogram(
    "newsflow_model_batch_articles",
    "Articles per model batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
PRODUCE_TO_ENRICHED = Histogram(
    "newsflow_produce_to_enriched_seconds",
    "Seconds from a raw record's Kafka timestamp (produce time) to its enriched record being built",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0),
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "newsflow_last_success_timestamp_seconds",
    "Unix time of the last success: job=ingest (a cycle), enrich (an offset commit or a run), run",
    ["job"],
    registry=REGISTRY,
)
ENRICH_PLANNED = Gauge(
    "newsflow_enrich_planned_offsets",
    "Offsets the bounded enrich run in progress plans to read (0 when none runs, and in stream mode)",
    registry=REGISTRY,
)
MODELS_LOADED = Gauge(
    "newsflow_models_loaded", "1 once the enrichment models are loaded in this process", registry=REGISTRY
)
BROKER_REACHABLE = Gauge(
    "newsflow_broker_reachable", "1 when the last check reached a bootstrap server", registry=REGISTRY
)


def feed_polled(status: str, new: int, feed: str | None = None) -> None:
    """One feed's poll ended with ``status``; ``new`` of its articles were confirmed by Kafka."""
    FEEDS_POLLED.labels(status=status).inc()
    if new:
        ARTICLES_PRODUCED.inc(new)
    log.info("feed polled: %s, %s new", status, new, extra={"feed": feed, "status": status, "new": new})


def dead_letter(
    stage: str,
    reason: str,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    feed: str | None = None,
) -> None:
    """One item went to the dead-letter topic; logged at INFO with where it came from."""
    DEAD_LETTERS.labels(stage=stage, reason=reason).inc()
    where: dict[str, Any] = {"stage": stage, "reason": reason}
    for key, value in (("topic", topic), ("partition", partition), ("offset", offset), ("feed", feed)):
        if value is not None:
            where[key] = value
    log.info("dead letter: stage %s, reason %s", stage, reason, extra=where)


def enriched(produced_ms: int | None = None) -> None:
    """One enriched record was built; ``produced_ms`` is its raw record's Kafka timestamp."""
    ARTICLES_ENRICHED.inc()
    if produced_ms is not None and produced_ms > 0:
        PRODUCE_TO_ENRICHED.observe(max(0.0, time.time() - produced_ms / 1000.0))


def model_batch(size: int, seconds: float) -> None:
    MODEL_BATCH_SECONDS.observe(seconds)
    MODEL_BATCH_ARTICLES.observe(size)


def models_loaded() -> None:
    MODELS_LOADED.set(1)


def offsets_committed(topic: str, partition: int, offset: int) -> None:
    """The enrich pipeline committed ``offset`` (its sinks flushed everything before it)."""
    LAST_SUCCESS.labels(job="enrich").set_to_current_time()
    where = {"topic": topic, "partition": partition, "offset": offset}
    log.debug("committed %s[%s] -> %s", topic, partition, offset, extra=where)


def succeeded(job: str) -> None:
    """A unit of work of ``job`` (ingest, enrich, run) completed."""
    LAST_SUCCESS.labels(job=job).set_to_current_time()


def enrich_planned(offsets: int) -> None:
    ENRICH_PLANNED.set(offsets)


def set_lag(topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(lag)


def broker_reachable(ok: bool) -> None:
    BROKER_REACHABLE.set(1 if ok else 0)


# -- reading back: progress displays and runs on workers elsewhere ---------------------------------
def value(name: str, labels: Mapping[str, str] | None = None) -> float:
    """The current value of one sample of :data:`REGISTRY` (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, dict(labels or {})) or 0.0


def processed() -> float:
    """Raw records the enrich pipeline finished in this process: enriched + dead-lettered by it."""
    done = value("newsflow_articles_enriched_total")
    for metric in DEAD_LETTERS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("stage") in ENRICH_STAGES:
                done += sample.value
    return done


Snapshot = dict[tuple[str, ...], float]


def snapshot() -> Snapshot:
    """The pipeline counters as this process has them now (see :func:`account_run`)."""
    taken: Snapshot = {("enriched",): value("newsflow_articles_enriched_total")}
    for metric in DEAD_LETTERS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                taken[("dead_letter", sample.labels["stage"], sample.labels["reason"])] = sample.value
    return taken


def account_run(before: Snapshot, beam_counters: Mapping[str, int]) -> bool:
    """Add what a finished run's Beam counters counted beyond what this process recorded.

    With the pipeline's workers in this process both agree and nothing is added; with workers
    elsewhere the hooks ran there, so the run's articles enriched and dead letters by stage and
    reason are added now. Returns True when something was added (workers ran elsewhere).
    """
    now = snapshot()
    added = False
    beam: dict[tuple[str, ...], int] = {("enriched",): int(beam_counters.get("enriched", 0))}
    for name, count in beam_counters.items():
        if name.startswith(BEAM_DEAD_LETTER_PREFIX):
            stage, _, reason = name[len(BEAM_DEAD_LETTER_PREFIX) :].partition(".")
            beam[("dead_letter", stage, reason)] = int(count)
    for key, count in beam.items():
        missing = count - (now.get(key, 0.0) - before.get(key, 0.0))
        if missing <= 0:
            continue
        added = True
        if key[0] == "enriched":
            ARTICLES_ENRICHED.inc(missing)
        else:
            DEAD_LETTERS.labels(stage=key[1], reason=key[2]).inc(missing)
    return added
