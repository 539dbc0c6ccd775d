"""Getting records to Kafka exactly once: sending them, and, after a crash, finding which arrived.

**Sending** (:class:`Sender`): every record is cut to the size limit first
(:func:`newsflow.records.fit`; one still too large becomes a ``record_too_large`` dead letter),
noted in the state store's ``pending`` table, then produced without waiting (acks=all, idempotent,
key = article id); the caller reads each record's confirmation off its future. A record Kafka
refuses for itself (too large for the topic, invalid) is replaced by a ``kafka_rejected`` dead
letter; one the broker does not confirm in time fails its feed, which is retried.

**Recovery** (:func:`recover`): ingest saves a feed's state (the ids it emitted) only after Kafka
confirmed every record. A process killed in between (kill -9, power cut, OOM) used to re-send
everything it had sent but not saved: the same ids again. Now every record is noted in ``pending``
before it is sent, together with the end offsets of the topics at the start of the cycle
(``pending_marks``). Before the next cycle sends anything, :func:`recover` reads the topics from
those offsets to their end and, for every pending record it finds there (same key, same content
hash), marks it emitted; the others never arrived and are simply forgotten, so the next poll sends
them once. Either way nothing is produced twice, and nothing is lost.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from kafka import KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (
    CorruptRecordException,
    InvalidRecordError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from connectors import kafka as kafka_clients
from connectors.rss.state import Emitted, StateStore
from newsflow.config import Settings
from newsflow.errors import KafkaUnavailable
from newsflow.records import Article, DeadLetter, FeedHealth, RecordTooLarge, SourceCoordinates, encode, fit
from newsflow.telemetry import instruments

log = logging.getLogger(__name__)

TOPIC_OVERHEAD = 1024  # a record batch's header, the key and headers, beside the record's value
REFUSED_PAYLOAD_BYTES = 100_000  # a dead letter for a record Kafka refused keeps this much of it
# Kafka errors that are about one record, not the broker: that record is dead-lettered.
RECORD_ERRORS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    CorruptRecordException,
)


@dataclass
class Out:
    """One record to produce, and what the state store notes once Kafka confirmed it."""

    topic: str
    key: bytes | None
    value: bytes
    emitted: Emitted
    future: Any = None  # the producer's future once sent
    cut: bool = False  # an article cut to the record size limit
    payload: str = ""  # for a dead letter, if Kafka refuses this record itself

    @property
    def confirmed(self) -> bool:
        return bool(self.future.is_done and not self.future.failed())


class _Refused:
    """A send() that raised: a done, failed future."""

    is_done = True

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc

    def failed(self) -> bool:
        return True


def record_limit(settings: Settings) -> int:
    """NEWSFLOW_KAFKA_MAX_RECORD_BYTES, lowered to what the raw and dead-letter topics accept.

    A record the broker refuses for its size is worse than one cut before sending: the producer
    splits and retries the whole batch around it, innocent records included.
    """
    limit = settings.kafka.max_record_bytes
    topics = [settings.topics.raw, settings.topics.dlq]
    try:
        client = kafka_clients.admin(settings.kafka)
        try:
            described = client.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t, ["max.message.bytes"]) for t in topics]
            )
        finally:
            client.close()
        for topic in topics:
            value = described.get("topic", {}).get(topic, {}).get("max.message.bytes", {}).get("value")
            if value and str(value).isdigit() and int(value) - TOPIC_OVERHEAD < limit:
                log.warning(
                    "topic %s accepts records of at most %s bytes, less than "
                    "NEWSFLOW_KAFKA_MAX_RECORD_BYTES (%d): records are cut to fit the topic",
                    topic,
                    value,
                    limit,
                )
                limit = int(value) - TOPIC_OVERHEAD
    except Exception as exc:  # the setting stands; a refused record is still dead-lettered
        log.warning("could not read the topics' max.message.bytes: %s", exc)
    return max(limit, 10_000)


class Sender:
    """Produces ingest's records and feed-health records; see the module docstring.

    Without a ``producer`` it checks the broker, creates the topics and makes its own (closed by
    :meth:`close`), with the record limit lowered to what the topics accept.
    """

    def __init__(self, settings: Settings, state: StateStore, producer: KafkaProducer | None = None) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.state = state
        self._own_producer = producer is None
        if producer is None:
            kafka_clients.require_broker(settings.kafka)
            kafka_clients.ensure_topics(settings.kafka, settings.topics)
        self.record_limit = record_limit(settings) if producer is None else settings.kafka.max_record_bytes
        # The cycle does not wait per feed, so larger, later batches cost nothing in latency and
        # save a third of the producer's CPU (measured: 20k articles, gzip). A batch must fit the
        # topic as a whole: the producer splits a refused batch and retries, and kafka-python's
        # split never confirms (measured), so batches stay under the record limit.
        self.producer = producer or kafka_clients.producer(
            settings.kafka, linger_ms=20, batch_size=min(256 * 1024, self.record_limit)
        )
        self._marked = False

    def close(self) -> None:
        if self._own_producer:
            self.producer.close()

    def new_cycle(self) -> None:
        """Scan marks for crash recovery are stored again before the next first send."""
        self._marked = False

    def article(self, feed_url: str, article: Article, item_hash: str) -> Out:
        """The article's record, cut to the size limit; a dead letter if it cannot be cut enough."""
        emitted = Emitted(article.id, article.content_hash, item_hash, self.topics.raw)
        try:
            cut, value = fit(article, self.record_limit)
        except RecordTooLarge as exc:
            log.warning("article %s from %s is too large even cut: %s", article.id, feed_url, exc)
            instruments.dead_letter("ingest", "record_too_large", feed=feed_url)
            letter = DeadLetter(
                stage="ingest",
                reason="record_too_large",
                error=str(exc),
                payload=encode(article).decode("utf-8", "replace"),
                source=SourceCoordinates(feed_url=feed_url),
            )
            return Out(
                self.topics.dlq,
                article.id.encode(),
                self._fit(letter),
                replace(emitted, topic=self.topics.dlq),
            )
        if cut.truncated:
            log.info(
                "article %s from %s cut to fit the record size limit: %s", article.id, feed_url, cut.truncated
            )
        return Out(self.topics.raw, article.id.encode(), value, emitted, cut=bool(cut.truncated))

    def dead_letter(self, feed_url: str, key: str, reason: str, error: str, payload: str) -> Out:
        """A dead letter for an item ingest rejected (key ``dlq:...``: one per item, not per poll)."""
        letter = DeadLetter(
            stage="ingest",
            reason=reason,
            error=error,
            payload=payload,
            source=SourceCoordinates(feed_url=feed_url),
        )
        instruments.dead_letter("ingest", reason, feed=feed_url)
        return Out(
            self.topics.dlq, key.encode(), self._fit(letter), Emitted(key, "rejected", None, self.topics.dlq)
        )

    def send(self, feed_url: str, outs: list[Out]) -> None:
        """Note the records as pending, then produce them (not waiting for Kafka)."""
        if not outs:
            return
        if not self._marked:  # before the cycle's first send: where crash recovery will scan from
            self.state.set_marks(end_offsets(self.settings, [self.topics.raw, self.topics.dlq]))
            self._marked = True
        self.state.intend(feed_url, [o.emitted for o in outs])
        for out in outs:
            out.future = self._produce(out)

    def replace_refused(self, feed_url: str, outs: list[Out]) -> bool:
        """Replace records Kafka refused for themselves by dead letters; True if any was sent now."""
        replaced = False
        for out in outs:
            future = out.future
            if not (future.is_done and future.failed()) or out.emitted.topic == self.topics.dlq:
                continue
            if not isinstance(future.exception, (*RECORD_ERRORS, TypeError, ValueError)):
                continue
            letter = DeadLetter(
                stage="ingest",
                reason="kafka_rejected",
                error=f"Kafka refused the record: {type(future.exception).__name__}: {future.exception}",
                payload=out.payload or out.value.decode("utf-8", "replace"),
                source=SourceCoordinates(feed_url=feed_url),
            )
            out.topic = self.topics.dlq
            out.emitted = replace(out.emitted, topic=out.topic)
            out.value = self._fit(letter, REFUSED_PAYLOAD_BYTES)
            instruments.dead_letter("ingest", "kafka_rejected", feed=feed_url)
            self.state.intend(feed_url, [out.emitted])
            out.future = self._produce(out)
            replaced = True
        return replaced

    def flush(self) -> None:
        """Wait for Kafka to confirm what was sent, for at most the producer's delivery timeout."""
        timeout = 2 * self.settings.kafka.request_timeout_ms / 1000 + 10
        try:
            self.producer.flush(timeout=timeout)
        except Exception as exc:  # what is still unconfirmed fails its feed; it is retried
            log.error("Kafka did not confirm every record within %.0fs: %s", timeout, exc)

    def publish_health(self, record: FeedHealth) -> None:
        """Send a feed-health record (best effort: health must never cost an article)."""
        try:
            self.producer.send(self.topics.feed_health, key=record.feed_url.encode(), value=encode(record))
        except Exception as exc:
            log.warning("could not publish feed health for %s: %s", record.feed_url, exc)

    def flush_health(self) -> None:
        try:
            self.producer.flush(timeout=self.settings.kafka.request_timeout_ms / 1000 + 5)
        except Exception as exc:
            log.warning("could not flush feed health records: %s", exc)

    def _fit(self, letter: DeadLetter, limit: int | None = None) -> bytes:
        try:
            return fit(letter, min(limit or self.record_limit, self.record_limit))[1]
        except RecordTooLarge:  # only its feed URL or reason can be that long: keep the reason alone
            bare = letter.model_copy(
                update={"payload": "", "error": letter.error[:1000], "source": SourceCoordinates()}
            )
            return encode(bare)

    def _produce(self, out: Out) -> Any:
        try:
            return self.producer.send(out.topic, key=out.key, value=out.value)
        except Exception as exc:  # whatever one record triggers, it fails that record only
            log.warning("sending %s to %s failed: %s", out.emitted.key, out.topic, exc)
            return _Refused(exc)


