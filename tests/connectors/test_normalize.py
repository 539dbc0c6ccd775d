import time

import pytest

from connectors.rss.normalize import article_id, canonical_url, html_to_text, to_utc_iso


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTPS://Example.COM/a/b?utm_source=rss&utm_medium=feed#top", "https://example.com/a/b"),
        ("https://example.com:443/x?b=2&a=1&fbclid=zz&gclid=1", "https://example.com/x?a=1&b=2"),
        ("http://example.com:8080/x", "http://example.com:8080/x"),
        ("https://example.com", "https://example.com/"),
        ("mailto:someone@example.com", None),
        ("javascript:alert(1)", None),
        ("", None),
    ],
)
def test_canonical_url(raw, expected):
    assert canonical_url(raw) == expected


def test_relative_links_resolve_against_the_site():
    assert canonical_url("/2026/story?utm_campaign=x", base="https://news.example.org/feed") == (
        "https://news.example.org/2026/story"
    )


def test_same_story_with_different_tracking_has_one_id():
    a = article_id(canonical_url("https://x.net/s?utm_source=a"), "guid-1", "https://f1", "T")
    b = article_id(canonical_url("https://X.net/s?utm_source=b&utm_medium=c"), "guid-2", "https://f2", "T")
    assert a == b and a is not None and len(a) == 32


def test_id_falls_back_to_guid_then_feed_and_title():
    by_guid = article_id(None, "urn:uuid:1", "https://f", "T")
    assert by_guid == article_id(None, "urn:uuid:1", "https://other", "Other")
    by_title = article_id(None, None, "https://f", "Some Title")
    assert by_title == article_id(None, None, "https://f", "  some title ")
    assert by_title != article_id(None, None, "https://g", "Some Title")
    assert article_id(None, None, "https://f", "   ") is None


def test_html_to_text_keeps_paragraphs_and_drops_scripts():
    html = "<p>First &amp; <b>bold</b>.</p><script>evil()</script><p>Second<br/>line</p>"
    assert html_to_text(html) == "First & bold.\n\nSecond\nline"
    assert html_to_text("plain text stays") == "plain text stays"
    assert html_to_text(None) == ""


def test_dates_become_utc_iso_or_none():
    assert to_utc_iso(time.strptime("2026-10-14 07:40:00", "%Y-%m-%d %H:%M:%S")) == "2026-10-14T07:40:00Z"
    assert to_utc_iso(None) is None
    assert to_utc_iso(time.strptime("1970-01-01", "%Y-%m-%d")) is None  # absurd dates are dropped
