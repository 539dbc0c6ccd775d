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

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import DirectOptions
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from connectors import kafka as kafka_clients
from connectors.beam_kafka import (
    SOURCE_HEADER,
    KafkaRecord,
    PartitionSlice,
    ReadFromKafka,
    Rejected,
    StartPosition,
    WriteToKafka,
    count_rewrites,
    mark_starts,
    plan_partitions,
    source_of,
)
from connectors.files import EnrichedRow, WriteFiles
from connectors.kafka_control import GroupLock, StopSignal, ensure_control_topic, request_stop, stop_signal
from models.handler import EnrichmentModelHandler
from models.taxonomy import load_taxonomy
from newsflow.config import KafkaSettings, Settings, SinkSettings
from newsflow.errors import ConfigError, PipelineError
from newsflow.records import (
    MAX_RECORD_BYTES,
    Article,
    DeadLetter,
    Enriched,
    RecordTooLarge,
    SourceCoordinates,
    decode,
    encode,
    fit,
    new_run_id,
)
from newsflow.telemetry import instruments
from pipelines import runners

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
    """A dead letter for a raw message (its size is cut to the limit when it is written)."""
    return DeadLetter(
        stage=stage,
        reason=reason,
        error=error,
        payload=(record.value or b"").decode("utf-8", errors="replace"),
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
                error=f"{type(exc).__name__}: {exc}",
                payload=encode(article).decode() if isinstance(article, Article) else repr(article),
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


def validate_enriched(record: Enriched, max_bytes: int = MAX_RECORD_BYTES) -> tuple[Enriched, bytes]:
    """The record as every sink gets it, and its JSON, after the size policy and the schema checks.

    The record is cut to ``max_bytes`` (:func:`newsflow.records.fit`: the article's long text, marked
    in ``truncated``), so Kafka, the files and PostgreSQL all get the same cut record. Its bytes must
    parse back strictly as newsflow.enriched.v2 (a NaN score, for one, serialises as null and fails
    here), and the labels must be consistent: at least one topic, the primary topic among them,
    finite scores. Raises :class:`RecordRejected` otherwise.
    """
    try:
        record, payload = fit(record, max_bytes)
    except RecordTooLarge as exc:
        raise RecordRejected("too_large", str(exc)) from exc
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
    return record, payload


class _BuildFn(beam.DoFn):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.enriched = Metrics.counter(NAMESPACE, "enriched")
        self.rejected = Metrics.counter(NAMESPACE, "dead_lettered.build")

    def process(self, element: tuple[Origin, Enriched]) -> Iterator[Any]:
        origin, record = element
        try:
            record, payload = validate_enriched(record, self.max_bytes)
        except RecordRejected as exc:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS,
                DeadLetter(
                    stage="build",
                    reason=exc.reason,
                    error=str(exc),
                    payload=record.model_dump_json(by_alias=True),
                    source=_coordinates(origin),
                ),
            )
            return
        self.enriched.inc()
        instruments.enriched(origin.timestamp_ms)
        yield EnrichedRow(origin.topic, origin.partition, origin.offset, record, payload)


class BuildEnrichedRecord(beam.PTransform):
    """(Origin, Enriched) → validated :class:`EnrichedRow` (``rows``) or ``dead_letters``.

    ``max_bytes`` is the size limit of a record (``NEWSFLOW_KAFKA_MAX_RECORD_BYTES``).
    """

    def __init__(self, max_bytes: int = MAX_RECORD_BYTES) -> None:
        super().__init__()
        self.max_bytes = max_bytes

    def expand(self, enriched: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return enriched | "Validate" >> beam.ParDo(_BuildFn(self.max_bytes)).with_outputs(
            DEAD_LETTERS, main="rows"
        )


def _kafka_record(row: EnrichedRow) -> tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]:
    source = f"{row.topic}/{row.partition}/{row.offset}".encode()
    return row.id.encode(), row.payload, ((SOURCE_HEADER, source),)


def _dead_letter_record(letter: DeadLetter, max_bytes: int) -> tuple[bytes | None, bytes]:
    """A dead letter's key (its source coordinates) and bytes, cut to the size limit."""
    source = letter.source
    Metrics.counter(NAMESPACE, f"{instruments.BEAM_DEAD_LETTER_PREFIX}{letter.stage}.{letter.reason}").inc()
    instruments.dead_letter(
        letter.stage, letter.reason, topic=source.topic, partition=source.partition, offset=source.offset
    )
    key = None
    if source.topic is not None and source.offset is not None:
        key = f"{source.topic}/{source.partition}/{source.offset}".encode()
    try:
        _, data = fit(letter, max_bytes)
    except RecordTooLarge as exc:  # only its coordinates are left: still a dead letter, never an error
        data = encode(_stub(letter, str(exc)))
    return key, data


