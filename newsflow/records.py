"""Record types at the system's boundaries, the one JSON codec for them, and the one size policy.

Every record carries its schema name in ``schema``; consumers check it before trusting the rest.

- :class:`Article`      ``newsflow.article.v2`` on ``news.raw`` (key = article id)
- :class:`Enriched`     ``newsflow.enriched.v2`` on ``news.enriched`` (key = article id)
- :class:`DeadLetter`   ``newsflow.deadletter.v2`` on ``news.dlq``: anything rejected, with a reason code
- :class:`FeedHealth`   ``newsflow.feed-health.v1`` on ``news.feed-health`` (key = feed URL): one poll of
  one feed, its :class:`FeedStatus` and the feed's counters

Version 1 records still decode: they are read as version 2 (every field v2 added has a default). Feed
health records written before the record was typed decode too (every field added since has a default).

**Size policy** (:func:`fit`): no record newsflow produces is larger than the configured
``NEWSFLOW_KAFKA_MAX_RECORD_BYTES``. A record over it is cut before it is sent, never rejected by the
broker: its long text fields are shortened (an article's content, then summary, then title; a dead
letter's payload, then error) and the record says so in ``truncated`` (field → original length in
characters), so a consumer always knows it holds a cut copy.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, field_validator, model_validator
from pydantic_core import CoreSchema

ARTICLE_SCHEMA = "newsflow.article.v2"
ENRICHED_SCHEMA = "newsflow.enriched.v2"
DEADLETTER_SCHEMA = "newsflow.deadletter.v2"
FEED_HEALTH_SCHEMA = "newsflow.feed-health.v1"
#: Default of ``NEWSFLOW_KAFKA_MAX_RECORD_BYTES``: under Kafka's default 1 MiB message and request limits
#: with room for the key, headers and batch overhead.
MAX_RECORD_BYTES = 1_000_000

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


def _upgrade(current: str) -> Any:
    """A ``schema`` validator that reads the version-1 name of a record as its current name."""
    previous = current.rsplit(".v", 1)[0] + ".v1"

    def upgrade(value: Any) -> Any:
        return current if value == previous else value

    return upgrade


#: Where an article's ``text`` came from: the feed's full content, the feed's summary, or the text
#: extracted from the article's page.
TextSource = Literal["feed_content", "feed_summary", "extracted"]


class Article(_Record):
    """A normalised news article as produced by the feed connector."""

    schema_: Literal["newsflow.article.v2"] = Field("newsflow.article.v2", alias="schema")
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
    text_source: TextSource | None = Field(
        None, description="where `text` (content, else summary) came from; null when the article has none"
    )
    extracted_at: str | None = Field(None, description="when the page text was extracted (UTC ISO-8601)")
    truncated: dict[str, int] = Field(
        {}, description="fields cut to fit the record size limit, with their original length in characters"
    )

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    _schema = field_validator("schema_", mode="before")(_upgrade(ARTICLE_SCHEMA))

    @model_validator(mode="after")
    def _default_text_source(self) -> Article:
        if self.text_source is None and (self.content or self.summary):
            object.__setattr__(self, "text_source", "feed_content" if self.content else "feed_summary")
        return self

    @property
    def text(self) -> str:
        """The body used for classification: full content when the feed has it, else the summary."""
        return self.content or self.summary


class TopicScore(_Record):
    label: str
    score: float
    evidence: str | None = Field(
        None, description="the sentence or passage that supported a watched topic (null for other)"
    )


#: How an article's topics were decided: by the topic model (in a language it covers), by the
#: multilingual anchor queries alone (a language it does not cover), not at all (``other``) because
#: the language is not covered and no anchor matched, or because the article has no words.
TopicMethod = Literal["model", "anchors", "unsupported_language", "no_text"]
#: How stances were decided: by the stance model, or not (a language it does not cover, no words).
StanceMethod = Literal["model", "unsupported_language", "no_text"]


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

    schema_: Literal["newsflow.enriched.v2"] = Field("newsflow.enriched.v2", alias="schema")
    article: Article
    topics: list[TopicScore]
    primary_topic: str
    scores: dict[str, float] = {}
    topic_method: TopicMethod = "model"
    language: str | None = Field(None, description="the language the labels were decided for")
    stances: list[StanceResult]
    stance_method: StanceMethod = "model"
    headline_stance: HeadlineStance | None = None
    model: dict[str, str]
    enriched_at: str
    run_id: str

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    _schema = field_validator("schema_", mode="before")(_upgrade(ENRICHED_SCHEMA))

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

    schema_: Literal["newsflow.deadletter.v2"] = Field("newsflow.deadletter.v2", alias="schema")
    stage: str
    reason: str = Field(description="machine-readable reason code, e.g. bad_json, schema_invalid")
    error: str
    payload: str = Field(description="the original payload, decoded as UTF-8 with replacement")
    source: SourceCoordinates
    at: str = Field(default_factory=utc_now)
    truncated: dict[str, int] = Field(
        {}, description="fields cut to fit the record size limit, with their original length in characters"
    )

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    _schema = field_validator("schema_", mode="before")(_upgrade(DEADLETTER_SCHEMA))


_HTTP_STATUS = re.compile(r"http_[1-5][0-9]{2}")


class FeedStatus(StrEnum):
    """The outcome of one poll of one feed; ``http_<code>`` for any HTTP answer that is not a success.

    String-valued: the state store, health records and metric labels hold its value (``"ok"``,
    ``"http_404"``). Every HTTP code is a status (``FeedStatus("http_404")``, ``FeedStatus.http(404)``);
    the ones the schedule treats specially are named. docs/INGEST.md has the table of what each means.
    """

    OK = "ok"  # fetched and parsed, malformed but recovered included (``bozo``)
    NOT_MODIFIED = "not_modified"  # 304 to a conditional GET: nothing parsed
    UNCHANGED = "unchanged"  # 200 with the same bytes as last time: nothing parsed
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"  # refused, DNS failure
    CONNECTION_RESET = "connection_reset"  # closed mid-response
    TOO_LARGE = "too_large"
    REDIRECT_LOOP = "redirect_loop"
    BAD_ENCODING = "bad_encoding"
    INVALID_URL = "invalid_url"
    BLOCKED = "blocked"  # the address guard refused a hop, or a redirect left http(s)
    NOT_HTML = "not_html"  # an article page that is not HTML (page fetches only)
    NOT_A_FEED = "not_a_feed"
    XML_ENTITIES = "xml_entities"  # the document declares XML entities: refused unparsed
    PARSE_ERROR = "parse_error"
    INTERNAL_ERROR = "internal_error"  # a bug while handling this feed (logged with its traceback)
    KAFKA_ERROR = "kafka_error"  # Kafka did not confirm every record: the rest are sent again
    HELD = "held"  # not polled: its host asked to wait (Retry-After); never stored or published
    HTTP_410 = "http_410"  # gone: the feed is disabled at once
    HTTP_429 = "http_429"
    HTTP_503 = "http_503"

    @classmethod
    def _missing_(cls, value: object) -> FeedStatus | None:
        """``http_<code>`` for any code: a member made (once) on first use."""
        if not isinstance(value, str) or not _HTTP_STATUS.fullmatch(value):
            return None
        member = str.__new__(cls, value)
        member._name_, member._value_ = value.upper(), value
        return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]

    @classmethod
    def http(cls, code: int) -> FeedStatus:
        return cls(f"http_{code}")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {
            "title": "FeedStatus",
            "description": cls.__doc__.splitlines()[0] if cls.__doc__ else "",
            "anyOf": [
                {"enum": [m.value for m in cls]},
                {"type": "string", "pattern": "^http_[1-5][0-9]{2}$"},
            ],
        }

    @property
    def unchanged(self) -> bool:
        """A 304 or the same bytes as last time: nothing was parsed or produced."""
        return self in (FeedStatus.NOT_MODIFIED, FeedStatus.UNCHANGED)

    @property
    def healthy(self) -> bool:
        """The feed answered and was read (or had not changed)."""
        return self is FeedStatus.OK or self.unchanged

    @property
    def transient(self) -> bool:
        """A failure that says nothing about the feed's health: back off, never disable."""
        return self in _TRANSIENT or self.value.startswith("http_5")


