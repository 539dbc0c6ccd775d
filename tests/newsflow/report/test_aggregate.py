"""The report's rules as plain functions: the window, the bucket, what counts as a spike."""

from datetime import UTC, datetime, timedelta

import pytest

from newsflow.errors import ConfigError
from newsflow.report.aggregate import aggregate, choose_bucket, floor, spike_indices
from newsflow.report.build import parse_since
from newsflow.report.sources import HealthData, Row

NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)


def test_since_accepts_durations_times_and_all():
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_since("2026-11-01T00:00:00Z", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=UTC)  # naive = UTC
    assert parse_since("all", NOW) is None and parse_since(None, NOW) is None
    with pytest.raises(ConfigError, match="--since"):
        parse_since("last week", NOW)


def test_hours_up_to_three_days_then_days():
    assert choose_bucket(NOW - timedelta(days=3), NOW) == "hour"
    assert choose_bucket(NOW - timedelta(days=3, seconds=1), NOW) == "day"
    assert floor(NOW, "hour") == datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert floor(NOW, "day") == datetime(2026, 11, 20, tzinfo=UTC)


def test_a_spike_stands_out_and_has_three_articles_at_least():
    assert spike_indices([0, 0, 1, 0, 12, 0, 1, 0]) == [4]
    assert spike_indices([0, 2, 0, 0, 0, 0, 0]) == []  # stands out, but 2 articles are no spike
    assert spike_indices([4, 4, 4, 4]) == []  # a steady flow is no spike
    assert spike_indices([5, 0]) == []  # two buckets say nothing about a baseline
    many = [0] * 200 + [9, 3, 8, 7, 6, 5]
    assert spike_indices(many) == [200, 202, 203, 204, 205]  # the 5 largest, largest first


def test_an_empty_window_still_has_its_buckets_and_no_numbers():
    data = aggregate([], HealthData(), NOW - timedelta(hours=5), NOW)
    assert data.bucket == "hour" and len(data.buckets) == 6
    assert data.records.count == 0 and data.topics == [] and data.claims == {}
    assert {k for k, c in data.cells().items() if c.count} == set()


def test_an_article_on_two_topics_counts_in_both_once_per_topic():
    row = Row("a1", NOW, "t", None, "S", ("syria_conflict", "syria_conflict", "other"), ())
    data = aggregate([row], HealthData(), NOW - timedelta(hours=2), NOW)
    assert data.topic_totals["syria_conflict"].ids == ["a1"]
    assert data.topic_totals["other"].ids == ["a1"]
    assert data.topics == ["syria_conflict", "other"]  # other last
