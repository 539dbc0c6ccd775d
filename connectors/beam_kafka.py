"""A Python-native Kafka IO for Apache Beam, built on kafka-python.

Beam's own ``ReadFromKafka`` is a Java cross-language transform (expansion service, portable
runner). This module reads topic-partitions with a splittable DoFn over ``OffsetRange``
restrictions instead:

- **Plan** (in the driver): per partition, start at the consumer group's committed offset (or the
  ``start`` policy where none is committed, or an explicit replay position) and, in bounded mode,
  stop at the end offset seen at plan time. A scheduled run therefore reads exactly what was
  present when it started.
- **Read**: each partition is one restriction; records are claimed offset by offset, emitted with
  their Kafka timestamps (a monotonic watermark in streaming mode), and the remainder is deferred
  after exactly ``max_records_per_bundle`` records (bounded and unbounded) and, unbounded, after
  every poll. Deferring ends the bundle, so its sinks flush and its offsets commit; the next bundle
  resumes at the first unclaimed offset.
- **One consumer per DoFn instance, polling ahead**: the runner calls ``process`` for one partition
  after another, and each call used to poll its own partition only, so an idle partition held up
  the others for the whole poll timeout (500 ms each) before they were read. Instead the instance's
  consumer stays assigned to every partition it reads, and a poll returns records of any of them:
  an idle partition's wait ends as soon as any partition has data, records of the other partitions
  wait in memory for their own ``process`` call (at most one poll's worth per partition; a
  partition with that many waiting leaves the assignment until they are read), and while some
  wait, the other partitions' polls hardly block (unbounded mode), so the bundle gets to them at
  once. Polls still block when every
  partition is idle: no busy loop. The records kept ahead are used only when the next restriction
  starts where they do; otherwise they are dropped and the consumer seeks.
  Measured: Beam 2.77's FnApiRunner with ``direct_num_workers > 1`` drops deferred remainders, so
  :func:`pipelines.enrich.run_enrich` sets ``max_records_per_bundle=0`` (no deferral: one bundle
  per partition) for multi-worker batch runs and refuses multi-worker stream runs.
- **Commit**: the next offset to read is committed from a *bundle finalizer*, which the runner calls
  after every fused downstream step finished the bundle, i.e. after the sinks flushed. Keep
  read → model → sinks fused (no Reshuffle/GroupByKey after the read) so that order holds.
- **Write**: :class:`WriteToKafka` creates its idempotent producer in ``setup``, sends keyed records
  and flushes in ``finish_bundle``; any delivery error fails the bundle, so its offsets are not
  committed and the records are read again after a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import MonotonicWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from connectors import kafka as kafka_clients
from newsflow.config import KafkaSettings
from newsflow.errors import PipelineError

log = logging.getLogger(__name__)

UNBOUNDED_STOP = 2**63 - 1
METRICS_NAMESPACE = "newsflow"
MAX_POLL_RECORDS = 500  # per poll, and the most records kept ahead for one partition
WAITING_POLL_MS = 10  # unbounded: how long a poll waits while other partitions have records waiting
IDLE_RESUME_S = 0.05  # unbounded: the resume delay asked for after an empty poll
# a partition no process call read for this long is dropped from the assignment; long enough for a
# bundle of another partition under backlog (model work on a full bundle took up to ~125 s)
STALE_S = 300.0

# Set by the stream-mode driver on SIGINT/SIGTERM: readers finish their bundle and stop. The
# FnApiRunner runs its workers in this process, so a module-level event reaches them.
STOP_STREAMING = threading.Event()


class KafkaRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class PartitionSlice(NamedTuple):
    """One topic-partition and the offsets to read: [start, stop) (stop None = unbounded)."""

    topic: str
    partition: int
    start: int
    stop: int | None

    @property
    def size(self) -> int | None:
        return None if self.stop is None else max(0, self.stop - self.start)


@dataclass(frozen=True)
class StartPosition:
    """Where to start reading. Default: committed offsets, ``earliest`` where none are committed."""

    policy: str = "earliest"  # earliest | latest: where the group has no committed offset
    from_beginning: bool = False
    from_timestamp_ms: int | None = None
    offsets: dict[int, int] = field(default_factory=dict)  # explicit partition -> offset


def plan_partitions(
    settings: KafkaSettings, topic: str, group_id: str, start: StartPosition, bounded: bool
) -> list[PartitionSlice]:
    """Compute each partition's read range (see the module docstring)."""
    consumer = kafka_clients.consumer(settings, group_id=group_id)
    try:
        tps = kafka_clients.partitions_for(consumer, topic)
        if not tps:
            return []
        beginning = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        by_time: dict[TopicPartition, Any] = {}
        if start.from_timestamp_ms is not None:
            by_time = consumer.offsets_for_times(dict.fromkeys(tps, start.from_timestamp_ms))
        slices = []
        for tp in tps:
            if tp.partition in start.offsets:
                offset = start.offsets[tp.partition]
            elif start.from_beginning:
                offset = beginning[tp]
            elif start.from_timestamp_ms is not None:
                found = by_time.get(tp)
                offset = found.offset if found is not None else end[tp]
            else:
                committed = consumer.committed(tp)
                if committed is not None:
                    offset = committed
                else:
                    offset = beginning[tp] if start.policy == "earliest" else end[tp]
            offset = min(max(offset, beginning[tp]), end[tp])
            slices.append(PartitionSlice(topic, tp.partition, offset, end[tp] if bounded else None))
        return slices
    finally:
        consumer.close()