def _stub(letter: DeadLetter, why: str) -> DeadLetter:
    """The dead letter without its payload, for a topic that refused it whole."""
    return letter.model_copy(
        update={
            "payload": "",
            "error": f"{letter.error[:1000]} [the payload was dropped: {why[:500]}]",
            "truncated": {**letter.truncated, "payload": len(letter.payload)},
        }
    )


def _stub_for(rejected: Rejected) -> tuple[bytes | None, bytes]:
    """The fallback of a dead-letter writer: the refused dead letter, without its payload."""
    return rejected.key, encode(
        _stub(decode(DeadLetter, rejected.value), f"Kafka refused it: {rejected.error}")
    )


class _SinkRejectedFn(beam.DoFn):
    """A record one sink refused for a reason of its own → a dead letter of stage ``sink_<name>``."""

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self.counter = Metrics.counter(NAMESPACE, f"sink_rejected.{sink}")

    def process(self, rejected: Any) -> Iterator[DeadLetter]:
        self.counter.inc()
        if isinstance(rejected, Rejected):  # the Kafka sink: bytes and the source header
            found = source_of(None, rejected.headers)
            source = (
                SourceCoordinates(topic=found[0], partition=found[1], offset=found[2])
                if found
                else SourceCoordinates()
            )
            payload, reason, error = (
                rejected.value.decode("utf-8", "replace"),
                rejected.reason,
                rejected.error,
            )
        else:  # files and PostgreSQL: a SinkRejection of an EnrichedRow
            row = rejected.row
            source = SourceCoordinates(topic=row.topic, partition=row.partition, offset=row.offset)
            payload, reason, error = row.payload.decode("utf-8", "replace"), rejected.reason, rejected.error
        yield DeadLetter(
            stage=f"sink_{self.sink}",
            reason=reason,
            error=f"{self.sink} sink: {error}",
            payload=payload,
            source=source,
        )


