"""Full-text benchmark: extraction speed and quality, and the per-host budget shared by polls and pages.

Run: ``.venv/bin/python -m bench.bench_pages [--pages 160] [--hosts 6] [--spacing 0.2]``. Not a test:
it prints tables and exits 0 (1 if a host ever got requests faster than its budget).

1. **Extraction** (:func:`connectors.rss.extract.extract`, one process): pages per second, and the
   mean token-level F1 of the extracted body against the true body, on pages built with the layouts
   of :mod:`connectors.rss.samplepages` around real article bodies (FNC-1 training bodies and the
   topic dev set in ``../shared/data`` when present; else the built-in sample paragraphs). Tokens
   are lower-cased ``\\w+`` runs; F1 is over token multisets.
2. **One budget per host**: ``--hosts`` loopback hosts (served by a separate process), each serving
   ``--feeds`` feeds whose items
   link to pages on the same host (teasers only, so every page is fetched), and a robots.txt.
   One ingest cycle through the real broker, per-host spacing ``--spacing`` and 2 requests in
   flight per host. Every request each server received (feed polls, robots.txt, pages) is listed
   with its arrival time; the report gives, per host, the smallest gap between two request
   starts as the client sent them (stamped by :meth:`HostBudget.begin` right before the first byte
   is written: the proof, exact) and as the server saw them arrive (which adds both processes'
   scheduling jitter on a loaded machine), and how many of each were shorter than the budget.
   Pages per second through ingest are compared with the budget's own ceiling (hosts / spacing).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.common import bench_broker, table
from connectors.rss.extract import extract
from connectors.rss.samplepages import LAYOUTS, page

JITTER_S = 0.025  # a request's connection setup on a loaded machine delays its arrival by this much
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_TOKEN = re.compile(r"\w+", re.UNICODE)
FALLBACK = [
    "The valley's three reservoirs, which had fallen to a fifth of their capacity after the driest winter "
    "on record, were more than half full on Tuesday after four days of steady rain.",
    "The water authority said it would lift the hosepipe ban that has been in force since November, but "
    "asked households to keep using water sparingly until the summer.",
    "Farmers said the rain had come too late for much of the winter wheat, which was sown into dry ground "
    "and failed to establish, but would help the spring planting that starts in two weeks.",
    "Forecasters expect drier weather to return at the weekend, with temperatures rising to the high teens "
    "by the middle of next week.",
]


def token_f1(predicted: str, truth: str) -> float:
    """Token-level F1 of two texts (lower-cased word tokens, multiset overlap)."""
    got, want = Counter(_TOKEN.findall(predicted.lower())), Counter(_TOKEN.findall(truth.lower()))
    common = sum((got & want).values())
    if not common:
        return 0.0
    precision, recall = common / sum(got.values()), common / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def _paragraphs(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"\n\s*\n|\n", text) if p.strip()]
    if len(parts) == 1:  # one block of text: paragraphs of three sentences
        sentences = re.split(r"(?<=[.!?])\s+", parts[0])
        parts = [" ".join(sentences[i : i + 3]) for i in range(0, len(sentences), 3)]
    return parts


def real_bodies(data: Path = SHARED) -> list[list[str]]:
    """Article bodies (as paragraphs) from the shared data, or [] when it is absent."""
    bodies: list[list[str]] = []
    fnc = data / "fnc1" / "train_bodies.csv"
    if fnc.exists():
        csv.field_size_limit(sys.maxsize)
        with fnc.open(newline="", encoding="utf-8") as fh:
            bodies += [_paragraphs(row["articleBody"]) for row in csv.DictReader(fh)]
    dev = data / "topics" / "dev.jsonl"
    if dev.exists():
        with dev.open(encoding="utf-8") as fh:
            bodies += [_paragraphs(json.loads(line)["text"]) for line in fh if line.strip()]
    return [b for b in bodies if sum(map(len, b)) >= 400]


def evaluate(n_pages: int, seed: int = 0) -> dict[str, object]:
    """Extract ``n_pages`` generated pages; F1 per layout, statuses and pages per second."""
    bodies = real_bodies() or [FALLBACK]
    rng = random.Random(seed)
    layouts = list(LAYOUTS)
    pages = []
    for i in range(n_pages):
        body = rng.choice(bodies)
        layout = layouts[i % len(layouts)]
        pages.append((layout, page(layout, body, seed=i), "\n".join(body)))
    scores: dict[str, list[float]] = {layout: [] for layout in layouts}
    statuses: Counter[str] = Counter()
    start = time.perf_counter()
    for i, (layout, html, truth) in enumerate(pages):
        extraction = extract(html, f"https://news.example/{i}")
        statuses[extraction.status] += 1
        scores[layout].append(token_f1(extraction.text, truth))
    seconds = time.perf_counter() - start
    every = [s for values in scores.values() for s in values]
    return {
        "source": "shared data (FNC-1 bodies, topic dev set)" if bodies != [FALLBACK] else "built-in sample",
        "pages": n_pages,
        "pages_per_s": n_pages / seconds,
        "mean_f1": statistics.fmean(every),
        "min_f1": min(every),
        "per_layout": {k: (statistics.fmean(v), min(v)) for k, v in scores.items() if v},
        "statuses": statuses,
    }


def _serve_hosts(n_hosts: int, n_feeds: int, pages_per_feed: int, conn: Connection, stop: Any) -> None:
    """In a separate process (serving must not compete with the ingester for the GIL, or the
    arrival times it records are late by whatever the ingester was doing): the hosts, their feeds,
    pages and robots.txt. Sends the feed URLs, then, when told to stop, every request's
    (host, path, arrival time on the system-wide monotonic clock) and each host's most in flight."""
    from newsflow.feedserver import FeedServer, Reply

    html = {"Content-Type": "text/html; charset=utf-8"}
    bodies = real_bodies() or [FALLBACK]
    rng = random.Random(1)
    hosts = [FeedServer() for _ in range(n_hosts)]
    urls = []
    for h, host in enumerate(hosts):
        host.__enter__()
        host.route("/robots.txt", Reply(body=b"User-agent: *\nDisallow: /private/\n"))
        for f in range(n_feeds):
            items = ""
            for p in range(pages_per_feed):
                path = f"/news/{f}/{p}.html"
                layout = list(LAYOUTS)[(h + f + p) % len(LAYOUTS)]
                host.route(path, Reply(body=page(layout, rng.choice(bodies), seed=p).encode(), headers=html))
                items += (
                    f"<item><title>Host {h} feed {f} story {p}</title><link>{host.url(path)}</link>"
                    "<description>A one-sentence teaser.</description></item>"
                )
            body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>F</title>{items}</channel></rss>'
            urls.append(host.route(f"/feed{f}.rss", Reply(body=body.encode())))
    conn.send(urls)
    stop.wait()
    log = [(host.base_url.removeprefix("http://"), r.path, r.at) for host in hosts for r in host.requests]
    conn.send((log, {host.base_url.removeprefix("http://"): host.max_in_flight for host in hosts}))
    for host in hosts:
        host.__exit__(None, None, None)


