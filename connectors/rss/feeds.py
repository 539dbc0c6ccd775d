"""The feeds list: YAML (``feeds: [{url, name, language, interval, enabled, full_text}]``) or OPML.

OPML import merges into a YAML feeds file, deduplicated by URL (compared in canonical form, so
``HTTP://Example.com/rss`` and ``http://example.com/rss`` are one feed); entries already in the file
keep their overrides. OPML export writes ``text``/``title``/``xmlUrl`` outlines plus ``language`` and
``newsflowInterval``/``newsflowEnabled``/``newsflowFullText`` attributes, which the importer reads back.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.rss.normalize import canonical_url
from connectors.rss.schedule import parse_duration
from newsflow.errors import ConfigError
from newsflow.records import utc_now


class Feed(BaseModel):
    """One feed and its per-feed overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(min_length=8)
    name: str = ""
    language: str | None = None
    interval: str | None = Field(None, description="poll interval override, e.g. 30m")
    enabled: bool = True
    full_text: Literal["auto", "always", "never"] | None = Field(
        None, description="fetch article pages: auto, always or never (default NEWSFLOW_INGEST_FULL_TEXT)"
    )

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @property
    def interval_s(self) -> float | None:
        return parse_duration(self.interval) if self.interval else None


def feed_key(url: str) -> str:
    """What two feed URLs must share to be the same feed (canonical form, else the stripped URL)."""
    return canonical_url(url) or url.strip()


def load_feeds(path: Path | str, base: str | None = None) -> list[Feed]:
    """Read a feeds file; ``{base}`` in URLs is replaced by ``base`` (the demo's local server)."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"feeds file {path} not found; pass --feeds or set NEWSFLOW_FEEDS_FILE") from exc
    if path.suffix.lower() in (".opml", ".xml"):
        entries: list[Any] = opml_entries(raw, path)
    else:
        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"feeds file {path} is not valid YAML: {exc}") from exc
        entries = data.get("feeds", []) if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise ConfigError(f"feeds file {path}: expected a list under 'feeds:'")
    feeds = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"url": entry}
        if base is not None and isinstance(entry, dict) and "url" in entry:
            entry = {**entry, "url": str(entry["url"]).replace("{base}", base.rstrip("/"))}
        try:
            feeds.append(Feed.model_validate(entry))
        except ValidationError as exc:
            raise ConfigError(f"feeds file {path}, entry {i + 1}: {exc.errors()[0]['msg']}") from exc
    return feeds


def opml_entries(raw: str, path: Path | str = "<opml>") -> list[dict[str, Any]]:
    """Feed entries from OPML text: every ``outline`` with an ``xmlUrl``, at any depth."""
    try:
        root = defused_fromstring(raw)
    except DefusedXmlException as exc:
        raise ConfigError(
            f"OPML file {path} declares XML entities; remove the DOCTYPE and try again"
        ) from exc
    except ET.ParseError as exc:
        raise ConfigError(f"OPML file {path} is not valid XML: {exc}") from exc
    entries: list[dict[str, Any]] = []
    for outline in root.iter("outline"):
        url = outline.get("xmlUrl") or outline.get("xmlurl")
        if not url:
            continue
        entry: dict[str, Any] = {
            "url": url.strip(),
            "name": outline.get("title") or outline.get("text") or "",
        }
        if outline.get("language"):
            entry["language"] = outline.get("language")
        if outline.get("newsflowInterval"):
            entry["interval"] = outline.get("newsflowInterval")
        if outline.get("newsflowEnabled", "").lower() == "false":
            entry["enabled"] = False
        if outline.get("newsflowFullText"):
            entry["full_text"] = outline.get("newsflowFullText", "").strip().lower()
        entries.append(entry)
    return entries


def to_opml(feeds: Iterable[Feed], title: str = "newsflow feeds") -> str:
    """An OPML 2.0 document listing the feeds (overrides as attributes)."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(head, "dateCreated").text = utc_now()
    body = ET.SubElement(root, "body")
    for feed in feeds:
        attrs = {
            "type": "rss",
            "text": feed.name or feed.url,
            "title": feed.name or feed.url,
            "xmlUrl": feed.url,
        }
        if feed.language:
            attrs["language"] = feed.language
        if feed.interval:
            attrs["newsflowInterval"] = feed.interval
        if not feed.enabled:
            attrs["newsflowEnabled"] = "false"
        if feed.full_text:
            attrs["newsflowFullText"] = feed.full_text
        ET.SubElement(body, "outline", attrs)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def merge_feeds(existing: list[Feed], incoming: Iterable[Feed]) -> tuple[list[Feed], list[Feed]]:
    """``existing`` plus the incoming feeds whose URL it lacks; returns (merged, added)."""
    keys = {feed_key(f.url) for f in existing}
    added: list[Feed] = []
    for feed in incoming:
        key = feed_key(feed.url)
        if key not in keys:
            keys.add(key)
            added.append(feed)
    return [*existing, *added], added


def _entry(feed: Feed) -> dict[str, Any]:
    return {"url": feed.url, **feed.model_dump(exclude_defaults=True, exclude={"url"})}


def _as_feeds(entries: object) -> list[Feed] | None:
    if not isinstance(entries, list):
        return None
    try:
        return [Feed.model_validate({"url": e} if isinstance(e, str) else e) for e in entries]
    except ValidationError:
        return None


def write_feeds_yaml(path: Path, feeds: list[Feed], added: list[Feed] | None = None) -> None:
    """Write the feeds list atomically; when only ``added`` is new, append so comments survive."""
    text = None
    if added is not None and path.exists():
        current = path.read_text(encoding="utf-8")
        lines = "".join(
            "  - "
            + yaml.safe_dump(_entry(f), sort_keys=False, allow_unicode=True).replace("\n", "\n    ").rstrip()
            + "\n"
            for f in added
        )
        candidate = current.rstrip("\n") + "\n" + lines
        try:
            data = yaml.safe_load(candidate)
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict) and _as_feeds(data.get("feeds")) == feeds:
            text = candidate  # appending kept the file's comments and layout
    if text is None:
        text = (
            "# newsflow feeds list (newsflow feeds import/export keeps it in this form)\n"
            + yaml.safe_dump({"feeds": [_entry(f) for f in feeds]}, sort_keys=False, allow_unicode=True)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
