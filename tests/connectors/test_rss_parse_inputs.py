"""parse_feed on hostile and broken documents: each class gives a clear status, never an exception."""

import tracemalloc
from pathlib import Path

import pytest

from connectors.rss.parse import declares_entities, parse_feed

ITEM = "<item><title>{title}</title><link>https://news.example/{n}</link><description>{text}</description></item>"


def rss(items: str, head: str = '<?xml version="1.0" encoding="utf-8"?>', channel: str = "") -> str:
    return f'{head}<rss version="2.0"><channel><title>Feed</title>{channel}{items}</channel></rss>'


def test_cp1252_bytes_declared_as_utf8_are_decoded_and_flagged():
    body = rss(ITEM.format(title="Genève \u2013 \u201ctalks\u201d resume", n=1, text="Café au lait"))
    parsed = parse_feed(body.encode("cp1252"), "http://x/f")
    assert parsed.status == "ok" and parsed.bozo and "encoding" in parsed.bozo_reason.lower()
    assert [a.title for a in parsed.articles] == ["Genève \u2013 \u201ctalks\u201d resume"]


def test_undeclared_non_utf8_encoding_is_decoded_and_flagged():
    body = rss(ITEM.format(title="Zürich öffnet", n=1, text="Grüße"), head='<?xml version="1.0"?>')
    parsed = parse_feed(body.encode("latin-1"), "http://x/f")
    assert parsed.status == "ok" and parsed.bozo
    assert parsed.articles[0].title == "Zürich öffnet"


def test_utf16_with_a_bom_is_read():
    body = rss(ITEM.format(title="Wide text", n=1, text="x"), head='<?xml version="1.0" encoding="utf-16"?>')
    parsed = parse_feed(body.encode("utf-16"), "http://x/f")
    assert parsed.status == "ok" and [a.title for a in parsed.articles] == ["Wide text"]


def test_empty_feed_is_ok_with_no_items_but_an_empty_body_is_not_a_feed():
    parsed = parse_feed(rss("").encode(), "http://x/f")
    assert parsed.status == "ok" and not parsed.articles and not parsed.bozo
    assert parse_feed(b"", "http://x/f").status == "not_a_feed"
    assert parse_feed(b"   \n", "http://x/f").status == "not_a_feed"


def test_html_page_is_not_a_feed():
    page = b"<!DOCTYPE html><html><head><title>Home</title></head><body><p>Welcome</p></body></html>"
    assert parse_feed(page, "http://x/", content_type="text/html").status == "not_a_feed"


def test_billion_laughs_is_refused_before_parsing():
    entities = (
        '<!ENTITY a "'
        + "x" * 10
        + '">'
        + "".join(f'<!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">' for i in range(8))
    )
    # one line: feedparser's own DOCTYPE filter only sees declarations at the start of a line
    body = f'<?xml version="1.0"?><!DOCTYPE rss [{entities}]>' + rss(
        ITEM.format(title="&i;", n=1, text="&i;"), head=""
    )
    tracemalloc.start()
    parsed = parse_feed(body.encode(), "http://x/f")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert parsed.status == "xml_entities" and not parsed.articles
    assert "entities" in parsed.bozo_reason
    assert peak < 1024 * 1024  # nothing was expanded (expat alone would build ~40 MB first)


