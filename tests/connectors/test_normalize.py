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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://example.com/a/./b/../c", "https://example.com/a/c"),
        ("https://example.com/%7euser/a%2fb", "https://example.com/~user/a%2Fb"),
        ("https://BÜCHER.example/straße?q=ü", "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%BC"),
        ("https://example.com/a?q=a%20b&b", "https://example.com/a?b=&q=a+b"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ],
)
def test_canonical_url_applies_w3lib_rules(raw, expected):
    assert canonical_url(raw) == expected


def test_one_story_has_one_id_however_its_url_is_spelled():
    spellings = [
        "https://xn--bcher-kva.example/news/caf%C3%A9?id=7",
        "https://bücher.example/news/café?id=7&utm_source=rss",
        "HTTPS://Bücher.Example:443/news/./archive/../caf%c3%a9?id=7#comments",
    ]
    ids = {article_id(canonical_url(url), None, "https://f", "T") for url in spellings}
    assert len(ids) == 1
    for url in spellings:  # a canonical URL is its own canonical form
        assert canonical_url(canonical_url(url)) == canonical_url(url)


def test_scheme_1_keeps_the_rules_older_state_stores_hashed():
    url = "https://example.com/a/./b?x=%7e&y=a%20b&utm_source=rss"
    assert canonical_url(url, scheme=1) == "https://example.com/a/./b?x=~&y=a+b"
    assert canonical_url(url) == "https://example.com/a/b?x=~&y=a+b"
    assert canonical_url("https://example.com/plain?b=1&a=2", scheme=1) == canonical_url(
        "https://example.com/plain?b=1&a=2"
    )
