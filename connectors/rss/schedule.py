"""When to poll each feed next: pure functions of the feed's history, a clock and a random source.

- **Adaptive interval**: the median gap between the publication times of the items in the feed,
  clamped to ``[min_interval, max_interval]``; a per-feed ``interval`` override replaces it (still
  clamped). Until a feed shows its rhythm (fewer than 3 dated items) the default interval applies.
- **Server hints raise the next poll, never lower it**: Cache-Control ``max-age`` / ``Expires`` and
  RSS ``<ttl>`` (all capped at ``max_interval``); ``<skipHours>``/``<skipDays>`` (UTC) postpone a
  poll that falls inside them; ``Retry-After`` on 429/503 sets the next poll (within
  ``[min_interval, backoff_max]``).
- **Backoff** after a failure: exponential with full jitter, ``uniform(0, min(backoff_max,
  interval * 2**(failures-1)))``, never less than ``min_interval``.
- **Disabling**: a 410 disables a feed at once; ``disable_after`` hard failures in a row disable it.
  Transient failures (timeouts, resets, 5xx, 429) and Kafka errors back off but never disable.
  A disabled feed (except after a 410) is probed every ``disabled_probe`` and re-enabled by a success.
"""

from __future__ import annotations

import itertools
import random
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from newsflow.config import IngestSettings
from newsflow.errors import ConfigError
from newsflow.records import FeedStatus

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")


def parse_duration(text: str) -> float:
    """'15m' -> 900.0 seconds (s, m, h, d suffixes; a bare number is seconds)."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ConfigError(f"cannot read interval {text!r}; use e.g. 30s, 15m, 1h or 1d")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]


@dataclass(frozen=True)
class Policy:
    min_interval: float = 300.0
    default_interval: float = 1800.0
    max_interval: float = 43200.0
    backoff_max: float = 86400.0
    disable_after: int = 5
    disabled_probe: float = 7 * 86400.0

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> Policy:
        return cls(
            min_interval=settings.min_interval_s,
            default_interval=settings.default_interval_s,
            max_interval=max(settings.max_interval_s, settings.min_interval_s),
            backoff_max=settings.backoff_max_s,
            disable_after=settings.disable_after,
            disabled_probe=settings.disabled_probe_s,
        )

    def clamp(self, seconds: float) -> float:
        return min(self.max_interval, max(self.min_interval, seconds))


def adaptive_interval(published: Iterable[float], policy: Policy, override: float | None = None) -> float:
    """The poll interval from item publication times (epoch seconds); see the module docstring."""
    if override is not None:
        return policy.clamp(override)
    times = sorted(set(published))
    if len(times) < 3:
        return policy.clamp(policy.default_interval)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return policy.clamp(statistics.median(gaps))


def after_skips(when: float, skip_hours: frozenset[int], skip_days: frozenset[str]) -> float:
    """``when`` moved forward to the first UTC hour that is in neither skip list."""
    if not skip_hours and not skip_days:
        return when
    moment = datetime.fromtimestamp(when, tz=UTC)
    for _ in range(24 * 8):
        if moment.hour not in skip_hours and DAYS[moment.weekday()] not in skip_days:
            return moment.timestamp()
        moment = moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return when  # every hour of every day skipped: the hint is nonsense, ignore it


def next_after_success(
    now: float,
    interval: float,
    policy: Policy,
    fresh_for: float | None = None,
    ttl_minutes: int | None = None,
    skip_hours: frozenset[int] = frozenset(),
    skip_days: frozenset[str] = frozenset(),
) -> float:
    """The next poll after a successful (200 or 304) poll."""
    wait = interval
    for hint in (fresh_for, ttl_minutes * 60.0 if ttl_minutes else None):
        if hint is not None and hint > wait:
            wait = min(hint, policy.max_interval)
    return after_skips(now + max(wait, policy.min_interval), skip_hours, skip_days)


def backoff_delay(failures: int, interval: float, policy: Policy, rng: random.Random) -> float:
    """Exponential backoff with full jitter, from the feed's own interval, at least ``min_interval``."""
    ceiling = min(policy.backoff_max, max(interval, policy.min_interval) * 2 ** max(0, failures - 1))
    return max(policy.min_interval, rng.uniform(0.0, ceiling))


@dataclass(frozen=True)
class FailurePlan:
    next_poll: float
    consecutive_failures: int
    hard_failures: int
    disabled_reason: str | None


def plan_failure(
    now: float,
    status: FeedStatus,
    error: str,
    consecutive_failures: int,
    hard_failures: int,
    interval: float,
    policy: Policy,
    rng: random.Random,
    retry_after: float | None = None,
) -> FailurePlan:
    """Counters, next poll and (maybe) a disable reason after a failed poll."""
    failures = consecutive_failures + 1
    hard = hard_failures + (0 if status.transient else 1)
    reason = None
    if status is FeedStatus.HTTP_410:
        reason = f"gone: the server answered 410 ({error}); remove the feed or 'newsflow feeds reset' it"
    elif hard >= policy.disable_after:
        reason = f"{hard} hard failures in a row, last {status}: {error}"
    if reason is not None:
        return FailurePlan(now + policy.disabled_probe, failures, hard, reason)
    if retry_after is not None:  # the server said when: that, within [min_interval, backoff_max]
        delay = max(policy.min_interval, min(retry_after, policy.backoff_max))
    else:
        delay = backoff_delay(failures, interval, policy, rng)
    return FailurePlan(now + delay, failures, hard, None)
