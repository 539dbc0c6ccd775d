"""Which records reached Kafka, after ingest stopped between sending them and saving its state.

Ingest saves a feed's state (the ids it emitted) only after Kafka confirmed every record. A process
killed in between (kill -9, power cut, OOM) used to re-send everything it had sent but not saved:
the same ids again. Now every record is noted in the state store's ``pending`` table before it is
sent, together with the end offsets of the topics at the start of the cycle (``pending_marks``).
Before the next cycle sends anything, :func:`recover` reads the topics from those offsets to their
end and, for every pending record it finds there (same key, same content hash), marks it emitted;
the others never arrived and are simply forgotten, so the next poll sends them once. Either way
nothing is produced twice, and nothing is lost.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from kafka import TopicPartition

from connectors import kafka as kafka_clients
from connectors.rss.state import Emitted, StateStore
from newsflow.config import Settings
from newsflow.errors import KafkaUnavailable

log = logging.getLogger(__name__)


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
