"""A Python-native Kafka IO for Apache Beam, built on kafka-python.

Beam's own ``ReadFromKafka`` is a Java cross-language transform (expansion service, portable
runner). This module reads topic-partitions with a splittable DoFn over ``OffsetRange``
restrictions instead:

- **Plan** (in the driver): per partition, start at the consumer group's committed offset (or the
  ``start`` policy where none is committed, or an explicit replay position) and, in bounded mode,
  stop at the end offset seen at plan time. A scheduled run therefore reads exactly what was
  present when it started.
- **Read**: each partition is one restriction (:mod:`connectors.kafka_restrictions`: no fractional
  splits, an open-ended range reports unbounded and ends on drain); records are claimed offset by
  offset, emitted with their Kafka timestamps (a monotonic watermark in streaming mode), and the
  remainder is deferred after exactly ``max_records_per_bundle`` records (bounded and unbounded)
  and, unbounded, after every poll. Deferring ends the bundle, so its sinks flush and its offsets
  commit; the next bundle resumes at the first unclaimed offset.
- **Stop**: the reader also reads the run's control partition (:mod:`connectors.kafka_control`);
  on its run's stop request it ends its restriction after the records it handed on, so the job
  finishes with every written record committed, on whatever worker or host it runs.
- **One consumer per DoFn instance, polling ahead**: the runner calls ``process`` for one partition
  after another, and each call used to poll its own partition only, so an idle partition held up
  the others for the whole poll timeout (500 ms each) before they were read. Instead the instance's
  consumer stays assigned to every partition it reads, and a poll returns records of any of them:
  an idle partition's wait ends as soon as any partition has data, records of the other partitions
  wait in memory for their own ``process`` call (at most one poll's worth per partition; a
  partition with that many waiting leaves the assignment until they are read: ``pause()`` stalls
  in kafka-python 3.0.12, see :class:`_ReadAhead`), and while some wait, the other partitions'
  polls hardly block (unbounded mode), so the bundle gets to them at once. Polls still block when
  every partition is idle: no busy loop. The records kept ahead are used only when the next
  restriction starts where they do; otherwise they are dropped and the consumer seeks.
  Measured: Beam 2.77's FnApiRunner with ``direct_num_workers > 1`` drops deferred remainders, so
  :func:`pipelines.enrich.run_enrich` sets ``max_records_per_bundle=0`` (no deferral: one bundle
  per partition) for multi-worker batch runs and refuses multi-worker stream runs.
- **Commit**: the next offset to read is committed from a *bundle finalizer*, which the runner calls
  after every fused downstream step finished the bundle, i.e. after the sinks flushed. Keep
  read → model → sinks fused (no Reshuffle/GroupByKey after the read) so that order holds. A
  commit never moves back; one that fails is retried. Its metadata holds the sink topics' end
  offsets, so the next run can count what an unfinished attempt wrote twice (:func:`count_rewrites`).
- **Write**: :class:`WriteToKafka` creates its idempotent producer in ``setup``, sends keyed records
  and confirms them in ``finish_bundle`` within the delivery timeout (+5 s). A record Kafka refuses
  for a reason of its own comes out as a :class:`Rejected` (dead-lettered by the caller); any other
  delivery error, or no confirmation in time, fails the bundle, so its offsets are not committed
  and the records are read again.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration
from apache_beam.utils.windowed_value import WindowedValue
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from connectors import kafka as kafka_clients
from connectors.kafka_control import StopSignal
from connectors.kafka_restrictions import UNBOUNDED_STOP, MonotonicWatermarks, PartitionRestrictions
from newsflow.config import KafkaSettings
from newsflow.errors import PipelineError
from newsflow.telemetry import instruments

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "newsflow"
MAX_POLL_RECORDS = 500  # per poll, and the most records kept ahead for one partition
WAITING_POLL_MS = 10  # unbounded: how long a poll waits while other partitions have records waiting
IDLE_RESUME_S = 0.05  # unbounded: the resume delay asked for after an empty poll
# a partition no process call read for this long is dropped from the assignment; long enough for a
# bundle of another partition under backlog (model work on a full bundle took up to ~125 s)
STALE_S = 300.0
REFRESH_S = 1.0  # while handing records on, look for a stop request this often
NO_PROGRESS_S = 60.0  # bounded: no record of a partition with offsets left for this long fails the bundle


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


SOURCE_HEADER = "newsflow-source"  # topic/partition/offset of the raw record a sink record came from


def source_of(key: bytes | None, headers: Any) -> tuple[str, int, int] | None:
    """The raw record a sink record came from: its ``newsflow-source`` header, else a ``t/p/o`` key."""
    text = dict(headers or ()).get(SOURCE_HEADER) or key or b""
    topic, _, rest = text.decode("utf-8", "replace").rpartition("/")
    topic, _, partition = topic.rpartition("/")
    if not (topic and partition.isdigit() and rest.isdigit()):
        return None
    return topic, int(partition), int(rest)


def count_rewrites(
    settings: KafkaSettings, topic: str, group_id: str, sink_topics: list[str]
) -> dict[str, int]:
    """Per sink topic, the records an earlier, unfinished attempt wrote past the committed offsets.

    A run reads again from the committed offsets, so it writes these records again: duplicates
    under the same key, which the at-least-once contract allows and this counts. Each commit's
    metadata holds the sink topics' end offsets at that moment (:meth:`_ReadPartitionFn.commit_offset`),
    so only what was written since the oldest of the latest commits is read. A group whose commits
    carry no such metadata (committed before this existed) counts nothing.
    """
    client = kafka_clients.consumer(settings, group_id=group_id)
    counts = dict.fromkeys(sink_topics, 0)
    try:
        committed: dict[int, int] = {}
        since: dict[str, dict[int, int]] = {}
        for tp in kafka_clients.partitions_for(client, topic):
            found = client.committed(tp, metadata=True, timeout_ms=settings.request_timeout_ms)
            if found is None:
                continue
            committed[tp.partition] = found.offset
            try:
                ends = json.loads(found.metadata or "{}").get("ends", {})
            except ValueError:
                continue
            for sink, offsets in ends.items():
                for partition, offset in offsets.items():
                    mine = since.setdefault(sink, {})
                    mine[int(partition)] = min(int(offset), mine.get(int(partition), int(offset)))
        for sink in sink_topics:
            start = since.get(sink, {})
            tps = [TopicPartition(sink, p) for p in start]
            if not tps:
                continue
            end = client.end_offsets(tps, timeout_ms=settings.request_timeout_ms)
            client.assign(tps)
            for tp in tps:
                client.seek(tp, start[tp.partition])
            deadline = time.monotonic() + 120
            while any(client.position(tp, timeout_ms=settings.request_timeout_ms) < end[tp] for tp in tps):
                if time.monotonic() > deadline:
                    log.warning("counting rewrites in %s took too long; the count is partial", sink)
                    break
                for records in client.poll(timeout_ms=500).values():
                    for record in records:
                        source = source_of(record.key, record.headers)
                        if source and source[0] == topic and source[2] >= committed.get(source[1], 1 << 62):
                            counts[sink] += 1
    finally:
        client.close(autocommit=False)
    return counts


def sink_ends_metadata(client: KafkaConsumer, topics: tuple[str, ...] | list[str], timeout_ms: int) -> str:
    """Commit metadata: the end offsets of the sink topics now (see :func:`count_rewrites`)."""
    ends: dict[str, dict[str, int]] = {}
    for topic in topics:
        parts = kafka_clients.partitions_for(client, topic)
        found = client.end_offsets(parts, timeout_ms=timeout_ms) if parts else {}
        ends[topic] = {str(p.partition): int(o) for p, o in found.items()}
    return json.dumps({"ends": ends}, separators=(",", ":")) if ends else ""


def mark_starts(
    settings: KafkaSettings, group_id: str, slices: list[PartitionSlice], sink_topics: tuple[str, ...]
) -> None:
    """Commit the planned start of each partition the group never committed, with the sink topics'
    end offsets as metadata: so a first run killed before its first commit is counted by the next
    (:func:`count_rewrites`). Partitions with a commit are left alone (a replay never moves a commit
    back)."""
    client = kafka_clients.consumer(settings, group_id=group_id)
    try:
        metadata = None
        for piece in slices:
            tp = TopicPartition(piece.topic, piece.partition)
            if client.committed(tp, timeout_ms=settings.request_timeout_ms) is not None:
                continue
            metadata = (
                metadata
                if metadata is not None
                else sink_ends_metadata(client, sink_topics, settings.request_timeout_ms)
            )
            client.commit(
                {tp: OffsetAndMetadata(piece.start, metadata, -1)}, timeout_ms=settings.request_timeout_ms
            )
    finally:
        client.close(autocommit=False)


_RESTRICTIONS = PartitionRestrictions()
_WATERMARKS = MonotonicWatermarks()


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

    def __init__(self, consumer: KafkaConsumer, stop: StopSignal | None = None) -> None:
        self.consumer = consumer
        self.stop = stop
        self.stopped = False  # the run's stop request was read
        self.ahead: dict[TopicPartition, deque[Any]] = {}
        self.resume: dict[TopicPartition, int] = {}
        self.fetch_from: dict[TopicPartition, int] = {}
        self.held: set[TopicPartition] = set()
        self.opened: dict[TopicPartition, float] = {}
        self.polled_at = 0.0
        if stop is not None:  # read along with the data, from where the run was planned
            self.fetch_from[stop.partition] = stop.from_offset

    def _assign(self) -> None:
        """Assign every opened, not held partition; seek those that (re)enter the assignment."""
        wanted = [tp for tp in self.opened if tp not in self.held]
        if self.stop is not None:
            wanted.append(self.stop.partition)
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

    def refresh(self, tp: TopicPartition) -> None:
        """Take in what arrived (without waiting) if the last poll was a while ago: a stop request."""
        if self.stop is not None and time.monotonic() - self.polled_at > REFRESH_S:
            self._poll(tp, 0)

    def _poll(self, tp: TopicPartition, timeout_ms: int) -> None:
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=MAX_POLL_RECORDS)
        self.polled_at = time.monotonic()
        hold = False
        for part, records in polled.items():
            if self.stop is not None and part == self.stop.partition:
                self.fetch_from[part] = records[-1].offset + 1
                self.stopped = self.stopped or any(self.stop.is_stop(r.key, r.value) for r in records)
                continue
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
        kafka: KafkaSettings,
        group_id: str,
        commit: bool,
        poll_timeout_ms: int,
        max_records_per_bundle: int,
        stop: StopSignal | None,
        watch_topics: tuple[str, ...] = (),
    ) -> None:
        self.kafka = kafka
        self.watch_topics = watch_topics
        self.group_id = group_id
        self.commit = commit
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records_per_bundle = max_records_per_bundle
        self.stop = stop
        self._consumer: KafkaConsumer | None = None
        self._ahead: _ReadAhead | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._pending: dict[TopicPartition, int] = {}  # commits that failed, to try again
        self._last_try = 0.0
        self.read_counter = Metrics.counter(METRICS_NAMESPACE, "kafka_records_read")

    def setup(self) -> None:
        self._consumer = kafka_clients.consumer(
            self.kafka, group_id=self.group_id, auto_offset_reset="none", max_poll_records=MAX_POLL_RECORDS
        )
        self._ahead = _ReadAhead(self._consumer, self.stop)

    def teardown(self) -> None:
        if self._consumer is not None:
            with suppress(Exception):
                self._consumer.close(autocommit=False, timeout_ms=self.kafka.request_timeout_ms)
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
        self.retry_commits()
        tp = TopicPartition(element.topic, element.partition)
        start = tracker.current_restriction().start
        bounded = tracker.current_restriction().stop != UNBOUNDED_STOP
        limit = self.max_records_per_bundle
        ahead.open(tp, start)
        next_offset = start
        emitted = 0
        idle_deadline = time.monotonic() + NO_PROGRESS_S
        try:
            while True:
                stop = tracker.current_restriction().stop  # a runner's checkpoint may have moved it
                if ahead.stopped or (bounded and next_offset >= stop):
                    # Done: a stop request (the rest stays uncommitted, for the next run), or the end.
                    tracker.try_claim(stop)
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
                size = self._batch_size(emitted, next_offset, stop if bounded else None)
                batch = ahead.take(tp, size, timeout)
                if not batch:
                    if ahead.stopped:
                        continue
                    if not bounded:
                        tracker.defer_remainder(Duration.of(IDLE_RESUME_S))
                        return
                    position = ahead.position(tp, self.kafka.request_timeout_ms)
                    if position is not None and position >= stop:
                        next_offset = stop  # the last offsets hold no record (compacted, markers)
                        continue
                    if time.monotonic() > idle_deadline:
                        raise PipelineError(
                            f"{element.topic}[{element.partition}]: no records between offsets {next_offset} "
                            f"and {stop} for {NO_PROGRESS_S:.0f}s; is the broker healthy? The bundle fails "
                            "and its offsets stay uncommitted"
                        )
                    continue
                idle_deadline = time.monotonic() + NO_PROGRESS_S
                for record in batch:
                    if ahead.stopped or not tracker.try_claim(record.offset):
                        # A stop request, past the range's end, or a runner's checkpoint: the rest is not
                        # ours; its records go back to the broker (read again where it resumes).
                        if ahead.stopped:
                            tracker.try_claim(tracker.current_restriction().stop)
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
                    ahead.refresh(tp)
                if not bounded:
                    # Streaming: one batch per bundle, so sinks flush and offsets commit promptly.
                    tracker.defer_remainder()
                    return
        finally:
            if emitted:
                self.read_counter.inc(emitted)
                Metrics.counter(METRICS_NAMESPACE, f"read.{element.topic}.{element.partition}").inc(emitted)
                Metrics.distribution(
                    METRICS_NAMESPACE, f"progress.{element.topic}.{element.partition}"
                ).update(next_offset)
            # Registered for every bundle, even one that read nothing: Prism finalizes every bundle of
            # a stage that asks for finalization, and the SDK refuses ("Bundle is not in a finalizable
            # state") one that registered no callback.
            finalizer.register(
                _Committer(self, tp, next_offset if self.commit and next_offset > start else None)
            )

    def commit_offset(self, tp: TopicPartition, offset: int | None) -> None:
        """Commit ``tp``'s next offset (and any an earlier attempt could not), never moving one back.

        A commit that fails (the broker is away) stays pending and is tried again with the next
        commit and at the start of this instance's next bundles: a partition whose last records
        were read during an outage still gets its offset committed once the broker is back.
        The commit's metadata records the end offsets of the ``watch_topics`` (the sinks' topics)
        at that moment: whatever a later, unfinished attempt writes lies past them, so the next run
        can count the records it writes again (:func:`count_rewrites`).
        """
        if offset is not None and offset > max(self._committed.get(tp, -1), self._pending.get(tp, -1)):
            self._pending[tp] = offset
        if not self._pending:
            return
        if self._consumer is None:
            self.setup()
        assert self._consumer is not None
        pending = dict(self._pending)
        self._last_try = time.monotonic()
        try:
            metadata = sink_ends_metadata(self._consumer, self.watch_topics, self.kafka.request_timeout_ms)
            self._consumer.commit(
                {t: OffsetAndMetadata(o, metadata, -1) for t, o in pending.items()},
                timeout_ms=self.kafka.request_timeout_ms,
            )
        except (KafkaError, OSError) as exc:
            # Not fatal: retried later; if the run ends first, the records are read again (at least
            # once). Failing here would fail the whole job.
            log.warning(
                "could not commit %s (kept for a retry): %s",
                {f"{t.topic}[{t.partition}]": o for t, o in pending.items()},
                exc,
            )
            Metrics.counter(METRICS_NAMESPACE, "commit_failed").inc()
            return
        for t, o in pending.items():
            self._committed[t] = max(o, self._committed.get(t, -1))
            instruments.offsets_committed(t.topic, t.partition, o)
            if self._pending.get(t) == o:
                del self._pending[t]
        log.debug("committed %s", pending)

    def retry_commits(self) -> None:
        """Try the commits that failed again, at most once a second."""
        if self._pending and time.monotonic() - self._last_try > 1.0:
            self.commit_offset(next(iter(self._pending)), None)


@beam.DoFn.unbounded_per_element()
class _StreamPartitionFn(_ReadPartitionFn):
    """The stream's reader: the same DoFn, declared unbounded so runners run it as a stream."""


