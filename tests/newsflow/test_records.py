"""The record codec: version-1 records still read, and the size policy cuts every record type to fit."""

import json

import pytest

from newsflow.records import (
    ARTICLE_SCHEMA,
    DEADLETTER_SCHEMA,
    ENRICHED_SCHEMA,
    Article,
    DeadLetter,
    Enriched,
    RecordTooLarge,
    SourceCoordinates,
    TopicScore,
    decode,
    encode,
    fit,
    utc_now,
)


def article(**fields) -> Article:
    base = {"id": "abcdef123456", "feed_url": "http://x/f", "fetched_at": utc_now(), "content_hash": "h"}
    return Article(**{**base, **fields})


def test_version_1_records_read_as_version_2():
    old = {"schema": "newsflow.article.v1", "id": "abcdef123456", "feed_url": "u", "fetched_at": "t"}
    got = decode(Article, json.dumps({**old, "content_hash": "h", "summary": "a teaser"}))
    assert got.schema_ == ARTICLE_SCHEMA and got.text_source == "feed_summary" and got.truncated == {}
    letter = {"schema": "newsflow.deadletter.v1", "stage": "decode", "reason": "bad_json", "error": "e"}
    got_letter = decode(DeadLetter, json.dumps({**letter, "payload": "{", "source": {}}))
    assert got_letter.schema_ == DEADLETTER_SCHEMA
    assert json.loads(encode(got_letter))["schema"] == "newsflow.deadletter.v2"
    with pytest.raises(ValueError):
        decode(Article, json.dumps({**old, "schema": "newsflow.article.v9", "content_hash": "h"}))


def test_text_source_says_where_the_text_came_from():
    assert article(content="body", summary="teaser").text_source == "feed_content"
    assert article(summary="teaser").text_source == "feed_summary"
    assert article(title="title only").text_source is None
    assert article(content="page text", text_source="extracted").text_source == "extracted"


def test_a_record_that_fits_is_left_as_it_is():
    a = article(title="t", content="short")
    same, data = fit(a)
    assert same is a and data == encode(a)


@pytest.mark.parametrize("limit", [10_000, 200_000, 1_000_000])
def test_an_oversized_article_is_cut_to_the_limit_and_marked(limit):
    # 400k CJK characters are 1.2 MB of UTF-8; titles are cut too when everything else is gone
    a = article(title="标题" * 100_000, summary="s" * 300_000, content="中" * 400_000)
    cut, data = fit(a, limit)
    assert len(data) <= limit
    assert decode(Article, data) == cut
    assert cut.truncated["content"] == 400_000
    assert all(getattr(cut, f).endswith(" [...]") or getattr(cut, f) == "" for f in cut.truncated)
    assert cut.id == a.id and cut.content_hash == a.content_hash  # identity and edit detection are kept
    assert fit(a, limit)[1] == data  # deterministic


def test_control_characters_that_json_escapes_are_counted():
    a = article(title="\x00" * 300_000)  # 6 bytes each on the wire
    cut, data = fit(a, 100_000)
    assert len(data) <= 100_000 and cut.truncated == {"title": 300_000}


def test_an_enriched_record_is_cut_inside_its_article():
    record = Enriched(
        article=article(content="x" * 2_000_000),
        topics=[TopicScore(label="other", score=1.0)],
        primary_topic="other",
        stances=[],
        model={"encoder": "m@1"},
        enriched_at=utc_now(),
        run_id="r",
    )
    cut, data = fit(record, 500_000)
    assert len(data) <= 500_000
    assert cut.schema_ == ENRICHED_SCHEMA and cut.article.truncated == {"content": 2_000_000}
    assert cut.topics == record.topics


def test_a_dead_letter_payload_is_cut():
    letter = DeadLetter(
        stage="decode", reason="bad_json", error="e", payload="{" * 3_000_000, source=SourceCoordinates()
    )
    cut, data = fit(letter, 50_000)
    assert len(data) <= 50_000 and cut.truncated == {"payload": 3_000_000}


def test_a_record_too_large_without_its_text_says_so():
    a = article(tags=["tag"] * 200_000)
    with pytest.raises(RecordTooLarge, match="NEWSFLOW_KAFKA_MAX_RECORD_BYTES"):
        fit(a, 100_000)
