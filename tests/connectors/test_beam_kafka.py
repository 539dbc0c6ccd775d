"""The Beam Kafka IO on the real broker: bounded reads, committed offsets, commit-after-sink.

The tests taking ``beam_runner`` run on Beam's FnApiRunner and on Prism (workers in processes of
their own), so nothing they check relies on the workers sharing the test's memory.
"""

import contextlib
import json
import threading
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from connectors import kafka as kafka_clients
from connectors.beam_kafka import ReadFromKafka, StartPosition, WriteToKafka, plan_partitions
from connectors.kafka_control import ensure_control_topic, request_stop, stop_signal
from pipelines.enrich import _metrics, commit_reached
from pipelines.runners import pipeline_options

pytestmark = pytest.mark.integration


def _produce(settings, topic, n, start=0):
    producer = kafka_clients.producer(settings.kafka)
    for i in range(start, start + n):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()


@contextlib.contextmanager
def _options(settings, runner, streaming=False):
    beam_settings = settings.beam.model_copy(update={"runner": runner})
    with pipeline_options(beam_settings, [], streaming, settings.data_dir / "beam") as options:
        yield options


def _check(fail_on):
    def check(record):
        if fail_on is not None and record.value == fail_on:
            raise RuntimeError("sink failure injected by the test")
        return record.key, record.value

    return check


def _run(settings, src, dst, group, fail_on=None, runner="fnapi"):
    """A bounded copy, then, as run_enrich does, the driver-side commit of what the readers reached.

    (On Prism the job can end before its last bundle's finalization ran; on portable Flink batch no
    finalization runs at all.)
    """
    slices = plan_partitions(settings.kafka, src, group, StartPosition(), bounded=True)
    with _options(settings, runner) as options:
        pipeline = beam.Pipeline(options=options)
        (
            pipeline
            | "Read" >> ReadFromKafka(settings.kafka, group, slices, max_records_per_bundle=7)
            | "Identity" >> beam.Map(_check(fail_on))
            | "Write" >> WriteToKafka(settings.kafka, dst)
        )
        result = pipeline.run()
        result.wait_until_finish()
        _backstop(settings, group, slices, result, runner)  # metrics: while Prism still runs
    return slices


def _backstop(settings, group, slices, result, runner):
    """The driver-side commit run_enrich makes; on FnApiRunner the finalizers left it nothing to do."""
    _, progress = _metrics(result)
    by_driver = commit_reached(settings.with_overrides(**{"kafka.group_id": group}), slices, progress)
    if runner == "fnapi":
        assert by_driver == {}, f"bundle finalizers did not commit {by_driver}"


def test_bounded_read_copies_exactly_what_was_there_and_commits(kafka_settings, unique, beam_runner):
    src, dst, group = kafka_settings.topics.raw, kafka_settings.topics.enriched, f"g-{unique}"
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics, [src, dst])
    _produce(kafka_settings, src, 40)
    slices = _run(kafka_settings, src, dst, group, runner=beam_runner)
    assert len(slices) == 4 and sum(s.size for s in slices) == 40
    copied = kafka_clients.read_all(kafka_settings.kafka, dst)
    assert sorted(r.value for r in copied) == sorted(f"v{i}".encode() for i in range(40))
    assert all(r.key == b"k" + r.value[1:] for r in copied)
    committed = kafka_clients.committed_offsets(kafka_settings.kafka, group, src)
    assert committed == kafka_clients.end_offsets(kafka_settings.kafka, src)

    # A second run reads nothing; messages produced since are read by the next run.
    assert all(s.size == 0 for s in plan_partitions(kafka_settings.kafka, src, group, StartPosition(), True))
    _produce(kafka_settings, src, 5, start=40)
    _run(kafka_settings, src, dst, group, runner=beam_runner)
    assert len(kafka_clients.read_all(kafka_settings.kafka, dst)) == 45


