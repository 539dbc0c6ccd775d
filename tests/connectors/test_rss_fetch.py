"""fetch() against a real HTTP server on loopback: validators, limits, redirects and failures."""

import gzip
import tracemalloc
from email.utils import formatdate

import httpx
import pytest

from connectors.rss.fetch import fetch, freshness_seconds, make_client, retry_after_seconds, user_agent
from newsflow.feedserver import FeedServer, Reply, gzip_bomb

FEED = (
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
    b"<item><title>One</title><link>https://news.example/1</link></item></channel></rss>"
)


@pytest.fixture
def host():
    with FeedServer() as server:
        yield server


@pytest.fixture
def client():
    with make_client(connect_timeout=2.0, read_timeout=0.5, max_redirects=3) as c:
        yield c


def test_conditional_get_with_etag_gets_304_and_keeps_the_validators(host, client):
    url = host.route("/feed", Reply(body=FEED, etag='"v1"', last_modified="Mon, 01 Sep 2025 10:00:00 GMT"))
    first = fetch(client, url)
    assert first.status == "ok" and first.content == FEED
    assert (first.etag, first.last_modified) == ('"v1"', "Mon, 01 Sep 2025 10:00:00 GMT")
    second = fetch(client, url, first.etag, first.last_modified)
    assert second.status == "not_modified" and second.http_status == 304 and second.content == b""
    assert second.etag == '"v1"' and second.last_modified == "Mon, 01 Sep 2025 10:00:00 GMT"
    sent = host.hits("/feed")[1].headers
    assert sent["if-none-match"] == '"v1"' and sent["if-modified-since"] == "Mon, 01 Sep 2025 10:00:00 GMT"


def test_conditional_get_with_last_modified_only(host, client):
    url = host.route("/feed", Reply(body=FEED, last_modified="Mon, 01 Sep 2025 10:00:00 GMT"))
    first = fetch(client, url)
    assert first.etag is None
    assert fetch(client, url, None, first.last_modified).status == "not_modified"


def test_user_agent_names_the_contact_url(host):
    url = host.route("/feed", Reply(body=FEED))
    with make_client(user_agent=user_agent("https://ops.example/contact")) as c:
        fetch(c, url)
    agent = host.hits("/feed")[0].headers["user-agent"]
    assert agent.startswith("newsflow/") and "+https://ops.example/contact" in agent


def test_gzip_body_is_decoded(host, client):
    url = host.route("/feed", Reply(body=FEED, gzip=True))
    result = fetch(client, url)
    assert result.status == "ok" and result.content == FEED
    assert "gzip" in host.hits("/feed")[0].headers["accept-encoding"]


def test_declared_content_length_over_the_limit_is_refused_before_reading(host, client):
    url = host.route("/big", Reply(body=FEED, headers={"Content-Length": str(50 * 1024 * 1024)}))
    result = fetch(client, url, max_bytes=1024 * 1024)
    assert result.status == "too_large" and "Content-Length" in result.error


def test_chunked_body_without_length_stops_at_the_limit(host, client):
    url = host.route("/chunked", Reply(body=b"x" * 65536, mode="chunked", repeat=64))  # 4 MiB
    result = fetch(client, url, max_bytes=1024 * 1024)
    assert result.status == "too_large" and result.content == b""


