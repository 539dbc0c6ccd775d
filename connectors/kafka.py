"""Kafka clients configured once from :class:`newsflow.config.KafkaSettings`.

Every producer, consumer and admin client the project creates goes through these factories, so
security settings (SASL/SSL for managed clusters) reach all of them, and "no broker" becomes a
:class:`~newsflow.errors.KafkaUnavailable` with a message that says what to do.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaConfigurationError, KafkaError, TopicAlreadyExistsError

from newsflow.config import KafkaSettings, TopicSettings
from newsflow.errors import ConfigError, KafkaUnavailable

log = logging.getLogger(__name__)

# kafka-python logs every connection at INFO; keep its chatter out of user-facing output.
logging.getLogger("kafka").setLevel(logging.WARNING)


def require_broker(settings: KafkaSettings, timeout_s: float = 3.0) -> None:
    """Fail fast, with what to do, when no bootstrap server accepts a TCP connection.

    kafka-python itself only gives up after its 30 s bootstrap timeout.
    """
    for server in settings.client_config()["bootstrap_servers"]:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except OSError:
            continue
    raise KafkaUnavailable(settings.bootstrap, "connection refused or timed out")


@contextmanager
def _client_errors(settings: KafkaSettings) -> Iterator[None]:
    try:
        yield
    except KafkaConfigurationError as exc:
        raise ConfigError(f"invalid Kafka client setting: {exc}") from exc
    except KafkaError as exc:
        if "bootstrap" in str(exc).lower():
            raise KafkaUnavailable(settings.bootstrap) from exc
        raise


def admin(settings: KafkaSettings) -> KafkaAdminClient:
    with _client_errors(settings):
        return KafkaAdminClient(**settings.client_config())


def producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """An idempotent producer (acks=all) keyed by article id; values are already-encoded bytes."""
    config: dict[str, Any] = {
        **settings.client_config(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "compression_type": "gzip",
        "max_in_flight_requests_per_connection": 5,
        "retries": 5,
    }
    config.update(overrides)
    with _client_errors(settings):
        return KafkaProducer(**config)


def consumer(settings: KafkaSettings, group_id: str | None = None, **overrides: Any) -> KafkaConsumer:
    """A consumer with auto-commit off: newsflow commits offsets itself, after the sinks flushed."""
    config: dict[str, Any] = {
        **settings.client_config(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }
    config.update(overrides)
    with _client_errors(settings):
        return KafkaConsumer(**config)


def ensure_topics(settings: KafkaSettings, topics: TopicSettings, names: Iterable[str] | None = None) -> None:
    """Create the named topics (default: all newsflow topics) if they do not exist yet."""
    wanted = list(names) if names is not None else topics.all()
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        missing = [
            NewTopic(name, topics.partitions, topics.replication_factor)
            for name in wanted
            if name not in existing
        ]
        if missing:
            with suppress(TopicAlreadyExistsError):  # created concurrently by another client: fine
                client.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
    finally:
        client.close()


def partitions_for(client: KafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = client.partitions_for_topic(topic)
    if not parts:
        return []
    return [TopicPartition(topic, p) for p in sorted(parts)]


def committed_offsets(settings: KafkaSettings, group_id: str, topic: str) -> dict[int, int | None]:
    """The consumer group's committed offset per partition of ``topic`` (None where none)."""
    client = consumer(settings, group_id=group_id)
    try:
        return {tp.partition: client.committed(tp) for tp in partitions_for(client, topic)}
    finally:
        client.close()


def end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    client = consumer(settings)
    try:
        tps = partitions_for(client, topic)
        return {tp.partition: off for tp, off in client.end_offsets(tps).items()} if tps else {}
    finally:
        client.close()


def read_all(settings: KafkaSettings, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record currently in ``topic`` (beginning to the end offsets seen now), no group."""
    import time

    client = consumer(settings, group_id=None)
    try:
        tps = partitions_for(client, topic)
        if not tps:
            return []
        client.assign(tps)
        client.seek_to_beginning(*tps)
        end = client.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(client.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise KafkaUnavailable(settings.bootstrap, f"timed out reading {topic}")
            for batch in client.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        client.close()
