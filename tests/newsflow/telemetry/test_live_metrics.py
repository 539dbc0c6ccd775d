"""The live endpoint during real runs: ``ingest --every`` and ``enrich --mode stream`` as subprocesses.

Both run the real CLI against the session's broker (the enrich one with the real models); the test
scrapes their ``/metrics`` while it feeds them work, and asserts that every metric of the issue
moves: feeds polled by status, articles produced, dead letters by stage and reason (ingest and
decode), articles enriched, consumer lag per partition, model batch latency, produce-to-enriched
latency, last success times; ``/healthz`` and ``/readyz`` answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors import kafka as kafka_clients
from newsflow.broker import free_port
from newsflow.config import REPO_ROOT, Settings
from newsflow.records import Article, content_hash, encode, utc_now

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

ITEM = """<item><title>{title}</title><link>https://example.test/news/{slug}</link>
<description>{text}</description><pubDate>Wed, 02 Dec 2026 08:00:00 GMT</pubDate></item>"""
NAMELESS = "<item><description>An item with no link, no GUID and no title.</description></item>"


def _feed(items: list[str]) -> str:
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Test desk</title>'
        "<link>https://example.test/</link><description>t</description>" + "".join(items) + "</channel></rss>"
    )


def _item(n: int) -> str:
    return ITEM.format(
        title=f"Airstrikes hit Idlib hospital, report {n}",
        slug=f"idlib-{n}",
        text=f"Rescuers in Syria's Idlib province said strikes hit a hospital (report {n}).",
    )


def _env(settings: Settings, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(
        NEWSFLOW_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        NEWSFLOW_DATA_DIR=str(data_dir),
        NEWSFLOW_KAFKA_GROUP_ID=settings.kafka.group_id,
        NEWSFLOW_TOPICS_RAW=settings.topics.raw,
        NEWSFLOW_TOPICS_ENRICHED=settings.topics.enriched,
        NEWSFLOW_TOPICS_DLQ=settings.topics.dlq,
        NEWSFLOW_TOPICS_FEED_HEALTH=settings.topics.feed_health,
        NEWSFLOW_METRICS_LAG_INTERVAL_S="0.2",
        NEWSFLOW_INGEST_MIN_INTERVAL_S="1",
        NEWSFLOW_INGEST_DEFAULT_INTERVAL_S="1",
        NEWSFLOW_INGEST_PER_HOST_SPACING_S="0",
        NEWSFLOW_SINKS_FILES_FORMATS="jsonl",
        NEWSFLOW_LOG_FORMAT="json",
        NEWSFLOW_LOG_LEVEL="INFO",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int) -> Samples:
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def _wait_ready(port: int, process: subprocess.Popen[bytes], deadline: float) -> dict:
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the process exited with {process.returncode}"
        try:
            status, body = _get(f"http://127.0.0.1:{port}/readyz")
        except OSError:  # not listening yet
            time.sleep(0.2)
            continue
        if status == 200:
            return json.loads(body)
        time.sleep(0.2)
    raise AssertionError(f"port {port} never became ready")


def test_every_metric_moves_during_a_stream_run(kafka_settings, tmp_path):
    from newsflow.feedserver import FeedServer

    settings = kafka_settings
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    feeds_dir = tmp_path / "feeds"
    feeds_dir.mkdir()
    (feeds_dir / "desk.rss").write_text(_feed([_item(1), _item(2)]))
    env = _env(settings, tmp_path / "data")
    ingest_port, enrich_port = free_port(), free_port()
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("ingest", "enrich")}  # noqa: SIM115
    with FeedServer(feeds_dir) as server:
        feeds_file = tmp_path / "feeds.yaml"
        feeds_file.write_text(f"feeds:\n  - url: {server.base_url}/desk.rss\n    name: Test desk\n")
        cli = [sys.executable, "-m", "newsflow"]
        ingest = subprocess.Popen(
            [*cli, "ingest", "--feeds", str(feeds_file), "--every", "1s", "--metrics-port", str(ingest_port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=logs["ingest"],
            stderr=subprocess.STDOUT,
        )
        enrich = subprocess.Popen(
            [*cli, "enrich", "--mode", "stream", "--metrics-port", str(enrich_port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=logs["enrich"],
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 240
            assert _wait_ready(ingest_port, ingest, deadline)["checks"] == {"broker": True}
            assert _wait_ready(enrich_port, enrich, deadline)["checks"] == {"broker": True, "models": True}
            for port in (ingest_port, enrich_port):
                assert _get(f"http://127.0.0.1:{port}/healthz") == (200, b"ok\n")
            before_ingest, before_enrich = scrape(ingest_port), scrape(enrich_port)

            # work for both: new items and an unidentifiable one in the feed; a backlog of raw
            # articles and one message that is not JSON on the raw topic
            (feeds_dir / "desk.rss").write_text(_feed([_item(n) for n in range(1, 6)] + [NAMELESS]))
            producer = kafka_clients.producer(settings.kafka)
            for n in range(40):
                article = Article(
                    id=f"direct-{n:04d}-{tmp_path.name[-8:]}",
                    feed_url="https://example.test/direct.rss",
                    source="Direct",
                    title=f"Election officials warn of foreign troll farms, item {n}",
                    summary="Investigators say a foreign influence operation ran fake accounts.",
                    fetched_at=utc_now(),
                    content_hash=content_hash(str(n)),
                )
                producer.send(settings.topics.raw, key=article.id.encode(), value=encode(article))
            producer.send(settings.topics.raw, key=b"broken", value=b"{not json")
            producer.flush()
            producer.close()

            lag_seen: dict[frozenset, set[float]] = {}
            wanted_ingest = {
                "feeds polled": lambda s: total(s, "newsflow_feeds_polled_total"),
                "articles produced": lambda s: total(s, "newsflow_articles_produced_total"),
                "ingest dead letters by reason": lambda s: total(
                    s, "newsflow_dead_letters_total", stage="ingest", reason="unidentifiable_item"
                ),
                "last ingest success": lambda s: total(
                    s, "newsflow_last_success_timestamp_seconds", job="ingest"
                ),
            }
            wanted_enrich = {
                "articles enriched": lambda s: total(s, "newsflow_articles_enriched_total"),
                "decode dead letters by reason": lambda s: total(
                    s, "newsflow_dead_letters_total", stage="decode", reason="bad_json"
                ),
                "model batch latency": lambda s: total(s, "newsflow_model_batch_seconds_count"),
                "produce-to-enriched latency": lambda s: total(
                    s, "newsflow_produce_to_enriched_seconds_count"
                ),
                "last enrich success": lambda s: total(
                    s, "newsflow_last_success_timestamp_seconds", job="enrich"
                ),
            }
            moved: set[str] = set()
            while time.monotonic() < deadline:
                now_ingest, now_enrich = scrape(ingest_port), scrape(enrich_port)
                for name, read in wanted_ingest.items():
                    if read(now_ingest) > read(before_ingest):
                        moved.add(name)
                for name, read in wanted_enrich.items():
                    if read(now_enrich) > read(before_enrich):
                        moved.add(name)
                for (name, labels), value in now_enrich.items():
                    if name == "newsflow_consumer_lag":
                        lag_seen.setdefault(labels, set()).add(value)
                lag_moved = any(len(values) > 1 for values in lag_seen.values())
                caught_up = lag_seen and all(
                    now_enrich.get(("newsflow_consumer_lag", labels)) == 0 for labels in lag_seen
                )
                if len(moved) == len(wanted_ingest) + len(wanted_enrich) and lag_moved and caught_up:
                    break
                time.sleep(0.2)
            assert moved == set(wanted_ingest) | set(wanted_enrich), (
                f"did not move: {set(wanted_ingest) | set(wanted_enrich) - moved}"
            )
            assert {dict(labels)["topic"] for labels in lag_seen} == {settings.topics.raw}
            assert len(lag_seen) == settings.topics.partitions  # one gauge per partition
            assert any(max(values) > 0 for values in lag_seen.values()), "the backlog never showed as lag"
            assert caught_up
            final = scrape(enrich_port)
            # 40 direct articles + the feed's items arrive; every one is enriched (none twice)
            assert total(final, "newsflow_articles_enriched_total") >= 40 + 5
            assert total(final, "newsflow_produce_to_enriched_seconds_count") == total(
                final, "newsflow_articles_enriched_total"
            )
            assert total(final, "newsflow_model_batch_articles_sum") == total(
                final, "newsflow_articles_enriched_total"
            )
        finally:
            enrich.send_signal(signal.SIGTERM)
            ingest.send_signal(signal.SIGINT)
            enrich_code = enrich.wait(timeout=120)
            ingest.wait(timeout=60)
            for fh in logs.values():
                fh.close()
    assert enrich_code == 0, (tmp_path / "enrich.log").read_text()[-3000:]
    # the JSON logs name the run, and the dead letter's partition and offset
    lines = [json.loads(x) for x in (tmp_path / "enrich.log").read_text().splitlines() if x.startswith("{")]
    letters = [x for x in lines if x.get("reason") == "bad_json"]
    assert letters and letters[0]["run_id"] and letters[0]["stage"] == "decode"
    assert letters[0]["topic"] == settings.topics.raw and isinstance(letters[0]["offset"], int)
    ingest_lines = (tmp_path / "ingest.log").read_text().splitlines()
    polled = [json.loads(y) for y in ingest_lines if y.startswith("{")]
    assert any(x.get("feed", "").endswith("/desk.rss") and x.get("run_id") for x in polled)
