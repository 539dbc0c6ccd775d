"""What one poll did to one feed: its outcome, its new state, its health record; and a cycle's summary.

A poll (:class:`Polled`: the fetch, the parse, or the failure between) becomes a
:class:`FeedOutcome` (status, counts: what the cycle reports and the CLI prints) and the feed's
next row in the state store (:class:`~connectors.rss.state.FeedUpdate`): after a success, the next
poll from the feed's rhythm and its server's hints, counters reset; after a failure, backoff or
disabling (the rules are :mod:`connectors.rss.schedule`'s). :func:`health` is the
``newsflow.feed-health.v1`` record published for each poll; :class:`CycleSummary` adds up a cycle.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from connectors.rss.delivery import Recovery
from connectors.rss.feeds import Feed
from connectors.rss.fetch import FetchResult
from connectors.rss.normalize import epoch_to_iso
from connectors.rss.parse import ParsedFeed
from connectors.rss.schedule import Policy, adaptive_interval, next_after_success, plan_failure
from connectors.rss.state import Emitted, FeedState, FeedUpdate
from newsflow.records import FeedHealth, FeedStatus

log = logging.getLogger(__name__)


@dataclass
class Polled:
    """One feed's poll as the fetch thread left it: fetched, maybe parsed, or why not."""

    feed: Feed
    state: FeedState
    fetched: FetchResult
    parsed: ParsedFeed | None = None
    body_hash: str | None = None
    error_status: FeedStatus | None = None  # a failure after the fetch succeeded (parse_error)
    error: str = ""
    held: bool = False  # not polled: the host is under a Retry-After


@dataclass
class FeedOutcome:
    feed: Feed
    status: FeedStatus
    new: int = 0
    items: int = 0
    rejected: int = 0
    bozo: bool = False
    error: str = ""
    http_status: int | None = None
    next_poll: float | None = None
    disabled_reason: str | None = None
    moved_to: str | None = None
    cut: int = 0  # records cut to fit the record size limit (marked in their ``truncated`` field)
    # article pages this poll: "extracted", "unchanged" or why the article kept its feed text
    pages: Counter[str] = field(default_factory=Counter)


