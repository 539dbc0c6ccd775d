"""Record types at the system's boundaries, and the one JSON codec for them.

Every record carries its schema name in ``schema``; consumers check it before trusting the rest.

- :class:`Article`      ``newsflow.article.v1`` on ``news.raw`` (key = article id)
- :class:`Enriched`     ``newsflow.enriched.v1`` on ``news.enriched`` (key = article id)
- :class:`DeadLetter`   ``newsflow.deadletter.v1`` on ``news.dlq``: anything rejected, with a reason code
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

ARTICLE_SCHEMA = "newsflow.article.v1"
ENRICHED_SCHEMA = "newsflow.enriched.v1"
DEADLETTER_SCHEMA = "newsflow.deadletter.v1"

StanceLabel = Literal["agree", "disagree", "discuss", "unrelated"]
STANCE_LABELS: tuple[StanceLabel, ...] = ("agree", "disagree", "discuss", "unrelated")


def utc_now() -> str:
    """The current time as UTC ISO-8601 with a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_run_id() -> str:
    """A run id: UTC start time and a random suffix, e.g. ``20261202T162000Z-3fa2c1``."""
    import uuid

    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def content_hash(*parts: str) -> str:
    """A stable hash of an article's text, used to notice edits and to cache embeddings."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Article(_Record):
    """A normalised news article as produced by the feed connector."""

    schema_: Literal["newsflow.article.v1"] = Field("newsflow.article.v1", alias="schema")
    id: str = Field(min_length=8, max_length=128)
    feed_url: str
    source: str = ""
    url: str | None = None
    canonical_url: str | None = None
    guid: str | None = None
    title: str = ""
    summary: str = ""
    content: str = ""
    authors: list[str] = []
    tags: list[str] = []
    language: str | None = None
    published_at: str | None = None
    fetched_at: str
    content_hash: str

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @property
    def text(self) -> str:
        """The body used for classification: full content when the feed has it, else the summary."""
        return self.content or self.summary


class TopicScore(_Record):
    label: str
    score: float


class StanceResult(_Record):
    claim_id: str
    claim: str
    label: StanceLabel
    score: float


class HeadlineStance(_Record):
    label: StanceLabel
    score: float


class Enriched(_Record):
    """An article plus its labels and the lineage of the models that produced them."""

    schema_: Literal["newsflow.enriched.v1"] = Field("newsflow.enriched.v1", alias="schema")
    article: Article
    topics: list[TopicScore]
    primary_topic: str
    scores: dict[str, float] = {}
    stances: list[StanceResult]
    headline_stance: HeadlineStance | None = None
    model: dict[str, str]
    enriched_at: str
    run_id: str

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @property
    def id(self) -> str:
        return self.article.id


class SourceCoordinates(_Record):
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    feed_url: str | None = None


class DeadLetter(_Record):
    """Something a stage rejected, with enough context to find, understand and replay it."""

    schema_: Literal["newsflow.deadletter.v1"] = Field("newsflow.deadletter.v1", alias="schema")
    stage: str
    reason: str = Field(description="machine-readable reason code, e.g. bad_json, schema_invalid")
    error: str
    payload: str = Field(description="the original payload, decoded as UTF-8 with replacement")
    source: SourceCoordinates
    at: str = Field(default_factory=utc_now)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


R = TypeVar("R", bound=_Record)


def encode(record: _Record) -> bytes:
    """Serialise a record to compact UTF-8 JSON (the wire format on every topic and file)."""
    return record.model_dump_json(by_alias=True, exclude_none=False).encode("utf-8")


def decode(kind: type[R], data: bytes | str) -> R:
    """Parse and validate one record; raises ``pydantic.ValidationError`` or ``ValueError``."""
    return kind.model_validate_json(data)


def to_dict(record: _Record) -> dict[str, Any]:
    return record.model_dump(mode="json", by_alias=True)


def dumps(obj: Any) -> str:
    """JSON for plain values (CLI output files), compact and UTF-8 preserving."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
