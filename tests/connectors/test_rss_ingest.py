"""The connector end to end: scripted feed hosts on loopback → Ingestor → the real Kafka broker.

Every bad-input class gets its own feed and its own status in one cycle, and the cycle goes on;
scheduling runs on an injected clock, so nothing here sleeps.
"""

import io
import json
import random

import pytest
from rich.console import Console

from connectors import kafka as kafka_clients
from connectors.rss.feeds import Feed
from connectors.rss.ingest import Ingestor
from connectors.rss.parse import parse_feed
from connectors.rss.state import Emitted, FeedState, FeedUpdate, StateStore
from newsflow.feedserver import FeedServer, Reply, gzip_bomb
from newsflow.records import Article, DeadLetter, decode

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0  # 2027-01-15


def rss(*items: str, channel: str = "", encoding: str = "utf-8") -> str:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?><rss version="2.0"><channel><title>Feed</title>'
        f"{channel}{''.join(items)}</channel></rss>"
    )


def item(
    n: int, title: str | None = None, when: str = "Mon, 11 Jan 2027 10:00:00 GMT", host: str = "news"
) -> str:
    return (
        f"<item><title>{title or f'Story {n} on the wire'}</title>"
        f"<link>https://{host}.example/{n}?utm_source=rss</link>"
        f"<guid>urn:story:{n}</guid><pubDate>{when}</pubDate>"
        f"<description>&lt;p&gt;Paragraph for story {n}, long enough to detect a language.&lt;/p&gt;"
        "</description></item>"
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(kafka_settings):
    return kafka_settings.with_overrides(
        **{
            "ingest.per_host_spacing_s": 0.0,
            "ingest.per_host_concurrency": 8,
            "ingest.read_timeout_s": 0.5,
            "ingest.connect_timeout_s": 1.0,
            "ingest.max_bytes": 1024 * 1024,
            "ingest.max_redirects": 3,
            "ingest.disable_after": 2,
            "ingest.parse_processes": 0,
            "ingest.full_text": "never",  # article pages: tests/connectors/test_rss_pages.py
        }
    )


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_ingestor(settings, clock):
    made = []

    def make(cfg=None):
        ingestor = Ingestor(cfg or settings, clock=clock, rng=random.Random(5))
        made.append(ingestor)
        return ingestor

    yield make
    for ingestor in made:
        ingestor.close()


def raw_articles(settings) -> list[Article]:
    records = kafka_clients.read_all(settings.kafka, settings.topics.raw)
    articles = [decode(Article, r.value) for r in records]
    assert all(r.key.decode() == a.id for r, a in zip(records, articles, strict=True))
    return articles


def test_every_bad_input_gets_its_own_status_and_the_cycle_goes_on(settings, make_ingestor, clock):
    good = rss(item(1), item(2))
    malformed = rss(item(3)).replace("</channel></rss>", "<item><title>broken & unescaped</title>")
    cp1252 = rss(item(4, title="Gen\u00e8ve \u2013 talks resume")).encode("cp1252")
    undeclared = (
        rss(item(5, title="Z\u00fcrich \u00f6ffnet")).replace(' encoding="utf-8"', "").encode("latin-1")
    )
    laughs = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">' for i in range(8)
    )
    billion = (
        f'<?xml version="1.0"?><!DOCTYPE rss [{laughs}]>'
        '<rss version="2.0"><channel><title>&i;</title></channel></rss>'
    )
    orphan = rss("<item><description>no link, no guid, no title</description></item>", item(6))
    with FeedServer() as host:
        routes = {
            "/good.rss": Reply(body=good.encode(), etag='"g1"'),
            "/malformed.rss": Reply(body=malformed.encode()),
            "/cp1252.rss": Reply(body=cp1252),
            "/undeclared.rss": Reply(body=undeclared),
            "/page.html": Reply(
                body=b"<html><body><h1>Our news</h1></body></html>", headers={"Content-Type": "text/html"}
            ),
            "/empty-body.rss": Reply(body=b""),
            "/empty-feed.rss": Reply(body=rss().encode()),
            "/too-large.rss": Reply(body=good.encode(), headers={"Content-Length": str(5 * 1024 * 1024)}),
            "/too-large-chunked.rss": Reply(body=b"<!-- padding -->" * 4096, mode="chunked", repeat=64),
            "/bomb.rss": Reply(body=gzip_bomb(64 * 1024 * 1024), headers={"Content-Encoding": "gzip"}),
            "/laughs.rss": Reply(body=billion.encode()),
            "/loop-a.rss": Reply(302, headers={"Location": "/loop-b.rss"}),
            "/loop-b.rss": Reply(302, headers={"Location": "/loop-a.rss"}),
            "/hang.rss": Reply(mode="hang"),
            "/reset.rss": Reply(body=good.encode(), mode="reset"),
            "/gone.rss": Reply(410, b"gone"),
            "/broken.rss": Reply(500, b"oops"),
            "/orphan.rss": Reply(body=orphan.encode()),
        }
        for path, reply in routes.items():
            host.route(path, reply)
        names = [*routes, "/missing.rss"]
        names.remove("/loop-b.rss")
        feeds = [Feed(url=host.url(path), name=path) for path in names]
        ingestor = make_ingestor()
        summary = ingestor.run_cycle(feeds)
    status = {o.feed.name: o.status for o in summary.outcomes}
    assert status == {
        "/good.rss": "ok",
        "/malformed.rss": "ok",
        "/cp1252.rss": "ok",
        "/undeclared.rss": "ok",
        "/page.html": "not_a_feed",
        "/empty-body.rss": "not_a_feed",
        "/empty-feed.rss": "ok",
        "/too-large.rss": "too_large",
        "/too-large-chunked.rss": "too_large",
        "/bomb.rss": "too_large",
        "/laughs.rss": "xml_entities",
        "/loop-a.rss": "redirect_loop",
        "/hang.rss": "timeout",
        "/reset.rss": "connection_reset",
        "/gone.rss": "http_410",
        "/broken.rss": "http_500",
        "/missing.rss": "http_404",
        "/orphan.rss": "ok",
    }
    by_name = {o.feed.name: o for o in summary.outcomes}
    assert {n for n, o in by_name.items() if o.bozo} == {"/malformed.rss", "/cp1252.rss", "/undeclared.rss"}
    assert "encoding" in by_name["/cp1252.rss"].error.lower()
    assert by_name["/gone.rss"].disabled_reason.startswith("gone")
    assert by_name["/broken.rss"].disabled_reason is None and by_name["/broken.rss"].next_poll > T0
    assert all(o.error for o in summary.outcomes if o.status != "ok")

    # Exactly the good items reached Kafka, once each, keyed by id.
    expected = set()
    for path, body in [("/good.rss", good), ("/malformed.rss", malformed), ("/orphan.rss", orphan)]:
        expected |= {a.id for a in parse_feed(body.encode(), host.url(path)).articles}
    expected |= {a.id for a in parse_feed(cp1252, host.url("/cp1252.rss")).articles}
    expected |= {a.id for a in parse_feed(undeclared, host.url("/undeclared.rss")).articles}
    articles = raw_articles(settings)
    assert sorted(a.id for a in articles) == sorted(expected) and len(expected) == 7  # 2 from malformed
    assert summary.new_articles == 7
    titles = {a.title for a in articles}
    assert "Gen\u00e8ve \u2013 talks resume" in titles and "Z\u00fcrich \u00f6ffnet" in titles

    letters = [
        decode(DeadLetter, r.value) for r in kafka_clients.read_all(settings.kafka, settings.topics.dlq)
    ]
    assert [(d.stage, d.reason, d.source.feed_url) for d in letters] == [
        ("ingest", "unidentifiable_item", host.url("/orphan.rss"))
    ]
    health = [
        json.loads(r.value) for r in kafka_clients.read_all(settings.kafka, settings.topics.feed_health)
    ]
    assert {h["feed_url"]: h["status"] for h in health} == {host.url(n): s for n, s in status.items()}
    assert "polled 18 feeds" in summary.describe() and "too_large 3" in summary.describe()