@dataclass
class CycleSummary:
    outcomes: list[FeedOutcome] = field(default_factory=list)
    seconds: float = 0.0
    not_due: int = 0  # enabled feeds skipped because their next poll is later
    disabled: int = 0  # feeds skipped because they are disabled (see ``newsflow feeds status``)
    held: int = 0  # feeds skipped because their host asked to wait (Retry-After)
    recovered: Recovery | None = None  # records a killed run left unconfirmed, settled first

    @property
    def new_articles(self) -> int:
        return sum(o.new for o in self.outcomes)

    @property
    def by_status(self) -> Counter[FeedStatus]:
        return Counter(o.status for o in self.outcomes)

    @property
    def errors(self) -> Counter[FeedStatus]:
        return Counter(o.status for o in self.outcomes if not o.status.healthy)

    @property
    def rejected(self) -> int:
        return sum(o.rejected for o in self.outcomes)

    @property
    def errors_line(self) -> str:
        """Failed polls by status, e.g. ``http_404 2, timeout 1``; ``none`` when none failed."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"

    @property
    def unchanged(self) -> int:
        """Feeds that answered 304, or the same bytes as last time: nothing parsed or produced."""
        return sum(1 for o in self.outcomes if o.status.unchanged)

    @property
    def bozo(self) -> int:
        return sum(1 for o in self.outcomes if o.bozo)

    @property
    def pages(self) -> Counter[str]:
        """Article pages by outcome: extracted, unchanged, or the reason the feed text was kept."""
        total: Counter[str] = Counter()
        for outcome in self.outcomes:
            total.update(outcome.pages)
        return total

    def describe(self) -> str:
        """One line: feeds polled, 304s, new articles, errors by kind."""
        text = (
            f"polled {len(self.outcomes)} feeds in {self.seconds:.1f}s: {self.new_articles} new articles, "
            f"{self.by_status[FeedStatus.NOT_MODIFIED]} not modified (304), "
            f"{self.by_status[FeedStatus.UNCHANGED]} unchanged bodies, {self.bozo} malformed but recovered, "
            f"{self.rejected} items dead-lettered; errors: {self.errors_line}"
        )
        if self.not_due or self.disabled:
            text += f"; {self.not_due} not due yet, {self.disabled} disabled"
        if self.held:
            text += f"; {self.held} held back by their host's Retry-After"
        pages = self.pages
        if pages:
            kept = {k: v for k, v in pages.items() if k not in ("extracted", "unchanged")}
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(kept.items())) or "none"
            text += (
                f"; article pages: {pages['extracted']} extracted, {pages['unchanged']} unchanged, "
                f"{sum(kept.values())} kept the feed's text ({reasons})"
            )
        if self.recovered and self.recovered.pending:
            text += (
                f"; {self.recovered.pending} records left unconfirmed by the last run: "
                f"{self.recovered.delivered} had arrived, the rest are sent again"
            )
        return text


def succeeded(
    polled: Polled,
    status: FeedStatus,
    now: float,
    policy: Policy,
    emitted: Sequence[Emitted] = (),
    new: int = 0,
) -> tuple[FeedOutcome, FeedUpdate]:
    """A poll that worked (200 or 304): the feed's next poll from its rhythm and hints, counters reset."""
    feed, state, fetched, parsed = polled.feed, polled.state, polled.fetched, polled.parsed
    if parsed is not None:
        published = [_epoch(a.published_at) for a in parsed.articles if a.published_at]
        interval = adaptive_interval(published, policy, feed.interval_s)
        if parsed.ttl_minutes:  # the feed asks not to be polled more often than its ttl
            interval = max(interval, min(parsed.ttl_minutes * 60.0, policy.max_interval))
        skip_hours = ",".join(str(h) for h in sorted(parsed.skip_hours)) or None
        skip_days = ",".join(sorted(parsed.skip_days)) or None
    else:
        interval = state.interval_s or adaptive_interval([], policy, feed.interval_s)
        if feed.interval_s is not None:
            interval = max(interval, policy.clamp(feed.interval_s))
        skip_hours, skip_days = state.skip_hours, state.skip_days
    next_poll = next_after_success(
        now,
        interval,
        policy,
        fresh_for=fetched.fresh_for_s,
        skip_hours=frozenset(int(h) for h in skip_hours.split(",")) if skip_hours else frozenset(),
        skip_days=frozenset(skip_days.split(",")) if skip_days else frozenset(),
    )
    moved_to = fetched.moved_to or state.moved_to
    if moved_to == feed.url:
        moved_to = None
    if fetched.moved_to and fetched.moved_to != state.moved_to:
        log.warning("feed %s moved permanently to %s; polling the new URL from now on", feed.url, moved_to)
    if state.disabled:
        log.warning("disabled feed %s answered again (%s); it is enabled", feed.url, status)
    bozo, error = False, ""
    if parsed is not None and parsed.bozo:
        bozo = True
        error = f"malformed feed, recovered {len(parsed.articles)} items: {parsed.bozo_reason}"
        log.info("feed %s: %s", feed.url, error)
    new_state = replace(
        state,
        etag=fetched.etag or state.etag,
        last_modified=fetched.last_modified or state.last_modified,
        last_status=status,
        last_error=error or None,
        last_success=epoch_to_iso(now),
        last_polled=epoch_to_iso(now),
        consecutive_failures=0,
        hard_failures=0,
        next_poll=next_poll,
        interval_s=interval,
        disabled_reason=None,
        disabled_at=None,
        moved_to=moved_to,
        last_http_status=fetched.http_status,
        body_hash=polled.body_hash or state.body_hash,
        skip_hours=skip_hours,
        skip_days=skip_days,
    )
    items = len(parsed.articles) if parsed else 0
    outcome = FeedOutcome(
        feed,
        status,
        new=new,
        items=items,
        rejected=len(parsed.rejected) if parsed else 0,
        bozo=bozo,
        error=error,
        http_status=fetched.http_status,
        next_poll=next_poll,
        moved_to=moved_to,
    )
    return outcome, FeedUpdate(new_state, emitted, items=items, bozo=bozo)


