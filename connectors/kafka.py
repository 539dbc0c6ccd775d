"""Kafka clients configured once from :class:`newsflow.config.KafkaSettings`.

Every producer, consumer and admin client the project creates goes through these factories, so
security settings (SASL/SSL for managed clusters) reach all of them, and "no broker" becomes a
:class:`~newsflow.errors.KafkaUnavailable` with a message that says what to do.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaConfigurationError, KafkaError, TopicAlreadyExistsError

from newsflow.config import KafkaSettings, TopicSettings
from newsflow.errors import ConfigError, KafkaHandshakeFailed, KafkaUnavailable

log = logging.getLogger(__name__)

# kafka-python logs every connection at INFO; keep its chatter out of user-facing output.
logging.getLogger("kafka").setLevel(logging.WARNING)

NOISE_WINDOW_S = 60.0
_NUMBERS = re.compile(r"0x[0-9a-f]+|\d+(\.\d+)*|\[[^\]]*\]|<[^>]*>")


class ReconnectNoise(logging.Filter):
    """Lets through one line per kind of client warning or error per minute, with the count it stood for.

    While a broker is down, every kafka-python client logs each failed reconnect, metadata refresh,
    heartbeat and fetch: about 200 ERROR lines a minute for one enrich run. The first line of each
    kind (the message with its numbers, addresses and object reprs blanked) passes; the others of
    that minute are dropped and counted, and the next line of that kind that passes says how many
    it stands for. Attached to every ``kafka.*`` logger by :func:`quiet_reconnect_noise`.
    """

    def __init__(self, window_s: float = NOISE_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # kind -> [window start, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, record.levelno, _NUMBERS.sub("#", str(record.msg)))
        now = time.monotonic()
        with self._lock:
            state = self._seen.get(kind)
            if state is not None and now - state[0] < self.window_s:
                state[1] += 1
                return False
            dropped = int(state[1]) if state is not None else 0
            self._seen[kind] = [now, 0]
        if dropped:
            record.msg = f"{record.getMessage()} (and {dropped} more like it in the last minute)"
            record.args = ()
        return True


_NOISE = ReconnectNoise()


def quiet_reconnect_noise() -> None:
    """Attach :class:`ReconnectNoise` to every ``kafka.*`` logger (once each; new ones on the next call)."""
    for name in list(logging.Logger.manager.loggerDict):
        logger = logging.getLogger(name) if name == "kafka" or name.startswith("kafka.") else None
        if logger is not None and _NOISE not in logger.filters:
            logger.addFilter(_NOISE)


quiet_reconnect_noise()


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


def _reachable(settings: KafkaSettings, timeout_s: float = 3.0) -> bool:
    """Whether some bootstrap server accepts a TCP connection."""
    try:
        require_broker(settings, timeout_s)
    except KafkaUnavailable:
        return False
    return True


_HANDSHAKE_WORDS = ("sasl", "auth", "ssl", "handshake", "certificate", "mechanism")


class _HandshakeClues(logging.Handler):
    """Collects what kafka-python logs about a failed handshake (it retries and only says "bootstrap")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.clues: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(word in message.lower() for word in _HANDSHAKE_WORDS) and len(self.clues) < 3:
            self.clues.append(_NUMBERS.sub("#", message.split(">: ", 1)[-1])[:200])


