"""A SASL misconfiguration is told apart from an absent broker, with what to fix (issue 11, item 9).

The test starts a broker of its own with a SASL_PLAINTEXT (PLAIN) listener beside the PLAINTEXT one.
"""

from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors import kafka as kafka_clients
from newsflow.broker import LocalBroker, free_port
from newsflow.errors import KafkaHandshakeFailed, KafkaUnavailable

pytestmark = pytest.mark.integration

JAAS = (
    "org.apache.kafka.common.security.plain.PlainLoginModule required "
    'username="admin" password="admin-secret" user_admin="admin-secret" user_news="right-pw-123";'
)


class SaslBroker(LocalBroker):
    """The local broker plus a SASL_PLAINTEXT listener (mechanism PLAIN, user news)."""

    def __init__(self, settings, sasl_port):
        super().__init__(settings)
        self.sasl_port = sasl_port

    def _write_properties(self):
        super()._write_properties()
        extra = {
            "listeners": f",SASL_PLAINTEXT://{self.host}:{self.sasl_port}",
            "advertised.listeners": f",SASL_PLAINTEXT://{self.host}:{self.sasl_port}",
            "listener.security.protocol.map": ",SASL_PLAINTEXT:SASL_PLAINTEXT",
        }
        lines = []
        for line in self.properties.read_text().splitlines():
            key, _, value = line.partition("=")
            lines.append(f"{key}={value}{extra.get(key, '')}")
        lines += [
            "sasl.enabled.mechanisms=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
        ]
        self.properties.write_text("\n".join(lines) + "\n")


@pytest.fixture
def sasl_broker(tmp_path: Path, settings_factory):
    settings = settings_factory(f"127.0.0.1:{free_port()}").with_overrides(
        **{"broker.controller_port": free_port()}
    )
    broker = SaslBroker(settings, free_port())
    broker.up()
    yield settings, broker.sasl_port
    broker.down()


def _sasl(settings, port, password):
    return settings.kafka.model_copy(
        update={
            "bootstrap": f"127.0.0.1:{port}",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "news",
            "sasl_password": SecretStr(password),
        }
    )


def test_a_wrong_password_says_authentication_not_start_a_broker(sasl_broker):
    settings, port = sasl_broker
    good = kafka_clients.admin(_sasl(settings, port, "right-pw-123"))
    good.close()
    with pytest.raises(KafkaHandshakeFailed) as err:
        kafka_clients.admin(_sasl(settings, port, "wrong-pw-456"))
    message = str(err.value)
    assert "authentication failed" in message and "NEWSFLOW_KAFKA_SASL_PASSWORD" in message
    assert "newsflow kafka up" not in message and "wrong-pw-456" not in message


def test_sasl_against_a_plaintext_listener_is_a_handshake_failure_and_no_broker_is_unavailable(sasl_broker):
    settings, _ = sasl_broker
    plaintext_port = int(settings.kafka.bootstrap.rsplit(":", 1)[1])
    with pytest.raises(KafkaHandshakeFailed, match="SASL_PLAINTEXT"):
        kafka_clients.admin(_sasl(settings, plaintext_port, "right-pw-123"))
    with pytest.raises(KafkaUnavailable, match="newsflow kafka up"):
        kafka_clients.admin(_sasl(settings, free_port(), "right-pw-123"))
