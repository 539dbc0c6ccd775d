"""Soak: 20,000 real-length articles through a bounded run, then through stream mode with a broker restart.

Run: ``make soak`` or ``.venv/bin/python -m bench.soak [--articles 20000] [--runner fnapi|prism]``.
It starts a broker of its own (and a PostgreSQL server when Debian's binaries are there, unless
``--no-postgres``), then, each phase on topics and a group of its own:

1. **bounded**: produce the articles, then one ``run_enrich(mode="batch")``;
2. **stream**: ``run_enrich(mode="stream")`` in a thread while the articles are produced at
   ``--rate`` per second; once ``--restart-at`` of them are enriched the broker is stopped and
   started again (same data, same port). If the run fails meanwhile (a bundle the broker could not
   confirm within the delivery timeout), it is started again, as a supervisor would, and resumes
   from the committed offsets. The run is stopped through Kafka once everything is enriched.

For each phase it prints, per sink: articles lost, duplicate records per id, and, for Kafka, how
many of the duplicates the runs counted (``EnrichReport.rewrites``; the contract allows
duplicates in Kafka only for records an unfinished attempt wrote past its commits, and the run
counts them). It exits 1 if anything was lost, if the files or PostgreSQL hold an id twice, or if
Kafka holds a duplicate that no run counted.

The models are the real ones with the stance pair model switched off (``gate-only``: the
relatedness gate still runs) and 64-token encoder inputs, to keep a 20,000-article soak to
minutes on two cores: the soak is about delivery, not label quality. Articles are FNC-1 headlines
over FNC-1 bodies (~2.2 kB each) from ``../shared/data/fnc1``, each a distinct id.
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import table
from connectors import kafka as kafka_clients
from connectors.files import read_jsonl
from newsflow.broker import LocalBroker, free_port
from newsflow.config import REPO_ROOT, Settings
from newsflow.records import Article, Enriched, content_hash, decode, encode, utc_now
from pipelines.enrich import EnrichReport, RunControl, run_enrich

log = logging.getLogger("bench.soak")
FNC = REPO_ROOT.parent / "shared" / "data" / "fnc1"


def articles(n: int, tag: str) -> list[Article]:
    """``n`` real-length articles: FNC-1 headlines over FNC-1 bodies, each with its own id."""
    with open(FNC / "train_bodies.csv", encoding="utf-8") as fh:
        bodies = {row["Body ID"]: row["articleBody"] for row in csv.DictReader(fh)}
    with open(FNC / "train_stances.csv", encoding="utf-8") as fh:
        pairs = [(row["Headline"], bodies[row["Body ID"]]) for row in csv.DictReader(fh)]
    out = []
    for i in range(n):
        title, body = pairs[i % len(pairs)]
        out.append(
            Article(
                id=f"{tag}{i:024x}",
                feed_url="http://feeds.soak/fnc.rss",
                source="FNC-1",
                title=title,
                content=body,
                fetched_at=utc_now(),
                content_hash=content_hash(title, body, str(i)),
            )
        )
    return out


def produce(settings: Settings, batch: list[Article], rate: float = 0.0) -> None:
    producer = kafka_clients.producer(settings.kafka, linger_ms=20)
    started = time.monotonic()
    for i, article in enumerate(batch):
        if rate:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.send(settings.topics.raw, key=article.id.encode(), value=encode(article))
    producer.flush()
    producer.close()


@dataclass
class Outcome:
    phase: str
    reports: list[EnrichReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # runs that failed and were started again
    problems: list[str] = field(default_factory=list)  # what the checks found
    seconds: float = 0.0
    rows: list[list[Any]] = field(default_factory=list)
    ok: bool = True


def check(outcome: Outcome, settings: Settings, ids: set[str], postgres: bool) -> None:
    """Lost and duplicate records per sink; Kafka duplicates against what the runs counted."""
    kafka = [
        decode(Enriched, m.value).id
        for m in kafka_clients.read_all(settings.kafka, settings.topics.enriched, 600)
    ]
    files = [x["article"]["id"] for x in read_jsonl(settings.enriched_dir)]
    sinks: dict[str, list[str]] = {"kafka": kafka, "files": files}
    if postgres:
        import psycopg

        assert settings.sinks.postgres_dsn is not None
        with psycopg.connect(settings.sinks.postgres_dsn.get_secret_value()) as conn:
            sinks["postgres"] = [
                r[0] for r in conn.execute(f"SELECT id FROM {settings.sinks.postgres_table}")
            ]
    counted = sum(r.rewrites.get(settings.topics.enriched, 0) for r in outcome.reports)
    for name, found in sinks.items():
        lost = len(ids - set(found))
        duplicates = sum(c - 1 for c in Counter(found).values())
        note = f"{counted} counted by the runs" if name == "kafka" else ""
        outcome.rows.append([outcome.phase, name, len(found), lost, duplicates, note])
        if lost or (name != "kafka" and duplicates) or (name == "kafka" and duplicates != counted):
            outcome.ok = False
    end = kafka_clients.end_offsets(settings.kafka, settings.topics.raw)
    committed = kafka_clients.committed_offsets(settings.kafka, settings.kafka.group_id, settings.topics.raw)
    if committed != end:
        outcome.ok = False
        outcome.problems.append(f"committed {committed} != end {end}")


def bounded(settings: Settings, batch: list[Article]) -> Outcome:
    outcome = Outcome("bounded")
    produce(settings, batch)
    started = time.monotonic()
    outcome.reports.append(run_enrich(settings))
    outcome.seconds = time.monotonic() - started
    return outcome


def stream(
    settings: Settings, batch: list[Article], broker: LocalBroker, rate: float, restart_at: float
) -> Outcome:
    outcome = Outcome("stream")
    ids = [a.id for a in batch]
    control = RunControl()
    done = threading.Event()

    def supervise() -> None:
        nonlocal control
        while not done.is_set():
            try:
                outcome.reports.append(run_enrich(settings, mode="stream", control=control))
                return
            except Exception as exc:  # the supervisor: start again, resume from the commits
                outcome.failures.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                log.warning("stream run failed (%s); starting it again", exc)
                control = RunControl()
                time.sleep(2)

    runner = threading.Thread(target=supervise, daemon=True)
    started = time.monotonic()
    runner.start()
    producer = threading.Thread(target=produce, args=(settings, batch, rate), daemon=True)
    producer.start()
    restarted = False
    seen: set[str] = set()
    consumer = kafka_clients.consumer(settings.kafka, group_id=None)
    consumer.subscribe([settings.topics.enriched])
    deadline = time.monotonic() + 6 * 3600
    while len(seen) < len(ids) and time.monotonic() < deadline:
        try:
            for records in consumer.poll(timeout_ms=1000).values():
                seen.update(r.key.decode() for r in records)
        except Exception as exc:  # the broker is restarting
            log.info("soak consumer: %s", exc)
            time.sleep(1)
        if not restarted and len(seen) >= restart_at * len(ids):
            print(f"  {len(seen)} enriched: restarting the broker", flush=True)
            t = time.monotonic()
            broker.down()
            broker.up()
            restarted = True
            print(f"  broker back after {time.monotonic() - t:.1f}s", flush=True)
    consumer.close()
    producer.join()
    outcome.seconds = time.monotonic() - started
    print(f"  all {len(seen)} enriched after {outcome.seconds:.0f}s; stopping", flush=True)
    done.set()
    stopping = time.monotonic()
    control.request_stop()
    runner.join(timeout=300)
    print(f"  stopped {time.monotonic() - stopping:.1f}s after the stop request", flush=True)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--articles", type=int, default=20_000)
    parser.add_argument("--runner", choices=("fnapi", "prism"), default="fnapi")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="stream phase: articles produced per second"
    )
    parser.add_argument(
        "--restart-at", type=float, default=0.4, help="stream phase: restart after this share"
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--phases", default="bounded,stream")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="newsflow-soak-") as tmp:
        root = Path(tmp)
        broker_settings = Settings().with_overrides(
            **{
                "data_dir": root / "broker",
                "kafka.bootstrap": f"127.0.0.1:{free_port()}",
                "broker.controller_port": free_port(),
                "broker.heap": "1g",
            }
        )
        broker = LocalBroker(broker_settings)
        broker.up()
        pg = None
        if not args.no_postgres:
            from tests.fixtures_pg import PostgresServer, find_bin_dir

            bin_dir = find_bin_dir()
            if bin_dir is not None:
                pg = PostgresServer(bin_dir)
                pg.start()
        outcomes = []
        try:
            for phase in args.phases.split(","):
                tag = uuid.uuid4().hex[:8]
                overrides: dict[str, Any] = {
                    "data_dir": root / phase,
                    "kafka.bootstrap": broker.bootstrap,
                    "kafka.group_id": f"soak-{tag}",
                    "topics.raw": f"soak.{tag}.raw",
                    "topics.enriched": f"soak.{tag}.enriched",
                    "topics.dlq": f"soak.{tag}.dlq",
                    "models.stance_model": "gate-only",
                    "models.max_tokens": 64,
                    "beam.runner": args.runner,
                }
                if pg is not None:
                    overrides |= {"sinks.postgres_dsn": pg.dsn, "sinks.postgres_table": f"soak_{tag}"}
                settings = Settings().with_overrides(**overrides)
                kafka_clients.ensure_topics(settings.kafka, settings.topics)
                batch = articles(args.articles, tag)
                print(f"{phase}: {len(batch)} articles on {args.runner}", flush=True)
                if phase == "bounded":
                    outcome = bounded(settings, batch)
                else:
                    outcome = stream(settings, batch, broker, args.rate, args.restart_at)
                check(outcome, settings, {a.id for a in batch}, pg is not None)
                for report in outcome.reports:
                    print(f"  run {report.run_id}: {report.summary()}", flush=True)
                for failure in outcome.failures:
                    print(f"  failed, started again: {failure}", flush=True)
                for problem in outcome.problems:
                    print(f"  PROBLEM: {problem}", flush=True)
                print(f"  {outcome.seconds:.0f}s, {len(batch) / outcome.seconds:.1f} articles/s", flush=True)
                outcomes.append(outcome)
        finally:
            if pg is not None:
                pg.stop()
            broker.down()
    header = ["phase", "sink", "records", "lost", "duplicate ids", "note"]
    print(table([row for o in outcomes for row in o.rows], header))
    print("(absolute times from a shared 2-core machine; the stance pair model off: gate-only, 64 tokens)")
    raise SystemExit(0 if all(o.ok for o in outcomes) else 1)


if __name__ == "__main__":
    main()
