"""A fast path for well-formed feeds: ElementTree (expat, in C) in place of feedparser's SAX handlers.

:func:`parse` reads RSS 2.0, RSS 1.0 (RDF) and Atom 1.0 documents into the same entry dictionaries
feedparser 6.0 builds for the fields :mod:`connectors.rss.parse` uses (link, id, title, summary,
content, authors, tags, dates, language; feed title, language and ttl), about 8x faster. It returns
``None`` — parse with feedparser instead — for anything it does not reproduce exactly:

- XML that expat rejects (feedparser would flag it bozo and recover with its loose parser), a
  DOCTYPE that feedparser does not strip (or a Netscape RSS 0.91 one), a document whose encoding
  feedparser cannot determine, the XLink namespace;
- roots other than ``<rss version="2.x">``, RDF with the RSS 1.0 namespace, Atom 1.0 ``<feed>``;
- an element with a feedparser handler it has no rule for (iTunes, Media RSS groups, GeoRSS, Atom
  ``<source>``, ...), markup inside RSS text, base64 or non-text content, namespace prefixes it cannot
  resolve as feedparser does. Elements without a handler (``<comments>``, ``slash:``, ``wfw:``,
  unknown namespaces, ...) are stored by feedparser under their own name, so they are skipped.

Exactness comes from replaying feedparser's semantics rather than approximating them: its encoding
detection (``convert_to_utf8``, whose bozo flag is kept) and DOCTYPE removal, its namespace table, tag and
attribute normalisation, ``xml:base`` stack, its post-processing of every text value (strip, relative
URI joins, the UTF-8-read-as-Latin-1 repair and the cp1252 map), its author and tag bookkeeping
(called directly on the entry) and its date parser. Order-dependent rules (a second ``description``
is content, a GUID is the link only until a ``<link>``, the last alternate link wins) are followed
element by element. ``tests/connectors/test_rss_fastparse.py`` holds the two paths equal.

expat expands internal entities: the document is parsed with defusedxml's ElementTree, which raises at
any entity declaration (and the caller, :mod:`connectors.rss.parse`, refuses such documents).
"""

from __future__ import annotations

import contextlib
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import feedparser
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

log = logging.getLogger(__name__)

try:  # feedparser internals, pinned by the equivalence tests to 6.0.x
    from feedparser.api import StrictFeedParser
    from feedparser.datetimes import _parse_date
    from feedparser.encodings import convert_to_utf8
    from feedparser.html import _cp1252
    from feedparser.mixin import _FeedParserMixin
    from feedparser.sanitizer import replace_doctype
    from feedparser.urls import _urljoin, make_safe_absolute_uri
    from feedparser.util import FeedParserDict

    ENABLED = feedparser.__version__.startswith("6.0.")
except ImportError:  # pragma: no cover - another feedparser layout: always use feedparser itself
    ENABLED = False

ATOM_NS = "http://www.w3.org/2005/Atom"
RSS10_NS = "http://purl.org/rss/1.0/"
RSS090_NS = "http://my.netscape.com/rdf/simple/0.9/"
XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"
XHTML = "application/xhtml+xml"
_HTML_TYPES = {"text/html", XHTML}
_SUMMARY_TYPES = {"text/plain", "text/html", XHTML}  # content of these types is also the summary
_RELATIVE = {"comments", "docs", "href", "icon", "id", "link", "logo", "url", "wfw_comment", "wfw_commentrss"}

_XMLNS = re.compile(rb"""xmlns(?::([^\s=/>]+))?\s*=\s*(["'])(.*?)\2""", re.DOTALL)
_LINK_ENTITY = re.compile("&([A-Za-z0-9_]+);")
_XLINK = b"http://www.w3.org/1999/xlink"

