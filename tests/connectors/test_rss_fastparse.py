"""The ElementTree fast path gives exactly what feedparser gives, or leaves the document to feedparser.

Every document here is parsed twice by ``parse_feed`` — fast path on, and off (feedparser only) — and
the two :class:`ParsedFeed` results must be equal field by field (articles, rejected items, feed
title, ttl, skips, bozo flag and reason); only ``parser`` differs. Where the fast path took the
document, its raw entry values (before HTML becomes text) must match feedparser's too. Documents:
the sample feeds, the benchmark generator, the documents of the loopback-server tests, crafted edge
cases, and seeded random mixes of item elements in random orders (order decides several of
feedparser's rules).
"""

import dataclasses
import io
import random
from pathlib import Path

import feedparser
import pytest

from bench.bench_ingest import feed_body
from connectors.rss import fastparse
from connectors.rss import parse as parse_module
from connectors.rss.parse import ParsedFeed, parse_feed
from newsflow.config import REPO_ROOT
from tests.connectors import test_rss_ingest as ingest_docs
from tests.connectors import test_rss_parse_inputs as input_docs

FEEDS = REPO_ROOT / "examples" / "feeds"
FETCHED = "2026-01-01T00:00:00Z"
DC = 'xmlns:dc="http://purl.org/dc/elements/1.1/"'
CONTENT = 'xmlns:content="http://purl.org/rss/1.0/modules/content/"'
ATOM = 'xmlns:atom="http://www.w3.org/2005/Atom"'


def both(data: bytes, **kwargs) -> tuple[ParsedFeed, ParsedFeed]:
    """(fast path allowed, feedparser only) for the same call."""
    kwargs.setdefault("fetched_at", FETCHED)
    kwargs.setdefault("feed_url", "http://feeds.example/news/feed.xml")
    fast = parse_feed(data, **kwargs)
    parse_module.FAST_PATH = False
    try:
        slow = parse_feed(data, **kwargs)
    finally:
        parse_module.FAST_PATH = True
    return fast, slow


ENTRY_KEYS = ("link", "id", "title", "summary", "content", "authors", "author", "tags", "language")
DATE_KEYS = ("published", "published_parsed", "updated", "updated_parsed")


def assert_same_entries(data: bytes, content_type: str | None) -> None:
    """Below the articles: the raw entry values match feedparser's too (before HTML becomes text)."""
    headers = {"content-type": content_type or "application/xml"}
    mine = fastparse.parse(data, headers)
    if mine is None:
        return
    theirs = feedparser.parse(
        io.BytesIO(data), response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )
    assert (mine.version, mine.bozo) == (theirs.version, theirs.bozo)
    for key in ("title", "language", "ttl"):
        assert mine.feed.get(key) == theirs.feed.get(key), key
    assert len(mine.entries) == len(theirs.entries)
    for ours, real in zip(mine.entries, theirs.entries, strict=True):
        for key in ENTRY_KEYS + DATE_KEYS:
            value, expected = dict.get(ours, key), dict.get(real, key)
            if key == "content" and expected is not None:
                value, expected = [c["value"] for c in value], [c["value"] for c in expected]
            assert value == expected, (key, value, expected)


def assert_same(data: bytes, parser: str | None = "fast", **kwargs) -> ParsedFeed:
    assert_same_entries(data, kwargs.get("content_type"))
    fast, slow = both(data, **kwargs)
    assert slow.parser == "feedparser" or slow.status == "xml_entities"
    if parser is not None:
        assert fast.parser == parser, data[:300]
    for mine, theirs in zip(fast.articles, slow.articles, strict=False):
        assert mine == theirs  # the first differing article, field by field in the report
    assert dataclasses.replace(fast, parser="") == dataclasses.replace(slow, parser=""), data[:300]
    return fast


