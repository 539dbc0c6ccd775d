"""The offline demo end to end: sample feeds over HTTP → Kafka → Beam → enriched topic and files."""

import socket
from urllib.parse import urlsplit

import pytest
import yaml

from connectors import kafka as kafka_clients
from newsflow.config import REPO_ROOT
from newsflow.demo import run_demo
from newsflow.records import Article, decode

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_enriches_every_produced_article_once_and_a_rerun_adds_nothing(kafka_settings):
    # One port for both runs, as `newsflow demo` has (8765): the Valley Gazette's relative links,
    # and so its article ids, include the demo server's address.
    kafka_settings = kafka_settings.with_overrides(demo_port=free_port())
    first = run_demo(kafka_settings)
    assert not first.broker_started  # the session broker answered
    assert first.ingest.errors == {} and first.ingest.new_articles >= 40
    produced = {
        decode(Article, r.value).id
        for r in kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.raw)
    }
    assert len(produced) == first.ingest.new_articles
    assert first.enrich.enriched == len(produced) and first.enrich.dead_lettered == 0

    records = {r["article"]["id"]: r for r in first.records}
    assert set(records) == produced
    for record in records.values():
        assert record["schema"] == "newsflow.enriched.v2"
        assert record["topics"] and record["primary_topic"] in {
            "syria_conflict",
            "election_interference",
            "other",
        }
        assert all(s["label"] in {"agree", "disagree", "discuss", "unrelated"} for s in record["stances"])
        assert bool(record["stances"]) == (record["stance_method"] == "model"), record["article"]["id"]
        assert {"topics", "encoder", "stance", "taxonomy"} <= set(record["model"])
        assert all(record["model"].values())

    # the demo feeds are English with text: the models label every one of them
    methods = [r["stance_method"] for r in records.values()]
    assert methods.count("model") >= 0.9 * len(methods), methods

    # The labels are real: most of the hand-labelled sample articles get their intended topics.
    expected = {
        e["link"]: set(e["topics"])
        for e in yaml.safe_load((REPO_ROOT / "examples" / "feeds" / "expected.yaml").read_text())
    }
    got = {r["article"]["canonical_url"]: {t["label"] for t in r["topics"]} for r in records.values()}
    got.update({urlsplit(url).path: labels for url, labels in got.items() if "127.0.0.1" in url})
    primary_right = sum(1 for url, want in expected.items() if got.get(url, set()) & want)
    assert primary_right >= 0.8 * len(expected)

    # The Valley Gazette carries teasers only: its three articles hold the text of their pages.
    assert first.ingest.pages == {"extracted": 3}
    gazette = [r["article"] for r in records.values() if r["article"]["source"] == "Valley Gazette"]
    assert len(gazette) == 3 and all(a["text_source"] == "extracted" for a in gazette)
    assert all(len(a["content"]) > 500 and "Advertisement" not in a["content"] for a in gazette)

    second = run_demo(kafka_settings)
    assert second.ingest.new_articles == 0
    assert second.enrich.skipped and second.enrich.read == 0
    assert {r["article"]["id"] for r in second.records} == produced
    assert len(kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.enriched)) == len(produced)