def test_conditional_get_schedule_and_cache_hints(settings, make_ingestor, clock):
    hourly = [item(n, when=f"Mon, 11 Jan 2027 {10 + n:02d}:00:00 GMT") for n in range(4)]
    with FeedServer() as host:
        url = host.route(
            "/feed", Reply(body=rss(*hourly).encode(), etag='"v1"', headers={"Cache-Control": "max-age=7200"})
        )
        feeds = [Feed(url=url)]
        ingestor = make_ingestor()
        first = ingestor.run_cycle(feeds)
        assert first.by_status == {"ok": 1} and first.new_articles == 4
        # hourly items → a 1 h interval, raised to 2 h by max-age
        assert first.outcomes[0].next_poll == T0 + 7200
        clock.now = T0 + 3600
        assert ingestor.run_cycle(feeds).outcomes == [] and len(host.requests) == 1  # not due: no request
        clock.now = T0 + 7200
        second = ingestor.run_cycle(feeds)
        assert second.by_status == {"not_modified": 1} and second.new_articles == 0
        assert host.requests[-1].headers["if-none-match"] == '"v1"'
        assert second.outcomes[0].next_poll == T0 + 7200 + 7200
        # a restart keeps the schedule and the validators
        again = make_ingestor().run_cycle(feeds, force=True)
        assert again.by_status == {"not_modified": 1}
    assert len(raw_articles(settings)) == 4