def rss(
    items: str, channel: str = "", ns: str = "", head: str = '<?xml version="1.0" encoding="utf-8"?>'
) -> bytes:
    return (
        f'{head}<rss version="2.0" {DC} {CONTENT} {ATOM} {ns}><channel><title>Desk</title>'
        f"<link>https://desk.example/</link>{channel}{items}</channel></rss>"
    ).encode()


def atom(entries: str, attrs: str = "", feed: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" {DC} {attrs}>'
        f"<title>Atom desk</title><id>urn:feed</id><updated>2026-11-20T10:00:00Z</updated>{feed}{entries}"
        f"</feed>"
    ).encode()


def entry(body: str, attrs: str = "") -> str:
    return f"<entry {attrs}><id>urn:e:{abs(hash(body)) % 10**8}</id>{body}</entry>"


# -- real and generated documents -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted(FEEDS.glob("*.rss")) + sorted(FEEDS.glob("*.atom")), ids=lambda p: p.name
)
def test_sample_feeds_take_the_fast_path_with_identical_articles(path: Path):
    parsed = assert_same(path.read_bytes(), content_type="application/xml")
    assert parsed.articles and not parsed.bozo


def test_benchmark_feeds_take_the_fast_path_with_identical_articles():
    for feed, generation in [(0, 1), (7, 2), (96, 3), (123, 9)]:
        parsed = assert_same(feed_body(feed, generation), content_type="application/rss+xml")
        assert len(parsed.articles) == 20


def test_documents_of_the_server_tests_parse_identically():
    good = ingest_docs.rss(ingest_docs.item(1), ingest_docs.item(2, when="Tue, 12 Jan 2027 08:00:00 +0100"))
    assert_same(good.encode())
    assert_same(ingest_docs.rss(ingest_docs.item(6, title="Z\u00fcrich \u00f6ffnet")).encode("utf-8"))
    orphan = ingest_docs.rss(
        "<item><description>no link, no guid, no title</description></item>", ingest_docs.item(6)
    )
    assert len(assert_same(orphan.encode()).rejected) == 1
    assert_same(ingest_docs.rss().encode())  # an empty channel
    malformed = ingest_docs.rss(ingest_docs.item(3)).replace(
        "</channel></rss>", "<item><title>broken & x</title>"
    )
    assert assert_same(malformed.encode(), parser="feedparser").bozo
    # Encoding trouble feedparser recovers from: its bozo flag and reason are kept on the fast path.
    cp1252 = ingest_docs.rss(ingest_docs.item(4, title="Gen\u00e8ve \u2013 talks resume")).encode("cp1252")
    assert assert_same(cp1252).bozo
    undeclared = ingest_docs.rss(ingest_docs.item(5, title="Z\u00fcrich")).replace(' encoding="utf-8"', "")
    assert assert_same(undeclared.encode("latin-1")).bozo
    wide = input_docs.rss(
        input_docs.ITEM.format(title="Wide text", n=1, text="x"),
        head='<?xml version="1.0" encoding="utf-16"?>',
    )
    assert_same(wide.encode("utf-16"))
    channel = (
        "<ttl>90</ttl><skipHours><hour>0</hour><hour>23</hour></skipHours><skipDays><day>Sunday</day>"
        "</skipDays>"
    )
    hinted = assert_same(
        input_docs.rss(input_docs.ITEM.format(title="a", n=1, text="b"), channel=channel).encode()
    )
    assert hinted.ttl_minutes == 90 and hinted.skip_hours == {0, 23}
    relative = input_docs.rss("<item><title>Rel</title><link>/story/1?utm_source=rss</link></item>").encode()
    assert_same(relative, feed_url="http://old.example/feed", base_url="https://new.example/feed")
    for page in [
        b"",
        b"   \n",
        b"<html><body><h1>Welcome</h1></body></html>",
        b"<!DOCTYPE html><html></html>",
    ]:
        assert assert_same(page, parser="feedparser", content_type="text/html").status == "not_a_feed"


