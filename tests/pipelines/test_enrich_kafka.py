"""The enrichment pipeline end to end on the real broker, with the real models."""

import json
import threading
import time

import pytest

from connectors import kafka as kafka_clients
from connectors.kafka_control import GroupLock, ensure_control_topic
from newsflow.errors import PipelineError
from newsflow.records import Article, DeadLetter, Enriched, content_hash, decode, encode
from pipelines.enrich import RunControl, run_enrich

pytestmark = pytest.mark.integration

TEXTS = [
    (
        "Russian jets strike hospital in Idlib",
        "Airstrikes hit a hospital in Syria's Idlib province, rescuers said.",
    ),
    ("Troll farm targeted voters before the election", "A Russian influence operation ran fake accounts."),
    ("Central bank holds rates", "The bank kept its benchmark rate unchanged on Thursday."),
    ("", ""),  # empty text still gets labels
    ("\x00\x07 control \x1b characters", "body \x0c with control characters"),
    ("Très long article", "mot " * 250_000),  # a 1 MB article
]


def _articles(n_start=0):
    out = []
    for i, (title, text) in enumerate(TEXTS):
        out.append(
            Article(
                id=f"{n_start + i:032x}",
                feed_url="http://feeds.test/x.rss",
                source="Test",
                title=title,
                summary=text,
                fetched_at="2026-11-01T00:00:00Z",
                content_hash=content_hash(title, text),
            )
        )
    return out


def _produce(settings, values):
    producer = kafka_clients.producer(settings.kafka)
    for key, value in values:
        producer.send(settings.topics.raw, key=key, value=value)
    producer.flush()
    producer.close()


def test_batch_run_enriches_every_article_and_dead_letters_the_rest(kafka_settings, beam_runner):
    kafka_settings = kafka_settings.with_overrides(**{"beam.runner": beam_runner})
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics)
    articles = _articles()
    _produce(kafka_settings, [(a.id.encode(), encode(a)) for a in articles])
    _produce(
        kafka_settings,
        [(b"bad1", b"{broken json"), (b"bad2", b'{"schema": "newsflow.article.v1"}'), (b"tombstone", None)],
    )
    report = run_enrich(kafka_settings)
    assert (report.read, report.enriched, report.dead_lettered) == (len(articles) + 3, len(articles), 3)
    assert report.reconciles() and report.runner == beam_runner

    enriched = [
        decode(Enriched, r.value)
        for r in kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.enriched)
    ]
    assert sorted(e.id for e in enriched) == sorted(a.id for a in articles)
    claims = None
    for record in enriched:
        assert record.topics and record.primary_topic == record.topics[0].label
        assert {"topics", "encoder", "stance", "taxonomy"} <= set(record.model)
        assert record.run_id == report.run_id
        # stance is labelled where the topic model read the text (a covered language with words);
        # elsewhere the record says why it has none
        if record.stance_method != "model":
            assert not record.stances and record.topic_method == record.stance_method
            continue
        claims = claims or {s.claim_id for s in record.stances}
        assert {s.claim_id for s in record.stances} == claims and claims
    assert claims
    by_title = {e.article.title: e for e in enriched}
    assert by_title["Russian jets strike hospital in Idlib"].primary_topic == "syria_conflict"
    assert by_title["Central bank holds rates"].primary_topic == "other"
    assert by_title[""].primary_topic == "other" and by_title[""].stance_method == "no_text"
    assert by_title["Très long article"].stance_method == "unsupported_language"
    assert by_title["Russian jets strike hospital in Idlib"].stance_method == "model"

    letters = [
        decode(DeadLetter, r.value)
        for r in kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.dlq)
    ]
    assert sorted(d.reason for d in letters) == ["bad_json", "empty_message", "schema_invalid"]
    assert all(d.source.topic == kafka_settings.topics.raw and d.source.offset is not None for d in letters)

    files = list(kafka_settings.enriched_dir.rglob("*.jsonl"))
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert sorted(x["article"]["id"] for x in lines) == sorted(a.id for a in articles)
    assert not list(kafka_settings.enriched_dir.rglob(".*.tmp"))

    # Committed: a second run has nothing to do.
    again = run_enrich(kafka_settings)
    assert again.skipped and again.read == 0


def test_only_one_run_per_group_at_a_time(kafka_settings):
    """Across hosts too: the lock is a Kafka consumer group's assignment, not a file on one disk."""
    ensure_control_topic(kafka_settings.kafka, kafka_settings.topics.control)
    held = GroupLock(kafka_settings.kafka, kafka_settings.topics.control, kafka_settings.kafka.group_id)
    impatient = kafka_settings.with_overrides(**{"kafka.lock_wait_s": 2})
    with held, pytest.raises(PipelineError, match="in progress"):
        run_enrich(impatient)


def test_stream_mode_delivers_new_messages_and_stops_cleanly(kafka_settings, beam_runner):
    kafka_settings = kafka_settings.with_overrides(**{"beam.runner": beam_runner})
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics)
    result = {}
    control = RunControl()

    def stream():
        result["report"] = run_enrich(kafka_settings, mode="stream", control=control)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    consumer = kafka_clients.consumer(kafka_settings.kafka, group_id=None)
    consumer.subscribe([kafka_settings.topics.enriched])
    try:
        latencies = []
        for article in _articles(100)[:2]:
            # Wait until the pipeline polls: the first message may arrive while models load.
            sent = time.monotonic()
            _produce(kafka_settings, [(article.id.encode(), encode(article))])
            got = None
            while got is None and time.monotonic() - sent < 120:
                for records in consumer.poll(timeout_ms=100).values():
                    got = [decode(Enriched, r.value).id for r in records]
            assert got == [article.id]
            latencies.append(time.monotonic() - sent)
        print(f"stream latency after warm-up ({beam_runner}): {latencies[-1]:.2f}s")
    finally:
        control.request_stop()  # through Kafka, as a worker in another process would see it
        thread.join(timeout=120)
        consumer.close()
    assert not thread.is_alive()
    report = result["report"]
    assert report.enriched == 2 and report.reconciles()
    committed = kafka_clients.committed_offsets(
        kafka_settings.kafka, kafka_settings.kafka.group_id, kafka_settings.topics.raw
    )
    assert sum(v or 0 for v in committed.values()) == 2
