"""Full article text: pages served on loopback, fetched through the feeds' per-host budget, to Kafka.

Every page failure class has its own article and its own reason in one cycle; each article still
reaches Kafka once, with its feed's text where the page gave none.
"""

import itertools
import json
import random

import pytest

from connectors import kafka as kafka_clients
from connectors.rss.feeds import Feed
from connectors.rss.ingest import Ingestor
from connectors.rss.samplepages import consent_page, js_shell_page, page, paywall_page
from newsflow.feedserver import FeedServer, Reply
from newsflow.records import Article, decode

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0
BODY = [
    "The valley's three reservoirs, which had fallen to a fifth of their capacity after the driest winter "
    "on record, were more than half full on Tuesday after four days of steady rain.",
    "The water authority said it would lift the hosepipe ban that has been in force since November, but "
    "asked households to keep using water sparingly until the summer.",
    "Farmers said the rain had come too late for much of the winter wheat, which was sown into dry ground "
    "and failed to establish, but would help the spring planting that starts in two weeks.",
    "Forecasters expect drier weather to return at the weekend, with temperatures rising to the high teens "
    "by the middle of next week.",
]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def rss(*items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Valley</title>'
        f"{''.join(items)}</channel></rss>"
    ).encode()


def item(link: str, title: str, summary: str = "A short teaser from the feed, one sentence long.") -> str:
    return f"<item><title>{title}</title><link>{link}</link><description>{summary}</description></item>"


@pytest.fixture
def settings(kafka_settings):
    return kafka_settings.with_overrides(
        **{
            "ingest.per_host_spacing_s": 0.0,
            "ingest.per_host_concurrency": 4,
            "ingest.read_timeout_s": 1.0,
            "ingest.connect_timeout_s": 1.0,
            "ingest.total_timeout_s": 5.0,
            "ingest.max_bytes": 512 * 1024,
            "ingest.max_redirects": 3,
            "ingest.parse_processes": 0,
        }
    )


def raw_articles(settings) -> dict[str, Article]:
    articles = [decode(Article, r.value) for r in kafka_clients.read_all(settings.kafka, settings.topics.raw)]
    assert len({a.id for a in articles}) == len(articles), "an article was produced twice"
    return {a.title: a for a in articles}


def test_pages_are_extracted_and_every_bad_page_keeps_its_feed_text_with_a_reason(settings):
    settings = settings.with_overrides(**{"ingest.per_host_concurrency": 1})  # the 429 comes first
    with FeedServer() as site, FeedServer() as busy:
        site.route("/robots.txt", Reply(body=b"User-agent: *\nDisallow: /members/\n"))
        html = {"Content-Type": "text/html; charset=utf-8"}
        pages = {
            "/news/rain.html": Reply(body=page("wordpress", BODY, author="Jane Roe").encode(), headers=html),
            "/news/big.html": Reply(body=page("daily", BODY * 1000).encode(), headers=html),
            "/news/loop-a.html": Reply(302, headers={"Location": "/news/loop-b.html"}),
            "/news/loop-b.html": Reply(302, headers={"Location": "/news/loop-a.html"}),
            "/news/meta.html": Reply(302, headers={"Location": "http://169.254.169.254/latest/"}),
            "/members/secret.html": Reply(body=page("arc", BODY).encode(), headers=html),
            "/news/report.pdf": Reply(body=b"%PDF-1.7 ...", headers={"Content-Type": "application/pdf"}),
            "/news/paywall.html": Reply(body=paywall_page(BODY[:1]).encode(), headers=html),
            "/news/consent.html": Reply(body=consent_page().encode(), headers=html),
            "/news/app.html": Reply(body=js_shell_page().encode(), headers=html),
            "/news/forbidden.html": Reply(403, b"no bots"),
        }
        broken = (
            page("blox", BODY, seed=3).encode().replace(b"which had", b"wh\xff\xfeich had")
        )  # invalid UTF-8
        pages["/news/latin.html"] = Reply(body=broken, headers=html)
        for path, reply in pages.items():
            site.route(path, reply)
        busy.route("/story.html", Reply(429, headers={"Retry-After": "3600"}))
        busy.route("/story-2.html", Reply(body=page("wire", BODY).encode(), headers=html))
        titles = {path: f"Story {i} {path}" for i, path in enumerate([*pages, "/busy"])}
        items = [item(site.url(p), titles[p]) for p in pages if p != "/news/loop-b.html"]
        items.append(item(busy.url("/story.html"), "Busy 1"))
        items.append(item(busy.url("/story-2.html"), "Busy 2"))
        full = site.route("/feed.rss", Reply(body=rss(*items)))
        quiet = site.route("/quiet.rss", Reply(body=rss(item(site.url("/news/rain.html?x=1"), "Quiet"))))
        feeds = [Feed(url=full, name="full"), Feed(url=quiet, name="quiet", full_text="never")]
        with Ingestor(settings, clock=Clock(), rng=random.Random(1)) as ingestor:
            summary = ingestor.run_cycle(feeds)
        assert not site.hits("/members/secret.html")  # robots.txt said no: never requested
        assert not busy.hits("/story-2.html")  # the host said wait: nothing more was asked of it
        assert len(site.hits("/robots.txt")) == 1 and len(busy.hits("/robots.txt")) == 1
    assert summary.by_status == {"ok": 2}
    outcome = {o.feed.name: o for o in summary.outcomes}
    assert outcome["full"].pages == {
        "extracted": 2,  # rain.html and latin.html (invalid UTF-8 replaced, the rest read)
        "too_large": 1,
        "redirect_loop": 1,
        "address_refused": 1,
        "robots_disallowed": 1,
        "not_html": 1,
        "paywall": 1,
        "consent_wall": 1,
        "javascript_required": 1,
        "blocked": 1,
        "retry_after": 2,
    }
    assert outcome["quiet"].pages == {}
    articles = raw_articles(settings)
    assert len(articles) == len(items) + 1
    rain = articles[titles["/news/rain.html"]]
    assert rain.text_source == "extracted" and rain.extracted_at
    assert rain.content == "\n\n".join(BODY) and rain.summary.startswith("A short teaser")
    assert rain.authors == ["Jane Roe"] and rain.published_at == "2026-03-04T10:15:00Z"
    latin = articles[titles["/news/latin.html"]]
    assert latin.text_source == "extracted" and "\ufffd" in latin.content and BODY[1] in latin.content
    for path in ("/news/big.html", "/news/paywall.html", "/news/app.html", "/news/forbidden.html"):
        kept = articles[titles[path]]
        assert kept.text_source == "feed_summary" and kept.content == "" and kept.extracted_at is None
    assert articles["Quiet"].text_source == "feed_summary"
    health = [
        json.loads(r.value) for r in kafka_clients.read_all(settings.kafka, settings.topics.feed_health)
    ]
    full_health = next(h for h in health if h["feed_url"] == full)
    assert full_health["pages"]["robots_disallowed"] == 1 and full_health["pages"]["extracted"] == 2
    assert "2 extracted" in summary.describe() and "robots_disallowed 1" in summary.describe()
    assert kafka_clients.read_all(settings.kafka, settings.topics.dlq) == []  # failures are not dead letters