def test_offsets_are_not_committed_when_the_sink_fails(kafka_settings, unique, beam_runner):
    src, dst, group = kafka_settings.topics.raw, kafka_settings.topics.enriched, f"g-{unique}"
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics, [src, dst])
    _produce(kafka_settings, src, 12)
    bad_partition = None
    for record in kafka_clients.read_all(kafka_settings.kafka, src):
        if record.value == b"v3":
            bad_partition = record.partition
    with pytest.raises(Exception, match="sink failure injected"):
        _run(kafka_settings, src, dst, group, fail_on=b"v3", runner=beam_runner)
    committed = kafka_clients.committed_offsets(kafka_settings.kafka, group, src)
    end = kafka_clients.end_offsets(kafka_settings.kafka, src)
    assert committed[bad_partition] is None or committed[bad_partition] < end[bad_partition]
    # The retry (a restart) delivers everything; nothing is lost.
    _run(kafka_settings, src, dst, group, runner=beam_runner)
    values = {r.value for r in kafka_clients.read_all(kafka_settings.kafka, dst)}
    assert values == {f"v{i}".encode() for i in range(12)}


def test_replay_from_beginning_and_explicit_offsets(kafka_settings, unique):
    src, group = kafka_settings.topics.raw, f"g-{unique}"
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics, [src])
    _produce(kafka_settings, src, 8)
    end = kafka_clients.end_offsets(kafka_settings.kafka, src)
    replay = plan_partitions(kafka_settings.kafka, src, group, StartPosition(from_beginning=True), True)
    assert sum(s.size for s in replay) == 8
    explicit = plan_partitions(kafka_settings.kafka, src, group, StartPosition(offsets={0: end[0]}), True)
    assert next(s for s in explicit if s.partition == 0).size == 0
    latest = plan_partitions(kafka_settings.kafka, src, group, StartPosition(policy="latest"), True)
    assert sum(s.size for s in latest) == 0


def test_partitions_are_read_in_parallel_by_several_workers(kafka_settings, unique):
    import threading

    src, dst, group = kafka_settings.topics.raw, kafka_settings.topics.enriched, f"g-{unique}"
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics, [src, dst])
    _produce(kafka_settings, src, 200)
    slices = plan_partitions(kafka_settings.kafka, src, group, StartPosition(), True)
    assert len([s for s in slices if s.size]) == 4

    def worker(record):
        return threading.current_thread().name.encode(), record.value

    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_threading"]
    )
    with beam.Pipeline(options=options) as p:
        (
            p
            | "Read" >> ReadFromKafka(kafka_settings.kafka, group, slices, max_records_per_bundle=0)
            | "Who" >> beam.Map(worker)
            | "Write" >> WriteToKafka(kafka_settings.kafka, dst)
        )
    seen = kafka_clients.read_all(kafka_settings.kafka, dst)
    assert sorted(r.value for r in seen) == sorted(f"v{i}".encode() for i in range(200))
    threads = {r.key for r in seen}
    assert len(threads) >= 2, f"all partitions were read by one worker: {threads}"
    assert kafka_clients.committed_offsets(kafka_settings.kafka, group, src) == kafka_clients.end_offsets(
        kafka_settings.kafka, src
    )


class _TagBundles(beam.DoFn):
    """Fused with the read: keys each record by its bundle, so the output shows every bundle's offsets."""

    def start_bundle(self):
        self.bundle = uuid.uuid4().hex.encode()

    def process(self, record):
        yield self.bundle, json.dumps([record.partition, record.offset]).encode()


