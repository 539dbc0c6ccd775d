"""``newsflow report``: the analyst's page (registered in :mod:`newsflow.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer


def report(
    output: Annotated[Path, typer.Option("--output", "-o", help="directory for index.html and data.json")],
    since: Annotated[str, typer.Option(help="window: a duration (7d, 24h), an ISO-8601 time, or all")] = "7d",
    source: Annotated[
        str, typer.Option("--from", help="read enriched records from: files (the file sink) or postgres")
    ] = "files",
    bucket: Annotated[
        str, typer.Option(help="time bucket: auto (hour up to 3 days, else day), hour, day")
    ] = "auto",
) -> None:
    """Write a self-contained HTML report: topic volume, stance per claim, top sources, spikes, feed health.

    Charts are inline PNGs and nothing is fetched when the page opens; data.json beside it lists the
    ids behind every number. Feed health comes from the news.feed-health topic (when a broker
    answers) and the ingest state.
    """
    from newsflow.cli import console, settings
    from newsflow.errors import ConfigError
    from newsflow.report.aggregate import Bucket
    from newsflow.report.build import build_report
    from newsflow.report.sources import Source

    if source not in ("files", "postgres"):
        raise ConfigError(f"--from {source!r}: use files or postgres")
    if bucket not in ("auto", "hour", "day"):
        raise ConfigError(f"--bucket {bucket!r}: use auto, hour or day")
    with console.status("building the report..."):
        result = build_report(
            settings(), output, since=since, source=cast(Source, source), bucket=cast(Bucket, bucket)
        )
    data = result.report
    console.print(
        f"report: {data.records.count} articles, {len(data.topics)} topics, {len(data.claims)} claims, "
        f"{len(data.feeds)} feeds, per {data.bucket}, in {sum(result.seconds.values()):.1f}s",
        highlight=False,
    )
    console.print(f"open it: {result.page.resolve().as_uri()}", highlight=False, soft_wrap=True)
