"""The live endpoint one long-running command serves: the server, its readiness checks, the lag sampler.

``newsflow ingest --every``, ``enrich --mode stream`` and ``run --every`` call :func:`live_endpoint`
with their ``--metrics-port`` (or ``NEWSFLOW_METRICS_PORT``); unset, nothing is served.

Readiness (``/readyz``): the broker answers (a TCP connect to a bootstrap server, 1 s at most) and,
for commands that enrich with workers in this process, the models are loaded. With workers in other
processes the models load there, out of this process's sight: readiness then checks the broker only
(:mod:`newsflow.telemetry.runners`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from connectors import kafka as kafka_clients
from newsflow.config import KafkaSettings, Settings
from newsflow.telemetry import instruments
from newsflow.telemetry.lag import LagSampler
from newsflow.telemetry.server import Check, MetricsServer

log = logging.getLogger(__name__)


def broker_check(settings: KafkaSettings) -> Check:
    def check() -> bool:
        try:
            kafka_clients.require_broker(settings, timeout_s=1.0)
        except Exception:
            instruments.broker_reachable(False)
            return False
        instruments.broker_reachable(True)
        return True

    return check


def models_check() -> bool:
    return instruments.value("newsflow_models_loaded") >= 1


@contextmanager
def live_endpoint(
    settings: Settings, port: int | None, *, lag: bool, models: bool
) -> Iterator[MetricsServer | None]:
    """Serve ``/metrics`` etc. while the block runs (``port`` None: the setting; both unset: nothing).

    ``lag`` samples the enrich group's consumer lag on the raw topic; ``models`` makes readiness wait
    for the models to load in this process.
    """
    port = port if port is not None else settings.metrics.port
    if port is None:
        yield None
        return
    checks: dict[str, Check] = {"broker": broker_check(settings.kafka)}
    if models:
        checks["models"] = models_check
    with ExitStack() as stack:
        server = stack.enter_context(MetricsServer(instruments.REGISTRY, checks, settings.metrics.host, port))
        if lag:
            group, interval = settings.kafka.group_id, settings.metrics.lag_interval_s
            stack.enter_context(LagSampler(settings.kafka, settings.topics.raw, group, interval))
        yield server