def test_entity_declarations_are_refused_in_any_layout_and_encoding():
    declarations = {
        "multi-line": '<?xml version="1.0"?>\n<!DOCTYPE rss [\n  <!ENTITY lol "lol">\n]>\n',
        "one line": '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY lol "lol">]>',
        # the old check stopped at the first "<x" (here inside a comment) and read 64 KB only
        "after a comment": '<?xml version="1.0"?><!DOCTYPE rss [<!-- <a <b --><!ENTITY lol "lol">]>',
        "after 100 KB": '<?xml version="1.0"?>' + " " * 100_000 + '<!DOCTYPE rss [<!ENTITY lol "lol">]>',
        "parameter entity": '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY % p "x">]>',
        "external": '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    }
    body = rss(ITEM.format(title="&lol;", n=1, text="x"), head="")
    for name, head in declarations.items():
        for codec in ("utf-8", "utf-16", "utf-16-le"):
            content_type = f"application/rss+xml; charset={codec}"
            parsed = parse_feed((head + body).encode(codec), "http://x/f", content_type=content_type)
            assert parsed.status == "xml_entities", (name, codec, parsed.status)
            assert not parsed.articles
    text = rss(ITEM.format(title="&lt;!ENTITY&gt; in text", n=1, text="<![CDATA[<!ENTITY x 'y'>]]>"))
    assert parse_feed(text.encode(), "http://x/f").status == "ok"
    netscape = b'<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"><rss/>'
    assert not declares_entities(netscape)


# Run in a child process: its peak RSS is the parse's alone, not the test runner's. VmHWM of the
# child's own memory map, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
HOSTILE_PARSE = r"""
import sys
from connectors.rss.parse import parse_feed
MB = 1024 * 1024
laughs = '<!ENTITY a "' + "x" * 10 + '">' + "".join(
    f'<!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">' for i in range(8))
item = "<item><title>&i;</title><link>https://n.example/1</link><description>&i;</description></item>"
tail = '<rss version="2.0"><channel><title>t</title>' + item * 20 + "</channel></rss>"
big = '<!ENTITY big "' + "y" * 100_000 + '">'
refs = "<rss version='2.0'><channel><item><title>x</title><description>"
refs += "&big;" * 1_900_000 + "</description></item></channel></rss>"
head = '<?xml version="1.0"?>'
doctype = "\n<!DOCTYPE rss [\n" + big + "\n]>\n"
docs = {
    # the bypass of the old check: a comment with "<a" before the declarations, 10 MB in all
    "comment first": head + "<!DOCTYPE rss [<!-- " + "<a " * 3_300_000 + " -->" + laughs + "]>" + tail,
    # quadratic blow-up with a "safe" entity (no references in its value), one per line
    "quadratic": head + doctype + refs,
    # the same after a malformed comment: the strict parser fails first, the loose one takes over
    "malformed then quadratic": head + "\n<!-- a -- b -->" + doctype + refs,
    "padded": head + " " * 9 * MB + "<!DOCTYPE rss [" + laughs + "]>" + tail,
}
for name, doc in docs.items():
    data = doc.encode()[: 10 * MB]
    parsed = parse_feed(data, "http://x/f", content_type="application/rss+xml")
    print(name.replace(" ", "_"), len(data), parsed.status, len(parsed.articles), flush=True)
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print("peak_rss_mb", peak_kb // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_hostile_10_mb_feeds_are_refused_within_300_mb_of_memory():
    import subprocess
    import sys

    from newsflow.config import REPO_ROOT

    done = subprocess.run(
        [sys.executable, "-c", HOSTILE_PARSE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split("\n")
    results = [line.split() for line in lines if line and not line.startswith("peak_rss_mb")]
    assert len(results) == 4
    for fields in results:
        assert fields[-2:] == ["xml_entities", "0"], fields
        assert int(fields[-3]) > 9 * 1024 * 1024  # each document really is about 10 MB
    peak = int(next(line for line in lines if line.startswith("peak_rss_mb")).split()[1])
    assert peak < 300, f"peak RSS {peak} MB"


def test_feed_hints_are_read():
    channel = (
        "<ttl>90</ttl><skipHours><hour>0</hour><hour>1</hour><hour>23</hour></skipHours>"
        "<skipDays><day>Saturday</day><day>Sunday</day></skipDays>"
    )
    parsed = parse_feed(rss(ITEM.format(title="a", n=1, text="b"), channel=channel).encode(), "http://x/f")
    assert parsed.ttl_minutes == 90
    assert parsed.skip_hours == {0, 1, 23} and parsed.skip_days == {"saturday", "sunday"}


def test_relative_links_resolve_against_the_fetched_url_and_ids_use_the_feed_url():
    body = rss("<item><title>Rel</title><link>/story/1?utm_source=rss</link></item>").encode()
    parsed = parse_feed(body, "http://old.example/feed", base_url="https://new.example/feed")
    article = parsed.articles[0]
    assert article.canonical_url == "https://new.example/story/1"
    assert article.feed_url == "http://old.example/feed"


def test_missing_dates_are_null_and_bad_dates_do_not_crash():
    items = ITEM.format(title="No date", n=1, text="x") + (
        "<item><title>Bad date</title><link>https://news.example/2</link><pubDate>yesterday-ish</pubDate></item>"
    )
    parsed = parse_feed(rss(items).encode(), "http://x/f", fetched_at="2026-01-01T00:00:00Z")
    assert [a.published_at for a in parsed.articles] == [None, None]
    assert all(a.fetched_at == "2026-01-01T00:00:00Z" for a in parsed.articles)