def test_retry_after_backoff_and_recovery(settings, make_ingestor, clock):
    with FeedServer() as host:
        url = host.route("/feed", Reply(503, headers={"Retry-After": "3600"}))
        feeds = [Feed(url=url)]
        ingestor = make_ingestor()
        first = ingestor.run_cycle(feeds)
        assert first.by_status == {"http_503": 1} and first.outcomes[0].next_poll == T0 + 3600
        clock.now = T0 + 3599
        assert ingestor.run_cycle(feeds).outcomes == []
        host.route("/feed", Reply(500))
        clock.now = T0 + 3600
        second = ingestor.run_cycle(feeds)
        assert second.by_status == {"http_500": 1}
        assert T0 + 3600 + 300 <= second.outcomes[0].next_poll <= T0 + 3600 + 2 * 1800  # jittered backoff
        host.route("/feed", Reply(body=rss(item(1)).encode()))
        clock.now = second.outcomes[0].next_poll
        third = ingestor.run_cycle(feeds)
        assert third.by_status == {"ok": 1}
        state = ingestor.state.feed(url)
        assert (state.consecutive_failures, state.hard_failures, state.last_status) == (0, 0, "ok")


def test_hard_failures_disable_a_feed_and_a_probe_re_enables_it(settings, make_ingestor, clock):
    with FeedServer() as host:
        url = host.route("/feed", Reply(404))
        feeds = [Feed(url=url)]
        ingestor = make_ingestor()
        assert ingestor.run_cycle(feeds).outcomes[0].disabled_reason is None
        clock.now = T0 + 86400 * 2
        second = ingestor.run_cycle(feeds)
        assert second.outcomes[0].disabled_reason.startswith("2 hard failures in a row, last http_404")
        clock.now += 86400
        skipped = ingestor.run_cycle(feeds, force=True)  # --once does not poll disabled feeds
        assert skipped.outcomes == [] and skipped.disabled == 1
        host.route("/feed", Reply(body=rss(item(1)).encode()))
        clock.now += settings.ingest.disabled_probe_s
        probe = ingestor.run_cycle(feeds)
        assert probe.by_status == {"ok": 1}
        assert not ingestor.state.feed(url).disabled


def test_a_410_disables_until_reset(settings, make_ingestor, clock):
    with FeedServer() as host:
        url = host.route("/feed", Reply(410))
        feeds = [Feed(url=url)]
        ingestor = make_ingestor()
        ingestor.run_cycle(feeds)
        clock.now += 365 * 86400
        assert ingestor.run_cycle(feeds, force=True).outcomes == []
        assert len(host.requests) == 1
        assert ingestor.state.reset(url)
        assert ingestor.run_cycle(feeds).by_status == {"http_410": 1}


