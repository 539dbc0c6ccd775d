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
    FeedHealth,
    FeedStatus,
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


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        ("timeout", True),
        ("connection_reset", True),
        ("http_500", True),
        ("http_503", True),
        ("http_429", True),
        ("kafka_error", True),
        ("http_404", False),
        ("http_410", False),
        ("not_a_feed", False),
        ("too_large", False),
        ("xml_entities", False),
        ("redirect_loop", False),
        ("connection_error", False),
    ],
)
def test_transient_feed_statuses(status, transient):
    assert FeedStatus(status).transient is transient


def test_every_http_code_is_a_feed_status_and_nothing_else_is():
    assert FeedStatus("http_404") is FeedStatus.http(404) and FeedStatus.http(410) is FeedStatus.HTTP_410
    assert FeedStatus.http(404) == "http_404" and f"{FeedStatus.http(404)}" == "http_404"
    assert {FeedStatus.OK: 1}.get("ok") == 1  # str-valued: the wire format is the plain string
    for bad in ("http_40", "http_4044", "http_x04", "OK", "bogus", ""):
        with pytest.raises(ValueError):
            FeedStatus(bad)
    assert FeedStatus.NOT_MODIFIED.unchanged and FeedStatus.UNCHANGED.healthy and FeedStatus.OK.healthy
    assert not FeedStatus.http(404).healthy and not FeedStatus.OK.unchanged


def test_feed_health_records_round_trip_and_untyped_ones_from_older_releases_decode():
    record = FeedHealth(
        feed_url="http://x/f", status=FeedStatus.http(503), pages={"extracted": 2}, at="2026-12-01T00:00:00Z"
    )
    assert decode(FeedHealth, encode(record)) == record
    assert json.loads(encode(record))["status"] == "http_503"
    # What the first release published (no fetch_url, http_status, counters, cut or pages).
    first = {
        "schema": "newsflow.feed-health.v1",
        "feed_url": "http://x/f",
        "name": "X",
        "status": "not_modified",
        "error": None,
        "new_articles": 0,
        "items": 0,
        "rejected": 0,
        "bozo": False,
        "consecutive_failures": 0,
        "last_success": "2026-11-25T09:00:00Z",
        "at": "2026-11-25T09:00:00Z",
    }
    old = decode(FeedHealth, json.dumps(first))
    assert (
        old.status is FeedStatus.NOT_MODIFIED and old.cut == 0 and old.pages == {} and old.items_seen is None
    )
    with pytest.raises(ValueError):
        decode(FeedHealth, json.dumps({**first, "status": "fine"}))