class WriteEnriched(beam.PTransform):
    """EnrichedRow → every enabled sink (Kafka, files, PostgreSQL); each flushes in finish_bundle.

    Returns ``{"sink_<name>": PCollection[DeadLetter]}``: the records a sink refused for a reason of
    their own (too large for the topic, a value the database rejects), one collection per sink.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, sinks: SinkSettings, files_dir: str) -> None:
        super().__init__()
        self.kafka = kafka
        self.topic = topic
        self.sinks = sinks
        self.files_dir = files_dir

    def expand(self, rows: beam.PCollection) -> dict[str, beam.PCollection]:
        refused: dict[str, beam.PCollection] = {}
        if self.sinks.kafka:
            refused["kafka"] = (
                rows
                | "EncodeForKafka" >> beam.Map(_kafka_record)
                | "Kafka" >> WriteToKafka(self.kafka, self.topic, "written.kafka")
            )
        if self.sinks.files:
            refused["files"] = rows | "Files" >> WriteFiles(self.files_dir, self.sinks.files_formats)
        if self.sinks.postgres_dsn is not None:
            from connectors.postgres import WriteToPostgres

            refused["postgres"] = rows | "Postgres" >> WriteToPostgres(
                self.sinks.postgres_dsn, self.sinks.postgres_table, self.sinks.postgres_batch_rows
            )
        return {
            f"sink_{name}": pcoll
            | f"{name.capitalize()}RefusedToDeadLetters" >> beam.ParDo(_SinkRejectedFn(name))
            for name, pcoll in refused.items()
        }


class WriteDeadLetters(beam.PTransform):
    """``{stage: PCollection[DeadLetter]}`` → Kafka news.dlq, one writer per stage.

    One writer per input rather than a ``Flatten``: the FnApiRunner runs a multi-input Flatten in
    a stage of its own, after the read's bundle committed its offsets, so a crash there would lose
    dead letters. Every dead letter is cut to the record size limit; one the topic still refuses is
    sent again without its payload (marked in ``truncated``).
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        super().__init__()
        self.kafka = kafka
        self.topic = topic

    def expand(self, letters: dict[str, beam.PCollection]) -> beam.pvalue.PDone:
        if not letters:
            raise ValueError("WriteDeadLetters needs at least one PCollection of dead letters")
        for stage, pcoll in letters.items():
            name = "".join(part.capitalize() for part in stage.split("_"))
            (
                pcoll
                | f"Encode{name}" >> beam.Map(_dead_letter_record, self.kafka.max_record_bytes)
                | name >> WriteToKafka(self.kafka, self.topic, "written.dlq", fallback=_stub_for)
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
    runner: str = "fnapi"
    stopped: bool = False  # a stop request (SIGTERM) ended the run early; the rest is read next time
    progress: dict[int, int] = field(default_factory=dict)  # partition -> next offset reached
    driver_committed: dict[int, int] = field(default_factory=dict)  # offsets the driver committed
    rewrites: dict[str, int] = field(default_factory=dict)  # topic -> records written again (duplicates)

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
        """Records a stage replaced by a dead letter (decode, enrich, build)."""
        return sum(v for k, v in self.counters.items() if k.startswith("dead_lettered."))

    def refused(self, sink: str) -> int:
        """Enriched records ``sink`` refused for a reason of their own (each is a dead letter too)."""
        return self.counters.get(f"sink_rejected.{sink}", 0)

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
            if self.written(sink) + self.refused(sink) != self.enriched:
                found.append(
                    f"sink {sink} wrote {self.written(sink)} and refused {self.refused(sink)} of "
                    f"{self.enriched} enriched records"
                )
        letters = self.dead_lettered + sum(self.refused(sink) for sink in self.sinks)
        if self.written("dlq") != letters:
            found.append(f"dead-letter topic got {self.written('dlq')} of {letters} dead letters")
        return found

    def reconciles(self) -> bool:
        return not self.problems()

    def summary(self) -> str:
        """One line: the reconciliation and what each sink wrote."""
        stages = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_lettered_by_stage().items()) if v)
        rewritten = ", ".join(f"{topic} {n}" for topic, n in self.rewrites.items() if n)
        written = ", ".join(
            f"{s} {self.written(s)}"
            + (f" (+{self.refused(s)} refused, dead-lettered)" if self.refused(s) else "")
            for s in self.sinks
        )
        return (
            f"read {self.read} = enriched {self.enriched} + dead-lettered {self.dead_lettered}"
            f"{f' ({stages})' if stages else ''}; written: {written or 'no enriched sink'}, "
            f"dlq {self.written('dlq')}{'; stopped early on request' if self.stopped else ''}"
            f"{f'; rewritten after an unfinished attempt: {rewritten}' if rewritten else ''}"
        )


def build_pipeline(
    pipeline: beam.Pipeline,
    settings: Settings,
    slices: list[PartitionSlice],
    run_id: str,
    max_records_per_bundle: int = 2_000,
    stop: StopSignal | None = None,
) -> None:
    """Add the enrichment transforms to ``pipeline`` (see the module docstring).

    The taxonomy is parsed here, in the driver, and travels with the pipeline: a worker on another
    host never reads the driver's files.
    """
    handler = EnrichmentModelHandler(
        settings.models,
        load_taxonomy(settings.taxonomy_file),
        run_id,
        max_batch_size=settings.models.batch_size,
    )
    records = pipeline | "ReadRaw" >> ReadFromKafka(
        settings.kafka,
        settings.kafka.group_id,
        slices,
        max_records_per_bundle=max_records_per_bundle,
        stop=stop,
        watch_topics=_sink_topics(settings),
    )
    decoded = records | "DecodeAndValidate" >> DecodeAndValidate(keyed=True)
    enriched = decoded.articles | "Enrich" >> Enrich(handler)
    built = enriched["enriched"] | "BuildEnrichedRecord" >> BuildEnrichedRecord(
        settings.kafka.max_record_bytes
    )
    refused = built.rows | "WriteEnriched" >> WriteEnriched(
        settings.kafka, settings.topics.enriched, settings.sinks, str(settings.enriched_dir)
    )
    letters = {
        "decode": decoded[DEAD_LETTERS],
        "enrich": enriched[DEAD_LETTERS],
        "build": built[DEAD_LETTERS],
        **refused,
    }
    letters | "WriteDeadLetters" >> WriteDeadLetters(settings.kafka, settings.topics.dlq)


def _sink_topics(settings: Settings) -> tuple[str, ...]:
    """The topics a run writes to (the enriched topic when its sink is on, and the dead letters)."""
    return ((settings.topics.enriched,) if settings.sinks.kafka else ()) + (settings.topics.dlq,)


