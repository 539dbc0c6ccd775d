"""The enrich pipeline's stages and sinks: fusion, dead letters, reconciliation, exactly once per id.

Unit tests run in memory; the ``integration`` ones run the whole pipeline on the session's Kafka
broker and PostgreSQL server with the real models: N raw articles plus malformed messages, a
re-score of history with another model version, and a kill -9 mid-run followed by a restart.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to
from typer.testing import CliRunner

from connectors import kafka as kafka_clients
from connectors.beam_kafka import KafkaRecord, PartitionSlice, StartPosition
from connectors.files import read_jsonl, read_parquet
from models.handler import EnrichmentModelHandler
from newsflow.config import Settings
from newsflow.errors import PipelineError
from newsflow.records import (
    ARTICLE_SCHEMA,
    DEADLETTER_SCHEMA,
    ENRICHED_SCHEMA,
    Article,
    TopicScore,
    content_hash,
    encode,
)
from pipelines.enrich import (
    DEAD_LETTERS,
    BuildEnrichedRecord,
    DecodeAndValidate,
    Enrich,
    EnrichReport,
    RecordRejected,
    _metrics,
    build_pipeline,
    run_enrich,
    validate_enriched,
)
from schemas import generate
from tests.connectors.test_files import enriched
from tests.pipelines.test_enrich_kafka import _produce


def schemas():
    """JSON Schema validators of the three record types (the integration tests need jsonschema)."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    return {name: jsonschema.Draft202012Validator(generate.load(name)) for name in generate.MODELS}


def _psycopg():
    return pytest.importorskip(
        "psycopg", reason="psycopg 3 is not installed; pip install 'psycopg[binary]>=3.1'"
    )


# -- in memory -------------------------------------------------------------------------------------
def test_every_step_after_the_read_is_fused_with_it():
    """One stage from the read to every sink: the offsets commit only after all of them flushed."""
    settings = Settings().with_overrides(**{"sinks.postgres_dsn": "postgresql://u@127.0.0.1:9/db"})
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    build_pipeline(pipeline, settings, [PartitionSlice("news.raw", 0, 0, 10)], "run-1")
    _, stages = FnApiRunner().create_stages(pipeline.to_runner_api())
    names = {stage.name: [t.unique_name for t in stage.transforms] for stage in stages}
    (reader,) = [steps for steps in names.values() if "ReadRaw/ReadPartitions/Process" in steps]
    later = [
        step
        for steps in names.values()
        for step in steps
        if step.split("/")[0]
        in ("DecodeAndValidate", "Enrich", "BuildEnrichedRecord", "WriteEnriched", "WriteDeadLetters")
    ]
    assert set(later) <= set(reader), sorted(set(later) - set(reader))
    for step in [
        "Enrich/ClassifyTopicsAndStance/BeamML_RunInference/ParDo(_RunInferenceDoFn)/ParDo(_RunInferenceDoFn)",
        "BuildEnrichedRecord/Validate/ParDo(_BuildFn)",
        "WriteEnriched/Kafka/Produce",
        "WriteEnriched/Files/WriteParts",
        "WriteEnriched/Postgres/Upsert",
        "WriteDeadLetters/Decode/Produce",
        "WriteDeadLetters/Enrich/Produce",
        "WriteDeadLetters/Build/Produce",
    ]:
        assert step in reader


class _NoModel:
    """What the scripted handler "loads" (RunInference keeps a weak reference to the model)."""


class _ScriptedHandler(EnrichmentModelHandler):
    """A model stand-in: the article title says what to do (plumbing only, no weights)."""

    def load_model(self) -> Any:
        return _NoModel()

    def run_inference(self, batch, model, inference_args=None):
        out = []
        for article in batch:
            if article.title == "boom":
                raise RuntimeError("model exploded")
            record = enriched(int(article.id, 16), run_id=self.run_id)
            record = record.model_copy(update={"article": article})
            if article.title == "nan":
                record = record.model_copy(update={"topics": [TopicScore(label="other", score=float("nan"))]})
            if article.title == "mismatch":
                record = record.model_copy(update={"primary_topic": "syria_conflict"})
            out.append(record)
        return out


def _article(i, title):
    return Article(
        id=f"{i:032x}",
        feed_url="http://feeds.test/a.rss",
        title=title,
        summary="s",
        fetched_at="2026-11-01T00:00:00Z",
        content_hash=content_hash(title),
    )