def test_permanent_redirect_moves_the_feed_but_keeps_its_identity(settings, make_ingestor, clock):
    with FeedServer() as host:
        old = host.route("/old.rss", Reply(301, headers={"Location": "/new.rss"}))
        new = host.route("/new.rss", Reply(body=rss(item(1), item(2)).encode(), etag='"n1"'))
        feeds = [Feed(url=old, name="Moved")]
        ingestor = make_ingestor()
        first = ingestor.run_cycle(feeds)
        assert first.by_status == {"ok": 1} and first.outcomes[0].moved_to == new
        second = ingestor.run_cycle(feeds, force=True)
        assert second.by_status == {"not_modified": 1}
        assert len(host.hits("/old.rss")) == 1 and len(host.hits("/new.rss")) == 2
        state = ingestor.state.feed(old)
        assert state.moved_to == new and state.fetch_url == new
    assert {a.feed_url for a in raw_articles(settings)} == {old}


def test_one_article_from_two_feeds_is_produced_once(settings, make_ingestor):
    story = item(9, title="Shared wire story")
    with FeedServer() as host:
        a = host.route("/a.rss", Reply(body=rss(story, item(10)).encode()))
        b = host.route(
            "/b.rss", Reply(body=rss(story.replace("utm_source=rss", "utm_source=partner")).encode())
        )
        summary = make_ingestor().run_cycle([Feed(url=a), Feed(url=b)])
    ids = [x.id for x in raw_articles(settings)]
    assert len(ids) == 2 and len(set(ids)) == 2 and summary.new_articles == 2


def test_many_feeds_parsed_in_a_process_pool(settings, make_ingestor):
    with FeedServer() as host:
        feeds = [
            Feed(
                url=host.route(
                    f"/f{i}.rss", Reply(body=rss(item(i * 10), item(i * 10 + 1), item(i * 10 + 2)).encode())
                )
            )
            for i in range(20)
        ]
        summary = make_ingestor(settings.with_overrides(**{"ingest.parse_processes": 1})).run_cycle(feeds)
    assert summary.by_status == {"ok": 20}, [o.error for o in summary.outcomes if o.status != "ok"]
    assert summary.new_articles == 60
    assert len({a.id for a in raw_articles(settings)}) == 60


def test_the_ingest_command_polls_once_and_prints_a_summary(settings, tmp_path, monkeypatch):
    from newsflow import cli
    from newsflow.cli_feeds import run_ingest

    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=250))
    with FeedServer() as host:
        good = host.route("/good.rss", Reply(body=rss(item(1), item(2)).encode(), etag='"1"'))
        missing = host.url("/missing.rss")
        feeds_file = tmp_path / "feeds.yaml"
        feeds_file.write_text(
            f"feeds:\n  - url: {good}\n    name: Good\n  - url: {missing}\n    name: Missing\n"
        )
        cfg = settings.with_overrides(feeds_file=feeds_file)
        run_ingest(cfg, once=True, every=None)
        run_ingest(cfg, once=True, every=None)  # --once polls every feed again, even if not due
    text = out.getvalue()
    assert "polled 2 feeds" in text and "2 new articles" in text and "http_404 1" in text
    assert "1 not modified (304)" in text and "feeds with errors this cycle" in text


# -- issue 11: nothing stops the stream ----------------------------------------------------------------
CONTENT_NS = ' xmlns:content="http://purl.org/rss/1.0/modules/content/"'


def _create_topic(settings, name, **configs):
    from kafka.admin import NewTopic

    admin = kafka_clients.admin(settings.kafka)
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs={k: str(v) for k, v in configs.items()})])
    finally:
        admin.close()


def _force_reparse(ingestor):
    ingestor.state._db.execute("UPDATE feeds SET etag = NULL, last_modified = NULL, body_hash = NULL")


