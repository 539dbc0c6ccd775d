"""The enrichment pipeline: ``news.raw`` → decode and validate → topics and stance → sinks.

Every step is a named transform, and the whole chain after the read is fused (no shuffle), so the
Kafka offsets a bundle read are committed only after the sinks flushed it::

    ReadRaw            Kafka news.raw, committed offsets → end offsets at start (batch mode)
    DecodeAndValidate  bytes → Article (newsflow.article.v1); bad JSON/schema → dead letters
    Enrich             RunInference: topic classification and stance labelling, batched
    EncodeEnriched     Enriched → (id, JSON) for Kafka
    WriteEnriched      Kafka news.enriched (key = article id), flushed before commit
    WriteFiles         JSON Lines files under <data_dir>/enriched, renamed into place
    WriteDeadLetters   Kafka news.dlq with stage, reason code, error, payload and coordinates
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions
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
from connectors.files import WriteJsonl
from models.handler import EnrichmentModelHandler
from newsflow.config import Settings
from newsflow.errors import PipelineError
from newsflow.records import Article, DeadLetter, Enriched, SourceCoordinates, decode, encode

log = logging.getLogger(__name__)

DEAD_LETTERS = "dead_letters"


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
    def __init__(self) -> None:
        self.decoded = Metrics.counter("newsflow", "decoded")
        self.rejected = Metrics.counter("newsflow", "dead_lettered.decode")

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
        self.decoded.inc()
        yield article


class DecodeAndValidate(beam.PTransform):
    """KafkaRecord → Article (main output) or DeadLetter (``dead_letters`` output)."""

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return records | "Decode" >> beam.ParDo(_DecodeFn()).with_outputs(DEAD_LETTERS, main="articles")


class _FailedInferenceFn(beam.DoFn):
    def __init__(self) -> None:
        self.rejected = Metrics.counter("newsflow", "dead_lettered.model")

    def process(self, failed: tuple[Any, Exception]) -> Iterator[DeadLetter]:
        batch, exc = failed
        items = batch if isinstance(batch, list | tuple) else [batch]
        for article in items:
            self.rejected.inc()
            yield DeadLetter(
                stage="enrich",
                reason="model_error",
                error=f"{type(exc).__name__}: {exc}"[:2000],
                payload=encode(article).decode() if isinstance(article, Article) else repr(article)[:100_000],
                source=SourceCoordinates(),
            )


class Enrich(beam.PTransform):
    """Articles → Enriched (main) and model failures as dead letters (``dead_letters``)."""

    def __init__(self, handler: EnrichmentModelHandler) -> None:
        super().__init__()
        self.handler = handler

    def expand(self, articles: beam.PCollection) -> dict[str, beam.PCollection]:
        main, other = (
            articles | "ClassifyTopicsAndStance" >> RunInference(self.handler).with_exception_handling()
        )
        failed = other.failed_inferences | "ModelFailuresToDeadLetters" >> beam.ParDo(_FailedInferenceFn())
        counted = main | "CountEnriched" >> beam.Map(_count_enriched)
        return {"enriched": counted, DEAD_LETTERS: failed}


_ENRICHED = Metrics.counter("newsflow", "enriched")


def _count_enriched(record: Enriched) -> Enriched:
    _ENRICHED.inc()
    return record


def _keyed(record: Enriched | DeadLetter) -> tuple[bytes | None, bytes]:
    key = record.id.encode() if isinstance(record, Enriched) else None
    return key, encode(record)


@dataclass
class EnrichReport:
    run_id: str
    mode: str
    slices: list[PartitionSlice]
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: bool = False

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

    def per_partition(self) -> dict[int, int]:
        prefix = f"read.{self.slices[0].topic}." if self.slices else "read."
        return {int(k[len(prefix) :]): v for k, v in self.counters.items() if k.startswith(prefix)}

    def reconciles(self) -> bool:
        return self.read == self.enriched + self.dead_lettered


def build_pipeline(
    pipeline: beam.Pipeline, settings: Settings, slices: list[PartitionSlice], run_id: str
) -> None:
    """Add the enrichment transforms to ``pipeline`` (see the module docstring)."""
    handler = EnrichmentModelHandler(
        settings.models, settings.taxonomy_file, run_id, max_batch_size=settings.models.batch_size
    )
    records = pipeline | "ReadRaw" >> ReadFromKafka(settings.kafka, settings.kafka.group_id, slices)
    decoded = records | "DecodeAndValidate" >> DecodeAndValidate()
    enriched = decoded.articles | "Enrich" >> Enrich(handler)
    if settings.sinks.kafka:
        (
            enriched["enriched"]
            | "EncodeEnriched" >> beam.Map(_keyed)
            | "WriteEnriched" >> WriteToKafka(settings.kafka, settings.topics.enriched, "written.kafka")
        )
    if settings.sinks.files:
        enriched["enriched"] | "WriteFiles" >> WriteJsonl(settings.enriched_dir, run_id)
    (
        (decoded[DEAD_LETTERS], enriched[DEAD_LETTERS])
        | "MergeDeadLetters" >> beam.Flatten()
        | "EncodeDeadLetters" >> beam.Map(_keyed)
        | "WriteDeadLetters" >> WriteToKafka(settings.kafka, settings.topics.dlq, "written.dlq")
    )


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
    run_id = run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    kafka_clients.require_broker(settings.kafka)
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    with group_lock(settings):
        slices = plan_partitions(
            settings.kafka,
            settings.topics.raw,
            settings.kafka.group_id,
            start or StartPosition(),
            bounded=mode == "batch",
        )
        report = EnrichReport(run_id=run_id, mode=mode, slices=slices)
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
        started = time.perf_counter()
        pipeline = beam.Pipeline(options=PipelineOptions(args))
        build_pipeline(pipeline, settings, todo, run_id)
        result = pipeline.run()
        result.wait_until_finish()
        report.seconds = time.perf_counter() - started
        report.counters = _counters(result)
    if not report.reconciles():
        raise PipelineError(
            f"run {run_id} does not reconcile: read {report.read} != enriched {report.enriched} + "
            f"dead-lettered {report.dead_lettered}"
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