def test_entity_declarations_are_refused_by_either_parser(monkeypatch):
    body = (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaa">]>'
        + rss("<item><title>&a;</title></item>")[21:]
    )
    for fast in (True, False):
        monkeypatch.setattr(parse_module, "FAST_PATH", fast)
        parsed = parse_feed(body, "http://x/f")
        assert parsed.status == "xml_entities" and parsed.parser == "" and not parsed.articles


# -- crafted RSS 2.0 ------------------------------------------------------------------------------------

RSS_CASES = {
    "cdata": "<item><title><![CDATA[Markets <b>rally</b> & fall]]></title><link>https://n.example/1</link>"
    "<description><![CDATA[<p>First &amp; second</p><script>x()</script>]]></description></item>",
    "escaped entities in the title": "<item><title>Caf&amp;eacute; &amp;amp; &lt;b&gt;bold&lt;/b&gt; "
    "&#233;t&#xE9; &#8220;q&#8221;"
    "</title><link>https://n.example/2</link></item>",
    "content:encoded after description": "<item><title>C</title><link>https://n.example/3</link>"
    "<description>Short lead for the story.</description>"
    "<content:encoded><![CDATA[<p>Short lead for the story.</p><p>And the long body of it.</p>]]>"
    "</content:encoded></item>",
    "content:encoded only": "<item><title>C2</title><link>https://n.example/4</link>"
    "<content:encoded>&lt;p&gt;Only a body here.&lt;/p&gt;</content:encoded></item>",
    "content:encoded before description": "<item>"
    "<content:encoded>&lt;p&gt;Body first.&lt;/p&gt;</content:encoded>"
    "<title>C3</title><description>Lead after the body.</description><link>https://n.example/5</link></item>",
    "two descriptions": "<item><title>D</title><link>https://n.example/6</link><description>One.</description>"
    "<description>Two, which feedparser makes the content.</description></item>",
    "dublin core": "<item><title>DC</title><link>https://n.example/7</link><dc:creator>Ana Ruiz</dc:creator>"
    "<dc:creator>Ben Ode</dc:creator><dc:date>2026-10-02T07:30:00+02:00</dc:date><dc:language>de-AT"
    "</dc:language>"
    "<dc:subject>Energy</dc:subject><dc:subject>Gas</dc:subject></item>",
    "author with email": "<item><title>A</title><link>https://n.example/8</link>"
    "<author>desk@n.example (Olga Petrenko)</author></item>",
    "author email only": "<item><title>A2</title><link>https://n.example/9</link><author>desk@n.example</author></item>",
    "missing pubDate": "<item><title>No date</title><link>https://n.example/10</link></item>",
    "named and numeric zones": "".join(
        f"<item><title>Z{i}</title><link>https://n.example/z{i}</link><pubDate>{when}</pubDate></item>"
        for i, when in enumerate(
            [
                "Tue, 10 Jun 2025 04:00:00 EST",
                "Tue, 10 Jun 2025 04:00:00 GMT",
                "Tue, 10 Jun 2025 04:00:00 PDT",
                "Tue, 10 Jun 2025 04:00:00 +0530",
                "10 Jun 2025 04:00 -0700",
                "Tue, 10 Jun 2025 04:00:00 Z",
                "2025-06-10T04:00:00Z",
                "Tuesday, June 10, 2025",
                "yesterday-ish",
                "",
            ]
        )
    ),
    "several categories": "<item><title>Cat</title><link>https://n.example/11</link><category>Energy</category>"
    '<category domain="https://n.example/tax">Russia</category><category>Energy</category><category/>'
    '<category domain="x"/><category>After an empty one</category></item>',
    "guid permalink and not": '<item><title>G1</title><guid isPermaLink="false">tag-123</guid></item>'
    "<item><title>G2</title><guid>https://n.example/from-guid?utm_source=x</guid></item>"
    '<item><title>G3</title><guid isPermaLink="true">https://n.example/guid3</guid>'
    "<link>https://n.example/link3</link></item>"
    "<item><title>G4</title><link>https://n.example/link4</link><guid>https://n.example/guid4</guid></item>"
    "<item><title>G5</title><guid>https://n.example/guid5</guid><link></link></item>"
    "<item><guid>relative/guid6</guid></item>",
    "relative links": "<item><title>R1</title><link>/story/1</link></item>"
    "<item><title>R2</title><link>story/2</link></item>"
    "<item><title>R3</title><link>  https://n.example/x?a=1&amp;b=2&amp;amp;c=3  </link></item>",
    "unidentifiable and title only": "<item><description>orphan</description></item>"
    "<item><title>Has a title</title></item>",
    "channel hints and furniture": "<item><title>H</title><link>https://n.example/12</link></item>",
    "mojibake and cp1252 controls": "<item><title>CafÃ© \u0093quoted\u0094 \u0080</title><link>https://n.example/13</link>"
    "<description>Gen\u00e8ve</description></item>",
    "upper-case tags": "<item><Title>Upper</Title><LINK>https://n.example/14</LINK>"
    "<PubDate>Mon, 01 Sep 2025 10:00:00 GMT</PubDate></item>",
    "ignored extras": '<item xmlns:wfw="http://wellformedweb.org/commentAPI/" '
    'xmlns:slash="http://purl.org/rss/1.0/modules/slash/" '
    'xmlns:media="http://search.yahoo.com/mrss/"><title>X</title><link>https://n.example/15</link>'
    "<comments>https://n.example/15#c</comments>"
    '<enclosure url="https://n.example/a.mp3" length="1" type="audio/mpeg"/>'
    '<source url="https://wire.example/rss">Wire</source><wfw:commentRss>/c/15</wfw:commentRss>'
    '<slash:comments>4</slash:comments><media:content url="https://n.example/p.jpg" medium="image"/></item>',
    "atom:link in an item": '<item><title>AL</title><atom:link rel="alternate" href="https://n.example/16"/>'
    '<atom:link rel="self" href="https://n.example/16.xml"/></item>'
    '<item><title>AL2</title><link>https://n.example/17</link><atom:link href="https://n.example/17-alt"/>'
    "</item>",
    "whitespace and nbsp": "<item><title>\n   Spaced\u00a0out  \n</title>"
    "<link>\n https://n.example/18 \n</link>"
    "<description>  lead\u00a0 </description></item>",
    "several titles": "<item><title></title><title>Second, the first non-empty</title>"
    "<dc:title>Third</dc:title></item>"
    '<item><title>T1</title><source url="https://w.example/">W</source><title>After a source</title></item>',
    "elements feedparser has no handler for": '<item xmlns:x="urn:x" xmlns:yandex="http://news.yandex.ru">'
    '<title>Ext</title><link>https://n.example/19</link><x:note>n</x:note><foo a="1">bar<baz>q</baz></foo>'
    "<yandex:full-text>Full text</yandex:full-text><dateposted>2026</dateposted></item>",
    "rdf:about in rss 2.0": '<item xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" rdf:about="https://n.example/about">'
    "<title>About</title></item>",
}
CHANNEL = (
    '<language>fr-FR</language><ttl>45</ttl><atom:link rel="self" href="https://desk.example/rss"/>'
    "<image><url>https://desk.example/logo.png</url><title>Desk logo</title><link>https://desk.example/"
    "</link></image>"
    "<textInput><title>Search</title><description>d</description><name>q</name><link>https://desk.example/s"
    "</link></textInput>"
    "<managingEditor>ed@desk.example (Ed)</managingEditor><category>News</category><generator>g</generator>"
)


