"""The control topic on the real broker: one run per consumer group, and stop requests."""

import subprocess
import sys
import time

import pytest

from connectors import kafka as kafka_clients
from connectors.kafka_control import GroupLock, ensure_control_topic, request_stop, stop_signal
from newsflow.errors import PipelineError

pytestmark = pytest.mark.integration


def test_a_second_run_of_a_group_waits_then_fails_naming_the_holder(kafka_settings, unique):
    topic = kafka_settings.topics.control
    ensure_control_topic(kafka_settings.kafka, topic)
    with GroupLock(kafka_settings.kafka, topic, f"g-{unique}"):
        second = GroupLock(kafka_settings.kafka, topic, f"g-{unique}", wait_s=3)
        with pytest.raises(PipelineError, match=r"in progress \(held by newsflow@") as err, second:
            pass
        assert "NEWSFLOW_KAFKA_GROUP_ID" in str(err.value)
        with GroupLock(kafka_settings.kafka, topic, f"other-{unique}", wait_s=10):  # other groups: free
            pass
    with GroupLock(kafka_settings.kafka, topic, f"g-{unique}", wait_s=10):  # released on exit
        pass


HOLD = """
import sys, time
from connectors.kafka_control import GroupLock
from newsflow.config import KafkaSettings
with GroupLock(KafkaSettings(bootstrap=sys.argv[1]), sys.argv[2], sys.argv[3]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_the_lock_of_a_killed_holder_is_free_after_its_session_timeout(kafka_settings, unique):
    topic = kafka_settings.topics.control
    ensure_control_topic(kafka_settings.kafka, topic)
    group = f"g-{unique}"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, kafka_settings.kafka.bootstrap, topic, group], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"held"
        proc.kill()
        proc.wait(timeout=10)
        started = time.monotonic()
        with GroupLock(kafka_settings.kafka, topic, group, wait_s=40):
            waited = time.monotonic() - started
    finally:
        proc.kill()
    print(f"took over a killed holder's lock after {waited:.1f}s")


def test_a_stop_request_reaches_a_reader_of_the_control_partition(kafka_settings, unique):
    topic = kafka_settings.topics.control
    ensure_control_topic(kafka_settings.kafka, topic)
    signal = stop_signal(kafka_settings.kafka, topic, f"g-{unique}", "run-1")
    other = signal._replace(run_id="run-2")
    assert request_stop(kafka_settings.kafka, other)  # another run of the group: not ours
    assert request_stop(kafka_settings.kafka, signal)
    consumer = kafka_clients.consumer(kafka_settings.kafka)
    consumer.assign([signal.partition])
    consumer.seek(signal.partition, signal.from_offset)
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            seen += [signal.is_stop(r.key, r.value) for r in records]
    consumer.close()
    assert seen == [False, True]
