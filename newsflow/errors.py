"""The newsflow exception tree, in one place.

Every error a user can cause or fix derives from :class:`NewsflowError`, whose message says what to
do next. The CLI prints that message on one line and exits non-zero instead of a traceback::

    NewsflowError
    ├── ConfigError            bad settings, taxonomy or feeds file
    ├── SetupError             the machine lacks something the project needs
    │   ├── JavaNotFound
    │   └── KafkaJarsUnavailable
    ├── BrokerError            the local broker could not be managed
    │   └── PortBusy
    ├── KafkaUnavailable       no broker answers at the configured bootstrap address
    ├── KafkaHandshakeFailed   a broker answers but refuses the client (authentication, protocol)
    ├── ModelError             a model could not be loaded or run
    └── PipelineError          a pipeline run failed or its counts do not reconcile
"""

from __future__ import annotations


class NewsflowError(Exception):
    """Root of all errors that carry an actionable, user-facing message."""


class ConfigError(NewsflowError):
    """A settings, taxonomy or feeds file is invalid."""


class SetupError(NewsflowError):
    """Something the project needs is missing from this machine."""


class JavaNotFound(SetupError):
    """No Java runtime to start the Kafka broker with."""


class KafkaJarsUnavailable(SetupError):
    """The Kafka broker jars are not cached and could not be resolved from Maven Central."""


class BrokerError(NewsflowError):
    """The local Kafka broker could not be started, stopped or inspected."""


class PortBusy(BrokerError):
    """A port the local broker needs is already taken by another process."""


class KafkaUnavailable(NewsflowError):
    """No Kafka broker answers at the configured bootstrap address."""

    def __init__(self, bootstrap: str, detail: str = "") -> None:
        self.bootstrap = bootstrap
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"no Kafka broker at {bootstrap}{extra}; start one with 'newsflow kafka up' "
            "or set NEWSFLOW_KAFKA_BOOTSTRAP"
        )


class KafkaHandshakeFailed(NewsflowError):
    """A broker accepts connections at the bootstrap address but the client's handshake fails."""

    def __init__(
        self,
        bootstrap: str,
        protocol: str,
        mechanism: str | None = None,
        username: str | None = None,
        detail: str = "",
    ) -> None:
        self.bootstrap = bootstrap
        if protocol.startswith("SASL"):
            what = (
                f"authentication failed or the listener does not speak {protocol} (mechanism {mechanism}, "
                f"user {username}); check NEWSFLOW_KAFKA_SASL_USERNAME, NEWSFLOW_KAFKA_SASL_PASSWORD and "
                "NEWSFLOW_KAFKA_SASL_MECHANISM against the cluster's credentials, and "
                "NEWSFLOW_KAFKA_SECURITY_PROTOCOL against the listener at that address"
            )
        elif protocol == "SSL":
            what = (
                "the TLS handshake failed or the listener does not speak SSL; check "
                "NEWSFLOW_KAFKA_SSL_CAFILE (and the client certificate files) and "
                "NEWSFLOW_KAFKA_SECURITY_PROTOCOL"
            )
        else:
            what = (
                "it is not a PLAINTEXT Kafka listener (a SASL or SSL one wants "
                "NEWSFLOW_KAFKA_SECURITY_PROTOCOL and its credentials), or not Kafka at all"
            )
        extra = f" (the client said: {detail})" if detail else ""
        super().__init__(f"a server answers at {bootstrap} but the Kafka handshake failed: {what}{extra}")


class ModelError(NewsflowError):
    """A model could not be loaded or run."""


class PipelineError(NewsflowError):
    """A pipeline run failed, or its counts do not reconcile."""
