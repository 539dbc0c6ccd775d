"""Structured logs: one JSON object a line with the run's context, and secrets that never appear."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import psycopg
import pytest

from newsflow import scrub
from newsflow.broker import free_port
from newsflow.config import REPO_ROOT, LogSettings, Settings
from newsflow.telemetry import logs

SASL_PASSWORD = "sasl-Pw-7f3K9q"
PG_PASSWORD = "pg-Pw-Zx81mQ"


def _settings() -> Settings:
    return Settings().with_overrides(
        **{
            "kafka.security_protocol": "SASL_PLAINTEXT",
            "kafka.sasl_mechanism": "PLAIN",
            "kafka.sasl_username": "newsflow",
            "kafka.sasl_password": SASL_PASSWORD,
            "sinks.postgres_dsn": f"postgresql://newsflow:{PG_PASSWORD}@127.0.0.1:{free_port()}/news",
        }
    )


@pytest.fixture
def captured():
    """The root logger writing JSON into a buffer; restores the previous handlers afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    settings = _settings()
    logs.configure(LogSettings(format="json", level="DEBUG"), logs.secrets_of(settings), stream=buffer)
    yield settings, buffer
    logs.set_run(None)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_json_lines_carry_the_run_and_the_records_coordinates(captured):
    _, buffer = captured
    logs.set_run("20261202T100000Z-abc123")
    logging.getLogger("newsflow.test").info(
        "dead letter %s",
        "bad_json",
        extra={"stage": "decode", "topic": "news.raw", "partition": 2, "offset": 7},
    )
    line = json.loads(buffer.getvalue().splitlines()[-1])
    assert line["message"] == "dead letter bad_json" and line["level"] == "INFO"
    assert line["run_id"] == "20261202T100000Z-abc123" and line["logger"] == "newsflow.test"
    assert (line["stage"], line["topic"], line["partition"], line["offset"]) == ("decode", "news.raw", 2, 7)
    assert line["ts"].endswith("Z")


def test_secrets_never_appear_in_messages_arguments_extras_or_tracebacks(captured):
    settings, buffer = captured
    dsn = settings.sinks.postgres_dsn.get_secret_value()
    log = logging.getLogger("newsflow.test")
    log.debug("kafka client config %s", settings.kafka.client_config())  # the dict holds the password
    log.warning("connecting to %s", dsn)
    log.info("retrying", extra={"target": dsn, "password": f"password={PG_PASSWORD}"})
    log.info("libpq form: host=127.0.0.1 user=newsflow password=%s dbname=news", PG_PASSWORD)
    try:
        raise RuntimeError(f"could not use {dsn} with sasl_plain_password={SASL_PASSWORD}")
    except RuntimeError:
        log.exception("failed")
    try:  # a real client error, as the PostgreSQL sink would meet it
        psycopg.connect(dsn, connect_timeout=2)
    except psycopg.OperationalError:
        log.exception("PostgreSQL refused %s", dsn)
    text = buffer.getvalue()
    lines = [json.loads(x) for x in text.splitlines()]
    assert len(lines) == 6 and all("exc" in x for x in lines[-2:])
    assert SASL_PASSWORD not in text and PG_PASSWORD not in text
    assert logs.MASK in lines[0]["message"] and "newsflow" in lines[0]["message"]  # the rest stays


def test_patterns_mask_credentials_that_were_not_configured():
    redact = scrub.scrub
    assert redact("postgresql://u:hunter22@db/x") == f"postgresql://u:{logs.MASK}@db/x"
    assert redact("host=db password='a b c' user=u") == f"host=db password={logs.MASK} user=u"
    assert redact("{'sasl_plain_password': 'xyz', 'client_id': 'n'}") == (
        f"{{'sasl_plain_password': {logs.MASK}, 'client_id': 'n'}}"
    )
    assert redact("https://example.org/feed?x=1") == "https://example.org/feed?x=1"


def test_the_cli_prints_no_secret_at_debug_level(tmp_path):
    """A real command, JSON logs at DEBUG, a SASL password and a DSN password: neither appears."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(
        NEWSFLOW_DATA_DIR=str(tmp_path),
        NEWSFLOW_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",  # nothing listens: the run fails early
        NEWSFLOW_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        NEWSFLOW_KAFKA_SASL_MECHANISM="PLAIN",
        NEWSFLOW_KAFKA_SASL_USERNAME="newsflow",
        NEWSFLOW_KAFKA_SASL_PASSWORD=SASL_PASSWORD,
        NEWSFLOW_SINKS_POSTGRES_DSN=f"postgresql://newsflow:{PG_PASSWORD}@127.0.0.1:{free_port()}/news",
        NEWSFLOW_LOG_FORMAT="json",
        NEWSFLOW_LOG_LEVEL="DEBUG",
    )
    outputs = []
    for command in (["config"], ["enrich"], ["-v", "run"]):
        done = subprocess.run(
            [sys.executable, "-m", "newsflow", *command],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        outputs.append(done.stdout + done.stderr)
    assert "NEWSFLOW_KAFKA_SASL_PASSWORD=**********" in outputs[0]
    assert "no Kafka broker" in outputs[1] and "no Kafka broker" in outputs[2]
    for output in outputs:
        assert SASL_PASSWORD not in output and PG_PASSWORD not in output