class _PartitionRestrictions(RestrictionProvider):
    def initial_restriction(self, element: PartitionSlice) -> OffsetRange:
        return OffsetRange(element.start, UNBOUNDED_STOP if element.stop is None else element.stop)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: PartitionSlice, restriction: OffsetRange) -> int:
        if restriction.stop == UNBOUNDED_STOP:
            return 1_000_000
        return int(restriction.size())

    def split(self, element: PartitionSlice, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction  # one restriction per partition; dynamic splits come from the runner


_RESTRICTIONS = _PartitionRestrictions()


class _MonotonicWatermarks(WatermarkEstimatorProvider):
    """Watermark = the largest record timestamp seen so far.

    Beam's ``MonotonicWatermarkEstimator.default_provider()`` starts from ``None`` and fails when the
    runner asks for the watermark of a bundle that saw no record (an idle stream); start from the
    minimum timestamp instead.
    """

    def initial_estimator_state(self, element: PartitionSlice, restriction: OffsetRange) -> Timestamp:
        return MIN_TIMESTAMP

    def create_watermark_estimator(self, estimator_state: Timestamp | None) -> MonotonicWatermarkEstimator:
        return MonotonicWatermarkEstimator(estimator_state if estimator_state is not None else MIN_TIMESTAMP)


_WATERMARKS = _MonotonicWatermarks()


class _ReadAhead:
    """The consumer of one DoFn instance, over every partition it reads, and the records polled ahead.

    Invariants, per partition ``tp`` being read:

    - ``ahead[tp]`` holds the records from ``resume[tp]`` up to ``fetch_from[tp]``, so a restriction
      that starts at ``resume[tp]`` takes them instead of fetching again;
    - the consumer's position of ``tp`` is ``fetch_from[tp]`` whenever ``tp`` is assigned.

    A partition with :data:`MAX_POLL_RECORDS` records waiting is *held*: taken out of the consumer's
    assignment until its own ``process`` call drains the queue below that, then assigned again and
    seeked to ``fetch_from[tp]``. That bounds the memory per partition without ``pause()``:
    kafka-python 3.0.12 never fetches a paused partition again once records it had already fetched
    were parked for it (its KAFKA-7548 port restores parked records only while no other partition's
    drained records are "in line"), which stalled backlogs until the 60 s no-progress error.
    """

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer
        self.ahead: dict[TopicPartition, deque[Any]] = {}
        self.resume: dict[TopicPartition, int] = {}
        self.fetch_from: dict[TopicPartition, int] = {}
        self.held: set[TopicPartition] = set()
        self.opened: dict[TopicPartition, float] = {}

    def _assign(self) -> None:
        """Assign every opened, not held partition; seek those that (re)enter the assignment."""
        wanted = [tp for tp in self.opened if tp not in self.held]
        before = self.consumer.assignment()
        if set(wanted) != before:
            if wanted:
                self.consumer.assign(wanted)
            else:
                self.consumer.unsubscribe()
        for tp in wanted:
            if tp not in before:
                self.consumer.seek(tp, self.fetch_from[tp])

    def open(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset``: keep the records polled ahead when they start there."""
        now = time.monotonic()
        for other, when in list(self.opened.items()):
            if other != tp and now - when > STALE_S:  # read elsewhere now (another worker) or done
                self.close(other)
        self.opened[tp] = now
        if self.resume.get(tp) != offset:
            self.ahead.pop(tp, None)
            self.held.discard(tp)
            self.resume[tp] = self.fetch_from[tp] = offset
            if tp in self.consumer.assignment():
                self.consumer.seek(tp, offset)
        self._assign()

    def close(self, tp: TopicPartition) -> None:
        """Stop fetching ``tp`` (its restriction is done) and drop what was polled ahead for it."""
        self.ahead.pop(tp, None)
        self.resume.pop(tp, None)
        self.fetch_from.pop(tp, None)
        self.opened.pop(tp, None)
        self.held.discard(tp)
        self._assign()

    def others_waiting(self, tp: TopicPartition) -> bool:
        return any(records for other, records in self.ahead.items() if other != tp)

    def position(self, tp: TopicPartition, timeout_ms: int) -> int | None:
        """The next offset the consumer fetches for ``tp``."""
        if tp in self.held:
            return self.fetch_from[tp]
        return self.consumer.position(tp, timeout_ms=timeout_ms)

    def take(self, tp: TopicPartition, max_records: int, timeout_ms: int) -> list[Any]:
        """Up to ``max_records`` of ``tp``'s next records: those polled ahead, else after one poll."""
        self.opened[tp] = time.monotonic()  # in use: not stale
        queue = self.ahead.get(tp)
        if not queue:
            self._poll(tp, timeout_ms)
            queue = self.ahead.get(tp)
            if not queue:
                return []
        records = [queue.popleft() for _ in range(min(max_records, len(queue)))]
        self.resume[tp] = records[-1].offset + 1
        if tp in self.held and len(queue) < MAX_POLL_RECORDS:
            self.held.discard(tp)
            self._assign()
        return records

    def _poll(self, tp: TopicPartition, timeout_ms: int) -> None:
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=MAX_POLL_RECORDS)
        hold = False
        for part, records in polled.items():
            if part not in self.opened or not records:
                continue  # fetched before it was closed
            waiting = self.ahead.setdefault(part, deque())
            waiting.extend(records)
            self.fetch_from[part] = records[-1].offset + 1
            if part != tp and len(waiting) >= MAX_POLL_RECORDS:
                self.held.add(part)
                hold = True
        if hold:
            self._assign()


class _ReadPartitionFn(beam.DoFn):
    """Splittable DoFn: reads one partition's restriction and commits via bundle finalizers."""

    def __init__(
        self,
        client_config: dict[str, Any],
        group_id: str,
        commit: bool,
        poll_timeout_ms: int,
        max_records_per_bundle: int,
    ) -> None:
        self.client_config = client_config
        self.group_id = group_id
        self.commit = commit
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records_per_bundle = max_records_per_bundle
        self._consumer: KafkaConsumer | None = None
        self._ahead: _ReadAhead | None = None
        self.read_counter = Metrics.counter(METRICS_NAMESPACE, "kafka_records_read")

    def setup(self) -> None:
        self._consumer = KafkaConsumer(
            **self.client_config,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="none",
            max_poll_records=MAX_POLL_RECORDS,
        )
        self._ahead = _ReadAhead(self._consumer)

    def teardown(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
            self._ahead = None

    def _batch_size(self, emitted: int, next_offset: int, stop: int | None) -> int:
        """The most records the next batch may hold: what is left of the bundle and of the range."""
        size = MAX_POLL_RECORDS
        if self.max_records_per_bundle > 0:
            size = min(size, self.max_records_per_bundle - emitted)
        if stop is not None:
            size = min(size, stop - next_offset)
        return max(1, size)

    def process(
        self,
        element: PartitionSlice,
        finalizer: Any = beam.DoFn.BundleFinalizerParam,
        tracker: Any = beam.DoFn.RestrictionParam(_RESTRICTIONS),
        watermark: Any = beam.DoFn.WatermarkEstimatorParam(_WATERMARKS),
    ) -> Iterator[Any]:
        assert self._consumer is not None and self._ahead is not None
        ahead = self._ahead
        tp = TopicPartition(element.topic, element.partition)
        restriction = tracker.current_restriction()
        bounded = restriction.stop != UNBOUNDED_STOP
        limit = self.max_records_per_bundle
        ahead.open(tp, restriction.start)
        next_offset = restriction.start
        emitted = 0
        idle_deadline = time.monotonic() + 60.0
        try:
            while True:
                if bounded and next_offset >= restriction.stop:
                    tracker.try_claim(restriction.stop)  # marks the restriction done
                    ahead.close(tp)
                    return
                if not bounded and STOP_STREAMING.is_set():
                    # Claim the end of the unbounded range: the restriction is done, nothing is deferred,
                    # and the finalizer below still commits what this bundle read.
                    tracker.try_claim(UNBOUNDED_STOP - 1)
                    ahead.close(tp)
                    return
                if 0 < limit <= emitted:
                    # Exactly max_records_per_bundle: finish this bundle (sinks flush, offsets commit);
                    # the residual starts at the first unclaimed offset.
                    tracker.defer_remainder()
                    return
                timeout = self.poll_timeout_ms
                if not bounded and ahead.others_waiting(tp):
                    timeout = min(timeout, WAITING_POLL_MS)  # let the bundle get to them
                size = self._batch_size(emitted, next_offset, restriction.stop if bounded else None)
                batch = ahead.take(tp, size, timeout)
                if not batch:
                    if not bounded:
                        tracker.defer_remainder(Duration.of(IDLE_RESUME_S))
                        return
                    position = ahead.position(tp, self.poll_timeout_ms * 10)
                    if position is not None and position >= restriction.stop:
                        next_offset = restriction.stop
                        continue
                    if time.monotonic() > idle_deadline:
                        raise PipelineError(
                            f"{element.topic}[{element.partition}]: no records between offsets {next_offset} "
                            f"and {restriction.stop} for 60s; is the broker healthy?"
                        )
                    continue
                idle_deadline = time.monotonic() + 60.0
                for record in batch:
                    if not tracker.try_claim(record.offset):
                        # Past the range's end (bounded), or the runner split it: the rest is not ours.
                        ahead.close(tp)
                        return
                    next_offset = record.offset + 1
                    emitted += 1
                    yield TimestampedValue(
                        KafkaRecord(
                            record.topic,
                            record.partition,
                            record.offset,
                            record.key,
                            record.value,
                            record.timestamp,
                        ),
                        max(record.timestamp, 0) / 1000.0,
                    )
                if not bounded:
                    # Streaming: one batch per bundle, so sinks flush and offsets commit promptly.
                    tracker.defer_remainder()
                    return
        finally:
            if emitted:
                self.read_counter.inc(emitted)
                Metrics.counter(METRICS_NAMESPACE, f"read.{element.topic}.{element.partition}").inc(emitted)
            if self.commit and next_offset > restriction.start:
                finalizer.register(_Committer(self, tp, next_offset))


class _Committer:
    """Commits one partition's next offset; called by the runner after the bundle's sinks flushed."""

    def __init__(self, fn: _ReadPartitionFn, tp: TopicPartition, offset: int) -> None:
        self.fn = fn
        self.tp = tp
        self.offset = offset

    def __call__(self) -> None:
        consumer = self.fn._consumer
        if consumer is None:
            self.fn.setup()
            consumer = self.fn._consumer
        assert consumer is not None
        consumer.commit({self.tp: OffsetAndMetadata(self.offset, "", -1)})
        log.debug("committed %s[%s] -> %s", self.tp.topic, self.tp.partition, self.offset)


class ReadFromKafka(beam.PTransform):
    """Read the planned partition slices as :class:`KafkaRecord` elements.

    ``max_records_per_bundle`` (0 = no limit) ends a bundle after exactly that many records of a
    partition; ``poll_timeout_ms`` is the longest a poll waits when no partition has records.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        slices: list[PartitionSlice],
        commit: bool = True,
        poll_timeout_ms: int = 500,
        max_records_per_bundle: int = 2_000,
    ) -> None:
        super().__init__()
        self.client_config = settings.client_config()
        self.group_id = group_id
        self.slices = slices
        self.commit = commit
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records_per_bundle = max_records_per_bundle

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "PartitionSlices" >> beam.Create(self.slices)
            | "ReadPartitions"
            >> beam.ParDo(
                _ReadPartitionFn(
                    self.client_config,
                    self.group_id,
                    self.commit,
                    self.poll_timeout_ms,
                    self.max_records_per_bundle,
                )
            )
        )


class _WriteFn(beam.DoFn):
    def __init__(self, client_config: dict[str, Any], topic: str, counter: str) -> None:
        self.client_config = client_config
        self.topic = topic
        self.counter_name = counter
        self._producer: KafkaProducer | None = None
        self._futures: list[Any] = []

    def setup(self) -> None:
        self._producer = KafkaProducer(
            **self.client_config,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            compression_type="gzip",
            retries=5,
        )
        self.written = Metrics.counter(METRICS_NAMESPACE, self.counter_name)

    def start_bundle(self) -> None:
        self._futures = []

    def process(self, element: tuple[bytes | None, bytes]) -> None:
        assert self._producer is not None
        key, value = element
        self._futures.append(self._producer.send(self.topic, key=key, value=value))

    def finish_bundle(self) -> None:
        assert self._producer is not None
        if not self._futures:
            return
        self._producer.flush()
        failed = [f for f in self._futures if f.failed()]
        if failed:
            raise PipelineError(
                f"Kafka did not confirm {len(failed)} of {len(self._futures)} records to {self.topic}: "
                f"{failed[0].exception}; the bundle's offsets are not committed"
            )
        self.written.inc(len(self._futures))
        self._futures = []

    def teardown(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None


class WriteToKafka(beam.PTransform):
    """Write ``(key, value)`` byte pairs to a topic; delivery is confirmed before the bundle ends."""

    def __init__(self, settings: KafkaSettings, topic: str, counter: str | None = None) -> None:
        super().__init__()
        self.client_config = settings.client_config()
        self.topic = topic
        self.counter = counter or f"written.{topic}"

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Produce" >> beam.ParDo(_WriteFn(self.client_config, self.topic, self.counter))