_TRANSIENT = frozenset(
    {
        FeedStatus.TIMEOUT,
        FeedStatus.CONNECTION_RESET,
        FeedStatus.HTTP_429,
        FeedStatus.KAFKA_ERROR,
        FeedStatus.INTERNAL_ERROR,
    }
)


class FeedHealth(_Record):
    """One poll of one feed, as ingest publishes it on ``news.feed-health`` (key = the feed's URL)."""

    schema_: Literal["newsflow.feed-health.v1"] = Field("newsflow.feed-health.v1", alias="schema")
    feed_url: str = Field(description="the feed's URL as configured (its identity)")
    fetch_url: str | None = Field(None, description="where it was fetched: a permanent redirect's target")
    name: str | None = None
    status: FeedStatus
    http_status: int | None = None
    error: str | None = Field(None, description="what went wrong, or why a malformed feed was flagged")
    new_articles: int = Field(0, description="records produced to the raw topic by this poll")
    items: int = Field(0, description="items in the document")
    rejected: int = Field(0, description="items dead-lettered (e.g. unidentifiable_item)")
    cut: int = Field(0, description="records cut to the record size limit")
    pages: dict[str, int] = Field(
        {}, description="article pages by outcome: extracted, unchanged, or why the feed's text was kept"
    )
    bozo: bool = Field(False, description="malformed, items recovered")
    bozo_count: int | None = Field(None, description="malformed polls so far")
    items_seen: int | None = Field(None, description="items read so far")
    consecutive_failures: int = 0
    last_success: str | None = None
    next_poll: str | None = None
    disabled_reason: str | None = None
    at: str = Field(description="when the poll ended (UTC ISO-8601)")

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