class _Committer:
    """Commits one partition's next offset; called by the runner after the bundle's sinks flushed."""

    def __init__(self, fn: _ReadPartitionFn, tp: TopicPartition, offset: int | None) -> None:
        self.fn = fn
        self.tp = tp
        self.offset = offset  # None: nothing to commit

    def __call__(self) -> None:
        self.fn.commit_offset(self.tp, self.offset)


class ReadFromKafka(beam.PTransform):
    """Read the planned partition slices as :class:`KafkaRecord` elements.

    ``max_records_per_bundle`` (0 = no limit) ends a bundle after exactly that many records of a
    partition; ``poll_timeout_ms`` is the longest a poll waits when no partition has records;
    ``stop`` is the run's stop request; each commit records the end offsets of ``watch_topics``
    (see :func:`count_rewrites`).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        slices: list[PartitionSlice],
        commit: bool = True,
        poll_timeout_ms: int = 500,
        max_records_per_bundle: int = 2_000,
        stop: StopSignal | None = None,
        watch_topics: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.watch_topics = watch_topics
        if len({s.stop is None for s in slices}) > 1:
            raise ValueError("the slices of one read are all bounded or all open-ended")
        self.settings = settings
        self.group_id = group_id
        self.slices = slices
        self.commit = commit
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records_per_bundle = max_records_per_bundle
        self.stop = stop

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        unbounded = any(s.stop is None for s in self.slices)
        return (
            pbegin
            | "PartitionSlices" >> beam.Create(self.slices)
            | "ReadPartitions"
            >> beam.ParDo(
                (_StreamPartitionFn if unbounded else _ReadPartitionFn)(
                    self.settings,
                    self.group_id,
                    self.commit,
                    self.poll_timeout_ms,
                    self.max_records_per_bundle,
                    self.stop,
                    self.watch_topics,
                )
            )
        )


#: Delivery errors that are the record's own fault: it becomes a :class:`Rejected`, the bundle goes on.
RECORD_ERRORS: tuple[type[Exception], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordError,
    kafka_errors.InvalidRecordError,
    kafka_errors.InvalidTimestampError,
)


class Rejected(NamedTuple):
    """A record a Kafka writer could not deliver for a reason of its own (too large, invalid)."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    reason: str
    error: str


