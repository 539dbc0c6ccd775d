"""The report's charts, drawn with matplotlib (Agg, no display) and returned as PNG bytes.

Every function returns a chart even when there is nothing to draw: the axes then say so, so the
page always has the same charts and a reader sees "no data" rather than a hole.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from newsflow.report.aggregate import OTHER, ReportData, bucket_step

DPI = 96
STANCE_COLOURS = {"agree": "#2e7d32", "disagree": "#c62828", "discuss": "#f9a825"}
HEALTH_COLOURS = {"ok": "#2e7d32", "unchanged": "#90a4ae"}
ERROR_COLOURS = ("#c62828", "#ef6c00", "#6a1b9a", "#ad1457", "#4e342e", "#283593", "#00838f")


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI)  # fixed margins: a "tight" box would draw everything twice
    return out.getvalue()


def _time_axis(ax: Axes, data: ReportData) -> None:
    locator = mdates.AutoDateLocator(maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlim(
        float(mdates.date2num(data.buckets[0])),
        float(mdates.date2num(data.buckets[-1] + bucket_step(data.bucket))),
    )
    ax.grid(axis="y", alpha=0.3)


def _x(data: ReportData) -> Any:
    """The buckets as matplotlib date numbers."""
    return mdates.date2num(data.buckets)


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def _stack_limits(ax: Axes, tops: list[int]) -> None:
    """Room above the tallest stack (and its legend); whole numbers only."""
    ax.set_ylim(0, max(tops, default=1) * 1.25 + 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _stacked_bars(
    ax: Axes, data: ReportData, series: list[tuple[str, str, list[int]]], unit: str, ncols: int
) -> None:
    """One bar per bucket, the series stacked in order, each (label, colour, counts per bucket)."""
    bottom = [0] * len(data.buckets)
    for label, colour, counts in series:
        ax.bar(_x(data), counts, width=_width(data), bottom=bottom, color=colour, label=label, align="edge")
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    _stack_limits(ax, bottom)
    ax.set_ylabel(f"{unit} per {data.bucket}")
    ax.legend(loc="upper left", fontsize="small", ncols=ncols)
    _time_axis(ax, data)


def _width(data: ReportData) -> float:
    """Bar width in days (matplotlib's date unit): 90% of a bucket."""
    return 0.9 / 24 if data.bucket == "hour" else 0.9


def topic_volume(data: ReportData) -> bytes:
    """Articles per bucket for each watched topic (``other`` is in the table, not drawn); spikes marked."""
    fig = Figure(figsize=(10, 3.8))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.14)
    ax = fig.add_subplot()
    watched = [t for t in data.topics if t != OTHER]
    if not watched:
        _empty(ax, "no article on a watched topic in this window")
    else:
        for topic in watched:
            counts = [c.count for c in data.volume[topic]]
            (line,) = ax.plot(
                _x(data), counts, marker=".", label=f"{topic} ({data.topic_totals[topic].count})"
            )
            spikes = data.spikes.get(topic, [])
            if spikes:
                ax.scatter(
                    mdates.date2num([s.start for s in spikes]),
                    [s.counted.count for s in spikes],
                    s=90,
                    facecolors="none",
                    edgecolors=line.get_color(),
                    linewidths=1.5,
                )
        ax.set_ylabel(f"articles per {data.bucket}")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="upper left", fontsize="small")
        _time_axis(ax, data)
    ax.set_title(f"Topic volume per {data.bucket} (circles: spikes)")
    return _png(fig)


def claim_stance(data: ReportData, claim_id: str) -> bytes:
    """Stacked agree/disagree/discuss per bucket toward one claim (unrelated pairs in the table)."""
    fig = Figure(figsize=(10, 2.8))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.18)
    ax = fig.add_subplot()
    labels = data.stance[claim_id]
    related = sum(labels[lab][i].count for lab in STANCE_COLOURS for i in range(len(data.buckets)))
    if not related:
        _empty(ax, "no article took a stance toward this claim in this window")
    else:
        series = [
            (label, colour, [c.count for c in labels[label]]) for label, colour in STANCE_COLOURS.items()
        ]
        _stacked_bars(ax, data, series, "articles", ncols=3)
    ax.set_title(f"Stance toward {claim_id}: {_short(data.claims[claim_id], 90)}", fontsize="medium")
    return _png(fig)


def top_sources(data: ReportData) -> bytes:
    """The sources with most articles per topic, one panel per topic."""
    topics = data.topics or ["(none)"]
    cols = min(3, len(topics))
    rows = (len(topics) + cols - 1) // cols
    fig = Figure(figsize=(4.4 * cols, 2.6 * rows + 0.5))
    # room on the left of each panel for its source names (cut at 28 characters)
    fig.subplots_adjust(
        left=0.5 / cols, right=0.98, top=1 - 0.6 / (2.6 * rows + 0.5), bottom=0.08, wspace=0.9, hspace=0.45
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(topics):
            ax.set_visible(False)
            continue
        topic = topics[k]
        counted = data.sources.get(topic, [])
        if not counted:
            _empty(ax, "no articles")
        else:
            names = [_short(c.label, 28) for c in counted][::-1]
            ax.barh(names, [c.count for c in counted][::-1], color="#1565c0")
            ax.tick_params(axis="y", labelsize="small")
            ax.grid(axis="x", alpha=0.3)
        ax.set_title(topic, fontsize="medium")
    fig.suptitle("Top sources per topic (articles)")
    return _png(fig)


def feed_health(data: ReportData) -> bytes:
    """Polls per bucket by status, stacked: ok, unchanged (304 or same bytes), then each error kind."""
    fig = Figure(figsize=(10, 3.2))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.16)
    ax = fig.add_subplot()
    if not data.health_statuses:
        _empty(ax, data.health_note or "no feed was polled in this window")
    else:
        errors = iter(ERROR_COLOURS * 4)
        series = [
            (status, HEALTH_COLOURS.get(status) or next(errors), [c.count for c in data.health[status]])
            for status in data.health_statuses
        ]
        _stacked_bars(ax, data, series, "polls", ncols=4)
    ax.set_title("Feed health: polls by outcome")
    return _png(fig)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def all_charts(data: ReportData) -> list[tuple[str, str, bytes]]:
    """(id, alt text, PNG) of every chart of the page, in page order."""
    charts = [("topic-volume", "Topic volume over time", topic_volume(data))]
    charts += [
        (f"stance-{c}", f"Stance toward claim {c} over time", claim_stance(data, c)) for c in data.claims
    ]
    charts.append(("top-sources", "Top sources per topic", top_sources(data)))
    charts.append(("feed-health", "Feed health over time", feed_health(data)))
    return charts