class RunControl:
    """Stops a running enrich run, from another thread or a signal handler, without blocking.

    :meth:`request_stop` writes the run's stop request to the control topic
    (:mod:`connectors.kafka_control`), which every reader on every worker sees: each ends its
    restriction after the records it handed on, the bundles finish, the sinks flush, the offsets
    commit and the run returns. If Kafka does not take the request (the broker is down), the job is
    cancelled through the runner instead; nothing more could be committed then anyway.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kafka: KafkaSettings | None = None
        self._signal: StopSignal | None = None
        self._result: Any = None
        self.requested = threading.Event()
        self.delivered = threading.Event()

    def attach(self, kafka: KafkaSettings, signal: StopSignal) -> None:
        """Called by :func:`run_enrich` once the run's stop signal exists."""
        with self._lock:
            self._kafka, self._signal = kafka, signal
        if self.requested.is_set():
            self._send()

    def attach_result(self, result: Any) -> None:
        with self._lock:
            self._result = result

    def request_stop(self) -> None:
        """Ask the run to stop after its current bundles (idempotent, returns at once)."""
        if self.requested.is_set():
            return
        self.requested.set()
        threading.Thread(target=self._send, name="request-stop", daemon=True).start()

    def _send(self) -> None:
        with self._lock:
            kafka, signal = self._kafka, self._signal
        if kafka is None or signal is None or self.delivered.is_set():
            return  # not started yet: run_enrich sends it on attach, or does not start
        if request_stop(kafka, signal):
            self.delivered.set()
            return
        with self._lock:
            result = self._result
        if result is not None:
            log.warning("the stop request did not reach Kafka; cancelling the job through the runner")
            with suppress(Exception):
                result.cancel()


def run_enrich(
    settings: Settings,
    mode: str = "batch",
    start: StartPosition | None = None,
    beam_args: list[str] | None = None,
    run_id: str | None = None,
    control: RunControl | None = None,
) -> EnrichReport:
    """Run the pipeline once on the configured runner (``NEWSFLOW_BEAM_RUNNER``).

    ``batch``: read from the committed offsets to the end offsets seen at start, then return; after
    the run reconciles, the driver commits each partition's offset up to where it was read, for
    runners that do not finalize bundles (portable Flink batch, Spark); never past what every sink
    wrote, never backwards. ``stream``: read without end until ``control.request_stop()`` (the CLI
    calls it on SIGINT/SIGTERM); every reader then finishes its bundle, commits, and the run returns.
    Either mode stops early on a stop request, with the offsets of what was written committed.
    One run per consumer group at a time, across hosts (:class:`connectors.kafka_control.GroupLock`).
    """
    if mode not in ("batch", "stream"):
        raise PipelineError(f"unknown mode {mode!r}; use batch or stream")
    control = control or RunControl()
    run_id = run_id or new_run_id()
    runner = settings.beam.runner
    if runner in runners.MULTI_HOST and settings.sinks.files:
        raise ConfigError(
            f"the file sink writes to one host's disk ({settings.enriched_dir}) and the {runner} runner may "
            "run workers on other hosts; disable it (NEWSFLOW_SINKS_FILES=false) and read from Kafka or "
            "PostgreSQL, which are multi-host safe (docs/SCALING.md)"
        )
    kafka_clients.require_broker(settings.kafka)
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    ensure_control_topic(settings.kafka, settings.topics.control, settings.topics.replication_factor)
    if settings.sinks.postgres_dsn is not None:  # fail fast, before the models load
        from connectors import postgres

        postgres.check(settings.sinks.postgres_dsn, settings.sinks.postgres_table)
    group = settings.kafka.group_id
    lock = GroupLock(
        settings.kafka,
        settings.topics.control,
        group,
        wait_s=settings.kafka.lock_wait_s,
        on_lost=control.request_stop,
    )
    with lock:
        slices = plan_partitions(
            settings.kafka, settings.topics.raw, group, start or StartPosition(), bounded=mode == "batch"
        )
        report = EnrichReport(
            run_id=run_id, mode=mode, slices=slices, sinks=enabled_sinks(settings.sinks), runner=runner
        )
        instruments.enrich_planned(report.planned if mode == "batch" else 0)
        todo = slices if mode == "stream" else [s for s in slices if s.size]
        if todo:
            report.rewrites = count_rewrites(
                settings.kafka, settings.topics.raw, group, list(_sink_topics(settings))
            )
            mark_starts(settings.kafka, group, todo, _sink_topics(settings))
            if any(report.rewrites.values()):
                log.warning(
                    "an earlier, unfinished attempt wrote %s past the committed offsets; they are written "
                    "again (duplicates under the same key, see docs/SINKS.md)",
                    report.rewrites,
                )
        if not todo or control.requested.is_set():
            report.skipped = not todo
            report.stopped = control.requested.is_set()
            return report
        signal = stop_signal(settings.kafka, settings.topics.control, group, run_id)
        with runners.pipeline_options(
            settings.beam, beam_args, mode == "stream", settings.data_dir / "beam"
        ) as options:
            workers = (options.view_as(DirectOptions).direct_num_workers or 1) if runner == "fnapi" else 1
            if workers > 1 and mode == "stream":
                raise PipelineError(
                    "stream mode runs one in-process worker on the fnapi runner (Beam's FnApiRunner drops "
                    "deferred work with --direct_num_workers > 1); drop that option, or use --runner prism"
                )
            started = time.perf_counter()
            pipeline = beam.Pipeline(options=options)
            # Several FnApiRunner workers: one bundle per partition (see connectors.beam_kafka on deferral).
            build_pipeline(
                pipeline,
                settings,
                todo,
                run_id,
                max_records_per_bundle=0 if workers > 1 else settings.kafka.bundle_records,
                stop=signal,
            )
            control.attach(settings.kafka, signal)
            result = pipeline.run()
            control.attach_result(result)
            state = result.wait_until_finish()
            report.seconds = time.perf_counter() - started
            report.counters, report.progress = _metrics(result)
        report.stopped = control.requested.is_set()
        if str(state).endswith(("CANCELLED", "FAILED")):
            raise PipelineError(
                f"run {run_id} ended {state} on the {runner} runner ({report.summary()}); the offsets of the "
                "bundles that finished are committed, the rest is read again by the next run"
            )
        problems = report.problems()
        if problems:
            raise PipelineError(
                f"run {run_id} does not reconcile: {'; '.join(problems)} ({report.summary()}); the offsets "
                "of what was written are committed, so look for the records in the dead-letter topic "
                f"{settings.topics.dlq} and the logs, fix the cause, then replay with --offset if needed"
            )
        # Both modes: a runner may end the job before the last bundle's finalization ran (Prism can),
        # and some never finalize (portable Flink batch, Spark).
        report.driver_committed = commit_reached(settings, todo, report.progress)
    log.info("run %s: %s in %.1fs", run_id, report.summary(), report.seconds)
    return report


