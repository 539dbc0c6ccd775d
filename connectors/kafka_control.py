"""The control topic: one enrich run per consumer group, and stop requests, both through Kafka.

``NEWSFLOW_TOPICS_CONTROL`` (default ``newsflow.control``, one partition) carries what the hosts and
workers of a run must agree on, so that nothing depends on one machine's disk or memory:

- **The run lock** (:class:`GroupLock`): a run joins the consumer group ``<group>.lock``, subscribed
  to the control topic, and holds the lock while that group assigns it the topic's one partition.
  Kafka's group coordinator decides, so two hosts starting runs of one group can never both read
  everything; a holder that dies (kill -9, a lost host) leaves the group after its session timeout
  and the next run takes over. The assignor keeps the partition with the member that holds it, so a
  newcomer never takes the lock from a running holder; it waits, then fails saying who holds it.
- **Stop requests** (:class:`StopSignal`): the driver writes ``{"stop": run_id}`` under the group's
  key; every reader of the run, on whatever worker and host, reads the control partition with the
  same consumer as its data (from the end offset seen when the run was planned) and, on seeing its
  run's stop, ends its restriction after the records it already handed on: the bundle finishes,
  the sinks flush, the offsets commit, and the job ends. A Python global could not reach a worker
  in another process, and cancelling through the runner would not let the bundle commit.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NamedTuple

from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription

from connectors import kafka as kafka_clients
from newsflow.config import KafkaSettings
from newsflow.errors import PipelineError

log = logging.getLogger(__name__)

CONTROL_PARTITION = 0
SESSION_TIMEOUT_MS = 10_000  # a dead holder's lock is free after this long
_HOLDER = b"holder"


def ensure_control_topic(settings: KafkaSettings, topic: str, replication_factor: int = 1) -> None:
    """Create the control topic (one partition) if it does not exist."""
    client = kafka_clients.admin(settings)
    try:
        if topic not in set(client.list_topics()):
            with suppress(TopicAlreadyExistsError):  # created concurrently by another run
                client.create_topics([NewTopic(topic, 1, replication_factor)])
    finally:
        client.close()


# -- stop requests ---------------------------------------------------------------------------------
class StopSignal(NamedTuple):
    """Where a run's readers look for its stop request (travels with the pipeline to every worker)."""

    topic: str
    group_id: str
    run_id: str
    from_offset: int  # the control partition's end offset when the run was planned

    @property
    def partition(self) -> TopicPartition:
        return TopicPartition(self.topic, CONTROL_PARTITION)

    def is_stop(self, key: bytes | None, value: bytes | None) -> bool:
        """Whether a control record asks this run to stop."""
        if key != self.group_id.encode() or not value:
            return False
        try:
            return bool(json.loads(value).get("stop") == self.run_id)
        except (ValueError, AttributeError):
            return False


def stop_signal(settings: KafkaSettings, topic: str, group_id: str, run_id: str) -> StopSignal:
    """The stop signal of a new run: the control partition from its current end offset on."""
    end = kafka_clients.end_offsets(settings, topic).get(CONTROL_PARTITION, 0)
    return StopSignal(topic, group_id, run_id, end)


def request_stop(settings: KafkaSettings, signal: StopSignal, timeout_s: float = 10.0) -> bool:
    """Ask every reader of the run to stop; False when Kafka did not confirm it within ``timeout_s``."""
    producer = None
    try:
        producer = kafka_clients.producer(settings, max_block_ms=int(timeout_s * 1000))
        value = json.dumps({"stop": signal.run_id, "at": time.time(), "by": socket.gethostname()}).encode()
        future = producer.send(
            signal.topic, key=signal.group_id.encode(), value=value, partition=CONTROL_PARTITION
        )
        future.get(timeout=timeout_s)
        return True
    except (KafkaError, OSError, PipelineError) as exc:
        log.warning("could not write the stop request of run %s to %s: %s", signal.run_id, signal.topic, exc)
        return False
    finally:
        if producer is not None:
            producer.close(timeout=0)


