"""Consumer lag of the enrich group, sampled from the broker in a background thread.

Per partition of the raw topic: the end offset minus the group's committed offset (the beginning
offset where the group has committed nothing). It is read from the broker, not from the pipeline,
so it is right whatever runner runs the workers. Each sample also records whether the broker
answered (``newsflow_broker_reachable``).
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from connectors import kafka as kafka_clients
from newsflow.config import KafkaSettings
from newsflow.telemetry import instruments

log = logging.getLogger(__name__)


def consumer_lag(consumer: Any, topic: str) -> dict[int, int]:
    """Partition → records not committed yet by ``consumer``'s group (one round trip per call)."""
    tps = kafka_clients.partitions_for(consumer, topic)
    if not tps:
        return {}
    end = consumer.end_offsets(tps)
    beginning = consumer.beginning_offsets(tps)
    lag = {}
    for tp in tps:
        committed = consumer.committed(tp)
        start = beginning[tp] if committed is None else max(committed, beginning[tp])
        lag[tp.partition] = max(0, end[tp] - start)
    return lag


class LagSampler:
    """Every ``interval_s``: sample :func:`consumer_lag` into ``newsflow_consumer_lag``."""

    def __init__(self, settings: KafkaSettings, topic: str, group_id: str, interval_s: float = 5.0) -> None:
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="newsflow-lag", daemon=True)
        self._consumer: Any = None

    def sample(self) -> dict[int, int]:
        """One sample now (creates the consumer on first use; a failure drops it for the next try)."""
        try:
            if self._consumer is None:
                kafka_clients.require_broker(self.settings, timeout_s=2.0)
                self._consumer = kafka_clients.consumer(self.settings, group_id=self.group_id)
            lag = consumer_lag(self._consumer, self.topic)
        except Exception as exc:  # the broker went away: say so on /metrics, try again next tick
            instruments.broker_reachable(False)
            log.debug("consumer lag sample failed: %s", exc)
            self._close_consumer()
            return {}
        instruments.broker_reachable(True)
        for partition, count in lag.items():
            instruments.set_lag(self.topic, partition, count)
        return lag

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)
        self._close_consumer()

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:
                log.debug("closing the lag consumer failed", exc_info=True)
            self._consumer = None

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 30)
