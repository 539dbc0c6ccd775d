"""Turning feed entries into clean :class:`~newsflow.records.Article` fields.

- HTML to plain text (block elements become line breaks, scripts and styles are dropped).
- Dates to UTC ISO-8601; a missing or unparseable date is ``None`` (``fetched_at`` is always set).
- Canonical URLs: lower-case scheme and host, no default port, no fragment, tracking parameters
  (``utm_*``, ``fbclid``, ``gclid`` and similar) removed, remaining parameters sorted; then w3lib's
  ``canonicalize_url`` rules: ``/./`` and ``/../`` segments resolved, percent-encodings normalised
  (``%7e`` is ``~``, ``%2f`` is ``%2F``, non-ASCII characters percent-encoded as UTF-8), non-ASCII
  host names in IDNA (punycode).
- Article id: a stable hash of the canonical URL; else of the GUID; else of feed URL + title. The
  same story syndicated by two feeds under one canonical URL gets one id.
- Id schemes: :data:`ID_SCHEME` versions these rules. Scheme 1 (before w3lib's rules) is kept,
  ``canonical_url(url, scheme=1)``, so that ingest still recognises the ids an older state store
  holds (docs/INGEST.md, "Id schemes").
"""

from __future__ import annotations

import calendar
import hashlib
import html
import re
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from w3lib.url import canonicalize_url

#: The version of the article id rules. 1: canonical URLs without w3lib's rules (state stores written
#: before ids were versioned); 2: with them. A new scheme keeps the older ones' rules callable.
ID_SCHEME = 2

TRACKING_PARAMS = {
    "fbclid",
    "gclid",
    "dclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "yclid",
    "twclid",
    "igshid",
    "mc_cid",
    "mc_eid",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "oly_anon_id",
    "oly_enc_id",
    "vero_id",
    "rb_clickid",
    "s_cid",
    "cmpid",
    "ocid",
    "ncid",
    "sr_share",
    "at_medium",
    "at_campaign",
    "spm",
    "__twitter_impression",
}
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "ga_", "hsa_")
_BLOCK_TAGS = {
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "pre",
    "figure",
    "figcaption",
    "hr",
}
_SKIP_TAGS = {"script", "style", "noscript", "template", "iframe", "svg", "head"}
_WS = re.compile(r"[ \t\r\f\v\u00a0]+")
_NL = re.compile(r"\n\s*\n+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS and self._skip:
            self._skip -= 1
        elif tag in _BLOCK_TAGS and tag not in ("br", "hr"):  # void elements break once
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(value: str | None) -> str:
    """Plain text from an HTML fragment (or from plain text, which passes through unchanged)."""
    if not value:
        return ""
    if "<" not in value and "&" not in value:
        text = value
    else:
        parser = _TextExtractor()
        try:
            parser.feed(value)
            parser.close()
            text = "".join(parser.parts)
        except (AssertionError, ValueError):  # pathological markup: fall back to a tag strip
            text = html.unescape(re.sub(r"<[^>]*>", " ", value))
    lines = (_WS.sub(" ", line).strip() for line in text.split("\n"))
    return _NL.sub("\n\n", "\n".join(lines)).strip()


def to_utc_iso(struct: time.struct_time | None) -> str | None:
    """feedparser's UTC ``*_parsed`` struct to ISO-8601 with ``Z``; None when absent or absurd."""
    if struct is None:
        return None
    try:
        dt = datetime.fromtimestamp(calendar.timegm(struct), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None
    if not 1990 <= dt.year <= datetime.now(UTC).year + 1:
        return None
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def epoch_to_iso(ts: float) -> str:
    """Epoch seconds as UTC ISO-8601 with ``Z`` (whole seconds)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def canonical_url(url: str | None, base: str | None = None, scheme: int = ID_SCHEME) -> str | None:
    """The canonical form of an article URL under an id scheme (see module docstring); None if it is
    not http(s)."""
    if not url:
        return None
    url = url.strip()
    if base:
        url = urljoin(base, url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    protocol = parts.scheme.lower()
    if protocol not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if scheme > 1 and ":" in host:
        host = f"[{host}]"  # an IPv6 literal (scheme 1 lost its brackets)
    if port and not ((protocol == "http" and port == 80) or (protocol == "https" and port == 443)):
        host = f"{host}:{port}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in TRACKING_PARAMS and not k.lower().startswith(TRACKING_PREFIXES)
    ]
    query.sort()
    canonical = urlunsplit((protocol, host, parts.path or "/", urlencode(query, doseq=True), ""))
    if scheme == 1:
        return canonical
    try:
        return canonicalize_url(canonical, keep_blank_values=True)
    except ValueError:  # a host name IDNA cannot encode: the form above is still a stable key
        return canonical


def article_id(canonical: str | None, guid: str | None, feed_url: str, title: str) -> str | None:
    """Stable id: hash of canonical URL, else GUID, else feed URL + title; None if none exist."""
    if canonical:
        key = f"url:{canonical}"
    elif guid and guid.strip():
        key = f"guid:{guid.strip()}"
    elif title.strip():
        key = f"title:{feed_url}\x00{title.strip().lower()}"
    else:
        return None
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
