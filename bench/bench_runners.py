"""FnApiRunner vs Prism, measured in one run: batch throughput and stream latency at the same rate.

Run: ``make bench-runners`` or ``.venv/bin/python -m bench.bench_runners [--articles 2000]
[--rate 5] [--seconds 120] [--rounds 2]``.

On one broker, with the real models and the Kafka and file sinks, for each runner in turn (the
order alternates between rounds, so neither always runs on a warmer machine):

- **batch**: ``--articles`` short feed items on a fresh topic, one ``run_enrich(mode="batch")``;
  throughput = articles / the run's pipeline time (model loading included: a scheduled run pays it
  every time, in the driver for FnApiRunner, in the worker process for Prism);
- **stream**: ``run_enrich(mode="stream")`` in a thread; after a warm-up article, ``--rate``
  articles/s for ``--seconds``; latency = enriched record received by a consumer - produce time.

It prints both runners and the ratios (targets: Prism batch throughput >= 0.8 of FnApiRunner's,
stream p95 <= 1.5x), the medians over rounds. Absolute figures depend on the machine.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.bench_e2e import Arrivals, ArticleMaker, _consume, _send, _wait_for, pct
from bench.common import bench_broker, table
from connectors import kafka as kafka_clients
from newsflow.config import Settings
from newsflow.records import encode
from pipelines.enrich import RunControl, run_enrich

RUNNERS = ("fnapi", "prism")


def _settings(bootstrap: str, root: Path, runner: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings().with_overrides(
        **{
            "data_dir": root / tag,
            "kafka.bootstrap": bootstrap,
            "kafka.group_id": f"bench-{tag}",
            "topics.raw": f"bench.{tag}.raw",
            "topics.enriched": f"bench.{tag}.enriched",
            "topics.dlq": f"bench.{tag}.dlq",
            "beam.runner": runner,
        }
    )


def batch(bootstrap: str, root: Path, runner: str, n: int) -> float:
    settings = _settings(bootstrap, root, runner)
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    make = ArticleMaker(uuid.uuid4().hex[:6])
    producer = kafka_clients.producer(settings.kafka, linger_ms=20)
    for _ in range(n):
        article = make()
        producer.send(settings.topics.raw, key=article.id.encode(), value=encode(article))
    producer.flush()
    producer.close()
    report = run_enrich(settings)
    assert report.reconciles() and report.enriched == n, report.summary()
    return n / report.seconds


def stream(bootstrap: str, root: Path, runner: str, rate: float, seconds: float) -> list[float]:
    settings = _settings(bootstrap, root, runner)
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    arrivals, stop, ready = Arrivals(), threading.Event(), threading.Event()
    consumer = threading.Thread(target=_consume, args=(settings, arrivals, stop, ready), daemon=True)
    consumer.start()
    ready.wait(60)
    control = RunControl()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = run_enrich(settings, mode="stream", control=control)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    producer = kafka_clients.producer(settings.kafka, linger_ms=0)
    make = ArticleMaker(uuid.uuid4().hex[:6])
    try:
        warm = make()
        _send(producer, settings, arrivals, warm)
        if not _wait_for(arrivals, [warm.id], 600):
            raise SystemExit(f"{runner}: no first article within 600 s: {outcome}")
        ids = []
        t0 = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            article = make()
            ids.append(article.id)
            _send(producer, settings, arrivals, article)
        producer.flush()
        _wait_for(arrivals, ids, 600)
        latencies, _ = arrivals.latencies(ids)
    finally:
        producer.close()
        control.request_stop()
        thread.join(300)
        stop.set()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--articles", type=int, default=2000, help="batch: articles per run")
    parser.add_argument("--rate", type=float, default=5.0, help="stream: articles per second")
    parser.add_argument("--seconds", type=float, default=120.0, help="stream: length of the steady phase")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    throughput: dict[str, list[float]] = {r: [] for r in RUNNERS}
    p50: dict[str, list[float]] = {r: [] for r in RUNNERS}
    p95: dict[str, list[float]] = {r: [] for r in RUNNERS}
    with bench_broker() as bootstrap, tempfile.TemporaryDirectory(prefix="newsflow-bench-runners-") as tmp:
        for round_ in range(args.rounds):
            order = RUNNERS if round_ % 2 == 0 else RUNNERS[::-1]
            for runner in order:
                rate = batch(bootstrap, Path(tmp), runner, args.articles)
                throughput[runner].append(rate)
                print(f"round {round_ + 1} {runner}: batch {rate:.1f} articles/s", flush=True)
            for runner in order:
                latencies = stream(bootstrap, Path(tmp), runner, args.rate, args.seconds)
                p50[runner].append(pct(latencies, 50))
                p95[runner].append(pct(latencies, 95))
                print(
                    f"round {round_ + 1} {runner}: stream at {args.rate}/s, {len(latencies)} articles, "
                    f"p50 {pct(latencies, 50):.2f}s p95 {pct(latencies, 95):.2f}s",
                    flush=True,
                )
    med = {
        name: {r: statistics.median(v[r]) for r in RUNNERS}
        for name, v in (("batch", throughput), ("p50", p50), ("p95", p95))
    }
    rows = [
        [
            "batch throughput (articles/s)",
            f"{med['batch']['fnapi']:.1f}",
            f"{med['batch']['prism']:.1f}",
            f"{med['batch']['prism'] / med['batch']['fnapi']:.2f} (target >= 0.8)",
        ],
        [
            f"stream p50 at {args.rate}/s (s)",
            f"{med['p50']['fnapi']:.2f}",
            f"{med['p50']['prism']:.2f}",
            f"{med['p50']['prism'] / med['p50']['fnapi']:.2f}",
        ],
        [
            f"stream p95 at {args.rate}/s (s)",
            f"{med['p95']['fnapi']:.2f}",
            f"{med['p95']['prism']:.2f}",
            f"{med['p95']['prism'] / med['p95']['fnapi']:.2f} (target <= 1.5)",
        ],
    ]
    print(table(rows, ["median over rounds", "fnapi", "prism", "prism / fnapi"]))
    print("(absolute figures from this machine; a shared one varies: read the ratios)")


if __name__ == "__main__":
    main()