def budget_run(n_hosts: int, n_feeds: int, pages_per_feed: int, spacing: float) -> bool:
    """One ingest cycle over hosts serving feeds and their pages; True if no host was hammered."""
    from connectors.rss.feeds import Feed
    from connectors.rss.ingest import Ingestor
    from newsflow.config import Settings

    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    stop = ctx.Event()
    server = ctx.Process(
        target=_serve_hosts, args=(n_hosts, n_feeds, pages_per_feed, there, stop), daemon=True
    )
    server.start()
    feeds = [Feed(url=url, name=f"feed {i}") for i, url in enumerate(here.recv())]
    try:
        with bench_broker() as bootstrap, tempfile.TemporaryDirectory(prefix="newsflow-bench-") as tmp:
            run = str(int(time.time()))
            settings = Settings().with_overrides(
                **{
                    "data_dir": Path(tmp),
                    "kafka.bootstrap": bootstrap,
                    "topics.raw": f"bench.{run}.raw",
                    "topics.dlq": f"bench.{run}.dlq",
                    "topics.feed_health": f"bench.{run}.health",
                    "topics.enriched": f"bench.{run}.enriched",
                    "ingest.per_host_spacing_s": spacing,
                    "ingest.per_host_concurrency": 2,
                    "ingest.full_text": "always",
                    "ingest.parse_processes": 0,
                }
            )
            with Ingestor(settings) as ingestor:
                summary = ingestor.run_cycle(feeds, force=True)
                begun = list(ingestor.budget.begun)
    finally:
        stop.set()
        requests, in_flight = here.recv()
        server.join(timeout=30)
    pages = summary.pages
    total_pages = n_hosts * n_feeds * pages_per_feed
    ceiling = n_hosts / spacing  # requests per second the budget allows in all
    print(
        f"\none cycle: {len(feeds)} feeds on {n_hosts} hosts, {total_pages} pages: "
        f"{summary.seconds:.1f}s, {pages['extracted'] / summary.seconds:.1f} pages extracted/s (budget "
        f"ceiling {ceiling:.1f} requests/s in all, feed polls and robots.txt included); pages {dict(pages)}"
    )
    by_host: dict[str, list[tuple[str, float]]] = {}
    for name, path, at in requests:
        by_host.setdefault(name, []).append((path, at))
    starts: dict[str, list[float]] = {}
    for name, at in begun:
        starts.setdefault(name, []).append(at)
    rows = []
    ok = True
    worst_jitter = 0.0
    for name, hits in sorted(by_host.items()):
        kinds = Counter(
            "robots" if path == "/robots.txt" else "feed" if path.endswith(".rss") else "page"
            for path, _ in hits
        )
        arrivals = sorted(at for _, at in hits)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        short = sum(g < spacing for g in gaps)
        jitter = sum(g < spacing - JITTER_S for g in gaps)
        start_gaps = [b - a for a, b in itertools.pairwise(sorted(starts.get(name, [])))]
        early = sum(g < spacing - 1e-9 for g in start_gaps)
        ok = ok and early == 0
        worst_jitter = max(worst_jitter, *(spacing - g for g in gaps)) if gaps else worst_jitter
        rows.append(
            (
                name,
                kinds["feed"],
                kinds["robots"],
                kinds["page"],
                in_flight[name],
                f"{min(gaps) * 1000:.0f} ms" if gaps else "-",
                short,
                jitter,
                f"{min(start_gaps) * 1000:.0f} ms" if start_gaps else "-",
                early,
            )
        )
    header = (
        "host",
        "feeds",
        "robots",
        "pages",
        "max in flight",
        "min gap (server)",
        "gaps < budget",
        f"gaps < budget - {JITTER_S * 1000:.0f} ms",
        "min gap (client)",
        "starts < budget",
    )
    print(table(rows, header))
    verdict = "never" if ok else "SOMETIMES"
    load = os.getloadavg()[0]
    print(
        f"budget {spacing * 1000:.0f} ms between the starts of requests to one host: the client {verdict} "
        f"sent two closer than that (measured right before each request's first byte is written); the "
        f"servers saw arrivals at most {max(worst_jitter, 0.0) * 1000:.0f} ms closer (scheduling jitter, "
        f"load average {load:.1f} on {os.cpu_count()} CPUs)"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=160, help="pages for the extraction part")
    parser.add_argument("--hosts", type=int, default=6)
    parser.add_argument("--feeds", type=int, default=2, help="feeds per host")
    parser.add_argument("--pages-per-feed", type=int, default=8)
    parser.add_argument("--spacing", type=float, default=0.2, help="per-host start spacing, seconds")
    args = parser.parse_args()
    result = evaluate(args.pages)
    print(
        f"extraction on {result['pages']} pages ({result['source']}): {result['pages_per_s']:.1f} pages/s "
        f"(one process), mean token F1 {result['mean_f1']:.4f}, min {result['min_f1']:.3f}, "
        f"statuses {dict(result['statuses'])}"  # type: ignore[call-overload]
    )
    per_layout = result["per_layout"]
    assert isinstance(per_layout, dict)
    print(
        table(
            [(k, f"{m:.4f}", f"{lo:.3f}") for k, (m, lo) in per_layout.items()], ("layout", "mean F1", "min")
        )
    )
    ok = budget_run(args.hosts, args.feeds, args.pages_per_feed, args.spacing)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