# Tag names as feedparser spells them ("prefix:local", lower case; "" for the core namespaces).
_TITLE = {"title", "dc:title"}
_PUBLISHED = {"pubdate", "published", "issued", "dcterms:issued"}
_UPDATED = {"updated", "modified", "lastbuilddate", "dc:date", "dcterms:modified"}
_AUTHOR = {"author", "dc:creator", "dc:author"}
_CATEGORY = {"category", "dc:subject"}
_LANGUAGE = {"language", "dc:language"}
_PERSON = {"name", "email", "uri", "url", "homepage"}
# Elements with feedparser handlers that touch nothing this module reads: allowed without children.
_IGNORED_LEAVES = {
    "enclosure", "rights", "copyright", "created", "dcterms:created", "dcterms:valid", "dc:rights",
    "dc:publisher", "dc:contributor", "expirationdate", "media:content", "media:thumbnail",
}  # fmt: skip
_IGNORED_FEED_LEAVES = _IGNORED_LEAVES | _PUBLISHED | _UPDATED | _CATEGORY | {
    "link", "description", "subtitle", "tagline", "generator", "cloud", "id", "webmaster",
    "managingeditor", "dc:creator", "dc:author",
}  # fmt: skip
# Keys an element without a handler must not be stored under: what is read from entries and feeds,
# and the keys FeedParserDict renames or computes.
_RESERVED = {
    "link", "links", "id", "guid", "guidislink", "title", "summary", "content", "authors", "author",
    "author_detail", "tags", "category", "published", "published_parsed", "updated", "updated_parsed",
    "language", "dc_language", "ttl", "href", "enclosures", "license",
}  # fmt: skip
_IMAGE_CHILDREN = {"url", "title", "link", "width", "height", "description"}
_TEXTINPUT_CHILDREN = {"title", "description", "name", "link"}

if ENABLED:
    _NAMESPACES: dict[str, str] = {k.lower(): v for k, v in _FeedParserMixin.namespaces.items()}
    _STANDARD_PREFIXES = set(_NAMESPACES.values()) - {""}
    _RESERVED |= set(FeedParserDict.keymap)


class Unsupported(Exception):
    """The document needs feedparser; the message says why (logged at debug level)."""


class _Entry:
    """feedparser's author and tag bookkeeping, run on one entry dict (its own code, so its quirks)."""

    if ENABLED:
        _save_author = _FeedParserMixin._save_author
        _sync_author_detail = _FeedParserMixin._sync_author_detail
        _add_tag = _FeedParserMixin._add_tag

    def __init__(self, entry: Any) -> None:
        self.entry = entry

    def _get_context(self) -> Any:
        return self.entry


def parse(data: bytes, headers: dict[str, str]) -> Any | None:
    """feedparser's result (``feed``, ``entries``, ``version``, ``bozo``) for ``data``, or None.

    ``headers`` are the response headers given to feedparser (the content type decides the
    encoding). None means "use feedparser": the reason is logged at debug level.
    """
    if not ENABLED or not data:
        return None
    try:
        return _parse(data, headers)
    except Unsupported as exc:
        log.debug("fast feed parser declined: %s", exc)
    except ET.ParseError as exc:
        log.debug("fast feed parser declined: not well-formed XML (%s)", exc)
    except DefusedXmlException as exc:  # feedparser's strict parser refuses it the same way
        log.debug("fast feed parser declined: %s", exc)
    except Exception:  # a bug here must not cost the feed: feedparser still reads it
        log.warning("fast feed parser failed; falling back to feedparser", exc_info=True)
    return None


def _parse(data: bytes, headers: dict[str, str]) -> Any:
    result = FeedParserDict(bozo=False, entries=[], feed=FeedParserDict(), headers=dict(headers))
    data = convert_to_utf8(result["headers"], data, result)
    if not result.get("encoding"):
        raise Unsupported("unknown character encoding")
    netscape, data, _ = replace_doctype(data)  # as feedparser does before its XML parser
    if netscape:
        raise Unsupported("RSS 0.91 (Netscape DOCTYPE)")
    start = _root_offset(data)
    if data.startswith(b"<!", start):
        raise Unsupported("a DOCTYPE feedparser keeps")
    if _XLINK in data:
        raise Unsupported("the XLink namespace")
    root = defused_fromstring(data)  # no DOCTYPE here; and any entity declaration would raise
    walker = _Walker(_declarations(data, start))
    result["feed"], result["entries"], result["version"] = walker.document(root)
    return result


