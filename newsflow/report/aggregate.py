"""The report's numbers, each kept with the ids of the records it counts (pure functions).

Every number the page shows is a :class:`Counted`: a key (``volume/syria_conflict/2026-11-20T00``),
and the ids behind it, so ``count == len(ids)`` and ``data.json`` lets a reader trace each number to
its records. Rules:

- an article counts once per topic it was assigned (multi-label), in the bucket of its article time
  (published, else fetched; UTC); a bucket is an hour when the window spans 3 days or less, else a day;
- stance: each (article, claim) pair counts once under its label;
- top sources per topic: the 8 sources with most articles on that topic;
- a spike is a bucket of a topic with at least 3 articles and more than the topic's mean + 2 standard
  deviations over all buckets of the window (empty ones included; 3 buckets at least); the page lists
  each spike's articles, up to 5 spikes per topic, the largest first;
- feed health: each poll on ``news.feed-health`` counts once under its status (``not_modified`` and
  ``unchanged`` together as ``unchanged``), in the bucket of its time.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from newsflow.records import STANCE_LABELS, FeedStatus
from newsflow.report.sources import HealthData, HealthEvent, Row

Bucket = Literal["hour", "day"]
OTHER = "other"
TOP_SOURCES = 8
MAX_SPIKES = 5
HEALTHY = (FeedStatus.OK, FeedStatus.UNCHANGED)


@dataclass
class Counted:
    """One number on the page: ``len(ids)``, with the ids of what it counts."""

    key: str
    label: str
    ids: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.ids)


@dataclass
class Spike:
    topic: str
    start: datetime
    counted: Counted
    rows: list[Row]


@dataclass
class FeedSummary:
    """One feed's health in the window (polls from the history) and now (its ingest state)."""

    url: str
    name: str
    polls: Counted
    errors: dict[str, Counted]  # error status -> the polls that ended with it
    last_status: FeedStatus | None  # None: never polled
    last_success: str | None
    failures: int
    disabled_reason: str | None


@dataclass
class ReportData:
    generated_at: datetime
    since: datetime
    until: datetime
    bucket: Bucket
    buckets: list[datetime]
    records: Counted
    topics: list[str]
    topic_totals: dict[str, Counted]
    volume: dict[str, list[Counted]]  # topic -> one per bucket
    claims: dict[str, str]  # claim id -> claim text
    stance: dict[str, dict[str, list[Counted]]]  # claim -> label -> one per bucket
    stance_totals: dict[str, dict[str, Counted]]
    sources: dict[str, list[Counted]]  # topic -> its top sources
    spikes: dict[str, list[Spike]]
    health_statuses: list[str]
    health: dict[str, list[Counted]]  # status -> one per bucket
    feeds: list[FeedSummary]
    health_note: str = ""

    def cells(self) -> dict[str, Counted]:
        """Every number of the report by key."""
        found: list[Counted] = [self.records, *self.topic_totals.values()]
        found += [c for row in self.volume.values() for c in row]
        found += [c for labels in self.stance.values() for row in labels.values() for c in row]
        found += [c for labels in self.stance_totals.values() for c in labels.values()]
        found += [c for row in self.sources.values() for c in row]
        found += [s.counted for spikes in self.spikes.values() for s in spikes]
        found += [c for row in self.health.values() for c in row]
        for feed in self.feeds:
            found += [feed.polls, *feed.errors.values()]
        return {c.key: c for c in found}


def floor(when: datetime, bucket: Bucket) -> datetime:
    when = when.astimezone(UTC)
    if bucket == "hour":
        return when.replace(minute=0, second=0, microsecond=0)
    return when.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_step(bucket: Bucket) -> timedelta:
    return timedelta(hours=1) if bucket == "hour" else timedelta(days=1)


def choose_bucket(since: datetime, until: datetime) -> Bucket:
    return "hour" if until - since <= timedelta(days=3) else "day"


def bucket_key(start: datetime, bucket: Bucket) -> str:
    return start.strftime("%Y-%m-%dT%H") if bucket == "hour" else start.strftime("%Y-%m-%d")


def spike_indices(counts: Sequence[int]) -> list[int]:
    """Buckets that stand out (see the module docstring), the largest first."""
    if len(counts) < 3:
        return []
    bar = statistics.fmean(counts) + 2 * statistics.pstdev(counts)
    hits = [i for i, c in enumerate(counts) if c >= 3 and c > bar]
    return sorted(hits, key=lambda i: (-counts[i], i))[:MAX_SPIKES]


def health_status(status: FeedStatus) -> FeedStatus:
    """A poll's status on the chart: a 304 and an unchanged body are both ``unchanged``."""
    return FeedStatus.UNCHANGED if status.unchanged else status


