from pathlib import Path

import pytest

from newsflow.config import Settings, describe
from newsflow.errors import ConfigError


def test_env_vars_reach_nested_and_top_level_settings(monkeypatch):
    monkeypatch.setenv("NEWSFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:1234")
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", "/tmp/somewhere")
    monkeypatch.setenv("NEWSFLOW_TOPICS_RAW", "raw.custom")
    monkeypatch.setenv("NEWSFLOW_MODELS_MAX_TOKENS", "128")
    monkeypatch.setenv("NEWSFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    s = Settings()
    assert s.kafka.bootstrap == "127.0.0.1:1234"
    assert s.data_dir == Path("/tmp/somewhere")
    assert s.topics.raw == "raw.custom"
    assert s.models.max_tokens == 128
    assert s.kafka.security_protocol == "SASL_SSL"


def test_defaults_match_the_design():
    s = Settings()
    assert s.kafka.bootstrap == "127.0.0.1:9092"
    assert (s.topics.raw, s.topics.enriched, s.topics.dlq, s.topics.feed_health) == (
        "news.raw",
        "news.enriched",
        "news.dlq",
        "news.feed-health",
    )


def test_password_never_prints_but_reaches_the_client(monkeypatch):
    monkeypatch.setenv("NEWSFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("NEWSFLOW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("NEWSFLOW_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("NEWSFLOW_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("NEWSFLOW_KAFKA_SSL_CAFILE", "/etc/ca.pem")
    s = Settings()
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert all("hunter2" not in value for _, value, _ in describe(s))
    config = s.kafka.client_config()
    assert config["sasl_plain_password"] == "hunter2"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["ssl_cafile"] == "/etc/ca.pem"
    assert config["security_protocol"] == "SASL_SSL"


def test_sasl_without_credentials_says_what_to_set(monkeypatch):
    monkeypatch.setenv("NEWSFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="NEWSFLOW_KAFKA_SASL_USERNAME"):
        Settings().kafka.client_config()


def test_bad_bootstrap_is_rejected():
    with pytest.raises(ValueError, match="host:port"):
        Settings().with_overrides(**{"kafka.bootstrap": "no-port-here"})


def test_overrides_ignore_none_and_keep_the_rest():
    s = Settings().with_overrides(**{"kafka.bootstrap": None, "topics.raw": "x", "data_dir": Path("/d")})
    assert s.kafka.bootstrap == "127.0.0.1:9092"
    assert s.topics.raw == "x"
    assert s.data_dir == Path("/d")
    assert s.enriched_dir == Path("/d/enriched")


def test_describe_lists_every_setting_with_its_env_var():
    rows = {env: value for env, value, _ in describe(Settings())}
    assert rows["NEWSFLOW_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"
    assert "NEWSFLOW_DATA_DIR" in rows
    assert "NEWSFLOW_MODELS_ENCODER" in rows
