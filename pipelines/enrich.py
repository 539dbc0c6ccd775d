"""The enrichment pipeline: ``news.raw`` → decode and validate → topics and stance → sinks.

Every stage is a named composite transform, and the whole chain after the read is fused into one
stage (no shuffle, no multi-input ``Flatten``), so the Kafka offsets a bundle read are committed
only after every sink flushed it::

    ReadRaw              Kafka news.raw, committed offsets → end offsets at start (batch mode)
    DecodeAndValidate    bytes → Article (newsflow.article.v2); bad JSON/schema → dead letters
    Enrich               ClassifyTopicsAndStance: one RunInference (topics and stance share the
                         model and its embedding cache); model failures → dead letters
    BuildEnrichedRecord  validate newsflow.enriched.v2 (strict JSON round trip, consistent
                         labels) → EnrichedRow (record + the exact bytes written); else dead letter
    WriteEnriched        Kafka news.enriched (key = id) · Files (JSONL/Parquet) · Postgres upsert
    WriteDeadLetters     Kafka news.dlq, one writer per stage (key = topic/partition/offset)

Dead letters carry the stage (``decode``, ``enrich``, ``build``), a reason code, the error, the
original payload and its Kafka coordinates. Every run reconciles its Beam counters: records read
= enriched + dead-lettered, every enabled sink wrote every enriched record and the dead-letter
topic every dead letter; :func:`run_enrich` raises :class:`PipelineError` on any mismatch.

Each sink is idempotent by article id, so replays (a restart after a crash, ``--from-beginning``
to re-score history with a new model version) leave one record per id: Kafka is keyed by id
(consumers and log compaction keep the latest per key), PostgreSQL upserts by id, and the file
sink's rule is in :mod:`connectors.files`. Every record names the models that produced it
(``model``: encoder, topic head, stance model, taxonomy fingerprint) and its ``run_id``.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from pydantic import ValidationError

from connectors import kafka as kafka_clients
from connectors.beam_kafka import (
    STOP_STREAMING,
    KafkaRecord,
    PartitionSlice,
    ReadFromKafka,
    StartPosition,
    WriteToKafka,
    plan_partitions,
)
from connectors.files import EnrichedRow, WriteFiles
from models.handler import EnrichmentModelHandler
from newsflow.config import KafkaSettings, Settings, SinkSettings
from newsflow.errors import PipelineError
from newsflow.records import Article, DeadLetter, Enriched, SourceCoordinates, decode, encode, new_run_id
from newsflow.telemetry import instruments

log = logging.getLogger(__name__)

DEAD_LETTERS = "dead_letters"
NAMESPACE = "newsflow"
STAGES = ("decode", "enrich", "build")


class Origin(NamedTuple):
    """Where a record was read: it travels with the record as the RunInference key."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int = -1  # the raw record's Kafka timestamp (produce time): for the latency metric


def _coordinates(origin: Origin | None) -> SourceCoordinates:
    if origin is None:
        return SourceCoordinates()
    return SourceCoordinates(topic=origin.topic, partition=origin.partition, offset=origin.offset)


def _dead_letter(stage: str, reason: str, error: str, record: KafkaRecord) -> DeadLetter:
    payload = (record.value or b"")[:100_000].decode("utf-8", errors="replace")
    return DeadLetter(
        stage=stage,
        reason=reason,
        error=error[:2000],
        payload=payload,
        source=SourceCoordinates(topic=record.topic, partition=record.partition, offset=record.offset),
    )