def aggregate(
    rows: Sequence[Row],
    health: HealthData,
    since: datetime | None,
    now: datetime,
    bucket: Bucket | Literal["auto"] = "auto",
) -> ReportData:
    """All the report's numbers for ``rows`` (already in the window) and the feed health."""
    times = [r.at for r in rows] + [e.at for e in health.events]
    start = since or (min(times) if times else now)
    until = max([now, *times])
    chosen: Bucket = choose_bucket(start, until) if bucket == "auto" else bucket
    step = bucket_step(chosen)
    buckets = []
    cursor = floor(start, chosen)
    while cursor <= until:
        buckets.append(cursor)
        cursor += step
    index = {b: i for i, b in enumerate(buckets)}
    keys = [bucket_key(b, chosen) for b in buckets]

    def slot(when: datetime) -> int:
        return index[floor(when, chosen)]

    totals: Counter[str] = Counter(t for r in rows for t in r.topics)
    topics = sorted(totals, key=lambda t: (t == OTHER, -totals[t], t))
    topic_totals = {t: Counted(f"topic/{t}", t) for t in topics}
    volume = {t: [Counted(f"volume/{t}/{k}", k) for k in keys] for t in topics}
    claims: dict[str, str] = {}
    for r in rows:
        for claim_id, claim, _ in r.stances:
            claims.setdefault(claim_id, claim)
    stance: dict[str, dict[str, list[Counted]]] = {
        c: {lab: [Counted(f"stance/{c}/{lab}/{k}", k) for k in keys] for lab in STANCE_LABELS} for c in claims
    }
    stance_totals: dict[str, dict[str, Counted]] = {
        c: {lab: Counted(f"stance_total/{c}/{lab}", lab) for lab in STANCE_LABELS} for c in claims
    }
    by_source: dict[str, dict[str, list[str]]] = {t: {} for t in topics}
    records = Counted("records", "records")
    for r in sorted(rows, key=lambda r: (r.at, r.id)):
        records.ids.append(r.id)
        i = slot(r.at)
        for t in dict.fromkeys(r.topics):
            topic_totals[t].ids.append(r.id)
            volume[t][i].ids.append(r.id)
            by_source[t].setdefault(r.source, []).append(r.id)
        for claim_id, _, label in r.stances:
            stance[claim_id][label][i].ids.append(r.id)
            stance_totals[claim_id][label].ids.append(r.id)
    sources = {
        t: [
            Counted(f"source/{t}/{name}", name, ids)
            for name, ids in sorted(by_source[t].items(), key=lambda kv: (-len(kv[1]), kv[0]))[:TOP_SOURCES]
        ]
        for t in topics
    }
    by_id = {r.id: r for r in rows}
    spikes = {
        t: [
            Spike(
                t,
                buckets[i],
                Counted(f"spike/{t}/{keys[i]}", keys[i], list(volume[t][i].ids)),
                sorted((by_id[x] for x in volume[t][i].ids), key=lambda r: (r.at, r.title)),
            )
            for i in spike_indices([c.count for c in volume[t]])
        ]
        for t in topics
        if t != OTHER
    }
    statuses, per_status, feeds = _health(health, keys, slot)
    return ReportData(
        generated_at=now,
        since=start,
        until=until,
        bucket=chosen,
        buckets=buckets,
        records=records,
        topics=topics,
        topic_totals=topic_totals,
        volume=volume,
        claims=claims,
        stance=stance,
        stance_totals=stance_totals,
        sources=sources,
        spikes=spikes,
        health_statuses=statuses,
        health=per_status,
        feeds=feeds,
        health_note=health.history_note,
    )


def _event_id(event: HealthEvent) -> str:
    return f"{event.feed_url}@{event.at.isoformat().replace('+00:00', 'Z')}"


def _health(
    health: HealthData, keys: list[str], slot: Callable[[datetime], int]
) -> tuple[list[str], dict[str, list[Counted]], list[FeedSummary]]:
    events = sorted(health.events, key=lambda e: (e.at, e.feed_url))
    seen = Counter(health_status(e.status) for e in events)
    statuses = sorted(
        seen, key=lambda s: (s not in HEALTHY, HEALTHY.index(s) if s in HEALTHY else 0, -seen[s], s)
    )
    per_status = {s.value: [Counted(f"health/{s}/{k}", k) for k in keys] for s in statuses}
    polls: dict[str, Counted] = {}
    errors: dict[str, dict[str, Counted]] = {}
    names: dict[str, str] = {}
    last: dict[str, HealthEvent] = {}
    for e in events:
        status = health_status(e.status)
        per_status[status.value][slot(e.at)].ids.append(_event_id(e))
        polls.setdefault(e.feed_url, Counted(f"feed_polls/{e.feed_url}", e.feed_url)).ids.append(_event_id(e))
        if status not in HEALTHY:
            kinds = errors.setdefault(e.feed_url, {})
            kinds.setdefault(status, Counted(f"feed_errors/{e.feed_url}/{status}", status)).ids.append(
                _event_id(e)
            )
        names[e.feed_url] = e.name
        last[e.feed_url] = e
    states = {s.url: s for s in health.states}
    feeds = []
    for url in sorted(set(states) | set(polls)):
        state = states.get(url)
        latest = last.get(url)
        feeds.append(
            FeedSummary(
                url=url,
                name=names.get(url, url),
                polls=polls.get(url, Counted(f"feed_polls/{url}", url)),
                errors=errors.get(url, {}),
                last_status=(state.last_status if state else None) or (latest.status if latest else None),
                last_success=state.last_success if state else None,
                failures=state.consecutive_failures if state else 0,
                disabled_reason=(state.disabled_reason if state else None)
                or (latest.disabled_reason if latest else None),
            )
        )
    feeds.sort(
        key=lambda f: (
            f.disabled_reason is None,
            f.last_status is not None and f.last_status.healthy,
            f.name,
        )
    )
    return [s.value for s in statuses], per_status, feeds
