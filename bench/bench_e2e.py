"""End to end in stream mode: produce → enrich (topics + stance) → ``news.enriched``, on a real broker.

Run: ``.venv/bin/python -m bench.bench_e2e [--seconds 300] [--rate 20] [--burst 2000]``.
One ``run_enrich(mode="stream")`` runs in a thread, with the real models and the Kafka and file
sinks (JSONL + Parquet; PostgreSQL too with ``--postgres-dsn``), while this process produces raw
articles and a consumer reads the enriched topic:

1. warm-up: one article, until it comes back enriched (the models load);
2. steady: ``--rate`` articles/s for ``--seconds``; latency per article = enriched record received
   by the consumer - produce time (p50/p95/max), and Kafka timestamps (raw CreateTime → enriched
   CreateTime, i.e. without the consumer's poll);
3. unthrottled: ``--burst`` articles produced at once; throughput = burst / (last enriched received -
   first produced);
4. peak RSS of this process (pipeline, models, clients; the broker is a separate JVM, not counted);
5. where the time goes, after the RSS reading, on the burst's texts: the model layer alone
   (``Enricher.enrich`` in batches) with the pipeline's settings (default ``runtime=auto``) and with
   ``runtime=torch, precision=fp32``; the naive per-article torch-fp32 loop and the bare
   one-torch-fp32-pass-per-article ceiling of :mod:`bench.bench_models`; and how many labels the
   default run gives that differ from torch fp32's (the quality check).

Articles are short feed items (title + one to three sentences), from ``../shared/data/topics`` when
present, else synthetic; each text is unique, so the embedding cache never hits. Targets on 2 cores:
p95 ≤ 2 s at 20 articles/s, unthrottled ≥ 50 articles/s, peak RSS ≤ 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import resource
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from bench.common import bench_broker, table
from connectors import kafka as kafka_clients
from newsflow.config import REPO_ROOT, Settings
from newsflow.records import Article, content_hash, encode, utc_now
from pipelines.enrich import EnrichReport, RunControl, enabled_sinks, run_enrich

log = logging.getLogger("bench.e2e")

SHARED_TOPICS = REPO_ROOT.parent / "shared" / "data" / "topics" / "dev.jsonl"
SYNTHETIC = [
    (
        "Russian jets strike hospital in Idlib",
        "Airstrikes hit a hospital in Syria's Idlib province, rescuers said.",
    ),
    ("Troll farm targeted voters before the election", "A foreign influence operation ran fake accounts."),
    ("Central bank holds rates", "The bank kept its benchmark rate unchanged on Thursday, citing inflation."),
    ("Ceasefire talks resume in Geneva", "Envoys met for a third day; no agreement was announced."),
    ("Hackers leak campaign emails", "Investigators say the intrusion was run from abroad."),
    ("Storm closes ports along the coast", "Shipping was suspended and schools shut for two days."),
]


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]


def text_pool() -> list[tuple[str, str]]:
    """(title, lead) pairs: real articles cut to feed-item length when the shared data is there."""
    if not SHARED_TOPICS.exists():
        return SYNTHETIC
    pool = []
    rng = random.Random(7)
    with open(SHARED_TOPICS, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            sentences = _sentences(row.get("text", ""))
            if row.get("title") and sentences:
                pool.append((row["title"], " ".join(sentences[: rng.randint(1, 3)])[:600]))
    return pool or SYNTHETIC


class ArticleMaker:
    """Unique short articles (the unique suffix keeps the embedding cache cold)."""

    def __init__(self, tag: str) -> None:
        self.pool = text_pool()
        self.tag = tag
        self.n = 0

    def __call__(self) -> Article:
        title, lead = self.pool[self.n % len(self.pool)]
        self.n += 1
        title, lead = f"{title} [{self.tag}-{self.n}]", f"{lead} (wire item {self.n})"
        return Article(
            id=content_hash(self.tag, str(self.n)),
            feed_url="http://bench.invalid/feed.rss",
            source=f"Bench {self.n % 7}",
            title=title,
            summary=lead,
            published_at=utc_now(),
            fetched_at=utc_now(),
            content_hash=content_hash(title, lead),
        )


@dataclass
class Arrivals:
    """What the consumer saw: per id, produce time, receive time and the two Kafka timestamps."""

    sent: dict[str, float] = field(default_factory=dict)
    sent_ms: dict[str, int] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    enriched_ms: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, ids: list[str]) -> int:
        with self.lock:
            return sum(1 for i in ids if i in self.received)

    def latencies(self, ids: list[str]) -> tuple[list[float], list[float]]:
        with self.lock:
            got = [i for i in ids if i in self.received]
            return (
                [self.received[i] - self.sent[i] for i in got],
                [(self.enriched_ms[i] - self.sent_ms[i]) / 1000 for i in got],
            )


def _consume(settings: Settings, arrivals: Arrivals, stop: threading.Event, ready: threading.Event) -> None:
    consumer = kafka_clients.consumer(settings.kafka, group_id=None)
    try:
        parts = consumer.partitions_for_topic(settings.topics.enriched) or set()
        tps = [TopicPartition(settings.topics.enriched, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)  # resolve "end" now, before anything is produced
        ready.set()
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                now = time.time()
                with arrivals.lock:
                    for record in records:
                        key = record.key.decode()
                        arrivals.received.setdefault(key, now)
                        arrivals.enriched_ms.setdefault(key, record.timestamp)
    finally:
        consumer.close()


def _wait_for(arrivals: Arrivals, ids: list[str], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while arrivals.count(ids) < len(ids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _send(producer: Any, settings: Settings, arrivals: Arrivals, article: Article) -> None:
    now = time.time()
    with arrivals.lock:
        arrivals.sent[article.id] = now
        arrivals.sent_ms[article.id] = int(now * 1000)
    producer.send(
        settings.topics.raw, key=article.id.encode(), value=encode(article), timestamp_ms=int(now * 1000)
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def cpu_seconds() -> float:
    """CPU time of this process so far (all threads: pipeline, model, clients)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class ModelOnly:
    """The model layer alone on the burst's texts (see the module docstring, step 5)."""

    runtime: str
    rate: float
    cpu_ms: float
    texts: float
    torch_rate: float
    naive_rate: float
    one_pass_rate: float
    differ: int
    labels: int