def _reason(exc: BaseException) -> str:
    """A dead-letter reason code for a per-record delivery error."""
    if isinstance(exc, kafka_errors.MessageSizeTooLargeError | kafka_errors.RecordListTooLargeError):
        return "too_large"
    return "rejected_by_kafka"


class _WriteFn(beam.DoFn):
    """Sends a bundle's records and confirms every delivery before the bundle ends.

    A record Kafka refuses for a reason of its own (:data:`RECORD_ERRORS`) is emitted as a
    :class:`Rejected` (the caller dead-letters it), or, with a ``fallback``, replaced by what the
    fallback makes of it (a dead-letter writer sends the dead letter without its payload); the bundle
    goes on. Any other failure, a refused fallback, or no confirmation within the flush deadline
    fails the bundle, so its offsets are not committed and it is read again. After a failed flush
    the producer is closed without waiting and a new one is made for the next bundle: a producer
    that lost its broker for longer than its delivery timeout is not trusted to recover.
    """

    def __init__(
        self, kafka: KafkaSettings, topic: str, counter: str, fallback: Callable[[Rejected], Any] | None
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.counter_name = counter
        self.fallback = fallback
        self._producer: KafkaProducer | None = None
        self._sent: list[tuple[Any, Any]] = []  # (element, future)
        self._refused: list[Rejected] = []

    def setup(self) -> None:
        self.written = Metrics.counter(METRICS_NAMESPACE, self.counter_name)
        # Connect and learn the topic's partitions now: a broker that is down fails the setup, not
        # a half-sent bundle, and send() then never waits for metadata.
        self._producer_now().partitions_for(self.topic)

    def _producer_now(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = kafka_clients.producer(self.kafka)
        return self._producer

    def start_bundle(self) -> None:
        self._sent = []
        self._refused = []

    def process(self, element: tuple[Any, ...]) -> None:
        self._send(element)

    def _send(self, element: tuple[Any, ...]) -> None:
        key, value, *rest = element
        headers = list(rest[0]) if rest else None
        try:
            future = self._producer_now().send(self.topic, key=key, value=value, headers=headers)
        except RECORD_ERRORS as exc:  # refused before sending (e.g. over the producer's size limit)
            self._refused.append(Rejected(key, value, tuple(headers or ()), _reason(exc), repr(exc)))
            return
        except kafka_errors.KafkaTimeoutError as exc:  # no metadata, or a full buffer, for max_block_ms
            self._discard_producer()
            raise PipelineError(
                f"could not hand a record for {self.topic} to Kafka ({exc}); is the broker up? The bundle "
                "fails and its offsets are not committed, so it is read again"
            ) from exc
        self._sent.append((element, future))

    def _confirm(self) -> list[Rejected]:
        """Flush, count what was delivered, return what Kafka refused; raise on any other failure."""
        sent, self._sent = self._sent, []
        refused, self._refused = self._refused, []
        if not sent:
            return refused
        deadline = self.kafka.flush_timeout_s
        try:
            self._producer_now().flush(timeout=deadline)
        except kafka_errors.KafkaTimeoutError as exc:
            self._discard_producer()
            raise PipelineError(
                f"Kafka did not confirm {sum(not f.is_done for _, f in sent)} of {len(sent)} records to "
                f"{self.topic} within {deadline:.0f}s (NEWSFLOW_KAFKA_DELIVERY_TIMEOUT_MS + 5 s); the bundle "
                "fails and its offsets are not committed, so it is read again once the broker is back"
            ) from exc
        failed = []
        for element, future in sent:
            if not future.failed():
                continue
            error = future.exception
            if isinstance(error, RECORD_ERRORS):
                key, value, *rest = element
                headers = tuple(rest[0]) if rest else ()
                refused.append(Rejected(key, value, headers, _reason(error), repr(error)))
            else:
                failed.append(error)
        if failed:
            self._discard_producer()
            raise PipelineError(
                f"Kafka did not confirm {len(failed)} of {len(sent)} records to {self.topic}: {failed[0]!r}; "
                "the bundle's offsets are not committed, so it is read again"
            )
        self.written.inc(sum(1 for _, f in sent if not f.failed()))
        return refused

    def finish_bundle(self) -> Iterator[WindowedValue]:
        refused = self._confirm()
        for rejected in refused:
            log.warning("Kafka refused a record for %s (%s): %s", self.topic, rejected.reason, rejected.error)
        if refused and self.fallback is not None:
            for rejected in refused:
                self._send(self.fallback(rejected))
            again = self._confirm()
            if again:
                raise PipelineError(
                    f"Kafka refused {len(again)} records for {self.topic} even in their reduced form "
                    f"({again[0].error}); check the topic's max.message.bytes against "
                    "NEWSFLOW_KAFKA_MAX_RECORD_BYTES"
                )
            return
        for rejected in refused:
            yield WindowedValue(rejected, MIN_TIMESTAMP, (GlobalWindow(),))

    def _discard_producer(self) -> None:
        if self._producer is not None:
            with suppress(Exception):
                self._producer.close(timeout=0)
            self._producer = None

    def teardown(self) -> None:
        if self._producer is not None:
            with suppress(Exception):
                self._producer.close(timeout=self.kafka.flush_timeout_s)
            self._producer = None


class WriteToKafka(beam.PTransform):
    """Write ``(key, value)`` or ``(key, value, headers)`` byte records to a topic.

    Delivery is confirmed before the bundle ends. The output is the :class:`Rejected` records: those
    Kafka refused for a reason of their own; the caller dead-letters them. With ``fallback``, a
    refused record is replaced by ``fallback(rejected)`` (a ``(key, value)`` pair) and sent again
    instead; if that is refused too, the bundle fails.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        counter: str | None = None,
        fallback: Callable[[Rejected], Any] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.topic = topic
        self.counter = counter or f"written.{topic}"
        self.fallback = fallback

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Produce" >> beam.ParDo(
            _WriteFn(self.settings, self.topic, self.counter, self.fallback)
        )
