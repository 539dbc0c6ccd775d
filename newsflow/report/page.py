"""The report as one self-contained HTML page: inline CSS, charts as PNG data URIs, no script.

Nothing on the page is fetched when it opens (article links are links, followed only on a click),
so it can be mailed, archived or opened offline. Every number is in a table cell with the key of
its :class:`~newsflow.report.aggregate.Counted` (``data-key``), which ``data.json`` maps to the ids
of the records counted.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from html import escape

from newsflow.records import STANCE_LABELS
from newsflow.report.aggregate import OTHER, Counted, ReportData

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #555; } img.chart { max-width: 100%; display: block; margin: 1em 0; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: left; } td.n { text-align: right; }
th { background: #f5f5f5; } details { margin: .5em 0 1.5em; } summary { cursor: pointer; color: #1565c0; }
.bad { color: #c62828; } .spike li { margin: .1em 0; }
.time { color: #666; font-variant-numeric: tabular-nums; }
"""


def _n(counted: Counted) -> str:
    return f'<td class="n" data-key="{escape(counted.key)}">{counted.count}</td>'


def _chart(chart_id: str, alt: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return f'<img class="chart" id="{chart_id}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _when(value: datetime, bucket: str = "minute") -> str:
    text = value.strftime("%Y-%m-%d %H:%M")
    return text[:10] if bucket == "day" else text


def _bucket_table(data: ReportData, columns: Sequence[str], cells: dict[str, list[Counted]]) -> str:
    """One row per non-empty bucket, one column per series."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for i, start in enumerate(data.buckets):
        row = [cells[c][i] for c in columns]
        if any(c.count for c in row):
            body.append(f"<tr><td>{_when(start, data.bucket)}</td>{''.join(_n(c) for c in row)}</tr>")
    if not body:
        return "<p>No data in this window.</p>"
    return (
        f"<details><summary>the numbers per {data.bucket}</summary><table><tr><th>{data.bucket} (UTC)</th>"
        f"{head}</tr>{''.join(body)}</table></details>"
    )


def render(data: ReportData, charts: Sequence[tuple[str, str, bytes]], source: str) -> str:
    by_id = {chart_id: (alt, png) for chart_id, alt, png in charts}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>newsflow report {_when(data.since, 'day')} to {_when(data.until, 'day')}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>What the feeds said</h1>",
        f"<p class='meta'>{_when(data.since)} to {_when(data.until)} UTC, per {data.bucket}; "
        f"{data.records.count} enriched articles (<span data-key='records'>{data.records.count}</span>) "
        f"read from {escape(source)}; generated {_when(data.generated_at)} UTC. Every number is traceable: "
        "<code>data.json</code> beside this page lists, for each table cell's <code>data-key</code>, the "
        "ids of the records it counts. Article time is the published time, else the fetch time.</p>",
    ]
    parts += _topics(data, by_id)
    parts += _stances(data, by_id)
    parts += _sources(data, by_id)
    parts += _spikes(data)
    parts += _health(data, by_id)
    parts.append("</body></html>")
    return "\n".join(parts)


def _topics(data: ReportData, charts: dict[str, tuple[str, bytes]]) -> list[str]:
    totals = "".join(f"<tr><td>{escape(t)}</td>{_n(data.topic_totals[t])}</tr>" for t in data.topics)
    watched = [t for t in data.topics if t != OTHER]
    note = (
        f" ({OTHER}: {data.topic_totals[OTHER].count} articles, in the table, not drawn)"
        if OTHER in data.topics
        else ""
    )
    return [
        "<h2>Topic volume over time</h2>",
        f"<p>Articles per {data.bucket} on each watched topic{escape(note)}; an article on two topics counts "
        "in both. Circles mark spikes (listed below).</p>",
        _chart("topic-volume", *charts["topic-volume"]),
        f"<table><tr><th>topic</th><th>articles</th></tr>{totals}</table>" if data.topics else "",
        _bucket_table(data, watched + ([OTHER] if OTHER in data.topics else []), data.volume),
    ]


def _stances(data: ReportData, charts: dict[str, tuple[str, bytes]]) -> list[str]:
    parts = ["<h2>Stance toward each claim over time</h2>"]
    if not data.claims:
        parts.append("<p>No stance in this window (no claims configured, or no articles).</p>")
    for claim_id, claim in data.claims.items():
        totals = data.stance_totals[claim_id]
        cells = "".join(f"<th>{lab}</th>" for lab in STANCE_LABELS)
        parts += [
            f"<h3>{escape(claim_id)}: “{escape(claim)}”</h3>",
            _chart(f"stance-{claim_id}", *charts[f"stance-{claim_id}"]),
            f"<table><tr>{cells}</tr><tr>{''.join(_n(totals[lab]) for lab in STANCE_LABELS)}</tr></table>",
            _bucket_table(data, list(STANCE_LABELS), data.stance[claim_id]),
        ]
    return parts


def _sources(data: ReportData, charts: dict[str, tuple[str, bytes]]) -> list[str]:
    parts = ["<h2>Top sources per topic</h2>", _chart("top-sources", *charts["top-sources"])]
    for topic in data.topics:
        rows = "".join(f"<tr><td>{escape(c.label)}</td>{_n(c)}</tr>" for c in data.sources[topic])
        parts.append(
            f"<details><summary>{escape(topic)}</summary><table><tr><th>source</th><th>articles</th></tr>"
            f"{rows}</table></details>"
        )
    return parts


def _spikes(data: ReportData) -> list[str]:
    parts = [
        "<h2>The articles behind each spike</h2>",
        f"<p>A spike is one {data.bucket} with at least 3 articles on a topic and more than the topic's mean "
        "+ 2 standard deviations over the window.</p>",
    ]
    found = False
    for topic, spikes in data.spikes.items():
        for spike in spikes:
            found = True
            items = "".join(
                f"<li><span class='time'>{_when(r.at)}</span> "
                + (f"<a href='{escape(r.url)}'>{escape(r.title or r.url)}</a>" if r.url else escape(r.title))
                + f" <span class='meta'>({escape(r.source)})</span></li>"
                for r in spike.rows
            )
            parts.append(
                f"<h3>{escape(topic)}, {_when(spike.start, data.bucket)}: "
                f"<span data-key='{escape(spike.counted.key)}'>{spike.counted.count}</span> articles</h3>"
                f"<ul class='spike'>{items}</ul>"
            )
    if not found:
        parts.append("<p>No spike in this window.</p>")
    return parts


def _health(data: ReportData, charts: dict[str, tuple[str, bytes]]) -> list[str]:
    parts = ["<h2>Feed health over time</h2>", _chart("feed-health", *charts["feed-health"])]
    if data.health_note:
        parts.append(f"<p class='bad'>{escape(data.health_note)}</p>")
    parts.append(_bucket_table(data, data.health_statuses, data.health))
    rows = []
    for feed in data.feeds:
        errors = ", ".join(
            f"{escape(kind)} <span data-key='{escape(c.key)}'>{c.count}</span>"
            for kind, c in feed.errors.items()
        )
        disabled = f"<span class='bad'>{escape(feed.disabled_reason)}</span>" if feed.disabled_reason else ""
        name = escape(feed.name) + (f"<br><small>{escape(feed.url)}</small>" if feed.name != feed.url else "")
        last_status = escape(feed.last_status or "never polled")
        rows.append(
            f"<tr><td>{name}</td>{_n(feed.polls)}<td>{errors or '-'}</td><td>{last_status}</td>"
            f"<td>{escape((feed.last_success or '-').replace('T', ' ').removesuffix('Z'))}</td>"
            f"<td class='n'>{feed.failures}</td><td>{disabled}</td></tr>"
        )
    if rows:
        parts.append(
            "<table><tr><th>feed</th><th>polls in window</th><th>errors by kind</th><th>last status</th>"
            "<th>last success (UTC)</th><th>failures in a row</th><th>disabled</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    else:
        parts.append("<p>No feed known to this data directory's ingest state.</p>")
    return parts