class _DecodeFn(beam.DoFn):
    def __init__(self, keyed: bool = False) -> None:
        self.keyed = keyed
        self.decoded = Metrics.counter(NAMESPACE, "decoded")
        self.rejected = Metrics.counter(NAMESPACE, "dead_lettered.decode")

    def process(self, record: KafkaRecord) -> Iterator[Any]:
        if not record.value:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, _dead_letter("decode", "empty_message", "the message has no value", record)
            )
            return
        try:
            article = decode(Article, record.value)
        except ValidationError as exc:
            errors = exc.errors()
            json_error = any(e["type"].startswith("json") for e in errors)
            reason = "bad_json" if json_error else "schema_invalid"
            where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
            message = f"{where}: {errors[0]['msg']}" if errors else str(exc)
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, _dead_letter("decode", reason, message, record))
            return
        except Exception as exc:  # anything else a message can trigger: dead-letter it, keep going
            log.exception("decoding %s[%s]@%s failed", record.topic, record.partition, record.offset)
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, _dead_letter("decode", "decode_error", f"{type(exc).__name__}: {exc}", record)
            )
            return
        self.decoded.inc()
        origin = Origin(record.topic, record.partition, record.offset, record.timestamp_ms)
        yield (origin, article) if self.keyed else article


class DecodeAndValidate(beam.PTransform):
    """KafkaRecord → Article (main output ``articles``) or DeadLetter (``dead_letters`` output).

    With ``keyed=True`` the main output is ``(Origin, Article)``, so later stages keep the
    record's Kafka coordinates (for dead letters and the file sink's offset ranges).
    """

    def __init__(self, keyed: bool = False) -> None:
        super().__init__()
        self.keyed = keyed

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return records | "Decode" >> beam.ParDo(_DecodeFn(self.keyed)).with_outputs(
            DEAD_LETTERS, main="articles"
        )


class _FailedInferenceFn(beam.DoFn):
    def __init__(self) -> None:
        self.rejected = Metrics.counter(NAMESPACE, "dead_lettered.enrich")

    def process(self, failed: tuple[Any, Exception]) -> Iterator[DeadLetter]:
        batch, exc = failed
        items = batch if isinstance(batch, list | tuple) else [batch]
        for item in items:
            origin, article = item if isinstance(item, tuple) and len(item) == 2 else (None, item)
            self.rejected.inc()
            yield DeadLetter(
                stage="enrich",
                reason="model_error",
                error=f"{type(exc).__name__}: {exc}"[:2000],
                payload=encode(article).decode() if isinstance(article, Article) else repr(article)[:100_000],
                source=_coordinates(origin if isinstance(origin, Origin) else None),
            )


class Enrich(beam.PTransform):
    """(Origin, Article) → (Origin, Enriched) (``enriched``), model failures → ``dead_letters``.

    Topic classification and stance labelling run in one RunInference
    (``ClassifyTopicsAndStance``): one model load per worker and a shared embedding cache.
    """

    def __init__(self, handler: EnrichmentModelHandler) -> None:
        super().__init__()
        self.handler = handler

    def expand(self, articles: beam.PCollection) -> dict[str, beam.PCollection]:
        main, other = articles | "ClassifyTopicsAndStance" >> (
            RunInference(KeyedModelHandler(self.handler)).with_exception_handling()
        )
        failed = other.failed_inferences | "ModelFailuresToDeadLetters" >> beam.ParDo(_FailedInferenceFn())
        return {"enriched": main, DEAD_LETTERS: failed}