@pytest.mark.parametrize("case", list(RSS_CASES))
def test_crafted_rss_items(case: str):
    assert_same(
        rss(RSS_CASES[case], channel=CHANNEL if "hints" in case else ""), base_url="https://n.example/feed"
    )


def test_xml_base_resolves_links_and_guids_like_feedparser():
    items = (
        '<item xml:base="https://base.example/a/"><title>B1</title><link>one</link></item>'
        "<item><title>B2 (the base sticks, as in feedparser)</title><link>two</link><guid>g/2</guid></item>"
        '<item xml:base="../b/"><title>B3</title><link>three</link></item>'
    )
    parsed = assert_same(
        rss(items, ns='xml:base="https://root.example/x/"'), base_url="https://fetched.example/f"
    )
    assert parsed.articles[0].url == "https://base.example/a/one"
    assert_same(rss(items), base_url="https://fetched.example/f")
    assert_same(rss('<item xml:base="javascript:alert(1)"><title>J</title><link>rel</link></item>'))


def test_language_comes_from_the_right_place():
    assert_same(
        rss("<item><title>Kurz</title><link>https://n.example/1</link></item>", ns='xml:lang="de_AT"')
    )
    assert_same(
        rss(
            "<item><title>Short</title><link>https://n.example/1</link></item>",
            channel="<dc:language>nl</dc:language>",
        )
    )