def test_each_stage_dead_letters_with_a_reason_and_the_counts_reconcile():
    titles = ["fine", "boom", "nan", "mismatch", "also fine"]
    records = [KafkaRecord("news.raw", 0, i, None, encode(_article(i, t)), 0) for i, t in enumerate(titles)]
    records += [
        KafkaRecord("news.raw", 1, 0, None, b"{oops", 0),
        KafkaRecord("news.raw", 1, 1, None, None, 0),
    ]
    handler = _ScriptedHandler(Settings().models, Settings().taxonomy_file, "run-1", max_batch_size=1)
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    decoded = pipeline | beam.Create(records) | DecodeAndValidate(keyed=True)
    scored = decoded.articles | Enrich(handler)
    built = scored["enriched"] | BuildEnrichedRecord()
    assert_that(
        built.rows | "Rows" >> beam.Map(lambda r: (r.partition, r.offset, r.id)),
        equal_to([(0, 0, f"{0:032x}"), (0, 4, f"{4:032x}")]),
        label="rows",
    )
    letters = [decoded[DEAD_LETTERS], scored[DEAD_LETTERS], built[DEAD_LETTERS]]
    summary = (
        letters
        | beam.Flatten()
        | "Summarise" >> beam.Map(lambda d: (d.stage, d.reason, d.source.partition, d.source.offset))
    )
    assert_that(
        summary,
        equal_to(
            [
                ("decode", "bad_json", 1, 0),
                ("decode", "empty_message", 1, 1),
                ("enrich", "model_error", 0, 1),
                ("build", "schema_invalid", 0, 2),
                ("build", "inconsistent_labels", 0, 3),
            ]
        ),
        label="dead_letters",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters, _ = _metrics(result)
    report = EnrichReport(
        "run-1", "batch", [], {**counters, "kafka_records_read": len(records), "written.dlq": 5}
    )
    assert (report.enriched, report.dead_lettered) == (2, 5)
    assert report.dead_lettered_by_stage() == {"decode": 2, "enrich": 1, "build": 2}
    assert report.reconciles(), report.problems()


def test_the_report_names_every_count_that_does_not_add_up():
    counters = {
        "kafka_records_read": 10,
        "enriched": 7,
        "dead_lettered.decode": 2,
        "written.kafka": 7,
        "written.files": 6,
        "written.dlq": 2,
    }
    report = EnrichReport("r", "batch", [], counters, sinks=("kafka", "files", "postgres"))
    assert report.problems() == [
        "read 10 != enriched 7 + dead-lettered 2",
        "sink files wrote 6 and refused 0 of 7 enriched records",
        "sink postgres wrote 0 and refused 0 of 7 enriched records",
    ]
    assert not report.reconciles()
    assert report.summary().startswith("read 10 = enriched 7 + dead-lettered 2 (decode 2); written: kafka 7")


def test_a_sink_refusal_is_counted_as_a_dead_letter_of_that_sink():
    counters = {
        "kafka_records_read": 10,
        "enriched": 10,
        "written.kafka": 9,
        "sink_rejected.kafka": 1,
        "written.files": 10,
        "written.dlq": 1,
    }
    report = EnrichReport("r", "batch", [], counters, sinks=("kafka", "files"))
    assert report.reconciles(), report.problems()
    assert "kafka 9 (+1 refused, dead-lettered)" in report.summary()
    report.counters["written.dlq"] = 0
    assert report.problems() == ["dead-letter topic got 0 of 1 dead letters"]


def test_validation_returns_the_exact_bytes_or_a_reason():
    good = enriched(1)
    assert validate_enriched(good) == (good, encode(good))
    nan = good.model_copy(update={"scores": {"other": float("nan")}})
    with pytest.raises(RecordRejected) as err:
        validate_enriched(nan)
    assert err.value.reason == "schema_invalid" and "scores" in str(err.value)
    none = good.model_copy(update={"topics": []})
    with pytest.raises(RecordRejected, match="no topic"):
        validate_enriched(none)


# -- end to end on the broker and PostgreSQL -------------------------------------------------------
N = 24
MALFORMED = [
    (b"bad-json", b"{broken json"),
    (b"bad-schema", b'{"schema": "newsflow.article.v1"}'),
    (b"tombstone", None),
    (b"not-an-object", b"[1, 2, 3]"),
    (b"next-version", b'{"schema": "newsflow.article.v2", "id": "0123456789abcdef"}'),
    (b"latin-1", '{"title": "\u00e9"}'.encode("latin-1")),
]
TITLES = [
    ("Russian jets strike hospital in Idlib", "Airstrikes hit a hospital in Syria's Idlib province."),
    ("Troll farm targeted voters before the election", "A Russian influence operation ran fake accounts."),
    ("Central bank holds rates", "The bank kept its benchmark rate unchanged on Thursday."),
    ("\x00\x07 control \x1b characters", "body \x0c with control characters"),
]


def _raw_articles(n=N, start=0):
    out = []
    for i in range(start, start + n):
        title, body = TITLES[i % len(TITLES)]
        out.append(
            Article(
                id=f"{i:032x}",
                feed_url="http://feeds.test/e2e.rss",
                source=f"Source {i % 3}",
                title=f"{title} ({i})",
                summary=body,
                published_at=None if i % 5 == 0 else f"2026-10-{1 + i % 28:02d}T12:00:00Z",
                fetched_at="2026-11-01T00:00:00Z",
                content_hash=content_hash(title, body, str(i)),
            )
        )
    return out


def _sink_settings(kafka_settings, postgres_dsn, unique, **overrides):
    _psycopg(), schemas()  # skip before anything runs when the test dependencies are missing
    return kafka_settings.with_overrides(
        **{
            "sinks.postgres_dsn": postgres_dsn,
            "sinks.postgres_table": f"enriched_{unique}",
            "kafka.bundle_records": 7,
            **overrides,
        }
    )


def _postgres_records(settings):
    with _psycopg().connect(settings.sinks.postgres_dsn.get_secret_value()) as conn:
        rows = conn.execute(f"SELECT id, run_id, record FROM {settings.sinks.postgres_table}").fetchall()
    return rows


def assert_every_sink_holds_each_id_once(settings, ids, run_id=None):
    """Files (JSONL and Parquet) and PostgreSQL: each id exactly once; Kafka: each id, latest per key.

    Every record written validates against its JSON Schema. Returns the latest Kafka record per id.
    """
    ids = sorted(ids)
    validators = schemas()
    lines = read_jsonl(settings.enriched_dir)
    assert sorted(x["article"]["id"] for x in lines) == ids
    for line in lines:
        validators[ENRICHED_SCHEMA].validate(line)
    parquet = read_parquet(settings.enriched_dir)
    assert sorted(parquet.column("id").to_pylist()) == ids
    assert not list(settings.enriched_dir.rglob(".*.tmp"))

    rows = _postgres_records(settings)
    assert sorted(r[0] for r in rows) == ids
    for _, row_run, record in rows:
        validators[ENRICHED_SCHEMA].validate(record)
        assert record["run_id"] == row_run

    latest = {}
    for message in kafka_clients.read_all(settings.kafka, settings.topics.enriched):
        value = json.loads(message.value)
        validators[ENRICHED_SCHEMA].validate(value)
        validators[ARTICLE_SCHEMA].validate(value["article"])
        assert message.key == value["article"]["id"].encode()
        latest[message.key.decode()] = value  # offsets grow within a partition: the last one wins
    assert sorted(latest) == ids
    if run_id is not None:
        assert {x["run_id"] for x in lines} == {run_id}
        assert {r[1] for r in rows} == {run_id}
        assert set(parquet.column("run_id").to_pylist()) == {run_id}
        assert {v["run_id"] for v in latest.values()} == {run_id}
    return latest


def _titles_of(settings, article_id):
    """The titles the files (JSON Lines, Parquet) and PostgreSQL hold for one id."""
    parquet = read_parquet(settings.enriched_dir).to_pylist()
    return (
        {x["article"]["title"] for x in read_jsonl(settings.enriched_dir) if x["article"]["id"] == article_id}
        | {r["title"] for r in parquet if r["id"] == article_id}
        | {r[2]["article"]["title"] for r in _postgres_records(settings) if r[0] == article_id}
    )


@pytest.mark.integration
def test_every_sink_holds_each_id_once_after_a_run_and_a_rescore(kafka_settings, postgres_dsn, unique):
    settings = _sink_settings(kafka_settings, postgres_dsn, unique)
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    articles = _raw_articles()
    ids = [a.id for a in articles]
    _produce(settings, [(a.id.encode(), encode(a)) for a in articles[: N // 2]])
    _produce(settings, MALFORMED)
    _produce(settings, [(a.id.encode(), encode(a)) for a in articles[N // 2 :]])

    report = run_enrich(settings)
    assert (report.read, report.enriched, report.dead_lettered) == (N + len(MALFORMED), N, len(MALFORMED))
    assert report.sinks == ("kafka", "files", "postgres") and report.reconciles(), report.problems()
    assert {report.written(s) for s in report.sinks} == {N} and report.written("dlq") == len(MALFORMED)
    assert report.summary().startswith(
        f"read {N + len(MALFORMED)} = enriched {N} + dead-lettered 6 (decode 6)"
    )
    first = assert_every_sink_holds_each_id_once(settings, ids, run_id=report.run_id)

    letters = kafka_clients.read_all(settings.kafka, settings.topics.dlq)
    for message in letters:
        schemas()[DEADLETTER_SCHEMA].validate(json.loads(message.value))
    reasons = Counter(json.loads(m.value)["reason"] for m in letters)
    assert reasons == {"bad_json": 2, "schema_invalid": 3, "empty_message": 1}
    assert all(m.key.startswith(settings.topics.raw.encode() + b"/") for m in letters)

    # The publisher edits article 0 (now with a publication date: another dt= folder for the files):
    # the feed connector produces it again under its id, at a later offset.
    edited = articles[0].model_copy(
        update={
            "title": "Russian jets strike hospital in Idlib (0), corrected",
            "published_at": "2026-11-02T09:00:00Z",
            "content_hash": content_hash("corrected"),
        }
    )
    _produce(settings, [(edited.id.encode(), encode(edited))])
    update = run_enrich(settings)
    assert (update.read, update.enriched) == (1, 1) and update.reconciles(), update.problems()
    assert assert_every_sink_holds_each_id_once(settings, ids)[edited.id]["article"]["title"] == edited.title
    assert _titles_of(settings, edited.id) == {edited.title}

    # Re-score history with another model version (a stricter stance gate) and other bundle sizes:
    # both versions of article 0 are read again, and the edit stays the one each sink keeps.
    rescore = settings.with_overrides(**{"models.related_threshold": 0.97, "kafka.bundle_records": 5})
    again = run_enrich(rescore, start=StartPosition(from_beginning=True))
    assert (again.read, again.enriched, again.dead_lettered) == (
        N + 1 + len(MALFORMED),
        N + 1,
        len(MALFORMED),
    )
    latest = assert_every_sink_holds_each_id_once(rescore, ids, run_id=again.run_id)
    assert latest[edited.id]["article"]["title"] == edited.title
    assert _titles_of(rescore, edited.id) == {edited.title}
    old_gate = {v["model"]["stance_gate"] for v in first.values()}
    new_gate = {v["model"]["stance_gate"] for v in latest.values()}
    assert len(new_gate) == 1 and new_gate != old_gate and next(iter(new_gate)).endswith("@0.9700")
    assert {r[2]["model"]["stance_gate"] for r in _postgres_records(rescore)} == new_gate
    assert (
        len(kafka_clients.read_all(settings.kafka, settings.topics.enriched)) == 2 * N + 2
    )  # compaction dedupes

    # Watching: newsflow tail shows one line per enriched record.
    from newsflow.cli import app

    args = ["--bootstrap", settings.kafka.bootstrap, "tail", "--topic", settings.topics.enriched]
    shown = CliRunner().invoke(app, [*args, "--from-beginning", "--max", str(2 * N), "--timeout", "20"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.rstrip("\n").split("\n")
    assert lines[0].split() == ["time", "source", "topic", "stances", "title"]
    assert len(lines) == 2 * N + 1
    assert any("Central bank holds rates (2)" in line and "other" in line for line in lines)


@pytest.mark.integration
def test_kill_minus_nine_mid_run_then_restart_leaves_each_id_once_in_every_sink(
    kafka_settings, postgres_dsn, unique
):
    settings = _sink_settings(kafka_settings, postgres_dsn, unique, **{"kafka.bundle_records": 10})
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    articles = _raw_articles(n=120, start=1000)
    _produce(settings, [(a.id.encode(), encode(a)) for a in articles])
    env = {
        **os.environ,
        "NEWSFLOW_DATA_DIR": str(settings.data_dir),
        "NEWSFLOW_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "NEWSFLOW_KAFKA_GROUP_ID": settings.kafka.group_id,
        "NEWSFLOW_KAFKA_BUNDLE_RECORDS": "10",
        "NEWSFLOW_TOPICS_RAW": settings.topics.raw,
        "NEWSFLOW_TOPICS_ENRICHED": settings.topics.enriched,
        "NEWSFLOW_TOPICS_DLQ": settings.topics.dlq,
        "NEWSFLOW_SINKS_POSTGRES_DSN": postgres_dsn,
        "NEWSFLOW_SINKS_POSTGRES_TABLE": settings.sinks.postgres_table,
    }
    cmd = [sys.executable, "-m", "newsflow", "enrich"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            if list(settings.enriched_dir.rglob("part-*.jsonl")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    partial = kafka_clients.committed_offsets(settings.kafka, settings.kafka.group_id, settings.topics.raw)
    assert sum(v or 0 for v in partial.values()) < len(articles)  # killed mid-run

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_every_sink_holds_each_id_once(settings, [a.id for a in articles])
    committed = kafka_clients.committed_offsets(settings.kafka, settings.kafka.group_id, settings.topics.raw)
    assert committed == kafka_clients.end_offsets(settings.kafka, settings.topics.raw)


@pytest.mark.integration
def test_an_unreachable_postgres_fails_the_run_at_once_saying_what_to_do(kafka_settings):
    from newsflow.broker import free_port

    settings = kafka_settings.with_overrides(
        **{"sinks.postgres_dsn": f"postgresql://newsflow:pw@127.0.0.1:{free_port()}/news"}
    )
    with pytest.raises(PipelineError, match="NEWSFLOW_SINKS_POSTGRES_DSN") as err:
        run_enrich(settings)
    assert "pw" not in str(err.value).replace("newsflow", "")
    assert not settings.enriched_dir.exists()  # nothing ran