# ----------------------------------------------------------------------------------------------------------
# The size policy
# ----------------------------------------------------------------------------------------------------------

#: The text fields :func:`fit` may shorten, in the order it shortens them (the longest-lived first).
_CUTTABLE: dict[type[_Record], tuple[str, ...]] = {
    Article: ("content", "summary", "title"),
    DeadLetter: ("payload", "error"),
}
_CUT_MARK = " [...]"


class RecordTooLarge(ValueError):
    """A record that stays over the size limit with every cuttable field emptied."""


def fit(record: R, max_bytes: int = MAX_RECORD_BYTES) -> tuple[R, bytes]:
    """The record and its wire bytes, cut so that the bytes are at most ``max_bytes`` long.

    A record that fits is returned as it is. Otherwise its cuttable text fields (an article's content,
    summary and title, also inside an enriched record; a dead letter's payload and error) are
    shortened in that order, each cut at a character boundary and ended with ``" [...]"``, until it
    fits, and ``truncated`` records each cut field's original length in characters. The cut is
    deterministic, so the same oversized input always gives the same record.

    Raises:
        RecordTooLarge: The record is still too large with all those fields cut (its other fields,
            e.g. a million tags, are over the limit by themselves).
    """
    data = encode(record)
    if len(data) <= max_bytes:
        return record, data
    if isinstance(record, Enriched):
        budget = max_bytes - (len(data) - len(encode(record.article)))
        article, _ = fit(record.article, budget)
        cut = record.model_copy(update={"article": article})
        data = encode(cut)
        if len(data) > max_bytes:
            raise RecordTooLarge(
                f"enriched record {record.id} is {len(data)} bytes with its article cut; the limit is "
                f"{max_bytes} (NEWSFLOW_KAFKA_MAX_RECORD_BYTES)"
            )
        return cut, data
    fields = _CUTTABLE.get(type(record), ())
    truncated = dict(getattr(record, "truncated", {}))
    current: _Record = record
    for name in fields:
        for _ in range(3):  # the estimate is exact for plain text; escapes may need a second cut
            excess = len(data) - max_bytes
            value: str = getattr(current, name)
            if excess <= 0 or not value:
                break
            truncated.setdefault(name, len(value))
            kept = _cut(value.removesuffix(_CUT_MARK), _json_size(value) - excess)
            current = current.model_copy(update={name: kept, "truncated": dict(truncated)})
            data = encode(current)
    if len(data) > max_bytes:
        raise RecordTooLarge(
            f"{type(record).__name__} is {len(data)} bytes with {', '.join(fields) or 'nothing'} cut; the "
            f"limit is {max_bytes} (NEWSFLOW_KAFKA_MAX_RECORD_BYTES)"
        )
    return current, data  # type: ignore[return-value]


def _json_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _cut(text: str, max_json_bytes: int) -> str:
    """The longest prefix of ``text`` (plus the cut mark) whose JSON string is at most that many bytes."""
    budget = max_json_bytes - _json_size(_CUT_MARK) + 2  # the mark shares the string's quotes
    if budget <= 2:
        return ""
    lo, hi = 0, len(text)
    # the JSON size grows monotonically with the prefix length: binary search the longest that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _json_size(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + _CUT_MARK
