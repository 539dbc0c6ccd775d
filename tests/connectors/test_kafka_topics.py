"""Topic creation on the real broker: the enriched topic is compacted, the others keep defaults."""

import logging
import time

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from connectors import kafka as kafka_clients

pytestmark = pytest.mark.integration


def cleanup_policy(settings, topic, timeout_s=10.0):
    """The topic's cleanup.policy; a topic created a moment ago may describe no configs yet: wait."""
    deadline = time.monotonic() + timeout_s
    client = kafka_clients.admin(settings.kafka)
    try:
        while True:
            described = client.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, ["cleanup.policy"])], config_filter="all"
            )
            entry = described["topic"][topic].get("cleanup.policy")
            if entry is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        client.close()
    assert entry is not None, f"the broker described no cleanup.policy for {topic} within {timeout_s} s"
    return entry["value"]


def eventual_policy(settings, topic, want, timeout_s=10.0):
    """The policy once it reads ``want`` (an altered config reaches the broker's metadata shortly after)."""
    deadline = time.monotonic() + timeout_s
    while (got := cleanup_policy(settings, topic)) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    return got


def create_plain(settings, topic):
    client = kafka_clients.admin(settings.kafka)
    try:
        client.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
    finally:
        client.close()


def test_the_enriched_topic_is_created_compacted_and_the_others_with_defaults(kafka_settings):
    topics = kafka_settings.topics
    kafka_clients.ensure_topics(kafka_settings.kafka, topics)
    assert cleanup_policy(kafka_settings, topics.enriched) == "compact,delete"
    for other in (topics.raw, topics.dlq, topics.feed_health):
        assert cleanup_policy(kafka_settings, other) == "delete"  # the broker's default


def test_an_existing_enriched_topic_with_another_policy_is_altered_with_a_warning(kafka_settings, caplog):
    topics = kafka_settings.topics
    create_plain(kafka_settings, topics.enriched)
    assert cleanup_policy(kafka_settings, topics.enriched) == "delete"
    with caplog.at_level(logging.WARNING, logger="connectors.kafka"):
        kafka_clients.ensure_topics(kafka_settings.kafka, topics)
    assert eventual_policy(kafka_settings, topics.enriched, "compact,delete") == "compact,delete"
    (warning,) = [r.getMessage() for r in caplog.records if topics.enriched in r.getMessage()]
    assert "'cleanup.policy': 'delete'" in warning and "compact,delete" in warning
    caplog.clear()
    kafka_clients.ensure_topics(kafka_settings.kafka, topics)  # already right: nothing to say
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_when_the_broker_refuses_the_alter_the_warning_says_how_to_fix_it(
    kafka_settings, caplog, monkeypatch
):
    topics = kafka_settings.topics
    create_plain(kafka_settings, topics.enriched)

    def refuse(self, resources, **kwargs):  # a managed cluster without ALTER_CONFIGS permission
        return {"topic": {r.name: "TopicAuthorizationFailedError" for r in resources}}

    monkeypatch.setattr(kafka_clients.KafkaAdminClient, "alter_configs", refuse)
    with caplog.at_level(logging.WARNING, logger="connectors.kafka"):
        kafka_clients.ensure_topics(kafka_settings.kafka, topics, [topics.enriched])
    assert cleanup_policy(kafka_settings, topics.enriched) == "delete"
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "TopicAuthorizationFailedError" in warning
    assert (
        f"kafka-configs.sh --bootstrap-server {kafka_settings.kafka.bootstrap} --alter --entity-type topics "
        f"--entity-name {topics.enriched} --add-config 'cleanup.policy=[compact,delete]'"
    ) in warning
