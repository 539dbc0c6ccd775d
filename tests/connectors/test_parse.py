from pathlib import Path

from connectors.rss.feeds import load_feeds
from connectors.rss.normalize import article_id, canonical_url
from connectors.rss.parse import parse_feed
from newsflow.config import REPO_ROOT

FEEDS = REPO_ROOT / "examples" / "feeds"


def test_every_sample_feed_parses_cleanly():
    total = 0
    for path in sorted(FEEDS.glob("*.rss")) + sorted(FEEDS.glob("*.atom")):
        parsed = parse_feed(
            path.read_bytes(), f"http://127.0.0.1/{path.name}", content_type="application/xml"
        )
        assert parsed.is_feed and not parsed.bozo, (path, parsed.bozo_reason)
        assert parsed.articles and not parsed.rejected
        for article in parsed.articles:
            assert article.title and article.canonical_url and article.text
            assert article.published_at and article.published_at.endswith("Z")
            assert "utm_" not in article.canonical_url
        total += len(parsed.articles)
    assert total >= 40


def test_latin1_feed_is_decoded_from_its_declaration():
    parsed = parse_feed((FEEDS / "mideast-monitor.rss").read_bytes(), "http://x/m.rss")
    text = " ".join(a.title + a.summary for a in parsed.articles)
    assert "Genève" in text


def test_malformed_xml_is_bozo_but_recovered_items_are_kept():
    data = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
    <item><title>Good item</title><link>https://a.example/1</link>
    <description>ok & broken</description></item>
    </channel>"""  # unescaped & and missing </rss>
    parsed = parse_feed(data, "http://x/feed")
    assert parsed.bozo
    assert [a.title for a in parsed.articles] == ["Good item"]


def test_html_page_is_not_a_feed():
    parsed = parse_feed(b"<html><body><h1>Welcome</h1></body></html>", "http://x/", content_type="text/html")
    assert not parsed.is_feed and not parsed.articles


def test_item_without_link_guid_or_title_is_rejected_with_a_reason():
    data = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
    <item><description>orphan text</description></item>
    <item><title>Has a title</title></item></channel></rss>"""
    parsed = parse_feed(data, "http://x/feed")
    assert [r.reason for r in parsed.rejected] == ["unidentifiable_item"]
    assert [a.title for a in parsed.articles] == ["Has a title"]


def test_non_english_item_gets_its_language():
    parsed = parse_feed((FEEDS / "world-desk.rss").read_bytes(), "http://x/w.rss")
    assert "fr" in {a.language for a in parsed.articles}


def test_feeds_yaml_substitutes_the_base_url(tmp_path: Path):
    feeds = load_feeds(REPO_ROOT / "examples" / "feeds.yaml", base="http://127.0.0.1:1234")
    assert len(feeds) == 7 and all(f.url.startswith("http://127.0.0.1:1234/") for f in feeds)
    assert [f.full_text for f in feeds].count("always") == 1  # the Valley Gazette: teasers only
    opml = tmp_path / "f.opml"
    opml.write_text(
        '<opml version="2.0"><body><outline text="A" xmlUrl="https://a.example/rss"/></body></opml>'
    )
    assert [(f.url, f.name) for f in load_feeds(opml)] == [("https://a.example/rss", "A")]


def test_links_that_are_not_http_are_not_stored_and_the_item_keeps_its_guid_identity():
    links = ["javascript:alert(1)", "file:///etc/passwd", "data:text/html,<b>x</b>", "mailto:a@b.example"]
    items = "".join(
        f"<item><title>Item {i}</title><link>{link}</link><guid isPermaLink='false'>urn:item:{i}</guid>"
        "</item>"
        for i, link in enumerate(links)
    )
    body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{items}</channel></rss>'
    parsed = parse_feed(body.encode(), "http://feeds.example/rss")
    assert len(parsed.articles) == len(links)
    for i, article in enumerate(parsed.articles):
        assert article.url is None and article.canonical_url is None
        assert article.guid == f"urn:item:{i}"
    assert len({a.id for a in parsed.articles}) == len(links)


def test_each_article_says_its_id_under_an_older_scheme_when_asked():
    links = ["https://n.example/a/./b?x=%7e", "https://n.example/plain", "urn:not-a-url"]
    items = "".join(
        f"<item><title>Item {i}</title><link>{link}</link><guid>urn:item:{i}</guid></item>"
        for i, link in enumerate(links)
    )
    body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{items}</channel></rss>'
    parsed = parse_feed(body.encode(), "http://feeds.example/rss", legacy_scheme=1)
    changed = parsed.articles[0]
    assert changed.canonical_url == "https://n.example/a/b?x=~"
    old = article_id(canonical_url(links[0], scheme=1), "urn:item:0", "http://feeds.example/rss", "Item 0")
    assert parsed.legacy_ids == {changed.id: old}  # the others have one id under both schemes
    assert parse_feed(body.encode(), "http://feeds.example/rss").legacy_ids == {}