def test_an_oversized_article_is_cut_or_dead_lettered_and_the_other_feeds_go_on(settings, make_ingestor):
    cfg = settings.with_overrides(**{"ingest.max_bytes": 8 * 1024 * 1024, "kafka.max_record_bytes": 300_000})
    cjk = "\u65b0\u95fb\u62a5\u9053" * 50_000  # 200k CJK characters: 600 KB of UTF-8
    huge = (
        f"<item><title>{cjk}</title><link>https://news.example/huge</link>"
        f"<description>{cjk}</description><content:encoded>{cjk[::-1]}</content:encoded></item>"
    )
    tagged = "<item><title>Tagged to death</title><link>https://news.example/tags</link>"
    tag = "a tag far too long for any sane feed " * 16
    tagged += "".join(f"<category>{i} {tag}</category>" for i in range(2_000)) + "</item>"
    with FeedServer() as host:
        innocent = host.route("/innocent.rss", Reply(body=rss(*(item(n) for n in range(30))).encode()))
        bad_body = rss(huge, tagged, item(100), item(101)).replace("<rss ", f"<rss{CONTENT_NS} ").encode()
        bad = host.route("/bad.rss", Reply(body=bad_body))
        feeds = [Feed(url=innocent, name="innocent"), Feed(url=bad, name="bad")]
        ingestor = make_ingestor(cfg)
        first = ingestor.run_cycle(feeds)
        _force_reparse(ingestor)
        second = ingestor.run_cycle(feeds, force=True)
    assert first.by_status == {"ok": 2} and second.by_status == {"ok": 2}
    assert first.new_articles == 30 + 3 and second.new_articles == 0
    records = kafka_clients.read_all(cfg.kafka, cfg.topics.raw)
    assert all(len(r.value) <= 300_000 for r in records)
    articles = raw_articles(cfg)
    assert len(articles) == 33 and len({a.id for a in articles}) == 33  # nothing produced twice
    cut = [a for a in articles if a.truncated]
    assert len(cut) == 1 and set(cut[0].truncated) >= {"content", "summary"}
    assert set(cut[0].truncated) == {"content", "summary", "title"} and cut[0].title.endswith(" [...]")
    assert cut[0].truncated["content"] == 200_000 and len(cut[0].title) > 10_000
    letters = [decode(DeadLetter, r.value) for r in kafka_clients.read_all(cfg.kafka, cfg.topics.dlq)]
    assert [(d.reason, d.source.feed_url) for d in letters] == [("record_too_large", bad)]
    assert "300000" in letters[0].error and letters[0].truncated.get("payload")
    by_name = {o.feed.name: o for o in first.outcomes}
    assert by_name["bad"].cut == 1


def _random_words(n, seed=11):
    rng = random.Random(seed)  # text that gzip cannot shrink much
    return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)) for _ in range(n))


def _long_item(title, words, seed):
    text = _random_words(words, seed)
    return f"<item><title>{title}</title><link>https://news.example/long-{seed}</link><description>{text}</description></item>"


def _produced_once(settings, feeds, make_ingestor, cfg):
    ingestor = make_ingestor(cfg)
    first = ingestor.run_cycle(feeds)
    _force_reparse(ingestor)
    second = ingestor.run_cycle(feeds, force=True)
    assert first.by_status == {"ok": 2} and second.new_articles == 0
    articles = raw_articles(settings)
    assert len({a.id for a in articles}) == len(articles) == first.new_articles
    return ingestor, articles


def test_records_are_cut_to_what_the_topic_accepts(settings, make_ingestor):
    # The raw topic takes 100 KB records: articles of ~210 KB and ~700 KB are cut to that before
    # sending (a refused record would make the producer retry its whole batch, innocent records too).
    _create_topic(settings, settings.topics.raw, **{"max.message.bytes": 100_000})
    cfg = settings.with_overrides(**{"ingest.max_bytes": 4 * 1024 * 1024})
    with FeedServer() as host:
        feed_a = host.route("/a.rss", Reply(body=rss(*(item(n) for n in range(20))).encode()))
        body = rss(_long_item("Long read", 30_000, 1), _long_item("Longer read", 100_000, 2), item(50))
        feed_b = host.route("/b.rss", Reply(body=body.encode()))
        ingestor, articles = _produced_once(
            settings, [Feed(url=feed_a), Feed(url=feed_b)], make_ingestor, cfg
        )
    assert ingestor.record_limit < 100_000 and len(articles) == 23
    assert sorted(a.title for a in articles if a.truncated) == ["Long read", "Longer read"]
    assert kafka_clients.read_all(settings.kafka, settings.topics.dlq) == []