def test_feed_title_and_ttl_oddities():
    assert_same(rss("<item><title>t</title></item>", channel='<ttl unit="min">30</ttl>'))
    assert_same(
        rss("", channel="<ttl> 15 </ttl>").replace(b"<title>Desk</title>", b"<title></title>"), source="Named"
    )


# -- crafted RSS 1.0 ------------------------------------------------------------------------------------

RDF_HEAD = (
    '<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
    f'xmlns="http://purl.org/rss/1.0/" {DC} {CONTENT} xml:lang="en">'
)
RDF_CHANNEL = (
    '<channel rdf:about="https://rdf.example/"><title>RDF desk</title><link>https://rdf.example/</link>'
    "<description>d</description><dc:language>en-GB</dc:language>"
    '<image rdf:resource="https://rdf.example/logo.png"/><items><rdf:Seq>'
    '<rdf:li rdf:resource="https://rdf.example/1"/>'
    "</rdf:Seq></items></channel>"
)
RDF_ITEM = (
    '<item rdf:about="https://rdf.example/1"><title>RDF one</title><link>https://rdf.example/1</link>'
    "<description>Lead &amp; more</description><dc:creator>R. Writer</dc:creator>"
    "<dc:date>2026-09-01T10:00:00Z</dc:date>"
    "<dc:subject>Science</dc:subject><content:encoded><![CDATA[<p>Body text of the RDF story.</p>]]>"
    "</content:encoded></item>"
    '<item rdf:about="https://rdf.example/2"><title>RDF two, no link</title></item>'
)


@pytest.mark.parametrize(
    "body",
    [
        RDF_CHANNEL + RDF_ITEM,
        RDF_CHANNEL + '<image rdf:about="https://rdf.example/logo.png"><title>Logo</title>'
        "<url>https://rdf.example/logo.png</url>"
        "<link>https://rdf.example/</link></image>"
        + RDF_ITEM
        + '<textinput rdf:about="s"><title>S</title></textinput>',
        "<image><title>Logo first</title><url>u</url><link>l</link></image>" + RDF_CHANNEL + RDF_ITEM,
        RDF_ITEM + RDF_CHANNEL,
    ],
    ids=["plain", "image and textinput", "image before channel", "items before channel"],
)
def test_rss10(body: str):
    assert_same((RDF_HEAD + body + "</rdf:RDF>").encode())


# -- crafted Atom 1.0 -----------------------------------------------------------------------------------

