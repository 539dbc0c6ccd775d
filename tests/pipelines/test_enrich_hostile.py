"""Hostile input on the enrich side (issue 11): oversized records and records a sink refuses.

Each test runs the real pipeline (real models) on the session's broker and PostgreSQL server and
asserts what a user needs: the run completes and reconciles, the bad record is cut (marked in
``truncated``) or dead-lettered with a reason, and every other record reaches every sink.
"""

import base64
import json
import random

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from connectors import kafka as kafka_clients
from connectors.files import read_jsonl, read_parquet
from newsflow.records import Article, DeadLetter, content_hash, decode, encode
from pipelines.enrich import SOURCE_HEADER, run_enrich
from tests.pipelines.test_enrich_kafka import _produce
from tests.pipelines.test_sinks import _postgres_records, _sink_settings

pytestmark = pytest.mark.integration


def _article(i: int, title: str, content: str = "") -> Article:
    return Article(
        id=f"{i:032x}",
        feed_url="http://feeds.test/hostile.rss",
        title=title,
        summary="Rescuers said shelling continued overnight.",
        content=content,
        fetched_at="2026-11-01T00:00:00Z",
        content_hash=content_hash(title, str(i)),
    )


def _letters(settings):
    return [decode(DeadLetter, m.value) for m in kafka_clients.read_all(settings.kafka, settings.topics.dlq)]


def test_an_article_of_a_megabyte_is_cut_to_the_limit_in_every_sink(kafka_settings, postgres_dsn, unique):
    """The poison pill: a raw article of 1,048,253 bytes made an enriched record over 1 MB, and the run
    failed on it forever. Now the same cut record goes to Kafka, the files and PostgreSQL."""
    settings = _sink_settings(kafka_settings, postgres_dsn, unique)
    limit = settings.kafka.max_record_bytes
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    small = [_article(i, f"Idlib story {i}") for i in range(3)]
    base = encode(_article(7, "A very long article", ""))
    huge = _article(7, "A very long article", "x" * (1_048_253 - len(base)))
    assert len(encode(huge)) == 1_048_253
    broken = b'{"id": "' + b"y" * 1_040_000 + b'"'  # a megabyte of invalid JSON: its dead letter is cut
    _produce(settings, [(a.id.encode(), encode(a)) for a in [small[0], huge, small[1]]])
    _produce(settings, [(b"broken", broken), (small[2].id.encode(), encode(small[2]))])

    report = run_enrich(settings)
    assert report.reconciles(), report.problems()
    assert (report.read, report.enriched, report.dead_lettered) == (5, 4, 1)

    kafka = {m.key.decode(): m for m in kafka_clients.read_all(settings.kafka, settings.topics.enriched)}
    cut = kafka[huge.id]
    assert len(cut.value) <= limit
    record = json.loads(cut.value)
    assert record["article"]["truncated"] == {"content": len(huge.content)}
    assert record["article"]["content"].endswith(" [...]")
    assert dict(cut.headers)[SOURCE_HEADER].startswith(settings.topics.raw.encode() + b"/")
    lines = {x["article"]["id"]: x for x in read_jsonl(settings.enriched_dir)}
    assert lines[huge.id] == record  # the same bytes in every sink
    parquet = {r["id"]: r for r in read_parquet(settings.enriched_dir).to_pylist()}
    assert parquet[huge.id]["content"] == record["article"]["content"]
    rows = {r[0]: r[2] for r in _postgres_records(settings)}
    assert rows[huge.id]["article"]["truncated"] == record["article"]["truncated"]
    assert sorted(kafka) == sorted(lines) == sorted(rows) == sorted(a.id for a in [*small, huge])

    (letter,) = _letters(settings)
    assert (letter.stage, letter.reason) == ("decode", "bad_json")
    assert letter.truncated["payload"] == len(broken) and len(encode(letter)) <= limit


def test_records_a_sink_refuses_become_dead_letters_and_the_others_are_written(
    kafka_settings, postgres_dsn, unique
):
    """Kafka refuses a record over the enriched topic's max.message.bytes; PostgreSQL refuses a row
    against a CHECK constraint a DBA added. Each refusal is a dead letter of that sink; the other
    sinks still hold the record, and nothing fails the bundle."""
    psycopg = pytest.importorskip("psycopg")
    settings = _sink_settings(kafka_settings, postgres_dsn, unique)
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    admin = kafka_clients.admin(settings.kafka)
    try:
        topic = ConfigResource(
            ConfigResourceType.TOPIC, settings.topics.enriched, {"max.message.bytes": "50000"}
        )
        admin.alter_configs([topic], incremental=True)
    finally:
        admin.close()
    from connectors import postgres

    postgres.check(settings.sinks.postgres_dsn, settings.sinks.postgres_table)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            f"ALTER TABLE {settings.sinks.postgres_table} "
            "ADD CONSTRAINT no_embargo CHECK (title NOT LIKE 'EMBARGOED%')"
        )
    fine = [_article(i, f"Idlib story {i}") for i in range(4)]
    noise = base64.b64encode(random.Random(7).randbytes(90_000)).decode()  # gzip cannot shrink it
    big = _article(10, "Long read on the election", noise)  # ~120 kB: over the topic's limit
    embargoed = _article(11, "EMBARGOED: troll farm report")
    _produce(settings, [(a.id.encode(), encode(a)) for a in [*fine[:2], big, embargoed, *fine[2:]]])

    report = run_enrich(settings)
    assert report.reconciles(), report.problems()
    assert (
        report.enriched,
        report.refused("kafka"),
        report.refused("postgres"),
        report.refused("files"),
    ) == (
        6,
        1,
        1,
        0,
    )
    assert report.written("kafka") == 5 and report.written("postgres") == 5 and report.written("files") == 6

    letters = {(d.stage, d.reason): d for d in _letters(settings)}
    assert set(letters) == {("sink_kafka", "too_large"), ("sink_postgres", "invalid_value")}
    assert (
        decode(Article, json.dumps(json.loads(letters["sink_kafka", "too_large"].payload)["article"])).id
        == big.id
    )
    assert "no_embargo" in letters["sink_postgres", "invalid_value"].error
    for letter in letters.values():
        assert letter.source.topic == settings.topics.raw and letter.source.offset is not None

    everyone = {a.id for a in [*fine, big, embargoed]}
    in_kafka = {m.key.decode() for m in kafka_clients.read_all(settings.kafka, settings.topics.enriched)}
    in_postgres = {r[0] for r in _postgres_records(settings)}
    in_files = {x["article"]["id"] for x in read_jsonl(settings.enriched_dir)}
    assert in_kafka == everyone - {big.id}
    assert in_postgres == everyone - {embargoed.id}
    assert in_files == everyone