def test_a_record_kafka_refuses_is_dead_lettered_with_a_reason(settings, make_ingestor):
    # NEWSFLOW_KAFKA_MAX_RECORD_BYTES of 2 MB, above the producer's 1 MiB request limit (a
    # misconfiguration): the ~700 KB article passes, the ~1.1 MB one is refused by the producer.
    _create_topic(settings, settings.topics.raw, **{"max.message.bytes": 3_000_000})
    cfg = settings.with_overrides(
        **{"ingest.max_bytes": 4 * 1024 * 1024, "kafka.max_record_bytes": 2_000_000}
    )
    with FeedServer() as host:
        feed_a = host.route("/a.rss", Reply(body=rss(*(item(n) for n in range(20))).encode()))
        rng = random.Random(3)
        cjk = ["".join(chr(0x4E00 + rng.randrange(20_000)) for _ in range(190_000)) for _ in range(2)]
        huge = "<item><title>Huge read</title><link>https://news.example/huge</link>"
        huge += f"<description>{cjk[0]}</description><content:encoded>{cjk[1]}</content:encoded></item>"
        body = rss(_long_item("Long read", 100_000, 1), huge, item(50)).replace("<rss ", f"<rss{CONTENT_NS} ")
        feed_b = host.route("/b.rss", Reply(body=body.encode()))
        _, articles = _produced_once(settings, [Feed(url=feed_a), Feed(url=feed_b)], make_ingestor, cfg)
    assert len(articles) == 22 and "Huge read" not in {a.title for a in articles}
    letters = [
        decode(DeadLetter, r.value) for r in kafka_clients.read_all(settings.kafka, settings.topics.dlq)
    ]
    assert [(d.reason, d.source.feed_url) for d in letters] == [("kafka_rejected", feed_b)]
    assert "MessageSizeTooLarge" in letters[0].error and "Huge read" in letters[0].payload
    assert letters[0].truncated["payload"] > 300_000  # characters: the payload was cut to 100 KB


def test_slow_servers_cannot_hold_the_cycle_and_retry_after_holds_a_host_even_under_once(
    settings, make_ingestor, clock
):
    cfg = settings.with_overrides(
        **{"ingest.total_timeout_s": 2.0, "ingest.headers_timeout_s": 1.0, "ingest.read_timeout_s": 0.5}
    )
    with FeedServer() as host, FeedServer() as busy:
        feeds = [
            Feed(url=host.route("/good.rss", Reply(body=rss(item(1)).encode())), name="good"),
            Feed(url=host.route("/drip.rss", Reply(mode="drip", drip_s=0.05)), name="drip"),
            Feed(url=host.route("/headers.rss", Reply(mode="drip_headers", drip_s=0.05)), name="headers"),
            Feed(url=host.route("/gzip.rss", Reply(mode="gzip_forever", drip_s=0.05)), name="gzip"),
            Feed(url=busy.route("/a.rss", Reply(429, headers={"Retry-After": "3600"})), name="busy-a"),
        ]
        ingestor = make_ingestor(cfg)
        first = ingestor.run_cycle(feeds, force=True)
        status = {o.feed.name: o.status for o in first.outcomes}
        assert status == {
            "good": "ok",
            "drip": "timeout",
            "headers": "timeout",
            "gzip": "timeout",
            "busy-a": "http_429",
        }
        for path in ("/drip.rss", "/headers.rss", "/gzip.rss"):
            sent = host.dripped_before_hangup(path)
            assert sent is not None and sent < 2000, (path, sent)  # cut off after ~2 s of dripping
        # --once again, an hour minus a minute later: the busy host is not asked, even for another feed
        busy.route("/b.rss", Reply(body=rss(item(2)).encode()))
        feeds.append(Feed(url=busy.url("/b.rss"), name="busy-b"))
        clock.now = T0 + 3540
        second = ingestor.run_cycle(feeds, force=True)
        assert second.held == 2 and "busy-a" not in {o.feed.name for o in second.outcomes}
        assert "2 held back by their host's Retry-After" in second.describe()
        assert len(busy.requests) == 1
        clock.now = T0 + 3601
        third = ingestor.run_cycle(feeds, force=True)
        assert third.held == 0 and len(busy.requests) == 3


