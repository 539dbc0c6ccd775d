"""Ingest benchmark: 1,000 feeds on loopback, 20 items each, through the Ingestor to a real broker.

Run: ``.venv/bin/python -m bench.bench_ingest [--feeds 1000] [--hosts 50]``. Not a test: it prints
a table and ratios measured in one run and exits 0.

- The feeds are served by a separate process (so serving does not compete with the ingester for
  the GIL): ``--hosts`` loopback servers on their own ports, each a politeness "host" (host:port).
  Each feed's body is generated RSS with 20 items and unique links; its ETag is the generation.
- Cycles: (1) cold, every feed new; (2) every feed unchanged, answering 304; (3) every feed changed
  (20 new items each). Cycles 2 and 3 are ``force=True``, like ``newsflow ingest --once``.
- Baseline in the same run: a plain sequential loop of ``httpx.get`` + ``feedparser.parse`` over
  the same feeds (what a naive fetcher does every cycle, changed or not).
- Politeness: the bench allows 4 requests in flight per host and no spacing between request starts
  (the default 1 s spacing would take 20 s per cycle for 20 feeds on a host by design).
- Kafka: the broker at ``NEWSFLOW_KAFKA_BOOTSTRAP`` if one answers, else a local broker started
  on a free port in a temporary directory (and stopped at the end).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

ITEMS = 20


def feed_body(feed: int, generation: int) -> bytes:
    items = "".join(
        f"<item><title>Generation {generation} story {j} from feed {feed}: talks on trade and energy</title>"
        f"<link>https://bench{feed % 97}.example/{generation}/{feed}/{j}?utm_source=rss</link>"
        f"<guid isPermaLink='false'>g{generation}-f{feed}-i{j}</guid>"
        f"<pubDate>Mon, {1 + j % 28:02d} Sep 2025 {j % 24:02d}:{feed % 60:02d}:00 GMT</pubDate>"
        f"<description>&lt;p&gt;Ministers met on {j} September to discuss the energy market, "
        f"grain exports and a new trade agreement; the talks continue next week.&lt;/p&gt;</description>"
        "</item>"
        for j in range(ITEMS)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Bench feed {feed}</title><link>https://bench{feed % 97}.example/</link>"
        f"<language>en</language>{items}</channel></rss>"
    ).encode()


def _serve(n_feeds: int, n_hosts: int, generation: Synchronized, conn: Connection, stop: Any) -> None:
    from newsflow.feedserver import FeedServer, Reply, Request

    cache: dict[tuple[int, int], bytes] = {}

    def handler(feed: int) -> Callable[[Request], Reply]:
        def reply(_: Request) -> Reply:
            gen = int(generation.value)
            body = cache.get((feed, gen))
            if body is None:
                body = cache[(feed, gen)] = feed_body(feed, gen)
            return Reply(body=body, etag=f'"g{gen}"', headers={"Content-Type": "application/rss+xml"})

        return reply

    hosts = [FeedServer() for _ in range(n_hosts)]
    urls = []
    for feed in range(n_feeds):
        urls.append(hosts[feed % n_hosts].route(f"/feed/{feed}.rss", handler(feed)))
    for host in hosts:
        host.__enter__()
    conn.send(urls)
    stop.wait()
    for host in hosts:
        host.__exit__(None, None, None)


@dataclass
class Row:
    name: str
    seconds: float
    feeds: int
    articles: int
    note: str = ""

    def line(self) -> str:
        return (
            f"| {self.name:<34} | {self.seconds:7.2f} | {self.feeds / self.seconds:8.0f} | "
            f"{self.articles / self.seconds:10.0f} | {self.note} |"
        )


def plain_loop(urls: list[str]) -> Row:
    import feedparser
    import httpx

    start = time.perf_counter()
    articles = 0
    with httpx.Client(timeout=10) as client:
        for url in urls:
            articles += len(feedparser.parse(client.get(url).content).entries)
    return Row(
        "plain httpx.get + feedparser.parse", time.perf_counter() - start, len(urls), articles, "sequential"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    from connectors.rss.feeds import Feed
    from connectors.rss.ingest import Ingestor
    from newsflow.broker import LocalBroker, broker_answers, free_port
    from newsflow.config import Settings

    ctx = multiprocessing.get_context("spawn")
    generation: Synchronized = ctx.Value("i", 1)
    stop = ctx.Event()
    here, there = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(args.feeds, args.hosts, generation, there, stop), daemon=True)
    server.start()
    urls: list[str] = here.recv()

    tmp = Path(tempfile.mkdtemp(prefix="newsflow-bench-"))
    base = Settings()
    broker = None
    bootstrap = os.environ.get("NEWSFLOW_KAFKA_BOOTSTRAP", base.kafka.bootstrap)
    if not broker_answers(bootstrap):
        port = free_port()
        broker_settings = base.with_overrides(
            **{
                "data_dir": tmp / "kafka",
                "kafka.bootstrap": f"127.0.0.1:{port}",
                "broker.controller_port": free_port(),
            }
        )
        print(f"starting a local Kafka broker on 127.0.0.1:{port} ...", flush=True)
        broker = LocalBroker(broker_settings)
        broker.up()
        bootstrap = broker.bootstrap
    run = str(int(time.time()))
    settings = base.with_overrides(
        **{
            "data_dir": tmp / "data",
            "kafka.bootstrap": bootstrap,
            "topics.raw": f"bench.{run}.raw",
            "topics.dlq": f"bench.{run}.dlq",
            "topics.feed_health": f"bench.{run}.health",
            "topics.enriched": f"bench.{run}.enriched",
            "ingest.per_host_spacing_s": 0.0,
            "ingest.per_host_concurrency": 4,
            "ingest.workers": args.workers,
            "ingest.full_text": "never",  # feed ingestion alone; pages: bench/bench_pages.py
        }
    )
    feeds = [Feed(url=url, name=f"bench {i}") for i, url in enumerate(urls)]
    rows: list[Row] = []
    try:
        with Ingestor(settings) as ingestor:
            cold = ingestor.run_cycle(feeds)
            rows.append(
                Row("ingest: cold, every feed new", cold.seconds, len(feeds), cold.new_articles, _st(cold))
            )
            unchanged = ingestor.run_cycle(feeds, force=True)
            rows.append(
                Row("ingest: every feed unchanged (304)", unchanged.seconds, len(feeds), 0, _st(unchanged))
            )
            with generation.get_lock():
                generation.value += 1
            changed = ingestor.run_cycle(feeds, force=True)
            rows.append(
                Row(
                    "ingest: every feed changed",
                    changed.seconds,
                    len(feeds),
                    changed.new_articles,
                    _st(changed),
                )
            )
        baseline = plain_loop(urls)
        rows.append(baseline)
    finally:
        stop.set()
        server.join(timeout=10)
        if broker is not None:
            broker.down()

    cpus = os.cpu_count()
    print(
        f"\n{len(feeds)} feeds x {ITEMS} items on {args.hosts} loopback hosts; {args.workers} fetch threads, "
        f"parser processes {settings.ingest.parse_processes} (auto), {cpus} CPUs, "
        f"Python {platform.python_version()}, Kafka {bootstrap}\n"
    )
    print("| cycle                              | seconds |  feeds/s | articles/s | statuses |")
    print("|------------------------------------|---------|----------|------------|----------|")
    for row in rows:
        print(row.line())
    plain = baseline.seconds
    print(
        f"\nunchanged cycle: {rows[1].seconds:.2f} s (target <= 2 s), "
        f"{plain / rows[1].seconds:.1f}x the plain loop"
        f"\nchanged cycle:   {rows[2].seconds:.2f} s (target <= 15 s), "
        f"{plain / rows[2].seconds:.1f}x the plain loop"
        f"\ncold cycle:      {rows[0].seconds:.2f} s, {plain / rows[0].seconds:.1f}x the plain loop"
    )


def _st(summary: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(summary.by_status.items()))


if __name__ == "__main__":
    main()