@dataclass
class _Namespaces:
    """What feedparser makes of a document's namespace declarations (read in document order).

    ``version``: the one it infers from the first telling declaration ("" if none).
    ``elements``: for each namespace it does not know, the document prefix its elements are named
    with (None when that cannot be told statically: several prefixes, a default namespace, a
    standard prefix). ``attributes``: each namespace's document prefix, which feedparser also keys
    attributes by (None when there are several).
    """

    version: str = ""
    elements: dict[str, str | None] = field(default_factory=dict)
    attributes: dict[str, str | None] = field(default_factory=lambda: {XML_NS: "xml"})


def _declarations(data: bytes, start: int) -> _Namespaces:
    """Refuses documents that rebind a prefix or bind a standard prefix (``dc``, ``content``, ...) to
    another known namespace: feedparser would dispatch those elements under it."""
    found = _Namespaces()
    version = ""
    bound: dict[str, str] = {}
    known_prefixes: set[str] = set()
    unknown = found.elements
    for prefix_bytes, _, uri_bytes in _XMLNS.findall(data, start):
        uri = uri_bytes.decode("utf-8", "replace")
        lower = uri.lower()
        prefix = prefix_bytes.decode("utf-8", "replace") or None
        if not uri:
            continue
        if not version:
            if prefix is None and lower == RSS090_NS:
                version = "rss090"
            elif lower == RSS10_NS:
                version = "rss10"
            elif lower == ATOM_NS.lower():
                version = "atom10"
        if prefix is not None:
            if bound.setdefault(prefix, uri) != uri:
                raise Unsupported(f"prefix {prefix!r} bound to two namespaces")
            given = found.attributes.setdefault(uri, prefix)
            if given != prefix:
                found.attributes[uri] = None
        standard = _NAMESPACES.get(_userland(lower))
        if standard is not None:
            if prefix:
                known_prefixes.add(prefix.lower())
                if prefix != standard and prefix in _STANDARD_PREFIXES:
                    raise Unsupported(f"prefix {prefix!r} bound to the {standard or 'core'} namespace")
        elif prefix is None or prefix.lower() in _STANDARD_PREFIXES or unknown.get(uri, prefix) != prefix:
            unknown[uri] = None
        else:
            unknown[uri] = prefix
    for uri, prefix in unknown.items():
        if prefix is not None and prefix.lower() in known_prefixes:
            unknown[uri] = None
    found.version = version
    return found


def _root_offset(data: bytes) -> int:
    """Where the root element starts: past the XML declaration, comments and processing instructions."""
    i, end = 0, len(data)
    while True:
        while i < end and data[i] in b" \t\r\n":
            i += 1
        if data.startswith(b"<?", i):
            close, skip = data.find(b"?>", i), 2
        elif data.startswith(b"<!--", i):
            close, skip = data.find(b"-->", i), 3
        else:
            return i
        if close < 0:
            return end
        i = close + skip


def _userland(uri: str) -> str:
    return "http://backend.userland.com/rss" if "backend.userland.com/rss" in uri else uri


def _has_handler(name: str) -> bool:
    key = name.replace(":", "_")
    return hasattr(StrictFeedParser, f"_start_{key}") or hasattr(StrictFeedParser, f"_end_{key}")


_CONTENT_TYPES = {"text": "text/plain", "plain": "text/plain", "html": "text/html", "xhtml": XHTML}


def _content_type(value: str) -> str:
    value = value.lower()
    return _CONTENT_TYPES.get(value, value)


def _finish(text: str) -> str:
    """What feedparser does to every text value last: repair UTF-8 read as Latin-1, map cp1252."""
    if text.isascii():
        return text
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("iso-8859-1").decode("utf-8")
    return text.translate(_cp1252)


def _leaf(elem: ET.Element, name: str) -> str:
    if len(elem):
        raise Unsupported(f"elements inside <{name}>")
    return elem.text or ""