def test_a_feed_redirected_into_a_private_network_is_refused_and_its_target_never_stored(
    settings, make_ingestor
):
    with FeedServer() as host:
        feeds = [
            Feed(
                url=host.route("/meta.rss", Reply(301, headers={"Location": "http://169.254.169.254/"})),
                name="m",
            ),
            Feed(
                url=host.route("/lan.rss", Reply(308, headers={"Location": "http://10.0.0.1:22/"})), name="l"
            ),
            Feed(url=host.route("/ok.rss", Reply(body=rss(item(1)).encode())), name="ok"),
        ]
        ingestor = make_ingestor()
        summary = ingestor.run_cycle(feeds)
        assert {o.feed.name: o.status for o in summary.outcomes} == {
            "m": "blocked",
            "l": "blocked",
            "ok": "ok",
        }
        for feed in feeds[:2]:
            state = ingestor.state.feed(feed.url)
            assert state.moved_to is None and state.fetch_url == feed.url and state.last_http_status is None
    health = [
        json.loads(r.value) for r in kafka_clients.read_all(settings.kafka, settings.topics.feed_health)
    ]
    blocked = [h for h in health if h["status"] == "blocked"]
    assert len(blocked) == 2
    for record in blocked:  # no port-scan oracle: no status, no address, no connection error
        assert record["http_status"] is None
        assert "169.254" not in record["error"] and "10.0.0.1" not in record["error"]
        assert "refused" in record["error"]


def test_a_stored_redirect_that_now_leads_somewhere_refused_is_forgotten(settings, make_ingestor):
    with FeedServer() as host:
        old = host.route("/old.rss", Reply(body=rss(item(1)).encode()))
        ingestor = make_ingestor()
        ingestor.run_cycle([Feed(url=old)])
        moved = ingestor.state.feed(old)
        from dataclasses import replace

        from connectors.rss.state import FeedUpdate

        ingestor.state.save([FeedUpdate(replace(moved, moved_to="http://169.254.169.254/feed"))])
        summary = ingestor.run_cycle([Feed(url=old)], force=True)
        assert summary.by_status == {"blocked": 1}
        assert ingestor.state.feed(old).moved_to is None
        assert ingestor.run_cycle([Feed(url=old)], force=True).by_status == {"unchanged": 1}


def test_articles_sent_under_the_older_id_scheme_are_not_sent_again_after_an_upgrade(settings, make_ingestor):
    """A state store from before ids were versioned holds scheme-1 ids: ingest keeps recognising them."""
    links = ["https://news.example/a/./1", "https://news.example/%7edesk/2", "https://bücher.example/3"]
    items = [
        f"<item><title>Story {n}</title><link>{link}</link><description>Story {n}.</description></item>"
        for n, link in enumerate(links)
    ]
    with FeedServer() as host:
        url = host.route("/feed", Reply(body=rss(*items).encode()))
        # What the release before left: the state store, the ids it sent (scheme 1), no id scheme.
        before = parse_feed(rss(*items).encode(), url, legacy_scheme=1)
        old_ids = [before.legacy_ids[a.id] for a in before.articles]
        assert len(set(old_ids) - {a.id for a in before.articles}) == 3  # every id changed
        store = StateStore(settings.data_dir / "ingest" / "state.db")
        sent = [Emitted(i, a.content_hash) for i, a in zip(old_ids, before.articles, strict=True)]
        store.save([FeedUpdate(FeedState(url=url), sent)])
        store._db.execute("DELETE FROM meta")
        store.close()

        ingestor = make_ingestor()
        assert ingestor.run_cycle([Feed(url=url)], force=True).new_articles == 0
        edited = [items[0].replace("Story 0.</desc", "Story 0, corrected.</desc"), *items[1:]]
        new = "<item><title>Story 3</title><link>https://news.example/x/../4</link></item>"
        host.route("/feed", Reply(body=rss(*edited, new).encode()))
        assert ingestor.run_cycle([Feed(url=url)], force=True).new_articles == 2
    sent = {a.title: a.id for a in raw_articles(settings)}
    assert sent["Story 0"] == old_ids[0]  # the edit replaces the record consumers hold
    assert sent["Story 3"] == parse_feed(rss(new).encode(), url).articles[0].id  # new: today's scheme
