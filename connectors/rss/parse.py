"""Parse fetched feed bytes with feedparser into articles and rejected items.

feedparser is lenient: on malformed XML it sets ``bozo`` and often still recovers entries. A bozo
feed is a quality signal counted per feed, not a crash; entries it recovered are still used. An
entry with no link, no GUID and no title cannot be identified and is rejected with a reason.

A document that declares any XML entity is refused (status ``xml_entities``), with defusedxml's
semantics: feedparser's strict parser, whose SAX driver is defusedxml's expat reader (see
:func:`create_parser`), raises at the first entity declaration, wherever it is, in any encoding,
before a single entity is expanded; and feedparser's loose parser, the fallback for malformed XML,
only ever expands the entities feedparser's own DOCTYPE rewrite keeps, so a document for which that
rewrite keeps any is refused before parsing (:func:`declares_entities`). Real feeds do not declare
entities; a billion laughs, a quadratic blow-up and an external entity are all refused the same way.

The output is plain text, so feedparser's HTML sanitizer and relative-URI rewriting inside content
are turned off, and it gets no document URL (joining it with every element's base costs a third of
its time); relative item links are resolved here, against the URL the document was fetched from.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import feedparser
import feedparser.api
from defusedxml import DefusedXmlException
from defusedxml.expatreader import DefusedExpatParser
from feedparser.encodings import convert_to_utf8
from feedparser.sanitizer import replace_doctype

from connectors.rss.normalize import ID_SCHEME, article_id, canonical_url, html_to_text, to_utc_iso
from newsflow.records import Article, FeedStatus, content_hash, utc_now

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200_000  # an article body longer than this is cut (and says so in the log)
LANGUAGE_SAMPLE_CHARS = 300  # py3langid's cost grows with the text; a title and lead suffice
# feedparser's strict parser: expat through xml.sax, driver create_parser() below.
feedparser.api.PREFERRED_XML_PARSERS = [__name__]
ENTITIES_REFUSED = "the document declares XML entities (a possible entity-expansion attack); refused"
_SKIP_HOURS = re.compile(rb"<skipHours\s*>(.*?)</skipHours\s*>", re.IGNORECASE | re.DOTALL)
_SKIP_DAYS = re.compile(rb"<skipDays\s*>(.*?)</skipDays\s*>", re.IGNORECASE | re.DOTALL)
_HOUR = re.compile(rb"<hour\s*>\s*(\d{1,2})\s*</hour\s*>", re.IGNORECASE)
_DAY = re.compile(rb"<day\s*>\s*([A-Za-z]+)\s*</day\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Rejected:
    reason: str
    error: str
    payload: str


@dataclass
class ParsedFeed:
    title: str = ""
    bozo: bool = False
    bozo_reason: str = ""
    is_feed: bool = True
    refused: FeedStatus | None = None  # why the document was not parsed at all (xml_entities)
    ttl_minutes: int | None = None
    skip_hours: frozenset[int] = frozenset()
    skip_days: frozenset[str] = frozenset()  # lower-case English day names
    articles: list[Article] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # article id -> its id under an older id scheme, where they differ (asked for with ``legacy_scheme``)
    legacy_ids: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> FeedStatus:
        """``ok``, ``xml_entities`` or ``not_a_feed``."""
        if self.refused is not None:
            return self.refused
        return FeedStatus.OK if self.is_feed else FeedStatus.NOT_A_FEED


def create_parser() -> DefusedExpatParser:
    """The SAX driver of feedparser's strict parser (``xml.sax.make_parser`` calls this by module name).

    defusedxml's expat reader: any entity declaration raises. An external DTD reference (an old
    RSS 0.91 DOCTYPE) is allowed: feedparser turns external entity loading off, so it is never fetched.
    """
    return DefusedExpatParser(forbid_dtd=False, forbid_entities=True, forbid_external=False)


def declares_entities(data: bytes, content_type: str | None = None) -> bool:
    """Whether feedparser's loose parser would be handed entity declarations from this document.

    feedparser decodes the document (any encoding) and rewrites its DOCTYPE, keeping the entity
    declarations it deems safe (plain values, no references) for the loose parser, which expands
    them without limit (a 100 KB value referenced 100,000 times is 10 GB). This runs the same two
    steps on the same bytes. The expat parsers need no such check: they raise at any declaration.
    """
    result: dict[str, Any] = {}
    try:
        converted = convert_to_utf8({"content-type": content_type or "application/xml"}, data, result)
        _, _, safe_entities = replace_doctype(converted)
    except Exception:  # feedparser itself would not get further: nothing is declared to anyone
        return False
    return bool(safe_entities)


def _skips(data: bytes) -> tuple[frozenset[int], frozenset[str]]:
    hours: set[int] = set()
    days: set[str] = set()
    if block := _SKIP_HOURS.search(data):
        hours = {int(h) % 24 for h in _HOUR.findall(block.group(1)) if int(h) <= 24}
    if block := _SKIP_DAYS.search(data):
        days = {d.decode("ascii").lower() for d in _DAY.findall(block.group(1))}
    return frozenset(hours), frozenset(days)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language (py3langid), or None for too little text."""
    sample = text[:LANGUAGE_SAMPLE_CHARS].strip()
    if len(sample) < 20:
        return None
    import py3langid

    lang, _ = py3langid.classify(sample)
    return str(lang)