def _bundles(settings, topic):
    """What each bundle read, per partition: [{partition: [offsets]}], in the order of their first offsets."""
    bundles: dict[bytes, dict[int, list[int]]] = {}
    for message in kafka_clients.read_all(settings.kafka, topic):
        partition, offset = json.loads(message.value)
        bundles.setdefault(message.key, {}).setdefault(partition, []).append(offset)
    return sorted(
        ({p: sorted(o) for p, o in b.items()} for b in bundles.values()),
        key=lambda b: min(min(o) for o in b.values()),
    )


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_a_bundle_holds_exactly_max_records_per_bundle_of_a_partition(
    kafka_settings, unique, mode, beam_runner
):
    """The limit holds per record, not per poll (a poll returns up to 500), with nothing lost or repeated."""
    src, dst, group = kafka_settings.topics.raw, kafka_settings.topics.enriched, f"g-{unique}"
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics, [src, dst])
    _produce(kafka_settings, src, 150)
    end = kafka_clients.end_offsets(kafka_settings.kafka, src)
    slices = plan_partitions(kafka_settings.kafka, src, group, StartPosition(), bounded=mode == "batch")
    ensure_control_topic(kafka_settings.kafka, kafka_settings.topics.control)
    stop = stop_signal(kafka_settings.kafka, kafka_settings.topics.control, group, f"run-{unique}")
    with _options(kafka_settings, beam_runner, streaming=mode == "stream") as options:
        pipeline = beam.Pipeline(options=options)
        (
            pipeline
            | "Read"
            >> ReadFromKafka(kafka_settings.kafka, group, slices, max_records_per_bundle=7, stop=stop)
            | "Bundles" >> beam.ParDo(_TagBundles())
            | "Write" >> WriteToKafka(kafka_settings.kafka, dst)
        )
        if mode == "stream":  # stop once every record was read and written
            outcome = {}  # FnApiRunner's run() itself blocks until the end

            def run():
                outcome["result"] = pipeline.run()
                outcome["result"].wait_until_finish()

            thread = threading.Thread(target=run)
            thread.start()
            deadline = time.monotonic() + 180
            while (
                len(kafka_clients.read_all(kafka_settings.kafka, dst)) < 150 and time.monotonic() < deadline
            ):
                time.sleep(0.5)
            assert request_stop(kafka_settings.kafka, stop)  # through Kafka: it reaches every worker
            thread.join(60)
            assert not thread.is_alive()
            result = outcome["result"]
        else:
            result = pipeline.run()
            result.wait_until_finish()
        _backstop(kafka_settings, group, slices, result, beam_runner)

    bundles = _bundles(kafka_settings, dst)
    for partition, last in end.items():
        read = [b[partition] for b in bundles if partition in b]
        assert sorted(o for offsets in read for o in offsets) == list(range(last))  # once each
        sizes = [len(offsets) for offsets in read]
        assert all(size <= 7 for size in sizes), sizes
        if mode == "batch":  # a backlog: every bundle but the last is full
            assert sorted(sizes, reverse=True) == [7] * (last // 7) + ([last % 7] if last % 7 else []), sizes
    assert kafka_clients.committed_offsets(kafka_settings.kafka, group, src) == end
    assert len(kafka_clients.read_all(kafka_settings.kafka, dst)) == 150


class _SlowBundles(beam.DoFn):
    """A deliberately slow stage: every bundle takes a while to finish (like a model batch)."""

    def process(self, record):
        yield record.key, record.value

    def finish_bundle(self):
        import time

        time.sleep(0.2)


def test_a_backlog_read_by_a_slow_stage_never_stalls(kafka_settings, unique):
    """Thousands of records per partition, small bundles, a slow stage: every record once, all committed.

    Records of the partitions not being read pile up ahead and those partitions leave the consumer's
    assignment for a while; with ``pause()`` instead, kafka-python 3.0.12 never fetched them again
    (the spurious "no records between offsets ... for 60s" of a healthy broker).
    """
    src, dst, group = kafka_settings.topics.raw, kafka_settings.topics.enriched, f"g-{unique}"
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics, [src, dst])
    producer = kafka_clients.producer(kafka_settings.kafka, linger_ms=50, batch_size=256_000)
    for i in range(8_000):
        producer.send(src, partition=i % 4, key=f"k{i}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()
    slices = plan_partitions(kafka_settings.kafka, src, group, StartPosition(), bounded=True)
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        (
            p
            | "Read" >> ReadFromKafka(kafka_settings.kafka, group, slices, max_records_per_bundle=200)
            | "Slow" >> beam.ParDo(_SlowBundles())
            | "Write" >> WriteToKafka(kafka_settings.kafka, dst)
        )
    copied = kafka_clients.read_all(kafka_settings.kafka, dst, timeout_s=120)
    assert sorted(r.value for r in copied) == sorted(f"v{i}".encode() for i in range(8_000))
    committed = kafka_clients.committed_offsets(kafka_settings.kafka, group, src)
    assert committed == kafka_clients.end_offsets(kafka_settings.kafka, src) == dict.fromkeys(range(4), 2_000)
