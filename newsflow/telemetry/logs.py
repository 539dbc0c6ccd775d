"""Log lines on stderr: plain text, or one JSON object a line (``NEWSFLOW_LOG_FORMAT=json``).

A JSON line has ``ts`` (UTC, ISO-8601), ``level``, ``logger``, ``message``, the ``run_id`` of the
run in progress (:func:`set_run`), whatever context the call passed with ``extra=`` (``feed``,
``topic``, ``partition``, ``offset``, ``stage``, ``reason``, ...) and ``exc`` for a traceback::

    {"ts": "2026-12-02T16:20:01.532Z", "level": "INFO", "logger": "newsflow.telemetry.instruments",
     "message": "dead letter: stage decode, reason bad_json", "run_id": "20261202T162000Z-3fa2c1",
     "stage": "decode", "reason": "bad_json", "topic": "news.raw", "partition": 2, "offset": 118}

Secrets never appear, in either format: the configured ones (the Kafka SASL password, the
PostgreSQL DSN and its password) are masked wherever they occur in a message, an argument, an extra
field or a traceback, and so are credentials in URLs (``scheme://user:…@``), ``password=…`` pairs
and kafka-python's ``sasl_plain_password`` entries, configured or not (:mod:`newsflow.scrub`, the
one scrubber of error texts and log lines).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, Any

from newsflow import scrub
from newsflow.config import LogSettings, Settings

MASK = scrub.MASK
NOISY = ("kafka", "apache_beam", "urllib3", "httpx", "httpcore")
# LogRecord attributes that are not context a caller added with extra=
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "run_id"}

_RUN: dict[str, str | None] = {"run_id": None}


def set_run(run_id: str | None) -> None:
    """The run every log line names from now on (process-wide: Beam's worker threads see it too)."""
    _RUN["run_id"] = run_id


def current_run() -> str | None:
    return _RUN["run_id"]


Redact = Callable[[str], str]


def secrets_of(settings: Settings) -> list[str]:
    """The secret values in ``settings``: the SASL password, the PostgreSQL DSN and its password."""
    found = []
    if settings.kafka.sasl_password is not None:
        found.append(settings.kafka.sasl_password.get_secret_value())
    if settings.sinks.postgres_dsn is not None:
        found += scrub.dsn_secrets(settings.sinks.postgres_dsn.get_secret_value())
    return found


class _RunFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _RUN["run_id"]
        return "apitools not found" not in record.getMessage()  # Beam's import-time GCP notice


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redact) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module docstring)."""

    def __init__(self, redact: Redact) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=UTC)
        line: dict[str, Any] = {
            "ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        run_id = getattr(record, "run_id", None)
        if run_id:
            line["run_id"] = run_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = self._plain(value)
        if record.exc_info:
            line["exc"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = self.redact(record.exc_text)
        if record.stack_info:
            line["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)

    def _plain(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.redact(value if isinstance(value, str) else str(value))


class _Handler(logging.StreamHandler):
    """newsflow's handler: writes to ``sys.stderr`` as it is at each record (a test runner may swap it)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._fixed = stream

    @property
    def stream(self) -> IO[str]:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        return  # StreamHandler.__init__ sets it; the property decides


def configure(
    settings: LogSettings,
    secrets: Iterable[str] = (),
    verbose: bool = False,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Route every log record to one stderr handler in the configured format; returns the handler.

    It replaces the root logger's plain stream handlers (a library's ``logging.warning`` at import
    installs one) and any handler an earlier call installed; other handlers stay.
    """
    scrub.register(*secrets)  # masked in error texts too (newsflow.scrub)
    scrub.install()  # and in records that reach other handlers (a Beam worker's)
    redact: Redact = scrub.scrub
    level = logging.DEBUG if verbose else getattr(logging, settings.level)
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter(redact) if settings.format == "json" else TextFormatter(redact))
    handler.addFilter(_RunFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if type(old) is logging.StreamHandler or isinstance(old, _Handler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.INFO if level <= logging.DEBUG else logging.ERROR)
    return handler
