"""The HTTP endpoint on loopback: Prometheus text, liveness, readiness with named checks."""

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from newsflow.errors import ConfigError
from newsflow.telemetry.server import MetricsServer


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_metrics_health_and_readiness():
    registry = CollectorRegistry()
    Counter("demo_things", "things", registry=registry).inc(3)
    state = {"models": False}

    def broken() -> bool:
        raise RuntimeError("a check that fails is a not-ready check")

    checks = {"broker": lambda: True, "models": lambda: state["models"]}
    with MetricsServer(registry, checks) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, kind, body = _get(server.url + "/metrics")
        assert status == 200 and kind.startswith("text/plain") and b"demo_things_total 3.0" in body
        assert _get(server.url + "/healthz")[::2] == (200, b"ok\n")
        status, _, body = _get(server.url + "/readyz")
        assert status == 503 and json.loads(body) == {
            "ready": False,
            "checks": {"broker": True, "models": False},
        }
        state["models"] = True
        status, _, body = _get(server.url + "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        assert _get(server.url + "/nothing")[0] == 404
    with MetricsServer(registry, {"x": broken}) as server:
        status, _, body = _get(server.url + "/readyz")
        assert status == 503 and json.loads(body)["checks"] == {"x": False}


def test_a_busy_port_says_what_to_do():
    with MetricsServer(CollectorRegistry()) as server, pytest.raises(ConfigError, match="--metrics-port"):
        MetricsServer(CollectorRegistry(), port=server.port)