def test_gzip_bomb_stops_at_the_limit_without_inflating_it(host, client):
    bomb = gzip_bomb(128 * 1024 * 1024)  # 128 MiB of zeros in ~130 KB
    url = host.route("/bomb", Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    tracemalloc.start()
    try:
        result = fetch(client, url, max_bytes=1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "too_large" and "decompression" in result.error
    # bounded by the limit plus a few network chunks, not by the 128 MiB the bomb inflates to
    assert peak < 8 * 1024 * 1024, peak


def test_corrupt_gzip_is_a_bad_encoding(host, client):
    url = host.route("/bad", Reply(body=b"\x1f\x8bnot really gzip", headers={"Content-Encoding": "gzip"}))
    assert fetch(client, url).status == "bad_encoding"


def test_permanent_redirects_report_where_the_feed_moved(host, client):
    host.route("/old", Reply(301, headers={"Location": "/older"}))
    host.route("/older", Reply(308, headers={"Location": "/new"}))
    new = host.route("/new", Reply(body=FEED))
    result = fetch(client, host.url("/old"))
    assert result.status == "ok" and result.moved_to == new and result.final_url == new


def test_temporary_redirect_does_not_move_the_feed(host, client):
    host.route("/old", Reply(301, headers={"Location": "/mid"}))
    host.route("/mid", Reply(302, headers={"Location": "/today"}))
    host.route("/today", Reply(body=FEED))
    result = fetch(client, host.url("/old"))
    assert result.status == "ok"
    assert result.moved_to == host.url("/mid")  # only the permanent part of the chain counts
    host.route("/tmp", Reply(307, headers={"Location": "/today"}))
    assert fetch(client, host.url("/tmp")).moved_to is None


def test_redirect_loop(host, client):
    host.route("/a", Reply(302, headers={"Location": "/b"}))
    host.route("/b", Reply(302, headers={"Location": "/a"}))
    result = fetch(client, host.url("/a"))
    assert result.status == "redirect_loop" and "loop" in result.error
    assert len(host.requests) == 4  # the first request and max_redirects=3 more, then it stops


def test_server_that_never_answers_times_out(host, client):
    url = host.route("/hang", Reply(mode="hang"))
    result = fetch(client, url)
    assert result.status == "timeout"


def test_connection_reset_mid_body(host, client):
    url = host.route("/reset", Reply(body=FEED, mode="reset"))
    result = fetch(client, url)
    assert result.status == "connection_reset", result


def test_refused_connection_and_bad_urls(client):
    assert fetch(client, "http://127.0.0.1:9/feed").status == "connection_error"
    assert fetch(client, "ftp://127.0.0.1/feed").status == "invalid_url"


@pytest.mark.parametrize(("code", "status"), [(404, "http_404"), (410, "http_410"), (500, "http_500")])
def test_http_errors_become_statuses(host, client, code, status):
    url = host.route("/x", Reply(code, b"nope"))
    result = fetch(client, url)
    assert (result.status, result.http_status, result.content) == (status, code, b"")


def test_retry_after_on_429_and_503(host, client):
    host.route("/busy", Reply(429, headers={"Retry-After": "120"}))
    host.route("/down", Reply(503, headers={"Retry-After": formatdate(2_000_000_000, usegmt=True)}))
    assert fetch(client, host.url("/busy")).retry_after_s == 120.0
    assert fetch(client, host.url("/down")).retry_after_s > 0
    assert retry_after_seconds(formatdate(1_000_000_600, usegmt=True), now=1_000_000_000) == 600.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_cache_headers_give_a_freshness_lifetime(host, client):
    url = host.route("/c", Reply(body=FEED, headers={"Cache-Control": "public, max-age=3600"}))
    assert fetch(client, url).fresh_for_s == 3600.0
    expires = httpx.Headers(
        {"Expires": formatdate(1_000_007_200, usegmt=True), "Date": formatdate(1_000_000_000, usegmt=True)}
    )
    assert freshness_seconds(expires) == 7200.0
    assert freshness_seconds(httpx.Headers({"Cache-Control": "no-cache, max-age=60"})) is None
    assert freshness_seconds(httpx.Headers({"Expires": "0"})) is None


def test_plain_gzip_roundtrip_of_the_bomb_helper():
    assert len(gzip.decompress(gzip_bomb(3 * 1024 * 1024 + 5))) == 3 * 1024 * 1024 + 5


@pytest.mark.parametrize("mode", ["drip", "drip_headers", "gzip_forever"])
def test_a_server_that_drips_forever_is_cut_off_by_the_deadlines(host, mode):
    # every byte (or empty gzip block) arrives well within the 0.5 s read timeout, forever
    url = host.route(f"/{mode}", Reply(mode=mode, drip_s=0.05))
    with make_client(connect_timeout=2.0, read_timeout=0.5, headers_timeout=1.0) as client:
        result = fetch(client, url, total_timeout=2.0)
    assert result.status == "timeout", result
    expected = "headers did not arrive" if mode == "drip_headers" else "took longer than 2s"
    assert expected in result.error or "did not arrive in time" in result.error, result.error
    # the server got out a bounded number of bytes before the client hung up (2 s at 20 per second)
    sent = host.dripped_before_hangup(f"/{mode}")
    assert sent is not None and 0 < sent < 2000, sent


def test_redirects_to_other_schemes_are_refused(host, client):
    host.route("/to-file", Reply(302, headers={"Location": "file:///etc/passwd"}))
    host.route("/to-gopher", Reply(301, headers={"Location": "gopher://127.0.0.1/"}))
    for path in ("/to-file", "/to-gopher"):
        result = fetch(client, host.url(path))
        assert result.status == "blocked" and result.moved_to is None, result