def parse_feed(
    data: bytes,
    feed_url: str,
    source: str = "",
    language: str | None = None,
    content_type: str | None = None,
    fetched_at: str | None = None,
    base_url: str | None = None,
    legacy_scheme: int | None = None,
) -> ParsedFeed:
    """Parse one feed document; never raises for bad content (see :class:`ParsedFeed`).

    With ``legacy_scheme`` (an older :data:`~connectors.rss.normalize.ID_SCHEME`), ``legacy_ids``
    says which articles had another id under it.
    """
    if declares_entities(data, content_type):
        return _refused(source)
    # Without a content-type feedparser flags every document as bozo; bytes read from a file or a
    # server that sent none are judged on their content alone.
    # No content-location: feedparser would join it with every element's xml:base (a third of its
    # parse time). Relative item links are resolved below, against where the bytes came from.
    headers = {"content-type": content_type or "application/xml"}
    try:
        # A stream, not bytes: feedparser would try a short byte string as a file name first.
        parsed = feedparser.parse(
            io.BytesIO(data), response_headers=headers, sanitize_html=False, resolve_relative_uris=False
        )
    except DefusedXmlException:  # the strict parser met an entity declaration: nothing expanded
        return _refused(source)
    meta = parsed.get("feed", {})
    result = ParsedFeed(title=html_to_text(meta.get("title", "")) or source)
    result.bozo = bool(parsed.get("bozo"))
    if result.bozo:
        exc = parsed.get("bozo_exception")
        result.bozo_reason = f"{type(exc).__name__}: {exc}" if exc is not None else "malformed feed"
    # No version and no entries: HTML page, empty body, or unrecoverable XML.
    result.is_feed = bool(parsed.get("version")) or bool(parsed.get("entries"))
    ttl = meta.get("ttl")
    if ttl and str(ttl).strip().isdigit():
        result.ttl_minutes = int(str(ttl).strip())
    if result.is_feed:
        result.skip_hours, result.skip_days = _skips(data)
    fetched = fetched_at or utc_now()
    document = base_url or feed_url  # the base of relative links (after redirects); ids use feed_url
    feed_language = language or (meta.get("language") or "").split("-")[0].lower() or None
    for entry in parsed.get("entries", []):
        item = entry_to_article(entry, feed_url, document, source or result.title, feed_language, fetched)
        if isinstance(item, Rejected):
            result.rejected.append(item)
            continue
        result.articles.append(item)
        if legacy_scheme is not None:
            old = _identity(entry, feed_url, document, legacy_scheme)[3]
            if old is not None and old != item.id:
                result.legacy_ids[item.id] = old
    return result


