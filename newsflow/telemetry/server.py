"""The live endpoint of a long-running command: ``/metrics``, ``/healthz``, ``/readyz``.

- ``GET /metrics``: :data:`newsflow.telemetry.instruments.REGISTRY` in the Prometheus text format.
- ``GET /healthz``: 200 ``ok`` while the process serves (liveness).
- ``GET /readyz``: 200 when every readiness check passes, else 503; the body is JSON naming each
  check and its result, e.g. ``{"ready": false, "checks": {"broker": true, "models": false}}``.

It binds 127.0.0.1 unless told otherwise (``NEWSFLOW_METRICS_HOST``) and runs in a daemon thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from newsflow.errors import ConfigError

log = logging.getLogger(__name__)

Check = Callable[[], bool]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/readyz":
            results = {}
            for name, check in self.server.checks.items():
                try:
                    results[name] = bool(check())
                except Exception:  # a failing check means not ready, never a crashed endpoint
                    log.debug("readiness check %s failed", name, exc_info=True)
                    results[name] = False
            ready = all(results.values())
            body = json.dumps({"ready": ready, "checks": results}).encode() + b"\n"
            self._send(200 if ready else 503, "application/json", body)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    checks: Mapping[str, Check]


class MetricsServer:
    """Serve the endpoint on ``host:port`` (``port`` 0 = any free port) in a background thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        checks: Mapping[str, Check] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        try:
            self.httpd = _Server((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); choose another "
                "--metrics-port (NEWSFLOW_METRICS_PORT), or 0 for any free port"
            ) from exc
        self.httpd.registry = registry
        self.httpd.checks = dict(checks or {})
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="newsflow-metrics", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("serving metrics on %s/metrics", self.url)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