def failed(
    polled: Polled,
    status: FeedStatus,
    error: str,
    now: float,
    policy: Policy,
    rng: random.Random,
    emitted: Sequence[Emitted] = (),
    new: int = 0,
) -> tuple[FeedOutcome, FeedUpdate]:
    """A poll that failed: backoff or disabling (:func:`~connectors.rss.schedule.plan_failure`).

    ``emitted`` are the records Kafka did confirm (a ``kafka_error``), ``new`` how many are articles.
    """
    feed, state, fetched = polled.feed, polled.state, polled.fetched
    interval = state.interval_s or adaptive_interval([], policy, feed.interval_s)
    plan = plan_failure(
        now,
        status,
        error,
        state.consecutive_failures,
        state.hard_failures,
        interval,
        policy,
        rng,
        retry_after=fetched.retry_after_s,
    )
    reason = plan.disabled_reason
    next_poll: float | None = plan.next_poll
    if status is FeedStatus.HTTP_410:
        next_poll = None  # gone for good: only 'newsflow feeds reset' brings it back
    elif state.disabled:  # a failed probe: stay disabled, probe again later
        reason, next_poll = state.disabled_reason, now + policy.disabled_probe
    if reason and not state.disabled:
        log.warning("feed %s is disabled: %s", feed.url, reason)
    elif status.transient:
        log.info("feed %s: %s (%s); retrying at %s", feed.url, status, error, epoch_to_iso(next_poll or now))
    else:
        log.info("feed %s failed: %s (%s)", feed.url, status, error)
    new_state = replace(
        state,
        last_status=status,
        last_error=error[:1000],
        last_polled=epoch_to_iso(now),
        consecutive_failures=plan.consecutive_failures,
        hard_failures=plan.hard_failures,
        next_poll=next_poll,
        interval_s=interval,
        disabled_reason=reason,
        disabled_at=state.disabled_at or (epoch_to_iso(now) if reason else None),
        last_http_status=fetched.http_status,
        # a stored permanent redirect that now leads somewhere refused is forgotten
        moved_to=None if status is FeedStatus.BLOCKED else state.moved_to,
    )
    outcome = FeedOutcome(
        feed,
        status,
        new=new,
        error=error,
        http_status=fetched.http_status,
        next_poll=next_poll,
        disabled_reason=reason,
        moved_to=new_state.moved_to,
    )
    return outcome, FeedUpdate(new_state, emitted)


def health(outcome: FeedOutcome, state: FeedState, now: float) -> FeedHealth:
    """The ``news.feed-health`` record of a poll, from its outcome and the feed's new state."""
    return FeedHealth(
        feed_url=outcome.feed.url,
        fetch_url=state.fetch_url,
        name=outcome.feed.name,
        status=outcome.status,
        http_status=outcome.http_status,
        error=outcome.error[:1000] or None,
        new_articles=outcome.new,
        items=outcome.items,
        rejected=outcome.rejected,
        cut=outcome.cut,
        pages=dict(outcome.pages),
        bozo=outcome.bozo,
        bozo_count=state.bozo_count + int(outcome.bozo),
        items_seen=state.items_seen + outcome.items,
        consecutive_failures=state.consecutive_failures,
        last_success=state.last_success,
        next_poll=epoch_to_iso(state.next_poll) if state.next_poll is not None else None,
        disabled_reason=state.disabled_reason,
        at=state.last_polled or epoch_to_iso(now),
    )


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
