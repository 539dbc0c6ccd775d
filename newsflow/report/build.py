"""Build the report: read, count, draw, write ``index.html`` and ``data.json`` into one directory."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from newsflow.config import Settings
from newsflow.errors import ConfigError
from newsflow.report import charts, page
from newsflow.report.aggregate import Bucket, ReportData, aggregate, bucket_key
from newsflow.report.sources import Source, load_health, load_rows


@dataclass
class ReportResult:
    page: Path
    data: Path
    report: ReportData
    charts: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


def parse_since(text: str | None, now: datetime) -> datetime | None:
    """``7d``, ``24h``, ``90m`` before ``now``; an ISO-8601 time; ``all`` (or None) for no limit."""
    if text is None or text.strip().lower() == "all":
        return None
    try:
        from connectors.rss.schedule import parse_duration

        return now - timedelta(seconds=parse_duration(text))
    except ConfigError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--since {text!r}: use a duration (7d, 24h), an ISO-8601 time, or all") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _trace(data: ReportData) -> dict[str, object]:
    return {
        "generated_at": data.generated_at.isoformat(),
        "since": data.since.isoformat(),
        "until": data.until.isoformat(),
        "bucket": data.bucket,
        "buckets": [bucket_key(b, data.bucket) for b in data.buckets],
        "cells": {key: {"count": c.count, "ids": c.ids} for key, c in sorted(data.cells().items())},
    }


def build_report(
    settings: Settings,
    output: Path,
    since: str | None = "7d",
    source: Source = "files",
    bucket: Bucket | Literal["auto"] = "auto",
    now: datetime | None = None,
) -> ReportResult:
    """Write the report for the records whose article time is within ``since`` into ``output``."""
    now = now or datetime.now(UTC)
    start = parse_since(since, now)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    rows = load_rows(settings, source, start)
    health = load_health(settings, start)
    seconds["read"] = time.perf_counter() - clock
    clock = time.perf_counter()
    data = aggregate(rows, health, start, now, bucket)
    seconds["count"] = time.perf_counter() - clock
    clock = time.perf_counter()
    drawn = charts.all_charts(data)
    seconds["charts"] = time.perf_counter() - clock
    clock = time.perf_counter()
    where = settings.sinks.postgres_table if source == "postgres" else str(settings.enriched_dir)
    html = page.render(data, drawn, f"{source} ({where})")
    output.mkdir(parents=True, exist_ok=True)
    index = output / "index.html"
    index.write_text(html, encoding="utf-8")
    trace = output / "data.json"
    trace.write_text(json.dumps(_trace(data), ensure_ascii=False), encoding="utf-8")
    seconds["write"] = time.perf_counter() - clock
    return ReportResult(index, trace, data, [chart_id for chart_id, _, _ in drawn], seconds)