@dataclass(frozen=True)
class Recovery:
    pending: int  # records that were sent and not confirmed
    delivered: int  # of those, found in the topics (marked emitted, not sent again)


def end_offsets(settings: Settings, topics: list[str]) -> dict[str, dict[int, int]]:
    """The current end offset of every partition of ``topics``."""
    client = kafka_clients.consumer(settings.kafka, group_id=None)
    try:
        found: dict[str, dict[int, int]] = {}
        for topic in topics:
            tps = kafka_clients.partitions_for(client, topic)
            found[topic] = {tp.partition: off for tp, off in client.end_offsets(tps).items()} if tps else {}
        return found
    finally:
        client.close()


def recover(settings: Settings, state: StateStore, timeout_s: float = 120.0) -> Recovery:
    """Settle the records a previous run sent but did not confirm (see the module docstring).

    Raises:
        KafkaUnavailable: The topics could not be read in time; nothing is changed, and ingest must
            not send before this succeeds (it could send those records twice).
    """
    pending = state.pending()
    if not pending:
        state.clear_marks_if_idle()
        return Recovery(0, 0)
    wanted: dict[tuple[str, str], tuple[str, Emitted]] = {(e.topic, e.key): (f, e) for f, e in pending}
    marks = state.marks()
    topics = sorted({e.topic for _, e in pending})
    client = kafka_clients.consumer(settings.kafka, group_id=None)
    delivered: list[tuple[str, Emitted]] = []
    try:
        tps = [tp for topic in topics for tp in kafka_clients.partitions_for(client, topic)]
        if tps:
            client.assign(tps)
            for tp in tps:
                client.seek(tp, marks.get(tp.topic, {}).get(tp.partition, 0))
            end = client.end_offsets(tps)
            deadline = time.monotonic() + timeout_s
            while any(client.position(tp) < end[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        settings.kafka.bootstrap,
                        f"timed out checking which of {len(pending)} records sent by the last run arrived",
                    )
                for tp, records in client.poll(timeout_ms=500).items():
                    for record in records:
                        if record.offset >= end[TopicPartition(tp.topic, tp.partition)]:
                            continue
                        key = record.key.decode("utf-8", "replace") if record.key else ""
                        hit = wanted.pop((tp.topic, key), None)
                        if hit is None:
                            continue
                        if _same_content(record.value, hit[1]):
                            delivered.append(hit)
                        else:
                            wanted[(tp.topic, key)] = hit  # an older copy; keep looking
    finally:
        client.close()
    state.resolve_pending(delivered)
    log.warning(
        "the last ingest run stopped before saving its state: %d records were sent and not confirmed, "
        "%d of them reached Kafka (marked sent), %d did not (sent at the next poll)",
        len(pending),
        len(delivered),
        len(pending) - len(delivered),
    )
    return Recovery(len(pending), len(delivered))


def _same_content(value: bytes | None, emitted: Emitted) -> bool:
    if emitted.content_hash == "rejected":  # a dead letter: its key is its content
        return True
    try:
        return bool(json.loads(value or b"{}").get("content_hash") == emitted.content_hash)
    except (ValueError, AttributeError):
        return False
