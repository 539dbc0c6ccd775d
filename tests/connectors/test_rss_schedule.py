"""Scheduling as pure functions: adaptive interval, server hints, backoff with jitter, disabling."""

import random
from datetime import UTC, datetime

import pytest

from connectors.rss.schedule import (
    Policy,
    adaptive_interval,
    after_skips,
    backoff_delay,
    next_after_success,
    parse_duration,
    plan_failure,
)
from newsflow.errors import ConfigError
from newsflow.records import FeedStatus

POLICY = Policy(
    min_interval=300, default_interval=1800, max_interval=43200, backoff_max=86400, disable_after=3
)
NOW = datetime(2026, 3, 4, 10, 30, tzinfo=UTC).timestamp()  # a Wednesday


def test_parse_duration():
    assert [parse_duration(x) for x in ("30s", "15m", "2h", "1d", "90")] == [30, 900, 7200, 86400, 90]
    with pytest.raises(ConfigError, match="15m"):
        parse_duration("often")


def test_adaptive_interval_is_the_median_publication_gap_clamped():
    hourly = [NOW - 3600 * i for i in range(10)]
    assert adaptive_interval(hourly, POLICY) == 3600
    burst = [NOW - 10 * i for i in range(10)]  # every 10 s: clamped up to the minimum
    assert adaptive_interval(burst, POLICY) == 300
    weekly = [NOW - 7 * 86400 * i for i in range(5)]  # clamped down to the maximum
    assert adaptive_interval(weekly, POLICY) == 43200
    assert adaptive_interval([NOW], POLICY) == 1800  # too little history: the default
    assert adaptive_interval(hourly, POLICY, override=600) == 600  # a per-feed override wins
    assert adaptive_interval(hourly, POLICY, override=5) == 300  # ... but is still clamped


def test_cache_headers_and_ttl_raise_the_next_poll_but_never_lower_it():
    assert next_after_success(NOW, 600, POLICY) == NOW + 600
    assert next_after_success(NOW, 600, POLICY, fresh_for=3600) == NOW + 3600
    assert next_after_success(NOW, 600, POLICY, fresh_for=60) == NOW + 600
    assert next_after_success(NOW, 600, POLICY, ttl_minutes=120) == NOW + 7200
    assert next_after_success(NOW, 600, POLICY, fresh_for=10 * 86400) == NOW + 43200  # capped
    assert next_after_success(NOW, 10, POLICY) == NOW + 300  # never below the minimum


def test_skip_hours_and_days_postpone_in_utc():
    at_11 = NOW + 1800  # 11:00 UTC
    assert after_skips(at_11, frozenset({11, 12}), frozenset()) == NOW + 1800 + 7200  # 13:00
    thursday = datetime(2026, 3, 5, tzinfo=UTC).timestamp()
    assert after_skips(NOW + 86400, frozenset(), frozenset({"thursday"})) == thursday + 86400  # Friday 00:00
    assert after_skips(NOW, frozenset(range(24)), frozenset()) == NOW  # nonsense hint: ignored
    skipped = next_after_success(NOW, 1800, POLICY, skip_hours=frozenset({11}))
    assert datetime.fromtimestamp(skipped, UTC).hour == 12


def test_backoff_is_exponential_with_full_jitter():
    rng = random.Random(7)
    for failures in range(1, 12):
        ceiling = min(86400, 600 * 2 ** (failures - 1))
        delays = [backoff_delay(failures, 600, POLICY, rng) for _ in range(200)]
        assert all(300 <= d <= max(300, ceiling) for d in delays)
        assert max(delays) > 0.8 * ceiling  # the jitter spans the whole window
    assert len({backoff_delay(4, 600, POLICY, rng) for _ in range(20)}) > 10  # spread, not in lockstep


def test_retry_after_sets_the_next_poll():
    plan = plan_failure(
        NOW, FeedStatus("http_503"), "busy", 0, 0, 600, POLICY, random.Random(1), retry_after=7200
    )
    assert plan.next_poll == NOW + 7200 and plan.disabled_reason is None
    plan = plan_failure(
        NOW, FeedStatus("http_429"), "slow down", 0, 0, 600, POLICY, random.Random(1), retry_after=5
    )
    assert plan.next_poll == NOW + 300  # honoured, but never more often than the minimum interval
    plan = plan_failure(
        NOW, FeedStatus("http_503"), "busy", 0, 0, 600, POLICY, random.Random(1), retry_after=1e9
    )
    assert plan.next_poll == NOW + 86400  # a silly Retry-After is capped at the longest backoff


def test_hard_failures_disable_transient_ones_do_not():
    rng = random.Random(3)
    plan = plan_failure(NOW, FeedStatus("http_404"), "gone?", 1, 1, 600, POLICY, rng)
    assert (plan.consecutive_failures, plan.hard_failures, plan.disabled_reason) == (2, 2, None)
    plan = plan_failure(NOW, FeedStatus("http_404"), "Not Found", 2, 2, 600, POLICY, rng)
    assert plan.disabled_reason.startswith("3 hard failures in a row, last http_404")
    assert plan.next_poll == NOW + POLICY.disabled_probe
    plan = plan_failure(NOW, FeedStatus("timeout"), "slow", 50, 0, 600, POLICY, rng)
    assert plan.disabled_reason is None and plan.consecutive_failures == 51 and plan.hard_failures == 0
    plan = plan_failure(NOW, FeedStatus("http_410"), "HTTP 410 Gone", 0, 0, 600, POLICY, rng)
    assert plan.disabled_reason.startswith("gone: the server answered 410")