def test_a_page_is_refetched_conditionally_and_only_a_changed_text_is_a_new_version(settings):
    clock = Clock()
    html = {"Content-Type": "text/html; charset=utf-8"}
    with FeedServer() as site:
        site.route("/a.html", Reply(body=page("broadcaster", BODY).encode(), headers=html, etag='"a1"'))
        site.route("/b.html", Reply(body=page("amp", BODY[::-1]).encode(), headers=html, etag='"b1"'))
        first_items = [item(site.url("/a.html"), "A"), item(site.url("/b.html"), "B")]
        feed = Feed(url=site.route("/feed.rss", Reply(body=rss(*first_items))))
        with Ingestor(settings, clock=clock) as ingestor:
            first = ingestor.run_cycle([feed])
            assert first.new_articles == 2 and first.pages == {"extracted": 2}
            # A's page is edited; B's is not. The feed changes (a new item), hours later.
            edited = [*BODY[:3], "Update: the ban has now been lifted in every district."]
            site.route("/a.html", Reply(body=page("broadcaster", edited).encode(), headers=html, etag='"a2"'))
            site.route("/c.html", Reply(body=page("wire", BODY).encode(), headers=html))
            site.route("/feed.rss", Reply(body=rss(*first_items, item(site.url("/c.html"), "C"))))
            clock.now = T0 + 7 * 3600
            second = ingestor.run_cycle([feed], force=True)
        assert site.hits("/a.html")[-1].headers["if-none-match"] == '"a1"'
        assert site.hits("/b.html")[-1].headers["if-none-match"] == '"b1"'
    assert second.new_articles == 2  # C, and A's new version; B answered 304 and is not sent again
    assert second.pages == {"extracted": 2, "unchanged": 1}
    records = [decode(Article, r.value) for r in kafka_clients.read_all(settings.kafka, settings.topics.raw)]
    versions = [a for a in records if a.title == "A"]
    assert len(versions) == 2 and versions[0].content_hash != versions[1].content_hash
    assert versions[1].content.endswith("lifted in every district.")
    assert [a.title for a in records].count("B") == 1


def test_page_fetches_share_the_feeds_budget_and_a_slow_host_holds_up_no_other(settings):
    cfg = settings.with_overrides(**{"ingest.per_host_spacing_s": 0.05, "ingest.per_host_concurrency": 1})
    html = {"Content-Type": "text/html; charset=utf-8"}
    order = []
    with FeedServer() as fast, FeedServer() as slow:
        for host, hold in ((fast, 0.0), (slow, 0.5)):
            for i in range(4):
                host.route(
                    f"/p{i}.html", Reply(body=page("daily", BODY, seed=i).encode(), headers=html, hold=hold)
                )
            host.route(
                "/feed.rss",
                Reply(body=rss(*(item(host.url(f"/p{i}.html"), f"{hold} {i}") for i in range(4)))),
            )
        feeds = [Feed(url=slow.url("/feed.rss"), name="slow"), Feed(url=fast.url("/feed.rss"), name="fast")]
        with Ingestor(cfg, clock=Clock()) as ingestor:
            summary = ingestor.run_cycle(feeds, progress=lambda o: order.append(o.feed.name))
            starts = list(ingestor.budget.starts)
        assert slow.max_in_flight == 1 and fast.max_in_flight == 1  # one request at a time per host
    assert order == ["fast", "slow"]  # the fast feed's articles went out while the slow host was busy
    assert summary.pages == {"extracted": 8}
    by_host = {}
    for host, at in starts:
        by_host.setdefault(host, []).append(at)
    for host, times in by_host.items():
        times.sort()
        assert len(times) == 6  # feed poll, robots.txt and four pages: one budget
        assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(times)), host
