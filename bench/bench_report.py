"""``newsflow report`` on 10,000 enriched records: how long the page takes to build.

Run: ``.venv/bin/python -m bench.bench_report [--records 10000] [--feeds 100] [--runs 3]``.
It writes ``--records`` enriched records spread over 7 days (3 topics, 3 claims, 40 sources, a few
spikes) with the real file sink (JSON Lines + Parquet), ``--feeds`` feeds' hourly polls for 7 days to
``news.feed-health`` on a real broker (``NEWSFLOW_KAFKA_BOOTSTRAP`` if it answers, else a throwaway
one) and their ingest state, then builds the report ``--runs`` times in this process, printing each
phase (read, count, charts, write), the wall time and the CPU time this process used (on a loaded
shared machine the wall time grows, the CPU time hardly does), and last once through the CLI in a
fresh process (``newsflow report``: imports, cold caches), with its wall and CPU time.
Target: under 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import apache_beam as beam

from bench.common import bench_broker, table
from connectors import kafka as kafka_clients
from connectors.files import EnrichedRow, WriteFiles
from connectors.rss.state import FeedState, FeedUpdate, StateStore
from newsflow.config import REPO_ROOT, Settings
from newsflow.records import (
    Article,
    Enriched,
    FeedHealth,
    FeedStatus,
    StanceResult,
    TopicScore,
    content_hash,
    encode,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TOPICS = ("syria_conflict", "election_interference", "other")
CLAIMS = {
    "russia_hacked_election": "Russian hackers interfered in the 2016 US presidential election",
    "assad_chemical_attack": "The Syrian government carried out a chemical attack on civilians",
    "idlib_hospital_bombed": "A hospital in Idlib was bombed",
}
LABELS = ("agree", "disagree", "discuss", "unrelated")


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def records(count: int, rng: random.Random) -> list[Enriched]:
    out = []
    spikes = [NOW - timedelta(days=d, hours=h) for d, h in ((1, 3), (3, 10), (5, 20))]
    for n in range(count):
        if n % 20 == 0:
            at = rng.choice(spikes) + timedelta(minutes=rng.randrange(60))
            topics = ["syria_conflict"]
        else:
            at = NOW - timedelta(seconds=rng.randrange(7 * 86400))
            topics = [rng.choices(TOPICS, weights=(1, 1, 8))[0]]
            if rng.random() < 0.03:
                topics = ["syria_conflict", "election_interference"]
        article = Article(
            id=f"bench-{n:06d}",
            feed_url=f"https://feeds.example/{n % 100}.rss",
            source=f"Outlet {n % 40}",
            url=f"https://news.example/{n}",
            title=f"Headline {n}: officials comment on the latest developments",
            summary="One to three sentences of a feed item's summary. " * 2,
            published_at=_iso(at),
            fetched_at=_iso(at + timedelta(minutes=5)),
            content_hash=content_hash(str(n)),
        )
        out.append(
            Enriched(
                article=article,
                topics=[TopicScore(label=t, score=0.9) for t in topics],
                primary_topic=topics[0],
                scores=dict.fromkeys(TOPICS, 0.5),
                stances=[
                    StanceResult(
                        claim_id=c, claim=text, label=rng.choices(LABELS, (1, 1, 2, 12))[0], score=0.8
                    )
                    for c, text in CLAIMS.items()
                ],
                model={"encoder": "bench", "topics": "bench", "stance": "bench", "taxonomy": "bench"},
                enriched_at=_iso(NOW),
                run_id="bench",
            )
        )
    return out


def write_files(directory: Path, enriched: list[Enriched]) -> None:
    rows = [EnrichedRow("news.raw", i % 4, i // 4, r, encode(r)) for i, r in enumerate(enriched)]
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        _ = pipeline | beam.Create(rows) | WriteFiles(str(directory), ("jsonl", "parquet"))


def write_health(settings: Settings, feeds: int, rng: random.Random) -> int:
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    producer = kafka_clients.producer(settings.kafka, retries=40, retry_backoff_ms=250, linger_ms=50)
    sent = 0
    for f in range(feeds):
        url = f"https://feeds.example/{f}.rss"
        for hour in range(7 * 24):
            status = rng.choices(("ok", "not_modified", "http_500", "timeout"), (6, 12, 1, 1))[0]
            record = FeedHealth(
                feed_url=url,
                name=f"Outlet {f % 40}",
                status=FeedStatus(status),
                at=_iso(NOW - timedelta(hours=hour)),
            )
            producer.send(settings.topics.feed_health, key=url.encode(), value=encode(record))
            sent += 1
    producer.flush()
    producer.close()
    store = StateStore(settings.data_dir / "ingest" / "state.db")
    try:
        store.save(
            [
                FeedUpdate(FeedState(url=f"https://feeds.example/{f}.rss", last_status=FeedStatus.OK))
                for f in range(feeds)
            ]
        )
    finally:
        store.close()
    return sent


def cli_report(settings: Settings, output: Path) -> tuple[str, str]:
    """``newsflow report`` in a fresh process: (wall seconds, CPU seconds of the child)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(
        NEWSFLOW_DATA_DIR=str(settings.data_dir),
        NEWSFLOW_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        NEWSFLOW_TOPICS_FEED_HEALTH=settings.topics.feed_health,
    )
    since = (NOW - timedelta(days=7)).isoformat()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    clock = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "newsflow", "report", "--output", str(output), "--since", since],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - clock
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return f"{wall:.2f}", f"{cpu:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--feeds", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from newsflow.report.build import build_report

    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="newsflow-bench-report-") as tmp, bench_broker() as bootstrap:
        suffix = f"{time.time_ns() % 10**9}"
        settings = Settings().with_overrides(
            **{
                "data_dir": Path(tmp) / "data",
                "kafka.bootstrap": bootstrap,
                "topics.feed_health": f"bench.{suffix}.health",
            }
        )
        started = time.perf_counter()
        write_files(settings.enriched_dir, records(args.records, rng))
        polls = write_health(settings, args.feeds, rng)
        print(
            f"wrote {args.records:,} enriched records and {polls:,} feed-health polls "
            f"in {time.perf_counter() - started:.1f}s"
        )
        rows: list[tuple[object, ...]] = []
        totals = []
        for run in range(1, args.runs + 1):
            clock, cpu = time.perf_counter(), time.process_time()
            result = build_report(settings, Path(tmp) / f"report-{run}", since="7d", now=NOW)
            wall, cpu = time.perf_counter() - clock, time.process_time() - cpu
            totals.append(wall)
            s = result.seconds
            phases = [f"{s[k]:.2f}" for k in ("read", "count", "charts", "write")]
            size = f"{result.page.stat().st_size / 1e6:.1f} MB"
            rows.append((run, *phases, f"{wall:.2f}", f"{cpu:.2f}", result.report.records.count, size))
        rows.append(("cli", "", "", "", "", *cli_report(settings, Path(tmp) / "report-cli"), "", ""))
        header = ("run", "read s", "count s", "charts s", "write s", "wall s", "cpu s", "records", "page")
        print(table(rows, header))
        print(
            f"median in process {statistics.median(totals):.2f}s wall for {args.records:,} records "
            f"(target < 10 s on 2 cores); load average {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