class RecordRejected(ValueError):
    """An enriched record that must not reach the sinks; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def validate_enriched(record: Enriched) -> bytes:
    """The record's JSON as written to every sink, after checking it against newsflow.enriched.v2.

    The bytes must parse back strictly (a NaN score, for one, serialises as null and fails here),
    and the labels must be consistent: at least one topic, the primary topic among them, finite
    scores. Raises :class:`RecordRejected` otherwise.
    """
    payload = encode(record)
    try:
        Enriched.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecordRejected("schema_invalid", f"{where}: {first['msg']}") from exc
    labels = [t.label for t in record.topics]
    if not labels:
        raise RecordRejected("inconsistent_labels", "the record has no topic")
    if record.primary_topic not in labels:
        raise RecordRejected(
            "inconsistent_labels", f"primary_topic {record.primary_topic!r} is not among topics {labels}"
        )
    scores = [t.score for t in record.topics] + [s.score for s in record.stances]
    scores += list(record.scores.values())
    if record.headline_stance is not None:
        scores.append(record.headline_stance.score)
    if not all(math.isfinite(x) for x in scores):
        raise RecordRejected("schema_invalid", "a score is not a finite number")
    if not record.run_id or not record.model:
        raise RecordRejected("inconsistent_labels", "the record lacks its run id or model lineage")
    return payload


class _BuildFn(beam.DoFn):
    def __init__(self) -> None:
        self.enriched = Metrics.counter(NAMESPACE, "enriched")
        self.rejected = Metrics.counter(NAMESPACE, "dead_lettered.build")

    def process(self, element: tuple[Origin, Enriched]) -> Iterator[Any]:
        origin, record = element
        try:
            payload = validate_enriched(record)
        except RecordRejected as exc:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS,
                DeadLetter(
                    stage="build",
                    reason=exc.reason,
                    error=str(exc)[:2000],
                    payload=record.model_dump_json(by_alias=True)[:100_000],
                    source=_coordinates(origin),
                ),
            )
            return
        self.enriched.inc()
        instruments.enriched(origin.timestamp_ms)
        yield EnrichedRow(origin.topic, origin.partition, origin.offset, record, payload)


class BuildEnrichedRecord(beam.PTransform):
    """(Origin, Enriched) → validated :class:`EnrichedRow` (``rows``) or ``dead_letters``."""

    def expand(self, enriched: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return enriched | "Validate" >> beam.ParDo(_BuildFn()).with_outputs(DEAD_LETTERS, main="rows")


def _kafka_pair(row: EnrichedRow) -> tuple[bytes, bytes]:
    return row.id.encode(), row.payload


def _dead_letter_pair(letter: DeadLetter) -> tuple[bytes | None, bytes]:
    source = letter.source
    Metrics.counter(NAMESPACE, f"{instruments.BEAM_DEAD_LETTER_PREFIX}{letter.stage}.{letter.reason}").inc()
    instruments.dead_letter(
        letter.stage, letter.reason, topic=source.topic, partition=source.partition, offset=source.offset
    )
    key = None
    if source.topic is not None and source.offset is not None:
        key = f"{source.topic}/{source.partition}/{source.offset}".encode()
    return key, encode(letter)


class WriteEnriched(beam.PTransform):
    """EnrichedRow → every enabled sink (Kafka, files, PostgreSQL); each flushes in finish_bundle."""

    def __init__(self, kafka: KafkaSettings, topic: str, sinks: SinkSettings, files_dir: str) -> None:
        super().__init__()
        self.kafka = kafka
        self.topic = topic
        self.sinks = sinks
        self.files_dir = files_dir

    def expand(self, rows: beam.PCollection) -> beam.pvalue.PDone:
        if self.sinks.kafka:
            (
                rows
                | "EncodeForKafka" >> beam.Map(_kafka_pair)
                | "Kafka" >> WriteToKafka(self.kafka, self.topic, "written.kafka")
            )
        if self.sinks.files:
            rows | "Files" >> WriteFiles(self.files_dir, self.sinks.files_formats)
        if self.sinks.postgres_dsn is not None:
            from connectors.postgres import WriteToPostgres

            rows | "Postgres" >> WriteToPostgres(
                self.sinks.postgres_dsn, self.sinks.postgres_table, self.sinks.postgres_batch_rows
            )
        return beam.pvalue.PDone(rows.pipeline)


class WriteDeadLetters(beam.PTransform):
    """``{stage: PCollection[DeadLetter]}`` → Kafka news.dlq, one writer per stage.

    One writer per input rather than a ``Flatten``: the FnApiRunner runs a multi-input Flatten in
    a stage of its own, after the read's bundle committed its offsets, so a crash there would lose
    dead letters.
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        super().__init__()
        self.kafka = kafka
        self.topic = topic

    def expand(self, letters: dict[str, beam.PCollection]) -> beam.pvalue.PDone:
        if not letters:
            raise ValueError("WriteDeadLetters needs at least one PCollection of dead letters")
        for stage, pcoll in letters.items():
            name = stage.capitalize()
            (
                pcoll
                | f"Encode{name}" >> beam.Map(_dead_letter_pair)
                | name >> WriteToKafka(self.kafka, self.topic, "written.dlq")
            )
        return beam.pvalue.PDone(next(iter(letters.values())).pipeline)