def model_only(settings: Settings, articles: list[Article]) -> ModelOnly:
    from bench.bench_models import labels, run_naive, run_one_pass_ceiling
    from models.enricher import Enricher

    results = []
    torch_settings = settings.models.model_copy(update={"runtime": "torch", "precision": "fp32"})
    for models in (settings.models, torch_settings):
        enricher = Enricher(models, settings.taxonomy_file)
        enricher.enrich(articles[:8], "warm-up")
        size = models.batch_size
        started, cpu, encoded = time.perf_counter(), cpu_seconds(), enricher.encoder.stats["encoded"]
        records = []
        for i in range(0, len(articles), size):
            records.extend(enricher.enrich(articles[i : i + size], "model-only"))
        seconds = time.perf_counter() - started
        texts = (enricher.encoder.stats["encoded"] - encoded) / len(articles)
        results.append(
            (enricher, len(articles) / seconds, (cpu_seconds() - cpu) / len(articles), texts, records)
        )
    default, torch_fp32 = results
    sample = articles[:10]
    naive = len(sample) / run_naive(torch_fp32[0], sample)
    one_pass = len(articles) / run_one_pass_ceiling(torch_fp32[0], articles, 64)
    got, base = labels(default[4]), labels(torch_fp32[4])
    differ = sum(a != b for a, b in zip(got, base, strict=True))
    return ModelOnly(
        default[0].runtime,
        default[1],
        default[2] * 1000,
        default[3],
        torch_fp32[1],
        naive,
        one_pass,
        differ,
        len(base),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the steady phase")
    parser.add_argument("--rate", type=float, default=20.0, help="articles/s in the steady phase")
    parser.add_argument("--burst", type=int, default=2000, help="articles in the unthrottled phase")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--drain-timeout", type=float, default=1800.0, help="seconds to wait for a phase's last articles"
    )
    parser.add_argument("--postgres-dsn", default=None, help="also write to this PostgreSQL server")
    parser.add_argument("--no-model-only", action="store_true", help="skip the model-only measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with bench_broker() as bootstrap, tempfile.TemporaryDirectory(prefix="newsflow-bench-e2e-") as tmp:
        tag = uuid.uuid4().hex[:6]
        overrides: dict[str, Any] = {
            "data_dir": Path(tmp),
            "kafka.bootstrap": bootstrap,
            "kafka.group_id": f"bench-{tag}",
            "topics.raw": f"bench.{tag}.raw",
            "topics.enriched": f"bench.{tag}.enriched",
            "topics.dlq": f"bench.{tag}.dlq",
            "topics.partitions": args.partitions,
        }
        if args.postgres_dsn:
            overrides |= {"sinks.postgres_dsn": args.postgres_dsn, "sinks.postgres_table": f"bench_{tag}"}
        settings = Settings().with_overrides(**overrides)
        kafka_clients.ensure_topics(settings.kafka, settings.topics)
        arrivals = Arrivals()
        stop, ready = threading.Event(), threading.Event()
        consumer = threading.Thread(target=_consume, args=(settings, arrivals, stop, ready), daemon=True)
        consumer.start()
        ready.wait(60)
        outcome: dict[str, Any] = {}
        control = RunControl()

        def stream() -> None:
            try:
                outcome["report"] = run_enrich(settings, mode="stream", control=control)
            except Exception as exc:  # reported below, after the phases
                outcome["error"] = exc

        runner = threading.Thread(target=stream, daemon=True)
        runner.start()
        producer = kafka_clients.producer(settings.kafka, linger_ms=0)
        make = ArticleMaker(tag)
        try:
            sinks = ", ".join(enabled_sinks(settings.sinks))
            print(f"broker {bootstrap}; sinks: {sinks} (files: {', '.join(settings.sinks.files_formats)})")
            warm = make()
            started = time.monotonic()
            _send(producer, settings, arrivals, warm)
            if not _wait_for(arrivals, [warm.id], 300):
                raise SystemExit(f"the pipeline did not enrich a first article in 300 s: {outcome}")
            print(f"warm-up (model load + first article): {time.monotonic() - started:.1f}s")

            steady: list[str] = []
            total = int(args.rate * args.seconds)
            t0 = time.monotonic()
            for i in range(total):
                delay = t0 + i / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                article = make()
                steady.append(article.id)
                _send(producer, settings, arrivals, article)
                if i and i % int(args.rate * 30) == 0:
                    seen, _ = arrivals.latencies(steady)
                    print(f"  {i}/{total} produced, {len(seen)} enriched, p95 so far {pct(seen, 95):.2f}s")
            producer.flush()
            # Drain what the pipeline could not keep up with, so the burst starts from an empty topic.
            complete = _wait_for(arrivals, steady, args.drain_timeout)
            e2e, kafka_ts = arrivals.latencies(steady)
            rss_steady = peak_rss_mb()

            burst = [make() for _ in range(args.burst)]
            b0, cpu0 = time.time(), cpu_seconds()
            for article in burst:
                _send(producer, settings, arrivals, article)
            producer.flush()
            burst_ids = [a.id for a in burst]
            burst_complete = _wait_for(arrivals, burst_ids, args.drain_timeout)
            burst_cpu = (cpu_seconds() - cpu0) / max(1, args.burst)
            with arrivals.lock:
                last = max((arrivals.received[i] for i in burst_ids if i in arrivals.received), default=b0)
                first_in = min(
                    (arrivals.received[i] for i in burst_ids if i in arrivals.received), default=b0
                )
            received = arrivals.count(burst_ids)
            throughput = received / (last - b0) if last > b0 else float("nan")
            steady_state = (received - 1) / (last - first_in) if last > first_in else float("nan")
        finally:
            producer.close()
            control.request_stop()
            runner.join(timeout=300)
            stop.set()
            consumer.join(timeout=30)
        rss_peak = peak_rss_mb()
        report: EnrichReport | None = outcome.get("report")
        if "error" in outcome:
            print(f"run_enrich failed: {outcome['error']}")
        alone = None if args.no_model_only else model_only(settings, burst[:512])
        load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []

        rows = [
            ("steady rate", f"{args.rate:g} articles/s for {args.seconds:g}s", f"{len(steady)} articles"),
            ("enriched (steady)", f"{len(e2e)}/{len(steady)}", "complete" if complete else "INCOMPLETE"),
            ("latency p50 (produce → consumer)", f"{pct(e2e, 50):.2f} s", ""),
            ("latency p95 (produce → consumer)", f"{pct(e2e, 95):.2f} s", "target ≤ 2 s"),
            ("latency max (produce → consumer)", f"{max(e2e, default=float('nan')):.2f} s", ""),
            (
                "latency p50 / p95 (Kafka timestamps)",
                f"{pct(kafka_ts, 50):.2f} / {pct(kafka_ts, 95):.2f} s",
                "",
            ),
            ("unthrottled (burst)", f"{throughput:.1f} articles/s", f"{received}/{args.burst}, target ≥ 50"),
            ("unthrottled, after the first record", f"{steady_state:.1f} articles/s", ""),
            ("CPU per article (burst, whole process)", f"{burst_cpu * 1000:.0f} ms", "pipeline + clients"),
            ("peak RSS (steady / overall)", f"{rss_steady:.0f} / {rss_peak:.0f} MB", "target ≤ 1536 MB"),
        ]
        if alone is not None:
            rows += [
                ("model layer alone, default settings", f"{alone.rate:.1f} articles/s", alone.runtime),
                ("model layer alone, torch fp32", f"{alone.torch_rate:.1f} articles/s", "the previous path"),
                ("naive per-article torch fp32 loop", f"{alone.naive_rate:.1f} articles/s", "10 articles"),
                (
                    "ceiling: one bare torch-fp32 pass per article",
                    f"{alone.one_pass_rate:.1f} articles/s",
                    f"default layer = {alone.rate / alone.one_pass_rate:.2f}x of it (target ≥ 1.2)",
                ),
                ("CPU per article (model layer alone)", f"{alone.cpu_ms:.0f} ms", "default settings"),
                (
                    "encoder passes per article",
                    f"{alone.texts:.1f} texts",
                    "title and lead (shared by topics and stance); claims once",
                ),
                (
                    "quality: labels differing from torch fp32",
                    f"{alone.differ} of {alone.labels}",
                    "primary topic + every stance label",
                ),
            ]
        if not burst_complete:
            rows.append(("burst", "INCOMPLETE", "not every burst article came back in time"))
        print(table(rows, ("measure", "value", "note")))
        print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(load)} (all processes)")
        if report is not None:
            print(f"pipeline run {report.run_id}: {report.summary()}; reconciles: {report.reconciles()}")
        print(
            f"models: runtime={settings.models.runtime}, precision={settings.models.precision}, "
            f"max_tokens={settings.models.max_tokens}, "
            f"batch_size={settings.models.batch_size}; texts from "
            f"{SHARED_TOPICS if SHARED_TOPICS.exists() else 'the synthetic pool'}; "
            f"median lead {statistics.median(len(a.summary) for a in burst) if burst else 0:.0f} chars"
        )


if __name__ == "__main__":
    main()
