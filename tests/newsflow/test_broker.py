"""The local broker manager: real broker for the happy path, real failure modes for the errors."""

import os
import socket
from pathlib import Path

import pytest

from newsflow.broker import LocalBroker, broker_answers, ensure_jars, find_java, free_port
from newsflow.config import Settings
from newsflow.errors import BrokerError, JavaNotFound, KafkaJarsUnavailable, PortBusy


def _settings(tmp_path: Path, port: int, **extra) -> Settings:
    return Settings().with_overrides(
        **{
            "data_dir": tmp_path,
            "kafka.bootstrap": f"127.0.0.1:{port}",
            "broker.controller_port": free_port(),
            **extra,
        }
    )


@pytest.mark.integration
def test_up_is_idempotent_and_down_stops_it(tmp_path):
    broker = LocalBroker(_settings(tmp_path, free_port()))
    first = broker.up()
    try:
        assert first.running and first.reachable
        pid = first.pid
        again = broker.up()  # a second 'up' is a no-op
        assert again.pid == pid and again.reachable
        assert (tmp_path / "kafka" / "data" / "meta.properties").exists()
        assert broker.log_file.exists()
    finally:
        assert broker.down()
    assert not broker.status().running
    assert not broker_answers(broker.bootstrap, timeout_s=0.5)
    assert broker.down() is False


def test_stale_pid_file_is_cleaned_up(tmp_path):
    broker = LocalBroker(_settings(tmp_path, free_port()))
    broker.home.mkdir(parents=True)
    # A pid that cannot be alive (beyond pid_max).
    broker.pid_file.write_text("4194999")
    assert broker.pid() is None
    assert not broker.pid_file.exists()


def test_busy_port_is_reported_with_what_to_do(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = LocalBroker(_settings(tmp_path, port))
        with pytest.raises(PortBusy, match="NEWSFLOW_KAFKA_BOOTSTRAP"):
            broker.up()


def test_remote_bootstrap_is_not_managed(tmp_path):
    settings = Settings().with_overrides(
        **{"data_dir": tmp_path, "kafka.bootstrap": "kafka.example.com:9092"}
    )
    with pytest.raises(BrokerError, match="only manages a local broker"):
        LocalBroker(settings).up()


def test_missing_java_says_how_to_install_it(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(JavaNotFound, match="install a JDK"):
        find_java()


def test_no_jar_cache_and_no_maven_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    settings = _settings(tmp_path, free_port(), **{"broker.libs_dir": tmp_path / "libs"})
    with pytest.raises(KafkaJarsUnavailable, match="Maven"):
        ensure_jars(settings)


def test_unresolvable_pom_reports_the_registry(tmp_path):
    pom = tmp_path / "pom.xml"
    pom.write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>x</groupId><artifactId>y</artifactId><version>1</version><packaging>pom</packaging>"
        "<dependencies><dependency><groupId>io.newsflow.nonexistent</groupId><artifactId>nothing</artifactId>"
        "<version>0.0.0</version></dependency></dependencies></project>"
    )
    settings = _settings(tmp_path, free_port(), **{"broker.libs_dir": tmp_path / "libs", "broker.pom": pom})
    if not os.path.exists("/usr/bin/mvn") and not any(
        os.path.exists(os.path.join(p, "mvn")) for p in os.environ["PATH"].split(":")
    ):
        pytest.skip("Maven is not installed")
    with pytest.raises(KafkaJarsUnavailable, match="could not resolve"):
        ensure_jars(settings)
