"""DecodeAndValidate in memory: Beam TestPipeline + assert_that on Create input."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from connectors.beam_kafka import KafkaRecord
from newsflow.records import Article, content_hash, encode
from pipelines.enrich import DecodeAndValidate

GOOD = Article(
    id="0123456789abcdef0123456789abcdef",
    feed_url="http://feeds.test/a.rss",
    title="T",
    summary="S",
    fetched_at="2026-11-01T00:00:00Z",
    content_hash=content_hash("T", "S"),
)


def _record(offset, value):
    return KafkaRecord("news.raw", 0, offset, b"k", value, 0)


def test_good_articles_pass_and_bad_messages_become_dead_letters_with_reasons():
    records = [
        _record(0, encode(GOOD)),
        _record(1, b"{not json"),
        _record(2, b'{"schema": "newsflow.article.v1", "id": "short"}'),
        _record(3, None),
        _record(4, '{"title": "\u00e9"}'.encode("latin-1")),  # wrong encoding, not valid UTF-8 JSON
    ]
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(records) | DecodeAndValidate()
        assert_that(out.articles | "Ids" >> beam.Map(lambda a: a.id), equal_to([GOOD.id]), label="articles")
        reasons = out.dead_letters | "Reasons" >> beam.Map(lambda d: (d.source.offset, d.stage, d.reason))
        assert_that(
            reasons,
            equal_to(
                [
                    (1, "decode", "bad_json"),
                    (2, "decode", "schema_invalid"),
                    (3, "decode", "empty_message"),
                    (4, "decode", "bad_json"),
                ]
            ),
            label="dead_letters",
        )


def test_dead_letters_keep_the_payload_and_coordinates():
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([_record(7, b"garbage")]) | DecodeAndValidate()
        assert_that(
            out.dead_letters
            | beam.Map(lambda d: (d.payload, d.source.topic, d.source.partition, d.error != "")),
            equal_to([("garbage", "news.raw", 0, True)]),
        )
