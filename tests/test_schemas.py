"""The JSON Schemas in schemas/ match the pydantic records and accept exactly what they accept."""

import json

import pytest

from newsflow.records import (
    ARTICLE_SCHEMA,
    DEADLETTER_SCHEMA,
    ENRICHED_SCHEMA,
    FEED_HEALTH_SCHEMA,
    DeadLetter,
    FeedHealth,
    FeedStatus,
    SourceCoordinates,
)
from schemas import generate
from tests.connectors.test_files import enriched


def validator(name):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    schema = generate.load(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_files_match_the_models():
    stale = generate.stale()
    assert not stale, (
        f"{[p.name for p in stale]} drifted from newsflow.records; run: python -m schemas.generate"
    )


@pytest.mark.parametrize("name", [ARTICLE_SCHEMA, ENRICHED_SCHEMA, DEADLETTER_SCHEMA, FEED_HEALTH_SCHEMA])
def test_each_schema_is_draft_2020_12_and_named_after_its_record(name):
    schema = generate.load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == name and schema["$id"].endswith(f"/{name}.json")
    validator(name)


def test_records_the_pipeline_writes_validate():
    record = enriched(1, title="\x00 control \x1b")
    letter = DeadLetter(
        stage="decode",
        reason="bad_json",
        error="x",
        payload="{",
        source=SourceCoordinates(topic="news.raw", partition=0, offset=3),
    )
    validator(ENRICHED_SCHEMA).validate(json.loads(record.model_dump_json(by_alias=True)))
    validator(ARTICLE_SCHEMA).validate(json.loads(record.article.model_dump_json(by_alias=True)))
    validator(DEADLETTER_SCHEMA).validate(json.loads(letter.model_dump_json(by_alias=True)))


def test_the_schemas_reject_what_the_models_reject():
    good = json.loads(enriched(1).model_dump_json(by_alias=True))
    check = validator(ENRICHED_SCHEMA)
    bad = [
        {**good, "primary_topic": None},
        {**good, "topics": [{"label": "other", "score": None}]},  # a NaN score serialises as null
        {**good, "surprise": 1},
        {**good, "schema": "newsflow.enriched.v3"},
        {**good, "stances": [{"claim_id": "c", "claim": "c", "label": "maybe", "score": 0.5}]},
        {**good, "article": {**good["article"], "id": "short"}},
    ]
    for doc in bad:
        assert not check.is_valid(doc), doc


def test_the_feed_health_schema_takes_every_status_ingest_publishes_and_nothing_else():
    check = validator(FEED_HEALTH_SCHEMA)
    base = {"feed_url": "http://x/f", "at": "2026-12-01T00:00:00Z"}
    for status in [*FeedStatus, FeedStatus.http(404), FeedStatus.http(500)]:
        record = FeedHealth(**base, status=status, pages={"extracted": 1}, cut=2)
        check.validate(json.loads(record.model_dump_json(by_alias=True)))
    good = json.loads(FeedHealth(**base, status=FeedStatus.OK).model_dump_json(by_alias=True))
    for doc in [
        {**good, "status": "fine"},
        {**good, "status": "http_4040"},
        {**good, "pages": {"extracted": "many"}},
        {**good, "surprise": 1},
        {k: v for k, v in good.items() if k != "at"},
    ]:
        assert not check.is_valid(doc), doc