# -- the run lock ----------------------------------------------------------------------------------
class _LockAssignor(AbstractPartitionAssignor):
    """Gives the control partition to the member that holds it, else to the member that asked first."""

    name = "newsflow-lock"
    version = 0

    def __init__(self) -> None:
        self.holding = False
        self.since = time.time()

    def metadata(self, topics: Any) -> ConsumerProtocolSubscription:
        user_data = _HOLDER if self.holding else json.dumps({"since": self.since}).encode()
        return ConsumerProtocolSubscription(self.version, list(topics), user_data)

    def assign(self, cluster: Any, members: Any) -> dict[str, ConsumerProtocolAssignment]:
        def rank(member: Any) -> tuple[int, float, str]:
            data = member.metadata.user_data or b""
            if data == _HOLDER:
                return (0, 0.0, member.member_id)
            try:
                since = float(json.loads(data)["since"])
            except (ValueError, KeyError, TypeError):
                since = float("inf")
            return (1, since, member.member_id)

        winner = min(members, key=rank).member_id
        out = {}
        for member in members:
            topics = sorted(member.metadata.topics)
            mine = [(t, [CONTROL_PARTITION]) for t in topics] if member.member_id == winner else []
            out[member.member_id] = ConsumerProtocolAssignment(self.version, mine, b"")
        return out

    def on_assignment(self, assignment: Any, generation: Any) -> None:
        self.holding = bool(assignment.partitions())


class GroupLock:
    """Hold the run lock of one consumer group (see the module docstring) while the block runs.

    ``wait_s``: how long to wait for a holder to go away (a killed holder's session expires after
    10 s). ``on_lost``: called (from the lock's thread) if the lock is ever lost while held, e.g.
    when this process was frozen longer than the session timeout: the run must then stop.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        group_id: str,
        wait_s: float = 25.0,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.lock_group = f"{group_id}.lock"
        self.wait_s = wait_s
        self.on_lost = on_lost
        self._assignor = _LockAssignor()
        self._consumer: Any = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def __enter__(self) -> GroupLock:
        self._consumer = kafka_clients.consumer(
            self.settings,
            group_id=self.lock_group,
            client_id=f"{self.settings.client_id}@{socket.gethostname()}",
            partition_assignment_strategy=[self._assignor],
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=60_000,
            auto_offset_reset="latest",
        )
        self._consumer.subscribe([self.topic])
        deadline = time.monotonic() + self.wait_s
        while not self._held():
            if time.monotonic() > deadline:
                holder = self._describe_holder()
                self._close()
                raise PipelineError(
                    f"another enrich run for group {self.group_id} is in progress ({holder}); wait for it, "
                    "or use another NEWSFLOW_KAFKA_GROUP_ID"
                )
            self._consumer.poll(timeout_ms=200)
        self._thread = threading.Thread(target=self._keep, name=f"lock-{self.group_id}", daemon=True)
        self._thread.start()
        log.info("holding the run lock of group %s", self.group_id)
        return self

    def _held(self) -> bool:
        return TopicPartition(self.topic, CONTROL_PARTITION) in self._consumer.assignment()

    def _keep(self) -> None:
        """Poll now and then: the group keeps a member that polls (max_poll_interval_ms)."""
        lost = False
        while not self._done.wait(1.0):
            try:
                self._consumer.poll(timeout_ms=100)
            except KafkaError as exc:
                log.warning("run lock of group %s: %s", self.group_id, exc)
                continue
            if not self._held() and not lost:
                lost = True
                log.error(
                    "lost the run lock of group %s (this process was unreachable for too long)", self.group_id
                )
                if self.on_lost is not None:
                    self.on_lost()

    def _describe_holder(self) -> str:
        try:
            client = kafka_clients.admin(self.settings)
            try:
                group = client.describe_groups([self.lock_group])[self.lock_group]
            finally:
                client.close()
            mine = self._consumer.group_metadata().member_id if self._consumer is not None else None
            members = [
                f"{m.get('client_id')} at {str(m.get('client_host', '')).lstrip('/')}"
                for m in group.get("members", [])
                if m.get("member_id") != mine
            ]
            return f"held by {', '.join(members)}" if members else "its holder is leaving"
        except Exception as exc:  # only to name the holder; the refusal stands either way
            return f"holder unknown: {type(exc).__name__}"

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False, timeout_ms=self.settings.request_timeout_ms)
            except Exception:
                log.debug("closing the lock consumer failed", exc_info=True)
            self._consumer = None

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close()  # leaving the group frees the lock at once