ATOM_CASES = {
    "html content and text summary": entry(
        '<title>H</title><link href="https://a.example/1"/><summary>Plain lead.</summary>'
        '<content type="html">&lt;p&gt;Body &amp;amp; more&lt;/p&gt;</content><updated>2026-10-01T10:00:00Z'
        "</updated>"
    ),
    "xhtml content in a div": entry(
        '<title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">X <b>bold</b></div></title>'
        '<link href="https://a.example/2"/><content type="xhtml"> <div xmlns="http://www.w3.org/1999/xhtml">'
        '<p class="lead" title="a &amp; &quot;b&gt;&quot;" xml:lang="en" TYPE="Disc">One &amp; '
        '<em xmlns:f="urn:f" f:c="3" C="4" xml:base="/b/">two</em></p><p>Three&lt;four</p><br/></div>'
        " </content>"
    ),
    "xhtml without a wrapping div": entry(
        '<title>X2</title><link href="https://a.example/3"/><content type="xhtml">'
        '<p xmlns="http://www.w3.org/1999/xhtml">A</p><div xmlns="http://www.w3.org/1999/xhtml">B</div>'
        "</content>"
    ),
    "xhtml div with text around it": entry(
        '<title>X3</title><link href="https://a.example/4"/><summary type="xhtml">lead '
        '<div xmlns="http://www.w3.org/1999/xhtml">in div</div> tail</summary>'
    ),
    "xhtml text only": entry(
        '<title>X4</title><link href="https://a.example/5"/><content type="xhtml">a &lt; b &amp; c</content>'
    ),
    "summary only": entry(
        '<title>S</title><link href="https://a.example/6"/><summary type="html">&lt;b&gt;Lead&lt;/b&gt;'
        "</summary>"
    ),
    "content before summary": entry(
        '<title>CS</title><link href="https://a.example/7"/><content type="text">Body.</content>'
        "<summary>Lead.</summary>"
    ),
    "two summaries": entry(
        '<title>SS</title><link href="https://a.example/8"/><summary>One.</summary><summary>Two.</summary>'
    ),
    "updated only": entry(
        '<title>U</title><link href="https://a.example/9"/><updated>2026-10-15T11:45:00-04:00</updated>'
    ),
    "published and updated": entry(
        '<title>PU</title><link href="https://a.example/10"/><published>2026-10-08T09:00:00Z</published>'
        "<updated>2026-10-08T13:20:00+02:00</updated>"
    ),
    "authors": entry(
        '<title>Au</title><link href="https://a.example/11"/><author><name>Marta K</name><email>m@a.example'
        "</email>"
        "<uri>/people/marta</uri></author><author><email>only@a.example</email></author><author><name>Third"
        "</name></author>"
        "<contributor><name>Helper</name></contributor>"
    ),
    "links": entry(
        '<title>L</title><link rel="self" href="https://a.example/self"/><link href="https://a.example/12"/>'
        '<link rel="enclosure" href="https://a.example/a.mp3"/>'
        '<link rel="alternate" type="application/pdf" href="x.pdf"/>'
        '<link rel="ALTERNATE" type="TEXT/HTML" href="https://a.example/12-last?utm_medium=feed&amp;x=1"/>'
    ),
    "no link: the id stands in": "<entry><id>https://a.example/by-id</id><title>I</title></entry>"
    "<entry><id>tag:a.example,2026:1</id><title>Tag id</title></entry>",
    "categories": entry(
        '<title>C</title><link href="https://a.example/13"/>'
        '<category term="election" label="Election" scheme="s"/>'
        '<category term="russia"/><category term="russia"/><category label="no term"/>'
    ),
    "title html with entities": entry(
        '<title type="html">Caf&amp;eacute; &lt;i&gt;x&lt;/i&gt; &amp;amp;</title><link href="/14"/>'
    ),
    "dc language on an entry": entry(
        '<title>Sprache</title><link href="https://a.example/15"/><dc:language>de</dc:language>'
    ),
    "rights and ids": entry('<title>R</title><link href="https://a.example/16"/><rights>(c) A</rights>'),
}


@pytest.mark.parametrize("case", list(ATOM_CASES))
def test_crafted_atom_entries(case: str):
    assert_same(atom(ATOM_CASES[case], attrs='xml:lang="en-GB"'), base_url="https://a.example/feed.atom")


