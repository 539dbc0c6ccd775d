"""Parse fetched feed bytes with feedparser into articles and rejected items.

feedparser is lenient: on malformed XML it sets ``bozo`` and often still recovers entries. A bozo
feed is a quality signal counted per feed, not a crash; entries it recovered are still used. An
entry with no link, no GUID and no title cannot be identified and is rejected with a reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import feedparser

from connectors.rss.normalize import article_id, canonical_url, html_to_text, to_utc_iso
from newsflow.records import Article, content_hash, utc_now

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200_000  # an article body longer than this is cut (and says so in the log)


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
    ttl_minutes: int | None = None
    articles: list[Article] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language (py3langid), or None for too little text."""
    sample = text[:1000].strip()
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
) -> ParsedFeed:
    """Parse one feed document; never raises for bad content (see :class:`ParsedFeed`)."""
    # Without a content-type feedparser flags every document as bozo; bytes read from a file or a
    # server that sent none are judged on their content alone.
    headers = {"content-location": feed_url, "content-type": content_type or "application/xml"}
    parsed: Any = feedparser.parse(
        data, response_headers=headers, sanitize_html=True, resolve_relative_uris=True
    )
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
    fetched = fetched_at or utc_now()
    site = meta.get("link") or feed_url
    feed_language = language or (meta.get("language") or "").split("-")[0].lower() or None
    for entry in parsed.get("entries", []):
        item = _entry_to_article(entry, feed_url, site, source or result.title, feed_language, fetched)
        if isinstance(item, Rejected):
            result.rejected.append(item)
        else:
            result.articles.append(item)
    return result


def _entry_to_article(
    entry: Any, feed_url: str, site: str, source: str, feed_language: str | None, fetched_at: str
) -> Article | Rejected:
    link = entry.get("link") or ""
    guid = entry.get("id") or entry.get("guid") or None
    title = html_to_text(entry.get("title", ""))
    canonical = canonical_url(link, base=site) if link else None
    if canonical is None and guid and str(guid).startswith(("http://", "https://")):
        canonical = canonical_url(str(guid))
    ident = article_id(canonical, guid, feed_url, title)
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
    authors = [a.get("name", "") for a in entry.get("authors", []) if a.get("name")]
    if not authors and entry.get("author"):
        authors = [html_to_text(entry["author"])]
    tags = [t.get("term", "") for t in entry.get("tags", []) if t.get("term")]
    published = to_utc_iso(entry.get("published_parsed") or entry.get("updated_parsed"))
    language = _entry_language(entry) or detect_language(f"{title}. {summary or content}") or feed_language
    return Article(
        id=ident,
        feed_url=feed_url,
        source=source,
        url=urljoin_safe(site, link) if link else None,
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


def _entry_language(entry: Any) -> str | None:
    for key in ("language", "dc_language"):
        value = entry.get(key)
        if value:
            return str(value).split("-")[0].lower()
    return None


def urljoin_safe(base: str, link: str) -> str:
    from urllib.parse import urljoin

    try:
        return urljoin(base, link.strip())
    except ValueError:
        return link.strip()
