"""The feeds list: YAML (``feeds: [{url, name, language, interval, enabled}]``) or OPML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from newsflow.errors import ConfigError


class Feed(BaseModel):
    """One feed and its per-feed overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(min_length=8)
    name: str = ""
    language: str | None = None
    interval: str | None = Field(None, description="poll interval override, e.g. 30m")
    enabled: bool = True


def load_feeds(path: Path | str, base: str | None = None) -> list[Feed]:
    """Read a feeds file; ``{base}`` in URLs is replaced by ``base`` (the demo's local server)."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"feeds file {path} not found; pass --feeds or set NEWSFLOW_FEEDS_FILE") from exc
    if path.suffix.lower() in (".opml", ".xml"):
        entries = _opml_entries(raw, path)
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


def _opml_entries(raw: str, path: Path) -> list[dict[str, object]]:
    try:
        root = ET.fromstring(raw)  # noqa: S314 - OPML is a local, user-provided file
    except ET.ParseError as exc:
        raise ConfigError(f"OPML file {path} is not valid XML: {exc}") from exc
    entries: list[dict[str, object]] = []
    for outline in root.iter("outline"):
        url = outline.get("xmlUrl")
        if url:
            entries.append({"url": url, "name": outline.get("title") or outline.get("text") or ""})
    return entries