def test_atom_xml_base_and_feed_furniture():
    entries = (
        '<entry xml:base="https://base.example/e/"><id>e1</id><title>B</title><link href="one"/></entry>'
        '<entry><id>https://x.example/e2</id><title>B2</title><link href="two"/></entry>'
    )
    feed = (
        '<link rel="self" href="/feed.atom"/><author><name>Newsroom</name></author><subtitle>s</subtitle>'
        '<generator uri="https://g.example">g</generator><icon>/i.png</icon><rights>r</rights>'
    )
    assert_same(atom(entries, attrs='xml:base="https://root.example/r/"', feed=feed))
    assert_same(atom(entries, feed=feed + "<title>Second title wins?</title>"))


# -- what always goes to feedparser ---------------------------------------------------------------------

FALLBACKS = {
    "undefined HTML entity": rss("<item><title>Caf&eacute;</title></item>"),
    "RSS 0.91": rss("<item><title>Old</title></item>").replace(b'version="2.0"', b'version="0.91"'),
    "RSS without a version": rss("<item><title>Old</title></item>").replace(b'version="2.0"', b""),
    "DOCTYPE": rss(
        "<item><title>D</title></item>", head='<?xml version="1.0"?><!DOCTYPE rss SYSTEM "x.dtd">'
    ),
    "unknown namespace, default-declared": rss('<item><title>U</title><y xmlns="urn:x">z</y></item>'),
    "standard prefix on an unknown namespace": rss(
        '<item><title>U</title><content:encoded xmlns:content="urn:x">z</content:encoded></item>'
    ),
    "prefix rebound": rss(
        '<item><title>U</title><x:y xmlns:x="urn:x">z</x:y><x:y xmlns:x="urn:y">z</x:y></item>'
    ),
    "iTunes": rss(
        '<item><title>P</title><itunes:summary xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">s'
        "</itunes:summary></item>"
    ),
    "media group": rss(
        '<item xmlns:media="http://search.yahoo.com/mrss/"><title>M</title><media:group>'
        "<media:title>mt</media:title></media:group></item>"
    ),
    "reserved names on elements without a handler": rss(
        "<item><title>U</title><authors>x</authors><published_parsed>y</published_parsed></item>"
    ),
    "unvetted handler": rss(
        '<item><title>G</title><georss:point xmlns:georss="http://www.georss.org/georss">1 2'
        "</georss:point></item>"
    ),
    "markup in an RSS description": rss("<item><title>M</title><description><p>raw</p></description></item>"),
    "Atom source": atom(entry("<title>S</title><source><title>Orig</title></source>")),
    "Atom 0.3": b'<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>t</title><entry><title>e'
    b"</title></entry></feed>",
    "base64 content": atom(entry('<title>B</title><content type="image/png">aGVsbG8=</content>')),
    "XHTML in another namespace": atom(
        entry('<title>X</title><content type="xhtml"><div>plain</div></content>')
    ),
    "CDF": b'<CHANNEL HREF="https://cdf.example/"><TITLE>CDF</TITLE><ITEM HREF="https://cdf.example/1">'
    b"<TITLE>i</TITLE></ITEM></CHANNEL>",
    "prefix bound to another namespace": rss(
        '<item><title>P</title><content:encoded xmlns:content="http://purl.org/dc/elements/1.1/">x'
        "</content:encoded></item>"
    ),
    "html page": b"<html><head><title>Home</title></head><body><p>Welcome</p></body></html>",
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_unusual_documents_fall_back_to_feedparser(case: str):
    assert_same(FALLBACKS[case], parser="feedparser")


def test_a_fast_parser_bug_falls_back_to_feedparser(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    warnings = []
    monkeypatch.setattr(fastparse._Walker, "document", broken)
    monkeypatch.setattr(fastparse.log, "warning", lambda msg, *a, **kw: warnings.append(msg % a))
    parsed = parse_feed(rss("<item><title>T</title><link>https://n.example/1</link></item>"), "http://x/f")
    assert parsed.parser == "feedparser" and [a.title for a in parsed.articles] == ["T"]
    assert warnings == ["fast feed parser failed; falling back to feedparser"]


# -- random mixes ---------------------------------------------------------------------------------------

RSS_PARTS = [
    "<title>Plain title {n}</title>",
    "<title><![CDATA[Title <i>{n}</i> &amp; co]]></title>",
    "<title></title>",
    "<link>https://mix.example/{n}?utm_source=rss&amp;id={n}</link>",
    "<link>/relative/{n}</link>",
    "<link/>",
    '<atom:link href="https://mix.example/alt/{n}"/>',
    "<guid>https://mix.example/g/{n}</guid>",
    '<guid isPermaLink="false">mix-{n}</guid>',
    "<description>Lead for {n}, long enough for a language guess to be made.</description>",
    "<description>&lt;p&gt;Second lead {n}&lt;/p&gt;</description>",
    "<content:encoded><![CDATA[<p>Body {n}</p><p>More body for item {n}.</p>]]></content:encoded>",
    "<pubDate>Mon, 0{d} Sep 2025 10:00:00 EST</pubDate>",
    "<pubDate>0{d} Sep 2025 10:00 +0200</pubDate>",
    "<dc:date>2025-09-0{d}T08:00:00Z</dc:date>",
    "<author>w{n}@mix.example (Writer {n})</author>",
    "<dc:creator>Creator {n}</dc:creator>",
    "<category>Topic {d}</category>",
    '<category domain="d">Topic {n}</category>',
    "<dc:language>es</dc:language>",
    "<comments>https://mix.example/{n}#c</comments>",
]
ATOM_PARTS = [
    "<title>Entry {n}</title>",
    '<title type="html">Entry &lt;b&gt;{n}&lt;/b&gt;</title>',
    '<link href="https://mix.example/a/{n}"/>',
    '<link rel="self" href="/self/{n}"/>',
    '<link href="rel/{n}" type="text/html"/>',
    "<published>2025-09-0{d}T10:00:00Z</published>",
    "<updated>2025-09-0{d}T12:00:00+01:00</updated>",
    "<author><name>Author {n}</name></author>",
    "<author><email>e{n}@mix.example</email></author>",
    '<summary type="text">Atom lead {n}, long enough for a language guess to be made.</summary>',
    '<content type="html">&lt;p&gt;Atom body {n}&lt;/p&gt;</content>',
    '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>XHTML body {n}</p></div></content>',
    '<category term="t{d}"/>',
]


def _mix(rng: random.Random, parts: list[str], n: int) -> str:
    chosen = [p for p in parts if rng.random() < 0.4] + rng.sample(parts, k=2)  # some twice
    rng.shuffle(chosen)
    return "".join(p.format(n=n, d=1 + n % 9) for p in chosen)


def test_random_mixes_of_rss_items_parse_identically():
    rng = random.Random(20261125)
    fast = 0
    for doc in range(60):
        items = "".join(f"<item>{_mix(rng, RSS_PARTS, doc * 10 + i)}</item>" for i in range(4))
        base = ' xml:base="https://base.example/b/"' if doc % 5 == 0 else ""
        parsed = assert_same(rss(items, ns=base), parser=None, base_url="https://mix.example/feed")
        fast += parsed.parser == "fast"
    assert fast == 60


def test_random_mixes_of_atom_entries_parse_identically():
    rng = random.Random(11252026)
    fast = 0
    for doc in range(60):
        entries = "".join(entry(_mix(rng, ATOM_PARTS, doc * 10 + i)) for i in range(4))
        parsed = assert_same(atom(entries), parser=None, base_url="https://mix.example/feed")
        fast += parsed.parser == "fast"
    assert fast == 60