def commit_reached(
    settings: Settings, slices: list[PartitionSlice], progress: dict[int, int]
) -> dict[int, int]:
    """After a run reconciled: commit each partition's offset up to where it was read.

    ``progress`` is each partition's next offset reached (the readers' ``progress`` metric), capped
    at the planned stop. Every record read was written by every sink (the counts reconcile), so this
    never commits past what the sinks hold. A runner with bundle finalization committed these
    already and nothing changes; one without (portable Flink batch, Spark), or one that ended the
    job before the last bundle's finalization ran (Prism can), gets them committed here. An offset
    is only ever moved forward. Returns the offsets this call committed.
    """
    consumer = kafka_clients.consumer(settings.kafka, group_id=settings.kafka.group_id)
    done: dict[int, int] = {}
    try:
        for piece in slices:
            reached = progress.get(piece.partition, piece.start)
            if piece.stop is not None:
                reached = min(reached, piece.stop)
            if reached <= piece.start:
                continue
            tp = TopicPartition(piece.topic, piece.partition)
            committed = consumer.committed(tp, timeout_ms=settings.kafka.request_timeout_ms)
            if committed is None or committed < reached:
                consumer.commit(
                    {tp: OffsetAndMetadata(reached, "", -1)}, timeout_ms=settings.kafka.request_timeout_ms
                )
                done[piece.partition] = reached
    finally:
        consumer.close(autocommit=False)
    if done:
        log.info("committed from the driver (no bundle finalization on this runner): %s", done)
    return done


def _metrics(result: Any) -> tuple[dict[str, int], dict[int, int]]:
    """The run's counters, and each partition's next offset reached (the ``progress.*`` distributions)."""
    counters: dict[str, int] = {}
    progress: dict[int, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for counter in query["counters"]:
        name = counter.key.metric.name
        counters[name] = counters.get(name, 0) + int(counter.committed or counter.attempted or 0)
    for dist in query["distributions"]:
        name = dist.key.metric.name
        if not name.startswith("progress."):
            continue
        value = dist.committed if dist.committed is not None and dist.committed.count else dist.attempted
        if value is not None and value.count:
            partition = int(name.rsplit(".", 1)[1])
            progress[partition] = max(progress.get(partition, 0), int(value.max))
    return counters, progress