def enabled_sinks(sinks: SinkSettings) -> tuple[str, ...]:
    """Names of the sinks a run writes enriched records to (their ``written.<name>`` counters)."""
    names = [("kafka", sinks.kafka), ("files", sinks.files), ("postgres", sinks.postgres_dsn is not None)]
    return tuple(name for name, on in names if on)


@dataclass
class EnrichReport:
    run_id: str
    mode: str
    slices: list[PartitionSlice]
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: bool = False
    sinks: tuple[str, ...] = ()

    @property
    def planned(self) -> int:
        return sum(s.size or 0 for s in self.slices)

    @property
    def read(self) -> int:
        return self.counters.get("kafka_records_read", 0)

    @property
    def enriched(self) -> int:
        return self.counters.get("enriched", 0)

    @property
    def dead_lettered(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith("dead_lettered."))

    def dead_lettered_by_stage(self) -> dict[str, int]:
        return {
            k.removeprefix("dead_lettered."): v
            for k, v in self.counters.items()
            if k.startswith("dead_lettered.")
        }

    def written(self, sink: str) -> int:
        return self.counters.get(f"written.{sink}", 0)

    def per_partition(self) -> dict[int, int]:
        prefix = f"read.{self.slices[0].topic}." if self.slices else "read."
        return {int(k[len(prefix) :]): v for k, v in self.counters.items() if k.startswith(prefix)}

    def problems(self) -> list[str]:
        """Every way the run's counts do not add up (empty when it reconciles)."""
        found = []
        if self.read != self.enriched + self.dead_lettered:
            found.append(f"read {self.read} != enriched {self.enriched} + dead-lettered {self.dead_lettered}")
        for sink in self.sinks:
            if self.written(sink) != self.enriched:
                found.append(f"sink {sink} wrote {self.written(sink)} of {self.enriched} enriched records")
        if self.written("dlq") != self.dead_lettered:
            found.append(f"dead-letter topic got {self.written('dlq')} of {self.dead_lettered} dead letters")
        return found

    def reconciles(self) -> bool:
        return not self.problems()

    def summary(self) -> str:
        """One line: the reconciliation and what each sink wrote."""
        stages = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_lettered_by_stage().items()) if v)
        written = ", ".join(f"{s} {self.written(s)}" for s in self.sinks)
        return (
            f"read {self.read} = enriched {self.enriched} + dead-lettered {self.dead_lettered}"
            f"{f' ({stages})' if stages else ''}; written: {written or 'no enriched sink'}, "
            f"dlq {self.written('dlq')}"
        )


def build_pipeline(
    pipeline: beam.Pipeline,
    settings: Settings,
    slices: list[PartitionSlice],
    run_id: str,
    max_records_per_bundle: int = 2_000,
) -> None:
    """Add the enrichment transforms to ``pipeline`` (see the module docstring)."""
    handler = EnrichmentModelHandler(
        settings.models, settings.taxonomy_file, run_id, max_batch_size=settings.models.batch_size
    )
    records = pipeline | "ReadRaw" >> ReadFromKafka(
        settings.kafka, settings.kafka.group_id, slices, max_records_per_bundle=max_records_per_bundle
    )
    decoded = records | "DecodeAndValidate" >> DecodeAndValidate(keyed=True)
    enriched = decoded.articles | "Enrich" >> Enrich(handler)
    built = enriched["enriched"] | "BuildEnrichedRecord" >> BuildEnrichedRecord()
    built.rows | "WriteEnriched" >> WriteEnriched(
        settings.kafka, settings.topics.enriched, settings.sinks, str(settings.enriched_dir)
    )
    letters = {
        "decode": decoded[DEAD_LETTERS],
        "enrich": enriched[DEAD_LETTERS],
        "build": built[DEAD_LETTERS],
    }
    letters | "WriteDeadLetters" >> WriteDeadLetters(settings.kafka, settings.topics.dlq)


