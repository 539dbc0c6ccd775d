"""Faults on the enrich side (issue 11, item 4): a broker that dies under a bundle and comes back.

These tests kill and restart a broker of their own (the session's broker stays up for the others).
They assert what a user needs: a write that cannot be confirmed fails its bundle instead of hanging;
SIGTERM ends a run within 30 s even with the broker down; after the broker is back a rerun loses
nothing; and the client's reconnect noise stays a few lines a minute.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from connectors import kafka as kafka_clients
from connectors.beam_kafka import WriteToKafka
from newsflow.broker import LocalBroker, free_port
from newsflow.records import Enriched, decode, encode
from tests.pipelines.test_enrich_crash import _article, _env

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(tmp_path: Path, settings_factory):
    """Settings for a broker this test may kill (SIGKILL) and start again on the same ports and data."""
    port, controller = free_port(), free_port()
    settings = settings_factory(f"127.0.0.1:{port}").with_overrides(
        **{
            "broker.controller_port": controller,
            "kafka.delivery_timeout_ms": 5_000,
            "kafka.request_timeout_ms": 2_000,
        }
    )
    broker = LocalBroker(settings)
    broker.up()
    yield settings, broker
    broker.down()


def _kill(broker: LocalBroker) -> None:
    pid = broker.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.05)


class _KillTheBrokerFirst(beam.DoFn):
    """A stage that kills the broker while the bundle's records are on their way to the writer."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def process(self, i):
        if i == 0:
            os.kill(self.pid, signal.SIGKILL)
            time.sleep(1)
        yield f"k{i}".encode(), f"v{i}".encode()


def test_a_write_the_broker_cannot_confirm_fails_its_bundle_instead_of_hanging(own_broker):
    settings, broker = own_broker
    kafka_clients.ensure_topics(settings.kafka, settings.topics, [settings.topics.enriched])
    started = time.monotonic()
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    (
        pipeline
        | beam.Create(list(range(20)))
        | beam.ParDo(_KillTheBrokerFirst(broker.pid()))
        | WriteToKafka(settings.kafka, settings.topics.enriched)
    )
    with pytest.raises(Exception, match=r"Kafka did not confirm \d+ of 20 records") as err:
        pipeline.run().wait_until_finish()
    print(f"the bundle failed {time.monotonic() - started:.1f}s after the broker died: {err.value}"[:300])


def test_sigterm_ends_a_stream_within_30s_while_its_flush_waits_for_a_dead_broker(own_broker):
    """The hang of issue 11: a bundle in flight, the broker gone; SIGTERM still ends the run in time.
    Once the broker is back a rerun resumes from the committed offsets and loses nothing."""
    settings, broker = own_broker
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    producer = kafka_clients.producer(settings.kafka)
    for i in range(40):
        producer.send(settings.topics.raw, key=f"{i:032x}".encode(), value=encode(_article(i)))
    producer.flush()
    producer.close()
    # The default delivery timeout (120 s): the bundle's flush is still waiting when SIGTERM comes,
    # and the stop request cannot reach the broker either.
    env = _env(settings, "fnapi", NEWSFLOW_KAFKA_BUNDLE_RECORDS="5")
    cmd = [sys.executable, "-m", "newsflow", "enrich", "--mode", "stream"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    consumer = kafka_clients.consumer(settings.kafka, group_id=None)
    consumer.subscribe([settings.topics.enriched])
    try:
        seen, deadline = 0, time.monotonic() + 240
        while seen == 0 and time.monotonic() < deadline and proc.poll() is None:
            seen += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
        consumer.close()
        assert proc.poll() is None and seen, "the stream did not get going"
        _kill(broker)  # a bundle is in flight: 40 articles, 5 per bundle
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            output, _ = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 30, (took, output[-3000:])
    assert proc.returncode == 3, output[-3000:]  # gave up on the bundle: it stays uncommitted
    kafka_lines = [line for line in output.splitlines() if " kafka." in line]
    print(f"exit {proc.returncode} {took:.1f}s after SIGTERM; {len(kafka_lines)} kafka log lines in ~30 s")
    assert len(kafka_lines) < 40, "\n".join(kafka_lines[:60])  # one per kind per minute, not ~200/min

    broker.up()  # the broker is back: the next run resumes from the committed offsets
    done = subprocess.run([*cmd[:-2], "batch"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ids = {
        decode(Enriched, r.value).id for r in kafka_clients.read_all(settings.kafka, settings.topics.enriched)
    }
    assert ids == {f"{i:032x}" for i in range(40)}
    committed = kafka_clients.committed_offsets(settings.kafka, settings.kafka.group_id, settings.topics.raw)
    assert committed == kafka_clients.end_offsets(settings.kafka, settings.topics.raw)


def test_reconnect_noise_is_one_line_per_kind_per_window_with_the_count():
    from connectors.kafka import ReconnectNoise

    noise = ReconnectNoise(window_s=0.5)
    logger = logging.getLogger("newsflow.test_noise")  # not under "kafka", whose level is WARNING
    logger.setLevel(logging.INFO)
    logger.addFilter(noise)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        for n in range(200):
            logger.error(
                "Connection failed: KafkaConnectionError: 111 ECONNREFUSED to 127.0.0.1:%s", 9000 + n
            )
            logger.warning("No node available for metadata refresh - backoff/retry")
        time.sleep(0.6)
        logger.error("Connection failed: KafkaConnectionError: 111 ECONNREFUSED to 127.0.0.1:%s", 9999)
        logger.info("connected")  # below WARNING: never held back
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(noise)
    assert len(records) == 4, records
    assert records[2].endswith("(and 199 more like it in the last minute)")
    assert records[3] == "connected"