class _Walker:
    """Walks the tree in document order, keeping the state feedparser's handlers keep."""

    def __init__(self, namespaces: _Namespaces) -> None:
        self.version = namespaces.version
        self.prefixes = namespaces.elements  # unknown namespace -> the prefix its elements are named with
        self.attribute_prefixes = namespaces.attributes
        self.names: dict[str, str] = {}
        self.handled: dict[str, bool] = {}
        self.base = ""
        self.bases: list[str] = []
        self.title_depth = -1

    def name(self, tag: str) -> str:
        """feedparser's name for an element: "prefix:local" in lower case ("local" in core namespaces)."""
        name = self.names.get(tag)
        if name is None:
            if tag[0] != "{":
                name = tag.lower()
            else:
                namespace, local = tag[1:].split("}", 1)
                prefix = _NAMESPACES.get(_userland(namespace.lower()))
                if prefix is None:
                    prefix = self.prefixes.get(namespace)
                    if prefix is None:
                        raise Unsupported(f"elements of namespace {namespace} (prefix unclear)")
                name = f"{prefix}:{local}".lower() if prefix else local.lower()
            self.names[tag] = name
        return name

    def attributes(self, attrib: dict[str, str]) -> dict[str, str]:
        """feedparser's attribute dict: a key per attribute with known namespaces' standard prefixes,
        then one per qualified name as written; keys in lower case, ``rel`` and ``type`` values too."""
        attrs: dict[str, str] = {}
        qualified: dict[str, str] = {}
        for key, value in attrib.items():
            if key[0] == "{":
                namespace, local = key[1:].split("}", 1)
                prefix = _NAMESPACES.get(namespace.lower(), "")
                attrs[(f"{prefix}:{local}" if prefix else local).lower()] = value
                given = self.attribute_prefixes.get(namespace)
                if given is None:
                    raise Unsupported(f"attributes of namespace {namespace} (prefix unclear)")
                qualified.setdefault(f"{given}:{local}", value)
            else:
                attrs[key.lower()] = value
                qualified.setdefault(key, value)
        for name, value in qualified.items():
            attrs[name.lower()] = value
        return {k: v.lower() if k in ("rel", "type") and v else v for k, v in attrs.items()}

    # -- per element: attributes and xml:base, as feedparser's unknown_starttag/unknown_endtag ------------
    def open(self, elem: ET.Element) -> dict[str, str]:
        attrs = self.attributes(elem.attrib) if elem.attrib else {}
        given = attrs.get("xml:base", attrs.get("base")) if attrs else None
        if given or self.base:  # (with neither, feedparser's join leaves the base "")
            given = given or self.base
            if self.base:
                self.base = make_safe_absolute_uri(self.base, given) or self.base
            else:
                self.base = _urljoin(self.base, given)
        self.bases.append(self.base)
        return attrs

    def close(self) -> None:
        self.bases.pop()
        if self.bases and self.bases[-1]:
            self.base = self.bases[-1]

    def value(self, text: str, element: str, resolve: bool = True) -> str:
        """feedparser's ``pop`` for a text element (no base64: such content is refused)."""
        output = text.strip()
        if output and resolve and element in _RELATIVE:
            output = _urljoin(self.base or "", output)
        return _finish(output)

    # -- document and channel ---------------------------------------------------------------------------
    def document(self, root: ET.Element) -> tuple[Any, list[Any], str]:
        feed = FeedParserDict()
        entries: list[Any] = []
        attrs = self.open(root)
        name = self.name(root.tag)
        if name == "rss" and root.tag == "rss":
            if not attrs.get("version", "").startswith("2."):
                raise Unsupported(f"RSS version {attrs.get('version')!r}")
            version = "rss20" if not self.version.startswith("rss") else self.version
            self.version = version
            self._root_language(attrs, feed)
            channels = list(root)
            if len(channels) != 1 or channels[0].tag != "channel":
                raise Unsupported("<rss> without exactly one <channel> (and nothing else)")
            self._channel_attrs(self.open(channels[0]))
            self.feed_children(channels[0], 2, feed, entries, "item")
            self.close()
        elif name == "rdf:rdf" and self.version == "rss10":
            version = "rss10"
            for child in root:
                cattrs = self.open(child)
                child_name = self.name(child.tag)
                if child_name == "channel":
                    self._channel_attrs(cattrs)
                    self.feed_children(child, 2, feed, entries, "")
                elif child_name == "item":
                    entries.append(self.item(child, cattrs, 2))
                elif child_name in ("image", "textinput"):
                    self.container(
                        child, 2, _IMAGE_CHILDREN if child_name == "image" else _TEXTINPUT_CHILDREN
                    )
                else:
                    self.unhandled(child, child_name, "<rdf:RDF>")
                self.close()
        elif name == "feed" and root.tag == f"{{{ATOM_NS}}}feed" and self.version == "atom10":
            version = "atom10"
            self._root_language(attrs, feed)
            self.feed_children(root, 1, feed, entries, "entry")
        else:
            raise Unsupported(f"root <{root.tag}> (version {self.version or 'unknown'})")
        self.close()
        return feed, entries, version

    def unhandled(self, elem: ET.Element, name: str, where: str) -> None:
        """An element feedparser has no handler for (nor its descendants): stored under its own
        name, which must not be one that is read. Visited for ``xml:base`` only."""
        handled = self.handled.get(name)
        if handled is None:
            handled = self.handled[name] = _has_handler(name) or name.replace(":", "_") in _RESERVED
        if handled:
            raise Unsupported(f"<{name}> in {where}")
        self.unhandled_children(elem, where)

    def unhandled_children(self, elem: ET.Element, where: str) -> None:
        for child in elem:
            self.open(child)
            self.unhandled(child, self.name(child.tag), where)
            self.close()

    @staticmethod
    def _root_language(attrs: dict[str, str], feed: Any) -> None:
        lang = attrs.get("xml:lang", attrs.get("lang"))
        if lang:
            feed["language"] = lang.replace("_", "-")

    @staticmethod
    def _channel_attrs(attrs: dict[str, str]) -> None:
        if "lastmod" in attrs or "href" in attrs:
            raise Unsupported("CDF attributes on <channel>")

    def feed_children(self, parent: ET.Element, depth: int, feed: Any, entries: list[Any], item: str) -> None:
        """The children of ``<channel>`` (RSS) or ``<feed>`` (Atom), at ``depth + 1``."""
        here = depth + 1
        for child in parent:
            attrs = self.open(child)
            name = self.name(child.tag)
            if item and name == item:
                entries.append(self.item(child, attrs, here))
            elif name in _TITLE:
                value = self.construct(child, attrs, "text/plain", name)
                if not -1 < self.title_depth <= here:
                    feed["title"] = value
                if value:
                    self.title_depth = here
            elif name in _LANGUAGE:
                feed["language"] = self.value(_leaf(child, name), "language")
            elif name == "ttl":
                text = _leaf(child, name)
                feed["ttl"] = FeedParserDict(attrs) if attrs else self.value(text, "ttl")
            elif name in ("image", "textinput"):
                self.container(child, here, _IMAGE_CHILDREN if name == "image" else _TEXTINPUT_CHILDREN)
            elif name in ("author", "contributor"):
                self.persons(child)
            elif name == "items" and self.version == "rss10":  # stored as the feed's "entries": unread
                self.unhandled_children(child, "<items>")
            elif name in _IGNORED_FEED_LEAVES:
                _leaf(child, name)
            else:
                self.unhandled(child, name, "the channel")
            self.close()

    def container(self, elem: ET.Element, depth: int, allowed: set[str]) -> None:
        """``<image>`` / ``<textinput>``: their titles only move feedparser's title depth."""
        self.title_depth = -1
        for child in elem:
            self.open(child)
            name = self.name(child.tag)
            if name not in allowed:
                raise Unsupported(f"<{name}> in an image or text input")
            if name == "title" and _leaf(child, name).strip():
                self.title_depth = depth + 1
            _leaf(child, name)
            self.close()

    def persons(self, elem: ET.Element) -> None:
        """A feed's author or an entry's contributor: nothing read, only checked and visited."""
        for child in elem:
            self.open(child)
            name = self.name(child.tag)
            if name not in _PERSON:
                raise Unsupported(f"<{name}> in <{self.name(elem.tag)}>")
            _leaf(child, name)
            self.close()

    # -- items --------------------------------------------------------------------------------------------
    def item(self, elem: ET.Element, attrs: dict[str, str], depth: int) -> Any:
        entry: dict[str, Any] = {}  # none of its keys is one FeedParserDict renames, so a dict will do
        person = _Entry(entry)
        self.title_depth = -1
        about = attrs.get("rdf:about")
        if about:
            entry["id"] = about
        if "lastmod" in attrs or "href" in attrs:
            raise Unsupported("CDF attributes on an item")
        has_content = False
        for child in elem:
            cattrs = self.open(child)
            name = self.name(child.tag)
            if name in _TITLE:  # the first non-empty title wins (until a <source> resets that)
                value = self.construct(child, cattrs, "text/plain", name)
                if not -1 < self.title_depth <= depth + 1:
                    entry["title"] = value
                if value:
                    self.title_depth = depth + 1
            elif name == "link":
                self._link(child, cattrs, entry)
            elif name in ("guid", "id"):
                is_link = cattrs.get("ispermalink", "true") == "true"
                value = self.value(_leaf(child, name), "id", resolve=is_link)
                entry["id"] = value
                entry.setdefault("guidislink", is_link and "link" not in entry)
                if is_link:
                    entry.setdefault("link", value)
            elif name in ("description", "dc:description", "summary"):
                if "summary" in entry and not has_content:
                    has_content = True
                    self._content(child, cattrs, entry, "text/plain", name)
                else:
                    default = "text/plain" if name == "summary" else "text/html"
                    entry["summary"] = self.construct(child, cattrs, default, name)
            elif name in ("content", "content:encoded"):
                has_content = True
                self._content(child, cattrs, entry, "text/plain" if name == "content" else "text/html", name)
            elif name in _AUTHOR:
                self._author(child, entry, person)
            elif name in _CATEGORY:
                person._add_tag(
                    cattrs.get("term"), cattrs.get("scheme", cattrs.get("domain")), cattrs.get("label")
                )
                value = self.value(_leaf(child, name), "category")
                if value:
                    tags = entry["tags"]
                    if tags and not tags[-1]["term"]:
                        tags[-1]["term"] = value
                    else:
                        person._add_tag(value, None, None)
            elif name in _PUBLISHED or name in _UPDATED:
                key = "published" if name in _PUBLISHED else "updated"
                entry[key] = value = self.value(_leaf(child, name), key)
                entry[f"{key}_parsed"] = _parse_date(value)
            elif name in _LANGUAGE:
                entry["language"] = self.value(_leaf(child, name), "language")
            elif name == "contributor":
                self.persons(child)
            elif name == "source" and not len(child):
                self.title_depth = -1
            elif name in _IGNORED_LEAVES:
                _leaf(child, name)
            else:
                self.unhandled(child, name, "an item")
            self.close()
        return FeedParserDict(entry)

    def _link(self, elem: ET.Element, attrs: dict[str, str], entry: Any) -> None:
        """feedparser's ``_start_link``/``pop('link')``: an href is a link if rel=alternate, type HTML."""
        text = _leaf(elem, "link")
        attrs.setdefault("rel", "alternate")
        attrs.setdefault("type", "application/atom+xml" if attrs["rel"] == "self" else "text/html")
        href = attrs.get("url", attrs.get("uri", attrs.get("href")))
        if href:
            attrs.pop("url", None)
            attrs.pop("uri", None)
            attrs["href"] = href
        if "href" in attrs:
            href = _urljoin(self.base or "", attrs["href"])
            if attrs["rel"] == "alternate" and _content_type(attrs["type"]) in _HTML_TYPES:
                entry["link"] = href
            return
        value = self.value(text, "link")
        if "&" in value:
            value = _LINK_ENTITY.sub(r"&\g<1>", value.replace("&amp;", "&"))
        entry["link"] = value

    def _content(self, elem: ET.Element, attrs: dict[str, str], entry: Any, default: str, name: str) -> None:
        """feedparser's ``_start_content``/``_end_content``: appended; also the summary if none yet."""
        kind = _content_type(attrs.get("type", default))
        value = self.construct(elem, attrs, default, name)
        entry.setdefault("content", []).append(FeedParserDict(type=kind, value=value))
        if kind in _SUMMARY_TYPES:
            entry.setdefault("summary", value)

    def _author(self, elem: ET.Element, entry: Any, person: _Entry) -> None:
        """feedparser's ``_start_author``/``_end_author``, with Atom's name/email/uri children."""
        entry.setdefault("authors", []).append(FeedParserDict())
        text = [elem.text or ""]
        for child in elem:
            self.open(child)
            name = self.name(child.tag)
            if name not in _PERSON:
                raise Unsupported(f"<{name}> in an author")
            raw = _leaf(child, name)
            if name in ("name", "email"):
                person._save_author(name, raw.strip())
            else:
                person._save_author("href", self.value(raw, "href"))
            text.append(child.tail or "")
            self.close()
        entry["author"] = self.value("".join(text), "author")
        person._sync_author_detail()

    # -- text constructs ----------------------------------------------------------------------------------
    def construct(self, elem: ET.Element, attrs: dict[str, str], default: str, name: str) -> str:
        """The value of a title, summary or content element, as feedparser's ``push_content``/``pop``."""
        kind = _content_type(attrs.get("type", default))
        if attrs.get("mode", "") == "base64" or not (
            kind.startswith("text/") or kind.endswith(("+xml", "/xml"))
        ):
            raise Unsupported(f"base64 content in <{name}>")
        if not len(elem):
            text = elem.text or ""
            return self.value(escape(text) if kind == XHTML else text, name)
        if kind != XHTML or self.version != "atom10":
            raise Unsupported(f"elements inside <{name}> of type {kind}")
        pieces: list[str] = []
        if elem.text:
            pieces.append(escape(elem.text))
        for child in elem:
            self._xhtml(child, pieces)
        return self.value("".join(_strip_div(pieces)), name)

    def _xhtml(self, elem: ET.Element, pieces: list[str]) -> None:
        """Inline XHTML re-serialised as feedparser does (tags, escaped text, attributes in order)."""
        attrs = self.open(elem)
        if not elem.tag.startswith(f"{{{XHTML_NS}}}"):
            raise Unsupported(f"<{elem.tag}> in XHTML content")
        tag = elem.tag[len(XHTML_NS) + 2 :].lower()
        if tag in ("body", "svg", "math"):  # feedparser ends the content at </body>, tracks svg and math
            raise Unsupported(f"<{tag}> in XHTML content")
        attributes = "".join(f' {k}="{escape(v, {chr(34): "&quot;"})}"' for k, v in attrs.items())
        pieces.append(f"<{tag}{attributes}>")
        if elem.text:
            pieces.append(escape(elem.text))
        for child in elem:
            self._xhtml(child, pieces)
        pieces.append(f"</{tag}>")
        self.close()
        if elem.tail:
            pieces.append(escape(elem.tail))


def _strip_div(pieces: list[str]) -> list[str]:
    """feedparser's removal of Atom XHTML's wrapping ``<div>`` (only when it wraps everything)."""
    while len(pieces) > 1 and not pieces[-1].strip():
        del pieces[-1]
    while len(pieces) > 1 and not pieces[0].strip():
        del pieces[0]
    if pieces and (pieces[0] == "<div>" or pieces[0].startswith("<div ")) and pieces[-1] == "</div>":
        depth = 0
        for piece in pieces[:-1]:
            if piece.startswith("</"):
                depth -= 1
                if depth == 0:
                    return pieces
            elif piece.startswith("<") and not piece.endswith("/>"):
                depth += 1
        return pieces[1:-1]
    return pieces