@contextmanager
def _client_errors(settings: KafkaSettings) -> Iterator[None]:
    """Turn a client's failure to start into an error that says what to do.

    "No broker" and "a broker that refuses us" both surface from kafka-python as a bootstrap
    timeout. When a bootstrap server accepts TCP connections, the broker is there and the client's
    security settings do not match its listener (wrong password or mechanism, SASL or SSL against a
    listener of another protocol): :class:`~newsflow.errors.KafkaHandshakeFailed`, with what the
    client logged about it.
    """
    clues = _HandshakeClues()
    kafka_log = logging.getLogger("kafka")
    kafka_log.addHandler(clues)
    try:
        yield
    except KafkaConfigurationError as exc:
        raise ConfigError(f"invalid Kafka client setting: {exc}") from exc
    except KafkaError as exc:
        if "bootstrap" in str(exc).lower():
            if _reachable(settings):
                raise KafkaHandshakeFailed(
                    settings.bootstrap,
                    settings.security_protocol,
                    settings.sasl_mechanism,
                    settings.sasl_username,
                    "; ".join(dict.fromkeys(clues.clues)),
                ) from exc
            raise KafkaUnavailable(settings.bootstrap) from exc
        raise
    finally:
        kafka_log.removeHandler(clues)


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
        "delivery_timeout_ms": settings.delivery_timeout_ms,
        "max_block_ms": min(60_000, settings.delivery_timeout_ms),  # send() waits no longer than that
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


COMPACT_DELETE = "compact,delete"


def topic_configs(topics: TopicSettings) -> dict[str, dict[str, str]]:
    """The topic configs newsflow sets (every other topic and key keeps the broker's defaults).

    The enriched topic is keyed by article id and its consumers want the latest record per id:
    ``compact,delete`` keeps the latest per key (compaction) while old segments still expire
    (retention), so a replay or re-score does not grow it without bound.
    """
    return {topics.enriched: {"cleanup.policy": COMPACT_DELETE}}


def ensure_topics(settings: KafkaSettings, topics: TopicSettings, names: Iterable[str] | None = None) -> None:
    """Create the named topics (default: all newsflow topics) if they do not exist yet.

    New topics get :func:`topic_configs`; an existing topic whose configs differ is altered
    (an incremental alter of those keys only), or, when the broker refuses (no ALTER_CONFIGS
    permission on a managed cluster), a warning says how to fix it.
    """
    wanted = list(names) if names is not None else topics.all()
    configs = topic_configs(topics)
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        missing = {
            name: {
                "num_partitions": topics.partitions,
                "replication_factor": topics.replication_factor,
                "configs": configs.get(name, {}),
            }
            for name in wanted
            if name not in existing
        }
        if missing:
            with suppress(TopicAlreadyExistsError):  # created concurrently by another client: fine
                client.create_topics(missing)
            log.info("created topics %s", list(missing))
        for name in wanted:
            if name in existing and configs.get(name):
                _align_configs(client, settings, name, configs[name])
    finally:
        client.close()


def _same(key: str, have: str | None, want: str) -> bool:
    if key == "cleanup.policy":  # a list: "delete,compact" is "compact,delete"
        return have is not None and {p.strip() for p in have.split(",")} == set(want.split(","))
    return have == want


def _align_configs(
    client: KafkaAdminClient, settings: KafkaSettings, topic: str, want: dict[str, str]
) -> None:
    """Alter ``topic``'s configs that differ from ``want``; warn with the fix where that fails."""
    try:
        described = client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, list(want))], config_filter="all"
        )
        have = {k: v.get("value") for k, v in described.get("topic", {}).get(topic, {}).items()}
    except KafkaError as exc:
        log.warning("could not read the configs of topic %s to check %s: %s", topic, want, exc)
        return
    wrong = {k: v for k, v in want.items() if not _same(k, have.get(k), v)}
    if not wrong:
        return
    was = {k: have.get(k) for k in wrong}
    try:
        result = client.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, dict(wrong))], incremental=True
        )
        outcome = result.get("topic", {}).get(topic)
    except (KafkaError, ValueError) as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    if outcome == "OK":
        log.warning("topic %s had %s; set %s (newsflow's topic configs)", topic, was, wrong)
        return
    fix = ",".join(f"{k}=[{v}]" if "," in v else f"{k}={v}" for k, v in wrong.items())
    log.warning(
        "topic %s has %s, not %s, and altering it failed (%s). Consumers that keep the latest "
        "record per key rely on it; fix it with: kafka-configs.sh --bootstrap-server %s --alter "
        "--entity-type topics --entity-name %s --add-config '%s'",
        topic,
        was,
        wrong,
        outcome,
        settings.bootstrap,
        topic,
        fix,
    )


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