def _refused(source: str) -> ParsedFeed:
    return ParsedFeed(
        title=source, is_feed=False, refused=FeedStatus.XML_ENTITIES, bozo_reason=ENTITIES_REFUSED
    )


def entry_to_article(
    entry: Any, feed_url: str, document: str, source: str, feed_language: str | None, fetched_at: str
) -> Article | Rejected:
    """One feedparser entry as an :class:`Article`, or why it is rejected."""
    canonical, guid, title, ident = _identity(entry, feed_url, document)
    link = entry.get("link") or ""
    if ident is None:
        return Rejected(
            reason="unidentifiable_item",
            error="feed item has no link, no GUID and no title; it cannot be identified or deduplicated",
            payload=repr({k: entry.get(k) for k in ("summary", "published", "author")})[:4000],
        )
    summary = html_to_text(entry.get("summary", ""))
    content = ""
    for block in entry.get("content", []) or []:
        text = html_to_text(block.get("value", ""))
        if len(text) > len(content):
            content = text
    if content == summary:
        content = ""
    if len(content) > MAX_TEXT_CHARS:
        log.info("article %s body of %d chars cut to %d", ident, len(content), MAX_TEXT_CHARS)
        content = content[:MAX_TEXT_CHARS]
    summary = summary[:MAX_TEXT_CHARS]
    # An element named like a key feedparser fills (<authors>, <published_parsed>) leaves a string there.
    authors = [a.get("name", "") for a in _dicts(entry.get("authors")) if a.get("name")]
    if not authors and entry.get("author"):
        authors = [html_to_text(entry["author"])]
    tags = [t.get("term", "") for t in _dicts(entry.get("tags")) if t.get("term")]
    published = to_utc_iso(_date(entry.get("published_parsed")) or _date(entry.get("updated_parsed")))
    language = _entry_language(entry) or detect_language(f"{title}. {summary or content}") or feed_language
    return Article(
        id=ident,
        feed_url=feed_url,
        source=source,
        url=web_url(document, link),
        canonical_url=canonical,
        guid=str(guid) if guid else None,
        title=title,
        summary=summary,
        content=content,
        authors=authors,
        tags=tags,
        language=language,
        published_at=published,
        fetched_at=fetched_at,
        content_hash=content_hash(title, summary, content),
    )


def _identity(
    entry: Any, feed_url: str, document: str, scheme: int = ID_SCHEME
) -> tuple[str | None, str | None, str, str | None]:
    """(canonical URL, GUID, title, article id) of an entry under an id scheme."""
    link = entry.get("link") or ""
    guid = entry.get("id") or entry.get("guid") or None
    title = html_to_text(entry.get("title", ""))
    canonical = canonical_url(link, base=document, scheme=scheme) if link else None
    if canonical is None and guid and str(guid).startswith(("http://", "https://")):
        canonical = canonical_url(str(guid), scheme=scheme)
    return canonical, guid, title, article_id(canonical, guid, feed_url, title)


def _dicts(value: Any) -> list[Any]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _date(value: Any) -> time.struct_time | None:
    return value if isinstance(value, time.struct_time) else None


def _entry_language(entry: Any) -> str | None:
    for key in ("language", "dc_language"):
        value = entry.get(key)
        if value:
            return str(value).split("-")[0].lower()
    return None


def web_url(base: str, link: str) -> str | None:
    """``link`` resolved against ``base`` if that is an http(s) URL; None for ``javascript:``,
    ``file:``, ``data:`` and any other scheme (the article keeps its GUID or feed identity)."""
    from urllib.parse import urljoin, urlsplit

    if not link:
        return None
    try:
        joined = urljoin(base, link.strip())
        parts = urlsplit(joined)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return joined