def run_enrich(
    settings: Settings,
    mode: str = "batch",
    start: StartPosition | None = None,
    beam_args: list[str] | None = None,
    run_id: str | None = None,
) -> EnrichReport:
    """Run the pipeline once.

    ``batch``: read from the committed offsets to the end offsets seen at start, then return.
    ``stream``: read without end until :data:`connectors.beam_kafka.STOP_STREAMING` is set (the CLI
    sets it on SIGINT/SIGTERM); every reader then finishes its bundle, commits and the run returns.
    Only one run per consumer group at a time (a lock under the data directory).
    """
    if mode not in ("batch", "stream"):
        raise PipelineError(f"unknown mode {mode!r}; use batch or stream")
    run_id = run_id or new_run_id()
    kafka_clients.require_broker(settings.kafka)
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    if settings.sinks.postgres_dsn is not None:  # fail fast, before the models load
        from connectors import postgres

        postgres.check(settings.sinks.postgres_dsn, settings.sinks.postgres_table)
    with group_lock(settings):
        slices = plan_partitions(
            settings.kafka,
            settings.topics.raw,
            settings.kafka.group_id,
            start or StartPosition(),
            bounded=mode == "batch",
        )
        report = EnrichReport(run_id=run_id, mode=mode, slices=slices, sinks=enabled_sinks(settings.sinks))
        instruments.enrich_planned(report.planned if mode == "batch" else 0)
        todo = slices if mode == "stream" else [s for s in slices if s.size]
        if not todo:
            report.skipped = True
            return report
        args = list(beam_args or [])
        if not any(a.startswith("--runner") for a in args):
            args.append("--runner=FnApiRunner")
        if mode == "stream":
            STOP_STREAMING.clear()
            args.append("--streaming")
        options = PipelineOptions(args)
        workers = options.view_as(DirectOptions).direct_num_workers or 1
        if workers > 1 and mode == "stream":
            raise PipelineError(
                "stream mode runs one in-process worker (Beam's FnApiRunner drops deferred work with "
                "--direct_num_workers > 1); drop that option, or run several groups' pipelines"
            )
        started = time.perf_counter()
        pipeline = beam.Pipeline(options=options)
        # Several workers: one bundle per partition (see connectors.beam_kafka on deferral).
        build_pipeline(
            pipeline,
            settings,
            todo,
            run_id,
            max_records_per_bundle=0 if workers > 1 else settings.kafka.bundle_records,
        )
        result = pipeline.run()
        result.wait_until_finish()
        report.seconds = time.perf_counter() - started
        report.counters = _counters(result)
    log.info("run %s: %s in %.1fs", run_id, report.summary(), report.seconds)
    problems = report.problems()
    if problems:
        raise PipelineError(
            f"run {run_id} does not reconcile: {'; '.join(problems)} ({report.summary()}); the offsets "
            "of what was written are committed, so look for the records in the dead-letter topic "
            f"{settings.topics.dlq} and the logs, fix the cause, then replay with --offset if needed"
        )
    return report


@contextmanager
def group_lock(settings: Settings) -> Iterator[None]:
    """Hold an exclusive lock for the consumer group, or fail at once if another run holds it."""
    folder = settings.data_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"enrich-{settings.kafka.group_id}.lock"
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PipelineError(
                f"another enrich run for group {settings.kafka.group_id} is in progress (lock {path}); "
                "wait for it, or use another NEWSFLOW_KAFKA_GROUP_ID"
            ) from exc
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _counters(result: Any) -> dict[str, int]:
    counters: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace("newsflow"))
    for counter in query["counters"]:
        name = counter.key.metric.name
        counters[name] = counters.get(name, 0) + int(counter.committed or counter.attempted or 0)
    return counters
